/*
 * train.h - one DDPM training step in one call (lesson 6-2-3's algorithm):
 *
 *   t ~ U{1..T}, eps ~ N(0, I)              (counter RNG, streams + step)
 *   x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
 *   out = eps_theta(x_t, net_time(t))       (objective.h: the network's t - 1)
 *   loss = mean_b w_b mean_d (out - target)^2,  target = eps | x0 | v
 *   grads = d loss / d params;  clip the global norm;  Adam(W);  EMA
 *
 * The network's forward and backward run a batch of 16 or more as two halves
 * side by side (nets/unet_lanes.h): grads is then half 0's + half 1's.
 *
 * Legend: B batch, D = C*H*W values per image, P parameters, T timesteps.
 */
#ifndef DDPM_TRAIN_H
#define DDPM_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include "core/optim.h"
#include "nets/unet.h"
#include "diffusion/objective.h"   /* enum ddpm_objective */

typedef struct {
    int objective;          /* enum ddpm_objective: OBJ_EPS, OBJ_X0, OBJ_V          */
    double min_snr_gamma;   /* > 0: loss weight min(SNR, gamma)/SNR (eps), min(SNR, gamma)
                               (x0), min(SNR, gamma)/(SNR + 1) (v); <= 0: unweighted    */
    double grad_clip;       /* > 0: clip the global gradient norm to this              */
    AdamConfig adam;        /* lr is the step's learning rate (warm-up applied)        */
    float ema_decay;        /* < 0: no EMA; else the target decay (ramped as diffusers) */
    long ema_updates;       /* EMA updates done before this step                       */
    long step;              /* 1-based optimizer step number (Adam bias correction)    */
    uint64_t seed;          /* RNG seed; t and eps are drawn at index `step`           */
    int given_t, given_eps; /* 1: read t / eps from the buffers instead of drawing    */
    double p_uncond;        /* conditional models: the chance a label becomes null_label */
    int64_t null_label;     /* the reserved "no class" label (K - 1)                   */
    int given_drop;         /* 1: labels are used as given (no dropout draw)           */
} TrainConfig;

/* The draws of training step `step` (1-based) under seed: t (B,) uniform in
 * 1..T from stream DDPM_STREAM_TRAIN_T + step, and eps (n values) standard
 * normal from DDPM_STREAM_TRAIN_EPS + step (value i = normal number i).
 * train_step uses exactly these; Python's Diffusion.loss draws with them too. */
void train_draw_timesteps(int64_t* t, int B, int T, uint64_t seed, long step);
void train_draw_noise(float* eps, size_t n, uint64_t seed, long step);
/* Label dropout of step `step`: out[b] = null_label when uint32 word b of
 * stream DDPM_STREAM_TRAIN_DROP + step is below p 2^32, else labels[b]. */
void train_drop_labels(int64_t* out, const int64_t* labels, int B, double p, int64_t null_label,
                       uint64_t seed, long step);

/* Buffers (all owned by the caller; scratch ones are overwritten):
 *   params, grads, m, v, ema (P,)  grads are zeroed then filled; ema may be NULL
 *   x0 (B, D) in;  xt, eps, out, dout (B, D) scratch/out (eps in when given_eps)
 *   t (B,) int64 out (in when given_t);  sample_loss (B,) out: unweighted mse per image
 *   labels (B,) in: class labels (NULL: an unconditional network); used (B,) out: the
 *   labels after dropout (what the network saw; unused when labels is NULL)
 *   sqrt_ab, sqrt_1mab (T+1,) float64 schedule tables
 * Outputs *loss (weighted mean) and *grad_norm (before clipping).  On a NaN/Inf
 * loss or gradient returns DDPM_ERR_NONFINITE WITHOUT touching params, m, v, ema. */
int train_step(UNet* net, float* params, float* grads, float* m, float* v, float* ema,
               const float* x0, float* xt, float* eps, float* out, float* dout, int64_t* t,
               const int64_t* labels, int64_t* used, float* sample_loss, const double* sqrt_ab, const double* sqrt_1mab, int T,
               int B, size_t D, const TrainConfig* cfg, double* loss, double* grad_norm);

#endif /* DDPM_TRAIN_H */
