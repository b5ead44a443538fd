/* model/llama.c — the Llama forward pass built from autograd ops (see llama.h). */
#include "llama.h"


#include "ops.h"

Tensor *llama_embed(Graph *g, const LlamaModel *m, const int *tokens, int n) {
    return op_embedding(g, (Tensor *)&m->tok_emb, tokens, n);
}

Tensor *llama_attention_heads_values(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T, Tensor *wv,
                                     int v_heads, int v_dim) {
    const LlamaConfig *c = &m->cfg;
    LlamaLayer *L = &m->layers[layer];
    Tensor *x = op_rmsnorm(g, h, &L->attn_norm, c->norm_eps);
    Tensor *q = op_linear(g, x, &L->wq);
    Tensor *k = op_linear(g, x, &L->wk);
    Tensor *v = op_linear(g, x, wv);
    graph_release(g, x); /* read again only if the projections are trained */
    q = op_rope_inplace(g, q, B, T, c->n_heads, c->head_dim, c->rope_theta, c->rope, 0);
    k = op_rope_inplace(g, k, B, T, c->n_kv_heads, c->head_dim, c->rope_theta, c->rope, 0);
    return op_attention_values(g, q, k, v, B, T, c->n_heads, c->n_kv_heads, c->head_dim, v_heads, v_dim);
}

Tensor *llama_attention_heads(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T) {
    const LlamaConfig *c = &m->cfg;
    return llama_attention_heads_values(g, m, layer, h, B, T, &m->layers[layer].wv, c->n_kv_heads, c->head_dim);
}

Tensor *llama_attention_block(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T) {
    return op_linear(g, llama_attention_heads(g, m, layer, h, B, T), &m->layers[layer].wo);
}

Tensor *llama_layer_rest(Graph *g, const LlamaModel *m, int layer, Tensor *h, Tensor *a) {
    LlamaLayer *L = &m->layers[layer];
    g->layer = layer;
    Tensor *h1 = op_add_into(g, h, a);
    Tensor *x = op_rmsnorm(g, h1, &L->ffn_norm, m->cfg.norm_eps);
    Tensor *act = op_swiglu(g, op_linear(g, x, &L->w_gate), op_linear(g, x, &L->w_up));
    graph_release(g, x);
    Tensor *down = op_linear(g, act, &L->w_down);
    graph_release(g, act);
    Tensor *out = op_add_into(g, h1, down);
    g->layer = -1;
    return out;
}

Tensor *llama_layer(Graph *g, const LlamaModel *m, int layer, Tensor *h, int B, int T) {
    g->layer = layer;
    return llama_layer_rest(g, m, layer, h, llama_attention_block(g, m, layer, h, B, T));
}

Tensor *llama_logits(Graph *g, const LlamaModel *m, Tensor *h) {
    Tensor *x = op_rmsnorm(g, h, (Tensor *)&m->final_norm, m->cfg.norm_eps);
    return op_linear(g, x, (Tensor *)&m->lm_head);
}

size_t llama_activation_bytes(const LlamaConfig *c, int B, int T, int with_logits) {
    size_t N = (size_t)B * T, d = c->dim, f = c->hidden_dim;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    /* per layer: norms, q/k/v before and after rope, attention out + its row log-sum-exps
     * and per-thread score blocks, wo, residual adds, gate/up/act/down, plus the NPT
     * extras (z; op_npt_swiglu's transient row tiles; d_add and d_raw, stored only by the
     * test-only tanh modulation path; slack) */
    size_t per_layer = N * (4 * d + 3 * qd + 4 * kvd + 6 * f + 64) + op_attention_extra_floats(B, T, c->n_heads) + 4 * N;
    size_t floats = per_layer * c->n_layers + N * (2 * d + 8);
    if (with_logits) floats += 2 * N * (size_t)c->vocab_size;
    return floats * sizeof(float) + (size_t)(c->n_layers + 4) * 64 * 1024 + (8u << 20);
}

