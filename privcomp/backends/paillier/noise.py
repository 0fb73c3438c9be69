"""Fast random n-th residues ``r^n mod n^2`` for Paillier encryption (layer: backends).

Encryption cost is dominated by the blinding factor ``r^n mod n^2`` (a full ``|n|``-bit
exponent). We use the short-exponent variant of Damgård, Jurik and Nielsen [DJN10]:

1. once per key: draw ``y`` uniform in ``Z*_n``, set ``h = -y^2 mod n`` and ``h_s = h^n mod n^2``;
2. per ciphertext: draw ``alpha`` uniform in ``[0, 2^L)`` and use ``h_s^alpha mod n^2``.

``h_s^alpha`` is computed with a fixed-base windowed table (8-bit windows): ``L/8`` modular
multiplications per ciphertext instead of a ~``|n|``-bit exponentiation (about 60x fewer for a
2048-bit key). The key holder can do the same modulo ``p^2`` and ``q^2`` and recombine by CRT.

Choice of ``L`` — the best known attacks on a short exponent (Pollard's lambda / baby-step
giant-step, van Oorschot-Wiener [vOW96]) cost about ``2^(L/2)``; so ``L = 2*kappa`` for the
key's security level ``kappa`` (NIST SP 800-57: 112 bits for 2048-bit moduli, 128 for 3072),
with a floor of 256 bits. The security of the resulting ciphertexts rests on DCR plus the
short-exponent indistinguishability assumption of [DJN10] (see also Koshiba-Kurosawa [KK04]).

``y`` is drawn by whoever encrypts, from its own random source, on first use of the key (in
[DJN10] ``h`` is even published with the key: only ``alpha`` must stay secret). All ``alpha``
are drawn in the calling process before any worker is forked, so a seeded test source stays
reproducible and no two workers ever share randomness.

References
----------
.. [DJN10] I. Damgård, M. Jurik, J. B. Nielsen, "A generalization of Paillier's public-key
   system with applications to electronic voting", Int. J. Inf. Secur. 9(6), 2010.
.. [vOW96] P. C. van Oorschot, M. J. Wiener, "On Diffie-Hellman key agreement with short
   exponents", EUROCRYPT 1996.
.. [KK04] T. Koshiba, K. Kurosawa, "Short exponent Diffie-Hellman problems", PKC 2004.
"""

from __future__ import annotations

import gmpy2

from privcomp.core.rng import RandomSource

#: Bits per window of the fixed-base table.
WINDOW_BITS = 8
# Below this many exponentiations, a plain powmod is cheaper than building the table.
_TABLE_MIN_COUNT = 24


def security_level(n_bits: int) -> int:
    """Return the symmetric security level (bits) of a ``n_bits`` modulus (NIST SP 800-57)."""
    if n_bits >= 15360:
        return 256
    if n_bits >= 7680:
        return 192
    if n_bits >= 3072:
        return 128
    return 112


def short_exponent_bits(n_bits: int) -> int:
    """Return the DJN exponent length ``L = max(256, 2 * kappa)`` (a multiple of 8)."""
    return max(256, 2 * security_level(n_bits))


def random_unit(n: gmpy2.mpz, rng: RandomSource) -> gmpy2.mpz:
    """Return ``y`` uniform in ``Z*_n`` (rejection sampling on ``rng.below``)."""
    while True:
        y = gmpy2.mpz(rng.below(int(n), 1)[0])
        if y > 0 and gmpy2.gcd(y, n) == 1:
            return y


