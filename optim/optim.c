/* optim/optim.c — AdamW, SGD, clipping and schedules (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN 16384

int optim_init(Optimizer *o, OptimKind kind, float *params, float *grads, size_t n, NptErr *err) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->beta1 = 0.9f, o->beta2 = 0.999f, o->eps = 1e-8f;
    o->params = params, o->grads = grads, o->n = n;
    o->m = npt_aligned_alloc(n * sizeof(float), "optimizer first moment", err);
    o->v = npt_aligned_alloc(n * sizeof(float), "optimizer second moment", err);
    if (!o->m || !o->v) {
        optim_free(o);
        return -1;
    }
    memset(o->m, 0, n * sizeof(float));
    memset(o->v, 0, n * sizeof(float));
    return 0;
}

void optim_free(Optimizer *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

void optim_step(Optimizer *o, float lr) {
    o->step++;
    float *p = o->params, *g = o->grads, *m = o->m, *v = o->v;
    size_t n = o->n;
    if (o->kind == OPTIM_SGD) {
        float mu = o->momentum, wd = o->weight_decay;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            m[i] = mu * m[i] + g[i];
            p[i] -= lr * (m[i] + wd * p[i]);
        }
        return;
    }
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
    float bc1 = 1.0f - powf(b1, (float)o->step), bc2 = 1.0f - powf(b2, (float)o->step);
    float step_size = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] -= lr * wd * p[i]; /* decoupled: decay does not pass through the moments */
        p[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
    }
}

/* Sums of squares of fixed blocks, added in block order: the same double for any thread
 * count. An OpenMP reduction would split the sum by thread, and the ranks of an MPI run
 * (train/dist.h), each computing this norm of the same summed gradients, may run with
 * different thread counts: one ulp apart, their clipped updates would drift apart. */
double grad_global_norm(const float *grads, size_t n) {
    enum { BLOCK = 4096 };
    size_t n_blocks = (n + BLOCK - 1) / BLOCK;
    double *part = npt_xmalloc((n_blocks ? n_blocks : 1) * sizeof(double), "gradient norm blocks");
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t b = 0; b < n_blocks; b++) {
        size_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        double ss = 0.0;
        for (size_t i = b * BLOCK; i < end; i++) ss += (double)grads[i] * grads[i];
        part[b] = ss;
    }
    double ss = 0.0;
    for (size_t b = 0; b < n_blocks; b++) ss += part[b];
    free(part);
    return sqrt(ss);
}

float grad_clip(float *grads, size_t n, double norm, float max_norm) {
    if (max_norm <= 0.0f || norm <= max_norm) return 1.0f;
    float f = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) grads[i] *= f;
    return f;
}

int optim_update(Optimizer *o, double loss, float lr, float max_norm, double *norm, float *factor) {
    *norm = isfinite(loss) ? grad_global_norm(o->grads, o->n) : NAN; /* no pass over a batch already lost */
    double applied = max_norm > 0 && *norm > max_norm ? max_norm : *norm;
    if (!isfinite(*norm) || isinf((float)(applied * applied))) return 1;
    float f = grad_clip(o->grads, o->n, *norm, max_norm);
    if (factor) *factor = f;
    optim_step(o, lr);
    return 0;
}

float schedule_lr(const Schedule *s, int64_t step) {
    if (s->warmup_steps > 0 && step < s->warmup_steps) return s->base_lr * (float)(step + 1) / (float)s->warmup_steps;
    if (s->kind == SCHED_CONSTANT) return s->base_lr;
    int64_t span = s->total_steps - s->warmup_steps;
    double t = span > 0 ? (double)(step - s->warmup_steps) / (double)span : 1.0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double floor_lr = s->base_lr * s->min_lr_ratio;
    double shape = s->kind == SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * t)) : 1.0 - t;
    return (float)(floor_lr + (s->base_lr - floor_lr) * shape);
}
