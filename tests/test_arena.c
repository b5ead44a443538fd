/* tests/test_arena.c — the arenas' block recycling (model/tensor.h) and the graph's use
 * of it: released blocks are reused best-fit, neighbours coalesce, a released top block
 * lowers the top, small blocks are never recycled, and graph_release keeps what a
 * recorded backward reads. */
#include <string.h>

#include "../model/graph.h"
#include "../model/ops.h"
#include "test.h"

#define BIG (256 * 1024)

int main(void) {
    Arena a;
    NptErr err;
    if (arena_init(&a, 64 << 20, "test arena", &err)) {
        check(0, "arena_init: %s", err.msg);
        return test_finish();
    }
    char *p1 = arena_alloc(&a, BIG), *p2 = arena_alloc(&a, BIG), *p3 = arena_alloc(&a, BIG);
    size_t top = a.used;
    arena_release(&a, p2, BIG);
    check(a.used == top && a.n_free == 1, "a released middle block is listed, the top stays (%d free)", a.n_free);
    check(arena_alloc(&a, BIG) == p2 && a.n_free == 0, "the next allocation of that size reuses it");
    arena_release(&a, p1, BIG);
    arena_release(&a, p2, BIG);
    check(a.n_free == 1 && a.free[0].off == 0 && a.free[0].size == 2 * BIG, "neighbours coalesce into one block");
    char *big = arena_alloc(&a, 2 * BIG - 1000);
    check(big == p1 && a.used == top, "a larger allocation fits the merged block, best fit, no growth");
    arena_release(&a, big, 2 * BIG - 1000);
    arena_release(&a, p3, BIG);
    check(a.used == 0 && a.n_free == 0, "releasing the top block lowers the top through the merged free space (used %zu)",
          a.used);
    char *s1 = arena_alloc(&a, 100);
    arena_release(&a, s1, 100);
    check(a.n_free == 0 && arena_alloc(&a, 100) != s1, "blocks under ARENA_RECYCLE_MIN are not recycled");
    char *lower = arena_alloc(&a, BIG);
    arena_alloc(&a, BIG);
    arena_release(&a, lower, BIG);
    int listed = a.n_free;
    arena_reset(&a);
    check(listed == 1 && a.used == 0 && a.n_free == 0, "reset forgets a listed free block (%d before)", listed);

    /* graph_release: frees an activation no recorded backward reads, keeps one that is read */
    Arena grads;
    Graph g;
    if (arena_init(&grads, 16 << 20, "test grads", &err) || graph_init(&g, &a, &grads, 64, &err)) {
        check(0, "graph setup: %s", err.msg);
        return test_finish();
    }
    int rows = 256, cols = 256; /* 256 KiB per tensor */
    Tensor *x = tensor_new2(&a, "x", rows, cols), *w = tensor_new2(&a, "w", cols, cols);
    Tensor *v = tensor_new2(&a, "v", cols, cols);
    memset(x->data, 0, x->n * sizeof(float));
    memset(w->data, 0, w->n * sizeof(float));
    memset(v->data, 0, v->n * sizeof(float));
    x->requires_grad = 1;              /* frozen w: its matmul's backward reads w, not x */
    v->requires_grad = v->is_param = 1; /* trained v: its matmul's backward reads its input */
    float vgrad[256 * 256];
    v->grad = vgrad;
    Tensor *y = op_scale(&g, x, 2.0f);
    Tensor *z = op_linear(&g, y, w);
    graph_release(&g, y);
    check(y->data == NULL, "graph_release frees the input of a frozen matmul");
    Tensor *y2 = op_scale(&g, z, 2.0f);
    op_linear(&g, y2, v);
    graph_release(&g, y2);
    check(y2->data != NULL, "graph_release keeps the input of a trained matmul (its weight gradient reads it)");
    graph_free(&g);
    arena_free(&grads);
    arena_free(&a);
    return test_finish();
}
