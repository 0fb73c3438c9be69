"""Reuse of a vertical join's PSI across jobs on unchanged data (layer: policy).

``len(j)``, ``j.mean()`` and ``j.corr()`` are separate jobs on the same join; without reuse each
one re-runs the PSI (about a minute for 10^6 keys per side). After a PSI every party stores the
tags under a *local* fingerprint of its side of the join (dataset, key column, party layout and
its own keys in row order) together with a *join id* all parties agreed on. A later job first
exchanges the join ids (1 round): only if every party still holds the same id is the PSI
skipped; if any party's data or layout changed its fingerprint no longer matches, it offers no
id, and everyone runs a fresh PSI.

Security: the reused tags are exactly what every party already learnt from the earlier PSI, so
reuse reveals nothing new. The join id is random (a hash of fresh contributions of every party)
and never sent: each party offers a MAC of the job id and its own index under it, which only
holders of the id can check, so a party outside the earlier join learns nothing from the
offers. Fingerprints never leave the party.
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
        # Offers are bound to the job and the offering party, so a party that was not in the
        # earlier join cannot even tell that two others share an id; peers holding the id can.
        offer = _offer(hit[0], ctx.job_id, ctx.party_id) if hit is not None else _NONE
        got = await ctx.exchange_all(ctx.next_tag("join.reuse"), _as_array(offer))
        if hit is not None and all(
            _as_bytes(a) == _offer(hit[0], ctx.job_id, p) for p, a in got.items()
        ):
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


def _offer(join_id: bytes, job_id: str, party: int) -> bytes:
    h = hashlib.blake2b(digest_size=_ID_BYTES, key=join_id, person=b"privcomp-joinoff")
    h.update(job_id.encode() + b"\x00" + party.to_bytes(4, "little"))
    return h.digest()


def _as_array(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _as_bytes(arr: np.ndarray) -> bytes:
    # A malformed offer simply never matches (and a fresh PSI runs).
    return arr.tobytes() if arr.dtype == np.uint8 and arr.size == _ID_BYTES else b""
