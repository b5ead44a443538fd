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
    int n = debug_report_batch(m, NULL, batch, 3, T, sids, "build/tests/debug_step99", &err);
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
        test_npt_adapter(&m, ids, T, 1);
        test_zero_factor(&m, ids, T, 2);
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
