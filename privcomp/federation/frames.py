"""Pandas-shaped frames of a local federation: :class:`Table`, :class:`Column`, :class:`GroupBy`.

Every statistic is one secure job (:meth:`privcomp.federation.Federation.run`).
``attrs["error_bound"]`` holds absolute bounds of the float64 evaluation (the secure sums
themselves are exact): ``2 n u`` relative for sums and means (u = 2^-53, n the pooled count), a
few times that for var/std/cov, an absolute ``6 n u`` for correlations, 0 for counts, min and
max (exact order statistics) and two ulps for interpolated quantiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from privcomp.errors import ConfigurationError
from privcomp.policy.query import Expr, Query
from privcomp.protocols.stats_job import Moments
from privcomp.protocols.stats_quantile import QuantileRelease

if TYPE_CHECKING:
    from privcomp.federation import Federation
    from privcomp.federation.joined import JoinedTable

_U = 2.0**-53


class Released(float):
    """A released scalar: a ``float`` that also carries ``attrs`` (job id, error bound)."""

    attrs: dict[str, Any]


def _scalar(value: float, attrs: dict[str, Any]) -> Released:
    out = Released(value)
    out.attrs = attrs
    return out


def _attach(obj: pd.Series | pd.DataFrame, job_id: str, bound: pd.Series | pd.DataFrame) -> Any:
    # Plain dicts, not pandas objects, so pandas can compare attrs (concat) without ambiguity.
    obj.attrs = {"job_id": job_id, "error_bound": bound.to_dict()}
    return obj


def _gamma(n: np.ndarray | float) -> np.ndarray:
    """Relative float64 summation bound ``2 n u`` (the secure sum itself is exact)."""
    return 2.0 * np.asarray(n, dtype=np.float64) * _U


def _moment_table(m: Moments, ops: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Figures (G, m) by statistic, and their absolute error bounds."""
    g = _gamma(m.count)
    figs: dict[str, np.ndarray] = {"count": m.count, "sum": m.total, "mean": m.mean}
    bounds: dict[str, np.ndarray] = {
        "count": np.zeros_like(m.count),
        "sum": g * np.abs(m.total),
        "mean": g * np.abs(m.mean),
    }
    if m.var is not None:
        figs["var"], figs["std"] = m.var, np.sqrt(m.var)
        bounds["var"], bounds["std"] = 3 * g * m.var, 2 * g * np.sqrt(m.var)
    return {k: figs[k] for k in ops}, {k: bounds[k] for k in ops}


class Condition:
    """A row filter built from column comparisons; combine with ``&``, ``|`` and ``~``."""

    def __init__(self, expr: Expr) -> None:
        self.expr = expr

    def __and__(self, other: Condition) -> Condition:
        return Condition(("and", self.expr, other.expr))

    def __or__(self, other: Condition) -> Condition:
        return Condition(("or", self.expr, other.expr))

    def __invert__(self) -> Condition:
        return Condition(("not", self.expr))

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"


def _moment_series(job_id: str, m: Moments, op: str, index: Sequence[str]) -> pd.Series:
    """One per-column moment as a pandas Series carrying its job id and error bounds."""
    figs, bounds = _moment_table(m, (op,))
    dtype = "int64" if op == "count" else "float64"
    out = pd.Series(figs[op][0], index=list(index), dtype=dtype)
    return _attach(out, job_id, pd.Series(bounds[op][0], index=list(index)))


def _pair_frame(
    job_id: str,
    op: str,
    mat: np.ndarray,
    cov: np.ndarray | None,
    rows: float,
    cols: Sequence[str],
) -> pd.DataFrame:
    """A released cov/corr matrix as a DataFrame carrying its job id and error bounds.

    Bounds: ``3 gamma_n sd_i sd_j`` for covariances, ``6 gamma_n`` for correlations.
    """
    g = _gamma(rows)
    if op == "cov":
        d = np.sqrt(np.abs(np.diag(cov if cov is not None else mat)))
        bound = 3 * g * np.outer(d, d)
    else:
        bound = np.full(mat.shape, 6 * g)
    cols = list(cols)
    return _attach(
        pd.DataFrame(mat, index=cols, columns=cols),
        job_id,
        pd.DataFrame(bound, index=cols, columns=cols),
    )


