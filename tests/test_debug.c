/* tests/test_debug.c — the debug mode finds planted faults exactly (model/debug.h).
 * Faults are written into the loaded stories260K weights in memory; where each must be
 * reported follows from where it was planted, not from the program's output. */
#include <hdf5.h>
#include <math.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../model/debug.h"
#include "../model/ops.h"
#include "test.h"

static const char *prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";

static void test_clean(const LlamaModel *m, const int *ids, int T) {
    DebugOptions o = {0};
    DebugResult r;
    NptErr err;
    int rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found && isfinite(r.loss), "clean stories260K: no producer, finite loss %.4f", r.loss);
    int ok = 1;
    for (int i = 0; rc == 0 && i < r.n_stats; i++) ok &= !r.layers[i].nan && !r.layers[i].inf;
    check(rc == 0 && ok, "clean stories260K: every row of the layer table is OK");
    debug_result_free(&r);
    o.backward = 1;
    rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "clean stories260K with backward: no producer");
    debug_result_free(&r);
}

/* A NaN in wq of layer k must be reported at layer k, at the matmul reading it, with
 * the weight named; wq row 0 feeds output column 0 of every row, so all T positions. */
static void test_nan_weight(LlamaModel *m, const int *ids, int T, int k, const char *h5) {
    float saved = m->layers[k].wq.data[0];
    m->layers[k].wq.data[0] = NAN;
    DebugOptions o = {.save_path = h5};
    DebugResult r;
    NptErr err;
    int rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    char want[32];
    snprintf(want, sizeof want, "layers.%d.wq", k);
    const DebugProducer *p = &r.first;
    check(rc == 0 && p->found && p->layer == k && !strcmp(p->op, "matmul"),
          "NaN in %s: reported at layer %d op matmul (got layer %d op %s)", want, k, p->layer, p->op);
    check(rc == 0 && p->bad_input == 1 && !strcmp(p->in[1].name, want) && p->in[1].nan == 1,
          "NaN in %s: the weight is named as the non-finite input with 1 NaN (got %s)", want,
          p->bad_input >= 0 ? p->in[p->bad_input].name : "none");
    check(rc == 0 && p->rows_total == T && p->out.nan == (size_t)T,
          "NaN in %s: all %d token positions affected, %d NaN (got %d positions, %zu NaN)", want, T, T,
          p->rows_total, p->out.nan);
    int table_ok = rc == 0;
    for (int l = 0; rc == 0 && l < m->cfg.n_layers; l++)
        table_ok &= (l < k) == (r.layers[1 + l].nan == 0);
    check(table_ok, "NaN in %s: layer table OK below layer %d, NaN from it on", want, k);
    check(rc == 0 && r.saved, "NaN in %s: offending inputs saved to %s", want, h5);
    debug_result_free(&r);
    m->layers[k].wq.data[0] = saved;

    /* the saved file holds the weight with its NaN and names the op */
    hid_t f = H5Fopen(h5, H5F_ACC_RDONLY, H5P_DEFAULT);
    int ok = f >= 0;
    if (ok) {
        hid_t ds = H5Dopen2(f, "in1", H5P_DEFAULT);
        float *w = malloc(m->layers[k].wq.n * sizeof(float));
        ok = ds >= 0 && w && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w) >= 0 && isnan(w[0]) &&
             w[1] == m->layers[k].wq.data[1];
        free(w);
        if (ds >= 0) H5Dclose(ds);
        H5Fclose(f);
    }
    check(ok, "NaN in %s: the HDF5 file holds the weight with the NaN at [0,0]", want);
    if (rc == 0) {
        DebugResult rr;
        rc = debug_replay(h5, &rr, &err);
        check(rc == 0 && rr.first.found && !strcmp(rr.first.op, "matmul") && rr.first.bad_input == 1 &&
                  rr.first.out.nan == (size_t)T,
              "NaN in %s: replaying the saved op reproduces the report (%s)", want, rc ? err.msg : "ok");
        if (rc == 0) debug_result_free(&rr);
    }
}

/* stories260K's header, from ../shared/models/MANIFEST.md (not from the loader): the
 * shapes a report must print are derived from these. */
enum {
    S260_DIM = 64, S260_HEADS = 8, S260_KV_HEADS = 4, S260_VOCAB = 512,
    S260_KV_DIM = S260_DIM * S260_KV_HEADS / S260_HEADS /* wk, wv rows: 32 */
};

