"""gRPC runtime benchmarks: peer-transport throughput vs raw gRPC, 10^6 Beaver multiplications
across 3 worker processes vs in-memory, the wall-time split of a demo-sized job, joint
statistics over gRPC (``pc.connect``) next to pandas, and a PSI join between two workers.

Sizes of the statistics and PSI benchmarks: full (3 x 10^6 rows; 10^6 keys) only with
``PRIVCOMP_BENCH_FULL=1``; 10^5 in timed mode; small in smoke mode (``--benchmark-disable``).

Run: ``pytest benchmarks/test_grpc.py --benchmark-disable -s`` (smoke, each body once) or
without ``--benchmark-disable`` for timings; figures are printed and kept in ``extra_info``.
Everything binds 127.0.0.1 port 0; every process started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from privcomp.client import connect
from privcomp.demo import (
    PARTIES,
    Deployment,
    demo_spec,
    start_cluster,
    synthetic_data,
    wait_parties,
)
from privcomp.jobs.kinds import BenchMulKind, LocalData
from privcomp.jobs.model import JobSpec
from privcomp.proto.v1 import peer_pb2
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.rpc.channel import aio_channel
from privcomp.rpc.pki import create_pki, load_identity
from privcomp.rpc.transport import GrpcTransport, JobMailbox, RoundDeadlines
from privcomp.transport.memory import InMemoryNetwork

MIB = 1 << 20
PAYLOAD_MIB = 64
N_MUL = 10**6

RECEIVER = r"""
import asyncio, sys
from pathlib import Path
import grpc, grpc.aio
from privcomp.proto.v1 import peer_pb2, peer_pb2_grpc
from privcomp.rpc.auth import AuthInterceptor
from privcomp.rpc.channel import add_port, server_options
from privcomp.rpc.pki import load_identity
from privcomp.rpc.transport import JobMailbox
from privcomp.services.peer import MailboxEntry, PeerServicer, add_peer_servicer
from privcomp.services.server import WORKER_RULES

async def sink(request_iterator, context):
    n = 0
    async for chunk in request_iterator:
        n += len(chunk)
    return n.to_bytes(8, "little")

async def sink_keep(request_iterator, context):
    parts = []
    async for chunk in request_iterator:
        parts.append(chunk)
    return len(b"".join(parts)).to_bytes(8, "little")

async def sink_proto(request_iterator, context):
    parts = []
    async for chunk in request_iterator:
        parts.append(chunk.data)
    return len(b"".join(parts)).to_bytes(8, "little")

async def main():
    ident = load_identity(Path(sys.argv[1]), "hospital_b")
    box = JobMailbox("bench", 2)
    entry = MailboxEntry(box, ("hospital_a", "hospital_b"))
    rules = dict(WORKER_RULES, **{"/bench.Raw/Sink": lambda who: who == "hospital_a",
                                  "/bench.Raw/SinkKeep": lambda who: who == "hospital_a",
                                  "/bench.Raw/SinkProto": lambda who: who == "hospital_a"})
    server = grpc.aio.server(interceptors=(AuthInterceptor(rules),), options=server_options())
    add_peer_servicer(PeerServicer(lambda j: entry if j == "bench" else None), server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Raw", {"Sink": grpc.stream_unary_rpc_method_handler(sink),
                      "SinkKeep": grpc.stream_unary_rpc_method_handler(sink_keep),
                      "SinkProto": grpc.stream_unary_rpc_method_handler(
                          sink_proto, request_deserializer=peer_pb2.DeliverRequest.FromString)}),))
    port = add_port(server, "127.0.0.1:0", ident)
    await server.start()
    print(port, flush=True)
    k = 0
    while True:  # drain: the benchmark sends tags m0, m1, ...
        await box.get(0, f"m{k}", 3600)
        k += 1

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_pki(d, ["hospital_a", "hospital_b", "insurer", "dealer"], ["bench"])
    return d


