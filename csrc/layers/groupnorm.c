/*
 * groupnorm.c - GroupNorm (+ SiLU) forward and backward.
 *
 * Sums over a group run in 16 float lanes (so they vectorise) that are then
 * added in float64, in a fixed order: accurate, and the same bits at any
 * thread count.  Each (b, g) is one task, so threads write disjoint outputs.
 */
#include "layers/groupnorm.h"
#include "core/common.h"
#include "core/threads.h"
#include <math.h>
#define LANES 16

static inline float sigmoidf_(float y) { return 1.0f / (1.0f + ddpm_expf(-y)); }

/* sum of (x - m)^2 in fixed lanes */
static inline double lane_sq(const float* x, int n, float m) {
    float acc[LANES];
    int i = 0;
#ifdef DDPM_LANES_VECTOR
    ddpm_f8 a0 = {0}, a1 = {0};
    const ddpm_f8 mv = {m, m, m, m, m, m, m, m};
    for (; i + LANES <= n; i += LANES) {
        ddpm_f8 d0, d1;
        DDPM_LOAD8(d0, x + i);
        DDPM_LOAD8(d1, x + i + 8);
        d0 -= mv;
        d1 -= mv;
        a0 += d0 * d0;
        a1 += d1 * d1;
    }
    memcpy(acc, &a0, sizeof a0);
    memcpy(acc + 8, &a1, sizeof a1);
#else
    for (int j = 0; j < LANES; j++) acc[j] = 0.0f;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) { float d = x[i + j] - m; acc[j] += d * d; }
#endif
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    for (; i < n; i++) { double d = (double)x[i] - m; s += d * d; }
    return s;
}

/* One channel row of the forward: o = groupnorm_act(x, a, k, silu).  Purely
 * elementwise, so it is also compiled for AVX2 (same operations in the same
 * order, so the same bits). */
DDPM_SIMD_CLONES
static void row_affine(float* o, const float* x, int n, float a, float k, int silu) {
    groupnorm_act_row(o, x, n, a, k, silu);
}

/* The statistics of one (b, g) group: *mean, *rstd.  Cloned like the
 * elementwise loops: its passes (16 lanes as two 8-float vectors) otherwise
 * compile for the baseline's 4-float registers; the same operations in the
 * same order, so the same bits. */
DDPM_SIMD_CLONES
static void groupnorm_group_stats(float* mean, float* rstd, const float* inp, int b, int g,
                                  int B, int Cg, int HW, float eps) {
    double s = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) s += ddpm_sum(inp + ((size_t)c * B + b) * HW, HW);
    const double n = (double)Cg * HW;
    const float m32 = (float)(s / n);
    /* centred second pass around the float32 mean (exact shift, tiny residual;
     * the first pass's sum s gives the residual mean - m32 without a third pass) */
    double v = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) v += lane_sq(inp + ((size_t)c * B + b) * HW, HW, m32);
    double dm = s / n - (double)m32;           /* mean - m32 */
    double var = v / n - dm * dm;
    if (var < 0) var = 0;
    *mean = (float)(m32 + dm);
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
}

/* Over the (b, g) groups, g-major: consecutive tasks take the next sample's
 * rows of the same channels, which lie right after (C, B, HW): Cg sequential
 * streams.  Statistics, then per channel a, k, and the normalised (and
 * SiLU'd) rows when out is given, else a and k stored (C, B). */
