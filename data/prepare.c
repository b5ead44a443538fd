/* data/prepare.c — text and JSONL into token files (see prepare.h for the document
 * rules), the token cache, and token-file statistics.
 *
 * Pipeline: a reader walks the input files sequentially in READ_CHUNK pieces and cuts
 * documents, copying each into a block (a NUL-terminated text arena plus a record per
 * document) until the block holds BLOCK_BYTES; the documents of a block are then
 * validated, parsed (JSONL) and tokenized by all OpenMP threads, each into its own
 * slot of the block's token buffer, and written out in input order by one thread.
 * Errors found in parallel are reported in input order, so the first bad document
 * named is the first in the file whatever the thread count. Memory: one block of text
 * and its tokens, independent of the corpus size. */
#include "data_internal.h"
#include "../util/h5_out.h" /* NptH5Out: HDF5 files written whole or not at all */
#include "../util/atomic_file.h"
#include "../util/stop.h"
#include "../util/path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tok_internal.h"

enum {
    READ_CHUNK = 1 << 20,
    BLOCK_BYTES = 4 << 20,
    MAX_LINE = 16 << 20,  /* JSONL lines longer than this are an error */
    MAX_UNCUT = 64 << 20, /* a text document with no invisible cut (tok_cut.c) in this much is an error */
    SHOWN_BAD = 10,       /* bad records named one by one; then only counted */
};
static const size_t SEP_LEN = sizeof DATA_SEPARATOR - 1;

/* ---------------------------------------------------------------- input files */

typedef struct {
    char **path;
    uint64_t *size;
    int n, cap;
} FileList;

static void files_free(FileList *l) {
    for (int i = 0; i < l->n; i++) free(l->path[i]);
    free(l->path);
    free(l->size);
    memset(l, 0, sizeof *l);
}

static int files_add(FileList *l, const char *path, uint64_t size, NptErr *err) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->path, (size_t)cap * sizeof *p);
        if (p) l->path = p;
        uint64_t *s = realloc(l->size, (size_t)cap * sizeof *s);
        if (s) l->size = s;
        if (!p || !s) return npt_fail(err, "out of memory listing input files");
        l->cap = cap;
    }
    if (!(l->path[l->n] = strdup(path))) return npt_fail(err, "out of memory listing input files");
    l->size[l->n++] = size;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Regular files below dir, recursively, hidden names skipped, in name order. */
static int list_dir(FileList *l, const char *dir, NptErr *err) {
    DIR *d = opendir(dir);
    if (!d) return npt_fail(err, "cannot read folder %s: %s", dir, strerror(errno));
    FileList names = {0};
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)))
        if (e->d_name[0] != '.') rc = files_add(&names, e->d_name, 0, err);
    closedir(d);
    if (rc == 0 && names.n) qsort(names.path, (size_t)names.n, sizeof *names.path, cmp_str);
    for (int i = 0; rc == 0 && i < names.n; i++) {
        char path[4096];
        struct stat st;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names.path[i]) >= sizeof path) {
            rc = npt_fail(err, "path too long in %s", dir);
        } else if (stat(path, &st) != 0) {
            rc = npt_fail(err, "cannot open %s: %s", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = list_dir(l, path, err);
        } else if (S_ISREG(st.st_mode)) {
            rc = files_add(l, path, (uint64_t)st.st_size, err);
        }
    }
    files_free(&names);
    return rc;
}

static int list_input(FileList *l, const char *input, NptErr *err) {
    struct stat st;
    if (stat(input, &st) != 0) return npt_fail(err, "cannot open %s: %s", input, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (list_dir(l, input, err)) return -1;
        if (l->n == 0) return npt_fail(err, "folder %s holds no files", input);
        return 0;
    }
    /* a pipe would block reading (list_dir leaves such files of a folder out) */
    if (npt_check_input(input, "text input", err)) return -1;
    return files_add(l, input, (uint64_t)st.st_size, err);
}

/* ---------------------------------------------------------------- reader */

typedef struct {
    const char *path;
    const TokCut *cut;
    int fd, jsonl, eof, cont; /* cont: the pending text continues a cut document */
    char *buf;
    size_t len, cap, doc, scan;
    size_t cut_from;          /* tok_cut_find's place in the pending text (0: a new piece) */
    uint64_t base, line;      /* file offset of buf[0]; JSONL line number of buf[doc] */
} Reader;

static int reader_fill(Reader *r, NptErr *err) {
    if (r->doc > 0) { /* drop consumed bytes */
        memmove(r->buf, r->buf + r->doc, r->len - r->doc);
        r->len -= r->doc, r->scan -= r->doc, r->base += r->doc, r->doc = 0;
    }
    if (r->cap - r->len < READ_CHUNK) {
        size_t cap = r->cap ? 2 * r->cap : 4 * (size_t)READ_CHUNK;
        char *b = realloc(r->buf, cap + 1);
        if (!b) return npt_fail(err, "out of memory reading %s", r->path);
        r->buf = b, r->cap = cap;
    }
    ssize_t got;
    do got = read(r->fd, r->buf + r->len, READ_CHUNK);
    while (got < 0 && errno == EINTR);
    if (got < 0) return npt_fail(err, "cannot read %s: %s", r->path, strerror(errno));
    if (got == 0) r->eof = 1;
    r->len += (size_t)got;
    return 0;
}

