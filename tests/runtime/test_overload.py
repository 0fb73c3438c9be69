"""T19: resource limits and overload of the gRPC runtime (servers on 127.0.0.1 port 0).

(a) A request of the receive cap + 1 byte and one of 5 MiB to the coordinator → RESOURCE_EXHAUSTED
    before any handler runs, and the server keeps serving.
(b) 100 concurrent SubmitJob plus 200 concurrent status calls against a real federation (separate
    processes, ``maximum_concurrent_rpcs=256``): every call is OK or RESOURCE_EXHAUSTED, nothing
    crashes, every accepted job finishes with the numpy answer, health stays SERVING.
(c) A peer stream claiming a 10 GiB message: the receiver does not allocate the claimed size
    (the stream is refused once it ends short, RSS grows < 50 MB), and — the T19(c) requirement,
    currently a reported bug — the claim itself should be refused at the first chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import psutil
import pytest
from conftest import PARTIES, LoopThread, Procs, wait_parties, write_party_data

from privcomp.client import JobState, connect
from privcomp.jobs.model import JobSpec
from privcomp.proto.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
)
from privcomp.rpc import serde
from privcomp.rpc.auth import AuthInterceptor
from privcomp.rpc.channel import (
    CHUNK_SIZE,
    MAX_MESSAGE_BYTES,
    add_port,
    aio_channel,
    channel_credentials,
    client_options,
    server_options,
)
from privcomp.rpc.pki import Identity
from privcomp.rpc.transport import JobMailbox
from privcomp.services import server as srv
from privcomp.services.config import CoordinatorConfig
from privcomp.services.peer import MailboxEntry, PeerServicer
from privcomp.services.server import WORKER_RULES

COORD = "/privcomp.proto.v1.CoordinatorService/"
SERVING = health_pb2.HealthCheckResponse.SERVING


def _channel(address: str, ident: Identity, unlimited_send: bool = False) -> grpc.Channel:
    opts: list[tuple[str, Any]] = list(client_options())
    if unlimited_send:  # the client must be able to send what the server has to refuse
        opts.append(("grpc.max_send_message_length", -1))
    return grpc.secure_channel(address, channel_credentials(ident), options=opts)


def _health(ch: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=3).status)


# --- (a) oversized requests ------------------------------------------------------------------


@pytest.fixture
def coordinator(
    pki: tuple[Path, dict[str, Identity]], loop_thread: LoopThread, tmp_path: Path
) -> Iterator[tuple[str, Any]]:
    """An in-process coordinator on 127.0.0.1:0; yields (address, Coordinator)."""
    cfg = CoordinatorConfig(listen="127.0.0.1:0", pki_dir=pki[0], db_path=tmp_path / "j.db")
    run, coord, _ = loop_thread.run(srv.start_coordinator(cfg))
    try:
        yield f"127.0.0.1:{run.port}", coord
    finally:
        loop_thread.run(run.server.stop(None))


def _submit_raw(ch: grpc.Channel, token: str, payload: bytes) -> str:
    try:
        call: Any = ch.unary_unary(COORD + "SubmitJob")  # raw bytes in, raw bytes out
        call(payload, timeout=5, metadata=(("authorization", f"Bearer {token}"),))
        return "OK"
    except grpc.RpcError as exc:
        return str(exc.code().name)


def _submit_request(size: int) -> bytes:
    """A well-formed SubmitJobRequest of exactly ``size`` serialized bytes."""
    for key_len in range(4):  # a varint length boundary may skip ``size``: pad elsewhere
        pad = max(0, size - 64)
        for _ in range(8):
            spec = common_pb2.JobSpec(kind="stats", parties=["a", "b"], params_json="x" * pad)
            req = coordinator_pb2.SubmitJobRequest(spec=spec, idempotency_key="k" * key_len)
            data = req.SerializeToString()
            if len(data) == size:
                return data
            pad += size - len(data)
    raise AssertionError(f"cannot build a request of {size} bytes")


@pytest.mark.timeout(20)
def test_t19a_oversized_request_is_refused_and_server_keeps_serving(
    coordinator: tuple[str, Any], pki: tuple[Path, dict[str, Identity]]
) -> None:
    address, coord = coordinator
    alice = pki[1]["analyst:alice"]
    ch = _channel(address, alice, unlimited_send=True)
    try:
        before = coord.handled
        t0 = time.monotonic()
        assert _submit_raw(ch, alice.token, _submit_request(MAX_MESSAGE_BYTES + 1)) == (
            "RESOURCE_EXHAUSTED"
        )
        assert _submit_raw(ch, alice.token, b"\x0a" + b"\xff" * (5 << 20)) == "RESOURCE_EXHAUSTED"
        assert time.monotonic() - t0 < 10
        assert coord.handled == before  # refused by gRPC before the handler ran
        # At the cap the message is read and refused by privcomp's own validation instead.
        assert _submit_raw(ch, alice.token, _submit_request(MAX_MESSAGE_BYTES)) == (
            "INVALID_ARGUMENT"
        )
        assert coord.handled == before + 1
        assert _health(ch) == SERVING
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(ch)
        md = (("authorization", f"Bearer {alice.token}"),)
        stub.ListParties(coordinator_pb2.ListPartiesRequest(), timeout=3, metadata=md)
    finally:
        ch.close()


# --- (b) concurrency ---------------------------------------------------------------------------

N_JOBS = 100
N_STATUS = 200


def _stats_spec(deadline: float) -> dict[str, Any]:
    return {
        "kind": "stats",
        "parties": list(PARTIES),
        "dataset": "patients",
        "params": {"column": "cost"},
        "deadline_s": deadline,
    }


def _check_stats(res: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> None:
    allc = np.concatenate([data[p] for p in PARTIES])
    assert res["count"] == allc.size
    np.testing.assert_allclose(res["sum"], allc.sum(), rtol=1e-12)
    np.testing.assert_allclose(res["mean"], allc.mean(), rtol=1e-12)
    np.testing.assert_allclose(res["var"], allc.var(ddof=1), rtol=1e-10)


@pytest.mark.timeout(60)
def test_t19b_concurrent_submit_and_status_flood(
    procs: Procs, pki: tuple[Path, dict[str, Identity]]
) -> None:
    data = write_party_data(procs.directory)
    address = procs.start_coordinator(pki[0])
    for p in PARTIES:
        procs.start_worker(p, address, pki[0], round_timeout_s=15)
    fed = connect(address, pki_dir=pki[0], analyst="alice")
    wait_parties(fed, PARTIES)
    alice = pki[1]["analyst:alice"]
    md = (("authorization", f"Bearer {alice.token}"),)
    spec = serde.job_spec_to_proto(JobSpec(**_stats_spec(deadline=30.0)))
    chans = [_channel(address, alice) for _ in range(4)]  # 4 HTTP/2 connections
    stubs = [coordinator_pb2_grpc.CoordinatorServiceStub(c) for c in chans]
    t0 = time.monotonic()
    try:
        futures: list[tuple[str, Any]] = []
        for i in range(max(N_JOBS, N_STATUS)):
            stub = stubs[i % len(stubs)]
            if i < N_JOBS:
                req = coordinator_pb2.SubmitJobRequest(spec=spec, idempotency_key=f"flood-{i}")
                futures.append(("submit", stub.SubmitJob.future(req, timeout=15, metadata=md)))
            if i < N_STATUS:
                call = stub.ListJobs if i % 2 else stub.ListParties
                req2: Any = (
                    coordinator_pb2.ListJobsRequest(limit=50)
                    if i % 2
                    else coordinator_pb2.ListPartiesRequest()
                )
                futures.append(("status", call.future(req2, timeout=15, metadata=md)))
        codes: dict[str, int] = {}
        accepted: list[str] = []
        for what, fut in futures:
            try:
                resp = fut.result()
                code = "OK"
                if what == "submit":
                    assert resp.created
                    accepted.append(resp.status.job_id)
            except grpc.RpcError as exc:
                code = exc.code().name
            codes[code] = codes.get(code, 0) + 1
        submit_s = time.monotonic() - t0
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert _health(chans[0]) == SERVING
        assert accepted, codes
        # Every accepted job finishes, with the plaintext answer; the workers survive.
        states: dict[str, int] = {}
        for job_id in accepted:
            info = fed.job(job_id).watch(progress=False, timeout=40)
            states[info.state.value] = states.get(info.state.value, 0) + 1
            if info.state == JobState.SUCCEEDED:
                _check_stats(fed.result(job_id), data)
            else:
                assert info.state == JobState.FAILED, info
                assert info.reason, info
        total_s = time.monotonic() - t0
        print(
            f"T19b codes {codes}, job states {states}, submit {submit_s:.1f} s, "
            f"all done {total_s:.1f} s"
        )
        assert states.get("SUCCEEDED", 0) == len(accepted), states
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited"
        assert _health(chans[0]) == SERVING
        after = fed.submit(_stats_spec(deadline=30.0)).watch(progress=False, timeout=30)
        assert after.state == JobState.SUCCEEDED, after
    finally:
        for c in chans:
            c.close()
        fed.close()


class DelayListParties(grpc.aio.ServerInterceptor):
    """Test-only: holds every ListParties call for ``delay`` s so calls pile up."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.endswith("/ListParties"):
            await asyncio.sleep(self.delay)
        return await continuation(details)


