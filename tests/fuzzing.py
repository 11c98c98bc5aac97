"""A seeded mutation fuzzer over every file parser of ddpm (issue 14).

Each parser starts from valid files that ddpm itself writes (a tiny U-Net folder,
a pipeline folder, checkpoints, a FeatureNet file, feature statistics, raw and
gzipped IDX files) and feeds its loader mutated copies: byte-level damage (bit
flips, interesting integers, cuts, insertions, repeats), structure-aware damage
(the JSON of configs, of safetensors headers and of checkpoint metadata: values
of the wrong type, huge and negative numbers, "false" strings, deep nesting,
missing and unknown keys; IDX magic numbers and dimensions) and whole-file
oddities (gzip members, bombs, truncated streams).  A case passes when the
loader returns or raises ValueError, TypeError or OSError; anything else - a
crash, another exception type, a MemoryError under the address-space cap, a
case that does not finish in time - is a finding.

Cases run in worker processes (``python tests/fuzzing.py worker ...``), a batch
per process, each under ``resource.setrlimit(RLIMIT_AS)``; a worker that dies
is restarted after the case that killed it.  Case i of a parser is a pure
function of (parser, seed, i), so any finding replays with ``repro``.

Usage::

    python tests/fuzzing.py run --cases 10000 --jobs 2        # every parser
    python tests/fuzzing.py run --parser idx_gzip --cases 500
    python tests/fuzzing.py repro --parser checkpoint_metadata --case 1234

``tests/test_fuzz.py`` runs a few hundred cases per parser in CI
(``DDPM_FUZZ_CASES`` sets how many).
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALLOWED = (ValueError, TypeError, OSError)
PARSERS = ("unet_folder", "config_json", "diffusion_folder", "scheduler_config",
           "checkpoint_bytes", "checkpoint_metadata", "feature_file", "idx_raw", "idx_gzip")
CAP_BYTES = int(os.environ.get("DDPM_FUZZ_CAP_MB", "1536")) << 20
CASE_SECONDS = 20

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)

INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 8, 255, 256, 4096, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
                    2 ** 32, 2 ** 53, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 10 ** 30, -2 ** 31)
INTERESTING_FLOATS = (0.0, -0.0, 0.5, 1e-300, 1e308, -1e308, float("inf"), float("-inf"),
                      float("nan"), 1e-8, 0.999999)
INTERESTING_STRINGS = ("", "no", "false", "true", "None", "null", "0", "-1", "1e3", "nan",
                       "DownBlock2D", "F32", "epsilon", "linear", "x" * 3000, "\u00ff\u2603",
                       "9" * 5000)


# ----------------------------------------------------------------------- mutations
def mutate_bytes(r: random.Random, data: bytes, header_bias: int = 0) -> bytes:
    """1-4 byte-level mutations; ``header_bias`` > 0 aims half of them at the first bytes."""
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        n = len(b)
        op = r.randrange(9)
        pos = r.randrange(max(1, min(n, header_bias))) if header_bias and r.random() < 0.5 \
            else r.randrange(max(1, n))
        if op == 0 and n:                                   # flip a bit
            b[pos % n] ^= 1 << r.randrange(8)
        elif op == 1 and n:                                 # an interesting byte
            b[pos % n] = r.choice((0, 1, 0x7F, 0x80, 0xFF, ord("["), ord("{"), ord('"')))
        elif op == 2 and n >= 8:                            # an interesting integer
            v = r.choice(INTERESTING_INTS) % (1 << 64)
            width = r.choice((2, 4, 8))
            order = r.choice(("little", "big"))
            p = min(pos, n - width)
            b[p:p + width] = (v % (1 << (8 * width))).to_bytes(width, order)
        elif op == 3:                                       # cut the end
            del b[r.randrange(n + 1):]
        elif op == 4 and n:                                 # delete a range
            del b[pos:pos + r.randint(1, 64)]
        elif op == 5:                                       # insert random bytes
            b[pos:pos] = bytes(r.randrange(256) for _ in range(r.randint(1, 32)))
        elif op == 6 and n:                                 # repeat a range
            chunk = b[pos:pos + r.randint(1, 256)]
            b[pos:pos] = chunk * r.randint(1, 64)
        elif op == 7:                                       # garbage at the end
            b += bytes(r.randrange(256) for _ in range(r.randint(1, 64)))
        elif op == 8 and n:                                 # zero a range
            k = r.randint(1, 128)
            b[pos:pos + k] = bytes(len(b[pos:pos + k]))
    return bytes(b)


def _nested(r) -> str:
    """JSON text nested 50 to 100,000 levels deep."""
    depth = r.choice((50, 900, 5000, 100_000))
    opener, closer = r.choice((("[", "]"), ('{"a":', "}")))
    return opener * depth + "1" + closer * depth


def weird_value(r: random.Random, old=None):
    """A JSON value a hostile file might hold instead of ``old``."""
    k = r.randrange(12)
    if k == 0:
        return r.choice(INTERESTING_INTS)
    if k == 1:
        return r.choice(INTERESTING_FLOATS)
    if k == 2:
        return r.choice(INTERESTING_STRINGS)
    if k == 3:
        return r.choice((None, True, False, [], {}))
    if k == 4:
        return [old] if old is not None else [1]
    if k == 5:
        return {"a": old}
    if k == 6 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return r.choice((old * 2, old + 1, -old, old * 10 ** r.randint(1, 40), float(old)))
    if k == 7 and isinstance(old, list):
        return old * r.randint(2, 4) if old and r.random() < 0.5 else old[: r.randrange(
            len(old) + 1)]
    if k == 8 and isinstance(old, str):
        return old.upper() if r.random() < 0.5 else old[: r.randrange(len(old) + 1)]
    if k == 9:
        return [0] * r.choice((10, 1000, 100_000))
    if k == 10:
        return _RawJSON(_nested(r))
    return r.choice(INTERESTING_INTS + INTERESTING_FLOATS)


class _RawJSON(str):
    """Text spliced into the JSON unparsed (deep nesting the encoder would choke on)."""


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 64:
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def dumps(obj) -> str:
    """json.dumps with _RawJSON values spliced in verbatim."""
    raws = []

    def default(o):
        raise TypeError

    def walk(o):
        if isinstance(o, _RawJSON):
            raws.append(str(o))
            return f"__RAW{len(raws) - 1}__"
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    text = json.dumps(walk(obj), default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"__RAW{i}__"', raw, 1)
    return text


def mutate_json(r: random.Random, obj, n_max: int = 3):
    """A copy of a JSON value with 1..n_max structural mutations."""
    obj = json.loads(json.dumps(obj))
    for _ in range(r.randint(1, n_max)):
        paths = list(_paths(obj))
        path = r.choice(paths)
        if not path:
            if r.random() < 0.2:
                obj = weird_value(r, obj)
            continue
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        op = r.randrange(10)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(parent, dict):
            parent[r.choice(("colour", "_x", "__metadata__", str(key) + "2", ""))] = \
                weird_value(r)
        else:
            parent[key] = weird_value(r, parent[key])
    return obj


def mutate_json_text(r: random.Random, obj) -> bytes:
    if r.random() < 0.8:
        return dumps(mutate_json(r, obj)).encode("utf-8", "surrogatepass")
    return mutate_bytes(r, json.dumps(obj).encode())


# ------------------------------------------------------------------- seed files
def _st_split(blob: bytes):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _st_join(header, data: bytes) -> bytes:
    hb = dumps(header).encode("utf-8", "surrogatepass")
    return len(hb).to_bytes(8, "little") + hb + data


def mutate_safetensors(r: random.Random, blob: bytes, meta_keys=()) -> bytes:
    """Byte damage, or structural damage to the header JSON (dtype, shape, offsets,
    metadata), the data kept or cut."""
    k = r.random()
    if k < 0.35:
        return mutate_bytes(r, blob, header_bias=64)
    header, data = _st_split(blob)
    if k < 0.45 and meta_keys:            # a JSON-valued metadata field, mutated inside
        meta = header.get("__metadata__", {})
        key = r.choice(meta_keys)
        try:
            meta[key] = dumps(mutate_json(r, json.loads(meta[key])))
        except (KeyError, ValueError):
            meta[key] = r.choice(INTERESTING_STRINGS)
    elif k < 0.55:                        # a tensor entry with another dtype
        name = r.choice([n for n in header if n != "__metadata__"])
        header[name]["dtype"] = r.choice(("F8_E4M3", "F8_E5M2", "I32", "U8", "BOOL", "F16",
                                          "BF16", "F64", "I64", "F4", "C64", "f32", ""))
    else:
        header = mutate_json(r, header)
    out = _st_join(header, data)
    if r.random() < 0.2:
        out = out[: r.randrange(len(out) + 1)]
    return out


def idx(dims, data: bytes, code: int = 0x08) -> bytes:
    import struct
    return struct.pack(">HBB", 0, code, len(dims)) + b"".join(
        d.to_bytes(4, "big") for d in dims) + data


def mutate_idx(r: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    k = r.random()
    if k < 0.5 and len(b) >= 8:           # the header: type code, ndim, a dimension
        field = r.randrange(3)
        if field == 0:
            b[2] = r.choice((0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF))
        elif field == 1:
            b[3] = r.choice((0, 1, 2, 3, 4, 5, 255))
        else:
            ndim = max(1, min(b[3], (len(b) - 4) // 4))
            i = 4 + 4 * r.randrange(ndim)
            b[i:i + 4] = (r.choice(INTERESTING_INTS) % (1 << 32)).to_bytes(4, "big")
        if r.random() < 0.3:
            return mutate_bytes(r, bytes(b))
        return bytes(b)
    return mutate_bytes(r, bytes(b), header_bias=24)


def make_seeds(work: str) -> dict:
    """The valid files every mutation starts from (tiny, deterministic)."""
    import numpy as np
    import ddpm
    from ddpm.metrics import FeatureNet
    from safetensors.numpy import save_file

    seeds = {}
    rng = np.random.default_rng(0)
    for name, extra in (("plain", {}), ("labels", {"num_class_embeds": 4,
                                                   "class_names": ["a", "b", "c"]})):
        net = ddpm.UNet(seed=0, **TINY, **extra)
        net.params[:] = rng.standard_normal(net.num_parameters).astype(np.float32) * 0.1
        for dtype in ("float32", "float16"):
            sched = (ddpm.NoiseSchedule("linear", timesteps=50) if dtype == "float32" else
                     ddpm.NoiseSchedule.from_betas(np.linspace(1e-3, 0.2, 40)))
            d = ddpm.Diffusion(net, sched, objective="eps" if dtype == "float32" else "v")
            folder = d.save(os.path.join(work, f"seed-{name}-{dtype}"), dtype=dtype)
            seeds[f"pipe-{name}-{dtype}"] = {
                rel: open(os.path.join(folder, rel), "rb").read()
                for rel in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                            "scheduler/scheduler_config.json", "model_index.json")}
    data = rng.uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    for ema in (0.99, None):
        d = ddpm.Diffusion(ddpm.UNet(seed=1, **TINY), ddpm.NoiseSchedule("cosine", timesteps=30))
        tr = ddpm.Trainer(d, data, batch_size=4, progress=False, ema_decay=ema, warmup_steps=2)
        tr.fit(steps=2)
        p = os.path.join(work, "seed-ck.safetensors")
        tr.save(p)
        seeds[f"checkpoint-ema{ema}"] = open(p, "rb").read()
    seeds["data"] = data
    net = FeatureNet(dict(widths=(8, 8), depth=(1, 1), groups=4))
    p = os.path.join(work, "seed-fn.safetensors")
    net.save(p, metadata={"accuracy": 0.5})
    seeds["featurenet"] = open(p, "rb").read()
    net.save(p, dtype=np.float16)
    seeds["featurenet16"] = open(p, "rb").read()
    f = rng.standard_normal((20, 6))
    save_file({"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}, p)
    seeds["stats"] = open(p, "rb").read()
    labels = bytes([3, 1, 4, 1, 5])
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8).tobytes()
    seeds["idx"] = [idx((5,), labels), idx((5, 28, 28), images),
                    idx((3, 2), np.arange(6, dtype=">i2").tobytes(), 0x0B),
                    idx((2, 2, 2), np.arange(8, dtype=">f4").tobytes(), 0x0D),
                    idx((2,), np.arange(2, dtype=">f8").tobytes(), 0x0E),
                    idx((1, 1, 1, 3), bytes(3), 0x09)]
    seeds["idx_pair"] = (idx((5, 28, 28), images), idx((5,), labels))
    return seeds


# --------------------------------------------------------------------- the cases
def _gz(data: bytes, level: int = 9) -> bytes:
    """gzip with a fixed timestamp: the same case, the same bytes, on any day."""
    return gzip.compress(data, level, mtime=0)


def _write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def run_case(parser: str, i: int, seed: int, seeds: dict, work: str) -> None:
    """Build case i of parser and feed it to the loader (raises what the loader raises)."""
    import ddpm
    from ddpm import datasets, metrics
    from ddpm.training import checkpoint_diffusion

    r = random.Random(f"{parser}/{seed}/{i}")
    case_dir = os.path.join(work, "case")
    if parser in ("unet_folder", "config_json", "diffusion_folder", "scheduler_config"):
        files = dict(seeds[r.choice([k for k in seeds if k.startswith("pipe-")])])
        cfg, wts = "unet/config.json", "unet/diffusion_pytorch_model.safetensors"
        sch = "scheduler/scheduler_config.json"
        if parser == "config_json":
            files[cfg] = mutate_json_text(r, json.loads(files[cfg]))
        elif parser == "scheduler_config":
            files[sch] = mutate_json_text(r, json.loads(files[sch]))
        else:
            which = r.choice((cfg, wts, wts) + ((sch,) if parser == "diffusion_folder" else ()))
            if which == wts:
                files[wts] = mutate_safetensors(r, files[wts])
            elif r.random() < 0.5:
                files[which] = mutate_json_text(r, json.loads(files[which]))
            else:
                files[which] = mutate_bytes(r, files[which])
            if r.random() < 0.1:               # a file missing, or a folder in its place
                gone = r.choice(list(files))
                del files[gone]
                if r.random() < 0.5:
                    os.makedirs(os.path.join(case_dir, gone), exist_ok=True)
        for rel, data in files.items():
            _write(os.path.join(case_dir, rel), data)
        if parser in ("unet_folder", "config_json"):
            ddpm.UNet.load(os.path.join(case_dir, "unet"))
        else:
            ddpm.Diffusion.load(case_dir)
    elif parser in ("checkpoint_bytes", "checkpoint_metadata"):
        blob = seeds[r.choice(("checkpoint-ema0.99", "checkpoint-emaNone"))]
        if parser == "checkpoint_bytes":
            blob = mutate_safetensors(r, blob) if r.random() < 0.5 else \
                mutate_bytes(r, blob, header_bias=4096)
        else:
            header, data = _st_split(blob)
            meta = header["__metadata__"]
            key = r.choice(sorted(meta))
            if key in ("model_config", "schedule", "settings", "history") and r.random() < 0.85:
                meta[key] = dumps(mutate_json(r, json.loads(meta[key])))
            elif r.random() < 0.3:
                del meta[key]
            else:
                meta[key] = r.choice(INTERESTING_STRINGS + tuple(str(v) for v in
                                                                 INTERESTING_INTS))
            blob = _st_join(header, data)
        path = os.path.join(work, "case.safetensors")
        _write(path, blob)
        if r.random() < 0.5:
            ddpm.Trainer.resume(path, seeds["data"], progress=False)
        else:
            checkpoint_diffusion(path, weights=r.choice(("ema", "params")))
    elif parser == "feature_file":
        path = os.path.join(work, "case.safetensors")
        if r.random() < 0.6:
            blob = seeds[r.choice(("featurenet", "featurenet16"))]
            _write(path, mutate_safetensors(r, blob, meta_keys=("config",)))
            metrics.FeatureNet.load(path)
        else:
            _write(path, mutate_safetensors(r, seeds["stats"]))
            load_statistics(path)
    elif parser in ("idx_raw", "idx_gzip"):
        gz = parser == "idx_gzip"
        if r.random() < 0.3:                   # the loader, on a pair of files
            images, labels = seeds["idx_pair"]
            names = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
            pair = [images, labels]
            j = r.randrange(2)
            pair[j] = mutate_idx(r, pair[j])
            folder = os.path.join(work, "pair")
            os.makedirs(folder, exist_ok=True)
            for name, data in zip(names, pair):
                for old in (name, name + ".gz"):
                    if os.path.exists(os.path.join(folder, old)):
                        os.unlink(os.path.join(folder, old))
                _write(os.path.join(folder, name + (".gz" if gz else "")),
                       _gz(data, r.choice((1, 9))) if gz else data)
            datasets.fashion_mnist("test", path=folder)
            return
        raw = mutate_idx(r, r.choice(seeds["idx"]))
        if gz:
            k = r.random()
            if k < 0.5:
                data = _gz(raw, r.choice((0, 1, 6, 9)))
            elif k < 0.8:
                data = mutate_bytes(r, _gz(raw), header_bias=16)
            else:                              # more members, zeros or garbage after
                member = _gz(bytes(r.choice((1, 1000, 1 << 16))), 9)
                data = _gz(raw) + member * r.randint(1, 200) + \
                    r.choice((b"", b"\x00" * 8, b"garbage", _gz(raw)[:10]))
        else:
            data = raw
        path = os.path.join(work, "case-idx" + (".gz" if gz else ""))
        _write(path, data)
        datasets.read_idx(path)
    else:
        raise SystemExit(f"unknown parser {parser!r}")


def load_statistics(path):
    """metrics.load_statistics, or what older versions did with the shipped file's path."""
    from ddpm import metrics
    if hasattr(metrics, "load_statistics"):
        return metrics.load_statistics(path)
    from pathlib import Path
    metrics.TEST_FEATURES_PATH = Path(path)
    metrics._test_statistics.cache_clear()
    return metrics._test_statistics()


