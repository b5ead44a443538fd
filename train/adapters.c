/* train/adapters.c — adapters <-> checkpoints, and the guard that refuses adapter-only
 * files where a full model is expected (see adapters.h). */
#include "adapters.h"

#include <cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void adapters_fill_meta(CkptMeta *meta, const LlamaModel *m, const NptModel *n) {
    const LlamaConfig *c = &m->cfg;
    char abs[PATH_MAX];
    /* absolute, so the checkpoint still says which model it belongs to when moved */
    snprintf(meta->base_path, sizeof meta->base_path, "%s", realpath(m->path, abs) ? abs : m->path);
    snprintf(meta->base_arch, sizeof meta->base_arch, "llama");
    snprintf(meta->base_format, sizeof meta->base_format, "%s", model_format_name(m->format));
    meta->base_fingerprint = m->fingerprint;
    meta->dim = c->dim, meta->hidden_dim = c->hidden_dim, meta->n_layers = c->n_layers;
    meta->n_heads = c->n_heads, meta->n_kv_heads = c->n_kv_heads, meta->vocab_size = c->vocab_size;
    meta->norm_eps = c->norm_eps, meta->rope_theta = c->rope_theta;
    if (!n) return;
    meta->rank = n->rank;
    meta->safe_mode = n->safe_mode;
    meta->modulation_scale = n->scale;
    meta->n_npt_layers = n->n_adapters;
    for (int k = 0; k < n->n_adapters && k < CKPT_MAX_LAYERS; k++) meta->npt_layers[k] = n->adapters[k].layer;
}

int adapters_check_base(const char *ckpt_path, const CkptMeta *ckpt, const LlamaModel *m, NptErr *err) {
    CkptMeta want;
    memset(&want, 0, sizeof want);
    adapters_fill_meta(&want, m, NULL);
    /* the older order is hashed only on a mismatch: a second pass over every weight */
    if (ckpt->base_fingerprint != want.base_fingerprint && ckpt->base_fingerprint == llama_fingerprint_in(m, ROPE_HALF))
        want.base_fingerprint = ckpt->base_fingerprint;
    return ckpt_check_base(ckpt_path, ckpt, &want, err);
}

/* Calls fn for every adapter tensor (and, with opt, its two moments) in a fixed order
 * with its checkpoint name; B_mul only in full mode. Stops at the first failure. */
typedef int (*TensorVisitor)(void *ctx, const char *name, float *data, const Tensor *shape);

static int visit_tensors(const NptModel *n, const Optimizer *opt, TensorVisitor fn, void *ctx) {
    for (int k = 0; k < n->n_adapters; k++) {
        const NptAdapter *ad = &n->adapters[k];
        const Tensor *parts[3] = {&ad->A, &ad->B_add, &ad->B_mul};
        const char *names[3] = {"A", "B_add", "B_mul"};
        for (int p = 0; p < (n->safe_mode ? 2 : 3); p++) {
            char name[128];
            size_t off = (size_t)(parts[p]->data - n->params);
            snprintf(name, sizeof name, "adapters/layer_%02d/%s", ad->layer, names[p]);
            if (fn(ctx, name, parts[p]->data, parts[p])) return -1;
            if (!opt) continue;
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.m", ad->layer, names[p]);
            if (fn(ctx, name, opt->m + off, parts[p])) return -1;
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.v", ad->layer, names[p]);
            if (fn(ctx, name, opt->v + off, parts[p])) return -1;
        }
    }
    return 0;
}

typedef struct {
    CkptTensor *list;
    int count;
} ListCtx;

