/*
 * wino_f4_steps.h - what wino_f4.c and wino_f4_planes.c share: the 1-D
 * steps of F(4x4, 3x3) (B^T, A^T and A on six or four streams), 8-lane
 * vectors for shuffles, and the plane-lane transforms wino_f4_planes.c
 * offers wino_f4.  Internal to layers/.
 */
#ifndef DDPM_WINO_F4_STEPS_H
#define DDPM_WINO_F4_STEPS_H

#include <stdint.h>
#include "layers/winograd.h"

static inline int tiles4(int n) { return (n + 3) / 4; }

#if defined(__GNUC__) && !defined(DDPM_NO_VECTOR_EXT)
/* 8 float lanes and a lane index, for __builtin_shuffle: one or two
 * permutes in an AVX2 or AVX-512 clone.  (16-lane vectors ran 2x slower
 * than the scalar code in an AVX2 clone, which has no 16-lane permute.)
 * The baseline clone would emulate them, so the vector paths are taken
 * only where the CPU has AVX2 (f4_vec). */
typedef float f4_v8 __attribute__((vector_size(32)));
typedef int32_t f4_i8 __attribute__((vector_size(32)));
#define F4_SHUFFLE 1

static inline int f4_vec(void) { return __builtin_cpu_supports("avx2"); }
#else
static inline int f4_vec(void) { return 0; }   /* no vector extensions: the scalar paths */
#endif

/* ---- the 1-D steps */

/* Each 1-D step takes its streams as separate restrict pointers (one base
 * pointer with runtime offsets kept GCC from vectorising: it cannot rule out
 * overlaps between the streams). */
#define F4_P4(p, s) (p), (p) + (s), (p) + 2 * (s), (p) + 3 * (s)
#define F4_P6(p, s) F4_P4(p, s), (p) + 4 * (s), (p) + 5 * (s)
#define F4_OUT6 float* restrict o0, float* restrict o1, float* restrict o2, \
    float* restrict o3, float* restrict o4, float* restrict o5
#define F4_OUT4 float* restrict o0, float* restrict o1, float* restrict o2, float* restrict o3
#define F4_IN6 const float* restrict d0, const float* restrict d1, const float* restrict d2, \
    const float* restrict d3, const float* restrict d4, const float* restrict d5
#define F4_IN4 const float* restrict d0, const float* restrict d1, const float* restrict d2, \
    const float* restrict d3

/* o_i = (B^T d)_i, i = 0..5, elementwise over k = 0..nt-1 */
static inline __attribute__((always_inline)) void bt6(F4_OUT6, F4_IN6, int nt) {
    for (int k = 0; k < nt; k++) {
        const float e = d3[k] - d1[k], c = d4[k] - d2[k];
        o0[k] = ((d0[k] - d2[k]) + c) + 1.5f * e;
        o1[k] = (d4[k] - d1[k]) + (0.5f * d2[k] + 2.5f * d3[k]);
        o2[k] = (d4[k] + d1[k]) - (2.5f * d2[k] - 0.5f * d3[k]);
        o3[k] = c + 2.0f * e;
        o4[k] = c - 0.5f * e;
        o5[k] = ((d5[k] - d3[k]) - e) + 1.5f * c;
    }
}

/* o_i = (A^T m)_i, i = 0..3, from m = d0..d5 */
static inline __attribute__((always_inline)) void at6(F4_OUT4, F4_IN6, int nt) {
    for (int k = 0; k < nt; k++) {
        const float p = d1[k] + d2[k], q = d1[k] - d2[k];
        o0[k] = (d0[k] + p) + (d3[k] + d4[k]);
        o1[k] = q + (0.5f * d3[k] - 2.0f * d4[k]);
        o2[k] = p + (0.25f * d3[k] + 4.0f * d4[k]);
        o3[k] = (q + (0.125f * d3[k] - 8.0f * d4[k])) + d5[k];
    }
}

/* o_i = (A y)_i, i = 0..5, from y = d0..d3 (the adjoint of at6) */
static inline __attribute__((always_inline)) void a4(F4_OUT6, F4_IN4, int nt) {
    for (int k = 0; k < nt; k++) {
        const float e = d0[k] + d2[k], f = d1[k] + d3[k];
        o0[k] = d0[k];
        o1[k] = e + f;
        o2[k] = e - f;
        o3[k] = (d0[k] + 0.25f * d2[k]) + 0.5f * (d1[k] + 0.25f * d3[k]);
        o4[k] = (d0[k] + 4.0f * d2[k]) - 2.0f * (d1[k] + 4.0f * d3[k]);
        o5[k] = d3[k];
    }
}

/* ---- plane lanes (wino_f4_planes.c) */

/* Planes of at most F4_PLANE_MAX x F4_PLANE_MAX pixels go through the
 * convolution chunks (forward, input gradient) in plane lanes: F4_PL planes
 * side by side, a chunk's P whole planes of a channel numbered tile-major,
 * k = t P + p for tile t = ty tw + tx of plane p.  The GEMMs do not care in
 * which order the tiles come; each value is the same sum as in the
 * row-by-row transforms, only moved differently. */
#define F4_PL 8
#define F4_PLANE_MAX 8

/* V[xi xs + t P + p] (plane_major: V[xi xs + p nt + t], nt tiles a plane)
 * = B^T d B for the tiles of planes b0 .. b0 + P - 1 of x (B, H, W), read
 * through act (or NULL). */
void f4_input_planes(float* V, size_t xs, const float* x, const NormAct* act, int H, int W,
                     int b0, int P, int plane_major);

/* Planes b0 .. b0 + P - 1 of y (B, H, W) = (base + start) + A^T m A for
 * m[xi xs + t P + p]; base may be y or NULL, as for WinoKind.output. */
void f4_output_planes(float* y, const float* base, const float* M, size_t xs,
                      const WinoStart* st, int H, int W, int b0, int P);

/* dM[xi xs + p nt + t] = A dy A^T of the 4x4 blocks (zeros beyond H, W) of
 * planes b0 .. b0 + P - 1 of dy (B, H, W). */
void f4_output_adjoint_planes(float* dM, size_t xs, const float* dy, int H, int W, int b0,
                              int P);

#endif /* DDPM_WINO_F4_STEPS_H */
