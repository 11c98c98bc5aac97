"""Learning to denoise: the training loop (lesson 6-2-3).

Every step is ONE call into C (csrc/train.c): draw t ~ U{1..T} and eps ~ N(0, I),
form x_t by the closed form, run the U-Net, take the MSE against the target,
backpropagate, clip the global gradient norm, update with Adam(W), update the
EMA weights.  Python only picks the batch and keeps the books.

:class:`Trainer` adds shuffling, a progress bar, a loss history (per step and
per t bucket), periodic sample grids, Ctrl-C handling at step boundaries, and
checkpoints: one safetensors file holding the model, EMA, optimizer moments,
step and trainer settings, written atomically (temp file + rename).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import signal
import threading
import time

import numpy as np

from . import _core
from ._checks import as_float32_batch, as_int, as_seed, as_timesteps
from .diffusion import OBJECTIVES, Diffusion
from ._checkpoint import FORMAT as CHECKPOINT_FORMAT, N_BUCKETS, nonfinite_message, read_checkpoint
from ._io import atomic_write, new_dirs
from ._safetensors import write_safetensors
from .model import UNet
from .visuals import save_grid

__all__ = ["Trainer", "CHECKPOINT_FORMAT"]



def _progress_bar(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


def learning_rate(step: int, lr: float, warmup_steps: int = 0, lr_schedule: str = "constant",
                  total_steps: int | None = None, schedule_start: int = 0) -> float:
    """ddpm's learning-rate rule, the one place it is written (``Trainer.lr_at`` and
    ``ddpm export --to diffusers`` use it): the rate of 1-based ``step``, counted
    from the start of the current cycle ``schedule_start``: a linear warm-up over
    ``warmup_steps``, then ``lr`` (``"constant"``) or a cosine decay to 0 at
    ``total_steps`` (``"cosine"``): diffusers' ``get_cosine_schedule_with_warmup``
    with steps counted from 1."""
    s = step - schedule_start
    if warmup_steps and s <= warmup_steps:
        return lr * s / warmup_steps
    if lr_schedule == "cosine":
        span = max(1, total_steps - schedule_start - warmup_steps)
        progress = min(1.0, (s - warmup_steps) / span)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


class Trainer:
    """Train a :class:`Diffusion` on an array of images.

    Parameters
    ----------
    diffusion : ddpm.Diffusion
    data : array (N, C, H, W), float, values in [-1, 1]
        E.g. ``ddpm.datasets.fashion_mnist()[0]``.
    batch_size : int
        Images per step (the last partial batch of an epoch is dropped, so
        every step sees the same batch size).
    lr : float
        Adam learning rate (after ``warmup_steps`` of linear warm-up from 0).
    seed : int
        Seeds shuffling and the per-step draws of t and eps: a run is a pure
        function of (seed, data, settings), and resuming continues bit-identically.
    ema_decay : float or None
        Target decay of the exponential moving average of the weights
        (ramped as diffusers' EMAModel does); None turns EMA off.
    grad_clip : float or None
        Clip the global gradient norm to this (None: no clipping).
    weight_decay : float
        Decoupled weight decay (AdamW) when ``decoupled_weight_decay``
        (default), else L2 added to the gradient (Adam).
    betas, eps : Adam's moment decays and epsilon.
    warmup_steps : int
        Linear warm-up of the learning rate from 0 over this many steps.
    lr_schedule : {"constant", "cosine"}
        After warm-up: constant, or cosine decay to 0 at ``total_steps``
        (diffusers' ``get_scheduler("cosine")``).
    total_steps : int, optional
        The length of the run, needed by the cosine schedule (the step at
        which the learning rate reaches 0).
    schedule_start : int
        The step at which the current learning-rate cycle (warm-up, then the
        cosine) began: 0 for a run's first cycle; :meth:`extend` sets it.
    labels : array of int (N,), optional
        The class of each image, for a class-conditional model (``UNet(...,
        num_class_embeds=K)``: classes 0..K-2, K-1 is the reserved null label).
    p_uncond : float
        With labels: the chance each label is replaced by the null label in a
        step (drawn from the engine's counter RNG), which trains the
        unconditional model classifier-free guidance needs.
    flip : bool
        Flip each training image left-right with probability 1/2 (drawn from
        ``seed`` and the step, so resuming stays bit-identical).
    min_snr_gamma : float or None
        Min-SNR-gamma loss weighting (Hang et al. 2023); None: plain MSE.
    progress : bool
        Show a tqdm.auto bar (terminal or notebook) with loss and img/s.
    sample_every : int or None
        Every this many steps call ``sample_fn(trainer, step)``; by default
        that saves a grid of 16 EMA samples to ``sample_dir/step_XXXXXX.png``.

    Attributes
    ----------
    diffusion : the trained Diffusion (current weights)
    step : optimizer steps done
    history : dict with "step", "loss", "grad_norm", "lr" lists and
        "bucket_loss"/"bucket_count" (mean unweighted MSE per tenth of 1..T)

    Examples
    --------
    >>> import ddpm
    >>> x, _ = ddpm.datasets.fashion_mnist("train")           # doctest: +SKIP
    >>> d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear"))
    >>> tr = ddpm.Trainer(d, x, batch_size=64)                  # doctest: +SKIP
    >>> tr.fit(steps=100)                                       # doctest: +SKIP
    """

    def __init__(self, diffusion: Diffusion, data, *, batch_size: int = 128, lr: float = 2e-4,
                 seed: int = 0, ema_decay: float | None = 0.9999, grad_clip: float | None = 1.0,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = True,
                 betas=(0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 0,
                 lr_schedule: str = "constant", total_steps: int | None = None,
                 schedule_start: int = 0, labels=None, p_uncond: float = 0.1, flip: bool = False,
                 min_snr_gamma: float | None = None, progress: bool = True,
                 sample_every: int | None = None, sample_dir=None, sample_fn=None):
        F = "Trainer"
        if not isinstance(diffusion, Diffusion):
            raise TypeError(f"{F}(): diffusion must be a ddpm.Diffusion")
        self.diffusion = diffusion
        data = as_float32_batch(data, "data", F)
        shape = diffusion.image_shape
        if data.shape[1:] != shape:
            raise ValueError(f"{F}(): data must have shape (N, {shape[0]}, {shape[1]}, {shape[2]}) "
                             f"for this model, got {data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{F}(): data contains NaN or Inf")
        self.data = data
        self.batch_size = as_int(batch_size, "batch_size", F, lo=1, hi=1 << 16)
        self.seed = as_seed(seed, F)
        self.lr = self._pos_float(lr, "lr", allow_zero=True)
        self.ema_decay = None if ema_decay is None else self._unit(ema_decay, "ema_decay")
        self.grad_clip = None if grad_clip is None else self._pos_float(grad_clip, "grad_clip")
        self.weight_decay = self._pos_float(weight_decay, "weight_decay", allow_zero=True)
        if not isinstance(decoupled_weight_decay, (bool, np.bool_)):
            raise TypeError(f"{F}(): decoupled_weight_decay must be True or False, got "
                            f"{decoupled_weight_decay!r}")
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{F}(): betas must be a pair of numbers, got {betas!r}")
        b1, b2 = betas
        self.betas = (self._unit(b1, "betas[0]", open_top=True), self._unit(b2, "betas[1]", open_top=True))
        self.eps = self._pos_float(eps, "eps")
        self.warmup_steps = as_int(warmup_steps, "warmup_steps", F, lo=0, hi=1 << 40)
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"{F}(): lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self.total_steps = None if total_steps is None else as_int(total_steps, "total_steps", F,
                                                                     lo=1, hi=1 << 40)
        if lr_schedule == "cosine" and self.total_steps is None:
            raise ValueError(f"{F}(): lr_schedule='cosine' needs total_steps (the run's length)")
        self.schedule_start = as_int(schedule_start, "schedule_start", F, lo=0, hi=1 << 40)
        if self.total_steps is not None and self.schedule_start >= self.total_steps:
            raise ValueError(f"{F}(): schedule_start ({self.schedule_start}) must be before "
                             f"total_steps ({self.total_steps})")
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"{F}(): flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        K = diffusion.model.num_class_embeds
        if labels is None:
            self.labels = None
        else:
            if K is None:
                raise ValueError(f"{F}(): labels were given but the model is unconditional; "
                                 f"build it with UNet(..., num_class_embeds=classes + 1)")
            lab = np.asarray(labels)
            if lab.dtype.kind not in "iu" or lab.shape != (len(data),):
                raise ValueError(f"{F}(): labels must be integers, one per image ({len(data)}), "
                                 f"got dtype {lab.dtype} and shape {lab.shape}")
            if lab.size and (lab.min() < 0 or lab.max() > K - 2):
                raise ValueError(f"{F}(): labels must be in 0..{K - 2} (label {K - 1} is the "
                                 f"reserved null label), got {int(lab.min())}..{int(lab.max())}")
            self.labels = np.ascontiguousarray(lab, dtype=np.int64)
        self.p_uncond = self._unit(p_uncond, "p_uncond")
        self.min_snr_gamma = None if min_snr_gamma is None else self._pos_float(min_snr_gamma, "min_snr_gamma")
        self.progress = bool(progress)
        self.sample_every = None if sample_every is None else as_int(sample_every, "sample_every", F, lo=1)
        self.sample_dir = os.fspath(sample_dir) if sample_dir is not None else "samples"
        self.sample_fn = sample_fn
        P = diffusion.model.num_parameters
        self.m = np.zeros(P, np.float32)
        self.v = np.zeros(P, np.float32)
        self.ema = diffusion.model.params.copy() if self.ema_decay is not None else None
        self.ema_updates = 0
        self.step = 0
        self.history = {"step": [], "loss": [], "grad_norm": [], "lr": [],
                        "bucket_loss": [0.0] * N_BUCKETS, "bucket_count": [0] * N_BUCKETS}
        self._buffers = None
        self._stop = False

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _number(x, name):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
            raise TypeError(f"Trainer(): {name} must be a number, got {x!r}")
        try:
            return float(x)
        except OverflowError:
            raise ValueError(f"Trainer(): {name} is out of range, got {x!r}") from None

    @staticmethod
    def _pos_float(x, name, allow_zero=False, where="Trainer"):
        v = Trainer._number(x, name)
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{where}(): {name} must be {'>=' if allow_zero else '>'} 0 and finite, got {x!r}")
        return v

    @staticmethod
    def _unit(x, name, open_top=False):
        v = Trainer._number(x, name)
        if not (0 <= v < 1 if open_top else 0 <= v <= 1):
            raise ValueError(f"Trainer(): {name} must be in [0, 1{')' if open_top else ']'}, got {x!r}")
        return v

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.data) // min(self.batch_size, len(self.data)))

    @property
    def epoch(self) -> float:
        """Epochs done, fractional."""
        return self.step / self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        """Learning rate of (1-based) step: linear warm-up, then constant or cosine decay,
        counted from the start of the current cycle (``schedule_start``, 0 at first)."""
        return learning_rate(step, self.lr, self.warmup_steps, self.lr_schedule,
                             self.total_steps, self.schedule_start)

    def extend(self, steps: int, lr: float | None = None) -> "Trainer":
        """Give a cosine run ``steps`` more steps of learning: a new cycle from the
        current step (a warm restart, Loshchilov & Hutter 2017) with the same
        warm-up, peaking at ``lr`` (default: the first cycle's) and decaying to 0
        at step ``self.step + steps``.

        Without it, ``fit`` after a finished cosine schedule trains at learning
        rate 0.  A constant-rate run needs no new cycle (only ``lr`` is applied).
        The new cycle is saved with the checkpoint, so resuming stays exact.
        Returns the Trainer.
        """
        steps = as_int(steps, "steps", "Trainer.extend", lo=1, hi=1 << 40)
        if lr is not None:
            self.lr = self._pos_float(lr, "lr", allow_zero=True, where="Trainer.extend")
        if self.lr_schedule == "cosine":
            self.schedule_start = self.step
            self.total_steps = self.step + steps
        return self

    def _batch_indices(self, step: int) -> np.ndarray:
        """Images of (0-based) step: epoch e's permutation comes from (seed, e)."""
        spe = self.steps_per_epoch
        B = min(self.batch_size, len(self.data))
        epoch, k = divmod(step, spe)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
        return perm[k * B:(k + 1) * B]

    def _ensure_buffers(self, B):
        if self._buffers is None or self._buffers["x0"].shape[0] != B:
            shape = (B,) + self.diffusion.image_shape
            self._buffers = {k: np.empty(shape, np.float32) for k in ("x0", "xt", "eps", "out", "dout")}
            self._buffers["t"] = np.empty(B, np.int64)
            self._buffers["labels"] = np.empty(B, np.int64)
            self._buffers["used_labels"] = np.empty(B, np.int64)
            self._buffers["sample_loss"] = np.empty(B, np.float32)
        return self._buffers

    def _config(self, step, given_t=False, given_eps=False, given_drop=False):
        adam = (self.lr_at(step), self.betas[0], self.betas[1], self.eps, self.weight_decay,
                self.decoupled_weight_decay)
        K = self.diffusion.model.num_class_embeds
        return (OBJECTIVES.index(self.diffusion.objective),
                float(self.min_snr_gamma or 0.0), float(self.grad_clip or 0.0), adam,
                -1.0 if self.ema_decay is None else self.ema_decay, self.ema_updates, step,
                self.seed, given_t, given_eps, self.p_uncond, -1 if K is None else K - 1,
                given_drop)

    def _flip(self, x0, step):
        """Each image mirrored left-right with probability 1/2, from (seed, step)."""
        flip = np.random.default_rng([self.seed, 0x7F11B, step]).random(x0.shape[0]) < 0.5
        x0[flip] = x0[flip][..., ::-1]
        return x0

    # ------------------------------------------------------------------- steps
    def train_step(self, x0=None, *, t=None, noise=None, labels=None,
                   drop=None) -> float:
        """One optimizer step (in C) on the next batch, or on ``x0`` (and ``labels``) if given.

        ``t`` (lesson time, one per image), ``noise`` and ``drop`` (booleans: which
        labels become the null label) replace the seeded draws, for checking the
        step against a reference.  Returns the loss.
        """
        step = self.step + 1
        F = "train_step"
        K = self.diffusion.model.num_class_embeds
        if x0 is None:
            idx = self._batch_indices(self.step)
            x0 = self.data[idx]
            if self.flip:
                x0 = self._flip(x0, step)
            if self.labels is not None:
                labels = self.labels[idx]
        else:
            x0 = as_float32_batch(x0, "x0", F)
            if x0.shape[1:] != self.diffusion.image_shape:
                raise ValueError(f"{F}(): x0 must have shape (B,) + {self.diffusion.image_shape}")
        B = x0.shape[0]
        if labels is not None:
            labels = self.diffusion.model.class_index(labels, B, F)
        elif K is not None:
            raise ValueError(f"{F}(): a class-conditional model needs labels (one per image)")
        buf = self._ensure_buffers(B)
        buf["x0"][...] = x0
        given_drop = drop is not None
        if labels is not None:
            buf["labels"][...] = labels
            if given_drop:
                d = np.asarray(drop)
                if d.dtype != np.bool_ or d.shape != (B,):
                    raise ValueError(f"{F}(): drop must hold one bool per image ({B}), got "
                                     f"dtype {d.dtype} and shape {d.shape}")
                buf["labels"][d] = K - 1
        given_t = t is not None
        given_eps = noise is not None
        if given_t:     # lesson time, integers in 1..T (a float t is refused, not truncated)
            buf["t"][...] = as_timesteps(t, B, self.diffusion.T, F)
        if given_eps:
            eps = as_float32_batch(noise, "noise", F)
            if eps.shape != buf["eps"].shape:
                raise ValueError(f"{F}(): noise must have x0's shape {buf['eps'].shape}, "
                                 f"got {eps.shape}")
            if not np.all(np.isfinite(eps)):
                raise ValueError(f"{F}(): noise contains NaN or Inf")
            buf["eps"][...] = eps
        model = self.diffusion.model
        s = self.diffusion.schedule
        try:
            loss, gnorm = _core.train_step(
                model._handle, model.params, model.grads, self.m, self.v, self.ema,
                buf["x0"], buf["xt"], buf["eps"], buf["out"], buf["dout"], buf["t"],
                buf["sample_loss"], s.sqrt_alpha_bars, s.sqrt_one_minus_alpha_bars,
                self._config(step, given_t, given_eps, given_drop),
                buf["labels"] if labels is not None else None,
                buf["used_labels"] if labels is not None else None)
        except FloatingPointError as exc:
            raise FloatingPointError(f"training stopped at step {step}: {exc}. The model, "
                                     f"optimizer and EMA are as they were after step {self.step}; "
                                     f"try a lower lr or grad_clip.") from None
        # books, after the C step succeeded (all or nothing)
        self.step = step
        if self.ema is not None:
            self.ema_updates += 1
        h = self.history
        h["step"].append(step)
        h["loss"].append(loss)
        h["grad_norm"].append(gnorm)
        h["lr"].append(self.lr_at(step))
        T = s.T
        for tb, lb in zip(buf["t"], buf["sample_loss"]):
            k = min(N_BUCKETS - 1, (int(tb) - 1) * N_BUCKETS // T)
            n = h["bucket_count"][k] + 1
            h["bucket_loss"][k] += (float(lb) - h["bucket_loss"][k]) / n
            h["bucket_count"][k] = n
        return loss

    def fit(self, epochs: float | None = None, steps: int | None = None):
        """Train for ``epochs`` more epochs or ``steps`` more steps (one of them).

        Ctrl-C (or the notebook's interrupt button) stops at the next step
        boundary, within one step: the model, optimizer and EMA stay consistent
        and ``fit`` can be called again to continue.  Returns ``history``.
        """
        if (epochs is None) == (steps is None):
            raise ValueError("fit(): give exactly one of epochs= or steps=")
        if steps is None:
            if isinstance(epochs, (bool, np.bool_)) or not isinstance(epochs, numbers.Real):
                raise TypeError(f"fit(): epochs must be a number, got {type(epochs).__name__}")
            epochs = float(epochs)
            if not (math.isfinite(epochs) and epochs > 0):
                raise ValueError(f"fit(): epochs must be > 0 and finite, got {epochs!r}")
            steps = round(epochs * self.steps_per_epoch)
        steps = as_int(steps, "steps", "fit", lo=0)
        bar = _progress_bar(steps, self.progress, "training")
        B = min(self.batch_size, len(self.data))
        self._stop = False
        old = None
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGINT, self._on_sigint)
        t0 = time.perf_counter()
        done = 0
        try:
            while done < steps and not self._stop:
                loss = self.train_step()
                done += 1
                if bar is not None:
                    rate = done * B / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
                if self.sample_every and self.step % self.sample_every == 0:
                    self._sample_hook()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            if bar is not None:
                bar.close()
        if self._stop:
            print(f"interrupted: stopped cleanly after step {self.step}; call fit() to continue")
        return self.history

    def _on_sigint(self, signum, frame):
        if self._stop:           # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop = True

    def _sample_hook(self):
        if self.sample_fn is not None:
            self.sample_fn(self, self.step)
            return
        d = self.ema_diffusion()
        labels = "random" if d.model.num_class_embeds is not None else None
        images = d.sample(16, sampler="ddim", steps=50, seed=self.seed, progress=False,
                          labels=labels)
        os.makedirs(self.sample_dir, exist_ok=True)
        save_grid(images, os.path.join(self.sample_dir, f"step_{self.step:06d}.png"), nrow=4, scale=2)

    def ema_diffusion(self) -> Diffusion:
        """A Diffusion whose model holds the EMA weights (a copy; training is unaffected)."""
        model = UNet.from_config(self.diffusion.model.config)
        model.params[:] = self.ema if self.ema is not None else self.diffusion.model.params
        return Diffusion(model, self.diffusion.schedule, objective=self.diffusion.objective)

    # ------------------------------------------------------------- checkpoints
    def _settings(self):
        return {"batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "ema_decay": self.ema_decay, "grad_clip": self.grad_clip,
                "weight_decay": self.weight_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay,
                "betas": list(self.betas), "eps": self.eps, "warmup_steps": self.warmup_steps,
                "lr_schedule": self.lr_schedule, "total_steps": self.total_steps,
                "schedule_start": self.schedule_start,
                "p_uncond": self.p_uncond, "flip": self.flip,
                "min_snr_gamma": self.min_snr_gamma}

    def save(self, path) -> str:
        """Write one checkpoint file (safetensors; no pickle), atomically.

        It holds the model and EMA weights, Adam's moments, the step, the
        trainer's settings, the schedule, the objective and the history, so
        :meth:`resume` continues exactly where this run is.  A state holding NaN
        or Inf is refused (ValueError, nothing written), as :meth:`resume` would
        refuse the file; a failed write (OSError) leaves the previous file.
        """
        path = os.fspath(path)
        d = self.diffusion
        s = d.schedule
        meta = {"format": CHECKPOINT_FORMAT, "step": str(self.step),
                "ema_updates": str(self.ema_updates),
                "model_config": json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                            for k, v in d.model.config.items()}),
                "objective": d.objective,
                "schedule": json.dumps({"kind": s.kind, "params": s._params,
                                        "rescale": s.rescale_zero_terminal_snr,
                                        "betas": [float(b) for b in s._raw_betas[1:]]}),
                "settings": json.dumps(self._settings()),
                "history": json.dumps(self.history)}
        tensors = {"params": d.model.params, "adam_m": self.m, "adam_v": self.v}
        if self.ema is not None:
            tensors["ema"] = self.ema
        for name, arr in tensors.items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Trainer.save(): {nonfinite_message(name, path)}; nothing "
                                 f"was written (Trainer.resume would refuse the file)")
        with new_dirs(os.path.dirname(os.path.abspath(path))):
            atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, meta))
        return path

    @classmethod
    def resume(cls, path, data, labels=None, **overrides) -> "Trainer":
        """A Trainer restored from :meth:`save`'s file, ready to ``fit`` on ``data``
        (and ``labels``, for a class-conditional model: the same as the first run's).

        ``overrides`` may change settings that do not affect the stored state
        (e.g. ``progress``, ``sample_every``, ``sample_dir``).  The file's header
        and metadata are checked before the model is allocated (OSError for an
        unreadable file, ValueError for damaged contents).
        """
        keep = {k: overrides.pop(k) for k in ("progress", "sample_every", "sample_dir", "sample_fn")
                if k in overrides}
        if overrides:
            raise ValueError(f"Trainer.resume(): cannot override {sorted(overrides)}")
        ck = read_checkpoint(path, "Trainer.resume", _settings_keys(cls), ("adam_m", "adam_v"))
        tensors, settings = ck["tensors"], ck["settings"]
        tr = cls(Diffusion(ck["model"], ck["schedule"], objective=ck["objective"]), data,
                 labels=labels, **settings, **keep)
        if tr.ema is not None and "ema" not in tensors:
            raise ValueError(f"Trainer.resume(): {path} has no 'ema' tensor but its settings "
                             f"say ema_decay={tr.ema_decay!r}")
        tr.m[:] = tensors["adam_m"]
        tr.v[:] = tensors["adam_v"]
        if tr.ema is not None:
            tr.ema[:] = tensors["ema"]
        tr.step = ck["step"]
        tr.ema_updates = ck["ema_updates"]
        tr.history = ck["history"]
        return tr

    def __repr__(self):
        return (f"Trainer(step={self.step}, batch_size={self.batch_size}, lr={self.lr:g}, "
                f"data={self.data.shape}, objective={self.diffusion.objective!r})")


