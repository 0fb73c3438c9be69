"""Exact arithmetic modulo 2^128 and exact big inner products (privcomp.core.ring128)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from privcomp.core import ring128
from privcomp.errors import EncodingOverflowError


def _exact(values: np.ndarray, bits: int) -> list[int]:
    # Python's round() is round-half-even, as np.rint.
    return [round(Fraction(v) * 2**bits) for v in values.tolist()]


@pytest.mark.parametrize("bits", [0, 1, 16, 52, 53, 64, 90])
def test_encode_scaled_is_exact_rounding(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = rng.normal(size=2000) * 10.0 ** rng.integers(-25, 20, 2000)
    edge = np.array([0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 5e-324, -5e-324, 2.0**35, -(2.0**35)])
    x = np.concatenate([x, edge])
    x = x[np.abs(x) * 2.0**bits < 2.0**125]
    got = [ring128.signed(v) for v in ring128.to_ints(ring128.encode_scaled(x, bits, what="x"))]
    assert got == _exact(x, bits)


def test_encode_scaled_refuses_overflow_and_non_finite() -> None:
    with pytest.raises(EncodingOverflowError, match="2\\^126"):
        ring128.encode_scaled(np.array([1.0, 2.0**70]), 60, what="col")
    with pytest.raises(EncodingOverflowError, match="finite"):
        ring128.encode_scaled(np.array([1.0, np.nan]), 0, what="col")


def test_add_sub_wrap_modulo_2_128() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**64, size=(2, 500), dtype=np.uint64)
    b = rng.integers(0, 2**64, size=(2, 500), dtype=np.uint64)
    ia, ib = ring128.to_ints(a), ring128.to_ints(b)
    assert ring128.to_ints(ring128.add(a, b)) == [
        (x + y) % 2**128 for x, y in zip(ia, ib, strict=True)
    ]
    assert ring128.to_ints(ring128.sub(a, b)) == [
        (x - y) % 2**128 for x, y in zip(ia, ib, strict=True)
    ]
    assert ring128.to_ints(ring128.from_ints(ia, (500,))) == ia


@pytest.mark.parametrize("rows", [1, 4097, 40000])
def test_inner_products_match_python_integers(rows: int) -> None:
    rng = np.random.default_rng(rows)
    a = rng.integers(0, 2**64, size=(2, rows, 3), dtype=np.uint64)
    b = rng.integers(0, 2**64, size=(2, rows, 2), dtype=np.uint64)
    a[:, 0], b[:, 0] = ~np.uint64(0), ~np.uint64(0)  # all-ones limbs: the largest products
    ia = np.array(ring128.to_ints(a), dtype=object).reshape(rows, 3)
    ib = np.array(ring128.to_ints(b), dtype=object).reshape(rows, 2)
    want = [int(x) % 2**128 for x in (ia.T @ ib).ravel()]
    assert ring128.inner_products(a, b) == want


def test_signed_products_of_large_fixed_point_values_are_exact() -> None:
    rng = np.random.default_rng(5)
    u = rng.integers(-(2**55), 2**55, size=30000)  # |sum| < 30000 * 2^110 < 2^125
    v = rng.integers(-(2**55), 2**55, size=30000)
    wu = ring128.from_ints([int(x) for x in u], (30000, 1))
    wv = ring128.from_ints([int(x) for x in v], (30000, 1))
    (t,) = ring128.inner_products(wu, wv)
    assert ring128.signed(t) == sum(int(x) * int(y) for x, y in zip(u, v, strict=True))
