/*
 * unet_layout.c - builds the U-Net of a config: checks the config, registers
 * every block's named parameter and activation fields with the runtime in
 * diffusers' order (unet_create), and answers the questions about the result
 * (parameter table, flops).  The forward and backward are in unet.c.
 *
 * The parameter table is the ONE size table: diffusers' names in the order of
 * UNet2DModel's modules, each tensor right after the one before in the flat
 * buffer.  Python, saved files and the optimizer rely on these offsets.
 * Activation slots are laid out in the order the forward computes them.
 *
 * Legend: as in unet_blocks.h (C in and OC out channels of a block, H its
 * size, G groups, NH heads, TE time-embedding width, C0 = block_out[0]).
 */
#include "nets/unet_blocks.h"
#include "core/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the blocks */

/* Each *_layout registers block b's fields under diffusers' prefix p, links
 * its input field to `in` (an earlier block's output field) and returns its
 * output field. */

static float** resnet_layout(UNet* n, ResnetBlock* b, const char* p, float** in, int C, int OC,
                             int H) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    const int G = n->cfg.norm_groups, TE = n->time.TE;
    const size_t HW = (size_t)H * H;
    b->C = C; b->OC = OC; b->H = H; b->W = H;
    RT_PARAM(rt, b, norm1_w, p, ".norm1.weight", RT_DIMS1(C));
    RT_PARAM(rt, b, norm1_b, p, ".norm1.bias", RT_DIMS1(C));
    RT_PARAM(rt, b, conv1_w, p, ".conv1.weight", RT_DIMS4(OC, C, 3, 3));
    RT_PARAM(rt, b, conv1_b, p, ".conv1.bias", RT_DIMS1(OC));
    RT_PARAM(rt, b, time_emb_proj_w, p, ".time_emb_proj.weight", RT_DIMS2(OC, TE));
    RT_PARAM(rt, b, time_emb_proj_b, p, ".time_emb_proj.bias", RT_DIMS1(OC));
    RT_PARAM(rt, b, norm2_w, p, ".norm2.weight", RT_DIMS1(OC));
    RT_PARAM(rt, b, norm2_b, p, ".norm2.bias", RT_DIMS1(OC));
    RT_PARAM(rt, b, conv2_w, p, ".conv2.weight", RT_DIMS4(OC, OC, 3, 3));
    RT_PARAM(rt, b, conv2_b, p, ".conv2.bias", RT_DIMS1(OC));
    if (C != OC) {
        RT_PARAM(rt, b, conv_shortcut_w, p, ".conv_shortcut.weight", RT_DIMS4(OC, C, 1, 1));
        RT_PARAM(rt, b, conv_shortcut_b, p, ".conv_shortcut.bias", RT_DIMS1(OC));
    }
    RT_LINK(rt, b, x, in);
    RT_LINK(rt, b, emb, &n->time.a.emb_act);
    RT_ACT_KEPT(rt, b, act1, C * HW);
    RT_ACT(rt, b, norm1_a, C);
    RT_ACT(rt, b, norm1_k, C);
    RT_ACT(rt, b, conv1, OC * HW);
    RT_ACT_KEPT(rt, b, act2, OC * HW);
    RT_ACT(rt, b, norm2_a, OC);
    RT_ACT(rt, b, norm2_k, OC);
    RT_ACT(rt, b, tproj, OC);
    RT_ACT(rt, b, mean1, G);
    RT_ACT(rt, b, rstd1, G);
    RT_ACT(rt, b, mean2, G);
    RT_ACT(rt, b, rstd2, G);
    RT_ACT(rt, b, out, OC * HW);
    rt_need_conv(rt, C, H, H, OC, 3, 1);
    rt_need_conv(rt, OC, H, H, OC, 3, 1);
    if (C != OC) rt_need_conv(rt, C, H, H, OC, 1, 1);
    RT_PREP(rt, b, conv1_u, conv1_w, C, H, H, OC, 3, 1);
    RT_PREP(rt, b, conv2_u, conv2_w, OC, H, H, OC, 3, 1);
    rt_need_norm(rt, C, (int)HW, G);
    rt_need_norm(rt, OC, (int)HW, G);
    return &b->a.out;
}

