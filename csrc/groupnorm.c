/*
 * groupnorm.c - GroupNorm (+ SiLU) forward and backward.
 *
 * Sums over a group run in 16 float lanes (so they vectorise) that are then
 * added in float64, in a fixed order: accurate, and the same bits at any
 * thread count.  Each (b, g) is one task, so threads write disjoint outputs.
 */
#include "groupnorm.h"
#include "common.h"
#include <math.h>

#define LANES 16

static inline float sigmoidf_(float y) { return 1.0f / (1.0f + ddpm_expf(-y)); }

/* sum of x[0..n) in fixed lanes */
static inline double lane_sum(const float* x, int n) {
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j];
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    for (; i < n; i++) s += x[i];
    return s;
}

/* sum of (x - m)^2 in fixed lanes */
static inline double lane_sq(const float* x, int n, float m) {
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) { float d = x[i + j] - m; acc[j] += d * d; }
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    for (; i < n; i++) { double d = (double)x[i] - m; s += d * d; }
    return s;
}

/* One (b, g) group of the forward: statistics, then the normalised (and SiLU'd)
 * output. */
static void groupnorm_forward_group(float* out, float* mean, float* rstd, const float* inp,
                                    const float* weight, const float* bias, int b, int g,
                                    int B, int Cg, int HW, float eps, int silu) {
    double s = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) s += lane_sum(inp + ((size_t)c * B + b) * HW, HW);
    const double n = (double)Cg * HW;
    const float m32 = (float)(s / n);
    /* centred second pass around the float32 mean (exact shift, tiny residual;
     * the first pass's sum s gives the residual mean - m32 without a third pass) */
    double v = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) v += lane_sq(inp + ((size_t)c * B + b) * HW, HW, m32);
    double dm = s / n - (double)m32;           /* mean - m32 */
    double var = v / n - dm * dm;
    if (var < 0) var = 0;
    float mf = (float)(m32 + dm), rf = (float)(1.0 / sqrt(var + (double)eps));
    *mean = mf;
    *rstd = rf;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) {
        const float* x = inp + ((size_t)c * B + b) * HW;
        float* o = out + ((size_t)c * B + b) * HW;
        /* y = x * a + k with a = rstd*w, k = bias - mean*rstd*w */
        float a = rf * weight[c], k = bias[c] - mf * a;
        if (silu) {
            for (int i = 0; i < HW; i++) { float y = x[i] * a + k; o[i] = y * sigmoidf_(y); }
        } else {
            for (int i = 0; i < HW; i++) o[i] = x[i] * a + k;
        }
    }
}

void groupnorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int B, int C, int HW, int G,
                       float eps, int silu) {
    const int Cg = C / G;
    const int tasks = B * G;
    int nt = ddpm_threads_for((size_t)B * C * HW, 1 << 14);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int task = 0; task < tasks; task++)
        groupnorm_forward_group(out, mean + task, rstd + task, inp, weight, bias, task / G,
                                task % G, B, Cg, HW, eps, silu);
}

/* For one channel row: dy (through the SiLU when fused) is formed on the fly;
 * returns sum dy * xhat and sum dy. */
static inline void row_sums(const float* x, const float* d, int HW, float m, float r, float w, float bb,
                     int silu, double* sw_out, double* sb_out) {
    float aw[LANES] = {0}, ab[LANES] = {0};
    int i = 0;
    for (; i + LANES <= HW; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float xh = (x[i + j] - m) * r;
            float dy = d[i + j];
            if (silu) {
                float y = xh * w + bb, sg = sigmoidf_(y);
                dy *= sg * (1.0f + y * (1.0f - sg));
            }
            aw[j] += dy * xh;
            ab[j] += dy;
        }
    double sw = 0.0, sb = 0.0;
    for (int j = 0; j < LANES; j++) { sw += aw[j]; sb += ab[j]; }
    for (; i < HW; i++) {
        float xh = (x[i] - m) * r;
        float dy = d[i];
        if (silu) {
            float y = xh * w + bb, sg = sigmoidf_(y);
            dy *= sg * (1.0f + y * (1.0f - sg));
        }
        sw += (double)dy * xh;
        sb += dy;
    }
    *sw_out = sw;
    *sb_out = sb;
}

/* One (b, g) group of the backward: per-channel sums, then the input gradient.
 * pw/pb are (B, C) per-sample partials of dweight/dbias. */
static void groupnorm_backward_group(float* dinp, float* pw, float* pb, const float* dout,
                                     const float* inp, const float* weight, const float* bias,
                                     float m, float r, int b, int g, int B, int C, int Cg,
                                     int HW, int silu) {
    /* pass 1: sums for the input gradient (sum dy*w, sum dy*w*xhat) */
    double s1 = 0.0, s2 = 0.0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) {
        double sw, sb;
        row_sums(inp + ((size_t)c * B + b) * HW, dout + ((size_t)c * B + b) * HW, HW, m, r,
                 weight[c], bias[c], silu, &sw, &sb);
        pw[(size_t)b * C + c] = (float)sw;
        pb[(size_t)b * C + c] = (float)sb;
        s1 += sb * weight[c];
        s2 += sw * weight[c];
    }
    const double n = (double)Cg * HW;
    const float k1 = (float)(s1 / n), k2 = (float)(s2 / n);
    /* pass 2: dx = rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w*xhat)) */
    for (int c = g * Cg; c < (g + 1) * Cg; c++) {
        const float* x = inp + ((size_t)c * B + b) * HW;
        const float* d = dout + ((size_t)c * B + b) * HW;
        float* dx = dinp + ((size_t)c * B + b) * HW;
        const float w = weight[c], bb = bias[c];
        for (int i = 0; i < HW; i++) {
            float xh = (x[i] - m) * r;
            float dy = d[i];
            if (silu) {
                float y = xh * w + bb, sg = sigmoidf_(y);
                dy *= sg * (1.0f + y * (1.0f - sg));
            }
            dx[i] += r * (dy * w - k1 - xh * k2);
        }
    }
}

void groupnorm_backward(float* dinp, float* dweight, float* dbias, float* scratch,
                        const float* dout, const float* inp, const float* weight,
                        const float* bias, const float* mean, const float* rstd, int B, int C,
                        int HW, int G, int silu) {
    const int Cg = C / G;
    const int tasks = B * G;
    float* pw = scratch;                  /* (B, C): sum_hw dy * xhat per sample */
    float* pb = scratch + (size_t)B * C;  /* (B, C): sum_hw dy per sample */
    int nt = ddpm_threads_for((size_t)B * C * HW, 1 << 14);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int task = 0; task < tasks; task++)
        groupnorm_backward_group(dinp, pw, pb, dout, inp, weight, bias, mean[task], rstd[task],
                                 task / G, task % G, B, C, Cg, HW, silu);
    /* parameter gradients: sum the per-sample partials over b, in order */
    for (int c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) { sw += pw[(size_t)b * C + c]; sb += pb[(size_t)b * C + c]; }
        dweight[c] += (float)sw;
        dbias[c] += (float)sb;
    }
}
