/* cli/inspect.h — shared pieces of `npt inspect` (cli/cmd_inspect.c: checkpoints,
 * history, diff; cli/inspect_model.c: model files, the adapter-only guard, verify). */
#ifndef NPT_INSPECT_H
#define NPT_INSPECT_H

#include <stdint.h>

#include "../train/checkpoint.h"

/* Statistics of one tensor, accumulated in double over row blocks. min/max/mean/std
 * cover the finite values only; NaN and Inf are counted apart. */
typedef struct {
    int64_t count, finite, nan, inf, beyond_fp16, beyond_bf16;
    double min, max, mean, m2; /* m2: sum of squared deviations (Chan et al. merge) */
    int read_failed;           /* a block could not be read; err holds why */
} TensorStats;

/* Floats per streamed block: memory is one block of rows, whatever the tensor size. */
#define INSPECT_BLOCK_FLOATS ((int64_t)1 << 18)

/* Rows of t per block (at least 1). */
int64_t inspect_block_rows(const CkptTensor *t);
/* Values in one row of t (product of the dims after the first). */
int64_t inspect_row_size(const CkptTensor *t);
/* Streams tensor t of f through the statistics; -1 (err set) if a block fails to read. */
int inspect_tensor_stats(CkptFile *f, const CkptTensor *t, TensorStats *s, NptErr *err);
/* 1 with the problem in msg ("PATH: tensor /NAME holds ...") when t's statistics show
 * values no run writes: NaN or Inf, or a negative second moment; else 0. Shared by
 * inspect's problem list and verify, so both refuse the same files. */
int inspect_value_problem(const char *path, const CkptTensor *t, const TensorStats *s, char *msg, size_t size);


/* `npt inspect MODEL`: what a model file is. Returns the exit code. */
int inspect_model(const char *path, int json);
/* `npt inspect verify CKPT --model M`. Returns the exit code. */
int inspect_verify(int argc, char **argv);

#endif
