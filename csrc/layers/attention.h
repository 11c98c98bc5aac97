/*
 * attention.h - multi-head self-attention over the H*W positions of a
 * channel-major feature map (the core between the q/k/v and output projections).
 *
 * Legend: B batch, C channels, HW positions, NH heads, hd = C/NH channels per
 * head (head h owns channels h*hd .. h*hd + hd - 1, as diffusers splits them).
 * qkv (3C, B, HW): q in rows 0..C-1, k in C..2C-1, v in 2C..3C-1.
 *   S = q_h^T k_h / sqrt(hd)   (HW, HW) per (b, h);  P = softmax over keys;
 *   o_h = v_h P^T              (hd, HW).
 * One task per (b, h), disjoint writes.  The forward's products and softmax are
 * ddpm's own loops along the queries (each element summed in one fixed order);
 * the backward's are single-threaded SGEMM calls on strided panels (OpenBLAS
 * is one-threaded inside our pool).
 */
#ifndef DDPM_ATTENTION_H
#define DDPM_ATTENTION_H

#include <stddef.h>

/* Threads an attention forward without keep uses at most: each reuses one
 * (HW, HW) slot of its scratch, min(B NH, ATTN_SLOTS) slots. */
#define ATTN_SLOTS 8
static inline size_t attention_scratch_floats(int B, int NH, int HW) {
    const size_t tasks = (size_t)B * NH;
    return (tasks < ATTN_SLOTS ? tasks : ATTN_SLOTS) * HW * HW;
}

/* out (C, B, HW).  With keep, att (B, NH, HW, HW) receives the probabilities
 * P, saved for backward; without, att is scratch of
 * attention_scratch_floats(B, NH, HW) floats, each thread's P in one slot,
 * where it stays in the core's cache (writing all B NH of them was 4.9 MB a
 * call at B = 32, 7x7, 16 heads). */
void attention_forward(float* out, float* att, const float* qkv, int B, int C, int HW, int NH,
                       int keep);

/* dqkv (3C, B, HW) += ... (accumulate 1) or = ... (accumulate 0, its old
 * contents never read); scratch (B, NH, HW, HW) floats; dout (C, B, HW). */
void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int C, int HW, int NH, int accumulate);

#endif /* DDPM_ATTENTION_H */
