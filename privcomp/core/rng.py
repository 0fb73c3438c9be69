"""Randomness sources (layer: core).

Randomness is always injected. :class:`SystemRandomSource` (the operating system's CSPRNG via
:func:`os.urandom`) is the default everywhere; :class:`InsecureSeededRandom` is reproducible and
exists for tests and documentation only — its name says so, and it must never protect data.
"""

from __future__ import annotations

import os
import secrets
from typing import Protocol, runtime_checkable

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.types import RingArray, Shape


@runtime_checkable
class RandomSource(Protocol):
    """Anything that yields uniformly random bytes and ring elements."""

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""
        ...

    def ring_elements(self, shape: Shape) -> RingArray:
        """Return uniformly random elements of Z_2^64 with the given shape."""
        ...

    def below(self, bound: int, size: int) -> list[int]:
        """Return ``size`` integers uniform in ``[0, bound)`` (for prime fields and Paillier)."""
        ...


class SystemRandomSource:
    """Cryptographic randomness from the operating system (``getrandom``/``/dev/urandom``)."""

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` bytes from :func:`os.urandom`."""
        return os.urandom(n)

    def ring_elements(self, shape: Shape) -> RingArray:
        """Return uniform ``uint64`` elements drawn from the OS CSPRNG."""
        n = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(os.urandom(8 * n), dtype="<u8").astype(np.uint64).reshape(shape)

    def below(self, bound: int, size: int) -> list[int]:
        """Return ``size`` integers uniform in ``[0, bound)`` from :mod:`secrets`."""
        if bound <= 0:
            raise ConfigurationError("bound must be positive")
        return [secrets.randbelow(bound) for _ in range(size)]


class InsecureSeededRandom:
    """Reproducible, NON-cryptographic randomness for tests and examples only.

    Parameters
    ----------
    seed:
        Seed of a PCG64 generator. Anyone who knows it can predict every value.
    """

    def __init__(self, seed: int) -> None:
        self._gen = np.random.Generator(np.random.PCG64(seed))

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` reproducible bytes."""
        return self._gen.bytes(n)

    def ring_elements(self, shape: Shape) -> RingArray:
        """Return reproducible ``uint64`` elements."""
        return self._gen.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)

    def below(self, bound: int, size: int) -> list[int]:
        """Return reproducible integers in ``[0, bound)``."""
        # 128 extra bits make the modulo bias negligible.
        nbytes = (bound.bit_length() + 7) // 8 + 16
        return [int.from_bytes(self._gen.bytes(nbytes), "little") % bound for _ in range(size)]


def default_random() -> RandomSource:
    """Return the default (cryptographic) random source."""
    return SystemRandomSource()
