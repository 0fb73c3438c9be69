"""The prime field GF(p), p = 2^61 - 1, on ``uint64`` arrays (layer: core).

Why this prime: it is a Mersenne prime, so reduction needs only shifts and masks
(``2^61 ≡ 1 (mod p)``), and it is large enough to hold signed 60-bit values — every fixed-point
encoding of moderate magnitude and every sum of many of them. A prime below 2^32 would allow
plain ``uint64`` products but could not hold a 64-bit ring value at all.

numpy has no 128-bit integers, so :func:`field_mul` splits each operand into a 29-bit high and a
32-bit low limb: no partial product reaches 2^64, and ``2^64 ≡ 8 (mod p)`` folds the top one.
Every function takes and returns canonical elements in ``[0, p)`` as ``uint64`` arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError, EncodingError, EncodingOverflowError
from privcomp.types import RingArray, Shape

#: The field modulus, the Mersenne prime 2^61 - 1.
PRIME = (1 << 61) - 1
#: Signed values ``v`` with ``|v| <= SIGNED_LIMIT`` map into the field and back unambiguously.
SIGNED_LIMIT = (PRIME - 1) // 2  # 2^60 - 1

_P = np.uint64(PRIME)
_M32 = np.uint64(0xFFFFFFFF)
_M29 = np.uint64((1 << 29) - 1)
_S3 = np.uint64(3)
_S29 = np.uint64(29)
_S32 = np.uint64(32)
_S61 = np.uint64(61)

#: Elements of GF(p) stored as ``uint64`` in ``[0, p)``.
FieldArray = RingArray

#: Elements per block in the blockwise kernels: the temporaries stay in cache and are reused
#: instead of being freshly mapped (measured 2-2.5x faster than whole-array ops at 10^6).
_CHUNK = 8192


def _u64(x: object) -> FieldArray:
    # Keep results arrays even for 0-d input (numpy scalars warn on overflow).
    return np.asarray(x, dtype=np.uint64)


def _fold(x: FieldArray) -> FieldArray:
    """Reduce ``x < 2^63`` to ``[0, p)`` in place: one Mersenne fold, then a branch-free subtract.

    ``min(y, y - p)`` picks ``y - p`` exactly when it does not wrap below zero; it avoids
    ``np.where`` on a random mask, which costs ~10x more (branch mispredictions).
    """
    y = _u64((x & _P) + (x >> _S61))  # < 2^61 + 4
    return _u64(np.minimum(y, y - _P, out=y))


def check_field(x: npt.ArrayLike, what: str = "field array") -> FieldArray:
    """Return ``x`` as a ``uint64`` array after checking every element is below :data:`PRIME`.

    Raises
    ------
    EncodingError
        If ``x`` is not a ``uint64`` array.
    EncodingOverflowError
        If an element is ``>= p`` (the message names the bound, never the value).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.uint64:
        got = getattr(x, "dtype", type(x).__name__)
        raise EncodingError(f"{what} must be a uint64 array of field elements (got {got})")
    if x.size and int(x.max()) >= PRIME:
        raise EncodingOverflowError(
            f"{what} has an element outside the field [0, 2^61 - 1)", bound=float(PRIME)
        )
    return x


