"""U-Net speed: ddpm's C engine against diffusers' UNet2DModel on PyTorch, eager and
torch.compile'd, same weights.

Not a test: prints numbers measured in this run.

    python benchmarks/bench_unet.py [--reps 3] [--threads 1 2] [--quick] [--no-compile]

For each thread count: forward and forward+backward at batch 64 (ddpm's
chunk: see b_train below) of the reference config (28x28x1,
block_out_channels (32, 64, 128)): images per second of ddpm, PyTorch eager
and the same module under torch.compile (inductor, CPU; its compile time is
printed on its own line and left out of the per-step figures), the ratios
ddpm / eager and ddpm / compiled, and GFLOP/s against an SGEMM peak measured
in the same run through ddpm's own BLAS path (a 1024^3 product).  Then a
per-op profile of one forward and one forward+backward, to show where the
time goes.
Targets: issue 3, forward+backward >= 1.3x eager; issue 15, forward (sampling)
>= 2x eager and >= 1.3x compiled.
"""
import argparse
import time

import numpy as np

import ddpm
from ddpm import _core
from _timing import compile_seconds, compiled, settle, timed, timed_all


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
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = p.parse_args()
    try:
        import torch
        from diffusers import UNet2DModel  # noqa: F401
    except ImportError:
        raise SystemExit("needs torch and diffusers: pip install torch==2.13.0 'ddpm[reference]'")

    net = ddpm.UNet(seed=0)
    ref = net.to_diffusers()
    # forward+backward at ddpm's chunk size (64): UNet.forward runs a larger batch in
    # chunks of UNET_CHUNK images and UNet.backward then replays each chunk's forward
    # (the workspace holds one chunk), so at B = 128 the figure would count two
    # forwards; the fused training step (bench_train.py) runs B = 128 in one call
    b_fwd, b_train = (8, 16) if args.quick else (64, _core.UNET_CHUNK)
    reps = 1 if args.quick else args.reps
    rng = np.random.default_rng(0)
    flops = net.flops(1)
    print(f"reference config: {net}")
    print(f"forward {flops / 1e6:.0f} MFLOP per image (forward+backward ~3x)\n")
    print(f"{'threads':>7} {'what':<22} {'ddpm img/s':>11} {'eager img/s':>12} "
          f"{'compiled img/s':>15} {'vs eager':>9} {'vs compiled':>12} {'ddpm GF/s':>10} "
          f"{'peak GF/s':>10} {'% peak':>7}")
    comp = compiled(torch, ref, "UNet2DModel", not args.no_compile)
    for nt in args.threads:
        ddpm.set_num_threads(nt)
        torch.set_num_threads(nt)
        peak = sgemm_peak(max(8, reps))
        rows, notes = [], []
        for what, B in (("forward", b_fwd), ("forward+backward", b_train)):
            x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
            t = rng.integers(0, 1000, B)
            g = (rng.standard_normal((B, 1, 28, 28)) * 1e-3).astype(np.float32)
            xt, tt, gt = torch.tensor(x), torch.tensor(t), torch.tensor(g)
            if what == "forward":
                def ours():   # as torch.no_grad(): nothing kept for a backward
                    net(x, t, grad=False)

                def step(model):
                    def run():
                        with torch.no_grad():
                            model(xt, tt)
                    return run
                work = flops * B
            else:
                def ours():
                    net(x, t)
                    net.backward(g)

                def step(model):
                    def run():
                        ref.zero_grad()
                        model(xt, tt).sample.backward(gt)
                    return run
                work = 3 * flops * B
            fns = [ours, step(ref)]
            if comp is not None:
                c = step(comp)
                notes.append(f"torch.compile {what} B={B}, {nt} thread(s): first call (compile) "
                             f"{compile_seconds(c):.1f} s, not in the figures")
                fns.append(c)
            ts = timed_all(fns, reps)
            rows.append((what, B, ts, work / ts[0] / 1e9))
        # the peak again after the runs, and the better of the two: on a
        # shared machine a slow spell during one measurement would otherwise
        # inflate the % of peak
        peak = max(peak, sgemm_peak(max(8, reps)))
        for what, B, ts, gf in rows:
            a, b = ts[0], ts[1]
            cc = f"{B / ts[2]:>15.1f}" if len(ts) > 2 else f"{'-':>15}"
            rc = f"{ts[2] / a:>11.2f}x" if len(ts) > 2 else f"{'-':>12}"
            print(f"{nt:>7} {what + f' (B={B})':<22} {B / a:>11.1f} {B / b:>12.1f} {cc} "
                  f"{b / a:>8.2f}x {rc} {gf:>10.1f} {peak:>10.1f} {100 * gf / peak:>6.0f}%")
        for n in notes:
            print("        " + n)
    print("(GF/s counts a direct convolution's multiply-adds, as FLOP counters do; the 3x3\n"
          " stride-1 layers run Winograd F(4x4, 3x3), which does up to 4x fewer, so % peak can "
          "pass 100)")
    for what, B in (("forward", b_fwd), ("forward+backward", b_train)):
        print(f"\nwhere the time goes (one {what}, batch {B}"
              f"{', grad=False' if what == 'forward' else ''}):")
        for nt in args.threads:
            ddpm.set_num_threads(nt)
            x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
            t = rng.integers(0, 1000, B)
            grad = what != "forward"   # the forward row's forward: nothing kept for a backward
            net(x, t, grad=grad)
            net.profile(True)
            t0 = time.perf_counter()
            net(x, t, grad=grad)
            if grad:
                net.backward(x)
            total = time.perf_counter() - t0
            prof = net.profile(False)
            print(f"  threads {nt}: {total * 1e3:.0f} ms")
            for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
                if v > 0:   # a forward has no backward kinds
                    print(f"    {k:<42} {v * 1e3:8.0f} ms {100 * v / total:5.1f}%")


if __name__ == "__main__":
    main()
