/* model/debug.c — the NaN producer finder, precision emulation, layer table and the
 * HDF5 save/replay of an offending op (see debug.h). */
#include "debug.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

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

static void check_op(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx) {
    DebugChecker *c = ctx;
    DebugResult *r = c->r;
    long index = r->n_ops++;
    float raw_absmax = 0.0f;
    size_t overflowed = c->prec == DEBUG_F32 ? 0 : debug_round(out->data, out->n, c->prec, &raw_absmax);
    check_zero_factor(g, op, index, in, n_in, &r->zero_factor);
    if (r->first.found || !npt_count_nonfinite(out->data, out->n)) return;
    float *vals[NODE_MAX_INPUTS];
    for (int i = 0; i < n_in; i++) vals[i] = in[i]->data;
    record(&r->first, op, g->layer, index, out, out->data, in, vals, n_in);
    r->first.overflow = overflowed > 0;
    r->first.raw_absmax = raw_absmax;
    c->n_in = n_in;
    for (int i = 0; i < n_in; i++) c->in[i] = in[i];
}

void debug_attach(Graph *g, DebugChecker *c, DebugResult *r, DebugPrecision p) {
    memset(r, 0, sizeof *r);
    r->loss = NAN;
    *c = (DebugChecker){.prec = p, .r = r};
    g->observer = check_op;
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

static int h5_attr_str(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1), s = H5Screate(H5S_SCALAR);
    H5Tset_size(t, strlen(v) + 1);
    hid_t a = H5Acreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, t, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
    return rc;
}

static int h5_attr_num(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, type, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(s);
    return rc;
}

static int save_inputs(const char *path, const DebugChecker *c, const LlamaModel *m, const NptModel *npt, NptErr *err) {
    const DebugProducer *p = &c->r->first;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return npt_fail(err, "%s: cannot create the HDF5 file for the offending op's inputs", path);
    const LlamaConfig *cf = &m->cfg;
    float scale = npt ? npt->scale : 1.0f;
    int prec = c->prec, rope = cf->rope;
    int rc = h5_attr_str(f, "op", p->op) | h5_attr_num(f, "layer", H5T_NATIVE_INT, &p->layer) |
             h5_attr_num(f, "n_inputs", H5T_NATIVE_INT, &c->n_in) |
             h5_attr_num(f, "precision", H5T_NATIVE_INT, &prec) |
             h5_attr_num(f, "head_dim", H5T_NATIVE_INT, &cf->head_dim) |
             h5_attr_num(f, "norm_eps", H5T_NATIVE_FLOAT, &cf->norm_eps) |
             h5_attr_num(f, "rope_theta", H5T_NATIVE_FLOAT, &cf->rope_theta) |
             h5_attr_num(f, "rope_style", H5T_NATIVE_INT, &rope) |
             h5_attr_num(f, "modulation_scale", H5T_NATIVE_FLOAT, &scale);
    for (int i = 0; i < c->n_in && !rc; i++) {
        const Tensor *t = c->in[i];
        hsize_t dims[NPT_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) dims[d] = (hsize_t)t->shape[d];
        char name[96];
        snprintf(name, sizeof name, "in%d", i);
        hid_t s = H5Screate_simple(t->ndim, dims, NULL);
        hid_t ds = H5Dcreate2(f, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t->data) < 0 ||
             h5_attr_str(ds, "name", t->name ? t->name : "?") ? -1 : 0;
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(s);
    }
    if (H5Fclose(f) < 0) rc = -1;
    return rc ? npt_fail(err, "%s: writing the offending op's inputs failed", path) : 0;
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
        if (o->backward && !r->first.found && isfinite(r->loss)) check_backward(&g, loss, r);
    }
    rc = 0;
    if (r->first.found && !r->first.backward && o->save_path) {
        rc = save_inputs(o->save_path, &c, m, npt, err);
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
    if (p->overflow) fprintf(f, "  cause: values up to %.6g exceed the format's range\n", p->raw_absmax);
    if (p->bad_input >= 0)
        fprintf(f, "  cause: %s %s was already non-finite (%zu NaN, %zu Inf)\n", p->backward ? "output gradient of" : "input",
                p->in[p->bad_input].name, p->in[p->bad_input].nan, p->in[p->bad_input].inf);
    else if (!p->overflow)
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

int debug_report_batch(const LlamaModel *m, const NptModel *npt, const int *tokens, int B, int T,
                       const int64_t *sample_ids, const char *stem, NptErr *err) {
    char txt[4200], h5[4200];
    snprintf(txt, sizeof txt, "%s.txt", stem);
    snprintf(h5, sizeof h5, "%s.h5", stem);
    FILE *f = fopen(txt, "w");
    if (!f) return npt_fail(err, "%s: cannot write the debug report", txt);
    int failing = 0;
    for (int b = 0; b < B; b++) {
        DebugOptions o = {.backward = 1, .save_path = failing ? NULL : h5};
        DebugResult r;
        if (debug_run(m, npt, tokens + (size_t)b * T, T, &o, &r, err)) {
            fclose(f);
            return -1;
        }
        fprintf(f, "== sequence %d of %d (sample %lld)\n", b, B, sample_ids ? (long long)sample_ids[b] : -1LL);
        debug_print_producer(f, &r, tokens + (size_t)b * T);
        if (r.saved) fprintf(f, "inputs saved to %s; replay with: npt debug replay %s\n", h5, h5);
        failing += debug_found(&r);
        debug_result_free(&r);
    }
    if (fclose(f) != 0) return npt_fail(err, "%s: writing the debug report failed", txt);
    return failing;
}

/* ---------------------------------------------------------------- replay */

typedef struct {
    int op_ok;
    char op[32];
    int n_in, head_dim, rope_style, precision, layer;
    float norm_eps, rope_theta, scale;
    char names[NODE_MAX_INPUTS][64];
    Tensor *in[NODE_MAX_INPUTS];
} Replay;

static int h5_read_attr(hid_t loc, const char *name, hid_t type, void *v) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    int rc = a < 0 || H5Aread(a, type, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int h5_read_attr_str(hid_t loc, const char *name, char *buf, size_t cap) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    int rc = -1;
    if (H5Tis_variable_str(t) > 0) { /* as h5py writes strings */
        char *v = NULL;
        if (H5Aread(a, t, &v) >= 0 && v) {
            snprintf(buf, cap, "%s", v);
            rc = 0;
        }
        H5free_memory(v);
    } else if (n > 0 && n <= cap) {
        rc = H5Aread(a, t, buf) < 0 ? -1 : 0;
    }
    buf[cap - 1] = '\0';
    H5Tclose(t);
    H5Aclose(a);
    return rc;
}

/* Reads dataset in<i> into a tensor of the arena. */
static int replay_input(hid_t f, Arena *act, Replay *rp, int i, const char *path, NptErr *err) {
    char dname[16];
    snprintf(dname, sizeof dname, "in%d", i);
    hid_t ds = H5Dopen2(f, dname, H5P_DEFAULT);
    if (ds < 0) return npt_fail(err, "%s: dataset %s is missing", path, dname);
    hid_t s = H5Dget_space(ds);
    hsize_t dims[NPT_MAX_DIMS];
    int nd = H5Sget_simple_extent_ndims(s), shape[NPT_MAX_DIMS];
    int rc = -1;
    if (nd >= 1 && nd <= NPT_MAX_DIMS && H5Sget_simple_extent_dims(s, dims, NULL) == nd) {
        for (int d = 0; d < nd; d++) shape[d] = (int)dims[d];
        if (h5_read_attr_str(ds, "name", rp->names[i], sizeof rp->names[i])) snprintf(rp->names[i], 64, "%s", dname);
        rp->in[i] = tensor_new(act, rp->names[i], nd, shape);
        rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, rp->in[i]->data) < 0 ? -1 : 0;
    }
    H5Sclose(s);
    H5Dclose(ds);
    return rc ? npt_fail(err, "%s: cannot read dataset %s", path, dname) : 0;
}

