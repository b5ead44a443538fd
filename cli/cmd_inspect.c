/* cli/cmd_inspect.c — `npt inspect`: what is in a checkpoint (summary, tensor table with
 * streamed statistics, history and loss plot), and `npt inspect diff A B`. Model files
 * and `verify` are in cli/inspect_model.c. Tensors are read one block of rows at a time,
 * so memory does not grow with tensor size. */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../model/debug.h"
#include "../train/runlog.h"
#include "commands.h"
#include "inspect.h"

static const char *inspect_help =
    "usage: npt inspect CKPT.h5 [--json] [--plot[=FILE.svg] [--force]]\n"
    "       npt inspect MODEL [--json]            (HF directory, .safetensors, llama2.c .bin, .gguf)\n"
    "       npt inspect verify CKPT.h5 --model M\n"
    "       npt inspect diff A.h5 B.h5 [--json]\n\n"
    "  CKPT.h5      summary, tensor table (min, max, mean, std, NaN/Inf, beyond fp16/bf16 range),\n"
    "               history; exit 1 if the checkpoint has problems (each is printed)\n"
    "  --json       the same as one JSON object on stdout\n"
    "  --plot       write the loss curve as SVG (default FILE: CKPT.loss.svg beside the checkpoint,\n"
    "               replaced on each run); an existing FILE given by name is kept unless --force\n"
    "  verify       shapes, finiteness, base fingerprint and a forward pass on model M; exit 0 pass, 1 fail\n"
    "  diff         per-tensor max |a-b| and ||a-b||/||a||, config and step differences;\n"
    "               exit 0 identical, 1 different, 2 error\n";


/* ---------------------------------------------------------------- streaming stats */

int64_t inspect_row_size(const CkptTensor *t) {
    int64_t n = 1;
    for (int d = 1; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int64_t inspect_block_rows(const CkptTensor *t) {
    int64_t row = inspect_row_size(t), rows = row > 0 ? INSPECT_BLOCK_FLOATS / row : 1;
    return rows < 1 ? 1 : rows;
}

/* Merges the statistics of one block into s (Chan's parallel variance formula). */
static void stats_add_block(TensorStats *s, const float *x, int64_t n) {
    int64_t k = 0;
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    const double fp16_max = debug_precision_max(DEBUG_FP16), bf16_max = debug_precision_max(DEBUG_BF16);
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v)) { s->nan++; continue; }
        if (isinf(v)) { s->inf++; continue; }
        s->beyond_fp16 += fabs(v) > fp16_max;
        s->beyond_bf16 += fabs(v) > bf16_max;
        sum += v, k++;
        lo = fmin(lo, v), hi = fmax(hi, v);
    }
    s->count += n;
    if (k == 0) return;
    double mean = sum / (double)k, m2 = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) m2 += ((double)x[i] - mean) * ((double)x[i] - mean);
    double delta = mean - s->mean;
    int64_t tot = s->finite + k;
    s->m2 += m2 + delta * delta * (double)s->finite * (double)k / (double)tot;
    s->mean += delta * (double)k / (double)tot;
    s->finite = tot;
    s->min = fmin(s->min, lo), s->max = fmax(s->max, hi);
}

int inspect_tensor_stats(CkptFile *f, const CkptTensor *t, TensorStats *s, NptErr *err) {
    memset(s, 0, sizeof *s);
    s->min = INFINITY, s->max = -INFINITY;
    int64_t row = inspect_row_size(t), block = inspect_block_rows(t);
    float *buf = malloc((size_t)(block * row > 0 ? block * row : 1) * sizeof *buf);
    if (!buf) return npt_fail(err, "out of memory reading tensor /%s", t->name);
    for (int64_t r = 0; r < t->shape[0]; r += block) {
        int64_t nr = t->shape[0] - r < block ? t->shape[0] - r : block;
        if (ckpt_read_rows(f, t, r, nr, buf, err)) {
            s->read_failed = 1;
            free(buf);
            return -1;
        }
        stats_add_block(s, buf, nr * row);
    }
    free(buf);
    return 0;
}

int inspect_value_problem(const char *path, const CkptTensor *t, const TensorStats *s, char *msg, size_t size) {
    if (s->nan || s->inf)
        snprintf(msg, size, "%s: tensor /%s holds %lld NaN and %lld Inf values (of %lld)", path, t->name,
                 (long long)s->nan, (long long)s->inf, (long long)s->count);
    else if (ckpt_is_second_moment(t->name) && s->min < 0) /* resuming would take its square root */
        snprintf(msg, size, "%s: tensor /%s (AdamW second moments) holds negative values (min %g)", path, t->name,
                 s->min);
    else
        return 0;
    return 1;
}

static double stats_std(const TensorStats *s) { return s->finite > 0 ? sqrt(s->m2 / (double)s->finite) : NAN; }

/* ---------------------------------------------------------------- output helpers */

