/*
 * nll.c - the variational bound on -log p(x_0) (see nll.h for the math).
 *
 * Legend: N images, D values per image, K columns (timesteps per image),
 * T steps of the schedule.
 *
 * One column = draw eps, form x_t (float32, as q_sample), one denoiser call on
 * the whole batch, then one pass per image that reduces its D values into a
 * float64 sum in index order.  Images are split across threads (disjoint
 * writes, no reduction across images), so the result never depends on the
 * thread count.  Scratch is one allocation per call; nothing grows with T
 * except the (N, K) table of terms the caller asked for.
 */
#include "diffusion/nll.h"
#include "diffusion/objective.h"
#include "core/common.h"
#include "core/alloc.h"
#include "core/threads.h"
#include "core/rng.h"
#include "diffusion/schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN 16384     /* values per thread below which waking threads costs more */
#define LOG_FLOOR 1e-12   /* improved-diffusion's clamp: log(max(p, 1e-12)) */
#define SQRT1_2 0.70710678118654752440   /* 1/sqrt(2) */

/* ------------------------------------------------------------------------ */
/* per-value formulas (float64)                                               */
/* ------------------------------------------------------------------------ */

/* Phi(z) and 1 - Phi(z) without cancellation in either tail. */
static double norm_cdf(double z) { return 0.5 * erfc(-z * SQRT1_2); }
static double norm_sf(double z) { return 0.5 * erfc(z * SQRT1_2); }

/* log P(bin of x) under N(mean, exp(log_scale)^2): the bin is [x - 1/255,
 * x + 1/255], extended to -inf below x = -1 and to +inf above x = 1 (the
 * tests x < -0.999, x > 0.999 of Ho et al.'s code).  The mass of an interior
 * bin is taken from the tail it lies in (a difference of two small erfc's
 * rather than of two numbers near 1). */
static double log_bin_prob(double x, double mean, double inv_std) {
    double c = x - mean;
    double hi = inv_std * (c + 1.0 / 255.0);
    double lo = inv_std * (c - 1.0 / 255.0);
    double p;
    if (x < -0.999) p = norm_cdf(hi);
    else if (x > 0.999) p = norm_sf(lo);
    else if (lo > 0.0) p = norm_sf(lo) - norm_sf(hi);
    else p = norm_cdf(hi) - norm_cdf(lo);
    return log(p > LOG_FLOOR ? p : LOG_FLOOR);
}

/* ------------------------------------------------------------------------ */
/* timestep draws                                                             */
/* ------------------------------------------------------------------------ */

static int cmp_i64(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

int nll_draw_timesteps(int64_t* ts, int N, int K, int T, uint64_t seed, uint64_t first_image) {
    if (N < 1 || T < 2 || K < 1 || K > T - 1) return DDPM_ERR_VALUE;
    const int M = T - 1;                      /* the population 2..T */
    int32_t* pool = malloc(sizeof(int32_t) * (size_t)M);
    uint32_t* words = malloc(sizeof(uint32_t) * 2 * (size_t)K);
    if (!pool || !words) { free(pool); free(words); return DDPM_ERR_NOMEM; }
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < M; i++) pool[i] = i + 2;
        rng_uint32_fill(words, 2 * (size_t)K, seed, DDPM_STREAM_NLL_T,
                        (first_image + (uint64_t)n) * 2 * (uint64_t)K);
        int64_t* row = ts + (size_t)n * K;
        for (int i = 0; i < K; i++) {
            /* j uniform in i..M-1: a 64-bit word mod (M - i), bias < 2^-44 for M <= 2^20 */
            uint64_t r = ((uint64_t)words[2 * i] << 32) | words[2 * i + 1];
            int j = i + (int)(r % (uint64_t)(M - i));
            int32_t tmp = pool[i]; pool[i] = pool[j]; pool[j] = tmp;
            row[i] = pool[i];
        }
        qsort(row, (size_t)K, sizeof(int64_t), cmp_i64);
    }
    free(pool);
    free(words);
    return DDPM_OK;
}

/* ------------------------------------------------------------------------ */
/* the loop                                                                   */
/* ------------------------------------------------------------------------ */

