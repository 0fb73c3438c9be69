"""Aggregation: local sums of shares, and the secure sum of all parties' inputs.

Layer: protocols.
"""

from __future__ import annotations

from privcomp.core.ring import ring_sum
from privcomp.errors import ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import input_arrays, reveal
from privcomp.types import RingArray


def sum_shares(x: RingArray, axis: int | None = None) -> RingArray:
    """Share of the sum of a shared array's elements along ``axis`` (local; 0 rounds)."""
    return ring_sum(x, axis=axis)


async def secure_sum(ctx: PartyContext, x: RingArray) -> RingArray:
    """Sum of every party's private ring array, revealed to all; nothing else is learnt.

    Protocol
    --------
    1. :func:`privcomp.protocols.primitives.input_arrays` (seed-compressed sharing; 1 round).
    2. Each party adds its n shares locally.
    3. Open the sum (1 round).

    Security
    --------
    Semi-honest, any n-1 colluding parties learn only the sum (and the common shape).

    Cost
    ----
    2 rounds; ``8 * (4 + ndim) + 8 * N`` bytes to each peer.

    References
    ----------
    Additive secret sharing, e.g. Bogdanov, Laur, Willemson, "Sharemind", ESORICS 2008.
    """
    shares = await input_arrays(ctx, x)
    total = shares[0][0].copy()
    for i, (s, _) in enumerate(shares[1:], start=1):
        if s.shape != total.shape:
            raise ProtocolError(
                f"secure_sum: party {i} contributed shape {s.shape}, not {total.shape}"
            )
        total += s
    return await reveal(ctx, total)
