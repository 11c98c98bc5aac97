/*
 * classifier.c - the classifier of classifier.h as a list of ops over a
 * workspace, in the manner of unet.c.
 *
 * Every activation has an offset (per image, in floats) into `acts`, and its
 * gradient the same offset into `dacts`; a tensor of per-image size n for a
 * batch B starts at off * B.  Backward walks the ops in reverse and only adds
 * (+=) into gradients, after one memset of dacts.
 */
#include "nets/classifier.h"
#include "core/common.h"
#include "core/threads.h"
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

#define CLS_MAX_OPS (4 * CLS_MAX_STAGES * CLS_MAX_DEPTH + 8)
#define CLS_MAX_TENSORS (4 * CLS_MAX_STAGES * CLS_MAX_DEPTH + 2)

enum cls_op { CLS_CONV, CLS_NORM_SILU, CLS_POOL, CLS_GAP, CLS_FC };

/* One step.  in/out/s are activation offsets; p[0], p[1] weight and bias. */
typedef struct {
    int type;
    int cin, cout, H, W;   /* input channels and size (output size for pools is H/2) */
    size_t in, out;
    size_t s[2];           /* CLS_NORM_SILU: mean, rstd (G per image) */
    size_t p[2];
} ClsOp;

struct Classifier {
    ClassifierConfig cfg;
    ParamTensor tensors[CLS_MAX_TENSORS];
    int ntensors;
    size_t nparams;
    ClsOp ops[CLS_MAX_OPS];
    int nops;
    size_t a_x, a_feat, a_logits, a_probs;   /* (Cin,B,S,S), (B,D), (B,K), (B,K) */
    size_t acts_floats;                      /* per image */
    /* workspace */
    int B;                                   /* batch of the last forward */
    int cap;                                 /* images the workspace holds */
    float* acts;
    float* dacts;                            /* NULL until a backward is asked for */
    float* col;                              /* conv scratch */
    float* scratch;                          /* groupnorm backward scratch */
    size_t col_floats, scratch_floats;
    int have_forward;
};

/* ---------------------------------------------------------------- layout */

static size_t add_tensor(Classifier* n, const char* name, int ndim, int d0, int d1, int d2,
                         int d3) {
    return param_tensor_add(n->tensors, &n->ntensors, CLS_MAX_TENSORS, &n->nparams, name, ndim,
                            d0, d1, d2, d3);
}

static ClsOp* new_op(Classifier* n, int type, int cin, int cout, int H, int W, size_t in,
                     size_t* next, size_t out_per_image) {
    ClsOp* op = &n->ops[n->nops++];
    memset(op, 0, sizeof *op);
    op->type = type;
    op->cin = cin; op->cout = cout; op->H = H; op->W = W;
    op->in = in;
    op->out = *next;
    *next += out_per_image;
    return op;
}

