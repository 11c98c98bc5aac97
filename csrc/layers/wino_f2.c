/*
 * wino_f2.c - the F(2x2, 3x3) kind of winograd.h (Lavin & Gray 2015).
 *
 * With B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5;
 * .5 -.5 .5; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]: only adds and halvings, so
 * float32 errors stay ~1e-6 relative.  The weight gradient is the adjoint of
 * each step: dM = A dY A^T, dU_xi = dM_xi V_xi^T (summed over tiles),
 * dg = G^T dU G.  Segments stay within one plane (wino_f4.c's run across
 * samples); each stages the rows it needs split by row and column parity.
 */
#include "layers/winograd.h"
#include "core/common.h"

#define WINO_HALF (WINO_MAX_W / 2 + 2) /* one parity of a padded row: tw + 1 */

static int tiles2(int n) { return (n + 1) / 2; }

/* u[xi * xs] (16 values) = G g G^T for one g (3, 3) read with strides (sh, sw):
 * (3, 1) as stored, or (-3, -1) from the last element for the 180-degree
 * rotation that backward-data convolves with. */
static void f2_weight1(float* u, size_t xs, const float* g, int sh, int sw) {
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

/* dg (3, 3) += G^T du G, du[xi * xs] (16 values). */
static void f2_weight_adjoint1(float* g, const float* u, size_t xs) {
    float du[16];
    for (int xi = 0; xi < 16; xi++) du[xi] = u[xi * xs];
    float s[3][4];
    for (int j = 0; j < 4; j++) {
        float u0 = du[j], u1 = du[4 + j], u2 = du[8 + j], u3 = du[12 + j];
        s[0][j] = u0 + 0.5f * (u1 + u2);
        s[1][j] = 0.5f * (u1 - u2);
        s[2][j] = 0.5f * (u1 + u2) + u3;
    }
    for (int i = 0; i < 3; i++) {
        g[3 * i + 0] += s[i][0] + 0.5f * (s[i][1] + s[i][2]);
        g[3 * i + 1] += 0.5f * (s[i][1] - s[i][2]);
        g[3 * i + 2] += 0.5f * (s[i][1] + s[i][2]) + s[i][3];
    }
}

static void f2_weight(float* u, size_t xs, size_t fs, const float* g, int n, size_t gstep,
                      int sh, int sw) {
    for (int i = 0; i < n; i++) f2_weight1(u + i * fs, xs, g + i * gstep, sh, sw);
}

static void f2_weight_adjoint(float* dg, const float* du, size_t xs, int n) {
    for (int i = 0; i < n; i++) f2_weight_adjoint1(dg + 9 * i, du + i, xs);
}

/* The transforms work on segments: whole tile rows ty0 .. ty0 + n - 1 of
 * one plane, at most WINO_SEG_TILES tiles (the engine cuts them).  Each
 * first stages the rows it needs, split by row and column parity, so that
 * its main loop runs over the segment's tiles k = m tw + tx as one flat
 * unit-stride loop: full vectors however narrow the plane (tw is 14, 7 and
 * 4 in the U-Net; a loop per tile row spent most of its time in vector
 * tails and loop overhead). */
#define WINO_SEG_TILES 1024
#define WINO_STAGE (WINO_SEG_TILES + WINO_HALF)   /* (n + 1) tw floats */

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
 * one plane x (H, W) of sample b, k = (ty - ty0) tw + tx, d the 4x4 window
 * at rows 2ty-1.., columns 2tx-1.. (zero outside), x read through act's
 * a[b], k[b] (or act NULL). */
DDPM_SIMD_CLONES
static void wino_input_rows(float* restrict V, size_t xs, const float* x, const NormAct* act,
                            int b, int ty0, int n, int H, int W) {
    const int tw = tiles2(W), nt = n * tw;
    /* with act, the rows read (2 ty0 - 1 .. 2 (ty0 + n), within the plane:
     * at most 2 n + 2 rows of W <= 2 tw floats) activated first as one run,
     * full vectors (groupnorm.h; the zero padding stays zero) */
    float arows[4 * WINO_SEG_TILES + 2 * WINO_MAX_W];
    int lo = 0;
    if (act) {
        lo = 2 * ty0 - 1 > 0 ? 2 * ty0 - 1 : 0;
        const int hi = 2 * (ty0 + n) + 1 < H ? 2 * (ty0 + n) + 1 : H;
        groupnorm_act_row(arows, x + (size_t)lo * W, (hi - lo) * W, act->a[b], act->k[b],
                          act->silu);
    }
    /* S[4 pi + j][m tw + tx] = window column j of padded row 2 (ty0 + m) + pi:
     * window row i of tile (ty0 + m, tx) is S[4 (i & 1) + j][(m + i / 2) tw + tx] */
    float S[8][WINO_STAGE];
    for (int m = 0; m <= n; m++)
        for (int pi = 0; pi < 2; pi++) {
            const int h = 2 * (ty0 + m) + pi - 1;
            float (*s)[WINO_STAGE] = S + 4 * pi;
            wino_stage_row(s[0] + m * tw, s[1] + m * tw, s[2] + m * tw, s[3] + m * tw,
                           (h < 0 || h >= H) ? NULL
                           : act             ? arows + (size_t)(h - lo) * W
                                             : x + (size_t)h * W,
                           W, tw);
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
    const int tw = tiles2(W), nt = n * tw;
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
    const int tw = tiles2(W), nt = n * tw;
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


/* ---- the segment interface of winograd.h: tile rows [r, r + n) within
 * one plane (sample r / th), handed to the per-plane functions above ---- */

static void f2_input(float* V, size_t xs, const float* x, const NormAct* act, int H, int W,
                     int r, int n) {
    const int th = tiles2(H), b = r / th;
    wino_input_rows(V, xs, x + (size_t)b * H * W, act, b, r % th, n, H, W);
}

static void f2_output(float* y, const float* base, const float* M, size_t xs, const WinoStart* s,
                      int H, int W, int r, int n) {
    const int th = tiles2(H), b = r / th;
    const size_t plane = (size_t)b * H * W;
    wino_output_rows(y + plane, base ? base + plane : NULL, M, xs, wino_start(s, b), r % th, n,
                     H, W);
}

static void f2_output_adjoint(float* dM, size_t xs, const float* dy, int H, int W, int r,
                              int n) {
    const int th = tiles2(H);
    wino_output_adjoint_rows(dM, xs, dy + (size_t)(r / th) * H * W, r % th, n, H, W);
}

/* One lane's transformed tiles + products.  Forward: 512 KB, half an L2
 * (measured better than 2-8 MB).  Backward: 2 MB, because its weight-gradient
 * GEMMs (OC x C, summed over the chunk's tiles) are A B^T products whose
 * per-call cost OpenBLAS amortises only over long sums: 32 x 32 x 126 ran
 * at 60 GF/s, x 504 at 86 GF/s; the backward measured ~8% faster. */
const WinoKind wino_f2 = {2, 4, 0, WINO_SEG_TILES, 1u << 17, 1u << 19, 1,
                          f2_weight, f2_weight_adjoint, f2_input, f2_output, f2_output_adjoint,
                          0, 0, NULL, NULL, NULL};
