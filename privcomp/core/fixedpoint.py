"""Fixed-point encoding of reals into Z_2^64 (layer: core).

A real ``v`` is stored as the two's-complement integer ``round(v * 2**frac_bits)``. The default
of 16 fractional bits gives a resolution of 2^-16 ≈ 1.5e-5 and, because a product carries
2*16 fractional bits and the truncation protocol needs |x| < 2^62, products of magnitude up to
2^30 ≈ 1.07e9. Out-of-range, NaN and infinite values raise — nothing ever wraps silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privcomp.errors import ConfigurationError, EncodingError, EncodingOverflowError
from privcomp.types import FloatArray, RingArray

DEFAULT_FRAC_BITS = 16
#: Encodings stay below 2^62 in magnitude: the headroom the truncation protocol relies on.
ENCODED_LIMIT_BITS = 62


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Two's-complement fixed point in Z_2^64 with ``frac_bits`` fractional bits.

    Parameters
    ----------
    frac_bits:
        Number of fractional bits, 0 to 40.
    """

    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 40:
            raise ConfigurationError(f"frac_bits must be in [0, 40], got {self.frac_bits}")

    @property
    def scale(self) -> int:
        """The scale factor ``2**frac_bits``."""
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude :meth:`encode` accepts: ``2**(62 - frac_bits)``."""
        return float(2 ** (ENCODED_LIMIT_BITS - self.frac_bits))

    @property
    def resolution(self) -> float:
        """Smallest step between two encodable values."""
        return 1.0 / self.scale

    def encode(self, x: npt.ArrayLike, *, column: str | None = None) -> RingArray:
        """Encode reals as ring elements.

        Raises
        ------
        EncodingError
            For NaN, infinities or non-numeric input.
        EncodingOverflowError
            If a magnitude reaches :attr:`max_abs` (the error names the bound, not the value).
        """
        where = f" in column {column!r}" if column else ""
        arr = np.asarray(x)
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        ):
            raise EncodingError(f"cannot encode dtype {arr.dtype}{where}; expected numbers")
        if np.iscomplexobj(arr):
            raise EncodingError(f"cannot encode complex numbers{where}")
        if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize == 8:
            # int64/uint64 may exceed float64's 53-bit mantissa: check exactly, in integers.
            limit = 1 << (ENCODED_LIMIT_BITS - self.frac_bits)
            if arr.size and (int(arr.max()) >= limit or int(arr.min()) <= -limit):
                raise EncodingOverflowError(
                    f"value outside fixed-point range |x| < 2^{62 - self.frac_bits}{where}",
                    bound=float(limit),
                    column=column,
                )
            return (arr.astype(np.int64) << np.int64(self.frac_bits)).view(np.uint64)
        f = arr.astype(np.float64)
        # Two reductions find NaN (it propagates), infinities and overflow. Compare before scaling:
        # f * scale overflows to inf (with a RuntimeWarning) near 1e308.
        hi, lo = (float(f.max()), float(f.min())) if f.size else (0.0, 0.0)
        if not (np.isfinite(hi) and np.isfinite(lo)):
            raise EncodingError(f"NaN or infinite value{where} cannot be encoded")
        if max(hi, -lo) >= self.max_abs:
            raise EncodingOverflowError(
                f"value outside fixed-point range |x| < 2^{62 - self.frac_bits}{where}",
                bound=self.max_abs,
                column=column,
            )
        # Below the bound, scaling by a power of two is exact and rint cannot reach 2^62.
        return np.rint(f * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, r: RingArray) -> FloatArray:
        """Decode ring elements to float64 (exact for magnitudes below 2^53 ulps)."""
        return np.asarray(r, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale
