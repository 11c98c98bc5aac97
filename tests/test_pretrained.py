"""The model shipped inside the package: ddpm.load_pretrained and ddpm.sample() with no model."""
import json
import os

import numpy as np
import pytest

import ddpm
from ddpm import pretrained

SHIPPED_OBJECTIVE = "v"        # what the shipped model was trained to predict (training.json)


def test_shipped_model_loads_offline_and_is_small():
    path = pretrained.pretrained_path("fashion-mnist")
    w = os.path.join(path, "unet", "diffusion_pytorch_model.safetensors")
    assert os.path.getsize(w) <= 10 * 2**20, "the issue caps the shipped weights at 10 MB"
    d = ddpm.load_pretrained("fashion-mnist")
    assert isinstance(d, ddpm.Diffusion)
    c = d.model.config
    assert (c["sample_size"], c["in_channels"], c["out_channels"]) == (28, 1, 1)
    assert d.schedule.T == 1000 and d.objective == SHIPPED_OBJECTIVE
    # class-conditional: the ten Fashion-MNIST classes and the null label
    from ddpm import datasets
    assert c["num_class_embeds"] == 11
    assert list(c["class_names"]) == list(datasets.FASHION_MNIST_CLASSES)
    # stored as float16: every weight is exactly representable in float16
    p = d.model.params
    assert np.array_equal(p, p.astype(np.float16).astype(np.float32))
    # a fresh copy each call: training one does not change the next
    d.model.params[:] = 0
    assert np.abs(ddpm.load_pretrained().model.params).max() > 0


def test_the_lessons_model_ships_too():
    """The notebooks use the course's setting: an unconditional eps-prediction model."""
    d = ddpm.load_pretrained("fashion-mnist-eps")
    assert d.objective == "eps" and d.model.num_class_embeds is None
    assert tuple(d.model.config["block_out_channels"]) == (16, 32, 64)
    assert "fashion-mnist-eps" in ddpm.pretrained_models()
    assert pretrained.training_info("fashion-mnist-eps")["steps"] > 0
    x = d.sample(2, steps=5, sampler="ddim", seed=0, progress=False)
    assert x.shape == (2, 1, 28, 28) and np.isfinite(x).all()


def test_training_record_ships_beside_the_weights():
    info = pretrained.training_info("fashion-mnist")
    for key in ("command", "steps", "batch_size", "seconds", "threads"):
        assert key in info, f"training.json lacks {key!r}"
    assert "python -m ddpm train" in info["command"]


def test_top_level_sample_uses_the_shipped_model():
    a = ddpm.sample(4, seed=3, progress=False)
    assert a.shape == (4, 1, 28, 28) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    # same as asking the shipped Diffusion for 20 clipped DPM-Solver++ steps explicitly,
    # with random classes and the documented guidance scale
    b = ddpm.load_pretrained().sample(4, sampler="dpm++", steps=20, clip_x0=True, seed=3,
                                      labels="random", guidance_scale=pretrained.GUIDANCE_SCALE,
                                      guidance_interval=pretrained.GUIDANCE_INTERVAL,
                                      progress=False)
    assert np.array_equal(a, b)
    # a guidance_scale of one's own guides every step (diffusers' meaning), unless an
    # interval is given too
    mine = ddpm.sample(4, seed=3, guidance_scale=pretrained.GUIDANCE_SCALE, progress=False)
    every = ddpm.load_pretrained().sample(4, sampler="dpm++", steps=20, clip_x0=True, seed=3,
                                          labels="random", progress=False,
                                          guidance_scale=pretrained.GUIDANCE_SCALE)
    assert np.array_equal(mine, every) and not np.array_equal(mine, a)
    assert np.array_equal(ddpm.sample(4, seed=3, guidance_scale=pretrained.GUIDANCE_SCALE,
                                      guidance_interval=pretrained.GUIDANCE_INTERVAL,
                                      progress=False), a)
    c = ddpm.sample(4, model="fashion-mnist", seed=3, progress=False)
    assert np.array_equal(a, c)


