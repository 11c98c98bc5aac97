"""What the lesson widgets share: lazy imports of ipywidgets and matplotlib, figures
drawn off-screen to PNG, images shown at their natural size, the regime sentences,
and the base classes (display plumbing; a frame player with step/back/play/pause).
"""
from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["regime", "reverse_regime", "REGIME_THRESHOLDS_DB", "REVERSE_REGIME_THRESHOLDS_DB",
           "LESSON_TS"]

_INSTALL = "pip install 'ddpm[notebooks]'"

#: SNR thresholds (dB) of the regime sentence: above +10 dB the signal's variance is more
#: than 10x the noise's ("mostly signal"); between -10 and +10 dB they are within a factor
#: 10 of each other ("balanced"); between -30 and -10 dB the noise dominates but coarse
#: shapes survive ("mostly noise"); below -30 dB less than 0.1 % of the variance is signal
#: ("essentially pure noise").
REGIME_THRESHOLDS_DB = (10.0, -10.0, -30.0)

#: SNR thresholds (dB) of the REVERSE process's regime sentence (TrajectoryPlayer), the
#: first two of REGIME_THRESHOLDS_DB: below -10 dB (noise variance more than 10x the
#: signal's) the sampler is "hallucinating structure"; from -10 dB to +10 dB "a shape is
#: emerging"; above +10 dB it is "refining details".  Under the linear schedule (T = 1000)
#: that is t > 486, 94 <= t <= 486 and t < 94.
REVERSE_REGIME_THRESHOLDS_DB = (10.0, -10.0)

#: The timesteps of lesson 6-2-4's denoising trajectory.
LESSON_TS = (1000, 900, 800, 600, 400, 200, 100, 50, 0)


def _need_widgets():
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"ddpm.widgets needs ipywidgets: {_INSTALL}") from exc
    return ipywidgets


