/* data/token_file.c — token files read in bounded pieces: raw little-endian
 * uint16/uint32 ids with pread (after the token cache's header when the file has one,
 * see data_internal.h), and 1-D integer HDF5 datasets with hyperslab reads.
 * Nothing here holds more than one piece (CHUNK ids) in memory. Every id read is
 * checked against the vocabulary, so a file made with another tokenizer is an error
 * naming the position, never an out-of-bounds embedding lookup. */
#include "data_internal.h"
#include "../util/path.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { CHUNK = 4096 };

int data_split_h5_spec(const char *spec, char *file, size_t file_n, char *dset, size_t dset_n) {
    static const char *const exts[] = {".h5:", ".hdf5:", ".hdf:"};
    for (size_t i = 0; i < NPT_ARRAY_LEN(exts); i++) {
        const char *at = strstr(spec, exts[i]);
        if (!at) continue;
        const char *colon = at + strlen(exts[i]) - 1;
        snprintf(file, file_n, "%.*s", (int)(colon - spec), spec);
        snprintf(dset, dset_n, "%s", colon[1] ? colon + 1 : "/tokens");
        return 1;
    }
    if (npt_ends_with(spec, ".h5") || npt_ends_with(spec, ".hdf5") || npt_ends_with(spec, ".hdf")) {
        snprintf(file, file_n, "%s", spec);
        snprintf(dset, dset_n, "/tokens");
        return 1;
    }
    return 0;
}

static const char *h5_class_name(H5T_class_t c) {
    switch (c) {
    case H5T_FLOAT: return "a float";
    case H5T_STRING: return "a string";
    case H5T_COMPOUND: return "a compound";
    case H5T_ENUM: return "an enum";
    case H5T_ARRAY: return "an array";
    default: return "a non-integer";
    }
}

static int open_h5(TokenFile *f, const char *spec, NptErr *err) {
    char file[4096], dset[256];
    if (!data_split_h5_spec(spec, file, sizeof file, dset, sizeof dset))
        return npt_fail(err, "%s: not an HDF5 token dataset; write it as FILE.h5:/DATASET", spec);
    snprintf(f->name, sizeof f->name, "%s:%s", file, dset);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    struct stat st;
    if (stat(file, &st) != 0) return npt_fail(err, "cannot open %s: %s", file, strerror(errno));
    if (access(file, R_OK) != 0) return npt_fail(err, "cannot read %s: %s", file, strerror(errno));
    /* HDF5 opens it by name: a pipe would block there (a directory fails H5Fis_hdf5 below) */
    if (!S_ISDIR(st.st_mode) && npt_check_input(file, "token file", err)) return -1;
    if (H5Fis_hdf5(file) <= 0) return npt_fail(err, "%s is not an HDF5 file (from %s)", file, spec);
    f->h5_file = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f->h5_file < 0) return npt_fail(err, "cannot open HDF5 file %s", file);
    if (H5Lexists(f->h5_file, dset, H5P_DEFAULT) <= 0)
        return npt_fail(err, "%s has no dataset %s; name it as FILE.h5:/DATASET (h5ls -r %s lists them)", file, dset, file);
    f->h5_dset = H5Dopen2(f->h5_file, dset, H5P_DEFAULT);
    if (f->h5_dset < 0) return npt_fail(err, "%s: %s is not a dataset", file, dset);
    hid_t type = H5Dget_type(f->h5_dset);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    size_t size = type >= 0 ? H5Tget_size(type) : 0;
    f->h5_signed = cls == H5T_INTEGER && H5Tget_sign(type) != H5T_SGN_NONE;
    if (type >= 0) H5Tclose(type);
    if (cls != H5T_INTEGER)
        return npt_fail(err, "%s is %s dataset (%zu-byte values); token datasets hold integer ids", f->name,
                        h5_class_name(cls), size);
    f->h5_space = H5Dget_space(f->h5_dset);
    int rank = f->h5_space >= 0 ? H5Sget_simple_extent_ndims(f->h5_space) : -1;
    if (rank != 1) return npt_fail(err, "%s has %d dimensions; token datasets are 1-D (flatten it)", f->name, rank);
    hsize_t n;
    H5Sget_simple_extent_dims(f->h5_space, &n, NULL);
    f->n_tokens = n;
    return 0;
}

/* ---------------------------------------------------------------- header */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void token_header_encode(const TokenHeader *h, unsigned char out[TOKEN_HEADER_BYTES]) {
    memset(out, 0, TOKEN_HEADER_BYTES);
    memcpy(out, TOKEN_HEADER_MAGIC, 8);
    put_u32(out + 8, h->version);
    put_u32(out + 12, h->width);
    put_u64(out + 16, h->n_tokens);
    put_u64(out + 24, h->documents);
    put_u64(out + 32, h->key);
    put_u64(out + 40, h->checksum);
}

