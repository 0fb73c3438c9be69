"""In-process network of N parties on one asyncio event loop (layer: transport).

Every party gets an :class:`InMemoryTransport`. A message is matched by ``(sender, tag)`` in the
receiver's mailbox, like MPyC's program-counter buffers: a receive that comes first waits on a
future, a message that comes first is parked until its receive. Payloads are immutable ``bytes``
passed by reference (no copy). Optional random delays reorder deliveries, to test that protocols
never depend on arrival order. Receives have a per-round deadline (:class:`RoundTimeoutError`),
and :meth:`InMemoryNetwork.abort` makes every pending and future receive fail at once with
:class:`ProtocolAbort`, so a crashed party never leaves the others hanging.

References
----------
* B. Schoenmakers, MPyC — Python package for secure multiparty computation (asyncio runtime with
  program-counter-keyed message buffers), https://github.com/lschoe/mpyc.
"""

from __future__ import annotations

import asyncio
import logging

from privcomp.core.rng import RandomSource, SystemRandomSource
from privcomp.errors import (
    ConfigurationError,
    ProtocolAbort,
    ProtocolError,
    RoundTimeoutError,
    TransportError,
)
from privcomp.transport.base import Transport, TransportStats

logger = logging.getLogger(__name__)

#: Default maximum wait of one receive, in seconds.
DEFAULT_ROUND_TIMEOUT = 60.0
#: Maximum random delay used by ``reorder=True`` when no ``delay`` is given, in seconds.
_REORDER_DELAY = 0.001

_Key = tuple[int, str]


class InMemoryTransport:
    """One party's endpoint on an :class:`InMemoryNetwork` (implements ``Transport``)."""

    def __init__(self, network: InMemoryNetwork, party_id: int) -> None:
        self._net = network
        self._party_id = party_id
        self._stats = TransportStats()
        self._closed = False
        #: Tags this party sent under (one tag per communication round in privcomp protocols).
        self.tags_sent: set[str] = set()

    def __repr__(self) -> str:
        return f"InMemoryTransport(party={self._party_id}, n_parties={self._net.n_parties})"

    @property
    def party_id(self) -> int:
        """This party's index."""
        return self._party_id

    @property
    def n_parties(self) -> int:
        """Number of parties on the network."""
        return self._net.n_parties

    @property
    def stats(self) -> TransportStats:
        """Traffic counters of this party."""
        return self._stats

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        """Deliver ``payload`` to party ``to`` under ``tag`` (never blocks; no copy)."""
        if self._closed:
            raise TransportError(f"party {self._party_id}: transport is closed")
        if not 0 <= to < self._net.n_parties or to == self._party_id:
            raise TransportError(f"party {self._party_id}: invalid peer index {to}")
        self._net.check_abort()
        st = self._stats
        st.messages_sent += 1
        st.bytes_sent += len(payload)
        st.per_peer_bytes_sent[to] = st.per_peer_bytes_sent.get(to, 0) + len(payload)
        self.tags_sent.add(tag)
        self._net.post(self._party_id, to, tag, payload)

    async def recv(self, frm: int, tag: str) -> bytes:
        """Wait for the message of party ``frm`` under ``tag``, at most the round deadline."""
        if not 0 <= frm < self._net.n_parties or frm == self._party_id:
            raise TransportError(f"party {self._party_id}: invalid peer index {frm}")
        payload = await self._net.take(self._party_id, frm, tag)
        self._stats.messages_received += 1
        self._stats.bytes_received += len(payload)
        return payload

    async def close(self) -> None:
        """Refuse further sends from this party."""
        self._closed = True


