"""Pairwise oblivious linear evaluation (OLE) over Paillier, packed (layer: protocols).

Party ``i`` (the *sender*) holds ``x_i``, party ``j`` (the *receiver*) holds ``y_j``; afterwards
they hold additive shares over Z_2^64 of ``x_i * y_j`` (elementwise) or ``x_i @ y_j`` (matrix
product), and neither learns anything about the other's operand. :func:`ole_cross_products` runs
any set of such pairs at once: every party sends ``Enc_i(x_i)`` once to all its receivers and
answers every sender that addressed it.

Protocol (sender ``i`` with Paillier key ``(pk_i, sk_i)``, receiver ``j``)
------------------------------------------------------------------------
Let ``2^p`` bound every integer output entry (``p = 128`` for 64-bit operands, plus
``log2 k`` for a ``k``-term matrix product, ``p = 2`` for bits), ``W = p + sigma + 1`` the slot
width and ``K = floor((|n| - 1) / W)`` the slots per ciphertext.

1. ``i`` encrypts every entry of ``x_i`` under its own key, with the CRT-accelerated encryption of
   the key holder, and sends the ciphertexts (the same ones to every receiver). Elementwise,
   entry ``e`` is encrypted pre-shifted to its output slot, ``x_e * 2^((e mod K) W)``.
2. ``j`` computes ``Enc_i(sum_k (x_k y_k + s_k) 2^(kW))`` for every group of ``K`` outputs:
   ``prod_k Enc(x_k 2^(kW))^(y_k)`` elementwise (a 64-bit exponentiation per entry, a
   selection for bits), or ``prod_l Enc(x_rl)^(y_lc)`` per matrix entry packed by Horner's rule
   (``P <- P^(2^W) * E``). The masks ``s_k`` are fresh and uniform in ``[0, 2^(p + sigma))``;
   they are added as one fresh encryption ``Enc(sum_k s_k 2^(kW))``, which also re-randomises
   the reply. ``j`` keeps ``-s_k mod 2^64`` and sends the packed ciphertexts back.
3. ``i`` decrypts (``K`` times fewer decryptions than entries), cuts the ``W``-bit slots and
   keeps ``x_k y_k + s_k mod 2^64``; adding ``j``'s ``-s_k`` gives ``x_k y_k`` exactly, mod 2^64.

Security (semi-honest)
----------------------
``j`` sees only ciphertexts under ``pk_i``: IND-CPA of Paillier (decisional composite residuosity,
plus the short-exponent assumption of the engine's fast encryption) hides ``x_i``. ``i`` sees each
``x_k y_k + s_k`` on a fresh, re-randomised ciphertext: within statistical distance ``2^-sigma``
of uniform on ``[0, 2^(p+sigma))`` whatever ``y_j`` is (``sigma = 40`` by default). No slot
overflows into the next and the packed plaintext stays below ``n``, so nothing wraps modulo
``n``. Masks come from the party's injected :class:`~privcomp.core.rng.RandomSource`, fresh at
every call.

Cost per ordered pair (``N`` output entries, ``T`` products: ``T = N`` elementwise)
--------------------------------------------------------------------------------
2 rounds for all pairs together. The sender encrypts its ``M`` input entries once and sends
``M`` ciphertexts of ``2|n|`` bits to each receiver; the receiver does ``T`` exponentiations
with 64-bit exponents (none for bits), ``ceil(N/K)`` encryptions (and ``N`` Horner steps for
matrix products), and returns ``ceil(N/K)`` ciphertexts; the sender does ``ceil(N/K)``
decryptions. 2048-bit key: ``W = 169, K = 12`` for 64-bit operands, ``W = 43, K = 47`` for bits.

References
----------
* N. Gilboa, "Two Party RSA Key Generation", CRYPTO 1999 (OLE from additively homomorphic
  encryption).
* I. Damgård, V. Pastro, N. Smart, S. Zakarias, "Multiparty Computation from Somewhat
  Homomorphic Encryption", CRYPTO 2012 (SPDZ: triples from HE with statistical masking).
* P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes",
  EUROCRYPT 1999.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np

from privcomp.backends.paillier import (
    PrivateKey,
    PublicKey,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    parallel,
)
from privcomp.errors import ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.types import RingArray

#: Default statistical security parameter (masks hide products up to 2^-sigma).
DEFAULT_SIGMA = 40
#: Batches of at least this many 64-bit exponentiations are spread over every core.
PARALLEL_POW_THRESHOLD = 256
_MASK64 = (1 << 64) - 1
_WORD_BITS = 64
_WINDOW = 4


@dataclass(frozen=True, slots=True)
class OleKeys:
    """One party's Paillier key pair and its peers' public keys."""

    public_key: PublicKey
    private_key: PrivateKey
    peers: dict[int, PublicKey]


@dataclass(frozen=True, slots=True)
class OleShape:
    """What is computed: an elementwise product or an ``(m, k) @ (k, n)`` matrix product.

    ``x_bits`` and ``y_bits`` bound the operands (``0 <= x < 2^x_bits``); both sides of a pair
    must use the same values, because they fix the slot width.
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    matmul: bool = False
    x_bits: int = 64
    y_bits: int = 64

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the product."""
        if self.matmul:
            return (self.x_shape[0], self.y_shape[1])
        return self.x_shape

    @property
    def terms(self) -> int:
        """Number of products summed into one output entry."""
        return self.x_shape[1] if self.matmul else 1

    def product_bits(self) -> int:
        """``p`` such that every output entry (as an integer) is below ``2^p``."""
        return self.x_bits + self.y_bits + max(0, (self.terms - 1).bit_length())


def slot_layout(shape: OleShape, n_bits: int, sigma: int) -> tuple[int, int]:
    """Return ``(W, K)``: slot width in bits and slots per ciphertext for an ``n_bits`` modulus."""
    width = shape.product_bits() + sigma + 1
    per_ct = (n_bits - 1) // width
    if per_ct < 1:
        raise ProtocolError(
            f"Paillier modulus of {n_bits} bits cannot hold one {width}-bit OLE slot"
        )
    return width, per_ct


def _to_ints(arr: RingArray) -> list[int]:
    return [int(v) for v in np.asarray(arr, dtype=np.uint64).ravel()]


def _check_operand(
    arr: RingArray | None, expected: tuple[int, ...], bits: int, name: str
) -> RingArray:
    """Return ``arr`` as uint64 after checking its shape and its bit bound.

    The slot width and the mask range are derived from ``shape.product_bits()``; an operand
    above its declared bound would overflow its slot (a silently wrong share) and make the mask
    too short to hide the product, so it is refused before anything is encrypted or sent.
    """
    if arr is None:
        raise ProtocolError(f"OLE {name} operand is missing")
    values = np.asarray(arr, dtype=np.uint64)
    if values.shape != expected:
        raise ProtocolError(f"OLE {name} operand has shape {values.shape}, expected {expected}")
    if bits < _WORD_BITS and values.size and int(values.max()) >> bits:
        raise ProtocolError(f"OLE {name} operand exceeds its declared {bits}-bit bound")
    return values


def _sender_plaintexts(x: RingArray, shape: OleShape, width: int, per_ct: int) -> list[int]:
    """Plaintexts the sender encrypts.

    Elementwise: entry ``e`` is pre-shifted to its slot, ``x_e * 2^((e mod K) W)``, so that the
    receiver packs by plain ciphertext multiplication (no Horner squarings). Matrix products
    reuse every entry in several output slots, so they are sent unshifted.
    """
    ints = _to_ints(x)
    if shape.matmul:
        return ints
    return [v << ((e % per_ct) * width) for e, v in enumerate(ints)]


def _powers(pk: PublicKey, cts: Sequence[Any], y: RingArray, shape: OleShape) -> list[Any]:
    """Elementwise ``Enc(x_e)^(y_e)`` (bit exponents select instead of exponentiating)."""
    if shape.y_bits == 1:
        one = gmpy2.mpz(1)  # the trivial encryption of 0; masking re-randomises afterwards
        return [c if yv else one for c, yv in zip(cts, _to_ints(y), strict=True)]
    bases, exps, nsq = list(cts), _to_ints(y), pk.nsquare

    def compute(start: int, stop: int) -> list[Any]:
        return [gmpy2.powmod(bases[i], exps[i], nsq) for i in range(start, stop)]

    # Large batches use every core (forked workers, results through shared memory, no pickle).
    workers = parallel.resolve_workers(None, len(bases), PARALLEL_POW_THRESHOLD)
    return parallel.map_chunks(compute, len(bases), pk.ciphertext_bytes, workers)


def _window_table(base: Any, nsq: Any) -> list[Any]:
    """``[base^0, base^1, ..., base^(2^w - 1)] mod nsq`` for the fixed window width."""
    table = [gmpy2.mpz(1), base]
    for _ in range(2, 1 << _WINDOW):
        table.append(table[-1] * base % nsq)
    return table


def _matmul_entries(pk: PublicKey, cts: Sequence[Any], y: RingArray, shape: OleShape) -> list[Any]:
    """``Enc((x @ y)_rc) = prod_t Enc(x_rt)^(y_tc)``, row-major over the output.

    Straus' simultaneous exponentiation with fixed 4-bit windows: the ``k`` factors of one entry
    share their 60 squarings, and each ciphertext's table of 16 powers is built once and reused by
    every column — about half the modular multiplications of ``k`` separate exponentiations.
    """
    m, k = shape.x_shape
    ncols = shape.y_shape[1]
    nsq = pk.nsquare
    tables = [_window_table(c, nsq) for c in cts]
    yv = np.asarray(y, dtype=np.uint64)
    n_win = _WORD_BITS // _WINDOW
    shifts = np.arange(n_win - 1, -1, -1, dtype=np.uint64) * np.uint64(_WINDOW)
    # digits[c][w][t]: window w (most significant first) of y[t, c].
    digits = ((yv.T[:, None, :] >> shifts[None, :, None]) & np.uint64((1 << _WINDOW) - 1)).tolist()
    square = 1 << _WINDOW
    out: list[Any] = []
    for r in range(m):
        row = tables[r * k : (r + 1) * k]
        for c in range(ncols):
            acc = gmpy2.mpz(1)
            for w, win in enumerate(digits[c]):
                if w:
                    acc = gmpy2.powmod(acc, square, nsq)
                for t, d in enumerate(win):
                    if d:
                        acc = acc * row[t][d] % nsq
            out.append(acc)
    return out


def _pack(pk: PublicKey, entries: list[Any], shape: OleShape, width: int, per_ct: int) -> list[Any]:
    """Combine ``per_ct`` consecutive entries into one ciphertext, entry ``k`` in slot ``k``."""
    nsq = pk.nsquare
    chunks = [entries[i : i + per_ct] for i in range(0, len(entries), per_ct)]
    packed: list[Any] = []
    for chunk in chunks:
        acc = chunk[-1]
        if shape.matmul:  # Horner: P <- P^(2^W) * E_k from the top slot down
            for e in reversed(chunk[:-1]):
                acc = gmpy2.powmod(acc, 1 << width, nsq) * e % nsq
        else:  # already shifted by the sender
            for e in chunk[:-1]:
                acc = acc * e % nsq
        packed.append(acc)
    return packed


def _pack_masks(masks: list[int], width: int, per_ct: int) -> list[int]:
    return [
        sum(s << (k * width) for k, s in enumerate(masks[i : i + per_ct]))
        for i in range(0, len(masks), per_ct)
    ]


def _unpack(values: Sequence[int], count: int, width: int, per_ct: int) -> RingArray:
    """Cut decrypted packed plaintexts into ``count`` slots, each reduced modulo 2^64."""
    slot_mask = (1 << width) - 1
    bound = 1 << (width * per_ct)
    out: list[int] = []
    for v in values:
        if not 0 <= v < bound:
            raise ProtocolError("OLE reply decrypts outside the packed slot range")
        out.extend(((v >> (k * width)) & slot_mask) & _MASK64 for k in range(per_ct))
    if len(out) < count:
        raise ProtocolError("OLE reply holds fewer slots than requested")
    return np.array(out[:count], dtype=np.uint64)


def _uniform_bits(ctx: PartyContext, bits: int, count: int) -> list[int]:
    """``count`` integers uniform in ``[0, 2^bits)`` from one draw of the party's randomness."""
    step = (bits + 7) // 8
    raw = ctx.rng.random_bytes(step * count)
    cut = (1 << bits) - 1
    return [int.from_bytes(raw[i * step : (i + 1) * step], "little") & cut for i in range(count)]


