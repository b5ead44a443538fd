/* model/debug.c — the NaN producer finder, precision emulation, layer table, the HDF5
 * save/replay of an offending op. */
#include "debug.h"

#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "../util/atomic_file.h"
#include "../util/h5_out.h"

/* ---------------------------------------------------------------- precision */

const char *debug_precision_name(DebugPrecision p) {
    return p == DEBUG_BF16 ? "bf16" : p == DEBUG_FP16 ? "fp16" : "float32";
}

int debug_parse_precision(const char *s, DebugPrecision *p) {
    if (!strcmp(s, "fp32") || !strcmp(s, "float32")) *p = DEBUG_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *p = DEBUG_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "float16")) *p = DEBUG_FP16;
    else return -1;
    return 0;
}

float debug_precision_max(DebugPrecision p) {
    return p == DEBUG_FP16 ? 65504.0f : p == DEBUG_BF16 ? 3.3895314e38f : 3.4028235e38f;
}

/* Round-to-nearest-even of a finite float to bf16 / fp16, returned as float; the
 * same results as util's npt_f32_to_bf16/npt_f32_to_f16 (checked by tests/test_debug.c)
 * but inline, because precision mode runs it on every element of every op. */
static inline float round_bf16(float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
    memcpy(&v, &b, 4);
    return v;
}

static inline float round_fp16(float v) {
    float a = fabsf(v);
    if (a < 6.103515625e-05f) /* below 2^-14: fp16 subnormals, steps of 2^-24 */
        return rintf(v * 16777216.0f) * 5.9604644775390625e-08f;
    uint32_t b;
    memcpy(&b, &v, 4);
    b = (b + 0xfffu + ((b >> 13) & 1u)) & 0xffffe000u; /* keep 10 mantissa bits */
    memcpy(&v, &b, 4);
    return fabsf(v) > 65504.0f ? copysignf(INFINITY, v) : v;
}

size_t debug_round(float *x, size_t n, DebugPrecision p, float *raw_absmax) {
    size_t overflowed = 0;
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) continue;
        if (fabsf(v) > amax) amax = fabsf(v);
        float r = p == DEBUG_FP16 ? round_fp16(v) : round_bf16(v);
        overflowed += !isfinite(r);
        x[i] = r;
    }
    if (raw_absmax) *raw_absmax = amax;
    return overflowed;
}

size_t debug_round_weights(LlamaModel *m, NptModel *npt, DebugPrecision p) {
    if (p == DEBUG_F32) return 0;
    size_t bad = debug_round(m->weights_block, m->weights_floats, p, NULL);
    if (npt) bad += debug_round(npt->params, npt->n_params, p, NULL);
    return bad;
}

/* ---------------------------------------------------------------- statistics */

static void debug_stats(const char *name, const float *x, size_t n, int ndim, const int *shape, DebugStats *s) {
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name ? name : "?");
    s->ndim = ndim;
    for (int i = 0; i < ndim && i < NPT_MAX_DIMS; i++) s->shape[i] = shape[i];
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (isnan(v)) s->nan++;
        else if (isinf(v)) s->inf++;
        else {
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    }
    if (lo <= hi) {
        s->min = lo;
        s->max = hi;
        s->absmax = fmaxf(fabsf(lo), fabsf(hi));
    }
}

static void tensor_stats(const Tensor *t, const float *x, DebugStats *s) { debug_stats(t->name, x, t->n, t->ndim, t->shape, s); }

static void layer_stat(const Tensor *t, DebugLayerStat *ls) {
    DebugStats s;
    tensor_stats(t, t->data, &s);
    *ls = (DebugLayerStat){.nan = s.nan, .inf = s.inf, .min = s.min, .max = s.max};
}

const char *debug_layer_state(const DebugLayerStat *s) { return s->nan ? "NaN" : s->inf ? "Inf" : "OK"; }

/* ---------------------------------------------------------------- the checker */


/* Fills p from an op whose output x (or gradient) holds non-finite values; in_vals
 * are the inputs' values (or gradients) to describe. */
static void record(DebugProducer *p, const char *op, int layer, long index, const Tensor *out, const float *x,
                   Tensor **in, float **in_vals, int n_in) {
    p->found = 1;
    p->layer = layer;
    snprintf(p->op, sizeof p->op, "%s", op);
    p->op_index = index;
    tensor_stats(out, x, &p->out);
    p->n_in = n_in;
    p->bad_input = -1;
    for (int i = 0; i < n_in; i++) {
        tensor_stats(in[i], in_vals[i], &p->in[i]);
        if (p->bad_input < 0 && (p->in[i].nan || p->in[i].inf)) p->bad_input = i;
    }
    size_t rows = (size_t)tensor_rows(out), cols = out->n / (rows ? rows : 1);
    for (size_t r = 0; r < rows; r++) {
        if (!npt_count_nonfinite(x + r * cols, cols)) continue;
        if (p->n_rows < DEBUG_MAX_ROWS) p->rows[p->n_rows++] = (int)r;
        p->rows_total++;
    }
}

