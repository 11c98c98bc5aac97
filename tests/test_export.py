"""``ddpm export --to diffusers`` and examples/continue_in_pytorch.py: one step there (torch,
diffusers, accelerate) equals one ddpm.Trainer step from the same state, same t, noise and
batch, to 1e-4; the folder is what diffusers' unconditional training example's
``accelerator.load_state`` reads (its hooks, accelerate's loader)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import ddpm
from conftest import REPO as _REPO, run_in_subprocess
from pathlib import Path

REPO = Path(_REPO)

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

CFG = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
           down_block_types=("DownBlock2D", "AttnDownBlock2D"),
           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
           attention_head_dim=4, num_train_timesteps=100)


def example():
    spec = importlib.util.spec_from_file_location(
        "continue_in_pytorch", REPO / "examples" / "continue_in_pytorch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trained(tmp_path, objective="eps", warmup=3, steps=5, weight_decay=0.01, restart=None,
            **options):
    """A Trainer after ``steps`` steps; ``restart=(k, n)``: a warm restart
    (Trainer.extend(n)) after step k."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (12, 3, 8, 8)).astype(np.float32)
    d = ddpm.Diffusion(ddpm.UNet(seed=0, **CFG), ddpm.NoiseSchedule("linear", timesteps=100),
                       objective=objective)
    tr = ddpm.Trainer(d, x, batch_size=4, lr=3e-3, seed=1, ema_decay=0.99, warmup_steps=warmup,
                      weight_decay=weight_decay, progress=False, **options)
    if restart:
        tr.fit(steps=restart[0])
        tr.extend(restart[1], lr=2e-3)
    tr.fit(steps=steps - tr.step)
    ck = tr.save(tmp_path / "ck.safetensors")
    return tr, x, ck


def maxdiff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


COSINE = dict(lr_schedule="cosine", total_steps=8)


@pytest.mark.parametrize("objective, warmup, steps, options", [
    ("eps", 3, 5, {}), ("v", 10, 4, {}),
    ("eps", 2, 5, COSINE),                                 # cosine, past warm-up
    ("v", 2, 7, dict(COSINE, restart=(4, 6)))])            # a warm restart at step 4
def test_one_step_in_pytorch_equals_one_ddpm_step(tmp_path, objective, warmup, steps, options):
    tr, x, ck = trained(tmp_path, objective, warmup, steps, **options)
    if options:        # the rate moves from step to step: the case a constant rule gets wrong
        assert tr.lr_at(steps + 1) not in (tr.lr, tr.lr_at(steps + 2))
    from ddpm.export import export_diffusers
    ckdir = export_diffusers(ck, tmp_path / "gpu")
    assert ckdir.endswith(f"checkpoint-{steps}")
    run = example().load_run(str(tmp_path / "gpu"))
    unet = run["unet"]
    # the loaded state is ddpm's state
    for name, p in unet.named_parameters():
        ours = dict(tr.diffusion.model.named_parameters())[name]
        assert maxdiff(p.detach().numpy(), ours) == 0, name
    assert run["optimizer"].param_groups[0]["lr"] == pytest.approx(tr.lr_at(steps + 1))

    rng = np.random.default_rng(5)
    batch = x[:4]
    t = rng.integers(1, 101, 4)                          # lesson time 1..T
    noise = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    loss_t = example().training_step(run, torch.from_numpy(batch), torch.from_numpy(t - 1),
                                     torch.from_numpy(noise))
    loss_d = tr.train_step(batch, t=t, noise=noise)
    assert abs(loss_t - loss_d) < 1e-5, (loss_t, loss_d)
    P = {n: p.detach().numpy() for n, p in unet.named_parameters()}
    err = max(maxdiff(P[n], a) for n, a in tr.diffusion.model.named_parameters())
    assert err < 1e-4, f"parameters after one step differ by {err:.2e}"
    ema = ddpm.UNet.from_config(tr.diffusion.model.config)
    ema.params[:] = tr.ema
    shadow = run["ema"].shadow_params
    err = max(maxdiff(s.numpy(), a) for s, (_, a) in zip(shadow, ema.named_parameters()))
    assert err < 1e-4, f"EMA after one step differs by {err:.2e}"
    state = run["optimizer"].state
    m = ddpm.UNet.from_config(tr.diffusion.model.config)
    m.params[:] = tr.m
    err = max(maxdiff(state[p]["exp_avg"].numpy(), a)
              for p, (_, a) in zip(unet.parameters(), m.named_parameters()))
    assert err < 1e-5, f"Adam first moments differ by {err:.2e}"
    assert run["lr_scheduler"].get_last_lr()[0] == pytest.approx(tr.lr_at(steps + 2))


