"""InMemoryNetwork: matching by (sender, tag), stats, delays/reordering, deadlines, abort."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from privcomp.core.codec import array_from_bytes, array_to_bytes
from privcomp.core.rng import InsecureSeededRandom
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    ProtocolAbort,
    ProtocolError,
    RoundTimeoutError,
    TransportError,
)
from privcomp.protocols.context import decode_ring, encode_ring
from privcomp.transport.base import Transport
from privcomp.transport.memory import InMemoryNetwork


def test_transports_implement_protocol() -> None:
    net = InMemoryNetwork(3)
    assert all(isinstance(t, Transport) for t in net.transports)
    assert [t.party_id for t in net.transports] == [0, 1, 2]
    assert all(t.n_parties == 3 for t in net.transports)
    with pytest.raises(ConfigurationError):
        InMemoryNetwork(1)


async def test_receive_before_and_after_send_matches_by_tag() -> None:
    net = InMemoryNetwork(2)
    t0, t1 = net.transports
    pending = asyncio.ensure_future(t1.recv(0, "b"))
    await t0.send(1, "a", b"first")
    await t0.send(1, "b", b"second")
    assert await pending == b"second"
    assert await t1.recv(0, "a") == b"first"


async def test_payload_is_passed_without_copy_and_counted() -> None:
    net = InMemoryNetwork(3)
    t0, t1, _t2 = net.transports
    payload = bytes(1000)
    await t0.send(1, "x", payload)
    await t0.send(2, "x", payload)
    got = await t1.recv(0, "x")
    assert got is payload
    st = t0.stats
    assert (st.messages_sent, st.bytes_sent) == (2, 2000)
    assert st.per_peer_bytes_sent == {1: 1000, 2: 1000}
    assert (t1.stats.messages_received, t1.stats.bytes_received) == (1, 1000)
    assert net.tags_used() == {"x"}


async def test_delayed_reordered_delivery_keeps_matching() -> None:
    net = InMemoryNetwork(2, delay=0.01, reorder=True, rng=InsecureSeededRandom(3))
    t0, t1 = net.transports
    for i in range(30):
        await t0.send(1, f"m{i}", bytes([i]))
    got = await asyncio.gather(*(t1.recv(0, f"m{i}") for i in range(30)))
    assert got == [bytes([i]) for i in range(30)]


async def test_receive_deadline_raises_round_timeout() -> None:
    net = InMemoryNetwork(2, timeout=0.05)
    start = time.perf_counter()
    with pytest.raises(RoundTimeoutError) as info:
        await net.transports[0].recv(1, "7:open")
    assert time.perf_counter() - start < 1.0
    assert isinstance(info.value, TimeoutError)


async def test_abort_wakes_pending_and_later_receives() -> None:
    net = InMemoryNetwork(3, timeout=30)
    waiting = asyncio.ensure_future(net.transports[0].recv(2, "t"))
    await asyncio.sleep(0)
    net.abort(2, "crashed")
    with pytest.raises(ProtocolAbort) as info:
        await asyncio.wait_for(waiting, 1.0)
    assert info.value.party_id == 2
    with pytest.raises(ProtocolError):
        await net.transports[1].recv(0, "u")
    with pytest.raises(ProtocolError):
        await net.transports[1].send(0, "u", b"")


async def test_invalid_peer_closed_transport_and_duplicate() -> None:
    net = InMemoryNetwork(2, timeout=0.5)
    t0, t1 = net.transports
    with pytest.raises(TransportError):
        await t0.send(0, "x", b"")
    with pytest.raises(TransportError):
        await t0.recv(5, "x")
    await t0.send(1, "dup", b"1")
    await t0.send(1, "dup", b"2")  # diverged programs: the job aborts rather than overwrite
    with pytest.raises(ProtocolError):
        await t1.recv(0, "other")
    await net.close()
    with pytest.raises(TransportError):
        await t0.send(1, "y", b"")


def test_ring_fast_path_matches_the_versioned_codec() -> None:
    a = np.arange(5, dtype=np.uint64)
    b = (np.arange(6, dtype=np.uint64) * np.uint64(2**61)).reshape(2, 3)
    payload = encode_ring([a, b])
    assert payload == array_to_bytes(np.concatenate([a, b.ravel()]))
    view = decode_ring(payload, 11)
    np.testing.assert_array_equal(view, array_from_bytes(payload))
    assert not view.flags.writeable  # a view on the received bytes, not a copy
    wrong_dtype = array_to_bytes(np.zeros(11, dtype=np.int64))
    for bad in (payload[:-8], b"XXXX" + payload[4:], wrong_dtype):
        with pytest.raises(CodecError):
            decode_ring(bad, 11)
    with pytest.raises(CodecError):
        decode_ring(payload, 10)
