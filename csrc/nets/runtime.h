/*
 * runtime.h - what the networks (unet, classifier) share: named views into one
 * parameter buffer, a workspace of named activations with gradient twins, the
 * first-writer bookkeeping of those gradients, and per-op-kind profiling.
 *
 * A network is a set of blocks, each holding structs of NAMED float pointers
 * (llm.c's ParameterTensors): one struct for its parameters and one of the
 * same type for their gradients, one for its activations and one for theirs.
 * At creation the network registers every field with the runtime:
 *
 *   rt_param  appends a tensor to the size table (its diffusers'/PyTorch name,
 *             shape and offset: the layout Python and saved files rely on) and
 *             records the addresses of the parameter and gradient fields;
 *   rt_act    gives an activation a new slot of the workspace (a size per
 *             image) and records its value and gradient fields; rt_act_kept
 *             does so for a slot only a forward kept for a backward writes
 *             (a lean workspace, for inference, leaves it out);
 *   rt_link   points a block's input fields at an earlier block's output slot;
 *   rt_alias  places a slot inside another in a lean workspace;
 *   rt_need_conv / rt_need_norm / rt_need_attention record the scratch a
 *             layer will want;
 *   rt_prep   records a convolution whose transformed weights a caller may
 *             prepare once for many forwards (rt_prep_build, rt_bind_prep).
 *
 * Binding then writes the pointers: rt_bind_params(params, grads) at the start
 * of each forward and backward, rt_bind_acts(B) once the workspace holds B
 * images (the slot at per-image offset off sits at acts + off * B, and its
 * gradient at dacts + off * B).  After that a layer reads b->w.conv1_w and
 * b->da.act1, never an index.
 *
 * Activation gradients: a backward never zeroes dacts as a whole (a pass over
 * ~1 GB for the U-Net at B = 128).  rt_grad_begin marks every slot unwritten;
 * the first writer of a slot overwrites it (rt_grad_acc answers 0: its layer's
 * accumulate flag), later writers add (1) -- the same numbers as zeroing first
 * and adding.  rt_grad_ready zeroes a slot nobody has written yet, for
 * writers that can only add and for every read of a gradient.
 *
 * Legend: B batch, C channels, H, W height/width, HW = H*W, OC output
 * channels, K kernel size, S stride, G groups.
 */
#ifndef DDPM_NETS_RUNTIME_H
#define DDPM_NETS_RUNTIME_H

#include <stddef.h>
#include "core/common.h"   /* ParamTensor */

#define RT_PROF_KINDS 16

/* A recorded pair of fields and where their tensor lives. */
typedef struct {
    float** value;   /* the field viewing the tensor (params or acts), or NULL */
    float** grad;    /* the same field of the gradient struct, or NULL */
    size_t offset;   /* floats into params/grads; per image into acts/dacts */
    int slot;        /* the activation slot viewed (index into slots); -1 for parameters */
} RtView;

#define RT_KEPT ((size_t)-1)   /* RtSlot.lean of a slot a lean workspace leaves out */

/* One activation tensor of the workspace. */
typedef struct {
    size_t off, len;           /* per image, in floats: at acts + off * B, len * B floats */
    int fresh;                 /* during a backward: 1 while its gradient is unwritten */
    int kept;                  /* written only by a forward kept for a backward */
    int parent;                /* in a lean workspace: part of slot parent (-1: its own) */
    size_t sub;                /*   at sub floats per image into it */
    size_t lean;               /* per image into a lean workspace's acts, or RT_KEPT */
    int born, last;            /* the blocks (rt_block) that register it and read it last */
} RtSlot;

/* A layer shape the workspace's scratch must serve (see rt_need_*). */
typedef struct {
    int kind;                  /* RT_NEED_NORM, RT_NEED_CONV or RT_NEED_ATTN */
    int C, H, W;               /* input (C, B, H, W); a groupnorm's is (C, B, H*W, 1);
                                  an attention's: C heads over H positions */
    int OC, K, S;              /* conv2d: output channels, kernel size, stride */
    int G;                     /* groupnorm: groups */
} RtNeed;

enum { RT_NEED_NORM = 0, RT_NEED_CONV = 1, RT_NEED_ATTN = 2 };

/* A convolution's prepared weights (conv2d_weights): the field its layer
 * reads them through, the parameter field they come from, its shape, and
 * where they lie in a prepared buffer. */
typedef struct {
    const float** u;           /* the layer's field: NULL, or the prepared weights */
    float** w;                 /* the weight's parameter field */
    int C, H, W, OC, K, S;
    size_t off;                /* floats into the buffer */
} RtPrep;

