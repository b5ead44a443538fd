/* model/load_gguf.c — GGUF files (llama.cpp) of the "llama" architecture, versions 1-3,
 * with F32, F16 or BF16 tensors.
 *
 * Layout: "GGUF", uint32 version, tensor count, metadata count, the metadata
 * (key string, uint32 value type, value), the tensor infos (name, uint32 n_dims, dims
 * innermost first, uint32 ggml type, uint64 offset), padding to general.alignment
 * (default 32), then the data. Version 1 stores counts, string lengths and dims as
 * uint32; versions 2 and 3 as uint64. Every read is checked against the file size, so
 * a corrupt count or length ends in an error, never in a huge allocation; the tensor
 * infos must tile the data section as llama.cpp lays it out (check_layout), so a wrong
 * count or offset is an error, not shifted weights. GGUF keeps q/k in Meta layout:
 * interleaved-pair RoPE. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "load_internal.h"

/* ---- bounded reader ---- */

typedef struct {
    FILE *f;
    const char *path;
    uint64_t size, pos;
    int version;
    int failed; /* sticky: after the first error every read yields zeros */
    NptErr *err;
} Reader;

static int need(Reader *r, uint64_t n, const char *what) {
    if (r->failed) return 0;
    if (n <= r->size - r->pos) return 1;
    r->failed = 1;
    npt_fail(r->err, "%s: GGUF header is truncated or corrupt: %s at byte %llu needs %llu bytes but the file is %llu",
             r->path, what, (unsigned long long)r->pos, (unsigned long long)n, (unsigned long long)r->size);
    return 0;
}

static void get(Reader *r, void *dst, size_t n, const char *what) {
    memset(dst, 0, n);
    if (!need(r, n, what)) return;
    if (fread(dst, 1, n, r->f) != n) {
        r->failed = 1;
        npt_fail(r->err, "%s: read error at byte %llu", r->path, (unsigned long long)r->pos);
        return;
    }
    r->pos += n;
}

static void skip(Reader *r, uint64_t n, const char *what) {
    if (!need(r, n, what)) return;
    if (fseeko(r->f, (off_t)n, SEEK_CUR) != 0) {
        r->failed = 1;
        npt_fail(r->err, "%s: cannot seek: %s", r->path, strerror(errno));
        return;
    }
    r->pos += n;
}

static uint32_t get_u32(Reader *r, const char *what) {
    uint32_t v;
    get(r, &v, 4, what);
    return v;
}

static uint64_t get_u64(Reader *r, const char *what) {
    uint64_t v;
    get(r, &v, 8, what);
    return v;
}

/* Counts, string lengths and dims: uint32 in version 1, uint64 after. */
static uint64_t get_count(Reader *r, const char *what) {
    return r->version == 1 ? get_u32(r, what) : get_u64(r, what);
}

/* Reads a string, keeping at most cap-1 bytes in buf (the rest is skipped). */
static void get_string(Reader *r, char *buf, size_t cap, const char *what) {
    uint64_t len = get_count(r, what);
    uint64_t keep = len < cap - 1 ? len : cap - 1;
    buf[0] = '\0';
    if (!need(r, len, what)) return;
    get(r, buf, (size_t)keep, what);
    buf[keep] = '\0';
    skip(r, len - keep, what);
}

/* ---- metadata values ---- */

enum { V_U8, V_I8, V_U16, V_I16, V_U32, V_I32, V_F32, V_BOOL, V_STRING, V_ARRAY, V_U64, V_I64, V_F64, V_COUNT };
static const int value_size[V_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static double get_scalar(Reader *r, uint32_t type, const char *what) {
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        float f32; uint64_t u64; int64_t i64; double f64;
    } v;
    get(r, &v, (size_t)value_size[type], what);
    switch (type) {
    case V_U8: case V_BOOL: return v.u8;
    case V_I8: return v.i8;
    case V_U16: return v.u16;
    case V_I16: return v.i16;
    case V_U32: return v.u32;
    case V_I32: return v.i32;
    case V_F32: return v.f32;
    case V_U64: return (double)v.u64;
    case V_I64: return (double)v.i64;
    default: return v.f64;
    }
}

