/* exp for float and double, written so that a loop calling it vectorizes: no branches, no calls,
 * no float-to-int conversion (the libm expf / exp it replaces are scalar calls, 10-20 times
 * slower per element than NumPy's SIMD exp, and softmax and sigmoid are bound by them).
 *
 *   exp(x) = 2^n exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
 *
 * n is rounded by adding 1.5 * 2^(mantissa bits), which also leaves n in the sum's low bits; r
 * is x - n ln 2 with ln 2 in two parts (the first has trailing zero bits, so n times it is exact);
 * exp(r) is its Taylor polynomial to r^7 (float) / r^13 (double), whose truncation error is below
 * 0.05 ulp on that interval; 2^n is applied as two powers of two built from their bits, so that
 * results in the subnormal range are rounded once, as the true value would be. Inputs are
 * clamped first to where exp overflows (+inf) or underflows to 0; a NaN passes the clamps (its
 * comparisons are false) and through the arithmetic, and comes out NaN.
 *
 * Accuracy, measured by tests/test_exp.py over every float32 exponent and sign and against
 * long double: at most 1 ulp from the correctly rounded result in float and double alike,
 * special values exact: exp(-inf) = 0, exp(+inf) = +inf, exp(NaN) = NaN,
 * overflow to +inf, underflow through the subnormals to 0.
 */
#ifndef FASTBP_VEXP_H
#define FASTBP_VEXP_H

#include <stdint.h>
#include <string.h>

static inline __attribute__((always_inline)) float fastbp_exp1_f32(float x)
{
    const float hi = 89.0f, lo = -104.0f; /* exp(89) > FLT_MAX; exp(-104) < half the least subnormal */
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer, kept in the low bits */
    const float t = x * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    uint32_t bits; /* unsigned and implementation-defined conversions only: a NaN's bits must not overflow */
    memcpy(&bits, &t, sizeof bits);
    const int32_t k = (int32_t)(bits - 0x4B400000u); /* n as an integer, in [-150, 128] */
    /* ln 2 = 0.693359375 - 2.12194440e-4 (Cephes): n * 0.693359375 is exact */
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^k = 2^k1 2^k2, both normal (k1, k2 in [-75, 64]) */
    const int32_t k1 = k >> 1, k2 = k - k1;
    const uint32_t b1 = (uint32_t)(k1 + 127) << 23, b2 = (uint32_t)(k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}

static inline __attribute__((always_inline)) double fastbp_exp1_f64(double x)
{
    const double hi = 710.0, lo = -746.0; /* exp(710) > DBL_MAX; exp(-746) < half the least subnormal */
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double t = x * 1.4426950408889634074 + shifter;
    const double n = t - shifter;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    const int64_t k = (int64_t)(bits - UINT64_C(0x4338000000000000)); /* in [-1077, 1025] */
    /* ln 2 in two parts (fdlibm's): the first has 32 trailing zero bits, n times it is exact */
    const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const int64_t k1 = k >> 1, k2 = k - k1; /* both in [-539, 513]: normal */
    const uint64_t b1 = (uint64_t)(k1 + 1023) << 52, b2 = (uint64_t)(k2 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}

#endif