/* Workspace policy: RT_EXACT reallocates when the batch changes (the U-Net:
 * training and sampling batches differ a lot); RT_GROW keeps the largest
 * batch seen (the classifier: features in chunks of the same size). */
enum { RT_EXACT = 0, RT_GROW = 1 };

typedef struct {
    /* the parameter size table, in buffer order, and the fields viewing it */
    ParamTensor* tensors;      /* (ntensors,) */
    int ntensors, tensors_cap;
    size_t nparams;            /* floats in params (and grads, m, v) */
    RtView* pviews;            /* (npviews,) */
    int npviews, pviews_cap;
    /* activation slots, in increasing offset order, and the fields viewing them */
    RtSlot* slots;             /* (nslots,) */
    int nslots, slots_cap;
    RtView* aviews;            /* (naviews,) slots and links */
    int naviews, aviews_cap;
    size_t acts_floats;        /* per image: the slots' len, summed */
    size_t lean_floats;        /* per image: a lean workspace's (lean_layout), 0 before */
    int block;                 /* the block being registered (rt_block) */
    int plan_from;             /* the first block whose slots a lean workspace may share */
    RtNeed* needs;             /* (nneeds,) layer shapes that need scratch */
    int nneeds, needs_cap;
    RtPrep* preps;             /* (npreps,) convolutions whose weights can be prepared */
    int npreps, preps_cap;
    size_t prep_floats;        /* a prepared buffer's floats */
    int status;                /* registration failure: DDPM_ERR_NOMEM, or DDPM_ERR_VALUE
                                  for a link to an unregistered field; else 0 */
    /* the workspace */
    int policy;                /* RT_EXACT or RT_GROW */
    int lean;                  /* 1: acts holds only the slots an inference forward writes
                                  (kept ones unbound, no dacts); see rt_set_lean */
    int B;                     /* batch the activation views are bound to (0: none) */
    int cap;                   /* images acts (and dacts) hold */
    float* acts;               /* (acts_floats * cap) */
    float* dacts;              /* (acts_floats * cap), NULL until a backward asks */
    float* col;                /* conv2d scratch (col_floats) */
    float* scratch;            /* groupnorm backward scratch (scratch_floats) */
    size_t col_floats, scratch_floats;
    int have_forward;          /* acts hold a forward pass at batch B */
    uint64_t generation;       /* number of the forward acts hold (counts every forward) */
    /* profiling */
    int profiling;
    double prof[RT_PROF_KINDS];   /* seconds per op kind */
} NetRuntime;

/* ---- layout (at network creation) ---- */

void rt_init(NetRuntime* rt, int policy);
void rt_free(NetRuntime* rt);

/* Appends tensor prefix+suffix of shape (d0, .., d[ndim-1]) to the table and
 * records the fields *w, *g that view it (either may be NULL: a tensor read
 * through an earlier field, e.g. to_k right after to_q). */
void rt_param(NetRuntime* rt, float** w, float** g, const char* prefix, const char* suffix,
              int ndim, int d0, int d1, int d2, int d3);
/* Shapes for rt_param's (ndim, d0, d1, d2, d3). */
#define RT_DIMS1(a) 1, (a), 0, 0, 0
#define RT_DIMS2(a, b) 2, (a), (b), 0, 0
#define RT_DIMS4(a, b, c, d) 4, (a), (b), (c), (d)

/* rt_param for field f of block b (a struct with parameters w and gradients g). */
#define RT_PARAM(rt, b, f, prefix, suffix, dims) \
    rt_param((rt), &(b)->w.f, &(b)->g.f, (prefix), (suffix), dims)

/* A new activation slot of per_image floats, viewed by *a and its gradient by *d. */
void rt_act(NetRuntime* rt, float** a, float** d, size_t per_image);
/* rt_act for a slot that only a forward kept for a backward writes (a
 * normalised activation the backward reads, attention probabilities). */
void rt_act_kept(NetRuntime* rt, float** a, float** d, size_t per_image);
/* In a lean workspace, the slot the field child views lies inside the one
 * parent views, sub floats per image in (a channel range of it: a skip
 * concatenation's part, written there by its producer so that nothing is
 * copied).  A full workspace keeps them apart. */
void rt_alias(NetRuntime* rt, float** child, float** parent, size_t sub);
/* Starts the next block: the slots registered from here on are its own, the
 * links its inputs.  A lean workspace gives a slot's floats to a later
 * block's slots once the last block that reads it is done: the forward runs
 * the blocks in the order they are registered, from the one rt_plan_begin
 * names on; the slots of the blocks before it are never shared. */
void rt_block(NetRuntime* rt);
void rt_plan_begin(NetRuntime* rt);
/* *a, *d view the slot that the field src (registered before) views. */
void rt_link(NetRuntime* rt, float** a, float** d, float** src);

