"""PNG writing and image grids, checked by decoding the PNG again with zlib/struct,
and the ``python -m ddpm demo`` command end to end."""
from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import ddpm
from ddpm import visuals
from conftest import run_in_subprocess


# --------------------------------------------------------------------------- PNG decoder
def read_png(path) -> tuple[np.ndarray, dict]:
    """Decode an 8-bit greyscale or RGB, non-interlaced PNG; check every CRC."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, f"bad CRC in {tag!r}"
        chunks.append((tag, body))
        pos += 12 + length
    assert pos == len(data), "junk after the last chunk"
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    w, h, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0)
    channels = {0: 1, 2: 3}[color]
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    stride = w * channels
    assert len(raw) == h * (stride + 1), (len(raw), h, stride)
    out = np.zeros((h, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, np.int64)
        for i in range(stride):                   # the five PNG filters
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                raise AssertionError(f"bad filter type {ftype}")
            cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    img = out.astype(np.uint8)
    if channels == 3:
        img = img.reshape(h, w, 3)
    return img, {"width": w, "height": h, "color": color}


def u8(v):
    """The 8-bit value of v in [0, 1]: round half up."""
    return int(np.floor(np.clip(v, 0, 1) * 255 + 0.5))


# --------------------------------------------------------------------------- save_grid
def test_save_grid_known_small_grid(tmp_path):
    imgs = np.array([[[[0.0, 1.0], [0.5, 0.25]]], [[[1.0, 0.0], [0.0, 0.75]]]])
    p = tmp_path / "g.png"
    ret = ddpm.save_grid(imgs, p, nrow=2, padding=1)
    assert ret == str(p)
    pix, meta = read_png(p)
    assert (meta["width"], meta["height"], meta["color"]) == (7, 4, 0)
    P = 255                                             # pad value 1.0
    want = np.array([
        [P, P, P, P, P, P, P],
        [P, u8(0.0), u8(1.0), P, u8(1.0), u8(0.0), P],
        [P, u8(0.5), u8(0.25), P, u8(0.0), u8(0.75), P],
        [P, P, P, P, P, P, P]], np.uint8)
    assert np.array_equal(pix, want), f"got\n{pix}\nwant\n{want}"


def test_save_grid_layout_rows_and_scale(tmp_path):
    n, h, w = 5, 3, 4
    imgs = np.stack([np.full((1, h, w), k / 4) for k in range(n)])
    p = tmp_path / "s.png"
    ddpm.save_grid(imgs, p, nrow=3, padding=2, scale=2)
    pix, meta = read_png(p)
    W, H = 3 * (w + 2) + 2, 2 * (h + 2) + 2            # 3 columns, 2 rows
    assert (meta["width"], meta["height"]) == (2 * W, 2 * H)
    small = pix[::2, ::2]
    assert np.array_equal(np.repeat(np.repeat(small, 2, 0), 2, 1), pix)   # nearest upscale
    for k in range(n):
        r, c = divmod(k, 3)
        y0, x0 = 2 + r * (h + 2), 2 + c * (w + 2)
        assert np.all(small[y0:y0 + h, x0:x0 + w] == u8(k / 4)), k
    # the empty sixth cell is padding
    assert np.all(small[2 + (h + 2):2 + (h + 2) + h, 2 + 2 * (w + 2):][:, :w] == 255)


def test_save_grid_rgb(tmp_path):
    imgs = np.zeros((1, 3, 2, 2))
    imgs[0, 0] = 1.0                                    # pure red
    imgs[0, 2, 1, 1] = 1.0                              # one magenta pixel
    p = tmp_path / "rgb.png"
    ddpm.save_grid(imgs, p, padding=0)
    pix, meta = read_png(p)
    assert meta["color"] == 2 and pix.shape == (2, 2, 3)
    assert pix[0, 0].tolist() == [255, 0, 0] and pix[1, 1].tolist() == [255, 0, 255]


def test_value_range_detection(tmp_path):
    # all values in [0, 1] -> read as [0, 1]; anything negative -> [-1, 1]
    p = tmp_path / "v.png"
    ddpm.save_grid(np.array([[[[0.0, 0.5, 1.0]]]]), p, padding=0)
    assert read_png(p)[0].tolist() == [[0, 128, 255]]
    ddpm.save_grid(np.array([[[[-1.0, 0.0, 1.0]]]]), p, padding=0)
    assert read_png(p)[0].tolist() == [[0, 128, 255]]
    ddpm.save_grid(np.array([[[[-0.5, 0.5, 1.0]]]]), p, padding=0)
    assert read_png(p)[0].tolist() == [[u8(0.25), u8(0.75), 255]]
    # explicit value_range wins; outside values clip
    ddpm.save_grid(np.array([[[[0.0, 0.5, 1.0]]]]), p, padding=0, value_range=(-1, 1))
    assert read_png(p)[0].tolist() == [[128, u8(0.75), 255]]
    ddpm.save_grid(np.array([[[[-3.0, 0.0, 3.0]]]]), p, padding=0, value_range=(-1, 1))
    assert read_png(p)[0].tolist() == [[0, 128, 255]]


def test_save_grid_accepts_nhw_and_hw(tmp_path):
    p = tmp_path / "a.png"
    ddpm.save_grid(np.zeros((2, 3, 3)), p, padding=1)
    assert read_png(p)[1]["width"] == 2 * 4 + 1
    ddpm.save_grid(np.zeros((3, 3)), p, padding=0)
    assert read_png(p)[0].shape == (3, 3)


def test_save_grid_does_not_modify_input(tmp_path):
    x = np.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28).astype(np.float32)
    before = x.copy()
    ddpm.save_grid(x, tmp_path / "n.png", scale=2)
    assert np.array_equal(x, before)


def test_write_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "dir" / "a.png"               # parent folders are created
    ddpm.save_grid(np.zeros((1, 1, 4, 4)), p)
    assert p.is_file()
    assert [q.name for q in p.parent.iterdir()] == ["a.png"], list(p.parent.iterdir())
    good = p.read_bytes()
    # a failure at the final rename leaves the old file intact and no temporary behind
    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        ddpm.save_grid(np.ones((1, 1, 4, 4)), p)
    monkeypatch.undo()
    assert p.read_bytes() == good
    assert [q.name for q in p.parent.iterdir()] == ["a.png"], list(p.parent.iterdir())
    # a directory in the way: an error, nothing left behind
    d = tmp_path / "isdir.png"
    d.mkdir()
    with pytest.raises(OSError):
        ddpm.save_grid(np.zeros((1, 1, 4, 4)), d)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["isdir.png", "sub"]


@pytest.mark.parametrize("shape", [(2, 2, 4, 4), (1, 4, 4, 4), (1, 1, 1, 4, 4), (5,), ()])
def test_bad_shapes(tmp_path, shape):
    with pytest.raises(ValueError, match="images must be"):
        ddpm.save_grid(np.zeros(shape), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_write_png_bad_shapes(tmp_path):
    for shape in [(4, 4, 4), (4, 4, 1), (4,), (2, 2, 2, 3)]:
        with pytest.raises(ValueError, match="pixels must be"):
            visuals.write_png(tmp_path / "w.png", np.zeros(shape, np.uint8))


def test_empty_batch_is_a_value_error(tmp_path):
    for vr in (None, (-1, 1)):
        with pytest.raises(ValueError, match="empty|no images"):
            ddpm.save_grid(np.zeros((0, 1, 4, 4)), tmp_path / "e.png", value_range=vr)
        with pytest.raises(ValueError, match="empty|no images"):
            ddpm.save_grid(np.zeros((2, 1, 0, 4)), tmp_path / "e.png", value_range=vr)
    assert not (tmp_path / "e.png").exists()


def test_to_uint8():
    got = visuals.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]))
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 128, 255, 255]


def test_noise_strip_uses_one_eps(linear):
    x0 = ddpm.datasets.tshirt()
    ts = [0, 10, 500, 1000]
    frames = visuals.noise_strip(linear, x0, ts, seed=3)
    assert frames.shape == (4, 1, 28, 28)
    assert np.array_equal(frames[0], x0)
    ab = np.cumprod(1 - np.concatenate([[0.0], np.linspace(1e-4, 0.02, 1000)]))
    eps = [(frames[i].astype(np.float64) - np.sqrt(ab[t]) * x0) / np.sqrt(1 - ab[t])
           for i, t in enumerate(ts) if t]
    for e in eps[1:]:
        assert np.abs(e - eps[0]).max() < 1e-3, np.abs(e - eps[0]).max()


# --------------------------------------------------------------------------- CLI
REPO = Path(__file__).resolve().parent.parent


def test_demo_cli_writes_png(tmp_path):
    out = tmp_path / "x.png"
    rc, stdout, stderr = run_in_subprocess(
        f"import sys, runpy; sys.argv = ['ddpm', 'demo', '--out', {str(out)!r}, '--offline'];"
        f" runpy.run_module('ddpm', run_name='__main__')", cwd=str(REPO))
    assert rc == 0, f"exit {rc}\n{stdout}\n{stderr}"
    assert "wrote" in stdout and "alpha_bar" in stdout
    pix, meta = read_png(out)
    # 6 frames of 28 px, padding 2, scale 4
    assert (meta["width"], meta["height"]) == ((6 * 30 + 2) * 4, (30 + 2) * 4), meta
    assert pix.std() > 10                                  # a picture, not a blank
    assert not list(tmp_path.glob("*.tmp"))


def test_demo_cli_real_module_invocation(tmp_path):
    import subprocess
    out = tmp_path / "y.png"
    proc = subprocess.run([sys.executable, "-m", "ddpm", "demo", "--out", str(out), "--offline",
                           "--schedule", "linear", "--timesteps", "100"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_png(out)[1]["width"] == (6 * 30 + 2) * 4


def test_demo_cli_falls_back_to_tshirt_without_data(tmp_path):
    out = tmp_path / "z.png"
    code = f"""
