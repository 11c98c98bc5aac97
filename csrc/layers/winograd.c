/*
 * winograd.c - the Winograd engine of winograd.h: chunks of tile rows, the
 * a*a GEMMs per chunk, threads, the weight-gradient partial sums.  The
 * transforms are the kind's (wino_f2.c, wino_f4.c).
 *
 * Work goes in chunks of tile rows (size from the shapes alone), each chunk
 * done start to end - transform, a*a single-threaded products (gemm_small.h
 * forward, OpenBLAS for the weight gradient), inverse
 * transform - by one thread in its own scratch lane: no barrier per chunk
 * (they cost most when the cores are shared), the data stays in that core's
 * L2, and every float is produced by the same operations in the same order
 * whatever the thread count.  backward-data is the forward convolution of
 * dY with the 180-degree-rotated, transposed weights (the same thing for
 * stride 1, pad 1), so every chunk's outputs are disjoint tiles.
 */
#include "layers/winograd.h"
#include "core/common.h"
#include "core/gemm_small.h"
#include "core/threads.h"
#include <cblas.h>

#define WINO_LANES 8                   /* scratch lanes: at most this many threads (a laptop
                                        * has 4-8 cores; each lane costs ~2 MB) */
#define WINO_INPLACE_MAX_K 112       /* see wino_backward */
#define WINO_SUM_BLOCK 4096            /* floats per block of the weight-gradient partial sum */
/* Chunks a layer is cut into at least (when it has that many tile rows): 4,
 * forward and backward, so that 4 cores get work.  More chunks mean smaller
 * GEMMs: with the forward at 8 (one per lane), a 7x7 layer of 16 images ran
 * its 36 GEMMs per chunk on 8 tiles, and the U-Net's forward at B = 16 took
 * 162-169 ms on 1 thread against 143-149 with 4 (2 threads: 96-100 against
 * 93-96; B = 64 is bound by the budget, not by this).  In the backward each
 * chunk also writes (and the end sums) a partial weight gradient of a*a OC C
 * floats, which on small batches cost more than the chunk's GEMMs: B = 16,
 * 1 thread, all the U-Net's 3x3 layers: 280 ms with 8 chunks, 219 with 4,
 * 203 with 2 (B = 128: 1512, 1479, 1475). */
#define WINO_MIN_CHUNKS_FWD 4
#define WINO_MIN_CHUNKS_BWD 4
/* ... but a forward chunk keeps at least this many tiles where the layer has
 * them: each chunk reads all a*a OC C transformed weights, and a 7x7 layer of
 * 8 images (a sampler's lane at 16 images) cut in 4 chunks of 8 tiles read
 * them 4 times, in products too narrow to keep the FMAs busy (the 8-tile
 * products took 25% of the sampler's time there; one chunk of 32 tiles: see
 * wino_rows).  Only the forward: the backward's weight-gradient partials,
 * summed per chunk, would change their bits. */
#define WINO_MIN_TILES_FWD 32

static int whole_planes = 1;   /* testing switch: wino_whole_planes */

int wino_whole_planes(int on) {
    const int was = whole_planes;
    whole_planes = on != 0;
    return was;
}

/* Whether the chunk of tile rows [r0, r0 + nr) of planes (H, W) goes as
 * whole planes: the kind takes planes this small, and the chunk holds whole
 * ones, enough to fill the lanes (7x7 planes 4 to a chunk ran ~5% slower
 * so than row by row). */
static int wino_planes(const WinoKind* k, int H, int W, int r0, int nr) {
    if (!whole_planes || !k->plane_max || H > k->plane_max || W > k->plane_max) return 0;
    const int th = wino_tiles(H, k->m);
    return r0 % th == 0 && nr % th == 0 && nr / th >= k->plane_lanes;
}