class CaseTimeout(BaseException):
    pass


def _alarm(signum, frame):
    raise CaseTimeout


def worker(parser: str, seed: int, start: int, count: int, cap: int) -> None:
    """Run cases start..start+count-1, printing one line per case: "i outcome"."""
    import resource
    asan = "asan" in os.environ.get("LD_PRELOAD", "")
    if cap and not asan:                       # ASan reserves terabytes of address space
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import warnings
    warnings.simplefilter("ignore")
    import ddpm
    ddpm.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="ddpm-fuzz-") as work:
        seeds = make_seeds(work)
        for i in range(start, start + count):
            signal.alarm(CASE_SECONDS)
            try:
                run_case(parser, i, seed, seeds, work)
                outcome = "ok"
            except ALLOWED as e:
                outcome = type(e).__name__
            except CaseTimeout:
                outcome = "!timeout"
            except BaseException as e:             # noqa: BLE001 - a finding, reported
                outcome = "!" + type(e).__name__
                tb = traceback.format_exc().replace("\n", "\\n")
                print(f"TRACE {i} {tb}", flush=True)
            finally:
                signal.alarm(0)
            print(f"{i} {outcome}", flush=True)
            case_dir = os.path.join(work, "case")
            if os.path.isdir(case_dir):
                import shutil
                shutil.rmtree(case_dir, ignore_errors=True)


