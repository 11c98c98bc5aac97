"""Pictures: image grids, noise strips, PNG files (lesson visuals).

``save_grid`` writes PNG with the standard library alone (zlib), so the main
job needs no plotting package; ``show`` and the plotting helpers import
matplotlib lazily (the ``notebooks`` extra).
"""
from __future__ import annotations

import numbers
import os
import struct
import zlib

import numpy as np

from ._io import atomic_write, new_dirs

__all__ = ["make_grid", "save_grid", "show", "to_uint8", "write_png"]


def _need_matplotlib():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("this function needs matplotlib: pip install 'ddpm[notebooks]'") from exc
    return plt


def to_uint8(images, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Map float images from value_range to uint8 0..255 (clipping outside)."""
    lo, hi = value_range
    x = np.asarray(images, dtype=np.float64)
    x = (x - lo) / (hi - lo)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_grid(images, nrow: int | None = None, padding: int = 2, value_range=None,
              pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W) or (N, H, W) into one (rows*H, cols*W[, 3]) float array in [0, 1].

    value_range defaults to (0, 1) when every value lies in it, else (-1, 1).
    Complex images are refused (TypeError), as are NaN and Inf (ValueError): a
    picture of them would silently show something else.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"make_grid(): images must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("make_grid(): images contain NaN or Inf")
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"make_grid(): images must be (N, 1|3, H, W) or (N, H, W), got {x.shape}")
    if x.size == 0:
        raise ValueError(f"make_grid(): no images to draw (empty batch or image), shape {x.shape}")
    for name, v in (("nrow", nrow), ("padding", padding)):
        if v is not None and (isinstance(v, (bool, np.bool_)) or
                              not isinstance(v, numbers.Integral) or not 0 <= v <= 1 << 16):
            raise ValueError(f"make_grid(): {name} must be an int in 0..65536, got {v!r}")
    if value_range is None:
        value_range = (0.0, 1.0) if (x.min() >= 0.0 and x.max() <= 1.0) else (-1.0, 1.0)
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"make_grid(): value_range must be two numbers (lo, hi), got "
                        f"{value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"make_grid(): value_range must be (lo, hi) with lo < hi, finite, got "
                         f"{value_range!r}")
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    n, c, h, w = x.shape
    cols = nrow if nrow else int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding),
                   pad_value)
    for i in range(n):
        r, k = divmod(i, cols)
        y0, x0 = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y0:y0 + h, x0:x0 + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def write_png(path, pixels: np.ndarray) -> None:
    """Write a uint8 (H, W) grey or (H, W, 3) RGB array as PNG, atomically."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 2:
        color = 0
    elif a.ndim == 3 and a.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"write_png(): pixels must be (H, W) or (H, W, 3), got {a.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path = os.fspath(path)
    with new_dirs(os.path.dirname(os.path.abspath(path))):   # a failed write leaves no folder
        atomic_write(path, lambda tmp: _write_bytes(tmp, png))


def _write_bytes(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def save_grid(images, path, nrow: int | None = None, padding: int = 2, value_range=None,
              scale: int = 1) -> str:
    """Save images (N, C, H, W) as one PNG grid; returns the path.

    Parameters
    ----------
    images : array (N, 1|3, H, W) or (N, H, W)
        Values in [0, 1] (ddpm.sample's default) or [-1, 1] (detected, or
        give value_range).
    scale : int
        Integer upscaling (nearest) so 28x28 images are visible.

    Examples
    --------
    >>> import ddpm, numpy as np
    >>> ddpm.save_grid(np.zeros((4, 1, 28, 28)), "/tmp/grid.png")
    '/tmp/grid.png'
    """
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Integral) or \
            not 1 <= scale <= 256:
        raise ValueError(f"save_grid(): scale must be an int in 1..256, got {scale!r}")
    grid = make_grid(images, nrow=nrow, padding=padding, value_range=value_range)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    write_png(path, to_uint8(grid, (0.0, 1.0)))
    return os.fspath(path)


def show(images, nrow: int | None = None, title: str | None = None, value_range=None,
         ax=None, figsize=None):
    """Draw images as a grid with matplotlib (in a notebook: inline)."""
    plt = _need_matplotlib()
    grid = make_grid(images, nrow=nrow, value_range=value_range)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (6, 6))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def noise_strip(schedule, x0, ts, seed=0):
    """x_t of one image at each t in ts (t = 0 shows x0 itself), same eps for all.

    Returns a float32 array (len(ts), C, H, W) in [-1, 1]-ish data units.
    """
    x0 = np.asarray(x0, dtype=np.float32)
    if x0.ndim == 2:
        x0 = x0[None]
    frames = []
    eps = None
    for t in ts:
        if t == 0:
            frames.append(x0.copy())
            continue
        xt, eps = schedule.q_sample(x0[None], t, noise=eps, seed=seed)
        frames.append(xt[0])
    return np.stack(frames)
