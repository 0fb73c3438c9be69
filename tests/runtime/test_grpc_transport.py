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

from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import PeerFailedError
from privcomp.proto.v1 import peer_pb2, peer_pb2_grpc
from privcomp.protocols.aggregate import secure_sum
from privcomp.protocols.arithmetic import mul_fixed
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.protocols.primitives import input_arrays, reveal
from privcomp.rpc.auth import AuthInterceptor
from privcomp.rpc.channel import add_port, aio_channel, server_options
from privcomp.rpc.pki import Identity
from privcomp.rpc.transport import GrpcTransport, JobMailbox, RoundDeadlines
from privcomp.services.peer import MailboxEntry, PeerServicer
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
        peer_pb2_grpc.add_PeerServiceServicer_to_server(
            PeerServicer(lambda j, e=entry: e if j == job else None), server
        )
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
