/* model/ops.c — forward and backward of every op of the autograd core (see ops.h).
 *
 * Layout of each op: the forward function computes out, records a Node if needed, and
 * tells the observer; its backward (named *_backward) sits right below it. Backward
 * functions accumulate into gradients, so an input used twice gets both contributions. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fastmath.h"

#define PAR_MIN (1 << 17) /* below this many elements a parallel region costs more than it saves, more so on a busy machine */

static void observe(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in) {
    if (g->observer) g->observer(g, op, out, in, n_in, g->observer_ctx);
}

static void same_shape(const Tensor *a, const Tensor *b, const char *op) {
    if (a->n != b->n)
        npt_die("%s: shape mismatch %s (%zu) vs %s (%zu)", op, a->name ? a->name : "?", a->n,
                b->name ? b->name : "?", b->n);
}

static Tensor *like(Graph *g, const Tensor *x, const char *name) {
    return tensor_new(g->act, name, x->ndim, x->shape);
}

/* Output over the storage of x, an op output nothing else will read and the op's
 * backward does not need (the caller's promise): one buffer fewer per call. With
 * keep_inputs set (the debug checker keeps the inputs it reports) the output gets its own
 * buffer. */
static Tensor *over(Graph *g, Tensor *x, const char *name) {
    if (g->keep_inputs || x->is_param) return like(g, x, name);
    Tensor *y = arena_alloc(g->act, sizeof *y);
    *y = (Tensor){.data = x->data, .ndim = x->ndim, .n = x->n, .name = name};
    memcpy(y->shape, x->shape, sizeof y->shape);
    return y;
}

static Tensor *scalar(Graph *g, const char *name, double v) {
    int one = 1;
    Tensor *t = tensor_new(g->act, name, 1, &one);
    t->data[0] = (float)v;
    return t;
}

/* ---------------------------------------------------------------- matmul */

/* C = op(A) op(B) into a rows x cols block of row stride ldc: zeroed here and accumulated
 * (beta = 1), since OpenBLAS's own zeroing for beta = 0 is slower than memset (a 2048 x
 * 768 output with K = 16: 1.34 -> 1.02 ms). */
static void sgemm_into_zeroed(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int rows, int cols, int k, float alpha,
                              const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    if (ldc == cols) memset(c, 0, (size_t)rows * cols * sizeof(float));
    else
        for (int i = 0; i < rows; i++) memset(c + (size_t)i * ldc, 0, (size_t)cols * sizeof(float));
    cblas_sgemm(CblasRowMajor, ta, tb, rows, cols, k, alpha, a, lda, b, ldb, 1.0f, c, ldc);
}

static void matmul_backward(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1], *c = n->out;
    int ta = n->i[0], tb = n->i[1], M = n->i[2], N = n->i[3], K = n->i[4];
    int lda = a->shape[1], ldb = b->shape[1];
    const float *dc = c->grad;
    if (a->requires_grad) {
        float *da = graph_grad(g, a);
        if (!ta) /* dA[M,K] += dC op(B)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasNoTrans : CblasTrans, M, K, N, 1.0f, dc, N,
                        b->data, ldb, 1.0f, da, K);
        else /* dA[K,M] += op(B) dC^T */
            cblas_sgemm(CblasRowMajor, tb ? CblasTrans : CblasNoTrans, CblasTrans, K, M, N, 1.0f, b->data, ldb,
                        dc, N, 1.0f, da, M);
    }
    if (b->requires_grad) {
        float *db = graph_grad(g, b);
        if (!tb) /* dB[K,N] += op(A)^T dC */
            cblas_sgemm(CblasRowMajor, ta ? CblasNoTrans : CblasTrans, CblasNoTrans, K, N, M, 1.0f, a->data, lda,
                        dc, N, 1.0f, db, N);
        else /* dB[N,K] += dC^T op(A) */
            cblas_sgemm(CblasRowMajor, CblasTrans, ta ? CblasTrans : CblasNoTrans, N, K, M, 1.0f, dc, N,
                        a->data, lda, 1.0f, db, K);
    }
}

Tensor *op_matmul(Graph *g, Tensor *a, Tensor *b, int trans_a, int trans_b) {
    if (a->ndim != 2 || b->ndim != 2) npt_die("matmul needs 2-D tensors");
    int M = trans_a ? a->shape[1] : a->shape[0];
    int K = trans_a ? a->shape[0] : a->shape[1];
    int Kb = trans_b ? b->shape[1] : b->shape[0];
    int N = trans_b ? b->shape[0] : b->shape[1];
    if (K != Kb)
        npt_die("matmul: inner dimensions differ (%s: %d, %s: %d)", a->name ? a->name : "?", K,
                b->name ? b->name : "?", Kb);
    Tensor *c = tensor_new2(g->act, "matmul", M, N);
    sgemm_into_zeroed(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, a->data,
                      a->shape[1], b->data, b->shape[1], c->data, N);
    Tensor *in[2] = {a, b};
    if (graph_needs_grad(g, in, 2)) {
        /* dA needs B and dB needs A: a frozen weight's input is not read again */
        unsigned reads = (a->requires_grad ? 2u : 0u) | (b->requires_grad ? 1u : 0u);
        Node *n = graph_record_reads(g, "matmul", matmul_backward, c, in, 2, reads);
        n->i[0] = trans_a, n->i[1] = trans_b, n->i[2] = M, n->i[3] = N, n->i[4] = K;
    }
    observe(g, "matmul", c, in, 2);
    return c;
}

Tensor *op_linear(Graph *g, Tensor *x, Tensor *w) { return op_matmul(g, x, w, 0, 1); }

static void head_products_backward(Graph *g, Node *n) {
    Tensor *f = n->in[0], *w = n->in[1];
    int nh = n->i[0], group = nh / n->i[1], hd = n->i[2], r = tensor_rows(f), d = tensor_cols(w);
    const float *dy = n->out->grad;
    for (int h = 0; h < nh; h++) {
        const float *dyh = dy + (size_t)h * r * d, *wh = w->data + (size_t)(h / group) * hd * d;
        if (f->requires_grad) /* dF_h += dY_h W_kv^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, hd, d, 1.0f, dyh, d, wh, d, 1.0f,
                        graph_grad(g, f) + h * hd, nh * hd);
        if (w->requires_grad) /* dW_kv += F_h^T dY_h */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hd, d, r, 1.0f, f->data + h * hd, nh * hd, dyh, d,
                        1.0f, graph_grad(g, w) + (size_t)(h / group) * hd * d, d);
    }
}

Tensor *op_head_products(Graph *g, Tensor *f, Tensor *w, int n_heads, int n_kv_heads, int head_dim) {
    int r = tensor_rows(f), d = tensor_cols(w);
    if (n_kv_heads <= 0 || n_heads % n_kv_heads || tensor_cols(f) != n_heads * head_dim ||
        tensor_rows(w) != n_kv_heads * head_dim)
        npt_die("head_products: %s [%d, %d] and %s [%d, %d] do not fit %d/%d heads of %d", f->name ? f->name : "?", r,
                tensor_cols(f), w->name ? w->name : "?", tensor_rows(w), d, n_heads, n_kv_heads, head_dim);
    Tensor *y = tensor_new2(g->act, "head_products", n_heads * r, d);
    int group = n_heads / n_kv_heads;
    for (int h = 0; h < n_heads; h++)
        sgemm_into_zeroed(CblasNoTrans, CblasNoTrans, r, d, head_dim, 1.0f, f->data + h * head_dim, n_heads * head_dim,
                          w->data + (size_t)(h / group) * head_dim * d, d, y->data + (size_t)h * r * d, d);
    Tensor *in[2] = {f, w};
    if (graph_needs_grad(g, in, 2)) {
        unsigned reads = (f->requires_grad ? 2u : 0u) | (w->requires_grad ? 1u : 0u); /* dF needs W, dW needs F */
        Node *nd = graph_record_reads(g, "head_products", head_products_backward, y, in, 2, reads);
        nd->i[0] = n_heads, nd->i[1] = n_kv_heads, nd->i[2] = head_dim;
    }
    observe(g, "head_products", y, in, 2);
    return y;
}

