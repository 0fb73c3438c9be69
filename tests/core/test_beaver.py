"""Beaver-triple algebra (multiplication, matrix product, AND) and daBit conversion.

The triples come from a test-only dealer (tests/core/core_dealer.py); the openings are plain
reconstructions, as a protocol would do with one round of messages.
"""

from __future__ import annotations

import numpy as np
import pytest
from core_dealer import and_triples, beaver_multiply, dabits, matmul_triples, mul_triples, u64
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privcomp.core.beaver import (
    and_combine,
    beaver_masks,
    beaver_matmul_combine,
    bit_from_xor_and_dabit,
)
from privcomp.core.ring import ring_matmul
from privcomp.core.rng import InsecureSeededRandom
from privcomp.core.sharing import reconstruct, reconstruct_xor, share, share_xor

shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)
parties = st.sampled_from([2, 3, 5])


@settings(max_examples=80, deadline=None)
@given(shape=shapes, n=parties, seed=st.integers(0, 2**32))
def test_beaver_mul_reconstructs_product(shape: tuple[int, ...], n: int, seed: int) -> None:
    rng = InsecureSeededRandom(seed)
    x, y = rng.ring_elements(shape), rng.ring_elements(shape)
    z = beaver_multiply(share(x, n, rng), share(y, n, rng), mul_triples(shape, n, rng))
    assert all(isinstance(s, np.ndarray) and s.shape == shape for s in z)
    np.testing.assert_array_equal(reconstruct(z), np.asarray(x * y, dtype=np.uint64))


def test_beaver_mul_edge_values_match_python_ints(seeded_rng: InsecureSeededRandom) -> None:
    vals = [0, 1, 2**63, 2**64 - 1, 2**32 + 1, 12345]
    x = np.array([a for a in vals for _ in vals], dtype=np.uint64)
    y = np.array([b for _ in vals for b in vals], dtype=np.uint64)
    z = beaver_multiply(
        share(x, 3, seeded_rng), share(y, 3, seeded_rng), mul_triples(x.shape, 3, seeded_rng)
    )
    assert reconstruct(z).tolist() == [int(a) * int(b) % 2**64 for a, b in zip(x, y, strict=True)]


def test_beaver_opened_values_are_masked(seeded_rng: InsecureSeededRandom) -> None:
    # d = x - a must not reveal x: for x = 0 and x = 2^63 - 1 the opened d is uniform.
    shape = (50_000,)
    tops = []
    for secret in (0, 2**63 - 1):
        x = np.full(shape, secret, dtype=np.uint64)
        t = mul_triples(shape, 2, seeded_rng)
        xs = share(x, 2, seeded_rng)
        d = reconstruct([beaver_masks(xs[i], xs[i], t[i])[0] for i in range(2)])
        tops.append(np.bincount((d >> np.uint64(56)).astype(np.int64), minlength=256))
    for counts in tops:
        assert counts.min() > 100
        assert counts.max() < 300


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 5),
    k=st.integers(1, 5),
    p=st.integers(1, 5),
    n=parties,
    seed=st.integers(0, 2**32),
)
def test_beaver_matmul(m: int, k: int, p: int, n: int, seed: int) -> None:
    rng = InsecureSeededRandom(seed)
    x, y = rng.ring_elements((m, k)), rng.ring_elements((k, p))
    xs, ys, ts = share(x, n, rng), share(y, n, rng), matmul_triples((m, k), (k, p), n, rng)
    masks = [beaver_masks(xs[i], ys[i], ts[i]) for i in range(n)]
    d, e = reconstruct([q[0] for q in masks]), reconstruct([q[1] for q in masks])
    z = reconstruct([beaver_matmul_combine(d, e, ts[i], i) for i in range(n)])
    np.testing.assert_array_equal(z, ring_matmul(x, y))
    ref = [
        [sum(int(x[i, j]) * int(y[j, c]) for j in range(k)) % 2**64 for c in range(p)]
        for i in range(m)
    ]
    assert z.tolist() == ref


@settings(max_examples=80, deadline=None)
@given(shape=shapes, n=parties, seed=st.integers(0, 2**32))
def test_and_combine_on_xor_shares(shape: tuple[int, ...], n: int, seed: int) -> None:
    rng = InsecureSeededRandom(seed)
    x, y = rng.ring_elements(shape), rng.ring_elements(shape)
    xs, ys, ts = share_xor(x, n, rng), share_xor(y, n, rng), and_triples(shape, n, rng)
    d = reconstruct_xor([u64(xs[i] ^ ts[i].a) for i in range(n)])
    e = reconstruct_xor([u64(ys[i] ^ ts[i].b) for i in range(n)])
    z = reconstruct_xor([and_combine(d, e, ts[i], i) for i in range(n)])
    np.testing.assert_array_equal(z, np.asarray(x & y, dtype=np.uint64))


@settings(max_examples=80, deadline=None)
@given(shape=shapes, n=parties, seed=st.integers(0, 2**32))
def test_bit_from_xor_and_dabit(shape: tuple[int, ...], n: int, seed: int) -> None:
    # A bit t, XOR-shared in bit 0 of each word (upper bits are garbage that must be ignored),
    # is converted to an additive share via a daBit s: open v = t XOR s, then t = v + s - 2vs.
    rng = InsecureSeededRandom(seed)
    t = u64(rng.ring_elements(shape) & np.uint64(1))
    ts = share_xor(t, n, rng)
    ts[0] = u64(ts[0] ^ (rng.ring_elements(shape) & ~np.uint64(1)))
    db = dabits(shape, n, rng)
    v = reconstruct_xor([u64(ts[i] ^ db[i].b_xor) for i in range(n)])
    out = reconstruct([bit_from_xor_and_dabit(v, db[i], i) for i in range(n)])
    np.testing.assert_array_equal(out, t)


@pytest.mark.parametrize("n", [2, 3])
def test_zero_dim_inputs_stay_arrays(n: int, seeded_rng: InsecureSeededRandom) -> None:
    # Regression: 0-d operands made numpy scalars whose uint64 overflow warned (error under -W).
    x, y = np.array(2**64 - 1, dtype=np.uint64), np.array(2**63 + 3, dtype=np.uint64)
    z = beaver_multiply(
        share(x, n, seeded_rng), share(y, n, seeded_rng), mul_triples((), n, seeded_rng)
    )
    assert all(isinstance(s, np.ndarray) for s in z)
    assert int(reconstruct(z)) == (2**64 - 1) * (2**63 + 3) % 2**64
