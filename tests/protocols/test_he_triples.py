"""Tests of the Paillier-OLE triple source (privcomp.protocols.he_triples / ole).

Every kind of material is reconstructed from all parties' shares and checked against the exact
plaintext relation (tolerance 0: everything is exact modulo 2^64), for 2, 3 and 5 parties on the
in-memory network, with cached 2048-bit keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest
from share_totals import check_trunc_pairs, total, xor_total

from privcomp.backends.paillier import ciphertexts_from_bytes, ciphertexts_to_bytes, keygen
from privcomp.core.beaver import (
    TripleShare,
    beaver_combine,
    beaver_masks,
    trunc_combine,
    trunc_mask,
)
from privcomp.core.rng import InsecureSeededRandom, SystemRandomSource
from privcomp.core.sharing import share
from privcomp.protocols.context import PartyContext
from privcomp.protocols.he_triples import (
    PaillierTripleSource,
    _orient,
    _tree_levels,
    pack_bits,
    unpack_bits,
    weighted_bits,
)
from privcomp.protocols.ole import OleShape, slot_layout
from privcomp.transport.memory import ComputingPartiesView, InMemoryNetwork

T = TypeVar("T")
KEY_BITS = 2048
MAX_PARTIES = 5
#: This file tests the Paillier engines; the OT engines (the defaults) are in test_ot.py.
PAILLIER: dict[str, Any] = {"bits": "paillier", "mul": "paillier"}


@pytest.fixture(scope="module")
def keypairs() -> dict[int, Any]:
    return {p: keygen(KEY_BITS) for p in range(MAX_PARTIES)}


def run(
    n: int,
    keypairs: dict[int, Any],
    body: Callable[[PartyContext], Awaitable[T]],
    *,
    seed: int | None = None,
    net: InMemoryNetwork | None = None,
) -> tuple[list[T], InMemoryNetwork]:
    """Run ``body`` for every party on a fresh in-memory network (one source per party)."""
    network = net or InMemoryNetwork(n)

    async def main() -> list[T]:
        ctxs = [
            PartyContext(
                transport=network.transports[p],
                triples=PaillierTripleSource(keypairs={p: keypairs[p]}, **PAILLIER),
                rng=InsecureSeededRandom(seed + p) if seed is not None else SystemRandomSource(),
            )
            for p in range(n)
        ]
        return list(await asyncio.gather(*(body(c) for c in ctxs)))

    return asyncio.run(main()), network


# --- pure helpers -------------------------------------------------------------------------


def test_bit_packing_roundtrip() -> None:
    words = InsecureSeededRandom(1).ring_elements((5, 3))
    bits = unpack_bits(words)
    assert bits.shape == (5, 3, 64)
    assert set(np.unique(bits).tolist()) <= {0, 1}
    assert np.array_equal(pack_bits(bits), words)
    assert np.array_equal(weighted_bits(bits, 0, 64), words)
    assert np.array_equal(weighted_bits(bits, 16, 63), (words & np.uint64(2**63 - 1)) >> 16)


def test_tree_levels_meet_every_pair_once() -> None:
    for n in range(2, 9):
        met = []
        for level in _tree_levels(n):
            seen: set[int] = set()
            for g, h in level:
                assert not (set(g) | set(h)) & seen  # a party is in at most one pair per level
                seen |= set(g) | set(h)
                met += [(i, j) for i in g for j in h]
        assert sorted(tuple(sorted(m)) for m in met) == [
            (i, j) for i in range(n) for j in range(i + 1, n)
        ]


def test_slot_layout_fits_modulus() -> None:
    width, per_ct = slot_layout(OleShape((4,), (4,)), 2048, 40)
    assert (width, per_ct) == (169, 12)
    assert width * per_ct <= 2047
    width, per_ct = slot_layout(OleShape((4,), (4,), x_bits=1, y_bits=1), 2048, 40)
    assert width == 43
    assert per_ct == 47
    width, _ = slot_layout(OleShape((3, 10), (10, 2), matmul=True), 2048, 40)
    assert width == 128 + 4 + 41


# --- correlations --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5])
def test_mul_triples_reconstruct(n: int, keypairs: dict[int, Any]) -> None:
    shares, _ = run(n, keypairs, lambda c: c.triples.mul_triples(c, (4, 4)))
    a = total([s.a for s in shares])
    b = total([s.b for s in shares])
    c = total([s.c for s in shares])
    assert a.shape == (4, 4)
    assert np.array_equal(c, a * b)
    assert len({int(v) for v in a.ravel()}) > 10  # a is random, not constant


@pytest.mark.parametrize("n", [2, 3, 5])
def test_matmul_triples_reconstruct(n: int, keypairs: dict[int, Any]) -> None:
    shares, _ = run(n, keypairs, lambda c: c.triples.matmul_triples(c, (3, 5), (5, 2)))
    a = total([s.a for s in shares])
    b = total([s.b for s in shares])
    c = total([s.c for s in shares])
    assert a.shape == (3, 5)
    assert b.shape == (5, 2)
    assert c.shape == (3, 2)
    assert np.array_equal(c, a @ b)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_and_triples_reconstruct(n: int, keypairs: dict[int, Any]) -> None:
    shares, _ = run(n, keypairs, lambda c: c.triples.and_triples(c, (2,)))
    a = xor_total([s.a for s in shares])
    b = xor_total([s.b for s in shares])
    c = xor_total([s.c for s in shares])
    assert np.array_equal(c, a & b)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_dabits_reconstruct(n: int, keypairs: dict[int, Any]) -> None:
    shares, _ = run(n, keypairs, lambda c: c.triples.dabits(c, (40,)))
    b = total([s.b for s in shares])
    b_xor = xor_total([s.b_xor for s in shares])
    assert set(np.unique(b).tolist()) == {0, 1}  # 40 random bits: both values appear
    assert np.array_equal(b, b_xor & np.uint64(1))


@pytest.mark.parametrize(("n", "size"), [(2, 2), (3, 2), (5, 1)])
def test_edabits_reconstruct(n: int, size: int, keypairs: dict[int, Any]) -> None:
    shares, _ = run(n, keypairs, lambda c: c.triples.edabits(c, (size,)))
    r = total([s.r for s in shares])
    r_bits = xor_total([s.r_bits for s in shares])
    assert np.array_equal(r, r_bits)
    assert len(set(r.tolist())) == size


@pytest.mark.parametrize("n", [2, 3, 5])
def test_trunc_pairs_reconstruct_and_truncate(n: int, keypairs: dict[int, Any]) -> None:
    f = 16
    x = np.array([3.25, -7.5], dtype=np.float64)
    xr = (np.round(x * 2**f * 2**f)).astype(np.int64).view(np.uint64)  # scale 2f, truncate by f
    x_sh = share(xr, n, InsecureSeededRandom(5))

    async def body(c: PartyContext) -> tuple[Any, np.ndarray]:
        pair = await c.triples.trunc_pairs(c, (2,), f)
        masked = trunc_mask(x_sh[c.party_id], pair, c.party_id)
        opened = masked.copy()
        for v in (await c.exchange_all(c.next_tag("open"), masked)).values():
            opened = opened + v
        return pair, trunc_combine(opened, pair, c.party_id)

    out, _ = run(n, keypairs, body)
    check_trunc_pairs(out, x, f)


@pytest.mark.parametrize("n", [2, 3])
def test_beaver_multiplication_on_real_data(n: int, keypairs: dict[int, Any]) -> None:
    """A Beaver product with these triples equals numpy's product (diabetes data, exact ring)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes().data[:6, :2]
    xs = np.round(data[:, 0] * 1e4).astype(np.int64).view(np.uint64)
    ys = np.round(data[:, 1] * 1e4).astype(np.int64).view(np.uint64)
    rng = InsecureSeededRandom(9)
    x_sh, y_sh = share(xs, n, rng), share(ys, n, rng)

    async def body(c: PartyContext) -> np.ndarray:
        t: TripleShare = await c.triples.mul_triples(c, xs.shape)
        d, e = beaver_masks(x_sh[c.party_id], y_sh[c.party_id], t)
        both = np.stack([d, e])
        opened = both.copy()
        for v in (await c.exchange_all(c.next_tag("beaver"), both)).values():
            opened = opened + v
        return beaver_combine(opened[0], opened[1], t, c.party_id)

    z, _ = run(n, keypairs, body)
    expected = xs.view(np.int64) * ys.view(np.int64)
    assert np.array_equal(total(z).view(np.int64), expected)


