"""The single layers of the C core (ddpm._core.*_forward / *_backward) against
slow NumPy float64 references written here, finite differences and PyTorch.

Layout reminders (csrc/*.h): activations are channel-major (C, B, H, W), i.e.
the channel is the OUTER dimension and the batch sits inside it; weights keep
PyTorch's layout (OC, C, K, K) / (OUT, IN).  Every backward accumulates (+=)
into every gradient buffer.

Checks per layer (conv2d, groupnorm(+silu), linear, silu, attention, upsample;
timestep embedding has no backward):
  * forward vs an independent float64 reference (max abs / rel error in the message);
  * backward vs the analytic gradient of the float64 reference;
  * backward vs central finite differences of the float64 REFERENCE forward
    (random coordinates, every coordinate for small shapes);
  * backward vs a coarse (eps = 1e-2) finite difference of OUR float32 forward;
  * accumulation (twice = double, pre-filled buffers are added to), inputs untouched;
  * PyTorch autograd cross-checks (skipped without torch);
  * bitwise determinism across thread counts; bad input -> TypeError/ValueError
    (in a subprocess, so a crash is a failure and not a dead runner).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ddpm
from ddpm import _core
from conftest import assert_subprocess_ok

F32 = np.float32
F64 = np.float64

# Largest errors seen, per check, for the report (printed with `pytest -s`).
MAX_ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
    yield
    if MAX_ERRORS:
        print("\nlargest relative errors (max |diff| / max |reference|):")
        for k in sorted(MAX_ERRORS):
            print(f"  {k:45s} {MAX_ERRORS[k]:.3e}")


# --------------------------------------------------------------------------- helpers

def q32(a):
    """float64 copy of `a` rounded to float32 (so both sides see the same inputs)."""
    return np.asarray(a, F64).astype(F32).astype(F64)


def as32(a):
    return np.ascontiguousarray(a, dtype=F32)


def assert_close(name, got, ref, rtol, atol=0.0, key=None):
    """max |got - ref| <= atol + rtol * max |ref|; the message reports the errors."""
    got = np.asarray(got, F64)
    ref = np.asarray(ref, F64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != reference {ref.shape}"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values in result"
    if got.size == 0:
        return
    diff = np.abs(got - ref)
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    mx = float(diff[i])
    scale = float(np.abs(ref).max())
    rel = mx / scale if scale > 0 else (0.0 if mx == 0 else math.inf)
    if key is not None:
        MAX_ERRORS[key] = max(MAX_ERRORS.get(key, 0.0), rel)
    tol = atol + rtol * scale
    assert mx <= tol, (f"{name}: max abs err {mx:.3e}, rel err {rel:.3e} (scale {scale:.3e}, "
                       f"tol {tol:.3e}) at index {i}: got {got[i]!r}, reference {ref[i]!r}")


def sample_coords(rng, size, n):
    """All coordinates when the array is small, else n random ones."""
    if size <= 64:
        return np.arange(size)
    return rng.choice(size, size=n, replace=False)


# --------------------------------------------------------------------------- float64 references

def sigmoid64(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x


def silu_ref(x):
    return x * sigmoid64(x)


def silu_grad_ref(x):
    s = sigmoid64(x)
    return s * (1.0 + x * (1.0 - s))


def out_size(n, K, S):
    return (n + 2 * (K // 2) - K) // S + 1


def conv_ref(x, w, b, K, S):
    """x (C,B,H,W), w (OC,C,K,K): explicit zero padding and a sum over kernel offsets."""
    C, B, H, W = x.shape
    OC = w.shape[0]
    p = K // 2
    Ho, Wo = out_size(H, K, S), out_size(W, K, S)
    xp = np.zeros((C, B, H + 2 * p, W + 2 * p))
    xp[:, :, p:p + H, p:p + W] = x
    out = np.zeros((OC, B, Ho, Wo))
    for ki in range(K):
        for kj in range(K):
            patch = xp[:, :, ki:ki + S * (Ho - 1) + 1:S, kj:kj + S * (Wo - 1) + 1:S]
            out += np.tensordot(w[:, :, ki, kj], patch, axes=(1, 0))
    if b is not None:
        out += b[:, None, None, None]
    return out


def conv_ref_bwd(x, w, dout, K, S):
    """Adjoint of conv_ref: (dx, dw, db)."""
    C, B, H, W = x.shape
    p = K // 2
    Ho, Wo = dout.shape[2], dout.shape[3]
    xp = np.zeros((C, B, H + 2 * p, W + 2 * p))
    xp[:, :, p:p + H, p:p + W] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for ki in range(K):
        for kj in range(K):
            sl = (slice(None), slice(None), slice(ki, ki + S * (Ho - 1) + 1, S),
                  slice(kj, kj + S * (Wo - 1) + 1, S))
            dw[:, :, ki, kj] = np.tensordot(dout, xp[sl], axes=([1, 2, 3], [1, 2, 3]))
            dxp[sl] += np.tensordot(w[:, :, ki, kj], dout, axes=(0, 0))
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(1, 2, 3))


def gn_ref(x, w, b, G, eps, silu):
    """x (C,B,HW); groups are contiguous channel ranges; stats per (b, g).
    Returns out, mean (B,G), rstd (B,G)."""
    C, B, HW = x.shape
    xg = x.reshape(G, C // G, B, HW)
    mean = xg.mean(axis=(1, 3))                      # (G, B)
    var = ((xg - mean[:, None, :, None]) ** 2).mean(axis=(1, 3))
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xg - mean[:, None, :, None]) * rstd[:, None, :, None]).reshape(C, B, HW)
    y = xhat * w[:, None, None] + b[:, None, None]
    return (silu_ref(y) if silu else y), mean.T.copy(), rstd.T.copy()


def gn_ref_bwd(x, w, b, G, eps, silu, dout):
    C, B, HW = x.shape
    xg = x.reshape(G, C // G, B, HW)
    mean = xg.mean(axis=(1, 3))
    var = ((xg - mean[:, None, :, None]) ** 2).mean(axis=(1, 3))
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = ((xg - mean[:, None, :, None]) * rstd[:, None, :, None]).reshape(C, B, HW)
    y = xhat * w[:, None, None] + b[:, None, None]
    dy = dout * silu_grad_ref(y) if silu else dout
    dw = (dy * xhat).sum(axis=(1, 2))
    db = dy.sum(axis=(1, 2))
    dxhat = (dy * w[:, None, None]).reshape(G, C // G, B, HW)
    xh = xhat.reshape(G, C // G, B, HW)
    m1 = dxhat.mean(axis=(1, 3), keepdims=True)
    m2 = (dxhat * xh).mean(axis=(1, 3), keepdims=True)
    dx = rstd[:, None, :, None] * (dxhat - m1 - xh * m2)
    return dx.reshape(C, B, HW), dw, db


def linear_ref(x, w, b):
    out = np.einsum("bi,oi->bo", x, w)
    return out + b if b is not None else out


def attn_ref(qkv, NH):
    """qkv (3C,B,HW) -> out (C,B,HW), P (B,NH,HW,HW)."""
    C = qkv.shape[0] // 3
    _, B, HW = qkv.shape
    hd = C // NH
    q = qkv[:C].reshape(NH, hd, B, HW)
    k = qkv[C:2 * C].reshape(NH, hd, B, HW)
    v = qkv[2 * C:].reshape(NH, hd, B, HW)
    s = np.einsum("hdbi,hdbj->bhij", q, k) / math.sqrt(hd)
    s -= s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    P = e / e.sum(axis=-1, keepdims=True)
    out = np.einsum("hdbj,bhij->hdbi", v, P)
    return out.reshape(C, B, HW), P


def attn_ref_bwd(qkv, NH, dout):
    C = qkv.shape[0] // 3
    _, B, HW = qkv.shape
    hd = C // NH
    q = qkv[:C].reshape(NH, hd, B, HW)
    k = qkv[C:2 * C].reshape(NH, hd, B, HW)
    v = qkv[2 * C:].reshape(NH, hd, B, HW)
    _, P = attn_ref(qkv, NH)
    do = dout.reshape(NH, hd, B, HW)
    dv = np.einsum("hdbi,bhij->hdbj", do, P)
    dP = np.einsum("hdbi,hdbj->bhij", do, v)
    dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
    dq = np.einsum("bhij,hdbj->hdbi", dS, k) / math.sqrt(hd)
    dk = np.einsum("bhij,hdbi->hdbj", dS, q) / math.sqrt(hd)
    return np.concatenate([dq.reshape(C, B, HW), dk.reshape(C, B, HW), dv.reshape(C, B, HW)])


def upsample_ref(x):
    C, B, H, W = x.shape
    out = np.empty((C, B, 2 * H, 2 * W))
    for di in range(2):
        for dj in range(2):
            out[:, :, di::2, dj::2] = x
    return out


def upsample_ref_bwd(dout):
    C, B, H2, W2 = dout.shape
    return dout.reshape(C, B, H2 // 2, 2, W2 // 2, 2).sum(axis=(3, 5))


def timestep_ref(t, dim, flip, shift, max_period):
    """diffusers' get_timestep_embedding in float64; also returns the phases t*freq."""
    half = dim // 2
    exponent = -math.log(max_period) * np.arange(half, dtype=F64) / (half - shift)
    arg = np.asarray(t, F64)[:, None] * np.exp(exponent)[None, :]
    emb = np.concatenate([np.sin(arg), np.cos(arg)], axis=1)
    if flip:
        emb = np.concatenate([emb[:, half:], emb[:, :half]], axis=1)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros((len(t), 1))], axis=1)
    phase = np.concatenate([arg, arg] + ([np.zeros((len(t), 1))] if dim % 2 else []), axis=1)
    return emb, phase, exponent


