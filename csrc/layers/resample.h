/*
 * resample.h - nearest-neighbour 2x upsampling, channel concatenation and the
 * NCHW <-> channel-major layout change, on (C, B, H, W) activations.
 *
 * Concatenation along channels of (Ca, B, H, W) and (Cb, B, H, W) is just the
 * two buffers back to back, because the channel is the outermost dimension.
 */
#ifndef DDPM_RESAMPLE_H
#define DDPM_RESAMPLE_H

#include <stddef.h>

/* out (C, B, 2H, 2W) from inp (C, B, H, W). */
void upsample_forward(float* out, const float* inp, int C, int B, int H, int W);
/* dinp (C, B, H, W) += (accumulate 1) or = (accumulate 0) the sum of the 2x2
 * block of dout (C, B, 2H, 2W). */
void upsample_backward(float* dinp, const float* dout, int C, int B, int H, int W, int accumulate);

/* out (Ca + Cb, B, HW) = [a; b]; a (Ca, B, HW), b (Cb, B, HW).  When a and b
 * already are out's two parts (a lean workspace's producers wrote them in
 * place), nothing moves. */
void concat_forward(float* out, const float* a, const float* b, int Ca, int Cb, size_t BHW);
/* da += dout[:Ca], db += dout[Ca:]; each = instead of += where acc_a /
 * acc_b is 0. */
void concat_backward(float* da, float* db, const float* dout, int Ca, int Cb, size_t BHW,
                     int acc_a, int acc_b);

/* The network's NCHW input/output (B, C, HW) <-> channel-major (C, B, HW). */
void nchw_to_cbhw(float* dst, const float* src, int B, int C, size_t HW);
void cbhw_to_nchw(float* dst, const float* src, int B, int C, size_t HW);

#endif /* DDPM_RESAMPLE_H */
