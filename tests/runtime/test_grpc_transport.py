"""GrpcTransport: chunking, reassembly, deadlines and the very same protocol functions as on the
in-memory network (Beaver multiplication with dealer triples, secure sum), 2 and 3 parties."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import ConfigurationError, PeerFailedError
from privcomp.proto.v1 import peer_pb2
from privcomp.protocols.aggregate import secure_sum
from privcomp.protocols.arithmetic import mul_fixed
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.primitives import input_arrays, reveal
from privcomp.rpc.auth import AuthInterceptor
from privcomp.rpc.channel import add_port, aio_channel, server_options
from privcomp.rpc.pki import Identity
from privcomp.rpc.transport import (
    DELIVER_METHOD,
    GrpcTransport,
    JobMailbox,
    RoundDeadlines,
    decode_chunk,
    encode_chunk,
)
from privcomp.services.peer import MailboxEntry, PeerServicer, add_peer_servicer
from privcomp.services.server import WORKER_RULES
from privcomp.transport.memory import InMemoryNetwork

NAMES = ("hospital_a", "hospital_b", "insurer")


@asynccontextmanager
async def mesh(
    ids: dict[str, Identity],
    n: int,
    round_s: float = 10.0,
    job: str = "job1",
    servers: list[grpc.aio.Server] | None = None,
) -> AsyncIterator[list[GrpcTransport]]:
    """``n`` peer servers on 127.0.0.1:0 and one GrpcTransport per party."""
    names = NAMES[:n]
    boxes = [JobMailbox(job, n) for _ in range(n)]
    servers = servers if servers is not None else []
    ports = []
    for i, name in enumerate(names):
        entry = MailboxEntry(boxes[i], names)
        server = grpc.aio.server(
            interceptors=(AuthInterceptor(WORKER_RULES),), options=server_options()
        )
        add_peer_servicer(PeerServicer(lambda j, e=entry: e if j == job else None), server)
        ports.append(add_port(server, "127.0.0.1:0", ids[name]))
        await server.start()
        servers.append(server)
    transports = []
    channels = []
    for i, name in enumerate(names):
        chans = {j: aio_channel(f"127.0.0.1:{ports[j]}", ids[name]) for j in range(n) if j != i}
        channels += list(chans.values())
        transports.append(
            GrpcTransport(
                job_id=job,
                party_id=i,
                party_names=names,
                channels=chans,
                mailbox=boxes[i],
                deadlines=RoundDeadlines(round_s=round_s),
            )
        )
    try:
        yield transports
    finally:
        for ch in channels:
            await ch.close(None)
        for s in servers:
            await s.stop(None)


async def _beaver(transports: list[object], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    n = len(transports)
    dealer = TrustedDealer(n, rng=InsecureSeededRandom(5))
    ctxs = [
        PartyContext(transport=t, triples=dealer, rng=InsecureSeededRandom(10 + i))  # type: ignore[arg-type]
        for i, t in enumerate(transports)
    ]

    async def party(ctx: PartyContext) -> np.ndarray:
        fx = ctx.fixed
        mine = (
            fx.encode(x)
            if ctx.party_id == 0
            else fx.encode(y)
            if ctx.party_id == 1
            else (np.zeros(0, np.uint64))
        )
        shares = await input_arrays(ctx, mine)
        z = await mul_fixed(ctx, shares[0][0], shares[1][0], fx.frac_bits)
        opened = await reveal(ctx, z)
        # secure sum of every party's private value (party i contributes i + 0.5)
        total = await secure_sum(ctx, fx.encode(np.array([ctx.party_id + 0.5])))
        return np.concatenate([fx.decode(opened), fx.decode(total)])

    return list(await asyncio.gather(*(party(c) for c in ctxs)))


@pytest.mark.parametrize("n", [2, 3])
async def test_beaver_over_grpc_equals_in_memory_and_numpy(
    pki: tuple[Path, dict[str, object]], n: int
) -> None:
    gen = np.random.default_rng(n)
    x, y = np.round(gen.normal(0, 30, 300), 3), np.round(gen.normal(5, 3, 300), 3)
    async with mesh(pki[1], n) as ts:  # type: ignore[arg-type]
        over_grpc = await _beaver(ts, x, y)
        assert all(t.stats.bytes_sent > 0 for t in ts)
    mem = await _beaver(InMemoryNetwork(n).transports, x, y)
    tol = 2.0**-14 * (np.abs(x) + np.abs(y) + 1)
    for g, m in zip(over_grpc, mem, strict=True):
        np.testing.assert_array_equal(g, m)  # same code, same seeds: identical output
        assert np.all(np.abs(g[:-1] - x * y) <= tol)
        assert g[-1] == sum(i + 0.5 for i in range(n))


async def test_large_and_empty_messages_and_reordering(
    pki: tuple[Path, dict[str, object]],
) -> None:
    big = np.random.default_rng(1).bytes(3 * (1 << 20) + 12345)  # 4 chunks
    async with mesh(pki[1], 2) as (t0, t1):  # type: ignore[arg-type]
        await asyncio.gather(t0.send(1, "b", big), t0.send(1, "a", b""), t0.send(1, "c", b"x"))
        assert await t1.recv(0, "c") == b"x"
        assert await t1.recv(0, "a") == b""
        assert await t1.recv(0, "b") == big
        assert t0.stats.bytes_sent == len(big) + 1


async def test_round_deadline_names_the_silent_peer(pki: tuple[Path, dict[str, object]]) -> None:
    async with mesh(pki[1], 3, round_s=0.3) as ts:  # type: ignore[arg-type]
        t0 = time.monotonic()
        with pytest.raises(PeerFailedError) as err:
            await ts[0].recv(2, "never")
        assert err.value.party == "insurer"
        assert "insurer" in str(err.value)
        assert time.monotonic() - t0 < 1.5


async def test_peer_cannot_speak_for_another_party(pki: tuple[Path, dict[str, object]]) -> None:
    ids = pki[1]
    async with mesh(ids, 3) as ts:  # type: ignore[arg-type]
        # hospital_b's certificate, claiming to be sender 0 (hospital_a), to insurer's server
        stub_ch = ts[1]._stubs[2]  # the test reaches into the transport

        async def chunks() -> AsyncIterator[peer_pb2.DeliverRequest]:
            yield peer_pb2.DeliverRequest(
                job_id="job1", tag="t", sender=0, total_length=1, data=b"x"
            )

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_ch.Deliver(chunks(), timeout=3)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        async def unknown_job() -> AsyncIterator[peer_pb2.DeliverRequest]:
            yield peer_pb2.DeliverRequest(job_id="other", tag="t", sender=1, total_length=0)

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_ch.Deliver(unknown_job(), timeout=3)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        async def lying_length() -> AsyncIterator[peer_pb2.DeliverRequest]:
            yield peer_pb2.DeliverRequest(
                job_id="job1", tag="t", sender=1, total_length=10 * 2**30, data=b"abc"
            )

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub_ch.Deliver(lying_length(), timeout=3)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_send_to_a_dead_peer_names_it(pki: tuple[Path, dict[str, object]]) -> None:
    servers: list[grpc.aio.Server] = []
    async with mesh(pki[1], 2, round_s=2.0, servers=servers) as ts:  # type: ignore[arg-type]
        await servers[1].stop(None)  # hospital_b's worker is gone
        t0 = time.monotonic()
        with pytest.raises(PeerFailedError) as err:
            await ts[0].send(1, "t", b"x")
        assert err.value.party == "hospital_b"
        assert time.monotonic() - t0 < 2.5


# --- raw chunk parser (decode_chunk, used by add_peer_servicer) ---------------------------------


@settings(max_examples=200, deadline=None)
@given(
    job_id=st.text(max_size=40),
    tag=st.text(max_size=40),
    sender=st.integers(-(2**31), 2**31 - 1),
    index=st.integers(-(2**31), 2**31 - 1),
    total=st.integers(-(2**63), 2**63 - 1),
    data=st.binary(max_size=300),
)
def test_decode_chunk_round_trips_encode_chunk(
    job_id: str, tag: str, sender: int, index: int, total: int, data: bytes
) -> None:
    wire = encode_chunk(job_id, tag, sender, index, total, data)
    ref = peer_pb2.DeliverRequest(
        job_id=job_id, tag=tag, sender=sender, chunk_index=index, total_length=total, data=data
    )
    assert wire == ref.SerializeToString()
    got = decode_chunk(wire)
    assert (got.job_id, got.tag, got.sender, got.chunk_index, got.total_length) == (
        job_id,
        tag,
        sender,
        index,
        total,
    )
    assert bytes(got.data) == data


def test_decode_chunk_accepts_any_field_order() -> None:
    wire = b"\x32\x02hi" + b"\x28\x02" + b"\x0a\x01j" + b"\x18\x01"
    got = decode_chunk(wire)
    assert (got.job_id, got.tag, got.sender, got.chunk_index, got.total_length) == (
        "j",
        "",
        1,
        0,
        2,
    )
    assert bytes(got.data) == b"hi"


GOOD = encode_chunk("job1", "t", 1, 0, 3, b"abc")


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (GOOD[:-1], "length beyond"),  # data shorter than its length prefix
        (GOOD + b"\x32\x01z", "repeated"),  # a field twice
        (GOOD + b"\x38\x01", "unknown"),  # field 7
        (b"\x02\x00" + GOOD, "unknown"),  # field 0
        (b"\x1a\x01x", "wire type"),  # sender (varint) sent length-delimited
        (b"\x0b", "wire type"),  # job_id as a start-group
        (b"\x18", "varint"),  # key without value
        (b"\x18\xff\xff", "varint"),  # truncated varint
        (b"\x18" + b"\xff" * 10 + b"\x01", "varint"),  # 11-byte varint
        (b"\x28" + b"\xff" * 9 + b"\x02", "varint"),  # 10th byte beyond 64 bits
        (b"\x18\x80\x80\x80\x80\x08", "out of range"),  # sender = 2^31
        (b"\x0a\x02\xff\xfe", "UTF-8"),  # job_id not UTF-8
        (b"\x32\x80\x80\x80\x80\x10", "length beyond"),  # data claims 4 GiB
    ],
)
def test_decode_chunk_refuses_malformed_bytes(wire: bytes, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        decode_chunk(wire)


async def test_malformed_raw_chunks_are_invalid_argument(
    pki: tuple[Path, dict[str, object]],
) -> None:
    async with mesh(pki[1], 2) as (t0, t1):  # type: ignore[arg-type]
        deliver = t1._deliver[0]  # hospital_b's raw Deliver to hospital_a (reaches in)
        for bad in (
            GOOD[:-1],  # length mismatch
            b"\x18\xff\xff",  # truncated varint
            GOOD + b"\x38\x01",  # unknown field number
            b"\x1a\x01x",  # wrong wire type
            encode_chunk("job1", "t", 1, 0, 5, b"abc"),  # shorter than its declared length
            encode_chunk("job1", "t", 1, 1, 3, b"abc"),  # first chunk with index 1
        ):

            async def one(b: bytes = bad) -> AsyncIterator[bytes]:
                yield b

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await deliver(one(), timeout=3)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert t0._mailbox.pending_bytes == 0  # nothing of the refused streams kept
        # The server still serves well-formed chunks.
        await t1.send(0, "ok", b"abc")
        assert await t0.recv(1, "ok") == b"abc"
        assert DELIVER_METHOD.endswith("/Deliver")