static float** attn_layout(UNet* n, AttnBlock* b, const char* p, float** in, int C, int H) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    const int G = n->cfg.norm_groups, hd = n->cfg.head_dim > 0 ? n->cfg.head_dim : C;
    const size_t HW = (size_t)H * H;
    b->C = C; b->H = H; b->W = H; b->NH = C / hd;
    RT_PARAM(rt, b, group_norm_w, p, ".group_norm.weight", RT_DIMS1(C));
    RT_PARAM(rt, b, group_norm_b, p, ".group_norm.bias", RT_DIMS1(C));
    /* to_q, to_k, to_v are three tensors of the table, back to back in the
     * buffer, read as one (3C, C) matrix (and one (3C,) bias) */
    RT_PARAM(rt, b, qkv_w, p, ".to_q.weight", RT_DIMS2(C, C));
    rt_param(rt, NULL, NULL, p, ".to_k.weight", RT_DIMS2(C, C));
    rt_param(rt, NULL, NULL, p, ".to_v.weight", RT_DIMS2(C, C));
    RT_PARAM(rt, b, qkv_b, p, ".to_q.bias", RT_DIMS1(C));
    rt_param(rt, NULL, NULL, p, ".to_k.bias", RT_DIMS1(C));
    rt_param(rt, NULL, NULL, p, ".to_v.bias", RT_DIMS1(C));
    RT_PARAM(rt, b, to_out_w, p, ".to_out.0.weight", RT_DIMS2(C, C));
    RT_PARAM(rt, b, to_out_b, p, ".to_out.0.bias", RT_DIMS1(C));
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, hn, C * HW);
    RT_ACT(rt, b, qkv, 3 * C * HW);
    RT_ACT(rt, b, o, C * HW);
    RT_ACT_KEPT(rt, b, att, b->NH * HW * HW);
    RT_ACT(rt, b, mean, G);
    RT_ACT(rt, b, rstd, G);
    RT_ACT(rt, b, out, C * HW);
    rt_need_conv(rt, C, H, H, 3 * C, 1, 1);
    rt_need_conv(rt, C, H, H, C, 1, 1);
    rt_need_norm(rt, C, (int)HW, G);
    rt_need_attention(rt, b->NH, (int)HW);
    return &b->a.out;
}

/* conv_in (S = 1) or a downsampler (S = 2). */
static float** conv_layout(UNet* n, ConvLayer* b, const char* p, float** in, int C, int OC,
                           int H, int S) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    b->C = C; b->OC = OC; b->H = H; b->W = H; b->S = S;
    RT_PARAM(rt, b, weight, p, ".weight", RT_DIMS4(OC, C, 3, 3));
    RT_PARAM(rt, b, bias, p, ".bias", RT_DIMS1(OC));
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, out, (size_t)OC * (H / S) * (H / S));
    rt_need_conv(rt, C, H, H, OC, 3, S);
    return &b->a.out;
}

static float** upsampler_layout(UNet* n, Upsampler* b, const char* p, float** in, int C, int H) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    const size_t HW2 = (size_t)(2 * H) * (2 * H);
    b->C = C; b->H = H; b->W = H;
    RT_PARAM(rt, b, weight, p, ".weight", RT_DIMS4(C, C, 3, 3));
    RT_PARAM(rt, b, bias, p, ".bias", RT_DIMS1(C));
    RT_LINK(rt, b, x, in);
    RT_ACT(rt, b, up, C * HW2);
    RT_ACT(rt, b, out, C * HW2);
    rt_need_conv(rt, C, 2 * H, 2 * H, C, 3, 1);
    RT_PREP(rt, b, u, weight, C, 2 * H, 2 * H, C, 3, 1);
    return &b->a.out;
}

