"""The whole U-Net against diffusers' UNet2DModel, files, and bad input.

The oracle is diffusers + PyTorch autograd on the SAME weights: forward within
1e-4, gradients of an MSE loss w.r.t. the input and every parameter within
1e-3 relative.  Per-layer float64 references and finite differences live in
test_layers.py.
"""
import json
import os
import resource

import numpy as np
import pytest

import ddpm
from ddpm import UNet

CONFIGS = {
    # the reference config of the benchmarks (28x28x1, attention at 7x7 and mid)
    "reference": dict(),
    # RGB 32x32, attention in the first down and last up block, two heads of 8
    "rgb32": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                  layers_per_block=1, down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D"), norm_num_groups=4,
                  attention_head_dim=8),
    # odd channel counts that still divide by the groups; one head per block
    "odd": dict(sample_size=12, in_channels=1, out_channels=2, block_out_channels=(15, 21),
                layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=3,
                attention_head_dim=None),
    # no attention anywhere (mid block included)
    "no_attention": dict(sample_size=16, in_channels=2, out_channels=2,
                         block_out_channels=(8, 16, 16), layers_per_block=1,
                         down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                         norm_num_groups=4, add_attention=False),
    # ResNet blocks of 2 channels: their 3x3 convolutions take the im2col path
    # (Winograd needs >= 4 input channels), with the time projection and the
    # residual as the start of the conv output
    "narrow": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(2, 4),
                   layers_per_block=1, down_block_types=("DownBlock2D",) * 2,
                   up_block_types=("UpBlock2D",) * 2, norm_num_groups=2, add_attention=False),
}


def _randomise(model, seed):
    """Perturb every parameter (norms included) so no gradient hides behind 1s and 0s."""
    rng = np.random.default_rng(seed)
    model.params += (0.05 * rng.standard_normal(model.num_parameters)).astype(np.float32)


def _pair(name, seed=0):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    ours = UNet(seed=seed, **CONFIGS[name])
    _randomise(ours, seed + 1)
    theirs = ours.to_diffusers()
    return torch, ours, theirs


@pytest.mark.parametrize("name,batch", [("reference", 3), ("reference", 1), ("rgb32", 2),
                                        ("odd", 2), ("no_attention", 1), ("narrow", 2)])
def test_forward_and_gradients_match_diffusers(name, batch):
    torch, ours, theirs = _pair(name)
    c = ours.config
    rng = np.random.default_rng(42)
    x = rng.standard_normal((batch, c["in_channels"], c["sample_size"], c["sample_size"])).astype(np.float32)
    t = rng.integers(0, 1000, batch)
    target = rng.standard_normal((batch, c["out_channels"], c["sample_size"], c["sample_size"])).astype(np.float32)

    y = ours(x, t)
    xt = torch.tensor(x, requires_grad=True)
    ref = theirs(xt, torch.tensor(t)).sample
    fwd_err = float(np.abs(y - ref.detach().numpy()).max())
    assert fwd_err <= 1e-4, f"{name}: forward max abs diff {fwd_err:.3g} > 1e-4"

    # MSE loss, PyTorch autograd vs our backward
    loss = ((ref - torch.tensor(target)) ** 2).mean()
    theirs.zero_grad()
    loss.backward()
    ours.zero_grad()
    dx = ours.backward(2.0 * (y - target) / y.size)

    gx = xt.grad.numpy()
    rel = np.abs(dx - gx).max() / np.abs(gx).max()
    assert rel <= 1e-3, f"{name}: input gradient relative error {rel:.3g}"

    ref_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    scale = max(np.abs(g).max() for g in ref_grads.values())
    worst, worst_name = 0.0, None
    for pname, g in ours.named_grads():
        r = ref_grads[pname]
        # Relative to the tensor's own gradient size, floored at 1e-3 of the
        # largest gradient: some gradients are exactly 0 in exact arithmetic
        # (to_k.bias: softmax ignores a shift shared by all keys), and there
        # both sides hold only rounding noise.
        err = np.abs(g - r).max() / max(np.abs(r).max(), 1e-3 * scale)
        if err > worst:
            worst, worst_name = err, pname
    assert worst <= 1e-3, f"{name}: parameter gradient relative error {worst:.3g} at {worst_name}"


