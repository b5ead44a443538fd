/* tests/test_ops_grad.c — finite-difference gradient checks for every op of the
 * autograd core: both RoPE conventions, grouped-query attention, all matmul
 * transpose cases. The loss is L = sum(out * R) for a fixed random R, accumulated in
 * double; analytic gradients from the tape are compared with central differences. */
#include <math.h>
#include <string.h>

#include "model/ops.h"
#include "test.h"

#define MAX_IN 5

typedef struct {
    int kind; /* which op to build */
    int i[6];
    float f[2];
    const int *ids;
} Case;

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* xorshift, uniform in (-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static Arena act, grads;
static Graph graph;

enum { MATMUL, ADD, MUL, SCALE, SILU, SIGMOID, SWIGLU, RMSNORM, ROPE, ATTN, EMBED, CE, MSE, NMSE, LOWRANK, NPT_SWIGLU_FULL, NPT_SWIGLU_SAFE, NPT_SWIGLU_FRESH, NPT_SWIGLU_MIXED, MOD_TANH, ADD_INTO, ROPE_INPLACE, ATTN_VALUES, HEAD_PRODUCTS, SUM_BLOCKS };

static Tensor *build(Graph *g, const Case *c, Tensor **in) {
    switch (c->kind) {
    case MATMUL: return op_matmul(g, in[0], in[1], c->i[0], c->i[1]);
    case ADD: return op_add(g, in[0], in[1]);
    /* the in-place variants overwrite their consumed input, so it is a fresh op output */
    case ADD_INTO: return op_add_into(g, in[0], op_scale(g, in[1], 1.0f));
    case ROPE_INPLACE:
        return op_rope_inplace(g, op_scale(g, in[0], 1.0f), c->i[0], c->i[1], c->i[2], c->i[3], 10000.0f,
                               (RopeStyle)c->i[4], c->i[5]);
    case MUL: return op_mul(g, in[0], in[1]);
    case SCALE: return op_scale(g, in[0], c->f[0]);
    case SILU: return op_silu(g, in[0]);
    case SIGMOID: return op_sigmoid(g, in[0]);
    case SWIGLU: return op_swiglu(g, in[0], in[1]);
    case RMSNORM: return op_rmsnorm(g, in[0], in[1], 1e-5f);
    case ROPE: return op_rope(g, in[0], c->i[0], c->i[1], c->i[2], c->i[3], 10000.0f, (RopeStyle)c->i[4], c->i[5]);
    case ATTN: return op_attention(g, in[0], in[1], in[2], c->i[0], c->i[1], c->i[2], c->i[3], c->i[4]);
    case ATTN_VALUES: /* i: B, T, heads, kv heads, head dim, value dim; value heads = heads */
        return op_attention_values(g, in[0], in[1], in[2], c->i[0], c->i[1], c->i[2], c->i[3], c->i[4], c->i[2], c->i[5]);
    case HEAD_PRODUCTS: return op_head_products(g, in[0], in[1], c->i[0], c->i[1], c->i[2]);
    case SUM_BLOCKS: return op_sum_blocks(g, in[0], c->i[0]);
    case EMBED: return op_embedding(g, in[0], c->ids, c->i[0]);
    case CE: return op_cross_entropy(g, in[0], c->ids);
    case MSE: return op_mse(g, in[0], in[1]);
    case NMSE: return op_nmse(g, in[0], in[1]);
    case LOWRANK: return op_lowrank_sqnorm(g, in[0], in[1]);
    /* inputs gate, up, z, B_add (, B_mul) */
    case NPT_SWIGLU_FULL: return op_npt_swiglu(g, in[0], in[1], in[2], in[3], in[4], c->f[0]);
    case NPT_SWIGLU_SAFE: return op_npt_swiglu(g, in[0], in[1], in[2], in[3], NULL, c->f[0]);
    /* gate, up and z as op outputs: their gradients are stored, not accumulated
     * (graph_grad_store); MIXED: the gate also feeds a later add, so its gradient already
     * holds a contribution */
    case NPT_SWIGLU_FRESH:
    case NPT_SWIGLU_MIXED: {
        Tensor *t[3];
        for (int k = 0; k < 3; k++) t[k] = op_scale(g, in[k], 1.0f);
        Tensor *y = op_npt_swiglu(g, t[0], t[1], t[2], in[3], in[4], c->f[0]);
        return c->kind == NPT_SWIGLU_MIXED ? op_add(g, y, t[0]) : y;
    }
    case MOD_TANH: return op_npt_modulate_tanh(g, in[0], in[2], in[1], c->f[0]);
    }
    return NULL;
}

/* (z B^T)[row, col] in double: z [rows, rank], B [cols, rank] */
static double zbt(const float *z, const float *b, int row, int col, int rank) {
    double acc = 0.0;
    for (int k = 0; k < rank; k++) acc += (double)z[row * rank + k] * b[col * rank + k];
    return acc;
}

static double loss_of(const Case *c, Tensor **in, const float *R) {
    graph_reset(&graph);
    graph.recording = 0;
    Tensor *out = build(&graph, c, in);
    double L = 0.0;
    for (size_t i = 0; i < out->n; i++) L += (double)out->data[i] * R[i];
    return L;
}

/* A frozen input's gradient buffer is filled with this before backward; it must come
 * back untouched (an op that ignored requires_grad would add into it). */
#define FROZEN_SENTINEL 12345.0f

/* shapes[k] = {rows, cols}. Input k is a trainable parameter with its own grad when bit
 * k of `trainable` is set; otherwise a frozen one (requires_grad 0, like a base weight)
 * whose grad buffer holds FROZEN_SENTINEL, checked unchanged after backward. */
static void check_op_masked(const char *what, const Case *c, int n_in, const int shapes[][2], float input_scale,
                            unsigned trainable) {
    Tensor in_t[MAX_IN], *in[MAX_IN] = {0};
    for (int k = 0; k < n_in; k++) {
        size_t n = (size_t)shapes[k][0] * shapes[k][1];
        float *d = npt_xmalloc(n * sizeof(float), "input");
        for (size_t i = 0; i < n; i++) d[i] = input_scale * frand();
        in_t[k] = tensor_view2(d, "input", shapes[k][0], shapes[k][1]);
        in_t[k].grad = npt_xcalloc(n, sizeof(float), "grad");
        in_t[k].is_param = 1;
        in_t[k].requires_grad = (int)(trainable >> k & 1u);
        if (!in_t[k].requires_grad)
            for (size_t i = 0; i < n; i++) in_t[k].grad[i] = FROZEN_SENTINEL;
        in[k] = &in_t[k];
    }
    /* analytic */
    graph_reset(&graph);
    graph.recording = 1;
    Tensor *out = build(&graph, c, in);
    float *R = npt_xmalloc(out->n * sizeof(float), "R");
    for (size_t i = 0; i < out->n; i++) R[i] = frand();
    graph_backward_from(&graph, out, R);
    /* numeric, central differences, compared per input by relative error norm */
    for (int k = 0; k < n_in; k++) {
        if (!in[k]->requires_grad) {
            size_t touched = 0;
            for (size_t i = 0; i < in[k]->n; i++) touched += in[k]->grad[i] != FROZEN_SENTINEL;
            check(touched == 0, "%s: frozen input %d: nothing written to its gradient (%zu of %zu elements changed)", what,
                  k, touched, in[k]->n);
            continue;
        }
        double num2 = 0.0, diff2 = 0.0, maxdiff = 0.0;
        for (size_t i = 0; i < in[k]->n; i++) {
            float saved = in[k]->data[i];
            float h = 1e-2f * fmaxf(1.0f, fabsf(saved));
            in[k]->data[i] = saved + h;
            double lp = loss_of(c, in, R);
            in[k]->data[i] = saved - h;
            double lm = loss_of(c, in, R);
            in[k]->data[i] = saved;
            double num = (lp - lm) / (2.0 * h);
            double d = num - in[k]->grad[i];
            num2 += num * num;
            diff2 += d * d;
            if (fabs(d) > maxdiff) maxdiff = fabs(d);
        }
        double rel = sqrt(diff2) / fmax(sqrt(num2), 1e-8);
        check(rel < 2e-3, "%s: d/d(input %d) finite-difference rel err %.2e (max abs %.2e)", what, k, rel, maxdiff);
    }
    for (int k = 0; k < n_in; k++) {
        free(in[k]->data);
        free(in[k]->grad);
    }
    free(R);
}

/* every input trainable */
static void check_op(const char *what, const Case *c, int n_in, const int shapes[][2], float input_scale) {
    check_op_masked(what, c, n_in, shapes, input_scale, ~0u);
}

static double row_norm(const float *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* NMSE on token rows whose norm is under the floor (SPEC section 3: rows are divided by
 * max(|row|, 1e-6)). Under the floor u = x / 1e-6 is linear in x, so the gradient there is
 * 2 (u - v) / (rows cols) / floor, not the projection (I - u u^T) / |x| of a normal row.
 * Rows of x and y (6 columns): 0 both normal, 1 x under, 2 y under, 3 both under, 4 x
 * exactly zero, y normal.
 * Steps: the entries of an under-floor row are at most 1e-7 in size, so its norm is at
 * most sqrt(6) 1e-7 = 2.45e-7, and they take h = 1e-7: x +- h has norm at most 3.45e-7,
 * still under 1e-6, so both evaluations of a central difference see the same (linear)
 * branch (the test measures the stepped norms too). check_op's h = 1e-2 would carry such
 * a row far above the floor, onto the other branch. Normal rows (norm ~1) take check_op's
 * h = 1e-2 max(1, |x|), which moves a norm by at most 1e-2: they stay far above it.
 * Under the floor the loss is quadratic in each entry, so central differences are exact
 * but for rounding (the loss comes back as a float scalar: ~3e-8 |L| against a change of
 * 2h |grad| ~ 5e-3, some 1e-6 relative): bound 1e-4 there, check_op's 2e-3 on the normal
 * rows. The step divided by is the difference of the two float inputs actually evaluated.
 * Errors are measured per row group: the under-floor gradients are ~1e6 times the normal
 * ones and would hide them. */
static void check_nmse_floor(void) {
    enum { ROWS = 5, COLS = 6 };
    static const int x_under[ROWS] = {0, 1, 0, 1, 1}, y_under[ROWS] = {0, 0, 1, 1, 0};
    float xd[ROWS * COLS], yd[ROWS * COLS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++) {
            xd[r * COLS + j] = r == 4 ? 0.0f : x_under[r] ? 1e-7f * frand() : frand();
            yd[r * COLS + j] = y_under[r] ? 1e-7f * frand() : frand();
        }
    float gx[ROWS * COLS] = {0}, gy[ROWS * COLS] = {0};
    Tensor tx = tensor_view2(xd, "x", ROWS, COLS), ty = tensor_view2(yd, "y", ROWS, COLS);
    tx.grad = gx, ty.grad = gy;
    tx.requires_grad = tx.is_param = ty.requires_grad = ty.is_param = 1;
    Tensor *in[2] = {&tx, &ty};
    const Case c = {.kind = NMSE};
    const float R[1] = {0.75f};
    graph_reset(&graph);
    graph.recording = 1;
    Tensor *out = build(&graph, &c, in);
    graph_backward_from(&graph, out, R);
    const int *under[2] = {x_under, y_under};
    for (int k = 0; k < 2; k++) {
        double num2[2] = {0}, diff2[2] = {0}, maxg[2] = {0}; /* [0] normal rows, [1] rows under the floor */
        double max_norm = 0.0; /* largest norm an under-floor row reached while stepped */
        for (int r = 0; r < ROWS; r++) {
            int u = under[k][r];
            for (int j = 0; j < COLS; j++) {
                float *v = &in[k]->data[r * COLS + j], saved = *v;
                float h = u ? 1e-7f : 1e-2f * fmaxf(1.0f, fabsf(saved));
                float up = saved + h, dn = saved - h;
                double lp, lm;
                *v = up;
                lp = loss_of(&c, in, R);
                if (u) max_norm = fmax(max_norm, row_norm(in[k]->data + r * COLS, COLS));
                *v = dn;
                lm = loss_of(&c, in, R);
                if (u) max_norm = fmax(max_norm, row_norm(in[k]->data + r * COLS, COLS));
                *v = saved;
                double num = (lp - lm) / ((double)up - dn), d = num - in[k]->grad[r * COLS + j];
                num2[u] += num * num;
                diff2[u] += d * d;
                maxg[u] = fmax(maxg[u], fabs(in[k]->grad[r * COLS + j]));
            }
        }
        double rel_under = sqrt(diff2[1]) / fmax(sqrt(num2[1]), 1e-8), rel_normal = sqrt(diff2[0]) / fmax(sqrt(num2[0]), 1e-8);
        check(max_norm < NPT_NMSE_FLOOR && rel_under < 1e-4,
              "nmse, %s rows with norm under the floor 1e-6 (stepped norms up to %.3g): d/d%s finite-difference rel err "
              "%.2e (bound 1e-4), gradients up to %.3g", k ? "y" : "x", max_norm, k ? "y" : "x", rel_under, maxg[1]);
        check(rel_normal < 2e-3, "nmse, normal %s rows beside rows under the floor: d/d%s finite-difference rel err %.2e, "
              "gradients up to %.3g", k ? "y" : "x", k ? "y" : "x", rel_normal, maxg[0]);
    }
}

int main(void) {
    NptErr err;
    if (arena_init(&act, 64 << 20, "act", &err) || arena_init(&grads, 64 << 20, "grads", &err) ||
        graph_init(&graph, &act, &grads, 1024, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *names[4] = {"NN", "NT", "TN", "TT"};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            Case c = {.kind = MATMUL, .i = {ta, tb}};
            int M = 3, K = 4, N = 5;
            int shapes[2][2] = {{ta ? K : M, ta ? M : K}, {tb ? N : K, tb ? K : N}};
            char what[64];
            snprintf(what, sizeof what, "matmul %s", names[ta * 2 + tb]);
            check_op(what, &c, 2, shapes, 1.0f);
        }
    const int s2[4][2] = {{4, 6}, {4, 6}, {4, 6}, {4, 6}};
    check_op("add", &(Case){.kind = ADD}, 2, s2, 1.0f);
    check_op("add_into (over b's storage)", &(Case){.kind = ADD_INTO}, 2, s2, 1.0f);
    check_op("mul", &(Case){.kind = MUL}, 2, s2, 1.0f);
    check_op("scale", &(Case){.kind = SCALE, .f = {-0.7f}}, 1, s2, 1.0f);
    check_op("silu", &(Case){.kind = SILU}, 1, s2, 3.0f);
    check_op("sigmoid", &(Case){.kind = SIGMOID}, 1, s2, 3.0f);
    check_op("swiglu", &(Case){.kind = SWIGLU}, 2, s2, 3.0f);
    const int srms[2][2] = {{4, 6}, {1, 6}};
    check_op("rmsnorm (x and weight)", &(Case){.kind = RMSNORM}, 2, srms, 1.0f);
    for (int style = 0; style < 2; style++) {
        /* B=2, T=3, 2 heads of dim 4, positions starting at 5 */
        const int srope[1][2] = {{6, 8}};
        check_op(style ? "rope rotate-half" : "rope interleaved",
                 &(Case){.kind = ROPE, .i = {2, 3, 2, 4, style, 5}}, 1, srope, 1.0f);
        check_op(style ? "rope_inplace rotate-half" : "rope_inplace interleaved",
                 &(Case){.kind = ROPE_INPLACE, .i = {2, 3, 2, 4, style, 5}}, 1, srope, 1.0f);
    }
    {   /* B=2, T=5, 4 query heads, 2 kv heads (GQA), hd=4 */
        const int sattn[3][2] = {{10, 16}, {10, 8}, {10, 8}};
        check_op("attention GQA 4q/2kv", &(Case){.kind = ATTN, .i = {2, 5, 4, 2, 4}}, 3, sattn, 1.5f);
        const int smha[3][2] = {{7, 12}, {7, 12}, {7, 12}};
        check_op("attention MHA 3 heads", &(Case){.kind = ATTN, .i = {1, 7, 3, 3, 4}}, 3, smha, 1.5f);
        /* T = 70 spans two row blocks of the causal sgemm tiling (ATTN_BLOCK 64) */
        const int slong[3][2] = {{70, 8}, {70, 4}, {70, 4}};
        check_op("attention GQA 2q/1kv, T=70 (two row blocks)", &(Case){.kind = ATTN, .i = {1, 70, 2, 1, 4}}, 3, slong, 1.5f);
        /* values of width 3, one value head per query head, over 4 query / 2 kv heads */
        const int svals[3][2] = {{10, 16}, {10, 8}, {10, 12}};
        check_op("attention_values GQA 4q/2kv, a value head of width 3 per query head",
                 &(Case){.kind = ATTN_VALUES, .i = {2, 5, 4, 2, 4, 3}}, 3, svals, 1.5f);
        const int svlong[3][2] = {{70, 8}, {70, 4}, {70, 4}};
        check_op("attention_values 2q/1kv, width 2, T=70 (two row blocks)",
                 &(Case){.kind = ATTN_VALUES, .i = {1, 70, 2, 1, 4, 2}}, 3, svlong, 1.5f);
    }
    {   /* f [r=2, 4 heads x 3], w [2 kv heads x 3, d=5] -> [4 x 2, 5] */
        const int shp[2][2] = {{2, 12}, {6, 5}};
        check_op("head_products GQA 4q/2kv (f and w)", &(Case){.kind = HEAD_PRODUCTS, .i = {4, 2, 3}}, 2, shp, 1.0f);
        const int ssum[1][2] = {{4, 9}};
        check_op("sum_blocks, 3 blocks of 3 columns", &(Case){.kind = SUM_BLOCKS, .i = {3}}, 1, ssum, 1.0f);
    }
    {
        static const int ids[5] = {3, 1, 3, 0, 6};
        const int semb[1][2] = {{7, 4}};
        check_op("embedding (repeated ids)", &(Case){.kind = EMBED, .i = {5}, .ids = ids}, 1, semb, 1.0f);
        static const int tg[5] = {2, -1, 6, 0, 6};
        const int sce[1][2] = {{5, 7}};
        check_op("cross_entropy (one row ignored)", &(Case){.kind = CE, .ids = tg}, 1, sce, 2.0f);
    }
    check_op("mse", &(Case){.kind = MSE}, 2, s2, 1.0f);
    check_op("nmse", &(Case){.kind = NMSE}, 2, s2, 1.0f);
    const int slr[2][2] = {{5, 3}, {7, 3}}; /* z [rows, r], B [f, r] */
    check_op("lowrank_sqnorm (z and B)", &(Case){.kind = LOWRANK}, 2, slr, 1.0f);
    const int snpt[5][2] = {{4, 6}, {4, 6}, {4, 3}, {6, 3}, {6, 3}}; /* gate, up, z [rows, r], B_add, B_mul [f, r] */
    check_op("npt_swiglu full (gate, up, z, B_add, B_mul)", &(Case){.kind = NPT_SWIGLU_FULL, .f = {0.1f}}, 5, snpt, 1.5f);
    check_op("npt_swiglu safe (gate, up, z, B_add)", &(Case){.kind = NPT_SWIGLU_SAFE, .f = {0.1f}}, 4, snpt, 1.5f);
    check_op("npt_swiglu, gradients stored into fresh buffers", &(Case){.kind = NPT_SWIGLU_FRESH, .f = {0.1f}}, 5, snpt, 1.5f);
    check_op("npt_swiglu, gate gradient already started", &(Case){.kind = NPT_SWIGLU_MIXED, .f = {0.1f}}, 5, snpt, 1.5f);
    check_op("npt_modulate_tanh (test-only legacy form)", &(Case){.kind = MOD_TANH, .f = {0.1f}}, 3, s2, 2.0f);

    /* Forward values that finite differences cannot see. */
    {
        graph_reset(&graph);
        float big[4] = {1000.0f, 0.0f, -1000.0f, 2.0f};
        Tensor logits = tensor_view2(big, "logits", 1, 4);
        int t = 0;
        Tensor *l = op_cross_entropy(&graph, &logits, &t);
        check(isfinite(l->data[0]) && fabsf(l->data[0]) < 1e-6f, "cross_entropy stable on logit 1000 (got %g)", l->data[0]);
        float zero[3] = {0, 0, 0}, one[3] = {1, 0, 0};
        Tensor z = tensor_view2(zero, "z", 1, 3), o = tensor_view2(one, "o", 1, 3);
        Tensor *nm = op_nmse(&graph, &z, &o);
        check(fabsf(nm->data[0] - 1.0f / 3.0f) < 1e-6f, "nmse of a zero row against a unit row is 1/3 (got %g)", nm->data[0]);
        float huge[2] = {1e30f, 1e30f}, hugey[2] = {-1e30f, -1e30f};
        Tensor hx = tensor_view2(huge, "hx", 1, 2), hy = tensor_view2(hugey, "hy", 1, 2);
        Tensor *nh = op_nmse(&graph, &hx, &hy);
        check(fabsf(nh->data[0] - 2.0f) < 1e-5f, "nmse with norms near float max stays finite (got %g, want 2)", nh->data[0]);
        /* SPEC section 2: d_mul = 0.5 * sigmoid(d_raw) + 0.5, never zero: with gate = up = 1
         * and d_add = 0 the output is silu(0.5) and silu(1.0) at saturated d_raw = z B_mul^T */
        float bm[2] = {-1e4f, 1e4f}, ones[2] = {1.0f, 1.0f}, ba[2] = {0, 0};
        Tensor tm = tensor_view2(bm, "B_mul", 2, 1), t1 = tensor_view2(ones, "gate", 1, 2), ta = tensor_view2(ba, "B_add", 2, 1);
        Tensor tz = tensor_view2(ones, "z", 1, 1);
        Tensor *m = op_npt_swiglu(&graph, &t1, &t1, &tz, &ta, &tm, 0.1f);
        float silu_half = 0.5f / (1.0f + expf(-0.5f)), silu_one = 1.0f / (1.0f + expf(-1.0f));
        check(fabsf(m->data[0] - silu_half) < 1e-6f && fabsf(m->data[1] - silu_one) < 1e-6f,
              "npt_swiglu: modulation factor saturates at 0.5 and 1.0, never 0 (got %g, %g; want %g, %g)", m->data[0],
              m->data[1], silu_half, silu_one);
    }
    {   /* the fused ops against the SPEC formulas written out here in double */
        enum { R = 9, C = 11, RK = 4 };
        static float gt[R * C], up[R * C], z[R * RK], ba[C * RK], bm[C * RK];
        for (int i = 0; i < R * C; i++) gt[i] = 3 * frand(), up[i] = frand();
        for (int i = 0; i < R * RK; i++) z[i] = frand();
        for (int i = 0; i < C * RK; i++) ba[i] = 1.5f * frand(), bm[i] = 2 * frand();
        Tensor tg = tensor_view2(gt, "gate", R, C), tu = tensor_view2(up, "up", R, C), tz = tensor_view2(z, "z", R, RK);
        Tensor ta = tensor_view2(ba, "B_add", C, RK), tm = tensor_view2(bm, "B_mul", C, RK);
        for (int safe = 0; safe < 2; safe++) {
            graph_reset(&graph);
            Tensor *y = op_npt_swiglu(&graph, &tg, &tu, &tz, &ta, safe ? NULL : &tm, 0.3f);
            double worst = 0.0;
            for (int r = 0; r < R; r++)
                for (int j = 0; j < C; j++) {
                    double d_add = zbt(z, ba, r, j, RK), d_raw = zbt(z, bm, r, j, RK);
                    double factor = safe ? 1.0 : 0.5 / (1.0 + exp(-d_raw)) + 0.5;
                    double mm = gt[r * C + j] * factor + 0.3 * d_add, want = mm / (1.0 + exp(-mm)) * up[r * C + j];
                    worst = fmax(worst, fabs(y->data[r * C + j] - want) / fmax(fabs(want), 1e-3));
                }
            check(worst < 1e-5, "npt_swiglu %s = silu(gate * d_mul + s d_add) * up: max rel err %.2e", safe ? "safe" : "full", worst);
        }
        double want = 0.0;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < C; j++) {
                double d = zbt(z, ba, r, j, RK);
                want += d * d / R;
            }
        graph_reset(&graph);
        Tensor *l = op_lowrank_sqnorm(&graph, &tz, &ta);
        check(fabs(l->data[0] - want) <= 1e-6 * want, "lowrank_sqnorm = mean row |z B^T|^2 (%.9g vs %.9g)", l->data[0], want);
    }
    {   /* npt_swiglu backward on 600 x 301 (three row tiles, the last one short, split over
         * the threads with per-thread dB sums; chunk tails; gate and up gradients stored
         * into fresh buffers) against the derivatives written out in double */
        enum { R = 600, C = 301, RK = 5 };
        size_t n = (size_t)R * C;
        float *buf = npt_xmalloc((3 * n + R * RK + 2 * C * RK) * sizeof(float), "npt_swiglu inputs");
        float *grad_buf = npt_xcalloc(R * RK + 2 * C * RK, sizeof(float), "npt_swiglu parameter gradients");
        for (size_t i = 0; i < 3 * n + R * RK + 2 * C * RK; i++) buf[i] = frand();
        Tensor t[5];
        const char *nm[5] = {"gate", "up", "z", "B_add", "B_mul"};
        const int shape[5][2] = {{R, C}, {R, C}, {R, RK}, {C, RK}, {C, RK}};
        float *p = buf, *gp = grad_buf;
        for (int k = 0; k < 5; k++) {
            t[k] = tensor_view2(p, nm[k], shape[k][0], shape[k][1]);
            t[k].requires_grad = 1; /* gate and up: leaves, so graph_grad_store's fresh path */
            if (k >= 2) t[k].grad = gp, t[k].is_param = 1, gp += t[k].n;
            p += t[k].n;
        }
        for (size_t i = 0; i < 2 * n; i++) buf[i] *= 3.0f;
        const float *seed = buf + 2 * n, sc = 0.3f;
        graph_reset(&graph);
        graph.recording = 1;
        Tensor *y = op_npt_swiglu(&graph, &t[0], &t[1], &t[2], &t[3], &t[4], sc);
        graph_backward_from(&graph, y, seed);
        double *want[5], d2[5] = {0}, w2[5] = {0};
        for (int k = 0; k < 5; k++) want[k] = npt_xcalloc(t[k].n, sizeof(double), "wanted gradients");
        const float *z = t[2].data, *ba = t[3].data, *bm = t[4].data;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < C; j++) {
                size_t i = (size_t)r * C + j;
                double a = zbt(z, ba, r, j, RK), raw = zbt(z, bm, r, j, RK);
                double g = t[0].data[i], u = t[1].data[i];
                double sr = 1.0 / (1.0 + exp(-raw)), f = 0.5 * sr + 0.5, mm = g * f + sc * a, sm = 1.0 / (1.0 + exp(-mm));
                double dm = seed[i] * u * sm * (1.0 + mm * (1.0 - sm)), da = dm * sc, dr = dm * g * 0.5 * sr * (1.0 - sr);
                want[0][i] = dm * f, want[1][i] = seed[i] * mm * sm;
                for (int k = 0; k < RK; k++) {
                    want[2][r * RK + k] += da * ba[j * RK + k] + dr * bm[j * RK + k];
                    want[3][j * RK + k] += da * z[r * RK + k];
                    want[4][j * RK + k] += dr * z[r * RK + k];
                }
            }
        double worst = 0.0;
        for (int k = 0; k < 5; k++) {
            for (size_t i = 0; i < t[k].n; i++) d2[k] += pow(t[k].grad[i] - want[k][i], 2), w2[k] += want[k][i] * want[k][i];
            worst = fmax(worst, sqrt(d2[k] / w2[k]));
            free(want[k]);
        }
        check(worst < 1e-5, "npt_swiglu backward, 600 x 301 rank 5 (row tiles over threads, chunk tails) = written-out "
              "derivatives of gate, up, z, B_add, B_mul: rel err %.2e", worst);
        free(buf);
        free(grad_buf);
    }

    /* Rows of NMSE under the norm floor, and ops with only some inputs trainable (the
     * `requires_grad ? grad : NULL` branches of their backward): the trainable inputs'
     * gradients against finite differences, the frozen ones' buffers untouched. */
    check_nmse_floor();
    check_op_masked("swiglu, gate trainable, up frozen", &(Case){.kind = SWIGLU}, 2, s2, 3.0f, 1u);
    check_op_masked("swiglu, up trainable, gate frozen", &(Case){.kind = SWIGLU}, 2, s2, 3.0f, 2u);
    check_op_masked("npt_swiglu full, gate frozen", &(Case){.kind = NPT_SWIGLU_FULL, .f = {0.1f}}, 5, snpt, 1.5f, 0x1Eu);
    check_op_masked("npt_swiglu full, up frozen", &(Case){.kind = NPT_SWIGLU_FULL, .f = {0.1f}}, 5, snpt, 1.5f, 0x1Du);
    check_op_masked("npt_swiglu full, gate and up frozen (z, B_add, B_mul trainable)",
                    &(Case){.kind = NPT_SWIGLU_FULL, .f = {0.1f}}, 5, snpt, 1.5f, 0x1Cu);
    check_op_masked("npt_swiglu safe, gate frozen", &(Case){.kind = NPT_SWIGLU_SAFE, .f = {0.1f}}, 4, snpt, 1.5f, 0xEu);
    check_op_masked("npt_swiglu safe, up frozen", &(Case){.kind = NPT_SWIGLU_SAFE, .f = {0.1f}}, 4, snpt, 1.5f, 0xDu);
    /* through op_scale: the frozen leaf makes a gate (up) that needs no gradient, the
     * other is stored fresh (FRESH) or added to a started one (MIXED: the gate) */
    check_op_masked("npt_swiglu, gate frozen, up gradient stored fresh", &(Case){.kind = NPT_SWIGLU_FRESH, .f = {0.1f}}, 5,
                    snpt, 1.5f, 0x1Eu);
    check_op_masked("npt_swiglu, up frozen, gate gradient already started", &(Case){.kind = NPT_SWIGLU_MIXED, .f = {0.1f}},
                    5, snpt, 1.5f, 0x1Du);
    graph_free(&graph);
    arena_free(&act);
    arena_free(&grads);
    return test_finish();
}