static void sum_blocks_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    int rows = tensor_rows(x), cols = tensor_cols(x), w = tensor_cols(n->out);
    float *dx = graph_grad(g, x);
    const float *dy = n->out->grad;
#pragma omp parallel for schedule(static) if (x->n > PAR_MIN)
    for (int i = 0; i < rows; i++)
        for (int c0 = 0; c0 < cols; c0 += w)
            for (int j = 0; j < w; j++) dx[(size_t)i * cols + c0 + j] += dy[(size_t)i * w + j];
}

Tensor *op_sum_blocks(Graph *g, Tensor *x, int n) {
    int rows = tensor_rows(x), cols = tensor_cols(x);
    if (n <= 0 || cols % n) npt_die("sum_blocks: %d columns of %s do not split into %d blocks", cols, x->name ? x->name : "?", n);
    int w = cols / n;
    Tensor *y = tensor_new2(g->act, "sum_blocks", rows, w);
#pragma omp parallel for schedule(static) if (x->n > PAR_MIN)
    for (int i = 0; i < rows; i++) {
        const float *xr = x->data + (size_t)i * cols;
        float *yr = y->data + (size_t)i * w;
        for (int j = 0; j < w; j++) yr[j] = xr[j];
        for (int b = 1; b < n; b++)
            for (int j = 0; j < w; j++) yr[j] += xr[b * w + j];
    }
    Tensor *in[1] = {x};
    if (graph_needs_grad(g, in, 1)) graph_record_reads(g, "sum_blocks", sum_blocks_backward, y, in, 1, 0);
    observe(g, "sum_blocks", y, in, 1);
    return y;
}

/* ---------------------------------------------------------------- add, mul, scale */

static void add_backward(Graph *g, Node *n) {
    const float *dy = n->out->grad;
    for (int k = 0; k < 2; k++) {
        Tensor *t = n->in[k];
        if (!t->requires_grad) continue;
        float *d = graph_grad(g, t);
        size_t len = t->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
        for (size_t i = 0; i < len; i++) d[i] += dy[i];
    }
}

static Tensor *add(Graph *g, Tensor *a, Tensor *b, int into_b) {
    same_shape(a, b, "add");
    Tensor *y = into_b ? over(g, b, "add") : like(g, a, "add");
    size_t len = a->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) y->data[i] = a->data[i] + b->data[i];
    Tensor *in[2] = {a, b};
    if (graph_needs_grad(g, in, 2)) graph_record_reads(g, "add", add_backward, y, in, 2, 0);
    observe(g, "add", y, in, 2);
    return y;
}

Tensor *op_add(Graph *g, Tensor *a, Tensor *b) { return add(g, a, b, 0); }
Tensor *op_add_into(Graph *g, Tensor *a, Tensor *b) { return add(g, a, b, 1); }

static void mul_backward(Graph *g, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    const float *dy = n->out->grad;
    size_t len = a->n;
    if (a->requires_grad) {
        float *da = graph_grad(g, a);
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
        for (size_t i = 0; i < len; i++) da[i] += dy[i] * b->data[i];
    }
    if (b->requires_grad) {
        float *db = graph_grad(g, b);
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
        for (size_t i = 0; i < len; i++) db[i] += dy[i] * a->data[i];
    }
}

Tensor *op_mul(Graph *g, Tensor *a, Tensor *b) {
    same_shape(a, b, "mul");
    Tensor *y = like(g, a, "mul");
    size_t len = a->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) y->data[i] = a->data[i] * b->data[i];
    Tensor *in[2] = {a, b};
    if (graph_needs_grad(g, in, 2)) graph_record(g, "mul", mul_backward, y, in, 2);
    observe(g, "mul", y, in, 2);
    return y;
}

static void scale_backward(Graph *g, Node *n) {
    float s = n->f[0], *dx = graph_grad(g, n->in[0]);
    const float *dy = n->out->grad;
    size_t len = n->out->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) dx[i] += s * dy[i];
}

Tensor *op_scale(Graph *g, Tensor *x, float s) {
    Tensor *y = like(g, x, "scale");
    size_t len = x->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) y->data[i] = s * x->data[i];
    Tensor *in[1] = {x};
    if (graph_needs_grad(g, in, 1)) graph_record_reads(g, "scale", scale_backward, y, in, 1, 0)->f[0] = s;
    observe(g, "scale", y, in, 1);
    return y;
}

/* ---------------------------------------------------------------- sigmoid, silu, swiglu */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + npt_expf(-x)); }

static void sigmoid_backward(Graph *g, Node *n) {
    float *dx = graph_grad(g, n->in[0]);
    const float *y = n->out->data, *dy = n->out->grad;
    size_t len = n->out->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
}

Tensor *op_sigmoid(Graph *g, Tensor *x) {
    Tensor *y = like(g, x, "sigmoid");
    size_t len = x->n;
    const float *restrict xs = x->data;
    float *restrict ys = y->data;
#pragma omp parallel for simd schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) ys[i] = sigmoidf(xs[i]);
    Tensor *in[1] = {x};
    if (graph_needs_grad(g, in, 1)) graph_record(g, "sigmoid", sigmoid_backward, y, in, 1);
    observe(g, "sigmoid", y, in, 1);
    return y;
}

/* d/dx x*sigmoid(x) = s * (1 + x * (1 - s)) */
static inline float silu_grad(float x) {
    float s = sigmoidf(x);
    return s * (1.0f + x * (1.0f - s));
}

static void silu_backward(Graph *g, Node *n) {
    float *restrict dx = graph_grad(g, n->in[0]);
    const float *restrict x = n->in[0]->data, *restrict dy = n->out->grad;
    size_t len = n->out->n;
#pragma omp parallel for simd schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) dx[i] += dy[i] * silu_grad(x[i]);
}

Tensor *op_silu(Graph *g, Tensor *x) {
    Tensor *y = like(g, x, "silu");
    size_t len = x->n;
    const float *restrict xs = x->data;
    float *restrict ys = y->data;
#pragma omp parallel for simd schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) ys[i] = xs[i] * sigmoidf(xs[i]);
    Tensor *in[1] = {x};
    if (graph_needs_grad(g, in, 1)) graph_record(g, "silu", silu_backward, y, in, 1);
    observe(g, "silu", y, in, 1);
    return y;
}

static void swiglu_backward(Graph *g, Node *n) {
    Tensor *gate = n->in[0], *up = n->in[1];
    const float *restrict dy = n->out->grad, *restrict gs = gate->data, *restrict us = up->data;
    float *restrict dg = gate->requires_grad ? graph_grad(g, gate) : NULL;
    float *restrict du = up->requires_grad ? graph_grad(g, up) : NULL;
    size_t len = n->out->n;
    if (dg && du) { /* the usual case, in one pass */
#pragma omp parallel for simd schedule(static) if (len > PAR_MIN)
        for (size_t i = 0; i < len; i++) {
            float x = gs[i], s = sigmoidf(x);
            dg[i] += dy[i] * us[i] * s * (1.0f + x * (1.0f - s));
            du[i] += dy[i] * x * s;
        }
        return;
    }
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) {
        float x = gs[i];
        if (dg) dg[i] += dy[i] * us[i] * silu_grad(x);
        if (du) du[i] += dy[i] * x * sigmoidf(x);
    }
}

