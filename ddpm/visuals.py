"""Pictures: image grids, noise strips, PNG files and GIF animations (lesson visuals).

``save_grid`` and ``save_animation`` write through Pillow (a runtime
dependency), so the main job needs no plotting package; ``show`` and the
plotting helpers import matplotlib lazily (the ``notebooks`` extra).
``to_pil`` and ``to_numpy`` turn a batch into what diffusers' pipelines return
for ``output_type="pil"`` and ``output_type="np"``.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from ._io import atomic_write, new_dirs

__all__ = ["make_grid", "save_grid", "save_animation", "show", "to_uint8", "write_png",
           "to_pil", "to_numpy", "convert_output", "OUTPUT_TYPES"]

#: What ``output_type=`` takes on ``Diffusion.sample`` and ``ddpm.sample``:
#: None (ddpm's NCHW float32), "np" (diffusers' NHWC float32 in [0, 1]) or "pil".
OUTPUT_TYPES = (None, "np", "pil")


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


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow is a runtime dependency
        raise ImportError("ddpm needs Pillow to read and write images: pip install pillow") from exc
    return Image


def write_png(path, pixels: np.ndarray) -> None:
    """Write a uint8 (H, W) grey or (H, W, 3) RGB array as PNG (Pillow), atomically.

    Parent folders are created; an interrupted write leaves the old file.

    Examples
    --------
    >>> import numpy as np
    >>> write_png("/tmp/ramp.png", np.arange(256, dtype=np.uint8).reshape(16, 16))
    """
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"write_png(): pixels must be (H, W) or (H, W, 3), got {a.shape}")
    img = _pil().fromarray(a)            # uint8 (H, W) -> "L", (H, W, 3) -> "RGB"
    path = os.fspath(path)
    with new_dirs(os.path.dirname(os.path.abspath(path))):   # a failed write leaves no folder
        atomic_write(path, lambda tmp: img.save(tmp, format="PNG", optimize=True))


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


def _label_strip(text: str, width: int, height: int = 14) -> np.ndarray:
    """A white (height, width) uint8 strip with black text at the left (Pillow's default font)."""
    from PIL import ImageDraw
    img = _pil().new("L", (width, height), 255)
    ImageDraw.Draw(img).text((3, 1), text, fill=0)
    return np.asarray(img)


def save_animation(trajectory, path, *, nrow: int | None = None, scale: int = 3,
                   duration_ms: int = 120, hold_ms: int = 1500, padding: int = 2,
                   value_range=(-1.0, 1.0)) -> str:
    """Write a reverse run as a looping GIF: x_t and x0_hat side by side at each captured t.

    Each frame is two grids of the batch, x_t (the sampler's state) on the left
    and x0_hat (the model's guess of the final image) on the right, under a
    strip that names t.  The last frame (t = 0, the samples) is held for
    ``hold_ms``; the GIF loops forever.

    Parameters
    ----------
    trajectory : ddpm.sampling.Trajectory
        What ``Diffusion.sample(..., return_trajectory=...)`` returns beside the
        images (anything with ``t`` (M,), ``x_t`` and ``x0_hat`` (M, N, C, H, W)).
    path : str or os.PathLike
        The ``.gif`` file to write (atomically; parent folders are created).
    nrow : int, optional
        Images per row of each grid (default: about sqrt(N)).
    scale : int
        Integer (nearest) upscaling, 1..16.
    duration_ms, hold_ms : int
        Time per frame, and for the last frame.
    value_range : (float, float)
        The data range of x_t and x0_hat (default the model's [-1, 1]).

    Returns
    -------
    str, the path written.

    Examples
    --------
    >>> import ddpm
    >>> d = ddpm.load_pretrained("fashion-mnist")
    >>> _, traj = d.sample(4, steps=20, sampler="ddim", seed=0, return_trajectory=2,
    ...                    progress=False)
    >>> ddpm.save_animation(traj, "/tmp/reverse.gif")
    '/tmp/reverse.gif'
    """
    F = "save_animation"
    if not all(hasattr(trajectory, a) for a in ("t", "x_t", "x0_hat")):
        raise TypeError(f"{F}(): trajectory must be a ddpm.sampling.Trajectory (from "
                        f"sample(..., return_trajectory=...)), got {type(trajectory).__name__}")
    ts = np.asarray(trajectory.t)
    x_t = np.asarray(trajectory.x_t)
    x0 = np.asarray(trajectory.x0_hat)
    if x_t.ndim != 5 or x0.shape != x_t.shape or ts.shape != (x_t.shape[0],):
        raise ValueError(f"{F}(): trajectory must hold t (M,) and x_t, x0_hat (M, N, C, H, W), "
                         f"got t {ts.shape}, x_t {x_t.shape}, x0_hat {x0.shape}")
    if x_t.shape[0] == 0:
        raise ValueError(f"{F}(): the trajectory has no frames")
    path = os.fspath(path)
    if not path.lower().endswith(".gif"):
        raise ValueError(f"{F}(): path must end in .gif, got {path!r}")
    for name, v, lo, hi in (("scale", scale, 1, 16), ("duration_ms", duration_ms, 10, 60000),
                            ("hold_ms", hold_ms, 10, 60000), ("padding", padding, 0, 64)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{F}(): {name} must be an int, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise ValueError(f"{F}(): {name} must be in {lo}..{hi}, got {v}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"{F}(): value_range must be (low, high) with high > low")
    Image = _pil()
    frames = []
    for k in range(len(ts)):
        left = make_grid(x_t[k], nrow=nrow, padding=padding, value_range=(lo, hi))
        right = make_grid(x0[k], nrow=nrow, padding=padding, value_range=(lo, hi))
        gap = np.ones(left.shape[:1] + (4 * padding + 2,) + left.shape[2:])
        pic = to_uint8(np.concatenate([left, gap, right], axis=1), (0.0, 1.0))
        pic = np.repeat(np.repeat(pic, scale, axis=0), scale, axis=1)
        label = f"t = {int(ts[k])}   left: x_t   right: x0_hat"
        strip = _label_strip(label, pic.shape[1])
        if pic.ndim == 3:
            strip = np.repeat(strip[..., None], 3, axis=2)
        frames.append(Image.fromarray(np.concatenate([strip, pic], axis=0)))
    if frames[0].mode == "RGB":       # one shared palette, so colours do not flicker
        palette = frames[-1].quantize(colors=255)
        frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [duration_ms] * (len(frames) - 1) + [hold_ms]
    with new_dirs(os.path.dirname(os.path.abspath(path))):
        atomic_write(path, lambda tmp: frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations,
            loop=0, optimize=False))
    return path


def to_numpy(images, value_range=(0, 1)) -> np.ndarray:
    """(N, C, H, W) images as diffusers' ``output_type="np"``: float32 (N, H, W, C) in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> to_numpy(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 28, 28, 1)
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"to_numpy(): images must be (N, C, H, W), got {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"to_numpy(): images must be floats, got dtype {x.dtype}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"to_numpy(): value_range must be (low, high) with high > low, "
                         f"got {value_range!r}")
    x = np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)


def to_pil(images, value_range=(0, 1)) -> list:
    """(N, C, H, W) images as diffusers' ``output_type="pil"``: a list of N PIL images
    (mode "L" for one channel, "RGB" for three), rounded as diffusers does.

    Examples
    --------
    >>> import numpy as np
    >>> to_pil(np.ones((2, 3, 8, 8), np.float32))[0].size
    (8, 8)
    """
    x = to_numpy(images, value_range)
    if x.shape[3] not in (1, 3):
        raise ValueError(f"to_pil(): images must have 1 or 3 channels, got {x.shape[3]}")
    u8 = (x * 255).round().astype(np.uint8)
    Image = _pil()
    return [Image.fromarray(a[..., 0] if a.shape[2] == 1 else a) for a in u8]


def convert_output(images, output_type, func: str = "convert_output", value_range=(0, 1)):
    """images unchanged (output_type None), or :func:`to_numpy` / :func:`to_pil` of them.

    ``func`` names the caller in error messages; ``value_range`` is the images' range,
    which must be (0, 1) for "np" and "pil" (diffusers' output range).

    Examples
    --------
    >>> import numpy as np
    >>> convert_output(np.zeros((1, 1, 4, 4), np.float32), "np").shape
    (1, 4, 4, 1)
    """
    if output_type is None:
        return images
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"{func}(): output_type must be None, 'np' or 'pil', got {output_type!r}")
    if tuple(value_range) != (0, 1):
        raise ValueError(f"{func}(): output_type={output_type!r} gives images in [0, 1] as "
                         f"diffusers does; leave value_range at (0, 1)")
    return to_numpy(images) if output_type == "np" else to_pil(images)


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
