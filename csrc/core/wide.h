/*
 * wide.h - elementwise rows in 16-float vectors, for CPUs with AVX-512F.
 *
 * Offers the rows the hot loops hand over where the CPU has AVX-512F (exp,
 * and the GroupNorm + SiLU of a row), each returning how many elements it
 * did (a multiple of 16; 0 where the CPU lacks AVX-512F or the switch is
 * off) so the caller finishes the tail in its own 8-float vectors.  Each lane
 * runs the operations of the scalar code (ddpm_expf, groupnorm_act) in the
 * same order: the same bits as the 8-float and scalar paths.
 *
 * Why: GCC keeps the 8-float vectors of the cloned loops (ddpm_f8) at 8
 * lanes in their AVX-512 clones, and those ran slower there than in the AVX2
 * clones (a SiLU row: 0.86 ns a float against 0.74); in 16-float vectors
 * 0.54 (an AMD EPYC, Zen 4).
 */
#ifndef DDPM_CORE_WIDE_H
#define DDPM_CORE_WIDE_H

/* Testing: 0 turns the 16-float rows off, 1 on (the default), -1 only asks.
 * Returns whether they ran before the call (0 where the CPU lacks AVX-512F).
 * The one switch of every 16-float path: the layers' own (layers/wino_f4.c's
 * staging) ask it with -1. */
int ddpm_wide(int on);

/* x[i] := ddpm_expf(x[i]) for i < the returned count (n rounded down to 16). */
int ddpm_expf_row_wide(float* x, int n);

/* dst[i] = y sigmoid(y), y = src[i] a16[i % 16] + k16[i % 16], for i < the
 * returned count (n rounded down to 16): groupnorm_act(src[i], a, k, 1) lane
 * by lane (groupnorm.h).  dst may be src. */
int ddpm_silu_affine_row_wide(float* dst, const float* src, int n, const float* a16,
                              const float* k16);

#endif /* DDPM_CORE_WIDE_H */