def _new_figure(figsize, dpi=80):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"ddpm.widgets needs matplotlib: {_INSTALL}") from exc
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _as_image(image, func: str) -> np.ndarray:
    """One image as float32 (C, H, W), C in (1, 3); accepts (H, W), (C, H, W), (1, C, H, W)."""
    x = np.asarray(image)
    if x.dtype.kind not in "f":
        raise TypeError(f"{func}(): image must be a float array in [-1, 1], got dtype {x.dtype}")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{func}(): image must be (H, W), (C, H, W) or (1, C, H, W) with "
                         f"C = 1 or 3, got shape {np.shape(image)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _for_imshow(x: np.ndarray) -> np.ndarray:
    """(C, H, W) in data units [-1, 1] to what imshow takes (grey 2-D, or RGB in [0, 1])."""
    if x.shape[0] == 1:
        return x[0]
    return np.clip((x.transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def _imshow(ax, x, title=None):
    im = ax.imshow(_for_imshow(x), cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return im


def regime(snr_db: float) -> str:
    """A sentence naming the signal/noise regime at a given SNR (dB).

    Thresholds are :data:`REGIME_THRESHOLDS_DB` (+10, -10, -30 dB), i.e.
    signal variance / noise variance above 10, between 0.1 and 10, between
    0.001 and 0.1, below 0.001.
    """
    hi, mid, lo = REGIME_THRESHOLDS_DB
    if snr_db == math.inf:
        return "clean image (t = 0): all of the variance is signal."
    if snr_db > hi:
        return (f"mostly signal (SNR > {hi:+.0f} dB): the signal's variance is more than 10x "
                f"the noise's; the image is plainly visible.")
    if snr_db >= mid:
        return (f"balanced ({mid:+.0f} dB <= SNR <= {hi:+.0f} dB): signal and noise variances "
                f"are within a factor 10 of each other.")
    if snr_db >= lo:
        return (f"mostly noise ({lo:+.0f} dB <= SNR < {mid:+.0f} dB): the noise variance is "
                f"10x to 1000x the signal's; only coarse shapes survive.")
    return (f"essentially pure noise (SNR < {lo:+.0f} dB): less than 0.1 % of the variance is "
            f"signal.")


def reverse_regime(snr_db: float) -> str:
    """A sentence naming what the reverse process is doing at a given SNR (dB).

    Thresholds are :data:`REVERSE_REGIME_THRESHOLDS_DB`: below -10 dB
    "hallucinating structure", -10 dB to +10 dB "a shape is emerging", above
    +10 dB "refining details"; infinite SNR (t = 0) is the finished sample.
    """
    hi, lo = REVERSE_REGIME_THRESHOLDS_DB
    if snr_db == math.inf:
        return "done (t = 0): x_0 is the sample; the last step added no noise."
    if snr_db > hi:
        return (f"refining details (SNR > {hi:+.0f} dB): the shape is settled; the steps left "
                f"sharpen edges and texture.")
    if snr_db >= lo:
        return (f"a shape is emerging ({lo:+.0f} dB <= SNR <= {hi:+.0f} dB): signal and noise are "
                f"within a factor 10; x0_hat commits to one garment and its outline.")
    return (f"hallucinating structure (SNR < {lo:+.0f} dB): x_t is almost all noise; x0_hat is a "
            f"blurry guess that the model invents and keeps revising.")


def _variance_bar(alpha_bar: float):
    """(plain text, HTML) of the signal/noise bar: VARIANCE fractions alpha_bar, 1 - alpha_bar."""
    a = float(alpha_bar)
    text = (f"Variance fractions (not amplitudes): signal alpha_bar = {a:.4f}, "
            f"noise 1 - alpha_bar = {1.0 - a:.4f}")
    pct = 100.0 * a
    html = (f"<div style='font-size:90%'>{text}</div>"
            f"<div style='display:flex;width:100%;max-width:460px;height:16px;"
            f"border:1px solid #555'>"
            f"<div title='signal variance alpha_bar' style='width:{pct:.3f}%;"
            f"background:#1f77b4'></div>"
            f"<div title='noise variance 1 - alpha_bar' style='width:{100.0 - pct:.3f}%;"
            f"background:#c7c7c7'></div></div>"
            f"<div style='font-size:80%;color:#555'>blue: signal variance, grey: noise variance; "
            f"the amplitudes are their square roots, sqrt(alpha_bar) and sqrt(1 - alpha_bar)</div>")
    return text, html


class _LessonWidget:
    """Shared display plumbing: ``.widget`` and ``_ipython_display_``."""

    widget = None
    _fig = None

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)

    @property
    def png(self) -> bytes:
        """The main picture as it is shown now (PNG bytes), for static output."""
        return _png(self._fig)

    @property
    def figure(self):
        """The matplotlib Figure behind the main picture (draws inline when displayed)."""
        return self._fig


def _image_view(w, fig=None, value: bytes | None = None):
    """An ``ipywidgets.Image`` for ``fig``'s PNG, shown at its natural pixel size.

    Without a size, a flex column (VBox) stretches an image to the output's
    width and scales it (blurry: a 432 px PNG shown ~970 px wide in
    JupyterLab); so the width and height are fixed in CSS pixels, the image does
    not grow or shrink with the box, and any scaling the browser still does is
    nearest-neighbour (``image-rendering: pixelated``, via the class
    ``ddpm-pixelated`` styled once per output by :func:`_pixelated_style`).
    """
    if fig is not None:
        width, height = fig.canvas.get_width_height()
    else:                       # a PNG's IHDR: width and height, big-endian, at bytes 16..24
        width, height = int.from_bytes(value[16:20], "big"), int.from_bytes(value[20:24], "big")
    img = w.Image(format="png", value=value if value is not None else b"",
                  width=width, height=height,
                  layout=w.Layout(width=f"{width}px", height=f"{height}px",
                                  min_width=f"{width}px", flex="0 0 auto",
                                  align_self="flex-start", object_fit="contain"))
    img.add_class("ddpm-pixelated")
    return img


def _pixelated_style(w):
    """An HTML widget holding the CSS for ``ddpm-pixelated`` images (put it in the box)."""
    return w.HTML("<style>.ddpm-pixelated { image-rendering: pixelated; "
                  "max-width: none !important; }</style>",
                  layout=w.Layout(height="0px", margin="0px"))




# ------------------------------------------------------------------- frame players
class _FramePlayer(_LessonWidget):
    """A widget that plays frames 0..slider.max: ``self.slider`` (IntSlider) and
    ``self.player`` (Play, linked to it) come from :meth:`_build_controls`."""

    def _build_controls(self, w, last: int, interval_ms: int, readout: bool = True) -> list:
        """Make ``self.player`` and ``self.slider`` over frames 0..last, linked, and
        return the "< step", "step >" and "reset" buttons wired to back/step/reset."""
        self.player = w.Play(value=0, min=0, max=last, step=1, interval=interval_ms,
                             description="play")
        self.slider = w.IntSlider(value=0, min=0, max=last, description="frame",
                                  readout=readout, layout=w.Layout(width="100%", max_width="520px"))
        w.link((self.player, "value"), (self.slider, "value"))
        buttons = []
        for label, action in (("< step", self.back), ("step >", self.step), ("reset", self.reset)):
            b = w.Button(description=label, layout=w.Layout(width="80px"))
            b.on_click(lambda _, action=action: action())
            buttons.append(b)
        return buttons

    @property
    def frame(self) -> int:
        return int(self.slider.value)

    @frame.setter
    def frame(self, k):
        self.slider.value = int(min(max(int(k), self.slider.min), self.slider.max))

    # The controls return None, not self: a cell ending in ``player.reset()`` would
    # otherwise display the widget a second time, and ipywidgets' Play pauses itself when
    # two views of it exist (each view's "playing" handler runs; the second one sees the
    # first one's change and calls pause): Play then stops after one frame.
    def step(self, n: int = 1) -> None:
        """Advance n frames; stops at the last."""
        self.frame = self.frame + int(n)

    def back(self, n: int = 1) -> None:
        """Go back n frames."""
        self.frame = self.frame - int(n)

    def reset(self) -> None:
        """Back to the first frame and pause."""
        self.pause()
        self.frame = 0

    def play(self) -> None:
        """Start the animation (runs in the browser; no effect headless)."""
        self.player.playing = True

    def pause(self) -> None:
        """Pause the animation where it is."""
        self.player.playing = False
