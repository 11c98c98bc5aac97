"""The likelihood bound (Ho et al. 2020 eq. 5): Diffusion.nll and its C core (nll.c).

* every term against a float64 NumPy reference written here from the formulas,
  fed the same x_t (drawn from the documented RNG stream) and the model's own
  outputs through the Python API: the KL terms with the generic Gaussian KL in
  variances (both means formed in full), the prior against its closed form, the
  decoder against a direct numerical integration of the Gaussian over each bin;
* the Monte Carlo mode: uniform timestep draws, unbiased against the exact bound
  over seeds (paired, within a few computed standard errors), K = T - 1 is exact;
* the exact denoiser of Gaussian data: each KL term matches its analytic
  expectation, and the bound lies above the data's discretised entropy;
* determinism over threads and batch sizes, bad input, interrupts.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ddpm
from ddpm import _core
from ddpm.likelihood import check_grid

from conftest import assert_subprocess_ok

TINY = dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
            attention_head_dim=4, num_train_timesteps=1000)
LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _one_thread(threads):
    """Tiny models: one thread (thread independence is tested explicitly)."""
    threads(1)


@pytest.fixture(scope="module")
def net():
    return ddpm.UNet(seed=3, **TINY)


def grid_images(rng, shape, edges=True):
    """Random 8-bit images k/127.5 - 1, with some pixels forced to the edge levels."""
    k = rng.integers(0, 256, shape)
    if edges:
        flat = k.reshape(-1)
        flat[::7] = 0
        flat[3::11] = 255
    return (k / 127.5 - 1.0).astype(np.float32)


# ----------------------------------------------------------------------------
# float64 references
# ----------------------------------------------------------------------------

def nll_noise(seed, t, N, D):
    """eps of every image at time t, as documented: stream STREAM_NLL_EPS + t, offset n*D."""
    e = np.empty((N, D), np.float32)
    _core.rng_normal(e, seed, _core.STREAM_NLL_EPS + t, 0)
    return e


def x0_hat_of(out, x, a, b, objective):
    if objective == "eps":
        return (x - b * out) / a
    if objective == "x0":
        return out
    return a * x - b * out


def gauss_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) per value, in variances (not log-variances)."""
    return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def bin_mass_by_integration(x, mean, std, n=4001):
    """Mass of N(mean, std^2) on x's bin [x - 1/255, x + 1/255] (edge bins to +-inf),
    by Simpson's rule on the standardised density: no erf, no CDF."""
    x, mean = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(mean, np.float64))
    lo = (x - 1 / 255 - mean) / std
    hi = (x + 1 / 255 - mean) / std
    # half-infinite edge bins: 40 standard deviations carry everything (phi(40) ~ 1e-348)
    lo = np.where(x < -0.999, np.minimum(hi, 0.0) - 40.0, lo)
    hi = np.where(x > 0.999, np.maximum(lo, 0.0) + 40.0, hi)
    u = np.linspace(0.0, 1.0, n)
    z = lo[..., None] + (hi - lo)[..., None] * u
    f = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (f * w).sum(-1) * (hi - lo) / (3 * (n - 1))


