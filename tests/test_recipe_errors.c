/* tests/test_recipe_errors.c — every malformed-recipe case we could think of gives the
 * right message (path, expected vs received, line:column, did-you-mean) and none
 * crashes; run under AddressSanitizer by `make asan`. Expected positions and messages
 * are derived by hand from the test texts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../train/recipe.h"
#include "test.h"

/* Parses text (as "t.json") with overrides; returns the diag, caller frees. */
static int parse(const char *text, const char *const *sets, int n_sets, Recipe *r, RecipeDiag *d) {
    return recipe_parse(text, "t.json", sets, n_sets, r, d);
}

/* The error whose path is exactly path, or NULL. */
static const RecipeIssue *find_error(const RecipeDiag *d, const char *path) {
    for (int i = 0; i < d->n_errors; i++)
        if (strcmp(d->errors[i].path, path) == 0) return &d->errors[i];
    return NULL;
}

/* 1 if the error at path exists and its message contains want. */
static int error_says(const RecipeDiag *d, const char *path, const char *want) {
    const RecipeIssue *e = find_error(d, path);
    return e && strstr(e->message, want) != NULL;
}

static void dump(const RecipeDiag *d) {
    char *t = recipe_diag_text(d);
    printf("NOTE: %s", t[0] ? t : "(no issues)\n");
    free(t);
}

/* One invalid text, one expected error at path containing want; also: exactly
 * n_expected errors in all (0 = don't check the count). */
static void expect_error(const char *what, const char *text, const char *path, const char *want, int n_expected) {
    Recipe r;
    RecipeDiag d;
    int rc = parse(text, NULL, 0, &r, &d);
    int ok = rc == -1 && error_says(&d, path, want) && (n_expected == 0 || d.n_errors == n_expected);
    check(ok, "%s -> %s: ...%s...", what, path, want);
    if (!ok) dump(&d);
    recipe_diag_free(&d);
}

static void test_syntax(void) {
    /* missing comma: line 3 col 3 is the opening quote of "npt" */
    expect_error("missing comma", "{\n  \"model\": \"x\"\n  \"npt\": {}\n}", "t.json:3:3", "missing comma", 1);
    /* trailing comma in an object: `  "npt": {"rank": 4,},` -> the comma is column 20 */
    expect_error("trailing comma in object", "{\n  \"model\": \"x\",\n  \"npt\": {\"rank\": 4,},\n}", "t.json:3:20",
                 "trailing comma before '}'", 1);
    /* trailing comma in an array: `{"model": "x", "npt": {"layers": [1, 2,]}}` -> col 39 */
    expect_error("trailing comma in array", "{\"model\": \"x\", \"npt\": {\"layers\": [1, 2,]}}", "t.json:1:39",
                 "trailing comma before ']'", 1);
    /* unquoted key on line 2 starting at column 3 */
    expect_error("unquoted key", "{\n  model: \"x\"\n}", "t.json:2:3", "keys need double quotes", 1);
    expect_error("single quotes", "{'model': \"x\"}", "t.json:1:2", "double quotes", 1);
    expect_error("bad literal", "{\"model\": \"x\", \"seed\": tru}", "t.json:1:24", "near 'tru}'", 1);
    expect_error("unexpected end", "{\n  \"model\": \"x\",\n  \"npt\": {\n", "t.json:4:1", "unexpected end of file", 1);
    expect_error("unterminated block comment", "{\n  \"model\": \"x\" /* never closed\n}", "t.json:2:16",
                 "unterminated /* comment", 1);
    expect_error("empty file", "", "t.json:1:1", "empty", 1);
    expect_error("only comments", "// nothing\n/* here */\n", "t.json:1:1", "empty", 1);
    expect_error("garbage after the object", "{\"model\": \"x\"} }", "t.json:1:16", "JSON syntax error", 1);
    expect_error("top-level array", "[1, 2]", "t.json", "expected a JSON object {...} at the top level, got an array", 1);
    expect_error("top-level string", "\"model\"", "t.json", "got string \"model\"", 1);
    /* a block comment spanning lines before the error must not shift the line number */
    expect_error("error after multi-line comment", "{\n/* one\n two\n three */ \"model\": \"x\",\n  \"seed\": ,\n}",
                 "t.json:5:11", "JSON syntax error", 1);
    /* columns count characters: "é" is two bytes but one column */
    expect_error("column after UTF-8", "{\"model\": \"é\", \"seed\": tru}", "t.json:1:24", "tru", 1);

    Recipe r;
    RecipeDiag d;
    parse("{\n  \"model\" \"x\"}", NULL, 0, &r, &d);
    check(d.n_errors == 1 && d.errors[0].line == 2 && d.errors[0].column == 11,
          "syntax error carries line 2 column 11 in the issue fields");
    recipe_diag_free(&d);

    /* nesting deeper than cJSON's limit must fail cleanly */
    size_t depth = 5000;
    char *deep = malloc(2 * depth + 64);
    strcpy(deep, "{\"model\": \"x\", \"seed\": ");
    size_t n = strlen(deep);
    for (size_t i = 0; i < depth; i++) deep[n++] = '[';
    for (size_t i = 0; i < depth; i++) deep[n++] = ']';
    strcpy(deep + n, "}");
    check(parse(deep, NULL, 0, &r, &d) == -1 && d.n_errors == 1, "5000 nested arrays: one error, no crash");
    recipe_diag_free(&d);
    free(deep);
}

