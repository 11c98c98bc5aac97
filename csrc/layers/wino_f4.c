/*
 * wino_f4.c - the F(4x4, 3x3) kind of winograd.h: 36 multiplies per 4x4
 * outputs against 144 direct, and 2.25 transformed floats per input pixel
 * against F(2x2)'s 4.  Interpolation points 0, 1, -1, 1/2, -2, inf, the set
 * Barabasz et al. (2020) found most accurate for F(4, 3): in a float32 model
 * of the layer (C = 128) it erred 2.7e-6 max / 1.5e-6 rms against
 * 8.5e-6 / 2.4e-6 for Lavin's 0, +-1, +-2, inf.
 *
 *   B^T = [1 -3/2 -2  3/2  1  0     G = [  1      0      0      A^T = [1 1  1  1    1 0
 *          0  -1  1/2 5/2  1  0           1/3    1/3    1/3           0 1 -1 1/2  -2 0
 *          0   1 -5/2 1/2  1  0          -1/3    1/3   -1/3           0 1  1 1/4   4 0
 *          0  -2  -1   2   1  0         -16/15 -8/15  -4/15           0 1 -1 1/8  -8 1]
 *          0  1/2 -1 -1/2  1  0           1/15  -2/15  4/15
 *          0   1 -3/2 -2  3/2 1]          0      0      1   ]
 *
 * B^T and A^T hold halves and small integers; G's thirds and fifteenths are
 * not exact, so the weight transform and its adjoint run in float64 and
 * round once.  The weight gradient is the adjoint of each step:
 * dM = A dY A^T, dU_xi = dM_xi V_xi^T summed over tiles, dg = G^T dU G.
 *
 * Segments run across samples (a 7x7 plane has only 4 tiles): each tile row
 * stages its own 6 window rows (zeros outside the plane), then the
 * transforms run as flat unit-stride loops over the segment's tiles, one
 * 1-D transform at a time (6 values in, 6 out: few live registers).
 */
#include "layers/wino_f4_steps.h"
#include "core/common.h"
#include "core/wide.h"
#include <string.h>

#define F4_SEG 128                     /* tiles per segment */
#ifndef F4_BUDGET_FWD
#define F4_BUDGET_FWD (1u << 19)
#endif
#ifndef F4_BUDGET_BWD
#define F4_BUDGET_BWD (1u << 19)
#endif

/* dst[0..n) = src[0..n) in blocks of 8 and 4 floats and a short tail (a
 * call to memcpy, what GCC makes of a plain loop, cost more than these short
 * rows: 9% of a forward). */
static inline __attribute__((always_inline)) void copy_row(float* restrict dst,
                                                           const float* restrict src, int n) {
    int q = 0;
    for (; q + 8 <= n; q += 8) memcpy(dst + q, src + q, 8 * sizeof(float));
    if (q + 4 <= n) {
        memcpy(dst + q, src + q, 4 * sizeof(float));
        q += 4;
    }
    for (int i = 0; i < 3; i++)
        if (q + i < n) dst[q + i] = src[q + i];
}

/* ------------------------------------------------------------- weights */

/* o0..o5 = G (g0, g1, g2) in float64, as named scalars (so the loop around
 * vectorises) */
#define F4_G(o0, o1, o2, o3, o4, o5, g0, g1, g2)                                      \
    const double o0 = (g0), o5 = (g2);                                                \
    const double o1 = (((g0) + (g2)) + (g1)) * (1.0 / 3);                             \
    const double o2 = ((g1) - ((g0) + (g2))) * (1.0 / 3);                             \
    const double o3 = -(16.0 * (g0) + 8.0 * (g1) + 4.0 * (g2)) * (1.0 / 15);          \
    const double o4 = ((g0) - 2.0 * (g1) + 4.0 * (g2)) * (1.0 / 15)

/* column j of t = G g: t0_j .. t5_j */
#define F4_COL(j) F4_G(t0_##j, t1_##j, t2_##j, t3_##j, t4_##j, t5_##j, (double)e[j][f],   \
                       (double)e[3 + j][f], (double)e[6 + j][f])
