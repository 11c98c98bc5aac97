/*
 * winograd.h - Winograd F(m x m, 3x3) for conv2d.c's 3x3 stride-1 layers:
 * the engine (winograd.c) and its two kinds of tile, F(2x2, 3x3)
 * (wino_f2.c) and F(4x4, 3x3) (wino_f4.c, whole 7x7 planes in
 * wino_f4_planes.c, their shared steps in wino_f4_steps.h).  Internal to
 * layers/.
 *
 * Each m x m block of outputs ("tile") comes from an a x a window of the
 * input (a = m + 2) starting one row/column up-left (the zero padding):
 * Y = A^T [(G g G^T) o (B^T d B)] A.  The elementwise product, summed over
 * input channels, is a*a independent GEMMs, one per position xi of the
 * transformed tile, with N = tiles: a^2 / m^2 multiplies per output and
 * input/output channel pair instead of 9 (4 for F(2x2), 2.25 for F(4x4)).
 *
 * Tiles are numbered by tile row: the B * th rows of tiles of a channel's
 * planes (B, H, W), th = ceil(H/m), row r = b th + ty, tw = ceil(W/m)
 * tiles per row.  A kind transforms "segments": tile rows [r, r + n) of one
 * channel's planes, written (or read) at k = (r - r_seg) tw + tx of a buffer
 * row whose a*a positions are xs floats apart.
 *
 * Legend: B batch, C input and OC output channels, H, W the input (and
 * output) size, a the transformed tile side, T tiles of a chunk.
 */
#ifndef DDPM_WINOGRAD_H
#define DDPM_WINOGRAD_H

#include <stddef.h>
#include "layers/groupnorm.h"   /* NormAct: a GroupNorm (+ SiLU) the input is read through */

#define WINO_MAX_W 256   /* widest row the kinds' stack buffers take */

/* Where an output plane starts (conv2d_forward_add's start): bias[oc] (or 0),
 * after add_bo[b][oc] (B, OC) when given. */
typedef struct {
    const float* bias;     /* (OC,) or NULL */
    const float* add_bo;   /* (B, OC) or NULL */
    int oc, OC;
} WinoStart;

static inline float wino_start(const WinoStart* s, int b) {
    float bv = s->bias ? s->bias[s->oc] : 0.0f;
    return s->add_bo ? s->add_bo[(size_t)b * s->OC + s->oc] + bv : bv;
}

