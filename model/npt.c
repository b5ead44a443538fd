/* model/npt.c — NPT adapters: creation, init, the layer forward on the tape and the
 * single-token path used by generation (see npt.h). */
#include "npt.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static int select_layers(const LlamaConfig *c, const NptConfig *cfg, int *chosen, NptErr *err) {
    int L = c->n_layers, n = 0;
    memset(chosen, 0, (size_t)L * sizeof(int));
    switch (cfg->layer_mode) {
    case NPT_LAYERS_ALL:
        for (int l = 0; l < L; l++) chosen[l] = 1;
        break;
    case NPT_LAYERS_UPPER_HALF:
        for (int l = L / 2; l < L; l++) chosen[l] = 1;
        break;
    case NPT_LAYERS_LOWER_HALF:
        for (int l = 0; l < L / 2; l++) chosen[l] = 1;
        break;
    case NPT_LAYERS_LIST:
        for (int i = 0; i < cfg->n_layer_list; i++) {
            int l = cfg->layer_list[i];
            if (l < 0 || l >= L) return npt_fail(err, "npt.layers: layer %d does not exist; the model has layers 0..%d", l, L - 1);
            chosen[l] = 1;
        }
        break;
    }
    for (int l = 0; l < L; l++) n += chosen[l];
    if (n == 0) return npt_fail(err, "npt.layers selects no layer of a %d-layer model", L);
    return n;
}

int npt_create(NptModel *n, const LlamaModel *base, const NptConfig *cfg, NptErr *err) {
    const LlamaConfig *c = &base->cfg;
    memset(n, 0, sizeof *n);
    if (cfg->rank < 1 || cfg->rank > c->dim)
        return npt_fail(err, "npt.rank %d is impossible for a model of dim %d (1..%d)", cfg->rank, c->dim, c->dim);
    int *chosen = npt_xmalloc((size_t)c->n_layers * sizeof(int), "layer selection");
    int count = select_layers(c, cfg, chosen, err);
    if (count < 0) {
        free(chosen);
        return -1;
    }
    n->base = base;
    n->rank = cfg->rank;
    n->safe_mode = cfg->safe_mode;
    n->scale = cfg->modulation_scale;
    n->n_adapters = count;
    n->adapters = npt_xcalloc((size_t)count, sizeof(NptAdapter), "adapters");
    n->adapter_of_layer = chosen; /* reused: rewritten below as layer -> adapter index */
    size_t per = (size_t)cfg->rank * c->dim + (size_t)c->hidden_dim * cfg->rank * (cfg->safe_mode ? 1 : 2);
    n->n_params = per * count;
    n->params = npt_aligned_alloc(n->n_params * sizeof(float), "adapter parameters", err);
    n->grads = npt_aligned_alloc(n->n_params * sizeof(float), "adapter gradients", err);
    if (!n->params || !n->grads) {
        npt_free(n);
        return -1;
    }
    memset(n->params, 0, n->n_params * sizeof(float));
    memset(n->grads, 0, n->n_params * sizeof(float));
    float *p = n->params, *gp = n->grads;
    int k = 0;
    n->first_layer = -1;
    for (int l = 0; l < c->n_layers; l++) {
        if (!chosen[l]) {
            chosen[l] = -1;
            continue;
        }
        if (n->first_layer < 0) n->first_layer = l;
        NptAdapter *ad = &n->adapters[k];
        ad->layer = l;
        Tensor *views[3] = {&ad->A, &ad->B_add, &ad->B_mul};
        int rows[3] = {cfg->rank, c->hidden_dim, c->hidden_dim}, cols[3] = {c->dim, cfg->rank, cfg->rank};
        const char *names[3] = {"A", "B_add", "B_mul"};
        for (int t = 0; t < (cfg->safe_mode ? 2 : 3); t++) {
            *views[t] = tensor_view2(p, names[t], rows[t], cols[t]);
            views[t]->grad = gp;
            views[t]->requires_grad = views[t]->is_param = 1;
            p += views[t]->n;
            gp += views[t]->n;
        }
        chosen[l] = k++;
    }
    return 0;
}

void npt_free(NptModel *n) {
    free(n->adapters);
    free(n->adapter_of_layer);
    free(n->params);
    free(n->grads);
    memset(n, 0, sizeof *n);
}

void npt_init_weights(NptModel *n, const NptConfig *cfg, uint64_t seed) {
    uint64_t state = seed;
    for (int k = 0; k < n->n_adapters; k++) {
        NptAdapter *ad = &n->adapters[k];
        npt_fill_normal(ad->A.data, ad->A.n, cfg->init_a_std, &state);
        npt_fill_normal(ad->B_add.data, ad->B_add.n, cfg->init_b_add_std, &state);
        if (!n->safe_mode) npt_fill_normal(ad->B_mul.data, ad->B_mul.n, cfg->init_b_mul_std, &state);
    }
}

void npt_zero_grads(NptModel *n) { memset(n->grads, 0, n->n_params * sizeof(float)); }

/* z = A a with a = Wo c, the attention block's output (attn when the caller has it).
 * In an NPT layer a feeds nothing but A, so z is computed without a:
 *  - A folds into Wo: F = A Wo (r x qd, once per step), so the d x qd output projection
 *    (forward, and its input gradient in backward) is never run over the tokens;
 *  - when the heads are wider than r, F folds further into the values: head h's share
 *    of z is P_h (x Wv_h^T) F_h^T = P_h (x (F_h Wv_h)^T), so the values are projected to
 *    r columns per head instead of head_dim, P V runs on r columns, and z is the sum
 *    over heads (op_head_products, op_attention_values, op_sum_blocks).
 * Same value up to rounding. An observed graph (debug, eval) keeps the literal order,
 * where every op's rows are token positions and a fp16 emulation rounds a as a real run
 * would. */
