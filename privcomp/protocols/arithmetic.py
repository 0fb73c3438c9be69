"""Arithmetic on additive shares over Z_2^64: linear ops, Beaver products, truncation.

Layer: protocols.

Linear operations are local (0 rounds, 0 bytes). Products take one round with a Beaver triple;
fixed-point products add one truncation round with an Escudero-style truncation pair, whose
result is exact up to one unit in the last place and never wraps while |x| < 2^62.
"""

from __future__ import annotations

import numpy as np

from privcomp.core.beaver import (
    beaver_combine,
    beaver_masks,
    beaver_matmul_combine,
    trunc_combine,
    trunc_mask,
)
from privcomp.errors import ConfigurationError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import open_many
from privcomp.types import RingArray


def add(x: RingArray, y: RingArray) -> RingArray:
    """Share of ``x + y`` (local; 0 rounds)."""
    return x + y


def sub(x: RingArray, y: RingArray) -> RingArray:
    """Share of ``x - y`` (local; 0 rounds)."""
    return x - y


def neg(x: RingArray) -> RingArray:
    """Share of ``-x`` (local; 0 rounds)."""
    return np.negative(x)


def add_public(ctx: PartyContext, x: RingArray, c: RingArray) -> RingArray:
    """Share of ``x + c`` for a public ring array ``c``: party 0 adds it (local; 0 rounds)."""
    if ctx.party_id == 0:
        return x + c
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, c.shape)))


def scale(x: RingArray, k: RingArray) -> RingArray:
    """Share of ``k * x`` for a public ring integer ``k`` (every party scales; local)."""
    return x * k


async def mul(ctx: PartyContext, x: RingArray, y: RingArray) -> RingArray:
    """Elementwise product of two shared ring arrays of the same shape.

    Protocol
    --------
    1. Take a triple ``([a], [b], [c = a*b])`` of the shape.
    2. Open ``d = x - a`` and ``e = y - b`` together.
    3. ``[z] = [c] + d[b] + e[a]`` (+ ``d*e`` at party 0).

    Security
    --------
    Semi-honest, any n-1 colluding parties; ``d``, ``e`` are one-time-padded by ``a``, ``b``.

    Cost
    ----
    1 round; ``16 * N`` bytes to each peer.

    References
    ----------
    D. Beaver, "Efficient Multiparty Protocols Using Circuit Randomization", CRYPTO 1991.
    """
    if x.shape != y.shape:
        raise ConfigurationError(f"mul: shapes {x.shape} and {y.shape} differ")
    t = await ctx.triples.mul_triples(ctx, x.shape)
    d, e = await open_many(ctx, beaver_masks(x, y, t))
    return beaver_combine(d, e, t, ctx.party_id)


async def truncate(ctx: PartyContext, x: RingArray, frac_bits: int) -> RingArray:
    """Arithmetic right shift of a shared value by ``frac_bits`` (fixed-point rescaling).

    Protocol
    --------
    1. Take a truncation pair ``([r], [r_63], [(r mod 2^63) >> f])``.
    2. Open ``c = x + 2^62 + r``.
    3. Combine with :func:`privcomp.core.beaver.trunc_combine` (carry ``c_63 XOR r_63``).

    Security
    --------
    ``c`` is one-time-padded by the uniform ``r``. Requires |x| < 2^62 (fixed-point encodings
    are bounded by 2^62 at input); the result is off by at most one unit in the last place and
    fails with probability zero (no SecureML-style wrap-around error).

    Cost
    ----
    1 round; ``8 * N`` bytes to each peer.

    References
    ----------
    Escudero, Ghosh, Keller, Rachuri, Scholl, "Improved Primitives for MPC over Mixed
    Arithmetic-Binary Circuits", CRYPTO 2020, §5.
    """
    if frac_bits == 0:
        return x
    pair = await ctx.triples.trunc_pairs(ctx, x.shape, frac_bits)
    (c,) = await open_many(ctx, [trunc_mask(x, pair, ctx.party_id)])
    return trunc_combine(c, pair, ctx.party_id)


async def mul_fixed(ctx: PartyContext, x: RingArray, y: RingArray, frac_bits: int) -> RingArray:
    """Fixed-point product: Beaver product then truncation by ``frac_bits``.

    Protocol
    --------
    :func:`mul`, then :func:`truncate`.

    Security
    --------
    As :func:`mul` and :func:`truncate`; requires |x*y| < 2^(62 - 2f) in real terms.

    Cost
    ----
    2 rounds; ``24 * N`` bytes to each peer.

    References
    ----------
    Beaver, CRYPTO 1991; Escudero et al., CRYPTO 2020.
    """
    return await truncate(ctx, await mul(ctx, x, y), frac_bits)


async def matmul(ctx: PartyContext, x: RingArray, y: RingArray, *, frac_bits: int = 0) -> RingArray:
    """Matrix product ``x @ y`` of shared 2-D arrays, truncated by ``frac_bits`` if non-zero.

    Protocol
    --------
    1. Take a matrix triple ``[c] = [a] @ [b]`` with ``a`` shaped like ``x`` and ``b`` like ``y``.
    2. Open ``d = x - a`` and ``e = y - b`` together.
    3. ``[z] = [c] + d @ [b] + [a] @ e`` (+ ``d @ e`` at party 0).
    4. If ``frac_bits``: :func:`truncate`.

    Security
    --------
    As :func:`mul` and :func:`truncate`.

    Cost
    ----
    1 round (2 with truncation); ``8 * (x.size + y.size)`` bytes to each peer
    (+ ``8 * m * n`` with truncation).

    References
    ----------
    Beaver, CRYPTO 1991; Mohassel, Zhang, "SecureML", IEEE S&P 2017 (matrix triples).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
        raise ConfigurationError(f"matmul: shapes {x.shape} and {y.shape} do not align")
    t = await ctx.triples.matmul_triples(ctx, (x.shape[0], x.shape[1]), (y.shape[0], y.shape[1]))
    d, e = await open_many(ctx, beaver_masks(x, y, t))
    z = beaver_matmul_combine(d, e, t, ctx.party_id)
    return await truncate(ctx, z, frac_bits)


async def dot(ctx: PartyContext, x: RingArray, y: RingArray, *, frac_bits: int = 0) -> RingArray:
    """Inner product of two shared 1-D arrays (0-d result), truncated by ``frac_bits`` if set.

    Protocol
    --------
    :func:`matmul` of ``x`` as a 1 x N row and ``y`` as an N x 1 column.

    Security
    --------
    As :func:`matmul`.

    Cost
    ----
    1 round (2 with truncation); ``16 * N`` bytes to each peer (+ 8 with truncation).

    References
    ----------
    Beaver, CRYPTO 1991.
    """
    if x.ndim != 1 or x.shape != y.shape:
        raise ConfigurationError(
            f"dot: needs two 1-D arrays of equal length, got {x.shape}, {y.shape}"
        )
    z = await matmul(ctx, x.reshape(1, -1), y.reshape(-1, 1), frac_bits=frac_bits)
    return z.reshape(())