/* One document (or piece) found by the reader. */
typedef struct {
    const char *text;
    size_t len;
    uint64_t file_off, line;
    int bos, eos;
} Found;

/* Next text document: 1 found, 0 at the end of the file, -1 error. A document
 * longer than DATA_MAX_PIECE is returned in pieces, cut only where tok_cut_ok says
 * the cut leaves its ids unchanged (the pieces after the first have bos 0 and are
 * encoded as continuations). */
static int next_text(Reader *r, Found *f, NptErr *err) {
    for (;;) {
        char *p = r->scan < r->len ? memmem(r->buf + r->scan, r->len - r->scan, DATA_SEPARATOR, SEP_LEN) : NULL;
        size_t next = p ? (size_t)(p - r->buf) + SEP_LEN : 0;
        if (p && !r->eof && (next == r->len || (r->buf[next] == '\r' && next + 1 == r->len))) {
            if (reader_fill(r, err)) return -1; /* the newline after it is unread */
            continue;
        }
        size_t start = r->doc;
        if (p) { /* one newline (LF or CRLF) on each side belongs to the separator */
            size_t end = (size_t)(p - r->buf);
            if (end > start && r->buf[end - 1] == '\n') {
                end--;
                if (end > start && r->buf[end - 1] == '\r') end--;
            }
            if (next < r->len && r->buf[next] == '\n') next++;
            else if (next + 1 < r->len && r->buf[next] == '\r' && r->buf[next + 1] == '\n') next += 2;
            *f = (Found){r->buf + start, end - start, r->base + start, 0, !r->cont, 1};
            r->doc = r->scan = next;
            r->cont = 0;
            r->cut_from = 0;
            return 1;
        }
        size_t pending = r->len - start;
        if (pending >= DATA_MAX_PIECE + SEP_LEN) { /* no separator in the first piece: cut it */
            /* (text within SEP_LEN of the end may begin a separator: not looked at) */
            size_t k = tok_cut_find(r->cut, r->buf + start, pending - SEP_LEN, DATA_MAX_PIECE, &r->cut_from);
            if (k) {
                *f = (Found){r->buf + start, k, r->base + start, 0, !r->cont, 0};
                r->doc += k;
                if (r->scan < r->doc) r->scan = r->doc;
                r->cont = 1;
                r->cut_from = 0;
                return 1;
            }
            if (pending > MAX_UNCUT)
                return npt_fail(err, "%s: the document text from byte offset %llu runs over %d MiB without a place where the "
                                "tokenizer's ids would stay the same if it were cut there; separate its documents with %s",
                                r->path, (unsigned long long)(r->base + start), MAX_UNCUT >> 20, DATA_SEPARATOR);
        }
        if (r->eof) {
            if (pending == 0 && !r->cont) return 0;
            *f = (Found){r->buf + start, pending, r->base + start, 0, !r->cont, 1};
            r->doc = r->scan = r->len;
            r->cont = 0;
            r->cut_from = 0;
            return 1;
        }
        r->scan = r->len > start + SEP_LEN ? r->len - SEP_LEN + 1 : start;
        if (reader_fill(r, err)) return -1;
    }
}

/* Next JSONL line (blank ones included; the caller skips them). */
static int next_line(Reader *r, Found *f, NptErr *err) {
    for (;;) {
        char *nl = r->scan < r->len ? memchr(r->buf + r->scan, '\n', r->len - r->scan) : NULL;
        size_t start = r->doc;
        if (!nl && !r->eof) {
            if (r->len - start > MAX_LINE)
                return npt_fail(err, "%s:%llu: line longer than %d MiB; is this JSONL?", r->path,
                                (unsigned long long)r->line, MAX_LINE >> 20);
            r->scan = r->len;
            if (reader_fill(r, err)) return -1;
            continue;
        }
        if (!nl && start == r->len) return 0;
        size_t end = nl ? (size_t)(nl - r->buf) : r->len, len = end - start;
        if (len && r->buf[end - 1] == '\r') len--;
        *f = (Found){r->buf + start, len, r->base + start, r->line, 1, 1};
        r->doc = r->scan = nl ? end + 1 : end;
        r->line++;
        return 1;
    }
}

/* ---------------------------------------------------------------- blocks */

enum { DOC_OK, DOC_EMPTY, DOC_BAD_UTF8, DOC_NUL, DOC_BAD_JSON, DOC_BAD_RECORD, DOC_ENCODE };

typedef struct {
    size_t off, len;     /* text in the arena */
    uint64_t file_off, line;
    int file, bos, eos, jsonl;
    /* results */
    int status;
    uint64_t bad_at;     /* DOC_BAD_UTF8 / DOC_NUL: byte index in the document */
    size_t tok_off;
    int n_tok;
    char *msg;           /* DOC_BAD_RECORD / DOC_ENCODE */
} BlockDoc;

typedef struct {
    char *text;
    size_t len, cap;
    BlockDoc *docs;
    size_t n, cap_docs;
    int *tok;
    size_t tok_cap;
} Block;

