/* cli/cmd_eval.c — `npt eval`: perplexity of the base model and, with adapters, of the
 * NPT model, per-layer fidelity and modulation magnitudes (train/eval.h) on the first
 * windows of a dataset, in file order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../train/eval.h"
#include "../util/atomic_file.h"
#include "commands.h"
#include "session.h"

static const char *eval_help =
    "usage: npt eval --model M [--adapters CKPT] [--tokenizer T] --data FILE [--format F]\n"
    "                [--seq-len N] [--windows N] [--batch N] [--save-windows FILE [--force]] [--json]\n\n"
    "  --model M           HF directory, llama2.c .bin or .gguf file (the base model)\n"
    "  --adapters CKPT     npt checkpoint: compare the NPT model with the base (without it: base\n"
    "                      perplexity only)\n"
    "  --tokenizer T       tokenizer.json or llama2.c tokenizer .bin (default: the one beside the model)\n"
    "  --data FILE         evaluation data: text (documents split by lines <|endoftext|>) or tokens\n"
    "  --format F          auto (default: from the name), text, jsonl, u16, u32 (raw token ids), hdf5\n"
    "  --seq-len N         tokens per window, BOS included, at least 3 (default min(256, model context));\n"
    "                      the token after the BOS is not scored (docs/eval.md)\n"
    "  --windows N         evaluate the first N windows of the data (default 64; fewer if the data\n"
    "                      holds fewer)\n"
    "  --batch N           windows per forward pass (default 8; memory grows with it)\n"
    "  --save-windows FILE write the evaluated windows as uint32 token ids [windows x seq-len]; an\n"
    "                      existing FILE is kept unless --force\n"
    "  --json              one JSON object instead of the table (see docs/eval.md)\n";

typedef struct {
    const char *model, *adapters, *tokenizer, *data, *format, *save_windows;
    long seq_len, windows, batch;
    int json, force;
} EvalArgs;

static int parse(int argc, char **argv, EvalArgs *a) {
    *a = (EvalArgs){.format = "auto", .windows = 64, .batch = 8};
    for (int i = 1; i < argc; i++) {
        const char *v;
        struct { const char *flag, **dst; } str[] = {
            {"--model", &a->model}, {"--adapters", &a->adapters}, {"--tokenizer", &a->tokenizer},
            {"--data", &a->data}, {"--format", &a->format}, {"--save-windows", &a->save_windows}};
        struct { const char *flag; long *dst, lo, hi; } num[] = {
            {"--seq-len", &a->seq_len, 3, 1 << 20}, {"--windows", &a->windows, 1, 1 << 30}, {"--batch", &a->batch, 1, 1 << 16}};
        int matched = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(eval_help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--json")) {
            a->json = matched = 1;
        } else if (!strcmp(argv[i], "--force")) {
            a->force = matched = 1;
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
    if (a->force && !a->save_windows) { /* refused rather than ignored, as inspect does */
        fprintf(stderr, "npt eval: error: --force only goes with --save-windows FILE (see npt eval --help)\n");
        return -1;
    }
    DatasetFormat f;
    if (dataset_parse_format(a->format, &f)) {
        fprintf(stderr, "npt eval: error: --format must be auto, text, jsonl, u16, u32 or hdf5, got '%s'\n", a->format);
        return -1;
    }
    return 0;
}

/* --save-windows may not be any file eval reads (session_refuse_output). tok_beside:
 * the tokenizer found beside the model, NULL before it is loaded. */
static int refuse_over_inputs(const EvalArgs *a, const char *tok_beside) {
    return session_refuse_output(a->save_windows, "--save-windows", a->model, a->tokenizer, tok_beside, a->data,
                                 a->adapters, "eval");
}

/* Model, adapters (checked against the model by adapters_load), tokenizer, and the first
 * windows of the data in file order into *tokens. Returns the window count. */
static int open_windows(Session *s, const EvalArgs *a, int **tokens, int *T_out, NptErr *err) {
    if (session_open(s, a->model, a->tokenizer, 0, a->adapters, err) ||
        session_open_data(s, a->data, a->format, a->seq_len, a->windows, err))
        return -1;
    int T = s->ds.seq_len;
    int n = s->ds.n_windows < (size_t)a->windows ? (int)s->ds.n_windows : (int)a->windows;
    if (n < a->windows)
        fprintf(stderr, "npt eval: note: %s holds %d window%s of %d tokens; evaluating %s\n", a->data, n,
                n == 1 ? "" : "s", T, n == 1 ? "it" : "all of them");
    if (!(*tokens = npt_try_malloc((size_t)n * T * sizeof(int), "evaluation windows", err))) return -1;
    if (dataset_next_batch(&s->ds, n, *tokens, NULL)) return npt_fail(err, "%s", s->ds.io_err.msg);
    *T_out = T;
    return n;
}

/* A model whose logits overflow float32 has no perplexity: name the first such window
 * and the debug command that shows where its first NaN/Inf is born (exit 3, as debug). */
static int report_non_finite(const EvalArgs *a, const EvalResult *r, int T) {
    int base = r->bad_window_base >= 0, w = base ? r->bad_window_base : r->bad_window_npt;
    fprintf(stderr, "npt eval: error: the %s model's logits are not finite in window %d of %s (it overflows float32 there); "
            "see where with: npt debug forward --model %s", base ? "base" : "NPT", w, a->data, a->model);
    if (!base) fprintf(stderr, " --adapters %s", a->adapters);
    if (a->tokenizer) fprintf(stderr, " --tokenizer %s", a->tokenizer);
    fprintf(stderr, " --data %s --sample %d --seq-len %d", a->data, w, T);
    if (strcmp(a->format, "auto")) fprintf(stderr, " --format %s", a->format);
    fputc('\n', stderr);
    return 3;
}

/* Through a temporary and a rename, so a full disk never leaves a cut file at PATH. */
static int save_windows(const char *path, const int *tokens, size_t n, int force, NptErr *err) {
    NptAtomicFile o;
    FILE *f = npt_atomic_open(&o, path, err);
    if (!f) return -1;
    o.no_replace = !force; /* a FILE made while the windows were read is kept too */
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)tokens[i];
        if (fwrite(&v, sizeof v, 1, f) != 1) {
            npt_atomic_abort(&o);
            return npt_fail(err, "writing %s failed (disk full?)", path);
        }
    }
    return npt_atomic_commit(&o, err);
}

int cmd_eval(int argc, char **argv) {
    EvalArgs a;
    if (parse(argc, argv, &a)) return 2;
    if (a.save_windows &&
        (refuse_over_inputs(&a, NULL) || refuse_existing_output(a.save_windows, "--save-windows", a.force, "eval")))
        return 1;
    Session s;
    NptErr err;
    EvalResult r;
    int *tokens = NULL, T = 0, n = open_windows(&s, &a, &tokens, &T, &err);
    int rc = 1;
    if (n < 0) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else if (!a.tokenizer && refuse_over_inputs(&a, s.m.tokenizer_path)) {
        /* printed: --save-windows is the tokenizer found beside the model */
    } else if (a.save_windows && save_windows(a.save_windows, tokens, (size_t)n * T, a.force, &err)) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else if (eval_run(&s.m, s.np, tokens, n, T, (int)a.batch, &r, &err)) {
        fprintf(stderr, "npt eval: error: %s\n", err.msg);
    } else if (r.bad_window_base >= 0 || r.bad_window_npt >= 0) {
        rc = report_non_finite(&a, &r, T);
        eval_result_free(&r);
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
    free(tokens);
    session_free(&s);
    return rc;
}
