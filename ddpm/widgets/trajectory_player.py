"""TrajectoryPlayer: play back a real reverse run of a trained model (lesson 6-2-4)."""
from __future__ import annotations

import numpy as np

from .._checks import as_int, as_seed
from ..diffusion import Diffusion
from ..pretrained import load_pretrained
from ..sampling import DEFAULT_STEPS, SAMPLERS, sampling_timesteps
from ._common import (LESSON_TS, _FramePlayer, _for_imshow, _image_view, _need_widgets,
                      _new_figure, _pixelated_style, _png, reverse_regime)

__all__ = ["TrajectoryPlayer"]

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
    ``goto(t)``, ``reset()``, ``play()``, ``pause()`` (they return None, so a cell
    ending in one does not display the widget twice; display a player once: ipywidgets'
    Play stops after one frame when two views of it exist).

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
        buttons = self._build_controls(w, M - 1, interval_ms, readout=False)
        self._readout = w.HTML()
        self._regime = w.HTML()

        rows = n
        self._fig = _new_figure((5.4, 1.75 * rows + 0.55))
        self._view = _image_view(w, self._fig)
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
        self.widget = w.VBox([_pixelated_style(w),
            w.HTML(f"<b>A real reverse run</b>: {sampler}, {steps} denoiser calls, {n} image(s), "
                   f"seed {seed}, {self.schedule.kind} schedule (T = {T}); {M} frames captured."),
            w.HBox([self.player, *buttons]), self.slider, self._readout,
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
