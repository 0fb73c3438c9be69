"""Shamir t-of-n over GF(2^61 - 1) and the field arithmetic under it: properties, T02(b, c),
known-answer vectors (tests/data/shamir_vectors.json, made by tests/data/make_vectors.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import privcomp.errors as errors
from privcomp.core.field import (
    PRIME,
    SIGNED_LIMIT,
    field_add,
    field_dot,
    field_inv,
    field_mul,
    field_neg,
    field_random,
    field_sub,
    field_to_signed,
    mod_add,
    signed_to_field,
)
from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import InsecureSeededRandom
from privcomp.core.shamir import (
    lagrange_coefficients,
    shamir_add,
    shamir_reconstruct,
    shamir_share,
)
from privcomp.errors import (
    ConfigurationError,
    EncodingError,
    EncodingOverflowError,
    NotEnoughSharesError,
    ProtocolError,
)

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "shamir_vectors.json").read_text())
EDGE = [
    0,
    1,
    2,
    3,
    2**29 - 1,
    2**29,
    2**31,
    2**32 - 1,
    2**32,
    2**32 + 1,
    2**60,
    PRIME - 2,
    PRIME - 1,
]
field_elems = st.one_of(st.sampled_from(EDGE), st.integers(0, PRIME - 1))


def u64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def ref_lagrange_at_zero(points: list[tuple[int, int]]) -> int:
    """Independent reference: textbook Lagrange interpolation at 0 on Python ints."""
    total = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num *= -xm
                den *= xj - xm
        total += yj * num * pow(den, -1, PRIME)
    return total % PRIME


class ScriptedRandom:
    """Returns pre-set ring elements, so shamir_share uses known polynomial coefficients."""

    def __init__(self, blocks: list[np.ndarray]) -> None:
        self._blocks = list(blocks)

    def random_bytes(self, n: int) -> bytes:
        raise AssertionError("not used")

    def ring_elements(self, shape: tuple[int, ...]) -> np.ndarray:
        block = self._blocks.pop(0)
        assert block.shape == shape
        return block

    def below(self, bound: int, size: int) -> list[int]:
        raise AssertionError("not used")


# ---------------------------------------------------------------- field arithmetic


@settings(max_examples=300, deadline=None)
@given(a=st.lists(field_elems, min_size=1, max_size=20), data=st.data())
def test_field_ops_match_python_ints(a: list[int], data: st.DataObject) -> None:
    b = data.draw(st.lists(field_elems, min_size=len(a), max_size=len(a)))
    A, B = u64(a), u64(b)
    assert [int(v) for v in field_mul(A, B)] == [x * y % PRIME for x, y in zip(a, b, strict=True)]
    assert [int(v) for v in field_add(A, B)] == [(x + y) % PRIME for x, y in zip(a, b, strict=True)]
    assert [int(v) for v in field_sub(A, B)] == [(x - y) % PRIME for x, y in zip(a, b, strict=True)]
    assert [int(v) for v in field_neg(A)] == [-x % PRIME for x in a]


def test_field_mul_all_edge_pairs() -> None:
    A, B = np.meshgrid(u64(EDGE), u64(EDGE))
    got = field_mul(A, B)
    want = [
        [int(x) * int(y) % PRIME for x, y in zip(ra, rb, strict=True)]
        for ra, rb in zip(A, B, strict=True)
    ]
    assert got.tolist() == want
    assert int(field_mul(np.array(PRIME - 1, np.uint64), np.array(PRIME - 1, np.uint64))) == 1


@pytest.mark.parametrize(
    ("sa", "sb"),
    [((3 * 8192 + 5,), (3 * 8192 + 5,)), ((), (20_000,)), ((150, 1), (1, 200)), ((20_000,), (1,))],
)
def test_field_ops_blockwise_and_broadcasting(
    sa: tuple[int, ...], sb: tuple[int, ...], seeded_rng: InsecureSeededRandom
) -> None:
    # Large arrays go through the blockwise kernels; check them (and broadcasting) exactly.
    a, b = field_random(sa, seeded_rng), field_random(sb, seeded_rng)
    A, B = np.broadcast_arrays(a, b)
    pa, pb = [int(v) for v in A.ravel()], [int(v) for v in B.ravel()]
    ops: tuple[tuple[Callable[..., np.ndarray], Callable[[int, int], int]], ...] = (
        (field_mul, lambda x, y: x * y % PRIME),
        (field_add, lambda x, y: (x + y) % PRIME),
        (field_sub, lambda x, y: (x - y) % PRIME),
    )
    for op, ref in ops:
        got = op(a, b)
        assert got.shape == A.shape
        assert got.ravel().tolist() == [ref(x, y) for x, y in zip(pa, pb, strict=True)]


def test_field_random_uniform_range_and_inverse(seeded_rng: InsecureSeededRandom) -> None:
    r = field_random((200_000,), seeded_rng)
    assert r.dtype == np.uint64
    assert int(r.max()) < PRIME
    # The top bit of the 61 is set about half the time: a coarse check that nothing is truncated.
    assert 0.49 < float(np.mean(r >> np.uint64(60))) < 0.51
    for a in [1, 2, 12345, PRIME - 1]:
        assert a * field_inv(a) % PRIME == 1
    with pytest.raises(ConfigurationError):
        field_inv(PRIME)


def test_field_random_rejects_p_itself() -> None:
    # ring_elements >> 3 == p is the single rejected value; the next draw replaces it.
    rng = ScriptedRandom([u64([PRIME << 3, 5 << 3]), u64([7 << 3])])
    assert field_random((2,), rng).tolist() == [7, 5]


def test_field_dot_matches_python() -> None:
    arrays = [u64([1, PRIME - 1]), u64([2**60, 3])]
    got = field_dot([PRIME + 2, -1], arrays)
    assert got.tolist() == [(2 * 1 - 2**60) % PRIME, (2 * (PRIME - 1) - 3) % PRIME]


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1), m=st.integers(2, 2**64))
def test_mod_add_matches_python(a: int, b: int, m: int) -> None:
    a, b = a % m, b % m
    assert int(mod_add(u64([a]), u64([b]), m)[0]) == (a + b) % m


def test_t02c_vdaf_field64_out_shares_sum_to_agg_result() -> None:
    # VDAF/Prio3 Prio3Aes128Count_0.json (reference/security.md §3.2): two out-shares over
    # Field64, p = 2^64 - 2^32 + 1, sum to agg_result = 1. Checked with Python ints and with
    # the vectorised uint64 modular addition that mirrors additive reconstruction over Z_p.
    p64 = 2**64 - 2**32 + 1
    shares = [2089763562849810526, 16356980506564773796]
    assert sum(shares) % p64 == 1
    assert mod_add(u64(shares[:1]), u64(shares[1:]), p64).tolist() == [1]
    assert mod_add(u64([p64 - 1]), u64([p64 - 1]), p64).tolist() == [p64 - 2]  # wraps 2^64


# ---------------------------------------------------------------- signed values in the field


@settings(max_examples=200, deadline=None)
@given(
    v=hnp.arrays(np.int64, st.integers(0, 20), elements=st.integers(-SIGNED_LIMIT, SIGNED_LIMIT))
)
def test_signed_field_roundtrip(v: np.ndarray) -> None:
    f = signed_to_field(v)
    assert f.dtype == np.uint64
    assert f.size == 0 or int(f.max()) < PRIME
    assert [int(x) for x in f] == [int(x) % PRIME for x in v]
    np.testing.assert_array_equal(field_to_signed(f).view(np.int64), v)
    np.testing.assert_array_equal(signed_to_field(v.view(np.uint64)), f)  # ring input too


@pytest.mark.parametrize("bad", [SIGNED_LIMIT + 1, -SIGNED_LIMIT - 1, 2**63 - 1, -(2**63)])
def test_signed_to_field_refuses_out_of_range(bad: int) -> None:
    with pytest.raises(EncodingOverflowError) as exc:
        signed_to_field(np.array([0, bad], dtype=np.int64))
    assert str(bad) not in str(exc.value)
    assert exc.value.bound == float(SIGNED_LIMIT)


def test_signed_to_field_refuses_floats() -> None:
    with pytest.raises(EncodingError):
        signed_to_field(np.array([1.5]))
    with pytest.raises(EncodingOverflowError):
        field_to_signed(u64([PRIME]))


def test_fixed_point_through_shamir(seeded_rng: InsecureSeededRandom) -> None:
    fp = FixedPoint(16)
    x = np.array([-3.25, 0.0, 1e6, -1e9, 2.0**-16])
    shares = shamir_share(signed_to_field(fp.encode(x)), 2, 5, seeded_rng)
    out = fp.decode(field_to_signed(shamir_reconstruct(shares[2:], 2)))
    np.testing.assert_allclose(out, x, rtol=0, atol=2.0**-17)


# ---------------------------------------------------------------- Shamir


@settings(max_examples=80, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
    n=st.integers(2, 9),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_shamir_roundtrip_property(
    shape: tuple[int, ...], n: int, data: st.DataObject, seed: int
) -> None:
    rng = InsecureSeededRandom(seed)
    t = data.draw(st.integers(1, n - 1))
    secret = field_random(shape, rng)
    shares = shamir_share(secret, t, n, rng)
    assert [x for x, _ in shares] == list(range(1, n + 1))
    k = data.draw(st.integers(t + 1, n))
    subset = data.draw(st.permutations(shares))[:k]
    out = shamir_reconstruct(subset, t)
    assert isinstance(out, np.ndarray)
    assert out.shape == secret.shape
    np.testing.assert_array_equal(out, secret)


def test_t02b_every_t_n_any_t_plus_1_subset(seeded_rng: InsecureSeededRandom) -> None:
    # T02(b): n <= 9, every t with 1 <= t < n (this includes every t < n/2).
    for n in range(2, 10):
        for t in range(1, n):
            secret = field_random((64,), seeded_rng)
            secret[:2] = u64([0, PRIME - 1])
            shares = shamir_share(secret, t, n, seeded_rng)
            for subset in itertools.combinations(shares, t + 1):
                np.testing.assert_array_equal(shamir_reconstruct(subset, t), secret)
            for subset in itertools.islice(itertools.combinations(shares, t), 20):
                with pytest.raises(NotEnoughSharesError, match=f"needs {t + 1} shares; got {t}"):
                    shamir_reconstruct(subset, t)


def test_library_lagrange_matches_reference(seeded_rng: InsecureSeededRandom) -> None:
    for t, n in [(1, 2), (2, 5), (4, 9), (8, 9)]:
        secret = field_random((5,), seeded_rng)
        shares = shamir_share(secret, t, n, seeded_rng)
        for k in range(5):
            pts = [(x, int(y[k])) for x, y in shares[n - t - 1 :]]
            assert ref_lagrange_at_zero(pts) == int(secret[k])
        xs = [x for x, _ in shares[: t + 1]]
        assert sum(lagrange_coefficients(xs, 0)) % PRIME == 1  # interpolating a constant


@pytest.mark.parametrize(
    "vec", VECTORS["valid"], ids=lambda v: f"t{v['threshold']}n{v['n_parties']}"
)
def test_known_answer_vectors(vec: dict[str, Any]) -> None:
    t, n, xs = vec["threshold"], vec["n_parties"], vec["x_coords"]
    coeffs = np.array(vec["coefficients"], dtype=np.uint64)  # (secrets, t)
    secret = u64(vec["secret"])
    rng = ScriptedRandom([coeffs[:, k] << np.uint64(3) for k in range(t)])
    shares = shamir_share(secret, t, n, rng, x_coords=xs)
    assert [x for x, _ in shares] == xs
    assert [y.tolist() for _, y in shares] == vec["shares"]
    stored = [(x, u64(y)) for x, y in zip(xs, vec["shares"], strict=True)]
    for subset in itertools.combinations(stored, t + 1):
        np.testing.assert_array_equal(shamir_reconstruct(subset[::-1], t), secret)
    np.testing.assert_array_equal(shamir_reconstruct(stored, t), secret)  # surplus checked


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["why"])
def test_invalid_vectors_are_refused(vec: dict[str, Any]) -> None:
    shares = [(x, u64(y)) for x, y in zip(vec["x_coords"], vec["shares"], strict=True)]
    with pytest.raises(getattr(errors, vec["error"])):
        shamir_reconstruct(shares, vec["threshold"])


def test_shamir_parameter_refusals(seeded_rng: InsecureSeededRandom) -> None:
    s = u64([1, 2])
    for t, n in [(3, 3), (4, 3), (0, 3), (-1, 3), (1, 1)]:
        with pytest.raises(ConfigurationError):
            shamir_share(s, t, n, seeded_rng)
    for xs in ([0, 1, 2], [1, 1, 2], [1, 2], [1, 2, PRIME], [1, 2, -3], [1, 2, True]):
        with pytest.raises(ConfigurationError):
            shamir_share(s, 1, 3, seeded_rng, x_coords=xs)
    with pytest.raises(ConfigurationError):
        shamir_reconstruct([(1, s), (2, s)], 0)
    shares = shamir_share(s, 1, 3, seeded_rng)
    with pytest.raises(ConfigurationError, match="shapes"):
        shamir_reconstruct([shares[0], (2, s[:1])], 1)


@pytest.mark.parametrize(
    "bad", [1.5, float("nan"), np.array([1.5]), np.array([np.nan]), np.array([1], np.int64)]
)
def test_shamir_refuses_non_field_input(bad: object, seeded_rng: InsecureSeededRandom) -> None:
    with pytest.raises(EncodingError):
        shamir_share(bad, 1, 3, seeded_rng)  # type: ignore[arg-type]


def test_shamir_refuses_elements_not_below_p(seeded_rng: InsecureSeededRandom) -> None:
    with pytest.raises(EncodingOverflowError) as exc:
        shamir_share(u64([5, PRIME]), 1, 3, seeded_rng)
    assert str(PRIME) not in str(exc.value)


def test_shamir_inconsistent_surplus_share_aborts(seeded_rng: InsecureSeededRandom) -> None:
    s = field_random((10,), seeded_rng)
    shares = shamir_share(s, 2, 5, seeded_rng)
    other = shamir_share(s, 2, 5, seeded_rng)  # same secret, different polynomial
    with pytest.raises(ProtocolError, match="inconsistent"):
        shamir_reconstruct([*shares[:3], other[3]], 2)
    np.testing.assert_array_equal(shamir_reconstruct([*shares[:3], other[3]][:3], 2), s)


def test_shamir_is_linear(seeded_rng: InsecureSeededRandom) -> None:
    a, b = field_random((50,), seeded_rng), field_random((50,), seeded_rng)
    summed = shamir_add(shamir_share(a, 2, 5, seeded_rng), shamir_share(b, 2, 5, seeded_rng))
    np.testing.assert_array_equal(shamir_reconstruct(summed[1:4], 2), field_add(a, b))
    with pytest.raises(ConfigurationError):
        shamir_add(summed[:2], summed[1:3])
