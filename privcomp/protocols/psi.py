"""Private set intersection of two parties' join keys, to align rows for vertical jobs.

Layer: protocols. Diffie-Hellman ("ECDH") PSI with mutual output, over X25519.

Protocol
--------
Party P (secret scalar ``a``) and its peer Q (secret scalar ``b``) run the same program:

1. Header (1 round): each sends its set size, chunk size, mode and minimum join size; a party
   whose keys repeat says so here and both stop with :class:`DuplicateKeyError`.
2. Each hashes its keys to group elements ``H(k)`` (domain-separated BLAKE2b over a canonical,
   type-tagged encoding), permutes them with a fresh random permutation, and sends
   ``H(k)^a`` in chunks of ``chunk_size`` elements (1 round, streamed).
3. Each raises the peer's elements to its own scalar and sends ``H(k')^(ab)`` back in the
   peer's order (alignment mode), or re-permuted (cardinality mode) (1 round, streamed).
4. Each now holds ``H(k)^(ab)`` for its own keys and for the peer's keys. Equal values are
   equal keys. In alignment mode each party sorts its matching rows by the double-encrypted
   value, so row ``j`` of both parties' :attr:`PSIResult.indices` is the same entity.

Security
--------
Semi-honest, two parties, random-oracle model, decisional Diffie-Hellman assumption.
Leakage, by design: both parties learn both set sizes and the intersection size; in alignment
mode each party also learns WHICH of its own rows are in the intersection (never which of the
peer's rows, never a non-matching key: those stay pseudorandom group elements). In cardinality
mode (``cardinality_only=True``, PSI-CA) the returned list is shuffled, so only the size is
learnt. Sent lists are shuffled with the injected cryptographic :class:`RandomSource`, so
positions reveal nothing about the input order. Scalars are fresh per run, so values cannot be
linked across runs. ``min_size`` lets each party's policy refuse a join smaller than ``k``:
both parties learn the size inside the protocol (inherent to DH-PSI), but neither returns the
alignment or the size to its caller, and both raise :class:`GroupTooSmall` consistently.

Group choice and caveats: ``H(k)`` is a 32-byte u-coordinate raised with X25519 (RFC 7748,
OpenSSL via ``cryptography``): the fastest vetted option measured (~2.5x faster than
Ed25519/ristretto255 in libsodium; PyNaCl 1.6 has no ristretto255). X25519 is x-only, and
scalar multiplication commutes on u-coordinates (``x(a*x(b*P)) = x(ab*P)``), all DH-PSI needs.
A hashed u lies on Curve25519 or on its (twist-secure) quadratic twist, about half each; both
have a prime-order subgroup of ~2^252, and clamping makes every scalar a multiple of the
cofactor 8, so outputs lie in the prime-order subgroups (two keys collide only if their hashes
differ by a small-order point: probability ~2^-250). OpenSSL refuses an all-zero
(small-order) result, reported as :class:`ProtocolError`. SecretFlow's ECDH-PSI uses the same
Curve25519 construction.

Cost
----
3 rounds; ``2 * (n_own + n_peer)`` X25519 exponentiations in all, half per party for equal
sets (~25 us of CPU each); ``32 * (n_own + n_peer)`` bytes sent per party plus a 27-byte
header. Large batches use every core: forked workers return raw bytes through an anonymous
shared mapping (no pickle); ``workers=1`` stays in-process. Forked rounds are pipelined: each
batch of ~2^17 elements is forked and awaited off the event loop, its messages are sent in the
background while the next batch is computed, and each batch of the peer's elements is raised as
soon as it has arrived, so neither the cores nor the link wait for each other. In-process
(``workers=1``, or small sets), each round is one batch: streamed in-process batches would run
the two parties in lock-step over gRPC, each idle while the other computes.

Measured CPU per party (2-core VM, see ``benchmarks/results_psi.md``): ~95% is the ``2n``
X25519 exchanges themselves (~25 us each through ``cryptography``, ~1.8 us of which builds the
public-key object); hashing (~0.4 us per key), shuffling, framing, forks and matching the rest.

References
----------
* C. Meadows, "A more efficient cryptographic matchmaking protocol for use in the absence of a
  continuously available third party", IEEE S&P 1986.
* B. A. Huberman, M. Franklin, T. Hogg, "Enhancing privacy and trust in electronic
  communities", ACM EC 1999.
* E. De Cristofaro, G. Tsudik, "Practical private set intersection protocols with linear
  complexity", Financial Cryptography 2010; E. De Cristofaro, P. Gasti, G. Tsudik, "Fast and
  private computation of cardinality of set intersection and union", CANS 2012 (PSI-CA).
* D. J. Bernstein, "Curve25519: new Diffie-Hellman speed records", PKC 2006; RFC 7748.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from privcomp.errors import (
    ConfigurationError,
    DuplicateKeyError,
    EncodingError,
    GroupTooSmall,
    ProtocolError,
)
from privcomp.protocols.context import PartyContext
from privcomp.protocols.psi_group import (
    ELEMENT_BYTES,
    Exponentiator,
    _align,
    _as_list,
    align_tags,
    encode_key,
    hash_keys,
    key_encoders,
    random_permutation,
)
from privcomp.types import IntArray

#: Elements per message; 2 MiB payloads keep memory per message bounded.
DEFAULT_CHUNK = 1 << 16
# Elements per forked batch: a fork of a large parent costs ~10 ms; 2^17 elements are ~1.6 s of
# work on 2 cores, so forks cost < 1% while the peer still gets its first elements early.
_BATCH = 1 << 17
_VERSION = 1
# version, status, mode, n, chunk, min_size
_HEADER = struct.Struct("<BBBQQQ")
_OK, _DUPLICATES, _BAD_KEYS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PSIResult:
    """One party's output of :func:`psi`.

    Attributes
    ----------
    size:
        Number of keys in the intersection.
    indices:
        This party's row indices of the intersection, in the order shared with the peer (row
        ``j`` of both parties' ``indices`` is the same key); ``None`` in cardinality mode.
    n_own, n_peer:
        Set sizes of this party and of its peer.
    cpu_seconds:
        CPU time this party spent hashing and exponentiating, forked workers included.
    """

    size: int
    indices: IntArray | None
    n_own: int
    n_peer: int
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class PSIValues:
    """One party's output of :func:`psi_values`.

    Attributes
    ----------
    own:
        ``H(k)^(ab)`` of this party's keys, 32 bytes each, in row order.
    peer:
        ``H(k')^(ab)`` of the peer's keys, 32 bytes each, in an order the peer drew at random.
    n_own, n_peer:
        Set sizes of this party and of its peer.
    cpu_seconds:
        CPU time this party spent hashing and exponentiating, forked workers included.
    """

    own: bytes
    peer: bytes
    n_own: int
    n_peer: int
    cpu_seconds: float


def _batch(exp: Exponentiator, chunk: int, count: int) -> int:
    """Elements per batch: whole messages, about :data:`_BATCH` elements if they are forked.

    An in-process batch blocks the event loop, and a gRPC send returns only once the peer's
    loop has taken the message: two parties alternating in-process batches with sends would
    run in lock-step, each idle while the other computes. So in-process, a round is one batch
    (as in the classic two-phase DH-PSI), and only forked batches are streamed.
    """
    batch = max(1, _BATCH // chunk) * chunk
    return batch if exp.forks(min(batch, count)) else max(count, 1)


async def _recv_chunks(
    ctx: PartyContext, peer: int, tag: str, n: int, chunk: int, start: int, stop: int
) -> bytes:
    """Receive elements ``start .. stop - 1`` (``start`` a multiple of ``chunk``)."""
    parts = []
    for i in range(start // chunk, -(-stop // chunk)):
        part = await ctx.transport.recv(peer, f"{tag}{i}")
        expected = min(chunk, n - i * chunk) * ELEMENT_BYTES
        if len(part) != expected:
            raise ProtocolError(
                f"party {ctx.party_id}: PSI chunk {i} from party {peer} has a bad length"
            )
        parts.append(part)
    return b"".join(parts)


async def _send_chunks(
    ctx: PartyContext, peer: int, tag: str, start: int, blob: bytes, chunk: int
) -> None:
    """Send ``blob`` (elements from ``start``, a multiple of ``chunk``) as messages."""
    step, first = chunk * ELEMENT_BYTES, start // chunk
    for j, pos in enumerate(range(0, len(blob), step)):
        await ctx.transport.send(peer, f"{tag}{first + j}", blob[pos : pos + step])


class _Sends:
    """Sends of forked batches run in the background while the next batch is computed.

    A gRPC send returns once the peer has the message, so awaiting it inline would leave the
    cores idle for a round trip per batch; the tasks are awaited (and failures raised) at the
    end, or earlier as soon as one fails. A batch computed in-process blocks the event loop, so
    its sends are awaited at once instead: a background stream stalled for seconds in
    mid-message can be cancelled by the peer.
    """

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, send: Coroutine[Any, Any, None], background: bool) -> None:
        for task in self._tasks:
            failed = task.exception() if task.done() and not task.cancelled() else None
            if failed is not None:
                send.close()
                raise failed
        if background:
            self._tasks.append(asyncio.ensure_future(send))
        else:
            await send
            await asyncio.sleep(0)  # let the peer (in-process) and the transport run

    async def finish(self) -> None:
        await asyncio.gather(*self._tasks)

    def cancel(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" log for a failure seen


def _inverse(perm: IntArray) -> IntArray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
    return inv


def _permute(blob: bytes, perm: IntArray) -> bytes:
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, ELEMENT_BYTES)
    return rows[perm].tobytes()


async def _handshake(
    ctx: PartyContext,
    peer: int,
    tag: str,
    own: tuple[int, int, int, int],
    failure: Exception | None,
) -> tuple[int, int, int]:
    """Exchange headers ``(status, mode, n, chunk, min_size)``; return the peer's ``(n, chunk,
    min_size)``, or raise on both sides when either party cannot take part."""
    status = _BAD_KEYS if isinstance(failure, EncodingError) else _DUPLICATES if failure else _OK
    await ctx.transport.send(peer, tag, _HEADER.pack(_VERSION, status, *own))
    raw = await ctx.transport.recv(peer, tag)
    if len(raw) != _HEADER.size:
        raise ProtocolError(f"party {ctx.party_id}: malformed PSI header from party {peer}")
    version, p_status, p_mode, p_n, p_chunk, p_min = _HEADER.unpack(raw)
    if failure is not None:
        raise failure
    if p_status == _DUPLICATES:
        raise DuplicateKeyError(peer)
    if p_status == _BAD_KEYS:
        raise ProtocolError(f"party {ctx.party_id}: party {peer} could not encode its join keys")
    if version != _VERSION or p_status != _OK or p_mode != own[0] or p_chunk < 1:
        raise ProtocolError(
            f"party {ctx.party_id}: party {peer} runs a different PSI version or mode"
        )
    return p_n, p_chunk, p_min


def _peer_of(ctx: PartyContext, peer: int | None) -> int:
    if peer is None:
        if ctx.n_parties != 2:
            raise ConfigurationError(
                f"psi runs between two parties; pass peer= among {ctx.n_parties} parties"
            )
        return ctx.peers[0]
    if peer == ctx.party_id or not 0 <= peer < ctx.n_parties:
        raise ConfigurationError(f"party {ctx.party_id}: invalid PSI peer index {peer}")
    return peer


async def psi(
    ctx: PartyContext,
    keys: Iterable[Any],
    *,
    peer: int | None = None,
    cardinality_only: bool = False,
    min_size: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int | None = None,
) -> PSIResult:
    """Private set intersection of this party's ``keys`` with its peer's (3 rounds).

    Both parties call it (SPMD), each with its own keys; see the module docstring for the
    protocol, its leakage and its cost.

    Parameters
    ----------
    ctx:
        This party's context.
    keys:
        This party's join keys, one per row: integers, strings or bytes (a list, numpy array
        or pandas Series). Duplicates are refused.
    peer:
        Index of the other key holder; defaults to the only other party of a 2-party job.
    cardinality_only:
        Reveal only the intersection size (PSI-CA); :attr:`PSIResult.indices` is ``None``.
        Both parties must pass the same value.
    min_size:
        This party's minimum join size (policy ``k``): if the intersection holds fewer keys
        than the larger of both parties' ``min_size``, both raise :class:`GroupTooSmall`.
    chunk_size:
        Elements per message (32 bytes each).
    workers:
        Processes for exponentiation; ``None`` uses every available core for large batches.

    Returns
    -------
    PSIResult
        Intersection size and this party's aligned row indices.

    Raises
    ------
    DuplicateKeyError
        If either party's keys repeat (names the party).
    EncodingError
        If a key is not an int, str or bytes.
    GroupTooSmall
        If the intersection is smaller than either party's ``min_size``.
    ProtocolError
        If the peer runs another mode or sends malformed or invalid elements.

    Examples
    --------
    >>> async def program(ctx, keys):
    ...     return (await psi(ctx, keys)).indices
    >>> simulate(program, [["a", "b", "c"], ["c", "x", "a"]], triples="dealer")  # doctest: +SKIP
    [array([0, 2]), array([2, 0])]   # or [2, 0] / [0, 2]: the order is random, but shared
    """
    if min_size < 0:
        raise ConfigurationError("chunk_size must be >= 1 and min_size >= 0")
    run = await _run(ctx, keys, peer, cardinality_only, min_size, chunk_size, workers)
    t0 = time.process_time()
    size, indices = _align(run.own, run.peer, cardinality_only)
    cpu = run.cpu_seconds + time.process_time() - t0
    k = max(min_size, run.peer_min)
    if size < k:
        who = ctx.party_id if min_size >= run.peer_min else run.other
        raise GroupTooSmall("join (private set intersection)", k, party=f"party {who}")
    return PSIResult(size, indices, run.n_own, run.n_peer, cpu)


async def psi_values(
    ctx: PartyContext,
    keys: Iterable[Any],
    *,
    peer: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int | None = None,
) -> PSIValues:
    """The double-encrypted values ``H(k)^(ab)`` of both parties' keys (3 rounds).

    Steps 1-3 of :func:`psi` in alignment mode (the two can be mixed: a party calling this
    and its peer calling ``psi(cardinality_only=False)`` interoperate). Equal values are
    equal keys, so a caller can match rows itself, e.g. to align several parties per side.

    Security: the leakage of :func:`psi` in alignment mode. The peer's values come in an
    order the peer drew at random, so they reveal nothing about its row order; values of
    non-matching keys are pseudorandom group elements (DDH); scalars are fresh per call.

    Parameters
    ----------
    ctx, keys, peer, chunk_size, workers:
        As for :func:`psi`.

    Returns
    -------
    PSIValues
        ``own`` in this party's row order, ``peer`` in the peer's random order.

    Raises
    ------
    DuplicateKeyError, EncodingError, ProtocolError
        As for :func:`psi`.
    """
    run = await _run(ctx, keys, peer, False, 0, chunk_size, workers)
    return PSIValues(run.own, run.peer, run.n_own, run.n_peer, run.cpu_seconds)


@dataclass(frozen=True, slots=True)
class _Run:
    own: bytes
    peer: bytes
    n_own: int
    n_peer: int
    peer_min: int
    other: int
    cpu_seconds: float


async def _run(
    ctx: PartyContext,
    keys: Iterable[Any],
    peer: int | None,
    cardinality_only: bool,
    min_size: int,
    chunk_size: int,
    workers: int | None,
) -> _Run:
    """Steps 1-3: header, then own and peer elements in forked batches, streamed both ways."""
    if chunk_size < 1:
        raise ConfigurationError("chunk_size must be >= 1 and min_size >= 0")
    other = _peer_of(ctx, peer)
    me = ctx.party_id
    exp = Exponentiator(ctx.rng, workers, me)
    base = ctx.next_tag("psi")
    t0 = time.process_time()
    items = _as_list(keys)
    n = len(items)
    failure: Exception | None = None
    try:
        table = key_encoders(set(map(type, items)), me)
    except EncodingError as exc:  # tell the peer before failing, so it need not time out
        failure, table = exc, {}
    # Accepted types compare equal iff their encodings are equal.
    if failure is None and len(set(items)) != n:
        failure = DuplicateKeyError(me)
    perm = random_permutation(ctx.rng, n)
    order = perm.tolist()
    exp.cpu_seconds += time.process_time() - t0
    own = (int(cardinality_only), n, chunk_size, min_size)
    n_peer, peer_chunk, peer_min = await _handshake(ctx, other, f"{base}/hdr", own, failure)
    ctx.rounds += 3
    sends = _Sends()
    try:
        # Round 2: own elements H(k)^a in a fresh random order, batch by batch.
        step = _batch(exp, chunk_size, n)
        for a in range(0, n, step):
            part = await exp.hash_apply_async(items, table, order[a : a + step])
            send = _send_chunks(ctx, other, f"{base}/x", a, part, chunk_size)
            await sends.start(send, exp.forks(min(step, n - a)))
        # Round 3: the peer's elements H(k')^(ba), each batch as soon as it has arrived.
        peer_double = await _peer_round(
            ctx, other, base, exp, (n_peer, peer_chunk), cardinality_only, sends
        )
        mine = await _recv_chunks(ctx, other, f"{base}/z", n, chunk_size, 0, n)
        await sends.finish()
    finally:
        sends.cancel()
    t0 = time.process_time()
    if not cardinality_only:  # back from the shuffled order to row order
        mine = _permute(mine, _inverse(perm))
    exp.cpu_seconds += time.process_time() - t0
    return _Run(mine, peer_double, n, n_peer, peer_min, other, exp.cpu_seconds)


async def _peer_round(
    ctx: PartyContext,
    other: int,
    base: str,
    exp: Exponentiator,
    sizes: tuple[int, int],
    cardinality_only: bool,
    sends: _Sends,
) -> bytes:
    """Raise the peer's elements to this party's scalar and send them back (round 3)."""
    n_peer, peer_chunk = sizes
    w, tag = ELEMENT_BYTES, f"{base}/x"
    theirs = b""
    if cardinality_only:  # return the peer's elements in an order the peer cannot link
        theirs = await _recv_chunks(ctx, other, tag, n_peer, peer_chunk, 0, n_peer)
        t0 = time.process_time()
        theirs = _permute(theirs, random_permutation(ctx.rng, n_peer))
        exp.cpu_seconds += time.process_time() - t0
    done = []
    step = _batch(exp, peer_chunk, n_peer)
    for a in range(0, n_peer, step):
        b = min(a + step, n_peer)
        if cardinality_only:
            src = theirs[w * a : w * b]
        else:
            src = await _recv_chunks(ctx, other, tag, n_peer, peer_chunk, a, b)
        part = await exp.apply_async(src)
        await sends.start(
            _send_chunks(ctx, other, f"{base}/z", a, part, peer_chunk), exp.forks(b - a)
        )
        done.append(part)
    return b"".join(done)


__all__ = [
    "DEFAULT_CHUNK",
    "ELEMENT_BYTES",
    "PSIResult",
    "PSIValues",
    "align_tags",
    "encode_key",
    "hash_keys",
    "key_encoders",
    "psi",
    "psi_values",
    "random_permutation",
]
