/* data/data_internal.h — what the data pipeline's source files share; not part of
 * npt's public interface.
 *   data/permute.c     the O(1)-memory seeded permutation
 *   data/token_file.c  reading token files in bounded pieces (raw u16/u32, HDF5)
 *   data/prepare.c     text/JSONL -> token file (npt data prepare, the token cache)
 *   data/dataset.c     sources, mixing, windows, validation split, cursor */
#ifndef NPT_DATA_INTERNAL_H
#define NPT_DATA_INTERNAL_H

#include <stdint.h>

#include "../util/common.h"
#include "dataset.h"
#include "prepare.h"

/* A bijection of [0, n) chosen by key; O(1) memory (Feistel + cycle walking). */
uint64_t data_permute(uint64_t i, uint64_t n, uint64_t key);

/* "file.h5:/group/tokens" -> file "file.h5", dataset "/group/tokens". Returns 1 when
 * spec names an HDF5 dataset this way (or is a .h5/.hdf5 file: dataset "/tokens"). */
int data_split_h5_spec(const char *spec, char *file, size_t file_n, char *dset, size_t dset_n);

/* The header of a token-cache file (data_cached_tokens), so that a cache cut short or
 * damaged is found instead of read as a shorter corpus. TOKEN_HEADER_BYTES bytes,
 * little-endian: the magic TOKEN_HEADER_MAGIC (8 bytes), version (u32, 1), id width in
 * bytes (u32, 2 or 4), then u64 tokens, documents, key (the cache key: source, tokenizer,
 * options), checksum (token_checksum of every id), and 16 zero bytes. The ids follow.
 * Plain token files (npt data prepare, nanoGPT) have no header; a raw file that starts
 * with the magic is read after it. */
#define TOKEN_HEADER_MAGIC "NPTTOKEN"
enum { TOKEN_HEADER_BYTES = 64, TOKEN_HEADER_VERSION = 1 };

typedef struct {
    uint32_t version, width;
    uint64_t n_tokens, documents, key, checksum;
} TokenHeader;

void token_header_encode(const TokenHeader *h, unsigned char out[TOKEN_HEADER_BYTES]);

/* Running checksum of a token stream (the ids' values, whatever their width): start
 * from TOKEN_CHECKSUM_SEED, add every id in order, then token_checksum_final. */
#define TOKEN_CHECKSUM_SEED 0xcbf29ce484222325ull
static inline uint64_t token_checksum_add(uint64_t h, const int *ids, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (uint32_t)ids[i]) * 0x100000001b3ull;
    return h;
}
static inline uint64_t token_checksum_final(uint64_t h, uint64_t n_tokens) { return npt_mix64(h ^ n_tokens); }

/* A token file opened for reading pieces of it; holds no tokens itself. */
typedef struct {
    char name[4400];  /* as shown in messages: "path" or "path:/dataset" (a source's
                         token cache: the user's path, then the cache's) */
    int kind;         /* DATASET_U16, DATASET_U32 or DATASET_HDF5 */
    int fd;           /* raw files */
    int64_t h5_file, h5_dset, h5_space; /* HDF5 handles (hid_t), -1 when closed */
    int h5_signed;                      /* HDF5: the ids' type is signed */
    uint64_t n_tokens;
    int vocab_size;   /* every id read is checked against it; 0 = unchecked */
    uint64_t data_off;  /* raw files: bytes before the first id (the header's) */
    int has_header;     /* raw files: a TokenHeader was found (and checked against the size) */
    TokenHeader header;
} TokenFile;

/* kind DATASET_AUTO picks from the name (.u32 -> u32, h5 -> HDF5, else u16). */
int token_file_open(TokenFile *f, const char *spec, DatasetFormat kind, int vocab_size, NptErr *err);
/* Tokens [start, start + n) into out; every id is checked against vocab_size. */
int token_file_read(TokenFile *f, uint64_t start, size_t n, int *out, NptErr *err);
/* Reads the whole file in bounded pieces, calling fn on each (for vocabulary scans
 * and statistics); fn returns non-zero to stop with that code. */
int token_file_scan(TokenFile *f, int (*fn)(const int *ids, size_t n, uint64_t start, void *ctx), void *ctx,
                    NptErr *err);
/* token_checksum_final of every id (a scan, so every id is also checked). */
int token_file_checksum(TokenFile *f, uint64_t *out, NptErr *err);
void token_file_close(TokenFile *f);

#endif
