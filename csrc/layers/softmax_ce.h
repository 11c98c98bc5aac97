/*
 * softmax_ce.h - softmax cross-entropy over row-major logits.
 *
 * Legend: B batch, K classes.  loss = mean_b (logsumexp(logits[b]) -
 * logits[b][target[b]]), the mean that torch.nn.functional.cross_entropy
 * returns; probabilities are kept for the backward pass.
 */
#ifndef DDPM_SOFTMAX_CE_H
#define DDPM_SOFTMAX_CE_H

#include <stdint.h>

/* probs (B, K) = softmax(logits (B, K)); *loss = mean cross-entropy against
 * targets (B,) in 0..K-1 (float64); *correct (or NULL) = how many rows have
 * their first argmax at the target.  DDPM_ERR_VALUE for a target outside
 * 0..K-1, DDPM_ERR_NONFINITE for NaN/Inf logits. */
int softmax_ce_forward(float* probs, double* loss, int* correct, const float* logits,
                       const int64_t* targets, int B, int K);

/* dlogits (B, K) += dloss * (probs - onehot(targets)) / B: the gradient of
 * dloss * loss. */
void softmax_ce_backward(float* dlogits, const float* probs, const int64_t* targets, int B,
                         int K, float dloss);

#endif /* DDPM_SOFTMAX_CE_H */
