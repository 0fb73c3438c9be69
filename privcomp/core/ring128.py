"""Exact arithmetic modulo 2^128 on pairs of ``uint64`` words, and exact big inner products.

Cross-party products of a vertical join need sums such as ``Σ_r U_r V_r`` of 10^6 products of
60-bit integers: far beyond Z_2^64 and beyond float64, yet they must be exact (the released
correlation is compared to pandas at 1e-9). An element of Z_2^128 is stored as two ``uint64``
arrays ``(lo, hi)`` stacked on a leading axis of length 2.

Inner products are computed exactly with floating-point BLAS: each 128-bit word pair is cut into
eight 16-bit limbs held as ``float64``; a limb product is below 2^32, and a sum of at most 2^20
of them is below 2^52 < 2^53, so ``dgemm`` over row blocks of up to 2^20 rows is *exact* (blocks
of 2^15 are used). Limb products of weight ``2^(16 (i + j))`` with ``i + j >= 8`` vanish
modulo 2^128 and are skipped when the blocks are combined (with Python integers, a handful
per output entry).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from privcomp.errors import EncodingOverflowError
from privcomp.types import RingArray

BITS = 128
MASK128 = (1 << BITS) - 1
_LIMB_BITS = 16
_LIMBS = BITS // _LIMB_BITS
# Rows per dgemm block: 2^15 sums of 32-bit limb products stay below 2^47, exact in float64
# (the bound is 2^20 rows); small blocks keep the limb matrices cache-sized.
_BLOCK_ROWS = 1 << 15
_PANEL_ROWS = 1 << 12
_U64 = np.uint64
_LOW16 = np.uint64(0xFFFF)


def encode_scaled(x: np.ndarray, frac_bits: int, *, what: str) -> RingArray:
    """``round(x * 2^frac_bits)`` modulo 2^128 as words ``(2, *x.shape)``; exact for any float.

    Raises :class:`EncodingOverflowError` (naming ``what`` and the bound) for non-finite values
    or ``|x| * 2^frac_bits >= 2^126``.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.size and not np.all(np.isfinite(arr)):
        raise EncodingOverflowError(f"{what}: values must be finite", bound=2.0**126)
    mant, exp = np.frexp(arr)
    # x * 2^f = m53 * 2^k exactly, with |m53| < 2^53 an integer, so |x * 2^f| < 2^(k + 53).
    m53 = np.ldexp(mant, 53).astype(np.int64)
    k = exp.astype(np.int64) - 53 + int(frac_bits)
    if arr.size and np.any((m53 != 0) & (k + 53 > 126)):
        raise EncodingOverflowError(
            f"{what}: |value| * 2^{frac_bits} must stay below 2^126", bound=2.0**126
        )
    small = k < 0
    # Negative k: round to an integer below 2^53 in magnitude (exact in float64), sign-extend.
    rounded = np.rint(np.ldexp(m53.astype(np.float64), np.where(small, k, 0))).astype(np.int64)
    lo = np.where(small, rounded, 0).view(np.uint64)
    hi = np.where(small & (rounded < 0), ~_U64(0), _U64(0)).astype(np.uint64)
    # Non-negative k <= 73: shift |m53| into the word pair (never shift a uint64 by >= 64).
    mag = np.abs(m53).astype(np.uint64)
    kk = np.where(small, 0, k).astype(np.uint64)
    in_lo = kk < 64
    b_lo = np.where(in_lo, mag << np.where(in_lo, kk, 0), 0).astype(np.uint64)
    spill = np.where(in_lo & (kk > 0), mag >> np.where(in_lo & (kk > 0), 64 - kk, 1), 0)
    b_hi = np.where(in_lo, spill, mag << np.where(in_lo, 0, kk - 64)).astype(np.uint64)
    neg = m53 < 0
    b_lo, b_hi = (
        np.where(neg, ~b_lo + _U64(1), b_lo).astype(np.uint64),
        np.where(neg, ~b_hi + (b_lo == 0), b_hi).astype(np.uint64),
    )
    return np.stack([np.where(small, lo, b_lo), np.where(small, hi, b_hi)]).astype(np.uint64)


def sub(a: RingArray, b: RingArray) -> RingArray:
    """``a - b`` modulo 2^128 (word pairs on axis 0)."""
    lo = a[0] - b[0]
    borrow = (a[0] < b[0]).astype(np.uint64)
    return np.stack([lo, a[1] - b[1] - borrow])


