/* tests/test_eval.c — train/eval.c: stable cross-entropy and agreement with the training
 * objective's own code path.
 *   1. eval_token_nll on huge logits (150k vocabulary, |logits| up to 3e38) against
 *      hand-derived values: no overflow, the exact finite answer.
 *   2. On stories260K with full-mode adapters (layers 1..4, B_mul non-zero): the mean e2e
 *      NMSE equals the distillation fidelity of train/objective.c on the same windows, and
 *      the base / NPT cross-entropies equal the lm objective's op_cross_entropy, a
 *      different implementation, without the target after each window's BOS; the figures do not depend on the eval batch size;
 *      cosine and NMSE obey their identity cos = 1 - d NMSE / 2.
 *   3. A model that makes non-finite logits: eval_run names the first window affected, for
 *      the base and the NPT model apart (a NaN planted in memory in the embedding row of a
 *      token only window 3 holds, then in one adapter's B_add); none for finite models.
 *   4. Bad input: a token outside the vocabulary, windows of one or two tokens (no
 *      scored target). */
#include <math.h>
#include <string.h>

#include "model/npt.h"
#include "test.h"
#include "train/eval.h"
#include "train/objective.h"

#define V_BIG 150000

static void huge_logits(void) {
    float *x = npt_xmalloc(V_BIG * sizeof(float), "logits");
    double want, got;
    for (int j = 0; j < V_BIG; j++) x[j] = 3e38f;
    got = eval_token_nll(x, V_BIG, 7);
    want = log((double)V_BIG); /* all equal: uniform */
    check(fabs(got - want) < 1e-9, "nll, 150k logits all 3e38: %.12f, want log(V) = %.12f", got, want);
    for (int j = 0; j < V_BIG; j++) x[j] = -3e38f;
    got = eval_token_nll(x, V_BIG, 7);
    check(fabs(got - want) < 1e-9, "nll, 150k logits all -3e38: %.12f, want log(V) = %.12f", got, want);
    for (int j = 0; j < V_BIG; j++) x[j] = 2.9e38f;
    x[123] = 3e38f; /* target ahead by 1e37: probability 1 */
    got = eval_token_nll(x, V_BIG, 123);
    check(got == 0.0, "nll, target logit 3e38 vs 2.9e38 elsewhere: %g, want 0", got);
    for (int j = 0; j < V_BIG; j++) x[j] = 1000.0f;
    x[5] = 1003.0f;
    got = eval_token_nll(x, V_BIG, 5);
    want = log(1.0 + (V_BIG - 1) * exp(-3.0)); /* e^1003 / (e^1003 + (V-1) e^1000) */
    check(fabs(got - want) < 1e-9, "nll, target 1003 vs 1000 elsewhere (exp(1000) overflows float and double): %.12f, want %.12f", got, want);
    x[5] = 1000.0f;
    x[9] = 10000.0f;
    got = eval_token_nll(x, V_BIG, 5);
    want = 9000.0; /* log(e^10000 + (V-1) e^1000) - 1000 = 9000 + log(1 + (V-1) e^-9000) */
    check(fabs(got - want) < 1e-9 * want, "nll, target 1000 while one logit is 10000: %.9f, want 9000", got);
    free(x);
}

static ObjectiveValues objective(const LlamaModel *m, const NptModel *n, const int *tokens, int B, int T, int distill) {
    NptErr err;
    ObjectiveConfig oc = {.distill = distill, .lambda = 0.0f, .train_all_weights = n == NULL};
    ObjectiveRunner runner;
    if (objective_init(&runner, m, n, &oc, B, T, 1, &err)) npt_die("%s", err.msg);
    runner.forward_only = 1;
    ObjectiveValues v = objective_step(&runner, m, n, &oc, tokens, NULL, 1.0f, 0);
    objective_free(&runner);
    return v;
}

/* NaNs planted in memory (the loaders refuse them in files): the first window whose NLL
 * is not finite is named, per model; batches of 2, so window 3 is in the second batch. */
