/*
 * objective.c - the eps / x0 / v algebra over whole batches (see objective.h).
 *
 * Legend: N images, D values per image.  Work is cut into (image, chunk of
 * CHUNK values) units spread over ddpm's threads; every value is computed
 * alone, so the bits never depend on the thread count.
 */
#include "diffusion/objective.h"
#include "core/threads.h"

#define CHUNK 4096      /* values per unit of parallel work */
#define PAR_MIN 65536   /* values per thread below which waking threads costs more */

double objective_min_snr_weight(int objective, double snr, double gamma) {
    const double clipped = snr < gamma ? snr : gamma;
    if (objective == OBJ_EPS) return clipped / snr;
    if (objective == OBJ_X0) return clipped;
    return clipped / (snr + 1.0);
}

void objective_predict(float* eps, float* x0, const float* x, const float* mo, int N, size_t D,
                       int objective, const float* a, const float* b, int clip) {
    const size_t per = (D + CHUNK - 1) / CHUNK, units = (size_t)N * per;
    int nt = ddpm_threads_for((size_t)N * D, PAR_MIN);
    DDPM_PARALLEL_FOR(nt)
    for (size_t u = 0; u < units; u++) {
        const size_t n = u / per, lo = n * D + (u % per) * CHUNK;
        const size_t hi = lo + CHUNK < (n + 1) * D ? lo + CHUNK : (n + 1) * D;
        const float an = a[n], bn = b[n];
        for (size_t i = lo; i < hi; i++) {
            float e, z;
            objective_split(objective, mo[i], x[i], an, bn, &e, &z);
            if (clip) z = z < -1.0f ? -1.0f : (z > 1.0f ? 1.0f : z);
            eps[i] = e;
            x0[i] = z;
        }
    }
}

void objective_targets(float* target, const float* x0, const float* eps, int N, size_t D,
                       int objective, const float* a, const float* b) {
    const size_t per = (D + CHUNK - 1) / CHUNK, units = (size_t)N * per;
    int nt = ddpm_threads_for((size_t)N * D, PAR_MIN);
    DDPM_PARALLEL_FOR(nt)
    for (size_t u = 0; u < units; u++) {
        const size_t n = u / per, lo = n * D + (u % per) * CHUNK;
        const size_t hi = lo + CHUNK < (n + 1) * D ? lo + CHUNK : (n + 1) * D;
        for (size_t i = lo; i < hi; i++)
            target[i] = objective_target(objective, x0[i], eps[i], a[n], b[n]);
    }
}
