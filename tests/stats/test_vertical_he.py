"""Packed Paillier cross-party products: exact shares, numpy answers, hostile peers."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from stats_helpers import assert_close

from privcomp.backends.paillier import keygen
from privcomp.backends.paillier.wire import pack_ciphertexts
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import EncodingOverflowError, ProtocolError
from privcomp.protocols import stats_vertical
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.stats_vertical import (
    _MIN_SIGMA,
    Alignment,
    _layout,
    align,
    cross_products,
    sum_cross_shares,
)
from privcomp.transport.memory import InMemoryNetwork

BIG = 2.0**40 - 2.0**-13  # the largest float64 below the 2^40 bound


def _contexts(n: int) -> list[PartyContext]:
    net = InMemoryNetwork(n)
    return [
        PartyContext(transport=t, triples=TrustedDealer(n), rng=InsecureSeededRandom(10 + p))
        for p, t in enumerate(net.transports)
    ]


def _run_parties(
    keys: Sequence[Sequence[int]], sides: list[int], table: dict[int, np.ndarray], nl: int, nr: int
) -> tuple[list[list[int]], list[Alignment]]:
    """Every party's shares; ``table[key]`` is the joined row (left values then right values)."""
    tags = [[k.to_bytes(8, "little") for k in ks] for ks in keys]
    als = [align(tags, sides, me) for me in range(len(keys))]
    ctxs = _contexts(len(keys))

    def mine(me: int) -> np.ndarray:
        own = [keys[me][i] for i in als[me].my_rows.tolist()]
        cols = slice(0, nl) if sides[me] == 0 else slice(nl, nl + nr)
        return np.array([table[k][cols] for k in own]).reshape(len(own), -1)

    async def main() -> list[list[int]]:
        jobs = [cross_products(c, als[p], sides, mine(p), nl, nr) for p, c in enumerate(ctxs)]
        return list(await asyncio.gather(*jobs))

    return asyncio.run(main()), als


def _exact(rows: np.ndarray, nl: int, nr: int) -> list[int]:
    enc = [[round(math.ldexp(float(x), 64)) for x in row] for row in rows]
    return [sum(r[a] * r[nl + b] for r in enc) for a in range(nl) for b in range(nr)]


