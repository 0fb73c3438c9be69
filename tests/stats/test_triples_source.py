"""Correlated randomness of ``pc.local``: HE by default, the dealer only on request; the sign
test of small count differences behind quantiles, min and max."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

import privcomp.federation as pl
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ConfigurationError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.he_triples import PaillierTripleSource
from privcomp.protocols.stats_compare import (
    gates_per_value,
    reveal_negative,
    sign_material,
    width_for,
)
from privcomp.protocols.stats_quantile import float_keys, order_statistics, sorted_keys
from privcomp.protocols.triples import TripleSource
from privcomp.simulation import simulate


def _shares(values: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Additive shares in Z_2^64 of signed integers."""
    masks = [rng.integers(0, 2**64, values.size, dtype=np.uint64) for _ in range(n - 1)]
    last = values.astype(np.int64).view(np.uint64) - np.sum(masks, axis=0, dtype=np.uint64)
    return [*masks, np.asarray(last, dtype=np.uint64)]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("bound", [0, 1, 2, 3, 100, 1024, 10**6])
def test_reveal_negative_on_the_whole_range(n: int, bound: int) -> None:
    rng = np.random.default_rng(bound + n)
    edges = np.array([-bound, -bound + 1, -1, 0, 1, bound - 2, bound - 1])
    values = np.r_[edges, rng.integers(-bound, max(bound, 1), 50)]
    values = values[(values >= -bound) & (values < max(bound, 1))]
    width = width_for(bound)

    async def program(ctx: PartyContext, x: np.ndarray) -> list[np.ndarray]:
        mat = await sign_material(ctx, 2 * x.size, width)
        first = await reveal_negative(ctx, x, mat)
        second = await reveal_negative(ctx, np.asarray(-x, dtype=np.uint64), mat)
        return [first, second]

    out = simulate(program, _shares(values, n, rng), triples="dealer", rng=InsecureSeededRandom(1))
    for first, second in out:  # every party sees the same bits
        np.testing.assert_array_equal(first, (values < 0).astype(np.uint64))
        # -x also lies in the bound except for -(-bound) = bound, one past it.
        ok = -values < max(bound, 1)
        np.testing.assert_array_equal(second[ok], (-values[ok] < 0).astype(np.uint64))


def test_widths_and_gate_counts() -> None:
    assert [width_for(b) for b in (0, 1, 2, 3, 4, 1000, 2**20)] == [2, 2, 3, 3, 4, 11, 22]
    # A binary tree over w groups merges w - 1 times, 2 gates each, minus one P gate a level.
    assert [gates_per_value(w) for w in (1, 2, 3, 4, 11, 63)] == [0, 1, 2, 4, 16, 118]
    with pytest.raises(ConfigurationError):
        width_for(-1)


def test_material_is_checked() -> None:
    async def program(ctx: PartyContext, x: np.ndarray) -> None:
        mat = await sign_material(ctx, x.size, 4)
        await reveal_negative(ctx, x, mat)
        await reveal_negative(ctx, x, mat)

    with pytest.raises(ProtocolError, match="exhausted"):
        simulate(program, [np.zeros(3, dtype=np.uint64)] * 2, triples="dealer")

    async def too_wide(ctx: PartyContext, x: np.ndarray) -> None:
        await sign_material(ctx, x.size, 63)

    with pytest.raises(ConfigurationError, match="width"):
        simulate(too_wide, [np.zeros(3, dtype=np.uint64)] * 2, triples="dealer")


def _tiny(parties: int, rows: int = 12) -> tuple[dict[str, Any], pd.DataFrame]:
    rng = np.random.default_rng(parties)
    frames = [
        pd.DataFrame({"x": rng.normal(40, 9, rows).round(1), "y": rng.integers(0, 9, rows) * 1.0})
        for _ in range(parties)
    ]
    data = {f"p{i}": {"t": f} for i, f in enumerate(frames)}
    return data, pd.concat(frames, ignore_index=True)