@pytest.mark.timeout(30)
def test_t19b_excess_concurrent_calls_get_resource_exhausted(
    pki: tuple[Path, dict[str, Identity]], loop_thread: LoopThread, tmp_path: Path
) -> None:
    """300 calls held in flight at once against the cap of 256: the excess is refused cleanly."""
    cfg = CoordinatorConfig(listen="127.0.0.1:0", pki_dir=pki[0], db_path=tmp_path / "j.db")
    run, coord, _ = loop_thread.run(
        srv.start_coordinator(cfg, interceptors=(DelayListParties(2.0),))
    )
    address = f"127.0.0.1:{run.port}"
    alice = pki[1]["analyst:alice"]
    md = (("authorization", f"Bearer {alice.token}"),)
    chans = [_channel(address, alice) for _ in range(4)]
    try:
        stubs = [coordinator_pb2_grpc.CoordinatorServiceStub(c) for c in chans]
        for c in chans:  # connect first, so the flood arrives together
            grpc.channel_ready_future(c).result(timeout=5)
        t0 = time.monotonic()
        futs = [
            stubs[i % 4].ListParties.future(
                coordinator_pb2.ListPartiesRequest(), timeout=15, metadata=md
            )
            for i in range(300)
        ]
        codes: dict[str, int] = {}
        for f in futs:
            try:
                f.result()
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            codes[code] = codes.get(code, 0) + 1
        took = time.monotonic() - t0
        print(f"T19b cap: {codes} in {took:.1f} s")
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert codes.get("RESOURCE_EXHAUSTED", 0) >= 1, codes  # the cap is really configured
        assert codes.get("OK", 0) >= 1, codes
        assert coord.handled == codes["OK"]  # refused calls never reached the handler
        # Once the burst is over the server serves again at once.
        assert _health(chans[0]) == SERVING
        stubs[0].ListJobs(coordinator_pb2.ListJobsRequest(), timeout=3, metadata=md)
    finally:
        for c in chans:
            c.close()
        loop_thread.run(run.server.stop(None))


