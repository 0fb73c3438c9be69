"""Hash join keys to X25519 u-coordinates and raise them to a secret scalar (layer: protocols).

The group layer of :mod:`privcomp.protocols.psi`: a canonical, type-tagged key encoding, a
domain-separated hash to 32-byte u-coordinates, a uniform random permutation from the injected
:class:`~privcomp.core.rng.RandomSource`, and :class:`_Exponentiator`, which holds one fresh
secret scalar and applies it to many elements, on every core for large batches (forked
workers through :func:`~privcomp.backends.paillier.parallel.fork_map_bytes`: raw bytes in an
anonymous shared mapping, ``os._exit`` in the children, nothing pickled). See
:mod:`privcomp.protocols.psi` for the protocol, the group choice and its caveats.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privcomp.backends.paillier.parallel import available_cores, fork_map_bytes
from privcomp.core.rng import RandomSource
from privcomp.errors import ConfigurationError, EncodingError, ProtocolError
from privcomp.types import IntArray

#: Bytes of one group element (an X25519 u-coordinate).
ELEMENT_BYTES = 32
#: BLAKE2b personalisation: separates this hash from every other use of BLAKE2b.
_DOMAIN = b"privcomp.psi.v1"
# Below this many elements a fork costs more than it saves.
_PARALLEL_THRESHOLD = 2048


def _enc_int(key: Any) -> bytes:
    k = int(key)
    return b"i" + k.to_bytes(k.bit_length() // 8 + 1, "big", signed=True)


def _enc_str(key: Any) -> bytes:
    return b"s" + str.encode(key, "utf-8")


def _enc_bytes(key: Any) -> bytes:
    return b"b" + bytes(key)


Encoders = dict[type, Callable[[Any], bytes]]
Compute = Callable[[int, int], bytes]


def key_encoders(types: Iterable[type], party: int) -> Encoders:
    """Encoder of each key type: canonical and type-tagged, so ``1`` and ``"1"`` differ.

    Raises
    ------
    EncodingError
        If a type is not an integer, a string or bytes (floats are refused: their equality is
        not stable across parties' parsers; bools are ambiguous). Names the party and type.
    """
    table: Encoders = {}
    for t in types:
        if issubclass(t, str):
            table[t] = _enc_str
        elif issubclass(t, bytes):
            table[t] = _enc_bytes
        elif issubclass(t, int | np.integer) and not issubclass(t, bool | np.bool_):
            table[t] = _enc_int
        else:
            raise EncodingError(
                f"party {party}: join keys must be int, str or bytes, not {t.__name__}"
            )
    return table


def encode_key(key: object, party: int = 0) -> bytes:
    """Canonical, type-tagged encoding of one key (see :func:`key_encoders`)."""
    return key_encoders([type(key)], party)[type(key)](key)


def _hash_one(table: Encoders, key: Any) -> bytes:
    data = table[type(key)](key)
    return hashlib.blake2b(data, digest_size=ELEMENT_BYTES, person=_DOMAIN).digest()


def _as_list(keys: Iterable[Any]) -> list[Any]:
    return keys.tolist() if isinstance(keys, np.ndarray) else list(keys)


def hash_keys(keys: Iterable[Any], party: int = 0) -> list[bytes]:
    """Hash every key to a 32-byte X25519 u-coordinate (BLAKE2b-256, personalised).

    Parameters
    ----------
    keys:
        Integers, strings or bytes; a numpy array or pandas Series works too.
    party:
        Index of the calling party, named in error messages.
    """
    items = _as_list(keys)
    table = key_encoders(set(map(type, items)), party)
    return [_hash_one(table, k) for k in items]


def random_permutation(rng: RandomSource, n: int) -> IntArray:
    """Uniform random permutation of ``range(n)``: the ranks of ``n`` random 64-bit words.

    A tie (probability below ``n^2 / 2^65``) keeps the input order of the tied pair only.
    """
    return np.argsort(rng.ring_elements((n,)), kind="stable").astype(np.int64)


class _Exponentiator:
    """Raise many u-coordinates to one secret X25519 scalar, on several cores if worthwhile."""

    def __init__(self, rng: RandomSource, workers: int | None, party: int) -> None:
        if workers is not None and workers < 1:
            raise ConfigurationError("workers must be at least 1")
        self._key = X25519PrivateKey.from_private_bytes(rng.random_bytes(ELEMENT_BYTES))
        self._workers = workers
        self._party = party
        self.cpu_seconds = 0.0

    def _range(self, blob: bytes, start: int, stop: int) -> bytes:
        load, exchange, w = X25519PublicKey.from_public_bytes, self._key.exchange, ELEMENT_BYTES
        return b"".join([exchange(load(blob[w * i : w * (i + 1)])) for i in range(start, stop)])

    def _hashed(self, items: list[Any], table: Encoders, order: list[int]) -> Compute:
        load, exchange = X25519PublicKey.from_public_bytes, self._key.exchange

        def compute(start: int, stop: int) -> bytes:
            return b"".join([exchange(load(_hash_one(table, items[p]))) for p in order[start:stop]])

        return compute

    def apply(self, blob: bytes) -> bytes:
        """Return ``u^s`` for every 32-byte ``u`` in ``blob`` (same order)."""
        return self._run(lambda a, b: self._range(blob, a, b), len(blob) // ELEMENT_BYTES)

    def hash_apply(self, items: list[Any], table: Encoders, order: list[int]) -> bytes:
        """Return ``H(items[p])^s`` for every ``p`` in ``order`` (hashing runs on the workers)."""
        return self._run(self._hashed(items, table, order), len(order))

    def _run(self, compute: Compute, count: int) -> bytes:
        workers = self._workers if self._workers is not None else available_cores()
        if not hasattr(os, "fork") or count < _PARALLEL_THRESHOLD:
            workers = 1
        workers = max(1, min(workers, count))
        t0 = time.process_time()
        try:
            if workers == 1:
                return compute(0, count)
            out, child_cpu = fork_map_bytes(compute, count, ELEMENT_BYTES, workers)
            self.cpu_seconds += child_cpu
            return out
        except ValueError:  # OpenSSL refuses a small-order input (all-zero result)
            raise ProtocolError(
                f"party {self._party}: invalid (small-order) group element from the peer"
            ) from None
        finally:
            self.cpu_seconds += time.process_time() - t0


__all__ = [
    "ELEMENT_BYTES",
    "Encoders",
    "encode_key",
    "hash_keys",
    "key_encoders",
    "random_permutation",
]
