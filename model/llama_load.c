/* model/llama_load.c — the loading entry point and everything the three formats share:
 * format detection, the single weight block and its tensor views, the table of source
 * tensor names used in error messages, dtype conversion, the non-finite scan and the
 * weight fingerprint. The format parsers are load_hf.c, load_llama2c.c, load_gguf.c. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load_internal.h"
#include "../util/path.h"
#include "../util/shared_map.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npt reads little-endian weight files directly into memory; big-endian hosts are not supported"
#endif

/* Names of each weight, kept in the same allocation as the LlamaLayer array, right
 * after it (llama.h has no field for them; llama_free releases both at once). */
typedef struct {
    char name[40];  /* npt's name, e.g. "layers.3.wq": what Tensor.name points to */
    char file[4096 + 256]; /* the file the tensor was read from, by the path the user gave (a shard: in their directory) */
    char src[160];  /* the tensor's name in that file */
} WeightName;

const LlamaLayerTensor llama_layer_tensors[LLAMA_LAYER_TENSORS] = {
    {offsetof(LlamaLayer, attn_norm), "attn_norm", "input_layernorm.weight", "attn_norm"},
    {offsetof(LlamaLayer, wq), "wq", "self_attn.q_proj.weight", "attn_q"},
    {offsetof(LlamaLayer, wk), "wk", "self_attn.k_proj.weight", "attn_k"},
    {offsetof(LlamaLayer, wv), "wv", "self_attn.v_proj.weight", "attn_v"},
    {offsetof(LlamaLayer, wo), "wo", "self_attn.o_proj.weight", "attn_output"},
    {offsetof(LlamaLayer, ffn_norm), "ffn_norm", "post_attention_layernorm.weight", "ffn_norm"},
    {offsetof(LlamaLayer, w_gate), "w_gate", "mlp.gate_proj.weight", "ffn_gate"},
    {offsetof(LlamaLayer, w_up), "w_up", "mlp.up_proj.weight", "ffn_up"},
    {offsetof(LlamaLayer, w_down), "w_down", "mlp.down_proj.weight", "ffn_down"}};
enum { PER_LAYER = LLAMA_LAYER_TENSORS };

/* Weights in canonical order: tok_emb, each layer's nine in LlamaLayer order,
 * final_norm, lm_head. This is the block layout and the fingerprint order. */
static int n_weights(const LlamaConfig *c) { return 3 + PER_LAYER * c->n_layers; }
static int lm_head_index(const LlamaConfig *c) { return 2 + PER_LAYER * c->n_layers; }

static Tensor *weight_at(LlamaModel *m, int i) {
    int L = m->cfg.n_layers;
    if (i == 0) return &m->tok_emb;
    if (i == 1 + PER_LAYER * L) return &m->final_norm;
    if (i == 2 + PER_LAYER * L) return &m->lm_head;
    i--;
    return llama_layer_tensor(&m->layers[i / PER_LAYER], i % PER_LAYER);
}

static WeightName *weight_names(const LlamaModel *m) { return (WeightName *)(m->layers + m->cfg.n_layers); }

/* Shape of weight i: rows x cols, cols == 0 for vectors. */
static void weight_shape(const LlamaConfig *c, int i, int *rows, int *cols) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    if (i == 0 || i == lm_head_index(c)) {
        *rows = c->vocab_size, *cols = c->dim;
        return;
    }
    if (i == 1 + PER_LAYER * c->n_layers) {
        *rows = c->dim, *cols = 0;
        return;
    }
    switch ((i - 1) % PER_LAYER) {
    case 0: case 5: *rows = c->dim, *cols = 0; break;           /* attn_norm, ffn_norm */
    case 1: *rows = qd, *cols = c->dim; break;                  /* wq */
    case 2: case 3: *rows = kvd, *cols = c->dim; break;         /* wk, wv */
    case 4: *rows = c->dim, *cols = qd; break;                  /* wo */
    case 6: case 7: *rows = c->hidden_dim, *cols = c->dim; break; /* w_gate, w_up */
    default: *rows = c->dim, *cols = c->hidden_dim; break;      /* w_down */
    }
}

static size_t round_up16(size_t n) { return (n + 15) & ~(size_t)15; }