static int same_size(const Tensor *a, const Tensor *b) { return tensor_rows(a) == tensor_rows(b) && tensor_cols(a) == tensor_cols(b); }

/* Why the saved inputs cannot feed the saved op (NULL if they can): the ops themselves
 * stop the process on such shapes, as on a bug, and a file edited by hand is not one. */
static const char *replay_misfit(const Replay *rp) {
    Tensor *const *in = rp->in;
    const char *op = rp->op;
    int hd = rp->head_dim, n = rp->n_in;
    for (int i = 0; i < n; i++)
        if (in[i]->ndim > 2) return "an input has more than 2 dimensions";
    if (!strcmp(op, "matmul"))
        return n == 2 && (tensor_cols(in[0]) == tensor_rows(in[1]) || tensor_cols(in[0]) == tensor_cols(in[1]))
                   ? NULL : "the matmul's inner dimensions differ";
    if (!strcmp(op, "add") || !strcmp(op, "mul") || !strcmp(op, "swiglu"))
        return n == 2 && same_size(in[0], in[1]) ? NULL : "the two inputs differ in shape";
    if (!strcmp(op, "rmsnorm")) return n == 2 && in[1]->n == (size_t)tensor_cols(in[0]) ? NULL : "the weight does not match the row width";
    if (!strcmp(op, "rope")) return hd > 0 && hd % 2 == 0 && tensor_cols(in[0]) % hd == 0 ? NULL : "head_dim does not split the rows";
    if (!strcmp(op, "attention")) {
        if (n != 3 || hd <= 0 || !same_size(in[1], in[2]) || tensor_rows(in[0]) != tensor_rows(in[1]) ||
            tensor_cols(in[0]) % hd || tensor_cols(in[1]) % hd || tensor_cols(in[1]) == 0 ||
            (tensor_cols(in[0]) / hd) % (tensor_cols(in[1]) / hd))
            return "q, k and v do not fit head_dim and one another";
        return NULL;
    }
    if (!strcmp(op, "npt_swiglu")) {
        if (n < 4 || !same_size(in[0], in[1]) || tensor_rows(in[2]) != tensor_rows(in[0])) return "gate, up and z differ in rows";
        for (int k = 3; k < n; k++)
            if (tensor_rows(in[k]) != tensor_cols(in[0]) || tensor_cols(in[k]) != tensor_cols(in[2]))
                return "a B matrix does not match the gate width and z's rank";
    }
    return NULL;
}

