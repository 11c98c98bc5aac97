/*
 * common.h - what every numeric file of the ddpm core shares.
 *
 * Status codes (0 = ok) returned by every numeric function, the one BLAS macro
 * that owns the symbol prefix, SIMD helpers (the AVX2 clone attribute, a
 * vectorisable non-finite test, expf and a fixed-order sum) and the parameter
 * table entry both networks use.  Threads live in threads.h.  Nothing here touches
 * Python: the numeric C is usable (and testable) from plain C.
 */
#ifndef DDPM_COMMON_H
#define DDPM_COMMON_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* ---- status codes: module.c turns each into a Python exception ---- */
enum ddpm_status {
    DDPM_OK = 0,
    DDPM_ERR_VALUE = 1,       /* an argument is out of its documented range   */
    DDPM_ERR_NONFINITE = 2,   /* NaN or Inf found in an input                 */
    DDPM_ERR_NOMEM = 3,       /* an allocation failed                         */
    DDPM_ERR_INTERRUPTED = 4, /* the caller's stop hook asked us to stop      */
    DDPM_ERR_TIMESTEP = 5,    /* a timestep t outside 1..T                    */
    DDPM_ERR_STALE = 6,       /* a backward whose forward is no longer held   */
};

/* ---- BLAS through one macro: the symbol prefix lives here and nowhere else.
 * The scipy-openblas32 wheel exports scipy_cblas_sgemm, scipy_openblas_...;
 * a system OpenBLAS found by pkg-config exports cblas_sgemm, openblas_...
 * setup.py defines BLAS_SYMBOL_PREFIX (as the wheel's pkg-config does). ---- */
#ifndef BLAS_SYMBOL_PREFIX
#define BLAS_SYMBOL_PREFIX
#endif
#define DDPM_CAT_(a, b) a##b
#define DDPM_CAT(a, b) DDPM_CAT_(a, b)
#define BLAS(name) DDPM_CAT(BLAS_SYMBOL_PREFIX, name)

/* ---- SIMD: hot elementwise loops are cloned for AVX2 with a baseline
 * fallback chosen at load time (GCC/Clang on x86-64 with ifunc support).
 * No FMA in the clone list: fused multiply-add would change the bits. ---- */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(DDPM_NO_CLONES)
#define DDPM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DDPM_SIMD_CLONES
#endif

/* ---- NaN/Inf detection that vectorises: a float is non-finite exactly when
 * its exponent bits are all ones.  An integer OR-reduction, unlike a float
 * one, needs no reassociation, so the compiler turns it into SIMD. ---- */
#include <string.h>
static inline uint32_t ddpm_nonfinite_bit(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* 1 when no element of x[0..n) is NaN or Inf (a vectorised OR of the bits). */
static inline int ddpm_all_finite(const float* x, size_t n) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= ddpm_nonfinite_bit(x[i]);
    return !bad;
}

/* ---- exp(x) in float32 that vectorises (libm's expf does not): Cephes'
 * minimax polynomial on x - k ln2, |x - k ln2| <= ln2/2, scaled by 2^k built
 * from exponent bits.  Within 2 ulp of the exact value on [-87, 88]; inputs
 * beyond are clamped (exp(-87) ~ 1.6e-38, far below anything that matters
 * for SiLU or softmax).  Branch-free, so loops calling it stay SIMD. ---- */
/* y := the polynomial at r = x - kf ln2 (in two parts), z = r * r; y holds
 * its leading coefficient on entry.  The same text for float and ddpm_f8
 * (ddpm_expf8), so the same operations in the same order. */
#define DDPM_EXPF_POLY(y, r, z, x, kf)                                           \
    do {                                                                         \
        r = (x) - (kf) * 0.693359375f;                                           \
        r = r - (kf) * -2.12194440e-4f;                                          \
        z = r * r;                                                               \
        y = y * r + 1.3981999507e-3f;                                            \
        y = y * r + 8.3334519073e-3f;                                            \
        y = y * r + 4.1665795894e-2f;                                            \
        y = y * r + 1.6666665459e-1f;                                            \
        y = y * r + 5.0000001201e-1f;                                            \
        y = y * z + r + 1.0f;                                                    \
    } while (0)