static void groupnorm_run(float* out, float* ca, float* ck, float* mean, float* rstd,
                          const float* inp, const float* weight, const float* bias, int B, int C,
                          int HW, int G, float eps, int silu) {
    const int Cg = C / G;
    const int tasks = B * G;
    int nt = ddpm_threads_for((size_t)B * C * HW, 1 << 14);
    DDPM_PARALLEL_FOR(nt)
    for (int task = 0; task < tasks; task++)
    {
        const int b = task % B, g = task / B;
        float* m = mean + (size_t)b * G + g;
        float* r = rstd + (size_t)b * G + g;
        groupnorm_group_stats(m, r, inp, b, g, B, Cg, HW, eps);
        for (int c = g * Cg; c < (g + 1) * Cg; c++) {
            float a, k;
            groupnorm_coeff(*m, *r, weight[c], bias[c], &a, &k);
            if (out) {
                const size_t row = ((size_t)c * B + b) * HW;
                row_affine(out + row, inp + row, HW, a, k, silu);
            } else {
                ca[(size_t)c * B + b] = a;
                ck[(size_t)c * B + b] = k;
            }
        }
    }
}

void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int B, int C, int HW, int G,
                       float eps, int silu) {
    groupnorm_run(out, NULL, NULL, mean, rstd, inp, weight, bias, B, C, HW, G, eps, silu);
}

void groupnorm_coeffs(float* a, float* k, float* mean, float* rstd, const float* inp,
                      const float* weight, const float* bias, int B, int C, int HW, int G,
                      float eps) {
    groupnorm_run(NULL, a, k, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 0);
}

/* dy = d * silu'(y), y = x * a + k the forward's pre-activation (the same
 * bits as there), silu'(y) = s (1 + y (1 - s)) with s = sigmoid(y). */
DDPM_SIMD_CLONES
static void row_silu_grad(float* dy, const float* d, const float* x, int n, float a, float k) {
    for (int i = 0; i < n; i++) {
        float y = x[i] * a + k, s = sigmoidf_(y);
        dy[i] = d[i] * (s * (1.0f + y * (1.0f - s)));
    }
}

/* For one channel row: sum dy * xhat and sum dy, xhat = (x - m) r, in fixed
 * lanes. */
static inline void row_sums(const float* x, const float* dy, int HW, float m, float r,
                            double* sw_out, double* sb_out) {
    float aw[LANES], ab[LANES];
    int i = 0;
#ifdef DDPM_LANES_VECTOR
    ddpm_f8 w0 = {0}, w1 = {0}, b0 = {0}, b1 = {0};
    const ddpm_f8 mv = {m, m, m, m, m, m, m, m}, rv = {r, r, r, r, r, r, r, r};
    for (; i + LANES <= HW; i += LANES) {
        ddpm_f8 d0, d1, x0, x1;
        DDPM_LOAD8(d0, dy + i);
        DDPM_LOAD8(d1, dy + i + 8);
        DDPM_LOAD8(x0, x + i);
        DDPM_LOAD8(x1, x + i + 8);
        x0 = (x0 - mv) * rv;
        x1 = (x1 - mv) * rv;
        w0 += d0 * x0;
        w1 += d1 * x1;
        b0 += d0;
        b1 += d1;
    }
    memcpy(aw, &w0, sizeof w0);
    memcpy(aw + 8, &w1, sizeof w1);
    memcpy(ab, &b0, sizeof b0);
    memcpy(ab + 8, &b1, sizeof b1);
#else
    for (int j = 0; j < LANES; j++) aw[j] = ab[j] = 0.0f;
    for (; i + LANES <= HW; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float xh = (x[i + j] - m) * r;
            aw[j] += dy[i + j] * xh;
            ab[j] += dy[i + j];
        }
#endif
    double sw = 0.0, sb = 0.0;
    for (int j = 0; j < LANES; j++) { sw += aw[j]; sb += ab[j]; }
    for (; i < HW; i++) {
        float xh = (x[i] - m) * r;
        sw += (double)dy[i] * xh;
        sb += dy[i];
    }
    *sw_out = sw;
    *sb_out = sb;
}

/* dx += r (dy w - k1 - xhat k2) (acc 1) or = (acc 0), xhat = (x - m) r: the
 * input gradient of one channel row, given the group means k1 = mean(dy w),
 * k2 = mean(dy w xhat). */
