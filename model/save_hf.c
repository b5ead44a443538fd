/* model/save_hf.c — writes a LlamaModel as a Hugging Face directory (model/save_hf.h).
 *
 * model.safetensors is the layout model/load_hf.c reads: an 8-byte little-endian header
 * length, a JSON header {name: {dtype, shape, data_offsets}} padded with spaces to a
 * multiple of 8 (readers that map the data section get aligned floats), then the tensors
 * back to back in header order with no gaps, which strict readers require. */
#include "save_hf.h"

#include "../data/tokenizer.h"
#include "../util/atomic_file.h"
#include "../util/path.h"
#include "load_internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- config.json ---- */

/* Shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06). */
static void float_repr(float x, char *buf, size_t size) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, size, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}

/* config.json for c: the LlamaForCausalLM fields load_hf.c reads. */
static int hf_write_config(const LlamaConfig *c, const char *path, NptErr *err) {
    char eps[32], theta[32];
    float_repr(c->norm_eps, eps, sizeof eps);
    float_repr(c->rope_theta, theta, sizeof theta);
    NptAtomicFile o;
    FILE *f = npt_atomic_open(&o, path, err);
    if (!f) return -1;
    fprintf(f,
            "{\n"
            "  \"architectures\": [\"LlamaForCausalLM\"],\n"
            "  \"model_type\": \"llama\",\n"
            "  \"hidden_size\": %d,\n"
            "  \"intermediate_size\": %d,\n"
            "  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n"
            "  \"num_key_value_heads\": %d,\n"
            "  \"head_dim\": %d,\n"
            "  \"vocab_size\": %d,\n"
            "  \"max_position_embeddings\": %d,\n"
            "  \"rms_norm_eps\": %s,\n"
            "  \"rope_theta\": %s,\n"
            "  \"rope_scaling\": null,\n"
            "  \"hidden_act\": \"silu\",\n"
            "  \"attention_bias\": false,\n"
            "  \"mlp_bias\": false,\n"
            "  \"tie_word_embeddings\": %s,\n"
            "  \"bos_token_id\": %d,\n"
            "  \"eos_token_id\": %d,\n"
            "  \"torch_dtype\": \"float32\"\n"
            "}\n",
            c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len, eps,
            theta, c->tied ? "true" : "false", c->bos_id, c->eos_id);
    return npt_atomic_commit(&o, err);
}

/* ---- model.safetensors ---- */


typedef struct {
    char name[96];
    const Tensor *t;
    int rope_heads; /* > 0: q/k projection whose rows are permuted to rotate-half */
} StEntry;

/* The tensors in file order; returns how many (at most 3 + 9 * n_layers). */
static int list_tensors(const LlamaModel *m, StEntry *e) {
    const LlamaConfig *c = &m->cfg;
    int n = 0, interleaved = c->rope == ROPE_INTERLEAVED;
    e[n++] = (StEntry){"model.embed_tokens.weight", &m->tok_emb, 0};
    for (int l = 0; l < c->n_layers; l++) {
        const LlamaLayer *L = &m->layers[l];
        for (int k = 0; k < LLAMA_LAYER_TENSORS; k++) {
            e[n] = (StEntry){"", llama_layer_tensor(L, k), interleaved ? llama_rope_heads(c, k) : 0};
            snprintf(e[n].name, sizeof e[n].name, "model.layers.%d.%s", l, llama_layer_tensors[k].hf);
            n++;
        }
    }
    e[n++] = (StEntry){"model.norm.weight", &m->final_norm, 0};
    if (!c->tied) e[n++] = (StEntry){"lm_head.weight", &m->lm_head, 0};
    return n;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. */
static char *header_json(const StEntry *e, int n, size_t *len, NptErr *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    int ok = meta && cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        const Tensor *t = e[i].t;
        double shape[2] = {t->shape[0], t->ndim == 2 ? t->shape[1] : 0};
        double offs[2] = {(double)off, (double)(off + t->n * sizeof(float))};
        cJSON *o = cJSON_AddObjectToObject(root, e[i].name);
        ok = o && cJSON_AddStringToObject(o, "dtype", "F32") &&
             cJSON_AddItemToObject(o, "shape", cJSON_CreateDoubleArray(shape, t->ndim)) &&
             cJSON_AddItemToObject(o, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
        off += t->n * sizeof(float);
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        npt_fail(err, "out of memory building the safetensors header");
        return NULL;
    }
    size_t raw = strlen(text), padded = (raw + 7) & ~(size_t)7;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        npt_fail(err, "out of memory building the safetensors header");
        return NULL;
    }
    memset(out + raw, ' ', padded - raw);
    out[padded] = '\0';
    *len = padded;
    return out;
}