def test_default_source_is_he_and_no_dealer_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dealer(*args: object, **kwargs: object) -> None:
        raise AssertionError("pc.local built a trusted dealer without being asked")

    monkeypatch.setattr(pl, "TrustedDealer", no_dealer)
    data, pooled = _tiny(2)
    fed = pl.local(data, rng=InsecureSeededRandom(5))
    assert fed.triples == "he"
    t = fed.table("t")
    d = t.describe()  # min, quartiles, max: secure comparisons on HE material
    order = ["min", "25%", "50%", "75%", "max"]
    np.testing.assert_array_equal(d.loc[order], pooled.describe().loc[order])
    np.testing.assert_array_equal(t.max().to_numpy(), pooled.max().to_numpy())
    assert t["x"].median() == pooled["x"].median()
    assert [type(s) for s in fed._he.values()] == [PaillierTripleSource]


def test_he_source_three_parties_quantiles() -> None:
    data, pooled = _tiny(3)
    t = pl.local(data, rng=InsecureSeededRandom(6)).table("t")
    got = t["y"].quantile([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(got.to_numpy(), pooled["y"].quantile([0.1, 0.5, 0.9]))
    assert t["x"].min() == pooled["x"].min()


class _Counting:
    """A TripleSource that counts the parties' calls, forwarding to a dealer."""

    name = "counting"

    def __init__(self, dealer: TrustedDealer) -> None:
        self.dealer, self.calls = dealer, 0

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self.dealer, attr)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await method(*args, **kwargs)

        return wrapped


@pytest.mark.parametrize("form", ["dealer", "instance", "factory-one", "factory-each"])
def test_explicit_sources(form: str) -> None:
    data, pooled = _tiny(2)
    counter = _Counting(TrustedDealer(2))
    made: list[int] = []

    def one(n: int) -> TripleSource:
        made.append(n)
        return counter

    def each(n: int) -> Sequence[TripleSource]:
        made.append(n)
        return [counter] * n

    triples: Any = {"dealer": "dealer", "instance": counter, "factory-one": one}.get(form, each)
    fed = pl.local(data, triples=triples)
    assert fed.triples is triples
    t = fed.table("t")
    np.testing.assert_array_equal(t.median().to_numpy(), pooled.median().to_numpy())
    assert t["x"].mean() == pytest.approx(pooled["x"].mean(), rel=1e-12)
    if form != "dealer":
        # dabits + and_triples per chunk of bisection steps, both parties; quantile job only.
        assert counter.calls >= 4
        assert counter.calls % 4 == 0
        assert made == ([] if form == "instance" else [2, 2])


def test_bad_sources_are_refused() -> None:
    data, _ = _tiny(2)
    with pytest.raises(ConfigurationError, match="triples"):
        pl.local(data, triples="dealr")
    with pytest.raises(ConfigurationError, match="triples"):
        pl.local(data, triples=3)  # type: ignore[arg-type]
    fed = pl.local(data, triples=lambda n: [TrustedDealer(n)] * (n + 1))
    with pytest.raises(ConfigurationError, match="3 sources for 2 parties"):
        fed.table("t").median()


@pytest.mark.parametrize(
    ("kind", "max_steps"),
    [("ages", 32), ("negative-ints", 32), ("floats", 64), ("specials", 64)],
)
def test_order_statistics_exact_and_early_stop(kind: str, max_steps: int) -> None:
    rng = np.random.default_rng(3)
    pooled = {
        "ages": rng.integers(18, 90, 300).astype(float),
        "negative-ints": -rng.integers(1, 5000, 300).astype(float),
        "floats": rng.normal(0, 1e3, 300),
        "specials": np.r_[rng.normal(0, 1, 290), [np.inf, -np.inf, 0.0, -0.0, 5e-324] * 2],
    }[kind]
    parts = np.array_split(pooled, 3)
    ranks = [0, 1, 149, 150, 298, 299]
    plan = [(0, r) for r in ranks]

    async def program(ctx: PartyContext, x: np.ndarray) -> tuple[list[int], int]:
        keys = await order_statistics(ctx, [sorted_keys(x)], plan, pooled.size)
        return keys, ctx.rounds

    out = simulate(program, parts, triples="dealer", rng=InsecureSeededRandom(2))
    want = np.sort(float_keys(pooled))[ranks].tolist()
    assert [o[0] for o in out] == [want] * 3
    # 6 rounds per step (k = 10 bits: 4 AND levels + 2 openings); material comes from the dealer.
    assert out[0][1] <= 6 * max_steps