def reference_terms(d, x0, seed, variance="fixed_small", clip=False):
    """(prior (N,), terms (N, T) for t = 1..T) in nats, float64 from the formulas."""
    s = d.schedule
    N = len(x0)
    D = x0[0].size
    T = s.T
    x = x0.reshape(N, D).astype(np.float64)
    ab = s.alpha_bars
    prior = 0.5 * (ab[T] * x ** 2 + (1 - ab[T]) - 1 - np.log(1 - ab[T])).sum(1)
    terms = np.empty((N, T))
    for t in range(1, T + 1):
        eps = nll_noise(seed, t, N, D).reshape(x0.shape)
        xt, _ = s.q_sample(x0, t, noise=eps)                    # float32, what the model sees
        out = d.model_output(xt, t).reshape(N, D).astype(np.float64)
        xtd = xt.reshape(N, D).astype(np.float64)
        x0h = x0_hat_of(out, xtd, math.sqrt(ab[t]), math.sqrt(1 - ab[t]), d.objective)
        if clip:
            x0h = np.clip(x0h, -1, 1)
        c1, c2 = s.posterior_mean_coef1[t], s.posterior_mean_coef2[t]
        mean_p = c1 * x0h + c2 * xtd
        if t == 1:
            v = s.posterior_variance[2] if T >= 2 else s.betas[1]
            p = bin_mass_by_integration(x, mean_p, math.sqrt(v))
            terms[:, 0] = -np.log(np.maximum(p, 1e-12)).sum(1)
        else:
            v_q = s.posterior_variance[t]
            v_p = v_q if variance == "fixed_small" else s.betas[t]
            mean_q = c1 * x + c2 * xtd
            terms[:, t - 1] = gauss_kl(mean_q, v_q, mean_p, v_p).sum(1)
    return prior, terms


# ----------------------------------------------------------------------------
# terms against the reference
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_every_term_against_float64_reference(net, objective, variance, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 12), objective=objective)
    x0 = grid_images(rng, (3, 2, 8, 8))
    r = d.nll(x0, seed=5, variance=variance)
    prior, terms = reference_terms(d, x0, 5, variance)
    assert r.t.shape == (3, 12) and np.array_equal(r.t, np.tile(np.arange(1, 13), (3, 1)))
    err = np.abs(r.terms - terms) / np.abs(terms)
    assert err.max() < 1e-6, f"max rel diff of per-t terms {err.max():.3g}"
    perr = np.abs(r.prior_nats - prior).max() / prior.max()
    assert perr < 1e-12, f"prior rel diff {perr:.3g}"
    D = x0[0].size
    per_image = (prior + terms.sum(1)) / (D * LN2)
    np.testing.assert_allclose(r.per_image, per_image, rtol=1e-6)
    assert r.bits_per_dim == pytest.approx(per_image.mean(), rel=1e-6)
    assert r.prior == pytest.approx(prior.mean() / (D * LN2), rel=1e-12)
    assert r.decoder == pytest.approx(terms[:, 0].mean() / (D * LN2), rel=1e-6)
    np.testing.assert_allclose(r.kl_per_t[2:], terms[:, 1:].mean(0) / (D * LN2), rtol=1e-6)
    assert r.kl_per_t[0] == 0 and r.kl_per_t[1] == 0
    assert r.bits_per_dim == pytest.approx(r.prior + r.total_kl + r.decoder, rel=1e-12)


def test_clip_x0_flag_against_reference(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("cosine", 10))
    x0 = grid_images(rng, (2, 2, 8, 8))
    r = d.nll(x0, seed=1, clip_x0=True)
    _, terms = reference_terms(d, x0, 1, clip=True)
    _, unclipped = reference_terms(d, x0, 1, clip=False)
    assert np.abs(terms - unclipped).max() > 1e-3       # clipping matters for this model
    err = np.abs(r.terms - terms) / np.abs(terms)
    assert err.max() < 1e-6, f"max rel diff {err.max():.3g}"


def test_prior_closed_form_and_zero_terminal_snr(net, rng):
    x0 = grid_images(rng, (4, 2, 8, 8))
    s = ddpm.NoiseSchedule("linear", 10)
    r = ddpm.Diffusion(net, s).nll(x0, seed=0)
    abT = s.alpha_bars[10]
    x = x0.reshape(4, -1).astype(np.float64)
    # KL(N(sqrt(abT) x, 1 - abT) || N(0, 1)) per value, written out
    closed = (0.5 * (abT * x ** 2 + (1 - abT) - 1 - np.log(1 - abT))).sum(1)
    np.testing.assert_allclose(r.prior_nats, closed, rtol=1e-12)
    # alpha_bar_T = 0: q(x_T | x_0) is N(0, I) itself
    z = ddpm.NoiseSchedule("linear", 10, rescale_zero_terminal_snr=True)
    rz = ddpm.Diffusion(net, z, objective="v").nll(x0, seed=0)
    assert np.all(rz.prior_nats == 0.0)
    with pytest.raises(ValueError, match="eps model cannot predict"):
        ddpm.Diffusion(net, z, objective="eps").nll(x0, seed=0)


