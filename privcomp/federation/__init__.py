"""``pc.local``: a federation of in-process parties with pandas-style joint statistics.

Each party is a :class:`~privcomp.policy.worker.PartyWorker` holding its own tables and its own
policy; every statistic is one job run by all parties holding the dataset, SPMD, over an
in-memory network with the same protocol code the gRPC workers run. Results are pandas objects
shaped as pandas shapes them on the pooled rows, with ``attrs["job_id"]`` and
``attrs["error_bound"]`` (an absolute bound of the same shape; see :func:`_bounds`).

Local mode simulates all parties in one process: it is for development, tests and notebooks.
Secure comparisons (quantiles, median, min, max, describe) consume correlated randomness from
``triples``: by default the parties generate it themselves with Paillier (``"he"``, no third
party); a trusted dealer (``"dealer"``) is an explicit opt-in. Sums, means, variances,
correlations, group-bys, counts and the vertical (PSI-joined) statistics need none.

Examples
--------
>>> import pandas as pd, privcomp as pc
>>> fed = pc.local({"a": {"t": pd.DataFrame({"x": range(20)})},
...                 "b": {"t": pd.DataFrame({"x": range(20, 40)})}})
>>> float(fed.table("t")["x"].mean())
19.5
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import json
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import pandas as pd

from privcomp.core.rng import RandomSource, SystemRandomSource
from privcomp.errors import ConfigurationError, PrivcompError, ProtocolAbort
from privcomp.policy.guard import ResultCache
from privcomp.policy.model import Policy
from privcomp.policy.query import Query
from privcomp.policy.worker import PartyWorker, Release
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.triples import TripleSource
from privcomp.transport.memory import InMemoryNetwork

T = TypeVar("T")

#: ``factory(n_parties)`` returns one source shared by a job's parties, or one per party.
TripleFactory: TypeAlias = Callable[[int], "TripleSource | Sequence[TripleSource]"]
#: What :func:`local` accepts as ``triples``.
Triples: TypeAlias = "str | TripleSource | TripleFactory"

#: Receive deadline inside a local job, in seconds: generous because HE preprocessing keeps the
#: peers of a party waiting; a failing party aborts the others at once anyway.
LOCAL_ROUND_TIMEOUT = 300.0


def _check_triples(triples: Triples) -> None:
    if isinstance(triples, str):
        if triples not in ("he", "dealer"):
            raise ConfigurationError(
                f"triples must be 'he', 'dealer', a TripleSource or a factory, got {triples!r}"
            )
    elif not (isinstance(triples, TripleSource) or callable(triples)):
        raise ConfigurationError("triples must be 'he', 'dealer', a TripleSource or a factory")


def _data_version(holders: Sequence[PartyWorker], query: Query) -> str | None:
    """Digest of the job parties' tables of ``query``, so the cache never serves an answer
    computed on data that changed since (in place or replaced). ``None``: not hashable, no
    caching."""
    names = (query.dataset,) if query.join is None else (query.dataset, query.join[0])
    h = hashlib.sha256()
    for w in holders:
        for name in names:
            df = w.datasets.get(name)
            if df is None:
                continue
            head = [w.name, name, *map(str, df.columns), *map(str, df.dtypes)]
            h.update(json.dumps(head).encode())
            try:
                h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
            except TypeError:
                return None
    return h.hexdigest()


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside Jupyter a loop is already running: use a private loop in a helper thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Federation:
    """In-process parties, each with its own data and policy (see :func:`local`)."""

    def __init__(
        self,
        workers: Sequence[PartyWorker],
        *,
        requester: str = "analyst",
        cache: bool = True,
        rng: RandomSource | None = None,
        triples: Triples = "he",
    ) -> None:
        _check_triples(triples)
        self._workers = list(workers)
        self.requester = requester
        self.triples = triples
        # One HE source per set of job parties: each party's Paillier key pair is generated at
        # its first comparison and kept for later jobs of the same parties (its own key).
        self._he: dict[tuple[str, ...], TripleSource] = {}
        self._cache: ResultCache[tuple[str, Release]] | None = ResultCache() if cache else None
        self._rng = rng if rng is not None else SystemRandomSource()
        self._jobs = itertools.count(1)

    def __repr__(self) -> str:
        source = self.triples if isinstance(self.triples, str) else type(self.triples).__name__
        return f"Federation(parties={[w.name for w in self._workers]}, triples={source!r})"

    def _sources(self, holders: Sequence[PartyWorker]) -> list[TripleSource]:
        """Each job party's source of correlated randomness (see :func:`local`)."""
        n = len(holders)
        made: TripleSource | Sequence[TripleSource]
        if self.triples == "he":
            key = tuple(w.name for w in holders)
            if key not in self._he:
                # Imported here: the HE source pulls in the Paillier engine, needed only now.
                from privcomp.protocols.he_triples import PaillierTripleSource

                self._he[key] = PaillierTripleSource()
            made = self._he[key]
        elif self.triples == "dealer":
            made = TrustedDealer(n, rng=self._rng)
        elif isinstance(self.triples, TripleSource):
            made = self.triples
        else:
            made = self.triples(n)  # type: ignore[operator]
        if isinstance(made, TripleSource):
            return [made] * n
        sources = list(made)
        if len(sources) != n:
            raise ConfigurationError(
                f"triple factory returned {len(sources)} sources for {n} parties"
            )
        return sources

    def parties(self) -> dict[str, dict[str, dict[str, str]]]:
        """Party name -> dataset -> column -> dtype (names and schemas only, never values)."""
        return {w.name: w.schemas() for w in self._workers}

    def table(self, dataset: str) -> Table:
        """The rows of every party holding ``dataset``, stacked (horizontal partitioning)."""
        holders = [w for w in self._workers if dataset in w.datasets]
        if not holders:
            raise ConfigurationError(f"no party holds a dataset {dataset!r}")
        frames = [w.datasets[dataset] for w in holders]
        columns = [str(c) for c in frames[0].columns if all(c in f.columns for f in frames[1:])]
        numeric = [
            c
            for c in columns
            if all(
                pd.api.types.is_numeric_dtype(f[c]) and not pd.api.types.is_bool_dtype(f[c])
                for f in frames
            )
        ]
        return Table(self, dataset, columns, numeric, None)

    def run(self, query: Query) -> tuple[str, Release]:
        """Run one job, or return the cached answer of an identical query: ``(job_id, result)``."""
        holders = self._holders(query)
        version = _data_version(holders, query) if self._cache is not None else None
        if self._cache is not None and version is not None:
            hit = self._cache.get(query, version)
            if hit is not None:
                return hit
        if len(holders) < 2:
            raise ConfigurationError(
                f"dataset {query.dataset!r} is held by {len(holders)} party; joint statistics "
                "need at least 2 parties"
            )
        job_id = f"job-{next(self._jobs):04d}-{self._rng.random_bytes(4).hex()}"
        result = _run_sync(self._job(holders, query, job_id))
        if self._cache is not None and version is not None:
            self._cache.put(query, (job_id, result), version)
        return job_id, result

    def _holders(self, query: Query) -> list[PartyWorker]:
        if query.join is None:
            return [w for w in self._workers if query.dataset in w.datasets]
        both = [
            w.name
            for w in self._workers
            if query.dataset in w.datasets and query.join[0] in w.datasets
        ]
        if both:
            raise ConfigurationError(f"parties {both} hold both joined datasets (not supported)")
        names = (query.dataset, query.join[0])
        return [w for w in self._workers if any(n in w.datasets for n in names)]

    async def _job(self, holders: list[PartyWorker], query: Query, job_id: str) -> Release:
        n = len(holders)
        net = InMemoryNetwork(n, rng=self._rng, timeout=LOCAL_ROUND_TIMEOUT)
        sources = self._sources(holders)
        ctxs = [
            PartyContext(transport=t, triples=s, rng=self._rng, job_id=job_id)
            for t, s in zip(net.transports, sources, strict=True)
        ]

        async def party(i: int, worker: PartyWorker) -> Release:
            try:
                return await worker.run(ctxs[i], query)
            except BaseException:
                # A failed party aborts the job at once: nobody waits for a round deadline.
                net.abort(i, "the party failed")
                raise

        outcomes = await asyncio.gather(
            *(party(i, w) for i, w in enumerate(holders)), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            # A failed job may leave a reused source's parties out of step: start afresh.
            self._he.pop(tuple(w.name for w in holders), None)
            # A party's own refusal explains the failure better than the others' aborts.
            own = [
                e
                for e in errors
                if isinstance(e, PrivcompError) and not isinstance(e, ProtocolAbort)
            ]
            raise (own or errors)[0]
        return outcomes[0]  # type: ignore[return-value]


def local(
    data: Mapping[str, Mapping[str, pd.DataFrame]],
    policies: Mapping[str, Mapping[str, Any] | Policy] | None = None,
    *,
    requester: str = "analyst",
    cache: bool = True,
    rng: RandomSource | None = None,
    triples: Triples = "he",
) -> Federation:
    """Create an in-process federation.

    Parameters
    ----------
    data:
        Party name -> dataset name -> that party's DataFrame.
    policies:
        Party name -> its policy (a :class:`~privcomp.policy.model.Policy` or its dict form);
        parties not listed get the default policy (k = 11, all columns and operations).
    requester:
        Identity of the data scientist (selects per-requester policy rules).
    cache:
        Answer an identical repeated query with the identical cached result.
    rng:
        Randomness for shares, job ids and the dealer (default: the OS CSPRNG).
    triples:
        Correlated randomness for secure comparisons (quantiles, median, min, max, describe),
        with the same meaning as in :func:`privcomp.simulation.simulate`:

        * ``"he"`` (default): the job's parties generate it themselves by Paillier-based
          oblivious linear evaluation (:class:`~privcomp.protocols.he_triples.
          PaillierTripleSource`); no third party, and any n-1 colluding parties learn nothing
          beyond the output. Costs Paillier work: each party generates a 2048-bit key pair at
          its first comparison (kept for later jobs of the same parties), and a quantile job
          of 3 parties takes seconds to tens of seconds (``benchmarks/results_stats.md``).
        * ``"dealer"``: an in-process :class:`~privcomp.protocols.dealer.TrustedDealer`,
          60-300 times faster on a quantile job, but a *trusted third party*: it knows all
          the material, so with the opened values it could unmask every comparison input.
          An explicit opt-in for tests, benchmarks and deployments that have a
          non-colluding helper party.
        * a :class:`~privcomp.protocols.triples.TripleSource` shared by the parties of every
          job (it must serve a fixed set of parties), or a factory ``f(n_parties)`` called per
          job that returns one source or one per party.

    Returns
    -------
    Federation

    Examples
    --------
    >>> fed = pc.local(data)  # doctest: +SKIP
    >>> fast = pc.local(data, triples="dealer")  # trusted third party, explicit  # doctest: +SKIP
    """
    policies = policies or {}
    unknown = set(policies) - set(data)
    if unknown:
        raise ConfigurationError(f"policies name unknown parties: {sorted(unknown)}")
    workers = [
        PartyWorker(name, dict(tables), Policy.from_dict(policies.get(name)))
        for name, tables in data.items()
    ]
    return Federation(workers, requester=requester, cache=cache, rng=rng, triples=triples)


# Imported last: the frames need Federation only for type hints.
from privcomp.federation.frames import Column, Condition, GroupBy, Released, Table  # noqa: E402
from privcomp.federation.joined import JoinedGroupBy, JoinedTable  # noqa: E402

__all__ = [
    "Column",
    "Condition",
    "Federation",
    "GroupBy",
    "JoinedGroupBy",
    "JoinedTable",
    "Released",
    "Table",
    "TripleFactory",
    "Triples",
    "local",
]