static void test_comments_ok(void) {
    const char *text =
        "// leading comment\n"
        "/* block */ { /* before key */ \"model\" /* between key and colon */ : \"http://x//y/*z*/\", // after\n"
        "  \"npt\": { \"layers\": [ 0, /* inside an array */ 2 ]//no space\n"
        "  , \"rank\": 4 }, \"description\": \"a \\\" quote // not a comment\"\n"
        "} // trailing, no newline at the end";
    Recipe r;
    RecipeDiag d;
    int rc = parse(text, NULL, 0, &r, &d);
    check(rc == 0, "comments in odd places parse");
    if (rc) dump(&d);
    check(rc == 0 && strcmp(r.model, "http://x//y/*z*/") == 0, "// and /* inside strings are kept: %s", r.model);
    check(rc == 0 && strcmp(r.description, "a \" quote // not a comment") == 0,
          "escaped quote then // inside a string is kept");
    check(rc == 0 && r.npt.layers == LAYERS_LIST && r.npt.n_layer_ids == 2 && r.npt.layer_ids[1] == 2,
          "array with a comment inside holds [0, 2]");
    check(rc == 0 && r.npt.rank == 4, "key after a //-comment line is read");
    recipe_free(&r);
    recipe_diag_free(&d);

    /* a UTF-8 byte order mark is tolerated */
    rc = parse("\xEF\xBB\xBF{\"model\": \"x\"}", NULL, 0, &r, &d);
    check(rc == 0, "UTF-8 BOM is accepted");
    recipe_free(&r);
    recipe_diag_free(&d);
}

