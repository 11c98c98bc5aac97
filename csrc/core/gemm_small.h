/*
 * gemm_small.h - the small product C = A B of the Winograd convolutions (36
 * of them per chunk of tiles), summed in one fixed order, A packed.
 *
 * Why not OpenBLAS: each of these products is small (M = OC and K = C are
 * 32-384, N = a chunk's 32-224 tiles) and OpenBLAS copies both operands into
 * its packed panels on every call, which on the U-Net's forward pass cost
 * about as much as a third of its kernel time.  Here A (the transformed
 * weights) is packed once, where it is made, and B's rows are already
 * unit-stride panels, so nothing is copied per call.
 *
 * Order: every C[i][j] is sum_k A[i][k] B[k][j] accumulated for k = 0, 1,
 * ..., K-1 by fused multiply-adds from 0.  That is a property of the element
 * alone: it does not depend on M, N, the block a kernel covers, or threads.
 * On CPUs without AVX2 + FMA the product goes to OpenBLAS (same bits on a
 * given machine, as before).
 */
#ifndef DDPM_GEMM_SMALL_H
#define DDPM_GEMM_SMALL_H

#include <stddef.h>

/* The packed layout of an (M, K) matrix A that gemm_small_packed reads: rows
 * in blocks of 4, block b (rows 4 b .. 4 b + 3) the (K, 4) matrix of its
 * columns, so A[i][k] at 4 b K + 4 k + i % 4; the rows past the last multiple
 * of 4 after the blocks, row-major (K floats each).  M K floats in all, as
 * row-major.  Returns where row i starts and sets *ks to the floats from
 * A[i][k] to A[i][k + 1] (4 in a block, 1 after). */
static inline size_t gemm_small_packed_row(int M, int K, int i, size_t* ks) {
    const int M4 = M / 4 * 4;
    *ks = i < M4 ? 4 : 1;
    return i < M4 ? (size_t)(i / 4) * 4 * K + (size_t)(i % 4) : (size_t)i * K;
}

/* C (M, N) = A (M, K) B (K, N), A packed as above, B and C row-major with
 * leading dimensions ldb, ldc (C's old contents are not read).  Serial:
 * call it from a thread's own chunk. */
void gemm_small_packed(int M, int N, int K, const float* Ap, const float* B, size_t ldb,
                       float* C, size_t ldc);

/* Ap = A (M, K, row-major with leading dimension lda) packed as above. */
void gemm_small_pack(float* Ap, const float* A, size_t lda, int M, int K);

/* 1 when gemm_small_packed runs its own kernel (AVX2 + FMA), 0 when it calls
 * OpenBLAS; on = 0 forces OpenBLAS (testing switch), -1 only asks.  Returns
 * the setting before the call. */
int gemm_small_kernel(int on);

#endif /* DDPM_GEMM_SMALL_H */
