"""Paillier engine: plaintext packing (slotwise sums, folded totals, overflow refusal)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from privcomp import paillier
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import CodecError, ConfigurationError, EncodingOverflowError

Keys = tuple[paillier.PublicKey, paillier.PrivateKey]
HALF_ULP = 2.0**-33


@pytest.fixture(scope="session")
def keys() -> Keys:
    return paillier.keygen(2048)


def test_layout(keys: Keys) -> None:
    pk, _ = keys
    lay = paillier.SlotLayout.create(pk.bits, 64, 1 << 16, -8)
    assert lay.slots == (2048 - 2 - 40) // 64 == 31
    assert lay.value_bits == 64 - 17
    assert lay.offset == 2**46
    for slot_bits, max_add in ((60, 10), (8, 10), (64, 0), (24, 2**23)):
        with pytest.raises(ConfigurationError):
            paillier.SlotLayout.create(pk.bits, slot_bits, max_add, 0)
    with pytest.raises(ConfigurationError):
        paillier.SlotLayout.create(pk.bits, 4096, 4, 0)


def test_packed_round_trip_and_slotwise_sums(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(3)
    x, y = rng.normal(scale=100, size=100), rng.normal(scale=100, size=100)
    ex = pk.encrypt_packed(x, max_additions=8)
    ey = pk.encrypt_packed(y, max_additions=8)
    assert ex.ciphertext_count == 4
    assert len(ex) == 100
    assert ex.shape == (100,)
    np.testing.assert_allclose(sk.decrypt_packed(ex), x, atol=HALF_ULP, rtol=0)
    np.testing.assert_allclose(sk.decrypt_packed(ex + ey), x + y, atol=2 * HALF_ULP, rtol=0)
    np.testing.assert_allclose(
        sk.decrypt_packed(ex + ey + y + 1.5), x + 2 * y + 1.5, atol=4 * HALF_ULP, rtol=0
    )
    ints = rng.integers(-1000, 1000, size=70)
    ei = pk.encrypt_packed(ints, slot_bits=32, max_additions=3)
    assert ei.exponent == 0
    got = sk.decrypt_packed(ei + ei + ei)
    assert got.dtype == np.int64
    assert np.array_equal(got, 3 * ints)


def test_packed_total_is_folded_and_masked(keys: Keys) -> None:
    pk, sk = keys
    rng = np.random.default_rng(4)
    x = rng.normal(size=1000)
    ex = pk.encrypt_packed(x, max_additions=4096)
    total = ex.sum(rng=InsecureSeededRandom(9))
    assert total.folded
    assert total.shape == ()
    assert total.ciphertext_count == 1
    assert total.terms == 1000
    np.testing.assert_allclose(sk.decrypt_packed(total), x.sum(), atol=1000 * HALF_ULP, rtol=0)
    # The key holder sees P + (2^64 - 1) * rho, not the slot sums: the plaintext is far above
    # the 31 * 64 bits of the packed slots.
    (plain,) = sk.raw_decrypt(total.raw_ciphertexts())
    assert plain.bit_length() > 31 * 64 + 40
    # Sum of two arrays, then total.
    both = (ex + ex).sum()
    np.testing.assert_allclose(sk.decrypt_packed(both), 2 * x.sum(), atol=2000 * HALF_ULP, rtol=0)


def test_overflow_refused_before_it_happens(keys: Keys) -> None:
    pk, _ = keys
    x = np.ones(40)
    ex = pk.encrypt_packed(x, max_additions=3)
    s = ex + ex + ex
    with pytest.raises(EncodingOverflowError, match="max_additions=3"):
        s + ex
    with pytest.raises(EncodingOverflowError):
        s + 1.0
    with pytest.raises(EncodingOverflowError):
        ex.sum()  # 40 terms > 3
    with pytest.raises(EncodingOverflowError, match="packing bound"):
        pk.encrypt_packed(np.array([2.0**47]), max_additions=4)  # 64 - 3 value bits, 2^-32 units
    with pytest.raises(ConfigurationError):
        ex + pk.encrypt_packed(np.ones(41), max_additions=3)
    with pytest.raises(ConfigurationError):
        ex + pk.encrypt_packed(x, max_additions=7)
    with pytest.raises(ConfigurationError):
        pk.encrypt_packed(np.ones((2, 2)))


def test_extreme_slot_values_do_not_carry(keys: Keys) -> None:
    pk, sk = keys
    lay = paillier.SlotLayout.create(pk.bits, 16, 7, 0)
    top, bottom = lay.offset - 1, -lay.offset
    x = np.array([top, bottom] * 40)
    ex = pk.encrypt_packed(x, slot_bits=16, max_additions=7)
    acc = ex
    for _ in range(6):
        acc = acc + ex
    assert np.array_equal(sk.decrypt_packed(acc), 7 * x)


def test_packed_bytes(keys: Keys) -> None:
    pk, sk = keys
    x = np.arange(50) * 0.25
    ex = pk.encrypt_packed(x, max_additions=100)
    data = ex.to_bytes()
    back = paillier.PackedEncryptedArray.from_bytes(data, pk)
    assert back.raw_ciphertexts() != ex.raw_ciphertexts()  # re-randomised on export
    np.testing.assert_array_equal(sk.decrypt_packed(back), x)
    folded = paillier.PackedEncryptedArray.from_bytes(ex.sum().to_bytes(), pk)
    assert folded.folded
    assert sk.decrypt_packed(folded) == x.sum()
    with pytest.raises(CodecError):
        paillier.PackedEncryptedArray.from_bytes(b"PCXX" + data[4:], pk)
    with pytest.raises(CodecError):
        paillier.PackedEncryptedArray.from_bytes(data[:20], pk)


def test_real_data_diabetes_packed_column_sums(keys: Keys) -> None:
    pk, sk = keys
    X, _ = load_diabetes(return_X_y=True)
    sums = []
    for j in range(X.shape[1]):
        col = pk.encrypt_packed(X[:, j], max_additions=1024)
        sums.append(float(sk.decrypt_packed(col.sum())))
    np.testing.assert_allclose(sums, X.sum(axis=0), atol=442 * HALF_ULP, rtol=0)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    slot_bits=st.sampled_from([16, 24, 32, 64]),
    copies=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_property_packed_sums_match_numpy(
    keys: Keys, slot_bits: int, copies: int, data: st.DataObject
) -> None:
    pk, sk = keys
    lay = paillier.SlotLayout.create(pk.bits, slot_bits, 5 * 70, 0)
    ints = st.integers(min_value=-lay.offset, max_value=lay.offset - 1)
    x = np.array(data.draw(st.lists(ints, min_size=1, max_size=70)), dtype=np.int64)
    ex = pk.encrypt_packed(x, slot_bits=slot_bits, max_additions=5 * 70)
    acc = ex
    for _ in range(copies - 1):
        acc = acc + ex
    assert np.array_equal(sk.decrypt_packed(acc), copies * x)
    assert int(sk.decrypt_packed(acc.sum())) == copies * int(x.sum())


@pytest.mark.parametrize("where", ["slot", "padding", "above_slots"])
def test_corrupted_packed_plaintext_is_refused(keys: Keys, where: str) -> None:
    """Regression: a packed ciphertext whose slot exceeds what its term count allows (e.g. a
    peer's malformed reply) decoded silently to a wrong value; now decryption refuses it."""
    pk, sk = keys
    ex = pk.encrypt_packed(np.arange(5), slot_bits=32, max_additions=3)
    lay = ex.layout
    good = lay.pack(np.arange(5), "v")[0]
    bad = {
        "slot": good + (3 << lay.value_bits),  # slot 0 beyond one term's range, no carry
        "padding": good + (1 << (lay.slot_bits * 7)),  # a nonzero slot past the length
        "above_slots": good + (1 << (lay.slot_bits * lay.slots)),
    }[where]
    forged = paillier.PackedEncryptedArray(pk, pk.raw_encrypt([bad]), lay, 5)
    with pytest.raises(EncodingOverflowError):
        sk.decrypt_packed(forged)
    assert np.array_equal(sk.decrypt_packed(ex), np.arange(5))


def test_corrupted_folded_total_is_refused(keys: Keys) -> None:
    pk, sk = keys
    ex = pk.encrypt_packed(np.arange(5), slot_bits=32, max_additions=8)
    lay = ex.layout
    total = ex.sum()
    assert sk.decrypt_packed(total) == 10
    bad = paillier.PackedEncryptedArray(
        pk, pk.raw_encrypt([(1 << lay.slot_bits) - 2]), lay, 1, terms=5, folded=True
    )
    with pytest.raises(EncodingOverflowError):
        sk.decrypt_packed(bad)
