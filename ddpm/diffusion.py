"""A diffusion model = a denoiser network + a noise schedule + what the network predicts
(lessons 6-2-3 and 6-2-4).

:class:`Diffusion` ties a :class:`ddpm.UNet` to a :class:`ddpm.NoiseSchedule` and
speaks the lessons' 1-based time t = 1..T; the network itself sees diffusers'
0-based time (``schedule.model_timestep(t) = t - 1``), translated here and only here.

Objectives (what the network's output means), as in diffusers:

- ``"eps"``: the noise eps that was added (the course's choice, DDPM's default);
- ``"x0"``: the clean image x_0 ("sample" in diffusers);
- ``"v"``: v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho).

Whatever the objective, :meth:`Diffusion.predict_eps` and
:meth:`Diffusion.predict_x0` answer in the lessons' terms.
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import _core
from . import editing
from ._checks import as_float32_batch, as_seed, as_timesteps
from ._registry import _resolve_pretrained, _save_dtype
from ._io import VERSION, atomic_write, new_dirs, read_json_object, write_text
from .likelihood import nll as _nll
from .model import UNet
from .sampling import sample_diffusion
from .schedule import NoiseSchedule
from .visuals import OUTPUT_TYPES, convert_output

__all__ = ["Diffusion", "OBJECTIVES"]

OBJECTIVES = tuple(_core.OBJECTIVES)          # ("eps", "x0", "v"), in the engine's order
_PREDICTION_TYPE = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "sigmoid": "sigmoid",
                  "cosine": "squaredcos_cap_v2"}


class Diffusion:
    """A denoiser, its noise schedule and its objective.

    Parameters
    ----------
    model : ddpm.UNet
    schedule : ddpm.NoiseSchedule, optional
        Default: the linear schedule with T = 1000 (Ho et al.).
    objective : {"eps", "x0", "v"}
        What the network predicts (see the module docstring).

    Examples
    --------
    >>> import ddpm
    >>> d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear"))
    >>> x0 = ddpm.datasets.tshirt()[None]
    >>> xt, eps = d.schedule.q_sample(x0, t=500, seed=0)
    >>> x0_hat = d.predict_x0(xt, t=500)      # one-shot guess (untrained: poor)
    """

    def __init__(self, model: UNet, schedule: NoiseSchedule | None = None, *,
                 objective: str = "eps"):
        if not isinstance(model, UNet):
            raise TypeError(f"Diffusion(): model must be a ddpm.UNet, got {type(model).__name__}")
        if schedule is None:
            schedule = NoiseSchedule("linear")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError("Diffusion(): schedule must be a ddpm.NoiseSchedule")
        if objective not in OBJECTIVES:
            raise ValueError(f"Diffusion(): objective must be one of {OBJECTIVES}, got {objective!r}")
        nts = model.config.get("num_train_timesteps")
        if nts is not None and nts < schedule.T:
            raise ValueError(f"Diffusion(): the model takes times 0..{nts - 1} "
                             f"(num_train_timesteps={nts}) but the schedule has T={schedule.T}")
        if model.config["in_channels"] != model.config["out_channels"]:
            raise ValueError("Diffusion(): the model must output as many channels as it takes "
                             f"(in_channels={model.config['in_channels']}, "
                             f"out_channels={model.config['out_channels']})")
        self.model = model
        self.schedule = schedule
        self.objective = objective

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def image_shape(self) -> tuple:
        c = self.model.config
        return (c["in_channels"], c["sample_size"], c["sample_size"])

    # ----------------------------------------------------------- predictions
    def _net(self, x_t, tt, class_labels):
        """The network at lesson times tt.  For a class-conditional model,
        ``class_labels=None`` is the null label (unconditional), as in ``sample``."""
        K = self.model.num_class_embeds
        if class_labels is None and K is not None:
            class_labels = np.full(x_t.shape[0], K - 1, np.int64)
        return self.model(x_t, self.schedule.model_timestep(tt), class_labels=class_labels)

    def model_output(self, x_t, t, class_labels=None) -> np.ndarray:
        """The raw network output at lesson time t (1..T); for a class-conditional
        model ``class_labels`` (None: the null label, unconditional)."""
        x_t = as_float32_batch(x_t, "x_t", "model_output")
        tt = as_timesteps(t, x_t.shape[0], self.T, "model_output")
        return self._net(x_t, tt, class_labels)

    def _coefs(self, tt):
        """float32 (a, b) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) per image, rounded
        as the samplers round them (float32 alpha_bar, then sqrt)."""
        ab = self.schedule.alpha_bars[tt].astype(np.float32)
        return (np.ascontiguousarray(np.sqrt(ab), dtype=np.float32),
                np.ascontiguousarray(np.sqrt(np.float32(1) - ab), dtype=np.float32))

    def predict_eps_and_x0(self, x_t, t, class_labels=None):
        """(eps_hat, x0_hat) at lesson time t, whatever the objective.

        The conversion is the engine's (the samplers use the same code), in
        float32: eps: x0 = (x_t - b eps)/a; x0: eps = (x_t - a x0)/b;
        v: x0 = a x_t - b v, eps = a v + b x_t (a = sqrt(alpha_bar_t),
        b = sqrt(1 - alpha_bar_t)).  A class-conditional model takes
        ``class_labels`` (None: the null label, unconditional).
        """
        x_t = as_float32_batch(x_t, "x_t", "predict")
        tt = as_timesteps(t, x_t.shape[0], self.T, "predict")
        out = self._net(x_t, tt, class_labels)
        a, b = self._coefs(tt)
        eps = np.empty_like(x_t)
        x0 = np.empty_like(x_t)
        _core.objective_predict(eps, x0, x_t, out, a, b, _core.OBJECTIVES.index(self.objective),
                                False)
        return eps, x0

    def predict_eps(self, x_t, t, class_labels=None) -> np.ndarray:
        """eps_hat(x_t, t): the noise the model believes is in x_t."""
        return self.predict_eps_and_x0(x_t, t, class_labels)[0]

    def predict_x0(self, x_t, t, class_labels=None) -> np.ndarray:
        """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t): the one-shot guess.

        The error of eps_hat is amplified by sqrt((1 - alpha_bar)/alpha_bar):
        fine at small t, hopeless near T (lesson 6-2-3).
        """
        return self.predict_eps_and_x0(x_t, t, class_labels)[1]

    def target(self, x0, eps, t) -> np.ndarray:
        """What the network should output for (x0, eps, t) under this objective
        (the engine's training target: eps, x0, or sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0)."""
        x0 = as_float32_batch(x0, "x0", "target")
        eps = as_float32_batch(eps, "eps", "target")
        if eps.shape != x0.shape:
            raise ValueError(f"target(): eps must have x0's shape {x0.shape}, got {eps.shape}")
        tt = as_timesteps(t, x0.shape[0], self.T, "target")
        a, b = self._coefs(tt)
        out = np.empty_like(x0)
        _core.objective_targets(out, x0, eps, a, b, _core.OBJECTIVES.index(self.objective))
        return out

    # ------------------------------------------------------------------ loss
    def loss(self, x0, t=None, *, noise=None, seed=None, class_labels=None) -> float:
        """The training loss on a batch, forward only: MSE(model(x_t, t), target).

        t and eps are drawn as the first step of a :class:`ddpm.Trainer` with this
        ``seed`` draws them (the engine's counter RNG: one t uniform in 1..T per
        image, eps ~ N(0, I)), unless given; so ``d.loss(x, seed=s)`` is the loss
        that step computes before it updates anything (unweighted, no label dropout).
        """
        x0 = as_float32_batch(x0, "x0", "loss")
        seed = as_seed(seed, "loss")
        B = x0.shape[0]
        if t is None:
            t = np.empty(B, np.int64)
            _core.train_draw_timesteps(t, seed, 1, self.T)
        tt = as_timesteps(t, B, self.T, "loss")
        if noise is None:
            noise = np.empty_like(x0)
            _core.train_draw_noise(noise, seed, 1)
        x_t, eps = self.schedule.q_sample(x0, tt, noise=noise)
        out = self._net(x_t, tt, class_labels)
        diff = out.astype(np.float64) - self.target(x0, eps, tt)
        return float(np.mean(np.mean(diff.reshape(B, -1) ** 2, axis=1)))

    # -------------------------------------------------------------- sampling
    def sample(self, n: int, steps: int | None = None, sampler: str = "ddpm", eta: float = 0.0,
               seed: int | None = None, **options):
        """Generate n images with the reverse process, whole loop in C (lesson 6-2-4).

        ``sampler``: ``"ddpm"`` (ancestral, steps = T by default), ``"ddim"``
        (``eta`` 0 = deterministic, 50 steps by default) or ``"dpm++"``
        (DPM-Solver++(2M), 20 steps by default).  Returns float32 images
        (n, C, H, W) in [0, 1].  Options (``variance``, ``timestep_spacing``,
        ``clip_x0``, ``dynamic_threshold``, ``x_T``, ``noise``,
        ``return_trajectory``, ``value_range``, ``progress``...) are documented
        in :func:`ddpm.sampling.sample_diffusion`.

        ``output_type`` follows diffusers' pipelines: None (default) gives ddpm's
        float32 (n, C, H, W); ``"np"`` float32 (n, H, W, C) in [0, 1]; ``"pil"`` a
        list of n PIL images (mode "L" or "RGB").  With ``return_trajectory`` the
        trajectory still comes second, in the model's space.

        >>> images = d.sample(16, steps=50, sampler="ddim", seed=0)  # doctest: +SKIP
        >>> pictures = d.sample(4, output_type="pil")                # doctest: +SKIP
        """
        output_type = options.pop("output_type", None)
        if output_type not in OUTPUT_TYPES:       # checked before the run, not after
            raise ValueError(f"sample(): output_type must be None, 'np' or 'pil', "
                             f"got {output_type!r}")
        out = sample_diffusion(self, n, steps=steps, sampler=sampler, eta=eta, seed=seed,
                               **options)
        vr = options.get("value_range", (0, 1))
        if isinstance(out, tuple):
            return convert_output(out[0], output_type, "sample", vr), out[1]
        return convert_output(out, output_type, "sample", vr)

    def img2img(self, x0, strength: float = 0.6, **options):
        """SDEdit: noise x0 (in [-1, 1]) to t = strength * T and denoise it again
        (:func:`ddpm.editing.img2img` has every option).

        >>> edited = d.img2img(x0[:8], strength=0.5, seed=0)   # doctest: +SKIP
        """
        return editing.img2img(self, x0, strength, **options)

    def inpaint(self, x0, mask, **options):
        """RePaint: keep x0 where mask is 1, generate where it is 0
        (:func:`ddpm.editing.inpaint` has every option).

        >>> filled = d.inpaint(x0[:4], mask, steps=50, seed=0)   # doctest: +SKIP
        """
        return editing.inpaint(self, x0, mask, **options)

    # ------------------------------------------------------------ likelihood
    def nll(self, x0, *, batch_size: int = 64, t_samples: int | None = None, seed: int = 0,
            variance: str = "fixed_small", clip_x0: bool = False, quantize: bool = False,
            progress=False, labels=None):
        """The negative log-likelihood bound of images x0 in bits/dim (Ho et al. 2020, eq. 5).

        ``-log p(x_0) <= L_T + sum_{t=2}^T L_{t-1} + L_0`` with, in the lessons' notation,

        * L_T = KL(q(x_T | x_0) || N(0, I)) = 0.5 sum_i (-alpha_bar_T - log(1 - alpha_bar_T)
          + alpha_bar_T x_0i^2): the prior, no model;
        * L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), x_t drawn from
          q(x_t | x_0): two Gaussians with means ``posterior_mean_coef1[t] x_0 +
          posterior_mean_coef2[t] x_t`` and the same with x0_hat (unclipped), variances
          ``posterior_variance[t]`` and the model's fixed s2_t, so
          L_{t-1} = 0.5 sum_i (log(s2_t/v_t) + v_t/s2_t - 1 + coef1_t^2 (x_0i - x0_hat_i)^2 / s2_t);
        * L_0 = -log p(x_0 | x_1): the mass N(x0_hat, s2_1) puts on each value's bin of
          width 2/255 (edge bins to +-inf), the discretised decoder of Ho et al.

        Bits per dimension = nats / (C H W ln 2).  Computed in C, with the GIL released.

        Parameters
        ----------
        x0 : ndarray float32/float64 (N, C, H, W)
            Images on the 256-level grid k/127.5 - 1 (``ddpm.datasets`` images are);
            off-grid values raise ValueError unless ``quantize=True`` snaps them.
        batch_size : int
            Images per network call.
        t_samples : int, optional
            None (default): the exact bound, T network passes per batch.  K: draw K
            timesteps per image uniformly from 2..T (without replacement) and scale
            their sum by (T-1)/K, an unbiased estimate for K + 1 passes; noisier per
            image (the first steps dominate the sum), see ``NLLResult.stderr``.
        seed : int
            Seed of the x_t noise and the timestep draws (same seed, same bits at any
            thread count; the same x_t and timesteps at any batch size).
        variance : {"fixed_small", "fixed_large"}
            s2_t = ``posterior_variance[t]`` (default: the DDPM sampler's default,
            so with ``clip_x0=True`` this bounds what ``sample`` runs by default;
            each L_{t-1} is then the model's weighted squared error alone) or ``betas[t]`` (Ho et al.'s
            CIFAR-10 setting; often the lower bound for imperfect models, see
            :mod:`ddpm.likelihood`); t = 1 uses ``posterior_variance[2]`` in both
            (Ho et al.'s ``posterior_log_variance_clipped``).
        clip_x0 : bool
            Clip x0_hat to [-1, 1] (default off: the bound of the model as it is).
        quantize : bool
            Snap off-grid x0 to the nearest of the 256 levels.
        progress : bool or callable
            tqdm bar, or ``progress(done, total)`` counted in network passes.
        labels : class labels, optional
            Class-conditional models: the images' classes (-log p(x_0 | class)); None
            uses the null label (the model's unconditional half).

        Returns
        -------
        ddpm.likelihood.NLLResult
            ``bits_per_dim`` (mean over images), ``per_image``, ``prior``,
            ``decoder``, ``kl_per_t`` ((T+1,), index t), ``total_kl``, ``stderr``.

        Examples
        --------
        >>> x0 = ddpm.datasets.fashion_mnist("test")[:8]         # doctest: +SKIP
        >>> r = d.nll(x0, t_samples=50, seed=0)                  # doctest: +SKIP
        >>> r.bits_per_dim, r.stderr                             # doctest: +SKIP
        """
        return _nll(self, x0, batch_size=batch_size, t_samples=t_samples, seed=seed,
                   variance=variance, clip_x0=clip_x0, quantize=quantize, progress=progress,
                   labels=labels)

    # ----------------------------------------------------------------- files
    def save(self, path, *, dtype: str = "float32") -> str:
        """Write a diffusers ``DDPMPipeline`` folder: ``model_index.json``,
        ``unet/`` (config + safetensors, ``dtype`` "float32" or "float16") and
        ``scheduler/scheduler_config.json``.

        ``diffusers.DDPMPipeline.from_pretrained(path)`` reads it, and so does
        :meth:`load`.  Each file is replaced atomically.
        """
        if dtype not in ("float32", "float16"):
            raise ValueError(f"Diffusion.save(): dtype must be 'float32' or 'float16', got {dtype!r}")
        path = os.fspath(path)
        with new_dirs(path):         # a failed save (a full disk) leaves no folder it made
            self._save_files(path, dtype)
        return path

    def _save_files(self, path, dtype):
        self.model.save(os.path.join(path, "unet"), dtype=dtype)
        os.makedirs(os.path.join(path, "scheduler"), exist_ok=True)
        s = self.schedule
        sched = {"_class_name": "DDPMScheduler", "_ddpm_version": VERSION,
                 "num_train_timesteps": s.T, "prediction_type": _PREDICTION_TYPE[self.objective],
                 "rescale_betas_zero_snr": bool(s.rescale_zero_terminal_snr),
                 "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0,
                 "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                 "trained_betas": None, "timestep_spacing": "leading", "steps_offset": 0}
        default_cosine = s.kind == "cosine" and s._params == {"s": 0.008, "max_beta": 0.999}
        if s.kind in ("linear", "scaled_linear", "sigmoid") or default_cosine:
            sched["beta_schedule"] = _BETA_SCHEDULE[s.kind]
            sched.update({k: v for k, v in s._params.items() if k in ("beta_start", "beta_end")})
        else:   # custom betas, or a cosine with other s / max_beta: write the betas out
            sched["trained_betas"] = [float(b) for b in s._raw_betas[1:]]
        index = {"_class_name": "DDPMPipeline", "_ddpm_version": VERSION,
                 "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
        atomic_write(os.path.join(path, "scheduler", "scheduler_config.json"),
                      lambda tmp: write_text(tmp, json.dumps(sched, indent=2, sort_keys=True)))
        atomic_write(os.path.join(path, "model_index.json"),
                      lambda tmp: write_text(tmp, json.dumps(index, indent=2, sort_keys=True)))

    @classmethod
    def load(cls, path) -> "Diffusion":
        """Read a folder written by :meth:`save` or by diffusers' ``DDPMPipeline.save_pretrained``
        (also: a scheduler config from DDIMScheduler or DPMSolverMultistepScheduler)."""
        F = "Diffusion.load"
        path = os.fspath(path)
        model = UNet.load(os.path.join(path, "unet"))
        cfg_path = os.path.join(path, "scheduler", "scheduler_config.json")
        cfg = read_json_object(cfg_path, F)
        schedule, objective = _schedule_from_config(cfg, F, cfg_path)
        return cls(model, schedule, objective=objective)

    # ---------------------------------------------------- diffusers' names
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "Diffusion":
        """diffusers' spelling of :meth:`load`: a local ``DDPMPipeline`` folder, or the name
        of a model that ships with ddpm (``ddpm.pretrained_models()``).

        As in diffusers, a local folder wins over a name.  ddpm is an offline
        package: a Hub id such as ``"google/ddpm-cifar10-32"`` is not downloaded
        (OSError); download it with diffusers or ``huggingface-cli`` and pass the
        folder.  ``local_files_only`` is accepted (always true here),
        ``use_safetensors`` must not be False (no pickle), other keywords are
        refused by name.

        Examples
        --------
        >>> import ddpm
        >>> d = ddpm.Diffusion.from_pretrained("fashion-mnist")
        >>> d.save_pretrained("/tmp/my-ddpm")                   # doctest: +SKIP
        '/tmp/my-ddpm'
        """
        return cls.load(_resolve_pretrained(pretrained_model_name_or_path, "Diffusion", kwargs))

    def save_pretrained(self, save_directory, *, safe_serialization: bool = True,
                        variant: str | None = None, push_to_hub: bool = False) -> str:
        """diffusers' spelling of :meth:`save`: a ``DDPMPipeline`` folder (safetensors).

        ``variant="fp16"`` stores float16 weights (in the standard file name, which
        diffusers reads too); ``safe_serialization=False`` (pickle) and
        ``push_to_hub=True`` (network) are refused.

        Examples
        --------
        >>> import ddpm
        >>> ddpm.Diffusion(ddpm.UNet(seed=0)).save_pretrained("/tmp/untrained")
        '/tmp/untrained'
        """
        return self.save(save_directory, dtype=_save_dtype(
            "Diffusion.save_pretrained", safe_serialization, variant, push_to_hub))

    def __repr__(self):
        return f"Diffusion({self.model!r}, {self.schedule!r}, objective={self.objective!r})"


def _schedule_from_config(cfg: dict, F: str, where: str):
    """(NoiseSchedule, objective) from a diffusers scheduler config; every value is
    checked for its type (a string "false" is not False), errors name the key and file."""
    def get(key, default, kinds, what):
        v = cfg.get(key, default)
        if v is None and default is None:
            return None
        if not isinstance(v, kinds) or (bool not in kinds and isinstance(v, bool)):
            raise TypeError(f"{F}(): {key} in {where} must be {what}, got {v!r}")
        return v

    T = get("num_train_timesteps", 1000, (int,), "an int")
    if not 1 <= T <= _core.MAX_TIMESTEPS:
        raise ValueError(f"{F}(): num_train_timesteps in {where} must be in "
                         f"1..{_core.MAX_TIMESTEPS}, got {T}")
    rescale = get("rescale_betas_zero_snr", False, (bool,), "true or false")
    pred = get("prediction_type", "epsilon", (str,), "a string")
    objective = {v: k for k, v in _PREDICTION_TYPE.items()}.get(pred)
    if objective is None:
        raise ValueError(f"{F}(): prediction_type {pred!r} is not supported")
    betas = get("trained_betas", None, (list,), "a list of numbers or null")
    if betas is not None:
        if len(betas) != T:
            raise ValueError(f"{F}(): {len(betas)} trained_betas for num_train_timesteps={T}")
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas):
            raise TypeError(f"{F}(): trained_betas in {where} must be numbers")
        return NoiseSchedule.from_betas(betas, rescale_zero_terminal_snr=rescale), objective
    kinds = {v: k for k, v in _BETA_SCHEDULE.items()}
    bs = get("beta_schedule", "linear", (str,), "a string")
    if bs not in kinds:
        raise ValueError(f"{F}(): beta_schedule {bs!r} is not supported "
                         f"(supported: {sorted(kinds)})")
    kw = {} if kinds[bs] == "cosine" else {
        "beta_start": get("beta_start", 0.0001, (int, float), "a number"),
        "beta_end": get("beta_end", 0.02, (int, float), "a number")}
    return NoiseSchedule(kinds[bs], timesteps=T, rescale_zero_terminal_snr=rescale, **kw), \
        objective
