/*
 * softmax_ce.c - softmax cross-entropy forward and backward.
 *
 * Rows are independent; the batch mean is summed in row order after the
 * rows are done, so it does not depend on the thread count.  Forward works
 * in float64 (K is small) with the max subtracted first, so large logits
 * neither overflow nor lose the loss of a confident, correct row.
 */
#include "layers/softmax_ce.h"
#include "core/common.h"
#include <math.h>

int softmax_ce_forward(float* probs, double* loss, int* correct, const float* logits,
                       const int64_t* targets, int B, int K) {
    uint32_t bad = 0;
    for (size_t i = 0; i < (size_t)B * K; i++) bad |= ddpm_nonfinite_bit(logits[i]);
    if (bad) return DDPM_ERR_NONFINITE;
    double total = 0.0;
    int right = 0;
    for (int b = 0; b < B; b++) {
        const float* z = logits + (size_t)b * K;
        float* p = probs + (size_t)b * K;
        int arg = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[arg]) arg = k;
        const double mx = z[arg];
        double s = 0.0;
        for (int k = 0; k < K; k++) s += exp((double)z[k] - mx);
        const double lse = mx + log(s);
        for (int k = 0; k < K; k++) p[k] = (float)(exp((double)z[k] - mx) / s);
        total += lse - (double)z[targets[b]];
        right += arg == targets[b];
    }
    *loss = total / B;
    if (correct) *correct = right;
    return DDPM_OK;
}

void softmax_ce_backward(float* dlogits, const float* probs, const int64_t* targets, int B,
                         int K, float dloss) {
    const float g = dloss / (float)B;
    for (int b = 0; b < B; b++) {
        float* d = dlogits + (size_t)b * K;
        const float* p = probs + (size_t)b * K;
        for (int k = 0; k < K; k++) d[k] += g * (p[k] - (k == targets[b] ? 1.0f : 0.0f));
    }
}
