/* model/tensor.h — float32 tensors and the arenas they live in.
 *
 * A Tensor is a view: data (and grad) point into an arena or into the model's weight
 * block; the struct never owns memory. Arenas are sized up front from the model
 * shape and reset every step, so a training step performs no malloc at all. Within a
 * step, large blocks handed back with arena_release are reused by later allocations
 * (best fit, coalescing), so an arena peaks at what is live at once, not at the sum. */
#ifndef NPT_TENSOR_H
#define NPT_TENSOR_H

#include <stddef.h>

#include "../util/common.h"

#define NPT_MAX_DIMS 4

typedef struct Tensor {
    float *data;
    float *grad;       /* NULL until a gradient reaches it (activations) or always (frozen) */
    int ndim;
    int shape[NPT_MAX_DIMS];
    size_t n;          /* number of elements */
    int requires_grad; /* trainable parameter, or activation depending on one */
    int is_param;      /* persistent parameter: grad is owned by the optimizer, accumulated */
    int keep;          /* a recorded backward reads data: graph_release must not free it */
    const char *name;  /* for error messages and the debug mode; may be NULL */
} Tensor;

/* A released range of an arena (byte offset and size, 64-byte multiples). */
typedef struct {
    size_t off, size;
} ArenaBlock;

typedef struct {
    char *base;
    size_t size, used, peak;
    const char *name;
    ArenaBlock *free; /* released ranges, sorted by offset, coalesced */
    int n_free, cap_free;
} Arena;

/* Blocks at least this large are recycled; smaller ones (tensor structs, per-row
 * statistics) always come from the top, so they never split a large free block. */
#define ARENA_RECYCLE_MIN (64 * 1024)

int arena_init(Arena *a, size_t bytes, const char *name, NptErr *err);
void arena_free(Arena *a);
/* 64-byte aligned; running out is a sizing bug in npt, reported with both figures. */
void *arena_alloc(Arena *a, size_t bytes);
/* Hands a block from arena_alloc back for reuse within the step; blocks smaller than
 * ARENA_RECYCLE_MIN are ignored (reclaimed at the reset). */
void arena_release(Arena *a, void *p, size_t bytes);
void arena_reset(Arena *a);

/* Tensor constructors. tensor_new takes its storage from the arena, uninitialised. */
Tensor *tensor_new(Arena *a, const char *name, int ndim, const int *shape);
Tensor *tensor_new2(Arena *a, const char *name, int rows, int cols);
/* Wraps existing storage (model weights, adapter parameters). */
Tensor tensor_view2(float *data, const char *name, int rows, int cols);
Tensor tensor_view1(float *data, const char *name, int n);

static inline int tensor_rows(const Tensor *t) { return t->ndim == 1 ? 1 : t->shape[0]; }
static inline int tensor_cols(const Tensor *t) { return t->shape[t->ndim - 1]; }

#endif
