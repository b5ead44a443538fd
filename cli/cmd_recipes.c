/* cli/cmd_recipes.c — `npt validate` (every recipe error at once, optionally checked
 * against the model's shape) and `npt recipes` (list, show, copy the bundled recipes,
 * print the key table). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/dataset.h"
#include "../model/llama.h"
#include "../train/adapters.h"
#include "../util/atomic_file.h"
#include "../train/recipe.h"
#include "../train/trainer.h"
#include "commands.h"

static const char *validate_help =
    "usage: npt validate RECIPE [--set key.path=value]... [--schema-only] [--json]\n\n"
    "Checks a recipe and reports every problem at once, one \"path: message\" per line.\n"
    "RECIPE is a file, or the name of a bundled recipe (see npt recipes list).\n"
    "Unless --schema-only, also checks that the files it names exist, loads the model and\n"
    "makes npt train's checks before a run: npt.rank, npt.layers and data.seq_len against\n"
    "the model, the tokenizer against its vocabulary, data.train set, data.valid not a\n"
    "training file, and the token cache and output_dir being directories (or creatable).\n"
    "Token and HDF5 files are opened as npt train opens them (size, format, at least one\n"
    "window); text is not tokenized and token ids are not checked against the vocabulary\n"
    "(both need a pass over the whole corpus: npt train makes them).\n\n"
    "  --set key.path=value  override a key (value parsed as JSON, else taken as a string)\n"
    "  --schema-only         check the recipe alone: no file checks, no model load\n"
    "  --json                print {\"ok\":..., \"errors\":[{\"path\",\"message\"}], ...}\n\n"
    "Exit status: 0 valid, 1 invalid, 2 usage error.\n";

static const char *recipes_help =
    "usage: npt recipes [list] [--json]\n"
    "       npt recipes show NAME\n"
    "       npt recipes copy NAME DEST [--force]\n"
    "       npt recipes keys [--json]\n\n"
    "  list   the bundled recipes with a one-line description (the default)\n"
    "  show   print a bundled recipe, comments included\n"
    "  copy   write a bundled recipe to DEST (a file, or a directory to copy into) to edit it;\n"
    "         an existing file is kept unless --force\n"
    "  keys   every recipe key with its default, allowed values and meaning (Markdown)\n\n"
    "Bundled recipes are read from $NPT_RECIPES_DIR, else <npt's directory>/recipes, else ./recipes.\n";

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* Prints cJSON tree as one line and frees it. */
static int print_json(cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) {
        fprintf(stderr, "npt: error: out of memory formatting JSON\n");
        return -1;
    }
    puts(s);
    cJSON_free(s);
    return 0;
}

static cJSON *issues_json(const RecipeIssue *v, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            break;
        }
        cJSON_AddStringToObject(o, "path", v[i].path);
        cJSON_AddStringToObject(o, "message", v[i].message);
        if (v[i].line) {
            cJSON_AddNumberToObject(o, "line", v[i].line);
            cJSON_AddNumberToObject(o, "column", v[i].column);
        }
    }
    return arr;
}

/* ---------------------------------------------------------------- validate */

/* The files the recipe names exist. Also run on a recipe with schema errors: the paths
 * that were stored are checked, so one validate lists a wrong type and a missing model
 * together instead of one after the other (a path with an error of its own is empty). */
static void check_paths(const Recipe *r, RecipeDiag *d) {
    recipe_path_issue(r->model, 1, "model", "model", d);
    recipe_path_issue(r->tokenizer, 0, "tokenizer", "tokenizer", d);
    recipe_data_path_issues(r, d);
}

/* The checks that need a valid recipe and its files: the model loads, and npt train's
 * own checks before it starts (train_setup_issues) pass. Fills *shape when the model
 * loaded. */
static void check_model(const Recipe *r, RecipeDiag *d, LlamaConfig *shape, int *loaded) {
    recipe_training_issues(r, d);
    if (d->n_errors) return;
    train_data_issues(r, d); /* needs no model: reported even when the model does not load */
    LlamaModel m;
    NptErr err;
    if (load_full_model(r->model, &m, &err)) {
        recipe_diag_add(d, 1, "model", err.msg);
        return;
    }
    *shape = m.cfg;
    *loaded = 1;
    train_setup_issues(r, &m, 1, NULL, d);
    llama_free(&m);
}

