/* train/ckpt_read.c — reading and validating npt checkpoints: open (format and version
 * checks, with a useful message for model files and truncated files), metadata, the
 * tensor list (with what the file really stores of each dataset, so one declared but
 * never written is refused instead of read as terabytes of fill values), streaming row
 * reads, structural validation, finiteness, and ckpt_load which does all of it. Every
 * failure is one NptErr line naming the file and object. */
#include "checkpoint.h"
#include "ckpt_internal.h"
#include "../model/llama.h" /* llama_block_floats: the size of an all-weights checkpoint's /weights/block */

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct CkptFile {
    hid_t file;
    char path[4096];
};


/* "<path>: <message>", with HDF5's own reason appended when it has one. */
static int rfail(const CkptFile *f, NptErr *err, int with_detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int rfail(const CkptFile *f, NptErr *err, int with_detail, const char *fmt, ...) {
    char msg[700], detail[300] = "";
    if (with_detail) ckpt_h5_detail(detail, sizeof detail);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return npt_fail(err, "%s: %s%s%s%s", f->path, msg, detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
}

static void dtype_name(hid_t t, char *buf, size_t size) {
    size_t bits = H5Tget_size(t) * 8;
    switch (H5Tget_class(t)) {
    case H5T_INTEGER: snprintf(buf, size, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits); break;
    case H5T_FLOAT: snprintf(buf, size, "float%zu", bits); break;
    case H5T_STRING: snprintf(buf, size, "string"); break;
    case H5T_ENUM: snprintf(buf, size, "enum"); break;
    case H5T_COMPOUND: snprintf(buf, size, "compound"); break;
    default: snprintf(buf, size, "non-numeric"); break;
    }
}

static const char *class_name(H5T_class_t c) {
    return c == H5T_INTEGER ? "an integer" : c == H5T_FLOAT ? "a float" : "a string";
}

/* ---------------------------------------------------------------- opening */

/* What a non-HDF5 file looks like, so the user learns they passed a model. */
static const char *sniff_model(const char *path) {
    unsigned char b[28] = {0};
    int fd = npt_open_input(path, NULL, NULL);
    if (fd < 0) return NULL;
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    if (n >= 4 && memcmp(b, "GGUF", 4) == 0) return "a GGUF model file";
    if (n >= 9 && b[8] == '{') return "a safetensors model file";
    if (n >= 4 && memcmp(b, "24ka", 4) == 0) return "a llama2.c model file"; /* magic 0x616b3432 */
    if (n == (ssize_t)sizeof b) { /* legacy llama2.c: 7 small positive int32 header fields */
        int plausible = 1;
        for (int i = 0; i < 7; i++) {
            int32_t raw;
            memcpy(&raw, b + 4 * i, 4);
            int64_t v = i == 5 ? llabs((int64_t)raw) : raw; /* vocab_size < 0 flags an unshared classifier */
            if (v < 1 || v > (1 << 22)) plausible = 0;
        }
        if (plausible) return "a llama2.c model file";
    }
    return NULL;
}

static int read_str_attr(CkptFile *f, const char *obj, const char *name, char *out, size_t size, NptErr *err);
static int read_attr(CkptFile *f, const char *obj, const char *name, H5T_class_t cls, hid_t mtype,
                     int min_n, int max_n, void *buf, int *n_out, NptErr *err);

static int check_format(CkptFile *f, NptErr *err) {
    if (H5Aexists(f->file, "format") <= 0)
        return npt_fail(err, "%s is not an npt checkpoint (no format attribute); it may be a model file — "
                        "use --model for models", f->path);
    char format[64];
    if (read_str_attr(f, "/", "format", format, sizeof format, err)) return -1;
    if (strcmp(format, CKPT_FORMAT) != 0)
        return npt_fail(err, "%s is not an npt checkpoint (format attribute is \"%s\", expected \"%s\")", f->path,
                        format, CKPT_FORMAT);
    int version;
    if (read_attr(f, "/", "format_version", H5T_INTEGER, H5T_NATIVE_INT, 1, 1, &version, NULL, err)) return -1;
    if (version > CKPT_FORMAT_VERSION)
        return npt_fail(err, "%s was written by a newer npt (format_version %d > %d); upgrade npt to read it",
                        f->path, version, CKPT_FORMAT_VERSION);
    if (version < 1) return rfail(f, err, 0, "invalid format_version %d", version);
    return 0;
}

CkptFile *ckpt_open(const char *path, NptErr *err) {
    ckpt_h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        npt_fail(err, "cannot open checkpoint %s: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        npt_fail(err, "%s is a directory, not an npt checkpoint (a model directory? use --model for models)", path);
        return NULL;
    }
    /* H5Fis_hdf5 and H5Fopen open the file by name: a pipe would block them */
    int probe = npt_check_input(path, "checkpoint", err);
    if (probe == -1) npt_fail(err, "cannot open checkpoint %s: %s", path, strerror(errno));
    if (probe) return NULL;
    htri_t is_h5 = H5Fis_hdf5(path);
    if (is_h5 == 0) {
        const char *looks = sniff_model(path);
        if (looks)
            npt_fail(err, "%s is not an npt checkpoint: it is not an HDF5 file (it looks like %s; use --model for models)",
                     path, looks);
        else
            npt_fail(err, "%s is not an npt checkpoint: it is not an HDF5 file", path);
        return NULL;
    }
    CkptFile *f = calloc(1, sizeof *f);
    if (!f) {
        npt_fail(err, "out of memory opening %s", path);
        return NULL;
    }
    snprintf(f->path, sizeof f->path, "%s", path);
    f->file = -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (is_h5 > 0 && fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0)
        f->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f->file < 0) {
        char detail[300];
        ckpt_h5_detail(detail, sizeof detail);
        if (strstr(detail, "truncated"))
            npt_fail(err, "%s is truncated (%s): it was cut short, e.g. by a crash or a full disk; use an earlier checkpoint",
                     path, detail);
        else
            npt_fail(err, "%s is a damaged HDF5 file and cannot be opened (%s)", path, detail[0] ? detail : "unknown reason");
        if (fapl >= 0) H5Pclose(fapl);
        free(f);
        return NULL;
    }
    H5Pclose(fapl);
    if (check_format(f, err)) {
        ckpt_close(f);
        return NULL;
    }
    return f;
}

void ckpt_close(CkptFile *f) {
    if (!f) return;
    if (f->file >= 0) H5Fclose(f->file);
    free(f);
}

/* ---------------------------------------------------------------- attributes */

/* Opens attribute name of group obj, checking that it exists and has type class cls. */
static hid_t open_attr(CkptFile *f, const char *obj, const char *name, H5T_class_t cls, NptErr *err) {
    if (strcmp(obj, "/") != 0 && H5Lexists(f->file, obj, H5P_DEFAULT) <= 0) {
        rfail(f, err, 0, "group %s missing", obj);
        return -1;
    }
    if (H5Aexists_by_name(f->file, obj, name, H5P_DEFAULT) <= 0) {
        rfail(f, err, 0, "attribute '%s' of %s missing", name, obj);
        return -1;
    }
    hid_t a = H5Aopen_by_name(f->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) {
        rfail(f, err, 1, "cannot open attribute '%s' of %s", name, obj);
        return -1;
    }
    hid_t t = H5Aget_type(a);
    if (t < 0 || H5Tget_class(t) != cls) {
        char have[32] = "unknown";
        if (t >= 0) dtype_name(t, have, sizeof have);
        rfail(f, err, 0, "attribute '%s' of %s has type %s, expected %s", name, obj, have, class_name(cls));
        if (t >= 0) H5Tclose(t);
        H5Aclose(a);
        return -1;
    }
    H5Tclose(t);
    return a;
}

/* Reads a numeric attribute of min_n..max_n values (a scalar counts as one) into buf,
 * converted to mtype; the count goes to *n_out if given. */
static int read_attr(CkptFile *f, const char *obj, const char *name, H5T_class_t cls, hid_t mtype,
                     int min_n, int max_n, void *buf, int *n_out, NptErr *err) {
    hid_t a = open_attr(f, obj, name, cls, err);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    hssize_t n = s < 0 ? -1 : H5Sget_simple_extent_npoints(s);
    int rc = 0;
    if (n < min_n || n > max_n) {
        if (min_n == max_n)
            rc = rfail(f, err, 0, "attribute '%s' of %s has %lld values, expected %d", name, obj, (long long)n, min_n);
        else
            rc = rfail(f, err, 0, "attribute '%s' of %s has %lld values, expected %d to %d", name, obj, (long long)n,
                       min_n, max_n);
    } else if (n > 0 && H5Aread(a, mtype, buf) < 0) {
        rc = rfail(f, err, 1, "cannot read attribute '%s' of %s", name, obj);
    }
    if (rc == 0 && n_out) *n_out = (int)n;
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return rc;
}

static int read_int(CkptFile *f, const char *obj, const char *name, int *v, NptErr *err) {
    return read_attr(f, obj, name, H5T_INTEGER, H5T_NATIVE_INT, 1, 1, v, NULL, err);
}
static int read_i64(CkptFile *f, const char *obj, const char *name, int64_t *v, NptErr *err) {
    return read_attr(f, obj, name, H5T_INTEGER, H5T_NATIVE_INT64, 1, 1, v, NULL, err);
}
static int read_f64(CkptFile *f, const char *obj, const char *name, double *v, NptErr *err) {
    return read_attr(f, obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, 1, 1, v, NULL, err);
}

/* A string held by attribute a or dataset d (exactly one is >= 0), variable or fixed
 * length, as a malloc'd NUL-terminated copy. */
static char *read_string(hid_t a, hid_t d) {
    hid_t t = a >= 0 ? H5Aget_type(a) : H5Dget_type(d);
    hid_t mem = H5Tcopy(H5T_C_S1);
    char *out = NULL;
    /* HDF5 does not convert between ASCII and UTF-8: read in the stored character set. */
    if (t < 0 || mem < 0 || H5Tset_cset(mem, H5Tget_cset(t)) < 0) goto done;
    htri_t vl = H5Tis_variable_str(t);
    if (vl > 0) {
        char *p = NULL;
        if (H5Tset_size(mem, H5T_VARIABLE) < 0) goto done;
        if ((a >= 0 ? H5Aread(a, mem, &p) : H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p)) < 0) goto done;
        out = p ? strdup(p) : strdup("");
        if (p) H5free_memory(p);
    } else if (vl == 0) {
        size_t size = H5Tget_size(t);
        if (H5Tset_size(mem, size + 1) < 0 || H5Tset_strpad(mem, H5T_STR_NULLTERM) < 0) goto done;
        out = calloc(1, size + 1);
        if (out && (a >= 0 ? H5Aread(a, mem, out) : H5Dread(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, out)) < 0) {
            free(out);
            out = NULL;
        }
    }
done:
    if (mem >= 0) H5Tclose(mem);
    if (t >= 0) H5Tclose(t);
    return out;
}

