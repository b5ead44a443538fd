/* train/checkpoint.c — writing npt checkpoints (ckpt_save) and the HDF5 helpers shared
 * with the reader. The layout is documented in docs/checkpoint.md; keep them in sync.
 *
 * Atomicity: everything is written to "<path>.tmp.<pid>.<x>" in the target's directory, which
 * is flushed, closed and fsync'd, then renamed over the target, then the directory is
 * fsync'd. rename(2) is atomic, so a reader (or a crash) sees either the old file or the
 * complete new one. On failure the temp file is removed and the old checkpoint stays.
 * The temp file is written through NptH5Out (util/h5_out.h): a write the OS refuses (a
 * full disk) is reported with its errno and never reaches HDF5, which cannot close a
 * file after one (the process would crash in exit()). */
#include "checkpoint.h"
#include "ckpt_internal.h"
#include "../util/atomic_file.h" /* npt_temp_remove */
#include "../util/h5_out.h" /* NptH5Out: HDF5 files written whole or not at all */

#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_FLOATS ((hsize_t)1 << 18) /* 1 MiB of float32: fits HDF5's default chunk cache */

static int (*test_hook)(const char *tmp_path, void *ctx);
static void *test_hook_ctx;

void ckpt_set_test_hook(int (*hook)(const char *tmp_path, void *ctx), void *ctx) {
    test_hook = hook;
    test_hook_ctx = ctx;
}

/* ---------------------------------------------------------------- shared helpers */

void ckpt_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
    char *buf;
    size_t size;
} DetailCtx;

static herr_t first_error(unsigned n, const H5E_error2_t *e, void *ctx) {
    DetailCtx *d = ctx;
    if (n == 0 && e->desc) snprintf(d->buf, d->size, "%s", e->desc);
    return 0;
}

void ckpt_h5_detail(char *buf, size_t size) {
    DetailCtx d = {buf, size};
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, &d);
    /* HDF5 descriptions can embed newlines (e.g. ctime()); keep the message one line. */
    for (char *p = buf; *p; p++)
        if (*p == '\n') *p = ' ';
}

int ckpt_name_reserved(const char *name) {
    static const char *meta_objects[] = {"base", "state", "history", "recipe"};
    if (!name[0] || name[0] == '/' || strstr(name, "//") || name[strlen(name) - 1] == '/') return 1;
    size_t first = strcspn(name, "/");
    for (size_t i = 0; i < NPT_ARRAY_LEN(meta_objects); i++)
        if (strlen(meta_objects[i]) == first && strncmp(name, meta_objects[i], first) == 0) return 1;
    return 0;
}

/* ---------------------------------------------------------------- writing helpers */

typedef struct {
    hid_t file;
    const char *path; /* the target, for messages */
    NptErr *err;
    const NptH5Out *out;
} Writer;

/* A write the OS refused: nothing more needs writing, ckpt_save reports it. */
static int w_refused(const Writer *w) { return w->out && npt_h5out_failed(w->out); }

static int wfail(Writer *w, const char *what) {
    char detail[512];
    ckpt_h5_detail(detail, sizeof detail);
    return npt_fail(w->err, "cannot write checkpoint %s: %s%s%s%s", w->path, what,
                    detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
}

/* An attribute: scalar when n is NULL, else a 1-D array of *n values (possibly none). */
static int put_attr(Writer *w, hid_t loc, const char *obj, const char *name, hid_t ftype,
                    hid_t mtype, const hsize_t *n, const void *value) {
    hid_t space = n ? H5Screate_simple(1, n, NULL) : H5Screate(H5S_SCALAR);
    hid_t attr = space < 0 ? -1 : H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = attr < 0 || H5Awrite(attr, mtype, value) < 0 ? -1 : 0;
    char what[256];
    snprintf(what, sizeof what, "attribute '%s' of %s", name, obj);
    if (rc) wfail(w, what); /* now, while HDF5's error stack says why */
    int closed = (attr < 0 || H5Aclose(attr) >= 0) & (space < 0 || H5Sclose(space) >= 0);
    if (!closed && rc == 0) rc = wfail(w, what);
    return rc;
}

/* Strings are fixed-length UTF-8 (NUL-terminated), sized to the value. Unlike
 * variable-length strings, which live in HDF5's unchecksummed global heap (where one
 * damaged byte can crash the HDF5 library), they sit inside checksummed metadata. */
static hid_t utf8_type(const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, strlen(value) + 1) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0 ||
        H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        H5Tclose(t); /* already failing: its own result adds nothing */
        return -1;
    }
    return t;
}

