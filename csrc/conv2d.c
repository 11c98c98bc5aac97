/*
 * conv2d.c - convolution: Winograd F(2x2, 3x3) for 3x3 stride-1 layers,
 * im2col + one SGEMM per batch chunk for the rest (stride 2, 1x1, wide rows).
 *
 * im2col chunks bound the scratch (2 MB, so it stays in cache while the GEMM
 * packs it; 8 MB measured 10-25% slower); the chunk size depends only
 * on the shapes, never on the thread count, so the weight gradient, summed
 * chunk after chunk, has one fixed order.
 *
 * Winograd F(2x2, 3x3) (Lavin & Gray 2015): each 2x2 block of outputs
 * ("tile") comes from a 4x4 window of input starting one row/column up-left
 * (the zero padding), Y = A^T [(G g G^T) o (B^T d B)] A.  The elementwise
 * product, summed over input channels, is 16 independent GEMMs, one per
 * position xi = 4 i + j of the 4x4 transformed tile, with N = tiles: 16 C
 * multiplies per tile and output channel instead of 36 C, so 2.25x fewer
 * flops, and the GEMMs have the tile count as N however few channels there
 * are.  Backward is the adjoint of each step:
 *   dM = A dY A^T,  dU_xi = dM_xi V_xi^T (summed over tiles),  dg = G^T dU G,
 *   dV_xi = U_xi^T dM_xi,  d(input window) += B dV B^T (windows overlap).
 * With B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5;
 * .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]: only adds and halvings, so
 * float32 errors stay ~1e-6 relative.  Tiles are processed a chunk of whole
 * samples at a time (chunk size from the shapes alone); inside a chunk the
 * transforms split over (channel, sample) and the 16 GEMMs over positions,
 * so every float is produced by the same operations in the same order
 * whatever the thread count.
 */
#include "conv2d.h"
#include "common.h"
#include "matmul.h"
#include <cblas.h>
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


/* ------------------------------------------------------------ Winograd */

#define WINO_MAX_W 256                 /* row buffers below live on the stack */
#define WINO_ROW (WINO_MAX_W + 4)      /* padded row: 2 * ceil(W/2) + 2 <= W + 3 */
#define WINO_BUDGET_FLOATS (1u << 17)  /* transformed input + products per chunk: 512 KB,
                                          * half an L2 (measured better than 2-8 MB) */

static int wino_tiles(int n) { return (n + 1) / 2; }

/* Which 3x3 stride-1 layers go through Winograd (the rest through im2col):
 * with 1-3 input channels the GEMMs degenerate (K < 4) and the transforms
 * dominate; im2col measured faster for the 1-channel input layer. */
static int use_winograd(int C, int H, int W, int OC, int K, int S) {
    (void)H; (void)OC;
    return K == 3 && S == 1 && W <= WINO_MAX_W && C >= 4;
}

/* Samples per Winograd chunk: a function of the shapes alone. */
static int wino_chunk(int B, int C, int H, int W, int OC) {
    size_t per_sample = (size_t)16 * (C + OC) * wino_tiles(H) * wino_tiles(W);
    size_t nb = WINO_BUDGET_FLOATS / per_sample;
    if (nb < 1) nb = 1;
    if (nb > (size_t)B) nb = (size_t)B;
    return (int)nb;
}

/* Scratch: U (16, OC, C) | dU (16, OC, C) | V (16, C, T) | M (16, OC, T),
 * T = tiles of one chunk; returns the floats and the offsets. */
static size_t wino_layout(int B, int C, int H, int W, int OC, size_t* off_du, size_t* off_v,
                          size_t* off_m) {
    size_t T = (size_t)wino_chunk(B, C, H, W, OC) * wino_tiles(H) * wino_tiles(W);
    size_t u = (size_t)16 * OC * C;
    *off_du = u;
    *off_v = 2 * u;
    *off_m = 2 * u + (size_t)16 * C * T;
    return *off_m + (size_t)16 * OC * T;
}

