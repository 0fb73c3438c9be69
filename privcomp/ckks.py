"""CKKS homomorphic encryption for privcomp (public facade over ``privcomp.backends.ckks``).

Needs the ``ckks`` extra (``pip install privcomp[ckks]``); TenSEAL is imported on first use.

Examples
--------
>>> from privcomp import ckks
>>> ctx = ckks.context(preset="n8192")            # key holder: fresh key pair
>>> pub = ctx.public()                           # no secret key; send ``pub.to_bytes()``
>>> v = pub.encrypt([1.0, 2.0, 3.0])
>>> w = (v * [2.0, 2.0, 2.0] + v).dot([1.0, 1.0, 1.0])
>>> ctx.decrypt_release(w, decimals=2)  # doctest: +SKIP
array([18.01])                                   # flooded, rounded, within ctx.release_bound(2)
"""

from __future__ import annotations

from privcomp.backends.ckks import (
    DEFAULT_FLOOD_BITS,
    DEFAULT_RELEASE_CAP,
    HE_STD_128_MAX_BITS,
    PRESETS,
    CKKSContext,
    CKKSParams,
    CKKSVector,
    check_security,
    context,
)
from privcomp.core.rng import RandomSource

__all__ = [
    "CKKSContext",
    "CKKSParams",
    "CKKSVector",
    "DEFAULT_FLOOD_BITS",
    "DEFAULT_RELEASE_CAP",
    "HE_STD_128_MAX_BITS",
    "PRESETS",
    "check_security",
    "context",
    "context_from_bytes",
    "vector_from_bytes",
]


def context_from_bytes(
    data: bytes | bytearray | memoryview,
    *,
    rng: RandomSource | None = None,
    flood_bits: int = DEFAULT_FLOOD_BITS,
) -> CKKSContext:
    """Load a context written by :meth:`CKKSContext.to_bytes` (re-checks the security bound)."""
    return CKKSContext.from_bytes(data, rng=rng, flood_bits=flood_bits)


def vector_from_bytes(data: bytes | bytearray | memoryview, context: CKKSContext) -> CKKSVector:
    """Load a vector written by :meth:`CKKSVector.to_bytes` under ``context``."""
    return CKKSVector.from_bytes(data, context)
