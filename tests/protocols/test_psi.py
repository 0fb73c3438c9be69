"""Private set intersection (privcomp.protocols.psi): correctness, alignment, leakage checks.

Every result is checked against Python's set intersection (exact: no tolerance applies).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    ConfigurationError,
    DuplicateKeyError,
    EncodingError,
    GroupTooSmall,
    ProtocolError,
    TransportError,
)
from privcomp.protocols import psi as psi_module
from privcomp.protocols import psi_group
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.psi import (
    PSIResult,
    PSIValues,
    _align,
    _inverse,
    align_tags,
    encode_key,
    hash_keys,
    psi,
    psi_values,
    random_permutation,
)
from privcomp.protocols.psi_group import Exponentiator, fork_compute
from privcomp.protocols.stats_vertical import align_exact
from privcomp.simulation import simulate
from privcomp.transport.memory import InMemoryNetwork


def run_psi(inputs: Sequence[Any], **kwargs: Any) -> list[PSIResult]:
    """Both parties run psi with the same keyword arguments (per-party ones via dicts)."""
    per_party = kwargs.pop("per_party", [{}, {}])
    rng = kwargs.pop("rng", None)

    async def program(ctx: PartyContext, keys: Any) -> PSIResult:
        return await psi(ctx, keys, **kwargs, **per_party[ctx.party_id])

    return simulate(program, list(inputs), triples="dealer", rng=rng)


async def run_both(inputs: Sequence[Any], **kwargs: Any) -> list[Any]:
    """Each party's result or exception (no abort short-cut: shows what each party sees)."""
    net = InMemoryNetwork(2, timeout=10.0)
    dealer = TrustedDealer(2)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    return await asyncio.gather(
        *(psi(c, k, **kwargs) for c, k in zip(ctxs, inputs, strict=True)), return_exceptions=True
    )


def check_alignment(a: Sequence[Any], b: Sequence[Any], ra: PSIResult, rb: PSIResult) -> None:
    """Aligned keys equal element-wise, and their set is exactly the plaintext intersection."""
    expected = set(a) & set(b)
    assert ra.size == rb.size == len(expected)
    assert ra.indices is not None
    assert rb.indices is not None
    assert ra.indices.dtype == np.int64
    assert len(ra.indices) == len(expected)
    left = [a[i] for i in ra.indices]
    right = [b[i] for i in rb.indices]
    assert left == right
    assert set(left) == expected
    assert len(set(ra.indices.tolist())) == len(ra.indices)
    assert (ra.n_own, ra.n_peer, rb.n_own, rb.n_peer) == (len(a), len(b), len(b), len(a))


def sets_with_overlap(n_a: int, n_b: int, overlap: int, seed: int) -> tuple[list[int], list[int]]:
    """Two lists of distinct random 62-bit ints, in random order, sharing ``overlap`` keys."""
    gen = np.random.default_rng(seed)
    pool = np.unique(gen.integers(0, 2**62, size=2 * (n_a + n_b) + 10))
    pool = gen.permutation(pool)[: n_a + n_b - overlap]
    a = pool[:n_a].tolist()
    b = pool[n_a - overlap : n_a - overlap + n_b].tolist()
    return gen.permutation(a).tolist(), gen.permutation(b).tolist()


@pytest.mark.parametrize(
    ("n_a", "n_b", "overlap"),
    [(50, 40, 0), (50, 40, 1), (60, 60, 60), (80, 80, 40), (30, 70, 30), (0, 20, 0), (1, 1, 1)],
    ids=["none", "one", "full", "half", "subset", "empty", "single"],
)
def test_int_keys_known_overlap(n_a: int, n_b: int, overlap: int) -> None:
    a, b = sets_with_overlap(n_a, n_b, overlap, seed=n_a * 1000 + overlap)
    ra, rb = run_psi([a, b])
    check_alignment(a, b, ra, rb)
    assert ra.size == overlap


def test_string_keys_and_types_are_distinct() -> None:
    a = [f"patient-{i:05d}" for i in range(0, 300, 3)] + ["1", "ü-ñ"]
    b = [f"patient-{i:05d}" for i in range(0, 300, 5)] + [1, "ü-ñ", b"raw"]
    ra, rb = run_psi([a, b])
    check_alignment(a, b, ra, rb)  # "1" and 1 are different keys
    assert "1" not in {b[i] for i in rb.indices}  # type: ignore[union-attr]


