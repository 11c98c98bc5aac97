/*
 * noising.c - batched forward noising over float32 buffers.
 *
 * Work is cut into fixed chunks of one sample's values; each chunk draws its
 * noise by index from the counter RNG, so any thread can do any chunk and the
 * bits never depend on the thread count.
 */
#include "diffusion/noising.h"
#include "core/common.h"
#include "core/threads.h"
#include "core/rng.h"
#include <math.h>

#define CHUNK 4096   /* values per unit of work: big enough to amortise, small enough for L1/L2 */

int q_sample(float* xt, float* eps, const float* x0, const int64_t* t,
             const double* sqrt_alpha_bars, const double* sqrt_one_minus_alpha_bars,
             size_t N, size_t D, uint64_t seed, int noise_given) {
    size_t per_sample = (D + CHUNK - 1) / CHUNK;
    size_t units = N * per_sample;
    int bad = 0;
    int nt = ddpm_threads_for(N * D, 2 * CHUNK);
    DDPM_PARALLEL_FOR_OR(nt, bad)
    for (size_t u = 0; u < units; u++) {
        size_t n = u / per_sample;
        size_t lo = (u % per_sample) * CHUNK;
        size_t len = D - lo < CHUNK ? D - lo : CHUNK;
        size_t off = n * D + lo;
        float a = (float)sqrt_alpha_bars[t[n]];
        float b = (float)sqrt_one_minus_alpha_bars[t[n]];
        float* e = eps + off;
        if (!noise_given) rng_normal_fill(e, len, seed, DDPM_STREAM_Q_SAMPLE, off);
        const float* x = x0 + off;
        float* o = xt + off;
        uint32_t nf = 0;
        for (size_t i = 0; i < len; i++) {
            o[i] = a * x[i] + b * e[i];
            nf |= ddpm_nonfinite_bit(x[i]) | ddpm_nonfinite_bit(e[i]);
        }
        if (nf) bad = 1;
    }
    return bad ? DDPM_ERR_NONFINITE : DDPM_OK;
}

int q_sample_chain(float* xt, const float* x0, const int64_t* t,
                   const double* alphas, const double* betas,
                   size_t N, size_t D, uint64_t seed) {
    enum { CH = 256 };
    size_t per_sample = (D + CH - 1) / CH;
    size_t units = N * per_sample;
    int bad = 0;
    int nt = ddpm_threads_for(units, 4);
    DDPM_PARALLEL_FOR_OR(nt, bad)
    for (size_t u = 0; u < units; u++) {
        size_t n = u / per_sample;
        size_t lo = (u % per_sample) * CH;
        size_t len = D - lo < CH ? D - lo : CH;
        size_t off = n * D + lo;
        float x[CH], e[CH];
        for (size_t i = 0; i < len; i++) {
            x[i] = x0[off + i];
            if (!isfinite(x[i])) bad = 1;
        }
        for (int64_t s = 1; s <= t[n]; s++) {
            /* in float64 per step coefficient, float32 state, like the closed form */
            float a = (float)sqrt(alphas[s]);
            float b = (float)sqrt(betas[s]);
            rng_normal_fill(e, len, seed, DDPM_STREAM_CHAIN_BASE + (uint64_t)s, off);
            for (size_t i = 0; i < len; i++) x[i] = a * x[i] + b * e[i];
        }
        for (size_t i = 0; i < len; i++) xt[off + i] = x[i];
    }
    return bad ? DDPM_ERR_NONFINITE : DDPM_OK;
}

int q_posterior_mean(float* mean, const float* x0, const float* xt, const int64_t* t,
                     const double* coef1, const double* coef2,
                     size_t N, size_t D) {
    int bad = 0;
    int nt = ddpm_threads_for(N * D, 2 * CHUNK);
    DDPM_PARALLEL_FOR_OR(nt, bad)
    for (size_t n = 0; n < N; n++) {
        float c1 = (float)coef1[t[n]], c2 = (float)coef2[t[n]];
        const float* a = x0 + n * D;
        const float* b = xt + n * D;
        float* o = mean + n * D;
        uint32_t nf = 0;
        for (size_t i = 0; i < D; i++) {
            o[i] = c1 * a[i] + c2 * b[i];
            nf |= ddpm_nonfinite_bit(a[i]) | ddpm_nonfinite_bit(b[i]);
        }
        if (nf) bad = 1;
    }
    return bad ? DDPM_ERR_NONFINITE : DDPM_OK;
}
