"""Server lifecycles: coordinator and worker on grpc.aio, graceful shutdown (layer: services).

SIGTERM/SIGINT sequence (security.md §4.8): health → NOT_SERVING at once; running jobs are
failed ("shutting down") on the coordinator; ``server.stop(grace)`` lets in-flight calls finish;
the job store is checkpointed and closed; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from privcomp.errors import PrivcompError, ServiceUnavailableError
from privcomp.proto.v1 import (
    coordinator_pb2,
    coordinator_pb2_grpc,
    health_pb2_grpc,
    worker_pb2_grpc,
)
from privcomp.rpc import serde
from privcomp.rpc.auth import (
    AuthInterceptor,
    bearer_metadata,
    is_analyst,
    is_coordinator,
    is_party,
)
from privcomp.rpc.channel import add_port, aio_channel, server_options, split_host
from privcomp.rpc.pki import Identity, load_identity, load_token_hashes
from privcomp.rpc.status import error_from_rpc
from privcomp.services.config import CoordinatorConfig, WorkerConfig
from privcomp.services.coordinator import Coordinator
from privcomp.services.health import HealthServicer
from privcomp.services.jobstore import JobRepository
from privcomp.services.peer import PeerServicer, add_peer_servicer
from privcomp.services.worker import WorkerRuntime

logger = logging.getLogger(__name__)
GRACE_S = 5.0
_COORD = "/privcomp.proto.v1.CoordinatorService/"
_WORKER = "/privcomp.proto.v1.WorkerService/"
_PEER = "/privcomp.proto.v1.PeerService/"

COORDINATOR_RULES: dict[str, Callable[[str], bool]] = {
    _COORD + "RegisterParty": is_party,
    **{
        _COORD + m: is_analyst
        for m in (
            "ListParties",
            "SubmitJob",
            "GetJob",
            "ListJobs",
            "WatchJob",
            "CancelJob",
            "GetResult",
        )
    },
}
WORKER_RULES: dict[str, Callable[[str], bool]] = {
    **{_WORKER + m: is_coordinator for m in ("PrepareJob", "RunJob", "CancelJob")},
    _PEER + "Deliver": is_party,
}


@dataclass(slots=True)
class Running:
    """A started server."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    stop: asyncio.Event


def write_port_file(path: Path | None, address: str) -> None:
    """Atomically write the bound address (for supervisors and tests that used port 0)."""
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(address + "\n")
    os.replace(tmp, path)


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def start_coordinator(
    config: CoordinatorConfig, *, interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()
) -> tuple[Running, Coordinator, AuthInterceptor]:
    """Start a coordinator server; returns it with the servicer and auth interceptor."""
    identity = None if config.insecure_dev else load_identity(config.pki_dir, "coordinator")
    auth = AuthInterceptor(
        COORDINATOR_RULES, load_token_hashes(config.pki_dir), insecure_dev=config.insecure_dev
    )
    store = JobRepository(config.db_path)
    failed = store.fail_running()
    if failed:
        logger.info("marked %d job(s) left running by a previous coordinator FAILED", failed)
    server = grpc.aio.server(
        interceptors=(auth, *interceptors),
        options=server_options(config.keepalive),
        maximum_concurrent_rpcs=256,
    )
    coord = Coordinator(config, identity, store, auth.identity_of)
    coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(coord, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = add_port(server, config.listen, identity, insecure_dev=config.insecure_dev)
    await server.start()
    return Running(server, port, health, asyncio.Event()), coord, auth


async def serve_coordinator(config: CoordinatorConfig, port_file: Path | None = None) -> None:
    """Run a coordinator until SIGTERM/SIGINT, then shut down gracefully."""
    run, coord, _ = await start_coordinator(config)
    host, _ = split_host(config.listen)
    write_port_file(port_file, f"{host}:{run.port}")
    logger.info("coordinator listening on %s:%d", host, run.port)
    _install_signals(run.stop)
    await run.stop.wait()
    logger.info("coordinator shutting down")
    run.health.enter_graceful_shutdown()
    await coord.shutdown()
    await run.server.stop(GRACE_S)
    coord.store.close()


async def start_worker(config: WorkerConfig) -> tuple[Running, WorkerRuntime]:
    """Start a worker server (control + peer services)."""
    identity = None if config.insecure_dev else load_identity(config.pki_dir, config.name)
    auth = AuthInterceptor(WORKER_RULES, None, insecure_dev=config.insecure_dev)
    server = grpc.aio.server(
        interceptors=(auth,), options=server_options(config.keepalive), maximum_concurrent_rpcs=256
    )
    runtime = WorkerRuntime(config, identity)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(runtime, server)
    add_peer_servicer(PeerServicer(runtime.mailbox_entry), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = add_port(server, config.listen, identity, insecure_dev=config.insecure_dev)
    await server.start()
    return Running(server, port, health, asyncio.Event()), runtime


async def register_loop(
    config: WorkerConfig,
    identity: Identity | None,
    address: str,
    stop: asyncio.Event,
    schemas: serde.Schema,
) -> None:
    """Register with the coordinator, then re-register every ``heartbeat_s`` (survives restarts).

    ``schemas`` (names and dtypes only) are what the coordinator and the analysts see.
    """
    channel = aio_channel(
        config.coordinator, identity, keepalive=config.keepalive, insecure_dev=config.insecure_dev
    )
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    req = coordinator_pb2.RegisterPartyRequest(
        name=config.name, address=address, datasets=serde.schemas_to_proto(schemas)
    )
    md = bearer_metadata(identity.token) if identity and identity.token else ()
    registered = False
    try:
        while not stop.is_set():
            try:
                await stub.RegisterParty(req, timeout=5.0, metadata=md)
                if not registered:
                    logger.info("registered with the coordinator at %s", config.coordinator)
                registered = True
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    raise error_from_rpc(exc, "registration") from exc
                logger.info("coordinator not reachable yet (%s)", exc.code().name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.heartbeat_s if registered else 0.5):
                    await stop.wait()
    finally:
        await channel.close(grace=None)


async def serve_worker(config: WorkerConfig, port_file: Path | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT, then shut down gracefully."""
    run, runtime = await start_worker(config)
    host, _ = split_host(config.listen)
    address = config.advertise or f"{host}:{run.port}"
    write_port_file(port_file, address)
    logger.info("worker %s listening on %s", config.name, address)
    _install_signals(run.stop)
    # Parsing the datasets takes seconds for big files: off the event loop, once (jobs reuse it).
    schemas = await asyncio.to_thread(runtime.frames.schemas)
    reg = asyncio.create_task(register_loop(config, runtime.identity, address, run.stop, schemas))
    stopper = asyncio.create_task(run.stop.wait())
    done, _ = await asyncio.wait({reg, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if reg in done and reg.exception() is not None:
        exc = reg.exception()
        run.stop.set()
        await run.server.stop(None)
        if isinstance(exc, PrivcompError):  # e.g. UNAUTHENTICATED / PERMISSION_DENIED
            raise exc
        raise ServiceUnavailableError(f"registration failed: {exc}")
    logger.info("worker %s shutting down", config.name)
    run.health.enter_graceful_shutdown()
    await run.server.stop(GRACE_S)
    reg.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await reg