static inline float ddpm_expf(float x) {
    x = x < 88.3762626647949f ? x : 88.3762626647949f;
    x = x > -87.3365447504f ? x : -87.3365447504f;
    float fx = x * 1.44269504088896341f + 0.5f;
    /* floor(fx) as a truncation of a positive number (fx >= -125.5): written
     * with a comparison, GCC's AVX2 code turns it into a branch and stops
     * vectorising.  The +128 rounds fx only within ~1e-5 of an integer, where
     * either k keeps r in range (1 in 27 million floats differ, by < 1 ulp). */
    float kf = (float)((int32_t)(fx + 128.0f) - 128);
    float r, z, y = 1.9875691500e-4f;
    DDPM_EXPF_POLY(y, r, z, x, kf);
    uint32_t bits = (uint32_t)((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* ---- parameter layout: named tensors as views into one flat float buffer
 * (the networks' parameters, their gradients and the Adam moments all share
 * one layout; names are diffusers' / PyTorch's) ---- */
#define DDPM_PARAM_NAME_LEN 96
typedef struct {
    char name[DDPM_PARAM_NAME_LEN];
    int ndim;
    int shape[4];
    size_t offset, size;             /* in floats, into the flat buffer */
} ParamTensor;

/* Appends tensor `name` of shape (d0, .., d[ndim-1]) to the table tab
 * (*count used of cap) at the end of the flat buffer (*nparams floats so
 * far); returns its offset, or (size_t)-1 if the table is full. */
static inline size_t param_tensor_add(ParamTensor* tab, int* count, int cap, size_t* nparams,
                                      const char* name, int ndim, int d0, int d1, int d2,
                                      int d3) {
    if (*count >= cap) return (size_t)-1;
    ParamTensor* t = &tab[(*count)++];
    snprintf(t->name, DDPM_PARAM_NAME_LEN, "%s", name);
    t->ndim = ndim;
    const int d[4] = {d0, d1, d2, d3};
    size_t size = 1;
    for (int i = 0; i < 4; i++) {
        t->shape[i] = i < ndim ? d[i] : 1;
        if (i < ndim) size *= (size_t)d[i];
    }
    t->offset = *nparams;
    t->size = size;
    *nparams += size;
    return t->offset;
}

/* ---- 16 float lanes held as two 8-float vectors (GCC/Clang vector
 * extensions: AVX registers in an AVX2 clone, SSE pairs otherwise).  Lane j
 * of a running sum takes elements i + j, i = 0, 16, 32, ...: written as a
 * loop over acc[16], GCC vectorised the loads but added the 16 lanes with
 * scalar instructions, and the group norm's statistics cost as much as its
 * output pass.  Same lanes, same order: the same bits either way. ---- */
#if defined(__GNUC__) && !defined(DDPM_NO_VECTOR_EXT)
#define DDPM_LANES_VECTOR 1
typedef float ddpm_f8 __attribute__((vector_size(32)));
/* v = the 8 floats at p (any alignment); a macro, since a function
 * returning a vector by value draws GCC's ABI note in non-AVX builds */
#define DDPM_LOAD8(v, p) memcpy(&(v), (p), sizeof(ddpm_f8))
typedef int32_t ddpm_i8 __attribute__((vector_size(32)));

/* *e = ddpm_expf of each lane of *x: the same operations in the same order
 * as ddpm_expf (its clamps as bitwise selects, its casts as lane
 * conversions), so the same bits.  For loops that take several vectors per
 * iteration: the polynomial is one long dependent chain, and with one vector
 * per iteration (a vectorised loop of ddpm_expf) too little of it was in
 * flight; four interleaved ran a SiLU'd float in 1.17 ns instead of 1.34 on
 * an AMD EPYC.  Pointers, not vector values, so that non-AVX builds draw no
 * ABI note. */
/* the lanes of *e = ddpm_expf(*x) for vector types F (floats) and I (int32s),
 * x clamped to [lo_, hi_] by CLAMP(v_) */
#define DDPM_SEL(F, I, m, a, b) ((F)(((m) & (I)(a)) | (~(m) & (I)(b))))
#define DDPM_EXPF_LANES(F, I, e, x, CLAMP)                                       \
    do {                                                                         \
        const F hi_ = (F){0} + 88.3762626647949f, lo_ = (F){0} - 87.3365447504f; \
        F v_ = *(x);                                                             \
        CLAMP(v_);                                                               \
        const F fx_ = v_ * 1.44269504088896341f + 0.5f;                          \
        const I ki_ = __builtin_convertvector(fx_ + 128.0f, I) - 128;            \
        const F kf_ = __builtin_convertvector(ki_, F);                           \
        F r_, z_, y_ = (F){0} + 1.9875691500e-4f;                                \
        DDPM_EXPF_POLY(y_, r_, z_, v_, kf_);                                     \
        const I bits_ = (ki_ + 127) << 23;                                       \
        *(e) = y_ * (F)bits_;                                                    \
    } while (0)
/* ddpm_expf's clamps, min(v, hi) then max(v, lo), as bitwise selects */
#define DDPM_CLAMP8(v)                                     \
    do {                                                   \
        v = DDPM_SEL(ddpm_f8, ddpm_i8, v < hi_, v, hi_);   \
        v = DDPM_SEL(ddpm_f8, ddpm_i8, v > lo_, v, lo_);   \
    } while (0)
static inline __attribute__((always_inline)) void ddpm_expf8(ddpm_f8* e, const ddpm_f8* x) {
    DDPM_EXPF_LANES(ddpm_f8, ddpm_i8, e, x, DDPM_CLAMP8);
}

#if defined(__x86_64__) && !defined(DDPM_NO_CLONES)
#include <immintrin.h>
#define DDPM_HAVE_EXPF16 1
/* 16 lanes: ddpm_expf16 as ddpm_expf8, for code compiled for AVX-512 only
 * (target("avx512f")): elsewhere GCC splits these vectors badly (a SiLU row
 * in an AVX2 function ran 2.1x slower than in 8-lane vectors).  The clamps
 * are vminps and vmaxps, which return v < hi ? v : hi and v > lo ? v : lo
 * lane by lane (the second operand for NaN, as the selects): the same bits,
 * and a 16-lane SiLU row 1.5x faster than with the selects. */
typedef float ddpm_f16 __attribute__((vector_size(64)));
typedef int32_t ddpm_i16 __attribute__((vector_size(64)));
#define DDPM_CLAMP16(v) v = (ddpm_f16)_mm512_max_ps(_mm512_min_ps((__m512)v, (__m512)hi_), (__m512)lo_)
static inline __attribute__((always_inline, target("avx512f"))) void ddpm_expf16(ddpm_f16* e,
                                                                                 const ddpm_f16* x) {
    DDPM_EXPF_LANES(ddpm_f16, ddpm_i16, e, x, DDPM_CLAMP16);
}
#endif
#endif

/* Sum of x[0..n): 16 float lanes over blocks of 4096 (so it vectorises and the
 * rounding stays small), the lanes and blocks added in float64, in one fixed
 * order.  Serial: callers parallelise over independent sums. */
static inline double ddpm_sum(const float* x, size_t n) {
    double s = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += 4096) {
        size_t i1 = n - i0 < 4096 ? n : i0 + 4096, i = i0;
        float acc[16];
#ifdef DDPM_LANES_VECTOR
        ddpm_f8 a0 = {0}, a1 = {0}, v0, v1;
        for (; i + 16 <= i1; i += 16) {
            DDPM_LOAD8(v0, x + i);
            DDPM_LOAD8(v1, x + i + 8);
            a0 += v0;
            a1 += v1;
        }
        memcpy(acc, &a0, sizeof a0);
        memcpy(acc + 8, &a1, sizeof a1);
#else
        for (int j = 0; j < 16; j++) acc[j] = 0.0f;
        for (; i + 16 <= i1; i += 16)
            for (int j = 0; j < 16; j++) acc[j] += x[i + j];
#endif
        for (int j = 0; j < 16; j++) s += acc[j];
        for (; i < i1; i++) s += x[i];
    }
    return s;
}

#endif /* DDPM_COMMON_H */
