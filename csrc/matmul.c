/*
 * matmul.c - GEMM split over ddpm's threads in fixed blocks.
 */
#include "matmul.h"
#include "common.h"
#include <cblas.h>

void matmul_init(void) { BLAS(openblas_set_num_threads)(1); }

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
    if (threads <= 1 || work < 2e6) {
        gemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (N >= M) {
        /* split C's columns: block j uses B's columns (or, transposed, rows) j */
        const int bs = block_size(N), nblk = (N + bs - 1) / bs;
        int nt = threads < nblk ? threads : nblk;
        (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt)
#endif
        for (int j = 0; j < nblk; j++) {
            int n0 = j * bs, n = N - n0 < bs ? N - n0 : bs;
            const float* Bj = tb ? B + (size_t)n0 * ldb : B + n0;
            gemm1(ta, tb, M, n, K, alpha, A, lda, Bj, ldb, beta, C + n0, ldc);
        }
    } else {
        /* split C's rows: block i uses A's rows (or, transposed, columns) i */
        const int bs = block_size(M), nblk = (M + bs - 1) / bs;
        int nt = threads < nblk ? threads : nblk;
        (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt)
#endif
        for (int i = 0; i < nblk; i++) {
            int m0 = i * bs, m = M - m0 < bs ? M - m0 : bs;
            const float* Ai = ta ? A + m0 : A + (size_t)m0 * lda;
            gemm1(ta, tb, m, N, K, alpha, Ai, lda, B, ldb, beta, C + (size_t)m0 * ldc, ldc);
        }
    }
}
