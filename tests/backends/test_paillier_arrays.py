"""Paillier engine: encrypted arrays, homomorphism properties (T01b), exponents (T06), real data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from privcomp import paillier
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    EncodingError,
    EncodingOverflowError,
    InvalidCiphertextError,
)

Keys = tuple[paillier.PublicKey, paillier.PrivateKey]
# Float arrays use exponent -8 (16^-8 = 2^-32): each encoding rounds by at most 2^-33.
HALF_ULP = 2.0**-33


@pytest.fixture(scope="session")
def keys() -> Keys:
    return paillier.keygen(2048)


def test_float_and_int_round_trip(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(1)
    x = rng.normal(scale=1e3, size=(4, 5))
    enc = pk.encrypt(x)
    assert enc.shape == (4, 5)
    assert len(enc) == 4
    assert enc.size == 20
    assert enc.exponent == paillier.DEFAULT_FLOAT_EXPONENT
    out = sk.decrypt(enc)
    assert out.dtype == np.float64
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out, x, rtol=0, atol=HALF_ULP)
    i = rng.integers(-(2**62), 2**62, size=7)
    enc_i = pk.encrypt(i)
    assert enc_i.exponent == 0
    got = sk.decrypt(enc_i)
    assert got.dtype == np.int64
    assert np.array_equal(got, i)
    # Python ints beyond int64 survive exactly (object result).
    big = np.array([2**200, -(2**300), 5], dtype=object)
    assert sk.decrypt(pk.encrypt(big)).tolist() == big.tolist()
    assert sk.decrypt(pk.encrypt(np.array([True, False]))).tolist() == [1, 0]


def test_arithmetic_matches_numpy(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ex, ey = pk.encrypt(x), pk.encrypt(y)
    tol = 4 * HALF_ULP
    np.testing.assert_allclose(sk.decrypt(ex + ey), x + y, atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex - ey), x - y, atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex + 2.5), x + 2.5, atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(1.0 - ex), 1.0 - x, atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(y + ex), x + y, atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex * 3), 3 * x, atol=3 * tol, rtol=0)
    w = np.array([0.5, -2.0, 0.0, 7.25])
    prod = ex * w  # broadcast over rows; result exponent -16
    assert prod.exponent == -16
    np.testing.assert_allclose(sk.decrypt(prod), x * w, atol=8 * tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex.sum()), x.sum(), atol=12 * tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex.sum(axis=0)), x.sum(axis=0), atol=3 * tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex.sum(axis=1)), x.sum(axis=1), atol=4 * tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex[1]), x[1], atol=tol, rtol=0)
    np.testing.assert_allclose(sk.decrypt(ex[:, 2:]), x[:, 2:], atol=tol, rtol=0)
    with pytest.raises(TypeError):
        ex * ey
    with pytest.raises(ConfigurationError):
        ex + pk.encrypt(np.ones(5))
    with pytest.raises(ConfigurationError):
        ex.sum(axis=2)


def test_exponent_alignment(keys: Keys) -> None:
    pk, sk = keys
    i = np.array([1, -2, 3])
    f = np.array([0.25, 0.5, -0.75])
    ei, ef = pk.encrypt(i), pk.encrypt(f)
    s = ei + ef
    assert s.exponent == -8
    np.testing.assert_array_equal(sk.decrypt(s), i + f)
    s2 = ei + f  # float plaintext lowers an int array to the float exponent
    assert s2.exponent == -8
    np.testing.assert_array_equal(sk.decrypt(s2), i + f)
    low = ef.decrease_exponent_to(-12)
    assert low.exponent == -12
    np.testing.assert_array_equal(sk.decrypt(low), f)
    with pytest.raises(ConfigurationError):
        ef.decrease_exponent_to(-4)
    coarse = pk.encrypt(f, exponent=-1)  # 1/16 resolution: rounds half to even
    np.testing.assert_array_equal(sk.decrypt(coarse), np.round(f * 16) / 16)
    assert pk.encrypt(f, precision=1e-3).exponent == -3


SMALL = st.integers(min_value=-(2**1000), max_value=2**1000)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=SMALL, b=SMALL, k=st.integers(min_value=-(2**900), max_value=2**900))
def test_property_add_and_scalar_mul(keys: Keys, a: int, b: int, k: int) -> None:
    pk, sk = keys
    ea, eb = pk.encrypt(np.array([a], dtype=object)), pk.encrypt(np.array([b], dtype=object))
    assert sk.decrypt(ea + eb).tolist() == [a + b]
    # |k * a| <= 2^1900 stays far inside max_int (~2^2046) by construction of the strategies.
    assert sk.decrypt(ea * np.array([k], dtype=object)).tolist() == [k * a]
    assert sk.decrypt(eb - ea).tolist() == [b - a]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    xs=st.lists(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=4
    ),
    k=st.integers(min_value=-1000, max_value=1000),
)
def test_property_floats(keys: Keys, xs: list[float], k: int) -> None:
    pk, sk = keys
    x = np.array(xs)
    ex = pk.encrypt(x)
    np.testing.assert_allclose(sk.decrypt(ex), x, atol=HALF_ULP, rtol=1e-15)
    np.testing.assert_allclose(
        sk.decrypt(ex * k + ex), x * (k + 1), atol=2e3 * HALF_ULP, rtol=1e-15
    )


def test_bounds_are_typed_errors(keys: Keys) -> None:
    pk, sk = keys
    m = pk.max_int
    with pytest.raises(EncodingOverflowError) as info:
        pk.encrypt(np.array([m + 1], dtype=object))
    assert str(m) not in str(info.value)
    assert info.value.bound is not None
    edge = pk.encrypt(np.array([m, -m], dtype=object))
    assert sk.decrypt(edge).tolist() == [m, -m]
    with pytest.raises(EncodingOverflowError):  # 2*max_int lands in the overflow band
        sk.decrypt(edge + edge)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(EncodingError):
            pk.encrypt(np.array([1.0, bad]))
    with pytest.raises(EncodingError):
        pk.encrypt(np.array(["a"]))
    with pytest.raises(ConfigurationError):
        pk.encrypt([1.0], exponent=-3, precision=0.1)


def test_t06_one_exponent_and_fresh_randomness(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(6)
    mags = 10.0 ** rng.uniform(-9, 9, size=10_000) * rng.choice([-1, 1], size=10_000)
    enc = pk.encrypt(mags)
    assert enc.exponent == -8
    assert {num.exponent for num in enc.to_phe()} == {-8}  # phe would give -21 .. -9 here
    sample = rng.choice(10_000, size=150, replace=False)
    np.testing.assert_allclose(sk.decrypt(enc[sample]), mags[sample], atol=HALF_ULP, rtol=1e-15)
    a, b = pk.encrypt(np.full(3, 1.25)), pk.encrypt(np.full(3, 1.25))
    ca, cb = a.raw_ciphertexts(), b.raw_ciphertexts()
    assert len(set(ca) | set(cb)) == 6  # all six ciphertexts distinct
    # to_bytes re-randomises by default; rerandomize=False keeps the ciphertexts.
    one, two = a.to_bytes(), a.to_bytes()
    assert one != two
    assert a.to_bytes(rerandomize=False) == a.to_bytes(rerandomize=False)
    back1 = paillier.EncryptedArray.from_bytes(one, pk)
    assert back1.raw_ciphertexts() != ca
    assert back1.exponent == -8
    np.testing.assert_array_equal(sk.decrypt(back1), np.full(3, 1.25))
    r = a.rerandomize()
    assert set(r.raw_ciphertexts()).isdisjoint(ca)
    np.testing.assert_array_equal(sk.decrypt(r), np.full(3, 1.25))


def test_encrypted_array_bytes(keys: Keys) -> None:
    pk, sk = keys
    x = np.arange(6).reshape(2, 3) * 1.5
    enc = pk.encrypt(x)
    data = enc.to_bytes()
    back = paillier.EncryptedArray.from_bytes(data, pk)
    assert back.shape == (2, 3)
    assert back.exponent == -8
    np.testing.assert_array_equal(sk.decrypt(back), x)
    scalar = paillier.EncryptedArray.from_bytes(enc.sum().to_bytes(), pk)
    assert scalar.shape == ()
    assert sk.decrypt(scalar) == x.sum()
    with pytest.raises(CodecError):
        paillier.EncryptedArray.from_bytes(b"PCXX" + data[4:], pk)
    with pytest.raises(CodecError):
        paillier.EncryptedArray.from_bytes(data[:4] + b"\x07" + data[5:], pk)
    with pytest.raises(CodecError):
        paillier.EncryptedArray.from_bytes(data[:-3], pk)
    with pytest.raises(CodecError):
        paillier.EncryptedArray.from_bytes(data[:12], pk)
    other, _ = paillier.keygen(2048, rng=InsecureSeededRandom(11))
    with pytest.raises(InvalidCiphertextError):
        paillier.EncryptedArray.from_bytes(data, other)
    width = pk.ciphertext_bytes
    forged = data[: len(data) - width] + (0).to_bytes(width, "big")
    with pytest.raises(InvalidCiphertextError):
        paillier.EncryptedArray.from_bytes(forged, pk)


def test_key_holder_encryption_and_parallel(keys: Keys) -> None:
    pk, sk = keys
    x = np.linspace(-50, 50, 64)
    via_sk = sk.encrypt(x)
    assert via_sk.public_key == pk
    np.testing.assert_allclose(sk.decrypt(via_sk), x, atol=HALF_ULP, rtol=0)
    forked = pk.encrypt(x, workers=2, rng=InsecureSeededRandom(4))
    serial = pk.encrypt(x, workers=1, rng=InsecureSeededRandom(4))
    assert forked.raw_ciphertexts() == serial.raw_ciphertexts()
    np.testing.assert_array_equal(sk.decrypt(forked, workers=2), sk.decrypt(serial, workers=1))
    other_pk, other_sk = paillier.keygen(2048, rng=InsecureSeededRandom(12))
    with pytest.raises(ConfigurationError):
        pk.encrypt(x, private_key=other_sk)
    with pytest.raises(ConfigurationError):
        other_sk.decrypt(via_sk)
    with pytest.raises(TypeError):
        sk.decrypt(pk.encrypt_packed(x))  # type: ignore[arg-type]
    assert other_pk != pk


def test_real_data_diabetes_column_sums(keys: Keys) -> None:
    pk, sk = keys
    X, y = load_diabetes(return_X_y=True)
    enc = pk.encrypt(X)  # 4420 values: above the parallel threshold, uses every core
    col = sk.decrypt(enc.sum(axis=0))
    # 442 encodings per column, each rounded by at most 2^-33.
    np.testing.assert_allclose(col, X.sum(axis=0), atol=442 * HALF_ULP, rtol=0)
    ey = pk.encrypt(y.astype(np.int64))
    assert int(sk.decrypt(ey.sum())) == int(y.sum())
    # Weighted sum <w, X[:, 0]> with plaintext weights.
    w = np.linspace(-1, 1, X.shape[0])
    dot = sk.decrypt((enc[:, 0] * w).sum())
    np.testing.assert_allclose(dot, w @ X[:, 0], atol=1e-6, rtol=0)


def test_huge_floats_encode_exactly_without_warning(keys: Keys) -> None:
    """Regression: 1e308 at the default exponent overflowed ``ldexp`` in the fast path and
    emitted a RuntimeWarning (an error under ``-W error``) before the exact path took over."""
    pk, sk = keys
    x = np.array([1e308, -2.5, -1.7e308, 0.0])
    got = sk.decrypt(pk.encrypt(x))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x)  # tolerance 0: all four are multiples of 2^-32
