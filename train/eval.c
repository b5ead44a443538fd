/* train/eval.c — fidelity, perplexity and modulation figures of an NPT model against its
 * base (see eval.h for the definitions).
 *
 * Teacher and student run layer by layer in lockstep over one batch: only the two
 * residual streams (base and NPT) persist between layers, in buffers sized once; every
 * layer's activations live in one scratch arena reset per layer. The modulation figures
 * are read off the NPT forward itself through the graph's op observer (the ffn RMSNorm
 * output m and the npt_swiglu op's inputs gate, z, B_add, B_mul), so they describe exactly
 * what model/npt.c computed. Logits are made a chunk of rows at a time, so a large
 * vocabulary needs no [tokens x vocab] buffer. */
#include "eval.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../model/ops.h"

#define LOGIT_CHUNK_FLOATS (1u << 24)  /* logits made at most this many floats at a time */
#define PAR_MIN (1 << 15)

typedef struct {
    double nmse_e2e, cos_e2e, nmse_local, cos_local;   /* sums over tokens (nmse: and dims) */
    double add_sum, add_max, mul_min, mul_max, mul_sum; /* over tokens x d_ffn entries */
    double dw_sum, dw_max;                               /* over tokens */
} LayerSums;

typedef struct {
    const LlamaModel *m;
    float scale;
    int collect;            /* 1 while the e2e NPT layer runs */
    const Tensor *ffn_in;   /* the last ffn RMSNorm output seen: m of the NPT layer */
    LayerSums *sums;
} ModObserver;

double eval_token_nll(const float *logits, int V, int target) { return op_row_nll(logits, V, target, NULL); }

/* Modulation of one NPT layer's batch, from the npt_swiglu op's inputs: gate [N, f],
 * z [N, r], B_add and B_mul [f, r] (B_mul NULL in safe mode), and m = RMSNorm(h; w_ffn)
 * [N, d]. d_add and d_raw are rebuilt here from z, r products per element, in double. */
static void modulation_sums(LayerSums *s, float scale, const Tensor *gate, const Tensor *z, const Tensor *b_add,
                            const Tensor *b_mul, const Tensor *mt) {
    int N = tensor_rows(gate), f = tensor_cols(gate), d = tensor_cols(mt), rank = tensor_cols(z);
    double add_sum = 0, add_max = s->add_max, mul_min = s->mul_min, mul_max = s->mul_max, mul_sum = 0, dw_sum = 0,
           dw_max = s->dw_max;
#pragma omp parallel for schedule(static) if ((size_t)N * f > PAR_MIN) \
    reduction(+ : add_sum, mul_sum, dw_sum) reduction(max : add_max, mul_max, dw_max) reduction(min : mul_min)
    for (int r = 0; r < N; r++) {
        const float *g = gate->data + (size_t)r * f, *zr = z->data + (size_t)r * rank, *mr = mt->data + (size_t)r * d;
        double vv = 0.0, mm = 0.0;
        for (int j = 0; j < f; j++) {
            double a = 0.0, raw = 0.0;
            for (int k = 0; k < rank; k++) a += (double)zr[k] * b_add->data[(size_t)j * rank + k];
            for (int k = 0; b_mul && k < rank; k++) raw += (double)zr[k] * b_mul->data[(size_t)j * rank + k];
            double add = scale * a, mul = b_mul ? 0.5 / (1.0 + exp(-raw)) + 0.5 : 1.0;
            double v = g[j] * (mul - 1.0) + add;
            vv += v * v;
            add_sum += fabs(add);
            add_max = fmax(add_max, fabs(add));
            mul_sum += mul;
            mul_min = fmin(mul_min, mul);
            mul_max = fmax(mul_max, mul);
        }
        for (int j = 0; j < d; j++) mm += (double)mr[j] * mr[j];
        double dw = sqrt(vv) / fmax(sqrt(mm), NPT_NMSE_FLOOR);
        dw_sum += dw;
        dw_max = fmax(dw_max, dw);
    }
    s->add_sum += add_sum, s->add_max = add_max, s->mul_min = mul_min, s->mul_max = mul_max;
    s->mul_sum += mul_sum, s->dw_sum += dw_sum, s->dw_max = dw_max;
}

static void observe_modulation(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx) {
    ModObserver *o = ctx;
    if (!o->collect || g->layer < 0) return;
    if (!strcmp(op, "rmsnorm") && in[1] == &o->m->layers[g->layer].ffn_norm) o->ffn_in = out;
    else if (!strcmp(op, "npt_swiglu") && o->ffn_in) /* inputs: gate, up, z, B_add (, B_mul) */
        modulation_sums(&o->sums[g->layer], o->scale, in[0], in[2], in[3], n_in == 5 ? in[4] : NULL, o->ffn_in);
}

