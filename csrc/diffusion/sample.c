/*
 * sample.c - the reverse process, whole loop in C (see sample.h for the math).
 *
 * Legend: N images, D values per image, K steps, M captured frames.
 *
 * One step = one denoiser call on the whole batch, then elementwise passes
 * over the N*D values cut into fixed chunks (disjoint writes, no reductions
 * across chunks), so the result never depends on the thread count.
 *
 * Arithmetic: the state is float32, and DDPM/DDIM steps compute in float32 in
 * the order diffusers' DDPMScheduler/DDIMScheduler use (coefficients from
 * alpha_bar rounded to float32, as their float32 alphas_cumprod), so that a
 * loop fed the same model outputs and noise follows diffusers' rounding
 * closely: a 50-step DDIM loop of an ill-conditioned (random) eps model
 * amplifies one-ulp differences ~10^4-fold, and float64 arithmetic here would
 * not be "more right" there, only different.  DPM-Solver++ computes its
 * (log/exp) coefficients in float64 and each update in float64 per element.
 */
#include "diffusion/sample.h"
#include "diffusion/objective.h"
#include "core/common.h"
#include "core/alloc.h"
#include "core/threads.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 4096   /* values per unit of parallel work */
#define PAR_MIN 65536 /* values per thread below which waking threads costs more than it saves */

/* ------------------------------------------------------------------------ */
/* small helpers                                                              */
/* ------------------------------------------------------------------------ */

/* The k-th smallest of a[0..n-1] (0-based), reordering a so that a[i] <= a[k]
 * for i < k and a[i] >= a[k] for i > k.  Quickselect with median-of-three
 * pivots and a three-way partition (many equal values stay linear). */
static float select_kth(float* a, size_t n, size_t k) {
    size_t lo = 0, hi = n;                       /* search in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi - 1];
        float p = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
        /* Dutch flag: [lo, lt) < p, [lt, i) == p, [gt, hi) > p */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            float v = a[i];
            if (v < p) { a[i] = a[lt]; a[lt] = v; lt++; i++; }
            else if (v > p) { gt--; a[i] = a[gt]; a[gt] = v; }
            else i++;
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return p;
    }
    return a[k];
}

/* The q-quantile of |x[0..D-1]| with linear interpolation between order
 * statistics, in float32 as torch.quantile computes it (rank = q (D - 1),
 * torch.lerp's two-sided formula); scratch holds D floats. */
static float abs_quantile(float* scratch, const float* x, size_t D, double q) {
    for (size_t i = 0; i < D; i++) scratch[i] = fabsf(x[i]);
    float rank = (float)q * (float)(D - 1);
    size_t lo = (size_t)rank;
    if (lo > D - 1) lo = D - 1;
    float w = rank - (float)lo;
    float vlo = select_kth(scratch, D, lo);
    float vhi = vlo;
    if (lo + 1 < D && w > 0.0f) {                /* the next order statistic: min above lo */
        float m = scratch[lo + 1];
        for (size_t i = lo + 2; i < D; i++) m = scratch[i] < m ? scratch[i] : m;
        vhi = m;
    }
    return w < 0.5f ? vlo + w * (vhi - vlo) : vhi - (vhi - vlo) * (1.0f - w);
}

/* ------------------------------------------------------------------------ */
/* the exact Gaussian denoiser (test hook)                                    */
/* ------------------------------------------------------------------------ */

int sample_gaussian_denoise(void* vctx, float* out, const float* x, const float* t,
                            const int64_t* labels, int N) {
    (void)labels;
    const GaussianDenoiser* g = vctx;
    size_t D = g->D;
    for (int n = 0; n < N; n++) {
        double tn = lesson_time((double)t[n]);
        if (!(tn >= 1.0 && tn <= (double)g->T) || tn != floor(tn)) return DDPM_ERR_TIMESTEP;
        double ab = g->alpha_bars[(int)tn];
        double a = sqrt(ab), b = sqrt(1.0 - ab);
        double s2 = g->std * g->std;
        double den = a * a * s2 + b * b;
        const float* xn = x + (size_t)n * D;
        float* on = out + (size_t)n * D;
        for (size_t i = 0; i < D; i++) {
            double r = ((double)xn[i] - a * g->mean) / den;
            double eps = b * r;
            double x0 = g->mean + a * s2 * r;
            on[i] = (float)objective_target_f64(g->objective, x0, eps, a, b);
        }
    }
    return DDPM_OK;
}