# --------------------------------------------------------------------------- layer cases
#
# A case holds float64 inputs (exactly representable in float32) and four functions:
#   ours(p32) -> (out32, extras)           our forward on float32 copies
#   ours_bwd(p32, dout32, grads32)         our backward, accumulating into grads32
#   ref(p64) -> out64                      the float64 reference forward
#   ref_bwd(p64, dout64) -> {name: grad}   its analytic gradient
# `params` names the differentiable inputs (each has a gradient buffer).


class Case:
    def __init__(self, name, inputs, params, ours, ours_bwd, ref, ref_bwd, layer,
                 rtol_fwd=1e-5, rtol_bwd=2e-5):
        self.name, self.inputs, self.params = name, inputs, params
        self.ours, self.ours_bwd, self.ref, self.ref_bwd = ours, ours_bwd, ref, ref_bwd
        self.layer, self.rtol_fwd, self.rtol_bwd = layer, rtol_fwd, rtol_bwd

    def p32(self):
        return {k: as32(v) for k, v in self.inputs.items()}

    def p64(self):
        return {k: v.copy() for k, v in self.inputs.items()}

    def __repr__(self):
        return self.name


def _rng(*key):
    return np.random.default_rng([20240601, *[int(k) for k in key]])


def conv_case(B, C, H, W, OC, K, S, bias=True):
    r = _rng(1, B, C, H, W, OC, K, S)
    Ho, Wo = out_size(H, K, S), out_size(W, K, S)
    inputs = {"inp": q32(r.standard_normal((C, B, H, W))),
              "weight": q32(r.standard_normal((OC, C, K, K)) / math.sqrt(C * K * K))}
    if bias:
        inputs["bias"] = q32(r.standard_normal(OC))
    dims = (B, C, H, W, OC, K, S)

    def ours(p):
        out = np.full((OC, B, Ho, Wo), np.nan, F32)  # NaN: every element must be written
        _core.conv2d_forward(out, p["inp"], p["weight"], p.get("bias"), *dims, False)
        return out, {}

    def ours_bwd(p, dout, g, accumulate=True):
        _core.conv2d_backward(g["inp"], g["weight"], g.get("bias"), dout, p["inp"],
                              p["weight"], *dims, accumulate)

    def ref(p):
        return conv_ref(p["inp"], p["weight"], p.get("bias"), K, S)

    def ref_bwd(p, dout):
        dx, dw, db = conv_ref_bwd(p["inp"], p["weight"], dout, K, S)
        return {"inp": dx, "weight": dw, "bias": db}

    name = f"conv_B{B}_C{C}_{H}x{W}_OC{OC}_K{K}_S{S}" + ("" if bias else "_nobias")
    return Case(name, inputs, list(inputs), ours, ours_bwd, ref, ref_bwd, "conv2d")


def gn_case(B, C, HW, G, silu, eps=1e-5, xscale=1.0):
    r = _rng(2, B, C, HW, G, silu, int(xscale * 1000))
    x = xscale * r.standard_normal((C, B, HW)) + 0.3 * r.standard_normal((C, 1, 1))
    inputs = {"inp": q32(x),
              "weight": q32(1.0 + 0.5 * r.standard_normal(C)),
              "bias": q32(0.5 * r.standard_normal(C))}

    def ours(p):
        out = np.full((C, B, HW), np.nan, F32)
        mean = np.full((B, G), np.nan, F32)
        rstd = np.full((B, G), np.nan, F32)
        _core.groupnorm_forward(out, mean, rstd, p["inp"], p["weight"], p["bias"],
                                B, C, HW, G, eps, silu)
        return out, {"mean": mean, "rstd": rstd}

    def ours_bwd(p, dout, g, accumulate=True):
        _, ex = ours(p)
        _core.groupnorm_backward(g["inp"], g["weight"], g["bias"], dout, p["inp"], p["weight"],
                                 p["bias"], ex["mean"], ex["rstd"], B, C, HW, G, silu, accumulate)

    def ref(p):
        return gn_ref(p["inp"], p["weight"], p["bias"], G, eps, silu)[0]

    def ref_bwd(p, dout):
        dx, dw, db = gn_ref_bwd(p["inp"], p["weight"], p["bias"], G, eps, silu, dout)
        return {"inp": dx, "weight": dw, "bias": db}

    case = Case(f"gn_B{B}_C{C}_HW{HW}_G{G}_silu{int(silu)}_eps{eps:g}_x{xscale:g}", inputs,
                list(inputs), ours, ours_bwd, ref, ref_bwd,
                "groupnorm+silu" if silu else "groupnorm")
    case.gn = (G, eps, silu)
    return case


def linear_case(B, IN, OUT, bias=True):
    r = _rng(3, B, IN, OUT, bias)
    inputs = {"inp": q32(r.standard_normal((B, IN))),
              "weight": q32(r.standard_normal((OUT, IN)) / math.sqrt(IN))}
    if bias:
        inputs["bias"] = q32(r.standard_normal(OUT))

    def ours(p):
        out = np.full((B, OUT), np.nan, F32)
        _core.linear_forward(out, p["inp"], p["weight"], p.get("bias"), B, IN, OUT)
        return out, {}

    def ours_bwd(p, dout, g):
        _core.linear_backward(g["inp"], g["weight"], g.get("bias"), dout, p["inp"], p["weight"],
                              B, IN, OUT)

    def ref(p):
        return linear_ref(p["inp"], p["weight"], p.get("bias"))

    def ref_bwd(p, dout):
        return {"inp": dout @ p["weight"], "weight": dout.T @ p["inp"], "bias": dout.sum(0)}

    return Case(f"linear_B{B}_IN{IN}_OUT{OUT}" + ("" if bias else "_nobias"), inputs,
                list(inputs), ours, ours_bwd, ref, ref_bwd, "linear")


def silu_case(shape, scale=3.0):
    r = _rng(4, *shape)
    inputs = {"inp": q32(scale * r.standard_normal(shape))}

    def ours(p):
        out = np.full(shape, np.nan, F32)
        _core.silu_forward(out, p["inp"])
        return out, {}

    def ours_bwd(p, dout, g):
        _core.silu_backward(g["inp"], dout, p["inp"])

    return Case(f"silu_{'x'.join(map(str, shape))}", inputs, ["inp"], ours, ours_bwd,
                lambda p: silu_ref(p["inp"]),
                lambda p, dout: {"inp": dout * silu_grad_ref(p["inp"])}, "silu")


def attn_case(B, C, HW, NH, scale=1.0):
    r = _rng(5, B, C, HW, NH)
    inputs = {"qkv": q32(scale * r.standard_normal((3 * C, B, HW)))}

    def ours(p):
        out = np.full((C, B, HW), np.nan, F32)
        att = np.full((B, NH, HW, HW), np.nan, F32)
        _core.attention_forward(out, att, p["qkv"], B, C, HW, NH)
        return out, {"att": att}

    def ours_bwd(p, dout, g, accumulate=True):
        _, ex = ours(p)
        _core.attention_backward(g["qkv"], dout, p["qkv"], ex["att"], B, C, HW, NH, accumulate)

    case = Case(f"attn_B{B}_C{C}_HW{HW}_NH{NH}", inputs, ["qkv"], ours, ours_bwd,
                lambda p: attn_ref(p["qkv"], NH)[0],
                lambda p, dout: {"qkv": attn_ref_bwd(p["qkv"], NH, dout)}, "attention")
    case.NH = NH
    return case


def upsample_case(C, B, H, W):
    r = _rng(6, C, B, H, W)
    inputs = {"inp": q32(r.standard_normal((C, B, H, W)))}

    def ours(p):
        out = np.full((C, B, 2 * H, 2 * W), np.nan, F32)
        _core.upsample_forward(out, p["inp"], C, B, H, W)
        return out, {}

    def ours_bwd(p, dout, g, accumulate=True):
        _core.upsample_backward(g["inp"], dout, C, B, H, W, accumulate)

    return Case(f"upsample_C{C}_B{B}_{H}x{W}", inputs, ["inp"], ours, ours_bwd,
                lambda p: upsample_ref(p["inp"]),
                lambda p, dout: {"inp": upsample_ref_bwd(dout)}, "upsample")


