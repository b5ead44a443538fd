/* cli/cmd_debug.c — `npt debug`: where is the first NaN/Inf born (SPEC section 7).
 * Sub-commands forward, layers, scan, overlap and replay over model/debug.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../model/debug.h"
#include "../util/atomic_file.h"
#include "commands.h"
#include "session.h"

static const char *debug_help =
    "usage: npt debug forward --model M [--adapters CKPT] [--tokenizer T] INPUT [--backward]\n"
    "                         [--precision bf16|fp16] [--save FILE.h5 [--force]] [--json]\n"
    "       npt debug layers  --model M [--adapters CKPT] [--tokenizer T] INPUT [--precision P]\n"
    "       npt debug scan    --model M [--adapters CKPT] [--tokenizer T] --data FILE --samples N\n"
    "                         --out LIST.tsv [--force] [--seq-len T] [--precision P]\n"
    "       npt debug overlap A.tsv B.tsv\n"
    "       npt debug replay FILE.h5\n\n"
    "  INPUT is --prompt TEXT, or --data FILE --sample N [--seq-len T] [--format F]\n"
    "  forward  runs embedding, every layer (NPT where the adapters convert it), logits and the\n"
    "           next-token loss checking every op; reports the first op whose output is\n"
    "           non-finite: layer, op, shapes, NaN/Inf counts, input ranges, token positions\n"
    "  layers   per-layer table: OK / NaN / Inf with the range of each layer's output\n"
    "  scan     runs windows 0..N-1 of a dataset, writes the failing ones to LIST.tsv\n"
    "  overlap  compares two scan lists: samples in common, only in A, only in B\n"
    "  replay   re-runs the op saved by forward --save on its saved inputs\n"
    "  --backward        also replay the backward pass of the loss, node by node\n"
    "  --precision P     round weights and every op output to bf16 or fp16 (default float32)\n"
    "  --save FILE.h5    write the offending op's inputs (HDF5) for npt debug replay\n"
    "  --force           replace an existing --save or --out file (without it, it is kept)\n"
    "  --seq-len T       window length for --data (default min(256, model context))\n"
    "  --format F        data format: auto (default: from the name), text, jsonl, u16, u32, hdf5\n"
    "  --json            machine-readable report\n"
    "exit status: 0 all finite, 3 a non-finite value was found, 1 error, 2 usage\n";

#define SCAN_HEADER "# sample" /* first line of a scan list */

typedef struct {
    const char *sub, *model, *adapters, *tokenizer, *prompt, *data, *out, *save, *format;
    const char *files[2];
    int n_files;
    long sample, samples, seq_len;
    int backward, json, force;
    DebugPrecision precision;
} DebugArgs;

