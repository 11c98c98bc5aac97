/*
 * nll.h - the variational bound on the negative log-likelihood of a DDPM
 * (Ho et al. 2020, eq. 5), in nats per image, the loop over timesteps in C
 * with the denoiser called once per timestep on the whole batch (the U-Net in
 * the binding, the exact Gaussian denoiser of sample.h for tests).
 *
 * Legend: N images, D values per image (C*H*W), K timesteps evaluated per
 * image (columns), T steps of the schedule.  Lesson time t = 1..T; the
 * denoiser is handed the network's time net_time(t) (objective.h).
 *
 *   -log p(x_0) <= L_T + sum_{t=2}^T L_{t-1} + L_0, per image:
 *
 *   L_T     = KL(q(x_T | x_0) || N(0, I))
 *           = sum_i 0.5 (-alpha_bar_T - log(1 - alpha_bar_T) + alpha_bar_T x_0i^2)
 *   L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),  x_t = sqrt(alpha_bar_t) x_0
 *             + sqrt(1 - alpha_bar_t) eps, both Gaussian:
 *             q: mean coef1_t x_0 + coef2_t x_t, log variance lv_q = log posterior_variance_t
 *             p: mean coef1_t x0_hat + coef2_t x_t, log variance lv_p
 *           = sum_i 0.5 (-1 + lv_p - lv_q + exp(lv_q - lv_p) + exp(-lv_p) d_i^2),
 *             d_i = coef1_t (x_0i - x0_hat_i)  (the x_t parts cancel exactly)
 *   L_0     = -log p(x_0 | x_1) = -sum_i log of the mass that N(mean_i, exp(lv_p)),
 *             mean = coef1_1 x0_hat + coef2_1 x_1 (= x0_hat), gives to x_0i's bin:
 *             [x - 1/255, x + 1/255], the edge bins (x = -1, x = 1) extended to
 *             -inf / +inf; each log clamped at log(1e-12) as improved-diffusion does.
 *
 * x0_hat comes from the model output by the objective (eps, x0 or v, as
 * sample.h), clipped to [-1, 1] only when clip_x0.  The model variance lv_p:
 *   NLL_FIXED_SMALL: log posterior_variance_t (= lv_q, so L_{t-1} is the
 *                    weighted squared error alone) and, at t = 1 where the
 *                    posterior variance is 0, log posterior_variance_2;
 *   NLL_FIXED_LARGE: log beta_t and, at t = 1, log posterior_variance_2
 *   (Ho et al.'s and improved-diffusion's posterior_log_variance_clipped and
 *   "fixedlarge" tables: both variances give the same decoder).
 *
 * Noise: eps of image n at time t is normal number (first_image + n) * D + i
 * of stream DDPM_STREAM_NLL_EPS + t under seed: a pure function of (seed,
 * global image index, t): x_t does not depend on the thread count, the batch
 * split, or which other timesteps are evaluated (the bits of the result then
 * depend only on the denoiser's, which for the U-Net vary with the batch size
 * but not with the thread count).  x_t is rounded to
 * float32 exactly as q_sample rounds it (float32 coefficients), which is what
 * the network sees; the bound's arithmetic is float64.
 *
 * Nothing is written to terms/prior unless the whole call succeeds.
 */
#ifndef DDPM_NLL_H
#define DDPM_NLL_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/sample.h"   /* sample_denoise_fn, sample_stop_fn */

enum nll_variance { NLL_FIXED_SMALL = 0, NLL_FIXED_LARGE = 1, NLL_VARIANCE_COUNT = 2 };
#define NLL_VARIANCE_NAMES {"fixed_small", "fixed_large"}

typedef struct {
    int objective;              /* enum ddpm_objective (objective.h) */
    int variance;               /* enum nll_variance */
    int clip_x0;                /* clamp x0_hat to [-1, 1] (off for the bound) */
    int T;
    const double* betas;        /* (T+1,) betas[0] ignored; checked as schedule_fill_tables does */
    int K;                      /* columns */
    const int64_t* ts;          /* (N, K) lesson time of column k of image n, 1..T */
    uint64_t seed;
    uint64_t first_image;       /* global index of image 0 (the noise offset) */
    const float* noise;         /* (K, N, D) eps of column k, or NULL: drawn from seed */
    const int64_t* labels;      /* (N,) class labels for a conditional model, or NULL */
} NllSpec;

/* terms (N, K) = the term at time ts[n, k] in nats (t = 1: L_0 = -log p(x_0 | x_1);
 * t >= 2: L_{t-1}); prior (N,) = L_T in nats.  x0 (N, D) on [-1, 1] (the binding
 * checks the 256-level grid).  Returns DDPM_OK, DDPM_ERR_VALUE (bad spec or betas),
 * DDPM_ERR_TIMESTEP, DDPM_ERR_NONFINITE (with *what naming the input),
 * DDPM_ERR_NOMEM, DDPM_ERR_INTERRUPTED (stop(ctx, k, K) is called before
 * column k and once after the last, k = K), or the denoiser's status. */
int nll_run(double* terms, double* prior, const float* x0, const NllSpec* spec, int N, size_t D,
            sample_denoise_fn denoise, void* denoise_ctx,
            sample_stop_fn stop, void* stop_ctx, const char** what);

/* ts (N, K): for each image K distinct times drawn uniformly from 2..T (a
 * uniformly random K-subset, partial Fisher-Yates), sorted ascending; image
 * n's draws are uint32 words (first_image + n) * 2K .. + 2K - 1 of stream
 * DDPM_STREAM_NLL_T.  1 <= K <= T - 1.  DDPM_ERR_VALUE, DDPM_ERR_NOMEM. */
int nll_draw_timesteps(int64_t* ts, int N, int K, int T, uint64_t seed, uint64_t first_image);

#endif /* DDPM_NLL_H */
