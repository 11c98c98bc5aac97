"""ddpm.explore against slow float64 references written here and against closed forms.

The references do not use np.fft: the DFT is an explicit sum of complex exponentials, rings
and bands are assigned one frequency at a time, distances and correlations are loops.
"""
import math

import numpy as np
import pytest

from ddpm import explore


def dft2_power(img):
    """|DFT|^2 / (H W) of one (H, W) image by the definition, float64 (no np.fft)."""
    H, W = img.shape
    ey = np.exp(-2j * np.pi * np.outer(np.arange(H), np.arange(H)) / H)
    ex = np.exp(-2j * np.pi * np.outer(np.arange(W), np.arange(W)) / W)
    F = ey @ img.astype(np.complex128) @ ex.T
    return np.abs(F) ** 2 / (H * W)


def freq(k, n):
    """Frequency (cycles/pixel) of DFT index k of n, in np.fft's convention, by hand."""
    return k / n if k < (n + 1) // 2 else (k - n) / n


def reference_spectrum(images):
    """Mean power per ring round(r S), S = max(H, W), by loops over the frequencies."""
    N, C, H, W = images.shape
    S = max(H, W)
    power = sum(dft2_power(images[i, c]) for i in range(N) for c in range(C)) / (N * C)
    rings = {}
    for ky in range(H):
        for kx in range(W):
            rs = math.hypot(freq(ky, H), freq(kx, W)) * S
            assert abs(rs - math.floor(rs) - 0.5) > 1e-9, "a frequency on a ring edge"
            rings.setdefault(int(math.floor(rs + 0.5)), []).append(power[ky, kx])
    K = max(rings) + 1
    return np.array([sum(rings[k]) / len(rings[k]) if k in rings else np.nan for k in range(K)])


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 2, 12, 12), (1, 1, 7, 7), (2, 1, 10, 6)])
def test_radial_power_spectrum_matches_the_definition(shape):
    x = np.random.default_rng(0).normal(size=shape) + np.linspace(0, 1, shape[-1])
    f, p = explore.radial_power_spectrum(x)
    ref = reference_spectrum(x)
    assert f.shape == p.shape == ref.shape
    np.testing.assert_allclose(f, np.arange(len(f)) / max(shape[-2:]), rtol=1e-15)
    ok = ~np.isnan(ref)
    assert np.array_equal(ok, ~np.isnan(p))
    err = np.max(np.abs(p[ok] - ref[ok]) / np.abs(ref[ok]))
    assert err < 1e-10, f"max relative difference {err:.2e}"


def test_radial_power_spectrum_closed_forms():
    rng = np.random.default_rng(1)
    # white noise of variance 4: power 4 in every ring (mean over many images)
    x = 2.0 * rng.standard_normal((2000, 28, 28))
    f, p = explore.radial_power_spectrum(x)
    assert len(f) == 21 and abs(f[-1] - 20 / 28) < 1e-15       # round(sqrt(0.5) * 28) = 20
    count = np.bincount([int(math.floor(math.hypot(freq(a, 28), freq(b, 28)) * 28 + 0.5))
                         for a in range(28) for b in range(28)])
    tol = 5 * np.sqrt(2 / (count * len(x)))         # 5 standard errors (chi-square with >= 1 dof)
    assert np.all(np.abs(p / 4 - 1) < tol), (p / 4, tol)
    # Parseval: the power of one image summed over all frequencies is its sum of squares
    img = rng.standard_normal((28, 28))
    total = dft2_power(img).sum()
    assert abs(total - np.sum(img ** 2)) < 1e-9 * total
    # a constant c: power c^2 H W at frequency 0 (ring 0, alone in it), nothing elsewhere
    _, p = explore.radial_power_spectrum(np.full((28, 28), 0.5))
    assert abs(p[0] - 0.25 * 28 * 28) < 1e-12 and np.all(np.abs(p[1:]) < 1e-20)
    # cos(2 pi (7/28) n) along the rows: power at (0, +-7/28), i.e. ring 7 only
    wave = np.tile(np.cos(2 * np.pi * 7 / 28 * np.arange(28)), (28, 1))
    _, p = explore.radial_power_spectrum(wave)
    assert np.argmax(p) == 7 and np.all(np.delete(p, 7) < 1e-20)


