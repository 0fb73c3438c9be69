"""CKKS engine on TenSEAL (layer: backends).

Presets at 128-bit security, public-context export, encrypted vector arithmetic, a fast
vector x plaintext matrix, versioned serialisation, and release decryption (noise-flooded,
rounded, capped per key). TenSEAL is imported lazily, on first use.
"""

from __future__ import annotations

from privcomp.backends.ckks.context import CKKSContext, context
from privcomp.backends.ckks.params import HE_STD_128_MAX_BITS, PRESETS, CKKSParams, check_security
from privcomp.backends.ckks.release import DEFAULT_FLOOD_BITS, DEFAULT_RELEASE_CAP
from privcomp.backends.ckks.vector import CKKSVector

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
]