def test_numpy_and_pandas_inputs() -> None:
    pd = pytest.importorskip("pandas")
    a = np.arange(0, 200, dtype=np.int64)
    b = pd.Series(np.arange(150, 400, dtype=np.int32))
    ra, rb = run_psi([a, b])
    check_alignment(a.tolist(), b.tolist(), ra, rb)


def test_cardinality_only() -> None:
    a, b = sets_with_overlap(70, 90, 33, seed=7)
    ra, rb = run_psi([a, b], cardinality_only=True)
    assert ra.size == rb.size == 33
    assert ra.indices is None
    assert rb.indices is None


def test_chunking_with_different_chunk_sizes() -> None:
    a, b = sets_with_overlap(45, 52, 20, seed=3)
    ra, rb = run_psi([a, b], per_party=[{"chunk_size": 4}, {"chunk_size": 7}])
    check_alignment(a, b, ra, rb)


def test_forked_workers_match_inline() -> None:
    a, b = sets_with_overlap(2600, 2500, 1200, seed=11)
    inline = run_psi([a, b], workers=1, rng=InsecureSeededRandom(5))
    forked = run_psi([a, b], workers=2, rng=InsecureSeededRandom(5))
    check_alignment(a, b, *forked)
    for x, y in zip(inline, forked, strict=True):
        assert np.array_equal(x.indices, y.indices)  # type: ignore[arg-type]
    assert forked[0].cpu_seconds > 0


@settings(max_examples=10, deadline=None)
@given(
    st.sets(st.integers(-(2**70), 2**70), max_size=25),
    st.sets(st.integers(-(2**70), 2**70), max_size=25),
)
def test_property_matches_set_intersection(sa: set[int], sb: set[int]) -> None:
    a, b = sorted(sa), sorted(sb | set(list(sa)[:5]))
    check_alignment(a, b, *run_psi([a, b]))


def test_real_data_vertical_join_matches_pandas_merge() -> None:
    """Diabetes data split vertically: PSI-aligned columns equal a plaintext inner join."""
    pd = pytest.importorskip("pandas")
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame["pid"] = [f"P{i:04d}" for i in range(len(frame))]
    gen = np.random.default_rng(0)
    left = frame.loc[gen.permutation(len(frame))[:300], ["pid", "age", "bmi"]]
    right = frame.loc[gen.permutation(len(frame))[:320], ["pid", "bp", "target"]]
    ra, rb = run_psi([left["pid"], right["pid"]])
    joined = left.merge(right, on="pid")
    a_rows = left.iloc[ra.indices].reset_index(drop=True)  # type: ignore[call-overload]
    b_rows = right.iloc[rb.indices].reset_index(drop=True)  # type: ignore[call-overload]
    assert ra.size == len(joined)
    assert (a_rows["pid"] == b_rows["pid"]).all()
    got = np.corrcoef(a_rows["bmi"], b_rows["target"])[0, 1]
    want = np.corrcoef(joined["bmi"], joined["target"])[0, 1]
    assert got == pytest.approx(want, rel=1e-12)
    assert pd.api.types.is_float_dtype(a_rows["bmi"])


def test_duplicates_refused_naming_the_party() -> None:
    a = ["secret-key-A", "secret-key-B", "secret-key-A"]
    with pytest.raises(DuplicateKeyError, match="party 0") as info:
        run_psi([a, ["x", "y"]])
    assert info.value.party == 0
    assert "secret-key" not in str(info.value)
    with pytest.raises(DuplicateKeyError, match="party 1"):
        run_psi([[1, 2], [5, 5]])


async def test_failures_reach_both_parties_without_timeout() -> None:
    ea, eb = await run_both([["k1", "k2", "k1"], ["k3"]])
    assert isinstance(ea, DuplicateKeyError)
    assert ea.party == 0
    assert isinstance(eb, DuplicateKeyError)
    assert eb.party == 0
    ea, eb = await run_both([[1, 2], [0.5]])
    assert isinstance(ea, ProtocolError)
    assert "party 1 could not encode" in str(ea)
    assert isinstance(eb, EncodingError)
    assert "party 1" in str(eb)
    ea, eb = await run_both([list(range(30)), list(range(20, 40))], min_size=11)
    assert isinstance(ea, GroupTooSmall)
    assert isinstance(eb, GroupTooSmall)


def test_unsupported_key_types_refused() -> None:
    with pytest.raises(EncodingError, match=r"party 0.*float"):
        run_psi([[1.5, 2.0], [1, 2]])
    with pytest.raises(EncodingError, match="bool"):
        encode_key(True, 0)
    assert encode_key(np.int64(-5), 0) == encode_key(-5, 0) != encode_key("-5", 0)