def test_decoder_integration_reference_itself():
    """The integration reference agrees with the closed form where the closed form is
    trivially right (a bin centred on the mean, a far tail), so it can judge the C."""
    m = bin_mass_by_integration(np.array([0.0]), np.array([0.0]), 1 / 255)
    assert m[0] == pytest.approx(math.erf(1 / math.sqrt(2)), rel=1e-10)
    edge = bin_mass_by_integration(np.array([-1.0]), np.array([-1.0 + 1 / 255]), 1e-3)
    assert edge[0] == pytest.approx(0.5, rel=1e-10)


# ----------------------------------------------------------------------------
# the Monte Carlo mode
# ----------------------------------------------------------------------------

def test_timestep_draws_distinct_uniform_and_batch_independent():
    T, K, N = 20, 3, 3000
    ts = np.empty((N, K), np.int64)
    _core.nll_timesteps(ts, T, 7, 0)
    assert ts.min() >= 2 and ts.max() <= T
    assert np.all(np.diff(ts, axis=1) > 0)             # distinct, sorted
    counts = np.bincount(ts.ravel(), minlength=T + 1)[2:]
    p = K / (T - 1)                                     # inclusion probability of each t
    sd = math.sqrt(N * p * (1 - p))
    z = (counts - N * p) / sd
    assert np.abs(z).max() < 5, f"inclusion counts {counts}, z {z}"
    chi2 = float((z ** 2).sum())                        # ~ chi2 with ~18 dof: mean 18, sd 6
    assert chi2 < 18 + 6 * 6, chi2
    part = np.empty((1000, K), np.int64)
    _core.nll_timesteps(part, T, 7, 2000)               # images 2000.. drawn on their own
    assert np.array_equal(part, ts[2000:])


def test_monte_carlo_terms_are_the_exact_terms_and_full_k_is_exact(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 15))
    x0 = grid_images(rng, (4, 2, 8, 8))
    ex = d.nll(x0, seed=3)
    mc = d.nll(x0, seed=3, t_samples=4)
    assert mc.t.shape == (4, 5) and np.all(mc.t[:, 0] == 1)
    # same (seed, image, t) -> same x_t -> the same term
    picked = np.take_along_axis(ex.terms, mc.t - 1, axis=1)
    np.testing.assert_allclose(mc.terms, picked, rtol=1e-6)
    full = d.nll(x0, seed=3, t_samples=14)
    assert full.bits_per_dim == pytest.approx(ex.bits_per_dim, rel=1e-9)
    np.testing.assert_allclose(full.kl_per_t, ex.kl_per_t, rtol=1e-6)
    assert mc.total_kl == pytest.approx(mc.kl_per_t.sum(), rel=1e-12)
    assert mc.bits_per_dim == pytest.approx(mc.prior + mc.total_kl + mc.decoder, rel=1e-12)


def test_monte_carlo_is_unbiased_over_seeds(net, rng):
    """Paired by seed (same x_t noise): MC(seed) - exact(seed) has mean 0."""
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 12))
    x0 = grid_images(rng, (2, 2, 8, 8))
    diffs, exact = [], []
    for seed in range(150):
        e = d.nll(x0, seed=seed)
        m = d.nll(x0, seed=seed, t_samples=2)
        diffs.append(m.bits_per_dim - e.bits_per_dim)
        exact.append(e.bits_per_dim)
    diffs = np.array(diffs)
    se = diffs.std(ddof=1) / math.sqrt(len(diffs))
    assert se > 0
    assert abs(diffs.mean()) < 4 * se, f"mean MC - exact {diffs.mean():.4g}, SE {se:.4g}"
    # and the estimate is noisier than the exact bound (the documented price)
    assert diffs.std() > 0.1 * np.std(exact)