static void shape_text(const CkptTensor *t, char *buf, size_t size) {
    size_t o = 0;
    buf[0] = 0;
    for (int d = 0; d < t->ndim && o < size; d++)
        o += (size_t)snprintf(buf + o, size - o, d ? "x%lld" : "%lld", (long long)t->shape[d]);
}

static int64_t tensor_numel(const CkptTensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Problems found while inspecting: printed at the end, and in JSON as "problems". */
typedef struct {
    cJSON *list;
} Problems;

/* Each problem once (the structural check and the tensor table may find the same one). */
static void problem(Problems *p, const char *msg) {
    const cJSON *x;
    cJSON_ArrayForEach(x, p->list) if (!strcmp(x->valuestring, msg)) return;
    cJSON_AddItemToArray(p->list, cJSON_CreateString(msg));
}

/* ---------------------------------------------------------------- history */

typedef struct {
    int64_t n, skips, first_step, last_step, min_step;
    double first_loss, last_loss, min_loss, mean_lr, gn_min, gn_max;
} HistorySummary;

static HistorySummary history_summary(const CkptMeta *m) {
    HistorySummary h = {.n = m->n_history, .first_loss = NAN, .last_loss = NAN, .min_loss = INFINITY,
                        .gn_min = INFINITY, .gn_max = -INFINITY, .mean_lr = NAN};
    double lr_sum = 0;
    int64_t ok = 0;
    for (int64_t i = 0; i < m->n_history; i++) {
        const CkptHistoryRow *r = &m->history[i];
        if (i == 0) h.first_step = r->step;
        h.last_step = r->step;
        if (r->skipped) { h.skips++; continue; }
        if (isnan(h.first_loss)) h.first_loss = r->loss;
        h.last_loss = r->loss;
        if (r->loss < h.min_loss) h.min_loss = r->loss, h.min_step = r->step;
        h.gn_min = fmin(h.gn_min, r->grad_norm), h.gn_max = fmax(h.gn_max, r->grad_norm);
        lr_sum += r->lr, ok++;
    }
    if (ok) h.mean_lr = lr_sum / (double)ok;
    return h;
}

static cJSON *history_json(const HistorySummary *h) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "steps", (double)h->n);
    cJSON_AddNumberToObject(o, "first_step", (double)h->first_step);
    cJSON_AddNumberToObject(o, "last_step", (double)h->last_step);
    cJSON_AddNumberToObject(o, "first_loss", h->first_loss);
    cJSON_AddNumberToObject(o, "last_loss", h->last_loss);
    cJSON_AddNumberToObject(o, "min_loss", h->min_loss);
    cJSON_AddNumberToObject(o, "min_loss_step", (double)h->min_step);
    cJSON_AddNumberToObject(o, "mean_lr", h->mean_lr);
    cJSON_AddNumberToObject(o, "grad_norm_min", h->gn_min);
    cJSON_AddNumberToObject(o, "grad_norm_max", h->gn_max);
    cJSON_AddNumberToObject(o, "skipped", (double)h->skips);
    return o;
}

/* ---------------------------------------------------------------- checkpoint summary */

static void print_layers(const CkptMeta *m) {
    for (int k = 0; k < m->n_npt_layers; k++) printf("%s%d", k ? "," : "", m->npt_layers[k]);
}

static void print_summary(const char *path, const CkptMeta *m, int64_t n_adapter, int64_t n_moment,
                          const HistorySummary *h) {
    printf("checkpoint   %s\n", path);
    printf("format       %s v%d, kind %s, created %s by npt %s\n", CKPT_FORMAT, m->format_version, m->kind, m->created,
           m->npt_version);
    printf("step         %lld, tokens seen %lld\n", (long long)m->step, (long long)m->tokens_seen);
    printf("base model   %s (%s, %s, fingerprint %016llx)\n", m->base_path, m->base_format, m->base_arch,
           (unsigned long long)m->base_fingerprint);
    printf("             dim %d, hidden_dim %d, %d layers, %d heads, %d kv heads, vocab %d\n", m->dim, m->hidden_dim,
           m->n_layers, m->n_heads, m->n_kv_heads, m->vocab_size);
    printf("adapters     rank %d, layers ", m->rank);
    print_layers(m);
    printf(" (%d of %d), %s mode, modulation scale %g\n", m->n_npt_layers, m->n_layers, m->safe_mode ? "safe" : "full",
           m->modulation_scale);
    printf("parameters   %lld trainable, %lld optimizer moment values\n", (long long)n_adapter, (long long)n_moment);
    printf("optimizer    %s (step %lld)\n", m->optimizer[0] ? m->optimizer : "none", (long long)m->opt_step);
    printf("loss         last step %.6g, best interval mean %.6g; %lld skipped in total (%d consecutive at the end)\n", m->last_loss,
           m->best_loss, (long long)m->skipped_total, m->consecutive_skips);
    if (h->n)
        printf("history      %lld steps (%lld..%lld): loss first %.6g, last %.6g, min %.6g at step %lld; mean lr %.3g; "
               "grad norm %.3g..%.3g; %lld skipped\n",
               (long long)h->n, (long long)h->first_step, (long long)h->last_step, h->first_loss, h->last_loss,
               h->min_loss, (long long)h->min_step, h->mean_lr, h->gn_min, h->gn_max, (long long)h->skips);
    else
        printf("history      empty\n");
}

