/* util/fastmath.h — expf in a form the compiler vectorizes.
 *
 * glibc's expf is a scalar call, so every elementwise loop that uses it (SiLU, sigmoid,
 * the NPT modulation, softmax) runs one element at a time; in the training step those
 * calls cost about as much as all the non-matmul arithmetic together. npt_expf is
 * branch-free straight-line code (Cody-Waite reduction, Cephes' degree-6 polynomial), so
 * GCC turns such loops into AVX2 code. tests/test_fastmath.c checks it against expf. */
#ifndef NPT_FASTMATH_H
#define NPT_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* 2^k for integer k in [-126, 127], built from the exponent bits. */
static inline float npt_pow2i(int32_t k) {
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* e^x within 2 ulp of expf for x in [-87, 88.72]; +Inf above (as expf overflows), 0 below
 * -87 (expf would give values under 1.7e-38, near the denormals), NaN for NaN. */
static inline float npt_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f; /* ln2 = hi + lo, hi exact in 9 bits */
    const float round_magic = 12582912.0f;                       /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x == x ? x : 0.0f;                                /* NaN: computed on 0, replaced at the end */
    xc = xc > 88.72283f ? 88.72283f : xc;
    xc = xc < -87.0f ? -87.0f : xc;
    float k = (xc * log2e + round_magic) - round_magic; /* nearest integer to x / ln2, in [-126, 128] */
    float r = (xc - k * ln2_hi) - k * ln2_lo;             /* |r| <= ln2 / 2 */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ki = (int32_t)k, k1 = ki / 2; /* two factors, so k = 128 does not overflow the exponent */
    float y = p * npt_pow2i(k1) * npt_pow2i(ki - k1);
    y = x > 88.72283f ? INFINITY : y;
    y = x < -87.0f ? 0.0f : y;
    return x == x ? y : x;
}

#endif
