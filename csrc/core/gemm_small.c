/*
 * gemm_small.c - C = A B for the Winograd products: an AVX2 + FMA kernel
 * that reads A packed (gemm_small.h) and B in place, OpenBLAS where the CPU
 * lacks them.
 *
 * The kernel covers 4 rows of C by up to 24 columns (3 vectors of 8): 12
 * accumulators, and per k 4 broadcasts of A and 3 loads of B's row k for 12
 * fused multiply-adds.  C's columns go in blocks of 24 (16 + 16 for the last
 * 32, so no block is a single vector), the last block's final vector masked
 * when N is not a multiple of 8.  Rows past a multiple of 4 go one at a
 * time.  A block of at most 8 columns (a chunk of two 7x7 planes' 8 tiles, as
 * a small batch gives) runs 8 rows at a time: 4 rows made 4 chains of FMAs,
 * too few to cover the FMA's latency (45-47 GF/s on a 128 x 128 x 8 product
 * on an AMD EPYC; 8 rows: 64-70).  Every element is the same k-ordered
 * chain of FMAs whichever of these kernels computes it, in whichever order
 * the blocks go (GS_ROWS_FIRST).
 *
 * A is packed, a block of 4 rows interleaved, so that a kernel's broadcasts
 * walk one unit-stride stream instead of 4 streams a row apart: row-major,
 * with the transformed weights of the reference U-Net's 7x7 layers read
 * from memory (51 MB for all its 3x3 layers), a 128 x 128 x 32 product ran
 * at 25-35 GF/s, packed at 43-56 (a C harness cycling through 38 MB of
 * weights, B and C in cache, the two alternated; the same bits).  In the
 * sampler (64 images, 2 threads, the layouts switched in one process and
 * alternated, CPU time per image-step, median of 10): 5.79 ms row-major,
 * 5.68 packed, 5.51 packed with GS_ROWS_FIRST at 4096 (GS_KC 128).
 */
#include "core/gemm_small.h"
#include "core/common.h"
#include <cblas.h>
#include <stdint.h>

static int kernel_off = 0;   /* testing switch: gemm_small_kernel(0) */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DDPM_NO_CLONES)
#include <immintrin.h>
#define GS_HAVE_KERNEL 1
#define GS_TARGET __attribute__((target("avx2,fma")))