/* The header of a raw file of size bytes, if it starts with one: checked against the
 * file's size, so a file cut short (or grown) is an error, not a shorter corpus. */
static int read_header(TokenFile *f, const char *path, uint64_t size, int width, NptErr *err) {
    unsigned char b[TOKEN_HEADER_BYTES];
    if (size < TOKEN_HEADER_BYTES) return 0;
    ssize_t got;
    do got = pread(f->fd, b, sizeof b, 0);
    while (got < 0 && errno == EINTR);
    if (got < 0) return npt_fail(err, "cannot read %s: %s", path, strerror(errno));
    if (got != (ssize_t)sizeof b || memcmp(b, TOKEN_HEADER_MAGIC, 8) != 0) return 0;
    TokenHeader *h = &f->header;
    *h = (TokenHeader){get_u32(b + 8), get_u32(b + 12), get_u64(b + 16), get_u64(b + 24), get_u64(b + 32),
                       get_u64(b + 40)};
    f->has_header = 1;
    f->data_off = TOKEN_HEADER_BYTES;
    if (h->version != TOKEN_HEADER_VERSION)
        return npt_fail(err, "%s has a token-file header of version %u; this npt reads version %d (made by a newer npt?)",
                        path, h->version, TOKEN_HEADER_VERSION);
    if (h->width != (uint32_t)width)
        return npt_fail(err, "%s: its header says %u-byte ids but it is read as uint%d; is the format right?", path,
                        h->width, width * 8);
    uint64_t have = (size - TOKEN_HEADER_BYTES) / (uint64_t)width;
    if (h->n_tokens > (UINT64_MAX - TOKEN_HEADER_BYTES) / (uint64_t)width ||
        size != TOKEN_HEADER_BYTES + h->n_tokens * (uint64_t)width)
        return npt_fail(err, "%s holds %llu of the %llu tokens its header declares%s", path, (unsigned long long)have,
                        (unsigned long long)h->n_tokens,
                        have < h->n_tokens ? ": it was cut short (a crash, a full disk, a truncate)" : " (bytes were added after them)");
    return 0;
}

/* ---------------------------------------------------------------- opening */

static int open_raw(TokenFile *f, const char *path, int width, NptErr *err) {
    snprintf(f->name, sizeof f->name, "%s", path);
    f->fd = npt_open_input(path, "token file", err);
    if (f->fd < 0) {
        int dir = f->fd == -2 && errno == EISDIR;
        f->fd = -1;
        return dir ? npt_fail(err, "%s is a directory, not a token file", path) : -1;
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0) return npt_fail(err, "cannot stat %s: %s", path, strerror(errno));
    if (read_header(f, path, (uint64_t)st.st_size, width, err)) return -1;
    if (f->has_header) {
        f->n_tokens = f->header.n_tokens;
        return 0;
    }
    if ((uint64_t)st.st_size % (uint64_t)width)
        return npt_fail(err, "%s: %lld bytes is not a whole number of uint%d tokens; is the format right?", path,
                        (long long)st.st_size, width * 8);
    f->n_tokens = (uint64_t)st.st_size / (uint64_t)width;
    return 0;
}

int token_file_open(TokenFile *f, const char *spec, DatasetFormat kind, int vocab_size, NptErr *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->h5_file = f->h5_dset = f->h5_space = -1;
    f->vocab_size = vocab_size;
    if (kind == DATASET_AUTO) kind = dataset_detect_format(spec);
    if (kind != DATASET_U32 && kind != DATASET_HDF5) kind = DATASET_U16;
    f->kind = kind;
    int rc = kind == DATASET_HDF5 ? open_h5(f, spec, err) : open_raw(f, spec, kind == DATASET_U32 ? 4 : 2, err);
    if (rc) token_file_close(f);
    return rc;
}

static int checksum_chunk(const int *ids, size_t n, uint64_t start, void *ctx) {
    uint64_t *h = ctx;
    *h = token_checksum_add(*h, ids, n);
    return 0;
}

int token_file_checksum(TokenFile *f, uint64_t *out, NptErr *err) {
    uint64_t sum = TOKEN_CHECKSUM_SEED;
    if (token_file_scan(f, checksum_chunk, &sum, err)) return -1;
    *out = token_checksum_final(sum, f->n_tokens);
    return 0;
}

void token_file_close(TokenFile *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->h5_space >= 0) H5Sclose(f->h5_space);
    if (f->h5_dset >= 0) H5Dclose(f->h5_dset);
    if (f->h5_file >= 0) H5Fclose(f->h5_file);
    f->fd = -1;
    f->h5_file = f->h5_dset = f->h5_space = -1;
}

