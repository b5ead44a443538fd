/* train/objective.c — distillation and LM losses of one micro-batch (see objective.h). */
#include "objective.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../model/ops.h"

/* One sequence's rows (all of src) into sequence seq of dst. */
static void copy_sequence(Tensor *dst, int seq, const Tensor *src) {
    memcpy(dst->data + (size_t)seq * src->n, src->data, src->n * sizeof(float));
}

/* Where sequence b's record blocks lie in the state tensors (one per slot). */
static void sequence_blocks(Tensor **st, int n_slots, int b, size_t seq, float **blocks) {
    for (int s = 0; s < n_slots; s++) blocks[s] = st[s]->data + (size_t)b * seq;
}

/* The teacher's states a shard's B sequences need, one [B T, d] tensor per slot (the
 * record layout of train/teacher_cache.h): [0] the student's input (the embedding, or
 * the output of the layer below the first converted one), [1] the first converted
 * layer's attention (the student's first layer sees the teacher's input, so its
 * attention is this one), [2 + l - first] the output of compared layer l. Windows the
 * cache holds are read from it; the others run through the teacher, and those the
 * plan says to store are stored (cache is NULL for a poisoned batch). */
static Tensor **teacher_states(ObjectiveShard *sh, const LlamaModel *m, int first, const int *tokens, int B, int T,
                               int poison, const ObjectiveCache *cache) {
    Graph *sg = &sh->student, *tg = &sh->teacher;
    int L = m->cfg.n_layers, d = m->cfg.dim, n_slots = L - first + 2;
    size_t seq = (size_t)T * d;
    Tensor **st = arena_alloc(sg->act, (size_t)n_slots * sizeof(Tensor *));
    static const char *const names[3] = {"student_input", "teacher_attention", "teacher_hidden"};
    for (int s = 0; s < n_slots; s++) st[s] = tensor_new2(sg->act, names[s < 2 ? s : 2], B * T, d);
    int *run = arena_alloc(sg->act, (size_t)B * sizeof(int)), n_run = 0;
    float **blocks = arena_alloc(sg->act, (size_t)n_slots * sizeof(float *));
    for (int b = 0; b < B; b++) {
        if (cache && cache->actions[b] == CACHE_HIT) {
            sequence_blocks(st, n_slots, b, seq, blocks);
            if (teacher_cache_read(cache->cache, cache->window_ids[b], blocks) == 0) continue;
        }
        run[n_run++] = b;
    }
    if (n_run == 0) return st;
    /* One sequence at a time: OpenBLAS's result for a row depends on the row's place
     * in the matrix, so a window's states would depend on its neighbours in the
     * batch and a cached window would differ in the last bits from a recomputed one.
     * Alone, a window always gives the same floats, batch or cache, fresh or resumed
     * run. h ping-pongs between two buffers of the student's arena, since the
     * teacher's scratch is reset at every layer. */
    Tensor *buf[2] = {tensor_new2(sg->act, "teacher_h", T, d), tensor_new2(sg->act, "teacher_h", T, d)};
    for (int i = 0; i < n_run; i++) {
        int b = run[i];
        graph_reset(tg);
        Tensor *h = llama_embed(tg, m, tokens + (size_t)b * T, T);
        if (poison && b == 0) h->data[0] = NAN;
        memcpy(buf[0]->data, h->data, h->n * sizeof(float));
        h = buf[0];
        for (int l = 0; l <= L; l++) {
            if (l >= first) copy_sequence(st[l == first ? 0 : 1 + l - first], b, h);
            if (l == L) break;
            arena_reset(tg->act);
            Tensor *out;
            if (l == first) {
                Tensor *a = llama_attention_block(tg, m, l, h, 1, T);
                copy_sequence(st[1], b, a);
                out = llama_layer_rest(tg, m, l, h, a);
            } else {
                out = llama_layer(tg, m, l, h, 1, T);
            }
            Tensor *next = buf[h == buf[0]];
            memcpy(next->data, out->data, out->n * sizeof(float));
            h = next;
        }
    }
    arena_reset(tg->act);
    for (int i = 0; cache && i < n_run; i++)
        if (cache->actions[run[i]] == CACHE_STORE) {
            sequence_blocks(st, n_slots, run[i], seq, blocks);
            teacher_cache_write(cache->cache, cache->window_ids[run[i]], blocks);
        }
    return st;
}

