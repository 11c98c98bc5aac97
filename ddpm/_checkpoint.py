"""Reading a :meth:`ddpm.Trainer.save` checkpoint, checked before anything is built.

A checkpoint is one safetensors file: the tensors ``params``, ``adam_m``,
``adam_v`` (and ``ema``), float32 of shape (P,), and string metadata: ``format``,
``step``, ``ema_updates``, ``objective`` and the JSON texts ``model_config``,
``schedule``, ``settings`` and ``history``.  :func:`read_checkpoint` checks all
of it - the header's names, shapes and dtypes against the parameter count P
that the model config implies, every metadata field's type and range, the
history's structure (which ``fit`` indexes later) - before the network's
parameters are allocated, so a damaged or hostile file is an OSError
(unreadable) or a ValueError (damaged contents) naming the file and the field,
never a KeyError at the next ``fit()`` or a network far bigger than the file.
"""
from __future__ import annotations

import numbers

from ._io import loads_json
from ._safetensors import SafetensorsFile
from .diffusion import OBJECTIVES
from .model import UNet
from .schedule import KINDS, NoiseSchedule

__all__ = ["FORMAT", "N_BUCKETS", "read_checkpoint", "nonfinite_message"]

FORMAT = "ddpm-trainer-1"
#: The history's loss buckets: tenths of 1..T.
N_BUCKETS = 10
#: The largest step count a checkpoint may hold (the engine keeps it in an int64).
MAX_STEP = 2 ** 62
_HISTORY_SERIES = ("step", "loss", "grad_norm", "lr")
# settings whose default is None but which are counts when given
_INT_OR_NONE = ("total_steps",)
# settings with a number as default that None turns off
_FLOAT_OR_NONE = ("ema_decay", "grad_clip")


def nonfinite_message(name: str, path) -> str:
    """What Trainer.save and Trainer.resume both say about a tensor with NaN or Inf."""
    return f"tensor {name!r} in {path} holds NaN or Inf"     # as SafetensorsFile.read says


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_checkpoint(path, func: str, settings_keys, extra, *, weights: str = "params"):
    """Parse and check a checkpoint.

    Returns a dict: ``model`` (a UNet holding the ``weights`` tensor, "params" or
    "ema"), ``schedule``, ``objective``, ``settings`` (keyword arguments of Trainer,
    only ``settings_keys``), ``step``, ``ema_updates``, ``history`` and ``tensors``
    (float32 arrays of the names in ``extra``, plus "ema" when the file has it and
    "adam_m" is asked for).
    """
    with SafetensorsFile(path, func, what="checkpoint") as st:
        meta = st.metadata

        def damaged(why):
            return ValueError(f"{func}(): damaged metadata in checkpoint {st.path}: {why}")

        if meta.get("format") != FORMAT:
            raise ValueError(f"{func}(): {st.path} is not a {FORMAT} checkpoint")
        for key in ("model_config", "schedule", "settings", "history", "step", "ema_updates",
                    "objective"):
            if key not in meta:
                raise damaged(f"no {key!r}")

        def js(key):
            obj = loads_json(meta[key], func, f"metadata {key!r} of {st.path}", ValueError)
            if not isinstance(obj, dict):
                raise damaged(f"{key!r} must be a JSON object")
            return obj

        def count(key, hi):
            try:
                v = int(meta[key])
            except ValueError:
                raise damaged(f"{key!r} must be an integer, got {meta[key][:40]!r}") from None
            if not 0 <= v <= hi:
                raise damaged(f"{key!r} must be in 0..{hi}, got {v}")
            return v

        step = count("step", MAX_STEP)
        ema_updates = count("ema_updates", step)
        objective = meta["objective"]
        if objective not in OBJECTIVES:
            raise damaged(f"objective must be one of {OBJECTIVES}, got {objective[:40]!r}")
        settings = _settings(js("settings"), settings_keys, damaged)
        history = _history(js("history"), damaged)
        sch = js("schedule")
        try:
            schedule = _schedule(sch, KINDS, NoiseSchedule, damaged)
            model = UNet._unallocated(js("model_config"))
        except (TypeError, ValueError) as exc:
            if str(exc).startswith(func):
                raise
            raise damaged(exc) from None

        # the header against the network the config describes, before allocating it
        P = model.num_parameters
        has_ema = "ema" in st.tensors
        names = [weights] + [n for n in extra] + (["ema"] if has_ema and extra else [])
        for name in dict.fromkeys(["params"] + names):
            info = st.check_float(name, (P,))
            if info.dtype != "F32":
                raise ValueError(f"{func}(): tensor {name!r} in {st.path} is {info.dtype}, "
                                 f"checkpoints hold F32")
        if weights == "ema" and not has_ema:
            raise ValueError(f"{func}(): {st.path} was trained without EMA")
        model._allocate()
        st.read(weights, out=model.params)
        tensors = {}
        for name in dict.fromkeys(names):
            if name != weights:
                tensors[name] = st.read(name)
        if weights != "params":
            st.read("params")               # finite, as resume would need it
    return {"model": model, "schedule": schedule, "objective": objective, "settings": settings,
            "step": step, "ema_updates": ema_updates, "history": history, "tensors": tensors}