# -------------------------------------------------------------------- the driver
def run_parser(parser: str, cases: int, seed: int = 0, cap: int = CAP_BYTES,
               batch: int = 2000, env=None) -> dict:
    """Run cases 0..cases-1 of a parser in worker processes; the tally and findings."""
    tally = collections.Counter()
    findings = []
    i = 0
    t0 = time.perf_counter()
    while i < cases:
        n = min(batch, cases - i)
        cmd = [sys.executable, os.path.abspath(__file__), "worker", "--parser", parser,
               "--seed", str(seed), "--start", str(i), "--count", str(n), "--cap", str(cap)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                              timeout=CASE_SECONDS * n + 120)
        done, traces = i, {}
        for line in proc.stdout.splitlines():
            if line.startswith("TRACE "):
                _, k, tb = line.split(" ", 2)
                traces[int(k)] = tb.replace("\\n", "\n")
                continue
            k, outcome = line.split(" ", 1)
            tally[outcome] += 1
            if outcome.startswith("!"):
                findings.append({"parser": parser, "case": int(k), "seed": seed,
                                 "outcome": outcome, "trace": traces.get(int(k), "")})
            done = int(k) + 1
        if done < i + n:                          # the worker died during case `done`
            what = f"!crash(rc={proc.returncode})"
            tally[what] += 1
            findings.append({"parser": parser, "case": done, "seed": seed, "outcome": what,
                             "trace": proc.stderr[-4000:]})
            if done == i and "Traceback" in proc.stderr and not proc.stdout:
                break                             # it could not even start: report once
            done += 1
        i = done
    return {"parser": parser, "cases": sum(tally.values()), "tally": dict(tally),
            "findings": findings, "seconds": time.perf_counter() - t0}


