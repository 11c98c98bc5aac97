/*
 * attention.c - softmax attention forward and backward, one (b, head) per task,
 * the products as single-threaded SGEMMs on strided panels of qkv.
 */
#include "layers/attention.h"
#include "core/common.h"
#include "core/threads.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* Single-threaded SGEMM on strided panels, safe inside our threads: OpenBLAS
 * is held at one thread (matmul.c), so each task runs its own small products. */
static inline void gemm(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                        const float* Bm, int ldb, float beta, float* C, int ldc) {
    BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
}

/* max of x[0..n), n >= 1: 8 running maxima (lane l over the j = l mod 8)
 * then those and the tail.  The max of the same floats whatever the order
 * (a zero's sign aside, which x - max and expf do not see); a single chain
 * of compares was most of the softmax's time. */
static inline __attribute__((always_inline)) float row_max(const float* x, int n) {
    float m[8];
    int j = 0;
    if (n >= 8) {
        for (int l = 0; l < 8; l++) m[l] = x[l];
        for (j = 8; j + 8 <= n; j += 8)
            for (int l = 0; l < 8; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    } else {
        for (int l = 0; l < 8; l++) m[l] = x[0];
    }
    float mx = m[0];
    for (int l = 1; l < 8; l++) mx = m[l] > mx ? m[l] : mx;
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* Each row of P (n, n) := softmax(row): exp(x - max) / sum, the sum in 8
 * float lanes added in float64.  Elementwise with fixed lanes, so it is also
 * compiled for AVX2 with the same bits (the expf is most of the forward's
 * own time).  Each row first has its max taken off in place, then the expf
 * runs as one pass over the whole matrix: rows of 49 (7x7 attention) left
 * one float of each row to a scalar tail; x - max is rounded to float
 * either way, so the same bits. */
DDPM_SIMD_CLONES
static void softmax_rows(float* P, int n) {
    for (int i = 0; i < n; i++) {
        float* Pi = P + (size_t)i * n;
        float mx = row_max(Pi, n);
        for (int j = 0; j < n; j++) Pi[j] -= mx;
    }
    const size_t nn = (size_t)n * n;
    for (size_t k = 0; k < nn; k++) P[k] = ddpm_expf(P[k]);
    for (int i = 0; i < n; i++) {
        float* Pi = P + (size_t)i * n;
        float acc[8];
        int j = 0;
#ifdef DDPM_LANES_VECTOR
        ddpm_f8 a = {0}, v;
        for (; j + 8 <= n; j += 8) {
            DDPM_LOAD8(v, Pi + j);
            a += v;
        }
        memcpy(acc, &a, sizeof a);
#else
        for (int l = 0; l < 8; l++) acc[l] = 0.0f;
        for (; j + 8 <= n; j += 8)
            for (int l = 0; l < 8; l++) acc[l] += Pi[j + l];
#endif
        double sum = 0.0;
        for (int l = 0; l < 8; l++) sum += acc[l];
        for (; j < n; j++) sum += Pi[j];
        float inv = (float)(1.0 / sum);
        for (j = 0; j < n; j++) Pi[j] *= inv;
    }
}

/* dS (n, n) := P (dS - rowsum(P dS)) row by row: the softmax backward, dS
 * holding dP on entry.  The row sums in four float64 lanes (a single
 * float64 chain was most of the backward's own time). */
DDPM_SIMD_CLONES
static void softmax_rows_backward(float* dS, const float* P, int n) {
    for (int i = 0; i < n; i++) {
        float* dSi = dS + (size_t)i * n;
        const float* Pi = P + (size_t)i * n;
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        int j = 0;
        for (; j + 4 <= n; j += 4)
            for (int l = 0; l < 4; l++) acc[l] += (double)Pi[j + l] * dSi[j + l];
        double dot = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (; j < n; j++) dot += (double)Pi[j] * dSi[j];
        float df = (float)dot;
        for (j = 0; j < n; j++) dSi[j] = Pi[j] * (dSi[j] - df);
    }
}

/* Head h of sample b as an (hd, HW) panel: row d is channel h*hd + d of
 * block off (0 = q, C = k, 2C = v); consecutive rows are B*HW apart. */
#define PANEL(base, off) ((base) + ((size_t)((off) + h * hd) * B + b) * HW)

void attention_forward(float* out, float* att, const float* qkv, int B, int C, int HW, int NH,
                       int keep) {
    const int hd = C / NH, ld = B * HW;
    const float scale = 1.0f / sqrtf((float)hd);
    int nt = ddpm_threads_for((size_t)B * NH * HW * HW * hd, 1 << 16);
    if (nt > B * NH) nt = B * NH;
    if (!keep && nt > ATTN_SLOTS) nt = ATTN_SLOTS;   /* thread t's P: slot t of att */
    DDPM_PARALLEL_FOR(nt)
    for (int task = 0; task < B * NH; task++) {
        int b = task / NH, h = task % NH;
        float* P = att + (size_t)(keep ? task : ddpm_thread_num()) * HW * HW;
        /* S = scale q^T k  (HW, HW) */
        gemm(1, 0, HW, HW, hd, scale, PANEL(qkv, 0), ld, PANEL(qkv, C), ld, 0.0f, P, HW);
        softmax_rows(P, HW);
        /* o = v P^T  (hd, HW) */
        gemm(0, 1, hd, HW, HW, 1.0f, PANEL(qkv, 2 * C), ld, P, HW, 0.0f, PANEL(out, 0), ld);
    }
}

void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int C, int HW, int NH, int accumulate) {
    const float beta = accumulate ? 1.0f : 0.0f;   /* each panel of dqkv is written once */
    const int hd = C / NH, ld = B * HW;
    const float scale = 1.0f / sqrtf((float)hd);
    int nt = ddpm_threads_for((size_t)B * NH * HW * HW * hd, 1 << 16);
    DDPM_PARALLEL_FOR(nt)
    for (int task = 0; task < B * NH; task++) {
        int b = task / NH, h = task % NH;
        const float* P = att + (size_t)task * HW * HW;
        float* dS = scratch + (size_t)task * HW * HW;
        /* dP = do^T v (HW, HW);  dv += do P */
        gemm(1, 0, HW, HW, hd, 1.0f, PANEL(dout, 0), ld, PANEL(qkv, 2 * C), ld, 0.0f, dS, HW);
        gemm(0, 0, hd, HW, HW, 1.0f, PANEL(dout, 0), ld, P, HW, beta, PANEL(dqkv, 2 * C), ld);
        /* softmax backward: dS = P (dP - sum_j P dP) */
        softmax_rows_backward(dS, P, HW);
        /* S = scale q^T k:  dq += scale k dS^T,  dk += scale q dS */
        gemm(0, 1, hd, HW, HW, scale, PANEL(qkv, C), ld, dS, HW, beta, PANEL(dqkv, 0), ld);
        gemm(0, 0, hd, HW, HW, scale, PANEL(qkv, 0), ld, dS, HW, beta, PANEL(dqkv, C), ld);
    }
}
