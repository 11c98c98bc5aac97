"""Sample-quality metrics for Fashion-MNIST models: FID_fm, class histograms, memorisation.

FID_fm (what this module computes; read before quoting a number)
------------------------------------------------------------------
FID_fm is the Frechet distance between two Gaussians fitted to *penultimate
features of a small Fashion-MNIST classifier* shipped with ddpm:

* **Network**: :class:`FeatureNet` with the shipped weights
  ``ddpm/weights/fashion-mnist-classifier.safetensors``: conv3x3 1->32,
  GroupNorm(8 groups)+SiLU, conv3x3 32->32, GN+SiLU, 2x2 max pool (14x14),
  conv3x3 32->64, GN+SiLU, conv3x3 64->64, GN+SiLU, 2x2 max pool (7x7),
  conv3x3 64->128, GN+SiLU, global average pool, linear 128->10 (140,778
  float32 parameters); built from ddpm's own C layers (``csrc/classifier.c``)
  and trained on the 60,000 Fashion-MNIST training images
  (``scripts/train_classifier.py``; the file's metadata holds the settings
  and the test accuracy).
* **Feature layer**: the global-average-pooled output of the last GN+SiLU,
  the input of the final linear layer: **D = 128** features per image.
* **Input**: images (N, 1, 28, 28), float, pixel range **[-1, 1]** (the
  range ``ddpm.datasets.fashion_mnist`` returns; ``Diffusion.sample`` returns
  [0, 1], so pass ``x * 2 - 1``: a batch entirely in [0, 1] draws a warning).
* **Statistics**: mean ``mu`` (D,) and covariance ``sigma`` (D, D) (unbiased,
  N - 1), in float64, of the features of the images being scored.
* **Reference set** (default): the 10,000 Fashion-MNIST *test* images, whose
  statistics ship in ``ddpm/weights/fashion-mnist-test-features.safetensors``.
* **Distance**: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``
  (:func:`frechet_distance`).

FID_fm is **not** comparable to the usual FID (Inception-v3 pool3 features,
2048-d, ImageNet-trained): the numbers live on a different scale and should
only be compared with other FID_fm values - same network, same weights, same
reference, and a similar number of images (the estimate is biased upwards for
small N; use thousands of images, ideally 10,000).  For scale: 10,000 real
*training* images score the "floor" recorded in the classifier file's
metadata (``FeatureNet.load().metadata["fid_train_vs_test"]``).

Other tools
-----------
:func:`class_histogram` (share of each predicted class; a good generator of
Fashion-MNIST gives about 0.1 each), :func:`nearest_train_distance` (distance
of each image to its nearest training image, for memorisation checks), and
:class:`FeatureNet` itself (``features``, ``logits``, ``predict``,
``accuracy``).

>>> import ddpm
>>> from ddpm import metrics
>>> x, y = ddpm.datasets.fashion_mnist("test")             # doctest: +SKIP
>>> metrics.fid(x[:2000])                                  # doctest: +SKIP
>>> metrics.class_histogram(x[:2000])                      # doctest: +SKIP
"""
from __future__ import annotations

import functools
import json
import numbers
import warnings
from pathlib import Path

import numpy as np

from . import _core
from ._checks import as_diffusion
from ._io import atomic_write, loads_json
from ._safetensors import SafetensorsFile, write_safetensors
from .datasets import fashion_mnist

