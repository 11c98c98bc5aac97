/*
 * unet.c - the U-Net's forward and backward (unet.h), block by block over the
 * named views of unet_blocks.h, laid out by unet_layout.c.
 *
 * The forward follows UNet2DModel.forward:
 *
 *   t -> time_proj -> linear_1 -> SiLU -> linear_2 = emb;  emb_act = SiLU(emb)
 *   x -> conv_in -> [down: (resnet [, attn]) x layers, downsample]* -> mid
 *     -> [up: (concat skip, resnet [, attn]) x (layers+1), upsample]*
 *     -> GroupNorm + SiLU -> conv_out
 *
 * and the backward walks the same blocks in reverse.  Activation gradients
 * follow the runtime's first-writer rule (runtime.h): a tensor read by two
 * blocks (a skip, emb_act, a residual) gets its first writer's numbers
 * (accumulate flag 0, from rt_grad_acc), then the others add; reads and
 * add-only writers go through rt_grad_ready.  No pass zeroes dacts.
 * Parameter gradients only add.  Each layer call is timed by PROF into the
 * profile kinds of unet.h.
 *
 * Legend: as in unet_blocks.h (B batch, C in and OC out channels of a block,
 * H, W its input size, HW = H*W, G groups, NH heads, TE time-embedding width).
 */
#include "nets/unet_blocks.h"
#include "core/common.h"
#include "core/threads.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/linear.h"
#include "layers/timestep.h"
#include "layers/embedding.h"
#include "layers/attention.h"
#include "layers/resample.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(UNET_PROF_N <= RT_PROF_KINDS, "the runtime keeps the U-Net's profile kinds");

/* ------------------------------------------------------------ forward */

static void time_forward(UNet* n, TimeEmbedding* e, const float* t) {
    const int B = n->rt.B, C0 = e->C0, TE = e->TE;
    const TimeParams* w = &e->w;
    const TimeActs* a = &e->a;
    timestep_embedding_forward(a->proj, t, B, C0, 1, 0.0f, 10000.0f);
    linear_forward(a->h, a->proj, w->linear_1_w, w->linear_1_b, B, C0, TE);
    silu_forward(a->h_act, a->h, (size_t)B * TE);
    linear_forward(a->emb, a->h_act, w->linear_2_w, w->linear_2_b, B, TE, TE);
    if (e->K)   /* emb + class_embedding(labels), as UNet2DModel adds them */
        embedding_add_forward(a->emb, w->class_embedding_w, n->labels, B, TE);
    silu_forward(a->emb_act, a->emb, (size_t)B * TE);
}

/* out (OC, B, H, W) = conv3x3(silu(groupnorm(x (C, B, H, W)))) started from
 * add or add_bo (conv2d_forward_add), mean, rstd (B, G) saved.  A forward
 * that keeps its activations writes the norm's output to act for the
 * backward; an inference forward only forms its coefficients (ca, ck) and
 * the convolution reads x through them (conv2d_forward_norm): the same
 * bits, one pass over the activations fewer. */
static void norm_conv_forward(UNet* n, float* out, float* act, float* ca, float* ck,
                              float* mean, float* rstd, const float* x, const float* norm_w,
                              const float* norm_b, const float* conv_w, const float* conv_u,
                              const float* conv_b, const float* add, const float* add_bo, int C,
                              int H, int W, int OC) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, G = n->cfg.norm_groups;
    const float eps = n->cfg.norm_eps;
    if (n->keep) {
        PROF(rt, UNET_PROF_NORM_FWD,
             groupnorm_forward(act, mean, rstd, x, norm_w, norm_b, B, C, H * W, G, eps, 1));
        PROF(rt, UNET_PROF_CONV3_FWD,
             conv2d_forward_add(out, rt->col, act, conv_w, conv_b, add, add_bo, B, C, H, W, OC,
                                3, 1, conv_u));
    } else {
        const NormAct na = {ca, ck, 1};
        PROF(rt, UNET_PROF_NORM_FWD,
             groupnorm_coeffs(ca, ck, mean, rstd, x, norm_w, norm_b, B, C, H * W, G, eps));
        PROF(rt, UNET_PROF_CONV3_FWD,
             conv2d_forward_norm(out, rt->col, x, &na, conv_w, conv_b, add, add_bo, B, C, H, W,
                                 OC, conv_u));
    }
}

