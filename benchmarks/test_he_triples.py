"""Throughput of the default correlated randomness (OT extension and Paillier OLE engines)
next to the trusted dealer.

Run (figures): ``pytest benchmarks/test_he_triples.py --benchmark-group-by=group
--benchmark-columns=median,rounds`` — items/s = ``extra_info["items"]`` / median.
Smoke (CI): ``pytest benchmarks/test_he_triples.py --benchmark-disable`` runs each body once.

Every party runs in this one process on the in-memory network, so a rate is the whole
federation's rate with all parties sharing the machine's cores (a real deployment gives each
party its own machine). 2048-bit Paillier keys, generated once per module; the one-off key
exchange is excluded. The dealer (``TrustedDealer``, a trusted third party) runs the same calls on
the same network for the ratio. Sources: ``ot`` = ``PaillierTripleSource()`` (the default: OT
extension for bit material and elementwise triples), ``paillier`` = the same class with
``bits="paillier", mul="paillier"`` (every product a Paillier OLE); base OTs excluded like keys.
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
from privcomp.protocols.ot import random_ots, setup_extensions
from privcomp.transport.memory import InMemoryNetwork

KEYS = {p: keygen(2048) for p in range(3)}
#: Items per call: (kind, elements). AND triples count 64-bit words; the others elements.
SIZES = {"mul": 1200, "matmul": 8, "and": 16, "dabits": 1200, "trunc": 16, "edabits": 16}
#: The OT engine (and the dealer next to it) runs bigger calls: small ones measure only overhead.
SIZES_OT = {"mul": 8192, "matmul": 8, "and": 4096, "dabits": 262144, "trunc": 2048, "edabits": 2048}
#: Random OTs per call between one pair (the raw extension rate).
OT_BATCH = 1 << 20

Call = Callable[[PartyContext], Awaitable[Any]]


def _calls(sizes: dict[str, int]) -> dict[str, Call]:
    return {
        "mul": lambda c: c.triples.mul_triples(c, (sizes["mul"],)),
        "matmul": lambda c: c.triples.matmul_triples(
            c, (sizes["matmul"],) * 2, (sizes["matmul"],) * 2
        ),
        "and": lambda c: c.triples.and_triples(c, (sizes["and"],)),
        "dabits": lambda c: c.triples.dabits(c, (sizes["dabits"],)),
        "trunc": lambda c: c.triples.trunc_pairs(c, (sizes["trunc"],), 16),
        "edabits": lambda c: c.triples.edabits(c, (sizes["edabits"],)),
    }


CALLS = _calls(SIZES)
CALLS_OT = _calls(SIZES_OT)


def _sources(kind: str, n: int) -> list[Any]:
    if kind.startswith("dealer"):
        dealer = TrustedDealer(n)
        return [dealer] * n
    if kind == "ot":
        return [PaillierTripleSource(keypairs={p: KEYS[p]}) for p in range(n)]
    engines = {"bits": "paillier", "mul": "paillier"}
    return [PaillierTripleSource(keypairs={p: KEYS[p]}, **engines) for p in range(n)]


def _round(sources: list[Any], call: Call) -> int:
    """Run ``call`` for every party; return the bytes all parties sent."""
    n = len(sources)

    async def main() -> int:
        net = InMemoryNetwork(n, timeout=600)
        ctxs = [PartyContext(transport=net.transports[p], triples=sources[p]) for p in range(n)]
        await asyncio.gather(*(call(c) for c in ctxs))
        return sum(t.stats.bytes_sent for t in net.transports)

    return asyncio.run(main())


@pytest.mark.parametrize("source", ["ot", "paillier", "dealer", "dealer-big"])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("what", list(CALLS))
def test_material_rate(benchmark: BenchmarkFixture, what: str, n: int, source: str) -> None:
    if what in {"trunc", "edabits", "and", "matmul"} and n == 2 and source != "dealer":
        pytest.skip("reported for 3 parties only (keeps the smoke run short)")
    if source in {"ot", "dealer-big"} and (what == "matmul" or n == 2):
        pytest.skip("matrix triples always use Paillier; OT rows are for 3 parties")
    sources = _sources(source, n)
    # Key exchange and base OTs once, outside the measurement.
    _round(sources, lambda c: c.triples.mul_triples(c, (1,)))
    _round(sources, lambda c: c.triples.dabits(c, (1,)))
    big = source in {"ot", "dealer-big"}
    sizes, calls = (SIZES_OT, CALLS_OT) if big else (SIZES, CALLS)
    benchmark.group = f"{what} n={n}" + (" (big calls)" if big else "")
    items = sizes[what] ** (3 if what == "matmul" else 1)
    benchmark.extra_info["items"] = items
    sent = benchmark.pedantic(_round, args=(sources, calls[what]), rounds=3, iterations=1)
    benchmark.extra_info["bytes_per_item"] = sent / items


def test_random_ot_rate(benchmark: BenchmarkFixture) -> None:
    """Raw IKNP rate: ``OT_BATCH`` random OTs (128-bit messages) between one pair per call."""

    async def main() -> None:
        net = InMemoryNetwork(2, timeout=600)
        src = PaillierTripleSource()
        ctxs = [PartyContext(transport=net.transports[p], triples=src) for p in range(2)]
        exts = await asyncio.gather(*(setup_extensions(c) for c in ctxs))

        def once() -> None:
            async def batch() -> None:
                await asyncio.gather(
                    random_ots(ctxs[0], exts[0][1], OT_BATCH),
                    random_ots(ctxs[1], exts[1][0], OT_BATCH),
                )

            asyncio.run_coroutine_threadsafe(batch(), loop).result()

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(benchmark.pedantic, once, rounds=5, iterations=1)

    benchmark.group = "random OTs, one pair"
    benchmark.extra_info["items"] = OT_BATCH
    asyncio.run(main())