/* Row r of the file's tensor: HF's rotate-half order, from interleaved rows in memory
 * (llama2.c and GGUF sources; rope_heads is 0 for rows already in HF order). */
static int source_row(const StEntry *e, int r) {
    return e->rope_heads ? rope_row(r, e->t->shape[0] / e->rope_heads, ROPE_INTERLEAVED, ROPE_HALF) : r;
}

/* model.safetensors: every weight as F32 under its HF name (model.embed_tokens.weight,
 * model.layers.N.self_attn.q_proj.weight, ..., lm_head.weight only when untied). Models
 * that use interleaved RoPE (llama2.c, GGUF) get their q/k rows permuted to HF's
 * rotate-half order, so the file computes the same function when loaded as HF. */
static int hf_write_safetensors(const LlamaModel *m, const char *path, NptErr *err) {
    StEntry *e = npt_try_malloc((size_t)(3 + LLAMA_LAYER_TENSORS * m->cfg.n_layers) * sizeof *e, "the tensor list", err);
    if (!e) return -1;
    int n = list_tensors(m, e);
    size_t hlen = 0;
    char *header = header_json(e, n, &hlen, err);
    NptAtomicFile o;
    FILE *f = header ? npt_atomic_open(&o, path, err) : NULL;
    int rc = -1;
    if (f) {
        unsigned char len_le[8];
        for (int i = 0; i < 8; i++) len_le[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
        int ok = fwrite(len_le, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
        for (int i = 0; ok && i < n; i++) {
            int rows = tensor_rows(e[i].t), cols = tensor_cols(e[i].t); /* a vector is one row */
            for (int r = 0; ok && r < rows; r++)
                ok = fwrite(e[i].t->data + (size_t)source_row(&e[i], r) * cols, sizeof(float), (size_t)cols, f) ==
                     (size_t)cols;
        }
        if (ok) rc = npt_atomic_commit(&o, err);
        else {
            npt_fail(err, "cannot write %s: %s", path, strerror(errno));
            npt_atomic_abort(&o);
        }
    }
    free(header);
    free(e);
    return rc;
}

/* ---- tokenizer ---- */

static int write_json(cJSON *root, const char *path, NptErr *err) {
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return npt_fail(err, "out of memory building %s", path);
    NptAtomicFile o;
    FILE *f = npt_atomic_open(&o, path, err);
    int rc = -1;
    if (f) {
        if (fputs(text, f) >= 0 && fputc('\n', f) != EOF) rc = npt_atomic_commit(&o, err);
        else {
            npt_fail(err, "cannot write %s: %s", path, strerror(errno));
            npt_atomic_abort(&o);
        }
    }
    free(text);
    return rc;
}

static const char *const special_names[HF_BYTE_OFFSET] = {"<unk>", "<s>", "</s>"};

static cJSON *added_tokens(void) {
    cJSON *list = cJSON_CreateArray();
    for (int id = 0; list && id < HF_BYTE_OFFSET; id++) {
        cJSON *t = cJSON_CreateObject();
        if (!t || !cJSON_AddItemToArray(list, t)) {
            cJSON_Delete(t);
            cJSON_Delete(list);
            return NULL;
        }
        cJSON_AddNumberToObject(t, "id", id);
        cJSON_AddStringToObject(t, "content", special_names[id]);
        cJSON_AddFalseToObject(t, "single_word");
        cJSON_AddFalseToObject(t, "lstrip");
        cJSON_AddFalseToObject(t, "rstrip");
        cJSON_AddFalseToObject(t, "normalized");
        cJSON_AddTrueToObject(t, "special");
    }
    return list;
}

/* BOS before every sequence, as Llama tokenizers do. */
static const char *const post_processor =
    "{\"type\": \"TemplateProcessing\","
    " \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
    " \"pair\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}},"
    " {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}],"
    " \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}}";

static cJSON *byte_model(void) {
    cJSON *model = cJSON_CreateObject(), *vocab = cJSON_AddObjectToObject(model, "vocab");
    if (!vocab) {
        cJSON_Delete(model);
        return NULL;
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddTrueToObject(model, "fuse_unk");
    cJSON_AddTrueToObject(model, "byte_fallback");
    cJSON_AddFalseToObject(model, "ignore_merges");
    for (int id = 0; id < HF_BYTE_VOCAB; id++) {
        char name[8];
        if (id >= HF_BYTE_OFFSET) snprintf(name, sizeof name, "<0x%02X>", id - HF_BYTE_OFFSET);
        cJSON_AddNumberToObject(vocab, id < HF_BYTE_OFFSET ? special_names[id] : name, id);
    }
    cJSON_AddItemToObject(model, "merges", cJSON_CreateArray());
    return model;
}

/* tokenizer.json + tokenizer_config.json of the byte-level tokenizer, into dir. */
static int hf_write_byte_tokenizer(const char *dir, NptErr *err) {
    char path[4400];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON_AddItemToObject(root, "added_tokens", added_tokens());
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON_AddItemToObject(root, "post_processor", cJSON_Parse(post_processor));
    cJSON_AddItemToObject(root, "decoder",
                          cJSON_Parse("{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]}"));
    cJSON_AddItemToObject(root, "model", byte_model());
    /* Any failed allocation above leaves a key missing; check them all once. */
    static const char *const keys[] = {"added_tokens", "post_processor", "decoder", "model"};
    for (size_t i = 0; root && i < NPT_ARRAY_LEN(keys); i++)
        if (!cJSON_GetObjectItemCaseSensitive(root, keys[i])) {
            cJSON_Delete(root);
            root = NULL;
        }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (write_json(root, path, err)) return -1;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON_AddStringToObject(cfg, "bos_token", "<s>");
    cJSON_AddStringToObject(cfg, "eos_token", "</s>");
    cJSON_AddStringToObject(cfg, "unk_token", "<unk>");
    cJSON_AddFalseToObject(cfg, "clean_up_tokenization_spaces");
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    return write_json(cfg, path, err);
}

/* Copies src to dst (atomically); a missing src is an error only when required. */
static int copy_file(const char *src, const char *dst, int required, NptErr *err) {
    FILE *in;
    int open_rc = npt_fopen_input(src, "tokenizer", &in, err); /* a pipe or device is refused even when optional */
    if (open_rc == -2) return -1;
    if (open_rc) return required || errno != ENOENT ? npt_fail(err, "cannot open %s: %s", src, strerror(errno)) : 0;
    NptAtomicFile o;
    FILE *out = npt_atomic_open(&o, dst, err);
    int rc = -1;
    if (out) {
        char buf[1 << 16];
        size_t got;
        int ok = 1;
        while (ok && (got = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, got, out) == got;
        if (ok && !ferror(in)) rc = npt_atomic_commit(&o, err);
        else {
            npt_fail(err, "cannot copy %s to %s: %s", src, dst, strerror(errno));
            npt_atomic_abort(&o);
        }
    }
    fclose(in);
    return rc;
}

static int copy_tokenizer(const char *json, const char *dir, NptErr *err) {
    static const char *const beside[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char src[4400], dst[4400];
    const char *slash = strrchr(json, '/');
    int dlen = slash ? (int)(slash - json) : 1;
    if (snprintf(dst, sizeof dst, "%s/tokenizer.json", dir) >= (int)sizeof dst || dlen > 4096)
        return npt_fail(err, "path too long: %.200s", dlen > 4096 ? json : dir);
    if (copy_file(json, dst, 1, err)) return -1;
    for (size_t i = 0; i < NPT_ARRAY_LEN(beside); i++) {
        snprintf(src, sizeof src, "%.*s/%s", dlen, slash ? json : ".", beside[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, beside[i]);
        if (copy_file(src, dst, 0, err)) return -1;
    }
    return 0;
}

/* ---- the directory ---- */

/* dir without its trailing slashes into clean: "out/" and "out" name the same directory,
 * but lstat("link/") follows the link. */
static int without_trailing_slashes(const char *dir, char *clean, size_t cap, NptErr *err) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    if (len == 0 || len >= cap) return npt_fail(err, "invalid output directory \"%.200s\"", dir);
    memcpy(clean, dir, len);
    clean[len] = '\0';
    return 0;
}

/* hf_check_out_dir for a dir without trailing slashes. */
static int check_clean_dir(const char *dir, NptErr *err) {
    struct stat st;
    /* lstat fails where stat would (the same lookup, the last step aside), and on anything
     * but a link tells what stat would */
    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT) return 0;
        return npt_fail(err, "cannot use %s: %s", dir, strerror(errno));
    }
    /* the model is renamed into place, and rename(2) puts a directory over no symlink
     * (dangling or not): said now, not after the model is written */
    if (S_ISLNK(st.st_mode))
        return npt_fail(err, "%s is a symbolic link; npt moves the model into place with a rename, which cannot replace "
                        "a link: give the directory it points to, or a new path", dir);
    if (!S_ISDIR(st.st_mode)) return npt_fail(err, "%s exists and is not a directory; choose another output directory", dir);
    DIR *d = opendir(dir);
    if (!d) return npt_fail(err, "cannot read directory %s: %s", dir, strerror(errno));
    const struct dirent *de;
    char first[256] = "";
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(first, sizeof first, "%s", de->d_name);
            break;
        }
    closedir(d);
    if (first[0])
        return npt_fail(err, "%s is not empty (it holds %s); npt never writes a model over existing files: choose a new "
                             "output directory or remove that one", dir, first);
    return 0;
}

int hf_check_out_dir(const char *out, NptErr *err) {
    char dir[4096];
    return without_trailing_slashes(out, dir, sizeof dir, err) || check_clean_dir(dir, err) ? -1 : 0;
}

/* What the temporary directory may hold once its files are renamed into place. */
static const char *const dir_files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json"};

/* Tracks (or forgets) the temporary directory and the files it may hold, so that a
 * signal ending the export removes them (npt_temp_track). */
static void track_tmp_dir(const char *tmp, int track) {
    char p[4300];
    for (size_t i = 0; i < NPT_ARRAY_LEN(dir_files); i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, dir_files[i]);
        if (track) npt_temp_track(p, 0);
        else npt_temp_forget(p);
    }
    if (track) npt_temp_track(tmp, 1);
    else npt_temp_forget(tmp);
}

/* Removes the temporary directory npt made (only its plain files, then itself). */
static void remove_tmp_dir(const char *tmp) {
    DIR *d = opendir(tmp);
    if (d) {
        const struct dirent *de;
        char p[4600];
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
                snprintf(p, sizeof p, "%s/%s", tmp, de->d_name) < (int)sizeof p)
                unlink(p);
        closedir(d);
    }
    rmdir(tmp);
}