/* Adds the NMSE numerator (sum over tokens and dims) and the sum over tokens of the
 * cosine of x against y (the teacher). */
static void compare_rows(const float *x, const float *y, int rows, int cols, double *nmse_sum, double *cos_sum) {
    double ns = 0.0, cs = 0.0;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN) reduction(+ : ns, cs)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *yr = y + (size_t)r * cols;
        double sx = 0.0, sy = 0.0, sxy = 0.0;
        for (int j = 0; j < cols; j++) {
            sx += (double)xr[j] * xr[j];
            sy += (double)yr[j] * yr[j];
            sxy += (double)xr[j] * yr[j];
        }
        double nx = fmax(sqrt(sx), NPT_NMSE_FLOOR), ny = fmax(sqrt(sy), NPT_NMSE_FLOOR), acc = 0.0;
        for (int j = 0; j < cols; j++) {
            double dd = xr[j] / nx - yr[j] / ny;
            acc += dd * dd;
        }
        ns += acc;
        cs += sxy / (nx * ny);
    }
    *nmse_sum += ns;
    *cos_sum += cs;
}

/* Sum of next-token NLLs of the hidden states h [B*T, d]: positions 1..T-2 of each
 * window predict the next token. Position 0 is the BOS every window starts with
 * (data/dataset.c), and a window is a slice of the token stream cut anywhere, so the
 * token after it is predicted from that BOS alone: about 14 nats on TinyStories, a
 * measure of where the cut fell rather than of the model (with it, stories260K's
 * perplexity reads 5% higher). Logits are made `chunk` rows at a time. The first window
 * (numbered from window0) with a non-finite NLL lowers *bad_window, so the caller can
 * name it instead of printing a NaN perplexity. */
static double sum_nll(Graph *g, const LlamaModel *m, float *h, const int *tokens, int N, int T, int chunk, int window0,
                      int *bad_window) {
    int V = m->cfg.vocab_size, bad = INT_MAX;
    double total = 0.0;
    for (int r0 = 0; r0 < N; r0 += chunk) {
        int rows = N - r0 < chunk ? N - r0 : chunk;
        arena_reset(g->act);
        Tensor hv = tensor_view2(h + (size_t)r0 * m->cfg.dim, "eval_hidden", rows, m->cfg.dim);
        Tensor *logits = llama_logits(g, m, &hv);
        double part = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : part) reduction(min : bad) if ((size_t)rows * V > PAR_MIN)
        for (int r = 0; r < rows; r++) {
            int row = r0 + r;
            if (row % T == 0 || row % T == T - 1) continue;
            double nll = eval_token_nll(logits->data + (size_t)r * V, V, tokens[row + 1]);
            if (!isfinite(nll) && window0 + row / T < bad) bad = window0 + row / T;
            part += nll;
        }
        total += part;
    }
    if (bad < *bad_window) *bad_window = bad;
    return total;
}

typedef struct {
    Arena scratch;
    Graph g;
    float *ht, *hs;  /* residual streams of the base and the NPT model, [B*T, d] */
    int chunk;       /* logit rows per chunk */
} EvalBuffers;

static void buffers_free(EvalBuffers *b) {
    graph_free(&b->g);
    arena_free(&b->scratch);
    free(b->ht);
    free(b->hs);
}

/* Everything one batch needs, sized up front: three layer forwards (teacher, student
 * e2e, student local; one without adapters) or one logits chunk, whichever is larger. */
static int buffers_init(EvalBuffers *b, const LlamaModel *m, int with_npt, int B, int T, NptErr *err) {
    memset(b, 0, sizeof *b);
    size_t N = (size_t)B * T, V = (size_t)m->cfg.vocab_size;
    size_t chunk = LOGIT_CHUNK_FLOATS / V;
    b->chunk = (int)(chunk < 1 ? 1 : chunk > N ? N : chunk);
    LlamaConfig layers = m->cfg, none = m->cfg;
    layers.n_layers = with_npt ? 3 : 1;
    none.n_layers = 0;
    size_t layer_bytes = llama_activation_bytes(&layers, B, T, 0), logit_bytes = llama_activation_bytes(&none, 1, b->chunk, 1);
    if (arena_init(&b->scratch, layer_bytes > logit_bytes ? layer_bytes : logit_bytes, "eval activations", err)) return -1;
    if (graph_init(&b->g, &b->scratch, NULL, 1, err)) {
        arena_free(&b->scratch);
        return -1;
    }
    b->g.recording = 0;
    b->ht = npt_try_malloc(N * m->cfg.dim * sizeof(float), "eval hidden states (base)", err);
    if (b->ht && with_npt) b->hs = npt_try_malloc(N * m->cfg.dim * sizeof(float), "eval hidden states (NPT)", err);
    if (!b->ht || (with_npt && !b->hs)) {
        buffers_free(b);
        return -1;
    }
    return 0;
}