int llama_begin(LlamaModel *m, const char *path, ModelFormat fmt, NptErr *err) {
    const char *share_path = m->share_path; /* llama_load_shared's request outlives the reset */
    memset(m, 0, sizeof *m);
    m->share_path = share_path;
    if (strlen(path) >= sizeof m->path) return npt_fail(err, "model path too long (%zu bytes): %.80s...", strlen(path), path);
    strcpy(m->path, path);
    m->format = fmt;
    return 0;
}

int llama_validate_config(LlamaModel *m, NptErr *err) {
    LlamaConfig *c = &m->cfg;
    /* Upper bounds keep every size product far from overflow and reject garbage headers. */
    const struct {
        const char *name;
        int value, max;
    } f[] = {{"dim", c->dim, 1 << 16},           {"hidden_dim", c->hidden_dim, 1 << 20},
             {"n_layers", c->n_layers, 4096},     {"n_heads", c->n_heads, 4096},
             {"n_kv_heads", c->n_kv_heads, 4096}, {"vocab_size", c->vocab_size, 1 << 24},
             {"seq_len", c->seq_len, 1 << 24}};
    for (size_t i = 0; i < NPT_ARRAY_LEN(f); i++)
        if (f[i].value < 1 || f[i].value > f[i].max)
            return npt_fail(err, "%s: invalid model configuration: %s = %d (must be 1..%d)", m->path, f[i].name,
                            f[i].value, f[i].max);
    if (c->dim % c->n_heads)
        return npt_fail(err, "%s: invalid model configuration: dim %d is not divisible by n_heads %d", m->path, c->dim,
                        c->n_heads);
    if (c->n_heads % c->n_kv_heads)
        return npt_fail(err, "%s: invalid model configuration: n_heads %d is not a multiple of n_kv_heads %d", m->path,
                        c->n_heads, c->n_kv_heads);
    c->head_dim = c->dim / c->n_heads;
    if (c->head_dim % 2)
        return npt_fail(err, "%s: invalid model configuration: head_dim %d is odd; RoPE needs pairs", m->path,
                        c->head_dim);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return npt_fail(err, "%s: invalid model configuration: norm_eps %g must be positive", m->path, c->norm_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return npt_fail(err, "%s: invalid model configuration: rope_theta %g must be positive", m->path, c->rope_theta);
    /* Every window starts with BOS: an id outside the embedding would be read out of bounds. */
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size || c->eos_id < 0 || c->eos_id >= c->vocab_size)
        return npt_fail(err, "%s: invalid model configuration: bos_token_id %d / eos_token_id %d outside the vocabulary "
                             "[0, %d); fix the model's config",
                        m->path, c->bos_id, c->eos_id, c->vocab_size);
    return 0;
}

/* Floats of every weight of a validated cfg (head_dim set; a tied lm_head is the
 * embedding, counted once), each rounded up to 16 when pad: the block's layout;
 * unpadded, the model's parameter count. */
static size_t weights_total(const LlamaConfig *c, int pad) {
    size_t total = 0;
    for (int i = 0; i < n_weights(c); i++) {
        int rows, cols;
        weight_shape(c, i, &rows, &cols);
        size_t n = (size_t)rows * (cols ? cols : 1);
        if (!(i == lm_head_index(c) && c->tied)) total += pad ? round_up16(n) : n;
    }
    return total;
}

size_t llama_param_count(const LlamaModel *m) { return weights_total(&m->cfg, 0); }

/* Validates cfg and allocates the layer table with the weight names after it; *total
 * is the block's size in floats (every tensor rounded up to 16 floats). */
static int weights_layout(LlamaModel *m, size_t *total, NptErr *err) {
    *total = 0;
    if (llama_validate_config(m, err)) return -1;
    const LlamaConfig *c = &m->cfg;
    int nw = n_weights(c);
    m->layers = calloc(1, (size_t)c->n_layers * sizeof(LlamaLayer) + (size_t)nw * sizeof(WeightName));
    if (!m->layers) return npt_fail(err, "%s: out of memory for the layer table", m->path);
    *total = weights_total(c, 1);
    return 0;
}

size_t llama_block_floats(const LlamaConfig *c) {
    /* the loaders' own validation, with valid stand-ins for what the block's size does not depend on */
    LlamaModel m = {.cfg = *c};
    m.cfg.seq_len = 1, m.cfg.norm_eps = 1e-5f, m.cfg.rope_theta = 1e4f, m.cfg.bos_id = m.cfg.eos_id = 0;
    NptErr err;
    return llama_validate_config(&m, &err) ? 0 : weights_total(&m.cfg, 1);
}

