/*
 * optim.h - the optimizer side of a training step over flat float32 buffers:
 * global gradient norm (for clipping), Adam/AdamW with bias correction, and
 * the exponential moving average (EMA) of the weights.
 *
 * Legend: P number of parameters.  params, grads, m (first moments), v
 * (second moments) and ema are each ONE flat (P,) buffer owned by NumPy, laid
 * out by the network's parameter table, so each update is one loop over P.
 */
#ifndef DDPM_OPTIM_H
#define DDPM_OPTIM_H

#include <stddef.h>

typedef struct {
    float lr;            /* learning rate of this step (after warm-up)           */
    float beta1, beta2;  /* moment decay rates                                   */
    float eps;           /* added to sqrt(v_hat)                                 */
    float weight_decay;  /* decoupled (AdamW) or L2 added to the gradient (Adam) */
    int decoupled;       /* 1: AdamW, 0: Adam                                    */
} AdamConfig;

/* sqrt(sum grads^2) over (P,), summed in fixed blocks, then the blocks in
 * order (float64): the same bits at any thread count. */
double grad_global_norm(const float* grads, size_t P);

/* The factor clipping the global norm to max_norm scales gradients by, as
 * torch.nn.utils.clip_grad_norm_: min(1, max_norm / (norm + 1e-6)); 1 when
 * max_norm <= 0 (no clipping). */
static inline float grad_clip_scale(double norm, double max_norm) {
    if (max_norm <= 0) return 1.0f;
    float coef = (float)(max_norm / (norm + 1e-6));
    return coef < 1.0f ? coef : 1.0f;
}

/* One Adam(W) step at 1-based step number `step`, on gradients scaled by
 * grad_scale (the clipping coefficient, 1 for none).  Matches torch.optim.Adam
 * and AdamW (single-tensor path): m = lerp(m, g, 1 - beta1),
 * v = beta2 v + (1 - beta2) g^2, p -= lr/(1 - beta1^t) m / (sqrt(v)/sqrt(1 - beta2^t) + eps). */
void adam_step(float* params, float* m, float* v, const float* grads, size_t P, long step,
               const AdamConfig* cfg, float grad_scale);

/* ema -= (1 - decay) (ema - params); decay = 0 copies params. */
void ema_update(float* ema, const float* params, size_t P, float decay);

/* diffusers' EMAModel schedule: 0 for the first update (k = 0 updates done),
 * then min(decay, (1 + k) / (10 + k)). */
float ema_decay_at(float decay, long updates_done);

#endif /* DDPM_OPTIM_H */
