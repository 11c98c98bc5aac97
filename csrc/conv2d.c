/*
 * conv2d.c - convolution as im2col + one SGEMM per batch chunk.
 *
 * Chunks bound the im2col scratch (2 MB, so it stays in cache while the GEMM
 * packs it; 8 MB measured 10-25% slower); the chunk size depends only
 * on the shapes, never on the thread count, so the weight gradient, summed
 * chunk after chunk, has one fixed order.
 */
#include "conv2d.h"
#include "common.h"
#include "matmul.h"

#define COL_BUDGET_FLOATS (1u << 19)   /* 2 MB of im2col scratch: stays in L2 (measured best) */

static int out_size(int n, int K, int S) { return (n + 2 * (K / 2) - K) / S + 1; }

int conv2d_chunk(int B, int C, int H, int W, int K, int S) {
    size_t per_sample = (size_t)C * K * K * out_size(H, K, S) * out_size(W, K, S);
    size_t nb = COL_BUDGET_FLOATS / (per_sample ? per_sample : 1);
    if (nb < 1) nb = 1;
    if (nb > (size_t)B) nb = (size_t)B;
    return (int)nb;
}

size_t conv2d_col_floats(int B, int C, int H, int W, int K, int S) {
    if (K == 1 && S == 1) return 0;
    return (size_t)conv2d_chunk(B, C, H, W, K, S) * C * K * K * out_size(H, K, S) *
           out_size(W, K, S);
}

/* col (C*K*K, nb*Ho*Wo) from samples b0 .. b0+nb-1 of inp (C, B, H, W). */
static void im2col(float* col, const float* inp, int b0, int nb, int B, int C, int H, int W,
                   int K, int S) {
    const int pad = K / 2, Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t ncols = (size_t)nb * Ho * Wo;
    int nt = ddpm_threads_for((size_t)C * ncols * K * K, 1 << 15);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int c = 0; c < C; c++) {
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                float* row = col + ((size_t)(c * K + kh) * K + kw) * ncols;
                for (int b = 0; b < nb; b++) {
                    const float* x = inp + ((size_t)c * B + b0 + b) * H * W;
                    float* r = row + (size_t)b * Ho * Wo;
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * S + kh - pad;
                        float* ro = r + (size_t)oh * Wo;
                        if (ih < 0 || ih >= H) {
                            for (int ow = 0; ow < Wo; ow++) ro[ow] = 0.0f;
                            continue;
                        }
                        const float* xr = x + (size_t)ih * W;
                        if (S == 1) {
                            /* interior is a shifted copy; only the edges pad */
                            int lo = pad - kw > 0 ? pad - kw : 0;
                            int hi = W + pad - kw < Wo ? W + pad - kw : Wo;
                            for (int ow = 0; ow < lo; ow++) ro[ow] = 0.0f;
                            for (int ow = lo; ow < hi; ow++) ro[ow] = xr[ow + kw - pad];
                            for (int ow = hi; ow < Wo; ow++) ro[ow] = 0.0f;
                        } else {
                            for (int ow = 0; ow < Wo; ow++) {
                                int iw = ow * S + kw - pad;
                                ro[ow] = (iw >= 0 && iw < W) ? xr[iw] : 0.0f;
                            }
                        }
                    }
                }
            }
    }
}

/* dinp (C, B, H, W) += col2im(dcol); parallel over c: each channel's rows of
 * dcol land only in that channel, and each element sums (kh, kw) in order. */
