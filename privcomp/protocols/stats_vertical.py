"""Joint statistics over a vertical join: PSI-aligned rows, cross-party products (layer: protocols).

After :func:`~privcomp.protocols.psi.psi_tags`, the joined rows are the common tags in sorted
order; each joined row has one owner on the left side (the party holding that key in the left
dataset) and one on the right. Statistics of one side's columns are pre-aggregated locally and
secure-summed exactly (as in the horizontal case). A product of a left and a right column,
``Σ_r u_r v_r``, is computed per pair of owners (p left, q right) by additive secret sharing
with Paillier-based oblivious linear evaluation — no third party:

1. p sends ``Enc_p(u_r)`` for the rows it shares with q (its own Paillier key, >= 2048 bits);
2. q returns ``Enc_p(Σ_r u_r v_r + rho)`` with a fresh uniform ``rho`` in ``[0, 2^378)``;
3. p decrypts: its share is ``Σ + rho``, q's share is ``-rho``; both go into the wide-ring
   secure sum modulo 2^256 (only the total is revealed).

Values are encoded exactly as integers at scale ``2^64`` (|value| < 2^40 is checked before
anything is sent), so ``|Σ| < 2^248`` for fewer than 2^40 joined rows and the total is exact.
``rho`` hides the sum statistically (distance 2^-128).

References
----------
* P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes",
  EUROCRYPT 1999.
* R. Cramer, I. Damgård, J. B. Nielsen, *Secure Multiparty Computation and Secret Sharing*,
  2015 (OLE from additively homomorphic encryption).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privcomp.backends.paillier import PublicKey, keygen
from privcomp.errors import DuplicateKeyError, EncodingOverflowError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.protocols.stats import secure_sum_wide

#: Fixed-point scale of values in cross-party products.
CROSS_FRAC_BITS = 64
#: Largest magnitude of a value entering a cross-party product.
CROSS_MAX_ABS = 2.0**40
_MASK_BITS = 378
_KEY_BITS = 2048


@dataclass(slots=True)
class Alignment:
    """Where the joined rows live (identical at every party, except ``my_rows``)."""

    size: int  #: joined rows J
    owners: tuple[np.ndarray, np.ndarray]  #: owner party of each joined row, left and right
    my_rows: np.ndarray  #: this party's table rows in the join, in joined-row order
    my_positions: np.ndarray  #: their joined-row positions (increasing)


def align(tags: Sequence[Sequence[bytes]], sides: Sequence[int], me: int) -> Alignment:
    """Intersect the left and right tag sets (keys must be unique on each side)."""
    where: list[dict[bytes, int]] = [{}, {}]
    for p, lst in enumerate(tags):
        side = where[sides[p]]
        for t in lst:
            if t in side:
                raise DuplicateKeyError(p)
            side[t] = p
    joined = sorted(set(where[0]) & set(where[1]))
    pos = {t: r for r, t in enumerate(joined)}
    owners = (
        np.array([where[0][t] for t in joined], dtype=np.int64),
        np.array([where[1][t] for t in joined], dtype=np.int64),
    )
    mine = [(pos[t], i) for i, t in enumerate(tags[me]) if t in pos]
    mine.sort()
    return Alignment(
        len(joined),
        owners,
        np.array([i for _, i in mine], dtype=np.int64),
        np.array([r for r, _ in mine], dtype=np.int64),
    )


def encode_cross(values: np.ndarray, *, what: str) -> list[int]:
    """Exact integers ``round(v * 2^64)``; refuses |v| >= 2^40 and non-finite values."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size and not (np.all(np.isfinite(flat)) and np.max(np.abs(flat)) < CROSS_MAX_ABS):
        raise EncodingOverflowError(
            f"{what}: values must be finite with |v| < 2^40 for cross-party products",
            bound=CROSS_MAX_ABS,
        )
    return [round(math.ldexp(v, CROSS_FRAC_BITS)) for v in flat.tolist()]


