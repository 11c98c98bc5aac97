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

import os

import numpy as np
import pytest

import ddpm
from ddpm import _core

from conftest import assert_subprocess_ok

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


def test_sampling_and_training_take_turns_on_the_lanes(threads):
    """Twin 1 runs a training step's half with the whole workspace and a sampler's
    half with a lean one (only what an inference forward writes): after each switch
    its results are those of a network that never switched."""
    threads(2)
    rng = np.random.default_rng(7)
    data = np.tanh(rng.standard_normal((40, 1, 28, 28))).astype(np.float32)
    n = SPLIT + 3

    def run(net, params):
        net.params[:] = params
        d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
        return d.sample(n, steps=2, sampler="ddim", seed=1, progress=False, value_range=(-1, 1))

    net = ddpm.UNet(seed=8, **REF)
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
    p0 = net.params.copy()
    first = run(net, p0)
    tr = ddpm.Trainer(d, data, batch_size=SPLIT + 5, lr=1e-3, seed=4, progress=False)
    tr.fit(steps=1)
    p1 = net.params.copy()
    second = run(net, p1)
    tr.fit(steps=1)                                   # training again after sampling
    p2 = net.params.copy()
    third = run(net, p2)

    fresh = ddpm.Diffusion(ddpm.UNet(seed=8, **REF), ddpm.NoiseSchedule("linear", timesteps=50))
    ftr = ddpm.Trainer(fresh, data, batch_size=SPLIT + 5, lr=1e-3, seed=4, progress=False)
    ftr.fit(steps=2)                                  # the same two steps, no sampling between
    assert np.array_equal(fresh.model.params, p2)
    for params, got in ((p0, first), (p1, second), (p2, third)):
        want = run(ddpm.UNet(seed=8, **REF), params)
        assert np.array_equal(got, want), np.abs(got - want).max()
    assert not np.array_equal(first, third)           # the training did change the samples


def test_prepared_weights_follow_the_params(threads):
    """A sampler transforms the 3x3 convolutions' weights once per call (unet_infer's
    key), not in every step: a call after the parameters changed in place (no
    training between) samples with the new ones, as a network that never sampled."""
    threads(2)
    n = SPLIT + 3
    rng = np.random.default_rng(9)

    def run(net):
        d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
        return d.sample(n, steps=3, sampler="ddim", seed=2, progress=False, value_range=(-1, 1))

    net = ddpm.UNet(seed=10, **REF)
    p0 = net.params.copy()
    p1 = p0 + (0.02 * rng.standard_normal(p0.size)).astype(np.float32)
    first = run(net)
    net.params[:] = p1
    second = run(net)
    net.params[:] = p0
    third = run(net)
    fresh = ddpm.UNet(seed=10, **REF)
    fresh.params[:] = p1
    want = run(fresh)
    assert np.array_equal(second, want), np.abs(second - want).max()
    assert np.array_equal(first, third)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("nt", [1, 2, 4])
