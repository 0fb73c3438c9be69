"""Runtime hardening: idempotency keys bound to the spec, and the per-job cap on pending peer
bytes in a worker's mailbox.

(1) A reused (owner, idempotency key) with the same spec returns the earlier job; with another
    spec it is refused (INVALID_ARGUMENT), also on a database written before the spec digest
    column existed (migrated on open).
(2) A peer sending more than ``max_pending_peer_bytes`` under tags nobody reads is refused with
    RESOURCE_EXHAUSTED at the crossing chunk, the job fails naming it, and the worker runs the
    next job to the correct result.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import pytest
from conftest import PARTIES, LoopThread

from privcomp.client import connect
from privcomp.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    PeerFailedError,
    ResourceLimitExceededError,
)
from privcomp.jobs.kinds import BenchMulKind
from privcomp.jobs.model import JobRecord, JobSpec
from privcomp.proto.v1 import peer_pb2, peer_pb2_grpc, worker_pb2, worker_pb2_grpc
from privcomp.rpc import serde
from privcomp.rpc.channel import CHUNK_SIZE, aio_channel
from privcomp.rpc.pki import COORDINATOR_IDENTITY, Identity
from privcomp.rpc.transport import GrpcTransport, JobMailbox, RoundDeadlines
from privcomp.services import server as srv
from privcomp.services.config import (
    CoordinatorConfig,
    WorkerConfig,
    read_mapping,
    worker_config_from_mapping,
)
from privcomp.services.coordinator import Party
from privcomp.services.jobstore import JobRepository, to_stored

MIB = 1 << 20


def _stats_spec(column: str = "cost") -> JobSpec:
    return JobSpec(kind="stats", parties=PARTIES, dataset="patients", params={"column": column})


# --- (1) idempotency key bound to the spec ------------------------------------------------------


def test_same_key_other_spec_is_refused_in_the_store(tmp_path: Path) -> None:
    repo = JobRepository(tmp_path / "jobs.db")
    rec = JobRecord(job_id="j1", spec=_stats_spec(), owner="analyst:x", idempotency_key="k")
    assert repo.insert(rec).job_id == "j1"
    assert repo.insert(replace(rec, job_id="j2")).job_id == "j1"  # same spec: same job
    other = replace(rec, job_id="j3", spec=_stats_spec("age"))
    with pytest.raises(IdempotencyConflictError, match="idempotency key") as err:
        repo.insert(other)
    assert "age" not in str(err.value)  # no spec contents
    assert "stats" not in str(err.value)
    # The key is scoped to its owner: another requester may use it for any spec.
    assert repo.insert(replace(other, owner="analyst:y")).job_id == "j3"
    # Without a key there is no binding at all.
    assert repo.insert(replace(other, job_id="j4", idempotency_key="")).job_id == "j4"
    assert sorted(r.job_id for r in repo.list()) == ["j1", "j3", "j4"]
    repo.close()


_OLD_SCHEMA = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    spec TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    failing_party TEXT NOT NULL DEFAULT '', phase TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    result TEXT
);
CREATE UNIQUE INDEX jobs_idem ON jobs(owner, idempotency_key) WHERE idempotency_key != '';
"""


def test_old_database_is_migrated(tmp_path: Path) -> None:
    """A database without the spec digest column gets it, filled from the stored specs."""
    db = tmp_path / "old.db"
    rec = JobRecord(job_id="old1", spec=_stats_spec(), owner="analyst:x", idempotency_key="k")
    row = to_stored(rec)
    con = sqlite3.connect(db)
    con.executescript(_OLD_SCHEMA)
    head = (row.job_id, row.owner, row.idempotency_key, row.spec_json, "SUCCEEDED")
    values = (*head, "", "", "", 1.0, 1.0, 1.0)
    con.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)", values)
    con.commit()
    con.close()
    repo = JobRepository(db)
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(jobs)")}
    assert "spec_sha256" in cols
    assert repo.get("old1").spec == rec.spec  # old rows still load
    assert repo.insert(replace(rec, job_id="new")).job_id == "old1"
    with pytest.raises(IdempotencyConflictError):
        repo.insert(replace(rec, job_id="new", spec=_stats_spec("age")))
    repo.close()
    repo2 = JobRepository(db)  # a second open does not migrate again
    assert repo2.insert(replace(rec, job_id="new2")).job_id == "old1"
    assert repo2.db.integrity_ok()
    repo2.close()


