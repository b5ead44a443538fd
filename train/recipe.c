/* train/recipe.c — reading recipes: comment stripping, JSON syntax errors with
 * line:column, --set overrides, strict validation against the schema table
 * (recipe_schema.c) with every error collected, cross-field and model checks, safe
 * mode, and the effective recipe back to JSON for checkpoints. */
#include "recipe.h"
#include "../util/path.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/dataset.h"
#include "recipe_schema.h"

#define RECIPE_FILE_MAX (1 << 20) /* recipes are small; a bigger file is a wrong argument */

/* ---------------------------------------------------------------- diagnostics */

static void issue_push(RecipeIssue **v, int *n, const char *path, const char *msg, int line, int col) {
    if (*n % 16 == 0) {
        RecipeIssue *grown = realloc(*v, (size_t)(*n + 16) * sizeof **v);
        if (!grown) npt_die("out of memory collecting recipe errors");
        *v = grown;
    }
    (*v)[*n] = (RecipeIssue){npt_xstrdup(path), npt_xstrdup(msg), line, col};
    (*n)++;
}

static void issues_free(RecipeIssue *v, int n) {
    for (int i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].message);
    }
    free(v);
}

void recipe_diag_add(RecipeDiag *d, int is_error, const char *path, const char *message) {
    if (!d) return;
    if (is_error && d->n_errors >= RECIPE_MAX_ISSUES) d->n_dropped++;
    else if (is_error) issue_push(&d->errors, &d->n_errors, path, message, 0, 0);
    else if (d->n_warnings < RECIPE_MAX_ISSUES) issue_push(&d->warnings, &d->n_warnings, path, message, 0, 0);
}

void recipe_diag_free(RecipeDiag *d) {
    if (!d) return;
    issues_free(d->errors, d->n_errors);
    issues_free(d->warnings, d->n_warnings);
    *d = (RecipeDiag){0};
}

char *recipe_diag_text(const RecipeDiag *d) {
    size_t cap = 64;
    for (int i = 0; i < d->n_errors; i++) cap += strlen(d->errors[i].path) + strlen(d->errors[i].message) + 4;
    for (int i = 0; i < d->n_warnings; i++)
        cap += strlen(d->warnings[i].path) + strlen(d->warnings[i].message) + 16;
    char *s = npt_xmalloc(cap, "recipe error text");
    size_t used = 0;
    s[0] = '\0';
    for (int i = 0; i < d->n_errors; i++)
        used += (size_t)snprintf(s + used, cap - used, "%s: %s\n", d->errors[i].path, d->errors[i].message);
    if (d->n_dropped)
        used += (size_t)snprintf(s + used, cap - used, "... and %d more errors\n", d->n_dropped);
    for (int i = 0; i < d->n_warnings; i++)
        used += (size_t)snprintf(s + used, cap - used, "warning: %s: %s\n", d->warnings[i].path,
                                 d->warnings[i].message);
    return s;
}

/* State of one load: where issues go and which paths --set touched (their errors say
 * so, since the file does not contain the offending value). */
typedef struct {
    RecipeDiag *d;
    char **set_paths;
    int n_set;
} Ctx;

static int path_was_set(const Ctx *c, const char *path) {
    size_t n = strcspn(path, "[");
    for (int i = 0; i < c->n_set; i++)
        if (strlen(c->set_paths[i]) == n && strncmp(c->set_paths[i], path, n) == 0) return 1;
    return 0;
}

static void __attribute__((format(printf, 3, 4))) error_at(Ctx *c, const char *path, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path_was_set(c, path) && n >= 0 && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, " (from --set)");
    recipe_diag_add(c->d, 1, path, msg);
}

static void __attribute__((format(printf, 3, 4))) warn_at(RecipeDiag *d, const char *path, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    recipe_diag_add(d, 0, path, msg);
}

/* A user string made safe for one error line: control bytes become '?', long ones are cut. */
static void printable(const char *s, char *out, size_t n) {
    size_t i = 0, limit = n > 4 ? n - 4 : 0;
    for (; s[i] && i < limit; i++) out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    snprintf(out + i, n - i, "%s", s[i] ? "..." : "");
}

/* "string \"fast\"", "2.5", "true", "null", "an array", "an object". */
static void describe_json(const cJSON *v, char *out, size_t n) {
    char tmp[64];
    if (cJSON_IsString(v)) {
        printable(v->valuestring, tmp, sizeof tmp);
        snprintf(out, n, "string \"%s\"", tmp);
    } else if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble)) snprintf(out, n, "a number too large for a double");
        else recipe_format_number(v->valuedouble, out, n);
    } else if (cJSON_IsBool(v)) {
        snprintf(out, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsNull(v)) {
        snprintf(out, n, "null");
    } else {
        snprintf(out, n, "%s", cJSON_IsArray(v) ? "an array" : "an object");
    }
}

/* ---------------------------------------------------------------- syntax */

/* Replaces // and block comments with spaces (newlines kept) so offsets, and hence
 * line:column of later errors, stay those of the file. Returns 0, or -1 with *bad at
 * an unterminated block comment. */
static int strip_comments(char *s, size_t *bad) {
    int in_string = 0;
    for (size_t i = 0; s[i]; i++) {
        if (in_string) {
            if (s[i] == '\\' && s[i + 1]) i++;
            else if (s[i] == '"') in_string = 0;
        } else if (s[i] == '"') {
            in_string = 1;
        } else if (s[i] == '/' && s[i + 1] == '/') {
            for (; s[i] && s[i] != '\n'; i++) s[i] = ' ';
            if (!s[i]) break;
        } else if (s[i] == '/' && s[i + 1] == '*') {
            size_t start = i;
            s[i] = s[i + 1] = ' ';
            for (i += 2; s[i] && !(s[i] == '*' && s[i + 1] == '/'); i++)
                if (s[i] != '\n') s[i] = ' ';
            if (!s[i]) {
                *bad = start;
                return -1;
            }
            s[i] = s[i + 1] = ' ';
            i++;
        }
    }
    return 0;
}

/* 1-based line and column (in UTF-8 characters) of byte offset off. */
static void line_col(const char *s, size_t off, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && s[i]; i++) {
        if (s[i] == '\n') (*line)++, *col = 1;
        else if (((unsigned char)s[i] & 0xC0) != 0x80) (*col)++;
    }
}

