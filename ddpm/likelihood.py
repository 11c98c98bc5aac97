"""The negative log-likelihood bound of a DDPM, in bits per dimension (Ho et al. 2020, eq. 5).

A diffusion model gives no likelihood directly, but the variational bound of the
lessons bounds it from above.  For one image x_0 with D values::

    -log p(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0

    L_T     = KL( q(x_T | x_0) || N(0, I) )                         (prior, no model)
    L_{t-1} = KL( q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t) )       (t = 2..T)
    L_0     = -log p(x_0 | x_1)                                     (decoder)

with x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps drawn once per
(image, t).  Both distributions of L_{t-1} are Gaussian: the posterior has mean
``posterior_mean_coef1[t] x_0 + posterior_mean_coef2[t] x_t`` and variance
``posterior_variance[t]`` (= beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t));
the model's mean is the same formula with x0_hat (the model's guess of x_0,
:meth:`ddpm.Diffusion.predict_x0`, *not* clipped unless ``clip_x0=True``) in
place of x_0, and its variance is fixed.  So, summed over the D values::

    L_{t-1} = 0.5 sum_i [ log(s2/v) + v/s2 - 1 + coef1_t^2 (x_0i - x0_hat_i)^2 / s2 ]
    L_T     = 0.5 sum_i [ -alpha_bar_T - log(1 - alpha_bar_T) + alpha_bar_T x_0i^2 ]

(v the posterior variance, s2 the model's).  L_0 is the discretised Gaussian of
Ho et al.'s code: the image lives on 256 levels k/127.5 - 1, and p(x_0 | x_1)
gives each value the mass that N(x0_hat, s2_1) puts on its bin
[x - 1/255, x + 1/255], the bins of -1 and 1 extended to -inf and +inf; each
log mass is clamped at log(1e-12) as in improved-diffusion.  The total in
nats becomes bits per dimension as ``nats / (D ln 2)``.

The model variance (``variance=``):

``"fixed_small"`` (the default)
    s2_t = posterior_variance[t], the variance of the true posterior
    q(x_{t-1} | x_t, x_0).  Why the default: it is the variance the library's
    DDPM sampler uses by default (as diffusers' ``DDPMScheduler``), so with
    ``clip_x0=True`` this bounds the reverse process ``Diffusion.sample`` runs by
    default; and the log/ratio part of every L_{t-1} vanishes, leaving exactly
    the weighted squared error of the model's mean (Ho et al. eq. 8).
``"fixed_large"``
    s2_t = beta_t (Ho et al.'s "fixedlarge", their CIFAR-10 setting), the
    variance of q(x_t | x_{t-1}); each L_{t-1} then also pays
    0.5 D (log(beta_t / v) + v / beta_t - 1) >= 0 but divides the squared error
    by the larger beta_t.
Which is tighter depends on the model: the best fixed s2_t is v_t + coef1_t^2
E(x_0 - x0_hat)^2, so fixed_small wins only when the model's error at small t
is near the irreducible one.  Measured on 8-bit Fashion-MNIST test images
(T = 1000), fixed_large was lower: 17.53 vs 18.28 bits/dim for an untrained
U-Net (64 images), 4.41 vs 4.64 for a smaller one after 600 training steps (32
images).  Each is a valid bound for its own reverse process; compute both when
comparing with published numbers.

At t = 1 the posterior variance is 0; both choices then use
posterior_variance[2] for the decoder (``posterior_log_variance_clipped`` in Ho
et al.'s and improved-diffusion's code).

Exact and Monte Carlo modes: the exact bound evaluates the network at every t
(T forward passes per batch: t = 1 for L_0 and t = 2..T).  ``t_samples=K``
instead draws, per image, K distinct timesteps uniformly from 2..T and scales
their sum by (T - 1)/K: an unbiased estimate of sum_{t=2}^T L_{t-1} for
(K + 1) passes per batch.  The price is variance: the terms differ by orders of
magnitude across t (the first few steps carry most of the bound), so with small
K a single image's estimate is noisy; over N images the noise of the mean falls
as 1/sqrt(N), and ``NLLResult.stderr`` includes it.  Draws are without
replacement, so K = T - 1 is the exact sum, and the variance shrinks by the
finite-population factor (T - 1 - K)/(T - 2) relative to independent draws.

Reproducibility: eps of image n at time t and the timestep draws come from
ddpm's counter RNG under ``seed`` and the image's index in x0, so the result
is bit-identical at any thread count, the x_t and the drawn timesteps do not
depend on ``batch_size`` (the network's float32 output can differ in its last
bits with the batch size: its matrix products are blocked by batch), and an
exact and a Monte Carlo call with the same seed use the same x_t for the same
(image, t).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from . import _core
from ._checks import as_diffusion, as_int, as_seed

__all__ = ["NLLResult", "nll", "NLL_VARIANCES"]

NLL_VARIANCES = ("fixed_small", "fixed_large")
# the engine's enums, by name (the C core owns the numbering)
_VARIANCE_ID = {name: i for i, name in enumerate(_core.NLL_VARIANCES)}
_OBJECTIVE_ID = {name: i for i, name in enumerate(_core.OBJECTIVES)}
GRID_TOLERANCE = 1e-3   # in levels: |(x + 1) 127.5 - k| allowed before x counts as off the grid


@dataclass(frozen=True, eq=False)
class NLLResult:
    """The bound of :func:`nll`, in bits per dimension unless said otherwise.

    Attributes
    ----------
    bits_per_dim : float
        Mean of ``per_image``.
    per_image : ndarray float64 (N,)
        The bound of each image (an estimate in Monte Carlo mode).
    prior, decoder, total_kl : float
        Means over images of L_T, L_0 and sum_{t=2}^T L_{t-1};
        ``prior + total_kl + decoder == bits_per_dim``.
    kl_per_t : ndarray float64 (T+1,)
        Indexed by lesson time t: the mean over images of L_{t-1} (entries 0 and
        1 are 0; L_0 is ``decoder``).  In Monte Carlo mode each image adds its
        scaled term at its drawn t only: still an unbiased estimate per t.
    stderr : float
        Standard error of ``bits_per_dim`` as the mean of N independent
        per-image values (image-to-image spread plus Monte Carlo noise); nan
        for N = 1.
    t : ndarray int64 (N, M)
        The lesson times evaluated per image; column 0 is t = 1 (the decoder).
    terms : ndarray float64 (N, M)
        The unscaled term at ``t`` in nats (L_0 for t = 1, L_{t-1} otherwise).
    prior_nats : ndarray float64 (N,)
        L_T of each image in nats.
    t_samples : int or None
        None for the exact bound.
    """

    bits_per_dim: float
    per_image: np.ndarray
    prior: float
    decoder: float
    kl_per_t: np.ndarray
    total_kl: float
    stderr: float
    t: np.ndarray = field(repr=False)
    terms: np.ndarray = field(repr=False)
    prior_nats: np.ndarray = field(repr=False)
    t_samples: int | None = None
    variance: str = "fixed_small"
    seed: int = 0

    def __repr__(self):
        mode = "exact" if self.t_samples is None else f"t_samples={self.t_samples}"
        return (f"NLLResult(bits_per_dim={self.bits_per_dim:.4f} +- {self.stderr:.4f}, "
                f"prior={self.prior:.4g}, total_kl={self.total_kl:.4f}, "
                f"decoder={self.decoder:.4f}, N={len(self.per_image)}, {mode}, "
                f"variance={self.variance!r})")


def check_grid(x0, func: str = "nll", quantize: bool = False) -> np.ndarray:
    """x0 (N, ...) float32/float64 on [-1, 1] -> float32 values exactly k/127.5 - 1.

    Off-grid values raise ValueError unless ``quantize``, which snaps each to
    the nearest level.  Values outside [-1, 1] (beyond 1e-6) always raise.
    """
    if not isinstance(x0, np.ndarray):
        raise TypeError(f"{func}(): x0 must be a numpy.ndarray of float32 or float64, "
                        f"got {type(x0).__name__}")
    if x0.dtype not in (np.float32, np.float64):
        hint = (" (integer pixels: convert with x.astype(np.float32) / 127.5 - 1)"
                if x0.dtype.kind in "iub" else "")
        raise TypeError(f"{func}(): x0 must have dtype float32 or float64, got {x0.dtype}{hint}")
    x = x0.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{func}(): x0 contains NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{func}(): x0 must lie in [-1, 1] (images scaled as k/127.5 - 1), "
                         f"got values in [{lo:.6g}, {hi:.6g}]")
    k = (x + 1.0) * 127.5
    kr = np.clip(np.rint(k), 0, 255)
    off = np.abs(k - kr)
    if not quantize and off.max() > GRID_TOLERANCE:
        i = int(np.argmax(off))
        raise ValueError(
            f"{func}(): x0 is not on the 256-level grid k/127.5 - 1 (value {float(x.flat[i])!r} is "
            f"{off.flat[i]:.3g} levels off); the discretised decoder needs 8-bit data. "
            f"Pass quantize=True to snap to the nearest level")
    return np.ascontiguousarray(kr / 127.5 - 1.0, dtype=np.float32)


def _progress(progress, total):
    if progress is False or progress is None:
        return None, lambda: None
    if callable(progress) and progress is not True:
        return progress, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency; a stripped install runs barless
        return None, lambda: None
    bar = tqdm(total=total, desc="nll", unit="t", dynamic_ncols=True)
    return (lambda done, n: bar.update(done - bar.n)), bar.close


def nll(diffusion, x0, *, batch_size: int = 64, t_samples: int | None = None, seed: int = 0,
        variance: str = "fixed_small", clip_x0: bool = False, quantize: bool = False,
        progress=False, labels=None, _model=None) -> NLLResult:
    """The DDPM negative log-likelihood bound of images x0; see the module docstring.

    Parameters
    ----------
    diffusion : ddpm.Diffusion
    x0 : ndarray float32 or float64, (N, C, H, W)
        Images on the 256-level grid k/127.5 - 1 in [-1, 1].
    batch_size : int
        Images per network call.
    t_samples : int, optional
        None: the exact bound (T network passes per batch).  K in 1..T-1: K
        timesteps per image drawn from 2..T, scaled by (T-1)/K (unbiased).
    seed : int
        Seed of the x_t noise and of the timestep draws.
    variance : {"fixed_small", "fixed_large"}
        The model's fixed reverse variance (see the module docstring).
    clip_x0 : bool
        Clip x0_hat to [-1, 1] before forming the model's mean (off: the bound of
        the unclipped model, as in Ho et al.'s evaluation).
    quantize : bool
        Snap off-grid values to the nearest level instead of raising.
    progress : bool or callable
        A tqdm bar (True) or ``progress(done, total)`` counted in network passes.
    labels : class labels, optional
        Class-conditional models: -log p(x_0 | class) for the images' classes (indices
        or names, one per image); None: the null label, -log p(x_0) of the model's
        unconditional half.

    Returns
    -------
    NLLResult
    """
    F = "nll"
    as_diffusion(diffusion, F)
    x = check_grid(x0, F, bool(quantize))
    shape = diffusion.image_shape
    if x.ndim != 4 or x.shape[1:] != shape or x.shape[0] < 1:
        raise ValueError(f"{F}(): x0 must have shape (N, {shape[0]}, {shape[1]}, {shape[2]}) "
                         f"for this model, got {x0.shape}")
    N = x.shape[0]
    D = int(np.prod(shape))
    T = diffusion.T
    batch_size = as_int(batch_size, "batch_size", F, lo=1, hi=1 << 20)
    if t_samples is not None:
        t_samples = as_int(t_samples, "t_samples", F, lo=1)
        if T < 2 or t_samples > T - 1:
            raise ValueError(f"{F}(): t_samples must be in 1..T-1 = 1..{T - 1} (timesteps are "
                             f"drawn from 2..T), got {t_samples}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{F}(): seed must be an int, got {type(seed).__name__}")
    seed = as_seed(seed, F)
    if not isinstance(variance, str) or variance not in NLL_VARIANCES:
        raise ValueError(f"{F}(): variance must be one of {NLL_VARIANCES}, got {variance!r}")
    if not isinstance(clip_x0, (bool, np.bool_)):
        raise TypeError(f"{F}(): clip_x0 must be a bool")
    if not (isinstance(progress, (bool, np.bool_)) or progress is None or callable(progress)):
        raise TypeError(f"{F}(): progress must be True, False or a callable(done, total)")
    sched = diffusion.schedule
    if diffusion.objective == "eps" and sched.alpha_bars[T] == 0.0:
        raise ValueError(f"{F}(): an eps model cannot predict x_0 at t = T where alpha_bar_T = 0 "
                         f"(zero terminal SNR); the bound needs the v or x0 objective")
    betas = np.ascontiguousarray(sched.betas, dtype=np.float64)
    model = diffusion.model
    # _model (private, for tests): a (mean, std) tuple runs the core's exact denoiser of
    # N(mean, std^2) data instead of the U-Net (which then only fixes the image shape)
    handle, params = (model._handle, model.params) if _model is None else (_model, None)
    lab = None
    if model.num_class_embeds is not None and _model is None:
        lab = (np.full(N, model.num_class_embeds - 1, np.int64) if labels is None
               else model.class_index(labels, N, F))
    elif labels is not None:
        raise ValueError(f"{F}(): labels were given but the model is unconditional")

    M = T if t_samples is None else t_samples + 1
    tgrid = np.empty((N, M), np.int64)
    terms = np.empty((N, M), np.float64)
    prior = np.empty(N, np.float64)
    nbatches = -(-N // batch_size)
    hook, close = _progress(progress, nbatches * M)
    try:
        for b in range(nbatches):
            lo, hi = b * batch_size, min(N, (b + 1) * batch_size)
            ts = np.empty((hi - lo, M), np.int64)
            if t_samples is None:
                ts[:] = np.arange(1, T + 1, dtype=np.int64)
            else:
                ts[:, 0] = 1
                draws = np.empty((hi - lo, t_samples), np.int64)
                _core.nll_timesteps(draws, T, seed, lo)
                ts[:, 1:] = draws
            bterms = np.empty((hi - lo, M), np.float64)
            bprior = np.empty(hi - lo, np.float64)
            bhook = None
            if hook is not None:
                done = b * M
                bhook = (lambda k, n, done=done: hook(done + k, nbatches * M))
            _core.nll(bterms, bprior, x[lo:hi], handle, params, betas, ts,
                      objective=_OBJECTIVE_ID[diffusion.objective],
                      variance=_VARIANCE_ID[variance], clip_x0=bool(clip_x0), seed=seed,
                      first_image=lo, hook=bhook, hook_every=max(1, M // 100),
                      labels=None if lab is None else lab[lo:hi])
            tgrid[lo:hi], terms[lo:hi], prior[lo:hi] = ts, bterms, bprior
    finally:
        close()
    return _result(tgrid, terms, prior, T, D, t_samples, variance, seed)


def _result(tgrid, terms, prior, T, D, t_samples, variance, seed) -> NLLResult:
    N = terms.shape[0]
    to_bits = 1.0 / (D * math.log(2.0))
    scale = 1.0 if t_samples is None else (T - 1) / t_samples
    kl_nats = terms[:, 1:].sum(axis=1) * scale
    per_image = (prior + terms[:, 0] + kl_nats) * to_bits
    kl_per_t = np.zeros(T + 1, np.float64)
    np.add.at(kl_per_t, tgrid[:, 1:].ravel(), (terms[:, 1:] * scale).ravel())
    kl_per_t *= to_bits / N
    for a in (tgrid, terms, prior, per_image, kl_per_t):
        a.flags.writeable = False
    stderr = float(per_image.std(ddof=1) / math.sqrt(N)) if N > 1 else float("nan")
    return NLLResult(bits_per_dim=float(per_image.mean()), per_image=per_image,
                     prior=float(prior.mean() * to_bits), decoder=float(terms[:, 0].mean() * to_bits),
                     kl_per_t=kl_per_t, total_kl=float(kl_nats.mean() * to_bits), stderr=stderr,
                     t=tgrid, terms=terms, prior_nats=prior, t_samples=t_samples,
                     variance=variance, seed=seed)