static cJSON *summary_json(const char *path, const CkptMeta *m, int64_t n_adapter, int64_t n_moment) {
    cJSON *o = cJSON_CreateObject(), *b = cJSON_CreateObject(), *a = cJSON_CreateObject();
    char fp[20];
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddStringToObject(o, "format", CKPT_FORMAT);
    cJSON_AddNumberToObject(o, "format_version", m->format_version);
    cJSON_AddStringToObject(o, "kind", m->kind);
    cJSON_AddNumberToObject(o, "step", (double)m->step);
    cJSON_AddNumberToObject(o, "tokens_seen", (double)m->tokens_seen);
    cJSON_AddStringToObject(o, "created", m->created);
    cJSON_AddStringToObject(o, "npt_version", m->npt_version);
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)m->base_fingerprint);
    cJSON_AddStringToObject(b, "path", m->base_path);
    cJSON_AddStringToObject(b, "architecture", m->base_arch);
    cJSON_AddStringToObject(b, "format", m->base_format);
    cJSON_AddStringToObject(b, "fingerprint", fp);
    int dims[6] = {m->dim, m->hidden_dim, m->n_layers, m->n_heads, m->n_kv_heads, m->vocab_size};
    const char *dn[6] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size"};
    for (int i = 0; i < 6; i++) cJSON_AddNumberToObject(b, dn[i], dims[i]);
    cJSON_AddItemToObject(o, "base", b);
    cJSON_AddNumberToObject(a, "rank", m->rank);
    cJSON_AddItemToObject(a, "layers", cJSON_CreateIntArray(m->npt_layers, m->n_npt_layers));
    cJSON_AddBoolToObject(a, "safe_mode", m->safe_mode);
    cJSON_AddNumberToObject(a, "modulation_scale", m->modulation_scale);
    cJSON_AddItemToObject(o, "adapters", a);
    cJSON_AddNumberToObject(o, "trainable_params", (double)n_adapter);
    cJSON_AddNumberToObject(o, "optimizer_moment_values", (double)n_moment);
    cJSON_AddBoolToObject(o, "optimizer_present", m->optimizer[0] && strcmp(m->optimizer, "none") != 0);
    cJSON_AddStringToObject(o, "optimizer", m->optimizer);
    cJSON_AddNumberToObject(o, "optimizer_step", (double)m->opt_step);
    cJSON_AddNumberToObject(o, "last_loss", m->last_loss);
    cJSON_AddNumberToObject(o, "best_loss", m->best_loss);
    cJSON_AddNumberToObject(o, "skipped_total", (double)m->skipped_total);
    cJSON_AddNumberToObject(o, "consecutive_skips", m->consecutive_skips);
    cJSON *recipe = cJSON_Parse(m->recipe_json ? m->recipe_json : "{}");
    cJSON_AddItemToObject(o, "recipe", recipe ? recipe : cJSON_CreateNull());
    return o;
}

static cJSON *tensor_json(const CkptTensor *t, const TensorStats *s, const char *not_read) {
    cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "name", t->name);
    for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
    cJSON_AddItemToObject(o, "shape", shape);
    cJSON_AddStringToObject(o, "dtype", t->dtype);
    cJSON_AddNumberToObject(o, "count", (double)tensor_numel(t));
    cJSON_AddNumberToObject(o, "stored_bytes", (double)t->stored_bytes);
    if (not_read) {
        cJSON_AddBoolToObject(o, "readable", 0);
        cJSON_AddStringToObject(o, "not_read", not_read);
        return o;
    }
    if (s->read_failed) {
        cJSON_AddBoolToObject(o, "readable", 0);
        return o;
    }
    cJSON_AddNumberToObject(o, "min", s->min);
    cJSON_AddNumberToObject(o, "max", s->max);
    cJSON_AddNumberToObject(o, "mean", s->mean);
    cJSON_AddNumberToObject(o, "std", stats_std(s));
    cJSON_AddNumberToObject(o, "nan", (double)s->nan);
    cJSON_AddNumberToObject(o, "inf", (double)s->inf);
    cJSON_AddNumberToObject(o, "beyond_fp16", (double)s->beyond_fp16);
    cJSON_AddNumberToObject(o, "beyond_bf16", (double)s->beyond_bf16);
    return o;
}

