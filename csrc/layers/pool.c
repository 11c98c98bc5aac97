/*
 * pool.c - average pooling, forward and backward.
 *
 * Every output element is written by one thread (planes or channels split
 * over threads), and every sum runs in a fixed order: the same bits at any
 * thread count.
 */
#include "layers/pool.h"
#include "core/common.h"
#include "core/threads.h"

void avgpool2_forward(float* out, const float* inp, size_t N, int H, int W) {
    const int Ho = H / 2, Wo = W / 2;
    int nt = ddpm_threads_for(N * (size_t)H * W, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t p = 0; p < N; p++) {
        const float* x = inp + p * H * W;
        float* o = out + p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            const float* r0 = x + (size_t)(2 * i) * W;
            const float* r1 = r0 + W;
            for (int j = 0; j < Wo; j++)
                o[(size_t)i * Wo + j] = 0.25f * ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]));
        }
    }
}

void avgpool2_backward(float* dinp, const float* dout, size_t N, int H, int W) {
    const int Ho = H / 2, Wo = W / 2;
    int nt = ddpm_threads_for(N * (size_t)H * W, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t p = 0; p < N; p++) {
        float* dx = dinp + p * H * W;
        const float* d = dout + p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            float* r0 = dx + (size_t)(2 * i) * W;
            float* r1 = r0 + W;
            for (int j = 0; j < Wo; j++) {
                float g = 0.25f * d[(size_t)i * Wo + j];
                r0[2 * j] += g; r0[2 * j + 1] += g;
                r1[2 * j] += g; r1[2 * j + 1] += g;
            }
        }
    }
}

/* index 0..3 of the first maximum of (a, b, c, d), row-major order; NaN wins like torch */
static inline int argmax4(float a, float b, float c, float d) {
    int k = 0;
    float m = a;
    if (b > m || b != b) { k = 1; m = b; }
    if (m == m && (c > m || c != c)) { k = 2; m = c; }
    if (m == m && (d > m || d != d)) { k = 3; }
    return k;
}

void maxpool2_forward(float* out, const float* inp, size_t N, int H, int W) {
    const int Ho = H / 2, Wo = W / 2;
    int nt = ddpm_threads_for(N * (size_t)H * W, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t p = 0; p < N; p++) {
        const float* x = inp + p * H * W;
        float* o = out + p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            const float* r0 = x + (size_t)(2 * i) * W;
            const float* r1 = r0 + W;
            for (int j = 0; j < Wo; j++) {
                float v[4] = {r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]};
                o[(size_t)i * Wo + j] = v[argmax4(v[0], v[1], v[2], v[3])];
            }
        }
    }
}

void maxpool2_backward(float* dinp, const float* dout, const float* inp, size_t N, int H, int W) {
    const int Ho = H / 2, Wo = W / 2;
    int nt = ddpm_threads_for(N * (size_t)H * W, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (size_t p = 0; p < N; p++) {
        const float* x = inp + p * H * W;
        float* dx = dinp + p * H * W;
        const float* d = dout + p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            const size_t r0 = (size_t)(2 * i) * W, r1 = r0 + W;
            for (int j = 0; j < Wo; j++) {
                size_t at[4] = {r0 + 2 * j, r0 + 2 * j + 1, r1 + 2 * j, r1 + 2 * j + 1};
                int k = argmax4(x[at[0]], x[at[1]], x[at[2]], x[at[3]]);
                dx[at[k]] += d[(size_t)i * Wo + j];
            }
        }
    }
}

void global_avgpool_forward(float* out, const float* inp, int C, int B, int HW) {
    int nt = ddpm_threads_for((size_t)C * B * HW, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) {
            const float* x = inp + ((size_t)c * B + b) * HW;
            double s = 0.0;
            for (int i = 0; i < HW; i++) s += x[i];
            out[(size_t)b * C + c] = (float)(s / HW);
        }
}

void global_avgpool_backward(float* dinp, const float* dout, int C, int B, int HW) {
    const float inv = 1.0f / (float)HW;
    int nt = ddpm_threads_for((size_t)C * B * HW, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int c = 0; c < C; c++)
        for (int b = 0; b < B; b++) {
            float* dx = dinp + ((size_t)c * B + b) * HW;
            const float g = dout[(size_t)b * C + c] * inv;
            for (int i = 0; i < HW; i++) dx[i] += g;
        }
}
