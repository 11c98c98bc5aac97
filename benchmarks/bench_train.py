"""Training speed: one full DDPM training step in ddpm (one C call) against the same
step in PyTorch + diffusers, from identical weights.  Not a test: prints numbers
measured in this run.

    python benchmarks/bench_train.py [--reps 3] [--threads 1 2] [--batch 128] [--quick]

The step: t ~ U{1..T}, eps ~ N(0, I), x_t by the closed form, UNet2DModel
forward, MSE against eps, backward, global-norm clipping to 1, AdamW, EMA.
Reference config (28x28x1, block_out_channels (32, 64, 128)).  Prints img/s,
the ratio ddpm / PyTorch, and the time of one Fashion-MNIST epoch (60,000
images) at each speed.  Target (issue 4): >= 1.3x.
"""
import argparse

import numpy as np

import ddpm
from _timing import timed_pair


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="batch 16, one rep (smoke run)")
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
    print(f"{'threads':>7} {'ddpm img/s':>11} {'torch img/s':>12} {'ratio':>6} "
          f"{'epoch ddpm':>11} {'epoch torch':>12}")
    for nt in args.threads:
        ddpm.set_num_threads(nt)
        torch.set_num_threads(nt)
        d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear"))
        ref = d.model.to_diffusers().train()
        tr = ddpm.Trainer(d, data, batch_size=B, lr=1e-4, ema_decay=0.999, grad_clip=1.0,
                          progress=False)
        opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
        ema = [p.detach().clone() for p in ref.parameters()]
        sab = torch.tensor(d.schedule.sqrt_alpha_bars, dtype=torch.float32)
        s1m = torch.tensor(d.schedule.sqrt_one_minus_alpha_bars, dtype=torch.float32)
        x0 = torch.tensor(data[:B])
        gen = torch.Generator().manual_seed(0)

        def ours():
            tr.train_step()

        def theirs():
            t = torch.randint(1, 1001, (B,), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            xt = sab[t][:, None, None, None] * x0 + s1m[t][:, None, None, None] * eps
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(ref(xt, t - 1).sample, eps)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for e, p in zip(ema, ref.parameters()):
                    e.lerp_(p, 1 - 0.999)

        a, b = timed_pair(ours, theirs, reps)
        epoch = lambda sec: f"{60000 / B * sec / 60:.0f} min"  # noqa: E731
        print(f"{nt:>7} {B / a:>11.1f} {B / b:>12.1f} {b / a:>5.2f}x {epoch(a):>11} {epoch(b):>12}")


if __name__ == "__main__":
    main()
