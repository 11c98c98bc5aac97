/*
 * timestep.h - sinusoidal embedding of the network's time input (DDPM,
 * "Attention is all you need"), as diffusers' Timesteps layer computes it.
 *
 * freq_i = exp(-ln(max_period) * i / (half - freq_shift)), i = 0..half-1,
 * emb = [sin(t freq), cos(t freq)], or [cos, sin] with flip_sin_to_cos;
 * an odd dim gets a trailing 0.  The exponents and the products t * freq
 * are rounded to float32 exactly where diffusers rounds them; exp, sin and
 * cos are correctly rounded here, where torch's float32 exp can be 1 ulp off
 * (seen for one frequency in 64), so at t ~ 1000 (one float32 ulp of phase is
 * 6e-5 rad) an embedding entry can differ from diffusers' by ~3e-5.
 * No parameters, and t is not differentiable: there is no backward.
 */
#ifndef DDPM_TIMESTEP_H
#define DDPM_TIMESTEP_H

/* out (B, dim); t (B,) the network's time values (0..T-1 in diffusers' convention). */
void timestep_embedding_forward(float* out, const float* t, int B, int dim, int flip_sin_to_cos,
                                float freq_shift, float max_period);

#endif /* DDPM_TIMESTEP_H */