size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int K, int S) {
    if (use_winograd(C, H, W, OC, K, S)) {
        size_t a, b, c;
        return wino_layout(B, C, H, W, OC, &a, &b, &c);
    }
    return conv2d_col_floats(B, C, H, W, K, S);
}

/* U (16, OC, C) = G g G^T for every g = weight[oc][c] (3, 3). */
static void wino_weights(float* U, const float* weight, int C, int OC, int oc) {
    const size_t xs = (size_t)OC * C;
    for (int c = 0; c < C; c++) {
        const float* g = weight + ((size_t)oc * C + c) * 9;
        float t[4][3];
        for (int j = 0; j < 3; j++) {
            t[0][j] = g[j];
            t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            t[3][j] = g[6 + j];
        }
        float* u = U + (size_t)oc * C + c;
        for (int i = 0; i < 4; i++) {
            u[(4 * i + 0) * xs] = t[i][0];
            u[(4 * i + 1) * xs] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            u[(4 * i + 2) * xs] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            u[(4 * i + 3) * xs] = t[i][2];
        }
    }
}

/* dweight[oc] (C, 3, 3) += G^T du G for every du = dU[.][oc][c] (4, 4). */
static void wino_weights_adjoint(float* dweight, const float* dU, int C, int OC, int oc) {
    const size_t xs = (size_t)OC * C;
    for (int c = 0; c < C; c++) {
        const float* u = dU + (size_t)oc * C + c;
        float s[3][4];
        for (int j = 0; j < 4; j++) {
            float u0 = u[j * xs], u1 = u[(4 + j) * xs], u2 = u[(8 + j) * xs], u3 = u[(12 + j) * xs];
            s[0][j] = u0 + 0.5f * (u1 + u2);
            s[1][j] = 0.5f * (u1 - u2);
            s[2][j] = 0.5f * (u1 + u2) + u3;
        }
        float* g = dweight + ((size_t)oc * C + c) * 9;
        for (int i = 0; i < 3; i++) {
            g[3 * i + 0] += s[i][0] + 0.5f * (s[i][1] + s[i][2]);
            g[3 * i + 1] += 0.5f * (s[i][1] - s[i][2]);
            g[3 * i + 2] += 0.5f * (s[i][1] + s[i][2]) + s[i][3];
        }
    }
}

/* V[xi][t] (16 rows, stride xs) = B^T d B for the tiles t of one plane
 * x (H, W), d the 4x4 window at rows 2ty-1.., columns 2tx-1.. (zero outside). */
DDPM_SIMD_CLONES
static void wino_input(float* V, size_t xs, const float* x, int H, int W) {
    const int th = wino_tiles(H), tw = wino_tiles(W), Wp = 2 * tw + 2;
    float r[4][WINO_ROW], t[4][WINO_ROW];
    for (int ty = 0; ty < th; ty++) {
        /* the 4 input rows, one zero column left, zeros right up to Wp */
        for (int i = 0; i < 4; i++) {
            int h = 2 * ty - 1 + i;
            for (int q = 0; q < Wp; q++) r[i][q] = 0.0f;
            if (h >= 0 && h < H) memcpy(&r[i][1], x + (size_t)h * W, sizeof(float) * W);
        }
        /* B^T down the columns: elementwise over the row, so it vectorises */
        for (int q = 0; q < Wp; q++) {
            t[0][q] = r[0][q] - r[2][q];
            t[1][q] = r[1][q] + r[2][q];
            t[2][q] = r[2][q] - r[1][q];
            t[3][q] = r[1][q] - r[3][q];
        }
        /* ... then B along each tile's 4 columns */
        for (int i = 0; i < 4; i++) {
            float* v0 = V + (size_t)(4 * i) * xs + (size_t)ty * tw;
            float* v1 = v0 + xs;
            float* v2 = v1 + xs;
            float* v3 = v2 + xs;
            const float* ti = t[i];
            for (int tx = 0; tx < tw; tx++) {
                float d0 = ti[2 * tx], d1 = ti[2 * tx + 1], d2 = ti[2 * tx + 2], d3 = ti[2 * tx + 3];
                v0[tx] = d0 - d2;
                v1[tx] = d1 + d2;
                v2[tx] = d2 - d1;
                v3[tx] = d1 - d3;
            }
        }
    }
}