/* The spec's sizes and pointers; codes and timesteps are the binding's to check. */
static int check_spec(const NllSpec* s, int N, size_t D) {
    if (N < 1 || D < 1 || s->T < 1 || s->K < 1 || !s->ts || !s->betas) return DDPM_ERR_VALUE;
    return DDPM_OK;
}

/* x0_hat from the model output m at x_t = xi (a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t)),
 * by the objective (float64), clipped to [-1, 1] when the spec says so. */
static inline double x0_hat(const NllSpec* s, double m, double xi, double a, double b) {
    double z = objective_x0_f64(s->objective, m, xi, a, b);
    if (s->clip_x0) z = z < -1.0 ? -1.0 : (z > 1.0 ? 1.0 : z);
    return z;
}

/* One column's term for image n at lesson time t: x (D) the clean image,
 * xt (D) the float32 x_t the model saw, mo (D) the model output.  Sets *bad
 * when x0_hat is not finite. */

static double column_term(const float* x, const float* xt, const float* mo, size_t D, int t,
                          const ScheduleTables* tab, const NllSpec* s, int* bad) {
    const double a = tab->sqrt_alpha_bars[t], b = tab->sqrt_one_minus_alpha_bars[t];
    const double c1 = tab->posterior_mean_coef1[t], c2 = tab->posterior_mean_coef2[t];
    /* the model's log variance (nll.h): t = 1 borrows posterior_variance_2 for both */
    const double lvp = (t == 1 || s->variance == NLL_FIXED_SMALL)
                           ? tab->posterior_log_variance_clipped[t] : log(tab->betas[t]);
    double acc = 0.0;
    uint32_t nf = 0;
    if (t == 1) {
        const double inv_std = exp(-0.5 * lvp);
        for (size_t i = 0; i < D; i++) {
            double xi = xt[i], z = x0_hat(s, mo[i], xi, a, b);
            nf |= !isfinite(z);
            double mean = c1 * z + c2 * xi;
            acc -= log_bin_prob((double)x[i], mean, inv_std);
        }
    } else {
        const double lvq = tab->posterior_log_variance_clipped[t];   /* log posterior_variance_t */
        double sq = 0.0;
        for (size_t i = 0; i < D; i++) {
            double xi = xt[i], z = x0_hat(s, mo[i], xi, a, b);
            nf |= !isfinite(z);
            double d = c1 * ((double)x[i] - z);
            sq += d * d;
        }
        /* 0.5 (-1 + lvp - lvq + exp(lvq - lvp)) per value: 0 for fixed_small */
        double per = s->variance == NLL_FIXED_SMALL
                         ? 0.0 : 0.5 * (-1.0 + (lvp - lvq) + exp(lvq - lvp));
        acc = per * (double)D + 0.5 * exp(-lvp) * sq;
    }
    if (nf) *bad = 1;
    return acc;
}

