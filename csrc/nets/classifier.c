/*
 * classifier.c - the classifier of classifier.h as named blocks over the
 * shared runtime (runtime.h): per conv layer a struct of named parameters and
 * one of named activations (each with its gradient twin), the pools and the
 * head likewise; classifier_create registers every field, the forward walks
 * the stages, the backward walks them in reverse.
 *
 *   x -> [pool2 (from stage 1 on), (conv3x3 -> GroupNorm + SiLU) x depth] x L
 *     -> global average pool = feat -> fc = logits (-> softmax = probs)
 *
 * Legend: B batch, C input and OC output channels of a layer, H, W its size,
 * HW = H*W, G groups, D feature width, K classes.  Activations are
 * channel-major (C, B, H, W) as in every layer file; feat, logits and probs
 * are row-major (B, D), (B, K).
 */
#include "nets/classifier.h"
#include "nets/runtime.h"
#include "core/common.h"
#include "layers/resample.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/linear.h"
#include "layers/pool.h"
#include "layers/softmax_ce.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {            /* conv3x3 -> GroupNorm -> SiLU, layer i: C in, OC out */
    float* conv_w;          /* (OC, C, 3, 3) conv{i}.weight */
    float* conv_b;          /* (OC,) conv{i}.bias */
    float* norm_w;          /* (OC,) norm{i}.weight */
    float* norm_b;          /* (OC,) norm{i}.bias */
} LayerParams;

typedef struct {
    float* x;               /* (C, B, H, W) input: the previous output (a link) */
    float* conv;            /* (OC, B, H, W) conv(x) */
    float* out;             /* (OC, B, H, W) silu(norm(conv)) */
    float* mean;            /* (B, G) */
    float* rstd;            /* (B, G) */
} LayerActs;

typedef struct {
    int C, OC, H, W;
    LayerParams w, g;       /* parameters and their gradients */
    LayerActs a, da;        /* activations and their gradients */
} Layer;

typedef struct {            /* 2x2 pooling (avg or max), stride 2 */
    float* x;               /* (C, B, H, W) the previous stage's output (a link) */
    float* out;             /* (C, B, H/2, W/2) */
} PoolActs;

typedef struct {
    int C, H, W;            /* input channels and size */
    PoolActs a, da;
} Pool;

typedef struct {
    float* fc_w;            /* (K, D) fc.weight */
    float* fc_b;            /* (K,) fc.bias */
} HeadParams;

typedef struct {
    float* x;               /* (D, B, H, W) the last layer's output (a link) */
    float* feat;            /* (B, D) mean of x over H, W: the features */
    float* logits;          /* (B, K) fc(feat) */
    float* probs;           /* (B, K) softmax(logits), for the training step */
} HeadActs;

typedef struct {
    int D, K, H, W;
    HeadParams w, g;
    HeadActs a, da;
} Head;

typedef struct {
    int depth;
    Pool pool;                      /* from stage 1 on */
    Layer layers[CLS_MAX_DEPTH];
} Stage;

struct Classifier {
    ClassifierConfig cfg;
    NetRuntime rt;
    float* x;                       /* (Cin, B, S, S) the input, channel-major */
    float* dx;                      /* its gradient */
    Stage stages[CLS_MAX_STAGES];
    Head head;
};

/* ---------------------------------------------------------------- layout */

/* Layer i from the activation field `in` (C, H, W) to OC channels; returns
 * its output field. */
static float** layer_layout(NetRuntime* rt, Layer* b, int i, float** in, int C, int OC, int H,
                            int W, int G) {
    char conv[CLS_NAME_LEN], norm[CLS_NAME_LEN];
    snprintf(conv, sizeof conv, "conv%d", i);
    snprintf(norm, sizeof norm, "norm%d", i);
    b->C = C; b->OC = OC; b->H = H; b->W = W;
    RT_PARAM(rt, b, conv_w, conv, ".weight", RT_DIMS4(OC, C, 3, 3));
    RT_PARAM(rt, b, conv_b, conv, ".bias", RT_DIMS1(OC));
    RT_PARAM(rt, b, norm_w, norm, ".weight", RT_DIMS1(OC));
    RT_PARAM(rt, b, norm_b, norm, ".bias", RT_DIMS1(OC));
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, conv, (size_t)OC * H * W);
    RT_ACT(rt, b, out, (size_t)OC * H * W);
    RT_ACT(rt, b, mean, G);
    RT_ACT(rt, b, rstd, G);
    rt_need_conv(rt, C, H, W, OC, 3, 1);
    rt_need_norm(rt, OC, H * W, G);
    return &b->a.out;
}

