/* model/load_llama2c.c — llama2.c checkpoints (karpathy/llama2.c export.py):
 *   v0 "legacy": 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 *      vocab_size, seq_len; a negative vocab_size means an unshared classifier), then
 *      float32 weights, including the precomputed RoPE table that npt skips.
 *   v1: 256-byte header: uint32 magic "ak42", int32 version 1, the same 7 int32, a
 *      uint8 shared-classifier flag, zero padding; float32 weights in another order.
 *   v2 (Q8_0) is refused. Weights are in Meta layout: interleaved-pair RoPE.
 * Each version's weight order is a table of sections, walked once to compute the exact
 * file size the header implies and once to read. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "load_internal.h"

enum { AK42_MAGIC = 0x616b3432, V1_HEADER_BYTES = 256, LEGACY_HEADER_BYTES = 28 };

typedef enum {
    S_TOK, S_ATT_NORM, S_WQ, S_WK, S_WV, S_WO, S_FFN_NORM, S_W1, S_W2, S_W3, S_FINAL_NORM, S_FREQ, S_WCLS, S_END
} Section;

/* llama2.c's own names (run.c TransformerWeights), used in error messages. */
static const char *const section_name[] = {
    "token_embedding_table", "rms_att_weight", "wq", "wk", "wv", "wo", "rms_ffn_weight",
    "w1", "w2", "w3", "rms_final_weight", "freq_cis", "wcls"};

static const Section legacy_order[] = {S_TOK, S_ATT_NORM, S_WQ, S_WK, S_WV, S_WO, S_FFN_NORM,
                                       S_W1, S_W2, S_W3, S_FINAL_NORM, S_FREQ, S_WCLS, S_END};
static const Section v1_order[] = {S_ATT_NORM, S_FFN_NORM, S_FINAL_NORM, S_TOK, S_WQ, S_WK, S_WV,
                                   S_WO, S_W1, S_W2, S_W3, S_WCLS, S_END};

static int per_layer(Section s) { return s >= S_ATT_NORM && s <= S_W3; }

/* Floats one instance (one layer's, for per-layer sections) of section s occupies. */
static uint64_t section_floats(const LlamaConfig *c, Section s) {
    uint64_t d = (uint64_t)c->dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim;
    switch (s) {
    case S_TOK: case S_WCLS: return (uint64_t)c->vocab_size * d;
    case S_ATT_NORM: case S_FFN_NORM: case S_FINAL_NORM: return d;
    case S_WQ: case S_WO: return d * d;
    case S_WK: case S_WV: return kvd * d;
    case S_W1: case S_W2: case S_W3: return (uint64_t)c->hidden_dim * d;
    case S_FREQ: return (uint64_t)c->seq_len * c->head_dim; /* cos and sin, seq_len x head_dim/2 each */
    case S_END: break;
    }
    return 0;
}

/* The view section s of layer l is read into; llama2.c w1/w3/w2 are gate/up/down. */
static Tensor *section_view(LlamaModel *m, Section s, int l) {
    switch (s) {
    case S_TOK: return &m->tok_emb;
    case S_ATT_NORM: return &m->layers[l].attn_norm;
    case S_WQ: return &m->layers[l].wq;
    case S_WK: return &m->layers[l].wk;
    case S_WV: return &m->layers[l].wv;
    case S_WO: return &m->layers[l].wo;
    case S_FFN_NORM: return &m->layers[l].ffn_norm;
    case S_W1: return &m->layers[l].w_gate;
    case S_W2: return &m->layers[l].w_down;
    case S_W3: return &m->layers[l].w_up;
    case S_FINAL_NORM: return &m->final_norm;
    case S_WCLS: return &m->lm_head;
    default: return NULL;
    }
}

/* Walks the sections from byte `start`. With fd < 0 only returns the end offset;
 * otherwise reads each section into its view. Returns the end offset, 0 on error. */
static uint64_t walk(LlamaModel *m, const Section *order, uint64_t start, int fd, NptErr *err) {
    const LlamaConfig *c = &m->cfg;
    const char *file = m->path;
    uint64_t off = start;
    for (const Section *s = order; *s != S_END; s++) {
        if (*s == S_WCLS && c->tied) continue;
        int count = per_layer(*s) ? c->n_layers : 1;
        uint64_t bytes = section_floats(c, *s) * sizeof(float);
        for (int l = 0; l < count; l++, off += bytes) {
            if (fd < 0 || *s == S_FREQ) continue;
            char name[64];
            if (per_layer(*s))
                snprintf(name, sizeof name, "%s[layer %d]", section_name[*s], l);
            else
                snprintf(name, sizeof name, "%s", section_name[*s]);
            Tensor *t = section_view(m, *s, l);
            if (llama_read_tensor(fd, file, off, WDT_F32, t->data, t->n, name, err)) return 0;
            llama_set_source(m, t, file, name);
        }
    }
    return off;
}

