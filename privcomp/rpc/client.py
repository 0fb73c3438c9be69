"""gRPC client of the coordinator (layer: rpc); public façade: :mod:`privcomp.client`.

The data scientist's API for a real deployment (``pc.local`` is the in-process twin)::

    fed = privcomp.client.connect("127.0.0.1:7000", pki_dir="pki", analyst="alice")
    fed.parties()                      # names and schemas only
    job = fed.submit("job.yaml")       # JobSpec, dict or YAML path
    job.watch()                        # tqdm progress bar
    job.result()                       # {"mean": array(...), ...}

Every call has a deadline. Only UNAVAILABLE is retried (≤ 5 attempts, 0.1 → 1 s backoff), and
only for idempotent calls — ``submit`` always sends an idempotency key, so a retried submit
creates exactly one job (R11, T26).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from privcomp.errors import ConfigurationError, JobFailedError
from privcomp.jobs.model import JobSpec, JobState
from privcomp.proto.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from privcomp.rpc import serde
from privcomp.rpc.auth import bearer_metadata
from privcomp.rpc.channel import channel_credentials, client_options
from privcomp.rpc.pki import ANALYST_PREFIX, Identity, load_identity
from privcomp.rpc.status import error_from_rpc
from privcomp.types import FloatArray

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class PartySummary:
    """A registered party as the analyst sees it: name, address and schemas."""

    name: str
    address: str
    online: bool
    datasets: dict[str, list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Status of a job."""

    job_id: str
    state: JobState
    reason: str
    failing_party: str
    phase: str
    progress: float
    kind: str


def _info(msg: common_pb2.JobStatus) -> JobInfo:
    return JobInfo(
        job_id=msg.job_id,
        state=serde.job_state_from_proto(msg.state),
        reason=msg.reason,
        failing_party=msg.failing_party,
        phase=msg.phase,
        progress=msg.progress,
        kind=msg.spec.kind,
    )


def _as_spec(spec: JobSpec | Mapping[str, Any] | str | Path) -> JobSpec:
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, str | Path):
        return JobSpec.from_yaml(spec)
    return JobSpec.from_dict(dict(spec))


class Job:
    """Handle of a submitted job."""

    def __init__(self, fed: Federation, job_id: str) -> None:
        self.fed = fed
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"Job({self.job_id!r})"

    def status(self) -> JobInfo:
        """Current status."""
        return self.fed.status(self.job_id)

    def watch(self, *, progress: bool = True, timeout: float | None = None) -> JobInfo:
        """Follow the job to a terminal state (tqdm bar if ``progress``)."""
        return self.fed.watch(self.job_id, progress=progress, timeout=timeout)

    def result(self, timeout: float | None = None) -> dict[str, FloatArray]:
        """Wait for the job and return its released result (JobFailedError if it failed)."""
        return self.fed.result(self.job_id, timeout=timeout)

    def cancel(self) -> JobInfo:
        """Cancel the job."""
        return self.fed.cancel(self.job_id)


