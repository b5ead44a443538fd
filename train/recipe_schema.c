/* train/recipe_schema.c — the recipe schema: one table row per key (type, default,
 * range, field, doc). Validation (recipe.c), defaults, `npt recipes keys` and the
 * did-you-mean suggestions all read this table, so a key is added in one place. */
#include "recipe_schema.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Choice names, index = enum value in recipe.h. */
static const char *const layer_names[] = {"all", "upper_half", "lower_half"};
static const char *const init_names[] = {"default"};
static const char *const objective_names[] = {"distill", "lm"};
static const char *const loss_names[] = {"nmse", "mse"};
static const char *const format_names[] = {"auto", "text", "jsonl", "tokens_u16", "tokens_u32", "hdf5"};
static const char *const bad_record_names[] = {"error", "skip"};
static const char *const optimizer_names[] = {"adamw", "sgd"};
static const char *const schedule_names[] = {"cosine", "linear", "constant"};

_Static_assert(NPT_ARRAY_LEN(layer_names) == LAYERS_LIST, "layer_names vs LayerMode");
_Static_assert(NPT_ARRAY_LEN(init_names) == NPT_INIT_DEFAULT + 1, "init_names vs NptInit");
_Static_assert(NPT_ARRAY_LEN(objective_names) == OBJECTIVE_LM + 1, "objective_names");
_Static_assert(NPT_ARRAY_LEN(loss_names) == LOSS_MSE + 1, "loss_names vs DistillLoss");
_Static_assert(NPT_ARRAY_LEN(format_names) == DATASET_HDF5 + 1, "format_names vs DatasetFormat");
_Static_assert(NPT_ARRAY_LEN(bad_record_names) == BAD_RECORD_SKIP + 1, "bad_record_names");
_Static_assert(NPT_ARRAY_LEN(optimizer_names) == OPTIMIZER_SGD + 1, "optimizer_names");
_Static_assert(NPT_ARRAY_LEN(schedule_names) == SCHEDULE_CONSTANT + 1, "schedule_names");
/* Choice fields are written through int *. */
_Static_assert(sizeof(LayerMode) == sizeof(int) && sizeof(ScheduleType) == sizeof(int),
               "enums must be int-sized");

#define FIELD(f) offsetof(Recipe, f), sizeof(((Recipe *)0)->f)
#define STR(p, def, def_doc, flags, f, doc) \
    {p, RK_STRING, def, def_doc, 0, 0, 0, 0, flags, NULL, 0, FIELD(f), doc}
#define INT(p, def, lo, f, doc) {p, RK_INT, def, NULL, lo, INT_MAX, 0, 0, 0, NULL, 0, FIELD(f), doc}
#define INT_IN(p, def, lo, hi, f, doc) {p, RK_INT, def, NULL, lo, hi, 0, 0, 0, NULL, 0, FIELD(f), doc}
#define NUM(p, def, lo, lo_open, hi, hi_open, f, doc) \
    {p, RK_NUMBER, def, NULL, lo, hi, lo_open, hi_open, 0, NULL, 0, FIELD(f), doc}
#define BOOL(p, def, f, doc) {p, RK_BOOL, def, NULL, 0, 0, 0, 0, 0, NULL, 0, FIELD(f), doc}
#define CHOICE(p, def, names, f, doc) \
    {p, RK_CHOICE, def, NULL, 0, 0, 0, 0, 0, names, (int)NPT_ARRAY_LEN(names), FIELD(f), doc}