static void non_finite_windows(LlamaModel *m, NptModel *n, int *tokens, int B, int T) {
    int t = 0, seen[512] = {0};
    for (int i = 0; i < B * T; i++) seen[tokens[i]] = 1;
    while (t < m->cfg.vocab_size && seen[t]) t++;
    if (t == m->cfg.vocab_size || t >= 512) {
        check(0, "a token id none of the windows holds");
        return;
    }
    /* stories260K ties the classifier to the embedding: untie it for the test, so the NaN
     * is on the input side only (a NaN logit column would hit every window) */
    float *tied = m->lm_head.data, *head = npt_xmalloc(m->tok_emb.n * sizeof(float), "untied classifier");
    memcpy(head, tied, m->tok_emb.n * sizeof(float));
    m->lm_head.data = head;
    int saved_token = tokens[3 * T + 5];
    float *row = m->tok_emb.data + (size_t)t * m->cfg.dim, saved_emb = row[7];
    tokens[3 * T + 5] = t, row[7] = NAN;
    EvalResult r;
    NptErr err;
    if (eval_run(m, n, tokens, B, T, 2, &r, &err)) {
        check(0, "eval_run with a NaN embedding row: %s", err.msg);
    } else {
        check(r.bad_window_base == 3 && r.bad_window_npt == 3 && isnan(r.ce_base),
              "a NaN in the embedding of a token only window 3 holds: window %d (base), %d (NPT) named", r.bad_window_base,
              r.bad_window_npt);
        eval_result_free(&r);
    }
    tokens[3 * T + 5] = saved_token, row[7] = saved_emb;
    m->lm_head.data = tied;
    free(head);
    float *b_add = n->adapters[n->adapter_of_layer[3]].B_add.data, saved_b = b_add[11];
    b_add[11] = NAN;
    if (eval_run(m, n, tokens, B, T, 2, &r, &err)) {
        check(0, "eval_run with a NaN in B_add: %s", err.msg);
    } else {
        check(r.bad_window_base == -1 && r.bad_window_npt == 0 && isfinite(r.ce_base),
              "a NaN in layer 3's B_add: the NPT model from window %d, the base model %d (none)", r.bad_window_npt,
              r.bad_window_base);
        eval_result_free(&r);
    }
    b_add[11] = saved_b;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }

