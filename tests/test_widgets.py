"""ddpm.widgets built headless and driven programmatically.

Expected values come from the lesson conventions (LESSONS.md: linear betas
linspace(1e-4, 0.02, T); cosine alpha_bar = f(t)/f(0) with s = 0.008 and beta
clipped at 0.999), recomputed here in float64, or from the definitions
(x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps), never from the widget.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import ddpm  # noqa: E402
from ddpm import datasets, widgets  # noqa: E402

T = 1000


def ref_alpha_bars(kind, T=T):
    """alpha_bar_0..T of the lesson schedules, float64, independent of the C core."""
    if kind == "linear":
        betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    else:
        s = 0.008
        f = lambda t: np.cos(((t / T + s) / (1 + s)) * np.pi / 2) ** 2  # noqa: E731
        t = np.arange(1, T + 1, dtype=np.float64)
        betas = np.minimum(1.0 - f(t) / f(t - 1), 0.999)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


def corr(a, b):
    a = np.ravel(a).astype(np.float64)
    b = np.ravel(b).astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1])


def expected_regime_word(snr_db):
    # documented thresholds: > +10 dB, [-10, +10], [-30, -10), < -30
    if snr_db > 10:
        return "mostly signal"
    if snr_db >= -10:
        return "balanced"
    if snr_db >= -30:
        return "mostly noise"
    return "pure noise"


# ----------------------------------------------------------------------------- NoiseSlider
def test_noise_slider_t0_is_the_tshirt_and_tT_is_noise():
    w = widgets.NoiseSlider()
    assert w.t == 0
    np.testing.assert_array_equal(w.image, datasets.tshirt())
    assert w.signal_fraction == 1.0 and w.noise_fraction == 0.0
    w.t = T
    x = w.image.astype(np.float64)
    assert abs(x.std() - 1.0) < 0.1, f"std at t=T is {x.std():.3f}, expected ~1"
    assert abs(x.mean()) < 0.15, f"mean at t=T is {x.mean():.3f}"
    c = corr(x, datasets.tshirt())
    assert abs(c) < 0.15, f"x_T still correlates with the image: {c:.3f}"


@pytest.mark.parametrize("t", [1, 10, 250, 500, 750, 999, 1000])
def test_noise_slider_bar_is_the_variance_fractions(t):
    w = widgets.NoiseSlider()
    w.t = t
    ab = ref_alpha_bars("cosine")[t]
    assert abs(w.signal_fraction - ab) < 1e-9, (w.signal_fraction, ab)
    assert abs(w.noise_fraction - (1 - ab)) < 1e-9
    bar = w.texts["bar"]
    assert "variance" in bar.lower() and "alpha_bar" in bar
    assert f"{ab:.4f}" in bar and f"{1 - ab:.4f}" in bar, bar
    assert f"{math.sqrt(ab):.4f}" in w.texts["readout"]
    assert f"{math.sqrt(1 - ab):.4f}" in w.texts["readout"]


def test_noise_slider_uses_one_seeded_eps_for_every_t():
    w = widgets.NoiseSlider(seed=3)
    np.testing.assert_array_equal(w.eps, ddpm.randn(1, 28, 28, seed=3))
    x0 = datasets.tshirt().astype(np.float64)
    ab = ref_alpha_bars("cosine")
    recovered = []
    for t in (5, 300, 700, 1000):
        w.t = t
        eps_t = (w.image - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])
        recovered.append(eps_t)
    for e in recovered[1:]:
        err = np.abs(e - recovered[0]).max()
        assert err < 2e-3, f"eps differs between timesteps (flicker): max diff {err:.2e}"
    err = np.abs(recovered[-1] - w.eps).max()
    assert err < 2e-3, f"image is not sqrt(ab) x0 + sqrt(1-ab) eps: max diff {err:.2e}"


def test_noise_slider_seed_and_display_change():
    a, b, c = widgets.NoiseSlider(seed=0), widgets.NoiseSlider(seed=0), widgets.NoiseSlider(seed=1)
    for w in (a, b, c):
        w.t = 500
    np.testing.assert_array_equal(a.image, b.image)
    assert np.abs(a.image - c.image).max() > 0.5
    png_500 = bytes(a._view.value)
    a.t = 900
    assert bytes(a._view.value) != png_500, "the displayed picture did not change with t"
    assert bytes(a._view.value)[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_slider_preview_strip_and_custom_schedule():
    w = widgets.NoiseSlider()
    assert w.preview_ts == (0, 250, 500, 750, 1000)
    np.testing.assert_array_equal(w.preview[0], datasets.tshirt())
    w.t = 750
    np.testing.assert_array_equal(w.preview[3], w.image)
    s = ddpm.NoiseSchedule("linear", timesteps=100)
    img = np.linspace(-1, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    v = widgets.NoiseSlider(img, schedule=s, t=100)
    assert v.slider.max == 100 and v.preview_ts == (0, 25, 50, 75, 100)
    assert v.image.shape == (1, 16, 16)
    ab = np.concatenate([[1.0], np.cumprod(1 - np.linspace(1e-4, 0.02, 100))])[100]
    assert abs(v.signal_fraction - ab) < 1e-9
    with pytest.raises(ValueError):
        widgets.NoiseSlider(np.zeros((2, 2, 8, 8), dtype=np.float32))


def test_widgets_display_hooks():
    w = widgets.NoiseSlider()
    import ipywidgets
    assert isinstance(w.widget, ipywidgets.Box)
    assert callable(w._ipython_display_)
    assert w.png[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- AlphaBarCurve
def test_alpha_bar_curve_readouts_and_toggle():
    w = widgets.AlphaBarCurve()
    assert w.kind == "linear" and w.t == 500
    lin, cos = ref_alpha_bars("linear"), ref_alpha_bars("cosine")
    # LESSONS.md reference values at t = 500
    assert abs(w.alpha_bar - 0.078587) < 1e-6
    assert abs(w.sqrt_alpha_bar - math.sqrt(lin[500])) < 1e-9
    assert abs(w.sqrt_one_minus_alpha_bar - math.sqrt(1 - lin[500])) < 1e-9
    assert f"{math.sqrt(lin[500]):.4f}" in w.texts["readout"]
    img_linear = w.image.copy()
    png_linear = bytes(w._view.value)
    w.kind = "cosine"
    assert w.toggle.value == "cosine"
    assert abs(w.alpha_bar - 0.49384) < 1e-5
    assert abs(w.sqrt_alpha_bar - math.sqrt(cos[500])) < 1e-9
    assert abs(w.sqrt_one_minus_alpha_bar - math.sqrt(1 - cos[500])) < 1e-9
    assert f"{math.sqrt(cos[500]):.4f}" in w.texts["readout"]
    assert f"{math.sqrt(1 - cos[500]):.4f}" in w.texts["readout"]
    assert f"{cos[500]:.4f}" in w.texts["bar"]
    assert not np.allclose(w.image, img_linear), "toggling the schedule did not change the image"
    assert bytes(w._view.value) != png_linear
    # the image is the closed form with the widget's fixed eps
    x0 = datasets.tshirt()
    expect = math.sqrt(cos[500]) * x0 + math.sqrt(1 - cos[500]) * w.eps
    assert np.abs(w.image - expect).max() < 1e-5


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 10, 50, 100, 250, 500, 700, 950, 1000])
def test_alpha_bar_curve_regime_sentence(kind, t):
    w = widgets.AlphaBarCurve(kind=kind, t=t)
    ab = ref_alpha_bars(kind)[t]
    sentence = w.texts["regime"]
    if t == 0:
        assert "clean" in sentence
        np.testing.assert_array_equal(w.image, datasets.tshirt())
        return
    snr_db = 10 * math.log10(ab / (1 - ab))
    assert abs(w.snr_db - snr_db) < 1e-6
    word = expected_regime_word(snr_db)
    assert word in sentence, (snr_db, sentence)
    others = {"mostly signal", "balanced", "mostly noise", "pure noise"} - {word}
    assert not any(o in sentence for o in others), sentence


@pytest.mark.parametrize("snr_db", [40.0, 10.01, 9.99, 0.0, -9.99, -10.01, -29.99, -30.01, -80.0])
def test_regime_thresholds(snr_db):
    sentence = widgets.regime(snr_db)
    word = expected_regime_word(snr_db)
    assert word in sentence, (snr_db, sentence)


def test_alpha_bar_curve_regime_changes_with_t():
    w = widgets.AlphaBarCurve(kind="linear", t=20)
    early = w.texts["regime"]
    w.t = 900
    late = w.texts["regime"]
    assert early != late and "signal" in early and "noise" in late
    assert w._marker.get_xdata()[0] == 900
    assert abs(w._marker.get_ydata()[0] - ref_alpha_bars("linear")[900]) < 1e-12


# ------------------------------------------------------------------------------ Playground
def test_playground_forward_adds_noise_step_by_step():
    p = widgets.Playground("checkerboard", steps=80)
    assert p.T == 80 and p.schedule.T == 80
    assert p.schedule.alpha_bars[80] < 1e-3, "80-step schedule does not reach near-pure noise"
    x0 = datasets.checkerboard()
    np.testing.assert_array_equal(p.image, x0)
    rms = []
    for t in (0, 20, 40, 60, 80):
        p.goto(t)
        assert p.phase == "forward" and p.t == t
        rms.append(float(np.sqrt(np.mean((p.image.astype(np.float64) - x0) ** 2))))
    assert all(a < b for a, b in zip(rms, rms[1:])), f"noise does not grow: {rms}"
    x = p.frame_of(80).astype(np.float64)
    assert abs(x.std() - 1) < 0.15 and abs(corr(x, x0)) < 0.2, (x.std(), corr(x, x0))
    # forward frames have the closed form's noise level
    ab = p.schedule.alpha_bars[40]
    resid = p.frame_of(40).astype(np.float64) - math.sqrt(ab) * x0
    assert abs(resid.std() / math.sqrt(1 - ab) - 1) < 0.1, resid.std()


def test_playground_oracle_reverse_returns_to_the_pattern():
    p = widgets.Playground("circle")
    x0 = datasets.circle()
    rms = [float(np.sqrt(np.mean((p.frame_of(t, "reverse").astype(np.float64) - x0) ** 2)))
           for t in (80, 60, 40, 20, 0)]
    assert all(a > b for a, b in zip(rms, rms[1:])), f"reverse does not denoise: {rms}"
    assert rms[-1] < 1e-4, f"oracle reverse ends {rms[-1]:.2e} from the pattern"
    np.testing.assert_array_equal(p.frame_of(80, "reverse"), p.frame_of(80, "forward"))
    p.goto(0, "reverse")
    assert p.frame == 160 and p.phase == "reverse"
    assert "oracle" in p.texts["status"] and "reverse" in p.texts["status"]


def test_playground_controls():
    p = widgets.Playground()
    png0 = bytes(p._view.value)
    for _ in range(40):
        p.step()
    assert (p.phase, p.t) == ("forward", 40)
    assert "forward t = 40" in p.texts["status"]
    assert bytes(p._view.value) != png0
    p.step(41)
    assert (p.phase, p.t, p.frame) == ("reverse", 79, 81)
    p.back(2)
    assert (p.phase, p.t) == ("forward", 79)
    p.step(10_000)
    assert p.frame == 160 and p.t == 0
    p.play()
    assert p.player.playing is True
    p.pause()
    assert p.player.playing is False
    p.player.value = 55  # the Play widget drives the frame slider
    assert p.frame == 55 and p.t == 55
    np.testing.assert_array_equal(p.image, p.frames[55])
    p.reset()
    assert p.frame == 0 and p.player.playing is False
    p.dropdown.value = "circle"
    np.testing.assert_array_equal(p.image, datasets.circle())
    with pytest.raises(ValueError):
        p.goto(81)


def _buttons(widget):
    """The widget's Button children by label, found by walking its box tree."""
    out, todo = {}, [widget.widget]
    while todo:
        node = todo.pop()
        if type(node).__name__ == "Button":
            out[node.description] = node
        todo.extend(getattr(node, "children", ()))
    return out


