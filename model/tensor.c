/* model/tensor.c — bump arenas and tensor constructors (see tensor.h). */
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

/* Free-list entries per arena: a full list only forgoes reuse until the reset. */
#define ARENA_FREE_CAP 4096

int arena_init(Arena *a, size_t bytes, const char *name, NptErr *err) {
    memset(a, 0, sizeof *a);
    a->base = npt_aligned_alloc(bytes, name, err);
    a->free = npt_try_malloc(ARENA_FREE_CAP * sizeof *a->free, name, err);
    if (!a->base || !a->free) {
        arena_free(a);
        return -1;
    }
    a->size = bytes;
    a->cap_free = ARENA_FREE_CAP;
    a->name = name;
    return 0;
}

void arena_free(Arena *a) {
    free(a->base);
    free(a->free);
    memset(a, 0, sizeof *a);
}

static size_t round64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* Best fit among the released blocks; NULL when none is large enough. */
static void *take_free(Arena *a, size_t bytes) {
    int best = -1;
    for (int i = 0; i < a->n_free; i++)
        if (a->free[i].size >= bytes && (best < 0 || a->free[i].size < a->free[best].size)) best = i;
    if (best < 0) return NULL;
    ArenaBlock *b = &a->free[best];
    void *p = a->base + b->off;
    b->off += bytes;
    b->size -= bytes;
    if (b->size == 0) memmove(b, b + 1, (size_t)(a->n_free-- - best - 1) * sizeof *b);
    return p;
}

void arena_release(Arena *a, void *p, size_t bytes) {
    bytes = round64(bytes);
    if (bytes < ARENA_RECYCLE_MIN) return;
    size_t off = (size_t)((char *)p - a->base);
    ArenaBlock *f = a->free;
    int i = 0;
    while (i < a->n_free && f[i].off < off) i++;
    if (i > 0 && f[i - 1].off + f[i - 1].size == off) { /* extend the block before */
        f[i - 1].size += bytes;
        if (i < a->n_free && f[i - 1].off + f[i - 1].size == f[i].off) {
            f[i - 1].size += f[i].size;
            memmove(&f[i], &f[i + 1], (size_t)(a->n_free-- - i - 1) * sizeof *f);
        }
        i--;
    } else if (i < a->n_free && off + bytes == f[i].off) { /* extend the block after */
        f[i].off = off;
        f[i].size += bytes;
    } else if (a->n_free < a->cap_free) {
        memmove(&f[i + 1], &f[i], (size_t)(a->n_free++ - i) * sizeof *f);
        f[i] = (ArenaBlock){off, bytes};
    } else {
        return;
    }
    if (f[i].off + f[i].size >= a->used) { /* the topmost block: lower the top instead */
        a->used = f[i].off;
        a->n_free--;
    }
}

void *arena_alloc(Arena *a, size_t bytes) {
    if (bytes >= ARENA_RECYCLE_MIN) {
        void *p = take_free(a, round64(bytes));
        if (p) return p;
        bytes = round64(bytes); /* so that its release covers the same range */
    }
    size_t start = (a->used + 63) & ~(size_t)63;
    if (start + bytes > a->size)
        npt_die("arena '%s' exhausted: %zu bytes requested with %zu of %zu used; the up-front "
                "size estimate is wrong", a->name, bytes, a->used, a->size);
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

void arena_reset(Arena *a) {
    a->used = 0;
    a->n_free = 0;
}

Tensor *tensor_new(Arena *a, const char *name, int ndim, const int *shape) {
    if (ndim < 1 || ndim > NPT_MAX_DIMS) npt_die("tensor %s: bad rank %d", name ? name : "?", ndim);
    Tensor *t = arena_alloc(a, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->n *= (size_t)shape[i];
    }
    t->name = name;
    t->data = arena_alloc(a, t->n * sizeof(float));
    return t;
}

Tensor *tensor_new2(Arena *a, const char *name, int rows, int cols) {
    int shape[2] = {rows, cols};
    return tensor_new(a, name, 2, shape);
}

Tensor tensor_view2(float *data, const char *name, int rows, int cols) {
    Tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.ndim = 2;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.n = (size_t)rows * (size_t)cols;
    t.name = name;
    return t;
}

Tensor tensor_view1(float *data, const char *name, int n) {
    Tensor t = tensor_view2(data, name, n, 1);
    t.ndim = 1;
    t.shape[0] = n;
    t.shape[1] = 0;
    return t;
}