# --- (c) claimed stream length -----------------------------------------------------------------


class CountingPeerServicer(PeerServicer):
    """The worker's PeerServicer, counting the chunks it pulls from each stream."""

    def __init__(self, entry: MailboxEntry) -> None:
        super().__init__(lambda job: entry if job == "job1" else None)
        self.pulled = 0

    async def Deliver(self, request_iterator: Any, context: Any) -> peer_pb2.DeliverResponse:
        async def counted() -> AsyncIterator[peer_pb2.DeliverRequest]:
            async for chunk in request_iterator:
                self.pulled += 1
                yield chunk

        return await super().Deliver(counted(), context)


async def _claim(
    ids: dict[str, Identity], claimed: int, chunks: int
) -> tuple[str, int, int, JobMailbox, float]:
    """hospital_b streams ``chunks`` 1 MiB chunks claiming ``claimed`` bytes to hospital_a."""
    names = ("hospital_a", "hospital_b")
    box = JobMailbox("job1", 2)
    servicer = CountingPeerServicer(MailboxEntry(box, names))
    server = grpc.aio.server(
        interceptors=(AuthInterceptor(WORKER_RULES),), options=server_options()
    )
    peer_pb2_grpc.add_PeerServiceServicer_to_server(servicer, server)
    port = add_port(server, "127.0.0.1:0", ids["hospital_a"])
    await server.start()
    ch = aio_channel(f"127.0.0.1:{port}", ids["hospital_b"])
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    block = b"\x5a" * CHUNK_SIZE

    async def stream() -> AsyncIterator[peer_pb2.DeliverRequest]:
        for i in range(chunks):
            yield peer_pb2.DeliverRequest(
                job_id="job1", tag="t", sender=1, chunk_index=i, total_length=claimed, data=block
            )

    t0 = time.monotonic()
    try:
        try:
            await peer_pb2_grpc.PeerServiceStub(ch).Deliver(stream(), timeout=15)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        took = time.monotonic() - t0
        grew = proc.memory_info().rss - rss0
        pulled = servicer.pulled
        # The server still serves: a legitimate one-chunk message goes through.

        async def ok() -> AsyncIterator[peer_pb2.DeliverRequest]:
            yield peer_pb2.DeliverRequest(
                job_id="job1", tag="ok", sender=1, total_length=3, data=b"abc"
            )

        await peer_pb2_grpc.PeerServiceStub(ch).Deliver(ok(), timeout=5)
        assert await box.get(1, "ok", 2.0) == b"abc"
        return code, pulled, grew, box, took
    finally:
        await ch.close(None)
        await server.stop(None)