class MomentMethods:
    """``count/sum/mean/var/std`` per numeric column and ``cov/corr``, as pandas names them."""

    def _series(self, op: str) -> pd.Series:
        raise NotImplementedError

    def _pairs(self, op: str) -> pd.DataFrame:
        raise NotImplementedError

    def cov(self) -> pd.DataFrame:
        """Covariance matrix (pairwise-complete rows, ddof=1)."""
        return self._pairs("cov")

    def corr(self) -> pd.DataFrame:
        """Pearson correlation matrix (pairwise-complete rows)."""
        return self._pairs("corr")

    def count(self) -> pd.Series:
        """Non-missing values per numeric column."""
        return self._series("count")

    def sum(self) -> pd.Series:
        """Sum per numeric column."""
        return self._series("sum")

    def mean(self) -> pd.Series:
        """Mean per numeric column."""
        return self._series("mean")

    def var(self) -> pd.Series:
        """Sample variance (ddof=1) per numeric column."""
        return self._series("var")

    def std(self) -> pd.Series:
        """Sample standard deviation (ddof=1) per numeric column."""
        return self._series("std")


class Table(MomentMethods):
    """The stacked rows of every party holding a dataset; statistics run as secure jobs."""

    def __init__(
        self,
        fed: Federation,
        dataset: str,
        columns: list[str],
        numeric: list[str],
        where: Expr | None,
    ) -> None:
        self._fed, self.dataset, self._columns = fed, dataset, columns
        self._numeric, self.where = numeric, where

    def __repr__(self) -> str:
        return f"Table({self.dataset!r}, columns={self._columns})"

    @property
    def columns(self) -> pd.Index:
        """Column names common to every party's table."""
        return pd.Index(self._columns)

    def _query(self, kind: str, columns: Sequence[str], ops: Sequence[str], **kw: Any) -> Query:
        for c in columns:
            if c not in self._numeric:
                raise ConfigurationError(
                    f"column {c!r} is not a numeric column of {self.dataset!r}"
                )
        return Query(
            self.dataset,
            kind,
            tuple(columns),
            tuple(sorted(set(ops))),
            where=self.where,
            requester=self._fed.requester,
            **kw,
        )

    def _run(self, query: Query) -> tuple[str, Any]:
        return self._fed.run(query)

    def __getitem__(self, key: str | list[str] | Condition) -> Any:
        if isinstance(key, Condition):
            where = key.expr if self.where is None else ("and", self.where, key.expr)
            return Table(self._fed, self.dataset, self._columns, self._numeric, where)
        if isinstance(key, str):
            if key not in self._columns:
                raise KeyError(key)
            return Column(self, key)
        missing = [c for c in key if c not in self._columns]
        if missing:
            raise KeyError(missing)
        return Table(
            self._fed, self.dataset, list(key), [c for c in key if c in self._numeric], self.where
        )

    def __len__(self) -> int:
        _, m = self._run(self._query("moments", (), ("count",)))
        return int(m.rows[0])

    def _stats(self, ops: Sequence[str], cols: Sequence[str] | None = None) -> Any:
        cols = list(self._numeric if cols is None else cols)
        job_id, m = self._run(self._query("moments", cols, ops))
        return job_id, *_moment_table(m, ops)

    def _series(self, op: str) -> pd.Series:
        job_id, m = self._run(self._query("moments", self._numeric, (op,)))
        return _moment_series(job_id, m, op, self._numeric)

    def _quantiles(self, qs: Sequence[float], ops: Sequence[str]) -> tuple[str, QuantileRelease]:
        if not all(0.0 <= q <= 1.0 for q in qs):
            raise ConfigurationError("quantiles must lie in [0, 1]")
        job_id, res = self._run(self._query("quantile", self._numeric, ops, quantiles=tuple(qs)))
        return job_id, res

    def quantile(self, q: float | Sequence[float] = 0.5) -> pd.Series | pd.DataFrame:
        """Exact pooled quantile(s) per numeric column (pandas' linear interpolation)."""
        qs = [float(q)] if isinstance(q, float | int) else [float(v) for v in q]
        job_id, r = self._quantiles(qs, ("quantile",))
        bound = 2 * np.spacing(np.abs(r.values))
        if isinstance(q, float | int):
            out = pd.Series(r.values[0], index=self._numeric, name=q)
            return _attach(out, job_id, pd.Series(bound[0], index=self._numeric))
        df = pd.DataFrame(r.values, index=pd.Index(qs), columns=self._numeric)
        return _attach(df, job_id, pd.DataFrame(bound, index=df.index, columns=df.columns))

    def median(self) -> pd.Series:
        """Exact pooled median per numeric column."""
        out: pd.Series = self.quantile(0.5)
        return out

    def _extreme(self, q: float, op: str) -> pd.Series:
        job_id, r = self._quantiles([q], (op,))
        return _attach(
            pd.Series(r.values[0], index=self._numeric), job_id, pd.Series(0.0, index=self._numeric)
        )

    def min(self) -> pd.Series:
        """Exact pooled minimum per numeric column (a single record's value: policy op "min")."""
        return self._extreme(0.0, "min")

    def max(self) -> pd.Series:
        """Exact pooled maximum per numeric column (policy op "max")."""
        return self._extreme(1.0, "max")

    def describe(self) -> pd.DataFrame:
        """count, mean, std, min, 25%, 50%, 75%, max per numeric column, in one job."""
        ops = ("count", "mean", "std", "min", "max", "quantile")
        job_id, (m, r) = self._run(
            self._query("describe", self._numeric, ops, quantiles=(0.0, 0.25, 0.5, 0.75, 1.0))
        )
        figs, bounds = _moment_table(m, ("count", "mean", "std"))
        rows = [figs["count"][0], figs["mean"][0], figs["std"][0], *r.values]
        brow = [
            bounds["count"][0],
            bounds["mean"][0],
            bounds["std"][0],
            *(2 * np.spacing(np.abs(r.values))),
        ]
        index = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
        df = pd.DataFrame(np.array(rows), index=index, columns=self._numeric)
        return _attach(df, job_id, pd.DataFrame(np.array(brow), index=index, columns=self._numeric))

    def _pairs(self, op: str) -> pd.DataFrame:
        job_id, m = self._run(self._query("moments", self._numeric, (op,)))
        mat = m.cov if op == "cov" else m.corr
        if mat is None:
            raise ConfigurationError(f"{op} needs at least one numeric column")
        return _pair_frame(job_id, op, mat, m.cov, float(np.max(m.count)), self._numeric)

    def groupby(self, by: str) -> GroupBy:
        """Group the stacked rows by a column every party holds."""
        if by not in self._columns:
            raise KeyError(by)
        return GroupBy(self, by, [c for c in self._numeric if c != by], series=False)

    def join(self, other: Table, on: str) -> JoinedTable:
        """Vertical join with ``other`` on key column ``on``, aligned by private set intersection.

        Keys must be unique within each table; the joined rows are the keys both hold. Only
        the joined-row count and the intersection pattern are revealed by the alignment.
        """
        from privcomp.federation.joined import JoinedTable

        for t in (self, other):
            if on not in t._columns:
                raise KeyError(on)
        return JoinedTable(self, other, on)