/* row i of t G^T, stored at o[6 i + k][f] */
#define F4_ROW(i)                                                                     \
    do {                                                                              \
        F4_G(v0, v1, v2, v3, v4, v5, t##i##_0, t##i##_1, t##i##_2);                   \
        o[6 * (i)][f] = (float)v0;                                                    \
        o[6 * (i) + 1][f] = (float)v1;                                                \
        o[6 * (i) + 2][f] = (float)v2;                                                \
        o[6 * (i) + 3][f] = (float)v3;                                                \
        o[6 * (i) + 4][f] = (float)v4;                                                \
        o[6 * (i) + 5][f] = (float)v5;                                                \
    } while (0)

/* u[xi * xs + f fs] (36 values each) = G g_f G^T for the n filters g_f =
 * g0 + f gstep (3, 3) read with strides (sh, sw), in float64, rounded once:
 * blocks of 64 filters, gathered element-major first and written out from
 * a local block, so that the transform is one straight-line loop over the
 * filters on buffers the compiler sees apart, which vectorises. */
DDPM_SIMD_CLONES
static void f4_weight(float* restrict u, size_t xs, size_t fs, const float* restrict g0, int n,
                      size_t gstep, int sh, int sw) {
    float e[9][64], o[36][64];   /* e[3 i + j][f] = g_f[i][j]; o[xi][f] = u_f[xi] */
    for (int f0 = 0; f0 < n; f0 += 64) {
        const int nb = n - f0 < 64 ? n - f0 : 64;
        for (int f = 0; f < nb; f++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    e[3 * i + j][f] = g0[(f0 + f) * gstep + i * sh + j * sw];
        for (int f = 0; f < nb; f++) {
            F4_COL(0);
            F4_COL(1);
            F4_COL(2);
            F4_ROW(0);
            F4_ROW(1);
            F4_ROW(2);
            F4_ROW(3);
            F4_ROW(4);
            F4_ROW(5);
        }
        if (fs == 1)
            for (int xi = 0; xi < 36; xi++) copy_row(u + xi * xs + f0, o[xi], nb);
        else
            for (int xi = 0; xi < 36; xi++)
                for (int f = 0; f < nb; f++) u[xi * xs + (size_t)(f0 + f) * fs] = o[xi][f];
    }
}

/* o0, o1, o2 = G^T (w0, .., w5) in float64, as named scalars (so the loop
 * around vectorises) */
#define F4_GT3(o0, o1, o2, w0, w1, w2, w3, w4, w5)                                    \
    const double o0 = (w0) + ((w1) - (w2)) * (1.0 / 3) + ((w4) - 16.0 * (w3)) * (1.0 / 15); \
    const double o1 = ((w1) + (w2)) * (1.0 / 3) - (8.0 * (w3) + 2.0 * (w4)) * (1.0 / 15); \
    const double o2 = ((w1) - (w2)) * (1.0 / 3) + 4.0 * ((w4) - (w3)) * (1.0 / 15) + (w5)
/* column j of s = G^T du: s0_j, s1_j, s2_j */
#define F4_GTCOL(j) F4_GT3(s0_##j, s1_##j, s2_##j, (double)e[j][f], (double)e[6 + j][f],     \
                           (double)e[12 + j][f], (double)e[18 + j][f], (double)e[24 + j][f], \
                           (double)e[30 + j][f])
/* row i of s G: o[3 i + j][f] */
#define F4_GTROW(i)                                                                   \
    do {                                                                              \
        F4_GT3(v0, v1, v2, s##i##_0, s##i##_1, s##i##_2, s##i##_3, s##i##_4, s##i##_5); \
        o[3 * (i)][f] = (float)v0;                                                    \
        o[3 * (i) + 1][f] = (float)v1;                                                \
        o[3 * (i) + 2][f] = (float)v2;                                                \
    } while (0)

/* dg_f (3, 3) += G^T du_f G for dg_f = dg0 + 9 f, du_f[xi * xs] = du0[xi * xs + f],
 * f = 0..n-1, in float64, rounded once: blocks of 64 filters gathered
 * position-major, then one straight-line loop over the filters (as
 * f4_weight), which vectorises; filter by filter, the double sums of the
 * weight gradient's 128 x 128 7x7 layers took 6% of their backward. */
DDPM_SIMD_CLONES
static void f4_weight_adjoint(float* dg0, const float* du0, size_t xs, int n) {
    float e[36][64], o[9][64];   /* e[xi][f] = du_f[xi]; o[3 i + j][f] = (G^T du_f G)[i][j] */
    for (int f0 = 0; f0 < n; f0 += 64) {
        const int nb = n - f0 < 64 ? n - f0 : 64;
        for (int xi = 0; xi < 36; xi++) copy_row(e[xi], du0 + xi * xs + f0, nb);
        for (int f = 0; f < nb; f++) {
            F4_GTCOL(0);
            F4_GTCOL(1);
            F4_GTCOL(2);
            F4_GTCOL(3);
            F4_GTCOL(4);
            F4_GTCOL(5);
            F4_GTROW(0);
            F4_GTROW(1);
            F4_GTROW(2);
        }
        for (int f = 0; f < nb; f++)
            for (int k = 0; k < 9; k++) dg0[9 * (f0 + f) + k] += o[k][f];
    }
}

/* ------------------------------------------------------------ staging */

/* dst[0..n) = 0 in blocks of 8 and 4 floats and an unrolled tail: written
 * as a plain loop GCC turns it into a call to memset, which costs more than
 * these short rows. */
static inline __attribute__((always_inline)) void zero_row(float* dst, int n) {
    int q = 0;
    for (; q + 8 <= n; q += 8) memset(dst + q, 0, 8 * sizeof(float));
    if (q + 4 <= n) {
        memset(dst + q, 0, 4 * sizeof(float));
        q += 4;
    }
    if (q < n) dst[q] = 0.0f;
    if (q + 1 < n) dst[q + 1] = 0.0f;
    if (q + 2 < n) dst[q + 2] = 0.0f;
}

/* s_q[t] = p[4 t + q], q = 0..3, t = 0..nt-1: a stride-4 split, which the
 * compiler vectorises with shuffles. */
static inline __attribute__((always_inline)) void split4(float* restrict s0, float* restrict s1,
                                                         float* restrict s2, float* restrict s3,
                                                         const float* restrict p, int nt) {
    for (int t = 0; t < nt; t++) {
        s0[t] = p[4 * t];
        s1[t] = p[4 * t + 1];
        s2[t] = p[4 * t + 2];
        s3[t] = p[4 * t + 3];
    }
}

/* The staging buffers' rows are F4_SROW floats apart: a segment's F4_SEG
 * tiles and the 8-lane spill of the vector paths. */
#define F4_SROW (F4_SEG + 8)

#ifdef F4_SHUFFLE
/* s[j][t] = p[4 t + j], t = 0..7, j = 0..3: the stride-4 split of p[0..31]
 * as four 8-lane vectors (each two two-source permutes and a join) */
#define F4_SPLIT_J(j)                                                              \
    do {                                                                           \
        const f4_i8 ij = {j, j + 4, j + 8, j + 12, j, j, j, j};                    \
        const f4_i8 join = {0, 1, 2, 3, 8, 9, 10, 11};                             \
        out[j] = __builtin_shuffle(__builtin_shuffle(p0, p1, ij),                  \
                                   __builtin_shuffle(p2, p3, ij), join);           \
    } while (0)
static inline __attribute__((always_inline)) void f4_split_v8(f4_v8 out[4], const float* p) {
    f4_v8 p0, p1, p2, p3;
    memcpy(&p0, p, sizeof p0);
    memcpy(&p1, p + 8, sizeof p1);
    memcpy(&p2, p + 16, sizeof p2);
    memcpy(&p3, p + 24, sizeof p3);
    F4_SPLIT_J(0);
    F4_SPLIT_J(1);
    F4_SPLIT_J(2);
    F4_SPLIT_J(3);
}
#undef F4_SPLIT_J
#endif

/* s[j F4_SROW + tx] = pad[4 tx + j], j = 0..5, tx = 0..tw-1: one row of
 * the windows, from the row copied between zeros (pad[1 + w] = x[w];
 * pad[0] and pad[W + 1 .. max(31, 4 tw + 1)] zero), so that every tile,
 * border ones included, is the same stride-4 split: no element-by-element
 * border code (which cost the most on 7x7 and 14x14 planes, where most
 * tiles touch a border).  With vec, rows of up to 7 tiles (W <= 28) split
 * as four 8-lane vectors and permutes (s4, s5 are s0, s1 one tile on), six
 * 8-lane stores (the lane past tw lands in the next tile row's place,
 * staged after this one, or in the spill); the scalar split of 7- and
 * 14-float rows was most of the staging's time.  Either way the same
 * floats move: the same bits. */
static inline __attribute__((always_inline)) void split_row(float* restrict s,
                                                            const float* restrict pad, int tw,
                                                            int vec) {
    (void)vec;
#ifdef F4_SHUFFLE
    if (vec && tw <= 7) {   /* 4 tw + 2 <= 30 padded floats */
        f4_v8 q[4];
        f4_split_v8(q, pad);
        const f4_i8 next = {1, 2, 3, 4, 5, 6, 7, 7};   /* s4[t] = s0[t + 1], s5[t] = s1[t + 1] */
        const f4_v8 q4 = __builtin_shuffle(q[0], next), q5 = __builtin_shuffle(q[1], next);
        for (int j = 0; j < 4; j++) memcpy(s + j * F4_SROW, &q[j], sizeof q[j]);
        memcpy(s + 4 * F4_SROW, &q4, sizeof q4);
        memcpy(s + 5 * F4_SROW, &q5, sizeof q5);
        return;
    }
#endif
    split4(s, s + F4_SROW, s + 2 * F4_SROW, s + 3 * F4_SROW, pad, tw);
    float* restrict s4 = s + 4 * F4_SROW;
    float* restrict s5 = s + 5 * F4_SROW;
    for (int t = 0; t < tw; t++) {
        s4[t] = pad[4 * t + 4];
        s5[t] = pad[4 * t + 5];
    }
}

/* The rows a segment's tile rows of one plane read, n tile rows of tw
 * tiles (n tw <= F4_SEG, or n = 1): at most 4 n + 2 rows of W <= 4 tw
 * floats, so (4 F4_SEG / tw + 2) W <= 16 F4_SEG + 2 WINO_MAX_W floats. */
#define F4_ACT_FLOATS (16 * F4_SEG + 2 * WINO_MAX_W)

/* A segment's input rows read through act: rows lo.. of plane b, activated. */
typedef struct {
    float rows[F4_ACT_FLOATS];
    int b, lo;   /* b = -1: none yet */
} ActRows;

/* Row h of plane b (tile row ty of the segment's tile rows, `left` more
 * after it) of x (B, H, W), read through act (or NULL).  With act, the rows
 * the segment's tile rows of plane b read are activated first, once per
 * plane, as one contiguous run (full vectors, each element once; a row at a
 * time, 7- and 14-float rows ran mostly in the vector loop's scalar tail:
 * the forward took 1.35x as long). */
static inline __attribute__((always_inline)) const float* window_row(
    ActRows* ar, const float* x, const NormAct* act, int H, int W, int b, int ty, int left, int h) {
    const float* plane = x + (size_t)b * H * W;
    if (!act) return plane + (size_t)h * W;
    if (b != ar->b) {
        const int th = tiles4(H);
        const int last = ty + left < th - 1 ? ty + left : th - 1;
        const int hi = 4 * last + 5 < H ? 4 * last + 5 : H;
        ar->lo = 4 * ty - 1 > 0 ? 4 * ty - 1 : 0;
        groupnorm_act_row(ar->rows, plane + (size_t)ar->lo * W, (hi - ar->lo) * W, act->a[b],
                          act->k[b], act->silu);
        ar->b = b;
    }
    return ar->rows + (size_t)(h - ar->lo) * W;
}

#if defined(F4_SHUFFLE) && defined(__x86_64__) && defined(__linux__)
#include <immintrin.h>
#define F4_WIDE 1
#define F4_WIDE_TARGET __attribute__((target("avx512f")))

/* 16-float staging on CPUs with AVX-512F (the switch of core/wide.h: on
 * where ddpm_wide says the 16-float rows run).  The 8-float split_row and
 * put_row below took about half of the 28x28 and 14x14 layers' transform
 * time in copies and permutes.  Here a row (32 lanes, w = 0 .. 31) is two
 * masked loads straight from the input, the lanes from W on zero (the
 * padding; no copy between zeros first), and each of its six streams is one
 * two-source permute; an output row is two permutes of the four streams and
 * masked stores.  The same floats move, and each output
 * is the same (b + sv) + o as put_row's: the same bits.  Each runs a whole
 * segment (one call per row cost a tenth of their time). */

/* A row of W <= 32 floats as two 16-lane halves: the masks of its lanes
 * below W, and where the second half starts (0 when there is none, k1 then
 * empty: no pointer past a short row). */
typedef struct {
    __mmask16 k0, k1;
    int hi16;
} RowHalves;
static inline RowHalves row_halves(int W) {
    RowHalves h = {(__mmask16)(W >= 16 ? 0xffffu : (1u << W) - 1),
                   (__mmask16)(W > 16 ? (1u << (W - 16)) - 1 : 0), W > 16 ? 16 : 0};
    return h;
}

/* stage_windows for W <= 28 (tw <= 7): S[(6 i + j) F4_SROW + m tw + tx] =
 * x_i[4 tx + j - 1], x_i window row i of tile row r + m (zero outside the
 * plane), tx < 8 (lanes past tw: the next tile row's place, staged after
 * this one, or the spill). */
F4_WIDE_TARGET static void stage_windows_wide(float* S, const float* x, const NormAct* act,
                                              int H, int W, int r, int n) {
    const int th = tiles4(H), tw = tiles4(W);
    const RowHalves rh = row_halves(W);
    const __mmask16 k0 = rh.k0, k1 = rh.k1;
    const int hi16 = rh.hi16;
    /* lane tx of stream j reads lane 4 tx + j - 1 of the pair (x[0..15],
     * x[16..31]); the permute keeps an index's low 5 bits, so w = -1 reads
     * lane 31, x[31], which the mask zeroes (W <= 28) */
    const __m512i four = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52,
                                           56, 60);
    __m512i idx[6];
    for (int j = 0; j < 6; j++) idx[j] = _mm512_add_epi32(four, _mm512_set1_epi32(j - 1));
    ActRows ar;
    ar.b = -1;
    for (int m = 0; m < n; m++) {
        const int b = (r + m) / th, ty = (r + m) % th;
        for (int i = 0; i < 6; i++) {
            const int h = 4 * ty - 1 + i;
            float* s = S + (size_t)6 * i * F4_SROW + m * tw;
            __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
            if (h >= 0 && h < H) {
                const float* row = window_row(&ar, x, act, H, W, b, ty, n - 1 - m, h);
                p0 = _mm512_maskz_loadu_ps(k0, row);
                p1 = _mm512_maskz_loadu_ps(k1, row + hi16);
            }
            for (int j = 0; j < 6; j++)
                _mm256_storeu_ps(s + j * F4_SROW,
                                 _mm512_castps512_ps256(_mm512_permutex2var_ps(p0, idx[j], p1)));
        }
    }
}

/* f4_output's rows for W <= 32: y[4 tx + j] = (base[4 tx + j] + sv) + o[j
 * F4_SEG + tx] (sv + o[..] without base; base may be y), w = 4 tx + j < W,
 * for the rows of tile rows [r, r + n), o = O + 4 i F4_SEG + m tw as f4_output
 * lays it out. */
F4_WIDE_TARGET static void put_rows_wide(float* y, const float* base, const float* O,
                                         const WinoStart* st, int H, int W, int r, int n) {
    const int th = tiles4(H), tw = tiles4(W);
    /* lane w = 4 tx + j of the row is lane 8 j + tx of (o01, o23): tiles 0-3, then 4-7 */
    const __m512i lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(4));
    const RowHalves rh = row_halves(W);
    const __mmask16 k0 = rh.k0, k1 = rh.k1;
    const int hi16 = rh.hi16;
    for (int m = 0; m < n; m++) {
        const int b = (r + m) / th, ty = (r + m) % th;
        const size_t plane = (size_t)b * H * W;
        const __m512 svv = _mm512_set1_ps(wino_start(st, b));
        for (int i = 0; i < 4 && 4 * ty + i < H; i++) {
            const size_t at = plane + (size_t)(4 * ty + i) * W;
            const float* o = O + (size_t)4 * i * F4_SEG + m * tw;
            const __m512 o01 = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(o))),
                _mm256_castps_pd(_mm256_loadu_ps(o + F4_SEG)), 1));
            const __m512 o23 = _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(o + 2 * F4_SEG))),
                _mm256_castps_pd(_mm256_loadu_ps(o + 3 * F4_SEG)), 1));
            __m512 v0 = _mm512_permutex2var_ps(o01, lo, o23);
            __m512 v1 = _mm512_permutex2var_ps(o01, hi, o23);
            if (base) {
                v0 = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(k0, base + at), svv), v0);
                v1 = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(k1, base + at + hi16), svv),
                                   v1);
            } else {
                v0 = _mm512_add_ps(svv, v0);
                v1 = _mm512_add_ps(svv, v1);
            }
            _mm512_mask_storeu_ps(y + at, k0, v0);
            if (k1) _mm512_mask_storeu_ps(y + at + 16, k1, v1);
        }
    }
}

