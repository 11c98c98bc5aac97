"""The denoiser eps_theta(x_t, t): a U-Net that is diffusers' ``UNet2DModel`` (lesson 6-2-3).

"Same building blocks, different question": the network is a plain image-to-image
U-Net that also sees the timestep.  :class:`UNet` computes exactly what
``diffusers.UNet2DModel`` computes for the supported subset (same parameter
names and shapes, forward within 1e-5 on the same weights), with forward and
backward passes in C.  Weights move both ways: :meth:`UNet.save` writes the
diffusers layout (``config.json`` + ``diffusion_pytorch_model.safetensors``),
:meth:`UNet.load` and :meth:`UNet.from_diffusers` read it.

Time input: the network takes diffusers' 0-based time value (``t - 1`` for the
lessons' 1-based t); :class:`ddpm.NoiseSchedule.model_timestep` is the one place
that translates.
"""
from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

from . import _core
from ._checks import as_float32_batch, as_int
from ._registry import _resolve_pretrained, _save_dtype
from ._io import VERSION, atomic_write, new_dirs, read_json_object, write_text
from ._safetensors import SafetensorsFile, write_safetensors

__all__ = ["UNet", "SMALL_CONFIG", "DIFFUSERS_DEFAULTS"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"

#: diffusers' UNet2DModel defaults (used for keys a config.json leaves out).
DIFFUSERS_DEFAULTS = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2,
    "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv",
    "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8,
    "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}

#: The small default for 28x28 grayscale images (Fashion-MNIST): 3.9M parameters,
#: attention only at 7x7 and in the middle.  The reference config of the benchmarks.
SMALL_CONFIG = {
    "sample_size": 28, "in_channels": 1, "out_channels": 1,
    "block_out_channels": (32, 64, 128), "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8, "attention_head_dim": 8, "num_train_timesteps": 1000,
}

# Keys we accept only at one value (what UNet2DModel does by default).
_FIXED = {
    "center_input_sample": False, "time_embedding_type": "positional",
    "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
    "act_fn": "silu", "resnet_time_scale_shift": "default", "class_embed_type": None,
    "dropout": 0.0,
}
# ddpm's own config keys (diffusers ignores unknown keys when it loads our folders):
# class_names lists the names of classes 0..K-2 of a class-conditional model (K-1 is the
# reserved null label, "no class", which classifier-free guidance uses).
EXTRA_KEYS = {"class_names": None}
_DOWN = {"DownBlock2D": 0, "AttnDownBlock2D": 1}
# diffusers' module registration order, which its state_dict follows; the C
# layout differs (q, k, v weights sit side by side for one GEMM)
_ORDER = {name: i for i, name in enumerate((
    "conv_in", "time_embedding", "class_embedding", "down_blocks", "up_blocks", "mid_block", "conv_norm_out",
    "conv_out", "attentions", "resnets", "downsamplers", "upsamplers", "linear_1", "linear_2",
    "group_norm", "to_q", "to_k", "to_v", "to_out", "norm1", "conv1", "time_emb_proj", "norm2",
    "conv2", "conv_shortcut", "conv", "weight", "bias"))}


def _diffusers_order(name: str):
    return tuple(int(p) if p.isdigit() else _ORDER.get(p, 99) for p in name.split("."))
_UP = {"UpBlock2D": 0, "AttnUpBlock2D": 1}


def _as_bool(config, key, F):
    """A config flag: True or False only (a JSON string "false" is not False)."""
    v = config[key]
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{F}(): {key} must be true or false, got {v!r}")
    return bool(v)


def _normalise_config(config: dict) -> dict:
    """Validate a full config dict (every key present); returns a clean copy."""
    F = "UNet"
    cfg = {}
    unknown = sorted(map(str, set(config) - set(DIFFUSERS_DEFAULTS) - set(EXTRA_KEYS)))
    if unknown:
        raise ValueError(f"{F}(): unknown config key(s) {unknown}")
    for key, want in _FIXED.items():
        got = config[key]
        same = (got == want) if not isinstance(want, float) else (
            isinstance(got, numbers.Real) and float(got) == want)
        if not same:
            what = "dropout > 0" if key == "dropout" else f"{key}={got!r}"
            raise ValueError(f"{F}(): {what} is not supported (only {key}={want!r})")
        cfg[key] = want

    def pos_int(key, lo=1, hi=1 << 20):
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{F}(): {key} must be an int, got {v!r}")
        if not lo <= int(v) <= hi:
            raise ValueError(f"{F}(): {key} must be in {lo}..{hi}, got {v}")
        return int(v)

    if config["sample_size"] is None:
        raise ValueError(f"{F}(): sample_size must be given (an int: images are square)")
    cfg["sample_size"] = pos_int("sample_size", 1, 4096)
    cfg["in_channels"] = pos_int("in_channels", 1, 64)
    cfg["out_channels"] = pos_int("out_channels", 1, 64)
    cfg["layers_per_block"] = pos_int("layers_per_block", 1, 4)
    cfg["norm_num_groups"] = pos_int("norm_num_groups", 1, 4096)
    boc = config["block_out_channels"]
    if isinstance(boc, (str, bytes)) or not hasattr(boc, "__len__"):
        raise TypeError(f"{F}(): block_out_channels must be a sequence of ints")
    boc = tuple(boc)
    if not 1 <= len(boc) <= 6:
        raise ValueError(f"{F}(): block_out_channels must have 1 to 6 levels, got {len(boc)}")
    for c in boc:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 1 <= c <= 4096:
            raise ValueError(f"{F}(): block_out_channels entries must be ints in 1..4096, got {c!r}")
        if c % cfg["norm_num_groups"]:
            raise ValueError(f"{F}(): block_out_channels {c} is not divisible by "
                             f"norm_num_groups={cfg['norm_num_groups']}")
    cfg["block_out_channels"] = tuple(int(c) for c in boc)
    L = len(boc)
    for key, table in (("down_block_types", _DOWN), ("up_block_types", _UP)):
        if not isinstance(config[key], (list, tuple)):
            raise TypeError(f"{F}(): {key} must be a list of block names, got {config[key]!r}")
        types = tuple(config[key])
        if len(types) != L:
            raise ValueError(f"{F}(): {key} needs one entry per level ({L}), got {len(types)}")
        for t in types:
            if not isinstance(t, str) or t not in table:
                raise ValueError(f"{F}(): {key} entry {t!r} is not supported "
                                 f"(supported: {sorted(table)})")
        cfg[key] = types
    anng = config["attn_norm_num_groups"]
    if anng is not None and anng != cfg["norm_num_groups"]:
        raise ValueError(f"{F}(): attn_norm_num_groups={anng!r} is not supported "
                         f"(only None, i.e. norm_num_groups)")
    cfg["attn_norm_num_groups"] = None
    eps = config["norm_eps"]
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < 1:
        raise ValueError(f"{F}(): norm_eps must be a number in (0, 1), got {eps!r}")
    cfg["norm_eps"] = float(eps)
    hd = config["attention_head_dim"]
    if hd is not None and (isinstance(hd, bool) or not isinstance(hd, numbers.Integral)
                           or not 1 <= hd <= 4096):
        raise ValueError(f"{F}(): attention_head_dim must be an int in 1..4096 or None, "
                         f"got {hd!r}")
    cfg["attention_head_dim"] = None if hd is None else int(hd)
    cfg["add_attention"] = _as_bool(config, "add_attention", F)
    nts = config["num_train_timesteps"]
    if nts is not None:
        if isinstance(nts, bool) or not isinstance(nts, numbers.Integral) or \
                not 1 <= nts <= 2 ** 31 - 1:
            raise ValueError(f"{F}(): num_train_timesteps must be an int in 1..2**31-1 or None, "
                             f"got {nts!r}")
        nts = int(nts)
    cfg["num_train_timesteps"] = nts
    K = config["num_class_embeds"]
    if K is not None:
        if isinstance(K, bool) or not isinstance(K, numbers.Integral) or not 2 <= K <= 1_000_000:
            raise ValueError(f"{F}(): num_class_embeds must be None or an int in 2..1000000 "
                             f"(the classes and one null label), got {K!r}")
        K = int(K)
    cfg["num_class_embeds"] = K
    names = config.get("class_names")
    if names is not None:
        if K is None:
            raise ValueError(f"{F}(): class_names given without num_class_embeds")
        if (isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple))
                or len(names) != K - 1 or not all(isinstance(n, str) and n for n in names)):
            raise ValueError(f"{F}(): class_names must be {K - 1} non-empty strings (one per "
                             f"class; label {K - 1} is the null label)")
        if len(set(names)) != len(names):
            raise ValueError(f"{F}(): class_names must be distinct")
        names = tuple(str(n) for n in names)
    cfg["class_names"] = names
    if cfg["sample_size"] % (2 ** (L - 1)):
        raise ValueError(f"{F}(): sample_size={cfg['sample_size']} must be divisible by "
                         f"2**(levels - 1) = {2 ** (L - 1)}")
    return cfg


