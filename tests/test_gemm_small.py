"""The Winograd convolutions' small product C = A B (csrc/core/gemm_small.h).

Checked against a float64 product, and - where the CPU runs ddpm's own
AVX2 + FMA kernel - against the exact chain it promises: each C[i][j] is
fma(A[i][k], B[k][j], .) for k = 0, 1, ..., K-1 from 0, computed here in exact
rational arithmetic rounded to float32 after every step.  Then every element
is the same whichever of the kernel's blocks (8, 4 or 1 rows, 8-24 columns, a
masked last vector, K in blocks of up to 256) computed it, in whichever order the
blocks went (row blocks first for narrow products, column blocks first for
wide ones), so products of any shape and any part of one agree bit for bit.
The product reads a packed (blocks of 4 rows interleaved, the rest row by
row), as the convolutions pack their weights; the hook packs it first.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ddpm import _core

F32 = np.float32


def _product(a, b):
    out = np.full((a.shape[0], b.shape[1]), np.nan, F32)
    _core.gemm_small(out, np.ascontiguousarray(a), np.ascontiguousarray(b), a.shape[0],
                     b.shape[1], a.shape[1])
    return out


def _operands(M, N, K, seed=0):
    rng = np.random.default_rng([seed, M, N, K])
    return (rng.standard_normal((M, K)).astype(F32), rng.standard_normal((K, N)).astype(F32))


def _kernel_in_use():
    return _core.gemm_small_kernel(True)


def _round_f32(x: Fraction) -> Fraction:
    """x rounded to the nearest float32 (ties to even; normal range)."""
    if x == 0:
        return x
    sign, x = (-1 if x < 0 else 1), abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1                      # now 2**e <= x < 2**(e+1)
    scale = Fraction(2) ** (23 - e)
    m = round(x * scale)            # 24-bit significand, half to even
    return sign * Fraction(m) / scale


def _fma_chain(a_row, b_col):
    acc = Fraction(0)
    for x, y in zip(a_row, b_col):
        acc = _round_f32(Fraction(float(x)) * Fraction(float(y)) + acc)
    return float(acc)


SHAPES = [(1, 1, 1), (4, 8, 1), (3, 5, 7), (5, 13, 9), (8, 24, 32), (7, 31, 16), (12, 32, 40),
          (9, 40, 3), (32, 224, 32), (64, 112, 64), (6, 56, 200), (13, 20, 257), (4, 17, 384),
          (16, 32, 128), (13, 32, 256), (19, 8, 100)]   # the last three: row blocks first


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_gemm_small_vs_float64(M, N, K):
    a, b = _operands(M, N, K)
    got = _product(a, b)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    # K roundings of at most 2**-24 each, relative to the sum of |terms|
    bound = 1.01 * K * 2.0 ** -24 * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert np.all(np.abs(got - ref) <= bound + 1e-30), np.abs(got - ref).max()


@pytest.mark.parametrize("M,N,K", [(5, 13, 9), (6, 27, 140), (4, 9, 257),
                                   (11, 8, 140), (9, 5, 9),   # these two: 8-row blocks
                                   (19, 8, 60), (9, 24, 150)])   # these two: row blocks first
def test_gemm_small_is_the_exact_fma_chain(M, N, K):
    if not _kernel_in_use():
        pytest.skip("this CPU has no AVX2 + FMA: the products go to OpenBLAS")
    a, b = _operands(M, N, K, seed=1)
    got = _product(a, b)
    want = np.array([[_fma_chain(a[i], b[:, j]) for j in range(N)] for i in range(M)], F32)
    assert np.array_equal(got, want), f"{np.sum(got != want)} of {M * N} differ"


def test_gemm_small_any_block_gives_the_same_bits():
    if not _kernel_in_use():
        pytest.skip("this CPU has no AVX2 + FMA: the products go to OpenBLAS")
    # 61 columns go column blocks first, 32 (a 7x7 layer's chunk) row blocks first
    for M, N, K in [(23, 61, 150), (23, 32, 128)]:
        a, b = _operands(M, N, K, seed=2)
        whole = _product(a, b)
        for i0, i1, j0, j1 in [(0, 23, 0, 1), (1, 22, 3, N), (5, 9, 7, 30), (22, 23, 0, N),
                               (0, 4, 24, 32), (2, 19, 13, 27), (0, 23, 0, 17)]:
            part = _product(a[i0:i1], b[:, j0:j1])
            assert np.array_equal(part, whole[i0:i1, j0:j1]), (M, N, K, i0, i1, j0, j1)


def test_gemm_small_off_switch_gives_openblas_numbers_within_rounding():
    M, N, K = 35, 224, 64   # 8 blocks of 4 rows and 3 rows after them
    a, b = _operands(M, N, K, seed=3)
    was = _core.gemm_small_kernel(False)
    try:
        blas = _product(a, b)
    finally:
        _core.gemm_small_kernel(was)
    ours = _product(a, b)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    bound = 1.01 * K * 2.0 ** -24 * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert np.all(np.abs(blas - ref) <= bound) and np.all(np.abs(ours - ref) <= bound)


def test_gemm_small_refuses_bad_sizes():
    a = np.zeros((2, 3), F32)
    b = np.zeros((3, 4), F32)
    out = np.zeros((2, 4), F32)
    with pytest.raises(ValueError, match="K"):
        _core.gemm_small(out, a, b, 2, 4, 0)
    with pytest.raises(ValueError, match="b must hold 8"):
        _core.gemm_small(out, np.zeros((2, 2), F32), b, 2, 4, 2)   # b holds 12, not 8
    with pytest.raises(ValueError, match="out must hold 6"):
        _core.gemm_small(out, a, b[:, :3].copy(), 2, 3, 3)          # out holds 8, not 6
