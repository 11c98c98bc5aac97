"""Interactive lesson widgets (lessons 6-2-1, 6-2-2, 6-2-4 and 6-2-6).

Four small ipywidgets apps, each built in one line and shown by putting it
last in a notebook cell:

>>> from ddpm import widgets                                   # doctest: +SKIP
>>> widgets.NoiseSlider()           # t = 0..T over the T-shirt, variance bar, preview strip
>>> widgets.AlphaBarCurve()         # alpha_bar curve, live readouts, linear/cosine toggle
>>> widgets.Playground("circle")    # 80-step forward then (oracle) reverse, step/play/pause
>>> widgets.TrajectoryPlayer()      # a REAL reverse run of the shipped model: x_t, eps_hat, x0_hat

Every widget returns an object with ``.widget`` (the ipywidgets container, for
embedding in your own layout) and ``_ipython_display_``.  Pictures are drawn
with matplotlib's object API onto an Agg canvas and sent as PNG to an
``ipywidgets.Image``, so the widgets need no interactive matplotlib backend,
can be built headless, and never touch pyplot's global state.  What is shown
is also kept as plain state (``.image``, ``.texts``, the fractions and
readouts) so code and tests can drive the controls (``.t = 500``,
``.kind = "cosine"``, ``.step()``) and check the result.

ipywidgets and matplotlib are imported lazily, when a widget is built:
``pip install 'ddpm[notebooks]'``.
"""
from __future__ import annotations

import io
import math

import numpy as np

from . import datasets
from ._checks import as_int, as_seed
from .diffusion import Diffusion
from .pretrained import load_pretrained
from .sampling import DEFAULT_STEPS, SAMPLERS, sampling_timesteps
from .rng import randn
from .schedule import NoiseSchedule

__all__ = ["NoiseSlider", "AlphaBarCurve", "Playground", "TrajectoryPlayer", "regime",
           "reverse_regime", "REGIME_THRESHOLDS_DB", "REVERSE_REGIME_THRESHOLDS_DB", "LESSON_TS"]

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
    """(plain text, HTML) of the signal/noise bar: VARIANCE fractions alpha_bar and 1 - alpha_bar."""
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


