/*
 * sample.h - the reverse process (lesson 6-2-4): DDPM ancestral sampling, DDIM
 * and DPM-Solver++(2M), the whole loop over timesteps in C, the denoiser
 * called through a function pointer (the U-Net in the binding, an exact
 * Gaussian denoiser for tests).
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

enum sample_kind { SAMPLER_DDPM = 0, SAMPLER_DDIM = 1, SAMPLER_DPMPP_2M = 2 };
enum sample_variance { SAMPLE_FIXED_SMALL = 0, SAMPLE_FIXED_LARGE = 1, SAMPLE_VAR_ZERO = 2 };

/* out (N, D) = the network output for x (N, D) at network time t (N,) (net_time). */
typedef int (*sample_denoise_fn)(void* ctx, float* out, const float* x, const float* t, int N);
/* Called with no lock held before step `step` (0..nsteps-1) and once after the
 * last (step = nsteps); nonzero stops the loop with DDPM_ERR_INTERRUPTED. */
typedef int (*sample_stop_fn)(void* ctx, int step, int nsteps);

typedef struct {
    int sampler;                /* enum sample_kind */
    int objective;              /* enum ddpm_objective (objective.h): what the model outputs */
    int variance;               /* enum sample_variance (DDPM only) */
    int K;                      /* number of steps */
    const int64_t* ts;          /* (K,) lesson time of each model call, 1..T */
    const int64_t* prevs;       /* (K,) lesson time each step moves to, 0 <= prevs[k] < ts[k] */
    const double* alpha_bars;   /* (T+1,) alpha_bars[0] = 1 */
    int T;
    double eta;                 /* DDIM: 0 deterministic .. 1 */
    int clip_x0;                /* clamp x0_hat to [-1, 1] */
    double thresh_ratio;        /* dynamic thresholding: quantile of |x0_hat| per image, 0 = off */
    double thresh_max;          /* s = clamp(quantile, 1, thresh_max) (INFINITY: no cap) */
    uint64_t seed;
    const float* x_T;           /* (N, D) start, or NULL: drawn from seed */
    const float* noise;         /* (K, N, D) per-step z (noise[k] used by step k), or NULL */
    int M;                      /* captured frames */
    const int64_t* capture;     /* (M,) step indices 0..K, strictly increasing; K = the end */
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
 * outputs what a model of the given objective would (v = a eps - b x_0). */
typedef struct {
    const double* alpha_bars;   /* (T+1,) */
    int T;
    int objective;
    size_t D;
    double mean, std;
} GaussianDenoiser;
int sample_gaussian_denoise(void* ctx, float* out, const float* x, const float* t, int N);

#endif /* DDPM_SAMPLE_H */