static int put_str_attr(Writer *w, hid_t loc, const char *obj, const char *name, const char *value) {
    hid_t t = utf8_type(value);
    if (t < 0) return wfail(w, "string type");
    int rc = put_attr(w, loc, obj, name, t, t, NULL, value);
    if (H5Tclose(t) < 0 && rc == 0) rc = wfail(w, "string type");
    return rc;
}

static int put_i32(Writer *w, hid_t loc, const char *obj, const char *name, int v) {
    return put_attr(w, loc, obj, name, H5T_STD_I32LE, H5T_NATIVE_INT, NULL, &v);
}
static int put_i64(Writer *w, hid_t loc, const char *obj, const char *name, int64_t v) {
    return put_attr(w, loc, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, NULL, &v);
}
static int put_f64(Writer *w, hid_t loc, const char *obj, const char *name, double v) {
    return put_attr(w, loc, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, NULL, &v);
}

/* A dataset at an absolute path; missing parent groups are created. */
static int put_dataset(Writer *w, const char *name, hid_t ftype, hid_t mtype, int ndim,
                       const hsize_t *dims, const void *buf) {
    hsize_t count = 1;
    for (int i = 0; i < ndim; i++) count *= dims[i];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    hid_t dset = -1;
    int props_ok = lcpl >= 0 && dcpl >= 0 && space >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0;
    /* Chunks of at most CHUNK_FLOATS carry a Fletcher-32 checksum, so damaged data is
     * an error on read rather than silently wrong numbers, and readers can stream a
     * large tensor one chunk at a time. (Empty datasets cannot be chunked.) */
    if (props_ok && count > 0) {
        hsize_t chunk[CKPT_MAX_DIMS], budget = CHUNK_FLOATS;
        for (int d = ndim - 1; d >= 0; d--) {
            chunk[d] = dims[d] < budget ? dims[d] : budget;
            budget = budget / chunk[d] ? budget / chunk[d] : 1;
        }
        props_ok = H5Pset_chunk(dcpl, ndim, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0;
    }
    if (props_ok) dset = H5Dcreate2(w->file, name, ftype, space, lcpl, dcpl, H5P_DEFAULT);
    /* Zero-length datasets (an empty history) have nothing to write. */
    int rc = dset < 0 || (count > 0 && H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) ? -1 : 0;
    char what[256];
    snprintf(what, sizeof what, "dataset %s", name);
    if (rc) wfail(w, what); /* now, while HDF5's error stack says why */
    int closed = (dset < 0 || H5Dclose(dset) >= 0) & (space < 0 || H5Sclose(space) >= 0) &
                 (dcpl < 0 || H5Pclose(dcpl) >= 0) & (lcpl < 0 || H5Pclose(lcpl) >= 0);
    if (!closed && rc == 0) rc = wfail(w, what);
    return rc;
}

static int close_group(Writer *w, hid_t g, const char *name, int rc) {
    if (H5Gclose(g) < 0 && rc == 0) {
        char what[128];
        snprintf(what, sizeof what, "group %s", name);
        rc = wfail(w, what);
    }
    return rc;
}

static hid_t make_group(Writer *w, const char *name) {
    hid_t g = H5Gcreate2(w->file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        char what[128];
        snprintf(what, sizeof what, "group %s", name);
        wfail(w, what);
    }
    return g;
}

/* ---------------------------------------------------------------- the layout */

static int write_root(Writer *w, const CkptMeta *m) {
    char created[32];
    time_t now = time(NULL);
    struct tm tm;
    if (now == (time_t)-1 || !gmtime_r(&now, &tm) || !strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(created, sizeof created, "unknown"); /* no clock: the file is still good */
    hid_t f = w->file;
    if (put_str_attr(w, f, "/", "format", CKPT_FORMAT) || put_i32(w, f, "/", "format_version", CKPT_FORMAT_VERSION) ||
        put_i64(w, f, "/", "step", m->step) || put_i64(w, f, "/", "tokens_seen", m->tokens_seen) ||
        put_str_attr(w, f, "/", "kind", m->kind) || put_str_attr(w, f, "/", "created", created) ||
        put_str_attr(w, f, "/", "npt_version", NPT_VERSION))
        return -1;
    /* A one-element dataset rather than a scalar so that it can be chunked and so
     * carry a checksum like every other dataset. */
    const char *recipe = m->recipe_json ? m->recipe_json : "{}";
    hid_t t = utf8_type(recipe);
    if (t < 0) return wfail(w, "string type");
    hsize_t one = 1;
    int rc = put_dataset(w, "/recipe", t, t, 1, &one, recipe);
    if (H5Tclose(t) < 0 && rc == 0) rc = wfail(w, "string type");
    return rc;
}

/* The run's tokenizer (absolute path, size, content hash), when it set one. */
static int write_tokenizer(Writer *w, hid_t g, const CkptMeta *m) {
    if (!m->tokenizer_path[0]) return 0;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)m->tokenizer_fingerprint);
    return put_str_attr(w, g, "/base", "tokenizer_path", m->tokenizer_path) ||
           put_i64(w, g, "/base", "tokenizer_bytes", m->tokenizer_bytes) ||
           put_str_attr(w, g, "/base", "tokenizer_fingerprint", hex);
}