Tensor *op_swiglu(Graph *g, Tensor *gate, Tensor *up) {
    same_shape(gate, up, "swiglu");
    Tensor *y = like(g, gate, "swiglu");
    size_t len = gate->n;
    const float *restrict gs = gate->data, *restrict us = up->data;
    float *restrict ys = y->data;
#pragma omp parallel for simd schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) ys[i] = gs[i] * sigmoidf(gs[i]) * us[i];
    Tensor *in[2] = {gate, up};
    if (graph_needs_grad(g, in, 2)) graph_record_reads(g, "swiglu", swiglu_backward, y, in, 2, 3u);
    observe(g, "swiglu", y, in, 2);
    return y;
}

/* ---------------------------------------------------------------- rmsnorm */

static void rmsnorm_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1];
    const float *rstd = n->saved, *dy = n->out->grad;
    int rows = tensor_rows(x), cols = tensor_cols(x);
    if (x->requires_grad) {
        float *dx = graph_grad(g, x);
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN)
        for (int r = 0; r < rows; r++) {
            const float *xr = x->data + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
            float *dxr = dx + (size_t)r * cols;
            double dot = 0.0; /* sum_j (dy_j w_j) x_j */
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < cols; j++) dot += (double)dyr[j] * w->data[j] * xr[j];
            float rs = rstd[r];
            float coef = (float)(dot * rs * rs * rs / cols);
            for (int j = 0; j < cols; j++) dxr[j] += rs * dyr[j] * w->data[j] - coef * xr[j];
        }
    }
    if (w->requires_grad) {
        float *dw = graph_grad(g, w);
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN)
        for (int j = 0; j < cols; j++) {
            double acc = 0.0;
            for (int r = 0; r < rows; r++) acc += (double)dy[(size_t)r * cols + j] * x->data[(size_t)r * cols + j] * rstd[r];
            dw[j] += (float)acc;
        }
    }
}

Tensor *op_rmsnorm(Graph *g, Tensor *x, Tensor *w, float eps) {
    int rows = tensor_rows(x), cols = tensor_cols(x);
    if ((int)w->n != cols) npt_die("rmsnorm: weight %s has %zu entries for %d columns", w->name ? w->name : "?", w->n, cols);
    Tensor *y = like(g, x, "rmsnorm");
    float *rstd = arena_alloc(g->act, (size_t)rows * sizeof(float));
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xr = x->data + (size_t)r * cols;
        float *yr = y->data + (size_t)r * cols;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < cols; j++) ss += (double)xr[j] * xr[j];
        float rs = (float)(1.0 / sqrt(ss / cols + eps));
        rstd[r] = rs;
        for (int j = 0; j < cols; j++) yr[j] = xr[j] * rs * w->data[j];
    }
    Tensor *in[2] = {x, w};
    if (graph_needs_grad(g, in, 2)) graph_record_reads(g, "rmsnorm", rmsnorm_backward, y, in, 2, 3u)->saved = rstd;
    observe(g, "rmsnorm", y, in, 2);
    return y;
}

/* ---------------------------------------------------------------- rope */

/* cos/sin of pos * theta^(-2i/hd) for positions pos0 .. pos0 + T - 1 and hd/2 frequencies,
 * computed in double so both conventions match a float64 reference to float rounding.
 * The graph keeps the table (from position 0) across steps: recomputing it per call cost
 * about 1% of a training step in sincos. A request it does not cover replaces it; the
 * replaced table stays valid until the next graph_reset, since this step's tape may hold it. */
static const float *rope_table(Graph *g, int T, int head_dim, float theta, int pos0) {
    int half = head_dim / 2, positions = pos0 + T;
    RopeTable *t = g->rope;
    if (t && t->head_dim == head_dim && t->theta == theta && t->positions >= positions)
        return t->cs + (size_t)pos0 * half * 2;
    t = malloc(sizeof *t + (size_t)positions * half * 2 * sizeof(float));
    if (!t) npt_die("out of memory for a RoPE table of %d positions", positions);
    t->positions = positions, t->head_dim = head_dim, t->theta = theta;
    for (int i = 0; i < half; i++) {
        double freq = pow((double)theta, -2.0 * i / head_dim);
        for (int p = 0; p < positions; p++) {
            double ang = (double)p * freq;
            t->cs[((size_t)p * half + i) * 2] = (float)cos(ang);
            t->cs[((size_t)p * half + i) * 2 + 1] = (float)sin(ang);
        }
    }
    t->older = g->rope;
    g->rope = t;
    return t->cs + (size_t)pos0 * half * 2;
}

/* Rotates every head of every row by +angle (dir 1) or -angle (dir -1). */
static void rope_apply(const float *x, float *y, const float *tab, int B, int T, int n_heads, int head_dim,
                       RopeStyle style, float dir, int accumulate) {
    int half = head_dim / 2, width = n_heads * head_dim;
#pragma omp parallel for schedule(static) if ((size_t)B * T * width > PAR_MIN)
    for (int row = 0; row < B * T; row++) {
        const float *cs = tab + (size_t)(row % T) * half * 2;
        const float *xr = x + (size_t)row * width;
        float *yr = y + (size_t)row * width;
        for (int h = 0; h < n_heads; h++) {
            const float *xh = xr + h * head_dim;
            float *yh = yr + h * head_dim;
            for (int i = 0; i < half; i++) {
                int i0 = style == ROPE_INTERLEAVED ? 2 * i : i;
                int i1 = style == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
                float c = cs[2 * i], s = dir * cs[2 * i + 1];
                float a = xh[i0], b = xh[i1];
                float r0 = a * c - b * s, r1 = a * s + b * c;
                if (accumulate) {
                    yh[i0] += r0;
                    yh[i1] += r1;
                } else {
                    yh[i0] = r0;
                    yh[i1] = r1;
                }
            }
        }
    }
}

static void rope_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0];
    rope_apply(n->out->grad, graph_grad(g, x), n->saved, n->i[0], n->i[1], n->i[2], n->i[3], (RopeStyle)n->i[4],
               -1.0f, 1);
}

static Tensor *rope(Graph *g, Tensor *x, int B, int T, int n_heads, int head_dim, float theta, RopeStyle style,
                    int pos0, int in_place) {
    if ((size_t)B * T * n_heads * head_dim != x->n || head_dim % 2)
        npt_die("rope: %s has %zu elements, expected %d x %d x %d x %d", x->name ? x->name : "?", x->n, B, T,
                n_heads, head_dim);
    Tensor *y = in_place ? over(g, x, "rope") : like(g, x, "rope"); /* rope_apply reads a pair before writing it */
    const float *tab = rope_table(g, T, head_dim, theta, pos0);
    rope_apply(x->data, y->data, tab, B, T, n_heads, head_dim, style, 1.0f, 0);
    Tensor *in[1] = {x};
    if (graph_needs_grad(g, in, 1)) {
        Node *n = graph_record_reads(g, "rope", rope_backward, y, in, 1, 0); /* the table suffices */
        n->saved = (void *)tab; /* owned by g->rope */
        n->i[0] = B, n->i[1] = T, n->i[2] = n_heads, n->i[3] = head_dim, n->i[4] = style;
    }
    observe(g, "rope", y, in, 1);
    return y;
}

Tensor *op_rope(Graph *g, Tensor *x, int B, int T, int n_heads, int head_dim, float theta, RopeStyle style,
                int pos0) {
    return rope(g, x, B, T, n_heads, head_dim, theta, style, pos0, 0);
}

