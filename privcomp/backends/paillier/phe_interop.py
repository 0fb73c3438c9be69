"""Lossless conversion to and from python-paillier (``phe``) objects (layer: backends).

``phe`` is GPLv3, so it is an optional extra and this module is the ONLY place that imports it,
lazily, inside functions. Both libraries use ``g = n + 1`` and the same base-16 encoding, so a
ciphertext and its exponent mean the same thing in either; conversion copies integers.

Ciphertexts are read from phe with ``ciphertext(be_secure=False)`` (no extra exponentiation);
privcomp re-randomises before export anyway (:meth:`EncryptedArray.to_bytes`), and phe numbers
built here are obfuscated by phe itself the first time phe exports them (``be_secure=True``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gmpy2

from privcomp.backends.paillier import encoding
from privcomp.errors import BackendUnavailableError, ConfigurationError

if TYPE_CHECKING:
    from privcomp.backends.paillier.encrypted import EncryptedArray
    from privcomp.backends.paillier.keys import PublicKey
    from privcomp.backends.paillier.private_key import PrivateKey


def _phe() -> Any:
    try:
        import phe
    except ImportError as exc:
        raise BackendUnavailableError(
            "python-paillier is not installed: pip install privcomp[phe]"
        ) from exc
    return phe


def public_key_to_phe(public_key: PublicKey) -> Any:
    """Return ``phe.PaillierPublicKey(n)``."""
    return _phe().PaillierPublicKey(public_key.n)


def public_key_from_phe(public_key: Any) -> PublicKey:
    """Build a :class:`PublicKey` from a ``phe.PaillierPublicKey`` (2048-bit floor applies)."""
    from privcomp.backends.paillier.keys import PublicKey

    phe = _phe()
    if not isinstance(public_key, phe.PaillierPublicKey):
        raise TypeError("expected a phe.PaillierPublicKey")
    return PublicKey(int(public_key.n))


def private_key_to_phe(private_key: PrivateKey) -> Any:
    """Return the ``phe.PaillierPrivateKey`` with the same primes."""
    phe = _phe()
    p, q = private_key._primes()
    return phe.PaillierPrivateKey(public_key_to_phe(private_key.public_key), p, q)


def private_key_from_phe(public_key: Any, private_key: Any) -> PrivateKey:
    """Build a :class:`PrivateKey` from ``phe`` keys (2048-bit floor applies)."""
    from privcomp.backends.paillier.private_key import PrivateKey

    phe = _phe()
    if not isinstance(private_key, phe.PaillierPrivateKey):
        raise TypeError("expected a phe.PaillierPrivateKey")
    pk = public_key_from_phe(public_key)
    if int(private_key.public_key.n) != pk.n:
        raise ConfigurationError("phe private key does not match the public key")
    return PrivateKey(pk, int(private_key.p), int(private_key.q))


def encrypted_to_phe(encrypted: EncryptedArray) -> list[Any]:
    """Return a flat list of ``phe.EncryptedNumber`` sharing the array's exponent."""
    phe = _phe()
    ppk = public_key_to_phe(encrypted.public_key)
    return [
        phe.EncryptedNumber(ppk, int(c), encrypted.exponent) for c in encrypted.raw_ciphertexts()
    ]


def encrypted_from_phe(numbers: Iterable[Any], public_key: PublicKey) -> EncryptedArray:
    """Build a 1-D :class:`EncryptedArray` from ``phe.EncryptedNumber`` objects.

    Mixed exponents are aligned to the lowest one with ``decrease_exponent_to`` semantics
    (``c^(16^d)``); every ciphertext is validated against ``public_key``.
    """
    from privcomp.backends.paillier.encrypted import EncryptedArray

    phe = _phe()
    items = list(numbers)
    for x in items:
        if not isinstance(x, phe.EncryptedNumber):
            raise TypeError("expected phe.EncryptedNumber objects")
        if int(x.public_key.n) != public_key.n:
            raise ConfigurationError("a phe number was encrypted under a different key")
    cts = public_key.validate_ciphertexts([int(x.ciphertext(be_secure=False)) for x in items])
    exps = [int(x.exponent) for x in items]
    target = min(exps) if exps else 0
    n2, max_int = public_key._nsquare, public_key.max_int
    aligned = [
        c if e == target else gmpy2.powmod(c, encoding.alignment_factor(e - target, max_int), n2)
        for c, e in zip(cts, exps, strict=True)
    ]
    return EncryptedArray(public_key, aligned, (len(aligned),), target)