static void syntax_error(Ctx *c, const char *file, const char *s, size_t off, const char *what) {
    int line, col;
    line_col(s, off, &line, &col);
    char path[RECIPE_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s:%d:%d", file, line, col);
    issue_push(&c->d->errors, &c->d->n_errors, path, what, line, col);
}

/* Offset of the first comma followed only by whitespace and a closing bracket, or -1. */
static long find_trailing_comma(const char *s) {
    int in_string = 0;
    for (size_t i = 0; s[i]; i++) {
        if (in_string) {
            if (s[i] == '\\' && s[i + 1]) i++;
            else if (s[i] == '"') in_string = 0;
        } else if (s[i] == '"') {
            in_string = 1;
        } else if (s[i] == ',') {
            size_t j = i + 1;
            while (isspace((unsigned char)s[j])) j++;
            if (s[j] == '}' || s[j] == ']') return (long)i;
        }
    }
    return -1;
}

static int is_ident(char ch) { return isalnum((unsigned char)ch) || ch == '_' || ch == '-'; }

/* cJSON says where it stopped; this turns that into a position and a message that
 * names the usual mistakes (trailing comma, missing comma, unquoted key, quotes). */
static void report_parse_error(Ctx *c, const char *file, const char *s, size_t pos) {
    size_t len = strlen(s);
    if (pos > len) pos = len;
    long comma = find_trailing_comma(s);
    if (comma >= 0 && (size_t)comma <= pos) {
        size_t j = (size_t)comma + 1;
        while (isspace((unsigned char)s[j])) j++;
        char msg[128];
        snprintf(msg, sizeof msg, "JSON syntax error: trailing comma before '%c' (JSON allows none; remove it)", s[j]);
        syntax_error(c, file, s, (size_t)comma, msg);
        return;
    }
    size_t p = pos;
    while (p < len && isspace((unsigned char)s[p])) p++;
    if (p >= len) {
        syntax_error(c, file, s, len, "JSON syntax error: unexpected end of file (a '}' or ']' missing?)");
        return;
    }
    /* An unquoted key: identifier characters followed by ':'. */
    size_t start = pos;
    while (start > 0 && is_ident(s[start - 1])) start--;
    size_t end = start;
    while (is_ident(s[end])) end++;
    size_t after = end;
    while (isspace((unsigned char)s[after])) after++;
    const char *hint = "";
    if (end > start && s[after] == ':') {
        p = start;
        hint = "; keys need double quotes";
    } else if (s[p] == '\'' || (p > 0 && s[p - 1] == '\'')) {
        p -= s[p] != '\'';
        hint = "; strings need double quotes, not single quotes";
    } else {
        size_t q = p;
        while (q > 0 && isspace((unsigned char)s[q - 1])) q--;
        char prev = q > 0 ? s[q - 1] : '\0';
        int value_ended = prev == '"' || prev == '}' || prev == ']' || isdigit((unsigned char)prev) ||
                          prev == 'e' || prev == 'l';
        int value_starts = s[p] == '"' || s[p] == '{' || s[p] == '[' || isdigit((unsigned char)s[p]);
        if (value_ended && value_starts) hint = "; missing comma before it?";
    }
    /* The snippet: up to 24 characters from the error, whitespace runs squeezed. */
    char near[32];
    size_t k = 0;
    for (size_t i = p; s[i] && k < 24; i++) {
        char ch = isspace((unsigned char)s[i]) ? ' ' : s[i];
        if (ch == ' ' && k > 0 && near[k - 1] == ' ') continue;
        near[k++] = (unsigned char)ch < 0x20 ? '?' : ch;
    }
    while (k > 0 && near[k - 1] == ' ') k--;
    near[k] = '\0';
    char msg[160];
    snprintf(msg, sizeof msg, "JSON syntax error near '%s'%s", near, hint);
    syntax_error(c, file, s, p, msg);
}

/* ---------------------------------------------------------------- overrides */

/* Removes every member named key (duplicates included) so the override is the only one. */
static void delete_all(cJSON *obj, const char *key) {
    cJSON *it;
    while ((it = cJSON_GetObjectItemCaseSensitive(obj, key))) cJSON_Delete(cJSON_DetachItemViaPointer(obj, it));
}

static void apply_override(Ctx *c, cJSON *root, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        char shown[128];
        printable(arg, shown, sizeof shown);
        error_at(c, "--set", "\"%s\" is not key.path=value (example: --set train.lr=3e-4)", shown);
        return;
    }
    size_t klen = (size_t)(eq - arg);
    char *key = npt_xmalloc(klen + 1, "--set key");
    memcpy(key, arg, klen);
    key[klen] = '\0';
    const RecipeKey *k = recipe_key_find(key);
    if (!k && recipe_is_section(key)) {
        error_at(c, key, "is a section; set its keys one by one (--set %s.KEY=VALUE)", key);
        free(key);
        return;
    }
    if (!k) {
        char msg[1024], shown[128], section[64] = "";
        const char *sep = strchr(key, '.'), *leaf = key;
        if (sep && (size_t)(sep - key) < sizeof section) {
            snprintf(section, sizeof section, "%.*s", (int)(sep - key), key);
            if (recipe_is_section(section)) leaf = sep + 1;
            else section[0] = '\0';
        }
        recipe_unknown_key_message(section, leaf, msg, sizeof msg);
        printable(key, shown, sizeof shown);
        error_at(c, shown, "%s (in --set)", msg);
        free(key);
        return;
    }
    /* JSON when it parses (numbers, true, [0,1], "quoted"), else the bare string. */
    cJSON *v = cJSON_ParseWithOpts(eq + 1, NULL, 1);
    if (!v) v = cJSON_CreateString(eq + 1);
    if (!v) npt_die("out of memory parsing --set %s", key);
    cJSON *parent = root;
    char *dot = strchr(key, '.');
    if (dot) { /* the section, created when the file has none */
        *dot = '\0';
        parent = cJSON_GetObjectItemCaseSensitive(root, key);
        if (!parent && !(parent = cJSON_AddObjectToObject(root, key))) npt_die("out of memory applying --set");
        *dot = '.';
    }
    if (cJSON_IsObject(parent)) {
        delete_all(parent, dot ? dot + 1 : key);
        if (!cJSON_AddItemToObject(parent, dot ? dot + 1 : key, v)) npt_die("out of memory applying --set");
    } else {
        cJSON_Delete(v); /* the section itself is wrong; validation reports it */
    }
    char **grown = realloc(c->set_paths, (size_t)(c->n_set + 1) * sizeof *grown);
    if (!grown) npt_die("out of memory applying --set");
    c->set_paths = grown;
    c->set_paths[c->n_set++] = key;
}

/* ---------------------------------------------------------------- validation */

static void *field(Recipe *r, const RecipeKey *k) { return (char *)r + k->offset; }
static const void *cfield(const Recipe *r, const RecipeKey *k) { return (const char *)r + k->offset; }

static const cJSON *lookup(const cJSON *root, const char *path) {
    const char *dot = strchr(path, '.');
    if (!dot) return cJSON_GetObjectItemCaseSensitive(root, path);
    char section[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - path), path);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, section);
    return cJSON_IsObject(s) ? cJSON_GetObjectItemCaseSensitive(s, dot + 1) : NULL;
}

/* 1 when the whole string reads as a number: "8" given where 8 was meant. */
static int looks_numeric(const char *s) {
    char *end;
    if (!*s) return 0;
    strtod(s, &end);
    return *end == '\0';
}

