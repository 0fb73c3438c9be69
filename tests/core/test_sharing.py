"""Additive and XOR sharing over Z_2^64: properties and T02(a) (reference/security.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privcomp.core.rng import InsecureSeededRandom, SystemRandomSource
from privcomp.core.sharing import reconstruct, reconstruct_xor, share, share_xor
from privcomp.errors import ConfigurationError, EncodingError, NotEnoughSharesError

ring_arrays = hnp.arrays(
    np.uint64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
)


@settings(max_examples=60, deadline=None)
@given(x=ring_arrays, n=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**32))
def test_additive_roundtrip_property(x: np.ndarray, n: int, seed: int) -> None:
    shares = share(x, n, InsecureSeededRandom(seed))
    assert len(shares) == n
    assert all(isinstance(s, np.ndarray) and s.dtype == np.uint64 for s in shares)
    assert all(s.shape == x.shape for s in shares)
    out = reconstruct(shares)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, x)


@settings(max_examples=60, deadline=None)
@given(x=ring_arrays, n=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**32))
def test_xor_roundtrip_property(x: np.ndarray, n: int, seed: int) -> None:
    shares = share_xor(x, n, InsecureSeededRandom(seed))
    assert all(isinstance(s, np.ndarray) and s.shape == x.shape for s in shares)
    np.testing.assert_array_equal(reconstruct_xor(shares), x)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_t02_additive_10k_vectors_exact(n: int, seeded_rng: InsecureSeededRandom) -> None:
    # T02(a): 10k random vectors (length 16) reconstruct exactly, including wrap-around values.
    x = seeded_rng.ring_elements((10_000, 16))
    x[0] = np.uint64(2**64 - 1)
    x[1] = 0
    np.testing.assert_array_equal(reconstruct(share(x, n, seeded_rng)), x)


def test_shares_are_fresh_per_call(seeded_rng: InsecureSeededRandom) -> None:
    x = np.arange(100, dtype=np.uint64)
    a, b = share(x, 2, seeded_rng), share(x, 2, seeded_rng)
    assert not np.array_equal(a[0], b[0])  # the mask must never repeat (T14's concern)


def test_system_random_source_shares(seeded_rng: InsecureSeededRandom) -> None:
    x = seeded_rng.ring_elements((1000,))
    np.testing.assert_array_equal(reconstruct(share(x, 3, SystemRandomSource())), x)
    np.testing.assert_array_equal(reconstruct_xor(share_xor(x, 3, SystemRandomSource())), x)


def test_zero_dim_secret_gives_array_shares(seeded_rng: InsecureSeededRandom) -> None:
    # Regression: 0-d arithmetic returns numpy scalars, which reconstruct() used to refuse.
    x = np.array(2**63 + 5, dtype=np.uint64)
    for sh, rec in ((share, reconstruct), (share_xor, reconstruct_xor)):
        shares = sh(x, 3, seeded_rng)
        assert all(isinstance(s, np.ndarray) for s in shares)
        out = rec(shares)
        assert out.shape == ()
        assert int(out) == 2**63 + 5


@pytest.mark.parametrize(
    "bad", [1.5, 7, float("nan"), np.array([1.5]), np.array([np.nan]), np.array([1], np.int64)]
)
def test_sharing_refuses_non_ring_input(bad: object, seeded_rng: InsecureSeededRandom) -> None:
    for fn in (share, share_xor):
        with pytest.raises(EncodingError, match="uint64"):
            fn(bad, 2, seeded_rng)  # type: ignore[arg-type]


def test_reconstruct_refusals(seeded_rng: InsecureSeededRandom) -> None:
    x = seeded_rng.ring_elements((4,))
    with pytest.raises(NotEnoughSharesError, match="got 1"):
        reconstruct(share(x, 2, seeded_rng)[:1])
    with pytest.raises(NotEnoughSharesError):
        reconstruct_xor([x])
    with pytest.raises(ConfigurationError, match="n_parties"):
        share(x, 1, seeded_rng)
    with pytest.raises(ConfigurationError, match="n_parties"):
        share_xor(x, 1, seeded_rng)
    # Regression: mismatched shapes used to broadcast into a silently wrong result.
    with pytest.raises(ConfigurationError, match="shapes"):
        reconstruct([x, x[:1]])
    with pytest.raises(ConfigurationError, match="shapes"):
        reconstruct_xor([x, x[:1]])
    with pytest.raises(EncodingError):
        reconstruct([x, x.astype(np.float64)])