static float** concat_layout(UNet* n, SkipConcat* b, float** h, int C, float** skip, int CS,
                             int H) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    b->C = C; b->CS = CS; b->H = H; b->W = H;
    RT_LINK(rt, b, h, h);
    RT_LINK(rt, b, skip, skip);
    RT_ACT(rt, b, out, (size_t)(C + CS) * H * H);
    /* an inference forward's producers write their parts in place */
    rt_alias(rt, h, &b->a.out, 0);
    rt_alias(rt, skip, &b->a.out, (size_t)C * H * H);
    return &b->a.out;
}

static void time_layout(UNet* n, TimeEmbedding* b, int C0, int K) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    const char* p = "time_embedding";
    const int TE = 4 * C0;
    b->C0 = C0; b->TE = TE; b->K = K;
    RT_PARAM(rt, b, linear_1_w, p, ".linear_1.weight", RT_DIMS2(TE, C0));
    RT_PARAM(rt, b, linear_1_b, p, ".linear_1.bias", RT_DIMS1(TE));
    RT_PARAM(rt, b, linear_2_w, p, ".linear_2.weight", RT_DIMS2(TE, TE));
    RT_PARAM(rt, b, linear_2_b, p, ".linear_2.bias", RT_DIMS1(TE));
    if (K > 0)   /* diffusers registers class_embedding right after time_embedding */
        RT_PARAM(rt, b, class_embedding_w, "class_embedding", ".weight", RT_DIMS2(K, TE));
    RT_ACT(rt, b, proj, C0);
    RT_ACT(rt, b, h, TE);
    RT_ACT(rt, b, h_act, TE);
    RT_ACT(rt, b, emb, TE);
    RT_ACT(rt, b, emb_act, TE);
}

static void out_layout(UNet* n, OutLayer* b, float** in, int C, int OC, int H) {
    NetRuntime* rt = &n->rt;
    rt_block(rt);   /* a block of its own (runtime.h) */
    const int G = n->cfg.norm_groups;
    const size_t HW = (size_t)H * H;
    b->C = C; b->OC = OC; b->H = H; b->W = H;
    RT_PARAM(rt, b, conv_norm_out_w, "conv_norm_out", ".weight", RT_DIMS1(C));
    RT_PARAM(rt, b, conv_norm_out_b, "conv_norm_out", ".bias", RT_DIMS1(C));
    RT_PARAM(rt, b, conv_out_w, "conv_out", ".weight", RT_DIMS4(OC, C, 3, 3));
    RT_PARAM(rt, b, conv_out_b, "conv_out", ".bias", RT_DIMS1(OC));
    RT_LINK(rt, b, x, in);
    RT_ACT_KEPT(rt, b, act, C * HW);
    RT_ACT(rt, b, norm_a, C);
    RT_ACT(rt, b, norm_k, C);
    RT_ACT(rt, b, mean, G);
    RT_ACT(rt, b, rstd, G);
    RT_ACT(rt, b, out, OC * HW);
    rt_need_norm(rt, C, (int)HW, G);
    rt_need_conv(rt, C, H, H, OC, 3, 1);
    RT_PREP(rt, b, conv_out_u, conv_out_w, C, H, H, OC, 3, 1);
}

/* ----------------------------------------------------------- the network */

static const char* check_config(const UNetConfig* cfg) {
    const int L = cfg->num_levels;
    if (L < 1 || L > UNET_MAX_LEVELS) return "block_out_channels: 1 to 6 levels are supported";
    if (cfg->layers_per_block < 1 || cfg->layers_per_block > UNET_MAX_LAYERS)
        return "layers_per_block: 1 to 4 are supported";
    if (cfg->in_channels < 1 || cfg->out_channels < 1)
        return "in_channels/out_channels must be >= 1";
    if (cfg->norm_groups < 1) return "norm_num_groups must be >= 1";
    if (!(cfg->norm_eps > 0)) return "norm_eps must be > 0";
    for (int i = 0; i < L; i++) {
        int c = cfg->block_out[i];
        if (c < 1 || c % cfg->norm_groups)
            return "block_out_channels must be positive multiples of norm_num_groups";
        int attn = cfg->down_attn[i] || cfg->up_attn[L - 1 - i] || (i == L - 1 && cfg->mid_attn);
        if (cfg->head_dim > 0 && attn && c % cfg->head_dim)
            return "attention_head_dim must divide the channels of every block with attention";
    }
    if (cfg->sample_size < 1 || cfg->sample_size % (1 << (L - 1)))
        return "sample_size must be divisible by 2**(levels - 1)";
    if (cfg->block_out[0] < 2) return "block_out_channels[0] must be >= 2 (time embedding)";
    if (cfg->num_class_embeds < 0 || cfg->num_class_embeds > 1000000)
        return "num_class_embeds must be in 0..1000000";
    return NULL;
}

