/* model/load_hf.c — Hugging Face model directories: config.json plus model.safetensors
 * or the shards named by model.safetensors.index.json.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}} with offsets relative to the data
 * section that follows), then the data. Every header is validated against the file
 * before any weight is read; F32/F16/BF16 are read straight into the weight block
 * (half types through a small conversion buffer), so no shard is ever held in memory.
 * HF stores q/k projections for rotate-half RoPE (ROPE_HALF). */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load_internal.h"

enum { ST_MAX_DIMS = 8 };
#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the safetensors spec's own limit */

typedef struct {
    char path[4096 + 256];
    int fd;
    uint64_t size;
} Shard;

typedef struct {
    char *name;
    int shard;
    char dtype[16];
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* absolute byte offsets in the shard file */
} StTensor;

typedef struct {
    const char *dir;
    const char *where; /* for "missing" errors: "model.safetensors" or the index */
    Shard *shards;
    int n_shards;
    StTensor *t;
    int n, cap;
} Safetensors;

static const struct {
    const char *name;
    int size;
    int wdt; /* WeightDtype, or -1: valid safetensors dtype npt does not load */
} st_dtypes[] = {{"F32", 4, WDT_F32},  {"F16", 2, WDT_F16},    {"BF16", 2, WDT_BF16},   {"F64", 8, -1},
                 {"I64", 8, -1},       {"I32", 4, -1},         {"I16", 2, -1},          {"I8", 1, -1},
                 {"U64", 8, -1},       {"U32", 4, -1},         {"U16", 2, -1},          {"U8", 1, -1},
                 {"BOOL", 1, -1},      {"F8_E4M3", 1, -1},     {"F8_E5M2", 1, -1}};

static int dtype_index(const char *name) {
    for (size_t i = 0; i < NPT_ARRAY_LEN(st_dtypes); i++)
        if (!strcmp(st_dtypes[i].name, name)) return (int)i;
    return -1;
}

/* ---- config.json ---- */

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Integer at key. Absent or null: error when required, else *out is left as is. */
static int json_int(const cJSON *root, const char *key, int required, int *out, const char *file, NptErr *err) {
    const cJSON *v = get(root, key);
    if (!v) return required ? npt_fail(err, "%s: required key \"%s\" is missing", file, key) : 0;
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) v = cJSON_GetArrayItem(v, 0); /* eos_token_id lists */
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d == floor(d) && fabs(d) <= 2147483647.0))
        return npt_fail(err, "%s: \"%s\" must be an integer", file, key);
    *out = (int)d;
    return 0;
}

