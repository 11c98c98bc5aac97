"""Small hostile files cannot blow up memory, hang, or raise the wrong exception
(issue 14).

Every parser of ddpm (IDX data, config.json, scheduler configs, weights,
checkpoints, FeatureNet and feature-statistics files) is given the files a
hostile user would craft: headers whose sizes overflow, configs promising a
network far bigger than the weights, FIFOs and /dev/zero, deeply nested JSON,
corrupt headers, unsupported dtypes, metadata of the wrong structure.  Calls
that could exhaust memory or hang run in a subprocess under an address-space
cap (RLIMIT_AS) and a timeout, and must fail fast with ValueError/OSError while
the process stays small.
"""
from __future__ import annotations

import gzip
import json
import os
import struct
import textwrap

import numpy as np
import pytest

import ddpm
from ddpm import datasets, metrics
from ddpm._io import read_json_object

from conftest import assert_subprocess_ok

TINY = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
GiB = 1 << 30


# Under AddressSanitizer (.ci/sanitize) the address space holds ASan's shadow (terabytes)
# and the resident size its quarantine: no cap there, and the size checks are left to
# the ordinary run.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def capped(code: str, cap: int = 2 * GiB, timeout: float = 60.0) -> str:
    """Run code in a subprocess whose address space is capped at ``cap`` bytes; it
    must exit 0 (no crash, no MemoryError escaping) within ``timeout`` seconds."""
    prelude = textwrap.dedent(f"""
        import resource
        if not {SANITIZED}:
            resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
        def peak_mib():      # VmHWM: this process image's peak (ru_maxrss survives exec,
            if {SANITIZED}:  # so it would count the forking test runner's size)
                return 0
            with open("/proc/self/status") as f:
                hwm = [line for line in f if line.startswith("VmHWM:")]
            if not hwm:      # not Linux: ru_maxrss, the best there is
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return int(hwm[0].split()[1]) / 1024
    """)
    return assert_subprocess_ok(prelude + textwrap.dedent(code), timeout=timeout,
                                env={"OMP_NUM_THREADS": "1"})


def idx_bytes(dims, data: bytes, code: int = 0x08) -> bytes:
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(">" + "I" * len(dims),
                                                                 *dims) + data


# ------------------------------------------------------------------------ IDX files
def test_idx_sizes_are_python_ints_not_int64(tmp_path):
    # (2**32-1) * 641 * 6700417 = 2**64 - 1: int64 made it -1, the 2 GiB guard passed and
    # f.read(-1) inflated the whole stream
    p = tmp_path / "overflow.gz"
    p.write_bytes(gzip.compress(idx_bytes((2 ** 32 - 1, 641, 6700417), bytes(1 << 20))))
    with pytest.raises(ValueError, match="implausibly large"):
        datasets.read_idx(p)


def test_idx_gzip_bomb_is_read_in_bounded_chunks_and_stops_at_the_declared_size(tmp_path):
    # a 1 MB file of gzip members that would inflate to 1 GiB; the header declares 8 MB
    member = gzip.compress(bytes(1 << 20), 9)
    p = tmp_path / "bomb.gz"
    with open(p, "wb") as f:
        f.write(gzip.compress(idx_bytes((8, 1024, 1024), bytes(1 << 20))))
        for _ in range(1024):
            f.write(member)
    out = capped(f"""
        import ddpm
        try:
            ddpm.datasets.read_idx({str(p)!r})
        except ValueError as e:
            assert "trailing" in str(e), e
        print(round(peak_mib()))
    """, cap=2 * GiB)
    assert int(out.split()[-1]) < 400, f"peak RSS {out.split()[-1]} MiB reading a 1 MB file"


def test_idx_header_that_the_file_cannot_hold_is_refused_before_allocating(tmp_path):
    raw = tmp_path / "liar-idx3-ubyte"
    raw.write_bytes(idx_bytes((2_000_000, 28, 28), bytes(100)))          # 1.5 GiB declared
    gz = tmp_path / "liar.gz"
    gz.write_bytes(gzip.compress(idx_bytes((2_000_000, 28, 28), bytes(100))))
    # under a 1 GiB address space: allocating what the header declares would be a MemoryError
    capped(f"""
        import ddpm
        for p, exc, what in (({str(raw)!r}, OSError, "truncated"),
                             ({str(gz)!r}, ValueError, "can hold")):
            try:
                ddpm.datasets.read_idx(p)
            except exc as e:
                assert what in str(e), e
            else:
                raise AssertionError("accepted")
        print("OK")
    """, cap=GiB)
    with pytest.raises(ValueError, match="trailing"):
        (tmp_path / "long").write_bytes(idx_bytes((3,), bytes(4)))
        datasets.read_idx(tmp_path / "long")


