"""Data for the lessons: Fashion-MNIST / MNIST from IDX files, and procedural toys.

Real data
---------
:func:`fashion_mnist` and :func:`mnist` read the IDX format (gzip or raw),
validating magic number, dimensions and sizes, and return float32 images in
[-1, 1] shaped (N, 1, 28, 28) with uint8 labels.  Files are looked up, in
order, in: ``path=``, ``$DDPM_DATA``, ``~/.cache/ddpm/<name>``, and Debian's
``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``).
Where none has them and ``download=True``, the canonical files are fetched
into the cache and checked against their published MD5 before use.

Your own images
---------------
:func:`image_folder` reads every PNG/JPEG under a folder (recursively),
centre-crops and resizes it to a square, as grayscale or RGB, on the same
8-bit grid and in the same layout as the loaders above.

Procedural data
---------------
The course's 28x28 T-shirt silhouette, checkerboard and circle patterns, and
2-D toy distributions (Gaussian mixture, two moons), all generated in code.
"""
from __future__ import annotations

import gzip
import hashlib
import numbers
import os
import stat
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from . import _io

__all__ = ["fashion_mnist", "mnist", "image_folder", "load_image", "IMAGE_EXTENSIONS", "read_idx", "find_dataset",
           "FASHION_MNIST_CLASSES", "MNIST_CLASSES",
           "tshirt", "checkerboard", "circle", "gaussian_mixture", "two_moons"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}

# Published MD5 of the canonical .gz files (as torchvision and the datasets'
# own pages list them): a download is used only if it matches.
_SOURCES = {
    "fashion-mnist": {
        "urls": ["https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
        "md5": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        "debian": "/usr/share/datasets/fashion-mnist",
        "apt": "dataset-fashion-mnist",
    },
    "mnist": {
        "urls": ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
        "md5": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        "debian": "/usr/share/datasets/mnist",
        "apt": None,
    },
}

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MAX_IDX_BYTES = 1 << 31
# deflate's best case is 1032 output bytes per input byte: a gzip stream of n bytes
# cannot honestly hold more than about 1032 n
_GZIP_MAX_RATIO = 1032
_READ_CHUNK = 1 << 22


def _idx_header(f, path):
    """(dims as Python ints, dtype, header bytes) from the start of an IDX stream."""
    magic = f.read(4)
    if len(magic) != 4:
        raise OSError(f"{path}: truncated IDX file (no header)")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in _DTYPES or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: not an IDX file (bad magic number 0x{magic.hex()})")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) != 4 * ndim:
        raise OSError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in struct.unpack(">" + "I" * ndim, dims_raw))
    return dims, np.dtype(_DTYPES[code]), 4 + 4 * ndim


