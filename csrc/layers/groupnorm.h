/*
 * groupnorm.h - group normalisation over channel-major activations, with an
 * optional fused SiLU (the ResNet block's "norm, then act" in one pass).
 *
 * x (C, B, HW); G groups of C/G channels; statistics per (b, g) over C/G * HW
 * values.  y = (x - mean) * rstd * weight[c] + bias[c]; out = y, or silu(y).
 * The backward recomputes y from x and the saved statistics instead of
 * keeping another activation-sized buffer.
 */
#ifndef DDPM_GROUPNORM_H
#define DDPM_GROUPNORM_H

#include <stddef.h>

/* out (C, B, HW); mean, rstd (B, G) saved for backward; inp (C, B, HW);
 * weight, bias (C,). */
void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int B, int C, int HW, int G,
                       float eps, int silu);

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