int classifier_create(Classifier** out, const ClassifierConfig* cfg, const char** why) {
    *out = NULL;
    *why = NULL;
    const int L = cfg->num_stages;
    if (L < 1 || L > CLS_MAX_STAGES) { *why = "widths: 1 to 6 stages are supported"; return DDPM_ERR_VALUE; }
    if (cfg->in_channels < 1 || cfg->in_channels > 64) { *why = "in_channels must be in 1..64"; return DDPM_ERR_VALUE; }
    if (cfg->num_classes < 2 || cfg->num_classes > 100000) { *why = "num_classes must be in 2..100000"; return DDPM_ERR_VALUE; }
    if (cfg->max_pool != 0 && cfg->max_pool != 1) { *why = "pool must be avg or max"; return DDPM_ERR_VALUE; }
    if (cfg->groups < 1) { *why = "groups must be >= 1"; return DDPM_ERR_VALUE; }
    if (!(cfg->norm_eps > 0) || !isfinite(cfg->norm_eps)) { *why = "norm_eps must be > 0"; return DDPM_ERR_VALUE; }
    for (int s = 0; s < L; s++) {
        if (cfg->widths[s] < 1 || cfg->widths[s] > 4096 || cfg->widths[s] % cfg->groups) {
            *why = "widths must be in 1..4096 and multiples of groups"; return DDPM_ERR_VALUE;
        }
        if (cfg->depth[s] < 1 || cfg->depth[s] > CLS_MAX_DEPTH) { *why = "depth: 1 to 4 layers per stage"; return DDPM_ERR_VALUE; }
    }
    if (cfg->image_size < (1 << (L - 1)) || cfg->image_size > 1024) {
        *why = "image_size must be in 2**(stages-1)..1024"; return DDPM_ERR_VALUE;
    }
    Classifier* n = calloc(1, sizeof *n);
    if (!n) return DDPM_ERR_NOMEM;
    n->cfg = *cfg;
    const int G = cfg->groups;
    size_t next = 0;
    char name[CLS_NAME_LEN];
    int C = cfg->in_channels, H = cfg->image_size, W = cfg->image_size, li = 0;
    n->a_x = next; next += (size_t)C * H * W;
    size_t h = n->a_x;
    for (int s = 0; s < L; s++) {
        if (s > 0) {
            ClsOp* op = new_op(n, CLS_POOL, C, C, H, W, h, &next, (size_t)C * (H / 2) * (W / 2));
            h = op->out;
            H /= 2; W /= 2;
        }
        for (int d = 0; d < cfg->depth[s]; d++, li++) {
            const int OC = cfg->widths[s];
            ClsOp* op = new_op(n, CLS_CONV, C, OC, H, W, h, &next, (size_t)OC * H * W);
            snprintf(name, sizeof name, "conv%d.weight", li); op->p[0] = add_tensor(n, name, 4, OC, C, 3, 3);
            snprintf(name, sizeof name, "conv%d.bias", li);   op->p[1] = add_tensor(n, name, 1, OC, 0, 0, 0);
            h = op->out;
            C = OC;
            op = new_op(n, CLS_NORM_SILU, C, C, H, W, h, &next, (size_t)C * H * W);
            snprintf(name, sizeof name, "norm%d.weight", li); op->p[0] = add_tensor(n, name, 1, C, 0, 0, 0);
            snprintf(name, sizeof name, "norm%d.bias", li);   op->p[1] = add_tensor(n, name, 1, C, 0, 0, 0);
            op->s[0] = next; next += (size_t)G;
            op->s[1] = next; next += (size_t)G;
            h = op->out;
        }
    }
    ClsOp* gap = new_op(n, CLS_GAP, C, C, H, W, h, &next, (size_t)C);
    n->a_feat = gap->out;
    const int K = cfg->num_classes;
    ClsOp* fc = new_op(n, CLS_FC, C, K, 1, 1, n->a_feat, &next, (size_t)K);
    fc->p[0] = add_tensor(n, "fc.weight", 2, K, C, 0, 0);
    fc->p[1] = add_tensor(n, "fc.bias", 1, K, 0, 0, 0);
    n->a_logits = fc->out;
    n->a_probs = next; next += (size_t)K;
    n->acts_floats = next;
    *out = n;
    return DDPM_OK;
}

void classifier_free(Classifier* n) {
    if (!n) return;
    free(n->acts); free(n->dacts); free(n->col); free(n->scratch);
    free(n);
}

size_t classifier_num_parameters(const Classifier* n) { return n->nparams; }
int classifier_num_tensors(const Classifier* n) { return n->ntensors; }
const ParamTensor* classifier_tensor(const Classifier* n, int i) {
    return (i >= 0 && i < n->ntensors) ? &n->tensors[i] : NULL;
}
const ClassifierConfig* classifier_config(const Classifier* n) { return &n->cfg; }
int classifier_feature_dim(const Classifier* n) { return n->cfg.widths[n->cfg.num_stages - 1]; }

double classifier_flops_per_image(const Classifier* n) {
    double f = 0.0;
    for (int i = 0; i < n->nops; i++) {
        const ClsOp* op = &n->ops[i];
        if (op->type == CLS_CONV) f += 2.0 * op->cout * op->cin * 9.0 * op->H * op->W;
        if (op->type == CLS_FC) f += 2.0 * op->cout * op->cin;
    }
    return f;
}

/* ------------------------------------------------------------- workspace */

