"""Batch decryption of small plaintexts by ciphertext packing, with a sound check and fallback.

The key holder decrypts ``k`` ciphertexts with two decryptions when their plaintexts are small
signed integers (``|m| < 2^63``, the usual case for fixed-point data) — packing *after*
encryption, in the spirit of Bianchi, Piva and Barni [BPB10].

Protocol (key holder only; every step modulo ``p^2`` and ``q^2`` separately, i.e. by CRT)
-----------------------------------------------------------------------------------------
1. Shift each plaintext into a 64-bit slot: ``t_i = c_i * g^(2^63)``, so ``u_i = m_i + 2^63``
   lies in ``[0, 2^64)`` exactly when ``-2^63 <= m_i < 2^63``.
2. Pack: ``P = prod t_i^(2^(64 i))`` by Horner (``acc <- acc^(2^64) * t_i``, 64 squarings per
   slot) and decrypt it; ``P`` encrypts ``sum u_i 2^(64 i) mod n``.
3. Check value, in its OWN ciphertext: ``Q = prod t_i^(r_i)`` for fresh secret weights ``r_i``
   of 128 bits (Straus' simultaneous exponentiation, 128 shared squarings), decrypted to
   ``sum r_i u_i mod n``.
4. Accept iff ``P < 2^(64k)`` and ``sum r_i d_i == Q`` for the base-``2^64`` digits ``d_i`` of
   ``P``; then ``m_i = d_i - 2^63``. Otherwise every plaintext of the group is decrypted
   separately.

Soundness (why a wrong decryption cannot pass, whatever the ciphertexts): the digits ``d`` are a
function of the ciphertexts only — ``P`` does not involve the weights — so ``e = u - d mod n``
is fixed before the weights are drawn. Both sides of the check lie in ``[0, n)``
(``sum r_i d_i < k 2^192 < n``), so acceptance means ``sum r_i e_i == 0 (mod n)``. If ``e != 0``,
pick ``j`` with ``e_j != 0 (mod n)``; then ``e_j`` is invertible modulo ``p`` or modulo ``q``,
and fixing the other weights leaves at most one residue of ``r_j`` modulo that prime, i.e. at
most one of the ``2^128`` values of ``r_j`` (``2^128 < p, q``). A group with any slot out of
range is therefore accepted with probability at most ``2^-128`` — proven, not heuristic, and
independent of whether the packed value wraps modulo ``n``. (An earlier layout that decrypted
the check value in the top bits of the same plaintext as the slots let the digits depend on the
weights; crafted out-of-range ciphertexts then passed the check for every choice of weights.)
A refused group is decrypted again one ciphertext at a time, so out-of-range values cost time,
never correctness.

Security: the key holder learns exactly the plaintexts it was decrypting anyway; the weights
never leave this function.

Cost per group of ``k`` values (``k = 30`` for 2048-bit keys, 46 for 3072): about ``64 k + 128``
squarings, ``46 k`` multiplications and two decryptions modulo ``p^2`` and ``q^2`` — about four
decryptions instead of ``k`` (measured 5.5x faster than plain decryption at 2048 bits, one
core); a failed group costs that on top of ``k`` plain decryptions.

References
----------
.. [BPB10] T. Bianchi, A. Piva, M. Barni, "Composite signal representation for fast and
   storage-efficient processing of encrypted signals", IEEE TIFS 5(1), 2010.
.. [BGR98] M. Bellare, J. Garay, T. Rabin, "Fast batch verification for modular
   exponentiation and digital signatures", EUROCRYPT 1998 (small-exponent test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gmpy2

from privcomp.backends.paillier import parallel
from privcomp.core.rng import RandomSource

if TYPE_CHECKING:
    from privcomp.backends.paillier.private_key import PrivateKey

SLOT_BITS = 64
CHECK_BITS = 128
_OFFSET = 1 << (SLOT_BITS - 1)
_MASK = (1 << SLOT_BITS) - 1
_WINDOW = 4
#: Below this many ciphertexts, plain decryption is used.
MIN_BATCH = 16


def group_size(n_bits: int) -> int:
    """Slots per group: ``k`` 64-bit slots plus one spare slot fit in ``n_bits - 2`` bits.

    The packed value ``P < 2^(64k)`` then stays far below ``n``, and the check value
    ``sum r_i d_i < k 2^(64 + CHECK_BITS)`` below ``n`` too.
    """
    k = max(0, (n_bits - 2) // SLOT_BITS - 1)
    while k > 0 and SLOT_BITS + CHECK_BITS + k.bit_length() > n_bits - 2:
        k -= 1
    return k


def _pack(ts: list[gmpy2.mpz], mod: gmpy2.mpz) -> gmpy2.mpz:
    """Return ``prod t_i^(2^(64 i))`` modulo ``mod`` by Horner (step 2)."""
    shift = gmpy2.mpz(1) << SLOT_BITS
    acc = gmpy2.mpz(1)
    for t in reversed(ts):
        acc = gmpy2.powmod(acc, shift, mod) * t % mod
    return acc


def _check(ts: list[gmpy2.mpz], weights: list[int], mod: gmpy2.mpz) -> gmpy2.mpz:
    """Return ``prod t_i^(r_i)`` modulo ``mod`` (step 3).

    Straus' simultaneous exponentiation with 4-bit windows: the factors share their 128
    squarings, and each base's 16 powers are tabulated once (about half the multiplications of
    bit-by-bit processing).
    """
    tables = []
    for t in ts:
        row = [gmpy2.mpz(1), t]
        for _ in range(2, 1 << _WINDOW):
            row.append(row[-1] * t % mod)
        tables.append(row)
    acc = gmpy2.mpz(1)
    digit = (1 << _WINDOW) - 1
    for shift in range(CHECK_BITS - _WINDOW, -1, -_WINDOW):
        acc = gmpy2.powmod(acc, 1 << _WINDOW, mod)
        for row, r in zip(tables, weights, strict=True):
            d = (r >> shift) & digit
            if d:
                acc = acc * row[d] % mod
    return acc


def decrypt_small(
    private_key: PrivateKey,
    cs: list[gmpy2.mpz],
    *,
    rng: RandomSource,
    workers: int | None,
) -> list[int | None]:
    """Return signed plaintexts of validated ciphertexts; ``None`` where the fast path refused.

    Only plaintexts ``m`` with ``-2^63 <= m < 2^63`` (read as signed, i.e. ``m`` or ``m - n``)
    come back; the caller decrypts the ``None`` entries one by one.
    """
    count = len(cs)
    pk = private_key.public_key
    k = group_size(pk.bits)
    if count < MIN_BATCH or k < 2:
        return [None] * count
    step = CHECK_BITS // 8
    raw = rng.random_bytes(step * count)  # drawn before any fork
    weights = [int.from_bytes(raw[i * step : (i + 1) * step], "big") for i in range(count)]
    p, q, hp, hq, pinv = private_key._crt_parts()
    p2, q2 = p * p, q * q
    g_off = 1 + _OFFSET * pk._n  # g^(2^63) = 1 + 2^63 * n
    groups = list(range(0, count, k))
    n_bits = pk.bits

    def decrypt(xp: gmpy2.mpz, xq: gmpy2.mpz) -> gmpy2.mpz:
        mp = (gmpy2.powmod(xp, p - 1, p2) - 1) // p * hp % p
        mq = (gmpy2.powmod(xq, q - 1, q2) - 1) // q * hq % q
        return mp + (mq - mp) * pinv % q * p

    def compute(start: int, stop: int) -> list[gmpy2.mpz]:
        out: list[gmpy2.mpz] = []
        for first in groups[start:stop]:
            chunk, ws = cs[first : first + k], weights[first : first + k]
            tp, tq = [c * g_off % p2 for c in chunk], [c * g_off % q2 for c in chunk]
            packed = decrypt(_pack(tp, p2), _pack(tq, q2))
            check = decrypt(_check(tp, ws, p2), _check(tq, ws, q2))
            out.append((check << n_bits) | packed)  # both below n: one fixed-width result
        return out

    w = parallel.resolve_workers(workers, len(groups), 8)
    both = parallel.map_chunks(compute, len(groups), 2 * ((n_bits + 7) // 8), w)
    result: list[int | None] = []
    low = (1 << n_bits) - 1
    for first, x in zip(groups, both, strict=True):
        size = min(k, count - first)
        result.extend(_unpack(int(x) & low, int(x) >> n_bits, weights[first : first + size]))
    return result


def _unpack(packed: int, check: int, weights: list[int]) -> list[int | None]:
    """Step 4: split ``P`` into slots and verify them against the check value ``Q``."""
    size = len(weights)
    if packed >> (SLOT_BITS * size):
        return [None] * size
    digits = [(packed >> (SLOT_BITS * i)) & _MASK for i in range(size)]
    if sum(r * d for r, d in zip(weights, digits, strict=True)) != check:
        return [None] * size
    return [d - _OFFSET for d in digits]
