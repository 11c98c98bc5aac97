/*
 * groupnorm.h - group normalisation over channel-major activations, with an
 * optional fused SiLU (the ResNet block's "norm, then act" in one pass).
 *
 * x (C, B, HW); G groups of C/G channels; statistics per (b, g) over C/G * HW
 * values.  y = (x - mean) * rstd * weight[c] + bias[c]; out = y, or silu(y).
 * The backward recomputes y from x and the saved statistics instead of
 * keeping another activation-sized buffer.
 *
 * The norm (+ SiLU) can also be left unapplied: groupnorm_coeffs gives each
 * (channel, sample) its two numbers a, k, and a consumer that copies its
 * input anyway (a convolution's input staging) reads x through them with
 * groupnorm_act, the forward's own formula, so it gets the same bits without
 * the output ever being written.
 */
#ifndef DDPM_GROUPNORM_H
#define DDPM_GROUPNORM_H

#include <stddef.h>
#include "core/common.h"   /* ddpm_expf */
#include "core/wide.h"     /* ddpm_silu_affine_row_wide */

/* GroupNorm (+ SiLU) as per-(channel, sample) coefficients: x of channel c,
 * sample b becomes groupnorm_act(x, a[c B + b], k[c B + b], silu).  A view
 * of one channel has a, k pointing at its B numbers. */
typedef struct {
    const float* a;   /* (C, B) rstd * weight[c] */
    const float* k;   /* (C, B) bias[c] - mean * a */
    int silu;
} NormAct;

/* a, k of channel weight w, bias bb for the group's mean m, rstd r */
static inline void groupnorm_coeff(float m, float r, float w, float bb, float* a, float* k) {
    *a = r * w;
    *k = bb - m * *a;
}

/* y = x a + k, and silu(y) = y sigmoid(y) with silu: the forward's output */
static inline float groupnorm_act(float x, float a, float k, int silu) {
    const float y = x * a + k;
    return silu ? y * (1.0f / (1.0f + ddpm_expf(-y))) : y;
}

#ifdef DDPM_LANES_VECTOR
/* *o = groupnorm_act(*x, a, k, 1) lane by lane (a, k per lane): the same
 * operations as groupnorm_act, so the same bits.  Callers take several
 * vectors per iteration (ddpm_expf8 says why). */
static inline __attribute__((always_inline)) void groupnorm_silu8(ddpm_f8* o, const ddpm_f8* x,
                                                                  const ddpm_f8* a,
                                                                  const ddpm_f8* k) {
    const ddpm_f8 y = *x * *a + *k;
    ddpm_f8 e = -y;
    ddpm_expf8(&e, &e);
    *o = y * (1.0f / (1.0f + e));
}

/* dst[0..32) = groupnorm_silu8 of src[0..32) as four vectors, side by side
 * (dst may be src) */
static inline __attribute__((always_inline)) void groupnorm_silu32(float* dst, const float* src,
                                                                   const ddpm_f8* a,
                                                                   const ddpm_f8* k) {
    ddpm_f8 v0, v1, v2, v3;
    DDPM_LOAD8(v0, src);
    DDPM_LOAD8(v1, src + 8);
    DDPM_LOAD8(v2, src + 16);
    DDPM_LOAD8(v3, src + 24);
    groupnorm_silu8(&v0, &v0, a, k);
    groupnorm_silu8(&v1, &v1, a, k);
    groupnorm_silu8(&v2, &v2, a, k);
    groupnorm_silu8(&v3, &v3, a, k);
    memcpy(dst, &v0, sizeof v0);
    memcpy(dst + 8, &v1, sizeof v1);
    memcpy(dst + 16, &v2, sizeof v2);
    memcpy(dst + 24, &v3, sizeof v3);
}
#endif

/* dst[0..n) = groupnorm_act(src[0..n), a, k, silu): one row, a loop per
 * case so each vectorises (inlined into the callers' SIMD clones); SiLU four
 * vectors at a time, the same bits. */
static inline __attribute__((always_inline)) void groupnorm_act_row(float* restrict dst,
                                                                    const float* restrict src,
                                                                    int n, float a, float k,
                                                                    int silu) {
    if (silu) {
        int i = 0;
        if (n >= 16) {
            float a16[16], k16[16];
            for (int j = 0; j < 16; j++) a16[j] = a, k16[j] = k;
            i = ddpm_silu_affine_row_wide(dst, src, n, a16, k16);   /* AVX-512 */
        }
#ifdef DDPM_LANES_VECTOR
        const ddpm_f8 av = {a, a, a, a, a, a, a, a}, kv = {k, k, k, k, k, k, k, k};
        ddpm_f8 v0;
        for (; i + 32 <= n; i += 32) groupnorm_silu32(dst + i, src + i, &av, &kv);
        for (; i + 8 <= n; i += 8) {
            DDPM_LOAD8(v0, src + i);
            groupnorm_silu8(&v0, &v0, &av, &kv);
            memcpy(dst + i, &v0, sizeof v0);
        }
#endif
        for (; i < n; i++) dst[i] = groupnorm_act(src[i], a, k, 1);
    } else {
        for (int i = 0; i < n; i++) dst[i] = groupnorm_act(src[i], a, k, 0);
    }
}

/* out (C, B, HW); mean, rstd (B, G) saved for backward; inp (C, B, HW);
 * weight, bias (C,). */
void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int B, int C, int HW, int G,
                       float eps, int silu);

/* The forward without its output: mean, rstd (B, G) as groupnorm_forward
 * saves them, a, k (C, B) as NormAct holds them. */
void groupnorm_coeffs(float* a, float* k, float* mean, float* rstd, const float* inp,
                      const float* weight, const float* bias, int B, int C, int HW, int G,
                      float eps);

/* dinp (C, B, HW) += ... (accumulate 1) or = ... (accumulate 0, its old
 * contents never read); dweight, dbias (C,) += ...; scratch:
 * groupnorm_scratch_floats(B, C, HW, G) floats (per-sample partial sums,
 * reduced over b in order so the result is the same at any thread count,
 * then one (C/G, HW) buffer per thread for the pre-SiLU gradient); dout
 * (C, B, HW).  At most GN_LANES threads. */
void groupnorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* bias, const float* mean, const float* rstd, int B, int C,
                        int HW, int G, int silu, int accumulate);

#define GN_LANES 16

/* Scratch floats groupnorm_backward needs. */
static inline size_t groupnorm_scratch_floats(int B, int C, int HW, int G) {
    return 2 * (size_t)B * C + (size_t)GN_LANES * (C / G) * HW;
}

#endif /* DDPM_GROUPNORM_H */