import os, sys
os.environ.pop("DDPM_DATA", None)
os.environ["HOME"] = {str(tmp_path)!r}
from ddpm import datasets
datasets._SOURCES["fashion-mnist"]["debian"] = {str(tmp_path / 'none')!r}
from ddpm.__main__ import main
sys.exit(main(["demo", "--out", {str(out)!r}, "--offline"]))
"""
    rc, stdout, stderr = run_in_subprocess(code, cwd=str(REPO))
    assert rc == 0, stderr
    assert "T-shirt" in stderr and "apt-get" in stderr
    assert out.is_file()


def test_demo_cli_missing_data_folder_is_an_error(tmp_path):
    rc, stdout, stderr = run_in_subprocess(
        f"import sys; from ddpm.__main__ import main; "
        f"sys.exit(main(['demo', '--out', {str(tmp_path / 'q.png')!r}, '--offline', "
        f"'--data', {str(tmp_path / 'nothing')!r}]))", cwd=str(REPO))
    assert rc == 1 and "error" in stderr, (rc, stderr)
    assert not (tmp_path / "q.png").exists()


def test_info_cli_runs():
    rc, stdout, stderr = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; sys.exit(main(['info']))", cwd=str(REPO))
    assert rc == 0, stderr
    assert f"ddpm {ddpm.__version__}" in stdout and "fashion-mnist test" in stdout
