"""Forward-noising benchmark: ddpm's fused C q_sample against the NumPy equivalent.

Not a test: it prints timings as ratios against the NumPy reference measured in the
same run, at 1 and 2 threads, plus the lesson's "cost" comparison of walking the chain
(q_sample_chain, t = 1000 steps) against the closed form (q_sample, one pass).

    python benchmarks/bench_noising.py [--batch 128] [--trials 7] [--calls 20]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

import ddpm

TARGET = 5.0   # ddpm's q_sample should be at least this many times faster than NumPy


def per_call_ms(fn, calls: int) -> float:
    """Median time of one call over `calls` calls, in ms."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def best_of_medians(fns: dict, trials: int, calls: int) -> dict:
    """Best (smallest) of `trials` medians per function; the functions are interleaved
    within each trial so they see the same machine conditions."""
    for fn in fns.values():                      # warm up caches, threads, allocator
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(trials):
        for name, fn in fns.items():
            best[name] = min(best[name], per_call_ms(fn, calls))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--trials", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--chain-t", type=int, default=1000)
    args = p.parse_args(argv)

    s = ddpm.NoiseSchedule("linear")
    shape = (args.batch, 1, 28, 28)
    gen = np.random.default_rng(0)
    x0 = gen.uniform(-1, 1, shape).astype(np.float32)
    t = gen.integers(1, s.T + 1, args.batch)
    sa = s.sqrt_alpha_bars.astype(np.float32)
    sb = s.sqrt_one_minus_alpha_bars.astype(np.float32)
    np_rng = np.random.default_rng()

    def numpy_q_sample():
        eps = np_rng.standard_normal(shape, dtype=np.float32)
        return sa[t][:, None, None, None] * x0 + sb[t][:, None, None, None] * eps, eps

    seed = [0]

    def ddpm_q_sample():
        seed[0] += 1
        return s.q_sample(x0, t, seed=seed[0])

    thread_counts = [1, 2] if ddpm._core.has_openmp() else [1]
    before = ddpm.get_num_threads()
    print(f"ddpm {ddpm.__version__}, numpy {np.__version__}, {platform.machine()}, "
          f"OpenMP {ddpm._core.has_openmp()}, default threads {before}")
    print(f"q_sample on a {'x'.join(map(str, shape))} float32 batch (per-sample t), "
          f"best of {args.trials} medians of {args.calls} calls")
    print("NumPy reference: default_rng().standard_normal(shape, dtype=float32) and "
          "sqrt_ab * x0 + sqrt_1mab * eps")
    print()
    print(f"{'threads':>7}  {'ddpm ms':>9}  {'numpy ms':>9}  {'ratio':>7}  (numpy / ddpm)")
    ratios = {}
    try:
        for n in thread_counts:
            ddpm.set_num_threads(n)
            r = best_of_medians({"ddpm": ddpm_q_sample, "numpy": numpy_q_sample},
                                args.trials, args.calls)
            ratios[n] = r["numpy"] / r["ddpm"]
            print(f"{n:>7}  {r['ddpm']:>9.3f}  {r['numpy']:>9.3f}  {ratios[n]:>6.1f}x  "
                  f"{'meets' if ratios[n] >= TARGET else 'below'} target")
        print(f"target: ddpm's q_sample >= {TARGET:.0f}x faster than the NumPy equivalent; "
              f"met at threads = {[n for n in ratios if ratios[n] >= TARGET] or 'none'}")

        print()
        print(f"cost of the chain: q_sample_chain(t={args.chain_t}) vs q_sample "
              f"on the same batch")
        print(f"{'threads':>7}  {'chain ms':>10}  {'q_sample ms':>11}  {'ratio':>8}")
        tc = np.full(args.batch, args.chain_t)
        for n in thread_counts:
            ddpm.set_num_threads(n)
            r = best_of_medians({"chain": lambda: s.q_sample_chain(x0, tc, seed=1)},
                                trials=3, calls=1)
            r.update(best_of_medians({"closed": lambda: s.q_sample(x0, tc, seed=1)},
                                     args.trials, args.calls))
            print(f"{n:>7}  {r['chain']:>10.1f}  {r['closed']:>11.3f}  "
                  f"{r['chain'] / r['closed']:>7.0f}x")
        print(f"(the chain draws t = {args.chain_t} noise arrays where the closed form "
              f"draws one)")
    finally:
        ddpm.set_num_threads(before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