static int have_kernel(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* K in blocks of at most this many (B's K x 24 panel, 24 KB, stays in L1;
 * a block carries on its elements' chains, so the sums are the same).  256
 * rather than 128 takes the U-Net's 256-channel 7x7 layers in one block, no
 * C stored and loaded back halfway (and rows first, GS_ROWS_FIRST). */
#define GS_KC 256

/* mask for the first r lanes: the 8 ints from GS_MASK + 8 - r */
static const int32_t GS_MASK[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* One vector of B's row (the last one masked when MK). */
#define GS_LOAD(p, last) ((MK && (last)) ? _mm256_maskload_ps((p), m) : _mm256_loadu_ps(p))
#define GS_STORE(p, v, last) \
    do { if (MK && (last)) _mm256_maskstore_ps((p), m, (v)); else _mm256_storeu_ps((p), (v)); } while (0)
/* row i of the block: c_i += A[i][k] * b (A[i][k] KS floats after A[i][k - 1]) */
#define GS_ROW(i) \
    if (NR > i) { \
        const __m256 x = _mm256_broadcast_ss(a##i + (size_t)k * KS); \
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

/* Row i of A: in blocks of 4 rows lda floats apart, the 4 interleaved
 * (PACKED, gemm_small.h), or row-major, lda floats a row (the rows past the
 * blocks). */
#define GS_A(i) (NR > (i) ? A + (PK ? ((i) >> 2) * lda + ((i) & 3) : (i) * lda) : A)

/* C (ROWS, 8 NVEC, the last vector masked by m when MASKED) = A (ROWS, K) B
 * (K, 8 NVEC), or with more C's chains carried on over K more terms (a
 * block of K after the first); A's rows as GS_A says */
#define GS_KERNEL(ROWS, NVEC, MASKED, PACKED) \
    GS_TARGET static void gs_##ROWS##x##NVEC##_##MASKED(float* C, size_t ldc, const float* A, \
                                                      size_t lda, const float* B, size_t ldb, \
                                                      int K, __m256i m, int more) { \
        enum { NR = ROWS, NV = NVEC, MK = MASKED, PK = PACKED, KS = PACKED ? 4 : 1 }; \
        const __m256 z = _mm256_setzero_ps(); \
        __m256 c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z; \
        __m256 c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z; \
        __m256 c40 = z, c41 = z, c42 = z, c50 = z, c51 = z, c52 = z; \
        __m256 c60 = z, c61 = z, c62 = z, c70 = z, c71 = z, c72 = z; \
        if (more) { GS_GET(0) GS_GET(1) GS_GET(2) GS_GET(3) GS_GET(4) GS_GET(5) GS_GET(6) GS_GET(7) } \
        const float *a0 = GS_A(0), *a1 = GS_A(1), *a2 = GS_A(2), *a3 = GS_A(3); \
        const float *a4 = GS_A(4), *a5 = GS_A(5), *a6 = GS_A(6), *a7 = GS_A(7); \
        for (int k = 0; k < K; k++) { \
            const float* bp = B + (size_t)k * ldb; \
            const __m256 b0 = GS_LOAD(bp, NV == 1); \
            const __m256 b1 = NV > 1 ? GS_LOAD(bp + 8, NV == 2) : z; \
            const __m256 b2 = NV > 2 ? GS_LOAD(bp + 16, 1) : z; \
            GS_ROW(0) GS_ROW(1) GS_ROW(2) GS_ROW(3) GS_ROW(4) GS_ROW(5) GS_ROW(6) GS_ROW(7) \
        } \
        GS_PUT(0) GS_PUT(1) GS_PUT(2) GS_PUT(3) GS_PUT(4) GS_PUT(5) GS_PUT(6) GS_PUT(7) \
    }

/* 4 and 8 rows from packed blocks, 1 row-major row */
GS_KERNEL(4, 1, 0, 1) GS_KERNEL(4, 2, 0, 1) GS_KERNEL(4, 3, 0, 1)
GS_KERNEL(4, 1, 1, 1) GS_KERNEL(4, 2, 1, 1) GS_KERNEL(4, 3, 1, 1)
GS_KERNEL(8, 1, 0, 1) GS_KERNEL(8, 1, 1, 1)
GS_KERNEL(1, 1, 0, 0) GS_KERNEL(1, 2, 0, 0) GS_KERNEL(1, 3, 0, 0)
GS_KERNEL(1, 1, 1, 0) GS_KERNEL(1, 2, 1, 0) GS_KERNEL(1, 3, 1, 0)

typedef void (*gs_kernel)(float*, size_t, const float*, size_t, const float*, size_t, int,
                          __m256i, int);
/* [rows: 4, 1][masked][vectors - 1], and the 8 rows' [masked] */
static const gs_kernel GS_KERNELS[2][2][3] = {
    {{gs_4x1_0, gs_4x2_0, gs_4x3_0}, {gs_4x1_1, gs_4x2_1, gs_4x3_1}},
    {{gs_1x1_0, gs_1x2_0, gs_1x3_0}, {gs_1x1_1, gs_1x2_1, gs_1x3_1}},
};
static const gs_kernel GS_EIGHT[2] = {gs_8x1_0, gs_8x1_1};

/* The block of C's columns from j (of N): blocks of 24, 16 + 16 for the
 * last 32, then the rest; its width, vectors and the mask of its last. */
typedef struct {
    int w, nv, masked;
    __m256i m;
} GsCols;
GS_TARGET static inline GsCols gs_cols(int N, int j) {
    const int rem = N - j;
    GsCols c;
    c.w = (rem > 24 && rem <= 32) ? 16 : rem >= 24 ? 24 : rem;
    c.nv = (c.w + 7) / 8;
    const int tail = c.w % 8;
    c.masked = tail != 0;
    c.m = _mm256_loadu_si256((const __m256i*)(GS_MASK + 8 - tail));
    return c;
}

/* C's rows [i, i + rows) (8 for a block of one vector, 4, or 1 past the
 * last multiple of 4), columns of block c from j, over K's block [k0, k0 +
 * kn): A packed (gemm_small.h: blocks of 4 rows 4 K floats apart, then the
 * rows past them, row-major, so row i >= M / 4 * 4 at i K). */
GS_TARGET static inline void gs_block(const GsCols* c, int rows, int K, int i, int j, int k0,
                                      int kn, const float* A, const float* Bk, size_t ldb,
                                      float* C, size_t ldc) {
    float* Cij = C + (size_t)i * ldc + j;
    if (rows == 1) {
        GS_KERNELS[1][c->masked][c->nv - 1](Cij, ldc, A + (size_t)i * K + k0, (size_t)K, Bk + j,
                                            ldb, kn, c->m, k0 > 0);
        return;
    }
    const gs_kernel kern = rows == 8 ? GS_EIGHT[c->masked] : GS_KERNELS[0][c->masked][c->nv - 1];
    kern(Cij, ldc, A + (size_t)(i / 4) * 4 * K + (size_t)4 * k0, 4 * (size_t)K, Bk + j, ldb, kn,
         c->m, k0 > 0);
}

/* B's panels (K's block of rows by all N columns) of at most this many
 * floats (32 KB, L1) stay in cache while a block of A's rows goes across
 * all of them: then the products go row block by row block, and each block
 * of A (a 7x7 layer's transformed weights, read from memory) is read once
 * and once only.  Wider panels go column block by column block (each K x 24
 * panel in L1 down all of A's rows, which a small layer keeps in cache).
 * A C harness cycling through 38 MB of packed weights: 128 x 128 x 32 at
 * 71-76 GF/s row blocks first against 58-62 column blocks first; 64 x 192
 * x 112 at 45-52 against 57-72.  In the sampler (64 images, 2 threads, the
 * settings switched in one process, CPU time per image-step, medians of
 * 10-12 in three runs): 4096 floats and GS_KC 128 5.97 / 5.74 / 5.93 ms,
 * 8192 and 256 5.68 / 5.36 / 5.76.  The same sums either way. */
#define GS_ROWS_FIRST 8192

GS_TARGET static void gemm_kernel(int M, int N, int K, const float* A, const float* B,
                                  size_t ldb, float* C, size_t ldc) {
    const int nk = (K + GS_KC - 1) / GS_KC, kc = nk > 1 ? (K + nk - 1) / nk : K > 0 ? K : 1;
    const int M8 = M / 8 * 8, M4 = M / 4 * 4;
    for (int k0 = 0; k0 == 0 || k0 < K; k0 += kc) {   /* K = 0: one pass, C = 0 */
        const int kn = K - k0 < kc ? K - k0 : kc;
        const float* Bk = B + (size_t)k0 * ldb;
#define GS_AT(i) K, (i), j, k0, kn, A, Bk, ldb, C, ldc
        if ((size_t)kn * N <= GS_ROWS_FIRST) {
            int i = 0;
            for (; i < M8; i += 8)
                for (int j = 0; j < N;) {
                    const GsCols c = gs_cols(N, j);
                    if (c.nv == 1) {
                        gs_block(&c, 8, GS_AT(i));
                    } else {
                        gs_block(&c, 4, GS_AT(i));
                        gs_block(&c, 4, GS_AT(i + 4));
                    }
                    j += c.w;
                }
            for (; i < M; i += i < M4 ? 4 : 1)
                for (int j = 0; j < N;) {
                    const GsCols c = gs_cols(N, j);
                    gs_block(&c, i < M4 ? 4 : 1, GS_AT(i));
                    j += c.w;
                }
        } else {
            for (int j = 0; j < N;) {
                const GsCols c = gs_cols(N, j);
                int i = 0;
                if (c.nv == 1)
                    for (; i < M8; i += 8) gs_block(&c, 8, GS_AT(i));
                for (; i < M; i += i < M4 ? 4 : 1) gs_block(&c, i < M4 ? 4 : 1, GS_AT(i));
                j += c.w;
            }
        }
#undef GS_AT
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

void gemm_small_packed(int M, int N, int K, const float* Ap, const float* B, size_t ldb,
                       float* C, size_t ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef GS_HAVE_KERNEL
    if (!kernel_off && have_kernel()) {
        gemm_kernel(M, N, K, Ap, B, ldb, C, ldc);
        return;
    }
#endif
    /* OpenBLAS: a block of 4 rows is the (K, 4) matrix of its columns */
    const int M4 = M / 4 * 4;
    for (int i = 0; i < M4; i += 4)
        BLAS(cblas_sgemm)(CblasRowMajor, CblasTrans, CblasNoTrans, 4, N, K, 1.0f,
                          Ap + (size_t)i * K, 4, B, (int)ldb, 0.0f, C + (size_t)i * ldc,
                          (int)ldc);
    if (M4 < M)
        BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, M - M4, N, K, 1.0f,
                          Ap + (size_t)M4 * K, K, B, (int)ldb, 0.0f, C + (size_t)M4 * ldc,
                          (int)ldc);
}

void gemm_small_pack(float* Ap, const float* A, size_t lda, int M, int K) {
    for (int i = 0; i < M; i++) {
        size_t ks;
        float* dst = Ap + gemm_small_packed_row(M, K, i, &ks);
        for (int k = 0; k < K; k++) dst[(size_t)k * ks] = A[(size_t)i * lda + k];
    }
}