static void type_error(Ctx *c, const RecipeKey *k, const char *path, const cJSON *v) {
    char expected[512], got[160], hint[160] = "";
    recipe_key_expected(k, expected, sizeof expected);
    describe_json(v, got, sizeof got);
    if (cJSON_IsString(v) && (k->type == RK_INT || k->type == RK_NUMBER) && looks_numeric(v->valuestring))
        snprintf(hint, sizeof hint, "; write numbers without quotes");
    else if (cJSON_IsString(v) && (k->type == RK_BOOL) &&
             (!strcmp(v->valuestring, "true") || !strcmp(v->valuestring, "false")))
        snprintf(hint, sizeof hint, "; write true/false without quotes");
    else if (cJSON_IsString(v) && k->choices && recipe_closest_choice(k, v->valuestring))
        snprintf(hint, sizeof hint, "; did you mean \"%s\"?", recipe_closest_choice(k, v->valuestring));
    error_at(c, path, "expected %s, got %s%s", expected, got, hint);
}

static int is_int_in(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble) &&
           v->valuedouble >= lo && v->valuedouble <= hi;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int store_layers(Ctx *c, const RecipeKey *k, const cJSON *v, Recipe *r) {
    if (cJSON_IsString(v)) {
        for (int i = 0; i < k->n_choices; i++)
            if (strcmp(v->valuestring, k->choices[i]) == 0) {
                r->npt.layers = (LayerMode)i;
                return 1;
            }
    }
    if (!cJSON_IsArray(v)) {
        type_error(c, k, k->path, v);
        return 0;
    }
    int n = cJSON_GetArraySize(v);
    if (n == 0) {
        error_at(c, k->path, "the list is empty; give at least one layer index, or \"all\"");
        return 0;
    }
    int *ids = npt_xmalloc((size_t)n * sizeof *ids, "npt.layers");
    int i = 0, ok = 1;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (is_int_in(e, 0, INT_MAX)) {
            ids[i] = (int)e->valuedouble;
            continue;
        }
        char path[64], got[160];
        snprintf(path, sizeof path, "%s[%d]", k->path, i);
        describe_json(e, got, sizeof got);
        error_at(c, path, "expected a layer index (an integer >= 0), got %s", got);
        ok = 0;
    }
    if (ok) {
        qsort(ids, (size_t)n, sizeof *ids, cmp_int);
        for (i = 1; i < n; i++)
            if (ids[i] == ids[i - 1] && (i < 2 || ids[i - 2] != ids[i])) {
                error_at(c, k->path, "layer %d is listed more than once", ids[i]);
                ok = 0;
            }
    }
    if (!ok) {
        free(ids);
        return 0;
    }
    free(r->npt.layer_ids);
    r->npt.layers = LAYERS_LIST;
    r->npt.layer_ids = ids;
    r->npt.n_layer_ids = n;
    return 1;
}

/* One data.sources entry: an object with path (required), weight, format, text_field. */
static int store_source(Ctx *c, const RecipeKey *k, const cJSON *e, const char *path, RecipeSource *s) {
    char got[160], sub[160];
    if (!cJSON_IsObject(e)) {
        describe_json(e, got, sizeof got);
        error_at(c, path, "expected an object {\"path\": ..., \"weight\": ...}, got %s", got);
        return 0;
    }
    int ok = 1;
    *s = (RecipeSource){.weight = 1, .format = DATASET_AUTO};
    for (const cJSON *m = e->child; m; m = m->next) {
        snprintf(sub, sizeof sub, "%s.%.40s", path, m->string);
        describe_json(m, got, sizeof got);
        if (!strcmp(m->string, "path") || !strcmp(m->string, "text_field")) {
            char *dst = m->string[0] == 'p' ? s->path : s->text_field;
            size_t cap = m->string[0] == 'p' ? sizeof s->path : sizeof s->text_field;
            if (!cJSON_IsString(m) || !m->valuestring[0] || strlen(m->valuestring) >= cap) {
                error_at(c, sub, "expected a non-empty string of at most %zu bytes, got %s", cap - 1, got);
                ok = 0;
            } else {
                memcpy(dst, m->valuestring, strlen(m->valuestring) + 1);
            }
        } else if (!strcmp(m->string, "weight")) {
            if (!cJSON_IsNumber(m) || !isfinite(m->valuedouble) || m->valuedouble <= 0) {
                error_at(c, sub, "expected a number > 0, got %s", got);
                ok = 0;
            } else {
                s->weight = m->valuedouble;
            }
        } else if (!strcmp(m->string, "format")) {
            int found = -1;
            for (int i = 0; cJSON_IsString(m) && i < k->n_choices; i++)
                if (!strcmp(m->valuestring, k->choices[i])) found = i;
            if (found < 0) {
                char expected[256];
                size_t used = (size_t)snprintf(expected, sizeof expected, "one of ");
                for (int i = 0; i < k->n_choices && used < sizeof expected; i++)
                    used += (size_t)snprintf(expected + used, sizeof expected - used, "%s\"%s\"", i ? ", " : "", k->choices[i]);
                error_at(c, sub, "expected %s, got %s", expected, got);
                ok = 0;
            } else {
                s->format = (DatasetFormat)found;
            }
        } else {
            error_at(c, sub, "unknown key; a source has path, weight, format and text_field");
            ok = 0;
        }
    }
    if (!s->path[0] && ok) {
        error_at(c, path, "has no \"path\"");
        ok = 0;
    }
    return ok;
}

static int store_sources(Ctx *c, const RecipeKey *k, const cJSON *v, Recipe *r) {
    if (!cJSON_IsArray(v)) {
        type_error(c, k, k->path, v);
        return 0;
    }
    int n = cJSON_GetArraySize(v);
    if (n > RECIPE_MAX_SOURCES) {
        error_at(c, k->path, "%d sources; at most %d are supported", n, RECIPE_MAX_SOURCES);
        return 0;
    }
    RecipeSource *list = n ? npt_xcalloc((size_t)n, sizeof *list, "data.sources") : NULL;
    int i = 0, ok = 1;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        char path[64];
        snprintf(path, sizeof path, "%s[%d]", k->path, i);
        ok &= store_source(c, k, e, path, &list[i]);
    }
    if (!ok) {
        free(list);
        return 0;
    }
    free(r->data.sources);
    r->data.sources = list;
    r->data.n_sources = n;
    return 1;
}

