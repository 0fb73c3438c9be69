"""The worker: runs registered job kinds with its peers over GrpcTransport (layer: services).

Lifecycle of a job on a worker (the coordinator drives it through ``WorkerService``):

1. ``PrepareJob``: validate the spec against the kind registry, check the job against this
   party's policy, load the needed columns, create the job's peer mailbox and channels.
   Refusals name the column or operation, never a value.
2. ``RunJob`` (server stream): run the kind's protocol — the same code as in memory — on a
   :class:`PartyContext` over :class:`GrpcTransport`; stream progress; end with the released
   result or a failure naming the phase and the party to blame. If the coordinator's stream
   goes away, the job is cancelled.
3. ``CancelJob`` or the job's global deadline: cancel the protocol task and drop all job state.

Shares travel only worker-to-worker (PeerService); the coordinator receives progress and the
released result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from privcomp.core.rng import SystemRandomSource
from privcomp.errors import (
    ConfigurationError,
    PeerFailedError,
    PolicyViolation,
    PrivcompError,
    ProtocolAbort,
)
from privcomp.jobs import stats_query
from privcomp.jobs.dealer_net import NetworkDealerSource, serve_dealer
from privcomp.jobs.kinds import LocalData, Released, get_kind, validate_spec
from privcomp.jobs.model import JobSpec
from privcomp.policy.query import Query
from privcomp.policy.worker import PartyWorker
from privcomp.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.triples import TripleSource
from privcomp.rpc import serde
from privcomp.rpc.channel import aio_channel, peer_options
from privcomp.rpc.pki import Identity
from privcomp.rpc.stats_spec import datasets_of, query_from_spec
from privcomp.rpc.transport import GrpcTransport, JobMailbox, RoundDeadlines
from privcomp.services.config import WorkerConfig, load_columns
from privcomp.services.frames import FrameStore
from privcomp.services.peer import MailboxEntry

if TYPE_CHECKING:
    from privcomp.backends.paillier import PrivateKey, PublicKey

logger = logging.getLogger(__name__)

#: Paillier key pairs a worker keeps for reuse across "he" jobs (one per party layout).
HE_KEY_CACHE_SIZE = 16


@dataclass(slots=True)
class WorkerJob:
    """State of one job on this worker."""

    job_id: str
    spec: JobSpec
    names: tuple[str, ...]  # computing parties, then the dealer if any
    index: int
    deadline_unix: float
    data: LocalData
    mailbox: JobMailbox
    channels: dict[int, grpc.aio.Channel] = field(default_factory=dict)
    phase: str = "prepare"
    task: asyncio.Task[worker_pb2.RunJobResponse] | None = None
    query: Query | None = None  # stats_query jobs: the local-mode query, requester = caller

    @property
    def is_dealer(self) -> bool:
        """This worker is the job's dealer helper party."""
        return self.index == len(self.spec.parties)


def _failure(reason: str, phase: str, party: str) -> worker_pb2.RunJobResponse:
    return worker_pb2.RunJobResponse(
        failure=worker_pb2.JobFailure(reason=reason, phase=phase, failing_party=party)
    )


