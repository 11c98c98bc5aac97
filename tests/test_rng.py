"""The counter-based generator: Philox4x32-10 words, the Box-Muller normals, their
statistics, and the promise "same seed, same bits, at any thread count".

Every expected value here comes from an independent source: Random123's published
known-answer vectors, a Philox written again below in plain Python/NumPy, and
Box-Muller evaluated in NumPy float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import ddpm
from ddpm import _core

MASK32 = 0xFFFFFFFF
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85


# --------------------------------------------------------------------------- references
def philox_scalar(ctr, key):
    """Philox4x32-10 in plain Python integers (Salmon et al. 2011)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK32, p1 & MASK32, \
                         ((p0 >> 32) ^ c3 ^ k1) & MASK32, p0 & MASK32
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return (c0, c1, c2, c3)


def philox_numpy(c0, c1, c2, c3, k0, k1):
    """The same rounds vectorised over arrays of counters (uint64 holding 32-bit values)."""
    u = np.uint64
    m = u(MASK32)
    c = [np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3)]
    k0, k1 = u(k0), u(k1)
    for _ in range(10):
        p0 = c[0] * u(M0)          # < 2**64: exact in uint64
        p1 = c[2] * u(M1)
        c = [(p1 >> u(32)) ^ c[1] ^ k0, p1 & m, (p0 >> u(32)) ^ c[3] ^ k1, p0 & m]
        k0 = (k0 + u(W0)) & m
        k1 = (k1 + u(W1)) & m
    return c


def ref_words(seed: int, stream: int, offset: int, n: int) -> np.ndarray:
    """Word i of (seed, stream) = lane i % 4 of philox((blk_lo, blk_hi, st_lo, st_hi), seed)."""
    idx = np.arange(offset, offset + n, dtype=np.uint64)
    blk = idx >> np.uint64(2)
    lane = (idx & np.uint64(3)).astype(np.int64)
    out = philox_numpy(blk & np.uint64(MASK32), blk >> np.uint64(32),
                       np.full(n, stream & MASK32, np.uint64),
                       np.full(n, stream >> 32, np.uint64),
                       seed & MASK32, seed >> 32)
    words = np.stack(out, axis=1)[np.arange(n), lane]
    return words.astype(np.uint32)


def ref_box_muller(words: np.ndarray):
    """Normals in float64 from raw words, as documented in csrc/rng.c.

    Pair (w0, w1) -> (z0, z1) and (w2, w3) -> (z2, z3) of every 4-word block:
    u1 = (a + 1/2) 2^-32, r = sqrt(-2 log u1); quadrant q = b >> 30,
    f = ((b & 0x3fffffff) + 1/2) 2^-30, angle = q pi/2 + pi/4 + (f - 1/2) pi/2;
    (z0, z1) = (r cos angle, r sin angle).  Returns (z, r) with r per value.
    """
    w = words.astype(np.uint64).reshape(-1, 2)
    a, b = w[:, 0].astype(np.float64), w[:, 1]
    r = np.sqrt(-2.0 * np.log((a + 0.5) * 2.0 ** -32))
    q = (b >> np.uint64(30)).astype(np.float64)
    f = ((b & np.uint64(0x3FFFFFFF)).astype(np.float64) + 0.5) * 2.0 ** -30
    ang = q * np.pi / 2 + np.pi / 4 + (f - 0.5) * np.pi / 2
    z = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1).reshape(-1)
    return z, np.repeat(r, 2)


def core_words(seed, stream, offset, n):
    out = np.empty(n, dtype=np.uint32)
    _core.rng_uint32(out, seed, stream, offset)
    return out


def core_normals(seed, stream, offset, n):
    out = np.empty(n, dtype=np.float32)
    _core.rng_normal(out, seed, stream, offset)
    return out


# --------------------------------------------------------------------------- Philox
RANDOM123_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32, MASK32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", RANDOM123_KAT)
def test_philox_known_answers(ctr, key, expected):
    got = tuple(_core.philox4x32_10(ctr, key))
    assert got == expected, f"got {[hex(x) for x in got]}, want {[hex(x) for x in expected]}"


