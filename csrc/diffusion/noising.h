/*
 * noising.h - the forward process q(x_t | x_0) and the posterior q(x_{t-1} | x_t, x_0).
 *
 * Dimension legend: N batch (samples), D values per sample (C*H*W, or 1 for
 * scalar toy data).  t is 1-based (1..T), one value per sample.  Schedule
 * tables are the float64 ones of schedule.h, (T+1,), indexed by t: every t
 * must lie in 1..T (the binding checks it; these functions trust it).
 */
#ifndef DDPM_NOISING_H
#define DDPM_NOISING_H

#include <stddef.h>
#include <stdint.h>

/* Closed form, one pass with the RNG fused in:
 *   x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
 * xt:  (N, D) out
 * eps: (N, D) out (drawn from (seed, DDPM_STREAM_Q_SAMPLE), eps[n,d] = normal n*D+d)
 *      or in when noise_given != 0
 * x0:  (N, D) in;  t: (N,) in, 1..T
 * Returns DDPM_ERR_NONFINITE for NaN/Inf in x0 (or in eps when given). */
int q_sample(float* xt, float* eps, const float* x0, const int64_t* t,
             const double* sqrt_alpha_bars, const double* sqrt_one_minus_alpha_bars,
             size_t N, size_t D, uint64_t seed, int noise_given);

/* The step-by-step chain, x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps_s,
 * s = 1..t[n], with eps_s from stream DDPM_STREAM_CHAIN_BASE + s.
 * xt: (N, D) out; x0: (N, D) in; t: (N,) in, 1..T; alphas, betas: (T+1,). */
int q_sample_chain(float* xt, const float* x0, const int64_t* t,
                   const double* alphas, const double* betas,
                   size_t N, size_t D, uint64_t seed);

/* Posterior mean  mu_tilde = coef1_t x_0 + coef2_t x_t.
 * mean: (N, D) out; x0, xt: (N, D) in; t: (N,) in, 1..T. */
int q_posterior_mean(float* mean, const float* x0, const float* xt, const int64_t* t,
                     const double* coef1, const double* coef2,
                     size_t N, size_t D);

#endif /* DDPM_NOISING_H */