def add(a: RingArray, b: RingArray) -> RingArray:
    """``a + b`` modulo 2^128 (word pairs on axis 0)."""
    lo = a[0] + b[0]
    carry = (lo < a[0]).astype(np.uint64)
    return np.stack([lo, a[1] + b[1] + carry])


def to_ints(words: RingArray) -> list[int]:
    """Word pairs ``(2, ...)`` to Python integers in ``[0, 2^128)``, flattened in C order."""
    lo, hi = words[0].ravel().tolist(), words[1].ravel().tolist()
    return [int(h) << 64 | int(lw) for lw, h in zip(lo, hi, strict=True)]


def from_ints(values: list[int], shape: tuple[int, ...]) -> RingArray:
    """Python integers (reduced modulo 2^128) to word pairs of ``shape``."""
    red = [v & MASK128 for v in values]
    lo = np.array([v & ((1 << 64) - 1) for v in red], dtype=np.uint64).reshape(shape)
    hi = np.array([v >> 64 for v in red], dtype=np.uint64).reshape(shape)
    return np.stack([lo, hi])


def signed(value: int) -> int:
    """Read a residue modulo 2^128 as a signed integer in ``[-2^127, 2^127)``."""
    value &= MASK128
    return value - (1 << BITS) if value >> (BITS - 1) else value


def _limbs(words: RingArray) -> np.ndarray:
    """``(2, rows, n)`` words to ``(rows, n * 8)`` float64 limbs, limb index fastest."""
    rows, n = words.shape[1], words.shape[2]
    out = np.empty((rows, n, _LIMBS), dtype=np.float64)
    for w in range(2):
        for i in range(_LIMBS // 2):
            out[:, :, w * 4 + i] = (words[w] >> _U64(_LIMB_BITS * i)) & _LOW16
    return out.reshape(rows, n * _LIMBS)


def inner_products(a: RingArray, b: RingArray) -> list[int]:
    """``Σ_r a[r, i] * b[r, j]`` modulo 2^128, for words ``(2, rows, n_a)`` and ``(2, rows, n_b)``.

    Returns the ``n_a x n_b`` results row-major as Python integers in ``[0, 2^128)``. Exact:
    every ``dgemm`` block sums at most 2^15 products of 16-bit limbs (< 2^47).
    """
    rows = a.shape[1]
    acc = [[0] * _LIMBS for _ in range(a.shape[2] * b.shape[2])]
    # One BLAS thread: these small panels gain nothing from threads, and on a busy 2-core host
    # OpenBLAS's spinning threads made the same product 10-30x slower (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, rows, _BLOCK_ROWS):
            _accumulate_block(
                a[:, start : start + _BLOCK_ROWS], b[:, start : start + _BLOCK_ROWS], acc
            )
    return [sum(v << (_LIMB_BITS * lev) for lev, v in enumerate(slot)) & MASK128 for slot in acc]


_LEVEL = np.add.outer(np.arange(_LIMBS), np.arange(_LIMBS))  # weight exponent i + j per limb pair


def _accumulate_block(a: RingArray, b: RingArray, acc: list[list[int]]) -> None:
    """Add the limb-level inner products of one row block to ``acc``, per weight level."""
    n_a, n_b, rows = a.shape[2], b.shape[2], a.shape[1]
    la, lb = _limbs(a), _limbs(b)
    g = np.zeros((la.shape[1], lb.shape[1]))
    # Small dgemm panels stay in cache: several times faster than one tall product.
    for sub in range(0, rows, _PANEL_ROWS):
        g += la[sub : sub + _PANEL_ROWS].T @ lb[sub : sub + _PANEL_ROWS]
    g4 = g.astype(np.int64).reshape(n_a, _LIMBS, n_b, _LIMBS).transpose(0, 2, 1, 3)
    # Sum the limb products of equal weight (at most 8 terms < 2^47: fits int64).
    by_level = np.stack([g4[:, :, lev == _LEVEL].sum(axis=2) for lev in range(_LIMBS)], axis=-1)
    for slot, row in zip(acc, by_level.reshape(n_a * n_b, _LIMBS).tolist(), strict=True):
        for lev in range(_LIMBS):
            slot[lev] += row[lev]