def _blockwise(
    op: Callable[[FieldArray, FieldArray], FieldArray], a: npt.ArrayLike, b: npt.ArrayLike
) -> FieldArray:
    """Apply an elementwise kernel with broadcasting, block by block for large arrays."""
    a, b = _u64(a), _u64(b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size <= _CHUNK:
        return _u64(op(a, b))
    # A single-element operand stays 0-d (it broadcasts inside op); others become flat views.
    fa = a.reshape(()) if a.size == 1 else np.ascontiguousarray(np.broadcast_to(a, shape)).ravel()
    fb = b.reshape(()) if b.size == 1 else np.ascontiguousarray(np.broadcast_to(b, shape)).ravel()
    out = np.empty(size, dtype=np.uint64)
    for i in range(0, size, _CHUNK):
        sl = slice(i, i + _CHUNK)
        out[sl] = op(fa if fa.ndim == 0 else fa[sl], fb if fb.ndim == 0 else fb[sl])
    return out.reshape(shape)


def field_add(a: FieldArray, b: FieldArray) -> FieldArray:
    """Return ``(a + b) mod p`` for canonical elements (the sum is < 2^62: no wrap)."""
    return _blockwise(_add_kernel, a, b)


def _add_kernel(a: FieldArray, b: FieldArray) -> FieldArray:
    t = _u64(a + b)
    return _u64(np.minimum(t, t - _P, out=t))


def field_sub(a: FieldArray, b: FieldArray) -> FieldArray:
    """Return ``(a - b) mod p`` for canonical elements (``a - b`` wraps iff ``a < b``)."""
    return _blockwise(_sub_kernel, a, b)


def _sub_kernel(a: FieldArray, b: FieldArray) -> FieldArray:
    d = _u64(a - b)
    return _u64(np.minimum(d, d + _P, out=d))


def field_neg(a: FieldArray) -> FieldArray:
    """Return ``-a mod p`` (``p - 0 = p`` folds back to 0)."""
    r = _u64(_P - a)
    return _u64(np.minimum(r, r - _P, out=r))


def field_mul(a: FieldArray, b: FieldArray) -> FieldArray:
    """Return ``(a * b) mod p`` elementwise (broadcasting) for canonical elements.

    With ``a = ah*2^32 + al`` (ah < 2^29): ``ah*bh*2^64 ≡ 8*ah*bh``, the middle term
    ``m*2^32 = (m >> 29)*2^61 + (m mod 2^29)*2^32 ≡ (m >> 29) + (m mod 2^29)*2^32``, and the low
    product is folded once; the total stays below 2^63 before the final fold.
    """
    return _blockwise(_mul_kernel, a, b)


def _mul_kernel(a: FieldArray, b: FieldArray) -> FieldArray:
    ah, al = a >> _S32, a & _M32
    bh, bl = b >> _S32, b & _M32
    total = _u64(ah * bh)  # < 2^58; in-place from here on to limit temporaries
    total <<= _S3  # < 2^61
    mid = _u64(ah * bl)
    mid += al * bh  # < 2^62
    total += mid >> _S29  # + < 2^33
    mid &= _M29
    mid <<= _S32
    total += mid  # + < 2^61
    ll = _u64(al * bl)  # < 2^64
    total += ll & _P  # + < 2^61
    ll >>= _S61
    total += ll  # + < 8: total < 2^63
    return _fold(total)


def field_inv(a: int) -> int:
    """Inverse of a non-zero Python int modulo p (Fermat: ``a^(p-2)``); for a few coefficients.

    Raises
    ------
    ConfigurationError
        If ``a ≡ 0 (mod p)``.
    """
    if a % PRIME == 0:
        raise ConfigurationError("zero has no inverse in the field")
    return pow(a, PRIME - 2, PRIME)


def field_random(shape: Shape, rng: RandomSource) -> FieldArray:
    """Uniform field elements: 61 random bits, rejecting the single value ``2^61 - 1 = p``.

    Rejection (probability 2^-61 per element) keeps the distribution exactly uniform.
    """
    out = _u64(rng.ring_elements(shape) >> _S3)
    bad = out == _P
    while bad.any():
        out[bad] = rng.ring_elements((int(bad.sum()),)) >> _S3
        bad = out == _P
    return out


def field_dot(coeffs: Sequence[int], arrays: Sequence[FieldArray]) -> FieldArray:
    """Return ``sum_i coeffs[i] * arrays[i] mod p`` (Python-int coefficients, reduced first)."""
    if not arrays or len(coeffs) != len(arrays):
        raise ConfigurationError("field_dot needs as many coefficients as arrays, at least one")
    acc = field_mul(np.asarray(coeffs[0] % PRIME, dtype=np.uint64), arrays[0])
    for c, arr in zip(coeffs[1:], arrays[1:], strict=True):
        acc = field_add(acc, field_mul(np.asarray(c % PRIME, dtype=np.uint64), arr))
    return acc


def mod_add(a: RingArray, b: RingArray, modulus: int) -> RingArray:
    """Return ``(a + b) mod modulus`` for any modulus up to 2^64 and elements below it.

    The ``uint64`` sum may wrap past 2^64 (only when ``modulus > 2^63``); a wrap is detected as
    ``s < a`` and then ``s - modulus`` (mod 2^64) is the true reduced sum.
    """
    if not 2 <= modulus <= 1 << 64:
        raise ConfigurationError("modulus must be in [2, 2^64]")
    m = np.uint64(modulus % (1 << 64))
    s = _u64(a + b)
    if modulus == 1 << 64:
        return s
    return _u64(np.where((s < a) | (s >= m), s - m, s))


def signed_to_field(x: npt.ArrayLike) -> FieldArray:
    """Map signed integers (``int64``, or ring elements read as two's complement) into GF(p).

    ``v >= 0`` maps to ``v`` and ``v < 0`` to ``p + v``. The documented range is
    ``|v| <= SIGNED_LIMIT = 2^60 - 1``: a sum computed in the field decodes correctly as long as
    the true sum also stays inside it (callers must budget that headroom).

    Raises
    ------
    EncodingError
        For non-integer input (encode reals with :class:`~privcomp.core.fixedpoint.FixedPoint`).
    EncodingOverflowError
        If a magnitude exceeds :data:`SIGNED_LIMIT` (the message names the bound only).
    """
    arr = np.asarray(x)
    if arr.dtype == np.uint64:
        arr = arr.view(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer) or arr.dtype.itemsize > 8:
        raise EncodingError(f"only integer arrays map into the field (got {arr.dtype})")
    arr = arr.astype(np.int64)
    if arr.size and (int(arr.max()) > SIGNED_LIMIT or int(arr.min()) < -SIGNED_LIMIT):
        raise EncodingOverflowError(
            "value outside the field's signed range |v| <= 2^60 - 1", bound=float(SIGNED_LIMIT)
        )
    u = arr.view(np.uint64)
    return _u64(np.where(arr < 0, u + _P, u))  # wraps mod 2^64 to p + v exactly


def field_to_signed(y: FieldArray) -> RingArray:
    """Inverse of :func:`signed_to_field`: ``y > (p-1)/2`` decodes to ``y - p``, as ring elements.

    Returns ``uint64`` ring elements (two's complement), ready for
    :meth:`~privcomp.core.fixedpoint.FixedPoint.decode` or :func:`~privcomp.core.ring.to_signed`.
    """
    y = check_field(y, "field array")
    neg = y > np.uint64(SIGNED_LIMIT)
    return _u64(np.where(neg, y - _P, y))  # y - p wraps to 2^64 - (p - y): two's complement