static int parse(int argc, char **argv, DebugArgs *a) {
    *a = (DebugArgs){.sample = -1, .samples = -1, .format = "auto"};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(debug_help, argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    a->sub = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *v;
        struct { const char *flag, **dst; } str[] = {
            {"--model", &a->model}, {"--adapters", &a->adapters}, {"--tokenizer", &a->tokenizer},
            {"--prompt", &a->prompt}, {"--data", &a->data}, {"--out", &a->out}, {"--save", &a->save},
            {"--format", &a->format}};
        int matched = 0;
        for (size_t s = 0; s < NPT_ARRAY_LEN(str) && !matched; s++)
            if (arg_is(argv[i], str[s].flag)) {
                if (!(*str[s].dst = arg_value(argc, argv, &i, str[s].flag, "debug"))) return -1;
                matched = 1;
            }
        if (matched) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(debug_help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--json")) {
            a->json = 1;
        } else if (!strcmp(argv[i], "--backward")) {
            a->backward = 1;
        } else if (!strcmp(argv[i], "--force")) {
            a->force = 1;
        } else if (arg_is(argv[i], "--sample")) {
            if (!(v = arg_value(argc, argv, &i, "--sample", "debug")) || parse_int_arg(v, "--sample", "debug", 0, 1L << 40, &a->sample))
                return -1;
        } else if (arg_is(argv[i], "--samples")) {
            if (!(v = arg_value(argc, argv, &i, "--samples", "debug")) || parse_int_arg(v, "--samples", "debug", 1, 1L << 40, &a->samples))
                return -1;
        } else if (arg_is(argv[i], "--seq-len")) {
            if (!(v = arg_value(argc, argv, &i, "--seq-len", "debug")) || parse_int_arg(v, "--seq-len", "debug", 2, 1 << 20, &a->seq_len))
                return -1;
        } else if (arg_is(argv[i], "--precision")) {
            if (!(v = arg_value(argc, argv, &i, "--precision", "debug"))) return -1;
            if (debug_parse_precision(v, &a->precision)) {
                fprintf(stderr, "npt debug: error: --precision expects bf16, fp16 or float32, got '%s'\n", v);
                return -1;
            }
        } else if (argv[i][0] != '-' && a->n_files < 2) {
            a->files[a->n_files++] = argv[i];
        } else {
            fprintf(stderr, "npt debug: error: unexpected argument '%s' (see npt debug --help)\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

/* Each flag belongs to some sub-commands; given to another it is a usage error, not
 * silently ignored (scan with --prompt would read past the prompt's tokens). */
static int check_sub_flags(const DebugArgs *a) {
    static const char *const subs = " forward layers scan overlap replay ";
    char key[64];
    snprintf(key, sizeof key, " %s ", a->sub);
    if (!strstr(subs, key)) return 0; /* cmd_debug names the unknown sub-command */
    const struct { const char *flag; int given; const char *for_subs; } t[] = {
        {"--model", a->model != NULL, " forward layers scan "},
        {"--adapters", a->adapters != NULL, " forward layers scan "},
        {"--tokenizer", a->tokenizer != NULL, " forward layers scan "},
        {"--prompt", a->prompt != NULL, " forward layers "},
        {"--data", a->data != NULL, " forward layers scan "},
        {"--sample", a->sample >= 0, " forward layers "},
        {"--samples", a->samples >= 0, " scan "},
        {"--seq-len", a->seq_len > 0, " forward layers scan "},
        {"--format", strcmp(a->format, "auto") != 0, " forward layers scan "},
        {"--precision", a->precision != DEBUG_F32, " forward layers scan "},
        {"--backward", a->backward, " forward "},
        {"--save", a->save != NULL, " forward "},
        {"--out", a->out != NULL, " scan "},
        {"--force", a->force, " forward scan "},
        {"--json", a->json, " forward layers "},
        {"a file argument", a->n_files > 0, " overlap replay "},
    };
    for (size_t i = 0; i < NPT_ARRAY_LEN(t); i++)
        if (t[i].given && !strstr(t[i].for_subs, key)) {
            fprintf(stderr, "npt debug %s: error: %s does not apply to %s (it is for:%.*s; see npt debug --help)\n", a->sub,
                    t[i].flag, a->sub, (int)strlen(t[i].for_subs) - 1, t[i].for_subs);
            return -1;
        }
    return 0;
}

/* ---------------------------------------------------------------- setup */

/* --save or --out may not be any file the command reads (session_refuse_output).
 * tok_beside: the tokenizer found beside the model, NULL before it is loaded. */
static int refuse_over_inputs(const DebugArgs *a, const char *tok_beside) {
    return session_refuse_output(a->out ? a->out : a->save, a->out ? "--out" : "--save", a->model, a->tokenizer,
                                 tok_beside, a->data, a->adapters, a->out ? "debug scan" : "debug forward");
}

/* Model, tokenizer (required for a prompt, or text data), adapters and the data. */
static int open_session(Session *s, const DebugArgs *a) {
    NptErr err;
    if (!a->model) {
        fprintf(stderr, "npt debug: error: --model is required\n");
        return -1;
    }
    if (session_open(s, a->model, a->tokenizer, a->prompt != NULL, a->adapters, &err) ||
        (a->data && session_open_data(s, a->data, a->format, a->seq_len, a->sample >= 0 ? a->sample + 1 : a->samples > 0 ? a->samples : 0, &err))) {
        fprintf(stderr, "npt debug: error: %s\n", err.msg);
        session_free(s);
        return -1;
    }
    if (!a->tokenizer && refuse_over_inputs(a, s->m.tokenizer_path)) {
        session_free(s);
        return -1;
    }
    return 0;
}

/* Tokens of the prompt or of dataset window `sample`; returns T or -1. */
static int input_tokens(Session *s, const DebugArgs *a, long sample, int *ids, int cap) {
    NptErr err;
    if (a->prompt) {
        int n = tokenizer_encode(s->tok, a->prompt, 1, ids, cap, &err);
        if (n < 0) fprintf(stderr, "npt debug: error: %s\n", err.msg);
        else if (n > cap) fprintf(stderr, "npt debug: error: the prompt is %d tokens, the model takes %d\n", n, cap);
        return n > cap ? -1 : n;
    }
    if ((size_t)sample >= s->ds.n_windows) {
        fprintf(stderr, "npt debug: error: sample %ld is past the %zu windows of %s\n", sample, s->ds.n_windows, a->data);
        return -1;
    }
    if (dataset_window(&s->ds, (uint64_t)sample, ids, &err)) {
        fprintf(stderr, "npt debug: error: %s\n", err.msg);
        return -1;
    }
    return s->ds.seq_len;
}

/* ---------------------------------------------------------------- forward, layers */

static void print_json_stats(const DebugStats *s) {
    printf("{\"name\":\"%s\",\"shape\":[", s->name);
    for (int d = 0; d < s->ndim; d++) printf(d ? ",%d" : "%d", s->shape[d]);
    printf("],\"nan\":%zu,\"inf\":%zu,\"min\":%.9g,\"max\":%.9g,\"absmax\":%.9g}", s->nan, s->inf, s->min, s->max, s->absmax);
}

static void print_json(const DebugResult *r, DebugPrecision p, int f32_found) {
    const DebugProducer *q = &r->first;
    printf("{\"precision\":\"%s\",\"found\":%s,\"ops\":%ld,\"loss\":", debug_precision_name(p), q->found ? "true" : "false", r->n_ops);
    if (isfinite(r->loss)) printf("%.9g", r->loss);
    else printf("null");
    if (p != DEBUG_F32) printf(",\"float32_found\":%s", f32_found ? "true" : "false");
    if (q->found) {
        printf(",\"pass\":\"%s\",\"layer\":%d,\"op\":\"%s\",\"op_index\":%ld,\"overflow\":%s,\"raw_absmax\":%.9g,\"bad_input\":%d,\"inner\":",
               q->backward ? "backward" : "forward", q->layer, q->op, q->op_index, q->overflow ? "true" : "false",
               q->raw_absmax, q->bad_input);
        if (q->inner[0]) printf("\"%s\",\"output\":", q->inner); /* a fixed name from model/ops.c: no escaping */
        else printf("null,\"output\":");
        print_json_stats(&q->out);
        printf(",\"inputs\":[");
        for (int i = 0; i < q->n_in; i++) {
            if (i) putchar(',');
            print_json_stats(&q->in[i]);
        }
        printf("],\"positions\":[");
        for (int i = 0; i < q->n_rows; i++) printf(i ? ",%d" : "%d", q->rows[i]);
        printf("],\"positions_total\":%d,\"saved\":%s", q->rows_total, r->saved ? "true" : "false");
    }
    const DebugZeroFactor *z = &r->zero_factor;
    if (z->found) {
        printf(",\"zero_factor\":{\"layer\":%d,\"op\":\"%s\",\"op_index\":%ld,\"zeros\":%zu,\"n\":%zu,\"positions\":[", z->layer,
               z->op, z->op_index, z->zeros, z->n);
        for (int i = 0; i < z->n_rows; i++) printf(i ? ",%d" : "%d", z->rows[i]);
        printf("],\"positions_total\":%d}", z->rows_total);
    }
    printf(",\"layers\":[");
    for (int i = 0; i < r->n_stats; i++)
        printf("%s{\"state\":\"%s\",\"nan\":%zu,\"inf\":%zu,\"min\":%.9g,\"max\":%.9g}", i ? "," : "",
               debug_layer_state(&r->layers[i]), r->layers[i].nan, r->layers[i].inf, r->layers[i].min, r->layers[i].max);
    printf("]}\n");
}

static void round_weights(Session *s, DebugPrecision p) {
    size_t over = debug_round_weights(&s->m, s->np, p);
    if (over) fprintf(stderr, "npt debug: warning: %zu weights exceed the %s range and became Inf\n", over, debug_precision_name(p));
}

static int check_input_flags(const DebugArgs *a) {
    if (!a->prompt == !a->data || (a->data && a->sample < 0)) {
        fprintf(stderr, "npt debug %s: error: give --prompt TEXT, or --data FILE with --sample N\n", a->sub);
        return -1;
    }
    return 0;
}

/* forward and layers: in reduced precision the float32 run comes first, for comparison,
 * then the weights are rounded in place (this process owns its copy). */
static int run_forward(const DebugArgs *a, int layers_only) {
    if (check_input_flags(a)) return 2;
    Session s;
    if (open_session(&s, a)) return 1;
    int cap = a->data ? s.ds.seq_len : s.m.cfg.seq_len; /* a prompt may fill the context */
    int *ids = malloc((size_t)(cap + 1) * sizeof(int));
    int T = ids ? input_tokens(&s, a, a->sample, ids, cap) : -1;
    int rc = 1, f32_found = 0;
    NptErr err;
    DebugResult r;
    DebugOptions o = {.backward = a->backward && !layers_only};
    if (s.np) o.grads = s.np->grads, o.n_grads = s.np->n_params; /* each run starts from zero */
    if (T < 1) goto done;
    if (a->precision != DEBUG_F32) {
        if (debug_run(&s.m, s.np, ids, T, &o, &r, &err)) goto fail;
        f32_found = r.first.found;
        if (!a->json) {
            printf("float32: ");
            if (f32_found) printf("first non-finite at layer %d op %s\n", r.first.layer, r.first.op);
            else printf("all finite\n");
        }
        debug_result_free(&r);
        round_weights(&s, a->precision);
        o.precision = a->precision;
        if (!a->json) printf(layers_only ? "%s:\n" : "%s: ", debug_precision_name(a->precision));
    }
    o.save_path = layers_only ? NULL : a->save;
    o.save_keep_existing = !a->force;
    if (debug_run(&s.m, s.np, ids, T, &o, &r, &err)) goto fail;
    if (a->json) print_json(&r, a->precision, f32_found);
    else if (layers_only) debug_print_layers(stdout, &r);
    else {
        debug_print_producer(stdout, &r, ids);
        if (r.saved) printf("inputs saved to %s; replay with: npt debug replay %s\n", a->save, a->save);
        else if (r.first.found && a->save && r.first.backward) printf("(backward producers are not saved)\n");
    }
    rc = debug_found(&r) ? 3 : 0;
    debug_result_free(&r);
    goto done;
fail:
    fprintf(stderr, "npt debug: error: %s\n", err.msg);
done:
    free(ids);
    session_free(&s);
    return rc;
}

/* ---------------------------------------------------------------- scan, overlap */

/* Length of the valid UTF-8 sequence at s, 0 if invalid. */
static int utf8_len(const unsigned char *s) {
    int n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] >> 6) != 2) return 0;
    return n;
}

/* First ~60 characters of the window's text on one line of valid UTF-8 (control
 * characters and stray bytes of byte-fallback tokens become spaces and '?'). */
static void write_excerpt(FILE *f, const Tokenizer *tok, const int *ids, int T) {
    NptErr err;
    char *text = tok ? tokenizer_decode(tok, ids + 1, T - 1 < 40 ? T - 1 : 40, &err) : NULL;
    if (!text) {
        fputs("-", f);
        return;
    }
    const unsigned char *c = (const unsigned char *)text;
    for (int chars = 0; *c && chars < 60; chars++) {
        int n = utf8_len(c);
        if (n == 0) fputc('?', f), n = 1;
        else if (n == 1) fputc(*c < 0x20 ? ' ' : *c, f);
        else fwrite(c, 1, (size_t)n, f);
        c += n;
    }
    free(text);
}

/* The list is written to LIST.tmp.PID.X and renamed over LIST only once complete, so an
 * interrupted or failed scan leaves the previous list (with --force) as it was. */
static int run_scan(const DebugArgs *a) {
    if (!a->data || a->samples < 1 || !a->out) {
        fprintf(stderr, "npt debug scan: error: --data FILE, --samples N and --out LIST.tsv are required\n");
        return 2;
    }
    Session s;
    if (open_session(&s, a)) return 1;
    int T = s.ds.seq_len;
    int *ids = malloc((size_t)T * sizeof(int));
    NptErr err;
    NptAtomicFile out;
    FILE *f = ids ? npt_atomic_open(&out, a->out, &err) : NULL;
    int failing = 0, complete = 0;
    if (f) out.no_replace = !a->force; /* a LIST made during the scan is kept too */
    long n = a->samples < (long)s.ds.n_windows ? a->samples : (long)s.ds.n_windows, w = 0;
    if (!f) {
        fprintf(stderr, "npt debug scan: error: %s\n", ids ? err.msg : "out of memory for a window's tokens");
        free(ids);
        session_free(&s);
        return 1;
    }
    round_weights(&s, a->precision);
    fprintf(f, SCAN_HEADER "\tlayer\top\tnan\tinf\tpositions\texcerpt\n");
    for (; w < n && !ferror(f); w++) { /* a write error (full disk) stops the scan; the commit names it */
        if (input_tokens(&s, a, w, ids, T) < 0) break;
        DebugOptions o = {.precision = a->precision};
        DebugResult r;
        if (debug_run(&s.m, s.np, ids, T, &o, &r, &err)) {
            fprintf(stderr, "npt debug scan: error: %s\n", err.msg);
            break;
        }
        const DebugProducer *p = &r.first;
        if (p->found) {
            failing++;
            fprintf(f, "%ld\t%d\t%s\t%zu\t%zu\t%d\t", w, p->layer, p->op, p->out.nan, p->out.inf, p->rows_total);
            write_excerpt(f, s.tok, ids, T);
            fputc('\n', f);
        }
        debug_result_free(&r);
    }
    complete = w == n || ferror(f); /* else an error was printed: the list is given up */
    int rc = 1;
    if (!complete) {
        npt_atomic_abort(&out);
    } else if (npt_atomic_commit(&out, &err)) { /* flush, fsync, rename; the temp file is removed on failure */
        fprintf(stderr, "npt debug scan: error: %s; no scan list was written (nothing was replaced)\n", err.msg);
    } else {
        rc = failing ? 3 : 0;
        printf("%d of %ld samples (%d tokens each, %s) have non-finite values; list in %s\n", failing, n, T,
               debug_precision_name(a->precision), a->out);
    }
    free(ids);
    session_free(&s);
    return rc;
}

/* Sample ids (first column) of a scan list, ascending as scan writes them. */
static long *read_list(const char *path, int *count) {
    NptErr err;
    FILE *f;
    int rc = npt_fopen_input(path, "scan list", &f, &err);
    if (rc) {
        if (rc == -2 && errno == EISDIR) /* a directory keeps the message it always had */
            npt_fail(&err, "cannot read %s: %s", path, strerror(EISDIR));
        fprintf(stderr, "npt debug overlap: error: %s\n", err.msg);
        return NULL;
    }
    long *ids = NULL;
    int n = 0, cap = 0, line_no = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *end;
        line_no++;
        if (line_no == 1 && strncmp(line, SCAN_HEADER, strlen(SCAN_HEADER)) != 0) {
            fprintf(stderr, "npt debug overlap: error: %s is not a scan list (no '# sample' header); write one with npt debug scan --out\n", path);
            goto bad;
        }
        if (line[0] == '#') continue;
        long v = strtol(line, &end, 10);
        if (end == line || *end != '\t' || v < 0) {
            fprintf(stderr, "npt debug overlap: error: %s line %d is not a scan list row (sample id, tab, ...)\n", path, line_no);
            goto bad;
        }
        if (n == cap) {
            long *grown = realloc(ids, (size_t)(cap = cap ? 2 * cap : 64) * sizeof(long));
            if (!grown) {
                free(ids);
                fclose(f);
                fprintf(stderr, "npt debug overlap: error: out of memory reading %s\n", path);
                return NULL;
            }
            ids = grown;
        }
        ids[n++] = v;
    }
    if (ferror(f)) {
        fprintf(stderr, "npt debug overlap: error: cannot read %s: %s\n", path, strerror(errno));
        goto bad;
    }
    if (line_no == 0) {
        fprintf(stderr, "npt debug overlap: error: %s is empty, not a scan list; write one with npt debug scan --out\n", path);
        goto bad;
    }
    fclose(f);
    *count = n;
    return ids ? ids : calloc(1, sizeof(long));
bad:
    free(ids);
    fclose(f);
    return NULL;
}