# --------------------------------------------------------------------------- NoiseSlider
class NoiseSlider(_LessonWidget):
    """Slide t from 0 to T over one image (lesson 6-2-1).

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with ONE eps drawn
    from ``seed`` for all t, so the picture changes smoothly instead of
    flickering.  Shows a bar of the VARIANCE fractions alpha_bar_t (signal)
    and 1 - alpha_bar_t (noise), the readouts, and a fixed preview strip at
    t = 0, T/4, T/2, 3T/4, T.

    Parameters
    ----------
    image : array, (H, W) or (C, H, W), float in [-1, 1], optional
        Default: the course's T-shirt, ``ddpm.datasets.tshirt()``.
    schedule : NoiseSchedule, optional
        Default ``NoiseSchedule("cosine")`` (T = 1000).
    seed : int
        Seed of the fixed eps.
    t : int
        Initial timestep.

    Attributes
    ----------
    t : int (settable)
    image : ndarray float32 (C, H, W), x_t as displayed
    eps : ndarray float32 (C, H, W), the fixed noise
    signal_fraction, noise_fraction : float, alpha_bar_t and 1 - alpha_bar_t
    preview_ts : tuple of int; preview : ndarray (5, C, H, W)
    texts : dict of str, plain text of what the readouts show

    Examples
    --------
    >>> from ddpm.widgets import NoiseSlider          # doctest: +SKIP
    >>> w = NoiseSlider(); w.t = 500; w.signal_fraction   # doctest: +SKIP
    """

    def __init__(self, image=None, schedule=None, seed=0, *, t=0):
        w = _need_widgets()
        self.schedule = NoiseSchedule("cosine") if schedule is None else schedule
        if not isinstance(self.schedule, NoiseSchedule):
            raise TypeError("NoiseSlider(): schedule must be a ddpm.NoiseSchedule")
        self.x0 = _as_image(datasets.tshirt() if image is None else image, "NoiseSlider")
        self.seed = seed
        self.eps = randn(*self.x0.shape, seed=seed)
        T = self.schedule.T
        self.preview_ts = (0, T // 4, T // 2, (3 * T) // 4, T)
        self.preview = np.stack([self.image_at(s) for s in self.preview_ts])

        self.slider = w.IntSlider(value=int(t), min=0, max=T, step=1, description="t",
                                  continuous_update=True,
                                  layout=w.Layout(width="100%", max_width="520px"))
        self._readout = w.HTML()
        self._bar = w.HTML()
        self._view = w.Image(format="png")
        self._strip = w.Image(format="png", value=self._render_preview())
        self._fig = _new_figure((3.2, 3.4))
        self._ax = self._fig.add_axes((0.05, 0.02, 0.9, 0.86))
        self._im = _imshow(self._ax, self.x0)
        self.slider.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([
            w.HTML(f"<b>Forward process at any t</b> ({self.schedule.kind} schedule, T = {T}, "
                   f"one fixed eps, seed {seed})"),
            self.slider, w.HBox([self._view, w.VBox([self._readout, self._bar])]),
            w.HTML("<i>Preview at t = 0, T/4, T/2, 3T/4, T (same eps):</i>"), self._strip])
        self._update()

    def image_at(self, t: int) -> np.ndarray:
        """x_t of this image with the fixed eps (t = 0 gives the image itself)."""
        t = int(t)
        if t == 0:
            return self.x0.copy()
        xt, _ = self.schedule.q_sample(self.x0[None], t, noise=self.eps[None])
        return xt[0]

    @property
    def t(self) -> int:
        return int(self.slider.value)

    @t.setter
    def t(self, value):
        self.slider.value = int(value)

    def _update(self):
        s, t = self.schedule, self.t
        ab = float(s.alpha_bars[t])
        self.image = self.image_at(t)
        self.signal_fraction, self.noise_fraction = ab, 1.0 - ab
        bar_text, bar_html = _variance_bar(ab)
        readout = (f"t = {t} / {s.T}: alpha_bar = {ab:.4f}, sqrt(alpha_bar) = "
                   f"{math.sqrt(ab):.4f} (signal amplitude), sqrt(1 - alpha_bar) = "
                   f"{math.sqrt(1.0 - ab):.4f} (noise std), SNR = {float(s.snr_db[t]):.2f} dB")
        self.texts = {"readout": readout, "bar": bar_text}
        self._readout.value = f"<div style='max-width:360px'>{readout}</div>"
        self._bar.value = bar_html
        self._im.set_data(_for_imshow(self.image))
        self._ax.set_title(f"x_t at t = {t}", fontsize=10)
        self._view.value = _png(self._fig)

    def _render_preview(self) -> bytes:
        fig = _new_figure((1.5 * len(self.preview_ts), 1.8))
        for i, (t, x) in enumerate(zip(self.preview_ts, self.preview)):
            ax = fig.add_subplot(1, len(self.preview_ts), i + 1)
            _imshow(ax, x, f"t = {t}\nalpha_bar = {self.schedule.alpha_bars[t]:.3g}")
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.78, wspace=0.1)
        return _png(fig)