def test_submit_same_key_other_spec_is_invalid_argument(
    pki: Any, loop_thread: LoopThread, tmp_path: Path
) -> None:
    cfg = CoordinatorConfig(listen="127.0.0.1:0", pki_dir=pki[0], db_path=tmp_path / "j.db")
    run, coord, _ = loop_thread.run(srv.start_coordinator(cfg))
    try:
        for p in PARTIES:  # registered but unreachable: jobs fail at prepare, that's fine
            coord.parties[p] = Party(p, "127.0.0.1:9", "", {})
        fed = connect(f"127.0.0.1:{run.port}", pki_dir=pki[0], analyst="alice")
        spec: dict[str, Any] = {
            "kind": "stats",
            "parties": list(PARTIES),
            "dataset": "patients",
            "params": {"column": "cost"},
        }
        job = fed.submit(spec, idempotency_key="key-1")
        assert fed.submit(spec, idempotency_key="key-1").job_id == job.job_id
        before = fed.attempts
        other = {**spec, "params": {"column": "age"}}
        with pytest.raises(ConfigurationError, match=r"INVALID_ARGUMENT.*idempotency key"):
            fed.submit(other, idempotency_key="key-1")
        assert fed.attempts == before + 1  # INVALID_ARGUMENT is never retried
        assert len(coord.store.list()) == 1
        # Another analyst may use the same key for the other spec.
        fed_b = connect(f"127.0.0.1:{run.port}", pki_dir=pki[0], analyst="bob")
        assert fed_b.submit(other, idempotency_key="key-1").job_id != job.job_id
        fed.close()
        fed_b.close()
    finally:
        loop_thread.run(coord.shutdown())
        loop_thread.run(run.server.stop(None))
        coord.store.close()


# --- (2) cap on a job's pending peer bytes -------------------------------------------------------


async def test_mailbox_cap_counts_pending_bytes_only() -> None:
    box = JobMailbox("j", 2, max_pending_bytes=100, names=("a", "b"))
    box.deliver(1, "x", b"\x01" * 60)
    assert box.pending_bytes == 60
    assert await box.get(1, "x", 1.0) == b"\x01" * 60
    assert box.pending_bytes == 0  # consumed bytes no longer count
    box.deliver(1, "y", b"\x02" * 60)
    waiting = asyncio.ensure_future(box.get(1, "never-sent", 5.0))
    await asyncio.sleep(0)
    with pytest.raises(ResourceLimitExceededError, match="party b exceeded the cap of 100"):
        box.deliver(1, "z", b"\x03" * 41)
    with pytest.raises(PeerFailedError) as err:  # the job's pending receive fails, naming b
        await waiting
    assert err.value.party == "b"
    with pytest.raises(PeerFailedError):
        await box.get(1, "y", 1.0)
    with pytest.raises(ConfigurationError):
        JobMailbox("j", 2, max_pending_bytes=0)
    with pytest.raises(ConfigurationError, match="max_pending_peer_bytes"):
        WorkerConfig(name="a", coordinator="x:1", pki_dir=Path("."), max_pending_peer_bytes=-1)


def _bench_spec(n: int) -> JobSpec:
    return JobSpec(
        kind="bench_mul",
        parties=("bench_a", "bench_b"),
        params={"n": n, "seed": 3, "dealer": "dealer"},
        triple_source="dealer",
        deadline_s=20.0,
    )


async def _prepare(
    stub: worker_pb2_grpc.WorkerServiceStub, job_id: str, spec: JobSpec, peers: list[Any]
) -> None:
    resp = await stub.PrepareJob(
        worker_pb2.PrepareJobRequest(
            job_id=job_id,
            spec=serde.job_spec_to_proto(spec),
            peers=peers,
            deadline_unix=time.time() + spec.deadline_s,
            requester="analyst:alice",
        ),
        timeout=5,
    )
    assert resp.accepted, resp.reason