static void test_types(void) {
    expect_error("string for number", "{\"model\": \"x\", \"train\": {\"lr\": \"fast\"}}", "train.lr",
                 "expected a number > 0, got string \"fast\"", 1);
    expect_error("quoted number", "{\"model\": \"x\", \"train\": {\"lr\": \"3e-4\"}}", "train.lr",
                 "write numbers without quotes", 1);
    expect_error("float for int", "{\"model\": \"x\", \"train\": {\"batch_size\": 2.5}}", "train.batch_size",
                 "expected an integer >= 1, got 2.5", 1);
    expect_error("negative rank", "{\"model\": \"x\", \"npt\": {\"rank\": -1}}", "npt.rank",
                 "expected an integer >= 1, got -1", 1);
    expect_error("zero rank", "{\"model\": \"x\", \"npt\": {\"rank\": 0}}", "npt.rank", "got 0", 1);
    expect_error("threads beyond any machine", "{\"model\": \"x\", \"threads\": 100000}", "threads",
                 "expected an integer in [0, 1024], got 1e+05", 1);
    expect_error("int overflow", "{\"model\": \"x\", \"seed\": 3000000000}", "seed", "expected an integer >= 0, got 3e+09", 1);
    expect_error("non-finite number", "{\"model\": \"x\", \"train\": {\"lr\": 1e999}}", "train.lr", "too large", 1);
    expect_error("zero lr", "{\"model\": \"x\", \"train\": {\"lr\": 0}}", "train.lr", "expected a number > 0, got 0", 1);
    expect_error("beta1 = 1", "{\"model\": \"x\", \"train\": {\"beta1\": 1}}", "train.beta1",
                 "expected a number in [0, 1), got 1", 1);
    expect_error("min_lr_ratio > 1", "{\"model\": \"x\", \"train\": {\"min_lr_ratio\": 1.5}}", "train.min_lr_ratio",
                 "in [0, 1]", 1);
    expect_error("negative lambda", "{\"model\": \"x\", \"objective\": {\"lambda\": -0.5}}", "objective.lambda",
                 "expected a number >= 0, got -0.5", 1);
    expect_error("number for bool", "{\"model\": \"x\", \"npt\": {\"safe_mode\": 1}}", "npt.safe_mode",
                 "expected true or false, got 1", 1);
    expect_error("quoted bool", "{\"model\": \"x\", \"npt\": {\"safe_mode\": \"true\"}}", "npt.safe_mode",
                 "without quotes", 1);
    expect_error("null", "{\"model\": \"x\", \"data\": {\"seq_len\": null}}", "data.seq_len", "got null", 1);
    expect_error("array for string", "{\"model\": [\"x\"]}", "model", "expected a non-empty string, got an array", 1);
    expect_error("object for int", "{\"model\": \"x\", \"log\": {\"every\": {}}}", "log.every", "got an object", 1);
    expect_error("section not an object", "{\"model\": \"x\", \"train\": 5}", "train",
                 "expected an object {...}, got 5", 1);
    expect_error("seq_len 1", "{\"model\": \"x\", \"data\": {\"seq_len\": 1}}", "data.seq_len", ">= 2", 1);
    expect_error("keep_last 0", "{\"model\": \"x\", \"checkpoint\": {\"keep_last\": 0}}", "checkpoint.keep_last",
                 ">= 1, got 0", 1);
    expect_error("empty output_dir", "{\"model\": \"x\", \"output_dir\": \"\"}", "output_dir", "non-empty", 1);
    expect_error("missing model", "{\"npt\": {\"rank\": 8}}", "model", "required key is missing", 1);
    expect_error("empty model", "{\"model\": \"\"}", "model", "expected a non-empty string, got string \"\"", 1);
    expect_error("invalid enum", "{\"model\": \"x\", \"train\": {\"optimizer\": \"adam\"}}", "train.optimizer",
                 "expected one of \"adamw\", \"sgd\", got string \"adam\"; did you mean \"adamw\"?", 1);
    expect_error("invalid enum, far", "{\"model\": \"x\", \"objective\": {\"type\": \"reinforce\"}}", "objective.type",
                 "one of \"distill\", \"lm\", got string \"reinforce\"", 1);
    expect_error("enum wrong case", "{\"model\": \"x\", \"train\": {\"schedule\": \"Cosine\"}}", "train.schedule",
                 "did you mean \"cosine\"?", 1);
    expect_error("duplicate key", "{\"model\": \"x\", \"train\": {\"lr\": 1e-4, \"lr\": 2e-4}}", "train.lr",
                 "duplicate key", 1);
    expect_error("warmup > max_steps", "{\"model\": \"x\", \"train\": {\"max_steps\": 100, \"warmup_steps\": 200}}",
                 "train.warmup_steps", "200 is more than train.max_steps (100)", 1);
    expect_error("eval.every without a validation split", "{\"model\": \"x\", \"eval\": {\"every\": 5}}", "eval.every",
                 "5, but the data has no validation split; set data.valid_fraction or data.valid", 1);
    {
        Recipe r;
        RecipeDiag d;
        int rc = parse("{\"model\": \"x\", \"eval\": {\"every\": 5}, \"data\": {\"valid_fraction\": 0.1}}", NULL, 0, &r, &d);
        check(rc == 0 && !find_error(&d, "eval.every"), "eval.every with data.valid_fraction: no error");
        recipe_diag_free(&d);
    }
    expect_error("metrics file named like a checkpoint", "{\"model\": \"x\", \"log\": {\"metrics_file\": \"final.h5\"}}",
                 "log.metrics_file", "\"final.h5\" is a name the run gives its checkpoints", 1);
    expect_error("metrics file named like the plot", "{\"model\": \"x\", \"log\": {\"metrics_file\": \"loss.svg\"}}",
                 "log.metrics_file", "is a name the run gives", 1);
    expect_error("lr beyond float32", "{\"model\": \"x\", \"train\": {\"lr\": 1e39}}", "train.lr",
                 "1e+39 is beyond the float32 range", 1);
    expect_error("modulation scale beyond float32", "{\"model\": \"x\", \"npt\": {\"modulation_scale\": 1e39}}",
                 "npt.modulation_scale", "beyond the float32 range", 1);
    expect_error("metrics file outside output_dir", "{\"model\": \"x\", \"log\": {\"metrics_file\": \"../../precious.txt\"}}",
                 "log.metrics_file", "\"../../precious.txt\" is a path; give a file name", 1);
    expect_error("metrics file as an absolute path", "{\"model\": \"x\", \"log\": {\"metrics_file\": \"/etc/passwd\"}}",
                 "log.metrics_file", "is a path", 1);
    { /* NAME_MAX 255 bytes: the run would fail at its first write with ENAMETOOLONG */
        char json[512], name[301];
        memset(name, 'm', 300);
        name[300] = '\0';
        snprintf(json, sizeof json, "{\"model\": \"x\", \"log\": {\"metrics_file\": \"%s\"}}", name);
        expect_error("metrics file name beyond NAME_MAX", json, "log.metrics_file", "is 300 bytes long; a file name holds", 1);
        /* 239 bytes fit, but not its temporary NAME.tmp.PID.XXXXXXXX on resume: 255 - 239 = 16 bytes
         * hold ".tmp." + the 8 random digits and their dot, leaving 2 for a PID */
        name[239] = '\0';
        snprintf(json, sizeof json, "{\"model\": \"x\", \"log\": {\"metrics_file\": \"%s\"}}", name);
        expect_error("metrics file name without room for its temporary", json, "log.metrics_file",
                     "is 239 bytes long; a file name holds", 1);
    }
    expect_error("train_all_weights with distill", "{\"model\": \"x\", \"objective\": {\"train_all_weights\": true}}",
                 "objective.train_all_weights", "only applies to objective.type \"lm\"", 1);
    /* a very long string is cut in the message, not copied whole */
    char *big = malloc(9000);
    strcpy(big, "{\"model\": \"");
    memset(big + strlen(big), 'm', 5000);
    strcpy(big + 11 + 5000, "\"}");
    expect_error("model path too long", big, "model", "at most 4095", 1);
    free(big);
}

