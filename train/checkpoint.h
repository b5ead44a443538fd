/* train/checkpoint.h — npt checkpoints: HDF5 files holding adapter tensors, optimizer
 * moments, training state, history, the recipe and the base model's identity.
 *
 * The module is generic: it knows the file layout (docs/checkpoint.md is the reference)
 * but not the trainer's structs. The trainer hands it named float32 tensors and a
 * CkptMeta. Writes are atomic (temp file, fsync, rename, fsync of the directory): a crash
 * mid-write leaves the previous checkpoint intact.
 *
 *   train/checkpoint.c  writing (ckpt_save)
 *   train/ckpt_read.c   reading and validation (ckpt_open ... ckpt_load)
 *   train/ckpt_dir.c    run directories: names, keep-last rotation, --resume auto,
 *                       base-model matching */
#ifndef NPT_CHECKPOINT_H
#define NPT_CHECKPOINT_H

#include <stdint.h>

#include "util/common.h"

#define CKPT_FORMAT "npt-checkpoint"
#define CKPT_FORMAT_VERSION 1
#ifndef NPT_VERSION
#define NPT_VERSION "0.1"
#endif
#define CKPT_MAX_LAYERS 256
#define CKPT_MAX_DIMS 4
#define CKPT_CURSOR_MAX 128 /* int64 values of the data cursor (data/dataset.h) */
/* An all-weights checkpoint's tensors: every weight of the model as one block, and its
 * optimizer moments "optimizer/" CKPT_WEIGHTS_MOMENT ".m" and ".v". */
#define CKPT_WEIGHTS_BLOCK "weights/block"
#define CKPT_WEIGHTS_MOMENT "weights_block"

/* A named float32 tensor. name is the HDF5 path below the root without a leading '/',
 * e.g. "adapters/layer_03/A" or "optimizer/layer_03/A.m". Tensors may live anywhere
 * except the metadata objects base/, state/, history/ and recipe. */
typedef struct {
    char name[128];
    float *data;                    /* ndim product of shape floats, row-major */
    int ndim;                       /* 1..CKPT_MAX_DIMS */
    int64_t shape[CKPT_MAX_DIMS];
    char dtype[16];                 /* set by reading ("float32", "float64", "int32", ...) */
    /* set by listing: what the file holds of the declared values (see ckpt_tensor_unstored) */
    int64_t stored_bytes;           /* bytes HDF5 allocated for it in the file */
    int storage;                    /* CKPT_STORED (0), or why the values are not in the file */
    int64_t chunks_need, chunks_have; /* chunked layout: chunks the extent needs, chunks the file holds (else 0) */
} CkptTensor;

enum {
    CKPT_STORED = 0,        /* the file holds its values (or, compressed, can) */
    CKPT_STORAGE_SHORT = 1, /* fewer bytes allocated than declared: never written, reads give fill values */
    CKPT_STORAGE_OUTSIDE = 2, /* external or virtual storage: the values live in other files */
    CKPT_STORAGE_CHUNKS = 3,  /* chunked, with chunks never written (compression hides it from the byte count) */
};

typedef struct {
    int64_t step;
    double loss, lr, grad_norm, nmse, reg;
    int skipped;                    /* 1 if this step's batch was skipped as non-finite */
} CkptHistoryRow;

typedef struct {
    int64_t step;                   /* optimizer steps completed */
    int64_t tokens_seen;
    char kind[16];                  /* "periodic" | "best" | "final" | "emergency" */
    char *recipe_json;              /* resolved recipe; saved as the /recipe dataset */
    /* set by reading (writing stamps its own): */
    int format_version;
    char created[32];               /* ISO-8601 UTC, e.g. "2025-01-31T12:00:00Z" */
    char npt_version[16];
    /* base model identity */
    char base_path[4096];
    char base_arch[32];             /* "llama" */
    char base_format[16];           /* "hf" | "llama2c" | "gguf" */
    uint64_t base_fingerprint;
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size;
    double norm_eps, rope_theta;    /* the config's; 0 when not recorded (files before 2026-11-25) */
    /* the recipe's tokenizer, so export finds the very file the run used whatever the
     * directory it runs in: absolute path, size and FNV-1a 64 of its bytes; path "" when
     * the run set none (the one beside the model) or the file predates recording it */
    char tokenizer_path[4096];
    int64_t tokenizer_bytes;
    uint64_t tokenizer_fingerprint;
    /* adapters */
    int rank;
    int safe_mode;                  /* 1: additive modulation only, no B_mul tensors */
    double modulation_scale;
    int n_npt_layers;
    int npt_layers[CKPT_MAX_LAYERS];
    /* training state */
    char optimizer[16];             /* "adamw" | "sgd" | "" (none) */
    int64_t opt_step;
    uint64_t rng_state[4];
    int64_t data_cursor[CKPT_CURSOR_MAX]; /* opaque to this module: the data loader's */
    int n_data_cursor;              /* values used; 0 writes the first 4 (format 1's fixed size) */
    int64_t skipped_total;
    int consecutive_skips;
    double best_loss, last_loss;
    CkptHistoryRow *history;
    int64_t n_history;
} CkptMeta;

/* Writes meta and tensors to path atomically. Refuses non-finite tensors (a checkpoint
 * must always be usable). meta->recipe_json may be NULL (stored as "{}"). */
int ckpt_save(const char *path, const CkptMeta *meta, const CkptTensor *tensors, int n_tensors,
              NptErr *err);