static float** pool_layout(NetRuntime* rt, Pool* b, float** in, int C, int H, int W) {
    b->C = C; b->H = H; b->W = W;
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, out, (size_t)C * (H / 2) * (W / 2));
    return &b->a.out;
}

static void head_layout(NetRuntime* rt, Head* b, float** in, int D, int K, int H, int W) {
    b->D = D; b->K = K; b->H = H; b->W = W;
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, feat, (size_t)D);
    RT_PARAM(rt, b, fc_w, "fc", ".weight", RT_DIMS2(K, D));
    RT_PARAM(rt, b, fc_b, "fc", ".bias", RT_DIMS1(K));
    RT_ACT(rt, b, logits, (size_t)K);
    RT_ACT(rt, b, probs, (size_t)K);
}

static const char* check_config(const ClassifierConfig* cfg) {
    const int L = cfg->num_stages;
    if (L < 1 || L > CLS_MAX_STAGES) return "widths: 1 to 6 stages are supported";
    if (cfg->in_channels < 1 || cfg->in_channels > 64) return "in_channels must be in 1..64";
    if (cfg->num_classes < 2 || cfg->num_classes > 100000)
        return "num_classes must be in 2..100000";
    if (cfg->max_pool != 0 && cfg->max_pool != 1) return "pool must be avg or max";
    if (cfg->groups < 1) return "groups must be >= 1";
    if (!(cfg->norm_eps > 0) || !isfinite(cfg->norm_eps)) return "norm_eps must be > 0";
    for (int s = 0; s < L; s++) {
        if (cfg->widths[s] < 1 || cfg->widths[s] > 4096 || cfg->widths[s] % cfg->groups)
            return "widths must be in 1..4096 and multiples of groups";
        if (cfg->depth[s] < 1 || cfg->depth[s] > CLS_MAX_DEPTH)
            return "depth: 1 to 4 layers per stage";
    }
    if (cfg->image_size < (1 << (L - 1)) || cfg->image_size > 1024)
        return "image_size must be in 2**(stages-1)..1024";
    return NULL;
}

int classifier_create(Classifier** out, const ClassifierConfig* cfg, const char** why) {
    *out = NULL;
    *why = check_config(cfg);
    if (*why) return DDPM_ERR_VALUE;
    Classifier* n = calloc(1, sizeof *n);
    if (!n) return DDPM_ERR_NOMEM;
    n->cfg = *cfg;
    NetRuntime* rt = &n->rt;
    rt_init(rt, RT_GROW);
    int C = cfg->in_channels, H = cfg->image_size, W = cfg->image_size, li = 0;
    rt_act(rt, &n->x, &n->dx, (size_t)C * H * W);
    float** h = &n->x;
    for (int s = 0; s < cfg->num_stages; s++) {
        Stage* st = &n->stages[s];
        st->depth = cfg->depth[s];
        if (s > 0) {
            h = pool_layout(rt, &st->pool, h, C, H, W);
            H /= 2; W /= 2;
        }
        for (int d = 0; d < st->depth; d++, li++) {
            h = layer_layout(rt, &st->layers[d], li, h, C, cfg->widths[s], H, W, cfg->groups);
            C = cfg->widths[s];
        }
    }
    head_layout(rt, &n->head, h, C, cfg->num_classes, H, W);
    if (rt->status) {
        int st = rt->status;
        classifier_free(n);
        *why = "internal: network layout failed";
        return st;
    }
    *out = n;
    return DDPM_OK;
}

void classifier_free(Classifier* n) {
    if (!n) return;
    rt_free(&n->rt);
    free(n);
}

size_t classifier_num_parameters(const Classifier* n) { return n->rt.nparams; }
int classifier_num_tensors(const Classifier* n) { return n->rt.ntensors; }
const ParamTensor* classifier_tensor(const Classifier* n, int i) {
    return (i >= 0 && i < n->rt.ntensors) ? &n->rt.tensors[i] : NULL;
}
const ClassifierConfig* classifier_config(const Classifier* n) { return &n->cfg; }
int classifier_feature_dim(const Classifier* n) { return n->cfg.widths[n->cfg.num_stages - 1]; }