static int f4_wide(void) { return ddpm_wide(-1); }
#else
static int f4_wide(void) { return 0; }
#endif

/* S[(6 i + j) F4_SROW + k] = element (i, j) of the 6x6 window of the
 * segment's tile k = m tw + tx (tile row r + m), zeros outside the plane;
 * x read through act (or NULL; window_row).  The zero padding stays zero,
 * as the convolution pads the activated input. */
static inline __attribute__((always_inline)) void stage_windows(float* S, const float* x,
                                                                const NormAct* act, int H,
                                                                int W, int r, int n) {
    const int th = tiles4(H), tw = tiles4(W);
#ifdef F4_WIDE
    if (tw <= 7 && f4_wide()) {
        stage_windows_wide(S, x, act, H, W, r, n);
        return;
    }
#endif
    /* the padded rows split_row reads, a ring of 8 indexed by (h + 1) & 7:
     * a tile row's six rows (4 ty - 1 .. 4 ty + 4) are distinct slots, and
     * its last two are the next tile row's first two, copied once (the
     * copies were a third of the staging).  A tile row's rows are all
     * copied before any is split, so that the vector loads find the copies
     * done (a load right after them waited on store forwarding).  The zeros
     * are written once; copies only overwrite pad[1 .. W]. */
    enum { PADW = WINO_MAX_W + 32 };
    const int vec = f4_vec();
    float pads[8][PADW];
    long key[8];   /* b H + h of the row a slot holds, or -1 */
    const int pz = 4 * tw + 32 < PADW ? 4 * tw + 32 : PADW;
    for (int q = 0; q < 8; q++) {
        key[q] = -1;
        for (int w = 0; w < pz; w++) pads[q][w] = 0.0f;
    }
    ActRows ar;
    ar.b = -1;
    for (int m = 0; m < n; m++) {
        const int b = (r + m) / th, ty = (r + m) % th;
        for (int i = 0; i < 6; i++) {
            const int h = 4 * ty - 1 + i, slot = (h + 1) & 7;
            const long kk = (long)b * H + h;
            if (h >= 0 && h < H && key[slot] != kk) {
                copy_row(pads[slot] + 1, window_row(&ar, x, act, H, W, b, ty, n - 1 - m, h), W);
                key[slot] = kk;
            }
        }
        for (int i = 0; i < 6; i++) {
            const int h = 4 * ty - 1 + i;
            float* s = S + (size_t)6 * i * F4_SROW + m * tw;
            if (h < 0 || h >= H)
                for (int j = 0; j < 6; j++) zero_row(s + j * F4_SROW, tw);
            else
                split_row(s, pads[(h + 1) & 7], tw, vec);
        }
    }
}

