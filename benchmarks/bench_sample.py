"""Sampling speed: ddpm's C loop against a PyTorch no_grad loop (eager and under
torch.compile) and diffusers' pipelines.

Not a test: prints numbers measured in this run.

Identical weights (the reference config, ``ddpm.UNet()`` default: 28x28x1,
block_out_channels (32, 64, 128); diffusers' copy from ``to_diffusers()``), the
same number of images, in one run, for each ``--n`` (16 images, what a learner
samples, and 64):

* DDPM, T = 1000 steps: ddpm ``Diffusion.sample(sampler="ddpm")`` vs a hand-written
  PyTorch ``no_grad`` loop (UNet2DModel + the same update in torch), the same loop
  with ``torch.compile(unet)`` (inductor, CPU), and diffusers' ``DDPMPipeline``;
* DDIM, 50 steps (eta = 0): the same four, diffusers' ``DDIMPipeline``;
* DPM-Solver++(2M), 20 steps: the same four, ``DDPMPipeline`` with a
  ``DPMSolverMultistepScheduler``.

The compiled loop's compile time (its first call at each batch size) is printed
on its own line and left out of its figures; ``--no-compile`` skips that column.

The full benchmark (issue 5: >= 1.5x the loop, >= 2x the pipeline; issue 15:
DDIM-20 and DPM++-20 on 64 images >= 2x the eager loop, >= 1.3x the compiled
loop, >= 2.5x the pipeline):

    python benchmarks/bench_sample.py --n 16 64 --steps 1000 --ddim-steps 20

takes a while on 2 cores (1000-step runs).  A reduced run:

    python benchmarks/bench_sample.py --n 16 --steps 100 --reps 2

(``--steps`` is the DDPM run's step count; ``--ddim-steps``/``--dpm-steps`` the others.)
"""
import argparse
import time

import numpy as np

import ddpm