double classifier_flops_per_image(const Classifier* n) {
    double f = 0.0;
    for (int s = 0; s < n->cfg.num_stages; s++)
        for (int d = 0; d < n->stages[s].depth; d++) {
            const Layer* l = &n->stages[s].layers[d];
            f += 2.0 * l->OC * l->C * 9.0 * l->H * l->W;
        }
    f += 2.0 * n->head.K * n->head.D;
    return f;
}

int classifier_reserve(Classifier* n, int B, int for_training) {
    return rt_reserve(&n->rt, B, for_training);
}

/* ------------------------------------------------------------ forward */

static void layer_forward(Classifier* n, Layer* l) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B;
    const LayerParams* w = &l->w;
    const LayerActs* a = &l->a;
    conv2d_forward(a->conv, rt->col, a->x, w->conv_w, w->conv_b, B, l->C, l->H, l->W, l->OC, 3,
                   1, 0);
    groupnorm_forward(a->out, a->mean, a->rstd, a->conv, w->norm_w, w->norm_b, B, l->OC,
                      l->H * l->W, n->cfg.groups, n->cfg.norm_eps, 1);
}

static void pool_forward(Classifier* n, Pool* p) {
    const size_t planes = (size_t)p->C * n->rt.B;
    if (n->cfg.max_pool) maxpool2_forward(p->a.out, p->a.x, planes, p->H, p->W);
    else avgpool2_forward(p->a.out, p->a.x, planes, p->H, p->W);
}

static void head_forward(Classifier* n, Head* h) {
    const int B = n->rt.B;
    global_avgpool_forward(h->a.feat, h->a.x, h->D, B, h->H * h->W);
    linear_forward(h->a.logits, h->a.feat, h->w.fc_w, h->w.fc_b, B, h->D, h->K);
}

/* x (B, Cin, S, S) into the workspace (bound at batch B), then every stage. */
static int forward(Classifier* n, const float* params, const float* x, int B, int for_training) {
    const ClassifierConfig* c = &n->cfg;
    const size_t HW = (size_t)c->image_size * c->image_size;
    n->rt.have_forward = 0;
    n->rt.generation++;           /* whatever the workspace held is gone */
    if (!ddpm_all_finite(x, (size_t)B * c->in_channels * HW)) return DDPM_ERR_NONFINITE;
    int st = rt_reserve(&n->rt, B, for_training);
    if (st) return st;
    rt_bind_acts(&n->rt, B);
    rt_bind_params(&n->rt, params, NULL);
    nchw_to_cbhw(n->x, x, B, c->in_channels, HW);
    for (int s = 0; s < c->num_stages; s++) {
        Stage* stage = &n->stages[s];
        if (s > 0) pool_forward(n, &stage->pool);
        for (int d = 0; d < stage->depth; d++) layer_forward(n, &stage->layers[d]);
    }
    head_forward(n, &n->head);
    n->rt.have_forward = 1;
    return DDPM_OK;
}

int classifier_forward(Classifier* n, const float* params, const float* x, float* logits,
                       float* features, int B) {
    int st = forward(n, params, x, B, 0);
    if (st) return st;
    const HeadActs* a = &n->head.a;
    if (logits) memcpy(logits, a->logits, sizeof(float) * (size_t)B * n->head.K);
    if (features) memcpy(features, a->feat, sizeof(float) * (size_t)B * n->head.D);
    return DDPM_OK;
}

/* ----------------------------------------------------------- backward */

/* Gradients by the runtime's first-writer rule: conv and group norm write
 * their input gradient (overwriting when first), pools, the global pool and
 * the linear layer only add, into slots rt_grad_ready zeroed. */

static void layer_backward(Classifier* n, Layer* l, int want_dx) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B, HW = l->H * l->W;
    const LayerParams* w = &l->w;
    const LayerParams* g = &l->g;
    const LayerActs* a = &l->a;
    const LayerActs* da = &l->da;
    groupnorm_backward(da->conv, g->norm_w, g->norm_b, rt->scratch, rt_grad_ready(rt, da->out),
                       a->conv, w->norm_w, w->norm_b, a->mean, a->rstd, B, l->OC, HW,
                       n->cfg.groups, 1, rt_grad_acc(rt, da->conv));
    /* the network's input gradient only when asked for */
    const int dinp = a->x != n->x || want_dx;
    conv2d_backward(dinp ? da->x : NULL, g->conv_w, g->conv_b, rt->col, da->conv, a->x,
                    w->conv_w, B, l->C, l->H, l->W, l->OC, 3, 1,
                    dinp ? rt_grad_acc(rt, da->x) : 1);
}