def test_dataset_loader_checks_shapes_before_reading_the_data(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((3,), bytes([1, 2, 3])))
    # the images' header claims 10 images: refused from the header alone (no data at all)
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes((10, 28, 28), b""))
    with pytest.raises(ValueError, match="10 images but 3 labels"):
        ddpm.datasets.fashion_mnist("test", path=folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    model = tmp_path / "m"
    os.makedirs(model)
    os.mkfifo(model / "config.json")
    ck = tmp_path / "ck.safetensors"
    os.mkfifo(ck)
    # a FIFO with no writer blocks open()/read() forever; /dev/zero never ends
    capped(f"""
        import ddpm, time
        from ddpm import metrics
        from ddpm.training import checkpoint_diffusion
        t0 = time.time()
        calls = [lambda: ddpm.datasets.read_idx({str(fifo)!r}),
                 lambda: ddpm.datasets.read_idx("/dev/zero"),
                 lambda: ddpm.UNet.load({str(model)!r}),
                 lambda: ddpm.Diffusion.load({str(tmp_path)!r}),
                 lambda: ddpm.Trainer.resume({str(ck)!r}, None),
                 lambda: checkpoint_diffusion("/dev/zero"),
                 lambda: metrics.FeatureNet.load({str(fifo)!r}),
                 lambda: metrics.load_statistics("/dev/zero"),
                 lambda: ddpm._io.read_json_object("/dev/zero", "test")]
        for call in calls:
            try:
                call()
            except OSError as e:
                assert "regular file" in str(e) or "no " in str(e), e
            else:
                raise AssertionError("accepted")
        assert time.time() - t0 < 20
        print("OK")
    """, cap=2 * GiB, timeout=60)


# ------------------------------------------------------------------- JSON configs
def test_json_configs_deeply_nested_oversized_or_undecodable(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(OSError, match="nested too deeply"):
        read_json_object(p, "test")
    p.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(OSError, match="JSON"):
        read_json_object(p, "test")
    p.write_text('{"a": ' + "9" * 5000 + "}")        # beyond Python's int-digit limit
    with pytest.raises(OSError, match="JSON"):
        read_json_object(p, "test")
    p.write_text(json.dumps({"a": "x" * 1000}))
    with pytest.raises(ValueError, match="limit"):
        read_json_object(p, "test", max_bytes=100)
    net = ddpm.UNet(seed=0, **TINY)
    folder = net.save(tmp_path / "m")
    cfg = os.path.join(folder, "config.json")
    with open(cfg, "w") as f:
        f.write('{"sample_size": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(OSError, match="nested too deeply"):
        ddpm.UNet.load(folder)


def test_a_config_promising_a_huge_network_is_refused_before_allocating(tmp_path):
    # 402 bytes of config.json describing 3.9e9 parameters beside a small model's weights
    small = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
    folder = small.save(tmp_path / "pipe")
    cfg_path = os.path.join(folder, "unet", "config.json")
    cfg = json.load(open(cfg_path))
    cfg.update(block_out_channels=[1536] * 6, layers_per_block=4, sample_size=64,
               norm_num_groups=32, down_block_types=["DownBlock2D"] * 6,
               up_block_types=["UpBlock2D"] * 6)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    tr = ddpm.Trainer(small, np.zeros((4, 1, 8, 8), np.float32), batch_size=2, progress=False)
    ck = tmp_path / "ck.safetensors"
    tr.save(ck)
    _rewrite_metadata(ck, model_config=json.dumps(cfg))
    capped(f"""
        import ddpm, time
        from ddpm.training import checkpoint_diffusion
        t0 = time.time()
        for call in (lambda: ddpm.UNet.load({os.path.join(folder, "unet")!r}),
                     lambda: ddpm.Diffusion.load({folder!r}),
                     lambda: ddpm.Trainer.resume({str(ck)!r}, None),
                     lambda: checkpoint_diffusion({str(ck)!r})):
            try:
                call()
            except ValueError as e:
                assert "shape" in str(e) or "does not hold" in str(e), e
            else:
                raise AssertionError("accepted")
        assert peak_mib() < 400, peak_mib()
        assert time.time() - t0 < 20
        print("OK")
    """, cap=2 * GiB)


def test_scheduler_config_values_of_the_wrong_type_name_the_key(tmp_path):
    d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
    folder = d.save(tmp_path / "pipe")
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    good = json.load(open(path))
    for key, value, exc in (("rescale_betas_zero_snr", "false", TypeError),   # was True
                            ("num_train_timesteps", 50.0, TypeError),
                            ("num_train_timesteps", 10 ** 30, ValueError),
                            ("beta_start", "0.001", TypeError),
                            ("prediction_type", ["epsilon"], TypeError),
                            ("trained_betas", {"a": 1}, TypeError),
                            ("trained_betas", [0.1] * 49 + ["x"], TypeError),
                            ("beta_schedule", None, TypeError)):
        json.dump({**good, key: value}, open(path, "w"))
        with pytest.raises(exc, match=key):
            ddpm.Diffusion.load(folder)
    json.dump(good, open(path, "w"))
    assert ddpm.Diffusion.load(folder).schedule.T == 50


def test_unet_config_strings_are_not_booleans(tmp_path):
    for v in ("no", "false", 0, None):
        with pytest.raises(TypeError, match="add_attention"):
            ddpm.UNet(seed=0, add_attention=v, **TINY)
    folder = ddpm.UNet(seed=0, **TINY).save(tmp_path / "m")
    cfg = json.load(open(os.path.join(folder, "config.json")))
    for key, value in (("add_attention", "false"), ("down_block_types", "DownBlock2D"),
                       ("up_block_types", 7), ("block_out_channels", "816")):
        json.dump({**cfg, key: value}, open(os.path.join(folder, "config.json"), "w"))
        with pytest.raises((TypeError, ValueError), match=key):
            ddpm.UNet.load(folder)
    with pytest.raises(TypeError, match="string keys"):
        ddpm.UNet.from_config({1: 2})


# ------------------------------------------------------------------ safetensors files
def load_statistics(path):
    from fuzzing import load_statistics as load     # older versions had no public loader
    return load(path)


def _read_st(path):
    """(metadata, tensors) of a safetensors file, through the safetensors package."""
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}


def write_safetensors(path, tensors, metadata=None):
    from safetensors.numpy import save_file
    save_file(tensors, str(path), metadata=metadata)


def _rewrite_metadata(path, **changes):
    """Rewrite a checkpoint's metadata fields (strings), keeping its tensors."""
    meta, tensors = _read_st(path)
    meta.update(changes)
    write_safetensors(path, tensors, {k: v for k, v in meta.items() if v is not None})


def _metadata(path):
    return _read_st(path)[0]


def _raw_safetensors(path, header: dict, data: bytes):
    hb = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb + data)


def test_our_writer_matches_the_safetensors_package_byte_for_byte(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    from ddpm._safetensors import write_safetensors
    rng = np.random.default_rng(0)
    tensors = {"b.weight": rng.standard_normal((3, 4)).astype(np.float32),
               "a": rng.standard_normal(5).astype(np.float32),
               "half": rng.standard_normal((2, 2)).astype(np.float16),
               "wide": rng.standard_normal(3), "empty": np.zeros((0, 3), np.float32)}
    write_safetensors(tmp_path / "ours", tensors)
    assert (tmp_path / "ours").read_bytes() == st.save(tensors)
    # with metadata (whose order the package does not fix) it reads back the same
    meta = {"z": "1", "format": "x", "ünï": "çödé"}
    write_safetensors(tmp_path / "ours", tensors, meta)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "ours"), framework="numpy") as f:
        assert f.metadata() == meta
        for k, v in tensors.items():
            back = f.get_tensor(k)
            assert back.dtype == v.dtype and np.array_equal(back, v)


