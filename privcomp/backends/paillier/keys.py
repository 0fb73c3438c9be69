"""The Paillier public key and the raw ciphertext layer (layer: backends).

Scheme [Pai99] with ``g = n + 1``, so ``g^m = 1 + m*n mod n^2`` (one multiplication):

* ``Enc(m; r) = (1 + m*n) * r^n mod n^2`` with ``r^n`` drawn as in :mod:`.noise` ([DJN10]);
* ``Dec(c)`` by CRT [Pai99, §7]: ``m_p = L_p(c^(p-1) mod p^2) * h_p mod p`` with
  ``L_p(x) = (x - 1) / p`` and ``h_p = L_p(g^(p-1) mod p^2)^-1 mod p``, the same for ``q``, then
  Garner's recombination — exactly python-paillier's ``raw_decrypt`` (see :mod:`.private_key`).

The raw layer (``raw_*`` methods, :func:`ciphertexts_to_bytes`) works on plaintexts in
``[0, n)`` and on ciphertexts as ``gmpy2.mpz``; it is the stable interface that protocols build
on. Raw operations do not re-validate their inputs: ciphertexts received from a peer must come
through :func:`ciphertexts_from_bytes` or :meth:`PublicKey.validate_ciphertexts` first. Results
of ``raw_add``/``raw_mul`` are not re-randomised; call ``raw_rerandomize`` before they leave
the party. Encoded arrays live in :mod:`.encrypted` and :mod:`.packing`.

References
----------
.. [Pai99] P. Paillier, "Public-key cryptosystems based on composite degree residuosity
   classes", EUROCRYPT 1999.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy.typing as npt

from privcomp.backends.paillier.batch import encrypt_plaintexts, residues
from privcomp.backends.paillier.noise import DjnNoise
from privcomp.core.rng import RandomSource, default_random
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    EncodingOverflowError,
    InsecureParameterError,
    InvalidCiphertextError,
)

if TYPE_CHECKING:
    import phe

    from privcomp.backends.paillier.encrypted import EncryptedArray
    from privcomp.backends.paillier.packing import PackedEncryptedArray
    from privcomp.backends.paillier.private_key import PrivateKey

#: Smallest modulus accepted (NIST SP 800-57: 112-bit security).
MIN_KEY_BITS = 2048
#: Default modulus size (128-bit security, python-paillier's default too).
DEFAULT_KEY_BITS = 3072

_PK_MAGIC = b"PCPK"
_PK_VERSION = 1


def _fingerprint(n: int) -> str:
    width = (n.bit_length() + 7) // 8
    return hashlib.sha256(n.to_bytes(width, "big")).hexdigest()[:16]


class PublicKey:
    """A Paillier public key ``n`` (``g = n + 1``), at least 2048 bits.

    Parameters
    ----------
    n:
        The modulus, a product of two distinct primes of equal length.

    Raises
    ------
    InsecureParameterError
        If ``n`` has fewer than :data:`MIN_KEY_BITS` bits.
    """

    def __init__(self, n: int) -> None:
        n = int(n)
        if n.bit_length() < MIN_KEY_BITS:
            raise InsecureParameterError(
                f"Paillier modulus has {n.bit_length()} bits; at least {MIN_KEY_BITS} required"
            )
        self._init(n)

    def _init(self, n: int) -> None:
        if n < 15 or n % 2 == 0:
            raise ConfigurationError("Paillier modulus must be an odd composite")
        self._n = gmpy2.mpz(n)
        self._nsquare = self._n * self._n
        self._width = (int(self._nsquare).bit_length() + 7) // 8
        self._noise: DjnNoise | None = None
        self.fingerprint = _fingerprint(n)

    @classmethod
    def _unsafe_from_n(cls, n: int) -> PublicKey:
        """Build a key of ANY size, bypassing the 2048-bit floor — for known-answer tests only."""
        key = cls.__new__(cls)
        key._init(int(n))
        return key

    # -- attributes -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """The modulus ``n``."""
        return int(self._n)

    @property
    def nsquare(self) -> int:
        """``n^2``, the ciphertext modulus."""
        return int(self._nsquare)

    @property
    def g(self) -> int:
        """The generator ``n + 1``."""
        return int(self._n) + 1

    @property
    def bits(self) -> int:
        """Bit length of ``n``."""
        return int(self._n.bit_length())

    @property
    def max_int(self) -> int:
        """Largest mantissa magnitude of the signed encoding (phe's ``n // 3 - 1``)."""
        return int(self._n) // 3 - 1

    @property
    def ciphertext_bytes(self) -> int:
        """Width of one serialised ciphertext (bytes of ``n^2``)."""
        return self._width

    def __repr__(self) -> str:
        return f"<PublicKey {self.bits}-bit fp={self.fingerprint}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._n == other._n

    def __hash__(self) -> int:
        return hash(("paillier-pk", int(self._n)))

    # -- raw layer --------------------------------------------------------------------------
    def _noise_source(self, rng: RandomSource) -> DjnNoise:
        if self._noise is None:
            self._noise = DjnNoise(self._n, rng)
        return self._noise

    def validate_ciphertexts(self, cs: Sequence[int]) -> list[gmpy2.mpz]:
        """Return ``cs`` as mpz after checking each lies in ``Z*_{n^2}``.

        Raises
        ------
        InvalidCiphertextError
            If a ciphertext is ``<= 0``, ``>= n^2`` or shares a factor with ``n``.
        """
        out: list[gmpy2.mpz] = []
        n, nsquare = self._n, self._nsquare
        for i, c in enumerate(cs):
            value = gmpy2.mpz(c)
            if not 0 < value < nsquare:
                raise InvalidCiphertextError(f"ciphertext at index {i} is outside [1, n^2)")
            if gmpy2.gcd(value, n) != 1:
                raise InvalidCiphertextError(f"ciphertext at index {i} is not a unit mod n^2")
            out.append(value)
        return out

    def _check_plaintexts(self, ints: Sequence[int]) -> list[gmpy2.mpz]:
        n = self._n
        out = [gmpy2.mpz(m) for m in ints]
        for i, m in enumerate(out):
            if not 0 <= m < n:
                raise EncodingOverflowError(f"raw plaintext at index {i} is outside [0, n)")
        return out

    def raw_noise(self, count: int, rng: RandomSource | None = None) -> list[gmpy2.mpz]:
        """Return ``count`` fresh random n-th residues ``r^n mod n^2`` (DJN short exponents)."""
        rng = rng or default_random()
        return residues(self._noise_source(rng), count, rng, self._width, workers=1)

    def raw_encrypt(
        self,
        ints: Sequence[int],
        *,
        rng: RandomSource | None = None,
        r: Sequence[int] | None = None,
        workers: int | None = None,
    ) -> list[gmpy2.mpz]:
        """Encrypt plaintexts in ``[0, n)``: ``(1 + m*n) * r^n mod n^2``.

        Parameters
        ----------
        ints:
            Plaintexts, each in ``[0, n)`` (no signed encoding at this layer).
        rng:
            Randomness (default: the OS CSPRNG).
        r:
            Explicit ``r`` values in ``Z*_n`` (one per plaintext) for known-answer tests; the
            default draws ``r^n`` as in :mod:`.noise`.
        workers:
            Processes to use (default: all cores above a batch-size threshold).

        Returns
        -------
        list of gmpy2.mpz
            Ciphertexts in ``Z*_{n^2}``.
        """
        pts = self._check_plaintexts(ints)
        rng = rng or default_random()
        if r is not None:
            if len(r) != len(pts):
                raise ConfigurationError("r must have one value per plaintext")
            n, n2 = self._n, self._nsquare
            if any(not 0 < ri < n or gmpy2.gcd(ri, n) != 1 for ri in r):
                raise ConfigurationError("explicit r values must lie in Z*_n")
            return [
                (1 + m * n) * gmpy2.powmod(gmpy2.mpz(ri), n, n2) % n2
                for m, ri in zip(pts, r, strict=True)
            ]
        return encrypt_plaintexts(self, pts, self._noise_source(rng), rng, workers)

    def raw_add(self, c1: int, c2: int) -> gmpy2.mpz:
        """Return ``c1 * c2 mod n^2``: an encryption of ``m1 + m2 mod n``."""
        return gmpy2.mpz(c1) * gmpy2.mpz(c2) % self._nsquare

    def raw_add_many(self, cs1: Sequence[int], cs2: Sequence[int]) -> list[gmpy2.mpz]:
        """Elementwise :meth:`raw_add` of two equally long lists."""
        if len(cs1) != len(cs2):
            raise ConfigurationError("raw_add_many needs lists of equal length")
        n2 = self._nsquare
        return [gmpy2.mpz(a) * b % n2 for a, b in zip(cs1, cs2, strict=True)]

    def raw_mul(self, c: int, k: int) -> gmpy2.mpz:
        """Return an encryption of ``k * m mod n`` from an encryption ``c`` of ``m``.

        ``k`` is any integer; it is reduced to the representative of ``k mod n`` of least
        magnitude, and a negative ``k`` is applied as ``(c^-1)^|k|`` (one inversion and a short
        exponent) instead of ``c^(n - |k|)`` (a full-length one). Both are valid encryptions of
        ``k * m mod n``; neither is re-randomised (call :meth:`raw_rerandomize` before export).
        """
        n = self._n
        k = gmpy2.mpz(k) % n
        if k > n // 2:
            k -= n
        return gmpy2.powmod(gmpy2.mpz(c), k, self._nsquare)

    def raw_mul_many(self, cs: Sequence[int], ks: Sequence[int]) -> list[gmpy2.mpz]:
        """Elementwise :meth:`raw_mul`: ``[raw_mul(c, k) for c, k in zip(cs, ks)]``."""
        if len(cs) != len(ks):
            raise ConfigurationError("raw_mul_many needs lists of equal length")
        n, n2 = self._n, self._nsquare
        half = n // 2
        out: list[gmpy2.mpz] = []
        for c, k in zip(cs, ks, strict=True):
            e = gmpy2.mpz(k) % n
            if e > half:
                e -= n
            out.append(gmpy2.powmod(gmpy2.mpz(c), e, n2))
        return out

    def raw_rerandomize(
        self, cs: Sequence[int], *, rng: RandomSource | None = None, workers: int | None = None
    ) -> list[gmpy2.mpz]:
        """Multiply each ciphertext by a fresh ``r^n``: same plaintexts, unlinkable ciphertexts."""
        rng = rng or default_random()
        base = [gmpy2.mpz(c) for c in cs]
        noise = residues(self._noise_source(rng), len(base), rng, self._width, workers)
        n2 = self._nsquare
        return [c * s % n2 for c, s in zip(base, noise, strict=True)]

    # -- encoded arrays ---------------------------------------------------------------------
    def encrypt(
        self,
        values: npt.ArrayLike,
        *,
        exponent: int | None = None,
        precision: float | None = None,
        rng: RandomSource | None = None,
        private_key: PrivateKey | None = None,
        workers: int | None = None,
    ) -> EncryptedArray:
        """Encrypt an int or float array with ONE fixed exponent.

        Parameters
        ----------
        values:
            Integers or floats (any shape). NaN and infinity are refused.
        exponent:
            Base-16 exponent of the encoding (default ``0`` for ints, ``-8`` for floats, i.e. an
            absolute precision of ``2^-32``). The exponent is public; fixing it per array means
            it reveals nothing about the magnitudes.
        precision:
            Alternative to ``exponent``: the largest absolute rounding error accepted.
        rng:
            Randomness (default: the OS CSPRNG).
        private_key:
            If given (the key holder encrypting its own data), the blinding factors are computed
            modulo ``p^2`` and ``q^2`` (CRT), which is faster.
        workers:
            Processes to use (default: all cores for batches of 2000 values or more).

        Returns
        -------
        EncryptedArray

        Raises
        ------
        EncodingError, EncodingOverflowError
            For NaN/infinity, or values beyond ``max_int * 16**exponent``.
        """
        from privcomp.backends.paillier.encrypted import encrypt_array

        return encrypt_array(
            self,
            values,
            exponent=exponent,
            precision=precision,
            rng=rng,
            private_key=private_key,
            workers=workers,
        )

    def encrypt_packed(
        self,
        values: npt.ArrayLike,
        *,
        slot_bits: int = 64,
        max_additions: int = 1 << 16,
        exponent: int | None = None,
        rng: RandomSource | None = None,
        private_key: PrivateKey | None = None,
        workers: int | None = None,
    ) -> PackedEncryptedArray:
        """Encrypt a 1-D array with many fixed-point slots per ciphertext (see :mod:`.packing`).

        Parameters
        ----------
        values:
            1-D integers or floats.
        slot_bits:
            Width of a slot (multiple of 8, at least 16); ``(|n| - 42) // slot_bits`` slots per
            ciphertext (31 for 2048-bit keys and 64-bit slots).
        max_additions:
            Most terms any slot may ever hold (sums of arrays and the ``.sum()`` total); it
            costs ``bit_length(max_additions)`` headroom bits, and exceeding it is refused.
        exponent:
            Base-16 exponent (default 0 for ints, -8 for floats); ``|mantissa|`` must stay
            below ``2^(slot_bits - bit_length(max_additions) - 1)``.
        rng, private_key, workers:
            As for :meth:`encrypt`.

        Returns
        -------
        PackedEncryptedArray

        Raises
        ------
        EncodingOverflowError
            If a value does not fit its slot (the bound is named).
        """
        from privcomp.backends.paillier.packing import encrypt_packed

        return encrypt_packed(
            self,
            values,
            slot_bits=slot_bits,
            max_additions=max_additions,
            exponent=exponent,
            rng=rng,
            private_key=private_key,
            workers=workers,
        )

    # -- serialisation and interop ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise: ``b"PCPK"``, version (1 byte), length of ``n`` (4 bytes), ``n`` big-endian."""
        body = int(self._n).to_bytes((self.bits + 7) // 8, "big")
        return _PK_MAGIC + struct.pack(">BI", _PK_VERSION, len(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Parse :meth:`to_bytes` output (the 2048-bit floor applies).

        Raises
        ------
        CodecError
            On a bad magic, version or length.
        InsecureParameterError
            If the modulus is too short.
        """
        data = bytes(data)
        if len(data) < 9 or data[:4] != _PK_MAGIC:
            raise CodecError("not a privcomp Paillier public key (bad magic)")
        version, length = struct.unpack(">BI", data[4:9])
        if version != _PK_VERSION:
            raise CodecError(f"unsupported Paillier public key version {version}")
        if len(data) != 9 + length:
            raise CodecError("Paillier public key has a wrong length")
        return cls(int.from_bytes(data[9:], "big"))

    def to_phe(self) -> phe.PaillierPublicKey:
        """Return the equivalent ``phe.PaillierPublicKey`` (needs the ``phe`` extra)."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.public_key_to_phe(self)

    @classmethod
    def from_phe(cls, public_key: Any) -> PublicKey:
        """Build from a ``phe.PaillierPublicKey`` (the 2048-bit floor applies)."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.public_key_from_phe(public_key)


__all__ = ["DEFAULT_KEY_BITS", "MIN_KEY_BITS", "PublicKey"]
