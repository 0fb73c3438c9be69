"""Exact cross-party inner products with dealer masks (privcomp.protocols.cross_dealer)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from privcomp.core import ring128
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ConfigurationError, ProtocolError
from privcomp.jobs.dealer_net import NetworkDealerSource, request_elements, serve_dealer
from privcomp.protocols.context import PartyContext
from privcomp.protocols.cross_dealer import CrossMaskSource, masked_cross_totals, pair_shares
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.he_triples import PaillierTripleSource
from privcomp.transport.memory import ComputingPartiesView, InMemoryNetwork


def _words(values: np.ndarray) -> np.ndarray:
    return ring128.from_ints([int(v) for v in values.ravel()], values.shape)


def _exact(u: np.ndarray, v: np.ndarray) -> list[int]:
    return [int(x) for x in (u.astype(object).T @ v.astype(object)).ravel()]


@pytest.mark.parametrize("n", [2, 3])
async def test_pair_shares_reconstruct_the_exact_product(n: int) -> None:
    rng = np.random.default_rng(n)
    rows = 3000
    u = rng.integers(-(2**58), 2**58, size=(rows, 3))
    v = rng.integers(-(2**58), 2**58, size=(rows, 2))
    u[0], v[0] = 2**58 - 1, -(2**58)  # extremes
    dealer = TrustedDealer(n, rng=InsecureSeededRandom(1))
    net = InMemoryNetwork(n)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    pair = (n - 1, 0)  # the left owner may have the higher index

    async def party(ctx: PartyContext) -> list[int]:
        share = await dealer.cross_masks(ctx, pair, rows, 3, 2)
        words = _words(u) if ctx.party_id == pair[0] else _words(v)
        return await pair_shares(ctx, pair, share, words, 3, 2)

    shares = await asyncio.gather(*(party(c) for c in ctxs))
    assert all(s == [] for i, s in enumerate(shares) if i not in pair)
    total = [ring128.signed(a + b) for a, b in zip(shares[pair[0]], shares[pair[1]], strict=True)]
    assert total == _exact(u, v)
    # Each owner's share alone is a uniform residue, not the product.
    assert shares[pair[0]] != total
    assert shares[pair[1]] != total


def _tables(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    owners_left = rng.integers(0, 2, rows)  # parties 0, 1 hold the left columns
    u = rng.normal(0, 1e6, size=(rows, 2))
    v = rng.normal(0, 3.0, size=(rows, 3))
    return owners_left, u, v


async def _run_totals(ctxs: list[PartyContext], rows: int, seed: int) -> list[np.ndarray]:
    owners_left, u, v = _tables(rows, seed)
    bits = np.add.outer(np.array([30, 31]), np.array([50, 50, 49]))

    async def party(ctx: PartyContext) -> np.ndarray:
        me = ctx.party_id
        pairs = []
        for p in (0, 1):
            sel = np.flatnonzero(owners_left == p)
            if me == p:
                idx = np.arange(sel.size)
            elif me == 2:
                idx = sel
            else:
                idx = sel[:0]
            pairs.append(((p, 2), int(sel.size), idx))
        if me == 2:
            cols = [ring128.encode_scaled(v[:, j], 50 - (j == 2), what="v") for j in range(3)]
        else:
            mine = u[owners_left == me]
            cols = [ring128.encode_scaled(mine[:, j], 30 + j, what="u") for j in range(2)]
        words = np.stack(cols, axis=-1)
        return await masked_cross_totals(ctx, pairs, words, 2, 3, bits)

    return list(await asyncio.gather(*(party(c) for c in ctxs)))


async def test_totals_over_several_owner_pairs_match_numpy() -> None:
    net = InMemoryNetwork(3)
    dealer = TrustedDealer(3, rng=InsecureSeededRandom(2))
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    outs = await _run_totals(ctxs, 5000, seed=3)
    _, u, v = _tables(5000, 3)
    want = u.T @ v
    for got in outs:
        np.testing.assert_allclose(got, want, rtol=1e-9)


async def test_network_dealer_serves_cross_masks() -> None:
    n = 3
    net = InMemoryNetwork(n + 1)
    ctxs = [
        PartyContext(
            transport=ComputingPartiesView(net.transports[i], n), triples=NetworkDealerSource(n)
        )
        for i in range(n)
    ]
    assert all(isinstance(c.triples, CrossMaskSource) for c in ctxs)

    async def stop_after(outs: asyncio.Future[list[np.ndarray]]) -> list[np.ndarray]:
        res = await outs
        for c in ctxs:
            await c.triples.stop(c)  # type: ignore[attr-defined]
        return res

    served, outs = await asyncio.gather(
        serve_dealer(ComputingPartiesView(net.transports[n], n), n, TrustedDealer(n)),
        stop_after(asyncio.ensure_future(_run_totals(ctxs, 2000, seed=4))),
    )
    assert served == 2  # one request per owner pair
    _, u, v = _tables(2000, 4)
    for got in outs:
        np.testing.assert_allclose(got, u.T @ v, rtol=1e-9)


async def test_dealer_refuses_oversized_and_malformed_requests() -> None:
    assert (
        request_elements({"kind": "cross", "pair": [0, 1], "rows": 10, "n_left": 2, "n_right": 3})
        == 2 * 10 * 5 + 24
    )
    assert request_elements({"kind": "matmul", "a_shape": [2, 3], "b_shape": [3, 4]}) == 26
    with pytest.raises(ProtocolError, match="malformed"):
        request_elements({"kind": "mul", "shape": [-1]})
    n = 2
    net = InMemoryNetwork(n + 1)
    req = json.dumps({"kind": "mul", "shape": [1000, 1000]}).encode()
    for p in range(n):
        await net.transports[p].send(n, "dealer/0", req)
    with pytest.raises(ProtocolError, match="exceeds the cap of 1000 elements"):
        await serve_dealer(
            ComputingPartiesView(net.transports[n], n), n, TrustedDealer(n), max_elements=1000
        )


async def test_wrong_shape_message_and_wrong_source_are_typed_errors() -> None:
    net = InMemoryNetwork(2)
    dealer = TrustedDealer(2)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    u = _words(np.ones((10, 1), dtype=np.int64))

    async def honest() -> list[int]:
        share = await dealer.cross_masks(ctxs[0], (0, 1), 10, 1, 1)
        return await pair_shares(ctxs[0], (0, 1), share, u, 1, 1)

    async def cheater() -> None:
        await dealer.cross_masks(ctxs[1], (0, 1), 10, 1, 1)
        tag = ctxs[1].next_tag("cross.masked")
        await ctxs[1].send_array(0, tag, np.zeros((2, 9, 1), dtype=np.uint64))

    with pytest.raises(ProtocolError, match="wrong shape"):
        await asyncio.gather(honest(), cheater())
    with pytest.raises(ConfigurationError, match="two distinct parties"):
        await dealer.cross_masks(ctxs[0], (0, 0), 10, 1, 1)
    he = PartyContext(transport=InMemoryNetwork(2).transports[0], triples=PaillierTripleSource())
    with pytest.raises(ConfigurationError, match="dealer"):
        await masked_cross_totals(he, [], u, 1, 1, np.zeros((1, 1)))


async def test_revealed_sum_hides_how_often_the_residues_wrapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding: with disconnected owner pairs, the wide sum's integer (before the
    reduction mod 2^128) counted wraps that depend on each pair's total. Its high half must
    now be uniform, not a small wrap count."""
    import privcomp.protocols.cross_dealer as cd

    seen: list[int] = []
    real = cd.secure_sum_wide

    async def spy(ctx: PartyContext, values: list[int], **kw: Any) -> list[int]:
        out = await real(ctx, values, **kw)
        seen.extend(v >> 128 for v in out)
        return out

    monkeypatch.setattr(cd, "secure_sum_wide", spy)
    n, rows = 4, 50
    dealer = TrustedDealer(n)
    net = InMemoryNetwork(n)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    u = np.full((rows, 1), 2**61, dtype=np.int64)

    async def party(ctx: PartyContext) -> np.ndarray:
        pairs = [((0, 2), rows, np.arange(rows)), ((1, 3), rows, np.arange(rows))]
        words = _words(u if ctx.party_id < 2 else -u if ctx.party_id == 3 else u)
        return await masked_cross_totals(ctx, pairs, words, 1, 1, np.zeros((1, 1)))

    outs = await asyncio.gather(*(party(c) for c in ctxs))
    assert all(float(o[0, 0]) == 0.0 for o in outs)  # +rows 2^122 - rows 2^122
    assert max(abs(s) for s in seen) > 2**64  # a padded high half, not a count of wraps


@pytest.mark.parametrize(
    "req",
    [
        {"kind": ["mul"], "shape": [2]},
        {"kind": "trunc", "shape": [2]},
        {"kind": "trunc", "shape": [2], "frac_bits": "x"},
        {"kind": "mul", "shape": [2**32, 2**32]},
        {"kind": "mul", "shape": [2**62, 3]},
        {"kind": "cross", "pair": [0, 1], "rows": 0, "n_left": 5792, "n_right": 5792},
        "[" * 100_000,
    ],
)
async def test_malformed_dealer_requests_are_typed_errors(req: object) -> None:
    """Review finding: the dealer must answer every bad request with ProtocolError."""
    n = 2
    net = InMemoryNetwork(n + 1)
    raw = req.encode() if isinstance(req, str) else json.dumps(req).encode()
    for p in range(n):
        await net.transports[p].send(n, "dealer/0", raw)
    with pytest.raises(ProtocolError):
        await serve_dealer(ComputingPartiesView(net.transports[n], n), n, TrustedDealer(n))
