"""Joint statistics over a vertical join: PSI-aligned rows, cross-party products (layer: protocols).

After :func:`~privcomp.protocols.psi.psi_tags`, the joined rows are the common tags in sorted
order; each joined row has one owner on the left side (the party holding that key in the left
dataset) and one on the right. Statistics of one side's columns are pre-aggregated locally and
secure-summed exactly (as in the horizontal case). A product of a left and a right column,
``Σ_r u_r v_r``, is computed per pair of owners (p left, q right) by additive secret sharing
with Paillier-based oblivious linear evaluation — no third party:

1. p sends ``Enc_p(m_r)`` for the rows it shares with q, the row's left values packed into the
   slots of one plaintext (its own Paillier key, >= 2048 bits);
2. q returns, per right column b, ``Enc_p(Σ_a (Σ_r u_a[r] v_b[r] + 2^B + rho_ab) 2^(a W))``,
   computed by one multi-exponentiation over the rows, with fresh uniform masks ``rho``;
3. p decrypts and cuts the slots: its share is ``Σ + 2^B + rho``, q's is ``-(2^B + rho)``;
   both go into the wide-ring secure sum modulo 2^256 (only the total is revealed).

Values are encoded exactly as integers at scale ``2^64`` (|value| < 2^40 is checked before
anything is sent), so ``|Σ| < 2^248`` for fewer than 2^40 joined rows and the total is exact.
``rho`` hides the sum statistically (distance ``2^-sigma``, sigma = 128 for up to 5 left columns
per ciphertext, never below 40). Details and costs: :func:`cross_products`.

References
----------
* P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes",
  EUROCRYPT 1999.
* R. Cramer, I. Damgård, J. B. Nielsen, *Secure Multiparty Computation and Secret Sharing*,
  2015 (OLE from additively homomorphic encryption).
* N. Pippenger, "On the evaluation of powers and monomials", SIAM J. Comput. 9(2), 1980.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np

from privcomp.backends.paillier import PrivateKey, PublicKey, keygen
from privcomp.backends.paillier.multiexp import multi_exp_columns
from privcomp.backends.paillier.wire import pack_ciphertexts
from privcomp.core.rng import RandomSource
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    DuplicateKeyError,
    EncodingOverflowError,
    ProtocolError,
)
from privcomp.protocols.context import PartyContext
from privcomp.protocols.psi_group import align_tags
from privcomp.protocols.stats import secure_sum_wide

#: Fixed-point scale of values in cross-party products.
CROSS_FRAC_BITS = 64
#: Largest magnitude of a value entering a cross-party product.
CROSS_MAX_ABS = 2.0**40
_KEY_BITS = 2048
#: |round(v * 2^64)| < 2^104 for |v| < 2^40.
_VALUE_BITS = CROSS_FRAC_BITS + 40
#: Statistical security of the masks: at least 40 bits, 128 when the slots leave room.
_MIN_SIGMA = 40
_MAX_SIGMA = 128
#: Products (rows x right columns x ciphertexts per row) per streamed block: bounds every
#: round's wait (~10 s of q's work on 2 quiet cores at 2048 bits, well within the workers'
#: receive deadline) and lets q evaluate one block while p encrypts the next.
_BLOCK_PRODUCTS = 1 << 19


@dataclass(slots=True)
class Alignment:
    """Where the joined rows live (identical at every party, except ``my_rows``)."""

    size: int  #: joined rows J
    owners: tuple[np.ndarray, np.ndarray]  #: owner party of each joined row, left and right
    my_rows: np.ndarray  #: this party's table rows in the join, in joined-row order
    my_positions: np.ndarray  #: their joined-row positions (increasing)


def owner_pairs(al: Alignment, me: int) -> list[tuple[tuple[int, int], int, np.ndarray]]:
    """Every (left owner, right owner) pair of the joined rows, in the same order everywhere.

    Each entry is ``((p, q), rows, idx)``: the pair's public number of joined rows and, at
    ``me`` if it is ``p`` or ``q``, the indices of those rows into its own joined-row arrays
    (in joined order; empty at every other party).
    """
    out = []
    for p, q in sorted({(int(p), int(q)) for p, q in zip(*al.owners, strict=True)}):
        rows = np.flatnonzero((al.owners[0] == p) & (al.owners[1] == q))
        idx = np.searchsorted(al.my_positions, rows) if me in (p, q) else rows[:0]
        out.append(((p, q), int(rows.size), idx))
    return out


def align(tags: Sequence[Sequence[bytes]], sides: Sequence[int], me: int) -> Alignment:
    """Intersect the left and right tag sets (keys must be unique on each side)."""
    fast = align_tags(tags, sides, me)  # vectorised; None where the exact path must decide
    return Alignment(*fast) if fast is not None else align_exact(tags, sides, me)


def align_exact(tags: Sequence[Sequence[bytes]], sides: Sequence[int], me: int) -> Alignment:
    """:func:`align` with one dict per side: exact for any tags (the reference semantics)."""
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


def _random_below_bits(ctx: PartyContext, bits: int, count: int) -> list[int]:
    nbytes = (bits + 7) // 8
    raw = ctx.rng.random_bytes(nbytes * count)
    mask = (1 << bits) - 1
    return [
        int.from_bytes(raw[i : i + nbytes], "little") & mask for i in range(0, len(raw), nbytes)
    ]


@dataclass(frozen=True, slots=True)
class _Layout:
    """Slots of one packed ciphertext, fixed by public sizes (identical at p and q).

    Every slot holds ``S + 2^bound + rho`` with ``|S| < 2^bound`` and ``rho`` uniform in
    ``[0, 2^(bound + sigma))``, so a slot is non-negative and below ``2^width``.
    """

    bound: int  #: |Σ_r u v| < 2^bound for one (a, b)
    width: int  #: slot width W = bound + sigma + 1
    per: int  #: slots (left columns) per ciphertext
    groups: int  #: ciphertexts per joined row

    @property
    def sigma(self) -> int:
        """Statistical security of the masks (bits)."""
        return self.width - self.bound - 1


def _layout(rows: int, n_left: int, key_bits: int) -> _Layout:
    """Fewest ciphertexts per row at sigma >= 40, then the widest mask (sigma <= 128) that fits."""
    bound = 2 * _VALUE_BITS + max(1, rows).bit_length()
    room = key_bits - 1  # the packed total stays below 2^(|n| - 1) < n: nothing wraps mod n
    most = room // (bound + _MIN_SIGMA + 1)
    if most < 1:
        raise ProtocolError("Paillier key too short for the cross-product slots")
    groups = -(-n_left // most)
    per = -(-n_left // groups)
    width = min(bound + _MAX_SIGMA + 1, room // per)
    return _Layout(bound, width, per, groups)


def _pack_rows(u: list[int], k: int, n_left: int, lay: _Layout, n: int) -> list[int]:
    """Plaintexts ``Σ_s U[r, g per + s] 2^(s W) mod n``, group-major (``u`` is row-major)."""
    out: list[int] = []
    for g in range(lay.groups):
        cols = range(g * lay.per, min(n_left, (g + 1) * lay.per))
        for r in range(k):
            row = r * n_left
            out.append(sum(u[row + a] << (s * lay.width) for s, a in enumerate(cols)) % n)
    return out


def _parse_ciphertexts(raw: bytes, count: int, pk: PublicKey, frm: int) -> list[gmpy2.mpz]:
    """Fixed-width big-endian ciphertexts, each checked to lie in ``[1, n^2)``.

    Membership of ``Z*_{n^2}`` (coprime to ``n``) is checked in bulk by :func:`_evaluate`.
    """
    width = pk.ciphertext_bytes
    if len(raw) != count * width:
        raise ProtocolError(f"ciphertext message from party {frm} has the wrong size")
    from_bytes = gmpy2.mpz.from_bytes
    view = memoryview(raw)
    cts = [from_bytes(view[i : i + width], "big") for i in range(0, count * width, width)]
    n2 = gmpy2.mpz(pk.nsquare)
    if not all(0 < c < n2 for c in cts):
        raise ProtocolError(f"party {frm} sent a ciphertext outside [1, n^2)")
    return cts


def _blocks(k: int, n_left: int, n_right: int, key_bits: int) -> list[tuple[int, int]]:
    """Row blocks of about :data:`_BLOCK_PRODUCTS` products each (at least one block)."""
    step = max(1, _BLOCK_PRODUCTS // (n_right * _layout(k, n_left, key_bits).groups))
    return [(lo, min(k, lo + step)) for lo in range(0, max(k, 1), step)]


def _slots(lay: _Layout, n_left: int, g: int) -> list[tuple[int, int]]:
    """``(slot, left column)`` of ciphertext group ``g``."""
    return list(enumerate(range(g * lay.per, min(n_left, (g + 1) * lay.per))))


def _encrypt_block(sk: PrivateKey, plain: list[int], rng: RandomSource) -> bytes:
    """Key-holder (CRT) encryption of one block on every core, serialised."""
    return pack_ciphertexts(sk.raw_encrypt(plain, rng=rng), sk.public_key.ciphertext_bytes)


async def _offer(
    ctx: PartyContext,
    q: int,
    tags: tuple[str, str],
    u: np.ndarray,
    keys: tuple[PublicKey, PrivateKey],
    n_right: int,
) -> list[int]:
    """The left party's side of one owner pair: stream packed ``Enc(u)``, decrypt the slots."""
    pk, sk = keys
    k, n_left = u.shape
    ints = encode_cross(u, what="left column")  # every value is checked before anything is sent
    await ctx.transport.send(q, tags[0], pk.to_bytes())
    lays = []
    for j, (lo, hi) in enumerate(_blocks(k, n_left, n_right, pk.bits)):
        lay = _layout(hi - lo, n_left, pk.bits)
        plain = _pack_rows(ints[lo * n_left : hi * n_left], hi - lo, n_left, lay, pk.n)
        payload = await asyncio.to_thread(_encrypt_block, sk, plain, ctx.rng)
        await ctx.transport.send(q, f"{tags[0]}.{j}", payload)
        lays.append(lay)
    shares = [0] * (n_left * n_right)
    for j, lay in enumerate(lays):
        raw = await ctx.transport.recv(q, f"{tags[1]}.{j}")
        back = _parse_ciphertexts(raw, lay.groups * n_right, pk, q)
        plain = await asyncio.to_thread(sk.raw_decrypt, back)
        cut = (1 << lay.width) - 1
        for g in range(lay.groups):
            for b in range(n_right):
                m = plain[g * n_right + b]
                if m >> (lay.per * lay.width):
                    raise ProtocolError(f"party {q} sent a cross-product reply out of slot range")
                for s, a in _slots(lay, n_left, g):
                    shares[a * n_right + b] += (m >> (s * lay.width)) & cut
    return shares