# ----------------------------------------------------------------------------
# the bound for the exact denoiser of Gaussian data
# ----------------------------------------------------------------------------

def discretised_gaussian_entropy_bits(mean, std):
    """H = -sum_k p_k log2 p_k over the 256 levels, p_k the Gaussian mass of bin k."""
    edges = (np.arange(1, 256) - 0.5) / 127.5 - 1.0
    cdf = np.array([0.5 * math.erfc(-(e - mean) / (std * math.sqrt(2))) for e in edges])
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_gaussian_data_bound_is_above_the_discretised_entropy(rng):
    """For any model, E[bound] >= E[-log p(x_0)] >= H(data).  With the exact denoiser the
    gap is what the discrete-time bound itself costs (see the per-t test below): it does
    not vanish as T grows, because near t = 1 the SNR ratio SNR(t-1)/SNR(t) stays ~ t/(t-1)."""
    from ddpm.likelihood import nll
    mean, std = 0.1, 0.3
    H = discretised_gaussian_entropy_bits(mean, std)
    cfg = dict(TINY, in_channels=1, out_channels=1)
    x = np.clip(np.rint((rng.normal(mean, std, (64, 1, 8, 8)) + 1) * 127.5), 0, 255)
    x0 = (x / 127.5 - 1).astype(np.float32)
    gaps = {}
    for kind in ("linear", "cosine"):
        for T in (10, 100, 1000):
            d = ddpm.Diffusion(ddpm.UNet(seed=0, **cfg), ddpm.NoiseSchedule(kind, T))
            r = nll(d, x0, seed=0, _model=(mean, std))
            assert np.all(r.per_image > 0) and np.all(r.terms >= 0)
            assert r.bits_per_dim > H - 4 * r.stderr, (kind, T, r.bits_per_dim, H, r.stderr)
            gaps[kind, T] = round(r.bits_per_dim - H, 3)
    print(f"H = {H:.4f} bits/dim; bound - H: {gaps}")


def test_gaussian_data_kl_terms_match_their_expectation(rng):
    """Continuous x_0 ~ N(m, s^2) and the exact denoiser: x0_hat = E[x_0 | x_t], so
    E[L_{t-1}] / D = 0.5 coef1_t^2 mmse_t / posterior_variance_t
                   = 0.5 (SNR(t-1) - SNR(t)) s^2 / (1 + SNR(t) s^2)   (fixed_small).
    Checked per t against the mean over 256 images, within 5 computed standard errors."""
    mean, std, T, N, D = -0.2, 0.25, 40, 256, 64
    s = ddpm.NoiseSchedule("cosine", T)
    x0 = rng.normal(mean, std, (N, D)).astype(np.float32)
    terms, prior = np.empty((N, T)), np.empty(N)
    ts = np.tile(np.arange(1, T + 1, dtype=np.int64), (N, 1))
    _core.nll(terms, prior, x0, (mean, std), None, s.betas.copy(), ts, objective=0, seed=4)
    snr = s.snr
    t = np.arange(2, T + 1)
    expected = 0.5 * (snr[t - 1] - snr[t]) * std ** 2 / (1 + snr[t] * std ** 2)
    got = terms[:, 1:].mean(0) / D
    se = terms[:, 1:].std(0, ddof=1) / D / math.sqrt(N)
    z = (got - expected) / se
    assert np.abs(z).max() < 5, f"worst t = {t[np.argmax(np.abs(z))]}, z = {np.abs(z).max():.2f}"
    # and for the v objective the same model gives the same bound up to float32 rounding
    tv = np.empty((N, T))
    _core.nll(tv, prior, x0, (mean, std), None, s.betas.copy(), ts, objective=2, seed=4)
    np.testing.assert_allclose(tv[:, 1:].mean(0), terms[:, 1:].mean(0), rtol=1e-3)


