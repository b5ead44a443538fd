/* train/adapters.c — adapters <-> checkpoints (see adapters.h). */
#include "adapters.h"

#include <stdlib.h>
#include <string.h>

void adapters_fill_meta(CkptMeta *meta, const LlamaModel *m, const NptModel *n) {
    const LlamaConfig *c = &m->cfg;
    snprintf(meta->base_path, sizeof meta->base_path, "%s", m->path);
    snprintf(meta->base_arch, sizeof meta->base_arch, "llama");
    snprintf(meta->base_format, sizeof meta->base_format, "%s", model_format_name(m->format));
    meta->base_fingerprint = m->fingerprint;
    meta->dim = c->dim, meta->hidden_dim = c->hidden_dim, meta->n_layers = c->n_layers;
    meta->n_heads = c->n_heads, meta->n_kv_heads = c->n_kv_heads, meta->vocab_size = c->vocab_size;
    if (!n) return;
    meta->rank = n->rank;
    meta->safe_mode = n->safe_mode;
    meta->modulation_scale = n->scale;
    meta->n_npt_layers = n->n_adapters;
    for (int k = 0; k < n->n_adapters && k < CKPT_MAX_LAYERS; k++) meta->npt_layers[k] = n->adapters[k].layer;
}

static void set_tensor(CkptTensor *t, const char *name, float *data, const Tensor *shape_of) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->data = data;
    t->ndim = 2;
    t->shape[0] = shape_of->shape[0];
    t->shape[1] = shape_of->shape[1];
}

/* The adapter's tensors in a fixed order; B_mul only in full mode. */
static int adapter_parts(const NptModel *n, int k, const Tensor **parts, const char **names) {
    const NptAdapter *ad = &n->adapters[k];
    parts[0] = &ad->A, names[0] = "A";
    parts[1] = &ad->B_add, names[1] = "B_add";
    parts[2] = &ad->B_mul, names[2] = "B_mul";
    return n->safe_mode ? 2 : 3;
}

int adapters_tensor_list(const NptModel *n, const Optimizer *opt, CkptTensor **out, int *count, NptErr *err) {
    int per = 3 * (opt ? 3 : 1);
    CkptTensor *list = calloc((size_t)n->n_adapters * per, sizeof *list);
    if (!list) return npt_fail(err, "out of memory listing adapter tensors");
    int c = 0;
    for (int k = 0; k < n->n_adapters; k++) {
        const Tensor *parts[3];
        const char *names[3];
        int np = adapter_parts(n, k, parts, names);
        for (int p = 0; p < np; p++) {
            char name[128];
            size_t off = (size_t)(parts[p]->data - n->params);
            snprintf(name, sizeof name, "adapters/layer_%02d/%s", n->adapters[k].layer, names[p]);
            set_tensor(&list[c++], name, parts[p]->data, parts[p]);
            if (!opt) continue;
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.m", n->adapters[k].layer, names[p]);
            set_tensor(&list[c++], name, opt->m + off, parts[p]);
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.v", n->adapters[k].layer, names[p]);
            set_tensor(&list[c++], name, opt->v + off, parts[p]);
        }
    }
    *out = list;
    *count = c;
    return 0;
}

static int copy_named(const char *path, const CkptTensor *t, int count, const char *name, float *dst, const Tensor *like,
                      NptErr *err) {
    const CkptTensor *src = ckpt_find(t, count, name);
    if (!src) return npt_fail(err, "%s: tensor /%s is missing", path, name);
    if (src->ndim != 2 || src->shape[0] != like->shape[0] || src->shape[1] != like->shape[1])
        return npt_fail(err, "%s: tensor /%s has shape [%lld, %lld], expected [%d, %d]", path, name,
                        (long long)src->shape[0], (long long)(src->ndim > 1 ? src->shape[1] : 0), like->shape[0], like->shape[1]);
    memcpy(dst, src->data, like->n * sizeof(float));
    return 0;
}

int adapters_restore(NptModel *n, Optimizer *opt, const char *path, const CkptTensor *t, int count, NptErr *err) {
    for (int k = 0; k < n->n_adapters; k++) {
        const Tensor *parts[3];
        const char *names[3];
        int np = adapter_parts(n, k, parts, names);
        for (int p = 0; p < np; p++) {
            char name[128];
            size_t off = (size_t)(parts[p]->data - n->params);
            snprintf(name, sizeof name, "adapters/layer_%02d/%s", n->adapters[k].layer, names[p]);
            if (copy_named(path, t, count, name, parts[p]->data, parts[p], err)) return -1;
            if (!opt) continue;
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.m", n->adapters[k].layer, names[p]);
            if (copy_named(path, t, count, name, opt->m + off, parts[p], err)) return -1;
            snprintf(name, sizeof name, "optimizer/layer_%02d/%s.v", n->adapters[k].layer, names[p]);
            if (copy_named(path, t, count, name, opt->v + off, parts[p], err)) return -1;
        }
    }
    return 0;
}

int adapters_load(const char *path, const LlamaModel *m, NptModel *n, NptErr *err) {
    CkptMeta meta, want;
    CkptTensor *t = NULL;
    int count = 0;
    if (ckpt_load(path, &meta, &t, &count, err)) return -1;
    memset(&want, 0, sizeof want);
    adapters_fill_meta(&want, m, NULL);
    int rc = -1;
    if (ckpt_check_base(path, &meta, &want, err) == 0) {
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
