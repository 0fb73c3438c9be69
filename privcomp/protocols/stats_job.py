"""SPMD programs of horizontal joint statistics (layer: protocols).

Every party runs the same ``async`` program on its own rows; only secure sums of the local
pre-aggregates (:mod:`privcomp.protocols.stats_local`) cross party lines, through the wide-ring
secure sum of :mod:`privcomp.protocols.stats`. A whole request — counts, sums, means,
variances, covariances and correlations, per group — is one job with a fixed round count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from privcomp.errors import ProtocolAbort
from privcomp.protocols.context import PartyContext
from privcomp.protocols.stats import Label, agree, secure_sum_floats, union_labels
from privcomp.protocols.stats_local import FirstPass, SecondPass, first_pass, second_pass
from privcomp.types import FloatArray, IntArray

T = TypeVar("T")

#: Operations whose result needs the second (centred) pass.
SECOND_PASS_OPS = frozenset({"var", "std", "cov", "corr"})
#: Operations on column pairs (ungrouped only).
PAIR_OPS = frozenset({"cov", "corr"})


@dataclass(frozen=True, slots=True)
class MomentsRequest:
    """The public part of a moments job: identical at every party.

    Parameters
    ----------
    columns:
        Numeric columns.
    ops:
        Subset of ``count, sum, mean, var, std, cov, corr`` (rows per group are always counted).
    grouped:
        Whether rows are split by a group key.
    exchange_labels:
        Whether group labels must be merged across parties (False when they are public, e.g.
        histogram bins).
    ddof:
        Delta degrees of freedom of var/std/cov (pandas' default 1).
    """

    columns: tuple[str, ...]
    ops: frozenset[str]
    grouped: bool = False
    exchange_labels: bool = True
    ddof: int = 1


@dataclass(slots=True)
class LocalRows:
    """One party's rows for a job, after its own filter.

    ``codes[i]`` is the index of row i's group in ``labels`` (-1: no group, e.g. a missing key);
    ungrouped jobs use ``codes = zeros`` and ``labels = []``.
    """

    values: dict[str, FloatArray]
    codes: IntArray
    labels: list[Label] = field(default_factory=list)


@dataclass(slots=True)
class Moments:
    """Released moments (identical at every party)."""

    labels: list[Label]
    rows: FloatArray  #: (G,)
    count: FloatArray  #: (G, m)
    total: FloatArray  #: (G, m)
    mean: FloatArray  #: (G, m)
    var: FloatArray | None = None  #: (G, m)
    cov: FloatArray | None = None  #: (m, m)
    corr: FloatArray | None = None  #: (m, m)


async def with_consent(
    ctx: PartyContext, check: Callable[[], None], program: Callable[[], Awaitable[T]]
) -> T:
    """Run ``check`` (this party's policy), agree with every peer, then run ``program``.

    Protocol
    --------
    One round of :func:`~privcomp.protocols.stats.agree`: each party sends 0 (its policy
    allows the job) or 1 (it refuses). If any party refuses, every party stops before any
    data-dependent message is sent: the refusing party raises its own policy error, the
    others :class:`ProtocolAbort` naming it.

    Security
    --------
    Reveals one bit per party (whether its policy refused), which the refusal reveals anyway.

    Cost
    ----
    1 round; ``8 (n-1)`` bytes per party, then the cost of ``program``.

    References
    ----------
    None: a broadcast of public status codes before the protocol proper.
    """
    error: Exception | None = None
    try:
        check()
    except Exception as exc:  # any failure of the local check is this party's refusal
        error = exc
    codes = await agree(ctx, 0 if error is None else 1)
    if error is not None:
        raise error
    refusing = [p for p, c in enumerate(codes) if c]
    if refusing:
        raise ProtocolAbort(refusing[0], "its policy refused the job")
    return await program()


def _remap(codes: IntArray, local: Sequence[Label], union: Sequence[Label]) -> IntArray:
    pos = {lab: i for i, lab in enumerate(union)}
    table = np.array([pos[lab] for lab in local] + [-1], dtype=np.int64)
    # codes == -1 picks the trailing -1 of the lookup table.
    return table[codes]


def _safe_div(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


async def horizontal_moments(ctx: PartyContext, rows: LocalRows, req: MomentsRequest) -> Moments:
    """Joint count/sum/mean/var/std/cov/corr (per group) over the stacked rows of all parties.

    Protocol
    --------
    1. (grouped, labels private) Exchange the group labels; map local groups to the union.
    2. Pre-aggregate locally (pass 1) and secure-sum exactly in Z_2^256: rows, counts and sums
       per group and column (+ pairwise-complete counts and sums for cov/corr). Reveal means.
    3. If var/std/cov/corr were asked: pre-aggregate the squared (cross-)deviations from the
       pooled means locally (pass 2) and secure-sum them the same way.
    4. Divide: mean = sum/n, var = ssd/(n - ddof), cov = cross/(n_jk - ddof),
       corr = cross/sqrt(ssd_j ssd_k) over pairwise-complete rows (pandas' definitions).

    Security
    --------
    Semi-honest, any n-1 colluding parties. Each party's rows and its own pre-aggregates stay
    hidden; the totals of steps 2 and 3 are revealed to the parties. Those totals determine
    the released figures and, besides, the pooled counts and means (which var/std/cov/corr
    need as an intermediate, as the textbook one-round Σx, Σx² method would reveal too).

    Cost
    ----
    2 secure sums (4 rounds) with var/std/cov/corr, 1 (2 rounds) otherwise, +1 round for
    labels; ``O(G m + m²)`` ring elements of 32 bytes per party and round.

    References
    ----------
    T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for Computing the Sample Variance", 1983.
    """
    codes, labels = rows.codes, rows.labels
    if req.grouped and req.exchange_labels:
        labels = await union_labels(ctx, rows.labels)
        codes = _remap(rows.codes, rows.labels, labels)
    n_groups = len(labels) if req.grouped else 1
    cols = [np.asarray(rows.values[c], dtype=np.float64) for c in req.columns]
    m = len(cols)
    pairs = bool(req.ops & PAIR_OPS) and not req.grouped and m > 0
    local1 = first_pass(cols, codes, n_groups, pairs=pairs)
    tot1 = FirstPass.from_flat(
        await secure_sum_floats(ctx, local1.flat(), what="pass-1 aggregate"), n_groups, m, pairs
    )
    mean = _safe_div(tot1.total, tot1.count)
    out = Moments(labels, tot1.rows, tot1.count, tot1.total, mean)
    if not (req.ops & SECOND_PASS_OPS) or m == 0:
        return out
    pair_mean = None
    if pairs and tot1.pair_sum is not None and tot1.pair_count is not None:
        pair_mean = _safe_div(tot1.pair_sum, tot1.pair_count)
    local2 = second_pass(cols, codes, mean, pair_mean=pair_mean)
    tot2 = SecondPass.from_flat(
        await secure_sum_floats(ctx, local2.flat(), what="pass-2 aggregate"), n_groups, m, pairs
    )
    out.var = _safe_div(tot2.ssd, tot1.count - req.ddof)
    if pairs and tot2.cross is not None and tot2.ssd_pair is not None:
        if tot1.pair_count is not None:
            out.cov = _safe_div(tot2.cross, tot1.pair_count - req.ddof)
        with np.errstate(invalid="ignore"):
            den = np.sqrt(tot2.ssd_pair * tot2.ssd_pair.T)
        out.corr = np.clip(_safe_div(tot2.cross, den), -1.0, 1.0)
    return out
