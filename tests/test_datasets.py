"""Data loading: the IDX reader, the Fashion-MNIST search path, the real test split
(when installed) and the procedural toys."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import ddpm
from ddpm import datasets
from ddpm.datasets import fashion_mnist, read_idx

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(arr: np.ndarray, code: int | None = None, trailing: bytes = b"") -> bytes:
    """An IDX file written by hand: 0x0000, type code, ndim, big-endian dims, big-endian data."""
    be = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    if code is None:
        code = IDX_CODES[np.dtype(be.dtype)]
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + be.tobytes() + trailing


def write_idx(path: Path, arr: np.ndarray, gz: bool = False, **kw) -> Path:
    data = idx_bytes(arr, **kw)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, split="test",
                gz=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img, lab, _ = datasets._FILES[split]
    sfx = ".gz" if gz else ""
    write_idx(folder / (img + sfx), images, gz=gz)
    write_idx(folder / (lab + sfx), labels, gz=gz)
    return folder


def synthetic(n=20, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.fixture
def no_data_anywhere(monkeypatch, tmp_path):
    """No $DDPM_DATA, an empty home, and no Debian folder; downloads would fail loudly."""
    monkeypatch.delenv("DDPM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setitem(datasets._SOURCES["fashion-mnist"], "debian",
                        str(tmp_path / "no-such-debian-dir"))

    def no_network(*a, **k):
        raise AssertionError("the test must not download")
    monkeypatch.setattr(datasets, "_download", no_network)
    return tmp_path


# --------------------------------------------------------------------------- read_idx
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype,shape", [
    (np.uint8, (5, 28, 28)), (np.uint8, (7,)), (np.int8, (3, 4)), (">i2", (2, 3, 4)),
    (">i4", (6,)), (">f4", (2, 2, 2, 2)), (">f8", (3, 1)),
])
def test_read_idx_round_trip(tmp_path, gz, dtype, shape):
    g = np.random.default_rng(1)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        arr = g.standard_normal(shape).astype(dt)
    else:
        info = np.iinfo(dt)
        arr = g.integers(info.min, info.max, shape, endpoint=True).astype(dt)
    p = write_idx(tmp_path / "x.idx", arr, gz=gz)
    got = read_idx(p)
    assert got.shape == shape
    assert got.dtype == dt.newbyteorder("=") and got.dtype.isnative
    assert np.array_equal(got, arr)
    assert np.array_equal(read_idx(str(p)), arr)           # str paths too


def test_read_idx_empty_dimension(tmp_path):
    got = read_idx(write_idx(tmp_path / "e.idx", np.zeros((0, 28, 28), np.uint8)))
    assert got.shape == (0, 28, 28)


@pytest.mark.parametrize("header", [
    b"\x01\x00\x08\x01\x00\x00\x00\x01\x00",               # first two bytes not zero
    b"\x00\x00\x07\x01\x00\x00\x00\x01\x00",               # unknown type code
    b"\x00\x00\x08\x00",                                   # ndim 0
    b"\x00\x00\x08\x05" + b"\x00\x00\x00\x01" * 5 + b"\x00",  # ndim 5
    b"PK\x03\x04 not an idx file at all",
], ids=["magic", "type-code", "ndim-0", "ndim-5", "zip"])
def test_read_idx_bad_magic(tmp_path, header):
    p = tmp_path / "bad.idx"
    p.write_bytes(header)
    with pytest.raises(ValueError, match="magic|IDX"):
        read_idx(p)


def test_read_idx_implausible_dimensions(tmp_path):
    p = tmp_path / "huge.idx"
    p.write_bytes(struct.pack(">HBBIII", 0, 0x08, 3, 100000, 10000, 10000))
    with pytest.raises(ValueError, match="implausibly large"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_truncated_data(tmp_path, gz):
    images, _ = synthetic(10)
    data = idx_bytes(images)[:-28 * 28]                   # header says 10, data holds 9
    p = tmp_path / "t.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(OSError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("cut", [4, 8, 12])
def test_read_idx_truncated_header(tmp_path, cut):
    p = tmp_path / "h.idx"
    p.write_bytes(idx_bytes(np.zeros((2, 3, 4), np.uint8))[:cut - 1])
    with pytest.raises(OSError, match="truncated"):
        read_idx(p)


def test_read_idx_empty_file(tmp_path):
    p = tmp_path / "empty.idx"
    p.write_bytes(b"")
    with pytest.raises(OSError):
        read_idx(p)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_read_idx_truncated_gzip(tmp_path, keep):
    images, _ = synthetic(30)
    blob = gzip.compress(idx_bytes(images))
    p = tmp_path / "t.gz"
    p.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(OSError):
        read_idx(p)


def test_read_idx_corrupt_gzip(tmp_path):
    images, _ = synthetic(30)
    blob = bytearray(gzip.compress(idx_bytes(images)))
    for i in range(40, len(blob) - 40, 97):
        blob[i] ^= 0xFF
    p = tmp_path / "c.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises((OSError, ValueError)):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_trailing_bytes(tmp_path, gz):
    images, _ = synthetic(3)
    data = idx_bytes(images, trailing=b"\x00")
    p = tmp_path / "tr.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match="trailing"):
        read_idx(p)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")


# --------------------------------------------------------------------------- fashion_mnist
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_fashion_mnist_from_path(tmp_path, gz, no_data_anywhere):
    images, labels = synthetic(20)
    folder = write_split(tmp_path / "fm", images, labels, gz=gz)
    x, y = fashion_mnist("test", path=folder, download=False)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.uint8 and np.array_equal(y, labels)
    want = images.astype(np.float64)[:, None] / 127.5 - 1.0
    diff = np.abs(x - want).max()
    assert diff < 1e-6, f"max abs diff {diff:.3g}"
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    # a str path works as well, and the labels are a copy, not a view of a buffer
    x2, y2 = fashion_mnist("test", path=str(folder), download=False)
    assert np.array_equal(x, x2) and y2.flags.writeable


def test_fashion_mnist_train_split_file_names(tmp_path, no_data_anywhere):
    images, labels = synthetic(10)
    folder = write_split(tmp_path / "fm", images, labels, split="train")
    x, _ = fashion_mnist("train", path=folder, download=False)
    assert x.shape == (10, 1, 28, 28)
    with pytest.raises(FileNotFoundError):
        fashion_mnist("test", path=folder, download=False)


@pytest.mark.parametrize("images,labels,word", [
    (np.zeros((5, 27, 28), np.uint8), np.zeros(5, np.uint8), "28, 28"),
    (np.zeros((5, 28, 28, 1), np.uint8), np.zeros(5, np.uint8), "28, 28"),
    (np.zeros((5, 28, 28), ">i2"), np.zeros(5, np.uint8), "uint8"),
    (np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8), "labels"),
    (np.zeros((5, 28, 28), np.uint8), np.zeros((5, 1), np.uint8), "labels"),
    (np.zeros((5, 28, 28), np.uint8), np.full(5, 10, np.uint8), "0..9"),
], ids=["27x28", "4-D", "int16", "count", "2-D labels", "label 10"])
def test_fashion_mnist_bad_files(tmp_path, no_data_anywhere, images, labels, word):
    folder = write_split(tmp_path / "fm", images, labels)
    with pytest.raises(ValueError, match=word):
        fashion_mnist("test", path=folder, download=False)


def test_fashion_mnist_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        fashion_mnist("validation", path=tmp_path, download=False)


def test_missing_data_message_mentions_apt_get(tmp_path, no_data_anywhere):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        fashion_mnist("test", download=False)
    assert "DDPM_DATA" in str(e.value) and "path=" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    # path= given: only that folder, never a download (the fixture fails any download)
    with pytest.raises(FileNotFoundError, match="apt-get") as e:
        fashion_mnist("test", path=empty, download=True)
    assert str(empty) in str(e.value)


def test_failed_download_is_reported(no_data_anywhere, monkeypatch):
    def offline(name, split):
        raise OSError("network unreachable (test)")
    monkeypatch.setattr(datasets, "_download", offline)
    with pytest.raises(FileNotFoundError, match="download failed.*network unreachable"):
        fashion_mnist("test", download=True)


def test_ddpm_data_is_honoured(tmp_path, no_data_anywhere, monkeypatch):
    # 10000 images: without path= the loader insists on the canonical split size
    images = np.zeros((10000, 28, 28), np.uint8)
    images[:, 14, 14] = np.arange(10000) % 256
    labels = (np.arange(10000) % 10).astype(np.uint8)
    root = tmp_path / "data"
    write_split(root / "fashion-mnist", images, labels)
    monkeypatch.setenv("DDPM_DATA", str(root))
    found = datasets.find_dataset("fashion-mnist", "test")
    assert found is not None and found[0].parent == root / "fashion-mnist", found
    x, y = fashion_mnist("test", download=False)
    assert x.shape == (10000, 1, 28, 28) and np.array_equal(y, labels)
    diff = np.abs(x[:, 0, 14, 14] - ((np.arange(10000) % 256) / 127.5 - 1)).max()
    assert diff < 1e-6, f"max abs diff {diff:.3g}"
    # the files directly in $DDPM_DATA are found too
    flat = tmp_path / "flat"
    write_split(flat, images[:10], labels[:10])
    monkeypatch.setenv("DDPM_DATA", str(flat))
    assert datasets.find_dataset("fashion-mnist", "test")[0].parent == flat
    # ... and a wrong-sized split found there is refused with a clear message
    with pytest.raises(ValueError, match="expected 10000 images, got 10"):
        fashion_mnist("test", download=False)


def test_search_order_path_then_env_then_cache(tmp_path, no_data_anywhere, monkeypatch):
    images, labels = synthetic(10)
    a = write_split(tmp_path / "a", images, labels)
    b = write_split(tmp_path / "b" / "fashion-mnist", images, labels)
    cache = write_split(tmp_path / "home" / ".cache" / "ddpm" / "fashion-mnist", images, labels)
    assert datasets.find_dataset("fashion-mnist", "test")[0].parent == cache
    monkeypatch.setenv("DDPM_DATA", str(tmp_path / "b"))
    assert datasets.find_dataset("fashion-mnist", "test")[0].parent == b
    assert datasets.find_dataset("fashion-mnist", "test", path=a)[0].parent == a


@pytest.mark.skipif(not (DEBIAN / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.delenv("DDPM_DATA", raising=False)
    x, y = fashion_mnist("test", path=DEBIAN, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert y.shape == (10000,) and y.dtype == np.uint8
    assert np.array_equal(np.bincount(y, minlength=10), np.full(10, 1000)), np.bincount(y)
    # pixels are k/127.5 - 1 for integers k: the data were not resampled on the way
    k = (x.astype(np.float64) + 1) * 127.5
    assert np.abs(k - np.round(k)).max() < 1e-4
    # the default search finds the same files when nothing else is configured
    found = datasets.find_dataset("fashion-mnist", "test")
    assert found is not None


# --------------------------------------------------------------------------- procedural
def test_tshirt():
    t = datasets.tshirt()
    assert t.shape == (1, 28, 28) and t.dtype == np.float32
    assert set(np.unique(t).tolist()) <= {-1.0, float(np.float32(0.4)), 1.0}
    assert (t == 1).sum() > 150 and (t == -1).sum() > 200     # a shirt on a background
    assert np.array_equal(t, t[:, :, ::-1]), "the T-shirt should be left-right symmetric"
    assert t[0, 0, 0] == -1 and t[0, 27, 27] == -1 and t[0, 15, 13] == 1
    assert datasets.tshirt(56).shape == (1, 56, 56)


@pytest.mark.parametrize("size,squares", [(28, 4), (28, 7), (8, 2), (12, 3)])
def test_checkerboard(size, squares):
    b = datasets.checkerboard(size, squares)
    assert b.shape == (1, size, size) and b.dtype == np.float32
    if size % squares == 0:
        cell = size // squares
        want = np.kron((np.add.outer(np.arange(squares), np.arange(squares)) % 2) * 2.0 - 1,
                       np.ones((cell, cell)))
        assert np.array_equal(b[0], want)
    assert set(np.unique(b).tolist()) == {-1.0, 1.0}


def test_circle():
    c = datasets.circle()
    assert c.shape == (1, 28, 28) and c.dtype == np.float32
    assert set(np.unique(c).tolist()) == {-1.0, 1.0}
    area = float((c == 1).sum())
    want = np.pi * (0.6 * 14) ** 2                  # radius 0.6 of half the size
    assert abs(area - want) < 2 * np.pi * 0.6 * 14, (area, want)   # within a perimeter
    assert c[0, 13, 13] == 1 and c[0, 0, 0] == -1
    assert np.array_equal(c, c[:, ::-1, :]) and np.array_equal(c, c[:, :, ::-1])
    assert np.array_equal(c[0], c[0].T)


def test_gaussian_mixture():
    a = datasets.gaussian_mixture(4000, seed=3)
    assert a.shape == (4000, 2) and a.dtype == np.float32
    assert np.array_equal(a, datasets.gaussian_mixture(4000, seed=3))
    assert not np.array_equal(a, datasets.gaussian_mixture(4000, seed=4))
    r = np.linalg.norm(a.astype(np.float64), axis=1)
    assert abs(r.mean() - 1.0) < 0.02 and r.std() < 0.15       # 8 modes on the unit circle
    ang = np.arctan2(a[:, 1], a[:, 0])
    counts = np.bincount(np.round(ang / (np.pi / 4)).astype(int) % 8, minlength=8)
    assert counts.min() > 350, counts                           # every mode is populated
    c = datasets.gaussian_mixture(500, centers=[[5.0, 5.0]], std=0.01, seed=0)
    assert np.abs(c - 5.0).max() < 0.1


def test_two_moons():
    m = datasets.two_moons(1001, seed=2)
    assert m.shape == (1001, 2) and m.dtype == np.float32
    assert np.array_equal(m, datasets.two_moons(1001, seed=2))
    assert not np.array_equal(m, datasets.two_moons(1001, seed=3))
    assert np.abs(m).max() < 1.6 and abs(float(m.mean())) < 0.1
    clean = datasets.two_moons(2000, noise=0.0, seed=0).astype(np.float64) * 1.25 + [0.5, 0.25]
    # without noise every point lies on one of the two unit half circles
    r_top = np.hypot(clean[:, 0], clean[:, 1])
    r_bot = np.hypot(clean[:, 0] - 1, clean[:, 1] - 0.5)
    assert np.all(np.minimum(np.abs(r_top - 1), np.abs(r_bot - 1)) < 1e-5)


def test_classes():
    assert len(datasets.FASHION_MNIST_CLASSES) == 10
    assert datasets.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert datasets.FASHION_MNIST_CLASSES[9] == "Ankle boot"
