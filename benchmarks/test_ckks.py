"""privcomp's CKKS engine next to raw TenSEAL on the same data, in the same run.

Groups (``-n4096`` / ``-n8192`` suffix; ``-n16384`` too when ``PRIVCOMP_BENCH_FULL=1``):

* ``ckks-encrypt``: encrypt a full vector (slot count values);
* ``ckks-add``: ciphertext + ciphertext;
* ``ckks-mul``: ciphertext x ciphertext (relinearise + rescale) and ciphertext x plain vector;
* ``ckks-dot``: encrypted . plain vector (product + rotate-and-sum);
* ``ckks-matmul``: encrypted 4096-vector x plain 4096x16 matrix at n8192: privcomp's
  diagonal method (default), privcomp per-column dots (masked + packed into one vector),
  raw TenSEAL per-column dots (16 separate results, no packing) and, with
  ``PRIVCOMP_BENCH_FULL=1``, TenSEAL's ``mm`` (~40 s per call);
* ``ckks-matmul-256x16-n8192``: the same on a 256x16 matrix, where TenSEAL's ``mm`` is fast
  enough for the smoke run.

``extra_info["ops_per_s"]`` (1 / median) and ``extra_info["values"]`` (plaintext values per
call) are filled when timing is on. Run::

    pytest benchmarks/test_ckks.py --benchmark-group-by=group \
        --benchmark-columns=min,median,rounds --benchmark-json=ckks.json

Smoke mode (CI): ``pytest benchmarks/test_ckks.py --benchmark-disable`` runs each body once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

ts = pytest.importorskip("tenseal")

from privcomp import ckks  # noqa: E402
from privcomp.core.rng import InsecureSeededRandom  # noqa: E402

pytestmark = pytest.mark.ckks

FULL = os.environ.get("PRIVCOMP_BENCH_FULL") == "1"
PRESETS = ["n4096", "n8192", *(["n16384"] if FULL else [])]
_gen = np.random.Generator(np.random.PCG64(8192))
_CTX: dict[str, ckks.CKKSContext] = {}


def context(preset: str) -> ckks.CKKSContext:
    """One key pair per preset for the whole run (not timed)."""
    if preset not in _CTX:
        _CTX[preset] = ckks.context(preset, rng=InsecureSeededRandom(1))
    return _CTX[preset]


def data(preset: str) -> tuple[np.ndarray, np.ndarray]:
    n = ckks.PRESETS[preset].slot_count
    return _gen.uniform(-1, 1, n), _gen.uniform(-1, 1, n)


def run(
    benchmark: BenchmarkFixture, group: str, values: int, fn: Callable[[], Any], rounds: int = 5
) -> None:
    benchmark.group = group
    benchmark.extra_info["values"] = values
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)
    if benchmark.stats is not None:  # None in --benchmark-disable smoke mode
        median = benchmark.stats.stats.median
        benchmark.extra_info["ops_per_s"] = 1.0 / median
        benchmark.extra_info["values_per_s"] = values / median


LIBS = ["privcomp", "tenseal"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("lib", LIBS)
def test_encrypt(benchmark: BenchmarkFixture, preset: str, lib: str) -> None:
    ctx = context(preset)
    x, _ = data(preset)
    xl = x.tolist()
    fn = (
        (lambda: ctx.encrypt(x))
        if lib == "privcomp"
        else (lambda: ts.ckks_vector(ctx.ts_context, xl))
    )
    run(benchmark, f"ckks-encrypt-{preset}", x.size, fn)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("lib", LIBS)
def test_add(benchmark: BenchmarkFixture, preset: str, lib: str) -> None:
    ctx = context(preset)
    x, y = data(preset)
    a, b = ctx.encrypt(x), ctx.encrypt(y)
    ta, tb = a.ts_vector, b.ts_vector
    fn = (lambda: a + b) if lib == "privcomp" else (lambda: ta + tb)
    run(benchmark, f"ckks-add-{preset}", x.size, fn, rounds=20)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("operand", ["ct", "plain"])
@pytest.mark.parametrize("lib", LIBS)
def test_mul(benchmark: BenchmarkFixture, preset: str, operand: str, lib: str) -> None:
    ctx = context(preset)
    x, y = data(preset)
    a, b = ctx.encrypt(x), ctx.encrypt(y)
    yl = y.tolist()
    if lib == "privcomp":
        fn = (lambda: a * b) if operand == "ct" else (lambda: a * y)
    else:
        ta, tb = a.ts_vector, b.ts_vector
        fn = (lambda: ta * tb) if operand == "ct" else (lambda: ta * yl)
    run(benchmark, f"ckks-mul-{operand}-{preset}", x.size, fn, rounds=10)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("lib", LIBS)
def test_dot(benchmark: BenchmarkFixture, preset: str, lib: str) -> None:
    ctx = context(preset)
    x, y = data(preset)
    a = ctx.encrypt(x)
    ta, yl = a.ts_vector, y.tolist()
    fn = (lambda: a.dot(y)) if lib == "privcomp" else (lambda: ta.dot(yl))
    run(benchmark, f"ckks-dot-{preset}", x.size, fn, rounds=5)


MATMUL_BODIES = ["privcomp-diagonal", "privcomp-dots", "tenseal-dots", "tenseal-mm"]


def _matmul_fn(body: str, vec: ckks.CKKSVector, m: np.ndarray) -> Callable[[], Any]:
    tv, cols, ml = vec.ts_vector, [c.tolist() for c in m.T], m.tolist()
    return {
        "privcomp-diagonal": lambda: vec.matmul_plain(m, method="diagonal"),
        "privcomp-dots": lambda: vec.matmul_plain(m, method="dots"),
        "tenseal-dots": lambda: [tv.dot(c) for c in cols],
        "tenseal-mm": lambda: tv.mm(ml),
    }[body]


@pytest.mark.parametrize("body", MATMUL_BODIES)
def test_matmul_4096x16(benchmark: BenchmarkFixture, body: str) -> None:
    if body == "tenseal-mm" and not FULL:
        pytest.skip("TenSEAL mm on 4096x16 takes ~40 s per call: set PRIVCOMP_BENCH_FULL=1")
    ctx = context("n8192")
    x, _ = data("n8192")
    m = _gen.uniform(-1, 1, (x.size, 16))
    vec = ctx.encrypt(x)
    ctx.rotation_bridge()  # built once per context (loads the Galois keys), not timed
    rounds = 1 if body == "tenseal-mm" else 5
    run(benchmark, "ckks-matmul-n8192", x.size * 16, _matmul_fn(body, vec, m), rounds=rounds)


@pytest.mark.parametrize("body", MATMUL_BODIES)
def test_matmul_256x16(benchmark: BenchmarkFixture, body: str) -> None:
    ctx = context("n8192")
    x = _gen.uniform(-1, 1, 256)
    m = _gen.uniform(-1, 1, (256, 16))
    vec = ctx.encrypt(x)
    ctx.rotation_bridge()
    rounds = 1 if body == "tenseal-mm" else 5
    run(benchmark, "ckks-matmul-256x16-n8192", 256 * 16, _matmul_fn(body, vec, m), rounds=rounds)
