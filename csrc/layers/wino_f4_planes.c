/*
 * wino_f4_planes.c - the F(4x4, 3x3) transforms of whole small planes
 * (7x7: at most F4_PLANE_MAX a side) in plane lanes, for wino_f4
 * (wino_f4_steps.h says how the tiles are numbered).
 *
 * Why: wino_f4.c stages a tile row at a time, and a 7x7 plane's tile row
 * holds two tiles, so most of each 8-lane staging step was idle (its input
 * transform cost ~3x per tile what a 28x28 plane's does).  Here F4_PL planes
 * go side by side, one 8-lane vector per pixel: the planes are transposed
 * into pixel-major order once (8x8 blocks of shuffles), padded with zeros,
 * normalised (and SiLU'd) there, and every step after that is a full vector.
 * The output goes the other way.  Each value is computed by the same
 * operations on the same operands as in wino_f4.c: the same bits.  (14x14
 * planes ran slower so: 64 -> 64 channels, 32 images, 1.96 -> 2.34 ms; their
 * rows of 4 tiles already fill half of each 8-lane step.)
 */
#include "layers/wino_f4_steps.h"
#include "core/common.h"
#include <string.h>

#define F4_PAD (F4_PLANE_MAX + 2)   /* a padded plane's side: 4 tiles4(S) + 2 */

#ifdef F4_SHUFFLE
/* c[j][i] = r[i][j], i, j = 0..7: three rounds of two-source shuffles */
static inline __attribute__((always_inline)) void transpose8(f4_v8 c[8], const f4_v8 r[8]) {
    const f4_i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const f4_i8 p0 = {0, 1, 8, 9, 4, 5, 12, 13}, p1 = {2, 3, 10, 11, 6, 7, 14, 15};
    const f4_i8 h0 = {0, 1, 2, 3, 8, 9, 10, 11}, h1 = {4, 5, 6, 7, 12, 13, 14, 15};
    f4_v8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
        t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shuffle(t[i], t[i + 2], p0);
        u[i + 1] = __builtin_shuffle(t[i], t[i + 2], p1);
        u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], p0);
        u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], p1);
    }
    for (int j = 0; j < 4; j++) {
        c[j] = __builtin_shuffle(u[j], u[j + 4], h0);
        c[j + 4] = __builtin_shuffle(u[j], u[j + 4], h1);
    }
}
#endif

/* Q[((h + o) PW + w + o) F4_PL + l] = x_l[h W + w] for the F4_PL planes
 * src[l] (H, W): pixel-major, into a grid of PW columns (o = 1: the
 * interior of a zero padding). */
static inline __attribute__((always_inline)) void to_lanes(float* restrict Q,
                                                           const float* const* src, int H,
                                                           int W, int PW, int o, int vec) {
    const int HW = H * W;
    int f = 0;
    (void)vec;
#ifdef F4_SHUFFLE
    if (vec)
        for (; f + 8 <= HW; f += 8) {
            f4_v8 r[8], c[8];
            for (int l = 0; l < 8; l++) memcpy(&r[l], src[l] + f, sizeof r[l]);
            transpose8(c, r);
            for (int q = 0; q < 8; q++) {
                const int h = (f + q) / W, w = (f + q) % W;
                memcpy(Q + ((size_t)(h + o) * PW + w + o) * F4_PL, &c[q], sizeof c[q]);
            }
        }
#endif
    for (; f < HW; f++) {
        float* q = Q + ((size_t)(f / W + o) * PW + f % W + o) * F4_PL;
        for (int l = 0; l < F4_PL; l++) q[l] = src[l][f];
    }
}

/* dst[l n + p] = G[p F4_PL + l], p = 0..n-1, l = 0..F4_PL-1: back to planes
 * (n a multiple of 8) */
