"""SPMD programs of joint statistics on PSI-joined rows (layer: protocols).

Same released figures and two-pass numerics as :func:`~privcomp.protocols.stats_job.
horizontal_moments`; what changes is where the columns live: one side's columns are
pre-aggregated by their owners, and left x right products go through
:func:`~privcomp.protocols.stats_vertical.cross_products`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from privcomp.core.ring128 import encode_scaled
from privcomp.errors import EncodingOverflowError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.cross_dealer import CrossMaskSource, masked_cross_totals
from privcomp.protocols.stats import Label, secure_sum_floats, union_labels
from privcomp.protocols.stats_job import SECOND_PASS_OPS, Moments, _remap, _safe_div
from privcomp.protocols.stats_local import first_pass, second_pass
from privcomp.protocols.stats_vertical import (
    CROSS_MAX_ABS,
    Alignment,
    VerticalRequest,
    _cross,
    _local_columns,
    owner_pairs,
)

#: Fixed-point bits so that a centred column's largest possible magnitude, sqrt(Σu²), is < 2^60.
_UNIT_BITS = 60


def _unit_bits(ssd: float) -> int:
    """Scale of a centred column: every |u| <= sqrt(ssd), so |u * 2^bits| < 2^60."""
    if not (math.isfinite(ssd) and ssd > 0):
        return 0
    return _UNIT_BITS - math.frexp(math.sqrt(ssd))[1]


async def _cross_totals(
    ctx: PartyContext,
    al: Alignment,
    req: VerticalRequest,
    left: np.ndarray,
    right: np.ndarray,
    bits: tuple[Sequence[int], Sequence[int]],
) -> np.ndarray:
    """``Σ_r left[r, a] right[r, b]``: dealer masks if the source deals them, else Paillier.

    ``bits`` are the public fixed-point scales of the left and right columns on the dealer
    path; they must keep ``|Σ| * 2^(bits_a + bits_b) < 2^127`` (the callers' bounds).
    """
    if not isinstance(ctx.triples, CrossMaskSource):
        return await _cross(ctx, al, req, left, right)
    n_left, n_right = left.shape[1], right.shape[1]
    if n_left == 0 or n_right == 0 or al.size == 0:
        return np.zeros((n_left, n_right))
    side = req.sides[ctx.party_id]
    mine, my_bits = (left, bits[0]) if side == 0 else (right, bits[1])
    words = np.zeros((2, mine.shape[0], mine.shape[1]), dtype=np.uint64)
    for j in range(mine.shape[1]):
        words[:, :, j] = encode_scaled(mine[:, j], my_bits[j], what="cross-party column")
    scale = np.add.outer(np.asarray(bits[0]), np.asarray(bits[1]))
    pairs = owner_pairs(al, ctx.party_id)
    return await masked_cross_totals(ctx, pairs, words, n_left, n_right, scale)


def _split(req: VerticalRequest) -> tuple[list[int], list[int]]:
    left = [j for j, s in enumerate(req.column_sides) if s == 0]
    right = [j for j, s in enumerate(req.column_sides) if s == 1]
    return left, right


async def vertical_moments(
    ctx: PartyContext, al: Alignment, own: dict[str, np.ndarray], req: VerticalRequest
) -> Moments:
    """count/sum/mean/var/std/cov/corr of the joined rows (complete columns for cov/corr).

    Protocol
    --------
    1. Pass 1 on this party's joined rows, its own columns (others count as missing):
       exact secure sum of counts and sums; reveal the means.
    2. Pass 2: centred sums of squares and same-side centred cross-products, secure-summed.
    3. For cov/corr: left x right centred cross-products per owner pair — Paillier-based OLE
       by default, dealer-masked exact inner products modulo 2^128 with an explicit dealer
       (:mod:`privcomp.protocols.cross_dealer`) — then one secure sum of the shares.

    Security
    --------
    As the horizontal program, plus :func:`cross_products` (semi-honest, no third party).
    The PSI before it reveals the joined-row count J and the intersection pattern.

    Cost
    ----
    4 rounds (2 secure sums) + 2 per owner pair per streamed block (~10^5 rows for 5 right
    columns; pipelined) + 2 for the cross sum; with a dealer, 1 round per owner pair.

    References
    ----------
    Paillier, EUROCRYPT 1999; Chan, Golub, LeVeque, The American Statistician 37(3), 1983
    (centred two-pass moments).
    """
    me_side = req.sides[ctx.party_id]
    m = len(req.columns)
    cols = _local_columns(own, req, me_side, al.my_rows)
    codes = np.zeros(al.my_rows.size, dtype=np.int64)
    fp = first_pass(cols, codes, 1)
    tot = await secure_sum_floats(
        ctx, np.concatenate([fp.count.ravel(), fp.total.ravel()]), what="pass-1 aggregate"
    )
    count, total = tot[:m].reshape(1, m), tot[m:].reshape(1, m)
    mean = _safe_div(total, count)
    out = Moments([], np.array([float(al.size)]), count, total, mean)
    if not req.ops & SECOND_PASS_OPS:
        return out
    ssd = second_pass(cols, codes, mean).ssd
    mine = [j for j, s in enumerate(req.column_sides) if s == me_side]
    same = np.zeros((m, m))
    centred = np.column_stack([cols[j] - mean[0, j] for j in mine]) if mine else None
    if centred is not None and centred.size:
        same[np.ix_(mine, mine)] = centred.T @ centred
    tot2 = await secure_sum_floats(
        ctx, np.concatenate([ssd.ravel(), same.ravel()]), what="pass-2 aggregate"
    )
    ssd_t, cross = tot2[:m].reshape(1, m), tot2[m:].reshape(m, m)
    out.var = _safe_div(ssd_t, count - req.ddof)
    if not req.ops & {"cov", "corr"}:
        return out
    left, right = _split(req)
    n = al.my_rows.size
    lvec = (
        np.column_stack([cols[j] - mean[0, j] for j in left])
        if me_side == 0 and left
        else np.zeros((n, len(left)))
    )
    rvec = (
        np.column_stack([cols[j] - mean[0, j] for j in right])
        if me_side == 1 and right
        else np.zeros((n, len(right)))
    )
    unit = [_unit_bits(float(v)) for v in ssd_t.ravel()]
    lr = await _cross_totals(
        ctx, al, req, lvec, rvec, ([unit[j] for j in left], [unit[j] for j in right])
    )
    cross[np.ix_(left, right)] = lr
    cross[np.ix_(right, left)] = lr.T
    out.cov = _safe_div(cross, np.full((m, m), float(al.size - req.ddof)))
    d = np.sqrt(np.diag(cross))
    out.corr = np.clip(_safe_div(cross, np.outer(d, d)), -1.0, 1.0)
    return out


async def vertical_grouped(
    ctx: PartyContext,
    al: Alignment,
    own: dict[str, np.ndarray],
    req: VerticalRequest,
    codes: np.ndarray,
    labels: Sequence[Label],
) -> Moments:
    """count/sum/mean per group of the joined rows; the key may sit on either side.

    ``codes`` (this party's joined rows, in joined order) and ``labels`` are used only by
    parties on ``req.by_side``. Group indicators x value columns of the other side are
    cross-party products (:func:`cross_products`); value columns on the key side are
    pre-aggregated locally. Columns on the other side than the key must be complete.

    Protocol
    --------
    1. :func:`~privcomp.protocols.stats.union_labels` of the key side's labels.
    2. Secure sum of row counts, counts and sums of the key side's columns per group.
    3. Group indicators x the other side's columns by :func:`cross_products`, one secure sum.

    Security
    --------
    As :func:`vertical_moments`; additionally the (policy-cleared) group labels are revealed.

    Cost
    ----
    1 round (labels) + 2 (secure sum) + cross products as in :func:`vertical_moments`.

    References
    ----------
    Paillier, EUROCRYPT 1999; Cramer, Damgård, Nielsen, 2015.
    """
    me_side = req.sides[ctx.party_id]
    key_side = req.by_side
    union = await union_labels(ctx, list(labels) if me_side == key_side else [])
    g, m = len(union), len(req.columns)
    my_codes = (
        _remap(codes, labels, union)
        if me_side == key_side
        else np.full(al.my_rows.size, -1, dtype=np.int64)
    )
    cols = _local_columns(own, req, me_side, al.my_rows)
    same = [j for j, s in enumerate(req.column_sides) if s == key_side]
    other = [j for j, s in enumerate(req.column_sides) if s != key_side]
    fp = first_pass([cols[j] for j in same], my_codes, g) if g else None
    rows = fp.rows if fp is not None else np.zeros(0)
    cnt = fp.count if fp is not None else np.zeros((0, len(same)))
    tot_same = fp.total if fp is not None else np.zeros((0, len(same)))
    vec = np.concatenate([rows, cnt.ravel(), tot_same.ravel()])
    tot = await secure_sum_floats(ctx, vec, what="group aggregate")
    rows_t = tot[:g]
    count = np.zeros((g, m))
    total = np.zeros((g, m))
    count[:, same] = tot[g : g + g * len(same)].reshape(g, len(same))
    total[:, same] = tot[g + g * len(same) :].reshape(g, len(same))
    n = al.my_rows.size
    ind = np.zeros((n, g))
    if me_side == key_side and g:
        ok = my_codes >= 0
        ind[np.flatnonzero(ok), my_codes[ok]] = 1.0
    vals = (
        np.column_stack([cols[j] for j in other])
        if other and me_side != key_side
        else np.zeros((n, len(other)))
    )
    if vals.size and not np.all(np.abs(vals) < CROSS_MAX_ABS):  # NaN fails too
        raise EncodingOverflowError(
            "grouped column across the join: values must be finite with |v| < 2^40",
            bound=CROSS_MAX_ABS,
        )
    # Indicators are exact at scale 1; values get as many bits as |Σ| < J 2^40 2^b < 2^126 allows.
    val_bits = [min(64, 85 - max(al.size, 1).bit_length())] * len(other)
    ind_bits = [0] * g
    lhs, rhs = (ind, vals) if key_side == 0 else (vals, ind)
    scales = (ind_bits, val_bits) if key_side == 0 else (val_bits, ind_bits)
    prod = await _cross_totals(ctx, al, req, lhs, rhs, scales)
    sums = prod if key_side == 0 else prod.T  # (g, len(other))
    total[:, other] = sums
    count[:, other] = rows_t[:, None]
    return Moments(list(union), rows_t, count, total, _safe_div(total, count))