static int write_base(Writer *w, const CkptMeta *m) {
    hid_t g = make_group(w, "/base");
    if (g < 0) return -1;
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)m->base_fingerprint);
    const char *o = "/base";
    int rc = put_str_attr(w, g, o, "path", m->base_path) || put_str_attr(w, g, o, "architecture", m->base_arch) ||
             put_str_attr(w, g, o, "format", m->base_format) || put_str_attr(w, g, o, "fingerprint", hex) ||
             put_attr(w, g, o, "fingerprint_u64", H5T_STD_U64LE, H5T_NATIVE_UINT64, NULL, &m->base_fingerprint) ||
             put_i32(w, g, o, "dim", m->dim) || put_i32(w, g, o, "hidden_dim", m->hidden_dim) ||
             put_i32(w, g, o, "n_layers", m->n_layers) || put_i32(w, g, o, "n_heads", m->n_heads) ||
             put_i32(w, g, o, "n_kv_heads", m->n_kv_heads) || put_i32(w, g, o, "vocab_size", m->vocab_size) ||
             put_f64(w, g, o, "norm_eps", m->norm_eps) || put_f64(w, g, o, "rope_theta", m->rope_theta) ||
             write_tokenizer(w, g, m)
                 ? -1 : 0;
    return close_group(w, g, o, rc);
}

static int write_adapters_and_optimizer(Writer *w, const CkptMeta *m) {
    hid_t g = make_group(w, "/adapters");
    if (g < 0) return -1;
    const char *o = "/adapters";
    hsize_t n_layers = (hsize_t)m->n_npt_layers;
    int rc = put_i32(w, g, o, "rank", m->rank) || put_i32(w, g, o, "safe_mode", m->safe_mode ? 1 : 0) ||
             put_f64(w, g, o, "modulation_scale", m->modulation_scale) ||
             put_attr(w, g, o, "layers", H5T_STD_I32LE, H5T_NATIVE_INT, &n_layers, m->npt_layers)
                 ? -1 : 0;
    if (close_group(w, g, o, rc)) return -1;
    g = make_group(w, "/optimizer");
    if (g < 0) return -1;
    rc = put_str_attr(w, g, "/optimizer", "type", m->optimizer[0] ? m->optimizer : "none") ||
         put_i64(w, g, "/optimizer", "step", m->opt_step)
             ? -1 : 0;
    return close_group(w, g, "/optimizer", rc);
}

