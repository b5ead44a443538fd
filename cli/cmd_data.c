/* cli/cmd_data.c — `npt data`: prepare (text/JSONL -> token file, with a progress bar,
 * on all cores) and stats (tokens, documents, document-length histogram). The work is
 * in data/prepare.c; this file parses flags and prints. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/prepare.h"
#include "../util/stop.h"
#include "commands.h"

static const char *data_help =
    "usage: npt data prepare INPUT -o OUTPUT --tokenizer T [options]\n"
    "       npt data stats FILE [--bos ID | --tokenizer T] [--seq-len N] [--json]\n\n"
    "prepare: tokenize a text file, a JSONL file or a folder of them into a token file\n"
    "  -o, --output OUT   .u16 / .bin (uint16 ids), .u32 (uint32 ids) or .h5 (HDF5 dataset /tokens)\n"
    "  --tokenizer T      tokenizer.json or llama2.c tokenizer .bin (required)\n"
    "  --vocab-size N     the model's vocabulary, for llama2.c tokenizers larger than it\n"
    "  --format F         auto (default: .jsonl/.ndjson files are JSONL, others text), text or jsonl\n"
    "  --text-field K     JSONL field holding the text (default \"text\")\n"
    "  --skip-bad         skip JSONL lines that are not JSON objects with the field (warn), instead of failing\n"
    "  --append-eos       end every document with EOS (every document starts with BOS)\n"
    "  --threads N        tokenizer threads (default: all cores)\n"
    "  --quiet            no progress bar\n"
    "  --force            replace OUT if it exists (without it an existing OUT is kept)\n"
    "  --json             print the summary as JSON\n\n"
    "Documents: text is split at \"<|endoftext|>\" (with one newline on each side of it); each\n"
    "JSONL line is a document. Each document becomes BOS + its tokens.\n\n"
    "stats: tokens, documents (a document starts at each BOS), lengths, id range\n"
    "  --bos ID           BOS id (default: the tokenizer's with --tokenizer, else 1)\n"
    "  --seq-len N        also print how many training windows of N tokens the file makes\n";

typedef struct {
    const char *input, *output, *tokenizer, *text_field;
    long vocab, threads, bos, seq_len;
    DatasetFormat format;
    int skip_bad, append_eos, quiet, json, force;
} DataArgs;

/* A flag of the other subcommand is refused rather than ignored: `data stats -o X`
 * would otherwise look as if it had written X. */
static int other_verbs_flag(const char *arg, int is_prepare) {
    static const char *const prepare_only[] = {"--output", "--format", "--text-field", "--skip-bad", "--append-eos",
                                               "--threads", "--quiet", "--force"};
    static const char *const stats_only[] = {"--bos", "--seq-len"};
    const char *const *list = is_prepare ? stats_only : prepare_only;
    size_t n = is_prepare ? NPT_ARRAY_LEN(stats_only) : NPT_ARRAY_LEN(prepare_only);
    int hit = !is_prepare && !strcmp(arg, "-o");
    for (size_t k = 0; k < n && !hit; k++) hit = arg_is(arg, list[k]);
    if (hit)
        fprintf(stderr, "npt data %s: error: %s is a flag of npt data %s (see npt data --help)\n",
                is_prepare ? "prepare" : "stats", arg, is_prepare ? "stats" : "prepare");
    return hit;
}

static int parse(int argc, char **argv, int is_prepare, DataArgs *a) {
    *a = (DataArgs){.bos = -1, .format = DATASET_AUTO};
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (other_verbs_flag(argv[i], is_prepare)) {
            return -1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(data_help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--force")) {
            a->force = 1;
        } else if (!strcmp(argv[i], "--json")) {
            a->json = 1;
        } else if (!strcmp(argv[i], "--skip-bad")) {
            a->skip_bad = 1;
        } else if (!strcmp(argv[i], "--append-eos")) {
            a->append_eos = 1;
        } else if (!strcmp(argv[i], "--quiet")) {
            a->quiet = 1;
        } else if (!strcmp(argv[i], "-o") || arg_is(argv[i], "--output")) {
            if (!(a->output = arg_value(argc, argv, &i, "--output", "data"))) return -1;
        } else if (arg_is(argv[i], "--tokenizer")) {
            if (!(a->tokenizer = arg_value(argc, argv, &i, "--tokenizer", "data"))) return -1;
        } else if (arg_is(argv[i], "--text-field")) {
            if (!(a->text_field = arg_value(argc, argv, &i, "--text-field", "data"))) return -1;
        } else if (arg_is(argv[i], "--format")) {
            if (!(v = arg_value(argc, argv, &i, "--format", "data"))) return -1;
            if (!strcmp(v, "auto")) a->format = DATASET_AUTO;
            else if (!strcmp(v, "text")) a->format = DATASET_TEXT;
            else if (!strcmp(v, "jsonl")) a->format = DATASET_JSONL;
            else {
                fprintf(stderr, "npt data: error: --format is auto, text or jsonl, got '%s'\n", v);
                return -1;
            }
        } else if (arg_is(argv[i], "--vocab-size")) {
            if (!(v = arg_value(argc, argv, &i, "--vocab-size", "data")) ||
                parse_int_arg(v, "--vocab-size", "data", 1, 1L << 30, &a->vocab))
                return -1;
        } else if (arg_is(argv[i], "--threads")) {
            if (!(v = arg_value(argc, argv, &i, "--threads", "data")) ||
                parse_int_arg(v, "--threads", "data", 1, 1024, &a->threads))
                return -1;
        } else if (arg_is(argv[i], "--bos")) {
            if (!(v = arg_value(argc, argv, &i, "--bos", "data")) || parse_int_arg(v, "--bos", "data", 0, INT32_MAX, &a->bos))
                return -1;
        } else if (arg_is(argv[i], "--seq-len")) {
            if (!(v = arg_value(argc, argv, &i, "--seq-len", "data")) ||
                parse_int_arg(v, "--seq-len", "data", 2, 1 << 24, &a->seq_len))
                return -1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "npt data: error: unknown option '%s' (see npt data --help)\n", argv[i]);
            return -1;
        } else if (!a->input) {
            a->input = argv[i];
        } else {
            fprintf(stderr, "npt data: error: unexpected argument '%s' (one input at a time)\n", argv[i]);
            return -1;
        }
    }
    if (!a->input) {
        fprintf(stderr, "npt data %s: error: give the input file (see npt data --help)\n", argv[1]);
        return -1;
    }
    if (a->bos >= 0 && a->tokenizer) { /* alternatives: one would be dropped without a word */
        fprintf(stderr, "npt data stats: error: --bos and --tokenizer both give the BOS id; pass one of them\n");
        return -1;
    }
    return 0;
}

