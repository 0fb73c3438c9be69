"""Exact joint quantiles, min and max by bisection on secret-shared counts (layer: protocols).

The r-th order statistic of the pooled column is the smallest float64 ``v`` with
``#{x <= v} >= r + 1``. Floats are mapped to order-preserving int64 *keys*, and the parties
bisect the key range: at every probe ``t`` each party counts its own values ``<= t``
(``searchsorted`` on its locally sorted keys), the local counts form an additive sharing of the
pooled count, and a secure comparison (:func:`privcomp.protocols.comparison.lt`) reveals only
the bit ``[count < r + 1]``. 64 probes pin the exact order statistic — a value from the data —
and the quantile is interpolated like numpy/pandas (``method="linear"``).

Leakage: the revealed bits are a function of the order statistic found (``bit = [t < v]``), so
the job reveals the pooled non-missing count of each column and the one or two order statistics
around each requested quantile (``x_(floor(h))`` and ``x_(floor(h)+1)``, ``h = (n-1) q``) — not
the counts at the probed thresholds. Min and max are single records' values: a party's policy
must allow ``min``/``max``/``quantile`` for them to be released.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privcomp.protocols.comparison import lt
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import reveal
from privcomp.protocols.stats import secure_sum_floats
from privcomp.protocols.stats_job import LocalRows
from privcomp.types import FloatArray, IntArray

_MAG = np.int64(2**63 - 1)


def float_keys(x: FloatArray) -> IntArray:
    """Order-preserving int64 keys of float64 values (-0.0 and 0.0 share the key 0).

    Negative floats have their 63 magnitude bits flipped, so keys compare like the values.
    """
    bits = (np.asarray(x, dtype=np.float64) + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
    return bits ^ ((bits >> np.int64(63)) & _MAG)


def keys_to_floats(keys: IntArray) -> FloatArray:
    """Inverse of :func:`float_keys` (the mapping is an involution on the bit patterns)."""
    k = np.asarray(keys, dtype=np.int64)
    return (k ^ ((k >> np.int64(63)) & _MAG)).view(np.float64)


def sorted_keys(x: FloatArray) -> IntArray:
    """:func:`float_keys` of ``sort(x)``, computed in place on the sorted copy (fast path)."""
    s = np.sort(x)
    s += 0.0  # -0.0 -> 0.0; sorted order is kept because -0.0 == 0.0
    bits = s.view(np.int64)
    sign = bits >> np.int64(63)
    sign &= _MAG
    bits ^= sign
    return bits


#: Keys of -inf and +inf: every non-NaN value lies in between.
KEY_MIN = int(float_keys(np.array([-np.inf]))[0])
KEY_MAX = int(float_keys(np.array([np.inf]))[0])


@dataclass(slots=True)
class QuantileRelease:
    """Released quantiles: ``values[i, j]`` is quantile ``qs[i]`` of column ``j``."""

    count: FloatArray  #: (m,) pooled non-missing values per column
    values: FloatArray  #: (len(qs), m)


def _rank_plan(counts: FloatArray, qs: Sequence[float]) -> list[tuple[int, int]]:
    """Distinct (column, rank) order statistics that numpy's linear method needs."""
    plan: set[tuple[int, int]] = set()
    for j, n in enumerate(counts.astype(np.int64).tolist()):
        if n == 0:
            continue
        for q in qs:
            h = (n - 1) * q
            lo = min(max(math.floor(h), 0), n - 1)
            plan |= {(j, lo), (j, min(lo + 1, n - 1))}
    return sorted(plan)


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp, operation for operation, so results match pandas bit for bit.
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


async def order_statistics(
    ctx: PartyContext, sorted_keys: Sequence[IntArray], plan: Sequence[tuple[int, int]]
) -> list[int]:
    """Keys of the pooled order statistics ``plan = [(column, rank), ...]`` (0-based ranks).

    Protocol
    --------
    Bisection on ``[KEY_MIN, KEY_MAX]`` for all items at once, 64 iterations: each party
    counts its keys ``<= mid`` per item; party 0 subtracts ``rank + 1``; the shared differences
    go through :func:`~privcomp.protocols.comparison.lt` against 0 and only the resulting bits
    are revealed; ``lo = mid + 1`` where the bit is 1 (too few), else ``hi = mid``.

    Security
    --------
    Semi-honest, any n-1 colluding parties (as :func:`lt`). The local counts are inputs to a
    secure comparison whose opened values are padded by edaBits; only the decision bits are
    revealed, and they are determined by the output keys.

    Cost
    ----
    64 x (8 + 1) rounds; ~200 bytes per item and probe to each peer.
    """
    lo = [KEY_MIN] * len(plan)
    hi = [KEY_MAX] * len(plan)
    target = np.array([rank + 1 for _, rank in plan], dtype=np.uint64)
    while any(a < b for a, b in zip(lo, hi, strict=True)):
        mid = [a + (b - a) // 2 for a, b in zip(lo, hi, strict=True)]
        local = np.array(
            [
                np.searchsorted(sorted_keys[j], m, side="right")
                for (j, _), m in zip(plan, mid, strict=True)
            ],
            dtype=np.uint64,
        )
        if ctx.party_id == 0:
            local = local - target
        below = await reveal(ctx, await lt(ctx, local, np.zeros_like(local)))
        for i, bit in enumerate(below.tolist()):
            if lo[i] < hi[i]:
                if bit:
                    lo[i] = mid[i] + 1
                else:
                    hi[i] = mid[i]
    return lo


async def horizontal_quantiles(
    ctx: PartyContext, rows: LocalRows, columns: Sequence[str], qs: Sequence[float]
) -> QuantileRelease:
    """Exact pooled quantiles (numpy/pandas ``linear`` method) of each column.

    Protocol
    --------
    1. Secure-sum the non-missing counts per column (wide ring, 2 rounds).
    2. :func:`order_statistics` for the ranks ``floor(h)`` and ``floor(h) + 1``,
       ``h = (n - 1) q``.
    3. Interpolate locally like numpy's ``_lerp``.

    Security
    --------
    Reveals the pooled counts and the order statistics around each quantile (see the module
    docstring); nothing else.

    Cost
    ----
    2 + 64 x 9 rounds whatever the number of columns and quantiles.
    """
    keys = []
    counts = np.zeros(len(columns))
    for j, c in enumerate(columns):
        x = rows.values[c]
        nan = np.isnan(x)
        if nan.any():
            x = x[~nan]
        # Sorting the floats (SIMD) then mapping keeps the keys sorted: the map is monotone.
        keys.append(sorted_keys(x))
        counts[j] = x.size
    total = await secure_sum_floats(ctx, counts, what="count")
    plan = _rank_plan(total, qs)
    found = dict(
        zip(
            plan,
            keys_to_floats(
                np.array(await order_statistics(ctx, keys, plan), dtype=np.int64)
            ).tolist(),
            strict=True,
        )
    )
    values = np.full((len(qs), len(columns)), np.nan)
    for j, n in enumerate(total.astype(np.int64).tolist()):
        if n == 0:
            continue
        for i, q in enumerate(qs):
            h = (n - 1) * q
            lo = min(max(math.floor(h), 0), n - 1)
            hi = min(lo + 1, n - 1)
            values[i, j] = _lerp(found[(j, lo)], found[(j, hi)], h - math.floor(h))
    return QuantileRelease(total, values)
