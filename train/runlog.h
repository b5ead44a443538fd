/* train/runlog.h — what a run shows and records: a live status line on a terminal
 * (plain lines when piped), one metrics.jsonl line per optimizer step, and a
 * loss-curve image (SVG) beside the checkpoints. */
#ifndef NPT_RUNLOG_H
#define NPT_RUNLOG_H

#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"

typedef struct {
    FILE *metrics;      /* metrics.jsonl, appended to on resume */
    int is_tty;
    int status_shown;   /* a status line is on screen and must be cleared before a log line */
    double t_start;
    int64_t first_step; /* step the session started at (resume), for tokens/s and ETA */
    int64_t tokens_session;
    int quiet;          /* ranks other than 0 of an MPI run: no file, nothing printed */
} RunLog;

int runlog_open(RunLog *r, const char *metrics_path, int append, int64_t first_step, NptErr *err);
/* A RunLog that writes and prints nothing (runlog_close is still fine). */
void runlog_open_quiet(RunLog *r);
void runlog_close(RunLog *r);
/* One optimizer step (or skip) into metrics.jsonl. */
void runlog_metrics(RunLog *r, const CkptHistoryRow *row, int64_t tokens_seen);
/* On resume: rewrites path (atomically) to one line per row of the checkpoint's history,
 * in order, skipped rows included, and nothing of the steps that will be redone. A row's
 * line is taken from source when source holds it (matched in order on every field but
 * tokens and time, which come along), else written from the history with tokens and time
 * null. source is path itself for a run resumed in its own directory, and the log of the
 * checkpoint's directory for one rewound into a new output_dir, which so starts with the
 * run's rows from its first step. A missing source is no error. */
int runlog_restore_metrics(const char *path, const char *source, const CkptHistoryRow *rows, int64_t n, NptErr *err);
/* The same for a log whose lines start {"step":N (eval.jsonl): keeps the lines with
 * N <= last_step, so a resumed run does not list a step twice. */
int runlog_trim_after_step(const char *path, int64_t last_step, NptErr *err);
/* The status line (terminal) or a plain line (pipe). */
void runlog_status(RunLog *r, const CkptHistoryRow *row, int64_t max_steps, int64_t skipped_total, int final_line);
/* A message line that does not fight with the status line. */
void runlog_say(RunLog *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Loss curve (log scale) with skipped steps marked, written atomically as SVG;
 * no_replace: a path that appears while it is written is kept (npt_rename_durable). */
int runlog_plot_svg(const char *path, const CkptHistoryRow *rows, int64_t n, const char *title, int no_replace,
                    NptErr *err);

#endif