/* Counts the gate factors tanh(d_raw) of a legacy modulation op (inputs gate, d_add,
 * d_raw) that are exactly zero. The SPEC's factor 0.5 sigmoid + 0.5 is at least 0.5, so
 * only the legacy form needs the pass. */
static void check_zero_factor(Graph *g, const char *op, long index, Tensor **in, int n_in, DebugZeroFactor *z) {
    if (z->found || n_in != 3 || strcmp(op, "npt_modulate_tanh") != 0) return;
    const Tensor *d_raw = in[2];
    size_t rows = (size_t)tensor_rows(d_raw), cols = d_raw->n / (rows ? rows : 1);
    size_t zeros = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t row_zeros = 0;
        for (size_t j = 0; j < cols; j++) {
            row_zeros += tanhf(d_raw->data[r * cols + j]) == 0.0f;
        }
        if (!row_zeros) continue;
        zeros += row_zeros;
        if (z->n_rows < DEBUG_MAX_ROWS) z->rows[z->n_rows++] = (int)r;
        z->rows_total++;
    }
    if (!zeros) return;
    z->found = 1;
    z->layer = g->layer;
    snprintf(z->op, sizeof z->op, "%s", op);
    z->op_index = index;
    z->zeros = zeros;
    z->n = d_raw->n;
}

/* A fused op's intermediate, before the op uses it: rounded as an op output is, and
 * the first one that is not finite is kept for check_op, which the op calls next. */
static void check_inner(Graph *g, const char *what, float *x, size_t n, void *ctx) {
    DebugChecker *c = ctx;
    float raw_absmax = 0.0f;
    size_t overflowed = c->prec == DEBUG_F32 ? 0 : debug_round(x, n, c->prec, &raw_absmax);
    if (c->inner || !npt_count_nonfinite(x, n)) return;
    c->inner = what;
    c->inner_overflow = overflowed > 0;
    c->inner_absmax = raw_absmax;
}

static void check_op(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx) {
    DebugChecker *c = ctx;
    DebugResult *r = c->r;
    long index = r->n_ops++;
    float raw_absmax = 0.0f;
    size_t overflowed = c->prec == DEBUG_F32 ? 0 : debug_round(out->data, out->n, c->prec, &raw_absmax);
    const char *inner = c->inner; /* this op's, if any: the next op starts clean */
    c->inner = NULL;
    check_zero_factor(g, op, index, in, n_in, &r->zero_factor);
    if (r->first.found || !npt_count_nonfinite(out->data, out->n)) return;
    float *vals[NODE_MAX_INPUTS];
    for (int i = 0; i < n_in; i++) vals[i] = in[i]->data;
    record(&r->first, op, g->layer, index, out, out->data, in, vals, n_in);
    r->first.overflow = inner ? c->inner_overflow : overflowed > 0;
    r->first.raw_absmax = inner ? c->inner_absmax : raw_absmax;
    snprintf(r->first.inner, sizeof r->first.inner, "%s", inner ? inner : "");
    c->n_in = n_in;
    for (int i = 0; i < n_in; i++) c->in[i] = in[i];
}

void debug_attach(Graph *g, DebugChecker *c, DebugResult *r, DebugPrecision p) {
    memset(r, 0, sizeof *r);
    r->loss = NAN;
    *c = (DebugChecker){.prec = p, .r = r};
    g->observer = check_op;
    g->inner_observer = check_inner;
    g->observer_ctx = c;
    g->keep_inputs = 1;
}

/* Replays the recorded tape backwards one node at a time (graph_backward's loop), so
 * the first node whose inputs' gradients turn non-finite from a finite output
 * gradient is caught as it happens. */
static void check_backward(Graph *g, Tensor *loss, DebugResult *r) {
    float *d = graph_grad(g, loss);
    d[0] += 1.0f;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        Node *n = &g->nodes[i];
        if (!n->out->grad) continue;
        n->backward(g, n);
        if (r->first.found) continue;
        Tensor *in[NODE_MAX_INPUTS];
        float *vals[NODE_MAX_INPUTS];
        int k = 0, bad = 0;
        for (int j = 0; j < NODE_MAX_INPUTS; j++) {
            if (!n->in[j] || !n->in[j]->grad) continue;
            in[k] = n->in[j];
            vals[k] = n->in[j]->grad;
            bad |= npt_count_nonfinite(vals[k], in[k]->n) > 0;
            k++;
        }
        if (!bad) continue;
        /* the node is blamed; its inputs' gradients are what is described */
        int bad_j = 0;
        while (!npt_count_nonfinite(vals[bad_j], in[bad_j]->n)) bad_j++;
        record(&r->first, n->op, -1, i, in[bad_j], vals[bad_j], in, vals, k);
        r->first.backward = 1;
        r->first.bad_input = -1; /* its output gradient was finite, or an earlier node would be blamed */
    }
}

