"""Models that ship inside the package: ``ddpm.load_pretrained("fashion-mnist")``.

The files live in ``ddpm/weights/<name>/`` as a diffusers ``DDPMPipeline`` folder
(``model_index.json``, ``unet/`` with float16 safetensors, ``scheduler/``), so they
load offline, without pickle, and diffusers reads them too.  ``training.json``
beside them records the command that trained the model, how long it took, and
on what machine, so anyone can reproduce it.
"""
from __future__ import annotations

import json
import os

__all__ = ["load_pretrained", "pretrained_models", "pretrained_path"]

_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# name -> (folder under ddpm/weights, one-line description)
_MODELS = {
    "fashion-mnist": ("fashion-mnist",
                      "28x28 grayscale Fashion-MNIST, eps-prediction, linear schedule, T=1000"),
}


def pretrained_models() -> dict:
    """{name: description} of the models this installation ships."""
    return {name: desc for name, (_, desc) in _MODELS.items()}


def pretrained_path(name: str = "fashion-mnist") -> str:
    """The folder holding a shipped model (OSError if the files are missing)."""
    if not isinstance(name, str):
        raise TypeError(f"load_pretrained(): name must be a str, got {type(name).__name__}")
    if name not in _MODELS:
        raise ValueError(f"load_pretrained(): unknown model {name!r}; "
                         f"available: {', '.join(sorted(_MODELS))}")
    path = os.path.join(_WEIGHTS, _MODELS[name][0])
    if not os.path.isfile(os.path.join(path, "unet", "diffusion_pytorch_model.safetensors")):
        raise OSError(f"load_pretrained(): the {name!r} weights are missing from {path} "
                      "(a broken install? reinstall ddpm)")
    return path


def load_pretrained(name: str = "fashion-mnist"):
    """The shipped :class:`ddpm.Diffusion` called ``name`` (a fresh copy each call).

    >>> import ddpm
    >>> d = ddpm.load_pretrained("fashion-mnist")
    >>> images = d.sample(16, sampler="dpm++", steps=20, seed=0)   # doctest: +SKIP
    """
    from .diffusion import Diffusion
    return Diffusion.load(pretrained_path(name))


def training_info(name: str = "fashion-mnist") -> dict:
    """What ``training.json`` says about how the shipped model was trained ({} if absent)."""
    p = os.path.join(pretrained_path(name), "training.json")
    if not os.path.isfile(p):
        return {}
    with open(p, encoding="utf-8") as f:
        return json.load(f)
