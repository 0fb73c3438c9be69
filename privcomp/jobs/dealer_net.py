"""The trusted dealer as a separate helper party over any Transport (layer: jobs).

In one process :class:`~privcomp.protocols.dealer.TrustedDealer` is shared by every party's
context. Across processes the dealer is a *helper party* (its own worker, holding no data) with
transport index ``n`` after the ``n`` computing parties: each computing party sends it a small
request (kind and shape, no data) and receives its share of the material; the dealer runs the
very same :class:`TrustedDealer` code locally for every party index.

Security: as :class:`TrustedDealer` — the dealer must not collude with any party. It never sees
an input or an output, only shapes. This mode is explicit (``triple_source: dealer``).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from privcomp.core.beaver import DaBitShare, EdaBitShare, TripleShare, TruncPairShare
from privcomp.core.codec import array_from_bytes, array_to_bytes
from privcomp.errors import CodecError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.cross_dealer import CrossMaskShare
from privcomp.protocols.dealer import TrustedDealer
from privcomp.transport.base import Transport, TransportStats
from privcomp.types import RingArray, Shape

_KINDS = {
    "mul": TripleShare,
    "matmul": TripleShare,
    "and": TripleShare,
    "trunc": TruncPairShare,
    "edabit": EdaBitShare,
    "dabit": DaBitShare,
    "cross": CrossMaskShare,
}
STOP = "stop"
#: Largest request the dealer serves, in ring elements it must generate (2^27 words = 1 GiB).
MAX_REQUEST_ELEMENTS = 1 << 27
#: Largest number of cross-product outputs (n_left x n_right) per request: each costs Python
#: integers at the dealer and the owners, so it is capped on its own.
MAX_CROSS_OUTPUTS = 1 << 16
#: Largest dealer request message, in bytes (requests are small JSON objects).
MAX_REQUEST_BYTES = 4096


def _pack(obj: Any) -> bytes:
    parts = [array_to_bytes(getattr(obj, f.name)) for f in fields(obj) if f.name != "frac_bits"]
    return b"".join(struct.pack("<Q", len(p)) + p for p in parts)


def _unpack(data: bytes, cls: type[Any], frac_bits: int) -> Any:
    arrays: list[RingArray] = []
    off = 0
    while off < len(data):
        if off + 8 > len(data):
            raise CodecError("truncated dealer message")
        (n,) = struct.unpack_from("<Q", data, off)
        arrays.append(array_from_bytes(data[off + 8 : off + 8 + n]))  # type: ignore[arg-type]
        off += 8 + n
    names = [f.name for f in fields(cls) if f.name != "frac_bits"]
    if len(arrays) != len(names) or any(a.dtype != np.uint64 for a in arrays):
        raise CodecError("dealer message has the wrong fields")
    kwargs: dict[str, Any] = dict(zip(names, arrays, strict=True))
    if cls is TruncPairShare:
        kwargs["frac_bits"] = frac_bits
    return cls(**kwargs)


class NetworkDealerSource:
    """A computing party's :class:`TripleSource` that asks the dealer party for its material.

    Parameters
    ----------
    dealer_index:
        Transport index of the dealer party (= number of computing parties).
    """

    name = "trusted-dealer (helper party)"

    def __init__(self, dealer_index: int) -> None:
        self._dealer = dealer_index
        self._k = 0

    async def _request(self, ctx: PartyContext, kind: str, cls: type[Any], **args: Any) -> Any:
        tag = f"dealer/{self._k}"
        self._k += 1
        req = json.dumps({"kind": kind, **args}, sort_keys=True).encode()
        await ctx.transport.send(self._dealer, tag, req)
        data = await ctx.transport.recv(self._dealer, tag)
        return _unpack(data, cls, int(args.get("frac_bits", 0)))

    async def stop(self, ctx: PartyContext) -> None:
        """Tell the dealer this party needs no more material (every party calls it once)."""
        req = json.dumps({"kind": STOP}).encode()
        await ctx.transport.send(self._dealer, f"dealer/{self._k}", req)
        self._k += 1

    async def mul_triples(self, ctx: PartyContext, shape: Shape) -> TripleShare:
        """Elementwise triples."""
        return await self._request(ctx, "mul", TripleShare, shape=list(shape))  # type: ignore[no-any-return]

    async def matmul_triples(
        self, ctx: PartyContext, a_shape: tuple[int, int], b_shape: tuple[int, int]
    ) -> TripleShare:
        """Matrix triples."""
        return await self._request(  # type: ignore[no-any-return]
            ctx, "matmul", TripleShare, a_shape=list(a_shape), b_shape=list(b_shape)
        )

    async def and_triples(self, ctx: PartyContext, shape: Shape) -> TripleShare:
        """Boolean triples."""
        return await self._request(ctx, "and", TripleShare, shape=list(shape))  # type: ignore[no-any-return]

    async def trunc_pairs(self, ctx: PartyContext, shape: Shape, frac_bits: int) -> TruncPairShare:
        """Truncation pairs."""
        return await self._request(  # type: ignore[no-any-return]
            ctx, "trunc", TruncPairShare, shape=list(shape), frac_bits=frac_bits
        )

    async def edabits(self, ctx: PartyContext, shape: Shape) -> EdaBitShare:
        """edaBits."""
        return await self._request(ctx, "edabit", EdaBitShare, shape=list(shape))  # type: ignore[no-any-return]

    async def dabits(self, ctx: PartyContext, shape: Shape) -> DaBitShare:
        """daBits."""
        return await self._request(ctx, "dabit", DaBitShare, shape=list(shape))  # type: ignore[no-any-return]

    async def cross_masks(
        self, ctx: PartyContext, pair: tuple[int, int], rows: int, n_left: int, n_right: int
    ) -> CrossMaskShare:
        """Masks for exact cross-party inner products (:mod:`privcomp.protocols.cross_dealer`)."""
        return await self._request(  # type: ignore[no-any-return]
            ctx,
            "cross",
            CrossMaskShare,
            pair=[int(pair[0]), int(pair[1])],
            rows=int(rows),
            n_left=int(n_left),
            n_right=int(n_right),
        )


@dataclass(slots=True)
class _IndexOnly:
    """A transport stand-in that only carries a party index (the dealer never sends through it)."""

    party_id: int
    n_parties: int
    stats: TransportStats

    async def send(self, to: int, tag: str, payload: bytes) -> None:
        raise ProtocolError("the dealer's local contexts do not communicate")

    async def recv(self, frm: int, tag: str) -> bytes:
        raise ProtocolError("the dealer's local contexts do not communicate")

    async def close(self) -> None:
        return None


def _dims(values: Any, count: int | None = None) -> list[int]:
    if not isinstance(values, list) or (count is not None and len(values) != count):
        raise ProtocolError("dealer request has a malformed shape")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**40 for v in values):
        raise ProtocolError("dealer request has a malformed shape")
    return values


def request_elements(req: dict[str, Any]) -> int:
    """Ring elements the dealer would generate for ``req`` (validates its shape fields).

    Raises :class:`ProtocolError` for a malformed request or more than
    :data:`MAX_CROSS_OUTPUTS` cross-product outputs.
    """
    kind = req.get("kind")
    if not isinstance(kind, str):
        raise ProtocolError("dealer request has no kind")
    if kind == "trunc":
        _dims([req.get("frac_bits")], 1)
    if kind == "matmul":
        (m, k), (_, n) = _dims(req.get("a_shape"), 2), _dims(req.get("b_shape"), 2)
        return m * k + k * n + m * n
    if kind == "cross":
        _dims(req.get("pair"), 2)
        rows, n_l, n_r = _dims([req.get("rows"), req.get("n_left"), req.get("n_right")])
        if n_l * n_r > MAX_CROSS_OUTPUTS:
            raise ProtocolError(
                f"dealer request asks for {n_l} x {n_r} cross products, above {MAX_CROSS_OUTPUTS}"
            )
        return 2 * rows * (n_l + n_r) + 4 * n_l * n_r
    size = math.prod(_dims(req.get("shape")))  # Python ints: no int64 wrap-around
    return size * {"mul": 3, "and": 3, "trunc": 3}.get(kind, 2)


async def _material(dealer: TrustedDealer, ctx: PartyContext, req: dict[str, Any]) -> Any:
    kind = req.get("kind")
    if kind == "cross":
        p, q = req["pair"]
        return await dealer.cross_masks(
            ctx, (int(p), int(q)), int(req["rows"]), int(req["n_left"]), int(req["n_right"])
        )
    if kind == "matmul":
        a, b = tuple(req["a_shape"]), tuple(req["b_shape"])
        return await dealer.matmul_triples(ctx, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])))
    shape = tuple(int(d) for d in req["shape"])
    if kind == "trunc":
        return await dealer.trunc_pairs(ctx, shape, int(req["frac_bits"]))
    by_shape = {
        "mul": dealer.mul_triples,
        "and": dealer.and_triples,
        "edabit": dealer.edabits,
        "dabit": dealer.dabits,
    }
    if kind in by_shape:
        return await by_shape[str(kind)](ctx, shape)
    raise ProtocolError(f"unknown dealer request kind {kind!r}")


async def serve_dealer(
    transport: Transport,
    n_parties: int,
    dealer: TrustedDealer,
    *,
    max_elements: int = MAX_REQUEST_ELEMENTS,
) -> int:
    """Serve material requests of ``n_parties`` computing parties until the job ends.

    The loop ends when the transport is closed or cancelled (the job finished); returns the
    number of requests served. A request above ``max_elements`` generated ring elements (or
    with a malformed shape) fails the job with :class:`ProtocolError` instead of exhausting the
    dealer's memory.
    """
    contexts = [
        PartyContext(transport=_IndexOnly(p, n_parties, TransportStats()), triples=dealer)
        for p in range(n_parties)
    ]
    k = 0
    while True:
        tag = f"dealer/{k}"
        raw = [await transport.recv(p, tag) for p in range(n_parties)]
        if any(r != raw[0] for r in raw):
            raise ProtocolError(f"dealer request {k}: the parties asked for different material")
        if len(raw[0]) > MAX_REQUEST_BYTES:
            raise ProtocolError(f"dealer request {k} is longer than {MAX_REQUEST_BYTES} bytes")
        try:
            req = json.loads(raw[0])
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolError(f"dealer request {k} is not valid JSON") from exc
        if isinstance(req, dict) and req.get("kind") == STOP:
            return k
        if not isinstance(req, dict) or not isinstance(req.get("kind"), str):
            raise ProtocolError(f"dealer request {k} has no kind")
        if req["kind"] not in _KINDS:
            raise ProtocolError(f"dealer request {k} has an unknown kind")
        if request_elements(req) > max_elements:
            raise ProtocolError(
                f"dealer request {k} ({req['kind']}) exceeds the cap of {max_elements} elements"
            )
        for p in range(n_parties):
            share = await _material(dealer, contexts[p], req)
            await transport.send(p, tag, _pack(share))
        k += 1