/* y (H, W) = [acc ? y : 0] + bias + A^T m A for the tiles of one plane,
 * m[xi][t] 16 rows of stride xs; outputs beyond H, W are dropped. */
DDPM_SIMD_CLONES
static void wino_output(float* y, const float* M, size_t xs, float bias, int acc, int H, int W) {
    const int th = wino_tiles(H), tw = wino_tiles(W);
    float o0[WINO_ROW], o1[WINO_ROW];
    for (int ty = 0; ty < th; ty++) {
        const float* m = M + (size_t)ty * tw;
        for (int tx = 0; tx < tw; tx++) {
            float s0[4], s1[4];
            for (int j = 0; j < 4; j++) {
                float m0 = m[j * xs + tx], m1 = m[(4 + j) * xs + tx];
                float m2 = m[(8 + j) * xs + tx], m3 = m[(12 + j) * xs + tx];
                s0[j] = m0 + m1 + m2;
                s1[j] = m1 - m2 - m3;
            }
            o0[2 * tx] = s0[0] + s0[1] + s0[2];
            o0[2 * tx + 1] = s0[1] - s0[2] - s0[3];
            o1[2 * tx] = s1[0] + s1[1] + s1[2];
            o1[2 * tx + 1] = s1[1] - s1[2] - s1[3];
        }
        for (int k = 0; k < 2; k++) {
            int h = 2 * ty + k;
            if (h >= H) break;
            float* yr = y + (size_t)h * W;
            const float* o = k ? o1 : o0;
            if (acc)
                for (int w = 0; w < W; w++) yr[w] = (yr[w] + bias) + o[w];
            else
                for (int w = 0; w < W; w++) yr[w] = bias + o[w];
        }
    }
}

/* dM[xi][t] (16 rows, stride xs) = A dy A^T for the tiles of one plane
 * dy (H, W), each tile's 2x2 block read with zeros beyond H, W. */
DDPM_SIMD_CLONES
static void wino_output_adjoint(float* dM, size_t xs, const float* dy, int H, int W) {
    const int th = wino_tiles(H), tw = wino_tiles(W);
    float r0[WINO_ROW], r1[WINO_ROW];
    for (int ty = 0; ty < th; ty++) {
        for (int q = 0; q < 2 * tw; q++) r0[q] = r1[q] = 0.0f;
        memcpy(r0, dy + (size_t)(2 * ty) * W, sizeof(float) * W);
        if (2 * ty + 1 < H) memcpy(r1, dy + (size_t)(2 * ty + 1) * W, sizeof(float) * W);
        float* m = dM + (size_t)ty * tw;
        for (int tx = 0; tx < tw; tx++) {
            float a = r0[2 * tx], b = r0[2 * tx + 1], c = r1[2 * tx], d = r1[2 * tx + 1];
            float e0[4] = {a, a + b, a - b, -b};   /* A dy^T of row 0 */
            float e1[4] = {c, c + d, c - d, -d};   /* ... and of row 1 */
            for (int j = 0; j < 4; j++) {
                m[j * xs + tx] = e0[j];
                m[(4 + j) * xs + tx] = e0[j] + e1[j];
                m[(8 + j) * xs + tx] = e0[j] - e1[j];
                m[(12 + j) * xs + tx] = -e1[j];
            }
        }
    }
}

/* dx (H, W) += B dv B^T of every tile, dv[xi][t] 16 rows of stride xs,
 * scattered to the overlapping 4x4 windows (rows/columns outside dropped).
 * Each element's (at most four) contributions are summed in a fixed order. */
