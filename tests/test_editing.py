"""img2img (SDEdit) and RePaint inpainting: against diffusers' schedulers driven in a loop
with the same model outputs, images, masks and noise; the edge cases the docs promise;
bad input."""
import numpy as np
import pytest

import ddpm
from ddpm.editing import img2img_timesteps, repaint_timesteps

SHAPE = (3, 1, 8, 8)
PT = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


@pytest.fixture(autouse=True)
def _one_thread(threads):
    threads(1)


@pytest.fixture(scope="module")
def net():
    return ddpm.UNet(seed=3, sample_size=8, block_out_channels=(16, 32), layers_per_block=1,
                     down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                     up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)


def scheduler_schedule(sched):
    """Our NoiseSchedule with exactly the scheduler's float32 alphas_cumprod."""
    ac = sched.alphas_cumprod.double().numpy()
    return ddpm.NoiseSchedule.from_betas(1 - ac / np.concatenate([[1.0], ac[:-1]]))


def images(rng, shape=SHAPE):
    return np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(np.float32)


def box_mask(shape=SHAPE):
    m = np.ones(shape, np.float32)
    m[:, :, 2:6, 1:5] = 0.0
    return m


# ----------------------------------------------------------------------------- RePaint

@pytest.mark.parametrize("steps,jl,jn", [(10, 2, 3), (25, 5, 2), (40, 10, 10), (7, 3, 1)])
def test_repaint_timesteps_are_diffusers(steps, jl, jn):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.RePaintScheduler()
    sched.set_timesteps(steps, jump_length=jl, jump_n_sample=jn)
    ref = [int(t) for t in sched.timesteps]
    ts, prevs = repaint_timesteps(1000, steps, jl, jn)
    stride = 1000 // steps
    # rebuild diffusers' list from ours: a model step at t is timestep t - 1; a jump back
    # up ends at the next model time
    rebuilt, last = [], ref[0] + 1
    for t, p in zip(ts, prevs):
        if p < t:
            rebuilt.append(int(t) - 1)
            assert p == max(int(t) - 1 - stride + 1, 0)
        else:
            assert p - t == stride, (t, p)
            rebuilt.append(int(t) - 1 + stride)
    assert rebuilt == ref


def diffusers_repaint(sched, steps, jl, jn, x_T, known, mask, model, step_noise, undo_noise,
                      eta):
    """RePaintPipeline's loop with the scheduler's noise taken from our lists."""
    import torch
    from diffusers.schedulers import scheduling_repaint
    draws = [torch.from_numpy(a.copy()) for a in step_noise]
    undos = [torch.from_numpy(a.copy()) for a in undo_noise]
    where = {"queue": draws}

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        return where["queue"].pop(0)

    real = scheduling_repaint.randn_tensor
    scheduling_repaint.randn_tensor = fake_randn
    try:
        sched.set_timesteps(steps, jump_length=jl, jump_n_sample=jn)
        sched.eta = eta
        x = torch.from_numpy(x_T.copy())
        orig = torch.from_numpy(known)
        m = torch.from_numpy(mask)
        t_last = sched.timesteps[0] + 1
        for t in sched.timesteps:
            if t < t_last:
                where["queue"] = draws
                mo = torch.from_numpy(np.ascontiguousarray(model(x.numpy(), int(t))))
                x = sched.step(mo, t, x, orig, m).prev_sample
            else:
                where["queue"] = undos
                x = sched.undo_step(x, t_last)
            t_last = t
    finally:
        scheduling_repaint.randn_tensor = real
    assert not draws and not undos, "noise lists not used up"
    return x.numpy()


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_repaint_against_diffusers(net, eta, rng):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    steps, jl, jn = 20, 4, 3
    sched = diffusers.RePaintScheduler()
    schedule = scheduler_schedule(sched)
    # the same numbers on both sides: diffusers' undo_step reads its float32 linspace betas,
    # which differ by an ulp here and there from the betas of its own float32 alphas_cumprod
    # (our schedule is built from the latter); one-ulp betas move this loop by ~2e-5
    sched.betas = torch.from_numpy(schedule.betas[1:].astype(np.float32))
    d = ddpm.Diffusion(net, schedule)
    x0, mask = images(rng), box_mask()
    mask[0, 0, 0, 0] = 0.25                      # a soft pixel too
    ts, prevs = repaint_timesteps(1000, steps, jl, jn)
    down = prevs < ts
    x_T = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((len(ts),) + SHAPE).astype(np.float32)
    U = int(np.sum(np.where(~down, prevs - ts, 0)))
    undo = rng.standard_normal((U,) + SHAPE).astype(np.float32)
    ours = d.inpaint(x0, mask, steps=steps, jump_length=jl, jump_n_sample=jn, eta=eta, x_T=x_T,
                     noise=noise, undo_noise=undo, value_range=(-1, 1), progress=False)
    ref = diffusers_repaint(sched, steps, jl, jn, x_T, x0, mask, lambda x, t: net(x, t),
                            list(noise[down]), list(undo), eta)
    err = np.abs(ours - ref).max()
    print(f"RePaint eta={eta}: {len(ts)} entries, max diff {err:.3g}")
    assert err <= 1e-5, f"max diff {err:.3g}"