int classifier_reserve(Classifier* n, int B, int for_training) {
    if (B < 1) return DDPM_ERR_VALUE;
    size_t col = 1, gn = 1;
    for (int i = 0; i < n->nops; i++) {
        const ClsOp* op = &n->ops[i];
        if (op->type == CLS_CONV) {
            size_t c = conv2d_scratch_floats(B, op->cin, op->H, op->W, op->cout, 3, 1);
            if (c > col) col = c;
        }
        if (op->type == CLS_NORM_SILU) {
            size_t g = groupnorm_scratch_floats(B, op->cin, op->H * op->W, n->cfg.groups);
            if (g > gn) gn = g;
        }
    }
    if (col > n->col_floats) {
        free(n->col);
        n->col = malloc(sizeof(float) * col);
        n->col_floats = n->col ? col : 0;
        if (!n->col) return DDPM_ERR_NOMEM;
    }
    if (gn > n->scratch_floats) {
        free(n->scratch);
        n->scratch = malloc(sizeof(float) * gn);
        n->scratch_floats = n->scratch ? gn : 0;
        if (!n->scratch) return DDPM_ERR_NOMEM;
    }
    if (B > n->cap) {
        free(n->acts); free(n->dacts);
        n->dacts = NULL;
        n->cap = 0;
        n->have_forward = 0;
        n->acts = malloc(sizeof(float) * n->acts_floats * (size_t)B);
        if (!n->acts) return DDPM_ERR_NOMEM;
        n->cap = B;
    }
    if (for_training && !n->dacts) {
        n->dacts = malloc(sizeof(float) * n->acts_floats * (size_t)n->cap);
        if (!n->dacts) return DDPM_ERR_NOMEM;
    }
    return DDPM_OK;
}

/* ------------------------------------------------------- forward/backward */

#define A(off) (n->acts + (off) * (size_t)B)
#define D(off) (n->dacts + (off) * (size_t)B)
#define P(off) (params + (off))
#define GR(off) (grads + (off))

/* Runs the ops on A(a_x), which holds the input at batch n->B. */
static void forward_ops(Classifier* n, const float* params) {
    const int B = n->B, G = n->cfg.groups;
    for (int i = 0; i < n->nops; i++) {
        const ClsOp* op = &n->ops[i];
        const int HW = op->H * op->W;
        switch (op->type) {
        case CLS_CONV:
            conv2d_forward(A(op->out), n->col, A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin,
                           op->H, op->W, op->cout, 3, 1, 0);
            break;
        case CLS_NORM_SILU:
            groupnorm_forward(A(op->out), A(op->s[0]), A(op->s[1]), A(op->in), P(op->p[0]),
                              P(op->p[1]), B, op->cin, HW, G, n->cfg.norm_eps, 1);
            break;
        case CLS_POOL:
            if (n->cfg.max_pool)
                maxpool2_forward(A(op->out), A(op->in), (size_t)op->cin * B, op->H, op->W);
            else
                avgpool2_forward(A(op->out), A(op->in), (size_t)op->cin * B, op->H, op->W);
            break;
        case CLS_GAP:
            global_avgpool_forward(A(op->out), A(op->in), op->cin, B, HW);
            break;
        case CLS_FC:
            linear_forward(A(op->out), A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin, op->cout);
            break;
        }
    }
}

/* D(...) must hold dL/dlogits and zeros elsewhere; grads += ...; D(a_x)
 * receives dL/dx when want_dx. */
static void backward_ops(Classifier* n, const float* params, float* grads, int want_dx) {
    const int B = n->B, G = n->cfg.groups;
    for (int i = n->nops - 1; i >= 0; i--) {
        const ClsOp* op = &n->ops[i];
        const int HW = op->H * op->W;
        switch (op->type) {
        case CLS_CONV:
            conv2d_backward((op->in == n->a_x && !want_dx) ? NULL : D(op->in), GR(op->p[0]),
                            GR(op->p[1]), n->col, D(op->out), A(op->in), P(op->p[0]), B,
                            op->cin, op->H, op->W, op->cout, 3, 1, 1);
            break;
        case CLS_NORM_SILU:
            groupnorm_backward(D(op->in), GR(op->p[0]), GR(op->p[1]), n->scratch, D(op->out),
                               A(op->in), P(op->p[0]), P(op->p[1]), A(op->s[0]), A(op->s[1]),
                               B, op->cin, HW, G, 1, 1);
            break;
        case CLS_POOL:
            if (n->cfg.max_pool)
                maxpool2_backward(D(op->in), D(op->out), A(op->in), (size_t)op->cin * B, op->H,
                                  op->W);
            else
                avgpool2_backward(D(op->in), D(op->out), (size_t)op->cin * B, op->H, op->W);
            break;
        case CLS_GAP:
            global_avgpool_backward(D(op->in), D(op->out), op->cin, B, HW);
            break;
        case CLS_FC:
            linear_backward(D(op->in), GR(op->p[0]), GR(op->p[1]), D(op->out), A(op->in),
                            P(op->p[0]), B, op->cin, op->cout);
            break;
        }
    }
}