static int block_add(Block *b, const Found *f, int file, int jsonl, NptErr *err) {
    if (b->len + f->len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 2 * (size_t)BLOCK_BYTES;
        while (cap < b->len + f->len + 1) cap *= 2;
        char *t = realloc(b->text, cap);
        if (!t) return npt_fail(err, "out of memory holding a block of documents");
        b->text = t, b->cap = cap;
    }
    if (b->n == b->cap_docs) {
        size_t cap = b->cap_docs ? 2 * b->cap_docs : 4096;
        BlockDoc *d = realloc(b->docs, cap * sizeof *d);
        if (!d) return npt_fail(err, "out of memory holding a block of documents");
        b->docs = d, b->cap_docs = cap;
    }
    memcpy(b->text + b->len, f->text, f->len);
    b->text[b->len + f->len] = '\0';
    b->docs[b->n++] = (BlockDoc){.off = b->len, .len = f->len, .file_off = f->file_off, .line = f->line,
                                 .file = file, .bos = f->bos, .eos = f->eos, .jsonl = jsonl};
    b->len += f->len + 1;
    return 0;
}

static void block_clear(Block *b) {
    for (size_t i = 0; i < b->n; i++) free(b->docs[i].msg);
    b->n = b->len = 0;
}

static void block_free(Block *b) {
    block_clear(b);
    free(b->text);
    free(b->docs);
    free(b->tok);
    memset(b, 0, sizeof *b);
}

/* Index of the first byte of s[0..len) that is not valid UTF-8 or is NUL, or len. */
static size_t utf8_check(const char *s, size_t len, int *is_nul) {
    size_t i = 0;
    *is_nul = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) return *is_nul = 1, i;
        if (c < 0x80) {
            i++;
            continue;
        }
        int k = utf8_char_len((const unsigned char *)s + i, len - i);
        if (!k) return i;
        i += (size_t)k;
    }
    return len;
}

/* Encodes s[0..len) into out (at most cap ids); returns the count. A text over
 * DATA_MAX_PIECE bytes is encoded in parts cut where tok_cut_find finds the ids stay
 * the same (else whole), so the working memory of one call stays bounded. cont: s
 * continues a piece of the same document the reader cut off before it. */
static int encode_text(const Tokenizer *t, const TokCut *cut, const char *s, size_t len, int cont, int *out, size_t cap,
                       char **msg) {
    size_t n = 0;
    while (len > 0) {
        size_t from = 0, k = len > DATA_MAX_PIECE ? tok_cut_find(cut, s, len, DATA_MAX_PIECE, &from) : 0;
        if (k == 0) k = len;
        NptErr err;
        int m = tok_encode_part(t, s, k, cont, out + n, cap - n, &err);
        if (m < 0 || (size_t)m > cap - n) {
            *msg = strdup(m < 0 ? err.msg : "more tokens than bytes (tokenizer bug)");
            return -1;
        }
        n += (size_t)m, s += k, len -= k;
        cont = 1;
    }
    return (int)n;
}

/* Where the JSON text s[from..len) next holds the escape \u0000 (a NUL character),
 * outside another escape; len if nowhere. from must not be inside an escape. */
static size_t next_nul_escape(const char *s, size_t len, size_t from) {
    for (size_t i = from; i + 5 < len; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && !memcmp(s + i + 2, "0000", 4)) return i;
        i++; /* the escaped character (another backslash included) */
    }
    return len;
}

/* The JSONL record's text field, or NULL with d->status and d->msg set. A line must be
 * one JSON value and nothing else but whitespace: a second record on the line (or one
 * after a bare CR) would otherwise be dropped without a word. */