def read_idx(path, *, max_bytes: int = _MAX_IDX_BYTES, check=None) -> np.ndarray:
    """Read one IDX file (raw or gzip) and return its array.

    Sizes are computed with Python ints from the header, which is checked
    against what the file can hold before anything is allocated: a raw file
    must be exactly header + data long, a gzip file cannot declare more than
    deflate's best ratio (1032:1) allows.  The data is then read in bounded
    chunks and reading stops at the declared size, so memory follows the data
    actually present.  Pipes, devices and folders are refused.

    Parameters
    ----------
    max_bytes : int
        Refuse a header declaring more data than this (default 2 GiB).
    check : callable, optional
        ``check(dims, dtype)`` runs after the header is read and before the data
        is: a loader refuses shapes it does not want there.

    Raises
    ------
    OSError
        Missing or non-regular file, truncated or corrupt gzip stream, or fewer
        bytes than the header announces.
    ValueError
        Bad magic number, unknown type code, absurd dimensions, trailing data.
    """
    path = os.fspath(path)
    f, size = _io.open_regular(path, "read_idx", "IDX file", max_bytes + (1 << 20))
    with f:
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
            with stream:
                dims, dtype, hdr = _idx_header(stream, path)
                count = 1
                for d in dims:
                    count *= d
                nbytes = count * dtype.itemsize
                if nbytes > max_bytes:
                    raise ValueError(f"{path}: IDX dimensions {dims} are implausibly large "
                                     f"({nbytes:,} bytes; the limit is {max_bytes:,})")
                if check is not None:
                    check(dims, dtype)
                if not gz and size < hdr + nbytes:
                    raise OSError(f"{path}: truncated IDX data ({size - hdr:,} of {nbytes:,} "
                                  f"bytes)")
                if not gz and size > hdr + nbytes:
                    raise ValueError(f"{path}: trailing bytes after the IDX data of shape {dims}")
                if gz and hdr + nbytes > _GZIP_MAX_RATIO * size:
                    raise ValueError(f"{path}: the IDX header declares {nbytes:,} bytes, more "
                                     f"than a {size:,}-byte gzip file can hold")
                data = _read_bounded(stream, nbytes, path)
                if stream.read(1):
                    raise ValueError(f"{path}: trailing bytes after the IDX data of shape {dims}")
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise OSError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    arr = data.view(dtype).reshape(dims)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def _read_bounded(stream, nbytes: int, path) -> np.ndarray:
    """Exactly nbytes from stream as uint8, read in chunks of at most _READ_CHUNK bytes;
    memory grows with the bytes that actually arrive.  OSError if the stream ends first."""
    parts, got = [], 0
    while got < nbytes:
        chunk = stream.read(min(_READ_CHUNK, nbytes - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    if got != nbytes:
        raise OSError(f"{path}: truncated IDX data ({got:,} of {nbytes:,} bytes)")
    out = np.empty(nbytes, np.uint8)
    pos = 0
    while parts:                     # hand each chunk over and drop it: peak ~ nbytes + chunk
        chunk = parts.pop(0)
        out[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    return out


def _candidates(name: str, path=None):
    if path is not None:
        yield Path(path)
        return
    env = os.environ.get("DDPM_DATA")
    if env:
        yield Path(env) / name
        yield Path(env)
    yield Path.home() / ".cache" / "ddpm" / name
    deb = _SOURCES[name]["debian"]
    if deb:
        yield Path(deb)


def _find_file(folder: Path, stem: str):
    for suffix in (".gz", ""):
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    return None


def find_dataset(name: str, split: str, path=None):
    """Paths of the (images, labels) IDX files of a split, or None."""
    img, lab, _ = _FILES[split]
    for folder in _candidates(name, path):
        pi, pl = _find_file(folder, img), _find_file(folder, lab)
        if pi and pl:
            return pi, pl
    return None


def _download(name: str, split: str) -> tuple:
    src = _SOURCES[name]
    cache = Path.home() / ".cache" / "ddpm" / name
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for stem in _FILES[split][:2]:
        fname = stem + ".gz"
        target = cache / fname
        if target.is_file():
            out.append(target)
            continue
        last = None
        for base in src["urls"]:
            try:
                with urllib.request.urlopen(base + fname, timeout=30) as r:
                    blob = r.read(64 << 20)
            except OSError as exc:
                last = exc
                continue
            digest = hashlib.md5(blob).hexdigest()
            if digest != src["md5"][fname]:
                last = OSError(f"checksum mismatch for {base + fname}: {digest}")
                continue
            _io.atomic_write(target, lambda tmp: Path(tmp).write_bytes(blob))
            break
        else:
            raise OSError(f"could not download {fname}: {last}")
        out.append(target)
    return tuple(out)


def _load(name: str, split: str, path, download: bool):
    if split not in _FILES:
        raise ValueError(f"{name}(): split must be 'train' or 'test', got {split!r}")
    found = find_dataset(name, split, path)
    reason = ""
    if found is None and path is None and download:
        try:
            found = _download(name, split)
        except OSError as exc:
            found = None
            reason = f" (download failed: {exc})"
    if found is None:
        where = [str(p) for p in _candidates(name, path)]
        apt = _SOURCES[name]["apt"]
        hint = f" On Debian/Ubuntu: sudo apt-get install {apt}." if apt else ""
        raise FileNotFoundError(
            f"{name} {split} files not found in {where}{reason}.{hint} Or put the four "
            f"IDX files in a folder and pass path= or set DDPM_DATA.")
    n_expected = _FILES[split][2]

    def check_labels(dims, dtype):          # the shapes are checked before the data is read
        if len(dims) != 1 or dtype != np.uint8:
            raise ValueError(f"{found[1]}: expected uint8 labels of shape (N,), got {dtype} "
                             f"{dims}")

    def check_images(dims, dtype):
        if len(dims) != 3 or dims[1:] != (28, 28) or dtype != np.uint8:
            raise ValueError(f"{found[0]}: expected uint8 images of shape (N, 28, 28), "
                             f"got {dtype} {dims}")
        if path is None and dims[0] != n_expected:
            raise ValueError(f"{name} {split}: expected {n_expected} images, got {dims[0]}")
        if dims[0] != labels.shape[0]:
            raise ValueError(f"{name} {split}: {dims[0]} images but {labels.shape[0]} labels")

    labels = read_idx(found[1], check=check_labels)
    if labels.size and labels.max() > 9:
        raise ValueError(f"{found[1]}: labels must be 0..9, found {int(labels.max())}")
    images = read_idx(found[0], check=check_images)
    x = np.empty((images.shape[0], 1, 28, 28), np.float32)    # in place: no float temporaries
    x[:, 0] = images
    del images
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x, labels.copy()


def fashion_mnist(split: str = "train", *, path=None, download: bool = True):
    """Fashion-MNIST images in [-1, 1] and labels.

    Returns
    -------
    images : ndarray float32, (N, 1, 28, 28), in [-1, 1]
    labels : ndarray uint8, (N,), class index (see FASHION_MNIST_CLASSES)

    Examples
    --------
    >>> x, y = fashion_mnist("test")          # doctest: +SKIP
    >>> x.shape, x.min(), x.max()             # doctest: +SKIP
    ((10000, 1, 28, 28), -1.0, 1.0)
    """
    return _load("fashion-mnist", split, path, download)


def mnist(split: str = "train", *, path=None, download: bool = True):
    """MNIST digits, same layout as :func:`fashion_mnist`."""
    return _load("mnist", split, path, download)


# ---------------------------------------------------------------------- image folders
#: File endings :func:`image_folder` reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_MAX_FILE_BYTES = 64 << 20          # one image file
_MAX_PIXELS = 50_000_000            # one decoded image (Pillow's own bomb check is at 179M)
_MAX_DATA_BYTES = 8 << 30           # the returned array


def _image_files(root: Path):
    """Sorted image paths under root; hidden folders and files are skipped, symlinked
    folders are not followed (no loops)."""
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(folder) / name)
    return sorted(out, key=lambda p: p.relative_to(root).parts)


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One file as uint8 (size, size) or (size, size, 3): centre crop + resize (Pillow)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    st = os.stat(path)                  # follows a symlinked file to what it points at
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"image_folder(): {path} is not a regular file (a device, pipe or "
                      f"socket); refusing to read it")
    if st.st_size > _MAX_FILE_BYTES:
        raise ValueError(f"image_folder(): {path} is {st.st_size / 2**20:.0f} MiB, over the "
                         f"{_MAX_FILE_BYTES >> 20} MiB limit for one image")
    try:
        with Image.open(path) as img:
            if img.format not in ("PNG", "JPEG", "MPO"):
                raise OSError(f"it is {img.format}, not PNG or JPEG")
            w, h = img.size
            if w * h > _MAX_PIXELS:
                raise ValueError(f"image_folder(): {path} has {w}x{h} pixels, over the "
                                 f"{_MAX_PIXELS:,}-pixel limit")
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")    # transparent pixels become white
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            img = img.convert("L" if channels == 1 else "RGB")
            img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise OSError(f"image_folder(): cannot read {path}: {exc}") from exc


def load_image(path, *, image_size: int, channels: int) -> np.ndarray:
    """One PNG/JPEG file as float32 (channels, image_size, image_size) in [-1, 1]: centre crop
    and bicubic resize, grayscale or RGB, as :func:`image_folder` reads each file (the CLI's
    ``inpaint`` and ``img2img`` read their images with it).

    >>> x = load_image("photo.png", image_size=28, channels=1)      # doctest: +SKIP
    """
    F = "load_image"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{F}(): path must be a file path, got {type(path).__name__}")
    for name, v in (("image_size", image_size), ("channels", channels)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{F}(): {name} must be an int, got {type(v).__name__}")
    if not 4 <= image_size <= 1024 or channels not in (1, 3):
        raise ValueError(f"{F}(): image_size must be in 4..1024 and channels 1 or 3")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{F}(): no file {p}")
    a = _read_image(p, int(image_size), int(channels))
    x = (a[None] if channels == 1 else a.transpose(2, 0, 1)).astype(np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def image_folder(path, *, image_size: int = 32, channels: int = 3, limit: int | None = None):
    """Your own images: every PNG/JPEG under ``path``, as training data.

    Files are found recursively (sorted by path; hidden files and folders are
    skipped, symlinked folders are not followed), turned upright by their EXIF
    orientation, flattened onto white where transparent, converted to
    grayscale or RGB, centre-cropped to a square and resized to
    ``image_size`` (bicubic, Pillow's ``ImageOps.fit``), then mapped to the
    8-bit grid k/127.5 - 1 as the other loaders are.

    Parameters
    ----------
    path : str or os.PathLike
        A folder.
    image_size : int
        Side S of the square output, 4..1024.
    channels : {1, 3}
        1 for grayscale, 3 for RGB.
    limit : int, optional
        Read only the first ``limit`` files (in sorted order).

    Returns
    -------
    images : ndarray float32, (N, channels, S, S), in [-1, 1]
    labels : ndarray int64, (N,)
        The index of each file's first-level subfolder among the sorted names of
        the first-level subfolders that hold images (files directly in ``path``
        count as a folder named ""), as torchvision's ImageFolder numbers classes.

    Raises
    ------
    FileNotFoundError
        ``path`` is missing or holds no PNG/JPEG file.
    NotADirectoryError
        ``path`` is a file.
    OSError
        A file that is not a regular file, or that Pillow cannot decode (the
        file is named).
    ValueError, TypeError
        Bad arguments, or a file over the size limits (64 MiB, 50 M pixels).
    MemoryError
        The result would exceed 8 GiB.

    Examples
    --------
    >>> x, y = image_folder("my_photos", image_size=32, channels=3)   # doctest: +SKIP
    >>> x.shape, x.dtype, float(x.min()) >= -1, float(x.max()) <= 1   # doctest: +SKIP
    ((120, 3, 32, 32), dtype('float32'), True, True)
    """
    F = "image_folder"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{F}(): path must be a folder path, got {type(path).__name__}")
    for name, v in (("image_size", image_size), ("channels", channels)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{F}(): {name} must be an int, got {type(v).__name__}")
    if not 4 <= image_size <= 1024:
        raise ValueError(f"{F}(): image_size must be in 4..1024, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"{F}(): channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
            raise TypeError(f"{F}(): limit must be an int or None, got {type(limit).__name__}")
        if limit < 1:
            raise ValueError(f"{F}(): limit must be >= 1, got {limit}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{F}(): no folder {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{F}(): {root} is a file, not a folder of images")
    files = _image_files(root)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"{F}(): no PNG or JPEG files ({', '.join(IMAGE_EXTENSIONS)}) "
                                f"under {root}")
    S, C = int(image_size), int(channels)
    nbytes = len(files) * C * S * S * 4
    if nbytes > _MAX_DATA_BYTES:
        raise MemoryError(f"{F}(): {len(files)} images of {C}x{S}x{S} need "
                          f"{nbytes / 2**30:.1f} GiB (limit {_MAX_DATA_BYTES >> 30} GiB); "
                          f"pass limit= or a smaller image_size")
    folders = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else ""
               for p in files]
    classes = {name: i for i, name in enumerate(sorted(set(folders)))}
    images = np.empty((len(files), C, S, S), np.float32)
    for i, p in enumerate(files):
        a = _read_image(p, S, C)
        images[i] = (a[None] if C == 1 else a.transpose(2, 0, 1)).astype(np.float32)
    images /= np.float32(127.5)
    images -= np.float32(1.0)
    return images, np.array([classes[f] for f in folders], dtype=np.int64)


# ---------------------------------------------------------------------- procedural
def tshirt(size: int = 28) -> np.ndarray:
    """The course's T-shirt silhouette: (1, size, size) float32 in [-1, 1].

    Background -1, shirt +1, a slightly darker collar band, built from a
    torso rectangle, two slanted sleeves and a scooped neckline.
    """
    s = size / 28.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / s
    torso = (xx >= 8) & (xx <= 19) & (yy >= 6) & (yy <= 25)
    # sleeves: from the shoulders (y 6..8) down and out to the cuffs
    left = (yy >= 6) & (yy <= 14) & (xx >= 3 + (14 - yy) * 0.1) & (xx <= 8) \
        & (yy - 6 >= (8 - xx) * 0.55 - 0.5)
    right = (yy >= 6) & (yy <= 14) & (xx <= 24 - (14 - yy) * 0.1) & (xx >= 19) \
        & (yy - 6 >= (xx - 19) * 0.55 - 0.5)
    shirt = torso | left | right
    neck = ((xx - 13.5) ** 2 / 9.0 + (yy - 5.0) ** 2 / 6.0) <= 1.0
    collar = (((xx - 13.5) ** 2 / 12.0 + (yy - 5.0) ** 2 / 9.0) <= 1.0) & ~neck & shirt
    img = np.where(shirt & ~neck, 1.0, -1.0)
    img = np.where(collar, 0.4, img)
    return img[None].astype(np.float32)


def checkerboard(size: int = 28, squares: int = 4) -> np.ndarray:
    """(1, size, size) float32 checkerboard of +-1 with squares x squares cells."""
    idx = (np.arange(size) * squares) // size
    board = (idx[:, None] + idx[None, :]) % 2
    return (board * 2.0 - 1.0)[None].astype(np.float32)


def circle(size: int = 28, radius: float = 0.6) -> np.ndarray:
    """(1, size, size) float32 filled circle (+1) on -1, radius as a fraction of half the size."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (yy - c) ** 2 + (xx - c) ** 2 <= (radius * size / 2.0) ** 2
    return np.where(inside, 1.0, -1.0)[None].astype(np.float32)


def gaussian_mixture(n: int, *, centers=None, std: float = 0.1, seed: int = 0):
    """n points (n, 2) float32 from a mixture of isotropic Gaussians (default: 8 on a circle)."""
    rng = np.random.default_rng(seed)
    if centers is None:
        ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        centers = np.stack([np.cos(ang), np.sin(ang)], 1)
    centers = np.asarray(centers, dtype=np.float64)
    k = rng.integers(0, len(centers), size=n)
    return (centers[k] + std * rng.standard_normal((n, 2))).astype(np.float32)


def two_moons(n: int, *, noise: float = 0.05, seed: int = 0):
    """n points (n, 2) float32 on two interleaved half circles, scaled to about [-1, 1]."""
    rng = np.random.default_rng(seed)
    n1 = n // 2
    a = rng.uniform(0, np.pi, n1)
    b = rng.uniform(0, np.pi, n - n1)
    top = np.stack([np.cos(a), np.sin(a)], 1)
    bottom = np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)
    pts = np.concatenate([top, bottom]) + noise * rng.standard_normal((n, 2))
    pts = (pts - [0.5, 0.25]) / 1.25
    return pts[rng.permutation(n)].astype(np.float32)
