"""AlphaBarCurve: the alpha_bar curve, the image at t and live readouts (lesson 6-2-2)."""
from __future__ import annotations

import numpy as np

from .. import datasets
from ..rng import randn
from ..schedule import NoiseSchedule
from ._common import (_LessonWidget, _as_image, _for_imshow, _image_view, _imshow, _need_widgets,
                      _new_figure, _pixelated_style, _png, _variance_bar, regime)

__all__ = ["AlphaBarCurve"]

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

        self._fig = _new_figure((7.4, 3.0))

        self._view = _image_view(w, self._fig)
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
        self.widget = w.VBox([_pixelated_style(w),
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