def test_frame_player_buttons_step_back_and_reset(pretrained):
    for p in (widgets.Playground(),
              widgets.TrajectoryPlayer(pretrained, sampler="ddim", steps=10, seed=1,
                                       progress=False)):
        b = _buttons(p)
        assert set(b) >= {"< step", "step >", "reset"}
        for _ in range(3):
            b["step >"].click()
        assert p.frame == 3
        b["< step"].click()
        assert p.frame == 2
        p.play()
        b["reset"].click()
        assert p.frame == 0 and p.player.playing is False


def test_playground_seeded_and_denoiser_hook():
    a, b, c = widgets.Playground(seed=0), widgets.Playground(seed=0), widgets.Playground(seed=1)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert np.abs(a.frames[80] - c.frames[80]).max() > 0.5
    s, x0 = a.schedule, datasets.checkerboard()

    def exact_eps(xt, t):  # what a perfect network would predict
        return (xt - s.sqrt_alpha_bars[t] * x0) / s.sqrt_one_minus_alpha_bars[t]

    d = widgets.Playground(denoiser=exact_eps)
    assert not d.oracle
    err = np.abs(d.frames - a.frames).max()
    assert err < 1e-3, f"exact-eps denoiser differs from the oracle by {err:.2e}"
    d.goto(30, "reverse")
    assert "oracle" not in d.texts["status"]
    z = widgets.Playground(denoiser=lambda xt, t: np.zeros_like(xt))
    np.testing.assert_array_equal(z.frames[:81], a.frames[:81])
    assert np.abs(z.frames[-1] - x0).max() > 0.5, "a useless denoiser still found the pattern"
    with pytest.raises(ValueError):
        widgets.Playground(denoiser=lambda xt, t: np.zeros(3))