static void resnet_forward(UNet* n, ResnetBlock* r) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = r->C, OC = r->OC, H = r->H, W = r->W, TE = n->time.TE;
    const ResnetParams* w = &r->w;
    const ResnetActs* a = &r->a;
    PROF(rt, UNET_PROF_TIME,
         linear_forward(a->tproj, a->emb, w->time_emb_proj_w, w->time_emb_proj_b, B, TE, OC));
    /* conv1 = tproj (per sample and channel) + conv1(act1): the conv's output
     * transform starts from tproj, so conv1 is written once */
    norm_conv_forward(n, a->conv1, a->act1, a->norm1_a, a->norm1_k, a->mean1, a->rstd1, a->x,
                      w->norm1_w, w->norm1_b, w->conv1_w, r->conv1_u, w->conv1_b, NULL, a->tproj,
                      C, H, W, OC);
    /* out = shortcut(x) + conv2(act2): the residual is where conv2's output starts */
    const float* residual = a->x;
    if (w->conv_shortcut_w) {
        PROF(rt, UNET_PROF_CONV1_FWD,
             conv2d_forward(a->out, NULL, a->x, w->conv_shortcut_w, w->conv_shortcut_b, B, C, H,
                            W, OC, 1, 1, 0));
        residual = a->out;
    }
    norm_conv_forward(n, a->out, a->act2, a->norm2_a, a->norm2_k, a->mean2, a->rstd2, a->conv1,
                      w->norm2_w, w->norm2_b, w->conv2_w, r->conv2_u, w->conv2_b, residual, NULL,
                      OC, H, W, OC);
}

static void attn_forward(UNet* n, AttnBlock* b) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = b->C, H = b->H, W = b->W, HW = H * W;
    const AttnParams* w = &b->w;
    const AttnActs* a = &b->a;
    PROF(rt, UNET_PROF_NORM_FWD,
         groupnorm_forward(a->hn, a->mean, a->rstd, a->x, w->group_norm_w, w->group_norm_b, B, C,
                           HW, n->cfg.norm_groups, n->cfg.norm_eps, 0));
    PROF(rt, UNET_PROF_CONV1_FWD,
         conv2d_forward(a->qkv, NULL, a->hn, w->qkv_w, w->qkv_b, B, C, H, W, 3 * C, 1, 1, 0));
    PROF(rt, UNET_PROF_ATTN_FWD,
         attention_forward(a->o, n->keep ? a->att : rt->col, a->qkv, B, C, HW, b->NH,
                           n->keep));
    /* out = (x + bias) + to_out(o): the residual is where the GEMM's output
     * starts (one pass, where a copy and then an accumulate took two) */
    PROF(rt, UNET_PROF_CONV1_FWD,
         conv2d_forward_add(a->out, NULL, a->o, w->to_out_w, w->to_out_b, a->x, NULL, B, C, H, W,
                            C, 1, 1, NULL));
}

/* conv_in or a downsampler */
static void conv_forward(UNet* n, ConvLayer* c) {
    NetRuntime* rt = &n->rt;
    PROF(rt, UNET_PROF_CONV3_FWD,
         conv2d_forward(c->a.out, rt->col, c->a.x, c->w.weight, c->w.bias, rt->B, c->C, c->H,
                        c->W, c->OC, 3, c->S, 0));
}

static void upsampler_forward(UNet* n, Upsampler* u) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = u->C;
    PROF(rt, UNET_PROF_OTHER, upsample_forward(u->a.up, u->a.x, C, B, u->H, u->W));
    PROF(rt, UNET_PROF_CONV3_FWD,
         conv2d_forward_add(u->a.out, rt->col, u->a.up, u->w.weight, u->w.bias, NULL, NULL, B,
                            C, 2 * u->H, 2 * u->W, C, 3, 1, u->u));
}

