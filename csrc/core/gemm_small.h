/*
 * gemm_small.h - the small row-major product C = A B of the Winograd
 * convolutions (36 of them per chunk of tiles), summed in one fixed order.
 *
 * Why not OpenBLAS: each of these products is small (M = OC and K = C are
 * 32-384, N = a chunk's 56-224 tiles) and OpenBLAS copies both operands into
 * its packed panels on every call, which on the U-Net's forward pass cost
 * about as much as a third of its kernel time.  Here A is read in place
 * (4 rows broadcast at a time) and B's rows are already unit-stride panels,
 * so nothing is copied.
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

/* C (M, N) = A (M, K) B (K, N), row-major, leading dimensions lda, ldb, ldc
 * (C's old contents are not read).  Serial: call it from a thread's own chunk. */
void gemm_small_nn(int M, int N, int K, const float* A, size_t lda, const float* B, size_t ldb,
                   float* C, size_t ldc);

/* 1 when gemm_small_nn runs its own kernel (AVX2 + FMA), 0 when it calls
 * OpenBLAS; on = 0 forces OpenBLAS (testing switch), -1 only asks.  Returns
 * the setting before the call. */
int gemm_small_kernel(int on);

#endif /* DDPM_GEMM_SMALL_H */
