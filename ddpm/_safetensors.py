"""safetensors files, read and written by ddpm itself.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin,
end]}, "__metadata__": {str: str}}`` (padded with spaces), then the tensors' bytes,
little-endian and C-ordered, ``begin..end`` counted from the end of the header.

ddpm reads the format itself rather than through the ``safetensors`` package so
that

* the header is parsed and checked (names, shapes, dtypes, offsets that tile the
  data exactly, the data present in the file) before anything is allocated, so a
  caller can compare it with what a config promises first: a small file cannot
  make ddpm build a network far bigger than itself;
* tensors are read one at a time, straight into the caller's arrays;
* every problem is an OSError (not a safetensors file, truncated, unreadable) or
  a ValueError (an unsupported dtype, a tensor of the wrong shape or kind) whose
  message names the file and the tensor; FIFOs and devices are refused.

Writing (:func:`write_safetensors`) produces what ``safetensors.numpy.save_file``
produces (same header order and padding; the tests compare the bytes), from the
arrays' own memory, so a full disk is a plain OSError.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from ._io import loads_json, open_regular, read_exactly

__all__ = ["SafetensorsFile", "write_safetensors", "FLOAT_DTYPES", "MAX_HEADER_BYTES"]

#: The safetensors package's own limit on the header.
MAX_HEADER_BYTES = 100_000_000
#: dtype code -> bytes per value, for every code of the format that has whole bytes
#: (the safetensors package's order, which its writer sorts by, largest first).
_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2,
          "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8,
          "I64": 8, "U64": 8}
_RANK = {code: i for i, code in enumerate(_SIZES)}
#: The codes ddpm reads as floats (BF16 widened by hand: NumPy has no bfloat16).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_NUMPY = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2", "U8": "u1", "I8": "i1",
          "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8",
          "BOOL": "?"}
_CODE = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64"}


class TensorInfo(NamedTuple):
    dtype: str          # the format's code, "F32"
    shape: tuple        # of ints >= 0
    begin: int          # byte offsets into the data section
    end: int


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class SafetensorsFile:
    """An open safetensors file whose header has been checked; read tensors by name.

    ``with SafetensorsFile(path, "UNet.load") as st:`` then ``st.tensors`` (name ->
    :class:`TensorInfo`), ``st.metadata`` (str -> str) and ``st.read(name)``.

    Raises
    ------
    OSError
        Missing, not a regular file, truncated, or not a safetensors file.
    ValueError
        Over ``max_bytes``.
    """

    def __init__(self, path, func: str, *, what: str = "safetensors file",
                 max_bytes: int | None = None):
        self.path = os.fspath(path)
        self.func = func
        self._f, size = open_regular(self.path, func, what, max_bytes)
        try:
            self._parse(size)
        except BaseException:
            self._f.close()
            raise

    def _bad(self, why):
        return OSError(f"{self.func}(): {self.path} is not a readable safetensors file "
                       f"(truncated or corrupt?): {why}")

    def _parse(self, size):
        if size < 8:
            raise self._bad(f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(read_exactly(self._f, 8, self.path, self.func, "header"), "little")
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise self._bad(f"the header claims {n:,} bytes; the file has {size - 8:,} after "
                            f"the length")
        raw = read_exactly(self._f, n, self.path, self.func, "header")
        if not raw.startswith(b"{"):
            raise self._bad("the header is not a JSON object")
        header = loads_json(raw, self.func, f"the header of {self.path}")
        if not isinstance(header, dict):
            raise self._bad("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise self._bad("__metadata__ must map strings to strings")
        tensors = {}
        for name, spec in header.items():
            if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
                raise self._bad(f"tensor {name!r}: the entry must hold dtype, shape and "
                                f"data_offsets")
            code, shape, offs = spec["dtype"], spec["shape"], spec["data_offsets"]
            if not isinstance(code, str) or not isinstance(shape, list) or \
                    not all(_is_count(d) for d in shape) or not isinstance(offs, list) or \
                    len(offs) != 2 or not all(_is_count(o) for o in offs) or offs[0] > offs[1]:
                raise self._bad(f"tensor {name!r}: malformed dtype, shape or data_offsets")
            if code in _SIZES:              # whole-byte codes: the byte count must agree
                count = 1
                for d in shape:
                    count *= d
                if count * _SIZES[code] != offs[1] - offs[0]:
                    raise self._bad(f"tensor {name!r}: shape {shape} of {code} needs "
                                    f"{count * _SIZES[code]:,} bytes, data_offsets give "
                                    f"{offs[1] - offs[0]:,}")
            tensors[name] = TensorInfo(code, tuple(shape), offs[0], offs[1])
        # the tensors tile the data section exactly: no gap, no overlap, nothing after
        pos = 0
        for info in sorted(tensors.values(), key=lambda i: (i.begin, i.end)):
            if info.begin != pos:
                raise self._bad("data_offsets leave a gap or overlap")
            pos = info.end
        if pos != size - 8 - n:
            raise self._bad(f"the tensors need {pos:,} bytes of data, the file holds "
                            f"{size - 8 - n:,}")
        self.metadata = dict(meta)
        self.tensors = tensors
        self._data = 8 + n

    # -------------------------------------------------------------- reading
    def check_float(self, name: str, shape=None) -> TensorInfo:
        """The entry of a tensor that must be floats (and of ``shape``, when given):
        ValueError naming it otherwise (or when it is missing)."""
        info = self.tensors.get(name)
        if info is None:
            raise ValueError(f"{self.func}(): {self.path} has no tensor {name!r}")
        if info.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{self.func}(): tensor {name!r} in {self.path} has dtype "
                             f"{info.dtype}; ddpm reads weights stored as "
                             f"{', '.join(FLOAT_DTYPES)}")
        if shape is not None and info.shape != tuple(shape):
            raise ValueError(f"{self.func}(): tensor {name!r} in {self.path} has shape "
                             f"{info.shape}, expected {tuple(shape)}")
        return info

    def read(self, name: str, out=None, *, dtype=np.float32, finite: bool = True) -> np.ndarray:
        """Tensor ``name`` as ``dtype`` (float32 or float64; into ``out``, an array of its
        size, if given).  ValueError if it is not floats, or (``finite``) holds NaN or Inf."""
        info = self.check_float(name)
        raw = np.empty(info.shape, np.dtype(_NUMPY[info.dtype]))
        self._f.seek(self._data + info.begin)
        got = self._f.readinto(memoryview(raw).cast("B")) if raw.nbytes else 0
        if got != raw.nbytes:
            raise self._bad(f"tensor {name!r}: {got:,} of {raw.nbytes:,} bytes")
        if info.dtype == "BF16":             # bfloat16: the top half of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        if out is None:
            out = np.empty(info.shape, dtype)
        dst = out.reshape(info.shape)
        with np.errstate(over="ignore"):      # float64 beyond float32 becomes Inf: refused
            dst[...] = raw
        if finite and not np.isfinite(dst).all():
            raise ValueError(f"{self.func}(): tensor {name!r} in {self.path} holds NaN or Inf")
        return out

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write float16/32/64 arrays (and string metadata) as one safetensors file.

    The layout is safetensors' own (tensors by dtype, largest first, then by name;
    header padded with spaces to a multiple of 8).  The arrays are written from
    their own memory (little-endian, C order), without a copy when they already are.
    """
    arrays = {}
    for name, arr in tensors.items():
        a = np.asarray(arr)
        code = _CODE.get(a.dtype.newbyteorder("<"))
        if code is None:
            raise TypeError(f"write_safetensors(): {name} has dtype {a.dtype}; "
                            f"float16/32/64 only")
        arrays[str(name)] = (code, np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")))
    order = sorted(arrays, key=lambda k: (-_RANK[arrays[k][0]], k))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): metadata[k] for k in sorted(metadata)}
    pos = 0
    for name in order:
        code, a = arrays[name]
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [pos, pos + a.nbytes]}
        pos += a.nbytes
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name in order:
            a = arrays[name][1]
            if a.nbytes:
                f.write(memoryview(a).cast("B"))
