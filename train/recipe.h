/* train/recipe.h — training recipes: JSON files (comments allowed) that describe one
 * run, parsed with cJSON and validated strictly against one schema table
 * (train/recipe_schema.c) that also supplies the defaults, the documentation
 * (`npt recipes keys`) and the did-you-mean suggestions.
 *
 * Loading never stops at the first problem: every error is collected with its JSON
 * path ("train.lr: expected a number > 0, got string \"fast\"") so `npt validate`
 * can report them all at once. */
#ifndef NPT_RECIPE_H
#define NPT_RECIPE_H

#include "../data/dataset.h"
#include "../util/common.h"

#define RECIPE_PATH_MAX 4096
#define RECIPE_NAME_MAX 256
#define RECIPE_DESC_MAX 1024

/* Safe mode caps the learning rate here (SPEC section 4) and turns clipping on. */
#define RECIPE_SAFE_LR_CAP 1e-4
#define RECIPE_SAFE_CLIP 0.5

/* Enum orders match the choice lists in recipe_schema.c (checked at compile time). */
typedef enum { LAYERS_ALL, LAYERS_UPPER_HALF, LAYERS_LOWER_HALF, LAYERS_LIST } LayerMode;
typedef enum { NPT_INIT_DEFAULT } NptInit;
typedef enum { OBJECTIVE_DISTILL, OBJECTIVE_LM } ObjectiveType;
typedef enum { LOSS_NMSE, LOSS_MSE } DistillLoss;
typedef enum { BAD_RECORD_ERROR, BAD_RECORD_SKIP } BadRecordPolicy;

#define RECIPE_MAX_SOURCES 32
#define RECIPE_FIELD_MAX 64

/* One entry of data.sources (data.train is the one-source shorthand). */
typedef struct {
    char path[RECIPE_PATH_MAX];        /* file, folder, or FILE.h5:/DATASET */
    double weight;                     /* relative share of training windows */
    DatasetFormat format;              /* data/dataset.h; the choice names follow its order */
    char text_field[RECIPE_FIELD_MAX]; /* "" = data.text_field */
} RecipeSource;
typedef enum { OPTIMIZER_ADAMW, OPTIMIZER_SGD } OptimizerType;
typedef enum { SCHEDULE_COSINE, SCHEDULE_LINEAR, SCHEDULE_CONSTANT } ScheduleType;

/* One run, every value effective (defaults applied, overrides and safe mode done).
 * Sections mirror the JSON: "train": {"lr": ...} is r.train.lr. Strings are ""
 * when unset. */
typedef struct {
    char name[RECIPE_NAME_MAX];        /* default: the file stem */
    char description[RECIPE_DESC_MAX];
    char model[RECIPE_PATH_MAX];       /* HF dir, llama2.c .bin or .gguf; relative to the CWD */
    char tokenizer[RECIPE_PATH_MAX];   /* "" = the one beside the model */
    char output_dir[RECIPE_PATH_MAX];  /* default: runs/<name> */
    int seed;
    int threads;                       /* 0 = all cores */
    struct {
        LayerMode layers;
        int *layer_ids;                /* LAYERS_LIST only: sorted ascending, unique */
        int n_layer_ids;
        int rank;
        int safe_mode;                 /* additive modulation only; see recipe_apply_safe_mode */
        double modulation_scale;
        NptInit init;
        double init_a_std, init_b_add_std, init_b_mul_std;
    } npt;
    struct {
        ObjectiveType type;
        DistillLoss loss;              /* distill only */
        double lambda;
        int train_all_weights;         /* lm only */
    } objective;
    struct {
        char train[RECIPE_PATH_MAX];   /* this or sources is required by `npt train` */
        DatasetFormat format;          /* DATASET_AUTO: dataset_detect_format by path */
        int seq_len;
        int shuffle;
        char valid[RECIPE_PATH_MAX];
        RecipeSource *sources;         /* data.sources; NULL when absent */
        int n_sources;
        double valid_fraction;         /* held out of each source when valid is "" */
        char text_field[RECIPE_FIELD_MAX];
        BadRecordPolicy on_bad_record;
        int append_eos;
        char cache_dir[RECIPE_PATH_MAX]; /* "" = dataset_default_cache_dir */
    } data;
    struct {
        int max_steps;                 /* optimizer steps */
        int batch_size;
        int grad_accum;
        OptimizerType optimizer;
        double lr, min_lr_ratio;
        ScheduleType schedule;
        int warmup_steps;
        double weight_decay, beta1, beta2, eps, momentum;
        double clip_grad_norm;         /* 0 = off */
        int skip_nonfinite;
        int debug_on_skip;
        int max_consecutive_skips;
        double teacher_cache_gb;       /* 0 = off */
    } train;
    struct {
        int every;
        char metrics_file[RECIPE_PATH_MAX]; /* relative to output_dir */
    } log;
    struct {
        int every;   /* 0 = off */
        int windows; /* validation windows per eval */
    } eval;
    struct {
        int every, keep_last;
        int save_best;
    } checkpoint;
} Recipe;

