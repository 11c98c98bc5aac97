/*
 * guidance.h - the model call of a sampler step, with classifier-free
 * guidance (Ho & Salimans 2022) for class-conditional models.
 *
 * With labels c and the reserved null label (the class "none", which the
 * training step substitutes for c with probability p_uncond), the guided
 * output at scale w is diffusers' combination of the raw model outputs
 *
 *   out = out(x, t, null) + w (out(x, t, c) - out(x, t, null))     (float32)
 *
 * evaluated as ONE denoiser call on a batch of 2N (the N images with their
 * labels, then the same N with the null label).  w = 1 is the conditional
 * model alone and w = 0 the unconditional one: both run one N batch, so
 * they give exactly the bits of plain conditional / null-label sampling.
 * An optional rescale phi (Lin et al. 2023, diffusers' rescale_noise_cfg)
 * blends in out * std(out_c) / std(out) per image.  Guidance acts on the raw
 * output, before the eps / x0 / v conversion and any clipping.
 *
 * A guidance interval (Kynkaanniemi et al. 2024, "Applying guidance in a
 * limited interval") guides only the steps whose lesson time t (1..T) lies in
 * [t_lo, t_hi]; the other steps use the conditional model alone (w = 1, one N
 * batch).  t_lo = t_hi = 0 guides every step.
 *
 * Legend: N images, D values per image.
 */
#ifndef DDPM_GUIDANCE_H
#define DDPM_GUIDANCE_H

#include <stddef.h>
#include <stdint.h>

/* out (N, D) = the network output for x (N, D) at network time t (N,) with
 * class labels (N,) (NULL for an unconditional network). */
typedef int (*sample_denoise_fn)(void* ctx, float* out, const float* x, const float* t,
                                 const int64_t* labels, int N);

typedef struct {
    const int64_t* labels;   /* (N,) class of each image, or NULL: an unconditional model */
    int64_t null_label;      /* the label that means "no class" */
    double scale;            /* w; ignored without labels */
    double rescale;          /* phi in [0, 1]; 0 = off */
    int t_lo, t_hi;          /* guide only steps with t_lo <= t <= t_hi (lesson time); 0, 0: all */
} Guidance;

/* The guidance of the step at lesson time t: g itself inside its interval, else
 * the conditional model alone (scale 1, no rescale). */
Guidance guidance_at(const Guidance* g, int t);

/* Scratch the guided call needs: floats and int64 labels (0 when unguided). */
size_t guidance_scratch_floats(const Guidance* g, int N, size_t D);
size_t guidance_scratch_labels(const Guidance* g, int N);

/* out (N, D) = the (guided) model output.  scratch / lab as sized above (each
 * may be NULL when its size is 0); tnet (2N,) network times, the first N set
 * by the caller (the rest is filled here).  Returns the denoiser's status. */
int guided_denoise(const Guidance* g, float* out, const float* x, float* tnet, int N, size_t D,
                   float* scratch, int64_t* lab, sample_denoise_fn denoise, void* ctx);

#endif /* DDPM_GUIDANCE_H */