Tensor *op_rope_inplace(Graph *g, Tensor *x, int B, int T, int n_heads, int head_dim, float theta, RopeStyle style,
                        int pos0) {
    return rope(g, x, B, T, n_heads, head_dim, theta, style, pos0, 1);
}

/* ---------------------------------------------------------------- attention */

#define ATTN_BLOCK 64 /* query rows per sgemm: small enough to skip most of the masked half */

size_t op_attention_extra_floats(int B, int T, int n_heads) {
    /* row log-sum-exps, each thread's score block, and the saved-data struct */
    return (size_t)B * n_heads * T + (size_t)omp_get_max_threads() * ATTN_BLOCK * T + 64;
}

/* Backward recomputes the probabilities from Q, K and the saved log-sum-exp of each
 * score row instead of keeping the [B, heads, T, T] matrix: one extra Q K^T per block,
 * a few percent of the attention FLOPs, for 12.6 MB per layer at the 15M shape. */
typedef struct {
    float *lse; /* [B, n_heads, T]: log of each causal row's softmax denominator (scaled scores) */
    int B, T, nh, nkv, hd, nv, vd;
} AttnSaved;

/* Causal softmax numerators in place over `rows` rows of a score block with row stride
 * T: exp(s - rowmax), left unnormalized; the block's first row is query r0, so row i
 * sees columns 0..r0+i. inv_sum gets each row's 1 / sum, applied to the hd-wide output
 * row after P V rather than to the up to T-wide P row; lse (may be NULL) gets each row's
 * log-sum-exp. */
static void causal_softmax_rows(float *s, int r0, int rows, int T, float *lse, float *inv_sum) {
    for (int i = 0; i < rows; i++) {
        float *row = s + (size_t)i * T;
        int last = r0 + i;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j <= last; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= last; j++) {
            float e = npt_expf(row[j] - mx);
            row[j] = e;
            sum += e;
        }
        inv_sum[i] = (float)(1.0 / sum);
        for (int j = last + 1; j < r0 + rows; j++) row[j] = 0.0f;
        if (lse) lse[i] = mx + (float)log(sum);
    }
}

/* P[rows, :keys] of one row block again: scale * Q K^T, then exp(s - lse), causal. */
static void attention_probs_block(float *p, const float *qb, const float *kb, const float *lse, int r0, int rows, int T,
                                  int qs, int ks, int hd, float scale) {
    int keys = r0 + rows;
    sgemm_into_zeroed(CblasNoTrans, CblasTrans, rows, keys, hd, scale, qb + (size_t)r0 * qs, qs, kb, ks, p, T);
    for (int i = 0; i < rows; i++) {
        float *row = p + (size_t)i * T, l = lse[r0 + i];
        int last = r0 + i;
        for (int j = 0; j <= last; j++) row[j] = npt_expf(row[j] - l);
        for (int j = last + 1; j < keys; j++) row[j] = 0.0f;
    }
}

static void attention_backward(Graph *g, Node *n) {
    AttnSaved *sv = n->saved;
    Tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *o = n->out;
    int B = sv->B, T = sv->T, nh = sv->nh, nkv = sv->nkv, hd = sv->hd, group = nh / nkv;
    int vd = sv->vd, vgroup = nh / sv->nv, qs = nh * hd, ks = nkv * hd, vs = sv->nv * vd, os = nh * vd;
    float scale = 1.0f / sqrtf((float)hd);
    float *dq = q->requires_grad ? graph_grad(g, q) : NULL;
    float *dk = k->requires_grad ? graph_grad(g, k) : NULL;
    float *dv = v->requires_grad ? graph_grad(g, v) : NULL;
    int nthreads = omp_get_max_threads();
    size_t per_thread = (size_t)2 * ATTN_BLOCK * T; /* recomputed P and dP of one row block */
    size_t scratch_bytes = (size_t)nthreads * per_thread * sizeof(float);
    float *scratch = graph_scratch(g, scratch_bytes);
    /* One task per (sequence, kv head): the query heads sharing a kv head accumulate
     * into the same dK/dV rows, so they run in the same task, race-free (a value head is
     * shared by the same heads as the kv head, or by none). */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * nkv; task++) {
        int b = task / nkv, kh = task % nkv;
        float *pblk = scratch + (size_t)omp_get_thread_num() * per_thread, *dp = pblk + (size_t)ATTN_BLOCK * T;
        const float *kb = k->data + (size_t)b * T * ks + kh * hd;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            const float *lse = sv->lse + ((size_t)b * nh + h) * T;
            const float *qb = q->data + (size_t)b * T * qs + h * hd;
            const float *vb = v->data + (size_t)b * T * vs + h / vgroup * vd;
            const float *ob = o->data + (size_t)b * T * os + h * vd;
            const float *dob = o->grad + (size_t)b * T * os + h * vd;
            for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
                int rows = T - r0 < ATTN_BLOCK ? T - r0 : ATTN_BLOCK, keys = r0 + rows;
                const float *pr = pblk, *dor = dob + (size_t)r0 * os;
                attention_probs_block(pblk, qb, kb, lse, r0, rows, T, qs, ks, hd, scale);
                if (dv) /* dV[:keys] += P[rows, :keys]^T dO[rows] */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, vd, rows, 1.0f, pr, T, dor, os, 1.0f,
                                dv + (size_t)b * T * vs + h / vgroup * vd, vs);
                if (!dq && !dk) continue;
                /* dP = dO V^T; dS = P * (dP - rowsum(dO * O)) * scale */
                float *dpr = dp;
                sgemm_into_zeroed(CblasNoTrans, CblasTrans, rows, keys, vd, 1.0f, dor, os, vb, vs, dpr, T);
                for (int i = r0; i < r0 + rows; i++) {
                    double dsum = 0.0;
#pragma omp simd reduction(+ : dsum)
                    for (int d = 0; d < vd; d++) dsum += (double)dob[(size_t)i * os + d] * ob[(size_t)i * os + d];
                    float *row = dp + (size_t)(i - r0) * T;
                    const float *prow = pblk + (size_t)(i - r0) * T;
                    for (int j = 0; j <= i; j++) row[j] = prow[j] * (row[j] - (float)dsum) * scale;
                    for (int j = i + 1; j < keys; j++) row[j] = 0.0f;
                }
                if (dq) /* dQ[rows] += dS[rows, :keys] K[:keys] */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, dpr, T, kb, ks, 1.0f,
                                dq + ((size_t)b * T + r0) * qs + h * hd, qs);
                if (dk) /* dK[:keys] += dS[rows, :keys]^T Q[rows] */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, hd, rows, 1.0f, dpr, T, qb + (size_t)r0 * qs,
                                qs, 1.0f, dk + (size_t)b * T * ks + kh * hd, ks);
            }
        }
    }
    graph_scratch_free(g, scratch, scratch_bytes);
}

