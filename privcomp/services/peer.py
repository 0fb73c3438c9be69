"""PeerService: receives chunked peer messages and hands them to the job's mailbox (services).

Each ``Deliver`` call carries one message; every chunk repeats ``job_id``, ``tag``, ``sender``
and ``total_length``, and chunk indices count up from 0. The caller's certificate identity must
be the job's party at index ``sender`` (a party cannot speak for another). Memory grows with the
data actually received, and a declared ``total_length`` above :data:`MAX_MESSAGE_BYTES` is
refused at the first chunk. Every chunk is counted against the job's cap on pending peer bytes
(:class:`~privcomp.rpc.transport.JobMailbox`, worker setting ``max_pending_peer_bytes``): the
chunk that would cross it is refused with RESOURCE_EXHAUSTED and the job fails naming the sender.

Registered with :func:`add_peer_servicer`, the handler gets each chunk's wire bytes and parses
them strictly itself (:func:`~privcomp.rpc.transport.decode_chunk`), copying the data once, as
it arrives, into the message; registered with the generated
``add_PeerServiceServicer_to_server`` it gets parsed ``DeliverRequest``s and behaves the same.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from privcomp.errors import ConfigurationError, PrivcompError
from privcomp.proto.v1 import peer_pb2, peer_pb2_grpc
from privcomp.rpc.channel import CHUNK_SIZE, peer_identity
from privcomp.rpc.status import code_for
from privcomp.rpc.transport import DELIVER_METHOD, JobMailbox, RawChunk, decode_chunk

#: Largest message a peer may declare (4 GiB, far above any protocol round: 10^8 Beaver
#: multiplications send 1.6 GB). Checked on the first chunk, before anything is buffered.
MAX_MESSAGE_BYTES = 4 << 30

logger = logging.getLogger(__name__)


def _as_raw(item: bytes | peer_pb2.DeliverRequest) -> RawChunk:
    """A chunk as raw wire bytes (:func:`add_peer_servicer`) or a parsed message (generated
    registration), in one form."""
    if isinstance(item, bytes):
        return decode_chunk(item)
    return RawChunk(
        item.job_id,
        item.tag,
        item.sender,
        item.chunk_index,
        item.total_length,
        memoryview(item.data),
    )


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    """A job's mailbox and the party names allowed to send into it, by index."""

    mailbox: JobMailbox
    names: tuple[str, ...]


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    """Reassembles messages for the jobs known to ``lookup``.

    Parameters
    ----------
    lookup:
        Job id → :class:`MailboxEntry` (or None for an unknown job).
    """

    def __init__(self, lookup: Callable[[str], MailboxEntry | None]) -> None:
        self._lookup = lookup

    async def _assemble(
        self, request_iterator: AsyncIterator[bytes | peer_pb2.DeliverRequest], caller: str | None
    ) -> tuple[MailboxEntry, int, str, bytes]:
        first: RawChunk | None = None
        entry: MailboxEntry | None = None
        buf = io.BytesIO()  # grows with the data received, as a bytes object
        count = 0
        size = 0
        try:
            async for item in request_iterator:
                chunk = _as_raw(item)
                if first is None:
                    first = chunk
                    entry = self._check_first(chunk, caller)
                elif (
                    chunk.job_id != first.job_id
                    or chunk.tag != first.tag
                    or chunk.sender != first.sender
                    or chunk.total_length != first.total_length
                ):
                    raise ConfigurationError("chunk header changed within one message")
                data = chunk.data
                if chunk.chunk_index != count or len(data) > CHUNK_SIZE:
                    raise ConfigurationError("chunk out of order or larger than 1 MiB")
                if size + len(data) > first.total_length:
                    raise ConfigurationError("message longer than its declared length")
                # Counted against the job's pending-bytes cap before it is kept: the chunk
                # that would cross the cap is refused and nothing more is buffered.
                if entry is not None:
                    entry.mailbox.reserve(first.sender, len(data))
                size += len(data)
                # The one copy of the data, as each chunk arrives (overlapping the network)
                # rather than a join of all chunks after the last one.
                buf.write(data)
                count += 1
            if first is None or entry is None:
                raise ConfigurationError("empty message stream")
            if size != first.total_length:
                raise ConfigurationError("message shorter than its declared length")
        except BaseException:
            if entry is not None:
                entry.mailbox.release(size)  # e.g. a stream cut off mid-message
            raise
        # getvalue() hands over BytesIO's own bytes object (trimmed in place), no copy.
        return entry, first.sender, first.tag, buf.getvalue()

    def _check_first(self, chunk: RawChunk, caller: str | None) -> MailboxEntry:
        entry = self._lookup(chunk.job_id)
        if entry is None:
            raise ConfigurationError("message for an unknown job")
        if not 0 <= chunk.sender < len(entry.names) or caller != entry.names[chunk.sender]:
            raise ConfigurationError("sender index does not match the caller's identity")
        if not 0 <= chunk.total_length <= MAX_MESSAGE_BYTES:
            raise ConfigurationError(
                f"declared message length outside [0, {MAX_MESSAGE_BYTES}] bytes"
            )
        return entry

    async def Deliver(
        self, request_iterator: AsyncIterator[bytes | peer_pb2.DeliverRequest], context: Any
    ) -> peer_pb2.DeliverResponse:
        """Reassemble one message and deliver it to the job's mailbox."""
        caller = peer_identity(context.auth_context())
        try:
            entry, sender, tag, payload = await self._assemble(request_iterator, caller)
            entry.mailbox.deliver(sender, tag, payload, reserved=True)
        except PrivcompError as exc:
            code = code_for(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT and "unknown job" in str(exc):
                code = grpc.StatusCode.NOT_FOUND
            if "identity" in str(exc):
                code = grpc.StatusCode.PERMISSION_DENIED
            logger.info("refused peer message: %s", exc)
            await context.abort(code, str(exc))
        return peer_pb2.DeliverResponse(received=len(payload))


def add_peer_servicer(servicer: PeerServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` for ``PeerService.Deliver`` with chunks handed over as raw bytes.

    Replaces ``peer_pb2_grpc.add_PeerServiceServicer_to_server``: the chunks are parsed by
    :func:`~privcomp.rpc.transport.decode_chunk` (strict; malformed → INVALID_ARGUMENT) and
    their data is copied once, into the message, instead of into a protobuf message first.
    """
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_unary_rpc_method_handler(
        servicer.Deliver,
        request_deserializer=None,  # grpc hands the handler the request bytes
        response_serializer=peer_pb2.DeliverResponse.SerializeToString,
    )
    service, method = DELIVER_METHOD.lstrip("/").split("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
