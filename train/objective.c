/* train/objective.c — distillation and LM losses of one micro-batch (see objective.h). */
#include "objective.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../model/ops.h"

/* Copies t into the student's arena so the teacher's scratch can be reset. */
static Tensor *keep(Graph *g, const Tensor *t, const char *name) {
    Tensor *k = tensor_new(g->act, name, t->ndim, t->shape);
    memcpy(k->data, t->data, t->n * sizeof(float));
    return k;
}

static ObjectiveValues distill(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, int B, int T, float grad_scale, int poison) {
    Graph *sg = &sh->student, *tg = &sh->teacher;
    int L = m->cfg.n_layers, first = npt->first_layer, N = B * T;
    Tensor **teacher_out = arena_alloc(sg->act, (size_t)L * sizeof(Tensor *));
    graph_reset(tg);
    Tensor *h = keep(sg, llama_embed(tg, m, tokens, N), "h0");
    if (poison) h->data[0] = NAN;
    Tensor *student_in = first == 0 ? h : NULL, *first_attn = NULL;
    for (int l = 0; l < L; l++) {
        arena_reset(tg->act);
        if (l == first) { /* the student's first layer sees this very input: its attention is this one */
            Tensor *a = llama_attention_block(tg, m, l, h, B, T);
            first_attn = keep(sg, a, "teacher_attention");
            h = keep(sg, llama_layer_rest(tg, m, l, h, a), "teacher_hidden");
        } else {
            h = keep(sg, llama_layer(tg, m, l, h, B, T), "teacher_hidden");
        }
        teacher_out[l] = h;
        if (l + 1 == first) student_in = h;
    }
    arena_reset(tg->act);
    Tensor *fid = NULL, *reg = NULL;
    h = student_in;
    int n_compared = 0;
    for (int l = first; l < L; l++) {
        Tensor *r;
        h = l == first ? npt_layer_forward(sg, npt, l, h, first_attn, B, T, &r) : npt_student_layer(sg, npt, l, h, B, T, &r);
        Tensor *d = oc->use_mse ? op_mse(sg, h, teacher_out[l]) : op_nmse(sg, h, teacher_out[l]);
        fid = fid ? op_add(sg, fid, d) : d;
        if (r) reg = reg ? op_add(sg, reg, r) : r;
        n_compared++;
    }
    fid = op_scale(sg, fid, 1.0f / (float)n_compared);
    reg = op_scale(sg, reg, 1.0f / (float)npt->n_adapters);
    Tensor *loss = op_add(sg, fid, op_scale(sg, reg, oc->lambda));
    ObjectiveValues v = {loss->data[0], fid->data[0], reg->data[0]};
    if (isfinite(v.loss) && sg->recording) graph_backward(sg, loss, grad_scale);
    return v;
}

static ObjectiveValues language_model(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, const int *tokens,
                                      int B, int T, float grad_scale, int poison) {
    Graph *sg = &sh->student;
    int N = B * T;
    int *targets = arena_alloc(sg->act, (size_t)N * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : -1;
    Tensor *h = llama_embed(sg, m, tokens, N);
    if (poison) h->data[0] = NAN;
    Tensor *reg_sum = NULL;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Tensor *r = NULL;
        h = npt ? npt_student_layer(sg, npt, l, h, B, T, &r) : llama_layer(sg, m, l, h, B, T);
        if (r) reg_sum = reg_sum ? op_add(sg, reg_sum, r) : r;
    }
    Tensor *loss = op_cross_entropy(sg, llama_logits(sg, m, h), targets);
    ObjectiveValues v = {loss->data[0], loss->data[0], reg_sum ? reg_sum->data[0] / npt->n_adapters : 0.0};
    if (isfinite(v.loss) && sg->recording) graph_backward(sg, loss, grad_scale);
    return v;
}

int objective_auto_shards(const ObjectiveConfig *oc, const NptModel *npt, int B) {
    int threads = omp_get_max_threads();
    return oc->distill && npt && threads > 1 && B % threads == 0 ? threads : 1;
}

/* Arenas sized for B x T (one shard's part of the micro-batch): the student's activations
 * plus the teacher's kept layer outputs, its gradients, and the teacher's per-layer scratch. */
static int shard_init(ObjectiveShard *sh, const LlamaConfig *c, const ObjectiveConfig *oc, int B, int T, NptErr *err) {
    size_t bytes = llama_activation_bytes(c, B, T, !oc->distill);
    size_t hidden = (size_t)B * T * c->dim * sizeof(float);
    size_t act_bytes = bytes + (size_t)(c->n_layers + 2) * hidden;
    size_t scratch_bytes = bytes / (size_t)(c->n_layers > 0 ? c->n_layers : 1) + 8 * hidden + (4u << 20);
    if (arena_init(&sh->act, act_bytes, "activations", err) || arena_init(&sh->grads, bytes, "activation gradients", err) ||
        arena_init(&sh->scratch, scratch_bytes, "teacher scratch", err) ||
        graph_init(&sh->student, &sh->act, &sh->grads, 64 * (c->n_layers + 4), err) ||
        graph_init(&sh->teacher, &sh->scratch, NULL, 16, err))
        return -1;
    sh->teacher.recording = 0;
    return 0;
}

