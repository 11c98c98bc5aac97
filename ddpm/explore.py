"""Measurements the lesson notebooks make: spectra, blur, smoothness, tests, diversity.

Small NumPy functions, float64 inside, that turn a batch of images (or a
reverse run's frames) into the one number or curve a lesson talks about, so
that a notebook cell reads as the lesson does ("noise raises the high
frequencies": :func:`band_energy`) instead of as FFT bookkeeping.

Images are arrays shaped (N, C, H, W), (N, H, W) or (H, W), float, in the
data's units ([-1, 1] for ``ddpm.datasets``); every function validates its
arguments and raises TypeError / ValueError naming the argument.

* :func:`radial_power_spectrum` -- mean power per ring of spatial frequency;
* :func:`band_energy` -- energy per pixel between two radial frequencies;
* :func:`gaussian_blur` -- a separable Gaussian low-pass filter;
* :func:`neighbour_correlation` -- per-image correlation of adjacent pixels;
* :func:`two_sample_z` -- Welch z-test of two samples, optionally projected on a direction;
* :func:`mean_pairwise_distance` -- diversity: mean RMS distance over pairs (within classes);
* :func:`step_changes` -- RMS change between consecutive frames of a run;
* :func:`rms_distance` -- per-image RMS difference of two batches.

>>> import numpy as np
>>> from ddpm import explore
>>> x = np.random.default_rng(0).standard_normal((64, 28, 28))
>>> f, p = explore.radial_power_spectrum(x)        # white noise: flat, about 1
>>> bool(np.all(np.abs(p[1:15] - 1) < 0.2))
True
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["radial_power_spectrum", "band_energy", "gaussian_blur", "neighbour_correlation",
           "two_sample_z", "TwoSampleZ", "mean_pairwise_distance", "step_changes",
           "rms_distance"]


# ------------------------------------------------------------------------------ arguments
def _as_images(x, name: str, func: str, *, min_size: int = 1) -> np.ndarray:
    """x as float64 (N, C, H, W); (H, W) and (N, H, W) get the missing axes."""
    if isinstance(x, (bool, np.bool_)) or isinstance(x, (str, bytes)):
        raise TypeError(f"{func}(): {name} must be a float array of images, got "
                        f"{type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "f":
        raise TypeError(f"{func}(): {name} must be a float array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim != 4:
        raise ValueError(f"{func}(): {name} must be (H, W), (N, H, W) or (N, C, H, W), "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{func}(): {name} is empty, shape {arr.shape}")
    if min(arr.shape[2:]) < min_size:
        raise ValueError(f"{func}(): {name} images must be at least {min_size}x{min_size} "
                         f"pixels, got {arr.shape[2]}x{arr.shape[3]}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{func}(): {name} contains NaN or Inf")
    return arr


def _as_real(v, name: str, func: str, *, lo=None, lo_open=False, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{func}(): {name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{func}(): {name} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{func}(): {name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    return v


def _radial_frequency(H: int, W: int) -> np.ndarray:
    """(H, W) radial frequency in cycles/pixel of each 2-D DFT coefficient (np.fft order)."""
    fy, fx = np.fft.fftfreq(H), np.fft.fftfreq(W)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _power(images: np.ndarray) -> np.ndarray:
    """|DFT|^2 / (H W) per image and channel, (N, C, H, W): white noise of variance s^2 gives
    s^2 at every frequency, and the sum over frequencies is the sum of squared pixels."""
    H, W = images.shape[-2:]
    return np.abs(np.fft.fft2(images)) ** 2 / (H * W)


# ------------------------------------------------------------------------------ spectra
def radial_power_spectrum(images):
    """Mean power of images per ring of radial spatial frequency.

    Power is ``|DFT|^2 / (H W)`` of each image and channel, so white noise of
    variance s^2 has power s^2 at every frequency and the powers of one image
    sum to its sum of squared pixels (Parseval).  Ring k holds the
    frequencies r (cycles/pixel) with ``round(r S) = k``, S = max(H, W): rings
    one grid step wide, ring 0 holding only the mean (r = 0) of a square image,
    and rings past r = 0.5 only the corners of the grid.

    Parameters
    ----------
    images : float array (N, C, H, W), (N, H, W) or (H, W)

    Returns
    -------
    freq : ndarray float64 (K,)
        k / S for each ring k = 0..K-1, cycles/pixel.
    power : ndarray float64 (K,)
        Mean power over the frequencies in the ring, the images and channels.

    Examples
    --------
    >>> x = np.random.default_rng(1).standard_normal((32, 1, 28, 28))
    >>> f, p = radial_power_spectrum(x)
    >>> f.shape, bool(np.all(np.abs(p[1:15] - 1) < 0.3))
    ((21,), True)
    """
    F = "radial_power_spectrum"
    x = _as_images(images, "images", F)
    H, W = x.shape[-2:]
    S = max(H, W)
    mean_power = _power(x).mean(axis=(0, 1))                         # (H, W)
    ring = np.rint(_radial_frequency(H, W) * S).astype(np.int64).ravel()
    K = int(ring.max()) + 1
    total = np.bincount(ring, weights=mean_power.ravel(), minlength=K)
    count = np.bincount(ring, minlength=K)
    with np.errstate(invalid="ignore", divide="ignore"):
        power = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return np.arange(K) / S, power


def band_energy(images, low: float = 0.25, high: float | None = None) -> np.ndarray:
    """Energy per pixel of each image at radial frequencies in (low, high].

    ``sum of power over the band / (H W)``, with power as in
    :func:`radial_power_spectrum`, summed over channels.  With ``low < 0`` and
    ``high=None`` this is the mean squared pixel (Parseval); the default band,
    above 0.25 cycles/pixel, is "fine detail": noise raises it, blur lowers it.

    Parameters
    ----------
    images : float array (N, C, H, W), (N, H, W) or (H, W)
    low : float
        Lower edge (exclusive), cycles/pixel.
    high : float, optional
        Upper edge (inclusive); default: every frequency above ``low``.

    Returns
    -------
    ndarray float64 (N,)

    Examples
    --------
    >>> x = np.random.default_rng(2).standard_normal((1000, 28, 28))
    >>> bool(abs(band_energy(x, -1.0).mean() - 1) < 0.01)       # Parseval: mean of x^2
    True
    """
    F = "band_energy"
    x = _as_images(images, "images", F)
    low = _as_real(low, "low", F)
    high = _as_real(high, "high", F, allow_none=True)
    if high is not None and high <= low:
        raise ValueError(f"{F}(): high must be > low, got low={low}, high={high}")
    H, W = x.shape[-2:]
    r = _radial_frequency(H, W)
    mask = (r > low) if high is None else ((r > low) & (r <= high))
    return (_power(x) * mask).sum(axis=(1, 2, 3)) / (H * W)


def gaussian_blur(images, sigma: float = 1.0) -> np.ndarray:
    """Blur images with a normalised Gaussian of standard deviation ``sigma`` pixels.

    Separable: rows then columns, kernel truncated at ``ceil(3 sigma)`` pixels
    and renormalised to sum 1, edges padded by repeating the border pixel (so
    a constant image stays constant).  A low-pass filter: it removes fine
    detail, the opposite of what noise does.

    Parameters
    ----------
    images : float array (N, C, H, W), (N, H, W) or (H, W)
    sigma : float
        > 0, in pixels.

    Returns
    -------
    ndarray float64, the shape of ``images``.
    """
    F = "gaussian_blur"
    shape = np.shape(images)
    x = _as_images(images, "images", F)
    sigma = _as_real(sigma, "sigma", F, lo=0.0, lo_open=True)
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    H, W = x.shape[-2:]
    p = np.pad(x, [(0, 0), (0, 0), (r, r), (r, r)], mode="edge")
    rows = sum(k[i] * p[:, :, i:i + H, :] for i in range(2 * r + 1))
    out = sum(k[i] * rows[:, :, :, i:i + W] for i in range(2 * r + 1))
    return out.reshape(shape)


def neighbour_correlation(images, axis: str = "horizontal") -> np.ndarray:
    """Per-image Pearson correlation between each pixel and its right (or lower) neighbour.

    Real images are smooth (about 0.8 to 0.95 for Fashion-MNIST); white noise
    gives about 0.  Channels are pooled.

    Parameters
    ----------
    images : float array (N, C, H, W), (N, H, W) or (H, W)
    axis : {"horizontal", "vertical"}

    Returns
    -------
    ndarray float64 (N,); NaN for an image with a constant row/column set.
    """
    F = "neighbour_correlation"
    x = _as_images(images, "images", F, min_size=2)
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"{F}(): axis must be 'horizontal' or 'vertical', got {axis!r}")
    if axis == "horizontal":
        a, b = x[..., :, :-1], x[..., :, 1:]
    else:
        a, b = x[..., :-1, :], x[..., 1:, :]
    a = a.reshape(len(x), -1)
    b = b.reshape(len(x), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


# ------------------------------------------------------------------------------ tests
class TwoSampleZ(NamedTuple):
    """Result of :func:`two_sample_z`."""

    z: float          #: (mean of x - mean of y) / its standard error
    p_value: float    #: two-sided, from the normal approximation
    mean_x: float
    mean_y: float


def two_sample_z(x, y, direction=None) -> TwoSampleZ:
    """Welch z-test: do two samples have the same mean?

    With ``direction`` (an array shaped like one sample, e.g. an image), each
    sample is first projected on the unit vector ``direction / |direction|``
    ("how much does each image lean towards the average garment?"), which
    turns many pixels into one number per sample.  Then
    ``z = (mean_x - mean_y) / sqrt(var_x / n_x + var_y / n_y)`` with unbiased
    variances, and ``p = erfc(|z| / sqrt 2)``, two-sided.  For n of a few
    hundred or more the normal approximation is accurate; |z| > 2 (p < 0.05)
    is the usual "the samples differ".

    Parameters
    ----------
    x, y : float arrays
        1-D samples (n_x,), (n_y,) without ``direction``; with it, (n, ...)
        whose trailing shape is ``direction``'s.  n_x, n_y >= 2.
    direction : float array, optional
        Not all zero.

    Returns
    -------
    TwoSampleZ(z, p_value, mean_x, mean_y)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> r = two_sample_z(rng.normal(0.5, 1, 400), rng.normal(0, 1, 400))
    >>> bool(r.z > 4 and r.p_value < 1e-4)
    True
    """
    F = "two_sample_z"
    a = _as_sample(x, "x", F)
    b = _as_sample(y, "y", F)
    if direction is None:
        if a.ndim != 1 or b.ndim != 1:
            raise ValueError(f"{F}(): without direction, x and y must be 1-D, got shapes "
                             f"{a.shape} and {b.shape}")
    else:
        w = np.asarray(direction)
        if w.dtype.kind not in "fiu" or w.dtype.kind == "b":
            raise TypeError(f"{F}(): direction must be a real array, got dtype {w.dtype}")
        w = w.astype(np.float64)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{F}(): direction contains NaN or Inf")
        norm = float(np.sqrt(np.sum(w * w)))
        if norm == 0.0:
            raise ValueError(f"{F}(): direction must not be all zeros")
        for name, s in (("x", a), ("y", b)):
            if s.shape[1:] != w.shape:
                raise ValueError(f"{F}(): {name} must be (n,) + direction's shape {w.shape}, "
                                 f"got {s.shape}")
        u = (w / norm).ravel()
        a = a.reshape(len(a), -1) @ u
        b = b.reshape(len(b), -1) @ u
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    if se == 0.0:
        raise ValueError(f"{F}(): both samples are constant: the test is undefined")
    z = float((a.mean() - b.mean()) / se)
    return TwoSampleZ(z, math.erfc(abs(z) / math.sqrt(2.0)), float(a.mean()), float(b.mean()))


def _as_sample(v, name, F):
    arr = np.asarray(v)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise TypeError(f"{F}(): {name} must be a real array, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] < 2:
        raise ValueError(f"{F}(): {name} needs at least 2 samples, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{F}(): {name} contains NaN or Inf")
    return arr


# ------------------------------------------------------------------------------ diversity
def rms_distance(a, b) -> np.ndarray:
    """Per-image RMS difference ``sqrt(mean((a_i - b_i)^2))`` of two batches (N, ...).

    ``b`` may also be one image (broadcast against every image of ``a``).
    Returns ndarray float64 (N,), in the images' units (pixels in [-1, 1]: 0 is
    identical, 2 is every pixel opposite).
    """
    F = "rms_distance"
    x = _as_images(a, "a", F)
    y = _as_images(b, "b", F)
    if y.shape[0] == 1 and x.shape[0] > 1:
        y = np.broadcast_to(y, x.shape)
    if x.shape != y.shape:
        raise ValueError(f"{F}(): a and b must have the same shape (or b one image), got "
                         f"{np.shape(a)} and {np.shape(b)}")
    return np.sqrt(np.mean((x - y) ** 2, axis=(1, 2, 3)))


def mean_pairwise_distance(images, labels=None) -> float:
    """Diversity of a batch: the mean RMS pixel distance over pairs of images.

    Without ``labels``: over all N (N - 1) / 2 pairs.  With ``labels`` (e.g. a
    classifier's predicted class), only over pairs with the same label:
    *within-class* diversity, which does not reward a sampler merely for mixing
    classes.  Distances as in :func:`rms_distance`.

    Parameters
    ----------
    images : float array (N, C, H, W), (N, H, W)
    labels : int array (N,), optional

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Fewer than 2 images, or no label shared by two images.
    """
    F = "mean_pairwise_distance"
    x = _as_images(images, "images", F)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"{F}(): images needs at least 2 images, got {n}")
    flat = x.reshape(n, -1)
    D = flat.shape[1]
    if labels is None:
        groups = [np.arange(n)]
    else:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise TypeError(f"{F}(): labels must be integers, got dtype {lab.dtype}")
        if lab.shape != (n,):
            raise ValueError(f"{F}(): labels must have shape ({n},), got {lab.shape}")
        groups = [np.flatnonzero(lab == c) for c in np.unique(lab)]
        groups = [g for g in groups if len(g) >= 2]
        if not groups:
            raise ValueError(f"{F}(): no label is shared by two images: within-class "
                             f"diversity is undefined")
    total, pairs = 0.0, 0
    for g in groups:
        f = flat[g]
        sq = (f * f).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (f @ f.T), 0.0) / D
        iu = np.triu_indices(len(g), k=1)
        total += float(np.sqrt(d2[iu]).sum())
        pairs += len(iu[0])
    return total / pairs


def step_changes(frames) -> np.ndarray:
    """How much a run moves between consecutive frames: RMS change, mean over images.

    ``frames`` is (M, N, ...) -- e.g. ``Trajectory.x0_hat`` of a run captured
    at every step -- and the result (M - 1,) holds, for k = 0..M-2, the mean
    over the N images of ``sqrt(mean((frames[k + 1] - frames[k])^2))``.

    Returns
    -------
    ndarray float64 (M - 1,)
    """
    F = "step_changes"
    arr = np.asarray(frames)
    if arr.dtype.kind not in "f":
        raise TypeError(f"{F}(): frames must be a float array, got dtype {arr.dtype}")
    if arr.ndim < 3:
        raise ValueError(f"{F}(): frames must be (M, N, ...) with M >= 2 frames of N >= 1 "
                         f"samples, got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{F}(): frames needs M >= 2 frames and N >= 1 samples, got shape "
                         f"{arr.shape}")
    arr = arr.astype(np.float64).reshape(arr.shape[0], arr.shape[1], -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{F}(): frames contains NaN or Inf")
    return np.sqrt(np.mean(np.diff(arr, axis=0) ** 2, axis=2)).mean(axis=1)
