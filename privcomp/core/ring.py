"""The ring Z_2^64 on ``uint64`` arrays — the one place where numpy's dtype traps are handled.

numpy facts this module relies on (measured on numpy 2.x):

* ``uint64`` *array* arithmetic, including ``@``, wraps modulo 2^64 silently: that is the ring.
* ``uint64`` *scalar* arithmetic warns on overflow, so everything here stays an array.
* ``uint64 + int64`` promotes to ``float64`` (silent precision loss), so signed input is converted
  with ``astype(int64).view(uint64)`` at this boundary and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from privcomp.errors import EncodingError
from privcomp.types import IntArray, RingArray

RING_BITS = 64
MASK64 = (1 << RING_BITS) - 1


def as_ring(x: npt.ArrayLike) -> RingArray:
    """Return ``x`` as a ``uint64`` ring array (two's complement for negative integers).

    Raises
    ------
    EncodingError
        If ``x`` is not an integer array: floats must go through :class:`FixedPoint` first.
    """
    arr = np.asarray(x)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == object:
        return np.array([int(v) & MASK64 for v in arr.ravel()], dtype=np.uint64).reshape(arr.shape)
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise EncodingError(
            f"ring arrays hold integers; got dtype {arr.dtype} (encode floats with FixedPoint)"
        )
    return arr.astype(np.int64).view(np.uint64)


def to_signed(x: RingArray) -> IntArray:
    """Interpret ring elements as signed 64-bit integers (two's complement)."""
    return x.view(np.int64)


def zeros(shape: tuple[int, ...]) -> RingArray:
    """Return a ring array of zeros."""
    return np.zeros(shape, dtype=np.uint64)


def ring_sum(x: RingArray, axis: int | None = None) -> RingArray:
    """Sum ring elements modulo 2^64 (result is always an array, never a numpy scalar)."""
    return np.asarray(np.sum(x, axis=axis, dtype=np.uint64), dtype=np.uint64)


def ring_matmul(a: RingArray, b: RingArray) -> RingArray:
    """Matrix product modulo 2^64 (numpy's integer ``@`` is exact and wraps, with no BLAS)."""
    return np.asarray(a @ b, dtype=np.uint64)


def delta_swaps(x: RingArray, steps: Sequence[tuple[np.uint64, np.uint64]]) -> RingArray:
    """Apply delta swaps ``(shift, mask)`` to ``x`` in place (and return it).

    Each step exchanges the bits selected by ``mask`` with those ``shift`` positions above
    them (Knuth, TAOCP 4A, 7.1.3): a bit permutation, so it is XOR-linear and valid on XOR
    shares. In place, so multi-MB arrays need one temporary of their size, not one per step.
    """
    t = np.empty_like(x)
    for shift, mask in steps:
        np.right_shift(x, shift, out=t)
        t ^= x
        t &= mask
        x ^= t
        t <<= shift
        x ^= t
    return x


def shift_right_signed(x: RingArray, bits: int) -> RingArray:
    """Arithmetic (sign-preserving) right shift of ring elements read as signed integers."""
    return (x.view(np.int64) >> np.int64(bits)).view(np.uint64)