static void print_tensor_row(const CkptTensor *t, const TensorStats *s, const char *not_read) {
    char shape[64];
    shape_text(t, shape, sizeof shape);
    if (not_read) {
        printf("%-28s %-9s %-8s  (not read: the file does not hold its values, see the problems below)\n", t->name,
               shape, t->dtype);
        return;
    }
    if (s->read_failed) {
        printf("%-28s %-9s %-8s  (unreadable)\n", t->name, shape, t->dtype);
        return;
    }
    printf("%-28s %-9s %-8s %11.4g %11.4g %11.4g %10.4g %5lld %5lld %6lld %6lld\n", t->name, shape, t->dtype, s->min,
           s->max, s->mean, stats_std(s), (long long)s->nan, (long long)s->inf, (long long)s->beyond_fp16,
           (long long)s->beyond_bf16);
}

/* cJSON indents with tabs and "key":\tvalue; two spaces read better in a terminal. */
static void print_indented(const char *s) {
    for (char prev = 0; *s; prev = *s++) {
        if (*s == '\t') fputs(prev == ':' ? " " : "  ", stdout);
        else putchar(*s);
    }
    putchar('\n');
}

/* The path --plot writes to: the one given, or CKPT.loss.svg. */
static int write_plot(const char *ckpt, const char *plot, int force, const CkptMeta *m, char *out, size_t size,
                      NptErr *err) {
    if (plot && plot[0]) snprintf(out, size, "%s", plot);
    else snprintf(out, size, "%s.loss.svg", ckpt);
    char title[256];
    snprintf(title, sizeof title, "%s: loss (step %lld)", ckpt, (long long)m->step);
    /* a FILE given by name, made while the checkpoint was read, is kept unless --force */
    return runlog_plot_svg(out, m->history, m->n_history, title, plot && plot[0] && !force, err);
}

/* Tensors streamed one by one: the table, the statistics, finiteness problems. */
static void inspect_tensors(CkptFile *f, const char *path, const CkptTensor *t, int n, int json, cJSON *out,
                            Problems *p) {
    cJSON *arr = json ? cJSON_AddArrayToObject(out, "tensors") : NULL;
    if (!json) {
        printf("\ntensors (%d)\n%-28s %-9s %-8s %11s %11s %11s %10s %5s %5s %6s %6s\n", n, "name", "shape", "dtype", "min",
               "max", "mean", "std", "nan", "inf", ">fp16", ">bf16");
    }
    for (int i = 0; i < n; i++) {
        TensorStats s;
        NptErr err;
        char why[400], msg[700];
        /* declared but not in the file (e.g. 2^40 floats never written): reading it would
         * take hours of fill values, so it is reported, never read */
        int unstored = ckpt_tensor_unstored(&t[i], why, sizeof why);
        memset(&s, 0, sizeof s);
        if (unstored) {
            snprintf(msg, sizeof msg, "%s: %s", path, why);
            problem(p, msg);
        } else if (inspect_tensor_stats(f, &t[i], &s, &err)) problem(p, err.msg);
        else if (inspect_value_problem(path, &t[i], &s, msg, sizeof msg)) problem(p, msg);
        if (json) cJSON_AddItemToArray(arr, tensor_json(&t[i], &s, unstored ? why : NULL));
        else print_tensor_row(&t[i], &s, unstored ? why : NULL);
    }
}

static int inspect_checkpoint(const char *path, int json, int want_plot, const char *plot, int force) {
    NptErr err;
    CkptFile *f = ckpt_open(path, &err);
    if (!f) {
        fprintf(stderr, "npt inspect: error: %s\n", err.msg);
        return 1;
    }
    CkptMeta m;
    CkptTensor *t = NULL;
    int n = 0;
    memset(&m, 0, sizeof m);
    if (ckpt_read_meta(f, &m, &err) || ckpt_list_tensors(f, &t, &n, &err)) {
        fprintf(stderr, "npt inspect: error: %s\n", err.msg);
        ckpt_free(&m, t, 0);
        free(t);
        ckpt_close(f);
        return 1;
    }
    Problems p = {cJSON_CreateArray()};
    /* ckpt_validate stops at its first problem (its last check is the history's): a
     * damaged history is listed as well when another problem came first */
    if (ckpt_validate(path, &m, t, n, &err)) {
        problem(&p, err.msg);
        if (ckpt_check_history(path, &m, &err)) problem(&p, err.msg);
    }
    int64_t n_adapter = 0, n_moment = 0;
    for (int i = 0; i < n; i++) {
        if (has_prefix(t[i].name, "optimizer/")) n_moment += tensor_numel(&t[i]);
        else n_adapter += tensor_numel(&t[i]);
    }
    HistorySummary h = history_summary(&m);
    char plot_path[4200] = "", failed_plot[4200] = "";
    NptErr plot_err;
    /* a plot that cannot be written is the command's failure, not one of the checkpoint's
     * problems: the report goes on without it, the error is the last line on stderr */
    if (want_plot && write_plot(path, plot, force, &m, plot_path, sizeof plot_path, &plot_err)) {
        snprintf(failed_plot, sizeof failed_plot, "%s", plot_path);
        plot_path[0] = 0;
    }
    cJSON *out = NULL;
    if (json) {
        out = summary_json(path, &m, n_adapter, n_moment);
        cJSON_AddItemToObject(out, "history", history_json(&h));
        if (plot_path[0]) cJSON_AddStringToObject(out, "plot", plot_path);
    } else {
        print_summary(path, &m, n_adapter, n_moment, &h);
        if (plot_path[0]) printf("plot         %s\n", plot_path);
        cJSON *recipe = cJSON_Parse(m.recipe_json ? m.recipe_json : "{}");
        char *pretty = recipe ? cJSON_Print(recipe) : NULL;
        printf("\nrecipe\n");
        print_indented(pretty ? pretty : (m.recipe_json ? m.recipe_json : "(none)"));
        free(pretty);
        cJSON_Delete(recipe);
    }
    inspect_tensors(f, path, t, n, json, out, &p);
    int n_problems = cJSON_GetArraySize(p.list);
    if (json) {
        cJSON_AddItemToObject(out, "problems", p.list);
        char *s = cJSON_Print(out);
        if (s) puts(s);
        free(s);
        cJSON_Delete(out);
    } else {
        printf("\n%s\n", n_problems ? "PROBLEMS" : "no problems found");
        for (int i = 0; i < n_problems; i++) printf("  %s\n", cJSON_GetArrayItem(p.list, i)->valuestring);
        cJSON_Delete(p.list);
    }
    ckpt_free(&m, t, n);
    ckpt_close(f);
    /* the write's error names a missing directory itself (npt_temp_path) */
    if (failed_plot[0]) fprintf(stderr, "npt inspect: error: cannot write the plot %s: %s\n", failed_plot, plot_err.msg);
    return n_problems || failed_plot[0] ? 1 : 0;
}

