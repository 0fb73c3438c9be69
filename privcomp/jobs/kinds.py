"""Registry of job kinds: validated parameters mapped to protocol code (layer: jobs).

A job never carries code: it names a kind registered here, and the kind validates its
parameters, tells each party's policy what the job will use and runs the *same* protocol
functions that run on the in-memory network (:mod:`privcomp.protocols`).

Kinds
-----
``stats``
    Horizontal joint statistics of one numeric column held by every party: count, sum, mean and
    sample variance (centred second pass), via the exact wide-ring secure sum. Optionally the
    secure product of two parties' local aggregates (``params.product``), computed with a
    Beaver multiplication and truncation on fixed-point shares; only the product is released.
``stats_query``
    One pandas-style statistics query (moments, quantiles, describe, value counts, histograms,
    group-bys, filters, PSI joins) as validated data (:mod:`privcomp.jobs.stats_query`). Each
    worker runs it through its own :class:`~privcomp.policy.worker.PartyWorker` — the same
    programs and per-party policy enforcement as ``pc.local`` — so the kind's ``run`` is never
    called directly.
``bench_mul``
    Benchmark: ``n`` elementwise Beaver multiplications of two seeded random vectors input by
    parties 0 and 1; releases the sum of the products. Needs no dataset; a worker accepts it
    only if its configuration allows benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from privcomp.core.ring import ring_sum, to_signed
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ConfigurationError
from privcomp.jobs import stats_query
from privcomp.jobs.model import JobSpec
from privcomp.protocols.arithmetic import mul, mul_fixed
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import input_arrays, reveal
from privcomp.protocols.stats import secure_sum_floats
from privcomp.types import FloatArray

#: ``progress(phase, fraction)``
ProgressFn = Callable[[str, float], None]
Released = dict[str, FloatArray]
AGGREGATES = ("count", "sum", "mean")


@dataclass(frozen=True, slots=True)
class LocalData:
    """One party's columns for a job (numeric columns as float64)."""

    columns: Mapping[str, FloatArray]

    @property
    def n_rows(self) -> int:
        """Number of rows (0 if there is no column)."""
        return len(next(iter(self.columns.values()))) if self.columns else 0


class JobKind(Protocol):
    """What a registered kind provides."""

    name: str
    needs_dataset: bool

    def validate(self, spec: JobSpec) -> None:
        """Raise ConfigurationError on invalid parameters."""
        ...

    def usage(self, spec: JobSpec, party: str) -> tuple[set[str], set[str]]:
        """Columns and operations ``party`` contributes to (for its policy check)."""
        ...

    async def run(
        self, ctx: PartyContext, spec: JobSpec, data: LocalData, progress: ProgressFn
    ) -> Released:
        """Run the protocol; return the released values (identical at every party)."""
        ...


def _str_param(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"parameter {key!r} must be a non-empty string")
    return value


def _local_aggregate(data: LocalData, column: str, agg: str) -> float:
    x = data.columns[column]
    if agg == "count":
        return float(len(x))
    if agg == "sum":
        return float(np.sum(x))
    return float(np.mean(x)) if len(x) else 0.0


class StatsKind:
    """Joint count/sum/mean/variance of a column, plus an optional cross-party product."""

    name = "stats"
    needs_dataset = True

    def validate(self, spec: JobSpec) -> None:
        """Check ``column`` and the optional ``product`` block."""
        p = spec.params
        unknown = set(p) - {"column", "product", "dealer"}
        if unknown:
            raise ConfigurationError(f"unknown stats parameters: {sorted(unknown)}")
        _str_param(p, "column")
        if not spec.dataset:
            raise ConfigurationError("stats needs a dataset")
        prod = p.get("product")
        if prod is None:
            return
        if not isinstance(prod, Mapping) or set(prod) != {"left", "right"}:
            raise ConfigurationError("product must have exactly 'left' and 'right'")
        sides = []
        for side in ("left", "right"):
            s = prod[side]
            if not isinstance(s, Mapping) or set(s) != {"party", "agg", "column"}:
                raise ConfigurationError(f"product.{side} needs party, agg and column")
            if s["party"] not in spec.parties:
                raise ConfigurationError(f"product.{side}.party is not a job party")
            if s["agg"] not in AGGREGATES:
                raise ConfigurationError(f"product.{side}.agg must be one of {AGGREGATES}")
            _str_param(s, "column")
            sides.append(s["party"])
        if sides[0] == sides[1]:
            raise ConfigurationError("product needs two different parties")

    def usage(self, spec: JobSpec, party: str) -> tuple[set[str], set[str]]:
        """The column and ops; a product side adds its column and aggregate."""
        cols = {spec.params["column"]}
        ops = {"count", "sum", "mean", "var"}
        prod = spec.params.get("product")
        if prod:
            for side in ("left", "right"):
                if prod[side]["party"] == party:
                    cols.add(prod[side]["column"])
                    ops.add(prod[side]["agg"])
        return cols, ops

    async def run(
        self, ctx: PartyContext, spec: JobSpec, data: LocalData, progress: ProgressFn
    ) -> Released:
        """Protocol: two exact secure sums (count+sum, then centred squares), then the product.

        Security: only the released aggregates are learned (secure sums reveal totals only);
        the product reveals the product alone. Cost: 2 rounds per secure sum (+1 agreement),
        product: 1 input round + 2 (Beaver + truncation) + 1 reveal.
        """
        column = spec.params["column"]
        x = data.columns[column]
        progress("aggregate", 0.1)
        n, s = await secure_sum_floats(ctx, np.array([len(x), np.sum(x)]), what=f"{column} sums")
        if n < 2:
            raise ConfigurationError(f"column {column!r} has fewer than 2 rows in total")
        mean = s / n
        progress("variance", 0.4)
        (ss,) = await secure_sum_floats(
            ctx, np.array([np.sum((x - mean) ** 2)]), what=f"{column} centred squares"
        )
        out: Released = {
            "count": np.array(n),
            "sum": np.array(s),
            "mean": np.array(mean),
            "var": np.array(ss / (n - 1)),
        }
        prod = spec.params.get("product")
        if prod:
            progress("product", 0.7)
            out["product"] = await self._product(ctx, spec, data, prod)
        progress("reveal", 0.95)
        return out

    async def _product(
        self, ctx: PartyContext, spec: JobSpec, data: LocalData, prod: Mapping[str, Any]
    ) -> FloatArray:
        me = spec.parties[ctx.party_id]
        mine = np.zeros(0, dtype=np.uint64)
        for side in ("left", "right"):
            s = prod[side]
            if s["party"] == me:
                value = _local_aggregate(data, s["column"], s["agg"])
                mine = ctx.fixed.encode(np.array([value]), column=s["column"])
        shares = await input_arrays(ctx, mine)
        left = shares[spec.parties.index(prod["left"]["party"])][0]
        right = shares[spec.parties.index(prod["right"]["party"])][0]
        z = await mul_fixed(ctx, left, right, ctx.fixed.frac_bits)
        return np.asarray(ctx.fixed.decode(await reveal(ctx, z)).reshape(()))