def clock(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def torch_loop(torch, unet, sched_tabs, x_T, ts, prevs, sampler, seed):
    """A plain PyTorch no_grad sampling loop (what one would write without diffusers)."""
    ab = sched_tabs
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(x_T.copy())
    prev_x0 = None
    with torch.no_grad():
        for k, (t, p) in enumerate(zip(ts, prevs)):
            t, p = int(t), int(p)
            # t as a tensor: a Python int would make torch.compile specialise on
            # its value and recompile at every step
            eps = unet(x, torch.tensor(t - 1)).sample
            a, b = ab[t] ** 0.5, (1 - ab[t]) ** 0.5
            x0 = (x - b * eps) / a
            if sampler != "dpm++":
                x0 = x0.clamp(-1, 1)
            if sampler == "ddpm":
                alpha = ab[t] / ab[p]
                mean = (ab[p] ** 0.5 * (1 - alpha) / (1 - ab[t])) * x0 + \
                    (alpha ** 0.5 * (1 - ab[p]) / (1 - ab[t])) * x
                if p > 0:
                    var = (1 - ab[p]) / (1 - ab[t]) * (1 - alpha)
                    mean = mean + var ** 0.5 * torch.randn(x.shape, generator=g)
                x = mean
            elif sampler == "ddim":
                x = ab[p] ** 0.5 * x0 + (1 - ab[p]) ** 0.5 * eps
            else:
                if p == 0:
                    x = x0
                else:
                    lam = lambda u: 0.5 * np.log(ab[u] / (1 - ab[u]))  # noqa: E731
                    h = lam(p) - lam(t)
                    D = x0
                    if prev_x0 is not None:
                        r = (lam(t) - lam(int(ts[k - 1]))) / h
                        D = x0 + (x0 - prev_x0) / (2 * r)
                    x = ((1 - ab[p]) / (1 - ab[t])) ** 0.5 * x - ab[p] ** 0.5 * np.expm1(-h) * D
                prev_x0 = x0
    return x.numpy()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[16, 64], help="images per run")
    p.add_argument("--steps", type=int, default=1000, help="DDPM steps (T = 1000)")
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--dpm-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="0: all cores (ddpm's default)")
    p.add_argument("--reps", type=int, default=1, help="best of this many interleaved runs")
    p.add_argument("--only", nargs="+", default=["ddpm", "ddim", "dpm++"],
                   choices=["ddpm", "ddim", "dpm++"])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = p.parse_args()
    try:
        import torch
        from diffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler,
                               DPMSolverMultistepScheduler)
    except ImportError:
        raise SystemExit("needs torch and diffusers: pip install torch==2.13.0 'ddpm[reference]'")

    if args.threads:
        ddpm.set_num_threads(args.threads)
    nt = ddpm.get_num_threads()
    torch.set_num_threads(nt)
    net = ddpm.UNet(seed=0)
    unet = net.to_diffusers()
    comp = None
    if not args.no_compile:
        try:
            comp = torch.compile(unet, backend="inductor", dynamic=False)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"(torch.compile unavailable: {exc})")
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear"))
    ab = d.schedule.alpha_bars
    print(f"reference config: {net}")
    print(f"{nt} threads (ddpm and torch), torch {torch.__version__}, best of {args.reps}\n")
    print(f"{'n':>3} {'sampler':<8} {'steps':>5} {'ddpm s':>8} {'loop s':>8} {'compiled s':>11} "
          f"{'pipeline s':>11} {'vs loop':>8} {'vs compiled':>12} {'vs pipeline':>12}")

    def pipeline_for(sampler):
        if sampler == "ddpm":
            pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(timestep_spacing="trailing"))
        elif sampler == "ddim":
            pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(timestep_spacing="trailing"))
        else:
            pipe = DDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(
                algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    steps = {"ddpm": args.steps, "ddim": args.ddim_steps, "dpm++": args.dpm_steps}
    notes = []
    for n in args.n:
        x_T = ddpm.randn(n, 1, 28, 28, seed=0)
        # warm-up: allocate workspaces, load libraries; compile for this batch size
        d.sample(n, steps=2, sampler="ddim", x_T=x_T, progress=False)
        with torch.no_grad():
            unet(torch.from_numpy(x_T), torch.tensor(10))
            if comp is not None:
                t0 = time.perf_counter()
                comp(torch.from_numpy(x_T), torch.tensor(10))
                notes.append(f"torch.compile at n = {n}: first call (compile) "
                             f"{time.perf_counter() - t0:.1f} s, not in the figures")
        for sampler in args.only:
            K = steps[sampler]
            ts, prevs = ddpm.sampling.sampling_timesteps(d.T, K, sampler, "trailing")
            pipe = pipeline_for(sampler)
            kw = {"eta": 0.0} if sampler == "ddim" else {}
            t_ours = t_loop = t_comp = t_pipe = float("inf")
            for _ in range(args.reps):     # interleaved, best of reps: robust to load spikes
                t_ours = min(t_ours, clock(lambda: d.sample(n, steps=K, sampler=sampler, x_T=x_T,
                                                            seed=1, progress=False)))
                t_loop = min(t_loop, clock(lambda: torch_loop(torch, unet, ab, x_T, ts, prevs,
                                                              sampler, 1)))
                if comp is not None:
                    t_comp = min(t_comp, clock(lambda: torch_loop(torch, comp, ab, x_T, ts,
                                                                  prevs, sampler, 1)))
                with torch.no_grad():
                    t_pipe = min(t_pipe, clock(lambda: pipe(
                        batch_size=n, num_inference_steps=K, output_type="np",
                        generator=torch.Generator().manual_seed(1), **kw)))
            tc = f"{t_comp:>11.2f}" if comp is not None else f"{'-':>11}"
            rc = f"{t_comp / t_ours:>11.2f}x" if comp is not None else f"{'-':>12}"
            print(f"{n:>3} {sampler:<8} {K:>5} {t_ours:>8.2f} {t_loop:>8.2f} {tc} {t_pipe:>11.2f} "
                  f"{t_loop / t_ours:>7.2f}x {rc} {t_pipe / t_ours:>11.2f}x", flush=True)
    for note in notes:
        print(note)
    print("\nvs loop / vs compiled / vs pipeline: their time / ddpm's time (> 1: ddpm is faster).")


if __name__ == "__main__":
    main()
