"""The coordinator: party registry, job store and job driver (layer: services).

It sees job specs, party names, schemas, progress and the released result for the requester —
never a share, a ciphertext meant for another party, or a raw value (the workers exchange those
directly). A job is driven in three steps: ``PrepareJob`` on every party (policy checks),
``RunJob`` streams from every party (progress; the first failure or lost stream fails the job
and cancels the others), then the released results, which must agree, are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import grpc.aio
import numpy as np

from privcomp.errors import (
    ConfigurationError,
    JobNotFoundError,
    JobStateError,
    PermissionDeniedError,
    PrivcompError,
)
from privcomp.jobs.kinds import validate_spec
from privcomp.jobs.model import JobRecord, JobSpec, JobState
from privcomp.proto.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from privcomp.rpc import serde
from privcomp.rpc.channel import aio_channel, split_host
from privcomp.rpc.pki import Identity
from privcomp.rpc.status import code_for
from privcomp.services.config import CoordinatorConfig
from privcomp.services.jobstore import JobRepository
from privcomp.types import FloatArray

logger = logging.getLogger(__name__)
CONTROL_TIMEOUT_S = 10.0
#: How long a job's failure waits for the other parties' reports (to name the real cause).
FAILURE_GRACE_S = 2.0
_ABORT_PREFIXES = ("ProtocolAbort",)


@dataclass(slots=True)
class Party:
    """A registered worker."""

    name: str
    address: str
    fingerprint: str
    schemas: serde.Schema
    last_seen: float = field(default_factory=time.time)


class JobFailure(Exception):
    """Internal: ends a job FAILED with reason, party and phase."""

    def __init__(self, reason: str, party: str, phase: str) -> None:
        super().__init__(reason)
        self.reason, self.party, self.phase = reason, party, phase


class Coordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    """CoordinatorService implementation and job driver.

    Parameters
    ----------
    config:
        Listen address, PKI directory, database path, timeouts.
    identity:
        The coordinator's certificate (used to call workers).
    store:
        The job store (SQLite, WAL).
    identify:
        Callable returning the caller identity of a servicer context.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        identity: Identity | None,
        store: JobRepository,
        identify: Any,
    ) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self._identify = identify
        self.parties: dict[str, Party] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.handled = 0
        self.shutting_down = False
        #: Client interceptors for the channels to workers (tests record the transcript).
        self.channel_interceptors: list[grpc.aio.ClientInterceptor] = []

    # -- helpers ---------------------------------------------------------------------------

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = aio_channel(
                address,
                self.identity,
                keepalive=self.config.keepalive,
                insecure_dev=self.config.insecure_dev,
                interceptors=self.channel_interceptors,
            )
            self._channels[address] = ch
        return ch

    def _save(self, rec: JobRecord) -> JobRecord:
        self.store.update(rec)
        ev = self._changed.get(rec.job_id)
        if ev is not None:
            ev.set()
        return rec

    def _owned(self, job_id: str, caller: str) -> JobRecord:
        rec = self.store.get(job_id)
        if rec.owner != caller:
            raise JobNotFoundError(f"job {job_id} not found")
        return rec

    async def _abort(self, context: Any, exc: PrivcompError) -> None:
        await context.abort(code_for(exc), str(exc))

    async def _owned_or_abort(self, job_id: str, context: Any) -> JobRecord:
        """The caller's job, or abort the call (NOT_FOUND also for another analyst's job)."""
        try:
            return self._owned(job_id, self._identify(context))
        except PrivcompError as exc:
            await self._abort(context, exc)
            raise

    # -- registry --------------------------------------------------------------------------

    async def RegisterParty(
        self, request: coordinator_pb2.RegisterPartyRequest, context: Any
    ) -> coordinator_pb2.RegisterPartyResponse:
        """Register or refresh a worker; the name must equal the certificate identity."""
        self.handled += 1
        caller = self._identify(context)
        try:
            if request.name != caller:
                raise PermissionDeniedError("a party may only register itself")
            split_host(request.address)
            schemas = serde.schemas_from_proto(request.datasets)
        except PrivcompError as exc:
            await self._abort(context, exc)
            raise
        fp = ""
        if self.identity is not None:
            pem = context.auth_context().get("x509_pem_cert", [b""])[0]
            with contextlib.suppress(Exception):
                from privcomp.rpc.pki import cert_fingerprint

                fp = cert_fingerprint(pem)
        old = self.parties.get(request.name)
        if old is None or old.address != request.address:
            logger.info("party %s registered at %s", request.name, request.address)
        self.parties[request.name] = Party(request.name, request.address, fp, schemas)
        return coordinator_pb2.RegisterPartyResponse(party=self._party_proto(request.name))

    def _party_proto(self, name: str) -> common_pb2.PartyInfo:
        p = self.parties[name]
        return common_pb2.PartyInfo(
            name=p.name,
            address=p.address,
            cert_fingerprint=p.fingerprint,
            datasets=serde.schemas_to_proto(p.schemas),
            online=time.time() - p.last_seen < 30.0,
        )

    async def ListParties(
        self, request: coordinator_pb2.ListPartiesRequest, context: Any
    ) -> coordinator_pb2.ListPartiesResponse:
        """All registered parties with schemas."""
        self.handled += 1
        return coordinator_pb2.ListPartiesResponse(
            parties=[self._party_proto(n) for n in sorted(self.parties)]
        )

    # -- jobs --------------------------------------------------------------------------------

    async def SubmitJob(
        self, request: coordinator_pb2.SubmitJobRequest, context: Any
    ) -> coordinator_pb2.SubmitJobResponse:
        """Validate and store a job (idempotent by key) and start driving it."""
        self.handled += 1
        caller = self._identify(context)
        try:
            if self.shutting_down:
                raise JobStateError("the coordinator is shutting down")
            spec = serde.job_spec_from_proto(request.spec)
            validate_spec(spec)
            if len(request.idempotency_key) > 128:
                raise ConfigurationError("idempotency_key longer than 128 characters")
            missing = [p for p in self._job_parties(spec) if p not in self.parties]
            if missing:
                raise ConfigurationError(f"parties not registered: {missing}")
        except PrivcompError as exc:
            await self._abort(context, exc)
            raise
        rec = JobRecord(
            job_id=uuid.uuid4().hex[:16],
            spec=spec,
            owner=caller,
            idempotency_key=request.idempotency_key,
        )
        try:
            # Same owner and key: the earlier job if the spec is the same, refused otherwise.
            stored = self.store.insert(rec)
        except PrivcompError as exc:
            await self._abort(context, exc)
            raise
        created = stored.job_id == rec.job_id
        if created:
            self._changed[rec.job_id] = asyncio.Event()
            self._tasks[rec.job_id] = asyncio.create_task(self._drive(rec))
            logger.info("job %s submitted by %s (%s)", rec.job_id, caller, spec.kind)
        return coordinator_pb2.SubmitJobResponse(
            status=serde.job_status_to_proto(stored), created=created
        )

    @staticmethod
    def _job_parties(spec: JobSpec) -> list[str]:
        extra = [str(spec.params["dealer"])] if spec.triple_source == "dealer" else []
        return [*spec.parties, *extra]

    async def GetJob(
        self, request: coordinator_pb2.GetJobRequest, context: Any
    ) -> coordinator_pb2.GetJobResponse:
        """Status of one of the caller's jobs."""
        self.handled += 1
        rec = await self._owned_or_abort(request.job_id, context)
        return coordinator_pb2.GetJobResponse(status=serde.job_status_to_proto(rec))

    async def ListJobs(
        self, request: coordinator_pb2.ListJobsRequest, context: Any
    ) -> coordinator_pb2.ListJobsResponse:
        """The caller's jobs, most recent first."""
        self.handled += 1
        limit = request.limit if 0 < request.limit <= 1000 else 100
        recs = self.store.list(owner=self._identify(context), limit=limit)
        return coordinator_pb2.ListJobsResponse(jobs=[serde.job_status_to_proto(r) for r in recs])

    async def WatchJob(
        self, request: coordinator_pb2.WatchJobRequest, context: Any
    ) -> AsyncIterator[coordinator_pb2.WatchJobResponse]:
        """Stream status updates until the job is terminal."""
        self.handled += 1
        caller = self._identify(context)
        try:
            rec = self._owned(request.job_id, caller)
        except PrivcompError as exc:
            await self._abort(context, exc)
            return
        yield coordinator_pb2.WatchJobResponse(status=serde.job_status_to_proto(rec))
        while not rec.state.terminal:
            ev = self._changed.get(request.job_id)
            if ev is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await ev.wait()
                ev.clear()
            else:
                await asyncio.sleep(1.0)
            new = self.store.get(request.job_id)
            if new != rec:
                rec = new
                yield coordinator_pb2.WatchJobResponse(status=serde.job_status_to_proto(rec))

    async def CancelJob(
        self, request: coordinator_pb2.CancelJobRequest, context: Any
    ) -> coordinator_pb2.CancelJobResponse:
        """Cancel one of the caller's jobs (a terminal job is returned unchanged)."""
        self.handled += 1
        rec = await self._owned_or_abort(request.job_id, context)
        if not rec.state.terminal:
            rec = self._save(rec.transition(JobState.CANCELLED, reason="cancelled by requester"))
            task = self._tasks.get(rec.job_id)
            if task is not None:
                task.cancel()
            await self._cancel_workers(rec.spec, rec.job_id, "cancelled by requester")
        return coordinator_pb2.CancelJobResponse(status=serde.job_status_to_proto(rec))

    async def GetResult(
        self, request: coordinator_pb2.GetResultRequest, context: Any
    ) -> coordinator_pb2.GetResultResponse:
        """The released result of a SUCCEEDED job (FAILED_PRECONDITION otherwise)."""
        self.handled += 1
        rec = await self._owned_or_abort(request.job_id, context)
        if rec.state != JobState.SUCCEEDED or rec.result is None:
            exc = JobStateError(f"job {rec.job_id} is {rec.state.value}, no result")
            await self._abort(context, exc)
            raise exc
        return coordinator_pb2.GetResultResponse(
            status=serde.job_status_to_proto(rec),
            result=serde.result_to_proto(serde.result_from_record(rec.result)),
        )

    # -- driving a job -------------------------------------------------------------------------

    async def _cancel_workers(self, spec: JobSpec, job_id: str, reason: str) -> None:
        async def one(name: str) -> None:
            party = self.parties.get(name)
            if party is None:
                return
            stub = worker_pb2_grpc.WorkerServiceStub(self._channel(party.address))
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.CancelJob(
                    worker_pb2.WorkerCancelJobRequest(job_id=job_id, reason=reason), timeout=2.0
                )

        await asyncio.gather(*(one(n) for n in self._job_parties(spec)))

    async def _prepare(self, rec: JobRecord, names: list[str], deadline: float) -> None:
        peers = [worker_pb2.JobPeer(name=n, address=self.parties[n].address) for n in names]
        req = worker_pb2.PrepareJobRequest(
            job_id=rec.job_id,
            spec=serde.job_spec_to_proto(rec.spec),
            peers=peers,
            deadline_unix=deadline,
            requester=rec.owner,
        )

        async def one(name: str) -> None:
            stub = worker_pb2_grpc.WorkerServiceStub(self._channel(self.parties[name].address))
            timeout = max(0.1, min(self.config.prepare_timeout_s, deadline - time.time()))
            try:
                resp = await stub.PrepareJob(req, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise JobFailure(
                    f"party {name} unreachable ({exc.code().name}: {exc.details()})",
                    name,
                    "prepare",
                ) from exc
            if not resp.accepted:
                raise JobFailure(f"party {name} refused the job: {resp.reason}", name, "prepare")

        await asyncio.gather(*(one(n) for n in names))

    async def _run_party(
        self, rec: JobRecord, name: str, deadline: float, phases: dict[str, tuple[str, float]]
    ) -> dict[str, FloatArray]:
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel(self.parties[name].address))
        call = stub.RunJob(
            worker_pb2.RunJobRequest(job_id=rec.job_id),
            timeout=max(0.1, deadline - time.time() + 2.0),
        )
        try:
            async for ev in call:
                kind = ev.WhichOneof("event")
                if kind == "progress":
                    phases[name] = (ev.progress.phase, ev.progress.fraction)
                    self._progress(rec.job_id, phases)
                elif kind == "result":
                    phases[name] = ("done", 1.0)
                    return serde.result_from_proto(ev.result)
                elif kind == "failure":
                    f = ev.failure
                    raise JobFailure(f.reason, f.failing_party or name, f.phase or phases[name][0])
        except grpc.aio.AioRpcError as exc:
            what = (
                "job deadline exceeded"
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else f"lost contact with party {name} ({exc.code().name})"
            )
            raise JobFailure(what, name, phases[name][0]) from exc
        raise JobFailure(f"party {name} ended the job without a result", name, phases[name][0])

    def _progress(self, job_id: str, phases: dict[str, tuple[str, float]]) -> None:
        rec = self.store.get(job_id)
        if rec.state != JobState.RUNNING:
            return
        slowest = min(phases.values(), key=lambda p: p[1])
        frac = sum(p[1] for p in phases.values()) / len(phases)
        self._save(replace(rec, phase=slowest[0], progress=frac, updated_at=time.time()))

    async def _drive(self, rec: JobRecord) -> None:
        names = self._job_parties(rec.spec)
        deadline = time.time() + rec.spec.deadline_s
        phases = dict.fromkeys(names, ("prepare", 0.0))
        try:
            rec = self._save(rec.transition(JobState.RUNNING, phase="prepare"))
            async with asyncio.timeout(rec.spec.deadline_s + 3.0):
                await self._prepare(rec, names, deadline)
                results = await self._gather_runs(rec, names, deadline, phases)
            final = self._check_agreement(results[: len(rec.spec.parties)])
            rec = self.store.get(rec.job_id)
            done = rec.transition(JobState.SUCCEEDED, phase="done")
            self._save(replace(done, progress=1.0, result=serde.result_to_record(final)))
            logger.info("job %s SUCCEEDED", rec.job_id)
        except JobFailure as f:
            await self._fail(rec.job_id, f.reason, f.party, f.phase)
        except TimeoutError:
            slow = min(phases, key=lambda n: phases[n][1])
            await self._fail(rec.job_id, "job deadline exceeded", slow, phases[slow][0])
        except PrivcompError as exc:
            await self._fail(rec.job_id, str(exc), "", "finish")
        except Exception as exc:
            # A job must never stay RUNNING (R5). E.g. a malformed result from a worker: its
            # text may quote values, so only the type is recorded.
            slow = min(phases, key=lambda n: phases[n][1])
            reason = f"internal error ({type(exc).__name__})"
            await self._fail(rec.job_id, reason, "", phases[slow][0])
        finally:
            self._tasks.pop(rec.job_id, None)

    async def _gather_runs(
        self,
        rec: JobRecord,
        names: list[str],
        deadline: float,
        phases: dict[str, tuple[str, float]],
    ) -> list[dict[str, FloatArray]]:
        tasks = [asyncio.create_task(self._run_party(rec, n, deadline, phases)) for n in names]
        try:
            for t in asyncio.as_completed(tasks):
                try:
                    await t  # the first failure ends the job and cancels the rest below
                except JobFailure as first:
                    raise await self._best_failure(first, tasks) from None
            return [t.result() for t in tasks]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _best_failure(
        first: JobFailure, tasks: list[asyncio.Task[dict[str, FloatArray]]]
    ) -> JobFailure:
        """The most telling failure among the parties' reports within a short grace period.

        When a party refuses inside the protocol (its policy's consent round), every other
        party reports a ProtocolAbort naming it at about the same time; the refusing party's
        own reason (e.g. which group is smaller than k) is what the requester needs.
        """
        if not first.reason.startswith(_ABORT_PREFIXES):
            return first
        await asyncio.wait(tasks, timeout=FAILURE_GRACE_S)
        for t in tasks:
            if t.done() and not t.cancelled():
                exc = t.exception()
                if isinstance(exc, JobFailure) and not exc.reason.startswith(_ABORT_PREFIXES):
                    return exc
        return first

    @staticmethod
    def _check_agreement(results: list[dict[str, FloatArray]]) -> dict[str, FloatArray]:
        first = results[0]
        for other in results[1:]:
            if set(other) != set(first) or not all(
                np.array_equal(first[k], other[k], equal_nan=True) for k in first
            ):
                raise JobFailure("parties released different results", "", "reveal")
        return first

    async def _fail(self, job_id: str, reason: str, party: str, phase: str) -> None:
        rec = self.store.get(job_id)
        if rec.state.terminal:
            return
        self._save(rec.transition(JobState.FAILED, reason=reason, failing_party=party, phase=phase))
        logger.info("job %s FAILED in phase %s (party %s)", job_id, phase, party or "-")
        await self._cancel_workers(rec.spec, job_id, reason)

    async def shutdown(self, reason: str = "coordinator shutting down") -> None:
        """Fail running jobs, cancel their workers, close channels."""
        self.shutting_down = True
        for job_id, task in list(self._tasks.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await self._fail(job_id, reason, "", self.store.get(job_id).phase or "interrupted")
        for ch in self._channels.values():
            await ch.close(grace=None)