DDPM_SIMD_CLONES
static void wino_input_adjoint(float* dx, const float* dV, size_t xs, int H, int W) {
    const int th = wino_tiles(H), tw = wino_tiles(W), Wp = 2 * tw + 2;
    /* a[i]: row i of (dv B^T) across the padded width; q0/q1 this tile's
     * columns 0, 1, q2/q3 the left neighbour's columns 2, 3 (shifted by 1) */
    float a[4][WINO_ROW], q0[WINO_ROW], q1[WINO_ROW], q2[WINO_ROW], q3[WINO_ROW];
    float p2[WINO_ROW], p3[WINO_ROW];   /* previous tile row's window rows 2, 3 */
    for (int q = 0; q < Wp; q++) p2[q] = p3[q] = 0.0f;
    for (int ty = 0; ty <= th; ty++) {
        if (ty < th) {
            for (int i = 0; i < 4; i++) {
                const float* v = dV + (size_t)(4 * i) * xs + (size_t)ty * tw;
                q0[tw] = q1[tw] = 0.0f;
                q2[0] = q3[0] = 0.0f;
                for (int tx = 0; tx < tw; tx++) {
                    float v0 = v[tx], v1 = v[xs + tx], v2 = v[2 * xs + tx], v3 = v[3 * xs + tx];
                    q0[tx] = v0;
                    q1[tx] = v1 - v2 + v3;
                    q2[tx + 1] = v1 + v2 - v0;
                    q3[tx + 1] = -v3;
                }
                for (int k = 0; k <= tw; k++) {
                    a[i][2 * k] = q0[k] + q2[k];
                    a[i][2 * k + 1] = q1[k] + q3[k];
                }
            }
        } else {
            for (int i = 0; i < 4; i++)
                for (int q = 0; q < Wp; q++) a[i][q] = 0.0f;
        }
        /* window rows 0, 1 of this tile row plus rows 2, 3 of the one above
         * land on input rows 2ty-1, 2ty */
        for (int k = 0; k < 2; k++) {
            int h = 2 * ty - 1 + k;
            float* xr = (h >= 0 && h < H) ? dx + (size_t)h * W : NULL;
            if (xr) {
                if (k == 0)
                    for (int w = 0; w < W; w++) xr[w] += a[0][w + 1] + p2[w + 1];
                else
                    for (int w = 0; w < W; w++)
                        xr[w] += (a[1][w + 1] - a[2][w + 1] + a[3][w + 1]) + p3[w + 1];
            }
        }
        for (int q = 0; q < Wp; q++) {
            p2[q] = a[1][q] + a[2][q] - a[0][q];
            p3[q] = -a[3][q];
        }
    }
}

/* out (OC, B, H, W) [+]= conv3x3(inp (C, B, H, W)) + bias through Winograd. */
static void wino_forward(float* out, float* scratch, const float* inp, const float* weight,
                         const float* bias, int B, int C, int H, int W, int OC, int accumulate) {
    size_t off_du, off_v, off_m;
    wino_layout(B, C, H, W, OC, &off_du, &off_v, &off_m);
    float* U = scratch;
    float* V = scratch + off_v;
    float* M = scratch + off_m;
    const int tpp = wino_tiles(H) * wino_tiles(W);   /* tiles per plane */
    const int nb = wino_chunk(B, C, H, W, OC);
    const size_t HW = (size_t)H * W;
    int nt = ddpm_threads_for((size_t)B * tpp * 16 * (C + OC), 1 << 14);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int oc = 0; oc < OC; oc++) wino_weights(U, weight, C, OC, oc);
        for (int b0 = 0; b0 < B; b0 += nb) {
            const int n = B - b0 < nb ? B - b0 : nb;
            const size_t T = (size_t)n * tpp;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int cb = 0; cb < C * n; cb++) {
                int c = cb / n, b = cb % n;
                wino_input(V + (size_t)c * T + (size_t)b * tpp, (size_t)C * T,
                           inp + ((size_t)c * B + b0 + b) * HW, H, W);
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int xi = 0; xi < 16; xi++)
                BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)T, C, 1.0f,
                                  U + (size_t)xi * OC * C, C, V + (size_t)xi * C * T, (int)T,
                                  0.0f, M + (size_t)xi * OC * T, (int)T);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int ob = 0; ob < OC * n; ob++) {
                int oc = ob / n, b = ob % n;
                wino_output(out + ((size_t)oc * B + b0 + b) * HW, M + (size_t)oc * T + (size_t)b * tpp,
                            (size_t)OC * T, bias ? bias[oc] : 0.0f, accumulate, H, W);
            }
        }
    }
}

