"""NoiseSlider: slide t from 0 to T over one image (lesson 6-2-1)."""
from __future__ import annotations

import math

import numpy as np

from .. import datasets
from ..rng import randn
from ..schedule import NoiseSchedule
from ._common import (_LessonWidget, _as_image, _for_imshow, _image_view, _imshow, _need_widgets,
                      _new_figure, _pixelated_style, _png, _variance_bar)

__all__ = ["NoiseSlider"]

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
        self._strip = _image_view(w, value=self._render_preview())
        self._fig = _new_figure((3.2, 3.4))
        self._view = _image_view(w, self._fig)
        self._ax = self._fig.add_axes((0.05, 0.02, 0.9, 0.86))
        self._im = _imshow(self._ax, self.x0)
        self.slider.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([_pixelated_style(w),
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