CASES = [
    # conv2d: batch 1, odd channels, H != W, K=3 S=1 / K=3 S=2 / K=1 S=1 / K=1 S=2
    conv_case(1, 3, 5, 7, 4, 3, 1),
    conv_case(2, 5, 6, 4, 3, 3, 2),
    conv_case(3, 4, 7, 5, 6, 3, 2),
    conv_case(2, 3, 5, 6, 5, 1, 1),
    conv_case(2, 3, 5, 4, 2, 1, 2),
    conv_case(1, 1, 1, 1, 1, 3, 1),
    conv_case(1, 2, 3, 2, 2, 3, 1),          # small: every coordinate FD-checked
    conv_case(2, 3, 4, 5, 3, 3, 1, bias=False),
    conv_case(2, 16, 12, 10, 8, 3, 1),
    # groupnorm: G=1, G=C, odd C, silu on/off, a small variance where eps matters
    gn_case(1, 3, 10, 1, False),
    gn_case(2, 6, 7, 3, True),
    gn_case(3, 5, 4, 5, False),
    gn_case(3, 5, 4, 5, True),
    gn_case(2, 8, 12, 2, True),
    gn_case(2, 4, 3, 2, False),
    gn_case(2, 6, 5, 3, True, eps=1e-2, xscale=0.05),
    # linear
    linear_case(1, 3, 5),
    linear_case(4, 7, 2),
    linear_case(3, 1, 1),
    linear_case(5, 16, 9),
    linear_case(2, 6, 4, bias=False),
    # silu
    silu_case((7,)),
    silu_case((3, 2, 5)),
    # attention: 1 and several heads, hd = 1, HW = 1
    attn_case(1, 4, 6, 1),
    attn_case(2, 6, 5, 3),
    attn_case(2, 8, 9, 2),
    attn_case(3, 6, 4, 6),
    attn_case(1, 3, 1, 1),
    attn_case(2, 4, 7, 2, scale=2.0),
    # upsample
    upsample_case(1, 1, 1, 1),
    upsample_case(3, 2, 4, 5),
    upsample_case(2, 1, 3, 2),
]


def _dout(case, out_shape, key=0):
    return q32(_rng(7, key, *out_shape).standard_normal(out_shape))


def _ours_grads(case, dout64, prefill=None):
    p = case.p32()
    g = {k: (as32(prefill[k]) if prefill is not None else np.zeros(p[k].shape, F32))
         for k in case.params}
    case.ours_bwd(p, as32(dout64), g)
    return g


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("case", CASES, ids=repr)
def test_forward_vs_float64_reference(case):
    p = case.p32()
    before = {k: v.copy() for k, v in p.items()}
    out, extras = case.ours(p)
    assert out.dtype == F32
    assert_close(f"{case.name} forward", out, case.ref(case.p64()), rtol=case.rtol_fwd,
                 key=f"{case.layer} forward vs f64")
    for k in p:
        assert np.array_equal(p[k], before[k]), f"{case.name}: forward modified input {k}"
    # the saved statistics / probabilities
    if case.layer.startswith("groupnorm"):
        G, eps, silu = case.gn
        c = case.p64()
        _, mean, rstd = gn_ref(c["inp"], c["weight"], c["bias"], G, eps, silu)
        assert_close(f"{case.name} mean", extras["mean"], mean, rtol=1e-5, atol=1e-6)
        assert_close(f"{case.name} rstd", extras["rstd"], rstd, rtol=1e-5)
    if case.layer == "attention":
        _, P = attn_ref(case.p64()["qkv"], case.NH)
        assert_close(f"{case.name} att", extras["att"], P, rtol=1e-5,
                     key="attention probabilities vs f64")


# --------------------------------------------------------------------------- backward

@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backward_vs_float64_reference(case):
    out, _ = case.ours(case.p32())
    dout = _dout(case, out.shape)
    p = case.p32()
    before = {k: v.copy() for k, v in p.items()}
    g = _ours_grads(case, dout)
    ref = case.ref_bwd(case.p64(), dout)
    for k in case.params:
        assert_close(f"{case.name} d{k}", g[k], ref[k], rtol=case.rtol_bwd,
                     key=f"{case.layer} backward vs f64")
    for k in p:
        assert np.array_equal(p[k], before[k]), f"{case.name}: backward modified input {k}"


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backward_vs_finite_differences_of_reference(case):
    """Our backward vs central differences (eps 1e-6) of the float64 reference loss
    L = sum(R * ref(params)), R a fixed random array."""
    out, _ = case.ours(case.p32())
    R = _dout(case, out.shape, key=1)
    g = _ours_grads(case, R)
    p = case.p64()
    rng = _rng(8, len(case.name))

    def loss():
        return float(np.sum(R * case.ref(p)))

    eps = 1e-6
    for k in case.params:
        idx = sample_coords(rng, p[k].size, 12)
        fd = np.empty(len(idx))
        for n, i in enumerate(idx):
            old = p[k].flat[i]
            p[k].flat[i] = old + eps
            lp = loss()
            p[k].flat[i] = old - eps
            lm = loss()
            p[k].flat[i] = old
            fd[n] = (lp - lm) / (2 * eps)
        scale = max(float(np.abs(g[k]).max()), 1e-3)
        got = g[k].ravel()[idx].astype(F64)
        err = np.abs(got - fd)
        j = int(np.argmax(err))
        MAX_ERRORS[f"{case.layer} backward vs FD(f64 ref)"] = max(
            MAX_ERRORS.get(f"{case.layer} backward vs FD(f64 ref)", 0.0), float(err[j]) / scale)
        assert err[j] <= 1e-4 * scale + 1e-6, (
            f"{case.name} d{k}: max |grad - FD| {err[j]:.3e} (rel {err[j] / scale:.3e}) at flat "
            f"index {idx[j]}: ours {got[j]!r}, FD {fd[j]!r} ({len(idx)} coords of {p[k].size})")


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_backward_vs_coarse_finite_differences_of_ours(case):
    """End to end through our float32 forward: eps = 1e-2, loose tolerance, catches sign
    and indexing errors."""
    out, _ = case.ours(case.p32())
    R = _dout(case, out.shape, key=2)
    g = _ours_grads(case, R)
    p = case.p32()
    rng = _rng(9, len(case.name))

    def loss():
        return float(np.sum(R * case.ours(p)[0].astype(F64)))

    eps = 1e-2
    for k in case.params:
        idx = rng.choice(p[k].size, size=min(4, p[k].size), replace=False)
        scale = max(float(np.abs(g[k]).max()), 1e-2)
        for i in idx:
            old = p[k].flat[i]
            p[k].flat[i] = old + F32(eps)
            lp = loss()
            p[k].flat[i] = old - F32(eps)
            lm = loss()
            p[k].flat[i] = old
            h = (float(old + F32(eps)) - float(old - F32(eps)))
            fd = (lp - lm) / h
            ours = float(g[k].flat[i])
            assert abs(ours - fd) <= 3e-2 * scale, (
                f"{case.name} d{k}[{i}]: ours {ours:.6g} vs float32 FD {fd:.6g} "
                f"(diff {abs(ours - fd):.3e}, grad scale {scale:.3e})")


@pytest.mark.parametrize("case", [c for c in CASES if c.name in {
    "conv_B2_C5_6x4_OC3_K3_S2", "conv_B2_C3_5x6_OC5_K1_S1", "gn_B2_C6_HW7_G3_silu1_eps1e-05_x1",
    "linear_B4_IN7_OUT2", "silu_3x2x5", "attn_B2_C6_HW5_NH3", "upsample_C3_B2_4x5"}], ids=repr)
def test_backward_accumulates(case):
    out, _ = case.ours(case.p32())
    dout = _dout(case, out.shape, key=3)
    once = _ours_grads(case, dout)
    # twice into zeroed buffers: double
    p = case.p32()
    g = {k: np.zeros(p[k].shape, F32) for k in case.params}
    case.ours_bwd(p, as32(dout), g)
    case.ours_bwd(p, as32(dout), g)
    for k in case.params:
        assert_close(f"{case.name} d{k} twice", g[k], 2.0 * once[k].astype(F64), rtol=1e-6)
    # into pre-filled buffers: added to their contents
    pre = {k: q32(_rng(10, n).standard_normal(p[k].shape)) for n, k in enumerate(case.params)}
    g = _ours_grads(case, dout, prefill=pre)
    for k in case.params:
        assert_close(f"{case.name} d{k} prefilled", g[k], pre[k] + once[k], rtol=1e-6, atol=1e-6)


def test_conv2d_forward_accumulate_adds_to_out():
    for (B, C, H, W, OC, K, S) in [(2, 3, 5, 6, 4, 3, 1), (1, 5, 7, 4, 3, 3, 2),
                                   (2, 3, 4, 4, 6, 1, 1)]:
        case = conv_case(B, C, H, W, OC, K, S)
        p = case.p32()
        Ho, Wo = out_size(H, K, S), out_size(W, K, S)
        base = q32(_rng(11, B, C).standard_normal((OC, B, Ho, Wo)))
        out = as32(base)
        _core.conv2d_forward(out, p["inp"], p["weight"], p["bias"], B, C, H, W, OC, K, S, True)
        assert_close(f"{case.name} accumulate", out, base + case.ref(case.p64()), rtol=1e-5)
        # and without accumulate the old contents are ignored
        out = as32(base)
        _core.conv2d_forward(out, p["inp"], p["weight"], p["bias"], B, C, H, W, OC, K, S, False)
        assert_close(f"{case.name} overwrite", out, case.ref(case.p64()), rtol=1e-5)


