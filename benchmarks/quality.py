"""How good is a model?  FID_fm, class histogram, NLL and sampler time.

Not a test: prints numbers measured in this run.

For the shipped Fashion-MNIST model (or ``--model FOLDER``, a Diffusion.save
folder) this prints

* the floor: FID_fm of ``--n`` real Fashion-MNIST TRAINING images against the
  shipped test-set statistics (what a perfect generator would score with
  that many images: FID is biased upward at small n, so samples are always
  compared with a floor measured at the same n);
* FID_fm of ``--n`` samples from 1000-step DDPM, 50-step DDIM and 20-step
  DPM-Solver++(2M) (as diffusers runs it, and with x0_hat clipped as
  ``ddpm.sample()`` runs it), each with its wall time and the ratio to the floor;
* the share of each predicted class among the samples (a collapsed or
  biased model shows here first);
* ``ddpm.sample()`` with its defaults (for the shipped model: the defaults its
  docstring states), the row a newcomer meets;
* for a class-conditional model: the share of samples the shipped classifier
  puts in the ASKED class at each guidance scale of ``--guidance`` (balanced
  labels), FID_fm at each, and FID_fm per class against a per-class floor
  (real training images of that class against the test images of that class);
* the RMS pixel distance from samples to their nearest training image next
  to that of held-out test images (memorisation would show as samples much
  closer to the training set than test images are);
* the NLL bound in bits/dim on ``--nll-images`` test images.

FID_fm is the Frechet distance on the penultimate features of ddpm's own
Fashion-MNIST classifier (see ``ddpm.metrics``): NOT comparable to Inception FID.

The issue's full run (10,000 samples per sampler, NLL on the whole test set)
is ``python benchmarks/quality.py --n 10000 --ddpm-n 10000 --nll-images 10000``;
on 2 cores the 1000-step DDPM part alone is 10^7 network calls (about 9 hours).
The run of 2026-11-29 (the headline default row at 10,000 samples, the other rows
smaller; about an hour on 2 cores):

    python benchmarks/quality.py --n 10000 --sampler-n 1000 --guidance-n 1000 --ddpm-n 100 \
        --nll-images 200 --nll-t-samples 50 --skip dpm++ --guidance 1,2,3
"""
import argparse
import time

import numpy as np

import ddpm
from ddpm import datasets, metrics


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def samples(d, n, sampler, steps, seed, batch, **options):
    """n images in [-1, 1], generated batch by batch (bounded memory).

    Images come out clamped to the data range, as every pipeline (diffusers'
    included) returns them: DPM-Solver++ does not clip x0_hat along the way."""
    out = []
    for i, k in enumerate(range(0, n, batch)):
        m = min(batch, n - k)
        out.append(d.sample(m, sampler=sampler, steps=steps, seed=seed + i, progress=False,
                            **options))
    return np.concatenate(out) * np.float32(2) - np.float32(1)


def per_class_fid(images, labels, train, train_y, test, test_y, n_per, rng):
    """[(class, FID_fm of the samples of class c vs the test images of c, floor)]: the
    floor is n_per real training images of c against the same test images."""
    out = []
    for c in range(10):
        mu_t, sig_t = metrics.feature_statistics(test[test_y == c])
        mu, sig = metrics.feature_statistics(images[labels == c])
        pick = rng.choice(np.flatnonzero(train_y == c), size=n_per, replace=False)
        mu_r, sig_r = metrics.feature_statistics(train[pick])
        out.append((c, metrics.frechet_distance(mu, sig, mu_t, sig_t),
                    metrics.frechet_distance(mu_r, sig_r, mu_t, sig_t)))
    return out


def histogram_line(h):
    return "  ".join(f"{name[:7]} {100 * p:4.1f}%" for name, p in zip(datasets.FASHION_MNIST_CLASSES, h))