@pytest.mark.parametrize("ctr,key,expected", RANDOM123_KAT)
def test_reference_philox_matches_known_answers(ctr, key, expected):
    # the test's own Philox must be right before it can judge the C one
    assert philox_scalar(ctr, key) == expected
    got = tuple(int(x[()]) for x in philox_numpy(*ctr, *key))
    assert got == expected


def test_philox_random_blocks_match_reference(rng):
    for _ in range(50):
        ctr = tuple(int(x) for x in rng.integers(0, 2 ** 32, 4))
        key = tuple(int(x) for x in rng.integers(0, 2 ** 32, 2))
        assert tuple(_core.philox4x32_10(ctr, key)) == philox_scalar(ctr, key), (ctr, key)


@pytest.mark.parametrize("seed,stream", [
    (0, 0), (1, 0), (0, 1), (0xDEADBEEF_12345678, 7), (2 ** 64 - 1, 2 ** 64 - 1),
    (12345, _core.STREAM_USER), (99, 0x0000000100000000 + 1000),
])
@pytest.mark.parametrize("offset,n", [(0, 4), (0, 1), (1, 1), (3, 2), (5, 17), (2, 1001),
                                      (7, 4096 + 3)])
def test_rng_uint32_word_for_word(seed, stream, offset, n):
    got = core_words(seed, stream, offset, n)
    want = ref_words(seed, stream, offset, n)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} of {n} words differ, first at i={bad[:1]}: "
                           f"got {got[bad[:3]]}, want {want[bad[:3]]}")


@pytest.mark.parametrize("ctr,key", [((2 ** 32, 0, 0, 0), (0, 0)), ((0, 0, 0, 0), (-1, 0))])
def test_philox_rejects_words_outside_uint32(ctr, key):
    with pytest.raises((OverflowError, ValueError)):
        _core.philox4x32_10(ctr, key)


@pytest.mark.parametrize("fn,dtype", [(_core.rng_normal, np.float32),
                                      (_core.rng_uint32, np.uint32)])
@pytest.mark.parametrize("offset", [-1, 2 ** 64])
def test_rng_offset_outside_uint64_is_refused(fn, dtype, offset):
    with pytest.raises((OverflowError, ValueError)):
        fn(np.empty(4, dtype), 0, 0, offset)


@pytest.mark.parametrize("fn,dtype", [(_core.rng_normal, np.float32),
                                      (_core.rng_uint32, np.uint32)])
def test_rng_offset_plus_size_must_not_wrap(fn, dtype):
    # the last index offset + n - 1 must fit in 64 bits; exactly fitting is fine
    fn(np.empty(4, dtype), 0, 0, 2 ** 64 - 4)
    with pytest.raises(ValueError):
        fn(np.empty(4, dtype), 0, 0, 2 ** 64 - 3)


def test_rng_uint32_block_counter_carries_into_high_word():
    # blocks 2**32 - 1 and 2**32: the block index crosses into counter word 1
    offset = 4 * (2 ** 32) - 6
    got = core_words(42, 3, offset, 12)
    want = ref_words(42, 3, offset, 12)
    assert np.array_equal(got, want), f"got {got}, want {want}"


# --------------------------------------------------------------------------- Box-Muller
@pytest.mark.parametrize("seed,stream", [(0, 0), (123, 5), (2 ** 63 + 11, _core.STREAM_USER)])
def test_rng_normal_is_box_muller_of_the_words(seed, stream):
    n = 1 << 18
    z_ref, r = ref_box_muller(core_words(seed, stream, 0, n))
    z = core_normals(seed, stream, 0, n).astype(np.float64)
    diff = np.abs(z - z_ref)
    # The C code forms u1 in float32 (a few roundings, relative error ~2e-7), which moves
    # r = sqrt(-2 log u1) by about 2e-7 / r: large only for the rare r -> 0.
    allowed = 2e-5 + np.minimum(2.5e-7 / np.maximum(r, 1e-12), 1e-3)
    worst = int(np.argmax(diff / allowed))
    assert np.all(diff <= allowed), (
        f"max abs diff {diff.max():.3g}; worst vs allowance at i={worst}: got {z[worst]}, "
        f"want {z_ref[worst]} (r={r[worst]:.3g}, allowed {allowed[worst]:.3g})")
    bulk = r >= 0.05
    assert diff[bulk].max() < 2e-5, f"max abs diff where r >= 0.05: {diff[bulk].max():.3g}"
    # and it is a real comparison: a swapped pair or a wrong quadrant is far off
    assert np.abs(z.reshape(-1, 2)[:, ::-1].reshape(-1) - z_ref).max() > 1.0


