"""The feature classifier's C layers (csrc/pool.c, softmax_ce.c, classifier.c).

* pooling and softmax cross-entropy against NumPy float64 references written
  here, finite differences of those references, and PyTorch autograd;
* the whole network's logits, parameter gradients and input gradient against
  an equivalent PyTorch model built here from the same flat parameters;
* the fused training step against the separate pieces and against torch AdamW;
* the same bits at 1 and 2 threads; bad input -> TypeError/ValueError (in a
  subprocess, so a crash fails the test instead of killing the runner);
* the SHIPPED classifier's accuracy on the real Fashion-MNIST test set.
"""
from __future__ import annotations

import numpy as np
import pytest

import ddpm
from ddpm import _core, metrics
from conftest import assert_subprocess_ok

F32, F64 = np.float32, np.float64


def rel_err(got, ref):
    got, ref = np.asarray(got, F64), np.asarray(ref, F64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def assert_rel(name, got, ref, tol):
    e = rel_err(got, ref)
    assert e <= tol, f"{name}: max |diff| / max |ref| = {e:.3e} > {tol:.1e}"


# --------------------------------------------------------------------------- references
def avgpool2_ref(x):
    """x (N, H, W) float64 -> (N, H//2, W//2), odd edge dropped."""
    N, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    out = np.zeros((N, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(N, 4).mean(axis=1)
    return out


def avgpool2_grad_ref(dout, H, W):
    N, Ho, Wo = dout.shape
    dx = np.zeros((N, H, W))
    for i in range(Ho):
        for j in range(Wo):
            dx[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2] += dout[:, i, j][:, None, None] / 4
    return dx


def maxpool2_ref(x):
    """x (N, H, W) -> (max (N, H//2, W//2), flat index into the 2x2 block of the first max)."""
    N, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    blocks = x[:, :2 * Ho, :2 * Wo].reshape(N, Ho, 2, Wo, 2).transpose(0, 1, 3, 2, 4).reshape(N, Ho, Wo, 4)
    k = np.argmax(blocks, axis=3)               # numpy: first occurrence of the max
    return np.take_along_axis(blocks, k[..., None], axis=3)[..., 0], k


def maxpool2_grad_ref(dout, x):
    N, H, W = x.shape
    _, k = maxpool2_ref(x)
    dx = np.zeros_like(x, dtype=F64)
    for n, i, j in np.ndindex(k.shape):
        a, b = divmod(int(k[n, i, j]), 2)
        dx[n, 2 * i + a, 2 * j + b] += dout[n, i, j]
    return dx


def softmax_ce_ref(z, t):
    """z (B, K) float64, t (B,) -> (loss, probs) with a max-shifted log-sum-exp."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    lse = (m + np.log(s))[:, 0]
    return float(np.mean(lse - z[np.arange(len(t)), t])), e / s


def q(a):
    """float64 copy of a rounded to float32 (both sides see the same inputs)."""
    return np.asarray(a, F64).astype(F32).astype(F64)


# --------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("N,H,W", [(1, 2, 2), (6, 28, 28), (5, 7, 9), (3, 14, 6)])
def test_avgpool2_forward_backward_vs_reference(rng, N, H, W):
    x = q(rng.standard_normal((N, H, W)))
    out = np.zeros((N, H // 2, W // 2), F32)
    _core.avgpool2_forward(out, x.astype(F32), N, H, W)
    assert_rel("avgpool2 forward", out, avgpool2_ref(x), 1e-6)
    d = q(rng.standard_normal(out.shape))
    pre = q(rng.standard_normal((N, H, W)))
    dx = pre.astype(F32)
    _core.avgpool2_backward(dx, d.astype(F32), N, H, W)
    assert_rel("avgpool2 backward (+= onto pre-filled)", dx, pre + avgpool2_grad_ref(d, H, W), 1e-6)


def test_avgpool2_gradient_matches_finite_differences_of_reference(rng):
    N, H, W = 2, 5, 6
    x = rng.standard_normal((N, H, W))
    w = rng.standard_normal((N, H // 2, W // 2))
    dx = np.zeros((N, H, W), F32)
    _core.avgpool2_backward(dx, w.astype(F32), N, H, W)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (np.sum(w * avgpool2_ref(xp)) - np.sum(w * avgpool2_ref(xm))) / (2 * h)
    assert_rel("avgpool2 grad vs finite differences", dx, fd, 1e-5)
    # the dropped odd last row (H = 5) gets no gradient at all
    assert np.all(dx[:, -1, :] == 0)


@pytest.mark.parametrize("C,B,HW", [(1, 1, 1), (3, 4, 49), (128, 5, 7)])
def test_global_avgpool_vs_reference_and_finite_differences(rng, C, B, HW):
    x = q(rng.standard_normal((C, B, HW)))
    out = np.zeros((B, C), F32)
    _core.global_avgpool_forward(out, x.astype(F32), C, B, HW)
    assert_rel("gap forward", out, x.mean(axis=2).T, 1e-6)
    d = q(rng.standard_normal((B, C)))
    pre = q(rng.standard_normal((C, B, HW)))
    dx = pre.astype(F32)
    _core.global_avgpool_backward(dx, d.astype(F32), C, B, HW)
    ref = pre + np.broadcast_to(d.T[:, :, None] / HW, (C, B, HW))
    assert_rel("gap backward", dx, ref, 1e-6)
    # finite differences of the reference on a few coordinates
    x64 = rng.standard_normal((C, B, HW))
    w = rng.standard_normal((B, C))
    g = np.zeros((C, B, HW), F32)
    _core.global_avgpool_backward(g, w.astype(F32), C, B, HW)
    for _ in range(5):
        idx = tuple(rng.integers(0, s) for s in x64.shape)
        xp, xm = x64.copy(), x64.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        fd = (np.sum(w * xp.mean(axis=2).T) - np.sum(w * xm.mean(axis=2).T)) / 2e-6
        assert abs(g[idx] - fd) <= 1e-5 * max(1.0, abs(fd)), (idx, g[idx], fd)


@pytest.mark.parametrize("N,H,W", [(1, 2, 2), (6, 28, 28), (5, 7, 9)])
def test_maxpool2_forward_backward_vs_reference_with_ties(rng, N, H, W):
    # few distinct values, so 2x2 blocks often hold ties: the first (row-major) wins
    x = rng.integers(-2, 3, (N, H, W)).astype(F64)
    out = np.zeros((N, H // 2, W // 2), F32)
    _core.maxpool2_forward(out, x.astype(F32), N, H, W)
    assert np.array_equal(out, maxpool2_ref(x)[0])
    d = q(rng.standard_normal(out.shape))
    pre = q(rng.standard_normal((N, H, W)))
    dx = pre.astype(F32)
    _core.maxpool2_backward(dx, d.astype(F32), x.astype(F32), N, H, W)
    assert_rel("maxpool2 backward", dx, pre + maxpool2_grad_ref(d, x), 1e-6)
    # finite differences where the max is unique (continuous inputs)
    xc = rng.standard_normal((N, H, W))
    g = np.zeros((N, H, W), F32)
    _core.maxpool2_backward(g, d.astype(F32), xc.astype(F32), N, H, W)
    for _ in range(6):
        idx = tuple(int(rng.integers(0, s)) for s in xc.shape)
        xp, xm = xc.copy(), xc.copy()
        xp[idx] += 1e-7
        xm[idx] -= 1e-7
        fd = (np.sum(d * maxpool2_ref(xp)[0]) - np.sum(d * maxpool2_ref(xm)[0])) / 2e-7
        assert abs(g[idx] - fd) <= 1e-5 * max(1.0, abs(fd)), (idx, g[idx], fd)


def test_maxpool2_vs_torch_including_ties(rng):
    torch = pytest.importorskip("torch")
    N, H, W = 12, 8, 8
    x = rng.integers(-1, 2, (N, H, W)).astype(F32)
    xt = torch.tensor(x[:, None], dtype=torch.float64, requires_grad=True)
    p = torch.nn.functional.max_pool2d(xt, 2)
    d = rng.standard_normal((N, H // 2, W // 2)).astype(F32)
    (p[:, 0] * torch.tensor(d, dtype=torch.float64)).sum().backward()
    out = np.zeros((N, H // 2, W // 2), F32)
    _core.maxpool2_forward(out, x, N, H, W)
    assert np.array_equal(out, p.detach().numpy()[:, 0].astype(F32))
    dx = np.zeros_like(x)
    _core.maxpool2_backward(dx, d, x, N, H, W)
    assert_rel("maxpool2 grad vs torch (ties)", dx, xt.grad.numpy()[:, 0], 1e-6)


def test_pooling_vs_torch(rng):
    torch = pytest.importorskip("torch")
    C, B, H, W = 4, 3, 14, 14
    x = rng.standard_normal((C, B, H, W)).astype(F32)
    # channel-major (C, B, H, W) is NCHW of the permuted tensor
    xt = torch.tensor(x.transpose(1, 0, 2, 3).copy(), dtype=torch.float64, requires_grad=True)
    p = torch.nn.functional.avg_pool2d(xt, 2)
    g = p.mean(dim=(2, 3))                                   # (B, C)
    d = rng.standard_normal((B, C)).astype(F32)
    (g * torch.tensor(d, dtype=torch.float64)).sum().backward()
    pooled = np.zeros((C, B, H // 2, W // 2), F32)
    _core.avgpool2_forward(pooled, x, C * B, H, W)
    assert_rel("avgpool2 vs torch", pooled.transpose(1, 0, 2, 3), p.detach().numpy(), 1e-6)
    feats = np.zeros((B, C), F32)
    _core.global_avgpool_forward(feats, pooled, C, B, (H // 2) * (W // 2))
    assert_rel("gap vs torch", feats, g.detach().numpy(), 1e-6)
    dpool = np.zeros_like(pooled)
    _core.global_avgpool_backward(dpool, d, C, B, (H // 2) * (W // 2))
    dx = np.zeros_like(x)
    _core.avgpool2_backward(dx, dpool, C * B, H, W)
    assert_rel("pool backward vs torch autograd", dx.transpose(1, 0, 2, 3), xt.grad.numpy(), 1e-6)


# --------------------------------------------------------------------------- softmax CE
@pytest.mark.parametrize("B,K,scale", [(1, 2, 1.0), (7, 10, 3.0), (64, 10, 1.0), (5, 3, 200.0)])
def test_softmax_ce_forward_backward_vs_reference(rng, B, K, scale):
    z = q(scale * rng.standard_normal((B, K)))
    t = rng.integers(0, K, B).astype(np.int64)
    probs = np.zeros((B, K), F32)
    loss, correct = _core.softmax_ce_forward(probs, z.astype(F32), t)
    ref_loss, ref_p = softmax_ce_ref(z, t)
    assert abs(loss - ref_loss) <= 1e-6 * max(1.0, abs(ref_loss)), (loss, ref_loss)
    assert_rel("softmax probs", probs, ref_p, 1e-6)
    assert correct == int(np.sum(np.argmax(z, axis=1) == t))
    assert np.isfinite(probs).all()
    pre = q(rng.standard_normal((B, K)))
    d = pre.astype(F32)
    _core.softmax_ce_backward(d, probs, t, 2.5)
    onehot = np.eye(K)[t]
    assert_rel("softmax_ce backward (+=, dloss 2.5)", d, pre + 2.5 * (ref_p - onehot) / B, 1e-6)


def test_softmax_ce_gradient_matches_finite_differences(rng):
    B, K = 4, 6
    z = rng.standard_normal((B, K))
    t = rng.integers(0, K, B).astype(np.int64)
    probs = np.zeros((B, K), F32)
    _core.softmax_ce_forward(probs, z.astype(F32), t)
    d = np.zeros((B, K), F32)
    _core.softmax_ce_backward(d, probs, t, 1.0)
    fd = np.zeros((B, K))
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += 1e-6
        zm[idx] -= 1e-6
        fd[idx] = (softmax_ce_ref(zp, t)[0] - softmax_ce_ref(zm, t)[0]) / 2e-6
    assert_rel("softmax_ce grad vs finite differences", d, fd, 1e-5)


def test_softmax_ce_vs_torch(rng):
    torch = pytest.importorskip("torch")
    B, K = 9, 10
    z = rng.standard_normal((B, K)).astype(F32) * 4
    t = rng.integers(0, K, B).astype(np.int64)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(t))
    lt.backward()
    probs = np.zeros((B, K), F32)
    loss, _ = _core.softmax_ce_forward(probs, z, t)
    assert abs(loss - lt.item()) <= 1e-6 * abs(lt.item())
    d = np.zeros((B, K), F32)
    _core.softmax_ce_backward(d, probs, t, 1.0)
    assert_rel("softmax_ce grad vs torch", d, zt.grad.numpy(), 1e-6)


# --------------------------------------------------------------------------- the network
SMALL = {"in_channels": 1, "image_size": 12, "widths": (8, 16), "depth": (2, 1), "groups": 4,
         "norm_eps": 1e-5, "num_classes": 10, "pool": "avg"}


def torch_model(torch, net, params):
    """The network of csrc/classifier.c in PyTorch (float64), from flat params."""
    cfg = net.config
    T = {n: torch.tensor(params[o:o + z].reshape(s), dtype=torch.float64, requires_grad=True)
         for n, s, o, z in net.tensors}
    F = torch.nn.functional

    def forward(x):
        h, li = x, 0
        for s, d in enumerate(cfg["depth"]):
            if s > 0:
                h = F.max_pool2d(h, 2) if cfg["pool"] == "max" else F.avg_pool2d(h, 2)
            for _ in range(d):
                h = F.conv2d(h, T[f"conv{li}.weight"], T[f"conv{li}.bias"], padding=1)
                h = F.group_norm(h, cfg["groups"], T[f"norm{li}.weight"], T[f"norm{li}.bias"],
                                 cfg["norm_eps"])
                h = F.silu(h)
                li += 1
        feats = h.mean(dim=(2, 3))
        return feats @ T["fc.weight"].T + T["fc.bias"], feats

    return forward, T


@pytest.mark.parametrize("config,B", [(SMALL, 5), (dict(SMALL, pool="max"), 4), (None, 3)])
def test_classifier_logits_and_gradients_vs_torch(rng, config, B):
    torch = pytest.importorskip("torch")
    net = metrics.FeatureNet(config, seed=1)
    # perturb GN affine parameters away from (1, 0) so their gradients matter
    p = net.params.copy()
    for n, s, o, z in net.tensors:
        if n.startswith("norm"):
            p[o:o + z] += 0.3 * rng.standard_normal(z).astype(F32)
    net.params[:] = p
    S = net.config["image_size"]
    x = rng.uniform(-1, 1, (B, 1, S, S)).astype(F32)
    fwd, T = torch_model(torch, net, p)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lt, ft = fwd(xt)
    K, D = net.config["num_classes"], net.feature_dim
    logits, feats = np.zeros((B, K), F32), np.zeros((B, D), F32)
    gen = _core.classifier_forward(net._handle, p, x, logits, feats)
    assert_rel("logits vs torch", logits, lt.detach().numpy(), 1e-3)
    assert_rel("features vs torch", feats, ft.detach().numpy(), 1e-3)
    dl = rng.standard_normal((B, K)).astype(F32)
    (lt * torch.tensor(dl, dtype=torch.float64)).sum().backward()
    grads = np.zeros_like(p)
    dx = np.zeros_like(x)
    _core.classifier_backward(net._handle, p, grads, dl, dx, gen)
    for n, s, o, z in net.tensors:
        assert_rel(f"d {n} vs torch", grads[o:o + z], T[n].grad.numpy().ravel(), 1e-3)
    assert_rel("dx vs torch", dx, xt.grad.numpy(), 1e-3)
    # backward accumulates: a second call doubles the gradients
    _core.classifier_backward(net._handle, p, grads, dl, None, gen)
    for n, s, o, z in net.tensors:
        assert_rel(f"2 x d {n}", grads[o:o + z], 2 * T[n].grad.numpy().ravel(), 1e-3)


def test_classifier_gradient_matches_finite_differences_of_our_forward(rng):
    """Coarse check of the C backward against the C forward alone (no torch)."""
    net = metrics.FeatureNet(SMALL, seed=2)
    p = net.params.astype(F64)
    x = rng.uniform(-1, 1, (3, 1, 12, 12)).astype(F32)
    w = rng.standard_normal((3, 10))

    def f(pp):
        out = np.zeros((3, 10), F32)
        gen = _core.classifier_forward(net._handle, pp.astype(F32), x, out, None)
        return float(np.sum(w * out))

    f(p)
    g = np.zeros(net.num_parameters, F32)
    gen = _core.classifier_forward(net._handle, p.astype(F32), x, np.zeros((3, 10), F32), None)
    _core.classifier_backward(net._handle, p.astype(F32), g, w.astype(F32), None, gen)
    h = 1e-2
    picks = []
    for n, s, o, z in net.tensors:
        picks += [o + int(i) for i in rng.integers(0, z, 2)]
    for i in picks:
        pp, pm = p.copy(), p.copy()
        pp[i] += h
        pm[i] -= h
        fd = (f(pp) - f(pm)) / (2 * h)
        assert abs(g[i] - fd) <= 2e-2 * max(1.0, abs(fd)), (i, g[i], fd)


def test_train_step_equals_its_pieces_and_torch_adamw(rng):
    net = metrics.FeatureNet(SMALL, seed=3)
    B, K = 6, 10
    x = rng.uniform(-1, 1, (B, 1, 12, 12)).astype(F32)
    y = rng.integers(0, K, B).astype(np.int64)
    p0 = net.params.copy()
    adam = (1e-2, 0.9, 0.999, 1e-8, 0.05, True)
    # the pieces, through the separate bindings
    p, g = p0.copy(), np.zeros_like(p0)
    m, v = np.zeros_like(p0), np.zeros_like(p0)
    logits = np.zeros((B, K), F32)
    gen = _core.classifier_forward(net._handle, p, x, logits, None)
    probs = np.zeros((B, K), F32)
    loss_ref, correct_ref = _core.softmax_ce_forward(probs, logits, y)
    dl = np.zeros((B, K), F32)
    _core.softmax_ce_backward(dl, probs, y, 1.0)
    _core.classifier_backward(net._handle, p, g, dl, None, gen)
    _core.adam_step(p, m, v, g, 1, adam, 1.0)
    # the fused step
    p2, g2, m2, v2 = p0.copy(), np.full_like(p0, 7.0), np.zeros_like(p0), np.zeros_like(p0)
    loss, correct, gnorm = _core.classifier_train_step(net._handle, p2, g2, m2, v2, x, y, 1, adam, 0.0)
    assert loss == loss_ref and correct == correct_ref
    assert gnorm == pytest.approx(float(np.linalg.norm(g.astype(F64))), rel=1e-6)
    assert np.array_equal(g2, g), "fused step must zero the gradients first"
    assert np.array_equal(p2, p) and np.array_equal(m2, m) and np.array_equal(v2, v)
    torch = pytest.importorskip("torch")
    fwd, T = torch_model(torch, net, p0)
    lt, _ = fwd(torch.tensor(x, dtype=torch.float64))
    lt_loss = torch.nn.functional.cross_entropy(lt, torch.tensor(y))
    assert abs(loss - lt_loss.item()) <= 1e-4 * abs(lt_loss.item())
    opt = torch.optim.AdamW(list(T.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.05)
    lt_loss.backward()
    opt.step()
    for n, s, o, z in net.tensors:
        step_ref = T[n].detach().numpy().ravel() - p0[o:o + z]
        assert_rel(f"AdamW update of {n} vs torch", p2[o:o + z] - p0[o:o + z], step_ref, 2e-3)


def test_bit_identical_at_1_and_2_threads(rng, threads):
    results = []
    x = rng.uniform(-1, 1, (16, 1, 28, 28)).astype(F32)
    y = rng.integers(0, 10, 16).astype(np.int64)
    for n in (1, 2):
        threads(n)
        net = metrics.FeatureNet(seed=4)
        logits, feats = np.zeros((16, 10), F32), np.zeros((16, 128), F32)
        gen = _core.classifier_forward(net._handle, net.params, x, logits, feats)
        g, dx = np.zeros_like(net.params), np.zeros_like(x)
        _core.classifier_backward(net._handle, net.params, g, logits, dx, gen)
        losses = [net.train_step(x, y, lr=1e-3)[0] for _ in range(2)]
        results.append((logits, feats, g, dx, net.params.copy(), losses))
    for name, a, b in zip(("logits", "features", "grads", "dx", "params after 2 steps", "losses"),
                          results[0], results[1]):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{name} differ between 1 and 2 threads"


def test_backward_does_not_depend_on_the_previous_call(rng):
    # the backward writes each activation gradient first and adds later, never
    # zeroing the workspace, which keeps the largest batch seen: a previous
    # call's numbers (a larger batch, huge gradients) must not leak
    used, fresh = metrics.FeatureNet(SMALL, seed=7), metrics.FeatureNet(SMALL, seed=7)
    big = rng.uniform(-1, 1, (9, 1, 12, 12)).astype(F32)
    gen = _core.classifier_forward(used._handle, used.params, big, np.zeros((9, 10), F32), None)
    _core.classifier_backward(used._handle, used.params, np.zeros_like(used.params),
                              np.full((9, 10), 1e3, F32), np.zeros_like(big), gen)
    x = rng.uniform(-1, 1, (4, 1, 12, 12)).astype(F32)
    dl = rng.standard_normal((4, 10)).astype(F32)
    out = []
    for net in (used, fresh):
        logits, g, dx = np.zeros((4, 10), F32), np.zeros_like(net.params), np.zeros_like(x)
        gen = _core.classifier_forward(net._handle, net.params, x, logits, None)
        _core.classifier_backward(net._handle, net.params, g, dl, dx, gen)
        step = net.train_step(x, np.arange(4), lr=1e-3)
        out.append((logits, g, dx, net.params.copy(), np.array(step)))
    for name, a, b in zip(("logits", "grads", "dx", "params after a step", "step"), *out):
        assert np.array_equal(a, b), f"{name} differ after a previous call"


def test_training_reduces_loss_on_a_fixed_batch(rng):
    net = metrics.FeatureNet(SMALL, seed=5)
    x = rng.uniform(-1, 1, (20, 1, 12, 12)).astype(F32)
    y = rng.integers(0, 10, 20).astype(np.int64)
    losses = [net.train_step(x, y, lr=1e-2)[0] for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert net.step == 60


def test_nonfinite_input_leaves_parameters_unchanged(rng):
    net = metrics.FeatureNet(SMALL, seed=6)
    p0 = net.params.copy()
    x = rng.uniform(-1, 1, (4, 1, 12, 12)).astype(F32)
    y = np.zeros(4, np.int64)
    huge = net.params.copy()
    huge[net.tensors[-2][2]:] = 3e38       # fc weights: logits overflow to inf
    g, m, v = np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)
    with pytest.raises(FloatingPointError):
        _core.classifier_train_step(net._handle, huge, g, m, v, x, y, 1,
                                    (1e-3, 0.9, 0.999, 1e-8, 0.0, True), 0.0)
    assert not m.any() and not v.any()
    x[0, 0, 3, 3] = np.nan
    with pytest.raises(ValueError):
        _core.classifier_train_step(net._handle, net.params, g, m, v, x, y, 1,
                                    (1e-3, 0.9, 0.999, 1e-8, 0.0, True), 0.0)
    assert np.array_equal(net.params, p0)


def test_bad_input_raises_cleanly():
    assert_subprocess_ok("""
        import numpy as np, pytest
        from ddpm import _core, metrics
        net = metrics.FeatureNet({"image_size": 12, "widths": (8, 16), "depth": (1, 1), "groups": 4})
        h, p = net._handle, net.params
        x = np.zeros((2, 1, 12, 12), np.float32)
        lg = np.zeros((2, 10), np.float32)
        adam = (1e-3, 0.9, 0.999, 1e-8, 0.0, True)
        def expect(exc, f, *a):
            try:
                f(*a)
            except exc:
                return
            raise AssertionError(f"{f.__name__}{a!r:.80} did not raise {exc.__name__}")
        expect(RuntimeError, _core.classifier_backward, h, p, np.zeros_like(p), lg, None, 0)  # no forward yet
        expect(TypeError, _core.classifier_forward, h, p, x.astype(np.float64), lg, None)
        expect(ValueError, _core.classifier_forward, h, p, np.zeros((2, 1, 28, 28), np.float32), lg, None)
        expect(ValueError, _core.classifier_forward, h, p, x, np.zeros((3, 10), np.float32), None)
        expect(ValueError, _core.classifier_forward, h, p[:-1], x, lg, None)
        expect(ValueError, _core.classifier_forward, h, p, x[:, :, ::2, ::2].copy(), lg, None)
        expect(ValueError, _core.classifier_forward, h, p, np.asfortranarray(np.zeros((2, 1, 12, 12), np.float32)), lg, None)
        xn = x.copy(); xn[1, 0, 5, 5] = np.inf
        expect(ValueError, _core.classifier_forward, h, p, xn, lg, None)
        expect(TypeError, _core.classifier_forward, "not a handle", p, x, lg, None)
        gen = _core.classifier_forward(h, p, x, lg, None)
        expect(ValueError, _core.classifier_backward, h, p, np.zeros_like(p), np.zeros((3, 10), np.float32), None, gen)  # another batch
        expect(RuntimeError, _core.classifier_backward, h, p, np.zeros_like(p), lg, None, gen - 1)  # an older forward
        ro = np.zeros_like(p); ro.setflags(write=False)
        expect(ValueError, _core.classifier_backward, h, p, ro, lg, None, gen)
        g, m, v = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        expect(ValueError, _core.classifier_train_step, h, p, g, m, v, x, np.array([0, 10]), 1, adam, 0.0)
        expect(ValueError, _core.classifier_train_step, h, p, g, m, v, x, np.array([0, -1]), 1, adam, 0.0)
        expect(TypeError, _core.classifier_train_step, h, p, g, m, v, x, np.array([0, 1], np.int32), 1, adam, 0.0)
        expect(ValueError, _core.classifier_train_step, h, p, g, m, v, x, np.array([0, 1]), 0, adam, 0.0)
        expect(TypeError, _core.classifier_train_step, h, p, g, m, v, x, np.array([0, 1]), 1, (1.0,), 0.0)
        expect(ValueError, _core.classifier_create, 1, 28, [32, 64], [2], 8, 1e-5, 10)
        expect(ValueError, _core.classifier_create, 1, 28, [30], [1], 8, 1e-5, 10)
        expect(ValueError, _core.classifier_create, 1, 28, [32], [9], 8, 1e-5, 10)
        expect(ValueError, _core.classifier_create, 1, 28, [32], [1], 8, 0.0, 10)
        expect(ValueError, _core.classifier_create, 1, 28, [32], [1], 8, 1e-5, 1)
        expect(ValueError, _core.classifier_create, 1, 2, [8] * 4, [1] * 4, 8, 1e-5, 10)
        pr = np.zeros((2, 10), np.float32)
        expect(ValueError, _core.softmax_ce_forward, pr, lg, np.array([0, 10]))
        expect(ValueError, _core.softmax_ce_forward, pr, lg, np.array([0]))
        expect(ValueError, _core.softmax_ce_forward, pr, np.full((2, 10), np.nan, np.float32), np.array([0, 1]))
        expect(ValueError, _core.softmax_ce_backward, pr, pr, np.array([0, 12]), 1.0)
        expect(ValueError, _core.avgpool2_forward, np.zeros(1, np.float32), np.zeros(4, np.float32), 1, 1, 4)
        expect(ValueError, _core.avgpool2_forward, np.zeros(3, np.float32), np.zeros(16, np.float32), 1, 4, 4)
        expect(ValueError, _core.maxpool2_backward, np.zeros(16, np.float32), np.zeros(4, np.float32), np.zeros(15, np.float32), 1, 4, 4)
        expect(TypeError, _core.maxpool2_forward, np.zeros(4, np.float32), np.zeros(16), 1, 4, 4)
        expect(ValueError, metrics.FeatureNet, {"pool": "min"})
        expect(ValueError, _core.global_avgpool_backward, np.zeros(8, np.float32), np.zeros(3, np.float32), 2, 2, 2)
        expect(ValueError, lambda: net.train_step(x + 300, np.array([0, 1]), lr=1e-3))
        print("ok")
    """)


# --------------------------------------------------------------------------- shipped weights
def test_shipped_classifier_file_is_small_and_documented():
    assert metrics.CLASSIFIER_PATH.is_file(), "the classifier weights must ship with the package"
    assert metrics.CLASSIFIER_PATH.stat().st_size < 1_000_000
    net = metrics.FeatureNet.load()
    assert net.config["widths"] == (32, 64, 128) and net.feature_dim == 128
    assert float(net.metadata["test_accuracy"]) >= 0.91


def test_shipped_classifier_accuracy_on_the_real_test_set():
    if ddpm.datasets.find_dataset("fashion-mnist", "test") is None:
        pytest.skip("Fashion-MNIST test set not available")
    x, y = ddpm.datasets.fashion_mnist("test", download=False)
    acc = metrics.FeatureNet.load().accuracy(x, y)
    assert acc >= 0.91, f"shipped classifier: test accuracy {acc:.4f} < 0.91"