static ObjectiveValues distill(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, int B, int T, float grad_scale, int poison, const ObjectiveCache *cache) {
    Graph *sg = &sh->student;
    int L = m->cfg.n_layers, first = npt->first_layer;
    Tensor **st = teacher_states(sh, m, first, tokens, B, T, poison, cache);
    Tensor *fid = NULL, *reg = NULL, *h = st[0];
    int n_compared = 0;
    for (int l = first; l < L; l++) {
        Tensor *r, *target = st[2 + l - first];
        h = l == first ? npt_layer_forward(sg, npt, l, h, st[1], B, T, &r) : npt_student_layer(sg, npt, l, h, B, T, &r);
        Tensor *d = oc->use_mse ? op_mse(sg, h, target) : op_nmse(sg, h, target);
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

/* Next-token cross-entropy; through adapters (npt given), lambda times their mean
 * regularizer is added as in distill. */
static ObjectiveValues language_model(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, float lambda,
                                      const int *tokens, int B, int T, float grad_scale, int poison) {
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
    Tensor *ce = op_cross_entropy(sg, llama_logits(sg, m, h), targets), *loss = ce, *reg = NULL;
    if (reg_sum) {
        reg = op_scale(sg, reg_sum, 1.0f / (float)npt->n_adapters);
        loss = op_add(sg, ce, op_scale(sg, reg, lambda));
    }
    ObjectiveValues v = {loss->data[0], ce->data[0], reg ? reg->data[0] : 0.0};
    if (isfinite(v.loss) && sg->recording) graph_backward(sg, loss, grad_scale);
    return v;
}

int objective_auto_shards(const ObjectiveConfig *oc, const NptModel *npt, int B) {
    int threads = omp_get_max_threads();
    return oc->distill && npt && threads > 1 && B % threads == 0 ? threads : 1;
}

/* Arenas sized for B x T (one shard's part of the micro-batch): the student's activations
 * plus the teacher's states (at most n_layers + 2 slots) and the two one-sequence buffers
 * the teacher's hidden state ping-pongs between, its gradients, and the teacher's
 * per-layer scratch for one sequence (teacher_states runs one at a time). */
static int shard_init(ObjectiveShard *sh, const LlamaConfig *c, const ObjectiveConfig *oc, int B, int T, NptErr *err) {
    size_t bytes = llama_activation_bytes(c, B, T, !oc->distill);
    size_t hidden = (size_t)B * T * c->dim * sizeof(float);
    size_t act_bytes = bytes + (size_t)(c->n_layers + 2) * hidden + 2 * hidden / (size_t)B;
    size_t one_seq = llama_activation_bytes(c, 1, T, 0);
    size_t scratch_bytes = one_seq / (size_t)(c->n_layers > 0 ? c->n_layers : 1) + 8 * hidden / (size_t)B + (4u << 20);
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
    r->actions = npt_try_malloc((size_t)B * sizeof(CacheAction), "teacher cache plan", err);
    r->shards = r->actions ? npt_try_malloc((size_t)n_shards * sizeof(ObjectiveShard), "objective shards", err) : NULL;
    if (!r->shards) {
        free(r->actions);
        return -1;
    }
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
    free(r->actions);
    memset(r, 0, sizeof *r);
}

static ObjectiveValues shard_step(ObjectiveShard *sh, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                                  const int *tokens, int B, int T, float grad_scale, int poison, int forward_only,
                                  const ObjectiveCache *cache) {
    graph_reset(&sh->student);
    sh->student.recording = !forward_only;
    if (oc->distill) return distill(sh, m, npt, oc, tokens, B, T, grad_scale, poison, cache);
    return language_model(sh, m, oc->train_all_weights ? NULL : npt, oc->lambda, tokens, B, T, grad_scale, poison);
}

ObjectiveValues objective_step(ObjectiveRunner *r, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, const int64_t *window_ids, float grad_scale, int poison) {
    int S = r->n_shards, Bs = r->B / S, T = r->T;
    ObjectiveCache caches[S];
    int cached = r->teacher_cache && window_ids && oc->distill && !poison;
    if (cached) teacher_cache_plan(r->teacher_cache, window_ids, r->B, r->actions); /* serial: it hands out records */
    for (int s = 0; cached && s < S; s++)
        caches[s] = (ObjectiveCache){r->teacher_cache, window_ids + (size_t)s * Bs, r->actions + (size_t)s * Bs};
    if (S == 1) return shard_step(&r->shards[0], m, npt, oc, tokens, Bs, T, grad_scale, poison, r->forward_only,
                                  cached ? &caches[0] : NULL);
    ObjectiveValues vals[S];
#pragma omp parallel for num_threads(S) schedule(static, 1)
    for (int s = 0; s < S; s++) {
        ObjectiveShard *sh = &r->shards[s];
        shard_view(sh, npt);
        memset(sh->grad_buf, 0, npt->n_params * sizeof(float));
        vals[s] = shard_step(sh, m, &sh->npt, oc, tokens + (size_t)s * Bs * T, Bs, T, grad_scale / S, poison && s == 0,
                             r->forward_only, cached ? &caches[s] : NULL);
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