def test_playground_rejects_bad_arguments():
    with pytest.raises(ValueError):
        widgets.Playground("stripes")
    with pytest.raises(ValueError):
        widgets.Playground(steps=80, schedule=ddpm.NoiseSchedule("cosine", timesteps=50))
    with pytest.raises(TypeError):
        widgets.Playground(denoiser=3)


# ------------------------------------------------------------------------------ lazy import
def _run(code):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_import_ddpm_does_not_import_widget_libraries():
    r = _run("import sys, ddpm; print('ipywidgets' in sys.modules, 'matplotlib' in sys.modules);"
             "print(type(ddpm.widgets.NoiseSlider).__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "type"], r.stdout


def test_missing_ipywidgets_says_what_to_install():
    r = _run("import sys; sys.modules['ipywidgets'] = None\n"
             "from ddpm import widgets\n"
             "try:\n    widgets.NoiseSlider()\nexcept ImportError as e:\n    print('ERR', e)")
    assert r.returncode == 0, r.stderr
    assert "ERR" in r.stdout and "ddpm[notebooks]" in r.stdout, r.stdout


# ------------------------------------------------------------------------ TrajectoryPlayer
@pytest.fixture(scope="module")
def pretrained():
    return ddpm.load_pretrained("fashion-mnist")


def test_trajectory_player_shows_the_real_reverse_run(pretrained):
    # a short DDIM run of the shipped model, 2 images; the reference run is separate
    p = widgets.TrajectoryPlayer(pretrained, sampler="ddim", steps=10, n=2, seed=7, progress=False)
    visited = [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    assert p.ts == tuple(visited + [0]), p.ts            # <= 100 steps: every step, and the end
    images, traj = pretrained.sample(2, steps=10, sampler="ddim", seed=7, value_range=(-1, 1),
                                     return_trajectory=visited + [0], progress=False)
    np.testing.assert_array_equal(p.images, images)
    np.testing.assert_array_equal(traj.t, p.ts)
    for k, t in enumerate(p.ts):
        p.frame = k
        assert p.t == t
        np.testing.assert_array_equal(p.x_t, traj.x_t[k])
        np.testing.assert_array_equal(p.eps_hat, traj.eps_hat[k])
        np.testing.assert_array_equal(p.x0_hat, traj.x0_hat[k])
        assert f"t = {t} /" in p.texts["readout"]
        assert f"{pretrained.schedule.alpha_bars[t]:.4g}" in p.texts["readout"]
    np.testing.assert_array_equal(p.x_t, images)         # t = 0 is the sample itself
    # x_T is N(0, I) (not a noised image) and eps_hat/x0_hat are the model's, not the forward formula
    p.goto(1000)
    assert abs(float(p.x_t.std()) - 1) < 0.1
    eps_ref, x0_ref = pretrained.predict_eps_and_x0(p.x_t, 1000)
    err = np.abs(p.eps_hat - eps_ref).max()
    assert err < 1e-4, f"eps_hat at t=1000 differs from the model's prediction by {err:.2e}"
    np.testing.assert_allclose(p.x0_hat, np.clip(x0_ref, -1, 1), atol=1e-3)


def test_trajectory_player_controls_and_display(pretrained):
    p = widgets.TrajectoryPlayer(pretrained, sampler="ddim", steps=10, seed=1, progress=False)
    assert p.frame == 0 and p.t == 1000 and p.x_t.shape == (1, 1, 28, 28)
    png0 = bytes(p._view.value)
    assert png0[:8] == b"\x89PNG\r\n\x1a\n" and p.png[:8] == b"\x89PNG\r\n\x1a\n"
    p.step()
    assert p.t == 900 and bytes(p._view.value) != png0
    p.step(3)
    assert p.t == 600
    p.back()
    assert p.t == 700
    p.player.value = 8                  # the Play widget drives the slider
    assert p.slider.value == 8 and p.t == 200
    np.testing.assert_array_equal(p.x0_hat, p.trajectory.x0_hat[8])
    p.slider.value = 2
    assert p.player.value == 2 and p.t == 800
    p.t = 300
    assert p.frame == 7
    x, e, x0 = p.frame_of(300)
    np.testing.assert_array_equal(x, p.x_t)
    p.step(1000)
    assert p.t == 0 and "done" in p.texts["regime"]
    p.play()
    assert p.player.playing is True
    p.pause()
    assert p.player.playing is False
    p.reset()
    assert p.frame == 0 and p.player.playing is False
    with pytest.raises(ValueError):
        p.goto(350)
    with pytest.raises(TypeError):
        p.goto(300.0)


def test_trajectory_player_regime_text_follows_the_snr(pretrained):
    p = widgets.TrajectoryPlayer(pretrained, sampler="ddpm", steps=20, seed=0, progress=False)
    assert p.ts == tuple(range(1000, 0, -50)) + (0,)
    assert set(widgets.LESSON_TS) <= set(p.ts)
    seen = {}
    for t in p.ts:
        p.t = t
        seen[t] = p.texts["regime"]
        if t == 0:
            continue
        snr_db = 10 * math.log10(ref_alpha_bars("linear")[t] / (1 - ref_alpha_bars("linear")[t]))
        assert abs(p.snr_db - snr_db) < 1e-6
        word = ("refining details" if snr_db > 10 else
                "a shape is emerging" if snr_db >= -10 else "hallucinating structure")
        assert word in seen[t], (t, snr_db, seen[t])
    assert "hallucinating" in seen[1000] and "emerging" in seen[400] and "refining" in seen[50]
    assert len(set(seen.values())) == 4


def test_trajectory_player_default_capture_of_a_long_run():
    # a tiny untrained model keeps the 200-step run cheap; the capture rule is what is tested
    d = ddpm.Diffusion(ddpm.UNet(seed=0, block_out_channels=(8, 8), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), sample_size=8))
    p = widgets.TrajectoryPlayer(d, sampler="ddpm", steps=200, seed=0, progress=False)
    visited = list(range(1000, 0, -5))               # 200 trailing steps of 1000
    expect = set(visited[::2]) | {t for t in widgets.LESSON_TS if t in visited} | {0}
    assert p.ts == tuple(sorted(expect, reverse=True))
    assert p.ts[:3] == (1000, 990, 980) and 50 in p.ts and p.ts[-1] == 0
    images = d.sample(1, steps=200, seed=0, value_range=(-1, 1), progress=False)
    np.testing.assert_array_equal(p.images, images)
    q = widgets.TrajectoryPlayer(d, sampler="ddpm", steps=200, seed=0, capture=[1000, 500, 0],
                                 progress=False)
    assert q.ts == (1000, 500, 0)
    np.testing.assert_array_equal(q.frame_of(500)[0], p.frame_of(500)[0])


def test_trajectory_player_rejects_bad_arguments(pretrained):
    W = widgets.TrajectoryPlayer
    with pytest.raises(TypeError):
        W(pretrained.model)                          # a UNet, not a Diffusion
    with pytest.raises(ValueError):
        W(pretrained, sampler="euler")
    with pytest.raises(ValueError):
        W(pretrained, steps=0)
    with pytest.raises(ValueError):
        W(pretrained, steps=1001)
    with pytest.raises(ValueError):
        W(pretrained, n=0)
    with pytest.raises(ValueError):
        W(pretrained, n=17)
    with pytest.raises(TypeError):
        W(pretrained, n=2.0)
    with pytest.raises(TypeError):
        W(pretrained, seed="0")
    with pytest.raises(ValueError):
        W(pretrained, sampler="ddim", steps=10, capture=[1000, 950, 0])   # 950 is not visited
    with pytest.raises(ValueError):
        W(pretrained, sampler="ddim", steps=10, capture=[])
    with pytest.raises(ValueError):
        W(pretrained, sampler="ddim", steps=10, capture=[500, 500])
    with pytest.raises(TypeError):
        W(pretrained, sampler="ddim", steps=10, capture=[500.0])
    with pytest.raises(TypeError):
        W(pretrained, sampler="ddim", steps=10, capture=5)


def test_trajectory_player_default_model_is_the_shipped_one():
    p = widgets.TrajectoryPlayer(sampler="dpm++", steps=4, capture=[1000, 0], progress=False)
    assert p.ts == (1000, 0)
    ref = ddpm.load_pretrained("fashion-mnist").sample(1, steps=4, sampler="dpm++", seed=0,
                                                       value_range=(-1, 1), progress=False)
    np.testing.assert_array_equal(p.images, ref)


@pytest.mark.parametrize("snr_db", [40.0, 10.01, 9.99, 0.0, -9.99, -10.01, -80.0])
def test_reverse_regime_thresholds(snr_db):
    word = ("refining details" if snr_db > 10 else
            "a shape is emerging" if snr_db >= -10 else "hallucinating structure")
    assert word in widgets.reverse_regime(snr_db)


# ----------------------------------------------------------------------------- Inpainter

def _small_diffusion():
    net = ddpm.UNet(seed=0, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
                    down_block_types=("DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D"), add_attention=False)
    return ddpm.Diffusion(net)


def test_inpainter_keeps_the_unmasked_pixels_and_fills_the_box():
    w = widgets.Inpainter(diffusion=_small_diffusion(), n=2, steps=6, jump_length=2,
                          jump_n_sample=2, seed=1)
    w.box = (5, 6, 10, 12)
    m = w.mask
    assert m.shape == (28, 28) and m.sum() == 28 * 28 - 10 * 12 and m[5, 6] == 0 and m[4, 6] == 1
    assert np.all(w.masked[0][m == 0] == 0) and np.array_equal(w.masked[0][m == 1],
                                                               w.original[0][m == 1])
    out = w.run()
    assert out.shape == (2, 1, 28, 28) and w.seconds > 0
    keep = np.broadcast_to(m == 1, out.shape)
    assert np.array_equal(out[keep], np.broadcast_to(w.original, out.shape)[keep])
    assert not np.array_equal(out[0], out[1])              # two seeds, two completions
    assert "completions" in w.texts["status"] and w.png[:8] == b"\x89PNG\r\n\x1a\n"


def test_inpainter_img2img_mode_and_picking_another_test_image():
    w = widgets.Inpainter(diffusion=_small_diffusion(), n=1, steps=5, strength=0.3)
    first = w.original.copy()
    w._w_index.value = 3                                     # the slider picks another image
    assert not np.array_equal(first, w.original) and w.results is None
    w.mode = "img2img"
    assert np.array_equal(w.masked, w.original)              # img2img ignores the box
    out = w.run()
    assert out.shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="inpaint"):
        w.mode = "outpaint"


def test_inpainter_bad_arguments():
    d = _small_diffusion()
    with pytest.raises(TypeError, match="Diffusion"):
        widgets.Inpainter(diffusion=d.model)
    with pytest.raises(ValueError, match="n"):
        widgets.Inpainter(diffusion=d, n=9)
    with pytest.raises(ValueError, match="shape"):
        widgets.Inpainter(np.zeros((3, 28, 28), np.float32), diffusion=d)
    w = widgets.Inpainter(diffusion=d, n=1)
    with pytest.raises(ValueError, match="box"):
        w.box = (30, 0, 4, 4)
