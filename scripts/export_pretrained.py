"""Export a training checkpoint's EMA weights as the model shipped in the package.

    python scripts/export_pretrained.py RUN/checkpoint.safetensors \
        --command "python -m ddpm train ..." --seconds 7000 --threads 2

writes ddpm/weights/fashion-mnist/ (a diffusers DDPMPipeline folder, float16
weights) and training.json recording how the model was trained.
"""
import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpm  # noqa: E402
from ddpm._io import atomic_write, write_text  # noqa: E402
from ddpm.training import _read_checkpoint, checkpoint_diffusion  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--command", required=True, help="the training command, as run")
    ap.add_argument("--seconds", type=float, required=True, help="wall-clock training time")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--note", default="", help="anything else worth recording")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(ddpm.__file__), "weights", "fashion-mnist"))
    args = ap.parse_args()

    d = checkpoint_diffusion(args.checkpoint, weights="ema")
    ck = _read_checkpoint(args.checkpoint, "export")
    d.save(args.out, dtype="float16")
    loss = np.asarray(ck["history"]["loss"], dtype=np.float64)
    info = {
        "command": args.command,
        "steps": ck["step"],
        "batch_size": ck["settings"]["batch_size"],
        "images_seen": ck["step"] * ck["settings"]["batch_size"],
        "epochs": round(ck["step"] * ck["settings"]["batch_size"] / 60000, 2),
        "lr": ck["settings"]["lr"],
        "ema_decay": ck["settings"]["ema_decay"],
        "seconds": round(args.seconds, 1),
        "threads": args.threads,
        "final_loss_mean_of_last_100_steps": round(float(loss[-100:].mean()), 5),
        "parameters": d.model.num_parameters,
        "weights": "EMA, stored as float16",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "exported": datetime.date.today().isoformat(),
        "note": args.note,
    }
    atomic_write(os.path.join(args.out, "training.json"),
                 lambda tmp: write_text(tmp, json.dumps(info, indent=2) + "\n"))
    size = os.path.getsize(os.path.join(args.out, "unet", "diffusion_pytorch_model.safetensors"))
    print(f"wrote {args.out}: step {ck['step']}, {d.model.num_parameters:,} parameters, "
          f"{size / 2**20:.2f} MB of weights")


if __name__ == "__main__":
    main()
