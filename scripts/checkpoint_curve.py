"""Quality against training time: FID_fm and asked-class accuracy of checkpoints' EMA weights.

Not a test.  For each ``Trainer.save`` checkpoint given (a class-conditional model), samples
``--n`` images with balanced labels (DPM-Solver++ 20 steps, x0_hat clipped, guidance
``--guidance``), and prints one JSON line: the step, FID_fm, the floor (FID_fm of ``--n`` real
training images), their ratio, the excess FID_fm - floor (an estimate of the distance left
that does not shrink with n, unlike the floor), and the share recognised as the asked class.

    python scripts/checkpoint_curve.py --n 500 --guidance 2 run/ck-*.safetensors
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpm  # noqa: E402
from ddpm import datasets, metrics  # noqa: E402
from ddpm.training import _read_checkpoint, checkpoint_diffusion  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                    help="guide only steps with LO <= t <= HI (default: every step)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    interval = tuple(int(v) for v in a.guidance_interval.split(",")) if a.guidance_interval else None
    x, _ = datasets.fashion_mnist("train")
    floor = metrics.fid(x[np.random.default_rng(0).choice(len(x), a.n, replace=False)])
    classifier = metrics.FeatureNet.load()
    ask = np.arange(a.n) % 10
    print(f"floor at n = {a.n}: {floor:.4f}; {ddpm.get_num_threads()} threads", flush=True)
    for path in a.checkpoints:
        d = checkpoint_diffusion(path, weights="ema")
        step = _read_checkpoint(path, "checkpoint_curve")["step"]
        images = np.concatenate([
            d.sample(len(part), steps=20, sampler="dpm++", clip_x0=True, labels=part,
                     guidance_scale=a.guidance, guidance_interval=interval, seed=a.seed + i,
                     progress=False,
                     value_range=(-1, 1))
            for i, part in enumerate(np.array_split(ask, max(1, a.n // 250)))])
        fid = metrics.fid(images)
        print(json.dumps(dict(file=os.path.basename(path), step=step, guidance=a.guidance,
                              interval=interval, fid=round(fid, 4),
                              floor=round(floor, 4), ratio=round(fid / floor, 3),
                              excess=round(fid - floor, 4),
                              acc=round(float(np.mean(classifier.predict(images) == ask)), 4))),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
