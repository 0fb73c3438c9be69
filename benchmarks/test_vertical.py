"""Cross-party products of a vertical join (default path, Paillier, no third party).

Side by side in the same run, on the same data (2 parties, one left and one right owner):

* ``packed``: :func:`privcomp.protocols.stats_vertical.cross_products` — one packed ciphertext
  per joined row, bucket multi-exponentiation, both cores;
* ``per-value``: the previous implementation (kept below as :func:`_per_value_cross_products`):
  one ciphertext per value and one ~105-bit ``powmod`` per (row, a, b), one core.

Full run::

    pytest benchmarks/test_vertical.py --benchmark-group-by=group \
        --benchmark-columns=median,min,max,rounds

``PRIVCOMP_BENCH_FULL=1`` adds 10^6 joined rows (minutes). Smoke mode (``--benchmark-disable``,
as CI runs it) runs the small sizes once. Every body checks the reconstructed shares against the
exact integer sums (Python ints) and ``corr`` against pandas.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

import privcomp.federation as pl
import privcomp.protocols.stats_vertical as sv
from privcomp.backends.paillier import PublicKey, keygen
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.transport.memory import InMemoryNetwork

FULL = os.environ.get("PRIVCOMP_BENCH_FULL") == "1"
CrossFn = Callable[
    [PartyContext, sv.Alignment, Sequence[int], np.ndarray, int, int],
    Coroutine[Any, Any, list[int]],
]


async def _per_value_cross_products(
    ctx: PartyContext,
    al: sv.Alignment,
    sides: Sequence[int],
    mine: np.ndarray,
    n_left: int,
    n_right: int,
) -> list[int]:
    """The implementation before the packed one (baseline only; same contract)."""
    me, width = ctx.party_id, 512
    shares = [0] * (n_left * n_right)
    local = {int(r): i for i, r in enumerate(al.my_positions.tolist())}
    for p, q in sorted({(int(p), int(q)) for p, q in zip(*al.owners, strict=True)}):
        tag_u, tag_r = ctx.next_tag("cross.u"), ctx.next_tag("cross.ret")
        rows = np.flatnonzero((al.owners[0] == p) & (al.owners[1] == q)).tolist()
        vals = mine[[local[r] for r in rows]]
        if me == p:
            pk, sk = keygen(2048, rng=ctx.rng)
            ints = [v % pk.n for v in sv.encode_cross(vals.T, what="left")]
            cts = pk.raw_encrypt(ints, rng=ctx.rng, workers=1)
            await ctx.transport.send(q, tag_u, pk.to_bytes())
            await ctx.transport.send(q, tag_u + ".c", b"".join(c.to_bytes(width) for c in cts))
            raw = await ctx.transport.recv(q, tag_r)
            back = [int.from_bytes(raw[i : i + width]) for i in range(0, len(raw), width)]
            for i, m in enumerate(sk.raw_decrypt(back, workers=1)):
                shares[i] += m - pk.n if m > pk.n // 2 else m
        elif me == q:
            pk = PublicKey.from_bytes(await ctx.transport.recv(p, tag_u))
            raw = await ctx.transport.recv(p, tag_u + ".c")
            cts = pk.validate_ciphertexts(
                [int.from_bytes(raw[i : i + width]) for i in range(0, len(raw), width)]
            )
            v, k, n2 = sv.encode_cross(vals.T, what="right"), len(rows), pk.nsquare
            rho = sv._random_below_bits(ctx, 378, n_left * n_right)
            out = pk.raw_encrypt(rho, rng=ctx.rng, workers=1)
            for a in range(n_left):
                for b in range(n_right):
                    for c in pk.raw_mul_many(cts[a * k : (a + 1) * k], v[b * k : (b + 1) * k]):
                        out[a * n_right + b] = out[a * n_right + b] * c % n2
            await ctx.transport.send(p, tag_r, b"".join(c.to_bytes(width) for c in out))
            shares = [s - r for s, r in zip(shares, rho, strict=True)]
    return shares


def _data(rows: int, nl: int, nr: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(rows)
    return rng.normal(0, 10, (rows, nl)), rng.normal(0, 10, (rows, nr))


def _run(fn: CrossFn, u: np.ndarray, v: np.ndarray) -> list[int]:
    rows = len(u)
    al = sv.Alignment(
        rows, (np.zeros(rows, np.int64), np.ones(rows, np.int64)), *[np.arange(rows)] * 2
    )
    ctxs = [
        PartyContext(transport=t, triples=TrustedDealer(2), rng=InsecureSeededRandom(p))
        for p, t in enumerate(InMemoryNetwork(2, timeout=3600).transports)
    ]

    async def main() -> list[list[int]]:
        jobs = [fn(ctxs[0], al, [0, 1], u, u.shape[1], v.shape[1])]
        jobs.append(fn(ctxs[1], al, [0, 1], v, u.shape[1], v.shape[1]))
        return list(await asyncio.gather(*jobs))

    p_share, q_share = asyncio.run(main())
    return [a + b for a, b in zip(p_share, q_share, strict=True)]


def _check_exact(total: list[int], u: np.ndarray, v: np.ndarray) -> None:
    # Exact integer answer with numpy object arrays (Python ints): the encoding is exact.
    scale = np.vectorize(lambda x: round(math.ldexp(x, 64)), otypes=[object])
    exact = (scale(u).T @ scale(v)).ravel().tolist()
    if total != exact:
        raise ProtocolError("reconstructed cross products differ from the exact sums")


CASES = [
    # (rows, n_left, n_right, implementation, smoke, full-only)
    (354, 3, 2, "per-value", True, False),
    (354, 3, 2, "packed", True, False),
    (400, 5, 5, "per-value", False, False),
    (400, 5, 5, "packed", False, False),
    (2000, 5, 5, "packed", True, False),
    (10_000, 5, 5, "packed", False, False),
    (100_000, 5, 5, "packed", False, False),
    (1_000_000, 5, 5, "packed", False, True),
]


@pytest.mark.timeout(3600)  # 10^6 rows take minutes on a busy 2-core machine
@pytest.mark.parametrize(("rows", "nl", "nr", "impl", "smoke", "full_only"), CASES)
def test_cross_products(
    benchmark: Any,
    request: pytest.FixtureRequest,
    rows: int,
    nl: int,
    nr: int,
    impl: str,
    smoke: bool,
    full_only: bool,
) -> None:
    if request.config.getoption("benchmark_disable") and not smoke:
        pytest.skip("the smoke run measures the small sizes only")
    if full_only and not FULL:
        pytest.skip("set PRIVCOMP_BENCH_FULL=1 for 10^6 joined rows")
    u, v = _data(rows, nl, nr)
    fn: CrossFn = sv.cross_products if impl == "packed" else _per_value_cross_products
    benchmark.group = f"cross products: {rows} joined rows x {nl} x {nr}"
    benchmark.extra_info.update(impl=impl, rows=rows, products=rows * nl * nr)
    total = benchmark.pedantic(_run, args=(fn, u, v), rounds=1 if rows >= 10**5 else 3)
    _check_exact(total, u, v)


def _join_frames(rows: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """``rows`` common keys; each side also holds ``rows // 2`` keys the other lacks."""
    rng = np.random.default_rng(7)
    extra = rows // 2
    ids = rng.permutation(rows * 3)
    left_ids, right_ids = (
        ids[: rows + extra],
        np.r_[ids[:rows], ids[rows + extra : rows + 2 * extra]],
    )
    left = pd.DataFrame(rng.normal(50, 10, (rows + extra, 5)), columns=[f"a{i}" for i in range(5)])
    right = pd.DataFrame(rng.normal(0, 3, (rows + extra, 5)), columns=[f"b{i}" for i in range(5)])
    right["b0"] += left["a0"] * 0.3
    left.insert(0, "pid", left_ids)
    right.insert(0, "pid", right_ids)
    data = {"hospital": {"l": left}, "insurer": {"r": right.sample(frac=1.0, random_state=3)}}
    return data, left.merge(right, on="pid").drop(columns="pid")


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("impl", ["packed", "per-value"])
def test_join_corr(
    benchmark: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    impl: str,
    large: bool,
) -> None:
    """End to end in local mode: PSI join + ``corr()`` of 5 + 5 columns, next to pandas.

    ``large`` (``PRIVCOMP_BENCH_FULL=1``, packed only): 10^5 joined rows, 1.5 x 10^5 keys a side.
    """
    if large and (not FULL or impl != "packed"):
        pytest.skip("set PRIVCOMP_BENCH_FULL=1 for 10^5 joined rows (packed only)")
    rows = 300 if request.config.getoption("benchmark_disable") else 2000
    rows = 100_000 if large else rows
    data, pooled = _join_frames(rows)
    if impl == "per-value":
        monkeypatch.setattr(sv, "cross_products", _per_value_cross_products)
    benchmark.group = f"join + corr, 5 x 5 columns, {rows} joined rows"
    benchmark.extra_info["impl"] = impl

    def run() -> pd.DataFrame:
        fed = pl.local(data, cache=False, rng=InsecureSeededRandom(1))
        return fed.table("l").join(fed.table("r"), on="pid").corr()

    got = benchmark.pedantic(run, rounds=1 if large else 3, iterations=1)
    want = pooled.corr()
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.benchmark(group="join + corr, pandas on the pooled table")
def test_join_corr_pandas(benchmark: Any, request: pytest.FixtureRequest) -> None:
    rows = 300 if request.config.getoption("benchmark_disable") else 2000
    data, _ = _join_frames(rows)
    left, right = data["hospital"]["l"], data["insurer"]["r"]
    benchmark(lambda: left.merge(right, on="pid").drop(columns="pid").corr())
