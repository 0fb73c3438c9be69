"""The ``stats_query`` job kind: one pandas-style statistics query as validated data (layer: jobs).

A ``stats_query`` job carries exactly what a local-mode :class:`~privcomp.policy.query.Query`
carries, as JSON-compatible parameters (never code)::

    statistic: moments | quantile | describe | cells
    columns: [age, bmi]          # numeric columns; the one counted column for "cells"
    ops: [mean, std]             # count sum mean var std cov corr | quantile min max |
                                 # value_counts | histogram
    group_by: sex                # optional group key ("moments" only)
    where: [cmp, age, ">", 0.1]  # optional row filter: cmp/isin/notna/and/or/not lists
    quantiles: [0.25, 0.5]       # "quantile" and "describe"
    bins: [0, 100, 200]          # "cells" with ops [histogram]
    ddof: 1
    join: {dataset: claims, on: patient_id, party_sides: [0, 0, 1],
           column_sides: [0, 1], by_side: 0}          # optional vertical (PSI) join
    dealer: helper               # only with triple_source "dealer"

Every party's worker maps the parameters to the same ``Query`` the local mode builds and runs
it through the same :class:`~privcomp.policy.worker.PartyWorker` (its own data, its own policy);
the mapping to and from ``Query`` lives in :mod:`privcomp.rpc.stats_spec`. The released result
(``Moments``, ``QuantileRelease`` or both) travels as named float arrays
(:func:`release_to_arrays` / :func:`release_from_arrays`); group labels, which may be strings,
travel as the UTF-8 bytes of their JSON list, one byte per element.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.protocols.stats import Label
from privcomp.protocols.stats_job import Moments
from privcomp.protocols.stats_quantile import QuantileRelease
from privcomp.types import FloatArray

KIND = "stats_query"
#: A released statistics result at one party (``describe`` releases both kinds).
StatsRelease: TypeAlias = Moments | QuantileRelease | tuple[Moments, QuantileRelease]

MOMENT_OPS = frozenset({"count", "sum", "mean", "var", "std", "cov", "corr"})
QUANTILE_OPS = frozenset({"quantile", "min", "max"})
DESCRIBE_OPS = frozenset({"count", "mean", "std", "min", "max", "quantile"})
CELL_OPS = frozenset({"value_counts", "histogram"})
STATISTICS = ("moments", "quantile", "describe", "cells")
PARAMS = frozenset(
    {"statistic", "columns", "ops", "group_by", "where", "quantiles", "bins", "ddof", "join"}
)
JOIN_KEYS = frozenset({"dataset", "on", "party_sides", "column_sides", "by_side"})
CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
MAX_COLUMNS = 1024
MAX_FILTER_NODES = 256
MAX_FILTER_DEPTH = 32
MAX_ISIN = 10_000
MAX_BINS = 10_000
MAX_QUANTILES = 1_000


def _names(value: Any, what: str, *, limit: int = MAX_COLUMNS) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > limit:
        raise ConfigurationError(f"{what} must be a list of at most {limit} names")
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{what} must hold non-empty strings")
    return list(value)


def _floats(value: Any, what: str, limit: int) -> list[float]:
    if not isinstance(value, list | tuple) or len(value) > limit:
        raise ConfigurationError(f"{what} must be a list of at most {limit} numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ConfigurationError(f"{what} must hold numbers")
    out = [float(v) for v in value]
    if not all(math.isfinite(v) for v in out):
        raise ConfigurationError(f"{what} must be finite")
    return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool | int | float)


def _check_leaf(head: str, args: list[Any]) -> None:
    if head == "cmp":
        if len(args) != 3 or not isinstance(args[0], str) or args[1] not in CMP_OPS:
            raise ConfigurationError("cmp needs a column, one of == != < <= > >= and a value")
        if not _is_scalar(args[2]):
            raise ConfigurationError(f"cmp on {args[0]!r} needs a scalar value")
    elif head == "isin":
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], list):
            raise ConfigurationError("isin needs a column and a list of values")
        if len(args[1]) > MAX_ISIN or not all(_is_scalar(v) for v in args[1]):
            raise ConfigurationError(f"isin takes at most {MAX_ISIN} scalar values")
    elif len(args) != 1 or not isinstance(args[0], str):
        raise ConfigurationError("notna needs a column")


def check_filter(expr: Any) -> None:
    """Validate a filter tree (lists; see the module docstring); raise ConfigurationError."""
    count = 0

    def walk(node: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_FILTER_NODES or depth > MAX_FILTER_DEPTH:
            raise ConfigurationError(
                f"filter too large (at most {MAX_FILTER_NODES} nodes, depth {MAX_FILTER_DEPTH})"
            )
        if not isinstance(node, list | tuple) or not node or not isinstance(node[0], str):
            raise ConfigurationError("a filter node must be a list starting with its name")
        head, args = node[0], list(node[1:])
        arity = {"and": 2, "or": 2, "not": 1}.get(head)
        if head in ("cmp", "isin", "notna"):
            _check_leaf(head, args)
        elif arity is None:
            raise ConfigurationError(f"unknown filter node {head!r}")
        elif len(args) != arity:
            raise ConfigurationError(f"{head} needs {arity} operand(s)")
        else:
            for a in args:
                walk(a, depth + 1)

    walk(expr, 1)


def _check_ops(statistic: str, ops: list[str], p: Mapping[str, Any]) -> None:
    allowed = {
        "moments": MOMENT_OPS,
        "quantile": QUANTILE_OPS,
        "describe": DESCRIBE_OPS,
        "cells": CELL_OPS,
    }[statistic]
    bad = sorted(set(ops) - allowed)
    if bad or (not ops and statistic != "moments"):
        raise ConfigurationError(f"ops {bad or ops} are not valid for statistic {statistic!r}")
    if statistic in ("quantile", "describe"):
        qs = _floats(p.get("quantiles", []), "quantiles", MAX_QUANTILES)
        if not qs or not all(0.0 <= q <= 1.0 for q in qs):
            raise ConfigurationError("quantiles must be a non-empty list of numbers in [0, 1]")
    if statistic == "cells":
        if len(ops) != 1:
            raise ConfigurationError("cells needs exactly one of value_counts, histogram")
        bins = _floats(p.get("bins", []), "bins", MAX_BINS)
        if (ops[0] == "histogram") != bool(bins):
            raise ConfigurationError("bins are needed by histogram and only by histogram")
        if bins and (len(bins) < 2 or any(b <= a for a, b in itertools.pairwise(bins))):
            raise ConfigurationError("bins must be at least 2 strictly increasing edges")


def _check_join(join: Any, n_columns: int, n_parties: int, grouped: bool) -> None:
    if not isinstance(join, Mapping) or set(join) - JOIN_KEYS:
        raise ConfigurationError(f"join must be a mapping with keys {sorted(JOIN_KEYS)}")
    for key in ("dataset", "on"):
        if not isinstance(join.get(key), str) or not join[key]:
            raise ConfigurationError(f"join.{key} must be a non-empty string")
    sides = join.get("party_sides")
    cols = join.get("column_sides")
    for name, value, size in (("party_sides", sides, n_parties), ("column_sides", cols, n_columns)):
        if (
            not isinstance(value, list | tuple)
            or len(value) != size
            or not all(v in (0, 1) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigurationError(f"join.{name} must list 0 or 1 for each of {size} entries")
    if sides is not None and set(sides) != {0, 1}:
        raise ConfigurationError("join.party_sides must name parties on both sides")
    by_side = join.get("by_side")
    if grouped != (by_side is not None) or by_side not in (None, 0, 1):
        raise ConfigurationError("join.by_side must be 0 or 1 exactly when group_by is set")


def validate_params(params: Mapping[str, Any], n_parties: int) -> None:
    """Validate ``stats_query`` parameters (structure, names, sizes); raise ConfigurationError."""
    unknown = set(params) - PARAMS - {"dealer"}
    if unknown:
        raise ConfigurationError(f"unknown stats_query parameters: {sorted(unknown)}")
    statistic = params.get("statistic")
    if statistic not in STATISTICS:
        raise ConfigurationError(f"statistic must be one of {list(STATISTICS)}")
    columns = _names(params.get("columns", []), "columns")
    ops = _names(params.get("ops", []), "ops", limit=16)
    _check_ops(statistic, ops, params)
    if statistic == "cells" and len(columns) != 1:
        raise ConfigurationError("cells counts exactly one column")
    by = params.get("group_by")
    if by is not None and (not isinstance(by, str) or not by or statistic != "moments"):
        raise ConfigurationError("group_by must be a column name (statistic moments only)")
    if params.get("where") is not None:
        check_filter(params["where"])
    ddof = params.get("ddof", 1)
    if not isinstance(ddof, int) or isinstance(ddof, bool) or not 0 <= ddof <= 16:
        raise ConfigurationError("ddof must be an integer in [0, 16]")
    join = params.get("join")
    if join is not None:
        if statistic != "moments" or params.get("where") is not None:
            raise ConfigurationError("a joined query takes statistic moments and no filter")
        _check_join(join, len(columns), n_parties, by is not None)


def request_usage(params: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Columns and operations the query reads (informative; each worker's policy decides)."""
    cols = set(params.get("columns", []))
    ops = set(params.get("ops", []))
    if params.get("group_by"):
        cols.add(str(params["group_by"]))
        ops.add("groupby")
    if params.get("join"):
        cols.add(str(params["join"]["on"]))
        ops.add("join")
    return cols, ops