/* ---------------------------------------------------------------- HDF5 save */

/* Each returns 0, or -1 if any HDF5 call failed; every id made is closed once. */
static int h5_attr(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = s < 0 ? -1 : H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, type, v) < 0 ? -1 : 0;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    if (s >= 0 && H5Sclose(s) < 0) rc = -1;
    return rc;
}

static int h5_attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    int rc = t < 0 || H5Tset_size(t, strlen(v) + 1) < 0 || h5_attr(loc, name, t, v) ? -1 : 0;
    if (t >= 0 && H5Tclose(t) < 0) rc = -1;
    return rc;
}

static int h5_put_input(hid_t f, int i, const Tensor *t) {
    hsize_t dims[NPT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = (hsize_t)t->shape[d];
    char name[16];
    snprintf(name, sizeof name, "in%d", i);
    hid_t s = H5Screate_simple(t->ndim, dims, NULL);
    hid_t ds = s < 0 ? -1 : H5Dcreate2(f, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->data) < 0 ||
             h5_attr_str(ds, "name", t->name ? t->name : "?") ? -1 : 0;
    if (ds >= 0 && H5Dclose(ds) < 0) rc = -1;
    if (s >= 0 && H5Sclose(s) < 0) rc = -1;
    return rc;
}

/* The producer's inputs and what replaying its op needs, written whole or not at all. */
static int save_inputs(const char *path, int keep_existing, const DebugChecker *c, const LlamaModel *m,
                       const NptModel *npt, NptErr *err) {
    const DebugProducer *p = &c->r->first;
    NptH5Out out;
    hid_t f = npt_h5out_create(&out, path, "op file", H5P_DEFAULT, err);
    if (f < 0) return -1;
    out.no_replace = keep_existing;
    const LlamaConfig *cf = &m->cfg;
    float scale = npt ? npt->scale : 1.0f;
    int prec = c->prec, rope = cf->rope;
    int rc = h5_attr_str(f, "op", p->op) || h5_attr(f, "layer", H5T_NATIVE_INT, &p->layer) ||
             h5_attr(f, "n_inputs", H5T_NATIVE_INT, &c->n_in) || h5_attr(f, "precision", H5T_NATIVE_INT, &prec) ||
             h5_attr(f, "head_dim", H5T_NATIVE_INT, &cf->head_dim) ||
             h5_attr(f, "norm_eps", H5T_NATIVE_FLOAT, &cf->norm_eps) ||
             h5_attr(f, "rope_theta", H5T_NATIVE_FLOAT, &cf->rope_theta) ||
             h5_attr(f, "rope_style", H5T_NATIVE_INT, &rope) ||
             h5_attr(f, "modulation_scale", H5T_NATIVE_FLOAT, &scale)
                 ? -1 : 0;
    for (int i = 0; i < c->n_in && !rc && !npt_h5out_failed(&out); i++) rc = h5_put_input(f, i, c->in[i]);
    if (rc && !npt_h5out_failed(&out)) { /* HDF5 itself refused: no OS error to report */
        npt_h5out_abort(&out);
        return npt_fail(err, "cannot write op file %s: HDF5 refused to store the op's inputs", path);
    }
    return npt_h5out_close(&out, err) || npt_h5out_commit(&out, err) ? -1 : 0;
}

/* ---------------------------------------------------------------- the run */

int debug_run(const LlamaModel *m, const NptModel *npt, const int *tokens, int T, const DebugOptions *o,
              DebugResult *r, NptErr *err) {
    memset(r, 0, sizeof *r);
    r->loss = NAN;
    const LlamaConfig *cf = &m->cfg;
    if (T < 1 || T > cf->seq_len) return npt_fail(err, "debug: %d tokens, the model takes 1..%d", T, cf->seq_len);
    DebugLayerStat *table = npt_try_malloc((size_t)(cf->n_layers + 2) * sizeof(DebugLayerStat), "debug layer table", err);
    int *targets = npt_try_malloc((size_t)T * sizeof(int), "debug targets", err);
    Arena act = {0}, grads = {0};
    Graph g = {0};
    size_t bytes = llama_activation_bytes(cf, 1, T, 1);
    int rc = -1;
    if (!table || !targets || arena_init(&act, bytes, "debug activations", err) ||
        (o->backward && arena_init(&grads, bytes, "debug gradients", err)) ||
        graph_init(&g, &act, o->backward ? &grads : NULL, 64 * cf->n_layers + 64, err)) {
        free(table);
        goto done;
    }
    DebugChecker c;
    debug_attach(&g, &c, r, o->precision); /* zeroes r, so the table goes in after */
    r->layers = table;
    r->n_stats = cf->n_layers + 2;
    g.recording = o->backward;
    Tensor *h = llama_embed(&g, m, tokens, T);
    if (o->backward) h->requires_grad = 1; /* differentiate through every layer */
    layer_stat(h, &r->layers[0]);
    for (int l = 0; l < cf->n_layers; l++) {
        h = npt ? npt_student_layer(&g, npt, l, h, 1, T, NULL) : llama_layer(&g, m, l, h, 1, T);
        layer_stat(h, &r->layers[1 + l]);
    }
    Tensor *logits = llama_logits(&g, m, h);
    layer_stat(logits, &r->layers[cf->n_layers + 1]);
    if (T >= 2) {
        for (int t = 0; t < T; t++) targets[t] = t + 1 < T ? tokens[t + 1] : -1;
        Tensor *loss = op_cross_entropy(&g, logits, targets);
        r->loss = loss->data[0];
        if (o->backward && !r->first.found && isfinite(r->loss)) {
            if (o->grads) memset(o->grads, 0, o->n_grads * sizeof(float));
            check_backward(&g, loss, r);
        }
    }
    rc = 0;
    if (r->first.found && !r->first.backward && o->save_path) {
        rc = save_inputs(o->save_path, o->save_keep_existing, &c, m, npt, err);
        r->saved = rc == 0;
    }
done:
    free(targets);
    graph_free(&g);
    arena_free(&act);
    arena_free(&grads);
    if (rc) debug_result_free(r);
    return rc;
}

void debug_result_free(DebugResult *r) {
    free(r->layers);
    r->layers = NULL;
}

/* ---------------------------------------------------------------- printing */

static void print_shape(FILE *f, const DebugStats *s) {
    fputc('[', f);
    for (int d = 0; d < s->ndim; d++) fprintf(f, d ? ", %d" : "%d", s->shape[d]);
    fputc(']', f);
}

static void print_range(FILE *f, const DebugStats *s) {
    fprintf(f, "min %.4g max %.4g absmax %.4g", s->min, s->max, s->absmax);
    if (s->nan || s->inf) fprintf(f, ", %zu NaN %zu Inf", s->nan, s->inf);
}

int debug_found(const DebugResult *r) { return r->first.found || r->zero_factor.found; }

static void print_positions(FILE *f, const int *rows, int n_rows, int rows_total, const int *tokens) {
    fprintf(f, "  token positions affected (%d):", rows_total);
    for (int i = 0; i < n_rows; i++) {
        fprintf(f, " %d", rows[i]);
        if (tokens) fprintf(f, "(id %d)", tokens[rows[i]]);
    }
    fputs(rows_total > n_rows ? " ...\n" : "\n", f);
}

static void print_zero_factor(FILE *f, const DebugZeroFactor *z, const int *tokens) {
    fprintf(f, "modulation factor reached zero: layer %d, op %s (#%ld): %zu of %zu gate factors are exactly 0, "
               "so the MLP gate is switched off there\n", z->layer, z->op, z->op_index, z->zeros, z->n);
    print_positions(f, z->rows, z->n_rows, z->rows_total, tokens);
}

void debug_print_producer(FILE *f, const DebugResult *r, const int *tokens) {
    const DebugProducer *p = &r->first;
    if (r->zero_factor.found) print_zero_factor(f, &r->zero_factor, tokens);
    if (!p->found) {
        fprintf(f, "all ops finite (%ld ops checked, loss %.6g)\n", r->n_ops, r->loss);
        return;
    }
    fprintf(f, "first non-finite value: %s pass, ", p->backward ? "backward" : "forward");
    if (p->layer >= 0) fprintf(f, "layer %d, ", p->layer);
    else fprintf(f, "outside the layers, ");
    fprintf(f, "op %s (#%ld)\n", p->op, p->op_index);
    fprintf(f, "  %s %s ", p->backward ? "gradient of" : "output", p->out.name);
    print_shape(f, &p->out);
    fprintf(f, ": %zu NaN, %zu Inf\n", p->out.nan, p->out.inf);
    if (p->inner[0] && p->overflow)
        fprintf(f, "  cause: inside the op, %s reaches %.6g, beyond the format's range\n", p->inner, p->raw_absmax);
    else if (p->inner[0])
        fprintf(f, "  cause: inside the op, %s became non-finite from finite inputs\n", p->inner);
    else if (p->overflow)
        fprintf(f, "  cause: values up to %.6g exceed the format's range\n", p->raw_absmax);
    if (p->bad_input >= 0)
        fprintf(f, "  cause: %s %s was already non-finite (%zu NaN, %zu Inf)\n", p->backward ? "output gradient of" : "input",
                p->in[p->bad_input].name, p->in[p->bad_input].nan, p->in[p->bad_input].inf);
    else if (!p->overflow && !p->inner[0])
        fprintf(f, "  cause: produced from finite inputs\n");
    for (int i = 0; i < p->n_in; i++) {
        fprintf(f, "  %s %d %s ", p->backward ? "grad" : "input", i, p->in[i].name);
        print_shape(f, &p->in[i]);
        fputs(": ", f);
        print_range(f, &p->in[i]);
        fputc('\n', f);
    }
    if (p->out.ndim >= 2) print_positions(f, p->rows, p->n_rows, p->rows_total, p->backward ? NULL : tokens);
}

/* The range of an OK row; a NaN/Inf row gets its counts instead. */
static void print_layer_range(FILE *f, const DebugLayerStat *s) {
    if (s->nan || s->inf) fprintf(f, " (%zu NaN, %zu Inf)\n", s->nan, s->inf);
    else fprintf(f, " (min %.4g max %.4g)\n", s->min, s->max);
}

static int same_state(const DebugLayerStat *a, const DebugLayerStat *b) {
    return !strcmp(debug_layer_state(a), debug_layer_state(b));
}

void debug_print_layers(FILE *f, const DebugResult *r) {
    int L = r->n_stats - 2;
    const DebugLayerStat *s = r->layers;
    fprintf(f, "embedding %s", debug_layer_state(&s[0]));
    print_layer_range(f, &s[0]);
    for (int a = 0; a < L;) {
        int b = a;
        DebugLayerStat run = s[1 + a]; /* counts summed, range merged over the run */
        while (b + 1 < L && same_state(&s[1 + a], &s[2 + b])) {
            b++;
            run.nan += s[1 + b].nan;
            run.inf += s[1 + b].inf;
            run.min = fminf(run.min, s[1 + b].min);
            run.max = fmaxf(run.max, s[1 + b].max);
        }
        if (a == b) fprintf(f, "layer %d %s", a, debug_layer_state(&s[1 + a]));
        else fprintf(f, "layers %d-%d %s", a, b, debug_layer_state(&s[1 + a]));
        print_layer_range(f, &run);
        a = b + 1;
    }
    fprintf(f, "logits %s", debug_layer_state(&s[L + 1]));
    print_layer_range(f, &s[L + 1]);
}

/* ---------------------------------------------------------------- training */

int debug_report_batch(const LlamaModel *m, const NptModel *npt, float *grads, size_t n_grads, const int *tokens, int B,
                       int T, const int64_t *sample_ids, const char *stem, NptErr *err) {
    char txt[4200], h5[4200];
    snprintf(txt, sizeof txt, "%s.txt", stem);
    snprintf(h5, sizeof h5, "%s.h5", stem);
    NptAtomicFile out; /* the report appears whole or not at all, like every file npt writes */
    FILE *f = npt_atomic_open(&out, txt, err);
    if (!f) return -1;
    int failing = 0;
    for (int b = 0; b < B; b++) {
        DebugOptions o = {.backward = 1, .save_path = failing ? NULL : h5, .grads = grads, .n_grads = n_grads};
        DebugResult r;
        if (debug_run(m, npt, tokens + (size_t)b * T, T, &o, &r, err)) {
            npt_atomic_abort(&out);
            return -1;
        }
        fprintf(f, "== sequence %d of %d (sample %lld)\n", b, B, sample_ids ? (long long)sample_ids[b] : -1LL);
        debug_print_producer(f, &r, tokens + (size_t)b * T);
        if (r.saved) fprintf(f, "inputs saved to %s; replay with: npt debug replay %s\n", h5, h5);
        failing += debug_found(&r);
        debug_result_free(&r);
    }
    if (npt_atomic_commit(&out, err)) return -1; /* flush, fsync, rename; names txt on failure */
    return failing;
}

/* ---------------------------------------------------------------- replay */

typedef struct {
    char op[32];
    int n_in, head_dim, rope_style, precision, layer;
    float norm_eps, rope_theta, scale;
    int nd[NODE_MAX_INPUTS];                     /* each input's rank and shape, from the file */
    long long dims[NODE_MAX_INPUTS][NPT_MAX_DIMS];
    char names[NODE_MAX_INPUTS][64];
    Tensor *in[NODE_MAX_INPUTS];
} Replay;

/* What each op replay can rebuild needs: the number of inputs and each one's rank ('2':
 * 2-D; '*': 1-D or 2-D, a 1-D input being one row). The ops themselves stop the process
 * on other shapes, as on a bug in npt, and a file edited by hand is not one; how the
 * shapes must fit one another is replay_misfit's. */
static const struct {
    const char *op;
    int n_min, n_max;
    const char *ranks;
} replay_ops[] = {
    {"matmul", 2, 2, "22"},  {"add", 2, 2, "**"},    {"mul", 2, 2, "**"},     {"swiglu", 2, 2, "**"},
    {"silu", 1, 1, "*"},     {"sigmoid", 1, 1, "*"}, {"rmsnorm", 2, 2, "**"}, {"rope", 1, 1, "*"},
    {"attention", 3, 3, "***"}, {"npt_swiglu", 4, 5, "*****"},
};

#define NOT_NPTS "this file was not written by npt debug --save (or was edited)"

static int h5_read_attr(hid_t loc, const char *name, hid_t type, void *v) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    int rc = a < 0 || H5Aread(a, type, v) < 0 ? -1 : 0;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    return rc;
}