/* D[(4 i + j) F4_SROW + k] = dy[4 ty + i][4 tx + j] of tile k (zeros
 * beyond).  Rows of up to 8 tiles (W <= 32) split as split_row's do: the
 * tile row's four rows are first copied between zeros (rows[i][w] = dy
 * row, zero from W), all four before any is loaded back as vectors; the
 * same floats move as in the scalar split. */
static inline __attribute__((always_inline)) void stage_blocks(float* D, const float* dy, int H,
                                                               int W, int r, int n) {
    const int th = tiles4(H), tw = tiles4(W), full = W / 4;
#ifdef F4_SHUFFLE
    if (W <= 32 && f4_vec()) {
        float rows[4][32];
        for (int i = 0; i < 4; i++)
            for (int w = 0; w < 32; w++) rows[i][w] = 0.0f;
        for (int m = 0; m < n; m++) {
            const int b = (r + m) / th, ty = (r + m) % th;
            const float* plane = dy + (size_t)b * H * W;
            for (int i = 0; i < 4 && 4 * ty + i < H; i++)
                copy_row(rows[i], plane + (size_t)(4 * ty + i) * W, W);
            for (int i = 0; i < 4; i++) {
                float* s = D + (size_t)4 * i * F4_SROW + m * tw;
                if (4 * ty + i >= H) {
                    for (int j = 0; j < 4; j++) zero_row(s + j * F4_SROW, tw);
                    continue;
                }
                f4_v8 q[4];
                f4_split_v8(q, rows[i]);
                for (int j = 0; j < 4; j++) memcpy(s + j * F4_SROW, &q[j], sizeof q[j]);
            }
        }
        return;
    }
#endif
    for (int m = 0; m < n; m++) {
        const int b = (r + m) / th, ty = (r + m) % th;
        const float* plane = dy + (size_t)b * H * W;
        for (int i = 0; i < 4; i++) {
            const int h = 4 * ty + i;
            float* s = D + (size_t)4 * i * F4_SROW + m * tw;
            if (h >= H) {
                for (int j = 0; j < 4; j++) zero_row(s + j * F4_SROW, tw);
                continue;
            }
            const float* yr = plane + (size_t)h * W;
            split4(s, s + F4_SROW, s + 2 * F4_SROW, s + 3 * F4_SROW, yr, full);
            if (full < tw)   /* the last tile reaches past W */
                for (int j = 0; j < 4; j++)
                    s[j * F4_SROW + full] = 4 * full + j < W ? yr[4 * full + j] : 0.0f;
        }
    }
}

