"""Disclosure control of one party: minimum group size, differencing guard, result cache.

Every released figure covers a *record set*: the party's rows that the figure depends on (a
group, the rows of a histogram bin, the rows where a column is present, ...). A party refuses
a job when one of its record sets, or a set derivable from them, is small:

* **k-threshold (T12).** Each record set must hold 0 or at least ``k`` of this party's rows.
  Because every party's contribution is 0 or >= k, the joint figure also covers 0 or >= k
  records. Refusing on this party's own count also stops the other parties from subtracting
  their own contributions and isolating fewer than k of this party's records.
* **Derived cells and differencing (T12, T13).** Two record sets differing by 1..k-1 rows let
  the difference be computed from the two figures (a complement such as "rows with a missing
  key" = total - groups, the rows of a filter that excludes one patient, a tracker padded with
  other records). The guard compares each new record set with the others of the same query
  (including the union of its disjoint cells) and with every record set this party released
  before on the same dataset (any requester, so requesters cannot collude around it), and
  refuses if ``0 < |A Δ B| < k``. Enforced per party, so the joint difference — the sum of the
  parties' differences — is also 0 or >= k.
* **Cache (T13 c).** An identical repeated query gets the identical earlier answer.

References
----------
* CMS cell-size suppression policy (no cell of 1-10, including derivable cells).
* D. E. Denning, P. J. Denning, M. D. Schwartz, "The Tracker: A Threat to Statistical Database
  Security", ACM TODS 4(1), 1979.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from privcomp.errors import DifferencingRefused, GroupTooSmall
from privcomp.policy.model import Policy
from privcomp.policy.query import Query

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cell:
    """A named record set: a boolean mask over all of this party's rows of a dataset."""

    name: str
    mask: np.ndarray


@dataclass(slots=True)
class _Released:
    digest: bytes
    packed: np.ndarray
    size: int


def _pack(mask: np.ndarray) -> _Released:
    packed = np.packbits(mask)
    return _Released(hashlib.sha256(packed.tobytes()).digest(), packed, int(mask.sum()))


def _difference(a: _Released, b: _Released) -> int:
    if a.digest == b.digest:
        return 0
    pa, pb = a.packed, b.packed
    if pa.size != pb.size:
        # The table grew (or shrank) since: rows beyond the shorter mask are outside that set.
        n = max(pa.size, pb.size)
        pa, pb = np.pad(pa, (0, n - pa.size)), np.pad(pb, (0, n - pb.size))
    return int(np.bitwise_count(np.bitwise_xor(pa, pb)).sum())


@dataclass(slots=True)
class DisclosureGuard:
    """The disclosure-control state of one party (its released record sets).

    Parameters
    ----------
    party:
        Name of the party (named in refusals).
    policy:
        The party's policy.
    """

    party: str
    policy: Policy
    _history: dict[str, list[_Released]] = field(default_factory=dict)

    def check(self, query: Query, cells: Sequence[Cell]) -> None:
        """Check a query's permissions and record sets; raise instead of releasing.

        Raises
        ------
        PolicyViolation
            A column or operation is not allowed for this requester.
        GroupTooSmall
            A record set holds 1..k-1 of this party's rows.
        DifferencingRefused
            A record set differs from another (earlier or in this query) by 1..k-1 rows.
        """
        self.policy.rule(query.dataset, query.requester).check(
            query.dataset, query.columns_used(), query.operations_used()
        )
        k = self.policy.k
        packed = [_pack(c.mask) for c in cells]
        for cell, p in zip(cells, packed, strict=True):
            if 0 < p.size < k:
                raise GroupTooSmall(cell.name, k, self.party)
        if not self.policy.differencing:
            return
        history = self._history.get(query.dataset, [])
        for i, (cell, p) in enumerate(zip(cells, packed, strict=True)):
            for other in [*packed[:i], *history]:
                if 0 < _difference(p, other) < k:
                    raise DifferencingRefused(
                        f"difference of {cell.name} to another set", k, self.party
                    )

    def commit(self, query: Query, cells: Sequence[Cell]) -> None:
        """Record the record sets of a query whose result was released."""
        history = self._history.setdefault(query.dataset, [])
        known = {h.digest for h in history}
        for c in cells:
            p = _pack(c.mask)
            if p.digest not in known:
                history.append(p)
                known.add(p.digest)

    def released_sets(self, dataset: str) -> int:
        """Number of distinct record sets released on ``dataset`` so far."""
        return len(self._history.get(dataset, []))


@dataclass(slots=True)
class ResultCache(Generic[T]):
    """Released results by canonical query key: a repeated query gets the identical answer.

    ``version`` identifies the data the result was computed on (e.g. a digest of the tables):
    after the data changed, the same query misses instead of returning a stale answer.
    """

    _store: dict[str, T] = field(default_factory=dict)

    def get(self, query: Query, version: str = "") -> T | None:
        """The earlier result of an identical query on the same data version, if any."""
        return self._store.get(f"{query.key()}\0{version}")

    def put(self, query: Query, result: T, version: str = "") -> None:
        """Remember a released result (of the data ``version``)."""
        self._store[f"{query.key()}\0{version}"] = result

    def __len__(self) -> int:
        return len(self._store)