class BenchMulKind:
    """``n`` Beaver multiplications of seeded random vectors (benchmarks only)."""

    name = "bench_mul"
    needs_dataset = False

    def validate(self, spec: JobSpec) -> None:
        """``n`` (1..10^8) and ``seed`` integers."""
        p = spec.params
        n, seed = p.get("n"), p.get("seed", 0)
        if not isinstance(n, int) or not 1 <= n <= 10**8 or not isinstance(seed, int):
            raise ConfigurationError("bench_mul needs integer n in [1, 1e8] and integer seed")

    def usage(self, spec: JobSpec, party: str) -> tuple[set[str], set[str]]:
        """No columns and no operation on data (the worker must allow benchmarks)."""
        return set(), set()

    @staticmethod
    def inputs(n: int, seed: int, party: int) -> np.ndarray:
        """The seeded benchmark inputs (small integers, so the released sum is exact)."""
        raw = InsecureSeededRandom(seed * 1000 + party).ring_elements((n,))
        return np.asarray(raw % np.uint64(1000), dtype=np.uint64)

    async def run(
        self, ctx: PartyContext, spec: JobSpec, data: LocalData, progress: ProgressFn
    ) -> Released:
        """Input (1 round), Beaver multiplication (1 round + triples), reveal of the sum."""
        n, seed = int(spec.params["n"]), int(spec.params.get("seed", 0))
        progress("input", 0.1)
        x = self.inputs(n, seed, ctx.party_id) if ctx.party_id < 2 else np.zeros(0, np.uint64)
        shares = await input_arrays(ctx, x)
        progress("multiply", 0.3)
        z = await mul(ctx, shares[0][0], shares[1][0])
        progress("reveal", 0.9)
        total = await reveal(ctx, ring_sum(z).reshape(1))
        return {"sum": to_signed(total).astype(np.float64).reshape(())}


class StatsQueryKind:
    """A local-mode statistics query (see :mod:`privcomp.jobs.stats_query`)."""

    name = stats_query.KIND
    needs_dataset = True

    def validate(self, spec: JobSpec) -> None:
        """Check the query parameters (structure, names and sizes)."""
        if not spec.dataset:
            raise ConfigurationError("stats_query needs a dataset")
        stats_query.validate_params(spec.params, len(spec.parties))

    def usage(self, spec: JobSpec, party: str) -> tuple[set[str], set[str]]:
        """Columns and operations of the query (each worker's PartyWorker checks them)."""
        return stats_query.request_usage(spec.params)

    async def run(
        self, ctx: PartyContext, spec: JobSpec, data: LocalData, progress: ProgressFn
    ) -> Released:
        """Not used: the worker runs the query through its PartyWorker (policy + protocol)."""
        raise ConfigurationError("stats_query jobs run through the worker's PartyWorker")


REGISTRY: dict[str, JobKind] = {k.name: k for k in (StatsKind(), StatsQueryKind(), BenchMulKind())}


def get_kind(name: str) -> JobKind:
    """Look up a kind (ConfigurationError listing the known kinds if absent)."""
    kind = REGISTRY.get(name)
    if kind is None:
        raise ConfigurationError(f"unknown job kind {name!r}; known: {sorted(REGISTRY)}")
    return kind


def validate_spec(spec: JobSpec) -> None:
    """Validate a spec against its kind (and the dealer naming rule)."""
    get_kind(spec.kind).validate(spec)
    if spec.triple_source == "dealer":
        dealer = spec.params.get("dealer")
        if not isinstance(dealer, str) or not dealer or dealer in spec.parties:
            raise ConfigurationError(
                "triple_source 'dealer' needs params.dealer naming a helper party that is not "
                "one of the computing parties"
            )
