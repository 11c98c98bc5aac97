/*
 * alloc.c - large buffers on transparent huge pages (alloc.h).
 */
#define _DEFAULT_SOURCE   /* posix_memalign, madvise under -std=c11 */
#include "core/alloc.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void* ddpm_alloc_large(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= DDPM_LARGE_MIN) {
        void* p = NULL;
        if (posix_memalign(&p, HUGE_PAGE, bytes)) return NULL;
        (void)madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);   /* advice only */
        return p;
    }
#endif
    return malloc(bytes);
}
