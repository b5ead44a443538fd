/* train/ckpt_dir.c — checkpoints in a run directory: file names, keep-last rotation,
 * finding the checkpoint to resume from, and matching a checkpoint to a base model.
 *
 * Names: ckpt-%08lld.h5 (periodic, and emergency saves), best.h5, final.h5. A writer's
 * temp file is "<name>.tmp.<pid>.<x>" (util/atomic_file.h); one left by a crash is never
 * picked for resuming and is removed by the first rotation after it is a minute old. */
#include "checkpoint.h"
#include "../util/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ckpt_path_for(char *out, size_t out_size, const char *dir, const char *kind, int64_t step, NptErr *err) {
    int n;
    if (strcmp(kind, "periodic") == 0 || strcmp(kind, "emergency") == 0)
        n = snprintf(out, out_size, "%s/ckpt-%08lld.h5", dir, (long long)step);
    else if (strcmp(kind, "best") == 0 || strcmp(kind, "final") == 0)
        n = snprintf(out, out_size, "%s/%s.h5", dir, kind);
    else
        return npt_fail(err, "unknown checkpoint kind \"%s\" (periodic, best, final or emergency)", kind);
    if (n < 0 || (size_t)n >= out_size) return npt_fail(err, "checkpoint path in %s is too long", dir);
    return 0;
}

/* Step of a periodic checkpoint name "ckpt-<digits>.h5", or -1. */
static long long periodic_step(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5, *digits = p;
    long long step = 0;
    while (*p >= '0' && *p <= '9' && step < (1LL << 58)) step = step * 10 + (*p++ - '0');
    return p > digits && strcmp(p, ".h5") == 0 ? step : -1;
}

static int cmp_desc(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ckpt_rotate(const char *dir, int keep_last, NptErr *err) {
    DIR *d = opendir(dir);
    if (!d) return npt_fail(err, "cannot list run directory %s: %s", dir, strerror(errno));
    long long *steps = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    char path[4400];
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d))) {
        long long step = periodic_step(e->d_name);
        if (step < 0) { /* what killed writers left: ours are locked while written */
            npt_temp_sweep_entry(dirfd(d), dir, e->d_name, NULL, now);
            continue;
        }
        if (rc == 0 && n == cap) {
            cap = cap ? 2 * cap : 64;
            long long *grown = realloc(steps, cap * sizeof *steps);
            if (!grown) rc = npt_fail(err, "out of memory listing %s", dir);
            steps = grown ? grown : steps;
        }
        if (rc == 0) steps[n++] = step;
    }
    closedir(d);
    if (rc == 0 && keep_last > 0 && n > (size_t)keep_last) {
        qsort(steps, n, sizeof *steps, cmp_desc);
        for (size_t i = (size_t)keep_last; rc == 0 && i < n; i++) {
            snprintf(path, sizeof path, "%s/ckpt-%08lld.h5", dir, steps[i]);
            if (unlink(path) != 0 && errno != ENOENT)
                rc = npt_fail(err, "cannot delete old checkpoint %s: %s", path, strerror(errno));
        }
    }
    free(steps);
    return rc;
}

typedef struct {
    int64_t step;
    int is_final;
    char name[256];
} Candidate;

/* Highest step first; on a tie final.h5 first: it is the run's own last word. */
static int cmp_candidates(const void *a, const void *b) {
    const Candidate *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? 1 : -1;
    return y->is_final - x->is_final;
}

int ckpt_read_step(const char *path, int64_t *step, NptErr *err) {
    CkptFile *f = ckpt_open(path, err);
    if (!f) return -1;
    CkptMeta m;
    int rc = ckpt_read_meta(f, &m, err);
    if (rc == 0) *step = m.step;
    ckpt_free(&m, NULL, 0);
    ckpt_close(f);
    return rc;
}

/* Every checkpoint file of dir was skipped: the run's state is on disk but unusable, and a
 * fresh start would write over it, so that is an error, not "nothing to resume". */
static int none_usable(const char *dir, int n_files, const char *newest_why, NptErr *err) {
    int one = n_files == 1;
    return npt_fail(err, "%s holds %d checkpoint file%s and none can be resumed: keep %s for inspection (npt inspect) "
                    "and resume from a good copy elsewhere, or move %s away to start afresh; the newest: %s",
                    dir, n_files, one ? "" : "s", one ? "it" : "them", one ? "it" : "them", newest_why);
}

