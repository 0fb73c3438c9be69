"""python-paillier-compatible fixed-point encoding of whole arrays (layer: backends).

A real value ``v`` is represented as ``mantissa * BASE**exponent`` with ``BASE = 16`` — exactly
the encoding of ``phe.EncodedNumber``, so ciphertexts convert to and from ``phe`` without loss.
A negative mantissa is stored as ``n - |mantissa|``; mantissas must satisfy
``|mantissa| <= max_int = n // 3 - 1``, and the band between ``max_int`` and ``n - max_int`` is
reserved for detecting overflow at decryption (phe's convention).

Unlike phe, which picks an exponent per value (and so leaks each value's magnitude), an array is
always encoded with ONE exponent: ``0`` for integers and :data:`DEFAULT_FLOAT_EXPONENT` for floats
unless the caller chooses another.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from privcomp.errors import ConfigurationError, EncodingError, EncodingOverflowError

#: Base of the exponent, as in ``phe.EncodedNumber.BASE``.
BASE = 16
#: Bits per unit of exponent (``log2(BASE)``).
LOG2_BASE = 4
#: Default exponent of float arrays: ``16**-8 = 2**-32`` absolute precision.
DEFAULT_FLOAT_EXPONENT = -8
#: Mantissa bits that an exponent alignment must keep exact (see :func:`alignment_factor`).
ALIGN_MANTISSA_BITS = 64
# float64 mantissas below 2**62 convert exactly to int64, which keeps the fast path exact.
_FAST_LIMIT = float(2**62)


def max_int_for(n: int) -> int:
    """Return the largest mantissa magnitude accepted for modulus ``n`` (phe's ``max_int``)."""
    return n // 3 - 1


def alignment_factor(decrease: int, max_int: int) -> int:
    """Return ``16^decrease``, the plaintext factor that lowers an exponent by ``decrease``.

    The mantissas are encrypted, so the factor must leave room for any realistic one: it is
    refused unless every mantissa below ``2^ALIGN_MANTISSA_BITS`` (all float encodings, whose
    mantissas have at most 57 bits, and int64 values) still fits ``max_int`` after scaling.
    Beyond that, the product could wrap modulo ``n`` into a silently wrong value.

    Raises
    ------
    ConfigurationError
        If ``16^decrease * 2^ALIGN_MANTISSA_BITS`` exceeds ``max_int``.
    """
    factor: int = BASE**decrease
    if factor > max_int >> ALIGN_MANTISSA_BITS:
        raise ConfigurationError("exponent decrease too large for the modulus")
    return factor


def exponent_for_precision(precision: float) -> int:
    """Return the exponent whose unit ``16**exponent`` is at most ``precision`` (as phe does)."""
    if not (math.isfinite(precision) and precision > 0):
        raise EncodingError("precision must be a positive finite number")
    return math.floor(math.log(precision, BASE))


def as_value_array(values: npt.ArrayLike) -> npt.NDArray[Any]:
    """Return ``values`` as an int64, float64 or object (Python int) array; refuse other kinds."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            return np.array([int(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype == object:
        flat = arr.ravel().tolist()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            return arr
        if all(isinstance(v, int | float) for v in flat):
            return arr.astype(np.float64)
    raise EncodingError(f"cannot encode an array of dtype {arr.dtype}: use integers or floats")


def default_exponent(arr: npt.NDArray[Any]) -> int:
    """Return the fixed exponent used for ``arr`` when the caller does not choose one."""
    return DEFAULT_FLOAT_EXPONENT if arr.dtype.kind == "f" else 0


def _mantissas_slow(flat: npt.NDArray[Any], exponent: int) -> list[int]:
    """Exact mantissas with rational arithmetic (phe's rounding: half to even)."""
    scale = Fraction(BASE) ** -exponent
    out: list[int] = []
    for v in flat.tolist():
        if isinstance(v, float) and not math.isfinite(v):
            raise EncodingError("cannot encode NaN or infinity")
        out.append(round(Fraction(v) * scale))
    return out


def mantissas(arr: npt.NDArray[Any], exponent: int) -> list[int]:
    """Return the signed integer mantissas of ``arr`` at ``exponent`` (flattened, C order).

    Raises
    ------
    EncodingError
        On NaN or infinity.
    """
    flat = arr.ravel()
    if flat.dtype == np.float64:
        if not np.all(np.isfinite(flat)):
            raise EncodingError("cannot encode NaN or infinity")
        # ldexp by a multiple of 4 is exact, and rint rounds half to even like phe's round().
        # A huge value scales to inf (no warning: the exact slow path below handles it).
        with np.errstate(over="ignore"):
            scaled = np.rint(np.ldexp(flat, -LOG2_BASE * exponent))
        if scaled.size == 0 or float(np.max(np.abs(scaled))) < _FAST_LIMIT:
            return [int(v) for v in scaled.astype(np.int64).tolist()]
        return _mantissas_slow(flat, exponent)
    if flat.dtype == np.int64 and exponent <= 0:
        if exponent == 0:
            return [int(v) for v in flat.tolist()]
        factor = BASE**-exponent
        return [int(v) * factor for v in flat.tolist()]
    return _mantissas_slow(flat, exponent)


def encode(arr: npt.NDArray[Any], exponent: int, n: int, *, name: str = "values") -> list[int]:
    """Encode ``arr`` at ``exponent`` into plaintexts in ``[0, n)`` (negatives as ``n - |m|``).

    Raises
    ------
    EncodingError
        On NaN or infinity.
    EncodingOverflowError
        When a mantissa exceeds ``max_int`` (the bound is named, never the value).
    """
    max_int = max_int_for(n)
    out = mantissas(arr, exponent)
    if out:
        biggest = max(max(out), -min(out))
        if biggest > max_int:
            raise EncodingOverflowError(
                f"{name}: a value exceeds the Paillier encoding bound "
                f"(|mantissa| <= n//3 - 1, about 2^{max_int.bit_length()} * 16^{exponent})",
                bound=approx_bound(max_int, exponent),
                column=name,
            )
    return [m % n for m in out]


def approx_bound(limit: int, exponent: int) -> float:
    """Return about ``limit * 16**exponent`` (a power of two; inf beyond the float range)."""
    log2 = limit.bit_length() + LOG2_BASE * exponent
    return math.inf if log2 > 1023 else math.ldexp(1.0, log2)


def decode_mantissas(plaintexts: list[int], n: int) -> list[int]:
    """Map plaintexts in ``[0, n)`` back to signed mantissas, detecting overflow (phe's rule).

    Raises
    ------
    EncodingOverflowError
        When a plaintext lies in the overflow band ``(max_int, n - max_int)``.
    """
    max_int = max_int_for(n)
    low_negative = n - max_int
    out: list[int] = []
    for m in plaintexts:
        if m <= max_int:
            out.append(int(m))
        elif m >= low_negative:
            out.append(int(m) - n)
        else:
            raise EncodingOverflowError(
                "overflow detected in a decrypted value (|mantissa| > n//3 - 1)",
                bound=None,
            )
    return out


def decode(mants: list[int], exponent: int, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """Turn signed mantissas into an array: float64 if ``exponent < 0``, else int64 or object.

    Raises
    ------
    EncodingOverflowError
        When a value is too large for a float64.
    """
    if exponent < 0:
        if not mants or max(max(mants), -min(mants)) < 2**63:
            # One rounding (int64 -> float64), then an exact scaling by a power of two.
            as_float = np.asarray(mants, dtype=np.int64).astype(np.float64)
            return np.ldexp(as_float, LOG2_BASE * exponent).reshape(shape)
        denom = BASE**-exponent
        try:
            floats = [m / denom for m in mants]  # exact rational rounding, as phe does
        except OverflowError as exc:
            raise EncodingOverflowError("a decrypted value is too large for a float64") from exc
        return np.asarray(floats, dtype=np.float64).reshape(shape)
    factor = BASE**exponent
    ints = [m * factor for m in mants]
    if not ints or (max(ints) <= np.iinfo(np.int64).max and min(ints) >= np.iinfo(np.int64).min):
        return np.asarray(ints, dtype=np.int64).reshape(shape)
    out = np.empty(len(ints), dtype=object)
    out[:] = ints
    return out.reshape(shape)
