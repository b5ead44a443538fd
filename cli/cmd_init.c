/* cli/cmd_init.c — `npt init`: a new Llama model with random weights, written as an HF
 * directory (config.json, model.safetensors, tokenizer.json) that `npt train` with the
 * lm objective and objective.train_all_weights trains from scratch. The tokenizer is
 * the byte-level one npt makes (model/save_hf.h) unless --tokenizer names another. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../model/save_hf.h"
#include "commands.h"

static const char *init_help =
    "usage: npt init --out DIR [--dim N] [--layers N] [--heads N] [--kv-heads N] [--hidden N]\n"
    "                [--context N] [--tokenizer tokenizer.json] [--tied] [--seed S]\n\n"
    "Writes a randomly initialised Llama model as an HF directory (config.json,\n"
    "model.safetensors, tokenizer.json) for training from scratch with the lm objective.\n\n"
    "  --out DIR        new (or empty) directory; an existing non-empty one is refused\n"
    "  --dim N          d_model (default 128)\n"
    "  --layers N       decoder layers (default 4)\n"
    "  --heads N        attention heads (default 4)\n"
    "  --kv-heads N     key/value heads (default: = heads)\n"
    "  --hidden N       MLP width (default: 8/3 dim rounded up to a multiple of 32)\n"
    "  --context N      max_position_embeddings (default 256)\n"
    "  --tokenizer T    an HF tokenizer.json to copy (default: npt's byte-level tokenizer,\n"
    "                   256 byte tokens + <unk> <s> </s>, vocab 259)\n"
    "  --tied           share the embedding with the output layer\n"
    "  --seed S         weight initialisation seed (default 1)\n\n"
    "Init: embeddings and projections N(0, 0.02^2); o_proj and down_proj N(0, (0.02/sqrt(2 layers))^2)\n"
    "(GPT-2's residual scaling); RMSNorm weights 1.\n";

typedef struct {
    const char *out, *tokenizer;
    long dim, layers, heads, kv_heads, hidden, context, seed;
    int tied;
} InitArgs;

static int parse(int argc, char **argv, InitArgs *a) {
    *a = (InitArgs){.dim = 128, .layers = 4, .heads = 4, .context = 256, .seed = 1};
    const struct {
        const char *flag;
        long *dst, lo, hi;
    } ints[] = {{"--dim", &a->dim, 2, 1 << 16},       {"--layers", &a->layers, 1, 4096},
                {"--heads", &a->heads, 1, 4096},      {"--kv-heads", &a->kv_heads, 1, 4096},
                {"--hidden", &a->hidden, 1, 1 << 20}, {"--context", &a->context, 1, 1 << 24},
                {"--seed", &a->seed, 0, __LONG_MAX__}};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(init_help, stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "--tied")) {
            a->tied = 1;
            continue;
        }
        if (arg_is(argv[i], "--out") || arg_is(argv[i], "--tokenizer")) {
            const char **dst = arg_is(argv[i], "--out") ? &a->out : &a->tokenizer;
            if (!(*dst = arg_value(argc, argv, &i, arg_is(argv[i], "--out") ? "--out" : "--tokenizer", "init"))) return -1;
            continue;
        }
        size_t k = 0;
        while (k < NPT_ARRAY_LEN(ints) && !arg_is(argv[i], ints[k].flag)) k++;
        if (k == NPT_ARRAY_LEN(ints)) {
            fprintf(stderr, "npt init: error: unknown option '%s' (see npt init --help)\n", argv[i]);
            return -1;
        }
        const char *v = arg_value(argc, argv, &i, ints[k].flag, "init");
        if (!v || parse_int_arg(v, ints[k].flag, "init", ints[k].lo, ints[k].hi, ints[k].dst)) return -1;
    }
    if (!a->out) {
        fprintf(stderr, "npt init: error: --out DIR is required (the new model directory)\n");
        return -1;
    }
    if (!a->kv_heads) a->kv_heads = a->heads;
    if (!a->hidden) a->hidden = (8 * a->dim / 3 + 31) / 32 * 32;
    return 0;
}

static void fill_normal(const Tensor *t, double std, uint64_t *s) { npt_fill_normal(t->data, t->n, (float)std, s); }

static void fill_ones(const Tensor *t) {
    for (size_t i = 0; i < t->n; i++) t->data[i] = 1.0f;
}

static void init_weights(LlamaModel *m, uint64_t seed) {
    const double std = 0.02, resid_std = 0.02 / sqrt(2.0 * m->cfg.n_layers);
    uint64_t s = seed;
    fill_normal(&m->tok_emb, std, &s);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *L = &m->layers[l];
        fill_ones(&L->attn_norm);
        fill_ones(&L->ffn_norm);
        fill_normal(&L->wq, std, &s);
        fill_normal(&L->wk, std, &s);
        fill_normal(&L->wv, std, &s);
        fill_normal(&L->wo, resid_std, &s);
        fill_normal(&L->w_gate, std, &s);
        fill_normal(&L->w_up, std, &s);
        fill_normal(&L->w_down, resid_std, &s);
    }
    fill_ones(&m->final_norm);
    if (!m->cfg.tied) fill_normal(&m->lm_head, std, &s);
}

/* Vocabulary and BOS/EOS from the tokenizer the model will use. */
static int tokenizer_ids(const InitArgs *a, LlamaConfig *c, NptErr *err) {
    if (!a->tokenizer) {
        c->vocab_size = HF_BYTE_VOCAB, c->bos_id = HF_BYTE_BOS, c->eos_id = HF_BYTE_EOS;
        return 0;
    }
    Tokenizer *t = tokenizer_load(a->tokenizer, 0, err);
    if (!t) return -1;
    c->vocab_size = tokenizer_vocab_size(t), c->bos_id = tokenizer_bos_id(t), c->eos_id = tokenizer_eos_id(t);
    tokenizer_free(t);
    if (c->bos_id < 0) return npt_fail(err, "tokenizer %s defines no BOS token; npt's training windows start with BOS", a->tokenizer);
    if (c->eos_id < 0) c->eos_id = c->bos_id;
    return 0;
}