static void test_unknown_keys(void) {
    expect_error("top-level typo", "{\"modle\": \"x\", \"model\": \"x\"}", "modle", "did you mean \"model\"?", 1);
    expect_error("npt typo", "{\"model\": \"x\", \"npt\": {\"rnak\": 4}}", "npt.rnak", "did you mean \"rank\"?", 1);
    expect_error("train key in wrong section", "{\"model\": \"x\", \"npt\": {\"lr\": 4}}", "npt.lr",
                 "did you mean \"train.lr\"?", 1);
    expect_error("section typo", "{\"model\": \"x\", \"trian\": {\"lr\": 1}}", "trian", "did you mean \"train\"?", 1);
    expect_error("objective typo", "{\"model\": \"x\", \"objective\": {\"lamda\": 1}}", "objective.lamda",
                 "did you mean \"lambda\"?", 1);
    expect_error("checkpoint typo", "{\"model\": \"x\", \"checkpoint\": {\"keep_lats\": 1}}", "checkpoint.keep_lats",
                 "did you mean \"keep_last\"?", 1);
    expect_error("log typo", "{\"model\": \"x\", \"log\": {\"evrey\": 1}}", "log.evrey", "did you mean \"every\"?", 1);
    expect_error("data typo", "{\"model\": \"x\", \"data\": {\"seqlen\": 1}}", "data.seqlen", "did you mean \"seq_len\"?", 1);
    expect_error("top-level leaf of a section", "{\"model\": \"x\", \"rank\": 4}", "rank", "did you mean \"npt.rank\"?", 1);
    expect_error("dotted key written flat", "{\"model\": \"x\", \"train.lr\": 4}", "train.lr",
                 "nest it: \"train\": {\"lr\": ...}", 1);
    expect_error("wrong case", "{\"model\": \"x\", \"train\": {\"LR\": 1}}", "train.LR", "did you mean \"lr\"?", 1);
    expect_error("no close match lists keys", "{\"model\": \"x\", \"log\": {\"zzzzzzzz\": 1}}", "log.zzzzzzzz",
                 "valid keys in \"log\": every, metrics_file", 1);
    expect_error("no close match at top", "{\"model\": \"x\", \"qqqqqqqqqq\": 1}", "qqqqqqqqqq",
                 "valid top-level keys: name, description, model, tokenizer, output_dir, seed, threads, npt, objective, data, train, log, eval, checkpoint",
                 1);
    expect_error("nested section inside a section", "{\"model\": \"x\", \"train\": {\"npt\": {}}}", "train.npt",
                 "unknown key", 1);
    expect_error("control characters in a key", "{\"model\": \"x\", \"a\\nb\": 1}", "a?b", "unknown key", 1);
    expect_error("empty key", "{\"model\": \"x\", \"\": 1}", "\"\"", "unknown key", 1);

    /* the seed's flag names, at top level and inside a section */
    static const char *const seed[][2] = {
        {"learning_rate", "train.lr"},          {"adapter_rank", "npt.rank"},
        {"gradient_accumulation_steps", "train.grad_accum"}, {"regularization_lambda", "objective.lambda"},
        {"save_steps", "checkpoint.every"},     {"log_steps", "log.every"},
        {"warmup_steps", "train.warmup_steps"}, {"batch_size", "train.batch_size"},
        {"safe_mode", "npt.safe_mode"},
    };
    for (size_t i = 0; i < sizeof seed / sizeof seed[0]; i++) {
        char text[256], want[160];
        snprintf(text, sizeof text, "{\"model\": \"x\", \"%s\": 1}", seed[i][0]);
        snprintf(want, sizeof want, "did you mean \"%s\"? (the seed's --%s is %s)", seed[i][1], seed[i][0], seed[i][1]);
        expect_error("seed flag at top level", text, seed[i][0], want, 1);
    }
    expect_error("seed flag in its section", "{\"model\": \"x\", \"train\": {\"learning_rate\": 1}}",
                 "train.learning_rate", "did you mean \"lr\"? (the seed's --learning_rate is train.lr)", 1);
    expect_error("seed flag spelled with dashes", "{\"model\": \"x\", \"--adapter-rank\": 16}", "--adapter-rank",
                 "did you mean \"npt.rank\"?", 1);
}