/* A problem found while loading: path is a JSON path ("train.lr", "npt.layers[2]"),
 * or "FILE:LINE:COL" for a syntax error (then line/column are set, else 0). */
typedef struct {
    char *path;
    char *message;
    int line, column;
} RecipeIssue;

#define RECIPE_MAX_ISSUES 200 /* beyond this, issues are only counted (n_dropped) */

typedef struct {
    RecipeIssue *errors;
    int n_errors;
    RecipeIssue *warnings;
    int n_warnings;
    int n_dropped; /* errors not stored because there were too many */
} RecipeDiag;

/* Reads, strips comments, applies `key.path=value` overrides to the JSON tree, then
 * validates and fills out. Returns 0, or -1 with every error in diag; out then holds
 * the values that were valid (npt validate checks the paths among them), so the caller
 * recipe_frees it in both cases. diag may be NULL; when given, the caller frees it
 * with recipe_diag_free in both cases (warnings are reported on success too). */
int recipe_load(const char *path, const char *const *overrides, int n_overrides, Recipe *out,
                RecipeDiag *diag);
/* Same from text already in memory; filename names it in messages and supplies the
 * default name (its stem); NULL means "recipe". Used for recipes stored in checkpoints. */
int recipe_parse(const char *text, const char *filename, const char *const *overrides,
                 int n_overrides, Recipe *out, RecipeDiag *diag);
void recipe_free(Recipe *r);
void recipe_diag_free(RecipeDiag *d);
/* All errors then all warnings, one "path: message" per line ("warning: " before
 * warnings), malloc'd; "" when there are none. */
char *recipe_diag_text(const RecipeDiag *d);

/* Deep copy (layer list and data sources included). */
void recipe_copy(Recipe *dst, const Recipe *src);

/* Safe-mode implications, idempotent; recipe_load already calls it. Adds one warning
 * per changed setting: lr capped at RECIPE_SAFE_LR_CAP, clip_grad_norm 0 -> 0.5,
 * skip_nonfinite forced on. diag may be NULL. */
void recipe_apply_safe_mode(Recipe *r, RecipeDiag *diag);

/* Checks that need the model: rank <= min(dim, hidden_dim), explicit layer ids below
 * n_layers, half selections not empty. Each problem is added to diag as an error with
 * its path; returns the number of problems (npt train joins them: recipe_diag_fail). */
int recipe_model_issues(const Recipe *r, int dim, int hidden_dim, int n_layers, RecipeDiag *diag);
/* data.seq_len beyond the model's context (its max positions): 1 and the message (without
 * the key) in msg, else 0. npt train refuses it and npt validate reports it as an error,
 * as the other verbs refuse --seq-len beyond the context (cli/session.c). */
int recipe_context_issue(const Recipe *r, int context, char *msg, size_t size);
/* path ("" = not given) exists and can be read (a directory only with dir_ok); else an
 * error under key. `what` names it in a pipe/device refusal. */
