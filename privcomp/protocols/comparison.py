"""Secure comparison on additive shares: MSB, less-than, equality, max/min, ReLU, sign.

Layer: protocols.

The core is :func:`msb`: mask ``a`` with an edaBit ``r`` (held additively *and* as XOR-shared
bits), open ``c = a + r``, and use ``MSB(a) = c_63 XOR r_63 XOR [c_low < r_low]``. The borrow
``[c_low < r_low]`` (63-bit values, ``c`` public, ``r`` XOR-shared) is a carry-lookahead tree
over (generate, propagate) pairs, ``g = ~c & r`` and ``p = ~(c XOR r)``, evaluated only for the
final position (Sklansky/Brent-Kung style) rather than for every prefix:

* the bits are permuted once (6-bit index reversal) so that each level combines the high and
  low halves of a field: 64 -> 32 -> 16 -> ... -> 1 bits, with no bit gathering afterwards;
* the first level is local, because ``r_hi & r_lo`` (independent of ``a``) is computed in the
  round that opens ``c``;
* each further level is one round of AND gates on fields packed ``64 / width`` per word, so
  the traffic halves at every level, and its two ANDs share the mask of their common operand
  when the triple source deals fan triples.

In total 7 rounds and 27.6 bytes per element to each peer, where a word-wide Kogge-Stone
circuit took 8 rounds and 192 bytes. :func:`eq` uses the same halving tree on ``~(c XOR r)``.

All results are additive shares of 0/1 (or -1/0/1 for :func:`sign`) as ring integers.
``x < y`` is computed as ``MSB(x - y)``, so it requires |x - y| < 2^63 (true for fixed-point
encodings, which are bounded by 2^62).

References
----------
* D. Escudero, S. Ghosh, M. Keller, R. Rachuri, P. Scholl, "Improved Primitives for MPC over
  Mixed Arithmetic-Binary Circuits", CRYPTO 2020 (edaBits, comparison by MSB extraction).
* P. M. Kogge, H. S. Stone, "A Parallel Algorithm for the Efficient Solution of a General Class
  of Recurrence Equations", IEEE Trans. Computers, 1973 (log-depth prefix circuit).
* D. Rotaru, T. Wood, "MArBled Circuits", INDOCRYPT 2019 (daBits for B2A).
* J. Sklansky, "Conditional-Sum Addition Logic", IRE Trans. Electronic Computers, 1960, and
  R. P. Brent, H. T. Kung, "A Regular Layout for Parallel Adders", IEEE Trans. Computers, 1982
  (prefix trees that evaluate only the needed positions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from privcomp.core.ring import delta_swaps
from privcomp.errors import ConfigurationError
from privcomp.protocols.arithmetic import mul
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import (
    FIELD_DTYPES,
    and_begin,
    and_fan,
    and_finish,
    b2a_bit,
    open_mixed,
    pack_fields,
    unpack_fields,
)
from privcomp.types import RingArray

_ONE = np.uint64(1)
_LOW63 = np.uint64((1 << 63) - 1)


def _swap_masks() -> list[tuple[np.uint64, np.uint64]]:
    """Delta swaps exchanging index bits (0, 5), (1, 4), (2, 3) of the 64 bit positions."""
    out = []
    for lo, hi in ((0, 5), (1, 4), (2, 3)):
        m = sum(1 << q for q in range(64) if (q >> lo) & 1 and not (q >> hi) & 1)
        out.append((np.uint64((1 << hi) - (1 << lo)), np.uint64(m)))
    return out


_SWAPS = _swap_masks()


def _bit_reverse_index(w: RingArray) -> RingArray:
    """Move bit ``i`` of every word to position ``rev6(i)`` (its 6-bit index reversed).

    Afterwards the tree's pairs of adjacent groups sit in the two halves of the word at every
    level: bits ``2i`` and ``2i + 1`` land in the low and high 32-bit halves at the same offset,
    and so on down to 1-bit halves. A bit permutation, so XOR-linear (valid on XOR shares).
    """
    return delta_swaps(w.copy(), _SWAPS)


def _halves(v: npt.NDArray[Any], width: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Low and high halves of ``width``-bit fields, as ``width / 2``-bit fields."""
    h = width // 2
    dtype = FIELD_DTYPES[h]
    low = (v & v.dtype.type((1 << h) - 1)).astype(dtype)
    high = (v >> v.dtype.type(h)).astype(dtype)
    return low, high


