/*
 * threads.c - the single thread-count knob shared by our loops and OpenBLAS.
 *
 * Every parallel loop in the core splits work into chunks whose results do not
 * depend on which thread computes them (disjoint writes, fixed-order
 * reductions), so changing this number never changes a result, only the time.
 * OpenBLAS is held at one thread (set here) and runs inside these threads:
 * one pool, never two pools oversubscribing the cores.
 */
#include "core/threads.h"
#include "core/common.h"   /* BLAS() */
#include <cblas.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int g_num_threads = 1;
static int g_initialised = 0;
/* Inside a lane (ddpm_run_lanes): that lane's share of the threads; 0 outside. */
static _Thread_local int tl_share = 0;

static void init_threads(void) {
    if (g_initialised) return;
    g_initialised = 1;
    BLAS(openblas_set_num_threads)(1);   /* OpenBLAS runs inside our threads, one each */
#ifdef _OPENMP
    g_num_threads = omp_get_max_threads();
#else
    g_num_threads = 1;
#endif
    if (g_num_threads < 1) g_num_threads = 1;
}

int ddpm_get_num_threads(void) {
    init_threads();
    return tl_share > 0 ? tl_share : g_num_threads;
}

int ddpm_run_lanes(int lanes, int (*fn)(void* ctx, int lane), void* ctx) {
    const int n = ddpm_get_num_threads();
    if (lanes > DDPM_MAX_LANES) lanes = DDPM_MAX_LANES;
    if (lanes < 1) lanes = 1;
    int status[DDPM_MAX_LANES] = {0};
#ifdef _OPENMP
    if (n > lanes) omp_set_max_active_levels(2);   /* a lane's loops get its threads */
#pragma omp parallel for schedule(static, 1) num_threads(lanes) if (lanes > 1 && lanes <= n)
#endif
    for (int i = 0; i < lanes; i++) {
        const int outer = tl_share, share = (n + i) / lanes;
        tl_share = share > 1 ? share : 1;
        status[i] = fn(ctx, i);
        tl_share = outer;
    }
    for (int i = 0; i < lanes; i++)
        if (status[i]) return status[i];
    return 0;
}

void ddpm_set_num_threads(int n) {
    init_threads();
    if (n < 1) n = 1;
    g_num_threads = n;
}

/* How many threads a loop over `work_items` should use: never more than the
 * knob, and none idle on tiny inputs where waking a thread costs more than
 * the work. */
int ddpm_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int ddpm_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int ddpm_threads_for(size_t work_items, size_t min_items_per_thread) {
    int n = ddpm_get_num_threads();
    if (min_items_per_thread == 0) min_items_per_thread = 1;
    size_t useful = work_items / min_items_per_thread;
    if (useful < 1) useful = 1;
    if ((size_t)n > useful) n = (int)useful;
    return n;
}

/* Blocks of 64K floats (256 KB): big enough that a thread's share is worth
 * waking it for, small enough to spread over the threads. */
#define MOVE_BLOCK ((size_t)1 << 16)

enum { MOVE_ZERO, MOVE_COPY, MOVE_ADD };

static void blocked_move(int what, float* dst, const float* src, size_t n) {
    const long nblocks = (long)((n + MOVE_BLOCK - 1) / MOVE_BLOCK);
    int nt = ddpm_threads_for((size_t)nblocks, 1);
    DDPM_PARALLEL_FOR(nt)
    for (long k = 0; k < nblocks; k++) {
        const size_t lo = (size_t)k * MOVE_BLOCK, len = n - lo < MOVE_BLOCK ? n - lo : MOVE_BLOCK;
        if (what == MOVE_ZERO) memset(dst + lo, 0, sizeof(float) * len);
        else if (what == MOVE_COPY) memcpy(dst + lo, src + lo, sizeof(float) * len);
        else for (size_t i = lo; i < lo + len; i++) dst[i] += src[i];
    }
}

void ddpm_zero(float* dst, size_t n) { blocked_move(MOVE_ZERO, dst, NULL, n); }
void ddpm_copy(float* dst, const float* src, size_t n) { blocked_move(MOVE_COPY, dst, src, n); }
void ddpm_add(float* dst, const float* src, size_t n) { blocked_move(MOVE_ADD, dst, src, n); }
