"""The public spec of a statistics query and its row filter (plain data, never code).

A :class:`Query` is what every party's worker receives: it names the dataset, columns,
operations, group key and filter. Filters are small JSON-able trees evaluated by each party on
its own rows::

    ("cmp", column, op, value)   op in ==, !=, <, <=, >, >=
    ("isin", column, (v1, v2, ...))
    ("notna", column)
    ("and", a, b) | ("or", a, b) | ("not", a)
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from privcomp.errors import ConfigurationError, PolicyViolation

Expr = tuple[Any, ...]

_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Query:
    """One statistics request.

    Parameters
    ----------
    dataset:
        Dataset name, mapped by each party to its own table.
    kind:
        ``"moments"``, ``"quantile"`` or ``"cells"`` (value counts and histograms).
    columns:
        Numeric columns (moments, quantiles) or the one counted column (cells).
    ops:
        Operations for the policy check (sorted).
    by:
        Group key column (moments), if any.
    where:
        Row filter expression, if any.
    quantiles:
        Probabilities for ``kind="quantile"``.
    bins:
        Bin edges for a histogram (``kind="cells"``); empty for value counts.
    ddof:
        Delta degrees of freedom.
    requester:
        Identity of the data scientist (selects the policy rule).
    join:
        ``(right dataset, key column)`` for a vertical (PSI) join of ``dataset`` with it.
    party_sides:
        Vertical: side of each party of the job (0 holds ``dataset``, 1 the right dataset).
    column_sides:
        Vertical: side holding each of ``columns``.
    by_side:
        Vertical: side holding the group key.
    """

    dataset: str
    kind: str
    columns: tuple[str, ...]
    ops: tuple[str, ...]
    by: str | None = None
    where: Expr | None = None
    quantiles: tuple[float, ...] = ()
    bins: tuple[float, ...] = ()
    ddof: int = 1
    requester: str = "anonymous"
    join: tuple[str, str] | None = None
    party_sides: tuple[int, ...] = ()
    column_sides: tuple[int, ...] = ()
    by_side: int | None = None

    def key(self) -> str:
        """Canonical JSON of the query: identical queries have identical keys (the cache key)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)

    def columns_used(self) -> set[str]:
        """Every column the query reads (for the policy check)."""
        used = set(self.columns)
        if self.by is not None:
            used.add(self.by)
        if self.where is not None:
            used |= expr_columns(self.where)
        return used

    def operations_used(self) -> set[str]:
        """Every operation the query performs (for the policy check)."""
        used = set(self.ops)
        if self.by is not None:
            used.add("groupby")
        return used


def expr_columns(expr: Expr) -> set[str]:
    """Columns a filter expression reads."""
    head = expr[0]
    if head in ("cmp", "isin", "notna"):
        return {str(expr[1])}
    if head in ("and", "or"):
        return expr_columns(expr[1]) | expr_columns(expr[2])
    if head == "not":
        return expr_columns(expr[1])
    raise ConfigurationError(f"unknown filter node {head!r}")


def _leaf(expr: Expr, df: pd.DataFrame) -> pd.Series:
    head, col = expr[0], expr[1]
    if col not in df.columns:
        raise PolicyViolation(f"filter column {col!r} does not exist")
    if head == "isin":
        return df[col].isin(list(expr[2]))
    if head == "notna":
        return df[col].notna()
    op = _CMP.get(expr[2])
    if op is None:
        raise ConfigurationError(f"unknown comparison {expr[2]!r}")
    return op(df[col], expr[3]).fillna(False)


def evaluate(expr: Expr | None, df: pd.DataFrame) -> np.ndarray:
    """Evaluate a filter on one party's table: a boolean mask over its rows (NaN compares False).

    Raises
    ------
    PolicyViolation
        If the filter reads a column the table does not have.
    """
    if expr is None:
        return np.ones(len(df), dtype=bool)
    head = expr[0]
    if head in ("cmp", "isin", "notna"):
        return np.asarray(_leaf(expr, df), dtype=bool)
    if head in ("and", "or"):
        left, right = evaluate(expr[1], df), evaluate(expr[2], df)
        out: np.ndarray = left & right if head == "and" else left | right
        return out
    if head == "not":
        neg: np.ndarray = np.logical_not(evaluate(expr[1], df))
        return neg
    raise ConfigurationError(f"unknown filter node {head!r}")