const RecipeKey recipe_keys[] = {
    STR("name", NULL, "file stem", RK_NONEMPTY, name, "Run name; names the default output directory."),
    STR("description", "\"\"", NULL, 0, description, "One line shown by `npt recipes list`."),
    STR("model", NULL, "required", RK_REQUIRED | RK_NONEMPTY, model,
        "Base model: HF directory, llama2.c .bin or .gguf (relative paths: from the current directory)."),
    STR("tokenizer", "\"\"", NULL, 0, tokenizer,
        "Tokenizer (tokenizer.json or llama2.c .bin); \"\" = the one beside the model."),
    STR("output_dir", NULL, "runs/<name>", RK_NONEMPTY, output_dir,
        "Where checkpoints and metrics go."),
    INT("seed", "1234", 0, seed, "Seeds adapter init and data shuffling."),
    INT_IN("threads", "0", 0, 1024, threads, "Worker threads; 0 = all cores."),

    {"npt.layers", RK_LAYERS, "\"all\"", NULL, 0, INT_MAX, 0, 0, 0, layer_names,
     (int)NPT_ARRAY_LEN(layer_names), FIELD(npt.layers),
     "Decoder layers converted to NPT layers: \"all\", \"upper_half\" ([n/2, n)), \"lower_half\" ([0, n/2)) or a list of indices."},
    INT("npt.rank", "16", 1, npt.rank, "Adapter rank r (at most min(dim, hidden_dim) of the model)."),
    BOOL("npt.safe_mode", "false", npt.safe_mode,
         "Additive modulation only (no B_mul); caps lr at 1e-4, turns on clipping (0.5) and NaN skipping."),
    NUM("npt.modulation_scale", "0.1", 0, 1, INFINITY, 0, npt.modulation_scale,
        "s in g' = g * d_mul + s * d_add."),
    CHOICE("npt.init", "\"default\"", init_names, npt.init,
           "Adapter init: A ~ N(0, init_a_std^2), B_add ~ N(0, init_b_add_std^2), B_mul ~ N(0, init_b_mul_std^2)."),
    NUM("npt.init_a_std", "0.02", 0, 0, INFINITY, 0, npt.init_a_std, "Std of A at init."),
    NUM("npt.init_b_add_std", "0.001", 0, 0, INFINITY, 0, npt.init_b_add_std, "Std of B_add at init."),
    NUM("npt.init_b_mul_std", "0.0", 0, 0, INFINITY, 0, npt.init_b_mul_std,
        "Std of B_mul at init (0: d_raw = 0, so d_mul starts at 0.5*sigmoid(0)+0.5 = 0.75)."),

    CHOICE("objective.type", "\"distill\"", objective_names, objective.type,
           "distill: match the frozen teacher layer by layer; lm: next-token cross-entropy."),
    CHOICE("objective.loss", "\"nmse\"", loss_names, objective.loss,
           "Distillation distance per compared layer (distill only)."),
    NUM("objective.lambda", "0.01", 0, 0, INFINITY, 0, objective.lambda,
        "Weight of the modulation regularizer, added to the NMSE (distill) or the cross-entropy (lm through "
        "adapters); lm with `train_all_weights` has none and warns when it is set."),
    BOOL("objective.train_all_weights", "false", objective.train_all_weights,
         "lm only: train every weight (a model trained from scratch), not just the adapters."),

    STR("data.train", "\"\"", NULL, 0, data.train,
        "Training data, one source: text file or folder, JSONL, uint16/uint32 token file, or FILE.h5:/DATASET. `npt train` needs this or data.sources."),
    CHOICE("data.format", "\"auto\"", format_names, data.format,
           "Format of data.train and data.valid. auto: folder = text, .jsonl = JSONL, .bin/.u16 = uint16 tokens, .u32 = uint32 tokens, .h5 or FILE.h5:/D = HDF5, else text."),
    {"data.sources", RK_SOURCES, "[]", NULL, 0, 0, 0, 0, 0, format_names, (int)NPT_ARRAY_LEN(format_names),
     FIELD(data.sources),
     "Several training sources mixed by weight, instead of data.train: [{\"path\": P, \"weight\": W, \"format\": F, \"text_field\": K}] (weight default 1, format auto)."},
    INT("data.seq_len", "256", 2, data.seq_len, "Tokens per training window (BOS included); at most the model's context."),
    BOOL("data.shuffle", "true", data.shuffle, "Shuffle window order (seeded); false = file order."),
    STR("data.valid", "\"\"", NULL, 0, data.valid, "Validation data (same formats); \"\" = none (or data.valid_fraction)."),
    NUM("data.valid_fraction", "0", 0, 0, 1, 1, data.valid_fraction,
        "Fraction of each training source's windows (its last ones) held out for validation when data.valid is \"\"."),
    STR("data.text_field", "\"text\"", NULL, RK_NONEMPTY, data.text_field, "JSONL: the field holding a record's text."),
    CHOICE("data.on_bad_record", "\"error\"", bad_record_names, data.on_bad_record,
           "A JSONL line that is not a JSON object with the text field: error stops, skip warns and goes on."),
    BOOL("data.append_eos", "false", data.append_eos, "End every document with EOS too (every document starts with BOS)."),
    STR("data.cache_dir", "\"\"", NULL, 0, data.cache_dir,
        "Where text sources are tokenized to (reused while the text and tokenizer are unchanged); \"\" = $NPT_CACHE_DIR, else ~/.cache/npt."),

    INT("train.max_steps", "1000", 1, train.max_steps, "Optimizer steps."),
    INT("train.batch_size", "8", 1, train.batch_size, "Windows per micro-batch."),
    INT("train.grad_accum", "1", 1, train.grad_accum, "Micro-batches accumulated per optimizer step."),
    CHOICE("train.optimizer", "\"adamw\"", optimizer_names, train.optimizer,
           "AdamW (decoupled weight decay) or SGD with momentum."),
    NUM("train.lr", "1e-4", 0, 1, INFINITY, 0, train.lr, "Peak learning rate."),
    NUM("train.min_lr_ratio", "0.1", 0, 0, 1, 0, train.min_lr_ratio,
        "Final lr as a fraction of lr (cosine and linear)."),
    CHOICE("train.schedule", "\"cosine\"", schedule_names, train.schedule,
           "Decay after warmup."),
    INT("train.warmup_steps", "0", 0, train.warmup_steps, "Linear warmup steps (at most max_steps)."),
    NUM("train.weight_decay", "0.0", 0, 0, INFINITY, 0, train.weight_decay, "Decoupled weight decay."),
    NUM("train.beta1", "0.9", 0, 0, 1, 1, train.beta1, "AdamW beta1."),
    NUM("train.beta2", "0.999", 0, 0, 1, 1, train.beta2, "AdamW beta2."),
    NUM("train.eps", "1e-8", 0, 1, INFINITY, 0, train.eps, "AdamW epsilon."),
    NUM("train.momentum", "0.0", 0, 0, 1, 1, train.momentum, "SGD momentum."),
    NUM("train.clip_grad_norm", "1.0", 0, 0, INFINITY, 0, train.clip_grad_norm,
        "Global gradient-norm clip; 0 = off."),
    BOOL("train.skip_nonfinite", "true", train.skip_nonfinite,
         "Skip a batch whose loss or gradients are not finite (no update, counted, logged)."),
    BOOL("train.debug_on_skip", "false", train.debug_on_skip,
         "When a batch is skipped, find where its first NaN/Inf is born (npt debug) and write debug_step<N>_skip<K>.txt/.h5 to output_dir (first 20 skips)."),
    INT("train.max_consecutive_skips", "10", 1, train.max_consecutive_skips,
        "Stop the run (non-zero exit) after this many skipped batches in a row."),
    NUM("train.teacher_cache_gb", "0", 0, 0, INFINITY, 0, train.teacher_cache_gb,
        "Distill: keep the teacher's hidden states of up to this many GB of training windows (a file in output_dir, deleted with the process) so windows seen again skip the teacher; 0 = off. A window takes (layers from the first converted one + 2) x seq_len x dim x 4 bytes."),

    INT("log.every", "10", 1, log.every, "Log a line every N optimizer steps."),
    STR("log.metrics_file", "\"metrics.jsonl\"", NULL, RK_NONEMPTY, log.metrics_file,
        "Per-step metrics, one JSON object a line: a file name (no /) in output_dir, not one the run gives its other files (*.h5, *.svg, eval.jsonl, debug_step*)."),

    INT("eval.every", "0", 0, eval.every,
        "Every N optimizer steps (and at the end), evaluate on the validation split (npt eval's figures) into eval.jsonl; 0 = off."),
    INT("eval.windows", "16", 1, eval.windows, "Validation windows per periodic eval (at most the split's size)."),

    INT("checkpoint.every", "500", 1, checkpoint.every, "Save every N optimizer steps (and at the end)."),
    INT("checkpoint.keep_last", "3", 1, checkpoint.keep_last, "Periodic checkpoints kept on disk."),
    BOOL("checkpoint.save_best", "true", checkpoint.save_best,
         "Also keep the checkpoint with the lowest loss."),
};
const int recipe_n_keys = (int)NPT_ARRAY_LEN(recipe_keys);