/* Checks v against k and stores it into r. Returns 1 if stored, 0 after an error. */
static int store(Ctx *c, const RecipeKey *k, const cJSON *v, Recipe *r) {
    switch (k->type) {
    case RK_STRING: {
        if (!cJSON_IsString(v) || ((k->flags & RK_NONEMPTY) && !v->valuestring[0])) break;
        size_t len = strlen(v->valuestring);
        if (len >= k->size) {
            error_at(c, k->path, "is %zu bytes long; at most %zu allowed", len, k->size - 1);
            return 0;
        }
        memcpy(field(r, k), v->valuestring, len + 1);
        return 1;
    }
    case RK_INT:
        if (!is_int_in(v, k->lo, k->hi)) break;
        *(int *)field(r, k) = (int)v->valuedouble;
        return 1;
    case RK_NUMBER: {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) break;
        double x = v->valuedouble;
        if (x < k->lo || (k->lo_open && x == k->lo) || x > k->hi || (k->hi_open && x == k->hi)) break;
        if (fabs(x) > FLT_MAX) { /* the run computes in float32: it would be Inf there */
            error_at(c, k->path, "%g is beyond the float32 range (3.4e38) the run computes in", x);
            return 0;
        }
        *(double *)field(r, k) = x;
        return 1;
    }
    case RK_BOOL:
        if (!cJSON_IsBool(v)) break;
        *(int *)field(r, k) = cJSON_IsTrue(v);
        return 1;
    case RK_CHOICE:
        if (!cJSON_IsString(v)) break;
        for (int i = 0; i < k->n_choices; i++)
            if (strcmp(v->valuestring, k->choices[i]) == 0) {
                *(int *)field(r, k) = i;
                return 1;
            }
        break;
    case RK_LAYERS: return store_layers(c, k, v, r);
    case RK_SOURCES: return store_sources(c, k, v, r);
    }
    type_error(c, k, k->path, v);
    return 0;
}

/* Reports members that are not in the schema, sections that are not objects, and
 * known keys given twice (cJSON would silently keep the first). */
static void check_members(Ctx *c, const cJSON *obj, const char *section) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        char path[256], shown[128];
        printable(m->string, shown, sizeof shown);
        if (section[0]) snprintf(path, sizeof path, "%s.%s", section, shown[0] ? shown : "\"\"");
        else snprintf(path, sizeof path, "%s", shown[0] ? shown : "\"\"");
        char full[256];
        snprintf(full, sizeof full, "%s%s%s", section, section[0] ? "." : "", m->string);
        int is_section = !section[0] && recipe_is_section(m->string);
        int known = section[0] || !strchr(m->string, '.') ? recipe_key_find(full) != NULL : 0;
        if (!is_section && !known) {
            char msg[1024];
            recipe_unknown_key_message(section, m->string, msg, sizeof msg);
            error_at(c, path, "%s", msg);
            continue;
        }
        for (const cJSON *prev = obj->child; prev != m; prev = prev->next)
            if (strcmp(prev->string, m->string) == 0) {
                error_at(c, path, "duplicate key; give each key once");
                break;
            }
        if (is_section) {
            if (!cJSON_IsObject(m)) {
                char got[160];
                describe_json(m, got, sizeof got);
                error_at(c, path, "expected an object {...}, got %s", got);
            } else {
                check_members(c, m, m->string);
            }
        }
    }
}

/* The file name without directories and extension: "recipes/npt-safe.json" -> "npt-safe". */
static void file_stem(const char *file, char *out, size_t n) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    const char *dot = strrchr(base, '.');
    size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (len >= n) len = n - 1;
    memcpy(out, base, len);
    out[len] = '\0';
    if (!out[0]) snprintf(out, n, "recipe");
}

static int key_index(const char *path) {
    const RecipeKey *k = recipe_key_find(path);
    if (!k) npt_die("recipe schema has no key %s", path);
    return (int)(k - recipe_keys);
}

/* 1 when the file set key path to something other than its default: only then is a
 * key that the rest of the recipe makes irrelevant worth a warning (a resolved recipe
 * from a checkpoint names every key). */
static int set_non_default(const char *path, const Recipe *r, const unsigned char *given) {
    const RecipeKey *k = recipe_key_find(path);
    if (!given[k - recipe_keys]) return 0;
    cJSON *def = cJSON_Parse(k->def);
    if (!def) npt_die("bad default for recipe key %s", k->path);
    const void *f = cfield(r, k);
    int differs = 1;
    if (k->type == RK_NUMBER) differs = *(const double *)f != def->valuedouble;
    else if (k->type == RK_CHOICE) differs = strcmp(recipe_choice_name(path, *(const int *)f), def->valuestring) != 0;
    cJSON_Delete(def);
    return differs;
}

/* Rules that involve two keys; given[]/ok[] say which keys the file set and which
 * passed their own check (no follow-on errors from values already reported). */