/* One output row: y[4 tx + j] = (b[4 tx + j] + sv) + o[j F4_SEG + tx], or
 * sv + o[..] without b, for 4 tx + j < W; inplace: b is y (its own start).
 * With vec, rows of up to 8 tiles (W <= 32) are interleaved in registers
 * first: four 8-lane loads (o has a spill), two rounds of permutes, then one
 * unit-stride pass (the stride-4 stores of the loops below ran scalar on
 * 7-, 14- and 28-float rows).  Otherwise three loops, so each has streams
 * the compiler can vectorise apart.  The same sums either way. */
static inline __attribute__((always_inline)) void put_row(float* restrict y, const float* b,
                                                          int inplace, const float* restrict o,
                                                          float sv, int W, int vec) {
    (void)vec;
#ifdef F4_SHUFFLE
    if (vec && W <= 32) {
        const f4_i8 pair_lo = {0, 8, 1, 9, 2, 10, 3, 11}, pair_hi = {4, 12, 5, 13, 6, 14, 7, 15};
        const f4_i8 quad_lo = {0, 1, 8, 9, 2, 3, 10, 11}, quad_hi = {4, 5, 12, 13, 6, 7, 14, 15};
        f4_v8 v0, v1, v2, v3;
        memcpy(&v0, o, sizeof v0);
        memcpy(&v1, o + F4_SEG, sizeof v1);
        memcpy(&v2, o + 2 * F4_SEG, sizeof v2);
        memcpy(&v3, o + 3 * F4_SEG, sizeof v3);
        /* (o0, o1) and (o2, o3) paired for tiles 0-3 and 4-7, then the pairs
         * joined: tiles 0-1, 2-3, 4-5, 6-7 */
        const f4_v8 a = __builtin_shuffle(v0, v1, pair_lo), c = __builtin_shuffle(v2, v3, pair_lo);
        const f4_v8 e = __builtin_shuffle(v0, v1, pair_hi), g = __builtin_shuffle(v2, v3, pair_hi);
        const f4_v8 r0 = __builtin_shuffle(a, c, quad_lo), r1 = __builtin_shuffle(a, c, quad_hi);
        const f4_v8 r2 = __builtin_shuffle(e, g, quad_lo), r3 = __builtin_shuffle(e, g, quad_hi);
        /* y[8 q ..] from r_q in registers: a store of the four to a row
         * and a loop over it ran its 16-float loads across two 8-float
         * stores, which the CPU cannot forward (a third of the output
         * transform's time on 28x28 planes) */
        const f4_v8 rv[4] = {r0, r1, r2, r3};
        const f4_v8 svv = {sv, sv, sv, sv, sv, sv, sv, sv};
        const float* base = inplace ? y : b;
        int w = 0;
        for (int q = 0; w + 8 <= W; q++, w += 8) {
            f4_v8 o;
            if (base) {
                f4_v8 bv;
                memcpy(&bv, base + w, sizeof bv);
                o = (bv + svv) + rv[q];
            } else {
                o = svv + rv[q];
            }
            memcpy(y + w, &o, sizeof o);
        }
        if (w < W) {   /* the last 1-7 floats: row[j] = lane j of the next vector */
            typedef float f4_v4 __attribute__((vector_size(16)));
            float row[8];
            memcpy(row, &rv[w / 8], sizeof row);
            int j = 0;
            if (w + 4 <= W) {   /* 4 at once (loads inside the one store: forwarded) */
                const f4_v4 sv4 = {sv, sv, sv, sv};
                f4_v4 r4, o4;
                memcpy(&r4, row, sizeof r4);
                if (base) {
                    f4_v4 b4;
                    memcpy(&b4, base + w, sizeof b4);
                    o4 = (b4 + sv4) + r4;
                } else {
                    o4 = sv4 + r4;
                }
                memcpy(y + w, &o4, sizeof o4);
                w += 4, j = 4;
            }
            if (base)
                for (; w < W; w++, j++) y[w] = (base[w] + sv) + row[j];
            else
                for (; w < W; w++, j++) y[w] = sv + row[j];
        }
        return;
    }
#endif
    const int full = W / 4;
    const float* restrict o0 = o;
    const float* restrict o1 = o + F4_SEG;
    const float* restrict o2 = o + 2 * F4_SEG;
    const float* restrict o3 = o + 3 * F4_SEG;
    if (inplace) {
        for (int t = 0; t < full; t++) {
            y[4 * t] = (y[4 * t] + sv) + o0[t];
            y[4 * t + 1] = (y[4 * t + 1] + sv) + o1[t];
            y[4 * t + 2] = (y[4 * t + 2] + sv) + o2[t];
            y[4 * t + 3] = (y[4 * t + 3] + sv) + o3[t];
        }
    } else if (b) {
        const float* restrict br = b;
        for (int t = 0; t < full; t++) {
            y[4 * t] = (br[4 * t] + sv) + o0[t];
            y[4 * t + 1] = (br[4 * t + 1] + sv) + o1[t];
            y[4 * t + 2] = (br[4 * t + 2] + sv) + o2[t];
            y[4 * t + 3] = (br[4 * t + 3] + sv) + o3[t];
        }
    } else {
        for (int t = 0; t < full; t++) {
            y[4 * t] = sv + o0[t];
            y[4 * t + 1] = sv + o1[t];
            y[4 * t + 2] = sv + o2[t];
            y[4 * t + 3] = sv + o3[t];
        }
    }
    for (int w = 4 * full; w < W; w++) {   /* the last tile's columns inside W */
        const float v = o[(w - 4 * full) * F4_SEG + full];
        if (inplace) y[w] = (y[w] + sv) + v;
        else if (b) y[w] = (b[w] + sv) + v;
        else y[w] = sv + v;
    }
}