/* The data lines: data.train, or each of data.sources with its weight (a recipe with
 * sources sets no data.train), then where validation windows come from. */
static void print_data_summary(const Recipe *r) {
    printf("  data        ");
    if (r->data.n_sources)
        for (int i = 0; i < r->data.n_sources; i++)
            printf("%s%s (weight %g)", i ? ", " : "", r->data.sources[i].path, r->data.sources[i].weight);
    else
        printf("%s", r->data.train[0] ? r->data.train : "(data.train not set)");
    printf(", seq_len %d%s\n", r->data.seq_len, r->data.shuffle ? ", shuffled" : "");
    if (r->data.valid[0])
        printf("  valid       %s (data.valid)\n", r->data.valid);
    else if (r->data.valid_fraction > 0)
        printf("  valid       the last %g%% of each training source's windows (data.valid_fraction %g)\n",
               100 * r->data.valid_fraction, r->data.valid_fraction);
    else
        printf("  valid       none (set data.valid or data.valid_fraction to evaluate held-out windows)\n");
}

static void print_summary(const char *file, const Recipe *r, const LlamaConfig *shape, int loaded) {
    char lr[64];
    recipe_format_number(r->train.lr, lr, sizeof lr);
    printf("%s: OK\n", file);
    printf("  model       %s", r->model);
    if (loaded) printf(" (dim %d, hidden %d, %d layers)", shape->dim, shape->hidden_dim, shape->n_layers);
    printf("\n  npt         rank %d, layers ", r->npt.rank);
    if (r->npt.layers == LAYERS_LIST)
        for (int i = 0; i < r->npt.n_layer_ids; i++) printf(i ? ",%d" : "[%d", r->npt.layer_ids[i]);
    printf("%s, %s, modulation_scale %g\n", r->npt.layers == LAYERS_LIST ? "]" : recipe_choice_name("npt.layers", r->npt.layers),
           r->npt.safe_mode ? "safe mode (additive only)" : "additive + multiplicative", r->npt.modulation_scale);
    printf("  objective   %s", recipe_choice_name("objective.type", r->objective.type));
    if (r->objective.type == OBJECTIVE_DISTILL) printf(" (%s)", recipe_choice_name("objective.loss", r->objective.loss));
    printf(", lambda %g\n", r->objective.lambda);
    print_data_summary(r);
    printf("  train       %s lr %s, %s schedule, warmup %d, %d steps x batch %d x accum %d, clip %g\n",
           recipe_choice_name("train.optimizer", r->train.optimizer), lr,
           recipe_choice_name("train.schedule", r->train.schedule), r->train.warmup_steps, r->train.max_steps,
           r->train.batch_size, r->train.grad_accum, r->train.clip_grad_norm);
    printf("  output      %s (log every %d, checkpoint every %d, keep %d%s)\n", r->output_dir, r->log.every,
           r->checkpoint.every, r->checkpoint.keep_last, r->checkpoint.save_best ? " + best" : "");
}

