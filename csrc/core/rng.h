/*
 * rng.h - counter-based random numbers (Philox4x32-10) and a fast N(0,1).
 *
 * Every value is a pure function of (seed, stream, index): the i-th normal of
 * stream s under seed k is the same number however the work is split across
 * threads or calls.  That is what makes "same seed, same numbers, whatever the
 * thread count" true by construction.
 *
 * Layout: Philox key = seed (64 bits), counter = (block index (64 bits),
 * stream (64 bits)).  One block gives 4 uint32 words; words (0,1) and (2,3)
 * each feed one Box-Muller pair, so normal i lives in block i/4, lane i%4.
 */
#ifndef DDPM_RNG_H
#define DDPM_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Stream ids used by the library, so different consumers of one seed never
 * share numbers. Sampling steps use DDPM_STREAM_SAMPLE_STEP + step. */
#define DDPM_STREAM_Q_SAMPLE      0x0000000000000001ULL
#define DDPM_STREAM_CHAIN_BASE    0x0000000100000000ULL  /* + t              */
#define DDPM_STREAM_USER          0x0000000200000000ULL  /* ddpm.randn       */
#define DDPM_STREAM_TRAIN_T       0x0000000300000000ULL  /* + step: t draws  */
#define DDPM_STREAM_TRAIN_EPS     0x0000000400000000ULL  /* + step: eps      */
#define DDPM_STREAM_SAMPLE_INIT   0x0000000500000000ULL  /* sampler: x_T     */
#define DDPM_STREAM_SAMPLE_STEP   0x0000000600000000ULL  /* + step k: z_k    */
#define DDPM_STREAM_NLL_T         0x0000001000000000ULL  /* nll: t draws     */
#define DDPM_STREAM_NLL_EPS       0x0000001100000000ULL  /* + t: eps of x_t  */
#define DDPM_STREAM_TRAIN_DROP    0x0000001200000000ULL  /* + step: label dropout */
#define DDPM_STREAM_SAMPLE_LABELS 0x0000001300000000ULL  /* sampler: random labels */
#define DDPM_STREAM_REPAINT_UNDO  0x0000001400000000ULL  /* + entry k: jump-back noise */

/* One Philox4x32-10 block: out = philox(ctr, key). */
void philox4x32_10(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* out[i] = i-th uint32 of (seed, stream), i = offset .. offset + n - 1. */
void rng_uint32_fill(uint32_t* out, size_t n, uint64_t seed, uint64_t stream,
                     uint64_t offset);

/* out[i] = standard normal number (offset + i) of (seed, stream); float32,
 * Box-Muller on 32-bit uniforms (tails reach about 6.7 sigma).  Single thread. */
void rng_normal_fill(float* out, size_t n, uint64_t seed, uint64_t stream,
                     uint64_t offset);

/* Same, split over threads (results identical to the serial call). */
void rng_normal_fill_parallel(float* out, size_t n, uint64_t seed, uint64_t stream,
                              uint64_t offset);

#endif /* DDPM_RNG_H */
