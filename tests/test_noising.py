"""Forward noising: q_sample (closed form), q_sample_chain (step by step) and the
posterior q(x_{t-1} | x_t, x_0), against NumPy float64 formulas and Monte Carlo."""
from __future__ import annotations

import gc
import math
import os
import resource
import sys

import numpy as np
import pytest

import ddpm
from ddpm import NoiseSchedule, _core
from conftest import run_in_subprocess

# stream ids documented in csrc/rng.h
STREAM_Q_SAMPLE = 0x0000000000000001
STREAM_CHAIN_BASE = 0x0000000100000000


def ref_coefs(s: NoiseSchedule):
    """sqrt(alpha_bar), sqrt(1 - alpha_bar), alphas, alpha_bars in float64 from the betas."""
    b = np.asarray(s.betas, np.float64).copy()
    b[0] = 0.0
    ab = np.cumprod(1.0 - b)
    return np.sqrt(ab), np.sqrt(1.0 - ab), 1.0 - b, ab


def closed_form(s, x0, t, eps):
    sa, sb, _, _ = ref_coefs(s)
    t = np.broadcast_to(np.asarray(t), (x0.shape[0],))
    shp = (-1,) + (1,) * (x0.ndim - 1)
    return (sa[t].reshape(shp) * x0.astype(np.float64)
            + sb[t].reshape(shp) * eps.astype(np.float64))


@pytest.fixture(scope="module")
def images():
    g = np.random.default_rng(1)
    return g.uniform(-1, 1, (16, 1, 28, 28)).astype(np.float32)


# --------------------------------------------------------------------------- q_sample values
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 2, 250, 999, 1000, "per-sample"])
def test_q_sample_matches_closed_form(kind, t, images):
    s = NoiseSchedule(kind)
    if t == "per-sample":
        t = np.linspace(1, 1000, images.shape[0]).astype(np.int64)
    xt, eps = s.q_sample(images, t=t, seed=4)
    assert xt.dtype == eps.dtype == np.float32 and xt.shape == eps.shape == images.shape
    want = closed_form(s, images, t, eps)
    diff = np.abs(xt - want).max()
    assert diff < 1e-6, f"{kind} t={t}: max abs diff {diff:.3g}"
    # eps is real noise, not zeros
    assert 0.9 < float(eps.std()) < 1.1


def test_q_sample_eps_is_the_documented_stream(images):
    # noising.h: eps[n, d] = normal n*D + d of (seed, DDPM_STREAM_Q_SAMPLE)
    s = NoiseSchedule("linear")
    _, eps = s.q_sample(images, t=10, seed=99)
    z = np.empty(images.size, np.float32)
    _core.rng_normal(z, 99, STREAM_Q_SAMPLE, 0)
    assert eps.tobytes() == z.reshape(images.shape).tobytes()
    # and independent of t: the same noise at every t for one seed
    _, eps2 = s.q_sample(images, t=900, seed=99)
    assert np.array_equal(eps, eps2)


def test_q_sample_given_noise_is_used_exactly_and_inputs_untouched(images):
    s = NoiseSchedule("cosine")
    g = np.random.default_rng(2)
    noise = g.standard_normal(images.shape).astype(np.float32)
    x_before, n_before = images.copy(), noise.copy()
    t = np.arange(1, 17) * 60
    t_before = t.copy()
    xt, eps = s.q_sample(images, t=t, noise=noise, seed=123)
    assert np.array_equal(eps, n_before), "returned eps differs from the noise passed in"
    assert np.array_equal(noise, n_before), "noise was modified"
    assert np.array_equal(images, x_before), "x0 was modified"
    assert np.array_equal(t, t_before), "t was modified"
    diff = np.abs(xt - closed_form(s, images, t, n_before)).max()
    assert diff < 1e-6, f"max abs diff {diff:.3g}"
    # the seed is ignored when noise is given
    xt2, _ = s.q_sample(images, t=t, noise=noise, seed=7)
    assert np.array_equal(xt, xt2)
    # float64 noise is accepted (converted) and gives the same x_t
    xt3, _ = s.q_sample(images, t=t, noise=noise.astype(np.float64))
    assert np.array_equal(xt, xt3)


