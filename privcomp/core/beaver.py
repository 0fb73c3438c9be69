"""Beaver-triple and truncation-pair algebra (layer: core): masking and combining, no messaging.

References
----------
* D. Beaver, "Efficient Multiparty Protocols Using Circuit Randomization", CRYPTO 1991.
* D. Escudero, S. Ghosh, M. Keller, R. Rachuri, P. Scholl, "Improved Primitives for MPC over
  Mixed Arithmetic-Binary Circuits", CRYPTO 2020, §5 (truncation with a shared MSB of the mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privcomp.core.ring import ring_matmul
from privcomp.types import RingArray

#: Offset that makes |x| < 2^62 non-negative and below 2^63 before the truncation mask is added.
TRUNC_OFFSET = np.uint64(1 << 62)
_HALF_BITS = 63


def _arr(x: object) -> RingArray:
    # Arithmetic on 0-d arrays returns numpy scalars, whose uint64 overflow warns (and is an
    # error under -W error); keeping every intermediate an array keeps the ring wraparound silent.
    return np.asarray(x, dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class TripleShare:
    """One party's share of a multiplication triple ``c = a * b`` (or ``a @ b``)."""

    a: RingArray
    b: RingArray
    c: RingArray


@dataclass(frozen=True, slots=True)
class TruncPairShare:
    """One party's share of a truncation pair for ``frac_bits`` bits.

    ``r`` is uniform in Z_2^64; ``r_msb`` is its top bit and ``r_low_shifted`` is
    ``(r mod 2^63) >> frac_bits``, all additively shared.
    """

    r: RingArray
    r_msb: RingArray
    r_low_shifted: RingArray
    frac_bits: int


def beaver_masks(x: RingArray, y: RingArray, t: TripleShare) -> tuple[RingArray, RingArray]:
    """Return this party's shares of ``d = x - a`` and ``e = y - b`` (to be opened)."""
    return _arr(x - t.a), _arr(y - t.b)


def beaver_combine(d: RingArray, e: RingArray, t: TripleShare, party_id: int) -> RingArray:
    """Share of ``x * y = c + d*b + e*a + d*e`` (the public ``d*e`` is added by party 0)."""
    z = _arr(d * t.b)  # a fresh array: the in-place adds below never meet two numpy scalars
    z += t.c
    z += e * t.a
    if party_id == 0:
        z += d * e
    return z


def beaver_matmul_combine(d: RingArray, e: RingArray, t: TripleShare, party_id: int) -> RingArray:
    """Share of ``x @ y = c + d@b + a@e + d@e`` for a matrix triple ``c = a @ b``."""
    z = _arr(t.c + ring_matmul(d, t.b) + ring_matmul(t.a, e))
    if party_id == 0:
        z += ring_matmul(d, e)
    return z


def and_combine(d: RingArray, e: RingArray, t: TripleShare, party_id: int) -> RingArray:
    """XOR-share of ``x & y`` from a boolean triple ``c = a & b`` with ``d = x^a``, ``e = y^b``."""
    z = _arr(t.c ^ (d & t.b) ^ (e & t.a))
    if party_id == 0:
        z ^= d & e
    return z


def trunc_mask(x: RingArray, pair: TruncPairShare, party_id: int) -> RingArray:
    """Share of ``c = x + 2^62 + r`` (opened; uniform because ``r`` is)."""
    c = _arr(x + pair.r)
    if party_id == 0:
        c += TRUNC_OFFSET
    return c


def trunc_combine(c: RingArray, pair: TruncPairShare, party_id: int) -> RingArray:
    """Share of ``x >> frac_bits`` (error at most one unit in the last place, never a wrap).

    With ``x' = x + 2^62 < 2^63`` and ``c = x' + r``: the carry into bit 63 of ``x' + r_low`` is
    ``b = c_63 XOR r_63``, and ``x' = c_low - r_low + b*2^63`` exactly, so
    ``x' >> f = (c_low >> f) - (r_low >> f) + b*2^(63-f) - {0 or 1}``. Correct whenever
    |x| < 2^62: the failure probability is zero, only the last bit is rounded.
    """
    f = pair.frac_bits
    c_msb = _arr(c >> np.uint64(_HALF_BITS))
    c_low = _arr(c & np.uint64((1 << _HALF_BITS) - 1))
    # b = c_msb XOR r_msb = c_msb + r_msb - 2*c_msb*r_msb, linear in the shared r_msb.
    b = _arr(pair.r_msb - np.uint64(2) * c_msb * pair.r_msb)
    z = _arr(b * np.uint64(1 << (_HALF_BITS - f)) - pair.r_low_shifted)
    if party_id == 0:
        z += c_msb * np.uint64(1 << (_HALF_BITS - f))
        z += c_low >> np.uint64(f)
        z -= np.uint64(1 << (62 - f))
    return z


@dataclass(frozen=True, slots=True)
class EdaBitShare:
    """One party's share of a random ``r`` held both ways (extended doubly-authenticated bits).

    ``r`` is an additive share of a uniform element of Z_2^64; ``r_bits`` is an XOR share of the
    same element's 64 bits packed into one ``uint64`` word per element.
    """

    r: RingArray
    r_bits: RingArray


@dataclass(frozen=True, slots=True)
class DaBitShare:
    """One party's share of a uniform random bit held both ways.

    ``b`` is an additive share over Z_2^64 of a bit in {0, 1}; ``b_xor`` is an XOR share of the
    same bit (in bit 0 of the word).
    """

    b: RingArray
    b_xor: RingArray


def bit_from_xor_and_dabit(v: RingArray, dabit: DaBitShare, party_id: int) -> RingArray:
    """Additive share of bit ``t`` given the opened ``v = t XOR s`` and a daBit ``s``.

    ``t = v + s - 2*v*s`` is linear in the shared ``s`` because ``v`` is public.
    """
    v = _arr(v & np.uint64(1))
    z = _arr(dabit.b - np.uint64(2) * v * dabit.b)
    if party_id == 0:
        z += v
    return z