/* The names npt reads as token files; any other would be written as uint16 ids that
 * every reader then takes for text. */
static int is_token_file_name(const char *path) {
    DatasetFormat f = dataset_detect_format(path);
    return f == DATASET_U16 || f == DATASET_U32 || f == DATASET_HDF5;
}

/* A llama2.c tokenizer too small for --vocab-size fails to load as one "belonging to
 * another model"; here the model's vocabulary is only the flag, so the flag is named. */
static Tokenizer *load_tokenizer(const DataArgs *a, NptErr *err) {
    NptErr ignored;
    Tokenizer *tok = tokenizer_load(a->tokenizer, (int)a->vocab, err), *whole;
    if (tok || !a->vocab || !(whole = tokenizer_load(a->tokenizer, 0, &ignored))) return tok;
    int n = tokenizer_vocab_size(whole);
    tokenizer_free(whole);
    if (n < a->vocab)
        npt_fail(err, "--vocab-size %ld is more than the %d tokens of tokenizer %s; give the vocabulary size of the "
                 "model this tokenizer belongs to", a->vocab, n, a->tokenizer);
    return NULL;
}

static int prepare(const DataArgs *a) {
    if (!a->output || !a->tokenizer) {
        fprintf(stderr, "npt data prepare: error: %s is required (npt data prepare INPUT -o OUT --tokenizer T)\n",
                a->output ? "--tokenizer" : "-o OUTPUT");
        return 2;
    }
    const char *in[] = {a->input, a->tokenizer};
    if (refuse_output_over_inputs(a->output, "--output", in, (int)NPT_ARRAY_LEN(in), "data prepare") ||
        refuse_existing_output(a->output, "--output", a->force, "data prepare"))
        return 1;
    if (!is_token_file_name(a->output)) {
        fprintf(stderr, "npt data prepare: error: --output %s is not a token file name: end it in .u16 or .bin (uint16 "
                "ids), .u32 (uint32 ids) or .h5, the names npt reads back as tokens\n", a->output);
        return 2;
    }
    NptErr err;
    Tokenizer *tok = load_tokenizer(a, &err);
    if (!tok) {
        fprintf(stderr, "npt data prepare: error: %s\n", err.msg);
        return 1;
    }
    if (a->threads) omp_set_num_threads((int)a->threads);
    PrepareOptions o = {.tok = tok, .bos = tokenizer_bos_id(tok), .eos = tokenizer_eos_id(tok), .append_eos = a->append_eos,
                        .input_format = a->format, .text_field = a->text_field, .skip_bad_records = a->skip_bad,
                        .progress = a->quiet ? NULL : stderr, .log = stderr, .keep_existing = !a->force};
    PrepareStats st;
    int rc = npt_stop_install(&err) ? -1 : data_prepare(a->input, a->output, &o, &st, &err);
    tokenizer_free(tok);
    if (rc) {
        fprintf(stderr, "npt data prepare: error: %s\n", err.msg);
        int sig = npt_stop_requested(); /* a stop ends like the signal would, removing the partial output first */
        return sig ? 128 + sig : 1;
    }
    double mbs = st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0;
    if (a->json)
        printf("{\"output\":\"%s\",\"files\":%llu,\"bytes\":%llu,\"documents\":%llu,\"tokens\":%llu,\"bad_records\":%llu,"
               "\"seconds\":%.3f,\"mb_per_s\":%.2f,\"tokens_per_s\":%.0f,\"threads\":%d}\n",
               a->output, (unsigned long long)st.files, (unsigned long long)st.bytes, (unsigned long long)st.documents,
               (unsigned long long)st.tokens, (unsigned long long)st.bad_records, st.seconds, mbs,
               st.seconds > 0 ? (double)st.tokens / st.seconds : 0, omp_get_max_threads());
    else
        printf("%s: %llu documents, %llu tokens from %llu file%s (%.1f MB) in %.2f s: %.1f MB/s, %.2fM tokens/s, %d threads%s\n",
               a->output, (unsigned long long)st.documents, (unsigned long long)st.tokens, (unsigned long long)st.files,
               st.files == 1 ? "" : "s", (double)st.bytes / 1e6, st.seconds, mbs,
               st.seconds > 0 ? (double)st.tokens / st.seconds / 1e6 : 0, omp_get_max_threads(),
               st.bad_records ? "; bad lines skipped: see the warnings" : "");
    return 0;
}