def test_q_sample_same_seed_same_result(images):
    s = NoiseSchedule("linear")
    a = s.q_sample(images, 500, seed=1)
    b = s.q_sample(images, 500, seed=1)
    c = s.q_sample(images, 500, seed=2)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("make", [
    lambda x: x.astype(np.float64),
    lambda x: np.asfortranarray(x),
    lambda x: np.asfortranarray(x.astype(np.float64)),
    lambda x: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)[:, :, ::2, ::2],
    lambda x: x.astype(">f4"),
    lambda x: x.astype(np.float16),
    lambda x: x.tolist(),
], ids=["float64", "fortran", "fortran-float64", "strided", "big-endian", "float16", "list"])
def test_q_sample_accepts_any_float_layout(make, images):
    s = NoiseSchedule("cosine")
    x = make(images)
    ref_x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    x_before = np.array(x, copy=True)
    xt, eps = s.q_sample(x, t=300, seed=5)
    xt_ref, eps_ref = s.q_sample(ref_x, t=300, seed=5)
    assert xt.flags.c_contiguous and xt.dtype == np.float32
    assert xt.tobytes() == xt_ref.tobytes() and eps.tobytes() == eps_ref.tobytes()
    assert np.array_equal(np.asarray(x), x_before)


def test_q_sample_flat_and_scalar_data():
    s = NoiseSchedule("linear", timesteps=10)
    x0 = np.linspace(-1, 1, 7).astype(np.float32)              # (N,) = 7 scalars
    xt, eps = s.q_sample(x0, t=np.arange(1, 8), seed=0)
    assert xt.shape == (7,)
    assert np.abs(xt - closed_form(s, x0, np.arange(1, 8), eps)).max() < 1e-6


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("kind,t,c", [("linear", 50, 0.7), ("linear", 500, -0.4),
                                      ("cosine", 500, 1.0), ("cosine", 950, -1.0)])
def test_q_sample_moments_for_constant_x0(kind, t, c):
    s = NoiseSchedule(kind)
    x0 = np.full((64, 1, 28, 28), c, np.float32)
    xt, _ = s.q_sample(x0, t=t, seed=31)
    n = xt.size
    _, _, _, ab = ref_coefs(s)
    m_want, v_want = math.sqrt(ab[t]) * c, 1.0 - ab[t]
    m, v = float(xt.astype(np.float64).mean()), float(xt.astype(np.float64).var())
    se_m, se_v = math.sqrt(v_want / n), v_want * math.sqrt(2.0 / n)
    assert abs(m - m_want) < 6 * se_m, f"mean {m:.5f}, want {m_want:.5f} +- {6 * se_m:.5f}"
    assert abs(v - v_want) < 6 * se_v, f"var {v:.5f}, want {v_want:.5f} +- {6 * se_v:.5f}"


CHAIN_TS = np.array([1, 10, 500, 1000])


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_chain_matches_closed_form_in_distribution(kind):
    s = NoiseSchedule(kind)
    n = 20000
    x0 = np.full((n * CHAIN_TS.size, 1), 0.8, np.float32)
    t = np.repeat(CHAIN_TS, n)
    xs = s.q_sample_chain(x0, t, seed=17).reshape(CHAIN_TS.size, n).astype(np.float64)
    xc, _ = s.q_sample(x0, t, seed=17)
    xc = xc.reshape(CHAIN_TS.size, n).astype(np.float64)
    _, _, _, ab = ref_coefs(s)
    for i, tt in enumerate(CHAIN_TS):
        m_want, v_want = math.sqrt(ab[tt]) * 0.8, 1.0 - ab[tt]
        se_m, se_v = math.sqrt(v_want / n), v_want * math.sqrt(2.0 / n)
        for name, x in (("chain", xs[i]), ("closed form", xc[i])):
            m, v = x.mean(), x.var()
            assert abs(m - m_want) < 5 * se_m, (
                f"{kind} {name} t={tt}: mean {m:.6f}, want {m_want:.6f} +- {5 * se_m:.2g}")
            assert abs(v - v_want) < 5 * se_v, (
                f"{kind} {name} t={tt}: var {v:.6g}, want {v_want:.6g} +- {5 * se_v:.2g}")
        # same distribution, different numbers: not the closed form's samples
        assert np.mean(xs[i] == xc[i]) < 0.01
    # the chain at T uses its own noise, so its samples are (nearly) uncorrelated with
    # the closed form's for the same seed
    r = np.corrcoef(xs[-1], xc[-1])[0, 1]
    assert abs(r) < 5 / math.sqrt(n), f"corr(chain, closed form) at T = {r:.4f}"


