"""Argument handling shared by the public API.

The C binding is strict (C-contiguous float32, exact shapes); these helpers
are where a learner's natural inputs (float64 arrays, slices, Python ints) are
turned into what the binding takes, and where ambiguous inputs are refused
with a message that names the argument.
"""
from __future__ import annotations

import numbers
import secrets

import numpy as np


def as_float32_batch(x, name: str, func: str) -> np.ndarray:
    """Return x as a C-contiguous float32 array shaped (N, ...) with N >= 1.

    Floating arrays of any precision and any memory layout are converted
    (a copy only when needed).  Integer and boolean arrays are refused: their
    scale is ambiguous (0..255 pixels or already in [-1, 1]?), so the caller
    must convert them explicitly.  NaN/Inf are detected later, in C.
    """
    if isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple)) or isinstance(x, numbers.Real):
        arr = np.asarray(x)
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise TypeError(f"{func}(): {name} must be an array of floats") from exc
    kind = arr.dtype.kind
    if kind in "iub":
        raise TypeError(
            f"{func}(): {name} has dtype {arr.dtype}; integer/bool images are ambiguous "
            f"(0..255 or -1..1?). Convert explicitly, e.g. x.astype(np.float32) / 127.5 - 1")
    if kind == "c":
        raise TypeError(f"{func}(): {name} is complex; diffusion works on real values")
    if kind != "f":
        raise TypeError(f"{func}(): {name} must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise ValueError(f"{func}(): {name} must have shape (N, ...), got a scalar")
    if arr.shape[0] == 0:
        raise ValueError(f"{func}(): {name} is an empty batch (N = 0)")
    if arr.size == 0:
        raise ValueError(f"{func}(): {name} has no values per sample, shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_timesteps(t, n: int, T: int, func: str, name: str = "t") -> np.ndarray:
    """Return t as an int64 array of shape (n,), every value in 1..T.

    A scalar applies to the whole batch.  Floats are refused even when
    integral-looking: a timestep is an index into the schedule, not a time.
    """
    if isinstance(t, bool) or isinstance(t, np.bool_):
        raise TypeError(f"{func}(): {name} must be an int or an integer array, got a bool")
    def out_of_range(bad):
        return ValueError(f"{func}(): {name} must be in 1..T = 1..{T} (t = 0 is x_0 itself), "
                          f"got {int(bad)}")

    if isinstance(t, numbers.Integral):
        if not 1 <= int(t) <= T:            # as a Python int: t = 2**70 is out of range,
            raise out_of_range(t)           # not an OverflowError
        return np.full(n, int(t), dtype=np.int64)
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{func}(): {name} must be an int or an integer array, "
                        f"got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = arr.reshape(1).repeat(n)
    elif arr.shape != (n,):
        raise ValueError(f"{func}(): {name} must be a scalar or have shape ({n},), "
                         f"got {arr.shape}")
    if arr.size and (arr.min() < 1 or arr.max() > T):    # in the caller's dtype (uint64 too)
        raise out_of_range(arr[(arr < 1) | (arr > T)][0])
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_diffusion(obj, func: str, name: str = "diffusion"):
    """obj if it is a diffusion model (a ddpm.Diffusion or anything shaped like one:
    ``model``, ``schedule``, ``objective``, ``T`` and ``image_shape``), else TypeError.

    Checked by shape, not by class, so the sampling and likelihood modules need not
    import ddpm.diffusion (which imports them).
    """
    if not all(hasattr(obj, a) for a in ("model", "schedule", "objective", "T", "image_shape")):
        raise TypeError(f"{func}(): {name} must be a ddpm.Diffusion, got {type(obj).__name__}")
    return obj


def as_seed(seed, func: str) -> int:
    """A 64-bit seed; None draws a fresh one from the OS."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{func}(): seed must be an int or None, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"{func}(): seed must be in [0, 2**64), got {seed}")
    return seed


def as_int(value, name: str, func: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}(): {name} must be an int, got {type(value).__name__}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{func}(): {name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{func}(): {name} must be <= {hi}, got {value}")
    return value


def as_float(value, name: str, func: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}(): {name} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:                   # an int beyond the float range
        raise ValueError(f"{func}(): {name} must be finite, got an int of "
                         f"{int(value).bit_length()} bits") from None
    if not np.isfinite(value):
        raise ValueError(f"{func}(): {name} must be finite, got {value}")
    return value