class Federation:
    """A connection to a coordinator as an analyst (mTLS + token).

    Parameters
    ----------
    channel:
        A channel with credentials attached (see :func:`connect`).
    call_timeout:
        Deadline of each unary call.
    """

    def __init__(
        self, channel: grpc.Channel, *, call_timeout: float = CALL_TIMEOUT_S, token: str = ""
    ) -> None:
        self._channel = channel
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        # Per-call metadata rather than a metadata_call_credentials plugin: the plugin runs on
        # a gRPC-owned thread that can block interpreter exit of short CLI processes.
        self._md: tuple[tuple[str, str], ...] = bearer_metadata(token) if token else ()
        self._timeout = call_timeout
        self.attempts = 0  # RPC attempts made (tests check the retry policy)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool) -> T:
        delay = 0.1
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.attempts += 1
            try:
                return fn()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if not (
                    idempotent and code == grpc.StatusCode.UNAVAILABLE and attempt < MAX_ATTEMPTS
                ):
                    raise error_from_rpc(exc, what) from exc
            time.sleep(delay)
            delay = min(1.0, delay * 2)
        raise ConfigurationError("unreachable")  # pragma: no cover

    def _unary(self, what: str, method: Callable[..., T], request: Any) -> T:
        """One unary call with deadline and token; every coordinator unary call is idempotent
        (reads, cancel, and submit with its idempotency key), so UNAVAILABLE is retried."""
        return self._call(
            what,
            lambda: method(request, timeout=self._timeout, metadata=self._md),
            idempotent=True,
        )

    def parties(self) -> list[PartySummary]:
        """Registered parties and their dataset schemas (names and types only)."""
        resp = self._unary(
            "list parties", self._stub.ListParties, coordinator_pb2.ListPartiesRequest()
        )
        return [
            PartySummary(p.name, p.address, p.online, serde.schemas_from_proto(p.datasets))
            for p in resp.parties
        ]

    def submit(
        self, spec: JobSpec | Mapping[str, Any] | str | Path, *, idempotency_key: str | None = None
    ) -> Job:
        """Submit a job (a JobSpec, a dict or a YAML path); safe to retry."""
        js = _as_spec(spec)
        req = coordinator_pb2.SubmitJobRequest(
            spec=serde.job_spec_to_proto(js), idempotency_key=idempotency_key or uuid.uuid4().hex
        )
        resp = self._unary("submit", self._stub.SubmitJob, req)
        return Job(self, resp.status.job_id)

    def job(self, job_id: str) -> Job:
        """Handle of an existing job."""
        return Job(self, job_id)

    def status(self, job_id: str) -> JobInfo:
        """Status of a job."""
        resp = self._unary(
            "status", self._stub.GetJob, coordinator_pb2.GetJobRequest(job_id=job_id)
        )
        return _info(resp.status)

    def jobs(self, limit: int = 20) -> list[JobInfo]:
        """The caller's most recent jobs."""
        resp = self._unary(
            "list jobs", self._stub.ListJobs, coordinator_pb2.ListJobsRequest(limit=limit)
        )
        return [_info(s) for s in resp.jobs]

    def updates(self, job_id: str, timeout: float | None = None) -> Iterator[JobInfo]:
        """Stream status updates until the job is terminal (server-streaming WatchJob)."""
        stream = self._stub.WatchJob(
            coordinator_pb2.WatchJobRequest(job_id=job_id),
            timeout=timeout or 3600.0,
            metadata=self._md,
        )
        try:
            for msg in stream:
                yield _info(msg.status)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "watch") from exc

    def watch(self, job_id: str, *, progress: bool = True, timeout: float | None = None) -> JobInfo:
        """Follow a job to a terminal state, with a tqdm progress bar if ``progress``."""
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

        last = self.status(job_id)
        with tqdm(
            total=100,
            disable=not progress,
            desc=f"job {job_id}",
            unit="%",
            bar_format="{desc} |{bar:20}| {n:.0f}%",
            leave=True,
        ) as bar:
            for info in self.updates(job_id, timeout=timeout):
                last = info
                bar.n = round(info.progress * 100)
                bar.set_description_str(f"job {job_id} {info.state.value:<9} {info.phase:<9}")
        return last

    def result(self, job_id: str, timeout: float | None = None) -> dict[str, FloatArray]:
        """Wait for the job; return the released result or raise JobFailedError."""
        info = self.status(job_id)
        if not info.state.terminal:
            for info in self.updates(job_id, timeout=timeout):  # noqa: B007
                pass
        if info.state != JobState.SUCCEEDED:
            raise JobFailedError(
                f"job {job_id} {info.state.value}: {info.reason} (party "
                f"{info.failing_party or '-'}, phase {info.phase or '-'})",
                party=info.failing_party,
                phase=info.phase,
            )
        resp = self._unary(
            "result", self._stub.GetResult, coordinator_pb2.GetResultRequest(job_id=job_id)
        )
        return serde.result_from_proto(resp.result)

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job."""
        resp = self._unary(
            "cancel", self._stub.CancelJob, coordinator_pb2.CancelJobRequest(job_id=job_id)
        )
        return _info(resp.status)


def connect(
    address: str,
    *,
    pki_dir: str | Path | None = None,
    analyst: str | None = None,
    identity: Identity | None = None,
    call_timeout: float = CALL_TIMEOUT_S,
) -> Federation:
    """Open the low-level job connection of an analyst.

    The parameters mean what they mean in :func:`privcomp.client.connect`, the public entry
    point, which wraps this connection in the statistics federation.
    """
    if identity is None:
        if pki_dir is None or analyst is None:
            raise ConfigurationError("pass pki_dir and analyst, or identity")
        identity = load_identity(Path(pki_dir), ANALYST_PREFIX + analyst)
    if not identity.token:
        raise ConfigurationError(f"identity {identity.name!r} has no token")
    channel = grpc.secure_channel(address, channel_credentials(identity), options=client_options())
    return Federation(channel, call_timeout=call_timeout, token=identity.token)
