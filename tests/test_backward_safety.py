"""A backward uses only the activations of its own forward (issue 14's heap overflow).

``UNet.backward`` once ran on whatever the C workspace held: after a sampler's,
``nll``'s, a training step's or a shallow copy's forward of another batch it wrote
past ``dx`` (a larger batch), returned a partly uninitialised ``dx`` (a smaller one)
or silently returned the gradient of the other call (the same batch).  Each path
runs in its own subprocess (a crash is a failed test, not a dead runner).  A forward
that another call replaced must end in a RuntimeError (or a ValueError for a batch
that is not the forward's).  Samplers and ``nll`` run on the network's inference
lanes (csrc/nets/unet_lanes.h) and leave its workspace alone: after them the
backward must be the gradient of its own forward, bit for bit a fresh network's.
Afterwards a forward and backward on the same object still give the gradient of a
fresh network bit for bit.
"""
from __future__ import annotations

import pytest

from conftest import assert_subprocess_ok

PRELUDE = """
import copy, numpy as np, ddpm
TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
net = ddpm.UNet(seed=0, **TINY)
d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", timesteps=50))
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
g = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)

def refused(fn, exc=RuntimeError, what="forward"):
    try:
        fn()
    except exc as e:
        assert what in str(e), f"{type(e).__name__}: {e}"
        return
    raise AssertionError(f"no {exc.__name__}: the backward ran on activations it does not own")

def own_gradient(model, xs, t, gs):
    # the forward of xs at t is still the one held: the backward is its gradient
    model.zero_grad()
    dx = model.backward(gs)
    fresh = ddpm.UNet(seed=0, **TINY)
    fresh.params[:] = model.params
    fresh(xs, t)
    ref = fresh.backward(gs)
    assert np.array_equal(dx, ref), np.abs(dx - ref).max()
    assert np.array_equal(model.grads, fresh.grads)

def still_right(model):
    # the same object, used properly afterwards, equals a fresh network bit for bit
    model.zero_grad()
    model(x, [3, 40])
    dx = model.backward(g)
    fresh = ddpm.UNet(seed=0, **TINY)
    fresh.params[:] = model.params               # a training step may have changed them
    fresh(x, [3, 40])
    ref = fresh.backward(g)
    assert np.array_equal(dx, ref), np.abs(dx - ref).max()
    assert np.array_equal(model.grads, fresh.grads)
    print("OK")
"""

CASES = {
    # the reproducer: a sampler's batch of 64 after a forward of 2
    "sample_larger_batch": """
        net(x, [10, 20])
        d.sample(64, steps=1, sampler="ddim", seed=0, progress=False)
        own_gradient(net, x, [10, 20], g)
        still_right(net)
    """,
    "sample_smaller_batch": """
        x6 = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
        net(x6, 5)
        d.sample(1, steps=2, sampler="ddpm", seed=0, progress=False)
        own_gradient(net, x6, 5, np.ones_like(x6))
        still_right(net)
    """,
    "sample_same_batch": """
        net(x, [10, 20])
        d.sample(2, steps=1, sampler="dpm++", seed=0, progress=False)
        own_gradient(net, x, [10, 20], g)
        still_right(net)
    """,
    "nll_batch_16": """
        net(x, [10, 20])
        x0 = rng.integers(0, 256, (20, 1, 8, 8)) / 127.5 - 1
        d.nll(x0, batch_size=16, t_samples=2, seed=0)
        own_gradient(net, x, [10, 20], g)
        still_right(net)
    """,
    "shallow_copy": """
        other = copy.copy(net)                   # shares the C network and its workspace
        net(x, [10, 20])
        other(np.zeros((5, 1, 8, 8), np.float32), 7)
        refused(lambda: net.backward(g))
        refused(lambda: copy.copy(net).backward(g))
        still_right(net)
    """,
    "train_step": """
        net(x, [10, 20])
        tr = ddpm.Trainer(d, rng.uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32), batch_size=8,
                          progress=False, ema_decay=None)
        tr.train_step()
        refused(lambda: net.backward(g))
        still_right(net)
    """,
    "batch_mismatch": """
        net(x, [10, 20])
        refused(lambda: net.backward(np.zeros((3, 1, 8, 8), np.float32)), ValueError, "3")
        refused(lambda: net.backward(np.zeros((1, 1, 8, 8), np.float32)), ValueError, "1")
        still_right(net)
    """,
    "no_forward_yet": """
        refused(lambda: ddpm.UNet(seed=0, **TINY).backward(g))
        print("OK")
    """,
    # the classifier: its C backward checks the same generation and batch
    "classifier": """
        from ddpm import _core
        from ddpm.metrics import FeatureNet
        fn = FeatureNet(dict(widths=(8, 16), depth=(1, 1), groups=4))
        P = fn.num_parameters
        grads = np.zeros(P, np.float32)
        xs = rng.uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
        logits = np.empty((2, 10), np.float32)
        gen = _core.classifier_forward(fn._handle, fn.params, xs, logits, None)
        big = rng.uniform(-1, 1, (64, 1, 28, 28)).astype(np.float32)
        fn.train_step(big, np.arange(64) % 10, lr=1e-3)         # another batch's forward
        dl = np.ones((2, 10), np.float32)
        dx = np.empty((2, 1, 28, 28), np.float32)
        refused(lambda: _core.classifier_backward(fn._handle, fn.params, grads, dl, dx, gen))
        fn.features(big[:2])                                    # same batch, another forward
        refused(lambda: _core.classifier_backward(fn._handle, fn.params, grads, dl, dx, gen))
        gen = _core.classifier_forward(fn._handle, fn.params, xs, logits, None)
        refused(lambda: _core.classifier_backward(fn._handle, fn.params, grads,
                                                  np.ones((3, 10), np.float32), None, gen),
                ValueError, "3")
        _core.classifier_backward(fn._handle, fn.params, grads, dl, dx, gen)
        fresh = FeatureNet(dict(widths=(8, 16), depth=(1, 1), groups=4), params=fn.params.copy())
        g2, dx2 = np.zeros(P, np.float32), np.empty_like(dx)
        gen2 = _core.classifier_forward(fresh._handle, fresh.params, xs, np.empty((2, 10),
                                        np.float32), None)
        _core.classifier_backward(fresh._handle, fresh.params, g2, dl, dx2, gen2)
        assert np.array_equal(dx, dx2) and np.array_equal(grads, g2)
        print("OK")
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backward_refuses_activations_it_does_not_own(case):
    import textwrap
    code = PRELUDE + textwrap.dedent(CASES[case])
    out = assert_subprocess_ok(code, timeout=300)
    assert out.strip().endswith("OK"), out
