/*
 * wide.c - the 16-float rows of wide.h: AVX-512F code, called only where the
 * CPU has it.
 */
#include "core/wide.h"
#include "core/common.h"
#include <string.h>

static int wide_off = 0;   /* testing switch: ddpm_wide(0) */

#if defined(DDPM_LANES_VECTOR) && defined(DDPM_HAVE_EXPF16) && defined(__linux__)
#define WIDE_TARGET __attribute__((target("avx512f")))
static int have_wide(void) { return __builtin_cpu_supports("avx512f"); }

/* Four vectors side by side (ddpm_expf8 says why), then one at a time: v
 * (a ddpm_f16) := OP(v) over x[i..), returning the count done. */
#define WIDE_ROW(dst, src, n, OP)                                                  \
    int i = 0;                                                                     \
    ddpm_f16 v0, v1, v2, v3;                                                       \
    for (; i + 64 <= (n); i += 64) {                                               \
        memcpy(&v0, (src) + i, sizeof v0);                                         \
        memcpy(&v1, (src) + i + 16, sizeof v1);                                    \
        memcpy(&v2, (src) + i + 32, sizeof v2);                                    \
        memcpy(&v3, (src) + i + 48, sizeof v3);                                    \
        OP(v0);                                                                    \
        OP(v1);                                                                    \
        OP(v2);                                                                    \
        OP(v3);                                                                    \
        memcpy((dst) + i, &v0, sizeof v0);                                         \
        memcpy((dst) + i + 16, &v1, sizeof v1);                                    \
        memcpy((dst) + i + 32, &v2, sizeof v2);                                    \
        memcpy((dst) + i + 48, &v3, sizeof v3);                                    \
    }                                                                              \
    for (; i + 16 <= (n); i += 16) {                                               \
        memcpy(&v0, (src) + i, sizeof v0);                                         \
        OP(v0);                                                                    \
        memcpy((dst) + i, &v0, sizeof v0);                                         \
    }                                                                              \
    return i

#define EXP16(v) ddpm_expf16(&(v), &(v))
WIDE_TARGET static int expf_row(float* x, int n) { WIDE_ROW(x, x, n, EXP16); }

/* groupnorm_silu8 (groupnorm.h) in 16 lanes */
#define SILU16(v)                            \
    do {                                     \
        const ddpm_f16 y_ = (v) * av + kv;   \
        ddpm_f16 e_ = -y_;                   \
        ddpm_expf16(&e_, &e_);               \
        (v) = y_ * (1.0f / (1.0f + e_));     \
    } while (0)
WIDE_TARGET static int silu_affine_row(float* dst, const float* src, int n, const float* a16,
                                       const float* k16) {
    ddpm_f16 av, kv;
    memcpy(&av, a16, sizeof av);
    memcpy(&kv, k16, sizeof kv);
    WIDE_ROW(dst, src, n, SILU16);
}

int ddpm_expf_row_wide(float* x, int n) {
    return !wide_off && have_wide() ? expf_row(x, n) : 0;
}

int ddpm_silu_affine_row_wide(float* dst, const float* src, int n, const float* a16,
                              const float* k16) {
    return !wide_off && have_wide() ? silu_affine_row(dst, src, n, a16, k16) : 0;
}
#else
static int have_wide(void) { return 0; }
int ddpm_expf_row_wide(float* x, int n) {
    (void)x, (void)n;
    return 0;
}
int ddpm_silu_affine_row_wide(float* dst, const float* src, int n, const float* a16,
                              const float* k16) {
    (void)dst, (void)src, (void)n, (void)a16, (void)k16;
    return 0;
}
#endif

int ddpm_wide(int on) {
    const int was = have_wide() && !wide_off;
    if (on >= 0) wide_off = !on;
    return was;
}
