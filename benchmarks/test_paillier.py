"""privcomp's Paillier engine next to python-paillier (phe, with gmpy2) on the same values.

Groups, for 2048- and 3072-bit keys (``-2048`` / ``-3072`` suffix):

* ``paillier-encrypt``: phe ``encrypt`` (obfuscated, as phe does by default) vs privcomp
  ``PublicKey.encrypt`` on one core, on every core, and as the key holder (CRT);
* ``paillier-decrypt``: phe ``decrypt`` vs privcomp ``PrivateKey.decrypt`` — ``plain`` (one CRT
  decryption per value, phe's algorithm), default (small mantissas decrypted in packed groups,
  :mod:`privcomp.backends.paillier.fastdecrypt`; one core / every core) — and
  ``decrypt_packed`` of a plaintext-packed array (values per decryption = slots per ciphertext);
* ``paillier-sum``: an encrypted column total end to end (encrypt, homomorphic sum, decrypt):
  phe sums ``EncryptedNumber`` objects, privcomp uses packed slots (``encrypt_packed`` ->
  ``.sum()`` -> ``decrypt_packed``);
* ``paillier-add``: the homomorphic sum alone on ciphertexts made beforehand.

``extra_info["values"]`` is the number of plaintext values per call; values/s = values / median.
Run::

    pytest benchmarks/test_paillier.py --benchmark-group-by=group \
        --benchmark-columns=median,rounds --benchmark-json=paillier.json

Smoke mode (CI): ``pytest benchmarks/test_paillier.py --benchmark-disable`` runs each body once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from privcomp import paillier
from privcomp.core.rng import InsecureSeededRandom

phe = pytest.importorskip("phe")

PHE_VALUES = 40  # phe is slow: keep its batches small (the smoke run must stay short)
PC_ENCRYPT_VALUES = 2000
PC_DECRYPT_VALUES = 200
PC_SUM_VALUES = 20_000
_gen = np.random.Generator(np.random.PCG64(42))
X = _gen.normal(0.0, 100.0, PC_SUM_VALUES)

_KEYS: dict[int, tuple[paillier.PublicKey, paillier.PrivateKey]] = {}


def keys(bits: int) -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    """One key pair per size for the whole run, with the encryption tables warmed up."""
    if bits not in _KEYS:
        pk, sk = paillier.keygen(bits, rng=InsecureSeededRandom(bits))
        pk.encrypt(X[:64], workers=1)  # builds the fixed-base table once (not timed)
        sk.encrypt(X[:64], workers=1)
        _KEYS[bits] = (pk, sk)
    return _KEYS[bits]


def run(benchmark: BenchmarkFixture, group: str, values: int, fn: Callable[[], Any]) -> None:
    benchmark.group = group
    benchmark.extra_info["values"] = values
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["values_per_s"] = values / stats.stats.median


BITS = [2048, 3072]


@pytest.mark.parametrize("bits", BITS)
def test_encrypt_phe(benchmark: BenchmarkFixture, bits: int) -> None:
    pk, _ = keys(bits)
    ppk = pk.to_phe()
    values = X[:PHE_VALUES].tolist()
    run(benchmark, f"paillier-encrypt-{bits}", PHE_VALUES, lambda: [ppk.encrypt(v) for v in values])


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["1core", "all-cores", "keyholder-crt-1core"])
def test_encrypt_privcomp(benchmark: BenchmarkFixture, bits: int, mode: str) -> None:
    pk, sk = keys(bits)
    count = PC_ENCRYPT_VALUES if mode != "all-cores" else 2 * PC_ENCRYPT_VALUES
    values = X[:count]
    if mode == "1core":
        fn: Callable[[], Any] = lambda: pk.encrypt(values, workers=1)  # noqa: E731
    elif mode == "all-cores":
        fn = lambda: pk.encrypt(values)  # noqa: E731
    else:
        fn = lambda: sk.encrypt(values, workers=1)  # noqa: E731
    run(benchmark, f"paillier-encrypt-{bits}", count, fn)


@pytest.mark.parametrize("bits", BITS)
def test_decrypt_phe(benchmark: BenchmarkFixture, bits: int) -> None:
    pk, sk = keys(bits)
    ppk, psk = pk.to_phe(), sk.to_phe()
    numbers = [ppk.encrypt(v) for v in X[:PHE_VALUES].tolist()]
    run(
        benchmark, f"paillier-decrypt-{bits}", PHE_VALUES, lambda: [psk.decrypt(c) for c in numbers]
    )


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["plain-1core", "1core", "all-cores", "packed-1core"])
def test_decrypt_privcomp(benchmark: BenchmarkFixture, bits: int, mode: str) -> None:
    pk, sk = keys(bits)
    if mode == "packed-1core":
        packed = pk.encrypt_packed(X[: 31 * 20], max_additions=1024)
        count = packed.length
        fn: Callable[[], Any] = lambda: sk.decrypt_packed(packed, workers=1)  # noqa: E731
    elif mode == "plain-1core":  # one CRT decryption per value, as phe does
        count = PC_DECRYPT_VALUES
        enc = pk.encrypt(X[:count])
        fn = lambda: sk.decrypt(enc, workers=1, fast=False)  # noqa: E731
    else:  # default: small mantissas decrypted in packed groups (fastdecrypt)
        count = 3 * PC_DECRYPT_VALUES if mode == "1core" else 6 * PC_DECRYPT_VALUES
        enc = pk.encrypt(X[:count])
        workers = 1 if mode == "1core" else None
        fn = lambda: sk.decrypt(enc, workers=workers)  # noqa: E731
    run(benchmark, f"paillier-decrypt-{bits}", count, fn)


@pytest.mark.parametrize("bits", BITS)
def test_sum_phe(benchmark: BenchmarkFixture, bits: int) -> None:
    pk, sk = keys(bits)
    ppk, psk = pk.to_phe(), sk.to_phe()
    values = X[:PHE_VALUES].tolist()

    def end_to_end() -> float:
        return float(psk.decrypt(sum(ppk.encrypt(v) for v in values)))

    run(benchmark, f"paillier-sum-{bits}", PHE_VALUES, end_to_end)
    assert end_to_end() == pytest.approx(sum(values), abs=1e-6)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["packed-1core", "packed-all-cores"])
def test_sum_privcomp(benchmark: BenchmarkFixture, bits: int, mode: str) -> None:
    pk, sk = keys(bits)
    workers = 1 if mode == "packed-1core" else None

    def end_to_end() -> float:
        enc = pk.encrypt_packed(X, max_additions=1 << 16, workers=workers)
        return float(sk.decrypt_packed(enc.sum()))

    run(benchmark, f"paillier-sum-{bits}", PC_SUM_VALUES, end_to_end)
    assert end_to_end() == pytest.approx(float(X.sum()), abs=1e-5)


@pytest.mark.parametrize("bits", BITS)
def test_add_phe(benchmark: BenchmarkFixture, bits: int) -> None:
    pk, _ = keys(bits)
    ppk = pk.to_phe()
    numbers = [ppk.encrypt(v) for v in X[:PHE_VALUES].tolist()]
    run(benchmark, f"paillier-add-{bits}", PHE_VALUES, lambda: sum(numbers[1:], numbers[0]))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["unpacked", "packed"])
def test_add_privcomp(benchmark: BenchmarkFixture, bits: int, mode: str) -> None:
    pk, _ = keys(bits)
    if mode == "packed":
        packed = pk.encrypt_packed(X, max_additions=1 << 16)
        run(benchmark, f"paillier-add-{bits}", PC_SUM_VALUES, packed.sum)
    else:
        enc = pk.encrypt(X[:PC_ENCRYPT_VALUES])
        run(benchmark, f"paillier-add-{bits}", PC_ENCRYPT_VALUES, enc.sum)