/* Tile rows per chunk (a chunk is a run of the B * th rows of tiles, across
 * samples) for the forward (fwd) or the backward: a function of the shapes
 * alone, within the budget of floats for V and M, and small enough that
 * there are at least WINO_MIN_CHUNKS_* chunks (a forward chunk keeping
 * WINO_MIN_TILES_FWD tiles).  The forward's products (gemm_small.h) sum each
 * element in one order whatever the chunk; the weight gradient's, and the
 * forward's on CPUs without AVX2 + FMA, go to OpenBLAS, which picks its GEMM
 * kernel by the shape, N (the chunk's tiles) included: there changing it
 * changes bits. */
static int wino_rows(const WinoKind* k, int B, int C, int H, int W, int OC, int fwd) {
    const int tw = wino_tiles(W, k->m);
    const int min_chunks = fwd ? WINO_MIN_CHUNKS_FWD : WINO_MIN_CHUNKS_BWD;
    size_t per_row = (size_t)k->a * k->a * (C + OC) * tw;
    size_t rows = (size_t)B * wino_tiles(H, k->m);
    size_t nr = (fwd ? k->budget_fwd : k->budget_bwd) / per_row;
    size_t even = (rows + min_chunks - 1) / min_chunks;
    const size_t least = fwd ? (WINO_MIN_TILES_FWD + tw - 1) / tw : 1;
    if (even < least) even = least;
    if (nr > even) nr = even;
    if (nr > rows) nr = rows;   /* least can exceed a small layer's rows */
    /* whole SIMD panels for the GEMMs' N where that fits: T = nr tw a
     * multiple of align */
    size_t step = (size_t)k->align;
    for (int t = tw; step > 1 && t % 2 == 0; t /= 2) step /= 2;
    if (nr >= step) nr -= nr % step;
    if (nr < 1) nr = 1;
    return (int)nr;
}

/* Floats from one position's block of a lane buffer to the next, for n
 * floats per position: n rounded up to whole 64-byte lines, and to an odd
 * number of them.  A transform writes (or reads) one stream per position,
 * a*a streams this far apart; a multiple of 4 KB apart (C T = 32 x 224
 * floats is 7 x 4 KB) put all 36 of F(4x4)'s in the same L1 set, which holds
 * 12 lines: more streams than ways.  An odd number of lines spreads them over
 * 36 different sets.  The GEMMs' shapes do not change; measured gain on the
 * U-Net's 3x3 forward layers, with the staging change of wino_f4.c: ~4-7%. */
static size_t wino_pitch(size_t n) {
    size_t p = (n + 15) / 16 * 16;
    if ((p / 16) % 2 == 0) p += 16;
    return p;
}

/* Scratch, for weight-gradient kind kw and input-gradient (or forward) kind
 * kx: U (ax, OC, C) or the rotated (ax, C, OC), at least aw OC C floats |
 * dU partials (WINO_LANES, aw, OC, C) | WINO_LANES lanes, each V (a*a, C, T)
 * and M (a*a, OC, T) for the larger of the two kinds, each position's
 * block wino_pitch() floats from the next, T = tiles of one of
 * its chunks (kx's: the larger of its forward and backward chunks). */
static size_t wino_layout(const WinoKind* kw, const WinoKind* kx, int B, int C, int H, int W,
                          int OC, size_t* off_du, size_t* off_lane, size_t* lane) {
    const size_t aw = (size_t)kw->a * kw->a, ax = (size_t)kx->a * kx->a;
    size_t Tw = (size_t)wino_rows(kw, B, C, H, W, OC, 0) * wino_tiles(W, kw->m);
    const int fx = wino_rows(kx, B, C, H, W, OC, 1), bx = wino_rows(kx, B, C, H, W, OC, 0);
    size_t Tx = (size_t)(fx > bx ? fx : bx) * wino_tiles(W, kx->m);
    size_t lw = aw * (wino_pitch((size_t)C * Tw) + wino_pitch((size_t)OC * Tw));
    size_t lx = ax * (wino_pitch((size_t)C * Tx) + wino_pitch((size_t)OC * Tx));
    *off_du = (aw > ax ? aw : ax) * OC * C;
    *off_lane = *off_du + WINO_LANES * aw * OC * C;
    *lane = lw > lx ? lw : lx;
    return *off_lane + WINO_LANES * *lane;
}

