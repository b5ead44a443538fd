/* cli/cmd_eval.c — `npt eval`: perplexity of the base model and, with adapters, of the
 * NPT model, per-layer fidelity and modulation magnitudes (train/eval.h) on the first
 * windows of a dataset, in file order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/dataset.h"
#include "../train/adapters.h"
#include "../train/eval.h"
#include "commands.h"

static const char *eval_help =
    "usage: npt eval --model M [--adapters CKPT] [--tokenizer T] --data FILE [--format text|u16|u32]\n"
    "                [--seq-len N] [--windows N] [--batch N] [--save-windows FILE] [--json]\n\n"
    "  --model M           HF directory, llama2.c .bin or .gguf file (the base model)\n"
    "  --adapters CKPT     npt checkpoint: compare the NPT model with the base (without it: base\n"
    "                      perplexity only)\n"
    "  --tokenizer T       tokenizer.json or llama2.c tokenizer .bin (default: the one beside the model)\n"
    "  --data FILE         evaluation data: text (documents split by lines <|endoftext|>) or tokens\n"
    "  --format F          text (default), u16 or u32 (raw little-endian token ids)\n"
    "  --seq-len N         tokens per window, BOS included (default min(256, model context))\n"
    "  --windows N         evaluate the first N windows of the data (default 64; fewer if the data\n"
    "                      holds fewer)\n"
    "  --batch N           windows per forward pass (default 8; memory grows with it)\n"
    "  --save-windows FILE write the evaluated windows as uint32 token ids [windows x seq-len]\n"
    "  --json              one JSON object instead of the table (see docs/eval.md)\n";

typedef struct {
    const char *model, *adapters, *tokenizer, *data, *format, *save_windows;
    long seq_len, windows, batch;
    int json;
} EvalArgs;

static int parse(int argc, char **argv, EvalArgs *a) {
    *a = (EvalArgs){.format = "text", .windows = 64, .batch = 8};
    for (int i = 1; i < argc; i++) {
        const char *v;
        struct { const char *flag, **dst; } str[] = {
            {"--model", &a->model}, {"--adapters", &a->adapters}, {"--tokenizer", &a->tokenizer},
            {"--data", &a->data}, {"--format", &a->format}, {"--save-windows", &a->save_windows}};
        struct { const char *flag; long *dst, lo, hi; } num[] = {
            {"--seq-len", &a->seq_len, 2, 1 << 20}, {"--windows", &a->windows, 1, 1 << 30}, {"--batch", &a->batch, 1, 1 << 16}};
        int matched = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(eval_help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--json")) {
            a->json = matched = 1;
        }
        for (size_t s = 0; s < NPT_ARRAY_LEN(str) && !matched; s++)
            if (arg_is(argv[i], str[s].flag)) {
                if (!(*str[s].dst = arg_value(argc, argv, &i, str[s].flag, "eval"))) return -1;
                matched = 1;
            }
        for (size_t s = 0; s < NPT_ARRAY_LEN(num) && !matched; s++)
            if (arg_is(argv[i], num[s].flag)) {
                if (!(v = arg_value(argc, argv, &i, num[s].flag, "eval")) ||
                    parse_int_arg(v, num[s].flag, "eval", num[s].lo, num[s].hi, num[s].dst))
                    return -1;
                matched = 1;
            }
        if (!matched) {
            fprintf(stderr, "npt eval: error: unknown option '%s' (see npt eval --help)\n", argv[i]);
            return -1;
        }
    }
    if (!a->model || !a->data) {
        fprintf(stderr, "npt eval: error: %s is required (see npt eval --help)\n", !a->model ? "--model" : "--data");
        return -1;
    }
    if (strcmp(a->format, "text") && strcmp(a->format, "u16") && strcmp(a->format, "u32")) {
        fprintf(stderr, "npt eval: error: --format must be text, u16 or u32, got '%s'\n", a->format);
        return -1;
    }
    return 0;
}

typedef struct {
    LlamaModel m;
    Tokenizer *tok;
    NptModel npt, *np;
    Dataset ds;
    int have_model, have_ds;
    int *tokens;
} Session;

static void session_free(Session *s) {
    free(s->tokens);
    if (s->have_ds) dataset_free(&s->ds);
    if (s->np) npt_free(s->np);
    tokenizer_free(s->tok);
    if (s->have_model) llama_free(&s->m);
}

/* Model, adapters (checked against the model by adapters_load), tokenizer for text
 * data, and the first n windows of the data in file order. Returns the window count. */
