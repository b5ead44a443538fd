/* cli/cmd_generate.c — `npt generate`: sample text from a model with a KV cache. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"
#include "../model/llama.h"
#include "../model/sampler.h"
#include "commands.h"
#include "session.h"

static const char *generate_help =
    "usage: npt generate --model M [--adapters CKPT] [--tokenizer T] [--prompt TEXT] [--steps N]\n"
    "                    [--temperature X] [--top-p P] [--seed S] [--json]\n\n"
    "  --model M        HF directory, llama2.c .bin or .gguf file\n"
    "  --adapters CKPT  run the converted layers as NPT layers with adapters from an npt checkpoint\n"
    "  --tokenizer T    tokenizer.json or llama2.c tokenizer .bin (default: the one beside the model)\n"
    "  --prompt TEXT    text to continue (default: empty, start from BOS)\n"
    "  --steps N        positions to generate, prompt included (default 256, at most the model context)\n"
    "  --temperature X  0 = greedy (default 0)\n"
    "  --top-p P        nucleus sampling threshold in (0, 1] (default 0.9)\n"
    "  --seed S         random seed for sampling (default 42)\n"
    "  --json           print one object instead of streaming: {\"prompt_tokens\":N (BOS included),\n"
    "                   \"tokens\":[ids, prompt then generated],\"text\":...,\"tokens_per_second\":X}\n";

typedef struct {
    const char *model, *adapters, *tokenizer, *prompt;
    long steps, seed;
    double temperature, top_p;
    int json, steps_given; /* whether --steps was on the command line, for messages */
} GenerateArgs;

static int parse(int argc, char **argv, GenerateArgs *a) {
    *a = (GenerateArgs){.prompt = "", .steps = 256, .seed = 42, .temperature = 0.0, .top_p = 0.9};
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(generate_help, stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--json")) {
            a->json = 1;
        } else if (arg_is(argv[i], "--model")) {
            if (!(a->model = arg_value(argc, argv, &i, "--model", "generate"))) return -1;
        } else if (arg_is(argv[i], "--adapters")) {
            if (!(a->adapters = arg_value(argc, argv, &i, "--adapters", "generate"))) return -1;
        } else if (arg_is(argv[i], "--tokenizer")) {
            if (!(a->tokenizer = arg_value(argc, argv, &i, "--tokenizer", "generate"))) return -1;
        } else if (arg_is(argv[i], "--prompt")) {
            if (!(a->prompt = arg_value(argc, argv, &i, "--prompt", "generate"))) return -1;
        } else if (arg_is(argv[i], "--steps")) {
            if (!(v = arg_value(argc, argv, &i, "--steps", "generate")) ||
                parse_int_arg(v, "--steps", "generate", 1, 1 << 20, &a->steps))
                return -1;
            a->steps_given = 1;
        } else if (arg_is(argv[i], "--seed")) {
            if (!(v = arg_value(argc, argv, &i, "--seed", "generate")) ||
                parse_int_arg(v, "--seed", "generate", 0, __LONG_MAX__, &a->seed))
                return -1;
        } else if (arg_is(argv[i], "--temperature")) {
            if (!(v = arg_value(argc, argv, &i, "--temperature", "generate")) ||
                parse_float_arg(v, "--temperature", "generate", 0.0, 100.0, &a->temperature))
                return -1;
        } else if (arg_is(argv[i], "--top-p")) {
            if (!(v = arg_value(argc, argv, &i, "--top-p", "generate")) ||
                parse_float_arg(v, "--top-p", "generate", 1e-6, 1.0, &a->top_p))
                return -1;
        } else {
            fprintf(stderr, "npt generate: error: unknown option '%s' (see npt generate --help)\n", argv[i]);
            return -1;
        }
    }
    if (!a->model) {
        fprintf(stderr, "npt generate: error: --model is required (an HF directory, llama2.c .bin or .gguf)\n");
        return -1;
    }
    return 0;
}

/* Prints a JSON string literal with the escapes JSON needs. */
static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* A prompt of n_prompt tokens does not fit in steps positions: name the limit that
 * matters, the model's context (--steps is capped at it, so raising --steps cannot
 * help) or else --steps (given, or its default), and the way out. */
static void report_long_prompt(const GenerateArgs *a, int n_prompt, int steps, int context) {
    if (n_prompt > context)
        fprintf(stderr, "npt generate: error: the prompt is %d tokens (BOS included), more than the model's context of "
                "%d tokens; shorten the prompt\n", n_prompt, context);
    else
        fprintf(stderr, "npt generate: error: the prompt is %d tokens (BOS included), more than --steps %d%s allows; "
                "raise --steps (at most the model's context, %d) or shorten the prompt\n", n_prompt, steps,
                a->steps_given ? "" : " (the default)", context);
}