Tensor *op_attention_values(Graph *g, Tensor *q, Tensor *k, Tensor *v, int B, int T, int n_heads, int n_kv_heads,
                            int head_dim, int v_heads, int v_dim) {
    int qs = n_heads * head_dim, ks = n_kv_heads * head_dim, vs = v_heads * v_dim, os = n_heads * v_dim;
    if (n_kv_heads <= 0 || n_heads % n_kv_heads) npt_die("attention: %d heads not a multiple of %d kv heads", n_heads, n_kv_heads);
    if (v_heads != n_kv_heads && v_heads != n_heads)
        npt_die("attention: %d value heads, expected %d (one per kv head) or %d (one per query head)", v_heads,
                n_kv_heads, n_heads);
    if (q->n != (size_t)B * T * qs || k->n != (size_t)B * T * ks || v->n != (size_t)B * T * vs)
        npt_die("attention: q/k/v sizes do not match B=%d T=%d heads=%d/%d/%d hd=%d/%d", B, T, n_heads, n_kv_heads,
                v_heads, head_dim, v_dim);
    Tensor *o = tensor_new2(g->act, "attention", B * T, os);
    Tensor *in[3] = {q, k, v};
    int record = graph_needs_grad(g, in, 3);
    AttnSaved *sv = NULL;
    if (record) {
        sv = arena_alloc(g->act, sizeof *sv);
        *sv = (AttnSaved){.B = B, .T = T, .nh = n_heads, .nkv = n_kv_heads, .hd = head_dim, .nv = v_heads, .vd = v_dim};
        sv->lse = arena_alloc(g->act, (size_t)B * n_heads * T * sizeof(float));
    }
    float scale = 1.0f / sqrtf((float)head_dim);
    int group = n_heads / n_kv_heads, vgroup = n_heads / v_heads;
    float *blocks = arena_alloc(g->act, (size_t)omp_get_max_threads() * ATTN_BLOCK * T * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * n_heads; task++) {
        int b = task / n_heads, h = task % n_heads, kh = h / group;
        float *p = blocks + (size_t)omp_get_thread_num() * ATTN_BLOCK * T;
        const float *qb = q->data + (size_t)b * T * qs + h * head_dim;
        const float *kb = k->data + (size_t)b * T * ks + kh * head_dim;
        const float *vb = v->data + (size_t)b * T * vs + h / vgroup * v_dim;
        /* Row blocks see only the keys up to their last row: the masked half of Q K^T
         * and of P V is never computed. */
        for (int r0 = 0; r0 < T; r0 += ATTN_BLOCK) {
            int rows = T - r0 < ATTN_BLOCK ? T - r0 : ATTN_BLOCK, keys = r0 + rows;
            sgemm_into_zeroed(CblasNoTrans, CblasTrans, rows, keys, head_dim, scale, qb + (size_t)r0 * qs, qs, kb, ks, p, T);
            float inv_sum[ATTN_BLOCK];
            causal_softmax_rows(p, r0, rows, T, sv ? sv->lse + (size_t)task * T + r0 : NULL, inv_sum);
            float *ob = o->data + ((size_t)b * T + r0) * os + h * v_dim;
            sgemm_into_zeroed(CblasNoTrans, CblasNoTrans, rows, v_dim, keys, 1.0f, p, T, vb, vs, ob, os);
            for (int i = 0; i < rows; i++)
                for (int d = 0; d < v_dim; d++) ob[(size_t)i * os + d] *= inv_sum[i];
        }
    }
    if (record) graph_record(g, "attention", attention_backward, o, in, 3)->saved = sv;
    observe(g, "attention", o, in, 3);
    return o;
}

Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int B, int T, int n_heads, int n_kv_heads,
                     int head_dim) {
    return op_attention_values(g, q, k, v, B, T, n_heads, n_kv_heads, head_dim, n_kv_heads, head_dim);
}

/* ---------------------------------------------------------------- embedding */

static void embedding_backward(Graph *g, Node *n) {
    Tensor *table = n->in[0];
    const int *ids = n->saved;
    int rows = n->i[0], dim = tensor_cols(table);
    float *dt = graph_grad(g, table);
    for (int r = 0; r < rows; r++) { /* serial: ids repeat, so rows would race */
        float *dst = dt + (size_t)ids[r] * dim;
        const float *src = n->out->grad + (size_t)r * dim;
        for (int j = 0; j < dim; j++) dst[j] += src[j];
    }
}

Tensor *op_embedding(Graph *g, Tensor *table, const int *ids, int n) {
    int vocab = tensor_rows(table), dim = tensor_cols(table);
    Tensor *y = tensor_new2(g->act, "embedding", n, dim);
    int *saved = arena_alloc(g->act, (size_t)n * sizeof(int));
    for (int r = 0; r < n; r++) {
        if (ids[r] < 0 || ids[r] >= vocab) npt_die("embedding: token id %d outside vocabulary [0, %d)", ids[r], vocab);
        saved[r] = ids[r];
        memcpy(y->data + (size_t)r * dim, table->data + (size_t)ids[r] * dim, (size_t)dim * sizeof(float));
    }
    Tensor *in[1] = {table};
    if (graph_needs_grad(g, in, 1)) {
        Node *nd = graph_record(g, "embedding", embedding_backward, y, in, 1);
        nd->saved = saved;
        nd->i[0] = n;
    }
    observe(g, "embedding", y, in, 1);
    return y;
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct {
    const int *targets;
    float *lse; /* log-sum-exp per row */
    int count;  /* rows with a target */
} CeSaved;

static void cross_entropy_backward(Graph *g, Node *n) {
    Tensor *logits = n->in[0];
    CeSaved *sv = n->saved;
    int rows = tensor_rows(logits), V = tensor_cols(logits);
    float coef = n->out->grad[0] / (float)sv->count;
    float *dl = graph_grad(g, logits);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int t = sv->targets[r];
        if (t < 0) continue;
        const float *lr = logits->data + (size_t)r * V;
        float *dr = dl + (size_t)r * V;
        for (int j = 0; j < V; j++) dr[j] += coef * npt_expf(lr[j] - sv->lse[r]);
        dr[t] -= coef;
    }
}

double op_row_nll(const float *logits, int V, int target, double *lse) {
    float mx = logits[0];
    for (int j = 1; j < V; j++) mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < V; j++) sum += exp((double)logits[j] - mx);
    double log_sum = log(sum);
    if (lse) *lse = mx + log_sum;
    return ((double)mx - logits[target]) + log_sum; /* mx + log_sum first would round log_sum away near 3e38 */
}

Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *targets) {
    int rows = tensor_rows(logits), V = tensor_cols(logits);
    CeSaved *sv = arena_alloc(g->act, sizeof *sv);
    int *tg = arena_alloc(g->act, (size_t)rows * sizeof(int));
    sv->lse = arena_alloc(g->act, (size_t)rows * sizeof(float));
    sv->targets = tg;
    sv->count = 0;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int r = 0; r < rows; r++) {
        tg[r] = targets[r];
        if (tg[r] >= V) npt_die("cross_entropy: target %d outside vocabulary %d", tg[r], V);
        if (tg[r] < 0) continue;
        double lse;
        total += op_row_nll(logits->data + (size_t)r * V, V, tg[r], &lse);
        sv->lse[r] = (float)lse;
    }
    for (int r = 0; r < rows; r++) sv->count += tg[r] >= 0;
    if (sv->count == 0) npt_die("cross_entropy: no row has a target");
    Tensor *loss = scalar(g, "cross_entropy", total / sv->count);
    Tensor *in[1] = {logits};
    if (graph_needs_grad(g, in, 1)) graph_record(g, "cross_entropy", cross_entropy_backward, loss, in, 1)->saved = sv;
    observe(g, "cross_entropy", loss, in, 1);
    return loss;
}

/* ---------------------------------------------------------------- mse, nmse, regularizer */

static void mse_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0], *y = n->in[1];
    float coef = 2.0f * n->out->grad[0] / (float)x->n;
    float *dx = x->requires_grad ? graph_grad(g, x) : NULL;
    float *dy = y->requires_grad ? graph_grad(g, y) : NULL;
    size_t len = x->n;
#pragma omp parallel for schedule(static) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) {
        float d = coef * (x->data[i] - y->data[i]);
        if (dx) dx[i] += d;
        if (dy) dy[i] -= d;
    }
}