int cmd_validate(int argc, char **argv) {
    const char *arg = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, json = 0, schema_only = 0;
    if (!sets) {
        fprintf(stderr, "npt validate: error: out of memory\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(validate_help, stdout);
            free(sets);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--schema-only")) {
            schema_only = 1;
        } else if (arg_is(argv[i], "--set")) {
            if (!(sets[n_sets] = arg_value(argc, argv, &i, "--set", "validate")) ||
                check_set_arg(sets[n_sets++], "validate")) {
                free(sets);
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "npt validate: error: unknown option '%s' (see npt validate --help)\n", argv[i]);
            free(sets);
            return 2;
        } else if (arg) {
            fprintf(stderr, "npt validate: error: one recipe at a time (got '%s' and '%s')\n", arg, argv[i]);
            free(sets);
            return 2;
        } else {
            arg = argv[i];
        }
    }
    if (!arg) {
        fprintf(stderr, "npt validate: error: which recipe? usage: npt validate RECIPE (see --help)\n");
        free(sets);
        return 2;
    }
    char path[RECIPE_PATH_MAX];
    NptErr err;
    Recipe r;
    memset(&r, 0, sizeof r); /* freed below even when the path did not resolve */
    RecipeDiag d = {0};
    LlamaConfig shape = {0};
    int loaded = 0, ok;
    if (recipe_resolve_path(arg, path, sizeof path, &err)) {
        snprintf(path, sizeof path, "%s", arg);
        recipe_diag_add(&d, 1, arg, err.msg + (strncmp(err.msg, arg, strlen(arg)) ? 0 : strlen(arg) + 2));
        ok = 0;
    } else {
        ok = recipe_load(path, sets, n_sets, &r, &d) == 0;
        if (!schema_only) check_paths(&r, &d);
        if (ok && !schema_only) check_model(&r, &d, &shape, &loaded);
        ok = ok && d.n_errors == 0;
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddStringToObject(o, "recipe", path);
            cJSON_AddBoolToObject(o, "ok", ok);
            cJSON_AddItemToObject(o, "errors", issues_json(d.errors, d.n_errors));
            cJSON_AddNumberToObject(o, "errors_not_shown", d.n_dropped);
            cJSON_AddItemToObject(o, "warnings", issues_json(d.warnings, d.n_warnings));
            char *resolved = ok ? recipe_to_json(&r) : NULL;
            cJSON_AddItemToObject(o, "resolved", resolved ? cJSON_Parse(resolved) : cJSON_CreateNull());
            free(resolved);
        }
        if (print_json(o)) ok = 0;
    } else {
        if (ok) print_summary(path, &r, &shape, loaded);
        for (int i = 0; i < d.n_errors; i++) fprintf(stderr, "%s: %s\n", d.errors[i].path, d.errors[i].message);
        if (d.n_dropped) fprintf(stderr, "... and %d more errors\n", d.n_dropped);
        for (int i = 0; i < d.n_warnings; i++)
            fprintf(stderr, "warning: %s: %s\n", d.warnings[i].path, d.warnings[i].message);
        if (!ok) fprintf(stderr, "%s: %d error%s\n", path, d.n_errors + d.n_dropped, d.n_errors + d.n_dropped == 1 ? "" : "s");
    }
    recipe_free(&r);
    recipe_diag_free(&d);
    free(sets);
    return ok ? 0 : 1;
}

/* ---------------------------------------------------------------- recipes */

static int is_json_name(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 5 && !strcmp(e->d_name + n - 5, ".json");
}