size_t wino_scratch_floats(const WinoKind* kw, const WinoKind* kx, int B, int C, int H, int W,
                           int OC) {
    size_t a, b, c;
    return wino_layout(kw, kx, B, C, H, W, OC, &a, &b, &c);
}

/* Applies BODY to the tile rows [r0, r0 + nr) of the channels ch = 0..NC-1
 * in segments: rows r0 + r .. r0 + r + n - 1, at column r tw of buffer row
 * ch; stack = ch's planes, ch B H W floats in. */
#define WINO_SEGS_LOOP(NC, BODY)                                                   \
    for (int ch = 0; ch < (NC); ch++)                                              \
        for (int r = 0; r < nr;) {                                                 \
            int n = nr - r < seg ? nr - r : seg;                                   \
            if (!k->cross_planes) {                                                \
                const int left = th - (r0 + r) % th;                               \
                if (n > left) n = left;                                            \
            }                                                                      \
            const size_t stack = (size_t)ch * B * H * W;                           \
            const size_t at = (size_t)ch * T + (size_t)r * tw;                     \
            BODY;                                                                  \
            r += n;                                                                \
        }

/* Tile rows per segment: as many as fit in seg_tiles, or down to half as
 * many if then the segment's tiles are a multiple of 16, so that the
 * transforms' flat loops (16-float vectors in the AVX-512 clones) end
 * without a scalar tail (28x28 planes: 16 rows of 7 tiles, not 18).  Which
 * tiles a segment holds does not change any number: each tile's transform
 * is its own. */
static inline int wino_seg_rows(int seg_tiles, int tw) {
    const int n = seg_tiles / tw > 1 ? seg_tiles / tw : 1;
    for (int q = n; 2 * q > n; q--)
        if (q * tw % 16 == 0) return q;
    return n;
}

/* The sizes every chunk function needs, from (k, B, H, W, nr). */
#define WINO_CHUNK_SIZES                                                           \
    const int th = wino_tiles(H, k->m), tw = wino_tiles(W, k->m);                  \
    const int aa = k->a * k->a;                                                    \
    const size_t T = (size_t)nr * tw;                                              \
    const int seg = wino_seg_rows(k->seg_tiles, tw);                               \
    (void)th

/* k->output for channel oc's planes, its start from (bias, add_bo). */
static inline void output_seg(const WinoKind* k, float* y, const float* base, const float* M,
                              size_t xs, const float* bias, const float* add_bo, int oc, int OC,
                              int H, int W, int r, int n) {
    const WinoStart s = {bias, add_bo, oc, OC};
    k->output(y, base, M, xs, &s, H, W, r, n);
}

/* Channel ch's view of act (its B coefficients), or NULL without one. */
static inline const NormAct* act_channel(NormAct* view, const NormAct* act, int ch, int B) {
    if (!act) return NULL;
    *view = (NormAct){act->a + (size_t)ch * B, act->k + (size_t)ch * B, act->silu};
    return view;
}

/* k->input for channel ch's planes, read through its view of act. */
static inline void input_seg(const WinoKind* k, float* V, size_t xs, const float* x,
                             const NormAct* act, int ch, int B, int H, int W, int r, int n) {
    NormAct view;
    k->input(V, xs, x, act_channel(&view, act, ch, B), H, W, r, n);
}

/* out (OCo, B, H, W) = (start + bias) + conv3x3(x (Ci, B, H, W)) on the tile
 * rows [r0, r0 + nr), start as conv2d_forward_add says, x read through act
 * (or NULL); U (a*a, OCo, Ci) the transformed weights (each position's
 * matrix packed for gemm_small_packed); V (a*a, Ci, T),
 * M (a*a, OCo, T) this lane's buffers. */
