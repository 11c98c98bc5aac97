"""The models that ship inside the package: their names and folders, and how a
diffusers-style ``from_pretrained(name_or_path)`` resolves to a local folder (offline:
a folder first, then a shipped name; never the Hub).

Imports nothing from ddpm, so ``model.py`` and ``diffusion.py`` (whose
``from_pretrained`` use it) and ``pretrained.py`` (which loads the models) all can.
"""
from __future__ import annotations

import os

__all__ = ["pretrained_models", "pretrained_path"]

_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")

# name -> (folder under ddpm/weights, one-line description)
_MODELS = {
    "fashion-mnist": ("fashion-mnist",
                      "28x28 grayscale Fashion-MNIST, class-conditional (10 classes and the "
                      "null label, classifier-free guidance), v-prediction, linear schedule, "
                      "T=1000, 3.9M parameters: ddpm.sample()'s model"),
    "fashion-mnist-eps": ("fashion-mnist-eps",
                          "28x28 grayscale Fashion-MNIST, unconditional, eps-prediction (the "
                          "course's setting), linear schedule, T=1000, 1.0M parameters: the "
                          "lesson notebooks' model"),
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


def _resolve_pretrained(name_or_path, cls_name: str, kwargs: dict) -> str:
    """The local folder ``from_pretrained(name_or_path, **kwargs)`` reads, as diffusers
    resolves it but offline: an existing folder first, then a shipped model's name."""
    F = f"{cls_name}.from_pretrained"
    kwargs = dict(kwargs)
    kwargs.pop("local_files_only", None)          # always local here
    if kwargs.pop("use_safetensors", None) is False:
        raise ValueError(f"{F}(): use_safetensors=False (pickle weights) is not supported")
    if kwargs:
        raise TypeError(f"{F}(): unsupported argument(s) {sorted(kwargs)} (ddpm reads local "
                        f"folders and shipped models only)")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{F}(): pretrained_model_name_or_path must be a str or path, "
                        f"got {type(name_or_path).__name__}")
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if path in _MODELS:
        return pretrained_path(path)
    raise OSError(f"{F}(): {path!r} is neither a local folder nor a model shipped with ddpm "
                  f"({', '.join(sorted(_MODELS))}). ddpm never downloads: fetch a Hub model "
                  f"with diffusers (DDPMPipeline.from_pretrained(...).save_pretrained(dir)) and "
                  f"pass the folder")


def _save_dtype(func: str, safe_serialization, variant, push_to_hub) -> str:
    """The dtype save() takes for save_pretrained's (safe_serialization, variant, push_to_hub)."""
    if push_to_hub:
        raise ValueError(f"{func}(): push_to_hub is not supported (ddpm works offline); "
                         f"upload the folder with huggingface_hub")
    if not safe_serialization:
        raise ValueError(f"{func}(): safe_serialization=False (pickle) is not supported")
    if variant not in (None, "fp16"):
        raise ValueError(f"{func}(): variant must be None or 'fp16', got {variant!r}")
    return "float16" if variant == "fp16" else "float32"
