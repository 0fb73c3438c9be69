"""The explicit per-party context every protocol receives (layer: protocols; no globals).

A :class:`PartyContext` bundles what one party needs to run a protocol: its index, the
transport to its peers, its randomness, the correlated-randomness source and the fixed-point
encoding. Tags come from :meth:`next_tag`, a per-context counter, so every party derives the same
tag sequence as long as all parties run the same program (SPMD) — which makes receives
order-independent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from privcomp.core.codec import array_from_bytes, array_to_bytes
from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import RandomSource, SystemRandomSource
from privcomp.protocols.triples import TripleSource
from privcomp.transport.base import Transport
from privcomp.types import RingArray


@dataclass(slots=True, kw_only=True)
class PartyContext:
    """Everything one party needs to run a protocol.

    Parameters
    ----------
    transport:
        Messaging to the other parties of this job.
    triples:
        Source of Beaver triples and other preprocessing material.
    rng:
        Cryptographic randomness (default: the operating system's CSPRNG).
    fixed:
        Fixed-point encoding shared by all parties.
    job_id:
        Identifier used in logs and tags.
    """

    transport: Transport
    triples: TripleSource
    rng: RandomSource = field(default_factory=SystemRandomSource)
    fixed: FixedPoint = field(default_factory=FixedPoint)
    job_id: str = "local"
    _counter: int = 0

    @property
    def party_id(self) -> int:
        """This party's index."""
        return self.transport.party_id

    @property
    def n_parties(self) -> int:
        """Number of parties."""
        return self.transport.n_parties

    @property
    def peers(self) -> list[int]:
        """Indices of every other party."""
        return [p for p in range(self.n_parties) if p != self.party_id]

    def next_tag(self, label: str) -> str:
        """Return a fresh tag ``"<counter>:<label>"``, identical across parties running SPMD."""
        self._counter += 1
        return f"{self._counter}:{label}"

    async def send_array(self, to: int, tag: str, arr: RingArray) -> None:
        """Send an array with the versioned codec."""
        await self.transport.send(to, tag, array_to_bytes(arr))

    async def recv_array(self, frm: int, tag: str) -> RingArray:
        """Receive an array sent with :meth:`send_array`."""
        return array_from_bytes(await self.transport.recv(frm, tag))  # type: ignore[return-value]

    async def exchange_all(self, tag: str, arr: RingArray) -> dict[int, RingArray]:
        """Send ``arr`` to every peer and receive each peer's array under the same tag."""
        payload = array_to_bytes(arr)
        await asyncio.gather(*(self.transport.send(p, tag, payload) for p in self.peers))
        received = await asyncio.gather(*(self.transport.recv(p, tag) for p in self.peers))
        return {
            p: array_from_bytes(b)  # type: ignore[misc]
            for p, b in zip(self.peers, received, strict=True)
        }