static void wino_conv_chunk(const WinoKind* k, float* out, float* V, float* M, const float* x,
                            const NormAct* act, const float* U, const float* bias,
                            const float* add, const float* add_bo, int B, int Ci, int H, int W,
                            int OCo, int r0, int nr) {
    WINO_CHUNK_SIZES;
    const size_t vs = wino_pitch((size_t)Ci * T), ms = wino_pitch((size_t)OCo * T);
    const size_t plane = (size_t)B * H * W;
    /* whole small planes in the kind's own order, where it has them */
    const int planes = wino_planes(k, H, W, r0, nr);
    if (planes)
        for (int ch = 0; ch < Ci; ch++) {
            NormAct view;
            k->input_planes(V + (size_t)ch * T, vs, x + (size_t)ch * plane,
                            act_channel(&view, act, ch, B), H, W, r0 / th, nr / th, 0);
        }
    else
        WINO_SEGS_LOOP(Ci, input_seg(k, V + at, vs, x + stack, act, ch, B, H, W, r0 + r, n));
    for (int xi = 0; xi < aa; xi++)
        gemm_small_packed(OCo, (int)T, Ci, U + (size_t)xi * OCo * Ci, V + xi * vs, T,
                          M + xi * ms, T);
    if (planes)
        for (int oc = 0; oc < OCo; oc++) {
            const WinoStart s = {bias, add_bo, oc, OCo};
            k->output_planes(out + (size_t)oc * plane, add ? add + (size_t)oc * plane : NULL,
                             M + (size_t)oc * T, ms, &s, H, W, r0 / th, nr / th);
        }
    else
        WINO_SEGS_LOOP(OCo, output_seg(k, out + stack, add ? add + stack : NULL, M + at, ms, bias,
                                       add_bo, ch, OCo, H, W, r0 + r, n));
}

/* dU (a*a, OC, C) = beta dU + dM V^T over the tile rows [r0, r0 + nr)
 * (beta 0 starts a partial sum, 1 adds to it): V = B^T x B of
 * inp (C, B, H, W), dM = A dy A^T of dout (OC, B, H, W). */
static void wino_dweight_chunk(const WinoKind* k, float* dU, float* V, float* dM,
                               const float* dout, const float* inp, int B, int C, int H, int W,
                               int OC, int r0, int nr, float beta) {
    WINO_CHUNK_SIZES;
    const size_t vs = wino_pitch((size_t)C * T), ms = wino_pitch((size_t)OC * T);
    if (wino_planes(k, H, W, r0, nr)) {   /* whole small planes, in the segments' order */
        const size_t plane = (size_t)B * H * W;
        for (int c = 0; c < C; c++)
            k->input_planes(V + (size_t)c * T, vs, inp + (size_t)c * plane, NULL, H, W, r0 / th,
                            nr / th, 1);
        for (int oc = 0; oc < OC; oc++)
            k->output_adjoint_planes(dM + (size_t)oc * T, ms, dout + (size_t)oc * plane, H, W,
                                     r0 / th, nr / th);
    } else {
        WINO_SEGS_LOOP(C, k->input(V + at, vs, inp + stack, NULL, H, W, r0 + r, n));
        WINO_SEGS_LOOP(OC, k->output_adjoint(dM + at, ms, dout + stack, H, W, r0 + r, n));
    }
    for (int xi = 0; xi < aa; xi++)
        BLAS(cblas_sgemm)(CblasRowMajor, CblasNoTrans, CblasTrans, OC, C, (int)T, 1.0f,
                          dM + xi * ms, (int)T, V + xi * vs, (int)T, beta,
                          dU + (size_t)xi * OC * C, C);
}

/* Row r of U's (rows, cols) matrices (a*a of them, xs floats apart, each in
 * gemm_small's packed layout) = the transforms of the cols filters g + i
 * gstep, read with strides (sh, sw). */
static void weight_row(const WinoKind* k, float* U, size_t xs, int rows, int cols, int r,
                       const float* g, size_t gstep, int sh, int sw) {
    size_t ks;
    const size_t at = gemm_small_packed_row(rows, cols, r, &ks);
    k->weight(U + at, xs, ks, g, cols, gstep, sh, sw);
}