# ----------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------

def test_bit_identical_at_any_thread_count_and_batch_independent_noise(threads, rng):
    cfg = dict(TINY, sample_size=16, in_channels=1, out_channels=1)
    d = ddpm.Diffusion(ddpm.UNet(seed=1, **cfg), ddpm.NoiseSchedule("linear", 6))
    x0 = grid_images(rng, (128, 1, 16, 16))             # 32768 values: two threads split it
    threads(1)
    a = d.nll(x0, seed=9, batch_size=50)
    m1 = d.nll(x0[:40], seed=9, t_samples=2, batch_size=40)
    threads(2)
    b = d.nll(x0, seed=9, batch_size=50)
    assert np.array_equal(a.terms, b.terms), np.abs(a.terms - b.terms).max()
    assert np.array_equal(a.prior_nats, b.prior_nats)
    assert np.array_equal(a.per_image, b.per_image)
    # another batch size: the same x_t and draws; the U-Net's matrix products are blocked
    # by batch, so its float32 output (and so each term) may move in the last bits only
    c = d.nll(x0, seed=9, batch_size=128)
    err = np.abs(c.terms - a.terms) / np.abs(a.terms)
    assert err.max() < 1e-5, f"max rel diff across batch sizes {err.max():.3g}"
    assert np.array_equal(c.prior_nats, a.prior_nats)
    m2 = d.nll(x0[:40], seed=9, t_samples=2, batch_size=7)
    assert np.array_equal(m1.t, m2.t)
    np.testing.assert_allclose(m1.terms, m2.terms, rtol=1e-5)
    # with a denoiser that is per-image exact (the Gaussian hook), bitwise across batches
    from ddpm.likelihood import nll
    g1 = nll(d, x0, seed=9, batch_size=128, _model=(0.0, 0.5))
    g2 = nll(d, x0, seed=9, batch_size=33, _model=(0.0, 0.5))
    assert np.array_equal(g1.terms, g2.terms)


def test_seed_changes_the_noise_and_input_is_not_modified(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 8))
    x0 = grid_images(rng, (2, 2, 8, 8))
    keep = x0.copy()
    a, b = d.nll(x0, seed=0), d.nll(x0, seed=1)
    assert not np.array_equal(a.terms[:, 1:], b.terms[:, 1:])
    assert np.array_equal(a.prior_nats, b.prior_nats)   # the prior has no noise
    assert np.array_equal(x0, keep)
    assert np.array_equal(d.nll(x0.astype(np.float64), seed=0).terms, a.terms)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("x0,kwargs,exc,match", [
    (np.zeros((2, 2, 8, 8), np.int64), {}, TypeError, "float32 or float64.*integer"),
    (np.zeros((2, 2, 8, 8), np.float16), {}, TypeError, "float32 or float64"),
    ([[0.0]], {}, TypeError, "numpy.ndarray"),
    (np.full((2, 1, 8, 8), -1.0, np.float32), {}, ValueError, "shape \\(N, 2, 8, 8\\)"),
    (np.full((2, 2, 8), -1.0, np.float32), {}, ValueError, "shape"),
    (np.full((1, 2, 8, 8), 0.0, np.float32), {}, ValueError, "0.5 levels off"),
    (np.full((1, 2, 8, 8), np.nan, np.float32), {}, ValueError, "NaN"),
    (np.full((1, 2, 8, 8), 1.5, np.float32), {}, ValueError, "\\[-1, 1\\]"),
    (np.full((1, 2, 8, 8), 0.5, np.float32), {}, ValueError, "256-level grid"),
    (np.full((1, 2, 8, 8), 0.5, np.float32), {"quantize": True, "t_samples": 0}, ValueError,
     "t_samples must be >= 1"),
    (None, {"t_samples": 10}, ValueError, "t_samples must be in 1..T-1"),
    (None, {"t_samples": True}, TypeError, "t_samples must be an int"),
    (None, {"variance": "learned"}, ValueError, "variance must be one of"),
    (None, {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    (None, {"seed": -1}, ValueError, "seed"),
    (None, {"seed": 1.5}, TypeError, "seed"),
    (None, {"clip_x0": 1}, TypeError, "clip_x0"),
    (None, {"progress": 3}, TypeError, "progress"),
])
def test_bad_input(net, x0, kwargs, exc, match):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 10))
    if x0 is None:
        x0 = np.full((1, 2, 8, 8), -1.0, np.float32)
    with pytest.raises(exc, match=match):
        d.nll(x0, **kwargs)


