"""SecretArray: no numpy coercion, no values in repr, local operators; real data (sklearn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import EncodingOverflowError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.secret_array import SecretArray
from privcomp.simulation import simulate_async
from privcomp.transport.memory import InMemoryNetwork


def _one_party_array(values: np.ndarray) -> SecretArray:
    net = InMemoryNetwork(2)
    ctx = PartyContext(transport=net.transports[0], triples=TrustedDealer(2))
    return SecretArray(ctx, ctx.fixed.encode(values), fixed=True)


def test_refuses_numpy_coercion() -> None:
    x = _one_party_array(np.array([1.5, 2.5]))
    for attempt in (
        lambda: np.asarray(x),
        lambda: np.array(x),
        lambda: np.add(np.ones(2), x),
        lambda: np.sum(x),
        lambda: float(x[0]),
        lambda: bool(x),
        lambda: x < 3,
        lambda: x @ x,
        lambda: x * x,
    ):
        with pytest.raises(TypeError):
            attempt()
    with pytest.raises(TypeError, match="reveal"):
        np.asarray(x)


def test_repr_leaks_nothing() -> None:
    secret = np.array([123456.789, -98765.4321])
    x = _one_party_array(secret)
    text = repr(x) + str(x)
    assert text.startswith("SecretArray(shape=(2,), party=0")
    for v in [*secret, *x.share]:
        for form in (str(v), repr(v), f"{v:.2f}", str(int(v))):
            assert form not in text


def test_local_operators_keep_kind_and_shape() -> None:
    x = _one_party_array(np.zeros((2, 3)))
    assert (x + 1).shape == (2, 3)
    assert (np.ones(3) + x).shape == (2, 3)  # __array_ufunc__ = None defers to __radd__
    assert isinstance(2 * x, SecretArray)
    assert (2 * x).fixed
    assert (x - np.arange(3)).fixed
    assert (-x).fixed
    assert x.T.shape == (3, 2)
    assert x.sum(axis=0).shape == (3,)
    assert x[1].shape == (3,)
    assert len(list(x)) == 2
    assert x.ndim == 2
    assert x.size == 6


async def test_mixed_integer_and_fixed_inputs() -> None:
    async def program(ctx: PartyContext, x: Any) -> Any:
        xs = await ctx.input(x)
        s = xs[0] + xs[1]
        p = await xs[0].mul(xs[1])
        q = xs[1] * 0.25  # integer secret * public real: local and exact
        return await s.reveal(), await p.reveal(), await q.reveal(), xs[1].fixed

    outs = await simulate_async(
        program, [np.array([1.5, -2.25]), np.array([3, -4])], triples="dealer"
    )
    s, p, q, fixed = outs[0]
    np.testing.assert_allclose(s, [4.5, -6.25])
    np.testing.assert_allclose(p, [4.5, 9.0])
    np.testing.assert_allclose(q, [0.75, -1.0])
    assert fixed is False


def _real_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cancer = load_breast_cancer().data  # 569 x 30, magnitudes up to ~4000
    diabetes = load_diabetes().data  # 442 x 10, standardised
    return cancer[:, 0], cancer[:, 1], diabetes


@pytest.mark.parametrize("n", [2, 3])
async def test_real_data_mul_dot_matmul_lt_max(n: int) -> None:
    radius, texture, diabetes = _real_columns()
    x_mat = diabetes[:100, :5]

    async def program(ctx: PartyContext, x: Any) -> Any:
        if ctx.party_id == 0:
            xs = await ctx.input(radius)
        elif ctx.party_id == 1:
            xs = await ctx.input(texture)
        else:
            xs = await ctx.input(x_mat)
        a, b = xs[0], xs[1]
        mats = await ctx.input(x_mat) if n == 2 else None  # party 0 also shares a matrix
        m = mats[0] if mats is not None else xs[2]
        out = [
            await a.mul(b),
            await a.dot(b),
            await m.T.matmul(m),
            await a.lt(b),
            await a.maximum(b),
        ]
        return [await o.reveal() for o in out]

    outs = await simulate_async(program, [None] * n, triples="dealer", rng=InsecureSeededRandom(2))
    prod, dot, gram, lt, mx = outs[0]
    a, b = np.rint(radius * 2**16) / 2**16, np.rint(texture * 2**16) / 2**16
    np.testing.assert_allclose(prod, radius * texture, rtol=0, atol=1e-3)
    np.testing.assert_allclose(dot, radius @ texture, rtol=1e-7, atol=0.05)
    np.testing.assert_allclose(gram, x_mat.T @ x_mat, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(lt, (a < b).astype(np.int64))
    np.testing.assert_array_equal(mx, np.maximum(a, b))


def test_equality_operators_refuse_and_point_to_eq() -> None:
    x = _one_party_array(np.array([1.0, 2.0]))
    y = _one_party_array(np.array([1.0, 2.0]))
    for attempt in (
        lambda: x == y,
        lambda: x != y,
        lambda: x == x,  # identity would say True; a secret comparison must be awaited
        lambda: x == 1.0,
        lambda: 1.0 == x,  # noqa: SIM300 (the reflected form is the point)
        lambda: np.ones(2) == x,  # __array_ufunc__ = None: numpy defers to __eq__
        lambda: x != np.ones(2),
    ):
        with pytest.raises(TypeError, match=r"await x\.eq\(y\)"):
            attempt()
    assert SecretArray.__hash__ is None
    with pytest.raises(TypeError, match="unhashable"):
        hash(x)
    with pytest.raises(TypeError):
        _ = {x}


async def test_public_integer_beyond_fixed_range_raises_not_wraps() -> None:
    # 2^50 fits the integer range (2^62) but not fixed point (2^(62-16)): x + 2^50 used to
    # wrap silently after the public operand was shifted by the fractional bits.
    big = 1 << 50

    async def program(ctx: PartyContext, x: Any) -> Any:
        xs = await ctx.input(x)
        ok = await (xs[0] + 7).reveal()
        try:
            xs[0] + big
        except EncodingOverflowError as exc:
            return ok, exc.bound
        return ok, None

    outs = await simulate_async(program, [np.array([1.5]), np.array([0.0])], triples="dealer")
    ok, bound = outs[0]
    np.testing.assert_allclose(ok, [8.5])
    assert bound == float(1 << 46)
