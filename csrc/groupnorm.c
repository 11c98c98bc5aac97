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
static double lane_sum(const float* x, int n) {
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
static double lane_sq(const float* x, int n, float m) {
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) { float d = x[i + j] - m; acc[j] += d * d; }
    double s = 0.0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    for (; i < n; i++) { double d = (double)x[i] - m; s += d * d; }
    return s;
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
    for (int task = 0; task < tasks; task++) {
        int b = task / G, g = task % G;
        double s = 0.0;
        for (int c = g * Cg; c < (g + 1) * Cg; c++) s += lane_sum(inp + ((size_t)c * B + b) * HW, HW);
        const double n = (double)Cg * HW;
        const float m32 = (float)(s / n);
        /* centred second pass around the float32 mean (exact shift, tiny residual) */
        double v = 0.0, r1 = 0.0;
        for (int c = g * Cg; c < (g + 1) * Cg; c++) {
            const float* x = inp + ((size_t)c * B + b) * HW;
            v += lane_sq(x, HW, m32);
            r1 += lane_sum(x, HW);
        }
        double dm = r1 / n - (double)m32;          /* mean - m32 */
        double var = v / n - dm * dm;
        if (var < 0) var = 0;
        float mf = (float)(m32 + dm), rf = (float)(1.0 / sqrt(var + (double)eps));
        mean[task] = mf;
        rstd[task] = rf;
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
}

/* For one channel row: dy (through the SiLU when fused) is formed on the fly;
 * returns sum dy * xhat and sum dy. */
static void row_sums(const float* x, const float* d, int HW, float m, float r, float w, float bb,
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
    for (int task = 0; task < tasks; task++) {
        int b = task / G, g = task % G;
        const float m = mean[task], r = rstd[task];
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
    /* parameter gradients: sum the per-sample partials over b, in order */
    for (int c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) { sw += pw[(size_t)b * C + c]; sb += pb[(size_t)b * C + c]; }
        dweight[c] += (float)sw;
        dbias[c] += (float)sb;
    }
}
