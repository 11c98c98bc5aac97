"""The hand-off to GPUs: a ddpm training checkpoint as diffusers' training state.

:func:`export_diffusers` turns a :meth:`ddpm.Trainer.save` file into a folder laid
out as the output directory of diffusers' unconditional training example
(``examples/unconditional_image_generation/train_unconditional.py``, run with
accelerate) after ``step`` steps::

    OUT/model_index.json, OUT/unet/, OUT/scheduler/   the EMA pipeline (DDPMPipeline)
    OUT/checkpoint-<step>/unet/                       the trained weights (UNet2DModel)
    OUT/checkpoint-<step>/unet_ema/                   the EMA weights + EMAModel state
    OUT/checkpoint-<step>/optimizer.bin               torch AdamW state_dict (Adam moments)
    OUT/checkpoint-<step>/scheduler.bin               LambdaLR state_dict (the step count)
    OUT/ddpm_training.json                            ddpm's settings, to continue alike

``accelerator.load_state(OUT/checkpoint-<step>)`` with the example's save/load hooks
reads it (``--resume_from_checkpoint latest``), and so does
``examples/continue_in_pytorch.py``, which continues with ddpm's exact update
rules.  optimizer.bin and scheduler.bin are torch files, so this needs torch
(``pip install torch``); the weights are safetensors.
"""
from __future__ import annotations

import json
import os

from ._io import VERSION, atomic_write, write_text
from .training import _read_checkpoint, learning_rate

__all__ = ["export_diffusers"]


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("export --to diffusers writes torch's optimizer and scheduler files: "
                          "pip install torch (or 'ddpm[reference]' with torch)") from exc
    return torch


def export_diffusers(checkpoint, out) -> str:
    """Write a ddpm checkpoint as diffusers' unconditional training example resumes it.

    Parameters
    ----------
    checkpoint : str or os.PathLike
        A file written by :meth:`ddpm.Trainer.save` (``ddpm train`` writes
        ``<out>/checkpoint.safetensors``).
    out : str or os.PathLike
        The folder to write (created; files in it are replaced atomically).

    Returns
    -------
    str, the ``checkpoint-<step>`` folder written under ``out``.

    Notes
    -----
    The AdamW state keeps ddpm's moments (``exp_avg``, ``exp_avg_sq``) and
    step per parameter, in ``UNet2DModel.parameters()`` order, and ddpm's lr,
    betas, eps and weight decay; ``unet_ema/config.json`` holds the EMAModel
    state with ddpm's EMA rule (``use_ema_warmup=False``: decay
    min((1 + k)/(10 + k), ema_decay) at update k).  The learning rate of each
    step is ddpm's (:func:`ddpm.training.learning_rate`: warm-up, then constant
    or cosine, from the current cycle's start); ``ddpm_training.json`` holds the
    settings, and examples/continue_in_pytorch.py rebuilds the same rule as a
    ``LambdaLR`` (diffusers' ``constant_with_warmup`` would lag one step in
    warm-up and knows no warm restart).

    Examples
    --------
    >>> from ddpm.export import export_diffusers
    >>> export_diffusers("run/checkpoint.safetensors", "run-diffusers")  # doctest: +SKIP
    'run-diffusers/checkpoint-400'
    """
    F = "export_diffusers"
    for name, v in (("checkpoint", checkpoint), ("out", out)):
        if not isinstance(v, (str, os.PathLike)):
            raise TypeError(f"{F}(): {name} must be a path, got {type(v).__name__}")
    torch = _torch()
    ck = _read_checkpoint(checkpoint, F)
    model, schedule, tensors, settings = ck["model"], ck["schedule"], ck["tensors"], ck["settings"]
    step, objective = ck["step"], ck["objective"]
    out = os.fspath(out)
    ckdir = os.path.join(out, f"checkpoint-{step}")
    os.makedirs(ckdir, exist_ok=True)

    from .diffusion import Diffusion                     # (imports training's modules)
    from .model import UNet
    ema = tensors.get("ema")
    model.params[:] = tensors["params"]
    model.save(os.path.join(ckdir, "unet"))
    ema_model = UNet.from_config(model.config)
    ema_model.params[:] = ema if ema is not None else tensors["params"]
    ema_dir = ema_model.save(os.path.join(ckdir, "unet_ema"))
    cfg_path = os.path.join(ema_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update({"decay": settings["ema_decay"] if settings["ema_decay"] is not None else 0.0,
                "min_decay": 0.0, "optimization_step": ck["ema_updates"],
                "update_after_step": 0, "use_ema_warmup": False, "inv_gamma": 1.0,
                "power": 2 / 3})
    atomic_write(cfg_path, lambda tmp: write_text(tmp, json.dumps(cfg, indent=2, sort_keys=True)))
    Diffusion(ema_model, schedule, objective=objective).save(out)   # the pipeline, EMA weights

    lr, warm = float(settings["lr"]), int(settings["warmup_steps"])

    def lr_at(s):                                          # Trainer.lr_at, 1-based step s
        return learning_rate(s, lr, warm, settings.get("lr_schedule", "constant"),
                             settings.get("total_steps"), settings.get("schedule_start", 0))

    state = {}
    m, v = tensors["adam_m"], tensors["adam_v"]
    for i, (name, shape, off, size) in enumerate(model._tensors):
        state[i] = {"step": torch.tensor(float(step)),
                    "exp_avg": torch.from_numpy(m[off:off + size].reshape(shape).copy()),
                    "exp_avg_sq": torch.from_numpy(v[off:off + size].reshape(shape).copy())}
    group = {"lr": lr_at(step + 1), "initial_lr": lr, "betas": tuple(settings["betas"]),
             "eps": float(settings["eps"]), "weight_decay": float(settings["weight_decay"]),
             "decoupled_weight_decay": bool(settings["decoupled_weight_decay"]),
             "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
             "differentiable": False, "fused": None, "params": list(range(len(state)))}
    opt = {"state": state if step else {}, "param_groups": [group]}
    sched = {"base_lrs": [lr], "last_epoch": step, "_step_count": step + 1,
             "_get_lr_called_within_step": False, "_last_lr": [lr_at(step + 1)],
             "_is_initial": False, "lr_lambdas": [None]}
    atomic_write(os.path.join(ckdir, "optimizer.bin"), lambda tmp: torch.save(opt, tmp))
    atomic_write(os.path.join(ckdir, "scheduler.bin"), lambda tmp: torch.save(sched, tmp))

    info = {"_ddpm_version": VERSION, "step": step, "ema_updates": ck["ema_updates"],
            "objective": objective, "settings": settings, "checkpoint": f"checkpoint-{step}",
            "schedule": {"kind": schedule.kind, "timesteps": schedule.T},
            "lr_warmup_steps": warm, "image_shape": list(Diffusion(model, schedule).image_shape)}
    atomic_write(os.path.join(out, "ddpm_training.json"),
                 lambda tmp: write_text(tmp, json.dumps(info, indent=2, sort_keys=True)))
    return ckdir
