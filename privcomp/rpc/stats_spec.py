"""Local-mode :class:`Query` ⇄ ``stats_query`` job spec, in one place (layer: rpc).

The client maps the query a :class:`~privcomp.federation.frames.Table` builds to a
:class:`~privcomp.jobs.model.JobSpec`; every worker maps the spec back to the identical query
(with the requester set to the caller's authenticated identity, never to what the client
claims) and runs it through its :class:`~privcomp.policy.worker.PartyWorker`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privcomp.errors import ConfigurationError
from privcomp.jobs.model import DEFAULT_DEADLINE_S, JobSpec
from privcomp.jobs.stats_query import KIND, validate_params
from privcomp.policy.query import Expr, Query

#: Query.kind → the statistics that need secure comparisons (correlated randomness).
NEEDS_TRIPLES = frozenset({"quantile", "describe"})


def needs_material(query: Query) -> bool:
    """Whether ``query`` uses correlated randomness (so a dealer, if chosen, takes part).

    Comparisons (quantiles, ``describe``) and the cross-party products of a join (cov/corr, or
    a group key on one side and values on the other) do; moments of one table do not.
    """
    cross = query.join is not None and (
        query.by is not None or bool({"cov", "corr"} & set(query.ops))
    )
    return query.kind in NEEDS_TRIPLES or cross


def _plain(value: Any) -> Any:
    """JSON-compatible form of a filter value (numpy scalars → Python, tuples → lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """Inverse of :func:`_plain` for filter trees: lists → tuples, recursively."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def query_params(query: Query) -> dict[str, Any]:
    """The ``stats_query`` parameters of a local-mode query (requester excluded)."""
    params: dict[str, Any] = {
        "statistic": query.kind,
        "columns": list(query.columns),
        "ops": list(query.ops),
        "ddof": query.ddof,
    }
    if query.by is not None:
        params["group_by"] = query.by
    if query.where is not None:
        params["where"] = _plain(query.where)
    if query.quantiles:
        params["quantiles"] = [float(q) for q in query.quantiles]
    if query.bins:
        params["bins"] = [float(b) for b in query.bins]
    if query.join is not None:
        params["join"] = {
            "dataset": query.join[0],
            "on": query.join[1],
            "party_sides": list(query.party_sides),
            "column_sides": list(query.column_sides),
            "by_side": query.by_side,
        }
    return params


def query_to_spec(
    query: Query,
    parties: Sequence[str],
    *,
    triple_source: str = "he",
    dealer: str | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> JobSpec:
    """The job spec that runs ``query`` on ``parties`` (in protocol order)."""
    params = query_params(query)
    if triple_source == "dealer":
        if not dealer:
            raise ConfigurationError("triple_source 'dealer' needs the dealer party's name")
        params["dealer"] = dealer
    spec = JobSpec(
        kind=KIND,
        parties=tuple(parties),
        dataset=query.dataset,
        params=params,
        triple_source=triple_source,
        deadline_s=deadline_s,
    )
    validate_params(spec.params, len(spec.parties))
    return spec


def query_from_spec(spec: JobSpec, requester: str) -> Query:
    """The query a ``stats_query`` spec describes, for ``requester`` (validates first)."""
    if spec.kind != KIND:
        raise ConfigurationError(f"not a {KIND} job: {spec.kind!r}")
    p = spec.params
    validate_params(p, len(spec.parties))
    join = p.get("join")
    where: Expr | None = _tuples(p["where"]) if p.get("where") is not None else None
    return Query(
        dataset=spec.dataset,
        kind=str(p["statistic"]),
        columns=tuple(p.get("columns", ())),
        ops=tuple(sorted(set(p.get("ops", ())))),
        by=p.get("group_by"),
        where=where,
        quantiles=tuple(float(q) for q in p.get("quantiles", ())),
        bins=tuple(float(b) for b in p.get("bins", ())),
        ddof=int(p.get("ddof", 1)),
        requester=requester,
        join=None if join is None else (str(join["dataset"]), str(join["on"])),
        party_sides=() if join is None else tuple(int(s) for s in join["party_sides"]),
        column_sides=() if join is None else tuple(int(s) for s in join["column_sides"]),
        by_side=None if join is None or join.get("by_side") is None else int(join["by_side"]),
    )


def datasets_of(query: Query) -> tuple[str, ...]:
    """Every dataset the query reads (the joined one too)."""
    return (query.dataset,) if query.join is None else (query.dataset, query.join[0])
