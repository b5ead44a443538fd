/* model/graph.c — tape recording and the backward sweep (see graph.h). */
#include "graph.h"

#include <stdlib.h>
#include <string.h>

int graph_init(Graph *g, Arena *act, Arena *grads, int max_nodes, NptErr *err) {
    memset(g, 0, sizeof *g);
    g->act = act;
    g->grads = grads;
    g->nodes = npt_try_malloc((size_t)max_nodes * sizeof(Node), "graph nodes", err);
    /* each node frees at most one block, and a free can add at most one entry */
    g->free_blocks = npt_try_malloc((size_t)(max_nodes + 1) * sizeof(GradBlock), "gradient free list", err);
    if (!g->nodes || !g->free_blocks) {
        graph_free(g);
        return -1;
    }
    g->cap_nodes = max_nodes;
    g->recording = 1;
    g->layer = -1;
    return 0;
}

void graph_free(Graph *g) {
    free(g->nodes);
    free(g->free_blocks);
    g->nodes = NULL;
    g->free_blocks = NULL;
}

void graph_reset(Graph *g) {
    g->n_nodes = 0;
    g->n_free = 0;
    g->layer = -1;
    arena_reset(g->act);
    if (g->grads) arena_reset(g->grads);
}

int graph_needs_grad(const Graph *g, Tensor **in, int n_in) {
    if (!g->recording) return 0;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return 1;
    return 0;
}

Node *graph_record(Graph *g, const char *op, BackwardFn bw, Tensor *out, Tensor **in, int n_in) {
    if (g->n_nodes == g->cap_nodes) npt_die("graph tape full (%d nodes); raise max_nodes", g->cap_nodes);
    Node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = bw;
    n->out = out;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    out->requires_grad = 1;
    return n;
}

/* ---- gradient recycling: best fit from the free list, else bump the arena ---- */

static size_t grad_bytes(const Tensor *t) { return (t->n * sizeof(float) + 63) & ~(size_t)63; }

static float *grad_alloc(Graph *g, size_t bytes) {
    int best = -1;
    for (int i = 0; i < g->n_free; i++)
        if (g->free_blocks[i].size >= bytes && (best < 0 || g->free_blocks[i].size < g->free_blocks[best].size)) best = i;
    if (best < 0) return arena_alloc(g->grads, bytes);
    GradBlock *b = &g->free_blocks[best];
    float *p = (float *)(g->grads->base + b->off);
    b->off += bytes;
    b->size -= bytes;
    if (b->size == 0) memmove(b, b + 1, (size_t)(g->n_free-- - best - 1) * sizeof *b);
    return p;
}

/* Returns a block, merging it with its neighbours; a block ending at the arena's top
 * lowers the top instead, so the arena never grows past the live set. */
static void grad_release(Graph *g, float *p, size_t bytes) {
    size_t off = (size_t)((char *)p - g->grads->base);
    int i = 0;
    while (i < g->n_free && g->free_blocks[i].off < off) i++;
    GradBlock *f = g->free_blocks;
    if (i > 0 && f[i - 1].off + f[i - 1].size == off) { /* extend the block before */
        f[i - 1].size += bytes;
        if (i < g->n_free && f[i - 1].off + f[i - 1].size == f[i].off) {
            f[i - 1].size += f[i].size;
            memmove(&f[i], &f[i + 1], (size_t)(g->n_free-- - i - 1) * sizeof *f);
        }
        i--;
    } else if (i < g->n_free && off + bytes == f[i].off) { /* extend the block after */
        f[i].off = off;
        f[i].size += bytes;
    } else {
        memmove(&f[i + 1], &f[i], (size_t)(g->n_free++ - i) * sizeof *f);
        f[i] = (GradBlock){off, bytes};
    }
    if (f[i].off + f[i].size >= g->grads->used) { /* the topmost block: give it back to the arena */
        g->grads->used = f[i].off;
        g->n_free--;
    }
}

float *graph_scratch(Graph *g, size_t bytes) { return grad_alloc(g, (bytes + 63) & ~(size_t)63); }

void graph_scratch_free(Graph *g, float *p, size_t bytes) { grad_release(g, p, (bytes + 63) & ~(size_t)63); }

float *graph_grad(Graph *g, Tensor *t) {
    if (!t->grad) {
        if (t->is_param) npt_die("parameter %s has no gradient buffer", t->name ? t->name : "?");
        t->grad = grad_alloc(g, grad_bytes(t));
        memset(t->grad, 0, t->n * sizeof(float));
    }
    return t->grad;
}

void graph_backward(Graph *g, Tensor *loss, float seed) {
    if (loss->n != 1) npt_die("backward needs a scalar loss, got %zu elements", loss->n);
    graph_backward_from(g, loss, &seed);
}

void graph_backward_from(Graph *g, Tensor *out, const float *seed_grad) {
    if (!out->requires_grad) npt_die("backward from %s, which depends on no trainable tensor", out->name ? out->name : "?");
    float *d = graph_grad(g, out);
    for (size_t i = 0; i < out->n; i++) d[i] += seed_grad[i];
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        Node *n = &g->nodes[i];
        if (!n->out->grad) continue; /* no gradient reached this node: nothing to do */
        n->backward(g, n);
        if (!n->out->is_param) { /* its producer was the only reader of this gradient */
            grad_release(g, n->out->grad, grad_bytes(n->out));
            n->out->grad = NULL;
        }
    }
}