static int write_state(Writer *w, const CkptMeta *m) {
    hid_t g = make_group(w, "/state");
    if (g < 0) return -1;
    const char *o = "/state";
    hsize_t four = 4, n_cursor = m->n_data_cursor > 0 && m->n_data_cursor <= CKPT_CURSOR_MAX ? (hsize_t)m->n_data_cursor : 4;
    int rc = put_attr(w, g, o, "rng", H5T_STD_U64LE, H5T_NATIVE_UINT64, &four, m->rng_state) ||
             put_attr(w, g, o, "data_cursor", H5T_STD_I64LE, H5T_NATIVE_INT64, &n_cursor, m->data_cursor) ||
             put_i64(w, g, o, "skipped_total", m->skipped_total) ||
             put_i32(w, g, o, "consecutive_skips", m->consecutive_skips) ||
             put_f64(w, g, o, "best_loss", m->best_loss) || put_f64(w, g, o, "last_loss", m->last_loss)
                 ? -1 : 0;
    return close_group(w, g, o, rc);
}

/* History is stored column-wise (one 1-D dataset per field) so h5py users get arrays. */
static int write_history(Writer *w, const CkptMeta *m) {
    hid_t g = make_group(w, "/history");
    if (g < 0 || close_group(w, g, "/history", 0)) return -1;
    hsize_t n = (hsize_t)m->n_history;
    int64_t *steps = npt_try_malloc(n * sizeof(int64_t), "checkpoint history", w->err);
    double *col = npt_try_malloc(n * sizeof(double), "checkpoint history", w->err);
    int8_t *skipped = npt_try_malloc(n, "checkpoint history", w->err);
    int rc = steps && col && skipped ? 0 : -1;
    for (hsize_t i = 0; rc == 0 && i < n; i++) {
        steps[i] = m->history[i].step;
        skipped[i] = (int8_t)(m->history[i].skipped != 0);
    }
    if (rc == 0)
        rc = put_dataset(w, "/history/step", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &n, steps) ||
             put_dataset(w, "/history/skipped", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &n, skipped)
                 ? -1 : 0;
    static const char *names[] = {"loss", "nmse", "reg", "lr", "grad_norm"};
    for (size_t k = 0; rc == 0 && k < NPT_ARRAY_LEN(names); k++) {
        for (hsize_t i = 0; i < n; i++) {
            const CkptHistoryRow *r = &m->history[i];
            double v[] = {r->loss, r->nmse, r->reg, r->lr, r->grad_norm};
            col[i] = v[k];
        }
        char name[64];
        snprintf(name, sizeof name, "/history/%s", names[k]);
        rc = put_dataset(w, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, col);
    }
    free(steps);
    free(col);
    free(skipped);
    return rc;
}

static int write_tensors(Writer *w, const CkptTensor *t, int n) {
    for (int i = 0; i < n && !w_refused(w); i++) {
        hsize_t dims[CKPT_MAX_DIMS];
        for (int d = 0; d < t[i].ndim; d++) dims[d] = (hsize_t)t[i].shape[d];
        char name[130];
        snprintf(name, sizeof name, "/%s", t[i].name);
        if (put_dataset(w, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t[i].ndim, dims, t[i].data)) return -1;
    }
    return 0;
}

/* Writes the temp file and closes it (fsync'd); on failure it is removed and err says
 * why (the OS's reason for a refused write, else the HDF5 step that failed). */
static int write_file(NptH5Out *out, const char *path, const CkptMeta *m, const CkptTensor *t, int n, NptErr *err) {
    Writer w = {-1, path, err, out};
    /* The HDF5 1.10 file format: all metadata and chunk indexes are checksummed, so
     * damage is detected instead of parsed (with 1.8's unchecksummed chunk B-trees a
     * flipped byte could silently read back zeros). Readable by HDF5 >= 1.10: every
     * current h5py and h5dump. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) {
        wfail(&w, "file access properties");
        if (fapl >= 0) H5Pclose(fapl);
        return -1;
    }
    w.file = npt_h5out_create(out, path, "checkpoint", fapl, err);
    if (H5Pclose(fapl) < 0 && w.file >= 0) {
        wfail(&w, "file access properties");
        npt_h5out_abort(out);
        return -1;
    }
    if (w.file < 0) return -1;
    int rc = write_root(&w, m) || write_base(&w, m) || write_adapters_and_optimizer(&w, m) ||
             write_state(&w, m) || write_history(&w, m) || write_tensors(&w, t, n)
                 ? -1 : 0;
    if (rc && !w_refused(&w)) { /* HDF5 refused something (err says what); nothing to keep */
        npt_h5out_abort(out);
        return -1;
    }
    return npt_h5out_close(out, err); /* the OS's reason if a write was refused */
}