@pytest.mark.timeout(20)
async def test_t19c_claimed_huge_length_is_not_allocated(
    pki: tuple[Path, dict[str, Identity]],
) -> None:
    """The declared size is never trusted for allocation: a 10 GiB claim costs what was sent."""
    code, pulled, grew, box, took = await _claim(pki[1], claimed=10 * 2**30, chunks=4)
    print(
        f"T19c short claim: {code}, pulled {pulled} chunks, RSS +{grew / 2**20:.1f} MiB, "
        f"{took:.2f} s"
    )
    assert code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    assert grew < 50 * 2**20
    assert took < 5
    with pytest.raises(TimeoutError):  # nothing of the lying stream reached the mailbox
        await box.get(1, "t", 0.05)


@pytest.mark.timeout(20)
async def test_t19c_huge_claim_is_refused_at_the_first_chunk(
    pki: tuple[Path, dict[str, Identity]],
) -> None:
    code, pulled, grew, _, took = await _claim(pki[1], claimed=10 * 2**30, chunks=48)
    print(
        f"T19c long claim: {code}, pulled {pulled} chunks, RSS +{grew / 2**20:.1f} MiB, "
        f"{took:.2f} s"
    )
    # The server refuses (INVALID_ARGUMENT) at the first chunk while the client still has
    # megabytes in flight; under load the client may see the stream reset before the
    # trailers and report INTERNAL. What matters is that nothing beyond a chunk or two was
    # pulled and that the server keeps serving (checked in _claim).
    assert code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL")
    assert pulled <= 2, f"the receiver buffered {pulled} MiB of a 10 GiB claim"
