/* tests/test_optim.c — optimizers, schedules and clipping against values derived by
 * hand from their textbook definitions (AdamW: Loshchilov & Hutter; the schedule
 * formulas in optim.h). */
#include <math.h>

#include "optim/optim.h"
#include "test.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(1.0, fabs(b)); }

int main(void) {
    NptErr err;
    /* AdamW, two steps on one parameter with gradients 0.5 then -0.25, lr 0.1, wd 0.01.
     * Step 1: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25 -> update 0.1 * 0.5/0.5 = 0.1;
     * decay first: p = 1 - 0.1*0.01*1 = 0.999, then 0.899.
     * Step 2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225,
     * m_hat = 0.02/0.19 = 0.105263, v_hat = 0.00031225/0.001999 = 0.156203,
     * p = 0.899 * (1 - 0.001) - 0.1 * 0.105263 / 0.395225 = 0.898101 - 0.026634 = 0.871467 */
    float p = 1.0f, g = 0.5f;
    Optimizer o;
    if (optim_init(&o, OPTIM_ADAMW, &p, &g, 1, &err)) return 1;
    o.weight_decay = 0.01f;
    optim_step(&o, 0.1f);
    check(close_to(p, 0.899, 1e-6), "AdamW step 1 matches the hand-derived 0.899 (got %.7f)", p);
    g = -0.25f;
    optim_step(&o, 0.1f);
    check(close_to(p, 0.871467, 2e-6), "AdamW step 2 with bias correction matches 0.871467 (got %.7f)", p);
    optim_free(&o);

    /* SGD with momentum 0.9: buf = g; p -= lr * buf; then buf = 0.9 * buf + g */
    float q = 1.0f, gq = 1.0f;
    if (optim_init(&o, OPTIM_SGD, &q, &gq, 1, &err)) return 1;
    o.momentum = 0.9f;
    optim_step(&o, 0.1f);
    optim_step(&o, 0.1f);
    check(close_to(q, 1.0 - 0.1 - 0.19, 1e-6), "SGD momentum: two steps give 0.71 (got %.7f)", q);
    optim_free(&o);

    /* global norm in double, clipping to max_norm */
    float gr[3] = {3.0f, 4.0f, 0.0f};
    double norm = grad_global_norm(gr, 3);
    check(norm == 5.0, "global norm of (3,4,0) is 5 (got %g)", norm);
    grad_clip(gr, 3, norm, 1.0f);
    check(close_to(gr[0], 0.6, 1e-5) && close_to(gr[1], 0.8, 1e-5), "clipped to norm 1: (%.6f, %.6f)", gr[0], gr[1]);
    float nan_g[2] = {1.0f, NAN};
    check(isnan(grad_global_norm(nan_g, 2)), "a NaN gradient gives a NaN norm (so the step is skipped)");

    /* schedules: warmup 10 to lr 1.0, then decay to 0.1 at step 110 */
    Schedule s = {.kind = SCHED_COSINE, .base_lr = 1.0f, .min_lr_ratio = 0.1f, .warmup_steps = 10, .total_steps = 110};
    check(close_to(schedule_lr(&s, 0), 0.1, 1e-6) && close_to(schedule_lr(&s, 9), 1.0, 1e-6), "linear warmup 0.1 .. 1.0");
    check(close_to(schedule_lr(&s, 60), 0.55, 1e-6), "cosine halfway: 0.1 + 0.9 * 0.5 = 0.55 (got %g)", schedule_lr(&s, 60));
    check(close_to(schedule_lr(&s, 110), 0.1, 1e-6), "cosine ends at min_lr_ratio (got %g)", schedule_lr(&s, 110));
    s.kind = SCHED_LINEAR;
    check(close_to(schedule_lr(&s, 35), 0.775, 1e-6), "linear quarter way: 1 - 0.9 * 0.25 = 0.775 (got %g)", schedule_lr(&s, 35));
    s.kind = SCHED_CONSTANT;
    check(schedule_lr(&s, 100) == 1.0f, "constant after warmup");
    return test_finish();
}