def _settings_keys(cls) -> dict:
    """{name: default} of the keyword arguments of Trainer that a checkpoint's settings
    may hold (the checkpoint reader checks each value's type against its default's)."""
    import inspect
    skip = {"self", "diffusion", "data", "labels", "progress", "sample_every", "sample_dir",
            "sample_fn"}
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in skip}


def _read_checkpoint(path, func):
    """Every part of a checkpoint, checked as :meth:`Trainer.resume` checks it: ``model``
    (raw params loaded), ``schedule``, ``objective``, ``settings``, ``step``,
    ``ema_updates``, ``history`` and ``tensors`` (params, adam_m, adam_v and, if
    stored, ema).  ddpm.export reads checkpoints through it."""
    ck = read_checkpoint(path, func, _settings_keys(Trainer), ("adam_m", "adam_v"))
    ck["tensors"]["params"] = ck["model"].params
    return ck


def checkpoint_diffusion(path, *, weights: str = "ema") -> Diffusion:
    """The :class:`Diffusion` held in a :meth:`Trainer.save` checkpoint, without its data.

    ``weights="ema"`` (default) takes the EMA weights, ``"params"`` the raw ones.
    ``python -m ddpm train`` writes its EMA model this way; so does the script
    that exports the shipped model.
    """
    F = "checkpoint_diffusion"
    if weights not in ("ema", "params"):
        raise ValueError(f"{F}(): weights must be 'ema' or 'params', got {weights!r}")
    ck = read_checkpoint(path, F, _settings_keys(Trainer), (), weights=weights)
    return Diffusion(ck["model"], ck["schedule"], objective=ck["objective"])
