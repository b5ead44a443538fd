/* cli/cmd_export.c — `npt export`: the weights an all-weights lm run trained (a checkpoint's
 * /weights/block on top of its base model), or any model npt loads, written as an HF
 * directory (model/save_hf.h). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/tokenizer.h"
#include "../model/save_hf.h"
#include "../train/adapters.h"
#include "../util/path.h"
#include "commands.h"

static const char *export_help =
    "usage: npt export CKPT.h5 --out DIR [--model M] [--tokenizer tokenizer.json]\n"
    "       npt export MODEL --out DIR [--tokenizer tokenizer.json]\n\n"
    "Writes an HF model directory (config.json, model.safetensors F32, tokenizer.json)\n"
    "that npt, transformers and any safetensors reader load. A model with no tokenizer, or\n"
    "whose tokenizer is a llama2.c .bin (an HF directory holds only a tokenizer.json), is\n"
    "written without one, with a note saying so; --tokenizer adds one.\n\n"
    "  CKPT.h5     a checkpoint of an all-weights lm run (objective.type \"lm\",\n"
    "              objective.train_all_weights true): its trained weights are exported\n"
    "  MODEL       an HF directory, llama2.c .bin or .gguf (q/k rows are permuted to HF's\n"
    "              rotate-half RoPE order where the format uses interleaved pairs)\n"
    "  --out DIR   new (or empty) directory; an existing non-empty one is refused\n"
    "  --model M   the checkpoint's base model (default: the path recorded in the checkpoint)\n"
    "  --tokenizer tokenizer.json to copy (default: the tokenizer the run trained with, as\n"
    "              the checkpoint records it, else the one beside the base model), with the\n"
    "              model's vocabulary\n";

typedef struct {
    const char *input, *out, *model, *tokenizer;
} ExportArgs;

static int parse(int argc, char **argv, ExportArgs *a) {
    *a = (ExportArgs){0};
    static const char *const flags[] = {"--out", "--model", "--tokenizer"};
    const char **dst[] = {&a->out, &a->model, &a->tokenizer};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(export_help, stdout);
            exit(0);
        }
        size_t k = 0;
        while (k < NPT_ARRAY_LEN(flags) && !arg_is(argv[i], flags[k])) k++;
        if (k < NPT_ARRAY_LEN(flags)) {
            if (!(*dst[k] = arg_value(argc, argv, &i, flags[k], "export"))) return -1;
        } else if (argv[i][0] == '-' || a->input) {
            fprintf(stderr, "npt export: error: unexpected argument '%s' (see npt export --help)\n", argv[i]);
            return -1;
        } else {
            a->input = argv[i];
        }
    }
    if (!a->input || !a->out) {
        fprintf(stderr, "npt export: error: %s is required (usage: npt export CKPT.h5|MODEL --out DIR)\n",
                a->input ? "--out DIR" : "a checkpoint or model to export");
        return -1;
    }
    return 0;
}

/* "tokenizer" of the checkpoint's recipe, "" when unset. */
static void recipe_tokenizer(const CkptMeta *meta, char *out, size_t size) {
    cJSON *r = meta->recipe_json ? cJSON_Parse(meta->recipe_json) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "tokenizer");
    snprintf(out, size, "%s", cJSON_IsString(t) ? t->valuestring : "");
    cJSON_Delete(r);
}

/* The recorded tokenizer, if it is still the file the run read: its path is absolute,
 * and a file changed since (or replaced by another) is refused, never copied. */
static int recorded_tokenizer(const char *ckpt, const CkptMeta *meta, NptErr *err) {
    int64_t bytes;
    uint64_t fnv;
    NptErr e;
    if (npt_file_identity(meta->tokenizer_path, "tokenizer", NULL, 0, &bytes, &fnv, &e))
        return npt_fail(err, "%s was trained with tokenizer %s, which cannot be read now (%s); pass the tokenizer.json "
                        "the run trained with as --tokenizer", ckpt, meta->tokenizer_path, e.msg);
    if (bytes != meta->tokenizer_bytes || fnv != meta->tokenizer_fingerprint)
        return npt_fail(err, "%s was trained with tokenizer %s of %lld bytes (fingerprint %016llx), but that file now has "
                        "%lld bytes (fingerprint %016llx): it changed after the run; pass the tokenizer.json the run "
                        "trained with as --tokenizer", ckpt, meta->tokenizer_path, (long long)meta->tokenizer_bytes,
                        (unsigned long long)meta->tokenizer_fingerprint, (long long)bytes, (unsigned long long)fnv);
    return 0;
}

