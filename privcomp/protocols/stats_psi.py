"""Multi-party private set intersection tags for joins over several key holders (layer: protocols).

:mod:`privcomp.protocols.psi` aligns the rows of *two* parties. A joined table of statistics
may have several holders per side (two hospitals' patients joined with one insurer's claims),
so here every key holder takes part in one ring of commutative Diffie-Hellman encryptions on
X25519: each party hashes its keys to u-coordinates with the two-party protocol's hash
(:func:`privcomp.protocols.psi.hash_keys`: canonical, type-tagged, personalised BLAKE2b, so both
protocols map a key to the same point) and applies its secret scalar; the lists
travel once around the ring, each party applying its scalar, so every key ends up as
``k_0 k_1 ... k_{n-1} · H(key)`` — a *tag* identical for identical keys whatever party holds
them, and pseudorandom otherwise (DDH). X25519 scalar multiplication on u-coordinates commutes,
which is all the protocol needs (see :mod:`privcomp.protocols.psi` for the group caveats).

The parties then publish their tags: everyone learns the set sizes and the intersection
pattern (which of its own rows match a row held by each other party) — the standard leakage of
DH-PSI with revealed intersection — and nothing about keys outside the intersection. Rows are
aligned by sorting the common tags.

References
----------
* C. Meadows, "A More Efficient Cryptographic Matchmaking Protocol for Use in the Absence of a
  Continuously Available Third Party", IEEE S&P 1986.
* B. A. Huberman, M. Franklin, T. Hogg, "Enhancing Privacy and Trust in Electronic
  Communities", ACM EC 1999.
* E. De Cristofaro, G. Tsudik, "Practical Private Set Intersection Protocols with Linear
  Complexity", FC 2010.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privcomp.errors import ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.psi import ELEMENT_BYTES as _POINT
from privcomp.protocols.psi import hash_keys, psi_values


def _apply(secret: X25519PrivateKey, points: Sequence[bytes]) -> list[bytes]:
    try:
        return [secret.exchange(X25519PublicKey.from_public_bytes(u)) for u in points]
    except ValueError as exc:  # OpenSSL refuses a small-order (all-zero) result
        raise ProtocolError("PSI: invalid group element received") from exc


def _pack(points: Sequence[bytes]) -> np.ndarray:
    out: np.ndarray = np.frombuffer(b"".join(points), dtype=np.uint8).copy()
    return out


def _unpack(arr: np.ndarray, frm: int) -> list[bytes]:
    if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size % _POINT:
        raise ProtocolError(f"PSI message from party {frm} is malformed")
    return _points(arr.tobytes())


def _points(raw: bytes) -> list[bytes]:
    return [raw[i : i + _POINT] for i in range(0, len(raw), _POINT)]


async def psi_tags(
    ctx: PartyContext, keys: Sequence[str], *, workers: int | None = 1
) -> list[list[bytes]]:
    """Tags of every party's keys (``result[p][i]`` = tag of party p's i-th key).

    With two parties this is the two-party protocol's :func:`~privcomp.protocols.psi.psi_values`
    (the same tags ``H(x)^(k_0 k_1)``, 3 rounds, no publish round; ``workers`` forks that many
    processes, default in-process): ``result[me]`` is in row order, the peer's list in the
    peer's random order, which is all the row alignment needs. Three or more parties run the
    ring below.

    Protocol
    --------
    1. Party i draws a secret scalar ``k_i`` and computes ``k_i · H(x)`` for its keys.
    2. n-1 times: send the current list to party i+1, receive one from party i-1 and apply
       ``k_i`` (order kept, so every list returns to its owner aligned with its rows).
    3. Send the fully exponentiated list to party i+1 (its owner); receive one's own.
    4. Publish one's own tags to every party.

    Security
    --------
    Semi-honest, under DDH on Curve25519 (random-oracle hash): a party sees other parties'
    keys only as group elements raised to at least one unknown scalar. Revealed: set sizes and
    the intersection pattern.

    Cost
    ----
    n + 1 rounds; each party performs ``Σ_j |X_j|`` X25519 operations (~55 us each) and sends
    ``32 (Σ_{j≠i} |X_j| + n |X_i|)`` bytes.

    References
    ----------
    C. Meadows, "A More Efficient Cryptographic Matchmaking Protocol", IEEE S&P 1986;
    B. Huberman, M. Franklin, T. Hogg, "Enhancing Privacy and Trust in Electronic
    Communities", ACM EC 1999; D. J. Bernstein, "Curve25519", PKC 2006.
    """
    n, me = ctx.n_parties, ctx.party_id
    if n == 2:
        vals = await psi_values(ctx, keys, workers=workers)
        own, peer = _points(vals.own), _points(vals.peer)
        return [own, peer] if me == 0 else [peer, own]
    nxt, prv = (me + 1) % n, (me - 1) % n
    secret = X25519PrivateKey.from_private_bytes(ctx.rng.random_bytes(_POINT))
    current = _apply(secret, hash_keys(keys, me))
    for _ in range(n - 1):
        tag = ctx.next_tag("psi.hop")
        await ctx.send_array(nxt, tag, _pack(current))
        current = _apply(secret, _unpack(await ctx.recv_array(prv, tag), prv))
    tag = ctx.next_tag("psi.home")
    await ctx.send_array(nxt, tag, _pack(current))
    mine = _unpack(await ctx.recv_array(prv, tag), prv)
    if len(mine) != len(keys):
        raise ProtocolError("PSI: the returned tag list does not match this party's keys")
    got = await ctx.exchange_all(ctx.next_tag("psi.publish"), _pack(mine))
    return [mine if p == me else _unpack(got[p], p) for p in range(n)]