class Column:
    """One column of a :class:`Table`; scalar results are :class:`Released` floats."""

    def __init__(self, table: Table, name: str) -> None:
        self._t, self.name = table, name

    def __repr__(self) -> str:
        return f"Column({self._t.dataset!r}, {self.name!r})"

    def _cmp(self, op: str, value: Any) -> Condition:
        return Condition(("cmp", self.name, op, value))

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return self._cmp("==", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return self._cmp("!=", value)

    def __lt__(self, value: Any) -> Condition:
        return self._cmp("<", value)

    def __le__(self, value: Any) -> Condition:
        return self._cmp("<=", value)

    def __gt__(self, value: Any) -> Condition:
        return self._cmp(">", value)

    def __ge__(self, value: Any) -> Condition:
        return self._cmp(">=", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Sequence[Any]) -> Condition:
        """Rows whose value is one of ``values``."""
        return Condition(("isin", self.name, tuple(values)))

    def notna(self) -> Condition:
        """Rows where this column is present."""
        return Condition(("notna", self.name))

    def _one(self, op: str) -> Released:
        job_id, figs, bounds = self._t._stats((op,), [self.name])
        value = float(figs[op][0, 0])
        return _scalar(value, {"job_id": job_id, "error_bound": float(bounds[op][0, 0])})

    def count(self) -> int:
        """Non-missing values (a secure count)."""
        return int(self._one("count"))

    def sum(self) -> Released:
        """Pooled sum."""
        return self._one("sum")

    def mean(self) -> Released:
        """Pooled mean."""
        return self._one("mean")

    def var(self) -> Released:
        """Pooled sample variance (ddof=1)."""
        return self._one("var")

    def std(self) -> Released:
        """Pooled sample standard deviation (ddof=1)."""
        return self._one("std")

    def quantile(self, q: float | Sequence[float] = 0.5) -> Any:
        """Exact pooled quantile(s), pandas' linear interpolation."""
        res = self._t[[self.name]].quantile(q)
        if np.isscalar(q):
            return _scalar(
                float(res.iloc[0]),
                {"job_id": res.attrs["job_id"], "error_bound": res.attrs["error_bound"][self.name]},
            )
        out = res[self.name].copy()
        return _attach(out, res.attrs["job_id"], pd.Series(res.attrs["error_bound"][self.name]))

    def median(self) -> Released:
        """Exact pooled median."""
        return self.quantile(0.5)  # type: ignore[no-any-return]

    def _extreme(self, which: str) -> Released:
        sub: Table = self._t[[self.name]]
        res = sub.min() if which == "min" else sub.max()
        return _scalar(float(res.iloc[0]), {"job_id": res.attrs["job_id"], "error_bound": 0.0})

    def min(self) -> Released:
        """Exact pooled minimum."""
        return self._extreme("min")

    def max(self) -> Released:
        """Exact pooled maximum."""
        return self._extreme("max")

    def _cells(self, op: str, bins: Sequence[float] = ()) -> tuple[str, Moments]:
        q = Query(
            self._t.dataset,
            "cells",
            (self.name,),
            (op,),
            where=self._t.where,
            bins=tuple(float(b) for b in bins),
            requester=self._t._fed.requester,
        )
        return self._t._run(q)

    def value_counts(self, normalize: bool = False) -> pd.Series:
        """Pooled count (or proportion) per value, largest first; missing values dropped."""
        job_id, m = self._cells("value_counts")
        counts = pd.Series(
            m.rows.astype(np.int64), index=pd.Index(m.labels, name=self.name), name="count"
        )
        counts = counts[counts > 0].sort_values(ascending=False, kind="stable")
        bound = pd.Series(0.0, index=counts.index)
        if normalize:
            out = (counts / counts.sum()).rename("proportion")
            return _attach(out, job_id, bound + 2 * _U)
        return _attach(counts, job_id, bound)

    def histogram(self, bins: Sequence[float]) -> pd.Series:
        """Pooled counts per left-closed bin ``[b_i, b_{i+1})``, like
        ``pd.cut(x, bins, right=False).value_counts(sort=False)``."""
        edges = [float(b) for b in bins]
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ConfigurationError("bins must be at least 2 strictly increasing edges")
        job_id, m = self._cells("histogram", edges)
        index = pd.IntervalIndex.from_breaks(edges, closed="left", name=self.name)
        out = pd.Series(m.rows.astype(np.int64), index=index, name="count")
        return _attach(out, job_id, pd.Series(0.0, index=index))


class GroupBy:
    """Rows grouped by a key column; ``count/sum/mean/var/std/size`` per group, in one job."""

    def __init__(self, table: Table, by: str, columns: list[str], *, series: bool) -> None:
        self._t, self.by, self._cols, self._series = table, by, columns, series

    def __getitem__(self, key: str | list[str]) -> GroupBy:
        if isinstance(key, str):
            return GroupBy(self._t, self.by, [key], series=True)
        return GroupBy(self._t, self.by, list(key), series=False)

    def _agg(self, op: str) -> pd.Series | pd.DataFrame:
        q = self._t._query("moments", self._cols, (op,), by=self.by)
        job_id, m = self._t._run(q)
        figs, bounds = _moment_table(m, (op,))
        index = pd.Index(m.labels, name=self.by)
        dtype = "int64" if op == "count" else "float64"
        df = pd.DataFrame(figs[op], index=index, columns=self._cols).astype(dtype)
        bdf = pd.DataFrame(bounds[op], index=index, columns=self._cols)
        if self._series:
            return _attach(df[self._cols[0]], job_id, bdf[self._cols[0]])
        return _attach(df, job_id, bdf)

    def count(self) -> pd.Series | pd.DataFrame:
        """Non-missing values per group and column."""
        return self._agg("count")

    def sum(self) -> pd.Series | pd.DataFrame:
        """Sum per group and column."""
        return self._agg("sum")

    def mean(self) -> pd.Series | pd.DataFrame:
        """Mean per group and column."""
        return self._agg("mean")

    def var(self) -> pd.Series | pd.DataFrame:
        """Sample variance per group and column."""
        return self._agg("var")

    def std(self) -> pd.Series | pd.DataFrame:
        """Sample standard deviation per group and column."""
        return self._agg("std")

    def size(self) -> pd.Series:
        """Rows per group."""
        q = self._t._query("moments", (), ("count",), by=self.by)
        job_id, m = self._t._run(q)
        index = pd.Index(m.labels, name=self.by)
        out = pd.Series(m.rows.astype(np.int64), index=index)
        return _attach(out, job_id, pd.Series(0.0, index=index))