static int shape_is(const DebugStats *s, int rows, int cols) {
    return s->ndim == 2 && s->shape[0] == rows && s->shape[1] == cols;
}

/* "[a, b]" or "[a, b, ...]" of a report's stats, for messages */
static const char *shape_str(const DebugStats *s) {
    static char buf[4][48];
    static int slot;
    char *b = buf[slot++ & 3];
    int o = snprintf(b, 48, "[");
    for (int d = 0; d < s->ndim && d < NPT_MAX_DIMS && o < 40; d++)
        o += snprintf(b + o, 48 - o, d ? ", %d" : "%d", s->shape[d]);
    snprintf(b + o, 48 - o, "]");
    return b;
}

/* The printed report of r, for substring checks. */
static void report_text(const DebugResult *r, const int *ids, char *buf, size_t size) {
    buf[0] = 0;
    FILE *f = fmemopen(buf, size - 1, "w");
    if (!f) return;
    debug_print_producer(f, r, ids);
    fclose(f);
}

/* An Inf (not a NaN) in wk of layer k: wk is [kv_dim, dim] = [64 * 4 / 8, 64] = [32, 64],
 * not square, so a transposed shape shows. It must be reported at layer k's matmul reading
 * it (q's matmul comes first and is finite), as 1 Inf and 0 NaN in input 1; the matmul
 * reads the attention norm's output [T, 64] and writes [T, 32]. Row t of the output,
 * column 0, is x[t] . wk[0] = x[t][0] * Inf + finite terms: an Inf (x[t][0] is a nonzero
 * rmsnorm output), so T Inf, 0 NaN, every position. */
static void test_inf_weight(LlamaModel *m, const int *ids, int T, int k) {
    float saved = m->layers[k].wk.data[0];
    m->layers[k].wk.data[0] = INFINITY;
    DebugOptions o = {0};
    DebugResult r;
    NptErr err;
    int rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    m->layers[k].wk.data[0] = saved;
    char want[32];
    snprintf(want, sizeof want, "layers.%d.wk", k);
    const DebugProducer *p = &r.first;
    if (rc) {
        check(0, "Inf in %s: debug_run: %s", want, err.msg);
        return;
    }
    check(p->found && !p->backward && p->layer == k && !strcmp(p->op, "matmul") && p->n_in == 2,
          "Inf in %s: reported at layer %d op matmul with 2 inputs (got layer %d op %s, %d inputs)", want, k, p->layer,
          p->op, p->n_in);
    check(p->bad_input == 1 && !strcmp(p->in[1].name, want) && p->in[1].inf == 1 && p->in[1].nan == 0,
          "Inf in %s: the weight is named as the non-finite input with 1 Inf, 0 NaN (got %s, %zu Inf, %zu NaN)", want,
          p->bad_input >= 0 ? p->in[p->bad_input].name : "none", p->in[1].inf, p->in[1].nan);
    check(p->out.inf == (size_t)T && p->out.nan == 0 && p->rows_total == T,
          "Inf in %s: output has %d Inf and 0 NaN at all %d positions (got %zu Inf, %zu NaN, %d positions)", want, T, T,
          p->out.inf, p->out.nan, p->rows_total);
    check(shape_is(&p->in[1], S260_KV_DIM, S260_DIM) && shape_is(&p->in[0], T, S260_DIM) &&
              shape_is(&p->out, T, S260_KV_DIM),
          "Inf in %s: shapes weight [%d, %d], activation [%d, %d], output [%d, %d] (got %s, %s, %s)", want, S260_KV_DIM,
          S260_DIM, T, S260_DIM, T, S260_KV_DIM, shape_str(&p->in[1]), shape_str(&p->in[0]), shape_str(&p->out));
    char buf[8192], line[3][128];
    report_text(&r, ids, buf, sizeof buf);
    snprintf(line[0], sizeof line[0], "output %s [%d, %d]: 0 NaN, %d Inf\n", p->out.name, T, S260_KV_DIM, T);
    snprintf(line[1], sizeof line[1], "cause: input %s was already non-finite (0 NaN, 1 Inf)\n", want);
    snprintf(line[2], sizeof line[2], "input 1 %s [%d, %d]: ", want, S260_KV_DIM, S260_DIM);
    check(strstr(buf, line[0]) && strstr(buf, line[1]) && strstr(buf, line[2]),
          "Inf in %s: the printed report shows the output's shape and Inf count, the cause and the weight's shape "
          "(\"%.*s\" ...)", want, (int)strcspn(strstr(buf, "  output") ? strstr(buf, "  output") + 2 : buf, "\n"),
          strstr(buf, "  output") ? strstr(buf, "  output") + 2 : buf);
    debug_result_free(&r);
}

