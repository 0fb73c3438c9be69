"""Every protocol against the numpy answer for 2, 3 and 5 parties, plain and delayed/reordered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from privcomp.core.rng import InsecureSeededRandom
from privcomp.protocols import aggregate, arithmetic, comparison, primitives
from privcomp.protocols.context import PartyContext
from privcomp.protocols.secret_array import SecretArray
from privcomp.simulate import simulate_async

PARTIES = [2, 3, 5]
NETS = [
    pytest.param({}, id="plain"),
    pytest.param({"delay": 0.002, "reorder": True}, id="delayed"),
]
F = 16


def _data(n: int, size: int = 40, scale: float = 50.0) -> list[np.ndarray]:
    g = np.random.default_rng(100 + n)
    return [g.normal(size=size) * scale for _ in range(n)]


def _fx_tol(*xs: np.ndarray) -> np.ndarray:
    """Fixed-point product error bound: inputs rounded to 2^-17, result to 2^-16 (+1 ulp)."""
    return sum(np.abs(x) for x in xs) * 2.0**-17 + 2.0**-15


def _assert_within(got: np.ndarray, want: np.ndarray, tol: np.ndarray | float) -> None:
    err = np.abs(np.asarray(got) - want)
    assert np.all(err <= tol), f"max error {err.max():.3g}"


async def _run(
    body: Callable[[PartyContext, list[SecretArray]], Awaitable[Any]],
    inputs: list[Any],
    **kw: Any,
) -> list[Any]:
    async def program(ctx: PartyContext, x: Any) -> Any:
        xs = await ctx.input(x)
        return await body(ctx, xs)

    return await simulate_async(
        program, inputs, triples="dealer", rng=InsecureSeededRandom(7), timeout=20, **kw
    )


def _same_everywhere(outs: list[Any]) -> Any:
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    return outs[0]


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("n", PARTIES)
async def test_input_reveal_add_sub_neg_scale(n: int, net: dict[str, Any]) -> None:
    xs = _data(n)

    async def body(ctx: PartyContext, s: list[SecretArray]) -> Any:
        total = s[0]
        for v in s[1:]:
            total = total + v
        lin = -(s[0] - s[1]) * 3 + 2.5
        return await total.reveal(), await lin.reveal(), await s[-1].reveal_to(0)

    outs = await _run(body, xs, **net)
    total, lin, _ = outs[0]
    np.testing.assert_allclose(total, sum(xs), atol=n * 2.0**-16)
    np.testing.assert_allclose(lin, -(xs[0] - xs[1]) * 3 + 2.5, atol=1e-4)
    np.testing.assert_allclose(outs[0][2], xs[-1], atol=2.0**-16)
    assert all(o[2] is None for o in outs[1:])


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("n", PARTIES)
async def test_mul_ring_and_fixed(n: int, net: dict[str, Any]) -> None:
    xs = _data(n)
    ints = [np.arange(-20, 20) * (i + 3) for i in range(n)]

    async def body(ctx: PartyContext, s: list[SecretArray]) -> Any:
        return await (await s[0].mul(s[1])).reveal()

    fx = _same_everywhere(await _run(body, xs, **net))
    _assert_within(fx, xs[0] * xs[1], _fx_tol(xs[0], xs[1]))
    ring = _same_everywhere(await _run(body, ints, **net))
    np.testing.assert_array_equal(ring, ints[0] * ints[1])
    assert ring.dtype == np.int64


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("n", PARTIES)
async def test_matmul_dot_and_public_mul(n: int, net: dict[str, Any]) -> None:
    g = np.random.default_rng(n)
    inputs = [g.normal(size=(4, 6)) for _ in range(n)]

    async def body(ctx: PartyContext, s: list[SecretArray]) -> Any:
        a, b = s[0], s[1]
        m = await a.matmul(b.T)
        d = await a[0].dot(b[1])
        v = await a.matmul(b[0])
        p = await a.mul(0.3)
        return await m.reveal(), await d.reveal(), await v.reveal(), await p.reveal()

    m, d, v, p = (await _run(body, inputs, **net))[0]
    a, b = inputs[0], inputs[1]
    np.testing.assert_allclose(m, a @ b.T, atol=1e-3)
    np.testing.assert_allclose(d, a[0] @ b[1], atol=1e-3)
    assert d.shape == ()
    np.testing.assert_allclose(v, a @ b[0], atol=1e-3)
    np.testing.assert_allclose(p, a * 0.3, atol=1e-4)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("n", PARTIES)
async def test_comparisons(n: int, net: dict[str, Any]) -> None:
    xs = _data(n, size=64)
    xs[1][:8] = xs[0][:8]  # ties for eq / lt
    xs[0][8:12] = [0.0, -0.0, 2.0**-16, -(2.0**-16)]  # values next to zero

    async def body(ctx: PartyContext, s: list[SecretArray]) -> Any:
        a, b = s[0], s[1]
        res = [
            await a.lt(b),
            await a.gt(b),
            await a.eq(b),
            await a.maximum(b),
            await a.minimum(b),
            await a.relu(),
            await a.sign(),
            await a.lt(1.5),
        ]
        return [await r.reveal() for r in res]

    lt, gt, eq, mx, mn, relu, sign, ltp = _same_everywhere(await _run(body, xs, **net))
    a, b = (np.rint(x * 2**F) / 2**F for x in xs[:2])  # compare the encoded values
    np.testing.assert_array_equal(lt, (a < b).astype(np.int64))
    np.testing.assert_array_equal(gt, (a > b).astype(np.int64))
    np.testing.assert_array_equal(eq, (a == b).astype(np.int64))
    np.testing.assert_array_equal(mx, np.maximum(a, b))
    np.testing.assert_array_equal(mn, np.minimum(a, b))
    np.testing.assert_array_equal(relu, np.maximum(a, 0))
    np.testing.assert_array_equal(sign, np.sign(a).astype(np.int64))
    np.testing.assert_array_equal(ltp, (a < 1.5).astype(np.int64))


async def test_comparison_extremes_of_the_range() -> None:
    """|x - y| close to 2^63 (the documented limit) still compares correctly."""
    big = 2**61 - 1
    g = np.random.default_rng(11)
    edge_a = np.array([big, -big, big, 0, -1, 1], dtype=np.int64)
    edge_b = np.array([-big, big, big - 1, -1, 0, -big], dtype=np.int64)
    a = np.concatenate([edge_a, g.integers(-big, big, 500)])
    b = np.concatenate([edge_b, g.integers(-big, big, 500)])

    async def body(ctx: PartyContext, s: list[SecretArray]) -> Any:
        return await (await s[0].lt(s[1])).reveal()

    out = (await _run(body, [a, b, np.zeros(1, dtype=np.int64)]))[0]
    np.testing.assert_array_equal(out, (a < b).astype(np.int64))

    async def body_eq(ctx: PartyContext, s: list[SecretArray]) -> Any:
        return await (await s[0].eq(s[1])).reveal()

    b[::3] = a[::3]
    out = (await _run(body_eq, [a, b]))[0]
    np.testing.assert_array_equal(out, (a == b).astype(np.int64))


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("n", PARTIES)
async def test_secure_sum_and_ring_level_functions(n: int, net: dict[str, Any]) -> None:
    ints = [np.arange(10, dtype=np.int64) * (i + 1) - 7 for i in range(n)]

    async def program(ctx: PartyContext, x: np.ndarray) -> Any:
        total = await aggregate.secure_sum(ctx, x.view(np.uint64))
        shares = [s for s, _ in await primitives.input_arrays(ctx, x.view(np.uint64))]
        z = arithmetic.add_public(ctx, arithmetic.neg(shares[0]), np.uint64(5) + shares[0] * 0)
        opened = await primitives.open_many(ctx, [z, aggregate.sum_shares(shares[1])])
        bits = await comparison.lt(ctx, shares[0], shares[1])
        return (
            total.view(np.int64),
            [o.view(np.int64) for o in opened],
            await primitives.reveal(ctx, bits),
        )

    outs = await simulate_async(program, ints, triples="dealer", **net)
    total, (z, s1), bits = outs[0]
    np.testing.assert_array_equal(total, sum(ints))
    np.testing.assert_array_equal(z, 5 - ints[0])
    assert int(s1) == int(ints[1].sum())
    np.testing.assert_array_equal(bits.view(np.int64), (ints[0] < ints[1]).astype(np.int64))