/* --------------------------------------------------------- transforms */

/* V[xi * xs + k] = B^T d B for tile rows [r, r + n) of x (B, H, W), read
 * through act (or NULL). */
DDPM_SIMD_CLONES
static void f4_input(float* restrict V, size_t xs, const float* x, const NormAct* act, int H,
                     int W, int r, int n) {
    const int nt = n * tiles4(W);
    float S[36 * F4_SROW], T[36 * F4_SEG];
    stage_windows(S, x, act, H, W, r, n);
    /* down each window column j: T[6 i' + j] = (B^T d)_i' */
    for (int j = 0; j < 6; j++)
        bt6(F4_P6(T + j * F4_SEG, 6 * F4_SEG), F4_P6(S + j * F4_SROW, 6 * F4_SROW), nt);
    /* along each row i': V[6 i' + j'] = (row B)_j' */
    for (int i = 0; i < 6; i++)
        bt6(F4_P6(V + 6 * i * xs, xs), F4_P6(T + 6 * i * F4_SEG, F4_SEG), nt);
}

/* Rows of y (B, H, W) under tile rows [r, r + n) = (base + start) + A^T m A. */
DDPM_SIMD_CLONES
static void f4_output(float* y, const float* base, const float* restrict M, size_t xs,
                      const WinoStart* st, int H, int W, int r, int n) {
    const int th = tiles4(H), tw = tiles4(W), nt = n * tw, vec = f4_vec();
    float T[24 * F4_SEG], O[16 * F4_SEG + 8];   /* + put_row's 8-lane spill */
    /* down each column j: T[6 i + j] = (A^T m)_i, i = 0..3 */
    for (int j = 0; j < 6; j++)
        at6(F4_P4(T + j * F4_SEG, 6 * F4_SEG), F4_P6(M + j * xs, 6 * xs), nt);
    /* along each row i: O[4 i + j] = (row A)_j */
    for (int i = 0; i < 4; i++)
        at6(F4_P4(O + 4 * i * F4_SEG, F4_SEG), F4_P6(T + 6 * i * F4_SEG, F4_SEG), nt);
#ifdef F4_WIDE
    if (W <= 32 && f4_wide()) {
        put_rows_wide(y, base, O, st, H, W, r, n);
        return;
    }
#endif
    for (int m = 0; m < n; m++) {
        const int b = (r + m) / th, ty = (r + m) % th;
        const size_t plane = (size_t)b * H * W;
        const float sv = wino_start(st, b);
        for (int i = 0; i < 4 && 4 * ty + i < H; i++) {
            const size_t at = plane + (size_t)(4 * ty + i) * W;
            put_row(y + at, base ? base + at : NULL, base == y, O + (size_t)4 * i * F4_SEG + m * tw,
                    sv, W, vec);
        }
    }
}

