"""Throughput of the numeric core next to plain numpy on the same 10^6-element arrays.

Run: ``pytest benchmarks/test_core.py --benchmark-group-by=group --benchmark-columns=median``
(smoke: ``--benchmark-disable`` runs each body once). Elements/s = 10^6 / median; the peer is
numpy itself (about 5e8 elements/s per core for a plain add), so the ratios show what the ring,
field, sharing, fixed-point and codec layers cost on top of it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from privcomp.core.codec import array_from_bytes, array_to_bytes
from privcomp.core.field import field_add, field_mul, field_random
from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import InsecureSeededRandom, SystemRandomSource
from privcomp.core.shamir import shamir_reconstruct, shamir_share
from privcomp.core.sharing import reconstruct, share

N = 1_000_000
_rng = InsecureSeededRandom(5)
U1, U2 = _rng.ring_elements((N,)), _rng.ring_elements((N,))
F1, F2 = field_random((N,), _rng), field_random((N,), _rng)
_gen = np.random.Generator(np.random.PCG64(6))
X1, X2 = _gen.normal(0, 1e3, N), _gen.normal(0, 1e3, N)
FP = FixedPoint(16)
ENC = FP.encode(X1)


def run(benchmark: BenchmarkFixture, fn: Callable[[], object], group: str) -> None:
    benchmark.group = group
    benchmark.extra_info["elements"] = N
    benchmark(fn)


# ---- arithmetic: ring (uint64 wraps) and field GF(2^61 - 1) next to float64 numpy


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("numpy float64 add", lambda: X1 + X2),
        ("ring uint64 add", lambda: U1 + U2),
        ("field add", lambda: field_add(F1, F2)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_add(benchmark: BenchmarkFixture, name: str, fn: Callable[[], object]) -> None:
    run(benchmark, fn, "core-add")


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("numpy float64 mul", lambda: X1 * X2),
        ("ring uint64 mul", lambda: U1 * U2),
        ("field mul", lambda: field_mul(F1, F2)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mul(benchmark: BenchmarkFixture, name: str, fn: Callable[[], object]) -> None:
    run(benchmark, fn, "core-mul")


# ---- sharing, 3 parties


def _numpy_floor() -> object:
    # A floor for share+reconstruct: the 4 array additions/subtractions it must do anyway.
    return (U1 - U2 - U1) + U2 + U1


def _share_rec_system() -> object:
    return reconstruct(share(U1, 3, SystemRandomSource()))


def _share_rec_seeded() -> object:
    return reconstruct(share(U1, 3, InsecureSeededRandom(1)))


def _shamir_1_of_3() -> object:
    return shamir_reconstruct(shamir_share(F1, 1, 3, SystemRandomSource())[1:], 1)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("numpy 4 adds (floor)", _numpy_floor),
        ("additive share+reconstruct (os.urandom)", _share_rec_system),
        ("additive share+reconstruct (seeded PCG64)", _share_rec_seeded),
        ("shamir t=1 share+reconstruct (os.urandom)", _shamir_1_of_3),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_share(benchmark: BenchmarkFixture, name: str, fn: Callable[[], object]) -> None:
    run(benchmark, fn, "core-share n=3")


# ---- fixed point and codec


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("numpy rint(x*2^16).astype(int64)", lambda: np.rint(X1 * 65536.0).astype(np.int64)),
        ("FixedPoint.encode", lambda: FP.encode(X1)),
        ("FixedPoint.decode", lambda: FP.decode(ENC)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_fixedpoint(benchmark: BenchmarkFixture, name: str, fn: Callable[[], object]) -> None:
    run(benchmark, fn, "core-fixedpoint")


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("numpy tobytes+frombuffer.copy", lambda: np.frombuffer(U1.tobytes(), np.uint64).copy()),
        ("codec round-trip", lambda: array_from_bytes(array_to_bytes(U1))),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_codec(benchmark: BenchmarkFixture, name: str, fn: Callable[[], object]) -> None:
    run(benchmark, fn, "core-codec")


def test_benchmarked_results_are_correct() -> None:
    # The benchmarked bodies compute the right thing (so the figures measure real work).
    np.testing.assert_array_equal(_share_rec_system(), U1)
    np.testing.assert_array_equal(_shamir_1_of_3(), F1)
    np.testing.assert_array_equal(array_from_bytes(array_to_bytes(U1)), U1)
    assert np.abs(FP.decode(FP.encode(X1)) - X1).max() <= 2.0**-17
