/* tests/test_llama.c — the Llama forward pass on the real shared models.
 *
 * With no arguments it runs its own checks: the batched tape forward agrees with the
 * independent token-by-token KV-cache path, and sequences in a batch do not leak into
 * each other. With arguments it is the C side of the PyTorch parity test
 * (tests/py/test_parity.py):
 *   test_llama --dump MODEL TOKENS.i32 B T OUTDIR   logits, dLoss/dh0, loss
 *   test_llama --generate MODEL STEPS               greedy ids from BOS */
#include <math.h>
#include <string.h>

#include "model/llama.h"
#include "model/ops.h"
#include "test.h"

static Arena act, grads;
static Graph graph;

static int setup_graph(const LlamaConfig *c, int B, int T) {
    NptErr err;
    size_t bytes = llama_activation_bytes(c, B, T, 1);
    if (arena_init(&act, bytes, "activations", &err) || arena_init(&grads, bytes, "gradients", &err) ||
        graph_init(&graph, &act, &grads, 4096, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static void teardown_graph(void) {
    graph_free(&graph);
    arena_free(&act);
    arena_free(&grads);
}

/* Full forward; when h0_out is given, h0 is made a leaf that receives a gradient. */
static Tensor *forward(const LlamaModel *m, const int *tokens, int B, int T, Tensor **h0_out) {
    Tensor *h = llama_embed(&graph, m, tokens, B * T);
    if (h0_out) {
        h->requires_grad = 1;
        *h0_out = h;
    }
    for (int l = 0; l < m->cfg.n_layers; l++) h = llama_layer(&graph, m, l, h, B, T);
    return llama_logits(&graph, m, h);
}

static int dump(const char *model_path, const char *tokens_path, int B, int T, const char *outdir) {
    LlamaModel m;
    NptErr err;
    if (llama_load(model_path, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int *tokens = npt_xmalloc((size_t)B * T * sizeof(int), "tokens");
    FILE *f = fopen(tokens_path, "rb");
    if (!f || fread(tokens, sizeof(int), (size_t)B * T, f) != (size_t)B * T) {
        fprintf(stderr, "cannot read %d x %d tokens from %s\n", B, T, tokens_path);
        return 1;
    }
    fclose(f);
    if (setup_graph(&m.cfg, B, T)) return 1;
    Tensor *h0;
    Tensor *logits = forward(&m, tokens, B, T, &h0);
    int *targets = npt_xmalloc((size_t)B * T * sizeof(int), "targets");
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
    Tensor *loss = op_cross_entropy(&graph, logits, targets);
    graph_backward(&graph, loss, 1.0f);
    int rc = write_floats(outdir, "logits.f32", logits->data, logits->n) ||
             write_floats(outdir, "dx.f32", h0->grad, h0->n);
    char path[4200];
    snprintf(path, sizeof path, "%s/loss.txt", outdir);
    f = fopen(path, "w");
    if (!f || fprintf(f, "%.9g\n", loss->data[0]) < 0 || fclose(f) != 0) rc = 1;
    teardown_graph();
    llama_free(&m);
    free(tokens);
    free(targets);
    return rc;
}

static int generate(const char *model_path, int steps) {
    LlamaModel m;
    NptErr err;
    LlamaInfer s;
    if (llama_load(model_path, &m, &err) || llama_infer_init(&s, &m.cfg, NULL, steps + 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int token = m.cfg.bos_id;
    for (int pos = 0; pos < steps; pos++) {
        float *logits = llama_infer_step(&s, &m, NULL, token, pos);
        int best = 0;
        for (int j = 1; j < m.cfg.vocab_size; j++) best = logits[j] > logits[best] ? j : best;
        printf(pos ? " %d" : "%d", best);
        token = best;
    }
    printf("\n");
    llama_infer_free(&s);
    llama_free(&m);
    return 0;
}

/* The tape forward and the KV-cache path share no code above the BLAS calls. */
static void check_cache_path(const char *rel) {
    LlamaModel m;
    NptErr err;
    if (llama_load(shared_path(rel), &m, &err)) {
        check(0, "%s loads (%s)", rel, err.msg);
        return;
    }
    enum { B = 2, T = 24 };
    int tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 37 + 11) % m.cfg.vocab_size;
    tokens[0] = tokens[T] = m.cfg.bos_id;
    if (setup_graph(&m.cfg, B, T)) {
        check(0, "%s: KV-cache check: graph setup failed", rel);
        llama_free(&m);
        return;
    }
    graph.recording = 0;
    Tensor *logits = forward(&m, tokens, B, T, NULL);
    LlamaInfer s;
    if (llama_infer_init(&s, &m.cfg, NULL, T, &err)) {
        check(0, "inference buffers (%s)", err.msg);
        return;
    }
    double maxdiff = 0.0, maxabs = 0.0;
    int V = m.cfg.vocab_size;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *a = llama_infer_step(&s, &m, NULL, tokens[b * T + t], t);
            const float *r = logits->data + ((size_t)b * T + t) * V;
            for (int j = 0; j < V; j++) {
                maxdiff = fmax(maxdiff, fabs((double)a[j] - r[j]));
                maxabs = fmax(maxabs, fabs(r[j]));
            }
        }
    check(maxdiff / maxabs < 1e-5, "%s: batched tape forward == KV-cache forward (max abs diff %.2e, rel %.2e)", rel,
          maxdiff, maxdiff / maxabs);
    /* A sequence alone gives the same logits as inside a batch. */
    graph_reset(&graph);
    Tensor *single = forward(&m, tokens + T, 1, T, NULL);
    double bdiff = 0.0;
    for (size_t i = 0; i < single->n; i++) bdiff = fmax(bdiff, fabs((double)single->data[i] - logits->data[(size_t)T * V + i]));
    /* A leak between sequences would move logits by O(1). Bit equality is not promised:
     * OpenBLAS may sum a row in another order depending on its place in the matrix (an
     * AMD EPYC here gives 2.03e-5 on logits up to 17.6, where the previous machine gave 0),
     * so the bound is 1e-5 of the largest logit, a few float32 roundings of K-term sums. */
    check(bdiff / maxabs < 1e-5, "%s: sequences in a batch are independent (max diff %.2e, rel %.2e)", rel, bdiff,
          bdiff / maxabs);
    llama_infer_free(&s);
    teardown_graph();
    llama_free(&m);
}

int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "--dump")) return dump(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argv[6]);
    if (argc == 4 && !strcmp(argv[1], "--generate")) return generate(argv[2], atoi(argv[3]));
    if (argc != 1) {
        fprintf(stderr, "usage: test_llama [--dump MODEL TOKENS B T OUTDIR | --generate MODEL STEPS]\n");
        return 2;
    }
    check_cache_path("models/stories260K/stories260K.bin");
    check_cache_path("models/TinyStories-656K");
    return test_finish();
}