/* Seed flags that people carry over; mapped to their recipe keys for a precise hint. */
static const struct {
    const char *flag, *path;
} seed_flags[] = {
    {"learning_rate", "train.lr"},
    {"adapter_rank", "npt.rank"},
    {"gradient_accumulation_steps", "train.grad_accum"},
    {"regularization_lambda", "objective.lambda"},
    {"save_steps", "checkpoint.every"},
    {"log_steps", "log.every"},
    {"warmup_steps", "train.warmup_steps"},
    {"batch_size", "train.batch_size"},
    {"safe_mode", "npt.safe_mode"},
};

const RecipeKey *recipe_key_find(const char *path) {
    for (int i = 0; i < recipe_n_keys; i++)
        if (strcmp(recipe_keys[i].path, path) == 0) return &recipe_keys[i];
    return NULL;
}

/* Length of the section part of a path ("train" in "train.lr"), 0 for top-level keys. */
static size_t section_len(const char *path) {
    const char *dot = strchr(path, '.');
    return dot ? (size_t)(dot - path) : 0;
}

static const char *leaf_of(const char *path) {
    const char *dot = strchr(path, '.');
    return dot ? dot + 1 : path;
}

static int in_section(const char *path, const char *section) {
    size_t n = section_len(path);
    return n == strlen(section) && strncmp(path, section, n) == 0;
}