/* dinp (C, B, H, W) += ... (or NULL), dweight (OC, C, 3, 3) += ... through
 * Winograd; dout (OC, B, H, W).  dU sums chunk after chunk in order. */
static void wino_backward(float* dinp, float* dweight, float* scratch, const float* dout,
                          const float* inp, const float* weight, int B, int C, int H, int W,
                          int OC) {
    size_t off_du, off_v, off_m;
    wino_layout(B, C, H, W, OC, &off_du, &off_v, &off_m);
    float* U = scratch;
    float* dU = scratch + off_du;
    float* V = scratch + off_v;
    float* dM = scratch + off_m;
    const int tpp = wino_tiles(H) * wino_tiles(W);
    const int nb = wino_chunk(B, C, H, W, OC);
    const size_t HW = (size_t)H * W;
    int nt = ddpm_threads_for((size_t)B * tpp * 16 * (C + OC), 1 << 14);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        if (dinp) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int oc = 0; oc < OC; oc++) wino_weights(U, weight, C, OC, oc);
        }
        for (int b0 = 0; b0 < B; b0 += nb) {
            const int n = B - b0 < nb ? B - b0 : nb;
            const size_t T = (size_t)n * tpp;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int k = 0; k < (C + OC) * n; k++) {
                if (k < C * n) {
                    int c = k / n, b = k % n;
                    wino_input(V + (size_t)c * T + (size_t)b * tpp, (size_t)C * T,
                               inp + ((size_t)c * B + b0 + b) * HW, H, W);
                } else {
                    int oc = (k - C * n) / n, b = (k - C * n) % n;
                    wino_output_adjoint(dM + (size_t)oc * T + (size_t)b * tpp, (size_t)OC * T,
                                        dout + ((size_t)oc * B + b0 + b) * HW, H, W);
                }
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int xi = 0; xi < 16; xi++) {
                float* Vx = V + (size_t)xi * C * T;
                const float* dMx = dM + (size_t)xi * OC * T;
                BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasTrans, OC, C, (int)T, 1.0f,
                                  dMx, (int)T, Vx, (int)T, b0 ? 1.0f : 0.0f,
                                  dU + (size_t)xi * OC * C, C);
                if (dinp)   /* V_xi is consumed: dV_xi = U_xi^T dM_xi overwrites it */
                    BLAS(cblas_sgemm)(CblasRowMajor, CblasTrans, CblasNoTrans, C, (int)T, OC,
                                      1.0f, U + (size_t)xi * OC * C, C, dMx, (int)T, 0.0f, Vx,
                                      (int)T);
            }
            if (dinp) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int cb = 0; cb < C * n; cb++) {
                    int c = cb / n, b = cb % n;
                    wino_input_adjoint(dinp + ((size_t)c * B + b0 + b) * HW,
                                       V + (size_t)c * T + (size_t)b * tpp, (size_t)C * T, H, W);
                }
            }
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int oc = 0; oc < OC; oc++) wino_weights_adjoint(dweight, dU, C, OC, oc);
    }
}

void conv2d_forward(float* out, float* col, const float* inp, const float* weight,
                    const float* bias, int B, int C, int H, int W, int OC, int K, int S,
                    int accumulate) {
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_forward(out, col, inp, weight, bias, B, C, H, W, OC, accumulate);
        return;
    }
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
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_backward(dinp, dweight, col, dout, inp, weight, B, C, H, W, OC);
        return;
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
