"""Playground: a small diffusion to step through, forward then reverse (lesson 6-2-6)."""
from __future__ import annotations

import numpy as np

from .. import datasets
from ..rng import randn
from ..schedule import NoiseSchedule
from ._common import (_FramePlayer, _for_imshow, _image_view, _imshow, _need_widgets, _new_figure,
                      _pixelated_style, _png)

__all__ = ["Playground"]

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
    ``step()``, ``back()``, ``reset()``, ``goto(t, phase)``, ``pause()`` (they return
    None; display a playground once: ipywidgets' Play stops after one frame when two views
    of it exist).

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
        buttons = self._build_controls(w, 2 * self.T, interval_ms)
        self._status = w.HTML()
        reverse_kind = ("<b>oracle reverse</b>: uses the true x_0 in q(x_{t-1} | x_t, x_0); "
                        "a trained model replaces it later" if self.oracle else
                        "reverse with the given denoiser (eps prediction -> x0_hat -> posterior)")

        self._fig = _new_figure((7.0, 3.0))

        self._view = _image_view(w, self._fig)
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
        self.widget = w.VBox([_pixelated_style(w),
            w.HTML(f"<b>Diffusion playground</b>: {self.T} forward steps then {self.T} reverse "
                   f"steps; {reverse_kind}."),
            w.HBox([self.dropdown, self.player, *buttons]), self.slider,
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
        # two short lines: one long line centred over the narrow image axes ran off
        # the figure's left edge ("eckerboard: reverse..."); the oracle note is in the status
        self._ax.set_title(f"{self.pattern}\n{phase} t = {t}", fontsize=9)
        self._rms_marker.set_data([k], [self.rms[k]])
        self._view.value = _png(self._fig)
