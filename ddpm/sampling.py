"""Sampling and generation: the reverse process (lesson 6-2-4).

Start from pure noise x_T ~ N(0, I) and walk back to x_0, one denoiser call per
step.  Three samplers, each a whole loop in C (the network forward included)
with Python's lock released; Python only checks the arguments here and is
called back between steps for Ctrl-C and the progress bar:

``"ddpm"``
    Ancestral sampling (Ho et al. 2020): x_{t-1} is drawn from the posterior
    q(x_{t-1} | x_t, x0_hat), i.e. for an eps model without clipping
    ``x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps_hat) + sigma_t z``
    with ``sigma_t^2`` the posterior variance (``variance="fixed_small"``, the
    default), ``beta_t`` (``"fixed_large"``) or 0 (``"zero"``, the lesson's
    experiment: it is NOT DDIM and collapses toward the mean).  The last step adds
    no noise.  With ``steps < T`` the chain skips timesteps as diffusers'
    ``DDPMScheduler`` does (alpha_t becomes alpha_bar_t / alpha_bar_prev).
``"ddim"``
    Song et al. 2021 on any number of steps; ``eta = 0`` is deterministic (an
    ODE: same x_T, same image), ``eta = 1`` has DDPM-like noise.
``"dpm++"``
    DPM-Solver++(2M) (Lu et al. 2022), good images in 10-25 steps: a second-order
    multistep solver on the data prediction x0_hat, first order on the first step,
    and the last step lands on x0_hat.

Each sampler gives what the corresponding diffusers scheduler gives
(``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler`` with
``algorithm_type="dpmsolver++"``, ``solver_order=2``) for the same model
outputs and noise, within float32 rounding (the tests check 1e-5 on whole loops).

Defaults, and why
-----------------
``timestep_spacing="trailing"``
    Steps start at t = T, where the x_T ~ N(0, I) we draw really is the
    distribution of x_T.  ``"leading"`` (diffusers' default for DDPM and DDIM)
    starts at T - T/steps + 1 (981 for 50 of 1000 steps), feeding a pure-noise
    image to the network as if it were less noisy (Lin et al. 2023, table 2);
    ``"linspace"`` (DPM-Solver's default in diffusers) is in between.  The
    three follow diffusers' definitions for each scheduler exactly.  With
    ``steps = T`` all three are t = T, T-1, ..., 1.
``clip_x0=None``
    Means diffusers' default for the sampler: clip x0_hat to [-1, 1] for
    ``"ddpm"`` and ``"ddim"`` (the data lives there: clipping keeps the early,
    very noisy predictions from throwing the chain off), no clipping for
    ``"dpm++"`` (a multistep solver extrapolates from its x0_hat history, which
    clipping distorts).  Pass True/False to choose.
``dynamic_threshold=None``
    Off.  A ratio p (e.g. 0.995) turns on Imagen's dynamic thresholding: per
    image s = max(1, p-quantile of |x0_hat|), x0_hat = clip(x0_hat, -s, s) / s.
    A pair (p, max_value) also caps s at max_value (diffusers' ``thresholding``
    with ``sample_max_value``).  It replaces clipping.

Noise and reproducibility: x_T and each step's z come from ddpm's counter RNG
under ``seed`` (same seed, same bits at any thread count) unless you pass
``x_T=`` (the start, (n, C, H, W)) and ``noise=`` ((steps, n, C, H, W);
``noise[k]`` is the z of step k, the last one is never used), which lets a
diffusers loop be reproduced exactly.

Memory does not grow with T or the number of steps: the loop keeps a few
(n, C, H, W) buffers.  ``return_trajectory`` captures x_t, eps_hat and x0_hat
only at the timesteps you ask for.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from . import _core
from ._checks import as_diffusion, as_float, as_float32_batch, as_int, as_seed

__all__ = ["sample_diffusion", "sampling_timesteps", "Trajectory", "SAMPLERS",
           "SPACINGS", "VARIANCES", "class_labels"]

SAMPLERS = ("ddpm", "ddim", "dpm++")              # what sample() runs; inpaint() runs "repaint"
SPACINGS = ("linspace", "leading", "trailing")
VARIANCES = tuple(_core.SAMPLE_VARIANCES)         # ("fixed_small", "fixed_large", "zero")
DEFAULT_STEPS = {"ddim": 50, "dpm++": 20}          # "ddpm": T
# the engine's enums, by name (the C core owns the numbering)
_SAMPLER_ID = {name: i for i, name in enumerate(_core.SAMPLERS)}
_OBJECTIVE_ID = {name: i for i, name in enumerate(_core.OBJECTIVES)}
_VARIANCE_ID = {name: i for i, name in enumerate(_core.SAMPLE_VARIANCES)}


@dataclass
class Trajectory:
    """Frames of one reverse run, at the requested timesteps only.

    Attributes
    ----------
    t : ndarray int64 (M,)
        Lesson timesteps of the frames, in the order the run visited them
        (decreasing; 0 is the end, x_0).
    x_t : ndarray float32 (M, N, C, H, W)
        The state at t, in the model's data space ([-1, 1] for data).
    eps_hat : ndarray float32 (M, N, C, H, W)
        The noise the model saw in x_t (0 at t = 0, where there is no prediction).
    x0_hat : ndarray float32 (M, N, C, H, W)
        The model's guess of x_0 from x_t, as the sampler used it (clipped or
        thresholded when that is on); x_0 itself at t = 0.
    """

    t: np.ndarray
    x_t: np.ndarray
    eps_hat: np.ndarray
    x0_hat: np.ndarray

    def __len__(self):
        return len(self.t)


def sampling_timesteps(T: int, steps: int, sampler: str = "ddpm",
                       timestep_spacing: str = "trailing", ddim_prev: str = "next"):
    """The (t, prev) pairs of a run: step k calls the model at lesson time ``t[k]``
    and moves the state to ``prev[k]`` (0 = x_0).

    The spacings are diffusers' (``set_timesteps`` of the matching scheduler,
    translated from its 0-based to the lessons' 1-based time).  ``ddim_prev``:
    ``"next"`` moves to the next timestep of the list; ``"diffusers"`` moves to
    ``t - T // steps`` as diffusers' ``DDIMScheduler.step`` does whatever the
    spacing (the same for "leading", and for "trailing" when steps divides T;
    with "linspace" the state then lands at a different noise level than the
    next model call is told).

    Returns
    -------
    t, prev : ndarray int64 (steps,)

    Examples
    --------
    >>> sampling_timesteps(1000, 4, "ddim", "trailing")[0].tolist()
    [1000, 750, 500, 250]
    """
    F = "sampling_timesteps"
    T = as_int(T, "T", F, lo=1)
    K = as_int(steps, "steps", F, lo=1)
    if K > T:
        raise ValueError(f"{F}(): steps must be <= T = {T}, got {K}")
    if sampler not in SAMPLERS:
        raise ValueError(f"{F}(): sampler must be one of {SAMPLERS}, got {sampler!r}")
    if timestep_spacing not in SPACINGS:
        raise ValueError(f"{F}(): timestep_spacing must be one of {SPACINGS}, "
                         f"got {timestep_spacing!r}")
    if ddim_prev not in ("next", "diffusers"):
        raise ValueError(f"{F}(): ddim_prev must be 'next' or 'diffusers', got {ddim_prev!r}")
    # model (0-based) time, as diffusers computes it
    if timestep_spacing == "trailing":
        m = np.round(T - np.arange(K) * (T / K)) - 1
    elif sampler == "dpm++":
        if timestep_spacing == "linspace":
            m = np.linspace(0, T - 1, K + 1).round()[::-1][:-1]
        else:
            m = (np.arange(0, K + 1) * (T // (K + 1)))[::-1][:-1]
    elif timestep_spacing == "linspace":
        m = np.linspace(0, T - 1, K).round()[::-1]
    else:
        m = (np.arange(0, K) * (T // K))[::-1]
    m = np.ascontiguousarray(m, dtype=np.int64)
    if m.min() < 0 or m.max() > T - 1 or np.any(np.diff(m) >= 0):
        raise ValueError(f"{F}(): {K} steps are too many for timestep_spacing="
                         f"{timestep_spacing!r} with T = {T} (timesteps would repeat)")
    t = m + 1
    if ddim_prev == "diffusers" and sampler == "ddim":
        pm = m - T // K
        prev = np.where(pm >= 0, pm + 1, 0).astype(np.int64)
    else:
        prev = np.append(t[1:], 0).astype(np.int64)
    return t, np.ascontiguousarray(prev)


def _choice(value, name, options, F):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{F}(): {name} must be one of {options}, got {value!r}")
    return value


def _progress_hook(progress, total):
    """(hook, close) for the C loop's callback."""
    if progress is False or progress is None:
        return None, lambda: None
    if callable(progress) and progress is not True:
        return progress, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency; a stripped install runs barless
        return None, lambda: None
    bar = tqdm(total=total, desc="sampling", unit="step", dynamic_ncols=True)

    def hook(step, nsteps):
        bar.update(step - bar.n)

    return hook, bar.close


