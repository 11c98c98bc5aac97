/*
 * gemm_small.c - C = A B for the Winograd products: an AVX2 + FMA kernel
 * that reads both operands in place, OpenBLAS where the CPU lacks them.
 *
 * The kernel covers 4 rows of C by up to 24 columns (3 vectors of 8): 12
 * accumulators, and per k 4 broadcasts of A and 3 loads of B's row k for 12
 * fused multiply-adds.  C's columns go in blocks of 24 (16 + 16 for the last
 * 32, so no block is a single vector), the last block's final vector masked
 * when N is not a multiple of 8; each block runs down all of C's rows while
 * its K x 24 panel of B stays in L1.  Rows past a multiple of 4 go one at a
 * time.  A block of at most 8 columns (a chunk of two 7x7 planes' 8 tiles, as
 * a small batch gives) runs 8 rows at a time: 4 rows made 4 chains of FMAs,
 * too few to cover the FMA's latency (45-47 GF/s on a 128 x 128 x 8 product
 * on an AMD EPYC; 8 rows: 64-70).  Every element is the same k-ordered
 * chain of FMAs whichever of these kernels computes it.
 */
#include "core/gemm_small.h"
#include "core/common.h"
#include <cblas.h>
#include <stdint.h>

static int kernel_off = 0;   /* testing switch: gemm_small_kernel(0) */

static void gemm_blas(int M, int N, int K, const float* A, size_t lda, const float* B,
                      size_t ldb, float* C, size_t ldc) {
    BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, (int)lda, B,
                      (int)ldb, 0.0f, C, (int)ldc);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DDPM_NO_CLONES)
#include <immintrin.h>
#define GS_HAVE_KERNEL 1
#define GS_TARGET __attribute__((target("avx2,fma")))

