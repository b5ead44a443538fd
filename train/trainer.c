/* train/trainer.c — the training loop (SPEC section 4).
 *
 * One optimizer step = grad_accum micro-batches. A step whose loss or gradient norm is
 * not finite is skipped: gradients are dropped, and neither parameters, moments nor
 * the schedule move; only the data cursor does. After max_consecutive_skips in a row
 * the run saves its (still good) state and stops with exit code 3. Checkpoints carry
 * everything a resumed run needs to continue bit for bit: adapters, moments, step,
 * data cursor, history. */
#include "trainer.h"
#include "../util/path.h"
#include "../util/shared_map.h"
#include "../util/stop.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../data/dataset.h"
#include "../model/debug.h"
#include "../model/npt.h"
#include "../optim/optim.h"
#include "adapters.h"
#include "checkpoint.h"
#include "dist.h"
#include "eval.h"
#include "objective.h"
#include "recipe.h"
#include "runlog.h"

typedef struct {
    Recipe r;
    LlamaModel model;
    Tokenizer *tok;
    Dataset data;
    NptModel npt;
    int have_npt;
    Optimizer opt;
    float *params, *grads; /* what the optimizer updates: adapters, or all weights */
    size_t n_params;
    Schedule sched;
    ObjectiveConfig oc;
    ObjectiveRunner runner; /* graphs and arenas of a micro-batch, split into shards */
    TeacherCache cache;    /* train.teacher_cache_gb > 0: the teacher's states of seen windows */
    int cache_reported;    /* the cache's failure has been logged */
    int cache_full_reported; /* the cache stopping short of its size has been logged */
    int dir_fd;            /* output_dir, opened by lock_output_dir (locked where the file system can), -1 if not */
    struct stat dir_id;    /* dir_fd's device and inode: what output_dir must still name (output_dir_moved) */
    CkptMeta meta;         /* training state carried in checkpoints */
    int64_t history_cap;
    RunLog log;
    char *recipe_json;
    int *tokens;           /* [grad_accum * B * T]: every micro-batch of the current step */
    int *eval_tokens;      /* eval.every: [eval_n * T] validation windows */
    int eval_n;
    int64_t *sample_ids;
    int debug_reports;     /* debug_on_skip reports written by this process */
    int64_t *poison, n_poison, *poison_grads, n_poison_grads, *drop, n_drop; /* test hooks, see parse_index_list */
    int64_t *nudge, n_nudge; /* test hook: NPT_TEST_NUDGE_AFTER_STEPS, see parse_index_list */
    int64_t *fail_reads, n_fail_reads; /* test hook: NPT_TEST_FAIL_READS */
    int64_t *fail_best, n_fail_best;   /* test hook: NPT_TEST_FAIL_BEST */
    int64_t batches_drawn;
    const char *recipe_arg; /* the recipe as the user named it, for the resume hint */
    int64_t saved_step;     /* step of the state in saved_path: written or resumed from here (-1: none) */
    char saved_path[4300];
} Trainer;

/* An MPI run's setup errors of ranks other than 0, held until ranks_agree: every rank
 * runs the same checks on the same files, so a recipe or model error would otherwise be
 * printed once per rank. It is printed only when rank 0 did not fail too. */
static char deferred_error[4096];
static int defer_errors;

/* One "npt train: error:" line, naming the rank in an MPI run past rank 0. */
static void print_error(const char *msg) {
    if (dist_rank() > 0) fprintf(stderr, "npt train: error: rank %d of %d: %s\n", dist_rank(), dist_world(), msg);
    else fprintf(stderr, "npt train: error: %s\n", msg);
}

/* Prints (or, during an MPI run's setup, defers) an error line; returns 1 so callers can
 * `return fail(...)`. */
static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (dist_rank() > 0 && defer_errors) {
        size_t used = strlen(deferred_error);
        snprintf(deferred_error + used, sizeof deferred_error - used, "%s%s", used ? "; " : "", msg);
    } else {
        print_error(msg);
    }
    return 1;
}

