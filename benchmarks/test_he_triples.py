"""Throughput of HE-generated correlated randomness (Paillier OLE) next to the trusted dealer.

Run (figures): ``pytest benchmarks/test_he_triples.py --benchmark-group-by=group
--benchmark-columns=median,rounds`` — items/s = ``extra_info["items"]`` / median.
Smoke (CI): ``pytest benchmarks/test_he_triples.py --benchmark-disable`` runs each body once.

Every party runs in this one process on the in-memory network, so a rate is the whole
federation's rate with all parties sharing the machine's cores (a real deployment gives each
party its own machine). 2048-bit Paillier keys, generated once per module; the one-off key
exchange is excluded. The dealer (``TrustedDealer``, a trusted third party) runs the same calls on
the same network for the ratio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from privcomp.backends.paillier import keygen
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.he_triples import PaillierTripleSource
from privcomp.transport.memory import InMemoryNetwork

KEYS = {p: keygen(2048) for p in range(3)}
#: Items per call: (kind, elements). AND triples count 64-bit words; the others elements.
SIZES = {"mul": 1200, "matmul": 8, "and": 16, "dabits": 1200, "trunc": 16, "edabits": 16}

Call = Callable[[PartyContext], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "mul": lambda c: c.triples.mul_triples(c, (SIZES["mul"],)),
    "matmul": lambda c: c.triples.matmul_triples(c, (SIZES["matmul"],) * 2, (SIZES["matmul"],) * 2),
    "and": lambda c: c.triples.and_triples(c, (SIZES["and"],)),
    "dabits": lambda c: c.triples.dabits(c, (SIZES["dabits"],)),
    "trunc": lambda c: c.triples.trunc_pairs(c, (SIZES["trunc"],), 16),
    "edabits": lambda c: c.triples.edabits(c, (SIZES["edabits"],)),
}


def _sources(kind: str, n: int) -> list[Any]:
    if kind == "dealer":
        dealer = TrustedDealer(n)
        return [dealer] * n
    return [PaillierTripleSource(keypairs={p: KEYS[p]}) for p in range(n)]


def _round(sources: list[Any], call: Call) -> int:
    """Run ``call`` for every party; return the bytes all parties sent."""
    n = len(sources)

    async def main() -> int:
        net = InMemoryNetwork(n, timeout=600)
        ctxs = [PartyContext(transport=net.transports[p], triples=sources[p]) for p in range(n)]
        await asyncio.gather(*(call(c) for c in ctxs))
        return sum(t.stats.bytes_sent for t in net.transports)

    return asyncio.run(main())


@pytest.mark.parametrize("source", ["paillier", "dealer"])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("what", list(CALLS))
def test_material_rate(benchmark: BenchmarkFixture, what: str, n: int, source: str) -> None:
    if what in {"trunc", "edabits", "and", "matmul"} and n == 2 and source == "paillier":
        pytest.skip("reported for 3 parties only (keeps the smoke run short)")
    sources = _sources(source, n)
    # Key exchange once, outside the measurement.
    _round(sources, lambda c: c.triples.mul_triples(c, (1,)))
    benchmark.group = f"{what} n={n}"
    items = SIZES[what] ** (3 if what == "matmul" else 1)
    benchmark.extra_info["items"] = items
    sent = benchmark.pedantic(_round, args=(sources, CALLS[what]), rounds=3, iterations=1)
    benchmark.extra_info["bytes_per_item"] = sent / items
