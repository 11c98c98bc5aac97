/*
 * schedule.h - noise schedules and the tables derived from them (float64).
 *
 * Notation of the lessons, 1-based t: index 0 is the clean state, so every
 * table has T + 1 entries and betas[0] = 0, alpha_bars[0] = 1.
 *
 *   beta_t                      noise variance added at step t
 *   alpha_t      = 1 - beta_t
 *   alpha_bar_t  = prod_{s<=t} alpha_s     signal variance kept after t steps
 *   snr_t        = alpha_bar_t / (1 - alpha_bar_t)
 *   posterior_variance_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
 *   posterior mean = coef1_t x_0 + coef2_t x_t, with
 *      coef1_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
 *      coef2_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
 */
#ifndef DDPM_SCHEDULE_H
#define DDPM_SCHEDULE_H

/* The derived tables, each a pointer into one (SCHEDULE_NUM_TABLES, T+1)
 * float64 block owned by the caller (a NumPy array). */
typedef struct {
    double* betas;                      // (T+1,)
    double* alphas;                     // (T+1,)
    double* alpha_bars;                 // (T+1,)
    double* sqrt_alpha_bars;            // (T+1,)
    double* sqrt_one_minus_alpha_bars;  // (T+1,)
    double* snr;                        // (T+1,)  inf at t = 0
    double* snr_db;                     // (T+1,)  10 log10 snr
    double* posterior_variance;         // (T+1,)  0 at t = 0 and t = 1
    double* posterior_log_variance_clipped; // (T+1,) log var, t=1 uses t=2's value
    double* posterior_mean_coef1;       // (T+1,)  0 at t = 0
    double* posterior_mean_coef2;       // (T+1,)  0 at t = 0
    double* sqrt_recip_alphas;          // (T+1,)  1/sqrt(alpha_t), 0 at t = 0
    double* eps_coef;                   // (T+1,)  beta_t / sqrt(1 - alpha_bar_t), 0 at t = 0
} ScheduleTables;
#define SCHEDULE_NUM_TABLES 13

/* Points the struct's fields into block, which holds NUM_TABLES * (T+1) doubles. */
void schedule_tables_point(ScheduleTables* tab, double* block, int T);

/* Beta generators: betas has T+1 entries, betas[0] is set to 0. */
int schedule_linear(double* betas, int T, double beta_start, double beta_end);
int schedule_scaled_linear(double* betas, int T, double beta_start, double beta_end);
int schedule_sigmoid(double* betas, int T, double beta_start, double beta_end);
/* Nichol & Dhariwal: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
 * beta_t = min(1 - alpha_bar(t)/alpha_bar(t-1), max_beta). */
int schedule_cosine(double* betas, int T, double s, double max_beta);

/* Lin et al. 2023: shift and scale sqrt(alpha_bar) so alpha_bar_T = 0 while
 * alpha_bar_1 is unchanged; rewrites betas in place (beta_T becomes 1). */
int schedule_rescale_zero_terminal_snr(double* betas, int T);

/* Checks betas (finite, 0 < beta_t <= 1 for t >= 1; beta_t = 1 only at t = T)
 * and fills every table from tab->betas.  DDPM_ERR_VALUE / _NONFINITE on bad betas. */
int schedule_fill_tables(ScheduleTables* tab, int T);

#endif /* DDPM_SCHEDULE_H */