Tensor *op_mse(Graph *g, Tensor *x, Tensor *y) {
    same_shape(x, y, "mse");
    double total = 0.0;
    size_t len = x->n;
#pragma omp parallel for schedule(static) reduction(+ : total) if (len > PAR_MIN)
    for (size_t i = 0; i < len; i++) {
        double d = (double)x->data[i] - y->data[i];
        total += d * d;
    }
    Tensor *loss = scalar(g, "mse", total / (double)len);
    Tensor *in[2] = {x, y};
    if (graph_needs_grad(g, in, 2)) graph_record(g, "mse", mse_backward, loss, in, 2);
    observe(g, "mse", loss, in, 2);
    return loss;
}

/* Gradient of sum_j (u_j - v_j)^2 * coef through u = x / max(|x|, floor):
 * the projection (I - u u^T)/|x| when the norm is above the floor, 1/floor below. */
static void nmse_row_grad(const float *x, const float *other, float norm_x, float norm_o, float coef, float sign,
                          float *dx, int cols) {
    double ug = 0.0;
    for (int j = 0; j < cols; j++) {
        float u = x[j] / norm_x, gj = sign * coef * (u - other[j] / norm_o);
        ug += (double)u * gj;
    }
    int projected = norm_x > (float)NPT_NMSE_FLOOR;
    for (int j = 0; j < cols; j++) {
        float u = x[j] / norm_x, gj = sign * coef * (u - other[j] / norm_o);
        dx[j] += projected ? (gj - u * (float)ug) / norm_x : gj / norm_x;
    }
}

static void nmse_backward(Graph *g, Node *n) {
    Tensor *x = n->in[0], *y = n->in[1];
    const float *norms = n->saved; /* [rows][2]: clamped norms of x and y */
    int rows = tensor_rows(x), cols = tensor_cols(x);
    float coef = 2.0f * n->out->grad[0] / ((float)rows * cols);
    float *dx = x->requires_grad ? graph_grad(g, x) : NULL;
    float *dy = y->requires_grad ? graph_grad(g, y) : NULL;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xr = x->data + (size_t)r * cols, *yr = y->data + (size_t)r * cols;
        if (dx) nmse_row_grad(xr, yr, norms[2 * r], norms[2 * r + 1], coef, 1.0f, dx + (size_t)r * cols, cols);
        if (dy) nmse_row_grad(yr, xr, norms[2 * r + 1], norms[2 * r], coef, 1.0f, dy + (size_t)r * cols, cols);
    }
}

Tensor *op_nmse(Graph *g, Tensor *x, Tensor *y) {
    same_shape(x, y, "nmse");
    int rows = tensor_rows(x), cols = tensor_cols(x);
    float *norms = arena_alloc(g->act, (size_t)rows * 2 * sizeof(float));
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if ((size_t)rows * cols > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xr = x->data + (size_t)r * cols, *yr = y->data + (size_t)r * cols;
        double sx = 0.0, sy = 0.0;
#pragma omp simd reduction(+ : sx, sy)
        for (int j = 0; j < cols; j++) {
            sx += (double)xr[j] * xr[j];
            sy += (double)yr[j] * yr[j];
        }
        double nx = fmax(sqrt(sx), NPT_NMSE_FLOOR), ny = fmax(sqrt(sy), NPT_NMSE_FLOOR);
        norms[2 * r] = (float)nx;
        norms[2 * r + 1] = (float)ny;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < cols; j++) {
            double d = xr[j] / nx - yr[j] / ny;
            acc += d * d;
        }
        total += acc;
    }
    Tensor *loss = scalar(g, "nmse", total / ((double)rows * cols));
    Tensor *in[2] = {x, y};
    if (graph_needs_grad(g, in, 2)) graph_record(g, "nmse", nmse_backward, loss, in, 2)->saved = norms;
    observe(g, "nmse", loss, in, 2);
    return loss;
}

/* The NPT regularizer term of one projection d = z B^T (z [rows, r], B [f, r]): the mean
 * over rows of |d_row|^2, computed as z_row G z_row^T with the r x r Gram matrix
 * G = B^T B. Equal to summing d^2, but it never reads d: r^2 work per row instead of f,
 * and d need not be kept for backward. */
static void lowrank_sqnorm_backward(Graph *g, Node *n) {
    Tensor *z = n->in[0], *b = n->in[1];
    int rows = tensor_rows(z), r = tensor_cols(z), f = tensor_rows(b);
    float coef = 2.0f * n->out->grad[0] / (float)rows;
    if (z->requires_grad) /* dz += coef z G, with the forward's G = B^T B (r x r) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, r, r, coef, z->data, r, n->saved, r, 1.0f,
                    graph_grad(g, z), r);
    if (b->requires_grad) { /* dB += coef B (z^T z) */
        float *zz = graph_scratch(g, (size_t)r * r * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, r, rows, 1.0f, z->data, r, z->data, r, 0.0f, zz, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f, r, r, coef, b->data, r, zz, r, 1.0f,
                    graph_grad(g, b), r);
        graph_scratch_free(g, zz, (size_t)r * r * sizeof(float));
    }
}

Tensor *op_lowrank_sqnorm(Graph *g, Tensor *z, Tensor *b) {
    int rows = tensor_rows(z), r = tensor_cols(z), f = tensor_rows(b);
    if (tensor_cols(b) != r) npt_die("lowrank_sqnorm: %s has %d columns, z has %d", b->name ? b->name : "?", tensor_cols(b), r);
    /* the Gram matrix in double: the quadratic forms below then lose nothing to it */
    double *gram = arena_alloc(g->act, (size_t)r * r * sizeof(double));
    for (int i = 0; i < r; i++)
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
#pragma omp simd reduction(+ : acc)
            for (int k = 0; k < f; k++) acc += (double)b->data[(size_t)k * r + i] * b->data[(size_t)k * r + j];
            gram[i * r + j] = gram[j * r + i] = acc;
        }
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if ((size_t)rows * r * r > PAR_MIN)
    for (int row = 0; row < rows; row++) {
        const float *zr = z->data + (size_t)row * r;
        double q = 0.0;
        for (int i = 0; i < r; i++) {
            double gz = 0.0;
            for (int j = 0; j < r; j++) gz += gram[i * r + j] * zr[j];
            q += zr[i] * gz;
        }
        total += q;
    }
    Tensor *loss = scalar(g, "lowrank_sqnorm", total / rows);
    Tensor *in[2] = {z, b};
    if (graph_needs_grad(g, in, 2)) { /* backward's dz needs G: kept as float, r^2 values */
        float *gram_f = arena_alloc(g->act, (size_t)r * r * sizeof(float));
        for (int i = 0; i < r * r; i++) gram_f[i] = (float)gram[i];
        graph_record(g, "lowrank_sqnorm", lowrank_sqnorm_backward, loss, in, 2)->saved = gram_f;
    }
    arena_release(g->act, gram, (size_t)r * r * sizeof(double));
    observe(g, "lowrank_sqnorm", loss, in, 2);
    return loss;
}

/* ---------------------------------------------------------------- NPT modulation */

/* The NPT MLP's middle in one op (SPEC section 2), from z = A a on:
 *   d_add = z B_add^T, d_raw = z B_mul^T          (z [rows, r], B [f, r])
 *   m = gate * (0.5 sigmoid(d_raw) + 0.5) + s d_add   (safe mode, B_mul NULL: gate + s d_add)
 *   out = silu(m) * up
 * d_add and d_raw only ever exist one row tile at a time, in per-thread buffers that stay
 * in L2: a tile's sgemm writes them and the elementwise pass reads them at once. As
 * [rows, f] activations they would be written, read, and read again in backward beside
 * two gradients of the same size: about 8 x rows x f floats of memory traffic per layer,
 * where this op moves the same data through L2 for r multiply-adds per element. Backward
 * recomputes the tile (and m) instead of keeping anything. */
