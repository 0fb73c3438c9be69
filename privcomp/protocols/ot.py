"""Semi-honest 1-out-of-2 oblivious transfer: base OTs and IKNP extension (layer: protocols).

Every pair of parties runs one OT extension, in one direction: **the party with the lower index is
the extension sender**, the higher one the extension receiver (whose choice bits are its inputs).
For the 128 base OTs the roles are reversed (the extension sender is the base-OT receiver).

Protocol
--------
Base OTs (Chou-Orlandi, semi-honest; group: RFC 3526 2048-bit MODP group 14, ``p = 2q + 1``
a safe prime, generator ``g = 2`` of the order-``q`` subgroup of quadratic residues):

1. Base sender (higher index): ``a`` random, sends ``A = g^a``.
2. Base receiver (lower index), for its choice bits ``s_i``, ``i < 128``: ``b_i`` random,
   sends ``B_i = g^(b_i)`` if ``s_i = 0`` else ``A g^(b_i)``; keeps ``k_i = H(i, A, B_i, A^(b_i))``.
3. Base sender: ``k_i^0 = H(i, A, B_i, B_i^a)``, ``k_i^1 = H(i, A, B_i, (B_i / A)^a)``; then
   ``k_i = k_i^(s_i)``. Random OT: no further message (the keys are PRG seeds).

IKNP extension (Ishai-Kilian-Nissim-Petrank with the Asharov-Lindell-Schneider-Zohner
optimisations: seeds instead of columns, random/correlated OT without sender messages), for
``m`` OTs with the receiver's choice vector ``r``:

1. Receiver: ``t^i = G(k_i^0)``, sends ``u^i = t^i xor G(k_i^1) xor r`` (128 columns of ``m``
   bits; ``G`` = AES-128-CTR, each batch reading a fresh range of the stream).
2. Sender: ``q^i = G(k_i) xor s_i u^i``; row ``j`` of the transposed matrix is
   ``q_j = t_j xor r_j s``.
3. Outputs: sender ``(H(q_j, j), H(q_j xor s, j))``, receiver ``H(t_j, j)`` = the one its choice
   selects. ``H(x, j) = pi(pi(x) xor j) xor pi(x)`` with ``pi`` fixed-key AES-128 (tweakable
   correlation-robust hash of Guo-Katz-Wang-Yu); the tweak ``j`` is a per-pair counter that
   never repeats. Correlated OTs are derived by the caller with one correction message.

Security
--------
Semi-honest. The receiver's choices are hidden because ``G(k_i^(1 - s_i))`` is pseudo-random
(AES-CTR) and unknown to the sender; the sender's other message ``H(t_j xor s, j)`` is hidden as
long as ``s`` (128 random bits) is, by the correlation robustness of ``H`` in the ideal-permutation
model. Base OTs: the receiver's ``B_i`` is ``g^b`` or ``A g^b`` (both pseudo-random under the
short-exponent assumption, exponents of :data:`EXPONENT_BITS` bits as in RFC 3526 §8); the key
not chosen needs ``g^(a b')`` (CDH, random-oracle model for BLAKE2b). Every received group element
is checked to lie in the subgroup, every received array in shape and dtype; a bad peer message
raises :class:`~privcomp.errors.ProtocolError`. All secrets come from ``ctx.rng``.
Strength: the 2048-bit group gives about 112-bit security (NIST SP 800-57), which bounds the
whole extension (it protects ``s``); the extension itself (AES-128, 128 base OTs) is 128-bit.
A batch carries its first OT index, so ends whose counters diverged (a reused source after a
failed job) refuse it rather than derive wrong material.

Cost
----
Setup (once per pair and source): 2 rounds, 129 x 256 bytes, about 400 exponentiations with
256-bit exponents (~0.15 s per pair). Extension: 1 round, the receiver sends 16 bytes per OT;
CPU per OT: 2 x 128 PRG bits, a bit-matrix transpose and two (receiver) or four (sender) AES
blocks. Measured rates: ``benchmarks/results_he_triples.md``.

References
----------
* T. Chou, C. Orlandi, "The Simplest Protocol for Oblivious Transfer", LATINCRYPT 2015.
* Y. Ishai, J. Kilian, K. Nissim, E. Petrank, "Extending Oblivious Transfers Efficiently",
  CRYPTO 2003.
* G. Asharov, Y. Lindell, T. Schneider, M. Zohner, "More Efficient Oblivious Transfer and
  Extensions for Faster Secure Computation", CCS 2013.
* C. Guo, J. Katz, X. Wang, Y. Yu, "Efficient and Secure Multiparty Computation from Fixed-Key
  Block Ciphers", IEEE S&P 2020 (the hash ``H``).
* T. Kivinen, M. Kojo, RFC 3526, "More MODP Diffie-Hellman groups for IKE", 2003.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privcomp.backends.prg import SEED_BYTES
from privcomp.core.ring import delta_swaps
from privcomp.errors import CodecError, ConfigurationError, ProtocolError
from privcomp.protocols.context import PartyContext
from privcomp.types import RingArray

#: RFC 3526 group 14 (2048-bit MODP): a safe prime ``p = 2q + 1``; 2 is a quadratic residue.
GROUP_P = gmpy2.mpz(
    "0xFFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF"
)
GROUP_Q = (GROUP_P - 1) // 2
GROUP_G = gmpy2.mpz(2)
#: Security parameter: number of base OTs and width of the extension matrix.
KAPPA = 128
#: Bits of the secret exponents (short exponents, RFC 3526 §8: about twice the group's strength).
EXPONENT_BITS = 256
_ELEM_BYTES = 256
_ELEM_WORDS = _ELEM_BYTES // 8
#: OTs are generated in multiples of this (one 64-bit word per column).
BLOCK = 64
_DOMAIN = b"privcomp-ot-v1"


def _kdf(label: bytes, *parts: bytes) -> bytes:
    """16-byte BLAKE2b digest, domain-separated by ``label`` (personalisation) and lengths."""
    h = hashlib.blake2b(digest_size=SEED_BYTES, person=label[:16], salt=_DOMAIN[:16])
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()


def _elem_bytes(x: Any) -> bytes:
    return int(x).to_bytes(_ELEM_BYTES, "little")


def _elems_to_words(values: list[Any]) -> RingArray:
    raw = b"".join(_elem_bytes(v) for v in values)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(len(values), _ELEM_WORDS)


def _words_to_elems(arr: RingArray, peer: int) -> list[Any]:
    """Group elements from a validated ``(k, 32)`` word array; each must be in the subgroup."""
    raw = np.ascontiguousarray(arr, dtype="<u8").tobytes()
    out = []
    for i in range(arr.shape[0]):
        x = gmpy2.mpz(int.from_bytes(raw[i * _ELEM_BYTES : (i + 1) * _ELEM_BYTES], "little"))
        # 1 < x < p and a quadratic residue: in the prime-order subgroup, not the identity.
        if not 1 < x < GROUP_P or gmpy2.legendre(x, GROUP_P) != 1:
            raise ProtocolError(f"party {peer} sent a base-OT element outside the group")
        out.append(x)
    return out


def _exponent(ctx: PartyContext) -> Any:
    return gmpy2.mpz(int.from_bytes(ctx.rng.random_bytes(EXPONENT_BITS // 8), "little") + 1)


async def recv_words(
    ctx: PartyContext, peer: int, tag: str, shape: tuple[int, ...], what: str
) -> RingArray:
    """Receive a ``uint64`` array of exactly ``shape`` from ``peer`` (else ProtocolError)."""
    try:
        arr = await ctx.recv_array(peer, tag)
    except CodecError as exc:
        raise ProtocolError(f"party {peer} sent an undecodable {what}") from exc
    if arr.dtype != np.uint64 or arr.shape != shape:
        raise ProtocolError(f"party {peer} sent a {what} of shape {arr.shape}, expected {shape}")
    return arr


class _Tccr:
    """``H(x, j) = pi(pi(x) xor j) xor pi(x)``, ``pi`` = AES-128 under a public fixed key."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        # ECB here is a fixed-key permutation applied blockwise (the hash), not an encryption.
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305

    def _perm(self, rows: RingArray) -> RingArray:
        src = np.ascontiguousarray(rows, dtype=np.uint64)
        out = np.empty(src.size + 2, dtype=np.uint64)
        n = self._cipher.encryptor().update_into(src.view(np.uint8).data, out.view(np.uint8).data)
        if n != src.nbytes:
            raise ProtocolError("AES returned a short block")
        return out[: src.size].reshape(src.shape)

    def __call__(self, rows: RingArray, start: int) -> RingArray:
        """Hash ``(m, 2)`` rows (128-bit values) with tweaks ``start, start + 1, ...``."""
        y = self._perm(rows)
        z = y.copy()
        z[:, 0] ^= np.arange(start, start + rows.shape[0], dtype=np.uint64)
        out = self._perm(z)
        out ^= y
        return out


