"""Secret-sharing protocols, 3 parties on the in-memory network, dealer triples, vs plain numpy.

Groups (one per operation and size): ``online`` (preprocessing dealt beforehand, untimed),
``with_dealing`` (the TrustedDealer's seed-compressed dealing inside the timing) and ``numpy``
(the plaintext operation on the same arrays). extra_info records elements/s, rounds, and bytes
sent per party. Run::

    pytest benchmarks/test_mpc.py --benchmark-group-by=group --benchmark-columns=min,median,rounds

Smoke mode (CI): ``pytest benchmarks/test_mpc.py --benchmark-disable`` runs each body once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import InsecureSeededRandom
from privcomp.core.sharing import share
from privcomp.protocols import arithmetic as ar
from privcomp.protocols import comparison as cmp
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.primitives import input_arrays, reveal
from privcomp.transport.memory import InMemoryNetwork, InMemoryTransport

N_PARTIES = 3
SIZES = [10**4, 10**5, 10**6]
ROUNDS = {10**4: 15, 10**5: 7, 10**6: 5}
FX = FixedPoint(16)
_KINDS = (
    "mul_triples",
    "matmul_triples",
    "and_triples",
    "and_fan_triples",  # the dealer's AND triples with a shared mask (used by comparisons)
    "trunc_pairs",
    "edabits",
    "dabits",
)

Body = Callable[[PartyContext, tuple[Any, ...]], Awaitable[Any]]


class _Recorder:
    """Pass-through TripleSource that keeps every party's material (to replay it online)."""

    name = "recorder"

    def __init__(self, inner: TrustedDealer) -> None:
        self.inner = inner
        self.log: list[deque[Any]] = [deque() for _ in range(N_PARTIES)]

    def __getattr__(self, kind: str) -> Any:
        if kind not in _KINDS:
            raise AttributeError(kind)

        async def call(ctx: PartyContext, *args: Any) -> Any:
            got = await getattr(self.inner, kind)(ctx, *args)
            self.log[ctx.party_id].append(got)
            return got

        return call


class _Replay:
    """TripleSource that hands out material dealt beforehand (online phase only)."""

    name = "replay"

    def __init__(self, log: list[deque[Any]]) -> None:
        self.log = log

    def __getattr__(self, kind: str) -> Any:
        if kind not in _KINDS:
            raise AttributeError(kind)

        async def call(ctx: PartyContext, *args: Any) -> Any:
            return self.log[ctx.party_id].popleft()

        return call


def _run(body: Body, per_party: list[tuple[Any, ...]], source: Any) -> list[PartyContext]:
    net = InMemoryNetwork(N_PARTIES, timeout=600)
    ctxs = [
        PartyContext(transport=t, triples=source, fixed=FX, rng=InsecureSeededRandom(i))
        for i, t in enumerate(net.transports)
    ]

    async def main() -> None:
        await asyncio.gather(*(body(c, per_party[i]) for i, c in enumerate(ctxs)))

    asyncio.run(main())
    return ctxs


async def _share_reconstruct(ctx: PartyContext, args: tuple[Any, ...]) -> Any:
    shares = await input_arrays(ctx, FX.encode(args[0]))
    total = shares[0][0] + shares[1][0] + shares[2][0]
    return FX.decode(await reveal(ctx, total))


async def _mul_ring(ctx: PartyContext, args: tuple[Any, ...]) -> Any:
    return await ar.mul(ctx, args[0], args[1])


async def _mul_fixed(ctx: PartyContext, args: tuple[Any, ...]) -> Any:
    return await ar.mul_fixed(ctx, args[0], args[1], FX.frac_bits)


async def _lt(ctx: PartyContext, args: tuple[Any, ...]) -> Any:
    return await cmp.lt(ctx, args[0], args[1])


async def _eq(ctx: PartyContext, args: tuple[Any, ...]) -> Any:
    return await cmp.eq(ctx, args[0], args[1])


BODIES: dict[str, Body] = {
    "share_reconstruct": _share_reconstruct,
    "mul_ring": _mul_ring,
    "mul_fixed": _mul_fixed,
    "lt": _lt,
    "eq": _eq,
}


