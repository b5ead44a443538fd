/* tests/test_npt.c — NPT layers and the distillation objective on the real stories260K.
 *
 * Without arguments: its own checks (finite differences of the whole distillation loss
 * with respect to adapter weights, the KV-cache NPT path against the tape, safe mode
 * having no B_mul at all, layer selections). With arguments it is the C side of the
 * PyTorch parity test (tests/py/test_npt_parity.py):
 *   test_npt --dump MODEL TOKENS.i32 B T safe|full LAYERS RANK SEED STEPS LR OUTDIR [TRAIN...]
 * LAYERS is all, upper_half, lower_half or a comma list. It writes OUTDIR/params.f32
 * (initial adapters, flat: per converted layer ascending A [r,d], B_add [f,r], then
 * B_mul [f,r] in full mode), grads.f32 (gradient of the loss at the initial adapters,
 * same layout), losses.txt (loss, nmse, reg at init, then the loss after each of STEPS
 * AdamW steps on the same batch with constant LR, betas 0.9/0.999, eps 1e-8, no decay,
 * no clipping), final.f32 (adapters after those steps). lambda = 0.01, scale = 0.1,
 * init: A ~ N(0, 0.02^2), B_add ~ N(0, 0.001^2), B_mul ~ N(0, 0.01^2) (non-zero so
 * that its gradient path is exercised).
 * With TRAIN = adamw|sgd WEIGHT_DECAY MOMENTUM WARMUP MIN_LR_RATIO MAX_NORM (the C side
 * of tests/py/test_train_parity.py) the STEPS steps are the trainer's instead
 * (train/trainer.c, train_step): gradient, global norm, the step's rate from a warmup +
 * cosine schedule (base LR, WARMUP steps, decay to LR * MIN_LR_RATIO at STEPS), clipping
 * to MAX_NORM, the update. It writes params.f32, then steps.txt (per step: loss before
 * the update, gradient norm, lr, clip factor; then the loss after the last update) and
 * final.f32 instead of grads.f32 and losses.txt.
 *   test_npt --dump-lm MODEL TOKENS.i32 B T OUTDIR   (also tests/py/test_train_parity.py)
 * The lm objective with every base weight trained (objective.train_all_weights): loss.txt
 * and grads.f32, the loss's gradient per tensor in the order tok_emb, per layer attn_norm,
 * wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down, then final_norm and, when the model
 * is not tied, lm_head (tied: tok_emb's gradient holds both uses). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "model/npt.h"
#include "model/ops.h"
#include "optim/optim.h"
#include "test.h"
#include "train/objective.h"

static ObjectiveRunner runner; /* one shard unless a test says otherwise */
static const ObjectiveConfig distill_oc = {.distill = 1, .lambda = 0.01f};

