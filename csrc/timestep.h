/*
 * timestep.h - sinusoidal embedding of the network's time input (DDPM,
 * "Attention is all you need"), as diffusers' Timesteps layer computes it.
 *
 * freq_i = exp(-ln(max_period) * i / (half - freq_shift)), i = 0..half-1,
 * emb = [sin(t freq), cos(t freq)], or [cos, sin] with flip_sin_to_cos;
 * an odd dim gets a trailing 0.  The frequencies and the products t * freq
 * are rounded to float32 exactly where diffusers rounds them, so the phases
 * (up to ~1000 rad, where one float32 ulp is 6e-5) agree to the bit.
 * No parameters, and t is not differentiable: there is no backward.
 */
#ifndef DDPM_TIMESTEP_H
#define DDPM_TIMESTEP_H

/* out (B, dim); t (B,) the network's time values (0..T-1 in diffusers' convention). */
void timestep_embedding_forward(float* out, const float* t, int B, int dim, int flip_sin_to_cos,
                                float freq_shift, float max_period);

#endif /* DDPM_TIMESTEP_H */
