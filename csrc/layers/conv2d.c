/*
 * conv2d.c - convolution: Winograd for 3x3 stride-1 layers,
 * im2col + one SGEMM per batch chunk for the rest (stride 2, 1x1, wide rows).
 *
 * im2col chunks bound the scratch (2 MB, so it stays in cache while the GEMM
 * packs it; 8 MB measured 10-25% slower); the chunk size depends only
 * on the shapes, never on the thread count, so the weight gradient, summed
 * chunk after chunk, has one fixed order.
 *
 * The 3x3 stride-1 layers run Winograd (winograd.h: the engine in
 * winograd.c, the F(2x2, 3x3) and F(4x4, 3x3) tiles in wino_f2.c and
 * wino_f4.c, wino_f4_planes.c); which tile, for the forward and for each part of the
 * backward, is chosen here from the layer's shape.
 */
#include "layers/conv2d.h"
#include "core/common.h"
#include "core/threads.h"
#include "core/matmul.h"
#include "layers/winograd.h"
#include <string.h>
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

/* col (C*K*K, nb*Ho*Wo) from samples b0 .. b0+nb-1 of inp (C, B, H, W),
 * read through act (C, B) when given, S = 1 only (the padding stays zero). */
static void im2col(float* col, const float* inp, const NormAct* act, int b0, int nb, int B,
                   int C, int H, int W, int K, int S) {
    const int pad = K / 2, Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t ncols = (size_t)nb * Ho * Wo;
    int nt = ddpm_threads_for((size_t)C * ncols * K * K, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int c = 0; c < C; c++) {
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                float* row = col + ((size_t)(c * K + kh) * K + kw) * ncols;
                for (int b = 0; b < nb; b++) {
                    const float* x = inp + ((size_t)c * B + b0 + b) * H * W;
                    float* r = row + (size_t)b * Ho * Wo;
                    const size_t cb = (size_t)c * B + b0 + b;
                    const float ca = act ? act->a[cb] : 1.0f, ck = act ? act->k[cb] : 0.0f;
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
                            if (act)
                                groupnorm_act_row(ro + lo, xr + lo + kw - pad, hi - lo, ca, ck,
                                                  act->silu);
                            else
                                for (int ow = lo; ow < hi; ow++) ro[ow] = xr[ow + kw - pad];
                            for (int ow = hi; ow < Wo; ow++) ro[ow] = 0.0f;
                        } else {   /* act comes with S = 1 only (conv2d_forward_norm) */
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
    DDPM_PARALLEL_FOR(nt)
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


/* ------------------------------------------------------------ Winograd */

/* Which 3x3 stride-1 layers go through Winograd (the rest through im2col),
 * and with which tile: with 1-3 input channels the GEMMs degenerate (K < 4)
 * and the transforms dominate; im2col measured faster for the 1-channel
 * input layer.  The choice depends on the shapes alone. */
static int use_winograd(int C, int H, int W, int OC, int K, int S) {
    (void)H; (void)OC;
    return K == 3 && S == 1 && W <= WINO_MAX_W && C >= 4;
}

/* The tile for the forward (and for the input gradient, the forward of dout
 * with the rotated weights, OC -> C) and for the weight gradient.  F(4x4)
 * measured faster than F(2x2) on every 3x3 layer of the U-Net (28x28,
 * 14x14, 7x7; 32-256 channels), forward 1.1-1.9x, backward ~1.15x; with
 * fewer than 8 output channels (conv_out, 32 -> 1) the a*a = 36 GEMMs of
 * one row each are all overhead and F(2x2) is faster. */
static const WinoKind* kind_fwd(int C, int H, int W, int OC) {
    (void)C; (void)H; (void)W;
    return OC >= 8 ? &wino_f4 : &wino_f2;
}

static const WinoKind* kind_dw(int C, int H, int W, int OC) {
    (void)C; (void)H; (void)W;
    return OC >= 8 ? &wino_f4 : &wino_f2;
}

int conv2d_whole_planes(int on) { return wino_whole_planes(on); }

size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int K, int S) {
    if (K == 1 && S == 1) return matmul_nt_ksplit_floats(OC, C, B * H * W);
    if (use_winograd(C, H, W, OC, K, S)) {
        const WinoKind *kf = kind_fwd(C, H, W, OC), *kx = kind_fwd(OC, H, W, C);
        size_t f = wino_scratch_floats(kf, kf, B, C, H, W, OC);
        size_t b = wino_scratch_floats(kind_dw(C, H, W, OC), kx, B, C, H, W, OC);
        return f > b ? f : b;
    }
    return conv2d_col_floats(B, C, H, W, K, S);
}

void conv2d_forward(float* out, float* col, const float* inp, const float* weight,
                    const float* bias, int B, int C, int H, int W, int OC, int K, int S,
                    int accumulate) {
    conv2d_forward_add(out, col, inp, weight, bias, accumulate ? out : NULL, NULL, B, C, H, W, OC,
                       K, S, NULL);
}

/* o[i] = a[i] + bv (or bv without a): where the GEMM's output starts. */
DDPM_SIMD_CLONES
static void start_row(float* o, const float* a, float bv, size_t n) {   /* a may be o */
    if (a)
        for (size_t i = 0; i < n; i++) o[i] = a[i] + bv;
    else
        for (size_t i = 0; i < n; i++) o[i] = bv;
}

/* conv2d_forward_add with inp read through act (or NULL); act only where
 * the input is copied (never K = 1, S = 1, whose GEMM reads inp itself). */
static void forward(float* out, float* col, const float* inp, const NormAct* act,
                    const float* weight, const float* bias, const float* add,
                    const float* add_bo, int B, int C, int H, int W, int OC, int K, int S,
                    const float* u) {
    if (add) add_bo = NULL;
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_forward(kind_fwd(C, H, W, OC), out, col, inp, act, weight, u, bias, add, add_bo, B,
                     C, H, W, OC);
        return;
    }
    const int Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t HWo = (size_t)Ho * Wo, plane = (size_t)B * HWo;   /* one output channel */
    /* the start (add + bias) written first; the GEMM then adds onto it */
    int nt = ddpm_threads_for((size_t)OC * plane, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int oc = 0; oc < OC; oc++)
        for (int b = 0; b < B; b++) {
            float* o = out + (size_t)oc * plane + (size_t)b * HWo;
            const WinoStart st = {bias, add_bo, oc, OC};
            const float bv = wino_start(&st, b);
            start_row(o, add ? add + (size_t)oc * plane + (size_t)b * HWo : NULL, bv, HWo);
        }
    const int CKK = C * K * K;
    if (K == 1 && S == 1) {
        sgemm_nn(OC, (int)plane, C, 1.0f, weight, C, inp, (int)plane, 1.0f, out, (int)plane);
        return;
    }
    const int nb = conv2d_chunk(B, C, H, W, K, S);
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        im2col(col, inp, act, b0, n, B, C, H, W, K, S);
        sgemm_nn(OC, n * Ho * Wo, CKK, 1.0f, weight, CKK, col, n * Ho * Wo, 1.0f,
                 out + (size_t)b0 * Ho * Wo, (int)plane);
    }
}

