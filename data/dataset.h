/* data/dataset.h — training and validation data: one or more sources mixed by weight,
 * cut into fixed windows that start with BOS, visited in a seeded order, with an exact
 * cursor that checkpoints store so a resumed run sees the same samples.
 *
 * Sources: text files and folders of them, JSONL (one document per line, text in a
 * configurable field), raw little-endian uint16/uint32 token files (nanoGPT style),
 * and 1-D integer HDF5 datasets ("file.h5:/tokens"). Text and JSONL are tokenized
 * once into a token file (the token cache, see prepare.h); training then reads windows
 * from token files with pread or HDF5 hyperslabs. Nothing is held in memory but a few
 * buffers and per-source counters: memory does not grow with the corpus.
 *
 * Windows: a source's token stream S (every document is BOS + its tokens) is cut into
 * n = |S| / (T-1) windows; window w is BOS followed by S[w(T-1) .. (w+1)(T-1)).
 * Validation: the last round(valid_fraction * n) windows of each training source, or
 * every window of a separate validation source. Order: draw k picks a source at random
 * with probability proportional to its weight (a hash of seed and k), then that
 * source's next window in its own seeded per-epoch permutation (data/permute.c).
 * Window ids (sample ids in logs, `npt debug --sample`) number the windows of all
 * training sources in recipe order, validation windows included. */
#ifndef NPT_DATASET_H
#define NPT_DATASET_H

#include <stdint.h>
#include <stdio.h>

#include "tokenizer.h"

typedef enum { DATASET_AUTO, DATASET_TEXT, DATASET_JSONL, DATASET_U16, DATASET_U32, DATASET_HDF5 } DatasetFormat;

#define DATASET_MAX_SOURCES 32
#define DATASET_CURSOR_MAX (4 + 3 * DATASET_MAX_SOURCES)

typedef struct {
    const char *path;        /* file, folder (text), or "file.h5:/dataset" */
    DatasetFormat format;    /* DATASET_AUTO: dataset_detect_format */
    double weight;           /* relative share of training draws, > 0 */
    const char *text_field;  /* JSONL field holding the text; NULL = "text" */
} DataSourceSpec;

typedef struct {
    const DataSourceSpec *sources;
    int n_sources;                /* training sources; 0 is allowed when valid is set */
    const DataSourceSpec *valid;  /* validation source, or NULL */
    double valid_fraction;        /* held out of each training source when valid is NULL */
    int seq_len;                  /* T: BOS + T-1 stream tokens per window */
    int shuffle;
    uint64_t seed;
    const Tokenizer *tok;         /* needed by text and JSONL sources */
    int vocab_size;               /* bounds every id read */
    int bos, eos;                 /* BOS starts every document and window */
    int append_eos;               /* documents also end with eos */
    int skip_bad_records;         /* JSONL lines that are not JSON: warn and skip, else fail */
    const char *cache_dir;        /* token cache; NULL: tokenize into a temporary file */
    FILE *log;                    /* progress and warnings; NULL = silent */
    const char *seq_len_name;     /* what sets seq_len, for messages: NULL = "data.seq_len" */
    uint64_t max_windows;         /* 0: all; else text without a cache is tokenized only until
                                   * this many windows exist (PrepareOptions.max_tokens) */
} DataConfig;

typedef struct DataSource DataSource;

typedef struct {
    DataSource *src;    /* n_src training sources, then the validation source if any */
    int n_src, has_valid_src;
    int seq_len, bos, shuffle;
    uint64_t seed;
    double cum_weight[DATASET_MAX_SOURCES];
    size_t n_windows;   /* windows of the training sources (ids 0..n_windows-1) */
    uint64_t n_train, n_valid;
    uint64_t drawn;     /* training windows handed out so far */
    NptErr io_err;      /* set when dataset_next_batch failed */
} Dataset;

/* Opens every source (tokenizing text/JSONL into the cache when needed). */
int dataset_open_config(Dataset *ds, const DataConfig *cfg, NptErr *err);
/* One source, no validation split, no cache (text is tokenized into a temporary
 * file, only as far as max_windows windows when it is not 0: DataConfig); for
 * `npt debug`, `npt eval` and tests. tok may be NULL for token files. Messages name
 * the window length as their flag, --seq-len. */
int dataset_open(Dataset *ds, const char *path, DatasetFormat fmt, const Tokenizer *tok, int vocab_size, int bos,
                 int seq_len, int shuffle, uint64_t seed, uint64_t max_windows, NptErr *err);
void dataset_free(Dataset *ds);
/* For npt validate: one source of c checked as dataset_open_config would open it,
 * without reading its ids or tokenizing text. A token or HDF5 source is opened (format,
 * size, header, dataset), its windows of c->seq_len counted and, for a training source
 * (is_valid 0), its validation split made. Returns 0, 1 for text/JSONL (not checked),
 * -1 with err set. */
int dataset_check_source(const DataSourceSpec *spec, const DataConfig *c, int is_valid, NptErr *err);

/* Next B training windows into tokens [B*T]; sample_ids (may be NULL) gets each
 * window's id. Returns 0, or -1 when a file could not be read (then ds->io_err says
 * why and the windows hold BOS only). */
int dataset_next_batch(Dataset *ds, int B, int *tokens, int64_t *sample_ids);
/* Window `id` (0 <= id < n_windows, see above) into tokens [T]. */
int dataset_window(Dataset *ds, uint64_t id, int *tokens, NptErr *err);

/* Validation windows i = 0 .. n_valid-1, in file order (for `npt eval`). */
uint64_t dataset_n_valid(const Dataset *ds);
int dataset_valid_window(Dataset *ds, uint64_t i, int *tokens, NptErr *err);

/* The exact position of the training stream, for checkpoints: at most
 * DATASET_CURSOR_MAX values; returns how many were written. Restoring checks that the
 * cursor belongs to the same sources (their window counts and a fingerprint of all
 * their tokens), split and seed; returns 0, -1 with err set, or 1 for a cursor of an
 * npt before fingerprints: restored, with the tokens unchecked (the caller says so). */
int dataset_cursor(const Dataset *ds, int64_t *cursor, int cap);
int dataset_restore(Dataset *ds, const int64_t *cursor, int n, NptErr *err);

/* DATASET_AUTO resolved from a path: a folder is text; "x.h5:/d", .h5, .hdf5 -> HDF5;
 * .jsonl/.ndjson -> JSONL; .bin/.u16 -> uint16 tokens; .u32 -> uint32; else text. */
DatasetFormat dataset_detect_format(const char *path);
const char *dataset_format_name(DatasetFormat f);
/* A format by name: those of dataset_format_name, or u16 / u32 for short; -1 if none. */
int dataset_parse_format(const char *name, DatasetFormat *f);
/* The token cache used when none is configured: $NPT_CACHE_DIR, else
 * $XDG_CACHE_HOME/npt, else $HOME/.cache/npt, else ./.npt-cache. */
void dataset_default_cache_dir(char *out, size_t n);
/* The file system path of a source: spec without an HDF5 ":/dataset" suffix. */
void dataset_source_file(const char *spec, char *file, size_t n);
/* The same, and the HDF5 dataset a source reads ("/tokens" when none is named) into
 * dset, "" for a raw token or text file. */
void dataset_source_parts(const char *spec, char *file, size_t n, char *dset, size_t dset_n);

#endif