def test_an_inference_forward_borrows_scratch_for_its_attention(threads, nt):
    """Without a kept forward, the attention's probabilities go to per-thread slots
    of the convolution's scratch.  Here attention at 32x32 over 4 channels needs
    more of it than the convolutions do, even for one thread's (1024, 1024) slot (a
    U-Net that does not ask for it fails this under the sanitizers); the output
    equals a kept forward's, and a lane's (sampling) equals UNet.forward on each
    half."""
    threads(nt)
    cfg = dict(sample_size=32, block_out_channels=(4, 4), norm_num_groups=2,
               attention_head_dim=4, layers_per_block=1,
               down_block_types=("AttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "AttnUpBlock2D"), num_train_timesteps=50)
    net = ddpm.UNet(seed=2, **cfg)
    rng = np.random.default_rng(nt)
    net.params[:] += rng.standard_normal(net.params.size).astype(np.float32) * 0.1
    x = rng.standard_normal((SPLIT + 1, 1, 32, 32)).astype(np.float32)
    t = np.full(SPLIT + 1, 30.0)
    lean = net(x, t, grad=False)
    kept = net(x, t, grad=True)
    assert np.abs(kept).max() > 0.1
    assert np.array_equal(lean, kept), np.abs(lean - kept).max()
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
    _, traj = d.sample(SPLIT + 1, steps=1, sampler="ddim", x_T=x, return_trajectory=[50],
                       progress=False)
    h = (SPLIT + 2) // 2
    want = np.concatenate([net(x[:h], np.full(h, 49.0), grad=False),
                           net(x[h:], np.full(SPLIT + 1 - h, 49.0), grad=False)])
    assert np.array_equal(traj.eps_hat[0], want)


@pytest.mark.parametrize("cfg", [
    dict(sample_size=16, block_out_channels=(8, 16, 16, 32), layers_per_block=1,
         norm_num_groups=4, attention_head_dim=4,
         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
         up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    dict(sample_size=12, block_out_channels=(8, 16), layers_per_block=3, norm_num_groups=4,
         attention_head_dim=8, num_class_embeds=3,
         down_block_types=("AttnDownBlock2D", "DownBlock2D"),
         up_block_types=("UpBlock2D", "AttnUpBlock2D")),
])
def test_the_lanes_planned_workspace_gives_the_networks_numbers(threads, cfg):
    """The denoiser's twins plan their workspace: a block's slots take the floats of
    slots no later block reads, and a skip concatenation's parts are written in place
    (csrc/nets/runtime.h).  For U-Nets of other shapes than the reference (more
    levels, more layers, attention here and there, classes), a sampler's network
    outputs still equal UNet.forward's (the whole workspace) on each half."""
    threads(2)
    K = cfg.get("num_class_embeds")
    net = ddpm.UNet(seed=4, num_train_timesteps=50, **cfg)
    rng = np.random.default_rng(11)
    net.params[:] += rng.standard_normal(net.params.size).astype(np.float32) * 0.1
    S, n = cfg["sample_size"], SPLIT + 5
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
    x_T = rng.standard_normal((n, 1, S, S)).astype(np.float32)
    labels = None if K is None else rng.integers(0, K, n)
    extra = {} if K is None else dict(labels=labels, guidance_scale=1.0)
    _, traj = d.sample(n, steps=1, sampler="ddim", x_T=x_T, return_trajectory=[50],
                       progress=False, **extra)
    h = (n + 1) // 2
    want = np.concatenate([net(x_T[a:b], np.full(b - a, 49.0),
                               None if K is None else labels[a:b], grad=False)
                           for a, b in ((0, h), (h, n))])
    assert np.abs(want).max() > 0.1
    assert np.array_equal(traj.eps_hat[0], want), np.abs(traj.eps_hat[0] - want).max()


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


HUGE_PAGES = """
import ddpm
def huge_kb():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
ddpm.set_num_threads(2)
d = ddpm.Diffusion(ddpm.UNet(seed=0), ddpm.NoiseSchedule("linear"))
before = huge_kb()
d.sample(64, steps=1, sampler="ddim", seed=0, progress=False)
print(huge_kb() - before)
"""


@pytest.mark.skipif(_thp_mode() != "madvise",
                    reason="the kernel's THP mode is not madvise (or not Linux): nothing to ask for")
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"),
                    reason="no /proc/self/smaps_rollup (Linux before 4.14): nothing to count with")
def test_the_samplers_buffers_are_asked_for_on_huge_pages():
    # csrc/core/alloc.h: the prepared weights (51 MB for this network) and the
    # lanes' workspaces are advised as transparent huge pages; 4 KB pages cost the
    # sampler ~8% here.  Without the advice this process gains none (checked).
    grew_kb = int(assert_subprocess_ok(HUGE_PAGES, timeout=300).strip())
    assert grew_kb >= 32 * 1024, grew_kb