static int check_inputs(const char *path, const CkptMeta *m, const CkptTensor *t, int n, NptErr *err) {
    if (!path || !path[0] || !m) return npt_fail(err, "cannot write checkpoint: no path or metadata given");
    if (n < 0 || (n > 0 && !t)) return npt_fail(err, "cannot write checkpoint %s: bad tensor list", path);
    if (!memchr(m->kind, '\0', sizeof m->kind) || !memchr(m->base_path, '\0', sizeof m->base_path) ||
        !memchr(m->base_arch, '\0', sizeof m->base_arch) || !memchr(m->base_format, '\0', sizeof m->base_format) ||
        !memchr(m->optimizer, '\0', sizeof m->optimizer) || !memchr(m->tokenizer_path, '\0', sizeof m->tokenizer_path))
        return npt_fail(err, "cannot write checkpoint %s: a metadata string is not NUL-terminated", path);
    if (m->n_npt_layers < 0 || m->n_npt_layers > CKPT_MAX_LAYERS)
        return npt_fail(err, "cannot write checkpoint %s: %d NPT layers (at most %d)", path, m->n_npt_layers, CKPT_MAX_LAYERS);
    if (m->n_history < 0 || (m->n_history > 0 && !m->history))
        return npt_fail(err, "cannot write checkpoint %s: bad history (%lld rows)", path, (long long)m->n_history);
    for (int i = 0; i < n; i++) {
        if (!memchr(t[i].name, '\0', sizeof t[i].name) || ckpt_name_reserved(t[i].name))
            return npt_fail(err, "cannot write checkpoint %s: tensor %d has an unusable name \"%.127s\" "
                            "(empty, absolute, or inside base/ state/ history/ recipe)", path, i, t[i].name);
        if (t[i].ndim < 1 || t[i].ndim > CKPT_MAX_DIMS || !t[i].data)
            return npt_fail(err, "cannot write checkpoint %s: tensor %s has %d dims (1..%d) or no data", path,
                            t[i].name, t[i].ndim, CKPT_MAX_DIMS);
        for (int d = 0; d < t[i].ndim; d++)
            if (t[i].shape[d] < 1)
                return npt_fail(err, "cannot write checkpoint %s: tensor %s has dimension %d of size %lld", path,
                                t[i].name, d, (long long)t[i].shape[d]);
    }
    NptErr why;
    if (ckpt_check_finite(path, t, n, &why))
        return npt_fail(err, "refusing to write checkpoint with non-finite values: %s", why.msg);
    return 0;
}

int ckpt_save(const char *path, const CkptMeta *meta, const CkptTensor *tensors, int n_tensors, NptErr *err) {
    ckpt_h5_quiet();
    if (check_inputs(path, meta, tensors, n_tensors, err)) return -1;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *d = dirname(dir);
    struct stat st;
    if (stat(d, &st) != 0)
        return npt_fail(err, "cannot write checkpoint %s: directory %s: %s", path, d, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return npt_fail(err, "cannot write checkpoint %s: %s is not a directory", path, d);

    NptH5Out out;
    if (write_file(&out, path, meta, tensors, n_tensors, err)) return -1;
    if (test_hook && test_hook(out.tmp, test_hook_ctx)) {
        npt_h5out_abort(&out);
        return npt_fail(err, "cannot write checkpoint %s: test hook failed the save before the rename", path);
    }
    return npt_h5out_commit(&out, err); /* rename over path, then sync the directory */
}