int nll_run(double* terms, double* prior, const float* x0, const NllSpec* s, int N, size_t D,
            sample_denoise_fn denoise, void* denoise_ctx,
            sample_stop_fn stop, void* stop_ctx, const char** what) {
    static const char* none = "";
    if (what) *what = none;
    int st = check_spec(s, N, D);
    if (st) return st;
    const int T = s->T, K = s->K;
    const size_t ND = (size_t)N * D;
    {
        uint32_t bad = 0;
        for (size_t i = 0; i < ND; i++) bad |= ddpm_nonfinite_bit(x0[i]);
        if (bad) { if (what) *what = "x0"; return DDPM_ERR_NONFINITE; }
        if (s->noise) {
            for (size_t i = 0; i < (size_t)K * ND; i++) bad |= ddpm_nonfinite_bit(s->noise[i]);
            if (bad) { if (what) *what = "noise"; return DDPM_ERR_NONFINITE; }
        }
    }

    /* workspace: schedule tables, x_t, model output, eps (own noise), t, terms, prior */
    size_t nf32 = 2 * ND + (s->noise ? 0 : ND) + (size_t)N;
    size_t nf64 = (size_t)SCHEDULE_NUM_TABLES * (size_t)(T + 1) + (size_t)N * K + (size_t)N;
    double* ws64 = ddpm_alloc_large(sizeof(double) * nf64);
    float* ws32 = ddpm_alloc_large(sizeof(float) * nf32);
    if (!ws64 || !ws32) { st = DDPM_ERR_NOMEM; goto cleanup; }
    ScheduleTables tab;
    schedule_tables_point(&tab, ws64, T);
    memcpy(tab.betas, s->betas, sizeof(double) * (size_t)(T + 1));
    st = schedule_fill_tables(&tab, T);
    if (st) { if (what) *what = "betas"; goto cleanup; }
    double* wterms = ws64 + (size_t)SCHEDULE_NUM_TABLES * (size_t)(T + 1);  /* (N, K) */
    double* wprior = wterms + (size_t)N * K;                                /* (N,) */
    float* xt = ws32;
    float* mo = xt + ND;
    float* eps = mo + ND;
    float* tvec = s->noise ? eps : eps + ND;

    int nt = ddpm_threads_for(ND, PAR_MIN);
    if (nt > N) nt = N;

    /* the prior L_T: closed form, no model */
    {
        const double abT = tab.alpha_bars[T];
        const double per = 0.5 * (-abT - log1p(-abT));   /* >= 0; 0 when alpha_bar_T = 0 */
DDPM_PARALLEL_FOR(nt)
        for (int n = 0; n < N; n++) {
            const float* x = x0 + (size_t)n * D;
            double sq = 0.0;
            for (size_t i = 0; i < D; i++) sq += (double)x[i] * (double)x[i];
            wprior[n] = per * (double)D + 0.5 * abT * sq;
        }
    }

    for (int k = 0; k < K; k++) {
        if (stop && stop(stop_ctx, k, K)) { st = DDPM_ERR_INTERRUPTED; goto cleanup; }
        /* x_t = a x_0 + b eps in float32, as q_sample */
DDPM_PARALLEL_FOR(nt)
        for (int n = 0; n < N; n++) {
            const int t = (int)s->ts[(size_t)n * K + k];
            const float a = (float)tab.sqrt_alpha_bars[t], b = (float)tab.sqrt_one_minus_alpha_bars[t];
            const float* e;
            if (s->noise) {
                e = s->noise + (size_t)k * ND + (size_t)n * D;
            } else {
                float* en = eps + (size_t)n * D;
                rng_normal_fill(en, D, s->seed, DDPM_STREAM_NLL_EPS + (uint64_t)t,
                                (s->first_image + (uint64_t)n) * (uint64_t)D);
                e = en;
            }
            const float* x = x0 + (size_t)n * D;
            float* o = xt + (size_t)n * D;
            for (size_t i = 0; i < D; i++) o[i] = a * x[i] + b * e[i];
            tvec[n] = net_time(t);
        }
        st = denoise(denoise_ctx, mo, xt, tvec, s->labels, N);
        if (st) { if (what) *what = "the model"; goto cleanup; }
        {
            uint32_t bad = 0;
            for (size_t i = 0; i < ND; i++) bad |= ddpm_nonfinite_bit(mo[i]);
            if (bad) { if (what) *what = "the model output"; st = DDPM_ERR_NONFINITE; goto cleanup; }
        }
        int bad = 0;
DDPM_PARALLEL_FOR_OR(nt, bad)
        for (int n = 0; n < N; n++) {
            const int t = (int)s->ts[(size_t)n * K + k];
            size_t off = (size_t)n * D;
            wterms[(size_t)n * K + k] = column_term(x0 + off, xt + off, mo + off, D, t, &tab, s, &bad);
        }
        if (bad) {
            if (what) *what = "x0_hat (from the model output)";
            st = DDPM_ERR_NONFINITE;
            goto cleanup;
        }
    }
    if (stop && stop(stop_ctx, K, K)) { st = DDPM_ERR_INTERRUPTED; goto cleanup; }
    memcpy(terms, wterms, sizeof(double) * (size_t)N * K);
    memcpy(prior, wprior, sizeof(double) * (size_t)N);
    st = DDPM_OK;
cleanup:
    free(ws64);
    free(ws32);
    return st;
}
