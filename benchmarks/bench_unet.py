"""U-Net speed: ddpm's C engine against diffusers' UNet2DModel on PyTorch (eager), same weights.

Not a test: prints numbers measured in this run.

    python benchmarks/bench_unet.py [--reps 3] [--threads 1 2] [--quick]

For each thread count: forward at batch 64 and forward+backward at batch 128
(the reference config: 28x28x1, block_out_channels (32, 64, 128)), images per
second, the ratio ddpm / PyTorch, and GFLOP/s against an SGEMM peak measured in
the same run through ddpm's own BLAS path (a 1024^3 product).  Then a per-op
profile of one forward+backward, to show where the time goes.
Targets (issue 3): forward+backward >= 1.3x PyTorch; >= 75% of the SGEMM peak.
"""
import argparse
import time

import numpy as np

import ddpm
from ddpm import _core
from _timing import settle, timed, timed_pair


def sgemm_peak(reps):
    """GFLOP/s of a 1024^3 SGEMM through ddpm's BLAS path (a 1x1 convolution):
    the best of the runs, since a peak is what the machine can do, and a slow
    spell of a shared machine would otherwise inflate the % of peak."""
    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, 1, n, 1)).astype(np.float32)   # (C, B, H, W) = (1024, 1, 1024, 1)
    w = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    run = lambda: _core.conv2d_forward(out, a, w, None, 1, n, n, 1, n, 1, 1, False)  # noqa: E731
    ts = []
    for _ in range(reps):
        settle()
        ts.append(timed(run, 1))
    t = min(ts)
    return 2.0 * n ** 3 / t / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="batch 8/16, one rep (smoke run)")
    args = p.parse_args()
    try:
        import torch
        from diffusers import UNet2DModel  # noqa: F401
    except ImportError:
        raise SystemExit("needs torch and diffusers: pip install torch==2.13.0 'ddpm[reference]'")

    net = ddpm.UNet(seed=0)
    ref = net.to_diffusers()
    b_fwd, b_train = (8, 16) if args.quick else (64, 128)
    reps = 1 if args.quick else args.reps
    rng = np.random.default_rng(0)
    flops = net.flops(1)
    print(f"reference config: {net}")
    print(f"forward {flops / 1e6:.0f} MFLOP per image (forward+backward ~3x)\n")
    print(f"{'threads':>7} {'what':<22} {'ddpm img/s':>11} {'torch img/s':>12} {'ratio':>6} "
          f"{'ddpm GF/s':>10} {'peak GF/s':>10} {'% peak':>7}")
    for nt in args.threads:
        ddpm.set_num_threads(nt)
        torch.set_num_threads(nt)
        peak = sgemm_peak(max(8, reps))
        rows = []
        for what, B in (("forward", b_fwd), ("forward+backward", b_train)):
            x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
            t = rng.integers(0, 1000, B)
            g = (rng.standard_normal((B, 1, 28, 28)) * 1e-3).astype(np.float32)
            xt, tt, gt = torch.tensor(x), torch.tensor(t), torch.tensor(g)
            if what == "forward":
                def ours():
                    net(x, t)

                def theirs():
                    with torch.no_grad():
                        ref(xt, tt)
                work = flops * B
            else:
                def ours():
                    net(x, t)
                    net.backward(g)

                def theirs():
                    ref.zero_grad()
                    ref(xt, tt).sample.backward(gt)
                work = 3 * flops * B
            a, b = timed_pair(ours, theirs, reps)
            rows.append((what, B, a, b, work / a / 1e9))
        # the peak again after the runs, and the better of the two: on a
        # shared machine a slow spell during one measurement would otherwise
        # inflate the % of peak
        peak = max(peak, sgemm_peak(max(8, reps)))
        for what, B, a, b, gf in rows:
            print(f"{nt:>7} {what + f' (B={B})':<22} {B / a:>11.1f} {B / b:>12.1f} {b / a:>5.2f}x "
                  f"{gf:>10.1f} {peak:>10.1f} {100 * gf / peak:>6.0f}%")
    print("(GF/s counts a direct convolution's multiply-adds, as FLOP counters do; the 3x3\n"
          " stride-1 layers run Winograd F(2x2, 3x3), which does up to 2.25x fewer, so % peak can pass 100)")
    print("\nwhere the time goes (one forward+backward, batch %d):" % b_train)
    for nt in args.threads:
        ddpm.set_num_threads(nt)
        x = rng.standard_normal((b_train, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 1000, b_train)
        net(x, t)
        net.profile(True)
        t0 = time.perf_counter()
        net(x, t)
        net.backward(x)
        total = time.perf_counter() - t0
        prof = net.profile(False)
        print(f"  threads {nt}: {total * 1e3:.0f} ms")
        for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
            print(f"    {k:<42} {v * 1e3:8.0f} ms {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
