"""The right exception, naming the argument, for every case of issue 14's probe.

Users get ValueError, TypeError, OSError or MemoryError (RuntimeError for a
call-order error, FloatingPointError/KeyboardInterrupt where documented), never
an OverflowError, a silently truncated or misread value, or a file that a later
load refuses.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import ddpm

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)


def tiny_diffusion(T=50):
    return ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=T))


def tiny_trainer(**kw):
    data = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    return ddpm.Trainer(tiny_diffusion(), data, batch_size=4, progress=False, **kw)


# ------------------------------------------------------------- integers too large for C
@pytest.mark.parametrize("t", [2 ** 70, -2 ** 70, 2 ** 63, np.uint64(2 ** 64 - 1),
                               np.array([1, 2 ** 63], np.uint64)])
def test_q_sample_huge_t_is_a_value_error(t):
    s = ddpm.NoiseSchedule("linear")
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="t must be in 1..T"):
        s.q_sample(x, t=t, seed=0)


def test_sample_progress_every_huge_is_a_value_error():
    with pytest.raises(ValueError, match="progress_every"):
        tiny_diffusion().sample(1, steps=1, progress_every=10 ** 12, progress=False)


@pytest.mark.parametrize("epochs,exc", [(float("inf"), ValueError), (float("nan"), ValueError),
                                        (-1.0, ValueError), ("3", TypeError), (True, TypeError)])
def test_fit_epochs_must_be_a_finite_positive_number(epochs, exc):
    tr = tiny_trainer()
    with pytest.raises(exc, match="epochs"):
        tr.fit(epochs=epochs)
    assert tr.step == 0


@pytest.mark.parametrize("value", [2 ** 31, 2 ** 63, 10 ** 30, 0, -1, 4097])
def test_unet_attention_head_dim_out_of_range_is_a_value_error(value):
    with pytest.raises(ValueError, match="attention_head_dim"):
        ddpm.UNet(seed=0, **{**TINY, "attention_head_dim": value})


# --------------------------------------------------------------- the training step's inputs
def test_nan_in_the_callers_noise_is_named_not_a_non_finite_loss():
    tr = tiny_trainer()
    p0 = tr.diffusion.model.params.copy()
    x0 = tr.data[:4]
    noise = np.random.default_rng(1).standard_normal(x0.shape).astype(np.float32)
    noise[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="noise contains NaN"):
        tr.train_step(x0, t=[1, 2, 3, 4], noise=noise)
    with pytest.raises(ValueError, match="noise must have"):
        tr.train_step(x0, t=[1, 2, 3, 4], noise=noise[:1])      # once broadcast silently
    assert tr.step == 0 and np.array_equal(tr.diffusion.model.params, p0)


def test_float_t_in_the_training_step_is_refused_not_truncated():
    tr = tiny_trainer()
    with pytest.raises(TypeError, match="t must be an int"):
        tr.train_step(tr.data[:4], t=[3.7, 5.2, 1.0, 2.0])
    assert tr.step == 0


def test_floating_point_error_text_has_the_numbers():
    tr = tiny_trainer()
    tr.diffusion.model.params[0] = np.inf
    with pytest.raises(FloatingPointError) as info:
        tr.train_step()
    msg = str(info.value)
    assert "%g" not in msg and "loss=" in msg, msg


# -------------------------------------------------------------------------- flags
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_trainer_flags_are_booleans(value):
    with pytest.raises(TypeError, match="decoupled_weight_decay"):
        tiny_trainer(decoupled_weight_decay=value)


@pytest.mark.parametrize("key,value", [("lr", "0.001"), ("eps", "1e-8"), ("ema_decay", "0.9"),
                                       ("betas", 0.9), ("betas", (0.9,))])
def test_trainer_numbers_are_numbers(key, value):
    with pytest.raises(TypeError, match=key):
        tiny_trainer(**{key: value})


# ---------------------------------------------------------------------------- pictures
@pytest.mark.parametrize("bad,exc,match", [
    (np.full((1, 1, 4, 4), np.nan), ValueError, "NaN"),
    (np.full((1, 1, 4, 4), np.inf), ValueError, "NaN or Inf"),
    (np.ones((1, 1, 4, 4)) * (0.5 + 0.5j), TypeError, "complex"),
    (np.array([[["a"]]]), TypeError, "real numbers"),
])
def test_save_grid_refuses_what_it_cannot_draw(tmp_path, bad, exc, match):
    with pytest.raises(exc, match=match):
        ddpm.save_grid(bad, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
    with pytest.raises(ValueError, match="value_range"):
        ddpm.save_grid(np.zeros((1, 1, 4, 4)), tmp_path / "g.png", value_range=(1, 1))


# ------------------------------------------------------------------------ saves
def test_trainer_save_refuses_what_resume_would_refuse(tmp_path):
    tr = tiny_trainer()
    tr.fit(steps=1)
    path = tmp_path / "ck.safetensors"
    tr.save(path)
    before = path.read_bytes()
    for arr in (tr.diffusion.model.params, tr.m, tr.ema):
        keep = arr[3]
        arr[3] = np.nan
        with pytest.raises(ValueError, match="holds NaN or Inf") as saving:
            tr.save(path)
        assert path.read_bytes() == before                   # nothing was written
        assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]
        arr[3] = keep
    # the same text resume gives for such a file
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(str(path), framework="numpy") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["ema"][3] = np.nan
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError) as resuming:
        ddpm.Trainer.resume(path, tr.data, progress=False)
    said = str(saving.value).split("(): ", 1)[1].split(";")[0]
    assert said in str(resuming.value), (said, str(resuming.value))


def test_unet_save_refuses_nan_weights(tmp_path):
    net = ddpm.UNet(seed=0, **TINY)
    net.params[7] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        net.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------ threads
def test_load_state_dict_during_a_running_sample_is_refused():
    d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear", timesteps=1000))
    state = {k: v * 0 for k, v in d.model.state_dict().items()}
    params0 = d.model.params.copy()
    ref = d.sample(2, steps=8, sampler="ddim", seed=3, progress=False)
    started = threading.Event()
    out = {}

    def run():
        out["images"] = d.sample(2, steps=8, sampler="ddim", seed=3,
                                 progress=lambda k, n: started.set(), progress_every=1)

    th = threading.Thread(target=run)
    th.start()
    assert started.wait(60)
    refused = 0
    while th.is_alive():          # every attempt while the run holds the model is refused
        try:
            d.model.load_state_dict(state)
        except RuntimeError as e:
            assert "in use by another thread" in str(e), e
            refused += 1
            time.sleep(0.005)
        else:
            break                 # the run had just ended: then the load is fine
    th.join()
    assert refused > 0
    assert np.array_equal(out["images"], ref)          # the run kept its weights
    if not np.array_equal(d.model.params, params0):
        assert not d.model.params.any()                # all or nothing


# ------------------------------------------------------------- more numbers too large
def test_save_grid_sizes_are_checked(tmp_path):
    x = np.zeros((2, 1, 4, 4))
    for kw in (dict(scale=2 ** 70), dict(scale=2.5), dict(scale=0), dict(nrow=2 ** 70),
               dict(padding=-1), dict(padding=2 ** 40)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            ddpm.save_grid(x, tmp_path / "g.png", **kw)
    with pytest.raises(TypeError, match="value_range"):
        ddpm.save_grid(x, tmp_path / "g.png", value_range=("a", "b"))
    assert not (tmp_path / "g.png").exists()


def test_numbers_beyond_the_float_range_are_value_errors():
    d = tiny_diffusion()
    with pytest.raises(ValueError, match="guidance_scale"):
        d.sample(1, steps=1, guidance_scale=2 ** 2000, progress=False)
    with pytest.raises(ValueError, match="beta_start"):
        ddpm.NoiseSchedule("linear", beta_start=2 ** 2000)
    with pytest.raises(ValueError, match="lr"):
        tiny_trainer(lr=2 ** 2000)
