/*
 * alloc.h - the engine's large buffers (workspaces, prepared weights,
 * gradient halves) on transparent huge pages where the OS offers them.
 *
 * ddpm_alloc_large(bytes) is malloc below DDPM_LARGE_MIN bytes.  From there
 * up (on Linux) the buffer starts on a 2 MB boundary and its whole 2 MB
 * extents are advised as huge pages (madvise MADV_HUGEPAGE: the kernel's
 * "madvise" THP mode, the default of Debian and Ubuntu, backs only advised
 * memory so).  Advice only: where the kernel declines, the buffer is plain
 * 4 KB pages and nothing else changes.  Release with free().
 *
 * Why.  A sampler's step reads the U-Net's 51 MB of Winograd-transformed
 * weights and tens of MB of activations and scratch: on 4 KB pages, far more
 * than the TLB covers (2048 entries, 8 MB, on an AMD Zen 3).  In a sampler
 * the 7x7 layers' products ran at 27-40 GF/s, against 60-85 with their
 * operands in cache and 25-31 with none (a C harness, one thread).  Sampling
 * 64 images on 2 threads (AMD EPYC VM, old and new builds alternated 6
 * times): 5.9-6.8 against 6.5-9.4 ms per image-step, the new faster each
 * time; a training step at B = 128 ~3% faster.
 */
#ifndef DDPM_CORE_ALLOC_H
#define DDPM_CORE_ALLOC_H

#include <stddef.h>

#define DDPM_LARGE_MIN ((size_t)4 << 20)   /* bytes: smaller buffers are plain malloc */

/* A buffer of `bytes` bytes (NULL when it cannot be had), released with free(). */
void* ddpm_alloc_large(size_t bytes);

#endif /* DDPM_CORE_ALLOC_H */
