"""Command line: ``python -m ddpm <command>``.

Commands
--------
demo     print a schedule summary and write a PNG of the forward process on a
         Fashion-MNIST image (or the course's T-shirt when the data is absent).
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


def _info(args) -> int:
    import ddpm
    from ddpm import datasets

    print(f"ddpm {ddpm.__version__}, numpy {np.__version__}, threads {ddpm.get_num_threads()}, "
          f"openmp {ddpm._core.has_openmp()}")
    for split in ("train", "test"):
        print(f"fashion-mnist {split}: {datasets.find_dataset('fashion-mnist', split)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddpm", description=__doc__,
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
    i = sub.add_parser("info", help="versions, threads, data location")
    i.set_defaults(func=_info)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