class FixedBaseTable:
    """``base^alpha mod modulus`` for many short ``alpha`` with a windowed precomputed table.

    Parameters
    ----------
    base, modulus:
        The fixed base and the modulus.
    exponent_bits:
        Length ``L`` of the exponents (a multiple of :data:`WINDOW_BITS`).
    """

    def __init__(self, base: gmpy2.mpz, modulus: gmpy2.mpz, exponent_bits: int) -> None:
        self._base = gmpy2.mpz(base) % modulus
        self._mod = gmpy2.mpz(modulus)
        self._windows = exponent_bits // WINDOW_BITS
        self._table: list[gmpy2.mpz] | None = None

    @property
    def exponent_bytes(self) -> int:
        """Bytes of randomness per exponent."""
        return self._windows

    def _build(self) -> list[gmpy2.mpz]:
        # table[i * 256 + d] = base^(d * 256^i); 255 multiplications per window.
        mod = self._mod
        size = 1 << WINDOW_BITS
        table: list[gmpy2.mpz] = []
        step = self._base
        for _ in range(self._windows):
            acc = gmpy2.mpz(1)
            for _ in range(size):
                table.append(acc)
                acc = acc * step % mod
            step = acc  # base^(256^(i+1))
        return table

    def prepare(self, count: int) -> None:
        """Build the table if ``count`` exponentiations make it worthwhile."""
        if self._table is None and count >= _TABLE_MIN_COUNT:
            self._table = self._build()

    def power(self, alpha: bytes) -> gmpy2.mpz:
        """Return ``base^alpha mod modulus``, ``alpha`` given as little-endian bytes."""
        table = self._table
        if table is None:
            return gmpy2.powmod(self._base, gmpy2.mpz.from_bytes(alpha, "little"), self._mod)
        mod = self._mod
        acc = table[alpha[0]]
        offset = 0
        for digit in alpha[1:]:
            offset += 256
            acc = acc * table[offset + digit] % mod
        return acc


class DjnNoise:
    """Random n-th residues modulo ``n^2`` from the public key alone ([DJN10])."""

    def __init__(self, n: gmpy2.mpz, rng: RandomSource) -> None:
        n = gmpy2.mpz(n)
        nsquare = n * n
        y = random_unit(n, rng)
        h = (-(y * y)) % n
        h_s = gmpy2.powmod(h, n, nsquare)
        self._table = FixedBaseTable(h_s, nsquare, short_exponent_bits(n.bit_length()))

    @property
    def exponent_bytes(self) -> int:
        """Bytes of randomness consumed per residue."""
        return self._table.exponent_bytes

    def prepare(self, count: int) -> None:
        """Precompute what ``count`` residues need."""
        self._table.prepare(count)

    def residue(self, alpha: bytes) -> gmpy2.mpz:
        """Return ``h_s^alpha mod n^2``."""
        return self._table.power(alpha)


class CrtDjnNoise:
    """The same residues computed modulo ``p^2`` and ``q^2`` by the key holder, then CRT.

    Multiplications modulo ``p^2`` and ``q^2`` (half the size of ``n^2``) cost about a third of
    one modulo ``n^2``, so two of them plus a recombination are cheaper than one full one.
    """

    def __init__(self, p: gmpy2.mpz, q: gmpy2.mpz, rng: RandomSource) -> None:
        p, q = gmpy2.mpz(p), gmpy2.mpz(q)
        n = p * q
        self._psquare = p * p
        self._qsquare = q * q
        self._p2_inv = gmpy2.invert(self._psquare, self._qsquare)
        y = random_unit(n, rng)
        h = (-(y * y)) % n
        bits = short_exponent_bits(n.bit_length())
        # h^n mod p^2 with the exponent reduced modulo the group order p(p-1).
        h_p = gmpy2.powmod(h, n % (p * (p - 1)), self._psquare)
        h_q = gmpy2.powmod(h, n % (q * (q - 1)), self._qsquare)
        self._tp = FixedBaseTable(h_p, self._psquare, bits)
        self._tq = FixedBaseTable(h_q, self._qsquare, bits)

    @property
    def exponent_bytes(self) -> int:
        """Bytes of randomness consumed per residue."""
        return self._tp.exponent_bytes

    def prepare(self, count: int) -> None:
        """Precompute what ``count`` residues need."""
        self._tp.prepare(count)
        self._tq.prepare(count)

    def residue(self, alpha: bytes) -> gmpy2.mpz:
        """Return ``h_s^alpha mod n^2`` via its residues modulo ``p^2`` and ``q^2`` (Garner)."""
        xp = self._tp.power(alpha)
        xq = self._tq.power(alpha)
        return xp + self._psquare * ((xq - xp) * self._p2_inv % self._qsquare)