static inline __attribute__((always_inline)) void from_lanes(float* restrict dst,
                                                             const float* restrict G, int n,
                                                             int vec) {
    int p = 0;
    (void)vec;
#ifdef F4_SHUFFLE
    if (vec)
        for (; p + 8 <= n; p += 8) {
            f4_v8 r[8], c[8];
            memcpy(r, G + (size_t)p * F4_PL, sizeof r);
            transpose8(c, r);
            for (int l = 0; l < 8; l++) memcpy(dst + (size_t)l * n + p, &c[l], sizeof c[l]);
        }
#endif
    for (; p < n; p++)
        for (int l = 0; l < F4_PL; l++) dst[(size_t)l * n + p] = G[(size_t)p * F4_PL + l];
}

/* dst[xi xs + l nt + t] = Vt[(xi nt + t) F4_PL + l], xi < 36, t < nt,
 * l < np: a group's 36 transformed values of nt tiles, plane-major (the
 * segments' order).  Four tiles (7x7 planes) of 8 planes go as a 4 x 8
 * transpose of shuffles, 4 stores a position. */
static inline __attribute__((always_inline)) void to_plane_major(float* restrict dst, size_t xs,
                                                                 const float* restrict Vt, int nt,
                                                                 int np, int vec) {
    (void)vec;
#ifdef F4_SHUFFLE
    if (vec && nt == 4 && np == F4_PL) {
        const f4_i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
        const f4_i8 p01 = {0, 1, 8, 9, 2, 3, 10, 11}, p45 = {4, 5, 12, 13, 6, 7, 14, 15};
        for (int xi = 0; xi < 36; xi++) {
            f4_v8 v[4];
            memcpy(v, Vt + (size_t)xi * 4 * F4_PL, sizeof v);
            const f4_v8 a = __builtin_shuffle(v[0], v[1], lo), b = __builtin_shuffle(v[0], v[1], hi);
            const f4_v8 c = __builtin_shuffle(v[2], v[3], lo), d = __builtin_shuffle(v[2], v[3], hi);
            const f4_v8 o[4] = {__builtin_shuffle(a, c, p01), __builtin_shuffle(b, d, p01),
                                __builtin_shuffle(a, c, p45), __builtin_shuffle(b, d, p45)};
            memcpy(dst + xi * xs, o, sizeof o);   /* planes 0-1, 2-3, 4-5, 6-7 */
        }
        return;
    }
#endif
    for (int xi = 0; xi < 36; xi++)
        for (int l = 0; l < np; l++)
            for (int t = 0; t < nt; t++)
                dst[xi * xs + (size_t)l * nt + t] = Vt[((size_t)xi * nt + t) * F4_PL + l];
}