def test_min_size_policy_refuses_small_join() -> None:
    a, b = sets_with_overlap(40, 40, 5, seed=2)
    with pytest.raises(GroupTooSmall, match=r"k=6.*party 1"):
        run_psi([a, b], per_party=[{}, {"min_size": 6}])
    ra, rb = run_psi([a, b], per_party=[{"min_size": 5}, {"min_size": 3}])
    check_alignment(a, b, ra, rb)


def test_mode_mismatch_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="different PSI version or mode"):
        run_psi([[1, 2], [2, 3]], per_party=[{"cardinality_only": True}, {}])


def test_messages_carry_no_raw_key_nor_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads: list[tuple[str, bytes]] = []
    original = InMemoryNetwork.post

    def record(self: InMemoryNetwork, frm: int, to: int, tag: str, payload: bytes) -> None:
        payloads.append((tag, payload))
        original(self, frm, to, tag, payload)

    monkeypatch.setattr(InMemoryNetwork, "post", record)
    gen = np.random.default_rng(9)
    ints = [int(x) for x in gen.integers(2**40, 2**62, size=60)]
    strs = [f"customer-{x}" for x in ints[:30]]
    a, b = ints[:40] + strs[:20], ints[20:] + strs[10:]
    check_alignment(a, b, *run_psi([a, b]))
    blob = b"\x00".join(p for _, p in payloads)
    assert len(payloads) >= 6
    for key in set(a) | set(b):
        forms = [str(key).encode(), encode_key(key, 0), *hash_keys([key])]
        if isinstance(key, int):
            forms += [key.to_bytes(8, "little"), key.to_bytes(8, "big")]
        for form in forms:
            assert form not in blob


def test_scalars_are_fresh_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[bytes]] = []
    original = InMemoryNetwork.post

    def record(self: InMemoryNetwork, frm: int, to: int, tag: str, payload: bytes) -> None:
        if "/z" in tag:  # the double-encrypted values
            seen[-1].update(payload[i : i + 32] for i in range(0, len(payload), 32))
        original(self, frm, to, tag, payload)

    monkeypatch.setattr(InMemoryNetwork, "post", record)
    keys = [[f"k{i}" for i in range(20)], [f"k{i}" for i in range(10, 30)]]
    for _ in range(2):
        seen.append(set())
        run_psi(keys)  # default: the system CSPRNG
    # 20 + 20 keys, 10 shared: the shared keys' double encryptions coincide within a run.
    assert len(seen[0]) == len(seen[1]) == 30
    assert not seen[0] & seen[1]


def test_three_parties_need_a_peer() -> None:
    async def program(ctx: PartyContext, keys: Any) -> PSIResult | None:
        if ctx.party_id == 2:
            return None
        return await psi(ctx, keys, peer=1 - ctx.party_id)

    ra, rb, none = simulate(program, [[1, 2, 3], [3, 4, 1], None], triples="dealer")
    check_alignment([1, 2, 3], [3, 4, 1], ra, rb)
    assert none is None

    async def no_peer(ctx: PartyContext, keys: Any) -> PSIResult:
        return await psi(ctx, keys)

    with pytest.raises(ConfigurationError, match="two parties"):
        simulate(no_peer, [[1], [1], [1]], triples="dealer")


def test_invalid_group_element_is_refused() -> None:
    for count, workers in [(3, 1), (4096, 2)]:
        exp = Exponentiator(InsecureSeededRandom(1), workers, party=0)
        with pytest.raises(ProtocolError, match=r"invalid \(small-order\) group element"):
            exp.apply(b"\x00" * 32 * count)


def test_random_permutation_is_a_permutation() -> None:
    perm = random_permutation(InsecureSeededRandom(3), 1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, np.arange(1000))
    assert random_permutation(InsecureSeededRandom(3), 0).size == 0


