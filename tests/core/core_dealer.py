"""Test-only trusted dealer for the core algebra tests (not library code, not collected).

It makes the correlated randomness a dealer party would: Beaver triples, boolean triples,
truncation pairs and daBits, additively (or XOR-) shared among ``n`` parties.
"""

from __future__ import annotations

import numpy as np

from privcomp.core.beaver import (
    DaBitShare,
    TripleShare,
    TruncPairShare,
    beaver_combine,
    beaver_masks,
    trunc_combine,
    trunc_mask,
)
from privcomp.core.ring import ring_matmul
from privcomp.core.rng import RandomSource
from privcomp.core.sharing import reconstruct, share, share_xor
from privcomp.types import RingArray

MASK63 = np.uint64((1 << 63) - 1)


def u64(x: object) -> RingArray:
    """Keep 0-d results arrays (numpy returns scalars from 0-d arithmetic)."""
    return np.asarray(x, dtype=np.uint64)


def mul_triples(shape: tuple[int, ...], n: int, rng: RandomSource) -> list[TripleShare]:
    a, b = rng.ring_elements(shape), rng.ring_elements(shape)
    sa, sb, sc = share(a, n, rng), share(b, n, rng), share(u64(a * b), n, rng)
    return [TripleShare(sa[i], sb[i], sc[i]) for i in range(n)]


def matmul_triples(
    a_shape: tuple[int, int], b_shape: tuple[int, int], n: int, rng: RandomSource
) -> list[TripleShare]:
    a, b = rng.ring_elements(a_shape), rng.ring_elements(b_shape)
    sa, sb, sc = share(a, n, rng), share(b, n, rng), share(ring_matmul(a, b), n, rng)
    return [TripleShare(sa[i], sb[i], sc[i]) for i in range(n)]


def and_triples(shape: tuple[int, ...], n: int, rng: RandomSource) -> list[TripleShare]:
    a, b = rng.ring_elements(shape), rng.ring_elements(shape)
    sa, sb, sc = share_xor(a, n, rng), share_xor(b, n, rng), share_xor(u64(a & b), n, rng)
    return [TripleShare(sa[i], sb[i], sc[i]) for i in range(n)]


def trunc_pairs(
    shape: tuple[int, ...], frac_bits: int, n: int, rng: RandomSource
) -> list[TruncPairShare]:
    r = rng.ring_elements(shape)
    msb = u64(r >> np.uint64(63))
    low_shifted = u64((r & MASK63) >> np.uint64(frac_bits))
    sr, sm, sl = share(r, n, rng), share(msb, n, rng), share(low_shifted, n, rng)
    return [TruncPairShare(sr[i], sm[i], sl[i], frac_bits) for i in range(n)]


def dabits(shape: tuple[int, ...], n: int, rng: RandomSource) -> list[DaBitShare]:
    bits = u64(rng.ring_elements(shape) & np.uint64(1))
    sb, sx = share(bits, n, rng), share_xor(bits, n, rng)
    return [DaBitShare(sb[i], sx[i]) for i in range(n)]


def beaver_multiply(
    xs: list[RingArray], ys: list[RingArray], triples: list[TripleShare]
) -> list[RingArray]:
    """Run the Beaver algebra for all parties, with the openings done by plain reconstruction."""
    masks = [beaver_masks(x, y, t) for x, y, t in zip(xs, ys, triples, strict=True)]
    d = reconstruct([m[0] for m in masks])
    e = reconstruct([m[1] for m in masks])
    return [beaver_combine(d, e, t, i) for i, t in enumerate(triples)]


def truncate(xs: list[RingArray], pairs: list[TruncPairShare]) -> list[RingArray]:
    """Run the truncation algebra for all parties (the opening is plain reconstruction)."""
    c = reconstruct([trunc_mask(x, p, i) for i, (x, p) in enumerate(zip(xs, pairs, strict=True))])
    return [trunc_combine(c, p, i) for i, p in enumerate(pairs)]