static void concat_forward_block(UNet* n, SkipConcat* s) {
    PROF(&n->rt, UNET_PROF_OTHER,
         concat_forward(s->a.out, s->a.h, s->a.skip, s->C, s->CS,
                        (size_t)n->rt.B * s->H * s->W));
}

static void out_forward(UNet* n, OutLayer* o) {
    const OutParams* w = &o->w;
    const OutActs* a = &o->a;
    norm_conv_forward(n, a->out, a->act, a->norm_a, a->norm_k, a->mean, a->rstd, a->x,
                      w->conv_norm_out_w, w->conv_norm_out_b, w->conv_out_w, o->conv_out_u,
                      w->conv_out_b, NULL, NULL, o->C, o->H, o->W, o->OC);
}

static void down_forward(UNet* n, DownBlock* d) {
    for (int j = 0; j < d->layers; j++) {
        resnet_forward(n, &d->resnets[j]);
        if (d->has_attn) attn_forward(n, &d->attentions[j]);
    }
    if (d->has_downsampler) conv_forward(n, &d->downsampler);
}

static void mid_forward(UNet* n, MidBlock* m) {
    resnet_forward(n, &m->resnets[0]);
    if (m->has_attn) attn_forward(n, &m->attention);
    resnet_forward(n, &m->resnets[1]);
}

static void up_forward(UNet* n, UpBlock* u) {
    for (int j = 0; j < u->layers; j++) {
        concat_forward_block(n, &u->cats[j]);
        resnet_forward(n, &u->resnets[j]);
        if (u->has_attn) attn_forward(n, &u->attentions[j]);
    }
    if (u->has_upsampler) upsampler_forward(n, &u->upsampler);
}

int unet_reserve(UNet* n, int B, int for_training) {
    return rt_reserve(&n->rt, B, for_training);
}

static int keep_labels(UNet* n, const int64_t* labels, int B) {
    if (!n->time.K) return labels ? DDPM_ERR_VALUE : DDPM_OK;
    if (!labels) return DDPM_ERR_VALUE;
    if (n->labels_cap < B) {      /* sized with the workspace: only when B grows */
        int64_t* p = realloc(n->labels, sizeof(int64_t) * (size_t)B);
        if (!p) return DDPM_ERR_NOMEM;
        n->labels = p;
        n->labels_cap = B;
    }
    memcpy(n->labels, labels, sizeof(int64_t) * (size_t)B);
    return DDPM_OK;
}

uint64_t unet_generation(const UNet* n) { return n->rt.generation; }

int unet_forward(UNet* n, const float* params, const float* x, const float* t,
                 const int64_t* labels, float* out, int B, int keep) {
    const UNetConfig* cfg = &n->cfg;
    NetRuntime* rt = &n->rt;
    const size_t HW = (size_t)cfg->sample_size * cfg->sample_size;
    if (!ddpm_all_finite(x, (size_t)B * cfg->in_channels * HW) || !ddpm_all_finite(t, (size_t)B))
        return DDPM_ERR_NONFINITE;
    if (keep && rt->lean) return DDPM_ERR_VALUE;   /* a lean workspace has no kept slots */
    int st = unet_reserve(n, B, 0);
    if (!st) st = keep_labels(n, labels, B);
    if (st) return st;
    rt->have_forward = 0;
    rt->generation++;             /* whatever the workspace held is gone */
    n->keep = keep;
    rt_bind_acts(rt, B);
    rt_bind_params(rt, params, NULL);
    PROF(rt, UNET_PROF_TIME, time_forward(n, &n->time, t));
    PROF(rt, UNET_PROF_OTHER, nchw_to_cbhw(n->x, x, B, cfg->in_channels, HW));
    conv_forward(n, &n->conv_in);
    for (int i = 0; i < cfg->num_levels; i++) down_forward(n, &n->down[i]);
    mid_forward(n, &n->mid);
    for (int i = 0; i < cfg->num_levels; i++) up_forward(n, &n->up[i]);
    out_forward(n, &n->out);
    PROF(rt, UNET_PROF_OTHER, cbhw_to_nchw(out, n->out.a.out, B, cfg->out_channels, HW));
    rt->have_forward = keep;
    return DDPM_OK;
}

