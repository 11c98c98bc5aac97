"""ddpm.metrics: the Frechet distance, FID_fm with the shipped classifier and
reference statistics, class histograms and nearest-training-image distances.

Expected values come from closed forms, independent computations (scipy's
sqrtm or torch's eigendecomposition) and properties of real data, never from
this code's own output.
"""
from __future__ import annotations

import numpy as np
import pytest

import ddpm
from ddpm import metrics
from conftest import assert_subprocess_ok

F64 = np.float64


def random_spd(rng, d, rank=None, scale=1.0):
    a = rng.standard_normal((d, rank or d + 3))
    return scale * (a @ a.T) / a.shape[1]


def have_fashion(split):
    return ddpm.datasets.find_dataset("fashion-mnist", split) is not None


@pytest.fixture(scope="module")
def test_set():
    if not have_fashion("test"):
        pytest.skip("Fashion-MNIST test set not available")
    return ddpm.datasets.fashion_mnist("test", download=False)


@pytest.fixture(scope="module")
def train_set():
    if not have_fashion("train"):
        pytest.skip("Fashion-MNIST training set not available")
    return ddpm.datasets.fashion_mnist("train", download=False)


# --------------------------------------------------------------------------- frechet_distance
def test_frechet_distance_is_zero_for_identical_statistics(rng):
    for d in (1, 5, 128):
        mu, s = rng.standard_normal(d), random_spd(rng, d)
        val = metrics.frechet_distance(mu, s, mu, s)
        assert 0.0 <= val <= 1e-9 * np.trace(s), (d, val)
    # singular (rank-deficient) covariance: still ~0, no NaN from sqrt of tiny negatives
    s = random_spd(rng, 20, rank=3)
    assert 0.0 <= metrics.frechet_distance(np.zeros(20), s, np.zeros(20), s) <= 1e-8


def test_frechet_distance_closed_form_for_diagonal_covariances(rng):
    d = 50
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.01, 4.0, d), rng.uniform(0.01, 4.0, d)
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2))
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)
    # the docstring's example, by hand: |0 - 1|^2 * 2 + (1 - 2)^2 * 2 = 4
    assert metrics.frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)) == pytest.approx(4.0)


def _independent_frechet(mu1, s1, mu2, s2):
    """Textbook form with a general (non-symmetric) matrix square root of S1 S2."""
    try:
        from scipy import linalg
        covmean = linalg.sqrtm(s1 @ s2)
        if np.iscomplexobj(covmean):
            covmean = covmean.real
        tr = np.trace(covmean)
    except ImportError:
        torch = pytest.importorskip("torch")
        ev = torch.linalg.eigvals(torch.tensor(s1 @ s2, dtype=torch.float64))
        tr = float(torch.sqrt(ev).real.sum())
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frechet_distance_matches_an_independent_computation(rng, d):
    mu1, mu2 = rng.standard_normal(d), 0.3 * rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d, scale=2.0)
    got = metrics.frechet_distance(mu1, s1, mu2, s2)
    ref = _independent_frechet(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-7, abs=1e-9)
    # symmetric in its two Gaussians
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-9)


def test_frechet_distance_bad_input():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="shape"):
        metrics.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), eye)
    with pytest.raises(ValueError, match="differ"):
        metrics.frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="symmetric"):
        metrics.frechet_distance(np.zeros(3), np.triu(np.ones((3, 3))), np.zeros(3), eye)
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.array([0, np.nan, 0]), eye, np.zeros(3), eye)
    with pytest.raises(TypeError):
        metrics.frechet_distance(np.array(["a", "b", "c"]), eye, np.zeros(3), eye)


# --------------------------------------------------------------------------- FID_fm
def test_shipped_reference_statistics_are_the_test_set_features(test_set):
    from safetensors import safe_open
    with safe_open(str(metrics.TEST_FEATURES_PATH), framework="numpy") as f:
        mu, sigma = f.get_tensor("mu"), f.get_tensor("sigma")
        meta = f.metadata()
    assert mu.dtype == F64 and sigma.dtype == F64
    assert mu.shape == (128,) and sigma.shape == (128, 128)
    assert np.array_equal(sigma, sigma.T)
    assert np.linalg.eigvalsh(sigma).min() > -1e-9 * np.trace(sigma)
    assert meta["feature_dim"] == "128"
    x, _ = test_set
    feats = metrics.FeatureNet.load().features(x).astype(F64)
    assert np.abs(feats.mean(0) - mu).max() <= 1e-6 * np.abs(mu).max()
    assert np.abs(np.cov(feats, rowvar=False) - sigma).max() <= 1e-6 * np.abs(sigma).max()


