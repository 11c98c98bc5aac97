/*
 * sample.h - the reverse process (lesson 6-2-4): DDPM ancestral sampling, DDIM,
 * DPM-Solver++(2M) and RePaint inpainting, the whole loop over timesteps in C,
 * the denoiser called through a function pointer (the U-Net in the binding,
 * an exact Gaussian denoiser for tests), with classifier-free guidance
 * (guidance.h) and an img2img start (SDEdit) for any of them.
 *
 * Legend: N images, D values per image (C*H*W), K steps, M captured frames,
 * T steps of the schedule.  Time is the lessons' 1-based t; the denoiser is
 * handed the network's time net_time(t) (objective.h), and the model output
 * becomes (eps_hat, x0_hat) by objective_predict (objective.h).
 *
 * Every step k (0..K-1) evaluates the model once at x_{ts[k]} and moves to
 * x_{prevs[k]} (prevs[k] = 0 is the clean image x_0, alpha_bar_0 = 1):
 *
 *   model output -> (eps_hat, x0_hat) by the objective (eps, x0 or v);
 *   x0_hat clipped to [-1, 1] or dynamically thresholded (optional);
 *   DDPM:  x_p = c1 x0_hat + c2 x_t + sigma z,  the posterior q(x_p | x_t, x0_hat)
 *          of the (possibly skipping) chain, alpha = alpha_bar_t / alpha_bar_p,
 *          c1 = sqrt(alpha_bar_p) (1 - alpha) / (1 - alpha_bar_t),
 *          c2 = sqrt(alpha) (1 - alpha_bar_p) / (1 - alpha_bar_t),
 *          sigma^2 = (1 - alpha_bar_p)/(1 - alpha_bar_t) (1 - alpha) ("fixed_small",
 *          the posterior variance), 1 - alpha ("fixed_large", beta) or 0.
 *          Unclipped and with p = t - 1 this is the lesson's
 *          1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z.
 *   DDIM:  x_p = sqrt(alpha_bar_p) x0_hat + sqrt(1 - alpha_bar_p - s^2) eps_hat + s z,
 *          s = eta sqrt((1 - alpha_bar_p)/(1 - alpha_bar_t) (1 - alpha_bar_t/alpha_bar_p)).
 *   DPM-Solver++(2M): data prediction, lambda = log(sqrt(alpha_bar)/sqrt(1 - alpha_bar)),
 *          h = lambda_p - lambda_t; first order on the first step,
 *          x_p = sigma_p/sigma_t x_t - sqrt(alpha_bar_p) expm1(-h) x0_hat,
 *          then the multistep midpoint correction with the previous x0_hat;
 *          the step to p = 0 returns x0_hat (sigma = 0).
 *   No noise is ever added on a step to p = 0.
 *
 * img2img (SDEdit, Meng et al. 2022): with `init` set, the run starts from
 * x_{ts[0]} = sqrt(alpha_bar) init + sqrt(1 - alpha_bar) z (float32, as
 * diffusers' add_noise), z = x_T or the seed's draw, instead of x_T itself.
 *
 * RePaint (Lugmayr et al. 2022, as diffusers' RePaintScheduler): the known
 * region (mask 1) of `known` is kept, the rest (mask 0) generated.  Entry k
 * with prevs[k] < ts[k] is a model step: x0_hat, eps_hat at x_t, then with
 * z the step's noise and s = eta sqrt(posterior variance of the jump),
 *   unknown = sqrt(alpha_bar_p) x0_hat + sqrt(1 - alpha_bar_p - s^2) eps_hat + s z,
 *   known   = sqrt(alpha_bar_p) known_image + sqrt(1 - alpha_bar_p) z,
 *   x_p     = mask known + (1 - mask) unknown;
 * entry k with prevs[k] > ts[k] is a jump back up (diffusers' undo_step):
 * prevs[k] - ts[k] single forward steps x = sqrt(1 - beta) x + sqrt(beta) z_i
 * with beta = betas[ts[k] + i] (diffusers' indexing, i = 0, 1, ...), z_i
 * normal numbers i*N*D.. of stream DDPM_STREAM_REPAINT_UNDO + k.
 *
 * Noise: x_T and the per-step z come from the caller's arrays or from the
 * counter RNG (seed, DDPM_STREAM_SAMPLE_INIT / DDPM_STREAM_SAMPLE_STEP + k),
 * element i of a step's draw being normal number i of its stream: the same
 * seed gives the same bits at any thread count.
 *
 * Memory: a workspace of a few (N, D) buffers allocated once per call; nothing
 * grows with K or T (captured frames live in the caller's (M, N, D) arrays).
 */
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/guidance.h"   /* sample_denoise_fn, Guidance */

