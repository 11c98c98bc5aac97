/*
 * unet.c - UNet2DModel as a list of ops over a workspace.
 *
 * unet_create lays out the parameters (diffusers' names, one flat buffer) and
 * the op list, which follows UNet2DModel.forward step by step:
 *
 *   t -> time_proj -> linear_1 -> SiLU -> linear_2 = emb;  emb_act = SiLU(emb)
 *   x -> conv_in -> [down: (resnet [, attn]) x layers, downsample]* -> mid
 *     -> [up: (concat skip, resnet [, attn]) x (layers+1), upsample]*
 *     -> GroupNorm + SiLU -> conv_out
 *
 * Every activation has an offset into `acts` and its gradient the same offset
 * into `dacts`; backward runs the ops in reverse and every step only adds
 * (+=) into gradients, so a tensor used twice (a skip connection, emb_act)
 * collects both contributions without special cases.
 */
#define _POSIX_C_SOURCE 199309L
#include "nets/unet.h"
#include "core/common.h"
#include "core/threads.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/linear.h"
#include "layers/timestep.h"
#include "layers/attention.h"
#include "layers/resample.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)
#define MAX_TENSORS 1024
#define MAX_OPS 256
#define MAX_SLOTS (9 * MAX_OPS + 16)   /* activations: at most 9 per op, 8 more */

enum op_type { OP_CONV_IN, OP_RESNET, OP_ATTN, OP_DOWN, OP_CONCAT, OP_UP, OP_OUT };

/* One step of the network.  p[] are parameter offsets, a[] activation offsets
 * (into acts and dacts alike), all in floats. */
typedef struct {
    int type;
    int cin, cout, H, W;   /* input channels/size; cout output channels */
    int cskip;             /* OP_CONCAT: channels of the skip tensor */
    int heads;             /* OP_ATTN */
    size_t in, in2, out;   /* activations: input, second input (skip), output */
    /* OP_RESNET: norm1 w,b conv1 w,b temb w,b norm2 w,b conv2 w,b short w,b
     * OP_ATTN:   norm w,b  qkv w,b  out w,b
     * OP_CONV_IN/OP_DOWN/OP_UP: conv w,b;  OP_OUT: norm w,b conv w,b */
    size_t p[12];
    /* saved activations: OP_RESNET a1 c1 a2 tproj m1 r1 m2 r2;
     * OP_ATTN hn qkv o att m r;  OP_UP u;  OP_OUT a m r */
    size_t s[8];
} Op;