static Tensor *adapter_input(Graph *g, const LlamaModel *m, int layer, Tensor *A, Tensor *h, Tensor *attn, int B, int T) {
    const LlamaConfig *c = &m->cfg;
    int r = tensor_rows(A);
    if (attn) return op_linear(g, attn, A);
    if (g->observer) return op_linear(g, llama_attention_block(g, m, layer, h, B, T), A);
    Tensor *a_wo = op_matmul(g, A, &m->layers[layer].wo, 0, 0);
    if (c->n_heads * r >= c->n_kv_heads * c->head_dim) /* folding into Wv would widen the values */
        return op_linear(g, llama_attention_heads(g, m, layer, h, B, T), a_wo);
    Tensor *wv = op_head_products(g, a_wo, &m->layers[layer].wv, c->n_heads, c->n_kv_heads, c->head_dim);
    Tensor *heads = llama_attention_heads_values(g, m, layer, h, B, T, wv, c->n_heads, r);
    Tensor *z = op_sum_blocks(g, heads, c->n_heads);
    graph_release(g, heads);
    return z;
}

Tensor *npt_layer_forward(Graph *g, const NptModel *n, int layer, Tensor *h, Tensor *attn, int B, int T, Tensor **reg) {
    const LlamaModel *m = n->base;
    LlamaLayer *L = &m->layers[layer];
    NptAdapter *ad = &n->adapters[n->adapter_of_layer[layer]];
    g->layer = layer;
    Tensor *z = adapter_input(g, m, layer, &ad->A, h, attn, B, T);
    Tensor *b_mul = n->safe_mode ? NULL : &ad->B_mul;
    Tensor *x = op_rmsnorm(g, h, &L->ffn_norm, m->cfg.norm_eps); /* on h, not h + a */
    Tensor *g_lin = op_linear(g, x, &L->w_gate), *up = op_linear(g, x, &L->w_up);
    Tensor *act;
    if (n->test_tanh_mul && b_mul) { /* the legacy tanh factor: d_add and d_raw stored */
        Tensor *d_add = op_linear(g, z, &ad->B_add), *d_raw = op_linear(g, z, b_mul);
        act = op_swiglu(g, op_npt_modulate_tanh(g, g_lin, d_raw, d_add, n->scale), up);
    } else {
        act = op_npt_swiglu(g, g_lin, up, z, &ad->B_add, b_mul, n->scale);
    }
    graph_release(g, x); /* read again only by trained projections; eval's observer reads it up to here */
    Tensor *down = op_linear(g, act, &L->w_down);
    graph_release(g, act);
    Tensor *out = op_add_into(g, h, down);
    if (reg) {
        Tensor *r = op_lowrank_sqnorm(g, z, &ad->B_add);
        if (b_mul) r = op_scale(g, op_add(g, r, op_lowrank_sqnorm(g, z, b_mul)), 0.5f);
        *reg = r;
    }
    g->layer = -1;
    return out;
}

Tensor *npt_student_layer(Graph *g, const NptModel *n, int layer, Tensor *h, int B, int T, Tensor **reg) {
    if (n->adapter_of_layer[layer] >= 0) return npt_layer_forward(g, n, layer, h, NULL, B, T, reg);
    if (reg) *reg = NULL;
    return llama_layer(g, n->base, layer, h, B, T);
}

size_t npt_infer_scratch(const NptModel *n) { return (size_t)n->rank + 4 * (size_t)n->base->cfg.hidden_dim; }

void npt_infer_mlp(const NptModel *n, int layer, const float *a, const float *mvec, float *out, float *scratch) {
    const LlamaConfig *c = &n->base->cfg;
    const LlamaLayer *L = &n->base->layers[layer];
    const NptAdapter *ad = &n->adapters[n->adapter_of_layer[layer]];
    int f = c->hidden_dim, r = n->rank;
    float *z = scratch, *d_add = z + r, *d_raw = d_add + f, *gate = d_raw + f, *up = gate + f;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, r, c->dim, 1.0f, ad->A.data, c->dim, a, 1, 0.0f, z, 1);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, f, r, 1.0f, ad->B_add.data, r, z, 1, 0.0f, d_add, 1);
    if (!n->safe_mode) cblas_sgemv(CblasRowMajor, CblasNoTrans, f, r, 1.0f, ad->B_mul.data, r, z, 1, 0.0f, d_raw, 1);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, f, c->dim, 1.0f, L->w_gate.data, c->dim, mvec, 1, 0.0f, gate, 1);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, f, c->dim, 1.0f, L->w_up.data, c->dim, mvec, 1, 0.0f, up, 1);
    for (int j = 0; j < f; j++) {
        float factor = n->safe_mode ? 1.0f : 0.5f / (1.0f + expf(-d_raw[j])) + 0.5f;
        float gj = gate[j] * factor + n->scale * d_add[j];
        gate[j] = gj / (1.0f + expf(-gj)) * up[j];
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, c->dim, f, 1.0f, L->w_down.data, f, gate, 1, 0.0f, out, 1);
}
