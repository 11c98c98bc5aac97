/*
 * objective.h - what the network is told and what it answers: the one owner
 * of the lessons' time convention and of the eps / x0 / v algebra.  Training
 * (train.c), sampling (sample.c), the likelihood bound (nll.c) and Python's
 * Diffusion.predict_* / target (through the binding) all call these.
 *
 * Time.  The lessons count t = 1..T (t = 0 is x_0 itself); the network, like
 * diffusers' UNet2DModel and schedulers, is told t - 1 (0..T-1).
 * net_timestep(t) is that translation and lesson_time(tau) its inverse.
 *
 * Algebra.  With x_t = a x_0 + b eps, a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t)
 * (so a^2 + b^2 = 1), the model output m means, by objective:
 *
 *   OBJ_EPS  m = eps                 x0 = (x_t - b m) / a          eps = m
 *   OBJ_X0   m = x0                  x0 = m                        eps = (x_t - a m) / b
 *   OBJ_V    m = v = a eps - b x0    x0 = a x_t - b m              eps = a m + b x_t
 *
 * and the training target is eps, x0 or a eps - b x0.  Min-SNR-gamma
 * weighting (Hang et al. 2023), SNR = a^2 / b^2: the eps loss is weighted
 * min(SNR, gamma) / SNR, the x0 loss min(SNR, gamma), the v loss
 * min(SNR, gamma) / (SNR + 1).
 *
 * Precision.  The float32 forms compute in the order diffusers' schedulers
 * do (each product and quotient rounded to float32), which is what lets a
 * sampler loop follow diffusers' to the last bits; the float64 forms serve
 * the likelihood bound and the exact Gaussian denoiser.
 *
 * Legend: N images, D values per image.
 */
#ifndef DDPM_OBJECTIVE_H
#define DDPM_OBJECTIVE_H

#include <stddef.h>
#include <stdint.h>

enum ddpm_objective { OBJ_EPS = 0, OBJ_X0 = 1, OBJ_V = 2, OBJ_COUNT = 3 };
/* the names Python uses, in enum order */
#define OBJECTIVE_NAMES {"eps", "x0", "v"}

/* ---- time ---- */

/* The network's time for lesson time t (1..T): t - 1.  The only place. */
static inline int64_t net_timestep(int64_t t) { return t - 1; }
/* ... as the float the network's time embedding takes. */
static inline float net_time(int64_t t) { return (float)net_timestep(t); }
/* The lesson time of network time tau (inverse of net_timestep). */
static inline double lesson_time(double tau) { return tau + 1.0; }

/* ---- one value ---- */

/* eps_hat and x0_hat from output m at x (float32, diffusers' order). */
static inline void objective_split(int objective, float m, float x, float a, float b,
                                   float* eps, float* x0) {
    if (objective == OBJ_EPS) { *eps = m; *x0 = (x - b * m) / a; }
    else if (objective == OBJ_X0) { *x0 = m; *eps = (x - a * m) / b; }
    else { *x0 = a * x - b * m; *eps = a * m + b * x; }
}

/* x0_hat from output m at x, in float64 (the likelihood bound). */
static inline double objective_x0_f64(int objective, double m, double x, double a, double b) {
    if (objective == OBJ_EPS) return (x - b * m) / a;
    if (objective == OBJ_X0) return m;
    return a * x - b * m;
}

/* What a model of this objective should output for (x0, eps): float32. */
static inline float objective_target(int objective, float x0, float eps, float a, float b) {
    if (objective == OBJ_EPS) return eps;
    if (objective == OBJ_X0) return x0;
    return a * eps - b * x0;
}

/* ... in float64 (the exact Gaussian denoiser). */
static inline double objective_target_f64(int objective, double x0, double eps, double a,
                                          double b) {
    if (objective == OBJ_EPS) return eps;
    if (objective == OBJ_X0) return x0;
    return a * eps - b * x0;
}

/* The min-SNR-gamma loss weight at signal-to-noise ratio snr (gamma > 0). */
double objective_min_snr_weight(int objective, double snr, double gamma);

/* ---- whole batches ---- */

/* eps (N, D), x0 (N, D) from the model output mo (N, D) at x (N, D); image n
 * uses a[n], b[n].  x0 clamped to [-1, 1] when clip.  Either output may alias
 * nothing else; elementwise over ddpm's threads (same bits at any count). */
void objective_predict(float* eps, float* x0, const float* x, const float* mo, int N, size_t D,
                       int objective, const float* a, const float* b, int clip);

/* target (N, D) = what the model should output for x0, eps (N, D); image n
 * uses a[n], b[n]. */
void objective_targets(float* target, const float* x0, const float* eps, int N, size_t D,
                       int objective, const float* a, const float* b);

#endif /* DDPM_OBJECTIVE_H */