def test_band_energy_matches_the_definition_and_closed_forms():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 16, 16))
    for low, high in ((0.25, None), (0.1, 0.3), (-1.0, None)):
        got = explore.band_energy(x, low, high)
        for i in range(4):
            P = dft2_power(x[i, 0])
            ref = sum(P[ky, kx] for ky in range(16) for kx in range(16)
                      if math.hypot(freq(ky, 16), freq(kx, 16)) > low and
                      (high is None or math.hypot(freq(ky, 16), freq(kx, 16)) <= high)) / 256
            assert abs(got[i] - ref) < 1e-12 * max(1.0, ref), (low, high, got[i], ref)
    # Parseval: every frequency -> the mean squared pixel
    np.testing.assert_allclose(explore.band_energy(x, -1.0), np.mean(x ** 2, axis=(1, 2, 3)),
                               rtol=1e-12)
    # cos(2 pi 0.25 n) along the rows: all its energy (mean of cos^2 = 1/2) at r = 0.25 exactly
    wave = np.tile(np.cos(2 * np.pi * 0.25 * np.arange(28)), (28, 1))
    assert abs(explore.band_energy(wave, 0.2, 0.3)[0] - 0.5) < 1e-12
    assert abs(explore.band_energy(wave, 0.25)[0]) < 1e-20         # the band is (low, high]
    assert abs(explore.band_energy(wave, 0.2499, 0.25)[0] - 0.5) < 1e-12


def test_gaussian_blur_is_the_separable_kernel():
    sigma = 1.3
    r = math.ceil(3 * sigma)
    k = np.array([math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)])
    k /= k.sum()
    # an impulse far from the edges gives the outer product of the 1-D kernel
    img = np.zeros((21, 21))
    img[10, 10] = 1.0
    out = explore.gaussian_blur(img, sigma)
    ref = np.zeros_like(img)
    ref[10 - r:10 + r + 1, 10 - r:10 + r + 1] = np.outer(k, k)
    assert out.shape == img.shape
    assert np.max(np.abs(out - ref)) < 1e-15
    # direct 2-D convolution with edge padding, by loops, on a random image
    x = np.random.default_rng(3).standard_normal((9, 11))
    ref = np.zeros_like(x)
    for i in range(9):
        for j in range(11):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    ii, jj = min(max(i + a, 0), 8), min(max(j + b, 0), 10)
                    ref[i, j] += k[a + r] * k[b + r] * x[ii, jj]
    assert np.max(np.abs(explore.gaussian_blur(x[None, None], sigma)[0, 0] - ref)) < 1e-13
    # a constant image stays constant
    assert np.max(np.abs(explore.gaussian_blur(np.full((3, 8, 8), 0.7), 2.0) - 0.7)) < 1e-15


def test_neighbour_correlation_is_pearson():
    x = np.random.default_rng(4).standard_normal((5, 6, 7)).cumsum(axis=2)
    got_h = explore.neighbour_correlation(x)
    got_v = explore.neighbour_correlation(x, axis="vertical")
    for i in range(5):
        ref_h = np.corrcoef(x[i, :, :-1].ravel(), x[i, :, 1:].ravel())[0, 1]
        ref_v = np.corrcoef(x[i, :-1, :].ravel(), x[i, 1:, :].ravel())[0, 1]
        assert abs(got_h[i] - ref_h) < 1e-12 and abs(got_v[i] - ref_v) < 1e-12
    noise = np.random.default_rng(5).standard_normal((400, 28, 28))
    assert abs(explore.neighbour_correlation(noise).mean()) < 5 / math.sqrt(400 * 28 * 27)


def test_two_sample_z_matches_the_formula():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.3, 1.0, 50), rng.normal(0.0, 2.0, 70)
    r = explore.two_sample_z(a, b)
    ma, mb = sum(a) / 50, sum(b) / 70
    va = sum((v - ma) ** 2 for v in a) / 49
    vb = sum((v - mb) ** 2 for v in b) / 69
    z = (ma - mb) / math.sqrt(va / 50 + vb / 70)
    assert abs(r.z - z) < 1e-12 and abs(r.mean_x - ma) < 1e-12 and abs(r.mean_y - mb) < 1e-12
    assert abs(r.p_value - 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))) < 1e-12
    # with a direction: the same test on the projections on the unit vector
    x, y = rng.normal(size=(30, 2, 3)), rng.normal(size=(40, 2, 3))
    w = rng.normal(size=(2, 3))
    u = w / math.sqrt(float(np.sum(w * w)))
    px = np.array([sum(x[i].ravel()[j] * u.ravel()[j] for j in range(6)) for i in range(30)])
    py = np.array([sum(y[i].ravel()[j] * u.ravel()[j] for j in range(6)) for i in range(40)])
    assert abs(explore.two_sample_z(x, y, 5 * w).z - explore.two_sample_z(px, py).z) < 1e-12


def test_two_sample_z_is_calibrated_and_has_power():
    rng = np.random.default_rng(7)
    p = np.array([explore.two_sample_z(rng.standard_normal(300), rng.standard_normal(300)).p_value
                  for _ in range(2000)])
    # under the null, P(p < 0.05) = 0.05; 2000 tests: standard error 0.005
    assert abs(np.mean(p < 0.05) - 0.05) < 0.02, np.mean(p < 0.05)
    shifted = explore.two_sample_z(rng.normal(0.5, 1, 300), rng.standard_normal(300))
    assert shifted.z > 3 and shifted.p_value < 3e-3