typedef struct {
    int m, a;              /* output tile m x m, transformed tile a x a, a = m + 2 */
    int cross_planes;      /* segments may run across samples (else: within one plane) */
    int seg_tiles;         /* at most this many tiles per segment */
    size_t budget_fwd;     /* floats of V and M per chunk: forward, */
    size_t budget_bwd;     /* backward (see winograd.c) */
    int align;             /* chunks of a multiple of this many tiles where the budget allows */
    /* u[xi xs + i fs] (a*a values each) = G g_i G^T for the n filters
     * g_i = g + i gstep (3, 3) read with strides (sh, sw): (3, 1) as stored,
     * (-3, -1) from the last element for the 180-degree rotation the input
     * gradient convolves with; fs 1 for a row-major row of U, 4 for a row
     * in one of gemm_small_packed's blocks.  Row by row: u's a*a streams
     * each written in order (a filter's values are xs apart; one filter at a
     * time touched a new page per store) */
    void (*weight)(float* u, size_t xs, size_t fs, const float* g, int n, size_t gstep, int sh,
                   int sw);
    /* dg_i (3, 3) += G^T du_i G for dg_i = dg + 9 i, du_i[xi xs] = du[xi xs + i],
     * i = 0..n-1 */
    void (*weight_adjoint)(float* dg, const float* du, size_t xs, int n);
    /* V[xi xs + k] = B^T d B for the tiles of rows [r, r + n) of x (B, H, W),
     * or of groupnorm_act(x) with act's a[b], k[b] for plane b (act NULL: x) */
    void (*input)(float* V, size_t xs, const float* x, const NormAct* act, int H, int W, int r,
                  int n);
    /* rows of y (B, H, W) covered by tile rows [r, r + n) = (base + start) +
     * A^T m A, m[xi xs + k]; base (B, H, W) (may be y) or NULL; outputs
     * beyond H, W dropped */
    void (*output)(float* y, const float* base, const float* M, size_t xs, const WinoStart* s,
                   int H, int W, int r, int n);
    /* dM[xi xs + k] = A dy A^T of the m x m blocks of dy (B, H, W) (zeros
     * beyond H, W) of tile rows [r, r + n) */
    void (*output_adjoint)(float* dM, size_t xs, const float* dy, int H, int W, int r, int n);
    /* Small planes, whole: planes of at most plane_max pixels a side (0:
     * none) may go through a chunk as planes b0 .. b0 + P - 1.  A
     * convolution chunk's (the forward, the input gradient) numbers their
     * tiles in an order of the kind's choosing (plane_major 0): V[xi xs + k]
     * from x (read through act or not), and back, y = (base + start) +
     * A^T m A.  The weight gradient's GEMMs sum over the tiles in their
     * order, so its chunks ask for the segments' order (plane_major 1, tile
     * ty tw + tx of plane p at p th tw + ty tw + tx): V, and dM = A dy A^T. */
    int plane_max;
    int plane_lanes;       /* planes side by side: chunks of whole multiples pay */
    void (*input_planes)(float* V, size_t xs, const float* x, const NormAct* act, int H, int W,
                         int b0, int P, int plane_major);
    void (*output_planes)(float* y, const float* base, const float* M, size_t xs,
                          const WinoStart* s, int H, int W, int b0, int P);
    void (*output_adjoint_planes)(float* dM, size_t xs, const float* dy, int H, int W, int b0,
                                  int P);
} WinoKind;

extern const WinoKind wino_f2;   /* F(2x2, 3x3): adds and halvings only */
extern const WinoKind wino_f4;   /* F(4x4, 3x3): points 0, 1, -1, 1/2, -2, inf */

static inline int wino_tiles(int n, int m) { return (n + m - 1) / m; }

/* Scratch (floats) wino_backward needs with kinds kw, kx; wino_forward with
 * kind k needs wino_scratch_floats(k, k, ...). */
size_t wino_scratch_floats(const WinoKind* kw, const WinoKind* kx, int B, int C, int H, int W,
                           int OC);

/* U (a*a, OC, C) = the forward's transformed weights of weight (OC, C, 3,
 * 3): a*a OC C floats, each position's (OC, C) matrix in gemm_small's
 * packed layout (the products' A). */
void wino_weights(const WinoKind* k, float* U, const float* weight, int C, int OC);

/* out (OC, B, H, W) = (start + bias) + conv3x3(inp (C, B, H, W)), the start
 * add (OC, B, H, W) if given (may be out), else add_bo (B, OC) per sample
 * and channel, else 0; weight (OC, C, 3, 3); bias (OC,) or NULL; inp read
 * through act's (C, B) coefficients, or as it is with act NULL.  U: the
 * weights as wino_weights transforms them, or NULL to transform them here. */
void wino_forward(const WinoKind* k, float* out, float* scratch, const float* inp,
                  const NormAct* act, const float* weight, const float* U, const float* bias,
                  const float* add, const float* add_bo, int B, int C, int H, int W, int OC);

/* dweight (OC, C, 3, 3) += ... with kind kw; dinp (C, B, H, W) += ...
 * (accumulate) or = ..., or NULL, with kind kx; dout (OC, B, H, W). */
void wino_backward(const WinoKind* kw, const WinoKind* kx, float* dinp, float* dweight,
                   float* scratch, const float* dout, const float* inp, const float* weight,
                   int B, int C, int H, int W, int OC, int accumulate);

/* Testing (conv2d_whole_planes): 0 turns the kinds' whole-plane transforms
 * off, 1 on (the default); returns the previous setting. */
int wino_whole_planes(int on);

#endif /* DDPM_WINOGRAD_H */
