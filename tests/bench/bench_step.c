/* tests/bench/bench_step.c — the C side of `make bench` (tests/bench/run_bench.sh).
 *
 * One measurement per process, so that peak RSS (getrusage ru_maxrss) belongs to that
 * measurement alone. Threads come from OMP_NUM_THREADS (OpenBLAS, OpenMP build, follows).
 * Each mode prints one line of key=value pairs on stdout for run_bench.sh:
 *
 *   bench_step sgemm M N K REPS
 *       best-of-REPS cblas_sgemm of x[M,K] W[N,K]^T (the layout of every linear in npt)
 *   bench_step train MODEL full|safe WARMUP STEPS BUDGET [cached]
 *       the NPT distillation step, all layers converted, rank 16, batch 8 x 256:
 *       objective_step (teacher + student forward, backward) + global norm + clip +
 *       AdamW, timed over up to STEPS steps after WARMUP, stopping early once BUDGET
 *       seconds have passed (at least one timed step); also prints the necessary
 *       FLOPs of the step (see step_flops and docs/bench.md). cached: the step of
 *       epochs after the first with train.teacher_cache_gb: the warm-up stores the
 *       batch's teacher states (train/teacher_cache.c, a file in $TMPDIR or /tmp) and
 *       the timed steps read them instead of running the teacher
 *   bench_step generate MODEL STEPS
 *       greedy generation from BOS with the KV cache (llama_infer_step), tokens/s
 *
 * MODEL is a model path, or "random15m" / "random110m": random weights of the stories15M
 * shape (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256) or the stories110M
 * shape (dim 768, hidden 2048, 12 layers, 12 heads). */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "model/npt.h"
#include "optim/optim.h"
#include "train/objective.h"

enum { BATCH = 8, SEQ = 256, RANK = 16 };

/* tests/bench/sgemm_census.c's entry points when it is preloaded (LD_PRELOAD), else NULL:
 * the timed training steps are then also split into sgemm time and the rest */
static void (*census_start)(void);
static void (*census_report)(FILE *out, int steps, int top);

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux reports kilobytes */
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_u32(void) { /* xorshift64*, as in llama2.c */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_normal(float std) { /* Box-Muller */
    float u1 = (rng_u32() + 1.0f) / 4294967296.0f, u2 = rng_u32() / 4294967296.0f;
    return std * sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* Random-weight model of the stories15M (dim 288, hidden 768, 6 layers, 6 heads) or
 * stories110M (768, 2048, 12, 12) shape: N(0, 0.02) weights, unit norms. */
static int random_model(LlamaModel *m, int big, NptErr *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "random stories%s shape", big ? "110M" : "15M");
    m->format = MODEL_FMT_LLAMA2C;
    int dim = big ? 768 : 288, heads = big ? 12 : 6;
    m->cfg = (LlamaConfig){.dim = dim, .hidden_dim = big ? 2048 : 768, .n_layers = big ? 12 : 6, .n_heads = heads,
                           .n_kv_heads = heads, .head_dim = dim / heads, .vocab_size = 32000, .seq_len = 256,
                           .norm_eps = 1e-5f, .rope_theta = 10000.0f, .rope = ROPE_INTERLEAVED, .tied = 1, .bos_id = 1,
                           .eos_id = 2};
    if (llama_alloc_weights(m, err)) return -1;
    for (size_t i = 0; i < m->weights_floats; i++) m->weights_block[i] = rng_normal(0.02f);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int i = 0; i < m->cfg.dim; i++) m->layers[l].attn_norm.data[i] = m->layers[l].ffn_norm.data[i] = 1.0f;
    for (int i = 0; i < m->cfg.dim; i++) m->final_norm.data[i] = 1.0f;
    return 0;
}

