"""PSI reuse across jobs (privcomp.policy.join_cache), on its own."""

from __future__ import annotations

import asyncio

from privcomp.policy.join_cache import JoinCache, _offer, fingerprint
from privcomp.protocols.context import PartyContext
from privcomp.protocols.dealer import TrustedDealer
from privcomp.transport.memory import InMemoryNetwork

TAGS = [[b"a" * 32, b"b" * 32], [b"b" * 32]]


async def _round(caches: list[JoinCache], keys: list[list[str]], job: str) -> list[int]:
    """One job's tag step at every party; returns how many parties ran the (fake) PSI."""
    net = InMemoryNetwork(len(caches))
    dealer = TrustedDealer(len(caches))
    ran: list[int] = []

    async def party(p: int) -> None:
        ctx = PartyContext(transport=net.transports[p], triples=dealer, job_id=job)

        async def psi() -> list[list[bytes]]:
            ran.append(p)
            return TAGS

        local = fingerprint(["claims", "id", "(0, 1)", str(p)], keys[p])
        assert await caches[p].tags(ctx, local, psi) == TAGS

    await asyncio.gather(*(party(p) for p in range(len(caches))))
    return ran


async def test_reuse_needs_every_party_unchanged_and_offers_do_not_link() -> None:
    caches = [JoinCache(), JoinCache()]
    keys = [["1", "2"], ["2"]]
    assert sorted(await _round(caches, keys, "job-1")) == [0, 1]  # first time: PSI
    assert await _round(caches, keys, "job-2") == []  # reused
    assert sorted(await _round(caches, [["1", "2"], ["2", "3"]], "job-3")) == [0, 1]  # changed
    # Fingerprints separate key lists that plain concatenation would confuse.
    assert fingerprint(["x"], ["a\0b", "c"]) != fingerprint(["x"], ["a", "b\0c"])
    # Offers are bound to job and party: an outsider cannot see that two peers share an id.
    jid = bytes(16)
    assert _offer(jid, "job-4", 0) != _offer(jid, "job-4", 1)
    assert _offer(jid, "job-4", 0) != _offer(jid, "job-5", 0)
