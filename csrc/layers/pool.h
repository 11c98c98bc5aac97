/*
 * pool.h - 2x2 average and max pooling (stride 2) and global average pooling
 * over channel-major activations.
 *
 * Legend: C channels, B batch, H, W input height/width, HW = H*W,
 * N = C*B planes.  Activations are (C, B, H, W) as everywhere in the core
 * (see conv2d.h); a 2x2 pool acts on each (H, W) plane alone, so it only
 * needs the plane count.  Global average pooling is also where an image
 * network leaves the channel-major world: its output is row-major (B, C),
 * the layout linear_forward takes.
 */
#ifndef DDPM_POOL_H
#define DDPM_POOL_H

#include <stddef.h>

/* out (N, H/2, W/2) = mean of each 2x2 block of inp (N, H, W); like
 * torch.nn.AvgPool2d(2): an odd last row/column is dropped. */
void avgpool2_forward(float* out, const float* inp, size_t N, int H, int W);
/* dinp (N, H, W) += dout (N, H/2, W/2) / 4 spread over each 2x2 block. */
void avgpool2_backward(float* dinp, const float* dout, size_t N, int H, int W);

/* out (N, H/2, W/2) = max of each 2x2 block of inp (N, H, W) (odd edge dropped). */
void maxpool2_forward(float* out, const float* inp, size_t N, int H, int W);
/* dinp (N, H, W) += dout routed to the max of each 2x2 block, recomputed from
 * inp; ties go to the first in row-major order, as in PyTorch. */
void maxpool2_backward(float* dinp, const float* dout, const float* inp, size_t N, int H, int W);

/* out (B, C) = mean over HW of inp (C, B, HW) (sums in float64, in order). */
void global_avgpool_forward(float* out, const float* inp, int C, int B, int HW);
/* dinp (C, B, HW) += dout (B, C) / HW. */
void global_avgpool_backward(float* dinp, const float* dout, int C, int B, int HW);

#endif /* DDPM_POOL_H */
