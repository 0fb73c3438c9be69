"""Communication primitives: input sharing, batched opening, reveal, AND gates, B2A.

Layer: protocols.

All functions are SPMD coroutines over additive n-of-n shares in Z_2^64 (``uint64``) or XOR
shares of 64-bit words. Every round sends exactly one message per peer: the arrays opened in the
same round are concatenated into one payload.

Cost notation: ``n`` parties, ``N`` elements; "bytes" counts payload per party per peer
(the codec header adds 6 + 8*ndim bytes per message).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from privcomp.backends.prg import AesCtrPrg, new_seed
from privcomp.core.beaver import TripleShare, bit_from_xor_and_dabit
from privcomp.errors import CodecError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.types import RingArray, Shape

_ONE = np.uint64(1)
_MAX_NDIM = 32
_SEED_WORDS = 2


def _pack_xor(arrays: Sequence[RingArray], mask: RingArray) -> RingArray:
    """Concatenate ``arrays`` XOR ``mask`` in one pass (the masked words to be opened)."""
    flat = np.empty(mask.shape, dtype=np.uint64)
    off = 0
    for a in arrays:
        np.bitwise_xor(a.reshape(-1), mask[off : off + a.size], out=flat[off : off + a.size])
        off += a.size
    return flat


def _unpack(flat: RingArray, like: Sequence[RingArray]) -> list[RingArray]:
    out, off = [], 0
    for a in like:
        out.append(flat[off : off + a.size].reshape(a.shape))
        off += a.size
    return out


async def _open(ctx: PartyContext, shares: Sequence[RingArray], xor: bool) -> list[RingArray]:
    received = await ctx.exchange_ring(ctx.next_tag("open_xor" if xor else "open"), shares)
    op = np.bitwise_xor if xor else np.add
    out: list[RingArray] = []
    off = 0
    for a in shares:
        acc = np.empty(a.shape, dtype=np.uint64)  # explicit out=: 0-d results stay arrays
        src = a
        for peer in received.values():
            op(src, peer[off : off + a.size].reshape(a.shape), out=acc)
            src = acc
        off += a.size
        out.append(acc)
    return out


async def open_many(ctx: PartyContext, shares: Sequence[RingArray]) -> list[RingArray]:
    """Open several additively shared arrays at once.

    Protocol
    --------
    1. Concatenate the local shares into one buffer and send it to every peer.
    2. Add the n buffers; split and reshape.

    Security
    --------
    Reveals the opened values to every party (callers open only masked values or outputs).

    Cost
    ----
    1 round; ``8 * sum(sizes)`` bytes to each peer.

    References
    ----------
    Additive secret sharing over Z_2^k, e.g. Bogdanov, Laur, Willemson, "Sharemind", ESORICS 2008;
    batched opening as in CrypTen's ``reveal_batch`` (Knott et al., NeurIPS 2021).
    """
    return await _open(ctx, shares, xor=False)


async def open_many_xor(ctx: PartyContext, shares: Sequence[RingArray]) -> list[RingArray]:
    """Open several XOR-shared word arrays at once.

    Protocol
    --------
    As :func:`open_many`, combining the n buffers with XOR.

    Security
    --------
    Reveals the opened words to every party (callers open only one-time-padded words).

    Cost
    ----
    1 round; ``8 * sum(sizes)`` bytes to each peer.

    References
    ----------
    Additive secret sharing over Z_2^k, e.g. Bogdanov, Laur, Willemson, "Sharemind", ESORICS 2008;
    batched opening as in CrypTen's ``reveal_batch`` (Knott et al., NeurIPS 2021).
    """
    return await _open(ctx, shares, xor=True)


async def open_mixed(
    ctx: PartyContext, add: Sequence[RingArray], xor: Sequence[RingArray]
) -> tuple[list[RingArray], list[RingArray]]:
    """Open additively shared and XOR-shared arrays together, in one round.

    Protocol
    --------
    One buffer per peer holds the additive shares followed by the XOR shares; the received
    buffers are summed (first part) and XOR-ed (second part).

    Security
    --------
    As :func:`open_many` and :func:`open_many_xor`.

    Cost
    ----
    1 round; ``8 * (sum of sizes)`` bytes to each peer.

    References
    ----------
    Batched opening as in CrypTen's ``reveal_batch`` (Knott et al., NeurIPS 2021).
    """
    shares = [*add, *xor]
    received = await ctx.exchange_ring(ctx.next_tag("open_mixed"), shares)
    out: list[RingArray] = []
    off = 0
    for i, a in enumerate(shares):
        op = np.add if i < len(add) else np.bitwise_xor
        acc = np.empty(a.shape, dtype=np.uint64)
        src = a
        for peer in received.values():
            op(src, peer[off : off + a.size].reshape(a.shape), out=acc)
            src = acc
        off += a.size
        out.append(acc)
    return out[: len(add)], out[len(add) :]


async def reveal(ctx: PartyContext, share: RingArray) -> RingArray:
    """Reconstruct a shared array at every party.

    Protocol
    --------
    Every party sends its share to every peer; each adds the n shares.

    Security
    --------
    The value becomes public to all parties; shares alone are uniformly random.

    Cost
    ----
    1 round; ``8 * N`` bytes to each peer.

    References
    ----------
    Additive secret sharing over Z_2^k, e.g. Bogdanov, Laur, Willemson, "Sharemind", ESORICS 2008;
    batched opening as in CrypTen's ``reveal_batch`` (Knott et al., NeurIPS 2021).
    """
    (value,) = await _open(ctx, [share], xor=False)
    return value


async def reveal_to(ctx: PartyContext, share: RingArray, party: int) -> RingArray | None:
    """Reconstruct a shared array at ``party`` only; the others get ``None``.

    Protocol
    --------
    Every other party sends its share to ``party``, which adds the n shares.

    Security
    --------
    Only ``party`` learns the value; the others learn nothing new.

    Cost
    ----
    1 round; ``8 * N`` bytes sent by each party other than ``party``.

    References
    ----------
    Additive secret sharing over Z_2^k, e.g. Bogdanov, Laur, Willemson, "Sharemind", ESORICS 2008;
    batched opening as in CrypTen's ``reveal_batch`` (Knott et al., NeurIPS 2021).
    """
    if not 0 <= party < ctx.n_parties:
        raise ProtocolError(f"reveal_to: no party {party} among {ctx.n_parties}")
    tag = ctx.next_tag("reveal_to")
    ctx.rounds += 1
    if ctx.party_id != party:
        await ctx.send_array(party, tag, share)
        return None
    total = share.copy()
    for p in ctx.peers:
        peer = await ctx.recv_array(p, tag)
        if peer.dtype != np.uint64 or peer.shape != share.shape:
            raise ProtocolError(f"party {ctx.party_id}: party {p} revealed another shape")
        total += peer
    return total


def _decode_header(msg: RingArray, frm: int) -> tuple[int, Shape, bytes]:
    if msg.dtype != np.uint64 or msg.ndim != 1 or msg.size < 2 + _SEED_WORDS:
        raise CodecError(f"malformed input header from party {frm}")
    kind, ndim = int(msg[0]), int(msg[1])
    if ndim > _MAX_NDIM or msg.size != 2 + ndim + _SEED_WORDS:
        raise CodecError(f"malformed input header from party {frm}")
    shape = tuple(int(d) for d in msg[2 : 2 + ndim])
    return kind, shape, msg[2 + ndim :].tobytes()


async def input_arrays(
    ctx: PartyContext, x: RingArray, kind: int = 0
) -> list[tuple[RingArray, int]]:
    """Secret-share every party's private array; each party learns only shapes (and ``kind``).

    Protocol
    --------
    1. Party i draws a fresh 128-bit seed ``s_ij`` per peer j from ``ctx.rng`` and sends j the
       message ``(kind, shape of x_i, s_ij)``: the header and the share travel together.
    2. Party j's share of ``x_i`` is ``AES-CTR(s_ij)`` expanded to that shape; party i keeps
       ``x_i - sum_j AES-CTR(s_ij)``.

    Security
    --------
    Semi-honest, any coalition of n-1 parties: the shares held by others are pseudo-random
    (AES-128 in counter mode), so they reveal nothing beyond the shape and the ``kind`` flag.

    Cost
    ----
    1 round; ``8 * (4 + ndim)`` bytes to each peer, independent of the array size.

    References
    ----------
    Pseudo-random share compression as in SPDZ input phases (Damgård et al., CRYPTO 2012).

    Returns
    -------
    list of (share, kind)
        This party's share of party i's input and i's ``kind`` flag, for every party i.
    """
    seeds = {p: new_seed(ctx.rng) for p in ctx.peers}
    head = np.array([kind, x.ndim, *x.shape], dtype=np.uint64)
    msgs = {
        p: np.concatenate([head, np.frombuffer(s, dtype="<u8").astype(np.uint64)])
        for p, s in seeds.items()
    }
    received = await ctx.exchange_each(ctx.next_tag("input"), msgs)
    own = x.copy()
    for s in seeds.values():
        own -= AesCtrPrg(s).ring_elements(x.shape)
    out: list[tuple[RingArray, int]] = []
    for i in range(ctx.n_parties):
        if i == ctx.party_id:
            out.append((own, kind))
            continue
        k, shape, seed = _decode_header(received[i], i)
        out.append((AesCtrPrg(seed).ring_elements(shape), k))
    return out


def _and_combine(d: RingArray, e: RingArray, t: TripleShare, party_id: int) -> RingArray:
    """In-place form of :func:`privcomp.core.beaver.and_combine` (two buffers, no temporaries)."""
    z = np.bitwise_and(d, t.b)
    tmp = np.bitwise_and(e, t.a)
    z ^= tmp
    z ^= t.c
    if party_id == 0:
        np.bitwise_and(d, e, out=tmp)
        z ^= tmp
    return z


async def and_many(
    ctx: PartyContext, pairs: Sequence[tuple[RingArray, RingArray]]
) -> list[RingArray]:
    """Bitwise AND of XOR-shared 64-bit words, several gates in one round.

    Protocol
    --------
    1. Take one boolean triple ``c = a & b`` covering all gates.
    2. Open ``d = x ^ a`` and ``e = y ^ b`` for every gate together.
    3. ``z = c ^ (d & b) ^ (e & a)`` (``^ d & e`` at party 0).

    Security
    --------
    Semi-honest; ``d`` and ``e`` are one-time-padded by the uniform ``a`` and ``b``.

    Cost
    ----
    1 round; ``16 * sum(sizes)`` bytes to each peer; 64 AND gates per word.

    References
    ----------
    Beaver, CRYPTO 1991.
    """
    total = sum(int(x.size) for x, _ in pairs)
    t = await ctx.triples.and_triples(ctx, (total,))
    xs = _pack_xor([x for x, _ in pairs], t.a)
    ys = _pack_xor([y for _, y in pairs], t.b)
    d, e = await open_many_xor(ctx, [xs, ys])
    z = _and_combine(d, e, t, ctx.party_id)
    return _unpack(z, [x for x, _ in pairs])


@runtime_checkable
class FanAndSource(Protocol):
    """A source that also deals AND triples whose ``a`` is shared by ``fan`` gates."""

    async def and_fan_triples(self, ctx: PartyContext, shape: Shape, fan: int) -> TripleShare:
        """``a`` of ``shape``; ``b``, ``c`` of ``(fan, *shape)`` with ``c[k] = a & b[k]``."""
        ...


#: Storage dtype of a field of each width (explicitly little-endian: the packed words are the
#: same on every machine).
FIELD_DTYPES: dict[int, str] = {32: "<u4", 16: "<u2", 8: "u1", 4: "u1", 2: "u1", 1: "u1"}


def pack_fields(values: npt.NDArray[Any], width: int) -> RingArray:
    """Pack ``width``-bit values (1, 2, 4, 8, 16 or 32) into ``uint64`` words, ``64 / width``
    per word, zero-padded.

    Linear over XOR (a fixed placement of bits), hence valid on XOR shares: the packed words of
    the shares are shares of the packed words.
    """
    per_word = 64 // width
    n = values.size
    words = -(-n // per_word)
    if width >= 8:
        buf = np.zeros(words * per_word, dtype=FIELD_DTYPES[width])
        buf[:n] = values.reshape(-1)
        return np.asarray(buf.view("<u8"), dtype=np.uint64)
    if width == 1:
        packed = np.packbits(values.reshape(-1).astype(np.uint8), bitorder="little")
    else:
        per_byte = 8 // width
        grid = np.zeros((words * 8, per_byte), dtype=np.uint8)
        grid.reshape(-1)[:n] = values.reshape(-1)
        packed = grid[:, 0].copy()
        for j in range(1, per_byte):
            packed |= grid[:, j] << np.uint8(width * j)
    buf = np.zeros(words * 8, dtype=np.uint8)
    buf[: packed.size] = packed
    return np.asarray(buf.view("<u8"), dtype=np.uint64)


def unpack_fields(words: RingArray, width: int, n: int) -> npt.NDArray[Any]:
    """Inverse of :func:`pack_fields`: the first ``n`` fields, as ``FIELD_DTYPES[width]``."""
    raw = np.ascontiguousarray(words, dtype="<u8")
    if width >= 8:
        return raw.view(FIELD_DTYPES[width])[:n]
    data = raw.view(np.uint8)
    if width == 1:
        return np.unpackbits(data, bitorder="little")[:n]
    per_byte = 8 // width
    out = np.empty((data.size, per_byte), dtype=np.uint8)
    low = np.uint8((1 << width) - 1)
    for j in range(per_byte):
        np.right_shift(data, np.uint8(width * j), out=out[:, j])
        out[:, j] &= low
    return out.reshape(-1)[:n]


@dataclass(slots=True)
class AndBatch:
    """AND gates ``x & y_k`` prepared for opening (see :func:`and_begin`)."""

    triple: TripleShare
    opens: list[RingArray]
    fan: int
    shared: bool


async def and_begin(ctx: PartyContext, x: RingArray, ys: Sequence[RingArray]) -> AndBatch:
    """Take triples for the gates ``x & y_k`` (flat word arrays) and mask the inputs.

    If the source deals fan triples (:class:`FanAndSource`), the gates share one mask of ``x``
    and ``len(ys) + 1`` arrays are opened instead of ``2 * len(ys)``; otherwise every gate takes
    its own triple. Open :attr:`AndBatch.opens` with XOR, then call :func:`and_finish`.
    """
    fan = len(ys)
    src = ctx.triples
    if isinstance(src, FanAndSource) and fan > 1:
        t = await src.and_fan_triples(ctx, x.shape, fan)
        opens = [x ^ t.a, *(y ^ t.b[k] for k, y in enumerate(ys))]
        return AndBatch(t, opens, fan, shared=True)
    t = await ctx.triples.and_triples(ctx, (fan * x.size,))
    xs = np.tile(x.reshape(-1), fan)
    xs ^= t.a
    return AndBatch(t, [xs, _pack_xor(ys, t.b)], fan, shared=False)


def and_finish(ctx: PartyContext, batch: AndBatch, opened: Sequence[RingArray]) -> list[RingArray]:
    """XOR shares of ``x & y_k`` from the opened masks of :func:`and_begin`."""
    t, fan = batch.triple, batch.fan
    if not batch.shared:
        d, e = opened
        z = _and_combine(d, e, t, ctx.party_id)
        return list(z.reshape(fan, -1))
    d, es = opened[0], opened[1:]
    out = []
    for k, e in enumerate(es):
        out.append(_and_combine(d, e, TripleShare(t.a, t.b[k], t.c[k]), ctx.party_id))
    return out


async def and_fan(ctx: PartyContext, x: RingArray, ys: Sequence[RingArray]) -> list[RingArray]:
    """XOR shares of ``x & y`` for every ``y`` in ``ys`` (flat word arrays), in one round.

    Protocol
    --------
    Beaver AND gates (:func:`and_many`); with a :class:`FanAndSource` the gates share the
    mask ``a`` of their common operand ``x``: open ``x ^ a`` once and ``y_k ^ b_k`` per gate.

    Security
    --------
    Semi-honest; every opened word is one-time-padded by a uniform word. Reusing ``a`` across
    gates with the same ``x`` opens ``x ^ a`` once, which is exactly what one gate opens.

    Cost
    ----
    1 round; ``8 * (k + 1) * N`` bytes to each peer with fan triples, ``16 * k * N`` without.

    References
    ----------
    Beaver, CRYPTO 1991; one mask reused across the products of a common operand, as in the
    matrix triples of Mohassel and Zhang, "SecureML", IEEE S&P 2017.
    """
    batch = await and_begin(ctx, x, ys)
    return and_finish(ctx, batch, await open_many_xor(ctx, batch.opens))


def and_public(x: RingArray, c: RingArray) -> RingArray:
    """XOR share of ``x & c`` for a public word ``c`` (local)."""
    return x & c


def xor_public(ctx: PartyContext, x: RingArray, c: RingArray) -> RingArray:
    """XOR share of ``x ^ c`` for a public word ``c`` (party 0 applies it; local)."""
    return x ^ c if ctx.party_id == 0 else x


async def b2a_bit(ctx: PartyContext, t: RingArray) -> RingArray:
    """Convert XOR-shared bits (bit 0 of each word) into additive shares of 0/1 in Z_2^64.

    Protocol
    --------
    1. Take a daBit ``s`` (shared both ways); open ``v = (t ^ s) & 1``, packed 64 per word.
    2. ``[t] = v + [s] - 2 v [s]`` (linear because ``v`` is public).

    Security
    --------
    ``v`` is one-time-padded by the uniform bit ``s``; higher bits of ``t`` are cleared first,
    so nothing but the padded bit is opened.

    Cost
    ----
    1 round; ``8 * ceil(N / 64)`` bytes to each peer.

    References
    ----------
    Rotaru, Wood, "MArBled Circuits", INDOCRYPT 2019 (daBits); Escudero et al., CRYPTO 2020.
    """
    s = await ctx.triples.dabits(ctx, t.shape)
    v = (t ^ s.b_xor) & _ONE
    (v_open,) = await open_many_xor(ctx, [pack_fields(v, 1)])  # only bit 0 travels
    v = unpack_fields(v_open, 1, t.size).astype(np.uint64).reshape(t.shape)
    return bit_from_xor_and_dabit(v, s, ctx.party_id)


__all__ = [
    "FIELD_DTYPES",
    "AndBatch",
    "FanAndSource",
    "and_begin",
    "and_fan",
    "and_finish",
    "and_many",
    "and_public",
    "b2a_bit",
    "input_arrays",
    "open_many",
    "open_many_xor",
    "open_mixed",
    "pack_fields",
    "reveal",
    "reveal_to",
    "unpack_fields",
    "xor_public",
]