/* rt_act / rt_link for field f of block b (activations a and gradients da). */
#define RT_ACT(rt, b, f, per_image) rt_act((rt), &(b)->a.f, &(b)->da.f, (size_t)(per_image))
#define RT_ACT_KEPT(rt, b, f, per_image) \
    rt_act_kept((rt), &(b)->a.f, &(b)->da.f, (size_t)(per_image))
#define RT_LINK(rt, b, f, src) rt_link((rt), &(b)->a.f, &(b)->da.f, (src))

/* The scratch a conv2d over (C, B, H, W) -> OC (K x K, stride S) and a
 * groupnorm over (C, B, HW) with G groups will need, for any B. */
void rt_need_conv(NetRuntime* rt, int C, int H, int W, int OC, int K, int S);
void rt_need_norm(NetRuntime* rt, int C, int HW, int G);
/* The scratch an attention forward without keep borrows from the conv's
 * (its probabilities, attention.h) over (B, NH heads, HW positions). */
void rt_need_attention(NetRuntime* rt, int NH, int HW);
/* A convolution (C, H, W) -> OC (K x K, stride S) of weight field *w whose
 * layer reads prepared weights through *u (NULL: none, it transforms them
 * itself); only those that transform any take room (conv2d_weights_floats). */
void rt_prep(NetRuntime* rt, const float** u, float** w, int C, int H, int W, int OC, int K,
             int S);
#define RT_PREP(rt, b, uf, wf, C, H, W, OC, K, S) \
    rt_prep((rt), &(b)->uf, &(b)->w.wf, (C), (H), (W), (OC), (K), (S))

/* ---- the workspace ---- */

/* Makes the workspace hold batch B (dacts too when for_training), by the
 * policy; reallocating the activations drops the last forward.  Does not
 * bind.  DDPM_ERR_VALUE for B < 1 or for_training in a lean workspace,
 * DDPM_ERR_NOMEM. */
int rt_reserve(NetRuntime* rt, int B, int for_training);
/* Frees the workspace (grads_only: just the activation gradients, dacts); the
 * next forward or backward allocates again.  For a network whose memory
 * another mode of use held (unet_lanes.c's twins). */
void rt_release(NetRuntime* rt, int grads_only);
/* lean 1: the workspace holds only what a forward that is not kept writes
 * (the kept slots' fields are bound to NULL, no backward can run), with the
 * slots rt_alias placed inside others, and a slot's floats given to later
 * blocks' once it is no longer read (rt_block): an inference network's.  So
 * each block mostly writes where blocks just before it wrote, floats still
 * in the cache (a 32 -> 32 channel 28x28 3x3 layer of 32 images ran 3.3 ms
 * writing to the same output each time, 4.2 ms rotating over 40 outputs).
 * A change of mode frees the workspace. */
void rt_set_lean(NetRuntime* rt, int lean);
/* Points every activation field (and gradient field, once dacts exist) at
 * batch B; B <= rt->cap. */
void rt_bind_acts(NetRuntime* rt, int B);
/* Points every parameter field into params and every gradient field into
 * grads (when grads != NULL).  The forward only reads through them. */
void rt_bind_params(NetRuntime* rt, const float* params, float* grads);
/* buf (prep_floats) = every rt_prep convolution's prepared weights, from the
 * bound parameters. */
void rt_prep_build(NetRuntime* rt, float* buf);
/* Points every rt_prep field at its weights in buf (built by a network of
 * the same layout), or at NULL. */
void rt_bind_prep(NetRuntime* rt, const float* buf);

/* ---- activation gradients: first writer overwrites ---- */

/* Starts a backward: every gradient slot unwritten. */
void rt_grad_begin(NetRuntime* rt);
/* The accumulate flag for a writer of gradient d (a bound gradient field):
 * 0 for the first writer in this backward (it overwrites), 1 after. */
int rt_grad_acc(NetRuntime* rt, const float* d);
/* d, zeroed first when nothing has written its slot in this backward. */
float* rt_grad_ready(NetRuntime* rt, float* d);

/* ---- profiling ---- */

/* Runs `call` (a statement), charging its time to kind k when profiling. */
#define PROF(rt, k, call)                      \
    do {                                       \
        double prof_t0_ = rt_prof_start(rt);   \
        call;                                  \
        rt_prof_stop((rt), (k), prof_t0_);     \
    } while (0)
double rt_prof_start(const NetRuntime* rt);
void rt_prof_stop(NetRuntime* rt, int kind, double t0);

#endif /* DDPM_NETS_RUNTIME_H */
