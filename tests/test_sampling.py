"""Samplers (lesson 6-2-4): DDPM ancestral, DDIM, DPM-Solver++(2M), whole loop in C.

* float64 NumPy references of each sampler written here, driven by the exact
  denoiser of Gaussian data (the C core's test hook: ``_core.sample`` with
  ``model=(mean, std)``), compared over objectives, clipping and thresholding;
* diffusers' schedulers (DDPMScheduler fixed_small/fixed_large, DDIMScheduler
  eta 0/1 x linspace/leading/trailing, DPMSolverMultistepScheduler dpmsolver++ 2M)
  driven by the same model outputs and the same noise, whole loops;
* the lesson's properties: determinism, seeds and threads, no noise on the last
  step, DDPM with sigma = 0 collapses toward the mean while DDIM does not;
* trajectory capture and memory, bad input, Ctrl-C, the CLI.

Schedules compared with diffusers are built from the scheduler's own float32
``alphas_cumprod`` (``NoiseSchedule.from_betas``): diffusers keeps that table in
float32, and 1 - alpha_bar near t = 1 then differs from our float64 table by
up to 3e-4 relative, which alone moves a 50-step DDIM loop by ~5e-4.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ddpm
from ddpm import _core
from ddpm.sampling import sampling_timesteps

from conftest import assert_subprocess_ok, run_in_subprocess

# diffusers' DPMSolverMultistepScheduler.set_timesteps trips NumPy 2's __array__ warning
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PT = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SAMPLER_ID = {"ddpm": 0, "ddim": 1, "dpm++": 2}
OBJ_ID = {"eps": 0, "x0": 1, "v": 2}
VAR_ID = {"fixed_small": 0, "fixed_large": 1, "zero": 2}

# a small UNet: 2 channels, 8x8, attention at 4x4
TINY = dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
            attention_head_dim=4, num_train_timesteps=1000)
SHAPE = (3, 2, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread(threads):
    """These models are tiny: waking a second thread costs more than the work (and on a
    loaded machine much more).  Thread independence is tested explicitly below."""
    threads(1)


@pytest.fixture(scope="module")
def net():
    return ddpm.UNet(seed=3, **TINY)


def diffusion(net, objective="eps", schedule=None):
    return ddpm.Diffusion(net, schedule or ddpm.NoiseSchedule("linear"), objective=objective)


# ----------------------------------------------------------------------------
# float64 references (written from the papers' formulas, not from sample.c)
# ----------------------------------------------------------------------------

def gauss_model(x, t, ab, objective, mean, std):
    """Exact network output for x_0 ~ N(mean, std^2): E[eps | x_t] etc., float64."""
    a, b = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
    r = (x - a * mean) / (a * a * std * std + b * b)
    eps = b * r
    x0 = mean + a * std * std * r
    return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[objective]


def to_eps_x0(out, x, ab_t, objective):
    a, b = np.sqrt(ab_t), np.sqrt(1 - ab_t)
    if objective == "eps":
        return out, (x - b * out) / a
    if objective == "x0":
        return (x - a * out) / b, out
    return a * out + b * x, a * x - b * out


def ref_threshold(x0, ratio, smax):
    flat = np.abs(x0.reshape(len(x0), -1))
    s = np.clip(np.quantile(flat, ratio, axis=1), 1.0, smax).reshape((-1,) + (1,) * (x0.ndim - 1))
    return np.clip(x0, -s, s) / s


def ref_sample(sampler, objective, ab, ts, prevs, x_T, noise, model, *, eta=0.0,
               variance="fixed_small", clip=False, thresh=None):
    """The reverse loop in float64: model(x, t) gives the network output at lesson time t."""
    x = x_T.astype(np.float64)
    m1 = None
    for k, (t, p) in enumerate(zip(ts, prevs)):
        eps, x0 = to_eps_x0(model(x, t), x, ab[t], objective)
        if thresh is not None:
            x0 = ref_threshold(x0, *thresh)
        elif clip:
            x0 = np.clip(x0, -1, 1)
        z = noise[k].astype(np.float64) if noise is not None else 0.0
        if sampler == "ddpm":
            alpha = ab[t] / ab[p]
            beta = 1 - alpha
            if p == t - 1 and not clip and thresh is None and objective == "eps":
                # the lesson's form: 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1 - alpha_bar_t) eps)
                mean = (x - beta / np.sqrt(1 - ab[t]) * eps) / np.sqrt(alpha)
            else:   # posterior mean of q(x_p | x_t, x0_hat)
                mean = (np.sqrt(ab[p]) * beta / (1 - ab[t]) * x0
                        + np.sqrt(alpha) * (1 - ab[p]) / (1 - ab[t]) * x)
            var = {"fixed_small": (1 - ab[p]) / (1 - ab[t]) * beta, "fixed_large": beta,
                   "zero": 0.0}[variance]
            x = mean + (np.sqrt(var) * z if p > 0 else 0.0)
        elif sampler == "ddim":
            s = eta * np.sqrt((1 - ab[p]) / (1 - ab[t]) * (1 - ab[t] / ab[p]))
            x = np.sqrt(ab[p]) * x0 + np.sqrt(1 - ab[p] - s * s) * eps + (s * z if p > 0 else 0)
        else:   # DPM-Solver++(2M): Lu et al. 2022, algorithm 2 (midpoint form)
            if p == 0:
                x = x0
            else:
                lam = lambda u: np.log(np.sqrt(ab[u]) / np.sqrt(1 - ab[u]))  # noqa: E731
                h = lam(p) - lam(t)
                if m1 is None:
                    D = x0
                else:
                    r = (lam(t) - lam(ts[k - 1])) / h
                    D = x0 + (x0 - m1) / (2 * r)
                x = np.sqrt(1 - ab[p]) / np.sqrt(1 - ab[t]) * x - np.sqrt(ab[p]) * np.expm1(-h) * D
            m1 = x0
    return x


def run_core(sampler, objective, ab, ts, prevs, x_T, noise=None, *, mean=0.2, std=0.6,
             eta=0.0, variance="fixed_small", clip=False, thresh=None, seed=0, **kw):
    out = np.empty_like(x_T)
    _core.sample(out, (mean, std), None, ab, ts, prevs, sampler=SAMPLER_ID[sampler],
                 objective=OBJ_ID[objective], variance=VAR_ID[variance], eta=eta, clip_x0=clip,
                 thresh_ratio=thresh[0] if thresh else 0.0,
                 thresh_max=thresh[1] if thresh else float("inf"), seed=seed, x_T=x_T,
                 noise=noise, **kw)
    return out


CASES = [  # sampler, steps, spacing, extra
    ("ddpm", 1000, "trailing", {}),
    ("ddpm", 37, "leading", {"variance": "fixed_large"}),
    ("ddpm", 20, "linspace", {"variance": "zero"}),
    ("ddim", 25, "trailing", {"eta": 0.0}),
    ("ddim", 30, "linspace", {"eta": 1.0}),
    ("ddim", 17, "leading", {"eta": 0.5}),
    ("dpm++", 15, "trailing", {}),
    ("dpm++", 8, "linspace", {}),
    ("dpm++", 12, "leading", {}),
]


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler,steps,spacing,extra", CASES)
def test_core_against_float64_reference(sampler, steps, spacing, extra, objective, linear, rng):
    ab = linear.alpha_bars
    ts, prevs = sampling_timesteps(1000, steps, sampler, spacing)
    x_T = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    noise = rng.standard_normal((steps,) + x_T.shape).astype(np.float32)
    got = run_core(sampler, objective, ab, ts, prevs, x_T, noise, **extra)
    want = ref_sample(sampler, objective, ab, ts, prevs, x_T, noise,
                      lambda x, t: gauss_model(x, t, ab, objective, 0.2, 0.6), **extra)
    err = np.abs(got - want).max()
    # the C state is float32: one rounding per step against a float64 state, so the
    # bound grows with K (1000 DDPM steps reach ~2e-5)
    tol = 1e-5 * max(1.0, steps / 250)
    assert err <= tol, f"{sampler} {steps} {spacing} {extra} {objective}: max diff {err:.3g}"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
@pytest.mark.parametrize("mode", ["clip", "threshold", "threshold_capped"])
def test_core_clipping_and_thresholding_against_reference(sampler, mode, linear, rng):
    ab = linear.alpha_bars
    ts, prevs = sampling_timesteps(1000, 20, sampler, "trailing")
    x_T = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    noise = rng.standard_normal((20,) + x_T.shape).astype(np.float32)
    kw = {"clip": True} if mode == "clip" else {
        "thresh": (0.9, np.inf) if mode == "threshold" else (0.8, 1.3)}
    # data N(0.5, 1.5^2): x0_hat leaves [-1, 1], so clipping/thresholding acts
    got = run_core(sampler, "eps", ab, ts, prevs, x_T, noise, mean=0.5, std=1.5, **kw)
    want = ref_sample(sampler, "eps", ab, ts, prevs, x_T, noise,
                      lambda x, t: gauss_model(x, t, ab, "eps", 0.5, 1.5), **kw)
    unclipped = ref_sample(sampler, "eps", ab, ts, prevs, x_T, noise,
                           lambda x, t: gauss_model(x, t, ab, "eps", 0.5, 1.5))
    assert np.abs(want - unclipped).max() > 0.05, "the case does not exercise clipping"
    err = np.abs(got - want).max()
    assert err <= 1e-5, f"{sampler} {mode}: max diff {err:.3g}"


# ----------------------------------------------------------------------------
# the lesson's properties
# ----------------------------------------------------------------------------

def test_ddim_eta0_deterministic_ddpm_not(net):
    d = diffusion(net)
    x_T = ddpm.randn(*SHAPE, seed=5)
    a = d.sample(3, steps=20, sampler="ddim", seed=1, x_T=x_T, progress=False)
    b = d.sample(3, steps=20, sampler="ddim", seed=2, x_T=x_T, progress=False)
    assert np.array_equal(a, b), "DDIM eta=0 depends on the seed beyond x_T"
    c = d.sample(3, steps=20, sampler="ddpm", seed=1, x_T=x_T, progress=False)
    e = d.sample(3, steps=20, sampler="ddpm", seed=2, x_T=x_T, progress=False)
    f = d.sample(3, steps=20, sampler="ddpm", seed=1, x_T=x_T, progress=False)
    assert np.abs(c - e).max() > 1e-3, "DDPM with different seeds gave the same images"
    assert np.array_equal(c, f), "DDPM with the same seed differs"
    g = d.sample(3, steps=20, sampler="ddim", eta=1.0, seed=2, x_T=x_T, progress=False)
    assert np.abs(g - a).max() > 1e-3, "DDIM eta=1 drew no noise"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_same_seed_bit_identical_at_1_and_2_threads(net, threads, sampler):
    d = diffusion(net, "v")
    kw = dict(steps=12, sampler=sampler, seed=123, progress=False, value_range=(-1, 1))
    if sampler == "ddim":
        kw["eta"] = 1.0
    threads(1)
    one = d.sample(5, **kw)
    threads(2)
    two = d.sample(5, **kw)
    assert np.array_equal(one, two), f"max diff {np.abs(one - two).max():.3g}"
    three = d.sample(5, **{**kw, "seed": 124})
    assert not np.array_equal(one, three)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 1.0)])
def test_last_step_adds_no_noise(net, sampler, eta, rng):
    d = diffusion(net)
    K = 10
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((K,) + SHAPE).astype(np.float32)
    kw = dict(steps=K, sampler=sampler, eta=eta, x_T=x_T, progress=False, value_range=(-1, 1))
    base = d.sample(3, noise=noise, **kw)
    last = noise.copy()
    last[-1] = 100.0
    assert np.array_equal(base, d.sample(3, noise=last, **kw)), "noise[K-1] changed x_0"
    before = noise.copy()
    before[-2] += 1.0
    assert np.abs(base - d.sample(3, noise=before, **kw)).max() > 1e-4, \
        "noise[K-2] had no effect: the test would not see a last-step draw"


def test_ddpm_without_noise_collapses_toward_the_mean_ddim_does_not(linear):
    """Data N(0.3, 0.5^2) and its exact eps: DDIM (eta = 0) lands on the data's spread,
    DDPM with sigma = 0 shrinks it (it is not DDIM), DDPM with its sigma keeps it."""
    ab = linear.alpha_bars
    x_T = ddpm.randn(256, 1, 8, 8, seed=0)
    mean, std = 0.3, 0.5
    res = {}
    for name, sampler, var, steps in (("ddim", "ddim", "fixed_small", 100),
                                      ("ddpm", "ddpm", "fixed_small", 1000),
                                      ("ddpm_sigma0", "ddpm", "zero", 1000)):
        ts, prevs = sampling_timesteps(1000, steps, sampler, "trailing")
        out = run_core(sampler, "eps", ab, ts, prevs, x_T, None, mean=mean, std=std,
                       variance=var, seed=7)
        res[name] = (float(out.mean()), float(out.std()))
    for name, (m, s) in res.items():
        assert abs(m - mean) < 0.03, f"{name}: mean {m:.3f}, data mean {mean}"
    assert abs(res["ddim"][1] - std) < 0.03, f"DDIM std {res['ddim'][1]:.3f}, data {std}"
    assert abs(res["ddpm"][1] - std) < 0.03, f"DDPM std {res['ddpm'][1]:.3f}, data {std}"
    assert res["ddpm_sigma0"][1] < 0.5 * std, \
        f"DDPM with sigma = 0 kept std {res['ddpm_sigma0'][1]:.3f} (expected a collapse)"


# ----------------------------------------------------------------------------
# trajectory, memory, progress
# ----------------------------------------------------------------------------

def test_trajectory_frames(net):
    d = diffusion(net)
    x_T = ddpm.randn(*SHAPE, seed=3)
    want_t = [1000, 900, 800, 600, 400, 200, 100, 50, 0]
    img, tr = d.sample(3, sampler="ddpm", seed=4, x_T=x_T, return_trajectory=want_t,
                       progress=False, value_range=(-1, 1))
    assert tr.t.tolist() == want_t
    assert tr.x_t.shape == tr.eps_hat.shape == tr.x0_hat.shape == (len(want_t),) + SHAPE
    assert np.array_equal(tr.x_t[0], x_T)
    assert np.array_equal(tr.x_t[-1], img) and np.array_equal(tr.x0_hat[-1], img)
    assert not tr.eps_hat[-1].any()
    ab = d.schedule.alpha_bars
    for i, t in enumerate(want_t[:-1]):     # the predictions at x_t, computed by Diffusion
        eps, x0 = d.predict_eps_and_x0(tr.x_t[i], t)
        assert np.abs(tr.eps_hat[i] - eps).max() <= 1e-5
        # x0_hat = (x_t - b eps)/a in float32: the rounding of x_t - b eps grows by 1/a
        tol = 1e-5 + 3e-7 / np.sqrt(ab[t])
        err = np.abs(tr.x0_hat[i] - np.clip(x0, -1, 1)).max()
        assert err <= tol, f"t = {t}: max diff {err:.3g}"
    same = d.sample(3, sampler="ddpm", seed=4, x_T=x_T, progress=False, value_range=(-1, 1))
    assert np.array_equal(same, img), "capturing changed the run"
    _, every = d.sample(3, steps=10, sampler="ddim", seed=0, return_trajectory=4, progress=False)
    assert every.t.tolist() == [1000, 600, 200, 0]


MEMORY_CODE = """
import resource, sys, tracemalloc
import numpy as np, ddpm
from ddpm import _core
ddpm.set_num_threads(1)
T = int(sys.argv[1])
s = ddpm.NoiseSchedule("linear", timesteps=T)
ts = np.arange(T, 0, -1, dtype=np.int64); prevs = ts - 1
x_T = ddpm.randn(16, 1024, seed=0); out = np.empty_like(x_T)
cap = np.array([0, T // 2, T], np.int64)
frames = [np.zeros((3, 16, 1024), np.float32) for _ in range(3)]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_core.sample(out, (0.0, 1.0), None, s.alpha_bars, ts, prevs, sampler=0, objective=0,
             seed=1, capture=cap, cap_x=frames[0], cap_eps=frames[1], cap_x0=frames[2])
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = dict(sample_size=4, in_channels=1, out_channels=1, block_out_channels=(4,),
           layers_per_block=1, down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
           norm_num_groups=4, add_attention=False, num_train_timesteps=T)
d = ddpm.Diffusion(ddpm.UNet(seed=0, **cfg), s)
d.sample(8, steps=3, sampler="ddim", seed=0, progress=False)
tracemalloc.start()
d.sample(8, sampler="ddpm", seed=0, progress=False, return_trajectory=[T, T // 2, 0])
peak = tracemalloc.get_traced_memory()[1]
print(rss1 - rss0, peak)
"""


def test_memory_does_not_grow_with_T(tmp_path):
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_CODE)
    res = {}
    for T in (100, 1000):
        p = subprocess.run([sys.executable, str(script), str(T)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        rss_kb, peak = map(int, p.stdout.split())
        res[T] = (rss_kb, peak)
    # peak RSS growth during a run: storing one (16, 1024) state per step would add
    # 64 KB per step (58 MB for 900 more steps); the C workspace is a few such buffers
    assert res[1000][0] - res[100][0] < 8 * 1024, f"max RSS growth (KB) {res}"
    # Python side: what scales with T is the (steps,) int64 timestep tables and their
    # temporaries (the schedule tables are built before tracing starts): 64 B per extra
    # step, where keeping the (8, 1, 4, 4) state of every step would cost 512 B per step
    allowed = 64 * 900
    assert res[1000][1] - res[100][1] < allowed, f"traced peak bytes {res}"


def test_progress_hook_and_its_exception(net):
    d = diffusion(net)
    calls = []
    d.sample(2, steps=23, sampler="ddim", seed=0, progress=lambda k, n: calls.append((k, n)),
             progress_every=5)
    assert calls == [(0, 23), (5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]

    class Stop(Exception):
        pass

    def boom(k, n):
        if k >= 3:
            raise Stop("from the hook")

    with pytest.raises(Stop):
        d.sample(2, steps=10, sampler="ddim", seed=0, progress=boom, progress_every=1)
    # the model is usable afterwards (the busy flag was released)
    assert d.sample(1, steps=2, sampler="ddim", seed=0, progress=False).shape == (1, 2, 8, 8)


def test_inputs_not_modified(net, rng):
    d = diffusion(net)
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((6,) + SHAPE).astype(np.float32)
    x_c, n_c, p_c = x_T.copy(), noise.copy(), net.params.copy()
    d.sample(3, steps=6, sampler="ddpm", x_T=x_T, noise=noise, progress=False)
    assert np.array_equal(x_T, x_c) and np.array_equal(noise, n_c)
    assert np.array_equal(net.params, p_c)


def test_output_range(net):
    d = diffusion(net)
    raw = d.sample(3, steps=5, sampler="ddim", seed=0, value_range=(-1, 1), progress=False)
    img = d.sample(3, steps=5, sampler="ddim", seed=0, progress=False)
    assert img.dtype == np.float32 and img.shape == SHAPE
    assert img.min() >= 0 and img.max() <= 1
    np.testing.assert_allclose(img, np.clip(raw / 2 + 0.5, 0, 1), atol=1e-7)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    ({"n": 0}, ValueError, "n must be >= 1"),
    ({"n": -3}, ValueError, "n must be >= 1"),
    ({"n": 2.0}, TypeError, "n must be an int"),
    ({"n": 2, "steps": 1001}, ValueError, "steps must be <= T"),
    ({"n": 2, "steps": 0}, ValueError, "steps must be >= 1"),
    ({"n": 2, "steps": None, "sampler": "ddim", "return_trajectory": [990]}, ValueError,
     "visits t = \\[1000, 980"),
    ({"n": 2, "sampler": "euler"}, ValueError, "sampler must be one of"),
    ({"n": 2, "sampler": "ddim", "eta": -0.1}, ValueError, "eta must be in"),
    ({"n": 2, "sampler": "ddim", "eta": 1.5}, ValueError, "eta must be in"),
    ({"n": 2, "sampler": "ddpm", "eta": 0.5}, ValueError, "eta applies to"),
    ({"n": 2, "sampler": "ddim", "variance": "fixed_large"}, ValueError, "variance applies"),
    ({"n": 2, "variance": "learned"}, ValueError, "variance must be one of"),
    ({"n": 2, "timestep_spacing": "karras"}, ValueError, "timestep_spacing must be"),
    ({"n": 2, "steps": 10, "return_trajectory": [550]}, ValueError, "does not visit"),
    ({"n": 2, "dynamic_threshold": 1.5}, ValueError, "ratio must be in"),
    ({"n": 2, "dynamic_threshold": 0.0}, ValueError, "ratio must be in"),
    ({"n": 2, "dynamic_threshold": (0.9, 0.5)}, ValueError, "max_value must be >= 1"),
    ({"n": 2, "return_trajectory": [1000, 1000]}, ValueError, "repeated timesteps"),
    ({"n": 2, "return_trajectory": [0, 1001]}, ValueError, "does not visit"),
    ({"n": 2, "dynamic_threshold": 0.9, "clip_x0": True}, ValueError, "replaces clip_x0"),
    ({"n": 2, "value_range": (0, 255)}, ValueError, "value_range"),
    ({"n": 2, "x_T": np.zeros((2, 1, 8, 8), np.float32)}, ValueError, "x_T must have shape"),
    ({"n": 2, "x_T": np.full((2, 2, 8, 8), np.nan, np.float32)}, ValueError, "x_T contains NaN"),
    ({"n": 2, "steps": 3, "noise": np.zeros((2, 2, 2, 8, 8))}, ValueError, "noise must have"),
    ({"n": 2, "steps": 3, "sampler": "ddim", "eta": 1.0,
      "noise": np.full((3, 2, 2, 8, 8), np.inf)}, ValueError, "noise contains NaN"),
    ({"n": 2, "x_T": np.zeros((2, 2, 8, 8), np.int32)}, TypeError, "integer"),
])
def test_bad_arguments(net, kwargs, exc, match):
    d = diffusion(net)
    kwargs = dict(kwargs)
    n = kwargs.pop("n")
    kwargs.setdefault("steps", 4)
    with pytest.raises(exc, match=match):
        d.sample(n, seed=0, progress=False, **kwargs)


def test_model_whose_channels_do_not_match():
    cfg = dict(TINY, out_channels=1)
    with pytest.raises(ValueError, match="channels"):
        ddpm.Diffusion(ddpm.UNet(seed=0, **cfg))
    d = ddpm.Diffusion(ddpm.UNet(seed=0, **TINY))
    d.model = ddpm.UNet(seed=0, **cfg)          # swapped behind Diffusion's back
    with pytest.raises(ValueError, match="channels"):
        d.sample(2, steps=2, seed=0, progress=False)


def test_top_level_sample_rejects_a_bare_unet():
    with pytest.raises(TypeError, match="Diffusion"):
        ddpm.sample(4, model=ddpm.UNet(seed=0, **TINY))


def test_binding_rejects_bad_arrays_in_a_subprocess():
    """The strict C binding: wrong types, shapes, codes and index ranges never reach the loop
    (no crash).  Value ranges that cannot reach outside an array (eta, the dynamic threshold,
    which steps are captured) are ddpm.sample's to check: test_bad_arguments."""
    code = """
    import numpy as np, ddpm
    from ddpm import _core
    s = ddpm.NoiseSchedule("linear")
    ab = s.alpha_bars
    ts = np.array([1000, 500], np.int64); pv = np.array([500, 0], np.int64)
    out = np.empty((2, 4), np.float32)
    net = ddpm.UNet(seed=0, sample_size=4, in_channels=1, out_channels=1,
                    block_out_channels=(4,), layers_per_block=1, down_block_types=("DownBlock2D",),
                    up_block_types=("UpBlock2D",), norm_num_groups=4, add_attention=False)
    G = (0.0, 1.0)
    bad = [
        dict(out=out.astype(np.float64)), dict(out=np.empty((2, 8), np.float32)[:, ::2]),
        dict(ab=ab.astype(np.float32)), dict(ab=ab[:1]), dict(ts=ts.astype(np.int32)),
        dict(ts=np.array([1001, 5], np.int64)), dict(prevs=np.array([1000, 0], np.int64)),
        dict(prevs=np.array([-1, 0], np.int64)), dict(ts=ts[:1]),
        dict(sampler=3), dict(objective=-1), dict(variance=7),
        dict(x_T=np.zeros((3, 4), np.float32)), dict(noise=np.zeros((3, 2, 4), np.float32)),
        dict(capture=np.zeros((1, 1), np.int64)), dict(capture=np.array([0, 1], np.int32)),
        dict(capture=np.arange(4, dtype=np.int64)),                 # M > K + 1 frames
        dict(cap_x=np.zeros((1, 2, 4), np.float32)),
        dict(capture=np.array([0], np.int64), cap_x=np.zeros((2, 2, 4), np.float32)),
        dict(hook=5), dict(hook_every=0), dict(seed=-1), dict(model=(1.0,)),
        dict(model=net._handle, params=net.params),                 # out shape (2, 4)
        dict(model=net._handle, params=net.params[:-1], out=np.empty((2, 1, 4, 4), np.float32)),
        dict(model=G, params=net.params),
    ]
    for b in bad:
        a = dict(out=out, model=G, params=None, ab=ab, ts=ts, prevs=pv, sampler=1, objective=0)
        a.update(b)
        pos = [a.pop(k) for k in ("out", "model", "params", "ab", "ts", "prevs")]
        try:
            _core.sample(*pos, **a)
        except (ValueError, TypeError) as e:
            continue
        raise SystemExit(f"accepted {sorted(b)}")
    print("ok")
    """
    assert "ok" in assert_subprocess_ok(code)


def test_ctrl_c_interrupts_promptly():
    code = """
    import os, signal, threading, time, sys
    import ddpm
    d = ddpm.Diffusion(ddpm.UNet(seed=0, block_out_channels=(16, 32, 64)))  # 28x28, attention
    d.sample(2, steps=2, sampler="ddim", seed=0, progress=False)
    t0 = time.perf_counter()
    d.sample(2, steps=3, sampler="ddim", seed=0, progress=False)
    step = (time.perf_counter() - t0) / 3
    sent = []
    def fire():
        time.sleep(max(0.3, 3 * step))
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=fire, daemon=True).start()
    try:
        d.sample(2, sampler="ddpm", seed=0, progress=False)
    except KeyboardInterrupt:
        late = time.perf_counter() - sent[0]
        print(f"interrupted {late:.3f} s after SIGINT, one step {step:.3f} s")
        assert late < 3 * step + 1.0, (late, step)   # a loaded machine: some slack
        # and the model still works
        assert d.sample(1, steps=2, sampler="ddim", seed=0, progress=False).shape == (1, 1, 28, 28)
        sys.exit(0)
    sys.exit("no KeyboardInterrupt")
    """
    out = assert_subprocess_ok(code, timeout=300)
    assert "interrupted" in out


# ----------------------------------------------------------------------------
# top-level API and CLI
# ----------------------------------------------------------------------------

def test_sample_from_a_saved_folder_and_cli(tmp_path):
    pytest.importorskip("safetensors")
    d = diffusion(ddpm.UNet(seed=1, **dict(TINY, in_channels=1, out_channels=1)))
    path = d.save(tmp_path / "model")
    a = ddpm.sample(3, model=path, steps=5, sampler="dpm++", seed=9, progress=False)
    b = d.sample(3, steps=5, sampler="dpm++", clip_x0=True, seed=9, progress=False)
    assert np.array_equal(a, b)          # ddpm.sample clips x0_hat for dpm++ by default
    out = tmp_path / "grid.png"
    rc, so, se = run_in_subprocess(
        f"import sys; from ddpm.__main__ import main; sys.exit(main(['sample', '--model', "
        f"{str(path)!r}, '--n', '4', '--steps', '5', '--sampler', 'ddim', '--seed', '1', "
        f"'--out', {str(out)!r}, '--no-progress']))")
    assert rc == 0, se
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------
# against diffusers
# ----------------------------------------------------------------------------

def scheduler_schedule(sched):
    """Our NoiseSchedule with exactly the scheduler's float32 alphas_cumprod."""
    ac = sched.alphas_cumprod.double().numpy()
    return ddpm.NoiseSchedule.from_betas(1 - ac / np.concatenate([[1.0], ac[:-1]]))


def diffusers_loop(sched, steps, x_T, model, *, noise=None, eta=None, generator=None):
    """scheduler.set_timesteps + step(...) with model(x_np, t_model) -> np output."""
    import torch
    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy())
    for k, t in enumerate(sched.timesteps):
        mo = torch.from_numpy(np.ascontiguousarray(model(x.numpy(), int(t)), dtype=np.float32))
        kw = {}
        if eta is not None:
            kw["eta"] = eta
            if eta > 0:
                kw["variance_noise"] = torch.from_numpy(noise[k])
        if generator is not None:
            kw["generator"] = generator
        x = sched.step(mo, t, x, **kw).prev_sample
    return x.numpy()


def ddpm_noise(sched, steps, shape, seed):
    """The draws DDPMScheduler.step makes from a generator (one per step with t > 0)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps)
    noise = np.zeros((steps,) + shape, np.float32)
    for k, t in enumerate(sched.timesteps):
        if int(t) > 0:
            noise[k] = torch.randn(shape, generator=g, dtype=torch.float32).numpy()
    return noise


@pytest.mark.parametrize("objective,variance,steps", [
    ("eps", "fixed_small", 1000), ("v", "fixed_large", 100),
    ("eps", "fixed_large", 100), ("x0", "fixed_small", 100), ("x0", "fixed_large", 100),
    ("v", "fixed_small", 100)])
def test_ddpm_against_diffusers(net, objective, variance, steps, rng):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(variance_type=variance, prediction_type=PT[objective])
    d = diffusion(net, objective, scheduler_schedule(sched))
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = ddpm_noise(sched, steps, SHAPE, seed=11)
    ours = d.sample(3, steps=steps, sampler="ddpm", variance=variance, x_T=x_T, noise=noise,
                    timestep_spacing="leading", value_range=(-1, 1), progress=False)
    ref = diffusers_loop(sched, steps, x_T, lambda x, t: net(x, t),
                         generator=torch.Generator().manual_seed(11))
    err = np.abs(ours - ref).max()
    print(f"DDPM {variance} {objective} {steps} steps: max diff {err:.3g}")
    assert err <= 1e-5, f"max diff {err:.3g}"


def gauss_numpy(ab, objective, mean=0.1, std=0.7):
    def model(x, t_model):
        return gauss_model(x.astype(np.float64), t_model + 1, ab, objective, mean, std
                           ).astype(np.float32)
    return model


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_against_diffusers(net, spacing, eta, rng):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    steps = 25
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((steps,) + SHAPE).astype(np.float32)
    kw = dict(steps=steps, sampler="ddim", eta=eta, x_T=x_T, noise=noise, value_range=(-1, 1),
              timestep_spacing=spacing, ddim_prev="diffusers", progress=False)
    for objective in ("x0", "v", "eps"):
        sched = diffusers.DDIMScheduler(timestep_spacing=spacing, prediction_type=PT[objective])
        d = diffusion(net, objective, scheduler_schedule(sched))
        ours = d.sample(3, **kw)
        ref = diffusers_loop(sched, steps, x_T, lambda x, t: net(x, t), noise=noise, eta=eta)
        err = np.abs(ours - ref).max()
        print(f"DDIM {spacing} eta={eta} {objective} (UNet): max diff {err:.3g}")
        if objective == "eps" and eta == 0.0:
            # A random eps-UNet makes this ODE ill-conditioned: x0_hat = (x - b eps)/a with
            # a wrong eps amplifies every rounding by up to 1/a = 157 (torch's float32 sqrt
            # is not correctly rounded, so coefficients differ from ours by an ulp).  Measure
            # how far one-ulp changes of x_T move our own output, and require the diffusers
            # difference to be of that order (a wrong formula is off by 1e-2 or more).
            up = np.random.default_rng(1).random(x_T.shape) < 0.5
            xp = np.where(up, np.nextafter(x_T, np.float32(9)), np.nextafter(x_T, np.float32(-9)))
            sens = np.abs(d.sample(3, **{**kw, "x_T": xp}) - ours).max()
            print(f"   one-ulp sensitivity of this loop: {sens:.3g}")
            assert err <= max(1e-5, 10 * sens), f"max diff {err:.3g}, 1-ulp sensitivity {sens:.3g}"
        else:
            assert err <= 1e-5, f"{objective}: max diff {err:.3g}"
    # eps with a well-conditioned model: the exact denoiser of Gaussian data
    sched = diffusers.DDIMScheduler(timestep_spacing=spacing, prediction_type="epsilon")
    s = scheduler_schedule(sched)
    ts, prevs = sampling_timesteps(1000, steps, "ddim", spacing, "diffusers")
    ours = run_core("ddim", "eps", s.alpha_bars, ts, prevs, x_T, noise, mean=0.1, std=0.7,
                    eta=eta, clip=True)
    ref = diffusers_loop(sched, steps, x_T, gauss_numpy(s.alpha_bars, "eps"), noise=noise, eta=eta)
    err = np.abs(ours - ref).max()
    print(f"DDIM {spacing} eta={eta} eps (exact Gaussian denoiser): max diff {err:.3g}")
    assert err <= 1e-5, f"max diff {err:.3g}"


def test_ddim_next_rule_equals_diffusers_where_it_is_consistent(net, rng):
    """ddim_prev='next' (our default) is diffusers' rule whenever steps divides T and the
    spacing is leading/trailing; with linspace diffusers lands elsewhere (documented)."""
    d = diffusion(net, "v")
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    kw = dict(steps=20, sampler="ddim", x_T=x_T, value_range=(-1, 1), progress=False)
    for spacing in ("leading", "trailing"):
        a = d.sample(3, timestep_spacing=spacing, **kw)
        b = d.sample(3, timestep_spacing=spacing, ddim_prev="diffusers", **kw)
        assert np.array_equal(a, b), spacing
    a = d.sample(3, timestep_spacing="linspace", **kw)
    b = d.sample(3, timestep_spacing="linspace", ddim_prev="diffusers", **kw)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_dpmsolver_against_diffusers(net, spacing, rng):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    steps = 15
    x_T = rng.standard_normal(SHAPE).astype(np.float32)

    def sched_for(objective, **kw):
        return diffusers.DPMSolverMultistepScheduler(
            timestep_spacing=spacing, prediction_type=PT[objective], algorithm_type="dpmsolver++",
            solver_order=2, **kw)

    for objective in ("x0", "v"):
        sched = sched_for(objective)
        d = diffusion(net, objective, scheduler_schedule(sched))
        ours = d.sample(3, steps=steps, sampler="dpm++", x_T=x_T, timestep_spacing=spacing,
                        value_range=(-1, 1), progress=False)
        ref = diffusers_loop(sched, steps, x_T, lambda x, t: net(x, t))
        err = np.abs(ours - ref).max()
        print(f"DPM++ {spacing} {objective} (UNet): max diff {err:.3g}")
        assert err <= 1e-5, f"{objective}: max diff {err:.3g}"
    # eps: with dynamic thresholding on a UNet (bounded x0_hat), and unthresholded with the
    # exact Gaussian denoiser (a random eps-UNet's x0_hat = x/a reaches 600 without clipping)
    sched = sched_for("eps", thresholding=True, dynamic_thresholding_ratio=0.9,
                      sample_max_value=2.0)
    d = diffusion(net, "eps", scheduler_schedule(sched))
    ours = d.sample(3, steps=steps, sampler="dpm++", x_T=x_T, timestep_spacing=spacing,
                    dynamic_threshold=(0.9, 2.0), value_range=(-1, 1), progress=False)
    ref = diffusers_loop(sched, steps, x_T, lambda x, t: net(x, t))
    err = np.abs(ours - ref).max()
    print(f"DPM++ {spacing} eps thresholded (UNet): max diff {err:.3g}")
    assert err <= 1e-5, f"thresholded eps: max diff {err:.3g}"
    sched = sched_for("eps")
    s = scheduler_schedule(sched)
    ts, prevs = sampling_timesteps(1000, steps, "dpm++", spacing)
    ours = run_core("dpm++", "eps", s.alpha_bars, ts, prevs, x_T, mean=0.1, std=0.7)
    ref = diffusers_loop(sched, steps, x_T, gauss_numpy(s.alpha_bars, "eps"))
    err = np.abs(ours - ref).max()
    print(f"DPM++ {spacing} eps (exact Gaussian denoiser): max diff {err:.3g}")
    assert err <= 1e-5, f"eps: max diff {err:.3g}"


@pytest.mark.parametrize("steps", [1, 7, 20, 50, 333, 1000])
def test_timesteps_are_diffusers(steps):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    for sampler, cls in (("ddpm", diffusers.DDPMScheduler), ("ddim", diffusers.DDIMScheduler),
                         ("dpm++", diffusers.DPMSolverMultistepScheduler)):
        for spacing in ("linspace", "leading", "trailing"):
            s = cls(timestep_spacing=spacing)
            s.set_timesteps(steps)
            want = s.timesteps.numpy()
            if len(np.unique(want)) != steps:
                # diffusers repeats timesteps here (DPM's linspace/leading at 1000 steps):
                # we refuse instead of evaluating the same step twice
                with pytest.raises(ValueError, match="too many"):
                    sampling_timesteps(1000, steps, sampler, spacing)
                continue
            ts, _ = sampling_timesteps(1000, steps, sampler, spacing)
            assert np.array_equal(ts - 1, want), (sampler, spacing, steps)


def test_end_to_end_against_torch_unet(net, rng):
    """Our UNet + DDIM loop vs diffusers' UNet2DModel (from to_diffusers) + DDIMScheduler."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(timestep_spacing="trailing", prediction_type="v_prediction")
    d = diffusion(net, "v", scheduler_schedule(sched))
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    ours = d.sample(3, steps=10, sampler="ddim", x_T=x_T, value_range=(-1, 1), progress=False)
    tnet = net.to_diffusers()
    with torch.no_grad():
        ref = diffusers_loop(sched, 10, x_T,
                             lambda x, t: tnet(torch.from_numpy(x), t).sample.numpy())
    err = np.abs(ours - ref).max()
    print(f"end to end with torch's UNet2DModel: max diff {err:.3g}")
    assert err <= 1e-4, f"max diff {err:.3g}"