def test_rng_normal_offsets_match_reference():
    seed, stream = 77, 9
    for offset, n in [(1, 3), (2, 7), (3, 1), (5, 11), (4093, 9)]:
        start = offset - offset % 4
        z_ref, _ = ref_box_muller(core_words(seed, stream, start, (offset + n - start + 3) // 4 * 4))
        want = z_ref[offset - start: offset - start + n]
        got = core_normals(seed, stream, offset, n)
        assert np.abs(got - want).max() < 1e-4, (offset, n, np.abs(got - want).max())


# --------------------------------------------------------------------------- statistics
def norm_cdf(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * (1.0 + erf(np.asarray(x, dtype=np.float64) / math.sqrt(2.0)).astype(np.float64))


def ks_statistic(x: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample's ECDF and N(0, 1)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = x.size
    F = norm_cdf(x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))


def normal_failures(x: np.ndarray) -> list:
    """Which N(0, 1) checks a sample fails.  Bounds are ~6 standard errors (KS: alpha 1e-9),
    so a correct generator fails one with probability far below 1e-6."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    fails = []
    m = x.mean()
    if abs(m) > 6 / math.sqrt(n):
        fails.append(f"mean {m:.5f} (bound {6 / math.sqrt(n):.5f})")
    v = x.var()
    if abs(v - 1) > 6 * math.sqrt(2 / n):
        fails.append(f"variance {v:.5f} (bound 1 +- {6 * math.sqrt(2 / n):.5f})")
    for k, p in ((1, 0.682689492137), (2, 0.954499736104), (3, 0.997300203937)):
        frac = float(np.mean(np.abs(x) < k))
        se = math.sqrt(p * (1 - p) / n)
        if abs(frac - p) > 6 * se:
            fails.append(f"P(|z|<{k}) = {frac:.5f}, want {p:.5f} +- {6 * se:.5f}")
    d = ks_statistic(x)
    crit = math.sqrt(-math.log(1e-9 / 2) / 2) / math.sqrt(n)
    if d > crit:
        fails.append(f"KS D = {d:.5f} > {crit:.5f}")
    return fails


N_STAT = 1_000_000


def test_randn_is_standard_normal():
    x = ddpm.randn(N_STAT, seed=2024)
    assert x.dtype == np.float32 and x.shape == (N_STAT,)
    fails = normal_failures(x)
    assert not fails, fails


def test_normal_checks_catch_broken_generators():
    # the checks above must be able to fail: NumPy stand-ins for plausible bugs
    g = np.random.default_rng(0)
    assert not normal_failures(g.standard_normal(N_STAT))
    uniform = g.uniform(-math.sqrt(3), math.sqrt(3), N_STAT)   # mean 0, variance 1
    fu = normal_failures(uniform)
    assert any("KS" in f for f in fu) and any("P(|z|<" in f for f in fu), fu
    scaled = 1.1 * g.standard_normal(N_STAT)
    fs = normal_failures(scaled)
    assert any("variance" in f for f in fs) and any("KS" in f for f in fs), fs
    shifted = g.standard_normal(N_STAT) + 0.01
    assert any("mean" in f for f in normal_failures(shifted))


def test_rng_normal_tails_are_bounded_and_finite():
    x = core_normals(5, 0, 0, N_STAT)
    assert np.all(np.isfinite(x))
    # Box-Muller on 32-bit uniforms cannot exceed sqrt(-2 log(2**-33)) ~ 6.77
    assert np.abs(x).max() <= math.sqrt(-2 * math.log(0.5 * 2.0 ** -32)) + 1e-4, np.abs(x).max()


def _corr(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_streams_and_seeds_are_uncorrelated():
    n = 400_000
    bound = 5 / math.sqrt(n)
    s0 = ddpm.randn(n, seed=0, stream=0)
    pairs = {
        "stream 0 vs 1": (s0, ddpm.randn(n, seed=0, stream=1)),
        "seed 0 vs 1": (s0, ddpm.randn(n, seed=1, stream=0)),
        "lag 1 (the two values of one Box-Muller pair)": (s0[:-1], s0[1:]),
        "lag 2": (s0[:-2], s0[2:]),
        "lag 4 (next block)": (s0[:-4], s0[4:]),
        "z0 vs z1 of each Box-Muller pair": (s0[0::2], s0[1::2]),
        "pair (w0,w1) vs pair (w2,w3) of a block": (s0[0::4], s0[2::4]),
    }
    for name, (a, b) in pairs.items():
        r = _corr(a, b)
        bound = 5 / math.sqrt(a.size)
        assert abs(r) < bound, f"{name}: r = {r:.5f}, bound {bound:.5f}"
    # squares too (dependence that leaves linear correlation zero)
    r2 = _corr(s0[0::2] ** 2, s0[1::2] ** 2)
    assert abs(r2) < 5 / math.sqrt(n // 2), f"corr of squares within a pair: {r2:.5f}"
    # and the bound does catch a dependent pair
    assert abs(_corr(s0, 0.1 * s0 + ddpm.randn(n, seed=9))) > bound


def test_consumers_of_one_seed_use_different_streams():
    # ddpm.randn and q_sample's noise draw from different streams of the same seed
    s = ddpm.NoiseSchedule("linear")
    x0 = np.zeros((4, 1, 8, 8), np.float32)
    _, eps = s.q_sample(x0, t=10, seed=3)
    z = ddpm.randn(4, 1, 8, 8, seed=3)
    assert not np.array_equal(eps, z)
    assert abs(_corr(eps, z)) < 0.5


# --------------------------------------------------------------------------- reproducibility
def test_same_seed_same_numbers_different_seed_different_numbers():
    a = ddpm.randn(3, 5, 7, seed=11)
    b = ddpm.randn(3, 5, 7, seed=11)
    c = ddpm.randn(3, 5, 7, seed=12)
    d = ddpm.randn(3, 5, 7, seed=11, stream=1)
    assert a.tobytes() == b.tobytes()
    assert np.mean(a == c) < 0.01, f"{np.mean(a == c):.3f} of values equal across seeds"
    assert np.mean(a == d) < 0.01
    # seedless calls draw fresh seeds
    assert not np.array_equal(ddpm.randn(100), ddpm.randn(100))


def test_shape_forms_are_equivalent():
    a = ddpm.randn(2, 3, seed=1)
    b = ddpm.randn((2, 3), seed=1)
    c = ddpm.randn(6, seed=1).reshape(2, 3)
    assert a.shape == (2, 3) and a.tobytes() == b.tobytes() == c.tobytes()
    assert ddpm.randn(0, seed=1).shape == (0,)


def _big_inputs():
    x0 = ddpm.datasets.tshirt()[None].repeat(64, axis=0)
    x0 = x0 + np.linspace(-0.1, 0.1, 64, dtype=np.float32)[:, None, None, None]
    t = (np.arange(64) * 37) % 1000 + 1
    return np.ascontiguousarray(x0, np.float32), t


@pytest.mark.skipif(not _core.has_openmp(), reason="built without OpenMP: one thread only")
def test_bit_identity_across_thread_counts(threads):
    s = ddpm.NoiseSchedule("cosine")
    x0, t = _big_inputs()
    results = {}
    for n in (1, 2):
        threads(n)
        assert ddpm.get_num_threads() == n
        xt, eps = s.q_sample(x0, t, seed=7)
        chain = s.q_sample_chain(x0, (t % 150) + 1, seed=7)
        results[n] = (ddpm.randn(64, 1, 28, 28, seed=7), ddpm.randn(1_000_003, seed=8),
                      xt, eps, chain)
    names = ("randn 64x1x28x28", "randn 1e6+3", "q_sample x_t", "q_sample eps",
             "q_sample_chain")
    for name, a, b in zip(names, results[1], results[2]):
        assert a.tobytes() == b.tobytes(), (
            f"{name}: 1 vs 2 threads differ, max abs diff {np.abs(a - b).max():.3g}")


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 16383, 16384, 16385, 50_001])
def test_splitting_work_does_not_change_numbers(k):
    n = 100_000
    full = core_normals(31, 4, 0, n)
    tail = core_normals(31, 4, k, n - k)
    assert tail.tobytes() == full[k:].tobytes(), f"offset {k}: max diff {np.abs(tail - full[k:]).max()}"
    words = core_words(31, 4, 0, 4096)
    assert core_words(31, 4, k % 4096, 4096 - k % 4096).tobytes() == words[k % 4096:].tobytes()
    # pieces of odd lengths reassemble into the whole
    cuts = [0, 1, 4, 7, 100, 16390, 33000, n]
    pieces = [core_normals(31, 4, a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]
    assert np.concatenate(pieces).tobytes() == full.tobytes()


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,exc", [
    ({"seed": -1}, ValueError), ({"seed": 2 ** 64}, ValueError), ({"seed": 1.5}, TypeError),
    ({"seed": True}, TypeError), ({"seed": "1"}, TypeError), ({"stream": -1}, ValueError),
    ({"stream": 2 ** 32}, ValueError), ({"stream": 1.0}, TypeError),
])
def test_randn_bad_arguments(kwargs, exc):
    kwargs.setdefault("seed", 0)
    with pytest.raises(exc, match="seed|stream"):
        ddpm.randn(4, **kwargs)


@pytest.mark.parametrize("shape,exc", [((-1,), ValueError), ((2.0,), TypeError),
                                       ((True,), TypeError)])
def test_randn_bad_shapes(shape, exc):
    with pytest.raises(exc, match="shape"):
        ddpm.randn(*shape, seed=0)


def test_randn_extreme_seeds_work():
    a = ddpm.randn(8, seed=2 ** 64 - 1)
    assert np.all(np.isfinite(a))
    assert not np.array_equal(a, ddpm.randn(8, seed=0))


def test_new_seed_is_a_fresh_63_bit_int():
    seeds = {ddpm.new_seed() for _ in range(20)}
    assert len(seeds) == 20 and all(isinstance(s, int) and 0 <= s < 2 ** 63 for s in seeds)


def test_core_rng_bindings_reject_bad_buffers():
    from conftest import assert_subprocess_ok
    out = assert_subprocess_ok("""
        import numpy as np
        from ddpm import _core
        cases = {
            "float64 out": lambda: _core.rng_normal(np.empty(8), 0, 0, 0),
            "non-contiguous": lambda: _core.rng_normal(np.empty(16, np.float32)[::2], 0, 0, 0),
            "read-only": lambda: _core.rng_normal(np.zeros(8, np.float32).setflags(write=False)
                                                  or None, 0, 0, 0),
            "byte-swapped": lambda: _core.rng_normal(np.empty(8, ">f4"), 0, 0, 0),
            "list": lambda: _core.rng_normal([0.0] * 8, 0, 0, 0),
            "uint32 as float": lambda: _core.rng_uint32(np.empty(8, np.float32), 0, 0, 0),
            "negative seed": lambda: _core.rng_normal(np.empty(8, np.float32), -1, 0, 0),
            "float seed": lambda: _core.rng_uint32(np.empty(8, np.uint32), 1.0, 0, 0),
        }
        ro = np.zeros(8, np.float32); ro.flags.writeable = False
        cases["read-only"] = lambda: _core.rng_normal(ro, 0, 0, 0)
        for name, f in cases.items():
            try:
                f()
            except (TypeError, ValueError) as e:
                print("OK", name, "|", e)
            else:
                print("NO ERROR", name)
        """)
    assert "NO ERROR" not in out, out
    assert out.count("OK") == 8, out
