/* model/graph.h — the reverse-mode tape.
 *
 * A Graph records coarse ops (a matmul, a whole fused attention) as Nodes while the
 * forward pass runs, then replays them backwards. Recording costs one Node per op; the
 * arithmetic dominates. Activations and their gradients come from two arenas that are
 * reset every step. Nothing is recorded for an op none of whose inputs requires a
 * gradient, so a frozen teacher pass and the layers below the first trainable one
 * leave no trace on the tape: backward stops there by construction. */
#ifndef NPT_GRAPH_H
#define NPT_GRAPH_H

#include "tensor.h"

typedef struct Node Node;
typedef struct Graph Graph;
typedef void (*BackwardFn)(Graph *g, Node *n);

#define NODE_MAX_INPUTS 5

struct Node {
    BackwardFn backward;
    const char *op;
    Tensor *out;
    Tensor *in[NODE_MAX_INPUTS];
    void *saved;  /* op-specific data saved for backward (in the activation arena) */
    float f[4];   /* op parameters */
    int i[8];
};

/* Called after every op with its output and inputs: the debug mode's NaN producer
 * finder and precision emulation, and eval's modulation figures, hook in here. */
typedef void (*OpObserver)(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx);
/* Called by a fused op on a value it makes and never returns (npt_swiglu's d_add, d_raw
 * and modulated gate), before using it: the debug mode rounds it to the emulated
 * precision in place and notes a non-finite one. `what` names it for the report. */
typedef void (*InnerObserver)(Graph *g, const char *what, float *x, size_t n, void *ctx);
/* A RoPE cos/sin table for positions [0, positions) (model/ops.c). It outlives steps, so
 * the sines and cosines are computed once per run, not once per layer and step. */
typedef struct RopeTable {
    struct RopeTable *older; /* replaced tables this step's tape may still read */
    int positions, head_dim;
    float theta;
    float cs[]; /* [positions][head_dim / 2][cos, sin] */
} RopeTable;

struct Graph {
    Arena *act;       /* outputs of ops and saved data */
    Arena *grads;     /* activation gradients, allocated during backward */
    Node *nodes;
    int n_nodes, cap_nodes;
    int recording;    /* 0: pure inference, nothing goes on the tape */
    OpObserver observer;
    void *observer_ctx;
    InnerObserver inner_observer; /* NULL unless debugging; shares observer_ctx */
    int keep_inputs;  /* no in-place outputs, no graph_release: an observer holds inputs */
    int layer;        /* current layer index for observers (-1 outside layers) */
    RopeTable *rope;  /* newest first; the older ones are freed at the next reset */
};

int graph_init(Graph *g, Arena *act, Arena *grads, int max_nodes, NptErr *err);
void graph_free(Graph *g);
/* Forgets the tape and resets both arenas: call at the start of every step. */
void graph_reset(Graph *g);

/* Runs backward from a scalar loss: its gradient is seeded with `seed` (1.0, or
 * 1/accumulation steps). Gradients of parameters (is_param) accumulate into their
 * persistent buffers; activation gradients are allocated zeroed on first use, and a
 * node's output gradient is recycled (its grad pointer reset to NULL) as soon as that
 * node's backward has run, since nothing else reads it. Gradients of leaves (tensors no
 * node produced, e.g. an input marked requires_grad) stay readable afterwards. */
void graph_backward(Graph *g, Tensor *loss, float seed);
/* Same from any tensor with a given output gradient (tests, partial backward). */
void graph_backward_from(Graph *g, Tensor *out, const float *seed_grad);

/* Used by ops: whether an op on these inputs must be recorded, and recording it. */
int graph_needs_grad(const Graph *g, Tensor **in, int n_in);
/* Its backward may read the data of every input and of the output. */
Node *graph_record(Graph *g, const char *op, BackwardFn bw, Tensor *out, Tensor **in, int n_in);
/* Its backward reads the data of the inputs in `reads` (bit i: in[i]) and not the output's.
 * The inputs read get keep = 1, written only if not set yet: tensors shared by graphs
 * running in parallel (the model's weights, marked at load) are then only read. */
Node *graph_record_reads(Graph *g, const char *op, BackwardFn bw, Tensor *out, Tensor **in, int n_in, unsigned reads);
/* The forward pass is done with activation t (its last reader has run): its storage goes
 * back to the activation arena unless a recorded backward reads it (or keep_inputs is
 * set: the debug checker keeps inputs for its report). t->data is NULL afterwards if freed.
 * Only for op outputs no other tensor shares storage with. */
void graph_release(Graph *g, Tensor *t);
/* Gradient buffer of t, allocated zeroed from the grads arena on first use. */
float *graph_grad(Graph *g, Tensor *t);
/* The same for an op that writes every element of t's gradient: if no contribution has
 * arrived yet, the buffer comes back uninitialised with *fresh = 1 and the op stores into
 * it (no zeroing pass); otherwise it is graph_grad's, *fresh = 0, and the op adds. */
float *graph_grad_store(Graph *g, Tensor *t, int *fresh);
/* Backward-pass scratch from the same recycled pool (uninitialised); free it before the
 * backward function returns. */
float *graph_scratch(Graph *g, size_t bytes);
void graph_scratch_free(Graph *g, float *p, size_t bytes);

#endif