static int read_str_attr(CkptFile *f, const char *obj, const char *name, char *out, size_t size, NptErr *err) {
    hid_t a = open_attr(f, obj, name, H5T_STRING, err);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    hssize_t n = s < 0 ? -1 : H5Sget_simple_extent_npoints(s);
    if (s >= 0) H5Sclose(s);
    char *v = n == 1 ? read_string(a, -1) : NULL;
    H5Aclose(a);
    if (!v) return rfail(f, err, 1, "cannot read attribute '%s' of %s as one string", name, obj);
    int rc = 0;
    if (strlen(v) >= size)
        rc = rfail(f, err, 0, "attribute '%s' of %s is too long (%zu bytes, at most %zu)", name, obj, strlen(v), size - 1);
    else
        memcpy(out, v, strlen(v) + 1);
    free(v);
    return rc;
}

/* ---------------------------------------------------------------- metadata */

static int read_recipe(CkptFile *f, CkptMeta *m, NptErr *err) {
    if (H5Lexists(f->file, "/recipe", H5P_DEFAULT) <= 0) return rfail(f, err, 0, "dataset /recipe missing");
    hid_t d = H5Dopen2(f->file, "/recipe", H5P_DEFAULT);
    if (d < 0) return rfail(f, err, 1, "cannot open dataset /recipe");
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    int ok = t >= 0 && s >= 0 && H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(s) == 1;
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    m->recipe_json = ok ? read_string(-1, d) : NULL;
    H5Dclose(d);
    if (!ok) return rfail(f, err, 0, "dataset /recipe is not a single string");
    if (!m->recipe_json) return rfail(f, err, 1, "cannot read dataset /recipe");
    return 0;
}