/* The tokenizer the run used, into out ("" when it set none: the base model's is used).
 * Checkpoints record it (absolute path, size, hash); older ones have only the recipe's
 * string, which, when relative, was relative to the directory training ran in, which
 * they do not record: refused rather than looked up from here, where a file of that
 * name may be another tokenizer. */
static int run_tokenizer(const char *ckpt, const CkptMeta *meta, char *out, size_t size, NptErr *err) {
    if (meta->tokenizer_path[0]) {
        snprintf(out, size, "%s", meta->tokenizer_path);
        return recorded_tokenizer(ckpt, meta, err);
    }
    recipe_tokenizer(meta, out, size);
    if (!out[0] || out[0] == '/') return 0;
    return npt_fail(err, "%s names its tokenizer only as \"%s\", relative to the directory training ran in, which "
                    "the checkpoint does not record (an older npt wrote it, or the run read token files and "
                    "never opened that tokenizer); pass that tokenizer.json as --tokenizer", ckpt, out);
}

/* Loads the checkpoint's base model into m and overwrites its weights with /weights/block. */
static int load_trained(const ExportArgs *a, LlamaModel *m, CkptMeta *meta, char *tok, size_t tok_size, NptErr *err) {
    CkptFile *f = ckpt_open(a->input, err);
    if (!f) return -1;
    CkptTensor *list = NULL;
    int n = 0, rc = -1;
    if (ckpt_read_meta(f, meta, err) || ckpt_list_tensors(f, &list, &n, err) || ckpt_validate(a->input, meta, list, n, err))
        goto done;
    const CkptTensor *block = ckpt_find(list, n, "weights/block");
    if (!block) {
        npt_fail(err, "%s holds NPT adapters (rank %d on %d layers), not model weights: export needs a checkpoint of an "
                 "all-weights lm run (objective.type \"lm\", objective.train_all_weights true); use adapters with "
                 "--adapters in npt generate/eval",
                 a->input, meta->rank, meta->n_npt_layers);
        goto done;
    }
    const char *base = a->model ? a->model : meta->base_path;
    NptErr e2;
    if (load_full_model(base, m, &e2)) {
        npt_fail(err, "%s: cannot load its base model: %s%s", a->input, e2.msg, a->model ? "" : " (pass --model M)");
        goto done;
    }
    /* the config too, not just the weights: npt init makes equal weights for 2 and 4 heads */
    if (adapters_check_base(a->input, meta, m, err)) goto done;
    if (load_trained_weights(f, a->input, block, m, base, err)) goto done;
    if (a->tokenizer) snprintf(tok, tok_size, "%s", a->tokenizer);
    else if (run_tokenizer(a->input, meta, tok, tok_size, err)) goto done;
    if (!tok[0]) snprintf(tok, tok_size, "%s", m->tokenizer_path);
    rc = 0;
done:
    ckpt_free(NULL, list, n);
    ckpt_close(f);
    return rc;
}

/* The tokenizer the directory carries must have exactly the model's vocabulary, as
 * npt's other verbs require (cli/session.c): with fewer tokens the model's last ids
 * decode to nothing and transformers pairs the model with the wrong tokenizer; with
 * more, it produces ids the embedding has no row for. */
static int check_tokenizer_fits(const char *tok, const LlamaModel *m, const char *what, NptErr *err) {
    NptErr e;
    Tokenizer *t = tokenizer_load(tok, 0, &e); /* 0: its own size, not padded to the model's */
    if (!t) return npt_fail(err, "%s", e.msg);
    int n = tokenizer_vocab_size(t);
    tokenizer_free(t);
    if (n != m->cfg.vocab_size)
        return npt_fail(err, "tokenizer %s has %d tokens but %s has a vocabulary of %d; an HF directory pairs the model "
                        "with its own tokenizer: pass that one with --tokenizer",
                        tok, n, what, m->cfg.vocab_size);
    return 0;
}

