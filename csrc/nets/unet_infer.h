/*
 * unet_infer.h - the U-Net as the denoiser of a whole batch: eps_theta of N
 * images for the samplers, NLL and guidance, where no backward follows.  The
 * batch runs in parts side by side on ddpm's threads.
 *
 * The cut.  N images go in chunks of UNET_CHUNK (a Ctrl-C check between
 * chunks), and a chunk of UNET_SPLIT or more images in two halves (the first
 * takes the odd one).  The parts come from N alone, never from the thread
 * count, so the numbers do not depend on it.  They do depend on the cut: a
 * part is a forward on its own images, and OpenBLAS's rounding can depend on
 * a GEMM's width.  A chunk's numbers are those of running its images alone,
 * so a large batch equals its chunks run one by one.
 *
 * The lanes.  The two halves of a chunk run at once, each on a lane: a twin
 * of the network (same config, its own workspace, inference only) running a
 * whole forward on its share of the threads (ddpm_run_lanes).  Spreading
 * every layer over the threads instead costs a fork and a join per layer and
 * leaves the small layers (7x7 images, the norms, attention) on one thread.
 * The network's own workspace is not touched, so a forward kept for a
 * backward survives a sampling call.
 *
 * Legend: as in unet.h (Cin/Cout image channels, S sample size).
 */
#ifndef DDPM_NETS_UNET_INFER_H
#define DDPM_NETS_UNET_INFER_H

#include <stdint.h>
#include "nets/unet.h"

#define UNET_CHUNK 64      /* images per chunk (UNet.forward cuts large batches the same way) */
#define UNET_SPLIT 16      /* a chunk this large or larger runs as two halves at once */
#define UNET_LANES 2       /* lanes, one per half */

/* Between chunks: nonzero to stop (the call then returns DDPM_ERR_INTERRUPTED). */
typedef int (*unet_stop_fn)(void* ctx);

/* out (N, Cout, S, S) = eps_theta(x (N, Cin, S, S), t (N,), labels (N,) or NULL),
 * cut as above.  stop (may be NULL) runs on the calling thread between chunks.
 * The statuses of unet_forward, or DDPM_ERR_NOMEM for a lane that cannot be
 * built, or DDPM_ERR_INTERRUPTED. */
int unet_infer(UNet* net, const float* params, const float* x, const float* t,
               const int64_t* labels, float* out, int N, unet_stop_fn stop, void* stop_ctx);

#endif /* DDPM_NETS_UNET_INFER_H */