/* ----------------------------------------------------------- backward */

/* The short names of the runtime's first-writer calls (runtime.h). */
#define ACC(d) rt_grad_acc(rt, (d))
#define READY(d) rt_grad_ready(rt, (d))

static void time_backward(UNet* n, TimeEmbedding* e) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C0 = e->C0, TE = e->TE;
    const TimeParams* w = &e->w;
    const TimeParams* g = &e->g;
    const TimeActs* a = &e->a;
    const TimeActs* da = &e->da;
    silu_backward(READY(da->emb), READY(da->emb_act), a->emb, (size_t)B * TE);
    linear_backward(READY(da->h_act), g->linear_2_w, g->linear_2_b, da->emb, a->h_act,
                    w->linear_2_w, B, TE, TE);
    silu_backward(READY(da->h), da->h_act, a->h, (size_t)B * TE);
    if (e->K)   /* the class rows: a scatter-add in a fixed order */
        embedding_add_backward(g->class_embedding_w, da->emb, n->labels, B, TE);
    /* t is not differentiable: no gradient for proj */
    linear_backward(NULL, g->linear_1_w, g->linear_1_b, da->h, a->proj, w->linear_1_w, B, C0, TE);
}

/* dtproj (B, OC) = (or += with acc) the sums over positions of dconv1
 * (OC, B, HW): the gradient of a per-sample, per-channel term added to every
 * position. */
static void tproj_backward(float* dtproj, const float* dconv1, int B, int OC, int HW, int acc) {
    int nt = ddpm_threads_for((size_t)OC * B * HW, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int c = 0; c < OC; c++)
        for (int b = 0; b < B; b++) {
            float s = (float)ddpm_sum(dconv1 + ((size_t)c * B + b) * HW, HW);
            float* d = dtproj + (size_t)b * OC + c;
            *d = acc ? *d + s : s;
        }
}

static void resnet_backward(UNet* n, ResnetBlock* r) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = r->C, OC = r->OC, H = r->H, W = r->W, HW = H * W;
    const int G = n->cfg.norm_groups, TE = n->time.TE;
    const ResnetParams* w = &r->w;
    const ResnetParams* g = &r->g;
    const ResnetActs* a = &r->a;
    const ResnetActs* da = &r->da;
    const float* dout = READY(da->out);
    PROF(rt, UNET_PROF_CONV3_BWD,
         conv2d_backward(da->act2, g->conv2_w, g->conv2_b, rt->col, dout, a->act2, w->conv2_w, B,
                         OC, H, W, OC, 3, 1, ACC(da->act2)));
    if (w->conv_shortcut_w) {
        PROF(rt, UNET_PROF_CONV1_BWD,
             conv2d_backward(da->x, g->conv_shortcut_w, g->conv_shortcut_b, rt->col, dout, a->x,
                             w->conv_shortcut_w, B, C, H, W, OC, 1, 1, ACC(da->x)));
    } else {
        PROF(rt, UNET_PROF_OTHER,
             (ACC(da->x) ? ddpm_add : ddpm_copy)(da->x, dout, (size_t)OC * B * HW));
    }
    PROF(rt, UNET_PROF_NORM_BWD,
         groupnorm_backward(da->conv1, g->norm2_w, g->norm2_b, rt->scratch, da->act2, a->conv1,
                            w->norm2_w, w->norm2_b, a->mean2, a->rstd2, B, OC, HW, G, 1,
                            ACC(da->conv1)));
    PROF(rt, UNET_PROF_OTHER, tproj_backward(da->tproj, da->conv1, B, OC, HW, ACC(da->tproj)));
    PROF(rt, UNET_PROF_CONV3_BWD,
         conv2d_backward(da->act1, g->conv1_w, g->conv1_b, rt->col, da->conv1, a->act1,
                         w->conv1_w, B, C, H, W, OC, 3, 1, ACC(da->act1)));
    PROF(rt, UNET_PROF_NORM_BWD,
         groupnorm_backward(da->x, g->norm1_w, g->norm1_b, rt->scratch, da->act1, a->x,
                            w->norm1_w, w->norm1_b, a->mean1, a->rstd1, B, C, HW, G, 1,
                            ACC(da->x)));
    PROF(rt, UNET_PROF_TIME,
         linear_backward(READY(da->emb), g->time_emb_proj_w, g->time_emb_proj_b, da->tproj,
                         a->emb, w->time_emb_proj_w, B, TE, OC));
}