int ckpt_find_latest(const char *dir, char *out, size_t out_size, int warn, NptErr *err) {
    out[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return npt_fail(err, "cannot list run directory %s: %s", dir, strerror(errno));
    }
    Candidate *c = NULL;
    size_t n = 0, cap = 0;
    char path[4400];
    struct dirent *e;
    NptErr why, newest_why = {""};
    int n_files = 0;
    while ((e = readdir(d))) {
        int is_final = strcmp(e->d_name, "final.h5") == 0;
        if (!is_final && periodic_step(e->d_name) < 0) continue;
        n_files++;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int64_t step;
        if (ckpt_read_step(path, &step, &why)) {
            if (warn) fprintf(stderr, "npt: warning: skipped for resuming: %s\n", why.msg);
            if (!newest_why.msg[0]) newest_why = why; /* until a file with a step says otherwise */
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            Candidate *grown = realloc(c, cap * sizeof *c);
            if (!grown) {
                free(c);
                closedir(d);
                return npt_fail(err, "out of memory listing %s", dir);
            }
            c = grown;
        }
        c[n++] = (Candidate){step, is_final, ""};
        snprintf(c[n - 1].name, sizeof c[n - 1].name, "%s", e->d_name);
    }
    closedir(d);
    /* The newest whose every tensor reads back intact and finite: usually the first. */
    if (n) qsort(c, n, sizeof *c, cmp_candidates);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, c[i].name);
        CkptMeta m;
        CkptTensor *t;
        int k;
        if (ckpt_load(path, &m, &t, &k, &why)) {
            if (warn) fprintf(stderr, "npt: warning: skipped for resuming: %s\n", why.msg);
            if (i == 0) newest_why = why; /* the newest's reason */
            continue;
        }
        ckpt_free(&m, t, k);
        if (strlen(path) >= out_size) {
            free(c);
            return npt_fail(err, "checkpoint path %s is too long", path);
        }
        memcpy(out, path, strlen(path) + 1);
        found = 1;
    }
    free(c);
    if (!found && n_files > 0) return none_usable(dir, n_files, newest_why.msg, err);
    return found;
}

/* Whether two recorded config values differ (0 = not recorded). Compared as the float
 * the model computes with, so a value read as float or double matches itself. */
static int config_differs(double a, double b) { return a != 0 && b != 0 && (float)a != (float)b; }

int ckpt_check_base(const char *ckpt_path, const CkptMeta *c, const CkptMeta *m, NptErr *err) {
    /* Equal fingerprints mean equal weights, whatever the file format or path. */
    int same_weights = c->base_fingerprint == m->base_fingerprint && c->dim == m->dim && c->hidden_dim == m->hidden_dim &&
                       c->n_layers == m->n_layers && c->n_heads == m->n_heads && c->n_kv_heads == m->n_kv_heads &&
                       c->vocab_size == m->vocab_size;
    /* The same weights under another norm eps or RoPE base compute something else. */
    const char *what = c->n_npt_layers ? "the adapters" : "the weights"; /* an all-weights lm run has no adapters */
    if (same_weights && (config_differs(c->norm_eps, m->norm_eps) || config_differs(c->rope_theta, m->rope_theta)))
        return npt_fail(err,
                        "%s in %s were trained on a model with norm eps %g and rope theta %g, but %s has the same "
                        "weights with norm eps %g and rope theta %g; use the configuration %s were trained with",
                        what, ckpt_path, c->norm_eps, c->rope_theta, m->base_path, m->norm_eps, m->rope_theta, what);
    if (same_weights) return 0;
    return npt_fail(err,
                    "%s in %s were trained on %s (%s, fingerprint %016llx, dim %d, hidden_dim %d, %d layers, %d heads, "
                    "%d kv heads) but the model given is %s (%s, fingerprint %016llx, dim %d, hidden_dim %d, %d layers, "
                    "%d heads, %d kv heads); use the base model %s were trained on",
                    what, ckpt_path, c->base_path, c->base_format, (unsigned long long)c->base_fingerprint, c->dim,
                    c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, m->base_path, m->base_format,
                    (unsigned long long)m->base_fingerprint, m->dim, m->hidden_dim, m->n_layers, m->n_heads,
                    m->n_kv_heads, what);
}