int recipe_is_section(const char *name) {
    if (!name[0]) return 0;
    for (int i = 0; i < recipe_n_keys; i++)
        if (section_len(recipe_keys[i].path) && in_section(recipe_keys[i].path, name)) return 1;
    return 0;
}

void recipe_format_number(double v, char *buf, size_t n) {
    char g[64] = "", e[64] = "";
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(g, sizeof g, "%.*g", prec, v);
        if (strtod(g, NULL) == v) break;
    }
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v) break;
    }
    /* 3.0e-04 style: drop the exponent's "+" and leading zeros: 3e-4. */
    char *x = strchr(e, 'e'), tidy[96];
    if (x) {
        int exp = atoi(x + 1);
        *x = '\0';
        snprintf(tidy, sizeof tidy, "%se%d", e, exp);
    } else {
        snprintf(tidy, sizeof tidy, "%s", e);
    }
    /* Small magnitudes read better as 3e-4 than 0.0003; everything else as %g. */
    int use_e = isfinite(v) && v != 0 && fabs(v) < 1e-2 && strlen(tidy) < strlen(g);
    snprintf(buf, n, "%s", use_e ? tidy : g);
}

void recipe_key_expected(const RecipeKey *k, char *buf, size_t n) {
    char lo[64], hi[64];
    recipe_format_number(k->lo, lo, sizeof lo);
    recipe_format_number(k->hi, hi, sizeof hi);
    switch (k->type) {
    case RK_STRING:
        snprintf(buf, n, "%s", (k->flags & RK_NONEMPTY) ? "a non-empty string" : "a string");
        return;
    case RK_BOOL: snprintf(buf, n, "true or false"); return;
    case RK_INT:
        if (k->hi < INT_MAX) snprintf(buf, n, "an integer in [%s, %s]", lo, hi);
        else snprintf(buf, n, "an integer >= %s", lo);
        return;
    case RK_NUMBER:
        if (isinf(k->hi))
            snprintf(buf, n, "a number %s %s", k->lo_open ? ">" : ">=", lo);
        else
            snprintf(buf, n, "a number in %c%s, %s%c", k->lo_open ? '(' : '[', lo, hi,
                     k->hi_open ? ')' : ']');
        return;
    case RK_SOURCES:
        snprintf(buf, n, "an array of objects {\"path\": string, \"weight\": number > 0, \"format\": string, \"text_field\": string}");
        return;
    case RK_CHOICE:
    case RK_LAYERS: {
        size_t used = (size_t)snprintf(buf, n, k->type == RK_CHOICE ? "one of " : "");
        for (int i = 0; i < k->n_choices && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s\"%s\"", i ? ", " : "", k->choices[i]);
        if (k->type == RK_LAYERS && used < n)
            snprintf(buf + used, n - used, " or an array of layer indices (integers >= 0)");
        return;
    }
    }
}