/* A -Inf in the input: the embedding row of X, the prompt's most frequent token, gets
 * one -Inf. Reported outside the layers (-1), op embedding, input 0 the table tok_emb of
 * shape [vocab, dim] = [512, 64] with 1 Inf; output [T, 64] holding one Inf per
 * occurrence of X, at exactly those positions. */
static void test_inf_embedding(LlamaModel *m, const int *ids, int T) {
    int X = ids[0], occ = 0, pos[256], pos_ok;
    for (int t = 0, best = 0; t < T; t++) {
        int n = 0;
        for (int u = 0; u < T; u++) n += ids[u] == ids[t];
        if (n > best) best = n, X = ids[t];
    }
    for (int t = 0; t < T; t++)
        if (ids[t] == X) pos[occ++] = t;
    float *row = m->tok_emb.data + (size_t)X * S260_DIM, saved = row[5];
    row[5] = -INFINITY;
    DebugOptions o = {0};
    DebugResult r;
    NptErr err;
    int rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    row[5] = saved;
    if (rc) {
        check(0, "-Inf in tok_emb: debug_run: %s", err.msg);
        return;
    }
    const DebugProducer *p = &r.first;
    pos_ok = p->rows_total == occ && p->n_rows == occ;
    for (int i = 0; pos_ok && i < occ; i++) pos_ok &= p->rows[i] == pos[i];
    check(p->found && p->layer == -1 && !strcmp(p->op, "embedding") && p->bad_input == 0 && !strcmp(p->in[0].name, "tok_emb") &&
              p->in[0].inf == 1 && p->in[0].nan == 0,
          "-Inf in the embedding row of token %d: reported outside the layers, op embedding, input tok_emb with 1 Inf "
          "(got layer %d op %s, input %s, %zu Inf, %zu NaN)", X, p->layer, p->op,
          p->bad_input >= 0 ? p->in[p->bad_input].name : "none", p->in[0].inf, p->in[0].nan);
    check(p->out.inf == (size_t)occ && p->out.nan == 0 && pos_ok,
          "-Inf in the embedding row of token %d: %d Inf, 0 NaN, at the %d positions holding it (got %zu Inf, %zu NaN, "
          "%d positions)", X, occ, occ, p->out.inf, p->out.nan, p->rows_total);
    check(r.n_stats > 0 && !strcmp(debug_layer_state(&r.layers[0]), "Inf") && r.layers[0].inf == (size_t)occ &&
              r.layers[0].nan == 0,
          "-Inf in tok_emb: the layer table's embedding row reads Inf with %d Inf, 0 NaN (got %s, %zu Inf, %zu NaN)", occ,
          r.n_stats > 0 ? debug_layer_state(&r.layers[0]) : "no table", r.n_stats > 0 ? r.layers[0].inf : 0,
          r.n_stats > 0 ? r.layers[0].nan : 0);
    check(shape_is(&p->in[0], S260_VOCAB, S260_DIM) && shape_is(&p->out, T, S260_DIM),
          "-Inf in tok_emb: shapes table [%d, %d], output [%d, %d] (got %s, %s)", S260_VOCAB, S260_DIM, T, S260_DIM,
          shape_str(&p->in[0]), shape_str(&p->out));
    char buf[8192], line[2][128];
    report_text(&r, ids, buf, sizeof buf);
    snprintf(line[0], sizeof line[0], "output %s [%d, %d]: 0 NaN, %d Inf\n", p->out.name, T, S260_DIM, occ);
    snprintf(line[1], sizeof line[1], "input 0 tok_emb [%d, %d]: ", S260_VOCAB, S260_DIM);
    const char *o_at = strstr(buf, "  output ");
    check(strstr(buf, line[0]) && strstr(buf, line[1]) && strstr(buf, "outside the layers, op embedding"),
          "-Inf in tok_emb: the printed report shows output [%d, %d] with %d Inf and input 0 tok_emb [%d, %d] (\"%.*s\")", T,
          S260_DIM, occ, S260_VOCAB, S260_DIM, o_at ? (int)strcspn(o_at + 2, "\n") : 0, o_at ? o_at + 2 : "");
    debug_result_free(&r);
}