__all__ = ["FeatureNet", "nll", "fid", "frechet_distance", "feature_statistics", "load_statistics",
           "class_histogram",
           "nearest_train_distance", "DEFAULT_CONFIG", "CLASSIFIER_PATH", "TEST_FEATURES_PATH"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLASSIFIER_PATH = WEIGHTS_DIR / "fashion-mnist-classifier.safetensors"
TEST_FEATURES_PATH = WEIGHTS_DIR / "fashion-mnist-test-features.safetensors"

#: The shipped classifier's architecture (the keyword arguments of FeatureNet).
DEFAULT_CONFIG = {"in_channels": 1, "image_size": 28, "widths": (32, 64, 128),
                  "depth": (2, 2, 1), "groups": 8, "norm_eps": 1e-5, "num_classes": 10,
                  "pool": "max"}

# The widest feature vector a statistics file may hold.
MAX_FEATURES = 8192

# Pixels outside [-RANGE_TOL, RANGE_TOL] mean the caller passed 0..255 or some
# other scale; a little slack allows unclipped sampler outputs.
RANGE_TOL = 1.5


# --------------------------------------------------------------------------- input checks
def _check_images(images, func: str, name: str = "images", *, min_n: int = 1,
                  size: int = 28, channels: int = 1) -> np.ndarray:
    """images as C-contiguous float32 (N, channels, size, size), finite, in about [-1, 1]."""
    if isinstance(images, np.ndarray):
        arr = images
    elif isinstance(images, (list, tuple)):
        arr = np.asarray(images)
    else:
        raise TypeError(f"{func}(): {name} must be a numpy array of shape (N, {channels}, "
                        f"{size}, {size}), got {type(images).__name__}")
    if arr.dtype.kind in "iub":
        raise TypeError(f"{func}(): {name} has dtype {arr.dtype}; pass float images in [-1, 1] "
                        f"(e.g. x.astype(np.float32) / 127.5 - 1)")
    if arr.dtype.kind != "f":
        raise TypeError(f"{func}(): {name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != 4 or arr.shape[1:] != (channels, size, size):
        raise ValueError(f"{func}(): {name} must have shape (N, {channels}, {size}, {size}), "
                         f"got {arr.shape}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{func}(): {name} needs at least {min_n} image(s), got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{func}(): {name} contains NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -RANGE_TOL or hi > RANGE_TOL:
        raise ValueError(f"{func}(): {name} must be in [-1, 1] (got values in [{lo:g}, {hi:g}]); "
                         f"convert 0..255 pixels with x / 127.5 - 1")
    if lo >= 0.0 and arr.shape[0] >= 2:
        warnings.warn(f"{func}(): {name} are all in [0, 1]; ddpm.metrics expects [-1, 1] (the "
                      f"range of ddpm.datasets), so results will be wrong unless that is "
                      f"intended. Diffusion.sample returns [0, 1]: pass x * 2 - 1.",
                      UserWarning, stacklevel=3)
    return arr


def _check_batch_size(batch_size, func: str) -> int:
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"{func}(): batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= int(batch_size) <= 65536:
        raise ValueError(f"{func}(): batch_size must be in 1..65536, got {batch_size}")
    return int(batch_size)


# --------------------------------------------------------------------------- the network
def _feature_config(config) -> dict:
    """DEFAULT_CONFIG updated by config, every value checked for type and range."""
    F = "FeatureNet"
    cfg = dict(DEFAULT_CONFIG)
    if config:
        if not isinstance(config, dict):
            raise TypeError(f"{F}(): config must be a dict, got {type(config).__name__}")
        unknown = set(config) - set(cfg)
        if unknown:
            raise ValueError(f"{F}(): unknown config keys {sorted(map(str, unknown))}")
        cfg.update(config)

    def integer(v, name, lo, hi):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{F}(): {name} must be an int, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{F}(): {name} must be in {lo}..{hi}, got {v}")
        return int(v)

    for key, hi in (("in_channels", 64), ("image_size", 1024), ("groups", 4096),
                    ("num_classes", 1_000_000)):
        cfg[key] = integer(cfg[key], key, 1, hi)
    for key, hi in (("widths", 4096), ("depth", 16)):
        v = cfg[key]
        if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 6:
            raise TypeError(f"{F}(): {key} must be a list of 1 to 6 ints, got {v!r}")
        cfg[key] = tuple(integer(w, f"{key} entries", 1, hi) for w in v)
    eps = cfg["norm_eps"]
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real) or \
            not 0 < eps < 1:
        raise ValueError(f"{F}(): norm_eps must be a number in (0, 1), got {eps!r}")
    cfg["norm_eps"] = float(eps)
    if not isinstance(cfg["pool"], str) or cfg["pool"] not in ("avg", "max"):
        raise ValueError(f"{F}(): pool must be 'avg' or 'max', got {cfg['pool']!r}")
    return cfg


class FeatureNet:
    """The Fashion-MNIST classifier of FID_fm: C layers, float32 parameters in one buffer.

    Parameters
    ----------
    config : dict, optional
        Architecture (keys of :data:`DEFAULT_CONFIG`); default the shipped one.
    params : ndarray float32 (P,), optional
        Flat parameters laid out by ``tensors``; default: PyTorch's default
        initialisation (uniform +-1/sqrt(fan_in) for conv/linear weights and
        biases, GroupNorm weight 1 and bias 0) drawn with ``seed``.
    seed : int
        Seed of that initialisation.

    Use :meth:`load` for the shipped, trained network (``FeatureNet.load()``).

    Examples
    --------
    >>> net = FeatureNet.load()                                # doctest: +SKIP
    >>> net.features(x).shape                                  # doctest: +SKIP
    (N, 128)
    """

    def __init__(self, config: dict | None = None, params=None, *, seed: int = 0):
        self._layout(config)
        if params is None:
            params = self._init_params(seed)
        params = np.ascontiguousarray(params, dtype=np.float32)
        if params.shape != (self.num_parameters,):
            raise ValueError(f"FeatureNet(): params must have shape ({self.num_parameters},), "
                             f"got {params.shape}")
        self.params = params

    def _layout(self, config):
        """The checked config and the C network with its tensor table; no parameters yet."""
        self.config = cfg = _feature_config(config)
        self._handle = _core.classifier_create(
            cfg["in_channels"], cfg["image_size"], list(cfg["widths"]), list(cfg["depth"]),
            cfg["groups"], cfg["norm_eps"], cfg["num_classes"], cfg["pool"] == "max")
        info = _core.classifier_info(self._handle)
        self.num_parameters = info["num_parameters"]
        self.feature_dim = info["feature_dim"]
        self.flops_per_image = info["flops_per_image"]
        #: [(name, shape, offset, size)] of every parameter tensor
        self.tensors = [(n, tuple(s), o, z) for n, s, o, z in info["tensors"]]
        self.metadata: dict = {}
        self._grads = self._m = self._v = None
        self.step = 0

    def _init_params(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        p = np.zeros(self.num_parameters, np.float32)
        fan_in = {}
        for name, shape, off, size in self.tensors:
            if name.endswith(".weight") and len(shape) > 1:
                fan_in[name.rsplit(".", 1)[0]] = int(np.prod(shape[1:]))
        for name, shape, off, size in self.tensors:
            layer, kind = name.rsplit(".", 1)
            if layer.startswith("norm"):
                p[off:off + size] = 1.0 if kind == "weight" else 0.0
            else:
                bound = 1.0 / np.sqrt(fan_in[layer])
                p[off:off + size] = rng.uniform(-bound, bound, size)
        return p

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """{name: float32 array} views into ``params``, in PyTorch layouts."""
        return {n: self.params[o:o + z].reshape(s) for n, s, o, z in self.tensors}

    def save(self, path, metadata: dict | None = None, *, dtype=np.float32) -> None:
        """Write the weights (float32 or float16) and config/metadata as safetensors
        (atomically)."""
        meta = {"format": "ddpm-feature-net", "config": json.dumps(self.config)}
        for k, v in (metadata or {}).items():
            meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
        tensors = {n: np.ascontiguousarray(a, dtype=dtype) for n, a in self.state_dict().items()}
        atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, meta))

    @classmethod
    def load(cls, path=None) -> "FeatureNet":
        """The network in a safetensors file (default: the shipped classifier).

        The header (names, shapes, float dtypes) is checked against the config in
        the file's metadata before the parameters are allocated.  OSError: missing,
        unreadable or not a regular file; ValueError: damaged or not a FeatureNet.
        """
        F = "FeatureNet.load"
        path = Path(path) if path is not None else CLASSIFIER_PATH
        with SafetensorsFile(path, F, what="weights file") as st:
            meta = st.metadata
            if meta.get("format") != "ddpm-feature-net" or "config" not in meta:
                raise ValueError(f"{F}(): {path} is not a ddpm FeatureNet file")
            config = loads_json(meta["config"], F, f"the config in {path}", ValueError)
            net = cls.__new__(cls)
            try:
                net._layout(config)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{F}(): {path} holds a bad config: {exc}") from None
            names = {n for n, *_ in net.tensors}
            if set(st.tensors) != names:
                raise ValueError(f"{F}(): {path} tensors do not match the config "
                                 f"(missing {sorted(names - set(st.tensors))[:5]}, extra "
                                 f"{sorted(set(st.tensors) - names)[:5]})")
            for n, s, o, z in net.tensors:
                st.check_float(n, s)
            net.params = np.empty(net.num_parameters, np.float32)
            for n, s, o, z in net.tensors:
                st.read(n, out=net.params[o:o + z])
        net.metadata = {k: v for k, v in meta.items() if k not in ("format", "config")}
        return net

    # ---------------------------------------------------------------- inference
    def _run(self, images, func: str, batch_size: int, want_logits: bool, want_features: bool):
        cfg = self.config
        x = _check_images(images, func, size=cfg["image_size"], channels=cfg["in_channels"])
        bs = _check_batch_size(batch_size, func)
        n = x.shape[0]
        logits = np.empty((n, cfg["num_classes"]), np.float32) if want_logits else None
        feats = np.empty((n, self.feature_dim), np.float32) if want_features else None
        for i in range(0, n, bs):
            j = min(n, i + bs)
            _core.classifier_forward(self._handle, self.params, x[i:j],
                                     logits[i:j] if want_logits else None,
                                     feats[i:j] if want_features else None)
        return logits, feats

    def features(self, images, *, batch_size: int = 100) -> np.ndarray:
        """Penultimate features (N, D) float32 of images (N, 1, 28, 28) in [-1, 1]."""
        return self._run(images, "features", batch_size, False, True)[1]

    def logits(self, images, *, batch_size: int = 100) -> np.ndarray:
        """Class logits (N, K) float32."""
        return self._run(images, "logits", batch_size, True, False)[0]

    def predict(self, images, *, batch_size: int = 100) -> np.ndarray:
        """Predicted class (N,) int64 (first argmax of the logits)."""
        return np.argmax(self.logits(images, batch_size=batch_size), axis=1)

    def accuracy(self, images, labels, *, batch_size: int = 100) -> float:
        """Share of images whose predicted class equals labels (N,)."""
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"accuracy(): labels must be integers, got dtype {labels.dtype}")
        pred = self.predict(images, batch_size=batch_size)
        if labels.shape != pred.shape:
            raise ValueError(f"accuracy(): labels must have shape {pred.shape}, got {labels.shape}")
        return float(np.mean(pred == labels))

    # ---------------------------------------------------------------- training
    def train_step(self, images, labels, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 0.0, decoupled: bool = True, grad_clip: float = 0.0):
        """One AdamW (or Adam) step on a batch; returns (loss, correct, grad_norm).

        images (B, 1, 28, 28) float32 in [-1, 1]; labels (B,) integers 0..K-1.
        Moments live on the object; ``self.step`` counts the steps taken.
        """
        x = _check_images(images, "train_step", size=self.config["image_size"],
                          channels=self.config["in_channels"])
        y = np.ascontiguousarray(labels, dtype=np.int64)
        if self._grads is None:
            self._grads = np.zeros_like(self.params)
            self._m = np.zeros_like(self.params)
            self._v = np.zeros_like(self.params)
        self.step += 1
        try:
            return _core.classifier_train_step(
                self._handle, self.params, self._grads, self._m, self._v, x, y, self.step,
                (float(lr), float(betas[0]), float(betas[1]), float(eps), float(weight_decay),
                 bool(decoupled)), float(grad_clip))
        except Exception:
            self.step -= 1
            raise