/* Parses either header into m->cfg; sets *order and *header_bytes. */
static int parse_header(LlamaModel *m, const unsigned char *h, uint64_t size, const Section **order,
                        uint64_t *header_bytes, NptErr *err) {
    int32_t v[7];
    uint32_t magic;
    memcpy(&magic, h, 4);
    if (magic == AK42_MAGIC) {
        int32_t version;
        memcpy(&version, h + 4, 4);
        if (version == 2)
            return npt_fail(err, "%s: quantized llama2.c v2 files are not supported; export with version 1", m->path);
        if (version != 1)
            return npt_fail(err, "%s: unknown llama2.c file version %d (npt reads the legacy format and version 1)",
                            m->path, version);
        if (size < V1_HEADER_BYTES)
            return npt_fail(err, "%s: file is truncated: %llu bytes, shorter than the 256-byte version 1 header",
                            m->path, (unsigned long long)size);
        memcpy(v, h + 8, sizeof v);
        m->cfg.tied = h[36] != 0;
        *order = v1_order;
        *header_bytes = V1_HEADER_BYTES;
    } else {
        memcpy(v, h, sizeof v);
        m->cfg.tied = v[5] > 0;
        if (v[5] < 0 && v[5] != INT32_MIN) v[5] = -v[5];
        *order = legacy_order;
        *header_bytes = LEGACY_HEADER_BYTES;
    }
    LlamaConfig *c = &m->cfg;
    c->dim = v[0], c->hidden_dim = v[1], c->n_layers = v[2], c->n_heads = v[3];
    c->n_kv_heads = v[4], c->vocab_size = v[5], c->seq_len = v[6];
    c->norm_eps = 1e-5f, c->rope_theta = 10000.0f, c->rope = ROPE_INTERLEAVED;
    c->bos_id = 1, c->eos_id = 2;
    NptErr why;
    if (llama_validate_config(m, &why) == 0) return 0;
    if (*order == v1_order) return npt_fail(err, "%s", why.msg);
    /* Anything unrecognised ends up here: say so rather than only that dim is odd. */
    size_t plen = strlen(m->path);
    const char *detail = !strncmp(why.msg, m->path, plen) && why.msg[plen] == ':' ? why.msg + plen + 2 : why.msg;
    return npt_fail(err,
                    "%s: not a model file npt recognises (not an HF directory, no GGUF magic, and read as a llama2.c "
                    "checkpoint its header is implausible: %s)",
                    m->path, detail);
}

int llama_load_llama2c(const char *path, LlamaModel *m, NptErr *err) {
    if (llama_begin(m, path, MODEL_FMT_LLAMA2C, err)) return -1;
    int fd = npt_open_input(path, "model", err);
    if (fd == -1) return npt_fail(err, "cannot open model %s: %s", path, strerror(errno));
    if (fd < 0) return -1; /* a pipe or device: err says so */
    unsigned char h[V1_HEADER_BYTES] = {0};
    uint64_t size = 0, header_bytes = 0, end = 0;
    const Section *order = NULL;
    if (llama_file_size(fd, path, &size, err)) goto fail;
    if (size < LEGACY_HEADER_BYTES) {
        npt_fail(err, "%s: file is %llu bytes, too small to be a model", path, (unsigned long long)size);
        goto fail;
    }
    if (pread(fd, h, size < sizeof h ? (size_t)size : sizeof h, 0) < LEGACY_HEADER_BYTES) {
        npt_fail(err, "cannot read the header of %s", path);
        goto fail;
    }
    if (parse_header(m, h, size, &order, &header_bytes, err)) goto fail;
    end = walk(m, order, header_bytes, -1, err);
    if (end != size) {
        const LlamaConfig *c = &m->cfg;
        npt_fail(err,
                 "%s: file is %llu bytes but its llama2.c header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                 "n_kv_heads %d, vocab_size %d, seq_len %d, %s classifier) implies %llu bytes; %s",
                 path, (unsigned long long)size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                 c->vocab_size, c->seq_len, c->tied ? "shared" : "separate", (unsigned long long)end,
                 size < end ? "the file is truncated" : "it is not a llama2.c checkpoint of this shape");
        goto fail;
    }
    if (llama_alloc_weights(m, err) || walk(m, order, header_bytes, fd, err) == 0) goto fail;
    close(fd);
    return 0;
fail:
    close(fd);
    llama_free(m);
    return -1;
}