/* ------------------------------------------------------------------------ */
/* per-step passes                                                            */
/* ------------------------------------------------------------------------ */

/* Dynamic thresholding (Saharia et al. 2022, as diffusers): per image
 * s = clamp(quantile_q |x0|, 1, smax), x0 = clamp(x0, -s, s) / s. */
static void threshold(float* x0, float* scratch, int N, size_t D, double q, double smax) {
    int nt = ddpm_threads_for((size_t)N * D, PAR_MIN);
    if (nt > N) nt = N;
    DDPM_PARALLEL_FOR(nt)
    for (int n = 0; n < N; n++) {
        float* xn = x0 + (size_t)n * D;
        float s = abs_quantile(scratch + (size_t)n * D, xn, D, q);
        if (!(s >= 1.0f)) s = 1.0f;              /* also catches NaN */
        if ((double)s > smax) s = (float)smax;
        for (size_t i = 0; i < D; i++) {
            float v = xn[i];
            v = v < -s ? -s : (v > s ? s : v);
            xn[i] = v / s;
        }
    }
}

/* x = (ca x + cb p) + cc q  (float32, each product and sum rounded; p, q may be
 * NULL when their coefficient is unused). */
static void combine(float* x, float ca, const float* p, float cb, const float* q, float cc,
                    size_t n) {
    size_t units = (n + CHUNK - 1) / CHUNK;
    int nt = ddpm_threads_for(n, PAR_MIN);
    DDPM_PARALLEL_FOR(nt)
    for (size_t u = 0; u < units; u++) {
        size_t lo = u * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        for (size_t i = lo; i < hi; i++) {
            float v = ca * x[i];
            if (p) v = v + cb * p[i];
            if (q) v = v + cc * q[i];
            x[i] = v;
        }
    }
}

