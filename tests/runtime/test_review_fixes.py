"""Regression tests of the runtime security review: peer identity pinning, no exception text
(which may quote data) in failure reasons, no job left RUNNING, no leaked demo processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509

from privcomp import demo
from privcomp.errors import ConfigurationError
from privcomp.jobs.kinds import LocalData
from privcomp.jobs.model import JobRecord, JobSpec, JobState
from privcomp.proto.v1 import health_pb2, health_pb2_grpc, worker_pb2
from privcomp.rpc import serde
from privcomp.rpc.channel import add_port, aio_channel, peer_options
from privcomp.rpc.pki import Identity, create_pki
from privcomp.rpc.transport import JobMailbox
from privcomp.services.config import CoordinatorConfig, WorkerConfig
from privcomp.services.coordinator import Coordinator
from privcomp.services.health import HealthServicer
from privcomp.services.jobstore import JobRepository
from privcomp.services.worker import WorkerJob, WorkerRuntime

#: Stand-in for a value that must never appear in a failure reason.
SECRET = "987654321.123"


def _spec() -> JobSpec:
    return JobSpec.from_dict(
        {
            "kind": "stats",
            "parties": ["hospital_a", "hospital_b"],
            "dataset": "patients",
            "params": {"column": "cost"},
        }
    )


async def _health_status(server_identity: Identity, client: Identity, expected: str) -> str:
    """Serve Health with ``server_identity``'s certificate; call it as a peer channel that
    expects party ``expected``. Returns the status name or the RPC error code name."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = add_port(server, "127.0.0.1:0", server_identity)
    await server.start()
    ch = aio_channel(f"127.0.0.1:{port}", client, extra_options=peer_options(expected))
    try:
        resp = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5.0
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    finally:
        await ch.close(grace=None)
        await server.stop(None)


async def test_peer_channel_refuses_another_identity_at_the_party_address(
    pki: tuple[Path, dict[str, Identity]],
) -> None:
    # Every certificate names 127.0.0.1: without pinning, a coordinator (or any federation
    # member) listening at the address it advertised for hospital_b would receive the shares.
    _, ids = pki
    me = ids["hospital_a"]
    assert await _health_status(ids["hospital_b"], me, "hospital_b") == "SERVING"
    assert await _health_status(ids["coordinator"], me, "hospital_b") == "UNAVAILABLE"
    assert await _health_status(ids["insurer"], me, "hospital_b") == "UNAVAILABLE"


def test_party_certificates_name_the_party(pki: tuple[Path, dict[str, Identity]]) -> None:
    _, ids = pki
    cert = x509.load_pem_x509_certificate(ids["hospital_b"].cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "hospital_b" in sans.get_values_for_type(x509.DNSName)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)


def test_create_pki_refuses_party_names_that_cannot_be_pinned(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="party names"):
        create_pki(tmp_path, ["hospital a"], [])
    with pytest.raises(ConfigurationError, match="party names"):
        create_pki(tmp_path / "x", ["a:b"], [])
    # Every certificate names localhost; TLS name matching ignores case.
    with pytest.raises(ConfigurationError, match="party names"):
        create_pki(tmp_path / "y", ["LocalHost"], [])
    with pytest.raises(ConfigurationError, match="ignoring case"):
        create_pki(tmp_path / "z", ["bank", "Bank"], [])


def _runtime(tmp_path: Path) -> WorkerRuntime:
    cfg = WorkerConfig(name="hospital_a", coordinator="127.0.0.1:1", pki_dir=tmp_path)
    return WorkerRuntime(cfg, None)


async def test_worker_unexpected_error_reports_only_its_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path)
    job = WorkerJob(
        job_id="j1",
        spec=_spec(),
        names=("hospital_a", "hospital_b"),
        index=0,
        deadline_unix=time.time() + 3600.0,
        data=LocalData(columns={}),
        mailbox=JobMailbox("j1", 2),
    )

    async def boom(*_: Any) -> Any:
        raise RuntimeError(f"cannot compare {SECRET}")

    monkeypatch.setattr(runtime, "_context", lambda *_: object())
    monkeypatch.setattr(runtime, "_released", boom)
    # Before the fix a RuntimeError escaped _execute: gRPC then sends "Unexpected ...: <text>".
    resp = await runtime._execute(job, asyncio.Queue())
    assert resp.WhichOneof("event") == "failure"
    assert resp.failure.reason == "internal error (RuntimeError)"
    assert resp.failure.failing_party == "hospital_a"
    assert SECRET not in str(resp)


async def test_worker_prepare_unexpected_error_is_a_refusal_without_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(tmp_path)

    def boom(_: Any) -> Any:
        raise ValueError(f"could not convert string to float: '{SECRET}'")

    monkeypatch.setattr(runtime, "_prepare", boom)
    req = worker_pb2.PrepareJobRequest(job_id="j2", spec=serde.job_spec_to_proto(_spec()))
    resp = await runtime.PrepareJob(req, None)
    assert not resp.accepted
    assert "internal error (ValueError)" in resp.reason
    assert SECRET not in resp.reason
    assert "j2" not in runtime.jobs


async def test_coordinator_job_never_stays_running_on_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobRepository(tmp_path / "jobs.db")
    coord = Coordinator(
        CoordinatorConfig(pki_dir=tmp_path, db_path=tmp_path / "jobs.db"),
        None,
        store,
        lambda _: "analyst:alice",
    )

    async def prepared(*_: Any) -> None:
        return None

    async def boom(*_: Any) -> Any:
        raise ValueError(f"malformed result {SECRET}")

    monkeypatch.setattr(coord, "_prepare", prepared)
    monkeypatch.setattr(coord, "_gather_runs", boom)
    rec = store.insert(JobRecord(job_id="j3", spec=_spec(), owner="analyst:alice"))
    try:
        await coord._drive(rec)
        final = store.get("j3")
        assert final.state == JobState.FAILED
        assert final.reason == "internal error (ValueError)"
        assert SECRET not in final.reason
    finally:
        store.close()


def test_start_cluster_stops_its_processes_when_startup_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_pki(tmp_path / "pki", list(demo.PARTIES), [demo.ANALYST])
    stopped: list[demo.Cluster] = []
    original_stop = demo.Cluster.stop

    def record_stop(self: demo.Cluster, timeout: float = 8.0) -> None:
        stopped.append(self)
        original_stop(self, timeout)

    def broken_config(*_: Any) -> Path:
        raise ConfigurationError("cannot write worker config")

    monkeypatch.setattr(demo.Cluster, "stop", record_stop)
    monkeypatch.setattr(demo, "_worker_config", broken_config)
    with pytest.raises(ConfigurationError):
        demo.start_cluster(tmp_path)
    assert len(stopped) == 1
    procs = stopped[0].procs
    assert set(procs) == {"coordinator"}
    assert all(p.poll() is not None for p in procs.values())