def test_chain_first_steps_match_reference_recursion():
    # x_s = sqrt(alpha_s) x_{s-1} + sqrt(beta_s) eps_s, eps_s = normals of stream CHAIN_BASE + s
    s = NoiseSchedule("linear")
    g = np.random.default_rng(3)
    x0 = g.uniform(-1, 1, (3, 1, 28, 28)).astype(np.float32)
    _, _, alphas, _ = ref_coefs(s)
    b = 1.0 - alphas
    t = np.array([1, 3, 6])
    got = s.q_sample_chain(x0, t, seed=21)
    D = 28 * 28
    for n in range(3):
        x = x0[n].astype(np.float64).ravel()
        for step in range(1, t[n] + 1):
            e = np.empty(3 * D, np.float32)
            _core.rng_normal(e, 21, STREAM_CHAIN_BASE + step, 0)
            x = math.sqrt(alphas[step]) * x + math.sqrt(b[step]) * e[n * D:(n + 1) * D]
        diff = np.abs(got[n].ravel() - x).max()
        assert diff < 1e-5, f"sample {n} (t={t[n]}): max abs diff {diff:.3g}"


def test_chain_is_deterministic_and_inputs_untouched(images):
    s = NoiseSchedule("cosine")
    before = images.copy()
    a = s.q_sample_chain(images, 40, seed=8)
    b = s.q_sample_chain(np.asfortranarray(images.astype(np.float64)), 40, seed=8)
    assert a.tobytes() == b.tobytes()
    assert np.array_equal(images, before)
    assert not np.array_equal(a, s.q_sample_chain(images, 40, seed=9))


# --------------------------------------------------------------------------- posterior
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_posterior_matches_reference_formula(kind, images):
    s = NoiseSchedule(kind)
    g = np.random.default_rng(4)
    xt = g.standard_normal(images.shape).astype(np.float32)
    t = np.array([1, 2, 3, 10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999, 1000])
    mean, var = s.q_posterior(images, xt, t)
    _, _, a, ab = ref_coefs(s)
    b = 1.0 - a
    abp = np.concatenate([[1.0], ab[:-1]])
    c1 = np.sqrt(abp[t]) * b[t] / (1 - ab[t])
    c2 = np.sqrt(a[t]) * (1 - abp[t]) / (1 - ab[t])
    want = (c1[:, None, None, None] * images.astype(np.float64)
            + c2[:, None, None, None] * xt.astype(np.float64))
    diff = np.abs(mean - want).max()
    assert mean.dtype == np.float32 and mean.shape == images.shape
    assert diff < 1e-6, f"posterior mean: max abs diff {diff:.3g}"
    v_want = b[t] * (1 - abp[t]) / (1 - ab[t])
    assert var.shape == (16, 1, 1, 1) and var.dtype == np.float64
    rel = np.abs(var.ravel() - v_want) / np.maximum(v_want, 1e-300)
    assert var.ravel()[0] == 0.0 and rel[1:].max() < 1e-10, f"max rel diff {rel[1:].max():.3g}"
    # at t = 1 the posterior is x_0 itself
    assert np.abs(mean[0] - images[0]).max() < 1e-6


@pytest.mark.parametrize("t", [2, 50, 500])
def test_q_posterior_is_consistent_with_forward_process(t):
    # Draw x_{t-1} ~ q(x_{t-1} | x_0), then x_t ~ q(x_t | x_{t-1}).  Bayes: the residual
    # x_{t-1} - mu_tilde(x_t, x_0) has mean 0, variance beta_tilde_t, and is uncorrelated
    # with x_t.
    s = NoiseSchedule("linear")
    n = 200_000
    x0 = np.full((n, 1), 0.3, np.float32)
    x_prev, _ = s.q_sample(x0, t - 1, seed=40)
    g = np.random.default_rng(41)
    beta = float(s.betas[t])
    x_t = (math.sqrt(1 - beta) * x_prev.astype(np.float64)
           + math.sqrt(beta) * g.standard_normal((n, 1))).astype(np.float32)
    mean, var = s.q_posterior(x0, x_t, t)
    res = x_prev.astype(np.float64) - mean.astype(np.float64)
    v = float(var[0, 0])
    se_m, se_v = math.sqrt(v / n), v * math.sqrt(2 / n)
    assert abs(res.mean()) < 6 * se_m, f"residual mean {res.mean():.3g} (se {se_m:.3g})"
    assert abs(res.var() - v) < 6 * se_v, f"residual var {res.var():.6g}, beta_tilde {v:.6g}"
    r = np.corrcoef(res.ravel(), x_t.ravel().astype(np.float64))[0, 1]
    assert abs(r) < 6 / math.sqrt(n), f"residual correlates with x_t: r = {r:.4f}"


# --------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is all we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_repeated_calls_do_not_leak(images, threads):
    # one thread: the C code allocates nothing per thread, and a parallel region costs
    # milliseconds on a loaded 2-core machine, which would make 1000 calls slow
    threads(1)
    s = NoiseSchedule("linear")
    x0 = np.repeat(images, 4, axis=0)                      # 64 x 1 x 28 x 28, 200 KB
    t = np.arange(1, 65) * 15
    bad = x0.copy()
    bad[3, 0, 5, 5] = np.nan

    def work():
        xt, eps = s.q_sample(x0, t, seed=1)
        s.q_sample(x0, t, noise=eps)
        s.q_posterior(x0, xt, t)
        s.q_sample_chain(x0[:2], 3, seed=1)
        try:
            s.q_sample(bad, t, seed=1)                     # error path too
        except ValueError:
            pass

    for _ in range(20):
        work()
    gc.collect()
    refs = (sys.getrefcount(x0), sys.getrefcount(t), sys.getrefcount(s.sqrt_alpha_bars),
            sys.getrefcount(bad))
    rss0 = _rss_bytes()
    for _ in range(200):
        work()
    gc.collect()
    grown = _rss_bytes() - rss0
    # a leaked output array per call would be 200 x 200 KB = 40 MB
    assert grown < 16 * 2 ** 20, f"RSS grew by {grown / 2 ** 20:.1f} MB over 200 calls"
    refs_after = (sys.getrefcount(x0), sys.getrefcount(t), sys.getrefcount(s.sqrt_alpha_bars),
                  sys.getrefcount(bad))
    assert refs_after == refs, f"reference counts changed: {refs} -> {refs_after}"


# --------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule("linear", timesteps=100)


X = np.zeros((2, 1, 4, 4), np.float32)


@pytest.mark.parametrize("x0", [
    np.zeros((2, 1, 4, 4), np.int64), np.zeros((2, 1, 4, 4), np.uint8),
    np.zeros((2, 1, 4, 4), bool), np.zeros((2, 1, 4, 4), complex),
    np.array([[0.1, "a"]], dtype=object), np.array([["a", "b"]]), [[1, 2], [3, 4]],
], ids=["int64", "uint8", "bool", "complex", "object", "str", "int-list"])
def test_q_sample_refuses_non_float_dtypes(sched, x0):
    with pytest.raises(TypeError, match="x0"):
        sched.q_sample(x0, t=5, seed=0)
    with pytest.raises(TypeError, match="x0"):
        sched.q_sample_chain(x0, t=5, seed=0)
    with pytest.raises(TypeError, match="x0"):
        sched.q_posterior(x0, X, t=5)


