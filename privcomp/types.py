"""Type aliases shared by every layer (layer: types; imports numpy only)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

#: Elements of the ring Z_2^64, stored as ``uint64`` (array arithmetic wraps modulo 2^64).
RingArray: TypeAlias = npt.NDArray[np.uint64]
#: Plain floating-point data.
FloatArray: TypeAlias = npt.NDArray[np.float64]
#: Signed 64-bit integers (decoded ring elements).
IntArray: TypeAlias = npt.NDArray[np.int64]
#: Anything numpy can turn into an array.
ArrayLike: TypeAlias = npt.ArrayLike
#: Index of a party inside a job, ``0 .. n_parties - 1``.
PartyId: TypeAlias = int
Shape: TypeAlias = tuple[int, ...]
