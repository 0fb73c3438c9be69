"""Private set intersection: n x n keys with half overlapping, 2 parties on the in-memory network.

Groups (one per size): ``privcomp`` (mutual-output ECDH-PSI over X25519, forked workers on every
core), ``privcomp_1core`` (same, ``workers=1``), ``openmined`` (OpenMined PSI 2.0.6, ECDH over
P-256, one-sided output, raw response; skipped if not installed and above 10^5 keys),
``x25519_floor`` (the ``4 n`` bare X25519 exchanges any mutual-output DH-PSI needs, one core)
and ``plaintext`` (Python set intersection, no privacy); group ``align``: joining two parties'
tags with :func:`~privcomp.protocols.psi.align_tags` against per-tag dicts. extra_info records
keys/s per party, per-party CPU seconds (forked workers included), bytes sent per party, and the
competitors' CPU seconds per run (``cpu_s``): on a shared machine CPU time is the stable figure.
Run::

    pytest benchmarks/test_psi.py --benchmark-group-by=param:n \
        --benchmark-columns=min,median,rounds -p no:cacheprovider

Smoke mode (CI): ``pytest benchmarks/test_psi.py --benchmark-disable`` runs each body once with
10^3 keys. Both parties run in one process here, so wall time covers BOTH parties' work; in a
deployment each party runs in its own process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.psi import PSIResult, align_tags, hash_keys, psi
from privcomp.transport.memory import InMemoryNetwork

FULL_SIZES = [10**4, 10**5, 10**6]
ROUNDS = {10**3: 1, 10**4: 5, 10**5: 3, 10**6: 1}


def _sizes(config: pytest.Config) -> list[int]:
    return [10**3] if config.getoption("benchmark_disable") else FULL_SIZES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "n" in metafunc.fixturenames:
        metafunc.parametrize("n", _sizes(metafunc.config))


def key_sets(n: int) -> tuple[list[int], list[int]]:
    """Two shuffled sets of ``n`` distinct 62-bit ints sharing ``n // 2`` keys."""
    gen = np.random.default_rng(n)
    pool = gen.choice(2**62, size=n + n // 2, replace=False)
    a, b = pool[:n], pool[n - n // 2 :]
    return gen.permutation(a).tolist(), gen.permutation(b).tolist()


async def _run(a: list[int], b: list[int], workers: int | None) -> tuple[PSIResult, PSIResult, int]:
    net = InMemoryNetwork(2, timeout=600.0)
    dealer = TrustedDealer(2)
    ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
    ra, rb = await asyncio.gather(
        *(psi(c, k, workers=workers) for c, k in zip(ctxs, [a, b], strict=True))
    )
    return ra, rb, net.transports[0].stats.bytes_sent


def _record(benchmark: Any, n: int, out: tuple[PSIResult, PSIResult, int], wall: float) -> None:
    ra, rb, sent = out
    if ra.size != n // 2 or rb.size != n // 2:
        raise AssertionError("wrong intersection size")
    median = benchmark.stats.stats.median if benchmark.stats is not None else wall
    benchmark.extra_info.update(
        keys_per_s_per_party=n / median,
        cpu_s_party0=ra.cpu_seconds,
        cpu_s_party1=rb.cpu_seconds,
        bytes_sent_party0=sent,
    )
    print(
        f"\nPSI n={n}: median {median:.2f} s, {n / median:,.0f} keys/s per party, "
        f"cpu {ra.cpu_seconds:.1f}+{rb.cpu_seconds:.1f} s, {sent:,} B sent by party 0"
    )


@pytest.mark.benchmark(group="psi")
def test_privcomp(benchmark: Any, n: int) -> None:
    a, b = key_sets(n)
    t0 = time.perf_counter()
    out = benchmark.pedantic(lambda: asyncio.run(_run(a, b, None)), rounds=ROUNDS[n])
    _record(benchmark, n, out, time.perf_counter() - t0)
    ra, rb, _ = out
    assert [a[i] for i in ra.indices[:100]] == [b[i] for i in rb.indices[:100]]  # type: ignore[index]


@pytest.mark.benchmark(group="psi")
def test_privcomp_1core(benchmark: Any, n: int) -> None:
    if n > 10**5:
        pytest.skip("one-core run measured up to 10^5 (extrapolate linearly)")
    a, b = key_sets(n)
    t0 = time.perf_counter()
    out = benchmark.pedantic(lambda: asyncio.run(_run(a, b, 1)), rounds=ROUNDS[n])
    _record(benchmark, n, out, time.perf_counter() - t0)


@pytest.mark.benchmark(group="psi")
def test_openmined(benchmark: Any, n: int) -> None:
    om = pytest.importorskip("private_set_intersection.python")
    if n > 10**5:
        pytest.skip("competitor measured up to 10^5 (extrapolate linearly)")
    a, b = ([str(x) for x in s] for s in key_sets(n))

    def run() -> int:
        server = om.server.CreateWithNewKey(True)
        client = om.client.CreateWithNewKey(True)
        setup = server.CreateSetupMessage(1e-9, len(a), b, om.DataStructure.RAW)
        response = server.ProcessRequest(client.CreateRequest(a))
        return len(client.GetIntersection(setup, response))

    cpu = time.process_time()
    assert benchmark.pedantic(run, rounds=ROUNDS[n]) == n // 2
    benchmark.extra_info["cpu_s"] = (time.process_time() - cpu) / ROUNDS[n]


@pytest.mark.benchmark(group="psi")
def test_x25519_floor(benchmark: Any, n: int) -> None:
    """The 4n variable-base X25519 exchanges of a mutual-output DH-PSI, one core, no protocol."""
    if n > 10**5:
        pytest.skip("measured up to 10^5 (extrapolate linearly)")
    us = hash_keys(range(n))
    key = X25519PrivateKey.generate()

    def run() -> int:
        load, exchange = X25519PublicKey.from_public_bytes, key.exchange
        return sum(len(exchange(load(u))) for _ in range(4) for u in us)

    cpu = time.process_time()
    assert benchmark.pedantic(run, rounds=ROUNDS[n]) == 128 * n
    benchmark.extra_info["cpu_s"] = (time.process_time() - cpu) / ROUNDS[n]


@pytest.mark.benchmark(group="psi")
def test_plaintext(benchmark: Any, n: int) -> None:
    a, b = key_sets(n)
    assert len(benchmark.pedantic(lambda: set(a) & set(b), rounds=ROUNDS[n])) == n // 2


def _dict_join(tags: list[list[bytes]]) -> list[int]:
    """The per-tag dict join of stats_vertical.align before vectorising (two parties)."""
    left, right = ({t: i for i, t in enumerate(lst)} for lst in tags)
    joined = sorted(set(left) & set(right))
    return sorted(left[t] for t in joined)


@pytest.mark.benchmark(group="align")
@pytest.mark.parametrize("impl", ["align_tags", "dict"])
def test_align(benchmark: Any, n: int, impl: str) -> None:
    """Joining two parties' n 32-byte PSI tags (n/2 shared): vectorised against per-tag dicts."""
    gen = np.random.default_rng(n)
    raw = gen.bytes(32 * (n + n // 2))
    pool = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    tags = [pool[:n], pool[n - n // 2 :]]

    def run() -> int:
        if impl == "dict":
            return len(_dict_join(tags))
        out = align_tags(tags, [0, 1], 0)
        assert out is not None
        return out[0]

    cpu = time.process_time()
    assert benchmark.pedantic(run, rounds=ROUNDS[n]) == n // 2
    benchmark.extra_info["cpu_s"] = (time.process_time() - cpu) / ROUNDS[n]
