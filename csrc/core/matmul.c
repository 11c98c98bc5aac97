/*
 * matmul.c - GEMM split over ddpm's threads in fixed blocks.
 */
#include "core/matmul.h"
#include "core/common.h"
#include "core/threads.h"
#include <cblas.h>

static void gemm1(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                  const float* B, int ldb, float beta, float* C, int ldc) {
    BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Block size along the split dimension: a function of the shape alone. */
static int block_size(int n) {
    int nb = (n + 255) / 256;            /* about 256 wide ... */
    if (nb > 32) nb = 32;                /* ... but at most 32 blocks */
    int bs = (n + nb - 1) / nb;
    return (bs + 15) & ~15;              /* whole SIMD panels */
}

void matmul(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) {
    if (M <= 0 || N <= 0) return;
    double work = (double)M * N * K;
    int threads = ddpm_get_num_threads();
    /* Whether (and how) to split depends on the shape alone, never on the
     * thread count: OpenBLAS picks its kernel (small-matrix or blocked) by
     * the size of each call, and the two sum in different orders, so one
     * whole call and the same product in blocks differ in the last bits. */
    if (work < 2e6) {
        gemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (N >= M) {
        /* split C's columns: block j uses B's columns (or, transposed, rows) j */
        const int bs = block_size(N), nblk = (N + bs - 1) / bs;
        int nt = threads < nblk ? threads : nblk;
        DDPM_PARALLEL_FOR(nt)
        for (int j = 0; j < nblk; j++) {
            int n0 = j * bs, n = N - n0 < bs ? N - n0 : bs;
            const float* Bj = tb ? B + (size_t)n0 * ldb : B + n0;
            gemm1(ta, tb, M, n, K, alpha, A, lda, Bj, ldb, beta, C + n0, ldc);
        }
    } else {
        /* split C's rows: block i uses A's rows (or, transposed, columns) i */
        const int bs = block_size(M), nblk = (M + bs - 1) / bs;
        int nt = threads < nblk ? threads : nblk;
        DDPM_PARALLEL_FOR(nt)
        for (int i = 0; i < nblk; i++) {
            int m0 = i * bs, m = M - m0 < bs ? M - m0 : bs;
            const float* Ai = ta ? A + m0 : A + (size_t)m0 * lda;
            gemm1(ta, tb, m, N, K, alpha, Ai, lda, B, ldb, beta, C + (size_t)m0 * ldc, ldc);
        }
    }
}

/* Parts of K for matmul_nt_ksplit: up to 8 of at least 4096, only when C is
 * too small to split (one 256-wide block each way). */
#define KSPLIT_MAX_PARTS 8
#define KSPLIT_MIN_LEN 4096

static int ksplit_parts(int M, int N, int K) {
    if (M > 256 || N > 256) return 1;
    int parts = K / KSPLIT_MIN_LEN;
    if (parts > KSPLIT_MAX_PARTS) parts = KSPLIT_MAX_PARTS;
    return parts < 2 ? 1 : parts;
}

size_t matmul_nt_ksplit_floats(int M, int N, int K) {
    int parts = ksplit_parts(M, N, K);
    return parts > 1 ? (size_t)parts * M * N : 0;
}

void matmul_nt_ksplit(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                      float* C, int ldc, float* part) {
    const int parts = ksplit_parts(M, N, K);
    if (parts < 2 || !part) {
        matmul(0, 1, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
        return;
    }
    const int len = ((K + parts - 1) / parts + 15) & ~15;
    const size_t mn = (size_t)M * N;
    int nt = ddpm_threads_for((size_t)parts, 1);
DDPM_PARALLEL(nt)
    {
DDPM_OMP_FOR
        for (int p = 0; p < parts; p++) {
            const int k0 = p * len, k = K - k0 < len ? K - k0 : len;
            float* Cp = part + (size_t)p * mn;
            if (k > 0)
                gemm1(0, 1, M, N, k, 1.0f, A + k0, lda, B + k0, ldb, 0.0f, Cp, N);
            else
                for (size_t i = 0; i < mn; i++) Cp[i] = 0.0f;
        }
        /* C += part 0 + part 1 + ... in order, rows of C spread over threads */
DDPM_OMP_FOR
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float s = part[(size_t)i * N + j];
                for (int p = 1; p < parts; p++) s += part[(size_t)p * mn + (size_t)i * N + j];
                C[(size_t)i * ldc + j] += s;
            }
    }
}