/* Loads the written directory back with npt's own loaders before it is published: the
 * same weights (the fingerprint hashes q/k in one RoPE order, so it holds even where q/k
 * were permuted from interleaved RoPE, and catches a wrong permutation) and a
 * tokenizer, when it has one, that fits the vocabulary. */
static int verify_dir(const LlamaModel *m, const char *tmp, int has_tokenizer, NptErr *err) {
    LlamaModel back;
    if (llama_load(tmp, &back, err)) return -1;
    int rc = 0;
    if (back.fingerprint != m->fingerprint)
        rc = npt_fail(err, "%s: the weights read back differ from the ones written (fingerprint %016llx, expected %016llx)",
                      tmp, (unsigned long long)back.fingerprint, (unsigned long long)m->fingerprint);
    char path[4300];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
    Tokenizer *tok = rc || !has_tokenizer ? NULL : tokenizer_load(path, back.cfg.vocab_size, err);
    if (!rc && has_tokenizer && !tok) rc = -1;
    if (tok) tokenizer_free(tok);
    llama_free(&back);
    return rc;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int hf_save_dir(const LlamaModel *m, const char *dir, const char *tokenizer_json, NptErr *err) {
    char clean[4096], tmp[4200], path[4300];
    if (without_trailing_slashes(dir, clean, sizeof clean, err) || check_clean_dir(clean, err)) return -1;
    int no_tokenizer = tokenizer_json && !tokenizer_json[0];
    if (tokenizer_json && !no_tokenizer && !npt_ends_with(tokenizer_json, ".json"))
        return npt_fail(err, "tokenizer %s is not an HF tokenizer.json; an HF model directory needs one", tokenizer_json);
    if (npt_temp_name(clean, tmp, sizeof tmp, err) || npt_check_parent_dir(clean, err)) return -1;
    if (mkdir(tmp, 0755) != 0) return npt_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    track_tmp_dir(tmp, 1);
    int rc = 0;
    snprintf(path, sizeof path, "%s/config.json", tmp);
    rc = hf_write_config(&m->cfg, path, err);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (rc == 0) rc = hf_write_safetensors(m, path, err);
    if (rc == 0 && !no_tokenizer)
        rc = tokenizer_json ? copy_tokenizer(tokenizer_json, tmp, err) : hf_write_byte_tokenizer(tmp, err);
    if (rc == 0) rc = verify_dir(m, tmp, !no_tokenizer, err);
    if (rc == 0) {
        fsync_dir(tmp);
        /* rename(2) replaces an empty directory and refuses a non-empty one, so a directory
         * filled by someone else since the check is still never overwritten. */
        if (rename(tmp, clean) != 0) rc = npt_fail(err, "cannot move %s to %s: %s", tmp, clean, strerror(errno));
    }
    if (rc) remove_tmp_dir(tmp);
    track_tmp_dir(tmp, 0); /* renamed into place, or removed */
    if (rc) return -1;
    char *slash = strrchr(clean, '/');
    if (slash) *slash = '\0';
    fsync_dir(slash ? (clean[0] ? clean : "/") : ".");
    return 0;
}