def _capture_steps(spec, ts, F):
    """Step indices (0..K) and lesson times of the frames to capture."""
    K = len(ts)
    if isinstance(spec, (bool, np.bool_)):
        raise TypeError(f"{F}(): return_trajectory must be an int (every k steps) or a list of "
                        f"timesteps, got a bool")
    if isinstance(spec, numbers.Integral):
        k = as_int(spec, "return_trajectory", F, lo=1)
        idx = sorted(set(range(0, K, k)) | {K})
    else:
        try:
            want = [int(v) for v in spec]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{F}(): return_trajectory must be an int (every k steps) or a list "
                            f"of ints (timesteps)") from exc
        if any(not isinstance(v, numbers.Integral) or isinstance(v, bool) for v in spec):
            raise TypeError(f"{F}(): return_trajectory timesteps must be ints")
        if not want:
            raise ValueError(f"{F}(): return_trajectory is empty")
        idx, missing = set(), []
        for t in want:              # ts is decreasing: one search per frame, no O(K) tables
            k = K if t == 0 else int(np.searchsorted(-ts, -t))
            if k > K or (k < K and ts[k] != t) or (k == K and t != 0):
                missing.append(t)
            idx.add(k)
        if missing:
            shown = [int(v) for v in ts[:6]] + (["..."] if K > 6 else [])
            raise ValueError(f"{F}(): return_trajectory asks for t = {missing}, which this run "
                             f"does not visit (it visits t = {shown} and 0)")
        idx = sorted(idx)
        if len(idx) != len(want):
            raise ValueError(f"{F}(): return_trajectory has repeated timesteps")
    t = np.array([int(ts[k]) if k < K else 0 for k in idx], dtype=np.int64)
    return np.array(idx, dtype=np.int64), t