def _n_cts(count: int, per_ct: int) -> int:
    return -(-count // per_ct)


async def _answer(
    ctx: PartyContext,
    keys: OleKeys,
    sender: int,
    y: RingArray,
    shape: OleShape,
    tags: tuple[str, str],
    sigma: int,
) -> RingArray:
    """Receiver side of one pair: evaluate, pack, mask and reply; return ``-s``."""
    pk = keys.peers[sender]
    n_in = int(np.prod(shape.x_shape, dtype=np.int64))
    n_out = int(np.prod(shape.out_shape, dtype=np.int64))
    width, per_ct = slot_layout(shape, pk.bits, sigma)
    cts = ciphertexts_from_bytes(await ctx.transport.recv(sender, tags[0]), pk)
    if len(cts) != n_in:
        raise ProtocolError(f"party {sender} sent {len(cts)} OLE ciphertexts, expected {n_in}")
    masks = _uniform_bits(ctx, shape.product_bits() + sigma, n_out)
    packed_masks = _pack_masks(masks, width, per_ct)

    def work() -> bytes:
        entries = _matmul_entries(pk, cts, y, shape) if shape.matmul else _powers(pk, cts, y, shape)
        packed = _pack(pk, entries, shape, width, per_ct)
        # A fresh encryption of the packed masks adds them and re-randomises in one product.
        enc_masks = pk.raw_encrypt(packed_masks, rng=ctx.rng)
        return ciphertexts_to_bytes(pk.raw_add_many(packed, enc_masks), pk)

    await ctx.transport.send(sender, tags[1], await asyncio.to_thread(work))
    neg = np.array([(-s) & _MASK64 for s in masks], dtype=np.uint64)
    return neg.reshape(shape.out_shape)


async def _collect(
    ctx: PartyContext, keys: OleKeys, receiver: int, shape: OleShape, tag: str, sigma: int
) -> RingArray:
    """Sender side of one pair: decrypt the packed reply and cut it into shares."""
    n_out = int(np.prod(shape.out_shape, dtype=np.int64))
    width, per_ct = slot_layout(shape, keys.public_key.bits, sigma)
    cts = ciphertexts_from_bytes(await ctx.transport.recv(receiver, tag), keys.public_key)
    if len(cts) != _n_cts(n_out, per_ct):
        raise ProtocolError(f"party {receiver} sent a malformed OLE reply")
    plain = await asyncio.to_thread(keys.private_key.raw_decrypt, cts)
    return _unpack(plain, n_out, width, per_ct).reshape(shape.out_shape)


async def ole_cross_products(
    ctx: PartyContext,
    keys: OleKeys,
    shape: OleShape,
    *,
    x: RingArray | None,
    y: RingArray | None,
    send_to: Sequence[int],
    recv_from: Sequence[int],
    sigma: int = DEFAULT_SIGMA,
) -> RingArray:
    """This party's share of ``sum_j x_self o y_j + sum_i x_i o y_self`` (2 rounds).

    Every party of the job calls it (SPMD), also with empty ``send_to`` and ``recv_from``, so
    that tags stay aligned; ``j in send_to`` of party ``i`` iff ``i in recv_from`` of ``j``.

    Parameters
    ----------
    ctx:
        This party's context.
    keys:
        This party's key pair and its peers' public keys.
    shape:
        Operand shapes, product kind and operand bit bounds (identical at both ends of a pair).
    x:
        Left operand (required when ``send_to`` is not empty).
    y:
        Right operand (required when ``recv_from`` is not empty).
    send_to:
        Receivers this party sends ``Enc(x)`` to.
    recv_from:
        Senders whose ``x`` this party multiplies by ``y``.
    sigma:
        Statistical security parameter of the masks.

    Returns
    -------
    RingArray
        Additive share (mod 2^64) of the sum of this party's pair products, ``shape.out_shape``.

    Raises
    ------
    ProtocolError
        If an operand is missing or a peer's message has the wrong size or slot range.
    """
    tag_enc = ctx.next_tag("ole-enc")
    tag_rep = ctx.next_tag("ole-rep")
    total = np.zeros(shape.out_shape, dtype=np.uint64)
    if not send_to and not recv_from:
        return total
    if send_to:
        x = _check_operand(x, shape.x_shape, shape.x_bits, "sender's x")
        pk = keys.public_key
        width, per_ct = slot_layout(shape, pk.bits, sigma)
        plain = _sender_plaintexts(x, shape, width, per_ct)

        def encrypt() -> bytes:
            # The key holder encrypts with CRT-accelerated blinding factors.
            return ciphertexts_to_bytes(keys.private_key.raw_encrypt(plain, rng=ctx.rng), pk)

        payload = await asyncio.to_thread(encrypt)
        await asyncio.gather(*(ctx.transport.send(j, tag_enc, payload) for j in send_to))
    jobs = []
    if recv_from:
        y = _check_operand(y, shape.y_shape, shape.y_bits, "receiver's y")
        jobs += [_answer(ctx, keys, i, y, shape, (tag_enc, tag_rep), sigma) for i in recv_from]
    jobs += [_collect(ctx, keys, j, shape, tag_rep, sigma) for j in send_to]
    for part in await asyncio.gather(*jobs):
        total += part
    return total