def test_corrupt_safetensors_files_are_oserrors_naming_the_file(tmp_path):
    net = metrics.FeatureNet(dict(widths=(8,), depth=(1,), groups=4))
    good = tmp_path / "good.safetensors"
    net.save(good)
    blob = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for data in (b"", b"\x00" * 7, (2 ** 63).to_bytes(8, "little") + b"{}",
                 (40).to_bytes(8, "little") + b"[" * 40, blob[:-3], blob + b"x",
                 blob[:8] + b"[" + blob[9:]):
        bad.write_bytes(data)
        for load in (metrics.FeatureNet.load, load_statistics,
                     lambda p: ddpm.Trainer.resume(p, None)):
            with pytest.raises(OSError, match="bad.safetensors"):
                load(bad)


def test_unsupported_and_integer_dtypes_are_value_errors(tmp_path):
    net = metrics.FeatureNet(dict(widths=(8,), depth=(1,), groups=4))
    path = tmp_path / "f.safetensors"
    net.save(path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    infos = json.loads(raw[8:8 + n])
    meta = infos.pop("__metadata__")
    names = sorted(infos, key=lambda k: infos[k]["data_offsets"][0])
    for code, size in (("F8_E4M3", 1), ("I32", 4), ("U8", 1), ("BOOL", 1), ("F4", None)):
        header, pos = {"__metadata__": meta}, 0
        for n in names:
            count = int(np.prod(infos[n]["shape"]))
            nbytes = count * (size or 4) if n == names[0] else count * 4
            header[n] = {"dtype": code if n == names[0] else "F32",
                         "shape": infos[n]["shape"], "data_offsets": [pos, pos + nbytes]}
            pos += nbytes
        _raw_safetensors(path, header, bytes(pos))
        with pytest.raises(ValueError, match=names[0]):
            metrics.FeatureNet.load(path)
    # and a U-Net's weights: one F8_E4M3 tensor (an AttributeError in the safetensors
    # package's NumPy reader), one integer tensor
    folder = ddpm.UNet(seed=0, **TINY).save(tmp_path / "m")
    wfile = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    raw = open(wfile, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    for code, size in (("F8_E4M3", 1), ("I32", 4)):
        h = json.loads(json.dumps(header))
        b, e = h["conv_in.bias"]["data_offsets"]
        count = (e - b) // 4
        h["conv_in.bias"]["dtype"] = code
        shift = count * size - (e - b)
        for v in h.values():                       # later tensors move by the size change
            if isinstance(v, dict) and "data_offsets" in v and v["data_offsets"][0] > b:
                v["data_offsets"] = [v["data_offsets"][0] + shift, v["data_offsets"][1] + shift]
        h["conv_in.bias"]["data_offsets"] = [b, b + count * size]
        _raw_safetensors(wfile, h, data[:b] + bytes(count * size) + data[e:])
        with pytest.raises(ValueError, match="conv_in.bias"):
            ddpm.UNet.load(folder)


def test_feature_statistics_file_is_checked(tmp_path):
    path = tmp_path / "stats.safetensors"
    mu, sigma = metrics.load_statistics(metrics.TEST_FEATURES_PATH)
    assert mu.shape == (128,) and sigma.shape == (128, 128) and mu.dtype == np.float64
    for tensors, match in (({"mu": mu}, "mu and sigma"),
                           ({"mu": mu, "sigma": sigma[:5]}, "shape"),
                           ({"mu": mu[None], "sigma": sigma}, r"shape \(D,\)"),
                           ({"mu": mu, "sigma": sigma + np.triu(np.ones_like(sigma))},
                            "symmetric"),
                           ({"mu": np.full_like(mu, np.nan), "sigma": sigma}, "NaN")):
        write_safetensors(path, tensors)
        with pytest.raises(ValueError, match=match):
            metrics.load_statistics(path)
    write_safetensors(path, {"mu": mu, "sigma": sigma})
    back = metrics.load_statistics(path)
    assert np.array_equal(back[0], mu) and np.array_equal(back[1], sigma)


def test_featurenet_config_in_metadata_is_checked(tmp_path):
    net = metrics.FeatureNet(dict(widths=(8,), depth=(1,), groups=4))
    path = tmp_path / "f.safetensors"
    for config in ('{"widths": [8], "depth": [1], "groups": 4, "in_channels": 2147483648}',
                   '{"widths": 8}', '{"widths": [8], "depth": [1], "groups": "4"}', '[1]',
                   '{"pool": ["max"]}', "[" * 10_000 + "]" * 10_000, '{"widths": [8.5]}'):
        net.save(path)
        _rewrite_metadata(path, config=config)
        with pytest.raises(ValueError, match="f.safetensors"):
            metrics.FeatureNet.load(path)


# ----------------------------------------------------------------------- checkpoints
def _checkpoint(tmp_path, ema=True):
    d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY), ddpm.NoiseSchedule("linear", timesteps=50))
    data = np.random.default_rng(0).uniform(-1, 1, (8, 1, 8, 8)).astype(np.float32)
    tr = ddpm.Trainer(d, data, batch_size=4, progress=False,
                      ema_decay=0.99 if ema else None)
    tr.fit(steps=2)
    path = tmp_path / "ck.safetensors"
    tr.save(path)
    return tr, path


