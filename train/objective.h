/* train/objective.h — the losses of one micro-batch (SPEC section 3), built on the tape.
 *
 * distill: the teacher (frozen base, nothing recorded) runs every layer once, one
 * window at a time, unless the teacher cache holds the window's states; layers below
 * the first converted layer are shared: their output is the student's input.
 * The student runs from the first converted layer up, NPT where converted, and its
 * residual output at every compared layer is held against the teacher's:
 *   loss = mean_l NMSE(hS_l, hT_l) + lambda * mean_{NPT l} reg_l
 * No logits are computed. lm: next-token cross-entropy through the student. */
#ifndef NPT_OBJECTIVE_H
#define NPT_OBJECTIVE_H

#include "../model/npt.h"
#include "teacher_cache.h"

typedef struct {
    double loss, fidelity, reg; /* fidelity: mean NMSE (or MSE) for distill, CE for lm */
} ObjectiveValues;

typedef struct {
    int distill;           /* 1: distill, 0: lm */
    int use_mse;           /* distill: plain MSE instead of NMSE */
    float lambda;
    int train_all_weights; /* lm: base weights are parameters (no adapters) */
} ObjectiveConfig;

/* One shard's graphs: the student's (recording; act + grads arenas) and the teacher's
 * (nothing recorded; a scratch arena reset per layer), and with several shards its own
 * view of the adapters whose gradients go to its own buffer. */
typedef struct {
    Arena act, grads, scratch;
    Graph student, teacher;
    NptModel npt;        /* shards > 1: a view of the adapters, gradients into grad_buf */
    float *grad_buf;
} ObjectiveShard;

/* A shard's part of a micro-batch's cache plan (distillation only). */
typedef struct {
    TeacherCache *cache;
    const int64_t *window_ids;
    const CacheAction *actions;
} ObjectiveCache;

/* What one micro-batch step needs, sized once for B x T. With n_shards > 1 the B
 * sequences are split into n_shards equal parts run side by side, one thread each
 * (OpenBLAS runs single-threaded inside them): sgemm on one core is more efficient on
 * these skinny shapes than one sgemm split over two, and the elementwise passes need no
 * synchronisation. The shard gradients are summed into npt->grads in shard order, so a
 * run is deterministic for a given shard count. */
typedef struct {
    int n_shards, B, T;
    int forward_only;      /* set by the caller: record nothing, compute the loss only */
    TeacherCache *teacher_cache; /* set by the caller (distill): teacher states kept across epochs; NULL = none */
    CacheAction *actions;  /* [B]: this micro-batch's cache plan */
    ObjectiveShard *shards;
} ObjectiveRunner;

/* Shards for a step of B sequences on the current OpenMP thread count: the thread count
 * when the objective is distillation into NPT adapters and it divides B, else 1. */
int objective_auto_shards(const ObjectiveConfig *oc, const NptModel *npt, int B);
/* Arenas and graphs for micro-batches of B x T (npt may be NULL: lm objective without
 * adapters); n_shards > 1 needs oc->distill, npt and B % n_shards == 0. */
int objective_init(ObjectiveRunner *r, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc, int B, int T,
                   int n_shards, NptErr *err);
void objective_free(ObjectiveRunner *r);

/* Forward + backward of one micro-batch of r->B x r->T tokens (with shards, npt must
 * have the adapter shape given to objective_init); gradients accumulate into
 * npt->grads (or the base weights' for lm with train_all_weights) scaled by grad_scale.
 * window_ids: the windows' ids, for r->teacher_cache (may be NULL: no caching).
 * poison: test hook making this batch non-finite (it bypasses the cache). Returns the
 * loss (may be non-finite: the caller skips such batches). The backward is skipped when
 * the loss is not finite. */
ObjectiveValues objective_step(ObjectiveRunner *r, const LlamaModel *m, const NptModel *npt, const ObjectiveConfig *oc,
                               const int *tokens, const int64_t *window_ids, float grad_scale, int poison);

#endif
