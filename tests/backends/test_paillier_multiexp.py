"""Bucket multi-exponentiation: exact against one powmod per term, forked columns, Paillier use."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from privcomp import paillier
from privcomp.backends.paillier.multiexp import (
    MAX_WINDOW_BITS,
    best_window,
    bucket_cost,
    multi_exp,
    multi_exp_columns,
)
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ConfigurationError


def _naive(bases: list[int], exps: list[int], m: int) -> int:
    acc = 1
    for b, e in zip(bases, exps, strict=True):
        acc = acc * pow(b, e, m) % m
    return acc % m


def _data(count: int, bits: int, mod_bits: int, seed: int) -> tuple[list[int], list[int], int]:
    rng = InsecureSeededRandom(seed)
    m = int(gmpy2.next_prime(rng.below(1 << mod_bits, 1)[0] | (1 << (mod_bits - 1))))
    bases = rng.below(m, count)
    exps = [e >> (8 * 16 - bits) for e in rng.below(1 << 128, count)] if bits else [0] * count
    return bases, exps, m


@pytest.mark.parametrize(
    ("count", "bits", "window"),
    [(1, 105, None), (7, 3, None), (300, 105, None), (2000, 105, None), (300, 64, 1), (300, 64, 7)],
)
def test_multi_exp_matches_powmod_products(count: int, bits: int, window: int | None) -> None:
    bases, exps, m = _data(count, bits, 521, seed=count + bits)
    # Extremes: zero exponents, exponent 1, the all-ones exponent of the full width, base 1.
    exps[0] = (1 << bits) - 1
    if count > 3:
        exps[1], exps[2], bases[3] = 0, 1, 1
    got = multi_exp(bases, exps, m, window=window)
    assert int(got) == _naive(bases, exps, m)
    assert 0 <= got < m


def test_multi_exp_edges_and_errors() -> None:
    assert multi_exp([], [], 97) == 1
    assert multi_exp([5, 6], [0, 0], 97) == 1
    assert multi_exp([5], [3], 1) == 0  # everything is 0 modulo 1
    with pytest.raises(ConfigurationError, match="one exponent per base"):
        multi_exp([2, 3], [1], 97)
    with pytest.raises(ConfigurationError, match="non-negative"):
        multi_exp([2, 3], [1, -1], 97)
    with pytest.raises(ConfigurationError, match="window"):
        multi_exp([2], [1], 97, window=MAX_WINDOW_BITS + 1)
    with pytest.raises(ConfigurationError, match="non-negative"):
        multi_exp_columns([2, 3], [[1, 2], [3, -4]], 97)


def test_window_choice_minimises_the_cost_model() -> None:
    for count, bits in [(1, 105), (100, 105), (10**5, 105), (10**6, 105), (10**6, 1)]:
        c = best_window(count, bits)
        assert 1 <= c <= MAX_WINDOW_BITS
        assert all(bucket_cost(count, bits, c) <= bucket_cost(count, bits, d) for d in range(1, 21))
    # The bucket method pays off by an order of magnitude at the sizes of a vertical join.
    assert bucket_cost(10**5, 105, best_window(10**5, 105)) < 10**5 * 105 * 1.2 / 10


@pytest.mark.parametrize("workers", [1, 2])
def test_multi_exp_columns_forked_matches_columnwise(workers: int) -> None:
    bases, _, m = _data(1500, 0, 256, seed=3)
    rng = np.random.default_rng(4)
    cols = [[int(x) for x in rng.integers(0, 2**62, len(bases))] for _ in range(3)]
    cols.append([1] * len(bases))
    got = multi_exp_columns(bases, cols, m, workers=workers)
    assert [int(g) for g in got] == [_naive(bases, c, m) for c in cols]


def test_multi_exp_evaluates_a_paillier_inner_product() -> None:
    pk, sk = paillier.keygen(2048, rng=InsecureSeededRandom(11))
    rng = np.random.default_rng(5)
    plain = [int(x) for x in rng.integers(-(2**62), 2**62, 40)]
    weights = [int(x) for x in rng.integers(0, 2**62, 40)]
    cts = pk.raw_encrypt([x % pk.n for x in plain], rng=InsecureSeededRandom(12), workers=1)
    (prod,) = multi_exp_columns(cts, [weights], pk.nsquare)
    expected = sum(x * w for x, w in zip(plain, weights, strict=True)) % pk.n
    assert sk.raw_decrypt([prod]) == [expected]


@pytest.mark.parametrize("kind", ["zeros", "positive", "mixed", "tiny"])
def test_value_independent_schedule_matches_powmod(kind: str) -> None:
    """``bits=`` (secret exponents): same product as one powmod per term, for any values."""
    gen = np.random.default_rng(len(kind))
    m = gmpy2.mpz(2**127 - 1) ** 2  # units: any base below the prime
    bases = [gmpy2.mpz(int(x)) + 2 for x in gen.integers(1, 2**62, 300)]
    exps = {
        "zeros": [0] * 300,
        "positive": [int(x) for x in gen.integers(0, 2**62, 300)],
        "mixed": [int(x) * (i % 2) for i, x in enumerate(gen.integers(0, 2**62, 300))],
        "tiny": [int(x) for x in gen.integers(0, 3, 300)],
    }[kind]
    want = gmpy2.mpz(1)
    for b, e in zip(bases, exps, strict=True):
        want = want * gmpy2.powmod(b, e, m) % m
    assert multi_exp(bases, exps, m, bits=62) == want
    assert multi_exp_columns(bases, [exps, [1] * 300], m, bits=[62, None], workers=2)[0] == want
    with pytest.raises(ConfigurationError, match="wider than the declared"):
        multi_exp(bases, [*exps[:-1], 2**62], m, bits=62)
