/*
 * unet_infer.c - unet_infer (unet_infer.h): a batch in chunks, a chunk in two
 * halves, the halves on two lanes at once.
 */
#include "nets/unet_infer.h"
#include "nets/unet_blocks.h"   /* struct UNet: its lanes */
#include "core/common.h"
#include "core/threads.h"

/* Lane i of net, built on first use: the same config, a workspace that keeps
 * the largest part it has run (RT_GROW: halves of different sizes alternate). */
static int lane(UNet* net, int i, UNet** out) {
    if (!net->lanes[i]) {
        const char* why;
        int st = unet_create(&net->lanes[i], &net->cfg, &why);
        if (st) return st == DDPM_ERR_VALUE ? DDPM_ERR_NOMEM : st;   /* net's config was valid */
        net->lanes[i]->rt.policy = RT_GROW;
    }
    *out = net->lanes[i];
    return DDPM_OK;
}

/* One chunk's halves, for ddpm_run_lanes. */
typedef struct {
    UNet* lane[UNET_LANES];
    const float* params;
    const float* x;            /* (n, Cin, S, S) the chunk */
    const float* t;            /* (n,) */
    const int64_t* labels;     /* (n,) or NULL */
    float* out;                /* (n, Cout, S, S) */
    int n;
    size_t din, dout;          /* floats per image in and out */
} Halves;

static int run_half(void* ctx, int i) {
    const Halves* h = ctx;
    const int b0 = i == 0 ? 0 : (h->n + 1) / 2;
    const int nb = i == 0 ? (h->n + 1) / 2 : h->n / 2;
    return unet_forward(h->lane[i], h->params, h->x + (size_t)b0 * h->din, h->t + b0,
                        h->labels ? h->labels + b0 : NULL, h->out + (size_t)b0 * h->dout, nb, 0);
}

int unet_infer(UNet* net, const float* params, const float* x, const float* t,
               const int64_t* labels, float* out, int N, unet_stop_fn stop, void* stop_ctx) {
    const UNetConfig* c = &net->cfg;
    const size_t HW = (size_t)c->sample_size * c->sample_size;
    Halves h = {.params = params, .din = c->in_channels * HW, .dout = c->out_channels * HW};
    for (int i = 0; i < UNET_LANES; i++) {
        int st = lane(net, i, &h.lane[i]);
        if (st) return st;
    }
    for (int b0 = 0; b0 < N; b0 += UNET_CHUNK) {
        if (b0 > 0 && stop && stop(stop_ctx)) return DDPM_ERR_INTERRUPTED;
        h.n = N - b0 < UNET_CHUNK ? N - b0 : UNET_CHUNK;
        h.x = x + (size_t)b0 * h.din;
        h.t = t + b0;
        h.labels = labels ? labels + b0 : NULL;
        h.out = out + (size_t)b0 * h.dout;
        int st = h.n >= UNET_SPLIT
            ? ddpm_run_lanes(UNET_LANES, run_half, &h)
            : unet_forward(h.lane[0], params, h.x, h.t, h.labels, h.out, h.n, 0);
        if (st) return st;
    }
    return DDPM_OK;
}
