"""Continue a ddpm training run in PyTorch, on any number of GPUs (diffusers + accelerate).

    ddpm train --steps 400 --out run                                # on the laptop
    ddpm export --to diffusers run/checkpoint.safetensors run-gpu   # the hand-off
    accelerate launch examples/continue_in_pytorch.py run-gpu --data fashion-mnist --steps 20000

It loads what ``ddpm export --to diffusers`` wrote (the layout of diffusers'
unconditional training example: ``checkpoint-<step>/`` with ``unet/``,
``unet_ema/``, ``optimizer.bin`` and ``scheduler.bin``) through accelerate's
``load_state`` with the same save/load hooks as that example, and then trains
with ddpm's update rules: the same loss (eps, x0 or v target, plain MSE), the
gradient norm clipped to ddpm's ``grad_clip``, AdamW with ddpm's moments and
hyperparameters, ddpm's warm-up, the EMA rule of diffusers' EMAModel without
warm-up (ddpm's), so one step here equals one ``ddpm.Trainer`` step from the
same state (tests/test_export.py checks it to 1e-4).  Checkpoints go back to the
same folder as ``checkpoint-<step>/`` (``accelerator.save_state``), and the EMA
pipeline to the folder itself (``DDPMPipeline.save_pretrained``), so
``ddpm.Diffusion.load(folder)`` samples it on the laptop again.

Data: ``--data`` is a ``.npy`` file of float images (N, C, H, W) in [-1, 1], a
folder of PNG/JPEG images, or ``fashion-mnist`` (these two through
``ddpm.datasets`` when ddpm is installed).  Class labels: ``training_step`` takes
``class_labels`` and passes them to the U-Net (for a class-conditional model).
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel


def _register_hooks(accelerator, run):
    """The example's hooks: models as diffusers folders (unet/, unet_ema/), not pickles."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            run["ema"].save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()

    def load_hook(models, input_dir):
        loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DModel)
        run["ema"].load_state_dict(loaded.state_dict())
        run["ema"].to(accelerator.device)
        while models:
            model = models.pop()
            loaded = UNet2DModel.from_pretrained(input_dir, subfolder="unet")
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def ddpm_lr_factor(step, settings, warm):
    """lr(step) / lr under ddpm's rule for 1-based ``step``: a linear warm-up over
    ``warm`` steps from the current cycle's start (``schedule_start``; a warm
    restart moves it), then 1 (``constant``) or a cosine decay to 0 at
    ``total_steps`` (``cosine``).  Written out here so that this script needs
    no ddpm; tests/test_export.py holds it to ddpm's ``Trainer.lr_at``."""
    k = step - settings.get("schedule_start", 0)
    if warm and k <= warm:
        return k / warm
    if settings.get("lr_schedule", "constant") == "cosine":
        start = settings.get("schedule_start", 0)
        span = max(1, settings["total_steps"] - start - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - warm) / span)))
    return 1.0


def load_run(folder, accelerator=None, dataloader=None):
    """Everything needed to continue: a dict with ``unet``, ``ema``, ``optimizer``,
    ``lr_scheduler``, ``noise_scheduler``, ``settings``, ``step``, ``accelerator``
    (and ``dataloader``, prepared, when one is given)."""
    with open(os.path.join(folder, "ddpm_training.json"), encoding="utf-8") as f:
        info = json.load(f)
    s = info["settings"]
    if s.get("min_snr_gamma") is not None:
        raise ValueError("this example trains with plain MSE; the run used min_snr_gamma")
    accelerator = accelerator or Accelerator()
    unet = UNet2DModel.from_config(UNet2DModel.load_config(folder, subfolder="unet"))
    ema = EMAModel(unet.parameters(), decay=s["ema_decay"] or 0.0, use_ema_warmup=False,
                   model_cls=UNet2DModel, model_config=unet.config)
    opt = torch.optim.AdamW(unet.parameters(), lr=s["lr"], betas=tuple(s["betas"]), eps=s["eps"],
                            weight_decay=s["weight_decay"])
    # ddpm's learning-rate rule (ddpm.training.learning_rate) as a factor of lr;
    # LambdaLR's epoch e is ddpm's 1-based step e + 1
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: ddpm_lr_factor(e + 1, s, info["lr_warmup_steps"]))
    run = {"ema": ema, "settings": s, "info": info}
    _register_hooks(accelerator, run)
    if dataloader is not None:
        unet, opt, dataloader, sched = accelerator.prepare(unet, opt, dataloader, sched)
        run["dataloader"] = dataloader
    else:
        unet, opt, sched = accelerator.prepare(unet, opt, sched)
    accelerator.load_state(os.path.join(folder, info["checkpoint"]))
    noise = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    run.update(unet=unet, optimizer=opt, lr_scheduler=sched, noise_scheduler=noise,
               step=info["step"], accelerator=accelerator, folder=folder)
    return run