def _evaluate(
    pk: PublicKey, cts: list[gmpy2.mpz], v: list[int], lay: _Layout, n_right: int
) -> list[gmpy2.mpz]:
    """``Enc(Σ_r v_b[r] m_g[r])`` per (g, b) by bucket multi-exponentiation on every core.

    Exponents are made non-negative with an offset, ``e = v + 2^104``; its term
    ``Enc(2^104 Σ_r m_g[r]) = (Π_r C_r)^(2^104)`` is removed with one inversion. The product
    ``Π_r C_r`` (the all-ones column) also proves every ``C_r`` coprime to ``n`` at once.
    """
    n, n2 = gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare)
    k = len(v) // n_right
    offset = 1 << _VALUE_BITS
    columns = [[v[r * n_right + b] + offset for r in range(k)] for b in range(n_right)]
    columns.append([1] * k)
    out: list[gmpy2.mpz] = []
    for g in range(lay.groups):
        # The value columns are secret (timing-uniform schedule); the all-ones column is public.
        widths = [_VALUE_BITS + 1] * n_right + [None]
        *products, total = multi_exp_columns(cts[g * k : (g + 1) * k], columns, n2, bits=widths)
        if gmpy2.gcd(total, n) != 1:
            raise ProtocolError("a cross-product ciphertext is not a unit mod n^2")
        unshift = gmpy2.invert(gmpy2.powmod(total, offset, n2), n2)
        out += [c * unshift % n2 for c in products]
    return out