def class_labels(diffusion, labels, n: int, seed: int, func: str = "sample"):
    """The (n,) int64 labels a sampler hands a conditional model, and its null label.

    ``labels``: None (the null label: unconditional sampling), ``"random"`` (uniform
    over the model's classes, drawn from ``seed``), a class index or name, or a
    sequence of n of them (names resolve through the model's ``class_names``).
    Returns ``(None, 0)`` for an unconditional model, which takes no labels.
    """
    model = diffusion.model
    K = model.num_class_embeds
    if K is None:
        if labels is not None:
            raise ValueError(f"{func}(): labels were given but this model is unconditional "
                             f"(it has no class embedding; train one with labels=...)")
        return None, 0
    null = K - 1
    if labels is None:
        return np.full(n, null, np.int64), null
    if isinstance(labels, str) and labels == "random":
        u = np.empty(n, np.uint32)
        _core.rng_uint32(u, seed, _core.STREAM_SAMPLE_LABELS, 0)
        return ((u.astype(np.uint64) * np.uint64(null)) >> np.uint64(32)).astype(np.int64), null
    return model.class_index(labels, n, func), null


@dataclass
class _Run:
    """What every reverse run shares, checked once (sample, img2img, inpaint)."""
    clip: bool
    thresh_ratio: float
    thresh_max: float
    seed: int
    value_range: tuple
    progress: object
    progress_every: int | None
    labels: np.ndarray | None
    null_label: int
    guidance_scale: float
    guidance_rescale: float
    guidance_interval: tuple = (0, 0)


def _guidance_interval(interval, T, F):
    """(t_lo, t_hi) of lesson times 1..T, or (0, 0) for every step (None)."""
    if interval is None:
        return (0, 0)
    if isinstance(interval, (str, bytes)) or not hasattr(interval, "__len__") or len(interval) != 2:
        raise TypeError(f"{F}(): guidance_interval must be None or a pair (t_lo, t_hi), "
                        f"got {interval!r}")
    lo = as_int(interval[0], "guidance_interval[0]", F, lo=1, hi=T)
    hi = as_int(interval[1], "guidance_interval[1]", F, lo=1, hi=T)
    if lo > hi:
        raise ValueError(f"{F}(): guidance_interval must have t_lo <= t_hi, got {interval!r}")
    return (lo, hi)


