/* model/ops.h — the coarse differentiable ops of the autograd core.
 *
 * Each op computes its output into the graph's activation arena and, when an input
 * requires a gradient and the graph is recording, puts one Node on the tape whose
 * backward accumulates (+=) into the inputs' gradients. Forward and backward of an op
 * sit side by side in ops.c. Matrices are row-major; a batch of B sequences of T
 * tokens is a [B*T, features] matrix. Scalars (losses) are 1-element tensors. */
#ifndef NPT_OPS_H
#define NPT_OPS_H

#include "graph.h"
#include "llama.h" /* RopeStyle */

/* C = op(A) op(B) with op = transpose when the flag is set; one cblas_sgemm. */
Tensor *op_matmul(Graph *g, Tensor *a, Tensor *b, int trans_a, int trans_b);
/* y = x W^T for a PyTorch-layout weight W [out, in]. */
Tensor *op_linear(Graph *g, Tensor *x, Tensor *w);
/* Per-head products, for folding a product into a projection head by head:
 * f [r, nh*hd], w [nkv*hd, d] -> [nh*r, d], whose row block h is
 * f[:, h*hd : (h+1)*hd] w[kv*hd : (kv+1)*hd, :] with kv = h / (nh/nkv). */
Tensor *op_head_products(Graph *g, Tensor *f, Tensor *w, int n_heads, int n_kv_heads, int head_dim);
/* y[i, j] = sum over blocks b of x[i, b*w + j]: x [rows, n*w] -> [rows, w]. */
Tensor *op_sum_blocks(Graph *g, Tensor *x, int n);

Tensor *op_add(Graph *g, Tensor *a, Tensor *b);
/* a + b written over b's storage: for a b that is a fresh op output nothing else reads
 * (the layers' residual adds), saving a buffer. */
Tensor *op_add_into(Graph *g, Tensor *a, Tensor *b);
Tensor *op_mul(Graph *g, Tensor *a, Tensor *b);
Tensor *op_scale(Graph *g, Tensor *x, float s);
Tensor *op_silu(Graph *g, Tensor *x);
Tensor *op_sigmoid(Graph *g, Tensor *x);
/* silu(gate) * up in one pass: the SwiGLU of the Llama MLP. */
Tensor *op_swiglu(Graph *g, Tensor *gate, Tensor *up);

/* y = x / sqrt(mean(x^2) + eps) * w, per row; w has one entry per column. */
Tensor *op_rmsnorm(Graph *g, Tensor *x, Tensor *w, float eps);

/* Rotary embedding on [B*T, n_heads*head_dim]; token t of each sequence sits at
 * position pos0 + t. */
Tensor *op_rope(Graph *g, Tensor *x, int B, int T, int n_heads, int head_dim, float theta,
                RopeStyle style, int pos0);
/* The same over x's storage, for an x only the rope reads (q and k after their
 * projections); its backward needs only the rotation table. */
Tensor *op_rope_inplace(Graph *g, Tensor *x, int B, int T, int n_heads, int head_dim, float theta,
                        RopeStyle style, int pos0);

/* Fused causal grouped-query attention: q [B*T, nh*hd], k and v [B*T, nkv*hd];
 * query head h reads kv head h / (nh/nkv). Backward recomputes the softmax probabilities
 * from the row log-sum-exps kept here (op_attention_extra_floats: what it takes from the
 * activation arena besides its output). */
size_t op_attention_extra_floats(int B, int T, int n_heads);
Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int B, int T, int n_heads,
                     int n_kv_heads, int head_dim);
/* The same with values of their own width v_dim: v [B*T, v_heads*v_dim], v_heads either
 * nkv (query head h reads value head h / (nh/nkv)) or nh (one value head per query head);
 * the output is [B*T, nh*v_dim]. The NPT layer's folded attention (model/npt.c) uses it. */
Tensor *op_attention_values(Graph *g, Tensor *q, Tensor *k, Tensor *v, int B, int T, int n_heads,
                            int n_kv_heads, int head_dim, int v_heads, int v_dim);

/* Rows of table picked by ids: [n, dim]. A trainable table gets scatter-added grads. */
Tensor *op_embedding(Graph *g, Tensor *table, const int *ids, int n);

/* Mean next-token cross-entropy; rows whose target is negative are ignored.
 * Accumulates in double; never overflows on a large vocabulary. */
Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *targets);
/* -log softmax(logits)[target] of one row of V, in double with the max subtracted (exact
 * even for logits near the float maximum); lse (may be NULL) gets the row's log-sum-exp. */
double op_row_nll(const float *logits, int V, int target, double *lse);

/* Mean over all elements of (x - y)^2. */
Tensor *op_mse(Graph *g, Tensor *x, Tensor *y);
/* SPEC section 3: per-token norms are clamped to at least this in NMSE (and in eval's cosine). */
#define NPT_NMSE_FLOOR 1e-6
/* SPEC section 3: mean over rows and columns of (x/max(|x|,1e-6) - y/max(|y|,1e-6))^2
 * with |.| the row norm. */
Tensor *op_nmse(Graph *g, Tensor *x, Tensor *y);
/* The NPT regularizer term of d = z B^T: mean over rows of |d_row|^2, computed through
 * the r x r Gram matrix B^T B, without forming d. */
Tensor *op_lowrank_sqnorm(Graph *g, Tensor *z, Tensor *b);

/* The NPT MLP middle, fused (SPEC section 2), from z = A a [rows, r] on: out = silu(m) * up with
 *   full: m = gate * (0.5 * sigmoid(z B_mul^T) + 0.5) + s * z B_add^T
 *   safe (b_mul == NULL): m = gate + s * z B_add^T
 * d_add = z B_add^T and d_raw = z B_mul^T are made a row tile at a time, never stored. */
Tensor *op_npt_swiglu(Graph *g, Tensor *gate, Tensor *up, Tensor *z, Tensor *b_add, Tensor *b_mul, float s);
/* The modulation alone with the pre-SPEC factor d_mul = tanh(d_raw), which reaches zero
 * (B_mul = 0 switches the gate off): g' = gate * tanh(d_raw) + s * d_add. Tests only: it
 * lets debug's zero-factor check find a real producer; no model path uses it unless
 * NptModel.test_tanh_mul is set (followed by op_swiglu). */
Tensor *op_npt_modulate_tanh(Graph *g, Tensor *gate, Tensor *d_raw, Tensor *d_add, float s);

#endif