static void cross_checks(Ctx *c, const Recipe *r, const unsigned char *given, const unsigned char *ok) {
    int warm = key_index("train.warmup_steps"), steps = key_index("train.max_steps");
    int type = key_index("objective.type"), all = key_index("objective.train_all_weights");
    if (ok[warm] && ok[steps] && r->train.warmup_steps > r->train.max_steps)
        error_at(c, "train.warmup_steps", "%d is more than train.max_steps (%d)", r->train.warmup_steps,
                 r->train.max_steps);
    int train = key_index("data.train"), sources = key_index("data.sources"), valid = key_index("data.valid");
    int fraction = key_index("data.valid_fraction");
    if (ok[train] && ok[sources] && r->data.train[0] && r->data.n_sources)
        error_at(c, "data.sources", "give data.train (one source) or data.sources, not both");
    if (ok[valid] && ok[fraction] && r->data.valid[0] && r->data.valid_fraction > 0)
        error_at(c, "data.valid_fraction", "give data.valid (a validation file) or data.valid_fraction, not both");
    int every = key_index("eval.every");
    int seq = key_index("data.seq_len");
    if (ok[every] && ok[seq] && r->eval.every > 0 && r->data.seq_len < 3)
        error_at(c, "eval.every", "%d, but data.seq_len %d leaves no scored token (evaluation does not score the token "
                 "after a window's BOS); use data.seq_len >= 3 or eval.every 0", r->eval.every, r->data.seq_len);
    if (ok[every] && ok[valid] && ok[fraction] && r->eval.every > 0 && !r->data.valid[0] && r->data.valid_fraction <= 0)
        error_at(c, "eval.every", "%d, but the data has no validation split; set data.valid_fraction or data.valid, or "
                 "eval.every to 0", r->eval.every);
    if (ok[all] && ok[type] && r->objective.train_all_weights && r->objective.type != OBJECTIVE_LM)
        error_at(c, "objective.train_all_weights",
                 "only applies to objective.type \"lm\"; distillation trains the adapters against the frozen model");
    /* the log shares output_dir with the run's other files; one of those names would be
     * overwritten by the other writer */
    const char *log = r->log.metrics_file;
    int metrics = key_index("log.metrics_file");
    if (ok[metrics] && (npt_ends_with(log, ".h5") || npt_ends_with(log, ".svg") || !strcmp(log, "eval.jsonl") ||
                        !strncmp(log, "debug_step", 10)))
        error_at(c, "log.metrics_file", "\"%s\" is a name the run gives its checkpoints, plot, evaluations or debug "
                 "reports; use another, e.g. \"metrics.jsonl\"", log);
    /* a file name inside output_dir, never a path out of it: resume trims and appends to it */
    else if (ok[metrics] && (strchr(log, '/') || !strcmp(log, ".") || !strcmp(log, "..")))
        error_at(c, "log.metrics_file", "\"%s\" is a path; give a file name, which is written inside output_dir "
                 "(e.g. \"metrics.jsonl\")", log);
    /* resume rewrites it through NAME.tmp.PID.XXXXXXXX (util/atomic_file.c), which must fit
     * a file name too: 24 bytes with a 10-digit PID */
    else if (ok[metrics] && strlen(log) > NAME_MAX - 24)
        error_at(c, "log.metrics_file", "is %zu bytes long; a file name holds at most %d here (the file system's %d, "
                 "less room for its temporary copy): use a shorter name", strlen(log), NAME_MAX - 24, NAME_MAX);
    /* the name becomes runs/<name> when output_dir is not given: a path there would put
     * the run somewhere else than runs/ (or into runs/ itself) */
    int name = key_index("name");
    if (ok[name] && (strchr(r->name, '/') || !strcmp(r->name, ".") || !strcmp(r->name, "..")))
        error_at(c, "name", "\"%s\" is a path; give a plain name (the run goes to runs/<name>), or set output_dir for "
                 "another place", r->name);
    int cache = key_index("train.teacher_cache_gb");
    if (ok[cache] && ok[type] && r->train.teacher_cache_gb > 0 && r->objective.type != OBJECTIVE_DISTILL)
        error_at(c, "train.teacher_cache_gb", "only applies to objective.type \"distill\" (the lm objective has no teacher); set it to 0");
    if (c->d->n_errors) return; /* the warnings below read values that may not be stored */
    if (r->objective.type == OBJECTIVE_LM && set_non_default("objective.loss", r, given))
        warn_at(c->d, "objective.loss", "ignored: objective.type is \"lm\"");
    if (r->objective.type == OBJECTIVE_LM && r->objective.train_all_weights && set_non_default("objective.lambda", r, given))
        warn_at(c->d, "objective.lambda", "ignored: objective.train_all_weights trains no adapters, so there is no regularizer");
    if (r->train.optimizer == OPTIMIZER_ADAMW && set_non_default("train.momentum", r, given))
        warn_at(c->d, "train.momentum", "ignored: train.optimizer is \"adamw\"");
    if (r->train.optimizer == OPTIMIZER_SGD && set_non_default("train.beta1", r, given))
        warn_at(c->d, "train.beta1", "ignored: train.optimizer is \"sgd\"");
    if (r->train.optimizer == OPTIMIZER_SGD && set_non_default("train.beta2", r, given))
        warn_at(c->d, "train.beta2", "ignored: train.optimizer is \"sgd\"");
    if (r->npt.safe_mode && set_non_default("npt.init_b_mul_std", r, given))
        warn_at(c->d, "npt.init_b_mul_std", "ignored: safe mode has no B_mul");
}

static void validate(Ctx *c, const cJSON *root, const char *file, Recipe *r) {
    unsigned char *given = npt_xcalloc((size_t)recipe_n_keys, 1, "recipe keys given");
    unsigned char *ok = npt_xcalloc((size_t)recipe_n_keys, 1, "recipe keys ok");
    check_members(c, root, "");
    for (int i = 0; i < recipe_n_keys; i++) {
        const RecipeKey *k = &recipe_keys[i];
        const cJSON *v = lookup(root, k->path);
        if (v) {
            given[i] = 1;
            ok[i] = (unsigned char)store(c, k, v, r);
        } else if (k->def) {
            cJSON *d = cJSON_Parse(k->def);
            if (!d) npt_die("bad default for recipe key %s", k->path);
            ok[i] = (unsigned char)store(c, k, d, r);
            cJSON_Delete(d);
        } else if (k->flags & RK_REQUIRED) {
            error_at(c, k->path, "required key is missing. %s", k->doc);
        }
    }
    if (!given[key_index("name")]) file_stem(file, r->name, sizeof r->name);
    if (!given[key_index("output_dir")]) snprintf(r->output_dir, sizeof r->output_dir, "runs/%s", r->name);
    cross_checks(c, r, given, ok);
    free(given);
    free(ok);
}

int recipe_parse(const char *text, const char *filename, const char *const *overrides, int n_overrides,
                 Recipe *out, RecipeDiag *diag) {
    RecipeDiag local;
    Ctx c = {diag ? diag : &local, NULL, 0};
    *c.d = (RecipeDiag){0};
    memset(out, 0, sizeof *out);
    const char *file = filename ? filename : "recipe";
    char *buf = npt_xstrdup(text);
    cJSON *root = NULL;
    size_t bad = 0;
    size_t len = strlen(buf);
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) memmove(buf, buf + 3, len - 2); /* UTF-8 BOM */
    if (strip_comments(buf, &bad) < 0) {
        syntax_error(&c, file, buf, bad, "unterminated /* comment");
    } else if (buf[strspn(buf, " \t\r\n")] == '\0') {
        syntax_error(&c, file, buf, 0, "the recipe is empty; a recipe is a JSON object such as {\"model\": \"...\"}");
    } else {
        const char *end = NULL;
        root = cJSON_ParseWithOpts(buf, &end, 1);
        if (!root) report_parse_error(&c, file, buf, end ? (size_t)(end - buf) : 0);
    }
    if (root && !cJSON_IsObject(root)) {
        char got[160];
        describe_json(root, got, sizeof got);
        error_at(&c, file, "expected a JSON object {...} at the top level, got %s", got);
    } else if (root) {
        for (int i = 0; i < n_overrides; i++) apply_override(&c, root, overrides[i]);
        validate(&c, root, file, out);
    }
    cJSON_Delete(root);
    free(buf);
    for (int i = 0; i < c.n_set; i++) free(c.set_paths[i]);
    free(c.set_paths);
    int failed = c.d->n_errors > 0 || c.d->n_dropped > 0;
    if (!failed) recipe_apply_safe_mode(out, c.d);
    if (!diag) recipe_diag_free(&local);
    return failed ? -1 : 0;
}