# ------------------------------------------------------------------------- AlphaBarCurve
class AlphaBarCurve(_LessonWidget):
    """The alpha_bar curve with a marker at t, the image at t, and live readouts (6-2-2).

    Parameters
    ----------
    image : array, (H, W) or (C, H, W), float in [-1, 1], optional
        Default: the course's T-shirt.
    kind : {"linear", "cosine"}
        Initial schedule; a toggle switches between the two.
    timesteps : int
        T (default 1000).
    seed : int
        Seed of the one fixed eps used for the image at every t.
    t : int, optional
        Initial timestep (default T/2).

    The readouts are sqrt(alpha_bar_t) (signal amplitude), sqrt(1 - alpha_bar_t)
    (noise std), a bar of the VARIANCE fractions alpha_bar_t and 1 - alpha_bar_t,
    and a sentence naming the regime from the SNR (see :func:`regime`).

    Attributes
    ----------
    t : int (settable); kind : str (settable), schedule : NoiseSchedule (the current one)
    image : ndarray (C, H, W), x_t as shown
    sqrt_alpha_bar, sqrt_one_minus_alpha_bar, alpha_bar, snr_db : float
    texts : dict with "readout", "bar", "regime"
    """

    KINDS = ("linear", "cosine")

    def __init__(self, image=None, kind="linear", *, timesteps=1000, seed=0, t=None):
        w = _need_widgets()
        if kind not in self.KINDS:
            raise ValueError(f"AlphaBarCurve(): kind must be one of {self.KINDS}, got {kind!r}")
        self.schedules = {k: NoiseSchedule(k, timesteps=timesteps) for k in self.KINDS}
        self.x0 = _as_image(datasets.tshirt() if image is None else image, "AlphaBarCurve")
        self.eps = randn(*self.x0.shape, seed=seed)
        T = int(timesteps)
        self.toggle = w.ToggleButtons(options=list(self.KINDS), value=kind,
                                      description="schedule")
        self.slider = w.IntSlider(value=T // 2 if t is None else int(t), min=0, max=T,
                                  description="t", continuous_update=True,
                                  layout=w.Layout(width="100%", max_width="560px"))
        self._readout = w.HTML()
        self._bar = w.HTML()
        self._regime = w.HTML()
        self._view = w.Image(format="png")

        self._fig = _new_figure((7.4, 3.0))
        self._ax = self._fig.add_axes((0.09, 0.16, 0.5, 0.72))
        self._ax_img = self._fig.add_axes((0.66, 0.1, 0.32, 0.78))
        ts = np.arange(T + 1)
        self._curves = {}
        for k, style in zip(self.KINDS, ("-", "-")):
            (self._curves[k],) = self._ax.plot(ts, self.schedules[k].alpha_bars, style, label=k)
        self._ax.set_xlabel("timestep t")
        self._ax.set_ylabel("alpha_bar_t (signal variance fraction)")
        self._ax.set_xlim(0, T)
        self._ax.set_ylim(-0.02, 1.02)
        self._ax.grid(alpha=0.3)
        (self._marker,) = self._ax.plot([0], [1], "o", color="crimson", ms=7, zorder=5)
        self._vline = self._ax.axvline(0, color="crimson", lw=0.8, alpha=0.6)
        self._im = _imshow(self._ax_img, self.x0)

        self.toggle.observe(lambda change: self._update(), names="value")
        self.slider.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([
            w.HTML("<b>How much of the image's variance is left at step t</b>"),
            self.toggle, self.slider, self._view, self._readout, self._bar, self._regime])
        self._update()

    @property
    def t(self) -> int:
        return int(self.slider.value)

    @t.setter
    def t(self, value):
        self.slider.value = int(value)

    @property
    def kind(self) -> str:
        return self.toggle.value

    @kind.setter
    def kind(self, value):
        if value not in self.KINDS:
            raise ValueError(f"AlphaBarCurve.kind must be one of {self.KINDS}, got {value!r}")
        self.toggle.value = value

    @property
    def schedule(self) -> NoiseSchedule:
        return self.schedules[self.kind]

    def _update(self):
        s, t, kind = self.schedule, self.t, self.kind
        ab = float(s.alpha_bars[t])
        self.alpha_bar = ab
        self.sqrt_alpha_bar = float(s.sqrt_alpha_bars[t])
        self.sqrt_one_minus_alpha_bar = float(s.sqrt_one_minus_alpha_bars[t])
        self.snr_db = float(s.snr_db[t])
        if t == 0:
            self.image = self.x0.copy()
        else:
            self.image = s.q_sample(self.x0[None], t, noise=self.eps[None])[0][0]
        readout = (f"{kind}, t = {t}: sqrt(alpha_bar) = {self.sqrt_alpha_bar:.4f}, "
                   f"sqrt(1 - alpha_bar) = {self.sqrt_one_minus_alpha_bar:.4f}, "
                   f"alpha_bar = {ab:.4g}, SNR = {self.snr_db:.2f} dB")
        bar_text, bar_html = _variance_bar(ab)
        sentence = "Regime: " + regime(self.snr_db)
        self.texts = {"readout": readout, "bar": bar_text, "regime": sentence}
        self._readout.value = readout
        self._bar.value = bar_html
        self._regime.value = f"<i>{sentence}</i>"
        for k, line in self._curves.items():
            line.set_linewidth(2.2 if k == kind else 1.0)
            line.set_alpha(1.0 if k == kind else 0.35)
        self._ax.legend(loc="upper right", fontsize=8)
        self._marker.set_data([t], [ab])
        self._vline.set_xdata([t, t])
        self._ax.set_title(f"{kind}: alpha_bar_{t} = {ab:.4g}", fontsize=10)
        self._im.set_data(_for_imshow(self.image))
        self._ax_img.set_title(f"x_t at t = {t}", fontsize=10)
        self._view.value = _png(self._fig)