@pytest.mark.parametrize("block_products", [1 << 19, 14])
def test_shares_reconstruct_the_exact_integer_sums(
    block_products: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two left owners, two right owners, random ints with negatives and the extremes.

    With 7-row blocks (14 products, 2 right columns) every pair streams several blocks, the
    last one shorter.
    """
    monkeypatch.setattr(stats_vertical, "_BLOCK_PRODUCTS", block_products)
    rng = np.random.default_rng(1)
    nl, nr, n_keys = 3, 2, 90
    rows = rng.integers(-(2**39), 2**39, (n_keys, nl + nr)).astype(np.float64)
    rows[:8] = [[BIG, -BIG, 0.0, BIG, -BIG]] * 8  # all-extreme rows push |Σ| to its bound
    rows[8] = [2.0**-64, -(2.0**-64), -BIG, 3.0, -(2.0**-64)]
    rows[9] = [-1.0, 2.0**-70, 1e-3, 0.0, BIG]
    table = {k: rows[k] for k in range(n_keys)}
    keys = [range(0, 50), range(50, 100), range(0, 90, 2), range(1, 90, 2)]
    shares, als = _run_parties(keys, [0, 0, 1, 1], table, nl, nr)
    assert als[0].size == n_keys
    total = [sum(col) for col in zip(*shares, strict=True)]
    assert total == _exact(rows, nl, nr)
    for p in range(4):  # each share alone is masked: far from the sum it hides
        assert shares[p] != total


def test_more_left_columns_than_slots_and_a_single_row() -> None:
    rng = np.random.default_rng(2)
    nl, nr = 9, 2
    assert _layout(1, nl, 2048).groups == 2
    rows = rng.normal(0, 1e6, (1, nl + nr))
    rows[0, 4] = -BIG
    shares, _ = _run_parties([[7], [7]], [0, 1], {7: rows[0]}, nl, nr)
    assert [a + b for a, b in zip(*shares, strict=True)] == _exact(rows, nl, nr)


class _FillRandom(InsecureSeededRandom):
    """Every random byte is ``fill``: the masks take their extreme values (tests only)."""

    def __init__(self, fill: int) -> None:
        super().__init__(0)
        self._fill = fill

    def random_bytes(self, n: int) -> bytes:
        return bytes([self._fill]) * n


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_extreme_masks_still_decode_exactly(fill: int) -> None:
    """rho = 0 with negative sums (no borrow) and rho = 2^(B+sigma) - 1 with positive ones."""
    ctxs = _contexts(2)
    ctxs[1].rng = _FillRandom(fill)
    sign = -1.0 if fill == 0 else 1.0
    u = np.array([[BIG, -BIG, 1.0]] * 4)
    v = np.array([[sign * BIG, -sign * BIG]] * 4)
    al = Alignment(4, (np.zeros(4, np.int64), np.ones(4, np.int64)), np.arange(4), np.arange(4))

    async def main() -> list[list[int]]:
        return list(
            await asyncio.gather(
                cross_products(ctxs[0], al, [0, 1], u, 3, 2),
                cross_products(ctxs[1], al, [0, 1], v, 3, 2),
            )
        )

    p_share, q_share = asyncio.run(main())
    exact = _exact(np.hstack([u, v]), 3, 2)
    assert [a + b for a, b in zip(p_share, q_share, strict=True)] == exact
    assert min(exact) < 0 < max(exact)


@pytest.mark.parametrize("rows", [1, 354, 10**6, 2**40 - 1])
@pytest.mark.parametrize("n_left", [1, 5, 6, 13])
def test_layout_never_wraps_and_keeps_sigma(rows: int, n_left: int) -> None:
    lay = _layout(rows, n_left, 2048)
    assert lay.per * lay.groups >= n_left > lay.per * (lay.groups - 1)
    assert lay.per * lay.width <= 2047  # the packed total stays below n
    assert lay.bound >= 208 + rows.bit_length()  # |Σ| < rows * 2^208
    assert lay.sigma >= _MIN_SIGMA
    if n_left <= 5:
        assert (lay.groups, lay.sigma) == (1, 128)


def test_diabetes_cross_products_match_numpy() -> None:
    """Real data: 5 left x 5 right columns, centred, totals against numpy at 1e-12."""
    x = load_diabetes().data * 100.0
    x = x - x.mean(axis=0)
    nl = nr = 5
    keys = np.arange(len(x))
    table = {int(k): x[k] for k in keys}
    shares, _ = _run_parties([keys[:300].tolist(), keys.tolist()], [0, 1], table, nl, nr)
    ctxs = _contexts(2)

    async def reveal() -> list[np.ndarray]:
        return list(
            await asyncio.gather(
                *(sum_cross_shares(c, s) for c, s in zip(ctxs, shares, strict=True))
            )
        )

    got = asyncio.run(reveal())
    want = x[:300, :nl].T @ x[:300, nl:]
    assert_close(got[0].reshape(nl, nr), want, rtol=1e-12)
    np.testing.assert_array_equal(got[0], got[1])


Hostile = Callable[[PartyContext, int, int], Awaitable[None]]


def _against_right(hostile: Hostile, nl: int = 2, nr: int = 2) -> ProtocolError:
    """Run an honest right party (1) against a hostile left party (0); return its error."""
    ctxs = _contexts(2)
    al = Alignment(3, (np.zeros(3, np.int64), np.ones(3, np.int64)), np.arange(3), np.arange(3))
    v = np.array([[1.5, -2.0], [3.0, 4.0], [-5.0, 6.0]])

    async def main() -> None:
        await asyncio.gather(hostile(ctxs[0], 1, 3), cross_products(ctxs[1], al, [0, 1], v, nl, nr))

    with pytest.raises(ProtocolError) as info:
        asyncio.run(main())
    for secret in ("1.5", "2.0", "3.0"):
        assert secret not in str(info.value)
    return info.value


def test_right_party_refuses_a_short_key() -> None:
    n = int(keygen(2048, rng=InsecureSeededRandom(5))[0].n) >> 1100 | 1  # 948 bits, odd

    async def short_key(ctx: PartyContext, q: int, rows: int) -> None:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        await ctx.transport.send(q, "1:cross.u", b"PCPK" + struct.pack(">BI", 1, len(body)) + body)

    assert "unusable Paillier key" in str(_against_right(short_key))


def test_right_party_refuses_bad_ciphertexts() -> None:
    pk, _ = keygen(2048, rng=InsecureSeededRandom(3))
    good = [int(c) for c in pk.raw_encrypt([1, 2, 3], rng=InsecureSeededRandom(4), workers=1)]

    def sender(cts: list[int], drop: int = 0) -> Hostile:
        async def send(ctx: PartyContext, q: int, rows: int) -> None:
            await ctx.transport.send(q, "1:cross.u", pk.to_bytes())
            raw = pack_ciphertexts(cts, pk.ciphertext_bytes)
            await ctx.transport.send(q, "1:cross.u.0", raw[: len(raw) - drop])

        return send

    assert "wrong size" in str(_against_right(sender(good, drop=1)))
    assert "outside" in str(_against_right(sender([good[0], 0, good[2]])))
    assert "outside" in str(_against_right(sender([good[0], pk.nsquare, good[2]])))
    assert "not a unit" in str(_against_right(sender([good[0], pk.n, good[2]])))


def test_values_beyond_the_bound_are_refused_before_sending() -> None:
    with pytest.raises(EncodingOverflowError, match="left column"):
        _run_parties([[1], [1]], [0, 1], {1: np.array([2.0**40, 1.0])}, 1, 1)
    with pytest.raises(EncodingOverflowError, match="right column"):
        _run_parties([[1], [1]], [0, 1], {1: np.array([1.0, np.nan])}, 1, 1)