def _data(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(size)
    a, b = g.normal(size=size) * 100, g.normal(size=size) * 100
    b[::4] = a[::4]  # ties, so that eq is not all zeros
    return a, b, g.normal(size=size) * 100


def _party_args(op: str, size: int) -> list[tuple[Any, ...]]:
    a, b, c = _data(size)
    if op == "share_reconstruct":
        return [(a,), (b,), (c,)]
    rng = InsecureSeededRandom(size)
    if op == "mul_ring":
        xa, xb = a.astype(np.int64).view(np.uint64), b.astype(np.int64).view(np.uint64)
    else:
        xa, xb = FX.encode(a), FX.encode(b)
    sa, sb = share(xa, N_PARTIES, rng), share(xb, N_PARTIES, rng)
    return [(sa[i], sb[i]) for i in range(N_PARTIES)]


def _plain(op: str, size: int) -> Callable[[], Any]:
    a, b, c = _data(size)
    ia, ib = a.astype(np.int64), b.astype(np.int64)
    return {
        "share_reconstruct": lambda: a + b + c,
        "mul_ring": lambda: ia * ib,
        "mul_fixed": lambda: a * b,
        "lt": lambda: a < b,
        "eq": lambda: a == b,
    }[op]


def _record(benchmark: Any, size: int, ctxs: list[PartyContext] | None, runs: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["elements_per_s"] = size / stats.stats.median
    benchmark.extra_info["n_parties"] = N_PARTIES
    if ctxs is not None:
        t = ctxs[0].transport
        assert isinstance(t, InMemoryTransport)
        benchmark.extra_info["rounds"] = ctxs[0].rounds
        benchmark.extra_info["bytes_sent_per_party"] = t.stats.bytes_sent // runs
        benchmark.extra_info["messages_per_party"] = t.stats.messages_sent // runs


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", list(BODIES))
def test_online(benchmark: Any, op: str, size: int) -> None:
    benchmark.group = f"{op}-{size:.0e}"
    body, args = BODIES[op], _party_args(op, size)
    last: list[list[PartyContext]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        rec = _Recorder(TrustedDealer(N_PARTIES))
        _run(body, args, rec)  # deals the material this run will consume (untimed)
        return (_Replay(rec.log),), {}

    def target(source: _Replay) -> None:
        last.append(_run(body, args, source))

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS[size], iterations=1)
    _record(benchmark, size, last[-1], 1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", [o for o in BODIES if o != "share_reconstruct"])
def test_with_dealing(benchmark: Any, op: str, size: int) -> None:
    benchmark.group = f"{op}-{size:.0e}"
    body, args = BODIES[op], _party_args(op, size)
    last: list[list[PartyContext]] = []
    dealers: list[TrustedDealer] = []

    def target() -> None:
        dealers.append(TrustedDealer(N_PARTIES))
        last.append(_run(body, args, dealers[-1]))

    benchmark.pedantic(target, rounds=ROUNDS[size], iterations=1)
    _record(benchmark, size, last[-1], 1)
    dealt = dealers[-1].stats.bytes_dealt
    benchmark.extra_info["dealer_bytes_to_party0"] = dealt[0]
    benchmark.extra_info["dealer_bytes_to_last_party"] = dealt[N_PARTIES - 1]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", list(BODIES))
def test_numpy(benchmark: Any, op: str, size: int) -> None:
    benchmark.group = f"{op}-{size:.0e}"
    benchmark.pedantic(_plain(op, size), rounds=ROUNDS[size] * 5, iterations=1)
    _record(benchmark, size, None, 1)


def test_results_are_correct() -> None:
    """The benchmarked bodies compute the right thing (checked once, small size)."""
    size = 1000
    a, b, _c = _data(size)
    for op in ("mul_ring", "mul_fixed", "lt", "eq"):
        args = _party_args(op, size)
        outs: list[Any] = []

        async def body(
            ctx: PartyContext, arg: tuple[Any, ...], op: str = op, outs: list[Any] = outs
        ) -> None:
            z = await BODIES[op](ctx, arg)
            outs.append(await reveal(ctx, z))

        _run(body, args, TrustedDealer(N_PARTIES))
        if op == "mul_ring":
            np.testing.assert_array_equal(
                outs[0].view(np.int64), a.astype(np.int64) * b.astype(np.int64)
            )
        elif op == "mul_fixed":
            np.testing.assert_allclose(FX.decode(outs[0]), a * b, atol=0.01)
        elif op == "lt":
            np.testing.assert_array_equal(
                outs[0], (FX.encode(a).view(np.int64) < FX.encode(b).view(np.int64))
            )
        else:
            np.testing.assert_array_equal(outs[0], FX.encode(a) == FX.encode(b))
