"""The U-Net runs batches of 16 or more as halves side by side (csrc/nets/unet_lanes.h).

A sampler's (or nll's) batch goes through the U-Net in chunks of
``_core.UNET_CHUNK`` images, and a chunk of 16 or more as two halves, each a
forward of its own images on its own lane of threads; the training step cuts its
batch the same way (tests/test_training.py composes such a step by hand).  The
cut comes from the batch size alone, so:
- the network output a sampler records equals ``UNet.forward`` on each half
  (the first half takes the odd image), chunk by chunk, bit for bit;
- images and trained parameters are the same bits at 1, 2, 3 and 4 threads (two
  lanes of one thread, and lanes of two threads each inside);
- the samplers' lanes keep their own workspace, so sampling leaves the network's
  alone (tests/test_backward_safety.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import ddpm
from ddpm import _core

# The reference 28x28 U-Net: its GEMMs are wide enough that OpenBLAS's rounding
# depends on how many images a forward holds (a tiny U-Net's does not), so a wrong
# cut fails here (checked: halves of n // 2 and n - n // 2 instead fail n = 17, 83).
REF = dict(num_train_timesteps=50)
C = _core.UNET_CHUNK
SPLIT = 16


def expected_parts(n):
    """[(a, b)]: the images each forward of a sampler's step sees, by the rule above."""
    out = []
    for a in range(0, n, C):
        b = min(n, a + C)
        if b - a >= SPLIT:
            h = a + (b - a + 1) // 2
            out += [(a, h), (h, b)]
        else:
            out.append((a, b))
    return out


@pytest.mark.parametrize("n", [SPLIT - 1, SPLIT, SPLIT + 1, C, C + SPLIT + 3])
@pytest.mark.parametrize("K", [None, 4])
def test_a_step_is_a_forward_of_each_half(threads, n, K):
    threads(2)
    cfg = REF if K is None else {**REF, "num_class_embeds": K}
    net = ddpm.UNet(seed=3, **cfg)
    rng = np.random.default_rng(n)
    net.params[:] += rng.standard_normal(net.params.size).astype(np.float32) * 0.05
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
    x_T = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    labels = None if K is None else rng.integers(0, K, n)
    extra = {} if K is None else dict(labels=labels, guidance_scale=1.0)
    _, traj = d.sample(n, steps=1, sampler="ddim", x_T=x_T, return_trajectory=[50],
                       progress=False, **extra)
    seen = traj.eps_hat[0]
    assert np.abs(seen).max() > 0.1                       # a real network output
    want = np.concatenate([net(x_T[a:b], np.full(b - a, 49.0), None if K is None
                               else labels[a:b], grad=False)
                           for a, b in expected_parts(n)])
    assert np.array_equal(seen, want), np.abs(seen - want).max()


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_the_same_bits_at_any_thread_count(threads, sampler):
    d = ddpm.Diffusion(ddpm.UNet(seed=5, **REF), ddpm.NoiseSchedule("linear", timesteps=50))
    runs = []
    for nt in (1, 2, 3, 4):
        threads(nt)
        runs.append(d.sample(C + 20, steps=2, sampler=sampler, seed=9, progress=False,
                             value_range=(-1, 1)))
    for nt, r in zip((2, 3, 4), runs[1:]):
        assert np.array_equal(runs[0], r), (nt, np.abs(runs[0] - r).max())


def test_training_steps_are_the_same_bits_at_any_thread_count(threads):
    rng = np.random.default_rng(2)
    data = np.tanh(rng.standard_normal((40, 1, 28, 28))).astype(np.float32)
    runs = []
    for nt in (1, 2, 3, 4):
        threads(nt)
        d = ddpm.Diffusion(ddpm.UNet(seed=6, **REF), ddpm.NoiseSchedule("linear", timesteps=50))
        tr = ddpm.Trainer(d, data, batch_size=SPLIT + 5, lr=1e-3, seed=4, progress=False)
        tr.fit(steps=2)
        runs.append((d.model.params.copy(), np.array(tr.history["loss"])))
    for nt, (p, loss) in zip((2, 3, 4), runs[1:]):
        assert np.array_equal(runs[0][1], loss), nt
        assert np.array_equal(runs[0][0], p), (nt, np.abs(runs[0][0] - p).max())