/* Optimal-string-alignment distance (edits incl. transpositions), case-insensitive;
 * strings longer than 63 bytes are compared on their first 63. */
static int edit_distance(const char *a, const char *b) {
    enum { M = 64 };
    int la = (int)strnlen(a, M - 1), lb = (int)strnlen(b, M - 1);
    static _Thread_local int d[M][M];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* How many edits still count as a typo of a word this long. */
static int typo_budget(const char *s) {
    size_t n = strlen(s);
    return n <= 2 ? 0 : n <= 4 ? 1 : n <= 8 ? 2 : 3;
}

/* "--Learning-Rate" -> "learning_rate", for the seed-flag lookup. */
static void normalize_flag(const char *key, char *out, size_t n) {
    while (*key == '-') key++;
    size_t i = 0;
    for (; key[i] && i + 1 < n; i++) out[i] = key[i] == '-' ? '_' : (char)tolower((unsigned char)key[i]);
    out[i] = '\0';
}

/* How a suggestion for a key typed inside section reads: the leaf when it lives in
 * the same section, else the full path. */
static const char *shown_as(const char *path, const char *section) {
    return in_section(path, section) && section[0] ? leaf_of(path) : path;
}

/* Appends ", item" (or "item" first) to the list in buf. */
static size_t list_append(char *buf, size_t n, size_t used, int *first, const char *item, int item_len) {
    if (used >= n) return used;
    used += (size_t)snprintf(buf + used, n - used, "%s%.*s", *first ? "" : ", ", item_len, item);
    *first = 0;
    return used;
}

/* "valid keys in \"train\": max_steps, ..." or, at top level, the top-level keys and
 * the section names. */
static void valid_keys_message(const char *section, char *buf, size_t n) {
    size_t used;
    if (section[0]) used = (size_t)snprintf(buf, n, "unknown key; valid keys in \"%s\": ", section);
    else used = (size_t)snprintf(buf, n, "unknown key; valid top-level keys: ");
    int first = 1;
    for (int i = 0; i < recipe_n_keys; i++) {
        const char *p = recipe_keys[i].path;
        size_t s = section_len(p);
        if (section[0] && in_section(p, section))
            used = list_append(buf, n, used, &first, leaf_of(p), (int)strlen(leaf_of(p)));
        else if (!section[0] && !s)
            used = list_append(buf, n, used, &first, p, (int)strlen(p));
        else if (!section[0] && (i == 0 || strncmp(p, recipe_keys[i - 1].path, s + 1) != 0))
            used = list_append(buf, n, used, &first, p, (int)s); /* first key of a section */
    }
}

void recipe_unknown_key_message(const char *section, const char *key, char *buf, size_t n) {
    char flag[128];
    normalize_flag(key, flag, sizeof flag);
    for (size_t i = 0; i < NPT_ARRAY_LEN(seed_flags); i++)
        if (strcmp(flag, seed_flags[i].flag) == 0) {
            snprintf(buf, n, "unknown key; did you mean \"%s\"? (the seed's --%s is %s)",
                     shown_as(seed_flags[i].path, section), seed_flags[i].flag, seed_flags[i].path);
            return;
        }
    if (!section[0] && section_len(key) && recipe_key_find(key)) { /* {"train.lr": ...} written flat */
        size_t s = section_len(key);
        snprintf(buf, n, "unknown key; nest it: \"%.*s\": {\"%s\": ...}", (int)s, key, key + s + 1);
        return;
    }
    /* Candidates: every key and, at top level, every section name. A key in another
     * section costs one extra edit, so "train.rank" still finds npt.rank. */
    char best[128] = "";
    int best_score = INT_MAX, best_budget = 0;
    for (int i = 0; i < recipe_n_keys; i++) {
        const char *p = recipe_keys[i].path;
        int elsewhere = !in_section(p, section);
        int score = edit_distance(key, leaf_of(p)) + elsewhere;
        if (score < best_score) {
            best_score = score, best_budget = typo_budget(key) + elsewhere;
            snprintf(best, sizeof best, "%s", shown_as(p, section));
        }
        if (!section[0] && strchr(key, '.') && (score = edit_distance(key, p)) < best_score) {
            best_score = score, best_budget = typo_budget(key); /* --set traim.lr=... */
            snprintf(best, sizeof best, "%s", p);
        }
        size_t s = section_len(p);
        if (!section[0] && s) {
            char sec[64];
            snprintf(sec, sizeof sec, "%.*s", (int)s, p);
            score = edit_distance(key, sec);
            if (score < best_score) {
                best_score = score, best_budget = typo_budget(key);
                snprintf(best, sizeof best, "%s", sec);
            }
        }
    }
    if (best_score <= best_budget && best_score < (int)strlen(key))
        snprintf(buf, n, "unknown key; did you mean \"%s\"?", best);
    else
        valid_keys_message(section, buf, n);
}

const char *recipe_closest_choice(const RecipeKey *k, const char *s) {
    const char *best = NULL;
    int best_score = INT_MAX;
    for (int i = 0; i < k->n_choices; i++) {
        int score = edit_distance(s, k->choices[i]);
        if (score < best_score) best_score = score, best = k->choices[i];
    }
    return best_score <= typo_budget(s) + 1 && best_score < (int)strlen(s) ? best : NULL;
}

const char *recipe_choice_name(const char *key_path, int value) {
    const RecipeKey *k = recipe_key_find(key_path);
    if (!k || !k->choices || value < 0 || value >= k->n_choices) return "?";
    return k->choices[value];
}

/* Growable text buffer for the schema renderers; aborts only on OOM (npt_xmalloc). */
typedef struct {
    char *s;
    size_t len, cap;
} Text;

static void __attribute__((format(printf, 2, 3))) text_printf(Text *t, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int need = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (need < 0) return;
        if (t->s && t->len + (size_t)need < t->cap) {
            t->len += (size_t)need;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)need;
        char *s = npt_xmalloc(cap, "recipe schema text");
        if (t->s) memcpy(s, t->s, t->len + 1);
        else s[0] = '\0';
        free(t->s);
        t->s = s;
        t->cap = cap;
    }
}

