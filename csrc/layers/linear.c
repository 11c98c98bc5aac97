/*
 * linear.c - y = x W^T + b, and SiLU, forward and backward.
 */
#include "layers/linear.h"
#include "core/common.h"
#include "core/matmul.h"
#include <math.h>

void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int B, int IN, int OUT) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < OUT; o++) out[(size_t)b * OUT + o] = bias ? bias[o] : 0.0f;
    sgemm_nt(B, OUT, IN, 1.0f, inp, IN, weight, IN, 1.0f, out, OUT);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int B, int IN, int OUT) {
    if (dinp) sgemm_nn(B, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, dinp, IN);
    sgemm_tn(OUT, IN, B, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
    if (dbias)
        for (int o = 0; o < OUT; o++) {
            double s = 0.0;
            for (int b = 0; b < B; b++) s += dout[(size_t)b * OUT + o];
            dbias[o] += (float)s;
        }
}

void silu_forward(float* out, const float* inp, size_t N) {
    for (size_t i = 0; i < N; i++) out[i] = inp[i] / (1.0f + ddpm_expf(-inp[i]));
}

void silu_backward(float* dinp, const float* dout, const float* inp, size_t N) {
    for (size_t i = 0; i < N; i++) {
        float s = 1.0f / (1.0f + ddpm_expf(-inp[i]));
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}
