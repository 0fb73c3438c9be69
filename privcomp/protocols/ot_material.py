"""AND triples, daBits and Beaver triples from IKNP OT extension (layer: protocols).

Used by :class:`~privcomp.protocols.he_triples.PaillierTripleSource` (the default, no third
party): same outputs and semantics as its Paillier-OLE methods, measured 60 (triples) to
2,000 (daBits) times faster. Every pair of parties ``i < j`` runs one OT extension of
:mod:`privcomp.protocols.ot` with ``i`` as sender and ``j`` as receiver; the receiver's choice
bits are its own secret bits, and the sender turns each random OT into a *correlated* OT with
one correction message (Asharov et al.): with hashes ``h0, h1`` at the sender and ``h_c`` at the
receiver (choice ``c``), the sender's correlation ``x`` is sent as ``d = h0 - h1 + x``; then
``-h0`` and ``h_c + c d`` are additive shares of ``c x`` (mod 2^64; over GF(2): ``h0`` and
``h_c xor c d`` with ``d = h0 xor h1 xor x``).

Protocol
--------
* ``and_triples`` (64-bit words): party ``p`` samples ``a_p, b_p``; for a pair ``i < j`` the
  receiver's choice vector is ``(bits b_j, bits a_j)`` and the sender's correlations
  ``(bits a_i, bits b_i)``, giving XOR shares of ``a_i b_j`` and ``b_i a_j``:
  ``c_p = a_p b_p xor (all its pair shares)``. 2 rounds, 128 bit-OTs per word and pair.
* daBits: party ``k`` holds a private bit ``x_k`` (its XOR share). The additive sharing of
  ``x_0 xor ... xor x_k`` is folded along the chain of parties with ``v xor x = v + x - 2 v x``,
  where ``v`` is additively shared by parties ``< k`` and ``x_k`` is the choice bit of party
  ``k``: ``v x_k = sum_{i<k} v_i x_k``, one correlated OT over Z_2^64 per pair (Gilboa's
  product with a 1-bit multiplier). The extension round for every pair comes first (the choices
  are known up front), then one correction round per chain step: ``1 + (n - 1)`` rounds.
* ``mul_triples`` (Gilboa): ``a_i b_j = sum_l b_j[l] (2^l a_i)``, 64 correlated OTs over Z_2^64
  per product, receiver's choices the bits of ``(b_j, a_j)``. 2 rounds, 128 OTs per element
  and pair.

Security
--------
Semi-honest, dishonest majority, no third party. A party sees only OT-extension matrices (which
hide the receiver's bits, see :mod:`privcomp.protocols.ot`) and corrections ``h0 - h1 + x``
masked by the hash value ``h_(1 - c)`` it cannot compute. Fresh randomness from ``ctx.rng`` at
every call; OT tweaks and PRG streams never repeat.

Cost (per pair of parties)
--------------------------
AND word: 128 OTs, 2,048 + 16 bytes. daBit: 1 OT, 16 + 8 bytes. Beaver triple: 128 OTs,
2,048 + 1,024 bytes. Calls above :data:`MAX_BATCH_OTS` OTs per pair run in chunks (the rounds
above per chunk) to bound memory. Measured rates: ``benchmarks/results_he_triples.md``.

References
----------
* N. Gilboa, "Two Party RSA Key Generation", CRYPTO 1999.
* G. Asharov, Y. Lindell, T. Schneider, M. Zohner, "More Efficient Oblivious Transfer and
  Extensions for Faster Secure Computation", CCS 2013 (correlated OT, Boolean triples).
* M. Keller, E. Orsini, P. Scholl, "MASCOT: Faster Malicious Arithmetic Secure Computation with
  Oblivious Transfer", CCS 2016 (Gilboa products from correlated OT).
* D. Rotaru, T. Wood, "MArBled Circuits", INDOCRYPT 2019 (daBits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from privcomp.core.beaver import DaBitShare, TripleShare
from privcomp.protocols.context import PartyContext
from privcomp.protocols.ot import (
    OtExtension,
    PendingOts,
    Reservation,
    pack_choice_bits,
    recv_words,
    unpack_choice_bits,
)
from privcomp.types import RingArray, Shape

#: OTs per pair in one batch: a larger call runs in chunks (memory ~100 bytes per OT and end).
MAX_BATCH_OTS = 1 << 19
_WORD = 64
_ONE = np.uint64(1)
_TWO = np.uint64(2)

Exts = Mapping[int, OtExtension]


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Elements ``lo:hi`` of a call, with their tags and OT ranges (one per peer)."""

    lo: int
    hi: int
    tag_ext: str
    fixes: list[str]
    res: dict[int, Reservation]