static int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t cap) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    size_t n = t < 0 ? 0 : H5Tget_size(t);
    int rc = -1;
    if (t >= 0 && H5Tis_variable_str(t) > 0) { /* as h5py writes strings */
        char *v = NULL;
        if (H5Aread(a, t, &v) >= 0 && v) {
            snprintf(buf, cap, "%s", v);
            rc = 0;
        }
        if (v && H5free_memory(v) < 0) rc = -1;
    } else if (n > 0 && n <= cap) {
        rc = H5Aread(a, t, buf) < 0 ? -1 : 0;
    }
    buf[cap - 1] = '\0';
    if (t >= 0 && H5Tclose(t) < 0) rc = -1;
    if (H5Aclose(a) < 0) rc = -1;
    return rc;
}

/* "[13, 64]" */
static const char *replay_shape_str(const Replay *rp, int i, char *buf, size_t cap) {
    int o = snprintf(buf, cap, "[");
    for (int d = 0; d < rp->nd[i] && o < (int)cap; d++) o += snprintf(buf + o, cap - o, d ? ", %lld" : "%lld", rp->dims[i][d]);
    if (o < (int)cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

static long long replay_rows(const Replay *rp, int i) { return rp->nd[i] == 1 ? 1 : rp->dims[i][0]; }
static long long replay_cols(const Replay *rp, int i) { return rp->dims[i][rp->nd[i] - 1]; }
static long long replay_count(const Replay *rp, int i) {
    long long n = 1;
    for (int d = 0; d < rp->nd[i]; d++) n *= rp->dims[i][d]; /* each <= INT_MAX, rank <= 2: no overflow */
    return n;
}
static int replay_same_size(const Replay *rp, int i, int j) {
    return replay_rows(rp, i) == replay_rows(rp, j) && replay_cols(rp, i) == replay_cols(rp, j);
}

/* The rank and shape of dataset in<i>, without reading its data. */
static int replay_shape(hid_t f, Replay *rp, int i, const char *path, NptErr *err) {
    char dname[16];
    snprintf(dname, sizeof dname, "in%d", i);
    hid_t ds = H5Dopen2(f, dname, H5P_DEFAULT);
    if (ds < 0) return npt_fail(err, "%s: dataset %s is missing (n_inputs is %d); " NOT_NPTS, path, dname, rp->n_in);
    hid_t s = H5Dget_space(ds);
    hsize_t dims[NPT_MAX_DIMS];
    int nd = s < 0 ? -1 : H5Sget_simple_extent_ndims(s);
    int ok = nd >= 1 && nd <= NPT_MAX_DIMS && H5Sget_simple_extent_dims(s, dims, NULL) == nd;
    if (s >= 0 && H5Sclose(s) < 0) ok = 0;
    if (H5Dclose(ds) < 0) ok = 0;
    if (!ok && nd == 0) return npt_fail(err, "%s: %s is a scalar, not a tensor; " NOT_NPTS, path, dname);
    if (!ok) return npt_fail(err, "%s: cannot read the shape of dataset %s (%d dimensions)", path, dname, nd);
    rp->nd[i] = nd;
    int bad = 0;
    for (int d = 0; d < nd; d++) {
        rp->dims[i][d] = dims[d] > (hsize_t)LLONG_MAX ? LLONG_MAX : (long long)dims[d];
        bad |= dims[d] == 0 || dims[d] > (hsize_t)INT_MAX;
    }
    char shape[128];
    if (bad)
        return npt_fail(err, "%s: %s has shape %s, but every dimension must be 1..%d; " NOT_NPTS, path, dname,
                        replay_shape_str(rp, i, shape, sizeof shape), INT_MAX);
    return 0;
}

/* Why the saved inputs cannot feed the saved op (NULL if they can). */
static const char *replay_misfit(const Replay *rp) {
    const char *op = rp->op;
    int n = rp->n_in;
    long long hd = rp->head_dim;
    if (!strcmp(op, "matmul"))
        return replay_cols(rp, 0) == replay_rows(rp, 1) || replay_cols(rp, 0) == replay_cols(rp, 1)
                   ? NULL : "the matmul's inner dimensions differ";
    if (!strcmp(op, "add") || !strcmp(op, "mul") || !strcmp(op, "swiglu"))
        return replay_same_size(rp, 0, 1) ? NULL : "the two inputs differ in shape";
    if (!strcmp(op, "rmsnorm")) return replay_count(rp, 1) == replay_cols(rp, 0) ? NULL : "the weight does not match the row width";
    if (!strcmp(op, "rope"))
        return hd > 0 && hd % 2 == 0 && replay_cols(rp, 0) % hd == 0 ? NULL : "head_dim does not split the rows into pairs";
    if (!strcmp(op, "attention")) {
        if (hd <= 0 || !replay_same_size(rp, 1, 2) || replay_rows(rp, 0) != replay_rows(rp, 1) ||
            replay_cols(rp, 0) % hd || replay_cols(rp, 1) % hd || (replay_cols(rp, 0) / hd) % (replay_cols(rp, 1) / hd))
            return "q, k and v do not fit head_dim and one another";
        return NULL;
    }
    if (!strcmp(op, "npt_swiglu")) {
        if (!replay_same_size(rp, 0, 1) || replay_rows(rp, 2) != replay_rows(rp, 0)) return "gate, up and z differ in rows";
        for (int k = 3; k < n; k++)
            if (replay_rows(rp, k) != replay_cols(rp, 0) || replay_cols(rp, k) != replay_cols(rp, 2))
                return "a B matrix does not match the gate width and z's rank";
    }
    return NULL;
}

/* Checks the file's op, attributes and input shapes against what the op needs, before
 * anything is allocated or run. */
static int replay_check(hid_t f, Replay *rp, const char *path, NptErr *err) {
    int k = -1;
    for (int i = 0; i < (int)NPT_ARRAY_LEN(replay_ops); i++)
        if (!strcmp(rp->op, replay_ops[i].op)) k = i;
    if (k < 0)
        return npt_fail(err, "%s: op %s cannot be replayed from its inputs alone (token ids or targets are not saved)", path,
                        rp->op);
    if (rp->precision < DEBUG_F32 || rp->precision > DEBUG_FP16)
        return npt_fail(err, "%s: attribute precision is %d (0 float32, 1 bf16, 2 fp16); " NOT_NPTS, path, rp->precision);
    int lo = replay_ops[k].n_min, hi = replay_ops[k].n_max;
    if (rp->n_in < lo || rp->n_in > hi) {
        char want[32];
        snprintf(want, sizeof want, lo == hi ? "%d" : "%d or %d", lo, hi);
        return npt_fail(err, "%s: op %s takes %s inputs, attribute n_inputs says %d; " NOT_NPTS, path, rp->op, want, rp->n_in);
    }
    for (int i = 0; i < rp->n_in; i++)
        if (replay_shape(f, rp, i, path, err)) return -1;
    const char *ranks = replay_ops[k].ranks; /* each op's ranks are all alike */
    for (int i = 0; i < rp->n_in; i++) {
        char shape[128];
        if (ranks[i] == '*' ? rp->nd[i] <= 2 : rp->nd[i] == 2) continue;
        return npt_fail(err, "%s: op %s needs %s inputs, in%d has shape %s; " NOT_NPTS, path, rp->op,
                        ranks[i] == '*' ? "1-D or 2-D" : "2-D", i, replay_shape_str(rp, i, shape, sizeof shape));
    }
    const char *misfit = replay_misfit(rp);
    if (misfit) {
        char shapes[256] = "", one[96];
        for (int i = 0, o = 0; i < rp->n_in && o < (int)sizeof shapes; i++)
            o += snprintf(shapes + o, sizeof shapes - o, "%sin%d %s", i ? ", " : "", i, replay_shape_str(rp, i, one, sizeof one));
        char hd[32] = "";
        if (!strcmp(rp->op, "rope") || !strcmp(rp->op, "attention")) snprintf(hd, sizeof hd, ", head_dim %d", rp->head_dim);
        return npt_fail(err, "%s: the saved inputs of %s do not fit together (%s: %s%s); " NOT_NPTS, path, rp->op, misfit,
                        shapes, hd);
    }
    return 0;
}

/* Reads dataset in<i>, whose shape replay_check accepted, into a tensor of the arena. */
static int replay_input(hid_t f, Arena *act, Replay *rp, int i, const char *path, NptErr *err) {
    char dname[16];
    snprintf(dname, sizeof dname, "in%d", i);
    int shape[NPT_MAX_DIMS];
    for (int d = 0; d < rp->nd[i]; d++) shape[d] = (int)rp->dims[i][d];
    hid_t ds = H5Dopen2(f, dname, H5P_DEFAULT);
    if (ds < 0) return npt_fail(err, "%s: cannot open dataset %s", path, dname);
    if (h5_read_attr_str(ds, "name", rp->names[i], sizeof rp->names[i])) snprintf(rp->names[i], 64, "%s", dname);
    rp->in[i] = tensor_new(act, rp->names[i], rp->nd[i], shape);
    int rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, rp->in[i]->data) < 0 ? -1 : 0;
    if (H5Dclose(ds) < 0) rc = -1;
    return rc ? npt_fail(err, "%s: cannot read dataset %s as float32 numbers", path, dname) : 0;
}

/* Runs the saved op, which replay_check matched to its inputs; the geometry of attention
 * and rope follows from the shapes. */
static void replay_op(Graph *g, Replay *rp) {
    Tensor **in = rp->in;
    const char *op = rp->op;
    int hd = rp->head_dim;
    if (!strcmp(op, "matmul")) /* forward matmuls are linears x W^T unless shapes chain directly */
        op_matmul(g, in[0], in[1], 0, tensor_cols(in[0]) == tensor_cols(in[1]));
    else if (!strcmp(op, "add")) op_add(g, in[0], in[1]);
    else if (!strcmp(op, "mul")) op_mul(g, in[0], in[1]);
    else if (!strcmp(op, "swiglu")) op_swiglu(g, in[0], in[1]);
    else if (!strcmp(op, "silu")) op_silu(g, in[0]);
    else if (!strcmp(op, "sigmoid")) op_sigmoid(g, in[0]);
    else if (!strcmp(op, "rmsnorm")) op_rmsnorm(g, in[0], in[1], rp->norm_eps);
    else if (!strcmp(op, "rope"))
        op_rope(g, in[0], 1, tensor_rows(in[0]), tensor_cols(in[0]) / hd, hd, rp->rope_theta, (RopeStyle)rp->rope_style, 0);
    else if (!strcmp(op, "attention"))
        op_attention(g, in[0], in[1], in[2], 1, tensor_rows(in[0]), tensor_cols(in[0]) / hd, tensor_cols(in[1]) / hd, hd);
    else if (!strcmp(op, "npt_swiglu")) /* gate, up, z, B_add (, B_mul in full mode) */
        op_npt_swiglu(g, in[0], in[1], in[2], in[3], rp->n_in == 5 ? in[4] : NULL, rp->scale);
    else npt_die("replay: op %s passed replay_check but has no case", op);
}

int debug_replay(const char *path, DebugResult *r, NptErr *err) {
    memset(r, 0, sizeof *r);
    Replay rp = {0};
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through err, once */
    /* H5Fopen would block on a pipe; a missing file gets H5Fopen's message below */
    if (npt_check_input(path, "debug file", err) == -2) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return npt_fail(err, "%s: cannot open as HDF5 (write one with npt debug forward --save)", path);
    int rc = -1;
    Arena act = {0};
    Graph g = {0};
    if (h5_read_attr_str(f, "op", rp.op, sizeof rp.op) || h5_read_attr(f, "n_inputs", H5T_NATIVE_INT, &rp.n_in) ||
        rp.n_in < 1 || rp.n_in > NODE_MAX_INPUTS || h5_read_attr(f, "head_dim", H5T_NATIVE_INT, &rp.head_dim) ||
        h5_read_attr(f, "precision", H5T_NATIVE_INT, &rp.precision) || h5_read_attr(f, "layer", H5T_NATIVE_INT, &rp.layer) ||
        h5_read_attr(f, "norm_eps", H5T_NATIVE_FLOAT, &rp.norm_eps) ||
        h5_read_attr(f, "rope_theta", H5T_NATIVE_FLOAT, &rp.rope_theta) ||
        h5_read_attr(f, "rope_style", H5T_NATIVE_INT, &rp.rope_style) ||
        h5_read_attr(f, "modulation_scale", H5T_NATIVE_FLOAT, &rp.scale)) {
        npt_fail(err, "%s: not an npt debug file (attributes op, n_inputs, head_dim, ... missing)", path);
        goto done;
    }
    if (replay_check(f, &rp, path, err)) goto done;
    /* the inputs, the output and gradient-sized scratch, and attention's extra data */
    double bytes = 1 << 20;
    for (int i = 0; i < rp.n_in; i++) bytes += 4.0 * (double)replay_count(&rp, i) * sizeof(float);
    if (!strcmp(rp.op, "attention")) /* q: [T, heads x head_dim] */
        bytes += (double)op_attention_extra_floats(1, (int)replay_rows(&rp, 0), (int)(replay_cols(&rp, 0) / rp.head_dim)) *
                 sizeof(float);
    int huge = bytes > (double)(SIZE_MAX / 2);
    if (huge || arena_init(&act, (size_t)bytes, "replay", err)) { /* say which file asks for it */
        NptErr why = *err;
        npt_fail(err, "%s: its inputs need %.1f MB to replay, which cannot be allocated%s%s%s", path, bytes / 1e6,
                 huge ? "" : " (", huge ? "" : why.msg, huge ? "" : ")");
        goto done;
    }
    if (graph_init(&g, &act, NULL, 8, err)) goto done;
    for (int i = 0; i < rp.n_in; i++)
        if (replay_input(f, &act, &rp, i, path, err)) goto done;
    g.recording = 0;
    DebugChecker c;
    debug_attach(&g, &c, r, (DebugPrecision)rp.precision);
    g.layer = rp.layer;
    replay_op(&g, &rp);
    rc = 0;
done:
    H5Fclose(f); /* read-only: nothing to flush, nothing its result could change */
    graph_free(&g);
    arena_free(&act);
    return rc;
}
