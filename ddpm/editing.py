"""Start from a real image: img2img (SDEdit) and inpainting (RePaint).

The course's geometric picture: noise pushes an image off the manifold of real
images and denoising walks it back -- not to the original, but to *a*
realistic image consistent with what the noise left.  Both tools run the
reverse process from a real image instead of from pure noise, in the same C
loop as :func:`ddpm.sampling.sample_diffusion` (Ctrl-C, progress, seeds,
guidance and labels work the same way):

``img2img`` (Meng et al. 2022, SDEdit)
    Noise x_0 to t_start = strength * T with the closed form
    ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps`` and run the
    sampler from there.  Which steps remain follows diffusers' img2img
    pipelines: of the ``steps`` timesteps of a full run, the last
    ``int(steps * strength)`` are run.  strength = 1 starts at t = T (for
    trailing spacing), strength = 0 returns the image unchanged.

``inpaint`` (Lugmayr et al. 2022, RePaint)
    At every step the known region (mask 1) is replaced by the forward-noised
    original and the unknown region (mask 0) comes from the model; every
    ``jump_length`` steps the run jumps back up ``jump_length`` steps by
    noising (``jump_n_sample - 1`` times), so the two regions harmonise.  The
    mask convention, timesteps, jumps and arithmetic are diffusers'
    ``RePaintPipeline`` / ``RePaintScheduler``: mask 1 keeps the pixel, 0
    inpaints it.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._checks import as_diffusion, as_float32_batch, as_int
from .sampling import (SAMPLERS, SPACINGS, DEFAULT_STEPS, _capture_steps, _check_eps_at_zero_snr,
                       _check_noise, _choice, _eta, _run, _run_options, sampling_timesteps)

__all__ = ["img2img", "inpaint", "img2img_timesteps", "repaint_timesteps"]


def _images(x0, shape, name, F):
    x = as_float32_batch(x0, name, F)
    if x.ndim == len(shape) - 1:
        x = x[None]
    if x.shape[1:] != shape[1:]:
        raise ValueError(f"{F}(): {name} must have shape (N, {', '.join(map(str, shape[1:]))}) "
                         f"for this model, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{F}(): {name} contains NaN or Inf")
    if x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6:
        raise ValueError(f"{F}(): {name} must lie in [-1, 1] (the model's data space; "
                         f"images in [0, 1] map by 2 x - 1), got [{x.min():.3g}, {x.max():.3g}]")
    return np.ascontiguousarray(x)


def img2img_timesteps(T: int, steps: int, strength: float, sampler: str = "ddim",
                      timestep_spacing: str = "trailing"):
    """The (t, prev) pairs an img2img run visits: the last ``int(steps * strength)``
    of a full run's ``steps`` (diffusers' ``get_timesteps``).  Empty for strength 0."""
    F = "img2img"
    t, prev = sampling_timesteps(T, steps, sampler, timestep_spacing)
    keep = min(int(steps * strength), steps)
    return t[steps - keep:], prev[steps - keep:]


def img2img(diffusion, x0, strength: float = 0.6, *, steps: int | None = None,
            sampler: str = "ddim", eta: float = 0.0, seed: int | None = None,
            timestep_spacing: str = "trailing", clip_x0: bool | None = None, noise=None,
            x_T=None, labels=None, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
            return_trajectory=None, value_range=(0, 1), progress=True):
    """SDEdit: noise the images x0 to t = strength * T, then denoise them (``Diffusion.img2img``).

    Parameters
    ----------
    diffusion : ddpm.Diffusion
    x0 : array (N, C, H, W) or (C, H, W), in [-1, 1]
        The starting images, in the model's data space.
    strength : float in [0, 1]
        How far to noise: 0 returns x0, 1 starts from t = T (nearly pure noise).
    steps : int, optional
        Timesteps of the FULL run (default: T for "ddpm", 50 for "ddim", 20 for
        "dpm++"); ``int(steps * strength)`` of them are run.
    sampler, eta, timestep_spacing, clip_x0, labels, guidance_scale, guidance_rescale,
    return_trajectory, value_range, progress
        As in :func:`ddpm.sampling.sample_diffusion`.
    seed : int, optional
        Seed of the noise added to x0 and of every step's noise.
    x_T : array like x0, optional
        The eps used to noise x0 (instead of drawing it from ``seed``): the start is
        ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) x_T``.
    noise : array (int(steps * strength), N, C, H, W), optional
        Each remaining step's z.

    Returns
    -------
    images : ndarray float32 (N, C, H, W)  (and a Trajectory with ``return_trajectory``)

    Examples
    --------
    >>> x0, _ = ddpm.datasets.fashion_mnist("test")              # doctest: +SKIP
    >>> d = ddpm.load_pretrained()                               # doctest: +SKIP
    >>> edits = d.img2img(x0[:8], strength=0.5, seed=0)          # doctest: +SKIP
    """
    F = "img2img"
    as_diffusion(diffusion, F)
    x = _images(x0, (None,) + diffusion.image_shape, "x0", F)
    if isinstance(strength, (bool, np.bool_)) or not isinstance(strength, numbers.Real):
        raise TypeError(f"{F}(): strength must be a number in [0, 1], got {strength!r}")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"{F}(): strength must be in [0, 1], got {strength}")
    sampler = _choice(sampler, "sampler", SAMPLERS, F)
    T = diffusion.T
    if steps is None:
        steps = min(DEFAULT_STEPS.get(sampler, T), T)
    steps = as_int(steps, "steps", F, lo=1, hi=T)
    timestep_spacing = _choice(timestep_spacing, "timestep_spacing", SPACINGS, F)
    eta = _eta(eta, sampler, ("ddim",), F)
    n = x.shape[0]
    run = _run_options(diffusion, n, sampler, clip_x0=clip_x0, dynamic_threshold=None,
                       value_range=value_range, seed=seed, progress=progress,
                       progress_every=None, labels=labels, guidance_scale=guidance_scale,
                       guidance_rescale=guidance_rescale, F=F)
    ts, prevs = img2img_timesteps(T, steps, strength, sampler, timestep_spacing)
    shape = x.shape
    x_T = _check_noise(x_T, "x_T", shape, F)
    if len(ts) == 0:                 # strength 0 (or too small for one step): x0 itself
        out = x.copy()
        if run.value_range == (0, 1):
            out = np.clip(out * np.float32(0.5) + np.float32(0.5), 0.0, 1.0).astype(np.float32)
        return out if return_trajectory is None else (out, None)
    _check_eps_at_zero_snr(diffusion, ts, F)
    noise = _check_noise(noise, "noise", (len(ts),) + shape, F)
    capture = cap_t = None
    if return_trajectory is not None:
        capture, cap_t = _capture_steps(return_trajectory, ts, F)
    return _run(diffusion, shape, sampler, run, ts, prevs, eta=eta, x_T=x_T, noise=noise,
                capture=capture, cap_t=cap_t, init=x)


def repaint_timesteps(T: int, steps: int, jump_length: int = 10, jump_n_sample: int = 10):
    """RePaint's schedule as (t, prev) entries, diffusers' ``RePaintScheduler.set_timesteps``
    in lesson time: ``prev < t`` is a model step from t to prev (0 = x_0), ``prev > t`` a
    jump back up from the level after the model step at t to the next model time prev."""
    F = "inpaint"
    steps = as_int(steps, "steps", F, lo=1, hi=T)
    jump_length = as_int(jump_length, "jump_length", F, lo=1, hi=T)
    jump_n_sample = as_int(jump_n_sample, "jump_n_sample", F, lo=1, hi=1000)
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    seq, t = [], steps
    while t >= 1:
        t -= 1
        seq.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                seq.append(t)
    stride = T // steps
    model_t = [v * stride for v in seq]          # diffusers' 0-based timesteps
    ts, prevs, last = [], [], model_t[0] + 1
    for v in model_t:
        if v < last:                             # a model step at v (lesson v + 1) to v - stride
            ts.append(v + 1)
            prevs.append(max(v - stride + 1, 0))
        else:                                    # undo_step(x, last): betas[last .. last+stride-1]
            ts.append(last + 1)
            prevs.append(last + 1 + stride)
        last = v
    if len(ts) > 1_000_000:
        raise ValueError(f"{F}(): {len(ts)} entries are too many (lower jump_n_sample)")
    return np.array(ts, np.int64), np.array(prevs, np.int64)


def inpaint(diffusion, x0, mask, *, steps: int = 100, jump_length: int = 10,
            jump_n_sample: int = 10, eta: float = 0.0, seed: int | None = None,
            clip_x0: bool = True, noise=None, undo_noise=None, x_T=None, labels=None,
            guidance_scale: float = 1.0, guidance_rescale: float = 0.0, return_trajectory=None,
            value_range=(0, 1), progress=True):
    """Fill in the masked part of x0 with RePaint (``Diffusion.inpaint``).

    Parameters
    ----------
    diffusion : ddpm.Diffusion
    x0 : array (N, C, H, W) or (C, H, W), in [-1, 1]
        The original images.
    mask : array broadcastable to x0's shape, values in [0, 1]
        diffusers' convention: **1 keeps the pixel of x0, 0 inpaints it** (values
        in between blend the two).  A (H, W) or (1, 1, H, W) mask applies to all.
    steps : int
        Model steps of one descent (diffusers' ``num_inference_steps``; T // steps
        is the stride).  Default 100 (RePaint used 250; fewer is quicker on a CPU).
    jump_length, jump_n_sample : int
        Every ``jump_length`` steps, jump back up ``jump_length`` steps, repeated
        ``jump_n_sample - 1`` times (RePaint's j and r; 1 turns jumps off).
    eta : float
        Noise of the unknown region's step (0: DDIM-like, diffusers' default).
    seed : int, optional
        Seed of x_T, each step's z and the jumps' noise.
    x_T, noise, undo_noise : arrays, optional
        The start (N, C, H, W), each entry's z (K, N, C, H, W), and the jumps'
        z of every single noising step in order (U, N, C, H, W), to reproduce a
        diffusers loop.
    labels, guidance_scale, guidance_rescale, return_trajectory, value_range, progress
        As in :func:`ddpm.sampling.sample_diffusion` (trajectories capture model
        steps; a list of t takes each t's last visit).

    Returns
    -------
    images : ndarray float32 (N, C, H, W)  (and a Trajectory with ``return_trajectory``)

    Examples
    --------
    >>> mask = np.ones((28, 28), np.float32); mask[8:20, 8:20] = 0   # doctest: +SKIP
    >>> filled = d.inpaint(x0[:4], mask, steps=50, seed=0)          # doctest: +SKIP
    """
    F = "inpaint"
    as_diffusion(diffusion, F)
    x = _images(x0, (None,) + diffusion.image_shape, "x0", F)
    if diffusion.objective == "eps" and np.any(diffusion.schedule.alpha_bars[1:] == 0.0):
        raise ValueError(f"{F}(): zero terminal SNR needs a v or x0 objective")
    m = np.asarray(mask)
    if m.dtype.kind not in "fiub":
        raise TypeError(f"{F}(): mask must be a numeric array, got dtype {m.dtype}")
    try:
        m = np.ascontiguousarray(np.broadcast_to(m.astype(np.float32), x.shape))
    except ValueError as exc:
        raise ValueError(f"{F}(): mask of shape {np.shape(mask)} does not broadcast to the "
                         f"images' shape {x.shape}") from exc
    if not np.all(np.isfinite(m)) or m.min() < 0.0 or m.max() > 1.0:
        raise ValueError(f"{F}(): mask values must be in [0, 1] (1 keeps the pixel, 0 inpaints)")
    eta = _eta(eta, "ddim", ("ddim",), F)
    n = x.shape[0]
    run = _run_options(diffusion, n, "repaint", clip_x0=bool(clip_x0), dynamic_threshold=None,
                       value_range=value_range, seed=seed, progress=progress,
                       progress_every=None, labels=labels, guidance_scale=guidance_scale,
                       guidance_rescale=guidance_rescale, F=F)
    T = diffusion.T
    ts, prevs = repaint_timesteps(T, steps, jump_length, jump_n_sample)
    shape = x.shape
    x_T = _check_noise(x_T, "x_T", shape, F)
    noise = _check_noise(noise, "noise", (len(ts),) + shape, F)
    U = int(np.sum(np.where(prevs > ts, prevs - ts, 0)))
    undo_noise = _check_noise(undo_noise, "undo_noise", (U,) + shape, F)
    capture = cap_t = None
    if return_trajectory is not None:
        down = np.flatnonzero(prevs < ts)
        if isinstance(return_trajectory, numbers.Integral) and not isinstance(return_trajectory,
                                                                               bool):
            k = as_int(return_trajectory, "return_trajectory", F, lo=1)
            idx = list(down[::k]) + [len(ts)]
        else:   # the last visit of each requested t (the final descent)
            last = {int(ts[i]): int(i) for i in down}
            try:
                want = [int(v) for v in return_trajectory]
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{F}(): return_trajectory must be an int or a list of "
                                f"timesteps") from exc
            missing = [v for v in want if v != 0 and v not in last]
            if missing:
                raise ValueError(f"{F}(): return_trajectory asks for t = {missing}, which "
                                 f"this run does not visit")
            idx = sorted({len(ts) if v == 0 else last[v] for v in want})
        capture = np.array(sorted(set(idx)), np.int64)
        cap_t = np.array([int(ts[i]) if i < len(ts) else 0 for i in capture], np.int64)
    betas = np.ascontiguousarray(diffusion.schedule.betas, dtype=np.float64)
    return _run(diffusion, shape, "repaint", run, ts, prevs, eta=eta, x_T=x_T, noise=noise,
                capture=capture, cap_t=cap_t, known=x, mask=m, betas=betas,
                undo_noise=undo_noise)