def test_parameter_names_shapes_and_order_are_diffusers():
    torch, ours, theirs = _pair("reference")
    sd = theirs.state_dict()
    ours_list = [(n, a.shape) for n, a in ours.named_parameters()]
    theirs_list = [(n, tuple(v.shape)) for n, v in sd.items()]
    assert ours_list == theirs_list
    assert ours.num_parameters == sum(p.numel() for p in theirs.parameters())


def test_save_load_round_trip_is_bit_identical(tmp_path):
    net = UNet(seed=3, **CONFIGS["odd"])
    _randomise(net, 4)
    x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    y = net(x, [3, 700])
    net.save(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "diffusion_pytorch_model.safetensors"]
    back = UNet.load(tmp_path / "m")
    assert back.config == net.config
    np.testing.assert_array_equal(back.params, net.params)
    np.testing.assert_array_equal(back(x, [3, 700]), y)


def test_export_loads_in_diffusers_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    net = UNet(seed=5)
    _randomise(net, 6)
    net.save(tmp_path / "m")
    m = diffusers.UNet2DModel.from_pretrained(tmp_path / "m").eval()
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.tensor(x), torch.tensor([10, 900])).sample.numpy()
    err = np.abs(net(x, [10, 900]) - ref).max()
    assert err <= 1e-4, f"max abs diff {err:.3g}"
    # and a diffusers-saved folder / instance comes back with the same weights
    m.save_pretrained(tmp_path / "d")
    for src in (tmp_path / "d", m):
        back = UNet.from_diffusers(src)
        np.testing.assert_array_equal(back.params, net.params)


def _saved(tmp_path):
    net = UNet(seed=1, **CONFIGS["no_attention"])
    path = net.save(tmp_path / "m")
    return net, path, os.path.join(path, "diffusion_pytorch_model.safetensors")