def test_align_exact_under_64_bit_prefix_collisions() -> None:
    """The fast path matches on the first 8 bytes; collisions must fall back to exact matching."""
    gen = np.random.default_rng(4)
    v = [gen.bytes(32) for _ in range(4)]
    twin = v[0][:8] + gen.bytes(24)  # same first word as v[0], different value
    own = v[0] + v[1] + v[2]
    for theirs in (twin + v[1], twin + v[1] + v[3][:8] + v[2][8:], v[2] + v[1] + twin + v[0]):
        size, rows = _align(own, theirs, cardinality_only=False)
        want = [
            i
            for i, x in enumerate([v[0], v[1], v[2]])
            if x in {theirs[j : j + 32] for j in range(0, len(theirs), 32)}
        ]
        assert size == len(want)
        assert rows is not None
        assert sorted(rows.tolist()) == want
        words = np.frombuffer(own, "<u8").reshape(-1, 4)[rows]
        assert [tuple(w) for w in words] == sorted(tuple(w) for w in words)  # canonical order
    assert _align(own, b"", cardinality_only=True) == (0, None)
    assert _align(b"", own, cardinality_only=False)[0] == 0


def test_order_independent_under_reordered_delivery() -> None:
    a, b = sets_with_overlap(40, 35, 12, seed=8)

    async def program(ctx: PartyContext, keys: Any) -> PSIResult:
        return await psi(ctx, keys, chunk_size=5)

    ra, rb = simulate(program, [a, b], triples="dealer", reorder=True)
    check_alignment(a, b, ra, rb)


def test_hash_keys_equal_the_personalised_blake2b_of_the_encoding() -> None:
    """The keyed-state copy used for speed gives the documented digest, for one or mixed types."""
    for keys in ([5, -1, 2**70, 0], ["a", "ü"], [1, "1", b"1"]):
        want = [
            hashlib.blake2b(encode_key(k), digest_size=32, person=b"privcomp.psi.v1").digest()
            for k in keys
        ]
        assert hash_keys(keys) == want


