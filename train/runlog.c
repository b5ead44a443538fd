/* train/runlog.c — status line, metrics.jsonl and the loss plot (see runlog.h). */
#include "runlog.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/atomic_file.h"

/* the longest row_fields: six keys, five numbers of at most 17 characters, two integers */
#define ROW_FIELDS_MAX 256

int runlog_open(RunLog *r, const char *metrics_path, int append, int64_t first_step, NptErr *err) {
    memset(r, 0, sizeof *r);
    if (append) { /* a new run's file was refused if it existed; a resumed run's is its own */
        r->metrics = npt_fopen_append(metrics_path, "metrics log", err);
        if (!r->metrics) return -1;
    } else {
        r->metrics = fopen(metrics_path, "w");
        if (!r->metrics) return npt_fail(err, "cannot write %s: %s", metrics_path, strerror(errno));
    }
    r->is_tty = isatty(fileno(stderr));
    r->t_start = npt_now_seconds();
    r->first_step = first_step;
    return 0;
}

void runlog_open_quiet(RunLog *r) {
    memset(r, 0, sizeof *r);
    r->quiet = 1;
}

void runlog_close(RunLog *r) {
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
}

/* A row's line up to its tokens, {"step":N,...,"skipped":K: what the history holds of it.
 * One spelling for the writer and for matching a log's lines to the history on resume. */
static void row_fields(char *buf, size_t cap, const CkptHistoryRow *row) {
    static const char *const keys[] = {"loss", "fidelity", "reg", "lr", "grad_norm"};
    const double v[] = {row->loss, row->nmse, row->reg, row->lr, row->grad_norm};
    size_t o = (size_t)snprintf(buf, cap, "{\"step\":%lld", (long long)row->step);
    for (size_t k = 0; k < NPT_ARRAY_LEN(keys) && o < cap; k++) /* JSON has no NaN: null */
        o += (size_t)npt_json_number_str(buf + o, cap - o, keys[k], v[k]);
    if (o < cap) snprintf(buf + o, cap - o, ",\"skipped\":%d", row->skipped);
}

void runlog_metrics(RunLog *r, const CkptHistoryRow *row, int64_t tokens_seen) {
    if (r->quiet) return;
    char fields[ROW_FIELDS_MAX];
    row_fields(fields, sizeof fields, row);
    fprintf(r->metrics, "%s,\"tokens\":%lld,\"time\":%.3f}\n", fields, (long long)tokens_seen,
            npt_now_seconds() - r->t_start);
    fflush(r->metrics);
}

/* Rewrites path with the lines keep() accepts (line i, 0-based), atomically: temp file,
 * then rename. A file not written yet is fine. */