static const char *jsonl_text(const PrepareOptions *o, const char *s, size_t len, BlockDoc *d, cJSON **root) {
    const char *field = o->text_field ? o->text_field : "text", *end = NULL;
    *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (*root && end) {
        const char *value_end = end;
        while (end < s + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
        if (end < s + len) {
            int cr = memchr(value_end, '\r', (size_t)(end - value_end)) != NULL;
            char m[200];
            snprintf(m, sizeof m, "not valid JSON: more text after the JSON value, at byte %zu of the line%s", (size_t)(end - s) + 1,
                     cr ? " (records separated by a bare CR? JSONL lines end with LF or CRLF)"
                        : *end == '{' ? " (two records on one line?)" : "");
            d->status = DOC_BAD_JSON;
            d->msg = strdup(m);
            return NULL;
        }
    }
    cJSON *v = cJSON_IsObject(*root) ? cJSON_GetObjectItemCaseSensitive(*root, field) : NULL;
    char m[200];
    if (!*root || !cJSON_IsObject(*root)) {
        d->status = *root ? DOC_BAD_RECORD : DOC_BAD_JSON;
        d->msg = strdup(*root ? "not a JSON object" : "not valid JSON");
        return NULL;
    }
    if (!cJSON_IsString(v)) {
        snprintf(m, sizeof m, v ? "field \"%.64s\" is not a string" : "no field \"%.64s\"", field);
        d->status = DOC_BAD_RECORD;
        d->msg = strdup(m);
        return NULL;
    }
    /* cJSON's strings end at their first NUL: a \u0000 in the field would cut the text
     * short. Parsed again with every \u0000 as \uFFFF, the field differs iff it held one. */
    size_t first_nul = next_nul_escape(s, len, 0);
    if (first_nul < len) {
        char *copy = malloc(len + 1);
        if (!copy) {
            d->status = DOC_ENCODE;
            d->msg = strdup("out of memory");
            return NULL;
        }
        memcpy(copy, s, len);
        for (size_t i = first_nul; i < len; i = next_nul_escape(copy, len, i + 6))
            memcpy(copy + i + 2, "FFFF", 4);
        cJSON *again = cJSON_ParseWithLength(copy, len);
        cJSON *w = cJSON_IsObject(again) ? cJSON_GetObjectItemCaseSensitive(again, field) : NULL;
        int nul = !cJSON_IsString(w) || strcmp(w->valuestring, v->valuestring) != 0;
        cJSON_Delete(again);
        free(copy);
        if (nul) {
            snprintf(m, sizeof m, "field \"%.64s\" holds a NUL character (\\u0000)", field);
            d->status = DOC_BAD_RECORD;
            d->msg = strdup(m);
            return NULL;
        }
    }
    return v->valuestring;
}

static void process_doc(const PrepareOptions *o, const TokCut *cut, Block *b, BlockDoc *d) {
    char *s = b->text + d->off;
    int *out = b->tok + d->tok_off;
    size_t cap = d->len + 8, n = 0;
    int is_nul;
    size_t bad = utf8_check(s, d->len, &is_nul);
    if (bad < d->len) {
        d->status = is_nul ? DOC_NUL : DOC_BAD_UTF8;
        d->bad_at = bad;
        return;
    }
    cJSON *root = NULL;
    size_t len = d->len;
    if (d->jsonl) {
        if (s[strspn(s, " \t\r")] == '\0') {
            d->status = DOC_EMPTY;
            return;
        }
        const char *text = jsonl_text(o, s, d->len, d, &root);
        if (!text) {
            cJSON_Delete(root);
            return;
        }
        s = (char *)text;
        len = strlen(s);
        if (len == 0) d->status = DOC_EMPTY;
    } else if (len == 0 && d->bos) {
        d->status = DOC_EMPTY;
    }
    if (d->status == DOC_OK) {
        if (d->bos) out[n++] = o->bos;
        int m = encode_text(o->tok, cut, s, len, !d->bos, out + n, cap - n - 1, &d->msg);
        if (m < 0) d->status = DOC_ENCODE;
        else n += (size_t)m;
        if (d->eos && o->append_eos) out[n++] = o->eos;
        d->n_tok = (int)n;
    }
    cJSON_Delete(root);
}

static int block_tokenize(const PrepareOptions *o, const TokCut *cut, Block *b, NptErr *err) {
    size_t need = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->docs[i].tok_off = need;
        need += b->docs[i].len + 8;
    }
    if (need > b->tok_cap) {
        int *t = realloc(b->tok, need * sizeof *t);
        if (!t) return npt_fail(err, "out of memory for the tokens of a block (%zu ids)", need);
        b->tok = t, b->tok_cap = need;
    }
    long n = (long)b->n;
#pragma omp parallel for schedule(dynamic, 8)
    for (long i = 0; i < n; i++) process_doc(o, cut, b, &b->docs[i]);
    return 0;
}

/* ---------------------------------------------------------------- writer */

/* Token files are written as OUTPUT.tmp.PID.X, fsync'd and renamed into place, so OUTPUT is
 * whole or absent: raw ids through NptAtomicFile, HDF5 through NptH5Out (which reports
 * a write the OS refuses, e.g. on a full disk, with its reason). A token cache (raw,
 * cache_key set) starts with a TokenHeader, written last over a placeholder. */
typedef struct {
    DatasetFormat kind;
    const char *output;
    NptAtomicFile raw; /* .u16, .u32 */
    NptH5Out h5;       /* .h5 */
    hid_t file, dset;
    uint64_t n;
    void *conv;
    size_t conv_cap;
    const uint64_t *cache_key; /* non-NULL: write the token cache's header */
    uint64_t checksum;
} Writer;

static int writer_failed(const Writer *w, NptErr *err) {
    return npt_fail(err, "cannot write token file %s: %s; make room or write elsewhere (nothing was replaced; "
                    "the partial temporary file was removed)", w->output, strerror(errno));
}

/* HDF5 stores uint16 ids when wide is 0, else uint32. */
static int writer_open(Writer *w, const char *output, DatasetFormat kind, int wide, const uint64_t *cache_key,
                       NptErr *err) {
    memset(w, 0, sizeof *w);
    w->raw.lock_fd = w->h5.lock_fd = -1; /* only one of them is opened: the other must never close fd 0 */
    w->kind = kind;
    w->output = output;
    w->file = w->dset = -1;
    w->checksum = TOKEN_CHECKSUM_SEED;
    if (kind != DATASET_HDF5) {
        if (!npt_atomic_open(&w->raw, output, err)) return -1;
        w->cache_key = cache_key;
        static const unsigned char placeholder[TOKEN_HEADER_BYTES];
        if (cache_key && fwrite(placeholder, 1, sizeof placeholder, w->raw.f) != sizeof placeholder) {
            writer_failed(w, err);
            npt_atomic_abort(&w->raw);
            return -1;
        }
        return 0;
    }
    if ((w->file = npt_h5out_create(&w->h5, output, "token file", H5P_DEFAULT, err)) < 0) return -1;
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = 1 << 18;
    hid_t space = H5Screate_simple(1, &zero, &unlimited), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int ok = space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 1, &chunk) >= 0 &&
             (w->dset = H5Dcreate2(w->file, "/tokens", wide ? H5T_STD_U32LE : H5T_STD_U16LE, space, H5P_DEFAULT, dcpl,
                                   H5P_DEFAULT)) >= 0;
    ok &= (space < 0 || H5Sclose(space) >= 0) & (dcpl < 0 || H5Pclose(dcpl) >= 0);
    if (!ok) return npt_fail(err, "cannot write token file %s: HDF5 cannot create its /tokens dataset", output);
    return 0;
}