async def _and_fields(
    ctx: PartyContext, x: npt.NDArray[Any], ys: list[npt.NDArray[Any]], width: int
) -> list[npt.NDArray[Any]]:
    """XOR shares of ``x & y`` for ``width``-bit fields, packed ``64 / width`` per word."""
    zs = await and_fan(ctx, pack_fields(x, width), [pack_fields(y, width) for y in ys])
    return [unpack_fields(z, width, x.size) for z in zs]


async def msb(ctx: PartyContext, a: RingArray) -> RingArray:
    """Additive share of the most significant bit of shared ``a`` (``[a < 0]`` read signed).

    Protocol
    --------
    1. Take an edaBit ``r``; clear bit 63 of ``r`` and (later) of ``c`` so the prefix tree over
       64 bits yields the borrow of the low 63 bits (bit 63 then only propagates). Permute the
       bits (:func:`_bit_reverse_index`) so that every level combines the two halves of a field.
    2. In one round, open ``c = a + r`` and compute ``q = r_hi & r_lo`` (32-bit halves of the
       permuted ``r``, independent of ``a``) with AND gates.
    3. Locally (``c`` public, ``q`` known): generate ``g = ~c & r`` and propagate
       ``p = ~(c ^ r)``, and the first tree level ``G = g_hi ^ p_hi g_lo``,
       ``P = p_hi p_lo`` on 32-bit fields.
    4. Levels on 16-, 8-, 4-, 2- and 1-bit fields: ``G = G_hi ^ P_hi G_lo``, ``P = P_hi P_lo``,
       1 round each; the two ANDs share the mask of ``P_hi`` with fan triples, and the last
       level needs only ``G``. Fields are packed ``64 / width`` per word. ``G`` is then the
       borrow ``[c_low < r_low]``.
    5. ``t = c_63 ^ r_63 ^ G``; B2A with a daBit (1 round, 64 bits per opened word).

    Security
    --------
    Semi-honest, any n-1 colluding parties: ``c`` is padded by the uniform ``r``; every AND
    opening and the B2A opening are padded by fresh triples and daBits. The permutation,
    splitting and packing are local, public and XOR-linear; padding fields are zero.

    Cost
    ----
    7 rounds. Per element to each peer: 8 bytes (``c``) + 8 (``q``) + 90 / 120 bits (16- to
    2-bit levels, with / without fan triples) + 2 bits (last level) + 1 bit (B2A): 27.625 bytes
    (31.375 without fan triples), against 192 bytes for a word-wide Kogge-Stone circuit; plus
    a 14-byte codec header per round.

    References
    ----------
    Escudero et al., CRYPTO 2020; Kogge and Stone, 1973; Sklansky, 1960.
    """
    eb = await ctx.triples.edabits(ctx, a.shape)
    rb = eb.r_bits.reshape(-1)
    r_lo, r_hi = _halves(_bit_reverse_index(rb & _LOW63), 64)
    q_and = await and_begin(ctx, pack_fields(r_hi, 32), [pack_fields(r_lo, 32)])
    (c,), q_open = await open_mixed(ctx, [(a + eb.r).reshape(-1)], q_and.opens)
    (q_words,) = and_finish(ctx, q_and, q_open)
    q = unpack_fields(q_words, 32, rb.size)
    nc_lo, nc_hi = _halves(np.invert(_bit_reverse_index(c & _LOW63)), 64)
    t = (nc_hi & r_lo) ^ q  # = ~c_hi & r_lo ^ r_hi & r_lo
    big_g = (nc_hi & r_hi) ^ (nc_lo & t)  # g_hi ^ p_hi & g_lo
    big_p = t ^ (r_hi & nc_lo)  # p_hi & p_lo
    if ctx.party_id == 0:
        big_p ^= nc_hi & nc_lo
    width = 32
    while width > 1:
        g_lo, g_hi = _halves(big_g, width)
        p_lo, p_hi = _halves(big_p, width)
        width //= 2
        ys = [g_lo] if width == 1 else [g_lo, p_lo]
        zs = await _and_fields(ctx, p_hi, ys, width)
        big_g = g_hi ^ zs[0]
        if width > 1:
            big_p = zs[1]
    bit = big_g.astype(np.uint64) ^ (rb >> np.uint64(63))
    if ctx.party_id == 0:
        bit ^= c >> np.uint64(63)
    return (await b2a_bit(ctx, bit & _ONE)).reshape(a.shape)


