"""Noise schedules: every table against an independent NumPy float64 reference, the
course's quoted numbers, diffusers' DDPMScheduler, and argument checking."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import ddpm
from ddpm import NoiseSchedule

TABLES = ("betas", "alphas", "alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars",
          "snr", "snr_db", "posterior_variance", "posterior_log_variance_clipped",
          "posterior_mean_coef1", "posterior_mean_coef2", "sqrt_recip_alphas", "eps_coef")


# --------------------------------------------------------------------------- reference
def ref_betas(kind: str, T: int, **p) -> np.ndarray:
    """beta_1..beta_T in float64, straight from the papers' formulas."""
    if kind == "linear":                                  # Ho et al. 2020
        return np.linspace(p.get("beta_start", 1e-4), p.get("beta_end", 0.02), T)
    if kind == "scaled_linear":                           # Stable Diffusion
        return np.linspace(math.sqrt(p.get("beta_start", 0.00085)),
                           math.sqrt(p.get("beta_end", 0.012)), T) ** 2
    if kind == "sigmoid":                                 # GeoDiff, as in diffusers
        a, b = p.get("beta_start", 1e-4), p.get("beta_end", 0.02)
        return a + (b - a) / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T)))
    if kind == "cosine":                                  # Nichol & Dhariwal 2021
        s, max_beta = p.get("s", 0.008), p.get("max_beta", 0.999)
        t = np.arange(T + 1, dtype=np.float64)
        f = np.cos(((t / T + s) / (1 + s)) * np.pi / 2) ** 2
        abar = f / f[0]
        return np.minimum(1 - abar[1:] / abar[:-1], max_beta)
    raise KeyError(kind)


