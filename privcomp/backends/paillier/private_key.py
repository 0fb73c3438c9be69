"""The Paillier private key: CRT decryption and key-holder encryption (layer: backends).

Decryption follows [Pai99, §7] and python-paillier: ``m_p = L_p(c^(p-1) mod p^2) * h_p mod p``,
the same modulo ``q``, then Garner's recombination. Every ciphertext is validated (``Z*_{n^2}``)
before the first exponentiation.

References
----------
.. [Pai99] P. Paillier, "Public-key cryptosystems based on composite degree residuosity
   classes", EUROCRYPT 1999.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy.typing as npt

from privcomp.backends.paillier import parallel
from privcomp.backends.paillier.batch import PARALLEL_DECRYPT_THRESHOLD, encrypt_plaintexts
from privcomp.backends.paillier.fastdecrypt import decrypt_small
from privcomp.backends.paillier.keys import PublicKey
from privcomp.backends.paillier.noise import CrtDjnNoise
from privcomp.core.rng import RandomSource, default_random
from privcomp.errors import ConfigurationError

if TYPE_CHECKING:
    import phe

    from privcomp.backends.paillier.encrypted import EncryptedArray
    from privcomp.backends.paillier.packing import PackedEncryptedArray


class PrivateKey:
    """A Paillier private key (the primes ``p < q``), with CRT decryption.

    Parameters
    ----------
    public_key:
        The matching public key.
    p, q:
        The two distinct primes with ``p * q == n``.
    """

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = gmpy2.mpz(p), gmpy2.mpz(q)
        if p == q or p * q != public_key._n:
            raise ConfigurationError("p and q do not match the public key")
        if not (gmpy2.is_prime(p, 25) and gmpy2.is_prime(q, 25)):
            raise ConfigurationError("p and q must be primes")
        if q < p:
            p, q = q, p
        self._pk = public_key
        self._p, self._q = p, q
        self._psquare, self._qsquare = p * p, q * q
        self._p_inverse = gmpy2.invert(p, q)
        g = public_key._n + 1
        self._hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self._psquare) - 1) // p, p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self._qsquare) - 1) // q, q)
        self._noise: CrtDjnNoise | None = None

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._pk

    def __repr__(self) -> str:
        return f"<PrivateKey for {self._pk!r}>"

    def _primes(self) -> tuple[int, int]:
        """Return ``(p, q)`` — key material; for interop only."""
        return int(self._p), int(self._q)

    def _crt_parts(
        self,
    ) -> tuple[gmpy2.mpz, gmpy2.mpz, gmpy2.mpz, gmpy2.mpz, gmpy2.mpz]:
        """Return ``(p, q, h_p, h_q, p^-1 mod q)`` — key material, for the batch decryptor."""
        return self._p, self._q, self._hp, self._hq, self._p_inverse

    def _noise_source(self, rng: RandomSource) -> CrtDjnNoise:
        if self._noise is None:
            self._noise = CrtDjnNoise(self._p, self._q, rng)
        return self._noise

    def raw_encrypt(
        self, ints: Sequence[int], *, rng: RandomSource | None = None, workers: int | None = None
    ) -> list[gmpy2.mpz]:
        """Like :meth:`PublicKey.raw_encrypt`, with the blinding factors computed by CRT."""
        pts = self._pk._check_plaintexts(ints)
        rng = rng or default_random()
        return encrypt_plaintexts(self._pk, pts, self._noise_source(rng), rng, workers)

    def raw_decrypt(
        self, cs: Sequence[int], *, workers: int | None = None, small: bool = False
    ) -> list[int]:
        """Decrypt ciphertexts to plaintexts in ``[0, n)`` (CRT, [Pai99] §7).

        Parameters
        ----------
        cs:
            Ciphertexts under this key.
        workers:
            Processes to use (default: all cores for 200 ciphertexts or more).
        small:
            Expect plaintexts that are small signed integers (``m`` or ``n - |m|`` with
            ``|m| < 2^63``): decrypt them several times faster by ciphertext packing
            (:mod:`.fastdecrypt`); any other plaintext falls back to plain decryption.

        Raises
        ------
        InvalidCiphertextError
            Before any decryption, if a ciphertext lies outside ``Z*_{n^2}``.
        """
        values = self._pk.validate_ciphertexts(cs)
        if not small:
            return self._decrypt_each(values, workers)
        fast = decrypt_small(self, values, rng=default_random(), workers=workers)
        missing = [i for i, m in enumerate(fast) if m is None]
        n = self._pk.n
        out = [0 if m is None else m % n for m in fast]
        if missing:
            slow = self._decrypt_each([values[i] for i in missing], workers)
            for i, m in zip(missing, slow, strict=True):
                out[i] = m
        return out

    def _decrypt_each(self, values: list[gmpy2.mpz], workers: int | None) -> list[int]:
        p, q, p2, q2 = self._p, self._q, self._psquare, self._qsquare
        hp, hq, pinv = self._hp, self._hq, self._p_inverse
        pm1, qm1 = p - 1, q - 1

        def compute(start: int, stop: int) -> list[gmpy2.mpz]:
            out: list[gmpy2.mpz] = []
            for c in values[start:stop]:
                mp = (gmpy2.powmod(c, pm1, p2) - 1) // p * hp % p
                mq = (gmpy2.powmod(c, qm1, q2) - 1) // q * hq % q
                out.append(mp + (mq - mp) * pinv % q * p)
            return out

        count = len(values)
        w = parallel.resolve_workers(workers, count, PARALLEL_DECRYPT_THRESHOLD)
        width = (self._pk.bits + 7) // 8
        return [int(m) for m in parallel.map_chunks(compute, count, width, w)]

    def encrypt(self, values: npt.ArrayLike, **kwargs: Any) -> EncryptedArray:
        """Encrypt as the key holder (CRT-accelerated); see :meth:`PublicKey.encrypt`."""
        return self._pk.encrypt(values, private_key=self, **kwargs)

    def decrypt(
        self, encrypted: EncryptedArray, *, workers: int | None = None, fast: bool = True
    ) -> Any:
        """Decrypt an :class:`EncryptedArray` into a numpy array of its shape.

        Returns float64 when the exponent is negative, else int64 (object ints if they do not
        fit). Raises :class:`~privcomp.errors.EncodingOverflowError` on a detected overflow.
        With ``fast`` (default), mantissas below ``2^63`` in magnitude are decrypted in packed
        groups (:mod:`.fastdecrypt`), the others one by one; ``fast=False`` decrypts each value
        separately, as python-paillier does.
        """
        from privcomp.backends.paillier.encrypted import decrypt_array

        return decrypt_array(self, encrypted, workers=workers, fast=fast)

    def decrypt_packed(self, packed: PackedEncryptedArray, *, workers: int | None = None) -> Any:
        """Decrypt a :class:`PackedEncryptedArray` (slotwise values, or a folded total)."""
        from privcomp.backends.paillier.packing import decrypt_packed

        return decrypt_packed(self, packed, workers=workers)

    def to_phe(self) -> phe.PaillierPrivateKey:
        """Return the equivalent ``phe.PaillierPrivateKey``."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.private_key_to_phe(self)

    @classmethod
    def from_phe(cls, public_key: Any, private_key: Any) -> PrivateKey:
        """Build from ``phe`` keys (the 2048-bit floor applies)."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.private_key_from_phe(public_key, private_key)


__all__ = ["PrivateKey"]
