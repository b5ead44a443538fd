/* util/common.h — error reporting, checked allocation, small helpers shared by every module.
 *
 * Convention: fallible functions return 0 on success and -1 on failure, and fill an
 * NptErr with one human-readable line that names the thing (file, tensor, key) and
 * what to do. Commands print it as "npt: error: <msg>" and exit non-zero. */
#ifndef NPT_COMMON_H
#define NPT_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char msg[1024];
} NptErr;

/* Formats msg into err (if err is non-NULL) and returns -1, so callers can write
 * `return npt_fail(err, "...")`. */
int npt_fail(NptErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that cannot silently fail: on OOM prints what was being allocated and
 * exits(2). Used for buffers whose size is known and modest; large model buffers use
 * npt_try_malloc and report through NptErr instead. */
void *npt_xmalloc(size_t bytes, const char *what);
void *npt_xcalloc(size_t n, size_t size, const char *what);
void *npt_try_malloc(size_t bytes, const char *what, NptErr *err);
char *npt_xstrdup(const char *s);

/* 64-byte aligned allocation (cache line / AVX-512 friendly); free with free(). */
void *npt_aligned_alloc(size_t bytes, const char *what, NptErr *err);

/* Opens an input file for reading and refuses anything that is not a regular file:
 * a named pipe (opening one blocks until a writer appears: npt hung), a device, a
 * socket or a directory. Returns the descriptor (close-on-exec, blocking reads), or
 *   -1 when open fails: err "cannot open PATH: <strerror>", errno kept (ENOENT...);
 *   -2 when PATH is not a regular file: err "PATH: is a named pipe, not a regular
 *      file; give the WHAT as a regular file" (errno EISDIR for a directory).
 * Callers with their own wording for either case test the return value. */
int npt_open_input(const char *path, const char *what, NptErr *err);
/* The same check, for a file a library opens by name itself (H5Fopen, H5Fis_hdf5):
 * 0 for a regular file, else -1 or -2 with err as above. */
int npt_check_input(const char *path, const char *what, NptErr *err);

/* npt_open_input as a stdio stream: 0 with *out set, or -1 / -2 (and errno) as above. */
int npt_fopen_input(const char *path, const char *what, FILE **out, NptErr *err);
/* A log a run appends to (metrics.jsonl, eval.jsonl), created if missing: NULL with err
 * set when it cannot be opened or is not a regular file (a named pipe put there would
 * block the run until something reads it; err names PATH's kind and WHAT). */
FILE *npt_fopen_append(const char *path, const char *what, NptErr *err);
/* 1 when path is a regular file starting with the HDF5 signature (an npt checkpoint,
 * not a model), 0 when it is not or cannot be read, -2 (err set as npt_open_input's,
 * naming WHAT) when it is not a regular file. */
int npt_file_is_hdf5(const char *path, const char *what, NptErr *err);

/* Reads a whole (small) file: config.json, tokenizer.json, recipes. NUL-terminated.
 * Only a regular file is read (npt_open_input; WHAT names it in that refusal). */
char *npt_read_input(const char *path, const char *what, size_t *len_out, NptErr *err);
/* npt_read_input with WHAT "input". */
char *npt_read_file(const char *path, size_t *len_out, NptErr *err);

/* Fatal error for states that are bugs in npt itself, never user input. */
void npt_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

double npt_now_seconds(void);

/* Count of non-finite values in a float array; used by loaders and safety checks. */
size_t npt_count_nonfinite(const float *x, size_t n);

/* IEEE half / bfloat16 to float (loaders) and back (precision emulation). */
float npt_f16_to_f32(uint16_t h);
float npt_bf16_to_f32(uint16_t h);
uint16_t npt_f32_to_f16(float f);
uint16_t npt_f32_to_bf16(float f);

#define NPT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The project's two hashes. FNV-1a 64 continues h (start from NPT_FNV1A_OFFSET) over n
 * bytes: the base-model fingerprint stored in checkpoints and the token cache key depend
 * on its exact values. npt_mix64 is splitmix64's finalizer, a bijection of 64-bit values
 * that spreads every input bit (hash tables, seeds, the data permutation). */
#define NPT_FNV1A_OFFSET 0xcbf29ce484222325ull
uint64_t npt_fnv1a(uint64_t h, const void *p, size_t n);
static inline uint64_t npt_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* h continued over n bytes and mixed: a key built from several fields in turn (the
 * token cache's, data/prepare.c and data/tokenizer.c). */
static inline uint64_t npt_hash_bytes(uint64_t h, const void *p, size_t n) { return npt_mix64(npt_fnv1a(h, p, n)); }

/* x[i] ~ N(0, std^2) from a seeded splitmix64 + Box-Muller stream: portable, so a seed
 * gives the same weights on every machine (std 0 gives zeros). */
void npt_fill_normal(float *x, size_t n, float std, uint64_t *state);

/* ,"key":v into a JSON object being printed; JSON has no NaN or Inf, so a non-finite v
 * is written as null (metrics.jsonl, eval's --json). */
void npt_json_number(FILE *f, const char *key, double v);
/* The same field into buf, as snprintf (returns the length it needed). */
int npt_json_number_str(char *buf, size_t cap, const char *key, double v);

#endif