/* Markdown table cells: "|" would split the cell. */
static void text_cell(Text *t, const char *s) {
    text_printf(t, " ");
    for (; *s; s++) text_printf(t, *s == '|' ? "\\|" : "%c", *s);
    text_printf(t, " |");
}

char *recipe_schema_markdown(void) {
    Text t = {0};
    text_printf(&t, "| key | default | allowed values | meaning |\n|---|---|---|---|\n");
    for (int i = 0; i < recipe_n_keys; i++) {
        const RecipeKey *k = &recipe_keys[i];
        char expected[512], def[300];
        recipe_key_expected(k, expected, sizeof expected);
        if (k->def) snprintf(def, sizeof def, "`%s`", k->def);
        else snprintf(def, sizeof def, "(%s)", k->def_doc);
        text_printf(&t, "| `%s` |", k->path);
        text_cell(&t, def);
        text_cell(&t, expected);
        text_cell(&t, k->doc);
        text_printf(&t, "\n");
    }
    return t.s;
}

static const char *type_name(RecipeKeyType t) {
    static const char *const names[] = {"string", "integer", "number", "boolean", "choice", "layers", "sources"};
    return names[t];
}

char *recipe_schema_json(void) {
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return NULL;
    for (int i = 0; i < recipe_n_keys; i++) {
        const RecipeKey *k = &recipe_keys[i];
        char expected[512];
        recipe_key_expected(k, expected, sizeof expected);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON *def = k->def ? cJSON_Parse(k->def) : cJSON_CreateNull();
        int ok = cJSON_AddStringToObject(o, "key", k->path) && cJSON_AddStringToObject(o, "type", type_name(k->type)) &&
                 def && cJSON_AddItemToObject(o, "default", def) &&
                 cJSON_AddStringToObject(o, "default_doc", k->def ? k->def : k->def_doc) &&
                 cJSON_AddStringToObject(o, "allowed", expected) &&
                 cJSON_AddBoolToObject(o, "required", (k->flags & RK_REQUIRED) != 0) &&
                 cJSON_AddStringToObject(o, "doc", k->doc);
        if (!ok) {
            cJSON_Delete(arr);
            return NULL;
        }
    }
    char *printed = cJSON_Print(arr);
    cJSON_Delete(arr);
    if (!printed) return NULL;
    char *out = npt_xstrdup(printed);
    cJSON_free(printed);
    return out;
}