def _to_bytes(ints: Sequence[int], width: int) -> np.ndarray:
    out: np.ndarray = np.frombuffer(
        b"".join(int(v).to_bytes(width, "little") for v in ints), dtype=np.uint8
    ).copy()
    return out


def _from_bytes(arr: np.ndarray, width: int, count: int, frm: int) -> list[int]:
    if arr.dtype != np.uint8 or arr.size != width * count:
        raise ProtocolError(f"ciphertext message from party {frm} has the wrong size")
    raw = arr.tobytes()
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def _random_below_bits(ctx: PartyContext, bits: int, count: int) -> list[int]:
    nbytes = (bits + 7) // 8
    raw = ctx.rng.random_bytes(nbytes * count)
    mask = (1 << bits) - 1
    return [
        int.from_bytes(raw[i : i + nbytes], "little") & mask for i in range(0, len(raw), nbytes)
    ]


async def cross_products(
    ctx: PartyContext,
    al: Alignment,
    sides: Sequence[int],
    mine: np.ndarray,
    n_left: int,
    n_right: int,
) -> list[int]:
    """This party's additive shares (scale 2^128) of ``Σ_r u_a[r] v_b[r]`` for all (a, b).

    ``mine`` holds this party's vectors over its joined rows: ``(len(my_rows), n_left)`` on the
    left side, ``(len(my_rows), n_right)`` on the right (already centred/indicator values).

    Protocol
    --------
    For every pair (p left, q right) sharing joined rows, in a fixed order: p sends its
    Paillier public key and ``Enc_p(u)`` for those rows; q returns ``Enc_p(Σ u v + rho)`` per
    (a, b); p decrypts. Shares: p ``Σ + rho``, q ``-rho``, everyone else 0.

    Security
    --------
    Semi-honest: q sees only ciphertexts under p's key (IND-CPA under DCR); p sees ``Σ + rho``,
    statistically independent of Σ. Only the later secure sum of all shares reveals the total.

    Cost
    ----
    2 rounds per owner pair; p sends ``|P_pq| n_left`` ciphertexts (512 bytes each for a
    2048-bit key), q returns ``n_left n_right``; q computes ``|P_pq| n_left n_right`` short
    modular exponentiations.

    References
    ----------
    Paillier, EUROCRYPT 1999; Cramer, Damgård, Nielsen, 2015 (OLE from additively
    homomorphic encryption).
    """
    me = ctx.party_id
    shares = [0] * (n_left * n_right)
    local_index = {int(r): i for i, r in enumerate(al.my_positions.tolist())}
    pk = sk = None
    pairs = sorted({(int(p), int(q)) for p, q in zip(*al.owners, strict=True)})
    for p, q in pairs:
        tag_u, tag_r = ctx.next_tag("cross.u"), ctx.next_tag("cross.ret")
        rows = np.flatnonzero((al.owners[0] == p) & (al.owners[1] == q)).tolist()
        if me == p:
            if pk is None:
                pk, sk = keygen(_KEY_BITS, rng=ctx.rng)
            u = mine[[local_index[r] for r in rows]]
            ints = [int(v) % pk.n for v in encode_cross(u.T, what="left column")]
            cts = pk.raw_encrypt(ints, rng=ctx.rng, workers=1)
            nbytes = (pk.n.bit_length() + 7) // 8
            await ctx.send_array(q, tag_u, _to_bytes([pk.n], nbytes))
            await ctx.send_array(q, tag_u + ".c", _to_bytes(cts, pk.ciphertext_bytes))
            back = _from_bytes(
                await ctx.recv_array(q, tag_r), pk.ciphertext_bytes, n_left * n_right, q
            )
            if sk is None:
                raise ProtocolError("missing Paillier key")
            for i, m in enumerate(sk.raw_decrypt(back, workers=1)):
                shares[i] += m - pk.n if m > pk.n // 2 else m
        elif me == q:
            shares_q = await _answer(ctx, p, tag_u, tag_r, mine, local_index, rows, n_left, n_right)
            shares = [a + b for a, b in zip(shares, shares_q, strict=True)]
    return shares