/* ---------------------------------------------------------------- diff */

typedef struct {
    double max_abs, diff2, a2;
    int64_t matched;   /* pairs equal but not finite (NaN and NaN, or the same Inf): left out of both norms */
    int64_t unmatched; /* places where one side alone is not finite: ||a-b||/||a|| is then NaN */
} TensorDiff;

/* Equal as a file holds them: NaN equals NaN. */
static int same_f64(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

/* One pair of values into d. A matched non-finite pair is equal (NaN equals NaN, so a file
 * compared with itself is identical) but has no place in the norms: it would make ||a||
 * NaN or Inf and the ratio meaningless. */
static void diff_add(TensorDiff *d, double x, double y) {
    int same = same_f64(x, y);
    if (same && !isfinite(x)) {
        d->matched++;
        return;
    }
    double e = same ? 0.0 : fabs(x - y);
    if (!isnan(d->max_abs) && !(e <= d->max_abs)) d->max_abs = e; /* a NaN on one side sticks */
    if (!isfinite(x) || !isfinite(y)) {
        d->unmatched++;
        return;
    }
    d->diff2 += e * e, d->a2 += x * x;
}

/* ||a-b|| / ||a|| over the finite pairs; NaN when one side alone holds a NaN or Inf
 * somewhere (no ratio describes that), Inf when a is all zeros and b is not. */
static double diff_rel(const TensorDiff *d) {
    if (d->unmatched) return NAN;
    return d->a2 > 0 ? sqrt(d->diff2 / d->a2) : (d->diff2 > 0 ? INFINITY : 0);
}

static int diff_tensor(CkptFile *fa, CkptFile *fb, const CkptTensor *ta, const CkptTensor *tb, TensorDiff *d,
                       NptErr *err) {
    memset(d, 0, sizeof *d);
    int64_t row = inspect_row_size(ta), block = inspect_block_rows(ta);
    size_t cap = (size_t)(block * row > 0 ? block * row : 1);
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    int rc = 0;
    if (!a || !b) rc = npt_fail(err, "out of memory comparing tensor /%s", ta->name);
    for (int64_t r = 0; rc == 0 && r < ta->shape[0]; r += block) {
        int64_t nr = ta->shape[0] - r < block ? ta->shape[0] - r : block;
        if (ckpt_read_rows(fa, ta, r, nr, a, err) || ckpt_read_rows(fb, tb, r, nr, b, err)) rc = -1;
        for (int64_t i = 0; rc == 0 && i < nr * row; i++) diff_add(d, a[i], b[i]);
    }
    free(a);
    free(b);
    return rc;
}

/* What the row's numbers leave out, for the reader; "" when nothing. */
static void diff_note(const TensorDiff *d, char *buf, size_t size) {
    if (d->unmatched)
        snprintf(buf, size, "%lld NaN/Inf in one file only: ||a-b||/||a|| is undefined", (long long)d->unmatched);
    else if (d->matched)
        snprintf(buf, size, "%lld NaN/Inf in both at the same place, left out of the norms", (long long)d->matched);
    else
        buf[0] = 0;
}

static int same_shape(const CkptTensor *a, const CkptTensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* Leaves of two JSON trees that differ, as "path: a -> b" strings appended to out. */
static void json_diff(const cJSON *a, const cJSON *b, const char *prefix, cJSON *out) {
    char buf[1024];
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, a) {
            snprintf(buf, sizeof buf, "%s%s%s", prefix, prefix[0] ? "." : "", x->string);
            json_diff(x, cJSON_GetObjectItemCaseSensitive(b, x->string), buf, out);
        }
        cJSON_ArrayForEach(x, b) if (!cJSON_GetObjectItemCaseSensitive(a, x->string)) {
            snprintf(buf, sizeof buf, "%s%s%s", prefix, prefix[0] ? "." : "", x->string);
            json_diff(NULL, x, buf, out);
        }
        return;
    }
    if (a && b && cJSON_Compare(a, b, 1)) return;
    char *sa = a ? cJSON_PrintUnformatted(a) : NULL, *sb = b ? cJSON_PrintUnformatted(b) : NULL;
    snprintf(buf, sizeof buf, "%s: %s -> %s", prefix, sa ? sa : "(absent)", sb ? sb : "(absent)");
    cJSON_AddItemToArray(out, cJSON_CreateString(buf));
    free(sa);
    free(sb);
}