def run_all(parsers, cases: int, seed: int = 0, jobs: int = 2, cap: int = CAP_BYTES,
            env=None) -> list:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_parser, p, cases, seed, cap, env=env) for p in parsers]
        return [f.result() for f in futures]


def report(results) -> str:
    lines = []
    for res in results:
        tally = ", ".join(f"{k} {v}" for k, v in sorted(res["tally"].items()))
        lines.append(f"{res['parser']:20s} {res['cases']:6d} cases {res['seconds']:6.1f} s: "
                     f"{tally}")
        for f in res["findings"][:5]:
            lines.append(f"    FINDING case {f['case']} (seed {f['seed']}): {f['outcome']}\n"
                         f"{f['trace'][-1500:]}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--parser", required=True)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--start", type=int, default=0)
    w.add_argument("--count", type=int, default=100)
    w.add_argument("--cap", type=int, default=CAP_BYTES)
    r = sub.add_parser("run")
    r.add_argument("--parser", action="append", choices=PARSERS)
    r.add_argument("--cases", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--json", help="write the results here")
    p = sub.add_parser("repro")
    p.add_argument("--parser", required=True, choices=PARSERS)
    p.add_argument("--case", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "worker":
        worker(a.parser, a.seed, a.start, a.count, a.cap)
    elif a.cmd == "run":
        results = run_all(a.parser or PARSERS, a.cases, a.seed, a.jobs)
        print(report(results))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
        sys.exit(1 if any(res["findings"] for res in results) else 0)
    else:
        import ddpm
        ddpm.set_num_threads(1)
        with tempfile.TemporaryDirectory(prefix="ddpm-fuzz-") as work:
            seeds = make_seeds(work)
            try:
                run_case(a.parser, a.case, a.seed, seeds, work)
                print("ok")
            except BaseException:
                traceback.print_exc()


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
