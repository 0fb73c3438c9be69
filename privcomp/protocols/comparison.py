"""Secure comparison on additive shares: MSB, less-than, equality, max/min, ReLU, sign.

Layer: protocols.

The core is :func:`msb`: mask ``a`` with an edaBit ``r`` (held additively *and* as XOR-shared
bits), open ``c = a + r``, and use ``MSB(a) = c_63 XOR r_63 XOR [c_low < r_low]``. The borrow
``[c_low < r_low]`` (63-bit values, ``c`` public, ``r`` XOR-shared) is a carry-lookahead prefix
circuit evaluated bit-sliced on packed 64-bit words: every element is one word, generate
``g = ~c & r`` and propagate ``p = ~(c XOR r)`` are local, and each of the 6 Kogge-Stone levels
(shift distances 1, 2, 4, ..., 32) costs one round of word-wide AND gates. The result bit is
converted to an additive share with a daBit.

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
"""

from __future__ import annotations

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.protocols.arithmetic import mul
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import and_many, b2a_bit, open_many
from privcomp.types import RingArray

_ONE = np.uint64(1)
_LEVELS = (1, 2, 4, 8, 16, 32)


async def msb(ctx: PartyContext, a: RingArray) -> RingArray:
    """Additive share of the most significant bit of shared ``a`` (``[a < 0]`` read signed).

    Protocol
    --------
    1. Take an edaBit ``r``; open ``c = a + r`` (1 round).
    2. Locally: ``g = ~c & r``, ``p = ~c XOR r`` (XOR-shared words; public ``~c`` at party 0).
    3. Kogge-Stone on words, d = 1, 2, ..., 32: ``g ^= p & (g << d)``, ``p &= p << d``
       (the two ANDs of a level share one round; the last level needs only ``g``), 6 rounds.
       Bit 62 of ``g`` is then the borrow ``[c_low < r_low]``.
    4. ``t = (c_63 ^ r_63 ^ g_62) & 1``; B2A with a daBit (1 round).

    Security
    --------
    Semi-honest, any n-1 colluding parties: ``c`` is padded by the uniform ``r``; AND gates and
    the B2A opening are padded by fresh triples and daBits. Only bit 0 is ever opened in B2A.

    Cost
    ----
    8 rounds; per element ``8 + 16*(2*5 + 1) + 8 = 192`` bytes to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020; Kogge and Stone, 1973.
    """
    eb = await ctx.triples.edabits(ctx, a.shape)
    (c,) = await open_many(ctx, [a + eb.r])
    nc = np.invert(c)
    g = nc & eb.r_bits
    p = eb.r_bits ^ nc if ctx.party_id == 0 else eb.r_bits.copy()
    for d in _LEVELS:
        sh = np.uint64(d)
        if d < _LEVELS[-1]:
            g2, p = await and_many(ctx, [(p, g << sh), (p, p << sh)])
        else:
            (g2,) = await and_many(ctx, [(p, g << sh)])
        g ^= g2
    t = (g >> np.uint64(62)) ^ (eb.r_bits >> np.uint64(63))
    if ctx.party_id == 0:
        t ^= c >> np.uint64(63)
    return await b2a_bit(ctx, t & _ONE)


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
    8 rounds; 192 bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    return await msb(ctx, x - y)


async def eq(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Additive share of ``[x == y]``.

    Protocol
    --------
    1. Take an edaBit ``r``; open ``c = (x - y) + r`` (1 round). ``x == y`` iff ``c == r``.
    2. ``z = ~c XOR r`` (XOR-shared; all 64 bits are 1 iff equal).
    3. AND tree inside the word: ``z &= z >> d`` for d = 32, 16, ..., 1 (6 rounds).
    4. B2A of bit 0 with a daBit (1 round).

    Security
    --------
    As :func:`msb`.

    Cost
    ----
    8 rounds; per element ``8 + 16*6 + 8 = 112`` bytes to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    if x.shape != y.shape:
        raise ConfigurationError(f"eq: shapes {x.shape} and {y.shape} differ")
    eb = await ctx.triples.edabits(ctx, x.shape)
    (c,) = await open_many(ctx, [x - y + eb.r])
    z = eb.r_bits ^ np.invert(c) if ctx.party_id == 0 else eb.r_bits
    for d in reversed(_LEVELS):
        (z,) = await and_many(ctx, [(z, z >> np.uint64(d))])
    return await b2a_bit(ctx, z & _ONE)


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
    9 rounds; ``192 + 16`` bytes per element to each peer.

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
    9 rounds; ``192 + 16`` bytes per element to each peer.

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
    9 rounds; ``192 + 16`` bytes per element to each peer.

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
    8 rounds; 384 bytes per element to each peer.

    References
    ----------
    Escudero et al., CRYPTO 2020.
    """
    flat = x.reshape(-1)
    bits = await msb(ctx, np.concatenate([flat, np.negative(flat)]))
    n = flat.size
    return (bits[n:] - bits[:n]).reshape(x.shape)