# ---------------------------------------------------------------------------- Playground
class _FramePlayer(_LessonWidget):
    """A widget that plays frames 0..slider.max: ``self.slider`` (IntSlider) and
    ``self.player`` (Play, linked to it) are built by the subclass."""

    @property
    def frame(self) -> int:
        return int(self.slider.value)

    @frame.setter
    def frame(self, k):
        self.slider.value = int(min(max(int(k), self.slider.min), self.slider.max))

    def step(self, n: int = 1):
        """Advance n frames; stops at the last."""
        self.frame = self.frame + int(n)
        return self

    def back(self, n: int = 1):
        """Go back n frames."""
        self.frame = self.frame - int(n)
        return self

    def reset(self):
        """Back to the first frame and pause."""
        self.pause()
        self.frame = 0
        return self

    def play(self):
        """Start the animation (runs in the browser; no effect headless)."""
        self.player.playing = True
        return self

    def pause(self):
        """Pause the animation where it is."""
        self.player.playing = False
        return self


class Playground(_FramePlayer):
    """A small diffusion you can step through: forward 0 -> T, then reverse T -> 0 (6-2-6).

    The pattern (``datasets.checkerboard`` or ``datasets.circle``) is noised
    by the forward chain, one step at a time
    ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t``, and then brought
    back by the reverse chain ``x_{t-1} = mean + sqrt(beta_tilde_t) z_t``,
    where (mean, beta_tilde_t) is the posterior q(x_{t-1} | x_t, x0_hat)
    (``schedule.q_posterior``).

    By default the reverse is an ORACLE: x0_hat is the true pattern, which a
    real sampler never knows.  Pass ``denoiser(x_t, t) -> eps_hat`` (x_t of
    shape (1, C, H, W) float32, 1-based t; returns the predicted noise, shape
    of x_t) to use a model instead: then
    ``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)``,
    clipped to [-1, 1], as in DDPM sampling.

    Schedule: by default ``NoiseSchedule("cosine", timesteps=steps)``.  With
    80 steps it ends below alpha_bar_80 = 1e-6 (pure noise; the last beta is
    clipped at 0.999), whereas the standard linear betas (1e-4 .. 0.02) over
    only 80 steps would stop near alpha_bar = 0.45, far from noise.  Pass ``schedule=`` for another.

    Parameters
    ----------
    pattern : {"checkerboard", "circle"}
    steps : int
        T (default 80).
    schedule : NoiseSchedule, optional
    seed : int
        Seeds the forward eps_t and the reverse z_t (one stream per step).
    denoiser : callable, optional
    interval_ms : int
        Time per frame when playing.

    Frames are numbered k = 0 .. 2T: k <= T is forward step t = k, k > T is
    reverse step t = 2T - k.  Controls: play / pause (the Play widget),
    ``step()``, ``back()``, ``reset()``, ``goto(t, phase)``, ``pause()``.

    Attributes
    ----------
    frames : ndarray float32 (2T + 1, C, H, W)
    frame : int (settable), phase : "forward" | "reverse", t : int
    image : ndarray (C, H, W), the frame shown
    rms : ndarray (2T + 1,), RMS difference of each frame from the pattern
    texts : dict with "status"
    """

    PATTERNS = {"checkerboard": datasets.checkerboard, "circle": datasets.circle}

    def __init__(self, pattern="checkerboard", steps=80, *, schedule=None, seed=0,
                 denoiser=None, interval_ms=120):
        w = _need_widgets()
        if pattern not in self.PATTERNS:
            raise ValueError(f"Playground(): pattern must be one of {tuple(self.PATTERNS)}, "
                             f"got {pattern!r}")
        if schedule is None:
            schedule = NoiseSchedule("cosine", timesteps=steps)
        elif not isinstance(schedule, NoiseSchedule):
            raise TypeError("Playground(): schedule must be a ddpm.NoiseSchedule")
        elif schedule.T != steps:
            raise ValueError(f"Playground(): steps={steps} but schedule.T = {schedule.T}")
        if denoiser is not None and not callable(denoiser):
            raise TypeError("Playground(): denoiser must be callable (x_t, t) -> eps_hat")
        self.schedule = schedule
        self.T = schedule.T
        self.seed = int(seed)
        self.denoiser = denoiser
        self.oracle = denoiser is None

        self.dropdown = w.Dropdown(options=list(self.PATTERNS), value=pattern,
                                   description="pattern")
        self.player = w.Play(value=0, min=0, max=2 * self.T, step=1, interval=interval_ms,
                             description="play")
        self.slider = w.IntSlider(value=0, min=0, max=2 * self.T, description="frame",
                                  layout=w.Layout(width="100%", max_width="520px"))
        w.link((self.player, "value"), (self.slider, "value"))
        b_back = w.Button(description="< step", layout=w.Layout(width="80px"))
        b_step = w.Button(description="step >", layout=w.Layout(width="80px"))
        b_reset = w.Button(description="reset", layout=w.Layout(width="80px"))
        b_back.on_click(lambda _: self.back())
        b_step.on_click(lambda _: self.step())
        b_reset.on_click(lambda _: self.reset())
        self._status = w.HTML()
        self._view = w.Image(format="png")
        reverse_kind = ("<b>oracle reverse</b>: uses the true x_0 in q(x_{t-1} | x_t, x_0); "
                        "a trained model replaces it later" if self.oracle else
                        "reverse with the given denoiser (eps prediction -> x0_hat -> posterior)")

        self._fig = _new_figure((7.0, 3.0))
        self._ax = self._fig.add_axes((0.02, 0.05, 0.34, 0.8))
        self._ax_rms = self._fig.add_axes((0.47, 0.17, 0.5, 0.68))
        self._build(pattern)
        self._im = _imshow(self._ax, self.frames[0])
        k = np.arange(2 * self.T + 1)
        (self._rms_line,) = self._ax_rms.plot(k, self.rms, color="0.3", lw=1.2)
        (self._rms_marker,) = self._ax_rms.plot([0], [0], "o", color="crimson", ms=6)
        self._ax_rms.axvline(self.T, color="0.6", ls="--", lw=0.8)
        self._ax_rms.set_xlabel(f"frame k (forward t = k, then reverse t = {2 * self.T} - k)")
        self._ax_rms.set_ylabel("RMS(x - pattern)")
        self._ax_rms.set_title("distance from the pattern", fontsize=10)
        self._ax_rms.grid(alpha=0.3)

        self.slider.observe(lambda change: self._update(), names="value")
        self.dropdown.observe(self._on_pattern, names="value")
        self.widget = w.VBox([
            w.HTML(f"<b>Diffusion playground</b>: {self.T} forward steps then {self.T} reverse "
                   f"steps; {reverse_kind}."),
            w.HBox([self.dropdown, self.player, b_back, b_step, b_reset]), self.slider,
            self._view, self._status])
        self._update()

    # -------------------------------------------------------------- simulation
    def _predict_x0(self, xt, t):
        if self.denoiser is None:
            return self.x0[None]
        eps_hat = np.asarray(self.denoiser(xt, t), dtype=np.float32)
        if eps_hat.shape != xt.shape:
            raise ValueError(f"Playground: denoiser returned shape {eps_hat.shape}, "
                             f"expected {xt.shape}")
        s = self.schedule
        x0_hat = (xt - s.sqrt_one_minus_alpha_bars[t] * eps_hat) / s.sqrt_alpha_bars[t]
        return np.clip(x0_hat, -1.0, 1.0).astype(np.float32)

    def _build(self, pattern):
        s, T = self.schedule, self.T
        self.pattern = pattern
        self.x0 = self.PATTERNS[pattern]()
        shape = self.x0.shape
        frames = np.empty((2 * T + 1,) + shape, dtype=np.float32)
        x = self.x0[None].astype(np.float32)
        frames[0] = x[0]
        for t in range(1, T + 1):  # forward chain, one eps_t per step (stream t)
            eps = randn(1, *shape, seed=self.seed, stream=t)
            x = (np.sqrt(s.alphas[t]) * x + np.sqrt(s.betas[t]) * eps).astype(np.float32)
            frames[t] = x[0]
        for t in range(T, 0, -1):  # reverse chain from the forward x_T
            mean, var = s.q_posterior(self._predict_x0(x, t), x, t)
            z = randn(1, *shape, seed=self.seed, stream=T + t)
            x = (mean + np.sqrt(var) * z).astype(np.float32)
            frames[2 * T - t + 1] = x[0]
        self.frames = frames
        diff = (frames - self.x0[None]).reshape(len(frames), -1)
        self.rms = np.sqrt(np.mean(diff.astype(np.float64) ** 2, axis=1))

    def _on_pattern(self, change):
        self._build(change["new"])
        self._rms_line.set_ydata(self.rms)
        self._ax_rms.relim()
        self._ax_rms.autoscale_view()
        self._update()

    # ---------------------------------------------------------------- controls
    @property
    def phase(self) -> str:
        return "forward" if self.frame <= self.T else "reverse"

    @property
    def t(self) -> int:
        k = self.frame
        return k if k <= self.T else 2 * self.T - k

    def goto(self, t: int, phase: str = "forward"):
        """Show x_t of the forward (phase="forward") or reverse chain."""
        t = int(t)
        if not 0 <= t <= self.T:
            raise ValueError(f"Playground.goto(): t must be in 0..{self.T}, got {t}")
        if phase not in ("forward", "reverse"):
            raise ValueError("Playground.goto(): phase must be 'forward' or 'reverse'")
        self.frame = t if phase == "forward" else 2 * self.T - t
        return self

    def frame_of(self, t: int, phase: str = "forward") -> np.ndarray:
        """The stored frame x_t of the forward or reverse chain, (C, H, W)."""
        k = int(t) if phase == "forward" else 2 * self.T - int(t)
        return self.frames[k]

    def _update(self):
        k, t, phase = self.frame, self.t, self.phase
        self.image = self.frames[k]
        ab = float(self.schedule.alpha_bars[t])
        who = " (oracle: knows x_0)" if (phase == "reverse" and self.oracle) else ""
        status = (f"{phase} t = {t} / {self.T}{who}: alpha_bar_t = {ab:.4g}, "
                  f"RMS from the pattern = {self.rms[k]:.3f}")
        if phase == "forward" and t == self.T:
            status += " -- end of the forward process; next: reverse"
        if phase == "reverse" and t == 0:
            status += " -- back at t = 0"
        self.texts = {"status": status}
        self._status.value = status
        self._im.set_data(_for_imshow(self.image))
        self._ax.set_title(f"{self.pattern}: {phase} t = {t}{who}", fontsize=9)
        self._rms_marker.set_data([k], [self.rms[k]])
        self._view.value = _png(self._fig)