def test_inverse_permutation_equals_argsort() -> None:
    for n in (0, 1, 1000):
        perm = random_permutation(InsecureSeededRandom(n), n)
        assert np.array_equal(_inverse(perm), np.argsort(perm))


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several forked batches per round at a test-sized n."""
    monkeypatch.setattr(psi_module, "_BATCH", 400)
    monkeypatch.setattr(psi_group, "_PARALLEL_THRESHOLD", 64)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("cardinality_only", [False, True])
def test_pipelined_forked_batches_match_inline(cardinality_only: bool) -> None:
    """Unequal sets and chunk sizes, several batches: forked (async) equals inline, exactly."""
    a, b = sets_with_overlap(1700, 1000, 400, seed=21)
    kw: dict[str, Any] = {
        "cardinality_only": cardinality_only,
        "per_party": [{"chunk_size": 150}, {"chunk_size": 220}],
    }
    inline = run_psi([a, b], workers=1, rng=InsecureSeededRandom(6), **dict(kw))
    forked = run_psi([a, b], workers=2, rng=InsecureSeededRandom(6), **dict(kw))
    assert forked[0].cpu_seconds > 0
    for x, y in zip(inline, forked, strict=True):
        assert x.size == y.size == 400
        if cardinality_only:
            assert x.indices is None
            assert y.indices is None
        else:
            assert np.array_equal(x.indices, y.indices)  # type: ignore[arg-type]
    if not cardinality_only:
        check_alignment(a, b, *forked)


@pytest.mark.usefixtures("small_batches")
def test_psi_values_match_keys_and_interoperate_with_psi() -> None:
    """Equal values iff equal keys; own values in row order; a psi_values party and a psi
    party run the same messages."""
    a, b = sets_with_overlap(900, 1300, 400, seed=5)

    async def program(ctx: PartyContext, keys: Any) -> PSIValues | PSIResult:
        if ctx.party_id == 0:
            return await psi_values(ctx, keys, workers=2, chunk_size=256)
        return await psi(ctx, keys, workers=2)

    va, rb = simulate(program, [a, b], triples="dealer")
    assert isinstance(va, PSIValues)
    assert isinstance(rb, PSIResult)
    assert (va.n_own, va.n_peer, len(va.own), len(va.peer)) == (900, 1300, 900 * 32, 1300 * 32)
    own = [va.own[i : i + 32] for i in range(0, len(va.own), 32)]
    peer = {va.peer[i : i + 32] for i in range(0, len(va.peer), 32)}
    assert len(set(own)) == 900
    assert len(peer) == 1300
    matched = [a[i] for i, v in enumerate(own) if v in peer]
    assert set(matched) == set(a) & set(b)
    assert rb.size == 400
    # Row order: the peer's aligned rows hold the same keys as this party's matching values.
    value_of = {a[i]: v for i, v in enumerate(own)}
    assert {value_of[b[j]] for j in rb.indices} <= peer  # type: ignore[union-attr]


async def test_async_forked_batch_refuses_small_order_elements() -> None:
    exp = Exponentiator(InsecureSeededRandom(1), 2, party=0)
    with pytest.raises(ProtocolError, match=r"invalid \(small-order\) group element"):
        await exp.apply_async(b"\x00" * 32 * 4096)


def _children() -> set[int]:
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as fh:
            found.update(int(p) for p in fh.read().split())
    return found


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
async def test_cancelled_forked_batch_kills_its_children() -> None:
    before = _children()

    def slow(start: int, stop: int) -> bytes:
        time.sleep(60)
        return b"\x00" * 32 * (stop - start)

    task = asyncio.create_task(fork_compute(slow, 10, 2))
    await asyncio.sleep(0.3)
    assert len(_children() - before) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # killed, then reaped by the waiting threads
        if not _children() - before:
            break
        await asyncio.sleep(0.05)
    assert not _children() - before


async def test_failed_background_send_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    original = InMemoryNetwork.post

    def flaky(self: InMemoryNetwork, frm: int, to: int, tag: str, payload: bytes) -> None:
        if frm == 0 and "/z" in tag:
            raise TransportError("link down")
        original(self, frm, to, tag, payload)

    monkeypatch.setattr(InMemoryNetwork, "post", flaky)
    net = InMemoryNetwork(2, timeout=1.0)
    dealer = TrustedDealer(2)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    a, b = sets_with_overlap(30, 30, 10, seed=2)
    ra, rb = await asyncio.gather(
        *(psi(c, k) for c, k in zip(ctxs, [a, b], strict=True)), return_exceptions=True
    )
    assert isinstance(ra, TransportError)
    assert isinstance(rb, TransportError)  # the peer times out waiting for the values


def _reference_align(tags: Sequence[Sequence[bytes]], sides: Sequence[int], me: int) -> Any:
    """The per-tag dict join (stats_vertical.align_exact) as plain lists."""
    al = align_exact(tags, sides, me)
    owners = ([*map(int, al.owners[0])], [*map(int, al.owners[1])])
    return al.size, owners, al.my_rows.tolist(), al.my_positions.tolist()


def _outcome(f: Any, *args: Any) -> Any:
    try:
        out = f(*args)
    except DuplicateKeyError as exc:
        return ("duplicate", str(exc))
    if out is None or isinstance(out[1][0], list):
        return out
    size, owners, rows, positions = out
    for arr in (*owners, rows, positions):
        assert arr.dtype == np.int64
    return size, ([*map(int, owners[0])], [*map(int, owners[1])]), rows.tolist(), positions.tolist()


def test_align_tags_equals_the_per_tag_dict_join() -> None:
    """Random layouts (2-4 parties), empty / no / full overlap, repeats, and 64-bit prefix
    collisions: the vectorised join equals the dict join, or defers (``None``) to it."""
    gen = np.random.default_rng(12)
    deferred = compared = 0
    for trial in range(900):
        n_parties = int(gen.integers(2, 5))
        sides = [0, 1, *(int(s) for s in gen.integers(0, 2, n_parties - 2))]
        pool = [gen.bytes(32) for _ in range(int(gen.integers(0, 25)))]
        if trial % 4 == 0 and pool:  # same first 8 bytes as another tag, different tag
            pool.append(pool[0][:8] + gen.bytes(24))
        tags: list[list[bytes]] = []
        for _ in range(n_parties):
            k = int(gen.integers(0, len(pool) + 1))
            picks = gen.choice(len(pool), size=k, replace=trial % 6 == 0) if pool else []
            tags.append([pool[int(i)] for i in picks])
        if trial % 10 == 1:  # full overlap, one party per side
            tags, sides = [pool, list(reversed(pool))], [0, 1]
        for me in range(len(tags)):
            fast = _outcome(align_tags, tags, sides, me)
            if fast is None:
                deferred += 1
                continue
            assert fast == _outcome(_reference_align, tags, sides, me)
            compared += 1
    assert compared > 800
    assert deferred > 0  # the collision cases took the exact path


def test_align_tags_at_scale_matches_a_set_join() -> None:
    gen = np.random.default_rng(3)
    raw = gen.bytes(32 * 30_000)
    pool = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    a, b = pool[:20_000], pool[10_000:]
    got = align_tags([a, b], [0, 1], 0)
    want = _reference_align([a, b], [0, 1], 0)
    assert got is not None
    assert got[0] == want[0] == 10_000
    assert got[2].tolist() == want[2]
    assert got[3].tolist() == want[3] == list(range(10_000))
