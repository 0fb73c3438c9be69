"""Tests of OT extension (privcomp.protocols.ot) and the bit material built on it
(privcomp.protocols.ot_material) as wired into the default PaillierTripleSource.

Every output is reconstructed from all parties' shares and checked against the exact plaintext
relation (tolerance 0: everything is exact modulo 2^64 or over GF(2)), for 2, 3 and 4 parties on
the in-memory network; the end-to-end comparisons are checked against numpy on real data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import gmpy2
import numpy as np
import pytest
from share_totals import check_trunc_pairs, total, xor_total

from privcomp.core.beaver import trunc_combine, trunc_mask
from privcomp.core.rng import InsecureSeededRandom
from privcomp.core.sharing import share
from privcomp.errors import ConfigurationError, PrivcompError, ProtocolAbort, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.he_triples import PaillierTripleSource
from privcomp.protocols.ot import (
    GROUP_G,
    GROUP_P,
    GROUP_Q,
    KAPPA,
    OtExtension,
    expand_seeds,
    pack_choice_bits,
    random_ots,
    setup_extensions,
    transpose_columns,
    unpack_choice_bits,
)
from privcomp.protocols.stats_quantile import (
    float_keys,
    keys_to_floats,
    order_statistics,
    sorted_keys,
)
from privcomp.simulation import simulate
from privcomp.transport.memory import ComputingPartiesView, InMemoryNetwork

T = TypeVar("T")


def run(
    n: int,
    body: Callable[[PartyContext], Awaitable[T]],
    *,
    seed: int = 0,
) -> list[T]:
    """Run ``body`` for every party with one default (OT) source each."""

    async def main() -> list[T]:
        net = InMemoryNetwork(n)
        ctxs = [
            PartyContext(
                transport=net.transports[p],
                triples=PaillierTripleSource(),
                rng=InsecureSeededRandom(seed + p),
            )
            for p in range(n)
        ]
        return list(await asyncio.gather(*(body(c) for c in ctxs)))

    return asyncio.run(main())


# --- building blocks -----------------------------------------------------------------------


def test_group_is_a_safe_prime_group_with_a_residue_generator() -> None:
    assert GROUP_P.bit_length() == 2048
    assert gmpy2.is_prime(GROUP_P, 40)
    assert gmpy2.is_prime(GROUP_Q, 40)
    assert gmpy2.legendre(GROUP_G, GROUP_P) == 1  # g generates the order-q subgroup
    assert gmpy2.powmod(GROUP_G, GROUP_Q, GROUP_P) == 1


@pytest.mark.parametrize("width", [1, 3, 17])
def test_bit_transpose_matches_unpackbits(width: int) -> None:
    cols = InsecureSeededRandom(width).ring_elements((KAPPA, width))
    rows = transpose_columns(cols)
    assert rows.shape == (64 * width, 2)
    col_bits = np.unpackbits(cols.view(np.uint8).reshape(KAPPA, -1), axis=1, bitorder="little")
    row_bits = np.unpackbits(rows.view(np.uint8).reshape(-1, 16), axis=1, bitorder="little")
    assert np.array_equal(col_bits.T, row_bits)


def test_choice_bit_packing_roundtrip() -> None:
    bits = (InsecureSeededRandom(3).ring_elements((130,)) & np.uint64(1)).astype(np.uint64)
    words = pack_choice_bits(bits)
    assert words.shape == (3,)
    assert np.array_equal(unpack_choice_bits(words, 130), bits)


def test_seed_expansion_reads_the_aes_ctr_prg_stream_at_any_offset() -> None:
    from privcomp.backends.prg import AesCtrPrg

    seeds = [bytes([i]) * 16 for i in range(3)]
    full = np.stack([AesCtrPrg(k).ring_elements((10,)) for k in seeds])
    assert np.array_equal(expand_seeds(seeds, 0, 10), full)
    assert np.array_equal(expand_seeds(seeds, 256, 5), full[:, 4:9])
    with pytest.raises(ProtocolError):
        expand_seeds(seeds, 64, 1)  # not a whole AES block


def _pair_ots(m: int, batches: int = 1, reorder: bool = False) -> list[Any]:
    """Party 0 (sender) and party 1 (receiver) run ``batches`` random-OT batches of ``m``."""

    async def main() -> list[Any]:
        net = InMemoryNetwork(2, reorder=reorder)
        ctxs = [
            PartyContext(transport=net.transports[p], triples=PaillierTripleSource())
            for p in range(2)
        ]
        exts = await asyncio.gather(*(setup_extensions(c) for c in ctxs))
        out = []
        for _ in range(batches):
            out.append(
                await asyncio.gather(
                    random_ots(ctxs[0], exts[0][1], m), random_ots(ctxs[1], exts[1][0], m)
                )
            )
        return [out, exts]

    return asyncio.run(main())


def test_random_ots_at_scale_give_exactly_the_chosen_message() -> None:
    m = 150_000
    batches, exts = _pair_ots(m, batches=2)
    sender, receiver = exts[0][1], exts[1][0]
    assert isinstance(sender, OtExtension)
    assert sender.is_sender
    assert not receiver.is_sender  # the lower index sends
    seen: list[np.ndarray] = []
    for (m0, m1), (c, mc) in batches:
        assert m0.shape == m1.shape == mc.shape == (m, 2)
        assert 0.49 < c.mean() < 0.51  # random choices
        chosen = np.where(c[:, None] == 1, m1, m0)
        other = np.where(c[:, None] == 1, m0, m1)
        assert np.array_equal(mc, chosen)
        # The other message is nowhere in what the receiver holds, and is not a fixed offset of
        # the chosen one (the IKNP correlation q_j xor t_j = s is hashed away).
        assert not np.any(np.all(other == mc, axis=1))
        diff = other ^ mc
        assert np.unique(diff, axis=0).shape[0] == m
        seen.append(mc)
    # Tweaks and PRG streams advance: no message repeats across batches.
    both = np.concatenate(seen)
    assert np.unique(both, axis=0).shape[0] == 2 * m


def test_receiver_view_is_independent_of_the_senders_secret() -> None:
    """Receiver's messages m_c agree with the sender; flipping s would give m_(1-c): the sender's
    s never leaves it (the receiver's state holds both seeds, neither depends on s)."""
    batches, exts = _pair_ots(1000, reorder=True)
    (m0, m1), (c, mc) = batches[0]
    assert np.array_equal(mc, np.where(c[:, None] == 1, m1, m0))
    sender = exts[0][1]
    assert sender.s_bits.shape == (KAPPA,)
    assert exts[1][0].s_bits.size == 0  # the receiver holds no s


# --- material from the OT path, 2/3/4 parties -----------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4])
def test_and_triples_reconstruct(n: int) -> None:
    shares = run(n, lambda c: c.triples.and_triples(c, (300,)))
    a = xor_total([s.a for s in shares])
    b = xor_total([s.b for s in shares])
    c = xor_total([s.c for s in shares])
    assert np.array_equal(c, a & b)
    assert np.unique(a).size == 300


@pytest.mark.parametrize("n", [2, 3, 4])
def test_dabits_reconstruct(n: int) -> None:
    shares = run(n, lambda c: c.triples.dabits(c, (4000,)))
    b = total([s.b for s in shares])
    b_xor = xor_total([s.b_xor for s in shares])
    assert set(np.unique(b).tolist()) == {0, 1}
    assert np.array_equal(b, b_xor & np.uint64(1))
    assert 0.45 < b.mean() < 0.55


@pytest.mark.parametrize("n", [2, 3, 4])
def test_edabits_reconstruct(n: int) -> None:
    shares = run(n, lambda c: c.triples.edabits(c, (50,)))
    r = total([s.r for s in shares])
    assert np.array_equal(r, xor_total([s.r_bits for s in shares]))
    assert len(set(r.tolist())) == 50


@pytest.mark.parametrize("n", [2, 3, 4])
def test_mul_triples_reconstruct(n: int) -> None:
    shares = run(n, lambda c: c.triples.mul_triples(c, (20, 5)))
    a, b, c = (total([getattr(s, f) for s in shares]) for f in "abc")
    assert c.shape == (20, 5)
    assert np.array_equal(c, a * b)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_trunc_pairs_truncate_real_data(n: int) -> None:
    """Truncation with OT-generated pairs on the diabetes data (error <= 1 ulp vs numpy)."""
    from sklearn.datasets import load_diabetes

    f = 16
    x = load_diabetes().data[:40, 2] * 100
    xr = np.round(x * 2**f * 2**f).astype(np.int64).view(np.uint64)
    x_sh = share(xr, n, InsecureSeededRandom(5))

    async def body(c: PartyContext) -> tuple[Any, np.ndarray]:
        pair = await c.triples.trunc_pairs(c, x.shape, f)
        masked = trunc_mask(x_sh[c.party_id], pair, c.party_id)
        opened = masked.copy()
        for v in (await c.exchange_all(c.next_tag("open"), masked)).values():
            opened = opened + v
        return pair, trunc_combine(opened, pair, c.party_id)

    out = run(n, body)
    check_trunc_pairs(out, x, f)


@pytest.mark.parametrize("shape", [(), (0,), (2, 3)])
def test_scalar_empty_and_2d_shapes(shape: tuple[int, ...]) -> None:
    async def body(c: PartyContext) -> list[Any]:
        return [
            await c.triples.and_triples(c, shape),
            await c.triples.dabits(c, shape),
            await c.triples.mul_triples(c, shape),
        ]

    out = run(3, body)
    band, dab, mul = ([o[k] for o in out] for k in range(3))
    assert all(x.c.shape == shape and x.a.shape == shape for x in (*band, *mul))
    assert all(x.b.shape == shape for x in dab)
    assert np.array_equal(
        xor_total([x.c for x in band]),
        xor_total([x.a for x in band]) & xor_total([x.b for x in band]),
    )
    assert np.array_equal(total([x.b for x in dab]), xor_total([x.b_xor for x in dab]))


def test_one_source_for_all_parties_concurrent_calls_and_reordering() -> None:
    """As in ``privcomp.simulate``: one instance, state per party; two calls issued at once by
    every party (gather) and reordered deliveries still pair the right OT batches."""
    src = PaillierTripleSource()

    async def main() -> list[Any]:
        net = InMemoryNetwork(3, reorder=True)
        ctxs = [PartyContext(transport=net.transports[p], triples=src) for p in range(3)]

        async def body(c: PartyContext) -> Any:
            await c.triples.dabits(c, (1,))  # setup first, then two calls in flight at once
            return await asyncio.gather(c.triples.and_triples(c, (40,)), c.triples.dabits(c, (70,)))

        return list(await asyncio.gather(*(body(c) for c in ctxs)))

    out = asyncio.run(main())
    band = [o[0] for o in out]
    dab = [o[1] for o in out]
    assert np.array_equal(
        xor_total([x.c for x in band]),
        xor_total([x.a for x in band]) & xor_total([x.b for x in band]),
    )
    assert np.array_equal(total([x.b for x in dab]), xor_total([x.b_xor for x in dab]))


def test_big_calls_run_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls larger than one OT batch are split (memory bound); results stay exact, and two
    chunked calls in flight at once still pair the right OT ranges."""
    from privcomp.protocols import ot_material

    monkeypatch.setattr(ot_material, "MAX_BATCH_OTS", 1000)

    async def body(c: PartyContext) -> Any:
        mul = await c.triples.mul_triples(c, (20,))  # 128 OTs per element: 7 per chunk
        both = await asyncio.gather(c.triples.and_triples(c, (30,)), c.triples.dabits(c, (2500,)))
        return mul, *both

    out = run(3, body)
    mul, band, dab = ([o[k] for o in out] for k in range(3))
    assert np.array_equal(
        total([x.c for x in mul]), total([x.a for x in mul]) * total([x.b for x in mul])
    )
    assert np.array_equal(
        xor_total([x.c for x in band]),
        xor_total([x.a for x in band]) & xor_total([x.b for x in band]),
    )
    bits = total([x.b for x in dab])
    assert np.array_equal(bits, xor_total([x.b_xor for x in dab]))
    assert set(np.unique(bits).tolist()) == {0, 1}


def test_ot_path_needs_no_paillier_keys_and_engines_are_checked() -> None:
    src = PaillierTripleSource()
    run(2, lambda c: src.dabits(c, (3,)))
    assert src._states == {}  # no Paillier key was generated for bit material or triples
    with pytest.raises(ConfigurationError):
        PaillierTripleSource(bits="fast")
    with pytest.raises(ConfigurationError):
        PaillierTripleSource(mul="gpu")


# --- malformed peer messages ----------------------------------------------------------------


class TamperingTransport(ComputingPartiesView):
    """Replaces the payload of messages whose tag ends with ``label`` by ``tamper(payload)``."""

    def __init__(self, inner: Any, label: str, tamper: Callable[[bytes], bytes]) -> None:
        super().__init__(inner, inner.n_parties)
        self.label, self.tamper = label, tamper

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        await super().send(to, tag, self.tamper(payload) if tag.endswith(self.label) else payload)


def _element_payload(value: int, count: int) -> bytes:
    from privcomp.core.codec import array_to_bytes

    raw = value.to_bytes(256, "little") * count
    return array_to_bytes(np.frombuffer(raw, dtype="<u8").reshape(count, 32))


@pytest.mark.parametrize(
    ("label", "tamper", "call"),
    [
        ("ot-ext", lambda b: b[:-8], "and"),  # truncated extension matrix
        ("ot-ext", lambda b: b"junk", "dabits"),  # undecodable
        ("ot-base-a", lambda b: _element_payload(0, 1), "and"),  # not a group element
        # p - 1 = -1 is not a quadratic residue modulo a safe prime p = 3 mod 4.
        ("ot-base-b", lambda b: _element_payload(int(GROUP_P) - 1, KAPPA), "and"),
        ("ot-base-b", lambda b: _element_payload(5, KAPPA - 1), "dabits"),  # too few elements
        ("ot-and-fix", lambda b: b[:-8], "and"),
        ("ot-dabit-fix", lambda b: b[:-8], "dabits"),
        ("ot-mul-fix", lambda b: b[:-8], "mul"),
    ],
)
def test_malformed_peer_message_raises_protocol_error(
    label: str, tamper: Callable[[bytes], bytes], call: str
) -> None:
    calls = {
        "and": lambda c: c.triples.and_triples(c, (4,)),
        "dabits": lambda c: c.triples.dabits(c, (4,)),
        "mul": lambda c: c.triples.mul_triples(c, (4,)),
    }

    async def main() -> list[Any]:
        net = InMemoryNetwork(2, timeout=30)
        ctxs = [
            PartyContext(
                transport=TamperingTransport(t, label, tamper), triples=PaillierTripleSource()
            )
            for t in net.transports
        ]

        async def body(c: PartyContext) -> Any:
            try:
                return await calls[call](c)
            except ProtocolError as exc:
                net.abort(c.party_id, type(exc).__name__)  # as simulate does: peers stop at once
                return exc

        return list(await asyncio.gather(*(body(c) for c in ctxs)))

    out = asyncio.run(main())
    detected = [o for o in out if isinstance(o, ProtocolError) and not isinstance(o, ProtocolAbort)]
    assert len(detected) == 1, out
    # The detecting party names the peer, never a value.
    assert "party" in str(detected[0])


# --- end to end: the default source in privcomp.simulate ------------------------------------


def test_simulate_default_source_comparison_matches_numpy() -> None:
    from sklearn.datasets import load_diabetes

    data = load_diabetes().data
    x, y = data[:64, 2], data[:64, 3]

    async def program(ctx: PartyContext, v: np.ndarray) -> Any:
        xs = await ctx.input(v)
        lt = await xs[0].lt(xs[1])
        mx = await xs[0].maximum(xs[1])
        return await lt.reveal(), await mx.reveal()

    out = simulate(program, [x, y], rng=InsecureSeededRandom(4))  # default triples: "he"
    lt, mx = out[0]
    assert np.array_equal(np.asarray(lt) != 0, x < y)
    np.testing.assert_allclose(mx, np.maximum(x, y), atol=2**-15)


def test_simulate_default_source_order_statistics_match_numpy() -> None:
    from sklearn.datasets import load_diabetes

    pooled = load_diabetes().data[:150, 0]
    parts = np.array_split(pooled, 3)
    ranks = [0, 74, 75, 149]

    async def program(ctx: PartyContext, v: np.ndarray) -> list[int]:
        return await order_statistics(ctx, [sorted_keys(v)], [(0, r) for r in ranks], 150)

    out = simulate(program, parts, rng=InsecureSeededRandom(6))
    want = np.sort(float_keys(pooled))[ranks].tolist()
    assert list(out) == [want] * 3
    # Ranks 74 and 75 are the median's neighbours: the released order statistics give it exactly.
    found = keys_to_floats(np.array(out[0][1:3], dtype=np.int64))
    assert (found[0] + found[1]) / 2 == np.median(pooled)


async def test_reused_source_out_of_step_after_a_failed_job_is_refused_not_wrong() -> None:
    """Review finding M1: a source reused after a job where only one party reserved OTs must
    fail with ProtocolError in later jobs, never return wrong triples silently."""
    src = PaillierTripleSource()

    async def job(body: Any) -> list[Any]:
        net = InMemoryNetwork(2, timeout=5)
        ctxs = [PartyContext(transport=t, triples=src) for t in net.transports]

        async def party(c: PartyContext) -> Any:
            try:
                return await body(c)
            except BaseException as exc:
                net.abort(c.party_id, "failed")
                return exc

        return list(await asyncio.gather(*(party(c) for c in ctxs)))

    first = await job(lambda c: c.triples.and_triples(c, (4,)))
    assert not any(isinstance(o, BaseException) for o in first)

    async def refuse(c: PartyContext) -> Any:
        if c.party_id == 1:
            await asyncio.sleep(0)
            raise PrivcompError("policy refusal")
        return await c.triples.and_triples(c, (4,))

    await job(refuse)
    later = await job(lambda c: c.triples.and_triples(c, (1000,)))
    assert any(isinstance(o, ProtocolError) and "out of step" in str(o) for o in later)