static int recipes_list(int json) {
    char dir[RECIPE_PATH_MAX];
    NptErr err;
    if (recipe_bundled_dir(dir, sizeof dir, &err)) {
        fprintf(stderr, "npt recipes: error: %s\n", err.msg);
        return 1;
    }
    struct dirent **names;
    int n = scandir(dir, &names, is_json_name, alphasort);
    if (n < 0) {
        fprintf(stderr, "npt recipes: error: cannot list %s: %s\n", dir, strerror(errno));
        return 1;
    }
    cJSON *arr = json ? cJSON_CreateArray() : NULL;
    if (!json) printf("bundled recipes (%s):\n", dir);
    for (int i = 0; i < n; i++) {
        char path[2 * RECIPE_PATH_MAX], stem[RECIPE_NAME_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        snprintf(stem, sizeof stem, "%.*s", (int)(strlen(names[i]->d_name) - 5), names[i]->d_name);
        Recipe r;
        int valid = recipe_load(path, NULL, 0, &r, NULL) == 0;
        const char *desc = valid ? r.description : "(invalid: see npt validate)";
        if (json) {
            cJSON *o = cJSON_CreateObject();
            if (o && cJSON_AddItemToArray(arr, o)) {
                cJSON_AddStringToObject(o, "name", stem);
                cJSON_AddStringToObject(o, "path", path);
                cJSON_AddStringToObject(o, "description", valid ? r.description : "");
                cJSON_AddBoolToObject(o, "valid", valid);
            } else {
                cJSON_Delete(o);
            }
        } else {
            printf("  %-22s %s\n", stem, desc);
        }
        recipe_free(&r);
        free(names[i]);
    }
    free(names);
    if (json) return print_json(arr) ? 1 : 0;
    printf("\nnpt recipes show NAME prints one; npt recipes copy NAME my.json makes an editable copy.\n");
    return 0;
}

/* The bundled recipe NAME, or a message and -1. */
static int bundled_path(const char *name, char *out, size_t n) {
    NptErr err;
    if (recipe_bundled_path(name, out, n, &err) == 0) return 0;
    fprintf(stderr, "npt recipes: error: %s\n", err.msg);
    return -1;
}

static int recipes_show(const char *name) {
    char path[2 * RECIPE_PATH_MAX];
    if (bundled_path(name, path, sizeof path)) return 1;
    NptErr err;
    size_t len;
    char *text = npt_read_input(path, "recipe", &len, &err);
    if (!text) {
        fprintf(stderr, "npt recipes: error: %s\n", err.msg);
        return 1;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    return 0;
}

/* Writes text to dest through a temporary file in the same directory, fsync and
 * rename, so dest is either untouched or complete. */
static int write_atomic(const char *dest, const char *text, size_t len, int force) {
    NptAtomicFile o;
    NptErr err;
    FILE *f = npt_atomic_open(&o, dest, &err);
    int rc = f ? 0 : -1;
    if (f) o.no_replace = !force;
    if (f && fwrite(text, 1, len, f) != len) {
        rc = npt_fail(&err, "cannot write %s: %s", dest, strerror(errno));
        npt_atomic_abort(&o);
    } else if (f) {
        rc = npt_atomic_commit(&o, &err);
    }
    if (rc) fprintf(stderr, "npt recipes: error: %s\n", err.msg);
    return rc;
}

static int recipes_copy(const char *name, const char *dest_arg, int force) {
    char src[2 * RECIPE_PATH_MAX], dest[3 * RECIPE_PATH_MAX];
    if (bundled_path(name, src, sizeof src)) return 1;
    struct stat st;
    if (stat(dest_arg, &st) == 0 && S_ISDIR(st.st_mode)) {
        const char *base = strrchr(src, '/');
        snprintf(dest, sizeof dest, "%s/%s", dest_arg, base ? base + 1 : src);
    } else {
        snprintf(dest, sizeof dest, "%s", dest_arg);
    }
    const char *in[] = {src};
    if (refuse_output_over_inputs(dest, "the destination", in, 1, "recipes copy")) return 1;
    if (refuse_existing_output(dest, "the destination", force, "recipes")) return 1;
    NptErr err;
    size_t len;
    char *text = npt_read_input(src, "recipe", &len, &err);
    if (!text) {
        fprintf(stderr, "npt recipes: error: %s\n", err.msg);
        return 1;
    }
    int rc = write_atomic(dest, text, len, force);
    free(text);
    if (rc) return 1;
    printf("copied %s to %s; edit it, then: npt validate %s\n", src, dest, dest);
    return 0;
}

static int recipes_keys(int json) {
    char *text = json ? recipe_schema_json() : recipe_schema_markdown();
    if (!text) {
        fprintf(stderr, "npt recipes: error: out of memory\n");
        return 1;
    }
    puts(text);
    free(text);
    return 0;
}

int cmd_recipes(int argc, char **argv) {
    const char *pos[3] = {"", "", ""};
    int n_pos = 0, json = 0, force = 0;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(recipes_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "npt recipes: error: unknown option '%s' (see npt recipes --help)\n", argv[i]);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "npt recipes: error: too many arguments (see npt recipes --help)\n");
            return 2;
        }
    }
    const char *sub = n_pos ? pos[0] : "list";
    static const struct {
        const char *name;
        int n_args;
        const char *usage;
    } subs[] = {{"list", 0, "npt recipes list"}, {"show", 1, "npt recipes show NAME"},
                {"copy", 2, "npt recipes copy NAME DEST [--force]"}, {"keys", 0, "npt recipes keys"}};
    for (size_t s = 0; s < sizeof subs / sizeof subs[0]; s++) {
        if (strcmp(sub, subs[s].name) != 0) continue;
        if (n_pos && n_pos - 1 != subs[s].n_args) {
            fprintf(stderr, "npt recipes: error: usage: %s\n", subs[s].usage);
            return 2;
        }
        /* refused rather than ignored: `show X --force` or `copy --json` would do less than asked */
        if ((force && s != 2) || (json && (s == 1 || s == 2))) {
            fprintf(stderr, "npt recipes %s: error: %s is not a flag of this subcommand; usage: %s\n", sub,
                    force && s != 2 ? "--force" : "--json", subs[s].usage);
            return 2;
        }
        switch (s) {
        case 0: return recipes_list(json);
        case 1: return recipes_show(pos[1]);
        case 2: return recipes_copy(pos[1], pos[2], force);
        default: return recipes_keys(json);
        }
    }
    fprintf(stderr, "npt recipes: error: unknown subcommand '%s'; use list, show, copy or keys\n", sub);
    return 2;
}
