/*
 * train.c - the fused training step: noise, forward, loss, backward, clip,
 * Adam(W), EMA, with no Python in between.
 */
#include "diffusion/train.h"
#include "diffusion/objective.h"
#include "core/common.h"
#include "diffusion/noising.h"
#include "nets/unet_lanes.h"
#include "core/rng.h"
#include <math.h>
#include <string.h>

/* t = 1 + floor(u T / 2^32) for a 32-bit uniform word u: bias below T / 2^32. */
void train_draw_timesteps(int64_t* t, int B, int T, uint64_t seed, long step) {
    uint32_t u[4096];
    for (int b0 = 0; b0 < B; b0 += 4096) {
        int n = B - b0 < 4096 ? B - b0 : 4096;
        rng_uint32_fill(u, (size_t)n, seed, DDPM_STREAM_TRAIN_T + (uint64_t)step, (uint64_t)b0);
        for (int i = 0; i < n; i++) t[b0 + i] = 1 + (int64_t)(((uint64_t)u[i] * (uint64_t)T) >> 32);
    }
}

void train_draw_noise(float* eps, size_t n, uint64_t seed, long step) {
    rng_normal_fill_parallel(eps, n, seed, DDPM_STREAM_TRAIN_EPS + (uint64_t)step, 0);
}

void train_drop_labels(int64_t* out, const int64_t* labels, int B, double p, int64_t null_label,
                       uint64_t seed, long step) {
    uint32_t u[4096];
    const double cut = p * 4294967296.0;
    for (int b0 = 0; b0 < B; b0 += 4096) {
        int n = B - b0 < 4096 ? B - b0 : 4096;
        rng_uint32_fill(u, (size_t)n, seed, DDPM_STREAM_TRAIN_DROP + (uint64_t)step, (uint64_t)b0);
        for (int i = 0; i < n; i++) out[b0 + i] = (double)u[i] < cut ? null_label : labels[b0 + i];
    }
}

int train_step(UNet* net, float* params, float* grads, float* m, float* v, float* ema,
               const float* x0, float* xt, float* eps, float* out, float* dout, int64_t* t,
               const int64_t* labels, int64_t* used, float* sample_loss, const double* sqrt_ab, const double* sqrt_1mab, int T,
               int B, size_t D, const TrainConfig* cfg, double* loss, double* grad_norm) {
    const size_t P = unet_num_parameters(net);
    /* 1. t and eps */
    if (!cfg->given_t) train_draw_timesteps(t, B, T, cfg->seed, cfg->step);
    if (!cfg->given_eps) train_draw_noise(eps, (size_t)B * D, cfg->seed, cfg->step);
    /* labels, each replaced by the null label with probability p_uncond */
    if (labels) {
        if (cfg->given_drop) memmove(used, labels, sizeof(int64_t) * (size_t)B);
        else train_drop_labels(used, labels, B, cfg->p_uncond, cfg->null_label, cfg->seed,
                               cfg->step);
    }
    /* 2. x_t by the closed form (checks x0 and eps for NaN/Inf) */
    int st = q_sample(xt, eps, x0, t, sqrt_ab, sqrt_1mab, (size_t)B, D, 0, 1);
    if (st) return st;
    /* 3. the network at its time net_time(t) (dout's first B floats hold it for a moment) */
    float tf[1024];
    float* tnet = B <= 1024 ? tf : dout;
    for (int b = 0; b < B; b++) tnet[b] = net_time(t[b]);
    st = unet_forward_halves(net, params, xt, tnet, labels ? used : NULL, out, B);
    if (st) return st;
    /* 4. loss and its gradient: target, per-image mse, weights */
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const double a = sqrt_ab[t[b]], s = sqrt_1mab[t[b]];
        const float af = (float)a, sf = (float)s;
        const float* xb = x0 + (size_t)b * D;
        const float* eb = eps + (size_t)b * D;
        const float* ob = out + (size_t)b * D;
        float* db = dout + (size_t)b * D;
        double w = 1.0;
        if (cfg->min_snr_gamma > 0)
            w = objective_min_snr_weight(cfg->objective, (a * a) / (s * s), cfg->min_snr_gamma);
        double se = 0.0;
        for (size_t i = 0; i < D; i++) {
            float target = objective_target(cfg->objective, xb[i], eb[i], af, sf);
            float diff = ob[i] - target;
            db[i] = diff;
            se += (double)diff * diff;
        }
        double mse = se / (double)D;
        sample_loss[b] = (float)mse;
        total += w * mse;
        /* d loss / d out = 2 w (out - target) / (B D) */
        const float g = (float)(2.0 * w / ((double)B * (double)D));
        for (size_t i = 0; i < D; i++) db[i] *= g;
    }
    *loss = total / B;
    if (!isfinite(*loss)) return DDPM_ERR_NONFINITE;
    /* 5. gradients */
    st = unet_backward_halves(net, params, grads, dout, B);
    if (st) return st;
    /* 6. clip the global norm (torch: coef = max_norm / (norm + 1e-6), clamped at 1) */
    double norm = grad_global_norm(grads, P);
    *grad_norm = norm;
    if (!isfinite(norm)) return DDPM_ERR_NONFINITE;
    const float scale = grad_clip_scale(norm, cfg->grad_clip);
    /* 7. Adam(W), 8. EMA */
    adam_step(params, m, v, grads, P, cfg->step, &cfg->adam, scale);
    if (ema && cfg->ema_decay >= 0)
        ema_update(ema, params, P, ema_decay_at(cfg->ema_decay, cfg->ema_updates));
    return DDPM_OK;
}
