/* data/dataset.h — training data: a token stream cut into fixed windows that start
 * with BOS, visited in a deterministic (optionally shuffled) order with an exact
 * cursor that checkpoints store, so a resumed run sees the same samples.
 *
 * Sources: a text file (documents separated by lines "<|endoftext|>", each tokenized
 * with the model's tokenizer and separated by BOS in the stream) or a raw token file of
 * little-endian uint16 or uint32 ids (nanoGPT style). This minimal version holds the
 * token stream in memory: 4 bytes per token. */
#ifndef NPT_DATASET_H
#define NPT_DATASET_H

#include <stdint.h>

#include "tokenizer.h"

typedef enum { DATASET_TEXT, DATASET_U16, DATASET_U32 } DatasetFormat;

typedef struct {
    int *tokens;
    size_t n_tokens;
    int seq_len;       /* T: BOS + T-1 stream tokens per window */
    int bos;
    size_t n_windows;
    int shuffle;
    uint64_t seed;
    uint32_t *order;   /* window order of the current epoch */
    int64_t epoch, pos;
    int n_documents;
} Dataset;

/* tok may be NULL for token files. vocab_size bounds every id (error names the file
 * and the offending id's position). */
int dataset_open(Dataset *ds, const char *path, DatasetFormat fmt, const Tokenizer *tok, int vocab_size, int bos,
                 int seq_len, int shuffle, uint64_t seed, NptErr *err);
void dataset_free(Dataset *ds);
/* Next B windows into tokens [B*T]; sample_ids gets each window's index (for logs). */
void dataset_next_batch(Dataset *ds, int B, int *tokens, int64_t *sample_ids);
/* Cursor for checkpoints: {epoch, pos, n_windows, seed}; restoring checks it fits. */
void dataset_cursor(const Dataset *ds, int64_t cursor[4]);
int dataset_restore(Dataset *ds, const int64_t cursor[4], NptErr *err);

#endif
