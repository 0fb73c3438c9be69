"""The Transport interface every protocol is written against (layer: transport).

A transport moves opaque ``bytes`` between the parties of one job, addressed by the peer's party
index and a *tag*. Tags are deterministic (each party derives the same tag sequence from
:meth:`PartyContext.next_tag`), so a receive is matched by ``(sender, tag)`` whatever the order
in which messages arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class TransportStats:
    """Traffic counters of one party's transport."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    per_peer_bytes_sent: dict[int, int] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Point-to-point byte messaging among the ``n_parties`` parties of one job."""

    @property
    def party_id(self) -> int:
        """This party's index, ``0 .. n_parties - 1``."""
        ...

    @property
    def n_parties(self) -> int:
        """Number of parties in the job."""
        ...

    @property
    def stats(self) -> TransportStats:
        """Traffic counters."""
        ...

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        """Send ``payload`` to party ``to`` under ``tag``."""
        ...

    async def recv(self, frm: int, tag: str) -> bytes:
        """Receive the payload party ``frm`` sent under ``tag`` (raises RoundTimeoutError)."""
        ...

    async def close(self) -> None:
        """Release resources; further sends fail."""
        ...