static int json_float(const cJSON *root, const char *key, float *out, const char *file, NptErr *err) {
    const cJSON *v = get(root, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return npt_fail(err, "%s: \"%s\" must be a number", file, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int json_true(const cJSON *root, const char *key) { return cJSON_IsTrue(get(root, key)); }

static int is_llama_family(const cJSON *root) {
    const cJSON *type = get(root, "model_type");
    if (cJSON_IsString(type)) return !strcmp(type->valuestring, "llama") || !strcmp(type->valuestring, "mistral");
    const cJSON *a;
    cJSON_ArrayForEach(a, get(root, "architectures")) {
        if (cJSON_IsString(a) &&
            (!strcmp(a->valuestring, "LlamaForCausalLM") || !strcmp(a->valuestring, "MistralForCausalLM")))
            return 1;
    }
    return 0;
}

/* Rejects the Llama variants whose math npt does not implement. */
static int check_supported(const cJSON *root, const char *file, NptErr *err) {
    if (!is_llama_family(root)) {
        const cJSON *type = get(root, "model_type");
        return npt_fail(err, "%s: model_type \"%s\" is not supported; npt loads Llama-family models (llama, mistral)",
                        file, cJSON_IsString(type) ? type->valuestring : "(none)");
    }
    if (get(root, "rope_scaling"))
        return npt_fail(err, "%s: \"rope_scaling\" is set; npt implements plain RoPE only (rope_scaling must be null)",
                        file);
    if (json_true(root, "attention_bias") || json_true(root, "mlp_bias"))
        return npt_fail(err, "%s: attention_bias/mlp_bias is true; npt supports bias-free Llama layers only", file);
    const cJSON *act = get(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "silu")))
        return npt_fail(err, "%s: hidden_act must be \"silu\" (SwiGLU MLP)", file);
    return 0;
}

static int parse_config(LlamaModel *m, const char *dir, NptErr *err) {
    char file[4096 + 32];
    snprintf(file, sizeof file, "%s/config.json", dir);
    struct stat st;
    if (stat(file, &st) != 0)
        return npt_fail(err, "%s: no config.json; an HF model directory needs config.json and model.safetensors", dir);
    char *text = npt_read_input(file, "model config", NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        long pos = root ? 0 : at && at >= text ? (long)(at - text) : 0;
        npt_fail(err, "%s is not a valid JSON object (parse error near byte %ld)", file, pos);
        goto done;
    }
    if (check_supported(root, file, err)) goto done;
    LlamaConfig *c = &m->cfg;
    c->seq_len = 2048, c->norm_eps = 1e-6f, c->rope_theta = 10000.0f, c->rope = ROPE_HALF;
    c->bos_id = 1, c->eos_id = 2;
    if (json_int(root, "hidden_size", 1, &c->dim, file, err) ||
        json_int(root, "intermediate_size", 1, &c->hidden_dim, file, err) ||
        json_int(root, "num_hidden_layers", 1, &c->n_layers, file, err) ||
        json_int(root, "num_attention_heads", 1, &c->n_heads, file, err) ||
        json_int(root, "vocab_size", 1, &c->vocab_size, file, err))
        goto done;
    c->n_kv_heads = c->n_heads;
    if (json_int(root, "num_key_value_heads", 0, &c->n_kv_heads, file, err) ||
        json_int(root, "max_position_embeddings", 0, &c->seq_len, file, err) ||
        json_float(root, "rms_norm_eps", &c->norm_eps, file, err) ||
        json_float(root, "rope_theta", &c->rope_theta, file, err) ||
        json_int(root, "bos_token_id", 0, &c->bos_id, file, err) ||
        json_int(root, "eos_token_id", 0, &c->eos_id, file, err))
        goto done;
    c->tied = json_true(root, "tie_word_embeddings");
    /* Within its window, sliding-window attention is plain causal attention. */
    int window = 0;
    if (json_int(root, "sliding_window", 0, &window, file, err)) goto done;
    if (window > 0 && window < c->seq_len) c->seq_len = window;
    if (llama_validate_config(m, err)) goto done;
    int head_dim = c->head_dim;
    if (json_int(root, "head_dim", 0, &head_dim, file, err)) goto done;
    if (head_dim != c->head_dim) {
        npt_fail(err, "%s: head_dim %d differs from hidden_size / num_attention_heads = %d; not supported", file,
                 head_dim, c->head_dim);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ---- safetensors headers ---- */

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0 && d == floor(d))) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int add_tensor(Safetensors *st, const StTensor *t) {
    if (st->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 64;
        StTensor *p = realloc(st->t, (size_t)cap * sizeof *p);
        if (!p) return -1;
        st->t = p, st->cap = cap;
    }
    st->t[st->n++] = *t;
    return 0;
}

/* Parses one header entry into t; the data section spans [data_start, size). */
static int parse_entry(const cJSON *e, const Shard *sh, uint64_t data_start, StTensor *t, NptErr *err) {
    const char *name = e->string;
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return npt_fail(err, "%s: header entry for tensor %s lacks dtype, shape or data_offsets [begin, end]",
                        sh->path, name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype->valuestring);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > ST_MAX_DIMS) return npt_fail(err, "%s: tensor %s has %d dimensions", sh->path, name, t->ndim);
    uint64_t elems = 1, data_size = sh->size - data_start;
    int i = 0, overflow = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        if (!json_u64(d, &t->shape[i])) return npt_fail(err, "%s: tensor %s has a malformed shape", sh->path, name);
        if (t->shape[i] && elems > UINT64_MAX / 16 / t->shape[i]) overflow = 1;
        elems *= t->shape[i++];
    }
    uint64_t begin, end;
    if (!json_u64(cJSON_GetArrayItem(offs, 0), &begin) || !json_u64(cJSON_GetArrayItem(offs, 1), &end) ||
        begin > end)
        return npt_fail(err, "%s: tensor %s has malformed data_offsets", sh->path, name);
    if (end > data_size)
        return npt_fail(err,
                        "%s: tensor %s has data_offsets [%llu, %llu] beyond the %llu-byte data section; the file is "
                        "truncated or its header is wrong",
                        sh->path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)data_size);
    if (overflow) /* its byte count wraps around: reported as such, not as the wrapped number */
        return npt_fail(err, "%s: tensor %s has a shape too large for any file (its size overflows 64 bits); the "
                        "header is inconsistent", sh->path, name);
    int k = dtype_index(t->dtype);
    if (k >= 0 && elems * (uint64_t)st_dtypes[k].size != end - begin)
        return npt_fail(err,
                        "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes but its shape and dtype %s need "
                        "%llu; the header is inconsistent",
                        sh->path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)(end - begin), t->dtype,
                        (unsigned long long)(elems * (uint64_t)st_dtypes[k].size));
    t->begin = data_start + begin, t->end = data_start + end;
    return 0;
}