static void test_many_errors(void) {
    /* Six independent problems: all reported together, nothing else. */
    const char *text =
        "{\n"
        "  \"learning_rate\": 1e-4,\n"                   /* 1: unknown key */
        "  \"npt\": {\"rank\": 0, \"layers\": []},\n"   /* 2, 3: range, empty list */
        "  \"train\": {\"lr\": \"fast\", \"optimizer\": \"adam\"},\n" /* 4, 5 */
        "  \"data\": {\"shuffle\": \"yes\"}\n"          /* 6 */
        "}";                                             /* 7: model missing */
    Recipe r;
    RecipeDiag d;
    int rc = parse(text, NULL, 0, &r, &d);
    int all = error_says(&d, "learning_rate", "unknown key") && error_says(&d, "npt.rank", ">= 1") &&
              error_says(&d, "npt.layers", "empty") && error_says(&d, "train.lr", "fast") &&
              error_says(&d, "train.optimizer", "adam") && error_says(&d, "data.shuffle", "true or false") &&
              error_says(&d, "model", "required");
    check(rc == -1 && d.n_errors == 7 && all, "seven errors reported together (got %d)", d.n_errors);
    if (d.n_errors != 7) dump(&d);
    char *t = recipe_diag_text(&d);
    int lines = 0;
    for (char *p = t; *p; p++) lines += *p == '\n';
    check(lines == 7 && strstr(t, "train.lr: expected a number > 0, got string \"fast\"\n"),
          "diag text: one \"path: message\" line per error");
    free(t);
    recipe_diag_free(&d);

    /* More errors than are stored: counted, not lost, no crash. */
    size_t cap = 300 * 16 + 64;
    char *big = malloc(cap);
    size_t n = (size_t)snprintf(big, cap, "{\"model\": \"x\"");
    for (int i = 0; i < 300; i++) n += (size_t)snprintf(big + n, cap - n, ", \"k%d\": 1", i);
    snprintf(big + n, cap - n, "}");
    rc = parse(big, NULL, 0, &r, &d);
    check(rc == -1 && d.n_errors == RECIPE_MAX_ISSUES && d.n_dropped == 300 - RECIPE_MAX_ISSUES,
          "300 unknown keys: %d stored + %d counted", d.n_errors, d.n_dropped);
    recipe_diag_free(&d);
    free(big);
}

static void test_overrides(void) {
    const char *base = "{\"model\": \"x\", \"train\": {\"lr\": 1e-4}}";
    Recipe r;
    RecipeDiag d;
    const char *good[] = {"train.lr=3e-5", "npt.layers=[3,1]", "model=/abs/path/model.bin", "data.shuffle=false",
                          "log.metrics_file=m.jsonl", "checkpoint.every=7", "description=\"quoted\""};
    int rc = parse(base, good, 7, &r, &d);
    check(rc == 0, "valid --set overrides load");
    if (rc) dump(&d);
    check(rc == 0 && r.train.lr == 3e-5, "--set train.lr=3e-5 replaces the file's value");
    check(rc == 0 && r.npt.layers == LAYERS_LIST && r.npt.n_layer_ids == 2 && r.npt.layer_ids[0] == 1 &&
              r.npt.layer_ids[1] == 3,
          "--set npt.layers=[3,1] gives the sorted list [1,3]");
    check(rc == 0 && strcmp(r.model, "/abs/path/model.bin") == 0, "a value that is not JSON is a bare string");
    check(rc == 0 && r.data.shuffle == 0 && r.checkpoint.every == 7, "--set creates missing sections");
    check(rc == 0 && strcmp(r.description, "quoted") == 0, "a quoted JSON string loses its quotes");
    recipe_free(&r);
    recipe_diag_free(&d);

    const char *unknown[] = {"train.learning_rate=1e-4"};
    rc = parse(base, unknown, 1, &r, &d);
    check(rc == -1 && error_says(&d, "train.learning_rate", "did you mean \"lr\"?") &&
              error_says(&d, "train.learning_rate", "(in --set)"),
          "--set with an unknown key: did-you-mean, marked as from --set");
    recipe_diag_free(&d);

    const char *typo_section[] = {"traim.lr=1e-4"};
    rc = parse(base, typo_section, 1, &r, &d);
    check(rc == -1 && error_says(&d, "traim.lr", "did you mean \"train.lr\"?"), "--set traim.lr suggests train.lr");
    if (rc == 0 || !find_error(&d, "traim.lr")) dump(&d);
    recipe_diag_free(&d);

    const char *bad_value[] = {"train.lr=fast"};
    rc = parse(base, bad_value, 1, &r, &d);
    check(rc == -1 && error_says(&d, "train.lr", "expected a number > 0, got string \"fast\" (from --set)"),
          "--set with a bad value names the path and --set");
    recipe_diag_free(&d);

    const char *no_eq[] = {"train.lr"};
    rc = parse(base, no_eq, 1, &r, &d);
    check(rc == -1 && error_says(&d, "--set", "is not key.path=value"), "--set without '=' is an error");
    recipe_diag_free(&d);

    const char *section[] = {"npt={\"rank\":4}"};
    rc = parse(base, section, 1, &r, &d);
    check(rc == -1 && error_says(&d, "npt", "is a section"), "--set of a whole section is refused");
    recipe_diag_free(&d);

    const char *empty[] = {"train.lr="};
    rc = parse(base, empty, 1, &r, &d);
    check(rc == -1 && error_says(&d, "train.lr", "got string \"\""), "--set train.lr= (empty) is a type error");
    recipe_diag_free(&d);

    /* an override fixes a file error: the file's value is replaced before validation */
    const char *fix[] = {"train.lr=2e-5"};
    rc = parse("{\"model\": \"x\", \"train\": {\"lr\": \"fast\"}}", fix, 1, &r, &d);
    check(rc == 0 && r.train.lr == 2e-5, "--set replaces an invalid file value");
    recipe_free(&r);
    recipe_diag_free(&d);

    const char *set_model[] = {"model=m.gguf"};
    rc = parse("{}", set_model, 1, &r, &d);
    check(rc == 0 && strcmp(r.model, "m.gguf") == 0, "--set model= satisfies the required key");
    recipe_free(&r);
    recipe_diag_free(&d);
}