/* The run's tokenizer, recorded since 2026-11-26 (older files leave tokenizer_path ""). */
static int read_tokenizer(CkptFile *f, CkptMeta *m, NptErr *err) {
    char hex[32], *end = NULL;
    if (read_str_attr(f, "/base", "tokenizer_path", m->tokenizer_path, sizeof m->tokenizer_path, err) ||
        read_i64(f, "/base", "tokenizer_bytes", &m->tokenizer_bytes, err) ||
        read_str_attr(f, "/base", "tokenizer_fingerprint", hex, sizeof hex, err))
        return -1;
    m->tokenizer_fingerprint = strtoull(hex, &end, 16);
    if (strlen(hex) != 16 || strspn(hex, "0123456789abcdef") != 16 || *end || !m->tokenizer_path[0] || m->tokenizer_bytes < 0)
        return rfail(f, err, 0, "/base tokenizer attributes are damaged (path \"%.200s\", %lld bytes, fingerprint \"%s\")",
                     m->tokenizer_path, (long long)m->tokenizer_bytes, hex);
    return 0;
}

static int read_base(CkptFile *f, CkptMeta *m, NptErr *err) {
    const char *o = "/base";
    char hex[32];
    if (read_str_attr(f, o, "path", m->base_path, sizeof m->base_path, err) ||
        read_str_attr(f, o, "architecture", m->base_arch, sizeof m->base_arch, err) ||
        read_str_attr(f, o, "format", m->base_format, sizeof m->base_format, err) ||
        read_str_attr(f, o, "fingerprint", hex, sizeof hex, err) ||
        read_attr(f, o, "fingerprint_u64", H5T_INTEGER, H5T_NATIVE_UINT64, 1, 1, &m->base_fingerprint, NULL, err) ||
        read_int(f, o, "dim", &m->dim, err) || read_int(f, o, "hidden_dim", &m->hidden_dim, err) ||
        read_int(f, o, "n_layers", &m->n_layers, err) || read_int(f, o, "n_heads", &m->n_heads, err) ||
        read_int(f, o, "n_kv_heads", &m->n_kv_heads, err) || read_int(f, o, "vocab_size", &m->vocab_size, err))
        return -1;
    /* recorded since 2026-11-25; older files leave them 0 (not compared) */
    m->norm_eps = m->rope_theta = 0;
    if (H5Aexists_by_name(f->file, o, "norm_eps", H5P_DEFAULT) > 0 && read_f64(f, o, "norm_eps", &m->norm_eps, err)) return -1;
    if (H5Aexists_by_name(f->file, o, "rope_theta", H5P_DEFAULT) > 0 && read_f64(f, o, "rope_theta", &m->rope_theta, err))
        return -1;
    if (H5Aexists_by_name(f->file, o, "tokenizer_path", H5P_DEFAULT) > 0 && read_tokenizer(f, m, err)) return -1;
    char expect[17];
    snprintf(expect, sizeof expect, "%016llx", (unsigned long long)m->base_fingerprint);
    if (strcmp(hex, expect) != 0)
        return rfail(f, err, 0, "/base attributes disagree: fingerprint \"%s\" but fingerprint_u64 is %s", hex, expect);
    return 0;
}

static int read_adapters_state(CkptFile *f, CkptMeta *m, NptErr *err) {
    if (read_int(f, "/adapters", "rank", &m->rank, err) || read_int(f, "/adapters", "safe_mode", &m->safe_mode, err) ||
        read_f64(f, "/adapters", "modulation_scale", &m->modulation_scale, err) ||
        read_attr(f, "/adapters", "layers", H5T_INTEGER, H5T_NATIVE_INT, 0, CKPT_MAX_LAYERS, m->npt_layers,
                  &m->n_npt_layers, err) ||
        read_str_attr(f, "/optimizer", "type", m->optimizer, sizeof m->optimizer, err) ||
        read_i64(f, "/optimizer", "step", &m->opt_step, err) ||
        read_attr(f, "/state", "rng", H5T_INTEGER, H5T_NATIVE_UINT64, 4, 4, m->rng_state, NULL, err) ||
        read_attr(f, "/state", "data_cursor", H5T_INTEGER, H5T_NATIVE_INT64, 1, CKPT_CURSOR_MAX, m->data_cursor,
                  &m->n_data_cursor, err) ||
        read_i64(f, "/state", "skipped_total", &m->skipped_total, err) ||
        read_int(f, "/state", "consecutive_skips", &m->consecutive_skips, err) ||
        read_f64(f, "/state", "best_loss", &m->best_loss, err) || read_f64(f, "/state", "last_loss", &m->last_loss, err))
        return -1;
    if (strcmp(m->optimizer, "none") == 0) m->optimizer[0] = '\0';
    return 0;
}

/* ---------------------------------------------------------------- storage */

/* deflate, the strongest filter HDF5 ships, expands its output at most ~1032 times */
enum { MAX_COMPRESSION = 1032 };

