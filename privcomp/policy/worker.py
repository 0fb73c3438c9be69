"""A party's side of a statistics job: its own data, its own policy, its own checks.

:class:`PartyWorker` is the enforcement point: it evaluates the query on its own table,
derives the record sets every released figure depends on, asks its
:class:`~privcomp.policy.guard.DisclosureGuard`, and only then joins the SPMD protocol. The same
object serves ``pc.local`` (in-process) and the gRPC worker service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from privcomp.errors import ConfigurationError, PolicyViolation
from privcomp.policy.guard import Cell, DisclosureGuard
from privcomp.policy.join_cache import JoinCache
from privcomp.policy.model import Policy
from privcomp.policy.query import Query, evaluate
from privcomp.policy.vertical import run_vertical
from privcomp.protocols.context import PartyContext
from privcomp.protocols.stats import Label
from privcomp.protocols.stats_job import (
    LocalRows,
    Moments,
    MomentsRequest,
    horizontal_moments,
    with_consent,
)
from privcomp.protocols.stats_local import bin_codes
from privcomp.protocols.stats_quantile import QuantileRelease, horizontal_quantiles

#: Result of one job at one party (``describe`` returns both kinds).
Release = Moments | QuantileRelease | tuple[Moments, QuantileRelease]


@dataclass(slots=True)
class Prepared:
    """A query evaluated on one party's table: its rows for the protocol and its record sets."""

    rows: LocalRows
    cells: list[Cell]


def _label(v: Any) -> Label:
    item = v.item() if isinstance(v, np.generic) else v
    if isinstance(item, bool | int | float | str):
        return item
    return str(item)


def _numeric(df: pd.DataFrame, col: str, base: np.ndarray, everything: bool) -> np.ndarray:
    if col not in df.columns:
        raise PolicyViolation(f"column {col!r} does not exist")
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise ConfigurationError(f"column {col!r} is not numeric")
    x: np.ndarray = s.to_numpy(dtype=np.float64, na_value=np.nan)
    return x if everything else x[base]


def _present_cells(df: pd.DataFrame, cols: tuple[str, ...], within: Cell) -> list[Cell]:
    cells = []
    for c in cols:
        mask = within.mask & df[c].notna().to_numpy()
        if not np.array_equal(mask, within.mask):
            cells.append(Cell(f"{within.name} with {c!r} present", mask))
    return cells


def _group(df: pd.DataFrame, key: str, base: np.ndarray) -> tuple[np.ndarray, list[Label]]:
    if key not in df.columns:
        raise PolicyViolation(f"group column {key!r} does not exist")
    codes, uniques = pd.factorize(df[key].to_numpy()[base], sort=True)
    return codes.astype(np.int64), [_label(u) for u in uniques]


def prepare(query: Query, df: pd.DataFrame) -> Prepared:
    """Evaluate ``query`` on this party's table ``df``."""
    base = evaluate(query.where, df)
    everything = bool(base.all())
    numeric = query.kind != "cells" or bool(query.bins)
    values = {c: _numeric(df, c, base, everything) for c in query.columns} if numeric else {}
    n_sel = int(base.sum())
    whole = Cell("rows selected" if query.where is None else "rows of the filter", base)
    if query.kind == "cells":
        col = query.columns[0]
        if query.bins:
            codes = bin_codes(values[col], np.asarray(query.bins, dtype=np.float64))
            labels: list[Label] = list(range(len(query.bins) - 1))
        else:
            codes, labels = _group(df, col, base)
        return Prepared(LocalRows({}, codes, labels), _label_cells(query, col, base, codes, labels))
    if query.by is None:
        rows = LocalRows(values, np.zeros(n_sel, dtype=np.int64))
        return Prepared(rows, [whole, *_present_cells(df, query.columns, whole)])
    codes, labels = _group(df, query.by, base)
    cells = _label_cells(query, query.by, base, codes, labels)
    for c in list(cells):
        cells += _present_cells(df, query.columns, c)
    return Prepared(LocalRows(values, codes, labels), cells)


def _label_cells(
    query: Query, col: str, base: np.ndarray, codes: np.ndarray, labels: list[Label]
) -> list[Cell]:
    where = np.flatnonzero(base)
    cells = []
    for i, lab in enumerate(labels):
        mask = np.zeros(base.shape, dtype=bool)
        mask[where[codes == i]] = True
        if query.bins:
            name = f"{col} in [{query.bins[i]:g}, {query.bins[i + 1]:g})"
        else:
            name = f"{col}={lab!r}"
        cells.append(Cell(name, mask))
    union = np.zeros(base.shape, dtype=bool)
    union[where[codes >= 0]] = True
    # The union of disjoint released cells is derivable (their sum): guard it too.
    return [*cells, Cell(f"rows counted by {col!r}", union)]


@dataclass(slots=True)
class PartyWorker:
    """One party: its tables, its policy and its disclosure-control state.

    Parameters
    ----------
    name:
        Party name.
    datasets:
        Dataset name -> this party's table.
    policy:
        This party's release policy.
    """

    name: str
    datasets: Mapping[str, pd.DataFrame]
    policy: Policy = field(default_factory=Policy)
    #: Processes for a two-party PSI (``None``: every core). One by default: on a host shared
    #: with the peer's worker (tests, demos) forking only adds overhead.
    psi_workers: int | None = 1
    guard: DisclosureGuard = field(init=False)
    #: PSI results of recent joins, reused while every party's keys are unchanged.
    joins: JoinCache = field(init=False)

    def __post_init__(self) -> None:
        self.guard = DisclosureGuard(self.name, self.policy)
        self.joins = JoinCache()

    def schemas(self) -> dict[str, dict[str, str]]:
        """Column names and dtypes of every dataset (what the coordinator may see)."""
        return {n: {c: str(t) for c, t in df.dtypes.items()} for n, df in self.datasets.items()}

    async def run(self, ctx: PartyContext, query: Query) -> Release:
        """Run this party's side of ``query`` (raises this party's refusal, if any)."""
        if query.join is not None:
            return await run_vertical(
                ctx, query, self.datasets, self.guard, self.joins, self.psi_workers
            )
        prepared: list[Prepared] = []

        def check() -> None:
            df = self.datasets.get(query.dataset)
            if df is None:
                raise PolicyViolation(f"party {self.name!r} holds no dataset {query.dataset!r}")
            p = prepare(query, df)
            self.guard.check(query, p.cells)
            prepared.append(p)

        async def program() -> Release:
            p = prepared[0]
            if query.kind == "quantile":
                return await horizontal_quantiles(ctx, p.rows, query.columns, query.quantiles)
            if query.kind == "describe":
                req = MomentsRequest(columns=query.columns, ops=frozenset({"count", "mean", "std"}))
                moments = await horizontal_moments(ctx, p.rows, req)
                quant = await horizontal_quantiles(ctx, p.rows, query.columns, query.quantiles)
                return moments, quant
            req = MomentsRequest(
                columns=query.columns if query.kind == "moments" else (),
                ops=frozenset(query.ops),
                grouped=query.by is not None or query.kind == "cells",
                exchange_labels=not query.bins,
                ddof=query.ddof,
            )
            return await horizontal_moments(ctx, p.rows, req)

        result = await with_consent(ctx, check, program)
        self.guard.commit(query, prepared[0].cells)
        return result