/* An HF directory holds an HF tokenizer.json only; npt tells the formats apart by the
 * name (data/tokenizer.h), and anything else is a llama2.c tokenizer .bin. */
static int is_tokenizer_json(const char *tok) { return npt_ends_with(tok, ".json"); }

int cmd_export(int argc, char **argv) {
    ExportArgs a;
    if (parse(argc, argv, &a)) return 2;
    if (a.tokenizer && !is_tokenizer_json(a.tokenizer)) {
        fprintf(stderr, "npt export: error: --tokenizer %s is not an HF tokenizer.json, the only kind an HF directory "
                "holds: give a tokenizer.json with the model's vocabulary, or leave out --tokenizer (the model's own "
                "tokenizer.json is copied; a llama2.c one is left out, with a note)\n", a.tokenizer);
        return 1;
    }
    NptErr err;
    LlamaModel m;
    memset(&m, 0, sizeof m);
    CkptMeta meta;
    memset(&meta, 0, sizeof meta);
    char tok[4096] = "";
    struct stat st;
    int from_ckpt = 0, rc = hf_check_out_dir(a.out, &err);
    if (rc == 0 && stat(a.input, &st) != 0) rc = npt_fail(&err, "cannot open %s: %s", a.input, strerror(errno));
    /* a model directory is fine; a file must be a regular one (a pipe would block the reads below) */
    if (rc == 0 && !S_ISDIR(st.st_mode) && npt_check_input(a.input, "checkpoint or model", &err)) rc = -1;
    if (rc == 0) {
        from_ckpt = S_ISREG(st.st_mode) && npt_file_is_hdf5(a.input, NULL, NULL) == 1;
        if (!from_ckpt && a.model) { /* it would be ignored: say so rather than export something else */
            fprintf(stderr, "npt export: error: --model applies only to a checkpoint; %s is a model, exported as it is: "
                    "leave out --model\n", a.input);
            return 2;
        }
        if (from_ckpt) rc = load_trained(&a, &m, &meta, tok, sizeof tok, &err);
        else if (!(rc = load_full_model(a.input, &m, &err)))
            snprintf(tok, sizeof tok, "%s", a.tokenizer ? a.tokenizer : m.tokenizer_path);
    }
    /* the model has no tokenizer (none beside it, nor the run's), or its own is a
     * llama2.c .bin: the directory is written without one rather than not at all */
    int no_tok = rc == 0 && !is_tokenizer_json(tok);
    if (rc == 0 && !no_tok) {
        char what[4200];
        snprintf(what, sizeof what, from_ckpt ? "the model in %.4000s" : "the model %.4000s", a.input);
        rc = check_tokenizer_fits(tok, &m, what, &err);
    }
    if (rc == 0) rc = hf_save_dir(&m, a.out, no_tok ? "" : tok, &err);
    char tok_said[sizeof tok + 32] = "no tokenizer (see the note)";
    if (!no_tok) snprintf(tok_said, sizeof tok_said, "tokenizer from %s", tok);
    if (rc) {
        fprintf(stderr, "npt export: error: %s\n", err.msg);
    } else {
        if (no_tok && !tok[0])
            fprintf(stderr, "npt export: note: no tokenizer.json written: none was found beside %s; include one with "
                    "the model's %d tokens by exporting again with --tokenizer FILE.json\n", from_ckpt ? "the base model"
                    : a.input, m.cfg.vocab_size);
        else if (no_tok)
            fprintf(stderr, "npt export: note: no tokenizer.json written: the model's tokenizer %s is a llama2.c "
                    "tokenizer, which an HF directory cannot hold; give npt --tokenizer %s with %s, or include a "
                    "tokenizer.json with the model's %d tokens by exporting again with --tokenizer FILE.json\n",
                    tok, tok, a.out, m.cfg.vocab_size);
        if (from_ckpt)
            printf("npt export: wrote %s: the weights of %s (step %lld, last loss %.4g) on base %s; %s\n",
                   a.out, a.input, (long long)meta.step, meta.last_loss, a.model ? a.model : meta.base_path, tok_said);
        else
            printf("npt export: wrote %s from %s (%s); %s\n", a.out, a.input, model_format_name(m.format), tok_said);
    }
    ckpt_free(&meta, NULL, 0);
    llama_free(&m);
    return rc ? 1 : 0;
}
