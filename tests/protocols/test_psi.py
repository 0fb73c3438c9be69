"""Private set intersection (privcomp.protocols.psi): correctness, alignment, leakage checks.

Every result is checked against Python's set intersection (exact: no tolerance applies).
"""

from __future__ import annotations

import asyncio
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
)
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.psi import (
    PSIResult,
    _align,
    _Exponentiator,
    encode_key,
    hash_keys,
    psi,
    random_permutation,
)
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
        exp = _Exponentiator(InsecureSeededRandom(1), workers, party=0)
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