def test_inpaint_keeps_the_known_region_exactly(net, rng):
    d = ddpm.Diffusion(net)
    x0, mask = images(rng), box_mask()
    out = d.inpaint(x0, mask, steps=10, jump_length=3, jump_n_sample=2, seed=1,
                    value_range=(-1, 1), progress=False)
    assert np.array_equal(out[mask == 1], x0[mask == 1])
    assert not np.allclose(out[mask == 0], x0[mask == 0], atol=1e-3)
    # a (H, W) mask broadcasts to every image and channel
    out2 = d.inpaint(x0, mask[0, 0], steps=10, jump_length=3, jump_n_sample=2, seed=1,
                     value_range=(-1, 1), progress=False)
    assert np.array_equal(out, out2)


def test_inpaint_same_seed_same_bits_any_thread_count(net, threads, rng):
    d = ddpm.Diffusion(net)
    x0, mask = images(rng), box_mask()
    kw = dict(steps=10, jump_length=3, jump_n_sample=3, eta=0.5, seed=4, progress=False)
    a = d.inpaint(x0, mask, **kw)
    threads(2)
    b = d.inpaint(x0, mask, **kw)
    assert np.array_equal(a, b)
    c = d.inpaint(x0, mask, **{**kw, "seed": 5})
    assert not np.array_equal(a, c)


def test_inpaint_trajectory_takes_the_last_visit(net, rng):
    d = ddpm.Diffusion(net)
    x0, mask = images(rng), box_mask()
    out, traj = d.inpaint(x0, mask, steps=10, jump_length=3, jump_n_sample=2, seed=1,
                          return_trajectory=[901, 301, 0], value_range=(-1, 1),
                          progress=False)
    assert traj.t.tolist() == [901, 301, 0]
    assert traj.x_t.shape == (3,) + SHAPE
    assert np.array_equal(traj.x_t[-1], out)
    # the known region of the frame at 301 is x0 noised to t = 301
    assert not np.array_equal(traj.x_t[1], traj.x_t[2])


# ----------------------------------------------------------------------------- img2img

def test_img2img_timesteps_follow_diffusers_get_timesteps():
    t, _ = img2img_timesteps(1000, 50, 0.6, "ddim")
    assert len(t) == 30 and t[0] == 600 and t[-1] == 20
    assert len(img2img_timesteps(1000, 50, 0.0, "ddim")[0]) == 0
    assert img2img_timesteps(1000, 1000, 0.6, "ddpm")[0][0] == 600


def diffusers_img2img(sched, steps, strength, x0, z, model, noise=None, eta=None):
    import torch
    sched.set_timesteps(steps)
    init = min(int(steps * strength), steps)
    start = max(steps - init, 0)
    timesteps = sched.timesteps[start * sched.order:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(start * sched.order)
    x = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(z), timesteps[:1])
    for k, t in enumerate(timesteps):
        mo = torch.from_numpy(np.ascontiguousarray(model(x.numpy(), int(t))))
        kw = {}
        if eta is not None:
            kw["eta"] = eta
            if eta > 0:
                kw["variance_noise"] = torch.from_numpy(noise[k])
        x = sched.step(mo, t, x, **kw).prev_sample
    return x.numpy()


