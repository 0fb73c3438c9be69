"""Joint statistics in local mode next to pandas on the pooled plaintext (same run, same data).

Full run (3 parties x 10^6 rows x 10 numeric columns + a group key)::

    pytest benchmarks/test_stats.py --benchmark-columns=median,min,max,rounds

Smoke mode (``--benchmark-disable``, as CI runs it) uses 10^4 rows per party automatically.

Sources of correlated randomness (quantiles, min, max and ``describe`` need secure
comparisons): the large-table groups use the explicit trusted dealer (``triples="dealer"``),
to measure the statistics engine; the "quantiles by source" group runs the default HE source
(``triples="he"``, Paillier, no third party) next to the dealer on small tables, with key pairs
generated once per module (a fresh federation generates them at its first comparison).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import privcomp.federation as pl
from privcomp.backends.paillier import keygen
from privcomp.core.rng import InsecureSeededRandom
from privcomp.protocols.he_triples import PaillierTripleSource

PARTIES = 3
COLS = [f"x{i}" for i in range(10)]
QS = [0.25, 0.5, 0.75]


def _rows(request: pytest.FixtureRequest) -> int:
    return 10_000 if request.config.getoption("benchmark_disable") else 1_000_000


@pytest.fixture(scope="module")
def frames(request: pytest.FixtureRequest) -> list[pd.DataFrame]:
    n = _rows(request)
    rng = np.random.default_rng(2024)
    out = []
    for p in range(PARTIES):
        df = pd.DataFrame(rng.normal(50 + p, 10, (n, len(COLS))), columns=COLS)
        df["grp"] = rng.choice(["a", "b", "c", "d"], n)
        out.append(df)
    return out


@pytest.fixture(scope="module")
def pooled(frames: list[pd.DataFrame]) -> pd.DataFrame:
    # A central analyst would hold the pooled table already: pooling is not timed.
    return pd.concat(frames, ignore_index=True)


def _fed(frames: list[pd.DataFrame], triples: Any = "dealer") -> pl.Federation:
    # A fresh federation per round, without the result cache, so every round runs the jobs.
    # Comparisons use the trusted dealer unless ``triples`` says otherwise (explicit opt-in).
    data = {f"party{i}": {"d": f} for i, f in enumerate(frames)}
    return pl.local(data, cache=False, rng=InsecureSeededRandom(1), triples=triples)


def _privcomp_stats(frames: list[pd.DataFrame], triples: str) -> tuple[Any, Any, Any]:
    t = _fed(frames, triples).table("d")
    return t.describe(), t.corr(), t.groupby("grp")[COLS].mean()


def _pandas_stats(df: pd.DataFrame) -> tuple[Any, Any, Any]:
    return df.describe(), df[COLS].corr(), df.groupby("grp")[COLS].mean()


@pytest.mark.benchmark(group="stats: describe + corr + groupby.mean")
@pytest.mark.parametrize("source", ["dealer", "he"])
def test_stats_privcomp(
    benchmark: Any, frames: list[pd.DataFrame], pooled: pd.DataFrame, source: str
) -> None:
    """``source="he"`` is the default (OT extension, no third party)."""
    d, c, g = benchmark.pedantic(_privcomp_stats, args=(frames, source), rounds=3, iterations=1)
    wd, wc, wg = _pandas_stats(pooled)
    np.testing.assert_allclose(d.to_numpy(), wd.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(c.to_numpy(), wc.to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.to_numpy(), wg.to_numpy(), rtol=1e-9)


@pytest.mark.benchmark(group="stats: describe + corr + groupby.mean")
def test_stats_pandas(benchmark: Any, pooled: pd.DataFrame) -> None:
    benchmark.pedantic(_pandas_stats, args=(pooled,), rounds=3, iterations=1)


@pytest.mark.benchmark(group="stats: quantiles of one column")
@pytest.mark.parametrize("source", ["dealer", "he"])
def test_quantiles_privcomp(
    benchmark: Any, frames: list[pd.DataFrame], pooled: pd.DataFrame, source: str
) -> None:
    def run() -> pd.Series:
        return _fed(frames, source).table("d")["x0"].quantile(QS)

    got = benchmark.pedantic(run, rounds=3, iterations=1)
    np.testing.assert_array_equal(got.to_numpy(), pooled["x0"].quantile(QS).to_numpy())


@pytest.mark.benchmark(group="stats: quantiles of one column")
def test_quantiles_pandas(benchmark: Any, pooled: pd.DataFrame) -> None:
    benchmark.pedantic(lambda: pooled["x0"].quantile(QS), rounds=3, iterations=1)


_KEYS: dict[int, Any] = {}


def _he(n: int) -> PaillierTripleSource:
    """The default HE source with key pairs generated once (keygen is a one-off per party)."""
    for p in range(n):
        if p not in _KEYS:
            _KEYS[p] = keygen(2048)
    return PaillierTripleSource(keypairs=_KEYS)


@pytest.mark.parametrize("source", ["he", "dealer"])
@pytest.mark.parametrize("rows", [150, 3000])
def test_quantiles_by_source(
    benchmark: Any, request: pytest.FixtureRequest, rows: int, source: str
) -> None:
    """Quartiles of one column (3 parties): integer-valued ("age") and full-precision floats."""
    if rows > 150 and request.config.getoption("benchmark_disable"):
        pytest.skip("the smoke run measures the small table only")
    rng = np.random.default_rng(5)
    frames = [
        pd.DataFrame({"age": rng.integers(18, 90, rows) * 1.0, "bmi": rng.normal(27, 5, rows)})
        for _ in range(PARTIES)
    ]
    pooled = pd.concat(frames, ignore_index=True)
    triples: Any = _he if source == "he" else "dealer"
    if source == "he":
        _he(PARTIES)  # key generation outside the measurement
    benchmark.group = f"quantiles by source: 3 x {rows} rows, quartiles of 2 columns"
    benchmark.extra_info["source"] = "PaillierTripleSource" if source == "he" else "TrustedDealer"

    def run() -> pd.DataFrame:
        return _fed(frames, triples).table("d").quantile(QS)

    got = benchmark.pedantic(run, rounds=3, iterations=1)
    np.testing.assert_array_equal(got.to_numpy(), pooled.quantile(QS).to_numpy())


# -- vertical join: cross-party corr over aligned rows (the step after the PSI) ----------------


def _aligned(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    base = rng.normal(size=(rows, 1))
    left = base * 1e5 + rng.normal(0, 3e5, (rows, 5))  # |values| up to ~10^6
    right = base * 2.0 + rng.normal(0, 1.0, (rows, 5)) + 40.0
    return left, right


async def _vertical_corr(ctx: Any, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    from privcomp.protocols.stats_vertical import Alignment, VerticalRequest
    from privcomp.protocols.stats_vertical_job import vertical_moments

    rows = left.shape[0]
    al = Alignment(
        rows,
        (np.zeros(rows, dtype=np.int64), np.ones(rows, dtype=np.int64)),
        np.arange(rows),
        np.arange(rows),
    )
    names = [f"l{i}" for i in range(5)] + [f"r{i}" for i in range(5)]
    req = VerticalRequest(tuple(names), (0,) * 5 + (1,) * 5, (0, 1), frozenset({"corr"}))
    mine = left if ctx.party_id == 0 else right
    own = {names[j + 5 * ctx.party_id]: mine[:, j] for j in range(5)}
    out = await vertical_moments(ctx, al, own, req)
    assert out.corr is not None
    return out.corr


@pytest.mark.parametrize("source", ["dealer", "he"])
def test_vertical_corr_aligned(benchmark: Any, request: pytest.FixtureRequest, source: str) -> None:
    """corr() over 5 + 5 columns held by two parties on 10^6 aligned (PSI-joined) rows.

    Dealer: exact masked inner products modulo 2^128 (privcomp.protocols.cross_dealer). HE (the
    default source): Paillier OLE per owner pair, timed on 2,000 rows (it does not scale to 10^6).
    """
    import asyncio

    from privcomp.protocols.context import PartyContext
    from privcomp.protocols.dealer import TrustedDealer
    from privcomp.transport.memory import InMemoryNetwork

    smoke = request.config.getoption("benchmark_disable")
    rows = (2_000 if smoke else 1_000_000) if source == "dealer" else (300 if smoke else 2_000)
    left, right = _aligned(rows)
    benchmark.group = f"vertical corr, 5 x 5 columns, {source}"
    benchmark.extra_info.update(rows=rows, source=source)

    def run() -> np.ndarray:
        net = InMemoryNetwork(2)
        triples: Any = TrustedDealer(2) if source == "dealer" else _he(2)
        ctxs = [PartyContext(transport=t, triples=triples) for t in net.transports]

        async def both() -> list[np.ndarray]:
            return list(await asyncio.gather(*(_vertical_corr(c, left, right) for c in ctxs)))

        return asyncio.run(both())[0]

    got = benchmark.pedantic(run, rounds=1 if smoke else 3, iterations=1)
    want = pd.DataFrame(np.hstack([left, right])).corr().to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_vertical_corr_pandas(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """pandas corr() of the same 10^6 x 10 table held in one place (no privacy)."""
    rows = 2_000 if request.config.getoption("benchmark_disable") else 1_000_000
    df = pd.DataFrame(np.hstack(_aligned(rows)))
    benchmark.group = "vertical corr, 5 x 5 columns, pandas"
    benchmark.pedantic(df.corr, rounds=3, iterations=1)