static int has_warning(const RecipeDiag *d, const char *path, const char *want) {
    for (int i = 0; i < d->n_warnings; i++)
        if (!strcmp(d->warnings[i].path, path) && strstr(d->warnings[i].message, want)) return 1;
    return 0;
}

static void test_safe_mode(void) {
    Recipe r;
    RecipeDiag d;
    int rc = parse("{\"model\": \"x\", \"npt\": {\"safe_mode\": true}, \"train\": {\"lr\": 3e-4, \"clip_grad_norm\": 0, "
                   "\"skip_nonfinite\": false}}",
                   NULL, 0, &r, &d);
    check(rc == 0 && r.train.lr == 1e-4, "safe mode caps lr 3e-4 at 1e-4");
    check(has_warning(&d, "train.lr", "3e-4 exceeds the safe-mode cap; using 1e-4"), "lr cap warning text");
    check(rc == 0 && r.train.clip_grad_norm == 0.5 && has_warning(&d, "train.clip_grad_norm", "using 0.5"),
          "safe mode turns clip 0 into 0.5 with a warning");
    check(rc == 0 && r.train.skip_nonfinite == 1 && has_warning(&d, "train.skip_nonfinite", "using true"),
          "safe mode forces skip_nonfinite with a warning");
    check(d.n_warnings == 3, "exactly three safe-mode warnings (got %d)", d.n_warnings);
    recipe_free(&r);
    recipe_diag_free(&d);

    rc = parse("{\"model\": \"x\", \"npt\": {\"safe_mode\": true}, \"train\": {\"lr\": 5e-5, \"clip_grad_norm\": 2}}",
               NULL, 0, &r, &d);
    check(rc == 0 && r.train.lr == 5e-5 && r.train.clip_grad_norm == 2 && d.n_warnings == 0,
          "safe mode leaves lr 5e-5 and clip 2 alone, no warnings");
    recipe_free(&r);
    recipe_diag_free(&d);

    const char *over[] = {"train.lr=1e-3"};
    rc = parse("{\"model\": \"x\", \"npt\": {\"safe_mode\": true}}", over, 1, &r, &d);
    check(rc == 0 && r.train.lr == 1e-4 && has_warning(&d, "train.lr", "1e-3 exceeds"),
          "safe mode is applied after overrides");
    recipe_free(&r);
    recipe_diag_free(&d);

    rc = parse("{\"model\": \"x\", \"train\": {\"momentum\": 0.9, \"beta1\": 0.9}, \"objective\": {\"loss\": \"nmse\"}}",
               NULL, 0, &r, &d);
    check(rc == 0 && d.n_warnings == 1 && has_warning(&d, "train.momentum", "ignored: train.optimizer is \"adamw\""),
          "a non-default key the optimizer ignores is a warning; defaults spelled out are not");
    recipe_free(&r);
    recipe_diag_free(&d);

    rc = parse("{\"model\": \"x\", \"objective\": {\"type\": \"lm\", \"loss\": \"mse\"}}", NULL, 0, &r, &d);
    check(rc == 0 && d.n_warnings == 1 && has_warning(&d, "objective.loss", "ignored"),
          "objective.loss with objective.type lm is a warning");
    recipe_free(&r);
    recipe_diag_free(&d);

    /* lm through adapters adds lambda * reg; training every weight has no adapters */
    rc = parse("{\"model\": \"x\", \"objective\": {\"type\": \"lm\", \"lambda\": 1}}", NULL, 0, &r, &d);
    check(rc == 0 && d.n_warnings == 0, "objective.lambda with lm through adapters is no warning");
    recipe_free(&r);
    recipe_diag_free(&d);
    rc = parse("{\"model\": \"x\", \"objective\": {\"type\": \"lm\", \"train_all_weights\": true, \"lambda\": 1}}",
               NULL, 0, &r, &d);
    check(rc == 0 && d.n_warnings == 1 && has_warning(&d, "objective.lambda", "trains no adapters"),
          "objective.lambda with lm and train_all_weights is a warning");
    recipe_free(&r);
    recipe_diag_free(&d);

    rc = parse("{\"model\": \"x\", \"train\": {\"lr\": 3e-4, \"clip_grad_norm\": 0}}", NULL, 0, &r, &d);
    check(rc == 0 && r.train.lr == 3e-4 && r.train.clip_grad_norm == 0 && d.n_warnings == 0,
          "without safe mode nothing is capped");
    recipe_free(&r);
    recipe_diag_free(&d);
}

