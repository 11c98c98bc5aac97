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

/* out (C, B, HW); mean, rstd (B, G) saved for backward; inp (C, B, HW);
 * weight, bias (C,). */
void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int B, int C, int HW, int G,
                       float eps, int silu);

/* dinp (C, B, HW) += ...; dweight, dbias (C,) += ...; scratch: 2*B*C floats
 * (per-sample partial sums, reduced over b in order so the result is the same
 * at any thread count); dout (C, B, HW). */
void groupnorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* bias, const float* mean, const float* rstd, int B, int C,
                        int HW, int G, int silu);

/* Scratch floats groupnorm_backward needs. */
static inline int groupnorm_scratch_floats(int B, int C) { return 2 * B * C; }

#endif /* DDPM_GROUPNORM_H */