static void against_objective(void) {
    LlamaModel m;
    NptModel n;
    NptErr err;
    int list[4] = {1, 2, 3, 4};
    NptConfig nc = {.rank = 8, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_LIST, .layer_list = list,
                    .n_layer_list = 4, .init_a_std = 0.05f, .init_b_add_std = 0.05f, .init_b_mul_std = 0.05f};
    if (llama_load(shared_path("models/stories260K/stories260K.bin"), &m, &err) || npt_create(&n, &m, &nc, &err)) {
        check(0, "load stories260K and create adapters: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &nc, 3);
    enum { B = 5, T = 48 };
    int tokens[B * T];
    uint64_t s = 12345;
    for (int i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = i % T == 0 ? m.cfg.bos_id : (int)((s >> 33) % (uint64_t)m.cfg.vocab_size);
    }
    EvalResult r2, r5;
    if (eval_run(&m, &n, tokens, B, T, 2, &r2, &err) || eval_run(&m, &n, tokens, B, T, 5, &r5, &err)) {
        check(0, "eval_run: %s", err.msg);
        return;
    }
    ObjectiveValues fid = objective(&m, &n, tokens, B, T, 1);
    check(rel(r2.nmse_e2e_mean, fid.fidelity) < 1e-5, "mean e2e NMSE %.9g = distillation fidelity %.9g",
          r2.nmse_e2e_mean, fid.fidelity);
    /* eval does not score the token after each window's BOS: its NLL is the lm
     * objective's over the first two tokens of each window alone (causal attention:
     * position 0 sees nothing else), taken out of the objective's over all T-1 */
    int pairs[B * 2];
    for (int b = 0; b < B; b++) pairs[2 * b] = tokens[b * T], pairs[2 * b + 1] = tokens[b * T + 1];
    double want[2];
    for (int k = 0; k < 2; k++) {
        const NptModel *with = k ? NULL : &n;
        double all = objective(&m, with, tokens, B, T, 0).fidelity * B * (T - 1);
        double first = objective(&m, with, pairs, B, 2, 0).fidelity * B;
        want[k] = (all - first) / (B * (T - 2));
    }
    check(rel(r2.ce_npt, want[0]) < 1e-5 && rel(r2.ce_base, want[1]) < 1e-5,
          "cross-entropy npt %.9g base %.9g = op_cross_entropy's over positions 1..T-2: %.9g / %.9g", r2.ce_npt,
          r2.ce_base, want[0], want[1]);
    check(fabs(r2.ppl_npt - exp(r2.ce_npt)) < 1e-9 * r2.ppl_npt && r2.n_targets == B * (T - 2),
          "ppl = exp(ce) over %lld = B x (T-2) scored positions", r2.n_targets);
    double worst = rel(r2.ce_npt, r5.ce_npt);
    for (int l = 0; l < m.cfg.n_layers; l++) {
        EvalLayer *a = &r2.layers[l], *b = &r5.layers[l];
        double d[] = {rel(a->nmse_e2e + 1e-30, b->nmse_e2e + 1e-30), rel(a->cos_e2e, b->cos_e2e)};
        for (size_t k = 0; k < NPT_ARRAY_LEN(d); k++) worst = fmax(worst, d[k]);
        if (a->is_npt) {
            double e[] = {rel(a->nmse_local, b->nmse_local), rel(a->dw_fro_mean, b->dw_fro_mean),
                          rel(a->d_add_max, b->d_add_max), rel(a->d_mul_mean, b->d_mul_mean)};
            for (size_t k = 0; k < NPT_ARRAY_LEN(e); k++) worst = fmax(worst, e[k]);
        }
    }
    check(worst < 1e-5, "batch 2 and batch 5 give the same figures (max relative difference %.2g)", worst);
    /* for unit vectors |u - v|^2 = 2 - 2 u.v, so mean NMSE = (2 - 2 mean cos) / d exactly */
    double gap = 0.0;
    for (int l = 0; l < m.cfg.n_layers; l++)
        gap = fmax(gap, fabs(r2.layers[l].cos_e2e - (1.0 - m.cfg.dim * r2.layers[l].nmse_e2e / 2.0)));
    check(gap < 1e-6, "cos = 1 - d NMSE / 2 on every layer (max gap %.2g)", gap);
    EvalLayer *l0 = &r2.layers[0], *l1 = &r2.layers[1];
    check(!l0->is_npt && !l0->compared && l0->nmse_e2e == 0.0 && isnan(l0->nmse_local) && l1->is_npt && l1->compared,
          "layer 0 (below the first converted layer) is identical in both models; layer 1 is NPT");
    check(l1->d_mul_min > 0.5 && l1->d_mul_max < 1.0 && l1->d_mul_min < l1->d_mul_mean && l1->d_mul_mean < l1->d_mul_max,
          "d_mul = 0.5 sigmoid + 0.5 within (0.5, 1): min %.4f mean %.4f max %.4f", l1->d_mul_min, l1->d_mul_mean, l1->d_mul_max);

    EvalResult rb;
    if (eval_run(&m, NULL, tokens, B, T, 3, &rb, &err)) {
        check(0, "eval_run base only: %s", err.msg);
    } else {
        check(!rb.has_npt && rel(rb.ce_base, r2.ce_base) < 1e-6 && isnan(rb.ppl_npt),
              "without adapters: base cross-entropy %.9g only", rb.ce_base);
        eval_result_free(&rb);
    }

    check(r2.bad_window_base == -1 && r2.bad_window_npt == -1 && r5.bad_window_base == -1,
          "finite models: no window reported non-finite (%d, %d)", r2.bad_window_base, r2.bad_window_npt);
    non_finite_windows(&m, &n, tokens, B, T);

    tokens[B * T - 1] = m.cfg.vocab_size;
    int rc = eval_run(&m, &n, tokens, B, T, 2, &rb, &err);
    check(rc == -1 && strstr(err.msg, "window 4 position 47") && strstr(err.msg, "vocabulary of 512"),
          "a token outside the vocabulary is refused with its place: %s", rc ? err.msg : "(accepted)");
    for (int t = 1; t <= 2; t++) {
        rc = eval_run(&m, &n, tokens, B * T / t, t, 2, &rb, &err);
        check(rc == -1 && strstr(err.msg, "at least 3"), "windows of %d token(s) are refused: %s", t,
              rc ? err.msg : "(accepted)");
    }
    eval_result_free(&r2);
    eval_result_free(&r5);
    npt_free(&n);
    llama_free(&m);
}

int main(void) {
    huge_logits();
    against_objective();
    return test_finish();
}
