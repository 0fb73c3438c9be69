"""The deployed twin of ``pc.local`` (layer: client): ``pc.connect(address, ...)`` → Federation.

The same pandas-style tables as local mode, against a running coordinator and its workers::

    fed = pc.connect("127.0.0.1:7000", pki_dir="pki", analyst="alice")
    fed.parties()                        # party -> dataset -> column -> dtype (never values)
    t = fed.table("patients")
    t.describe(); t.corr(); t.groupby("sex")["bmi"].mean()

Every statistic is one ``stats_query`` job (:mod:`privcomp.jobs.stats_query`): the coordinator
forwards the validated query (never code) to the parties holding the dataset; each party's
worker runs it through its own :class:`~privcomp.policy.worker.PartyWorker` — its own rows, its
own policy, the same SPMD programs as local mode — over mTLS peer streams, and only the
released result comes back. Refusals raise the same errors as local mode
(:class:`~privcomp.errors.GroupTooSmall` naming the group and ``k``,
:class:`~privcomp.errors.DifferencingRefused`, :class:`~privcomp.errors.PolicyViolation`).
Workers apply their policies to the *authenticated* analyst: per-requester rules name it by its
certificate identity, ``analyst:<name>``.

Low-level job access (any registered kind, YAML specs) stays available: ``fed.submit(spec)``,
``fed.job(id)``, ``fed.status(id)``, ``fed.jobs()``, ``fed.cancel(id)``, ``fed.result(id)``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privcomp.errors import (
    ConfigurationError,
    DifferencingRefused,
    GroupTooSmall,
    JobFailedError,
    PolicyViolation,
    PrivcompError,
)
from privcomp.federation.frames import Table
from privcomp.jobs import stats_query
from privcomp.jobs.model import JobSpec, JobState
from privcomp.policy.guard import ResultCache
from privcomp.policy.query import Query
from privcomp.protocols.stats_job import Moments
from privcomp.protocols.stats_quantile import QuantileRelease
from privcomp.rpc.client import CALL_TIMEOUT_S, Job, JobInfo, PartySummary
from privcomp.rpc.client import Federation as Connection
from privcomp.rpc.client import connect as _connect_rpc
from privcomp.rpc.pki import Identity
from privcomp.rpc.stats_spec import datasets_of, needs_material, query_to_spec
from privcomp.types import FloatArray

#: Default global deadline of one statistics job, in seconds (HE preprocessing takes a while).
STATS_DEADLINE_S = 600.0
_REFUSAL = re.compile(r"(?:party \S+ refused the job: )?(?P<type>[A-Za-z]+): (?P<msg>.*)", re.S)
_GROUP = re.compile(
    r"group (?P<g>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") has fewer than k=(?P<k>\d+) records"
    r"(?: \(policy of party '(?P<p>[^']*)'\))?"
)
_TYPED: dict[str, type[PrivcompError]] = {
    "GroupTooSmall": GroupTooSmall,
    "DifferencingRefused": DifferencingRefused,
    "PolicyViolation": PolicyViolation,
    "ConfigurationError": ConfigurationError,
}


@dataclass(frozen=True, slots=True)
class _Holder:
    """A party as the frames see it: its name and the names of its datasets."""

    name: str
    datasets: frozenset[str]


def refusal_error(info: JobInfo) -> PrivcompError:
    """The local-mode error a failed statistics job stands for (JobFailedError otherwise).

    A party's refusal travels as ``"<ErrorType>: <message>"`` in the job's failure reason;
    the group-size errors are rebuilt with their group, ``k`` and party.
    """
    where = f"job {info.job_id}, party {info.failing_party or '-'}, phase {info.phase or '-'}"
    m = _REFUSAL.fullmatch(info.reason)
    cls = _TYPED.get(m.group("type")) if m else None
    if m is not None and cls is not None:
        msg = m.group("msg")
        if issubclass(cls, GroupTooSmall):
            g = _GROUP.search(msg)
            if g is not None:
                return cls(ast.literal_eval(g.group("g")), int(g.group("k")), g.group("p"))
        else:
            return cls(f"{msg} ({where})")
    return JobFailedError(
        f"job {info.job_id} {info.state.value}: {info.reason} ({where})",
        party=info.failing_party,
        phase=info.phase,
    )


class Federation:
    """A deployed federation seen by an analyst: pandas-style tables over gRPC (see module doc).

    Parameters
    ----------
    connection:
        The coordinator connection (:class:`privcomp.rpc.client.Federation`).
    requester:
        The analyst's identity (the workers use the authenticated one for their policies).
    triples:
        ``"he"`` (default: the parties generate correlated randomness with Paillier, no third
        party) or ``"dealer"`` (explicit trusted helper party ``dealer``) for quantile,
        median, min, max and describe jobs; other statistics need none.
    dealer:
        Name of the registered dealer party (with ``triples="dealer"``).
    cache:
        Answer an identical repeated query with the identical earlier result.
    deadline_s:
        Global deadline of each statistics job.
    progress:
        Show a progress bar per job.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        requester: str,
        triples: str = "he",
        dealer: str | None = None,
        cache: bool = True,
        deadline_s: float = STATS_DEADLINE_S,
        progress: bool = False,
    ) -> None:
        if triples not in ("he", "dealer"):
            raise ConfigurationError(f"triples must be 'he' or 'dealer', got {triples!r}")
        if triples == "dealer" and not dealer:
            raise ConfigurationError("triples='dealer' needs dealer=<the dealer party's name>")
        self.connection = connection
        self.requester = requester
        self.triples, self.dealer = triples, dealer
        self.deadline_s, self.progress = deadline_s, progress
        self._cache: ResultCache[tuple[str, Any]] | None = ResultCache() if cache else None

    def __repr__(self) -> str:
        return f"Federation(remote, requester={self.requester!r}, triples={self.triples!r})"

    @property
    def attempts(self) -> int:
        """RPC attempts made so far (retries included)."""
        return self.connection.attempts

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pc.local surface ------------------------------------------------------------------

    def summaries(self) -> list[PartySummary]:
        """Registered parties with address, liveness and schemas."""
        return self.connection.parties()

    def parties(self) -> dict[str, dict[str, dict[str, str]]]:
        """Party name -> dataset -> column -> dtype (names and schemas only, never values)."""
        return {
            p.name: {ds: dict(cols) for ds, cols in p.datasets.items()} for p in self.summaries()
        }

    def _party_list(self) -> list[_Holder]:
        return [_Holder(n, frozenset(ds)) for n, ds in sorted(self.parties().items())]

    def table(self, dataset: str) -> Table:
        """The rows of every party holding ``dataset``, stacked (horizontal partitioning)."""
        schemas = [ds[dataset] for _, ds in sorted(self.parties().items()) if dataset in ds]
        if not schemas:
            raise ConfigurationError(f"no party holds a dataset {dataset!r}")
        columns = [c for c in schemas[0] if all(c in s for s in schemas[1:])]
        numeric = [c for c in columns if all(_is_numeric(s[c]) for s in schemas)]
        # Table is typed against pc.local's Federation; this class provides the same seam
        # (requester, run, _holders): see the report's request for a JobRunner protocol.
        return Table(self, dataset, columns, numeric, None)  # type: ignore[arg-type]

    def _holders(self, query: Query) -> list[_Holder]:
        """Parties of the job, in protocol order (sorted names), like pc.local's holders."""
        parties = self._party_list()
        if query.join is None:
            return [p for p in parties if query.dataset in p.datasets]
        both = [p.name for p in parties if all(d in p.datasets for d in datasets_of(query))]
        if both:
            raise ConfigurationError(f"parties {both} hold both joined datasets (not supported)")
        return [p for p in parties if any(d in p.datasets for d in datasets_of(query))]

    def run(self, query: Query) -> tuple[str, Any]:
        """Run one statistics job (or return the cached answer): ``(job_id, result)``."""
        if self._cache is not None:
            hit = self._cache.get(query)
            if hit is not None:
                return hit
        holders = self._holders(query)
        if len(holders) < 2:
            raise ConfigurationError(
                f"dataset {query.dataset!r} is held by {len(holders)} party; joint statistics "
                "need at least 2 parties"
            )
        comparisons = self.triples == "dealer" and needs_material(query)
        spec = query_to_spec(
            query,
            [h.name for h in holders],
            triple_source="dealer" if comparisons else "he",
            dealer=self.dealer if comparisons else None,
            deadline_s=self.deadline_s,
        )
        job = self.connection.submit(spec)
        info = job.watch(progress=self.progress, timeout=self.deadline_s + 30.0)
        if info.state != JobState.SUCCEEDED:
            raise refusal_error(info)
        out = (job.job_id, stats_query.release_from_arrays(job.result()))
        if self._cache is not None:
            self._cache.put(query, out)
        return out

    # -- low-level jobs --------------------------------------------------------------------

    def submit(
        self, spec: JobSpec | Mapping[str, Any] | str | Path, *, idempotency_key: str | None = None
    ) -> Job:
        """Submit a job of any registered kind (JobSpec, dict or YAML path); safe to retry."""
        return self.connection.submit(spec, idempotency_key=idempotency_key)

    def job(self, job_id: str) -> Job:
        """Handle of an existing job."""
        return self.connection.job(job_id)

    def status(self, job_id: str) -> JobInfo:
        """Status of a job."""
        return self.connection.status(job_id)

    def jobs(self, limit: int = 20) -> list[JobInfo]:
        """The caller's most recent jobs."""
        return self.connection.jobs(limit)

    def updates(self, job_id: str, timeout: float | None = None) -> Iterator[JobInfo]:
        """Status updates until the job is terminal."""
        return self.connection.updates(job_id, timeout=timeout)

    def watch(self, job_id: str, *, progress: bool = True, timeout: float | None = None) -> JobInfo:
        """Follow a job to a terminal state."""
        return self.connection.watch(job_id, progress=progress, timeout=timeout)

    def result(self, job_id: str, timeout: float | None = None) -> dict[str, FloatArray]:
        """The released result of a job as named arrays (JobFailedError if it failed)."""
        return self.connection.result(job_id, timeout=timeout)

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job."""
        return self.connection.cancel(job_id)


def _is_numeric(dtype: str) -> bool:
    try:
        dt = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return bool(pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt))


def stats_tables(spec: JobSpec, result: Mapping[str, FloatArray]) -> list[tuple[str, Any]]:
    """A ``stats_query`` result as titled pandas tables (for ``privcomp submit``)."""
    p = spec.params
    cols = list(p.get("columns", []))
    rel = stats_query.release_from_arrays(result)
    moments: Moments | None
    quant: QuantileRelease | None
    if isinstance(rel, tuple):
        moments, quant = rel
    elif isinstance(rel, Moments):
        moments, quant = rel, None
    else:
        moments, quant = None, rel
    out: list[tuple[str, Any]] = []
    stat = p.get("statistic")
    if moments is not None and stat == "cells":
        by = cols[0]
        if p.get("bins"):
            index: pd.Index = pd.IntervalIndex.from_breaks(p["bins"], closed="left", name=by)
        else:
            index = pd.Index(moments.labels, name=by)
        out.append(("count", pd.Series(moments.rows.astype(np.int64), index=index, name="count")))
    elif moments is not None:
        index = pd.Index(moments.labels or ["all"], name=p.get("group_by"))
        figs = {"count": moments.count, "sum": moments.total, "mean": moments.mean}
        if moments.var is not None:
            figs.update(var=moments.var, std=np.sqrt(moments.var))
        for op in [o for o in p.get("ops", []) if o in figs]:
            out.append((op, pd.DataFrame(figs[op], index=index, columns=cols)))
        for op, mat in (("cov", moments.cov), ("corr", moments.corr)):
            if mat is not None and op in p.get("ops", []):
                out.append((op, pd.DataFrame(mat, index=cols, columns=cols)))
    if quant is not None:
        qs = pd.Index([float(q) for q in p.get("quantiles", [])], name="quantile")
        out.append(("quantiles", pd.DataFrame(quant.values, index=qs, columns=cols)))
    return out


def connect(
    address: str,
    *,
    pki_dir: str | Path | None = None,
    analyst: str | None = None,
    identity: Identity | None = None,
    call_timeout: float = CALL_TIMEOUT_S,
    triples: str = "he",
    dealer: str | None = None,
    cache: bool = True,
    deadline_s: float = STATS_DEADLINE_S,
    progress: bool = False,
) -> Federation:
    """Connect to a coordinator as an analyst: the deployed twin of :func:`privcomp.local`.

    Parameters
    ----------
    address:
        ``host:port`` of the coordinator.
    pki_dir, analyst:
        Directory written by ``privcomp certs`` and the analyst name (loads
        ``analyst_<name>.pem/.key/.token`` and ``ca.pem``).
    identity:
        Alternatively, the analyst's :class:`~privcomp.rpc.pki.Identity` directly.
    call_timeout:
        Deadline of each unary call.
    triples, dealer:
        Correlated randomness of comparisons and of a join's cross-party products: ``"he"``
        (default, no third party) or ``"dealer"`` with the name of a registered dealer party
        (trusted helper, explicit).
    cache:
        Answer an identical repeated query with the identical earlier result.
    deadline_s:
        Global deadline of each statistics job.
    progress:
        Show a progress bar per job.

    Examples
    --------
    >>> fed = pc.connect("127.0.0.1:7000", pki_dir="pki", analyst="alice")  # doctest: +SKIP
    >>> fed.table("patients")["bmi"].mean()  # doctest: +SKIP
    """
    conn = _connect_rpc(
        address, pki_dir=pki_dir, analyst=analyst, identity=identity, call_timeout=call_timeout
    )
    who = identity.name if identity is not None else f"analyst:{analyst}"
    return Federation(
        conn,
        requester=who,
        triples=triples,
        dealer=dealer,
        cache=cache,
        deadline_s=deadline_s,
        progress=progress,
    )


__all__ = [
    "Connection",
    "Federation",
    "Job",
    "JobInfo",
    "JobSpec",
    "JobState",
    "PartySummary",
    "connect",
    "refusal_error",
    "stats_tables",
]
