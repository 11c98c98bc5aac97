/*
 * threads.c - the single thread-count knob shared by our loops and OpenBLAS.
 *
 * Every parallel loop in the core splits work into chunks whose results do not
 * depend on which thread computes them (disjoint writes, fixed-order
 * reductions), so changing this number never changes a result, only the time.
 * OpenBLAS is held at one thread and runs inside these threads (matmul.c):
 * one pool, never two pools oversubscribing the cores.
 */
#include "common.h"
#include "matmul.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int g_num_threads = 1;
static int g_initialised = 0;

static void init_threads(void) {
    if (g_initialised) return;
    g_initialised = 1;
    matmul_init();   /* OpenBLAS runs inside our threads, one thread each */
#ifdef _OPENMP
    g_num_threads = omp_get_max_threads();
#else
    g_num_threads = 1;
#endif
    if (g_num_threads < 1) g_num_threads = 1;
}

int ddpm_get_num_threads(void) {
    init_threads();
    return g_num_threads;
}

void ddpm_set_num_threads(int n) {
    init_threads();
    if (n < 1) n = 1;
    g_num_threads = n;
}

/* How many threads a loop over `work_items` should use: never more than the
 * knob, and none idle on tiny inputs where waking a thread costs more than
 * the work. */
int ddpm_threads_for(size_t work_items, size_t min_items_per_thread) {
    int n = ddpm_get_num_threads();
    if (min_items_per_thread == 0) min_items_per_thread = 1;
    size_t useful = work_items / min_items_per_thread;
    if (useful < 1) useful = 1;
    if ((size_t)n > useful) n = (int)useful;
    return n;
}