static int have_kernel(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* K in blocks of at most this many (B's K x 24 panel, 12 KB, stays in L1;
 * a block carries on its elements' chains, so the sums are the same) */
#define GS_KC 128

/* mask for the first r lanes: the 8 ints from GS_MASK + 8 - r */
static const int32_t GS_MASK[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* One vector of B's row (the last one masked when MK). */
#define GS_LOAD(p, last) ((MK && (last)) ? _mm256_maskload_ps((p), m) : _mm256_loadu_ps(p))
#define GS_STORE(p, v, last) \
    do { if (MK && (last)) _mm256_maskstore_ps((p), m, (v)); else _mm256_storeu_ps((p), (v)); } while (0)
/* row i of the block: c_i += A[i][k] * b */
#define GS_ROW(i) \
    if (NR > i) { \
        const __m256 x = _mm256_broadcast_ss(a##i + k); \
        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0); \
        if (NV > 1) c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1); \
        if (NV > 2) c##i##2 = _mm256_fmadd_ps(x, b2, c##i##2); \
    }
#define GS_GET(i) \
    if (NR > i) { \
        c##i##0 = GS_LOAD(C + i * ldc, NV == 1); \
        if (NV > 1) c##i##1 = GS_LOAD(C + i * ldc + 8, NV == 2); \
        if (NV > 2) c##i##2 = GS_LOAD(C + i * ldc + 16, 1); \
    }
#define GS_PUT(i) \
    if (NR > i) { \
        GS_STORE(C + i * ldc, c##i##0, NV == 1); \
        if (NV > 1) GS_STORE(C + i * ldc + 8, c##i##1, NV == 2); \
        if (NV > 2) GS_STORE(C + i * ldc + 16, c##i##2, 1); \
    }

/* C (ROWS, 8 NVEC, the last vector masked by m when MASKED) = A (ROWS, K) B
 * (K, 8 NVEC), or with more C's chains carried on over K more terms (a
 * block of K after the first) */
#define GS_KERNEL(ROWS, NVEC, MASKED) \
    GS_TARGET static void gs_##ROWS##x##NVEC##_##MASKED(float* C, size_t ldc, const float* A, \
                                                      size_t lda, const float* B, size_t ldb, \
                                                      int K, __m256i m, int more) { \
        enum { NR = ROWS, NV = NVEC, MK = MASKED }; \
        const __m256 z = _mm256_setzero_ps(); \
        __m256 c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z; \
        __m256 c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z; \
        __m256 c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z; \
        __m256 c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z; \
        if (more) { GS_GET(0) GS_GET(1) GS_GET(2) GS_GET(3) GS_GET(4) GS_GET(5) GS_GET(6) GS_GET(7) } \
        const float* a0 = A; \
        const float* a1 = NR > 1 ? A + lda : A; \
        const float* a2 = NR > 2 ? A + 2 * lda : A; \
        const float* a3 = NR > 3 ? A + 3 * lda : A; \
        const float* a4 = NR > 4 ? A + 4 * lda : A; \
        const float* a5 = NR > 5 ? A + 5 * lda : A; \
        const float* a6 = NR > 6 ? A + 6 * lda : A; \
        const float* a7 = NR > 7 ? A + 7 * lda : A; \
        for (int k = 0; k < K; k++) { \
            const float* bp = B + (size_t)k * ldb; \
            const __m256 b0 = GS_LOAD(bp, NV == 1); \
            const __m256 b1 = NV > 1 ? GS_LOAD(bp + 8, NV == 2) : z; \
            const __m256 b2 = NV > 2 ? GS_LOAD(bp + 16, 1) : z; \
            GS_ROW(0) GS_ROW(1) GS_ROW(2) GS_ROW(3) GS_ROW(4) GS_ROW(5) GS_ROW(6) GS_ROW(7) \
        } \
        GS_PUT(0) GS_PUT(1) GS_PUT(2) GS_PUT(3) GS_PUT(4) GS_PUT(5) GS_PUT(6) GS_PUT(7) \
    }

GS_KERNEL(4, 1, 0) GS_KERNEL(4, 2, 0) GS_KERNEL(4, 3, 0)
GS_KERNEL(4, 1, 1) GS_KERNEL(4, 2, 1) GS_KERNEL(4, 3, 1)
GS_KERNEL(1, 1, 0) GS_KERNEL(1, 2, 0) GS_KERNEL(1, 3, 0)
GS_KERNEL(1, 1, 1) GS_KERNEL(1, 2, 1) GS_KERNEL(1, 3, 1)
GS_KERNEL(8, 1, 0) GS_KERNEL(8, 1, 1)

typedef void (*gs_kernel)(float*, size_t, const float*, size_t, const float*, size_t, int,
                          __m256i, int);
/* [rows 4 or 1][masked][vectors - 1] */
static const gs_kernel GS_KERNELS[2][2][3] = {
    {{gs_4x1_0, gs_4x2_0, gs_4x3_0}, {gs_4x1_1, gs_4x2_1, gs_4x3_1}},
    {{gs_1x1_0, gs_1x2_0, gs_1x3_0}, {gs_1x1_1, gs_1x2_1, gs_1x3_1}},
};

GS_TARGET static void gemm_kernel(int M, int N, int K, const float* A, size_t lda,
                                  const float* B, size_t ldb, float* C, size_t ldc) {
    const int nk = (K + GS_KC - 1) / GS_KC, kc = nk > 1 ? (K + nk - 1) / nk : K > 0 ? K : 1;
    for (int j = 0; j < N;) {
        const int rem = N - j;
        const int w = (rem > 24 && rem <= 32) ? 16 : rem >= 24 ? 24 : rem;
        const int nv = (w + 7) / 8, tail = w % 8;
        const __m256i m = _mm256_loadu_si256((const __m256i*)(GS_MASK + 8 - tail));
        const gs_kernel four = GS_KERNELS[0][tail != 0][nv - 1];
        const gs_kernel one = GS_KERNELS[1][tail != 0][nv - 1];
        const gs_kernel eight = tail != 0 ? gs_8x1_1 : gs_8x1_0;   /* nv == 1 only */
        for (int k0 = 0; k0 == 0 || k0 < K; k0 += kc) {   /* K = 0: one pass, C = 0 */
            const int kn = K - k0 < kc ? K - k0 : kc;
            const float* Bk = B + (size_t)k0 * ldb + j;
            int i = 0;
            if (nv == 1)
                for (; i + 8 <= M; i += 8)
                    eight(C + (size_t)i * ldc + j, ldc, A + (size_t)i * lda + k0, lda, Bk, ldb,
                          kn, m, k0 > 0);
            for (; i + 4 <= M; i += 4)
                four(C + (size_t)i * ldc + j, ldc, A + (size_t)i * lda + k0, lda, Bk, ldb, kn, m,
                     k0 > 0);
            for (; i < M; i++)
                one(C + (size_t)i * ldc + j, ldc, A + (size_t)i * lda + k0, lda, Bk, ldb, kn, m,
                    k0 > 0);
        }
        j += w;
    }
}
#else
static int have_kernel(void) { return 0; }
#endif

int gemm_small_kernel(int on) {
    const int was = have_kernel() && !kernel_off;
    if (on >= 0) kernel_off = !on;
    return was;
}

void gemm_small_nn(int M, int N, int K, const float* A, size_t lda, const float* B, size_t ldb,
                   float* C, size_t ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef GS_HAVE_KERNEL
    if (!kernel_off && have_kernel()) {
        gemm_kernel(M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    gemm_blas(M, N, K, A, lda, B, ldb, C, ldc);
}