void recipe_path_issue(const char *path, int dir_ok, const char *key, const char *what, RecipeDiag *diag);
/* The data sources (data.train or data.sources[i].path, data.valid) exist, and
 * data.valid is not the file (or HDF5 dataset) of a training source: npt validate and
 * npt train (train_setup_issues) name the key of a missing or overlapping one. */
void recipe_data_path_issues(const Recipe *r, RecipeDiag *diag);
/* Adds an error or a warning found by a caller (e.g. a missing file) to diag. */
void recipe_diag_add(RecipeDiag *diag, int is_error, const char *path, const char *message);
/* The errors of d as one line in err ("path: message", "; "-joined): -1, or 0 when
 * there are none. For callers that stop at the first failed check (npt train). */
int recipe_diag_fail(const RecipeDiag *d, NptErr *err);
/* `npt train` needs training data (data.train or data.sources); reading a recipe alone
 * does not. The issue form adds the error to diag (returns 1), the check form to err. */
int recipe_training_issues(const Recipe *r, RecipeDiag *diag);
int recipe_check_for_training(const Recipe *r, NptErr *err);

/* The converted layers for a model with n_layers, ascending, into ids (capacity
 * n_layers). Returns the count (>= 1) or -1 with err set (see check_against_model).
 * lower_half = [0, n/2), upper_half = [n/2, n). */
int recipe_resolve_layers(const Recipe *r, int n_layers, int *ids, NptErr *err);

/* 1 when some data source (data.train, data.sources, data.valid) is text or JSONL, with
 * formats resolved by dataset_detect_format: the run must tokenize, so it needs a tokenizer. */
int recipe_needs_tokenizer(const Recipe *r);

/* The effective recipe as a JSON object with every key (no comments), malloc'd; free().
 * Loading it back gives the same Recipe. Stored in checkpoints. */
char *recipe_to_json(const Recipe *r);

/* Resuming a checkpoint written with the recipe saved_json (its /recipe) under recipe
 * now_json. Returns -1 with err naming the first key whose change would make the
 * checkpoint's state mean something else (modulation scale, objective, optimizer, data
 * order...): the resume is refused. Otherwise 0, with the keys whose change lets the run
 * go on but not reproduce an uninterrupted one (learning rate, schedule, batch...) listed
 * in changed ("" when none). Keys absent from saved_json (an older file) are not
 * compared; model and data identity are checked elsewhere (fingerprint, data cursor). */
int recipe_resume_check(const char *saved_json, const char *now_json, const char *ckpt_path, char *changed,
                        size_t changed_size, NptErr *err);

/* Shortest text that reads back as the same double, small values in e-notation:
 * 3e-4, 0.1, 1000. */
void recipe_format_number(double v, char *buf, size_t n);

/* The name of an enum value for a choice key, e.g. recipe_choice_name("train.schedule",
 * SCHEDULE_COSINE) == "cosine"; "?" for an unknown key or value. */
const char *recipe_choice_name(const char *key_path, int value);

/* Bundled recipes live in $NPT_RECIPES_DIR, else <dir of the npt executable>/recipes,
 * else ./recipes. Writes the directory used into dir; -1 with err if none exists. */
int recipe_bundled_dir(char *dir, size_t n, NptErr *err);
/* The file of bundled recipe name ("npt-safe" or "npt-safe.json"); -1 with err if
 * there is none. */
int recipe_bundled_path(const char *name, char *out, size_t n, NptErr *err);
/* arg as given if it is an existing file, else the bundled recipe of that name (with or
 * without .json). -1 with err, which starts with "ARG: ", when neither exists. */
int recipe_resolve_path(const char *arg, char *out, size_t n, NptErr *err);

/* The schema as a Markdown table (`npt recipes keys`) or a JSON array; malloc'd. */
char *recipe_schema_markdown(void);
char *recipe_schema_json(void);

#endif