static int cmp_offsets(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The reference reader's rule (huggingface/safetensors: InvalidOffset,
 * MetadataIncompleteBuffer): sorted by offset, the tensors tile the data section with
 * no gap or overlap, from 0 to the end of the file. A header length that is off by a
 * few bytes, or bytes appended or lost, break it; reading on would load weights shifted
 * by that much (or aliased), with no other symptom. Sorts the shard's entries t[0..n). */
static int check_coverage(const Shard *sh, StTensor *t, int n, uint64_t data_start, NptErr *err) {
    qsort(t, (size_t)n, sizeof *t, cmp_offsets);
    uint64_t end = data_start;
    for (int i = 0; i < n; i++) {
        if (t[i].begin < end)
            return npt_fail(err, "%s: tensors %s and %s overlap in the data section; the header is corrupt", sh->path,
                            t[i - 1].name, t[i].name);
        if (t[i].begin > end)
            return npt_fail(err, "%s: %llu bytes before tensor %s (after %s) belong to no tensor; the header is "
                            "corrupt", sh->path, (unsigned long long)(t[i].begin - end), t[i].name,
                            i ? t[i - 1].name : "the header");
        end = t[i].end;
    }
    if (end != sh->size)
        return npt_fail(err, "%s: the tensors cover %llu bytes but the data section holds %llu; the header length is "
                        "wrong or the file is truncated or has bytes appended", sh->path,
                        (unsigned long long)(end - data_start), (unsigned long long)(sh->size - data_start));
    return 0;
}

/* Whether [p, end) is only JSON whitespace: the reference writer pads the header with
 * spaces to a multiple of 8 bytes, and serde_json accepts any whitespace there. */
static int only_whitespace(const char *p, const char *end) {
    for (; p < end; p++)
        if (!strchr(" \t\r\n", *p) || !*p) return 0;
    return 1;
}