def _plan(
    ctx: PartyContext, exts: Exts, n: int, ots_per_item: int, label: str, fixes: int
) -> list[_Chunk]:
    """Every tag and OT range of one call, taken at its start (synchronously, before any await).

    Reservations follow the tags, so every party pairs the same OT ranges with the same tags even
    when several calls run concurrently; chunks then run one after the other.
    """
    per = max(1, MAX_BATCH_OTS // ots_per_item)
    chunks = []
    for lo in range(0, n, per):
        hi = min(n, lo + per)
        ctx.rounds += 1 + fixes
        tag_ext = ctx.next_tag("ot-ext")
        tags = [ctx.next_tag(label) for _ in range(fixes)]
        res = {p: ext.reserve((hi - lo) * ots_per_item) for p, ext in exts.items()}
        chunks.append(_Chunk(lo, hi, tag_ext, tags, res))
    return chunks


async def _extend(
    ctx: PartyContext, exts: Exts, chunk: _Chunk, choices: RingArray
) -> dict[int, Any]:
    """One extension round with every peer: ``(h0, h1)`` as sender, ``h`` as receiver."""
    pending: dict[int, PendingOts] = {
        p: ext.begin_send(chunk.res[p])
        if ext.is_sender
        else ext.begin_receive(choices, chunk.res[p])
        for p, ext in exts.items()
    }
    jobs = [
        exts[p].finish_send(ctx, chunk.tag_ext, pend)
        if exts[p].is_sender
        else exts[p].finish_receive(ctx, chunk.tag_ext, pend)
        for p, pend in pending.items()
    ]
    return dict(zip(pending, await asyncio.gather(*jobs), strict=True))


def _low_bit_words(h: RingArray) -> RingArray:
    return pack_choice_bits(h[:, 0] & _ONE)


async def and_triples(ctx: PartyContext, exts: Exts, shape: Shape) -> TripleShare:
    """XOR-shared triples ``c = a & b`` on 64-bit words (2 rounds per chunk)."""
    return await _triples(ctx, exts, shape, boolean=True)


async def _triples(ctx: PartyContext, exts: Exts, shape: Shape, *, boolean: bool) -> TripleShare:
    """AND (``boolean``) or Beaver triples: own product plus the chunked cross terms."""
    shape = tuple(int(s) for s in shape)
    a = ctx.rng.ring_elements(shape)
    b = ctx.rng.ring_elements(shape)
    c = np.asarray(a & b if boolean else a * b, dtype=np.uint64).reshape(-1)
    a_flat, b_flat = a.reshape(-1), b.reshape(-1)
    label = "ot-and-fix" if boolean else "ot-mul-fix"
    for ch in _plan(ctx, exts, c.size, 2 * _WORD, label, 1):
        part = a_flat[ch.lo : ch.hi], b_flat[ch.lo : ch.hi]
        if boolean:
            c[ch.lo : ch.hi] ^= await _and_chunk(ctx, exts, ch, *part)
        else:
            c[ch.lo : ch.hi] += await _mul_chunk(ctx, exts, ch, *part)
    return TripleShare(a=a, b=b, c=c.reshape(shape))


async def _and_chunk(
    ctx: PartyContext, exts: Exts, ch: _Chunk, a: RingArray, b: RingArray
) -> RingArray:
    """XOR share of ``sum_{p != q} a_p & b_q`` for one chunk of words."""
    n = a.size
    out = np.zeros(n, dtype=np.uint64)
    ab = np.concatenate([a, b])  # sender's correlations
    ba = np.concatenate([b, a])  # receiver's choices
    hashes = await _extend(ctx, exts, ch, ba)
    sends = []
    for p, ext in exts.items():
        if ext.is_sender:
            h0, h1 = (_low_bit_words(h) for h in hashes[p])
            sends.append(ctx.send_array(p, ch.fixes[0], h0 ^ h1 ^ ab))
            out ^= h0[:n] ^ h0[n:]
    await asyncio.gather(*sends)
    for p, ext in exts.items():
        if not ext.is_sender:
            fix = await recv_words(ctx, p, ch.fixes[0], (2 * n,), "AND-triple correction")
            mine = _low_bit_words(hashes[p]) ^ (ba & fix)
            out ^= mine[:n] ^ mine[n:]
    return out


async def shared_random_bits(ctx: PartyContext, exts: Exts, shape: Shape) -> DaBitShare:
    """daBits: a random bit shared additively mod 2^64 and by XOR (``n`` rounds per chunk)."""
    shape = tuple(int(s) for s in shape)
    own = np.asarray(ctx.rng.ring_elements(shape) & _ONE, dtype=np.uint64).reshape(-1)
    value = own.copy()  # additive share of the XOR of the chain so far (once this party is in)
    for ch in _plan(ctx, exts, own.size, 1, "ot-dabit-fix", ctx.n_parties - 1):
        value[ch.lo : ch.hi] = await _dabit_chunk(ctx, exts, ch, own[ch.lo : ch.hi])
    return DaBitShare(b=value.reshape(shape), b_xor=own.reshape(shape))


async def _dabit_chunk(ctx: PartyContext, exts: Exts, ch: _Chunk, own: RingArray) -> RingArray:
    """Fold ``x_0 xor ... xor x_(n-1)`` along the chain of parties for one chunk of bits."""
    n = own.size
    value = own.copy()
    hashes = await _extend(ctx, exts, ch, pack_choice_bits(own))
    me = ctx.party_id
    for k, tag in enumerate(ch.fixes, start=1):
        if me < k:
            h0 = hashes[k][0][:, 0]
            # Correlation: this party's share of the chain's XOR so far; product share -h0.
            await ctx.send_array(k, tag, np.asarray(h0 - hashes[k][1][:, 0] + value))
            value = np.asarray(value + _TWO * h0, dtype=np.uint64)
        elif me == k:
            prod = np.zeros(n, dtype=np.uint64)
            for i in range(k):
                fix = await recv_words(ctx, i, tag, (n,), "daBit correction")
                prod += hashes[i][:, 0] + own * fix
            value = np.asarray(own - _TWO * prod, dtype=np.uint64)
    return value


def _sum_words(values: RingArray, n: int) -> RingArray:
    """Sum every 64 consecutive entries (the 64 bit-products of one element), mod 2^64."""
    return np.asarray(np.sum(values.reshape(2 * n, _WORD), axis=1, dtype=np.uint64))


async def mul_triples(ctx: PartyContext, exts: Exts, shape: Shape) -> TripleShare:
    """Elementwise Beaver triples ``c = a * b`` mod 2^64 by Gilboa products (2 rounds a chunk)."""
    return await _triples(ctx, exts, shape, boolean=False)


async def _mul_chunk(
    ctx: PartyContext, exts: Exts, ch: _Chunk, a: RingArray, b: RingArray
) -> RingArray:
    """Additive share of ``sum_{p != q} a_p b_q`` for one chunk of elements."""
    n = a.size
    out = np.zeros(n, dtype=np.uint64)
    ab = np.concatenate([a, b])
    ba = np.concatenate([b, a])
    hashes = await _extend(ctx, exts, ch, ba)
    sends = []
    for p, ext in exts.items():
        if ext.is_sender:
            h0, h1 = hashes[p][0][:, 0], hashes[p][1][:, 0]
            deltas = (ab[:, None] << np.arange(_WORD, dtype=np.uint64)).reshape(-1)
            sends.append(ctx.send_array(p, ch.fixes[0], np.asarray(h0 - h1 + deltas)))
            part = _sum_words(np.asarray(np.uint64(0) - h0, dtype=np.uint64), n)
            out += part[:n] + part[n:]
    await asyncio.gather(*sends)
    m = 2 * n * _WORD
    bits = unpack_choice_bits(ba, m)
    for p, ext in exts.items():
        if not ext.is_sender:
            fix = await recv_words(ctx, p, ch.fixes[0], (m,), "triple correction")
            mine = np.asarray(hashes[p][:, 0] + bits * fix, dtype=np.uint64)
            part = _sum_words(mine, n)
            out += part[:n] + part[n:]
    return out


__all__ = ["and_triples", "mul_triples", "shared_random_bits"]
