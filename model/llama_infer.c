/* model/llama_infer.c — single-token inference with a KV cache, for generation.
 * Plain loops in the style of llama2.c's run.c: one position at a time, so each step
 * costs O(pos) attention instead of recomputing the whole prefix. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "npt.h"

int llama_infer_init(LlamaInfer *s, const LlamaConfig *c, const NptModel *npt, int max_seq, NptErr *err) {
    memset(s, 0, sizeof *s);
    s->max_seq = max_seq;
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim, q_dim = (size_t)c->n_heads * c->head_dim;
    size_t cache = (size_t)c->n_layers * max_seq * kv_dim;
    size_t d = c->dim, f = c->hidden_dim;
    size_t extra = npt ? npt_infer_scratch(npt) : 0;
    size_t total = 2 * cache + 3 * d + 2 * q_dim + 2 * kv_dim + (size_t)c->n_heads * max_seq + 2 * f + c->vocab_size + extra;
    float *p = npt_try_malloc(total * sizeof(float), "KV cache and inference buffers", err);
    if (!p) return -1;
    s->key_cache = p, p += cache;
    s->value_cache = p, p += cache;
    s->x = p, p += d;
    s->xb = p, p += (q_dim > d ? q_dim : d);
    s->xb2 = p, p += d;
    s->q = p, p += q_dim;
    s->k = p, p += kv_dim;
    s->v = p, p += kv_dim;
    s->att = p, p += (size_t)c->n_heads * max_seq;
    s->hb = p, p += f;
    s->hb2 = p, p += f;
    s->logits = p, p += c->vocab_size;
    s->npt_scratch = npt ? p : NULL;
    return 0;
}

void llama_infer_free(LlamaInfer *s) {
    free(s->key_cache);
    memset(s, 0, sizeof *s);
}

static void rmsnorm_vec(float *o, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int j = 0; j < n; j++) ss += (double)x[j] * x[j];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int j = 0; j < n; j++) o[j] = x[j] * r * w[j];
}

/* y = W x for W [out, in] */
static void matvec(float *y, const Tensor *w, const float *x) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, w->shape[0], w->shape[1], 1.0f, w->data, w->shape[1], x, 1, 0.0f, y, 1);
}

static void rope_vec(float *x, int n_heads, int hd, int pos, float theta, RopeStyle style) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double ang = pos * pow((double)theta, -2.0 * i / hd);
        float c = (float)cos(ang), s = (float)sin(ang);
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + h * hd;
            int i0 = style == ROPE_INTERLEAVED ? 2 * i : i, i1 = style == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            float a = xh[i0], b = xh[i1];
            xh[i0] = a * c - b * s;
            xh[i1] = a * s + b * c;
        }
    }
}

float *llama_infer_step(LlamaInfer *s, const LlamaModel *m, const NptModel *npt, int token, int pos) {
    const LlamaConfig *c = &m->cfg;
    int d = c->dim, hd = c->head_dim, kv_dim = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    if (pos >= s->max_seq) npt_die("inference position %d beyond the KV cache (%d)", pos, s->max_seq);
    memcpy(s->x, m->tok_emb.data + (size_t)token * d, (size_t)d * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const LlamaLayer *L = &m->layers[l];
        float *kc = s->key_cache + ((size_t)l * s->max_seq) * kv_dim;
        float *vc = s->value_cache + ((size_t)l * s->max_seq) * kv_dim;
        rmsnorm_vec(s->xb, s->x, L->attn_norm.data, d, c->norm_eps);
        matvec(s->q, &L->wq, s->xb);
        matvec(kc + (size_t)pos * kv_dim, &L->wk, s->xb);
        matvec(vc + (size_t)pos * kv_dim, &L->wv, s->xb);
        rope_vec(s->q, c->n_heads, hd, pos, c->rope_theta, c->rope);
        rope_vec(kc + (size_t)pos * kv_dim, c->n_kv_heads, hd, pos, c->rope_theta, c->rope);
        float scale = 1.0f / sqrtf((float)hd);
        for (int h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + h * hd;
            float *att = s->att + (size_t)h * s->max_seq;
            int kh = h / group;
            float mx = -INFINITY;
            for (int t = 0; t <= pos; t++) {
                const float *kt = kc + (size_t)t * kv_dim + kh * hd;
                float dot = 0.0f;
                for (int i = 0; i < hd; i++) dot += qh[i] * kt[i];
                att[t] = dot * scale;
                mx = att[t] > mx ? att[t] : mx;
            }
            double sum = 0.0;
            for (int t = 0; t <= pos; t++) sum += (att[t] = expf(att[t] - mx));
            float *out = s->xb + h * hd;
            memset(out, 0, (size_t)hd * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                float a = (float)(att[t] / sum);
                const float *vt = vc + (size_t)t * kv_dim + kh * hd;
                for (int i = 0; i < hd; i++) out[i] += a * vt[i];
            }
        }
        matvec(s->xb2, &L->wo, s->xb);
        if (npt && npt->adapter_of_layer[l] >= 0) {
            /* NPT: attention drives the gate modulation; it never joins the residual */
            rmsnorm_vec(s->xb, s->x, L->ffn_norm.data, d, c->norm_eps);
            npt_infer_mlp(npt, l, s->xb2, s->xb, s->hb, s->npt_scratch);
            for (int j = 0; j < d; j++) s->x[j] += s->hb[j];
            continue;
        }
        for (int j = 0; j < d; j++) s->x[j] += s->xb2[j];
        rmsnorm_vec(s->xb, s->x, L->ffn_norm.data, d, c->norm_eps);
        matvec(s->hb, &L->w_gate, s->xb);
        matvec(s->hb2, &L->w_up, s->xb);
        for (int j = 0; j < c->hidden_dim; j++) s->hb[j] = s->hb[j] / (1.0f + expf(-s->hb[j])) * s->hb2[j];
        matvec(s->xb2, &L->w_down, s->hb);
        for (int j = 0; j < d; j++) s->x[j] += s->xb2[j];
    }
    rmsnorm_vec(s->xb, s->x, m->final_norm.data, d, c->norm_eps);
    matvec(s->logits, &m->lm_head, s->xb);
    return s->logits;
}