def test_arrival_order_does_not_matter(keypairs: dict[int, Any]) -> None:
    net = InMemoryNetwork(3, reorder=True)

    async def body(c: PartyContext) -> tuple[Any, Any]:
        return await c.triples.mul_triples(c, (5,)), await c.triples.dabits(c, (5,))

    out, _ = run(3, keypairs, body, net=net)
    t = [o[0] for o in out]
    assert np.array_equal(
        total([x.c for x in t]), total([x.a for x in t]) * total([x.b for x in t])
    )
    d = [o[1] for o in out]
    assert np.array_equal(total([x.b for x in d]), xor_total([x.b_xor for x in d]))


def test_seeded_runs_are_reproducible_only_with_the_same_seed(keypairs: dict[int, Any]) -> None:
    s1, _ = run(2, keypairs, lambda c: c.triples.mul_triples(c, (4,)), seed=11)
    s2, _ = run(2, keypairs, lambda c: c.triples.mul_triples(c, (4,)), seed=11)
    s3, _ = run(2, keypairs, lambda c: c.triples.mul_triples(c, (4,)), seed=12)
    assert np.array_equal(s1[0].a, s2[0].a)
    assert not np.array_equal(s1[0].a, s3[0].a)
    for s in (s1, s3):
        assert np.array_equal(
            total([x.c for x in s]), total([x.a for x in s]) * total([x.b for x in s])
        )


