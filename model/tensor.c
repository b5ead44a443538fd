/* model/tensor.c — bump arenas and tensor constructors (see tensor.h). */
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

int arena_init(Arena *a, size_t bytes, const char *name, NptErr *err) {
    memset(a, 0, sizeof *a);
    a->base = npt_aligned_alloc(bytes, name, err);
    if (!a->base) return -1;
    a->size = bytes;
    a->name = name;
    return 0;
}

void arena_free(Arena *a) {
    free(a->base);
    memset(a, 0, sizeof *a);
}

void *arena_alloc(Arena *a, size_t bytes) {
    size_t start = (a->used + 63) & ~(size_t)63;
    if (start + bytes > a->size)
        npt_die("arena '%s' exhausted: %zu bytes requested with %zu of %zu used; the up-front "
                "size estimate is wrong", a->name, bytes, a->used, a->size);
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

void arena_reset(Arena *a) { a->used = 0; }

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
