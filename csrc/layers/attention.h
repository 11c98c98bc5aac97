/*
 * attention.h - multi-head self-attention over the H*W positions of a
 * channel-major feature map (the core between the q/k/v and output projections).
 *
 * Legend: B batch, C channels, HW positions, NH heads, hd = C/NH channels per
 * head (head h owns channels h*hd .. h*hd + hd - 1, as diffusers splits them).
 * qkv (3C, B, HW): q in rows 0..C-1, k in C..2C-1, v in 2C..3C-1.
 *   S = q_h^T k_h / sqrt(hd)   (HW, HW) per (b, h);  P = softmax over keys;
 *   o_h = v_h P^T              (hd, HW).
 * One task per (b, h), disjoint writes; its small products are single-threaded
 * SGEMM calls on strided panels (OpenBLAS is one-threaded inside our pool).
 */
#ifndef DDPM_ATTENTION_H
#define DDPM_ATTENTION_H

/* out (C, B, HW); att (B, NH, HW, HW): with keep, the probabilities P,
 * saved for backward; without, scratch of which each thread reuses one
 * (HW, HW) slot (a P that stays in its core's cache: writing all B NH of
 * them was 4.9 MB a call at B = 32, 7x7, 16 heads). */
void attention_forward(float* out, float* att, const float* qkv, int B, int C, int HW, int NH,
                       int keep);

/* dqkv (3C, B, HW) += ... (accumulate 1) or = ... (accumulate 0, its old
 * contents never read); scratch (B, NH, HW, HW) floats; dout (C, B, HW). */
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int C, int HW, int NH, int accumulate);

#endif /* DDPM_ATTENTION_H */