static int append_view(void *ctx, const char *name, float *data, const Tensor *shape) {
    ListCtx *c = ctx;
    CkptTensor *t = &c->list[c->count++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->data = data;
    t->ndim = 2;
    t->shape[0] = shape->shape[0];
    t->shape[1] = shape->shape[1];
    return 0;
}

int adapters_tensor_list(const NptModel *n, const Optimizer *opt, CkptTensor **out, int *count, NptErr *err) {
    ListCtx c = {calloc((size_t)n->n_adapters * 3 * (opt ? 3 : 1), sizeof(CkptTensor)), 0};
    if (!c.list) return npt_fail(err, "out of memory listing adapter tensors");
    visit_tensors(n, opt, append_view, &c);
    *out = c.list;
    *count = c.count;
    return 0;
}

typedef struct {
    const char *path;
    const CkptTensor *tensors;
    int count;
    NptErr *err;
} RestoreCtx;

static int copy_named(void *ctx, const char *name, float *dst, const Tensor *like) {
    RestoreCtx *c = ctx;
    const CkptTensor *src = ckpt_find(c->tensors, c->count, name);
    if (!src) return npt_fail(c->err, "%s: tensor /%s is missing", c->path, name);
    if (src->ndim != 2 || src->shape[0] != like->shape[0] || src->shape[1] != like->shape[1])
        return npt_fail(c->err, "%s: tensor /%s has shape [%lld, %lld], expected [%d, %d]", c->path, name,
                        (long long)src->shape[0], (long long)(src->ndim > 1 ? src->shape[1] : 0), like->shape[0], like->shape[1]);
    memcpy(dst, src->data, like->n * sizeof(float));
    return 0;
}

int adapters_restore(NptModel *n, Optimizer *opt, const char *path, const CkptTensor *t, int count, NptErr *err) {
    RestoreCtx c = {path, t, count, err};
    return visit_tensors(n, opt, copy_named, &c);
}

int adapters_load(const char *path, const LlamaModel *m, NptModel *n, NptErr *err) {
    CkptMeta meta;
    CkptTensor *t = NULL;
    int count = 0;
    if (ckpt_load(path, &meta, &t, &count, err)) return -1;
    if (ckpt_is_all_weights(&meta)) { /* an lm run that trained every weight: a model, not adapters */
        npt_fail(err, "%s holds all the weights of a model trained with train_all_weights, not NPT adapters; write it "
                 "as a model with npt export %s --out DIR and pass DIR as --model", path, path);
        ckpt_free(&meta, t, count);
        return -1;
    }
    int rc = -1;
    if (adapters_check_base(path, &meta, m, err) == 0) {
        NptConfig cfg = {.rank = meta.rank, .safe_mode = meta.safe_mode, .modulation_scale = (float)meta.modulation_scale,
                         .layer_mode = NPT_LAYERS_LIST, .layer_list = meta.npt_layers, .n_layer_list = meta.n_npt_layers};
        if (npt_create(n, m, &cfg, err) == 0) {
            rc = adapters_restore(n, NULL, path, t, count, err);
            if (rc) npt_free(n);
        }
    }
    ckpt_free(&meta, t, count);
    return rc;
}

int load_trained_weights(CkptFile *f, const char *path, const CkptTensor *block, LlamaModel *m, const char *model_name,
                         NptErr *err) {
    if (block->ndim != 1 || block->shape[0] != (int64_t)m->weights_floats)
        return npt_fail(err, "%s: /weights/block has %lld floats but model %s needs %zu; the checkpoint is damaged or "
                        "does not fit its base", path, (long long)block->shape[0], model_name, m->weights_floats);
    if (ckpt_read_rows(f, block, 0, block->shape[0], m->weights_block, err)) return -1;
    /* checked here, so a NaN is blamed on the checkpoint, not on the base model it was read over */
    CkptTensor read = *block;
    read.data = m->weights_block;
    if (ckpt_check_finite(path, &read, 1, err)) return -1;
    llama_finish_finite(m);
    return 0;
}

/* ---------------------------------------------------------------- adapter-only guard */

/* PEFT adapter directory: says what it is and which base it names. */
static int refuse_peft(const char *dir, const char *cfg_path, NptErr *err) {
    NptErr unread; /* an unreadable or broken config still means "adapters only" */
    char *text = npt_read_file(cfg_path, NULL, &unread);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    char rank[32] = "";
    if (cJSON_IsNumber(r)) snprintf(rank, sizeof rank, ", rank %d", r->valueint);
    npt_fail(err, "%s is a PEFT adapter directory (%s%s, adapter_config.json), not a full model: it holds adapters only "
             "and needs its base model %s; give that base model instead",
             dir, cJSON_IsString(type) ? type->valuestring : "unknown type", rank,
             cJSON_IsString(base) ? base->valuestring : "(adapter_config.json names none)");
    cJSON_Delete(j);
    return -1;
}

static int refuse_adapter_only(const char *path, NptErr *err) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/adapter_config.json", path);
        return stat(cfg, &st) == 0 ? refuse_peft(path, cfg, err) : 0;
    }
    int h5 = npt_file_is_hdf5(path, "model", err);
    if (h5 == -2) return -1; /* a pipe or device: reading it would block or never end */
    if (h5 != 1) return 0;
    NptErr e2;
    CkptFile *f = ckpt_open(path, &e2);
    CkptMeta m;
    memset(&m, 0, sizeof m);
    if (!f || ckpt_read_meta(f, &m, &e2)) {
        ckpt_close(f);
        return npt_fail(err, "%s is an HDF5 file, not a model (%s)", path, e2.msg);
    }
    CkptTensor *list = NULL;
    int n = 0;
    if (ckpt_is_all_weights(&m) && (ckpt_list_tensors(f, &list, &n, &e2) || ckpt_validate(path, &m, list, n, &e2)))
        npt_fail(err, "%s", e2.msg); /* damaged: npt export, the way to a model, refuses it too */
    else if (m.n_npt_layers == 0) /* lm + train_all_weights: the weights of a model, not a model file */
        npt_fail(err, "%s is an npt all-weights checkpoint (step %lld of training %s), not a model file; make one with: "
                 "npt export %s --model %s --out DIR",
                 path, (long long)m.step, m.base_path, path, m.base_path);
    else
        npt_fail(err, "%s is an npt checkpoint (adapters only, rank %d on %d layers, step %lld), not a full model; it "
                 "needs its base model %s (%s, fingerprint %016llx, dim %d, %d layers): give that as the model and this "
                 "file as the adapters",
                 path, m.rank, m.n_npt_layers, (long long)m.step, m.base_path, m.base_format,
                 (unsigned long long)m.base_fingerprint, m.dim, m.n_layers);
    ckpt_free(&m, list, n);
    ckpt_close(f);
    return -1;
}

int load_full_model(const char *path, LlamaModel *m, NptErr *err) { return load_full_model_shared(path, NULL, m, err); }

int load_full_model_shared(const char *path, const char *share_path, LlamaModel *m, NptErr *err) {
    return refuse_adapter_only(path, err) ? -1 : llama_load_shared(path, share_path, m, err);
}