int recipe_load(const char *path, const char *const *overrides, int n_overrides, Recipe *out,
                RecipeDiag *diag) {
    RecipeDiag local;
    RecipeDiag *d = diag ? diag : &local;
    *d = (RecipeDiag){0};
    memset(out, 0, sizeof *out);
    struct stat st;
    char msg[sizeof((NptErr *)0)->msg] = "";
    if (stat(path, &st) != 0) snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
    else if (S_ISDIR(st.st_mode)) snprintf(msg, sizeof msg, "is a directory, not a recipe file");
    else if (st.st_size > RECIPE_FILE_MAX)
        snprintf(msg, sizeof msg, "is %lld bytes; a recipe is a small JSON file (is this the right argument?)",
                 (long long)st.st_size);
    char *text = NULL;
    size_t len = 0;
    if (!msg[0]) {
        NptErr err;
        text = npt_read_input(path, "recipe", &len, &err);
        if (!text) { /* printed after "PATH: ", so "PATH: is a named pipe..." drops its own PATH */
            size_t n = strlen(path);
            const char *why = !strncmp(err.msg, path, n) && !strncmp(err.msg + n, ": ", 2) ? err.msg + n + 2 : err.msg;
            memmove(msg, why, strlen(why) + 1);
        } else if (memchr(text, '\0', len)) snprintf(msg, sizeof msg, "contains NUL bytes; a recipe is a JSON text file");
    }
    if (msg[0]) {
        issue_push(&d->errors, &d->n_errors, path, msg, 0, 0);
        free(text);
        if (!diag) recipe_diag_free(&local);
        return -1;
    }
    int rc = recipe_parse(text, path, overrides, n_overrides, out, d);
    free(text);
    if (!diag) recipe_diag_free(&local);
    return rc;
}

void recipe_free(Recipe *r) {
    if (!r) return;
    free(r->npt.layer_ids);
    r->npt.layer_ids = NULL;
    r->npt.n_layer_ids = 0;
    free(r->data.sources);
    r->data.sources = NULL;
    r->data.n_sources = 0;
}

/* Keys whose change under a checkpoint is refused: the adapters (modulation scale), the
 * optimizer moments (optimizer), the loss being minimized, or the window stream the data
 * cursor counts in (seed, order, window length, tokens) would change meaning. The
 * adapter shape (rank, layers, safe mode) is checked before, with its own message. */
static const char *const resume_fixed[] = {
    "npt.modulation_scale", "objective.type",  "objective.loss", "objective.train_all_weights", "train.optimizer",
    "seed",                 "data.seq_len",    "data.shuffle",   "data.append_eos",             "data.format",
    "data.text_field",
};
/* Keys that may change on resume, at the price of bit-exact reproduction. Paths, output,
 * logging, eval, checkpointing and the init of adapters that already exist change freely. */
static const char *const resume_changes_run[] = {
    "train.lr",          "train.min_lr_ratio", "train.schedule",   "train.warmup_steps", "train.max_steps",
    "train.weight_decay", "train.beta1",       "train.beta2",      "train.eps",          "train.momentum",
    "train.clip_grad_norm", "objective.lambda", "train.batch_size", "train.grad_accum",
};

int recipe_resume_check(const char *saved_json, const char *now_json, const char *ckpt_path, char *changed,
                        size_t changed_size, NptErr *err) {
    cJSON *saved = cJSON_Parse(saved_json ? saved_json : "{}"), *now = cJSON_Parse(now_json ? now_json : "{}");
    int rc = 0;
    size_t used = 0;
    changed[0] = '\0';
    if (!saved || !now) {
        rc = npt_fail(err, "%s: its recipe (the /recipe dataset) is not valid JSON; resume from another checkpoint", ckpt_path);
        goto done;
    }
    for (size_t i = 0; i < NPT_ARRAY_LEN(resume_fixed) && rc == 0; i++) {
        const cJSON *a = lookup(saved, resume_fixed[i]), *b = lookup(now, resume_fixed[i]);
        if (!a || !b || cJSON_Compare(a, b, 1)) continue;
        char *va = cJSON_PrintUnformatted(a), *vb = cJSON_PrintUnformatted(b);
        rc = npt_fail(err, "%s was trained with %s %s; the recipe has %s; resume with the recipe that wrote it, or start a "
                           "new run in another output_dir",
                      ckpt_path, resume_fixed[i], va ? va : "?", vb ? vb : "?");
        free(va), free(vb);
    }
    /* max_steps moves the lr of the remaining steps only when the lr decays */
    const cJSON *schedule = lookup(now, "train.schedule");
    int decays = !cJSON_IsString(schedule) || strcmp(schedule->valuestring, "constant") != 0;
    for (size_t i = 0; i < NPT_ARRAY_LEN(resume_changes_run) && rc == 0; i++) {
        const cJSON *a = lookup(saved, resume_changes_run[i]), *b = lookup(now, resume_changes_run[i]);
        if (!a || !b || cJSON_Compare(a, b, 1) || (!decays && !strcmp(resume_changes_run[i], "train.max_steps"))) continue;
        int n = snprintf(changed + used, changed_size - used, "%s%s", used ? ", " : "", resume_changes_run[i]);
        if (n > 0 && (size_t)n < changed_size - used) used += (size_t)n;
    }
done:
    cJSON_Delete(saved);
    cJSON_Delete(now);
    return rc ? -1 : 0;
}

void recipe_copy(Recipe *dst, const Recipe *src) {
    *dst = *src;
    if (src->npt.layer_ids) {
        size_t bytes = (size_t)src->npt.n_layer_ids * sizeof(int);
        dst->npt.layer_ids = npt_xmalloc(bytes, "npt.layers copy");
        memcpy(dst->npt.layer_ids, src->npt.layer_ids, bytes);
    }
    if (src->data.sources) {
        size_t bytes = (size_t)src->data.n_sources * sizeof *src->data.sources;
        dst->data.sources = npt_xmalloc(bytes ? bytes : 1, "data.sources copy");
        memcpy(dst->data.sources, src->data.sources, bytes);
    }
}

void recipe_apply_safe_mode(Recipe *r, RecipeDiag *diag) {
    if (!r->npt.safe_mode) return;
    if (r->train.lr > RECIPE_SAFE_LR_CAP) {
        char lr[64], cap[64];
        recipe_format_number(r->train.lr, lr, sizeof lr);
        recipe_format_number(RECIPE_SAFE_LR_CAP, cap, sizeof cap);
        warn_at(diag, "train.lr", "%s exceeds the safe-mode cap; using %s", lr, cap);
        r->train.lr = RECIPE_SAFE_LR_CAP;
    }
    if (r->train.clip_grad_norm == 0) {
        warn_at(diag, "train.clip_grad_norm", "0 (off) is not allowed in safe mode; using 0.5");
        r->train.clip_grad_norm = RECIPE_SAFE_CLIP;
    }
    if (!r->train.skip_nonfinite) {
        warn_at(diag, "train.skip_nonfinite", "false is not allowed in safe mode; using true");
        r->train.skip_nonfinite = 1;
    }
}

/* ---------------------------------------------------------------- model checks */

