/* optim/optim.h — AdamW (decoupled weight decay) and SGD with momentum over a flat
 * parameter vector, learning-rate schedules, and global-norm clipping.
 *
 * The trainer hands the optimizer one contiguous block of parameters and the
 * matching block of gradients (npt.h keeps the adapters that way); the moments are
 * blocks of the same size, so checkpoints save them as plain arrays. */
#ifndef NPT_OPTIM_H
#define NPT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

typedef enum { OPTIM_ADAMW = 0, OPTIM_SGD = 1 } OptimKind;
typedef enum { SCHED_COSINE = 0, SCHED_LINEAR = 1, SCHED_CONSTANT = 2 } ScheduleKind;

typedef struct {
    OptimKind kind;
    float beta1, beta2, eps, weight_decay, momentum;
    float *params, *grads; /* not owned */
    size_t n;
    float *m, *v;          /* AdamW moments (SGD: m = momentum buffer, v unused) */
    int64_t step;          /* updates applied: bias correction uses it */
} Optimizer;

int optim_init(Optimizer *o, OptimKind kind, float *params, float *grads, size_t n, NptErr *err);
void optim_free(Optimizer *o);
/* One update with learning rate lr; the caller has checked the gradients are finite.
 * AdamW: p -= lr wd p, then the Adam step (decoupled decay, Loshchilov & Hutter). SGD:
 * m = momentum m + g (no dampening), p -= lr (m + wd p): the decay is decoupled here too,
 * kept out of the momentum buffer (torch.optim.SGD adds it to g instead). */
void optim_step(Optimizer *o, float lr);

/* sqrt(sum g^2) accumulated in double, the same for any thread count; +Inf or NaN when
 * any gradient is not finite. */
double grad_global_norm(const float *grads, size_t n);
/* Scales gradients so their norm is at most max_norm (0 = off); returns the factor. */
float grad_clip(float *grads, size_t n, double norm, float max_norm);
/* The trainer's update once a batch's gradients are in o->grads: their global norm into
 * *norm, then either a skip (returns 1, nothing changes) or clipping to max_norm and one
 * optim_step at lr (returns 0, the clip factor into *factor when not NULL). Skipped: a
 * non-finite loss or norm, or a clipped norm whose square overflows float32 (AdamW would
 * turn its second moments Inf while every other check passes). */
int optim_update(Optimizer *o, double loss, float lr, float max_norm, double *norm, float *factor);

typedef struct {
    ScheduleKind kind;
    float base_lr, min_lr_ratio;
    int64_t warmup_steps, total_steps;
} Schedule;

/* Learning rate for update number `step` (0-based): linear warmup from base/warmup to
 * base, then cosine or linear decay to base * min_lr_ratio at total_steps, or constant. */
float schedule_lr(const Schedule *s, int64_t step);

#endif
