"""The command line for class-conditional models and real images: ddpm train --conditional,
ddpm sample --label/--guidance, ddpm inpaint, ddpm img2img (each run as a user runs it)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ddpm

PIL = pytest.importorskip("PIL.Image")


def run(*args, cwd):
    p = subprocess.run([sys.executable, "-m", "ddpm", *args], capture_output=True, text=True,
                       cwd=cwd, timeout=600)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    x = (np.tanh(ddpm.randn(28, 28, seed=0)) + 1) * 127.5
    PIL.fromarray(x.astype(np.uint8)).save(d / "in.png")
    m = np.full((28, 28), 255, np.uint8)
    m[8:20, 6:22] = 0                                   # black: inpaint
    PIL.fromarray(m).save(d / "mask.png")
    return d


def test_inpaint_keeps_the_white_part_of_the_mask(files):
    rc, out, err = run("inpaint", "--image", "in.png", "--mask", "mask.png", "--steps", "10",
                       "--jump-length", "3", "--jump-n-sample", "2", "--n", "2",
                       "--no-progress", "--scale", "1", "--out", "inp.png", cwd=files)
    assert rc == 0, err
    grid = np.asarray(PIL.open(files / "inp.png").convert("L")).astype(int)
    # panels of 28 px with 2 px padding: original, masked input, 2 completions
    panel = lambda k: grid[2:30, 2 + 30 * k:30 + 30 * k]          # noqa: E731
    keep = np.asarray(PIL.open(files / "mask.png")) == 255
    assert np.abs(panel(2)[keep] - panel(0)[keep]).max() <= 1     # kept pixels: the original
    assert np.abs(panel(2)[~keep] - panel(0)[~keep]).mean() > 5   # the box: new content
    assert "completions" in out


def test_img2img_and_bad_input(files):
    rc, out, err = run("img2img", "--image", "in.png", "--strength", "0.4", "--steps", "10",
                       "--n", "2", "--no-progress", "--out", "i2i.png", cwd=files)
    assert rc == 0, err
    assert (files / "i2i.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, err = run("img2img", "--image", "in.png", "--strength", "1.5", "--no-progress",
                       cwd=files)
    assert rc == 1 and "strength" in err
    rc, out, err = run("inpaint", "--image", "nope.png", "--mask", "mask.png", cwd=files)
    assert rc == 1 and "nope.png" in err


def test_train_conditional_then_sample_a_class_by_name(files):
    rc, out, err = run("train", "--steps", "6", "--batch-size", "8", "--block-channels", "8,16",
                       "--conditional", "--no-attention", "--limit", "200", "--samples", "10",
                       "--sample-steps", "3", "--flip", "--lr-schedule", "cosine",
                       "--no-progress", "--out", "run", cwd=files)
    assert rc == 0, err
    assert "one row per class" in out
    d = ddpm.Diffusion.load(files / "run" / "model")
    assert d.model.num_class_embeds == 11 and d.model.class_names[7] == "Sneaker"
    rc, out, err = run("sample", "--model", "run/model", "--label", "sneaker", "--guidance", "3",
                       "--n", "4", "--steps", "3", "--no-progress", "--out", "s.png", cwd=files)
    assert rc == 0, err
    rc, out, err = run("sample", "--model", "run/model", "--label", "sneaker", "--guidance", "3",
                       "--guidance-interval", "200,700", "--n", "4", "--steps", "3",
                       "--no-progress", "--out", "si.png", cwd=files)
    assert rc == 0, err
    # trailing 3 of 1000 visit t = 1000, 667, 334: two of them are guided, so not s.png
    assert (files / "si.png").read_bytes() != (files / "s.png").read_bytes()
    rc, out, err = run("sample", "--model", "run/model", "--label", "sneaker",
                       "--guidance-interval", "700", "--no-progress", cwd=files)
    assert rc == 1 and "--guidance-interval" in err
    rc, out, err = run("sample", "--model", "run/model", "--label", "hat", "--n", "2",
                       "--steps", "2", "--no-progress", cwd=files)
    assert rc == 1 and "unknown class name" in err