def test_quantize_snaps_to_the_grid(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 6))
    x0 = grid_images(rng, (2, 2, 8, 8))
    jitter = x0 + rng.uniform(-0.4, 0.4, x0.shape).astype(np.float32) / 127.5
    jitter = np.clip(jitter, -1, 1)
    with pytest.raises(ValueError, match="quantize=True"):
        d.nll(jitter)
    assert np.array_equal(check_grid(jitter, quantize=True), x0)
    assert np.array_equal(d.nll(jitter, quantize=True, seed=2).terms, d.nll(x0, seed=2).terms)


def test_binding_rejects_bad_arrays_in_a_subprocess():
    """Wrong types, shapes, codes and index ranges never reach the loop (no crash).  The
    values of betas are NoiseSchedule's to check (test_schedule.py: test_from_betas_bad_input,
    test_constructor_bad_input), an eps model at alpha_bar_T = 0 is nll()'s
    (test_prior_closed_form_and_zero_terminal_snr)."""
    code = """
    import numpy as np, ddpm
    from ddpm import _core
    betas = ddpm.NoiseSchedule("linear", 10).betas.copy()
    x0 = np.zeros((2, 4), np.float32)
    ts = np.ones((2, 3), np.int64)
    G = (0.0, 1.0)
    net = ddpm.UNet(seed=0, sample_size=4, in_channels=1, out_channels=1,
                    block_out_channels=(4,), layers_per_block=1, down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",), norm_num_groups=4, add_attention=False)
    bad = [
        dict(terms=np.zeros((2, 3), np.float32)), dict(terms=np.zeros((2, 4))),
        dict(prior=np.zeros(3)), dict(prior=np.zeros(2)[::-1].copy()[:1]),
        dict(x0=x0.astype(np.float64)), dict(x0=np.zeros(4, np.float32)),
        dict(betas=betas.astype(np.float32)), dict(betas=betas[:1]),
        dict(ts=ts.astype(np.int32)), dict(ts=np.full((2, 3), 11, np.int64)),
        dict(ts=np.zeros((2, 3), np.int64)), dict(ts=np.ones((3, 3), np.int64)),
        dict(objective=3), dict(variance=2), dict(seed=-1), dict(first_image=-1),
        dict(noise=np.zeros((2, 2, 4), np.float32)),
        dict(noise=np.full((3, 2, 4), np.inf, np.float32)),
        dict(hook=5), dict(hook_every=0), dict(model=(1.0,)), dict(params=np.zeros(3, np.float32)),
        dict(model=net._handle, params=net.params),                  # x0 shape (2, 4)
        dict(model=net._handle, params=net.params[:-1], x0=np.zeros((2, 1, 4, 4), np.float32)),
    ]
    for b in bad:
        a = dict(terms=np.zeros((2, 3)), prior=np.zeros(2), x0=x0, model=G, params=None,
                 betas=betas, ts=ts, objective=0)
        a.update(b)
        pos = [a.pop(k) for k in ("terms", "prior", "x0", "model", "params", "betas", "ts")]
        try:
            _core.nll(*pos, **a)
        except (ValueError, TypeError):
            continue
        raise SystemExit(f"accepted {sorted(b)}")
    for args in [(np.zeros((2, 10), np.int64), 10, 0, 0), (np.zeros((2, 3), np.int64), 1, 0, 0),
                 (np.zeros((2, 3), np.int32), 10, 0, 0), (np.zeros(3, np.int64), 10, 0, 0),
                 (np.zeros((2, 3), np.int64), 10, -1, 0)]:
        try:
            _core.nll_timesteps(*args)
        except (ValueError, TypeError):
            continue
        raise SystemExit(f"nll_timesteps accepted {args[0].shape} {args[1:]}")
    print("ok")
    """
    assert "ok" in assert_subprocess_ok(code)


