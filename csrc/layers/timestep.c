/*
 * timestep.c - sinusoidal timestep embedding.
 */
#include "layers/timestep.h"
#include <math.h>
#include <stddef.h>

void timestep_embedding_forward(float* out, const float* t, int B, int dim, int flip_sin_to_cos,
                                float freq_shift, float max_period) {
    const int half = dim / 2;
    const float neg_log_period = (float)(-log((double)max_period));
    for (int b = 0; b < B; b++) {
        float* o = out + (size_t)b * dim;
        for (int i = 0; i < half; i++) {
            /* float32 at each step, like torch: (-ln P * i) / (half - shift), exp, t*freq */
            float expo = (neg_log_period * (float)i) / ((float)half - freq_shift);
            float freq = (float)exp((double)expo);
            float arg = t[b] * freq;
            float s = (float)sin((double)arg), c = (float)cos((double)arg);
            if (flip_sin_to_cos) { o[i] = c; o[half + i] = s; }
            else { o[i] = s; o[half + i] = c; }
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}