#define MAX_SKIPS (1 + UNET_MAX_LEVELS * (UNET_MAX_LAYERS + 1))

int unet_create(UNet** out, const UNetConfig* cfg, const char** why) {
    *out = NULL;
    *why = check_config(cfg);
    if (*why) return DDPM_ERR_VALUE;
    UNet* n = calloc(1, sizeof *n);
    if (!n) return DDPM_ERR_NOMEM;
    n->cfg = *cfg;
    NetRuntime* rt = &n->rt;
    rt_init(rt, RT_EXACT);
    const int L = cfg->num_levels, S = cfg->sample_size, C0 = cfg->block_out[0];
    char name[UNET_NAME_LEN];

    /* diffusers' order: conv_in, time_embedding, down, mid, up, conv_norm_out, conv_out */
    rt_act(rt, &n->x, &n->dx, (size_t)cfg->in_channels * S * S);
    float** h = conv_layout(n, &n->conv_in, "conv_in", &n->x, cfg->in_channels, C0, S, 1);
    time_layout(n, &n->time, C0, cfg->num_class_embeds);
    /* the forward runs the time embedding first, then conv_in, then the rest in
     * this order: a lean workspace shares only the slots from here on */
    rt_plan_begin(rt);

    /* the down path's outputs, which the up path concatenates in reverse */
    float** skip[MAX_SKIPS];
    int skip_c[MAX_SKIPS], ns = 0;
    int ch = C0, H = S;
    skip[ns] = h; skip_c[ns++] = ch;
    for (int i = 0; i < L; i++) {
        DownBlock* d = &n->down[i];
        d->layers = cfg->layers_per_block;
        d->has_attn = cfg->down_attn[i];
        d->has_downsampler = i < L - 1;
        for (int j = 0; j < d->layers; j++) {
            snprintf(name, sizeof name, "down_blocks.%d.resnets.%d", i, j);
            h = resnet_layout(n, &d->resnets[j], name, h, ch, cfg->block_out[i], H);
            ch = cfg->block_out[i];
            if (d->has_attn) {
                snprintf(name, sizeof name, "down_blocks.%d.attentions.%d", i, j);
                h = attn_layout(n, &d->attentions[j], name, h, ch, H);
            }
            skip[ns] = h; skip_c[ns++] = ch;
        }
        if (d->has_downsampler) {
            snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
            h = conv_layout(n, &d->downsampler, name, h, ch, ch, H, 2);
            H /= 2;
            skip[ns] = h; skip_c[ns++] = ch;
        }
    }

    MidBlock* m = &n->mid;
    m->has_attn = cfg->mid_attn;
    h = resnet_layout(n, &m->resnets[0], "mid_block.resnets.0", h, ch, ch, H);
    if (m->has_attn) h = attn_layout(n, &m->attention, "mid_block.attentions.0", h, ch, H);
    h = resnet_layout(n, &m->resnets[1], "mid_block.resnets.1", h, ch, ch, H);

    for (int i = 0; i < L; i++) {
        UpBlock* u = &n->up[i];
        const int OC = cfg->block_out[L - 1 - i];
        u->layers = cfg->layers_per_block + 1;
        u->has_attn = cfg->up_attn[i];
        u->has_upsampler = i < L - 1;
        for (int j = 0; j < u->layers; j++) {
            ns--;
            h = concat_layout(n, &u->cats[j], h, ch, skip[ns], skip_c[ns], H);
            snprintf(name, sizeof name, "up_blocks.%d.resnets.%d", i, j);
            h = resnet_layout(n, &u->resnets[j], name, h, ch + skip_c[ns], OC, H);
            ch = OC;
            if (u->has_attn) {
                snprintf(name, sizeof name, "up_blocks.%d.attentions.%d", i, j);
                h = attn_layout(n, &u->attentions[j], name, h, ch, H);
            }
        }
        if (u->has_upsampler) {
            snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
            h = upsampler_layout(n, &u->upsampler, name, h, ch, H);
            H *= 2;
        }
    }
    out_layout(n, &n->out, h, ch, cfg->out_channels, H);

    if (rt->status || ns != 0) {
        int st = rt->status == DDPM_ERR_NOMEM ? DDPM_ERR_NOMEM : DDPM_ERR_VALUE;
        unet_free(n);
        *why = "internal: network layout failed";
        return st;
    }
    *out = n;
    return DDPM_OK;
}