class WorkerRuntime(worker_pb2_grpc.WorkerServiceServicer):
    """The worker's control service and job table.

    Parameters
    ----------
    config:
        Worker configuration (name, datasets, policies, timeouts).
    identity:
        This party's certificate and key (None only in loopback dev mode).
    """

    def __init__(self, config: WorkerConfig, identity: Identity | None) -> None:
        self.config = config
        self.identity = identity
        self.jobs: dict[str, WorkerJob] = {}
        self.handled = 0  # business-handler invocations (tests check auth refusals)
        #: The datasets as DataFrames, and this party's policy enforcement point with its
        #: disclosure-control state (k-threshold, differencing history) across all its jobs.
        self.frames = FrameStore(config.datasets)
        self.party = PartyWorker(
            config.name, self.frames, config.policy, psi_workers=config.psi_workers or None
        )
        #: This party's Paillier key pair per job-party layout, least recently used first.
        #: Each is a prime search (randomised time); local mode keeps its keys across jobs too.
        self._he_keys: OrderedDict[
            tuple[tuple[str, ...], tuple[str, ...]], tuple[PublicKey, PrivateKey]
        ] = OrderedDict()
        self._he_keygen = asyncio.Lock()  # concurrent first jobs of a layout generate once
        self.he_keygens = 0  # key pairs generated (tests check reuse)

    def mailbox_entry(self, job_id: str) -> MailboxEntry | None:
        """Lookup used by the PeerService."""
        job = self.jobs.get(job_id)
        return None if job is None else MailboxEntry(job.mailbox, job.names)

    def _check_policy(self, spec: JobSpec, me: str, requester: str) -> LocalData:
        kind = get_kind(spec.kind)
        cols, ops = kind.usage(spec, me)
        if not kind.needs_dataset:
            if not self.config.allow_benchmarks:
                raise ConfigurationError(f"party {me} does not run benchmark jobs")
            return LocalData(columns={})
        ds = self.config.datasets.get(spec.dataset)
        if ds is None:
            raise ConfigurationError(f"party {me} offers no dataset {spec.dataset!r}")
        policy = self.config.policy
        policy.rule(spec.dataset, requester).check(spec.dataset, cols, ops)
        data = load_columns(ds.path, cols)
        if data.n_rows < policy.k:
            raise PolicyViolation(
                f"dataset {spec.dataset!r} of party {me} has fewer than k={policy.k} rows"
            )
        return data

    def _prepare(self, req: worker_pb2.PrepareJobRequest) -> WorkerJob:
        spec = serde.job_spec_from_proto(req.spec)
        validate_spec(spec)
        names = tuple(p.name for p in req.peers)
        me = self.config.name
        expected = list(spec.parties)
        if spec.triple_source == "dealer":
            expected.append(str(spec.params["dealer"]))
        if list(names) != expected or me not in names:
            raise ConfigurationError("peer list does not match the job's parties")
        index = names.index(me)
        query = None
        if index == len(spec.parties):
            if not self.config.allow_dealer:
                raise ConfigurationError(f"party {me} is not configured as a dealer")
            data = LocalData(columns={})
        elif spec.triple_source == "dealer" and expected[-1] not in self.config.trusted_dealers:
            # A data holder's privacy then rests on the dealer not colluding: its operator
            # must name the dealers it trusts (security.md R12: no dealer mode by default).
            raise ConfigurationError(
                f"party {me} does not accept dealer {expected[-1]!r} (see trusted_dealers)"
            )
        elif spec.kind == stats_query.KIND:
            # The policy is checked by PartyWorker.run inside the protocol (consent round), on
            # the rows the query selects: exactly as in local mode.
            query = query_from_spec(spec, req.requester)
            if not any(d in self.frames for d in datasets_of(query)):
                raise ConfigurationError(f"party {me} offers no dataset {spec.dataset!r}")
            data = LocalData(columns={})
        else:
            data = self._check_policy(spec, me, req.requester)
        job = WorkerJob(
            job_id=req.job_id,
            spec=spec,
            names=names,
            index=index,
            deadline_unix=req.deadline_unix,
            data=data,
            mailbox=JobMailbox(
                req.job_id,
                len(names),
                max_pending_bytes=self.config.max_pending_peer_bytes,
                names=names,
            ),
            query=query,
        )
        for i, peer in enumerate(req.peers):
            if i != index:
                job.channels[i] = aio_channel(
                    peer.address,
                    self.identity,
                    keepalive=self.config.keepalive,
                    insecure_dev=self.config.insecure_dev,
                    extra_options=peer_options(peer.name) if self.identity else (),
                )
        return job

    async def PrepareJob(
        self, request: worker_pb2.PrepareJobRequest, context: Any
    ) -> worker_pb2.PrepareJobResponse:
        """Validate, check policy, load data, open the mailbox (idempotent per job id)."""
        self.handled += 1
        if request.job_id in self.jobs:
            return worker_pb2.PrepareJobResponse(accepted=True)
        if not request.job_id or len(request.job_id) > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id must be 1-64 chars")
        try:
            if request.spec.kind == stats_query.KIND:
                # Parse the dataset files (first use only) off the event loop.
                await asyncio.to_thread(self.frames.load, request.spec.dataset)
            job = self._prepare(request)
            if job.query is not None and job.query.join is not None:
                await asyncio.to_thread(self.frames.load, *datasets_of(job.query))
        except PrivcompError as exc:
            logger.info("job %s refused: %s", request.job_id, exc)
            return worker_pb2.PrepareJobResponse(accepted=False, reason=str(exc))
        except Exception as exc:
            # E.g. a reader error quoting a cell: only the type leaves this worker (and its log).
            logger.info("job %s refused: %s", request.job_id, type(exc).__name__)
            reason = f"party {self.config.name}: internal error ({type(exc).__name__})"
            return worker_pb2.PrepareJobResponse(accepted=False, reason=reason)
        self.jobs[job.job_id] = job
        asyncio.get_running_loop().call_later(
            max(0.0, job.deadline_unix - time.time()) + 5.0, self._expire, job.job_id
        )
        logger.info("job %s prepared (party %d of %d)", job.job_id, job.index, len(job.names))
        return worker_pb2.PrepareJobResponse(accepted=True)

    def _expire(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None:
            logger.info("job %s expired (deadline)", job_id)
            if job.task is not None:
                job.task.cancel()
            asyncio.get_running_loop().create_task(self._drop(job_id))

    async def _drop(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        job.mailbox.close()
        for ch in job.channels.values():
            await ch.close(grace=None)

    async def _he_keypair(self, job: WorkerJob) -> tuple[PublicKey, PrivateKey]:
        """This party's Paillier key pair for the job's party layout (generated once, cached).

        Only the key pair is kept across jobs: every job still gets a fresh
        :class:`PaillierTripleSource` (fresh masks, triples and bits; its own public-key
        exchange round), so a job that failed midway — or a peer that restarted with new
        keys — leaves nothing half-set-up behind for the next job.
        """
        key = (tuple(sorted(job.spec.parties)), tuple(job.spec.parties))
        async with self._he_keygen:
            pair = self._he_keys.get(key)
            if pair is None:
                # Imported here: the Paillier engine is needed only by "he" jobs.
                from privcomp.backends.paillier import keygen
                from privcomp.protocols.he_triples import DEFAULT_KEY_BITS

                pair = await asyncio.to_thread(keygen, DEFAULT_KEY_BITS, SystemRandomSource())
                self.he_keygens += 1
                self._he_keys[key] = pair
                if len(self._he_keys) > HE_KEY_CACHE_SIZE:
                    self._he_keys.popitem(last=False)
            self._he_keys.move_to_end(key)
        return pair

    def _context(
        self,
        job: WorkerJob,
        transport: GrpcTransport,
        he_keys: tuple[PublicKey, PrivateKey] | None,
    ) -> PartyContext:
        triples: TripleSource
        if job.spec.triple_source == "dealer":
            triples = NetworkDealerSource(len(job.spec.parties))
        else:
            from privcomp.protocols.he_triples import PaillierTripleSource

            # Without cached keys (None) the source generates its own at its first call.
            triples = PaillierTripleSource(
                keypairs=None if he_keys is None else {job.index: he_keys}
            )
        return PartyContext(transport=transport, triples=triples, job_id=job.job_id)

    async def _execute(
        self, job: WorkerJob, queue: asyncio.Queue[Any]
    ) -> worker_pb2.RunJobResponse:
        def progress(phase: str, fraction: float) -> None:
            job.phase = phase
            queue.put_nowait(
                worker_pb2.RunJobResponse(
                    progress=worker_pb2.JobProgress(phase=phase, fraction=fraction)
                )
            )

        transport = GrpcTransport(
            job_id=job.job_id,
            party_id=job.index,
            party_names=job.names,
            channels=job.channels,
            mailbox=job.mailbox,
            deadlines=RoundDeadlines(
                round_s=self.config.round_timeout_s, job_deadline_unix=job.deadline_unix
            ),
            n_parties=len(job.spec.parties),
        )
        try:
            async with asyncio.timeout(max(0.0, job.deadline_unix - time.time())):
                if job.is_dealer:
                    progress("dealer", 0.0)
                    await serve_dealer(
                        transport, len(job.spec.parties), TrustedDealer(len(job.spec.parties))
                    )
                    return worker_pb2.RunJobResponse(result=common_pb2.JobResult())
                he = None if job.spec.triple_source == "dealer" else await self._he_keypair(job)
                ctx = self._context(job, transport, he)
                released = await self._released(ctx, job, progress)
                if isinstance(ctx.triples, NetworkDealerSource):
                    await ctx.triples.stop(ctx)
            st = transport.stats
            logger.info(
                "job %s party %d traffic: sent %d bytes in %d messages, received %d bytes",
                job.job_id,
                job.index,
                st.bytes_sent,
                st.messages_sent,
                st.bytes_received,
            )
            return worker_pb2.RunJobResponse(result=serde.result_to_proto(released))
        except Exception as e:
            # Anything escaping reaches the caller as UNKNOWN with the exception text (which may
            # quote data): report a typed failure instead.
            return self._failure_of(e, job)

    def _failure_of(self, exc: BaseException, job: WorkerJob) -> worker_pb2.RunJobResponse:
        """The failure event for an exception that ended this party's side of a job."""
        me = self.config.name
        if isinstance(exc, PeerFailedError):
            return _failure(str(exc), job.phase, exc.party)
        if isinstance(exc, ProtocolAbort):
            # Another party stopped the job (e.g. its policy refused): blame that party.
            blamed = job.names[exc.party_id] if 0 <= exc.party_id < len(job.names) else me
            return _failure(f"ProtocolAbort: party {blamed} {exc.reason}", job.phase, blamed)
        if isinstance(exc, TimeoutError):
            return _failure("job deadline exceeded", job.phase, me)
        if isinstance(exc, PrivcompError):
            return _failure(f"{type(exc).__name__}: {exc}", job.phase, me)
        # E.g. pandas refusing a comparison in a filter. The message may quote data, so only
        # the type leaves this worker (and its log).
        logger.info("job %s failed with %s", job.job_id, type(exc).__name__)
        return _failure(f"internal error ({type(exc).__name__})", job.phase, me)

    async def _released(
        self, ctx: PartyContext, job: WorkerJob, progress: Callable[[str, float], None]
    ) -> Released:
        if job.query is None:
            return await get_kind(job.spec.kind).run(ctx, job.spec, job.data, progress)
        progress("statistics", 0.1)
        release = await self.party.run(ctx, job.query)
        progress("reveal", 0.95)
        return stats_query.release_to_arrays(release)

    async def RunJob(
        self, request: worker_pb2.RunJobRequest, context: Any
    ) -> AsyncIterator[worker_pb2.RunJobResponse]:
        """Run a prepared job; stream progress; end with the result or a failure."""
        self.handled += 1
        job = self.jobs.get(request.job_id)
        if job is None or job.task is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "job not prepared or running")
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(self._execute(job, queue))
        job.task = task
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            try:
                final = task.result()
            except asyncio.CancelledError:
                final = _failure("job cancelled", job.phase, "")
            yield final
            logger.info(
                "job %s finished on %s: %s", job.job_id, self.config.name, final.WhichOneof("event")
            )
        finally:
            if not task.done():
                task.cancel()  # the coordinator went away: abandon the job
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._drop(job.job_id)

    async def CancelJob(
        self, request: worker_pb2.WorkerCancelJobRequest, context: Any
    ) -> worker_pb2.WorkerCancelJobResponse:
        """Cancel the job's protocol task and drop its state."""
        self.handled += 1
        job = self.jobs.get(request.job_id)
        if job is None:
            return worker_pb2.WorkerCancelJobResponse(known=False)
        if job.task is not None:
            job.task.cancel()
        else:
            await self._drop(job.job_id)
        return worker_pb2.WorkerCancelJobResponse(known=True)