DDPM_SIMD_CLONES
void f4_input_planes(float* restrict V, size_t xs, const float* x, const NormAct* act, int H, int W,
                     int b0, int P, int plane_major) {
    const int th = tiles4(H), tw = tiles4(W), PW = 4 * tw + 2, PH = 4 * th + 2, vec = f4_vec();
    const int nt = th * tw;
    const size_t HW = (size_t)H * W, rs = (size_t)PW * F4_PL;
    float Q[F4_PAD * F4_PAD * F4_PL];   /* the padded planes, (ph, pw, l) */
    float Tc[6 * F4_PAD * F4_PL];       /* a tile row's column steps, (i', pw, l) */
    float Vt[36 * 4 * F4_PL];           /* plane_major: a group's values, (xi, t, l) */
    /* the padding, once: each group rewrites only the interior */
    memset(Q, 0, sizeof(float) * PH * PW * F4_PL);
    for (int g = 0; g < P; g += F4_PL) {
        const int np = P - g < F4_PL ? P - g : F4_PL;
        const float* src[F4_PL];
        float a[F4_PL], k[F4_PL];
        for (int l = 0; l < F4_PL; l++) {   /* lanes past np repeat the last plane */
            const int b = b0 + g + (l < np ? l : np - 1);
            src[l] = x + (size_t)b * HW;
            a[l] = act ? act->a[b] : 1.0f;
            k[l] = act ? act->k[b] : 0.0f;
        }
        float a16[16], k16[16];   /* a, k for two pixels' lanes */
        for (int l = 0; l < 16; l++) a16[l] = a[l % F4_PL], k16[l] = k[l % F4_PL];
        to_lanes(Q, src, H, W, PW, 1, vec);
        if (act)   /* groupnorm_act per lane, pixel by pixel (the padding stays zero) */
            for (int h = 0; h < H; h++) {
                float* q = Q + ((size_t)(h + 1) * PW + 1) * F4_PL;
                int w = 0;
                if (act->silu) {
                    /* two pixels a vector where the CPU has AVX-512 (the same bits) */
                    w = ddpm_silu_affine_row_wide(q, q, W * F4_PL, a16, k16) / F4_PL;
                    q += (size_t)w * F4_PL;
#ifdef DDPM_LANES_VECTOR
                    /* four pixels at a time (groupnorm_silu8: the same bits) */
                    _Static_assert(F4_PL == 8, "a pixel's lanes are one ddpm_f8");
                    ddpm_f8 av, kv;
                    memcpy(&av, a, sizeof av);
                    memcpy(&kv, k, sizeof kv);
                    for (; w + 4 <= W; w += 4, q += 4 * F4_PL) groupnorm_silu32(q, q, &av, &kv);
#endif
                    for (; w < W; w++, q += F4_PL)
                        for (int l = 0; l < F4_PL; l++) q[l] = groupnorm_act(q[l], a[l], k[l], 1);
                } else {
                    for (; w < W; w++, q += F4_PL)
                        for (int l = 0; l < F4_PL; l++) q[l] = groupnorm_act(q[l], a[l], k[l], 0);
                }
            }
        for (int ty = 0; ty < th; ty++) {
            /* down each padded column of the tile row's six rows: Tc[i'][pw] = (B^T d)_i' */
            for (int pw = 0; pw < PW; pw++)
                bt6(F4_P6(Tc + (size_t)pw * F4_PL, rs),
                    F4_P6(Q + ((size_t)4 * ty * PW + pw) * F4_PL, rs), F4_PL);
            /* along each tile's rows: V[6 i' + j'] = (row B)_j' */
            for (int tx = 0; tx < tw; tx++) {
                const int t = ty * tw + tx;
                float* v = plane_major ? Vt + (size_t)t * F4_PL : V + (size_t)t * P + g;
                const size_t vx = plane_major ? (size_t)nt * F4_PL : xs;
                for (int i = 0; i < 6; i++)
                    bt6(F4_P6(v + 6 * i * vx, vx),
                        F4_P6(Tc + ((size_t)i * PW + 4 * tx) * F4_PL, F4_PL), np);
            }
        }
        if (plane_major) to_plane_major(V + (size_t)g * nt, xs, Vt, nt, np, vec);
    }
}