static int contains(const long *ids, int n, long v) {
    for (int i = 0; i < n; i++)
        if (ids[i] == v) return 1;
    return 0;
}

static void print_only(const char *label, const long *x, int nx, const long *y, int ny) {
    int k = 0;
    for (int i = 0; i < nx; i++) k += !contains(y, ny, x[i]);
    printf("only in %s: %d", label, k);
    for (int i = 0, shown = 0; i < nx && shown < 20; i++)
        if (!contains(y, ny, x[i])) printf(shown++ ? " %ld" : " (%ld", x[i]);
    printf(k > 20 ? " ...)\n" : k ? ")\n" : "\n");
}

static int run_overlap(const DebugArgs *a) {
    if (a->n_files != 2) {
        fprintf(stderr, "npt debug overlap: error: give two scan lists: npt debug overlap A.tsv B.tsv\n");
        return 2;
    }
    int na = 0, nb = 0, common = 0;
    long *A = read_list(a->files[0], &na), *B = A ? read_list(a->files[1], &nb) : NULL;
    if (!A || !B) {
        free(A);
        return 1;
    }
    for (int i = 0; i < na; i++) common += contains(B, nb, A[i]);
    printf("A %s: %d failing samples; B %s: %d failing samples\n", a->files[0], na, a->files[1], nb);
    printf("in common: %d\n", common);
    print_only("A", A, na, B, nb);
    print_only("B", B, nb, A, na);
    free(A);
    free(B);
    return 0;
}