static void human_bytes(double b, char *buf, size_t size) {
    static const char *const unit[] = {"bytes", "KB", "MB", "GB", "TB", "PB", "EB"};
    int u = 0;
    while (b >= 1000 && u < 6) b /= 1000, u++;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

/* Chunks a chunked dataset's extent needs, and how many the file holds, into *need and
 * *have; 0 (nothing set) for other layouts, -1 when HDF5 cannot say. A compressed
 * dataset's byte count cannot tell a missing chunk from a well-compressed one (deflate
 * packs zeros 1000:1), but the chunk count can: a chunk never written is not allocated,
 * and reading it returns fill values. */
static int chunk_counts(hid_t d, hid_t dcpl, int64_t *need, int64_t *have) {
    if (H5Pget_layout(dcpl) != H5D_CHUNKED) return 0;
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK], held = 0;
    hid_t s = H5Dget_space(d);
    int ndim = s < 0 ? -1 : H5Sget_simple_extent_ndims(s);
    int ok = ndim >= 0 && H5Sget_simple_extent_dims(s, dims, NULL) >= 0 && H5Pget_chunk(dcpl, ndim, chunk) == ndim &&
             H5Dget_num_chunks(d, s, &held) >= 0; /* HDF5 1.10.8 refuses H5S_ALL here */
    if (s >= 0) H5Sclose(s);
    if (!ok) return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= chunk[i] ? (int64_t)((dims[i] + chunk[i] - 1) / chunk[i]) : 0;
    *need = n, *have = (int64_t)held;
    return 0;
}

/* What the file holds of dataset d's declared bytes (CKPT_STORED, _SHORT, _CHUNKS or
 * _OUTSIDE). A contiguous dataset never written has no storage at all, a chunked one only
 * the chunks written: reading the rest returns fill values, as many as declared (h5py's
 * create_dataset without data allocates nothing). */
static int dataset_storage(hid_t d, uint64_t declared, int64_t *stored, int64_t *chunks_need, int64_t *chunks_have) {
    hsize_t have = H5Dget_storage_size(d);
    *stored = (int64_t)have;
    hid_t dcpl = H5Dget_create_plist(d);
    if (dcpl < 0) return CKPT_STORAGE_SHORT;
    if (declared > 0 && chunk_counts(d, dcpl, chunks_need, chunks_have)) {
        H5Pclose(dcpl);
        *chunks_have = -1; /* HDF5 cannot count its chunks: not vouched for, and said so */
        return CKPT_STORAGE_CHUNKS;
    }
    int compressed = 0, outside = H5Pget_external_count(dcpl) > 0 || H5Pget_layout(dcpl) == H5D_VIRTUAL;
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf; i++) {
        unsigned flags, cfg;
        size_t nv = 0;
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nv, NULL, 0, NULL, &cfg);
        if (id != H5Z_FILTER_FLETCHER32 && id != H5Z_FILTER_SHUFFLE) compressed = 1;
    }
    H5Pclose(dcpl);
    if (outside) return CKPT_STORAGE_OUTSIDE;
    if (declared == 0) return CKPT_STORED;
    if (compressed ? have < (declared + MAX_COMPRESSION - 1) / MAX_COMPRESSION : have < declared) return CKPT_STORAGE_SHORT;
    if (*chunks_have < *chunks_need) return CKPT_STORAGE_CHUNKS;
    return CKPT_STORED;
}

int ckpt_tensor_unstored(const CkptTensor *t, char *why, size_t size) {
    if (t->storage == CKPT_STORED) return 0;
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
    int bits = 32;
    sscanf(t->dtype, "%*[a-z]%d", &bits);
    char declared[32], stored[32];
    human_bytes((double)n * (bits / 8), declared, sizeof declared);
    human_bytes((double)t->stored_bytes, stored, sizeof stored);
    if (t->storage == CKPT_STORAGE_OUTSIDE)
        snprintf(why, size, "dataset /%s keeps its %llu values in other files (external or virtual storage); "
                 "an npt checkpoint holds its own data: not read", t->name, (unsigned long long)n);
    else if (t->storage == CKPT_STORAGE_CHUNKS && t->chunks_have < 0)
        snprintf(why, size, "dataset /%s is chunked, and HDF5 cannot count its chunks to show all %llu values were "
                 "written (the file is damaged, or of an HDF5 this npt cannot check); not read", t->name,
                 (unsigned long long)n);
    else if (t->storage == CKPT_STORAGE_CHUNKS)
        snprintf(why, size, "dataset /%s declares %llu %s values in %lld chunks but the file holds %lld of them: the "
                 "others were never written and would read as fill values (the file was edited or damaged); not read",
                 t->name, (unsigned long long)n, t->dtype, (long long)t->chunks_need, (long long)t->chunks_have);
    else
        snprintf(why, size, "dataset /%s declares %llu %s values (%s) but the file holds %s of them: they were never "
                 "written (the file was edited or damaged); not read", t->name, (unsigned long long)n, t->dtype,
                 declared, stored);
    return 1;
}

/* A history column the file does not hold (see ckpt_tensor_unstored): why says so. */
static int column_unstored(hid_t d, hid_t type, hsize_t len, const char *name, const char *dtype, char *why, size_t size) {
    CkptTensor c = {.ndim = 1, .shape = {(int64_t)len}};
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.dtype, sizeof c.dtype, "%s", dtype);
    c.storage = dataset_storage(d, (uint64_t)len * H5Tget_size(type), &c.stored_bytes, &c.chunks_need, &c.chunks_have);
    return ckpt_tensor_unstored(&c, why, size);
}

/* One 1-D /history column into a malloc'd array of *n elements of mtype; *n < 0 on the
 * first call, then every column must have the same length. */
static void *read_column(CkptFile *f, const char *name, H5T_class_t cls, hid_t mtype, int64_t *n, NptErr *err) {
    char path[64];
    snprintf(path, sizeof path, "/history/%s", name);
    if (H5Lexists(f->file, "/history", H5P_DEFAULT) <= 0 || H5Lexists(f->file, path, H5P_DEFAULT) <= 0) {
        rfail(f, err, 0, "dataset %s missing", path);
        return NULL;
    }
    hid_t d = H5Dopen2(f->file, path, H5P_DEFAULT);
    hid_t t = d < 0 ? -1 : H5Dget_type(d), s = d < 0 ? -1 : H5Dget_space(d);
    void *buf = NULL;
    hsize_t len = 0;
    char have[32] = "unknown", why[400];
    if (t >= 0) dtype_name(t, have, sizeof have);
    if (d < 0 || t < 0 || s < 0)
        rfail(f, err, 1, "cannot open dataset %s", path);
    else if (H5Tget_class(t) != cls)
        rfail(f, err, 0, "dataset %s has dtype %s, expected %s", path, have, class_name(cls));
    else if (H5Sget_simple_extent_ndims(s) != 1 || H5Sget_simple_extent_dims(s, &len, NULL) < 0)
        rfail(f, err, 0, "dataset %s is not 1-D", path);
    else if (*n >= 0 && (int64_t)len != *n)
        rfail(f, err, 0, "dataset %s has %llu entries but /history/step has %lld", path, (unsigned long long)len,
              (long long)*n);
    else if (column_unstored(d, t, len, path + 1, have, why, sizeof why))
        rfail(f, err, 0, "%s", why);
    else if ((buf = npt_try_malloc(len * H5Tget_size(mtype), "checkpoint history", err)) &&
             len > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        rfail(f, err, 1, "cannot read dataset %s", path);
        free(buf);
        buf = NULL;
    }
    if (buf) *n = (int64_t)len;
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    return buf;
}