/* Reads and validates the header of shard s, appending its tensors. */
static int parse_shard(Safetensors *st, int s, NptErr *err) {
    const Shard *sh = &st->shards[s];
    unsigned char len_le[8];
    if (sh->size < 8 || pread(sh->fd, len_le, 8, 0) != 8)
        return npt_fail(err, "%s: file is %llu bytes, too small for a safetensors header (truncated?)", sh->path,
                        (unsigned long long)sh->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len_le[i];
    if (hlen > sh->size - 8)
        return npt_fail(err,
                        "%s: safetensors header length %llu exceeds the file size %llu; the file is truncated or "
                        "not safetensors",
                        sh->path, (unsigned long long)hlen, (unsigned long long)sh->size);
    if (hlen > ST_MAX_HEADER)
        return npt_fail(err, "%s: safetensors header length %llu is over the 100 MB limit; not a safetensors file",
                        sh->path, (unsigned long long)hlen);
    char *text = npt_try_malloc(hlen + 1, sh->path, err);
    if (!text) return -1;
    int rc = -1;
    cJSON *root = NULL;
    if (pread(sh->fd, text, hlen, 8) != (ssize_t)hlen) {
        npt_fail(err, "%s: cannot read the safetensors header", sh->path);
        goto done;
    }
    text[hlen] = '\0';
    /* cJSON stops at the object's end: what follows must be padding, or the declared
     * length takes weight bytes into the header. */
    const char *parsed_end = NULL;
    root = cJSON_ParseWithLengthOpts(text, hlen, &parsed_end, 0);
    if (!cJSON_IsObject(root) || !parsed_end || !only_whitespace(parsed_end, text + hlen)) {
        npt_fail(err, "%s: the safetensors header is not valid JSON of the declared %llu bytes (a JSON object, then "
                 "only spaces); the file is corrupt", sh->path, (unsigned long long)hlen);
        goto done;
    }
    int first = st->n;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) continue;
        StTensor t = {.shard = s};
        if (!cJSON_IsObject(e)) {
            npt_fail(err, "%s: header entry %s is not an object", sh->path, e->string);
            goto done;
        }
        if (parse_entry(e, sh, 8 + hlen, &t, err)) goto done;
        t.name = strdup(e->string);
        if (!t.name || add_tensor(st, &t)) {
            free(t.name);
            npt_fail(err, "%s: out of memory for the tensor table", sh->path);
            goto done;
        }
    }
    rc = check_coverage(sh, st->t + first, st->n - first, 8 + hlen, err);
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* Opens dir/file as a new shard and parses its header. */
static int add_shard(Safetensors *st, const char *file, NptErr *err) {
    if (strchr(file, '/') || !file[0])
        return npt_fail(err, "%s/model.safetensors.index.json: shard name \"%s\" must be a plain file name", st->dir,
                        file);
    for (int i = 0; i < st->n_shards; i++)
        if (!strcmp(llama_basename(st->shards[i].path), file)) return 0;
    Shard *p = realloc(st->shards, (size_t)(st->n_shards + 1) * sizeof *p);
    if (!p) return npt_fail(err, "out of memory for the shard table");
    st->shards = p;
    Shard *sh = &st->shards[st->n_shards];
    snprintf(sh->path, sizeof sh->path, "%s/%s", st->dir, file);
    sh->fd = npt_open_input(sh->path, "model weights", err); /* err: cannot open, or not a regular file */
    if (sh->fd < 0) return -1;
    st->n_shards++;
    if (llama_file_size(sh->fd, sh->path, &sh->size, err)) return -1;
    return parse_shard(st, st->n_shards - 1, err);
}

/* Shards from model.safetensors.index.json: the distinct files of its weight_map. */
static int open_index(Safetensors *st, const char *index_path, NptErr *err) {
    char *text = npt_read_input(index_path, "safetensors index", NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc = -1;
    if (!cJSON_IsObject(map) || !map->child) {
        npt_fail(err, "%s: not JSON with a non-empty \"weight_map\" object", index_path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e)) {
            npt_fail(err, "%s: weight_map entry %s is not a file name", index_path, e->string);
            goto done;
        }
        if (add_shard(st, e->valuestring, err)) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int open_safetensors(Safetensors *st, const char *dir, NptErr *err) {
    char single[4096 + 64], index[4096 + 64], pt[4096 + 64];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    snprintf(pt, sizeof pt, "%s/pytorch_model.bin", dir);
    struct stat s;
    if (stat(single, &s) == 0) {
        st->where = "model.safetensors";
        return add_shard(st, "model.safetensors", err);
    }
    if (stat(index, &s) == 0) {
        st->where = "the shards of model.safetensors.index.json";
        return open_index(st, index, err);
    }
    if (stat(pt, &s) == 0)
        return npt_fail(err,
                        "%s: only pytorch_model.bin (a PyTorch pickle) is present; npt reads safetensors: convert with "
                        "save_pretrained(..., safe_serialization=True)",
                        dir);
    return npt_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
}

static void close_safetensors(Safetensors *st) {
    for (int i = 0; i < st->n_shards; i++) close(st->shards[i].fd);
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->shards);
    free(st->t);
}

static const StTensor *find(const Safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->t[i].name, name)) return &st->t[i];
    return NULL;
}