static void attn_backward(UNet* n, AttnBlock* b) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = b->C, H = b->H, W = b->W, HW = H * W;
    const AttnParams* w = &b->w;
    const AttnParams* g = &b->g;
    const AttnActs* a = &b->a;
    const AttnActs* da = &b->da;
    const float* dout = READY(da->out);
    PROF(rt, UNET_PROF_OTHER,   /* the residual */
         (ACC(da->x) ? ddpm_add : ddpm_copy)(da->x, dout, (size_t)C * B * HW));
    PROF(rt, UNET_PROF_CONV1_BWD,
         conv2d_backward(da->o, g->to_out_w, g->to_out_b, rt->col, dout, a->o, w->to_out_w, B, C,
                         H, W, C, 1, 1, ACC(da->o)));
    /* da->att, the probabilities' gradient slot, is the backward's scratch */
    PROF(rt, UNET_PROF_ATTN_BWD,
         attention_backward(da->qkv, da->att, da->o, a->qkv, a->att, B, C, HW, b->NH,
                            ACC(da->qkv)));
    PROF(rt, UNET_PROF_CONV1_BWD,
         conv2d_backward(da->hn, g->qkv_w, g->qkv_b, rt->col, da->qkv, a->hn, w->qkv_w, B, C, H,
                         W, 3 * C, 1, 1, ACC(da->hn)));
    PROF(rt, UNET_PROF_NORM_BWD,
         groupnorm_backward(da->x, g->group_norm_w, g->group_norm_b, rt->scratch, da->hn, a->x,
                            w->group_norm_w, w->group_norm_b, a->mean, a->rstd, B, C, HW,
                            n->cfg.norm_groups, 0, ACC(da->x)));
}

/* conv_in (the input's gradient only when want_dx) or a downsampler */
static void conv_backward(UNet* n, ConvLayer* c, int want_dx) {
    NetRuntime* rt = &n->rt;
    PROF(rt, UNET_PROF_CONV3_BWD,
         conv2d_backward(want_dx ? c->da.x : NULL, c->g.weight, c->g.bias, rt->col,
                         READY(c->da.out), c->a.x, c->w.weight, rt->B, c->C, c->H, c->W, c->OC, 3,
                         c->S, want_dx ? ACC(c->da.x) : 1));
}

static void upsampler_backward(UNet* n, Upsampler* u) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, C = u->C;
    PROF(rt, UNET_PROF_CONV3_BWD,
         conv2d_backward(u->da.up, u->g.weight, u->g.bias, rt->col, READY(u->da.out), u->a.up,
                         u->w.weight, B, C, 2 * u->H, 2 * u->W, C, 3, 1, ACC(u->da.up)));
    PROF(rt, UNET_PROF_OTHER,
         upsample_backward(u->da.x, u->da.up, C, B, u->H, u->W, ACC(u->da.x)));
}

static void concat_backward_block(UNet* n, SkipConcat* s) {
    NetRuntime* rt = &n->rt;
    const float* dout = READY(s->da.out);
    const int acc_h = ACC(s->da.h), acc_skip = ACC(s->da.skip);
    PROF(rt, UNET_PROF_OTHER,
         concat_backward(s->da.h, s->da.skip, dout, s->C, s->CS, (size_t)rt->B * s->H * s->W,
                         acc_h, acc_skip));
}