int recipe_resolve_layers(const Recipe *r, int n_layers, int *ids, NptErr *err) {
    if (n_layers < 1) return npt_fail(err, "npt.layers: the model has no layers");
    int n = 0;
    switch (r->npt.layers) {
    case LAYERS_ALL:
        for (int i = 0; i < n_layers; i++) ids[n++] = i;
        break;
    case LAYERS_LOWER_HALF:
        for (int i = 0; i < n_layers / 2; i++) ids[n++] = i;
        break;
    case LAYERS_UPPER_HALF:
        for (int i = n_layers / 2; i < n_layers; i++) ids[n++] = i;
        break;
    case LAYERS_LIST: {
        char bad[256] = "";
        size_t used = 0;
        int n_bad = 0;
        for (int i = 0; i < r->npt.n_layer_ids; i++) {
            if (r->npt.layer_ids[i] < n_layers) {
                if (n < n_layers) ids[n++] = r->npt.layer_ids[i];
            } else if (used < sizeof bad) {
                used += (size_t)snprintf(bad + used, sizeof bad - used, "%s%d", n_bad++ ? ", " : "",
                                         r->npt.layer_ids[i]);
            }
        }
        if (n_bad)
            return npt_fail(err, "npt.layers: layer%s %s do%s not exist; the model has %d layers (0..%d)",
                            n_bad > 1 ? "s" : "", bad, n_bad > 1 ? "" : "es", n_layers, n_layers - 1);
        break;
    }
    }
    if (n == 0)
        return npt_fail(err, "npt.layers: \"%s\" selects no layer of a %d-layer model; use \"all\" or a list",
                        recipe_choice_name("npt.layers", r->npt.layers), n_layers);
    return n;
}

int recipe_model_issues(const Recipe *r, int dim, int hidden_dim, int n_layers, RecipeDiag *diag) {
    int n = 0, max_rank = dim < hidden_dim ? dim : hidden_dim;
    char msg[256];
    if (r->npt.rank > max_rank) {
        snprintf(msg, sizeof msg, "%d is larger than this model allows (min(dim %d, hidden_dim %d) = %d); use 1..%d",
                 r->npt.rank, dim, hidden_dim, max_rank, max_rank);
        recipe_diag_add(diag, 1, "npt.rank", msg);
        n++;
    }
    int *ids = n_layers > 0 ? npt_xmalloc((size_t)n_layers * sizeof *ids, "layer ids") : NULL;
    NptErr lerr;
    if (recipe_resolve_layers(r, n_layers, ids, &lerr) < 0) {
        const char *prefix = "npt.layers: "; /* resolve_layers names the key itself */
        size_t skip = strncmp(lerr.msg, prefix, strlen(prefix)) == 0 ? strlen(prefix) : 0;
        recipe_diag_add(diag, 1, "npt.layers", lerr.msg + skip);
        n++;
    }
    free(ids);
    return n;
}

void recipe_path_issue(const char *path, int dir_ok, const char *key, const char *what, RecipeDiag *diag) {
    struct stat st;
    NptErr err;
    char msg[RECIPE_PATH_MAX + 128];
    if (!path[0]) return;
    if (stat(path, &st) != 0)
        snprintf(msg, sizeof msg, "%s: %s (relative paths are from the current directory)", path, strerror(errno));
    else if (S_ISDIR(st.st_mode) && !dir_ok)
        snprintf(msg, sizeof msg, "%s is a directory; expected a file", path);
    else if (!S_ISDIR(st.st_mode) && npt_check_input(path, what, &err) == -2) /* a pipe or device */
        snprintf(msg, sizeof msg, "%s", err.msg);
    else
        return;
    recipe_diag_add(diag, 1, key, msg);
}

/* A data source: a file, a folder of text, or FILE.h5:/DATASET (the file is checked). */
static void data_path_issue(const char *spec, const char *key, RecipeDiag *diag) {
    char file[RECIPE_PATH_MAX];
    dataset_source_file(spec, file, sizeof file);
    recipe_path_issue(file, 1, key, "data file", diag);
}

/* The file a source spec reads (into file, and stat'ed into *st: by identity, so "./x"
 * and "x", a symlink or a hard link match) and its HDF5 dataset without leading slashes
 * ("" for a raw or text file; "tokens" when "x.h5" names none). 0 when the file exists. */
static int source_identity(const char *spec, struct stat *st, char *file, size_t file_n, char *dset, size_t dset_n) {
    dataset_source_parts(spec, file, file_n, dset, dset_n);
    size_t skip = strspn(dset, "/");
    memmove(dset, dset + skip, strlen(dset + skip) + 1);
    return stat(file, st);
}

/* Whether the file or folder path is the folder dir or lies anywhere below it (by
 * identity, so through symlinks too): a folder source reads every file below it. */
static int lies_within(const char *path, const struct stat *dir) {
    char p[PATH_MAX];
    if (!S_ISDIR(dir->st_mode) || !realpath(path, p)) return 0;
    for (char *slash; (slash = strrchr(p, '/')) && slash > p;) {
        *slash = '\0'; /* the parents of path, nearest first */
        struct stat s;
        if (stat(p, &s) == 0 && s.st_dev == dir->st_dev && s.st_ino == dir->st_ino) return 1;
    }
    return 0;
}

/* data.valid reading the very data of a training source (the same file or dataset, a
 * file inside a training folder, or a folder holding a training file): its windows
 * would be trained on and then scored as held out, so the validation loss would say
 * nothing. */
static void valid_overlap_issue(const char *valid, const char *train, const char *train_key, RecipeDiag *diag) {
    struct stat sv, st;
    char dv[256], dt[256], fv[RECIPE_PATH_MAX], ft[RECIPE_PATH_MAX];
    if (!valid[0] || !train[0] || source_identity(valid, &sv, fv, sizeof fv, dv, sizeof dv) ||
        source_identity(train, &st, ft, sizeof ft, dt, sizeof dt))
        return;
    const char *how = NULL;
    if (sv.st_dev == st.st_dev && sv.st_ino == st.st_ino && !strcmp(dv, dt))
        how = dv[0] ? "is the same HDF5 dataset as" : S_ISDIR(sv.st_mode) ? "is the same folder as" : "is the same file as";
    else if (lies_within(fv, &st))
        how = "lies inside the training folder";
    else if (lies_within(ft, &sv))
        how = "is a folder holding";
    if (!how) return;
    char msg[3 * RECIPE_PATH_MAX];
    snprintf(msg, sizeof msg, "%s %s %s (%s): validation would score windows the run trains on; give data.valid a "
             "held-out file, or drop data.valid and set data.valid_fraction to hold out part of the training data",
             valid, how, train_key, train);
    recipe_diag_add(diag, 1, "data.valid", msg);
}

void recipe_data_path_issues(const Recipe *r, RecipeDiag *diag) {
    data_path_issue(r->data.train, "data.train", diag);
    data_path_issue(r->data.valid, "data.valid", diag);
    valid_overlap_issue(r->data.valid, r->data.train, "data.train", diag);
    for (int i = 0; i < r->data.n_sources; i++) {
        char key[64];
        snprintf(key, sizeof key, "data.sources[%d].path", i);
        data_path_issue(r->data.sources[i].path, key, diag);
        valid_overlap_issue(r->data.valid, r->data.sources[i].path, key, diag);
    }
}

