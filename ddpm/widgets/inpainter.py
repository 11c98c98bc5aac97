"""Inpainter: cover part of a real image and let the model fill it in (RePaint), or
noise the whole image part of the way and denoise it again (img2img / SDEdit)."""
from __future__ import annotations

import time

import numpy as np

from .. import datasets
from .._checks import as_int, as_seed
from ..diffusion import Diffusion
from ..pretrained import load_pretrained
from ._common import (_LessonWidget, _as_image, _image_view, _imshow, _need_widgets, _new_figure,
                      _pixelated_style, _png)

__all__ = ["Inpainter"]


def _test_images():
    """Fashion-MNIST test images and labels, or the course's T-shirt when the data is absent."""
    try:
        x, y = datasets.fashion_mnist("test", download=False)
        return x, y
    except (OSError, ValueError):
        return datasets.tshirt()[None, None], np.zeros(1, np.int64)


class Inpainter(_LessonWidget):
    """Cover a rectangle of a real image and let a diffusion model complete it.

    "The reverse process is not trying to get back the exact original": each
    completion is *a* realistic image consistent with what was left, and
    different seeds give different ones.  Two tools, one loop in C:

    * **inpaint** (RePaint, :meth:`ddpm.Diffusion.inpaint`): the pixels outside
      the rectangle are kept (mask 1), the rectangle (mask 0) is generated,
      with RePaint's jumps back up every ``jump_length`` steps;
    * **img2img** (SDEdit, :meth:`ddpm.Diffusion.img2img`): the whole image is
      noised to t = strength * T and denoised again; the rectangle is ignored.

    Parameters
    ----------
    image : array (H, W), (C, H, W) or (1, C, H, W) in [-1, 1], optional
        The image to edit.  Default: a Fashion-MNIST test image chosen with the
        ``index`` slider (the course's T-shirt when the data is not installed).
    diffusion : ddpm.Diffusion, optional
        Default: the shipped model (:func:`ddpm.load_pretrained`).
    n : int
        Completions per run (1..8), each from its own noise.
    seed, steps, jump_length, jump_n_sample, strength : the controls' initial values.

    Attributes
    ----------
    mode : "inpaint" or "img2img" (settable), box : (top, left, height, width)
    (settable), mask : ndarray (H, W), 1 kept, 0 generated; original, masked :
    (C, H, W); results : ndarray (n, C, H, W) in [-1, 1] after :meth:`run`;
    seconds : float, the last run's time; texts : dict of the readouts.

    Examples
    --------
    >>> from ddpm.widgets import Inpainter             # doctest: +SKIP
    >>> w = Inpainter(); w.box = (8, 6, 12, 16); w.run()   # doctest: +SKIP
    """

    MAX_N = 8

    def __init__(self, image=None, diffusion=None, *, n=4, seed=0, steps=50, jump_length=5,
                 jump_n_sample=3, strength=0.6, index=0):
        F = "Inpainter"
        w = _need_widgets()
        if diffusion is None:
            diffusion = load_pretrained("fashion-mnist")
        if not isinstance(diffusion, Diffusion):
            raise TypeError(f"{F}(): diffusion must be a ddpm.Diffusion, got "
                            f"{type(diffusion).__name__}")
        self.diffusion = diffusion
        self.n = as_int(n, "n", F, lo=1, hi=self.MAX_N)
        C, S = diffusion.image_shape[0], diffusion.image_shape[1]
        self._pool = None
        if image is None:
            self._pool, self._labels = _test_images()
            if self._pool.shape[1:] != diffusion.image_shape:
                raise ValueError(f"{F}(): the default images do not fit this model "
                                 f"{diffusion.image_shape}; pass image=")
            index = as_int(index, "index", F, lo=0, hi=len(self._pool) - 1)
            x = self._pool[index]
        else:
            x = _as_image(image, F)
            if x.shape != diffusion.image_shape:
                raise ValueError(f"{F}(): image must have shape {diffusion.image_shape} for this "
                                 f"model, got {x.shape}")
            if x.min() < -1 or x.max() > 1:
                raise ValueError(f"{F}(): image must lie in [-1, 1]")
        self.original = np.ascontiguousarray(x, dtype=np.float32)
        self.results = None
        self.seconds = None
        self.texts = {}
        S4 = max(1, S // 4)

        def slider(desc, value, lo, hi, step=1):
            return w.IntSlider(value=value, min=lo, max=hi, step=step, description=desc,
                               continuous_update=False, style={"description_width": "90px"})

        self._w_index = slider("test image", index if image is None else 0, 0,
                               len(self._pool) - 1 if self._pool is not None else 0)
        self._w_index.disabled = self._pool is None
        self._w_top = slider("top", S4, 0, S - 1)
        self._w_left = slider("left", S4, 0, S - 1)
        self._w_height = slider("height", S // 2, 1, S)
        self._w_width = slider("width", S // 2, 1, S)
        self._w_mode = w.ToggleButtons(options=["inpaint", "img2img"], value="inpaint",
                                       description="tool")
        self._w_steps = slider("steps", as_int(steps, "steps", F, lo=1, hi=diffusion.T), 1,
                               min(diffusion.T, 250))
        self._w_jl = slider("jump length", as_int(jump_length, "jump_length", F, lo=1, hi=50),
                            1, 50)
        self._w_jn = slider("jumps", as_int(jump_n_sample, "jump_n_sample", F, lo=1, hi=20),
                            1, 20)
        self._w_strength = w.FloatSlider(value=float(strength), min=0.0, max=1.0, step=0.05,
                                         description="strength", continuous_update=False,
                                         style={"description_width": "90px"})
        self._w_seed = w.IntText(value=as_seed(seed, F), description="seed",
                                 style={"description_width": "90px"})
        self._w_run = w.Button(description="Run", button_style="primary")
        self._w_status = w.HTML()
        self._fig = _new_figure((1.6 * (self.n + 2), 2.1))
        self._img = _image_view(w, self._fig)
        for s in (self._w_index, self._w_top, self._w_left, self._w_height, self._w_width):
            s.observe(lambda change: self._redraw_input(), names="value")
        self._w_mode.observe(lambda change: self._redraw_input(), names="value")
        self._w_run.on_click(lambda b: self.run())
        mask_box = w.VBox([w.HTML("<b>rectangle to generate</b>"), self._w_top, self._w_left,
                           self._w_height, self._w_width])
        run_box = w.VBox([self._w_mode, self._w_steps, self._w_jl, self._w_jn, self._w_strength,
                          self._w_seed, w.HBox([self._w_run, self._w_status])])
        self.widget = w.VBox([_pixelated_style(w), self._w_index, w.HBox([mask_box, run_box]),
                              self._img])
        self._redraw_input()

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> str:
        return self._w_mode.value

    @mode.setter
    def mode(self, value):
        if value not in ("inpaint", "img2img"):
            raise ValueError(f"Inpainter.mode must be 'inpaint' or 'img2img', got {value!r}")
        self._w_mode.value = value

    @property
    def box(self):
        return (self._w_top.value, self._w_left.value, self._w_height.value, self._w_width.value)

    @box.setter
    def box(self, value):
        top, left, height, width = (int(v) for v in value)
        S = self.diffusion.image_shape[1]
        if not (0 <= top < S and 0 <= left < S and height >= 1 and width >= 1):
            raise ValueError(f"Inpainter.box must be (top, left, height, width) inside {S}x{S}")
        self._w_top.value, self._w_left.value = top, left
        self._w_height.value, self._w_width.value = height, width

    @property
    def mask(self) -> np.ndarray:
        """(H, W) float32: 1 where the image is kept, 0 in the rectangle to generate."""
        S = self.diffusion.image_shape[1]
        m = np.ones((S, S), np.float32)
        top, left, height, width = self.box
        m[top:top + height, left:left + width] = 0.0
        return m

    @property
    def masked(self) -> np.ndarray:
        """The input as the model sees it: the rectangle greyed out (inpaint mode)."""
        if self.mode == "img2img":
            return self.original.copy()
        return np.where(self.mask[None] == 1, self.original, 0.0).astype(np.float32)

    # ----------------------------------------------------------------- drawing
    def _redraw_input(self):
        if self._pool is not None and not self._w_index.disabled:
            self.original = np.ascontiguousarray(self._pool[self._w_index.value])
        self.results = None
        self._draw()

    def _draw(self):
        fig = self._fig
        fig.clear()
        k = self.n + 2
        axes = [fig.add_subplot(1, k, i + 1) for i in range(k)]
        _imshow(axes[0], self.original, "original")
        _imshow(axes[1], self.masked, "input" if self.mode == "img2img" else "masked")
        for i in range(self.n):
            if self.results is None:
                axes[2 + i].axis("off")
                axes[2 + i].set_title("press Run" if i == 0 else "", fontsize=9)
            else:
                _imshow(axes[2 + i], self.results[i], f"seed {self._w_seed.value + i}")
        fig.tight_layout(pad=0.3)
        self._img.value = _png(fig)

    # --------------------------------------------------------------------- run
    def run(self):
        """Run the selected tool with the controls' settings; returns the completions."""
        d, x = self.diffusion, self.original[None]
        seed = int(self._w_seed.value)
        t0 = time.perf_counter()
        outs = []
        for i in range(self.n):              # each completion from its own seed
            if self.mode == "inpaint":
                outs.append(d.inpaint(x, self.mask, steps=self._w_steps.value,
                                      jump_length=self._w_jl.value,
                                      jump_n_sample=self._w_jn.value, seed=seed + i,
                                      value_range=(-1, 1), progress=False))
            else:
                outs.append(d.img2img(x, self._w_strength.value, steps=self._w_steps.value,
                                      seed=seed + i, value_range=(-1, 1), progress=False))
        self.results = np.concatenate(outs)
        self.seconds = time.perf_counter() - t0
        rms = float(np.sqrt(np.mean((self.results - self.original) ** 2)))
        self.texts["status"] = (f"{self.mode}: {self.n} completions in {self.seconds:.1f} s; "
                                f"RMS distance to the original {rms:.3f}")
        self._w_status.value = self.texts["status"]
        self._draw()
        return self.results