static int run_replay(const DebugArgs *a) {
    if (a->n_files != 1) {
        fprintf(stderr, "npt debug replay: error: give the file written by npt debug forward --save\n");
        return 2;
    }
    DebugResult r;
    NptErr err;
    if (refuse_missing_input(a->files[0], "give the file written by npt debug forward --save", "debug replay")) return 1;
    if (debug_replay(a->files[0], &r, &err)) {
        fprintf(stderr, "npt debug replay: error: %s\n", err.msg);
        return 1;
    }
    debug_print_producer(stdout, &r, NULL);
    return r.first.found ? 3 : 0;
}

int cmd_debug(int argc, char **argv) {
    DebugArgs a;
    if (parse(argc, argv, &a) || check_sub_flags(&a)) return 2;
    if ((a.out && refuse_existing_output(a.out, "--out", a.force, "debug scan")) ||
        (a.save && refuse_existing_output(a.save, "--save", a.force, "debug forward")) || refuse_over_inputs(&a, NULL))
        return 1;
    if (!strcmp(a.sub, "forward")) return run_forward(&a, 0);
    if (!strcmp(a.sub, "layers")) return run_forward(&a, 1);
    if (!strcmp(a.sub, "scan")) return run_scan(&a);
    if (!strcmp(a.sub, "overlap")) return run_overlap(&a);
    if (!strcmp(a.sub, "replay")) return run_replay(&a);
    fprintf(stderr, "npt debug: error: unknown sub-command '%s' (forward, layers, scan, overlap, replay)\n", a.sub);
    return 2;
}
