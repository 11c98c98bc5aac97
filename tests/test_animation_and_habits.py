"""The reverse process as a GIF (ddpm.save_animation, ``ddpm sample --animate``) and
diffusers' habits: from_pretrained / save_pretrained, output_type="np" | "pil".

GIF frames are decoded again with Pillow and compared with grids built here from the
trajectory arrays; diffusers' own conversions (numpy_to_pil) are the reference for
output_type where diffusers is installed.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ddpm
from ddpm.sampling import Trajectory
from conftest import run_in_subprocess


@pytest.fixture(scope="module")
def shipped():
    return ddpm.load_pretrained("fashion-mnist")


def gif_frames(path):
    im = Image.open(path)
    frames, durations = [], []
    for k in range(im.n_frames):
        im.seek(k)
        frames.append(np.asarray(im.convert("L")))
        durations.append(im.info.get("duration"))
    return frames, durations, im.info.get("loop")


def cells(frame, n_rows, n_cols, size, pad, scale, top):
    """The images of a grid drawn at (top, 0), each (size, size), downsampled by scale."""
    out = []
    for r in range(n_rows):
        for c in range(n_cols):
            y0 = top + (pad + r * (size + pad)) * scale
            x0 = (pad + c * (size + pad)) * scale
            out.append(frame[y0:y0 + size * scale:scale, x0:x0 + size * scale:scale])
    return out


def test_save_animation_frames_are_x_t_and_x0_hat(tmp_path):
    rng = np.random.default_rng(0)
    M, N, S = 3, 4, 6
    x_t = rng.uniform(-1, 1, (M, N, 1, S, S)).astype(np.float32)
    x0 = rng.uniform(-1, 1, (M, N, 1, S, S)).astype(np.float32)
    traj = Trajectory(np.array([20, 10, 0]), x_t, np.zeros_like(x_t), x0)
    p = ddpm.save_animation(traj, tmp_path / "a.gif", scale=2, padding=1, duration_ms=50,
                            hold_ms=700)
    assert p == str(tmp_path / "a.gif")
    frames, durations, loop = gif_frames(p)
    assert len(frames) == M and loop == 0
    assert durations == [50, 50, 700]
    strip = 14
    grid_w = (2 * (S + 1) + 1) * 2
    for k in range(M):
        f = frames[k]
        left = cells(f, 2, 2, S, 1, 2, strip)
        right = cells(f[:, grid_w + (4 * 1 + 2) * 2:], 2, 2, S, 1, 2, strip)
        for i in range(N):
            want_l = np.floor(np.clip((x_t[k, i, 0] + 1) / 2, 0, 1) * 255 + 0.5)
            want_r = np.floor(np.clip((x0[k, i, 0] + 1) / 2, 0, 1) * 255 + 0.5)
            assert np.abs(left[i] - want_l).max() <= 1, (k, i)
            assert np.abs(right[i] - want_r).max() <= 1, (k, i)
        assert f[:strip].min() < 100, "the t label is drawn"


def test_save_animation_rgb_and_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 2, 3, 5, 5)).astype(np.float32)
    traj = Trajectory(np.array([1, 0]), x, x, x)
    ddpm.save_animation(traj, tmp_path / "rgb.gif")
    assert Image.open(tmp_path / "rgb.gif").n_frames == 2
    with pytest.raises(ValueError, match="gif"):
        ddpm.save_animation(traj, tmp_path / "a.png")
    with pytest.raises(TypeError, match="trajectory"):
        ddpm.save_animation(x, tmp_path / "b.gif")
    with pytest.raises(ValueError, match="scale"):
        ddpm.save_animation(traj, tmp_path / "c.gif", scale=0)
    with pytest.raises(TypeError, match="duration_ms"):
        ddpm.save_animation(traj, tmp_path / "c.gif", duration_ms=1.5)
    with pytest.raises(ValueError, match=r"\(M, N, C, H, W\)"):
        ddpm.save_animation(Trajectory(np.array([1]), x[0], x[0], x[0]), tmp_path / "d.gif")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["rgb.gif"]


def test_cli_sample_animate(tmp_path, shipped):
    gif, png = tmp_path / "reverse.gif", tmp_path / "grid.png"
    rc, out, err = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; sys.exit(main(['sample', '--n', '4', "
        f"'--out', {str(png)!r}, '--animate', {str(gif)!r}, '--no-progress', '--scale', '1']))",
        timeout=300)
    assert rc == 0, err
    assert "21 frames" in out, out                      # dpm++ 20 steps: every step and t = 0
    frames, durations, loop = gif_frames(gif)
    assert len(frames) == 21 and loop == 0
    # the last frame's x_t grid is the samples.png grid (t = 0: x_t is the sample)
    grid = np.asarray(Image.open(png).convert("L")).astype(int)
    last = frames[-1][14:14 + grid.shape[0], :grid.shape[1]].astype(int)
    assert np.abs(last - grid).max() <= 1
    # the first frame is noise, far from it
    assert np.abs(frames[0][14:14 + grid.shape[0], :grid.shape[1]].astype(int) - grid).mean() > 30
    rc, out, err = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; sys.exit(main(['sample', '--n', '1', "
        f"'--out', {str(png)!r}, '--animate', 'x.mp4']))")
    assert rc == 1 and ".gif" in err


# --------------------------------------------------------------------------- output_type
def test_output_type_np_and_pil(shipped):
    kw = dict(steps=4, sampler="ddim", seed=3, progress=False)
    ref = shipped.sample(3, **kw)
    arr = shipped.sample(3, output_type="np", **kw)
    assert arr.shape == (3, 28, 28, 1) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, ref.transpose(0, 2, 3, 1))
    pics = shipped.sample(3, output_type="pil", **kw)
    assert len(pics) == 3 and all(p.mode == "L" and p.size == (28, 28) for p in pics)
    want = np.round(ref[:, 0].astype(np.float64) * 255)
    assert np.abs(np.stack([np.asarray(p) for p in pics]) - want).max() <= 1
    pics2, traj = ddpm.sample(2, model=shipped, output_type="pil", return_trajectory=[0],
                              progress=False, seed=0)
    assert len(pics2) == 2 and traj.x_t.shape == (1, 2, 1, 28, 28)
    with pytest.raises(ValueError, match="output_type"):
        shipped.sample(1, output_type="pt", **kw)
    with pytest.raises(ValueError, match="output_type"):
        ddpm.sample(1, output_type="latent", progress=False)
    with pytest.raises(ValueError, match="value_range"):
        shipped.sample(1, output_type="np", value_range=(-1, 1), **kw)


def test_output_type_pil_matches_diffusers_numpy_to_pil(shipped):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from diffusers.utils import numpy_to_pil
    arr = shipped.sample(2, steps=3, sampler="ddim", seed=1, output_type="np", progress=False)
    ours = shipped.sample(2, steps=3, sampler="ddim", seed=1, output_type="pil", progress=False)
    theirs = numpy_to_pil(arr)
    for a, b in zip(ours, theirs):
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------- from_pretrained / save
def test_from_pretrained_and_save_pretrained(tmp_path, shipped):
    d = ddpm.Diffusion.from_pretrained("fashion-mnist")
    np.testing.assert_array_equal(d.model.params, shipped.model.params)
    assert d.save_pretrained(tmp_path / "m") == str(tmp_path / "m")
    d2 = ddpm.Diffusion.from_pretrained(tmp_path / "m", local_files_only=True)
    np.testing.assert_array_equal(d2.model.params, shipped.model.params)
    # a local folder wins over a shipped name, as in diffusers
    ddpm.Diffusion(ddpm.UNet(seed=5)).save_pretrained(tmp_path / "fashion-mnist")
    import os
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        local = ddpm.Diffusion.from_pretrained("fashion-mnist")
    finally:
        os.chdir(here)
    np.testing.assert_array_equal(local.model.params, ddpm.UNet(seed=5).params)
    u = ddpm.UNet.from_pretrained("fashion-mnist", subfolder="unet")
    np.testing.assert_array_equal(u.params, shipped.model.params)
    fresh = ddpm.UNet(seed=1)                                # float32 weights
    fresh.save_pretrained(tmp_path / "u", variant="fp16")
    u16 = ddpm.UNet.from_pretrained(tmp_path / "u")
    np.testing.assert_array_equal(u16.params, fresh.params.astype(np.float16))
    assert not np.array_equal(u16.params, fresh.params)      # really float16 on disk


def test_from_pretrained_refusals(tmp_path):
    with pytest.raises(OSError, match="never downloads"):
        ddpm.Diffusion.from_pretrained("google/ddpm-cifar10-32")
    with pytest.raises(OSError, match="subfolder='unet'"):
        ddpm.UNet.from_pretrained("fashion-mnist")
    with pytest.raises(TypeError, match="revision"):
        ddpm.Diffusion.from_pretrained("fashion-mnist", revision="main")
    with pytest.raises(ValueError, match="use_safetensors"):
        ddpm.UNet.from_pretrained("fashion-mnist", subfolder="unet", use_safetensors=False)
    with pytest.raises(TypeError, match="pretrained_model_name_or_path"):
        ddpm.Diffusion.from_pretrained(3)
    d = ddpm.Diffusion(ddpm.UNet(seed=0))
    for kw, word in [({"push_to_hub": True}, "push_to_hub"),
                     ({"safe_serialization": False}, "safe_serialization"),
                     ({"variant": "bf16"}, "variant")]:
        with pytest.raises(ValueError, match=word):
            d.save_pretrained(tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


def test_diffusers_reads_save_pretrained(tmp_path, shipped):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    shipped.save_pretrained(tmp_path / "p")
    pipe = diffusers.DDPMPipeline.from_pretrained(tmp_path / "p")
    got = {k: v.numpy() for k, v in pipe.unet.state_dict().items()}
    for name, arr in shipped.model.named_parameters():
        np.testing.assert_array_equal(got[name], arr)
