"""Models that ship inside the package: ``ddpm.load_pretrained("fashion-mnist")``, and
``ddpm.sample()``, the first thing a newcomer runs, which samples them.

The files live in ``ddpm/weights/<name>/`` as a diffusers ``DDPMPipeline`` folder
(``model_index.json``, ``unet/`` with float16 safetensors, ``scheduler/``), so they
load offline, without pickle, and diffusers reads them too.  ``training.json``
beside them records the command that trained the model, how long it took, and
on what machine, so anyone can reproduce it.
"""
from __future__ import annotations

import os

from ._io import read_json_object
from ._registry import _MODELS, pretrained_models, pretrained_path
from .diffusion import Diffusion
from .model import UNet
from .sampling import sample_diffusion
from .visuals import OUTPUT_TYPES, convert_output

__all__ = ["sample", "load_pretrained", "pretrained_models", "pretrained_path", "training_info",
           "GUIDANCE_SCALE", "GUIDANCE_INTERVAL"]

# ddpm.sample()'s guidance for class-conditional models: scale w on the steps whose lesson
# time t is in GUIDANCE_INTERVAL (the labels alone elsewhere), chosen by measurement on the
# shipped model (see sample()'s docstring).
GUIDANCE_SCALE = 2.0
GUIDANCE_INTERVAL = (80, 580)

def load_pretrained(name: str = "fashion-mnist"):
    """The shipped :class:`ddpm.Diffusion` called ``name`` (a fresh copy each call).

    >>> import ddpm
    >>> d = ddpm.load_pretrained("fashion-mnist")
    >>> images = d.sample(16, sampler="dpm++", steps=20, seed=0)   # doctest: +SKIP
    """
    return Diffusion.load(pretrained_path(name))


def training_info(name: str = "fashion-mnist") -> dict:
    """What ``training.json`` says about how the shipped model was trained ({} if absent)."""
    p = os.path.join(pretrained_path(name), "training.json")
    if not os.path.isfile(p):
        return {}
    return read_json_object(p, "training_info")


def sample(n: int = 16, model=None, *, label=None, **kwargs):
    """Generate n images: ``ddpm.sample(16)`` (the shipped Fashion-MNIST model).

    Parameters
    ----------
    n : int
        Number of images.
    model : ddpm.Diffusion, path or name, optional
        A Diffusion, a folder written by :meth:`ddpm.Diffusion.save` (or
        diffusers' ``DDPMPipeline.save_pretrained``), or the name of a shipped
        model.  Default: the shipped ``"fashion-mnist"`` model
        (:func:`ddpm.load_pretrained`), offline.
    label : int, str or sequence, optional
        For a class-conditional model: the class to draw (``label="sneaker"``, an
        index, ``"random"``, or one per image); the same as ``labels=``.  The
        default for a class-conditional model (the shipped one is) is
        ``"random"``: each image's class drawn uniformly from ``seed``, so every
        class appears equally often on average.  ``labels=None`` or
        ``guidance_scale=0`` samples unconditionally (the null label).
    **kwargs
        ``steps``, ``sampler`` ("ddpm", "ddim", "dpm++"), ``eta``, ``seed``,
        ``labels``, ``guidance_scale``, ``output_type`` (None, "np" or "pil", as on
        :meth:`ddpm.Diffusion.sample`) and every option of :func:`sample_diffusion`.
        Unlike ``Diffusion.sample``,
        the sampler defaults to ``"dpm++"`` with 20 steps here, with x0_hat
        clipped to [-1, 1] (``clip_x0=True``; diffusers' DPM-Solver++ does not
        clip): a first call should take seconds, not the 1000 network calls of
        ancestral DDPM, and the shipped model needs the clipping (measured by
        benchmarks/quality.py on 2000 samples: FID_fm 0.658 clipped, 1.678 not;
        50-step DDIM 1.582; the previous, unconditional eps model "fashion-mnist-eps").

        For a class-conditional model the default guidance is ``GUIDANCE_SCALE`` =
        2 on the steps whose t is in ``GUIDANCE_INTERVAL`` = (80, 580) only, the
        labels alone elsewhere (a guidance interval, Kynkaanniemi et al. 2024).
        Chosen by measurement on the shipped model (benchmarks/quality.py, 1,000
        samples per setting, balanced labels; FID_fm floor 0.225 = 1,000 real
        training images), asked class recognised / FID_fm / seconds:

        ================================  ======  =====  ====
        w = 1 (labels alone)              88.3%   0.189  121
        w = 1.5, every step               95.5%   0.280  213
        w = 2, every step                 98.4%   0.455  209
        w = 3, every step                 99.4%   0.779  219
        w = 2, 80 <= t <= 580 (default)   96.4%   0.248  176
        w = 3, 80 <= t <= 580             99.0%   0.415  174
        ================================  ======  =====  ====

        The default is the setting with the best FID_fm among those that give the
        asked class at least 95% of the time (2.4 standard errors above it), and it
        is faster than guiding every step.  Pass ``guidance_scale`` to guide every
        step at your own w (diffusers' meaning; add ``guidance_interval`` to limit
        it); ``guidance_scale=1`` gives the most diverse samples and the best FID_fm.

    Returns
    -------
    ndarray float32 (n, C, H, W) in [0, 1] (``value_range=(-1, 1)`` for the
    model's space); diffusers' layouts with ``output_type="np"`` (float32
    (n, H, W, C) in [0, 1]) or ``"pil"`` (a list of PIL images); with
    ``return_trajectory`` also a :class:`Trajectory`.

    Examples
    --------
    >>> import ddpm
    >>> images = ddpm.sample(16, seed=0)                     # doctest: +SKIP
    >>> ddpm.save_grid(images, "grid.png", scale=2)          # doctest: +SKIP
    """
    if model is None:
        model = load_pretrained("fashion-mnist")
    elif isinstance(model, str) and model in _MODELS and not os.path.exists(model):
        model = load_pretrained(model)
    if isinstance(model, (str, os.PathLike)):
        model = Diffusion.load(model)
    elif not isinstance(model, Diffusion):
        hint = " (wrap it: ddpm.Diffusion(unet, schedule))" if isinstance(model, UNet) else ""
        raise TypeError(f"sample(): model must be a ddpm.Diffusion, a folder path or a shipped "
                        f"model name, got {type(model).__name__}{hint}")
    if label is not None:
        if "labels" in kwargs:
            raise TypeError("sample(): pass label= or labels=, not both")
        kwargs["labels"] = label
    if model.model.num_class_embeds is not None:
        kwargs.setdefault("labels", "random")
        if "guidance_scale" not in kwargs:      # the default guidance: w on an interval
            kwargs["guidance_scale"] = GUIDANCE_SCALE
            kwargs.setdefault("guidance_interval", GUIDANCE_INTERVAL)
    kwargs.setdefault("sampler", "dpm++")
    if kwargs["sampler"] == "dpm++":
        kwargs.setdefault("steps", 20)
        if not kwargs.get("dynamic_threshold"):
            kwargs.setdefault("clip_x0", True)
    output_type = kwargs.pop("output_type", None)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"sample(): output_type must be None, 'np' or 'pil', got {output_type!r}")
    out = sample_diffusion(model, n, **kwargs)
    vr = kwargs.get("value_range", (0, 1))
    if isinstance(out, tuple):
        return convert_output(out[0], output_type, "sample", vr), out[1]
    return convert_output(out, output_type, "sample", vr)