def test_distances_and_changes_match_loops():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 1, 4, 5))
    labels = np.array([0, 1, 0, 2, 1, 0, 3])

    def rms(a, b):
        return math.sqrt(sum((u - v) ** 2 for u, v in zip(a.ravel(), b.ravel())) / a.size)

    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    ref_all = sum(rms(x[i], x[j]) for i, j in pairs) / len(pairs)
    same = [(i, j) for i, j in pairs if labels[i] == labels[j]]
    ref_within = sum(rms(x[i], x[j]) for i, j in same) / len(same)
    assert abs(explore.mean_pairwise_distance(x) - ref_all) < 1e-12
    assert abs(explore.mean_pairwise_distance(x, labels) - ref_within) < 1e-12
    # identical images: no diversity
    assert explore.mean_pairwise_distance(np.repeat(x[:1], 4, axis=0)) < 1e-7

    y = rng.standard_normal((7, 1, 4, 5))
    np.testing.assert_allclose(explore.rms_distance(x, y), [rms(x[i], y[i]) for i in range(7)],
                               rtol=1e-12)
    np.testing.assert_allclose(explore.rms_distance(x, y[:1]), [rms(x[i], y[0]) for i in range(7)],
                               rtol=1e-12)

    frames = rng.standard_normal((5, 3, 1, 4, 4)).astype(np.float32)
    ref = [sum(rms(frames[k + 1, i].astype(np.float64), frames[k, i].astype(np.float64))
               for i in range(3)) / 3 for k in range(4)]
    np.testing.assert_allclose(explore.step_changes(frames), ref, rtol=1e-6)
    assert np.all(explore.step_changes(np.zeros((3, 2, 4))) == 0)


def test_inputs_are_not_modified():
    x = np.random.default_rng(9).standard_normal((3, 1, 8, 8))
    keep = x.copy()
    explore.radial_power_spectrum(x)
    explore.band_energy(x)
    explore.gaussian_blur(x)
    explore.neighbour_correlation(x)
    explore.mean_pairwise_distance(x)
    explore.step_changes(x)
    assert np.array_equal(x, keep)


@pytest.mark.parametrize("call,exc,name", [
    (lambda: explore.radial_power_spectrum(np.zeros((4, 4), int)), TypeError, "images"),
    (lambda: explore.radial_power_spectrum(np.zeros(4)), ValueError, "images"),
    (lambda: explore.radial_power_spectrum(np.full((4, 4), np.nan)), ValueError, "images"),
    (lambda: explore.band_energy(np.zeros((4, 4)), "a"), TypeError, "low"),
    (lambda: explore.band_energy(np.zeros((4, 4)), 0.3, 0.2), ValueError, "high"),
    (lambda: explore.gaussian_blur(np.zeros((4, 4)), 0.0), ValueError, "sigma"),
    (lambda: explore.gaussian_blur("image"), TypeError, "images"),
    (lambda: explore.neighbour_correlation(np.zeros((4, 4)), axis="diagonal"), ValueError, "axis"),
    (lambda: explore.neighbour_correlation(np.zeros((2, 1, 1))), ValueError, "images"),
    (lambda: explore.two_sample_z([1.0], [1.0, 2.0]), ValueError, "x"),
    (lambda: explore.two_sample_z([1.0, 2.0], ["a", "b"]), TypeError, "y"),
    (lambda: explore.two_sample_z(np.ones((3, 2)), np.ones((3, 2))), ValueError, "direction"),
    (lambda: explore.two_sample_z(np.ones((3, 2)), np.ones((3, 2)), np.zeros(2)), ValueError,
     "direction"),
    (lambda: explore.two_sample_z(np.ones((3, 2)), np.ones((3, 3)), np.ones(2)), ValueError, "y"),
    (lambda: explore.two_sample_z([1.0, 1.0], [2.0, 2.0]), ValueError, "constant"),
    (lambda: explore.mean_pairwise_distance(np.zeros((1, 4, 4))), ValueError, "images"),
    (lambda: explore.mean_pairwise_distance(np.zeros((3, 4, 4)), [0.0, 1.0, 2.0]), TypeError,
     "labels"),
    (lambda: explore.mean_pairwise_distance(np.zeros((3, 4, 4)), [0, 1]), ValueError, "labels"),
    (lambda: explore.mean_pairwise_distance(np.zeros((3, 4, 4)), [0, 1, 2]), ValueError, "label"),
    (lambda: explore.rms_distance(np.zeros((3, 4, 4)), np.zeros((2, 4, 4))), ValueError, "a and b"),
    (lambda: explore.step_changes(np.zeros((1, 2, 4))), ValueError, "frames"),
    (lambda: explore.step_changes(np.zeros((3, 2, 4), int)), TypeError, "frames"),
])
def test_bad_input_names_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()