def _run_options(diffusion, n, sampler, *, clip_x0, dynamic_threshold, value_range, seed,
                 progress, progress_every, labels, guidance_scale, guidance_rescale, F,
                 guidance_interval=None):
    as_diffusion(diffusion, F)
    cfg = diffusion.model.config
    if cfg["in_channels"] != cfg["out_channels"]:
        raise ValueError(f"{F}(): the model must output as many channels as it takes "
                         f"(in_channels={cfg['in_channels']}, out_channels={cfg['out_channels']})")
    if clip_x0 is not None and not isinstance(clip_x0, (bool, np.bool_)):
        raise TypeError(f"{F}(): clip_x0 must be True, False or None")
    thresh_ratio, thresh_max = 0.0, float("inf")
    if dynamic_threshold is not None:
        if clip_x0:
            raise ValueError(f"{F}(): dynamic_threshold replaces clip_x0; pass one of them")
        pair = dynamic_threshold if isinstance(dynamic_threshold, (tuple, list)) else (
            dynamic_threshold,)
        if len(pair) not in (1, 2) or any(isinstance(v, (bool, np.bool_)) or
                                          not isinstance(v, numbers.Real) for v in pair):
            raise TypeError(f"{F}(): dynamic_threshold must be a ratio or (ratio, max_value)")
        thresh_ratio = float(pair[0])
        if not 0.0 < thresh_ratio <= 1.0:
            raise ValueError(f"{F}(): the dynamic_threshold ratio must be in (0, 1], "
                             f"got {thresh_ratio}")
        if len(pair) == 2:
            thresh_max = float(pair[1])
            if not thresh_max >= 1.0:
                raise ValueError(f"{F}(): the dynamic_threshold max_value must be >= 1, "
                                 f"got {thresh_max}")
        clip = False
    else:
        clip = bool(clip_x0) if clip_x0 is not None else sampler != "dpm++"
    if value_range is None or tuple(value_range) not in ((0, 1), (-1, 1)):
        raise ValueError(f"{F}(): value_range must be (0, 1) or (-1, 1), got {value_range!r}")
    seed = as_seed(seed, F)
    if progress_every is not None:
        progress_every = as_int(progress_every, "progress_every", F, lo=1, hi=1 << 30)
    if not (isinstance(progress, (bool, np.bool_)) or progress is None or callable(progress)):
        raise TypeError(f"{F}(): progress must be True, False or a callable(step, steps)")
    w = as_float(guidance_scale, "guidance_scale", F)
    phi = as_float(guidance_rescale, "guidance_rescale", F)
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"{F}(): guidance_rescale must be in [0, 1], got {phi}")
    interval = _guidance_interval(guidance_interval, diffusion.T, F)
    lab, null = class_labels(diffusion, labels, n, seed, F)
    if lab is None and (w != 1.0 or phi != 0.0 or interval != (0, 0)):
        raise ValueError(f"{F}(): guidance_scale/guidance_rescale/guidance_interval need a "
                         f"class-conditional model")
    if labels is None:          # every label is the null label: guidance changes nothing
        w, phi, interval = 1.0, 0.0, (0, 0)
    return _Run(clip, thresh_ratio, thresh_max, seed, tuple(value_range), progress,
                progress_every, lab, null, w, phi, interval)


def _check_noise(x, name, shape, F):
    if x is None:
        return None
    x = as_float32_batch(x, name, F)
    if x.shape != shape:
        raise ValueError(f"{F}(): {name} must have shape {shape}, got {x.shape}")
    return x