/* Names every weight and points its view into block (lm_head into tok_emb when tied);
 * zero_padding: the block is ours to write, and its padding must stay defined. */
static void point_views(LlamaModel *m, float *block, int zero_padding) {
    const LlamaConfig *c = &m->cfg;
    WeightName *names = weight_names(m);
    size_t off = 0;
    for (int i = 0; i < n_weights(c); i++) {
        int rows, cols;
        weight_shape(c, i, &rows, &cols);
        char *name = names[i].name;
        if (i == 0)
            snprintf(name, sizeof names[i].name, "tok_emb");
        else if (i == lm_head_index(c))
            snprintf(name, sizeof names[i].name, "lm_head");
        else if (i == lm_head_index(c) - 1)
            snprintf(name, sizeof names[i].name, "final_norm");
        else
            snprintf(name, sizeof names[i].name, "layers.%d.%s", (i - 1) / PER_LAYER,
                     llama_layer_tensors[(i - 1) % PER_LAYER].name);
        float *data = block + off;
        if (i == lm_head_index(c) && c->tied) {
            data = m->tok_emb.data;
        } else {
            size_t n = (size_t)rows * (cols ? cols : 1);
            if (zero_padding) memset(data + n, 0, (round_up16(n) - n) * sizeof(float));
            off += round_up16(n);
        }
        Tensor *w = weight_at(m, i);
        *w = cols ? tensor_view2(data, name, rows, cols) : tensor_view1(data, name, rows);
        w->keep = 1; /* never released; and graphs running side by side only read the flag */
    }
}

/* The block on the heap, or in m->share_path when llama_load_shared asked for it. */
static float *place_block(LlamaModel *m, size_t bytes, NptErr *err) {
    if (m->share_path) {
        float *p = npt_shared_map_create(m->share_path, bytes, &m->share_errno);
        if (p) {
            m->mapped_bytes = bytes;
            return p;
        }
    }
    return npt_aligned_alloc(bytes, "model weights", err);
}

int llama_alloc_weights(LlamaModel *m, NptErr *err) {
    size_t total;
    if (weights_layout(m, &total, err)) return -1;
    m->weights_block = place_block(m, total * sizeof(float), err);
    if (!m->weights_block)
        return npt_fail(err, "%s: cannot allocate %.1f MB for the model weights", m->path, total * 4.0 / 1e6);
    m->weights_floats = total;
    point_views(m, m->weights_block, 1);
    return 0;
}

void llama_set_source(LlamaModel *m, const Tensor *t, const char *file, const char *name) {
    for (int i = 0; i < n_weights(&m->cfg); i++)
        if (weight_at(m, i) == t) {
            WeightName *w = &weight_names(m)[i];
            snprintf(w->file, sizeof w->file, "%s", file);
            snprintf(w->src, sizeof w->src, "%s", name);
            return;
        }
}

/* A checkpoint that stores the classifier as an exact copy of the embedding (GGUF
 * exports of llama2.c models do) is tied in all but storage: share it, so the weights
 * and the fingerprint are the same whatever format the model came in. lm_head is last
 * in the block, so dropping it just shortens the block. */
static void tie_if_identical(LlamaModel *m) {
    if (m->cfg.tied || memcmp(m->lm_head.data, m->tok_emb.data, m->tok_emb.n * sizeof(float))) return;
    m->weights_floats = (size_t)(m->lm_head.data - m->weights_block);
    m->lm_head.data = m->tok_emb.data;
    m->cfg.tied = 1;
}

static int scan_nonfinite(LlamaModel *m, NptErr *err) {
    int first = -1, bad_tensors = 0;
    size_t first_count = 0;
    for (int i = 0; i < n_weights(&m->cfg); i++) {
        if (i == lm_head_index(&m->cfg) && m->cfg.tied) continue;
        const Tensor *t = weight_at(m, i);
        size_t bad = npt_count_nonfinite(t->data, t->n);
        if (!bad) continue;
        bad_tensors++;
        if (first < 0) first = i, first_count = bad;
    }
    if (first < 0) return 0;
    const WeightName *w = &weight_names(m)[first];
    char more[64] = "";
    if (bad_tensors > 1) snprintf(more, sizeof more, " (and %d more tensors)", bad_tensors - 1);
    return npt_fail(err,
                    "%s: tensor %s has %zu non-finite values (NaN/Inf)%s; the file is corrupt or was saved from a "
                    "diverged run",
                    w->file[0] ? w->file : m->path, w->src[0] ? w->src : w->name, first_count, more);
}

