"""Make docs/lessons/: the key figure of each lesson (6-2-0 ... 6-2-7), from ddpm calls.

    python scripts/make_gallery.py            # writes docs/lessons/*.png, *.gif, README.md

A learner sees these on the repository page without running anything; each picture
is drawn by the same ddpm calls the notebooks make (the shipped Fashion-MNIST models,
the schedules, the closed-form forward process, the samplers), seeded, so running the
script again gives the same pictures.  Needs matplotlib and ipywidgets (the
``notebooks`` extra).  Fashion-MNIST test images are used where the data is found,
the course's procedural T-shirt otherwise.  Pictures are kept small (8-bit palettes,
80 dpi): the folder stays well under 2 MB.
"""
from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "docs", "lessons")


def _figure(w, h):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(1, 2, figsize=(w, h), dpi=80)


def _save(fig, name):
    """Save a matplotlib figure as a palette PNG (a few tens of kB)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=64)
    path = os.path.join(OUT, name)
    img.save(path, optimize=True)
    return name


def _grid(images, name, nrow, scale=2, value_range=(-1, 1)):
    import ddpm
    ddpm.save_grid(images, os.path.join(OUT, name), nrow=nrow, scale=scale,
                   value_range=value_range)
    return name


def _image():
    import ddpm
    try:
        x, y = ddpm.datasets.fashion_mnist("test", download=False)
        return x[0], f"Fashion-MNIST test image 0 ({ddpm.datasets.FASHION_MNIST_CLASSES[y[0]]})"
    except (OSError, ValueError):
        return ddpm.datasets.tshirt(), "the course's procedural T-shirt"


def lesson_0(entries):
    import ddpm
    fig, (a, b) = _figure(9, 3.2)
    z = ddpm.randn(100_000, seed=0)
    a.hist(z, bins=80, density=True, color="0.6")
    u = np.linspace(-4, 4, 400)
    a.plot(u, np.exp(-u * u / 2) / np.sqrt(2 * np.pi), "k", lw=1.5, label="N(0, 1)")
    for k, c in ((1, "#1f77b4"), (2, "#ff7f0e"), (3, "#d62728")):
        share = float(np.mean(np.abs(z) <= k))
        a.axvspan(-k, k, color=c, alpha=0.08)
        a.text(0, 0.05 + 0.07 * k, f"|z| <= {k}: {100 * share:.1f} %", ha="center", fontsize=8)
    a.set_title("100,000 draws of ddpm.randn: the 68 / 95 / 99.7 rule", fontsize=9)
    a.legend(fontsize=8)
    x0, what = _image()
    noisy = np.clip(x0 + 0.5 * ddpm.randn(*x0.shape, seed=1), -1, 1)
    k = np.ones(5) / 5
    blur = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, x0[0])
    blur = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, blur)
    b.imshow(np.concatenate([x0[0], noisy[0], blur], 1), cmap="gray", vmin=-1, vmax=1,
             interpolation="nearest")
    b.set_axis_off()
    b.set_title("image | + Gaussian noise (std 0.5) | blurred: noise is not blur", fontsize=9)
    entries.append(("6-2-0", "What is noise?", _save(fig, "6-2-0-noise.png"),
                    f"Gaussian noise and the 68/95/99.7 rule; {what} with noise and with blur."))


def lesson_1(entries):
    import ddpm
    x0, what = _image()
    ts = [0, 50, 100, 250, 500, 750, 1000]
    rows = [ddpm.visuals.noise_strip(ddpm.NoiseSchedule(k), x0, ts, seed=0)
            for k in ("linear", "cosine")]
    name = _grid(np.concatenate(rows), "6-2-1-forward.png", nrow=len(ts), scale=3)
    entries.append(("6-2-1", "The diffusion idea", name,
                    f"{what} noised at t = {ts} by the closed form, one fixed eps; top row the "
                    f"linear schedule, bottom row cosine (it keeps the image longer)."))


def lesson_2(entries):
    import ddpm
    fig, (a, b) = _figure(9, 3.2)
    t = np.arange(1001)
    for kind in ("linear", "cosine"):
        s = ddpm.NoiseSchedule(kind)
        a.plot(t, s.alpha_bars, label=kind)
        b.plot(t[1:], s.snr_db[1:], label=kind)
    a.set_title("alpha_bar_t: the signal's share of the variance", fontsize=9)
    b.set_title("SNR_t = alpha_bar / (1 - alpha_bar) in dB", fontsize=9)
    for ax in (a, b):
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    entries.append(("6-2-2", "The forward process", _save(fig, "6-2-2-alpha-bar.png"),
                    "alpha_bar_t and the SNR of the linear and cosine schedules (T = 1000)."))


def lesson_3(entries):
    import ddpm
    d = ddpm.load_pretrained("fashion-mnist-eps")
    x0, what = _image()
    ts = [50, 200, 400, 600, 800, 950]
    xt, x0_hat = [], []
    for t in ts:
        x, _ = d.schedule.q_sample(x0[None], t, seed=3)
        xt.append(x[0])
        x0_hat.append(np.clip(d.predict_x0(x, t)[0], -1, 1))
    name = _grid(np.stack(xt + x0_hat), "6-2-3-denoise.png", nrow=len(ts), scale=3)
    entries.append(("6-2-3", "Learning to denoise", name,
                    f"Top: {what} noised at t = {ts}. Bottom: the lessons' model's one-shot guess "
                    f"x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar); its error "
                    f"grows with t."))


def lesson_4(entries):
    import ddpm
    d = ddpm.load_pretrained("fashion-mnist-eps")
    lesson = [1000, 900, 800, 600, 400, 200, 100, 50, 0]
    _, traj = d.sample(4, seed=2, return_trajectory=lesson, progress=False)
    frames = np.concatenate([traj.x_t[:, k] for k in range(2)] +
                            [traj.x0_hat[:, k] for k in range(2)])
    name = _grid(frames, "6-2-4-reverse.png", nrow=len(lesson), scale=2)
    _, run = d.sample(4, steps=50, sampler="ddim", seed=2, return_trajectory=5, progress=False)
    ddpm.save_animation(run, os.path.join(OUT, "6-2-4-reverse.gif"), scale=2, duration_ms=250)
    entries.append(("6-2-4", "Sampling and generation", name,
                    f"A real 1000-step DDPM run of the lessons' model at t = {lesson}: two images' "
                    f"x_t (rows 1-2) and x0_hat (rows 3-4). Animated (50-step DDIM, x_t left, "
                    f"x0_hat right): [6-2-4-reverse.gif](6-2-4-reverse.gif)."))


def lesson_5(entries):
    import ddpm
    d = ddpm.load_pretrained("fashion-mnist-eps")
    runs = [("DDPM, 1000 steps", dict(sampler="ddpm")),
            ("DDIM, 50 steps", dict(sampler="ddim", steps=50)),
            ("DPM-Solver++, 20 steps", dict(sampler="dpm++", steps=20, clip_x0=True))]
    grids = [d.sample(16, seed=0, progress=False, **kw) for _, kw in runs]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=80)
    for ax, (title, _), g in zip(axes, runs, grids):
        ax.imshow(ddpm.make_grid(g, nrow=4), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    info = ddpm.pretrained.training_info("fashion-mnist-eps")
    entries.append(("6-2-5", "Build a diffusion model", _save(fig, "6-2-5-samples.png"),
                    f"The lessons' unconditional model `fashion-mnist-eps` (trained by "
                    f"`{info.get('command', 'ddpm train')}`), "
                    f"16 samples from each sampler, same seed."))


def lesson_6(entries):
    import ddpm
    from ddpm import widgets
    pg = widgets.Playground("checkerboard", 80, seed=0)
    ks = list(range(0, 161, 20))
    name = _grid(pg.frames[ks], "6-2-6-playground.png", nrow=len(ks), scale=3)
    fig, (a, b) = _figure(9, 3.0)
    t = np.arange(1, 1001)
    for kind in ddpm.KINDS:
        a.plot(t, ddpm.NoiseSchedule(kind).snr_db[1:], label=kind)
    a.set_title("SNR (dB) of the four schedules, T = 1000", fontsize=9)
    a.set_xlabel("t")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    b.plot(np.arange(161), pg.rms, color="0.3")
    b.axvline(80, color="0.6", ls="--")
    b.set_title("playground: RMS distance from the pattern, forward then oracle reverse",
                fontsize=9)
    b.set_xlabel("frame")
    b.grid(alpha=0.3)
    entries.append(("6-2-6", "Schedules and playground", _save(fig, "6-2-6-schedules.png"),
                    "SNR of the linear, cosine, scaled_linear and sigmoid schedules, and the "
                    "playground's distance from its pattern."))
    entries.append(("6-2-6", "Schedules and playground", name,
                    f"The playground: a checkerboard through 80 cosine forward steps and 80 "
                    f"oracle reverse steps, frames {ks}."))


def lesson_7(entries):
    import ddpm
    from ddpm import datasets
    d = ddpm.load_pretrained("fashion-mnist")
    how = "the shipped class-conditional model `fashion-mnist`"
    if d.model.num_class_embeds is None:     # a small conditional model, trained here
        x, y = datasets.fashion_mnist("train")
        net = ddpm.UNet(seed=0, block_out_channels=(16, 32, 32), add_attention=False,
                        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                        num_class_embeds=11, class_names=list(datasets.FASHION_MNIST_CLASSES))
        tr = ddpm.Trainer(ddpm.Diffusion(net), x, labels=y, batch_size=64, lr=2e-3,
                          warmup_steps=20, ema_decay=0.99, seed=0, progress=False)
        tr.fit(steps=300)
        d = tr.ema_diffusion()
        how = "a small conditional model trained for 300 steps (the notebook's quick mode)"
    labels = np.repeat(np.arange(10), 6)
    x_T = np.tile(ddpm.randn(6, 1, 28, 28, seed=0), (10, 1, 1, 1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 6.2), dpi=80)
    for ax, w in zip(axes, (0, 1, 3)):
        g = d.sample(60, steps=20, sampler="dpm++", clip_x0=True, labels=labels,
                     guidance_scale=w, x_T=x_T, seed=0, progress=False)
        ax.imshow(ddpm.make_grid(g, nrow=6), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"guidance w = {w}", fontsize=9)
        ax.set_yticks(14 + 30 * np.arange(10))
        ax.set_yticklabels(datasets.FASHION_MNIST_CLASSES if w == 0 else [], fontsize=7)
        ax.set_xticks([])
    entries.append(("6-2-7", "Guidance", _save(fig, "6-2-7-guidance.png"),
                    f"One row per class from {how}, the same noise in every row: w = 0 ignores "
                    f"the class, w = 1 is the conditional model, w = 3 exaggerates the class."))


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    entries = []
    for make in (lesson_0, lesson_1, lesson_2, lesson_3, lesson_4, lesson_5, lesson_6,
                 lesson_7):
        make(entries)
        print(f"{make.__name__}: done", flush=True)
    lines = ["# The lessons at a glance", "",
             "The key figures of each lesson notebook (`notebooks/`), made by "
             "`python scripts/make_gallery.py` from the same ddpm calls (seeded). "
             "Run the notebooks for the interactive versions and every number behind them.", ""]
    last = None
    for lesson, title, name, caption in entries:
        if lesson != last:
            lines += [f"## {lesson} {title}", ""]
            last = lesson
        lines += [f"![{lesson}]({name})", "", caption, ""]
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: {len(os.listdir(OUT))} files, {total / 1024:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
