"""Class-conditional models and classifier-free guidance: the network against diffusers'
UNet2DModel(num_class_embeds=K) (forward, autograd gradients, finite differences), the
training step with labels and label dropout against PyTorch, the three guided samplers
against diffusers loops that run the network twice per step, and bad labels."""
import numpy as np
import pytest

import ddpm
from conftest import AdamTrack
from ddpm import _core
from ddpm.sampling import sampling_timesteps

K = 5                        # 4 classes and the null label 4
TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
            num_class_embeds=K, class_names=["circle", "square", "cross", "ring"])
SHAPE = (3, 1, 8, 8)
PT = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


@pytest.fixture(autouse=True)
def _one_thread(threads):
    threads(1)


@pytest.fixture(scope="module")
def net():
    return ddpm.UNet(seed=5, **TINY)


def images(rng, n=3):
    return np.clip(rng.standard_normal((n, 1, 8, 8)) * 0.5, -1, 1).astype(np.float32)


# ----------------------------------------------------------------------------- the network

def test_forward_and_gradients_match_diffusers(net, rng):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    ref = net.to_diffusers()
    assert ref.config.num_class_embeds == K
    x = images(rng, 4)
    t = np.array([0, 10, 500, 999])
    labels = np.array([0, 3, 4, 1])
    y = net(x, t, class_labels=labels)
    xt = torch.tensor(x, requires_grad=True)
    yr = ref(xt, torch.tensor(t), class_labels=torch.tensor(labels)).sample
    err = np.abs(y - yr.detach().numpy()).max()
    assert err <= 1e-4, f"forward differs by {err:.3g}"
    g = rng.standard_normal(y.shape).astype(np.float32)
    net.zero_grad()
    dx = net.backward(g)
    (yr * torch.tensor(g)).sum().backward()
    assert np.abs(dx - xt.grad.numpy()).max() <= 1e-3
    grads = dict(net.named_grads())
    for name, p in ref.named_parameters():
        scale = max(1.0, float(p.grad.abs().max()))
        diff = np.abs(grads[name] - p.grad.numpy()).max() / scale
        assert diff <= 1e-3, f"{name}: gradient differs by {diff:.3g}"
    # only the rows of the labels used get a gradient
    ce = grads["class_embedding.weight"]
    assert np.all(ce[2] == 0) and np.all(np.abs(ce[[0, 1, 3, 4]]).max(axis=1) > 0)


def test_class_embedding_gradient_by_finite_differences(net, rng):
    x = images(rng, 2)
    labels = np.array([1, 1])              # both images add into one row: the scatter-add
    g = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    t = np.array([100.0, 700.0])
    net.zero_grad()
    net(x, t, class_labels=labels)
    net.backward(g)
    analytic = dict(net.named_grads())["class_embedding.weight"][1].copy()
    table = dict(net.named_parameters())["class_embedding.weight"]
    h = 1e-2
    for j in (0, 7, 33, 63):
        keep = table[1, j]
        f = []
        for s in (h, -h):
            table[1, j] = keep + s
            f.append(np.sum(net(x, t, class_labels=labels).astype(np.float64) * g))
        table[1, j] = keep
        numeric = (f[0] - f[1]) / (2 * h)
        assert abs(numeric - analytic[j]) <= 2e-2 * max(1.0, abs(numeric)), (j, numeric,
                                                                            analytic[j])


def test_embedding_backward_same_bits_at_any_thread_count(threads, rng):
    net = ddpm.UNet(seed=1, **TINY)
    x = images(rng, 9)
    labels = rng.integers(0, K, 9)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = []
    for n in (1, 2, 3):
        threads(n)
        net.zero_grad()
        net(x, np.arange(9) * 100, class_labels=labels)
        net.backward(g)
        out.append(net.grads.copy())
    assert all(np.array_equal(out[0], o) for o in out[1:])