/* Scaling the ffn_norm of layer k by 1000 makes the MLP of layer k produce values far
 * above 65504 but well inside float32 and bf16: only fp16 may fail, and at layer k. */
static void test_fp16_overflow(LlamaModel *m, const int *ids, int T, int k) {
    Tensor *w = &m->layers[k].ffn_norm;
    for (size_t i = 0; i < w->n; i++) w->data[i] *= 1000.0f;
    DebugOptions o = {0};
    DebugResult r;
    NptErr err;
    int rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "ffn_norm x1000 at layer %d: clean in float32", k);
    if (rc == 0) debug_result_free(&r);
    o.precision = DEBUG_BF16;
    rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "ffn_norm x1000 at layer %d: clean in bf16 (range 3.4e38)", k);
    if (rc == 0) debug_result_free(&r);
    o.precision = DEBUG_FP16;
    size_t bad = debug_round_weights(m, NULL, DEBUG_FP16);
    check(bad == 0, "stories260K weights (ffn_norm x1000) fit fp16 (%zu overflowed)", bad);
    rc = debug_run(m, NULL, ids, T, &o, &r, &err);
    const DebugProducer *p = &r.first;
    check(rc == 0 && p->found && p->overflow && p->layer == k && p->raw_absmax > 65504.0f && p->bad_input < 0,
          "ffn_norm x1000 at layer %d: fp16 overflow found at layer %d op %s, values up to %.3g", k, p->layer, p->op,
          p->raw_absmax);
    if (rc == 0) debug_result_free(&r);
}

/* logits of 1e4 over a 152064-token vocabulary: exp overflows float32, the stable
 * cross-entropy must not. Target logit 1e4 + 5, others 1e4:
 * loss = log(V - 1 + e^5) - 5 by hand. */
static void test_stable_ce(void) {
    enum { V = 152064, N = 4 };
    Arena act;
    Graph g;
    NptErr err;
    if (arena_init(&act, (size_t)N * V * 4 + (1 << 20), "ce", &err) || graph_init(&g, &act, NULL, 16, &err)) {
        check(0, "stable CE setup: %s", err.msg);
        return;
    }
    DebugResult r = {0};
    Tensor *logits = tensor_new2(&act, "logits", N, V);
    int targets[N] = {7, 100, 151000, 3};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < V; j++) logits->data[(size_t)i * V + j] = j == targets[i] ? 1e4f + 5.0f : 1e4f;
    /* the checker of debug_run on the loss alone */
    DebugChecker c;
    debug_attach(&g, &c, &r, DEBUG_F32);
    Tensor *loss = op_cross_entropy(&g, logits, targets);
    double want = log((double)(V - 1) + exp(5.0)) - 5.0;
    check(!isfinite(expf(1e4f)), "float32 exp(1e4) overflows, so a naive sum would");
    check(!r.first.found && fabs(loss->data[0] - want) < 1e-3,
          "cross-entropy of logits 1e4 over %d tokens: no false report, loss %.5f (hand: %.5f)", V, loss->data[0], want);
    graph_free(&g);
    arena_free(&act);
}

/* The trainer's hook: a batch of 3 sequences where only sequence 1 holds token X,
 * whose embedding row gets a NaN. The table is tied to the logits, so every sequence
 * fails, but only sequence 1 at the embedding (the others at the logits matmul). */