def _settings(settings, keys, damaged):
    """The settings, each of the JSON type its Trainer default has (Trainer checks ranges)."""
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise damaged(f"unknown settings {unknown[:5]}")
    out = dict(settings)
    for key, v in settings.items():
        default = keys[key]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = _int(v)
        elif isinstance(default, str):
            ok = isinstance(v, str)
        elif isinstance(default, tuple):
            ok = isinstance(v, list) and len(v) == len(default) and all(_real(x) for x in v)
            if ok:
                out[key] = tuple(v)
        elif key in _INT_OR_NONE:
            ok = _int(v) or v is None
        else:                               # floats, and None where it means "off"
            ok = _real(v) or (v is None and (default is None or key in _FLOAT_OR_NONE))
        if not ok:
            raise damaged(f"settings {key!r} has the wrong type: {v!r}")
    return out


def _history(h, damaged):
    want = set(_HISTORY_SERIES) | {"bucket_loss", "bucket_count"}
    if set(h) != want:
        raise damaged(f"history must hold exactly {sorted(want)}, got {sorted(h)[:8]}")
    n = None
    for key in _HISTORY_SERIES:
        v = h[key]
        ok = isinstance(v, list) and all(_int(x) if key == "step" else _real(x) for x in v)
        if not ok or (n is not None and len(v) != n):
            raise damaged(f"history {key!r} must be a list of numbers as long as 'step'")
        n = len(v)
    bl, bc = h["bucket_loss"], h["bucket_count"]
    if not (isinstance(bl, list) and len(bl) == N_BUCKETS and all(_real(x) for x in bl)):
        raise damaged(f"history 'bucket_loss' must be {N_BUCKETS} numbers")
    if not (isinstance(bc, list) and len(bc) == N_BUCKETS and
            all(_int(x) and x >= 0 for x in bc)):
        raise damaged(f"history 'bucket_count' must be {N_BUCKETS} counts")
    return h


def _schedule(sch, kinds, NoiseSchedule, damaged):
    if set(sch) != {"kind", "params", "rescale", "betas"}:
        raise damaged("schedule must hold kind, params, rescale and betas")
    kind, params, rescale, betas = sch["kind"], sch["params"], sch["rescale"], sch["betas"]
    if not isinstance(rescale, bool):
        raise damaged(f"schedule 'rescale' must be true or false, got {rescale!r}")
    if not (isinstance(betas, list) and betas and all(_real(b) for b in betas)):
        raise damaged("schedule 'betas' must be a non-empty list of numbers")
    if kind == "custom":
        return NoiseSchedule.from_betas(betas, rescale_zero_terminal_snr=rescale)
    if kind not in kinds:
        raise damaged(f"schedule kind must be one of {kinds} or 'custom', got {kind!r}")
    allowed = {"s", "max_beta"} if kind == "cosine" else {"beta_start", "beta_end"}
    if not isinstance(params, dict) or not set(params) <= allowed or \
            not all(_real(v) for v in params.values()):
        raise damaged(f"schedule params for {kind!r} must be numbers named {sorted(allowed)}")
    return NoiseSchedule(kind, timesteps=len(betas), rescale_zero_terminal_snr=rescale, **params)
