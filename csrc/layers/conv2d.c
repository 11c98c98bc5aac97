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
 * are.  The weight gradient is the adjoint of each step:
 *   dM = A dY A^T,  dU_xi = dM_xi V_xi^T (summed over tiles),  dg = G^T dU G.
 * With B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5;
 * .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]: only adds and halvings, so
 * float32 errors stay ~1e-6 relative.  backward-data is computed as the
 * forward convolution of dY with the 180-degree-rotated, transposed weights
 * (the same thing for stride 1, pad 1), so every chunk's outputs are
 * disjoint 2x2 tiles.  Work goes in chunks of tile rows (size from the shapes
 * alone), each chunk done start to end - transform, 16 single-threaded
 * GEMMs, inverse transform - by one thread in its own scratch lane: no
 * barrier per chunk (they cost most when the cores are shared), the data
 * stays in that core's L2, and every float is produced by the same
 * operations in the same order whatever the thread count.
 */
#include "layers/conv2d.h"
#include "core/common.h"
#include "core/threads.h"
#include "core/matmul.h"
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
    DDPM_PARALLEL_FOR(nt)
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

#define WINO_MAX_W 256                 /* row buffers below live on the stack */
#define WINO_ROW (WINO_MAX_W + 4)      /* padded row: 2 * ceil(W/2) + 2 <= W + 3 */
#define WINO_HALF (WINO_MAX_W / 2 + 2) /* one parity of a padded row: tw + 1 */
#define WINO_LANES 8                   /* scratch lanes: at most this many threads (a laptop
                                        * has 4-8 cores; each lane costs ~2 MB) */
/* One lane's transformed tiles + products.  Forward: 512 KB, half an L2
 * (measured better than 2-8 MB).  Backward: 2 MB, because its weight-gradient
 * GEMMs (OC x C, summed over the chunk's tiles) are A B^T products whose
 * per-call cost OpenBLAS amortises only over long sums: 32 x 32 x 126 ran
 * at 60 GF/s, x 504 at 86 GF/s; the backward measured ~8% faster. */
#define WINO_BUDGET_FWD (1u << 17)
#define WINO_BUDGET_BWD (1u << 19)
#define WINO_SUM_BLOCK 4096            /* floats per block of the weight-gradient partial sum */

static int wino_tiles(int n) { return (n + 1) / 2; }

/* Which 3x3 stride-1 layers go through Winograd (the rest through im2col):
 * with 1-3 input channels the GEMMs degenerate (K < 4) and the transforms
 * dominate; im2col measured faster for the 1-channel input layer. */
static int use_winograd(int C, int H, int W, int OC, int K, int S) {
    (void)H; (void)OC;
    return K == 3 && S == 1 && W <= WINO_MAX_W && C >= 4;
}

/* Tile rows per chunk (a chunk is a run of the B * ceil(H/2) rows of tiles,
 * across samples): a function of the shapes alone, and small enough that
 * every lane gets work on small inputs. */
static int wino_rows(int B, int C, int H, int W, int OC, size_t budget) {
    size_t per_row = (size_t)16 * (C + OC) * wino_tiles(W);
    size_t rows = (size_t)B * wino_tiles(H);
    size_t nr = budget / per_row;
    size_t even = (rows + WINO_LANES - 1) / WINO_LANES;
    if (nr > even) nr = even;
    if (nr < 1) nr = 1;
    return (int)nr;
}

/* Scratch: U (16, OC, C) | dU partials (WINO_LANES, 16, OC, C) |
 * WINO_LANES lanes of V (16, C, T) and M (16, OC, T), T = tiles of a chunk
 * (the backward's, the larger). */
static size_t wino_layout(int B, int C, int H, int W, int OC, size_t* off_du, size_t* off_lane,
                          size_t* lane) {
    size_t T = (size_t)wino_rows(B, C, H, W, OC, WINO_BUDGET_BWD) * wino_tiles(W);
    size_t u = (size_t)16 * OC * C;
    *off_du = u;
    *off_lane = u + WINO_LANES * u;
    *lane = (size_t)16 * (C + OC) * T;
    return *off_lane + WINO_LANES * *lane;
}

