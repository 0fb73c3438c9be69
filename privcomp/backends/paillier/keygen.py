"""Paillier key generation (layer: backends).

Primes come from ``gmpy2.next_prime`` applied to a random odd number of the right size drawn from
an injected :class:`~privcomp.core.rng.RandomSource` (default: the OS CSPRNG), with the two top
bits set so that ``|n| = |p| + |q|`` exactly; ``p != q``, ``|p - q|`` large (no Fermat
factoring), and ``gcd(n, phi(n)) = 1`` (required by ``g = n + 1``).
"""

from __future__ import annotations

import gmpy2

from privcomp.backends.paillier.keys import DEFAULT_KEY_BITS, MIN_KEY_BITS, PublicKey
from privcomp.backends.paillier.private_key import PrivateKey
from privcomp.core.rng import RandomSource, default_random
from privcomp.errors import ConfigurationError, InsecureParameterError


def _random_prime(bits: int, rng: RandomSource) -> gmpy2.mpz:
    """A prime of exactly ``bits`` bits with its two top bits set (so ``|p*q| = 2*bits``)."""
    nbytes = (bits + 7) // 8
    top = gmpy2.mpz(3) << (bits - 2)
    while True:
        candidate = gmpy2.mpz.from_bytes(rng.random_bytes(nbytes), "big")
        candidate = (candidate >> (8 * nbytes - bits)) | top | 1
        prime = gmpy2.next_prime(candidate)
        if prime.bit_length() == bits and gmpy2.is_prime(prime, 40):
            return prime


def keygen(
    bits: int = DEFAULT_KEY_BITS, rng: RandomSource | None = None
) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair with ``|n| = bits``.

    Parameters
    ----------
    bits:
        Modulus length, at least :data:`MIN_KEY_BITS` (default 3072, 128-bit security).
    rng:
        Randomness for the primes (default: the OS CSPRNG).

    Returns
    -------
    (PublicKey, PrivateKey)

    Raises
    ------
    InsecureParameterError
        If ``bits < 2048``.
    """
    if bits < MIN_KEY_BITS:
        raise InsecureParameterError(
            f"Paillier keys need at least {MIN_KEY_BITS} bits (got {bits})"
        )
    if bits % 2:
        raise ConfigurationError("Paillier key length must be even")
    rng = rng or default_random()
    half = bits // 2
    while True:
        p = _random_prime(half, rng)
        q = _random_prime(half, rng)
        n = p * q
        # Distinct, far apart (Fermat factoring) and gcd(n, phi(n)) = 1 (needed for g = n + 1).
        if p == q or abs(p - q).bit_length() < half - 100:
            continue
        if n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    public = PublicKey(int(n))
    return public, PrivateKey(public, int(p), int(q))


__all__ = ["keygen"]
