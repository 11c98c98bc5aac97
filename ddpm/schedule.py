"""Noise schedules and the forward process (lessons 6-2-1 and 6-2-2).

A :class:`NoiseSchedule` holds the betas of a diffusion and every table derived
from them, computed in float64 by the C core and exposed read-only in the
course's notation.  Timesteps are 1-based as in the lessons: ``t = 1..T``, and
index 0 of every table is the clean state (``alpha_bars[0] == 1``,
``betas[0] == 0``).

The one place where 1-based lesson time meets the network's 0-based time
input (diffusers' convention, ``t - 1`` in ``0..T-1``) is
:meth:`NoiseSchedule.model_timestep`.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._checks import as_float, as_float32_batch, as_int, as_seed, as_timesteps

__all__ = ["NoiseSchedule", "KINDS"]

KINDS = ("linear", "cosine", "scaled_linear", "sigmoid")

_DEFAULTS = {
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02},
    "cosine": {"s": 0.008, "max_beta": 0.999},
}


class NoiseSchedule:
    """A variance schedule beta_1..beta_T and its derived tables.

    Parameters
    ----------
    kind : {"linear", "cosine", "scaled_linear", "sigmoid"}
        ``linear``: ``betas = linspace(beta_start, beta_end, T)`` (Ho et al.;
        defaults 1e-4, 0.02).  ``cosine``: Nichol & Dhariwal,
        ``alpha_bar(t) = f(t)/f(0)``, ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``,
        each beta clipped at ``max_beta`` (defaults s = 0.008, 0.999).
        ``scaled_linear``: linear in sqrt(beta) (Stable Diffusion; defaults
        0.00085, 0.012).  ``sigmoid``: ``beta_start + (beta_end - beta_start)
        sigmoid(linspace(-6, 6, T))``.  These match diffusers' ``linear``,
        ``squaredcos_cap_v2``, ``scaled_linear`` and ``sigmoid``.
    timesteps : int
        T, the number of diffusion steps (1 .. 1,000,000).
    beta_start, beta_end : float, optional
        For the linear family.
    s, max_beta : float, optional
        For ``cosine``.
    rescale_zero_terminal_snr : bool
        Rescale so that ``alpha_bar_T = 0`` exactly (Lin et al. 2023).

    Attributes
    ----------
    T : int
    betas, alphas, alpha_bars, sqrt_alpha_bars, sqrt_one_minus_alpha_bars,
    snr, snr_db, posterior_variance, posterior_log_variance_clipped,
    posterior_mean_coef1, posterior_mean_coef2 : ndarray, float64, (T+1,)
        Read-only tables indexed by t (index 0 = clean state).

    Examples
    --------
    >>> import ddpm
    >>> s = ddpm.NoiseSchedule("linear")
    >>> round(float(s.alpha_bars[500]), 6)
    0.078587
    >>> xt, eps = s.q_sample(ddpm.datasets.tshirt()[None], t=500, seed=0)
    """

    def __init__(self, kind: str = "linear", timesteps: int = 1000, *, beta_start=None,
                 beta_end=None, s=None, max_beta=None, rescale_zero_terminal_snr: bool = False):
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"NoiseSchedule(): kind must be one of {KINDS}, got {kind!r}")
        T = as_int(timesteps, "timesteps", "NoiseSchedule", lo=1, hi=_core.MAX_TIMESTEPS)
        d = _DEFAULTS[kind]
        if kind == "cosine":
            if beta_start is not None or beta_end is not None:
                raise ValueError("NoiseSchedule(): beta_start/beta_end do not apply to "
                                 "'cosine' (use s and max_beta)")
            a = as_float(d["s"] if s is None else s, "s", "NoiseSchedule")
            b = as_float(d["max_beta"] if max_beta is None else max_beta, "max_beta",
                         "NoiseSchedule")
            if a < 0:
                raise ValueError(f"NoiseSchedule(): s must be >= 0, got {a}")
            if not 0 < b <= 1:
                raise ValueError(f"NoiseSchedule(): max_beta must be in (0, 1], got {b}")
            self._params = {"s": a, "max_beta": b}
        else:
            if s is not None or max_beta is not None:
                raise ValueError(f"NoiseSchedule(): s/max_beta apply only to 'cosine', "
                                 f"not {kind!r}")
            a = as_float(d["beta_start"] if beta_start is None else beta_start, "beta_start",
                         "NoiseSchedule")
            b = as_float(d["beta_end"] if beta_end is None else beta_end, "beta_end",
                         "NoiseSchedule")
            for name, v in (("beta_start", a), ("beta_end", b)):
                if not 0 < v < 1:
                    raise ValueError(f"NoiseSchedule(): {name} must be in (0, 1), got {v}")
            self._params = {"beta_start": a, "beta_end": b}
        betas = _core.schedule_betas(kind, T, a, b)
        self._init(kind, betas, bool(rescale_zero_terminal_snr))

    @classmethod
    def from_betas(cls, betas, *, rescale_zero_terminal_snr: bool = False) -> "NoiseSchedule":
        """A schedule from explicit betas for t = 1..T (length T, no leading 0).

        Every beta must be finite and in (0, 1).

        >>> s = NoiseSchedule.from_betas([0.1, 0.2, 0.5])
        >>> s.T, float(s.alpha_bars[3])
        (3, 0.36)
        """
        arr = np.asarray(betas)
        if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
            raise TypeError(f"from_betas(): betas must be real numbers, got dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim != 1 or arr.size < 1:
            raise ValueError(f"from_betas(): betas must be 1-D with T >= 1 values, "
                             f"got shape {arr.shape}")
        if arr.size > _core.MAX_TIMESTEPS:
            raise ValueError(f"from_betas(): at most {_core.MAX_TIMESTEPS} timesteps")
        if not np.all(np.isfinite(arr)):
            raise ValueError("from_betas(): betas contain NaN or Inf")
        if np.any(arr <= 0) or np.any(arr >= 1):
            bad = arr[(arr <= 0) | (arr >= 1)][0]
            raise ValueError(f"from_betas(): every beta must be in (0, 1), got {bad}")
        self = cls.__new__(cls)
        self._params = {}
        self._init("custom", np.concatenate([[0.0], arr]), bool(rescale_zero_terminal_snr))
        return self

    def _init(self, kind, betas, rescale):
        betas = np.ascontiguousarray(betas, dtype=np.float64)
        if 1.0 - betas[1] == 1.0:
            # alpha_1 = 1 - beta_1 would round to 1: alpha_bar_1 = 1, infinite SNR and a
            # 0/0 posterior variance at t = 1 (NaN tables).
            raise ValueError(f"beta_1 = {betas[1]:g} (betas / beta_start) is too small: "
                             f"1 - beta_1 rounds to 1 in float64; use beta_1 >= 1e-15")
        self._raw_betas = betas.copy()     # before any rescaling: what a config file records
        self._raw_betas.flags.writeable = False
        if rescale:
            _core.rescale_zero_terminal_snr(betas)
        tables = _core.schedule_tables(betas)
        tables.flags.writeable = False
        self.kind = kind
        self.rescale_zero_terminal_snr = rescale
        self.T = int(betas.shape[0] - 1)
        self._tables = tables
        for i, name in enumerate(_core.TABLE_NAMES):
            setattr(self, name, tables[i])

    # ------------------------------------------------------------------ helpers
    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return self.T

    def model_timestep(self, t):
        """The network's time input for lesson time t: ``t - 1`` (0..T-1).

        diffusers' schedulers and ``UNet2DModel`` index time from 0; the
        lessons (and every table here) from 1.  This is the one translation.
        """
        return np.asarray(t) - 1

    def _at(self, table, t):
        arr = np.asarray(t)
        if arr.dtype.kind not in "iu" or isinstance(t, (bool, np.bool_)):
            raise TypeError(f"t must be an int or an integer array, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > self.T):
            raise ValueError(f"t must be in 0..{self.T}")
        out = table[arr]
        return float(out) if out.ndim == 0 else out

    def beta(self, t):
        """beta_t (t = 0..T, int or integer array)."""
        return self._at(self.betas, t)

    def alpha(self, t):
        """alpha_t = 1 - beta_t."""
        return self._at(self.alphas, t)

    def alpha_bar(self, t):
        """alpha_bar_t: the fraction of x_0's variance left in x_t."""
        return self._at(self.alpha_bars, t)

    def signal_coef(self, t):
        """sqrt(alpha_bar_t), the factor on x_0 in the closed form."""
        return self._at(self.sqrt_alpha_bars, t)

    def noise_coef(self, t):
        """sqrt(1 - alpha_bar_t), the factor on eps in the closed form."""
        return self._at(self.sqrt_one_minus_alpha_bars, t)

    def snr_at(self, t):
        """alpha_bar_t / (1 - alpha_bar_t)."""
        return self._at(self.snr, t)

    def snr_db_at(self, t):
        """10 log10 SNR(t)."""
        return self._at(self.snr_db, t)

    # ---------------------------------------------------------- forward process
    def q_sample(self, x0, t, noise=None, seed=None):
        """Jump straight to step t: ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

        Parameters
        ----------
        x0 : array_like, float, shape (N, ...)
            Clean data (images in [-1, 1]).  float64 or non-contiguous input is
            converted to contiguous float32.
        t : int or int array of shape (N,)
            Timestep(s) in 1..T.
        noise : array_like, shape like x0, optional
            Use this eps instead of drawing one.
        seed : int, optional
            Seed of the counter RNG (ignored when noise is given).

        Returns
        -------
        x_t, eps : ndarray float32, shape like x0

        Examples
        --------
        >>> s = NoiseSchedule("cosine")
        >>> x0 = np.zeros((2, 1, 28, 28))
        >>> xt, eps = s.q_sample(x0, t=[10, 900], seed=0)
        """
        F = "q_sample"
        x0 = as_float32_batch(x0, "x0", F)
        tt = as_timesteps(t, x0.shape[0], self.T, F)
        xt = np.empty_like(x0)
        if noise is None:
            eps = np.empty_like(x0)
            given = False
        else:
            eps = as_float32_batch(noise, "noise", F)
            if eps.shape != x0.shape:
                raise ValueError(f"{F}(): noise must have the shape of x0 {x0.shape}, "
                                 f"got {eps.shape}")
            given = True
        _core.q_sample(xt, eps, x0, tt, self.sqrt_alpha_bars, self.sqrt_one_minus_alpha_bars,
                       as_seed(seed, F), given)
        return xt, eps

    def q_sample_chain(self, x0, t, seed=None):
        """Walk the chain step by step: ``x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps_s``.

        Costs t steps instead of one; equals :meth:`q_sample` in distribution
        (the lessons check mean and variance by Monte Carlo), not sample by sample.

        Returns
        -------
        x_t : ndarray float32, shape like x0
        """
        F = "q_sample_chain"
        x0 = as_float32_batch(x0, "x0", F)
        tt = as_timesteps(t, x0.shape[0], self.T, F)
        xt = np.empty_like(x0)
        _core.q_sample_chain(xt, x0, tt, self.alphas, self.betas, as_seed(seed, F))
        return xt

    def q_posterior(self, x0, xt, t):
        """Mean and variance of q(x_{t-1} | x_t, x_0).

        ``mean = coef1_t x0 + coef2_t x_t``; ``variance = beta_tilde_t =
        beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)``.

        Returns
        -------
        mean : ndarray float32, shape like x0
        variance : ndarray float64, shape (N, 1, ..., 1), broadcastable to x0
        """
        F = "q_posterior"
        x0 = as_float32_batch(x0, "x0", F)
        xt = as_float32_batch(xt, "xt", F)
        if xt.shape != x0.shape:
            raise ValueError(f"{F}(): xt must have the shape of x0 {x0.shape}, got {xt.shape}")
        tt = as_timesteps(t, x0.shape[0], self.T, F)
        mean = np.empty_like(x0)
        _core.q_posterior_mean(mean, x0, xt, tt, self.posterior_mean_coef1,
                               self.posterior_mean_coef2)
        var = self.posterior_variance[tt].reshape((-1,) + (1,) * (x0.ndim - 1))
        return mean, var

    # ------------------------------------------------------------- summaries
    def summary(self, ts=(1, 50, 250, 500, 750, 950, None)) -> str:
        """A small table of beta, alpha_bar and SNR at a few timesteps."""
        lines = [f"{self!r}",
                 f"{'t':>6} {'beta_t':>10} {'alpha_bar_t':>12} {'sqrt(ab)':>9} "
                 f"{'sqrt(1-ab)':>10} {'SNR dB':>8}"]
        for t in ts:
            t = self.T if t is None else t
            if not 1 <= t <= self.T:
                continue
            lines.append(f"{t:>6} {self.betas[t]:>10.6f} {self.alpha_bars[t]:>12.6g} "
                         f"{self.sqrt_alpha_bars[t]:>9.5f} "
                         f"{self.sqrt_one_minus_alpha_bars[t]:>10.5f} {self.snr_db[t]:>8.2f}")
        return "\n".join(lines)

    def __repr__(self):
        params = "".join(f", {k}={v:g}" for k, v in self._params.items())
        extra = ", rescale_zero_terminal_snr=True" if self.rescale_zero_terminal_snr else ""
        return f"NoiseSchedule({self.kind!r}, timesteps={self.T}{params}{extra})"

    def __len__(self):
        return self.T