int cmd_init(int argc, char **argv) {
    InitArgs a;
    if (parse(argc, argv, &a)) return 2;
    NptErr err;
    LlamaModel m;
    memset(&m, 0, sizeof m);
    snprintf(m.path, sizeof m.path, "%s", a.out);
    LlamaConfig *c = &m.cfg;
    *c = (LlamaConfig){.dim = (int)a.dim, .hidden_dim = (int)a.hidden, .n_layers = (int)a.layers, .n_heads = (int)a.heads,
                       .n_kv_heads = (int)a.kv_heads, .seq_len = (int)a.context, .norm_eps = 1e-5f,
                       .rope_theta = 10000.0f, .rope = ROPE_HALF, .tied = a.tied};
    int rc = hf_check_out_dir(a.out, &err) || tokenizer_ids(&a, c, &err) || llama_alloc_weights(&m, &err);
    if (rc == 0) {
        init_weights(&m, (uint64_t)a.seed);
        rc = llama_finish_load(&m, &err) || hf_save_dir(&m, a.out, a.tokenizer, &err);
    }
    if (rc) {
        fprintf(stderr, "npt init: error: %s\n", err.msg);
        llama_free(&m);
        return 1;
    }
    size_t params = llama_param_count(&m);
    printf("npt init: wrote %s: Llama, dim %d, %d layers, %d heads (%d kv), hidden %d, vocab %d, context %d, %s, "
           "%.2fM parameters, %s tokenizer\n",
           a.out, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size, c->seq_len,
           c->tied ? "tied embeddings" : "untied", params / 1e6, a.tokenizer ? "copied" : "byte-level");
    llama_free(&m);
    return 0;
}