static void out_backward(UNet* n, OutLayer* o) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, HW = o->H * o->W;
    const OutParams* w = &o->w;
    const OutParams* g = &o->g;
    const OutActs* a = &o->a;
    const OutActs* da = &o->da;
    PROF(rt, UNET_PROF_CONV3_BWD,
         conv2d_backward(da->act, g->conv_out_w, g->conv_out_b, rt->col, READY(da->out), a->act,
                         w->conv_out_w, B, o->C, o->H, o->W, o->OC, 3, 1, ACC(da->act)));
    PROF(rt, UNET_PROF_NORM_BWD,
         groupnorm_backward(da->x, g->conv_norm_out_w, g->conv_norm_out_b, rt->scratch, da->act,
                            a->x, w->conv_norm_out_w, w->conv_norm_out_b, a->mean, a->rstd, B,
                            o->C, HW, n->cfg.norm_groups, 1, ACC(da->x)));
}

static void down_backward(UNet* n, DownBlock* d) {
    if (d->has_downsampler) conv_backward(n, &d->downsampler, 1);
    for (int j = d->layers - 1; j >= 0; j--) {
        if (d->has_attn) attn_backward(n, &d->attentions[j]);
        resnet_backward(n, &d->resnets[j]);
    }
}

static void mid_backward(UNet* n, MidBlock* m) {
    resnet_backward(n, &m->resnets[1]);
    if (m->has_attn) attn_backward(n, &m->attention);
    resnet_backward(n, &m->resnets[0]);
}

static void up_backward(UNet* n, UpBlock* u) {
    if (u->has_upsampler) upsampler_backward(n, &u->upsampler);
    for (int j = u->layers - 1; j >= 0; j--) {
        if (u->has_attn) attn_backward(n, &u->attentions[j]);
        resnet_backward(n, &u->resnets[j]);
        concat_backward_block(n, &u->cats[j]);
    }
}

int unet_backward(UNet* n, const float* params, float* grads, const float* dout, float* dx,
                  int B, uint64_t generation) {
    const UNetConfig* cfg = &n->cfg;
    NetRuntime* rt = &n->rt;
    if (!rt->acts || !rt->have_forward || generation != rt->generation) return DDPM_ERR_STALE;
    if (B < 1 || B != rt->B) return DDPM_ERR_VALUE;   /* the forward's batch, no other */
    int st = unet_reserve(n, B, 1);
    if (st) return st;
    const size_t HW = (size_t)cfg->sample_size * cfg->sample_size;
    if (!ddpm_all_finite(dout, (size_t)B * cfg->out_channels * HW)) return DDPM_ERR_NONFINITE;
    rt_bind_acts(rt, B);   /* the gradient fields, now that dacts exist */
    rt_bind_params(rt, params, grads);
    rt_grad_begin(rt);
    PROF(rt, UNET_PROF_OTHER, nchw_to_cbhw(n->out.da.out, dout, B, cfg->out_channels, HW));
    ACC(n->out.da.out);   /* written whole: its first writer */
    out_backward(n, &n->out);
    for (int i = cfg->num_levels - 1; i >= 0; i--) up_backward(n, &n->up[i]);
    mid_backward(n, &n->mid);
    for (int i = cfg->num_levels - 1; i >= 0; i--) down_backward(n, &n->down[i]);
    conv_backward(n, &n->conv_in, dx != NULL);
    PROF(rt, UNET_PROF_TIME, time_backward(n, &n->time));
    if (dx) PROF(rt, UNET_PROF_OTHER, cbhw_to_nchw(dx, READY(n->dx), B, cfg->in_channels, HW));
    return DDPM_OK;
}

/* ---------------------------------------------------------- profiling */

void unet_set_profiling(UNet* n, int on) { n->rt.profiling = on; }
const double* unet_profile(UNet* n) { return n->rt.prof; }
void unet_reset_profile(UNet* n) { memset(n->rt.prof, 0, sizeof n->rt.prof); }
