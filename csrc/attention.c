/*
 * attention.c - softmax attention forward and backward, one (b, head) per task.
 */
#include "attention.h"
#include "common.h"
#include <math.h>

/* row c of q (off = 0), k (off = C) or v (off = 2C) for sample b: HW contiguous floats */
#define ROW(base, off, c) ((base) + ((size_t)((off) + (c)) * B + b) * HW)

void attention_forward(float* out, float* att, const float* qkv, int B, int C, int HW, int NH) {
    const int hd = C / NH;
    const float scale = 1.0f / sqrtf((float)hd);
    int nt = ddpm_threads_for((size_t)B * NH * HW * HW * hd, 1 << 16);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int task = 0; task < B * NH; task++) {
        int b = task / NH, h = task % NH;
        float* P = att + (size_t)task * HW * HW;
        /* S[i][j] = sum_d q[d][i] k[d][j], accumulated d by d (vectorises over j) */
        for (size_t e = 0; e < (size_t)HW * HW; e++) P[e] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float* q = ROW(qkv, 0, h * hd + d);
            const float* k = ROW(qkv, C, h * hd + d);
            for (int i = 0; i < HW; i++) {
                float qi = q[i];
                float* Pi = P + (size_t)i * HW;
                for (int j = 0; j < HW; j++) Pi[j] += qi * k[j];
            }
        }
        for (int i = 0; i < HW; i++) {
            float* Pi = P + (size_t)i * HW;
            float mx = -INFINITY;
            for (int j = 0; j < HW; j++) { Pi[j] *= scale; mx = Pi[j] > mx ? Pi[j] : mx; }
            double sum = 0.0;
            for (int j = 0; j < HW; j++) { Pi[j] = ddpm_expf(Pi[j] - mx); sum += Pi[j]; }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < HW; j++) Pi[j] *= inv;
        }
        /* o[d][i] = sum_j P[i][j] v[d][j] */
        for (int d = 0; d < hd; d++) {
            const float* v = ROW(qkv, 2 * C, h * hd + d);
            float* o = out + ((size_t)(h * hd + d) * B + b) * HW;
            for (int i = 0; i < HW; i++) {
                const float* Pi = P + (size_t)i * HW;
                float s = 0.0f;
                for (int j = 0; j < HW; j++) s += Pi[j] * v[j];
                o[i] = s;
            }
        }
    }
}

void attention_backward(float* dqkv, float* scratch, const float* dout, const float* qkv,
                        const float* att, int B, int C, int HW, int NH) {
    const int hd = C / NH;
    const float scale = 1.0f / sqrtf((float)hd);
    int nt = ddpm_threads_for((size_t)B * NH * HW * HW * hd, 1 << 16);
    (void)nt;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (int task = 0; task < B * NH; task++) {
        int b = task / NH, h = task % NH;
        const float* P = att + (size_t)task * HW * HW;
        float* dS = scratch + (size_t)task * HW * HW;
        /* dP[i][j] = sum_d do[d][i] v[d][j];  dv[d][j] += sum_i P[i][j] do[d][i] */
        for (size_t e = 0; e < (size_t)HW * HW; e++) dS[e] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float* v = ROW(qkv, 2 * C, h * hd + d);
            const float* dO = dout + ((size_t)(h * hd + d) * B + b) * HW;
            float* dv = ROW(dqkv, 2 * C, h * hd + d);
            for (int i = 0; i < HW; i++) {
                float g = dO[i];
                float* dSi = dS + (size_t)i * HW;
                const float* Pi = P + (size_t)i * HW;
                for (int j = 0; j < HW; j++) { dSi[j] += g * v[j]; dv[j] += Pi[j] * g; }
            }
        }
        /* softmax backward: dS = P (dP - sum_j P dP), then the 1/sqrt(hd) scale */
        for (int i = 0; i < HW; i++) {
            float* dSi = dS + (size_t)i * HW;
            const float* Pi = P + (size_t)i * HW;
            double dot = 0.0;
            for (int j = 0; j < HW; j++) dot += (double)Pi[j] * dSi[j];
            float df = (float)dot;
            for (int j = 0; j < HW; j++) dSi[j] = Pi[j] * (dSi[j] - df) * scale;
        }
        /* dq[d][i] += sum_j dS[i][j] k[d][j];  dk[d][j] += sum_i dS[i][j] q[d][i] */
        for (int d = 0; d < hd; d++) {
            const float* q = ROW(qkv, 0, h * hd + d);
            const float* k = ROW(qkv, C, h * hd + d);
            float* dq = ROW(dqkv, 0, h * hd + d);
            float* dk = ROW(dqkv, C, h * hd + d);
            for (int i = 0; i < HW; i++) {
                const float* dSi = dS + (size_t)i * HW;
                float s = 0.0f, qi = q[i];
                for (int j = 0; j < HW; j++) { s += dSi[j] * k[j]; dk[j] += dSi[j] * qi; }
                dq[i] += s;
            }
        }
    }
}