static void test_report_batch(LlamaModel *m, const int *ids, int T) {
    int X = ids[2], *batch = malloc((size_t)3 * T * sizeof(int));
    if (!batch) return;
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < T; t++) batch[b * T + t] = b == 1 || ids[t] != X ? ids[t] : X + 1;
    float *row = m->tok_emb.data + (size_t)X * m->cfg.dim, saved = row[0];
    row[0] = NAN;
    NptErr err;
    int64_t sids[3] = {10, 11, 12};
    int n = debug_report_batch(m, NULL, NULL, 0, batch, 3, T, sids, "build/tests/debug_step99", &err);
    row[0] = saved;
    char *txt = n >= 0 ? npt_read_file("build/tests/debug_step99.txt", NULL, &err) : NULL;
    const char *emb = txt ? strstr(txt, "op embedding") : NULL, *seq1 = txt ? strstr(txt, "(sample 11)") : NULL;
    const char *seq2 = txt ? strstr(txt, "(sample 12)") : NULL;
    check(n == 3 && emb && seq1 && seq2 && emb > seq1 && emb < seq2 && !strstr(emb + 1, "op embedding") &&
              strstr(txt, "build/tests/debug_step99.h5"),
          "debug_report_batch: 3 failing, only sample 11 at the embedding; inputs saved (%d failing)", n);
    free(txt);
    free(batch);
}

/* NPT path: a NaN in the B_add of the adapter at layer k is found at layer k, at the
 * matmul z B_add^T that reads it, with the adapter tensor named. */