/* A write the OS refused (the driver kept HDF5 from seeing it): closes the file, which
 * removes it and puts the reason into err. */
static int writer_refused(Writer *w, NptErr *err) {
    if (w->dset >= 0) H5Dclose(w->dset); /* the file is being given up: its result changes nothing */
    w->dset = -1;
    npt_h5out_close(&w->h5, err);
    w->file = -1;
    return -1;
}

static int writer_put(Writer *w, const int *ids, size_t n, NptErr *err) {
    if (n == 0) return 0;
    size_t width = w->kind == DATASET_U16 ? 2 : 4;
    if (n * width > w->conv_cap) {
        void *c = realloc(w->conv, n * width);
        if (!c) return npt_fail(err, "out of memory writing tokens");
        w->conv = c, w->conv_cap = n * width;
    }
    if (width == 2)
        for (size_t i = 0; i < n; i++) ((uint16_t *)w->conv)[i] = (uint16_t)ids[i];
    else
        for (size_t i = 0; i < n; i++) ((uint32_t *)w->conv)[i] = (uint32_t)ids[i];
    if (w->kind != DATASET_HDF5) {
        if (fwrite(w->conv, width, n, w->raw.f) != n) return writer_failed(w, err);
    } else {
        hsize_t off = w->n, cnt = n, total = w->n + n;
        hid_t mem = H5Screate_simple(1, &cnt, NULL), fs = -1;
        int ok = mem >= 0 && H5Dset_extent(w->dset, &total) >= 0 && (fs = H5Dget_space(w->dset)) >= 0 &&
                 H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &cnt, NULL) >= 0 &&
                 H5Dwrite(w->dset, H5T_NATIVE_UINT32, mem, fs, H5P_DEFAULT, w->conv) >= 0;
        ok &= (mem < 0 || H5Sclose(mem) >= 0) & (fs < 0 || H5Sclose(fs) >= 0);
        if (npt_h5out_failed(&w->h5)) return writer_refused(w, err);
        if (!ok) return npt_fail(err, "cannot write token file %s: HDF5 cannot store tokens %llu..%llu", w->output,
                                 (unsigned long long)off, (unsigned long long)(total - 1));
    }
    w->checksum = token_checksum_add(w->checksum, ids, n);
    w->n += n;
    return 0;
}

static int put_attr_i64(hid_t obj, const char *name, int64_t v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = s >= 0 ? H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;
    ok &= (a < 0 || H5Aclose(a) >= 0) & (s < 0 || H5Sclose(s) >= 0);
    return ok ? 0 : -1;
}

/* Finishes the file and renames it into place, or removes it (ok == 0). st holds the
 * document count and the final checksum of what was written (for the cache header). */
static int writer_close(Writer *w, int ok, const PrepareOptions *o, const PrepareStats *st, NptErr *err) {
    int rc = ok ? 0 : -1;
    if (w->raw.f && rc == 0 && w->cache_key) { /* the header, now that the counts are known */
        TokenHeader h = {TOKEN_HEADER_VERSION, w->kind == DATASET_U16 ? 2 : 4, w->n, st->documents, *w->cache_key,
                         st->checksum};
        unsigned char b[TOKEN_HEADER_BYTES];
        token_header_encode(&h, b);
        if (fseek(w->raw.f, 0, SEEK_SET) != 0 || fwrite(b, 1, sizeof b, w->raw.f) != sizeof b) rc = writer_failed(w, err);
    }
    w->raw.no_replace = w->h5.no_replace = o->keep_existing;
    if (w->raw.f) {
        if (rc == 0) rc = npt_atomic_commit(&w->raw, err); /* flush, fsync, rename; removes it on failure */
        else npt_atomic_abort(&w->raw);
    }
    if (w->dset >= 0) {
        if (rc == 0 && (put_attr_i64(w->dset, "vocab_size", tokenizer_vocab_size(o->tok)) ||
                        put_attr_i64(w->dset, "bos_id", o->bos) || put_attr_i64(w->dset, "eos_id", o->eos) ||
                        put_attr_i64(w->dset, "documents", (int64_t)st->documents)))
            rc = npt_fail(err, "cannot write token file %s: HDF5 cannot store the attributes of /tokens", w->output);
        if (H5Dclose(w->dset) < 0 && rc == 0)
            rc = npt_fail(err, "cannot write token file %s: HDF5 cannot close /tokens", w->output);
        w->dset = -1;
    }
    if (w->file >= 0) {
        /* a refused write is the cause whatever else failed: npt_h5out_close names it */
        if (rc && !npt_h5out_failed(&w->h5)) npt_h5out_abort(&w->h5);
        else if (npt_h5out_close(&w->h5, err) || rc || npt_h5out_commit(&w->h5, err)) rc = -1;
        w->file = -1;
    }
    free(w->conv);
    return rc;
}

/* ---------------------------------------------------------------- progress */

typedef struct {
    FILE *out;
    int tty;
    double start, last;
    int last_decile;
} Progress;