struct UNet {
    UNetConfig cfg;
    int TE;                        /* time-embedding width */
    ParamTensor tensors[MAX_TENSORS];
    int ntensors;
    size_t nparams;
    Op ops[MAX_OPS];
    int nops;
    /* time-embedding parameters and activations */
    size_t p_lin1_w, p_lin1_b, p_lin2_w, p_lin2_b;
    size_t a_temb, a_e1, a_e1s, a_emb, a_embact;   /* (B, C0), (B, TE) x 4 */
    size_t a_x, a_y;                                /* input / output, channel-major */
    /* workspace for batch B */
    int B, for_training;
    float* acts;
    float* dacts;
    float* col;
    float* scratch;                /* group norm backward: partial sums, per-thread dy */
    size_t acts_floats, col_floats, scratch_floats;
    /* the activation slots (offset, floats per image) in allocation order,
     * and during a backward, per slot, 1 while its gradient is unwritten */
    size_t slot_off[MAX_SLOTS], slot_len[MAX_SLOTS];
    int nslots;
    unsigned char dfresh[MAX_SLOTS];
    int have_forward;              /* acts hold a forward pass at batch B */
    double prof[UNET_PROF_N];      /* seconds per op kind, when profiling */
    int profiling;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Charge the time since *t0 to kind k (only when profiling). */
static void tick(UNet* n, int k, double* t0) {
    if (!n->profiling) return;
    double t = now_s();
    n->prof[k] += t - *t0;
    *t0 = t;
}

void unet_set_profiling(UNet* n, int on) { n->profiling = on; }
const double* unet_profile(UNet* n) { return n->prof; }
void unet_reset_profile(UNet* n) { memset(n->prof, 0, sizeof n->prof); }

/* ---------------------------------------------------------------- layout */

static size_t add_tensor(UNet* n, const char* name, int ndim, int d0, int d1, int d2, int d3) {
    return param_tensor_add(n->tensors, &n->ntensors, MAX_TENSORS, &n->nparams, name, ndim, d0, d1,
                            d2, d3);
}

/* dst = prefix + suffix, cut to fit (names are far shorter than the buffer) */
static void join_name(char* dst, const char* prefix, const char* suffix) {
    size_t a = strlen(prefix), b = strlen(suffix);
    if (b > UNET_NAME_LEN - 1) b = UNET_NAME_LEN - 1;
    if (a + b > UNET_NAME_LEN - 1) a = UNET_NAME_LEN - 1 - b;
    memcpy(dst, prefix, a);
    memcpy(dst + a, suffix, b);
    dst[a + b] = '\0';
}

static void conv_params(UNet* n, const char* prefix, int cout, int cin, int k, size_t* w, size_t* b) {
    char name[UNET_NAME_LEN];
    join_name(name, prefix, ".weight");
    *w = add_tensor(n, name, 4, cout, cin, k, k);
    join_name(name, prefix, ".bias");
    *b = add_tensor(n, name, 1, cout, 0, 0, 0);
}

static void vec_params(UNet* n, const char* prefix, int c, size_t* w, size_t* b) {
    char name[UNET_NAME_LEN];
    join_name(name, prefix, ".weight");
    *w = add_tensor(n, name, 1, c, 0, 0, 0);
    join_name(name, prefix, ".bias");
    *b = add_tensor(n, name, 1, c, 0, 0, 0);
}

static void linear_params(UNet* n, const char* prefix, int out, int in, size_t* w, size_t* b) {
    char name[UNET_NAME_LEN];
    join_name(name, prefix, ".weight");
    *w = add_tensor(n, name, 2, out, in, 0, 0);
    join_name(name, prefix, ".bias");
    *b = add_tensor(n, name, 1, out, 0, 0, 0);
}

/* Activation bump allocator (sizes are per image; multiplied by B later);
 * it records each slot for the backward's bookkeeping (see d_acc). */
typedef struct { size_t next; UNet* n; } Alloc;
static size_t act(Alloc* a, size_t per_image) {
    size_t o = a->next;
    UNet* n = a->n;
    if (n->nslots < MAX_SLOTS) {   /* always: MAX_SLOTS bounds what the ops allocate */
        n->slot_off[n->nslots] = o;
        n->slot_len[n->nslots] = per_image;
        n->nslots++;
    }
    a->next += per_image;
    return o;
}

static Op* new_op(UNet* n, int type) {
    if (n->nops >= MAX_OPS) return NULL;
    Op* op = &n->ops[n->nops++];
    memset(op, 0, sizeof *op);
    op->type = type;
    for (int i = 0; i < 12; i++) op->p[i] = NONE;
    for (int i = 0; i < 8; i++) op->s[i] = NONE;
    op->in = op->in2 = op->out = NONE;
    return op;
}

static size_t add_resnet(UNet* n, Alloc* al, const char* prefix, size_t in, int cin, int cout,
                         int H, int W) {
    Op* op = new_op(n, OP_RESNET);
    if (!op) return NONE;
    char name[UNET_NAME_LEN];
    size_t HW = (size_t)H * W, G = (size_t)n->cfg.norm_groups;
    op->cin = cin; op->cout = cout; op->H = H; op->W = W; op->in = in;
    snprintf(name, sizeof name, "%s.norm1", prefix);  vec_params(n, name, cin, &op->p[0], &op->p[1]);
    snprintf(name, sizeof name, "%s.conv1", prefix);  conv_params(n, name, cout, cin, 3, &op->p[2], &op->p[3]);
    snprintf(name, sizeof name, "%s.time_emb_proj", prefix); linear_params(n, name, cout, n->TE, &op->p[4], &op->p[5]);
    snprintf(name, sizeof name, "%s.norm2", prefix);  vec_params(n, name, cout, &op->p[6], &op->p[7]);
    snprintf(name, sizeof name, "%s.conv2", prefix);  conv_params(n, name, cout, cout, 3, &op->p[8], &op->p[9]);
    if (cin != cout) {
        snprintf(name, sizeof name, "%s.conv_shortcut", prefix);
        conv_params(n, name, cout, cin, 1, &op->p[10], &op->p[11]);
    }
    op->s[0] = act(al, (size_t)cin * HW);    /* a1 = silu(norm1(in)) */
    op->s[1] = act(al, (size_t)cout * HW);   /* c1 = conv1(a1) + temb proj */
    op->s[2] = act(al, (size_t)cout * HW);   /* a2 = silu(norm2(c1)) */
    op->s[3] = act(al, (size_t)cout);        /* tproj (B, cout) */
    op->s[4] = act(al, G); op->s[5] = act(al, G); op->s[6] = act(al, G); op->s[7] = act(al, G);
    op->out = act(al, (size_t)cout * HW);
    return op->out;
}

static size_t add_attn(UNet* n, Alloc* al, const char* prefix, size_t in, int C, int H, int W) {
    Op* op = new_op(n, OP_ATTN);
    if (!op) return NONE;
    char name[UNET_NAME_LEN];
    size_t HW = (size_t)H * W, G = (size_t)n->cfg.norm_groups;
    int hd = n->cfg.head_dim > 0 ? n->cfg.head_dim : C;
    op->cin = op->cout = C; op->H = H; op->W = W; op->in = in;
    op->heads = C / hd;
    snprintf(name, sizeof name, "%s.group_norm", prefix); vec_params(n, name, C, &op->p[0], &op->p[1]);
    /* q, k, v weights back to back: one (3C, C) GEMM; then the three biases */
    snprintf(name, sizeof name, "%s.to_q.weight", prefix); op->p[2] = add_tensor(n, name, 2, C, C, 0, 0);
    snprintf(name, sizeof name, "%s.to_k.weight", prefix); add_tensor(n, name, 2, C, C, 0, 0);
    snprintf(name, sizeof name, "%s.to_v.weight", prefix); add_tensor(n, name, 2, C, C, 0, 0);
    snprintf(name, sizeof name, "%s.to_q.bias", prefix); op->p[3] = add_tensor(n, name, 1, C, 0, 0, 0);
    snprintf(name, sizeof name, "%s.to_k.bias", prefix); add_tensor(n, name, 1, C, 0, 0, 0);
    snprintf(name, sizeof name, "%s.to_v.bias", prefix); add_tensor(n, name, 1, C, 0, 0, 0);
    snprintf(name, sizeof name, "%s.to_out.0", prefix); linear_params(n, name, C, C, &op->p[4], &op->p[5]);
    op->s[0] = act(al, (size_t)C * HW);           /* hn = norm(in) */
    op->s[1] = act(al, (size_t)3 * C * HW);       /* qkv */
    op->s[2] = act(al, (size_t)C * HW);           /* o, attention output before to_out */
    op->s[3] = act(al, (size_t)op->heads * HW * HW);  /* P; its gradient slot is scratch */
    op->s[4] = act(al, G); op->s[5] = act(al, G);
    op->out = act(al, (size_t)C * HW);
    return op->out;
}

static size_t add_conv_op(UNet* n, Alloc* al, int type, const char* prefix, size_t in, int cin,
                          int cout, int H, int W) {
    Op* op = new_op(n, type);
    if (!op) return NONE;
    op->cin = cin; op->cout = cout; op->H = H; op->W = W; op->in = in;
    conv_params(n, prefix, cout, cin, 3, &op->p[0], &op->p[1]);
    size_t HWo = (size_t)H * W;
    if (type == OP_DOWN) HWo = (size_t)(H / 2) * (W / 2);
    if (type == OP_UP) { HWo = (size_t)(2 * H) * (2 * W); op->s[0] = act(al, (size_t)cin * HWo); }
    op->out = act(al, (size_t)cout * HWo);
    return op->out;
}

static size_t add_concat(UNet* n, Alloc* al, size_t in, int cin, size_t skip, int cskip, int H, int W) {
    Op* op = new_op(n, OP_CONCAT);
    if (!op) return NONE;
    op->cin = cin; op->cskip = cskip; op->cout = cin + cskip; op->H = H; op->W = W;
    op->in = in; op->in2 = skip;
    op->out = act(al, (size_t)(cin + cskip) * H * W);
    return op->out;
}

int unet_create(UNet** out, const UNetConfig* cfg, const char** why) {
    *out = NULL;
    *why = NULL;
    const int L = cfg->num_levels;
    if (L < 1 || L > UNET_MAX_LEVELS) { *why = "block_out_channels: 1 to 6 levels are supported"; return DDPM_ERR_VALUE; }
    if (cfg->layers_per_block < 1 || cfg->layers_per_block > UNET_MAX_LAYERS) { *why = "layers_per_block: 1 to 4 are supported"; return DDPM_ERR_VALUE; }
    if (cfg->in_channels < 1 || cfg->out_channels < 1) { *why = "in_channels/out_channels must be >= 1"; return DDPM_ERR_VALUE; }
    if (cfg->norm_groups < 1) { *why = "norm_num_groups must be >= 1"; return DDPM_ERR_VALUE; }
    if (!(cfg->norm_eps > 0)) { *why = "norm_eps must be > 0"; return DDPM_ERR_VALUE; }
    for (int i = 0; i < L; i++) {
        int c = cfg->block_out[i];
        if (c < 1 || c % cfg->norm_groups) { *why = "block_out_channels must be positive multiples of norm_num_groups"; return DDPM_ERR_VALUE; }
        if (cfg->head_dim > 0 && (cfg->down_attn[i] || cfg->up_attn[L - 1 - i] || (i == L - 1 && cfg->mid_attn)) && c % cfg->head_dim) {
            *why = "attention_head_dim must divide the channels of every block with attention"; return DDPM_ERR_VALUE;
        }
    }
    if (cfg->sample_size < 1 || cfg->sample_size % (1 << (L - 1))) { *why = "sample_size must be divisible by 2**(levels - 1)"; return DDPM_ERR_VALUE; }
    if (cfg->block_out[0] < 2) { *why = "block_out_channels[0] must be >= 2 (time embedding)"; return DDPM_ERR_VALUE; }

    UNet* n = calloc(1, sizeof *n);
    if (!n) return DDPM_ERR_NOMEM;
    n->cfg = *cfg;
    const int C0 = cfg->block_out[0];
    n->TE = 4 * C0;
    Alloc al = {0, n};
    char name[UNET_NAME_LEN];

    /* diffusers' parameter order: conv_in, time_embedding, down, mid, up, out */
    Op* cin_op = new_op(n, OP_CONV_IN);
    int S = cfg->sample_size;
    cin_op->cin = cfg->in_channels; cin_op->cout = C0; cin_op->H = S; cin_op->W = S;
    n->a_x = act(&al, (size_t)cfg->in_channels * S * S);
    cin_op->in = n->a_x;
    conv_params(n, "conv_in", C0, cfg->in_channels, 3, &cin_op->p[0], &cin_op->p[1]);
    cin_op->out = act(&al, (size_t)C0 * S * S);
    linear_params(n, "time_embedding.linear_1", n->TE, C0, &n->p_lin1_w, &n->p_lin1_b);
    linear_params(n, "time_embedding.linear_2", n->TE, n->TE, &n->p_lin2_w, &n->p_lin2_b);
    n->a_temb = act(&al, (size_t)C0);
    n->a_e1 = act(&al, (size_t)n->TE);
    n->a_e1s = act(&al, (size_t)n->TE);
    n->a_emb = act(&al, (size_t)n->TE);
    n->a_embact = act(&al, (size_t)n->TE);

    /* skip stack: (activation, channels, H) */
    size_t skip_a[64]; int skip_c[64], ns = 0;
    size_t h = cin_op->out;
    int ch = C0, H = S;
    skip_a[ns] = h; skip_c[ns++] = ch;
    for (int i = 0; i < L; i++) {
        int cout = cfg->block_out[i];
        for (int j = 0; j < cfg->layers_per_block; j++) {
            snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
            h = add_resnet(n, &al, name, h, ch, cout, H, H);
            ch = cout;
            if (cfg->down_attn[i]) {
                snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
                h = add_attn(n, &al, name, h, ch, H, H);
            }
            skip_a[ns] = h; skip_c[ns++] = ch;
        }
        if (i < L - 1) {
            snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
            h = add_conv_op(n, &al, OP_DOWN, name, h, ch, ch, H, H);
            H /= 2;
            skip_a[ns] = h; skip_c[ns++] = ch;
        }
    }
    h = add_resnet(n, &al, "mid_block.resnets.0", h, ch, ch, H, H);
    if (cfg->mid_attn) h = add_attn(n, &al, "mid_block.attentions.0", h, ch, H, H);
    h = add_resnet(n, &al, "mid_block.resnets.1", h, ch, ch, H, H);
    for (int i = 0; i < L; i++) {
        int cout = cfg->block_out[L - 1 - i];
        for (int j = 0; j <= cfg->layers_per_block; j++) {
            ns--;
            h = add_concat(n, &al, h, ch, skip_a[ns], skip_c[ns], H, H);
            snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
            h = add_resnet(n, &al, name, h, ch + skip_c[ns], cout, H, H);
            ch = cout;
            if (cfg->up_attn[i]) {
                snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
                h = add_attn(n, &al, name, h, ch, H, H);
            }
        }
        if (i < L - 1) {
            snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
            h = add_conv_op(n, &al, OP_UP, name, h, ch, ch, H, H);
            H *= 2;
        }
    }
    Op* o = new_op(n, OP_OUT);
    o->cin = ch; o->cout = cfg->out_channels; o->H = H; o->W = H; o->in = h;
    vec_params(n, "conv_norm_out", ch, &o->p[0], &o->p[1]);
    conv_params(n, "conv_out", cfg->out_channels, ch, 3, &o->p[2], &o->p[3]);
    o->s[0] = act(&al, (size_t)ch * H * H);
    o->s[1] = act(&al, (size_t)cfg->norm_groups);
    o->s[2] = act(&al, (size_t)cfg->norm_groups);
    o->out = act(&al, (size_t)cfg->out_channels * H * H);
    n->a_y = o->out;
    if (ns != 0 || n->nops >= MAX_OPS || n->ntensors >= MAX_TENSORS || n->nslots >= MAX_SLOTS) {
        free(n);
        *why = "internal: network layout failed";
        return DDPM_ERR_VALUE;
    }
    n->acts_floats = al.next;    /* per image */
    *out = n;
    return DDPM_OK;
}

void unet_free(UNet* n) {
    if (!n) return;
    free(n->acts); free(n->dacts); free(n->col); free(n->scratch);
    free(n);
}

size_t unet_num_parameters(const UNet* n) { return n->nparams; }
int unet_num_tensors(const UNet* n) { return n->ntensors; }
const ParamTensor* unet_tensor(const UNet* n, int i) { return (i >= 0 && i < n->ntensors) ? &n->tensors[i] : NULL; }
const UNetConfig* unet_config(const UNet* n) { return &n->cfg; }

double unet_flops_per_image(const UNet* n) {
    double f = 0.0;
    const int TE = n->TE, C0 = n->cfg.block_out[0];
    f += 2.0 * (C0 * TE + TE * TE);
    for (int i = 0; i < n->nops; i++) {
        const Op* op = &n->ops[i];
        double HW = (double)op->H * op->W;
        switch (op->type) {
        case OP_CONV_IN: f += 2.0 * op->cout * op->cin * 9 * HW; break;
        case OP_RESNET:
            f += 2.0 * op->cout * op->cin * 9 * HW + 2.0 * op->cout * op->cout * 9 * HW + 2.0 * TE * op->cout;
            if (op->cin != op->cout) f += 2.0 * op->cout * op->cin * HW;
            break;
        case OP_ATTN: f += 2.0 * 4 * op->cin * op->cin * HW + 2.0 * 2 * HW * HW * op->cin; break;
        case OP_DOWN: f += 2.0 * op->cout * op->cin * 9 * HW / 4; break;
        case OP_UP: f += 2.0 * op->cout * op->cin * 9 * HW * 4; break;
        case OP_OUT: f += 2.0 * op->cout * op->cin * 9 * HW; break;
        default: break;
        }
    }
    return f;
}

/* ------------------------------------------------------------- workspace */

int unet_reserve(UNet* n, int B, int for_training) {
    if (B < 1) return DDPM_ERR_VALUE;
    if (n->B == B && n->acts && (!for_training || n->dacts)) return DDPM_OK;
    if (n->B != B) {
        free(n->acts); free(n->dacts); free(n->col); free(n->scratch);
        n->acts = n->dacts = n->col = n->scratch = NULL;
        n->B = 0;
        n->have_forward = 0;
        size_t col = 0, gn = 0;
        for (int i = 0; i < n->nops; i++) {
            const Op* op = &n->ops[i];
            size_t c = 0;
            switch (op->type) {
            case OP_CONV_IN: case OP_RESNET:
                c = conv2d_scratch_floats(B, op->cin, op->H, op->W, op->cout, 3, 1);
                if (op->type == OP_RESNET) {
                    size_t c2 = conv2d_scratch_floats(B, op->cout, op->H, op->W, op->cout, 3, 1);
                    size_t c3 = conv2d_scratch_floats(B, op->cin, op->H, op->W, op->cout, 1, 1);
                    if (c2 > c) c = c2;
                    if (c3 > c) c = c3;   /* the 1x1 shortcut */
                }
                break;
            case OP_ATTN:   /* the q/k/v projection, the largest 1x1 */
                c = conv2d_scratch_floats(B, op->cin, op->H, op->W, 3 * op->cin, 1, 1);
                break;
            case OP_OUT: c = conv2d_scratch_floats(B, op->cin, op->H, op->W, op->cout, 3, 1); break;
            case OP_DOWN: c = conv2d_scratch_floats(B, op->cin, op->H, op->W, op->cout, 3, 2); break;
            case OP_UP: c = conv2d_scratch_floats(B, op->cin, 2 * op->H, 2 * op->W, op->cout, 3, 1); break;
            default: break;
            }
            if (c > col) col = c;
            /* group norms run on op->in (cin) and inside resnets on cout, at H x W */
            int maxc = op->cout > op->cin ? op->cout : op->cin;
            size_t g = groupnorm_scratch_floats(B, maxc, op->H * op->W, n->cfg.norm_groups);
            if (g > gn) gn = g;
        }
        n->col_floats = col ? col : 1;
        n->scratch_floats = gn;
        n->acts = malloc(sizeof(float) * n->acts_floats * (size_t)B);
        n->col = malloc(sizeof(float) * n->col_floats);
        n->scratch = malloc(sizeof(float) * n->scratch_floats);
        if (!n->acts || !n->col || !n->scratch) {
            free(n->acts); free(n->col); free(n->scratch);
            n->acts = n->col = n->scratch = NULL;
            return DDPM_ERR_NOMEM;
        }
        n->B = B;
        n->for_training = 0;
    }
    if (for_training && !n->dacts) {
        n->dacts = malloc(sizeof(float) * n->acts_floats * (size_t)B);
        if (!n->dacts) return DDPM_ERR_NOMEM;
    }
    return DDPM_OK;
}

/* ------------------------------------------------------- forward/backward */

#define A(off) (n->acts + (off) * (size_t)B)
#define D(off) (n->dacts + (off) * (size_t)B)
#define P(off) (params + (off))
#define GR(off) (grads + (off))

/* The backward never zeroes dacts as a whole (a pass over ~1 GB at B = 128):
 * the first writer of each gradient slot overwrites it, later writers add,
 * the same numbers as zeroing first and adding.  dfresh[i] is 1 while slot
 * i is unwritten in this backward. */
static int slot_of(const UNet* n, size_t off) {
    int lo = 0, hi = n->nslots - 1;   /* slots are in increasing offset order */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (n->slot_off[mid] <= off) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* The accumulate flag for a writer of slot off's gradient: 0 for the first
 * writer in this backward (which then overwrites), 1 after. */
static int d_acc(UNet* n, size_t off) {
    int i = slot_of(n, off), first = n->dfresh[i];
    n->dfresh[i] = 0;
    return !first;
}

/* D(off), zeroed if nothing has written it in this backward: for writers
 * that can only add (the small time-embedding slots) and for every gradient
 * read (each is written before it is read; this keeps that true). */
static float* d_ready(UNet* n, size_t off) {
    int i = slot_of(n, off);
    if (n->dfresh[i]) {
        ddpm_zero(n->dacts + off * (size_t)n->B, n->slot_len[i] * (size_t)n->B);
        n->dfresh[i] = 0;
    }
    return n->dacts + off * (size_t)n->B;
}

static void resnet_forward(UNet* n, const Op* op, const float* params) {
    const int B = n->B, G = n->cfg.norm_groups, HW = op->H * op->W;
    const float eps = n->cfg.norm_eps;
    float* a1 = A(op->s[0]); float* c1 = A(op->s[1]); float* a2 = A(op->s[2]);
    float* tproj = A(op->s[3]);
    double t0 = n->profiling ? now_s() : 0.0;
    groupnorm_forward(a1, A(op->s[4]), A(op->s[5]), A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin, HW, G, eps, 1);
    tick(n, UNET_PROF_NORM_FWD, &t0);
    linear_forward(tproj, A(n->a_embact), P(op->p[4]), P(op->p[5]), B, n->TE, op->cout);
    tick(n, UNET_PROF_TIME, &t0);
    /* c1 = (time projection, per sample and channel) + conv1: the conv's
     * output transform starts from it, so c1 is written once */
    conv2d_forward_add(c1, n->col, a1, P(op->p[2]), P(op->p[3]), NULL, tproj, B, op->cin, op->H, op->W, op->cout, 3, 1);
    tick(n, UNET_PROF_CONV3_FWD, &t0);
    groupnorm_forward(a2, A(op->s[6]), A(op->s[7]), c1, P(op->p[6]), P(op->p[7]), B, op->cout, HW, G, eps, 1);
    tick(n, UNET_PROF_NORM_FWD, &t0);
    /* out = shortcut(in) + conv2: the residual is where conv2's output starts */
    float* out = A(op->out);
    const float* residual = A(op->in);
    if (op->p[10] != NONE) {
        conv2d_forward(out, NULL, A(op->in), P(op->p[10]), P(op->p[11]), B, op->cin, op->H, op->W, op->cout, 1, 1, 0);
        tick(n, UNET_PROF_CONV1_FWD, &t0);
        residual = out;
    }
    conv2d_forward_add(out, n->col, a2, P(op->p[8]), P(op->p[9]), residual, NULL, B, op->cout, op->H, op->W, op->cout, 3, 1);
    tick(n, UNET_PROF_CONV3_FWD, &t0);
}

static void resnet_backward(UNet* n, const Op* op, const float* params, float* grads) {
    const int B = n->B, G = n->cfg.norm_groups, HW = op->H * op->W;
    const float* dout = d_ready(n, op->out);
    double t0 = n->profiling ? now_s() : 0.0;
    conv2d_backward(D(op->s[2]), GR(op->p[8]), GR(op->p[9]), n->col, dout, A(op->s[2]), P(op->p[8]), B, op->cout, op->H, op->W, op->cout, 3, 1, d_acc(n, op->s[2]));
    tick(n, UNET_PROF_CONV3_BWD, &t0);
    if (op->p[10] != NONE) {
        conv2d_backward(D(op->in), GR(op->p[10]), GR(op->p[11]), n->col, dout, A(op->in), P(op->p[10]), B, op->cin, op->H, op->W, op->cout, 1, 1, d_acc(n, op->in));
        tick(n, UNET_PROF_CONV1_BWD, &t0);
    } else {
        (d_acc(n, op->in) ? ddpm_add : ddpm_copy)(D(op->in), dout, (size_t)op->cout * B * HW);
        tick(n, UNET_PROF_OTHER, &t0);
    }
    groupnorm_backward(D(op->s[1]), GR(op->p[6]), GR(op->p[7]), n->scratch, D(op->s[2]), A(op->s[1]), P(op->p[6]), P(op->p[7]), A(op->s[6]), A(op->s[7]), B, op->cout, HW, G, 1, d_acc(n, op->s[1]));
    tick(n, UNET_PROF_NORM_BWD, &t0);
    /* d tproj[b][c] = sum over positions of d c1[c][b][:] */
    const float* dc1 = D(op->s[1]);
    float* dtproj = D(op->s[3]);
    const int acc = d_acc(n, op->s[3]);
    int nt = ddpm_threads_for((size_t)op->cout * B * HW, 1 << 15);
    DDPM_PARALLEL_FOR(nt)
    for (int c = 0; c < op->cout; c++)
        for (int b = 0; b < B; b++) {
            float s = (float)ddpm_sum(dc1 + ((size_t)c * B + b) * HW, HW);
            float* d = dtproj + (size_t)b * op->cout + c;
            *d = acc ? *d + s : s;
        }
    tick(n, UNET_PROF_OTHER, &t0);
    conv2d_backward(D(op->s[0]), GR(op->p[2]), GR(op->p[3]), n->col, D(op->s[1]), A(op->s[0]), P(op->p[2]), B, op->cin, op->H, op->W, op->cout, 3, 1, d_acc(n, op->s[0]));
    tick(n, UNET_PROF_CONV3_BWD, &t0);
    groupnorm_backward(D(op->in), GR(op->p[0]), GR(op->p[1]), n->scratch, D(op->s[0]), A(op->in), P(op->p[0]), P(op->p[1]), A(op->s[4]), A(op->s[5]), B, op->cin, HW, G, 1, d_acc(n, op->in));
    tick(n, UNET_PROF_NORM_BWD, &t0);
    linear_backward(d_ready(n, n->a_embact), GR(op->p[4]), GR(op->p[5]), dtproj, A(n->a_embact), P(op->p[4]), B, n->TE, op->cout);
    tick(n, UNET_PROF_TIME, &t0);
}

static void attn_forward(UNet* n, const Op* op, const float* params) {
    const int B = n->B, C = op->cin, HW = op->H * op->W;
    double t0 = n->profiling ? now_s() : 0.0;
    groupnorm_forward(A(op->s[0]), A(op->s[4]), A(op->s[5]), A(op->in), P(op->p[0]), P(op->p[1]), B, C, HW, n->cfg.norm_groups, n->cfg.norm_eps, 0);
    tick(n, UNET_PROF_NORM_FWD, &t0);
    conv2d_forward(A(op->s[1]), NULL, A(op->s[0]), P(op->p[2]), P(op->p[3]), B, C, op->H, op->W, 3 * C, 1, 1, 0);
    tick(n, UNET_PROF_CONV1_FWD, &t0);
    attention_forward(A(op->s[2]), A(op->s[3]), A(op->s[1]), B, C, HW, op->heads);
    tick(n, UNET_PROF_ATTN_FWD, &t0);
    float* out = A(op->out);
    ddpm_copy(out, A(op->in), (size_t)C * B * HW);   /* residual */
    conv2d_forward(out, NULL, A(op->s[2]), P(op->p[4]), P(op->p[5]), B, C, op->H, op->W, C, 1, 1, 1);
    tick(n, UNET_PROF_CONV1_FWD, &t0);
}

static void attn_backward(UNet* n, const Op* op, const float* params, float* grads) {
    const int B = n->B, C = op->cin, HW = op->H * op->W;
    const float* dout = d_ready(n, op->out);
    float* din = D(op->in);
    double t0 = n->profiling ? now_s() : 0.0;
    (d_acc(n, op->in) ? ddpm_add : ddpm_copy)(din, dout, (size_t)C * B * HW);   /* residual */
    tick(n, UNET_PROF_OTHER, &t0);
    conv2d_backward(D(op->s[2]), GR(op->p[4]), GR(op->p[5]), n->col, dout, A(op->s[2]), P(op->p[4]), B, C, op->H, op->W, C, 1, 1, d_acc(n, op->s[2]));
    tick(n, UNET_PROF_CONV1_BWD, &t0);
    /* D(s[3]), P's gradient slot, is the backward's scratch (written before read) */
    attention_backward(D(op->s[1]), D(op->s[3]), D(op->s[2]), A(op->s[1]), A(op->s[3]), B, C, HW, op->heads, d_acc(n, op->s[1]));
    tick(n, UNET_PROF_ATTN_BWD, &t0);
    conv2d_backward(D(op->s[0]), GR(op->p[2]), GR(op->p[3]), n->col, D(op->s[1]), A(op->s[0]), P(op->p[2]), B, C, op->H, op->W, 3 * C, 1, 1, d_acc(n, op->s[0]));
    tick(n, UNET_PROF_CONV1_BWD, &t0);
    groupnorm_backward(din, GR(op->p[0]), GR(op->p[1]), n->scratch, D(op->s[0]), A(op->in), P(op->p[0]), P(op->p[1]), A(op->s[4]), A(op->s[5]), B, C, HW, n->cfg.norm_groups, 0, d_acc(n, op->in));
    tick(n, UNET_PROF_NORM_BWD, &t0);
}

int unet_forward(UNet* n, const float* params, const float* x, const float* t, float* out, int B) {
    const UNetConfig* cfg = &n->cfg;
    const int S = cfg->sample_size;
    const size_t HW = (size_t)S * S;
    if (!ddpm_all_finite(x, (size_t)B * cfg->in_channels * HW) || !ddpm_all_finite(t, (size_t)B))
        return DDPM_ERR_NONFINITE;
    int st = unet_reserve(n, B, 0);
    if (st) return st;
    n->have_forward = 0;
    const int C0 = cfg->block_out[0];
    double t0 = n->profiling ? now_s() : 0.0;
    /* time embedding */
    timestep_embedding_forward(A(n->a_temb), t, B, C0, 1, 0.0f, 10000.0f);
    linear_forward(A(n->a_e1), A(n->a_temb), P(n->p_lin1_w), P(n->p_lin1_b), B, C0, n->TE);
    silu_forward(A(n->a_e1s), A(n->a_e1), (size_t)B * n->TE);
    linear_forward(A(n->a_emb), A(n->a_e1s), P(n->p_lin2_w), P(n->p_lin2_b), B, n->TE, n->TE);
    silu_forward(A(n->a_embact), A(n->a_emb), (size_t)B * n->TE);
    tick(n, UNET_PROF_TIME, &t0);
    nchw_to_cbhw(A(n->a_x), x, B, cfg->in_channels, HW);
    tick(n, UNET_PROF_OTHER, &t0);
    for (int i = 0; i < n->nops; i++) {
        if (n->profiling) t0 = now_s();
        const Op* op = &n->ops[i];
        const int HWo = op->H * op->W;
        switch (op->type) {
        case OP_CONV_IN:
            conv2d_forward(A(op->out), n->col, A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin, op->H, op->W, op->cout, 3, 1, 0);
            tick(n, UNET_PROF_CONV3_FWD, &t0);
            break;
        case OP_RESNET: resnet_forward(n, op, params); break;
        case OP_ATTN: attn_forward(n, op, params); break;
        case OP_DOWN:
            conv2d_forward(A(op->out), n->col, A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin, op->H, op->W, op->cout, 3, 2, 0);
            tick(n, UNET_PROF_CONV3_FWD, &t0);
            break;
        case OP_CONCAT:
            concat_forward(A(op->out), A(op->in), A(op->in2), op->cin, op->cskip, (size_t)B * HWo);
            tick(n, UNET_PROF_OTHER, &t0);
            break;
        case OP_UP:
            upsample_forward(A(op->s[0]), A(op->in), op->cin, B, op->H, op->W);
            tick(n, UNET_PROF_OTHER, &t0);
            conv2d_forward(A(op->out), n->col, A(op->s[0]), P(op->p[0]), P(op->p[1]), B, op->cin, 2 * op->H, 2 * op->W, op->cout, 3, 1, 0);
            tick(n, UNET_PROF_CONV3_FWD, &t0);
            break;
        case OP_OUT:
            groupnorm_forward(A(op->s[0]), A(op->s[1]), A(op->s[2]), A(op->in), P(op->p[0]), P(op->p[1]), B, op->cin, HWo, cfg->norm_groups, cfg->norm_eps, 1);
            tick(n, UNET_PROF_NORM_FWD, &t0);
            conv2d_forward(A(op->out), n->col, A(op->s[0]), P(op->p[2]), P(op->p[3]), B, op->cin, op->H, op->W, op->cout, 3, 1, 0);
            tick(n, UNET_PROF_CONV3_FWD, &t0);
            break;
        }
    }
    if (n->profiling) t0 = now_s();
    cbhw_to_nchw(out, A(n->a_y), B, cfg->out_channels, HW);
    tick(n, UNET_PROF_OTHER, &t0);
    n->have_forward = 1;
    return DDPM_OK;
}

int unet_backward(UNet* n, const float* params, float* grads, const float* dout, float* dx) {
    const UNetConfig* cfg = &n->cfg;
    const int B = n->B;
    if (B < 1 || !n->acts || !n->have_forward) return DDPM_ERR_VALUE;  /* backward needs a forward */
    int st = unet_reserve(n, B, 1);
    if (st) return st;
    const int S = cfg->sample_size;
    const size_t HW = (size_t)S * S;
    if (!ddpm_all_finite(dout, (size_t)B * cfg->out_channels * HW)) return DDPM_ERR_NONFINITE;
    double t0 = n->profiling ? now_s() : 0.0;
    memset(n->dfresh, 1, (size_t)n->nslots);   /* every gradient slot unwritten */
    nchw_to_cbhw(D(n->a_y), dout, B, cfg->out_channels, HW);
    d_acc(n, n->a_y);
    tick(n, UNET_PROF_OTHER, &t0);
    for (int i = n->nops - 1; i >= 0; i--) {
        if (n->profiling) t0 = now_s();
        const Op* op = &n->ops[i];
        const int HWo = op->H * op->W;
        switch (op->type) {
        case OP_CONV_IN:
            conv2d_backward(dx ? D(op->in) : NULL, GR(op->p[0]), GR(op->p[1]), n->col, d_ready(n, op->out), A(op->in), P(op->p[0]), B, op->cin, op->H, op->W, op->cout, 3, 1, dx ? d_acc(n, op->in) : 1);
            tick(n, UNET_PROF_CONV3_BWD, &t0);
            break;
        case OP_RESNET: resnet_backward(n, op, params, grads); break;
        case OP_ATTN: attn_backward(n, op, params, grads); break;
        case OP_DOWN:
            conv2d_backward(D(op->in), GR(op->p[0]), GR(op->p[1]), n->col, d_ready(n, op->out), A(op->in), P(op->p[0]), B, op->cin, op->H, op->W, op->cout, 3, 2, d_acc(n, op->in));
            tick(n, UNET_PROF_CONV3_BWD, &t0);
            break;
        case OP_CONCAT: {
            const float* d = d_ready(n, op->out);
            int acc_a = d_acc(n, op->in), acc_b = d_acc(n, op->in2);
            concat_backward(D(op->in), D(op->in2), d, op->cin, op->cskip, (size_t)B * HWo, acc_a, acc_b);
            tick(n, UNET_PROF_OTHER, &t0);
            break;
        }
        case OP_UP:
            conv2d_backward(D(op->s[0]), GR(op->p[0]), GR(op->p[1]), n->col, d_ready(n, op->out), A(op->s[0]), P(op->p[0]), B, op->cin, 2 * op->H, 2 * op->W, op->cout, 3, 1, d_acc(n, op->s[0]));
            tick(n, UNET_PROF_CONV3_BWD, &t0);
            upsample_backward(D(op->in), D(op->s[0]), op->cin, B, op->H, op->W, d_acc(n, op->in));
            tick(n, UNET_PROF_OTHER, &t0);
            break;
        case OP_OUT:
            conv2d_backward(D(op->s[0]), GR(op->p[2]), GR(op->p[3]), n->col, d_ready(n, op->out), A(op->s[0]), P(op->p[2]), B, op->cin, op->H, op->W, op->cout, 3, 1, d_acc(n, op->s[0]));
            tick(n, UNET_PROF_CONV3_BWD, &t0);
            groupnorm_backward(D(op->in), GR(op->p[0]), GR(op->p[1]), n->scratch, D(op->s[0]), A(op->in), P(op->p[0]), P(op->p[1]), A(op->s[1]), A(op->s[2]), B, op->cin, HWo, cfg->norm_groups, 1, d_acc(n, op->in));
            tick(n, UNET_PROF_NORM_BWD, &t0);
            break;
        }
    }
    if (n->profiling) t0 = now_s();
    /* time embedding: emb_act = silu(emb), emb = linear_2(silu(linear_1(temb))) */
    const int C0 = cfg->block_out[0];
    silu_backward(d_ready(n, n->a_emb), d_ready(n, n->a_embact), A(n->a_emb), (size_t)B * n->TE);
    linear_backward(d_ready(n, n->a_e1s), GR(n->p_lin2_w), GR(n->p_lin2_b), D(n->a_emb), A(n->a_e1s), P(n->p_lin2_w), B, n->TE, n->TE);
    silu_backward(d_ready(n, n->a_e1), D(n->a_e1s), A(n->a_e1), (size_t)B * n->TE);
    linear_backward(NULL, GR(n->p_lin1_w), GR(n->p_lin1_b), D(n->a_e1), A(n->a_temb), P(n->p_lin1_w), B, C0, n->TE);
    tick(n, UNET_PROF_TIME, &t0);
    if (dx) cbhw_to_nchw(dx, d_ready(n, n->a_x), B, cfg->in_channels, HW);
    tick(n, UNET_PROF_OTHER, &t0);
    return DDPM_OK;
}