# ----------------------------------------------------------------------- TrajectoryPlayer
class TrajectoryPlayer(_FramePlayer):
    """Play back a REAL reverse run of a trained model, frame by frame (lesson 6-2-4).

    The sampler runs once, when the widget is built, with ``return_trajectory``
    at the captured timesteps (:func:`ddpm.sampling.sample_diffusion`); the
    slider and the play button then move over those frames.  Each frame shows,
    for every image, x_t (the sampler's state), eps_hat (the noise the model
    sees in x_t) and x0_hat (its guess of the final image from x_t, clipped as
    the sampler used it), with t, alpha_bar_t, the SNR and a sentence naming the
    regime (:func:`reverse_regime`: below -10 dB "hallucinating structure",
    -10..+10 dB "a shape is emerging", above +10 dB "refining details").
    Nothing here is the forward formula: every frame is the state of the run.

    Parameters
    ----------
    diffusion : ddpm.Diffusion, optional
        Default: the shipped model, ``ddpm.load_pretrained("fashion-mnist")``.
    sampler : {"ddpm", "ddim", "dpm++"}
    steps : int, optional
        Denoiser calls (default: T for "ddpm", 50 for "ddim", 20 for "dpm++").
    n : int
        Images generated side by side (1..16).
    seed : int
        Seed of x_T and of every step's noise: the same seed gives the same run
        as ``diffusion.sample(n, steps, sampler, seed=seed)``.
    capture : list of int, optional
        Timesteps to keep (each must be visited by the run; 0 is the end).
        Default: every k-th visited timestep with k = ceil(steps / 100) (every
        10th t of a 1000-step run), the lesson's 1000, 900, 800, 600, 400, 200,
        100, 50 where visited, and 0.
    interval_ms : int
        Time per frame when playing.
    progress : bool
        Progress bar while the sampler runs.

    Attributes
    ----------
    trajectory : ddpm.sampling.Trajectory, the captured frames (t decreasing)
    images : ndarray float32 (n, C, H, W), the final samples in [-1, 1]
    ts : tuple of int, the captured timesteps
    frame : int (settable), index into ``ts``; t : int (settable to a captured t)
    x_t, eps_hat, x0_hat : ndarray float32 (n, C, H, W), the frame as shown
    alpha_bar, snr_db : float; texts : dict with "readout" and "regime"

    Controls: the Play widget (linked to the slider), ``step()``, ``back()``,
    ``goto(t)``, ``reset()``, ``play()``, ``pause()``.

    Examples
    --------
    >>> import ddpm                                            # doctest: +SKIP
    >>> ddpm.widgets.TrajectoryPlayer()                        # doctest: +SKIP
    >>> p = ddpm.widgets.TrajectoryPlayer(sampler="ddim", steps=50, n=4)  # doctest: +SKIP
    >>> p.t = 400; p.x0_hat.shape                              # doctest: +SKIP
    (4, 1, 28, 28)
    """

    MAX_N = 16

    def __init__(self, diffusion=None, *, sampler="ddpm", steps=None, n=1, seed=0, capture=None,
                 interval_ms=150, progress=True):
        F = "TrajectoryPlayer"
        if diffusion is None:
            diffusion = load_pretrained("fashion-mnist")
        if not isinstance(diffusion, Diffusion):
            raise TypeError(f"{F}(): diffusion must be a ddpm.Diffusion (or None for the shipped "
                            f"model), got {type(diffusion).__name__}")
        if not isinstance(sampler, str) or sampler not in SAMPLERS:
            raise ValueError(f"{F}(): sampler must be one of {SAMPLERS}, got {sampler!r}")
        T = diffusion.T
        if steps is None:
            steps = min(DEFAULT_STEPS.get(sampler, T), T)
        steps = as_int(steps, "steps", F, lo=1, hi=T)
        n = as_int(n, "n", F, lo=1, hi=self.MAX_N)
        seed = as_seed(seed, F)         # None: a fresh seed, kept in .seed
        interval_ms = as_int(interval_ms, "interval_ms", F, lo=1)
        visited, _ = sampling_timesteps(T, steps, sampler)
        visited = [int(v) for v in visited]
        if capture is None:
            k = -(-len(visited) // 100)
            want = set(visited[::k]) | ({t for t in LESSON_TS if t in set(visited)}) | {0}
        else:
            if isinstance(capture, (str, bytes)) or not hasattr(capture, "__iter__"):
                raise TypeError(f"{F}(): capture must be a list of timesteps (ints)")
            capture = list(capture)
            if not capture:
                raise ValueError(f"{F}(): capture is empty")
            if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                   for v in capture):
                raise TypeError(f"{F}(): capture must hold ints (timesteps), got {capture!r}")
            bad = [int(v) for v in capture if int(v) != 0 and int(v) not in set(visited)]
            if bad:
                raise ValueError(f"{F}(): capture asks for t = {bad}, which this {steps}-step "
                                 f"{sampler} run does not visit (it visits "
                                 f"{visited[:5]}{' ...' if len(visited) > 5 else ''} and 0)")
            if len(set(int(v) for v in capture)) != len(capture):
                raise ValueError(f"{F}(): capture has repeated timesteps")
            want = {int(v) for v in capture}
        want = sorted(want, reverse=True)
        w = _need_widgets()
        _new_figure((1, 1))           # matplotlib present? (fail before the long run)

        self.diffusion = diffusion
        self.sampler, self.steps, self.n, self.seed = sampler, steps, n, seed
        self.schedule = diffusion.schedule
        self.images, self.trajectory = diffusion.sample(
            n, steps=steps, sampler=sampler, seed=seed, return_trajectory=want,
            value_range=(-1, 1), progress=progress)
        self.ts = tuple(int(t) for t in self.trajectory.t)
        self._index = {t: i for i, t in enumerate(self.ts)}

        M = len(self.ts)
        self.player = w.Play(value=0, min=0, max=M - 1, step=1, interval=interval_ms,
                             description="play")
        self.slider = w.IntSlider(value=0, min=0, max=M - 1, description="frame",
                                  readout=False, layout=w.Layout(width="100%", max_width="520px"))
        w.link((self.player, "value"), (self.slider, "value"))
        b_back = w.Button(description="< step", layout=w.Layout(width="80px"))
        b_step = w.Button(description="step >", layout=w.Layout(width="80px"))
        b_reset = w.Button(description="reset", layout=w.Layout(width="80px"))
        b_back.on_click(lambda _: self.back())
        b_step.on_click(lambda _: self.step())
        b_reset.on_click(lambda _: self.reset())
        self._readout = w.HTML()
        self._regime = w.HTML()
        self._view = w.Image(format="png")

        rows = n
        self._fig = _new_figure((5.4, 1.75 * rows + 0.55))
        top = 1.0 - 0.5 / (1.75 * rows + 0.55)
        self._fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.08,
                                  hspace=0.12)
        self._axes = [[self._fig.add_subplot(rows, 3, 3 * r + c + 1) for c in range(3)]
                      for r in range(rows)]
        self._ims = []
        for r in range(rows):
            ims = []
            for c, (lo, hi) in enumerate(((-1.0, 1.0), (-3.0, 3.0), (-1.0, 1.0))):
                ax = self._axes[r][c]
                ims.append(ax.imshow(np.zeros(self.images.shape[2:]), cmap="gray", vmin=lo,
                                     vmax=hi, interpolation="nearest"))
                ax.set_xticks([])
                ax.set_yticks([])
            self._ims.append(ims)
        for c, label in enumerate(("x_t (state)", "eps_hat (-3..3)", "x0_hat (guess)")):
            self._axes[0][c].set_title(label, fontsize=9)

        self.slider.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([
            w.HTML(f"<b>A real reverse run</b>: {sampler}, {steps} denoiser calls, {n} image(s), "
                   f"seed {seed}, {self.schedule.kind} schedule (T = {T}); {M} frames captured."),
            w.HBox([self.player, b_back, b_step, b_reset]), self.slider, self._readout,
            self._view, self._regime])
        self._update()

    # ---------------------------------------------------------------- controls
    @property
    def t(self) -> int:
        return self.ts[self.frame]

    @t.setter
    def t(self, value):
        self.goto(value)

    def goto(self, t: int):
        """Show the frame at timestep t (one of ``ts``)."""
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"TrajectoryPlayer.goto(): t must be an int, got {t!r}")
        if int(t) not in self._index:
            raise ValueError(f"TrajectoryPlayer.goto(): t = {t} was not captured; captured: "
                             f"{self.ts[:4]} ... {self.ts[-3:]}")
        self.frame = self._index[int(t)]
        return self

    def frame_of(self, t: int):
        """(x_t, eps_hat, x0_hat) of the captured timestep t, each (n, C, H, W)."""
        i = self._index.get(int(t))
        if i is None:
            raise ValueError(f"TrajectoryPlayer.frame_of(): t = {t} was not captured")
        tr = self.trajectory
        return tr.x_t[i], tr.eps_hat[i], tr.x0_hat[i]

    def _update(self):
        i, t = self.frame, self.t
        tr, s = self.trajectory, self.schedule
        self.x_t, self.eps_hat, self.x0_hat = tr.x_t[i], tr.eps_hat[i], tr.x0_hat[i]
        self.alpha_bar = float(s.alpha_bars[t])
        self.snr_db = float(s.snr_db[t])
        snr = "inf" if t == 0 else f"{self.snr_db:.1f} dB"
        readout = (f"frame {i + 1} / {len(self.ts)}: t = {t} / {s.T}, alpha_bar_t = "
                   f"{self.alpha_bar:.4g} (signal variance fraction), SNR = {snr}; "
                   f"x_t std = {float(self.x_t.std()):.3f}")
        sentence = "Regime: " + reverse_regime(self.snr_db)
        self.texts = {"readout": readout, "regime": sentence}
        self._readout.value = readout
        self._regime.value = f"<i>{sentence}</i>"
        for r in range(self.n):
            for c, arr in enumerate((self.x_t, self.eps_hat, self.x0_hat)):
                self._ims[r][c].set_data(arr[r, 0] if arr.shape[1] == 1 else
                                         _for_imshow(arr[r]))
        self._fig.suptitle(f"{self.sampler} reverse run at t = {t} (alpha_bar = "
                           f"{self.alpha_bar:.3g})", fontsize=10)
        self._view.value = _png(self._fig)