enum { NPT_SWIGLU_CHUNK = 512 }; /* elements per backward chunk: four chunk buffers stay in L1 */

/* Rows per tile: the d_add and d_raw tiles together are at most 512 KB, half of a core's L2 here. */
static int npt_swiglu_tile_rows(int f) {
    int t = (1 << 16) / f;
    return t < 8 ? 8 : t > 128 ? 128 : t;
}

/* Threads for a loop over `items` independent pieces of `work` elements: one when nested
 * inside an active region (a shard of train/objective.c already owns its core). */
static int loop_threads(size_t work, int items) {
    if (work <= PAR_MIN || omp_get_active_level() >= omp_get_max_active_levels()) return 1;
    int t = omp_get_max_threads();
    return t < items ? t : items;
}

/* Row tile i of tr rows (the last may be short): its first row in *r0, d_add and d_raw
 * (z B^T for each B present) into tile[0], tile[1] [rows, f]; returns its row count. */
static int lowrank_tiles(const Tensor *z, Tensor *const b[2], int i, int tr, float *tile[2], int *r0) {
    int rows = tensor_rows(z), r = tensor_cols(z), nr;
    *r0 = i * tr;
    nr = rows - *r0 < tr ? rows - *r0 : tr;
    for (int k = 0; k < 2 && b[k]; k++)
        sgemm_into_zeroed(CblasNoTrans, CblasTrans, nr, tensor_rows(b[k]), r, 1.0f, z->data + (size_t)*r0 * r, r,
                          b[k]->data, r, tile[k], tensor_rows(b[k]));
    return nr;
}

/* The modulated gate g' = g * d_mul + s * d_add, d_mul = 0.5 sigmoid(d_raw) + 0.5 (SPEC
 * section 2; without d_raw, safe mode, d_mul is 1), and SwiGLU over it: the one spelling
 * of the forward formula, shared by training and the debug mode's observed copy. */
static inline float npt_modulated_gate(float g, float a, const float *restrict rs, size_t i, float s) {
    return rs ? g * (0.5f * sigmoidf(rs[i]) + 0.5f) + s * a : g + s * a;
}
static inline float swiglu_value(float m, float u) { return m * sigmoidf(m) * u; }

static void npt_swiglu_span(const float *restrict gs, const float *restrict us, const float *restrict as,
                            const float *restrict rs, float s, size_t n, float *restrict ys) {
    if (rs) { /* two loops, so that neither branches per element */
#pragma omp simd
        for (size_t i = 0; i < n; i++) ys[i] = swiglu_value(npt_modulated_gate(gs[i], as[i], rs, i, s), us[i]);
        return;
    }
#pragma omp simd
    for (size_t i = 0; i < n; i++) ys[i] = swiglu_value(npt_modulated_gate(gs[i], as[i], NULL, i, s), us[i]);
}

/* npt_swiglu_span for an observed graph with an inner observer (debug): d_add, d_raw
 * and the modulated gate m are each shown to it before use, as a framework running the
 * unfused ops would store them, so a reduced precision overflows where it would there.
 * m is made over d_add (as[i] is read before m[i] is written). */
static void npt_swiglu_span_observed(Graph *g, const float *gs, const float *us, float *as, float *rs, float s, size_t n,
                                     float *ys) {
    g->inner_observer(g, "d_add = z B_add^T", as, n, g->observer_ctx);
    if (rs) g->inner_observer(g, "d_raw = z B_mul^T", rs, n, g->observer_ctx);
    for (size_t i = 0; i < n; i++) as[i] = npt_modulated_gate(gs[i], as[i], rs, i, s);
    g->inner_observer(g, "the modulated gate g'", as, n, g->observer_ctx);
    for (size_t i = 0; i < n; i++) ys[i] = swiglu_value(as[i], us[i]);
}

/* The gradients of n elements with respect to gate, up, d_add and d_raw (v[0..3]).
 * Branch-free bodies, so that both loops vectorize. */
static void npt_swiglu_grad_chunk(const float *restrict dy, const float *restrict gs, const float *restrict us,
                                  const float *restrict as, const float *restrict rs, float s, size_t n,
                                  float v[4][NPT_SWIGLU_CHUNK]) {
    if (rs) {
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float sr = sigmoidf(rs[i]), factor = 0.5f * sr + 0.5f;
            float m = gs[i] * factor + s * as[i], sm = sigmoidf(m);
            float dm = dy[i] * us[i] * sm * (1.0f + m * (1.0f - sm));
            v[0][i] = dm * factor;
            v[1][i] = dy[i] * m * sm;
            v[2][i] = dm * s;
            v[3][i] = dm * gs[i] * 0.5f * sr * (1.0f - sr);
        }
        return;
    }
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float m = gs[i] + s * as[i], sm = sigmoidf(m);
        float dm = dy[i] * us[i] * sm * (1.0f + m * (1.0f - sm));
        v[0][i] = dm;
        v[1][i] = dy[i] * m * sm;
        v[2][i] = dm * s;
    }
}

/* What backward writes: gate/up gradients (NULL if not needed; `add` says whether they
 * already hold a contribution), dz, and dB_add/dB_mul (this thread's partial sums). */
typedef struct {
    float *dgate, *dup, *dz, *db[2];
    int add;
} NptSwigluGrads;

/* Backward of one row tile. On entry tile[0..1] hold the tile's d_add and d_raw; they are
 * overwritten with the loss's gradients with respect to them, which then go through the
 * two low-rank products into dz and dB. */
static void npt_swiglu_tile_backward(const Node *n, int r0, int rows, float *tile[2], const NptSwigluGrads *out) {
    const Tensor *gate = n->in[0], *z = n->in[2], *b[2] = {n->in[3], n->in[4]};
    int f = tensor_cols(gate), r = tensor_cols(z);
    size_t off = (size_t)r0 * f, len = (size_t)rows * f;
    const float *dy = n->out->grad + off, *gs = gate->data + off, *us = n->in[1]->data + off;
    float *dst[4] = {out->dgate ? out->dgate + off : NULL, out->dup ? out->dup + off : NULL, tile[0], tile[1]};
    for (size_t c0 = 0; c0 < len; c0 += NPT_SWIGLU_CHUNK) {
        float v[4][NPT_SWIGLU_CHUNK];
        size_t cn = len - c0 < NPT_SWIGLU_CHUNK ? len - c0 : NPT_SWIGLU_CHUNK;
        npt_swiglu_grad_chunk(dy + c0, gs + c0, us + c0, tile[0] + c0, b[1] ? tile[1] + c0 : NULL, n->f[0], cn, v);
        for (int k = 0; k < (b[1] ? 4 : 3); k++) {
            if (!dst[k]) continue;
            float *restrict dk = dst[k] + c0;
            if (k >= 2 || !out->add) {
                memcpy(dk, v[k], cn * sizeof(float));
                continue;
            }
#pragma omp simd
            for (size_t i = 0; i < cn; i++) dk[i] += v[k][i];
        }
    }
    for (int t = 0; t < 2 && b[t]; t++) {
        if (out->dz) /* dz += dD B */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, r, f, 1.0f, tile[t], f, b[t]->data, r, 1.0f,
                        out->dz + (size_t)r0 * r, r);
        if (out->db[t]) /* dB += dD^T z */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, f, r, rows, 1.0f, tile[t], f, z->data + (size_t)r0 * r,
                        r, 1.0f, out->db[t], r);
    }
}