def test_truncated_weight_file_is_a_clear_error(tmp_path):
    _, path, wfile = _saved(tmp_path)
    data = open(wfile, "rb").read()
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        with open(wfile, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(OSError, match="safetensors"):
            UNet.load(path)


def test_tampered_weight_files_are_clear_errors(tmp_path):
    from safetensors.numpy import load_file, save_file
    net, path, wfile = _saved(tmp_path)
    good = load_file(wfile)
    # a tensor with the wrong shape
    bad = dict(good)
    bad["conv_in.weight"] = np.zeros((8, 2, 3, 1), np.float32)
    save_file(bad, wfile)
    with pytest.raises(ValueError, match="conv_in.weight"):
        UNet.load(path)
    # a missing tensor
    bad = dict(good)
    del bad["conv_out.bias"]
    save_file(bad, wfile)
    with pytest.raises(ValueError, match="conv_out.bias"):
        UNet.load(path)
    # NaN smuggled into the weights
    bad = dict(good)
    bad["conv_out.bias"] = np.full_like(good["conv_out.bias"], np.nan)
    save_file(bad, wfile)
    with pytest.raises(ValueError, match="NaN"):
        UNet.load(path)
    # an integer tensor
    bad = dict(good)
    bad["conv_out.bias"] = good["conv_out.bias"].astype(np.int32)
    save_file(bad, wfile)
    with pytest.raises((TypeError, ValueError), match="conv_out.bias"):
        UNet.load(path)
    # a header that lies about the data size
    save_file(good, wfile)
    raw = bytearray(open(wfile, "rb").read())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["conv_in.weight"]["data_offsets"][1] += 4096
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(wfile, "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb + bytes(raw[8 + n:]))
    with pytest.raises(OSError):
        UNet.load(path)


def test_bad_config_files(tmp_path):
    _, path, _ = _saved(tmp_path)
    cfg_file = os.path.join(path, "config.json")
    cfg = json.load(open(cfg_file))
    for key, value, match in (("dropout", 0.1, "dropout"),
                              ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
                              ("down_block_types", ["CrossAttnDownBlock2D"] * 3, "down_block_types"),
                              ("_class_name", "UNet2DConditionModel", "UNet2DConditionModel")):
        json.dump({**cfg, key: value}, open(cfg_file, "w"))
        with pytest.raises(ValueError, match=match):
            UNet.load(path)
    open(cfg_file, "w").write("{not json")
    with pytest.raises(OSError, match="JSON"):
        UNet.load(path)
    os.remove(cfg_file)
    with pytest.raises(OSError, match="config.json"):
        UNet.load(path)


@pytest.mark.parametrize("bad,exc,match", [
    (dict(dropout=0.1), ValueError, "dropout"),
    (dict(sample_size=30), ValueError, "divisible"),
    (dict(block_out_channels=(32, 60, 128)), ValueError, "norm_num_groups"),
    (dict(down_block_types=("DownBlock2D",) * 2), ValueError, "down_block_types"),
    (dict(up_block_types=("UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D")), ValueError, "up_block_types"),
    (dict(attention_head_dim=5), ValueError, "attention_head_dim"),
    (dict(act_fn="gelu"), ValueError, "act_fn"),
    (dict(layers_per_block=0), ValueError, "layers_per_block"),
    (dict(sample_size=28.0), TypeError, "sample_size"),
    (dict(colour="blue"), ValueError, "colour"),
])
def test_unsupported_configs_name_the_key(bad, exc, match):
    with pytest.raises(exc, match=match):
        UNet(**bad)


def test_bad_inputs_to_forward_and_backward():
    net = UNet(seed=0, **CONFIGS["no_attention"])
    x = np.zeros((2, 2, 16, 16), np.float32)
    with pytest.raises(TypeError):
        net(x.astype(np.int64), 0)
    with pytest.raises(ValueError, match="shape"):
        net(np.zeros((2, 3, 16, 16), np.float32), 0)           # wrong channels
    with pytest.raises(ValueError, match="shape"):
        net(np.zeros((2, 2, 8, 8), np.float32), 0)             # wrong size
    with pytest.raises(ValueError, match="shape"):
        net(np.zeros((2, 16, 16), np.float32), 0)              # missing channel axis
    with pytest.raises(ValueError, match="empty"):
        net(np.zeros((0, 2, 16, 16), np.float32), 0)
    with pytest.raises(ValueError, match="t"):
        net(x, -1)
    with pytest.raises(ValueError, match="t"):
        net(x, [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        net(x, [0, np.nan])
    xn = x.copy()
    xn[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net(xn, 0)
    with pytest.raises(RuntimeError, match="forward"):
        UNet(seed=0, **CONFIGS["no_attention"]).backward(x)
    net(x, 0)
    with pytest.raises(ValueError, match="batch"):
        net.backward(np.zeros((3, 2, 16, 16), np.float32))
    g = np.ones((2, 2, 16, 16), np.float32)
    g[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        net.backward(g)
    ref = UNet(seed=0)
    with pytest.raises(ValueError, match="999"):
        ref(np.zeros((1, 1, 28, 28)), 1000)                # num_train_timesteps = 1000


def test_learner_inputs_convert():
    # float64 and non-contiguous views work and equal the float32 copy
    net = UNet(seed=0, **CONFIGS["no_attention"])
    x64 = np.random.default_rng(0).standard_normal((2, 2, 32, 32))
    view = x64[:, :, ::2, ::2]
    a = net(view, np.array([1, 2]))
    b = net(np.ascontiguousarray(view, dtype=np.float32), [1.0, 2.0])
    np.testing.assert_array_equal(a, b)


def test_backward_accumulates_and_zero_grad_clears():
    net = UNet(seed=0, **CONFIGS["odd"])
    x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
    y = net(x, [1, 2])
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    net.zero_grad()
    net.backward(g)
    once = net.grads.copy()
    assert np.abs(once).max() > 0
    net.backward(g)
    np.testing.assert_allclose(net.grads, 2 * once, rtol=1e-6, atol=1e-7 * np.abs(once).max())
    net.zero_grad()
    assert not net.grads.any()


@pytest.mark.parametrize("B", [8, 5])
def test_same_numbers_at_one_and_two_threads(B):
    # B = 5: a 1x1 conv GEMM just over matmul's split threshold, which one
    # thread once ran whole and two threads in blocks (different OpenBLAS
    # kernels, different bits)
    before = ddpm.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            ddpm.set_num_threads(n)
            net = UNet(seed=0)
            _randomise(net, 1)
            x = np.random.default_rng(0).standard_normal((B, 1, 28, 28)).astype(np.float32)
            y = net(x, np.arange(B) * 100)
            dx = net.backward(np.sin(y))
            out.append((y, dx, net.grads.copy()))
        for a, b in zip(out[0], out[1]):
            assert np.array_equal(a, b), f"differs by {np.abs(a - b).max():.3g}"
    finally:
        ddpm.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inference_forward_is_the_same_numbers(name):
    # keep=False (the samplers' forward) folds each GroupNorm + SiLU into the
    # convolution after it (Winograd F(4x4) and F(2x2) staging, and im2col in
    # "narrow") instead of writing the norm's output: the same bits as the
    # forward that keeps its activations, on a net whose norms are not 1s and 0s
    from ddpm import _core
    cfg = CONFIGS[name]
    net = UNet(seed=4, **cfg)
    _randomise(net, 5)
    S, cin, cout = net.config["sample_size"], net.config["in_channels"], net.config["out_channels"]
    x = np.random.default_rng(6).standard_normal((3, cin, S, S)).astype(np.float32)
    t = np.array([0.0, 400.0, 999.0], np.float32)
    kept, folded = (np.empty((3, cout, S, S), np.float32) for _ in range(2))
    _core.unet_forward(net._handle, net.params, x, t, kept, None, True)
    gen = _core.unet_forward(net._handle, net.params, x, t, folded, None, False)
    assert np.abs(kept).max() > 0.1    # a real output, not zeros on both sides
    assert np.array_equal(kept, folded), f"differs by {np.abs(kept - folded).max():.3g}"
    # nothing was kept for a backward: it is refused, never run on stale numbers
    with pytest.raises(RuntimeError, match="activations this backward needs are gone"):
        _core.unet_backward(net._handle, net.params, net.grads, np.ones_like(folded), None, gen)
    # the same through UNet.forward(grad=False), and its backward asks for grad=True
    assert np.array_equal(net(x, t, grad=False), kept)
    with pytest.raises(RuntimeError, match="grad=True"):
        net.backward(np.ones_like(kept))
    with pytest.raises(TypeError, match="grad must be True or False"):
        net(x, t, grad="no")


def _switch_keeps_the_numbers(switch, B, seed):
    """The forward that keeps its activations, the one that does not, and the
    backward, with the testing switch on and then off: the same bits."""
    from ddpm import _core
    net = UNet(seed=seed)
    _randomise(net, seed + 3)
    rng = np.random.default_rng(seed + 4)
    x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 1000, B).astype(np.float32)
    g = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)

    def run():
        kept, folded = (np.empty_like(x) for _ in range(2))
        _core.unet_forward(net._handle, net.params, x, t, folded, None, False)
        gen = _core.unet_forward(net._handle, net.params, x, t, kept, None, True)
        net.zero_grad()
        dx = np.empty_like(x)
        _core.unet_backward(net._handle, net.params, net.grads, g, dx, gen)
        return kept, folded, dx, net.grads.copy()

    try:
        on = run()
        switch(False)
        off = run()
    finally:
        switch(True)
    assert np.abs(on[0]).max() > 0.1
    for name, a, b in zip(("kept", "folded", "dx", "grads"), on, off):
        assert np.array_equal(a, b), f"{name} differs by {np.abs(a - b).max():.3g}"


def test_whole_small_planes_give_the_same_numbers():
    # at 32 images the 7x7 level's convolutions take their planes whole, 8 side
    # by side (wino_f4_planes.c), with each GroupNorm + SiLU folded in when
    # nothing is kept: the forward that keeps its activations, the one that does
    # not, and the backward give the numbers of the row-by-row transforms
    from ddpm import _core
    _switch_keeps_the_numbers(_core.conv2d_whole_planes, 32, 4)


def test_sixteen_lane_rows_give_the_same_numbers():
    # where the CPU has AVX-512F, the GroupNorm + SiLU rows (folded into the
    # convolutions' input transforms, or written out when kept) and the
    # attention's exps run in 16-float vectors: the forward (kept or not) and
    # the backward give the 8-float bits
    from ddpm import _core
    if not _core.simd_wide(True):
        pytest.skip("this CPU has no AVX-512F: the 8-float rows are the only ones")
    _switch_keeps_the_numbers(_core.simd_wide, 33, 5)


def test_backward_does_not_depend_on_the_previous_call():
    # the backward writes each activation gradient first and adds later,
    # never zeroing the workspace: a previous call's numbers must not leak
    cfg = CONFIGS["no_attention"]
    x = np.random.default_rng(1).standard_normal((3, 2, 16, 16)).astype(np.float32)
    t = np.array([5, 500, 900])
    used, fresh = UNet(seed=2, **cfg), UNet(seed=2, **cfg)
    y = used(x[::-1].copy(), t[::-1].copy())
    used.backward(np.full_like(y, 7.0))
    used.zero_grad()
    ya = used(x, t)
    dxa = used.backward(np.sin(ya))
    yb = fresh(x, t)
    dxb = fresh.backward(np.sin(yb))
    assert np.array_equal(dxa, dxb) and np.array_equal(used.grads, fresh.grads)


def test_batch_changes_match_a_fresh_network():
    # the workspace is reallocated when the batch changes and every named
    # view re-pointed: after B = 3 -> 5 -> 3 the numbers are a fresh net's
    cfg = CONFIGS["rgb32"]
    rng = np.random.default_rng(3)
    xs = {B: rng.standard_normal((B, 3, 32, 32)).astype(np.float32) for B in (3, 5)}
    used, fresh = UNet(seed=4, **cfg), UNet(seed=4, **cfg)
    for B in (3, 5):
        y = used(xs[B], np.arange(B) * 50)
        used.backward(np.cos(y))
    used.zero_grad()
    ya = used(xs[3], [7, 70, 700])
    dxa = used.backward(np.sin(ya))
    yb = fresh(xs[3], [7, 70, 700])
    dxb = fresh.backward(np.sin(yb))
    for name, a, b in (("y", ya, yb), ("dx", dxa, dxb), ("grads", used.grads, fresh.grads)):
        assert np.array_equal(a, b), f"{name} differs by {np.abs(a - b).max():.3g}"


def test_profile_times_the_layers_and_keeps_the_numbers():
    net = UNet(seed=0, **CONFIGS["rgb32"])
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y0 = net(x, [1, 500])
    dx0 = net.backward(np.sin(y0))
    net.profile(True)
    y1 = net(x, [1, 500])
    dx1 = net.backward(np.sin(y1))
    prof = net.profile(False)
    assert np.array_equal(y0, y1) and np.array_equal(dx0, dx1)
    assert len(prof) == 10 and all(v >= 0 for v in prof.values()), prof
    for kind in ("conv3x3 forward", "conv3x3 backward", "groupnorm(+silu) forward",
                 "attention core forward", "attention core backward", "time embedding"):
        assert prof[kind] > 0, f"nothing timed as {kind!r}: {prof}"
    net(x, [1, 500])
    assert sum(net.profile(False).values()) == 0, "timing must stop when disabled"


def test_inputs_not_modified_and_memory_flat():
    net = UNet(seed=0, **CONFIGS["no_attention"])
    x = np.random.default_rng(0).standard_normal((2, 2, 16, 16)).astype(np.float32)
    keep = x.copy()
    net(x, 3)
    np.testing.assert_array_equal(x, keep)
    for _ in range(5):
        net(x, 3)
        net.backward(x)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(100):
        net(x, 3)
        net.backward(x)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    assert grown < 20_000, f"peak RSS grew by {grown} kB over 100 forward/backward calls"


def test_flops_and_repr():
    net = UNet()
    # 3x3 convolutions dominate; a hand count for conv_in alone bounds it below
    assert net.flops(2) == 2 * net.flops(1) > 2 * 32 * 9 * 28 * 28
    assert "3,939,393" in repr(net)