def training_step(run, clean_images, timesteps=None, noise=None, class_labels=None) -> float:
    """One optimizer step on a batch; ``timesteps`` are diffusers' 0-based (ddpm's t - 1)."""
    acc, unet, s = run["accelerator"], run["unet"], run["settings"]
    sch = run["noise_scheduler"]
    if noise is None:
        noise = torch.randn_like(clean_images)
    if timesteps is None:
        timesteps = torch.randint(0, sch.config.num_train_timesteps, (clean_images.shape[0],),
                                  device=clean_images.device)
    noisy = sch.add_noise(clean_images, noise, timesteps)
    with acc.accumulate(unet):
        out = unet(noisy, timesteps, class_labels=class_labels).sample
        target = {"eps": noise, "x0": clean_images}.get(run["info"]["objective"])
        if target is None:                                   # v = sqrt(ab) eps - sqrt(1-ab) x0
            target = sch.get_velocity(clean_images, noise, timesteps)
        loss = F.mse_loss(out.float(), target.float())
        acc.backward(loss)
        if acc.sync_gradients and s["grad_clip"] is not None:
            acc.clip_grad_norm_(unet.parameters(), s["grad_clip"])
        run["optimizer"].step()
        run["lr_scheduler"].step()
        run["optimizer"].zero_grad()
    if acc.sync_gradients:
        run["ema"].step(unet.parameters())
        run["step"] += 1
    return float(loss.detach())


def _images(spec):
    if spec.endswith(".npy"):
        return np.load(spec).astype(np.float32)
    from ddpm import datasets                               # ddpm's loaders, when installed
    if spec in ("fashion-mnist", "mnist"):
        return getattr(datasets, spec.replace("-", "_"))("train")[0]
    return datasets.image_folder(spec)[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="what ddpm export --to diffusers wrote")
    p.add_argument("--data", required=True, help=".npy, a folder of images, or fashion-mnist")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps to add")
    p.add_argument("--batch-size", type=int, default=None, help="per process (default: ddpm's)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    args = p.parse_args(argv)
    acc = Accelerator()
    with open(os.path.join(args.folder, "ddpm_training.json"), encoding="utf-8") as f:
        s = json.load(f)["settings"]
    x = torch.from_numpy(_images(args.data))
    dl = torch.utils.data.DataLoader(x, batch_size=args.batch_size or s["batch_size"],
                                     shuffle=True, drop_last=True)
    run = load_run(args.folder, acc, dl)
    acc.print(f"resumed at step {run['step']} from {args.folder} on {acc.num_processes} "
              f"process(es), {acc.device}")
    end = run["step"] + args.steps
    while run["step"] < end:
        for batch in run["dataloader"]:
            loss = training_step(run, batch)
            if run["step"] % 100 == 0:
                acc.print(f"step {run['step']}: loss {loss:.4f}")
            if run["step"] % args.checkpoint_every == 0 or run["step"] == end:
                acc.save_state(os.path.join(args.folder, f"checkpoint-{run['step']}"))
            if run["step"] >= end:
                break
    if acc.is_main_process:
        unet = acc.unwrap_model(run["unet"])
        run["ema"].store(unet.parameters())
        run["ema"].copy_to(unet.parameters())
        DDPMPipeline(unet=unet, scheduler=run["noise_scheduler"]).save_pretrained(args.folder)
        run["ema"].restore(unet.parameters())
        info = dict(run["info"], step=run["step"], checkpoint=f"checkpoint-{run['step']}",
                    ema_updates=run["ema"].optimization_step)
        with open(os.path.join(args.folder, "ddpm_training.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        acc.print(f"wrote {args.folder} (EMA pipeline) at step {run['step']}; "
                  f"ddpm.Diffusion.load({args.folder!r}) samples it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