@functools.lru_cache(maxsize=1)
def _default_net() -> FeatureNet:
    return FeatureNet.load()


@functools.lru_cache(maxsize=1)
def _test_statistics():
    return load_statistics(TEST_FEATURES_PATH)


def load_statistics(path):
    """(mu (D,), sigma (D, D)), read-only float64, from a feature-statistics file
    (safetensors with tensors ``mu`` and ``sigma``, as ``scripts/train_classifier.py``
    writes the shipped reference).  OSError: missing, unreadable or not a regular
    file; ValueError: other tensors, shapes, dtypes, NaN/Inf or a non-symmetric sigma.
    """
    F = "load_statistics"
    with SafetensorsFile(path, F, what="feature statistics file") as st:
        if set(st.tensors) != {"mu", "sigma"}:
            raise ValueError(f"{F}(): {path} must hold exactly the tensors mu and sigma, got "
                             f"{sorted(st.tensors)[:5]}")
        mu_info = st.check_float("mu")
        if len(mu_info.shape) != 1 or not 1 <= mu_info.shape[0] <= MAX_FEATURES:
            raise ValueError(f"{F}(): mu in {path} must have shape (D,), 1 <= D <= "
                             f"{MAX_FEATURES}, got {mu_info.shape}")
        D = mu_info.shape[0]
        st.check_float("sigma", (D, D))
        mu = st.read("mu", dtype=np.float64)
        sigma = st.read("sigma", dtype=np.float64)
    mu, sigma = _check_stats(mu, sigma, F, f" in {path}")
    mu.setflags(write=False)
    sigma.setflags(write=False)
    return mu, sigma