static int session_open(Session *s, const EvalArgs *a, int *T_out, NptErr *err) {
    memset(s, 0, sizeof *s);
    if (load_full_model(a->model, &s->m, err)) return -1;
    s->have_model = 1;
    if (a->adapters) {
        if (adapters_load(a->adapters, &s->m, &s->npt, err)) return -1;
        s->np = &s->npt;
    }
    int text = !strcmp(a->format, "text");
    const char *tp = a->tokenizer ? a->tokenizer : s->m.tokenizer_path;
    if (text && !tp[0]) return npt_fail(err, "no tokenizer found beside %s; pass --tokenizer (text data is tokenized)", a->model);
    if (text && !(s->tok = tokenizer_load(tp, s->m.cfg.vocab_size, err))) return -1;
    int T = a->seq_len ? (int)a->seq_len : 256;
    if (T > s->m.cfg.seq_len) {
        if (a->seq_len) return npt_fail(err, "--seq-len %d is longer than the model's context of %d", T, s->m.cfg.seq_len);
        T = s->m.cfg.seq_len;
    }
    DatasetFormat fmt = text ? DATASET_TEXT : !strcmp(a->format, "u16") ? DATASET_U16 : DATASET_U32;
    int bos = s->tok ? tokenizer_bos_id(s->tok) : s->m.cfg.bos_id;
    if (dataset_open(&s->ds, a->data, fmt, s->tok, s->m.cfg.vocab_size, bos, T, 0, 0, err)) return -1;
    s->have_ds = 1;
    int n = s->ds.n_windows < (size_t)a->windows ? (int)s->ds.n_windows : (int)a->windows;
    if (n < a->windows)
        fprintf(stderr, "npt eval: note: %s holds %d windows of %d tokens; evaluating all of them\n", a->data, n, T);
    if (!(s->tokens = npt_try_malloc((size_t)n * T * sizeof(int), "evaluation windows", err))) return -1;
    if (dataset_next_batch(&s->ds, n, s->tokens, NULL)) return npt_fail(err, "%s", s->ds.io_err.msg);
    *T_out = T;
    return n;
}

static int save_windows(const char *path, const int *tokens, size_t n, NptErr *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return npt_fail(err, "cannot write %s", path);
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        uint32_t v = (uint32_t)tokens[i];
        bad = fwrite(&v, sizeof v, 1, f) != 1;
    }
    if (fclose(f) != 0 || bad) return npt_fail(err, "writing %s failed (disk full?)", path);
    return 0;
}

int cmd_eval(int argc, char **argv) {
    EvalArgs a;
    if (parse(argc, argv, &a)) return 2;
    Session s;
    NptErr err;
    EvalResult r;
    int T = 0, n = session_open(&s, &a, &T, &err);
    int rc = 1;
    if (n < 0) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else if (a.save_windows && save_windows(a.save_windows, s.tokens, (size_t)n * T, &err)) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else if (eval_run(&s.m, s.np, s.tokens, n, T, (int)a.batch, &r, &err)) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else {
        if (a.json) {
            eval_write_json(stdout, &r);
            putchar('\n');
        } else {
            printf("model     %s\nadapters  %s\ndata      %s\n", a.model, a.adapters ? a.adapters : "(none: base model only)", a.data);
            eval_print_table(stdout, &r);
        }
        eval_result_free(&r);
        rc = 0;
    }
    session_free(&s);
    return rc;
}
