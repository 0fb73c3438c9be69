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


def check_trunc_pairs(out: Sequence[tuple[object, np.ndarray]], x: np.ndarray, f: int) -> None:
    """Truncation pairs ``(r, r_msb, r_low_shifted)`` are consistent, and truncating the
    encoding of ``x`` with them is within one unit of ``round(x * 2^f)``."""
    pairs = [p for p, _ in out]
    r = total([p.r for p in pairs])  # type: ignore[attr-defined]
    assert np.array_equal(total([p.r_msb for p in pairs]), r >> np.uint64(63))  # type: ignore[attr-defined]
    low = total([p.r_low_shifted for p in pairs])  # type: ignore[attr-defined]
    assert np.array_equal(low, (r & np.uint64(2**63 - 1)) >> np.uint64(f))
    y = total([z for _, z in out]).view(np.int64)
    assert np.all(np.abs(y - np.round(x * 2**f).astype(np.int64)) <= 1)