/* Room for the shard's view of the adapters and its gradients. */
static int shard_adapters_alloc(ObjectiveShard *sh, const NptModel *npt, NptErr *err) {
    sh->grad_buf = npt_aligned_alloc(npt->n_params * sizeof(float), "shard adapter gradients", err);
    sh->npt.adapters = npt_try_malloc((size_t)npt->n_adapters * sizeof(NptAdapter), "shard adapters", err);
    sh->npt.n_adapters = npt->n_adapters, sh->npt.n_params = npt->n_params;
    return sh->grad_buf && sh->npt.adapters ? 0 : -1;
}

/* The shard's view of the adapters, taken at every step so that it follows the model
 * (scale, flags, parameters): the same tensors, gradients into the shard's own buffer. */
static void shard_view(ObjectiveShard *sh, const NptModel *npt) {
    if (npt->n_adapters != sh->npt.n_adapters || npt->n_params != sh->npt.n_params)
        npt_die("objective_step: the adapters (%d, %zu parameters) are not the shape given to objective_init (%d, %zu)",
                npt->n_adapters, npt->n_params, sh->npt.n_adapters, sh->npt.n_params);
    NptAdapter *ads = sh->npt.adapters;
    sh->npt = *npt;
    sh->npt.adapters = ads;
    sh->npt.grads = sh->grad_buf;
    for (int k = 0; k < npt->n_adapters; k++) {
        NptAdapter *ad = &ads[k];
        *ad = npt->adapters[k];
        Tensor *views[3] = {&ad->A, &ad->B_add, &ad->B_mul};
        for (int t = 0; t < 3; t++)
            if (views[t]->grad) views[t]->grad = sh->grad_buf + (views[t]->grad - npt->grads);
    }
}

int objective_init(ObjectiveRunner *r, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc, int B, int T,
                   int n_shards, NptErr *err) {
    memset(r, 0, sizeof *r);
    if (n_shards < 1 || B % n_shards || (n_shards > 1 && (!oc->distill || !npt)))
        return npt_fail(err, "objective: %d shards of a batch of %d (shards need distillation into adapters and divide the batch)",
                        n_shards, B);
    r->n_shards = n_shards, r->B = B, r->T = T;
    /* inside a shard every loop runs on the shard's thread; nested teams would only
     * oversubscribe the cores (OMP_MAX_ACTIVE_LEVELS > 1 in the environment) */
    if (n_shards > 1) omp_set_max_active_levels(1);
    r->shards = npt_try_malloc((size_t)n_shards * sizeof(ObjectiveShard), "objective shards", err);
    if (!r->shards) return -1;
    memset(r->shards, 0, (size_t)n_shards * sizeof(ObjectiveShard));
    for (int s = 0; s < n_shards; s++)
        if (shard_init(&r->shards[s], &m->cfg, oc, B / n_shards, T, err) ||
            (n_shards > 1 && shard_adapters_alloc(&r->shards[s], npt, err))) {
            objective_free(r);
            return -1;
        }
    return 0;
}

void objective_free(ObjectiveRunner *r) {
    for (int s = 0; r->shards && s < r->n_shards; s++) {
        ObjectiveShard *sh = &r->shards[s];
        graph_free(&sh->student), graph_free(&sh->teacher);
        arena_free(&sh->act), arena_free(&sh->grads), arena_free(&sh->scratch);
        free(sh->npt.adapters);
        free(sh->grad_buf);
    }
    free(r->shards);
    memset(r, 0, sizeof *r);
}

static ObjectiveValues shard_step(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                                  const int *tokens, int B, int T, float grad_scale, int poison, int forward_only) {
    graph_reset(&sh->student);
    sh->student.recording = !forward_only;
    if (oc->distill) return distill(sh, m, npt, oc, tokens, B, T, grad_scale, poison);
    return language_model(sh, m, oc->train_all_weights ? NULL : npt, tokens, B, T, grad_scale, poison);
}

ObjectiveValues objective_step(ObjectiveRunner *r, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, float grad_scale, int poison) {
    int S = r->n_shards, Bs = r->B / S, T = r->T;
    if (S == 1) return shard_step(&r->shards[0], m, npt, oc, tokens, Bs, T, grad_scale, poison, r->forward_only);
    ObjectiveValues vals[S];
#pragma omp parallel for num_threads(S) schedule(static, 1)
    for (int s = 0; s < S; s++) {
        ObjectiveShard *sh = &r->shards[s];
        shard_view(sh, npt);
        memset(sh->grad_buf, 0, npt->n_params * sizeof(float));
        vals[s] = shard_step(sh, m, &sh->npt, oc, tokens + (size_t)s * Bs * T, Bs, T, grad_scale / S, poison && s == 0,
                             r->forward_only);
    }
    /* equal shares: the means of the shards' means are the batch's means */
    ObjectiveValues v = {0, 0, 0};
    for (int s = 0; s < S; s++) v.loss += vals[s].loss / S, v.fidelity += vals[s].fidelity / S, v.reg += vals[s].reg / S;
    if (r->forward_only || !isfinite(v.loss)) return v;
    size_t n = npt->n_params;
#pragma omp parallel for schedule(static) if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) {
        float acc = npt->grads[i];
        for (int s = 0; s < S; s++) acc += r->shards[s].grad_buf[i];
        npt->grads[i] = acc;
    }
    return v;
}