/* BOS for stats: --bos, else the tokenizer's, else 1 (Llama's). -1 only with err set. */
static int stats_bos(const DataArgs *a, NptErr *err) {
    if (a->bos >= 0) return (int)a->bos;
    if (!a->tokenizer) return 1;
    Tokenizer *tok = load_tokenizer(a, err);
    if (!tok) return -1;
    int bos = tokenizer_bos_id(tok);
    tokenizer_free(tok);
    if (bos < 0) return npt_fail(err, "tokenizer %s defines no BOS token; pass --bos ID instead", a->tokenizer);
    return bos;
}

static int stats(const DataArgs *a) {
    NptErr err;
    int bos = stats_bos(a, &err);
    TokenStats st;
    if (bos < 0 || data_token_stats(a->input, DATASET_AUTO, bos, &st, &err)) {
        fprintf(stderr, "npt data stats: error: %s\n", err.msg);
        return 1;
    }
    double mean = st.documents ? (double)(st.tokens - st.before_first_bos) / (double)st.documents : 0;
    unsigned long long windows = a->seq_len ? (unsigned long long)(st.tokens / (uint64_t)(a->seq_len - 1)) : 0;
    if (a->json) {
        printf("{\"file\":\"%s\",\"tokens\":%llu,\"documents\":%llu,\"bos\":%d,\"min_id\":%llu,\"max_id\":%llu,"
               "\"doc_len\":{\"min\":%llu,\"mean\":%.1f,\"max\":%llu},\"histogram\":[",
               a->input, (unsigned long long)st.tokens, (unsigned long long)st.documents, bos,
               (unsigned long long)st.min_id, (unsigned long long)st.max_id, (unsigned long long)st.min_doc, mean,
               (unsigned long long)st.max_doc);
        for (int b = 0, first = 1; b < 40; b++) {
            if (!st.hist[b]) continue;
            printf("%s{\"from\":%llu,\"to\":%llu,\"documents\":%llu}", first ? "" : ",", 1ULL << b, (2ULL << b) - 1,
                   (unsigned long long)st.hist[b]);
            first = 0;
        }
        printf("],\"before_first_bos\":%llu", (unsigned long long)st.before_first_bos);
        if (a->seq_len) printf(",\"seq_len\":%ld,\"windows\":%llu", a->seq_len, windows);
        printf("}\n");
        return 0;
    }
    printf("%s: %llu tokens, %llu documents (BOS = %d), ids %llu..%llu\n", a->input, (unsigned long long)st.tokens,
           (unsigned long long)st.documents, bos, (unsigned long long)st.min_id, (unsigned long long)st.max_id);
    printf("document length (tokens, BOS included): min %llu, mean %.1f, max %llu\n", (unsigned long long)st.min_doc, mean,
           (unsigned long long)st.max_doc);
    if (st.before_first_bos)
        printf("%llu tokens before the first BOS (the tail of a document cut off): in no document\n",
               (unsigned long long)st.before_first_bos);
    uint64_t most = 1;
    for (int b = 0; b < 40; b++)
        if (st.hist[b] > most) most = st.hist[b];
    for (int b = 0; b < 40; b++) {
        if (!st.hist[b]) continue;
        char range[48], bar[41];
        snprintf(range, sizeof range, "%llu-%llu", 1ULL << b, (2ULL << b) - 1);
        int w = (int)((double)st.hist[b] * 40 / (double)most + 0.5);
        memset(bar, '#', (size_t)w);
        bar[w] = '\0';
        printf("  %15s %10llu  %s\n", range, (unsigned long long)st.hist[b], bar);
    }
    if (a->seq_len) printf("windows of %ld tokens (BOS + %ld): %llu\n", a->seq_len, a->seq_len - 1, windows);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(data_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    int is_prepare = !strcmp(argv[1], "prepare"), is_stats = !strcmp(argv[1], "stats");
    if (!is_prepare && !is_stats) {
        fprintf(stderr, "npt data: error: unknown subcommand '%s' (prepare or stats; see npt data --help)\n", argv[1]);
        return 2;
    }
    DataArgs a;
    if (parse(argc, argv, is_prepare, &a)) return 2;
    return is_prepare ? prepare(&a) : stats(&a);
}