static void show_progress(Progress *p, uint64_t done, uint64_t total, uint64_t tokens, int final) {
    if (!p->out) return;
    double now = npt_now_seconds(), secs = now - p->start;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (!final && p->tty && now - p->last < 0.2) return;
    if (!final && !p->tty && (pct >= 100 || (pct / 10 == p->last_decile && now - p->last < 30))) return;
    p->last = now, p->last_decile = pct / 10;
    double mb = (double)done / 1e6, rate = secs > 0 ? (double)done / 1e6 / secs : 0;
    double tps = secs > 0 ? (double)tokens / secs : 0;
    double eta = rate > 0 ? ((double)total - (double)done) / 1e6 / rate : 0;
    char bar[32];
    int fill = pct * 24 / 100;
    for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '.';
    bar[24] = '\0';
    fprintf(p->out, "%sprepare [%s] %3d%%  %.1f/%.1f MB  %.1f MB/s  %.2fM tok/s  %s %d:%02d%s", p->tty ? "\r" : "", bar,
            pct, mb, (double)total / 1e6, rate, tps / 1e6, final ? "took" : "ETA", (int)(final ? secs : eta) / 60,
            (int)(final ? secs : eta) % 60, p->tty && !final ? "  " : "\n");
    fflush(p->out);
}

/* ---------------------------------------------------------------- prepare */

typedef struct {
    const PrepareOptions *o;
    const FileList *files;
    Writer w;
    Block b;
    TokCut *cut;
    PrepareStats *st;
    Progress prog;
    uint64_t total_bytes, done_bytes;
    int shown_bad;
} Job;

/* Checks the block's results in input order and writes its tokens. */
static int block_flush(Job *j, NptErr *err) {
    if (j->b.n == 0) return 0;
    if (block_tokenize(j->o, j->cut, &j->b, err)) return -1;
    for (size_t i = 0; i < j->b.n; i++) {
        BlockDoc *d = &j->b.docs[i];
        const char *path = j->files->path[d->file];
        switch (d->status) {
        case DOC_EMPTY: continue;
        case DOC_BAD_UTF8:
        case DOC_NUL:
            if (d->jsonl)
                return npt_fail(err, "%s:%llu: %s at byte offset %llu", path, (unsigned long long)d->line,
                                d->status == DOC_NUL ? "NUL byte" : "invalid UTF-8",
                                (unsigned long long)(d->file_off + d->bad_at));
            return npt_fail(err, "%s: %s at byte offset %llu%s", path, d->status == DOC_NUL ? "NUL byte" : "invalid UTF-8",
                            (unsigned long long)(d->file_off + d->bad_at),
                            d->status == DOC_NUL ? "; is this a binary (token?) file? give its format explicitly"
                                                 : "; npt reads UTF-8 text (convert it, e.g. with iconv)");
        case DOC_BAD_JSON:
        case DOC_BAD_RECORD:
            if (!j->o->skip_bad_records)
                return npt_fail(err, "%s:%llu: %s; fix the line, or skip bad lines (data.on_bad_record \"skip\", npt data prepare --skip-bad)",
                                path, (unsigned long long)d->line, d->msg ? d->msg : "bad record");
            j->st->bad_records++;
            if (j->o->log && j->shown_bad++ < SHOWN_BAD)
                fprintf(j->o->log, "npt: warning: %s:%llu: %s; skipped%s\n", path, (unsigned long long)d->line,
                        d->msg ? d->msg : "bad record", j->shown_bad == SHOWN_BAD ? " (further bad lines are only counted)" : "");
            continue;
        case DOC_ENCODE:
            return npt_fail(err, "%s: document at byte offset %llu: %s", path, (unsigned long long)d->file_off,
                            d->msg ? d->msg : "cannot encode");
        default: break;
        }
        if (writer_put(&j->w, j->b.tok + d->tok_off, (size_t)d->n_tok, err)) return -1;
        j->st->tokens += (uint64_t)d->n_tok;
        j->st->documents += (uint64_t)(d->bos != 0);
    }
    block_clear(&j->b);
    show_progress(&j->prog, j->done_bytes, j->total_bytes, j->st->tokens, 0);
    return 0;
}

/* Between blocks, and before the output is committed (a signal during the last or only
 * block): -1 naming the signal when one asked to stop; the caller removes the partial output. */
static int stopped(const char *input, NptErr *err) {
    int sig = npt_stop_requested();
    return sig ? npt_fail(err, "%s: stopped by %s while tokenizing; nothing was written", input, npt_signal_name(sig)) : 0;
}

static int enough_tokens(const Job *j) { return j->o->max_tokens && j->st->tokens >= j->o->max_tokens; }

static int prepare_file(Job *j, int file, NptErr *err) {
    const char *path = j->files->path[file];
    DatasetFormat in = j->o->input_format;
    int jsonl = in == DATASET_JSONL || (in == DATASET_AUTO && dataset_detect_format(path) == DATASET_JSONL);
    Reader r = {.path = path, .cut = j->cut, .jsonl = jsonl, .line = 1};
    r.fd = npt_open_input(path, "text input", err);
    if (r.fd < 0) return -1;
    int rc = 0;
    uint64_t before = j->done_bytes;
    for (;;) {
        Found f = {0};
        int got = jsonl ? next_line(&r, &f, err) : next_text(&r, &f, err);
        if (got <= 0) {
            rc = got;
            break;
        }
        if ((rc = block_add(&j->b, &f, file, jsonl, err))) break;
        j->done_bytes = before + r.base + r.doc;
        if (j->b.len < BLOCK_BYTES) continue;
        if ((rc = stopped(path, err)) || (rc = block_flush(j, err)) || enough_tokens(j)) break;
    }
    j->done_bytes = before + j->files->size[file];
    j->st->bytes += j->files->size[file];
    close(r.fd);
    free(r.buf);
    return rc;
}