static int setup(const LlamaModel *m, const NptModel *n, int B, int T, int shards) {
    NptErr err;
    if (objective_init(&runner, m, n, &distill_oc, B, T, shards, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static void teardown(void) { objective_free(&runner); }

static int parse_layers(const char *s, NptConfig *nc, int *list) {
    if (!strcmp(s, "all")) nc->layer_mode = NPT_LAYERS_ALL;
    else if (!strcmp(s, "upper_half")) nc->layer_mode = NPT_LAYERS_UPPER_HALF;
    else if (!strcmp(s, "lower_half")) nc->layer_mode = NPT_LAYERS_LOWER_HALF;
    else {
        nc->layer_mode = NPT_LAYERS_LIST;
        nc->n_layer_list = 0;
        for (char *end; *s; s = *end ? end + 1 : end) list[nc->n_layer_list++] = (int)strtol(s, &end, 10);
        nc->layer_list = list;
    }
    return 0;
}

static ObjectiveValues objective_at(ObjectiveRunner *r, const ObjectiveConfig *oc, const LlamaModel *m, NptModel *n,
                                    const int *tokens, int backward) {
    r->forward_only = !backward;
    if (backward) npt_zero_grads(n);
    return objective_step(r, m, n, oc, tokens, NULL, 1.0f, 0);
}

static ObjectiveValues loss_at(const LlamaModel *m, NptModel *n, const int *tokens, int backward) {
    return objective_at(&runner, &distill_oc, m, n, tokens, backward);
}

/* B x T int32 ids from a file; NULL (after saying why) if it holds fewer. */
static int *read_tokens(const char *path, int B, int T) {
    int *tokens = npt_xmalloc((size_t)B * T * sizeof(int), "tokens");
    FILE *f = fopen(path, "rb");
    int ok = f && fread(tokens, sizeof(int), (size_t)B * T, f) == (size_t)B * T;
    if (f) fclose(f);
    if (!ok) {
        fprintf(stderr, "cannot read %d x %d tokens from %s\n", B, T, path);
        free(tokens);
        return NULL;
    }
    return tokens;
}

/* What both --dump forms start from: the model, the adapters of argv[6..9] at their
 * init, the batch, and the runner with the trainer's sharding for this thread count
 * (PyTorch checks it too). Writes the initial adapters to OUTDIR/params.f32. */
static int *dump_setup(char **argv, LlamaModel *m, NptModel *n) {
    const char *model_path = argv[2], *tokens_path = argv[3], *outdir = argv[12];
    int B = atoi(argv[4]), T = atoi(argv[5]);
    NptErr err;
    int list[64];
    NptConfig nc = {.rank = atoi(argv[8]), .safe_mode = !strcmp(argv[6], "safe"), .modulation_scale = 0.1f,
                    .init_a_std = 0.02f, .init_b_add_std = 0.001f, .init_b_mul_std = 0.01f};
    parse_layers(argv[7], &nc, list);
    if (llama_load(model_path, m, &err) || npt_create(n, m, &nc, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    npt_init_weights(n, &nc, (uint64_t)atoll(argv[9]));
    int *tokens = read_tokens(tokens_path, B, T);
    if (!tokens || setup(m, n, B, T, objective_auto_shards(&distill_oc, n, B)) ||
        write_floats(outdir, "params.f32", n->params, n->n_params)) {
        free(tokens);
        return NULL;
    }
    return tokens;
}

static void dump_free(LlamaModel *m, NptModel *n, int *tokens) {
    teardown();
    npt_free(n);
    llama_free(m);
    free(tokens);
}

/* The gradient at the initial adapters, then STEPS AdamW steps at constant LR. */
static int dump(char **argv) {
    const char *outdir = argv[12];
    int steps = atoi(argv[10]);
    float lr = (float)atof(argv[11]);
    LlamaModel m;
    NptModel n;
    NptErr err;
    int *tokens = dump_setup(argv, &m, &n);
    if (!tokens) return 1;
    char path[4200];
    snprintf(path, sizeof path, "%s/losses.txt", outdir);
    FILE *lf = fopen(path, "w");
    if (!lf) return 1;
    ObjectiveValues v = loss_at(&m, &n, tokens, 1);
    if (fprintf(lf, "%.9g %.9g %.9g\n", v.loss, v.fidelity, v.reg) < 0 ||
        write_floats(outdir, "grads.f32", n.grads, n.n_params))
        return 1;
    Optimizer opt;
    if (optim_init(&opt, OPTIM_ADAMW, n.params, n.grads, n.n_params, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc = 0;
    for (int s = 0; s < steps && !rc; s++) {
        optim_step(&opt, lr);
        v = loss_at(&m, &n, tokens, 1);
        rc = fprintf(lf, "%.9g\n", v.loss) < 0;
    }
    rc |= fclose(lf) != 0 || write_floats(outdir, "final.f32", n.params, n.n_params);
    optim_free(&opt);
    dump_free(&m, &n, tokens);
    return rc ? 1 : 0;
}

/* One optimizer step as train/trainer.c's train_step takes it: the batch's gradient, the
 * step's rate, then optim_update (norm, skip rule, clipping, update), the function the
 * trainer calls. Writes "loss norm lr factor". */
static int trainer_step(const LlamaModel *m, NptModel *n, const int *tokens, Optimizer *opt, const Schedule *sched,
                        int64_t step, float max_norm, FILE *out) {
    ObjectiveValues v = loss_at(m, n, tokens, 1);
    float lr = schedule_lr(sched, step), factor = 1.0f;
    double norm;
    if (optim_update(opt, v.loss, lr, max_norm, &norm, &factor)) { /* skipped: the comparison has no step */
        fprintf(stderr, "step %lld: loss %g, gradient norm %g: the trainer skips it\n", (long long)step, v.loss, norm);
        return -1;
    }
    return fprintf(out, "%.9g %.9g %.9g %.9g\n", v.loss, norm, lr, factor) < 0 ? -1 : 0;
}

/* --dump with TRAIN: STEPS trainer steps with the optimizer, schedule and clipping of
 * argv[13..18] (see the header). */
static int dump_trainer(char **argv) {
    const char *outdir = argv[12];
    int steps = atoi(argv[10]);
    LlamaModel m;
    NptModel n;
    NptErr err;
    Optimizer opt;
    if (strcmp(argv[13], "sgd") && strcmp(argv[13], "adamw")) {
        fprintf(stderr, "optimizer %s: adamw or sgd\n", argv[13]);
        return 2;
    }
    int *tokens = dump_setup(argv, &m, &n);
    if (!tokens) return 1;
    OptimKind kind = !strcmp(argv[13], "sgd") ? OPTIM_SGD : OPTIM_ADAMW;
    if (optim_init(&opt, kind, n.params, n.grads, n.n_params, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        dump_free(&m, &n, tokens);
        return 1;
    }
    opt.weight_decay = (float)atof(argv[14]), opt.momentum = (float)atof(argv[15]);
    Schedule sched = {.kind = SCHED_COSINE, .base_lr = (float)atof(argv[11]), .min_lr_ratio = (float)atof(argv[17]),
                      .warmup_steps = atoll(argv[16]), .total_steps = steps};
    float max_norm = (float)atof(argv[18]);
    char path[4200];
    snprintf(path, sizeof path, "%s/steps.txt", outdir);
    FILE *sf = fopen(path, "w");
    int rc = !sf;
    for (int s = 0; !rc && s < steps; s++) rc = trainer_step(&m, &n, tokens, &opt, &sched, s, max_norm, sf);
    if (!rc) {
        double last = objective_at(&runner, &distill_oc, &m, &n, tokens, 0).loss;
        rc = !isfinite(last) || fprintf(sf, "%.9g\n", last) < 0;
    }
    if (sf && fclose(sf) != 0) rc = 1;
    rc = rc || write_floats(outdir, "final.f32", n.params, n.n_params);
    if (rc) fprintf(stderr, "--dump %s: writing %s or final.f32 failed or a step was not finite\n", argv[13], path);
    optim_free(&opt);
    dump_free(&m, &n, tokens);
    return rc ? 1 : 0;
}

/* Every base tensor in the order of --dump-lm's grads.f32 (lm_head last, when untied). */
static int base_tensors(LlamaModel *m, Tensor **out) {
    int k = 0;
    out[k++] = &m->tok_emb;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        LlamaLayer *L = &m->layers[l];
        Tensor *ts[9] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 9; i++) out[k++] = ts[i];
    }
    out[k++] = &m->final_norm;
    if (!m->cfg.tied) out[k++] = &m->lm_head;
    return k;
}

/* loss.txt and grads.f32 of --dump-lm (the tensors' gradients one after another). */
static int write_lm_outputs(const char *outdir, double loss, Tensor **ts, int count) {
    char path[4200];
    snprintf(path, sizeof path, "%s/loss.txt", outdir);
    FILE *f = fopen(path, "w");
    int rc = !f || fprintf(f, "%.9g\n", loss) < 0;
    if (f && fclose(f) != 0) rc = 1;
    snprintf(path, sizeof path, "%s/grads.f32", outdir);
    f = rc ? NULL : fopen(path, "wb");
    for (int k = 0; f && k < count; k++) rc |= fwrite(ts[k]->grad, sizeof(float), ts[k]->n, f) != ts[k]->n;
    if (!f || fclose(f) != 0) rc = 1;
    if (rc) fprintf(stderr, "--dump-lm: cannot write %s/loss.txt or grads.f32\n", outdir);
    return rc;
}

/* --dump-lm: the lm loss and its gradient with respect to every base weight, through
 * the runner the trainer builds for lm + train_all_weights (no adapters, one shard). */
static int dump_lm(char **argv) {
    int B = atoi(argv[4]), T = atoi(argv[5]), rc = 1;
    const ObjectiveConfig lm_all = {.distill = 0, .train_all_weights = 1};
    LlamaModel m;
    NptErr err;
    ObjectiveRunner r;
    if (llama_load(argv[2], &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    Tensor **ts = npt_xmalloc((size_t)(3 + 9 * m.cfg.n_layers) * sizeof(Tensor *), "tensor list");
    int count = base_tensors(&m, ts);
    int *tokens = read_tokens(argv[3], B, T);
    float *g = llama_make_trainable(&m, &err); /* as train/trainer.c does for lm + train_all_weights */
    if (!g || objective_init(&r, &m, NULL, &lm_all, B, T, objective_auto_shards(&lm_all, NULL, B), &err)) {
        fprintf(stderr, "%s\n", err.msg);
    } else {
        ObjectiveValues v = {.loss = NAN};
        if (tokens) v = objective_step(&r, &m, NULL, &lm_all, tokens, NULL, 1.0f, 0);
        objective_free(&r);
        if (!isfinite(v.loss)) fprintf(stderr, "--dump-lm: no tokens, or the loss is %g\n", v.loss);
        else rc = write_lm_outputs(argv[6], v.loss, ts, count);
    }
    free(g);
    free(tokens);
    free(ts);
    llama_free(&m);
    return rc;
}

/* Adapters with every matrix drawn at std 0.05 (B_mul too, so that the multiplicative
 * path carries gradient): the gradient checks' model. On stories260K (8 query heads, 4
 * kv heads of 8) rank 4 folds A into Wo only; rank 2 or 3 also folds it into the values
 * (model/npt.c, adapter_input). */
static int test_adapters(const LlamaModel *m, int safe, NptLayerMode mode, uint64_t seed, int rank, NptModel *n) {
    NptErr err;
    NptConfig nc = {.rank = rank, .safe_mode = safe, .modulation_scale = 0.1f, .layer_mode = mode,
                    .init_a_std = 0.05f, .init_b_add_std = 0.05f, .init_b_mul_std = 0.05f};
    if (npt_create(n, m, &nc, &err)) {
        check(0, "npt_create: %s", err.msg);
        return -1;
    }
    npt_init_weights(n, &nc, seed);
    return 0;
}

/* Central differences of single adapter weights (a sample of every kind) against the
 * analytic gradient: relative error of the sampled gradient vector. */
static double fd_single_weights(ObjectiveRunner *r, const ObjectiveConfig *oc, const LlamaModel *m, NptModel *n,
                                const int *tokens, const float *analytic, int *samples) {
    double diff2 = 0, num2 = 0;
    for (size_t i = 0; i < n->n_params; i += n->n_params / 40 + 1, (*samples)++) {
        float saved = n->params[i], h = 1e-2f;
        n->params[i] = saved + h;
        double lp = objective_at(r, oc, m, n, tokens, 0).loss;
        n->params[i] = saved - h;
        double lm = objective_at(r, oc, m, n, tokens, 0).loss;
        n->params[i] = saved;
        double num = (lp - lm) / (2 * h);
        diff2 += (num - analytic[i]) * (num - analytic[i]);
        num2 += num * num;
    }
    return sqrt(diff2 / fmax(num2, 1e-30));
}

/* Central differences along unit directions over all adapter weights (the gradient's
 * own, then random ones) against g . v: the worst error as a fraction of |g|. */
static double fd_directions(ObjectiveRunner *r, const ObjectiveConfig *oc, const LlamaModel *m, NptModel *n,
                            const int *tokens, const float *analytic, int *samples) {
    size_t P = n->n_params;
    float *v = npt_xmalloc(P * sizeof(float), "direction"), *start = npt_xmalloc(P * sizeof(float), "params copy");
    memcpy(start, n->params, P * sizeof(float));
    uint64_t state = 99;
    double gnorm = 0, worst = 0;
    for (size_t i = 0; i < P; i++) gnorm += (double)analytic[i] * analytic[i];
    gnorm = sqrt(gnorm);
    for (int d = 0; d < 4; d++, (*samples)++) {
        double norm = 0, gv = 0, h = 3e-2, l[2];
        if (d == 0) memcpy(v, analytic, P * sizeof(float));
        else npt_fill_normal(v, P, 1.0f, &state);
        for (size_t i = 0; i < P; i++) norm += (double)v[i] * v[i];
        norm = sqrt(norm);
        for (size_t i = 0; i < P; i++) gv += (double)analytic[i] * v[i] / norm;
        for (int side = 0; side < 2; side++) {
            for (size_t i = 0; i < P; i++) n->params[i] = (float)(start[i] + (side ? -h : h) * v[i] / norm);
            l[side] = objective_at(r, oc, m, n, tokens, 0).loss;
        }
        worst = fmax(worst, fabs((l[0] - l[1]) / (2 * h) - gv) / gnorm);
    }
    memcpy(n->params, start, P * sizeof(float));
    free(v);
    free(start);
    return worst;
}

/* Finite differences of the whole objective (distill: teacher, student, NMSE or MSE,
 * regularizer; lm: next-token cross-entropy through the NPT layers) with respect to
 * the adapters. NMSE: single weights. MSE and lm, whose losses are large beside their
 * adapter gradients so that a one-weight difference drowns in float32 rounding:
 * directions over all weights (observed errors <= 2.7e-4 of |g|). */
static void check_fd(const LlamaModel *m, int safe, NptLayerMode mode, int rank, const ObjectiveConfig *oc) {
    NptModel n;
    NptErr err;
    ObjectiveRunner r;
    enum { B = 2, T = 16 };
    if (test_adapters(m, safe, mode, 7, rank, &n)) return;
    if (objective_init(&r, m, &n, oc, B, T, 1, &err)) {
        check(0, "finite differences: objective_init: %s", err.msg);
        npt_free(&n);
        return;
    }
    int tokens[B * T], samples = 0, directional = !oc->distill || oc->use_mse;
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 29 + 3) % m->cfg.vocab_size;
    objective_at(&r, oc, m, &n, tokens, 1);
    float *analytic = npt_xmalloc(n.n_params * sizeof(float), "grads copy");
    memcpy(analytic, n.grads, n.n_params * sizeof(float));
    double rel = directional ? fd_directions(&r, oc, m, &n, tokens, analytic, &samples)
                             : fd_single_weights(&r, oc, m, &n, tokens, analytic, &samples);
    const char *obj = !oc->distill ? (oc->lambda > 0 ? "lm + lambda reg" : "lm") : oc->use_mse ? "distill mse" : "distill nmse";
    const char *layers = mode == NPT_LAYERS_ALL ? "all" : mode == NPT_LAYERS_UPPER_HALF ? "upper_half" : "lower_half";
    check(rel < (directional ? 2e-3 : 5e-3), "%s loss gradient vs finite differences, %s mode, layers %s, rank %d: rel "
          "err %.2e over %d %s", obj, safe ? "safe" : "full", layers, rank, rel, samples, directional ? "directions" : "weights");
    free(analytic);
    objective_free(&r);
    npt_free(&n);
}

static void check_structure(const LlamaModel *m) {
    NptModel n;
    NptErr err;
    NptConfig nc = {.rank = 8, .safe_mode = 1, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_UPPER_HALF,
                    .init_a_std = 0.02f, .init_b_add_std = 0.001f};
    int L = m->cfg.n_layers;
    if (npt_create(&n, m, &nc, &err)) {
        check(0, "npt_create (%s)", err.msg);
        return;
    }
    size_t per = (size_t)8 * m->cfg.dim + (size_t)m->cfg.hidden_dim * 8;
    check(n.n_adapters == L - L / 2 && n.first_layer == L / 2 && n.n_params == per * n.n_adapters && !n.adapters[0].B_mul.data,
          "safe mode upper_half: %d adapters from layer %d, no B_mul, %zu params", n.n_adapters, n.first_layer, n.n_params);
    npt_free(&n);
    nc.layer_mode = NPT_LAYERS_LIST;
    int bad[1] = {L};
    nc.layer_list = bad, nc.n_layer_list = 1;
    check(npt_create(&n, m, &nc, &err) == -1 && strstr(err.msg, "does not exist"), "layer %d of a %d-layer model is refused: %s", L, L, err.msg);
    nc.layer_mode = NPT_LAYERS_ALL, nc.rank = m->cfg.dim + 1;
    check(npt_create(&n, m, &nc, &err) == -1 && strstr(err.msg, "rank"), "rank above dim is refused: %s", err.msg);
}

/* Generation's NPT path (npt_infer_mlp, KV cache) against the tape forward. */
static void check_infer_path(const LlamaModel *m) {
    NptModel n;
    NptErr err;
    NptConfig nc = {.rank = 4, .safe_mode = 0, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_ALL,
                    .init_a_std = 0.05f, .init_b_add_std = 0.05f, .init_b_mul_std = 0.05f};
    if (npt_create(&n, m, &nc, &err)) {
        check(0, "NPT KV-cache path: npt_create: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &nc, 3);
    enum { T = 12 };
    int tokens[T];
    for (int i = 0; i < T; i++) tokens[i] = (i * 13 + 1) % m->cfg.vocab_size;
    Graph *g = &runner.shards[0].student;
    graph_reset(g);
    g->recording = 0;
    Tensor *h = llama_embed(g, m, tokens, T);
    for (int l = 0; l < m->cfg.n_layers; l++) h = npt_student_layer(g, &n, l, h, 1, T, NULL);
    Tensor *logits = llama_logits(g, m, h);
    g->recording = 1;
    LlamaInfer s;
    if (llama_infer_init(&s, &m->cfg, &n, T, &err)) {
        check(0, "NPT KV-cache path: llama_infer_init: %s", err.msg);
        npt_free(&n);
        return;
    }
    double maxdiff = 0, maxabs = 0;
    for (int t = 0; t < T; t++) {
        const float *a = llama_infer_step(&s, m, &n, tokens[t], t);
        for (int j = 0; j < m->cfg.vocab_size; j++) {
            maxdiff = fmax(maxdiff, fabs(a[j] - logits->data[(size_t)t * m->cfg.vocab_size + j]));
            maxabs = fmax(maxabs, fabs(a[j]));
        }
    }
    check(maxdiff / maxabs < 1e-5, "NPT KV-cache generation path == tape forward (rel %.2e)", maxdiff / maxabs);
    llama_infer_free(&s);
    npt_free(&n);
}

static void observe_nothing(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx) {
    (void)g, (void)op, (void)out, (void)in, (void)n_in, (void)ctx;
}

/* The NPT layer folds A into the output projection, z = (A Wo) c, and at ranks below the
 * head width further into the values, unless an observer watches (model/npt.c,
 * adapter_input). The student's output and every adapter gradient must equal the
 * literal z = A (Wo c), and the folds must have happened: one A x Wo matmul per
 * converted layer on the tape, and one per-head product with Wv where the rank is small
 * enough; none in the literal graph. */
static void check_folded_output_projection(const LlamaModel *m, NptLayerMode mode, int rank) {
    NptModel n;
    if (test_adapters(m, 0, mode, 5, rank, &n)) return;
    enum { B = 2, T = 16 };
    int tokens[B * T], L = m->cfg.n_layers, folds[2] = {0, 0}, value_folds[2] = {0, 0};
    int want_value_folds = m->cfg.n_heads * rank < m->cfg.n_kv_heads * m->cfg.head_dim ? n.n_adapters : 0;
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 41 + 7) % m->cfg.vocab_size;
    size_t out_n = (size_t)B * T * m->cfg.dim;
    float *out[2] = {npt_xmalloc(out_n * sizeof(float), "output"), npt_xmalloc(out_n * sizeof(float), "output")};
    float *grads[2] = {npt_xmalloc(n.n_params * sizeof(float), "grads"), npt_xmalloc(n.n_params * sizeof(float), "grads")};
    Graph *g = &runner.shards[0].student;
    for (int literal = 0; literal < 2; literal++) {
        graph_reset(g);
        g->recording = 1;
        g->observer = literal ? observe_nothing : NULL;
        npt_zero_grads(&n);
        Tensor *h = llama_embed(g, m, tokens, B * T);
        for (int l = 0; l < L; l++) h = npt_student_layer(g, &n, l, h, B, T, NULL);
        memcpy(out[literal], h->data, out_n * sizeof(float));
        Tensor *target = tensor_new2(g->act, "target", B * T, m->cfg.dim);
        memset(target->data, 0, out_n * sizeof(float));
        graph_backward(g, op_mse(g, h, target), 1.0f);
        memcpy(grads[literal], n.grads, n.n_params * sizeof(float));
        for (int i = 0; i < g->n_nodes; i++) {
            value_folds[literal] += !strcmp(g->nodes[i].op, "head_products");
            for (int k = 0; k < n.n_adapters; k++)
                folds[literal] += g->nodes[i].in[0] == &n.adapters[k].A &&
                                  g->nodes[i].in[1] == &m->layers[n.adapters[k].layer].wo;
        }
        g->observer = NULL;
    }
    double od = 0, oa = 0, gd = 0, ga = 0;
    for (size_t i = 0; i < out_n; i++) od = fmax(od, fabs(out[0][i] - out[1][i])), oa = fmax(oa, fabs(out[1][i]));
    for (size_t i = 0; i < n.n_params; i++) gd = fmax(gd, fabs(grads[0][i] - grads[1][i])), ga = fmax(ga, fabs(grads[1][i]));
    const char *what = mode == NPT_LAYERS_ALL ? "all layers" : "upper half";
    check(folds[0] == n.n_adapters && folds[1] == 0, "A folded into Wo (%s, rank %d): %d A x Wo products on the tape "
          "(want %d), %d in the observed, literal graph (want 0)", what, rank, folds[0], n.n_adapters, folds[1]);
    check(value_folds[0] == want_value_folds && value_folds[1] == 0, "A Wo folded into the values (%s, rank %d): %d "
          "per-head products with Wv on the tape (want %d), %d in the literal graph (want 0)", what, rank, value_folds[0],
          want_value_folds, value_folds[1]);
    check(od <= 1e-5 * oa && gd <= 1e-4 * ga, "folded attention (%s, rank %d) == literal A (Wo c): output max diff %.2e "
          "(max %.2e), adapter gradient max diff %.2e (max %.2e)", what, rank, od, oa, gd, ga);
    for (int i = 0; i < 2; i++) free(out[i]), free(grads[i]);
    npt_free(&n);
}

/* SPEC section 2 init: A ~ N(0, 0.02^2), B_add ~ N(0, 0.001^2), B_mul = 0, over every
 * converted layer (sample std within 5% and mean within 5 standard errors). */
static void check_default_init(const LlamaModel *m) {
    NptModel n;
    NptErr err;
    NptConfig nc = {.rank = 16, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_ALL, .init_a_std = 0.02f,
                    .init_b_add_std = 0.001f, .init_b_mul_std = 0.0f};
    if (npt_create(&n, m, &nc, &err)) {
        check(0, "default init: npt_create: %s", err.msg);
        return;
    }
    npt_init_weights(&n, &nc, 42);
    const double want[3] = {0.02, 0.001, 0.0};
    const char *names[3] = {"A", "B_add", "B_mul"};
    for (int t = 0; t < 3; t++) {
        double sum = 0, sum2 = 0, count = 0;
        for (int k = 0; k < n.n_adapters; k++) {
            const Tensor *x = t == 0 ? &n.adapters[k].A : t == 1 ? &n.adapters[k].B_add : &n.adapters[k].B_mul;
            for (size_t i = 0; i < x->n; i++) sum += x->data[i], sum2 += (double)x->data[i] * x->data[i], count++;
        }
        double mean = sum / count, std = sqrt(sum2 / count - mean * mean);
        int ok = want[t] == 0 ? sum2 == 0 : fabs(std / want[t] - 1) < 0.05 && fabs(mean) < 5 * want[t] / sqrt(count);
        check(ok, "default init: %s over %d layers: mean %.2e, std %.3e (want N(0, %g^2)), %.0f values", names[t],
              n.n_adapters, mean, std, want[t], count);
    }
    npt_free(&n);
}

typedef struct {
    const float *vocab_matrix;
    int ops, vocab_reads;
} VocabWatch;

static void watch_vocab(Graph *g, const char *op, Tensor *out, Tensor **in, int n_in, void *ctx) {
    VocabWatch *w = ctx;
    w->ops++;
    for (int i = 0; i < n_in; i++) w->vocab_reads += strcmp(op, "embedding") != 0 && in[i]->data == w->vocab_matrix;
}

/* SPEC section 3: distillation never computes the vocabulary projection. Every op of a
 * step's teacher and student graphs is watched for one reading the lm_head matrix
 * (the embedding lookup, which reads its rows when tied, aside). */
static void check_no_logits(const LlamaModel *m) {
    NptModel n;
    if (test_adapters(m, 0, NPT_LAYERS_ALL, 13, 4, &n)) return;
    enum { B = 2, T = 16 };
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 7 + 1) % m->cfg.vocab_size;
    VocabWatch w = {m->lm_head.data, 0, 0};
    Graph *graphs[2] = {&runner.shards[0].student, &runner.shards[0].teacher};
    for (int i = 0; i < 2; i++) graphs[i]->observer = watch_vocab, graphs[i]->observer_ctx = &w;
    loss_at(m, &n, tokens, 1);
    for (int i = 0; i < 2; i++) graphs[i]->observer = NULL, graphs[i]->observer_ctx = NULL;
    check(w.ops > 20 * m->cfg.n_layers && w.vocab_reads == 0,
          "distillation step: %d ops watched in teacher and student, %d read the %d x %d vocabulary matrix (want 0)",
          w.ops, w.vocab_reads, m->cfg.vocab_size, m->cfg.dim);
    npt_free(&n);
}

/* lm through adapters: the loss is cross-entropy plus lambda times the mean regularizer
 * (the fidelity reported is the cross-entropy alone), as distill adds it to NMSE. */
static void check_lm_regularizer(const LlamaModel *m) {
    NptModel n;
    NptErr err;
    ObjectiveRunner r;
    enum { B = 2, T = 16 };
    if (test_adapters(m, 0, NPT_LAYERS_UPPER_HALF, 5, 4, &n)) return;
    const ObjectiveConfig plain = {.distill = 0}, weighted = {.distill = 0, .lambda = 3.0f};
    if (objective_init(&r, m, &n, &plain, B, T, 1, &err)) {
        check(0, "lm regularizer: objective_init: %s", err.msg);
        npt_free(&n);
        return;
    }
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 13 + 2) % m->cfg.vocab_size;
    ObjectiveValues v0 = objective_at(&r, &plain, m, &n, tokens, 0), v3 = objective_at(&r, &weighted, m, &n, tokens, 0);
    check(v0.reg > 1e-4 && v0.loss == v0.fidelity && v3.fidelity == v0.fidelity && v3.reg == v0.reg &&
              fabs(v3.loss - (v0.fidelity + 3.0 * v0.reg)) <= 1e-6 * v3.loss,
          "lm with adapters: loss %.7g = cross-entropy %.7g + 3 x reg %.4g (lambda 0: %.7g)", v3.loss, v3.fidelity,
          v3.reg, v0.loss);
    objective_free(&r);
    npt_free(&n);
}

/* A micro-batch split into shards run side by side (objective_init's n_shards) gives
 * the loss and the adapter gradients of the whole batch in one graph. */
static void check_shards(const LlamaModel *m, int safe, NptLayerMode mode) {
    NptModel n;
    NptErr err;
    if (test_adapters(m, safe, mode, 11, 4, &n)) return;
    enum { B = 4, T = 16 };
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 37 + 5) % m->cfg.vocab_size;
    float *whole = npt_xmalloc(n.n_params * sizeof(float), "grads");
    double loss1 = 0;
    for (int shards = 1; shards <= 4; shards *= 2) {
        ObjectiveRunner r;
        if (objective_init(&r, m, &n, &distill_oc, B, T, shards, &err)) {
            check(0, "shards: objective_init with %d shards: %s", shards, err.msg);
            continue;
        }
        npt_zero_grads(&n);
        ObjectiveValues v = objective_step(&r, m, &n, &distill_oc, tokens, NULL, 1.0f, 0);
        objective_free(&r);
        if (shards == 1) {
            loss1 = v.loss;
            memcpy(whole, n.grads, n.n_params * sizeof(float));
            continue;
        }
        double d2 = 0, g2 = 0;
        for (size_t i = 0; i < n.n_params; i++) d2 += pow(n.grads[i] - whole[i], 2), g2 += pow(whole[i], 2);
        check(fabs(v.loss - loss1) <= 1e-6 * loss1 && sqrt(d2) <= 1e-5 * sqrt(g2),
              "%d shards of a 4-sequence batch = one graph (%s mode, first NPT layer %d): loss %.9g vs %.9g, gradient "
              "rel diff %.2e", shards, safe ? "safe" : "full", n.first_layer, v.loss, loss1, sqrt(d2 / g2));
    }
    ObjectiveRunner r;
    int rc = objective_init(&r, m, &n, &distill_oc, B, T, 3, &err);
    check(rc != 0 && strstr(err.msg, "3 shards of a batch of 4"), "3 shards of 4 sequences refused: %s", rc ? err.msg : "accepted");
    if (!rc) objective_free(&r);
    free(whole);
    npt_free(&n);
}

/* One micro-batch of windows ids[0..B-1] (tokens derived from the ids) through a runner
 * with a teacher cache and one without: 1 if loss and gradients are bit-identical. */
static int same_step(const LlamaModel *m, NptModel *n, ObjectiveRunner *with, ObjectiveRunner *without,
                     const int64_t *ids, float *ref) {
    int B = with->B, T = with->T;
    int *tokens = npt_xmalloc((size_t)B * T * sizeof(int), "tokens");
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) tokens[b * T + t] = (int)((ids[b] * 31 + t * 7 + 1) % m->cfg.vocab_size);
    npt_zero_grads(n);
    ObjectiveValues a = objective_step(without, m, n, &distill_oc, tokens, ids, 1.0f, 0);
    memcpy(ref, n->grads, n->n_params * sizeof(float));
    npt_zero_grads(n);
    ObjectiveValues c = objective_step(with, m, n, &distill_oc, tokens, ids, 1.0f, 0);
    free(tokens);
    return a.loss == c.loss && !memcmp(ref, n->grads, n->n_params * sizeof(float));
}

/* The teacher cache (train/teacher_cache.h) over five micro-batches of windows seen
 * again, in other positions and shard splits, some twice in one batch, some after the
 * records ran out: every loss and gradient is bit-identical to a run without the cache,
 * and the hit / miss / record counts are the ones worked out by hand beside the ids. */
static void check_teacher_cache(const LlamaModel *m, int safe, NptLayerMode mode, int shards) {
    enum { B = 4, T = 16, BATCHES = 5 };
    static const int64_t ids[BATCHES][B] = {
        {0, 1, 2, 3}, /* 4 misses, records 0-3 */
        {4, 5, 5, 6}, /* 4 misses (the second 5 is not stored twice), records 4-6 */
        {2, 0, 7, 5}, /* 3 hits, 7 stored */
        {8, 3, 9, 9}, /* 8 takes the ninth and last record, 3 hits, 9 twice uncached */
        {9, 8, 1, 6}, /* 9 uncached, 3 hits */
    };
    const int64_t want_hits = 7, want_misses = 13, want_records = 9;
    NptModel n;
    NptErr err;
    if (test_adapters(m, safe, mode, 13, 4, &n)) return;
    int slots = m->cfg.n_layers - n.first_layer + 2;
    double record = (double)slots * T * m->cfg.dim * sizeof(float);
    TeacherCache cache;
    ObjectiveRunner with, without;
    if (teacher_cache_open(&cache, "/tmp", 9.5 * record, 0, 10, 10, slots, T, m->cfg.dim, &err) ||
        objective_init(&with, m, &n, &distill_oc, B, T, shards, &err) ||
        objective_init(&without, m, &n, &distill_oc, B, T, shards, &err)) {
        check(0, "teacher cache setup: %s", err.msg);
        npt_free(&n);
        return;
    }
    with.teacher_cache = &cache;
    float *ref = npt_xmalloc(n.n_params * sizeof(float), "grads");
    int same = 1;
    for (int k = 0; k < BATCHES; k++) same &= same_step(m, &n, &with, &without, ids[k], ref);
    const char *what = safe ? "safe mode, upper half" : "full mode, all layers";
    check(same, "teacher cache (%s, %d shard(s)): 5 batches' losses and gradients bit-identical to no cache", what, shards);
    check(cache.hits == want_hits && cache.misses == want_misses && cache.n_records == want_records,
          "teacher cache (%s, %d shard(s)): %lld hits, %lld misses, %d records (want %lld, %lld, %lld)", what, shards,
          (long long)cache.hits, (long long)cache.misses, cache.n_records, (long long)want_hits, (long long)want_misses,
          (long long)want_records);
    /* a poisoned batch bypasses the cache: nothing counted, nothing stored */
    int tokens[B * T] = {0};
    static const int64_t fresh[B] = {9, 9, 9, 9};
    objective_step(&with, m, &n, &distill_oc, tokens, fresh, 1.0f, 1);
    check(cache.hits == want_hits && cache.misses == want_misses && !cache.failed,
          "teacher cache (%s): a poisoned batch is neither looked up nor stored", what);
    free(ref);
    objective_free(&with), objective_free(&without);
    teacher_cache_close(&cache);
    npt_free(&n);
}

/* Descriptors of this process open on a deleted teacher-cache file: the blocks such a
 * file holds go back to the file system only when the last one closes. */
static int open_cache_files(void) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k <= 0) continue;
        target[k] = 0;
        n += strstr(target, ".npt-teacher-cache.") && strstr(target, "(deleted)");
    }
    closedir(dir);
    return n;
}

/* A cache whose file fails turns itself off with one message naming the operation, and
 * every window it could not serve is recomputed: the step stays bit-identical to no
 * cache. Writes fail on a file-size limit (EFBIG, as on a full disk), reads on a file
 * truncated under the cache. A cache larger than the disk's free space is refused before
 * any file is made. */
static void check_teacher_cache_failures(const LlamaModel *m) {
    enum { B = 4, T = 16 };
    static const int64_t ids[B] = {0, 1, 2, 3};
    NptModel n;
    NptErr err;
    if (test_adapters(m, 0, NPT_LAYERS_ALL, 17, 4, &n)) return;
    int slots = m->cfg.n_layers - n.first_layer + 2;
    double record = (double)slots * T * m->cfg.dim * sizeof(float);
    TeacherCache huge;
    int rc = teacher_cache_open(&huge, "/tmp", 1e18, 0, 1000000000000LL, 1000000000000LL, slots, T, m->cfg.dim, &err);
    check(rc != 0 && strstr(err.msg, "GB free") && strstr(err.msg, "lower it"),
          "a teacher cache larger than the free disk is refused: %s", rc ? err.msg : "opened");
    if (!rc) teacher_cache_close(&huge);
    /* ids run over 10 windows, 4 of which training can draw: 4 records at most, however large the size */
    rc = teacher_cache_open(&huge, "/tmp", 100 * record, 0, 10, 4, slots, T, m->cfg.dim, &err);
    check(rc == 0 && huge.max_records == 4, "teacher cache of 100 records' size over 4 trainable of 10 windows: %d records",
          rc ? -1 : huge.max_records);
    if (!rc) teacher_cache_close(&huge);

    ObjectiveRunner with, without;
    if (objective_init(&with, m, &n, &distill_oc, B, T, 2, &err) ||
        objective_init(&without, m, &n, &distill_oc, B, T, 2, &err)) {
        check(0, "teacher cache failure setup: %s", err.msg);
        npt_free(&n);
        return;
    }
    float *ref = npt_xmalloc(n.n_params * sizeof(float), "grads");
    for (int op = 0; op < 2; op++) { /* 0: writes fail, 1: reads fail */
        const char *what = op ? "read" : "write";
        TeacherCache cache;
        if (teacher_cache_open(&cache, "/tmp", 10 * record, 0, 10, 10, slots, T, m->cfg.dim, &err)) {
            check(0, "teacher cache for a failing %s: %s", what, err.msg);
            break;
        }
        with.teacher_cache = &cache;
        int same = 1;
        if (op == 0) {
            /* room for one and a half records: the second write is cut short, then EFBIG */
            struct rlimit saved, small;
            void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
            int limited = old_handler != SIG_ERR && getrlimit(RLIMIT_FSIZE, &saved) == 0;
            small = saved;
            small.rlim_cur = (rlim_t)(1.5 * record);
            limited = limited && setrlimit(RLIMIT_FSIZE, &small) == 0;
            check(limited, "file-size limit of 1.5 records set for the teacher cache's writes");
            same &= same_step(m, &n, &with, &without, ids, ref);
            check(!limited || setrlimit(RLIMIT_FSIZE, &saved) == 0, "file-size limit restored");
            if (old_handler != SIG_ERR) signal(SIGXFSZ, old_handler);
        } else {
            same &= same_step(m, &n, &with, &without, ids, ref); /* stores all four */
            check(!cache.failed && cache.n_records == B, "teacher cache: %d records stored before truncation",
                  cache.n_records);
            check(ftruncate(cache.fd, (off_t)(1.5 * record)) == 0, "teacher cache file truncated");
        }
        same &= same_step(m, &n, &with, &without, ids, ref);
        check(cache.failed && strstr(cache.last_error, what) && strstr(cache.last_error, "recomputed"),
              "teacher cache: a failed %s turns the cache off with a message: %s", what, cache.last_error);
        int files = open_cache_files();
        teacher_cache_release(&cache);
        check(files == 1 && open_cache_files() == 0 && cache.fd == -1,
              "teacher cache: after a failed %s, release closes its deleted file (%d open, then %d): its space is freed",
              what, files, open_cache_files());
        check(same, "teacher cache: with a failing %s, losses and gradients stay bit-identical to no cache", what);
        int64_t hits = cache.hits;
        same_step(m, &n, &with, &without, ids, ref);
        check(cache.hits == hits, "teacher cache: after a failed %s nothing is looked up (%lld hits)", what,
              (long long)cache.hits);
        teacher_cache_close(&cache);
    }
    free(ref);
    objective_free(&with), objective_free(&without);
    npt_free(&n);
}

/* The cache's bookkeeping without a model: the window index sized by the records, not
 * by the window ids (10^12 windows, 3 records); "stored" counts records written in full
 * and finite, not records handed out; the free space a run keeps for its checkpoints,
 * refused at open and, when the disk fills later, no record handed out past it. */
static void check_teacher_cache_bookkeeping(void) {
    enum { SLOTS = 1, T = 4, D = 4 };
    const int64_t windows = 1000000000000LL;
    TeacherCache c;
    NptErr err;
    int rc = teacher_cache_open(&c, "/tmp", 3.5 * SLOTS * T * D * sizeof(float), 0, windows, windows, SLOTS, T, D, &err);
    check(rc == 0 && c.max_records == 3, "teacher cache of 3 records over 10^12 windows opens (index by records): %s",
          rc ? err.msg : "ok");
    if (rc) return;
    const int64_t ids[4] = {windows - 1, 5, windows - 1, 7};
    CacheAction act[4];
    teacher_cache_plan(&c, ids, 4, act);
    check(act[0] == CACHE_STORE && act[1] == CACHE_STORE && act[2] == CACHE_OFF && act[3] == CACHE_STORE &&
              c.n_records == 3, "plan over 10^12 - 1, 5, 10^12 - 1, 7: store, store, off, store (%d %d %d %d), %d records",
          act[0], act[1], act[2], act[3], c.n_records);
    float good[T * D], bad[T * D];
    for (int i = 0; i < T * D; i++) good[i] = (float)i, bad[i] = i == 3 ? NAN : 1.0f;
    float *g = good, *b = bad;
    teacher_cache_write(&c, windows - 1, &g);
    teacher_cache_write(&c, 5, &g);
    teacher_cache_write(&c, 7, &b); /* refused: non-finite */
    check(teacher_cache_stored(&c) == 2 && c.n_records == 3, "a refused non-finite write is not counted stored: %d of %d",
          teacher_cache_stored(&c), c.n_records);
    teacher_cache_plan(&c, ids, 4, act);
    float back[T * D];
    float *p = back;
    check(act[0] == CACHE_HIT && act[1] == CACHE_HIT && act[3] == CACHE_STORE &&
              teacher_cache_read(&c, windows - 1, &p) == 0 && !memcmp(back, good, sizeof good),
          "the second plan hits both stored windows and reads back what was written; 7 is stored again");
    teacher_cache_close(&c);

    /* free space: 4 MB records, a reserve that leaves room for two and a half of them */
    enum { BIG_T = 1024, BIG_D = 1024 };
    double record = (double)BIG_T * BIG_D * sizeof(float);
    rc = teacher_cache_open(&c, "/tmp", 10 * record, 1e18, 10, 10, 1, BIG_T, BIG_D, &err);
    check(rc != 0 && strstr(err.msg, "stay free for checkpoints") && strstr(err.msg, "lower it or free space"),
          "a cache that would leave too little for checkpoints is refused: %s", rc ? err.msg : "opened");
    if (!rc) teacher_cache_close(&c);
    struct statvfs vfs;
    double avail = statvfs("/tmp", &vfs) == 0 ? (double)vfs.f_bavail * vfs.f_frsize : 0;
    rc = avail > 12 * record ? teacher_cache_open(&c, "/tmp", 10 * record, 0, 10, 10, 1, BIG_T, BIG_D, &err) : -1;
    check(rc == 0, "teacher cache of 10 x 4 MB in /tmp (%.0f MB free): %s", avail / 1e6, rc ? err.msg : "ok");
    if (rc) return;
    c.reserve_bytes = avail - 2.5 * record; /* as if the disk had filled since the cache opened */
    const int64_t four[4] = {0, 1, 2, 3};
    teacher_cache_plan(&c, four, 4, act);
    check(act[0] == CACHE_STORE && act[1] == CACHE_STORE && act[2] == CACHE_OFF && act[3] == CACHE_OFF && c.full &&
              c.n_records == 2, "with room for 2.5 records above the reserve: 2 handed out, then full (%d %d %d %d, %d)",
          act[0], act[1], act[2], act[3], c.n_records);
    teacher_cache_close(&c);
}

int main(int argc, char **argv) {
    if (argc == 13 && !strcmp(argv[1], "--dump")) return dump(argv);
    if (argc == 19 && !strcmp(argv[1], "--dump")) return dump_trainer(argv);
    if (argc == 7 && !strcmp(argv[1], "--dump-lm")) return dump_lm(argv);
    if (argc != 1) {
        fprintf(stderr, "usage: test_npt [--dump MODEL TOKENS B T safe|full LAYERS RANK SEED STEPS LR OUTDIR\n"
                        "                 [adamw|sgd WEIGHT_DECAY MOMENTUM WARMUP MIN_LR_RATIO MAX_NORM]]\n"
                        "       test_npt --dump-lm MODEL TOKENS B T OUTDIR\n");
        return 2;
    }
    LlamaModel m;
    NptErr err;
    if (llama_load(shared_path("models/stories260K/stories260K.bin"), &m, &err)) {
        check(0, "stories260K loads: %s", err.msg);
        return test_finish();
    }
    if (setup(&m, NULL, 2, 16, 1)) return 1;
    check_structure(&m);
    const ObjectiveConfig mse_oc = {.distill = 1, .use_mse = 1, .lambda = 0.01f}, lm_oc = {.distill = 0},
                          lm_reg_oc = {.distill = 0, .lambda = 100.0f}; /* the regularizer's gradient dominates */
    check_fd(&m, 1, NPT_LAYERS_ALL, 4, &distill_oc);
    check_fd(&m, 0, NPT_LAYERS_ALL, 4, &distill_oc);
    check_fd(&m, 0, NPT_LAYERS_ALL, 2, &distill_oc); /* A Wo folded into the values too */
    check_fd(&m, 0, NPT_LAYERS_UPPER_HALF, 4, &distill_oc);
    check_fd(&m, 1, NPT_LAYERS_LOWER_HALF, 3, &distill_oc);
    check_fd(&m, 0, NPT_LAYERS_ALL, 4, &mse_oc);
    check_fd(&m, 0, NPT_LAYERS_UPPER_HALF, 4, &lm_oc);
    check_fd(&m, 1, NPT_LAYERS_ALL, 2, &lm_oc);
    check_fd(&m, 0, NPT_LAYERS_UPPER_HALF, 4, &lm_reg_oc);
    check_lm_regularizer(&m);
    check_infer_path(&m);
    check_default_init(&m);
    check_no_logits(&m);
    check_folded_output_projection(&m, NPT_LAYERS_ALL, 4);
    check_folded_output_projection(&m, NPT_LAYERS_UPPER_HALF, 4);
    check_folded_output_projection(&m, NPT_LAYERS_ALL, 2);
    check_folded_output_projection(&m, NPT_LAYERS_UPPER_HALF, 3);
    check_shards(&m, 0, NPT_LAYERS_ALL);
    check_shards(&m, 1, NPT_LAYERS_UPPER_HALF);
    check_teacher_cache(&m, 0, NPT_LAYERS_ALL, 2);
    check_teacher_cache(&m, 1, NPT_LAYERS_UPPER_HALF, 1);
    check_teacher_cache(&m, 1, NPT_LAYERS_UPPER_HALF, 2);
    check_teacher_cache_failures(&m);
    check_teacher_cache_bookkeeping();
    teardown();
    llama_free(&m);
    return test_finish();
}