def _run(diffusion, shape, sampler, run, ts, prevs, *, eta=0.0, variance="fixed_small",
         x_T=None, noise=None, capture=None, cap_t=None, init=None, known=None, mask=None,
         betas=None, undo_noise=None, n_model_steps=None):
    """One C call: the reverse loop over (ts, prevs); returns images[, Trajectory]."""
    ab = np.ascontiguousarray(diffusion.schedule.alpha_bars, dtype=np.float64)
    cap_x = cap_eps = cap_x0 = None
    if capture is not None:
        cap_x = np.empty((len(capture),) + shape, np.float32)
        cap_eps = np.empty_like(cap_x)
        cap_x0 = np.empty_like(cap_x)
    K = len(ts)
    every = run.progress_every if run.progress_every is not None else max(1, K // 100)
    hook, close = _progress_hook(run.progress, K)
    out = np.empty(shape, np.float32)
    try:
        _core.sample(out, diffusion.model._handle, diffusion.model.params, ab, ts, prevs,
                     sampler=_SAMPLER_ID[sampler], objective=_OBJECTIVE_ID[diffusion.objective],
                     variance=_VARIANCE_ID[variance], eta=eta, clip_x0=run.clip,
                     thresh_ratio=run.thresh_ratio, thresh_max=run.thresh_max, seed=run.seed,
                     x_T=x_T, noise=noise, capture=capture, cap_x=cap_x, cap_eps=cap_eps,
                     cap_x0=cap_x0, hook=hook, hook_every=every, labels=run.labels,
                     null_label=run.null_label, guidance_scale=run.guidance_scale,
                     guidance_rescale=run.guidance_rescale, init=init, known=known, mask=mask,
                     betas=betas, undo_noise=undo_noise, guidance_t_lo=run.guidance_interval[0],
                     guidance_t_hi=run.guidance_interval[1])
    finally:
        close()
    if run.value_range == (0, 1):
        out = np.clip(out * np.float32(0.5) + np.float32(0.5), 0.0, 1.0).astype(np.float32)
    if capture is None:
        return out
    return out, Trajectory(cap_t, cap_x, cap_eps, cap_x0)


def sample_diffusion(diffusion, n: int, steps: int | None = None, sampler: str = "ddpm",
                     eta: float = 0.0, seed: int | None = None, *, variance: str | None = None,
                     timestep_spacing: str = "trailing", clip_x0: bool | None = None,
                     dynamic_threshold=None, x_T=None, noise=None, return_trajectory=None,
                     value_range=(0, 1), progress=True, progress_every: int | None = None,
                     ddim_prev: str = "next", labels=None, guidance_scale: float = 1.0,
                     guidance_rescale: float = 0.0, guidance_interval=None):
    """Generate n images from a :class:`ddpm.Diffusion` (``Diffusion.sample`` calls this).

    Parameters
    ----------
    diffusion : ddpm.Diffusion
    n : int
        Number of images (>= 1).
    steps : int, optional
        Number of denoiser calls, 1..T.  Default: T for ``"ddpm"``, 50 for
        ``"ddim"``, 20 for ``"dpm++"`` (at most T).
    sampler : {"ddpm", "ddim", "dpm++"}
    eta : float
        DDIM's noise scale in [0, 1] (0: deterministic).  Only for ``"ddim"``.
    seed : int, optional
        Seed of x_T and of every step's noise.  None draws a fresh one.
    variance : {"fixed_small", "fixed_large", "zero"}, optional
        DDPM's sigma_t^2: posterior variance (default), beta_t, or 0.
    timestep_spacing : {"trailing", "leading", "linspace"}
        Which timesteps a run with fewer than T steps visits (see the module docs).
    clip_x0 : bool, optional
        Clip x0_hat to [-1, 1] at every step.  Default: True for ddpm/ddim, False
        for dpm++ (diffusers' defaults).
    dynamic_threshold : float or (float, float), optional
        Dynamic thresholding ratio (and cap); replaces clipping.
    x_T : array (n, C, H, W), optional
        The starting noise instead of drawing it.
    noise : array (steps, n, C, H, W), optional
        Each step's z instead of drawing it (``noise[k]`` for step k).
    return_trajectory : int or list of int, optional
        A list of lesson timesteps (e.g. ``[1000, 900, ..., 0]``; each must be
        visited by the run) or k for every k-th step and the end.  Then a
        :class:`Trajectory` is returned as well.
    value_range : (0, 1) or (-1, 1)
        (0, 1): images mapped by x/2 + 1/2 and clipped, as diffusers' pipelines
        do.  (-1, 1): the sampler's x_0 as it is, in the model's data space.
    progress : bool or callable
        A tqdm.auto progress bar (True; terminal or notebook), none (False), or
        ``progress(step, steps)`` called from the loop.
    progress_every : int, optional
        Call the progress hook every this many steps (default: steps // 100).
        Ctrl-C is checked at every step either way.
    ddim_prev : {"next", "diffusers"}
        See :func:`sampling_timesteps`; "diffusers" reproduces DDIMScheduler's
        ``t - T // steps`` rule.
    labels : None, "random", int, str or sequence, optional
        Class-conditional models only: the class of each image (an index, a
        name from the model's ``class_names``, or n of them); ``"random"`` draws
        them from ``seed``; None samples the null label (unconditional).
    guidance_scale : float
        Classifier-free guidance w (diffusers' convention): the model output is
        ``out(null) + w (out(labels) - out(null))``, one network call on a
        batch of 2n per step.  1 (default): the labels alone; 0: unconditional.
    guidance_rescale : float
        phi in [0, 1] of Lin et al. 2023 (diffusers' ``guidance_rescale``).
    guidance_interval : (int, int), optional
        (t_lo, t_hi): guide only the steps whose lesson time t is in
        [t_lo, t_hi] (1..T); the other steps use the labels alone (w = 1, a
        batch of n).  Kynkaanniemi et al. 2024 ("Applying guidance in a limited
        interval") find that guidance at high noise mostly costs diversity.
        None (default): every step.

    Returns
    -------
    images : ndarray float32 (n, C, H, W)
    trajectory : Trajectory
        Only when ``return_trajectory`` is given: ``(images, trajectory)``.

    Raises
    ------
    ValueError, TypeError
        Bad arguments (named), NaN/Inf in x_T or noise, a model whose output
        channels differ from its input channels, labels for an unconditional model.
    KeyboardInterrupt
        Ctrl-C, within one step.

    Examples
    --------
    >>> import ddpm
    >>> d = ddpm.Diffusion(ddpm.UNet(seed=0))
    >>> images = d.sample(4, steps=10, sampler="ddim", seed=0, progress=False)
    >>> images.shape, images.dtype
    ((4, 1, 28, 28), dtype('float32'))
    """
    F = "sample"
    as_diffusion(diffusion, F)
    n = as_int(n, "n", F, lo=1, hi=1 << 20)
    sampler = _choice(sampler, "sampler", SAMPLERS, F)
    T = diffusion.T
    if steps is None:
        steps = min(DEFAULT_STEPS.get(sampler, T), T)
    steps = as_int(steps, "steps", F, lo=1)
    if steps > T:
        raise ValueError(f"{F}(): steps must be <= T = {T}, got {steps}")
    timestep_spacing = _choice(timestep_spacing, "timestep_spacing", SPACINGS, F)
    ddim_prev = _choice(ddim_prev, "ddim_prev", ("next", "diffusers"), F)
    eta = _eta(eta, sampler, ("ddim",), F)
    if variance is None:
        variance = "fixed_small"
    elif sampler != "ddpm":
        raise ValueError(f"{F}(): variance applies to sampler='ddpm' only")
    variance = _choice(variance, "variance", VARIANCES, F)
    run = _run_options(diffusion, n, sampler, clip_x0=clip_x0,
                       dynamic_threshold=dynamic_threshold, value_range=value_range, seed=seed,
                       progress=progress, progress_every=progress_every, labels=labels,
                       guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, F=F,
                       guidance_interval=guidance_interval)
    shape = (n,) + diffusion.image_shape
    ts, prevs = sampling_timesteps(T, steps, sampler, timestep_spacing, ddim_prev)
    _check_eps_at_zero_snr(diffusion, ts, F)
    x_T = _check_noise(x_T, "x_T", shape, F)
    noise = _check_noise(noise, "noise", (steps,) + shape, F)
    capture = cap_t = None
    if return_trajectory is not None:
        capture, cap_t = _capture_steps(return_trajectory, ts, F)
    return _run(diffusion, shape, sampler, run, ts, prevs, eta=eta, variance=variance, x_T=x_T,
                noise=noise, capture=capture, cap_t=cap_t)


def _eta(eta, sampler, allowed, F):
    if isinstance(eta, (bool, np.bool_)) or not isinstance(eta, numbers.Real):
        raise TypeError(f"{F}(): eta must be a number, got {type(eta).__name__}")
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"{F}(): eta must be in [0, 1], got {eta}")
    if eta != 0.0 and sampler not in allowed:
        raise ValueError(f"{F}(): eta applies to sampler='ddim' only (got sampler={sampler!r})")
    return eta


def _check_eps_at_zero_snr(diffusion, ts, F):
    ab = diffusion.schedule.alpha_bars
    if diffusion.objective == "eps" and np.any(ab[ts] == 0.0):
        raise ValueError(f"{F}(): alpha_bar_t = 0 at a visited t (zero terminal SNR): an eps "
                         f"model cannot predict x_0 there; use a v or x0 objective")