static DatasetFormat output_kind(const char *output, const Tokenizer *t) {
    DatasetFormat k = dataset_detect_format(output);
    if (k == DATASET_U16 || k == DATASET_U32 || k == DATASET_HDF5) return k;
    return tokenizer_vocab_size(t) > 65536 ? DATASET_U32 : DATASET_U16;
}

/* data_prepare; with cache_key, the output is a token cache with its header. */
static int prepare_into(const char *input, const char *output, const PrepareOptions *o, const uint64_t *cache_key,
                        PrepareStats *st, NptErr *err) {
    memset(st, 0, sizeof *st);
    if (!o->tok) return npt_fail(err, "%s: text needs a tokenizer", input);
    if (o->bos < 0) return npt_fail(err, "the tokenizer defines no BOS token; documents cannot be marked");
    if (o->append_eos && o->eos < 0) return npt_fail(err, "append_eos: the tokenizer defines no EOS token");
    DatasetFormat kind = o->output_format != DATASET_AUTO ? o->output_format : output_kind(output, o->tok);
    if (kind == DATASET_U16 && tokenizer_vocab_size(o->tok) > 65536)
        return npt_fail(err, "%s: uint16 cannot hold ids of a %d-token vocabulary; write .u32 or .h5", output,
                        tokenizer_vocab_size(o->tok));
    if (kind != DATASET_U16 && kind != DATASET_U32 && kind != DATASET_HDF5)
        return npt_fail(err, "%s: output must be a token file (.u16, .u32, .bin or .h5)", output);
    if (cache_key && kind == DATASET_HDF5) return npt_fail(err, "%s: a token cache is a raw token file (.u16, .u32)", output);
    Job j = {.o = o, .st = st};
    FileList files = {0};
    j.files = &files;
    if (list_input(&files, input, err)) {
        files_free(&files);
        return -1;
    }
    for (int i = 0; i < files.n; i++) j.total_bytes += files.size[i];
    st->files = (uint64_t)files.n;
    j.prog = (Progress){o->progress, o->progress ? isatty(fileno(o->progress)) : 0, npt_now_seconds(), 0, 0};
    if (!(j.cut = tok_cut_new(o->tok, err))) {
        files_free(&files);
        return -1;
    }
    int rc = writer_open(&j.w, output, kind, tokenizer_vocab_size(o->tok) > 65536, cache_key, err);
    for (int i = 0; rc == 0 && i < files.n && !enough_tokens(&j); i++) rc = prepare_file(&j, i, err);
    if (rc == 0) rc = block_flush(&j, err);
    if (rc == 0) rc = stopped(input, err);
    st->seconds = npt_now_seconds() - j.prog.start;
    if (rc == 0 && st->tokens == 0) rc = npt_fail(err, "%s holds no text (no non-empty document)", input);
    st->checksum = token_checksum_final(j.w.checksum, j.w.n);
    rc = writer_close(&j.w, rc == 0, o, st, err) || rc ? -1 : 0;
    if (rc == 0) show_progress(&j.prog, j.total_bytes, j.total_bytes, st->tokens, 1);
    else if (j.prog.out && j.prog.tty) fputc('\n', j.prog.out);
    block_free(&j.b);
    tok_cut_free(j.cut);
    files_free(&files);
    return rc;
}

int data_prepare(const char *input, const char *output, const PrepareOptions *o, PrepareStats *st, NptErr *err) {
    return prepare_into(input, output, o, NULL, st, err);
}

/* ---------------------------------------------------------------- token cache */

/* The cache names' seed: FNV-1a's offset basis short of its last digit, as the first
 * versions wrote it. Any seed works. */
#define TOKEN_CACHE_SEED 1469598103934665603ull

/* 1 when the cache file at path is whole: its header matches the key, the file's size
 * and the checksum of its ids; else 0 and why says what is wrong, starting with the
 * path. Reads the whole file once (with a note on log first when that takes a while). */
static int cache_check(const char *path, DatasetFormat kind, uint64_t key, uint64_t size, FILE *log, const char *input,
                       char *why, size_t why_n) {
    TokenFile f;
    NptErr e;
    if (token_file_open(&f, path, kind, 0, &e)) {
        snprintf(why, why_n, "%s", e.msg);
        return 0;
    }
    int ok = 0;
    uint64_t sum;
    if (!f.has_header) {
        snprintf(why, why_n, "%s does not start with a token-cache header (cut short, or not written as a cache by "
                 "this npt)", path);
    } else if (f.header.key != key) {
        snprintf(why, why_n, "%s was made from other data or options (its key is %016llx)", path,
                 (unsigned long long)f.header.key);
    } else {
        if (log && size > (1ull << 30))
            fprintf(log, "npt: %s: checking the cached tokens %s (%.1f GB)\n", input, path, (double)size / 1e9);
        if (token_file_checksum(&f, &sum, &e))
            snprintf(why, why_n, "%s", e.msg);
        else if (sum != f.header.checksum)
            snprintf(why, why_n, "%s does not match its checksum (the file was damaged)", path);
        else
            ok = 1;
    }
    token_file_close(&f);
    return ok;
}