# -- released results as named float arrays --------------------------------------------------


def _labels_to_array(labels: Sequence[Label]) -> FloatArray:
    raw = json.dumps(list(labels), separators=(",", ":")).encode()
    return np.frombuffer(raw, dtype=np.uint8).astype(np.float64)


def _labels_from_array(arr: FloatArray) -> list[Label]:
    a = np.asarray(arr, dtype=np.float64).ravel()
    if a.size and (np.any(a < 0) or np.any(a > 255) or np.any(a != np.floor(a))):
        raise ConfigurationError("released labels are not bytes")
    try:
        labels = json.loads(a.astype(np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigurationError("released labels are not a JSON list") from exc
    if not isinstance(labels, list) or not all(isinstance(v, str | int | float) for v in labels):
        raise ConfigurationError("released labels are not a JSON list of scalars")
    return labels


_MOMENT_FIELDS = ("rows", "count", "total", "mean", "var", "cov", "corr")


def _moments_to(prefix: str, m: Moments) -> dict[str, FloatArray]:
    out = {prefix + "labels": _labels_to_array(m.labels)}
    for f in _MOMENT_FIELDS:
        value = getattr(m, f)
        if value is not None:
            out[prefix + f] = np.asarray(value, dtype=np.float64)
    return out


def _moments_from(prefix: str, arrays: Mapping[str, FloatArray]) -> Moments:
    try:
        labels = _labels_from_array(arrays[prefix + "labels"])
        base = [np.asarray(arrays[prefix + f], dtype=np.float64) for f in _MOMENT_FIELDS[:4]]
    except KeyError as exc:
        raise ConfigurationError(f"released moments lack {exc.args[0]!r}") from exc
    out = Moments(labels, *base)
    out.var, out.cov, out.corr = (arrays.get(prefix + f) for f in _MOMENT_FIELDS[4:])
    return out


def release_to_arrays(release: StatsRelease) -> dict[str, FloatArray]:
    """A released statistics result as named float arrays (the JobResult of the job)."""
    if isinstance(release, tuple):
        m, q = release
        return {**_moments_to("m.", m), "q.count": q.count, "q.values": q.values}
    if isinstance(release, Moments):
        return _moments_to("m.", release)
    return {"q.count": release.count, "q.values": release.values}


def release_from_arrays(arrays: Mapping[str, FloatArray]) -> StatsRelease:
    """Inverse of :func:`release_to_arrays` (raises ConfigurationError on a malformed result)."""
    quant = None
    if "q.values" in arrays and "q.count" in arrays:
        quant = QuantileRelease(
            np.asarray(arrays["q.count"], dtype=np.float64),
            np.asarray(arrays["q.values"], dtype=np.float64),
        )
    has_moments = "m.labels" in arrays
    if has_moments and quant is not None:
        return _moments_from("m.", arrays), quant
    if has_moments:
        return _moments_from("m.", arrays)
    if quant is not None:
        return quant
    raise ConfigurationError("the released result is not a statistics result")
