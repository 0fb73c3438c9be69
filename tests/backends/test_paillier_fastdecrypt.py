"""Paillier engine: packed batch decryption of small plaintexts and its checked fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privcomp import paillier
from privcomp.backends.paillier.fastdecrypt import decrypt_small, group_size
from privcomp.core.rng import InsecureSeededRandom

Keys = tuple[paillier.PublicKey, paillier.PrivateKey]
LIMIT = 2**63


@pytest.fixture(scope="session")
def keys() -> Keys:
    return paillier.keygen(2048)


def _enc_signed(pk: paillier.PublicKey, ms: list[int]) -> list[object]:
    return pk.raw_encrypt([m % pk.n for m in ms])


def test_group_size() -> None:
    assert group_size(2048) == 30
    assert group_size(3072) == 46
    assert group_size(17) == 0


def test_in_range_values_take_the_fast_path(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(8)
    ms = [-LIMIT, LIMIT - 1, 0, -1, 1] + [int(v) for v in rng.integers(-LIMIT, LIMIT, 95)]
    cs = pk.validate_ciphertexts(_enc_signed(pk, ms))
    fast = decrypt_small(sk, cs, rng=InsecureSeededRandom(1), workers=1)
    assert fast == ms  # no None: every group passed its check
    assert sk.raw_decrypt(cs, small=True) == sk.raw_decrypt(cs) == [m % pk.n for m in ms]


@pytest.mark.parametrize(
    "outliers",
    [
        [LIMIT],  # one slot overflows by one
        [-LIMIT - 1],  # one slot underflows by one (wraps modulo n)
        [LIMIT + 5, -LIMIT - 1],  # a carry and a borrow that cancel in a plain digit sum
        [2**200, -(2**200)],
        [2**1500],
        ["n//2"],
    ],
)
def test_out_of_range_groups_fall_back(keys: Keys, outliers: list[object]) -> None:
    pk, sk = keys
    k = group_size(pk.bits)
    bad = [pk.n // 2 if o == "n//2" else int(o) for o in outliers]  # type: ignore[call-overload]
    ms = list(range(-20, 20)) + bad + list(range(100, 130))
    cs = pk.validate_ciphertexts(_enc_signed(pk, ms))
    fast = decrypt_small(sk, cs, rng=InsecureSeededRandom(2), workers=1)
    for i, m in enumerate(ms):
        group = range((i // k) * k, min(len(ms), (i // k + 1) * k))
        if any(not -LIMIT <= ms[j] < LIMIT for j in group):
            assert fast[i] is None
        else:
            assert fast[i] == m
    assert sk.raw_decrypt(cs, small=True) == [m % pk.n for m in ms]


def test_fast_and_plain_array_decryption_agree(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(9)
    x = rng.normal(scale=1e6, size=(10, 7))
    x[3, 4] = 1e30  # mantissa beyond 2^63: decrypted through the fallback
    enc = pk.encrypt(x)
    fast, plain = sk.decrypt(enc, workers=1), sk.decrypt(enc, workers=1, fast=False)
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_allclose(fast, x, atol=2.0**-33, rtol=1e-15)
    np.testing.assert_array_equal(sk.decrypt(enc, workers=2), plain)


def test_tiny_key_uses_plain_path() -> None:
    pk = paillier.PublicKey._unsafe_from_n(126869)
    sk = paillier.PrivateKey(pk, 293, 433)
    pts = list(range(40))
    assert sk.raw_decrypt(pk.raw_encrypt(pts), small=True) == pts


MIXED = st.one_of(
    st.integers(min_value=-LIMIT, max_value=LIMIT - 1),
    st.sampled_from([LIMIT, -LIMIT - 1, LIMIT + 1, 2**64, -(2**64)]),
    st.integers(min_value=-(2**2000), max_value=2**2000),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ms=st.lists(MIXED, min_size=16, max_size=40))
def test_property_small_decryption_equals_plain(keys: Keys, ms: list[int]) -> None:
    pk, sk = keys
    expected = [m % pk.n for m in ms]
    cs = _enc_signed(pk, ms)
    assert sk.raw_decrypt(cs, small=True, workers=1) == expected


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_crafted_out_of_range_group_is_refused(keys: Keys, seed: int) -> None:
    """Regression: with the check value packed above the slots, this group passed for EVERY
    choice of the secret weights and decrypted slots 0 and 1 to weight-dependent garbage."""
    pk, sk = keys
    n, k = pk.n, group_size(pk.bits)
    c_inv = pow(1 << (64 * k), -1, n)
    d = [5, 2**62] + [2**63 + i for i in range(2, k)]
    u = [(d[0] - (1 << 64) * c_inv) % n, (d[1] + c_inv) % n, *d[2:]]
    ms = [(x - 2**63) % n for x in u] + [m % n for m in range(-10, 10)]
    cs = pk.validate_ciphertexts(pk.raw_encrypt(ms))
    fast = decrypt_small(sk, cs, rng=InsecureSeededRandom(seed), workers=1)
    assert fast[:k] == [None] * k
    assert fast[k:] == list(range(-10, 10))
    assert sk.raw_decrypt(cs, small=True, workers=1) == ms