/* Runs the saved op; the geometry of attention and rope follows from the shapes. */
static int replay_op(Graph *g, Replay *rp, const char *path, NptErr *err) {
    Tensor **in = rp->in;
    const char *op = rp->op;
    int hd = rp->head_dim;
    const char *misfit = replay_misfit(rp);
    if (misfit) return npt_fail(err, "%s: the saved inputs of %s do not fit together (%s); the file was edited or damaged", path, op, misfit);
    if (!strcmp(op, "matmul")) /* forward matmuls are linears x W^T unless shapes chain directly */
        op_matmul(g, in[0], in[1], 0, tensor_cols(in[0]) == tensor_cols(in[1]));
    else if (!strcmp(op, "add") && rp->n_in == 2) op_add(g, in[0], in[1]);
    else if (!strcmp(op, "mul") && rp->n_in == 2) op_mul(g, in[0], in[1]);
    else if (!strcmp(op, "swiglu") && rp->n_in == 2) op_swiglu(g, in[0], in[1]);
    else if (!strcmp(op, "silu")) op_silu(g, in[0]);
    else if (!strcmp(op, "sigmoid")) op_sigmoid(g, in[0]);
    else if (!strcmp(op, "rmsnorm") && rp->n_in == 2) op_rmsnorm(g, in[0], in[1], rp->norm_eps);
    else if (!strcmp(op, "rope") && hd > 0)
        op_rope(g, in[0], 1, tensor_rows(in[0]), tensor_cols(in[0]) / hd, hd, rp->rope_theta, (RopeStyle)rp->rope_style, 0);
    else if (!strcmp(op, "attention") && rp->n_in == 3 && hd > 0)
        op_attention(g, in[0], in[1], in[2], 1, tensor_rows(in[0]), tensor_cols(in[0]) / hd, tensor_cols(in[1]) / hd, hd);
    else if (!strcmp(op, "npt_swiglu") && rp->n_in >= 4) /* gate, up, z, B_add (, B_mul in full mode) */
        op_npt_swiglu(g, in[0], in[1], in[2], in[3], rp->n_in == 5 ? in[4] : NULL, rp->scale);
    else return npt_fail(err, "%s: op %s cannot be replayed from its inputs alone (token ids or targets are not saved)", path, op);
    return 0;
}

int debug_replay(const char *path, DebugResult *r, NptErr *err) {
    memset(r, 0, sizeof *r);
    Replay rp = {0};
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through err, once */
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
    /* the inputs, the output and attention's extra data */
    size_t bytes = 1 << 20;
    for (int i = 0; i < rp.n_in; i++) {
        char dname[16];
        snprintf(dname, sizeof dname, "in%d", i);
        hid_t ds = H5Dopen2(f, dname, H5P_DEFAULT);
        if (ds < 0) break;
        hid_t s = H5Dget_space(ds);
        hssize_t n = H5Sget_simple_extent_npoints(s);
        hsize_t dims[2] = {0, 0};
        if (i == 0 && !strcmp(rp.op, "attention") && rp.head_dim > 0 && H5Sget_simple_extent_ndims(s) == 2 &&
            H5Sget_simple_extent_dims(s, dims, NULL) == 2) /* q: [T, heads x head_dim] */
            bytes += op_attention_extra_floats(1, (int)dims[0], (int)dims[1] / rp.head_dim) * sizeof(float);
        bytes += n > 0 ? 4 * (size_t)n * sizeof(float) : 0;
        H5Sclose(s);
        H5Dclose(ds);
    }
    if (arena_init(&act, bytes, "replay", err)) { /* say which file asks for it */
        NptErr why = *err;
        npt_fail(err, "%s: its inputs need %.1f MB to replay, which cannot be allocated (%s)", path,
                 (double)bytes / 1e6, why.msg);
        goto done;
    }
    if (graph_init(&g, &act, NULL, 8, err)) goto done;
    for (int i = 0; i < rp.n_in; i++)
        if (replay_input(f, &act, &rp, i, path, err)) goto done;
    g.recording = 0;
    DebugChecker c;
    debug_attach(&g, &c, r, (DebugPrecision)rp.precision);
    g.layer = rp.layer;
    rc = replay_op(&g, &rp, path, err);
done:
    H5Fclose(f);
    graph_free(&g);
    arena_free(&act);
    return rc;
}