static void pool_backward(Classifier* n, Pool* p) {
    NetRuntime* rt = &n->rt;
    const size_t planes = (size_t)p->C * rt->B;
    float* dx = rt_grad_ready(rt, p->da.x);
    const float* dout = rt_grad_ready(rt, p->da.out);
    if (n->cfg.max_pool) maxpool2_backward(dx, dout, p->a.x, planes, p->H, p->W);
    else avgpool2_backward(dx, dout, planes, p->H, p->W);
}

static void head_backward(Classifier* n, Head* h) {
    NetRuntime* rt = &n->rt;
    const int B = rt->B;
    linear_backward(rt_grad_ready(rt, h->da.feat), h->g.fc_w, h->g.fc_b,
                    rt_grad_ready(rt, h->da.logits), h->a.feat, h->w.fc_w, B, h->D, h->K);
    global_avgpool_backward(rt_grad_ready(rt, h->da.x), h->da.feat, h->D, B, h->H * h->W);
}

/* grads += d loss / d params from the logits' gradient (already written into
 * head.da.logits in this backward); n->dx receives d loss / d x when want_dx. */
static void backward(Classifier* n, int want_dx) {
    head_backward(n, &n->head);
    for (int s = n->cfg.num_stages - 1; s >= 0; s--) {
        Stage* stage = &n->stages[s];
        for (int d = stage->depth - 1; d >= 0; d--) layer_backward(n, &stage->layers[d], want_dx);
        if (s > 0) pool_backward(n, &stage->pool);
    }
}

/* Makes the gradient workspace ready for a backward at batch B. */
static int begin_backward(Classifier* n, const float* params, float* grads, int B) {
    int st = rt_reserve(&n->rt, B, 1);
    if (st) return st;
    rt_bind_acts(&n->rt, B);
    rt_bind_params(&n->rt, params, grads);
    rt_grad_begin(&n->rt);
    return DDPM_OK;
}

uint64_t classifier_generation(const Classifier* n) { return n->rt.generation; }

int classifier_backward(Classifier* n, const float* params, float* grads, const float* dlogits,
                        float* dx, int B, uint64_t generation) {
    NetRuntime* rt = &n->rt;
    if (!rt->have_forward || generation != rt->generation) return DDPM_ERR_STALE;
    if (B < 1 || B != rt->B) return DDPM_ERR_VALUE;
    const int K = n->head.K;
    if (!ddpm_all_finite(dlogits, (size_t)B * K)) return DDPM_ERR_NONFINITE;
    int st = begin_backward(n, params, grads, B);
    if (st) return st;
    rt_grad_acc(rt, n->head.da.logits);   /* written whole, here first */
    memcpy(n->head.da.logits, dlogits, sizeof(float) * (size_t)B * K);
    backward(n, dx != NULL);
    if (dx) {
        const ClassifierConfig* c = &n->cfg;
        cbhw_to_nchw(dx, rt_grad_ready(rt, n->dx), B, c->in_channels,
                     (size_t)c->image_size * c->image_size);
    }
    return DDPM_OK;
}

int classifier_train_step(Classifier* n, float* params, float* grads, float* m, float* v,
                          const float* x, const int64_t* labels, int B,
                          const ClassifierTrainConfig* cfg, double* loss, int* correct,
                          double* grad_norm) {
    const size_t P = n->rt.nparams;
    const int K = n->head.K;
    *loss = NAN;
    *grad_norm = NAN;
    *correct = 0;
    int st = forward(n, params, x, B, 1);
    if (st) return st;
    HeadActs* a = &n->head.a;
    st = softmax_ce_forward(a->probs, loss, correct, a->logits, labels, B, K);
    if (st == DDPM_ERR_NONFINITE) *loss = INFINITY;   /* finite x, non-finite logits */
    if (st) return st;
    if (!isfinite(*loss)) return DDPM_ERR_NONFINITE;
    memset(grads, 0, sizeof(float) * P);
    st = begin_backward(n, params, grads, B);
    if (st) return st;
    softmax_ce_backward(rt_grad_ready(&n->rt, n->head.da.logits), a->probs, labels, B, K, 1.0f);
    backward(n, 0);
    const double norm = grad_global_norm(grads, P);
    *grad_norm = norm;
    if (!isfinite(norm)) return DDPM_ERR_NONFINITE;
    const float scale = grad_clip_scale(norm, cfg->grad_clip);
    adam_step(params, m, v, grads, P, cfg->step, &cfg->adam, scale);
    return DDPM_OK;
}