static int read_history(CkptFile *f, CkptMeta *m, NptErr *err) {
    static const char *names[] = {"loss", "nmse", "reg", "lr", "grad_norm"};
    int64_t n = -1;
    int64_t *steps = read_column(f, "step", H5T_INTEGER, H5T_NATIVE_INT64, &n, err);
    int8_t *skipped = steps ? read_column(f, "skipped", H5T_INTEGER, H5T_NATIVE_INT8, &n, err) : NULL;
    double *cols[5] = {0};
    int rc = skipped ? 0 : -1;
    for (int k = 0; rc == 0 && k < 5; k++)
        if (!(cols[k] = read_column(f, names[k], H5T_FLOAT, H5T_NATIVE_DOUBLE, &n, err))) rc = -1;
    if (rc == 0 && !(m->history = npt_try_malloc((size_t)n * sizeof *m->history, "checkpoint history", err))) rc = -1;
    for (int64_t i = 0; rc == 0 && i < n; i++)
        m->history[i] = (CkptHistoryRow){.step = steps[i], .loss = cols[0][i], .nmse = cols[1][i], .reg = cols[2][i],
                                         .lr = cols[3][i], .grad_norm = cols[4][i], .skipped = skipped[i] != 0};
    if (rc == 0) m->n_history = n;
    free(steps);
    free(skipped);
    for (int k = 0; k < 5; k++) free(cols[k]);
    return rc;
}

/* Values that would make shapes or layer indices meaningless. */
static int check_meta(CkptFile *f, const CkptMeta *m, NptErr *err) {
    struct { const char *obj, *name; int64_t v; } positive[] = {
        {"/base", "dim", m->dim},           {"/base", "hidden_dim", m->hidden_dim}, {"/base", "n_layers", m->n_layers},
        {"/base", "n_heads", m->n_heads},   {"/base", "n_kv_heads", m->n_kv_heads}, {"/base", "vocab_size", m->vocab_size},
        {"/adapters", "rank", m->rank},
    };
    for (size_t i = 0; i < NPT_ARRAY_LEN(positive); i++)
        if (positive[i].v < 1 && !(positive[i].name[0] == 'r' && m->n_npt_layers == 0)) /* rank 0: no adapters (all-weights lm) */
            return rfail(f, err, 0, "attribute '%s' of %s is %lld; it must be at least 1", positive[i].name,
                         positive[i].obj, (long long)positive[i].v);
    /* rank 0 with no layers marks an all-weights checkpoint, a rank with layers adapters;
     * a rank with no layers is neither, and readers would disagree on what it is */
    if (m->rank > 0 && m->n_npt_layers == 0)
        return rfail(f, err, 0, "damaged: /adapters has rank %d but lists no layers: adapters need layers, and an "
                     "all-weights checkpoint has rank 0; use an earlier checkpoint", m->rank);
    if (!isfinite(m->modulation_scale))
        return rfail(f, err, 0, "attribute 'modulation_scale' of /adapters is %g; it must be finite", m->modulation_scale);
    if (m->n_npt_layers > 0 && !(m->modulation_scale > 0)) /* s <= 0 flips or removes d_add: no run writes it */
        return rfail(f, err, 0, "attribute 'modulation_scale' of /adapters is %g; it must be > 0", m->modulation_scale);
    struct { const char *obj, *name; int64_t v; } counts[] = {
        {"/", "step", m->step}, {"/", "tokens_seen", m->tokens_seen}, {"/optimizer", "step", m->opt_step},
        {"/state", "skipped_total", m->skipped_total}, {"/state", "consecutive_skips", m->consecutive_skips},
    };
    for (size_t i = 0; i < NPT_ARRAY_LEN(counts); i++)
        if (counts[i].v < 0)
            return rfail(f, err, 0, "attribute '%s' of %s is negative (%lld)", counts[i].name, counts[i].obj,
                         (long long)counts[i].v);
    if (m->safe_mode != 0 && m->safe_mode != 1)
        return rfail(f, err, 0, "attribute 'safe_mode' of /adapters is %d; it must be 0 or 1", m->safe_mode);
    if (m->optimizer[0] && strcmp(m->optimizer, "adamw") && strcmp(m->optimizer, "sgd"))
        return rfail(f, err, 0, "attribute 'type' of /optimizer is \"%s\"; npt writes adamw, sgd or none", m->optimizer);
    for (int i = 0; i < m->n_npt_layers; i++) {
        int l = m->npt_layers[i];
        if (l < 0 || l >= m->n_layers)
            return rfail(f, err, 0, "attribute 'layers' of /adapters lists layer %d, but the base model has %d layers", l,
                         m->n_layers);
        if (i > 0 && l <= m->npt_layers[i - 1])
            return rfail(f, err, 0, "attribute 'layers' of /adapters is not strictly increasing (%d after %d)", l,
                         m->npt_layers[i - 1]);
    }
    return 0;
}