@pytest.fixture(scope="module")
def receiver(pki_dir: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(pki_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _throughput(address: str, pki_dir: Path, total_mib: int) -> dict[str, float]:
    """Median MiB/s of GrpcTransport.send (one message) vs raw client streams of 1 MiB chunks:
    plain bytes counted and dropped (``raw``), plain bytes kept and joined into one message as
    any receiver must (``raw_keep``), and protobuf ``DeliverRequest`` chunks (``raw_proto``)."""
    ident = load_identity(pki_dir, "hospital_a")
    ch = aio_channel(address, ident)
    payload = np.random.default_rng(0).bytes(total_mib * MIB)
    transport = GrpcTransport(
        job_id="bench",
        party_id=0,
        party_names=("hospital_a", "hospital_b"),
        channels={1: ch},
        mailbox=JobMailbox("bench", 2),
        deadlines=RoundDeadlines(round_s=120),
    )
    raw = ch.stream_unary("/bench.Raw/Sink")
    raw_keep = ch.stream_unary("/bench.Raw/SinkKeep")
    raw_proto = ch.stream_unary(
        "/bench.Raw/SinkProto", request_serializer=peer_pb2.DeliverRequest.SerializeToString
    )

    async def chunks() -> AsyncIterator[bytes]:
        for off in range(0, len(payload), MIB):
            yield payload[off : off + MIB]

    async def proto_chunks() -> AsyncIterator[peer_pb2.DeliverRequest]:
        for i, off in enumerate(range(0, len(payload), MIB)):
            yield peer_pb2.DeliverRequest(
                job_id="bench",
                tag="x",
                chunk_index=i,
                total_length=len(payload),
                data=payload[off : off + MIB],
            )

    await raw(chunks(), timeout=120)  # warm-up (connection, TLS, flow-control window)
    times: dict[str, list[float]] = {"raw": [], "raw_keep": [], "raw_proto": [], "ours": []}
    for k in range(3):  # alternate and take medians: the machine is shared
        t0 = time.perf_counter()
        await raw(chunks(), timeout=120)
        times["raw"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await raw_keep(chunks(), timeout=120)
        times["raw_keep"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await raw_proto(proto_chunks(), timeout=120)
        times["raw_proto"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await transport.send(1, f"m{k}", payload)
        times["ours"].append(time.perf_counter() - t0)
    await ch.close(None)
    return {k: total_mib / float(np.median(v)) for k, v in times.items()}


def test_peer_transport_throughput_vs_raw_grpc(
    benchmark: Any, receiver: str, pki_dir: Path
) -> None:
    """GrpcTransport.send of a 64 MiB message vs a raw client stream of 64 x 1 MiB chunks."""
    out: dict[str, float] = {}

    def run() -> None:
        out.update(asyncio.run(_throughput(receiver, pki_dir, PAYLOAD_MIB)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio, floor = out["ours"] / out["raw"], out["ours"] / out["raw_proto"]
    keep = out["ours"] / out["raw_keep"]
    benchmark.extra_info.update(
        out, ratio_vs_raw=ratio, ratio_vs_raw_keep=keep, ratio_vs_raw_proto=floor
    )
    print(
        f"\npeer transport {out['ours']:.0f} MiB/s; raw gRPC byte stream, dropped "
        f"{out['raw']:.0f} MiB/s (ratio {ratio:.2f}); kept+joined {out['raw_keep']:.0f} MiB/s "
        f"(ratio {keep:.2f}); protobuf chunks {out['raw_proto']:.0f} MiB/s (ratio {floor:.2f})"
    )
    assert ratio > 0.1  # sanity only: goal >= 0.7 (see results_grpc.md); shared machine
    assert floor > 0.3  # sanity only: we stay close to protobuf chunking itself


def _mul_in_memory(n: int) -> float:
    spec = JobSpec(kind="bench_mul", parties=PARTIES, params={"n": n, "seed": 1})

    async def run() -> list[Any]:
        net = InMemoryNetwork(3)
        dealer = TrustedDealer(3)
        ctxs = [PartyContext(transport=t, triples=dealer) for t in net.transports]
        return list(
            await asyncio.gather(
                *(BenchMulKind().run(c, spec, LocalData({}), lambda p, f: None) for c in ctxs)
            )
        )

    t0 = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - t0


def _bench_cluster(directory: Path) -> tuple[Any, str]:
    from privcomp.demo import Cluster

    cluster = Cluster(directory)
    cluster.start(
        "coordinator",
        [
            "-v",
            "coordinator",
            "--pki",
            "pki",
            "--db",
            "jobs.db",
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            "coordinator.addr",
        ],
    )
    address = cluster.wait_file(directory / "coordinator.addr", "coordinator")
    for name in (*PARTIES, "dealer"):
        cfg = directory / f"{name}.toml"
        extra = (
            "allow_dealer = true\n"
            if name == "dealer"
            else 'allow_benchmarks = true\ntrusted_dealers = ["dealer"]\n'
        )
        cfg.write_text(
            f'name = "{name}"\nlisten = "127.0.0.1:0"\ncoordinator = "{address}"\n'
            f'pki_dir = "pki"\nheartbeat_s = 1.0\nround_timeout_s = 120\n{extra}'
        )
        cluster.start(name, ["-v", "worker", str(cfg), "--port-file", f"{name}.addr"])
    for name in (*PARTIES, "dealer"):
        cluster.wait_file(directory / f"{name}.addr", name)
    return cluster, address


def test_beaver_1e6_three_worker_processes(benchmark: Any, tmp_path: Path) -> None:
    """10^6 Beaver multiplications (dealer helper party) across 3 workers, end to end."""
    create_pki(tmp_path / "pki", [*PARTIES, "dealer"], ["bench"])
    cluster, address = _bench_cluster(tmp_path)
    out: dict[str, float] = {}
    try:
        with connect(address, pki_dir=tmp_path / "pki", analyst="bench") as fed:
            wait_parties(fed, (*PARTIES, "dealer"))
            spec = JobSpec(
                kind="bench_mul",
                parties=PARTIES,
                triple_source="dealer",
                params={"n": N_MUL, "seed": 3, "dealer": "dealer"},
                deadline_s=300,
            )

            def run() -> None:
                t0 = time.perf_counter()
                res = fed.submit(spec).result(timeout=300)
                out["grpc_s"] = time.perf_counter() - t0
                x0 = BenchMulKind.inputs(N_MUL, 3, 0).astype(np.int64)
                x1 = BenchMulKind.inputs(N_MUL, 3, 1).astype(np.int64)
                assert float(res["sum"]) == float(np.sum(x0 * x1))

            benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        cluster.stop()
    sent = [
        int(m)
        for p in PARTIES
        for m in re.findall(r"traffic: sent (\d+) bytes", (tmp_path / f"{p}.log").read_text())[-1:]
    ]
    mem_s = _mul_in_memory(N_MUL)
    info = {
        "grpc_s": out["grpc_s"],
        "grpc_elements_per_s": N_MUL / out["grpc_s"],
        "memory_s": mem_s,
        "memory_elements_per_s": N_MUL / mem_s,
        "bytes_sent_per_party": sent,
    }
    benchmark.extra_info.update(info)
    print(
        f"\n10^6 Beaver muls: gRPC 3 processes {out['grpc_s']:.2f} s "
        f"({N_MUL / out['grpc_s']:.3g}/s), in-memory {mem_s:.2f} s ({N_MUL / mem_s:.3g}/s); "
        f"bytes sent per party (excl. dealer) {sent}"
    )
    assert len(sent) == 3


def test_demo_job_wall_time_split(benchmark: Any, tmp_path: Path) -> None:
    """Set-up (PKI, processes, registration), protocol (submit → result), teardown."""
    out: dict[str, float] = {}

    def run() -> None:
        d = tmp_path / f"run{len(out)}"
        d.mkdir()
        t0 = time.perf_counter()
        create_pki(d / "pki", list(PARTIES), ["demo"])
        synthetic_data(d)
        cluster, address = start_cluster(d)
        try:
            with connect(address, pki_dir=d / "pki", analyst="demo") as fed:
                wait_parties(fed, PARTIES)
                t1 = time.perf_counter()
                res = fed.submit(demo_spec()).result(timeout=60)
                t2 = time.perf_counter()
                assert res["count"] == 720
        finally:
            cluster.stop()
        t3 = time.perf_counter()
        out.update(setup_s=t1 - t0, protocol_s=t2 - t1, teardown_s=t3 - t2)

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    print(
        f"\ndemo job: set-up {out['setup_s']:.2f} s, protocol {out['protocol_s']:.2f} s, "
        f"teardown {out['teardown_s']:.2f} s"
    )


# -- joint statistics over gRPC (pc.connect) next to pandas on the pooled plaintext ------------

STATS_COLS = [f"x{i}" for i in range(10)]


def _full() -> bool:
    return os.environ.get("PRIVCOMP_BENCH_FULL") == "1"


def _stats_rows(request: pytest.FixtureRequest) -> int:
    """10^6 rows per party with PRIVCOMP_BENCH_FULL=1, 10^5 timed, 10^4 in smoke mode."""
    if _full():
        return 10**6
    return 10**4 if request.config.getoption("benchmark_disable") else 10**5


def _stats_frames(n: int) -> list[pd.DataFrame]:
    gen = np.random.default_rng(2024)
    out = []
    for p in range(3):
        df = pd.DataFrame(gen.normal(50 + p, 10, (n, len(STATS_COLS))), columns=STATS_COLS)
        df["grp"] = gen.choice(["a", "b", "c", "d"], n)
        out.append(df)
    return out


@pytest.mark.parametrize("source", ["dealer", "he"])
def test_stats_describe_corr_groupby_vs_pandas(
    benchmark: Any, request: pytest.FixtureRequest, source: str
) -> None:
    """3 workers x n rows x 10 columns: describe() + corr() + groupby("grp").mean() over gRPC
    (``source``: the dealer helper or the default OT/Paillier source for the comparisons;
    result cache off) next to pandas on the pooled rows."""
    n = _stats_rows(request)
    frames = _stats_frames(n)
    pooled = pd.concat(frames, ignore_index=True)  # a central analyst would hold it: not timed
    data = {f"party{i}": {"d": f} for i, f in enumerate(frames)}
    rounds = 1 if request.config.getoption("benchmark_disable") else 3
    times: dict[str, list[float]] = {"grpc": [], "pandas": []}
    with (
        Deployment.start(data, dealer=True, file_format="parquet") as dep,
        dep.connect(triples=source, cache=False) as fed,
    ):
        t = fed.table("d")

        def run() -> None:
            for _ in range(rounds):  # alternate and take medians: the machine is shared
                t0 = time.perf_counter()
                got = (t.describe(), t.corr(), t.groupby("grp")[STATS_COLS].mean())
                times["grpc"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                want = (
                    pooled.describe(),
                    pooled[STATS_COLS].corr(),
                    pooled.groupby("grp")[STATS_COLS].mean(),
                )
                times["pandas"].append(time.perf_counter() - t0)
                d, wd = got[0].to_numpy(), want[0].to_numpy()
                np.testing.assert_allclose(d[:3], wd[:3], rtol=1e-9)
                np.testing.assert_array_equal(d[3:], wd[3:])  # exact order statistics
                np.testing.assert_allclose(got[1].to_numpy(), want[1].to_numpy(), rtol=1e-9)
                np.testing.assert_allclose(got[2].to_numpy(), want[2].to_numpy(), rtol=1e-9)

        benchmark.pedantic(run, rounds=1, iterations=1)
    grpc_s, pandas_s = float(np.median(times["grpc"])), float(np.median(times["pandas"]))
    benchmark.extra_info.update(
        rows_per_party=n, grpc_s=grpc_s, pandas_s=pandas_s, ratio=grpc_s / pandas_s, source=source
    )
    print(
        f"\nstats 3 x {n} rows x 10 cols ({source}): gRPC {grpc_s:.2f} s, pandas {pandas_s:.2f} s "
        f"(ratio {grpc_s / pandas_s:.2f}; medians of {rounds})"
    )


def _psi_keys(request: pytest.FixtureRequest) -> int:
    """10^6 keys per party with PRIVCOMP_BENCH_FULL=1, 10^5 timed, 2 x 10^3 in smoke mode."""
    if _full():
        return 10**6
    return 2_000 if request.config.getoption("benchmark_disable") else 10**5


def test_psi_join_two_workers(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """PSI join of n x n keys (n/2 shared) between two worker processes: ``len(join)``."""
    n = _psi_keys(request)
    gen = np.random.default_rng(7)
    left = pd.DataFrame({"id": np.arange(n) * 2, "a": gen.normal(size=n)})
    right = pd.DataFrame({"id": np.arange(n) + n, "b": gen.normal(size=n)})
    shared = len(np.intersect1d(left["id"], right["id"]))
    data = {"hospital": {"left": left}, "insurer": {"right": right}}
    out: dict[str, float] = {}
    with (
        Deployment.start(
            data, file_format="parquet", worker_options={"round_timeout_s": 1800}
        ) as dep,
        dep.connect(cache=False, deadline_s=3600) as fed,
    ):

        def run() -> None:
            t0 = time.perf_counter()
            joined = fed.table("left").join(fed.table("right"), on="id")
            assert len(joined) == shared
            out["grpc_s"] = time.perf_counter() - t0

        benchmark.pedantic(run, rounds=1, iterations=1)
    t0 = time.perf_counter()
    assert len(left.merge(right, on="id")) == shared
    out["pandas_merge_s"] = time.perf_counter() - t0
    benchmark.extra_info.update(keys_per_party=n, **out)
    print(
        f"\nPSI join {n} x {n} keys ({shared} shared), 2 worker processes: "
        f"{out['grpc_s']:.2f} s (pandas merge, no privacy: {out['pandas_merge_s']:.3f} s)"
    )


@pytest.mark.parametrize("source", ["dealer", "he"])
def test_vertical_join_corr_two_workers(
    benchmark: Any, request: pytest.FixtureRequest, source: str
) -> None:
    """PSI join of n x n keys (n/2 shared) between two workers, then ``corr()`` over 5 columns
    from each side (cross-party products: dealer-masked, or the default Paillier OLE), next to
    pandas."""
    n = _psi_keys(request)
    gen = np.random.default_rng(8)
    base = gen.normal(size=n)
    left = pd.DataFrame({f"l{i}": base * 1e5 + gen.normal(0, 3e5, n) for i in range(5)})
    left.insert(0, "id", np.arange(n) * 2)
    right = pd.DataFrame({f"r{i}": gen.normal(40, 1, n) for i in range(5)})
    right.insert(0, "id", np.arange(n) + n)
    right["r0"] += np.interp(right["id"], left["id"], base) * 2.0  # correlated across parties
    data = {"hospital": {"left": left}, "insurer": {"right": right}}
    out: dict[str, float] = {}
    with (
        Deployment.start(
            data, dealer=True, file_format="parquet", worker_options={"round_timeout_s": 1800}
        ) as dep,
        dep.connect(triples=source, cache=False, deadline_s=3600) as fed,
    ):
        joined = fed.table("left").join(fed.table("right"), on="id")

        def run() -> None:
            t0 = time.perf_counter()
            out["psi_s"] = float(len(joined))
            out["psi_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = joined.corr()
            out["corr_job_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            want = left.merge(right, on="id").drop(columns="id").corr()
            out["pandas_s"] = time.perf_counter() - t0
            np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)

        benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(keys_per_party=n, source=source, **out)
    print(
        f"\nvertical join ({source}) {n} x {n} keys: len(join) (PSI job) {out['psi_s']:.2f} s; "
        f"then corr() 5 x 5 columns (PSI reused; moments + products) {out['corr_job_s']:.2f} s; "
        f"pandas merge + corr {out['pandas_s']:.3f} s"
    )