size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int K, int S) {
    if (K == 1 && S == 1) return matmul_nt_ksplit_floats(OC, C, B * H * W);
    if (use_winograd(C, H, W, OC, K, S)) {
        size_t a, b, c;
        return wino_layout(B, C, H, W, OC, &a, &b, &c);
    }
    return conv2d_col_floats(B, C, H, W, K, S);
}

/* u[xi * xs] (16 values) = G g G^T for one g (3, 3) read with strides (sh, sw):
 * (3, 1) as stored, or (-3, -1) from the last element for the 180-degree
 * rotation that backward-data convolves with. */
static void wino_weight(float* u, size_t xs, const float* g, int sh, int sw) {
    float t[4][3];
    for (int j = 0; j < 3; j++) {
        float g0 = g[j * sw], g1 = g[sh + j * sw], g2 = g[2 * sh + j * sw];
        t[0][j] = g0;
        t[1][j] = 0.5f * (g0 + g1 + g2);
        t[2][j] = 0.5f * (g0 - g1 + g2);
        t[3][j] = g2;
    }
    for (int i = 0; i < 4; i++) {
        u[(4 * i + 0) * xs] = t[i][0];
        u[(4 * i + 1) * xs] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u[(4 * i + 2) * xs] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u[(4 * i + 3) * xs] = t[i][2];
    }
}

/* dweight[oc] (C, 3, 3) += G^T du G, du (4, 4) = dU[xi][oc][c] (the
 * partials already summed into the first). */