static int load_input(Classifier* n, const float* x, int B, int for_training) {
    const ClassifierConfig* c = &n->cfg;
    const size_t HW = (size_t)c->image_size * c->image_size;
    if (!ddpm_all_finite(x, (size_t)B * c->in_channels * HW)) return DDPM_ERR_NONFINITE;
    int st = classifier_reserve(n, B, for_training);
    if (st) return st;
    n->B = B;
    nchw_to_cbhw(A(n->a_x), x, B, c->in_channels, HW);
    return DDPM_OK;
}

int classifier_forward(Classifier* n, const float* params, const float* x, float* logits,
                       float* features, int B) {
    n->have_forward = 0;
    int st = load_input(n, x, B, 0);
    if (st) return st;
    forward_ops(n, params);
    if (logits) memcpy(logits, A(n->a_logits), sizeof(float) * (size_t)B * n->cfg.num_classes);
    if (features) memcpy(features, A(n->a_feat), sizeof(float) * (size_t)B * classifier_feature_dim(n));
    n->have_forward = 1;
    return DDPM_OK;
}

int classifier_backward(Classifier* n, const float* params, float* grads, const float* dlogits,
                        float* dx, int B) {
    if (!n->have_forward || B < 1 || B != n->B) return DDPM_ERR_VALUE;
    const int K = n->cfg.num_classes;
    if (!ddpm_all_finite(dlogits, (size_t)B * K)) return DDPM_ERR_NONFINITE;
    int st = classifier_reserve(n, B, 1);
    if (st) return st;
    ddpm_zero(n->dacts, n->acts_floats * (size_t)B);
    memcpy(D(n->a_logits), dlogits, sizeof(float) * (size_t)B * K);
    backward_ops(n, params, grads, dx != NULL);
    if (dx) {
        const ClassifierConfig* c = &n->cfg;
        cbhw_to_nchw(dx, D(n->a_x), B, c->in_channels, (size_t)c->image_size * c->image_size);
    }
    return DDPM_OK;
}

int classifier_train_step(Classifier* n, float* params, float* grads, float* m, float* v,
                          const float* x, const int64_t* labels, int B,
                          const ClassifierTrainConfig* cfg, double* loss, int* correct,
                          double* grad_norm) {
    const size_t P = n->nparams;
    const int K = n->cfg.num_classes;
    *loss = NAN;
    *grad_norm = NAN;
    *correct = 0;
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= K) return DDPM_ERR_VALUE;
    n->have_forward = 0;
    int st = load_input(n, x, B, 1);
    if (st) return st;
    forward_ops(n, params);
    n->have_forward = 1;
    st = softmax_ce_forward(A(n->a_probs), loss, correct, A(n->a_logits), labels, B, K);
    if (st == DDPM_ERR_NONFINITE) *loss = INFINITY;   /* finite x, non-finite logits */
    if (st) return st;
    if (!isfinite(*loss)) return DDPM_ERR_NONFINITE;
    memset(grads, 0, sizeof(float) * P);
    ddpm_zero(n->dacts, n->acts_floats * (size_t)B);
    softmax_ce_backward(D(n->a_logits), A(n->a_probs), labels, B, K, 1.0f);
    backward_ops(n, params, grads, 0);
    const double norm = grad_global_norm(grads, P);
    *grad_norm = norm;
    if (!isfinite(norm)) return DDPM_ERR_NONFINITE;
    const float scale = grad_clip_scale(norm, cfg->grad_clip);
    adam_step(params, m, v, grads, P, cfg->step, &cfg->adam, scale);
    return DDPM_OK;
}