BAD_METADATA = [
    # (field, value, what the message names) -- each was a KeyError, AttributeError,
    # IndexError, TypeError or OverflowError (or accepted, failing at the next fit)
    ("step", str(10 ** 30), "step"),
    ("step", "-1", "step"),
    ("step", "1e3", "step"),
    ("ema_updates", "999", "ema_updates"),
    ("objective", "epsilon", "objective"),
    ("model_config", "[1, 2]", "model_config"),
    ("model_config", '{"attention_head_dim": 2147483648}', "attention_head_dim"),
    ("model_config", '{"add_attention": "false"}', "add_attention"),
    ("schedule", '{"kind": "linear"}', "schedule"),
    ("schedule", '{"kind": ["linear"], "params": {}, "rescale": false, "betas": [0.1]}', "kind"),
    ("schedule", '{"kind": "linear", "params": {"s": 1}, "rescale": false, "betas": [0.1]}',
     "params"),
    ("schedule", '{"kind": "custom", "params": {}, "rescale": "no", "betas": [0.1]}', "rescale"),
    ("settings", "[]", "settings"),
    ("settings", '{"colour": 1}', "colour"),
    ("settings", '{"betas": 0.9}', "betas"),
    ("settings", '{"lr": "0.1"}', "lr"),
    ("settings", '{"decoupled_weight_decay": "false"}', "decoupled_weight_decay"),
    ("settings", '{"p_uncond": null}', "p_uncond"),
    ("settings", '{"total_steps": 10.5}', "total_steps"),
    ("history", "{}", "history"),
    ("history", '{"step": [1], "loss": [], "grad_norm": [], "lr": [], "bucket_loss": [],'
                ' "bucket_count": []}', "history"),
    ("history", '{"step": [], "loss": [], "grad_norm": [], "lr": [], "bucket_loss": [0],'
                ' "bucket_count": [0]}', "bucket_loss"),
    ("history", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("format", None, "checkpoint"),
    ("settings", None, "settings"),
]


@pytest.mark.parametrize("field,value,match", BAD_METADATA)
def test_checkpoint_metadata_of_the_wrong_structure_is_a_value_error(tmp_path, field, value,
                                                                      match):
    from ddpm.training import checkpoint_diffusion
    tr, path = _checkpoint(tmp_path)
    if field == "model_config" and value.startswith("{"):      # one key of the real config
        value = json.dumps({**json.loads(_metadata(path)["model_config"]), **json.loads(value)})
    _rewrite_metadata(path, **{field: value})
    with pytest.raises(ValueError, match=match):
        ddpm.Trainer.resume(path, tr.data, progress=False)
    if field not in ("history", "ema_updates"):
        with pytest.raises(ValueError, match=match):
            checkpoint_diffusion(path)


def test_checkpoint_tensors_are_checked_before_use(tmp_path):
    tr, path = _checkpoint(tmp_path)
    meta, tensors = _read_st(path)
    P = tr.diffusion.model.num_parameters
    for name, arr, match in (("adam_m", tensors["adam_m"][:-1], "shape"),
                             ("params", tensors["params"].astype(np.float16), "F16"),
                             ("ema", None, "ema"),
                             ("adam_v", np.full(P, np.inf, np.float32), "NaN")):
        bad = dict(tensors)
        if arr is None:
            del bad[name]
        else:
            bad[name] = arr
        write_safetensors(path, bad, meta)
        with pytest.raises(ValueError, match=match):
            ddpm.Trainer.resume(path, tr.data, progress=False)
    write_safetensors(path, tensors, meta)
    back = ddpm.Trainer.resume(path, tr.data, progress=False)
    assert back.step == 2 and np.array_equal(back.ema, tr.ema)
