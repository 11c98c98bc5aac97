"""Ctrl-C stops long single calls too, and cutting them into chunks changes no result.

A U-Net call on more than ``_core.UNET_CHUNK`` images (UNet.forward, a sampler's
or nll's network call) runs in chunks of that fixed size with a Ctrl-C check
between them (issue 14: one forward of B=1024 could not be interrupted).  The
chunk size comes from the shape alone, so the numbers do not depend on the
thread count; a batch up to the chunk size is one call (a sampler's of 16 or more
images: two halves, tests/test_infer_lanes.py), and a larger one equals its chunks
run one by one.
"""
from __future__ import annotations

import numpy as np
import pytest

import ddpm
from ddpm import _core

from conftest import assert_subprocess_ok

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
            num_train_timesteps=50)
C = getattr(_core, "UNET_CHUNK", 64)      # older versions: one call, no chunks


def chunks(n):
    return [(i, min(n, i + C)) for i in range(0, n, C)]


@pytest.mark.parametrize("n,K", [(C, None), (C + 1, None), (2 * C + 5, None), (C + 7, 4)])
def test_a_large_forward_and_backward_equal_their_chunks(threads, n, K):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 50, n)
    g = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    cfg = TINY if K is None else {**TINY, "num_class_embeds": K}
    lab = None if K is None else rng.integers(0, K, n)
    results = []
    for nt in (1, 2):
        threads(nt)
        net = ddpm.UNet(seed=1, **cfg)
        y = net(x, t, lab)
        dx = net.backward(g)
        ref = ddpm.UNet(seed=1, **cfg)
        y_ref = np.concatenate([ref(x[a:b], t[a:b], None if lab is None else lab[a:b])
                                for a, b in chunks(n)])
        dx_ref = []
        for a, b in chunks(n):            # chunk by chunk, gradients accumulating in order
            ref(x[a:b], t[a:b], None if lab is None else lab[a:b])
            dx_ref.append(ref.backward(g[a:b]))
        assert np.array_equal(y, y_ref), np.abs(y - y_ref).max()
        assert np.array_equal(dx, np.concatenate(dx_ref))
        assert np.array_equal(net.grads, ref.grads), np.abs(net.grads - ref.grads).max()
        results.append((y, dx, net.grads.copy()))
    for a, b in zip(results[0], results[1]):
        assert np.array_equal(a, b)                      # the same bits at 1 and 2 threads


def test_a_large_backward_recomputes_from_its_own_inputs():
    net = ddpm.UNet(seed=1, **TINY)
    x = np.random.default_rng(0).standard_normal((C + 3, 1, 8, 8)).astype(np.float32)
    g = np.ones_like(x)
    net(x, 5)
    dx1 = net.backward(g)
    x[:] = 0                                 # the caller reuses its buffer: no effect
    ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50)).sample(
        3, steps=1, sampler="ddim", seed=0, progress=False)
    net.zero_grad()
    dx2 = net.backward(g)
    assert np.array_equal(dx1, dx2)
    with pytest.raises(ValueError, match="images"):
        net.backward(g[:-1])


def test_a_large_sampler_batch_equals_its_chunks():
    d = ddpm.Diffusion(ddpm.UNet(seed=2, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
    n = 2 * C + 3
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    noise = rng.standard_normal((4, n, 1, 8, 8)).astype(np.float32)
    whole = d.sample(n, steps=4, sampler="ddpm", x_T=x_T, noise=noise, progress=False)
    parts = np.concatenate([d.sample(b - a, steps=4, sampler="ddpm", x_T=x_T[a:b],
                                     noise=noise[:, a:b], progress=False)
                            for a, b in chunks(n)])
    assert np.array_equal(whole, parts), np.abs(whole - parts).max()


CTRL_C = """
import os, signal, threading, time
import numpy as np, ddpm
ddpm.set_num_threads(1)
net = ddpm.UNet(seed=0)                          # the 28x28 default
d = ddpm.Diffusion(net)
C = getattr(ddpm._core, "UNET_CHUNK", 64)
x = np.zeros((C, 1, 28, 28), np.float32)
t0 = time.perf_counter(); net(x, 5); one = time.perf_counter() - t0      # one chunk
K = 16
def interrupted(call):
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        call()
    except KeyboardInterrupt:
        return time.perf_counter() - t0
    raise AssertionError("not interrupted")
for name, call in (("forward", lambda: net(np.zeros((K * C, 1, 28, 28), np.float32), 5)),
                   ("sample", lambda: d.sample(K * C, steps=1, sampler="ddim", seed=0,
                                               progress=False))):
    took = interrupted(call)
    # stopped within about a chunk of the signal, far from the K chunks of the whole call
    assert took < 0.2 + 3 * one + 1.0 and took < 0.5 * K * one, (name, took, one)
    print(name, round(took, 2), "s; one chunk", round(one, 2), "s")
print("OK")
"""


def test_ctrl_c_stops_one_large_network_call_between_chunks():
    out = assert_subprocess_ok(CTRL_C, timeout=600)
    assert out.strip().endswith("OK"), out