int recipe_context_issue(const Recipe *r, int context, char *msg, size_t size) {
    if (context <= 0 || r->data.seq_len <= context) return 0;
    snprintf(msg, size, "%d is longer than the model's context (%d); positions beyond it were never trained: set "
             "data.seq_len to at most %d%s", r->data.seq_len, context, context,
             r->objective.train_all_weights ? ", or make the model with a longer context (npt init --context N)" : "");
    return 1;
}

int recipe_diag_fail(const RecipeDiag *d, NptErr *err) {
    if (d->n_errors == 0) return 0;
    char msg[sizeof err->msg] = "";
    size_t used = 0;
    for (int i = 0; i < d->n_errors && used < sizeof msg; i++)
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s: %s", i ? "; " : "", d->errors[i].path,
                                 d->errors[i].message);
    return npt_fail(err, "%s", msg);
}

int recipe_training_issues(const Recipe *r, RecipeDiag *diag) {
    if (r->data.train[0] || r->data.n_sources) return 0;
    recipe_diag_add(diag, 1, "data.train",
                    "required for training (a text or token file), or data.sources; set it in the recipe or with "
                    "--set data.train=PATH");
    return 1;
}

int recipe_check_for_training(const Recipe *r, NptErr *err) {
    RecipeDiag d = {0};
    recipe_training_issues(r, &d);
    int rc = recipe_diag_fail(&d, err);
    recipe_diag_free(&d);
    return rc;
}

static int is_text(const char *path, DatasetFormat f) {
    if (f == DATASET_AUTO) f = dataset_detect_format(path);
    return f == DATASET_TEXT || f == DATASET_JSONL;
}

int recipe_needs_tokenizer(const Recipe *r) {
    int text = (r->data.train[0] && is_text(r->data.train, r->data.format)) ||
               (r->data.valid[0] && is_text(r->data.valid, r->data.format));
    for (int i = 0; i < r->data.n_sources; i++) text |= is_text(r->data.sources[i].path, r->data.sources[i].format);
    return text;
}

/* ---------------------------------------------------------------- output */

static cJSON *value_json(const RecipeKey *k, const Recipe *r) {
    const void *f = cfield(r, k);
    switch (k->type) {
    case RK_STRING: return cJSON_CreateString((const char *)f);
    case RK_INT: return cJSON_CreateNumber(*(const int *)f);
    case RK_NUMBER: return cJSON_CreateNumber(*(const double *)f);
    case RK_BOOL: return cJSON_CreateBool(*(const int *)f);
    case RK_CHOICE: return cJSON_CreateString(recipe_choice_name(k->path, *(const int *)f));
    case RK_LAYERS:
        if (r->npt.layers != LAYERS_LIST) return cJSON_CreateString(recipe_choice_name(k->path, r->npt.layers));
        return cJSON_CreateIntArray(r->npt.layer_ids, r->npt.n_layer_ids);
    case RK_SOURCES: {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; arr && i < r->data.n_sources; i++) {
            const RecipeSource *s = &r->data.sources[i];
            cJSON *o = cJSON_CreateObject();
            if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "path", s->path) ||
                !cJSON_AddNumberToObject(o, "weight", s->weight) ||
                !cJSON_AddStringToObject(o, "format", recipe_choice_name(k->path, s->format)) ||
                (s->text_field[0] && !cJSON_AddStringToObject(o, "text_field", s->text_field))) {
                cJSON_Delete(arr);
                return NULL;
            }
        }
        return arr;
    }
    }
    return NULL;
}

char *recipe_to_json(const Recipe *r) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    for (int i = 0; ok && i < recipe_n_keys; i++) {
        const RecipeKey *k = &recipe_keys[i];
        cJSON *parent = root;
        const char *dot = strchr(k->path, '.');
        if (dot) {
            char section[64];
            snprintf(section, sizeof section, "%.*s", (int)(dot - k->path), k->path);
            parent = cJSON_GetObjectItemCaseSensitive(root, section);
            if (!parent) parent = cJSON_AddObjectToObject(root, section);
        }
        cJSON *v = value_json(k, r);
        ok = parent && v && cJSON_AddItemToObject(parent, dot ? dot + 1 : k->path, v);
        if (!ok) cJSON_Delete(v);
    }
    char *printed = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!printed) return NULL;
    char *out = npt_xstrdup(printed);
    cJSON_free(printed);
    return out;
}

/* ---------------------------------------------------------------- bundled recipes */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int recipe_bundled_dir(char *dir, size_t n, NptErr *err) {
    const char *env = getenv("NPT_RECIPES_DIR");
    if (env && env[0]) {
        if (!is_dir(env)) return npt_fail(err, "NPT_RECIPES_DIR=%s is not a directory", env);
        snprintf(dir, n, "%s", env);
        return 0;
    }
    char exe[RECIPE_PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char beside[RECIPE_PATH_MAX + 16] = "";
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(beside, sizeof beside, "%s/recipes", exe);
        if (is_dir(beside)) {
            snprintf(dir, n, "%s", beside);
            return 0;
        }
    }
    if (is_dir("recipes")) {
        snprintf(dir, n, "recipes");
        return 0;
    }
    return npt_fail(err, "no bundled recipes: neither %s nor ./recipes is a directory (set NPT_RECIPES_DIR)",
                    beside[0] ? beside : "<npt dir>/recipes");
}

int recipe_bundled_path(const char *name, char *out, size_t n, NptErr *err) {
    char dir[RECIPE_PATH_MAX];
    if (recipe_bundled_dir(dir, sizeof dir, err)) return -1;
    size_t len = strlen(name);
    const char *ext = len > 5 && !strcmp(name + len - 5, ".json") ? "" : ".json";
    struct stat st;
    if (!strchr(name, '/') && (size_t)snprintf(out, n, "%s/%s%s", dir, name, ext) < n && stat(out, &st) == 0 &&
        S_ISREG(st.st_mode))
        return 0;
    return npt_fail(err, "%s: no bundled recipe of that name in %s (see npt recipes list)", name, dir);
}

int recipe_resolve_path(const char *arg, char *out, size_t n, NptErr *err) {
    struct stat st;
    if (stat(arg, &st) == 0 && !S_ISDIR(st.st_mode)) {
        if (npt_check_input(arg, "recipe", err) == -2) return -1; /* a pipe or device, refused as a directory is */
        snprintf(out, n, "%s", arg);
        return 0;
    }
    if (strchr(arg, '/') || is_dir(arg))
        return npt_fail(err, "%s: %s", arg, is_dir(arg) ? "is a directory, not a recipe file" : "no such recipe file");
    if (recipe_bundled_path(arg, out, n, err) == 0) return 0;
    char why[sizeof err->msg];
    memcpy(why, err->msg, sizeof why);
    return npt_fail(err, "%s: no such recipe file, and %s", arg, why + strlen(arg) + 2);
}