static void test_npt_adapter(const LlamaModel *m, const int *ids, int T, int k) {
    NptModel n;
    NptErr err;
    NptConfig cfg = {.rank = 4, .modulation_scale = 1.0f, .layer_mode = NPT_LAYERS_ALL, .init_a_std = 0.02f,
                     .init_b_add_std = 0.02f, .init_b_mul_std = 0.02f};
    if (npt_create(&n, m, &cfg, &err)) {
        check(0, "npt_create: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &cfg, 7);
    DebugOptions o = {.backward = 1};
    DebugResult r;
    int rc = debug_run(m, &n, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "NPT (all layers, rank 4) with backward: no producer");
    if (rc == 0) debug_result_free(&r);
    /* a previous run's NaN gradients (a skipped step, the float32 run before a reduced
     * precision one) would be blamed on the first op adding to them, unless zeroed */
    for (size_t i = 0; i < n.n_params; i++) n.grads[i] = NAN;
    rc = debug_run(m, &n, ids, T, &o, &r, &err);
    check(rc == 0 && r.first.found && r.first.backward, "NaN gradients left in the block, not handed over: blamed in backward");
    if (rc == 0) debug_result_free(&r);
    for (size_t i = 0; i < n.n_params; i++) n.grads[i] = NAN;
    o.grads = n.grads, o.n_grads = n.n_params;
    rc = debug_run(m, &n, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "NaN gradients in the block handed over: zeroed first, no producer");
    if (rc == 0) debug_result_free(&r);
    n.adapters[n.adapter_of_layer[k]].B_add.data[0] = NAN;
    rc = debug_run(m, &n, ids, T, &o, &r, &err);
    const DebugProducer *p = &r.first;
    check(rc == 0 && p->found && !p->backward && p->layer == k && !strcmp(p->op, "npt_swiglu") && p->bad_input == 3 &&
              !strcmp(p->in[3].name, "B_add"),
          "NaN in the B_add of layer %d: found at layer %d op %s, input %s", k, p->layer, p->op,
          p->bad_input >= 0 ? p->in[p->bad_input].name : "none");
    if (rc == 0) debug_result_free(&r);
    npt_free(&n);
}

/* The pre-SPEC factor tanh(d_raw) with B_mul = 0 in layer k switches layer k's gate off;
 * the checker must name that op and layer, and the SPEC factor on the same adapters must
 * raise nothing. B_mul of the other layers is nonzero, so their factors are not 0. */
static void test_zero_factor(const LlamaModel *m, const int *ids, int T, int k) {
    NptModel n;
    NptErr err;
    NptConfig cfg = {.rank = 4, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_ALL, .init_a_std = 0.02f,
                     .init_b_add_std = 0.001f, .init_b_mul_std = 0.02f};
    if (npt_create(&n, m, &cfg, &err)) {
        check(0, "npt_create: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &cfg, 11);
    Tensor *bm = &n.adapters[n.adapter_of_layer[k]].B_mul;
    memset(bm->data, 0, bm->n * sizeof(float));
    DebugOptions o = {0};
    DebugResult r;
    int rc = debug_run(m, &n, ids, T, &o, &r, &err);
    check(rc == 0 && !debug_found(&r), "B_mul = 0 in layer %d with the SPEC factor: nothing to report (factor 0.75)", k);
    if (rc == 0) debug_result_free(&r);
    n.test_tanh_mul = 1;
    rc = debug_run(m, &n, ids, T, &o, &r, &err);
    const DebugZeroFactor *z = &r.zero_factor;
    size_t want = (size_t)T * (size_t)m->cfg.hidden_dim;
    check(rc == 0 && z->found && z->layer == k && !strcmp(z->op, "npt_modulate_tanh") && z->zeros == want &&
              z->rows_total == T && !r.first.found,
          "legacy tanh factor, B_mul = 0 in layer %d: zero factor found at layer %d op %s, %zu of %zu zeros (want all %zu), "
          "%d positions; no NaN reported", k, z->layer, z->op, z->zeros, z->n, want, z->rows_total);
    if (rc == 0) {
        char buf[4096] = "";
        FILE *f = fmemopen(buf, sizeof buf - 1, "w");
        if (f) {
            debug_print_producer(f, &r, ids);
            fclose(f);
        }
        check(strstr(buf, "modulation factor reached zero: layer") != NULL, "the report says the factor reached zero");
        debug_result_free(&r);
    }
    npt_free(&n);
}

/* Reads dataset name of the HDF5 file path (n floats) into x; 0 on success. */
static int read_saved(const char *path, const char *name, float *x, size_t n) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = f < 0 ? -1 : H5Dopen2(f, name, H5P_DEFAULT);
    hid_t sp = ds < 0 ? -1 : H5Dget_space(ds);
    int ok = sp >= 0 && (size_t)H5Sget_simple_extent_npoints(sp) == n &&
             H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0;
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return ok ? 0 : -1;
}

/* d_add = z B_add^T exists only inside the fused npt_swiglu op. With A and B_add of
 * layer k scaled up and s scaled down, d_add leaves fp16's range while z, B_add and the
 * op's output s d_add do not: an fp16 run of the unfused SPEC ops overflows at d_add,
 * so the checker must too, and name it. The expected maximum is recomputed here in
 * double from the op's saved inputs z and B_add. */
static void test_fp16_inner_overflow(const LlamaModel *m, const int *ids, int T, int k, const char *h5) {
    NptModel n;
    NptErr err;
    NptConfig cfg = {.rank = 4, .modulation_scale = 1e-4f, .layer_mode = NPT_LAYERS_ALL, .init_a_std = 0.02f,
                     .init_b_add_std = 0.02f, .init_b_mul_std = 0.02f};
    if (npt_create(&n, m, &cfg, &err)) {
        check(0, "npt_create: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &cfg, 5);
    NptAdapter *ad = &n.adapters[n.adapter_of_layer[k]];
    for (size_t i = 0; i < ad->A.n; i++) ad->A.data[i] *= 5000.0f;     /* std 100 */
    for (size_t i = 0; i < ad->B_add.n; i++) ad->B_add.data[i] *= 2500.0f; /* std 50 */
    DebugOptions o = {.save_path = h5};
    DebugResult r;
    int rc = debug_run(m, &n, ids, T, &o, &r, &err);
    check(rc == 0 && !r.first.found, "A, B_add of layer %d x5000, x2500, s = 1e-4: clean in float32", k);
    if (rc == 0) debug_result_free(&r);
    o.precision = DEBUG_FP16;
    size_t bad = debug_round(n.params, n.n_params, DEBUG_FP16, NULL); /* the base stays float32: later tests use it */
    rc = debug_run(m, &n, ids, T, &o, &r, &err);
    const DebugProducer *p = &r.first;
    check(rc == 0 && bad == 0 && p->found && p->layer == k && !strcmp(p->op, "npt_swiglu") && p->bad_input < 0 &&
              p->overflow && !strncmp(p->inner, "d_add", 5),
          "fp16, d_add of layer %d out of range: found at layer %d op %s, inside it '%s' (%zu adapter weights overflowed)",
          k, p->layer, p->op, p->inner, bad);
    int r_ = n.rank, f = m->cfg.hidden_dim;
    float *z = malloc((size_t)T * r_ * sizeof(float)), *b = malloc((size_t)f * r_ * sizeof(float));
    double dmax = 0, zmax = 0, bmax = 0;
    int read = rc == 0 && r.saved && z && b && !read_saved(h5, "in2", z, (size_t)T * r_) &&
               !read_saved(h5, "in3", b, (size_t)f * r_);
    for (int t = 0; read && t < T; t++)
        for (int j = 0; j < f; j++) {
            double acc = 0;
            for (int i = 0; i < r_; i++) acc += (double)z[t * r_ + i] * b[j * r_ + i];
            dmax = fmax(dmax, fabs(acc));
        }
    for (int i = 0; read && i < T * r_; i++) zmax = fmax(zmax, fabs(z[i]));
    for (int i = 0; read && i < f * r_; i++) bmax = fmax(bmax, fabs(b[i]));
    check(read && zmax < 65504 && bmax < 65504 && dmax > 65504 && fabs(p->raw_absmax - dmax) <= 1e-3 * dmax,
          "the saved inputs z (max %.4g) and B_add (max %.4g) fit fp16, their product reaches %.6g (report: %.6g)", zmax,
          bmax, dmax, p->raw_absmax);
    char buf[4096] = "";
    FILE *rf = rc == 0 ? fmemopen(buf, sizeof buf - 1, "w") : NULL;
    if (rf) {
        debug_print_producer(rf, &r, ids);
        fclose(rf);
    }
    check(strstr(buf, "cause: inside the op, d_add = z B_add^T reaches") != NULL, "the report names d_add as the cause");
    DebugResult rr;
    int rrc = rc == 0 && r.saved ? debug_replay(h5, &rr, &err) : -1;
    check(rrc == 0 && rr.first.found && !strcmp(rr.first.op, "npt_swiglu") && !strncmp(rr.first.inner, "d_add", 5),
          "replaying the saved npt_swiglu in fp16 finds d_add again (%s)", rrc ? err.msg : rr.first.inner);
    if (rrc == 0) debug_result_free(&rr);
    free(z);
    free(b);
    if (rc == 0) debug_result_free(&r);
    npt_free(&n);
}

/* Random weights of the stories15M shape (dim 288, hidden 768, 6 layers, 6 heads,
 * vocab 32000): the cost figure the issue asks for. */
static int random_15m(LlamaModel *m, NptErr *err) {
    memset(m, 0, sizeof *m);
    m->cfg = (LlamaConfig){.dim = 288, .hidden_dim = 768, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6,
                           .head_dim = 48, .vocab_size = 32000, .seq_len = 256, .norm_eps = 1e-5f,
                           .rope_theta = 10000.0f, .rope = ROPE_INTERLEAVED, .tied = 1, .bos_id = 1, .eos_id = 2};
    if (llama_alloc_weights(m, err)) return -1;
    uint64_t s = 42;
    for (size_t i = 0; i < m->weights_floats; i++) { /* uniform, std 0.02 */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        m->weights_block[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.0693f;
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int i = 0; i < m->cfg.dim; i++) m->layers[l].attn_norm.data[i] = m->layers[l].ffn_norm.data[i] = 1.0f;
    for (int i = 0; i < m->cfg.dim; i++) m->final_norm.data[i] = 1.0f;
    return 0;
}

/* Seconds per forward (embedding, layers, logits) on g, best of reps. */
static double time_forward(Graph *g, const LlamaModel *m, const int *ids, int T, int reps) {
    double best = 1e30;
    for (int rep = 0; rep < reps; rep++) {
        graph_reset(g);
        double t0 = npt_now_seconds();
        Tensor *h = llama_embed(g, m, ids, T);
        for (int l = 0; l < m->cfg.n_layers; l++) h = llama_layer(g, m, l, h, 1, T);
        llama_logits(g, m, h);
        double dt = npt_now_seconds() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* The checker's overhead: the same forward on the same warm arena, without and with
 * the observer (and with fp16 rounding). Printed, not asserted: timing is noisy. */
static void note_cost(const char *what, const LlamaModel *m, const int *ids, int T, int reps) {
    Arena act;
    Graph g;
    NptErr err;
    if (arena_init(&act, llama_activation_bytes(&m->cfg, 1, T, 1), "plain", &err) ||
        graph_init(&g, &act, NULL, 64 * m->cfg.n_layers + 64, &err))
        return;
    g.recording = 0;
    time_forward(&g, m, ids, T, 1); /* fault the arena's pages in */
    double plain = time_forward(&g, m, ids, T, reps);
    DebugResult r;
    DebugChecker c;
    debug_attach(&g, &c, &r, DEBUG_F32);
    double checked = time_forward(&g, m, ids, T, reps);
    debug_attach(&g, &c, &r, DEBUG_FP16);
    double fp16 = time_forward(&g, m, ids, T, reps);
    printf("NOTE: %s forward of %d tokens: plain %.2f ms, checked %.2f ms (%.2fx), checked+fp16 rounding %.2f ms (%.2fx)\n",
           what, T, 1e3 * plain, 1e3 * checked, checked / plain, 1e3 * fp16, fp16 / plain);
    graph_free(&g);
    arena_free(&act);
}

/* debug_round against util's converters (the loaders' reference) on values spread
 * over every exponent, ties and the fp16 overflow and subnormal edges. */
static void test_rounding(void) {
    uint64_t st = 1;
    int bad16 = 0, bad_bf = 0, n = 0;
    float edge[] = {65504.0f, 65519.99f, 65520.0f, -65520.0f, 6.1035156e-05f, 6.1e-05f, 2.9802322e-08f,
                    5.96e-08f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 3.3895314e38f, 0.0f, -0.0f};
    for (int i = 0; i < 200000 + (int)NPT_ARRAY_LEN(edge); i++) {
        float v;
        if (i < (int)NPT_ARRAY_LEN(edge)) v = edge[i];
        else {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t b = (uint32_t)(st >> 32);
            memcpy(&v, &b, 4);
            if (!isfinite(v)) continue;
        }
        float a = v, b = v;
        debug_round(&a, 1, DEBUG_FP16, NULL);
        debug_round(&b, 1, DEBUG_BF16, NULL);
        float ra = npt_f16_to_f32(npt_f32_to_f16(v)), rb = npt_bf16_to_f32(npt_f32_to_bf16(v));
        bad16 += memcmp(&a, &ra, 4) != 0;
        bad_bf += memcmp(&b, &rb, 4) != 0;
        n++;
    }
    check(!bad16 && !bad_bf, "precision rounding matches util's converters on %d values (%d fp16, %d bf16 mismatches)", n,
          bad16, bad_bf);
}

int main(void) {
    LlamaModel m;
    NptErr err;
    if (llama_load(shared_path("models/stories260K/stories260K.bin"), &m, &err)) {
        check(0, "load stories260K: %s", err.msg);
        return test_finish();
    }
    Tokenizer *tok = tokenizer_load(shared_path("models/stories260K/tok512.bin"), m.cfg.vocab_size, &err);
    int ids[256];
    int T = tok ? tokenizer_encode(tok, prompt, 1, ids, 256, &err) : -1;
    check(T > 8 && T <= 256, "prompt encodes to %d tokens", T);
    if (T > 8 && T <= 256) {
        test_clean(&m, ids, T);
        test_nan_weight(&m, ids, T, 0, "build/tests/debug_nan_l0.h5");
        test_nan_weight(&m, ids, T, 3, "build/tests/debug_nan_l3.h5");
        check(m.cfg.dim == S260_DIM && m.cfg.n_heads == S260_HEADS && m.cfg.n_kv_heads == S260_KV_HEADS &&
                  m.cfg.vocab_size == S260_VOCAB,
              "stories260K loads with the MANIFEST's dim %d, %d heads, %d kv heads, vocab %d", S260_DIM, S260_HEADS,
              S260_KV_HEADS, S260_VOCAB);
        /* the first 21 tokens: a length unlike any model dimension (64, 32, 172, 512), so
         * a swapped or transposed shape shows */
        int T21 = T < 21 ? T : 21;
        test_inf_weight(&m, ids, T21, 2);
        test_inf_embedding(&m, ids, T21);
        test_npt_adapter(&m, ids, T, 1);
        test_zero_factor(&m, ids, T, 2);
        test_fp16_inner_overflow(&m, ids, T, 3, "build/tests/debug_inner_fp16.h5");
        test_report_batch(&m, ids, T);
        note_cost("stories260K", &m, ids, T, 20);
        test_fp16_overflow(&m, ids, T, 2); /* last: rounds the weights */
    }
    test_stable_ce();
    test_rounding();
    LlamaModel big;
    if (random_15m(&big, &err) == 0) {
        int ids15[256];
        for (int i = 0; i < 256; i++) ids15[i] = (i * 7919 + 1) % 32000;
        note_cost("random stories15M-shape", &big, ids15, 256, 5);
        llama_free(&big);
    }
    tokenizer_free(tok);
    llama_free(&m);
    return test_finish();
}