void conv2d_forward_add(float* out, float* col, const float* inp, const float* weight,
                        const float* bias, const float* add, const float* add_bo, int B, int C,
                        int H, int W, int OC, int K, int S, const float* u) {
    forward(out, col, inp, NULL, weight, bias, add, add_bo, B, C, H, W, OC, K, S, u);
}

void conv2d_forward_norm(float* out, float* col, const float* inp, const NormAct* act,
                         const float* weight, const float* bias, const float* add,
                         const float* add_bo, int B, int C, int H, int W, int OC,
                         const float* u) {
    forward(out, col, inp, act, weight, bias, add, add_bo, B, C, H, W, OC, 3, 1, u);
}

size_t conv2d_weights_floats(int C, int H, int W, int OC, int K, int S) {
    if (!use_winograd(C, H, W, OC, K, S)) return 0;
    const WinoKind* k = kind_fwd(C, H, W, OC);
    return (size_t)k->a * k->a * OC * C;
}

void conv2d_weights(float* u, const float* weight, int C, int H, int W, int OC, int K, int S) {
    if (use_winograd(C, H, W, OC, K, S)) wino_weights(kind_fwd(C, H, W, OC), u, weight, C, OC);
}

void conv2d_backward(float* dinp, float* dweight, float* dbias, float* col, const float* dout,
                     const float* inp, const float* weight, int B, int C, int H, int W, int OC,
                     int K, int S, int accumulate) {
    const int Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t plane = (size_t)B * Ho * Wo;
    if (dbias) {
        int nt = ddpm_threads_for((size_t)OC * plane, 1 << 15);
        DDPM_PARALLEL_FOR(nt)
        for (int oc = 0; oc < OC; oc++) dbias[oc] += (float)ddpm_sum(dout + (size_t)oc * plane, plane);
    }
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_backward(kind_dw(C, H, W, OC), kind_fwd(OC, H, W, C), dinp, dweight, col, dout, inp,
                      weight, B, C, H, W, OC, accumulate);
        return;
    }
    const int CKK = C * K * K;
    if (K == 1 && S == 1) {
        matmul_nt_ksplit(OC, C, (int)plane, dout, (int)plane, inp, (int)plane, dweight, C, col);
        if (dinp)
            sgemm_tn(C, (int)plane, OC, 1.0f, weight, C, dout, (int)plane,
                     accumulate ? 1.0f : 0.0f, dinp, (int)plane);
        return;
    }
    if (dinp && !accumulate) ddpm_zero(dinp, (size_t)C * B * H * W);   /* col2im adds */
    const int nb = conv2d_chunk(B, C, H, W, K, S);
    for (int b0 = 0; b0 < B; b0 += nb) {
        int n = B - b0 < nb ? B - b0 : nb;
        const float* d = dout + (size_t)b0 * Ho * Wo;
        im2col(col, inp, NULL, b0, n, B, C, H, W, K, S);
        sgemm_nt(OC, CKK, n * Ho * Wo, 1.0f, d, (int)plane, col, n * Ho * Wo, 1.0f, dweight,
                 CKK);
        if (dinp) {
            sgemm_tn(CKK, n * Ho * Wo, OC, 1.0f, weight, CKK, d, (int)plane, 0.0f, col,
                     n * Ho * Wo);
            col2im_add(dinp, col, b0, n, B, C, H, W, K, S);
        }
    }
}