_TRANSPOSE_STEPS = (
    (np.uint64(7), np.uint64(0x00AA00AA00AA00AA)),
    (np.uint64(14), np.uint64(0x0000CCCC0000CCCC)),
    (np.uint64(28), np.uint64(0x00000000F0F0F0F0)),
)


def transpose_columns(cols: RingArray) -> RingArray:
    """Bit-transpose ``(128, W)`` column words into ``(64 W, 2)`` row words.

    Bit ``j`` of column ``i`` (bit ``j % 64`` of word ``j // 64``) becomes bit ``i`` of row ``j``
    (bit ``i % 64`` of word ``i // 64``): 8x8 bit blocks are gathered into ``uint64`` words and
    transposed with three masked shift-xor steps (Hacker's Delight 7-3), all vectorised.
    """
    width = cols.shape[1]
    nbytes = 8 * width
    blocks = np.ascontiguousarray(cols, dtype="<u8").view(np.uint8).reshape(KAPPA // 8, 8, nbytes)
    x = np.ascontiguousarray(blocks.transpose(0, 2, 1)).view(np.uint64)[..., 0]
    delta_swaps(x, _TRANSPOSE_STEPS)
    rows = np.ascontiguousarray(x.view(np.uint8).reshape(KAPPA // 8, nbytes, 8).transpose(1, 2, 0))
    return rows.reshape(nbytes * 8, KAPPA // 8).view("<u8").astype(np.uint64, copy=False)


def expand_seeds(seeds: list[bytes], start: int, width: int) -> RingArray:
    """Words ``start / 64 ...`` (``width`` of them) of every seed's AES-128-CTR stream.

    The stream is :class:`~privcomp.backends.prg.AesCtrPrg`'s (zero initial counter block), read
    from block ``start / 128`` on: random access lets a batch reserve its range synchronously and
    expand it later, so concurrent calls and chunks never depend on completion order.
    """
    if start % (2 * BLOCK):
        raise ProtocolError("OT stream offsets must be whole AES blocks")
    iv = (start // (2 * BLOCK)).to_bytes(16, "big")
    # update_into needs 15 spare bytes: two spare words per row.
    out = np.empty((len(seeds), width + 2), dtype=np.uint64)
    zeros = np.zeros(8 * width, dtype=np.uint8)
    for row, seed in zip(out, seeds, strict=True):
        enc = Cipher(algorithms.AES(seed), modes.CTR(iv)).encryptor()
        if enc.update_into(zeros.data, row.view(np.uint8).data) != zeros.size:
            raise ProtocolError("AES-CTR keystream returned a short block")
    return out[:, :width]


@dataclass(frozen=True, slots=True)
class Reservation:
    """A range of OT indices of one pair: ``m`` OTs from ``start`` (whole AES blocks)."""

    start: int
    m: int

    @property
    def width(self) -> int:
        """64-bit words per column."""
        return -(-self.m // BLOCK)


@dataclass(slots=True)
class OtExtension:
    """This party's end of the IKNP extension with one peer.

    ``is_sender`` is true for the lower party index. The sender holds ``s`` and one seed per base
    OT; the receiver both seeds. Every batch reserves a fresh range of OT indices (PRG stream
    positions and hash tweaks), so nothing is ever reused; both ends reserve in the same order
    because reservations are made right after the call's tags are taken, before any ``await``.
    """

    peer: int
    is_sender: bool
    seeds: list[bytes]
    seeds1: list[bytes]
    s_bits: RingArray
    s_row: RingArray
    hash: _Tccr
    counter: int = 0

    def __repr__(self) -> str:
        role = "sender" if self.is_sender else "receiver"
        return f"OtExtension(peer={self.peer}, {role}, ots={self.counter})"

    def reserve(self, m: int) -> Reservation:
        """Reserve the next ``m`` OT indices (synchronous; rounded up to whole AES blocks)."""
        res = Reservation(self.counter, m)
        self.counter += -(-m // (2 * BLOCK)) * 2 * BLOCK
        return res

    def begin_receive(self, choices: RingArray, res: Reservation) -> PendingOts:
        """Receiver: expand both seeds over ``res`` and mask the packed ``choices``.

        ``choices`` holds choice bit ``j`` at bit ``j % 64`` of word ``j // 64``.
        """
        if self.is_sender:
            raise ProtocolError(f"this party is the OT sender towards party {self.peer}")
        width = res.width
        flat = np.asarray(choices, dtype=np.uint64).reshape(-1)
        if flat.size != -(-res.m // 64):
            raise ConfigurationError(
                f"{res.m} OTs need {-(-res.m // 64)} words of choice bits, got {flat.size}"
            )
        r = np.zeros(width, dtype=np.uint64)
        r[: flat.size] = flat
        t = expand_seeds(self.seeds, res.start, width)
        u = expand_seeds(self.seeds1, res.start, width)
        u ^= t
        u ^= r
        return PendingOts(res=res, matrix=t, message=u)

    async def finish_receive(self, ctx: PartyContext, tag: str, pending: PendingOts) -> RingArray:
        """Receiver: send the extension matrix; return ``H(t_j, j)`` as ``(m, 2)`` words.

        The batch's first OT index travels with the matrix, so a sender whose counter is out of
        step (a source reused after a failed job) refuses it instead of deriving wrong material.
        """
        stamped = np.append(pending.message.ravel(), np.uint64(pending.res.start))
        await ctx.send_array(self.peer, tag, stamped)
        rows = transpose_columns(pending.matrix)[: pending.res.m]
        return self.hash(rows, pending.res.start)

    def begin_send(self, res: Reservation) -> PendingOts:
        """Sender: expand the chosen seeds over ``res``."""
        if not self.is_sender:
            raise ProtocolError(f"this party is the OT receiver towards party {self.peer}")
        q = expand_seeds(self.seeds, res.start, res.width)
        return PendingOts(res=res, matrix=q, message=_empty(0))

    async def finish_send(
        self, ctx: PartyContext, tag: str, pending: PendingOts
    ) -> tuple[RingArray, RingArray]:
        """Sender: receive the extension matrix; return ``(H(q_j, j), H(q_j xor s, j))``."""
        q = pending.matrix
        flat = await recv_words(ctx, self.peer, tag, (q.size + 1,), "OT extension matrix")
        if int(flat[-1]) != pending.res.start:
            raise ProtocolError(
                f"OT extension with party {self.peer} is out of step (a failed earlier job?); "
                "start again with a fresh triple source"
            )
        u = flat[:-1].reshape(q.shape)
        q ^= u & (np.uint64(0) - self.s_bits)[:, None]
        rows = transpose_columns(q)[: pending.res.m]
        h0 = self.hash(rows, pending.res.start)
        rows ^= self.s_row
        return h0, self.hash(rows, pending.res.start)


def _empty(width: int) -> RingArray:
    return np.zeros((KAPPA, width), dtype=np.uint64)


@dataclass(slots=True)
class PendingOts:
    """A batch of OTs whose seeds are expanded and whose message is not yet exchanged."""

    res: Reservation
    matrix: RingArray
    message: RingArray


async def setup_extensions(ctx: PartyContext) -> dict[int, OtExtension]:
    """Base OTs with every peer (2 rounds); return this party's extension end per peer.

    Every party calls it at the same point of the program (it takes two tags).
    """
    tag_a = ctx.next_tag("ot-base-a")
    tag_b = ctx.next_tag("ot-base-b")
    ctx.rounds += 2
    out: dict[int, OtExtension] = {}
    lower = [p for p in ctx.peers if p < ctx.party_id]
    # Base-OT senders (towards lower peers) first send A; receivers answer with B.
    own_a: dict[int, tuple[Any, Any]] = {}
    for p in lower:
        a = _exponent(ctx)
        big_a = gmpy2.powmod(GROUP_G, a, GROUP_P)
        own_a[p] = (a, big_a)
        await ctx.send_array(p, tag_a, _elems_to_words([big_a]))
    for p in ctx.peers:
        if p > ctx.party_id:
            out[p] = await _base_receiver(ctx, p, tag_a, tag_b)
    for p in lower:
        out[p] = await _base_sender(ctx, p, tag_b, *own_a[p])
    return out


def _hash_key(big_a: Any, bs: list[Any], sender: int, receiver: int) -> bytes:
    # The whole base-OT transcript (A from one end, every B_i from the other): neither party
    # alone chooses the fixed AES key of the hash.
    return _kdf(
        b"ot-tccr-key",
        _elem_bytes(big_a),
        *(_elem_bytes(b) for b in bs),
        sender.to_bytes(4, "little"),
        receiver.to_bytes(4, "little"),
    )


async def _base_receiver(ctx: PartyContext, peer: int, tag_a: str, tag_b: str) -> OtExtension:
    """Lower party: choose ``s``, receive ``A``, send ``B_i``; keep ``k_i^(s_i)`` as PRG seeds."""
    (big_a,) = _words_to_elems(
        await recv_words(ctx, peer, tag_a, (1, _ELEM_WORDS), "base-OT A"), peer
    )
    s_raw = ctx.rng.random_bytes(KAPPA // 8)
    s_bits = np.unpackbits(np.frombuffer(s_raw, dtype=np.uint8), bitorder="little")
    bs, seeds = [], []
    a_bytes = _elem_bytes(big_a)
    for i in range(KAPPA):
        b = _exponent(ctx)
        # powmod_sec and an unconditional product: no timing branch on the secret b or s_i.
        g_b = gmpy2.powmod_sec(GROUP_G, b, GROUP_P)
        both = (g_b, g_b * big_a % GROUP_P)
        big_b = both[int(s_bits[i])]
        bs.append(big_b)
        key = gmpy2.powmod_sec(big_a, b, GROUP_P)
        seeds.append(
            _kdf(
                b"ot-base-key",
                i.to_bytes(4, "little"),
                a_bytes,
                _elem_bytes(big_b),
                _elem_bytes(key),
            )
        )
    await ctx.send_array(peer, tag_b, _elems_to_words(bs))
    return OtExtension(
        peer=peer,
        is_sender=True,
        seeds=seeds,
        seeds1=[],
        s_bits=s_bits.astype(np.uint64),
        s_row=np.frombuffer(s_raw, dtype="<u8").astype(np.uint64),
        hash=_Tccr(_hash_key(big_a, bs, ctx.party_id, peer)),
    )


async def _base_sender(ctx: PartyContext, peer: int, tag_b: str, a: Any, big_a: Any) -> OtExtension:
    """Higher party: derive both keys of every base OT from the peer's ``B_i``."""
    bs = _words_to_elems(
        await recv_words(ctx, peer, tag_b, (KAPPA, _ELEM_WORDS), "base-OT B"), peer
    )
    a_bytes = _elem_bytes(big_a)
    inv_aa = gmpy2.invert(gmpy2.powmod(big_a, a, GROUP_P), GROUP_P)
    k0, k1 = [], []
    for i, big_b in enumerate(bs):
        head = (i.to_bytes(4, "little"), a_bytes, _elem_bytes(big_b))
        ba = gmpy2.powmod(big_b, a, GROUP_P)
        k0.append(_kdf(b"ot-base-key", *head, _elem_bytes(ba)))
        k1.append(_kdf(b"ot-base-key", *head, _elem_bytes(ba * inv_aa % GROUP_P)))
    return OtExtension(
        peer=peer,
        is_sender=False,
        seeds=k0,
        seeds1=k1,
        s_bits=np.zeros(0, dtype=np.uint64),
        s_row=np.zeros(0, dtype=np.uint64),
        hash=_Tccr(_hash_key(big_a, list(bs), peer, ctx.party_id)),
    )


async def random_ots(
    ctx: PartyContext, ext: OtExtension, m: int, choices: RingArray | None = None
) -> tuple[RingArray, RingArray]:
    """``m`` random OTs with 128-bit messages over one pair (1 round; both ends call it).

    Returns ``(m0, m1)`` at the sender and ``(choice bits, m_c)`` at the receiver, ``(m, 2)``
    words for messages, ``(m,)`` 0/1 words for the choices (random unless ``choices`` is given as
    packed words).
    """
    tag = ctx.next_tag("ot-rot")
    ctx.rounds += 1
    res = ext.reserve(m)
    if ext.is_sender:
        return await ext.finish_send(ctx, tag, ext.begin_send(res))
    if choices is None:
        choices = ctx.rng.ring_elements((res.width,))
    pending = ext.begin_receive(choices, res)
    return unpack_choice_bits(choices, m), await ext.finish_receive(ctx, tag, pending)


def unpack_choice_bits(words: RingArray, m: int) -> RingArray:
    """The first ``m`` bits of packed words (bit ``j % 64`` of word ``j // 64``) as 0/1 words."""
    raw = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    return np.unpackbits(raw, bitorder="little")[:m].astype(np.uint64)


def pack_choice_bits(bits: RingArray) -> RingArray:
    """Inverse of :func:`unpack_choice_bits`: 0/1 entries into packed words (zero-padded)."""
    flat = np.asarray(bits, dtype=np.uint8).reshape(-1)
    width = -(-flat.size // BLOCK)
    padded = np.zeros(width * BLOCK, dtype=np.uint8)
    padded[: flat.size] = flat
    return np.packbits(padded, bitorder="little").view("<u8").astype(np.uint64)


__all__ = [
    "BLOCK",
    "EXPONENT_BITS",
    "GROUP_G",
    "GROUP_P",
    "GROUP_Q",
    "KAPPA",
    "OtExtension",
    "PendingOts",
    "Reservation",
    "pack_choice_bits",
    "random_ots",
    "recv_words",
    "setup_extensions",
    "transpose_columns",
    "unpack_choice_bits",
    "expand_seeds",
]
