/*
 * unet.h - the denoiser eps_theta(x_t, t): diffusers' UNet2DModel (the subset
 * with DownBlock2D / AttnDownBlock2D, UNetMidBlock2D, UpBlock2D /
 * AttnUpBlock2D), forward and backward over flat float32 buffers.
 *
 * Parameters and gradients are each ONE flat buffer (owned by NumPy) laid out
 * by the parameter table (diffusers' names), so the optimizer is one loop over
 * num_parameters; inside, every block reads its weights through named views
 * (unet_blocks.h).  Activations (and their gradients) live in a workspace
 * sized once per (config, batch size) (nets/runtime.h).
 *
 * Legend: B batch, Cin/Cout image channels, S sample size (H = W = S),
 * L levels (len(block_out)), TE time-embedding width (4 * block_out[0]).
 * Images at the boundary are NCHW (B, C, S, S) like PyTorch; inside, every
 * activation is channel-major (C, B, H, W) (see conv2d.h for why).
 */
#ifndef DDPM_UNET_H
#define DDPM_UNET_H

#include <stddef.h>
#include <stdint.h>
#include "core/common.h"   /* ParamTensor */

#define UNET_MAX_LEVELS 6
#define UNET_MAX_LAYERS 4
#define UNET_NAME_LEN DDPM_PARAM_NAME_LEN

typedef struct {
    int sample_size;                 /* S: input height = width */
    int in_channels, out_channels;
    int num_levels;                  /* L */
    int block_out[UNET_MAX_LEVELS];  /* channels per level */
    int layers_per_block;
    int down_attn[UNET_MAX_LEVELS];  /* down block i is AttnDownBlock2D */
    int up_attn[UNET_MAX_LEVELS];    /* up block i (deepest first) is AttnUpBlock2D */
    int mid_attn;                    /* add_attention: attention in the mid block */
    int norm_groups;
    float norm_eps;
    int head_dim;                    /* attention_head_dim; 0 = one head per block */
    int num_class_embeds;            /* K: class-conditional (diffusers' class_embed_type None,
                                        an embedding table added to the time embedding); 0 = none */
} UNetConfig;

typedef struct UNet UNet;   /* defined in unet_blocks.h */

/* Builds the network for a config.  DDPM_ERR_VALUE (with *why set to a static
 * message) for configs we do not support; DDPM_ERR_NOMEM. */
int unet_create(UNet** out, const UNetConfig* cfg, const char** why);
void unet_free(UNet* net);

size_t unet_num_parameters(const UNet* net);
int unet_num_tensors(const UNet* net);
const ParamTensor* unet_tensor(const UNet* net, int i);
const UNetConfig* unet_config(const UNet* net);
/* Multiply-adds x 2 of one forward pass per image. */
double unet_flops_per_image(const UNet* net);

/* Sizes the workspace for batch B (a no-op when B is unchanged). */
int unet_reserve(UNet* net, int B, int for_training);

/* out (B, Cout, S, S) = eps_theta(x (B, Cin, S, S), t (B,), labels (B,)).
 * params (num_parameters,).  labels: class indices in 0..K-1 for a
 * conditional network (the caller checks the range: they index the table),
 * NULL otherwise.  Starts a new generation (unet_generation); with keep, the
 * workspace then holds what unet_backward reads.  keep 0 (sampling, NLL,
 * any forward no backward follows) folds each GroupNorm + SiLU into the
 * convolution after it instead of writing its output: the same numbers,
 * bit for bit, one pass over memory fewer per norm, and no backward.
 * DDPM_ERR_NONFINITE for NaN/Inf in x or t; DDPM_ERR_VALUE for labels
 * missing (conditional) or given (unconditional); DDPM_ERR_NOMEM. */
int unet_forward(UNet* net, const float* params, const float* x, const float* t,
                 const int64_t* labels, float* out, int B, int keep);

/* The number of the last forward (0 before any): a caller that keeps it can
 * tell whether the activations in the workspace are still its own. */
uint64_t unet_generation(const UNet* net);

/* After unet_forward number `generation` on B images: grads (num_parameters,)
 * += d loss / d params, and dx (B, Cin, S, S) = d loss / d x when dx != NULL;
 * dout (B, Cout, S, S).  DDPM_ERR_STALE when the workspace does not hold that
 * forward (another forward ran since, on any batch), DDPM_ERR_VALUE when B is
 * not its batch: a backward never reads activations that are not its own. */
int unet_backward(UNet* net, const float* params, float* grads, const float* dout, float* dx,
                  int B, uint64_t generation);

/* Optional per-op-kind timing, for benchmarks/bench_unet.py's profile. */
enum unet_prof_kind {
    UNET_PROF_CONV3_FWD, UNET_PROF_CONV3_BWD, UNET_PROF_CONV1_FWD, UNET_PROF_CONV1_BWD,
    UNET_PROF_NORM_FWD, UNET_PROF_NORM_BWD, UNET_PROF_ATTN_FWD, UNET_PROF_ATTN_BWD,
    UNET_PROF_TIME, UNET_PROF_OTHER, UNET_PROF_N
};
#define UNET_PROF_NAMES {"conv3x3 forward", "conv3x3 backward", "conv1x1 forward", \
    "conv1x1 backward", "groupnorm(+silu) forward", "groupnorm(+silu) backward", \
    "attention core forward", "attention core backward", "time embedding", \
    "other (copies, concat, upsample, bias)"}
void unet_set_profiling(UNet* net, int on);
void unet_reset_profile(UNet* net);
const double* unet_profile(UNet* net);   /* UNET_PROF_N seconds */

#endif /* DDPM_UNET_H */