def test_save_load_and_diffusers_reads_our_folder(net, tmp_path, rng):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    net.save(tmp_path / "unet")
    back = ddpm.UNet.load(tmp_path / "unet")
    assert back.class_names == net.class_names and back.num_class_embeds == K
    assert np.array_equal(back.params, net.params)
    ref = diffusers.UNet2DModel.from_pretrained(tmp_path / "unet")
    x = images(rng)
    y = net(x, [3, 30, 300], class_labels=["ring", "circle", 4])
    with torch.no_grad():
        yr = ref(torch.tensor(x), torch.tensor([3, 30, 300]),
                 class_labels=torch.tensor([3, 0, 4])).sample.numpy()
    assert np.abs(y - yr).max() <= 1e-4


@pytest.mark.parametrize("labels,exc,match", [
    ([0, 1], ValueError, "one entry per image"),
    ([0, 1, 5], ValueError, "0..4"),
    ([0, 1, -1], ValueError, "0..4"),
    (["circle", "hexagon", 0], ValueError, "unknown class name"),
    ([0.5, 1, 2], TypeError, "ints or class names"),
    (None, ValueError, "class-conditional"),
])
def test_bad_labels_are_clear_errors(net, rng, labels, exc, match):
    with pytest.raises(exc, match=match):
        net(images(rng), 10, class_labels=labels)


def test_unconditional_model_refuses_labels(rng):
    plain = ddpm.UNet(seed=0, **{k: v for k, v in TINY.items()
                                 if k not in ("num_class_embeds", "class_names")})
    with pytest.raises(ValueError, match="unconditional"):
        plain(images(rng), 10, class_labels=[0, 1, 2])
    d = ddpm.Diffusion(plain)
    for kw in (dict(labels=[0, 1, 2]), dict(labels="random"), dict(guidance_scale=3.0)):
        with pytest.raises(ValueError, match="unconditional|class-conditional"):
            d.sample(3, steps=2, sampler="ddim", progress=False, **kw)


# ----------------------------------------------------------------------------- training

def labelled_trainer(**kw):
    rng = np.random.default_rng(0)
    x = images(rng, 48)
    y = rng.integers(0, K - 1, 48)
    d = ddpm.Diffusion(ddpm.UNet(seed=2, **TINY), ddpm.NoiseSchedule("linear", timesteps=100))
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 8)
    return ddpm.Trainer(d, x, labels=y, **kw)


def test_five_labelled_steps_with_dropout_match_pytorch_and_diffusers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    tr = labelled_trainer(lr=1e-3, grad_clip=1.0, ema_decay=None, p_uncond=0.3)
    ref = tr.diffusion.model.to_diffusers().train()
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.0)
    track = AdamTrack(ref)           # rounding-level gradients: see conftest.py
    s = tr.diffusion.schedule
    rng = np.random.default_rng(3)
    for k in range(5):
        x0 = tr.data[8 * k:8 * k + 8]
        labels = tr.labels[8 * k:8 * k + 8]
        drop = rng.random(8) < 0.3
        t = rng.integers(1, s.T + 1, 8)
        eps = rng.standard_normal(x0.shape).astype(np.float32)
        tr.train_step(x0, t=t, noise=eps, labels=labels, drop=drop)
        a = torch.tensor(s.sqrt_alpha_bars[t], dtype=torch.float32)[:, None, None, None]
        b = torch.tensor(s.sqrt_one_minus_alpha_bars[t], dtype=torch.float32)[:, None, None, None]
        xt = a * torch.tensor(x0) + b * torch.tensor(eps)
        opt.zero_grad()
        used = torch.tensor(np.where(drop, K - 1, labels))
        out = ref(xt, torch.tensor(t - 1), class_labels=used).sample
        torch.nn.functional.mse_loss(out, torch.tensor(eps)).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        track.note()
        opt.step()
    track.check(dict(tr.diffusion.model.named_parameters()), lr=1e-3, steps=5)


def test_label_dropout_rate_and_determinism():
    lab = np.arange(20000, dtype=np.int64) % 4
    a, b = np.empty_like(lab), np.empty_like(lab)
    _core.train_drop_labels(a, lab, 0.2, 4, 7, 3)
    _core.train_drop_labels(b, lab, 0.2, 4, 7, 3)
    assert np.array_equal(a, b)
    dropped = a == 4
    assert abs(dropped.mean() - 0.2) < 0.01, dropped.mean()       # 5 sigma is 0.014
    assert np.array_equal(a[~dropped], lab[~dropped])
    _core.train_drop_labels(b, lab, 0.2, 4, 7, 4)                  # another step
    assert not np.array_equal(a, b)
    _core.train_drop_labels(b, lab, 0.0, 4, 7, 3)
    assert np.array_equal(b, lab)


