/* train/objective.h — the losses of one micro-batch (SPEC section 3), built on the tape.
 *
 * distill: the teacher (frozen base, nothing recorded) runs every layer once; layers
 * below the first converted layer are shared: their output is the student's input.
 * The student runs from the first converted layer up, NPT where converted, and its
 * residual output at every compared layer is held against the teacher's:
 *   loss = mean_l NMSE(hS_l, hT_l) + lambda * mean_{NPT l} reg_l
 * No logits are computed. lm: next-token cross-entropy through the student. */
#ifndef NPT_OBJECTIVE_H
#define NPT_OBJECTIVE_H

#include "../model/npt.h"

typedef struct {
    double loss, fidelity, reg; /* fidelity: mean NMSE (or MSE) for distill, CE for lm */
} ObjectiveValues;

typedef struct {
    int distill;           /* 1: distill, 0: lm */
    int use_mse;           /* distill: plain MSE instead of NMSE */
    float lambda;
    int train_all_weights; /* lm: base weights are parameters (no adapters) */
} ObjectiveConfig;

typedef struct {
    Graph *student;        /* recording graph (act + grads arenas) */
    Graph *teacher;        /* non-recording graph over a scratch arena reset per layer */
} ObjectiveGraphs;

/* Forward + backward of one micro-batch; gradients accumulate scaled by grad_scale.
 * poison: test hook making this batch non-finite. Returns the loss (may be non-finite:
 * the caller skips such batches). The backward is skipped when the loss is not finite. */
ObjectiveValues objective_step(ObjectiveGraphs *gr, const LlamaModel *m, const NptModel *npt,
                               const ObjectiveConfig *oc, const int *tokens, int B, int T, float grad_scale,
                               int poison);

#endif
