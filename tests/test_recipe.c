/* tests/test_recipe.c — recipes that should load do: every bundled recipe validates,
 * npt-safe is the seed's reference command (values from SPEC section 5), defaults match
 * the documented table (written out here by hand, not read from the schema), and
 * recipe_to_json round-trips to the same Recipe. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../train/recipe.h"
#include "test.h"

/* Recipes equal field by field: the struct bytes (both loads start from a zeroed
 * struct and write each field once) and the layer lists. */
static int recipes_equal(const Recipe *a, const Recipe *b) {
    Recipe x = *a, y = *b;
    x.npt.layer_ids = y.npt.layer_ids = NULL;
    if (memcmp(&x, &y, sizeof x) != 0) return 0;
    if (a->npt.n_layer_ids != b->npt.n_layer_ids) return 0;
    return a->npt.n_layer_ids == 0 ||
           memcmp(a->npt.layer_ids, b->npt.layer_ids, (size_t)a->npt.n_layer_ids * sizeof(int)) == 0;
}

/* Loads r's JSON back and compares; also checks every key the docs promise is present. */
static void check_round_trip(const char *what, const Recipe *r) {
    char *json = recipe_to_json(r);
    Recipe back;
    RecipeDiag d;
    int rc = json ? recipe_parse(json, "roundtrip.json", NULL, 0, &back, &d) : -1;
    check(rc == 0 && d.n_warnings == 0, "%s: its JSON loads again without errors or warnings", what);
    check(rc == 0 && recipes_equal(r, &back), "%s: to_json -> parse gives the same Recipe", what);
    char *again = rc == 0 ? recipe_to_json(&back) : NULL;
    check(again && json && strcmp(json, again) == 0, "%s: the JSON is a fixed point", what);
    free(again);
    if (rc == 0) recipe_free(&back);
    recipe_diag_free(&d);
    free(json);
}

/* Every key of the documented schema (the task's table), checked present in to_json. */
static const char *const documented_keys[] = {
    "name", "description", "model", "tokenizer", "output_dir", "seed", "threads",
    "npt.layers", "npt.rank", "npt.safe_mode", "npt.modulation_scale", "npt.init", "npt.init_a_std",
    "npt.init_b_add_std", "npt.init_b_mul_std",
    "objective.type", "objective.loss", "objective.lambda", "objective.train_all_weights",
    "data.train", "data.format", "data.sources", "data.seq_len", "data.shuffle", "data.valid", "data.valid_fraction",
    "data.text_field", "data.on_bad_record", "data.append_eos", "data.cache_dir",
    "train.max_steps", "train.batch_size", "train.grad_accum", "train.optimizer", "train.lr", "train.min_lr_ratio",
    "train.schedule", "train.warmup_steps", "train.weight_decay", "train.beta1", "train.beta2", "train.eps",
    "train.momentum", "train.clip_grad_norm", "train.skip_nonfinite", "train.debug_on_skip",
    "train.max_consecutive_skips", "train.teacher_cache_gb", "log.every", "log.metrics_file", "eval.every", "eval.windows", "checkpoint.every", "checkpoint.keep_last", "checkpoint.save_best",
};

static void test_json_has_every_key(void) {
    Recipe r;
    recipe_parse("{\"model\": \"m\"}", NULL, NULL, 0, &r, NULL);
    char *json = recipe_to_json(&r);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    int missing = 0, total = 0;
    for (size_t i = 0; i < sizeof documented_keys / sizeof documented_keys[0]; i++) {
        char sec[32] = "";
        const char *dot = strchr(documented_keys[i], '.');
        const cJSON *v = root;
        if (dot) {
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - documented_keys[i]), documented_keys[i]);
            v = cJSON_GetObjectItemCaseSensitive(v, sec);
        }
        v = cJSON_GetObjectItemCaseSensitive(v, dot ? dot + 1 : documented_keys[i]);
        if (!v) printf("NOTE: %s missing from recipe_to_json\n", documented_keys[i]);
        missing += !v;
        total++;
    }
    check(root && missing == 0, "recipe_to_json holds all %d documented keys", total);
    /* and nothing else: as many leaves as documented */
    int leaves = 0;
    for (const cJSON *m = root ? root->child : NULL; m; m = m->next)
        leaves += cJSON_IsObject(m) ? cJSON_GetArraySize(m) : 1;
    check(leaves == total, "recipe_to_json has no undocumented key (%d leaves)", leaves);
    char *md = recipe_schema_markdown();
    int in_docs = 0;
    for (int i = 0; i < total; i++) {
        char cell[80];
        snprintf(cell, sizeof cell, "| `%s` |", documented_keys[i]);
        in_docs += strstr(md, cell) != NULL;
    }
    check(in_docs == total, "`npt recipes keys` documents all %d keys (%d found)", total, in_docs);
    free(md);
    cJSON_Delete(root);
    free(json);
    recipe_free(&r);
}

