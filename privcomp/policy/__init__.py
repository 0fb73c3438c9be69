"""Release policy and disclosure control, enforced by each party's own worker (layer: policy).

* :mod:`.model` — :class:`Policy` / :class:`Rule`: allowed columns and operations per dataset
  and requester, minimum group size ``k`` (default 11);
* :mod:`.query` — :class:`Query`, the public spec of a statistics job and its row filter;
* :mod:`.guard` — :class:`DisclosureGuard` (k-threshold, derived cells, differencing) and
  :class:`ResultCache` (identical queries get identical answers);
* :mod:`.worker` / :mod:`.vertical` — :class:`PartyWorker`, a party's side of a job.
"""

from __future__ import annotations

from privcomp.policy.guard import Cell, DisclosureGuard, ResultCache
from privcomp.policy.model import ALL_OPERATIONS, DEFAULT_K, Policy, Rule
from privcomp.policy.query import Query
from privcomp.policy.worker import PartyWorker

__all__ = [
    "ALL_OPERATIONS",
    "DEFAULT_K",
    "Cell",
    "DisclosureGuard",
    "PartyWorker",
    "Policy",
    "Query",
    "ResultCache",
    "Rule",
]