def test_labelled_training_resumes_bit_identically(tmp_path):
    full = labelled_trainer(seed=4, flip=True, lr_schedule="cosine", total_steps=6,
                            warmup_steps=2)
    full.fit(steps=6)
    half = labelled_trainer(seed=4, flip=True, lr_schedule="cosine", total_steps=6,
                            warmup_steps=2)
    half.fit(steps=3)
    half.save(tmp_path / "ck.safetensors")
    back = ddpm.Trainer.resume(tmp_path / "ck.safetensors", half.data, labels=half.labels,
                               progress=False)
    back.fit(steps=3)
    assert np.array_equal(back.diffusion.model.params, full.diffusion.model.params)
    assert back.history["lr"] == full.history["lr"]
    assert full.history["lr"][-1] < full.history["lr"][2]           # the cosine decays


def test_trainer_label_checks():
    with pytest.raises(ValueError, match="null label"):
        labelled_trainer().__class__(labelled_trainer().diffusion, images(np.random.default_rng(0), 4),
                                     labels=np.array([0, 1, 2, 4]))
    d = ddpm.Diffusion(ddpm.UNet(seed=2, **TINY), ddpm.NoiseSchedule("linear", timesteps=100))
    with pytest.raises(ValueError, match="labels"):
        ddpm.Trainer(d, images(np.random.default_rng(0), 4)).train_step()
    with pytest.raises(ValueError, match="one per image"):
        ddpm.Trainer(d, images(np.random.default_rng(0), 4), labels=[0, 1])


def test_loss_draws_t_and_eps_like_the_first_training_step():
    tr = labelled_trainer(seed=9, ema_decay=None, p_uncond=0.0)
    x = tr.data[tr._batch_indices(0)]
    lab = tr.labels[tr._batch_indices(0)]
    expect = tr.diffusion.loss(x, seed=9, class_labels=lab)
    got = tr.train_step()
    assert abs(got - expect) <= 1e-6 * expect, (got, expect)


# ----------------------------------------------------------------------------- guidance

def scheduler_schedule(sched):
    ac = sched.alphas_cumprod.double().numpy()
    return ddpm.NoiseSchedule.from_betas(1 - ac / np.concatenate([[1.0], ac[:-1]]))


def guided_loop(sched, steps, x_T, net, labels, w, noise=None, eta=None, rescale=0.0,
                interval=None):
    """diffusers: the network twice per step (labels, then the null label), combined;
    with interval (t_lo, t_hi), guided only where t_lo <= lesson time <= t_hi (the lesson
    time is diffusers' timestep + 1) and w = 1 elsewhere."""
    import torch

    def rescale_noise_cfg(cfg, cond, guidance_rescale):
        """Lin et al. 2023 as diffusers' pipelines apply it (its module needs transformers):
        per image, blend in cfg * std(cond) / std(cfg), torch's unbiased std."""
        dims = list(range(1, cfg.ndim))
        ratio = cond.std(dim=dims, keepdim=True) / cfg.std(dim=dims, keepdim=True)
        return guidance_rescale * (cfg * ratio) + (1 - guidance_rescale) * cfg

    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy())
    null = np.full(len(labels), K - 1)
    for k, t in enumerate(sched.timesteps):
        c = torch.from_numpy(net(x.numpy(), int(t), class_labels=labels))
        u = torch.from_numpy(net(x.numpy(), int(t), class_labels=null))
        inside = interval is None or interval[0] <= int(t) + 1 <= interval[1]
        mo = u + (w if inside else 1.0) * (c - u)
        if rescale and inside:
            mo = rescale_noise_cfg(mo, c, guidance_rescale=rescale)
        kw = {}
        if eta is not None:
            kw["eta"] = eta
            if eta > 0:
                kw["variance_noise"] = torch.from_numpy(noise[k])
        x = sched.step(mo, t, x, **kw).prev_sample
    return x.numpy()