def test_optional_gradient_buffers_may_be_none():
    # conv2d: dinp and dbias None -> dweight unchanged, nothing else touched
    case = conv_case(2, 3, 5, 4, 2, 3, 2)
    p = case.p32()
    dout = _dout(case, (2, 2, 3, 2))
    full = _ours_grads(case, dout)
    dw = np.zeros_like(p["weight"])
    _core.conv2d_backward(None, dw, None, as32(dout), p["inp"], p["weight"], 2, 3, 5, 4, 2, 3, 2)
    assert_close("conv dweight (dinp=None, dbias=None)", dw, full["weight"], rtol=1e-6)
    # conv2d forward without bias
    out = np.empty((2, 2, 3, 2), F32)
    _core.conv2d_forward(out, p["inp"], p["weight"], None, 2, 3, 5, 4, 2, 3, 2, False)
    c64 = case.p64()
    assert_close("conv forward bias=None", out, conv_ref(c64["inp"], c64["weight"], None, 3, 2),
                 rtol=1e-5)
    # linear: dinp / dbias None
    case = linear_case(3, 4, 5)
    p = case.p32()
    dout = _dout(case, (3, 5))
    full = _ours_grads(case, dout)
    dw = np.zeros_like(p["weight"])
    _core.linear_backward(None, dw, None, as32(dout), p["inp"], p["weight"], 3, 4, 5)
    assert_close("linear dweight (dinp=None, dbias=None)", dw, full["weight"], rtol=1e-6)


def test_silu_extreme_inputs():
    x = np.array([-1e4, -200.0, -90.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 90.0, 200.0, 1e4], F32)
    out = np.empty_like(x)
    _core.silu_forward(out, x)
    assert_close("silu extreme", out, silu_ref(x.astype(F64)), rtol=1e-6, atol=1e-30,
                 key="silu forward vs f64")
    d = np.zeros_like(x)
    _core.silu_backward(d, np.ones_like(x), x)
    assert_close("silu' extreme", d, silu_grad_ref(x.astype(F64)), rtol=1e-6, atol=1e-7)


def _groupnorm_silu(x, B, C, HW, G):
    out = np.full_like(x, np.nan)
    mean, rstd = np.empty((B, G), F32), np.empty((B, G), F32)
    w = np.linspace(0.5, 1.5, C).astype(F32)
    b = np.linspace(-1.0, 1.0, C).astype(F32)
    _core.groupnorm_forward(out, mean, rstd, x, w, b, B, C, HW, G, 1e-5, True)
    return out, mean, rstd, w, b