/* The memory row holding row r of a q/k projection (head_dim hd) when the rows are
 * taken in RoPE order `want` from memory in order `mem`. Interleaved RoPE pairs rows
 * (2i, 2i+1) of a head, rotate-half pairs (i, i+hd/2): the same function with the rows
 * permuted (model/save_hf.c writes the one as the other). */
int rope_row(int r, int hd, RopeStyle mem, RopeStyle want) {
    if (mem == want) return r;
    int h = r / hd, k = r % hd, half = hd / 2;
    if (want == ROPE_INTERLEAVED) return h * hd + (k % 2) * half + k / 2; /* row 2i+j is rotate-half row j*half+i */
    return h * hd + 2 * (k % half) + k / half;                           /* row j*half+i is interleaved row 2i+j */
}

/* FNV-1a of one weight; heads > 0 marks a q/k projection, hashed row by row in RoPE
 * order want (row by row hashes the same bytes as the whole tensor when nothing moves). */
static uint64_t hash_weight(uint64_t h, const Tensor *t, int heads, RopeStyle mem, RopeStyle want) {
    if (!heads || mem == want) return npt_fnv1a(h, t->data, t->n * sizeof(float));
    int rows = t->shape[0], cols = t->shape[1], hd = rows / heads;
    for (int r = 0; r < rows; r++)
        h = npt_fnv1a(h, t->data + (size_t)rope_row(r, hd, mem, want) * cols, (size_t)cols * sizeof(float));
    return h;
}

/* FNV-1a 64 over the float32 bytes of every stored weight in canonical order (lm_head
 * only when untied; padding excluded), the q/k rows in RoPE order `order`. */
uint64_t llama_fingerprint_in(const LlamaModel *cm, RopeStyle order) {
    LlamaModel *m = (LlamaModel *)cm; /* weight_at hands out views; nothing is written */
    uint64_t h = NPT_FNV1A_OFFSET;
    for (int i = 0; i < n_weights(&m->cfg); i++) {
        if (i == lm_head_index(&m->cfg) && m->cfg.tied) continue;
        int k = i == 0 || i > PER_LAYER * m->cfg.n_layers ? -1 : (i - 1) % PER_LAYER;
        h = hash_weight(h, weight_at(m, i), llama_rope_heads(&m->cfg, k), m->cfg.rope, order);
    }
    return h;
}

/* scan 0: the caller has checked the weights are finite. The tie comes before the scan,
 * so a tied copy is scanned (and counted in the message) once. */
static int finish(LlamaModel *m, int scan, NptErr *err) {
    tie_if_identical(m);
    if (scan && scan_nonfinite(m, err)) return -1;
    /* one order for every format, so .bin, GGUF and HF copies of a model agree */
    m->fingerprint = llama_fingerprint_in(m, ROPE_INTERLEAVED);
    return 0;
}

int llama_finish_load(LlamaModel *m, NptErr *err) { return finish(m, 1, err); }

void llama_finish_finite(LlamaModel *m) { finish(m, 0, NULL); }

static void make_param(Tensor *w, float *grad_block, const float *weights_block) {
    w->grad = grad_block + (w->data - weights_block);
    w->requires_grad = w->is_param = 1;
}

float *llama_make_trainable(LlamaModel *m, NptErr *err) {
    float *g = npt_aligned_alloc(m->weights_floats * sizeof(float), "weight gradients", err);
    if (!g) return NULL;
    memset(g, 0, m->weights_floats * sizeof(float));
    Tensor *shared[3] = {&m->tok_emb, &m->final_norm, &m->lm_head};
    for (int k = 0; k < (m->cfg.tied ? 2 : 3); k++) make_param(shared[k], g, m->weights_block);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        LlamaLayer *L = &m->layers[l];
        Tensor *ts[9] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 9; k++) make_param(ts[k], g, m->weights_block);
    }
    if (m->cfg.tied) m->lm_head.grad = m->tok_emb.grad, m->lm_head.requires_grad = m->lm_head.is_param = 1;
    return g;
}