DDPM_SIMD_CLONES
static void row_dx(float* dx, const float* dy, const float* x, int n, float m, float r, float w,
                   float k1, float k2, int acc) {
    if (acc) {
        for (int i = 0; i < n; i++) {
            float xh = (x[i] - m) * r;
            dx[i] += r * (dy[i] * w - k1 - xh * k2);
        }
    } else {
        for (int i = 0; i < n; i++) {
            float xh = (x[i] - m) * r;
            dx[i] = r * (dy[i] * w - k1 - xh * k2);
        }
    }
}

/* One (b, g) group of the backward: per-channel sums, then the input gradient.
 * pw/pb are (B, C) per-sample partials of dweight/dbias.  With the fused SiLU,
 * dy (the gradient at the norm's output, before the SiLU) is formed once
 * into dyb (Cg * HW floats, this thread's) and read again by the second
 * pass, so the sigmoid is evaluated once per element.  Cloned for its sums,
 * as the forward's group is. */
DDPM_SIMD_CLONES
static void groupnorm_backward_group(float* dinp, float* pw, float* pb, float* dyb,
                                     const float* dout, const float* inp, const float* weight,
                                     const float* bias, float m, float r, int b, int g, int B,
                                     int C, int Cg, int HW, int silu, int acc) {
    /* pass 1: dy and the sums for the input gradient (sum dy*w, sum dy*w*xhat) */
    double s1 = 0.0, s2 = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) {
        const size_t row = ((size_t)c * B + b) * HW;
        const float* dy = dout + row;
        if (silu) {
            float* d = dyb + (size_t)(c - g * Cg) * HW;
            float a, k;
            groupnorm_coeff(m, r, weight[c], bias[c], &a, &k);
            row_silu_grad(d, dout + row, inp + row, HW, a, k);
            dy = d;
        }
        double sw, sb;
        row_sums(inp + row, dy, HW, m, r, &sw, &sb);
        pw[(size_t)b * C + c] = (float)sw;
        pb[(size_t)b * C + c] = (float)sb;
        s1 += sb * weight[c];
        s2 += sw * weight[c];
    }
    const double n = (double)Cg * HW;
    const float k1 = (float)(s1 / n), k2 = (float)(s2 / n);
    /* pass 2: dx = rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w*xhat)) */
    for (int c = g * Cg; c < (g + 1) * Cg; c++) {
        const size_t row = ((size_t)c * B + b) * HW;
        const float* dy = silu ? dyb + (size_t)(c - g * Cg) * HW : dout + row;
        row_dx(dinp + row, dy, inp + row, HW, m, r, weight[c], k1, k2, acc);
    }
}

void groupnorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* bias, const float* mean, const float* rstd, int B, int C,
                        int HW, int G, int silu, int accumulate) {
    const int Cg = C / G;
    const int tasks = B * G;
    float* pw = scratch;                  /* (B, C): sum_hw dy * xhat per sample */
    float* pb = scratch + (size_t)B * C;  /* (B, C): sum_hw dy per sample */
    float* dy_lanes = scratch + 2 * (size_t)B * C;   /* GN_LANES x (Cg, HW) */
    int nt = ddpm_threads_for((size_t)B * C * HW, 1 << 14);
    if (nt > GN_LANES) nt = GN_LANES;
DDPM_PARALLEL(nt)
    {
        float* dyb = dy_lanes + (size_t)ddpm_thread_num() * Cg * HW;
DDPM_OMP_FOR
        for (int task = 0; task < tasks; task++)
        {
            const int b = task % B, g = task / B;   /* g-major, as the forward */
            groupnorm_backward_group(dinp, pw, pb, dyb, dout, inp, weight, bias,
                                     mean[(size_t)b * G + g], rstd[(size_t)b * G + g], b, g, B, C,
                                     Cg, HW, silu, accumulate);
        }
    }
    /* parameter gradients: sum the per-sample partials over b, in order */
    for (int c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) { sw += pw[(size_t)b * C + c]; sb += pb[(size_t)b * C + c]; }
        dweight[c] += (float)sw;
        dbias[c] += (float)sb;
    }
}