static int load_model(const char *what, LlamaModel *m) {
    NptErr err;
    int rc = !strcmp(what, "random15m")    ? random_model(m, 0, &err)
             : !strcmp(what, "random110m") ? random_model(m, 1, &err)
                                           : llama_load(what, m, &err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Necessary matmul FLOPs of one distillation step with every layer converted (the
 * formula is in docs/bench.md). Causal attention counts only the unmasked half. */
static double step_flops(const LlamaConfig *c, int B, int T, int r, int safe, int cached) {
    double N = (double)B * T, d = c->dim, f = c->hidden_dim, L = c->n_layers;
    double qd = (double)c->n_heads * c->head_dim, kvd = (double)c->n_kv_heads * c->head_dim;
    double proj = 2 * N * d * (qd + 2 * kvd) + 2 * N * qd * d;
    double core = 2.0 * B * c->n_heads * c->head_dim * T * (T + 1.0); /* QK^T + PV, causal */
    double mlp = 6 * N * d * f;
    double base = proj + core + mlp;
    double adapter = 2 * N * r * d + 2 * N * r * f * (safe ? 1 : 2);
    /* above the first layer A is folded into Wo (model/npt.c): the student never runs
     * Wo over the tokens, forward or backward, and makes the r x qd product A Wo */
    double wo = 2 * N * qd * d, fold = 2.0 * r * d * qd;
    /* the student's first layer sees the teacher's input: its attention block (proj +
     * core) is the teacher's, computed once (train/objective.c) */
    double teacher = cached ? 0 : L * base, student = L * (base + adapter) - (proj + core) - (L - 1) * (wo - fold);
    /* layers above the first: every activation gradient (attention core twice) plus the
     * adapter weight gradients; the first layer's input is frozen, so it only needs
     * W_down's input gradient, the B input gradients and the adapter weight gradients */
    double bwd_upper = (L - 1) * (base + core + 2 * adapter - wo + fold);
    double bwd_first = 2 * N * f * d + 2 * N * r * f * (safe ? 1 : 2) + adapter;
    /* ...and where nh r < kv heads x hd, A Wo goes on into the values: V is projected to r
     * columns per query head (forward and input gradient), P V, dV and dP run on r
     * columns instead of hd, for the per-head products F_h Wv_h (r hd d, each way) */
    double nh = c->n_heads, hd = c->head_dim, vfold = 0;
    if (nh * r < kvd)
        vfold = 2 * (2 * N * d * (kvd - nh * r)) + 3.0 * B * nh * (hd - r) * T * (T + 1.0) - 2 * (2.0 * r * hd * d * nh);
    return teacher + student + bwd_upper + bwd_first - (L - 1) * vfold;
}

static int run_sgemm(int M, int N, int K, int reps) {
    NptErr err;
    float *x = npt_aligned_alloc((size_t)M * K * sizeof(float), "sgemm x", &err);
    float *w = npt_aligned_alloc((size_t)N * K * sizeof(float), "sgemm w", &err);
    float *y = npt_aligned_alloc((size_t)M * N * sizeof(float), "sgemm y", &err);
    if (!x || !w || !y) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = rng_normal(1.0f);
    for (size_t i = 0; i < (size_t)N * K; i++) w[i] = rng_normal(1.0f);
    double best = 1e30;
    for (int i = 0; i < reps + 2; i++) { /* two untimed warm-ups */
        double t0 = npt_now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
        double dt = npt_now_seconds() - t0;
        if (i >= 2 && dt < best) best = dt;
    }
    printf("kind=sgemm shape=%dx%dx%d threads=%d gflops=%.1f\n", M, N, K, openblas_get_num_threads(),
           2.0 * M * N * K / best / 1e9);
    free(x), free(w), free(y);
    return 0;
}

static int run_train(const char *model, int safe, int warmup, int steps, double budget, int cached) {
    LlamaModel m;
    NptModel n;
    Optimizer opt;
    NptErr err;
    if (load_model(model, &m)) return 1;
    const LlamaConfig *c = &m.cfg;
    NptConfig nc = {.rank = RANK, .safe_mode = safe, .modulation_scale = 0.1f, .layer_mode = NPT_LAYERS_ALL,
                    .init_a_std = 0.02f, .init_b_add_std = 0.001f, .init_b_mul_std = 0.0f};
    if (npt_create(&n, &m, &nc, &err) || optim_init(&opt, OPTIM_ADAMW, n.params, n.grads, n.n_params, &err)) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    npt_init_weights(&n, &nc, 1);
    opt.weight_decay = 0.01f;
    int *tokens = npt_xmalloc((size_t)BATCH * SEQ * sizeof(int), "tokens");
    for (int i = 0; i < BATCH * SEQ; i++) tokens[i] = (int)(rng_u32() % (uint32_t)c->vocab_size);
    ObjectiveConfig oc = {.distill = 1, .lambda = 0.01f};
    /* the trainer's graphs, arenas and sharding (train/trainer.c), so RSS and speed are its own */
    ObjectiveRunner runner;
    if (objective_init(&runner, &m, &n, &oc, BATCH, SEQ, objective_auto_shards(&oc, &n, BATCH), &err)) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    TeacherCache cache;
    int64_t ids[BATCH];
    for (int b = 0; b < BATCH; b++) ids[b] = b;
    if (cached) {
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        if (teacher_cache_open(&cache, tmp, 1e12, BATCH, BATCH, c->n_layers + 2, SEQ, c->dim, &err)) {
            fprintf(stderr, "bench_step: %s\n", err.msg);
            return 1;
        }
        runner.teacher_cache = &cache;
    }
    double t0 = 0, cpu0 = 0, first_loss = 0, last_loss = 0, first_norm = 0;
    int s = 0;
    for (; s < warmup + steps && !(s > warmup && npt_now_seconds() - t0 > budget); s++) {
        if (s == warmup) {
            if (census_start) census_start();
            t0 = npt_now_seconds(), cpu0 = cpu_seconds();
        }
        npt_zero_grads(&n);
        ObjectiveValues v = objective_step(&runner, &m, &n, &oc, tokens, ids, 1.0f, 0);
        double norm = grad_global_norm(n.grads, n.n_params);
        if (!isfinite(v.loss) || !isfinite(norm)) {
            fprintf(stderr, "bench_step: non-finite loss or gradient at step %d\n", s);
            return 1;
        }
        grad_clip(n.grads, n.n_params, norm, 0.5f);
        optim_step(&opt, 1e-4f);
        if (s == 0) first_loss = v.loss, first_norm = norm;
        last_loss = v.loss;
    }
    steps = s - warmup;
    if (cached && (cache.failed || cache.hits != (int64_t)steps * BATCH)) {
        fprintf(stderr, "bench_step: the timed steps did not all read the teacher cache (%lld hits) %s\n",
                (long long)cache.hits, cache.last_error);
        return 1;
    }
    double wall = npt_now_seconds() - t0, sec = wall / steps, cores = (cpu_seconds() - cpu0) / wall;
    printf("kind=train threads=%d ms=%.1f tok_s=%.0f rss_mb=%.0f cores=%.2f flops=%.4g loss_first=%.6g loss_last=%.6g "
           "grad_norm_first=%.4g params=%zu steps=%d\n", omp_get_max_threads(), sec * 1e3, BATCH * SEQ / sec, peak_rss_mb(), cores,
           step_flops(c, BATCH, SEQ, RANK, safe, cached), first_loss, last_loss, first_norm, n.n_params, steps);
    if (census_report) census_report(stdout, steps, 10); /* the ten the bench prints */
    free(tokens);
    if (cached) teacher_cache_close(&cache);
    objective_free(&runner);
    optim_free(&opt);
    npt_free(&n);
    llama_free(&m);
    return 0;
}

static int run_generate(const char *model, int steps) {
    LlamaModel m;
    LlamaInfer s;
    NptErr err;
    if (load_model(model, &m)) return 1;
    if (steps > m.cfg.seq_len) steps = m.cfg.seq_len;
    if (llama_infer_init(&s, &m.cfg, NULL, steps, &err)) {
        fprintf(stderr, "bench_step: %s\n", err.msg);
        return 1;
    }
    int token = m.cfg.bos_id;
    double t0 = npt_now_seconds();
    for (int pos = 0; pos < steps; pos++) { /* greedy; never stops early, so every run does the same work */
        const float *logits = llama_infer_step(&s, &m, NULL, token, pos);
        token = 0;
        for (int j = 1; j < m.cfg.vocab_size; j++)
            if (logits[j] > logits[token]) token = j;
    }
    double sec = npt_now_seconds() - t0;
    printf("kind=generate threads=%d tokens=%d tok_s=%.0f rss_mb=%.0f\n", omp_get_max_threads(), steps, steps / sec,
           peak_rss_mb());
    llama_infer_free(&s);
    llama_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    openblas_set_num_threads(omp_get_max_threads());
    *(void **)&census_start = dlsym(RTLD_DEFAULT, "sgemm_census_start");
    *(void **)&census_report = dlsym(RTLD_DEFAULT, "sgemm_census_report");
    if (argc == 6 && !strcmp(argv[1], "sgemm")) return run_sgemm(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    int cached = argc == 8 && !strcmp(argv[7], "cached");
    if ((argc == 7 || cached) && !strcmp(argv[1], "train") && (!strcmp(argv[3], "full") || !strcmp(argv[3], "safe")) &&
        atoi(argv[4]) >= cached && atoi(argv[5]) > 0) /* cached: a warm-up step fills the cache */
        return run_train(argv[2], !strcmp(argv[3], "safe"), atoi(argv[4]), atoi(argv[5]), atof(argv[6]), cached);
    if (argc == 4 && !strcmp(argv[1], "generate")) return run_generate(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: bench_step sgemm M N K REPS | train MODEL|random15m|random110m full|safe WARMUP STEPS BUDGET [cached] |\n"
                    "                  generate MODEL|random15m|random110m STEPS\n");
    return 2;
}
