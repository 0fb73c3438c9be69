"""Revealed signs of small secret-shared integers, material fetched in bulk (layer: protocols).

The quantile bisection (:mod:`privcomp.protocols.stats_quantile`) compares shared *count
differences* with zero, and a count difference lies in ``[-N, N)`` for the public pooled count
``N``. A comparison on such ``k``-bit values (``2^(k-1) >= N``) needs ``k`` daBits and about
``2k`` AND gates, against one 64-bit edaBit (64 daBits) and 11 AND *words* (704 gates) for the
general :func:`privcomp.protocols.comparison.lt`. That matters with the default HE-generated
material, where every daBit and AND gate costs Paillier work (``benchmarks/results_stats.md``).

All the material a bisection will use is fetched in two calls before it starts (one ``dabits``
and one ``and_triples`` call), so the HE source amortises its per-call costs, and every gate
draws single bit-triples from a flat pool (an AND-triple word is 64 independent bit triples), so
no triple bit is wasted on a half-filled word.

References
----------
* D. Escudero, S. Ghosh, M. Keller, R. Rachuri, P. Scholl, "Improved Primitives for MPC over
  Mixed Arithmetic-Binary Circuits", CRYPTO 2020 (edaBits of length ``k`` for ``k``-bit
  comparisons).
* O. Catrina, S. de Hoogh, "Improved Primitives for Secure Multiparty Integer Computation",
  SCN 2010 (comparison of bounded integers by masking and a bitwise less-than).
* R. P. Brent, H. T. Kung, "A Regular Layout for Parallel Adders", IEEE Trans. Computers, 1982
  (carry tree with ``2k`` gates and ``log2 k`` depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privcomp.core.beaver import TripleShare, and_combine
from privcomp.errors import ConfigurationError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import open_many, open_many_xor
from privcomp.types import RingArray

_ONE = np.uint64(1)
_WORD = 64
_POS = np.arange(_WORD, dtype=np.uint64)


def gates_per_value(width: int) -> int:
    """AND gates of the borrow tree over ``width`` bits (``G`` for every pair, ``P`` but the
    lowest group's, which is never used)."""
    groups, gates = width, 0
    while groups > 1:
        pairs = groups // 2
        gates += 2 * pairs - 1
        groups -= pairs
    return gates


def width_for(bound: int) -> int:
    """Bits ``k`` such that every integer in ``[-bound, bound)`` lies in ``[-2^(k-1), 2^(k-1))``."""
    if bound < 0:
        raise ConfigurationError("the bound of a comparison must be non-negative")
    return max(bound.bit_length(), 1) + 1


def _unpack(words: RingArray) -> RingArray:
    return np.asarray(((words[:, None] >> _POS) & _ONE).reshape(-1), dtype=np.uint64)


def _pack(bits: RingArray) -> RingArray:
    pad = (-bits.size) % _WORD
    full = np.concatenate([bits, np.zeros(pad, dtype=np.uint64)]).reshape(-1, _WORD)
    return np.asarray(np.bitwise_or.reduce(full << _POS, axis=1), dtype=np.uint64)


@dataclass(slots=True)
class SignMaterial:
    """One party's preprocessing for sign tests of ``width``-bit values, used front to back."""

    width: int
    r: RingArray  #: (values,) additive shares of ``r < 2^width``
    r_bits: RingArray  #: (values, width) XOR shares (0/1) of the bits of ``r``
    triples: TripleShare  #: flat XOR-shared bit triples (0/1 entries)
    used_values: int = 0
    used_bits: int = 0


async def sign_material(ctx: PartyContext, values: int, width: int) -> SignMaterial:
    """Fetch (all parties, SPMD) the daBits and AND-triple bits of ``values`` sign tests.

    Protocol
    --------
    1. ``values x width`` daBits; ``r = Σ_j 2^j b_j`` (additive) and the XOR bits, local.
    2. AND triples, packed 64 gates a word, unpacked to one bit per gate.

    Security
    --------
    As ``ctx.triples``; every element is used once (:class:`SignMaterial` is consumed front
    to back and refuses to run past its end).

    Cost
    ----
    One ``dabits`` call of ``values * width`` bits and one ``and_triples`` call of
    ``ceil(values * gates_per_value(width - 1) / 64)`` words from ``ctx.triples``.

    References
    ----------
    Rotaru, Wood, "MArBled Circuits", INDOCRYPT 2019 (daBits); Beaver, CRYPTO 1991.
    """
    if width < 2 or width > 62:
        raise ConfigurationError(f"comparison width must lie in [2, 62], got {width}")
    dab = await ctx.triples.dabits(ctx, (values, width))
    weights = np.uint64(1) << np.arange(width, dtype=np.uint64)
    r = np.asarray(np.sum(dab.b * weights, axis=-1, dtype=np.uint64), dtype=np.uint64)
    need = values * gates_per_value(width - 1)
    t = await ctx.triples.and_triples(ctx, (max(1, -(-need // _WORD)),))
    bits = TripleShare(a=_unpack(t.a), b=_unpack(t.b), c=_unpack(t.c))
    return SignMaterial(width, r, np.asarray(dab.b_xor & _ONE, dtype=np.uint64), bits)


async def _and_bits(
    ctx: PartyContext, mat: SignMaterial, xs: list[RingArray], ys: list[RingArray]
) -> list[RingArray]:
    """XOR shares of ``x & y`` for 0/1 XOR-shared arrays, one round, bits from the pool."""
    x = np.concatenate([v.reshape(-1) for v in xs])
    y = np.concatenate([v.reshape(-1) for v in ys])
    lo, hi = mat.used_bits, mat.used_bits + x.size
    if hi > mat.triples.a.size:
        raise ProtocolError("sign-test material exhausted (the parties' plans differ)")
    mat.used_bits = hi
    t = TripleShare(a=mat.triples.a[lo:hi], b=mat.triples.b[lo:hi], c=mat.triples.c[lo:hi])
    d_words, e_words = await open_many_xor(ctx, [_pack(x ^ t.a), _pack(y ^ t.b)])
    z = and_combine(_unpack(d_words)[: x.size], _unpack(e_words)[: x.size], t, ctx.party_id)
    out, off = [], 0
    for v in xs:
        out.append(z[off : off + v.size].reshape(v.shape))
        off += v.size
    return out


async def _borrow(ctx: PartyContext, mat: SignMaterial, g: RingArray, p: RingArray) -> RingArray:
    """XOR share of the borrow out of the top column, from generate/propagate bits (m, w)."""
    while g.shape[1] > 1:
        q = g.shape[1] // 2
        lo_g, hi_g = g[:, 0 : 2 * q : 2], g[:, 1 : 2 * q : 2]
        lo_p, hi_p = p[:, 0 : 2 * q : 2], p[:, 1 : 2 * q : 2]
        # The lowest group's propagate bit is never used: skip its gate.
        zg, zp = await _and_bits(ctx, mat, [hi_p, hi_p[:, 1:]], [lo_g, lo_p[:, 1:]])
        new_g = hi_g ^ zg
        new_p = np.concatenate([np.zeros((g.shape[0], 1), dtype=np.uint64), zp], axis=1)
        if g.shape[1] % 2:
            new_g = np.concatenate([new_g, g[:, -1:]], axis=1)
            new_p = np.concatenate([new_p, p[:, -1:]], axis=1)
        g, p = new_g, new_p
    return np.asarray(g[:, 0], dtype=np.uint64)


async def reveal_negative(ctx: PartyContext, a: RingArray, mat: SignMaterial) -> RingArray:
    """Reveal ``[a < 0]`` (0/1 per element) for shared ``a`` known to lie in
    ``[-2^(k-1), 2^(k-1))``, ``k = mat.width``.

    Protocol
    --------
    1. ``u = a + 2^(k-1)`` lies in ``[0, 2^k)``; with a fresh ``r = sum_j 2^j b_j`` from ``k``
       daBits, open ``c = (u + r) mod 2^k`` (each party sends its share shifted to the top
       ``k`` bits, so only the low ``k`` bits of the sum are revealed; 1 round).
    2. ``u = (c - r) mod 2^k``, so ``u_(k-1) = c_(k-1) XOR r_(k-1) XOR [c_low < r_low]`` on the
       low ``w = k - 1`` bits. The borrow is a carry tree on XOR-shared bits: generate
       ``g = ~c & r`` and propagate ``p = ~(c XOR r)`` per bit (local, ``c`` public), then pairs
       of groups merge as ``(G_hi ^ P_hi G_lo, P_hi P_lo)``, ``ceil(log2 w)`` rounds of AND
       gates.
    3. ``[a < 0] = NOT u_(k-1)``: XOR the shares and open that bit only (1 round).

    Security
    --------
    Semi-honest, any ``n - 1`` colluding parties: ``c`` is uniform because ``r`` is uniform in
    ``[0, 2^k)`` and fresh; the AND openings are one-time-padded by fresh bit triples; the only
    other opened value is the output bit. The bound on ``a`` is the caller's duty (a value
    outside it gives a wrong bit, never a leak).

    Cost
    ----
    ``ceil(log2(k - 1)) + 2`` rounds; per element ``k`` daBits, ``gates_per_value(k - 1)``
    (about ``2k``) bit-ANDs; ``16 + gates / 4`` bytes to each peer.

    References
    ----------
    Catrina and de Hoogh, SCN 2010; Escudero et al., CRYPTO 2020; Brent and Kung, 1982.
    """
    k = mat.width
    if a.ndim != 1:
        raise ConfigurationError("sign tests take a 1-d array")
    lo, hi = mat.used_values, mat.used_values + a.size
    if hi > mat.r.size:
        raise ProtocolError("sign-test material exhausted (the parties' plans differ)")
    mat.used_values = hi
    top = np.uint64(_WORD - k)
    u = a + np.uint64(1 << (k - 1)) if ctx.party_id == 0 else a
    (c_top,) = await open_many(ctx, [np.asarray((u + mat.r[lo:hi]) << top, dtype=np.uint64)])
    c = c_top >> top
    c_bits = (c[:, None] >> np.arange(k, dtype=np.uint64)) & _ONE
    r_bits = mat.r_bits[lo:hi]
    w = k - 1
    nc = c_bits[:, :w] ^ _ONE
    g = nc & r_bits[:, :w]
    p = r_bits[:, :w] ^ nc if ctx.party_id == 0 else r_bits[:, :w].copy()
    t = r_bits[:, w] ^ await _borrow(ctx, mat, g, p)
    if ctx.party_id == 0:
        t ^= c_bits[:, w] ^ _ONE
    (bits,) = await open_many_xor(ctx, [np.asarray(t, dtype=np.uint64)])
    return bits
