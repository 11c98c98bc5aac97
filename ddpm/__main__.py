"""Command line: ``ddpm <command>`` (or ``python -m ddpm <command>``).

Commands
--------
demo     print a schedule summary and write a PNG of the forward process on a
         Fashion-MNIST image (or the course's T-shirt when the data is absent).
train    train a DDPM on Fashion-MNIST, MNIST or a folder of your own PNG/JPEG
         images (grayscale or RGB); checkpoints, the EMA model, the loss
         (loss.csv, loss.png) and a grid of samples go to --out.
sample   generate images from a saved model (Diffusion.save folder) into a PNG
         grid, and with --animate a GIF of the reverse process; --label sneaker
         --guidance 3 for a class-conditional model.
inpaint  fill the black part of --mask in --image (RePaint).
img2img  noise --image part of the way and denoise it again (SDEdit).
export   turn a training checkpoint into what diffusers' unconditional training
         example resumes from (--to diffusers), to go on training on GPUs.
info     versions, threads and where the data was found.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo(args) -> int:
    import ddpm
    from ddpm import datasets

    sched = ddpm.NoiseSchedule(args.schedule, timesteps=args.timesteps)
    print(sched.summary())
    try:
        x, y = datasets.fashion_mnist("test", path=args.data, download=not args.offline)
        image = x[args.index]
        name = f"Fashion-MNIST test image {args.index} ({datasets.FASHION_MNIST_CLASSES[y[args.index]]})"
    except (OSError, ValueError) as exc:
        if args.data is not None:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"note: {exc}\n      using the procedural T-shirt instead", file=sys.stderr)
        image = datasets.tshirt()
        name = "the procedural T-shirt"
    T = sched.T
    ts = sorted({0, T // 10, T // 4, T // 2, 3 * T // 4, T})
    frames = ddpm.visuals.noise_strip(sched, image, ts, seed=args.seed)
    ddpm.save_grid(frames, args.out, nrow=len(ts), value_range=(-1, 1), scale=4)
    print(f"\nforward process of {name} at t = {ts} ({args.schedule}, seed {args.seed})")
    print(f"wrote {args.out}")
    return 0


def _train(args) -> int:
    import os
    import time

    import ddpm

    if args.threads:
        ddpm.set_num_threads(args.threads)
    try:
        image_channels, widths = _channels(args.channels, args.block_channels)
        x, y, names = _training_data(args, image_channels)
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    ck = os.path.join(args.out, "checkpoint.safetensors")
    try:
        trainer = _trainer(args, x, y if args.conditional else None, names, widths, ck)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{trainer.diffusion.model}\n{len(x)} images of {x.shape[1]}x{x.shape[2]}x{x.shape[3]}, "
          f"batch {trainer.batch_size}, "
          f"{trainer.steps_per_epoch} steps per epoch, {ddpm.get_num_threads()} threads")
    total = args.steps if args.steps is not None else int(round(args.epochs * trainer.steps_per_epoch))
    t0 = time.perf_counter()
    done0 = trainer.step
    while trainer.step - done0 < total:
        chunk = min(args.checkpoint_every, total - (trainer.step - done0))
        trainer.fit(steps=chunk)
        trainer.save(ck)
        if trainer._stop:          # Ctrl-C: checkpoint written, stop here
            break
    secs = time.perf_counter() - t0
    steps = trainer.step - done0
    if steps:
        print(f"trained {steps} steps in {secs:.0f} s ({steps * trainer.batch_size / secs:.1f} img/s); "
              f"last loss {trainer.history['loss'][-1]:.4f}")
    final = trainer.ema_diffusion()
    final.save(os.path.join(args.out, "model"))
    print(f"wrote {ck} and {os.path.join(args.out, 'model')} (EMA weights, a diffusers DDPMPipeline folder)")
    _loss_csv(trainer.history, os.path.join(args.out, "loss.csv"))
    _loss_curve(trainer.history, os.path.join(args.out, "loss.png"))
    if args.samples:
        kw, nrow, what = {}, None, ""
        K = final.model.num_class_embeds
        if K is not None:           # one row per class
            per = max(1, args.samples // (K - 1))
            kw = dict(labels=np.repeat(np.arange(K - 1), per), guidance_scale=args.guidance)
            nrow, what = per, f", one row per class, guidance {args.guidance:g}"
        n = len(kw["labels"]) if kw else args.samples
        images = final.sample(n, sampler="ddim", steps=args.sample_steps, seed=args.seed,
                              progress=not args.no_progress, **kw)
        ddpm.save_grid(images, os.path.join(args.out, "samples.png"), scale=3, nrow=nrow)
        print(f"wrote {os.path.join(args.out, 'samples.png')} ({n} samples, "
              f"DDIM {args.sample_steps} steps{what})")
    return 0


def _trainer(args, x, y, names, widths, ck):
    """A Trainer resumed from ck (--resume) or new, for images x (and labels y with
    --conditional, classes named names)."""
    import os

    import ddpm

    total = args.steps
    if total is None:
        total = int(round(args.epochs * max(1, len(x) // min(args.batch_size, len(x)))))
    if args.resume and os.path.exists(ck):
        trainer = ddpm.Trainer.resume(ck, x, labels=y, progress=not args.no_progress)
        print(f"resumed from {ck} at step {trainer.step}")
        ends = trainer.total_steps
        if trainer.lr_schedule == "cosine" and trainer.step + total > ends:
            # past the end of the cosine the rate is 0: a new cycle, so the steps learn
            trainer.extend(total, lr=args.lr)
            print(f"the cosine schedule ended at step {ends}: a new cycle (warm restart) of "
                  f"{total} steps, peak lr {trainer.lr:g}, warm-up {trainer.warmup_steps}")
        elif args.lr is not None and args.lr != trainer.lr:
            print(f"note: --lr is ignored on --resume within the run's schedule "
                  f"(lr {trainer.lr:g}, ends at step {ends})", file=sys.stderr)
        return trainer
    L = len(widths)
    attn = not args.no_attention
    cond = {}
    if y is not None:
        cond = dict(num_class_embeds=len(names) + 1, class_names=list(names))
    model = ddpm.UNet(seed=args.seed, block_out_channels=widths, sample_size=x.shape[2],
                      in_channels=x.shape[1], out_channels=x.shape[1],
                      down_block_types=("DownBlock2D",) * (L - 1)
                      + (("AttnDownBlock2D",) if attn else ("DownBlock2D",)),
                      up_block_types=(("AttnUpBlock2D",) if attn else ("UpBlock2D",))
                      + ("UpBlock2D",) * (L - 1), add_attention=attn,
                      norm_num_groups=args.groups, num_train_timesteps=args.timesteps, **cond)
    d = ddpm.Diffusion(model, ddpm.NoiseSchedule(args.schedule, timesteps=args.timesteps),
                       objective=args.objective)
    return ddpm.Trainer(d, x, labels=y, p_uncond=args.p_uncond, batch_size=args.batch_size,
                        lr=2e-4 if args.lr is None else args.lr, seed=args.seed, ema_decay=args.ema_decay,
                        warmup_steps=args.warmup, lr_schedule=args.lr_schedule,
                        total_steps=total if args.lr_schedule == "cosine" else None,
                        min_snr_gamma=args.min_snr_gamma, flip=args.flip,
                        progress=not args.no_progress)


def _channels(channels: str, block_channels: str | None):
    """(image channels or None, block_out_channels) from --channels and --block-channels.

    ``--channels 1|3`` is the images' channels; a comma list there is the
    older spelling of ``--block-channels`` (the U-Net's widths), still accepted.
    """
    image_channels = None
    if channels is not None and "," not in channels:
        if channels not in ("1", "3"):
            raise ValueError(f"--channels is the images' channels, 1 or 3 (got {channels}); "
                             f"the U-Net's widths go to --block-channels, e.g. 32,64,128")
        image_channels = int(channels)
    elif channels is not None:
        if block_channels is not None:
            raise ValueError("give the U-Net's widths once: --block-channels "
                             "(--channels 32,64,128 is its older spelling)")
        block_channels = channels
    try:
        widths = tuple(int(c) for c in (block_channels or "32,64,128").split(","))
    except ValueError:
        raise ValueError(f"--block-channels must be comma-separated ints, got "
                         f"{block_channels!r}") from None
    return image_channels, widths


def _training_data(args, image_channels):
    """(images (N, C, S, S) in [-1, 1], labels (N,), class names) that --data names."""
    import os

    from ddpm import datasets

    if args.data in ("fashion-mnist", "mnist"):
        if image_channels not in (None, 1) or args.image_size not in (None, 28):
            raise ValueError(f"{args.data} is 28x28 grayscale: --image-size and --channels "
                             f"apply to a folder of your own images (--data DIR)")
        loader = {"fashion-mnist": datasets.fashion_mnist, "mnist": datasets.mnist}[args.data]
        names = {"fashion-mnist": datasets.FASHION_MNIST_CLASSES,
                 "mnist": datasets.MNIST_CLASSES}[args.data]
        x, y = loader("train", path=args.data_path)
        if args.limit:
            x, y = x[:args.limit], y[:args.limit]
        return x, y.astype(np.int64), names
    if not os.path.isdir(args.data):
        raise ValueError(f"--data must be fashion-mnist, mnist or a folder of PNG/JPEG images; "
                         f"{args.data!r} is neither")
    x, y = datasets.image_folder(args.data, image_size=args.image_size or 32,
                                 channels=image_channels or 3, limit=args.limit)
    print(f"read {len(x)} images from {args.data}")
    root = os.path.abspath(args.data)
    names = sorted({os.path.relpath(os.path.dirname(p), root).split(os.sep)[0]
                    for p in _folder_files(root)})
    names = [n if n not in ("", ".") else "(top)" for n in names]
    if args.conditional and len(names) < 2:
        raise ValueError("--conditional needs images in at least two subfolders (one per class)")
    return x, y, names


def _folder_files(root):
    from ddpm.datasets import _image_files
    from pathlib import Path
    return [str(p) for p in _image_files(Path(root))]


def _loss_csv(history, path):
    from ddpm._io import atomic_write, write_text

    rows = ["step,loss,grad_norm,lr"]
    rows += [f"{s},{l!r},{g!r},{r!r}" for s, l, g, r in
             zip(history["step"], history["loss"], history["grad_norm"], history["lr"])]
    atomic_write(path, lambda tmp: write_text(tmp, "\n".join(rows) + "\n"))
    print(f"wrote {path} ({len(rows) - 1} steps)")


def _loss_curve(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no loss.png: it needs matplotlib, pip install 'ddpm[notebooks]'; "
              "loss.csv has the numbers)")
        return
    loss = np.asarray(history["loss"])
    if loss.size == 0:
        return
    k = max(1, loss.size // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["step"], loss, alpha=0.3, label="per step")
    ax.plot(np.asarray(history["step"])[k - 1:], smooth, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE loss")
    ax.set_yscale("log")
    ax.set_title("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def _sample(args) -> int:
    import ddpm

    try:
        if args.model in ddpm.pretrained_models() and not __import__("os").path.exists(args.model):
            model = ddpm.load_pretrained(args.model)
        else:
            model = ddpm.Diffusion.load(args.model)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.threads:
        ddpm.set_num_threads(args.threads)
    kw = {}
    if args.eta:
        kw["eta"] = args.eta
    steps = args.steps or min({"ddim": 50, "dpm++": 20}.get(args.sampler, model.T), model.T)
    if args.animate:
        if not args.animate.lower().endswith(".gif"):
            print(f"error: --animate must name a .gif file, got {args.animate!r}", file=sys.stderr)
            return 1
        kw["return_trajectory"] = max(1, -(-steps // 50))     # at most about 50 frames
    if args.label is not None:
        kw["labels"] = _label_arg(args.label)
    if args.guidance is not None:
        kw["guidance_scale"] = args.guidance
    if args.guidance_interval is not None:
        try:
            lo, hi = (int(v) for v in args.guidance_interval.split(","))
        except ValueError:
            print(f"error: --guidance-interval must be two lesson times lo,hi (e.g. 200,700), "
                  f"got {args.guidance_interval!r}", file=sys.stderr)
            return 1
        kw["guidance_interval"] = (lo, hi)
    try:
        out = ddpm.sample(args.n, model=model, steps=args.steps, sampler=args.sampler,
                          seed=args.seed, timestep_spacing=args.spacing,
                          progress=not args.no_progress, **kw)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    images = out[0] if args.animate else out
    ddpm.save_grid(images, args.out, scale=args.scale)
    print(f"wrote {args.out}: {args.n} images, {args.sampler} {steps} steps, seed {args.seed}")
    if args.animate:
        ddpm.save_animation(out[1], args.animate, scale=args.scale)
        print(f"wrote {args.animate}: {len(out[1])} frames of the reverse process "
              f"(x_t left, x0_hat right), looping")
    return 0


def _label_arg(text):
    """--label: a class name, an index, "random", or a comma list of them."""
    parts = [p.strip() for p in text.split(",")] if "," in text else [text]
    parts = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return parts if len(parts) > 1 else parts[0]


def _load_model(name_or_path):
    import os

    import ddpm

    if name_or_path in ddpm.pretrained_models() and not os.path.exists(name_or_path):
        return ddpm.load_pretrained(name_or_path)
    return ddpm.Diffusion.load(name_or_path)


def _edit(args) -> int:
    """ddpm inpaint / ddpm img2img: a real image in, n completions out (one PNG grid)."""
    import ddpm
    from ddpm import datasets

    try:
        d = _load_model(args.model)
        if args.threads:
            ddpm.set_num_threads(args.threads)
        C, S = d.image_shape[0], d.image_shape[1]
        x = datasets.load_image(args.image, image_size=S, channels=C)[None]
        x = np.repeat(x, args.n, axis=0)
        kw = dict(seed=args.seed, progress=not args.no_progress, value_range=(-1, 1))
        if args.label is not None:
            kw["labels"] = _label_arg(args.label)
        if args.guidance is not None:
            kw["guidance_scale"] = args.guidance
        if args.command == "inpaint":
            # diffusers' RePaint convention: white (1) keeps the pixel, black (0) inpaints it
            m = datasets.load_image(args.mask, image_size=S, channels=1)[0]
            mask = (m >= 0.0).astype(np.float32)          # grey level >= 50 %: keep
            out = d.inpaint(x, mask, steps=args.steps, jump_length=args.jump_length,
                            jump_n_sample=args.jump_n_sample, **kw)
            shown = [x[:1], np.where(mask[None, None] == 1, x[:1], -1.0)]
        else:
            out = d.img2img(x, args.strength, steps=args.steps, sampler=args.sampler, **kw)
            shown = [x[:1]]
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    grid = np.concatenate(shown + [out]).astype(np.float32)
    ddpm.save_grid(grid, args.out, value_range=(-1, 1), scale=args.scale, nrow=len(grid))
    what = "the original, the masked input and" if args.command == "inpaint" else "the original and"
    print(f"wrote {args.out}: {what} {args.n} completions ({args.command}, seed {args.seed})")
    return 0


def _export(args) -> int:
    from ddpm.export import export_diffusers

    if args.to != "diffusers":
        print(f"error: --to must be diffusers, got {args.to!r}", file=sys.stderr)
        return 2
    try:
        ckdir = export_diffusers(args.checkpoint, args.out)
    except (OSError, ValueError, TypeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: the EMA pipeline, and {ckdir} (unet/, unet_ema/, optimizer.bin, "
          f"scheduler.bin)\n"
          f"continue on GPUs: accelerate launch examples/continue_in_pytorch.py {args.out} "
          f"--data <your data>\n"
          f"or with diffusers' train_unconditional.py: --output_dir {args.out} "
          f"--resume_from_checkpoint latest --use_ema --model_config_name_or_path "
          f"{args.out}/unet (see ddpm_training.json for the settings to repeat)")
    return 0


def _info(args) -> int:
    import ddpm
    from ddpm import datasets

    print(f"ddpm {ddpm.__version__}, numpy {np.__version__}, threads {ddpm.get_num_threads()}, "
          f"openmp {ddpm._core.has_openmp()}")
    for split in ("train", "test"):
        print(f"fashion-mnist {split}: {datasets.find_dataset('fashion-mnist', split)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ddpm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="schedule summary + forward-process PNG")
    d.add_argument("--schedule", default="cosine", choices=["linear", "cosine", "scaled_linear",
                                                             "sigmoid"])
    d.add_argument("--timesteps", type=int, default=1000)
    d.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    d.add_argument("--offline", action="store_true", help="never try to download")
    d.add_argument("--index", type=int, default=0, help="which test image")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="forward_process.png")
    d.set_defaults(func=_demo)
    tr = sub.add_parser("train", help="train a DDPM on Fashion-MNIST, MNIST or your own images")
    tr.add_argument("--data", default="fashion-mnist",
                    help="fashion-mnist, mnist, or a folder of PNG/JPEG images (read "
                         "recursively, centre-cropped and resized to --image-size)")
    tr.add_argument("--data-path", default=None, help="folder with the IDX files")
    tr.add_argument("--image-size", type=int, default=None,
                    help="side of the square images from a folder (default 32)")
    tr.add_argument("--out", default="run", help="output folder")
    g = tr.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--steps", type=int, default=None)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 2e-4; with --resume past the end of a "
                         "cosine schedule: the new cycle's peak, default the run's)")
    tr.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    tr.add_argument("--ema-decay", type=float, default=0.999)
    tr.add_argument("--schedule", default="linear", choices=["linear", "cosine", "scaled_linear", "sigmoid"])
    tr.add_argument("--timesteps", type=int, default=1000)
    tr.add_argument("--objective", default="eps", choices=["eps", "x0", "v"])
    tr.add_argument("--channels", default=None,
                    help="image channels of a folder: 3 RGB (default) or 1 grayscale")
    tr.add_argument("--block-channels", default=None,
                    help="the U-Net's block_out_channels, comma separated (default 32,64,128)")
    tr.add_argument("--groups", type=int, default=8, help="norm_num_groups")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--limit", type=int, default=None, help="use only the first N images")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    tr.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors")
    tr.add_argument("--samples", type=int, default=64, help="images in samples.png (0: none)")
    tr.add_argument("--sample-steps", type=int, default=50)
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument("--conditional", action="store_true",
                    help="class-conditional model (Fashion-MNIST and MNIST know their class "
                         "names; a folder's subfolders are its classes)")
    tr.add_argument("--p-uncond", type=float, default=0.1,
                    help="with --conditional: chance a label is dropped to the null label")
    tr.add_argument("--guidance", type=float, default=2.0,
                    help="with --conditional: the guidance scale of samples.png")
    tr.add_argument("--flip", action="store_true", help="random horizontal flips")
    tr.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"],
                    help="after warm-up: constant, or cosine decay to 0 at the last step")
    tr.add_argument("--min-snr-gamma", type=float, default=None,
                    help="min-SNR-gamma loss weighting (e.g. 5)")
    tr.add_argument("--no-attention", action="store_true",
                    help="no attention blocks (the deepest level has attention by default)")
    tr.set_defaults(func=_train)
    sp = sub.add_parser("sample", help="sample images from a saved model into a PNG grid")
    sp.add_argument("--model", default="fashion-mnist",
                    help="folder written by Diffusion.save (or DDPMPipeline.save_pretrained), "
                         "or a shipped model's name (default: fashion-mnist, shipped)")
    sp.add_argument("--n", type=int, default=64, help="number of images")
    sp.add_argument("--sampler", default="dpm++", choices=["ddpm", "ddim", "dpm++"],
                    help="default dpm++ (20 steps); ddpm runs all T steps")
    sp.add_argument("--steps", type=int, default=None,
                    help="denoiser calls (default: T for ddpm, 50 ddim, 20 dpm++)")
    sp.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0 = deterministic)")
    sp.add_argument("--spacing", default="trailing", choices=["trailing", "leading", "linspace"])
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--threads", type=int, default=0, help="0: all cores")
    sp.add_argument("--scale", type=int, default=2, help="integer upscaling of the grid")
    sp.add_argument("--no-progress", action="store_true")
    sp.add_argument("--out", default="samples.png")
    sp.add_argument("--label", default=None,
                    help="class-conditional models: a class name or index (e.g. sneaker), "
                         "'random', or a comma list with one per image")
    sp.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance scale w (1: the labels alone)")
    sp.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                    help="guide only the steps with LO <= t <= HI (lesson time 1..T)")
    sp.add_argument("--animate", default=None, metavar="GIF",
                    help="also write the reverse process as a looping GIF (x_t and x0_hat)")
    sp.set_defaults(func=_sample)
    for name, helptext in (("inpaint", "fill the black part of --mask in --image (RePaint)"),
                           ("img2img", "noise --image to strength * T and denoise it (SDEdit)")):
        ed = sub.add_parser(name, help=helptext)
        ed.add_argument("--image", required=True, help="a PNG/JPEG (resized to the model)")
        if name == "inpaint":
            ed.add_argument("--mask", required=True,
                            help="a PNG: white keeps the pixel, black is generated (diffusers' "
                                 "RePaint convention)")
            ed.add_argument("--steps", type=int, default=100)
            ed.add_argument("--jump-length", type=int, default=10)
            ed.add_argument("--jump-n-sample", type=int, default=10)
        else:
            ed.add_argument("--strength", type=float, default=0.6)
            ed.add_argument("--steps", type=int, default=50, help="steps of a full run")
            ed.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpm++"])
        ed.add_argument("--model", default="fashion-mnist",
                        help="a shipped model's name or a Diffusion.save folder")
        ed.add_argument("--n", type=int, default=4, help="completions (different seeds)")
        ed.add_argument("--label", default=None, help="class-conditional models: the class")
        ed.add_argument("--guidance", type=float, default=None)
        ed.add_argument("--seed", type=int, default=0)
        ed.add_argument("--threads", type=int, default=0)
        ed.add_argument("--scale", type=int, default=3)
        ed.add_argument("--no-progress", action="store_true")
        ed.add_argument("--out", default=f"{name}.png")
        ed.set_defaults(func=_edit)

    ex = sub.add_parser("export", help="a training checkpoint as diffusers' training state "
                                       "(to continue on GPUs)")
    ex.add_argument("--to", default="diffusers", help="format: diffusers (the only one)")
    ex.add_argument("checkpoint", help="checkpoint.safetensors written by ddpm train")
    ex.add_argument("out", help="folder to write")
    ex.set_defaults(func=_export)
    i = sub.add_parser("info", help="versions, threads, data location")
    i.set_defaults(func=_info)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
