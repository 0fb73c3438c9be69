"""AES-128-CTR pseudo-random generator for seed-compressed correlated randomness (layer: backends).

A 16-byte seed drawn from a cryptographic :class:`~privcomp.core.rng.RandomSource` is expanded
into as many ring elements as needed with the AES-128 keystream in counter mode (OpenSSL via the
``cryptography`` package, AES-NI where available: ~10 GB/s on one core). Parties and the dealer
that hold the same seed derive the same stream, so a share of any size travels as 16 bytes.

Security: the output is computationally indistinguishable from uniform as long as AES-128 is a
pseudo-random permutation and the stream stays far below 2^64 blocks per seed (one seed is used
for one preprocessing call only). Never reuse a seed.

References
----------
* NIST SP 800-38A (CTR mode); the seed-expansion technique of SPDZ-style dealers/PRSS, e.g.
  R. Cramer, I. Damgård, Y. Ishai, "Share Conversion, Pseudorandom Secret-Sharing and
  Applications to Secure Computation", TCC 2005.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError
from privcomp.types import RingArray, Shape

SEED_BYTES = 16
_ZERO_IV = b"\x00" * 16


class AesCtrPrg:
    """Deterministic stream of pseudo-random ring elements from a 16-byte seed.

    Parameters
    ----------
    seed:
        16 uniformly random bytes (an AES-128 key). Must come from a cryptographic source and
        be used for one purpose only.

    Notes
    -----
    Successive calls continue the keystream, so ``prg.ring_elements(s1)`` followed by
    ``prg.ring_elements(s2)`` gives the same values on every holder of the seed.
    """

    __slots__ = ("_enc",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ConfigurationError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()

    def __repr__(self) -> str:
        return "AesCtrPrg(<seed hidden>)"

    def ring_elements(self, shape: Shape) -> RingArray:
        """Return the next pseudo-random ``uint64`` elements, written straight into the array."""
        n = int(np.prod(shape, dtype=np.int64))
        # update_into needs len(data) + block_size - 1 bytes of room: two spare words suffice.
        out = np.empty(n + 2, dtype=np.uint64)
        zeros = np.zeros(8 * n, dtype=np.uint8)
        written = self._enc.update_into(zeros.data, out.view(np.uint8).data)
        if written != 8 * n:  # CTR is a stream mode: never buffered, but check, do not assume
            raise ConfigurationError("AES-CTR keystream returned a short block")
        return out[:n].reshape(shape)

    def random_bytes(self, n: int) -> bytes:
        """Return the next ``n`` keystream bytes."""
        return self._enc.update(bytes(n))

    def below(self, bound: int, size: int) -> list[int]:
        """Return ``size`` integers in ``[0, bound)`` (128 extra bits: negligible modulo bias)."""
        if bound <= 0:
            raise ConfigurationError("bound must be positive")
        nbytes = (bound.bit_length() + 7) // 8 + 16
        return [int.from_bytes(self.random_bytes(nbytes), "little") % bound for _ in range(size)]


def new_seed(rng: RandomSource) -> bytes:
    """Draw a fresh 128-bit seed from a (cryptographic) random source."""
    return rng.random_bytes(SEED_BYTES)


def expand(seed: bytes, shape: Shape) -> RingArray:
    """Expand ``seed`` into one array of pseudo-random ring elements."""
    return AesCtrPrg(seed).ring_elements(shape)


__all__ = ["SEED_BYTES", "AesCtrPrg", "expand", "new_seed"]