void wino_weights(const WinoKind* k, float* U, const float* weight, int C, int OC) {
    const size_t xs = (size_t)OC * C;
    const int nt = ddpm_threads_for((size_t)OC * C, 1 << 12);
DDPM_PARALLEL_FOR(nt)
    for (int oc = 0; oc < OC; oc++)
        weight_row(k, U, xs, OC, C, oc, weight + (size_t)oc * C * 9, 9, 3, 1);
}

void wino_forward(const WinoKind* k, float* out, float* scratch, const float* inp,
                  const NormAct* act, const float* weight, const float* Upre, const float* bias,
                  const float* add, const float* add_bo, int B, int C, int H, int W, int OC) {
    size_t off_du, off_lane, lane;
    wino_layout(k, k, B, C, H, W, OC, &off_du, &off_lane, &lane);
    float* U = scratch;
    const int nr = wino_rows(k, B, C, H, W, OC, 1);
    const int rows = B * wino_tiles(H, k->m), nchunks = (rows + nr - 1) / nr;
    const size_t aa = (size_t)k->a * k->a;
    int nt = ddpm_threads_for((size_t)nchunks, 1);
    if (nt > WINO_LANES) nt = WINO_LANES;
    const size_t xs = (size_t)OC * C;
DDPM_PARALLEL(nt)
    {
        if (!Upre) {
DDPM_OMP_FOR
            for (int oc = 0; oc < OC; oc++)
                weight_row(k, U, xs, OC, C, oc, weight + (size_t)oc * C * 9, 9, 3, 1);
        }
        float* V = scratch + off_lane + (size_t)ddpm_thread_num() * lane;
        float* M = V + aa * wino_pitch((size_t)C * nr * wino_tiles(W, k->m));
DDPM_OMP_FOR_DYNAMIC
        for (int j = 0; j < nchunks; j++) {
            int r0 = j * nr, n = rows - r0 < nr ? rows - r0 : nr;
            wino_conv_chunk(k, out, V, M, inp, act, Upre ? Upre : U, bias, add, add_bo, B, C, H,
                            W, OC, r0, n);
        }
    }
}

/* The weight gradient is summed in up to WINO_LANES partials, partial p over
 * chunks p, p + WINO_LANES, ... in order, then the partials in order: fixed
 * whatever the threads (one thread with at most WINO_LANES small chunks adds
 * each chunk to one running sum: the same sums in the same order).  dinp is
 * the convolution of dout with the rotated weights (OC -> C), chunk by chunk
 * like the forward; with one kind for both, each chunk's input-gradient step
 * follows its weight-gradient step, so the chunk of dout is read from memory
 * once. */