def test_fid_orders_real_images_far_below_noise(train_set, rng):
    x, _ = train_set
    real = x[rng.choice(len(x), 1000, replace=False)]
    noise = rng.uniform(-1, 1, real.shape).astype(np.float32)
    fid_real = metrics.fid(real)
    fid_noise = metrics.fid(noise)
    assert 0 < fid_real < fid_noise / 20, (fid_real, fid_noise)
    # the other kinds of reference: the statistics of the images themselves give ~0
    stats = metrics.feature_statistics(real[:300])
    tol = 1e-6 * np.trace(stats[1])
    assert metrics.fid(real[:300], reference=stats) == pytest.approx(0.0, abs=tol)
    assert metrics.fid(real[:300], reference=real[:300]) == pytest.approx(0.0, abs=tol)
    assert metrics.fid(real[:300], reference=real[300:600]) > 10 * tol


def test_fid_of_a_single_class_is_worse_than_of_all_classes(train_set):
    """Mode collapse shows: 1000 images of one class score far worse than a mix."""
    x, y = train_set
    mixed = x[:1000]
    one_class = x[y == 7][:1000]
    assert metrics.fid(one_class) > 5 * metrics.fid(mixed)


def test_fid_bad_input(rng):
    x = rng.uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.fid(x[:1])
    with pytest.raises(ValueError, match="shape"):
        metrics.fid(x[:, 0])
    with pytest.raises(ValueError, match="shape"):
        metrics.fid(np.zeros((4, 3, 28, 28), np.float32))
    with pytest.raises(TypeError):
        metrics.fid((x * 127.5 + 127.5).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        metrics.fid(x * 127.5 + 127.5)
    bad = x.copy()
    bad[2, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(bad)
    with pytest.raises(ValueError, match="unknown reference"):
        metrics.fid(x, reference="cifar10")
    with pytest.raises(ValueError):
        metrics.fid(x, reference=(np.zeros(64), np.eye(64)))
    with pytest.raises(ValueError):
        metrics.fid(x, reference=(np.zeros(128),))
    with pytest.raises(TypeError):
        metrics.fid("images")
    with pytest.raises(ValueError, match="batch_size"):
        metrics.fid(x, batch_size=0)
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        metrics.class_histogram((x + 1) / 2)


def test_fid_does_not_modify_its_input(rng):
    x = rng.uniform(-1, 1, (6, 1, 28, 28))            # float64, converted internally
    keep = x.copy()
    metrics.fid(x)
    assert np.array_equal(x, keep)


# --------------------------------------------------------------------------- FeatureNet
def test_featurenet_outputs_and_batch_size_independence(rng):
    net = metrics.FeatureNet.load()
    x = rng.uniform(-1, 1, (13, 1, 28, 28)).astype(np.float32)
    f1 = net.features(x, batch_size=13)
    f2 = net.features(x, batch_size=4)
    assert f1.shape == (13, 128) and f1.dtype == np.float32
    assert np.abs(f1 - f2).max() <= 1e-5 * max(1.0, np.abs(f1).max())
    lg = net.logits(x.astype(np.float64))
    assert lg.shape == (13, 10)
    assert np.array_equal(net.predict(x), np.argmax(lg, axis=1))
    # logits are the linear head applied to the features
    sd = net.state_dict()
    ref = f1.astype(F64) @ sd["fc.weight"].T.astype(F64) + sd["fc.bias"]
    assert np.abs(lg - ref).max() <= 1e-4 * np.abs(ref).max()


def test_featurenet_save_load_roundtrip(tmp_path, rng):
    net = metrics.FeatureNet({"widths": (8, 16), "depth": (1, 1)}, seed=11)
    path = tmp_path / "c.safetensors"
    net.save(path, {"note": "x", "acc": 0.5})
    back = metrics.FeatureNet.load(path)
    assert back.config == net.config
    assert np.array_equal(back.params, net.params)
    assert back.metadata["note"] == "x"
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception):
        metrics.FeatureNet.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        metrics.FeatureNet.load(tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------- histograms
def test_class_histogram_of_real_test_images_is_nearly_uniform(test_set):
    x, _ = test_set
    h = metrics.class_histogram(x[:4000])       # 400 per class expected, sd of a share ~0.005
    assert h.shape == (10,) and h.dtype == F64
    assert h.sum() == pytest.approx(1.0)
    assert np.all((h >= 0.07) & (h <= 0.13)), dict(zip(ddpm.datasets.FASHION_MNIST_CLASSES, h))
    assert len(ddpm.datasets.FASHION_MNIST_CLASSES) == 10


def test_class_histogram_of_one_class(test_set):
    x, y = test_set
    h = metrics.class_histogram(x[y == 1][:300])         # trousers: the easiest class
    assert h[1] > 0.9 and h.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- memorisation
def test_nearest_train_distance_against_brute_force(rng):
    train = rng.uniform(-1, 1, (300, 1, 28, 28)).astype(np.float32)
    queries = np.concatenate([train[[5, 77]], rng.uniform(-1, 1, (7, 1, 28, 28)).astype(np.float32),
                              train[[9]] + np.float32(0.01)])
    got = metrics.nearest_train_distance(queries, train, chunk=4)
    t = train.reshape(300, -1).astype(F64)
    ref = np.array([np.sqrt(np.min(np.mean((t - qq.reshape(-1)) ** 2, axis=1)))
                    for qq in queries.astype(F64)])
    assert got.shape == (10,) and got.dtype == F64
    assert got[0] == 0.0 and got[1] == 0.0
    assert np.allclose(got, ref, rtol=1e-12, atol=0)
    assert got[-1] == pytest.approx(0.01, rel=1e-4)


def test_nearest_train_distance_on_the_real_training_set(train_set, rng):
    x, _ = train_set
    picks = x[[0, 12345, 59999]]
    d = metrics.nearest_train_distance(picks)
    assert np.all(d == 0.0), d
    noise = rng.uniform(-1, 1, (3, 1, 28, 28)).astype(np.float32)
    dn = metrics.nearest_train_distance(noise)
    assert np.all(dn > 0.4), dn      # RMS per pixel: uniform noise is far from any garment


def test_nearest_train_distance_bad_input(rng):
    with pytest.raises(ValueError, match="shape"):
        metrics.nearest_train_distance(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="shape"):
        metrics.nearest_train_distance(np.full((2, 1, 28, 28), -1, np.float32),
                                       np.zeros((5, 1, 14, 14), np.float32))
    with pytest.raises(TypeError):
        metrics.nearest_train_distance(np.zeros((2, 1, 28, 28), np.int64))


def test_metrics_bad_input_never_crashes():
    assert_subprocess_ok("""
        import numpy as np
        from ddpm import metrics
        bad = [np.zeros((0, 1, 28, 28), np.float32), np.full((2, 1, 28, 28), np.inf, np.float32),
               np.zeros((2, 1, 28, 28), np.complex64), np.zeros((2, 1, 28, 28, 1), np.float32),
               [[1.0]], None, np.zeros((2, 1, 28, 28), np.float32)[:, :, ::-1]]
        for x in bad[:-1]:
            for f in (metrics.fid, metrics.class_histogram, metrics.feature_statistics):
                try:
                    f(x)
                except (TypeError, ValueError):
                    pass
                else:
                    raise AssertionError(f"{f.__name__} accepted {type(x)}")
        metrics.class_histogram(bad[-1])   # a negative-stride view is fine
        print("ok")
    """)


def test_metrics_nll_is_the_diffusion_bound():
    d = ddpm.Diffusion(ddpm.UNet(seed=0, block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), num_train_timesteps=20),
                       ddpm.NoiseSchedule("linear", timesteps=20))
    x0 = np.round((ddpm.randn((2, 1, 28, 28), seed=0).clip(-1, 1) + 1) * 127.5) / 127.5 - 1
    a = ddpm.metrics.nll(d, x0, seed=1)
    b = d.nll(x0, seed=1)
    assert a.bits_per_dim == b.bits_per_dim and a.bits_per_dim > 0
    with pytest.raises(TypeError):
        ddpm.metrics.nll(d.model, x0)
