/*
 * unet_lanes.c - the U-Net on two lanes (unet_lanes.h): a batch cut in two
 * halves, the halves run at once by ddpm_run_lanes, each on its own network.
 */
#include "nets/unet_lanes.h"
#include "nets/unet_blocks.h"   /* struct UNet: its twins */
#include "core/common.h"
#include "core/alloc.h"
#include "core/threads.h"

#include <stdlib.h>
#include <string.h>

/* Twin i of net, built on first use: the same config, a workspace that keeps
 * the largest half it has run (RT_GROW: halves of different sizes alternate). */
static int twin(UNet* net, int i, UNet** out) {
    if (!net->lanes[i]) {
        const char* why;
        int st = unet_create(&net->lanes[i], &net->cfg, &why);
        if (st) return st == DDPM_ERR_VALUE ? DDPM_ERR_NOMEM : st;   /* net's config was valid */
        net->lanes[i]->rt.policy = RT_GROW;
    }
    *out = net->lanes[i];
    return DDPM_OK;
}

/* One batch's two halves, for ddpm_run_lanes: half i is images [b0, b0 + nb). */
typedef struct {
    UNet* net[UNET_LANES];     /* the network each half runs on */
    const float* params;
    const float* x;            /* (n, Cin, S, S) */
    const float* t;            /* (n,) */
    const int64_t* labels;     /* (n,) or NULL */
    float* out;                /* (n, Cout, S, S) */
    const float* dout;         /* (n, Cout, S, S) the backward's */
    float* grads[UNET_LANES];  /* (P,) each half's parameter gradient (the backward) */
    int n, keep;
    size_t din, dout_per;      /* floats per image in and out */
} Halves;

static void half_range(int n, int i, int* b0, int* nb) {
    *b0 = i == 0 ? 0 : (n + 1) / 2;
    *nb = i == 0 ? (n + 1) / 2 : n / 2;
}

static int forward_half(void* ctx, int i) {
    const Halves* h = ctx;
    int b0, nb;
    half_range(h->n, i, &b0, &nb);
    return unet_forward(h->net[i], h->params, h->x + (size_t)b0 * h->din, h->t + b0,
                        h->labels ? h->labels + b0 : NULL, h->out + (size_t)b0 * h->dout_per,
                        nb, h->keep);
}

static int backward_half(void* ctx, int i) {
    const Halves* h = ctx;
    int b0, nb;
    half_range(h->n, i, &b0, &nb);
    memset(h->grads[i], 0, sizeof(float) * unet_num_parameters(h->net[i]));
    return unet_backward(h->net[i], h->params, h->grads[i], h->dout + (size_t)b0 * h->dout_per,
                         NULL, nb, unet_generation(h->net[i]));
}

static Halves halves_of(const UNet* net, const float* params) {
    const size_t HW = (size_t)net->cfg.sample_size * net->cfg.sample_size;
    Halves h = {.params = params, .din = net->cfg.in_channels * HW,
                .dout_per = net->cfg.out_channels * HW};
    return h;
}

/* net->prep for key (made from params when key is new), or NULL without a
 * key; *st DDPM_ERR_NOMEM when it cannot be allocated. */
static const float* prepared(UNet* net, const float* params, uint64_t key, int* st) {
    *st = DDPM_OK;
    if (!key || !net->rt.prep_floats) return NULL;
    if (key != net->prep_key || !net->prep) {
        if (!net->prep && !(net->prep = ddpm_alloc_large(sizeof(float) * net->rt.prep_floats))) {
            *st = DDPM_ERR_NOMEM;
            return NULL;
        }
        rt_bind_params(&net->rt, params, NULL);
        rt_prep_build(&net->rt, net->prep);
        net->prep_key = key;
    }
    return net->prep;
}

static int infer_chunks(Halves* h, const float* params, const float* x, const float* t,
                        const int64_t* labels, float* out, int N, unet_stop_fn stop,
                        void* stop_ctx) {
    for (int b0 = 0; b0 < N; b0 += UNET_CHUNK) {
        if (b0 > 0 && stop && stop(stop_ctx)) return DDPM_ERR_INTERRUPTED;
        h->n = N - b0 < UNET_CHUNK ? N - b0 : UNET_CHUNK;
        h->x = x + (size_t)b0 * h->din;
        h->t = t + b0;
        h->labels = labels ? labels + b0 : NULL;
        h->out = out + (size_t)b0 * h->dout_per;
        int st = h->n >= UNET_SPLIT
            ? ddpm_run_lanes(UNET_LANES, forward_half, h)
            : unet_forward(h->net[0], params, h->x, h->t, h->labels, h->out, h->n, 0);
        if (st) return st;
    }
    return DDPM_OK;
}

int unet_infer(UNet* net, const float* params, const float* x, const float* t,
               const int64_t* labels, float* out, int N, unet_stop_fn stop, void* stop_ctx,
               uint64_t key) {
    Halves h = halves_of(net, params);
    rt_release(&net->rt, 1);   /* a backward's scratch (a kept forward's activations stay) */
    for (int i = 0; i < UNET_LANES; i++) {
        int st = twin(net, i, &h.net[i]);
        if (st) return st;
        /* only what an inference forward writes (a training step's half, sized
         * for it and with gradients, is freed) */
        rt_set_lean(&h.net[i]->rt, 1);
    }
    int st;
    const float* prep = prepared(net, params, key, &st);
    if (st) return st;
    /* the twins read the prepared weights for this call only */
    for (int i = 0; i < UNET_LANES; i++) rt_bind_prep(&h.net[i]->rt, prep);
    st = infer_chunks(&h, params, x, t, labels, out, N, stop, stop_ctx);
    for (int i = 0; i < UNET_LANES; i++) rt_bind_prep(&h.net[i]->rt, NULL);
    return st;
}

int unet_forward_halves(UNet* net, const float* params, const float* x, const float* t,
                        const int64_t* labels, float* out, int B) {
    if (B < UNET_SPLIT) return unet_forward(net, params, x, t, labels, out, B, 1);
    Halves h = halves_of(net, params);
    h.net[0] = net;
    int st = twin(net, 1, &h.net[1]);
    if (st) return st;
    rt_set_lean(&h.net[1]->rt, 0);   /* the whole workspace, for the backward */
    if (net->lanes[0]) rt_release(&net->lanes[0]->rt, 0);   /* the denoiser's: not needed here */
    free(net->prep);                 /* and its prepared weights, stale once params train */
    net->prep = NULL;
    h.x = x, h.t = t, h.labels = labels, h.out = out, h.n = B, h.keep = 1;
    return ddpm_run_lanes(UNET_LANES, forward_half, &h);
}

int unet_backward_halves(UNet* net, const float* params, float* grads, const float* dout, int B) {
    const size_t P = unet_num_parameters(net);
    if (B < UNET_SPLIT) {
        memset(grads, 0, sizeof(float) * P);
        return unet_backward(net, params, grads, dout, NULL, B, unet_generation(net));
    }
    if (!net->lanes[1]) return DDPM_ERR_STALE;   /* no split forward ran */
    if (!net->lane_grads && !(net->lane_grads = ddpm_alloc_large(sizeof(float) * P)))
        return DDPM_ERR_NOMEM;
    Halves h = halves_of(net, params);
    h.net[0] = net, h.net[1] = net->lanes[1];
    h.grads[0] = grads, h.grads[1] = net->lane_grads;
    h.dout = dout, h.n = B;
    int st = ddpm_run_lanes(UNET_LANES, backward_half, &h);
    if (!st) ddpm_add(grads, net->lane_grads, P);   /* half 0's + half 1's, elementwise */
    return st;
}
