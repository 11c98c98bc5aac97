/*
 * unet_blocks.h - the U-Net's blocks as structs of named views, and struct
 * UNet (internal to unet_layout.c, which lays them out, unet.c, which runs
 * them, and unet_lanes.c, which runs batches as halves on twins).
 *
 * Every block kind has a struct of named parameter pointers (one instance for
 * the parameters, one of the same type for their gradients: w and g) and one
 * of named activation pointers (a, and their gradients da).  unet_layout.c
 * registers each field with the runtime (runtime.h) under diffusers' name;
 * binding points them into params/grads and the workspace, so the forward and
 * backward read b->w.conv1_w, b->da.act1, never an index.  Fields named x
 * (and the skip/emb links) view an earlier block's output: a block's input.
 *
 * Legend: B batch, C input and OC output channels of a block, H, W its input
 * size, HW = H*W, G norm groups, NH attention heads, TE time-embedding width
 * (4 * C0), C0 = block_out[0], Cin/Cout image channels, S sample size.
 * Activations are channel-major (C, B, H, W); the time embedding's are
 * row-major (B, features).
 */
#ifndef DDPM_UNET_BLOCKS_H
#define DDPM_UNET_BLOCKS_H

#include "nets/unet.h"
#include "nets/runtime.h"
#include "nets/unet_lanes.h"   /* UNET_LANES */

/* ---- ResnetBlock2D: C in, OC out channels ---- */
typedef struct {
    float* norm1_w;           /* (C,) */
    float* norm1_b;           /* (C,) */
    float* conv1_w;           /* (OC, C, 3, 3) */
    float* conv1_b;           /* (OC,) */
    float* time_emb_proj_w;   /* (OC, TE) */
    float* time_emb_proj_b;   /* (OC,) */
    float* norm2_w;           /* (OC,) */
    float* norm2_b;           /* (OC,) */
    float* conv2_w;           /* (OC, OC, 3, 3) */
    float* conv2_b;           /* (OC,) */
    float* conv_shortcut_w;   /* (OC, C, 1, 1), NULL when C == OC */
    float* conv_shortcut_b;   /* (OC,), NULL when C == OC */
} ResnetParams;

typedef struct {
    float* x;                 /* (C, B, H, W) input (a link) */
    float* emb;               /* (B, TE) silu(time embedding), every block's (a link) */
    float* act1;              /* (C, B, H, W) silu(norm1(x)), written by a forward that keeps
                                 its activations (an inference forward's conv1 reads x
                                 through norm1_a, norm1_k instead) */
    float* norm1_a;           /* (C, B) norm1 + SiLU as coefficients (groupnorm.h) */
    float* norm1_k;           /* (C, B) */
    float* conv1;             /* (OC, B, H, W) conv1(act1) + tproj */
    float* act2;              /* (OC, B, H, W) silu(norm2(conv1)), as act1 */
    float* norm2_a;           /* (OC, B) */
    float* norm2_k;           /* (OC, B) */
    float* tproj;             /* (B, OC) time_emb_proj(emb) */
    float* mean1;             /* (B, G) norm1's statistics */
    float* rstd1;             /* (B, G) */
    float* mean2;             /* (B, G) norm2's statistics */
    float* rstd2;             /* (B, G) */
    float* out;               /* (OC, B, H, W) shortcut(x) + conv2(act2) */
} ResnetActs;

typedef struct {
    int C, OC, H, W;
    ResnetParams w, g;        /* parameters and their gradients */
    ResnetActs a, da;         /* activations and their gradients */
    const float* conv1_u;     /* conv1's prepared weights (rt_prep), or NULL */
    const float* conv2_u;     /* conv2's */
} ResnetBlock;

/* ---- Attention (one group norm, q/k/v, NH heads, to_out, residual): C channels ---- */
typedef struct {
    float* group_norm_w;      /* (C,) */
    float* group_norm_b;      /* (C,) */
    float* qkv_w;             /* (3C, C) to_q, to_k, to_v weights back to back: one GEMM */
    float* qkv_b;             /* (3C,) to_q, to_k, to_v biases back to back */
    float* to_out_w;          /* (C, C) to_out.0 */
    float* to_out_b;          /* (C,) */
} AttnParams;

typedef struct {
    float* x;                 /* (C, B, H, W) input (a link) */
    float* hn;                /* (C, B, H, W) group_norm(x) */
    float* qkv;               /* (3C, B, H, W) q, k, v */
    float* o;                 /* (C, B, H, W) the heads' output, before to_out */
    float* att;               /* (B, NH, HW, HW) softmax probabilities; the gradient
                                 slot is the backward's scratch */
    float* mean;              /* (B, G) */
    float* rstd;              /* (B, G) */
    float* out;               /* (C, B, H, W) x + to_out(o) */
} AttnActs;

typedef struct {
    int C, H, W, NH;
    AttnParams w, g;
    AttnActs a, da;
} AttnBlock;

/* ---- 3x3 convolutions: conv_in, downsamplers (stride 2), upsamplers ---- */
typedef struct {
    float* weight;            /* (OC, C, 3, 3) */
    float* bias;              /* (OC,) */
} ConvParams;

typedef struct {
    float* x;                 /* (C, B, H, W) input (a link) */
    float* out;               /* (OC, B, H/S, W/S) */
} ConvActs;