static int pread_all(TokenFile *f, void *buf, size_t bytes, uint64_t off, NptErr *err) {
    char *p = buf;
    while (bytes) {
        ssize_t got = pread(f->fd, p, bytes, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return npt_fail(err, "cannot read %s at byte %llu: %s", f->name, (unsigned long long)off,
                            got < 0 ? strerror(errno) : "the file is shorter than when it was opened");
        p += got, off += (uint64_t)got, bytes -= (size_t)got;
    }
    return 0;
}

/* id as the file holds it: signed only in a signed HDF5 dataset. Without a model
 * (npt data stats) the bound is what an int holds, not a vocabulary. */
static int bad_id(const TokenFile *f, int64_t id, int is_signed, uint64_t pos, NptErr *err) {
    char v[32];
    if (is_signed) snprintf(v, sizeof v, "%lld", (long long)id);
    else snprintf(v, sizeof v, "%llu", (unsigned long long)(uint64_t)id);
    if (f->vocab_size <= 0)
        return npt_fail(err, "%s: token %s at position %llu is not a token id (npt reads ids 0..%d)", f->name, v,
                        (unsigned long long)pos, INT32_MAX);
    return npt_fail(err, "%s: token %s at position %llu is outside the model's vocabulary of %d; the file was made with another tokenizer",
                    f->name, v, (unsigned long long)pos, f->vocab_size);
}

/* One piece of at most CHUNK ids. */
static int read_piece(TokenFile *f, uint64_t start, size_t n, int *out, NptErr *err) {
    uint64_t limit = f->vocab_size > 0 ? (uint64_t)f->vocab_size : (uint64_t)INT32_MAX + 1;
    if (f->kind == DATASET_U16) {
        uint16_t buf[CHUNK];
        if (pread_all(f, buf, n * 2, f->data_off + start * 2, err)) return -1;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] >= limit) return bad_id(f, buf[i], 0, start + i, err);
            out[i] = buf[i];
        }
    } else if (f->kind == DATASET_U32) {
        uint32_t buf[CHUNK];
        if (pread_all(f, buf, n * 4, f->data_off + start * 4, err)) return -1;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] >= limit) return bad_id(f, buf[i], 0, start + i, err);
            out[i] = (int)buf[i];
        }
    } else {
        int64_t buf[CHUNK]; /* uint64 values when the dataset is unsigned: read as int64, 2^63 and up would clamp */
        hsize_t off = start, cnt = n;
        hid_t mem = H5Screate_simple(1, &cnt, NULL);
        hid_t type = f->h5_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64;
        int rc = mem < 0 || H5Sselect_hyperslab(f->h5_space, H5S_SELECT_SET, &off, NULL, &cnt, NULL) < 0 ||
                 H5Dread(f->h5_dset, type, mem, f->h5_space, H5P_DEFAULT, buf) < 0;
        if (mem >= 0) H5Sclose(mem);
        if (rc) return npt_fail(err, "cannot read tokens %llu..%llu of %s", (unsigned long long)start,
                                (unsigned long long)(start + n), f->name);
        for (size_t i = 0; i < n; i++) {
            if ((f->h5_signed && buf[i] < 0) || (uint64_t)buf[i] >= limit) return bad_id(f, buf[i], f->h5_signed, start + i, err);
            out[i] = (int)buf[i];
        }
    }
    return 0;
}

int token_file_read(TokenFile *f, uint64_t start, size_t n, int *out, NptErr *err) {
    if (start > f->n_tokens || n > f->n_tokens - start)
        return npt_fail(err, "%s: tokens %llu..%llu are past its end (%llu tokens)", f->name, (unsigned long long)start,
                        (unsigned long long)(start + n), (unsigned long long)f->n_tokens);
    for (size_t done = 0; done < n; done += CHUNK) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (read_piece(f, start + done, k, out + done, err)) return -1;
    }
    return 0;
}

int token_file_scan(TokenFile *f, int (*fn)(const int *ids, size_t n, uint64_t start, void *ctx), void *ctx,
                    NptErr *err) {
    enum { SCAN = 16 * CHUNK };
    int *buf = npt_try_malloc(SCAN * sizeof(int), "a token scan buffer", err);
    if (!buf) return -1;
    int rc = 0;
    for (uint64_t pos = 0; rc == 0 && pos < f->n_tokens; pos += SCAN) {
        size_t k = f->n_tokens - pos < SCAN ? (size_t)(f->n_tokens - pos) : SCAN;
        rc = token_file_read(f, pos, k, buf, err);
        if (rc == 0) rc = fn(buf, k, pos, ctx);
    }
    free(buf);
    return rc;
}
