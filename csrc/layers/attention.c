/*
 * attention.c - softmax attention forward and backward, one (b, head) per task:
 * the forward in its own 8-lane loops on strided panels of qkv (below), the
 * backward's products as single-threaded SGEMMs.
 */
#include "layers/attention.h"
#include "core/common.h"
#include "core/threads.h"
#include "core/wide.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

/* Single-threaded SGEMM on strided panels (the backward), safe inside our threads: OpenBLAS
 * is held at one thread (matmul.c), so each task runs its own small products. */
static inline void gemm(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                        const float* Bm, int ldb, float beta, float* C, int ldc) {
    BLAS(cblas_sgemm)(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
}

/* ---- the forward, one (b, h) task, in the transposed layout PT (HW, HW),
 * PT[j][i] = P[i][j]: every loop runs along the queries i, unit-stride and
 * independent, so the softmax needs no horizontal sums (as rows of 49
 * floats, the 7x7 layers' max, sum and scale loops ran mostly in scalar
 * tails), and both products are 8-lane multiply-adds along i with no
 * per-call OpenBLAS packing (at 49 x 49 x 8 that cost more than the
 * arithmetic).  Each element is one fixed sequence of operations (a sum
 * over d, then j, ascending, from the first product), whichever block,
 * lane or thread computes it. ---- */

/* One element of att_block's result in scalar arithmetic: the same sequence. */
static inline __attribute__((always_inline)) float att_elem(const float* a, size_t ast,
                                                            const float* b, size_t bld, int n,
                                                            int i, int scaled, float scale) {
    float s = a[0] * b[i];
    for (int t = 1; t < n; t++) s += a[t * ast] * b[(size_t)t * bld + i];
    return scaled ? s * scale : s;
}

/* The products' blocks: R rows of the result (4 or 1) by NV vectors of 8
 * queries (2 or 1), R x NV independent chains, each operand vector loaded
 * once for R multiply-adds (one chain per loop ran at the adds' latency).
 * dst[r dld + i] = sum_{t < n} a[r ald + t ast] b[t bld + i] (* scale when
 * scaled), i in [i0, i0 + 8 NV), r < R.  R and NV are constants at each
 * call, so the loops over them unroll into registers. */
static inline __attribute__((always_inline)) void att_block(
    float* dst, size_t dld, const float* a, size_t ald, size_t ast, const float* restrict b,
    size_t bld, int n, int i0, const int R, const int NV, int scaled, float scale) {
#ifdef DDPM_LANES_VECTOR
    ddpm_f8 acc[4][2], p[2];
    for (int u = 0; u < NV; u++) DDPM_LOAD8(p[u], b + i0 + 8 * u);
    for (int r = 0; r < R; r++)
        for (int u = 0; u < NV; u++) acc[r][u] = a[(size_t)r * ald] * p[u];
    for (int t = 1; t < n; t++) {
        for (int u = 0; u < NV; u++) DDPM_LOAD8(p[u], b + (size_t)t * bld + i0 + 8 * u);
        for (int r = 0; r < R; r++)
            for (int u = 0; u < NV; u++) acc[r][u] += a[(size_t)r * ald + t * ast] * p[u];
    }
    for (int r = 0; r < R; r++)
        for (int u = 0; u < NV; u++) {
            if (scaled) acc[r][u] *= scale;
            memcpy(dst + (size_t)r * dld + i0 + 8 * u, &acc[r][u], sizeof(ddpm_f8));
        }
#else
    for (int r = 0; r < R; r++)
        for (int i = i0; i < i0 + 8 * NV; i++)
            dst[(size_t)r * dld + i] = att_elem(a + (size_t)r * ald, ast, b, bld, n, i, scaled, scale);
#endif
}

/* dst[r dld + i] = as att_block, for all i in [0, m) and R rows: blocks of
 * 16 and 8 queries, then the last m % 8 one by one (the same sequence in
 * scalar arithmetic). */
static inline __attribute__((always_inline)) void att_rows(float* dst, size_t dld, const float* a,
                                                           size_t ald, size_t ast,
                                                           const float* restrict b, size_t bld,
                                                           int n, int m, const int R, int scaled,
                                                           float scale) {
    int i = 0;
    for (; i + 16 <= m; i += 16) att_block(dst, dld, a, ald, ast, b, bld, n, i, R, 2, scaled, scale);
    for (; i + 8 <= m; i += 8) att_block(dst, dld, a, ald, ast, b, bld, n, i, R, 1, scaled, scale);
    for (; i < m; i++)
        for (int r = 0; r < R; r++)
            dst[(size_t)r * dld + i] = att_elem(a + (size_t)r * ald, ast, b, bld, n, i, scaled, scale);
}

/* x[0..n) := ddpm_expf(x[0..n)): in 16-float vectors where the CPU has
 * AVX-512F, then four 8-float vectors side by side (ddpm_expf8 says why; a
 * loop of ddpm_expf became one vector at a time), then one by one: the same
 * bits every way.  The exps were a third of a head's time. */
static inline __attribute__((always_inline)) void exp_run(float* x, int n) {
    int i = ddpm_expf_row_wide(x, n);
#ifdef DDPM_LANES_VECTOR
    ddpm_f8 v0, v1, v2, v3;
    for (; i + 32 <= n; i += 32) {
        DDPM_LOAD8(v0, x + i);
        DDPM_LOAD8(v1, x + i + 8);
        DDPM_LOAD8(v2, x + i + 16);
        DDPM_LOAD8(v3, x + i + 24);
        ddpm_expf8(&v0, &v0);
        ddpm_expf8(&v1, &v1);
        ddpm_expf8(&v2, &v2);
        ddpm_expf8(&v3, &v3);
        memcpy(x + i, &v0, sizeof v0);
        memcpy(x + i + 8, &v1, sizeof v1);
        memcpy(x + i + 16, &v2, sizeof v2);
        memcpy(x + i + 24, &v3, sizeof v3);
    }
#endif
    for (; i < n; i++) x[i] = ddpm_expf(x[i]);
}

/* Each column i of PT (HW, HW) := softmax over the keys j: exp(x - max) /
 * sum, the sum accumulated in float64 for j = 0, 1, ...; in blocks of
 * ATT_COLS columns, whose running maxima and sums stay in L1. */
#define ATT_COLS 64
static inline __attribute__((always_inline)) void softmax_columns(float* PT, int HW) {
    for (int i0 = 0; i0 < HW; i0 += ATT_COLS) {
        const int nb = HW - i0 < ATT_COLS ? HW - i0 : ATT_COLS;
        float mx[ATT_COLS], inv[ATT_COLS];
        double sum[ATT_COLS];
        float* col = PT + i0;
        for (int i = 0; i < nb; i++) mx[i] = col[i];
        for (int j = 1; j < HW; j++) {
            const float* r = col + (size_t)j * HW;
            for (int i = 0; i < nb; i++) mx[i] = r[i] > mx[i] ? r[i] : mx[i];
        }
        for (int j = 0; j < HW; j++) {
            float* r = col + (size_t)j * HW;
            for (int i = 0; i < nb; i++) r[i] -= mx[i];
        }
        if (nb == HW)   /* the block is all of PT: one run */
            exp_run(col, HW * HW);
        else
            for (int j = 0; j < HW; j++) exp_run(col + (size_t)j * HW, nb);
        for (int i = 0; i < nb; i++) sum[i] = 0.0;
        for (int j = 0; j < HW; j++) {
            const float* r = col + (size_t)j * HW;
            for (int i = 0; i < nb; i++) sum[i] += (double)r[i];
        }
        for (int i = 0; i < nb; i++) inv[i] = (float)(1.0 / sum[i]);
        for (int j = 0; j < HW; j++) {
            float* r = col + (size_t)j * HW;
            for (int i = 0; i < nb; i++) r[i] *= inv[i];
        }
    }
}

/* P (n, n) := its transpose, in place */
static inline void transpose_square(float* P, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const float t = P[(size_t)i * n + j];
            P[(size_t)i * n + j] = P[(size_t)j * n + i];
            P[(size_t)j * n + i] = t;
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

/* One (b, h) task: o (hd, HW, rows ld apart) from q, k, v (the same), PT
 * (HW, HW) its scratch; with keep, PT ends as P (row-major), for backward. */
DDPM_SIMD_CLONES
static void attention_head(float* o, float* PT, const float* q, const float* k, const float* v,
                           int hd, int HW, size_t ld, float scale, int keep) {
    /* S^T = scale k^T q (HW, HW): rows j of S^T from columns j of k, 4 at a time
     * (S^T[j][i] = scale sum_d k[d][j] q[d][i]) */
    int j = 0;
    for (; j + 4 <= HW; j += 4)
        att_rows(PT + (size_t)j * HW, HW, k + j, 1, ld, q, ld, hd, HW, 4, 1, scale);
    for (; j < HW; j++) att_rows(PT + (size_t)j * HW, HW, k + j, 1, ld, q, ld, hd, HW, 1, 1, scale);
    softmax_columns(PT, HW);
    /* o = v P^T (hd, HW): rows d of o from rows d of v, 4 at a time
     * (o[d][i] = sum_j v[d][j] PT[j][i]) */
    int d = 0;
    for (; d + 4 <= hd; d += 4)
        att_rows(o + (size_t)d * ld, ld, v + (size_t)d * ld, ld, 1, PT, HW, HW, HW, 4, 0, 1.0f);
    for (; d < hd; d++)
        att_rows(o + (size_t)d * ld, ld, v + (size_t)d * ld, ld, 1, PT, HW, HW, HW, 1, 0, 1.0f);
    if (keep) transpose_square(PT, HW);
}

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
        float* PT = att + (size_t)(keep ? task : ddpm_thread_num()) * HW * HW;
        attention_head(PANEL(out, 0), PT, PANEL(qkv, 0), PANEL(qkv, C), PANEL(qkv, 2 * C), hd, HW,
                       (size_t)ld, scale, keep);
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