static void wino_weights_adjoint(float* dweight, const float* dU, int C, int OC, int oc) {
    const size_t xs = (size_t)OC * C;
    for (int c = 0; c < C; c++) {
        const float* u = dU + (size_t)oc * C + c;
        float du[16];
        for (int xi = 0; xi < 16; xi++) du[xi] = u[xi * xs];
        float s[3][4];
        for (int j = 0; j < 4; j++) {
            float u0 = du[j], u1 = du[4 + j], u2 = du[8 + j], u3 = du[12 + j];
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

/* The transforms work on segments: whole tile rows ty0 .. ty0 + n - 1 of
 * one plane, at most WINO_SEG_TILES tiles.  Each first stages the rows it
 * needs, split by row and column parity, so that its main loop runs over the
 * segment's tiles k = m tw + tx as one flat unit-stride loop: full vectors
 * however narrow the plane (tw is 14, 7 and 4 in the U-Net; a loop per
 * tile row spent most of its time in vector tails and loop overhead). */
#define WINO_SEG_TILES 1024
#define WINO_STAGE (WINO_SEG_TILES + WINO_HALF)   /* (n + 1) tw floats */

static int wino_seg_rows(int W) {
    int s = WINO_SEG_TILES / wino_tiles(W);
    return s < 1 ? 1 : s;
}

/* A row yr (W floats) split by column parity, zeros beyond W (or all zeros
 * for yr NULL): ev[k] = yr[2k], od[k] = yr[2k + 1], k = 0 .. tw - 1. */
static inline void wino_split_row(float* ev, float* od, const float* yr, int W, int tw) {
    if (!yr) {
        for (int k = 0; k < tw; k++) ev[k] = od[k] = 0.0f;
        return;
    }
    const int W2 = W / 2;
    for (int k = 0; k < W2; k++) {
        ev[k] = yr[2 * k];
        od[k] = yr[2 * k + 1];
    }
    if (W & 1) { ev[W2] = yr[W - 1]; od[W2] = 0.0f; }
}

/* Row h of x (H, W) as the four columns of each tile's window, padded row
 * r[q] = x[h][q - 1] (zero outside): c0[tx] = r[2tx], c1 = r[2tx + 1],
 * c2 = r[2tx + 2], c3 = r[2tx + 3], tx = 0 .. tw - 1 (xr NULL: a zero row).
 * c1, c2 are the row's even and odd columns; c0, c3 those shifted by one. */
static inline void wino_stage_row(float* c0, float* c1, float* c2, float* c3, const float* xr,
                                  int W, int tw) {
    wino_split_row(c1, c2, xr, W, tw);
    c0[0] = 0.0f;
    for (int k = 1; k < tw; k++) c0[k] = c2[k - 1];
    for (int k = 0; k < tw - 1; k++) c3[k] = c1[k + 1];
    c3[tw - 1] = 0.0f;
}

/* V[xi * xs + k] = B^T d B for the tiles of tile rows ty0 .. ty0 + n - 1 of
 * one plane x (H, W), k = (ty - ty0) tw + tx, d the 4x4 window at rows
 * 2ty-1.., columns 2tx-1.. (zero outside). */
DDPM_SIMD_CLONES
static void wino_input_rows(float* restrict V, size_t xs, const float* x, int ty0, int n, int H,
                            int W) {
    const int tw = wino_tiles(W), nt = n * tw;
    /* S[4 pi + j][m tw + tx] = window column j of padded row 2 (ty0 + m) + pi:
     * window row i of tile (ty0 + m, tx) is S[4 (i & 1) + j][(m + i / 2) tw + tx] */
    float S[8][WINO_STAGE];
    for (int m = 0; m <= n; m++)
        for (int pi = 0; pi < 2; pi++) {
            const int h = 2 * (ty0 + m) + pi - 1;
            float (*s)[WINO_STAGE] = S + 4 * pi;
            wino_stage_row(s[0] + m * tw, s[1] + m * tw, s[2] + m * tw, s[3] + m * tw,
                           (h >= 0 && h < H) ? x + (size_t)h * W : NULL, W, tw);
        }
    /* one pass per row i of B^T (down the window's rows), then B along the
     * four columns: four output streams per pass */
#define WINO_INPUT_PASS(i, VERT)                                               \
    do {                                                                       \
        float* v0 = V + (size_t)(4 * (i)) * xs;                                \
        float* v1 = v0 + xs;                                                   \
        float* v2 = v1 + xs;                                                   \
        float* v3 = v2 + xs;                                                   \
        for (int k = 0; k < nt; k++) {                                         \
            float q[4];                                                        \
            for (int j = 0; j < 4; j++) {                                      \
                const float r0 = S[j][k], r1 = S[4 + j][k];                    \
                const float r2 = S[j][k + tw], r3 = S[4 + j][k + tw];          \
                (void)r0; (void)r1; (void)r2; (void)r3;                        \
                q[j] = VERT;                                                   \
            }                                                                  \
            v0[k] = q[0] - q[2];                                               \
            v1[k] = q[1] + q[2];                                               \
            v2[k] = q[2] - q[1];                                               \
            v3[k] = q[1] - q[3];                                               \
        }                                                                      \
    } while (0)
    WINO_INPUT_PASS(0, r0 - r2);
    WINO_INPUT_PASS(1, r1 + r2);
    WINO_INPUT_PASS(2, r2 - r1);
    WINO_INPUT_PASS(3, r1 - r3);
#undef WINO_INPUT_PASS
}

/* Rows 2ty, 2ty+1 of y (H, W), for the tile rows ty = ty0 .. ty0 + n - 1,
 * = (base + bias) + A^T m A, m[xi * xs + k] as wino_input_rows lays it out;
 * base a plane (H, W) (may be y itself) or, if NULL, nothing; outputs
 * beyond H, W are dropped. */
DDPM_SIMD_CLONES
static void wino_output_rows(float* y, const float* base, const float* restrict m, size_t xs,
                             float bias, int ty0, int n, int H, int W) {
    const int tw = wino_tiles(W), nt = n * tw;
    float o[4][WINO_SEG_TILES];   /* [2 row + col][k]: output (2ty + row, 2tx + col) */
    for (int k = 0; k < nt; k++) {
        float s0[4], s1[4];
        for (int j = 0; j < 4; j++) {
            float m0 = m[j * xs + k], m1 = m[(4 + j) * xs + k];
            float m2 = m[(8 + j) * xs + k], m3 = m[(12 + j) * xs + k];
            s0[j] = m0 + m1 + m2;
            s1[j] = m1 - m2 - m3;
        }
        o[0][k] = s0[0] + s0[1] + s0[2];
        o[1][k] = s0[1] - s0[2] - s0[3];
        o[2][k] = s1[0] + s1[1] + s1[2];
        o[3][k] = s1[1] - s1[2] - s1[3];
    }
    const int W2 = W / 2;
    for (int r = 0; r < 2 * n; r++) {
        const int h = 2 * ty0 + r;
        if (h >= H) break;
        float* yr = y + (size_t)h * W;
        const float* oe = o[2 * (r & 1)] + (r / 2) * tw;
        const float* oo = o[2 * (r & 1) + 1] + (r / 2) * tw;
        if (base) {
            const float* br = base + (size_t)h * W;
            for (int k = 0; k < W2; k++) {
                yr[2 * k] = (br[2 * k] + bias) + oe[k];
                yr[2 * k + 1] = (br[2 * k + 1] + bias) + oo[k];
            }
            if (W & 1) yr[W - 1] = (br[W - 1] + bias) + oe[W2];
        } else {
            for (int k = 0; k < W2; k++) {
                yr[2 * k] = bias + oe[k];
                yr[2 * k + 1] = bias + oo[k];
            }
            if (W & 1) yr[W - 1] = bias + oe[W2];
        }
    }
}

/* dM[xi * xs + k] = A dy A^T for the tiles of tile rows ty0 .. ty0 + n - 1
 * of one plane dy (H, W), each tile's 2x2 block [a b; c d] read with zeros
 * beyond H, W. */
DDPM_SIMD_CLONES
static void wino_output_adjoint_rows(float* restrict dM, size_t xs, const float* dy, int ty0,
                                     int n, int H, int W) {
    const int tw = wino_tiles(W), nt = n * tw;
    float q[4][WINO_SEG_TILES];   /* a, b, c, d of each tile */
    for (int m = 0; m < n; m++) {
        const int h = 2 * (ty0 + m);
        wino_split_row(q[0] + m * tw, q[1] + m * tw, dy + (size_t)h * W, W, tw);
        wino_split_row(q[2] + m * tw, q[3] + m * tw, h + 1 < H ? dy + (size_t)(h + 1) * W : NULL,
                           W, tw);
    }
    /* one pass per column j of A^T applied along the rows ([a, a+b, a-b, -b]
     * and the same of c, d), then A down the columns: four output streams */
#define WINO_ADJOINT_PASS(j, HORIZ)                                            \
    do {                                                                       \
        float* m0 = dM + (size_t)(j) * xs;                                     \
        float* m1 = m0 + 4 * xs;                                               \
        float* m2 = m1 + 4 * xs;                                               \
        float* m3 = m2 + 4 * xs;                                               \
        for (int k = 0; k < nt; k++) {                                         \
            float e0, e1;                                                      \
            {                                                                  \
                const float u = q[0][k], v = q[1][k];                          \
                (void)u; (void)v;                                              \
                e0 = HORIZ;                                                    \
            }                                                                  \
            {                                                                  \
                const float u = q[2][k], v = q[3][k];                          \
                (void)u; (void)v;                                              \
                e1 = HORIZ;                                                    \
            }                                                                  \
            m0[k] = e0;                                                        \
            m1[k] = e0 + e1;                                                   \
            m2[k] = e0 - e1;                                                   \
            m3[k] = -e1;                                                       \
        }                                                                      \
    } while (0)
    WINO_ADJOINT_PASS(0, u);
    WINO_ADJOINT_PASS(1, u + v);
    WINO_ADJOINT_PASS(2, u - v);
    WINO_ADJOINT_PASS(3, -v);
#undef WINO_ADJOINT_PASS
}

/* The number an output plane (sample b, channel oc) starts from: add_bo[b][oc]
 * (if given) + bias[oc] (if given), in that order. */
static inline float start_bias(const float* bias, const float* add_bo, int b, int oc, int OC) {
    float bv = bias ? bias[oc] : 0.0f;
    return add_bo ? add_bo[(size_t)b * OC + oc] + bv : bv;
}

/* Applies BODY to the tile rows [r0, r0 + nr) of the planes ch = 0..NC-1 of
 * x (NC, B, H, W) in segments: tile rows ty .. ty + n - 1 of sample b, at
 * column (r - r0) tw of buffer row ch. */
#define WINO_SEGS_LOOP(NC, BODY)                                           \
    for (int ch = 0; ch < (NC); ch++)                                      \
        for (int r = 0; r < nr;) {                                         \
            const int b = (r0 + r) / th, ty = (r0 + r) % th;               \
            int n = th - ty < nr - r ? th - ty : nr - r;                   \
            if (n > seg) n = seg;                                          \
            const size_t plane = ((size_t)ch * B + b) * HW;                \
            const size_t at = (size_t)ch * T + (size_t)r * tw;             \
            BODY;                                                          \
            r += n;                                                        \
        }

/* The sizes every chunk function needs, from (B, H, W, r0, nr). */
#define WINO_CHUNK_SIZES                                                   \
    const int th = wino_tiles(H), tw = wino_tiles(W);                      \
    const size_t HW = (size_t)H * W, T = (size_t)nr * tw;                  \
    const int seg = wino_seg_rows(W)

/* out (OCo, B, H, W) = (start + bias) + conv3x3(x (Ci, B, H, W)) on the tile
 * rows [r0, r0 + nr), start as conv2d_forward_add says; U (16, OCo, Ci) the
 * transformed weights; V (16, Ci, T), M (16, OCo, T) this lane's buffers. */
static void wino_conv_chunk(float* out, float* V, float* M, const float* x, const float* U,
                            const float* bias, const float* add, const float* add_bo, int B,
                            int Ci, int H, int W, int OCo, int r0, int nr) {
    WINO_CHUNK_SIZES;
    WINO_SEGS_LOOP(Ci, wino_input_rows(V + at, (size_t)Ci * T, x + plane, ty, n, H, W));
    for (int xi = 0; xi < 16; xi++)
        BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCo, (int)T, Ci, 1.0f,
                          U + (size_t)xi * OCo * Ci, Ci, V + (size_t)xi * Ci * T, (int)T, 0.0f,
                          M + (size_t)xi * OCo * T, (int)T);
    WINO_SEGS_LOOP(OCo, wino_output_rows(out + plane, add ? add + plane : NULL, M + at,
                                         (size_t)OCo * T, start_bias(bias, add_bo, b, ch, OCo),
                                         ty, n, H, W));
}

/* dU (16, OC, C) = beta dU + dM V^T over the tile rows [r0, r0 + nr)
 * (beta 0 starts a partial sum, 1 adds to it): V = B^T x B of
 * inp (C, B, H, W), dM = A dy A^T of dout (OC, B, H, W). */
static void wino_dweight_chunk(float* dU, float* V, float* dM, const float* dout,
                               const float* inp, int B, int C, int H, int W, int OC, int r0,
                               int nr, float beta) {
    WINO_CHUNK_SIZES;
    WINO_SEGS_LOOP(C, wino_input_rows(V + at, (size_t)C * T, inp + plane, ty, n, H, W));
    WINO_SEGS_LOOP(OC, wino_output_adjoint_rows(dM + at, (size_t)OC * T, dout + plane, ty, n, H,
                                                W));
    for (int xi = 0; xi < 16; xi++)
        BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasTrans, OC, C, (int)T, 1.0f,
                          dM + (size_t)xi * OC * T, (int)T, V + (size_t)xi * C * T, (int)T, beta,
                          dU + (size_t)xi * OC * C, C);
}

/* out (OC, B, H, W) [+]= conv3x3(inp (C, B, H, W)) + bias through Winograd:
 * chunks of tile rows handed out dynamically, each done start to end
 * (transform, 16 GEMMs, inverse transform) by one thread in its own lane:
 * its outputs are disjoint from every other chunk's, so who runs it does
 * not matter, and it stays in that core's cache. */
static void wino_forward(float* out, float* scratch, const float* inp, const float* weight,
                         const float* bias, const float* add, const float* add_bo, int B, int C,
                         int H, int W, int OC) {
    size_t off_du, off_lane, lane;
    wino_layout(B, C, H, W, OC, &off_du, &off_lane, &lane);
    float* U = scratch;
    const int nr = wino_rows(B, C, H, W, OC, WINO_BUDGET_FWD), rows = B * wino_tiles(H);
    const int nchunks = (rows + nr - 1) / nr;
    int nt = ddpm_threads_for((size_t)nchunks, 1);
    if (nt > WINO_LANES) nt = WINO_LANES;
    const size_t xs = (size_t)OC * C;
DDPM_PARALLEL(nt)
    {
DDPM_OMP_FOR
        for (int oc = 0; oc < OC; oc++)
            for (int c = 0; c < C; c++)
                wino_weight(U + (size_t)oc * C + c, xs, weight + ((size_t)oc * C + c) * 9, 3, 1);
        float* V = scratch + off_lane + (size_t)ddpm_thread_num() * lane;
        float* M = V + (size_t)16 * C * nr * wino_tiles(W);
DDPM_OMP_FOR_DYNAMIC
        for (int k = 0; k < nchunks; k++) {
            int r0 = k * nr, n = rows - r0 < nr ? rows - r0 : nr;
            wino_conv_chunk(out, V, M, inp, U, bias, add, add_bo, B, C, H, W, OC, r0, n);
        }
    }
}

/* dinp (C, B, H, W) += ... (or NULL), dweight (OC, C, 3, 3) += ... through
 * Winograd; dout (OC, B, H, W).  The weight gradient is summed in
 * up to WINO_LANES partials, partial p over chunks p, p + WINO_LANES, ... in
 * order, then the partials in order: fixed whatever the threads.  dinp is
 * the convolution of dout with the rotated weights, (OC -> C), chunk by
 * chunk like the forward. */
static void wino_backward(float* dinp, float* dweight, float* scratch, const float* dout,
                          const float* inp, const float* weight, int B, int C, int H, int W,
                          int OC, int accumulate) {
    size_t off_du, off_lane, lane;
    wino_layout(B, C, H, W, OC, &off_du, &off_lane, &lane);
    float* Ur = scratch;                 /* (16, C, OC): rotated, transposed weights */
    float* dU = scratch + off_du;        /* (WINO_LANES, 16, OC, C) */
    const int nr = wino_rows(B, C, H, W, OC, WINO_BUDGET_BWD), rows = B * wino_tiles(H);
    const int nchunks = (rows + nr - 1) / nr;
    const int np = nchunks < WINO_LANES ? nchunks : WINO_LANES;   /* partials in use */
    const size_t xs = (size_t)OC * C;
    int nt = ddpm_threads_for((size_t)nchunks, 1);
    if (nt > WINO_LANES) nt = WINO_LANES;
DDPM_PARALLEL(nt)
    {
        if (dinp) {
DDPM_OMP_FOR
            for (int c = 0; c < C; c++)
                for (int oc = 0; oc < OC; oc++)
                    wino_weight(Ur + (size_t)c * OC + oc, xs,
                                weight + ((size_t)oc * C + c) * 9 + 8, -3, -1);
        }
        float* V = scratch + off_lane + (size_t)ddpm_thread_num() * lane;
        float* M = V + (size_t)16 * C * nr * wino_tiles(W);
        /* for dinp the lane holds V (16, OC, T) then M (16, C, T) */
        float* M2 = V + (size_t)16 * OC * nr * wino_tiles(W);
        /* each chunk's weight-gradient step and then its input-gradient step,
         * back to back: the chunk of dout is read from memory once */
DDPM_OMP_FOR_DYNAMIC
        for (int p = 0; p < np; p++)
            for (int k = p; k < nchunks; k += WINO_LANES) {
                int r0 = k * nr, n = rows - r0 < nr ? rows - r0 : nr;
                /* the partial's first chunk writes it (no zeroing pass) */
                wino_dweight_chunk(dU + p * 16 * xs, V, M, dout, inp, B, C, H, W, OC, r0, n,
                                   k == p ? 0.0f : 1.0f);
                if (dinp)
                    wino_conv_chunk(dinp, V, M2, dout, Ur, NULL, accumulate ? dinp : NULL, NULL,
                                    B, OC, H, W, C, r0, n);
            }
        /* the partials summed into the first in order p = 1, 2, ... for every
         * element (fixed, whatever the threads), block by block: streaming
         * reads, where gathering the np x 16 values of each weight missed the
         * cache at every load (15% of a 256 -> 128 layer's backward) */
        const size_t total = 16 * xs;
        const long nblk = (long)((total + WINO_SUM_BLOCK - 1) / WINO_SUM_BLOCK);
DDPM_OMP_FOR
        for (long k = 0; k < nblk; k++) {
            const size_t lo = (size_t)k * WINO_SUM_BLOCK;
            const size_t len = total - lo < WINO_SUM_BLOCK ? total - lo : WINO_SUM_BLOCK;
            float* d = dU + lo;
            for (int p = 1; p < np; p++) {
                const float* src = dU + p * total + lo;
                for (size_t i = 0; i < len; i++) d[i] += src[i];
            }
        }
DDPM_OMP_FOR
        for (int oc = 0; oc < OC; oc++) wino_weights_adjoint(dweight, dU, C, OC, oc);
    }
}

void conv2d_forward(float* out, float* col, const float* inp, const float* weight,
                    const float* bias, int B, int C, int H, int W, int OC, int K, int S,
                    int accumulate) {
    conv2d_forward_add(out, col, inp, weight, bias, accumulate ? out : NULL, NULL, B, C, H, W, OC,
                       K, S);
}

void conv2d_forward_add(float* out, float* col, const float* inp, const float* weight,
                        const float* bias, const float* add, const float* add_bo, int B, int C,
                        int H, int W, int OC, int K, int S) {
    if (add) add_bo = NULL;
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_forward(out, col, inp, weight, bias, add, add_bo, B, C, H, W, OC);
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
            const float bv = start_bias(bias, add_bo, b, oc, OC);
            if (add) {
                const float* a = add + (size_t)oc * plane + (size_t)b * HWo;
                for (size_t i = 0; i < HWo; i++) o[i] = a[i] + bv;
            } else {
                for (size_t i = 0; i < HWo; i++) o[i] = bv;
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
                     int K, int S, int accumulate) {
    const int Ho = out_size(H, K, S), Wo = out_size(W, K, S);
    const size_t plane = (size_t)B * Ho * Wo;
    if (dbias) {
        int nt = ddpm_threads_for((size_t)OC * plane, 1 << 15);
        DDPM_PARALLEL_FOR(nt)
        for (int oc = 0; oc < OC; oc++) dbias[oc] += (float)ddpm_sum(dout + (size_t)oc * plane, plane);
    }
    if (use_winograd(C, H, W, OC, K, S)) {
        wino_backward(dinp, dweight, col, dout, inp, weight, B, C, H, W, OC, accumulate);
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