async def _answer(
    ctx: PartyContext,
    p: int,
    tag_u: str,
    tag_r: str,
    mine: np.ndarray,
    local_index: dict[int, int],
    rows: list[int],
    n_left: int,
    n_right: int,
) -> list[int]:
    """The right party's side of one owner pair: homomorphic inner products, masked."""
    n_arr = await ctx.recv_array(p, tag_u)
    raw = n_arr.tobytes() if n_arr.dtype == np.uint8 else b""
    pk = PublicKey(int.from_bytes(raw, "little"))
    cts = _from_bytes(
        await ctx.recv_array(p, tag_u + ".c"), pk.ciphertext_bytes, n_left * len(rows), p
    )
    pk.validate_ciphertexts(cts)
    v = mine[[local_index[r] for r in rows]]
    v_ints = encode_cross(v.T, what="right column")
    k = len(rows)
    rho = _random_below_bits(ctx, _MASK_BITS, n_left * n_right)
    masks = pk.raw_encrypt(rho, rng=ctx.rng, workers=1)
    n2 = pk.n * pk.n
    out = []
    for a in range(n_left):
        col = cts[a * k : (a + 1) * k]
        for b in range(n_right):
            acc = masks[a * n_right + b]
            for c in pk.raw_mul_many(col, v_ints[b * k : (b + 1) * k]):
                acc = acc * c % n2
            out.append(acc)
    await ctx.send_array(p, tag_r, _to_bytes(out, pk.ciphertext_bytes))
    return [-r for r in rho]


async def sum_cross_shares(ctx: PartyContext, shares: Sequence[int]) -> np.ndarray:
    """Reveal the totals of cross-product shares (exact; scale 2^-128) as float64.

    Protocol
    --------
    :func:`~privcomp.protocols.stats.secure_sum_wide` of the shares (unchecked: each share
    is masked, only the total is bounded, by ``2^248``); scale the total by ``2^-128``.

    Security
    --------
    As :func:`~privcomp.protocols.stats.secure_sum_wide`: only the totals are revealed.

    Cost
    ----
    2 rounds; ``64 (n-1) m`` bytes per party (m = number of products).

    References
    ----------
    Cramer, Damgård, Nielsen, 2015, §1.2.
    """
    totals = await secure_sum_wide(ctx, shares, checked=False)
    # float(int) rounds once, correctly; ldexp by a power of two is exact.
    return np.array([math.ldexp(float(t), -2 * CROSS_FRAC_BITS) for t in totals])


@dataclass(frozen=True, slots=True)
class VerticalRequest:
    """Public part of a job on joined rows.

    ``sides[p]`` is party p's side (0 left, 1 right); ``column_sides[j]`` the side holding
    column j; ``by_side`` the side holding the group key (grouped jobs: count/sum/mean only).
    """

    columns: tuple[str, ...]
    column_sides: tuple[int, ...]
    sides: tuple[int, ...]
    ops: frozenset[str]
    by_side: int | None = None
    ddof: int = 1


def _local_columns(
    own: dict[str, np.ndarray], req: VerticalRequest, side: int, rows: np.ndarray
) -> list[np.ndarray]:
    nan = np.full(rows.size, np.nan)
    return [
        own[c][rows] if s == side else nan
        for c, s in zip(req.columns, req.column_sides, strict=True)
    ]


async def _cross(
    ctx: PartyContext,
    al: Alignment,
    req: VerticalRequest,
    left: np.ndarray,
    right: np.ndarray,
) -> np.ndarray:
    """Totals ``Σ_r left[r, a] * right[r, b]`` as an (a, b) matrix (one side passes its own)."""
    n_left, n_right = left.shape[1], right.shape[1]
    if n_left == 0 or n_right == 0 or al.size == 0:
        return np.zeros((n_left, n_right))
    mine = left if req.sides[ctx.party_id] == 0 else right
    shares = await cross_products(ctx, al, req.sides, mine, n_left, n_right)
    return (await sum_cross_shares(ctx, shares)).reshape(n_left, n_right)
