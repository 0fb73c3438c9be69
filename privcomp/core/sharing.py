"""Additive n-of-n secret sharing over Z_2^64 and XOR sharing of bit-words (layer: core).

``share(x, n)`` draws n-1 uniform masks and sets the last share to x minus their sum, so any
n-1 shares are uniformly distributed and independent of x (information-theoretic hiding).
Only ring arrays are accepted: sharing floats is refused, because no uniform distribution over
the reals exists and "float shares" leak the secret (reference/security.md §2.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import numpy as np

from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError, EncodingError, NotEnoughSharesError
from privcomp.types import RingArray


def _check_ring(x: RingArray, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint64:
        got = getattr(x, "dtype", type(x).__name__)
        raise EncodingError(
            f"{what} must be a uint64 ring array (got {got}); encode reals with FixedPoint"
        )


def _check_same_shape(shares: Sequence[RingArray]) -> None:
    # Without this, numpy would broadcast mismatched shares into a silently wrong result.
    if any(s.shape != shares[0].shape for s in shares):
        raise ConfigurationError(
            f"shares have different shapes: {sorted({tuple(s.shape) for s in shares})}"
        )


def share(secret: RingArray, n_parties: int, rng: RandomSource) -> list[RingArray]:
    """Split ``secret`` into ``n_parties`` additive shares modulo 2^64."""
    _check_ring(secret, "secret")
    if n_parties < 2:
        raise ConfigurationError(f"n_parties must be >= 2, got {n_parties}")
    masks = [rng.ring_elements(secret.shape) for _ in range(n_parties - 1)]
    # np.asarray: arithmetic on 0-d arrays returns numpy scalars, which reconstruct() refuses.
    last = np.asarray(secret - reduce(np.add, masks[1:], masks[0].copy()), dtype=np.uint64)
    return [*masks, last]


def reconstruct(shares: Sequence[RingArray]) -> RingArray:
    """Add additive shares modulo 2^64."""
    if len(shares) < 2:
        raise NotEnoughSharesError(f"additive reconstruction needs every share; got {len(shares)}")
    for s in shares:
        _check_ring(s, "share")
    _check_same_shape(shares)
    return np.asarray(reduce(np.add, shares[1:], shares[0].copy()), dtype=np.uint64)


def share_xor(secret: RingArray, n_parties: int, rng: RandomSource) -> list[RingArray]:
    """Split bit-words into ``n_parties`` XOR shares (boolean sharing, 64 bits per word)."""
    _check_ring(secret, "secret")
    if n_parties < 2:
        raise ConfigurationError(f"n_parties must be >= 2, got {n_parties}")
    masks = [rng.ring_elements(secret.shape) for _ in range(n_parties - 1)]
    return [*masks, np.asarray(reduce(np.bitwise_xor, masks, secret.copy()), dtype=np.uint64)]


def reconstruct_xor(shares: Sequence[RingArray]) -> RingArray:
    """XOR boolean shares together."""
    if len(shares) < 2:
        raise NotEnoughSharesError(f"XOR reconstruction needs every share; got {len(shares)}")
    for s in shares:
        _check_ring(s, "share")
    _check_same_shape(shares)
    return np.asarray(reduce(np.bitwise_xor, shares[1:], shares[0].copy()), dtype=np.uint64)
