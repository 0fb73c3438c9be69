"""Round counts equal the docstrings; failures end fast; the sync façade works in a running loop."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import privcomp.protocols.comparison as cmp
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import EncodingError, EncodingOverflowError, ProtocolError, RoundTimeoutError
from privcomp.protocols.aggregate import secure_sum
from privcomp.protocols.context import PartyContext
from privcomp.protocols.secret_array import SecretArray
from privcomp.simulation import simulate, simulate_async
from privcomp.transport.memory import InMemoryTransport

# (name, coroutine on two SecretArrays, rounds stated in the docstrings)
CASES: list[tuple[str, Any, int]] = [
    ("reveal", lambda a, b: a.reveal(), 1),
    ("reveal_to", lambda a, b: a.reveal_to(1), 1),
    ("mul_fixed", lambda a, b: a.mul(b), 2),
    ("mul_public_fixed", lambda a, b: a.mul(0.5), 1),
    ("mul_public_int", lambda a, b: a.mul(3), 0),
    ("matmul", lambda a, b: a.reshape(2, 4).matmul(b.reshape(4, 2)), 2),
    ("dot", lambda a, b: a.dot(b), 2),
    ("lt", lambda a, b: a.lt(b), 7),
    ("gt", lambda a, b: a.gt(b), 7),
    ("eq", lambda a, b: a.eq(b), 7),
    ("maximum", lambda a, b: a.maximum(b), 8),
    ("minimum", lambda a, b: a.minimum(b), 8),
    ("relu", lambda a, b: a.relu(), 8),
    ("sign", lambda a, b: a.sign(), 7),
]


def _tags(ctx: PartyContext) -> set[str]:
    assert isinstance(ctx.transport, InMemoryTransport)
    return set(ctx.transport.tags_sent)


@pytest.mark.parametrize(("name", "op", "rounds"), CASES, ids=[c[0] for c in CASES])
async def test_round_counts_match_docstrings(name: str, op: Any, rounds: int) -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        r0, t0 = ctx.rounds, _tags(ctx)
        await op(xs[0], xs[1])
        return ctx.rounds - r0, _tags(ctx) - t0

    g = np.random.default_rng(0)
    outs = await simulate_async(program, [g.normal(size=8) for _ in range(3)], triples="dealer")
    assert all(o[0] == rounds for o in outs), name
    all_tags = set().union(*(o[1] for o in outs))  # one tag per round, across all parties
    assert len(all_tags) == rounds, name


async def test_integer_mul_input_and_secure_sum_rounds() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        r0 = ctx.rounds
        xs = await ctx.input(x)
        r1 = ctx.rounds
        await xs[0].mul(xs[1])
        r2 = ctx.rounds
        total = await secure_sum(ctx, x.view(np.uint64))
        return r1 - r0, r2 - r1, ctx.rounds - r2, total.view(np.int64)

    outs = await simulate_async(program, [np.arange(4)] * 3, triples="dealer")
    assert [o[:3] for o in outs] == [(1, 1, 2)] * 3
    np.testing.assert_array_equal(outs[0][3], 3 * np.arange(4))


async def test_input_sends_only_shape_and_seed() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        await ctx.input(x)
        assert isinstance(ctx.transport, InMemoryTransport)
        return ctx.transport.stats.bytes_sent

    outs = await simulate_async(program, [np.zeros((1000, 3))] * 3, triples="dealer")
    # per peer: codec header (6 + 8) + (kind, ndim, 2 dims, 2 seed words) * 8 bytes
    assert outs == [2 * (14 + 6 * 8)] * 3


async def test_failing_party_raises_its_error_quickly() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        if ctx.party_id == 1:
            raise ProtocolError("party 1 gave up")
        return await (await xs[0].lt(xs[1])).reveal()

    start = time.perf_counter()
    with pytest.raises(ProtocolError, match="party 1"):
        await simulate_async(program, [np.ones(3)] * 3, triples="dealer", timeout=30)
    assert time.perf_counter() - start < 2.0  # the others were aborted, not timed out


async def test_silent_party_times_out_within_deadline() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        if ctx.party_id == 2:
            return None  # leaves without taking part in the next round
        return await xs[0].reveal()

    start = time.perf_counter()
    with pytest.raises(RoundTimeoutError):
        await simulate_async(program, [np.ones(3)] * 3, triples="dealer", timeout=0.2)
    assert time.perf_counter() - start < 2.0


async def test_nan_and_out_of_range_inputs_raise_encoding_errors() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        return await xs[0].reveal()

    with pytest.raises(EncodingError) as info:
        await simulate_async(program, [np.array([1.0, np.nan]), np.ones(2)], triples="dealer")
    assert "NaN" in str(info.value)
    with pytest.raises(EncodingOverflowError):
        await simulate_async(program, [np.ones(2), np.array([1e300])], triples="dealer")
    with pytest.raises(EncodingOverflowError):
        await simulate_async(program, [np.ones(2), np.array([2**62])], triples="dealer")


async def test_sync_simulate_inside_running_loop_uses_helper_thread() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        return await (xs[0] + xs[1]).reveal()

    outs = simulate(program, [np.ones(2), np.full(2, 2.0)], triples="dealer")
    np.testing.assert_allclose(outs[1], [3.0, 3.0])


def test_issue_example_sync() -> None:
    g = np.random.default_rng(5)
    a, b, c = (g.normal(size=50) * 10 for _ in range(3))

    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        s = xs[0] + xs[1]
        p = await xs[0].mul(xs[1])
        lt = await xs[0].lt(xs[1])
        return await s.reveal(), await p.reveal(), await lt.reveal()

    outs = simulate(program, inputs=[a, b, c], triples="dealer", rng=InsecureSeededRandom(1))
    assert len(outs) == 3
    s, p, lt = outs[2]
    np.testing.assert_allclose(s, a + b, atol=2e-5)
    np.testing.assert_allclose(p, a * b, atol=1e-3)
    np.testing.assert_array_equal(lt, (a < b).astype(np.int64))


def test_simulate_rejects_bad_configuration() -> None:
    async def program(ctx: PartyContext, x: Any) -> Any:
        return x

    with pytest.raises(ValueError, match="at least 2"):
        simulate(program, [1], triples="dealer")
    with pytest.raises(ValueError, match="triples"):
        simulate(program, [1, 2], triples="nope")
    assert simulate(program, [1, 2], triples=lambda n: [cmp_dealer(n)] * n) == [1, 2]


def cmp_dealer(n: int) -> Any:
    from privcomp.protocols.dealer import TrustedDealer

    return TrustedDealer(n)


def test_module_docs_state_rounds() -> None:
    for fn, rounds in [
        (cmp.msb, "7 rounds"),
        (cmp.lt, "7 rounds"),
        (cmp.eq, "7 rounds"),
        (cmp.maximum, "8 rounds"),
        (cmp.minimum, "8 rounds"),
        (cmp.relu, "8 rounds"),
        (cmp.sign, "7 rounds"),
    ]:
        assert rounds in (fn.__doc__ or "")
    assert "1 round" in (SecretArray.reveal.__doc__ or "")


@pytest.mark.slow
def test_default_source_is_paillier() -> None:
    """``triples="he"`` (the default) runs the same program without any dealer."""

    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        p = await xs[0].mul(xs[1])
        c = await xs[0].lt(xs[1])
        return ctx.triples.name, await p.reveal(), await c.reveal()

    a, b = np.array([1.5, -2.0, 3.25]), np.array([2.0, 4.0, -1.0])
    outs = simulate(program, [a, b])
    name, p, c = outs[0]
    assert name == "paillier-ole"
    np.testing.assert_allclose(p, a * b, atol=1e-4)
    np.testing.assert_array_equal(c, (a < b).astype(np.int64))


def test_package_attribute_simulate_is_the_function() -> None:
    import privcomp
    import privcomp.simulation  # importing the module must not shadow pc.simulate

    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        xs = await ctx.input(x)
        return await (xs[0] + xs[1]).reveal()

    outs = privcomp.simulate(program, [np.ones(2), np.ones(2)], triples="dealer")
    np.testing.assert_allclose(outs[0], [2.0, 2.0])
