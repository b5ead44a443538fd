/* tests/test_fastmath.c — npt_expf (util/fastmath.h) against double-precision exp:
 * the error in ulps over a dense sweep of float bit patterns, and the edge cases that the
 * NaN machinery relies on (NaN stays NaN, overflow gives +Inf). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../util/fastmath.h"
#include "test.h"

static float from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* |got - want| in units of the spacing of floats at want (want rounded to float). */
static double ulp_error(float got, double want) {
    float w = (float)want;
    double ulp = (double)nextafterf(fabsf(w), INFINITY) - (double)fabsf(w);
    return fabs((double)got - want) / ulp;
}

int main(void) {
    double worst = 0.0;
    float worst_x = 0.0f;
    long n = 0;
    /* every 61st bit pattern of each sign: all exponents, mantissas densely covered */
    for (int sign = 0; sign < 2; sign++) {
        for (uint32_t b = 0; b < 0x7f800000u; b += 61) {
            float x = from_bits(b | (sign ? 0x80000000u : 0));
            if (x > 88.72f || x < -87.0f) continue;
            double e = ulp_error(npt_expf(x), exp((double)x));
            n++;
            if (e > worst) worst = e, worst_x = x;
        }
    }
    check(worst <= 2.0, "npt_expf within 2 ulp of exp on %ld values in [-87, 88.72] (worst %.3f ulp at x = %.9g)", n, worst,
          worst_x);
    check(npt_expf(0.0f) == 1.0f, "npt_expf(0) == 1 exactly (got %.9g)", npt_expf(0.0f));
    check(isnan(npt_expf(NAN)) && isnan(npt_expf(-NAN)), "NaN in, NaN out (the NaN finder depends on it)");
    check(isinf(npt_expf(INFINITY)) && npt_expf(INFINITY) > 0 && isinf(npt_expf(89.0f)) && isinf(npt_expf(1e30f)),
          "overflow gives +Inf as expf does (89, 1e30, +Inf)");
    check(npt_expf(-INFINITY) == 0.0f && npt_expf(-88.0f) == 0.0f && npt_expf(-1e30f) == 0.0f,
          "-Inf, -88 and -1e30 give 0 (results under 1.7e-38 are flushed)");
    float top = npt_expf(88.72f);
    check(isfinite(top) && ulp_error(top, exp((double)88.72f)) <= 2.0, "largest finite range: expf(88.72) = %.9g (want %.9g)", top,
          exp((double)88.72f));
    return test_finish();
}