class InMemoryNetwork:
    """N parties connected pairwise inside one process.

    Parameters
    ----------
    n_parties:
        Number of parties (at least 2).
    delay:
        If given, each message is delivered after a random delay in ``[0, delay]`` seconds.
    reorder:
        Deliver messages in random order (random delays of up to 1 ms when ``delay`` is None).
    rng:
        Source of the (non-secret) delays; defaults to the system CSPRNG.
    timeout:
        Deadline of one receive in seconds; :class:`RoundTimeoutError` after it.

    Examples
    --------
    >>> net = InMemoryNetwork(3)
    >>> t0, t1, t2 = net.transports
    """

    def __init__(
        self,
        n_parties: int,
        *,
        delay: float | None = None,
        reorder: bool = False,
        rng: RandomSource | None = None,
        timeout: float = DEFAULT_ROUND_TIMEOUT,
    ) -> None:
        if n_parties < 2:
            raise ConfigurationError(f"n_parties must be >= 2, got {n_parties}")
        if delay is not None and delay < 0:
            raise ConfigurationError("delay must be non-negative")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self.n_parties = n_parties
        self.timeout = timeout
        self._max_delay = delay if delay is not None else (_REORDER_DELAY if reorder else 0.0)
        self._rng = rng if rng is not None else SystemRandomSource()
        self._boxes: list[dict[_Key, asyncio.Future[bytes]]] = [{} for _ in range(n_parties)]
        self._waiting: set[asyncio.Future[bytes]] = set()
        self._abort: ProtocolAbort | None = None
        self.transports = [InMemoryTransport(self, i) for i in range(n_parties)]

    def __repr__(self) -> str:
        return f"InMemoryNetwork(n_parties={self.n_parties})"

    def tags_used(self) -> set[str]:
        """Union of the tags every party sent under (= communication rounds so far)."""
        return set().union(*(t.tags_sent for t in self.transports))

    def check_abort(self) -> None:
        """Raise the pending :class:`ProtocolAbort`, if a party aborted."""
        if self._abort is not None:
            raise ProtocolAbort(self._abort.party_id, self._abort.reason)

    def abort(self, party_id: int, reason: str) -> None:
        """Mark the job aborted by ``party_id``: every waiting and later receive raises."""
        if self._abort is not None:
            return
        logger.info("party %d aborted the in-memory job", party_id)
        self._abort = ProtocolAbort(party_id, reason)
        for fut in list(self._waiting):
            if not fut.done():
                fut.set_exception(ProtocolAbort(party_id, reason))

    async def close(self) -> None:
        """Close every transport."""
        for t in self.transports:
            await t.close()

    def post(self, frm: int, to: int, tag: str, payload: bytes) -> None:
        """Schedule delivery of one message (immediately, or after a random delay)."""
        if self._max_delay > 0:
            frac = int.from_bytes(self._rng.random_bytes(4), "little") / 2**32
            loop = asyncio.get_running_loop()
            loop.call_later(frac * self._max_delay, self._deliver, frm, to, tag, payload)
        else:
            self._deliver(frm, to, tag, payload)

    def _deliver(self, frm: int, to: int, tag: str, payload: bytes) -> None:
        box = self._boxes[to]
        fut = box.get((frm, tag))
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            box[(frm, tag)] = fut
        if fut.done():
            # A repeated (sender, tag) means the parties' programs diverged: never overwrite.
            self.abort(to, f"duplicate message from party {frm}")
            return
        fut.set_result(payload)

    async def take(self, me: int, frm: int, tag: str) -> bytes:
        """Wait for the message ``(frm, tag)`` in party ``me``'s mailbox."""
        self.check_abort()
        box = self._boxes[me]
        fut = box.get((frm, tag))
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            box[(frm, tag)] = fut
        if not fut.done():
            self._waiting.add(fut)
            try:
                async with asyncio.timeout(self.timeout):
                    await asyncio.shield(fut)
            except TimeoutError:
                raise RoundTimeoutError(
                    f"party {me}: no message from party {frm} within {self.timeout:g} s "
                    f"(round {tag.split(':', 1)[0]})"
                ) from None
            finally:
                self._waiting.discard(fut)
        del box[(frm, tag)]
        if fut.exception() is not None:
            self.check_abort()
            raise ProtocolError(f"party {me}: receive from party {frm} failed")
        return fut.result()


class ComputingPartiesView:
    """A computing party's view of a network whose helper parties (a dealer) sit after them.

    Wraps any transport of an ``n + h``-party network and reports ``n_parties = n``, so
    protocols loop over the computing parties only while a helper at index ``n`` stays
    reachable by index (as :class:`~privcomp.jobs.dealer_net.NetworkDealerSource` needs).
    """

    def __init__(self, inner: Transport, n_parties: int) -> None:
        if not 0 < n_parties <= inner.n_parties:
            raise ConfigurationError(f"a view of {n_parties} parties of {inner.n_parties}")
        self._inner, self._n = inner, n_parties

    @property
    def party_id(self) -> int:
        """This party's index."""
        return self._inner.party_id

    @property
    def n_parties(self) -> int:
        """The number of computing parties."""
        return self._n

    @property
    def stats(self) -> TransportStats:
        """The wrapped transport's counters."""
        return self._inner.stats

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        """Send through the wrapped transport (helpers included)."""
        await self._inner.send(to, tag, payload)

    async def recv(self, frm: int, tag: str) -> bytes:
        """Receive through the wrapped transport (helpers included)."""
        return await self._inner.recv(frm, tag)

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self._inner.close()
