/* model/graph.c — tape recording and the backward sweep (see graph.h). */
#include "graph.h"

#include <stdlib.h>
#include <string.h>

int graph_init(Graph *g, Arena *act, Arena *grads, int max_nodes, NptErr *err) {
    memset(g, 0, sizeof *g);
    g->act = act;
    g->grads = grads;
    g->nodes = npt_try_malloc((size_t)max_nodes * sizeof(Node), "graph nodes", err);
    if (!g->nodes) return -1;
    g->cap_nodes = max_nodes;
    g->recording = 1;
    g->layer = -1;
    return 0;
}

static void rope_tables_free(RopeTable *t) {
    while (t) {
        RopeTable *older = t->older;
        free(t);
        t = older;
    }
}

void graph_free(Graph *g) {
    free(g->nodes);
    g->nodes = NULL;
    rope_tables_free(g->rope);
    g->rope = NULL;
}

void graph_reset(Graph *g) {
    if (g->rope) { /* no tape reads the replaced tables any more */
        rope_tables_free(g->rope->older);
        g->rope->older = NULL;
    }
    g->n_nodes = 0;
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

Node *graph_record_reads(Graph *g, const char *op, BackwardFn bw, Tensor *out, Tensor **in, int n_in, unsigned reads) {
    if (g->n_nodes == g->cap_nodes) npt_die("graph tape full (%d nodes); raise max_nodes", g->cap_nodes);
    Node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = bw;
    n->out = out;
    for (int i = 0; i < n_in; i++) {
        n->in[i] = in[i];
        if (in[i] && (reads >> i & 1u) && !in[i]->keep) in[i]->keep = 1; /* shared weights: read, not written */
    }
    out->requires_grad = 1;
    return n;
}

Node *graph_record(Graph *g, const char *op, BackwardFn bw, Tensor *out, Tensor **in, int n_in) {
    out->keep = 1;
    return graph_record_reads(g, op, bw, out, in, n_in, ~0u);
}

void graph_release(Graph *g, Tensor *t) {
    if (g->keep_inputs || t->keep || t->is_param || !t->data) return;
    arena_release(g->act, t->data, t->n * sizeof(float));
    t->data = NULL;
}

float *graph_scratch(Graph *g, size_t bytes) { return arena_alloc(g->grads, bytes); }

void graph_scratch_free(Graph *g, float *p, size_t bytes) { arena_release(g->grads, p, bytes); }

float *graph_grad(Graph *g, Tensor *t) {
    if (!t->grad) {
        if (t->is_param) npt_die("parameter %s has no gradient buffer", t->name ? t->name : "?");
        t->grad = arena_alloc(g->grads, t->n * sizeof(float));
        memset(t->grad, 0, t->n * sizeof(float));
    }
    return t->grad;
}

float *graph_grad_store(Graph *g, Tensor *t, int *fresh) {
    *fresh = !t->grad && !t->is_param;
    if (!*fresh) return graph_grad(g, t);
    t->grad = arena_alloc(g->grads, t->n * sizeof(float));
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
            arena_release(g->grads, n->out->grad, n->out->n * sizeof(float));
            n->out->grad = NULL;
        }
    }
}