enum sample_kind { SAMPLER_DDPM = 0, SAMPLER_DDIM = 1, SAMPLER_DPMPP_2M = 2, SAMPLER_REPAINT = 3,
                   SAMPLER_COUNT = 4 };
#define SAMPLER_NAMES {"ddpm", "ddim", "dpm++", "repaint"}
enum sample_variance { SAMPLE_FIXED_SMALL = 0, SAMPLE_FIXED_LARGE = 1, SAMPLE_VAR_ZERO = 2,
                       SAMPLE_VARIANCE_COUNT = 3 };
#define SAMPLE_VARIANCE_NAMES {"fixed_small", "fixed_large", "zero"}

/* Called with no lock held before step `step` (0..nsteps-1) and once after the
 * last (step = nsteps); nonzero stops the loop with DDPM_ERR_INTERRUPTED. */
typedef int (*sample_stop_fn)(void* ctx, int step, int nsteps);

typedef struct {
    int sampler;                /* enum sample_kind */
    int objective;              /* enum ddpm_objective (objective.h): what the model outputs */
    int variance;               /* enum sample_variance (DDPM only) */
    int K;                      /* number of entries (steps, and RePaint's jumps) */
    const int64_t* ts;          /* (K,) lesson time of each model call, 1..T */
    const int64_t* prevs;       /* (K,) lesson time each entry moves to (0 = x_0) */
    const double* alpha_bars;   /* (T+1,) alpha_bars[0] = 1 */
    const double* betas;        /* (T+1,) RePaint's jumps back up only, else NULL */
    int T;
    double eta;                 /* DDIM and RePaint: 0 deterministic .. 1 */
    int clip_x0;                /* clamp x0_hat to [-1, 1] */
    double thresh_ratio;        /* dynamic thresholding: quantile of |x0_hat| per image, 0 = off */
    double thresh_max;          /* s = clamp(quantile, 1, thresh_max) (INFINITY: no cap) */
    Guidance guide;             /* labels and classifier-free guidance (guidance.h) */
    uint64_t seed;
    const float* x_T;           /* (N, D) start (or img2img's z), or NULL: drawn from seed */
    const float* init;          /* (N, D) img2img: noise this image to ts[0], or NULL */
    const float* known;         /* (N, D) RePaint: the original image */
    const float* mask;          /* (N, D) RePaint: 1 keep known, 0 generate (soft in between) */
    const float* noise;         /* (K, N, D) per-step z (noise[k] used by step k), or NULL */
    const float* undo_noise;    /* (U, N, D) RePaint: z of each jump-back sub-step in order, or
                                   NULL (U = sum over jump entries of prevs[k] - ts[k]) */
    int M;                      /* captured frames */
    const int64_t* capture;     /* (M,) entry indices 0..K, strictly increasing; K = the end;
                                   RePaint captures model steps only */
    float* cap_x;               /* (M, N, D) x at ts[capture[m]] (x_0 for K), or NULL */
    float* cap_eps;             /* (M, N, D) eps_hat there (0 at the end) */
    float* cap_x0;              /* (M, N, D) x0_hat as used (clipped/thresholded; x_0 at the end) */
} SampleSpec;

/* Runs the sampler: out (N, D) = x_0.  Returns DDPM_OK, DDPM_ERR_VALUE (bad
 * spec), DDPM_ERR_NONFINITE (with *what naming x_T, noise, the model output or
 * the state), DDPM_ERR_NOMEM, DDPM_ERR_INTERRUPTED, or the denoiser's status. */
int sample_run(float* out, const SampleSpec* spec, int N, size_t D,
               sample_denoise_fn denoise, void* denoise_ctx,
               sample_stop_fn stop, void* stop_ctx, const char** what);

/* An exact denoiser for data x_0 ~ N(mean, std^2 I) (a test hook): with
 * x_t = a x_0 + b eps, E[eps | x_t] = b (x_t - a mean) / (a^2 std^2 + b^2) and
 * E[x_0 | x_t] = mean + a std^2 (x_t - a mean) / (a^2 std^2 + b^2); it
 * outputs what a model of the given objective would (v = a eps - b x_0).
 * Labels are ignored. */
typedef struct {
    const double* alpha_bars;   /* (T+1,) */
    int T;
    int objective;
    size_t D;
    double mean, std;
} GaussianDenoiser;
int sample_gaussian_denoise(void* ctx, float* out, const float* x, const float* t,
                            const int64_t* labels, int N);

#endif /* DDPM_SAMPLE_H */
