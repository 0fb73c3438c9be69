"""A party's side of a job on a vertical (PSI) join: two consent points, its own checks.

1. Before PSI: the party checks the columns and operations of *its own* dataset against its
   policy (plus the ``join`` operation) and agrees with the others.
2. PSI aligns the rows; then the party checks its joined record set and, if it holds the group
   key, its groups (k-threshold, differencing), and agrees again before any statistic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from privcomp.errors import ConfigurationError, EncodingOverflowError, PolicyViolation
from privcomp.policy.guard import Cell, DisclosureGuard
from privcomp.policy.join_cache import JoinCache, fingerprint
from privcomp.policy.query import Query
from privcomp.protocols.context import PartyContext
from privcomp.protocols.stats import Label
from privcomp.protocols.stats_job import Moments, with_consent
from privcomp.protocols.stats_psi import psi_tags
from privcomp.protocols.stats_vertical import CROSS_MAX_ABS, Alignment, VerticalRequest, align
from privcomp.protocols.stats_vertical_job import vertical_grouped, vertical_moments


def _key(v: Any) -> str:
    item = v.item() if isinstance(v, np.generic) else v
    if isinstance(item, float) and item.is_integer():
        return str(int(item))  # 17 and 17.0 are the same key
    return str(item)


@dataclasses.dataclass(slots=True)
class _Local:
    view: Query
    key_rows: np.ndarray
    keys: list[str]
    own: dict[str, np.ndarray]


def _prepare(query: Query, df: pd.DataFrame | None, side: int) -> _Local:
    if query.join is None or query.where is not None:
        raise ConfigurationError("vertical jobs need a join and take no row filter")
    dataset = query.dataset if side == 0 else query.join[0]
    on = query.join[1]
    if df is None or on not in df.columns:
        raise PolicyViolation(f"dataset {dataset!r} with key {on!r} is not held here")
    mine = [c for c, s in zip(query.columns, query.column_sides, strict=True) if s == side]
    by = query.by if query.by_side == side else None
    view = dataclasses.replace(
        query,
        dataset=dataset,
        columns=(*mine, on),
        by=by,
        join=None,
        ops=tuple(sorted({*query.ops, "join"})),
        party_sides=(),
        column_sides=(),
    )
    key_rows = np.flatnonzero(df[on].notna().to_numpy())
    keys = [_key(v) for v in df[on].to_numpy()[key_rows]]
    own = {}
    for c in mine:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise ConfigurationError(f"column {c!r} is not numeric")
        own[c] = df[c].to_numpy(dtype=np.float64, na_value=np.nan)[key_rows]
    return _Local(view, key_rows, keys, own)


def _cells(
    loc: _Local, al: Alignment, n_rows: int, df: pd.DataFrame, by: str | None
) -> tuple[list[Cell], np.ndarray, list[Label]]:
    rows = loc.key_rows[al.my_rows]
    joined = np.zeros(n_rows, dtype=bool)
    joined[rows] = True
    cells = [Cell("joined rows", joined)]
    codes = np.zeros(0, dtype=np.int64)
    labels: list[Label] = []
    if by is not None:
        raw, uniq = pd.factorize(df[by].to_numpy()[rows], sort=True)
        codes = raw.astype(np.int64)
        labels = [u.item() if isinstance(u, np.generic) else u for u in uniq]
        for i, lab in enumerate(labels):
            mask = np.zeros(n_rows, dtype=bool)
            mask[rows[codes == i]] = True
            cells.append(Cell(f"{by}={lab!r}", mask))
    return cells, codes, labels


async def run_vertical(
    ctx: PartyContext,
    query: Query,
    datasets: Mapping[str, pd.DataFrame],
    guard: DisclosureGuard,
    joins: JoinCache | None = None,
    psi_workers: int | None = 1,
) -> Moments:
    """Run this party's side of a vertical ``query`` (raises this party's refusal, if any).

    With ``joins``, the PSI of a join this party already ran with the same peers on the same
    keys is reused (see :mod:`privcomp.policy.join_cache`). ``psi_workers`` processes run a
    two-party PSI (``None``: every core).
    """
    side = query.party_sides[ctx.party_id]
    name = query.dataset if side == 0 or query.join is None else query.join[0]
    df = datasets.get(name)
    prepared: list[_Local] = []

    def check_columns() -> None:
        loc = _prepare(query, df, side)
        guard.policy.rule(loc.view.dataset, query.requester).check(
            loc.view.dataset, loc.view.columns_used(), loc.view.operations_used()
        )
        prepared.append(loc)

    async def do_psi() -> list[list[bytes]]:
        keys = prepared[0].keys

        def run() -> Awaitable[list[list[bytes]]]:
            return psi_tags(ctx, keys, workers=psi_workers)

        if joins is None:
            return await run()
        # This party's position is part of the key: reordered parties must not reuse tags
        # that are indexed by position (any reordering moves some party, which then misses).
        layout = [
            name,
            str(query.join[1] if query.join else ""),
            repr(query.party_sides),
            str(ctx.party_id),
        ]
        return await joins.tags(ctx, fingerprint(layout, keys), run)

    tags = await with_consent(ctx, check_columns, do_psi)
    loc = prepared[0]
    al = align(tags, query.party_sides, ctx.party_id)
    if df is None:
        raise PolicyViolation(f"dataset {name!r} is not held here")
    cells, codes, labels = _cells(loc, al, len(df), df, loc.view.by)
    req = VerticalRequest(
        query.columns,
        query.column_sides,
        query.party_sides,
        frozenset(query.ops),
        query.by_side,
        query.ddof,
    )

    def check_rows() -> None:
        # Inside the consent round, so every party refuses together (nobody fails mid-protocol).
        cross = query.by is not None or bool({"cov", "corr"} & set(query.ops))
        for col, values in loc.own.items() if cross else ():
            mine = values[al.my_rows]
            if not np.all(np.isfinite(mine)):
                raise ConfigurationError(
                    f"cross-party products need complete, finite columns: {col!r} is not"
                )
            summed = query.by is not None and query.by_side != side
            if summed and mine.size and float(np.max(np.abs(mine))) >= CROSS_MAX_ABS:
                raise EncodingOverflowError(
                    f"column {col!r}: values summed per group across the join must stay "
                    "below 2^40 in magnitude",
                    bound=CROSS_MAX_ABS,
                )
        guard.check(loc.view, cells)

    async def stats() -> Moments:
        if query.by is None:
            return await vertical_moments(ctx, al, loc.own, req)
        return await vertical_grouped(ctx, al, loc.own, req, codes, labels)

    result = await with_consent(ctx, check_rows, stats)
    guard.commit(loc.view, cells)
    return result