def test_xor_tree_encrypts_with_the_cheaper_group() -> None:
    # Three parties, last level: {0, 1} hold 64-bit shares, {2} a private bit. Encrypting the
    # two 64-bit shares lets party 2 select instead of exponentiating.
    assert _orient([0, 1], [2]) == ([0, 1], [2])
    assert _orient([2], [0, 1]) == ([0, 1], [2])
    assert _orient([0], [1]) == ([0], [1])


@pytest.mark.parametrize("shape", [(), (0,), (2, 3)])
def test_scalar_empty_and_2d_shapes(shape: tuple[int, ...], keypairs: dict[int, Any]) -> None:
    async def body(c: PartyContext) -> list[Any]:
        return [
            await c.triples.mul_triples(c, shape),
            await c.triples.and_triples(c, shape),
            await c.triples.trunc_pairs(c, shape, 12),
        ]

    out, _ = run(2, keypairs, body)
    mul, band, trunc = ([o[k] for o in out] for k in range(3))
    assert all(getattr(x, f).shape == shape for x in mul for f in ("a", "b", "c"))
    assert np.array_equal(
        total([x.c for x in mul]), total([x.a for x in mul]) * total([x.b for x in mul])
    )
    assert np.array_equal(
        xor_total([x.c for x in band]),
        xor_total([x.a for x in band]) & xor_total([x.b for x in band]),
    )
    assert all(getattr(x, f).shape == shape for x in trunc for f in ("r", "r_msb", "r_low_shifted"))


