/*
 * optim.c - gradient norm, Adam/AdamW and EMA over flat buffers.
 *
 * Elementwise updates split over threads in contiguous ranges (disjoint
 * writes); the one reduction (the norm) sums fixed blocks in a fixed order.
 */
#include "core/optim.h"
#include "core/common.h"
#include "core/threads.h"
#include <math.h>

#define NORM_BLOCK 16384   /* block size of the norm's partial sums (fixed) */

double grad_global_norm(const float* grads, size_t P) {
    size_t nblk = (P + NORM_BLOCK - 1) / NORM_BLOCK;
    double total = 0.0;
    /* partials computed in parallel into a fixed slot each, then added in order */
    enum { MAXB = 4096 };
    double part[MAXB];
    size_t done = 0;
    while (done < nblk) {
        size_t n = nblk - done < MAXB ? nblk - done : MAXB;
        int nt = ddpm_threads_for(n * NORM_BLOCK, 4 * NORM_BLOCK);
        DDPM_PARALLEL_FOR(nt)
        for (size_t k = 0; k < n; k++) {
            size_t lo = (done + k) * NORM_BLOCK;
            size_t hi = lo + NORM_BLOCK < P ? lo + NORM_BLOCK : P;
            float acc[16] = {0};
            size_t i = lo;
            for (; i + 16 <= hi; i += 16)
                for (int j = 0; j < 16; j++) acc[j] += grads[i + j] * grads[i + j];
            double s = 0.0;
            for (int j = 0; j < 16; j++) s += acc[j];
            for (; i < hi; i++) s += (double)grads[i] * grads[i];
            part[k] = s;
        }
        for (size_t k = 0; k < n; k++) total += part[k];
        done += n;
    }
    return sqrt(total);
}

void adam_step(float* params, float* m, float* v, const float* grads, size_t P, long step,
               const AdamConfig* cfg, float grad_scale) {
    const float b1 = cfg->beta1, b2 = cfg->beta2, lr = cfg->lr, wd = cfg->weight_decay;
    /* bias corrections in float64, then rounded, as torch computes them in Python floats */
    const double bc1 = 1.0 - pow((double)b1, (double)step);
    const double bc2 = 1.0 - pow((double)b2, (double)step);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float w1 = 1.0f - b1, w2 = 1.0f - b2;
    const float shrink = cfg->decoupled ? 1.0f - lr * wd : 1.0f;
    const int l2 = !cfg->decoupled && wd != 0.0f;
    int nt = ddpm_threads_for(P, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t i = 0; i < P; i++) {
        float p = params[i];
        float g = grads[i] * grad_scale;
        if (l2) g += wd * p;
        p *= shrink;
        float mi = m[i] + w1 * (g - m[i]);          /* torch: exp_avg.lerp_(grad, 1 - beta1) */
        float vi = v[i] * b2 + (w2 * g) * g;        /* exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2) */
        float denom = sqrtf(vi) / bc2_sqrt + cfg->eps;
        params[i] = p - step_size * (mi / denom);   /* param.addcdiv_(m, denom, -step_size) */
        m[i] = mi;
        v[i] = vi;
    }
}

void ema_update(float* ema, const float* params, size_t P, float decay) {
    const float w = 1.0f - decay;
    int nt = ddpm_threads_for(P, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t i = 0; i < P; i++) ema[i] -= w * (ema[i] - params[i]);
}

float ema_decay_at(float decay, long k) {
    if (k <= 0) return 0.0f;
    float ramp = (float)((1.0 + (double)k) / (10.0 + (double)k));
    return ramp < decay ? ramp : decay;
}
