"""Paillier engine: lossless interoperability with python-paillier (phe)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from privcomp import paillier
from privcomp.errors import BackendUnavailableError, InsecureParameterError

phe = pytest.importorskip("phe")
pytestmark = pytest.mark.phe

Keys = tuple[paillier.PublicKey, paillier.PrivateKey]
VALUES_INT = [0, 1, -1, 7, -123456789, 2**62, -(2**62)]
VALUES_FLOAT = [0.0, 0.5, -2.75, 3.141592653589793, -1e-9, 1e9, 123456.789]


@pytest.fixture(scope="session")
def keys() -> Keys:
    return paillier.keygen(2048)


def test_keys_convert_both_ways(keys: Keys) -> None:
    pk, sk = keys
    ppk, psk = pk.to_phe(), sk.to_phe()
    assert isinstance(ppk, phe.PaillierPublicKey)
    assert ppk.n == pk.n
    assert isinstance(psk, phe.PaillierPrivateKey)
    assert paillier.PublicKey.from_phe(ppk) == pk
    back = paillier.PrivateKey.from_phe(ppk, psk)
    assert back.public_key == pk
    assert back._primes() == sk._primes()


def test_privcomp_to_phe(keys: Keys) -> None:
    pk, sk = keys
    psk = sk.to_phe()
    for values in (VALUES_INT, VALUES_FLOAT):
        enc = pk.encrypt(np.array(values))
        numbers = enc.to_phe()
        assert all(isinstance(x, phe.EncryptedNumber) for x in numbers)
        got = [psk.decrypt(x) for x in numbers]
        if values is VALUES_INT:
            assert got == values
        else:
            np.testing.assert_allclose(got, values, atol=2.0**-33, rtol=1e-15)
    # phe arithmetic on our ciphertexts keeps working.
    a, b = pk.encrypt(np.array([2.5, -4.0])).to_phe()
    assert psk.decrypt(a + b) == -1.5
    assert psk.decrypt(a * 4) == 10.0


def test_phe_to_privcomp(keys: Keys) -> None:
    pk, sk = keys
    ppk = pk.to_phe()
    ints = [ppk.encrypt(v) for v in VALUES_INT]
    enc_i = paillier.EncryptedArray.from_phe(ints, pk)
    assert enc_i.exponent == 0
    assert sk.decrypt(enc_i).tolist() == VALUES_INT
    # phe gives every float its own exponent: privcomp aligns them to the lowest one.
    floats = [ppk.encrypt(v) for v in VALUES_FLOAT]
    assert len({x.exponent for x in floats}) > 1
    enc_f = paillier.EncryptedArray.from_phe(floats, pk)
    assert enc_f.exponent == min(x.exponent for x in floats)
    np.testing.assert_array_equal(sk.decrypt(enc_f), np.array(VALUES_FLOAT))
    mixed = paillier.EncryptedArray.from_phe(ints[:3] + floats[:3], pk)
    np.testing.assert_array_equal(sk.decrypt(mixed), np.array(VALUES_INT[:3] + VALUES_FLOAT[:3]))
    # Arithmetic across the two libraries.
    total = sk.decrypt((enc_f + pk.encrypt(np.array(VALUES_FLOAT))).sum())
    assert total == pytest.approx(2 * sum(VALUES_FLOAT), abs=1e-8)
    with pytest.raises(TypeError):
        paillier.EncryptedArray.from_phe([1, 2], pk)


def test_short_phe_keys_refused() -> None:
    ppk, psk = phe.generate_paillier_keypair(n_length=1024)
    with pytest.raises(InsecureParameterError):
        paillier.PublicKey.from_phe(ppk)
    with pytest.raises(InsecureParameterError):
        paillier.PrivateKey.from_phe(ppk, psk)


def test_missing_phe_is_a_typed_error(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    pk, _ = keys
    monkeypatch.setitem(sys.modules, "phe", None)  # makes "import phe" raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install privcomp\[phe\]"):
        pk.to_phe()


def test_phe_exponents_too_far_apart_are_refused(keys: Keys) -> None:
    """Regression: aligning 1e300 (phe exponent ~ +235) with 1e-300 (~ -262) multiplied the
    first plaintext by 16^497, which wrapped modulo n and decrypted to a silently wrong value."""
    from privcomp.errors import ConfigurationError

    pk, sk = keys
    ppk = pk.to_phe()
    far = [ppk.encrypt(1e300), ppk.encrypt(1e-300)]
    assert far[0].exponent - far[1].exponent > 400
    with pytest.raises(ConfigurationError, match="exponent decrease"):
        paillier.EncryptedArray.from_phe(far, pk)
    near = [ppk.encrypt(1e30), ppk.encrypt(1e-30)]  # 16^~40 stays far inside the modulus
    np.testing.assert_array_equal(
        sk.decrypt(paillier.EncryptedArray.from_phe(near, pk)), np.array([1e30, 1e-30])
    )
