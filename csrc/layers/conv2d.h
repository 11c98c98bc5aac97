/*
 * conv2d.h - 2-D convolution, K x K (K = 3 or 1), stride S (1 or 2), padding K/2.
 *
 * Dimension legend (all layer files): B batch, C input channels, OC output
 * channels, H, W input height/width, Ho, Wo output height/width
 * (Ho = (H + 2 pad - K)/S + 1), G groups, NH heads, HW = H*W.
 *
 * Activations are channel-major: x[c][b][h][w], shape (C, B, H, W).  With the
 * batch inside the channel, a convolution over the whole batch is one GEMM
 * with N = B*Ho*Wo, and the weight gradient sums over the batch inside one
 * GEMM's K loop: fast, and the same bits at any thread count.
 * Weights keep PyTorch's layout (OC, C, K, K), which is the (OC, C*K*K) matrix.
 */
#ifndef DDPM_CONV2D_H
#define DDPM_CONV2D_H

#include <stddef.h>
#include "layers/groupnorm.h"   /* NormAct */

/* Samples per im2col chunk and the im2col scratch (floats) of one chunk. */
int conv2d_chunk(int B, int C, int H, int W, int K, int S);
size_t conv2d_col_floats(int B, int C, int H, int W, int K, int S);
/* The scratch (floats) conv2d_forward/backward need for these shapes: the
 * im2col chunk, or for 3x3 stride-1 layers the Winograd buffers (transformed
 * weights, their gradient, transformed input and products of one chunk). */
size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int K, int S);

/* out (OC, B, Ho, Wo) = conv(inp) + bias; with accumulate, out += conv(inp) + bias
 *   (so a residual or a per-sample time term already in out is kept: fused add).
 * col: scratch, conv2d_scratch_floats(...) floats (unused by the forward for
 * K = 1, S = 1, where the backward keeps its weight-gradient partials in it,
 * or with col NULL runs one GEMM instead). 
 * inp (C, B, H, W); weight (OC, C, K, K); bias (OC,) or NULL. */
void conv2d_forward(float* out, float* col, const float* inp, const float* weight,
                    const float* bias, int B, int C, int H, int W, int OC, int K, int S,
                    int accumulate);

/* out (OC, B, Ho, Wo) = (start + bias) + conv(inp), in that order, where the
 * start is add (OC, B, Ho, Wo) if given (it may be out itself: accumulate),
 * else add_bo[b][oc] (B, OC), one number per sample and channel (the ResNet
 * block's time projection), else 0.  The sum a separate fill or copy and
 * then accumulate would give, bit for bit, without those passes. */
void conv2d_forward_add(float* out, float* col, const float* inp, const float* weight,
                        const float* bias, const float* add, const float* add_bo, int B, int C,
                        int H, int W, int OC, int K, int S, const float* u);

/* conv2d_forward_add for a 3x3 stride-1 layer whose input is a GroupNorm
 * (+ SiLU) of inp: inp (C, B, H, W) read through act's (C, B) coefficients
 * as the convolution copies it (groupnorm.h), never written out. */
void conv2d_forward_norm(float* out, float* col, const float* inp, const NormAct* act,
                         const float* weight, const float* bias, const float* add,
                         const float* add_bo, int B, int C, int H, int W, int OC,
                         const float* u);

/* The weights as the forward transforms them before each call (Winograd's
 * G g G^T), for a caller that runs one layer's forward many times on the
 * same weights: u, conv2d_weights_floats(...) floats (0: this layer
 * transforms none), = the transform of weight (OC, C, K, K) (winograd.h:
 * wino_weights, packed for the products); passed as u to
 * conv2d_forward_add / conv2d_forward_norm (NULL there: transform per call),
 * it gives the same numbers. */
size_t conv2d_weights_floats(int C, int H, int W, int OC, int K, int S);
void conv2d_weights(float* u, const float* weight, int C, int H, int W, int OC, int K, int S);

/* dinp (C, B, H, W) += ... (accumulate 1) or = ... (accumulate 0: its old
 * contents are never read, so it need not be zeroed first), or NULL to
 * skip; dweight (OC, C, K, K) += ...; dbias (OC,) += ... or NULL; dout
 * (OC, B, Ho, Wo); col scratch as above. */
void conv2d_backward(float* dinp, float* dweight, float* dbias, float* col, const float* dout,
                     const float* inp, const float* weight, int B, int C, int H, int W, int OC,
                     int K, int S, int accumulate);

/* Testing: 0 sends every Winograd chunk through the row-by-row transforms,
 * 1 (the default) lets small planes go whole (winograd.h: plane_max); the
 * numbers are the same either way.  Returns the previous setting. */
int conv2d_whole_planes(int on);

#endif /* DDPM_CONV2D_H */
