/*
 * rng.c - Philox4x32-10 (Salmon et al., SC'11) and a vectorisable Box-Muller.
 *
 * The transcendental functions are our own short polynomials rather than
 * libm's logf/sincosf: libm calls do not vectorise, and these loops are the
 * whole cost of forward noising.  Both are accurate to a few float32 ulps over
 * the ranges used here (checked in tests/test_rng.py against NumPy float64).
 * No FMA contraction (ISO C11 mode), so the bits are the same on every x86-64.
 */
#include "core/rng.h"
#include "core/common.h"
#include "core/threads.h"
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DDPM_NO_CLONES)
#define DDPM_HAVE_AVX2_PHILOX 1
#include <immintrin.h>
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
}

void philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        philox_round(c, k);
        k[0] += PHILOX_W0;
        k[1] += PHILOX_W1;
    }
    memcpy(out, c, sizeof(c));
}

static inline void philox_block(uint32_t out[4], uint64_t seed, uint64_t stream,
                                uint64_t block) {
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32),
                       (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10(out, ctr, key);
}

void rng_uint32_fill(uint32_t* out, size_t n, uint64_t seed, uint64_t stream,
                     uint64_t offset) {
    uint32_t w[4];
    for (size_t i = 0; i < n; i++) {
        uint64_t idx = offset + i;
        if (i == 0 || (idx & 3u) == 0) philox_block(w, seed, stream, idx >> 2);
        out[i] = w[idx & 3u];
    }
}

/* ---- float32 polynomials for Box-Muller ---- */

/* log(u) for u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log(u) = e ln2 + log(1 + x), x = m - 1, with Cephes' minimax polynomial for
 * log1p on that range (no division, so it vectorises well); ln2 is split in
 * two parts so e ln2 adds no rounding error of its own. */
static inline float bm_logf(float u) {
    union { float f; uint32_t i; } v = {u};
    int32_t e = (int32_t)((v.i >> 23) & 0xff) - 127;
    v.i = (v.i & 0x007fffffu) | 0x3f800000u;           /* m in [1, 2) */
    /* m > sqrt(2)? compare the bits (positive floats order like ints) and
     * halve by decrementing the exponent: integer-only, so the loop stays SIMD */
    uint32_t big = v.i > 0x3FB504F3u;
    v.i -= big << 23;
    e += (int32_t)big;
    float x = v.f - 1.0f;
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    float fe = (float)e;
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return (x + y) + 0.693359375f * fe;
}

/* Box-Muller over arrays, written as straight-line loops the compiler turns
 * into SIMD: for each j, words (a[j], b[j]) give the pair (z0[j], z1[j]).
 *   radius  r = sqrt(-2 log u1), u1 = (a + 1/2) 2^-32 in (0, 1);
 *   angle   2 pi u2: the top two bits of b pick the quadrant, the other 30 a
 *           point inside it, so the sin/cos polynomials only see |x| <= pi/4. */
DDPM_SIMD_CLONES
static void box_muller_arrays(float* restrict z0, float* restrict z1,
                              const uint32_t* restrict a, const uint32_t* restrict b,
                              size_t m) {
    for (size_t j = 0; j < m; j++) {
        float u1 = ((float)(int32_t)(a[j] >> 1) * 2.0f + (float)(a[j] & 1u) + 0.5f) * 2.3283064e-10f;
        /* u1 <= 1 always: the largest word rounds to exactly 2^32 * 2^-32 */
        float r = __builtin_sqrtf(-2.0f * bm_logf(u1));
        uint32_t q = b[j] >> 30;
        float f = ((float)(int32_t)(b[j] & 0x3fffffffu) + 0.5f) * 9.3132257e-10f; /* 2^-30 */
        float x = (f - 0.5f) * 1.5707963f;                 /* [-pi/4, pi/4) */
        float x2 = x * x;
        float s = x * (1.0f + x2 * (-1.6666667e-1f + x2 * (8.3333333e-3f + x2 * (-1.9841270e-4f + x2 * 2.7557319e-6f))));
        float c = 1.0f + x2 * (-0.5f + x2 * (4.1666667e-2f + x2 * (-1.3888889e-3f + x2 * (2.4801587e-5f - x2 * 2.7557319e-7f))));
        /* angle = q pi/2 + pi/4 + x: rotate (c, s) by pi/4, then by q quarter turns */
        const float h = 0.70710678f;
        float cq = (c - s) * h, sq = (s + c) * h;
        /* selects as exact 0/1 products, so the loop stays branch-free */
        float odd = (float)(int32_t)(q & 1u), even = 1.0f - odd;
        float cc = cq * even - sq * odd;
        float ss = sq * even + cq * odd;
        float sign = 1.0f - (float)(int32_t)(q & 2u);
        z0[j] = r * cc * sign;
        z1[j] = r * ss * sign;
    }
}

/* Ten Philox rounds on m counters held lane-major in c0..c3 (in place). */
static void philox_rounds_scalar(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3,
                                 size_t m, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        for (size_t j = 0; j < m; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[j];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[j];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ k1;
            c1[j] = (uint32_t)p1; c3[j] = (uint32_t)p0;
            c0[j] = n0; c2[j] = n2;
        }
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
}

#ifdef DDPM_HAVE_AVX2_PHILOX
/* The same rounds, 8 counters at a time.  AVX2 has no 32x32 -> high-32
 * multiply, so even lanes and odd lanes are multiplied separately as 64-bit
 * products and the high and low halves blended back together. */
