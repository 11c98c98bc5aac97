/*
 * unet_lanes.h - the U-Net on two lanes: a batch as two halves side by side,
 * each half a whole forward (and backward) on its own copy of the network and
 * its share of ddpm's threads.  Offers the samplers' denoiser (unet_infer) and
 * the training step's forward and backward (unet_forward_halves,
 * unet_backward_halves).
 *
 * Why.  Spreading every layer over the threads costs a fork and a join per
 * layer and leaves the small layers (7x7 images, the norms, attention) on one
 * thread; two halves side by side share nothing until the end.
 *
 * The cut.  A batch of UNET_SPLIT or more images runs as two halves (the
 * first takes the odd image); a smaller one runs whole, as unet_forward.  The
 * cut comes from the batch size alone, never from the thread count, so the
 * numbers do not depend on it.  They do depend on the cut: a half is a forward
 * on its own images (OpenBLAS's rounding can depend on a GEMM's width), and a
 * split backward's parameter gradient is half 0's plus half 1's.
 *
 * The lanes.  lanes[i] of struct UNet (unet_blocks.h) are twins of the network
 * (same config, own workspace), built on first use.  The denoiser runs on both
 * twins, so a forward the network keeps for a backward survives a sampling
 * call; the training step runs half 0 on the network itself and half 1 on
 * twin 1 (its workspace then also holds half 1's activation gradients).
 * The denoiser's twins hold a lean workspace (runtime.h: only what an
 * inference forward writes, no normalised activations or attention
 * probabilities for a backward, a skip concatenation's parts written in place
 * by their producers, and a slot's floats reused once no later block reads
 * it: 17% of the full workspace's floats for the reference U-Net, 1.4 MB an
 * image).  Switching between
 * the two frees what the other left: the denoiser frees the network's
 * activation gradients (scratch of a backward; a kept forward's activations
 * stay) and twin 1's whole workspace, the training step twin 0's workspace
 * and twin 1's lean one.
 *
 * Legend: as in unet.h (B, N batch, Cin/Cout image channels, S sample size,
 * P parameters).
 */
#ifndef DDPM_NETS_UNET_LANES_H
#define DDPM_NETS_UNET_LANES_H

#include <stdint.h>
#include "nets/unet.h"

#define UNET_CHUNK 64      /* the denoiser's images per chunk (UNet.forward cuts the same way) */
#define UNET_SPLIT 16      /* a batch (or chunk) this large or larger runs as two halves */
#define UNET_LANES 2

/* Between the denoiser's chunks: nonzero to stop (then DDPM_ERR_INTERRUPTED). */
typedef int (*unet_stop_fn)(void* ctx);

/* The denoiser: out (N, Cout, S, S) = eps_theta(x (N, Cin, S, S), t (N,),
 * labels (N,) or NULL), in chunks of UNET_CHUNK images, each cut as above, on
 * the twins (nothing kept for a backward).  stop (may be NULL) runs on the
 * calling thread between chunks.  key: nonzero for a caller that calls again
 * and again on the same params (a sampler's loop): the 3x3 convolutions'
 * transformed weights are made once per key and kept (net->prep) instead of
 * in every layer call, the same numbers; the caller takes a new key whenever
 * params may have changed.  0: made in each call.  The statuses of
 * unet_forward, or DDPM_ERR_NOMEM for a twin or prepared weights that cannot
 * be allocated, or DDPM_ERR_INTERRUPTED. */
int unet_infer(UNet* net, const float* params, const float* x, const float* t,
               const int64_t* labels, float* out, int N, unet_stop_fn stop, void* stop_ctx,
               uint64_t key);

/* The training step's forward: unet_forward with keep on B images, cut as
 * above (half 0 on net, half 1 on twin 1).  Statuses as unet_forward's. */
int unet_forward_halves(UNet* net, const float* params, const float* x, const float* t,
                        const int64_t* labels, float* out, int B);

/* After unet_forward_halves on B images: grads (P,) = d loss / d params
 * (overwritten; half 0's gradient + half 1's for a cut batch), dout (B, Cout,
 * S, S).  Statuses as unet_backward's (DDPM_ERR_STALE when either half's
 * forward is gone), DDPM_ERR_NOMEM for half 1's gradient buffer. */
int unet_backward_halves(UNet* net, const float* params, float* grads, const float* dout, int B);

#endif /* DDPM_NETS_UNET_LANES_H */