static int keep_lines_where(const char *path, int (*keep)(const char *line, int64_t i, int64_t arg), int64_t arg,
                            NptErr *err) {
    FILE *in;
    int open_rc = npt_fopen_input(path, "metrics log", &in, err); /* a pipe there would block the resume */
    if (open_rc) return open_rc == -2 ? -1 : 0;
    NptAtomicFile o;
    FILE *out = npt_atomic_open(&o, path, err);
    if (!out) {
        fclose(in);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    for (int64_t i = 0; getline(&line, &cap, in) > 0; i++)
        if (keep(line, i, arg)) fputs(line, out);
    free(line);
    fclose(in);
    return npt_atomic_commit(&o, err);
}

static int step_at_most(const char *line, int64_t i, int64_t last_step) {
    long long step;
    return (void)i, sscanf(line, "{\"step\":%lld", &step) == 1 && step <= last_step;
}

/* Moves *line on through src (*have 0 at its end, or with no src) past lines that are no
 * row and lines of steps before `step`: a log an older npt rewound may hold steps twice
 * (redone after a resume), and a row is matched with the first line of its step ahead. */
static void next_line_from(FILE *src, char **line, size_t *cap, int64_t step, int *have) {
    long long s;
    while (*have && (sscanf(*line, "{\"step\":%lld", &s) != 1 || s < step))
        *have = getline(line, cap, src) > 0;
}

/* Whether a log line is the complete line of the row whose fields are `fields`. */
static int line_is_row(const char *line, const char *fields) {
    size_t n = strlen(fields), len = strlen(line);
    return !strncmp(line, fields, n) && line[n] == ',' && len > 0 && line[len - 1] == '\n';
}

int runlog_restore_metrics(const char *path, const char *source, const CkptHistoryRow *rows, int64_t n, NptErr *err) {
    FILE *src = NULL;
    if (npt_fopen_input(source, "metrics log", &src, err) == -2) return -1; /* a pipe would block the resume */
    NptAtomicFile o;
    FILE *out = npt_atomic_open(&o, path, err);
    if (!out) {
        if (src) fclose(src);
        return -1;
    }
    char *line = NULL, fields[ROW_FIELDS_MAX];
    size_t cap = 0;
    int have = src && getline(&line, &cap, src) > 0;
    for (int64_t i = 0; i < n; i++) {
        row_fields(fields, sizeof fields, &rows[i]);
        next_line_from(src, &line, &cap, rows[i].step, &have);
        if (have && line_is_row(line, fields)) { /* the logged line, with its tokens and time */
            fputs(line, out);
            have = getline(&line, &cap, src) > 0;
        } else {
            fprintf(out, "%s,\"tokens\":null,\"time\":null}\n", fields);
        }
    }
    free(line);
    if (src) fclose(src);
    return npt_atomic_commit(&o, err);
}

int runlog_trim_after_step(const char *path, int64_t last_step, NptErr *err) {
    return keep_lines_where(path, step_at_most, last_step, err);
}

static void clear_status(RunLog *r) {
    if (r->status_shown) fputs("\r\033[K", stderr);
    r->status_shown = 0;
}

void runlog_say(RunLog *r, const char *fmt, ...) {
    if (r->quiet) return;
    clear_status(r);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void runlog_status(RunLog *r, const CkptHistoryRow *row, int64_t max_steps, int64_t skipped_total, int final_line) {
    if (r->quiet) return;
    double dt = npt_now_seconds() - r->t_start;
    int64_t done = row->step - r->first_step;
    double tok_s = dt > 0 ? r->tokens_session / dt : 0.0;
    double eta = done > 0 ? dt / done * (max_steps - row->step) : 0.0;
    char line[256];
    snprintf(line, sizeof line,
             "step %lld/%lld | loss %.4g | fid %.4g | reg %.3g | lr %.2e | gnorm %.3g | %.0f tok/s | skips %lld | ETA %d:%02d",
             (long long)row->step, (long long)max_steps, row->loss, row->nmse, row->reg, row->lr, row->grad_norm, tok_s,
             (long long)skipped_total, (int)(eta / 60), (int)fmod(eta, 60));
    if (r->is_tty && !final_line) {
        fprintf(stderr, "\r\033[K%s", line);
        r->status_shown = 1;
    } else {
        clear_status(r);
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

int runlog_plot_svg(const char *path, const CkptHistoryRow *rows, int64_t n, const char *title, int no_replace,
                    NptErr *err) {
    const int W = 800, H = 420, L = 70, R = 20, TOP = 40, B = 50;
    double lo = INFINITY, hi = -INFINITY;
    /* steps in double: the history of a damaged file can hold any int64, and no
     * difference of two of them may overflow */
    double smin = 0, smax = 1;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || (double)rows[i].step < smin) smin = (double)rows[i].step;
        if ((double)rows[i].step > smax) smax = (double)rows[i].step;
        if (rows[i].skipped || !(rows[i].loss > 0) || !isfinite(rows[i].loss)) continue;
        lo = fmin(lo, log10(rows[i].loss));
        hi = fmax(hi, log10(rows[i].loss));
    }
    if (!isfinite(lo)) lo = -1, hi = 0;
    if (hi - lo < 1e-3) hi = lo + 1;
    if (smax <= smin) smax = smin + 1 + fabs(smin) * 1e-12; /* + 1 alone is lost beyond 2^53 */
    NptAtomicFile o;
    FILE *f = npt_atomic_open(&o, path, err);
    if (!f) return -1;
    o.no_replace = no_replace;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"22\" font-size=\"15\">%s</text>\n", L, title);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>\n", L, TOP, W - L - R, H - TOP - B);
    for (int k = 0; k <= 4; k++) { /* y ticks on the log scale */
        double v = lo + (hi - lo) * k / 4.0;
        int y = TOP + (int)((H - TOP - B) * (1.0 - k / 4.0));
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#eee\"/><text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3g</text>\n",
                L, W - R, y, y, L - 5, y + 4, pow(10.0, v));
        double s = floor(smin + (smax - smin) * k / 4.0);
        int x = L + (int)((double)(W - L - R) * k / 4.0);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x, H - B + 18, s);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 12);
    fprintf(f, "<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">loss (log scale)</text>\n", (TOP + H - B) / 2, (TOP + H - B) / 2);
    fputs("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"", f);
    for (int64_t i = 0; i < n; i++) {
        if (rows[i].skipped || !(rows[i].loss > 0) || !isfinite(rows[i].loss)) continue;
        double x = L + (double)(W - L - R) * ((double)rows[i].step - smin) / (smax - smin);
        double y = TOP + (H - TOP - B) * (1.0 - (log10(rows[i].loss) - lo) / (hi - lo));
        fprintf(f, "%.1f,%.1f ", x, y);
    }
    fputs("\"/>\n", f);
    int64_t skips = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!rows[i].skipped) continue;
        skips++;
        double x = L + (double)(W - L - R) * ((double)rows[i].step - smin) / (smax - smin);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#d62728\" stroke-dasharray=\"3,2\"/>\n", x, x, TOP, H - B);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#d62728\">%lld skipped batch%s (red)</text>\n", W - R, TOP - 8,
            (long long)skips, skips == 1 ? "" : "es");
    fputs("</svg>\n", f);
    return npt_atomic_commit(&o, err);
}