@pytest.mark.parametrize("sampler,objective,eta", [("ddim", "v", 0.0), ("ddim", "x0", 1.0),
                                                   ("ddim", "eps", 0.0), ("dpm++", "v", 0.0)])
def test_img2img_against_diffusers(net, sampler, objective, eta, rng):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    steps, strength = 20, 0.55
    if sampler == "ddim":
        sched = diffusers.DDIMScheduler(timestep_spacing="trailing", prediction_type=PT[objective])
    else:
        sched = diffusers.DPMSolverMultistepScheduler(
            timestep_spacing="trailing", prediction_type=PT[objective],
            algorithm_type="dpmsolver++", solver_order=2)
    d = ddpm.Diffusion(net, scheduler_schedule(sched), objective=objective)
    x0 = images(rng)
    z = rng.standard_normal(SHAPE).astype(np.float32)
    K = int(steps * strength)
    noise = rng.standard_normal((K,) + SHAPE).astype(np.float32)
    ours = d.img2img(x0, strength, steps=steps, sampler=sampler, eta=eta, x_T=z, noise=noise,
                     clip_x0=sampler == "ddim", value_range=(-1, 1), progress=False)
    ref = diffusers_img2img(sched, steps, strength, x0, z, lambda x, t: net(x, t), noise,
                            eta if sampler == "ddim" else None)
    err = np.abs(ours - ref).max()
    print(f"img2img {sampler} {objective} eta={eta}: max diff {err:.3g}")
    assert err <= 1e-5, f"max diff {err:.3g}"


def test_img2img_strength_0_returns_the_input_and_1_is_plain_sampling(net, rng):
    d = ddpm.Diffusion(net, objective="v")
    x0 = images(rng)
    assert np.array_equal(d.img2img(x0, 0.0, value_range=(-1, 1), progress=False), x0)
    z = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal((50,) + SHAPE).astype(np.float32)
    ours = d.img2img(x0, 1.0, sampler="ddim", eta=0.5, x_T=z, noise=noise, progress=False)
    ab = np.float32(d.schedule.alpha_bars[1000])
    start = np.sqrt(ab) * x0 + np.sqrt(np.float32(1) - ab) * z
    plain = d.sample(3, sampler="ddim", eta=0.5, x_T=start, noise=noise, progress=False)
    assert np.array_equal(ours, plain)


def test_img2img_seeded_and_thread_independent(net, threads, rng):
    d = ddpm.Diffusion(net)
    x0 = images(rng)
    a = d.img2img(x0, 0.5, steps=10, seed=2, progress=False)
    threads(2)
    assert np.array_equal(a, d.img2img(x0, 0.5, steps=10, seed=2, progress=False))
    # more strength moves the images further from the input (same noise)
    near = d.img2img(x0, 0.2, steps=10, seed=2, value_range=(-1, 1), progress=False)
    far = d.img2img(x0, 0.9, steps=10, seed=2, value_range=(-1, 1), progress=False)
    assert np.abs(near - x0).mean() < np.abs(far - x0).mean()


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,match", [
    (lambda d, x, m: d.img2img(x, 1.5), "strength"),
    (lambda d, x, m: d.img2img(x, -0.1), "strength"),
    (lambda d, x, m: d.img2img(x * 3, 0.5), r"\[-1, 1\]"),
    (lambda d, x, m: d.img2img(x[:, :, :4], 0.5), "shape"),
    (lambda d, x, m: d.inpaint(x, m[:, :, :5]), "broadcast"),
    (lambda d, x, m: d.inpaint(x, m * 2), r"\[0, 1\]"),
    (lambda d, x, m: d.inpaint(x, m - 1), r"\[0, 1\]"),
    (lambda d, x, m: d.inpaint(x * 2, m), r"\[-1, 1\]"),
    (lambda d, x, m: d.inpaint(x, m, jump_length=0), "jump_length"),
    (lambda d, x, m: d.inpaint(x, m, labels=[1, 2, 3]), "unconditional"),
    (lambda d, x, m: d.img2img(x, 0.5, labels=2), "unconditional"),
])
def test_bad_input_is_a_clear_value_error(net, rng, call, match):
    d = ddpm.Diffusion(net)
    with pytest.raises(ValueError, match=match):
        call(d, images(rng), box_mask())
