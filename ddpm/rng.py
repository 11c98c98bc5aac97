"""Seeded noise from the C core's counter-based generator (Philox4x32-10).

Every number is a pure function of (seed, stream, index), so the same seed
gives the same bits at any thread count and however a batch is split.
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._checks import as_int, as_seed

__all__ = ["randn", "new_seed"]


def new_seed() -> int:
    """A fresh 63-bit seed from the operating system."""
    return as_seed(None, "new_seed")


def randn(*shape, seed=None, stream: int = 0) -> np.ndarray:
    """Standard normal float32 array of the given shape.

    Parameters
    ----------
    *shape : ints
        Output shape, e.g. ``randn(16, 1, 28, 28, seed=0)``.
    seed : int or None
        Same seed, same numbers.  None draws a fresh seed.
    stream : int
        Independent sub-streams of one seed (0, 1, 2, ...).

    Examples
    --------
    >>> import ddpm
    >>> x = ddpm.randn(4, 1, 28, 28, seed=0)
    >>> x.shape, x.dtype
    ((4, 1, 28, 28), dtype('float32'))
    """
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(as_int(s, "shape", "randn", lo=0) for s in shape)
    stream = as_int(stream, "stream", "randn", lo=0, hi=2 ** 32 - 1)
    out = np.empty(shape, dtype=np.float32)
    _core.rng_normal(out, as_seed(seed, "randn"), _core.STREAM_USER + stream, 0)
    return out