def test_the_diffusers_example_layout(tmp_path):
    tr, x, ck = trained(tmp_path)
    out = tmp_path / "gpu"
    rc, stdout, stderr = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; "
        f"sys.exit(main(['export', '--to', 'diffusers', {str(ck)!r}, {str(out)!r}]))")
    assert rc == 0, stderr
    assert "resume_from_checkpoint" in stdout and "continue_in_pytorch" in stdout
    ckdir = out / "checkpoint-5"
    assert sorted(p.name for p in ckdir.iterdir()) == ["optimizer.bin", "scheduler.bin", "unet",
                                                       "unet_ema"]
    # what the example's load hook does
    from diffusers import DDPMPipeline, UNet2DModel
    from diffusers.training_utils import EMAModel
    ema = EMAModel.from_pretrained(str(ckdir / "unet_ema"), UNet2DModel)
    assert ema.optimization_step == 5 and ema.use_ema_warmup is False and ema.decay == 0.99
    for s, (_, a) in zip(ema.shadow_params, ddpm.UNet.load(out / "unet").named_parameters()):
        assert maxdiff(s.numpy(), a) == 0
    unet = UNet2DModel.from_pretrained(str(ckdir), subfolder="unet")
    for n, p in unet.named_parameters():
        assert maxdiff(p.detach().numpy(), dict(tr.diffusion.model.named_parameters())[n]) == 0
    # accelerate's own loader reads the optimizer and scheduler files
    opt = torch.optim.AdamW(unet.parameters(), lr=1.0)
    opt.load_state_dict(torch.load(ckdir / "optimizer.bin", weights_only=True))
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert opt.param_groups[0]["weight_decay"] == 0.01
    info = json.loads((out / "ddpm_training.json").read_text())
    assert info["step"] == 5 and info["objective"] == "eps"
    pipe = DDPMPipeline.from_pretrained(str(out))          # the EMA pipeline, as the example ends
    assert pipe.unet.config.sample_size == 8
    rc, _, stderr = run_in_subprocess(
        "import sys; from ddpm.__main__ import main; "
        f"sys.exit(main(['export', '--to', 'onnx', {str(ck)!r}, {str(out)!r}]))")
    assert rc != 0 and "diffusers" in stderr


def test_export_bad_input(tmp_path):
    from ddpm.export import export_diffusers
    with pytest.raises(OSError, match="no checkpoint"):
        export_diffusers(tmp_path / "none.safetensors", tmp_path / "o")
    with pytest.raises(TypeError, match="out"):
        export_diffusers(tmp_path / "none.safetensors", 3)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match="bad.safetensors"):
        export_diffusers(tmp_path / "bad.safetensors", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_continue_in_pytorch_script_runs(tmp_path):
    tr, x, ck = trained(tmp_path)
    from ddpm.export import export_diffusers
    export_diffusers(ck, tmp_path / "gpu")
    np.save(tmp_path / "x.npy", x)
    rc, out, err = run_in_subprocess(
        "import runpy, sys; sys.argv = ['continue_in_pytorch.py', "
        f"{str(tmp_path / 'gpu')!r}, '--data', {str(tmp_path / 'x.npy')!r}, '--steps', '3', "
        "'--checkpoint-every', '2']; "
        f"runpy.run_path({str(REPO / 'examples' / 'continue_in_pytorch.py')!r}, "
        "run_name='__main__')", timeout=300)
    assert rc == 0, err
    assert (tmp_path / "gpu" / "checkpoint-8").is_dir(), out
    d = ddpm.Diffusion.load(tmp_path / "gpu")          # back on the laptop
    assert d.image_shape == (3, 8, 8)
    info = json.loads((tmp_path / "gpu" / "ddpm_training.json").read_text())
    assert info["step"] == 8 and info["ema_updates"] == 8