@pytest.mark.parametrize("given_keys", [True, False])
def test_one_instance_shared_by_all_parties(given_keys: bool, keypairs: dict[int, Any]) -> None:
    """As in ``privcomp.simulate``: one source object, state kept per party (own keys each)."""
    src = PaillierTripleSource(keypairs=keypairs if given_keys else None, **PAILLIER)
    net = InMemoryNetwork(3)

    async def main() -> list[Any]:
        ctxs = [PartyContext(transport=net.transports[p], triples=src) for p in range(3)]
        return list(await asyncio.gather(*(c.triples.mul_triples(c, (6,)) for c in ctxs)))

    t = asyncio.run(main())
    assert np.array_equal(
        total([x.c for x in t]), total([x.a for x in t]) * total([x.b for x in t])
    )


def test_mismatched_matmul_shapes_are_refused(keypairs: dict[int, Any]) -> None:
    from privcomp.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        run(2, keypairs, lambda c: c.triples.matmul_triples(c, (2, 3), (4, 2)))


# --- what goes over the wire ---------------------------------------------------------------


class RecordingTransport(ComputingPartiesView):
    """Wraps a transport and records every payload sent (tag, peer, bytes)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, inner.n_parties)
        self.sent: list[tuple[str, int, bytes]] = []

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        self.sent.append((tag, to, payload))
        await super().send(to, tag, payload)


def _recorded_run(
    n: int, keypairs: dict[int, Any], calls: int, *, everything: bool = False
) -> list[RecordingTransport]:
    net = InMemoryNetwork(n)
    rec = [RecordingTransport(t) for t in net.transports]

    async def main() -> None:
        src = [PaillierTripleSource(keypairs={p: keypairs[p]}, **PAILLIER) for p in range(n)]
        ctxs = [PartyContext(transport=rec[p], triples=src[p]) for p in range(n)]

        async def body(c: PartyContext) -> None:
            for _ in range(calls):
                await c.triples.mul_triples(c, (6,))
            if everything:
                await c.triples.matmul_triples(c, (2, 3), (3, 2))
                await c.triples.and_triples(c, (1,))
                await c.triples.dabits(c, (6,))

        await asyncio.gather(*(body(c) for c in ctxs))

    asyncio.run(main())
    return rec


def test_party_sends_only_ciphertexts_under_its_own_key(keypairs: dict[int, Any]) -> None:
    """The view of the other parties: a public key, then nothing but valid ciphertexts.

    Every byte party ``p`` sends is its public key or a ciphertext list that re-serialises to
    exactly the same bytes (no plaintext hidden beside the ciphertexts): its own inputs under its
    own key, its OLE replies under the recipient's key (fresh, masked, re-randomised).
    """
    rec = _recorded_run(3, keypairs, calls=1, everything=True)
    for p, r in enumerate(rec):
        pk = keypairs[p][0]
        kinds = [tag.split(":", 1)[1] for tag, _, _ in r.sent]
        assert set(kinds) == {"he-pk", "ole-enc", "ole-rep"}
        assert kinds.count("he-pk") == 2  # one key exchange, to each peer
        for tag, to, payload in r.sent:
            if tag.endswith("he-pk"):
                assert payload == pk.to_bytes()
                continue
            key = pk if tag.endswith("ole-enc") else keypairs[to][0]
            cts = ciphertexts_from_bytes(payload, key)
            assert ciphertexts_to_bytes(cts, key) == payload
            assert len(cts) >= 1
        first_enc = next(pl for tag, _, pl in r.sent if tag.endswith("ole-enc"))
        assert len(ciphertexts_from_bytes(first_enc, pk)) == 6  # one ciphertext per element
        first_rep = next((pl, to) for tag, to, pl in r.sent if tag.endswith("ole-rep"))
        assert len(ciphertexts_from_bytes(first_rep[0], keypairs[first_rep[1]][0])) == 1  # packed


def test_fresh_material_across_calls_and_runs(keypairs: dict[int, Any]) -> None:
    """T14 spirit: no ciphertext, reply or triple value repeats across two calls or two runs."""
    first = _recorded_run(2, keypairs, calls=2)
    second = _recorded_run(2, keypairs, calls=2)
    payloads = [
        (tag.split(":", 1)[1], payload)
        for r in (*first, *second)
        for tag, _, payload in r.sent
        if "ole" in tag
    ]
    assert len(payloads) == 16
    assert len({p for _, p in payloads}) == len(payloads)
    cts: list[int] = []
    for r, keys_to in ((first[0], 1), (second[0], 1)):
        for tag, _, payload in r.sent:
            if tag.endswith("ole-rep"):
                cts += [int(c) for c in ciphertexts_from_bytes(payload, keypairs[keys_to][0])]
    assert len(set(cts)) == len(cts) == 4


def test_masks_fresh_per_call_same_inputs(keypairs: dict[int, Any]) -> None:
    """Same seeds for a and b are impossible to force; instead the decrypted OLE values differ."""
    shares1, _ = run(2, keypairs, lambda c: c.triples.mul_triples(c, (8,)))
    shares2, _ = run(2, keypairs, lambda c: c.triples.mul_triples(c, (8,)))
    vals = [int(v) for s in (*shares1, *shares2) for v in (*s.a, *s.b, *s.c)]
    assert len(set(vals)) == len(vals)


def test_refuses_short_keys_and_weak_sigma() -> None:
    from privcomp.errors import InsecureParameterError

    with pytest.raises(InsecureParameterError):
        PaillierTripleSource(1024)
    with pytest.raises(InsecureParameterError):
        PaillierTripleSource(sigma=20)
    with pytest.raises(InsecureParameterError):
        PaillierTripleSource(1024, min_key_bits=1024)


def _direct_ole(
    keypairs: dict[int, Any], shape: OleShape, x: np.ndarray, y: np.ndarray
) -> list[np.ndarray]:
    """Party 0 sends ``x``, party 1 answers with ``y``; return both shares of ``x o y``."""
    from privcomp.protocols.ole import OleKeys, ole_cross_products

    def body(c: PartyContext) -> Awaitable[np.ndarray]:
        me, other = c.party_id, 1 - c.party_id
        keys = OleKeys(keypairs[me][0], keypairs[me][1], {other: keypairs[other][0]})
        return ole_cross_products(
            c,
            keys,
            shape,
            x=x if me == 0 else None,
            y=y if me == 1 else None,
            send_to=[1] if me == 0 else [],
            recv_from=[0] if me == 1 else [],
        )

    return run(2, keypairs, body)[0]


def test_direct_ole_matches_plaintext(keypairs: dict[int, Any]) -> None:
    x = np.array([0, 1, 1, 0, 1], dtype=np.uint64)
    y = np.array([1, 1, 0, 0, 1], dtype=np.uint64)
    shares = _direct_ole(keypairs, OleShape((5,), (5,), x_bits=1, y_bits=1), x, y)
    assert np.array_equal(total(shares), x * y)


@pytest.mark.parametrize("side", ["x", "y"])
def test_operand_above_declared_bits_is_refused(keypairs: dict[int, Any], side: str) -> None:
    """Regression: a 1-bit OLE fed the value 2 returned a silently wrong share (the receiver's
    selection treated 2 as 1; a large sender value overflowed its slot and its mask bound)."""
    from privcomp.errors import ProtocolError

    ok = np.array([1, 0, 1], dtype=np.uint64)
    bad = np.array([1, 2, 1], dtype=np.uint64)
    x, y = (bad, ok) if side == "x" else (ok, bad)
    with pytest.raises(ProtocolError, match="bound"):
        _direct_ole(keypairs, OleShape((3,), (3,), x_bits=1, y_bits=1), x, y)


def test_operand_with_wrong_shape_is_refused(keypairs: dict[int, Any]) -> None:
    from privcomp.errors import ProtocolError

    x = np.ones(4, dtype=np.uint64)
    with pytest.raises(ProtocolError, match="shape"):
        _direct_ole(keypairs, OleShape((3,), (3,)), x, np.ones(3, dtype=np.uint64))