static void test_defaults(void) {
    Recipe r;
    RecipeDiag d;
    int rc = recipe_parse("{\"model\": \"m.bin\"}", "dir/minimal.json", NULL, 0, &r, &d);
    check(rc == 0 && d.n_errors == 0 && d.n_warnings == 0, "a recipe with only \"model\" is valid");
    /* expected values: the task's schema table */
    check(!strcmp(r.name, "minimal") && !strcmp(r.output_dir, "runs/minimal") && !strcmp(r.tokenizer, "") &&
              !strcmp(r.description, ""),
          "default name (stem), output_dir runs/<name>, tokenizer \"\"");
    check(r.seed == 1234 && r.threads == 0, "default seed 1234, threads 0");
    check(r.npt.layers == LAYERS_ALL && r.npt.layer_ids == NULL && r.npt.rank == 16 && r.npt.safe_mode == 0 &&
              r.npt.modulation_scale == 0.1 && r.npt.init == NPT_INIT_DEFAULT,
          "default npt: all layers, rank 16, not safe, scale 0.1, default init");
    check(r.npt.init_a_std == 0.02 && r.npt.init_b_add_std == 0.001 && r.npt.init_b_mul_std == 0.0,
          "default init stds 0.02 / 0.001 / 0 (SPEC section 2)");
    check(r.objective.type == OBJECTIVE_DISTILL && r.objective.loss == LOSS_NMSE && r.objective.lambda == 0.01 &&
              r.objective.train_all_weights == 0,
          "default objective: distill, nmse, lambda 0.01");
    check(!strcmp(r.data.train, "") && r.data.format == DATASET_AUTO && r.data.seq_len == 256 && r.data.shuffle == 1 &&
              !strcmp(r.data.valid, ""),
          "default data: auto format, seq_len 256, shuffled");
    check(r.train.max_steps == 1000 && r.train.batch_size == 8 && r.train.grad_accum == 1 &&
              r.train.optimizer == OPTIMIZER_ADAMW && r.train.lr == 1e-4 && r.train.min_lr_ratio == 0.1 &&
              r.train.schedule == SCHEDULE_COSINE && r.train.warmup_steps == 0,
          "default train: 1000 steps, batch 8, accum 1, adamw, lr 1e-4, cosine to 0.1, no warmup");
    check(r.train.weight_decay == 0.0 && r.train.beta1 == 0.9 && r.train.beta2 == 0.999 && r.train.eps == 1e-8 &&
              r.train.momentum == 0.0 && r.train.clip_grad_norm == 1.0 && r.train.skip_nonfinite == 1 &&
              r.train.max_consecutive_skips == 10,
          "default optimizer constants, clip 1.0, skip on, 10 consecutive skips");
    check(r.log.every == 10 && !strcmp(r.log.metrics_file, "metrics.jsonl") && r.checkpoint.every == 500 &&
              r.checkpoint.keep_last == 3 && r.checkpoint.save_best == 1,
          "default log every 10 to metrics.jsonl, checkpoint every 500, keep 3, save best");
    check_round_trip("defaults", &r);
    recipe_free(&r);
    recipe_diag_free(&d);
}