int ckpt_read_meta(CkptFile *f, CkptMeta *m, NptErr *err) {
    memset(m, 0, sizeof *m);
    m->format_version = CKPT_FORMAT_VERSION;
    if (read_attr(f, "/", "format_version", H5T_INTEGER, H5T_NATIVE_INT, 1, 1, &m->format_version, NULL, err) ||
        read_i64(f, "/", "step", &m->step, err) || read_i64(f, "/", "tokens_seen", &m->tokens_seen, err) ||
        read_str_attr(f, "/", "kind", m->kind, sizeof m->kind, err) ||
        read_str_attr(f, "/", "created", m->created, sizeof m->created, err) ||
        read_str_attr(f, "/", "npt_version", m->npt_version, sizeof m->npt_version, err) || read_recipe(f, m, err) ||
        read_base(f, m, err) || read_adapters_state(f, m, err) || read_history(f, m, err) || check_meta(f, m, err)) {
        ckpt_free(m, NULL, 0);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- tensors */

typedef struct {
    CkptFile *f;
    CkptTensor *t;
    int n, cap;
    NptErr *err;
    int failed; /* err already says why */
} ListCtx;

static herr_t list_one(hid_t root, const char *name, const H5L_info_t *info, void *ctx) {
    ListCtx *c = ctx;
    if (info->type != H5L_TYPE_HARD || ckpt_name_reserved(name)) return 0; /* metadata, or not ours */
    hid_t o = H5Oopen(root, name, H5P_DEFAULT);
    if (o < 0) {
        c->failed = 1;
        return rfail(c->f, c->err, 1, "cannot open object /%s", name);
    }
    if (H5Iget_type(o) != H5I_DATASET) {
        H5Oclose(o);
        return 0;
    }
    int rc = 0;
    hid_t s = H5Dget_space(o), t = H5Dget_type(o);
    int ndim = s < 0 ? -1 : H5Sget_simple_extent_ndims(s);
    hsize_t dims[CKPT_MAX_DIMS];
    if (strlen(name) >= sizeof c->t[0].name)
        rc = rfail(c->f, c->err, 0, "dataset /%s has a name longer than %zu bytes", name, sizeof c->t[0].name - 1);
    else if (t < 0 || ndim < 1 || ndim > CKPT_MAX_DIMS || H5Sget_simple_extent_dims(s, dims, NULL) < 0)
        rc = rfail(c->f, c->err, 0, "dataset /%s has %d dimensions; tensors have 1 to %d", name, ndim, CKPT_MAX_DIMS);
    /* Bound the element count so that byte sizes computed from it cannot overflow. */
    hsize_t total = 1;
    for (int d = 0; rc == 0 && d < ndim; d++) {
        if (dims[d] && total > ((hsize_t)1 << 40) / dims[d])
            rc = rfail(c->f, c->err, 0, "dataset /%s has more than 2^40 values", name);
        total *= dims[d];
    }
    if (rc == 0 && c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        CkptTensor *grown = realloc(c->t, (size_t)cap * sizeof *grown);
        if (!grown)
            rc = npt_fail(c->err, "out of memory listing the tensors of %s", c->f->path);
        else
            c->t = grown, c->cap = cap;
    }
    if (rc == 0) {
        CkptTensor *x = &c->t[c->n++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", name);
        x->ndim = ndim;
        for (int d = 0; d < ndim; d++) x->shape[d] = (int64_t)dims[d];
        dtype_name(t, x->dtype, sizeof x->dtype);
        x->storage = dataset_storage(o, (uint64_t)total * H5Tget_size(t), &x->stored_bytes, &x->chunks_need,
                                     &x->chunks_have);
    }
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Oclose(o);
    if (rc) c->failed = 1;
    return rc;
}

int ckpt_list_tensors(CkptFile *f, CkptTensor **out, int *n, NptErr *err) {
    ListCtx c = {f, NULL, 0, 0, err, 0};
    *out = NULL;
    *n = 0;
    /* By name: layer_02 before layer_10, so listings are stable and readable. */
    if (H5Lvisit(f->file, H5_INDEX_NAME, H5_ITER_INC, list_one, &c) < 0) {
        if (!c.failed) rfail(f, err, 1, "cannot list the datasets");
        free(c.t);
        return -1;
    }
    *out = c.t;
    *n = c.n;
    return 0;
}

static size_t tensor_count(const CkptTensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

int ckpt_read_rows(CkptFile *f, const CkptTensor *t, int64_t row0, int64_t nrows, float *out, NptErr *err) {
    char why[400];
    if (ckpt_tensor_unstored(t, why, sizeof why)) return rfail(f, err, 0, "%s", why);
    if (t->ndim < 1 || t->ndim > CKPT_MAX_DIMS || row0 < 0 || nrows < 0 || row0 + nrows > t->shape[0])
        return rfail(f, err, 0, "rows %lld..%lld of dataset /%s are out of range", (long long)row0,
                     (long long)(row0 + nrows), t->name);
    if (nrows == 0) return 0;
    char name[130];
    snprintf(name, sizeof name, "/%s", t->name);
    hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
    if (d < 0) return rfail(f, err, 1, "dataset %s missing", name);
    hid_t fs = H5Dget_space(d), ms = -1;
    hsize_t dims[CKPT_MAX_DIMS], start[CKPT_MAX_DIMS] = {0}, count[CKPT_MAX_DIMS];
    int rc = 0;
    if (fs < 0 || H5Sget_simple_extent_ndims(fs) != t->ndim || H5Sget_simple_extent_dims(fs, dims, NULL) < 0) {
        rc = rfail(f, err, 0, "dataset %s does not have the shape it was listed with", name);
    } else {
        hsize_t total = 1;
        for (int i = 0; i < t->ndim; i++) {
            if ((int64_t)dims[i] != t->shape[i]) rc = -1;
            count[i] = i == 0 ? (hsize_t)nrows : dims[i];
            total *= count[i];
        }
        start[0] = (hsize_t)row0;
        if (rc)
            rfail(f, err, 0, "dataset %s does not have the shape it was listed with", name);
        else if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                 (ms = H5Screate_simple(1, &total, NULL)) < 0 || H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, out) < 0)
            rc = rfail(f, err, 1, "cannot read dataset %s", name);
    }
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    H5Dclose(d);
    return rc;
}

/* ---------------------------------------------------------------- validation */

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

static int shape_is(const CkptTensor *t, int64_t r, int64_t c) {
    return t->ndim == 2 && t->shape[0] == r && t->shape[1] == c;
}

/* With an optimizer recorded, --resume restores both moments of every parameter (the
 * trainer writes .m and .v for adamw and for sgd, whose momentum is .m and whose .v stays
 * zero), so a file missing one cannot be resumed and is damaged. */
static int need_moment(const char *path, const char *param, const char *moment, const CkptTensor *t, int n,
                       NptErr *err) {
    static const char *suffix[2] = {".m", ".v"}, *which[2] = {"first", "second"};
    for (int k = 0; k < 2; k++) {
        char name[160];
        snprintf(name, sizeof name, "optimizer/%s%s", moment, suffix[k]);
        if (!ckpt_find(t, n, name))
            return npt_fail(err, "%s: damaged: dataset /%s missing (the %s optimizer state of /%s, which --resume "
                            "restores); use an earlier checkpoint", path, name, which[k], param);
    }
    return 0;
}

/* The adapter tensors each listed layer must have, with their expected shapes and moments. */
static int check_layer(const char *path, const CkptMeta *m, int layer, const CkptTensor *t, int n, NptErr *err) {
    static const char *parts[] = {"A", "B_add", "B_mul"};
    for (int p = 0; p < 3; p++) {
        char name[64];
        snprintf(name, sizeof name, "adapters/layer_%02d/%s", layer, parts[p]);
        const CkptTensor *x = ckpt_find(t, n, name);
        int want = p < 2 || !m->safe_mode;
        if (!x && want) return npt_fail(err, "%s: dataset /%s missing", path, name);
        if (x && !want)
            return npt_fail(err, "%s: dataset /%s present although /adapters safe_mode is 1 (safe mode has no B_mul)",
                            path, name);
        if (!x) continue;
        int64_t r = p == 0 ? m->rank : m->hidden_dim, c = p == 0 ? m->dim : m->rank;
        if (!shape_is(x, r, c)) {
            char have[96];
            shape_str(x->shape, x->ndim, have, sizeof have);
            return npt_fail(err, "%s: dataset /%s has shape %s, expected [%lld, %lld] (rank %d, dim %d, hidden_dim %d)",
                            path, name, have, (long long)r, (long long)c, m->rank, m->dim, m->hidden_dim);
        }
        /* optimizer "none" saved no state; else --resume restores both moments */
        if (m->optimizer[0] && need_moment(path, name, name + strlen("adapters/"), t, n, err)) return -1;
    }
    return 0;
}

static int is_expected_adapter(const CkptMeta *m, const char *name) {
    for (int i = 0; i < m->n_npt_layers; i++) {
        char prefix[32];
        int len = snprintf(prefix, sizeof prefix, "adapters/layer_%02d/", m->npt_layers[i]);
        if (strncmp(name, prefix, (size_t)len) == 0) {
            const char *part = name + len;
            return strcmp(part, "A") == 0 || strcmp(part, "B_add") == 0 || strcmp(part, "B_mul") == 0;
        }
    }
    return 0;
}

int ckpt_is_all_weights(const CkptMeta *m) { return m->rank == 0 && m->n_npt_layers == 0; }

/* An all-weights checkpoint holds every weight of its base as the 1-D /weights/block,
 * laid out like LlamaModel.weights_block, so its size follows from the base's dimensions
 * recorded in /base; the file does not say whether lm_head was tied to the embedding, so
 * either size is accepted (export and --resume then compare it with the model itself). */
static int check_weights_block(const char *path, const CkptMeta *m, const CkptTensor *t, int n, NptErr *err) {
    if (!ckpt_is_all_weights(m)) return 0;
    const CkptTensor *b = ckpt_find(t, n, CKPT_WEIGHTS_BLOCK);
    if (!b)
        return npt_fail(err, "%s: damaged: /weights/block missing (an all-weights checkpoint, /adapters rank 0 with no "
                        "layers, holds every weight of its base model there); use an earlier checkpoint", path);
    LlamaConfig c = {.dim = m->dim, .hidden_dim = m->hidden_dim, .n_layers = m->n_layers, .n_heads = m->n_heads,
                     .n_kv_heads = m->n_kv_heads, .vocab_size = m->vocab_size, .tied = 1};
    size_t tied = llama_block_floats(&c);
    c.tied = 0;
    size_t untied = llama_block_floats(&c);
    char have[96];
    shape_str(b->shape, b->ndim, have, sizeof have);
    if (!tied)
        return npt_fail(err, "%s: damaged: /base records dim %d, hidden_dim %d, %d layers, %d heads, %d kv heads, vocab %d, "
                        "which is not a model npt can build, so /weights/block %s cannot belong to it", path, m->dim,
                        m->hidden_dim, m->n_layers, m->n_heads, m->n_kv_heads, m->vocab_size, have);
    if (b->ndim != 1 || (b->shape[0] != (int64_t)tied && b->shape[0] != (int64_t)untied))
        return npt_fail(err, "%s: damaged: dataset /weights/block has shape %s, but every weight of its base (dim %d, "
                        "hidden_dim %d, %d layers, %d heads, %d kv heads, vocab %d) is one 1-D block of [%zu] floats "
                        "(lm_head tied to the embedding) or [%zu] (untied); use an earlier checkpoint", path, have,
                        m->dim, m->hidden_dim, m->n_layers, m->n_heads, m->n_kv_heads, m->vocab_size, tied, untied);
    return 0;
}

int ckpt_check_history(const char *path, const CkptMeta *m, NptErr *err) {
    for (int64_t i = 0; i < m->n_history; i++) {
        const CkptHistoryRow *r = &m->history[i];
        int64_t lo = r->skipped ? 0 : 1;
        if (r->step < lo || r->step > m->step)
            return npt_fail(err, "%s: damaged: /history/step row %lld holds step %lld, outside %lld..%lld (%s row of a "
                            "checkpoint at step %lld); use an earlier checkpoint", path, (long long)i, (long long)r->step,
                            (long long)lo, (long long)m->step, r->skipped ? "a skipped" : "a trained", (long long)m->step);
        if (i > 0 && (r->skipped ? r->step < r[-1].step : r->step <= r[-1].step))
            return npt_fail(err, "%s: damaged: /history/step row %lld holds step %lld after step %lld (trained steps "
                            "increase, a skipped row repeats the step before it); use an earlier checkpoint", path,
                            (long long)i, (long long)r->step, (long long)r[-1].step);
    }
    return 0;
}

/* The all-weights block's moments (the adapters' are required by check_layer). */
static int check_block_moments(const char *path, const CkptMeta *m, const CkptTensor *t, int n, NptErr *err) {
    return m->optimizer[0] && ckpt_is_all_weights(m)
               ? need_moment(path, CKPT_WEIGHTS_BLOCK, CKPT_WEIGHTS_MOMENT, t, n, err)
               : 0;
}

int ckpt_validate(const char *path, const CkptMeta *m, const CkptTensor *t, int n, NptErr *err) {
    char why[400];
    for (int i = 0; i < n; i++) {
        if (ckpt_tensor_unstored(&t[i], why, sizeof why)) return npt_fail(err, "%s: %s", path, why);
        if (strcmp(t[i].dtype, "float32") != 0)
            return npt_fail(err, "%s: dataset /%s has dtype %s, expected float32", path, t[i].name, t[i].dtype);
    }
    for (int i = 0; i < m->n_npt_layers; i++)
        if (check_layer(path, m, m->npt_layers[i], t, n, err)) return -1;
    if (check_weights_block(path, m, t, n, err) || check_block_moments(path, m, t, n, err))
        return -1; /* before the moments are compared with their parameters */
    for (int i = 0; i < n; i++) {
        const char *name = t[i].name;
        if (strncmp(name, "adapters/", 9) == 0 && !is_expected_adapter(m, name))
            return npt_fail(err, "%s: unexpected dataset /%s (not A, B_add or B_mul of a layer listed in /adapters layers)",
                            path, name);
        /* A moment "optimizer/X.m" must be shaped like its parameter "adapters/X", and
         * "optimizer/weights_block.m" like "weights/block". */
        const char *dot = strrchr(name, '.');
        if (strncmp(name, "optimizer/", 10) != 0 || !dot) continue;
        char param[160];
        size_t moment_len = strlen(CKPT_WEIGHTS_MOMENT);
        if ((size_t)(dot - name) == 10 + moment_len && strncmp(name + 10, CKPT_WEIGHTS_MOMENT, moment_len) == 0)
            snprintf(param, sizeof param, "%s", CKPT_WEIGHTS_BLOCK);
        else
            snprintf(param, sizeof param, "adapters/%.*s", (int)(dot - name - 10), name + 10);
        const CkptTensor *p = ckpt_find(t, n, param);
        if (p && (p->ndim != t[i].ndim || memcmp(p->shape, t[i].shape, (size_t)p->ndim * sizeof p->shape[0]) != 0)) {
            char have[96], want[96];
            shape_str(t[i].shape, t[i].ndim, have, sizeof have);
            shape_str(p->shape, p->ndim, want, sizeof want);
            return npt_fail(err, "%s: dataset /%s has shape %s but its parameter /%s has %s", path, name, have, param, want);
        }
    }
    return ckpt_check_history(path, m, err);
}

int ckpt_is_second_moment(const char *name) {
    size_t len = strlen(name);
    return strncmp(name, "optimizer/", 10) == 0 && len > 2 && strcmp(name + len - 2, ".v") == 0;
}

int ckpt_check_finite(const char *path, const CkptTensor *t, int n, NptErr *err) {
    for (int i = 0; i < n; i++) {
        if (!t[i].data) continue;
        size_t count = tensor_count(&t[i]), nan = 0, inf = 0;
        for (size_t k = 0; k < count; k++) {
            nan += isnan(t[i].data[k]) != 0;
            inf += isinf(t[i].data[k]) != 0;
        }
        if (nan || inf)
            return npt_fail(err, "%s: tensor /%s holds %zu NaN and %zu Inf values (of %zu)", path, t[i].name, nan, inf,
                            count);
        /* AdamW's second moments are means of squares: a negative one is corruption, and
         * resuming would take its square root */
        size_t negative = 0;
        if (ckpt_is_second_moment(t[i].name))
            for (size_t k = 0; k < count; k++) negative += t[i].data[k] < 0;
        if (negative)
            return npt_fail(err, "%s: tensor /%s (AdamW second moments) holds %zu negative value%s (of %zu)", path,
                            t[i].name, negative, negative == 1 ? "" : "s", count);
    }
    return 0;
}

/* ---------------------------------------------------------------- whole file */

const CkptTensor *ckpt_find(const CkptTensor *t, int n, const char *name) {
    if (name[0] == '/') name++;
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    return NULL;
}

void ckpt_free(CkptMeta *meta, CkptTensor *tensors, int n_tensors) {
    if (meta) {
        free(meta->recipe_json);
        free(meta->history);
        meta->recipe_json = NULL;
        meta->history = NULL;
        meta->n_history = 0;
    }
    for (int i = 0; tensors && i < n_tensors; i++) free(tensors[i].data);
    free(tensors);
}

int ckpt_load(const char *path, CkptMeta *meta, CkptTensor **tensors, int *n_tensors, NptErr *err) {
    *tensors = NULL;
    *n_tensors = 0;
    memset(meta, 0, sizeof *meta);
    CkptFile *f = ckpt_open(path, err);
    if (!f) return -1;
    CkptTensor *t = NULL;
    int n = 0;
    int rc = ckpt_read_meta(f, meta, err) || ckpt_list_tensors(f, &t, &n, err) || ckpt_validate(path, meta, t, n, err)
                 ? -1 : 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        t[i].data = npt_try_malloc(tensor_count(&t[i]) * sizeof(float), t[i].name, err);
        if (!t[i].data || ckpt_read_rows(f, &t[i], 0, t[i].shape[0], t[i].data, err)) rc = -1;
    }
    if (rc == 0) rc = ckpt_check_finite(path, t, n, err);
    ckpt_close(f);
    if (rc) {
        ckpt_free(meta, t, n);
        return -1;
    }
    *tensors = t;
    *n_tensors = n;
    return 0;
}
