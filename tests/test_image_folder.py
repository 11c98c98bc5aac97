"""ddpm.datasets.image_folder on folders of procedural images the tests write, and
``ddpm train --data DIR`` end to end on RGB 32x32.

Expected pixels come from the definitions (a centre crop of known pixels, the
8-bit grid k/127.5 - 1, ITU-R 601 luma for grayscale, a linear ramp that a
symmetric resampling filter keeps linear), never from the loader.
"""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

import ddpm
from ddpm import datasets
from conftest import run_in_subprocess


def grid(u8):
    return u8.astype(np.float64) / 127.5 - 1.0


def write(path, array, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)
    return path


def procedural_rgb(rng, h, w):
    """An RGB picture: two ramps and a disc, different in every call."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.2, 0.4) * h
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
    return np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                     np.where(disc, 230, 20)], -1).astype(np.uint8)


def test_square_png_at_its_size_is_read_exactly(tmp_path, rng):
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write(tmp_path / "one.png", a)
    x, y = datasets.image_folder(tmp_path, image_size=16, channels=3)
    assert x.dtype == np.float32 and x.shape == (1, 3, 16, 16) and y.tolist() == [0]
    want = grid(a).transpose(2, 0, 1)
    err = np.abs(x[0] - want).max()
    assert err < 1e-6, f"max diff {err:.2e}"


def test_wide_and_tall_images_are_centre_cropped(tmp_path, rng):
    S = 12
    wide = rng.integers(0, 256, (S, 3 * S, 3), dtype=np.uint8)     # crop columns S..2S
    tall = rng.integers(0, 256, (2 * S + 2, S, 3), dtype=np.uint8)  # crop rows S/2+1 ..
    write(tmp_path / "a_wide.png", wide)
    write(tmp_path / "b_tall.png", tall)
    x, _ = datasets.image_folder(tmp_path, image_size=S, channels=3)
    np.testing.assert_allclose(x[0], grid(wide[:, S:2 * S]).transpose(2, 0, 1), atol=1e-6)
    top = (2 * S + 2 - S) // 2
    np.testing.assert_allclose(x[1], grid(tall[top:top + S]).transpose(2, 0, 1), atol=1e-6)


def test_downscale_keeps_a_linear_ramp_and_constants(tmp_path):
    S, k = 16, 4
    W = S * k
    ramp = np.tile(np.linspace(0, 255, W)[None, :], (W, 1))
    write(tmp_path / "ramp.png", np.round(ramp))
    write(tmp_path / "flat.jpg", np.full((50, 70, 3), 200, np.uint8), "JPEG")
    x, _ = datasets.image_folder(tmp_path, image_size=S, channels=1)
    assert x.shape == (2, 1, S, S)
    # output pixel j covers source pixels j*k .. j*k + k - 1: its centre is j*k + (k-1)/2
    centres = np.arange(S) * k + (k - 1) / 2
    want = grid(np.linspace(0, 255, W)[0] + centres * 255 / (W - 1))
    got = x[1, 0, S // 2, 2:-2]                      # interior: the filter is symmetric there
    err = np.abs(got - want[2:-2]).max()
    assert err <= 1.5 / 127.5, f"ramp off by {err * 127.5:.2f} levels"
    assert np.abs(x[0] - grid(np.array(200))).max() <= 2 / 127.5       # JPEG of a flat grey


def test_grayscale_is_itu601_luma_and_on_the_8bit_grid(tmp_path, rng):
    a = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    write(tmp_path / "c.png", a)
    x, _ = datasets.image_folder(tmp_path, image_size=10, channels=1)
    luma = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    err = np.abs(x[0, 0] - grid(luma)).max() * 127.5
    assert err <= 1.0, f"luma off by {err:.2f} levels"
    levels = (x.astype(np.float64) + 1) * 127.5
    assert np.abs(levels - np.round(levels)).max() < 1e-4


def test_recursive_sorted_labels_formats_and_transparency(tmp_path, rng):
    for i in range(6):
        sub = ("cats", "dogs")[i % 2]
        write(tmp_path / sub / "deeper" / f"{i}.png", procedural_rgb(rng, 20 + i, 30))
    write(tmp_path / "top.JPEG", procedural_rgb(rng, 40, 40), "JPEG")
    write(tmp_path / ".hidden" / "skip.png", procedural_rgb(rng, 8, 8))
    (tmp_path / "notes.txt").write_text("not an image")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255                                           # red, alpha 0 left half
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "cats" / "alpha.png")
    x, y = datasets.image_folder(tmp_path, image_size=8, channels=3)
    assert x.shape == (8, 3, 8, 8)
    # order: "" (top) < "cats" < "dogs"; alpha.png sorts before deeper/ inside cats
    assert y.tolist() == [1, 1, 1, 1, 2, 2, 2, 0], y.tolist()
    alpha = x[0]
    assert np.allclose(alpha[:, :, :3], 1.0, atol=2 / 127.5), "transparent pixels are white"
    assert np.allclose(alpha[0, :, 5:], 1.0) and np.allclose(alpha[1:, :, 5:], -1.0, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1
    x2, _ = datasets.image_folder(tmp_path, image_size=8, channels=3, limit=3)
    np.testing.assert_array_equal(x2, x[:3])


def test_unreadable_file_is_named(tmp_path, rng):
    write(tmp_path / "good.png", procedural_rgb(rng, 10, 10))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(OSError, match="broken.png"):
        datasets.image_folder(tmp_path, image_size=8)
    (tmp_path / "broken.png").unlink()
    write(tmp_path / "gif.png", procedural_rgb(rng, 10, 10)[..., 0], "GIF")   # wrong format
    with pytest.raises(OSError, match="gif.png.*GIF"):
        datasets.image_folder(tmp_path, image_size=8)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_non_regular_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    code = (f"from ddpm import datasets\n"
            f"try:\n    datasets.image_folder({str(tmp_path)!r}, image_size=8)\n"
            f"except OSError as e:\n    print('refused:', e)\n")
    rc, out, err = run_in_subprocess(code, timeout=60)
    assert rc == 0 and "refused:" in out and "pipe.png" in out and "regular" in out, (out, err)


def test_size_caps(tmp_path, rng, monkeypatch):
    write(tmp_path / "big.png", procedural_rgb(rng, 40, 40))
    monkeypatch.setattr(datasets, "_MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="big.png.*pixel"):
        datasets.image_folder(tmp_path, image_size=8)
    monkeypatch.setattr(datasets, "_MAX_FILE_BYTES", 10)
    with pytest.raises(ValueError, match="big.png.*MiB"):
        datasets.image_folder(tmp_path, image_size=8)
    monkeypatch.undo()
    monkeypatch.setattr(datasets, "_MAX_DATA_BYTES", 100)
    with pytest.raises(MemoryError, match="limit="):
        datasets.image_folder(tmp_path, image_size=8)


def test_bad_arguments(tmp_path, rng):
    write(tmp_path / "a.png", procedural_rgb(rng, 10, 10))
    with pytest.raises(FileNotFoundError, match="no folder"):
        datasets.image_folder(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        datasets.image_folder(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG or JPEG"):
        datasets.image_folder(tmp_path / "empty")
    for kw, exc, word in [({"image_size": 2}, ValueError, "image_size"),
                          ({"image_size": 8.0}, TypeError, "image_size"),
                          ({"channels": 2}, ValueError, "channels"),
                          ({"channels": True}, TypeError, "channels"),
                          ({"limit": 0}, ValueError, "limit")]:
        with pytest.raises(exc, match=word):
            datasets.image_folder(tmp_path, **kw)
    with pytest.raises(TypeError, match="path"):
        datasets.image_folder(123)


# --------------------------------------------------------------------------- the CLI
def test_cli_trains_on_an_rgb_folder_end_to_end(tmp_path, rng):
    data = tmp_path / "photos"
    for i in range(10):
        write(data / f"p{i}.png", procedural_rgb(rng, 36 + i, 48))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--image-size", "32", "--channels", "3",
            "--steps", "3", "--batch-size", "4", "--block-channels", "8,16", "--groups", "4",
            "--samples", "4", "--sample-steps", "2", "--out", str(out), "--no-progress"]
    rc, stdout, stderr = run_in_subprocess(
        f"import sys; from ddpm.__main__ import main; sys.exit(main({args!r}))", timeout=300)
    assert rc == 0, stderr
    assert "read 10 images" in stdout and "3x32x32" in stdout, stdout
    d = ddpm.Diffusion.load(out / "model")
    assert d.image_shape == (3, 32, 32)
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    img = Image.open(out / "samples.png")
    assert img.mode == "RGB" and img.size == ((2 * 34 + 2) * 3,) * 2, img.size
    tr = ddpm.Trainer.resume(out / "checkpoint.safetensors", datasets.image_folder(data)[0])
    assert tr.step == 3 and tr.history["loss"] == [float(r["loss"]) for r in rows]


def test_cli_loss_png_message_names_the_extra_without_matplotlib(tmp_path, rng):
    data = tmp_path / "g"
    for i in range(4):
        write(data / f"{i}.png", procedural_rgb(rng, 16, 16)[..., 1])
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--image-size", "16", "--channels", "1",
            "--steps", "1", "--batch-size", "2", "--block-channels", "8,16", "--groups", "4",
            "--samples", "0", "--out", str(out), "--no-progress"]
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            f"from ddpm.__main__ import main; sys.exit(main({args!r}))")
    rc, stdout, stderr = run_in_subprocess(code, timeout=300)
    assert rc == 0, stderr
    assert "no loss.png" in stdout and "ddpm[notebooks]" in stdout, stdout
    assert (out / "loss.csv").is_file() and not (out / "loss.png").exists()


@pytest.mark.parametrize("args, word", [
    (["--data", "nowhere-at-all"], "neither"),
    (["--channels", "2"], "1 or 3"),
    (["--image-size", "32"], "28x28"),
    (["--channels", "8,16", "--block-channels", "8,16"], "once"),
])
def test_cli_train_bad_arguments_are_errors(tmp_path, args, word):
    rc, stdout, stderr = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; "
        f"sys.exit(main(['train', '--out', {str(tmp_path / 'r')!r}] + {args!r}))")
    assert rc == 1 and word in stderr, (rc, stderr)


def test_console_script_name_in_help():
    rc, stdout, stderr = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; main(['--help'])")
    assert rc == 0 and stdout.startswith("usage: ddpm "), stdout[:80]
    assert "export" in stdout and "your own" in stdout