def test_shipped_model_makes_recognisable_clothes():
    """The shipped classifier (ddpm.metrics) recognises the samples about as well as real images.

    The thresholds are relations to real data measured here, not stored outputs."""
    from ddpm import datasets, metrics
    try:
        real, _ = datasets.fashion_mnist("test")
    except OSError:
        pytest.skip("Fashion-MNIST not available")
    x = ddpm.sample(64, seed=0, progress=False) * 2 - 1
    real = real[:64]
    noise = np.clip(ddpm.randn((64, 1, 28, 28), seed=1), -1, 1)
    f_samples, f_real, f_noise = metrics.fid(x), metrics.fid(real), metrics.fid(noise)
    assert f_samples < 0.1 * f_noise, (f_samples, f_noise)
    assert f_samples < 10 * f_real, (f_samples, f_real)
    net = metrics.FeatureNet.load()

    def confidence(images):
        z = net.logits(images).astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True)).max(axis=1).mean()

    # the classifier is nearly as sure about samples as about real clothes
    assert confidence(x) > 0.8 * confidence(real), (confidence(x), confidence(real))
    # and they are not all one class
    assert (metrics.class_histogram(x) > 0).sum() >= 7


def test_ask_the_shipped_model_for_a_class():
    """ddpm.sample(label=...) draws that class (judged by the shipped classifier, which
    is a separate network trained on real images); guidance_scale=0 or labels=None is
    unconditional and spreads over the classes."""
    from ddpm import metrics
    net = metrics.FeatureNet.load()
    for name, k in (("sneaker", 7), ("trouser", 1), ("bag", 8)):
        x = ddpm.sample(16, label=name, seed=5, progress=False, value_range=(-1, 1))
        assert np.mean(net.predict(x) == k) >= 0.75, (name, net.predict(x))
    a = ddpm.sample(64, guidance_scale=0, seed=6, progress=False, value_range=(-1, 1))
    b = ddpm.sample(64, labels=None, seed=6, progress=False, value_range=(-1, 1))
    assert np.array_equal(a, b)
    assert (metrics.class_histogram(a) > 0).sum() >= 7
    with pytest.raises(ValueError, match="spaceship"):
        ddpm.sample(2, label="spaceship", progress=False)


def test_bad_names():
    with pytest.raises(ValueError, match="available: fashion-mnist"):
        ddpm.load_pretrained("cifar10")
    with pytest.raises(TypeError):
        ddpm.load_pretrained(3)
    assert "fashion-mnist" in ddpm.pretrained_models()


def test_missing_files_say_so(tmp_path, monkeypatch):
    from ddpm import _registry
    monkeypatch.setattr(_registry, "_WEIGHTS", str(tmp_path))
    with pytest.raises(OSError, match="missing"):
        ddpm.load_pretrained("fashion-mnist")


def test_float16_save_round_trip(tmp_path):
    d = ddpm.load_pretrained()
    d.model.params[:] = np.random.default_rng(0).standard_normal(d.model.params.size) * 0.05
    d.save(tmp_path / "f32")
    d.save(tmp_path / "f16", dtype="float16")
    s32 = os.path.getsize(tmp_path / "f32" / "unet" / "diffusion_pytorch_model.safetensors")
    s16 = os.path.getsize(tmp_path / "f16" / "unet" / "diffusion_pytorch_model.safetensors")
    assert s16 < 0.55 * s32
    back = ddpm.Diffusion.load(tmp_path / "f16")
    assert back.model.params.dtype == np.float32
    np.testing.assert_array_equal(back.model.params, d.model.params.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="dtype"):
        d.save(tmp_path / "x", dtype="bfloat16")
    d.model.params[0] = 1e6            # does not fit in float16
    with pytest.raises(ValueError, match="float16"):
        d.save(tmp_path / "f16b", dtype="float16")


def test_diffusers_reads_the_shipped_folder():
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import torch
    path = pretrained.pretrained_path()
    pipe = diffusers.DDPMPipeline.from_pretrained(path)
    d = ddpm.load_pretrained()
    x = ddpm.randn((3, 1, 28, 28), seed=1)
    t = d.schedule.model_timestep(np.array([10, 500, 990]))     # the network's 0-based time
    y = np.array([7, 0, 10])                                    # sneaker, T-shirt, null
    ours = d.model(x, t, class_labels=y)
    with torch.no_grad():
        ref = pipe.unet.float()(torch.from_numpy(x), torch.from_numpy(t),
                                class_labels=torch.from_numpy(y)).sample
    assert np.abs(ours - ref.numpy()).max() <= 1e-4
    with open(os.path.join(path, "scheduler", "scheduler_config.json")) as f:
        assert json.load(f)["num_train_timesteps"] == 1000


def test_cli_samples_the_shipped_model_by_default(tmp_path):
    from conftest import run_in_subprocess
    out = tmp_path / "grid.png"
    rc, so, se = run_in_subprocess(
        f"import sys; from ddpm.__main__ import main; "
        f"sys.exit(main(['sample', '--n', '4', '--out', {str(out)!r}, '--no-progress']))")
    assert rc == 0, se
    assert "dpm++ 20 steps" in so
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
