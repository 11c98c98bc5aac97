/*
 * classifier.h - a small image classifier built from the core's layers, for
 * the FID_fm metric and class histograms of generated Fashion-MNIST (see
 * ddpm/metrics.py): stages of [conv3x3 -> GroupNorm+SiLU] x depth, a 2x2
 * average pool between stages, global average pooling to the penultimate
 * features, and one linear layer to the logits.
 *
 *   x (B, Cin, S, S) -> stage 0 -> pool2 -> stage 1 -> ... -> stage L-1
 *     -> global average pool = features (B, D), D = widths[L-1]
 *     -> linear = logits (B, K)
 *
 * As in unet.h: parameters and gradients are each ONE flat float32 buffer
 * owned by NumPy, laid out by a table of named tensors (PyTorch layouts:
 * conv (OC, C, 3, 3), linear (K, D)); activations live in a workspace that
 * grows to the largest batch seen and is then reused (no allocation per
 * call).  Images at the boundary are NCHW, channel-major inside.
 *
 * Legend: B batch, Cin image channels, S image size, L stages, D feature
 * width, K classes, P parameters.
 */
#ifndef DDPM_CLASSIFIER_H
#define DDPM_CLASSIFIER_H

#include <stddef.h>
#include "core/common.h"   /* ParamTensor */
#include <stdint.h>
#include "core/optim.h"

#define CLS_MAX_STAGES 6
#define CLS_MAX_DEPTH 4
#define CLS_NAME_LEN 32

typedef struct {
    int in_channels;                 /* Cin */
    int image_size;                  /* S (H = W = S) */
    int num_stages;                  /* L */
    int widths[CLS_MAX_STAGES];      /* conv channels of each stage */
    int depth[CLS_MAX_STAGES];       /* conv3x3 + GN + SiLU layers per stage */
    int groups;                      /* GroupNorm groups (divides every width) */
    float norm_eps;
    int num_classes;                 /* K */
    int max_pool;                    /* 1: 2x2 max pooling between stages, 0: average */
} ClassifierConfig;


typedef struct {
    AdamConfig adam;                 /* lr is this step's learning rate */
    long step;                       /* 1-based Adam step number */
    double grad_clip;                /* > 0: clip the global gradient norm */
} ClassifierTrainConfig;

typedef struct Classifier Classifier;

/* DDPM_ERR_VALUE (with *why a static message) for unsupported configs. */
int classifier_create(Classifier** out, const ClassifierConfig* cfg, const char** why);
void classifier_free(Classifier* net);

size_t classifier_num_parameters(const Classifier* net);
int classifier_num_tensors(const Classifier* net);
const ParamTensor* classifier_tensor(const Classifier* net, int i);
const ClassifierConfig* classifier_config(const Classifier* net);
int classifier_feature_dim(const Classifier* net);     /* D */
double classifier_flops_per_image(const Classifier* net);

/* Grows the workspace to hold batch B (a no-op for B <= the largest so far). */
int classifier_reserve(Classifier* net, int B, int for_training);

/* logits (B, K) and/or features (B, D) (either may be NULL) of x (B, Cin, S, S);
 * keeps the activations for classifier_backward.  DDPM_ERR_NONFINITE for
 * NaN/Inf in x; DDPM_ERR_NOMEM. */
int classifier_forward(Classifier* net, const float* params, const float* x, float* logits,
                       float* features, int B);

/* The number of the last forward (each forward starts a new one). */
uint64_t classifier_generation(const Classifier* net);

/* After classifier_forward number `generation` on a batch of B: grads (P,)
 * += dL/dparams and dx (B, Cin, S, S) = dL/dx when dx != NULL, for dlogits
 * (B, K) = dL/dlogits.  DDPM_ERR_STALE when another forward ran since,
 * DDPM_ERR_VALUE when that forward was not on B images. */
int classifier_backward(Classifier* net, const float* params, float* grads,
                        const float* dlogits, float* dx, int B, uint64_t generation);

/* One training step: logits, mean softmax cross-entropy against labels (B,)
 * in 0..K-1, grads (zeroed, then filled), optional clipping, Adam(W) on
 * params/m/v.  *loss, *correct (argmax hits), *grad_norm (before clipping).
 * On a NaN/Inf loss or gradient returns DDPM_ERR_NONFINITE with params, m, v
 * untouched (*loss stays NaN only when x itself holds NaN/Inf);
 * DDPM_ERR_VALUE for a label out of range. */
int classifier_train_step(Classifier* net, float* params, float* grads, float* m, float* v,
                          const float* x, const int64_t* labels, int B,
                          const ClassifierTrainConfig* cfg, double* loss, int* correct,
                          double* grad_norm);

#endif /* DDPM_CLASSIFIER_H */