# --------------------------------------------------------------------------- statistics
def feature_statistics(images, *, batch_size: int = 100, net: FeatureNet | None = None):
    """(mu (D,), sigma (D, D)) float64 of the penultimate features of images (N >= 2)."""
    x = _check_images(images, "feature_statistics", min_n=2)
    f = (net or _default_net()).features(x, batch_size=batch_size).astype(np.float64)
    mu = f.mean(axis=0)
    sigma = np.cov(f, rowvar=False)
    return mu, sigma


def _check_stats(mu, sigma, func: str, which: str):
    mu = np.asarray(mu)
    sigma = np.asarray(sigma)
    for name, a in ((f"mu{which}", mu), (f"sigma{which}", sigma)):
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{func}(): {name} must be a real array, got dtype {a.dtype}")
    mu = mu.astype(np.float64)
    sigma = sigma.astype(np.float64)
    if mu.ndim != 1 or mu.size < 1:
        raise ValueError(f"{func}(): mu{which} must have shape (D,), got {mu.shape}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(f"{func}(): sigma{which} must have shape ({d}, {d}), got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{func}(): mu{which}/sigma{which} contain NaN or Inf")
    scale = max(1.0, float(np.abs(sigma).max()))
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise ValueError(f"{func}(): sigma{which} must be symmetric")
    return mu, (sigma + sigma.T) / 2


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh(s)
    w = np.clip(w, 0.0, None)   # tiny negative eigenvalues from rounding
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``.  The
    cross term uses the symmetric form: with R = S1^1/2 (symmetric, from an
    eigendecomposition), R S2 R is symmetric PSD and tr(sqrt(S1 S2)) is the sum of
    the square roots of its eigenvalues (tiny negative ones clipped to 0), so no
    complex parts appear and no non-symmetric sqrtm is needed.

    Examples
    --------
    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
    4.0
    """
    m1, s1 = _check_stats(mu1, sigma1, "frechet_distance", "1")
    m2, s2 = _check_stats(mu2, sigma2, "frechet_distance", "2")
    if m1.shape != m2.shape:
        raise ValueError(f"frechet_distance(): mu1 and mu2 differ in shape: {m1.shape} vs "
                         f"{m2.shape}")
    r = _sqrtm_psd(s1)
    m = r @ s2 @ r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    cross = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = m1 - m2
    d = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * cross
    return max(d, 0.0)


def fid(images, reference="fashion-mnist-test", *, batch_size: int = 100) -> float:
    """FID_fm of images (N >= 2, (N, 1, 28, 28) in [-1, 1]) against a reference.

    reference : "fashion-mnist-test" (the shipped statistics of the 10,000 test
        images), an array of reference images, or a tuple (mu, sigma).

    FID_fm is defined in this module's docstring; it is NOT comparable to
    Inception FID.  Use thousands of images: the estimate is biased upwards for
    small N.
    """
    x = _check_images(images, "fid", min_n=2)
    bs = _check_batch_size(batch_size, "fid")
    # the reference is checked before the (slow) features of the images are computed
    if isinstance(reference, str):
        if reference != "fashion-mnist-test":
            raise ValueError(f"fid(): unknown reference {reference!r}; use 'fashion-mnist-test', "
                             f"an array of images or a (mu, sigma) tuple")
        mu2, s2 = _test_statistics()
    elif isinstance(reference, tuple):
        if len(reference) != 2:
            raise ValueError("fid(): a reference tuple must be (mu, sigma)")
        mu2, s2 = _check_stats(reference[0], reference[1], "fid", " of the reference")
        d = _default_net().feature_dim
        if mu2.shape != (d,):
            raise ValueError(f"fid(): reference mu must have shape ({d},), got {mu2.shape}")
    else:
        ref = _check_images(reference, "fid", "reference", min_n=2)
        mu2, s2 = feature_statistics(ref, batch_size=bs)
    mu1, s1 = feature_statistics(x, batch_size=bs)
    return frechet_distance(mu1, s1, mu2, s2)


def class_histogram(images, *, batch_size: int = 100) -> np.ndarray:
    """Share (10,) float64 of images predicted as each class; sums to 1.

    Class names: ``ddpm.datasets.FASHION_MNIST_CLASSES``.  A sampler that
    covers every class evenly gives about 0.1 each.
    """
    x = _check_images(images, "class_histogram")
    net = _default_net()
    pred = net.predict(x, batch_size=batch_size)
    return np.bincount(pred, minlength=net.config["num_classes"]).astype(np.float64) / len(pred)


# --------------------------------------------------------------------------- memorisation
@functools.lru_cache(maxsize=1)
def _default_train():
    x, _ = fashion_mnist("train")
    return _prepare_train(x)


def _prepare_train(x: np.ndarray):
    t = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)
    t.setflags(write=False)
    norms = np.einsum("ij,ij->i", t, t, dtype=np.float64).astype(np.float32)
    return t, norms


def nearest_train_distance(images, train=None, *, candidates: int = 8,
                           chunk: int = 256) -> np.ndarray:
    """Per-image distance to the nearest training image: RMS pixel difference.

    Returns (N,) float64: ``sqrt(mean((x - t)**2))`` over the 784 pixels (in
    [-1, 1] units, so 0 = an exact copy and 2 = every pixel opposite) for the
    training image t nearest to x.  Multiply by 28 for the plain L2 distance.

    train : None (the 60,000 Fashion-MNIST training images) or images
        (M, 1, 28, 28).  The search ranks all training images by
        |t|^2 - 2 x.t (a float32 matrix product, chunk queries at a time against
        blocks of 8192 training images, so memory stays bounded), then
        recomputes the exact float64 distance of the ``candidates`` best
        and keeps the smallest, so an exact copy gives exactly 0.
    """
    x = _check_images(images, "nearest_train_distance")
    if train is None:
        t, tn = _default_train()
    else:
        t, tn = _prepare_train(_check_images(train, "nearest_train_distance", "train"))
    k = int(min(max(1, candidates), t.shape[0]))
    q = x.reshape(x.shape[0], -1)
    out = np.empty(q.shape[0], np.float64)
    block = 8192
    for i in range(0, q.shape[0], chunk):
        qi = q[i:i + chunk]
        best_d = np.full((qi.shape[0], k), np.inf, np.float32)
        best_j = np.zeros((qi.shape[0], k), np.int64)
        for j in range(0, t.shape[0], block):
            tj = t[j:j + block]
            d = tn[j:j + block][None, :] - 2.0 * (qi @ tj.T)      # |t|^2 - 2 q.t
            kk = min(k, d.shape[1])
            idx = np.argpartition(d, kk - 1, axis=1)[:, :kk]
            dd = np.take_along_axis(d, idx, axis=1)
            cat_d = np.concatenate([best_d, dd], axis=1)
            cat_j = np.concatenate([best_j, idx + j], axis=1)
            sel = np.argsort(cat_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(cat_d, sel, axis=1)
            best_j = np.take_along_axis(cat_j, sel, axis=1)
        cand = t[best_j].astype(np.float64)                         # (n, k, 784)
        diff = cand - qi[:, None, :].astype(np.float64)
        out[i:i + chunk] = np.sqrt(np.min(np.mean(diff * diff, axis=2), axis=1))
    return out


def nll(diffusion, x0, **options):
    """The NLL bound of ``diffusion`` on ``x0`` in bits/dim: :meth:`ddpm.Diffusion.nll`
    (prior, KL terms t = 2..T, discretised decoder; computed in C).  Returns its
    :class:`ddpm.likelihood.NLLResult`."""
    return as_diffusion(diffusion, "nll").nll(x0, **options)
