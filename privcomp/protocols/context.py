"""The explicit per-party context every protocol receives (layer: protocols; no globals).

A :class:`PartyContext` bundles what one party needs to run a protocol: its index, the
transport to its peers, its randomness, the correlated-randomness source and the fixed-point
encoding. Tags come from :meth:`next_tag`, a per-context counter, so every party derives the same
tag sequence as long as all parties run the same program (SPMD) — which makes receives
order-independent.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from privcomp.core.codec import MAGIC, array_from_bytes, array_to_bytes
from privcomp.core.fixedpoint import FixedPoint
from privcomp.core.rng import RandomSource, SystemRandomSource
from privcomp.errors import CodecError
from privcomp.protocols.triples import TripleSource
from privcomp.transport.base import Transport
from privcomp.types import RingArray

if TYPE_CHECKING:
    from privcomp.protocols.secret_array import SecretArray

_U64_CODE = 1  # dtype code of "<u8" in privcomp.core.codec
_HEADER_1D = struct.Struct("<BBQ")
_LITTLE = sys.byteorder == "little"


def encode_ring(arrays: Sequence[RingArray]) -> bytes:
    """Serialise the concatenation of ring arrays as one 1-D codec array, in a single copy.

    The bytes are exactly what :func:`privcomp.core.codec.array_to_bytes` writes for the
    concatenated ``uint64`` array; the payload is copied once, straight from the arrays.
    """
    total = sum(int(a.size) for a in arrays)
    if not _LITTLE:
        return array_to_bytes(np.concatenate([a.reshape(-1) for a in arrays]))
    header = MAGIC + _HEADER_1D.pack(_U64_CODE, 1, total)
    return b"".join([header, *(np.ascontiguousarray(a, dtype=np.uint64).data for a in arrays)])


def decode_ring(payload: bytes, size: int) -> RingArray:
    """Read-only ``uint64`` view of a 1-D codec array of exactly ``size`` elements (no copy).

    Raises
    ------
    CodecError
        On a wrong magic/version, dtype, rank or length.
    """
    offset = len(MAGIC) + _HEADER_1D.size
    if len(payload) != offset + 8 * size or payload[: len(MAGIC)] != MAGIC:
        raise CodecError(f"expected a ring array of {size} elements")
    code, ndim, n = _HEADER_1D.unpack_from(payload, len(MAGIC))
    if code != _U64_CODE or ndim != 1 or n != size:
        raise CodecError(f"expected a ring array of {size} elements")
    if not _LITTLE:
        return np.frombuffer(payload, dtype="<u8", offset=offset).astype(np.uint64)
    return np.frombuffer(payload, dtype=np.uint64, offset=offset, count=size)


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
    #: Communication rounds this party has taken part in (one per batched exchange).
    rounds: int = 0

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
        self.rounds += 1
        payload = array_to_bytes(arr)
        await asyncio.gather(*(self.transport.send(p, tag, payload) for p in self.peers))
        received = await asyncio.gather(*(self.transport.recv(p, tag) for p in self.peers))
        return {
            p: array_from_bytes(b)  # type: ignore[misc]
            for p, b in zip(self.peers, received, strict=True)
        }

    async def exchange_ring(self, tag: str, arrays: Sequence[RingArray]) -> dict[int, RingArray]:
        """Send the concatenation of ``arrays`` to every peer; receive each peer's (one round).

        The received arrays are flat, read-only views on the payload (no copy on the in-memory
        transport), validated to hold exactly as many elements as were sent.
        """
        self.rounds += 1
        payload = encode_ring(arrays)
        size = sum(int(a.size) for a in arrays)
        await asyncio.gather(*(self.transport.send(p, tag, payload) for p in self.peers))
        received = await asyncio.gather(*(self.transport.recv(p, tag) for p in self.peers))
        return {p: decode_ring(b, size) for p, b in zip(self.peers, received, strict=True)}

    async def exchange_each(self, tag: str, arrays: dict[int, RingArray]) -> dict[int, RingArray]:
        """Send ``arrays[p]`` to each peer ``p`` and receive each peer's array (one round)."""
        self.rounds += 1
        await asyncio.gather(
            *(self.transport.send(p, tag, array_to_bytes(arrays[p])) for p in self.peers)
        )
        received = await asyncio.gather(*(self.transport.recv(p, tag) for p in self.peers))
        return {
            p: array_from_bytes(b)  # type: ignore[misc]
            for p, b in zip(self.peers, received, strict=True)
        }

    async def input(self, x: npt.ArrayLike) -> list[SecretArray]:
        """Secret-share this party's ``x`` and receive every other party's input (1 round).

        Every party calls it with its own array; each learns only the others' shapes. Floats
        are fixed-point encoded with :attr:`fixed`, integers are taken as ring integers. See
        :func:`privcomp.protocols.primitives.input_arrays`.

        Returns
        -------
        list of SecretArray
            One shared array per party, in party order.
        """
        from privcomp.protocols.secret_array import (
            input_secret,
        )  # here: secret_array imports context

        return await input_secret(self, x)
