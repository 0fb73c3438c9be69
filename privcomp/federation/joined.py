"""Pandas-shaped statistics on a vertical join of two tables (see :meth:`Table.join`).

Supported: ``len``, ``count/sum/mean/var/std`` per column, ``cov``/``corr`` (also across the
two tables, by cross-party products) and ``groupby(key)[cols].count/sum/mean`` with the key
and the value columns in either table. No row filters on joined tables yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from privcomp.errors import ConfigurationError
from privcomp.federation.frames import (
    MomentMethods,
    _attach,
    _moment_series,
    _moment_table,
    _pair_frame,
)
from privcomp.policy.query import Query
from privcomp.protocols.stats_job import Moments

if TYPE_CHECKING:
    from privcomp.federation.frames import Table


class JoinedTable(MomentMethods):
    """Rows of ``left`` and ``right`` whose key ``on`` both hold (one-to-one)."""

    def __init__(self, left: Table, right: Table, on: str) -> None:
        self._left, self._right, self.on = left, right, on
        clash = (set(left._columns) & set(right._columns)) - {on}
        if clash:
            raise ConfigurationError(f"columns {sorted(clash)} exist in both joined tables")
        self._sides = {c: 0 for c in left._columns if c != on}
        self._sides.update({c: 1 for c in right._columns if c != on})
        self._numeric = [c for c in left._numeric if c != on]
        self._numeric += [c for c in right._numeric if c != on]

    def __repr__(self) -> str:
        return f"JoinedTable({self._left.dataset!r} x {self._right.dataset!r} on {self.on!r})"

    @property
    def columns(self) -> pd.Index:
        """Key, then the left table's columns, then the right table's."""
        return pd.Index([self.on, *self._sides])

    def _query(self, cols: Sequence[str], ops: Sequence[str], by: str | None = None) -> Query:
        for c in cols:
            if c not in self._numeric:
                raise ConfigurationError(f"column {c!r} is not a numeric column of the join")
        fed = self._left._fed
        holders = fed._holders(
            Query(self._left.dataset, "moments", (), (), join=(self._right.dataset, self.on))
        )
        sides = tuple(0 if self._left.dataset in w.datasets else 1 for w in holders)
        return Query(
            self._left.dataset,
            "moments",
            tuple(cols),
            tuple(sorted(set(ops))),
            by=by,
            requester=fed.requester,
            join=(self._right.dataset, self.on),
            party_sides=sides,
            column_sides=tuple(self._sides[c] for c in cols),
            by_side=None if by is None else self._sides[by],
        )

    def _run(self, query: Query) -> tuple[str, Moments]:
        job_id, res = self._left._fed.run(query)
        if not isinstance(res, Moments):
            raise ConfigurationError("unexpected result kind for a joined table")
        return job_id, res

    def __len__(self) -> int:
        return int(self._run(self._query((), ("count",)))[1].rows[0])

    def _series(self, op: str) -> pd.Series:
        job_id, m = self._run(self._query(self._numeric, (op,)))
        return _moment_series(job_id, m, op, self._numeric)

    def _pairs(self, op: str) -> pd.DataFrame:
        job_id, m = self._run(self._query(self._numeric, (op,)))
        mat = m.cov if op == "cov" else m.corr
        if mat is None:
            raise ConfigurationError(f"{op} needs numeric columns")
        return _pair_frame(job_id, op, mat, m.cov, float(m.rows[0]), self._numeric)

    def groupby(self, by: str) -> JoinedGroupBy:
        """Group the joined rows by a column of either table."""
        if by not in self._sides:
            raise KeyError(by)
        return JoinedGroupBy(self, by, [c for c in self._numeric if c != by], series=False)


class JoinedGroupBy:
    """``count/sum/mean`` per group of a :class:`JoinedTable`."""

    def __init__(self, table: JoinedTable, by: str, cols: list[str], *, series: bool) -> None:
        self._t, self.by, self._cols, self._series = table, by, cols, series

    def __getitem__(self, key: str | list[str]) -> JoinedGroupBy:
        if isinstance(key, str):
            return JoinedGroupBy(self._t, self.by, [key], series=True)
        return JoinedGroupBy(self._t, self.by, list(key), series=False)

    def _agg(self, op: str) -> Any:
        job_id, m = self._t._run(self._t._query(self._cols, (op,), by=self.by))
        figs, bounds = _moment_table(m, (op,))
        index = pd.Index(m.labels, name=self.by)
        dtype = "int64" if op == "count" else "float64"
        df = pd.DataFrame(figs[op], index=index, columns=self._cols).astype(dtype)
        bdf = pd.DataFrame(bounds[op], index=index, columns=self._cols)
        if self._series:
            return _attach(df[self._cols[0]], job_id, bdf[self._cols[0]])
        return _attach(df, job_id, bdf)

    def count(self) -> Any:
        """Joined rows per group (value columns are complete)."""
        return self._agg("count")

    def sum(self) -> Any:
        """Sum per group and column."""
        return self._agg("sum")

    def mean(self) -> Any:
        """Mean per group and column."""
        return self._agg("mean")