static void add_difference(cJSON *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_difference(cJSON *out, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(out, cJSON_CreateString(buf));
}

/* "[v0, v1, ...]", cut short with "..." if it does not fit. */
static void i64_list(const int64_t *v, int n, char *buf, size_t size) {
    size_t o = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < n && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (o < size) snprintf(buf + o, size - o, "]");
    else if (size > 4) memcpy(buf + size - 4, "...", 4);
}

static int same_row(const CkptHistoryRow *x, const CkptHistoryRow *y) {
    return x->step == y->step && x->skipped == y->skipped && same_f64(x->loss, y->loss) && same_f64(x->nmse, y->nmse) &&
           same_f64(x->reg, y->reg) && same_f64(x->lr, y->lr) && same_f64(x->grad_norm, y->grad_norm);
}

/* Checkpoint-level fields that differ (besides the recipe), into out: identity, adapter
 * configuration and everything --resume restores. */
static void meta_diff(const CkptMeta *a, const CkptMeta *b, cJSON *out) {
#define DIFF_NUM(name, field, fmt, cast)                                                                       \
    if (a->field != b->field) add_difference(out, "%s: " fmt " -> " fmt, name, (cast)a->field, (cast)b->field);
#define DIFF_F64(name, field)                                                                                  \
    if (!same_f64(a->field, b->field)) add_difference(out, "%s: %.6g -> %.6g", name, a->field, b->field);
#define DIFF_STR(name, field)                                                                                  \
    if (strcmp(a->field, b->field)) add_difference(out, "%s: %s -> %s", name, a->field, b->field);
    DIFF_NUM("step", step, "%lld", long long)
    DIFF_NUM("tokens_seen", tokens_seen, "%lld", long long)
    DIFF_STR("kind", kind)
    DIFF_NUM("format_version", format_version, "%d", int)
    DIFF_STR("base path", base_path)
    DIFF_STR("base format", base_format)
    DIFF_STR("base architecture", base_arch)
    DIFF_NUM("base_fingerprint", base_fingerprint, "%016llx", unsigned long long)
    DIFF_NUM("base dim", dim, "%d", int)
    DIFF_NUM("base hidden_dim", hidden_dim, "%d", int)
    DIFF_NUM("base n_layers", n_layers, "%d", int)
    DIFF_NUM("base n_heads", n_heads, "%d", int)
    DIFF_NUM("base n_kv_heads", n_kv_heads, "%d", int)
    DIFF_NUM("base vocab_size", vocab_size, "%d", int)
    DIFF_F64("base norm_eps", norm_eps)
    DIFF_F64("base rope_theta", rope_theta)
    DIFF_NUM("rank", rank, "%d", int)
    DIFF_NUM("safe_mode", safe_mode, "%d", int)
    DIFF_F64("modulation_scale", modulation_scale)
    DIFF_NUM("n_npt_layers", n_npt_layers, "%d", int)
    char la[480], lb[480]; /* two of them fit add_difference's line */
    if (a->n_npt_layers == b->n_npt_layers &&
        memcmp(a->npt_layers, b->npt_layers, (size_t)a->n_npt_layers * sizeof a->npt_layers[0])) {
        int64_t x[CKPT_MAX_LAYERS], y[CKPT_MAX_LAYERS];
        for (int i = 0; i < a->n_npt_layers; i++) x[i] = a->npt_layers[i], y[i] = b->npt_layers[i];
        i64_list(x, a->n_npt_layers, la, sizeof la), i64_list(y, b->n_npt_layers, lb, sizeof lb);
        add_difference(out, "adapter layers: %s -> %s", la, lb);
    }
    DIFF_STR("optimizer", optimizer)
    DIFF_NUM("optimizer step", opt_step, "%lld", long long)
    if (memcmp(a->rng_state, b->rng_state, sizeof a->rng_state))
        add_difference(out, "rng: [%llu, %llu, %llu, %llu] -> [%llu, %llu, %llu, %llu]",
                        (unsigned long long)a->rng_state[0], (unsigned long long)a->rng_state[1],
                        (unsigned long long)a->rng_state[2], (unsigned long long)a->rng_state[3],
                        (unsigned long long)b->rng_state[0], (unsigned long long)b->rng_state[1],
                        (unsigned long long)b->rng_state[2], (unsigned long long)b->rng_state[3]);
    if (a->n_data_cursor != b->n_data_cursor ||
        memcmp(a->data_cursor, b->data_cursor, (size_t)a->n_data_cursor * sizeof a->data_cursor[0])) {
        i64_list(a->data_cursor, a->n_data_cursor, la, sizeof la), i64_list(b->data_cursor, b->n_data_cursor, lb, sizeof lb);
        add_difference(out, "data_cursor: %s -> %s", la, lb);
    }
    DIFF_NUM("skipped_total", skipped_total, "%lld", long long)
    DIFF_NUM("consecutive_skips", consecutive_skips, "%d", int)
    DIFF_F64("last_loss", last_loss)
    DIFF_F64("best_loss", best_loss)
#undef DIFF_NUM
#undef DIFF_F64
#undef DIFF_STR
    if (a->n_history != b->n_history) {
        add_difference(out, "history: %lld rows -> %lld rows", (long long)a->n_history, (long long)b->n_history);
    } else {
        for (int64_t i = 0; i < a->n_history; i++)
            if (!same_row(&a->history[i], &b->history[i])) {
                add_difference(out, "history: %lld rows, differing from row %lld (step %lld -> %lld, loss %.6g -> %.6g)",
                                (long long)a->n_history, (long long)i, (long long)a->history[i].step,
                                (long long)b->history[i].step, a->history[i].loss, b->history[i].loss);
                break;
            }
    }
}

static int inspect_diff(const char *pa, const char *pb, int json) {
    NptErr err;
    CkptFile *fa = ckpt_open(pa, &err), *fb = fa ? ckpt_open(pb, &err) : NULL;
    CkptMeta ma, mb;
    CkptTensor *ta = NULL, *tb = NULL;
    int na = 0, nb = 0;
    memset(&ma, 0, sizeof ma);
    memset(&mb, 0, sizeof mb);
    int rc = 2;
    /* a damaged checkpoint is an error (it says what is wrong), never a list of differences */
    if (!fa || !fb || ckpt_read_meta(fa, &ma, &err) || ckpt_read_meta(fb, &mb, &err) ||
        ckpt_list_tensors(fa, &ta, &na, &err) || ckpt_list_tensors(fb, &tb, &nb, &err) ||
        ckpt_validate(pa, &ma, ta, na, &err) || ckpt_validate(pb, &mb, tb, nb, &err)) {
        fprintf(stderr, "npt inspect diff: error: %s\n", err.msg);
        goto done;
    }
    cJSON *out = cJSON_CreateObject(), *config = cJSON_AddArrayToObject(out, "differences");
    cJSON *tens = cJSON_AddArrayToObject(out, "tensors");
    cJSON_AddStringToObject(out, "a", pa);
    cJSON_AddStringToObject(out, "b", pb);
    cJSON_AddNumberToObject(out, "step_a", (double)ma.step);
    cJSON_AddNumberToObject(out, "step_b", (double)mb.step);
    meta_diff(&ma, &mb, config);
    cJSON *ra = cJSON_Parse(ma.recipe_json ? ma.recipe_json : "{}"), *rb = cJSON_Parse(mb.recipe_json ? mb.recipe_json : "{}");
    json_diff(ra, rb, "recipe", config);
    cJSON_Delete(ra);
    cJSON_Delete(rb);
    int differ = cJSON_GetArraySize(config) > 0, failed = 0;
    if (!json) {
        printf("a: %s (step %lld)\nb: %s (step %lld)\n", pa, (long long)ma.step, pb, (long long)mb.step);
        printf("\n%-28s %-9s %12s %12s\n", "tensor", "shape", "max |a-b|", "||a-b||/||a||");
    }
    for (int i = 0; i < na; i++) {
        const CkptTensor *y = ckpt_find(tb, nb, ta[i].name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", ta[i].name);
        char shape[64];
        shape_text(&ta[i], shape, sizeof shape);
        TensorDiff d;
        const char *why = !y ? "only in a" : !same_shape(&ta[i], y) ? "shapes differ" : NULL;
        /* diff_tensor refuses a tensor a file does not hold (ckpt_read_rows), before any read */
        if (!why && diff_tensor(fa, fb, &ta[i], y, &d, &err)) why = err.msg, failed = 1;
        if (why) {
            differ = 1;
            cJSON_AddStringToObject(o, "status", why);
            if (!json) printf("%-28s %-9s %s\n", ta[i].name, shape, why);
        } else {
            double rel = diff_rel(&d);
            char note[160];
            diff_note(&d, note, sizeof note);
            differ |= d.max_abs != 0;
            cJSON_AddNumberToObject(o, "max_abs_diff", d.max_abs); /* NaN and Inf print as null */
            cJSON_AddNumberToObject(o, "rel_norm_diff", rel);
            if (d.matched) cJSON_AddNumberToObject(o, "nonfinite_in_both", (double)d.matched);
            if (d.unmatched) cJSON_AddNumberToObject(o, "nonfinite_in_one", (double)d.unmatched);
            if (note[0]) cJSON_AddStringToObject(o, "note", note);
            if (!json) printf("%-28s %-9s %12.4g %12.4g%s%s%s\n", ta[i].name, shape, d.max_abs, rel, note[0] ? "  (" : "", note,
                              note[0] ? ")" : "");
        }
        cJSON_AddItemToArray(tens, o);
    }
    for (int i = 0; i < nb; i++)
        if (!ckpt_find(ta, na, tb[i].name)) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", tb[i].name);
            cJSON_AddStringToObject(o, "status", "only in b");
            cJSON_AddItemToArray(tens, o);
            if (!json) printf("%-28s %-9s only in b\n", tb[i].name, "");
            differ = 1;
        }
    if (json) {
        cJSON_AddBoolToObject(out, "identical", !differ);
        char *s = cJSON_Print(out);
        if (s) puts(s);
        free(s);
    } else {
        int nd = cJSON_GetArraySize(config);
        printf("\n%s\n", nd ? "differences" : "no config or state differences");
        for (int i = 0; i < nd; i++) printf("  %s\n", cJSON_GetArrayItem(config, i)->valuestring);
        printf("%s\n", differ ? "checkpoints differ" : "checkpoints are identical");
    }
    cJSON_Delete(out);
    rc = failed ? 2 : differ ? 1 : 0;
done:
    ckpt_free(&ma, ta, na);
    ckpt_free(&mb, tb, nb);
    ckpt_close(fa);
    ckpt_close(fb);
    return rc;
}

/* ---------------------------------------------------------------- entry */

int cmd_inspect(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "verify")) return inspect_verify(argc - 1, argv + 1);
    int diff = argc >= 2 && !strcmp(argv[1], "diff");
    const char *files[2] = {NULL, NULL}, *plot = NULL;
    int n_files = 0, json = 0, want_plot = 0, force = 0;
    for (int i = diff ? 2 : 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(inspect_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (!strcmp(argv[i], "--plot")) {
            want_plot = 1;
            size_t len = i + 1 < argc ? strlen(argv[i + 1]) : 0;
            if (len > 4 && !strcmp(argv[i + 1] + len - 4, ".svg")) plot = argv[++i];
        } else if (!strncmp(argv[i], "--plot=", 7)) {
            want_plot = 1;
            plot = argv[i] + 7;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "npt inspect: error: unknown option '%s' (see npt inspect --help)\n", argv[i]);
            return 2;
        } else if (n_files < (diff ? 2 : 1)) {
            files[n_files++] = argv[i];
        } else {
            fprintf(stderr, "npt inspect: error: unexpected argument '%s' (see npt inspect --help)\n", argv[i]);
            return 2;
        }
    }
    if (n_files < (diff ? 2 : 1)) {
        fprintf(stderr, "npt inspect: error: %s (see npt inspect --help)\n",
                diff ? "diff needs two checkpoints: npt inspect diff A.h5 B.h5" : "give a checkpoint or a model file");
        return 2;
    }
    if ((diff && want_plot) || (force && (!plot || !plot[0]))) {
        fprintf(stderr, "npt inspect: error: %s (see npt inspect --help)\n",
                diff && want_plot ? "--plot is for one checkpoint, not diff" : "--force only goes with --plot=FILE.svg");
        return 2;
    }
    if (diff) return inspect_diff(files[0], files[1], json);
    /* a model directory is fine; a file must be a regular one (reading a pipe would block) */
    struct stat st;
    NptErr err;
    if (refuse_missing_input(files[0], "give a checkpoint, or a model file or directory", "inspect")) return 1;
    if (stat(files[0], &st) == 0 && !S_ISDIR(st.st_mode) && npt_check_input(files[0], "checkpoint or model", &err)) {
        fprintf(stderr, "npt inspect: error: %s\n", err.msg);
        return 1;
    }
    if (plot && plot[0] && (refuse_output_over_inputs(plot, "--plot", files, 1, "inspect") ||
                            refuse_existing_output(plot, "--plot", force, "inspect")))
        return 1;
    /* an npt checkpoint is an HDF5 file; anything else is treated as a model */
    if (npt_file_is_hdf5(files[0], NULL, NULL) == 1) return inspect_checkpoint(files[0], json, want_plot, plot, force);
    if (want_plot) {
        fprintf(stderr, "npt inspect: error: --plot needs a checkpoint; %s is not one\n", files[0]);
        return 2;
    }
    return inspect_model(files[0], json);
}