void unet_free(UNet* n) {
    if (!n) return;
    for (int i = 0; i < UNET_LANES; i++) unet_free(n->lanes[i]);
    free(n->lane_grads);
    free(n->prep);
    rt_free(&n->rt);
    free(n->labels);
    free(n);
}

size_t unet_num_parameters(const UNet* n) { return n->rt.nparams; }
int unet_num_tensors(const UNet* n) { return n->rt.ntensors; }
const ParamTensor* unet_tensor(const UNet* n, int i) {
    return (i >= 0 && i < n->rt.ntensors) ? &n->rt.tensors[i] : NULL;
}
const UNetConfig* unet_config(const UNet* n) { return &n->cfg; }

/* ------------------------------------------------------------------ flops */

/* Multiply-adds x 2 per image, added block by block in the forward's order. */

static void resnet_flops(double* f, const ResnetBlock* b, int TE) {
    const double HW = (double)b->H * b->W;
    *f += 2.0 * b->OC * b->C * 9 * HW + 2.0 * b->OC * b->OC * 9 * HW + 2.0 * TE * b->OC;
    if (b->C != b->OC) *f += 2.0 * b->OC * b->C * HW;   /* the 1x1 shortcut */
}

static void attn_flops(double* f, const AttnBlock* b) {
    const double HW = (double)b->H * b->W;
    *f += 2.0 * 4 * b->C * b->C * HW + 2.0 * 2 * HW * HW * b->C;
}

double unet_flops_per_image(const UNet* n) {
    const int TE = n->time.TE, C0 = n->time.C0, L = n->cfg.num_levels;
    double f = 0.0;
    f += 2.0 * (C0 * TE + TE * TE);
    const ConvLayer* c = &n->conv_in;
    f += 2.0 * c->OC * c->C * 9 * ((double)c->H * c->W);
    for (int i = 0; i < L; i++) {
        const DownBlock* d = &n->down[i];
        for (int j = 0; j < d->layers; j++) {
            resnet_flops(&f, &d->resnets[j], TE);
            if (d->has_attn) attn_flops(&f, &d->attentions[j]);
        }
        c = &d->downsampler;
        if (d->has_downsampler) f += 2.0 * c->OC * c->C * 9 * ((double)c->H * c->W) / 4;
    }
    resnet_flops(&f, &n->mid.resnets[0], TE);
    if (n->mid.has_attn) attn_flops(&f, &n->mid.attention);
    resnet_flops(&f, &n->mid.resnets[1], TE);
    for (int i = 0; i < L; i++) {
        const UpBlock* u = &n->up[i];
        for (int j = 0; j < u->layers; j++) {
            resnet_flops(&f, &u->resnets[j], TE);
            if (u->has_attn) attn_flops(&f, &u->attentions[j]);
        }
        const Upsampler* s = &u->upsampler;
        if (u->has_upsampler) f += 2.0 * s->C * s->C * 9 * ((double)s->H * s->W) * 4;
    }
    const OutLayer* o = &n->out;
    f += 2.0 * o->OC * o->C * 9 * ((double)o->H * o->W);
    return f;
}