/* One batch of B windows: layer sums into sums, NLL sums into *nll_base / *nll_npt. */
static void eval_batch(EvalBuffers *b, const LlamaModel *m, const NptModel *npt, ModObserver *obs, const int *tokens,
                       int window0, int B, int T, EvalResult *r, double *nll_base, double *nll_npt) {
    Graph *g = &b->g;
    int N = B * T, d = m->cfg.dim;
    size_t bytes = (size_t)N * d * sizeof(float);
    arena_reset(g->act);
    memcpy(b->ht, llama_embed(g, m, tokens, N)->data, bytes);
    if (npt) memcpy(b->hs, b->ht, bytes);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        arena_reset(g->act);
        LayerSums *s = &obs->sums[l];
        Tensor tin = tensor_view2(b->ht, "eval_base_in", N, d), sin = tensor_view2(b->hs, "eval_npt_in", N, d);
        Tensor *to = llama_layer(g, m, l, &tin, B, T);
        if (npt && l >= npt->first_layer) {
            obs->collect = 1, obs->ffn_in = NULL;
            Tensor *so = npt_student_layer(g, npt, l, &sin, B, T, NULL);
            obs->collect = 0;
            compare_rows(so->data, to->data, N, d, &s->nmse_e2e, &s->cos_e2e);
            if (npt->adapter_of_layer[l] >= 0) {
                Tensor *lo = npt_layer_forward(g, npt, l, &tin, NULL, B, T, NULL);
                compare_rows(lo->data, to->data, N, d, &s->nmse_local, &s->cos_local);
            }
            memcpy(b->hs, so->data, bytes);
        } else if (npt) { /* below the first converted layer the two models are one */
            compare_rows(to->data, to->data, N, d, &s->nmse_e2e, &s->cos_e2e);
            memcpy(b->hs, to->data, bytes);
        }
        memcpy(b->ht, to->data, bytes);
    }
    *nll_base += sum_nll(g, m, b->ht, tokens, N, T, b->chunk, window0, &r->bad_window_base);
    if (npt) *nll_npt += sum_nll(g, m, b->hs, tokens, N, T, b->chunk, window0, &r->bad_window_npt);
}

static void finish(EvalResult *r, const LayerSums *sums, const LlamaModel *m, const NptModel *npt, double nll_base,
                   double nll_npt) {
    double tok = (double)r->n_tokens, el = tok * m->cfg.dim;
    r->ce_base = nll_base / (double)r->n_targets;
    r->ppl_base = exp(r->ce_base);
    r->ce_npt = npt ? nll_npt / (double)r->n_targets : NAN;
    r->ppl_npt = npt ? exp(r->ce_npt) : NAN;
    int n_compared = 0;
    for (int l = 0; l < r->n_layers; l++) {
        const LayerSums *s = &sums[l];
        EvalLayer *e = &r->layers[l];
        double fel = tok * m->cfg.hidden_dim;
        e->is_npt = npt && npt->adapter_of_layer[l] >= 0;
        e->compared = npt && l >= npt->first_layer;
        e->nmse_e2e = s->nmse_e2e / el;
        e->cos_e2e = s->cos_e2e / tok;
        e->nmse_local = e->is_npt ? s->nmse_local / el : NAN;
        e->cos_local = e->is_npt ? s->cos_local / tok : NAN;
        e->d_add_mean = e->is_npt ? s->add_sum / fel : NAN;
        e->d_add_max = e->is_npt ? s->add_max : NAN;
        int full = e->is_npt && !npt->safe_mode;
        e->d_mul_min = full ? s->mul_min : NAN;
        e->d_mul_max = full ? s->mul_max : NAN;
        e->d_mul_mean = full ? s->mul_sum / fel : NAN;
        e->dw_fro_mean = e->is_npt ? s->dw_sum / tok : NAN;
        e->dw_fro_max = e->is_npt ? s->dw_max : NAN;
        if (e->compared) r->nmse_e2e_mean += e->nmse_e2e, n_compared++;
        if (e->is_npt) r->nmse_local_mean += e->nmse_local;
    }
    r->nmse_e2e_mean = npt ? r->nmse_e2e_mean / n_compared : NAN;
    r->nmse_local_mean = npt ? r->nmse_local_mean / npt->n_adapters : NAN;
}

