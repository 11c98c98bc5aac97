"""One line that changes when any number the engine computes changes.

A fixed set of seeded calls through the public API, each result hashed
(SHA-256 of its float bits), printed as one line: the combined hash first,
then a short hash per item.  A refactor that keeps the bits prints the same
line; run it before and after, at 1 and 2 threads:

    python benchmarks/fingerprint.py --threads 1
    python benchmarks/fingerprint.py --threads 2

Items: q_sample (linear and cosine), the reference U-Net's forward and
backward (parameter gradients and d loss / d x), 2-step training runs (eps;
v with min-SNR weighting and warm-up; eps on batches of 20, which the step
runs as two halves), DDPM / DDIM (eta 0.5) / DPM-Solver++ samples with
trajectories (4 images) and a DDIM sample of 20 (two halves), an exact NLL
bound on 4 images of a small U-Net, and the shipped classifier's features,
logits and one training step.
Synthetic images (no data files needed).  Not a test; it takes ~20 s.
"""
import argparse
import hashlib
import sys

import numpy as np

import ddpm
from ddpm import metrics


def h(*arrays) -> str:
    d = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        d.update(str(a.dtype).encode() + str(a.shape).encode())
        d.update(a.tobytes())
    return d.hexdigest()


def images(n, seed, c=1, s=28):
    """Smooth synthetic images on the 8-bit grid in [-1, 1] (an NLL needs the grid)."""
    x = np.tanh(ddpm.randn(n, c, s, s, seed=seed).astype(np.float64) * 0.8)
    return (np.round((x + 1) * 127.5) / 127.5 - 1).astype(np.float32)


def items():
    out = {}
    x0 = images(8, 1)
    for kind in ("linear", "cosine"):
        s = ddpm.NoiseSchedule(kind)
        xt, eps = s.q_sample(x0, t=np.arange(1, 1000, 125), seed=3)
        out[f"q_sample_{kind}"] = h(xt, eps)

    net = ddpm.UNet(seed=0)
    y = net(x0, t=np.arange(8) * 120)
    net.zero_grad()
    dx = net.backward(np.sin(np.arange(y.size, dtype=np.float32)).reshape(y.shape))
    out["unet_fwd"] = h(y)
    out["unet_bwd"] = h(net.grads, dx)

    data = images(32, 2)
    for name, kw in (("train_eps", dict(objective="eps")),
                     ("train_v_minsnr", dict(objective="v"))):
        d = ddpm.Diffusion(ddpm.UNet(seed=1), ddpm.NoiseSchedule("linear"), **kw)
        extra = dict(min_snr_gamma=5.0, warmup_steps=3, weight_decay=0.01) if name != "train_eps" else {}
        tr = ddpm.Trainer(d, data, batch_size=8, lr=1e-3, seed=7, ema_decay=0.99,
                          progress=False, **extra)
        tr.fit(steps=2)
        out[name] = h(d.model.params, tr.m, tr.v, tr.ema, np.array(tr.history["loss"]))
    # a batch of 20: the step runs it as two halves side by side (csrc/nets/unet_lanes.h)
    d = ddpm.Diffusion(ddpm.UNet(seed=1), ddpm.NoiseSchedule("linear"))
    tr = ddpm.Trainer(d, data, batch_size=20, lr=1e-3, seed=8, progress=False)
    tr.fit(steps=2)
    out["train_eps_b20"] = h(d.model.params, tr.m, tr.v, tr.ema, np.array(tr.history["loss"]))

    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear"))
    for sampler, kw in (("ddpm", dict(steps=10)), ("ddim", dict(steps=10, eta=0.5)),
                        ("dpm++", dict(steps=10))):
        img, traj = d.sample(4, sampler=sampler, seed=5, progress=False, return_trajectory=3,
                             value_range=(-1, 1), **kw)
        out[f"sample_{sampler}"] = h(img, traj.x_t, traj.eps_hat, traj.x0_hat)
    # 20 images: the network runs as two halves side by side (csrc/nets/unet_lanes.h)
    out["sample_ddim_n20"] = h(d.sample(20, sampler="ddim", steps=3, seed=6, progress=False,
                                        value_range=(-1, 1)))

    small = ddpm.UNet(seed=2, block_out_channels=(16, 32), layers_per_block=1,
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    ds = ddpm.Diffusion(small, ddpm.NoiseSchedule("cosine"), objective="v")
    r = ds.nll(x0[:4], batch_size=4, seed=0)
    out["nll_exact"] = h(np.asarray(r.per_image, np.float64), np.asarray(r.kl_per_t, np.float64))

    fnet = metrics.FeatureNet.load()
    out["classifier_fwd"] = h(fnet.features(x0), fnet.logits(x0))
    f2 = metrics.FeatureNet(seed=3)
    f2.train_step(x0, np.arange(8) % 10, lr=1e-3)
    out["classifier_step"] = h(f2.params)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--verbose", action="store_true", help="one item per line")
    a = ap.parse_args(argv)
    if a.threads:
        ddpm.set_num_threads(a.threads)
    out = items()
    total = hashlib.sha256("".join(f"{k}={v};" for k, v in out.items()).encode()).hexdigest()
    if a.verbose:
        for k, v in out.items():
            print(f"{k:18s} {v}")
    print(total[:16] + " " + " ".join(f"{k}:{v[:8]}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
