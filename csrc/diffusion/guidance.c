/*
 * guidance.c - one (guided) denoiser call per sampler step; see guidance.h.
 *
 * Legend: N images, D values per image.  The combination is elementwise
 * (same bits at any thread count); the rescale's per-image standard
 * deviations are float64 sums in index order.
 */
#include "diffusion/guidance.h"
#include "core/common.h"
#include "core/threads.h"

#include <math.h>
#include <string.h>

#define PAR_MIN 65536   /* values per thread below which waking threads costs more */

/* 2N batch needed: labels given and w not 0 or 1 */
static int doubled(const Guidance* g) {
    return g->labels && g->scale != 0.0 && g->scale != 1.0;
}

size_t guidance_scratch_floats(const Guidance* g, int N, size_t D) {
    return doubled(g) ? 4 * (size_t)N * D : 0;   /* [x; x] and [out_c; out_u] */
}

size_t guidance_scratch_labels(const Guidance* g, int N) {
    return g->labels ? 2 * (size_t)N : 0;
}

Guidance guidance_at(const Guidance* g, int t) {
    Guidance h = *g;
    if ((g->t_lo || g->t_hi) && (t < g->t_lo || t > g->t_hi)) {
        h.scale = 1.0;
        h.rescale = 0.0;
    }
    return h;
}

/* Unbiased standard deviation of x[0..n) (torch.std), float64. */
static double std_dev(const float* x, size_t n) {
    double s = 0.0, q = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    const double mean = s / (double)n;
    for (size_t i = 0; i < n; i++) q += ((double)x[i] - mean) * ((double)x[i] - mean);
    return n > 1 ? sqrt(q / (double)(n - 1)) : 0.0;
}

int guided_denoise(const Guidance* g, float* out, const float* x, float* tnet, int N, size_t D,
                   float* scratch, int64_t* lab, sample_denoise_fn denoise, void* ctx) {
    const size_t ND = (size_t)N * D;
    if (!g->labels) return denoise(ctx, out, x, tnet, NULL, N);
    if (!doubled(g)) {                      /* w = 1: the labels alone; w = 0: null alone */
        for (int n = 0; n < N; n++) lab[n] = g->scale == 0.0 ? g->null_label : g->labels[n];
        return denoise(ctx, out, x, tnet, lab, N);
    }
    float* x2 = scratch;                    /* (2N, D) [x; x] */
    float* o2 = scratch + 2 * ND;           /* (2N, D) [out_c; out_u] */
    memcpy(x2, x, sizeof(float) * ND);
    memcpy(x2 + ND, x, sizeof(float) * ND);
    for (int n = 0; n < N; n++) {
        lab[n] = g->labels[n];
        lab[N + n] = g->null_label;
        tnet[N + n] = tnet[n];
    }
    int st = denoise(ctx, o2, x2, tnet, lab, 2 * N);
    if (st) return st;
    const float* oc = o2;
    const float* ou = o2 + ND;
    const float w = (float)g->scale;
    int nt = ddpm_threads_for(ND, PAR_MIN);
    if (nt > N) nt = N;
    DDPM_PARALLEL_FOR(nt)
    for (int n = 0; n < N; n++) {
        const size_t off = (size_t)n * D;
        for (size_t i = off; i < off + D; i++) out[i] = ou[i] + w * (oc[i] - ou[i]);
        if (g->rescale > 0.0) {
            /* phi * out * (std_c / std_out) + (1 - phi) * out, per image */
            const float ratio = (float)(std_dev(oc + off, D) / std_dev(out + off, D));
            const float phi = (float)g->rescale, keep = (float)(1.0 - g->rescale);
            for (size_t i = off; i < off + D; i++) out[i] = phi * (out[i] * ratio) + keep * out[i];
        }
    }
    return DDPM_OK;
}
