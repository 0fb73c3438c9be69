"""Wide-ring secure sum and the small agreement rounds of joint statistics (layer: protocols).

Joint statistics need only *a few* aggregates per job (counts, sums, centred sums of squares and
cross-products per column and group), but they need them exactly: the sum of squares of 10^6
values of magnitude 10^6 is ~10^18 and must keep 1e-9 relative accuracy, which a 64-bit ring with
16 fractional bits cannot hold. So each party's float64 pre-aggregate ``v`` is encoded as the
integer ``round(v * 2**WIDE_FRAC_BITS)`` — exact for every float64 with ``|v| >= 2**-60`` —
and the integers are additively shared modulo ``2**WIDE_BITS`` (Python ints on the party, four
little-endian ``uint64`` limbs on the wire). The sum of the encodings is the exact sum of the
parties' pre-aggregates; only the total is rounded, once, back to float64.

Choice of parameters: ``WIDE_BITS = 256`` and ``WIDE_FRAC_BITS = 112``. A party's encoding must
satisfy ``|v| * 2**112 < 2**255 / n_parties`` so the signed total can never wrap; this bounds a
pre-aggregate by ~2.8e42 / n_parties (Σx² of 10^6 values of 10^6 per party is 1e18), and it is
checked *before* anything is shared (:class:`EncodingOverflowError`, naming the bound only).
The resolution 2^-112 ≈ 1.9e-34 is far below any figure whose relative accuracy matters.

References
----------
* R. Cramer, I. Damgård, J. B. Nielsen, *Secure Multiparty Computation and Secret Sharing*,
  Cambridge University Press, 2015, §1.2 (additive secret sharing, secure summation).
* T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for Computing the Sample Variance",
  The American Statistician 37(3), 1983 (why centred second moments, not Σx² - (Σx)²/n).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from privcomp.errors import EncodingError, EncodingOverflowError, ProtocolError
from privcomp.protocols.context import PartyContext

#: Modulus of the wide ring is ``2**WIDE_BITS``.
WIDE_BITS = 256
#: Fractional bits of the exact encoding of float64 pre-aggregates.
WIDE_FRAC_BITS = 112
_MOD = 1 << WIDE_BITS
_HALF = 1 << (WIDE_BITS - 1)
_LIMBS = WIDE_BITS // 64
_LIMB_BYTES = WIDE_BITS // 8
#: Largest JSON payload of group labels one party may send (bytes).
MAX_LABEL_BYTES = 1 << 20


def encode_wide(values: Sequence[float] | np.ndarray, *, what: str = "aggregate") -> list[int]:
    """Encode float64 values exactly as integers at scale ``2**WIDE_FRAC_BITS``.

    Raises
    ------
    EncodingError
        For NaN or infinite values.
    """
    out: list[int] = []
    scale = 1 << WIDE_FRAC_BITS
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        if not np.isfinite(v):
            raise EncodingError(f"NaN or infinite {what} cannot be encoded")
        out.append(round(Fraction(v) * scale))
    return out


def decode_wide(values: Sequence[int]) -> np.ndarray:
    """Decode integers at scale ``2**WIDE_FRAC_BITS`` to float64 (correctly rounded)."""
    scale = 1 << WIDE_FRAC_BITS
    return np.array([float(Fraction(v, scale)) for v in values], dtype=np.float64)


def _to_limbs(values: Sequence[int]) -> np.ndarray:
    raw = b"".join((v % _MOD).to_bytes(_LIMB_BYTES, "little") for v in values)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(len(values), _LIMBS)


def _from_limbs(arr: np.ndarray, expected: int) -> list[int]:
    if arr.dtype != np.uint64 or arr.shape != (expected, _LIMBS):
        raise ProtocolError(f"wide-ring message has shape {arr.shape}, expected ({expected}, 4)")
    raw = arr.astype("<u8").tobytes()
    return [
        int.from_bytes(raw[i : i + _LIMB_BYTES], "little") for i in range(0, len(raw), _LIMB_BYTES)
    ]


def _random_wide(ctx: PartyContext, m: int) -> list[int]:
    raw = ctx.rng.random_bytes(_LIMB_BYTES * m)
    return [
        int.from_bytes(raw[i : i + _LIMB_BYTES], "little") for i in range(0, len(raw), _LIMB_BYTES)
    ]


def check_wide_range(values: Sequence[int], n_parties: int, *, what: str = "aggregate") -> None:
    """Refuse inputs whose sum over ``n_parties`` could wrap modulo ``2**WIDE_BITS``.

    Raises
    ------
    EncodingOverflowError
        If some ``|v| >= 2**(WIDE_BITS - 1) / n_parties`` (the message names the bound only).
    """
    limit = _HALF // n_parties
    if any(abs(v) >= limit for v in values):
        bound = float(Fraction(limit, 1 << WIDE_FRAC_BITS))
        raise EncodingOverflowError(
            f"{what} outside the wide-ring range |v| < {bound:.3g} for {n_parties} parties",
            bound=bound,
        )


async def secure_sum_wide(
    ctx: PartyContext, values: Sequence[int], *, checked: bool = True
) -> list[int]:
    """Sum every party's integer vector modulo ``2**WIDE_BITS``; reveal only the total.

    Protocol
    --------
    1. Party i checks ``|x_i| < 2**255 / n`` (no wrap possible), draws uniform ``r_ij`` for
       every peer j, keeps ``s_ii = x_i - Σ_j r_ij`` and sends ``r_ij`` to party j.
    2. Party i adds ``s_ii`` and the shares it received, and sends this partial sum to everyone.
    3. Every party adds the n partial sums: ``Σ_i x_i`` (read as a signed integer).

    Security
    --------
    Semi-honest, any n-1 colluding parties: the shares a party sends are uniform and
    independent of its input, and the partial sums are uniform subject to adding up to the
    total, so nothing beyond the total (the released output) is learnt.

    Cost
    ----
    2 rounds; each party sends ``2 (n-1) m`` ring elements of 32 bytes (m = vector length).

    References
    ----------
    Cramer, Damgård, Nielsen, *Secure Multiparty Computation and Secret Sharing*, 2015, §1.2.

    Parameters
    ----------
    ctx:
        This party's context.
    values:
        This party's signed integers (same length at every party).
    checked:
        Check the no-wrap bound on ``values``. ``False`` for inputs that are themselves
        additive shares (e.g. of cross-party products) whose *total* is bounded by construction.

    Returns
    -------
    list of int
        The signed totals, identical at every party.
    """
    m = len(values)
    if checked:
        check_wide_range(values, ctx.n_parties)
    tag_share = ctx.next_tag("wsum.share")
    tag_open = ctx.next_tag("wsum.open")
    own = [v % _MOD for v in values]
    for peer in ctx.peers:
        r = _random_wide(ctx, m)
        own = [(a - b) % _MOD for a, b in zip(own, r, strict=True)]
        await ctx.send_array(peer, tag_share, _to_limbs(r))
    for peer in ctx.peers:
        got = _from_limbs(await ctx.recv_array(peer, tag_share), m)
        own = [(a + b) % _MOD for a, b in zip(own, got, strict=True)]
    partials = await ctx.exchange_all(tag_open, _to_limbs(own))
    total = own
    for peer in ctx.peers:
        got = _from_limbs(partials[peer], m)
        total = [(a + b) % _MOD for a, b in zip(total, got, strict=True)]
    return [t - _MOD if t >= _HALF else t for t in total]


async def secure_sum_floats(ctx: PartyContext, values: np.ndarray, *, what: str) -> np.ndarray:
    """Exact secure sum of float64 pre-aggregates (see the module docstring), as float64.

    Protocol
    --------
    1. Encode every value exactly at scale ``2**WIDE_FRAC_BITS`` and check the no-wrap bound.
    2. :func:`agree` on the check, so a party out of range stops every party at once.
    3. :func:`secure_sum_wide` of the encodings; decode the total, rounding once.

    Security
    --------
    As :func:`secure_sum_wide`; the agreement round reveals only whether some party's
    aggregate is out of range (the error names the bound, never a value).

    Cost
    ----
    3 rounds; ``8 (n-1) + 64 (n-1) m`` bytes per party (m = number of aggregates).

    References
    ----------
    Cramer, Damgård, Nielsen, 2015, §1.2.
    """
    shape = np.shape(values)
    enc = encode_wide(values, what=what)
    try:
        check_wide_range(enc, ctx.n_parties, what=what)
    except EncodingOverflowError:
        # Agree on the failure first, so no peer waits for shares that never come.
        await agree(ctx, 1)
        raise
    if any(await agree(ctx, 0)):
        raise ProtocolError(f"a peer's {what} is outside the wide-ring range; job aborted")
    return decode_wide(await secure_sum_wide(ctx, enc)).reshape(shape)


async def agree(ctx: PartyContext, code: int) -> list[int]:
    """Broadcast a small status code and return every party's code, in party order.

    Used before anything data-dependent crosses party lines: a party whose policy refuses
    sends a non-zero code, so every party stops at the same point (nobody waits for shares
    that will never come).

    Protocol
    --------
    Every party sends its code to every peer (one broadcast round).

    Security
    --------
    The codes are public by design (a refusal is announced anyway); no data is sent.

    Cost
    ----
    1 round; ``8 (n-1)`` bytes per party.

    References
    ----------
    None: a plain broadcast of public status codes.
    """
    tag = ctx.next_tag("agree")
    got = await ctx.exchange_all(tag, np.array([code], dtype=np.uint64))
    codes = [0] * ctx.n_parties
    codes[ctx.party_id] = code
    for peer, arr in got.items():
        if arr.shape != (1,):
            raise ProtocolError(f"status message from party {peer} has shape {arr.shape}")
        codes[peer] = int(arr[0])
    return codes


Label = str | int | float | bool


async def union_labels(ctx: PartyContext, labels: Sequence[Label]) -> list[Label]:
    """Exchange group labels (already cleared by every party's policy); return the sorted union.

    Protocol
    --------
    Every party broadcasts its JSON-encoded labels; each takes the sorted union.

    Security
    --------
    Reveals each party's label set, which every party's policy cleared before (a group of
    0 or >= k records); labels are JSON scalars, so nothing but plain data is ever decoded.

    Cost
    ----
    1 round; at most :data:`MAX_LABEL_BYTES` bytes to each peer.

    References
    ----------
    None: a plain broadcast of policy-cleared public labels.
    """
    payload = json.dumps(list(labels)).encode()
    if len(payload) > MAX_LABEL_BYTES:
        raise ProtocolError(f"group labels exceed {MAX_LABEL_BYTES} bytes")
    tag = ctx.next_tag("labels")
    raw: np.ndarray = np.frombuffer(payload, dtype=np.uint8).copy()
    got = await ctx.exchange_all(tag, raw)
    union: set[Label] = set(labels)
    for peer, arr in got.items():
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size > MAX_LABEL_BYTES:
            raise ProtocolError(f"label message from party {peer} is malformed")
        decoded = json.loads(arr.tobytes().decode())
        if not isinstance(decoded, list) or not all(
            isinstance(x, str | int | float | bool) for x in decoded
        ):
            raise ProtocolError(f"label message from party {peer} is malformed")
        union.update(decoded)
    try:
        return sorted(union)
    except TypeError as exc:
        raise ProtocolError("group labels of different types cannot be ordered") from exc
