/* tests/bench/sgemm_census.c — where a training step's time goes, sgemm against the rest.
 *
 * An LD_PRELOAD library for `make bench`: it wraps cblas_sgemm, times every call on the
 * calling thread and sums time and FLOPs per call shape. bench_step finds the two entry
 * points below with dlsym and brackets its timed steps with them, so warm-up steps are
 * not counted. With the step's wall time and busy cores from the same run, this splits
 * the step's core time into OpenBLAS (its packing, zeroing and kernel) and everything
 * else (npt's own loops), which bounds what any change outside sgemm can still gain.
 *
 * Timing uses CLOCK_MONOTONIC (a vDSO call, tens of nanoseconds; a step makes about
 * 20,000 sgemm calls), so a call's time is core time only while its thread is not
 * preempted: an idle machine is assumed, as for the rest of the bench. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                        const blasint, const blasint, const float, const float *, const blasint, const float *,
                        const blasint, const float, float *, const blasint);

enum { MAX_SHAPES = 1024 };

typedef struct {
    int ta, tb, m, n, k;
    long calls;
    double seconds, flops;
} ShapeTotals;

static ShapeTotals shapes[MAX_SHAPES];
static int n_shapes, overflowed, counting;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static SgemmFn real_sgemm(void) {
    static SgemmFn real;
    if (!real) {
        *(void **)&real = dlsym(RTLD_NEXT, "cblas_sgemm");
        if (!real) {
            fprintf(stderr, "sgemm_census: cblas_sgemm not found after the census library (%s)\n", dlerror());
            abort(); /* inside a BLAS call there is no error path back to the caller */
        }
    }
    return real;
}

static void add_call(int ta, int tb, int m, int n, int k, double seconds) {
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < n_shapes && !(shapes[i].ta == ta && shapes[i].tb == tb && shapes[i].m == m && shapes[i].n == n &&
                             shapes[i].k == k))
        i++;
    if (i == n_shapes) {
        if (n_shapes == MAX_SHAPES) {
            overflowed = 1, i = MAX_SHAPES - 1; /* counted, under the last shape's name */
        } else {
            shapes[n_shapes++] = (ShapeTotals){.ta = ta, .tb = tb, .m = m, .n = n, .k = k};
        }
    }
    shapes[i].calls++;
    shapes[i].seconds += seconds;
    shapes[i].flops += 2.0 * m * n * k;
    pthread_mutex_unlock(&lock);
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A, const blasint lda,
                 const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    SgemmFn real = real_sgemm();
    if (!__atomic_load_n(&counting, __ATOMIC_RELAXED)) {
        real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    double t0 = now();
    real(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    add_call(ta == CblasTrans, tb == CblasTrans, M, N, K, now() - t0);
}

/* Forget what was counted so far and count from now on. */
void sgemm_census_start(void) {
    pthread_mutex_lock(&lock);
    n_shapes = overflowed = 0;
    pthread_mutex_unlock(&lock);
    __atomic_store_n(&counting, 1, __ATOMIC_RELAXED);
}

static int by_time(const void *a, const void *b) {
    double x = ((const ShapeTotals *)a)->seconds, y = ((const ShapeTotals *)b)->seconds;
    return (x < y) - (x > y);
}

/* Stop counting; one key=value line with the totals per step, then one per shape,
 * costliest first (at most `top`). */
void sgemm_census_report(FILE *out, int steps, int top) {
    __atomic_store_n(&counting, 0, __ATOMIC_RELAXED);
    pthread_mutex_lock(&lock);
    double seconds = 0, flops = 0;
    long calls = 0;
    for (int i = 0; i < n_shapes; i++) seconds += shapes[i].seconds, flops += shapes[i].flops, calls += shapes[i].calls;
    fprintf(out, "kind=census steps=%d sgemm_core_ms=%.1f sgemm_gflop=%.3f calls=%ld shapes=%d%s\n", steps,
            seconds * 1e3 / steps, flops / 1e9 / steps, calls / steps, n_shapes, overflowed ? " overflowed=1" : "");
    qsort(shapes, (size_t)n_shapes, sizeof shapes[0], by_time);
    for (int i = 0; i < n_shapes && i < top; i++) {
        const ShapeTotals *s = &shapes[i];
        fprintf(out, "kind=census_shape op=%s%s m=%d n=%d k=%d calls=%.0f core_ms=%.2f gflop=%.3f gflops=%.1f\n",
                s->ta ? "T" : "N", s->tb ? "T" : "N", s->m, s->n, s->k, (double)s->calls / steps,
                s->seconds * 1e3 / steps, s->flops / 1e9 / steps, s->seconds > 0 ? s->flops / s->seconds / 1e9 : 0.0);
    }
    pthread_mutex_unlock(&lock);
}
