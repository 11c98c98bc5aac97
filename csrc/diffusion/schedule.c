/*
 * schedule.c - beta schedules and their derived tables, in float64.
 *
 * float64 because alpha_bar is a product of up to thousands of factors and the
 * lessons quote it to 5 significant digits at t = 1000 (4.036e-5).
 */
#include "diffusion/schedule.h"
#include "core/common.h"
#include <math.h>

#define PI 3.14159265358979323846

void schedule_tables_point(ScheduleTables* tab, double* block, int T) {
    size_t n = (size_t)T + 1;
    double** fields[SCHEDULE_NUM_TABLES] = {
        &tab->betas, &tab->alphas, &tab->alpha_bars, &tab->sqrt_alpha_bars,
        &tab->sqrt_one_minus_alpha_bars, &tab->snr, &tab->snr_db,
        &tab->posterior_variance, &tab->posterior_log_variance_clipped,
        &tab->posterior_mean_coef1, &tab->posterior_mean_coef2,
        &tab->sqrt_recip_alphas, &tab->eps_coef};
    for (int i = 0; i < SCHEDULE_NUM_TABLES; i++) *fields[i] = block + (size_t)i * n;
}

/* x_i = a + (b - a) i / (T - 1), i = 0..T-1, as numpy/torch linspace. */
static double lin(double a, double b, int i, int T) {
    if (T == 1) return a;
    return a + (b - a) * ((double)i / (double)(T - 1));
}

int schedule_linear(double* betas, int T, double beta_start, double beta_end) {
    if (T < 1) return DDPM_ERR_VALUE;
    betas[0] = 0.0;
    for (int i = 0; i < T; i++) betas[i + 1] = lin(beta_start, beta_end, i, T);
    return DDPM_OK;
}

/* Stable Diffusion's schedule: linear in sqrt(beta). */
int schedule_scaled_linear(double* betas, int T, double beta_start, double beta_end) {
    if (T < 1 || beta_start < 0 || beta_end < 0) return DDPM_ERR_VALUE;
    betas[0] = 0.0;
    double a = sqrt(beta_start), b = sqrt(beta_end);
    for (int i = 0; i < T; i++) { double r = lin(a, b, i, T); betas[i + 1] = r * r; }
    return DDPM_OK;
}

/* GeoDiff's schedule as diffusers has it: sigmoid(linspace(-6, 6)) rescaled. */
int schedule_sigmoid(double* betas, int T, double beta_start, double beta_end) {
    if (T < 1) return DDPM_ERR_VALUE;
    betas[0] = 0.0;
    for (int i = 0; i < T; i++) {
        double x = lin(-6.0, 6.0, i, T);
        betas[i + 1] = beta_start + (beta_end - beta_start) / (1.0 + exp(-x));
    }
    return DDPM_OK;
}

static double cosine_f(double u, double s) {
    double c = cos((u + s) / (1.0 + s) * PI / 2.0);
    return c * c;
}

int schedule_cosine(double* betas, int T, double s, double max_beta) {
    if (T < 1 || !(s >= 0) || !(max_beta > 0) || max_beta > 1) return DDPM_ERR_VALUE;
    betas[0] = 0.0;
    for (int t = 1; t <= T; t++) {
        double b = 1.0 - cosine_f((double)t / T, s) / cosine_f((double)(t - 1) / T, s);
        betas[t] = b < max_beta ? b : max_beta;
    }
    return DDPM_OK;
}

int schedule_rescale_zero_terminal_snr(double* betas, int T) {
    if (T < 2) return DDPM_ERR_VALUE;
    /* sqrt(alpha_bar) for t = 1..T */
    double ab = 1.0, first = 0.0, last = 0.0;
    for (int t = 1; t <= T; t++) {
        ab *= 1.0 - betas[t];
        if (t == 1) first = sqrt(ab);
        if (t == T) last = sqrt(ab);
    }
    if (!(first > last)) return DDPM_ERR_VALUE;
    double scale = first / (first - last);
    /* new sqrt(alpha_bar_t) = (old - last) * scale; alpha_t = ratio of squares */
    double prev = 1.0;   /* new alpha_bar_{t-1}, with alpha_bar_0 = 1 */
    ab = 1.0;
    for (int t = 1; t <= T; t++) {
        ab *= 1.0 - betas[t];
        double sq = (sqrt(ab) - last) * scale;
        double cur = sq * sq;
        double alpha = (t == 1) ? cur : cur / prev;
        betas[t] = 1.0 - alpha;
        prev = cur;
    }
    betas[T] = 1.0;  /* exactly zero terminal SNR, not 1 - (tiny roundoff) */
    return DDPM_OK;
}

int schedule_fill_tables(ScheduleTables* tab, int T) {
    if (T < 1) return DDPM_ERR_VALUE;
    double* b = tab->betas;
    b[0] = 0.0;
    for (int t = 1; t <= T; t++) {
        if (!isfinite(b[t])) return DDPM_ERR_NONFINITE;
        if (!(b[t] > 0.0) || b[t] > 1.0) return DDPM_ERR_VALUE;
        if (b[t] == 1.0 && t != T) return DDPM_ERR_VALUE;  /* would erase all signal early */
    }
    tab->alphas[0] = 1.0;
    tab->alpha_bars[0] = 1.0;
    for (int t = 1; t <= T; t++) {
        tab->alphas[t] = 1.0 - b[t];
        tab->alpha_bars[t] = tab->alpha_bars[t - 1] * tab->alphas[t];
    }
    for (int t = 0; t <= T; t++) {
        double ab = tab->alpha_bars[t];
        tab->sqrt_alpha_bars[t] = sqrt(ab);
        tab->sqrt_one_minus_alpha_bars[t] = sqrt(1.0 - ab);
        tab->snr[t] = (t == 0) ? INFINITY : ab / (1.0 - ab);
        tab->snr_db[t] = (t == 0) ? INFINITY : 10.0 * log10(tab->snr[t]);
        if (t == 0) {
            tab->posterior_variance[t] = 0.0;
            tab->posterior_mean_coef1[t] = 0.0;
            tab->posterior_mean_coef2[t] = 0.0;
            tab->sqrt_recip_alphas[t] = 0.0;
            tab->eps_coef[t] = 0.0;
            continue;
        }
        double abp = tab->alpha_bars[t - 1];
        double one_m = 1.0 - ab;
        tab->posterior_variance[t] = b[t] * (1.0 - abp) / one_m;
        tab->posterior_mean_coef1[t] = b[t] * sqrt(abp) / one_m;
        tab->posterior_mean_coef2[t] = sqrt(tab->alphas[t]) * (1.0 - abp) / one_m;
        tab->sqrt_recip_alphas[t] = (tab->alphas[t] > 0) ? 1.0 / sqrt(tab->alphas[t]) : INFINITY;
        tab->eps_coef[t] = b[t] / sqrt(one_m);
    }
    /* log of the posterior variance, clipped as in Ho et al.'s code: at t = 1
     * the variance is 0, so t = 1 borrows t = 2's value (T = 1: beta_1). */
    for (int t = 1; t <= T; t++) {
        double v = tab->posterior_variance[t];
        if (t == 1) v = (T >= 2) ? tab->posterior_variance[2] : b[1];
        tab->posterior_log_variance_clipped[t] = log(v);
    }
    tab->posterior_log_variance_clipped[0] = tab->posterior_log_variance_clipped[1];
    return DDPM_OK;
}