static void npt_swiglu_backward(Graph *g, Node *n) {
    Tensor *gate = n->in[0], *up = n->in[1], *z = n->in[2], *b[2] = {n->in[3], n->in[4]};
    int rows = tensor_rows(gate), f = tensor_cols(gate), r = tensor_cols(z);
    int tr = npt_swiglu_tile_rows(f), n_tiles = (rows + tr - 1) / tr;
    NptSwigluGrads grads = {0};
    /* gate/up gradients nobody has written yet are stored rather than accumulated: no
     * zeroing pass. If either already holds a contribution, both accumulate. */
    int fresh[2] = {1, 1};
    if (gate->requires_grad) grads.dgate = graph_grad_store(g, gate, &fresh[0]);
    if (up->requires_grad) grads.dup = graph_grad_store(g, up, &fresh[1]);
    grads.add = !fresh[0] || !fresh[1];
    if (grads.add && grads.dgate && fresh[0]) memset(grads.dgate, 0, gate->n * sizeof(float));
    if (grads.add && grads.dup && fresh[1]) memset(grads.dup, 0, up->n * sizeof(float));
    if (z->requires_grad) grads.dz = graph_grad(g, z);
    for (int t = 0; t < 2; t++)
        if (b[t] && b[t]->requires_grad) grads.db[t] = graph_grad(g, b[t]);
    /* per thread: two tiles, and past thread 0 its own dB partial sums (added in thread
     * order below, so a run is deterministic for a given thread count) */
    int threads = loop_threads(gate->n, n_tiles);
    size_t tile_floats = 2 * (size_t)tr * f, db_floats = 2 * (size_t)f * r;
    size_t bytes = (size_t)threads * tile_floats * sizeof(float) + (size_t)(threads - 1) * db_floats * sizeof(float);
    float *scratch = graph_scratch(g, bytes), *partials = scratch + (size_t)threads * tile_floats;
    memset(partials, 0, (size_t)(threads - 1) * db_floats * sizeof(float));
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float *tile[2] = {scratch + (size_t)t * tile_floats, scratch + (size_t)t * tile_floats + (size_t)tr * f};
        NptSwigluGrads mine = grads;
        for (int k = 0; t > 0 && k < 2; k++)
            if (mine.db[k]) mine.db[k] = partials + (size_t)(t - 1) * db_floats + (size_t)k * f * r;
        for (int i = t * n_tiles / nt; i < (t + 1) * n_tiles / nt; i++) {
            int r0, nr = lowrank_tiles(z, b, i, tr, tile, &r0);
            npt_swiglu_tile_backward(n, r0, nr, tile, &mine);
        }
    }
    for (int t = 1; t < threads; t++)
        for (int k = 0; k < 2; k++) {
            if (!grads.db[k]) continue;
            const float *p = partials + (size_t)(t - 1) * db_floats + (size_t)k * f * r;
            for (size_t i = 0; i < (size_t)f * r; i++) grads.db[k][i] += p[i];
        }
    graph_scratch_free(g, scratch, bytes);
}

Tensor *op_npt_swiglu(Graph *g, Tensor *gate, Tensor *up, Tensor *z, Tensor *b_add, Tensor *b_mul, float s) {
    same_shape(gate, up, "npt_swiglu");
    int rows = tensor_rows(gate), f = tensor_cols(gate), r = tensor_cols(z);
    Tensor *b[2] = {b_add, b_mul};
    if (tensor_rows(z) != rows) npt_die("npt_swiglu: z has %d rows, the gate %d", tensor_rows(z), rows);
    for (int k = 0; k < 2 && b[k]; k++)
        if (tensor_rows(b[k]) != f || tensor_cols(b[k]) != r)
            npt_die("npt_swiglu: %s is %d x %d, expected %d x %d", b[k]->name ? b[k]->name : "?", tensor_rows(b[k]),
                    tensor_cols(b[k]), f, r);
    Tensor *y = like(g, gate, "npt_swiglu");
    int tr = npt_swiglu_tile_rows(f), n_tiles = (rows + tr - 1) / tr;
    int threads = g->inner_observer ? 1 : loop_threads(gate->n, n_tiles); /* observers run on one thread */
    size_t tile_floats = 2 * (size_t)tr * f;
    float *scratch = arena_alloc(g->act, (size_t)threads * tile_floats * sizeof(float));
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float *tile[2] = {scratch + (size_t)t * tile_floats, scratch + (size_t)t * tile_floats + (size_t)tr * f};
        for (int i = t * n_tiles / nt; i < (t + 1) * n_tiles / nt; i++) {
            int r0, nr = lowrank_tiles(z, b, i, tr, tile, &r0);
            size_t off = (size_t)r0 * f;
            if (g->inner_observer)
                npt_swiglu_span_observed(g, gate->data + off, up->data + off, tile[0], b_mul ? tile[1] : NULL, s,
                                         (size_t)nr * f, y->data + off);
            else
                npt_swiglu_span(gate->data + off, up->data + off, tile[0], b_mul ? tile[1] : NULL, s, (size_t)nr * f,
                                y->data + off);
        }
    }
    arena_release(g->act, scratch, (size_t)threads * tile_floats * sizeof(float));
    Tensor *in[5] = {gate, up, z, b_add, b_mul};
    int n_in = b_mul ? 5 : 4;
    /* backward reads every input, never the output: act goes as soon as W_down has read it */
    if (graph_needs_grad(g, in, n_in)) graph_record_reads(g, "npt_swiglu", npt_swiglu_backward, y, in, n_in, 0x1Fu)->f[0] = s;
    observe(g, "npt_swiglu", y, in, n_in);
    return y;
}

/* The pre-SPEC factor d_mul = tanh(d_raw), which reaches zero (B_mul = 0 switches the
 * gate off): g' = g * tanh(d_raw) + s * d_add. Tests only (see ops.h). */
static void npt_modulate_tanh_backward(Graph *g, Node *n) {
    Tensor *gate = n->in[0], *d_add = n->in[1], *d_raw = n->in[2];
    float s = n->f[0];
    const float *dy = n->out->grad;
    float *dg = gate->requires_grad ? graph_grad(g, gate) : NULL;
    float *da = d_add->requires_grad ? graph_grad(g, d_add) : NULL;
    float *dr = d_raw->requires_grad ? graph_grad(g, d_raw) : NULL;
    for (size_t i = 0; i < gate->n; i++) {
        float t = tanhf(d_raw->data[i]);
        if (dg) dg[i] += dy[i] * t;
        if (da) da[i] += dy[i] * s;
        if (dr) dr[i] += dy[i] * gate->data[i] * (1.0f - t * t);
    }
}

Tensor *op_npt_modulate_tanh(Graph *g, Tensor *gate, Tensor *d_raw, Tensor *d_add, float s) {
    same_shape(gate, d_add, "npt_modulate_tanh");
    same_shape(gate, d_raw, "npt_modulate_tanh");
    Tensor *y = like(g, gate, "npt_modulate_tanh");
    for (size_t i = 0; i < gate->n; i++) y->data[i] = gate->data[i] * tanhf(d_raw->data[i]) + s * d_add->data[i];
    Tensor *in[3] = {gate, d_add, d_raw};
    if (graph_needs_grad(g, in, 3)) /* backward reads gate and d_raw */
        graph_record_reads(g, "npt_modulate_tanh", npt_modulate_tanh_backward, y, in, 3, 5u)->f[0] = s;
    observe(g, "npt_modulate_tanh", y, in, 3);
    return y;
}