@pytest.mark.parametrize("sampler,objective,w,rescale,interval", [
    ("ddpm", "eps", 3.0, 0.0, None), ("ddim", "v", 2.5, 0.0, None), ("ddim", "x0", 4.0, 0.7, None),
    ("dpm++", "v", 3.0, 0.0, None), ("dpm++", "x0", 1.5, 0.5, None),
    ("ddim", "v", 2.5, 0.0, (300, 800)), ("dpm++", "v", 3.0, 0.5, (1, 584))])
def test_guided_samplers_match_diffusers(net, rng, sampler, objective, w, rescale, interval):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    steps = 12
    labels = np.array([0, 2, 3])
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((steps,) + SHAPE).astype(np.float32)
    if sampler == "ddpm":
        sched = diffusers.DDPMScheduler(prediction_type=PT[objective], timestep_spacing="trailing")
        g = torch.Generator().manual_seed(11)
        sched.set_timesteps(steps)
        noise = np.zeros((steps,) + SHAPE, np.float32)
        for k, t in enumerate(sched.timesteps):
            if int(t) > 0:
                noise[k] = torch.randn(SHAPE, generator=g).numpy()
        kw = dict(noise=noise)
        loop_kw = {}
    elif sampler == "ddim":
        sched = diffusers.DDIMScheduler(prediction_type=PT[objective], timestep_spacing="trailing")
        kw = dict(eta=0.5, noise=noise, ddim_prev="diffusers")   # t - T // steps
        loop_kw = dict(eta=0.5, noise=noise)
    else:
        sched = diffusers.DPMSolverMultistepScheduler(
            prediction_type=PT[objective], timestep_spacing="trailing",
            algorithm_type="dpmsolver++", solver_order=2)
        kw, loop_kw = {}, {}
    d = ddpm.Diffusion(net, scheduler_schedule(sched), objective=objective)
    ours = d.sample(3, steps=steps, sampler=sampler, x_T=x_T, labels=labels, guidance_scale=w,
                    guidance_rescale=rescale, value_range=(-1, 1), progress=False,
                    guidance_interval=interval, **kw)
    if sampler == "ddpm":
        sched = diffusers.DDPMScheduler(prediction_type=PT[objective], timestep_spacing="trailing")
        import torch as _t
        gen = _t.Generator().manual_seed(11)
        sched.set_timesteps(steps)
        x = _t.from_numpy(x_T.copy())
        null = np.full(3, K - 1)
        for t in sched.timesteps:
            c = _t.from_numpy(net(x.numpy(), int(t), class_labels=labels))
            u = _t.from_numpy(net(x.numpy(), int(t), class_labels=null))
            x = sched.step(u + w * (c - u), t, x, generator=gen).prev_sample
        ref = x.numpy()
    else:
        ref = guided_loop(sched, steps, x_T, net, labels, w, rescale=rescale, interval=interval,
                          **loop_kw)
    err = np.abs(ours - ref).max()
    print(f"guided {sampler} {objective} w={w} rescale={rescale} interval={interval}: "
          f"max diff {err:.3g}")
    assert err <= 1e-5, f"max diff {err:.3g}"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_w1_is_plain_conditional_and_w0_plain_null_sampling(net, sampler):
    d = ddpm.Diffusion(net, objective="v")
    kw = dict(steps=6, sampler=sampler, seed=3, progress=False)
    labels = [0, "cross", 3]
    cond = d.sample(3, labels=labels, **kw)
    assert np.array_equal(d.sample(3, labels=labels, guidance_scale=1.0, **kw), cond)
    null = d.sample(3, labels=[K - 1] * 3, **kw)
    assert np.array_equal(d.sample(3, labels=labels, guidance_scale=0.0, **kw), null)
    assert np.array_equal(d.sample(3, **kw), null)       # labels=None: the null label
    guided = d.sample(3, labels=labels, guidance_scale=3.0, **kw)
    assert not np.array_equal(guided, cond) and not np.array_equal(guided, null)


def test_random_labels_come_from_the_seed(net):
    from ddpm.sampling import class_labels
    d = ddpm.Diffusion(net)
    a, null = class_labels(d, "random", 1000, 5)
    b, _ = class_labels(d, "random", 1000, 5)
    c, _ = class_labels(d, "random", 1000, 6)
    assert null == K - 1 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() == 0 and a.max() == K - 2                     # never the null label
    assert np.all(np.abs(np.bincount(a) / 1000 - 0.25) < 0.06)