static void test_non_defaults_round_trip(void) {
    const char *text =
        "{\"name\": \"x\", \"description\": \"d \\\"q\\\" \\u00e9\", \"model\": \"a b/c.gguf\", \"tokenizer\": \"t.json\",\n"
        " \"output_dir\": \"/tmp/out\", \"seed\": 0, \"threads\": 3,\n"
        " \"npt\": {\"layers\": [4, 0, 2], \"rank\": 3, \"modulation_scale\": 0.3333333333333333, \"init_b_mul_std\": 1e-5},\n"
        " \"objective\": {\"type\": \"lm\", \"train_all_weights\": true},\n" /* lambda would warn: no adapters */
        " \"data\": {\"train\": \"d.u32\", \"format\": \"tokens_u32\", \"seq_len\": 2, \"shuffle\": false, \"valid\": \"v\"},\n"
        " \"train\": {\"max_steps\": 1, \"batch_size\": 2147483647, \"optimizer\": \"sgd\", \"momentum\": 0.99,\n"
        "           \"lr\": 1.2345678901234567e-7, \"schedule\": \"linear\", \"warmup_steps\": 1, \"eps\": 1e-300,\n"
        "           \"clip_grad_norm\": 0, \"skip_nonfinite\": false, \"max_consecutive_skips\": 1, \"min_lr_ratio\": 1},\n"
        " \"log\": {\"every\": 1, \"metrics_file\": \"m\"}, \"checkpoint\": {\"every\": 1, \"keep_last\": 1, \"save_best\": false}}";
    Recipe r;
    RecipeDiag d;
    int rc = recipe_parse(text, "x.json", NULL, 0, &r, &d);
    check(rc == 0, "a recipe setting every kind of key loads");
    if (rc) {
        char *t = recipe_diag_text(&d);
        printf("NOTE: %s", t);
        free(t);
        recipe_diag_free(&d);
        return;
    }
    check(r.npt.layers == LAYERS_LIST && r.npt.n_layer_ids == 3 && r.npt.layer_ids[0] == 0 && r.npt.layer_ids[2] == 4,
          "layer list sorted to [0, 2, 4]");
    check(r.train.lr == 1.2345678901234567e-7 && r.train.eps == 1e-300 && r.train.batch_size == 2147483647,
          "extreme values kept exactly");
    check(!strcmp(r.description, "d \"q\" \xc3\xa9"), "escapes and \\u00e9 decoded");
    check_round_trip("non-defaults", &r);

    Recipe copy;
    recipe_copy(&copy, &r);
    check(recipes_equal(&copy, &r) && copy.npt.layer_ids != r.npt.layer_ids, "recipe_copy is deep");
    recipe_free(&copy);
    recipe_free(&r);
    recipe_diag_free(&d);
}

static void test_helpers(void) {
    Recipe r;
    int ids[8];
    NptErr err;
    recipe_parse("{\"model\": \"m\"}", NULL, NULL, 0, &r, NULL);
    int n = recipe_resolve_layers(&r, 5, ids, &err);
    check(n == 5 && ids[0] == 0 && ids[4] == 4, "all of 5 layers = 0..4");
    r.npt.layers = LAYERS_UPPER_HALF;
    n = recipe_resolve_layers(&r, 5, ids, &err);
    check(n == 3 && ids[0] == 2 && ids[2] == 4, "upper_half of 5 = [2, 3, 4]");
    r.npt.layers = LAYERS_LOWER_HALF;
    n = recipe_resolve_layers(&r, 5, ids, &err);
    check(n == 2 && ids[0] == 0 && ids[1] == 1, "lower_half of 5 = [0, 1]");
    r.npt.layers = LAYERS_UPPER_HALF;
    n = recipe_resolve_layers(&r, 1, ids, &err);
    check(n == 1 && ids[0] == 0, "upper_half of 1 layer = [0]");
    recipe_free(&r);

    {   /* which recipes must tokenize: text or JSONL anywhere, by name or by data.format */
        Recipe t;
        RecipeSource sources[2];
        memset(&t, 0, sizeof t);
        memset(sources, 0, sizeof sources);
        t.data.sources = sources;
        snprintf(t.data.train, sizeof t.data.train, "a/b.bin");
        int tokens_only = recipe_needs_tokenizer(&t);
        t.data.format = DATASET_TEXT;
        int forced_text = recipe_needs_tokenizer(&t);
        t.data.format = DATASET_AUTO;
        snprintf(t.data.valid, sizeof t.data.valid, "held-out.txt");
        int text_valid = recipe_needs_tokenizer(&t);
        t.data.valid[0] = t.data.train[0] = '\0';
        t.data.n_sources = 2;
        snprintf(t.data.sources[0].path, sizeof t.data.sources[0].path, "x.u32");
        snprintf(t.data.sources[1].path, sizeof t.data.sources[1].path, "qa.jsonl");
        int jsonl_source = recipe_needs_tokenizer(&t);
        t.data.n_sources = 1;
        int u32_source = recipe_needs_tokenizer(&t);
        check(!tokens_only && forced_text && text_valid && jsonl_source && !u32_source,
              "needs a tokenizer: .bin no, .bin as text yes, a text data.valid yes, a JSONL source yes, only .u32 no");
    }
    check(!strcmp(recipe_choice_name("train.schedule", SCHEDULE_LINEAR), "linear") &&
              !strcmp(recipe_choice_name("objective.type", OBJECTIVE_LM), "lm") &&
              !strcmp(recipe_choice_name("npt.layers", LAYERS_LOWER_HALF), "lower_half") &&
              !strcmp(recipe_choice_name("train.lr", 0), "?") && !strcmp(recipe_choice_name("train.optimizer", 9), "?"),
          "recipe_choice_name maps enums to their JSON names");
}

