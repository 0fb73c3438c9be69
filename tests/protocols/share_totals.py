"""Reconstruction helpers shared by the correlated-randomness tests (a uniquely named module)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def total(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of additive shares mod 2^64."""
    # At least 1-d: arithmetic on 0-d uint64 arrays gives numpy scalars, whose wraparound warns.
    out = np.zeros_like(np.atleast_1d(parts[0]))
    for p in parts:
        out = out + p
    return out


def xor_total(parts: Sequence[np.ndarray]) -> np.ndarray:
    """XOR of boolean shares."""
    out = np.zeros_like(np.atleast_1d(parts[0]))
    for p in parts:
        out = out ^ p
    return out