/* Information lines (not errors) come from rank 0 alone. */
static void __attribute__((format(printf, 1, 2))) inform(const char *fmt, ...) {
    if (dist_rank() > 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* Ends a setup phase the same way on every rank of an MPI run: if any rank failed, all
 * return non-zero (none may go on to wait in a collective the others never reach). A
 * rank's own error is printed here when rank 0 did not fail; rank 0 points to it. */
static int ranks_agree(int rc) {
    int W = dist_world(), me = dist_rank(), first_failed = -1;
    if (W == 1) return rc;
    uint64_t *failed = npt_xmalloc((size_t)W * sizeof(uint64_t), "rank outcomes");
    dist_gather_u64(rc != 0, failed);
    for (int r = W - 1; r >= 0; r--)
        if (failed[r]) first_failed = r;
    int root_failed = failed[0] != 0;
    free(failed);
    if (first_failed < 0) return 0;
    if (me > 0 && rc && !root_failed) print_error(deferred_error);
    if (me == 0 && !rc)
        fprintf(stderr, "npt train: error: rank %d of %d failed to set up (its error is above); the job stops\n",
                first_failed, W);
    deferred_error[0] = 0;
    return rc ? rc : 1;
}

/* Comma-separated list of micro-batch indices (0-based, in the order drawn) from an
 * environment variable. Test hooks: NPT_TEST_POISON_BATCHES makes those batches
 * non-finite, NPT_TEST_POISON_GRADS makes only their gradients non-finite (the loss
 * stays finite), NPT_TEST_DROP_BATCHES removes them from the stream. In an MPI run,
 * NPT_TEST_NUDGE_AFTER_STEPS (step numbers, given to one rank) changes that rank's first
 * parameter after those steps, as a bug that made the ranks diverge would.
 * NPT_TEST_FAIL_READS makes reading those batches fail, as a file that vanished or
 * shrank mid-run would (given to one rank of an MPI run, that rank alone).
 * NPT_TEST_FAIL_BEST (step numbers) fails the write of best.h5 at those steps, as a
 * full disk or a kill at that moment would. */
static int64_t *parse_index_list(const char *env, int64_t *count) {
    const char *s = getenv(env);
    *count = 0;
    if (!s || !*s) return NULL;
    int64_t *list = npt_xcalloc(strlen(s) + 1, sizeof(int64_t), env);
    for (char *end; *s; s = *end ? end + 1 : end) list[(*count)++] = strtoll(s, &end, 10);
    return list;
}

static int in_list(const int64_t *list, int64_t n, int64_t v) {
    for (int64_t i = 0; i < n; i++)
        if (list[i] == v) return 1;
    return 0;
}

/* eval.every: the first eval.windows validation windows, read once; every periodic eval
 * sees the same ones, so its figures are comparable across steps. There is at least one:
 * the recipe refuses eval.every without a split, and a split holds a window or fails. */
static int load_eval_windows(Trainer *t) {
    NptErr err;
    int T = t->r.data.seq_len;
    uint64_t n_valid = dataset_n_valid(&t->data);
    t->eval_n = n_valid < (uint64_t)t->r.eval.windows ? (int)n_valid : t->r.eval.windows;
    t->eval_tokens = npt_try_malloc((size_t)t->eval_n * T * sizeof(int), "eval windows", &err);
    if (!t->eval_tokens) return fail("%s", err.msg);
    for (int i = 0; i < t->eval_n; i++)
        if (dataset_valid_window(&t->data, (uint64_t)i, t->eval_tokens + (size_t)i * T, &err)) return fail("%s", err.msg);
    return 0;
}

/* Why output_dir no longer names this run's directory (the path `what`), and where that
 * directory is now: Linux names it in /proc by the descriptor kept open, and whether it
 * holds a checkpoint says if the run can go on from there. Returns -1. */
static int moved_dir_error(const Trainer *t, const char *what, NptErr *err) {
    char where[4200] = "", link[64], ckpt[4400];
    snprintf(link, sizeof link, "/proc/self/fd/%d", t->dir_fd);
    ssize_t n = readlink(link, where, sizeof where - 1);
    where[n > 0 ? n : 0] = 0;
    if (n <= 0 || n == (ssize_t)sizeof where - 1 || strstr(where, " (deleted)"))
        return npt_fail(err, "output_dir %s was moved or removed while this run was training (the path %s); nothing "
                        "more is written there, and this run's own directory cannot be found (removed?): the run stops",
                        t->r.output_dir, what);
    NptErr ignored;
    if (ckpt_find_latest(where, ckpt, sizeof ckpt, 0, &ignored) <= 0)
        return npt_fail(err, "output_dir %s was moved or replaced while this run was training (the path %s); nothing "
                        "more is written there; this run's files are in %s, with no checkpoint to continue from",
                        t->r.output_dir, what, where);
    return npt_fail(err, "output_dir %s was moved or replaced while this run was training (the path %s); nothing more "
                    "is written there; this run's files are in %s: continue it with npt train %s --set output_dir=%s "
                    "--resume auto (with the run's other --set options)", t->r.output_dir, what, where, t->recipe_arg, where);
}

/* Before each write into output_dir by its path (checkpoints, best.h5, loss.svg,
 * eval.jsonl, debug reports, the logs on resume): the path must still name the directory
 * this run opened and locked. Moved aside (mv runs/a runs/a.old) and replaced by another
 * run's directory, it would get this run's files over that run's, its lock on the moved
 * one not stopping either. One stat per write; -1 with err set when the path is lost.
 * (Writing relative to dir_fd instead is not open to HDF5, which takes paths only.) */
static int output_dir_moved(const Trainer *t, NptErr *err) {
    struct stat now;
    if (t->dir_fd < 0) return 0; /* rank > 0, or not opened yet: writes nothing there */
    if (stat(t->r.output_dir, &now) != 0) {
        char what[300];
        snprintf(what, sizeof what, "is gone: %s", strerror(errno));
        return moved_dir_error(t, what, err);
    }
    if (now.st_dev == t->dir_id.st_dev && now.st_ino == t->dir_id.st_ino) return 0;
    return moved_dir_error(t, "now names another directory", err);
}

static void eval_log_path(const Trainer *t, char *out, size_t n) { snprintf(out, n, "%s/eval.jsonl", t->r.output_dir); }

/* One periodic eval: a log line, and the full figures as a line of eval.jsonl. */
static int periodic_eval(Trainer *t) {
    NptErr err;
    EvalResult res;
    if (eval_run(&t->model, t->have_npt ? &t->npt : NULL, t->eval_tokens, t->eval_n, t->r.data.seq_len,
                 t->r.train.batch_size, &res, &err)) {
        runlog_say(&t->log, "npt train: error: eval at step %lld: %s", (long long)t->meta.step, err.msg);
        return -1;
    }
    if (res.has_npt)
        runlog_say(&t->log, "eval at step %lld (%d windows): fidelity (e2e NMSE) %.6g, perplexity base %.4g, NPT %.4g",
                   (long long)t->meta.step, res.n_windows, res.nmse_e2e_mean, res.ppl_base, res.ppl_npt);
    else
        runlog_say(&t->log, "eval at step %lld (%d windows): perplexity %.4g", (long long)t->meta.step, res.n_windows,
                   res.ppl_base);
    char path[4300];
    eval_log_path(t, path, sizeof path);
    if (output_dir_moved(t, &err)) {
        eval_result_free(&res);
        runlog_say(&t->log, "npt train: error: %s", err.msg);
        return -1;
    }
    FILE *f = npt_fopen_append(path, "evaluation log", &err);
    if (!f) {
        runlog_say(&t->log, "warning: %s; this evaluation is only in the log above", err.msg);
    } else {
        fprintf(f, "{\"step\":%lld,\"eval\":", (long long)t->meta.step);
        eval_write_json(f, &res);
        fputs("}\n", f);
        if (fclose(f) != 0) runlog_say(&t->log, "warning: writing %s failed", path);
    }
    eval_result_free(&res);
    return 0;
}

/* The token cache: data.cache_dir, else the user's (dataset_default_cache_dir); not in
 * output_dir, so runs share it and a run directory holds only the run. */
static void token_cache_dir(const Recipe *r, char *out, size_t n) {
    if (r->data.cache_dir[0]) snprintf(out, n, "%s", r->data.cache_dir);
    else dataset_default_cache_dir(out, n);
}

/* The recipe's sources as the data layer takes them (npt train opens them, npt
 * validate checks them): data.sources, else data.train, into specs; data.valid into
 * *valid. Returns how many training sources. */
static int data_specs(const Recipe *r, DataSourceSpec *specs, DataSourceSpec *valid) {
    *valid = (DataSourceSpec){r->data.valid, r->data.format, 1, r->data.text_field};
    int n = r->data.n_sources ? r->data.n_sources : 1;
    for (int i = 0; i < n; i++) {
        const RecipeSource *s = r->data.n_sources ? &r->data.sources[i] : NULL;
        specs[i] = s ? (DataSourceSpec){s->path, s->format, s->weight, s->text_field[0] ? s->text_field : r->data.text_field}
                     : (DataSourceSpec){r->data.train, r->data.format, 1, r->data.text_field};
    }
    return n;
}

/* Every source checked, each failure under its own key: validate lists them all at once. */
int train_data_issues(const Recipe *r, RecipeDiag *d) {
    DataSourceSpec specs[RECIPE_MAX_SOURCES], valid;
    int n = data_specs(r, specs, &valid), before = d->n_errors + d->n_dropped;
    DataConfig dc = {.sources = specs, .n_sources = n, .valid = r->data.valid[0] ? &valid : NULL,
                     .valid_fraction = r->data.valid_fraction, .seq_len = r->data.seq_len};
    for (int i = 0; i <= n; i++) {
        const DataSourceSpec *sp = i < n ? &specs[i] : dc.valid;
        char key[64];
        NptErr err;
        if (!sp || !sp->path[0]) continue;
        if (dataset_check_source(sp, &dc, i == n, &err) >= 0) continue;
        if (i == n) snprintf(key, sizeof key, "data.valid");
        else if (r->data.n_sources) snprintf(key, sizeof key, "data.sources[%d].path", i);
        else snprintf(key, sizeof key, "data.train");
        recipe_diag_add(d, 1, key, err.msg);
    }
    return d->n_errors + d->n_dropped - before;
}

/* data.train (one source) or data.sources, data.valid or data.valid_fraction, text
 * tokenized into the token cache with t->tok (train_setup_issues loaded it). */
static int open_data(Trainer *t) {
    NptErr err;
    Recipe *r = &t->r;
    const LlamaConfig *c = &t->model.cfg;
    DataSourceSpec specs[RECIPE_MAX_SOURCES], valid;
    int n = data_specs(r, specs, &valid);
    char cache[2 * RECIPE_PATH_MAX];
    token_cache_dir(r, cache, sizeof cache);
    DataConfig dc = {.sources = specs, .n_sources = n, .valid = r->data.valid[0] ? &valid : NULL,
                     .valid_fraction = r->data.valid_fraction, .seq_len = r->data.seq_len, .shuffle = r->data.shuffle,
                     .seed = (uint64_t)r->seed, .tok = t->tok, .vocab_size = c->vocab_size, .bos = c->bos_id,
                     .eos = t->tok ? tokenizer_eos_id(t->tok) : c->eos_id, .append_eos = r->data.append_eos,
                     .skip_bad_records = r->data.on_bad_record == BAD_RECORD_SKIP, .cache_dir = cache, .log = dist_rank() == 0 ? stderr : NULL};
    if (dataset_open_config(&t->data, &dc, &err)) return fail("%s", err.msg);
    return r->eval.every ? load_eval_windows(t) : 0;
}

#define SHARED_WEIGHTS_PREFIX "npt-weights-"

/* What a machine's first rank tells the others once it has loaded the base model. */
typedef struct {
    int rc, shared, loader_rank;
    char path[512]; /* the file in /dev/shm holding the weights */
    LlamaModel model;
} SharedModelHeader;

/* Where the machine's shared copy goes: NPT_SHM_DIR, else /dev/shm. */
static const char *shared_weights_dir(void) {
    const char *env = getenv("NPT_SHM_DIR");
    return env && *env ? env : "/dev/shm";
}

/* A name no other run (or a stale file of a crashed one) can hold. */
static int shared_weights_path(char *out, size_t cap) {
    const char *dir = shared_weights_dir();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int n = snprintf(out, cap, "%s/" SHARED_WEIGHTS_PREFIX "%d-%lld%09ld", dir, (int)getpid(), (long long)now.tv_sec,
                     now.tv_nsec);
    return n < 0 || (size_t)n >= cap ? fail("NPT_SHM_DIR is too long (%zu bytes): %.80s...", strlen(dir), dir) : 0;
}

/* A run killed while its model loaded left its file behind, holding memory until the
 * machine restarts; files no live run has claimed go before a new one is made. */
static void remove_stale_weights(void) {
    size_t bytes;
    char first[256];
    int n = npt_shared_map_remove_stale(shared_weights_dir(), SHARED_WEIGHTS_PREFIX, 60, &bytes, first, sizeof first);
    char more[48] = "";
    if (n > 1) snprintf(more, sizeof more, " and %d more", n - 1);
    if (n)
        fprintf(stderr, "npt train: warning: removed %d cop%s of a base model (%.1f MB) that killed runs left in %s "
                "(%s%s)\n", n, n == 1 ? "y" : "ies", bytes / 1e6, shared_weights_dir(), first, more);
}

/* The frozen base model. Several MPI ranks on one machine share one copy of it: the
 * machine's first rank loads the weights into a file in /dev/shm and sends the model's
 * header to the others, which map that file read-only; its name is removed once every
 * rank has it mapped, so nothing outlives the run. The loader holds a lock on the file
 * until then (its claim), which tells a later run's sweep that the file is in use. Each
 * rank holds its own copy when NPT_SHARE_WEIGHTS=0 (on any rank of the machine), when
 * the base itself trains (lm + train_all_weights), or when /dev/shm has no room (said in
 * a warning). */
static int load_base_model(Trainer *t) {
    NptErr err;
    const char *model = t->r.model, *env = getenv("NPT_SHARE_WEIGHTS");
    int own_copy = t->r.objective.train_all_weights || (env && !strcmp(env, "0"));
    /* decided by the machine's ranks together: NPT_SHARE_WEIGHTS is per process, and a
     * rank that took the other branch would leave the rest waiting in a collective */
    int share = dist_local_world() > 1 && !dist_local_max_int(own_copy);
    if (!share) return load_full_model(model, &t->model, &err) ? fail("%s", err.msg) : 0;
    SharedModelHeader *h = npt_xcalloc(1, sizeof *h, "shared model header");
    int loader = dist_local_rank() == 0, rc = 0, claim = -1, why = 0;
    if (loader) {
        h->loader_rank = dist_rank();
        rc = shared_weights_path(h->path, sizeof h->path);
        if (!rc) {
            remove_stale_weights();
            claim = npt_shared_map_claim(h->path, &why);
            rc = (claim < 0 ? load_full_model(model, &t->model, &err)
                            : load_full_model_shared(model, h->path, &t->model, &err)) ? fail("%s", err.msg) : 0;
            if (claim >= 0) why = t->model.share_errno;
        }
        h->rc = rc;
        h->shared = !rc && t->model.mapped_bytes;
        if (!rc && !h->shared)
            fprintf(stderr, "npt train: warning: rank %d: cannot share the base model between the %d ranks of this "
                    "machine (%s: %s); each holds its own copy of %.1f MB\n", dist_rank(), dist_local_world(), h->path,
                    strerror(why), t->model.weights_floats * 4.0 / 1e6);
        h->model = t->model;
    }
    dist_local_bcast(h, sizeof *h);
    if (!loader) {
        if (h->rc)
            rc = fail("the base model did not load on rank %d, which loads it for this machine", h->loader_rank);
        else if (h->shared)
            rc = llama_attach_shared(&t->model, &h->model, h->path, &err) ? fail("%s", err.msg) : 0;
        else
            rc = load_full_model(model, &t->model, &err) ? fail("%s", err.msg) : 0;
    }
    dist_local_barrier(); /* every rank has mapped the file, or given up */
    if (claim >= 0) {
        unlink(h->path);
        close(claim);
    }
    free(h);
    return rc;
}

/* The tokenizer text data needs: the recipe's, else the one beside the model; loaded
 * against the model's vocabulary, kept in *keep when keep is not NULL. */
static void tokenizer_issues(const Recipe *r, const LlamaModel *m, Tokenizer **keep, RecipeDiag *d) {
    NptErr err;
    char msg[RECIPE_PATH_MAX + 256];
    const char *tp = r->tokenizer[0] ? r->tokenizer : m->tokenizer_path;
    if (!tp[0]) {
        snprintf(msg, sizeof msg, "not set, and none found beside the model %s; text or JSONL data needs one: set "
                 "\"tokenizer\" in the recipe (or --set tokenizer=PATH)", r->model);
        recipe_diag_add(d, 1, "tokenizer", msg);
        return;
    }
    Tokenizer *tok = tokenizer_load(tp, m->cfg.vocab_size, &err);
    if (!tok) recipe_diag_add(d, 1, "tokenizer", err.msg);
    else if (keep) *keep = tok;
    else tokenizer_free(tok);
}

/* A directory the run creates when it is missing must be one, or be creatable: said
 * before the data is tokenized, under its recipe key and with the way out, instead of
 * a bare mkdir error once the run has started. */
static void dir_issue(RecipeDiag *d, const char *key, const char *dir, const char *lead, const char *fix) {
    NptErr err;
    if (npt_check_dir_creatable(dir, &err) == 0) return;
    char msg[sizeof err.msg + 512];
    snprintf(msg, sizeof msg, "%s%s; %s", lead, err.msg, fix);
    recipe_diag_add(d, 1, key, msg);
}

int train_setup_issues(const Recipe *r, const LlamaModel *m, int check_output_dir, Tokenizer **tok, RecipeDiag *d) {
    const LlamaConfig *c = &m->cfg;
    int before = d->n_errors + d->n_dropped;
    char msg[400], cache[2 * RECIPE_PATH_MAX];
    recipe_model_issues(r, c->dim, c->hidden_dim, c->n_layers, d);
    recipe_data_path_issues(r, d); /* validate found none missing before it got here: nothing twice */
    if (recipe_context_issue(r, c->seq_len, msg, sizeof msg)) recipe_diag_add(d, 1, "data.seq_len", msg);
    if (recipe_needs_tokenizer(r)) { /* text is tokenized, into the token cache */
        tokenizer_issues(r, m, tok, d);
        token_cache_dir(r, cache, sizeof cache);
        if (r->data.cache_dir[0])
            dir_issue(d, "data.cache_dir", cache, "",
                      "the token cache (text tokenized once) goes there: set data.cache_dir to a directory npt can "
                      "write or create");
        else
            dir_issue(d, "data.cache_dir", cache, "not set, and the default token cache cannot be made: ",
                      "set data.cache_dir in the recipe, or the NPT_CACHE_DIR environment variable, to a directory "
                      "npt can write or create");
    }
    if (check_output_dir)
        dir_issue(d, "output_dir", r->output_dir, "", "set output_dir to a directory for the run (--set output_dir=DIR)");
    return d->n_errors + d->n_dropped - before;
}

/* The recipe's tokenizer goes into every checkpoint by absolute path, size and hash:
 * the recipe may name it relative to this directory, and npt export runs elsewhere and
 * must find, and recognise, this very file. A run that tokenizes nothing may name one
 * it never reads: unreadable, it is just not recorded. */
static int record_tokenizer(Trainer *t) {
    NptErr err;
    CkptMeta *m = &t->meta;
    if (!t->r.tokenizer[0] || npt_file_identity(t->r.tokenizer, "tokenizer", m->tokenizer_path, sizeof m->tokenizer_path,
                                                &m->tokenizer_bytes, &m->tokenizer_fingerprint, &err) == 0)
        return 0;
    m->tokenizer_path[0] = '\0';
    return recipe_needs_tokenizer(&t->r) ? fail("tokenizer: %s", err.msg) : 0;
}

/* The recipe against the loaded model (train_setup_issues), then the data. */
static int check_model_open_data(Trainer *t) {
    NptErr err;
    RecipeDiag d = {0};
    train_setup_issues(&t->r, &t->model, dist_rank() == 0, &t->tok, &d); /* rank 0 alone writes output_dir */
    int bad = recipe_diag_fail(&d, &err);
    recipe_diag_free(&d);
    return bad ? fail("%s", err.msg) : record_tokenizer(t) ? 1 : open_data(t);
}

/* A resumed run tokenizes with the recipe's tokenizer of today: if the checkpoint
 * recorded another (different bytes), the data would no longer be the data trained on. */
static int tokenizer_changed(const CkptMeta *saved, const CkptMeta *now, const char *path) {
    if (!saved->tokenizer_path[0] || !now->tokenizer_path[0] ||
        (saved->tokenizer_bytes == now->tokenizer_bytes && saved->tokenizer_fingerprint == now->tokenizer_fingerprint))
        return 0;
    return fail("%s was trained with tokenizer %s (%lld bytes, fingerprint %016llx), but the recipe's tokenizer %s has "
                "other contents (%lld bytes, fingerprint %016llx); resume with the tokenizer the run was trained with",
                path, saved->tokenizer_path, (long long)saved->tokenizer_bytes,
                (unsigned long long)saved->tokenizer_fingerprint, now->tokenizer_path, (long long)now->tokenizer_bytes,
                (unsigned long long)now->tokenizer_fingerprint);
}

/* lm + train_all_weights trains the base itself: its tensors become parameters. */
static int make_base_trainable(Trainer *t, NptErr *err) {
    LlamaModel *m = &t->model;
    float *g = llama_make_trainable(m, err);
    if (!g) return -1;
    t->params = m->weights_block, t->grads = g, t->n_params = m->weights_floats;
    return 0;
}

static int setup_training(Trainer *t) {
    NptErr err;
    Recipe *r = &t->r;
    t->oc = (ObjectiveConfig){.distill = r->objective.type == OBJECTIVE_DISTILL, .use_mse = r->objective.loss == LOSS_MSE,
                              .lambda = (float)r->objective.lambda, .train_all_weights = r->objective.train_all_weights};
    if (t->oc.distill || !t->oc.train_all_weights) {
        NptConfig nc = {.rank = r->npt.rank, .safe_mode = r->npt.safe_mode, .modulation_scale = (float)r->npt.modulation_scale,
                        .layer_mode = (NptLayerMode)r->npt.layers, .layer_list = r->npt.layer_ids,
                        .n_layer_list = r->npt.n_layer_ids, .init_a_std = (float)r->npt.init_a_std,
                        .init_b_add_std = (float)r->npt.init_b_add_std, .init_b_mul_std = (float)r->npt.init_b_mul_std};
        if (npt_create(&t->npt, &t->model, &nc, &err)) return fail("%s", err.msg);
        t->have_npt = 1;
        npt_init_weights(&t->npt, &nc, (uint64_t)r->seed);
        t->params = t->npt.params, t->grads = t->npt.grads, t->n_params = t->npt.n_params;
    } else if (make_base_trainable(t, &err)) {
        return fail("%s", err.msg);
    }
    if (optim_init(&t->opt, r->train.optimizer == OPTIMIZER_SGD ? OPTIM_SGD : OPTIM_ADAMW, t->params, t->grads, t->n_params, &err))
        return fail("%s", err.msg);
    t->opt.beta1 = (float)r->train.beta1, t->opt.beta2 = (float)r->train.beta2, t->opt.eps = (float)r->train.eps;
    t->opt.weight_decay = (float)r->train.weight_decay, t->opt.momentum = (float)r->train.momentum;
    t->sched = (Schedule){.kind = (ScheduleKind)r->train.schedule, .base_lr = (float)r->train.lr,
                          .min_lr_ratio = (float)r->train.min_lr_ratio, .warmup_steps = r->train.warmup_steps,
                          .total_steps = r->train.max_steps};
    int B = r->train.batch_size, T = r->data.seq_len;
    if (objective_init(&t->runner, &t->model, t->have_npt ? &t->npt : NULL, &t->oc, B, T,
                       objective_auto_shards(&t->oc, t->have_npt ? &t->npt : NULL, B), &err)) {
        if (strstr(err.msg, "out of memory")) /* the arenas grow with one micro-batch */
            return fail("%s: train.batch_size %d x data.seq_len %d is too large for this machine; lower train.batch_size "
                        "(train.grad_accum keeps the batch per optimizer step)", err.msg, B, T);
        return fail("%s", err.msg);
    }
    /* a whole step's micro-batches, so a skipped step can be handed to the debugger */
    t->tokens = npt_try_malloc((size_t)r->train.grad_accum * B * T * sizeof(int), "step tokens", &err);
    if (!t->tokens)
        return fail("%s: train.grad_accum %d x train.batch_size %d x data.seq_len %d token ids are too many for this "
                    "machine; lower train.grad_accum", err.msg, r->train.grad_accum, B, T);
    t->sample_ids = npt_xmalloc((size_t)B * sizeof(int64_t), "batch sample ids");
    t->poison = parse_index_list("NPT_TEST_POISON_BATCHES", &t->n_poison);
    t->poison_grads = parse_index_list("NPT_TEST_POISON_GRADS", &t->n_poison_grads);
    t->drop = parse_index_list("NPT_TEST_DROP_BATCHES", &t->n_drop);
    t->nudge = parse_index_list("NPT_TEST_NUDGE_AFTER_STEPS", &t->n_nudge);
    t->fail_reads = parse_index_list("NPT_TEST_FAIL_READS", &t->n_fail_reads);
    t->fail_best = parse_index_list("NPT_TEST_FAIL_BEST", &t->n_fail_best);
    return 0;
}

static void history_push(Trainer *t, const CkptHistoryRow *row) {
    if (t->meta.n_history == t->history_cap) {
        t->history_cap = t->history_cap ? 2 * t->history_cap : 1024;
        CkptHistoryRow *h = realloc(t->meta.history, (size_t)t->history_cap * sizeof *h);
        if (!h) npt_die("out of memory growing the step history");
        t->meta.history = h;
    }
    t->meta.history[t->meta.n_history++] = *row;
}

/* lm + train_all_weights: the trained weights themselves (one flat block, the layout of
 * LlamaModel.weights_block) and their moments go into the checkpoint. */
static const char *const WEIGHT_TENSORS[3] = {CKPT_WEIGHTS_BLOCK, "optimizer/" CKPT_WEIGHTS_MOMENT ".m",
                                               "optimizer/" CKPT_WEIGHTS_MOMENT ".v"};

static CkptTensor *weight_tensor_list(Trainer *t, int *count) {
    CkptTensor *list = calloc(3, sizeof *list);
    if (!list) return NULL;
    float *data[3] = {t->params, t->opt.m, t->opt.v};
    for (int k = 0; k < 3; k++) {
        snprintf(list[k].name, sizeof list[k].name, "%s", WEIGHT_TENSORS[k]);
        list[k].data = data[k];
        list[k].ndim = 1;
        list[k].shape[0] = (int64_t)t->n_params;
    }
    *count = 3;
    return list;
}

static int restore_weights(Trainer *t, const char *path, const CkptTensor *tensors, int n, NptErr *err) {
    float *dst[3] = {t->params, t->opt.m, t->opt.v};
    for (int k = 0; k < 3; k++) {
        const CkptTensor *src = ckpt_find(tensors, n, WEIGHT_TENSORS[k]);
        if (!src || src->ndim != 1 || src->shape[0] != (int64_t)t->n_params)
            return npt_fail(err, "%s: /%s is missing or not %zu floats; it was not written by an all-weights lm run of this model",
                            path, WEIGHT_TENSORS[k], t->n_params);
        memcpy(dst[k], src->data, t->n_params * sizeof(float));
    }
    return 0;
}

static int save_checkpoint(Trainer *t, const char *kind) {
    NptErr err;
    char path[4300];
    if (ckpt_path_for(path, sizeof path, t->r.output_dir, kind, t->meta.step, &err) || output_dir_moved(t, &err))
        return fail("%s", err.msg);
    if (!strcmp(kind, "best") && in_list(t->fail_best, t->n_fail_best, t->meta.step))
        return fail("cannot write checkpoint %s: test hook NPT_TEST_FAIL_BEST at step %lld", path, (long long)t->meta.step);
    snprintf(t->meta.kind, sizeof t->meta.kind, "%s", kind);
    adapters_fill_meta(&t->meta, &t->model, t->have_npt ? &t->npt : NULL);
    snprintf(t->meta.optimizer, sizeof t->meta.optimizer, "%s", t->opt.kind == OPTIM_SGD ? "sgd" : "adamw");
    t->meta.opt_step = t->opt.step;
    t->meta.recipe_json = t->recipe_json;
    _Static_assert(DATASET_CURSOR_MAX <= CKPT_CURSOR_MAX, "the data cursor must fit the checkpoint's");
    t->meta.n_data_cursor = dataset_cursor(&t->data, t->meta.data_cursor, CKPT_CURSOR_MAX);
    CkptTensor *list = NULL;
    int count = 0;
    if (t->have_npt) {
        if (adapters_tensor_list(&t->npt, &t->opt, &list, &count, &err)) return fail("%s", err.msg);
    } else if (!(list = weight_tensor_list(t, &count))) {
        return fail("out of memory listing the weights to save");
    }
    int rc = ckpt_save(path, &t->meta, list, count, &err);
    free(list);
    if (rc) { /* moved while being written, its rename fails: that is the news, not the rename */
        output_dir_moved(t, &err);
        return fail("%s", err.msg);
    }
    t->saved_step = t->meta.step;
    snprintf(t->saved_path, sizeof t->saved_path, "%s", path);
    if (output_dir_moved(t, &err)) return fail("%s", err.msg); /* again: the rotation deletes files by name */
    if (!strcmp(kind, "periodic") && ckpt_rotate(t->r.output_dir, t->r.checkpoint.keep_last, &err))
        runlog_say(&t->log, "warning: %s", err.msg);
    char plot[4300];
    snprintf(plot, sizeof plot, "%s/loss.svg", t->r.output_dir);
    if (runlog_plot_svg(plot, t->meta.history, t->meta.n_history, t->r.name, 0, &err)) runlog_say(&t->log, "warning: %s", err.msg);
    return 0;
}

/* Whether two paths name the same existing directory. */
static int same_directory(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* --resume PATH into PATH's own directory rewinds the run there. The abandoned future
 * (checkpoints past PATH's step, final.h5) would stay beside the new files, and a later
 * --resume auto would pick it by step; so that is refused rather than mixed. */
static int refuse_abandoned_future(const Trainer *t, const char *resume) {
    NptErr err;
    char newest[4300];
    int64_t from, newest_step;
    if (ckpt_read_step(resume, &from, &err)) return 0; /* resume_from reports it */
    int found = ckpt_find_latest(t->r.output_dir, newest, sizeof newest, 0, &err);
    if (found < 0) { /* no checkpoint there can be resumed: when the one asked for is damaged, that is the news */
        NptErr own;
        CkptMeta m;
        CkptTensor *tensors;
        int n;
        if (ckpt_load(resume, &m, &tensors, &n, &own)) return fail("%s", own.msg);
        ckpt_free(&m, tensors, n);
        return fail("%s", err.msg);
    }
    if (found == 0 || ckpt_read_step(newest, &newest_step, &err) || newest_step <= from) return 0;
    return fail("%s also holds a later state of this run (%s, step %lld; %s is step %lld), which a later --resume auto "
                "would pick; resume into a new directory (--set output_dir=NEW --resume %s) or move the later files away",
                t->r.output_dir, newest, (long long)newest_step, resume, (long long)from, resume);
}

/* One run at a time per output_dir: two would interleave their metrics.jsonl lines and
 * write over each other's checkpoints. An flock on the directory itself (no file is
 * created, so a refused run leaves the directory as it was), held until the process
 * ends: the kernel releases it however it ends, kill -9 included. A file system
 * without locks gets a warning, not a refusal. */
static int lock_output_dir(Trainer *t) {
    int fd = open(t->r.output_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fail("cannot open output_dir %s: %s", t->r.output_dir, strerror(errno));
    t->dir_fd = fd; /* kept, locked or not: output_dir_moved compares the path with it; trainer_free closes it */
    if (fstat(fd, &t->dir_id) != 0) return fail("cannot stat output_dir %s: %s", t->r.output_dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    int e = errno;
    if (e == EWOULDBLOCK)
        return fail("%s is in use by another npt train running there; wait for it to end, or choose another "
                    "output_dir (--set output_dir=...)", t->r.output_dir);
    if (e != ENOLCK && e != EOPNOTSUPP && e != ENOSYS && e != EBADF)
        return fail("cannot lock output_dir %s: %s", t->r.output_dir, strerror(e));
    inform("npt train: warning: output_dir %s cannot be locked (%s): make sure no other run uses it\n",
           t->r.output_dir, strerror(e));
    return 0;
}

/* A run writes final.h5, its checkpoints, best.h5, metrics, evaluations and plot into
 * output_dir, so it refuses a directory holding another run's instead of replacing them:
 * a new run, one resumed from a checkpoint of another directory, or --resume auto where
 * no checkpoint is left to continue. Continuing the run that is there (--resume auto, or
 * one of its own checkpoints) is what resuming is for. */
static int refuse_other_run(const Trainer *t, const char *resume, const char *metrics) {
    NptErr err;
    char existing[2 * RECIPE_PATH_MAX + 64]; /* a checkpoint path, or the metrics path */
    struct stat st;
    int is_auto = resume && !strcmp(resume, "auto");
    if (resume && !is_auto) {
        npt_dir_of(resume, existing, sizeof existing);
        if (same_directory(existing, t->r.output_dir)) return refuse_abandoned_future(t, resume);
    }
    int found = ckpt_find_latest(t->r.output_dir, existing, sizeof existing, 0, &err);
    if (found < 0) return fail("%s", err.msg);
    if (found > 0 && is_auto) return 0;
    if (found > 0)
        return fail("%s already holds a run (%s); continue it with --resume auto, or choose another output_dir "
                    "(--set output_dir=...)", t->r.output_dir, existing);
    const char *const written[] = {"best.h5", "eval.jsonl", "loss.svg", NULL /* the metrics log, by its path */};
    for (size_t i = 0; i < NPT_ARRAY_LEN(written); i++) {
        if (written[i]) snprintf(existing, sizeof existing, "%s/%s", t->r.output_dir, written[i]);
        else snprintf(existing, sizeof existing, "%s", metrics);
        if (lstat(existing, &st) == 0) /* lstat: a dangling symlink would be replaced too */
            return fail("%s holds %s of an earlier run but no checkpoint to continue; remove the file, or choose "
                        "another output_dir (--set output_dir=...)", t->r.output_dir, existing);
    }
    return 0;
}

/* --resume auto: rank 0 picks the newest checkpoint that loads and names it to the
 * others, so a damaged file is reported once and every rank reads the same file (a
 * rank that cannot read it fails there, rather than picking an older one). 1 with
 * path set, 0 if output_dir holds none, -1 (error printed) on every rank. */
static int pick_latest_checkpoint(const Trainer *t, char *path, size_t cap) {
    NptErr err;
    int found = 0;
    if (dist_rank() == 0) {
        found = ckpt_find_latest(t->r.output_dir, path, cap, 1, &err);
        if (found < 0) fail("%s", err.msg);
    }
    found = dist_bcast_int(found);
    if (found > 0) dist_bcast(path, cap);
    return found;
}

/* The adapters meta holds are those n has: rank, mode and layers. */
static int same_adapters(const CkptMeta *meta, const NptModel *n) {
    if (meta->rank != n->rank || meta->safe_mode != n->safe_mode || meta->n_npt_layers != n->n_adapters) return 0;
    for (int k = 0; k < n->n_adapters; k++)
        if (meta->npt_layers[k] != n->adapters[k].layer) return 0;
    return 1;
}

static int resume_from(Trainer *t, const char *spec) {
    NptErr err;
    char path[4300];
    if (!strcmp(spec, "auto")) {
        int found = pick_latest_checkpoint(t, path, sizeof path);
        if (found < 0) return 1;
        if (found == 0) {
            inform("npt train: no checkpoint in %s yet; starting from scratch\n", t->r.output_dir);
            return 0;
        }
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    CkptMeta meta;
    CkptTensor *tensors = NULL;
    int n = 0;
    char changed[512];
    if (ckpt_load(path, &meta, &tensors, &n, &err)) return fail("%s", err.msg);
    int rc = 1, unchecked = 0;
    if (adapters_check_base(path, &meta, &t->model, &err)) {
        fail("%s", err.msg);
    } else if (tokenizer_changed(&meta, &t->meta, path)) {
        /* said by tokenizer_changed */
    } else if (t->have_npt && !same_adapters(&meta, &t->npt)) {
        fail("%s holds adapters of rank %d, %s mode, %d layers; the recipe asks for rank %d, %s mode, %d layers; resume with the recipe that wrote it",
             path, meta.rank, meta.safe_mode ? "safe" : "full", meta.n_npt_layers, t->npt.rank,
             t->npt.safe_mode ? "safe" : "full", t->npt.n_adapters);
    } else if (recipe_resume_check(meta.recipe_json, t->recipe_json, path, changed, sizeof changed, &err)) {
        fail("%s", err.msg);
    } else if (meta.step > t->r.train.max_steps) {
        fail("%s is at step %lld, past train.max_steps %d: there is nothing to continue; raise train.max_steps", path,
             (long long)meta.step, t->r.train.max_steps);
    } else if (t->have_npt && adapters_restore(&t->npt, &t->opt, path, tensors, n, &err)) {
        fail("%s", err.msg);
    } else if (!t->have_npt && restore_weights(t, path, tensors, n, &err)) {
        fail("%s", err.msg);
    } else if ((unchecked = dataset_restore(&t->data, meta.data_cursor, meta.n_data_cursor, &err)) < 0) {
        fail("%s: %s", path, err.msg);
    } else {
        t->opt.step = meta.opt_step;
        t->meta.step = meta.step;
        t->meta.tokens_seen = meta.tokens_seen;
        t->meta.skipped_total = meta.skipped_total;
        t->meta.consecutive_skips = meta.consecutive_skips;
        t->meta.best_loss = meta.best_loss;
        t->meta.last_loss = meta.last_loss;
        free(t->meta.history);
        t->meta.history = meta.history; /* take ownership */
        t->meta.n_history = t->history_cap = meta.n_history;
        meta.history = NULL;
        meta.n_history = 0;
        inform("npt train: resumed from %s at step %lld\n", path, (long long)meta.step);
        t->saved_step = meta.step;
        snprintf(t->saved_path, sizeof t->saved_path, "%s", path);
        if (changed[0])
            inform("npt train: warning: %s differ%s from the recipe that wrote %s: the run goes on from it, but "
                            "will not reproduce an uninterrupted run of either recipe\n",
                    changed, strchr(changed, ',') ? "" : "s", path);
        if (unchecked)
            inform("npt train: warning: %s comes from an npt that did not fingerprint its data: only the window "
                   "counts show it is the same data\n", path);
        rc = 0;
    }
    ckpt_free(&meta, tensors, n);
    return rc;
}

/* One optimizer step: accumulate, check, clip, update (or skip). In an MPI run every
 * rank draws every micro-batch (the data stream stays the one-process stream) and runs
 * those with a % world == rank; the losses and gradients are then summed over the ranks,
 * so the step is judged, clipped and applied alike everywhere. Returns 0 (applied), 1
 * (skipped), -1 (this rank could not read the data: t->data.io_err), -2 (another could not). */
static int train_step(Trainer *t, CkptHistoryRow *row, int64_t *ids_out, int *n_ids) {
    Recipe *r = &t->r;
    int B = r->train.batch_size, T = r->data.seq_len, A = r->train.grad_accum, W = dist_world(), me = dist_rank();
    memset(t->grads, 0, t->n_params * sizeof(float));
    double sums[5] = {0, 0, 0, 0, 0}; /* loss, fidelity, reg, non-finite micro-batches, failed reads */
    int64_t cursor[DATASET_CURSOR_MAX], drawn = t->batches_drawn; /* to rewind to if a read fails */
    int n_cursor = dataset_cursor(&t->data, cursor, DATASET_CURSOR_MAX);
    *n_ids = 0;
    for (int a = 0; a < A; a++) {
        int *tokens = t->tokens + (size_t)a * B * T, read_failed = 0;
        do { /* test hook: batches dropped from the stream as if they never existed */
            read_failed = dataset_next_batch(&t->data, B, tokens, t->sample_ids) != 0;
        } while (!read_failed && in_list(t->drop, t->n_drop, t->batches_drawn++));
        if (!read_failed && in_list(t->fail_reads, t->n_fail_reads, t->batches_drawn - 1))
            read_failed = npt_fail(&t->data.io_err, "test hook NPT_TEST_FAIL_READS: micro-batch %lld made unreadable",
                                   (long long)t->batches_drawn - 1) != 0;
        if (read_failed) {
            sums[4] = 1;
            break;
        }
        int poison = in_list(t->poison, t->n_poison, t->batches_drawn - 1);
        for (int b = 0; b < B; b++) ids_out[(*n_ids)++] = t->sample_ids[b];
        if (a % W != me) continue;
        ObjectiveValues v = objective_step(&t->runner, &t->model, t->have_npt ? &t->npt : NULL, &t->oc, tokens,
                                           t->sample_ids, 1.0f / A, poison);
        if (in_list(t->poison_grads, t->n_poison_grads, t->batches_drawn - 1)) t->grads[t->n_params - 1] = NAN;
        if (!isfinite(v.loss)) sums[3]++;
        sums[0] += v.loss / A, sums[1] += v.fidelity / A, sums[2] += v.reg / A;
    }
    int read_failed_here = sums[4] > 0;
    dist_sum_doubles(sums, 5);
    if (sums[4] > 0) { /* the step did not happen: its windows come first after a resume */
        NptErr err;
        if (dataset_restore(&t->data, cursor, n_cursor, &err) < 0) npt_die("rewinding the data cursor: %s", err.msg);
        t->batches_drawn = drawn;
        return read_failed_here ? -1 : -2;
    }
    dist_sum_floats(t->grads, t->n_params);
    double loss = sums[0], fid = sums[1], reg = sums[2];
    int finite = sums[3] == 0;
    float lr = schedule_lr(&t->sched, t->meta.step);
    double norm;
    int skipped = optim_update(&t->opt, finite ? loss : NAN, lr, (float)r->train.clip_grad_norm, &norm, NULL);
    /* a skipped step keeps its number: the schedule does not move */
    *row = (CkptHistoryRow){.step = t->meta.step + !skipped, .loss = loss, .nmse = fid, .reg = reg, .lr = lr,
                            .grad_norm = norm, .skipped = skipped};
    if (skipped) return 1;
    t->meta.step++;
    t->meta.tokens_seen += (int64_t)A * B * T;
    t->log.tokens_session += (int64_t)A * B * T;
    return 0;
}

/* train.debug_on_skip: the skipped step's windows go through the NaN producer finder
 * (model/debug.h); its report lands beside the checkpoints. Capped, so a run that skips
 * for hours does not fill the disk. The rerun accumulates into t->grads (the skipped
 * step's, which the next step zeroes anyway), so debug_report_batch zeroes them. */
#define DEBUG_REPORTS_MAX 20
static void debug_skipped_step(Trainer *t, const int64_t *ids, int n_ids) {
    if (!t->r.train.debug_on_skip || t->debug_reports >= DEBUG_REPORTS_MAX) return;
    char stem[4300];
    snprintf(stem, sizeof stem, "%s/debug_step%lld_skip%lld", t->r.output_dir, (long long)t->meta.step,
             (long long)t->meta.skipped_total);
    NptErr err;
    if (output_dir_moved(t, &err)) { /* the next checkpoint stops the run, saying why */
        runlog_say(&t->log, "warning: no debug report for step %lld: output_dir %s no longer names this run's directory",
                   (long long)t->meta.step, t->r.output_dir);
        return;
    }
    int failing = debug_report_batch(&t->model, t->have_npt ? &t->npt : NULL, t->grads, t->n_params, t->tokens, n_ids,
                                     t->r.data.seq_len, ids, stem, &err);
    t->debug_reports++;
    if (failing < 0) runlog_say(&t->log, "warning: debug report failed: %s", err.msg);
    else if (failing == 0)
        runlog_say(&t->log, "debug: the %d windows are finite when rerun alone (forward and next-token backward); see %s.txt", n_ids, stem);
    else runlog_say(&t->log, "debug: %d of %d windows reproduce a non-finite value; where it is born: %s.txt", failing, n_ids, stem);
}

/* What the cache leaves free in output_dir's file system for the rest of the run: the
 * periodic checkpoints kept, the one being written beside them, best.h5 (and its
 * temporary copy), final.h5 or an emergency checkpoint, each with its adapters, two
 * optimizer moments and a history row per step, plus 1 MB of HDF5 structure and recipe;
 * and 512 bytes of metrics and eval lines per step. An estimate on the generous side: a
 * cache that filled the disk would make the next checkpoint fail. */
static double checkpoint_reserve_bytes(const Trainer *t) {
    double steps = t->r.train.max_steps;
    double one = 3.0 * sizeof(float) * (double)t->n_params + sizeof(CkptHistoryRow) * steps + 1e6;
    return (t->r.checkpoint.keep_last + 4) * one + 512.0 * steps;
}

/* train.teacher_cache_gb: records of the teacher's states in output_dir. A resumed run
 * starts with an empty cache (teacher_cache.h says why that is safe and exact). */
static int open_teacher_cache(Trainer *t) {
    if (!t->oc.distill || t->r.train.teacher_cache_gb <= 0) return 0;
    NptErr err;
    const LlamaConfig *c = &t->model.cfg;
    if (teacher_cache_open(&t->cache, t->r.output_dir, t->r.train.teacher_cache_gb * 1e9, checkpoint_reserve_bytes(t),
                           (int64_t)t->data.n_windows, (int64_t)t->data.n_train, c->n_layers - t->npt.first_layer + 2,
                           t->r.data.seq_len, c->dim, &err))
        return fail("%s (train.teacher_cache_gb = %g)", err.msg, t->r.train.teacher_cache_gb);
    t->runner.teacher_cache = &t->cache;
    inform("npt train: teacher cache: up to %d of %llu windows (%.2f GB, %.2f MB each) in a deleted file in %s\n",
           t->cache.max_records, (unsigned long long)t->data.n_train,
           (double)t->cache.max_records * t->cache.record_bytes / 1e9, t->cache.record_bytes / 1e6, t->r.output_dir);
    return 0;
}

/* After a step: a cache that failed gives its disk space back and says so once; one
 * that stopped growing to keep room for checkpoints says that once. */
static void report_teacher_cache(Trainer *t) {
    if (!t->runner.teacher_cache) return;
    teacher_cache_release(&t->cache);
    if (t->cache.failed && !t->cache_reported) {
        runlog_say(&t->log, "warning: %s", t->cache.last_error);
        t->cache_reported = 1;
    }
    if (t->cache.full && !t->cache_full_reported) {
        runlog_say(&t->log, "warning: teacher cache: stops growing at %d window%s, short of %d: %s must keep %.3g GB "
                   "free for checkpoints; free space there to cache more", t->cache.n_records,
                   t->cache.n_records == 1 ? "" : "s", t->cache.max_records, t->r.output_dir,
                   t->cache.reserve_bytes / 1e9);
        t->cache_full_reported = 1;
    }
}

/* The mean loss of the applied steps since the last periodic checkpoint boundary (the
 * interval best.h5 is judged on), NAN when there is none. Read from the history, which
 * every checkpoint holds, so a resumed run (from a periodic, emergency or final
 * checkpoint) judges the same interval as the uninterrupted one. */
static double interval_mean_loss(const Trainer *t) {
    int64_t step = t->meta.step, every = t->r.checkpoint.every, start = step > 0 ? (step - 1) / every * every : 0;
    int64_t first = t->meta.n_history;
    while (first > 0 && t->meta.history[first - 1].step > start) first--;
    double sum = 0; /* in step order, as the mean is defined */
    int n = 0;
    for (int64_t i = first; i < t->meta.n_history; i++)
        if (!t->meta.history[i].skipped) sum += t->meta.history[i].loss, n++;
    return n ? sum / n : NAN;
}

/* Whether the interval that ends now is the best so far; records it in meta.best_loss
 * before any checkpoint is written, so best.h5 and the periodic checkpoint of this
 * step (written after it) hold it. */
static int interval_is_best(Trainer *t) {
    double mean = interval_mean_loss(t);
    if (!t->r.checkpoint.save_best || !(mean < t->meta.best_loss)) return 0;
    t->meta.best_loss = mean;
    return 1;
}

/* The data's content, not only its counts: 16 windows spread over the training windows
 * and 4 over the validation ones (the same stories in another order have the same
 * counts). A window that cannot be read counts as different: that rank stops anyway. */
static uint64_t sample_data(Trainer *t, uint64_t h) {
    int T = t->r.data.seq_len, me = dist_rank();
    int *tokens = npt_xmalloc((size_t)T * sizeof(int), "data sample");
    uint64_t n[2] = {t->data.n_windows, dataset_n_valid(&t->data)};
    const int samples[2] = {16, 4};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < samples[k] && n[k]; i++) {
            uint64_t id = (n[k] - 1) * (uint64_t)i / (uint64_t)(samples[k] - 1);
            NptErr err;
            int bad = k == 0 ? dataset_window(&t->data, id, tokens, &err) : dataset_valid_window(&t->data, id, tokens, &err);
            h = bad ? npt_fnv1a(h, &me, sizeof me) : npt_fnv1a(h, tokens, (size_t)T * sizeof(int));
        }
    free(tokens);
    return h;
}

/* The first rank (on every rank) whose fingerprint mine[k] differs from rank 0's, or -1;
 * *what is that k. */
static int first_other_rank(const uint64_t *mine, int n, int *what) {
    int W = dist_world(), bad = -1;
    uint64_t *all = npt_xmalloc((size_t)W * sizeof(uint64_t), "rank fingerprints");
    for (int k = 0; k < n; k++) {
        dist_gather_u64(mine[k], all);
        for (int r = 1; r < W && bad < 0; r++)
            if (all[r] != all[0]) bad = r, *what = k;
    }
    free(all);
    return bad;
}

/* The resolved recipe with its --set options; threads aside, a per-machine setting. */
static uint64_t recipe_fingerprint(const Recipe *r) {
    Recipe no_threads = *r;
    no_threads.threads = 0;
    char *recipe = recipe_to_json(&no_threads);
    if (!recipe) npt_die("out of memory printing the recipe to compare it across ranks");
    uint64_t h = npt_fnv1a(NPT_FNV1A_OFFSET, recipe, strlen(recipe));
    free(recipe);
    return h;
}

/* Rank 0's line for a rank that was started differently; 1 on every rank. */
static int refuse_other_start(int bad_rank, const char *what) {
    if (dist_rank() == 0)
        fprintf(stderr, "npt train: error: rank %d of %d has other %s than rank 0: every rank needs the same files and "
                        "options (for --resume, an output_dir all ranks can read)\n", bad_rank, dist_world(), what);
    return 1;
}

/* Ranks started with other recipes, --set options or --resume are refused as soon as
 * the recipe is read, before the setup steps that depend on them: which ranks of a
 * machine share the base model, whether rank 0 picks a checkpoint for all. A rank that
 * went another way would leave the others waiting in a collective it never enters. */
static int options_differ(const Trainer *t, const TrainArgs *a) {
    if (dist_world() == 1) return 0;
    const char *resume = a->resume ? a->resume : "";
    const uint64_t mine[2] = {recipe_fingerprint(&t->r), npt_fnv1a(NPT_FNV1A_OFFSET, resume, strlen(resume) + 1)};
    const char *const what[2] = {"recipe (with its --set options)", "--resume option"};
    int k = 0, bad = first_other_rank(mine, 2, &k);
    return bad < 0 ? 0 : refuse_other_start(bad, what[k]);
}

/* Every rank must hold the same state, or their summed gradients mean nothing: the same
 * base weights, parameters, optimizer state, step and data (the recipe, which nothing
 * changes under a run, options_differ compared at the start). Before the first step (running 0) a difference is a setup
 * error: another file under one path on some machine, a --resume checkpoint only some
 * ranks can read. At a checkpoint (running 1) it would be a bug (the ranks apply the
 * same update to the same floats), and the checkpoint is not written. Returns 0, or 1
 * (start) / 4 (running) on every rank. */
static int ranks_differ(Trainer *t, int running) {
    if (dist_world() == 1) return 0;
    int64_t cursor[CKPT_CURSOR_MAX];
    int n_cursor = dataset_cursor(&t->data, cursor, CKPT_CURSOR_MAX);
    uint64_t state = npt_fnv1a(NPT_FNV1A_OFFSET, &t->n_params, sizeof t->n_params);
    state = npt_fnv1a(state, t->params, t->n_params * sizeof(float));
    if (t->opt.m) state = npt_fnv1a(state, t->opt.m, t->n_params * sizeof(float));
    if (t->opt.v) state = npt_fnv1a(state, t->opt.v, t->n_params * sizeof(float));
    state = npt_fnv1a(npt_fnv1a(state, &t->opt.step, sizeof t->opt.step), &t->meta.step, sizeof t->meta.step);
    uint64_t data = npt_fnv1a(NPT_FNV1A_OFFSET, &t->data.n_train, sizeof t->data.n_train);
    data = npt_fnv1a(data, cursor, (size_t)(n_cursor > 0 ? n_cursor : 0) * sizeof(int64_t));
    if (!running) data = sample_data(t, data); /* the files do not change under a run */
    const uint64_t mine[3] = {t->model.fingerprint, state, data};
    const char *const what[3] = {"base model weights (model)", "parameters, optimizer state or step (the --resume checkpoint)",
                                 "training data or data cursor"};
    int k = 0, bad = first_other_rank(mine, 3, &k);
    if (bad < 0) return 0;
    if (!running) return refuse_other_start(bad, what[k]);
    if (dist_rank() == 0)
        runlog_say(&t->log, "npt train: error: after step %lld rank %d of %d holds other %s than rank 0, which should "
                            "not happen (please report it); the checkpoint is not written",
                   (long long)t->meta.step, bad, dist_world(), what[k]);
    return 4;
}

/* Rank 0, when a run stops between steps: the state after the last step into an
 * emergency checkpoint, unless it is already on disk. 0: t->saved_path holds it; 1: no
 * step has run, nothing to save; -1: the save failed (its error is printed). */
static int save_last_state(Trainer *t) {
    if (t->saved_step == t->meta.step) return 0;
    if (t->meta.n_history == 0) return 1;
    return save_checkpoint(t, "emergency") ? -1 : 0;
}

/* SIGINT or SIGTERM arrived (util/stop.h); called between steps. The state goes into an
 * emergency checkpoint (resumable like any other) unless this step's state is already
 * on disk. Returns the exit status: 128 + the signal, or 4 if the save failed. */
static int stop_on_signal(Trainer *t, int sig) {
    int rc = 128 + sig;
    if (dist_rank() > 0) return dist_bcast_int(rc); /* rank 0 saves; its outcome is ours */
    int saved = save_last_state(t);
    if (saved < 0) rc = 4;
    else if (saved == 0)
        runlog_say(&t->log, "npt train: stopped by %s after step %lld; its state is in %s: continue with npt train %s --resume auto (and the same --set options)",
                   npt_signal_name(sig), (long long)t->meta.step, t->saved_path, t->recipe_arg);
    else
        runlog_say(&t->log, "npt train: stopped by %s before the first step; nothing to save", npt_signal_name(sig));
    return dist_bcast_int(rc);
}

/* The data could not be read, by this rank (here) or another. train_step rewound the
 * data cursor, so the failed step never happened: the state after the last step is
 * saved as after a signal, and once the data is readable again --resume auto goes on as
 * if nothing had stopped it. A rank's own error line comes from that rank. Returns 1, or
 * 4 if the state could not be saved. */
static int stop_on_read_error(Trainer *t, int here) {
    int rc = 1;
    if (here && dist_rank() > 0) print_error(t->data.io_err.msg);
    if (dist_rank() > 0) return dist_bcast_int(rc);
    const char *why = here ? t->data.io_err.msg : "another rank could not read the data (that rank says why)";
    int saved = save_last_state(t);
    if (saved < 0) rc = 4;
    if (saved == 0)
        runlog_say(&t->log, "npt train: error: %s; the state after step %lld is in %s: once the data reads again, continue with npt train %s --resume auto (and the same --set options)",
                   why, (long long)t->meta.step, t->saved_path, t->recipe_arg);
    else
        runlog_say(&t->log, "npt train: error: %s; %s", why,
                   saved > 0 ? "no step had run, nothing to save" : "the state could not be saved (above), the checkpoints on disk are older");
    return dist_bcast_int(rc);
}

/* Checkpoints and evaluations are rank 0's to write; its outcome, broadcast, is every
 * rank's, so all of them stop together if it failed. */
static int save_by_rank0(Trainer *t, const char *kind) {
    if (ranks_differ(t, 1)) return 4;
    return dist_bcast_int(dist_rank() == 0 ? save_checkpoint(t, kind) : 0);
}

static int eval_by_rank0(Trainer *t) { return dist_bcast_int(dist_rank() == 0 ? periodic_eval(t) : 0); }

static int run_loop(Trainer *t) {
    Recipe *r = &t->r;
    int64_t max_ids = (int64_t)r->train.grad_accum * r->train.batch_size;
    int64_t *ids = npt_xmalloc((size_t)max_ids * sizeof(int64_t), "sample ids");
    int rc = 0;
    while (t->meta.step < r->train.max_steps) {
        int sig = dist_max_int(npt_stop_requested()); /* a signal to any rank stops them all here */
        if (sig) {
            rc = stop_on_signal(t, sig);
            break;
        }
        CkptHistoryRow row;
        int n_ids;
        int skipped = train_step(t, &row, ids, &n_ids);
        report_teacher_cache(t);
        if (skipped < 0) {
            rc = stop_on_read_error(t, skipped == -1);
            break;
        }
        history_push(t, &row);
        runlog_metrics(&t->log, &row, t->meta.tokens_seen);
        if (skipped) {
            t->meta.skipped_total++;
            t->meta.consecutive_skips++;
            char list[512] = "";
            for (int i = 0, o = 0; i < n_ids && o < (int)sizeof list - 24; i++)
                o += snprintf(list + o, sizeof list - (size_t)o, "%s%lld", i ? "," : "", (long long)ids[i]);
            runlog_say(&t->log, "skipped non-finite batch at step %lld (loss %g, grad norm %g), samples [%s]; %d in a row",
                       (long long)t->meta.step, row.loss, row.grad_norm, list, t->meta.consecutive_skips);
            if (dist_rank() == 0) debug_skipped_step(t, ids, n_ids);
            if (!r->train.skip_nonfinite || t->meta.consecutive_skips >= r->train.max_consecutive_skips) {
                if (save_by_rank0(t, "emergency")) {
                    rc = 4;
                    break;
                }
                runlog_say(&t->log, "npt train: error: stopping after %d consecutive non-finite batch%s (train.max_consecutive_skips %d%s); the last good state is saved in %s",
                           t->meta.consecutive_skips, t->meta.consecutive_skips == 1 ? "" : "es", r->train.max_consecutive_skips,
                           r->train.skip_nonfinite ? "" : ", skip_nonfinite is off", r->output_dir);
                rc = 3;
                break;
            }
            continue;
        }
        t->meta.consecutive_skips = 0;
        if (in_list(t->nudge, t->n_nudge, t->meta.step)) t->params[0] = nextafterf(t->params[0], INFINITY);
        t->meta.last_loss = row.loss;
        if (npt_count_nonfinite(t->params, t->n_params)) { /* cannot happen with finite grads; never save it */
            runlog_say(&t->log, "npt train: error: parameters became non-finite at step %lld although the gradients were finite; lower train.lr",
                       (long long)t->meta.step);
            rc = 4;
            break;
        }
        int last = t->meta.step == r->train.max_steps;
        if (t->meta.step % r->log.every == 0 || last) runlog_status(&t->log, &row, r->train.max_steps, t->meta.skipped_total, last);
        if (r->eval.every && (t->meta.step % r->eval.every == 0 || last) && eval_by_rank0(t)) {
            rc = 4;
            break;
        }
        if (t->meta.step % r->checkpoint.every == 0 && !last) {
            /* best.h5 first: the periodic checkpoint records the new best_loss, so a run
             * stopped between the two would resume past an interval whose best.h5 was
             * never written; this way it resumes before it and judges it again */
            int best = interval_is_best(t);
            if ((best && save_by_rank0(t, "best")) || save_by_rank0(t, "periodic")) {
                rc = 4;
                break;
            }
        }
    }
    if (rc == 0) {
        int best = interval_is_best(t);
        rc = (best && save_by_rank0(t, "best")) || save_by_rank0(t, "final") ? 4 : 0;
    }
    free(ids);
    return rc;
}

static void trainer_free(Trainer *t) {
    runlog_close(&t->log);
    if (t->dir_fd >= 0) close(t->dir_fd); /* last: the run's files are complete */
    if (t->runner.teacher_cache) teacher_cache_close(&t->cache); /* never opened: fd is 0, not ours */
    objective_free(&t->runner);
    optim_free(&t->opt);
    if (t->have_npt) npt_free(&t->npt);
    else if (t->grads) free(t->grads);
    dataset_free(&t->data);
    if (t->tok) tokenizer_free(t->tok);
    if (t->model.weights_block) llama_free(&t->model);
    free(t->meta.history);
    free(t->recipe_json);
    free(t->tokens);
    free(t->eval_tokens);
    free(t->sample_ids);
    free(t->poison);
    free(t->poison_grads);
    free(t->drop);
    free(t->nudge);
    free(t->fail_reads);
    free(t->fail_best);
    recipe_free(&t->r);
}

/* Threads of this process: the recipe's, else the cores it may run on. When an MPI
 * launcher left the ranks unbound (each sees every core of its machine), the cores are
 * shared among the machine's ranks instead of oversubscribed. */
static int default_threads(const Recipe *r) {
    if (r->threads > 0) return r->threads;
    int procs = omp_get_num_procs(), local = dist_local_world();
    if (local > 1 && procs >= sysconf(_SC_NPROCESSORS_ONLN)) procs /= local;
    return procs > 0 ? procs : 1;
}

/* What a recipe cannot do in an MPI run, said before anything runs. */
static int check_world(const Trainer *t) {
    int W = dist_world(), A = t->r.train.grad_accum;
    if (W == 1) return 0;
    if (A % W)
        return fail("train.grad_accum is %d, not a multiple of the %d MPI ranks (rank k runs micro-batches k, k + %d, ... of "
                    "every step); set --set train.grad_accum=%d, or run a number of ranks that divides %d",
                    A, W, W, (A + W - 1) / W * W, A);
    if (t->oc.distill && t->r.train.teacher_cache_gb > 0)
        return fail("train.teacher_cache_gb works in one process only (in an MPI run a window meets a different rank "
                    "every epoch); set --set train.teacher_cache_gb=0");
    return 0;
}

/* The metrics log whose lines a resumed run keeps: its own, or, rewound into a new
 * output_dir (--set output_dir=NEW --resume OLD/ckpt), the one beside the checkpoint,
 * whose rows up to it are this run's too. NEW holds no log of its own then: another
 * run's files there were refused (refuse_other_run). */
static void resumed_metrics_source(const Trainer *t, const char *metrics, char *out, size_t cap) {
    char dir[sizeof t->saved_path];
    npt_dir_of(t->saved_path, dir, sizeof dir);
    if (t->saved_step < 0 || same_directory(dir, t->r.output_dir)) snprintf(out, cap, "%s", metrics);
    else snprintf(out, cap, "%s/%s", dir, t->r.log.metrics_file);
}

/* Rank 0's logs: on resume metrics.jsonl is made the checkpoint's history, one line per
 * row, and eval.jsonl cut back to its step; then metrics.jsonl is opened. Neither a line
 * count (a log an older npt rewound into a new directory starts at the checkpoint's
 * step) nor a step number (a skipped row repeats the step before it) finds the rows the
 * history holds: their content does (runlog_restore_metrics). */
static int open_logs(Trainer *t, const char *resume, const char *metrics) {
    NptErr err;
    char eval_log[4300], source[sizeof t->saved_path + RECIPE_PATH_MAX];
    eval_log_path(t, eval_log, sizeof eval_log);
    resumed_metrics_source(t, metrics, source, sizeof source);
    if (output_dir_moved(t, &err)) return fail("%s", err.msg);
    /* one that found no checkpoint (no history) starts them over like a new run */
    if (resume && (runlog_restore_metrics(metrics, source, t->meta.history, t->meta.n_history, &err) ||
                   runlog_trim_after_step(eval_log, t->meta.step, &err)))
        return fail("%s", err.msg);
    if (runlog_open(&t->log, metrics, resume != NULL, t->meta.step, &err)) return fail("%s", err.msg);
    return 0;
}

/* The recipe, with --set applied and checked for training; 0, or 1 with the errors
 * printed; the caller recipe_frees t->r either way (a failed load keeps what was valid). */
static int load_recipe(Trainer *t, const TrainArgs *a) {
    RecipeDiag diag;
    memset(&diag, 0, sizeof diag);
    char recipe_path[4096];
    NptErr err;
    if (recipe_resolve_path(a->recipe_path, recipe_path, sizeof recipe_path, &err)) return fail("%s", err.msg);
    int bad = recipe_load(recipe_path, a->overrides, a->n_overrides, &t->r, &diag);
    char *text = recipe_diag_text(&diag);
    if (text && *text && dist_rank() == 0) fputs(text, stderr);
    recipe_diag_free(&diag);
    if (bad) {
        fail("%s%s is not a valid recipe (see the errors above; npt validate shows them too)",
             dist_rank() > 0 && text ? text : "", recipe_path);
        free(text);
        return 1;
    }
    free(text);
    if (recipe_check_for_training(&t->r, &err)) return fail("%s", err.msg);
    return 0;
}

/* --resume PATH must name a checkpoint that is there, checked before anything else: a
 * missing one is the error to report (not the run in output_dir it was to continue),
 * and a run that cannot start creates no output_dir. */
static int check_resume_file(const char *resume) {
    NptErr err;
    if (!resume || !strcmp(resume, "auto") || npt_check_input(resume, "checkpoint", &err) == 0) return 0;
    if (errno == ENOENT)
        return fail("--resume %s: the checkpoint does not exist; give a checkpoint of the run (its ckpt-*.h5 or "
                    "final.h5), or --resume auto for the newest in output_dir", resume);
    return fail("--resume: %s", err.msg);
}

/* One run, from the recipe to final.h5. In an MPI run each setup phase ends in
 * ranks_agree, so a rank that fails takes the others down with it instead of leaving
 * them in a collective. */
static int run_session(const TrainArgs *a) {
    Trainer *t = npt_xcalloc(1, sizeof *t, "trainer");
    NptErr err;
    int rc = 1;
    if (ranks_agree(load_recipe(t, a) || check_resume_file(a->resume)) || options_differ(t, a)) {
        recipe_free(&t->r); /* t is zeroed: nothing to free when no recipe was read */
        free(t);
        return 1;
    }
    t->recipe_arg = a->recipe_path;
    t->saved_step = -1;
    t->dir_fd = -1;
    /* from here Ctrl-C / SIGTERM stop at the next clean point */
    if (ranks_agree(npt_stop_install(&err) ? fail("%s", err.msg) : 0)) {
        recipe_free(&t->r);
        free(t);
        return 4;
    }
    int threads = default_threads(&t->r), W = dist_world(), root = dist_rank() == 0;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    t->meta.best_loss = INFINITY;
    t->recipe_json = recipe_to_json(&t->r);
    char metrics[2 * RECIPE_PATH_MAX + 2];
    snprintf(metrics, sizeof metrics, "%s/%s", t->r.output_dir, t->r.log.metrics_file);
    if (ranks_agree(load_base_model(t))) goto done;
    /* text data is tokenized once into the token cache: rank 0 first, then the first
     * rank of every other machine (which finds rank 0's cache on a shared cache_dir and
     * tokenizes once for its machine on a local one), then the rest, who find theirs */
    int my_turn = root ? 0 : dist_local_rank() == 0 ? 1 : 2;
    for (int turn = 0; turn < 3; turn++)
        if (ranks_agree(turn == my_turn ? check_model_open_data(t) : 0)) goto done;
    if (ranks_agree(setup_training(t) || check_world(t))) goto done;
    if (ranks_agree(root && (npt_mkdir_p(t->r.output_dir, &err) ? fail("output_dir: %s", err.msg)
                                                                 : lock_output_dir(t) || refuse_other_run(t, a->resume, metrics))))
        goto done;
    if (ranks_agree(a->resume ? resume_from(t, a->resume) : 0) || ranks_differ(t, 0)) goto done;
    if (ranks_agree(open_teacher_cache(t))) goto done; /* after the checks that refuse the run directory */
    if (!root) runlog_open_quiet(&t->log);
    if (ranks_agree(root ? open_logs(t, a->resume, metrics) : 0)) goto done;
    defer_errors = 0; /* from here a rank's own error (reading its data) is printed at once */
    /* collectives on every rank; only rank 0 prints. Threads are a per-machine setting,
     * so machines with more ranks run fewer each: the line gives the range. The base is
     * once per machine unless some rank holds its own copy beside others. */
    int most_threads = dist_max_int(threads), fewest_threads = -dist_max_int(-threads);
    int private_copy = !t->model.mapped_bytes && dist_local_world() > 1;
    int one_copy = !dist_max_int(private_copy), machines = dist_machines();
    char ranks[200] = "", on_machines[32] = "", thread_range[32] = "";
    if (fewest_threads != most_threads) snprintf(thread_range, sizeof thread_range, "%d-", fewest_threads);
    if (machines > 1) snprintf(on_machines, sizeof on_machines, " on %d machines", machines);
    if (W > 1)
        snprintf(ranks, sizeof ranks, " on each of %d MPI ranks%s (micro-batches split over them%s)", W, on_machines,
                 one_copy ? "; one copy of the base model per machine" : "");
    inform("npt train: %s | model %s (%d layers, dim %d) | %s%s | %d adapter layers, rank %d, %zu trainable params | data %s: %llu training + %llu validation windows of %d | %s%d thread%s%s%s\n",
           t->r.name, t->r.model, t->model.cfg.n_layers, t->model.cfg.dim, t->oc.distill ? "distill" : "lm",
           t->have_npt ? (t->npt.safe_mode ? " safe mode" : " full mode") : " all weights", t->have_npt ? t->npt.n_adapters : 0,
           t->have_npt ? t->npt.rank : 0, t->n_params, t->r.data.n_sources ? "(data.sources)" : t->r.data.train, (unsigned long long)t->data.n_train,
           (unsigned long long)t->data.n_valid, t->r.data.seq_len, thread_range, most_threads, most_threads == 1 ? "" : "s",
           t->runner.n_shards > 1 ? " (each micro-batch split over them)" : "", ranks);
    rc = run_loop(t);
    if (t->runner.teacher_cache) {
        int32_t stored = teacher_cache_stored(&t->cache);
        inform("npt train: teacher cache: %lld hits, %lld misses, %d window%s stored\n", (long long)t->cache.hits,
               (long long)t->cache.misses, stored, stored == 1 ? "" : "s");
    }
    if (rc == 0) inform("npt train: done: %s/final.h5 (step %lld, last loss %.6g, %lld skipped)\n", t->r.output_dir,
                        (long long)t->meta.step, t->meta.last_loss, (long long)t->meta.skipped_total);
done:
    /* a stop during setup (tokenizing the data) ends it as a failure to read the data */
    int sig = npt_stop_requested();
    if (rc == 1 && sig) rc = 128 + sig;
    trainer_free(t);
    free(t);
    return rc;
}

int train_run(const TrainArgs *a) {
    NptErr err;
    if (dist_init(&err)) return fail("%s", err.msg);
    defer_errors = 1;
    int rc = run_session(a);
    dist_finalize();
    return rc;
}