int eval_run(const LlamaModel *m, const NptModel *npt, const int *tokens, int n_windows, int T, int batch,
             EvalResult *r, NptErr *err) {
    memset(r, 0, sizeof *r);
    if (T < 3)
        return npt_fail(err, "eval: windows of %d tokens have no scored next token (the one after the window's BOS is "
                        "not scored); use at least 3", T);
    if (n_windows < 1 || batch < 1) return npt_fail(err, "eval: %d windows in batches of %d: nothing to evaluate", n_windows, batch);
    if (npt && npt->base != m) return npt_fail(err, "eval: the adapters were built for another LlamaModel instance");
    for (size_t i = 0; i < (size_t)n_windows * T; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return npt_fail(err, "eval: token %d at window %zu position %zu is outside the vocabulary of %d", tokens[i],
                            i / (size_t)T, i % (size_t)T, m->cfg.vocab_size);
    int B = batch < n_windows ? batch : n_windows, L = m->cfg.n_layers;
    EvalBuffers b;
    if (buffers_init(&b, m, npt != NULL, B, T, err)) return -1;
    LayerSums *sums = npt_try_malloc((size_t)L * sizeof *sums, "eval sums", err);
    r->layers = sums ? npt_try_malloc((size_t)L * sizeof *r->layers, "eval results", err) : NULL;
    if (!r->layers) {
        free(sums);
        buffers_free(&b);
        return -1;
    }
    memset(r->layers, 0, (size_t)L * sizeof *r->layers);
    for (int l = 0; l < L; l++) sums[l] = (LayerSums){.mul_min = INFINITY, .mul_max = -INFINITY};
    ModObserver obs = {.m = m, .scale = npt ? npt->scale : 0.0f, .sums = sums};
    b.g.observer = observe_modulation;
    b.g.observer_ctx = &obs;
    double t0 = npt_now_seconds(), nll_base = 0.0, nll_npt = 0.0;
    r->bad_window_base = r->bad_window_npt = INT_MAX;
    for (int w = 0; w < n_windows; w += B) {
        int nb = n_windows - w < B ? n_windows - w : B;
        eval_batch(&b, m, npt, &obs, tokens + (size_t)w * T, w, nb, T, r, &nll_base, &nll_npt);
    }
    if (r->bad_window_base == INT_MAX) r->bad_window_base = -1;
    if (r->bad_window_npt == INT_MAX) r->bad_window_npt = -1;
    r->has_npt = npt != NULL;
    r->safe_mode = npt ? npt->safe_mode : 0;
    r->modulation_scale = npt ? npt->scale : 0.0f;
    r->n_layers = L, r->seq_len = T, r->n_windows = n_windows;
    r->n_tokens = (long long)n_windows * T;
    r->n_targets = (long long)n_windows * (T - 2);
    finish(r, sums, m, npt, nll_base, nll_npt);
    r->seconds = npt_now_seconds() - t0;
    free(sums);
    buffers_free(&b);
    return 0;
}

void eval_result_free(EvalResult *r) {
    free(r->layers);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- reports */

/* Table columns: header, printf format of a value (width passed as *), width, field. */
typedef struct {
    const char *name, *fmt;
    int width;
    size_t offset;
    int full_only; /* d_mul: not shown in safe mode */
} Column;

static const Column columns[] = {
    {"nmse_e2e", "%*.4e", 10, offsetof(EvalLayer, nmse_e2e), 0},
    {"cos_e2e", "%*.6f", 9, offsetof(EvalLayer, cos_e2e), 0},
    {"nmse_local", "%*.4e", 10, offsetof(EvalLayer, nmse_local), 0},
    {"cos_local", "%*.6f", 9, offsetof(EvalLayer, cos_local), 0},
    {"|s*d_add|", "%*.3e", 9, offsetof(EvalLayer, d_add_mean), 0},
    {"max", "%*.3e", 9, offsetof(EvalLayer, d_add_max), 0},
    {"d_mul_min", "%*.4f", 9, offsetof(EvalLayer, d_mul_min), 1},
    {"d_mul_max", "%*.4f", 9, offsetof(EvalLayer, d_mul_max), 1},
    {"d_mul_mean", "%*.4f", 10, offsetof(EvalLayer, d_mul_mean), 1},
    {"||dW||_F", "%*.3e", 9, offsetof(EvalLayer, dw_fro_mean), 0},
    {"max", "%*.3e", 9, offsetof(EvalLayer, dw_fro_max), 0},
};

void eval_print_table(FILE *f, const EvalResult *r) {
    fprintf(f, "%d windows x %d tokens (%lld tokens, %lld scored), %.1f s\n", r->n_windows, r->seq_len, r->n_tokens,
            r->n_targets, r->seconds);
    fprintf(f, "perplexity   base %.4f", r->ppl_base);
    if (r->has_npt)
        fprintf(f, "   npt %.4f   (npt/base %.3f; cross-entropy %.4f vs %.4f nats)\n", r->ppl_npt, r->ppl_npt / r->ppl_base,
                r->ce_npt, r->ce_base);
    else
        fprintf(f, "   (no --adapters: base model only)\n");
    if (!r->has_npt) return;
    fprintf(f, "fidelity     mean NMSE e2e %.4e over compared layers (the distillation loss term), local %.4e over NPT layers\n",
            r->nmse_e2e_mean, r->nmse_local_mean);
    fprintf(f, "modulation   %s, s = %g\n\nlayer kind", r->safe_mode ? "safe mode (additive only)" : "full mode",
            r->modulation_scale);
    for (size_t c = 0; c < NPT_ARRAY_LEN(columns); c++)
        if (!(columns[c].full_only && r->safe_mode)) fprintf(f, "  %*s", columns[c].width, columns[c].name);
    fputc('\n', f);
    for (int l = 0; l < r->n_layers; l++) {
        const EvalLayer *e = &r->layers[l];
        fprintf(f, "%5d %-4s", l, e->is_npt ? "npt" : "base");
        for (size_t c = 0; c < NPT_ARRAY_LEN(columns); c++) {
            if (columns[c].full_only && r->safe_mode) continue;
            double v = *(const double *)((const char *)e + columns[c].offset);
            fputs("  ", f);
            if (isfinite(v)) fprintf(f, columns[c].fmt, columns[c].width, v);
            else fprintf(f, "%*s", columns[c].width, "-");
        }
        fputc('\n', f);
    }
}

void eval_write_json(FILE *f, const EvalResult *r) {
    fprintf(f, "{\"windows\":%d,\"seq_len\":%d,\"tokens\":%lld,\"targets\":%lld,\"has_npt\":%s,\"safe_mode\":%s",
            r->n_windows, r->seq_len, r->n_tokens, r->n_targets, r->has_npt ? "true" : "false",
            r->safe_mode ? "true" : "false");
    npt_json_number(f, "modulation_scale", r->has_npt ? r->modulation_scale : NAN);
    npt_json_number(f, "ce_base", r->ce_base);
    npt_json_number(f, "ppl_base", r->ppl_base);
    npt_json_number(f, "ce_npt", r->ce_npt);
    npt_json_number(f, "ppl_npt", r->ppl_npt);
    npt_json_number(f, "nmse_e2e_mean", r->nmse_e2e_mean);
    npt_json_number(f, "nmse_local_mean", r->nmse_local_mean);
    npt_json_number(f, "seconds", r->seconds);
    fputs(",\"layers\":[", f);
    for (int l = 0; r->has_npt && l < r->n_layers; l++) {
        const EvalLayer *e = &r->layers[l];
        fprintf(f, "%s{\"layer\":%d,\"npt\":%s,\"compared\":%s", l ? "," : "", l, e->is_npt ? "true" : "false",
                e->compared ? "true" : "false");
        npt_json_number(f, "nmse_e2e", e->nmse_e2e);
        npt_json_number(f, "cos_e2e", e->cos_e2e);
        npt_json_number(f, "nmse_local", e->nmse_local);
        npt_json_number(f, "cos_local", e->cos_local);
        npt_json_number(f, "d_add_mean", e->d_add_mean);
        npt_json_number(f, "d_add_max", e->d_add_max);
        npt_json_number(f, "d_mul_min", e->d_mul_min);
        npt_json_number(f, "d_mul_max", e->d_mul_max);
        npt_json_number(f, "d_mul_mean", e->d_mul_mean);
        npt_json_number(f, "dw_fro_mean", e->dw_fro_mean);
        npt_json_number(f, "dw_fro_max", e->dw_fro_max);
        fputc('}', f);
    }
    fputs("]}", f);
}