async def _run(stub: worker_pb2_grpc.WorkerServiceStub, job_id: str) -> Any:
    last = None
    async for ev in stub.RunJob(worker_pb2.RunJobRequest(job_id=job_id), timeout=30):
        last = ev
    return last


@pytest.mark.timeout(60)
async def test_peer_flooding_unread_tags_fails_the_job_and_worker_keeps_serving(
    pki: tuple[Path, dict[str, Identity]],
) -> None:
    pki_dir, ids = pki
    cap = 1 * MIB
    names = ("bench_a", "bench_b", "dealer")
    started = []
    for name in names:
        cfg = WorkerConfig(
            name=name,
            coordinator="127.0.0.1:9",
            pki_dir=pki_dir,
            allow_benchmarks=True,
            allow_dealer=name == "dealer",
            trusted_dealers=() if name == "dealer" else ("dealer",),
            round_timeout_s=10.0,
            max_pending_peer_bytes=cap if name == "bench_a" else 2 << 30,
        )
        started.append(await srv.start_worker(cfg))
    addrs = [f"127.0.0.1:{run.port}" for run, _ in started]
    peers = [worker_pb2.JobPeer(name=n, address=a) for n, a in zip(names, addrs, strict=True)]
    coord_chs = [aio_channel(a, ids[COORDINATOR_IDENTITY]) for a in addrs]
    stubs = [worker_pb2_grpc.WorkerServiceStub(ch) for ch in coord_chs]
    flood_ch = aio_channel(addrs[0], ids["bench_b"])  # bench_b's own certificate
    try:
        # Job 1: bench_a waits for bench_b's input share; bench_b floods unread tags instead.
        spec = _bench_spec(8)
        await _prepare(stubs[0], "flood1", spec, peers)
        await _prepare(stubs[1], "flood1", spec, peers)
        run_a = asyncio.create_task(_run(stubs[0], "flood1"))
        box = started[0][1].jobs["flood1"].mailbox
        rogue = GrpcTransport(
            job_id="flood1",
            party_id=1,
            party_names=names,
            channels={0: flood_ch},
            mailbox=JobMailbox("flood1", 3),
            deadlines=RoundDeadlines(round_s=5.0),
            n_parties=2,
        )
        await rogue.send(0, "junk-0", b"\x5a" * (600 * 1024))  # under the cap: accepted
        assert box.pending_bytes == 600 * 1024
        with pytest.raises(PeerFailedError) as sent:
            await rogue.send(0, "junk-1", b"\x5a" * (600 * 1024))  # crosses it
        cause = sent.value.__cause__
        assert isinstance(cause, grpc.aio.AioRpcError)
        assert cause.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, cause
        assert box.pending_bytes == 0  # nothing of the refused message (or the rest) kept
        final = await run_a
        assert final.WhichOneof("event") == "failure"
        assert final.failure.failing_party == "bench_b"
        assert "exceeded the cap" in final.failure.reason
        assert "flood1" not in started[0][1].jobs  # job state dropped on the worker
        await stubs[1].CancelJob(
            worker_pb2.WorkerCancelJobRequest(job_id="flood1", reason="test"), timeout=5
        )

        # A raw 8 MiB stream is refused at the chunk crossing the cap; nothing of it is kept.
        await _prepare(stubs[0], "flood2", spec, peers)
        box2 = started[0][1].jobs["flood2"].mailbox

        async def chunks() -> AsyncIterator[peer_pb2.DeliverRequest]:
            for i in range(8):
                yield peer_pb2.DeliverRequest(
                    job_id="flood2", tag="t", sender=1, chunk_index=i,
                    total_length=8 * CHUNK_SIZE, data=b"\x00" * CHUNK_SIZE,
                )  # fmt: skip

        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await peer_pb2_grpc.PeerServiceStub(flood_ch).Deliver(chunks(), timeout=10)
        # RESOURCE_EXHAUSTED; with megabytes still in flight the client may instead see the
        # stream reset before the trailers (INTERNAL), as in test_overload's T19c.
        assert raw.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
        assert box2.pending_bytes == 0
        with pytest.raises(PeerFailedError, match="party bench_b exceeded the cap"):
            await box2.get(1, "t", 0.1)
        await stubs[0].CancelJob(
            worker_pb2.WorkerCancelJobRequest(job_id="flood2", reason="test"), timeout=5
        )

        # Job 3: a legitimate job on the same workers runs to the numpy answer.
        n = 2000
        spec3 = _bench_spec(n)
        for s in stubs:
            await _prepare(s, "ok3", spec3, peers)
        finals = await asyncio.gather(*(_run(s, "ok3") for s in stubs))
        assert [f.WhichOneof("event") for f in finals] == ["result"] * 3, finals
        got = serde.result_from_proto(finals[0].result)["sum"]
        x, y = (BenchMulKind.inputs(n, 3, p).astype(np.int64) for p in (0, 1))
        assert float(got) == float(np.sum(x * y))  # small integers: exact
    finally:
        for ch in (*coord_chs, flood_ch):
            await ch.close(None)
        for run, _ in started:
            await run.server.stop(None)