typedef struct {              /* conv_in (S = 1) or a downsampler (S = 2) */
    int C, OC, H, W, S;
    ConvParams w, g;
    ConvActs a, da;
} ConvLayer;

typedef struct {
    float* x;                 /* (C, B, H, W) input (a link) */
    float* up;                /* (C, B, 2H, 2W) nearest-neighbour 2x of x */
    float* out;               /* (C, B, 2H, 2W) conv(up) */
} UpsampleActs;

typedef struct {              /* Upsample2D: 2x nearest, then a 3x3 conv, C channels */
    int C, H, W;
    ConvParams w, g;
    UpsampleActs a, da;
    const float* u;           /* the conv's prepared weights (rt_prep), or NULL */
} Upsampler;

/* ---- the up path's skip concatenation: h (C channels) then skip (CS) ---- */
typedef struct {
    float* h;                 /* (C, B, H, W) the up path so far (a link) */
    float* skip;              /* (CS, B, H, W) the down path's output (a link) */
    float* out;               /* (C + CS, B, H, W) [h; skip] */
} ConcatActs;

typedef struct {
    int C, CS, H, W;
    ConcatActs a, da;
} SkipConcat;

/* ---- the time embedding: t -> sinusoid -> linear_1 -> SiLU -> linear_2 ---- */
typedef struct {
    float* linear_1_w;        /* (TE, C0) */
    float* linear_1_b;        /* (TE,) */
    float* linear_2_w;        /* (TE, TE) */
    float* linear_2_b;        /* (TE,) */
    float* class_embedding_w; /* (K, TE) class-conditional networks, else NULL */
} TimeParams;

typedef struct {
    float* proj;              /* (B, C0) sinusoidal embedding of t (time_proj) */
    float* h;                 /* (B, TE) linear_1(proj) */
    float* h_act;             /* (B, TE) silu(h) */
    float* emb;               /* (B, TE) linear_2(h_act) (+ class_embedding[label]) */
    float* emb_act;           /* (B, TE) silu(emb): what every ResNet block projects */
} TimeActs;

typedef struct {
    int C0, TE, K;            /* K classes (0: unconditional) */
    TimeParams w, g;
    TimeActs a, da;
} TimeEmbedding;

/* ---- the output: conv_norm_out + SiLU, conv_out: C in, OC = Cout out ---- */
typedef struct {
    float* conv_norm_out_w;   /* (C,) */
    float* conv_norm_out_b;   /* (C,) */
    float* conv_out_w;        /* (OC, C, 3, 3) */
    float* conv_out_b;        /* (OC,) */
} OutParams;

typedef struct {
    float* x;                 /* (C, B, S, S) the up path's output (a link) */
    float* act;               /* (C, B, S, S) silu(conv_norm_out(x)), as ResnetActs.act1 */
    float* norm_a;            /* (C, B) conv_norm_out + SiLU as coefficients */
    float* norm_k;            /* (C, B) */
    float* mean;              /* (B, G) */
    float* rstd;              /* (B, G) */
    float* out;               /* (OC, B, S, S) conv_out(act): the network's output */
} OutActs;

typedef struct {
    int C, OC, H, W;
    OutParams w, g;
    OutActs a, da;
    const float* conv_out_u;  /* conv_out's prepared weights (rt_prep), or NULL */
} OutLayer;

/* ---- diffusers' blocks ---- */
typedef struct {              /* DownBlock2D / AttnDownBlock2D */
    int layers, has_attn, has_downsampler;
    ResnetBlock resnets[UNET_MAX_LAYERS];
    AttnBlock attentions[UNET_MAX_LAYERS];
    ConvLayer downsampler;    /* all levels but the last */
} DownBlock;

typedef struct {              /* UNetMidBlock2D */
    int has_attn;
    ResnetBlock resnets[2];
    AttnBlock attention;
} MidBlock;

typedef struct {              /* UpBlock2D / AttnUpBlock2D: layers_per_block + 1 layers */
    int layers, has_attn, has_upsampler;
    SkipConcat cats[UNET_MAX_LAYERS + 1];
    ResnetBlock resnets[UNET_MAX_LAYERS + 1];
    AttnBlock attentions[UNET_MAX_LAYERS + 1];
    Upsampler upsampler;      /* all levels but the last */
} UpBlock;

struct UNet {
    UNetConfig cfg;
    NetRuntime rt;            /* size table, workspace, gradient bookkeeping, profile */
    float* x;                 /* (Cin, B, S, S) the input, channel-major */
    float* dx;                /* its gradient */
    int64_t* labels;          /* (B,) the last forward's class labels (conditional only) */
    int labels_cap;
    int keep;                 /* this forward keeps what unet_backward reads (unet_forward) */
    TimeEmbedding time;
    ConvLayer conv_in;
    DownBlock down[UNET_MAX_LEVELS];
    MidBlock mid;
    UpBlock up[UNET_MAX_LEVELS];   /* deepest first, as diffusers numbers them */
    OutLayer out;
    struct UNet* lanes[UNET_LANES];   /* twins for unet_lanes.c, built on first use, or NULL */
    float* lane_grads;        /* (P,) twin 1's half of a split backward's gradient, or NULL */
    float* prep;              /* (rt.prep_floats) the denoiser's prepared weights, or NULL */
    uint64_t prep_key;        /* the unet_infer key they were prepared for */
};

#endif /* DDPM_UNET_BLOCKS_H */