void llama_free(LlamaModel *m) {
    if (m->mapped_bytes) npt_shared_map_close(m->weights_block, m->mapped_bytes);
    else free(m->weights_block);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* ---- reading helpers shared by the formats ---- */

size_t weight_dtype_size(WeightDtype dt) { return dt == WDT_F32 ? 4 : 2; }

static int pread_all(int fd, void *dst, size_t bytes, uint64_t off, const char *file, const char *tensor,
                     NptErr *err) {
    char *p = dst;
    while (bytes) {
        size_t want = bytes > (1u << 30) ? (1u << 30) : bytes;
        ssize_t r = pread(fd, p, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return npt_fail(err, "%s: cannot read tensor %s: %s", file, tensor, strerror(errno));
        if (r == 0)
            return npt_fail(err, "%s: tensor %s extends past the end of the file (truncated file?)", file, tensor);
        p += r, off += (uint64_t)r, bytes -= (size_t)r;
    }
    return 0;
}

int llama_read_tensor(int fd, const char *file, uint64_t offset, WeightDtype dt, float *dst, size_t n,
                      const char *tensor, NptErr *err) {
    if (dt == WDT_F32) return pread_all(fd, dst, n * sizeof(float), offset, file, tensor, err);
    uint16_t buf[8192]; /* half-precision data is converted through a small buffer, never a full copy */
    for (size_t i = 0; i < n; i += NPT_ARRAY_LEN(buf)) {
        size_t k = n - i < NPT_ARRAY_LEN(buf) ? n - i : NPT_ARRAY_LEN(buf);
        if (pread_all(fd, buf, k * 2, offset + i * 2, file, tensor, err)) return -1;
        for (size_t j = 0; j < k; j++) dst[i + j] = dt == WDT_F16 ? npt_f16_to_f32(buf[j]) : npt_bf16_to_f32(buf[j]);
    }
    return 0;
}

static void format_shape(char *out, size_t cap, int ndim, const uint64_t *shape) {
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

int llama_check_shape(const Tensor *t, int ndim, const uint64_t *shape, const char *file, const char *tensor,
                      NptErr *err) {
    int ok = ndim == t->ndim;
    for (int i = 0; ok && i < ndim; i++) ok = shape[i] == (uint64_t)t->shape[i];
    if (ok) return 0;
    uint64_t want[NPT_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) want[i] = (uint64_t)t->shape[i];
    char got_s[128], want_s[128];
    format_shape(got_s, sizeof got_s, ndim, shape);
    format_shape(want_s, sizeof want_s, t->ndim, want);
    return npt_fail(err, "%s: tensor %s has shape %s but the model configuration needs %s", file, tensor, got_s,
                    want_s);
}

int llama_file_size(int fd, const char *path, uint64_t *size, NptErr *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return npt_fail(err, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return npt_fail(err, "%s is not a regular file", path);
    *size = (uint64_t)st.st_size;
    return 0;
}

const char *llama_basename(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* ---- format detection ---- */

static int is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The tokenizer shipped beside the model, by the conventions of each format. */
static void find_tokenizer(LlamaModel *m, const char *dir) {
    char cand[3][sizeof m->tokenizer_path + 32];
    int n = 0;
    if (m->format == MODEL_FMT_HF) {
        snprintf(cand[n++], sizeof cand[0], "%s/tokenizer.json", dir);
    } else {
        snprintf(cand[n++], sizeof cand[0], "%s/tokenizer.bin", dir);
        snprintf(cand[n++], sizeof cand[0], "%s/tok%d.bin", dir, m->cfg.vocab_size);
    }
    m->tokenizer_path[0] = '\0';
    for (int i = 0; i < n; i++)
        if (strlen(cand[i]) < sizeof m->tokenizer_path && is_regular_file(cand[i])) {
            strcpy(m->tokenizer_path, cand[i]);
            return;
        }
}

/* Reads up to cap leading bytes of a file; returns how many, or -1. */
static int read_magic(const char *path, unsigned char *buf, int cap, NptErr *err) {
    int fd = npt_open_input(path, "model", err);
    if (fd == -1) return npt_fail(err, "cannot open model %s: %s", path, strerror(errno));
    if (fd < 0) return -1; /* a pipe or device: err says so */
    ssize_t r = read(fd, buf, (size_t)cap);
    int e = errno;
    close(fd);
    if (r < 0) return npt_fail(err, "cannot read model %s: %s", path, strerror(e));
    return (int)r;
}

int llama_load(const char *path, LlamaModel *m, NptErr *err) { return llama_load_shared(path, NULL, m, err); }

int llama_load_shared(const char *path, const char *share_path, LlamaModel *m, NptErr *err) {
    memset(m, 0, sizeof *m);
    m->share_path = share_path;
    char dir[sizeof m->path];
    struct stat st;
    if (stat(path, &st) != 0) return npt_fail(err, "cannot open model %s: %s", path, strerror(errno));
    if (strlen(path) >= sizeof m->path) return npt_fail(err, "model path too long: %.80s...", path);
    int rc;
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", path);
        rc = llama_load_hf(path, m, err);
    } else {
        unsigned char magic[8] = {0};
        int n = read_magic(path, magic, (int)sizeof magic, err);
        if (n < 0) return -1;
        npt_dir_of(path, dir, sizeof dir);
        if (n >= 4 && !memcmp(magic, "GGUF", 4))
            rc = llama_load_gguf(path, m, err);
        else if (n >= 8 && !memcmp(magic, "\211HDF\r\n\032\n", 8))
            return npt_fail(err,
                            "%s is an HDF5 file (an npt checkpoint?), not a model; give the base model as the model "
                            "and the checkpoint as the adapters (--adapters)",
                            path);
        else if (n >= 4 && !memcmp(magic, "PK\3\4", 4))
            return npt_fail(err,
                            "%s is a zip archive (a PyTorch .pt/.bin pickle?); npt reads safetensors, llama2.c .bin "
                            "and GGUF: convert it with save_pretrained(..., safe_serialization=True)",
                            path);
        else if (npt_ends_with(path, ".safetensors") || npt_ends_with(path, "/config.json") || !strcmp(path, "config.json") ||
                 npt_ends_with(path, ".safetensors.index.json"))
            rc = llama_load_hf(dir, m, err); /* a file of an HF model directory: load the directory */
        else if (npt_ends_with(path, ".gguf"))
            return npt_fail(err, "%s: named .gguf but does not start with the GGUF magic; the file is corrupt", path);
        else
            rc = llama_load_llama2c(path, m, err);
    }
    if (rc) return -1;
    strcpy(m->path, path);
    if (llama_finish_load(m, err)) {
        llama_free(m);
        return -1;
    }
    find_tokenizer(m, dir);
    m->share_path = NULL;
    /* frozen from here: a stray write faults in every process, not only those mapping it read-only */
    if (m->mapped_bytes && npt_shared_map_seal(m->weights_block, m->mapped_bytes)) {
        npt_fail(err, "%s: cannot make the shared weights read-only: %s", path, strerror(errno));
        llama_free(m);
        return -1;
    }
    return 0;
}

int llama_attach_shared(LlamaModel *m, const LlamaModel *loaded, const char *share_path, NptErr *err) {
    memset(m, 0, sizeof *m);
    m->cfg = loaded->cfg;
    m->format = loaded->format;
    memcpy(m->path, loaded->path, sizeof m->path);
    memcpy(m->tokenizer_path, loaded->tokenizer_path, sizeof m->tokenizer_path);
    m->path[sizeof m->path - 1] = m->tokenizer_path[sizeof m->tokenizer_path - 1] = '\0';
    m->fingerprint = loaded->fingerprint;
    size_t total;
    if (weights_layout(m, &total, err)) return -1;
    /* the loader's block may have lost an lm_head identical to the embedding (tie_if_identical) */
    if (total != loaded->weights_floats) {
        llama_free(m);
        return npt_fail(err, "%s: the shared copy's layout (%zu floats) differs from this process's (%zu)", m->path,
                        loaded->weights_floats, total);
    }
    const void *block = npt_shared_map_open(share_path, loaded->mapped_bytes, err);
    if (!block) {
        llama_free(m);
        return -1;
    }
    m->weights_block = (float *)block;
    m->weights_floats = total;
    m->mapped_bytes = loaded->mapped_bytes;
    point_views(m, m->weights_block, 0);
    return 0;
}

const char *rope_style_name(RopeStyle r) { return r == ROPE_HALF ? "rotate_half" : "interleaved"; }

const char *model_format_name(ModelFormat f) {
    switch (f) {
    case MODEL_FMT_HF: return "hf";
    case MODEL_FMT_LLAMA2C: return "llama2c";
    case MODEL_FMT_GGUF: return "gguf";
    }
    return "unknown";
}