async def _answer(
    ctx: PartyContext,
    p: int,
    tags: tuple[str, str],
    v: np.ndarray,
    n_left: int,
) -> list[int]:
    """The right party's side of one owner pair: packed inner products, masked; ``-masks``."""
    k, n_right = v.shape
    v_ints = encode_cross(v, what="right column")
    try:
        pk = PublicKey.from_bytes(await ctx.transport.recv(p, tags[0]))
    except (CodecError, ConfigurationError) as exc:
        raise ProtocolError(
            f"party {p} sent an unusable Paillier key: {type(exc).__name__}"
        ) from None
    shares = [0] * (n_left * n_right)
    for j, (lo, hi) in enumerate(_blocks(k, n_left, n_right, pk.bits)):
        lay = _layout(hi - lo, n_left, pk.bits)
        raw = await ctx.transport.recv(p, f"{tags[0]}.{j}")
        cts = await asyncio.to_thread(_parse_ciphertexts, raw, lay.groups * (hi - lo), pk, p)
        rho = _random_below_bits(ctx, lay.bound + lay.sigma, n_left * n_right)
        base = 1 << lay.bound  # keeps every slot non-negative whatever the sign of Σ
        packed = [
            sum((base + rho[a * n_right + b]) << (s * lay.width) for s, a in _slots(lay, n_left, g))
            for g in range(lay.groups)
            for b in range(n_right)
        ]
        # A fresh encryption of the masks adds them and re-randomises the reply in one product.
        masks = pk.raw_encrypt(packed, rng=ctx.rng, workers=1)
        block = v_ints[lo * n_right : hi * n_right]
        sums = await asyncio.to_thread(_evaluate, pk, cts, block, lay, n_right)
        reply = pack_ciphertexts(pk.raw_add_many(sums, masks), pk.ciphertext_bytes)
        await ctx.transport.send(p, f"{tags[1]}.{j}", reply)
        shares = [s - base - r for s, r in zip(shares, rho, strict=True)]
    return shares


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
    For every pair (p left, q right) sharing ``k`` joined rows, in a fixed order:

    1. p packs the ``n_left`` values of each row into the ``W``-bit slots of ONE plaintext,
       ``m_r = Σ_a U_a[r] 2^(a W) mod n`` (``U = round(u 2^64)``, signed; more columns than
       slots use several ciphertexts per row), and sends its public key and ``Enc_p(m_r)``;
    2. q checks the key (>= 2048 bits) and the ciphertexts (in ``Z*_{n^2}``), and computes for
       each of its columns b the multi-exponentiation ``Π_r Enc(m_r)^(V_b[r] + 2^104)``
       (bucket method, every core), divides out ``(Π_r Enc(m_r))^(2^104)`` and multiplies by a
       fresh ``Enc_p(Σ_a (2^B + rho_ab) 2^(a W))``: an encryption of
       ``Σ_a (S_ab + 2^B + rho_ab) 2^(a W)`` with ``S_ab = Σ_r U_a V_b``, ``|S_ab| < 2^B``
       (``B = 208 + bitlen(k)``), ``rho_ab`` uniform in ``[0, 2^(B + sigma))``;
    3. p decrypts and cuts the slots. Shares: p ``S + 2^B + rho``, q ``-(2^B + rho)``, everyone
       else 0. Every slot is non-negative and the packed total is below ``n``, so it is exact.

    Security
    --------
    Semi-honest: q sees only ciphertexts under p's key (IND-CPA under DCR and the engine's
    short-exponent randomness); p sees ``S + 2^B + rho`` per slot, within statistical distance
    ``2^-sigma`` of independent of S, on a re-randomised ciphertext. ``sigma`` is 128 when the
    slots allow it (5 left columns per 2048-bit ciphertext for up to 2^40 rows) and never below
    40 (more ciphertexts per row instead). Only the later secure sum reveals the total.

    Cost
    ----
    Per owner pair, rows are streamed in blocks of ~2^19 products (``k`` rows x ``n_right``
    x ``G``; 104,857 rows for 5 right columns): one key message, then one message per block
    each way, pipelined (q evaluates a block while p encrypts the next; every receive waits
    for one block's work at most). p encrypts ``k G`` plaintexts (``G = ceil(n_left / per)``,
    one for up to 5 columns at 2048 bits) and sends them (512 bytes each); q does ``G n_right``
    multi-exponentiations of 105-bit exponents per block (~``105/c`` modular multiplications
    per row and column, ``c ~ log2(block rows) - 4``, both cores) and returns ``G n_right``
    ciphertexts per block; p decrypts those.

    References
    ----------
    Paillier, EUROCRYPT 1999; Cramer, Damgård, Nielsen, 2015 (OLE from additively
    homomorphic encryption); Pippenger, SIAM J. Comput. 1980 (multi-exponentiation).
    """
    me = ctx.party_id
    shares = [0] * (n_left * n_right)
    keys: tuple[PublicKey, PrivateKey] | None = None
    for (p, q), rows, idx in owner_pairs(al, me):
        tags = (ctx.next_tag("cross.u"), ctx.next_tag("cross.ret"))
        if me not in (p, q):
            continue
        values = np.asarray(mine, dtype=np.float64)[idx]
        if me == p:
            if keys is None:
                keys = await asyncio.to_thread(keygen, _KEY_BITS, ctx.rng)
            part = await _offer(ctx, q, tags, values.reshape(rows, n_left), keys, n_right)
        else:
            part = await _answer(ctx, p, tags, values.reshape(rows, n_right), n_left)
        shares = [a + b for a, b in zip(shares, part, strict=True)]
    return shares


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