def test_q_sample_refuses_non_float_noise(sched):
    with pytest.raises(TypeError, match="noise"):
        sched.q_sample(X, t=5, noise=np.zeros(X.shape, np.int32))
    with pytest.raises(TypeError, match="noise"):
        sched.q_sample(X, t=5, noise=np.zeros(X.shape, complex))


@pytest.mark.parametrize("kwargs,word", [
    ({"x0": np.zeros((2, 1, 4, 4), np.float32), "noise": np.zeros((2, 1, 4, 5), np.float32)},
     "noise"),
    ({"x0": np.zeros((2, 16), np.float32), "noise": np.zeros((2, 1, 4, 4), np.float32)},
     "noise"),
    ({"x0": np.float32(0.5)}, "scalar"),
    ({"x0": 0.5}, "scalar"),
    ({"x0": np.zeros((0, 1, 4, 4), np.float32)}, "N = 0"),
    ({"x0": np.zeros((2, 0), np.float32)}, "no values"),
    ({"x0": X, "t": [1, 2, 3]}, "shape"),
    ({"x0": X, "t": np.array([[1], [2]])}, "shape"),
    ({"x0": X, "t": 0}, "1..T"),
    ({"x0": X, "t": 101}, "1..T"),
    ({"x0": X, "t": -3}, "1..T"),
    ({"x0": X, "t": [5, 0]}, "1..T"),
    ({"x0": X, "t": np.array([5, 2 ** 63 + 5], np.uint64)}, "1..T"),
])
def test_q_sample_value_errors(sched, kwargs, word):
    kwargs.setdefault("t", 5)
    with pytest.raises(ValueError, match=word):
        sched.q_sample(seed=0, **kwargs)


@pytest.mark.parametrize("t", [5.0, np.float32(5), [1.0, 2.0], True, np.bool_(True), "5", None])
def test_q_sample_timestep_type_errors(sched, t):
    for call in (lambda: sched.q_sample(X, t=t, seed=0),
                 lambda: sched.q_sample_chain(X, t=t, seed=0),
                 lambda: sched.q_posterior(X, X, t=t)):
        with pytest.raises(TypeError, match="t"):
            call()


def test_chain_and_posterior_value_errors(sched):
    with pytest.raises(ValueError, match="1..T"):
        sched.q_sample_chain(X, t=0, seed=0)
    with pytest.raises(ValueError, match="1..T"):
        sched.q_posterior(X, X, t=101)
    with pytest.raises(ValueError, match="xt"):
        sched.q_posterior(X, np.zeros((2, 1, 4, 5), np.float32), t=3)
    with pytest.raises(ValueError, match="N = 0"):
        sched.q_sample_chain(np.zeros((0, 3), np.float32), t=3, seed=0)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (2 ** 64, ValueError),
                                      (1.5, TypeError), ("0", TypeError), (True, TypeError)])