static void test_bundled(void) {
    setenv("NPT_RECIPES_DIR", "recipes", 1);
    char dir[4096], path[4096];
    NptErr err;
    check(recipe_bundled_dir(dir, sizeof dir, &err) == 0 && !strcmp(dir, "recipes"), "NPT_RECIPES_DIR is honoured");
    check(recipe_resolve_path("npt-safe", path, sizeof path, &err) == 0 && !strcmp(path, "recipes/npt-safe.json"),
          "a bundled name resolves to its file: %s", path);
    check(recipe_resolve_path("recipes/npt-full.json", path, sizeof path, &err) == 0 &&
              !strcmp(path, "recipes/npt-full.json"),
          "an existing path is taken as is");
    check(recipe_resolve_path("no-such-recipe", path, sizeof path, &err) == -1 && strstr(err.msg, "no-such-recipe"),
          "an unknown name is an error naming it");

    DIR *dp = opendir("recipes");
    struct dirent *e;
    int n = 0;
    while (dp && (e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        snprintf(path, sizeof path, "recipes/%s", e->d_name);
        Recipe r;
        RecipeDiag d;
        int rc = recipe_load(path, NULL, 0, &r, &d);
        check(rc == 0 && d.n_warnings == 0, "bundled %s validates without warnings", path);
        if (rc) {
            char *t = recipe_diag_text(&d);
            printf("NOTE: %s", t);
            free(t);
        } else {
            check(r.description[0] != '\0', "bundled %s has a description", path);
            check(recipe_check_for_training(&r, &err) == 0, "bundled %s names its training data", path);
            check_round_trip(path, &r);
            recipe_free(&r);
        }
        recipe_diag_free(&d);
        n++;
    }
    if (dp) closedir(dp);
    check(n >= 5, "at least five bundled recipes (found %d)", n);

    /* npt-safe is the seed's command (SPEC section 5): --adapter_rank 16 --safe_mode
     * --batch_size 1 --gradient_accumulation_steps 8 --learning_rate 5e-5
     * --regularization_lambda 0.01 --warmup_steps 200 --save_steps 500 --log_steps 10 */
    Recipe r;
    if (recipe_load("recipes/npt-safe.json", NULL, 0, &r, NULL) == 0) {
        check(r.npt.rank == 16 && r.npt.safe_mode && r.train.batch_size == 1 && r.train.grad_accum == 8 &&
                  r.train.lr == 5e-5 && r.objective.lambda == 0.01 && r.train.warmup_steps == 200 &&
                  r.checkpoint.every == 500 && r.log.every == 10,
              "npt-safe carries every value of the seed's reference command");
        check(r.train.clip_grad_norm == 0.5 && r.train.skip_nonfinite, "npt-safe clips at 0.5 and skips NaN batches");
        recipe_free(&r);
    } else {
        check(0, "recipes/npt-safe.json loads");
    }
    if (recipe_load("recipes/npt-full.json", NULL, 0, &r, NULL) == 0) {
        check(!r.npt.safe_mode && r.train.clip_grad_norm == 1.0, "npt-full: both modulations, clip 1.0");
        recipe_free(&r);
    } else {
        check(0, "recipes/npt-full.json loads");
    }
    /* the small recipes must point at assets that exist */
    const char *small[] = {"recipes/stories260k-safe.json", "recipes/stories260k-full.json",
                           "recipes/tinystories656k-safe.json"};
    for (int i = 0; i < 3; i++) {
        if (recipe_load(small[i], NULL, 0, &r, NULL) != 0) {
            check(0, "%s loads", small[i]);
            continue;
        }
        FILE *m = fopen(r.model, "rb"), *t = fopen(r.data.train, "rb");
        check(m && t, "%s: model %s and data %s exist", small[i], r.model, r.data.train);
        if (m) fclose(m);
        if (t) fclose(t);
        recipe_free(&r);
    }
}

int main(void) {
    test_defaults();
    test_json_has_every_key();
    test_non_defaults_round_trip();
    test_helpers();
    test_bundled();
    return test_finish();
}