/* ---- weights ---- */

static int load_tensor(LlamaModel *m, const Safetensors *st, Tensor *t, const char *name, NptErr *err) {
    const StTensor *e = find(st, name);
    if (!e) return npt_fail(err, "%s: tensor %s is missing from %s", m->path, name, st->where);
    const Shard *sh = &st->shards[e->shard];
    const char *file = sh->path;
    int k = dtype_index(e->dtype);
    if (k < 0 || st_dtypes[k].wdt < 0)
        return npt_fail(err,
                        "%s: tensor %s has dtype %s; npt loads F32, F16 and BF16 weights (dequantize or convert the "
                        "checkpoint first)",
                        file, name, e->dtype);
    if (llama_check_shape(t, e->ndim, e->shape, file, name, err) ||
        llama_read_tensor(sh->fd, file, e->begin, (WeightDtype)st_dtypes[k].wdt, t->data, t->n, name, err))
        return -1;
    llama_set_source(m, t, file, name);
    return 0;
}

/* Which stored tensor feeds the embedding, and whether lm_head shares it. Checkpoints
 * saved with tied weights may keep only lm_head.weight (safetensors drops aliases). */
static int resolve_embeddings(LlamaModel *m, const Safetensors *st, const char **emb_name, NptErr *err) {
    const char *emb = "model.embed_tokens.weight", *head = "lm_head.weight";
    int has_emb = find(st, emb) != NULL, has_head = find(st, head) != NULL, tie = m->cfg.tied;
    if (!has_emb && !(has_head && tie))
        return npt_fail(err, "%s: tensor %s is missing from %s", m->path, emb, st->where);
    if (!has_head && !tie)
        return npt_fail(err, "%s: tensor %s is missing from %s (and tie_word_embeddings is false)", m->path, head,
                        st->where);
    *emb_name = has_emb ? emb : head;
    return 0;
}

/* A layer beyond num_hidden_layers means config.json undercounts: the model would run
 * with its top layers silently dropped. */
static int check_no_extra_layers(const LlamaModel *m, const Safetensors *st, NptErr *err) {
    for (int i = 0; i < st->n; i++) {
        int layer;
        if (sscanf(st->t[i].name, "model.layers.%d.", &layer) == 1 && layer >= m->cfg.n_layers)
            return npt_fail(err, "%s: %s holds tensor %s but config.json says num_hidden_layers = %d; fix config.json",
                            m->path, st->where, st->t[i].name, m->cfg.n_layers);
    }
    return 0;
}

static int load_weights(LlamaModel *m, const Safetensors *st, NptErr *err) {
    const char *emb = NULL;
    if (resolve_embeddings(m, st, &emb, err) || check_no_extra_layers(m, st, err) || llama_alloc_weights(m, err))
        return -1;
    if (load_tensor(m, st, &m->tok_emb, emb, err) ||
        load_tensor(m, st, &m->final_norm, "model.norm.weight", err) ||
        (!m->cfg.tied && load_tensor(m, st, &m->lm_head, "lm_head.weight", err)))
        return -1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < LLAMA_LAYER_TENSORS; k++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, llama_layer_tensors[k].hf);
            if (load_tensor(m, st, llama_layer_tensor(&m->layers[l], k), name, err)) return -1;
        }
    return 0;
}

int llama_load_hf(const char *dir, LlamaModel *m, NptErr *err) {
    if (llama_begin(m, dir, MODEL_FMT_HF, err)) return -1;
    Safetensors st = {.dir = dir};
    int rc = parse_config(m, dir, err) || open_safetensors(&st, dir, err) || load_weights(m, &st, err) ? -1 : 0;
    close_safetensors(&st);
    if (rc) llama_free(m);
    return rc;
}