# ----------------------------------------------------------------------------
# progress and interrupts
# ----------------------------------------------------------------------------

def test_progress_counts_passes_and_hook_interrupt_leaves_outputs_untouched(net, rng):
    d = ddpm.Diffusion(net, ddpm.NoiseSchedule("linear", 10))
    x0 = grid_images(rng, (5, 2, 8, 8))
    seen = []
    d.nll(x0, batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 30) and seen[-1] == (30, 30)
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))

    def stop(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        d.nll(x0, progress=stop)
    # the core writes nothing when interrupted
    terms = np.full((5, 10), -7.0)
    prior = np.full(5, -7.0)
    ts = np.tile(np.arange(1, 11, dtype=np.int64), (5, 1))
    with pytest.raises(KeyboardInterrupt):
        _core.nll(terms, prior, x0, net._handle, net.params, d.schedule.betas.copy(), ts,
                  objective=0, hook=stop)
    assert np.all(terms == -7.0) and np.all(prior == -7.0)
    assert d.nll(x0[:1], seed=0).per_image.shape == (1,)   # the model is free again


def test_ctrl_c_interrupts_an_exact_run():
    code = """
    import os, signal, threading, sys
    import numpy as np, ddpm
    ddpm.set_num_threads(1)
    d = ddpm.Diffusion(ddpm.UNet(seed=0, block_out_channels=(16, 32, 64)))   # 28x28, T = 1000
    x0 = np.full((4, 1, 28, 28), -1.0, np.float32)
    def fire():
        import time
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=fire, daemon=True).start()
    try:
        d.nll(x0, seed=0)
    except KeyboardInterrupt:
        assert d.nll(x0[:1], t_samples=1, seed=0).per_image.shape == (1,)
        print("interrupted")
        sys.exit(0)
    sys.exit("no KeyboardInterrupt")
    """
    assert "interrupted" in assert_subprocess_ok(code, timeout=600)


def test_memory_does_not_grow_over_repeated_calls():
    """A leaked workspace (3 x (16, 1024) float32 + tables, ~0.2 MB) would add ~40 MB
    over 200 calls; peak RSS may move by allocator noise only."""
    code = """
    import resource
    import numpy as np, ddpm
    from ddpm import _core
    ddpm.set_num_threads(1)
    betas = ddpm.NoiseSchedule("linear", 20).betas.copy()
    x0 = np.zeros((16, 1024), np.float32)
    ts = np.tile(np.arange(1, 21, dtype=np.int64), (16, 1))
    terms, prior = np.empty((16, 20)), np.empty(16)
    draws = np.empty((16, 5), np.int64)
    def run(n):
        for i in range(n):
            _core.nll(terms, prior, x0, (0.0, 0.5), None, betas, ts, objective=0, seed=i)
            _core.nll_timesteps(draws, 20, i, 0)
    run(10)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(200)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0)
    """
    grown_kb = int(assert_subprocess_ok(code).split()[-1])
    assert grown_kb < 4 * 1024, f"peak RSS grew by {grown_kb} KB over 200 calls"