@pytest.mark.parametrize("HW", [7, 16, 49, 63, 64, 130, 784])
def test_groupnorm_silu_rows_in_16_lanes_give_the_8_lane_bits(HW):
    # where the CPU has AVX-512F the SiLU rows run in 16-float vectors
    # (core/wide.h): each lane the same operations, so the same bits as
    # the 8-float rows; rows of every length (16-lane blocks, 64-float groups,
    # tails), values out to the exp clamps
    if not _core.simd_wide(True):
        pytest.skip("this CPU has no AVX-512F: the 8-float rows are the only ones")
    B, C, G = 3, 4, 2
    x = np.random.default_rng(HW).standard_normal((C, B, HW)).astype(F32)
    x *= np.where(np.random.default_rng(HW + 1).random(x.shape) < 0.05, 300.0, 3.0).astype(F32)
    wide = _groupnorm_silu(x, B, C, HW, G)
    try:
        _core.simd_wide(False)
        narrow = _groupnorm_silu(x, B, C, HW, G)
    finally:
        _core.simd_wide(True)
    assert np.array_equal(wide[0], narrow[0]), f"{np.sum(wide[0] != narrow[0])} differ"
    # and both are the SiLU of the normalised input (float64, from the saved statistics)
    out, mean, rstd, w, b = wide
    m = np.repeat(mean.astype(F64).T, C // G, axis=0)[:, :, None]
    r = np.repeat(rstd.astype(F64).T, C // G, axis=0)[:, :, None]
    y = (x - m) * r * w[:, None, None] + b[:, None, None]
    assert_close("gn+silu (16 lanes) vs f64", out, silu_ref(y), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- timestep embedding

TS_CONFIGS = [  # (dim, flip, freq_shift, max_period)
    (2, False, 0.0, 10000.0), (3, True, 0.0, 10000.0), (7, False, 1.0, 10000.0),
    (32, True, 0.0, 10000.0), (33, False, 1.0, 10000.0), (16, True, 1.0, 100.0),
    (64, False, 0.0, 10000.0), (5, True, 0.5, 1000.0),
]


def _ts_values():
    t = np.concatenate([[0.0, 1.0, 0.5, 17.25, 999.0, 500.0],
                        _rng(12).uniform(0, 1000, 10)]).astype(F32)
    return t


@pytest.mark.parametrize("dim,flip,shift,period", TS_CONFIGS)
def test_timestep_embedding_vs_float64_reference(dim, flip, shift, period):
    t = _ts_values()
    out = np.full((len(t), dim), np.nan, F32)
    _core.timestep_embedding(out, t, len(t), dim, flip, shift, period)
    ref, phase, exponent = timestep_ref(t.astype(F64), dim, flip, shift, period)
    # Diffusers (and so our layer) rounds the exponent, the frequency and the phase
    # t*freq to float32; the phase error is |phase| * (a few ulp * (1 + |exponent|)).
    ex = np.concatenate([exponent, exponent] + ([np.zeros(1)] if dim % 2 else []))
    tol = 4e-6 + np.abs(phase) * 3 * 2.0 ** -24 * (2 + np.abs(ex))[None, :]
    err = np.abs(out.astype(F64) - ref)
    i = np.unravel_index(int(np.argmax(err / tol)), err.shape)
    small = np.abs(phase).max(axis=1) < 2  # small t: tight absolute check
    MAX_ERRORS["timestep forward vs f64 (small t, abs)"] = max(
        MAX_ERRORS.get("timestep forward vs f64 (small t, abs)", 0.0), float(err[small].max()))
    MAX_ERRORS["timestep forward vs f64 (all t, abs)"] = max(
        MAX_ERRORS.get("timestep forward vs f64 (all t, abs)", 0.0), float(err.max()))
    assert np.all(err <= tol), (f"timestep dim={dim}: max abs err {err.max():.3e}; worst vs tol at "
                                f"{i}: got {out[i]!r}, ref {ref[i]!r}, tol {tol[i]:.3e}")
    if dim % 2:
        assert np.all(out[:, -1] == 0.0), "odd dim: last column must be zero padding"
    # t = 0: sin = 0, cos = 1 exactly
    half = dim // 2
    z = out[0]
    sin0, cos0 = (z[half:2 * half], z[:half]) if flip else (z[:half], z[half:2 * half])
    assert np.all(sin0 == 0.0) and np.all(cos0 == 1.0), f"t=0 row: {z}"


def test_timestep_embedding_vs_torch_diffusers_formula():
    torch = pytest.importorskip("torch")
    t = _ts_values()
    worst = 0.0
    for dim, flip, shift, period in TS_CONFIGS:
        # diffusers.models.embeddings.get_timestep_embedding, restated (importing
        # diffusers costs seconds): float32 torch ops in the same order.
        half = dim // 2
        exponent = -math.log(period) * torch.arange(0, half, dtype=torch.float32)
        exponent = exponent / (half - shift)
        emb = torch.from_numpy(t)[:, None].float() * torch.exp(exponent)[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        if flip:
            emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
        if dim % 2:
            emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
        out = np.full((len(t), dim), np.nan, F32)
        _core.timestep_embedding(out, t, len(t), dim, flip, shift, period)
        ref = emb.numpy().astype(F64)
        err = np.abs(out - ref)
        worst = max(worst, float(err.max()))
        # The float32 exponents agree exactly; torch's vectorised float32 exp is not
        # always correctly rounded (1 ulp off for some i on x86), which moves the
        # phase t*freq by up to ~|phase| * 2^-23; sin/cos add a few 1e-7.
        phase = np.abs(t.astype(F64))[:, None] * np.ones_like(ref)  # |t| >= |t * freq|
        tol = 2e-6 + phase * 2.0 ** -23
        i = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        assert np.all(err <= tol), (f"timestep dim={dim} flip={flip} shift={shift}: max abs err vs "
                                    f"torch {err.max():.3e}; at {i}: ours {out[i]!r}, torch "
                                    f"{ref[i]!r}, tol {tol[i]:.3e}")
    MAX_ERRORS["timestep forward vs torch (abs)"] = worst


# --------------------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("B,C,H,W,OC,K,S", [(1, 3, 5, 7, 4, 3, 1), (3, 4, 7, 5, 6, 3, 2),
                                           (2, 3, 5, 6, 5, 1, 1), (2, 16, 12, 10, 8, 3, 2)])
def test_conv2d_vs_torch(B, C, H, W, OC, K, S):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = conv_case(B, C, H, W, OC, K, S)
    p = case.p32()
    out, _ = case.ours(p)
    dout = _dout(case, out.shape, key=4)
    g = _ours_grads(case, dout)
    x = torch.tensor(p["inp"].transpose(1, 0, 2, 3).copy(), requires_grad=True)  # NCHW
    w = torch.tensor(p["weight"], requires_grad=True)
    b = torch.tensor(p["bias"], requires_grad=True)
    y = F.conv2d(x, w, b, stride=S, padding=K // 2)
    y.backward(torch.tensor(as32(dout).transpose(1, 0, 2, 3).copy()))
    k = "conv2d vs torch"
    assert_close("conv out vs torch", out, y.detach().numpy().transpose(1, 0, 2, 3), 1e-4, key=k)
    assert_close("conv dinp vs torch", g["inp"], x.grad.numpy().transpose(1, 0, 2, 3), 1e-4, key=k)
    assert_close("conv dweight vs torch", g["weight"], w.grad.numpy(), 1e-4, key=k)
    assert_close("conv dbias vs torch", g["bias"], b.grad.numpy(), 1e-4, key=k)


@pytest.mark.parametrize("B,C,HW,G,silu", [(2, 6, 7, 3, True), (3, 5, 4, 5, False),
                                           (1, 3, 10, 1, True), (2, 8, 12, 2, False)])
def test_groupnorm_vs_torch(B, C, HW, G, silu):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = gn_case(B, C, HW, G, silu)
    p = case.p32()
    out, ex = case.ours(p)
    dout = _dout(case, out.shape, key=4)
    g = _ours_grads(case, dout)
    x = torch.tensor(p["inp"].transpose(1, 0, 2).copy(), requires_grad=True)  # (B, C, HW)
    w = torch.tensor(p["weight"], requires_grad=True)
    b = torch.tensor(p["bias"], requires_grad=True)
    y = F.group_norm(x, G, w, b, eps=1e-5)
    if silu:
        y = F.silu(y)
    y.backward(torch.tensor(as32(dout).transpose(1, 0, 2).copy()))
    k = "groupnorm vs torch"
    assert_close("gn out vs torch", out, y.detach().numpy().transpose(1, 0, 2), 1e-4, key=k)
    assert_close("gn dinp vs torch", g["inp"], x.grad.numpy().transpose(1, 0, 2), 1e-4, key=k)
    assert_close("gn dweight vs torch", g["weight"], w.grad.numpy(), 1e-4, key=k)
    assert_close("gn dbias vs torch", g["bias"], b.grad.numpy(), 1e-4, key=k)


@pytest.mark.parametrize("B,IN,OUT", [(1, 3, 5), (5, 16, 9)])
def test_linear_and_silu_vs_torch(B, IN, OUT):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = linear_case(B, IN, OUT)
    p = case.p32()
    out, _ = case.ours(p)
    dout = _dout(case, out.shape, key=4)
    g = _ours_grads(case, dout)
    x = torch.tensor(p["inp"], requires_grad=True)
    w = torch.tensor(p["weight"], requires_grad=True)
    b = torch.tensor(p["bias"], requires_grad=True)
    y = F.linear(x, w, b)
    y.backward(torch.tensor(as32(dout)))
    k = "linear vs torch"
    assert_close("linear out vs torch", out, y.detach().numpy(), 1e-4, key=k)
    assert_close("linear dinp vs torch", g["inp"], x.grad.numpy(), 1e-4, key=k)
    assert_close("linear dweight vs torch", g["weight"], w.grad.numpy(), 1e-4, key=k)
    assert_close("linear dbias vs torch", g["bias"], b.grad.numpy(), 1e-4, key=k)
    # silu on the linear output
    s = np.empty_like(out)
    _core.silu_forward(s, out)
    ds = np.zeros_like(out)
    _core.silu_backward(ds, as32(dout), out)
    xt = torch.tensor(out, requires_grad=True)
    st = F.silu(xt)
    st.backward(torch.tensor(as32(dout)))
    assert_close("silu out vs torch", s, st.detach().numpy(), 1e-4, key="silu vs torch")
    assert_close("silu dinp vs torch", ds, xt.grad.numpy(), 1e-4, key="silu vs torch")


# HW 49 (the 7x7 layers) and 75 run the forward's 32-query blocks, 8-query
# vectors and scalar tail (attention.c)
@pytest.mark.parametrize("B,C,HW,NH", [(1, 4, 6, 1), (2, 6, 5, 3), (2, 8, 9, 2), (2, 32, 16, 4),
                                       (2, 16, 49, 2), (1, 8, 75, 1)])
def test_attention_vs_torch(B, C, HW, NH):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = attn_case(B, C, HW, NH)
    p = case.p32()
    out, ex = case.ours(p)
    dout = _dout(case, out.shape, key=4)
    g = _ours_grads(case, dout)
    hd = C // NH
    qkv = torch.tensor(p["qkv"], requires_grad=True)                     # (3C, B, HW)
    heads = qkv.reshape(3, NH, hd, B, HW).permute(0, 3, 1, 4, 2)         # (3, B, NH, HW, hd)
    y = F.scaled_dot_product_attention(heads[0], heads[1], heads[2])     # (B, NH, HW, hd)
    y_cm = y.permute(1, 3, 0, 2).reshape(C, B, HW)
    y_cm.backward(torch.tensor(as32(dout)))
    # explicit probabilities for the saved att
    Pt = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(hd), dim=-1)
    k = "attention vs torch"
    assert_close("attn out vs torch", out, y_cm.detach().numpy(), 1e-4, key=k)
    assert_close("attn att vs torch", ex["att"], Pt.detach().numpy(), 1e-4, key=k)
    assert_close("attn dqkv vs torch", g["qkv"], qkv.grad.numpy(), 1e-4, key=k)


def test_attention_queries_are_computed_alike_wherever_they_fall():
    """Each query's output and probabilities are one fixed sequence of float
    operations, whether it falls in a 32-query block, an 8-query vector or the
    scalar tail: permuting the queries (q's positions, k and v kept) permutes
    out and att bit for bit."""
    B, C, HW, NH = 2, 16, 75, 2
    qkv = attn_case(B, C, HW, NH).p32()["qkv"]
    perm = np.random.default_rng(3).permutation(HW)
    assert (perm[:32] >= 40).any() and (perm[64:] < 32).any()   # blocks swap places
    qkv2 = qkv.copy()
    qkv2[:C] = qkv[:C][:, :, perm]
    out, att = np.empty((C, B, HW), F32), np.empty((B, NH, HW, HW), F32)
    out2, att2 = np.empty_like(out), np.empty_like(att)
    _core.attention_forward(out, att, qkv, B, C, HW, NH)
    _core.attention_forward(out2, att2, qkv2, B, C, HW, NH)
    assert np.array_equal(out2, out[:, :, perm])
    assert np.array_equal(att2, att[:, :, perm, :])
    assert np.allclose(att.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("C,B,H,W", [(3, 2, 4, 5), (1, 1, 1, 1)])
def test_upsample_vs_torch(C, B, H, W):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    case = upsample_case(C, B, H, W)
    p = case.p32()
    out, _ = case.ours(p)
    dout = _dout(case, out.shape, key=4)
    g = _ours_grads(case, dout)
    x = torch.tensor(p["inp"].transpose(1, 0, 2, 3).copy(), requires_grad=True)
    y = F.interpolate(x, scale_factor=2.0, mode="nearest")
    y.backward(torch.tensor(as32(dout).transpose(1, 0, 2, 3).copy()))
    k = "upsample vs torch"
    assert_close("upsample out vs torch", out, y.detach().numpy().transpose(1, 0, 2, 3), 0.0, key=k)
    assert_close("upsample dinp vs torch", g["inp"], x.grad.numpy().transpose(1, 0, 2, 3), 1e-6,
                 key=k)


# --------------------------------------------------------------------------- write, not add

# The U-Net's backward lets the first writer of each activation gradient
# overwrite it (accumulate=False) instead of zeroing all of them first: that
# must give exactly what adding into zeros gives, and never read the old
# contents (NaN here).
WRITE_CASES = [conv_case(3, 8, 12, 10, 6, 3, 1),     # Winograd F(2x2)
               conv_case(3, 8, 13, 10, 9, 3, 1),     # Winograd F(4x4)
               conv_case(2, 3, 9, 7, 5, 3, 1),       # im2col (few channels)
               conv_case(2, 6, 8, 6, 4, 3, 2),       # stride 2
               conv_case(2, 6, 5, 4, 7, 1, 1),       # 1x1
               gn_case(3, 8, 20, 2, True), gn_case(2, 6, 9, 3, False),
               attn_case(2, 8, 9, 2), upsample_case(3, 2, 3, 5)]


@pytest.mark.parametrize("case", WRITE_CASES, ids=repr)
def test_backward_write_equals_add_into_zeros(case):
    p = case.p32()
    out, _ = case.ours(p)
    dout = as32(_dout(case, out.shape))
    main = case.params[0]   # the layer's input gradient
    added = {k: np.zeros(p[k].shape, F32) for k in case.params}
    case.ours_bwd(p, dout, added)
    written = {k: np.zeros(p[k].shape, F32) for k in case.params}
    written[main][...] = np.nan
    case.ours_bwd(p, dout, written, accumulate=False)
    assert np.abs(added[main]).max() > 0
    for k in case.params:
        assert np.array_equal(added[k], written[k]), f"d{k} differs"


# --------------------------------------------------------------------------- thread counts

def _at_threads(n, fn):
    ddpm.set_num_threads(n)
    assert ddpm.get_num_threads() == n
    return fn()


@pytest.mark.parametrize("B,H,C,OC,K,S", [(16, 28, 32, 32, 3, 1), (16, 28, 32, 32, 3, 2),
                                          (16, 28, 96, 32, 1, 1), (5, 14, 32, 64, 1, 1),
                                          (6, 7, 64, 128, 3, 1), (64, 7, 32, 16, 3, 1),
                                          (64, 28, 4, 8, 3, 1)])
def test_conv2d_bitwise_identical_across_thread_counts(B, H, C, OC, K, S):
    # (16, 28, 96, 32, 1, 1): a U-Net shortcut; its weight gradient sums over
    # B*H*W = 12544 positions, cut into parts that threads share.
    # (5, 14, 32, 64, 1, 1): a forward GEMM just over matmul's split size
    # (6, 7, 64, 128, 3, 1): Winograd F(4x4) segments across samples (4 tiles a plane)
    # (64, 7, 32, 16, 3, 1): a 7x7 layer of a training half-batch, 8 chunks of 32 tiles:
    # on one thread the weight gradient adds each chunk to one running sum, on two it
    # sums one partial per chunk at the end; the same bits
    # (64, 28, 4, 8, 3, 1): 4 chunks of 784 tiles, over the running sum's limit (a GEMM's K
    # longer than the smallest K block of OpenBLAS's kernels): partials on one thread too
    W = H
    case = conv_case(B, C, H, W, OC, K, S)
    p = case.p32()
    Ho, Wo = out_size(H, K, S), out_size(W, K, S)
    dout = as32(_dout(case, (OC, B, Ho, Wo)))

    def run():
        out, _ = case.ours(p)
        g = {k: np.zeros(p[k].shape, F32) for k in case.params}
        case.ours_bwd(p, dout, g)
        return out, g

    o1, g1 = _at_threads(1, run)
    o2, g2 = _at_threads(2, run)
    assert np.array_equal(o1, o2), f"conv forward differs: max {np.abs(o1 - o2).max():.3e}"
    for k in g1:
        assert np.array_equal(g1[k], g2[k]), (
            f"conv d{k} differs: max {np.abs(g1[k] - g2[k]).max():.3e}")
    # this shape runs in several im2col chunks: also right, not only reproducible
    c64 = case.p64()
    assert_close(f"{case.name} forward", o1, case.ref(c64), rtol=1e-5, key="conv2d forward vs f64")
    ref = case.ref_bwd(c64, dout.astype(F64))
    for k in g1:
        assert_close(f"{case.name} d{k}", g1[k], ref[k], rtol=2e-5, key="conv2d backward vs f64")


def test_groupnorm_and_attention_bitwise_identical_across_thread_counts():
    for case in (gn_case(8, 32, 256, 8, True), attn_case(4, 32, 64, 4)):
        p = case.p32()

        def run():
            out, ex = case.ours(p)
            dout = as32(_dout(case, out.shape))
            g = {k: np.full(p[k].shape, 0.25, F32) for k in case.params}
            case.ours_bwd(p, dout, g)
            return out, ex, g

        o1, e1, g1 = _at_threads(1, run)
        o2, e2, g2 = _at_threads(2, run)
        assert np.array_equal(o1, o2), f"{case.name} forward differs: {np.abs(o1 - o2).max():.3e}"
        for k in e1:
            assert np.array_equal(e1[k], e2[k]), f"{case.name} {k} differs"
        for k in g1:
            assert np.array_equal(g1[k], g2[k]), (
                f"{case.name} d{k} differs: {np.abs(g1[k] - g2[k]).max():.3e}")
        assert_close(f"{case.name} forward", o1, case.ref(case.p64()), rtol=1e-5,
                     key=f"{case.layer} forward vs f64")


@pytest.mark.parametrize("B,C,HW,NH", [(3, 16, 49, 2), (2, 8, 10, 1), (2, 8, 100, 2)])
def test_attention_in_16_lanes_gives_the_8_lane_bits(B, C, HW, NH):
    # where the CPU has AVX-512F the softmax's exps run in 16-float vectors
    # (core/wide.h: the whole (HW, HW) block when HW <= 64, else row by row):
    # the same bits as the 8-float vectors, and the float64 reference's numbers
    if not _core.simd_wide(True):
        pytest.skip("this CPU has no AVX-512F: the 8-float vectors are the only ones")
    case = attn_case(B, C, HW, NH)
    p = case.p32()
    wide = case.ours(p)
    try:
        _core.simd_wide(False)
        narrow = case.ours(p)
    finally:
        _core.simd_wide(True)
    assert np.array_equal(wide[0], narrow[0]), f"{np.sum(wide[0] != narrow[0])} differ"
    for k in wide[1]:
        assert np.array_equal(wide[1][k], narrow[1][k]), k
    assert_close("attention (16 lanes) forward", wide[0], case.ref(case.p64()), rtol=1e-5,
                 key="attention forward vs f64")


# --------------------------------------------------------------------------- bad input

_BAD_PRELUDE = """
import numpy as np
from ddpm import _core

f32 = lambda *s: np.zeros(s, np.float32)
def ro(a):
    a.flags.writeable = False
    return a
def nc(*s):  # same number of values, not C-contiguous
    n = int(np.prod(s))
    return np.zeros((n, 2), np.float32)[:, 0]

failures = []
def expect(label, exc, fn, *args):
    print("case", label, flush=True)  # the last line names the case if we crash
    try:
        fn(*args)
    except exc as e:
        print("  ok:", type(e).__name__, e, flush=True)
        return
    except Exception as e:
        failures.append(f"{label}: raised {type(e).__name__}: {e}")
        return
    failures.append(f"{label}: no exception")
"""

_BAD_TAIL = """
if failures:
    raise SystemExit("FAILED:\\n" + "\\n".join(failures))
"""

BAD_INPUT = {
    "conv2d": """
B, C, H, W, OC = 2, 3, 5, 4, 4
x, w, b, o = f32(C, B, H, W), f32(OC, C, 3, 3), f32(OC), f32(OC, B, H, W)
fw = _core.conv2d_forward
fw(o, x, w, b, B, C, H, W, OC, 3, 1, False)  # a valid call first
expect("out float64", TypeError, fw, np.zeros(o.shape), x, w, b, B, C, H, W, OC, 3, 1, False)
expect("inp float64", TypeError, fw, o, x.astype(np.float64), w, b, B, C, H, W, OC, 3, 1, False)
expect("inp list", TypeError, fw, o, x.tolist(), w, b, B, C, H, W, OC, 3, 1, False)
expect("inp wrong size", ValueError, fw, o, f32(C, B, H, W + 1), w, b, B, C, H, W, OC, 3, 1, False)
expect("out wrong size (S=2 shape given S=1)", ValueError, fw, f32(OC, B, 3, 2), x, w, b, B, C, H, W, OC, 3, 1, False)
expect("weight wrong size", ValueError, fw, o, x, f32(OC, C, 1, 1), b, B, C, H, W, OC, 3, 1, False)
expect("bias wrong size", ValueError, fw, o, x, w, f32(OC + 1), B, C, H, W, OC, 3, 1, False)
expect("weight non-contiguous", ValueError, fw, o, x, nc(OC, C, 3, 3), b, B, C, H, W, OC, 3, 1, False)
expect("out read-only", ValueError, fw, ro(f32(OC, B, H, W)), x, w, b, B, C, H, W, OC, 3, 1, False)
expect("K=5", ValueError, fw, o, x, f32(OC, C, 5, 5), b, B, C, H, W, OC, 5, 1, False)
expect("K=2", ValueError, fw, o, x, f32(OC, C, 2, 2), b, B, C, H, W, OC, 2, 1, False)
expect("S=3", ValueError, fw, f32(OC, B, 2, 2), x, w, b, B, C, H, W, OC, 3, 3, False)
expect("S=0", ValueError, fw, o, x, w, b, B, C, H, W, OC, 3, 0, False)
expect("B=0", ValueError, fw, f32(0), f32(0), w, b, 0, C, H, W, OC, 3, 1, False)
expect("C=-1", ValueError, fw, o, x, w, b, B, -1, H, W, OC, 3, 1, False)
bw = _core.conv2d_backward
dx, dw, db, do = f32(C, B, H, W), f32(OC, C, 3, 3), f32(OC), f32(OC, B, H, W)
bw(dx, dw, db, do, x, w, B, C, H, W, OC, 3, 1)
expect("dweight float64", TypeError, bw, dx, np.zeros(dw.shape), db, do, x, w, B, C, H, W, OC, 3, 1)
expect("dweight None", TypeError, bw, dx, None, db, do, x, w, B, C, H, W, OC, 3, 1)
expect("dinp read-only", ValueError, bw, ro(f32(C, B, H, W)), dw, db, do, x, w, B, C, H, W, OC, 3, 1)
expect("dbias read-only", ValueError, bw, dx, dw, ro(f32(OC)), do, x, w, B, C, H, W, OC, 3, 1)
expect("dout wrong size", ValueError, bw, dx, dw, db, f32(OC, B, H, W - 1), x, w, B, C, H, W, OC, 3, 1)
expect("dinp non-contiguous", ValueError, bw, nc(C, B, H, W), dw, db, do, x, w, B, C, H, W, OC, 3, 1)
expect("K=5", ValueError, bw, dx, f32(OC, C, 5, 5), db, do, x, f32(OC, C, 5, 5), B, C, H, W, OC, 5, 1)
expect("S=3", ValueError, bw, dx, dw, db, f32(OC, B, 2, 2), x, w, B, C, H, W, OC, 3, 3)
""",
    "groupnorm": """
B, C, HW, G = 2, 6, 5, 3
x, w, b, o, m, r = f32(C, B, HW), f32(C), f32(C), f32(C, B, HW), f32(B, G), f32(B, G)
fw = _core.groupnorm_forward
fw(o, m, r, x, w, b, B, C, HW, G, 1e-5, True)
expect("C % G", ValueError, fw, o, f32(B, 4), f32(B, 4), x, w, b, B, C, HW, 4, 1e-5, True)
expect("G=0", ValueError, fw, o, m, r, x, w, b, B, C, HW, 0, 1e-5, True)
expect("out float64", TypeError, fw, np.zeros(o.shape), m, r, x, w, b, B, C, HW, G, 1e-5, True)
expect("mean wrong size", ValueError, fw, o, f32(B, G + 1), r, x, w, b, B, C, HW, G, 1e-5, True)
expect("rstd read-only", ValueError, fw, o, m, ro(f32(B, G)), x, w, b, B, C, HW, G, 1e-5, True)
expect("inp non-contiguous", ValueError, fw, o, m, r, nc(C, B, HW), w, b, B, C, HW, G, 1e-5, True)
expect("bias None", TypeError, fw, o, m, r, x, w, None, B, C, HW, G, 1e-5, True)
bw = _core.groupnorm_backward
dx, dw, db, do = f32(C, B, HW), f32(C), f32(C), f32(C, B, HW)
bw(dx, dw, db, do, x, w, b, m, r, B, C, HW, G, True)
expect("C % G", ValueError, bw, dx, dw, db, do, x, w, b, f32(B, 4), f32(B, 4), B, C, HW, 4, True)
expect("dinp float64", TypeError, bw, np.zeros(dx.shape), dw, db, do, x, w, b, m, r, B, C, HW, G, True)
expect("dweight read-only", ValueError, bw, dx, ro(f32(C)), db, do, x, w, b, m, r, B, C, HW, G, True)
expect("dout wrong size", ValueError, bw, dx, dw, db, f32(C, B, HW + 1), x, w, b, m, r, B, C, HW, G, True)
expect("mean non-contiguous", ValueError, bw, dx, dw, db, do, x, w, b, nc(B, G), r, B, C, HW, G, True)
""",
    "linear_silu": """
B, IN, OUT = 3, 4, 5
x, w, b, o = f32(B, IN), f32(OUT, IN), f32(OUT), f32(B, OUT)
fw = _core.linear_forward
fw(o, x, w, b, B, IN, OUT)
expect("out float64", TypeError, fw, np.zeros(o.shape), x, w, b, B, IN, OUT)
expect("weight float64", TypeError, fw, o, x, np.zeros(w.shape), b, B, IN, OUT)
expect("inp wrong size", ValueError, fw, o, f32(B, IN + 1), w, b, B, IN, OUT)
expect("out read-only", ValueError, fw, ro(f32(B, OUT)), x, w, b, B, IN, OUT)
expect("weight non-contiguous (transposed)", ValueError, fw, o, x, f32(IN, OUT).T, b, B, IN, OUT)
expect("OUT=0", ValueError, fw, f32(0), x, f32(0), f32(0), B, IN, 0)
bw = _core.linear_backward
dx, dw, db, do = f32(B, IN), f32(OUT, IN), f32(OUT), f32(B, OUT)
bw(dx, dw, db, do, x, w, B, IN, OUT)
expect("dweight read-only", ValueError, bw, dx, ro(f32(OUT, IN)), db, do, x, w, B, IN, OUT)
expect("dinp float64", TypeError, bw, np.zeros(dx.shape), dw, db, do, x, w, B, IN, OUT)
expect("dout wrong size", ValueError, bw, dx, dw, db, f32(B, OUT + 1), x, w, B, IN, OUT)
expect("dbias non-contiguous", ValueError, bw, dx, dw, nc(OUT), do, x, w, B, IN, OUT)
sf, sb = _core.silu_forward, _core.silu_backward
sf(f32(7), f32(7))
expect("silu out float64", TypeError, sf, np.zeros(7), f32(7))
expect("silu inp float64", TypeError, sf, f32(7), np.zeros(7))
expect("silu out wrong size", ValueError, sf, f32(6), f32(7))
expect("silu out read-only", ValueError, sf, ro(f32(7)), f32(7))
expect("silu inp non-contiguous", ValueError, sf, f32(7), nc(7))
expect("silu_backward dout wrong size", ValueError, sb, f32(7), f32(8), f32(7))
expect("silu_backward dinp read-only", ValueError, sb, ro(f32(7)), f32(7), f32(7))
""",
    "timestep": """
te = _core.timestep_embedding
t = np.arange(4, dtype=np.float32)
te(f32(4, 8), t, 4, 8, True, 0.0, 10000.0)
expect("out float64", TypeError, te, np.zeros((4, 8)), t, 4, 8, True, 0.0, 10000.0)
expect("t float64", TypeError, te, f32(4, 8), t.astype(np.float64), 4, 8, True, 0.0, 10000.0)
expect("t int", TypeError, te, f32(4, 8), np.arange(4), 4, 8, True, 0.0, 10000.0)
expect("out wrong size", ValueError, te, f32(4, 9), t, 4, 8, True, 0.0, 10000.0)
expect("t wrong size", ValueError, te, f32(4, 8), t[:3].copy(), 4, 8, True, 0.0, 10000.0)
expect("out read-only", ValueError, te, ro(f32(4, 8)), t, 4, 8, True, 0.0, 10000.0)
expect("t non-contiguous", ValueError, te, f32(4, 8), nc(4), 4, 8, True, 0.0, 10000.0)
expect("dim=1", ValueError, te, f32(4, 1), t, 4, 1, True, 0.0, 10000.0)
expect("half == freq_shift", ValueError, te, f32(4, 2), t, 4, 2, True, 1.0, 10000.0)
expect("max_period=0", ValueError, te, f32(4, 8), t, 4, 8, True, 0.0, 0.0)
""",
    "attention": """
B, C, HW, NH = 2, 6, 5, 3
qkv, o, a = f32(3 * C, B, HW), f32(C, B, HW), f32(B, NH, HW, HW)
fw, bw = _core.attention_forward, _core.attention_backward
fw(o, a, qkv, B, C, HW, NH)
expect("C % NH", ValueError, fw, o, f32(B, 4, HW, HW), qkv, B, C, HW, 4)
expect("NH=0", ValueError, fw, o, a, qkv, B, C, HW, 0)
expect("qkv float64", TypeError, fw, o, a, qkv.astype(np.float64), B, C, HW, NH)
expect("att wrong size", ValueError, fw, o, f32(B, NH, HW, HW - 1), qkv, B, C, HW, NH)
expect("out read-only", ValueError, fw, ro(f32(C, B, HW)), a, qkv, B, C, HW, NH)
expect("qkv non-contiguous", ValueError, fw, o, a, nc(3 * C, B, HW), B, C, HW, NH)
dq, do = f32(3 * C, B, HW), f32(C, B, HW)
bw(dq, do, qkv, a, B, C, HW, NH)
expect("C % NH", ValueError, bw, dq, do, qkv, f32(B, 4, HW, HW), B, C, HW, 4)
expect("dqkv read-only", ValueError, bw, ro(f32(3 * C, B, HW)), do, qkv, a, B, C, HW, NH)
expect("dqkv float64", TypeError, bw, np.zeros(dq.shape), do, qkv, a, B, C, HW, NH)
expect("dout wrong size", ValueError, bw, dq, f32(C, B, HW + 1), qkv, a, B, C, HW, NH)
expect("att non-contiguous", ValueError, bw, dq, do, qkv, nc(B, NH, HW, HW), B, C, HW, NH)
""",
    "upsample": """
C, B, H, W = 3, 2, 4, 5
x, o = f32(C, B, H, W), f32(C, B, 2 * H, 2 * W)
fw, bw = _core.upsample_forward, _core.upsample_backward
fw(o, x, C, B, H, W)
expect("out float64", TypeError, fw, np.zeros(o.shape), x, C, B, H, W)
expect("out wrong size", ValueError, fw, f32(C, B, 2 * H, 2 * W - 1), x, C, B, H, W)
expect("out same size as inp", ValueError, fw, f32(C, B, H, W), x, C, B, H, W)
expect("out read-only", ValueError, fw, ro(f32(C, B, 2 * H, 2 * W)), x, C, B, H, W)
expect("inp non-contiguous", ValueError, fw, o, nc(C, B, H, W), C, B, H, W)
expect("H=0", ValueError, fw, o, x, C, B, 0, W)
bw(f32(C, B, H, W), o, C, B, H, W)
expect("dinp read-only", ValueError, bw, ro(f32(C, B, H, W)), o, C, B, H, W)
expect("dout wrong size", ValueError, bw, f32(C, B, H, W), x, C, B, H, W)
expect("dinp float64", TypeError, bw, np.zeros(x.shape), o, C, B, H, W)
""",
}


@pytest.mark.parametrize("layer", list(BAD_INPUT))
def test_bad_input_raises(layer):
    assert_subprocess_ok(_BAD_PRELUDE + BAD_INPUT[layer] + _BAD_TAIL, timeout=60)


# --------------------------------------------------------------------------- Winograd path
# 3x3 stride-1 convolutions with C >= 4 go through Winograd in conv2d.c: F(2x2, 3x3) with
# fewer than 8 output channels, F(4x4, 3x3) from 8 on (the input gradient is a convolution
# with OC -> C, so its tile follows C).  Odd H/W (border tiles partly outside: H, W not
# multiples of 2 or of 4), 1x1, 3x1 and 2x6 images, no bias, chunks spanning samples.

WINOGRAD_CASES = [conv_case(2, 5, 7, 5, 6, 3, 1), conv_case(1, 4, 1, 1, 3, 3, 1),
                  conv_case(3, 8, 9, 12, 4, 3, 1, bias=False), conv_case(2, 6, 3, 1, 5, 3, 1),
                  # F(4x4): forward, input gradient (C >= 8) and weight gradient
                  conv_case(2, 8, 7, 5, 9, 3, 1), conv_case(1, 9, 1, 1, 8, 3, 1),
                  conv_case(3, 12, 9, 13, 10, 3, 1, bias=False), conv_case(2, 8, 3, 1, 8, 3, 1),
                  conv_case(4, 10, 2, 6, 12, 3, 1), conv_case(2, 16, 8, 8, 16, 3, 1),
                  # F(4x4) forward and weight gradient, F(2x2) input gradient (C < 8)
                  conv_case(2, 5, 6, 7, 8, 3, 1),
                  # F(4x4) rows past the vector staging: 30 wide (8 tiles) splits its
                  # windows in scalar code but writes its outputs (and splits dy) with
                  # permutes; 37 wide takes the scalar code throughout
                  conv_case(1, 8, 5, 30, 8, 3, 1), conv_case(1, 8, 3, 37, 9, 3, 1)]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=repr)
def test_conv2d_winograd_odd_sizes(case):
    test_forward_vs_float64_reference(case)
    test_backward_vs_float64_reference(case)
    test_backward_vs_finite_differences_of_reference(case)
    test_backward_vs_coarse_finite_differences_of_ours(case)
    test_backward_accumulates(case)


@pytest.mark.parametrize("B,C,OC", [(32, 64, 128), (48, 16, 24), (64, 128, 128)])
def test_conv2d_whole_planes_give_the_row_transforms_numbers(B, C, OC):
    # 7x7 planes in chunks of at least 8 whole planes go through the F(4x4)
    # transforms as whole planes, 8 side by side (wino_f4_planes.c): the
    # forward (written and accumulated), the input gradient (its chunks follow
    # the weight gradient's) and the weight gradient (its tiles put back in the
    # segments' order, which its GEMMs sum in) give the numbers of the
    # row-by-row transforms, bit for bit, at 1 and 2 threads.  B = 48 has
    # chunks of 12 planes: a group of 8 and one of 4.
    H = W = 7
    case = conv_case(B, C, H, W, OC, 3, 1)
    p = case.p32()
    dout = as32(_dout(case, (OC, B, H, W)))
    base = q32(_rng(12, B, OC).standard_normal((OC, B, H, W)))

    def run():
        out, _ = case.ours(p)
        acc = as32(base)
        _core.conv2d_forward(acc, p["inp"], p["weight"], p["bias"], B, C, H, W, OC, 3, 1, True)
        g = {k: np.zeros(p[k].shape, F32) for k in case.params}
        case.ours_bwd(p, dout, g)
        return [out, acc] + [g[k] for k in case.params]

    runs = {}
    try:
        for whole in (True, False):
            _core.conv2d_whole_planes(whole)
            for n in (1, 2):
                runs[whole, n] = _at_threads(n, run)
    finally:
        _core.conv2d_whole_planes(True)
    for key, got in runs.items():
        for a, b in zip(runs[False, 1], got):
            assert np.array_equal(a, b), f"{key}: differs by {np.abs(a - b).max():.3e}"
    c64 = case.p64()
    out, acc = runs[True, 1][:2]
    assert_close(f"{case.name} forward", out, case.ref(c64), rtol=1e-5, key="conv2d forward vs f64")
    assert_close(f"{case.name} accumulate", acc, base + case.ref(c64), rtol=1e-5)
    ref = case.ref_bwd(c64, dout.astype(F64))
    for k, got in zip(case.params, runs[True, 1][2:]):
        assert_close(f"{case.name} d{k}", got, ref[k], rtol=2e-5, key="conv2d backward vs f64")


@pytest.mark.parametrize("H,W", [(5, 1), (3, 4), (9, 5), (6, 8), (11, 13), (7, 14), (14, 16),
                                 (10, 17), (5, 20), (13, 25), (28, 28), (6, 29), (5, 32)])
def test_conv2d_16_lane_staging_gives_the_8_lane_bits(H, W):
    # where the CPU has AVX-512F, F(4x4)'s row transforms load each window row
    # with masked 16-float loads and split it with permutes (rows up to 28
    # wide), and write each output row with permutes and masked stores (up to
    # 32 wide): the same floats move, so the forward (written and
    # accumulated) has the bits of the 8-float staging, row by row and with
    # small planes whole; and both are the float64 reference's numbers
    if not _core.simd_wide(True):
        pytest.skip("this CPU has no AVX-512F: the 8-float staging is the only one")
    B, C, OC = 3, 8, 9
    case = conv_case(B, C, H, W, OC, 3, 1)
    p = case.p32()
    base = q32(_rng(13, H, W).standard_normal((OC, B, H, W)))

    def run():
        out, _ = case.ours(p)
        acc = as32(base)
        _core.conv2d_forward(acc, p["inp"], p["weight"], p["bias"], B, C, H, W, OC, 3, 1, True)
        return out, acc

    runs = {}
    try:
        for wide in (True, False):
            _core.simd_wide(wide)
            for whole in (True, False):
                _core.conv2d_whole_planes(whole)
                runs[wide, whole] = run()
    finally:
        _core.simd_wide(True)
        _core.conv2d_whole_planes(True)
    for key, got in runs.items():
        for name, a, b in zip(("forward", "accumulate"), runs[False, False], got):
            assert np.array_equal(a, b), f"{key} {name}: differs by {np.abs(a - b).max():.3e}"
    c64 = case.p64()
    out, acc = runs[True, True]
    assert_close(f"{case.name} forward", out, case.ref(c64), rtol=1e-5, key="conv2d forward vs f64")
    assert_close(f"{case.name} accumulate", acc, base + case.ref(c64), rtol=1e-5)


@pytest.mark.parametrize("OC", [12, 6])                 # F(4x4) / F(2x2)
def test_conv2d_winograd_accumulate_and_threads(OC):
    B, C, H, W, K, S = 9, 8, 13, 11, 3, 1      # several chunks of tile rows
    case = conv_case(B, C, H, W, OC, K, S)
    p = case.p32()
    c64 = case.p64()
    base = q32(_rng(11, B, C).standard_normal((OC, B, H, W)))
    out = as32(base)
    _core.conv2d_forward(out, p["inp"], p["weight"], p["bias"], B, C, H, W, OC, K, S, True)
    assert_close(f"{case.name} accumulate", out, base + case.ref(c64), rtol=1e-5)
    dout = as32(_dout(case, (OC, B, H, W)))

    def run():
        out, _ = case.ours(p)
        g = {k: np.zeros(p[k].shape, F32) for k in case.params}
        case.ours_bwd(p, dout, g)
        return out, g

    o1, g1 = _at_threads(1, run)
    o2, g2 = _at_threads(2, run)
    o3, g3 = _at_threads(3, run)
    for o, g in ((o2, g2), (o3, g3)):
        assert np.array_equal(o1, o), f"conv forward differs: max {np.abs(o1 - o).max():.3e}"
        for k in g1:
            assert np.array_equal(g1[k], g[k]), (
                f"conv d{k} differs: max {np.abs(g1[k] - g[k]).max():.3e}")
    assert_close(f"{case.name} forward", o1, case.ref(c64), rtol=1e-5, key="conv2d forward vs f64")
    ref = case.ref_bwd(c64, dout.astype(F64))
    for k in g1:
        assert_close(f"{case.name} d{k}", g1[k], ref[k], rtol=2e-5, key="conv2d backward vs f64")