static void skip_value(Reader *r, uint32_t type, int depth, const char *what) {
    if (type >= V_COUNT) {
        if (!r->failed) npt_fail(r->err, "%s: %s has unknown GGUF value type %u; the file is corrupt", r->path, what, type);
        r->failed = 1;
        return;
    }
    if (type == V_STRING) {
        skip(r, get_count(r, what), what);
    } else if (type != V_ARRAY) {
        skip(r, (uint64_t)value_size[type], what);
    } else {
        uint32_t elem = get_u32(r, what);
        uint64_t n = get_count(r, what);
        if (elem < V_COUNT && value_size[elem]) {
            uint64_t room = r->size - r->pos, esize = (uint64_t)value_size[elem];
            skip(r, n > room / esize ? room + 1 : n * esize, what);
            return;
        }
        if (depth >= 3) {
            if (!r->failed) npt_fail(r->err, "%s: %s nests arrays too deeply", r->path, what);
            r->failed = 1;
            return;
        }
        /* each element is at least a length or a header: a lying count hits EOF early */
        for (uint64_t i = 0; i < n && !r->failed; i++) skip_value(r, elem, depth + 1, what);
    }
}

/* The metadata npt uses. */
enum {
    K_ARCH, K_ALIGN, K_DIM, K_FFN, K_LAYERS, K_HEADS, K_KV_HEADS, K_CTX, K_EPS, K_THETA,
    K_ROPE_DIMS, K_SCALING_TYPE, K_SCALE_LINEAR, K_EXPERTS, K_BOS, K_EOS, K_N
};
static const char *const key_name[K_N] = {
    "general.architecture", "general.alignment", "llama.embedding_length", "llama.feed_forward_length",
    "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length",
    "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base", "llama.rope.dimension_count",
    "llama.rope.scaling.type", "llama.rope.scale_linear", "llama.expert_count", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id"};

typedef struct {
    int present;
    double num;
    char str[64];
} Meta;

static int is_string_key(int k) { return k == K_ARCH || k == K_SCALING_TYPE; }

static void read_metadata(Reader *r, uint64_t n_kv, Meta *meta) {
    for (uint64_t i = 0; i < n_kv && !r->failed; i++) {
        char key[256], what[300];
        get_string(r, key, sizeof key, "metadata key");
        uint32_t type = get_u32(r, "metadata value type");
        snprintf(what, sizeof what, "metadata value %s", key);
        int k = 0;
        while (k < K_N && strcmp(key, key_name[k])) k++;
        if (r->failed || k == K_N) {
            skip_value(r, type, 0, what);
            continue;
        }
        int want_string = is_string_key(k);
        if (want_string ? type != V_STRING : (type >= V_COUNT || !value_size[type])) {
            npt_fail(r->err, "%s: metadata %s has GGUF type %u, expected a %s (per-layer arrays are not supported)",
                     r->path, key, type, want_string ? "string" : "number");
            r->failed = 1;
            return;
        }
        meta[k].present = 1;
        if (want_string)
            get_string(r, meta[k].str, sizeof meta[k].str, what);
        else
            meta[k].num = get_scalar(r, type, what);
    }
}

/* ---- tensor infos ---- */

typedef struct {
    char name[96];
    uint32_t n_dims;
    uint64_t ne[4]; /* innermost first */
    uint32_t type;
    uint64_t offset; /* from the start of the data section */
} GgufTensor;

typedef struct {
    GgufTensor *t;
    uint64_t n;
    uint64_t data_start, data_size;
    int fd;
} Gguf;

static int read_tensor_infos(Reader *r, uint64_t count, Gguf *g) {
    uint64_t cap = 0;
    for (uint64_t i = 0; i < count && !r->failed; i++) {
        if (g->n == cap) { /* grown as infos are read: a lying count hits EOF before memory runs out */
            cap = cap ? 2 * cap : 64;
            GgufTensor *p = realloc(g->t, cap * sizeof *p);
            if (!p) return npt_fail(r->err, "%s: out of memory for the tensor table", r->path);
            g->t = p;
        }
        GgufTensor *t = &g->t[g->n++];
        memset(t, 0, sizeof *t);
        get_string(r, t->name, sizeof t->name, "tensor name");
        t->n_dims = get_u32(r, "tensor n_dims");
        if (!r->failed && (t->n_dims < 1 || t->n_dims > 4)) {
            npt_fail(r->err, "%s: tensor info %llu (\"%s\") has %u dimensions (GGUF allows 1..4); the file is corrupt",
                     r->path, (unsigned long long)i, t->name, t->n_dims);
            return -1;
        }
        for (uint32_t d = 0; d < t->n_dims; d++) t->ne[d] = get_count(r, "tensor dims");
        t->type = get_u32(r, "tensor type");
        t->offset = get_u64(r, "tensor offset");
    }
    return r->failed ? -1 : 0;
}

static const GgufTensor *find(const Gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}

static const char *ggml_type_name(uint32_t type) {
    static const char *const names[] = {
        "F32",   "F16",    "Q4_0",    "Q4_1",   "Q4_2",   "Q4_3",  "Q5_0",  "Q5_1",     "Q8_0",     "Q8_1",
        "Q2_K",  "Q3_K",   "Q4_K",    "Q5_K",   "Q6_K",   "Q8_K",  "IQ2_XXS", "IQ2_XS", "IQ3_XXS",  "IQ1_S",
        "IQ4_NL", "IQ3_S", "IQ2_S",   "IQ4_XS", "I8",     "I16",   "I32",   "I64",      "F64",      "IQ1_M",
        "BF16",  "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8",
        "MXFP4"};
    return type < NPT_ARRAY_LEN(names) ? names[type] : "unknown";
}

static int beyond_data(const LlamaModel *m, const Gguf *g, const GgufTensor *e, uint64_t bytes, NptErr *err) {
    return npt_fail(err, "%s: tensor %s (offset %llu, %llu bytes) lies beyond the %llu-byte data section; the file is "
                    "truncated", m->path, e->name, (unsigned long long)e->offset, (unsigned long long)bytes,
                    (unsigned long long)g->data_size);
}

/* ---- data layout ---- */

/* Bytes per element of the unblocked ggml types; 0 for the quantized (block) types. */
static uint64_t ggml_elem_size(uint32_t type) {
    switch (type) {
    case 24: return 1;                   /* I8 */
    case 1: case 25: case 30: return 2;  /* F16, I16, BF16 */
    case 0: case 26: return 4;           /* F32, I32 */
    case 27: case 28: return 8;          /* I64, F64 */
    default: return 0;
    }
}

/* Byte size of e (of a type ggml_elem_size knows); UINT64_MAX when it overflows, which
 * no data section holds. */
static uint64_t tensor_bytes(const GgufTensor *e) {
    uint64_t n = ggml_elem_size(e->type);
    for (uint32_t d = 0; d < e->n_dims; d++) {
        if (e->ne[d] && n > UINT64_MAX / e->ne[d]) return UINT64_MAX;
        n *= e->ne[d];
    }
    return n;
}

/* Offset order; ties in info order, so a message names the earlier tensor first. */
static int cmp_offset(const void *a, const void *b) {
    const GgufTensor *x = *(const GgufTensor *const *)a, *y = *(const GgufTensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* One tensor (bytes: its tensor_bytes) against the end of the previous one (prev NULL:
 * the section's start). */
static int check_next(const LlamaModel *m, const Gguf *g, const GgufTensor *prev, uint64_t end, const GgufTensor *e,
                      uint64_t bytes, uint64_t align, NptErr *err) {
    if (e->offset % align)
        return npt_fail(err, "%s: tensor %s has data offset %llu, not a multiple of the %llu-byte alignment; the "
                        "tensor infos are corrupt", m->path, e->name, (unsigned long long)e->offset,
                        (unsigned long long)align);
    if (e->offset > g->data_size || bytes > g->data_size - e->offset) return beyond_data(m, g, e, bytes, err);
    if (e->offset < end)
        return npt_fail(err, "%s: tensors %s and %s overlap in the data section; the tensor infos are corrupt",
                        m->path, prev->name, e->name);
    if (e->offset - end >= align)
        return npt_fail(err, "%s: %llu bytes between %s and %s belong to no tensor (alignment pads at most %llu); "
                        "the tensor infos are corrupt", m->path, (unsigned long long)(e->offset - end),
                        prev ? prev->name : "the start of the data section", e->name,
                        (unsigned long long)(align - 1));
    return 0;
}

/* llama.cpp's rule for the data section: each tensor starts at the previous one's end
 * rounded up to general.alignment, the first at 0, and the file ends within the last
 * one's padding. A tensor count or offset that is off otherwise loads shifted or aliased
 * weights with no other symptom. Checked in offset order (npt does not need llama.cpp's
 * info order). A file with quantized tensors, whose sizes npt does not compute, is left
 * to load_tensor's error naming the type. */
static int check_layout(const LlamaModel *m, const Gguf *g, uint64_t align, NptErr *err) {
    for (uint64_t i = 0; i < g->n; i++)
        if (!ggml_elem_size(g->t[i].type)) return 0;
    const GgufTensor **by = malloc((g->n + 1) * sizeof *by);
    if (!by) return npt_fail(err, "%s: out of memory for the tensor table", m->path);
    for (uint64_t i = 0; i < g->n; i++) by[i] = &g->t[i];
    qsort(by, (size_t)g->n, sizeof *by, cmp_offset);
    const GgufTensor *prev = NULL;
    uint64_t end = 0;
    int rc = 0;
    for (uint64_t i = 0; i < g->n && !rc; i++) {
        uint64_t bytes = tensor_bytes(by[i]);
        rc = check_next(m, g, prev, end, by[i], bytes, align, err);
        prev = by[i], end = by[i]->offset + bytes;
    }
    free(by);
    if (!rc && g->data_size - end >= align)
        rc = npt_fail(err, "%s: %llu bytes after the last tensor belong to no tensor (alignment pads at most %llu); "
                      "the tensor count is wrong or bytes were appended", m->path,
                      (unsigned long long)(g->data_size - end), (unsigned long long)(align - 1));
    return rc;
}

/* A blk.N tensor with N >= block_count means the metadata undercounts: the model would
 * run with its top layers silently dropped (load_hf.c refuses the same of config.json). */
static int check_no_extra_layers(const LlamaModel *m, const Gguf *g, NptErr *err) {
    for (uint64_t i = 0; i < g->n; i++) {
        int layer;
        if (sscanf(g->t[i].name, "blk.%d.", &layer) == 1 && layer >= m->cfg.n_layers)
            return npt_fail(err, "%s: the file has tensor %s but llama.block_count is %d; its metadata is damaged",
                            m->path, g->t[i].name, m->cfg.n_layers);
    }
    return 0;
}

static int load_tensor(LlamaModel *m, const Gguf *g, Tensor *t, const char *name, NptErr *err) {
    const char *file = m->path;
    const GgufTensor *e = find(g, name);
    if (!e) return npt_fail(err, "%s: tensor %s is missing", m->path, name);
    WeightDtype dt;
    if (e->type == 0)
        dt = WDT_F32;
    else if (e->type == 1)
        dt = WDT_F16;
    else if (e->type == 30)
        dt = WDT_BF16;
    else
        return npt_fail(err,
                        "%s: tensor %s has type %s (%u); npt loads F32, F16 and BF16 GGUF files, not quantized ones: "
                        "convert the original model with --outtype f16 or f32",
                        file, name, ggml_type_name(e->type), e->type);
    uint64_t shape[4];
    for (uint32_t d = 0; d < e->n_dims; d++) shape[d] = e->ne[e->n_dims - 1 - d]; /* to [out, in] */
    if (llama_check_shape(t, (int)e->n_dims, shape, file, name, err)) return -1;
    uint64_t bytes = (uint64_t)t->n * weight_dtype_size(dt);
    if (e->offset > g->data_size || bytes > g->data_size - e->offset) return beyond_data(m, g, e, bytes, err);
    if (llama_read_tensor(g->fd, file, g->data_start + e->offset, dt, t->data, t->n, name, err)) return -1;
    llama_set_source(m, t, file, name);
    return 0;
}

/* Integer metadata k into *out, def when absent. A value an int cannot hold is an error
 * with its real value (cast, it would wrap and be reported as another number); the
 * others are judged by llama_validate_config. */
static int meta_int(const LlamaModel *m, const Meta *meta, int k, int def, int *out, NptErr *err) {
    *out = def;
    if (!meta[k].present) return 0;
    if (!(meta[k].num >= INT_MIN && meta[k].num <= INT_MAX))
        return npt_fail(err, "%s: invalid model configuration: %s = %.0f is %s; the file's metadata is damaged", m->path,
                        key_name[k], meta[k].num, meta[k].num > 0 ? "too large" : "out of range");
    *out = (int)meta[k].num;
    return 0;
}

static int config_from_meta(LlamaModel *m, const Meta *meta, const Gguf *g, NptErr *err) {
    if (!meta[K_ARCH].present || strcmp(meta[K_ARCH].str, "llama"))
        return npt_fail(err, "%s: general.architecture is \"%s\"; npt loads GGUF models of the llama architecture",
                        m->path, meta[K_ARCH].present ? meta[K_ARCH].str : "(missing)");
    if (meta[K_EXPERTS].present && meta[K_EXPERTS].num > 0)
        return npt_fail(err, "%s: mixture-of-experts models (llama.expert_count %g) are not supported", m->path,
                        meta[K_EXPERTS].num);
    if ((meta[K_SCALING_TYPE].present && strcmp(meta[K_SCALING_TYPE].str, "none")) ||
        (meta[K_SCALE_LINEAR].present && meta[K_SCALE_LINEAR].num != 1.0))
        return npt_fail(err, "%s: RoPE scaling is set; npt implements plain RoPE only", m->path);
    static const int required[] = {K_DIM, K_FFN, K_LAYERS, K_HEADS};
    for (size_t i = 0; i < NPT_ARRAY_LEN(required); i++)
        if (!meta[required[i]].present)
            return npt_fail(err, "%s: required metadata %s is missing", m->path, key_name[required[i]]);
    const GgufTensor *emb = find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return npt_fail(err, "%s: tensor token_embd.weight is missing or not 2-D", m->path);
    LlamaConfig *c = &m->cfg;
    if (meta_int(m, meta, K_DIM, 0, &c->dim, err) || meta_int(m, meta, K_FFN, 0, &c->hidden_dim, err) ||
        meta_int(m, meta, K_LAYERS, 0, &c->n_layers, err) || meta_int(m, meta, K_HEADS, 0, &c->n_heads, err) ||
        meta_int(m, meta, K_KV_HEADS, c->n_heads, &c->n_kv_heads, err) ||
        meta_int(m, meta, K_CTX, 2048, &c->seq_len, err) || meta_int(m, meta, K_BOS, 1, &c->bos_id, err) ||
        meta_int(m, meta, K_EOS, 2, &c->eos_id, err))
        return -1;
    if (emb->ne[1] > INT_MAX)
        return npt_fail(err, "%s: invalid model configuration: token_embd.weight has %llu rows (the vocabulary size), "
                        "too many; the file is damaged", m->path, (unsigned long long)emb->ne[1]);
    c->vocab_size = (int)emb->ne[1];
    c->norm_eps = meta[K_EPS].present ? (float)meta[K_EPS].num : 1e-5f;
    c->rope_theta = meta[K_THETA].present ? (float)meta[K_THETA].num : 10000.0f;
    c->rope = ROPE_INTERLEAVED;
    c->tied = find(g, "output.weight") == NULL;
    if (llama_validate_config(m, err)) return -1;
    if (meta[K_ROPE_DIMS].present && meta[K_ROPE_DIMS].num != c->head_dim)
        return npt_fail(err, "%s: llama.rope.dimension_count %g differs from head_dim %d; partial RoPE is not supported",
                        m->path, meta[K_ROPE_DIMS].num, c->head_dim);
    return 0;
}

static int load_weights(LlamaModel *m, const Gguf *g, NptErr *err) {
    if (load_tensor(m, g, &m->tok_emb, "token_embd.weight", err) ||
        load_tensor(m, g, &m->final_norm, "output_norm.weight", err) ||
        (!m->cfg.tied && load_tensor(m, g, &m->lm_head, "output.weight", err)))
        return -1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < LLAMA_LAYER_TENSORS; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, llama_layer_tensors[k].gguf);
            if (load_tensor(m, g, llama_layer_tensor(&m->layers[l], k), name, err)) return -1;
        }
    return 0;
}

/* Header, metadata and tensor infos; leaves g ready for reading tensors. */
static int parse(LlamaModel *m, FILE *f, uint64_t size, Gguf *g, NptErr *err) {
    Reader r = {.f = f, .path = m->path, .size = size, .err = err};
    char magic[4];
    get(&r, magic, 4, "magic");
    uint32_t version = get_u32(&r, "version");
    if (r.failed) return -1;
    if (memcmp(magic, "GGUF", 4)) return npt_fail(err, "%s: no GGUF magic", m->path);
    if (version < 1 || version > 3)
        return npt_fail(err, "%s: GGUF version %u is not supported (1-3%s)", m->path, version,
                        version > 0xffff ? "; a big-endian file?" : "");
    r.version = (int)version;
    uint64_t n_tensors = get_count(&r, "tensor count");
    uint64_t n_kv = get_count(&r, "metadata count");
    Meta meta[K_N];
    memset(meta, 0, sizeof meta);
    read_metadata(&r, n_kv, meta);
    if (r.failed || read_tensor_infos(&r, n_tensors, g)) return -1;
    uint64_t align = meta[K_ALIGN].present ? (uint64_t)meta[K_ALIGN].num : 32;
    if (align == 0 || align > (1u << 20) || (align & (align - 1)))
        return npt_fail(err, "%s: general.alignment %llu is not a power of two", m->path, (unsigned long long)align);
    g->data_start = (r.pos + align - 1) / align * align;
    if (g->data_start > size)
        return npt_fail(err, "%s: file ends before its tensor data (truncated)", m->path);
    g->data_size = size - g->data_start;
    return check_layout(m, g, align, err) || config_from_meta(m, meta, g, err) || check_no_extra_layers(m, g, err)
               ? -1
               : 0;
}

int llama_load_gguf(const char *path, LlamaModel *m, NptErr *err) {
    if (llama_begin(m, path, MODEL_FMT_GGUF, err)) return -1;
    FILE *f;
    int open_rc = npt_fopen_input(path, "model", &f, err);
    if (open_rc == -2) return -1; /* a pipe or device: err says so */
    if (open_rc) return npt_fail(err, "cannot open model %s: %s", path, strerror(errno));
    Gguf g = {.fd = fileno(f)};
    uint64_t size;
    int rc = llama_file_size(g.fd, path, &size, err) || parse(m, f, size, &g, err) || llama_alloc_weights(m, err) ||
                     load_weights(m, &g, err)
                 ? -1
                 : 0;
    free(g.t);
    fclose(f);
    if (rc) llama_free(m);
    return rc;
}