def test_bad_seeds(sched, seed, exc):
    with pytest.raises(exc, match="seed"):
        sched.q_sample(X, t=3, seed=seed)
    with pytest.raises(exc, match="seed"):
        sched.q_sample_chain(X, t=3, seed=seed)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(sched, value):
    bad = X.copy()
    bad[1, 0, 2, 3] = value
    with pytest.raises(ValueError, match="NaN"):
        sched.q_sample(bad, t=3, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        sched.q_sample(X, t=3, noise=bad)
    with pytest.raises(ValueError, match="NaN"):
        sched.q_sample_chain(bad, t=3, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        sched.q_posterior(bad, X, t=3)
    with pytest.raises(ValueError, match="NaN"):
        sched.q_posterior(X, bad, t=3)
    # a float64 value beyond float32's range becomes inf on conversion: refused too
    with pytest.raises(ValueError, match="NaN"), np.errstate(over="ignore"):
        sched.q_sample(np.full((1, 3), 1e300), t=3, seed=0)


def test_direct_core_binding_is_strict():
    # The C binding takes exactly C-contiguous, aligned, native float32 (int64 t, float64
    # tables); anything else must be an exception, never a crash or a silent copy.
    code = r"""
import numpy as np
import ddpm
from ddpm import _core

s = ddpm.NoiseSchedule("linear", timesteps=10)
SA, SB = s.sqrt_alpha_bars, s.sqrt_one_minus_alpha_bars
A, B = s.alphas, s.betas
C1, C2 = s.posterior_mean_coef1, s.posterior_mean_coef2
f32 = lambda *shape: np.zeros(shape, np.float32)
T = np.array([3, 4], np.int64)
ro = f32(2, 8); ro.flags.writeable = False
swapped = np.zeros((2, 8), ">f4")
unaligned = np.frombuffer(bytearray(2 * 8 * 4 + 1), np.uint8)[1:].view(np.float32).reshape(2, 8)

def qs(xt=None, eps=None, x0=None, t=T, sa=SA, sb=SB, seed=0, given=False):
    xt = f32(2, 8) if xt is None else xt
    eps = f32(2, 8) if eps is None else eps
    x0 = f32(2, 8) if x0 is None else x0
    _core.q_sample(xt, eps, x0, t, sa, sb, seed, given)

cases = {
    "x0 float64": lambda: qs(x0=np.zeros((2, 8))),
    "x0 non-contiguous": lambda: qs(x0=f32(2, 16)[:, ::2]),
    "x0 fortran": lambda: qs(x0=np.asfortranarray(f32(2, 8))),
    "x0 byte-swapped": lambda: qs(x0=swapped),
    "x0 unaligned": lambda: qs(x0=unaligned),
    "x0 list": lambda: qs(x0=[[0.0] * 8] * 2),
    "xt read-only": lambda: qs(xt=ro),
    "eps read-only when drawn": lambda: qs(eps=ro),
    "xt float64": lambda: qs(xt=np.zeros((2, 8))),
    "xt wrong shape": lambda: qs(xt=f32(2, 9)),
    "eps wrong shape": lambda: qs(eps=f32(8, 2)),
    "x0 0-d": lambda: qs(xt=f32(), eps=f32(), x0=f32(), t=T[:0]),
    "x0 N=0": lambda: qs(xt=f32(0, 8), eps=f32(0, 8), x0=f32(0, 8), t=T[:0]),
    "x0 D=0": lambda: qs(xt=f32(2, 0), eps=f32(2, 0), x0=f32(2, 0)),
    "t int32": lambda: qs(t=T.astype(np.int32)),
    "t wrong length": lambda: qs(t=np.array([3, 4, 5], np.int64)),
    "t 2-D": lambda: qs(t=T.reshape(2, 1)),
    "t = 0": lambda: qs(t=np.array([0, 3], np.int64)),
    "t > T": lambda: qs(t=np.array([3, 11], np.int64)),
    "t negative": lambda: qs(t=np.array([-1, 3], np.int64)),
    "t huge": lambda: qs(t=np.array([2 ** 62, 3], np.int64)),
    "table float32": lambda: qs(sa=SA.astype(np.float32)),
    "tables of different length": lambda: qs(sb=SB[:-1].copy()),
    "table 2-D": lambda: qs(sa=SA.reshape(1, -1), sb=SB.reshape(1, -1)),
    "empty tables": lambda: qs(sa=np.zeros(0), sb=np.zeros(0)),
    "seed negative": lambda: qs(seed=-1),
    "seed float": lambda: qs(seed=1.0),
    "NaN x0": lambda: qs(x0=np.full((2, 8), np.nan, np.float32)),
    "NaN given noise": lambda: qs(eps=np.full((2, 8), np.nan, np.float32), given=True),
    "chain xt read-only": lambda: _core.q_sample_chain(ro, f32(2, 8), T, A, B, 0),
    "chain x0 float64": lambda: _core.q_sample_chain(f32(2, 8), np.zeros((2, 8)), T, A, B, 0),
    "chain x0 strided": lambda: _core.q_sample_chain(f32(2, 8), f32(2, 16)[:, ::2], T, A, B, 0),
    "chain t > T": lambda: _core.q_sample_chain(f32(2, 8), f32(2, 8),
                                                np.array([1, 99], np.int64), A, B, 0),
    "chain tables mismatch": lambda: _core.q_sample_chain(f32(2, 8), f32(2, 8), T, A,
                                                          B[:5].copy(), 0),
    "posterior mean read-only": lambda: _core.q_posterior_mean(ro, f32(2, 8), f32(2, 8), T,
                                                               C1, C2),
    "posterior xt swapped": lambda: _core.q_posterior_mean(f32(2, 8), f32(2, 8), swapped, T,
                                                           C1, C2),
    "posterior t = 0": lambda: _core.q_posterior_mean(f32(2, 8), f32(2, 8), f32(2, 8),
                                                      np.zeros(2, np.int64), C1, C2),
    "schedule_tables float32": lambda: _core.schedule_tables(B.astype(np.float32)),
    "schedule_tables NaN": lambda: _core.schedule_tables(np.array([0, 0.1, np.nan])),
    "schedule_tables too short": lambda: _core.schedule_tables(np.zeros(1)),
    "schedule_betas unknown kind": lambda: _core.schedule_betas("nope", 10, 0.1, 0.2),
    "schedule_betas T=0": lambda: _core.schedule_betas("linear", 0, 0.1, 0.2),
    "rescale read-only": lambda: _core.rescale_zero_terminal_snr(s.betas),
    "rescale T=1": lambda: _core.rescale_zero_terminal_snr(np.array([0.0, 0.5])),
    "set_num_threads 0": lambda: _core.set_num_threads(0),
    "set_num_threads float": lambda: _core.set_num_threads(2.0),
}
for name, f in cases.items():
    try:
        f()
    except (TypeError, ValueError) as e:
        print("RAISED", type(e).__name__, "|", name, "|", e)
    except BaseException as e:
        print("WRONG", type(e).__name__, "|", name, "|", e)
    else:
        print("NO ERROR |", name)
print("DONE", len(cases))
"""
    rc, out, err = run_in_subprocess(code)
    assert rc == 0, f"subprocess exited with {rc} (negative = killed by signal)\n{out}\n{err}"
    lines = out.splitlines()
    assert lines[-1].startswith("DONE"), out
    n = int(lines[-1].split()[1])
    problems = [line for line in lines if line.startswith(("NO ERROR", "WRONG"))]
    assert not problems, "\n".join(problems)
    assert sum(line.startswith("RAISED") for line in lines) == n, out
    # the messages name the offending argument
    msgs = {line.split("|")[1].strip(): line.split("|")[2] for line in lines
            if line.startswith("RAISED")}
    assert "x0" in msgs["x0 float64"] and "float32" in msgs["x0 float64"]
    assert "contiguous" in msgs["x0 non-contiguous"]
    assert "byte order" in msgs["x0 byte-swapped"]
    assert "writeable" in msgs["xt read-only"]
    assert "NaN" in msgs["NaN x0"] and "NaN" in msgs["NaN given noise"]
    assert "1..T" in msgs["t = 0"]


def test_direct_core_binding_works_when_given_what_it_wants():
    s = NoiseSchedule("linear", timesteps=10)
    x0 = np.ones((2, 8), np.float32)
    xt, eps = np.empty_like(x0), np.empty_like(x0)
    _core.q_sample(xt, eps, x0, np.array([3, 10], np.int64), s.sqrt_alpha_bars,
                   s.sqrt_one_minus_alpha_bars, 5, False)
    assert np.abs(xt - closed_form(s, x0, np.array([3, 10]), eps)).max() < 1e-6
