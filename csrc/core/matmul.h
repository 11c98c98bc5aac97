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

#include <stddef.h>

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

/* C (M, N) += A B^T for a small C and a long K (A stored (M, K), B (N, K)):
 * the weight gradient of a 1x1 convolution, summed over every position of
 * the batch.  Split over C's rows or columns it would give one thread all
 * the work, so K is cut into parts (how many and where: from the shape
 * alone), each part's product goes to its own (M, N) slice of `part`, and
 * the slices are added into C in order: all threads busy, the same bits at
 * any thread count.  part: matmul_nt_ksplit_floats(M, N, K) floats; if that
 * is 0, or part is NULL, this is one sgemm_nt. */
void matmul_nt_ksplit(int M, int N, int K, const float* A, int lda, const float* B, int ldb,
                      float* C, int ldc, float* part);
size_t matmul_nt_ksplit_floats(int M, int N, int K);

#endif /* DDPM_MATMUL_H */
