"""Choose the training recipe by measurement: short runs at the same wall-clock budget.

Not a test.  Each recipe is a baseline with one choice changed (objective, min-SNR
weighting, schedule, learning-rate decay, batch size, EMA decay, flips, network size
and attention, label dropout).  Every run trains a class-conditional model on
Fashion-MNIST for the same budget of seconds on this machine (the step count is set
from the speed of its first steps, so a slower network gets fewer steps, as it would
in the same time), then samples ``--n`` images with the EMA weights (DPM-Solver++,
20 steps, x0_hat clipped, balanced labels, guidance w = 1 and w = 2) and scores them:

* FID_fm at n against the floor at the same n (real training images), as a ratio;
* the share of samples the shipped classifier puts in the asked class;
* the class shares of unconditional (null-label) samples, min and max;
* training throughput (images/s) and steps done.

Results are appended to a JSON file as they come (a run can be resumed: recipes
already in the file are skipped) and printed as a Markdown table.

    python scripts/recipe_search.py --budget 600 --n 1000 --out docs/recipes.json
    python scripts/recipe_search.py --base-channels 16,32,64 --only baseline v+min-snr-5 ...

Run it on idle cores: the budget is wall-clock time.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import ddpm
from ddpm import datasets, metrics

BASE = dict(channels=(32, 64, 128), attention=True, objective="eps", min_snr=None,
            schedule="linear", lr=1e-3, decay="constant", batch=128, ema=0.999, flip=False,
            p_uncond=0.1)

RECIPES = {
    "baseline": {},
    "v": dict(objective="v"),
    "min-snr-5": dict(min_snr=5.0),
    "v+min-snr-5": dict(objective="v", min_snr=5.0),
    "cosine-schedule": dict(schedule="cosine"),
    "lr-cosine-decay": dict(decay="cosine"),
    "lr-2e-3-cosine": dict(lr=2e-3, decay="cosine"),
    "batch-64": dict(batch=64),
    "ema-0.9995": dict(ema=0.9995),
    "flip": dict(flip=True),
    "net-16-32-64": dict(channels=(16, 32, 64)),
    "net-32-64-128": dict(channels=(32, 64, 128)),
    "net-32-64-64": dict(channels=(32, 64, 64)),
    "no-attention": dict(attention=False),
    "p-uncond-0.2": dict(p_uncond=0.2),
}


def build(r, seed):
    L = len(r["channels"])
    down = ("DownBlock2D",) * (L - 1) + (("AttnDownBlock2D",) if r["attention"] else ("DownBlock2D",))
    up = (("AttnUpBlock2D",) if r["attention"] else ("UpBlock2D",)) + ("UpBlock2D",) * (L - 1)
    net = ddpm.UNet(seed=seed, block_out_channels=r["channels"], down_block_types=down,
                    up_block_types=up, add_attention=r["attention"], norm_num_groups=8,
                    num_class_embeds=len(datasets.FASHION_MNIST_CLASSES) + 1,
                    class_names=list(datasets.FASHION_MNIST_CLASSES))
    return ddpm.Diffusion(net, ddpm.NoiseSchedule(r["schedule"]), objective=r["objective"])


def train(r, x, y, budget, seed):
    d = build(r, seed)
    tr = ddpm.Trainer(d, x, labels=y, batch_size=r["batch"], lr=r["lr"], seed=seed,
                      ema_decay=r["ema"], warmup_steps=100, min_snr_gamma=r["min_snr"],
                      flip=r["flip"], p_uncond=r["p_uncond"], progress=False,
                      lr_schedule="cosine" if r["decay"] == "cosine" else "constant",
                      total_steps=10 ** 9 if r["decay"] == "cosine" else None)
    t0 = time.perf_counter()
    tr.fit(steps=20)                       # measure the speed, then size the run to the budget
    per_step = (time.perf_counter() - t0) / 20
    total = max(40, int(budget / per_step))
    tr.total_steps = total                 # the cosine decay ends with the budget
    tr.fit(steps=total - 20)
    secs = time.perf_counter() - t0
    return tr, total, secs


def score(tr, n, floor, seed):
    d = tr.ema_diffusion()
    classifier = metrics.FeatureNet.load()
    ask = np.arange(n) % 10
    out = {}
    for w in (1.0, 2.0):
        imgs = np.concatenate([d.sample(len(a), steps=20, sampler="dpm++", clip_x0=True,
                                        labels=a, guidance_scale=w, seed=seed + i,
                                        progress=False, value_range=(-1, 1))
                               for i, a in enumerate(np.array_split(ask, max(1, n // 250)))])
        out[f"fid_w{w:g}"] = metrics.fid(imgs) / floor
        out[f"acc_w{w:g}"] = float(np.mean(classifier.predict(imgs) == ask))
    unc = d.sample(min(n, 500), steps=20, sampler="dpm++", clip_x0=True, seed=seed,
                   progress=False, value_range=(-1, 1))
    h = metrics.class_histogram(unc)
    out["uncond_min"], out["uncond_max"] = float(h.min()), float(h.max())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=600, help="training seconds per recipe")
    ap.add_argument("--n", type=int, default=1000, help="samples scored per recipe")
    ap.add_argument("--only", nargs="*", default=None, help="recipe names (default: all)")
    ap.add_argument("--out", default="docs/recipes.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-channels", default=None,
                    help="the baseline's block_out_channels, comma separated (default 32,64,128)")
    a = ap.parse_args()
    if a.base_channels:
        BASE["channels"] = tuple(int(c) for c in a.base_channels.split(","))
    x, y = datasets.fashion_mnist("train")
    results = json.load(open(a.out)) if os.path.exists(a.out) else {}
    rng = np.random.default_rng(a.seed)
    floor = metrics.fid(x[rng.choice(len(x), a.n, replace=False)])
    print(f"floor: FID_fm of {a.n} real training images = {floor:.3f}; budget {a.budget:.0f} s "
          f"per recipe on {ddpm.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}",
          flush=True)
    for name in a.only or RECIPES:
        if name in results:
            continue
        r = dict(BASE, **RECIPES[name])
        load0 = os.getloadavg()[0]
        tr, steps, secs = train(r, x, y, a.budget, a.seed)
        row = dict(recipe=name, changes=RECIPES[name], base=dict(BASE), steps=steps, seconds=round(secs),
                   img_s=round(steps * r["batch"] / secs, 1), epochs=round(tr.epoch, 2),
                   loss_last100=float(np.mean(tr.history["loss"][-100:])), floor=floor,
                   load_at_start=round(load0, 2))
        row.update(score(tr, a.n, floor, a.seed))
        results[name] = row
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, a.out)
        print(json.dumps(row), flush=True)
    print("\n| recipe | img/s | steps | epochs | FID_fm/floor w=1 | w=2 | asked class w=1 | w=2 "
          "| null-label class shares |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['img_s']} | {r['steps']} | {r['epochs']} | {r['fid_w1']:.2f}x | "
              f"{r['fid_w2']:.2f}x | {100 * r['acc_w1']:.1f}% | {100 * r['acc_w2']:.1f}% | "
              f"{100 * r['uncond_min']:.1f}-{100 * r['uncond_max']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