async def lt(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Additive share of ``[x < y]`` (signed): ``MSB(x - y)``.

    Protocol
    --------
    :func:`msb` of the local difference ``x - y``.

    Security
    --------
    As :func:`msb`; requires |x - y| < 2^63.

    Cost
    ----
    7 rounds; 27.625 bytes per element to each peer (31.375 without fan triples).

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    return await msb(ctx, x - y)


async def eq(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Additive share of ``[x == y]``.

    Protocol
    --------
    1. Take an edaBit ``r``. In one round, open ``c = (x - y) + r`` and compute the XOR-shared
       ``q = r_hi & r_lo`` of its 32-bit halves. ``x == y`` iff ``c == r``.
    2. ``z = ~c XOR r`` (all 64 bits are 1 iff equal); ``z_hi & z_lo`` is local given ``q``
       (``c`` is public).
    3. AND tree ``z = z_hi & z_lo`` on 16-, 8-, 4-, 2- and 1-bit fields, packed ``64 / width``
       per word (5 rounds). The last field is the AND of all 64 bits.
    4. B2A with a daBit (1 round).

    Security
    --------
    As :func:`msb`.

    Cost
    ----
    7 rounds; per element to each peer 8 bytes (``c``) + 8 (``q``) + 62 bits + 1 bit: 23.875
    bytes, against 112 bytes for a word-wide AND tree.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    if x.shape != y.shape:
        raise ConfigurationError(f"eq: shapes {x.shape} and {y.shape} differ")
    eb = await ctx.triples.edabits(ctx, x.shape)
    r_lo, r_hi = _halves(eb.r_bits.reshape(-1), 64)
    q_and = await and_begin(ctx, pack_fields(r_hi, 32), [pack_fields(r_lo, 32)])
    (c,), q_open = await open_mixed(ctx, [(x - y + eb.r).reshape(-1)], q_and.opens)
    (q_words,) = and_finish(ctx, q_and, q_open)
    nc_lo, nc_hi = _halves(np.invert(c), 64)
    z = (nc_hi & r_lo) ^ (r_hi & nc_lo) ^ unpack_fields(q_words, 32, r_lo.size)
    if ctx.party_id == 0:
        z ^= nc_hi & nc_lo  # z = (~c ^ r)_hi & (~c ^ r)_lo
    width = 32
    while width > 1:
        z_lo, z_hi = _halves(z, width)
        width //= 2
        (z,) = await _and_fields(ctx, z_hi, [z_lo], width)
    return (await b2a_bit(ctx, z.astype(np.uint64))).reshape(x.shape)


async def maximum(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Elementwise maximum of two shared arrays.

    Protocol
    --------
    ``b = [x < y]`` (:func:`lt`), then ``max = x + b * (y - x)`` with one Beaver product.

    Security
    --------
    As :func:`lt` and :func:`privcomp.protocols.arithmetic.mul`.

    Cost
    ----
    8 rounds; ``27.625 + 16`` bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020; Beaver, CRYPTO 1991.
    """
    b = await lt(ctx, x, y)
    return x + await mul(ctx, b, y - x)


async def minimum(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Elementwise minimum of two shared arrays: ``y + [x < y] * (x - y)``.

    Protocol
    --------
    ``b = [x < y]`` (:func:`lt`), then ``min = y + b * (x - y)``.

    Security
    --------
    As :func:`maximum`.

    Cost
    ----
    8 rounds; ``27.625 + 16`` bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    b = await lt(ctx, x, y)
    return y + await mul(ctx, b, x - y)


async def relu(ctx: PartyContext, x: RingArray) -> RingArray:
    """Elementwise ``max(x, 0)``: ``x - MSB(x) * x``.

    Protocol
    --------
    ``b = MSB(x)`` (:func:`msb`), then ``relu = x - b * x`` with one Beaver product.

    Security
    --------
    As :func:`msb` and :func:`privcomp.protocols.arithmetic.mul`.

    Cost
    ----
    8 rounds; ``27.625 + 16`` bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    b = await msb(ctx, x)
    return x - await mul(ctx, b, x)


async def sign(ctx: PartyContext, x: RingArray) -> RingArray:
    """Elementwise sign in {-1, 0, 1} (as ring integers), like :func:`numpy.sign`.

    Protocol
    --------
    One :func:`msb` call on the concatenation ``[x, -x]`` gives ``[x < 0]`` and ``[x > 0]`` in
    the same rounds; ``sign = [x > 0] - [x < 0]`` locally.

    Security
    --------
    As :func:`msb`.

    Cost
    ----
    7 rounds; 55.25 bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    flat = x.reshape(-1)
    bits = await msb(ctx, np.concatenate([flat, np.negative(flat)]))
    n = flat.size
    return (bits[n:] - bits[:n]).reshape(x.shape)