class UNet:
    """diffusers' ``UNet2DModel`` computed by ddpm's C engine.

    Parameters
    ----------
    **config
        ``UNet2DModel`` config keys: ``sample_size``, ``in_channels``,
        ``out_channels``, ``block_out_channels``, ``layers_per_block``,
        ``down_block_types`` (``DownBlock2D``/``AttnDownBlock2D``),
        ``up_block_types`` (``UpBlock2D``/``AttnUpBlock2D``), ``norm_num_groups``,
        ``norm_eps``, ``attention_head_dim``, ``add_attention``, ``dropout`` (0 only),
        ``num_train_timesteps``, ``num_class_embeds`` (K: classes 0..K-2 plus the null
        label K-1, an embedding added to the time embedding as diffusers does) and
        ddpm's ``class_names`` (K-1 names).  Keys you leave out take the small 28x28
        grayscale default :data:`SMALL_CONFIG` (3.9M parameters).  Other
        UNet2DModel keys are accepted at their default value and refused
        otherwise, with the key named.
    seed : int
        Seed of the initialisation (PyTorch's defaults: uniform(+-1/sqrt(fan_in))
        for convolution and linear weights and biases, ones/zeros for norms).

    Attributes
    ----------
    config : dict
        The full UNet2DModel config.
    params, grads : ndarray, float32, (num_parameters,)
        All parameters (and their gradients) in one flat buffer each; the
        named tensors of :meth:`named_parameters` are views into them.

    Examples
    --------
    >>> import ddpm, numpy as np
    >>> net = ddpm.UNet(seed=0)
    >>> x = np.zeros((2, 1, 28, 28), np.float32)
    >>> eps_hat = net(x, t=[0, 999])        # diffusers' time: t_lesson - 1
    >>> eps_hat.shape
    (2, 1, 28, 28)
    """

    def __init__(self, *, seed: int = 0, **config):
        full = dict(DIFFUSERS_DEFAULTS)
        full.update(EXTRA_KEYS)
        full.update(SMALL_CONFIG)
        full.update(config)
        self._build(_normalise_config(full))
        self.reset_parameters(seed)

    # ------------------------------------------------------------ construction
    def _build(self, cfg):
        self._layout(cfg)
        self._allocate()

    def _layout(self, cfg):
        """The C network and its table of named tensors; no parameter memory yet
        (a loader checks the weights file's header against ``_tensors`` first)."""
        self.config = cfg
        down = tuple(_DOWN[t] for t in cfg["down_block_types"])
        up = tuple(_UP[t] for t in cfg["up_block_types"])
        hd = cfg["attention_head_dim"] or 0
        self._handle = _core.unet_create(
            cfg["sample_size"], cfg["in_channels"], cfg["out_channels"],
            cfg["block_out_channels"], cfg["layers_per_block"], down, up,
            cfg["add_attention"], cfg["norm_num_groups"], cfg["norm_eps"], hd,
            cfg["num_class_embeds"] or 0)
        info = _core.unet_info(self._handle)
        self.num_parameters = int(info["num_parameters"])
        self._flops_per_image = float(info["flops_per_image"])
        self._tensors = sorted(((name, tuple(shape), off, size)
                                for name, shape, off, size in info["tensors"]),
                               key=lambda e: _diffusers_order(e[0]))

    def _allocate(self):
        self.params = np.zeros(self.num_parameters, dtype=np.float32)
        self.grads = np.zeros(self.num_parameters, dtype=np.float32)
        self._generation = None       # the number of this object's last forward
        self._replay = None           # a chunked forward's inputs, for backward

    def reset_parameters(self, seed: int = 0) -> None:
        """Re-initialise every parameter as PyTorch does by default."""
        rng = np.random.default_rng(as_int(seed, "seed", "reset_parameters", lo=0))
        fan_in = {}
        for name, shape, off, size in self._tensors:
            if name.endswith(".weight") and len(shape) >= 2:
                fan_in[name[:-len(".weight")]] = int(np.prod(shape[1:]))
        for name, shape, off, size in self._tensors:
            base, kind = name.rsplit(".", 1)
            view = self.params[off:off + size]
            if base == "class_embedding":   # nn.Embedding: N(0, 1)
                view[:] = rng.standard_normal(size).astype(np.float32)
            elif base in fan_in:
                bound = 1.0 / math.sqrt(fan_in[base])
                view[:] = rng.uniform(-bound, bound, size).astype(np.float32)
            elif kind == "weight":      # normalisation scale
                view[:] = 1.0
            else:                       # normalisation shift
                view[:] = 0.0

    # -------------------------------------------------------------- parameters
    def named_parameters(self):
        """(name, array view) pairs in diffusers' state_dict order and names."""
        for name, shape, off, size in self._tensors:
            yield name, self.params[off:off + size].reshape(shape)

    def named_grads(self):
        """(name, gradient view) pairs, like :meth:`named_parameters`."""
        for name, shape, off, size in self._tensors:
            yield name, self.grads[off:off + size].reshape(shape)

    def state_dict(self) -> dict:
        """{name: float32 view} (writing to a view changes the model)."""
        return dict(self.named_parameters())

    def load_state_dict(self, state: dict, *, strict: bool = True) -> None:
        """Copy tensors (NumPy arrays or anything np.asarray takes) into the model.

        All or nothing: every tensor is checked (names, shapes, floats, finite) before
        any is copied.  RuntimeError while another thread runs this model (a sampler
        in progress keeps the weights it started with).
        """
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict(): state must be a dict of arrays, got "
                            f"{type(state).__name__}")
        names = {n for n, *_ in self._tensors}
        missing = sorted(names - set(state))
        extra = sorted(set(state) - names)
        if strict and (missing or extra):
            raise ValueError(f"load_state_dict(): missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                             f", unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
        new = self.params.copy()
        for name, shape, off, size in self._tensors:
            if name not in state:
                continue
            arr = np.asarray(state[name])
            if tuple(arr.shape) != shape:
                raise ValueError(f"load_state_dict(): {name} has shape {tuple(arr.shape)}, "
                                 f"expected {shape}")
            if arr.dtype.kind != "f":
                raise TypeError(f"load_state_dict(): {name} has dtype {arr.dtype}, expected floats")
            with np.errstate(over="ignore"):    # float64 beyond float32: Inf, refused below
                arr = arr.astype(np.float32)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"load_state_dict(): {name} contains NaN or Inf")
            new[off:off + size] = arr.ravel()
        _core.unet_set_params(self._handle, self.params, new)

    def zero_grad(self) -> None:
        """Set every gradient to 0 (backward only ever adds)."""
        self.grads[:] = 0.0

    def flops(self, batch: int = 1) -> float:
        """Floating-point operations of one forward pass of ``batch`` images
        (a backward costs about twice that)."""
        return self._flops_per_image * as_int(batch, "batch", "flops", lo=0)

    # ------------------------------------------------------- forward, backward
    def _as_time(self, t, n):
        F = "UNet.forward"
        arr = np.asarray(t)
        if arr.dtype.kind not in "iuf" or arr.dtype == np.bool_:
            raise TypeError(f"{F}(): t must be numbers (the network's 0-based time), "
                            f"got dtype {arr.dtype}")
        if arr.ndim == 0:
            arr = np.full(n, arr, dtype=np.float64)
        elif arr.shape != (n,):
            raise ValueError(f"{F}(): t must be a scalar or have shape ({n},), got {arr.shape}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{F}(): t contains NaN or Inf")
        hi = self.config["num_train_timesteps"]
        if arr.min() < 0 or (hi is not None and arr.max() > hi - 1):
            top = f"{hi - 1}" if hi is not None else "inf"
            raise ValueError(f"{F}(): t must be in [0, {top}] (diffusers' 0-based time; "
                             f"lesson t maps to t - 1), got {arr.min() if arr.min() < 0 else arr.max()}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _check_images(self, x, name, channels, func):
        x = as_float32_batch(x, name, func)
        S = self.config["sample_size"]
        if x.ndim != 4 or x.shape[1:] != (channels, S, S):
            raise ValueError(f"{func}(): {name} must have shape (N, {channels}, {S}, {S}), "
                             f"got {x.shape}")
        return x

    @property
    def num_class_embeds(self):
        """K for a class-conditional model (classes 0..K-2 and the null label K-1), else None."""
        return self.config["num_class_embeds"]

    @property
    def class_names(self):
        """The names of classes 0..K-2 (from the config), or None."""
        return self.config["class_names"]

    def class_index(self, labels, n: int, func: str = "UNet") -> np.ndarray:
        """labels as an int64 array (n,) of class indices in 0..K-1 (K-1: the null label).

        ``labels`` is an index or class name (for all n images) or a sequence of n
        of them; names resolve through :attr:`class_names` (case-insensitive).
        """
        K = self.num_class_embeds
        if K is None:
            raise ValueError(f"{func}(): labels were given but the model is unconditional")
        def key(name):          # "T-shirt/top" answers to "t-shirt", "tshirt", "top", ...
            return "".join(ch for ch in name.lower() if ch.isalnum())

        names = {}
        for i, name in enumerate(self.class_names or ()):
            for alias in [name] + (name.split("/") if "/" in name else []):
                names.setdefault(key(alias), i)

        def one(v):
            if isinstance(v, str):
                i = names.get(key(v))
                if i is None:
                    known = ", ".join(self.class_names) if self.class_names else "none"
                    raise ValueError(f"{func}(): unknown class name {v!r} (classes: {known})")
                return i
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{func}(): labels must be ints or class names, got {v!r}")
            if not 0 <= int(v) < K:
                raise ValueError(f"{func}(): labels must be in 0..{K - 1} ({K - 1} is the null "
                                 f"label), got {int(v)}")
            return int(v)

        if isinstance(labels, (str, numbers.Integral)) or (
                isinstance(labels, np.ndarray) and labels.ndim == 0):
            return np.full(n, one(labels.item() if isinstance(labels, np.ndarray) else labels),
                           np.int64)
        if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
            arr = labels.reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"{func}(): labels must have one entry per image ({n}), "
                                 f"got shape {labels.shape}")
            if arr.size and (arr.min() < 0 or arr.max() >= K):
                raise ValueError(f"{func}(): labels must be in 0..{K - 1}, got "
                                 f"{int(arr.min())}..{int(arr.max())}")
            return np.ascontiguousarray(arr, dtype=np.int64)
        try:
            seq = list(labels)
        except TypeError:
            raise TypeError(f"{func}(): labels must be an int, a class name or a sequence of "
                            f"them, got {type(labels).__name__}") from None
        if len(seq) != n:
            raise ValueError(f"{func}(): labels must have one entry per image ({n}), got "
                             f"{len(seq)}")
        return np.array([one(v.item() if isinstance(v, np.generic) else v) for v in seq],
                        dtype=np.int64)

    def forward(self, x, t, class_labels=None, *, grad: bool = True) -> np.ndarray:
        """eps_theta(x, t): the network's output for images x at time t.

        Parameters
        ----------
        x : array (N, in_channels, S, S), float
        t : int/float or array (N,): diffusers' 0-based time (lesson t - 1)
        class_labels : labels, optional
            A class-conditional model needs one class per image (indices, names,
            or K-1 for the null label), as diffusers' ``class_labels``.
        grad : bool, keyword-only
            False when no :meth:`backward` follows (what ``torch.no_grad()`` is
            for in PyTorch): nothing is kept for one, and each GroupNorm + SiLU
            is folded into the convolution after it. The same numbers, bit for
            bit; :meth:`backward` then asks for a forward with ``grad=True``.

        Returns
        -------
        ndarray float32 (N, out_channels, S, S)

        More than ``ddpm._core.UNET_CHUNK`` (64) images run as chunks of that many,
        one after another, with Ctrl-C honoured between them; each image's result
        is what a call on its chunk alone gives (the same at any thread count).
        """
        F = "UNet.forward"
        x = self._check_images(x, "x", self.config["in_channels"], F)
        tt = self._as_time(t, x.shape[0])
        labels = None
        if class_labels is not None:
            labels = self.class_index(class_labels, x.shape[0], F)
        elif self.num_class_embeds is not None:
            raise ValueError(f"{F}(): this model is class-conditional: pass class_labels "
                             f"(one per image; {self.num_class_embeds - 1} is the null label)")
        if not isinstance(grad, (bool, np.bool_)):
            raise TypeError(f"{F}(): grad must be True or False, got {type(grad).__name__}")
        out = np.empty((x.shape[0], self.config["out_channels"]) + x.shape[2:], np.float32)
        B, C = x.shape[0], _core.UNET_CHUNK
        if grad and B <= C:
            self._replay = None
            self._generation = _core.unet_forward(self._handle, self.params, x, tt, out, labels)
            return out
        # otherwise chunks of UNET_CHUNK images (a fixed size, so the numbers do not depend on
        # the thread count), Ctrl-C honoured between them, none kept for a backward (keep=False
        # folds each GroupNorm + SiLU into the convolution after it; the same numbers): with
        # grad, backward recomputes each chunk's forward from the inputs kept here
        self._replay = self._generation = None
        gen = None
        for i in range(0, B, C):
            lab = None if labels is None else labels[i:i + C]
            gen = _core.unet_forward(self._handle, self.params, x[i:i + C], tt[i:i + C],
                                     out[i:i + C], lab, False)
        if grad:
            self._generation, self._replay = gen, (x.copy(), tt, labels)
        return out

    __call__ = forward

    def backward(self, grad_out) -> np.ndarray:
        """Backpropagate d loss / d output through the last :meth:`forward`.

        Adds d loss / d params into :attr:`grads` (call :meth:`zero_grad`
        first) and returns d loss / d x, shaped like the forward's input.
        """
        F = "UNet.backward"
        if self._generation is None:
            raise RuntimeError(f"{F}(): call forward first (with grad=True: a forward with "
                               f"grad=False keeps nothing for a backward)")
        g = self._check_images(grad_out, "grad_out", self.config["out_channels"], F)
        dx = np.empty((g.shape[0], self.config["in_channels"]) + g.shape[2:], np.float32)
        if self._replay is None:
            # the engine checks that its workspace still holds this object's last forward
            # (not a sampler's, another copy's or a later one) on the same batch
            _core.unet_backward(self._handle, self.params, self.grads, g, dx, self._generation)
            return dx
        x, tt, labels = self._replay
        if g.shape[0] != x.shape[0]:
            raise ValueError(f"{F}(): grad_out holds {g.shape[0]} images but the forward had "
                             f"{x.shape[0]}")
        C = _core.UNET_CHUNK
        scratch = np.empty((C, self.config["out_channels"]) + x.shape[2:], np.float32)
        for i in range(0, x.shape[0], C):
            n = min(C, x.shape[0] - i)
            lab = None if labels is None else labels[i:i + C]
            gen = _core.unet_forward(self._handle, self.params, x[i:i + C], tt[i:i + C],
                                     scratch[:n], lab)
            _core.unet_backward(self._handle, self.params, self.grads, g[i:i + C], dx[i:i + C],
                                gen)
        return dx

    def profile(self, enable: bool = True) -> dict:
        """Seconds spent per kind of op since the last call; enable/disable timing."""
        return _core.unet_profile(self._handle, bool(enable))

    # ------------------------------------------------------------------- files
    def save(self, path, *, dtype: str = "float32") -> str:
        """Write ``path/config.json`` and ``path/diffusion_pytorch_model.safetensors``
        (diffusers' layout; each file replaced atomically).  Returns path.

        ``dtype="float16"`` halves the file (the shipped model is stored so);
        :meth:`load` reads either back as float32.  Weights holding NaN or Inf are
        refused (ValueError), as :meth:`load` would refuse them; if writing fails
        (a full disk: OSError) a folder this call created is removed again.
        """
        if dtype not in ("float32", "float16"):
            raise ValueError(f"UNet.save(): dtype must be 'float32' or 'float16', got {dtype!r}")
        path = os.fspath(path)
        cfg = {"_class_name": "UNet2DModel", "_ddpm_version": VERSION}
        for k in sorted(DIFFUSERS_DEFAULTS) + sorted(EXTRA_KEYS):
            v = self.config[k]
            if k in EXTRA_KEYS and v is None:
                continue
            cfg[k] = list(v) if isinstance(v, tuple) else v
        with np.errstate(over="ignore"):       # overflow is checked (and refused) just below
            tensors = {name: np.ascontiguousarray(arr, dtype=dtype)
                       for name, arr in self.named_parameters()}
        for name, arr in tensors.items():
            if not np.isfinite(arr).all():
                why = ("overflows float16; save as float32" if np.isfinite(self.params).all()
                       else "holds NaN or Inf")
                raise ValueError(f"UNet.save(): {name} {why}")
        with new_dirs(path):
            atomic_write(os.path.join(path, WEIGHTS_NAME),
                         lambda tmp: write_safetensors(tmp, tensors))
            atomic_write(os.path.join(path, CONFIG_NAME),
                         lambda tmp: write_text(tmp, json.dumps(cfg, indent=2, sort_keys=True)))
        return path

    @classmethod
    def from_config(cls, config: dict, *, seed: int = 0) -> "UNet":
        """A freshly initialised UNet from a diffusers-style config dict
        (missing keys take diffusers' defaults; ``_``-prefixed keys are ignored)."""
        self = cls._unallocated(config)
        self._allocate()
        self.reset_parameters(seed)
        return self

    @classmethod
    def _unallocated(cls, config: dict) -> "UNet":
        """A UNet whose config is checked and whose C network is laid out, but whose
        parameters are not allocated yet (``_allocate``)."""
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise TypeError("UNet.from_config(): config must be a dict with string keys")
        full = dict(DIFFUSERS_DEFAULTS)
        full.update(EXTRA_KEYS)
        full.update({k: v for k, v in config.items() if not k.startswith("_")})
        self = cls.__new__(cls)
        self._layout(_normalise_config(full))
        return self

    def _check_header(self, st: SafetensorsFile, func: str) -> None:
        """ValueError unless the weights file ``st`` holds exactly this network's tensors
        (names, shapes, float dtypes): checked before the parameters are allocated, so a
        config cannot make a small file build a large network."""
        want = {name: shape for name, shape, *_ in self._tensors}
        missing = sorted(set(want) - set(st.tensors))
        extra = sorted(set(st.tensors) - set(want))
        if missing or extra:
            raise ValueError(
                f"{func}(): {st.path} does not hold the tensors its config describes: missing "
                f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                f"{extra[:5]}{'...' if len(extra) > 5 else ''}")
        for name, shape in want.items():
            st.check_float(name, shape)

    @classmethod
    def load(cls, path) -> "UNet":
        """Read a model written by :meth:`save` or by diffusers' ``save_pretrained``.

        The weights file's header (tensor names, shapes, dtypes) is checked against
        the config before any parameter memory is allocated.

        Raises
        ------
        OSError
            Missing, truncated, unreadable or non-regular files (a FIFO, a device).
        ValueError
            A config we do not support, tensors missing, of the wrong shape or
            dtype, or holding NaN/Inf.
        TypeError
            A config value of the wrong type.
        """
        F = "UNet.load"
        path = os.fspath(path)
        cfg_path = os.path.join(path, CONFIG_NAME)
        w_path = os.path.join(path, WEIGHTS_NAME)
        config = read_json_object(cfg_path, F)
        cls_name = config.get("_class_name", "UNet2DModel")
        if cls_name != "UNet2DModel":
            raise ValueError(f"{F}(): {cfg_path} describes a {cls_name!r}, not a UNet2DModel")
        model = cls._unallocated(config)
        with SafetensorsFile(w_path, F, what="weights file") as st:
            model._check_header(st, F)
            model._allocate()
            for name, shape, off, size in model._tensors:
                st.read(name, out=model.params[off:off + size])
        return model

    @classmethod
    def from_diffusers(cls, source) -> "UNet":
        """From a diffusers ``UNet2DModel`` instance or a folder it saved."""
        if isinstance(source, (str, os.PathLike)):
            return cls.load(source)
        try:
            config = dict(source.config)
            state = source.state_dict()
        except AttributeError as exc:
            raise TypeError("UNet.from_diffusers(): expected a UNet2DModel or a folder") from exc
        model = cls.from_config(config)
        model.load_state_dict({k: v.detach().cpu().float().numpy() for k, v in state.items()})
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, subfolder: str | None = None,
                        **kwargs) -> "UNet":
        """diffusers' ``UNet2DModel.from_pretrained`` for local folders and shipped models.

        Reads ``<path>/<subfolder>/config.json`` and its safetensors, e.g.
        ``UNet.from_pretrained("fashion-mnist", subfolder="unet")`` or a folder
        that ``UNet2DModel.save_pretrained`` wrote.  No Hub downloads (ddpm is
        offline: OSError naming the id); ``local_files_only`` is accepted,
        ``use_safetensors=False`` and other keywords are refused.

        Examples
        --------
        >>> import ddpm
        >>> net = ddpm.UNet.from_pretrained("fashion-mnist", subfolder="unet")
        >>> net.config["sample_size"]
        28
        """
        path = _resolve_pretrained(pretrained_model_name_or_path, "UNet", kwargs)
        if subfolder is not None:
            if not isinstance(subfolder, str):
                raise TypeError(f"UNet.from_pretrained(): subfolder must be a str, "
                                f"got {type(subfolder).__name__}")
            path = os.path.join(path, subfolder)
        elif not os.path.isfile(os.path.join(path, CONFIG_NAME)) and \
                os.path.isfile(os.path.join(path, "unet", CONFIG_NAME)):
            raise OSError(f"UNet.from_pretrained(): {path} is a pipeline folder; pass "
                          f"subfolder='unet' (as diffusers wants)")
        return cls.load(path)

    def save_pretrained(self, save_directory, *, safe_serialization: bool = True,
                        variant: str | None = None, push_to_hub: bool = False) -> str:
        """diffusers' spelling of :meth:`save` (``variant="fp16"``: float16 weights).

        Examples
        --------
        >>> import ddpm
        >>> ddpm.UNet(seed=0).save_pretrained("/tmp/unet")
        '/tmp/unet'
        """
        return self.save(save_directory, dtype=_save_dtype(
            "UNet.save_pretrained", safe_serialization, variant, push_to_hub))

    def to_diffusers(self):
        """A ``diffusers.UNet2DModel`` (float32, CPU) with these weights."""
        try:
            import torch
            from diffusers import UNet2DModel
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_diffusers() needs diffusers and torch: "
                              "pip install torch==2.13.0 'ddpm[reference]'") from exc
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()
               if k not in EXTRA_KEYS}
        m = UNet2DModel(**cfg)
        m.load_state_dict({name: torch.from_numpy(arr.copy()) for name, arr in self.named_parameters()})
        return m.eval()

    def __repr__(self):
        c = self.config
        return (f"UNet(sample_size={c['sample_size']}, in_channels={c['in_channels']}, "
                f"out_channels={c['out_channels']}, block_out_channels={c['block_out_channels']}, "
                f"layers_per_block={c['layers_per_block']}, "
                f"down_block_types={c['down_block_types']}, "
                f"up_block_types={c['up_block_types']}) with {self.num_parameters:,} parameters")
