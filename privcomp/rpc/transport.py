"""GrpcTransport: the Transport interface over the worker-to-worker PeerService (layer: rpc).

Protocol code calls ``send(to, tag, payload)`` / ``recv(frm, tag)`` exactly as on the in-memory
network. Here a send is one client-streaming ``PeerService.Deliver`` call carrying the payload in
chunks of at most 1 MiB (``job_id``, ``tag``, ``sender`` in every chunk), so a job has no
message-size ceiling while every gRPC message stays far below the 4 MiB receive cap. The
receiving worker's PeerService reassembles the chunks and hands the message to the job's
:class:`JobMailbox`, where ``recv`` picks it up by ``(sender, tag)`` whatever the arrival order.

Deadlines (R4): each send has a per-round deadline; each receive waits at most the per-round
deadline and never past the job's global deadline. A failed or late peer raises
:class:`~privcomp.errors.PeerFailedError` naming the party.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from privcomp.errors import (
    ConfigurationError,
    PeerFailedError,
    ResourceLimitExceededError,
    TransportError,
)
from privcomp.proto.v1 import peer_pb2, peer_pb2_grpc
from privcomp.rpc.channel import CHUNK_SIZE
from privcomp.transport.base import TransportStats

#: Default cap on a job's pending peer bytes (received, not yet consumed): 2 GiB, above any
#: protocol round in use (10^8 Beaver multiplications send 1.6 GB in one message).
DEFAULT_MAX_PENDING_BYTES = 2 << 30


class JobMailbox:
    """Messages received for one job, keyed by ``(sender, tag)``.

    The bytes received for the job and not yet consumed by ``get`` (including messages still
    being reassembled) are capped: a peer that sends under tags nobody reads cannot grow this
    worker's memory without bound. The message that would cross the cap is refused at the
    chunk that crosses it (:meth:`reserve`), and the mailbox is closed with a
    :class:`~privcomp.errors.PeerFailedError` naming the sender, which fails the job.

    Parameters
    ----------
    job_id:
        The job.
    n_parties:
        Number of parties (senders are ``0 .. n_parties - 1``).
    max_pending_bytes:
        Cap on the job's received but not yet consumed bytes.
    names:
        Party names by index (to name the sender in errors; ``#i`` if absent).
    """

    def __init__(
        self,
        job_id: str,
        n_parties: int,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        names: Sequence[str] = (),
    ) -> None:
        if max_pending_bytes <= 0:
            raise ConfigurationError("max_pending_bytes must be positive")
        self.job_id = job_id
        self.n_parties = n_parties
        self.max_pending_bytes = max_pending_bytes
        self._names = tuple(names)
        self._slots: dict[tuple[int, str], asyncio.Future[bytes]] = {}
        self._sizes: dict[tuple[int, str], int] = {}
        self._pending = 0
        self._closed: BaseException | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received (or reserved by messages in reassembly) and not yet consumed."""
        return self._pending

    def _name(self, sender: int) -> str:
        return self._names[sender] if 0 <= sender < len(self._names) else f"#{sender}"

    def _check_open(self) -> None:
        if self._closed is not None:
            # The close reason, e.g. the PeerFailedError of a sender that exceeded the cap.
            raise self._closed

    def _slot(self, sender: int, tag: str) -> asyncio.Future[bytes]:
        key = (sender, tag)
        fut = self._slots.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._slots[key] = fut
        return fut

    def reserve(self, sender: int, nbytes: int) -> None:
        """Count ``nbytes`` more of a message from ``sender`` against the cap.

        Raises
        ------
        ResourceLimitExceededError
            The job's pending bytes would exceed the cap: nothing is counted, and the mailbox
            is closed with a PeerFailedError naming the sender (the job fails).
        """
        self._check_open()
        if self._pending + nbytes > self.max_pending_bytes:
            name = self._name(sender)
            msg = (
                f"party {name} exceeded the cap of {self.max_pending_bytes} pending peer bytes "
                f"in job {self.job_id}"
            )
            self.close(PeerFailedError(msg, party=name))
            raise ResourceLimitExceededError(msg)
        self._pending += nbytes

    def release(self, nbytes: int) -> None:
        """Return bytes reserved by a message that was not delivered."""
        self._pending = max(0, self._pending - nbytes)

    def deliver(self, sender: int, tag: str, payload: bytes, *, reserved: bool = False) -> None:
        """Store a reassembled message (a second message under the same key is refused).

        ``reserved``: the payload's bytes were already counted chunk by chunk (PeerService);
        they are released again if the message is refused here.
        """
        try:
            self._check_open()
            if not 0 <= sender < self.n_parties:
                raise ConfigurationError(f"sender index out of range for job {self.job_id}")
            fut = self._slot(sender, tag)
            if fut.done():
                raise ConfigurationError(f"duplicate message from party {sender} under tag {tag!r}")
        except BaseException:
            if reserved:
                self.release(len(payload))
            raise
        if not reserved:
            self.reserve(sender, len(payload))
        self._sizes[(sender, tag)] = len(payload)
        fut.set_result(payload)

    async def get(self, sender: int, tag: str, wait_s: float) -> bytes:
        """Wait for the message of ``sender`` under ``tag`` (raises TimeoutError)."""
        self._check_open()
        fut = self._slot(sender, tag)
        async with asyncio.timeout(wait_s):
            payload = await asyncio.shield(fut)
        del self._slots[(sender, tag)]  # free memory; a tag is used once
        self.release(self._sizes.pop((sender, tag), 0))
        return payload

    def close(self, reason: BaseException | None = None) -> None:
        """Fail every pending receive and refuse further deliveries."""
        if self._closed is not None:
            return  # keep the first reason (e.g. the sender that exceeded the cap)
        self._closed = reason or TransportError(f"job {self.job_id} is closed")
        for fut in self._slots.values():
            if not fut.done():
                fut.set_exception(self._closed)
                fut.exception()  # mark retrieved: nobody may be waiting
        self._slots.clear()
        self._sizes.clear()
        self._pending = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundDeadlines:
    """Per-round and global deadlines of one job.

    Parameters
    ----------
    round_s:
        Longest wait for one message (send or receive).
    job_deadline_unix:
        Absolute end of the job (``time.time()`` scale).
    """

    round_s: float = 30.0
    job_deadline_unix: float = float("inf")

    def remaining(self) -> float:
        """Seconds left for the next round (≤ round_s, never past the job deadline)."""
        return max(0.0, min(self.round_s, self.job_deadline_unix - time.time()))


#: Full method name of PeerService.Deliver (the transport sends pre-encoded chunks to it).
DELIVER_METHOD = "/privcomp.proto.v1.PeerService/Deliver"
_MASK64 = (1 << 64) - 1


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _scalar_field(key: int, value: int) -> bytes:
    # proto3 omits zeros; negative int32/int64 are sign-extended to 10 bytes, as protobuf does.
    return b"" if value == 0 else bytes((key,)) + _varint(value & _MASK64)


def _bytes_field(key: int, value: bytes) -> bytes:
    return b"" if not value else bytes((key,)) + _varint(len(value)) + value


def encode_chunk(
    job_id: str, tag: str, sender: int, index: int, total: int, data: bytes | memoryview
) -> bytes:
    """The wire bytes of ``DeliverRequest(job_id, tag, sender, index, total, data)``.

    Byte-identical to ``SerializeToString()`` (fields in number order, zeros omitted), but the
    chunk's data is copied once, straight into the output, instead of into a message and then
    again by the serializer: the receiver parses it with the generated code as usual.
    """
    head = b"".join(
        (
            _bytes_field(0x0A, job_id.encode()),  # field 1, length-delimited
            _bytes_field(0x12, tag.encode()),  # field 2
            _scalar_field(0x18, sender),  # field 3, varint
            _scalar_field(0x20, index),  # field 4
            _scalar_field(0x28, total),  # field 5
        )
    )
    if not len(data):
        return head
    return b"".join((head, b"\x32", _varint(len(data)), data))  # field 6, length-delimited


@dataclass(frozen=True, slots=True)
class RawChunk:
    """One ``DeliverRequest`` parsed from its wire bytes (:func:`decode_chunk`)."""

    job_id: str
    tag: str
    sender: int
    chunk_index: int
    total_length: int
    data: memoryview  # a view into the wire bytes: no copy


_INT32 = 1 << 31
_INT64 = 1 << 63


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos`` (at most 10 bytes, within ``buf``): (value, next pos)."""
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        b = buf[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value > _MASK64:
                break  # a 10th byte carrying more than the top bit
            return value, i + 1
        shift += 7
    raise ConfigurationError("malformed peer chunk: truncated or overlong varint")


def decode_chunk(buf: bytes) -> RawChunk:
    """Parse the wire bytes of one ``DeliverRequest`` (the inverse of :func:`encode_chunk`).

    Strict: only fields 1-6, each at most once and with its declared wire type, varints of at
    most 10 bytes, int32 values in range, lengths within the buffer, UTF-8 strings. Fields may
    come in any order and zeros may be omitted (proto3), so ``SerializeToString`` output parses
    too. The data stays a view into ``buf``.

    Raises
    ------
    ConfigurationError
        The bytes are not a well-formed ``DeliverRequest`` (→ INVALID_ARGUMENT).
    """
    ints = [0, 0, 0]  # sender, chunk_index, total_length (fields 3-5, varint)
    blobs: list[memoryview] = [memoryview(b"")] * 3  # job_id, tag, data (fields 1, 2, 6)
    seen = 0
    view = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if not 1 <= field <= 6 or seen >> field & 1:
            raise ConfigurationError("malformed peer chunk: unknown or repeated field")
        seen |= 1 << field
        if field in (1, 2, 6):
            if wire != 2:
                raise ConfigurationError("malformed peer chunk: wrong wire type")
            n, pos = _read_varint(buf, pos)
            if n > end - pos:
                raise ConfigurationError("malformed peer chunk: length beyond the message")
            blobs[0 if field == 1 else 1 if field == 2 else 2] = view[pos : pos + n]
            pos += n
        else:
            if wire != 0:
                raise ConfigurationError("malformed peer chunk: wrong wire type")
            v, pos = _read_varint(buf, pos)
            v = v - (1 << 64) if v >= _INT64 else v  # two's complement, as protobuf
            if field != 5 and not -_INT32 <= v < _INT32:
                raise ConfigurationError("malformed peer chunk: int32 field out of range")
            ints[field - 3] = v
    try:
        job_id, tag = str(blobs[0], "utf-8"), str(blobs[1], "utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError("malformed peer chunk: string field is not UTF-8") from exc
    return RawChunk(job_id, tag, ints[0], ints[1], ints[2], blobs[2])


def chunk_requests(
    job_id: str, tag: str, sender: int, payload: bytes, chunk_size: int = CHUNK_SIZE
) -> list[peer_pb2.DeliverRequest]:
    """Split a payload into ``DeliverRequest`` chunks of at most ``chunk_size`` bytes."""
    total = len(payload)
    view = memoryview(payload)
    starts = range(0, total, chunk_size) if total else range(1)
    return [
        peer_pb2.DeliverRequest(
            job_id=job_id,
            tag=tag,
            sender=sender,
            chunk_index=i,
            total_length=total,
            data=bytes(view[s : s + chunk_size]),
        )
        for i, s in enumerate(starts)
    ]


class GrpcTransport:
    """:class:`~privcomp.transport.base.Transport` over gRPC PeerService streams.

    Parameters
    ----------
    job_id:
        The job whose messages this transport carries.
    party_id:
        This party's index.
    party_names:
        Names of all parties in protocol order (for error messages).
    channels:
        Party index → channel to that party's worker (all peers except ourselves).
    mailbox:
        Where the local PeerService puts messages for this job.
    deadlines:
        Per-round and global deadlines.
    n_parties:
        Number of *computing* parties the protocol sees (default: all names). A helper party
        (the dealer) may follow them in ``party_names`` and is still reachable by index.
    """

    def __init__(
        self,
        *,
        job_id: str,
        party_id: int,
        party_names: Sequence[str],
        channels: dict[int, grpc.aio.Channel],
        mailbox: JobMailbox,
        deadlines: RoundDeadlines,
        n_parties: int | None = None,
    ) -> None:
        self._job_id = job_id
        self._n = n_parties if n_parties is not None else len(party_names)
        self._party_id = party_id
        self._names = list(party_names)
        self._stubs = {p: peer_pb2_grpc.PeerServiceStub(ch) for p, ch in channels.items()}
        # Deliver with pre-encoded chunks (encode_chunk): one copy of the data per chunk.
        self._deliver: dict[int, grpc.aio.StreamUnaryMultiCallable[bytes, Any]] = {
            p: ch.stream_unary(
                DELIVER_METHOD, response_deserializer=peer_pb2.DeliverResponse.FromString
            )
            for p, ch in channels.items()
        }
        self._mailbox = mailbox
        self._deadlines = deadlines
        self._stats = TransportStats()
        self._closed = False

    @property
    def party_id(self) -> int:
        """This party's index."""
        return self._party_id

    @property
    def n_parties(self) -> int:
        """Number of computing parties."""
        return self._n

    @property
    def stats(self) -> TransportStats:
        """Traffic counters."""
        return self._stats

    def _name(self, p: int) -> str:
        return self._names[p] if 0 <= p < len(self._names) else f"#{p}"

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        """Send ``payload`` to party ``to`` as a stream of ≤ 1 MiB chunks."""
        if self._closed:
            raise TransportError(f"transport of job {self._job_id} is closed")
        if to == self._party_id:
            self._mailbox.deliver(to, tag, bytes(payload))
            return
        deliver = self._deliver.get(to)
        if deliver is None:
            raise ConfigurationError(f"no channel to party index {to}")
        data = bytes(payload)  # no copy if it already is bytes; freezes a bytearray otherwise
        job_id, me = self._job_id, self._party_id

        async def gen() -> AsyncIterator[bytes]:
            # Lazily, so at most a chunk or two are encoded ahead of the network.
            view = memoryview(data)
            for i, s in enumerate(range(0, len(data), CHUNK_SIZE) if data else range(1)):
                yield encode_chunk(job_id, tag, me, i, len(data), view[s : s + CHUNK_SIZE])

        try:
            await deliver(gen(), timeout=max(self._deadlines.remaining(), 0.001))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError) as exc:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "CLOSED"
            raise PeerFailedError(
                f"sending to party {self._name(to)} failed ({code}) in job {self._job_id}",
                party=self._name(to),
            ) from exc
        self._stats.messages_sent += 1
        self._stats.bytes_sent += len(payload)
        self._stats.per_peer_bytes_sent[to] = self._stats.per_peer_bytes_sent.get(to, 0) + len(
            payload
        )

    async def recv(self, frm: int, tag: str) -> bytes:
        """Receive the message ``frm`` sent under ``tag`` within the round deadline."""
        if self._closed:
            raise TransportError(f"transport of job {self._job_id} is closed")
        timeout = self._deadlines.remaining()
        try:
            payload = await self._mailbox.get(frm, tag, timeout)
        except TimeoutError as exc:
            raise PeerFailedError(
                f"no message from party {self._name(frm)} within {timeout:.1f} s in job "
                f"{self._job_id}",
                party=self._name(frm),
            ) from exc
        self._stats.messages_received += 1
        self._stats.bytes_received += len(payload)
        return payload

    async def close(self) -> None:
        """Close the mailbox; channels belong to the caller."""
        self._closed = True
        self._mailbox.close()