def ref_rescale(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023, Algorithm 1 (zero terminal SNR), on beta_1..beta_T."""
    sq = np.sqrt(np.cumprod(1.0 - betas))
    s0, sT = sq[0], sq[-1]
    sq = (sq - sT) * (s0 / (s0 - sT))
    ab = sq ** 2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


def ref_tables(betas_1T: np.ndarray) -> dict:
    """Every derived table, length T+1, index 0 = the clean state."""
    T = betas_1T.size
    b = np.concatenate([[0.0], betas_1T])
    a = 1.0 - b
    ab = np.cumprod(a)
    abp = np.concatenate([[1.0], ab[:-1]])                # alpha_bar_{t-1}
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = ab / (1.0 - ab)
        snr[0] = np.inf
        pv = b * (1.0 - abp) / (1.0 - ab)
        c1 = b * np.sqrt(abp) / (1.0 - ab)
        c2 = np.sqrt(a) * (1.0 - abp) / (1.0 - ab)
        sra = 1.0 / np.sqrt(a)
        epsc = b / np.sqrt(1.0 - ab)
        snr_db = 10.0 * np.log10(snr)
    pv[0] = c1[0] = c2[0] = sra[0] = epsc[0] = 0.0
    # Ho et al.'s clipping: log of the posterior variance with t = 1's value (0) replaced
    # by t = 2's; a one-step chain has no t = 2 and uses beta_1 (the other DDPM choice).
    lv = np.empty(T + 1)
    lv[1] = math.log(pv[2]) if T >= 2 else math.log(b[1])
    lv[2:] = np.log(pv[2:])
    lv[0] = lv[1]
    return {"betas": b, "alphas": a, "alpha_bars": ab, "sqrt_alpha_bars": np.sqrt(ab),
            "sqrt_one_minus_alpha_bars": np.sqrt(1.0 - ab), "snr": snr, "snr_db": snr_db,
            "posterior_variance": pv, "posterior_log_variance_clipped": lv,
            "posterior_mean_coef1": c1, "posterior_mean_coef2": c2,
            "sqrt_recip_alphas": sra, "eps_coef": epsc}


def assert_tables_match(s: NoiseSchedule, ref: dict, rtol=1e-12, atol=1e-13):
    for name in TABLES:
        got = np.asarray(getattr(s, name))
        want = ref[name]
        assert got.shape == want.shape == (s.T + 1,), (name, got.shape, want.shape)
        assert got.dtype == np.float64, (name, got.dtype)
        # infinities must sit in the same places with the same sign
        assert np.array_equal(np.isinf(got), np.isinf(want)), f"{name}: inf pattern differs"
        assert np.array_equal(got[np.isinf(got)], want[np.isinf(want)]), name
        fin = np.isfinite(want)
        err = np.abs(got[fin] - want[fin])
        tol = atol + rtol * np.abs(want[fin])
        if err.size:
            k = int(np.argmax(err / tol))
            assert np.all(err <= tol), (
                f"{s!r} {name}: max abs diff {err.max():.3g}, max rel diff "
                f"{np.max(err / np.maximum(np.abs(want[fin]), 1e-300)):.3g} "
                f"(worst at finite index {k}: got {got[fin][k]!r}, want {want[fin][k]!r})")


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize("kind", ["linear", "cosine", "scaled_linear", "sigmoid"])
@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_tables_match_float64_reference(kind, T):
    s = NoiseSchedule(kind, timesteps=T)
    assert s.T == T == len(s) == s.timesteps
    assert s.betas[0] == 0.0 and s.alpha_bars[0] == 1.0
    # cosine betas are 1 - abar_t/abar_{t-1}: at small t (beta ~ 4e-5) that difference of
    # nearly equal numbers is only good to ~1e-16 / 4e-5 = 3e-12 relative, whichever way
    # it is written, so its tables get rtol 1e-11; the others 1e-12
    rtol = 1e-11 if kind == "cosine" else 1e-12
    assert_tables_match(s, ref_tables(ref_betas(kind, T)), rtol=rtol)


@pytest.mark.parametrize("kind,params", [
    ("linear", {"beta_start": 1e-3, "beta_end": 0.05}),
    ("scaled_linear", {"beta_start": 1e-4, "beta_end": 0.02}),
    ("sigmoid", {"beta_start": 1e-5, "beta_end": 0.03}),
    ("cosine", {"s": 0.0, "max_beta": 0.5}),
    ("cosine", {"s": 0.02, "max_beta": 0.999}),
])
def test_tables_with_explicit_parameters(kind, params):
    s = NoiseSchedule(kind, timesteps=300, **params)
    rtol = 1e-11 if kind == "cosine" else 1e-12      # see test_tables_match_float64_reference
    assert_tables_match(s, ref_tables(ref_betas(kind, 300, **params)), rtol=rtol)


@pytest.mark.parametrize("kind", ["linear", "cosine", "scaled_linear", "sigmoid"])
@pytest.mark.parametrize("T", [2, 10, 1000])
def test_rescale_zero_terminal_snr_matches_reference(kind, T):
    s = NoiseSchedule(kind, timesteps=T, rescale_zero_terminal_snr=True)
    ref_b = ref_rescale(ref_betas(kind, T))
    ref = ref_tables(ref_b)
    # The last few betas come out of a difference of nearly equal square roots; the same
    # formula in another order may differ there by more than 1e-12 relative.
    assert_tables_match(s, ref, rtol=1e-9, atol=1e-13)
    assert s.alpha_bars[T] == 0.0 and s.betas[T] == 1.0 and s.snr[T] == 0.0
    assert s.snr_db[T] == -np.inf
    # alpha_bar_1 is unchanged by the rescaling (Lin et al.), and the order is kept
    plain = NoiseSchedule(kind, timesteps=T)
    assert abs(s.alpha_bars[1] - plain.alpha_bars[1]) < 1e-15
    assert np.all(np.diff(s.alpha_bars) < 0)


def test_structural_properties():
    for kind in ddpm.KINDS:
        s = NoiseSchedule(kind)
        assert np.all(np.diff(s.alpha_bars) < 0), kind
        assert np.all((s.betas[1:] > 0) & (s.betas[1:] < 1)), kind
        # posterior variance beta_tilde_t <= beta_t (Ho et al. eq. 7)
        assert np.all(s.posterior_variance[1:] <= s.betas[1:] * (1 + 1e-12)), kind
        assert np.allclose(s.sqrt_alpha_bars ** 2 + s.sqrt_one_minus_alpha_bars ** 2, 1.0,
                           rtol=0, atol=1e-15), kind


@settings(max_examples=40, deadline=None, database=None)
@given(hnp.arrays(np.float64, st.integers(1, 60),
                  elements=st.floats(1e-6, 0.999, allow_nan=False, allow_infinity=False)))
def test_from_betas_matches_reference(betas):
    s = NoiseSchedule.from_betas(betas)
    assert s.kind == "custom"
    # tiny alpha_bar at large t: ratios of small numbers, so a slightly looser rtol
    assert_tables_match(s, ref_tables(betas), rtol=1e-10, atol=1e-300)


def test_from_betas_docstring_example():
    s = NoiseSchedule.from_betas([0.1, 0.2, 0.5])
    assert s.T == 3
    assert s.alpha_bars[3] == pytest.approx(0.9 * 0.8 * 0.5, rel=1e-15)
    assert s.posterior_variance[2] == pytest.approx(0.2 * 0.1 / (1 - 0.72), rel=1e-14)
    r = NoiseSchedule.from_betas([0.1, 0.2, 0.5], rescale_zero_terminal_snr=True)
    assert r.alpha_bars[3] == 0.0
    assert_tables_match(r, ref_tables(ref_rescale(np.array([0.1, 0.2, 0.5]))), rtol=1e-12)


# --------------------------------------------------------------------------- course numbers
def _digits_tol(text: str) -> float:
    """Half a unit in the last quoted digit of a number written like '0.001076' or '1.081e-4'."""
    mant, _, exp = text.partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0))


# numbers as the lessons quote them (computed by hand from the papers' formulas)
COURSE = [
    ("linear", "betas", 50, "0.001076"), ("linear", "alpha_bars", 50, "0.97102"),
    ("linear", "betas", 500, "0.010040"), ("linear", "alpha_bars", 500, "0.078587"),
    ("linear", "betas", 950, "0.019004"), ("linear", "alpha_bars", 950, "1.081e-4"),
    ("linear", "alpha_bars", 1000, "4.036e-5"),
    ("cosine", "betas", 50, "0.000280"), ("cosine", "alpha_bars", 50, "0.99201"),
    ("cosine", "betas", 500, "0.003146"), ("cosine", "alpha_bars", 500, "0.49384"),
    ("cosine", "betas", 950, "0.038753"), ("cosine", "alpha_bars", 950, "0.006060"),
    ("cosine", "betas", 1000, "0.999"),
]


@pytest.mark.parametrize("kind,table,t,text", COURSE)
def test_course_reference_values(kind, table, t, text):
    got = float(getattr(NoiseSchedule(kind), table)[t])
    want, tol = float(text), _digits_tol(text)
    assert abs(got - want) <= tol * (1 + 1e-9), (
        f"{kind} {table}[{t}] = {got!r}, course says {text} (diff {abs(got - want):.3g}, "
        f"allowed {tol:.3g})")


def test_course_cosine_terminal_alpha_bar():
    ab = NoiseSchedule("cosine").alpha_bars[1000]
    assert 2.35e-9 <= ab < 2.45e-9, f"cosine alpha_bar_1000 = {ab!r}, course says about 2.4e-9"
    assert NoiseSchedule("cosine").betas[1000] == 0.999     # clipped exactly at max_beta


def test_digits_tolerance_helper():
    assert _digits_tol("0.001076") == pytest.approx(5e-7)
    assert _digits_tol("1.081e-4") == pytest.approx(5e-8)
    assert _digits_tol("0.999") == pytest.approx(5e-4)


# --------------------------------------------------------------------------- diffusers
def _diffusers_scheduler(**kw):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(num_train_timesteps=1000, **kw)


def _close(name, got, want, rtol, atol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want)
    ok = err <= atol + rtol * np.abs(want)
    assert np.all(ok), (f"{name}: max abs diff {err.max():.3g}, worst at i={int(np.argmax(err))}"
                        f", {int((~ok).sum())} values out of tolerance (rtol {rtol}, atol {atol})")


DIFFUSERS_KINDS = [
    ("linear", "linear", {}, {}),
    ("scaled_linear", "scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}, {}),
    ("squaredcos_cap_v2", "cosine", {}, {}),
    ("sigmoid", "sigmoid", {}, {}),
    ("scaled_linear", "scaled_linear", {"beta_start": 1e-4, "beta_end": 0.02},
     {"beta_start": 1e-4, "beta_end": 0.02}),
]


@pytest.mark.parametrize("bs,kind,dkw,okw", DIFFUSERS_KINDS)
def test_against_diffusers(bs, kind, dkw, okw):
    d = _diffusers_scheduler(beta_schedule=bs, **dkw)
    s = NoiseSchedule(kind, **okw)
    # diffusers index i is our t = i + 1; diffusers works in float32
    _close(f"{bs} betas", d.betas.double().numpy(), s.betas[1:], rtol=1e-6, atol=1e-9)
    _close(f"{bs} alphas_cumprod", d.alphas_cumprod.double().numpy(), s.alpha_bars[1:],
           rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bs,kind,dkw", [("linear", "linear", {}),
                                         ("squaredcos_cap_v2", "cosine", {}),
                                         ("scaled_linear", "scaled_linear",
                                          {"beta_start": 0.00085, "beta_end": 0.012}),
                                         ("sigmoid", "sigmoid", {})])
def test_against_diffusers_zero_terminal_snr(bs, kind, dkw):
    d = _diffusers_scheduler(beta_schedule=bs, rescale_betas_zero_snr=True, **dkw)
    s = NoiseSchedule(kind, rescale_zero_terminal_snr=True)
    # diffusers rescales in float32: a float32 cumprod, then sqrt(abar_t) - sqrt(abar_T)
    # (cancellation near T) and ratios abar_t / abar_{t-1} (~1e-7 absolute near t = 1), so
    # ~1e-5 relative near T; the float64 reference test above is the strict check
    _close(f"{bs} rescaled betas", d.betas.double().numpy(), s.betas[1:], rtol=5e-5, atol=5e-7)
    _close(f"{bs} rescaled alphas_cumprod", d.alphas_cumprod.double().numpy(),
           s.alpha_bars[1:], rtol=1e-5, atol=1e-7)
    assert float(d.alphas_cumprod[-1]) == s.alpha_bars[1000] == 0.0


@pytest.mark.parametrize("bs,kind", [("linear", "linear"), ("squaredcos_cap_v2", "cosine")])
def test_q_sample_matches_diffusers_add_noise(bs, kind):
    torch = pytest.importorskip("torch")
    d = _diffusers_scheduler(beta_schedule=bs)
    s = NoiseSchedule(kind)
    g = np.random.default_rng(5)
    x0 = g.uniform(-1, 1, (10, 1, 28, 28)).astype(np.float32)
    noise = g.standard_normal((10, 1, 28, 28)).astype(np.float32)
    ts = np.array([0, 1, 9, 99, 249, 499, 500, 749, 998, 999])     # diffusers' 0-based
    ours, eps = s.q_sample(x0, t=ts + 1, noise=noise)
    assert np.array_equal(eps, noise)
    # diffusers as shipped keeps alphas_cumprod in float32, whose cumulative product is
    # off by up to ~1e-3 relative where alpha_bar is tiny: a float32-sized tolerance
    stock = d.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(ts))
    diff = np.abs(ours - stock.numpy())
    assert diff.max() <= 2e-5, f"vs stock diffusers add_noise: max abs diff {diff.max():.3g}"
    # the same algorithm with diffusers' own betas multiplied out in float64: this isolates
    # the forward formula itself, which must agree to float32 rounding of the result
    d.alphas_cumprod = torch.cumprod(1.0 - d.betas.double(), 0)
    ref = d.add_noise(torch.from_numpy(x0.astype(np.float64)),
                      torch.from_numpy(noise.astype(np.float64)), torch.from_numpy(ts))
    diff = np.abs(ours - ref.numpy())
    assert diff.max() <= 1e-6, f"vs diffusers add_noise (float64 table): max abs diff {diff.max():.3g}"


# --------------------------------------------------------------------------- helpers
def test_tables_are_read_only():
    s = NoiseSchedule("linear", timesteps=10)
    for name in TABLES:
        with pytest.raises(ValueError):
            getattr(s, name)[3] = 0.5
    with pytest.raises(ValueError):
        s.alpha_bars.flags.writeable = True
    assert s.alpha_bars[3] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 10)[:3]))


def test_scalar_helpers_accept_ints_and_arrays():
    s = NoiseSchedule("linear", timesteps=100)
    ref = ref_tables(ref_betas("linear", 100))
    for fn, table in [(s.alpha_bar, "alpha_bars"), (s.beta, "betas"), (s.alpha, "alphas"),
                      (s.snr_at, "snr"), (s.snr_db_at, "snr_db"),
                      (s.signal_coef, "sqrt_alpha_bars"),
                      (s.noise_coef, "sqrt_one_minus_alpha_bars")]:
        v = fn(50)
        assert isinstance(v, float) and v == pytest.approx(ref[table][50], rel=1e-12), fn
        assert fn(np.int32(7)) == pytest.approx(ref[table][7], rel=1e-12)
        arr = fn(np.array([1, 10, 100]))
        assert isinstance(arr, np.ndarray) and arr.shape == (3,)
        np.testing.assert_allclose(arr, ref[table][[1, 10, 100]], rtol=1e-12)
        assert fn([[1, 2], [3, 4]]).shape == (2, 2)
    assert s.alpha_bar(0) == 1.0 and s.beta(0) == 0.0
    for bad, exc in [(101, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError),
                     (np.array([1.5]), TypeError), ([5, 200], ValueError)]:
        with pytest.raises(exc, match="t"):
            s.alpha_bar(bad)


def test_model_timestep_is_t_minus_one():
    s = NoiseSchedule("cosine")
    assert s.model_timestep(1) == 0 and s.model_timestep(1000) == 999
    np.testing.assert_array_equal(s.model_timestep(np.array([1, 500, 1000])), [0, 499, 999])


def test_repr_and_summary():
    s = NoiseSchedule("cosine", timesteps=1000)
    r = repr(s)
    assert r.startswith("NoiseSchedule('cosine', timesteps=1000") and "s=0.008" in r, r
    assert "rescale" in repr(NoiseSchedule("linear", rescale_zero_terminal_snr=True))
    text = s.summary()
    lines = text.splitlines()
    assert lines[0] == r
    rows = {int(line.split()[0]): line.split() for line in lines[2:]}
    assert sorted(rows) == [1, 50, 250, 500, 750, 950, 1000], sorted(rows)
    assert float(rows[500][2]) == pytest.approx(0.49384, abs=1e-5)     # alpha_bar_500
    assert "custom" in repr(NoiseSchedule.from_betas([0.1, 0.2]))
    assert NoiseSchedule("linear", timesteps=3).summary().count("\n") >= 2


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,kwargs,exc,word", [
    (("cosinus",), {}, ValueError, "kind"),
    ((None,), {}, ValueError, "kind"),
    (("linear", 0), {}, ValueError, "timesteps"),
    (("linear", -5), {}, ValueError, "timesteps"),
    (("linear", 1_000_001), {}, ValueError, "timesteps"),
    (("linear", 10 ** 30), {}, ValueError, "timesteps"),
    (("linear", 10.0), {}, TypeError, "timesteps"),
    (("linear", "1000"), {}, TypeError, "timesteps"),
    (("linear", True), {}, TypeError, "timesteps"),
    (("linear",), {"beta_start": 0.0}, ValueError, "beta_start"),
    (("linear",), {"beta_end": 1.0}, ValueError, "beta_end"),
    (("linear",), {"beta_start": float("nan")}, ValueError, "beta_start"),
    (("sigmoid",), {"beta_end": float("inf")}, ValueError, "beta_end"),
    (("linear",), {"beta_start": "0.1"}, TypeError, "beta_start"),
    (("linear",), {"s": 0.1}, ValueError, "s/max_beta"),
    (("cosine",), {"beta_start": 0.1}, ValueError, "beta_start"),
    (("cosine",), {"s": -0.1}, ValueError, "s must"),
    (("cosine",), {"max_beta": 0.0}, ValueError, "max_beta"),
    (("cosine",), {"max_beta": 1.5}, ValueError, "max_beta"),
    (("linear", 1), {"rescale_zero_terminal_snr": True}, ValueError, "T >= 2"),
    (("linear",), {"beta_start": 1e-20}, ValueError, "beta_1"),
])
def test_constructor_bad_input(args, kwargs, exc, word):
    with pytest.raises(exc, match=re.escape(word)):
        NoiseSchedule(*args, **kwargs)


@pytest.mark.parametrize("betas,exc", [
    ([0.1, float("nan")], ValueError), ([0.1, float("inf")], ValueError),
    ([0.1, 0.0], ValueError), ([0.1, -0.2], ValueError), ([0.1, 1.0], ValueError),
    ([0.5, 1.5], ValueError), ([], ValueError), ([[0.1, 0.2]], ValueError),
    (0.1, ValueError), (np.array([0.1, 0.2], dtype=complex), TypeError),
    (np.array([0.1, 0.2], dtype=object), TypeError), (["0.1", "0.2"], TypeError),
    ([True, False], TypeError), (np.zeros(1_000_001) + 0.01, ValueError),
    ([1e-20, 0.5], ValueError),
])
def test_from_betas_bad_input(betas, exc):
    with pytest.raises(exc, match="beta"):
        NoiseSchedule.from_betas(betas)


def test_from_betas_does_not_modify_input():
    b = np.array([0.1, 0.2, 0.3])
    before = b.copy()
    NoiseSchedule.from_betas(b, rescale_zero_terminal_snr=True)
    assert np.array_equal(b, before)


def test_tiny_but_valid_betas_give_finite_tables():
    s = NoiseSchedule.from_betas([1e-12, 1e-3, 0.5])
    for name in ("posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2",
                 "posterior_log_variance_clipped", "snr"):
        assert np.all(np.isfinite(getattr(s, name)[1:])), (name, getattr(s, name))
