"""Training speed: one full DDPM training step in ddpm (one C call) against the same
step in PyTorch + diffusers, eager and with the model under torch.compile, from
identical weights.  Not a test: prints numbers measured in this run.

    python benchmarks/bench_train.py [--reps 3] [--threads 1 2] [--batch 128] [--quick]
                                     [--no-compile]

The step: t ~ U{1..T}, eps ~ N(0, I), x_t by the closed form, UNet2DModel
forward, MSE against eps, backward, global-norm clipping to 1, AdamW, EMA.
Reference config (28x28x1, block_out_channels (32, 64, 128)).  The compiled
column runs the same step with torch.compile(model) (inductor, CPU; forward and
backward compiled, the optimizer and EMA eager); its compile time (the first
step) is printed on its own line and left out of the figures.  Prints img/s, the
ratios ddpm / eager and ddpm / compiled, and the time of one Fashion-MNIST epoch
(60,000 images) at each speed.  Targets: issue 4, >= 1.3x eager; issue 15,
>= 1.6x eager and >= 1.2x compiled.
"""
import argparse

import numpy as np

import ddpm
from _timing import compile_seconds, compiled, timed_all


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="batch 16, one rep (smoke run)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = p.parse_args()
    try:
        import torch
        from diffusers import UNet2DModel  # noqa: F401
    except ImportError:
        raise SystemExit("needs torch and diffusers: pip install torch==2.13.0 'ddpm[reference]'")
    B = 16 if args.quick else args.batch
    reps = 1 if args.quick else args.reps
    data = np.random.default_rng(0).uniform(-1, 1, (4 * B, 1, 28, 28)).astype(np.float32)
    print(f"one training step, batch {B}, reference config (ddpm.UNet() defaults), AdamW + EMA + clip")
    print(f"{'threads':>7} {'ddpm img/s':>11} {'eager img/s':>12} {'compiled img/s':>15} "
          f"{'vs eager':>9} {'vs compiled':>12} {'epoch ddpm':>11} {'epoch eager':>12} "
          f"{'epoch compiled':>15}")
    for nt in args.threads:
        ddpm.set_num_threads(nt)
        torch.set_num_threads(nt)
        d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear"))
        tr = ddpm.Trainer(d, data, batch_size=B, lr=1e-4, ema_decay=0.999, grad_clip=1.0,
                          progress=False)
        sab = torch.tensor(d.schedule.sqrt_alpha_bars, dtype=torch.float32)
        s1m = torch.tensor(d.schedule.sqrt_one_minus_alpha_bars, dtype=torch.float32)
        x0 = torch.tensor(data[:B])

        def torch_step(compile_it):
            """One PyTorch training step on its own copy of the weights."""
            ref = d.model.to_diffusers().train()
            model = compiled(torch, ref, "training step", compile_it) if compile_it else ref
            if model is None:
                return None
            opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
            ema = [p.detach().clone() for p in ref.parameters()]
            gen = torch.Generator().manual_seed(0)

            def step():
                t = torch.randint(1, 1001, (B,), generator=gen)
                eps = torch.randn(x0.shape, generator=gen)
                xt = sab[t][:, None, None, None] * x0 + s1m[t][:, None, None, None] * eps
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(model(xt, t - 1).sample, eps)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
                opt.step()
                with torch.no_grad():
                    for e, p in zip(ema, ref.parameters()):
                        e.lerp_(p, 1 - 0.999)
            return step

        fns = [tr.train_step, torch_step(False)]
        comp = torch_step(not args.no_compile)
        note = None
        if comp is not None:
            note = (f"torch.compile, {nt} thread(s): first step (compile) "
                    f"{compile_seconds(comp):.1f} s, not in the figures")
            fns.append(comp)
        ts = timed_all(fns, reps)
        epoch = lambda sec: f"{60000 / B * sec / 60:.0f} min"  # noqa: E731
        a, b = ts[0], ts[1]
        c = ts[2] if len(ts) > 2 else None
        cc = f"{B / c:>15.1f}" if c else f"{'-':>15}"
        rc = f"{c / a:>11.2f}x" if c else f"{'-':>12}"
        ec = f"{epoch(c):>15}" if c else f"{'-':>15}"
        print(f"{nt:>7} {B / a:>11.1f} {B / b:>12.1f} {cc} {b / a:>8.2f}x {rc} {epoch(a):>11} "
              f"{epoch(b):>12} {ec}")
        if note:
            print("        " + note)


if __name__ == "__main__":
    main()
