/*
 * linear.h - fully connected layers and SiLU on row-major (B, features) data
 * (the time-embedding MLP and each ResNet block's time projection).
 *
 * Legend: B batch, IN input features, OUT output features, N element count.
 * Weights keep PyTorch's layout (OUT, IN).
 */
#ifndef DDPM_LINEAR_H
#define DDPM_LINEAR_H

#include <stddef.h>

/* out (B, OUT) = inp (B, IN) weight^T + bias; bias (OUT,) or NULL. */
void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int B, int IN, int OUT);
/* dinp (B, IN) += dout weight (or NULL); dweight (OUT, IN) += dout^T inp;
 * dbias (OUT,) += column sums of dout (or NULL). */
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int B, int IN, int OUT);

/* out (N,) = x sigmoid(x) */
void silu_forward(float* out, const float* inp, size_t N);
/* dinp (N,) += dout * silu'(inp) */
void silu_backward(float* dinp, const float* dout, const float* inp, size_t N);

#endif /* DDPM_LINEAR_H */