static void test_layers(void) {
    expect_error("empty layer list", "{\"model\": \"x\", \"npt\": {\"layers\": []}}", "npt.layers", "empty", 1);
    expect_error("negative layer", "{\"model\": \"x\", \"npt\": {\"layers\": [0, -1]}}", "npt.layers[1]",
                 "expected a layer index (an integer >= 0), got -1", 1);
    expect_error("fractional layer", "{\"model\": \"x\", \"npt\": {\"layers\": [1.5]}}", "npt.layers[0]", "got 1.5", 1);
    expect_error("string in layer list", "{\"model\": \"x\", \"npt\": {\"layers\": [0, \"1\"]}}", "npt.layers[1]",
                 "got string \"1\"", 1);
    expect_error("duplicate layer", "{\"model\": \"x\", \"npt\": {\"layers\": [2, 0, 2, 2]}}", "npt.layers",
                 "layer 2 is listed more than once", 1);
    expect_error("unknown selection", "{\"model\": \"x\", \"npt\": {\"layers\": \"upper\"}}", "npt.layers",
                 "expected \"all\", \"upper_half\", \"lower_half\" or an array of layer indices", 1);
    expect_error("selection typo", "{\"model\": \"x\", \"npt\": {\"layers\": \"lower-half\"}}", "npt.layers",
                 "did you mean \"lower_half\"?", 1);
    expect_error("number for layers", "{\"model\": \"x\", \"npt\": {\"layers\": 3}}", "npt.layers", "got 3", 1);
}

/* The model checks as npt train reports them: every problem on one line. */
static int check_against_model(const Recipe *r, int dim, int hidden_dim, int n_layers, NptErr *err) {
    RecipeDiag d = {0};
    recipe_model_issues(r, dim, hidden_dim, n_layers, &d);
    int rc = recipe_diag_fail(&d, err);
    recipe_diag_free(&d);
    return rc;
}