int data_cached_tokens(const char *input, const char *cache_dir, const PrepareOptions *o, char *out, size_t out_n,
                       NptErr *err) {
    FileList files = {0};
    if (list_input(&files, input, err)) {
        files_free(&files);
        return -1;
    }
    char real[PATH_MAX];
    const char *where = realpath(input, real) ? real : input;
    /* The version renames every cache whose content an older npt would make otherwise,
     * so it never reads them and they never read its: "-2" caches with a TokenHeader,
     * "-3" the ids of invisible cuts (tok_cut.c), CRLF separators and strict JSONL. */
    uint64_t h = npt_hash_bytes(TOKEN_CACHE_SEED, "npt-token-cache-3", 17);
    h = npt_hash_bytes(h, where, strlen(where));
    for (int i = 0; i < files.n; i++) {
        struct stat st;
        if (stat(files.path[i], &st) != 0) continue;
        int64_t id[3] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec};
        h = npt_hash_bytes(h, files.path[i], strlen(files.path[i]));
        h = npt_hash_bytes(h, id, sizeof id);
    }
    files_free(&files);
    int opts[6] = {o->bos, o->eos, o->append_eos, (int)o->input_format, o->skip_bad_records, DATA_MAX_PIECE};
    h = npt_hash_bytes(h, opts, sizeof opts);
    const char *field = o->text_field ? o->text_field : "text";
    h = npt_hash_bytes(h, field, strlen(field));
    h ^= tok_encoding_hash(o->tok); /* everything that decides the ids, HF rules included */
    const char *base = strrchr(input, '/');
    char stem[64];
    snprintf(stem, sizeof stem, "%s", base && base[1] ? base + 1 : base ? "data" : input);
    for (char *c = stem; *c; c++)
        if (*c == '.' || *c == ' ') *c = '_';
    int wide = tokenizer_vocab_size(o->tok) > 65536;
    if ((size_t)snprintf(out, out_n, "%s/%s-%016llx.%s", cache_dir, stem, (unsigned long long)h, wide ? "u32" : "u16") >= out_n)
        return npt_fail(err, "cache path in %s is too long", cache_dir);
    struct stat st;
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
        char why[1200];
        if (cache_check(out, wide ? DATASET_U32 : DATASET_U16, h, (uint64_t)st.st_size, o->log, input, why, sizeof why)) {
            if (o->log) fprintf(o->log, "npt: %s: using cached tokens %s\n", input, out);
            return 0;
        }
        /* derived data: made again from the source, through the same temporary file + rename */
        if (o->log) fprintf(o->log, "npt: warning: unusable token cache: %s; rebuilding it from %s\n", why, input);
    } else {
        if (npt_mkdir_p(cache_dir, err)) return -1;
        if (o->log) fprintf(o->log, "npt: %s: tokenizing into the cache %s\n", input, out);
    }
    /* the temporary files of runs killed while tokenizing (any source's): nothing else
     * would ever remove them from a shared cache */
    npt_temp_sweep(cache_dir, NULL);
    PrepareStats ps;
    return prepare_into(input, out, o, &h, &ps, err);
}

/* ---------------------------------------------------------------- stats */

typedef struct {
    TokenStats *st;
    int bos, seen_bos;
    uint64_t cur;
} StatsCtx;

static void end_doc(StatsCtx *c) {
    if (!c->cur) return;
    TokenStats *s = c->st;
    s->documents++;
    if (c->cur < s->min_doc || s->documents == 1) s->min_doc = c->cur;
    if (c->cur > s->max_doc) s->max_doc = c->cur;
    int b = 0;
    while (b < 39 && (c->cur >> (b + 1))) b++;
    s->hist[b]++;
    c->cur = 0;
}

static int stats_chunk(const int *ids, size_t n, uint64_t start, void *ctx) {
    StatsCtx *c = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = (uint64_t)ids[i];
        if (start + i == 0 || v < c->st->min_id) c->st->min_id = v;
        if (v > c->st->max_id) c->st->max_id = v;
        if (ids[i] == c->bos) end_doc(c), c->seen_bos = 1;
        if (c->seen_bos) c->cur++;
        else c->st->before_first_bos++;
    }
    return 0;
}

int data_token_stats(const char *spec, DatasetFormat fmt, int bos, TokenStats *st, NptErr *err) {
    memset(st, 0, sizeof *st);
    DatasetFormat kind = fmt == DATASET_AUTO ? dataset_detect_format(spec) : fmt;
    if (kind == DATASET_TEXT || kind == DATASET_JSONL) /* read as uint16 it would give figures of nonsense */
        return npt_fail(err, "%s is a %s source, not a token file (.bin, .u16, .u32, .h5): tokenize it first "
                        "with npt data prepare %s -o FILE.u16 --tokenizer T", spec, dataset_format_name(kind), spec);
    TokenFile f;
    if (token_file_open(&f, spec, kind, 0, err)) return -1;
    StatsCtx c = {st, bos, 0, 0};
    st->tokens = f.n_tokens;
    int rc = token_file_scan(&f, stats_chunk, &c, err);
    end_doc(&c);
    token_file_close(&f);
    return rc;
}