__attribute__((target("avx2")))
static inline void mulhilo8(__m256i a, __m256i mul, __m256i* hi, __m256i* lo) {
    __m256i even = _mm256_mul_epu32(a, mul);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), mul);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2")))
static void philox_rounds_avx2(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3,
                               size_t m, uint32_t k0, uint32_t k1) {
    const __m256i M0 = _mm256_set1_epi32((int)PHILOX_M0), M1 = _mm256_set1_epi32((int)PHILOX_M1);
    size_t j = 0;
    for (; j + 8 <= m; j += 8) {
        __m256i x0 = _mm256_loadu_si256((const __m256i*)(c0 + j));
        __m256i x1 = _mm256_loadu_si256((const __m256i*)(c1 + j));
        __m256i x2 = _mm256_loadu_si256((const __m256i*)(c2 + j));
        __m256i x3 = _mm256_loadu_si256((const __m256i*)(c3 + j));
        uint32_t a = k0, b = k1;
        for (int r = 0; r < 10; r++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(x0, M0, &hi0, &lo0);
            mulhilo8(x2, M1, &hi1, &lo1);
            __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32((int)a));
            __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32((int)b));
            x0 = n0; x1 = lo1; x2 = n2; x3 = lo0;
            a += PHILOX_W0; b += PHILOX_W1;
        }
        _mm256_storeu_si256((__m256i*)(c0 + j), x0);
        _mm256_storeu_si256((__m256i*)(c1 + j), x1);
        _mm256_storeu_si256((__m256i*)(c2 + j), x2);
        _mm256_storeu_si256((__m256i*)(c3 + j), x3);
    }
    if (j < m) philox_rounds_scalar(c0 + j, c1 + j, c2 + j, c3 + j, m - j, k0, k1);
}
#endif

static void philox_rounds(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3,
                          size_t m, uint32_t k0, uint32_t k1) {
#ifdef DDPM_HAVE_AVX2_PHILOX
    static int have_avx2 = -1;
    if (have_avx2 < 0) have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (have_avx2) { philox_rounds_avx2(c0, c1, c2, c3, m, k0, k1); return; }
#endif
    philox_rounds_scalar(c0, c1, c2, c3, m, k0, k1);
}

/* Normals for whole blocks [b0, b0 + nb): 4 per block, into out[0 .. 4nb).
 * The Philox rounds and Box-Muller have AVX2 and baseline versions picked at
 * load time: the same integer and IEEE operations in the same order, so the
 * same bits either way (tests/test_rng.py pins known values). */
static void normal_blocks(float* out, uint64_t b0, size_t nb, uint64_t seed,
                          uint64_t stream) {
    uint32_t s_lo = (uint32_t)stream, s_hi = (uint32_t)(stream >> 32);
    enum { CH = 256 };
    uint32_t c0[CH], c1[CH], c2[CH], c3[CH];
    float z[4][CH];
    for (size_t base = 0; base < nb; base += CH) {
        size_t m = nb - base < CH ? nb - base : CH;
        /* Philox over a chunk of blocks, lane-major so the rounds vectorise
         * across blocks. */
        for (size_t j = 0; j < m; j++) {
            uint64_t blk = b0 + base + j;
            c0[j] = (uint32_t)blk; c1[j] = (uint32_t)(blk >> 32); c2[j] = s_lo; c3[j] = s_hi;
        }
        philox_rounds(c0, c1, c2, c3, m, (uint32_t)seed, (uint32_t)(seed >> 32));
        box_muller_arrays(z[0], z[1], c0, c1, m);
        box_muller_arrays(z[2], z[3], c2, c3, m);
        float* o = out + 4 * base;
        for (size_t j = 0; j < m; j++) {
            o[4 * j + 0] = z[0][j]; o[4 * j + 1] = z[1][j];
            o[4 * j + 2] = z[2][j]; o[4 * j + 3] = z[3][j];
        }
    }
}

void rng_normal_fill(float* out, size_t n, uint64_t seed, uint64_t stream,
                     uint64_t offset) {
    if (n == 0) return;
    float tmp[4];
    size_t i = 0;
    /* head: partial first block */
    uint64_t idx = offset;
    if (idx & 3u) {
        normal_blocks(tmp, idx >> 2, 1, seed, stream);
        while (i < n && ((offset + i) & 3u)) { out[i] = tmp[(offset + i) & 3u]; i++; }
    }
    /* body: whole blocks */
    size_t nb = (n - i) / 4;
    if (nb) {
        normal_blocks(out + i, (offset + i) >> 2, nb, seed, stream);
        i += 4 * nb;
    }
    /* tail */
    if (i < n) {
        normal_blocks(tmp, (offset + i) >> 2, 1, seed, stream);
        for (size_t j = 0; i < n; i++, j++) out[i] = tmp[j];
    }
}

void rng_normal_fill_parallel(float* out, size_t n, uint64_t seed, uint64_t stream,
                              uint64_t offset) {
    const size_t chunk = 16384;
    size_t nchunks = (n + chunk - 1) / chunk;
    int nt = ddpm_threads_for(n, chunk);
    DDPM_PARALLEL_FOR(nt)
    for (size_t c = 0; c < nchunks; c++) {
        size_t lo = c * chunk, len = n - lo < chunk ? n - lo : chunk;
        rng_normal_fill(out + lo, len, seed, stream, offset + lo);
    }
}
