"""Paillier engine: known answers, keys, raw layer and ciphertext validation (T01a, T07)."""

from __future__ import annotations

import struct

import gmpy2
import pytest

from privcomp import paillier
from privcomp.backends.paillier import parallel
from privcomp.backends.paillier.noise import CrtDjnNoise, DjnNoise, short_exponent_bits
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    EncodingOverflowError,
    InsecureParameterError,
    InvalidCiphertextError,
    ParallelWorkerError,
)

# python-paillier's regression vector (phe/tests/paillier_test.py) [S31].
KAT_P, KAT_Q = 293, 433
KAT_N = 126869


@pytest.fixture(scope="session")
def kat_keys() -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    pk = paillier.PublicKey._unsafe_from_n(KAT_N)
    return pk, paillier.PrivateKey(pk, KAT_P, KAT_Q)


@pytest.fixture(scope="session")
def keys() -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    return paillier.keygen(2048)


def test_kat_python_paillier(kat_keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pk, sk = kat_keys
    assert pk.n == KAT_N
    assert pk.g == KAT_N + 1
    assert pk.nsquare == KAT_N**2
    assert pk.raw_encrypt([10100], r=[74384]) == [935906717]
    assert pk.raw_encrypt([1], r=[1]) == [126870]
    assert sk.raw_decrypt([935906717, 126870]) == [10100, 1]
    # Wrap-around: an encryption of n is an encryption of 0, of n + 1 one of 1 (phe testModuloN).
    n, n2 = KAT_N, KAT_N**2
    r = 74384
    rn = pow(r, n, n2)
    assert sk.raw_decrypt([(1 + n * n) * rn % n2]) == [0]
    assert sk.raw_decrypt([(1 + (n + 1) * n) * rn % n2]) == [1]
    # ... but the raw layer refuses plaintexts outside [0, n) instead of wrapping silently.
    with pytest.raises(EncodingOverflowError):
        pk.raw_encrypt([n])


def test_kat_random_encryptions_round_trip(
    kat_keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    pk, sk = kat_keys
    rng = InsecureSeededRandom(1)
    pts = [0, 1, 2, KAT_N - 1, 12345, 99999]
    assert sk.raw_decrypt(pk.raw_encrypt(pts, rng=rng)) == pts
    assert sk.raw_decrypt(sk.raw_encrypt(pts, rng=rng)) == pts


def test_keygen_shape_and_reprs(keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pk, sk = keys
    assert pk.bits == 2048
    p, q = sk._primes()
    assert p * q == pk.n
    assert p != q
    assert p.bit_length() == q.bit_length() == 1024
    assert gmpy2.is_prime(p)
    assert gmpy2.is_prime(q)
    assert gmpy2.gcd(pk.n, (p - 1) * (q - 1)) == 1
    for text in (repr(pk), repr(sk)):
        assert str(pk.n)[:12] not in text
        assert str(p)[:12] not in text
        assert hex(pk.n)[2:14] not in text
        assert pk.fingerprint in text
        assert len(text) < 100


def test_keygen_is_reproducible_only_with_a_seeded_source() -> None:
    a, _ = paillier.keygen(2048, rng=InsecureSeededRandom(7))
    b, _ = paillier.keygen(2048, rng=InsecureSeededRandom(7))
    c, _ = paillier.keygen(2048)
    assert a == b
    assert a != c


@pytest.mark.parametrize("bits", [512, 1024, 1536, 2046])
def test_short_keys_refused(bits: int) -> None:
    with pytest.raises(InsecureParameterError):
        paillier.keygen(bits)


def test_short_modulus_refused_everywhere() -> None:
    small_n = int(gmpy2.next_prime(2**511)) * int(gmpy2.next_prime(2**512))
    with pytest.raises(InsecureParameterError):
        paillier.PublicKey(small_n)
    blob = b"PCPK" + struct.pack(">BI", 1, 128) + small_n.to_bytes(128, "big")
    with pytest.raises(InsecureParameterError):
        paillier.PublicKey.from_bytes(blob)


def test_public_key_bytes_round_trip(keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pk, _ = keys
    data = pk.to_bytes()
    assert paillier.PublicKey.from_bytes(data) == pk
    with pytest.raises(CodecError):
        paillier.PublicKey.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(CodecError):
        paillier.PublicKey.from_bytes(data[:4] + b"\x09" + data[5:])
    with pytest.raises(CodecError):
        paillier.PublicKey.from_bytes(data[:-1])


def test_private_key_must_match() -> None:
    pk = paillier.PublicKey._unsafe_from_n(KAT_N)
    with pytest.raises(ConfigurationError):
        paillier.PrivateKey(pk, 293, 431)
    with pytest.raises(ConfigurationError):
        paillier.PrivateKey(pk, KAT_N, 1)


def test_raw_homomorphisms(keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pk, sk = keys
    n = pk.n
    a, b = 123456789, n - 5  # b encodes -5
    ca, cb = pk.raw_encrypt([a, b])
    assert sk.raw_decrypt([pk.raw_add(ca, cb)]) == [a - 5]
    assert sk.raw_decrypt([pk.raw_mul(ca, 3), pk.raw_mul(ca, -2), pk.raw_mul(cb, n - 1)]) == [
        3 * a,
        n - 2 * a,
        5,
    ]
    many = pk.raw_mul_many([ca, cb, ca], [0, 7, -1])
    assert sk.raw_decrypt(many) == [0, n - 35, n - a]
    assert sk.raw_decrypt(pk.raw_add_many([ca, cb], [cb, cb])) == [a - 5, n - 10]
    fresh = pk.raw_rerandomize([ca, cb])
    assert fresh[0] != ca
    assert fresh[1] != cb
    assert sk.raw_decrypt(fresh) == [a, b]
    noise = pk.raw_noise(3)
    assert len(set(noise)) == 3
    assert sk.raw_decrypt(noise) == [0, 0, 0]
    with pytest.raises(ConfigurationError):
        pk.raw_mul_many([ca], [1, 2])


def test_djn_exponent_length_and_crt_equivalence(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    assert short_exponent_bits(2048) == 256
    assert short_exponent_bits(3072) == 256
    assert short_exponent_bits(7680) == 384
    pk, sk = keys
    p, q = sk._primes()
    # The same y and alphas give the same residue through the table, plain powmod and CRT.
    public = DjnNoise(gmpy2.mpz(pk.n), InsecureSeededRandom(3))
    crt = CrtDjnNoise(gmpy2.mpz(p), gmpy2.mpz(q), InsecureSeededRandom(3))
    alphas = [bytes([i] * 32) for i in range(30)]
    plain = [public.residue(a) for a in alphas]
    public.prepare(100)
    crt.prepare(100)
    assert [public.residue(a) for a in alphas] == plain
    assert [crt.residue(a) for a in alphas] == plain


def test_ciphertext_validation_before_decryption(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    pk, sk = keys
    p, _ = sk._primes()
    good = pk.raw_encrypt([42])[0]
    bad_values = [0, pk.nsquare, pk.nsquare + 1, p * 12345, pk.n, -good]
    calls = []
    real_powmod = gmpy2.powmod

    def spy(*args: object) -> object:
        calls.append(1)
        return real_powmod(*args)

    for bad in bad_values:
        monkeypatch.setattr(gmpy2, "powmod", spy)
        with pytest.raises(InvalidCiphertextError):
            sk.raw_decrypt([good, bad])
        monkeypatch.setattr(gmpy2, "powmod", real_powmod)
        assert calls == []


def test_ciphertext_bytes_helpers(keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pk, sk = keys
    cs = pk.raw_encrypt([1, 2, 3])
    data = paillier.ciphertexts_to_bytes(cs, pk)
    assert paillier.ciphertexts_from_bytes(data, pk) == cs
    width = pk.ciphertext_bytes
    header = data[: len(data) - 3 * width]
    for bad in (0, pk.nsquare, pk.nsquare + 1, sk._primes()[0]):
        if bad.bit_length() > 8 * width:
            continue
        forged = header + bad.to_bytes(width, "big") + data[len(header) + width :]
        with pytest.raises(InvalidCiphertextError):
            paillier.ciphertexts_from_bytes(forged, pk)
    other, _ = paillier.keygen(2048)
    with pytest.raises(InvalidCiphertextError):
        paillier.ciphertexts_from_bytes(data, other)
    with pytest.raises(CodecError):
        paillier.ciphertexts_from_bytes(data[:-1], pk)
    with pytest.raises(CodecError):
        paillier.ciphertexts_from_bytes(b"NOPE" + data[4:], pk)
    with pytest.raises(CodecError):
        paillier.ciphertexts_from_bytes(data[:10], pk)


def test_parallel_workers_give_identical_results(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    pk, sk = keys
    pts = list(range(1, 41))
    serial = pk.raw_encrypt(pts, rng=InsecureSeededRandom(5), workers=1)
    forked = pk.raw_encrypt(pts, rng=InsecureSeededRandom(5), workers=2)
    assert serial == forked  # randomness drawn before forking: same bytes, same ciphertexts
    assert sk.raw_decrypt(forked, workers=2) == pts
    assert sk.raw_decrypt(forked, workers=1) == pts


def test_parallel_worker_failure_is_reported() -> None:
    def compute(start: int, stop: int) -> list[gmpy2.mpz]:
        if start > 0:
            raise RuntimeError("boom")
        return [gmpy2.mpz(i) for i in range(start, stop)]

    with pytest.raises(ParallelWorkerError):
        parallel.map_chunks(compute, 10, 4, 2)
    assert parallel.map_chunks(compute, 10, 4, 1) == list(range(10))
    with pytest.raises(ConfigurationError):
        parallel.resolve_workers(0, 10, 1)
    assert parallel.resolve_workers(None, 10, 100) == 1


@pytest.mark.slow
def test_default_3072_bit_key_end_to_end() -> None:
    pk, sk = paillier.keygen()
    assert pk.bits == paillier.DEFAULT_KEY_BITS == 3072
    cs = pk.raw_encrypt([0, 1, pk.n - 1])
    assert sk.raw_decrypt(cs) == [0, 1, pk.n - 1]
    assert sk.raw_decrypt(sk.raw_encrypt([5, 6])) == [5, 6]
    packed = paillier.SlotLayout.create(pk.bits, 64, 1 << 16, -8)
    assert packed.slots == (3072 - 42) // 64