DDPM_SIMD_CLONES
void f4_output_adjoint_planes(float* restrict dM, size_t xs, const float* dy, int H, int W,
                              int b0, int P) {
    const int th = tiles4(H), tw = tiles4(W), OW = 4 * tw, nt = th * tw, vec = f4_vec();
    const size_t HW = (size_t)H * W;
    float D[F4_PLANE_MAX * F4_PLANE_MAX * F4_PL];   /* dy on the tiles' grid, (oh, ow, l) */
    float Tt[24 * F4_PL];                           /* a tile's column steps, (i', j, l) */
    float Mt[36 * 4 * F4_PL];                       /* a group's values, (xi, t, l) */
    /* the grid beyond H, W stays zero: each group rewrites only (H, W) */
    memset(D, 0, sizeof(float) * 4 * th * OW * F4_PL);
    for (int g = 0; g < P; g += F4_PL) {
        const int np = P - g < F4_PL ? P - g : F4_PL;
        const float* src[F4_PL];
        for (int l = 0; l < F4_PL; l++) src[l] = dy + (size_t)(b0 + g + (l < np ? l : np - 1)) * HW;
        to_lanes(D, src, H, W, OW, 0, vec);
        for (int ty = 0; ty < th; ty++)
            for (int tx = 0; tx < tw; tx++) {
                const int t = ty * tw + tx;
                const float* d = D + ((size_t)4 * ty * OW + 4 * tx) * F4_PL;
                /* down each block column j: Tt[4 i' + j] = (A y)_i'; all F4_PL
                 * lanes (the lanes past np repeat a plane; a trip count that
                 * varies made GCC call memcpy for a4's copied rows) */
                for (int j = 0; j < 4; j++)
                    a4(F4_P6(Tt + j * F4_PL, 4 * F4_PL), F4_P4(d + j * F4_PL, OW * F4_PL), F4_PL);
                /* along each row i': dM[6 i' + j'] = (row A^T)_j' */
                float* m = Mt + (size_t)t * F4_PL;
                for (int i = 0; i < 6; i++)
                    a4(F4_P6(m + (size_t)6 * i * nt * F4_PL, (size_t)nt * F4_PL),
                       F4_P4(Tt + 4 * i * F4_PL, F4_PL), F4_PL);
            }
        to_plane_major(dM + (size_t)g * nt, xs, Mt, nt, np, vec);
    }
}

DDPM_SIMD_CLONES
void f4_output_planes(float* y, const float* base, const float* restrict M, size_t xs,
                      const WinoStart* st, int H, int W, int b0, int P) {
    const int th = tiles4(H), tw = tiles4(W), OW = 4 * tw, n = 4 * th * OW, vec = f4_vec();
    const size_t HW = (size_t)H * W;
    float Tm[24 * F4_PL];                                 /* (i, j, l): down the columns */
    float G[F4_PLANE_MAX * F4_PLANE_MAX * F4_PL];         /* outputs on the tiles' grid, (oh, ow, l) */
    float Y[F4_PL * F4_PLANE_MAX * F4_PLANE_MAX];         /* the same, plane by plane */
    for (int g = 0; g < P; g += F4_PL) {
        const int np = P - g < F4_PL ? P - g : F4_PL;
        for (int ty = 0; ty < th; ty++)
            for (int tx = 0; tx < tw; tx++) {
                const float* m = M + (size_t)(ty * tw + tx) * P + g;
                /* down each column j: Tm[6 i + j] = (A^T m)_i */
                for (int j = 0; j < 6; j++)
                    at6(F4_P4(Tm + j * F4_PL, 6 * F4_PL), F4_P6(m + j * xs, 6 * xs), np);
                /* along each row i: the tile's outputs (4 ty + i, 4 tx + j) */
                for (int i = 0; i < 4; i++)
                    at6(F4_P4(G + ((size_t)(4 * ty + i) * OW + 4 * tx) * F4_PL, F4_PL),
                        F4_P6(Tm + 6 * i * F4_PL, F4_PL), np);
            }
        from_lanes(Y, G, n, vec);
        for (int l = 0; l < np; l++) {
            const int b = b0 + g + l;
            const float sv = wino_start(st, b);
            float* yp = y + (size_t)b * HW;
            const float* bp = base ? base + (size_t)b * HW : NULL;
            const float* o = Y + (size_t)l * n;
            for (int h = 0; h < H; h++) {
                float* yr = yp + (size_t)h * W;
                const float* orow = o + (size_t)h * OW;
                if (bp) {
                    const float* br = bp + (size_t)h * W;   /* may be yr (accumulate) */
                    for (int w = 0; w < W; w++) yr[w] = (br[w] + sv) + orow[w];
                } else {
                    for (int w = 0; w < W; w++) yr[w] = sv + orow[w];
                }
            }
        }
    }
}