def test_a_guidance_interval_guides_only_its_steps(net):
    d = ddpm.Diffusion(net, objective="v")
    kw = dict(steps=6, sampler="dpm++", seed=3, progress=False, labels=[0, 1, 3])
    guided = d.sample(3, guidance_scale=3.0, **kw)
    assert np.array_equal(d.sample(3, guidance_scale=3.0, guidance_interval=(1, 1000), **kw),
                          guided)                                # every step: no change
    cond = d.sample(3, **kw)
    # trailing 6 of 1000 visit t = 1000, 833, 667, 500, 333, 167: (2, 100) holds none of them
    assert np.array_equal(d.sample(3, guidance_scale=3.0, guidance_interval=(2, 100), **kw),
                          cond)
    part = d.sample(3, guidance_scale=3.0, guidance_interval=(300, 700), **kw)
    assert not np.array_equal(part, cond) and not np.array_equal(part, guided)
    with pytest.raises(ValueError, match="class-conditional"):
        plain = {k: v for k, v in TINY.items() if k not in ("num_class_embeds", "class_names")}
        ddpm.Diffusion(ddpm.UNet(seed=0, **plain)).sample(1, steps=2, sampler="ddim",
                                                         progress=False, guidance_interval=(1, 10))


@pytest.mark.parametrize("kw,match", [
    (dict(labels=[0, 1, 2], guidance_interval=(0, 10)), r"guidance_interval\[0\]"),
    (dict(labels=[0, 1, 2], guidance_interval=(10, 1001)), r"guidance_interval\[1\]"),
    (dict(labels=[0, 1, 2], guidance_interval=(500, 100)), "t_lo <= t_hi"),
    (dict(labels=[0, 1]), "one entry per image"),
    (dict(labels=[0, 1, 7]), "0..4"),
    (dict(labels=[0, 1, 2], guidance_rescale=1.5), "guidance_rescale"),
    (dict(labels=[0, 1, 2], guidance_scale=float("nan")), "guidance_scale"),
])
def test_bad_guidance_arguments(net, kw, match):
    with pytest.raises(ValueError, match=match):
        ddpm.Diffusion(net).sample(3, steps=2, sampler="ddim", progress=False, **kw)


def test_guidance_with_the_gaussian_hook_ignores_labels(linear):
    """The binding's test denoiser takes no labels: guided == unguided exactly."""
    ts, prevs = sampling_timesteps(1000, 5, "ddim")
    x_T = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    a = np.empty_like(x_T)
    _core.sample(a, (0.1, 0.7), None, linear.alpha_bars, ts, prevs, sampler=1, objective=0,
                 x_T=x_T)
    assert np.all(np.isfinite(a))


def test_nll_of_a_conditional_model_takes_labels(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
    x = np.round((images(rng, 2) + 1) * 127.5) / 127.5 - 1
    null = d.nll(x, seed=0)
    same = d.nll(x, seed=0, labels=[K - 1, K - 1])
    assert np.array_equal(null.per_image, same.per_image)            # None = the null label
    cond = d.nll(x, seed=0, labels=["circle", 2])
    assert not np.array_equal(cond.per_image, null.per_image)
    with pytest.raises(ValueError, match="0..4"):
        d.nll(x, seed=0, labels=[0, 9])


def test_diffusion_level_calls_default_to_the_null_label(net, rng):
    # UNet.forward wants labels like diffusers; Diffusion's predictions, like sample() and
    # nll(), read class_labels=None as the null label (unconditional)
    d = ddpm.Diffusion(net)
    x, t = images(rng), [10, 500, 990]
    null = [net.num_class_embeds - 1] * 3
    with pytest.raises(ValueError, match="class_labels"):
        net(x, d.schedule.model_timestep(np.array(t)))
    for f in (d.predict_eps, d.predict_x0, d.model_output):
        assert np.array_equal(f(x, t), f(x, t, class_labels=null))
        assert not np.array_equal(f(x, t), f(x, t, class_labels=[0, 1, 2]))
    assert d.loss(x, seed=3) == d.loss(x, seed=3, class_labels=null)