/* DPM-Solver++ update in float64 per element: x = ca x + cb p + cc q. */
static void combine64(float* x, double ca, const float* p, double cb, const float* q, double cc,
                      size_t n) {
    size_t units = (n + CHUNK - 1) / CHUNK;
    int nt = ddpm_threads_for(n, PAR_MIN);
    DDPM_PARALLEL_FOR(nt)
    for (size_t u = 0; u < units; u++) {
        size_t lo = u * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        for (size_t i = lo; i < hi; i++) {
            double v = ca * (double)x[i];
            if (p) v += cb * (double)p[i];
            if (q) v += cc * (double)q[i];
            x[i] = (float)v;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* the loop                                                                   */
/* ------------------------------------------------------------------------ */

/* The spec's sizes and pointers.  Codes, timesteps and the capture list are checked
 * by the binding (they index tables); value ranges (eta, thresholds) by ddpm.sample. */
static int check_spec(const SampleSpec* s, int N, size_t D) {
    if (N < 1 || D < 1 || s->K < 1 || s->T < 1 || !s->ts || !s->prevs || !s->alpha_bars)
        return DDPM_ERR_VALUE;
    if (s->sampler == SAMPLER_REPAINT && (!s->known || !s->mask || !s->betas))
        return DDPM_ERR_VALUE;
    if (s->M > 0 && !s->capture) return DDPM_ERR_VALUE;
    if ((s->guide.t_lo || s->guide.t_hi) &&
        !(1 <= s->guide.t_lo && s->guide.t_lo <= s->guide.t_hi && s->guide.t_hi <= s->T))
        return DDPM_ERR_VALUE;
    return DDPM_OK;
}

/* The loop's scratch, one allocation per call (plus the guidance labels). */
typedef struct {
    float *mo, *eps, *x0;       /* (N, D) model output, eps_hat, x0_hat */
    float *m1;                  /* (N, D) DPM-Solver++: the previous x0_hat, or NULL */
    float *zbuf;                /* (N, D) the step's own noise, or NULL (caller's noise) */
    float *scratch;             /* (N, D) dynamic thresholding, or NULL */
    float *gscratch;            /* guidance's [x; x] and [out_c; out_u], or NULL */
    float *tvec, *avec, *bvec;  /* (2N,) network time, (N,) sqrt(alpha_bar), sqrt(1 - alpha_bar) */
    int64_t* lab;               /* (2N,) labels handed to the denoiser, or NULL */
    float* mem;
} Work;

static int work_alloc(Work* w, const SampleSpec* s, int N, size_t D) {
    const size_t ND = (size_t)N * D;
    const int dpm = s->sampler == SAMPLER_DPMPP_2M, thr = s->thresh_ratio > 0.0;
    const size_t gf = guidance_scratch_floats(&s->guide, N, D);
    const size_t gl = guidance_scratch_labels(&s->guide, N);
    const size_t nbuf = 3 + (size_t)dpm + (s->noise ? 0 : 1) + (size_t)thr;
    memset(w, 0, sizeof *w);
    w->mem = ddpm_alloc_large(sizeof(float) * (nbuf * ND + gf + 4 * (size_t)N));
    w->lab = gl ? malloc(sizeof(int64_t) * gl) : NULL;
    if (!w->mem || (gl && !w->lab)) { free(w->mem); free(w->lab); return DDPM_ERR_NOMEM; }
    float* p = w->mem;
    w->mo = p; p += ND;
    w->eps = p; p += ND;
    w->x0 = p; p += ND;
    if (dpm) { w->m1 = p; p += ND; }
    if (!s->noise) { w->zbuf = p; p += ND; }
    if (thr) { w->scratch = p; p += ND; }
    if (gf) { w->gscratch = p; p += gf; }
    w->tvec = p; p += 2 * (size_t)N;
    w->avec = p; p += N;
    w->bvec = p;
    return DDPM_OK;
}

static void work_free(Work* w) { free(w->mem); free(w->lab); }

/* Frame m of the trajectory: x, eps_hat, x0_hat (eps NULL: zeros, the end). */
static void capture(const SampleSpec* s, int m, size_t ND, const float* x, const float* eps,
                    const float* x0) {
    if (s->cap_x) memcpy(s->cap_x + (size_t)m * ND, x, sizeof(float) * ND);
    if (s->cap_eps) {
        if (eps) memcpy(s->cap_eps + (size_t)m * ND, eps, sizeof(float) * ND);
        else memset(s->cap_eps + (size_t)m * ND, 0, sizeof(float) * ND);
    }
    if (s->cap_x0) memcpy(s->cap_x0 + (size_t)m * ND, x0, sizeof(float) * ND);
}

/* The noise scale of a DDPM / DDIM / RePaint step from alpha_bar apt to app
 * (none on a step to x_0; float32 as diffusers). */
static float step_sigma(const SampleSpec* s, float apt, float app, int pv) {
    const float bpt = 1.0f - apt, bpp = 1.0f - app;
    const float cat = apt / app, cbt = 1.0f - cat;   /* alpha_t, beta_t of the (skipping) step */
    if (s->sampler == SAMPLER_DDPM && pv > 0) {
        if (s->variance == SAMPLE_FIXED_SMALL) {
            float var = (1.0f - app) / (1.0f - apt) * cbt;
            return sqrtf(var > 1e-20f ? var : 1e-20f);
        }
        return s->variance == SAMPLE_FIXED_LARGE ? sqrtf(cbt) : 0.0f;
    }
    if ((s->sampler == SAMPLER_DDIM || s->sampler == SAMPLER_REPAINT) && pv > 0 && s->eta > 0.0) {
        float var = (bpp / bpt) * (1.0f - apt / app);
        return (float)s->eta * sqrtf(var);
    }
    return 0.0f;
}

/* RePaint's model step: x = mask known_p + (1 - mask) unknown_p (see sample.h). */
static void repaint_step(float* x, const float* x0, const float* eps, const float* known,
                         const float* mask, const float* z, float app, float sigma, size_t n) {
    const float sp = sqrtf(app), sq = sqrtf(1.0f - app);
    const float dir2 = 1.0f - app - sigma * sigma;
    const float dir = dir2 > 0.0f ? sqrtf(dir2) : 0.0f;
    const size_t units = (n + CHUNK - 1) / CHUNK;
    int nt = ddpm_threads_for(n, PAR_MIN);
    DDPM_PARALLEL_FOR(nt)
    for (size_t u = 0; u < units; u++) {
        size_t lo = u * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        for (size_t i = lo; i < hi; i++) {
            float unknown = sp * x0[i] + dir * eps[i];
            if (sigma > 0.0f) unknown = unknown + sigma * z[i];
            const float kn = sp * known[i] + sq * z[i];
            x[i] = mask[i] * kn + (1.0f - mask[i]) * unknown;
        }
    }
}

/* RePaint's jump back up from entry k: single forward steps with betas[t + i]. */
static void repaint_undo(float* x, const SampleSpec* s, int k, const float** undo_noise,
                         float* zbuf, size_t ND) {
    const int t = (int)s->ts[k], steps = (int)(s->prevs[k] - s->ts[k]);
    for (int i = 0; i < steps; i++) {
        const float beta = (float)s->betas[t + i];
        const float* z;
        if (*undo_noise) { z = *undo_noise; *undo_noise += ND; }
        else {
            rng_normal_fill_parallel(zbuf, ND, s->seed, DDPM_STREAM_REPAINT_UNDO + (uint64_t)k,
                                     (uint64_t)i * ND);
            z = zbuf;
        }
        combine(x, sqrtf(1.0f - beta), z, sqrtf(beta), NULL, 0.0f, ND);
    }
}

/* One DPM-Solver++(2M) step from t to pv (> 0), float64 coefficients; q is the
 * previous model time (0 on the first step). */
static void dpm_step(float* x, const float* x0, const float* m1, const double* ab, int t, int pv,
                     int q, size_t ND) {
    const double abt = ab[t], abp = ab[pv];
    double sig_t = sqrt(1.0 - abt), sig_p = sqrt(1.0 - abp), alpha_p = sqrt(abp);
    double lam_t = 0.5 * log(abt / (1.0 - abt)), lam_p = 0.5 * log(abp / (1.0 - abp));
    double h = lam_p - lam_t;
    double e = expm1(-h);         /* exp(-h) - 1 */
    if (!q) {
        combine64(x, sig_p / sig_t, x0, -alpha_p * e, NULL, 0.0, ND);
    } else {
        double abq = ab[q];
        double lam_q = 0.5 * log(abq / (1.0 - abq));
        double r0 = (lam_t - lam_q) / h;
        /* D0 = x0, D1 = (x0 - m1) / r0: x = ratio x - alpha_p e D0 - 0.5 alpha_p e D1 */
        double c = -0.5 * alpha_p * e / r0;
        combine64(x, sig_p / sig_t, x0, -alpha_p * e + c, m1, -c, ND);
    }
}

int sample_run(float* out, const SampleSpec* s, int N, size_t D,
               sample_denoise_fn denoise, void* denoise_ctx,
               sample_stop_fn stop, void* stop_ctx, const char** what) {
    static const char* none = "";
    if (what) *what = none;
    int st = check_spec(s, N, D);
    if (st) return st;
    const size_t ND = (size_t)N * D;
    const int K = s->K, repaint = s->sampler == SAMPLER_REPAINT;
    const double* ab = s->alpha_bars;
    const struct { const float* a; size_t n; const char* name; } inputs[] = {
        {s->x_T, ND, "x_T"}, {s->noise, (size_t)K * ND, "noise"}, {s->init, ND, "init"},
        {s->known, ND, "the known image"}, {s->mask, ND, "mask"}};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        if (inputs[i].a && !ddpm_all_finite(inputs[i].a, inputs[i].n)) {
            if (what) *what = inputs[i].name;
            return DDPM_ERR_NONFINITE;
        }
    Work w;
    st = work_alloc(&w, s, N, D);
    if (st) return st;
    const float* undo_noise = s->undo_noise;

    float* x = out;         /* the state lives in the output buffer */
    if (s->x_T) memmove(x, s->x_T, sizeof(float) * ND);
    else rng_normal_fill_parallel(x, ND, s->seed, DDPM_STREAM_SAMPLE_INIT, 0);
    if (s->init) {          /* img2img: x = sqrt(ab) init + sqrt(1 - ab) z, as add_noise */
        const float a0 = (float)ab[s->ts[0]];
        combine(x, sqrtf(1.0f - a0), s->init, sqrtf(a0), NULL, 0.0f, ND);
    }

    int m = 0;              /* next capture frame */
    int q = 0;              /* DPM-Solver++: the previous model time, 0 before the first */
    for (int k = 0; k < K; k++) {
        if (stop && stop(stop_ctx, k, K)) { st = DDPM_ERR_INTERRUPTED; goto cleanup; }
        const int t = (int)s->ts[k], pv = (int)s->prevs[k];
        if (pv > t) {                    /* RePaint: jump back up, no model call */
            repaint_undo(x, s, k, &undo_noise, w.zbuf ? w.zbuf : w.mo, ND);
            continue;
        }
        for (int n = 0; n < N; n++) w.tvec[n] = net_time(t);
        const Guidance g = guidance_at(&s->guide, t);
        st = guided_denoise(&g, w.mo, x, w.tvec, N, D, w.gscratch, w.lab, denoise, denoise_ctx);
        if (st) {
            if (what) *what = st == DDPM_ERR_NONFINITE ? "x_t (the sampler diverged)" : "the model";
            goto cleanup;
        }
        if (!ddpm_all_finite(w.mo, ND)) {
            if (what) *what = "the model output";
            st = DDPM_ERR_NONFINITE;
            goto cleanup;
        }
        /* float32 scalars as diffusers' schedulers compute them from their
         * float32 alphas_cumprod (alpha_bar_0 = 1: "set_alpha_to_one") */
        const float apt = (float)ab[t], app = pv > 0 ? (float)ab[pv] : 1.0f;
        const float bpt = 1.0f - apt, bpp = 1.0f - app;
        const float sa = sqrtf(apt), sb = sqrtf(bpt);
        const int thr = s->thresh_ratio > 0.0;
        for (int n = 0; n < N; n++) { w.avec[n] = sa; w.bvec[n] = sb; }
        objective_predict(w.eps, w.x0, x, w.mo, N, D, s->objective, w.avec, w.bvec,
                          s->clip_x0 && !thr);
        if (thr) threshold(w.x0, w.scratch, N, D, s->thresh_ratio, s->thresh_max);
        if (m < s->M && s->capture[m] == k) capture(s, m++, ND, x, w.eps, w.x0);

        const float sigma = step_sigma(s, apt, app, pv);
        const float* z = NULL;
        if (sigma > 0.0f || repaint) {   /* RePaint's known part needs z on every step */
            if (s->noise) z = s->noise + (size_t)k * ND;
            else {
                rng_normal_fill_parallel(w.zbuf, ND, s->seed,
                                         DDPM_STREAM_SAMPLE_STEP + (uint64_t)k, 0);
                z = w.zbuf;
            }
        }
        if (s->sampler == SAMPLER_DDPM) {
            /* (c1 x0 + c2 x) + sigma z */
            const float cat = apt / app, cbt = 1.0f - cat;
            float c1 = (sqrtf(app) * cbt) / bpt;
            float c2 = (sqrtf(cat) * bpp) / bpt;
            combine(x, c2, w.x0, c1, sigma > 0.0f ? z : NULL, sigma, ND);
        } else if (s->sampler == SAMPLER_DDIM) {
            /* (sqrt(abp) x0 + sqrt(1 - abp - sigma^2) eps) + sigma z */
            float dir2 = 1.0f - app - sigma * sigma;
            float dir = dir2 > 0.0f ? sqrtf(dir2) : 0.0f;
            combine(x, 0.0f, w.x0, sqrtf(app), w.eps, dir, ND);
            if (z) combine(x, 1.0f, z, sigma, NULL, 0.0f, ND);
        } else if (repaint) {
            repaint_step(x, w.x0, w.eps, s->known, s->mask, z, app, sigma, ND);
        } else if (pv == 0) {            /* DPM-Solver++ to sigma = 0: x_0 = x0_hat */
            memcpy(x, w.x0, sizeof(float) * ND);
        } else {                          /* DPM-Solver++(2M), midpoint */
            dpm_step(x, w.x0, w.m1, ab, t, pv, q, ND);
        }
        if (w.m1) memcpy(w.m1, w.x0, sizeof(float) * ND);
        q = t;
    }
    if (!ddpm_all_finite(x, ND)) {
        if (what) *what = "x_0 (the sampler diverged)";
        st = DDPM_ERR_NONFINITE;
        goto cleanup;
    }
    if (m < s->M && s->capture[m] == K) capture(s, m++, ND, x, NULL, x);
    if (stop && stop(stop_ctx, K, K)) { st = DDPM_ERR_INTERRUPTED; goto cleanup; }
    st = DDPM_OK;
cleanup:
    work_free(&w);
    return st;
}