static void test_model_checks(void) {
    Recipe r;
    NptErr err;
    const char *sets[] = {"npt.rank=128"};
    check(parse("{\"model\": \"x\"}", sets, 1, &r, NULL) == 0, "rank 128 passes the model-free checks");
    /* stories260K shape: dim 64, hidden 172, 5 layers */
    int rc = check_against_model(&r, 64, 172, 5, &err);
    check(rc == -1 && strstr(err.msg, "npt.rank: 128") && strstr(err.msg, "use 1..64"),
          "rank 128 > min(64, 172) is refused: %s", rc ? err.msg : "(accepted)");
    recipe_free(&r);

    const char *fits[] = {"npt.rank=64"};
    parse("{\"model\": \"x\"}", fits, 1, &r, NULL);
    check(check_against_model(&r, 64, 172, 5, &err) == 0, "rank 64 = min(dim, hidden) is allowed");
    check(check_against_model(&r, 128, 40, 5, &err) == -1 && strstr(err.msg, "use 1..40"),
          "rank bound uses hidden_dim when it is smaller");
    recipe_free(&r);

    const char *layers[] = {"npt.layers=[1,7,9]"};
    parse("{\"model\": \"x\"}", layers, 1, &r, NULL);
    rc = check_against_model(&r, 64, 172, 5, &err);
    check(rc == -1 && strstr(err.msg, "npt.layers: layers 7, 9 do not exist; the model has 5 layers (0..4)"),
          "out-of-range layers are named: %s", rc ? err.msg : "(accepted)");
    recipe_free(&r);

    const char *both[] = {"npt.layers=[5]", "npt.rank=65"};
    parse("{\"model\": \"x\"}", both, 2, &r, NULL);
    rc = check_against_model(&r, 64, 172, 5, &err);
    check(rc == -1 && strstr(err.msg, "npt.rank") && strstr(err.msg, "layer 5 does not exist"),
          "rank and layer problems reported together: %s", rc ? err.msg : "(accepted)");
    RecipeDiag d = {0};
    check(recipe_model_issues(&r, 64, 172, 5, &d) == 2 && d.n_errors == 2 && !strcmp(d.errors[1].path, "npt.layers"),
          "recipe_model_issues gives one issue per path");
    recipe_diag_free(&d);
    recipe_free(&r);

    const char *lower[] = {"npt.layers=\"lower_half\""};
    parse("{\"model\": \"x\"}", lower, 1, &r, NULL);
    rc = check_against_model(&r, 64, 172, 1, &err);
    check(rc == -1 && strstr(err.msg, "selects no layer of a 1-layer model"), "lower_half of a 1-layer model is empty");
    check(check_against_model(&r, 64, 172, 2, &err) == 0, "lower_half of a 2-layer model is layer 0");
    recipe_free(&r);

    const char *no_data[] = {"npt.rank=4"};
    parse("{\"model\": \"x\"}", no_data, 1, &r, NULL);
    check(recipe_check_for_training(&r, &err) == -1 && strstr(err.msg, "data.train"), "training needs data.train");
    recipe_free(&r);
}

static void test_files(void) {
    char dir[] = "/tmp/npt-recipe-errors-XXXXXX";
    if (!mkdtemp(dir)) {
        check(0, "mkdtemp");
        return;
    }
    char path[256];
    Recipe r;
    RecipeDiag d;
    snprintf(path, sizeof path, "%s/missing.json", dir);
    check(recipe_load(path, NULL, 0, &r, &d) == -1 && error_says(&d, path, "No such file"), "missing file is named");
    recipe_diag_free(&d);

    check(recipe_load(dir, NULL, 0, &r, &d) == -1 && error_says(&d, dir, "is a directory"), "a directory is refused");
    recipe_diag_free(&d);

    snprintf(path, sizeof path, "%s/binary.json", dir);
    FILE *f = fopen(path, "wb");
    fwrite("{\"model\":\0\"x\"}", 1, 14, f);
    fclose(f);
    check(recipe_load(path, NULL, 0, &r, &d) == -1 && error_says(&d, path, "NUL bytes"), "a binary file is refused");
    recipe_diag_free(&d);

    snprintf(path, sizeof path, "%s/huge.json", dir);
    f = fopen(path, "wb");
    for (int i = 0; i < (1 << 21) / 64; i++) fputs("                                                               \n", f);
    fclose(f);
    check(recipe_load(path, NULL, 0, &r, &d) == -1 && error_says(&d, path, "a recipe is a small JSON file"),
          "a 2 MiB file is refused before reading");
    recipe_diag_free(&d);

    snprintf(path, sizeof path, "%s/my-run.v2.json", dir);
    f = fopen(path, "wb");
    fputs("{\n  \"model\": \"x\",\n  \"npt\": {\"rank\": \"big\"}\n}\n", f);
    fclose(f);
    check(recipe_load(path, NULL, 0, &r, &d) == -1 && error_says(&d, "npt.rank", "got string \"big\""),
          "recipe_load reports validation errors by path");
    recipe_diag_free(&d);
    f = fopen(path, "wb");
    fputs("{\n  \"model\": \"x\",\n  \"npt\": {\"rank\": 8,}\n}\n", f);
    fclose(f);
    char want[300];
    snprintf(want, sizeof want, "%s:3:20", path); /* `  "npt": {"rank": 8,}`: the comma */
    check(recipe_load(path, NULL, 0, &r, &d) == -1 && find_error(&d, want), "syntax errors are FILE:LINE:COL (%s)", want);
    recipe_diag_free(&d);
    f = fopen(path, "wb");
    fputs("{\"model\": \"x\"}", f);
    fclose(f);
    check(recipe_load(path, NULL, 0, &r, NULL) == 0 && !strcmp(r.name, "my-run.v2") && !strcmp(r.output_dir, "runs/my-run.v2"),
          "name defaults to the file stem and output_dir to runs/<name>: %s %s", r.name, r.output_dir);
    recipe_free(&r);

    unlink(path);
    snprintf(path, sizeof path, "%s/binary.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/huge.json", dir);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_syntax();
    test_comments_ok();
    test_types();
    test_unknown_keys();
    test_many_errors();
    test_overrides();
    test_safe_mode();
    test_layers();
    test_model_checks();
    test_files();
    return test_finish();
}
