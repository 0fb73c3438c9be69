"""Public facade of privcomp's Paillier engine (re-exports :mod:`privcomp.backends.paillier`).

Examples
--------
>>> from privcomp import paillier
>>> pk, sk = paillier.keygen(2048)                         # doctest: +SKIP
>>> enc = pk.encrypt([1.5, -2.25, 3.0])                     # doctest: +SKIP
>>> sk.decrypt(enc + enc).tolist()                          # doctest: +SKIP
[3.0, -4.5, 6.0]
"""

from __future__ import annotations

from privcomp.backends.paillier import (
    BASE,
    DEFAULT_FLOAT_EXPONENT,
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    EncryptedArray,
    PackedEncryptedArray,
    PrivateKey,
    PublicKey,
    SlotLayout,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    keygen,
)

__all__ = [
    "BASE",
    "DEFAULT_FLOAT_EXPONENT",
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "EncryptedArray",
    "PackedEncryptedArray",
    "PrivateKey",
    "PublicKey",
    "SlotLayout",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "keygen",
]
