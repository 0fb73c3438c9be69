"""mTLS + token matrix (T18), malformed input (T17a), no pickle (T16), deadlines (T25) on
in-process servers bound to 127.0.0.1 port 0."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import LoopThread

from privcomp.errors import ConfigurationError, DeadlineExceededError
from privcomp.proto.v1 import (
    coordinator_pb2,
    coordinator_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
    peer_pb2,
)
from privcomp.rpc.channel import add_port, channel_credentials, client_options
from privcomp.rpc.client import Federation
from privcomp.rpc.pki import Identity, create_pki
from privcomp.services import server as srv
from privcomp.services.config import CoordinatorConfig, WorkerConfig

COORD = "/privcomp.proto.v1.CoordinatorService/"
WORKER = "/privcomp.proto.v1.WorkerService/"
PEER = "/privcomp.proto.v1.PeerService/"


@pytest.fixture
def coordinator(
    pki: tuple[Path, dict[str, Identity]], loop_thread: LoopThread, tmp_path: Path
) -> Iterator[tuple[str, Any]]:
    """An in-process coordinator; yields (address, Coordinator)."""
    cfg = CoordinatorConfig(listen="127.0.0.1:0", pki_dir=pki[0], db_path=tmp_path / "j.db")
    run, coord, _ = loop_thread.run(srv.start_coordinator(cfg))
    try:
        yield f"127.0.0.1:{run.port}", coord
    finally:
        loop_thread.run(run.server.stop(None))


def _chan(
    address: str, ident: Identity | None = None, roots: bytes | None = None, plaintext: bool = False
) -> grpc.Channel:
    if plaintext:
        return grpc.insecure_channel(address)
    if ident is None:
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
    else:
        creds = channel_credentials(ident)
    return grpc.secure_channel(address, creds, options=client_options())


def _call(ch: grpc.Channel, token: str | None, method: str = "ListParties") -> str:
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(ch)
    md = (("authorization", f"Bearer {token}"),) if token is not None else None
    req: Any = {
        "ListParties": coordinator_pb2.ListPartiesRequest(),
        "RegisterParty": coordinator_pb2.RegisterPartyRequest(
            name="hospital_a", address="127.0.0.1:1"
        ),
    }[method]
    try:
        getattr(stub, method)(req, timeout=3, metadata=md)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name
    finally:
        ch.close()


def test_t18_authentication_matrix(
    coordinator: tuple[str, Any], pki: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    address, coord = coordinator
    ids = pki[1]
    alice, bob = ids["analyst:alice"], ids["analyst:bob"]
    hosp, insurer = ids["hospital_a"], ids["insurer"]
    rogue = create_pki(tmp_path / "rogue", ["x"], ["alice"])["analyst:alice"]
    negatives = [
        ("valid cert, no token", _call(_chan(address, alice), None), "UNAUTHENTICATED"),
        ("valid cert, wrong token", _call(_chan(address, alice), "nope"), "UNAUTHENTICATED"),
        ("no client cert", _call(_chan(address, roots=alice.ca_pem), alice.token), "UNAVAILABLE"),
        ("rogue-CA cert", _call(_chan(address, rogue), rogue.token), "UNAVAILABLE"),
        ("plaintext", _call(_chan(address, plaintext=True), alice.token), "UNAVAILABLE"),
        (
            "party token over another party's cert",
            _call(_chan(address, insurer), hosp.token, "RegisterParty"),
            "PERMISSION_DENIED",
        ),
        (
            "analyst token over another analyst's cert",
            _call(_chan(address, alice), bob.token),
            "PERMISSION_DENIED",
        ),
        (
            "party calling an analyst method",
            _call(_chan(address, hosp), hosp.token),
            "PERMISSION_DENIED",
        ),
        (
            "analyst registering as a party",
            _call(_chan(address, alice), alice.token, "RegisterParty"),
            "PERMISSION_DENIED",
        ),
    ]
    for case, got, want in negatives:
        assert got == want, case
    assert coord.handled == 0  # no business handler ran in any negative case
    assert _call(_chan(address, alice), alice.token) == "OK"
    assert coord.handled == 1
    # Health is exempt from the token layer but still behind mTLS.
    ch = _chan(address, alice)
    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    ch.close()


def test_worker_services_accept_only_their_callers(
    pki: tuple[Path, dict[str, Identity]], loop_thread: LoopThread
) -> None:
    cfg = WorkerConfig(name="hospital_a", coordinator="127.0.0.1:1", pki_dir=pki[0])
    run, runtime = loop_thread.run(srv.start_worker(cfg))
    address = f"127.0.0.1:{run.port}"
    try:
        for who, method in (
            ("analyst:alice", WORKER + "PrepareJob"),
            ("hospital_b", WORKER + "CancelJob"),
            ("coordinator", PEER + "Deliver"),
            ("analyst:alice", PEER + "Deliver"),
        ):
            ch = _chan(address, pki[1][who])
            if method.endswith("Deliver"):
                fn = ch.stream_unary(method)
                with pytest.raises(grpc.RpcError) as err:
                    fn(iter([peer_pb2.DeliverRequest(job_id="j").SerializeToString()]), timeout=3)
            else:
                with pytest.raises(grpc.RpcError) as err:
                    ch.unary_unary(method)(b"", timeout=3)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, (who, method)
            ch.close()
        assert runtime.handled == 0
    finally:
        loop_thread.run(run.server.stop(None))


def test_insecure_ports_only_on_loopback_with_dev_flag(loop_thread: LoopThread) -> None:
    async def bind(address: str, dev: bool) -> int:
        server = grpc.aio.server()
        try:
            return add_port(server, address, None, insecure_dev=dev)
        finally:
            await server.stop(None)

    with pytest.raises(ConfigurationError):
        loop_thread.run(bind("127.0.0.1:0", False))
    with pytest.raises(ConfigurationError):
        loop_thread.run(bind("0.0.0.0:0", True))
    assert loop_thread.run(bind("127.0.0.1:0", True)) > 0


PICKLE_PAYLOAD = b"cos\nsystem\n(S'touch /tmp/privcomp_pwned_probe'\ntR."


def test_t17a_t16_fuzz_every_rpc_never_unknown(
    coordinator: tuple[str, Any],
    pki: tuple[Path, dict[str, Identity]],
    loop_thread: LoopThread,
) -> None:
    """Random bytes (and a pickle payload) to every RPC: never UNKNOWN, never a crash."""
    address, _ = coordinator
    wcfg = WorkerConfig(name="hospital_a", coordinator="127.0.0.1:1", pki_dir=pki[0])
    wrun, _ = loop_thread.run(srv.start_worker(wcfg))
    waddr = f"127.0.0.1:{wrun.port}"
    gen = np.random.default_rng(17)
    payloads = [gen.bytes(int(n)) for n in gen.integers(0, 300, 25)]
    payloads += [
        b"",
        b"\xff" * 40,
        b"\x0a\xff\xff\xff\xff\x0f",
        PICKLE_PAYLOAD,
        peer_pb2.DeliverRequest(job_id="j", data=PICKLE_PAYLOAD).SerializeToString(),
    ]
    allowed = {
        "OK",
        "INVALID_ARGUMENT",
        "INTERNAL",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
    }
    seen: set[str] = set()
    targets = [
        (
            address,
            pki[1]["analyst:alice"],
            COORD,
            ["ListParties", "SubmitJob", "GetJob", "ListJobs", "CancelJob", "GetResult"],
            "uu",
        ),
        (address, pki[1]["analyst:alice"], COORD, ["WatchJob"], "us"),
        (address, pki[1]["hospital_a"], COORD, ["RegisterParty"], "uu"),
        (waddr, pki[1]["coordinator"], WORKER, ["PrepareJob", "CancelJob"], "uu"),
        (waddr, pki[1]["coordinator"], WORKER, ["RunJob"], "us"),
        (waddr, pki[1]["hospital_b"], PEER, ["Deliver"], "su"),
    ]
    try:
        for addr, ident, prefix, methods, shape in targets:
            ch = _chan(addr, ident)
            md = (("authorization", f"Bearer {ident.token}"),)
            for m in methods:
                for data in payloads:
                    t0 = time.monotonic()
                    try:
                        if shape == "uu":
                            ch.unary_unary(prefix + m)(data, timeout=2, metadata=md)
                        elif shape == "us":
                            list(ch.unary_stream(prefix + m)(data, timeout=2, metadata=md))
                        else:
                            ch.stream_unary(prefix + m)(iter([data, data]), timeout=2, metadata=md)
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                    assert time.monotonic() - t0 < 2.5
                    assert code in allowed, (m, code)
                    seen.add(code)
            ch.close()
        assert "INVALID_ARGUMENT" in seen or "INTERNAL" in seen
        assert not Path("/tmp/privcomp_pwned_probe").exists()
        ch = _chan(address, pki[1]["analyst:alice"])
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        ch.close()
    finally:
        loop_thread.run(wrun.server.stop(None))


def test_t25_client_deadline_against_black_hole(pki: tuple[Path, dict[str, Identity]]) -> None:
    """A server that accepts TCP but never answers: every client call ends within deadline+1."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # never accept(): the TLS handshake never completes
    address = f"127.0.0.1:{hole.getsockname()[1]}"
    try:
        alice = pki[1]["analyst:alice"]
        fed = Federation(_chan(address, alice), call_timeout=1.0)
        for call in (
            fed.parties,
            lambda: fed.status("x"),
            lambda: fed.submit(
                {"kind": "stats", "parties": ["a", "b"], "dataset": "d", "params": {"column": "x"}}
            ),
        ):
            t0 = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                call()
            assert time.monotonic() - t0 < 2.0
        fed.close()
    finally:
        hole.close()
