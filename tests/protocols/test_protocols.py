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
from privcomp.simulation import simulate_async

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


class _NoFanSource:
    """Delegates the TripleSource protocol only: no fan triples, so AND gates never share masks
    (the path the Paillier source takes)."""

    name = "dealer-without-fan"

    def __init__(self, n: int) -> None:
        from privcomp.protocols.dealer import TrustedDealer

        d = TrustedDealer(n, rng=InsecureSeededRandom(n))
        self.mul_triples, self.matmul_triples = d.mul_triples, d.matmul_triples
        self.and_triples, self.trunc_pairs = d.and_triples, d.trunc_pairs
        self.edabits, self.dabits = d.edabits, d.dabits


SOURCES = [pytest.param("dealer", id="fan"), pytest.param(_NoFanSource, id="nofan")]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("shape", [(0,), (), (1,), (63,), (65,), (3, 43)], ids=str)
async def test_ring_comparisons_all_sizes(shape: tuple[int, ...], source: Any) -> None:
    """Packing pads to 2, 4, ..., 64 lanes: sizes around the lane counts, 0-d and 2-D arrays,
    ties, extremes and both AND-gate paths agree with numpy."""
    from privcomp.protocols.primitives import FanAndSource

    g = np.random.default_rng(sum(shape) + 3)
    big = 2**62 - 1
    x = g.integers(-big, big, size=shape, dtype=np.int64)
    y = g.integers(-big, big, size=shape, dtype=np.int64)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    flat_y[::4] = flat_x[::4]  # ties
    flat_y[1::7] = flat_x[1::7] + 1  # neighbours
    flat_x[2::9] = 0

    async def program(ctx: PartyContext, v: np.ndarray) -> Any:
        (sx, _), (sy, _) = (await primitives.input_arrays(ctx, v.view(np.uint64)))[:2]
        assert isinstance(ctx.triples, FanAndSource) == (source == "dealer")
        res = [
            await comparison.lt(ctx, sx, sy),
            await comparison.eq(ctx, sx, sy),
            await comparison.msb(ctx, sx),
        ]
        return [(await primitives.reveal(ctx, r)).view(np.int64) for r in res]

    outs = await simulate_async(program, [x, y, np.zeros(shape, np.int64)], triples=source)
    lt, eq, msb = _same_everywhere(outs)
    assert lt.shape == eq.shape == msb.shape == shape
    np.testing.assert_array_equal(lt, (x < y).astype(np.int64))
    np.testing.assert_array_equal(eq, (x == y).astype(np.int64))
    np.testing.assert_array_equal(msb, (x < 0).astype(np.int64))


@pytest.mark.parametrize(("source", "lt_bytes"), [("dealer", 27.625), (_NoFanSource, 31.375)])
async def test_comparison_traffic_matches_docstrings(source: Any, lt_bytes: float) -> None:
    n, header = 6400, 14  # a multiple of 64 lanes; one codec header per message

    async def program(ctx: PartyContext, v: np.ndarray) -> Any:
        (sx, _), (sy, _) = (await primitives.input_arrays(ctx, v))[:2]
        sent, peer = ctx.transport.stats.per_peer_bytes_sent, ctx.peers[0]
        b0 = sent[peer]
        await comparison.lt(ctx, sx, sy)
        b1 = sent[peer]
        await comparison.eq(ctx, sx, sy)
        return b1 - b0, sent[peer] - b1

    v = np.arange(n, dtype=np.uint64)
    lt_sent, eq_sent = (await simulate_async(program, [v, v, v], triples=source))[0]
    assert lt_sent == lt_bytes * n + 7 * header
    assert eq_sent == 23.875 * n + 7 * header


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
def test_pack_fields_roundtrip_and_xor_linearity(width: int) -> None:
    g = np.random.default_rng(width)
    dtype = primitives.FIELD_DTYPES[width]
    for n in (0, 1, 64 // width - 1, 64 // width, 8 * 64 // width + 3):
        vals = g.integers(0, 2**width, size=n).astype(dtype)
        other = g.integers(0, 2**width, size=n).astype(dtype)
        packed = primitives.pack_fields(vals, width)
        assert packed.dtype == np.uint64
        assert packed.size == -(-n // (64 // width))  # 64 / width fields per word
        np.testing.assert_array_equal(primitives.unpack_fields(packed, width, n), vals)
        both = primitives.pack_fields(vals ^ other, width)
        np.testing.assert_array_equal(both, packed ^ primitives.pack_fields(other, width))


def test_bit_reverse_index_permutation() -> None:
    words = np.array([1 << i for i in range(64)], dtype=np.uint64)
    moved = comparison._bit_reverse_index(words)
    for i in range(64):
        rev = int(f"{i:06b}"[::-1], 2)
        assert int(moved[i]) == 1 << rev
    g = np.random.default_rng(3)
    w = g.integers(0, 2**64, size=100, dtype=np.uint64)
    np.testing.assert_array_equal(
        comparison._bit_reverse_index(comparison._bit_reverse_index(w)), w
    )
