/*
 * matmul.h - row-major SGEMM through OpenBLAS, the one door to BLAS.
 *
 * C (M, N) = alpha op(A) op(B) + beta C, row-major with leading dimensions.
 *
 * Threads: ddpm has ONE pool of threads (OpenMP).  OpenBLAS is kept
 * single-threaded and each GEMM is cut into blocks of C's rows or columns
 * whose size depends only on (M, N, K), one single-threaded SGEMM per block,
 * the blocks spread over our threads.  So two thread pools never fight over
 * the cores, and every element of C is summed over K by the same kernel in
 * the same order whatever the thread count: same bits at 1 or 2 threads.
 * matmul() opens its own parallel region: call it from serial code.  Inside a
 * parallel region, call BLAS(cblas_sgemm) directly (it runs on that thread).
 */
#ifndef DDPM_MATMUL_H
#define DDPM_MATMUL_H

/* op(A) = A (trans_a = 0) or A^T (A stored (K, M)); likewise op(B) with B
 * stored (K, N) or, transposed, (N, K). */
void matmul(int trans_a, int trans_b, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc);

static inline void sgemm_nn(int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc) {
    matmul(0, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
/* C = alpha A B^T + beta C, B stored (N, K) */
static inline void sgemm_nt(int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc) {
    matmul(0, 1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
/* C = alpha A^T B + beta C, A stored (K, M) */
static inline void sgemm_tn(int M, int N, int K, float alpha, const float* A, int lda,
                            const float* B, int ldb, float beta, float* C, int ldc) {
    matmul(1, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Keeps OpenBLAS single-threaded (called once at module load). */
void matmul_init(void);

#endif /* DDPM_MATMUL_H */
