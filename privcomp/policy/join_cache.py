"""Reuse of a vertical join's PSI across jobs on unchanged data (layer: policy).

``len(j)``, ``j.mean()`` and ``j.corr()`` are separate jobs on the same join; without reuse each
one re-runs the PSI (about a minute for 10^6 keys per side). After a PSI every party stores the
tags under a *local* fingerprint of its side of the join (dataset, key column, party layout and
its own keys in row order) together with a *join id* all parties agreed on. A later job first
exchanges the join ids (1 round): only if every party still holds the same id is the PSI
skipped; if any party's data or layout changed its fingerprint no longer matches, it offers no
id, and everyone runs a fresh PSI.

Security: the reused tags are exactly what every party already learnt from the earlier PSI, so
reuse reveals nothing new; the join id is random (hash of fresh contributions of every party)
and says only "we ran this join together before". Fingerprints never leave the party.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from privcomp.protocols.context import PartyContext

Tags = list[list[bytes]]
_ID_BYTES = 16
_NONE = bytes(_ID_BYTES)


def fingerprint(parts: Sequence[str], keys: Sequence[str]) -> bytes:
    """Local digest of one side of a join: descriptive ``parts`` and the keys in row order."""
    h = hashlib.blake2b(digest_size=32, person=b"privcomp-join")
    for p in parts:
        h.update(p.encode() + b"\x00")
    h.update(len(keys).to_bytes(8, "little"))
    for k in keys:  # length-prefixed: no two key lists share an encoding
        raw = k.encode()
        h.update(len(raw).to_bytes(8, "little") + raw)
    return h.digest()


@dataclass(slots=True)
class JoinCache:
    """The last few joins of one party (LRU), with the ids agreed with their peers."""

    capacity: int = 4
    _store: OrderedDict[bytes, tuple[bytes, Tags]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._store)

    async def tags(
        self, ctx: PartyContext, local: bytes, run_psi: Callable[[], Awaitable[Tags]]
    ) -> Tags:
        """The join's tags: reused if every party holds the same join, else a fresh PSI."""
        hit = self._store.get(local)
        offer = hit[0] if hit is not None else _NONE
        got = await ctx.exchange_all(ctx.next_tag("join.reuse"), _as_array(offer))
        if hit is not None and all(_as_bytes(a) == offer for a in got.values()):
            self._store.move_to_end(local)
            return hit[1]
        tags = await run_psi()
        mine = ctx.rng.random_bytes(_ID_BYTES)
        contrib = await ctx.exchange_all(ctx.next_tag("join.id"), _as_array(mine))
        h = hashlib.blake2b(digest_size=_ID_BYTES, person=b"privcomp-joinid")
        for p in range(ctx.n_parties):
            h.update(mine if p == ctx.party_id else _as_bytes(contrib[p]))
        self._store[local] = (h.digest(), tags)
        self._store.move_to_end(local)
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)
        return tags


def _as_array(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _as_bytes(arr: np.ndarray) -> bytes:
    # A malformed offer simply never matches (and a fresh PSI runs).
    return arr.tobytes() if arr.dtype == np.uint8 and arr.size == _ID_BYTES else b""
