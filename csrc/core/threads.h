/*
 * threads.h - ddpm's one pool of threads (OpenMP), OpenBLAS held inside it.
 *
 * Offers: the thread-count knob (read and set; OpenBLAS is set to one thread
 * here, so the two pools never oversubscribe the cores), how many threads a
 * loop of a given size should wake, lanes (independent jobs run side by side,
 * each on its share of the threads), whole-buffer moves over the pool, and
 * the parallel-loop macros every numeric file uses.
 *
 * Every parallel loop in the core writes disjoint outputs and reduces in a
 * fixed order, so the thread count changes the time, never the bits.  A
 * serial build (no OpenMP) gives the same numbers.
 */
#ifndef DDPM_THREADS_H
#define DDPM_THREADS_H

#include <stddef.h>

int ddpm_get_num_threads(void);
/* Sets the number of threads of ddpm's pool (OpenBLAS runs inside it); n >= 1. */
void ddpm_set_num_threads(int n);
/* How many threads a loop over work_items should use: at most the knob, and
 * none idle on inputs so small that waking a thread costs more than the work. */
int ddpm_threads_for(size_t work_items, size_t min_items_per_thread);
/* The calling thread's index in the current parallel region (0 outside one). */
int ddpm_thread_num(void);

/* Runs fn(ctx, lane) for lane = 0 .. lanes-1 at the same time, one lane per
 * thread, the pool's threads shared out among them (lane i gets (n + i) /
 * lanes of the knob's n, at least one).  Inside a lane, ddpm_get_num_threads()
 * answers its share, so the loops it runs use its threads only.  lanes is
 * clamped to 1 .. DDPM_MAX_LANES; with fewer threads than lanes (or a serial
 * build) the lanes run one after another, each on one thread.
 * Returns the first nonzero status in lane order, else 0. */
#define DDPM_MAX_LANES 8
int ddpm_run_lanes(int lanes, int (*fn)(void* ctx, int lane), void* ctx);
/* 1 when the engine was built with OpenMP. */
int ddpm_has_openmp(void);

/* Whole-buffer moves over ddpm's threads (elementwise, so the same bits at
 * any thread count): dst = 0, dst = src, dst += src. */
void ddpm_zero(float* dst, size_t n);
void ddpm_copy(float* dst, const float* src, size_t n);
void ddpm_add(float* dst, const float* src, size_t n);

/* Parallel loops, written just before the `for` (or the `{` of a region):
 *   DDPM_PARALLEL_FOR(nt)          static schedule over nt threads (none if nt <= 1)
 *   DDPM_PARALLEL_FOR_OR(nt, bad)  the same with `bad |= ...` reduced over threads
 *   DDPM_PARALLEL(nt)              a region; inside it, before each loop:
 *   DDPM_OMP_FOR / DDPM_OMP_FOR_DYNAMIC   static / dynamic(1) work sharing
 * In a serial build they vanish (leaving `(void)nt;` so nt is used). */
#ifdef _OPENMP
#define DDPM_PRAGMA_(x) _Pragma(#x)
#define DDPM_PARALLEL_FOR(nt) \
    DDPM_PRAGMA_(omp parallel for schedule(static) num_threads(nt) if ((nt) > 1))
#define DDPM_PARALLEL_FOR_OR(nt, var) \
    DDPM_PRAGMA_(omp parallel for schedule(static) num_threads(nt) if ((nt) > 1) reduction(|:var))
#define DDPM_PARALLEL(nt) DDPM_PRAGMA_(omp parallel num_threads(nt) if ((nt) > 1))
#define DDPM_OMP_FOR DDPM_PRAGMA_(omp for schedule(static))
#define DDPM_OMP_FOR_DYNAMIC DDPM_PRAGMA_(omp for schedule(dynamic, 1))
#else
#define DDPM_PARALLEL_FOR(nt) (void)(nt);
#define DDPM_PARALLEL_FOR_OR(nt, var) (void)(nt);
#define DDPM_PARALLEL(nt) (void)(nt);
#define DDPM_OMP_FOR
#define DDPM_OMP_FOR_DYNAMIC
#endif

#endif /* DDPM_THREADS_H */