/* Number of NaN/Inf among the n logits: sampling from them would print garbage. */
static int count_non_finite(const float *logits, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) bad += !isfinite(logits[i]);
    return bad;
}

/* The model overflowed float32 at position pos: say so, and how to find where (exit 3,
 * as npt debug). The text streamed so far is the rest of the input that reproduces it. */
static int report_non_finite(const GenerateArgs *a, int pos, int bad, int vocab, int generated) {
    if (!a->json) putchar('\n');
    fprintf(stderr, "npt generate: error: %d of the %d logits at position %d are NaN/Inf (the model overflows float32 "
            "there); see where with: npt debug forward --model %s", bad, vocab, pos, a->model);
    if (a->adapters) fprintf(stderr, " --adapters %s", a->adapters);
    if (a->tokenizer) fprintf(stderr, " --tokenizer %s", a->tokenizer);
    if (!generated && !strchr(a->prompt, '\''))
        fprintf(stderr, " --prompt '%s'\n", a->prompt);
    else
        fprintf(stderr, " --prompt TEXT (TEXT: the prompt%s)\n", generated ? " and the text generated so far" : "");
    return 3;
}

int cmd_generate(int argc, char **argv) {
    GenerateArgs a;
    if (parse(argc, argv, &a)) return 2;
    NptErr err;
    Session ses;
    if (session_open(&ses, a.model, a.tokenizer, 1, a.adapters, &err)) {
        fprintf(stderr, "npt generate: error: %s\n", err.msg);
        session_free(&ses);
        return 1;
    }
    LlamaModel *m = &ses.m;
    Tokenizer *tok = ses.tok;
    NptModel *np = ses.np;
    int steps = (int)a.steps < m->cfg.seq_len ? (int)a.steps : m->cfg.seq_len;
    int *ids = malloc((size_t)(steps + 1) * sizeof(int));
    int n_prompt = ids ? tokenizer_encode(tok, a.prompt, 1, ids, steps, &err) : -1;
    LlamaInfer s;
    Sampler smp;
    int rc = 1;
    if (!ids) {
        fprintf(stderr, "npt generate: error: out of memory\n");
    } else if (n_prompt < 0) {
        fprintf(stderr, "npt generate: error: %s\n", err.msg);
    } else if (n_prompt > steps) {
        report_long_prompt(&a, n_prompt, steps, m->cfg.seq_len);
    } else if (llama_infer_init(&s, &m->cfg, np, steps, &err)) {
        fprintf(stderr, "npt generate: error: %s\n", err.msg);
    } else if (sampler_init(&smp, m->cfg.vocab_size, (float)a.temperature, (float)a.top_p, (uint64_t)a.seed)) {
        fprintf(stderr, "npt generate: error: out of memory for the sampler\n");
        llama_infer_free(&s);
    } else {
        int n = n_prompt;
        char buf[16];
        if (!a.json)
            for (int i = 1; i < n_prompt; i++) fputs(tokenizer_decode_token(tok, ids[i - 1], ids[i], buf), stdout);
        double t0 = npt_now_seconds();
        int bad = 0, bad_pos = -1;
        for (int pos = 0; pos < steps - 1; pos++) {
            float *logits = llama_infer_step(&s, m, np, ids[pos], pos);
            if (pos + 1 < n) continue; /* still reading the prompt */
            if ((bad = count_non_finite(logits, m->cfg.vocab_size))) {
                bad_pos = pos;
                break;
            }
            int next = sampler_next(&smp, logits);
            if (next == tokenizer_bos_id(tok) || next == tokenizer_eos_id(tok)) break;
            ids[n++] = next;
            if (!a.json) {
                fputs(tokenizer_decode_token(tok, ids[n - 2], next, buf), stdout);
                fflush(stdout);
            }
        }
        double dt = npt_now_seconds() - t0;
        if (bad_pos >= 0) {
            rc = report_non_finite(&a, bad_pos, bad, m->cfg.vocab_size, n > n_prompt);
        } else if (a.json) {
            char *text = tokenizer_decode(tok, ids + 1, n - 1, &err);
            printf("{\"prompt_tokens\":%d,\"tokens\":[", n_prompt);
            for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
            printf("],\"text\":");
            print_json_string(text ? text : "");
            printf(",\"tokens_per_second\":%.1f}\n", (n - 1) / (dt > 0 ? dt : 1e-9));
            free(text);
        } else {
            printf("\n");
            fflush(stdout);
            fprintf(stderr, "[%d tokens, %.1f tokens/s]\n", n - n_prompt, (n - 1) / (dt > 0 ? dt : 1e-9));
        }
        if (bad_pos < 0) rc = 0;
        sampler_free(&smp);
        llama_infer_free(&s);
    }
    free(ids);
    session_free(&ses);
    return rc;
}