def guidance_entry(entry):
    """'2' -> (2.0, None); '3@200-700' -> (3.0, (200, 700))."""
    w, _, interval = entry.partition("@")
    if not interval:
        return float(w), None
    lo, hi = interval.split("-")
    return float(w), (int(lo), int(hi))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a Diffusion.save folder (default: the shipped model)")
    ap.add_argument("--n", type=int, default=10000, help="samples for the ddpm.sample() defaults row")
    ap.add_argument("--sampler-n", type=int, default=None,
                    help="samples for the DDIM and DPM++ rows (default --n)")
    ap.add_argument("--guidance-n", type=int, default=None,
                    help="samples per guidance scale of the sweep (default --n)")
    ap.add_argument("--ddpm-n", type=int, default=None, help="samples for 1000-step DDPM (default --n)")
    ap.add_argument("--nll-images", type=int, default=10000)
    ap.add_argument("--nll-t-samples", type=int, default=None,
                    help="Monte Carlo timesteps per image for the NLL (default: all T, exact)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="",
                    help="comma list of parts to skip: ddpm,ddim,dpm++,dpm++clip,default,"
                         "guidance,nll")
    ap.add_argument("--guidance", default="0,1,2,3,5",
                    help="conditional models: guidance scales of the sweep; w@lo-hi guides "
                         "only steps with lo <= t <= hi (guidance_interval), e.g. 3@200-700")
    args = ap.parse_args()
    if args.threads:
        ddpm.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    d = ddpm.Diffusion.load(args.model) if args.model else ddpm.load_pretrained("fashion-mnist")
    where = args.model or "the shipped fashion-mnist model"
    print(f"model: {where}; {d.model.num_parameters:,} parameters; {ddpm.get_num_threads()} threads")

    train, train_y = datasets.fashion_mnist("train")
    test, test_y = datasets.fashion_mnist("test")
    conditional = d.model.num_class_embeds is not None
    rng = np.random.default_rng(args.seed)
    n_sampler = args.sampler_n or args.n
    n_guided = args.guidance_n or args.n
    sizes = sorted({args.n, n_sampler, n_guided, args.ddpm_n or n_sampler})
    floors = {}
    for n in sizes:
        pick = rng.choice(len(train), size=n, replace=False)
        floors[n], secs = timed(lambda: metrics.fid(train[pick]))
        print(f"floor: FID_fm of {n} real training images vs the test statistics = {floors[n]:.3f} "
              f"({secs:.1f} s)")
    held_out = metrics.nearest_train_distance(test[:500])
    print(f"nearest-training-image RMS distance of 500 held-out test images: "
          f"median {np.median(held_out):.4f}")

    # dpm++ as diffusers runs it (x0_hat not clipped), and as ddpm.sample() runs it (clipped)
    runs = [("ddpm", "ddpm", 1000, args.ddpm_n or n_sampler, {}), ("ddim", "ddim", 50, n_sampler, {}),
            ("dpm++", "dpm++", 20, n_sampler, {}),
            ("dpm++clip", "dpm++", 20, n_sampler, {"clip_x0": True})]
    rows = []
    for name, sampler, steps, n, options in runs:
        if name in skip:
            continue
        images, secs = timed(lambda: samples(d, n, sampler, steps, args.seed, args.batch, **options))
        fid = metrics.fid(images)
        hist = metrics.class_histogram(images)
        near = metrics.nearest_train_distance(images[:500])
        rows.append((name, steps, n, fid, floors[n], secs))
        print(f"\n{name} ({steps} steps), {n} samples: {secs:.1f} s ({n / secs:.1f} img/s)")
        print(f"  FID_fm {fid:.3f} = {fid / floors[n]:.2f}x the floor {floors[n]:.3f}")
        print(f"  classes: {histogram_line(hist)}")
        print(f"  every class within 5-15%: {bool(((hist >= 0.05) & (hist <= 0.15)).all())}")
        print(f"  nearest-training-image RMS distance: median {np.median(near):.4f} "
              f"(held-out test images: {np.median(held_out):.4f})")

    if "default" not in skip:
        chunks = [min(args.batch, args.n - k) for k in range(0, args.n, args.batch)]
        images, secs = timed(lambda: np.concatenate(
            [ddpm.sample(m, model=d, seed=args.seed + i, progress=False)
             for i, m in enumerate(chunks)]) * np.float32(2) - np.float32(1))
        fid = metrics.fid(images)
        hist = metrics.class_histogram(images)
        rows.append(("ddpm.sample() defaults", "-", args.n, fid, floors[args.n], secs))
        print(f"\nddpm.sample() with its defaults, {args.n} samples: {secs:.1f} s "
              f"({args.n / secs:.1f} img/s)")
        print(f"  FID_fm {fid:.3f} = {fid / floors[args.n]:.2f}x the floor {floors[args.n]:.3f}")
        print(f"  classes: {histogram_line(hist)}")
        print(f"  every class within 8-12%: {bool(((hist >= 0.08) & (hist <= 0.12)).all())}")
        near = metrics.nearest_train_distance(images[:500])
        print(f"  nearest-training-image RMS distance: median {np.median(near):.4f}, "
              f"smallest {near.min():.4f} (held-out test images: median {np.median(held_out):.4f}, "
              f"smallest {held_out.min():.4f})")

    if conditional and "guidance" not in skip:
        classifier = metrics.FeatureNet.load()
        ask = np.arange(n_guided) % 10
        default = ((ddpm.pretrained.GUIDANCE_SCALE, ddpm.pretrained.GUIDANCE_INTERVAL)
                   if args.model is None else None)
        print(f"\nguidance sweep: {n_guided} samples per scale, DPM-Solver++ 20 steps, x0_hat "
              f"clipped, ten classes balanced")
        print("\n| guidance w | interval (t) | asked class recognised | FID_fm | ratio | seconds |")
        print("|---|---|---|---|---|---|")
        sweep = {}
        for entry in [v for v in args.guidance.split(",") if v]:
            w, interval = guidance_entry(entry)
            parts = np.array_split(ask, max(1, n_guided // args.batch))
            images, secs = timed(lambda: np.concatenate(
                [d.sample(len(a), sampler="dpm++", steps=20, clip_x0=True, labels=a,
                          guidance_scale=w, guidance_interval=interval, seed=args.seed + i,
                          progress=False, value_range=(-1, 1)) for i, a in enumerate(parts)]))
            acc = float(np.mean(classifier.predict(images) == ask))
            fid = metrics.fid(images)
            where = "all" if interval is None else f"{interval[0]}-{interval[1]}"
            print(f"| {w:g} | {where} | {100 * acc:.1f}% | {fid:.3f} | {fid / floors[n_guided]:.2f}x | "
                  f"{secs:.0f} |", flush=True)
            sweep[(w, interval)] = (fid, images)
        # per class at ddpm.sample()'s default scale where the sweep has it, else at its best FID
        key = default if default in sweep else min(sweep, key=lambda k: sweep[k][0], default=None)
        if key is not None:
            images = sweep[key][1]
            why = "ddpm.sample()'s default" if key == default else "the sweep's best FID"
            where = "" if key[1] is None else f" on {key[1][0]} <= t <= {key[1][1]}"
            print(f"\nper-class FID_fm at w = {key[0]:g}{where} ({why}), {n_guided // 10} samples "
                  f"per class, floor = {n_guided // 10} real training images of the class:")
            for c, fid, floor in per_class_fid(images, ask, train, train_y, test, test_y,
                                               n_guided // 10, rng):
                print(f"  {datasets.FASHION_MNIST_CLASSES[c]:12s} {fid:.3f} (floor {floor:.3f}, "
                      f"{fid / floor:.2f}x)")

    if rows:
        print("\n| sampler | steps | samples | FID_fm | floor | ratio | seconds |")
        print("|---|---|---|---|---|---|---|")
        for name, steps, n, fid, floor, secs in rows:
            print(f"| {name} | {steps} | {n} | {fid:.3f} | {floor:.3f} | {fid / floor:.2f}x | {secs:.0f} |")

    if "nll" not in skip and args.nll_images:
        x = test[:args.nll_images]
        # fixed_large (beta_t) gives the tighter bound for this model, as in Ho et al.'s CIFAR-10 numbers
        res, secs = timed(lambda: d.nll(x, t_samples=args.nll_t_samples, seed=args.seed,
                                        variance="fixed_large"))
        if conditional:
            resc, _ = timed(lambda: d.nll(x, t_samples=args.nll_t_samples, seed=args.seed,
                                          variance="fixed_large",
                                          labels=test_y[:args.nll_images].astype(np.int64)))
            print(f"\nNLL bound given the true class: {resc.bits_per_dim:.4f} +- "
                  f"{resc.stderr:.4f} bits/dim (the line below: the null label, unconditional)")
        mode = "exact (all T)" if args.nll_t_samples is None else f"Monte Carlo, {args.nll_t_samples} t per image"
        print(f"\nNLL bound on {len(x)} test images, {mode}: {res.bits_per_dim:.4f} +- {res.stderr:.4f} bits/dim "
              f"(prior {res.prior:.2e}, decoder {res.decoder:.4f}, sum of KL terms {res.total_kl:.4f}); "
              f"{secs:.0f} s")


if __name__ == "__main__":
    main()