@pytest.mark.timeout(60)
async def test_data_worker_refuses_dealer_jobs_unless_it_trusts_that_dealer(
    pki: tuple[Path, dict[str, Identity]],
) -> None:
    """security.md R12: dealer mode is not reachable with a default worker configuration."""
    pki_dir, ids = pki
    cfgs = [
        WorkerConfig(
            name="bench_a", coordinator="127.0.0.1:9", pki_dir=pki_dir, allow_benchmarks=True
        ),
        WorkerConfig(
            name="bench_b",
            coordinator="127.0.0.1:9",
            pki_dir=pki_dir,
            allow_benchmarks=True,
            trusted_dealers=("dealer",),
        ),
    ]
    started = [await srv.start_worker(cfg) for cfg in cfgs]
    addrs = [f"127.0.0.1:{run.port}" for run, _ in started]
    peers = [
        worker_pb2.JobPeer(name=n, address=a)
        for n, a in zip(("bench_a", "bench_b", "dealer"), [*addrs, "127.0.0.1:9"], strict=True)
    ]
    chans = [aio_channel(a, ids[COORDINATOR_IDENTITY]) for a in addrs]
    try:
        for i, stub in enumerate(worker_pb2_grpc.WorkerServiceStub(ch) for ch in chans):
            resp = await stub.PrepareJob(
                worker_pb2.PrepareJobRequest(
                    job_id=f"d{i}",
                    spec=serde.job_spec_to_proto(_bench_spec(8)),
                    peers=peers,
                    deadline_unix=time.time() + 20,
                    requester="analyst:alice",
                ),
                timeout=5,
            )
            if i == 0:
                assert not resp.accepted
                assert "does not accept dealer 'dealer'" in resp.reason
            else:
                assert resp.accepted, resp.reason
                await stub.CancelJob(
                    worker_pb2.WorkerCancelJobRequest(job_id="d1", reason="test"), timeout=5
                )
    finally:
        for ch in chans:
            await ch.close(None)
        for run, _ in started:
            await run.server.stop(None)
    bad = {"name": "x", "coordinator": "a:1", "trusted_dealers": "dealer"}
    with pytest.raises(ConfigurationError, match="trusted_dealers"):
        worker_config_from_mapping(bad, Path("."))
    with pytest.raises(
        ConfigurationError, match="unknown worker config keys: \\['trusted_dealer'\\]"
    ):
        worker_config_from_mapping(
            {"name": "x", "coordinator": "a:1", "trusted_dealer": ["d"]}, Path(".")
        )
    example = Path(__file__).parents[2] / "examples" / "worker_hospital_a.toml"
    cfg = worker_config_from_mapping(read_mapping(example), example.parent)
    assert cfg.trusted_dealers == ()
    assert cfg.psi_workers == 0
    assert cfg.policy.k == 11
    assert cfg.datasets["patients"].path.name == "patients.parquet"
    with pytest.raises(ConfigurationError, match="psi_workers"):
        worker_config_from_mapping(
            {"name": "x", "coordinator": "a:1", "psi_workers": -1}, Path(".")
        )