void wino_backward(const WinoKind* kw, const WinoKind* kx, float* dinp, float* dweight,
                   float* scratch, const float* dout, const float* inp, const float* weight,
                   int B, int C, int H, int W, int OC, int accumulate) {
    size_t off_du, off_lane, lane;
    wino_layout(kw, kx, B, C, H, W, OC, &off_du, &off_lane, &lane);
    const size_t aw = (size_t)kw->a * kw->a, ax = (size_t)kx->a * kx->a;
    float* Ur = scratch;                 /* (ax, C, OC): rotated, transposed weights, packed */
    float* dU = scratch + off_du;        /* (WINO_LANES, aw, OC, C) */
    const int nr = wino_rows(kw, B, C, H, W, OC, 0);
    const int rows = B * wino_tiles(H, kw->m), nchunks = (rows + nr - 1) / nr;
    const int np = nchunks < WINO_LANES ? nchunks : WINO_LANES;   /* partials in use */
    const int nrx = wino_rows(kx, B, C, H, W, OC, 0);
    const int rowsx = B * wino_tiles(H, kx->m), nchx = (rowsx + nrx - 1) / nrx;
    const int fused = kx == kw;
    const size_t xs = (size_t)OC * C;
    int nt = ddpm_threads_for((size_t)nchunks, 1);
    if (nt > WINO_LANES) nt = WINO_LANES;
    /* One thread and at most WINO_LANES chunks (each partial one chunk's
     * G_j): G_0 + G_1 + ... summed in order is what adding each chunk's
     * GEMM into the running sum (beta 1) computes, so the chunks go into
     * one buffer and there is no partial to write, clear and read back: a
     * 256 -> 128 7x7 layer of 64 images spent a fifth of its backward on
     * those (8 partials of 4.7 MB).  Only while a chunk's tiles (the
     * GEMM's K) fit one of OpenBLAS's K blocks (112 tiles on the smallest
     * of its kernels): over that it adds each block's sum to C in turn,
     * which would round differently from a partial added at the end. */
    const int inplace = nt == 1 && nchunks <= WINO_LANES &&
                        (size_t)nr * wino_tiles(W, kw->m) <= WINO_INPLACE_MAX_K;
DDPM_PARALLEL(nt)
    {
        if (dinp) {
DDPM_OMP_FOR
            for (int c = 0; c < C; c++)
                weight_row(kx, Ur, xs, C, OC, c, weight + (size_t)c * 9 + 8, (size_t)C * 9, -3,
                           -1);
        }
        float* V = scratch + off_lane + (size_t)ddpm_thread_num() * lane;
        float* M = V + aw * wino_pitch((size_t)C * nr * wino_tiles(W, kw->m));
        /* for dinp the lane holds V (ax, OC, T) then M (ax, C, T) */
        float* M2 = V + ax * wino_pitch((size_t)OC * nrx * wino_tiles(W, kx->m));
DDPM_OMP_FOR_DYNAMIC
        for (int p = 0; p < np; p++)
            for (int j = p; j < nchunks; j += WINO_LANES) {
                int r0 = j * nr, n = rows - r0 < nr ? rows - r0 : nr;
                /* the partial's first chunk writes it (no zeroing pass) */
                wino_dweight_chunk(kw, inplace ? dU : dU + p * aw * xs, V, M, dout, inp, B, C, H,
                                   W, OC, r0, n, (inplace ? j == 0 : j == p) ? 0.0f : 1.0f);
                if (dinp && fused)
                    wino_conv_chunk(kx, dinp, V, M2, dout, NULL, Ur, NULL,
                                    accumulate ? dinp : NULL, NULL, B, OC, H, W, C, r0, n);
            }
        if (dinp && !fused) {
DDPM_OMP_FOR_DYNAMIC
            for (int j = 0; j < nchx; j++) {
                int r0 = j * nrx, n = rowsx - r0 < nrx ? rowsx - r0 : nrx;
                wino_conv_chunk(kx, dinp, V, M2, dout, NULL, Ur, NULL, accumulate ? dinp : NULL,
                                NULL, B, OC, H, W, C, r0, n);
            }
        }
        /* the partials summed into the first in order p = 1, 2, ... for every
         * element (fixed, whatever the threads), block by block: streaming
         * reads, where gathering the np x a*a values of each weight missed
         * the cache at every load (15% of a 256 -> 128 layer's backward) */
        const size_t total = aw * xs;
        const long nblk = inplace ? 0 : (long)((total + WINO_SUM_BLOCK - 1) / WINO_SUM_BLOCK);
DDPM_OMP_FOR
        for (long b = 0; b < nblk; b++) {
            const size_t lo = (size_t)b * WINO_SUM_BLOCK;
            const size_t len = total - lo < WINO_SUM_BLOCK ? total - lo : WINO_SUM_BLOCK;
            float* d = dU + lo;
            for (int p = 1; p < np; p++) {
                const float* src = dU + p * total + lo;
                for (size_t i = 0; i < len; i++) d[i] += src[i];
            }
        }
DDPM_OMP_FOR
        for (int oc = 0; oc < OC; oc++)
            kw->weight_adjoint(dweight + (size_t)oc * C * 9, dU + (size_t)oc * C, xs, C);
    }
}
