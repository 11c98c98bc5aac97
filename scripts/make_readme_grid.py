"""The README's picture: docs/fashion-mnist-samples.png, one row per class.

    python scripts/make_readme_grid.py

Eight samples per Fashion-MNIST class from the shipped model with ``ddpm.sample()``'s
defaults (DPM-Solver++ 20 steps, x0_hat clipped, guidance ``ddpm.pretrained.GUIDANCE_SCALE`` on
the steps in ``ddpm.pretrained.GUIDANCE_INTERVAL``),
seed 0; prints the time the sampling took and what the shipped classifier calls each row.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ddpm  # noqa: E402
from ddpm import datasets, metrics  # noqa: E402

PER_CLASS = 8
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "fashion-mnist-samples.png")


def main() -> int:
    labels = np.repeat(np.arange(10), PER_CLASS)
    t0 = time.perf_counter()
    images = ddpm.sample(len(labels), labels=labels, seed=0, progress=False)
    secs = time.perf_counter() - t0
    ddpm.save_grid(images, OUT, nrow=PER_CLASS, scale=2)
    pred = metrics.FeatureNet.load().predict(images * 2 - 1)
    for c, name in enumerate(datasets.FASHION_MNIST_CLASSES):
        row = pred[labels == c]
        print(f"{name:>12}: {np.mean(row == c) * 100:5.1f}% recognised as asked")
    print(f"wrote {OUT}: {len(labels)} samples in {secs:.1f} s on {ddpm.get_num_threads()} threads "
          f"(guidance {ddpm.pretrained.GUIDANCE_SCALE:g} on t in {ddpm.pretrained.GUIDANCE_INTERVAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