/* dM[xi * xs + k] = A dy A^T of the 4x4 blocks of tile rows [r, r + n). */
DDPM_SIMD_CLONES
static void f4_output_adjoint(float* restrict dM, size_t xs, const float* dy, int H, int W, int r,
                              int n) {
    const int nt = n * tiles4(W);
    float D[16 * F4_SROW], T[24 * F4_SEG];
    stage_blocks(D, dy, H, W, r, n);
    /* down each block column j: T[4 i' + j] = (A y)_i', i' = 0..5 */
    for (int j = 0; j < 4; j++)
        a4(F4_P6(T + j * F4_SEG, 4 * F4_SEG), F4_P4(D + j * F4_SROW, 4 * F4_SROW), nt);
    /* along each row i': dM[6 i' + j'] = (row A^T)_j' */
    for (int i = 0; i < 6; i++)
        a4(F4_P6(dM + 6 * i * xs, xs), F4_P4(T + 4 * i * F4_SEG, F4_SEG), nt);
}

const WinoKind wino_f4 = {4, 6, 1, F4_SEG, F4_BUDGET_FWD, F4_BUDGET_BWD, 16,
                          f4_weight, f4_weight_adjoint, f4_input, f4_output, f4_output_adjoint,
                          F4_PLANE_MAX, F4_PL, f4_input_planes, f4_output_planes,
                          f4_output_adjoint_planes};