static void col2im_add(float* dinp, const float* col, int b0, int nb, int B, int C, int H,
                       int W, int K, int S) {
    const int pad = K / 2, Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t ncols = (size_t)nb * Ho * Wo;
    int nt = ddpm_threads_for((size_t)C * ncols * K * K, 1 << 15);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int c = 0; c < C; c++) {
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float* row = col + ((size_t)(c * K + kh) * K + kw) * ncols;
                for (int b = 0; b < nb; b++) {
                    float* x = dinp + ((size_t)c * B + b0 + b) * H * W;
                    const float* r = row + (size_t)b * Ho * Wo;
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * S + kh - pad;
                        if (ih < 0 || ih >= H) continue;
                        const float* ro = r + (size_t)oh * Wo;
                        float* xr = x + (size_t)ih * W;
                        if (S == 1) {
                            int lo = pad - kw > 0 ? pad - kw : 0;
                            int hi = W + pad - kw < Wo ? W + pad - kw : Wo;
                            for (int ow = lo; ow < hi; ow++) xr[ow + kw - pad] += ro[ow];
                        } else {
                            for (int ow = 0; ow < Wo; ow++) {
                                int iw = ow * S + kw - pad;
                                if (iw >= 0 && iw < W) xr[iw] += ro[ow];
                            }
                        }
                    }
                }
            }
    }
}

void conv2d_forward(float* out, float* col, const float* inp, const float* weight,
                    const float* bias, int B, int C, int H, int W, int OC, int K, int S,
                    int accumulate) {
    const int Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t plane = (size_t)B * Ho * Wo;   /* one output channel, whole batch */
    /* bias (and the zero start) written first; the GEMM then adds onto it */
    int nt = ddpm_threads_for((size_t)OC * plane, 1 << 15);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int oc = 0; oc < OC; oc++) {
        float* o = out + (size_t)oc * plane;
        float bv = bias ? bias[oc] : 0.0f;
        if (accumulate) {
            if (bias) for (size_t i = 0; i < plane; i++) o[i] += bv;
        } else {
            for (size_t i = 0; i < plane; i++) o[i] = bv;
        }
    }
    const int CKK = C * K * K;
    if (K == 1 && S == 1) {
        sgemm_nn(OC, (int)plane, C, 1.0f, weight, C, inp, (int)plane, 1.0f, out, (int)plane);
        return;
    }
    const int nb = conv2d_chunk(B, C, H, W, K, S);
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        im2col(col, inp, b0, n, B, C, H, W, K, S);
        sgemm_nn(OC, n * Ho * Wo, CKK, 1.0f, weight, CKK, col, n * Ho * Wo, 1.0f,
                 out + (size_t)b0 * Ho * Wo, (int)plane);
    }
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, float* col, const float* dout,
                     const float* inp, const float* weight, int B, int C, int H, int W, int OC,
                     int K, int S) {
    const int Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t plane = (size_t)B * Ho * Wo;
    if (dbias) {
        int nt = ddpm_threads_for((size_t)OC * plane, 1 << 15);
        (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
        for (int oc = 0; oc < OC; oc++) {
            const float* d = dout + (size_t)oc * plane;
            double s = 0.0;
            for (size_t i = 0; i < plane; i++) s += d[i];
            dbias[oc] += (float)s;
        }
    }
    const int CKK = C * K * K;
    if (K == 1 && S == 1) {
        sgemm_nt(OC, C, (int)plane, 1.0f, dout, (int)plane, inp, (int)plane, 1.0f, dweight, C);
        if (dinp)
            sgemm_tn(C, (int)plane, OC, 1.0f, weight, C, dout, (int)plane, 1.0f, dinp,
                     (int)plane);
        return;
    }
    const int nb = conv2d_chunk(B, C, H, W, K, S);
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        const float* d = dout + (size_t)b0 * Ho * Wo;
        im2col(col, inp, b0, n, B, C, H, W, K, S);
        sgemm_nt(OC, CKK, n * Ho * Wo, 1.0f, d, (int)plane, col, n * Ho * Wo, 1.0f, dweight,
                 CKK);
        if (dinp) {
            sgemm_tn(CKK, n * Ho * Wo, OC, 1.0f, weight, CKK, d, (int)plane, 0.0f, col,
                     n * Ho * Wo);
            col2im_add(dinp, col, b0, n, B, C, H, W, K, S);
        }
    }
}
