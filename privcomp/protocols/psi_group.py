"""Hash join keys to X25519 u-coordinates and raise them to a secret scalar (layer: protocols).

The group layer of :mod:`privcomp.protocols.psi`: a canonical, type-tagged key encoding, a
domain-separated hash to 32-byte u-coordinates, a uniform random permutation from the injected
:class:`~privcomp.core.rng.RandomSource`, and :class:`Exponentiator`, which holds one fresh
secret scalar and applies it to many elements, on every core for large batches. Forked workers
get their inputs through ``fork`` (copy-on-write memory) and write raw bytes into an anonymous
shared mapping; they leave with ``os._exit``; nothing is pickled. The synchronous methods use
:func:`~privcomp.backends.paillier.parallel.fork_map_bytes` (the caller computes a slice too);
the ``*_async`` methods fork every slice and wait for the children off the event loop, so the
transport keeps streaming, and the peer keeps being served, while the cores exponentiate. See
:mod:`privcomp.protocols.psi` for the protocol, the group choice and its caveats. Also the
vectorised matching of double-encrypted values: :func:`_align` (two parties) and
:func:`align_tags` (several parties per side, for vertical joins).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privcomp.backends.paillier.parallel import (
    REJECTED,
    available_cores,
    fork_child,
    fork_map_bytes,
)
from privcomp.core.rng import RandomSource
from privcomp.errors import (
    ConfigurationError,
    DuplicateKeyError,
    EncodingError,
    ParallelWorkerError,
    ProtocolError,
)
from privcomp.types import IntArray

#: Bytes of one group element (an X25519 u-coordinate).
ELEMENT_BYTES = 32
#: BLAKE2b personalisation: separates this hash from every other use of BLAKE2b.
_DOMAIN = b"privcomp.psi.v1"
# Below this many elements a fork costs more than it saves.
_PARALLEL_THRESHOLD = 2048
# Keyed once; ``copy()`` of this state is ~35% cheaper per key than a fresh personalised
# constructor (same digest: BLAKE2b-256 with this personalisation).
_HASH_STATE = hashlib.blake2b(digest_size=ELEMENT_BYTES, person=_DOMAIN)


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
    h = _HASH_STATE.copy()
    h.update(table[type(key)](key))
    return h.digest()


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
    if len(table) == 1:  # one key type (the usual case): no per-key table look-up
        (enc,) = table.values()
        copy = _HASH_STATE.copy
        out = []
        for k in items:
            h = copy()
            h.update(enc(k))
            out.append(h.digest())
        return out
    return [_hash_one(table, k) for k in items]


def random_permutation(rng: RandomSource, n: int) -> IntArray:
    """Uniform random permutation of ``range(n)``: the ranks of ``n`` random 64-bit words.

    A tie (probability below ``n^2 / 2^65``) keeps the input order of the tied pair only.
    """
    return np.argsort(rng.ring_elements((n,)), kind="stable").astype(np.int64)


def _bounds(count: int, parts: int) -> list[int]:
    step, extra = divmod(count, parts)
    return [i * step + min(i, extra) for i in range(parts + 1)]


def _child(compute: Compute, start: int, stop: int, buf: mmap.mmap) -> int:
    out = compute(start, stop)
    if len(out) != (stop - start) * ELEMENT_BYTES:
        return 1
    buf[start * ELEMENT_BYTES : stop * ELEMENT_BYTES] = out
    return 0


async def fork_compute(compute: Compute, count: int, workers: int) -> tuple[bytes, float, int]:
    """Return ``compute(0, count)`` from ``workers`` forked children, awaited off the event loop.

    Unlike :func:`~privcomp.backends.paillier.parallel.fork_map_bytes`, the caller computes
    nothing: it waits for the children in executor threads (``os.wait4`` releases the GIL), so
    its event loop stays free for the transport while every core exponentiates. Children
    inherit ``compute`` by ``fork``, write ``ELEMENT_BYTES`` per item into an anonymous shared
    mapping and leave with ``os._exit`` (no pickling, no clean-up of the parent's state).

    Returns
    -------
    tuple of (bytes, float, int)
        The results; the CPU seconds of the children and of the forks (the caller's other
        coroutines are not counted); and whether a child rejected its input (raised
        :class:`ValueError`) or failed otherwise, as a bit mask (1: rejected, 2: failed).

    Notes
    -----
    If the awaiting task is cancelled (e.g. the peer failed), the children are killed.
    """
    bounds = _bounds(count, workers)
    buf = mmap.mmap(-1, max(1, count * ELEMENT_BYTES))
    pids: list[int] = []
    reaped: set[int] = set()

    def wait(pid: int) -> tuple[int, float]:
        _, status, usage = os.wait4(pid, 0)
        reaped.add(pid)
        return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime

    t0 = time.process_time()
    try:
        for w in range(workers):
            lo, hi = bounds[w], bounds[w + 1]
            pids.append(fork_child(partial(_child, compute, lo, hi, buf)))
        fork_cpu = time.process_time() - t0
        done = await asyncio.gather(*(asyncio.to_thread(wait, pid) for pid in pids))
        flags = 0
        for code, _ in done:
            flags |= 1 if code == REJECTED else 2 if code else 0
        return buf[: count * ELEMENT_BYTES], fork_cpu + sum(cpu for _, cpu in done), flags
    finally:
        for pid in pids:  # only on failure or cancellation: the waiting threads reap them
            if pid not in reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        buf.close()


class Exponentiator:
    """Raise many u-coordinates to one secret X25519 scalar, on several cores if worthwhile.

    Parameters
    ----------
    rng:
        Source of the fresh secret scalar (32 random bytes, clamped by X25519).
    workers:
        Processes for large batches; ``None`` uses every available core, ``1`` stays inline.
    party:
        Index of the calling party, named in error messages.

    Attributes
    ----------
    cpu_seconds:
        CPU time spent in this object's batches, forked children included.
    """

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

    async def apply_async(self, blob: bytes) -> bytes:
        """:meth:`apply`, with forked workers awaited off the event loop."""
        count = len(blob) // ELEMENT_BYTES
        return await self._run_async(lambda a, b: self._range(blob, a, b), count)

    async def hash_apply_async(self, items: list[Any], table: Encoders, order: list[int]) -> bytes:
        """:meth:`hash_apply`, with forked workers awaited off the event loop."""
        return await self._run_async(self._hashed(items, table, order), len(order))

    def _invalid(self) -> ProtocolError:
        return ProtocolError(
            f"party {self._party}: invalid (small-order) group element from the peer"
        )

    def forks(self, count: int) -> bool:
        """Whether a batch of ``count`` elements runs in forked workers (else in-process)."""
        return self._count_workers(count) > 1

    def _count_workers(self, count: int) -> int:
        workers = self._workers if self._workers is not None else available_cores()
        if not hasattr(os, "fork") or count < _PARALLEL_THRESHOLD:
            workers = 1
        return max(1, min(workers, count))

    async def _run_async(self, compute: Compute, count: int) -> bytes:
        workers = self._count_workers(count)
        if workers == 1:
            return self._run(compute, count)
        out, cpu, flags = await fork_compute(compute, count, workers)
        self.cpu_seconds += cpu
        if flags & 1:  # OpenSSL refused a small-order input (all-zero result)
            raise self._invalid()
        if flags:
            raise ParallelWorkerError(f"party {self._party}: a PSI worker process failed")
        return out

    def _run(self, compute: Compute, count: int) -> bytes:
        workers = self._count_workers(count)
        t0 = time.process_time()
        try:
            if workers == 1:
                return compute(0, count)
            out, child_cpu = fork_map_bytes(compute, count, ELEMENT_BYTES, workers)
            self.cpu_seconds += child_cpu
            return out
        except ValueError:  # OpenSSL refuses a small-order input (all-zero result)
            raise self._invalid() from None
        finally:
            self.cpu_seconds += time.process_time() - t0


def _align(own_d: bytes, peer_d: bytes, cardinality_only: bool) -> tuple[int, IntArray | None]:
    """Intersection size and, in alignment mode, own rows in the canonical shared order.

    The canonical order is lexicographic on the four little-endian 64-bit words of the
    double-encrypted value; both parties sort the same values, so they get the same order.
    """
    own = np.frombuffer(own_d, dtype="<u8").reshape(-1, 4)
    theirs = np.frombuffer(peer_d, dtype="<u8").reshape(-1, 4)
    # Fast exact path: match on the first word, then confirm all four words.
    order = np.argsort(theirs[:, 0], kind="stable")
    first = theirs[order, 0]
    unique_first = first.size < 2 or bool(np.all(first[1:] != first[:-1]))
    pos = np.minimum(np.searchsorted(first, own[:, 0]), max(first.size - 1, 0))
    rows = np.flatnonzero(first[pos] == own[:, 0]) if first.size else np.zeros(0, np.int64)
    exact = bool(np.all(own[rows] == theirs[order[pos[rows]]]))
    if not (unique_first and exact):  # a 64-bit prefix collision (probability ~n^2/2^64)
        s32 = f"S{ELEMENT_BYTES}"
        rows = np.flatnonzero(np.isin(np.frombuffer(own_d, s32), np.frombuffer(peer_d, s32)))
    if cardinality_only:
        return int(rows.size), None
    matched = own[rows]
    if unique_first:  # first words of the matched values are distinct: one key suffices
        ranks = np.argsort(matched[:, 0], kind="stable")
    else:
        ranks = np.lexsort((matched[:, 3], matched[:, 2], matched[:, 1], matched[:, 0]))
    return int(rows.size), rows[ranks].astype(np.int64)


Aligned = tuple[int, tuple[IntArray, IntArray], IntArray, IntArray]


def align_tags(tags: Sequence[Sequence[bytes]], sides: Sequence[int], me: int) -> Aligned | None:
    """Join rows of two sides by equal tags, vectorised; ``None`` where an exact path must decide.

    The semantics of :func:`privcomp.protocols.stats_vertical.align`: joined rows are the tags
    held on both sides, in increasing bytes order; ``tags[p]`` are party ``p``'s tags (row
    order), ``sides[p]`` its side (0 or 1), ``me`` the caller. One stable sort of all tags on
    their first 8 bytes read big-endian (so the order is the bytes order) replaces a dict per
    side. Matching stays exact: equal first words are confirmed on the whole tag, and ``None``
    is returned (the caller's exact per-tag path then decides) when two different tags share
    their first 8 bytes (probability about ``N^2 / 2^65`` for ``N`` pseudorandom tags), when a
    tag occurs three times, or when the tags are not all of one width that is a multiple of 8.

    Returns
    -------
    tuple or None
        ``(size, (left_owners, right_owners), my_rows, my_positions)``: the number of joined
        rows, the owner party of each joined row on each side, this party's rows in joined
        order and their joined positions (increasing).

    Raises
    ------
    DuplicateKeyError
        If a tag repeats within a side, naming the party whose repeat comes first in party
        then row order (as the exact path does).
    """
    width = len(tags[me][0]) if tags[me] else ELEMENT_BYTES
    if width % 8 or any(len(t) != width for lst in tags for t in lst):
        return None
    counts = [len(lst) for lst in tags]
    words = np.frombuffer(b"".join(b"".join(lst) for lst in tags), dtype=">u8")
    first = words[:: width // 8].astype(np.uint64)
    owner = np.repeat(np.arange(len(tags)), counts)
    side = np.asarray(sides, dtype=np.int64)[owner]
    order = np.argsort(first, kind="stable")  # ties keep the parties' order
    f = first[order]
    tie = np.flatnonzero(f[1:] == f[:-1])
    rows = words.reshape(-1, width // 8)
    if tie.size and not np.array_equal(rows[order[tie]], rows[order[tie + 1]]):
        return None  # two different tags share their first 8 bytes
    if np.any(np.diff(tie) == 1):  # a tag thrice: a duplicate (the exact path names its party)
        return None
    s0, s1 = side[order[tie]], side[order[tie + 1]]
    dup = tie[s0 == s1]
    if dup.size:
        raise DuplicateKeyError(int(owner[order[dup + 1].min()]))
    a, b = order[tie], order[tie + 1]  # one tag of each side, in joined (sorted) order
    left = np.where(s0 == 0, a, b)
    right = np.where(s0 == 0, b, a)
    starts = np.cumsum([0, *counts])
    mine = left if sides[me] == 0 else right
    hit = np.flatnonzero(owner[mine] == me)
    return (
        int(tie.size),
        (owner[left].astype(np.int64), owner[right].astype(np.int64)),
        (mine[hit] - starts[me]).astype(np.int64),
        hit.astype(np.int64),
    )


__all__ = [
    "ELEMENT_BYTES",
    "Aligned",
    "Encoders",
    "Exponentiator",
    "align_tags",
    "encode_key",
    "fork_compute",
    "hash_keys",
    "key_encoders",
    "random_permutation",
]
