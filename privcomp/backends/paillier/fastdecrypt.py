"""Batch decryption of small plaintexts by ciphertext packing, with a checked fallback.

The key holder decrypts ``k`` ciphertexts with ONE decryption when their plaintexts are small
signed integers (``|m| < 2^63``, the usual case for fixed-point data) — packing *after*
encryption, in the spirit of Bianchi, Piva and Barni [BPB10].

Protocol (key holder only; every step modulo ``p^2`` and ``q^2`` separately, i.e. by CRT)
-----------------------------------------------------------------------------------------
1. Shift each plaintext into a 64-bit slot: ``t_i = c_i * g^(2^63)``, so ``u_i = m_i + 2^63``
   lies in ``[0, 2^64)`` exactly when ``-2^63 <= m_i < 2^63``.
2. Check value: ``R = prod t_i^(r_i)`` encrypts ``sum r_i * u_i`` for fresh secret weights
   ``r_i`` of 40 bits (simultaneous exponentiation, 40 shared squarings).
3. Horner: ``X = R * 2^(64k) + sum u_i * 2^(64i)`` as ``acc <- acc^(2^64) * t_i`` (64 squarings
   per slot), then ONE CRT decryption of ``X``.
4. Accept iff ``X < 2^(64k + |R|)`` and ``sum r_i * digit_i(X) == X >> 64k``; then
   ``m_i = digit_i(X) - 2^63``. Otherwise every plaintext of the group is decrypted separately.

Correctness: when all ``u_i`` are in range, the digits are the ``u_i`` and the check holds.
If some ``u_i`` is out of range but the packed value does not wrap modulo ``n``, the digits
differ from ``u`` by carries/borrows ``delta != 0`` that do not depend on the weights, and the
check holds only if ``sum r_i * delta_i`` hits one value: probability at most ``2^-40`` over the
secret weights. A packed value that wraps modulo ``n`` (a plaintext far outside the slot) gives
an ``X`` that must still pass both the range and the weighted check (heuristically the same
``2^-40``). A refused group is decrypted again one ciphertext at a time, so out-of-range values
cost time, never correctness (up to that probability).

Security: the key holder learns exactly the plaintexts it was decrypting anyway.

Cost per group of ``k`` values (``k = 30`` for 2048-bit keys, 46 for 3072): about ``|n|``
squarings and one decryption modulo ``p^2`` and ``q^2`` — roughly 1.5 decryptions instead of
``k``; a failed group costs that on top of ``k`` plain decryptions.

References
----------
.. [BPB10] T. Bianchi, A. Piva, M. Barni, "Composite signal representation for fast and
   storage-efficient processing of encrypted signals", IEEE TIFS 5(1), 2010.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gmpy2

from privcomp.backends.paillier import parallel
from privcomp.core.rng import RandomSource

if TYPE_CHECKING:
    from privcomp.backends.paillier.private_key import PrivateKey

SLOT_BITS = 64
CHECK_BITS = 40
_OFFSET = 1 << (SLOT_BITS - 1)
_MASK = (1 << SLOT_BITS) - 1
#: Below this many ciphertexts, plain decryption is used.
MIN_BATCH = 16


def group_size(n_bits: int) -> int:
    """Largest ``k`` with ``64k + |R|`` bits below ``n_bits - 2`` (so ``X`` never wraps)."""
    k = max(0, (n_bits - 2 - SLOT_BITS - CHECK_BITS) // SLOT_BITS)
    while k > 0 and SLOT_BITS * k + _check_bits(k) > n_bits - 2:
        k -= 1
    return k


def _check_bits(k: int) -> int:
    return SLOT_BITS + CHECK_BITS + k.bit_length()


def _fold(ts: list[gmpy2.mpz], weights: list[int], mod: gmpy2.mpz) -> gmpy2.mpz:
    """Return ``R * 2^(64k) + sum u_i 2^(64 i)`` (encrypted) modulo ``mod`` (steps 2 and 3)."""
    acc = gmpy2.mpz(1)
    for bit in range(CHECK_BITS - 1, -1, -1):
        acc = acc * acc % mod
        for t, r in zip(ts, weights, strict=True):
            if (r >> bit) & 1:
                acc = acc * t % mod
    shift = gmpy2.mpz(1) << SLOT_BITS
    for t in reversed(ts):
        acc = gmpy2.powmod(acc, shift, mod) * t % mod
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

    def compute(start: int, stop: int) -> list[gmpy2.mpz]:
        out: list[gmpy2.mpz] = []
        for first in groups[start:stop]:
            chunk, ws = cs[first : first + k], weights[first : first + k]
            xp = _fold([c * g_off % p2 for c in chunk], ws, p2)
            xq = _fold([c * g_off % q2 for c in chunk], ws, q2)
            mp = (gmpy2.powmod(xp, p - 1, p2) - 1) // p * hp % p
            mq = (gmpy2.powmod(xq, q - 1, q2) - 1) // q * hq % q
            out.append(mp + (mq - mp) * pinv % q * p)
        return out

    w = parallel.resolve_workers(workers, len(groups), 8)
    packed = parallel.map_chunks(compute, len(groups), (pk.bits + 7) // 8, w)
    result: list[int | None] = []
    for first, x in zip(groups, packed, strict=True):
        size = min(k, count - first)
        result.extend(_unpack(int(x), weights[first : first + size]))
    return result


def _unpack(x: int, weights: list[int]) -> list[int | None]:
    """Step 4: split ``X`` into slots and verify the weighted check value."""
    size = len(weights)
    top = x >> (SLOT_BITS * size)
    if top >> _check_bits(size):
        return [None] * size
    digits = [(x >> (SLOT_BITS * i)) & _MASK for i in range(size)]
    if sum(r * d for r, d in zip(weights, digits, strict=True)) != top:
        return [None] * size
    return [d - _OFFSET for d in digits]