/* Reads meta and every tensor, validates the whole file (format, version, checksums,
 * dtypes, shapes against rank/dim/hidden_dim, finiteness). Output is malloc'd: release it
 * with ckpt_free. On failure nothing needs freeing. */
int ckpt_load(const char *path, CkptMeta *meta, CkptTensor **tensors, int *n_tensors, NptErr *err);

/* The tensor called name (leading '/' optional), or NULL. */
const CkptTensor *ckpt_find(const CkptTensor *t, int n, const char *name);

/* Frees what ckpt_load / ckpt_read_meta / ckpt_list_tensors returned (any may be NULL).
 * Never call it on a meta the caller filled itself. */
void ckpt_free(CkptMeta *meta, CkptTensor *tensors, int n_tensors);

/* --- Streaming access, for inspection of large files (memory: one block of rows) --- */

typedef struct CkptFile CkptFile;

/* 1 when the file does not hold t's declared values (a dataset declared, e.g. 2^40 floats,
 * but never written: reading it would produce terabytes of fill values; or one whose data
 * lives in other files), with the reason in why ("dataset /NAME declares ..."); else 0.
 * Such a tensor is never read: ckpt_read_rows and ckpt_validate refuse it. */
int ckpt_tensor_unstored(const CkptTensor *t, char *why, size_t size);

/* Opens path read-only and checks it is an npt checkpoint of a supported version. */
CkptFile *ckpt_open(const char *path, NptErr *err);
void ckpt_close(CkptFile *f);
int ckpt_read_meta(CkptFile *f, CkptMeta *meta, NptErr *err);
/* Every tensor dataset with name, shape and dtype; data is NULL. */
int ckpt_list_tensors(CkptFile *f, CkptTensor **out, int *n, NptErr *err);
/* Rows [row0, row0 + nrows) of tensor t (rows along the first dimension, so
 * nrows * (product of the other dims) floats), converted to float32. */
int ckpt_read_rows(CkptFile *f, const CkptTensor *t, int64_t row0, int64_t nrows, float *out,
                   NptErr *err);

/* Structural checks of a listed file: dtypes float32, every layer in meta's adapter list
 * has A [rank, dim], B_add [hidden_dim, rank] and, unless safe_mode, B_mul
 * [hidden_dim, rank]; no stray adapter tensors; optimizer/X.m|v shaped like adapters/X
 * (optimizer/weights_block.m|v like weights/block); an all-weights checkpoint has
 * /weights/block, 1-D, of its base's size; and the history passes ckpt_check_history. */
int ckpt_validate(const char *path, const CkptMeta *meta, const CkptTensor *t, int n, NptErr *err);
/* 1 for a checkpoint of an all-weights lm run (/adapters rank 0, no layers): its weights
 * are /weights/block. */
int ckpt_is_all_weights(const CkptMeta *meta);
/* The history as the trainer writes it: a trained row's step is 1..meta->step and above
 * the row before; a skipped row repeats the step before it (0..meta->step, 0 before any
 * step was trained). The history may be shorter than meta->step (no row is required). */
int ckpt_check_history(const char *path, const CkptMeta *meta, NptErr *err);
/* Fails naming the first tensor holding NaN or Inf, or an AdamW second moment (optimizer/X.v)
 * holding negative values, with the counts. */
int ckpt_check_finite(const char *path, const CkptTensor *t, int n, NptErr *err);
/* 1 if the tensor name is an AdamW second moment (optimizer/X.v), which is never negative. */
int ckpt_is_second_moment(const char *name);

/* --- Run directories (train/ckpt_dir.c) --- */

/* dir/ckpt-%08lld.h5 for "periodic" and "emergency", dir/best.h5, dir/final.h5. */
int ckpt_path_for(char *out, size_t out_size, const char *dir, const char *kind, int64_t step,
                  NptErr *err);
/* Deletes the oldest periodic checkpoints (by the step in their names) beyond keep_last,
 * never best.h5 or final.h5, and temp files left by crashed writers. keep_last <= 0
 * keeps everything. */
int ckpt_rotate(const char *dir, int keep_last, NptErr *err);
/* The step attribute of the checkpoint at path (its metadata only). */
int ckpt_read_step(const char *path, int64_t *step, NptErr *err);
/* For --resume auto: the periodic or final checkpoint with the highest step attribute
 * (final.h5 on a tie) that loads completely (ckpt_load: checksums, shapes, finiteness).
 * Files that fail (e.g. truncated by a crash) are skipped, with a warning on stderr if
 * warn. Returns 1 and fills out, 0 if dir holds no checkpoint file (or does not exist),
 * -1 on error, which includes checkpoint files of which none loads (a fresh start there
 * would overwrite them). */
int ckpt_find_latest(const char *dir, char *out, size_t out_size, int warn, NptErr *err);
/* Checks that the checkpoint ckpt (loaded from ckpt_path) was trained on the model
 * described by model's base_* and dimension fields; the error names both. */
int ckpt_check_base(const char *ckpt_path, const CkptMeta *ckpt, const CkptMeta *model, NptErr *err);

/* Tests only: called after the temp file is complete and fsync'd, before the rename.
 * A non-zero return makes ckpt_save fail there. NULL removes the hook. */
void ckpt_set_test_hook(int (*hook)(const char *tmp_path, void *ctx), void *ctx);

#endif
