"""Plaintext packing: many fixed-point slots per Paillier ciphertext (layer: backends).

Protocol
--------
1. Encoding. A value ``v`` becomes the mantissa ``m = round(v * 16^-exponent)`` (the phe
   encoding with one fixed exponent), shifted by an offset ``2^(b-1)`` into ``u = m + 2^(b-1)``
   in ``[0, 2^b)``, where ``b = slot_bits - h`` value bits and ``h = bit_length(max_additions)``
   headroom bits. ``k = floor((|n| - 2 - 40) / slot_bits)`` slots form one plaintext
   ``P = sum_i u_i * 2^(slot_bits * i)``, which is encrypted as usual.
2. Slotwise addition. ``E(P) * E(P') = E(P + P')`` adds every slot at once. Each slot records how
   many terms it holds; a sum of at most ``max_additions`` terms stays below
   ``(2^h - 1)(2^b - 1) < 2^slot_bits - 1``, so no carry ever crosses a slot. An addition that
   would exceed ``max_additions`` is refused BEFORE it happens (:class:`EncodingOverflowError`).
3. Total (``.sum()``). All ciphertexts are multiplied, then the slots are folded without
   revealing them: since ``2^slot_bits = 1 (mod 2^slot_bits - 1)``, the sum of the slots is
   ``P mod (2^slot_bits - 1)``. Before decryption we add ``(2^slot_bits - 1) * rho`` with ``rho``
   uniform in ``[0, 2^(|n| - 2 - slot_bits))`` and re-randomise; the key holder then learns the
   total, and the individual slot sums only up to statistical distance ``2^-40``.
4. Decoding subtracts ``terms * 2^(b-1)`` per slot (or ``terms_total * 2^(b-1)`` from the total)
   and scales by ``16^exponent``.

Security: the same as Paillier encryption; slot layout and term counts are public metadata.
Cost: one encryption per ``k`` values (``k = 31`` for 2048-bit keys and 64-bit slots), one
modular multiplication per ``k`` values per addition, one decryption per ``k`` values (or one
for a total).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
import numpy.typing as npt

from privcomp.backends.paillier import encoding, wire
from privcomp.backends.paillier.encrypted import raw_encrypt_by
from privcomp.core.rng import RandomSource, default_random
from privcomp.errors import CodecError, ConfigurationError, EncodingOverflowError

if TYPE_CHECKING:
    from privcomp.backends.paillier.keys import PublicKey
    from privcomp.backends.paillier.private_key import PrivateKey

#: Statistical security (bits) of the mask that hides slot sums when folding.
STATISTICAL_BITS = 40
_PA_MAGIC = b"PCPA"
_PA_VERSION = 1
_PA_HEADER = struct.Struct(">4sB8siHBQQQQI")


@dataclass(frozen=True)
class SlotLayout:
    """Public packing parameters of a :class:`PackedEncryptedArray`."""

    slot_bits: int
    max_additions: int
    exponent: int
    slots: int

    @classmethod
    def create(cls, n_bits: int, slot_bits: int, max_additions: int, exponent: int) -> SlotLayout:
        """Validate the parameters and compute the slots per ciphertext."""
        if slot_bits % 8 or slot_bits < 16:
            raise ConfigurationError("slot_bits must be a multiple of 8 and at least 16")
        if max_additions < 1:
            raise ConfigurationError("max_additions must be at least 1")
        if slot_bits - max_additions.bit_length() < 2:
            raise ConfigurationError("slot_bits leaves no value bits after the headroom")
        slots = (n_bits - 2 - STATISTICAL_BITS) // slot_bits
        if slots < 1:
            raise ConfigurationError("slot_bits is too large for this key")
        return cls(slot_bits, max_additions, exponent, slots)

    @property
    def value_bits(self) -> int:
        """Bits of one encoded value (the slot minus the headroom)."""
        return self.slot_bits - self.max_additions.bit_length()

    @property
    def offset(self) -> int:
        """Offset that makes mantissas non-negative: ``2^(value_bits - 1)``."""
        return 1 << (self.value_bits - 1)

    def pack(self, arr: npt.NDArray[Any], name: str) -> list[int]:
        """Encode a 1-D array into packed plaintexts (zero padding in the last one)."""
        mants = encoding.mantissas(arr, self.exponent)
        off = self.offset
        if mants and (max(mants) >= off or min(mants) < -off):
            raise EncodingOverflowError(
                f"{name}: a value exceeds the packing bound 2^{self.value_bits - 1} * "
                f"16^{self.exponent} (slot_bits={self.slot_bits}, "
                f"max_additions={self.max_additions})",
                bound=encoding.approx_bound(off - 1, self.exponent),
                column=name,
            )
        width = self.slot_bits // 8
        out: list[int] = []
        for start in range(0, len(mants), self.slots):
            chunk = b"".join(
                (m + off).to_bytes(width, "little") for m in mants[start : start + self.slots]
            )
            out.append(int.from_bytes(chunk, "little"))
        return out

    def unpack(self, plaintexts: list[int], length: int, terms: int) -> list[int]:
        """Return the ``length`` signed slot mantissas of packed plaintexts."""
        width = self.slot_bits // 8
        shift = terms * self.offset
        top = terms * ((1 << self.value_bits) - 1)  # largest sum of ``terms`` slot values
        out: list[int] = []
        for p in plaintexts:
            if int(p) >> (self.slots * self.slot_bits):
                raise EncodingOverflowError("a packed plaintext exceeds its slots", bound=None)
            raw = int(p).to_bytes(self.slots * width, "little")
            slots = [
                int.from_bytes(raw[i * width : (i + 1) * width], "little")
                for i in range(self.slots)
            ]
            out.extend(slots)
        if any(v > top for v in out[:length]) or any(out[length:]):
            # Impossible for sums of this array's encryptions: refuse rather than mis-decode.
            raise EncodingOverflowError("a packed slot exceeds its term bound", bound=None)
        return [v - shift for v in out[:length]]

    def unpack_total(self, plaintext: int, terms: int) -> int:
        """Return the signed mantissa of a folded total (step 3) holding ``terms`` terms."""
        total = int(plaintext) % ((1 << self.slot_bits) - 1)
        if total > terms * ((1 << self.value_bits) - 1):
            raise EncodingOverflowError("a packed total exceeds its term bound", bound=None)
        return total - terms * self.offset


class PackedEncryptedArray:
    """A 1-D array of values packed ``slots`` per ciphertext (see the module docstring).

    Attributes
    ----------
    public_key, layout:
        Key and public packing parameters.
    length:
        Number of values (1 for a folded total).
    terms:
        How many encrypted inputs have been added into each slot so far.
    folded:
        True for the output of :meth:`sum` (one ciphertext holding a masked total).
    """

    __array_ufunc__ = None

    def __init__(
        self,
        public_key: PublicKey,
        ciphertexts: list[gmpy2.mpz],
        layout: SlotLayout,
        length: int,
        *,
        terms: int = 1,
        folded: bool = False,
    ) -> None:
        expected = 1 if folded else -(-length // layout.slots)
        if len(ciphertexts) != expected:
            raise ConfigurationError("number of packed ciphertexts does not match the length")
        if not 1 <= terms <= layout.max_additions:
            raise EncodingOverflowError(
                f"slot terms must be in [1, max_additions={layout.max_additions}]",
                bound=float(layout.max_additions),
            )
        self.public_key = public_key
        self.layout = layout
        self.length = int(length)
        self.terms = int(terms)
        self.folded = folded
        self._cts = ciphertexts

    @property
    def exponent(self) -> int:
        """The base-16 exponent of every slot."""
        return self.layout.exponent

    @property
    def shape(self) -> tuple[int, ...]:
        """``(length,)``, or ``()`` for a folded total."""
        return () if self.folded else (self.length,)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"<PackedEncryptedArray length={self.length} slots={self.layout.slots} "
            f"slot_bits={self.layout.slot_bits} terms={self.terms} key={self.public_key!r}>"
        )

    @property
    def ciphertext_count(self) -> int:
        """Number of ciphertexts."""
        return len(self._cts)

    def raw_ciphertexts(self) -> list[gmpy2.mpz]:
        """Return the ciphertexts (not re-randomised)."""
        return list(self._cts)

    def _check_terms(self, total: int) -> None:
        if total > self.layout.max_additions:
            raise EncodingOverflowError(
                f"packed slots would hold {total} terms, above max_additions="
                f"{self.layout.max_additions}; encrypt with a larger max_additions",
                bound=float(self.layout.max_additions),
            )

    def __add__(self, other: Any) -> PackedEncryptedArray:
        """Slotwise sum with a packed array of the same layout, or with plaintext values.

        Plaintext values are encoded at the layout's exponent (rounded to its precision) and
        count as one more term per slot.
        """
        if self.folded:
            raise ConfigurationError("a folded total cannot be added to")
        n2 = self.public_key._nsquare
        if isinstance(other, PackedEncryptedArray):
            if other.public_key != self.public_key or other.layout != self.layout:
                raise ConfigurationError("packed arrays differ in key or layout")
            if other.length != self.length or other.folded:
                raise ConfigurationError("packed arrays differ in length")
            self._check_terms(self.terms + other.terms)
            cts = [a * b % n2 for a, b in zip(self._cts, other._cts, strict=True)]
            return PackedEncryptedArray(
                self.public_key, cts, self.layout, self.length, terms=self.terms + other.terms
            )
        arr = np.broadcast_to(encoding.as_value_array(other), (self.length,))
        self._check_terms(self.terms + 1)
        n = self.public_key._n
        pts = self.layout.pack(np.ascontiguousarray(arr), "addend")
        cts = [c * (1 + p * n) % n2 for c, p in zip(self._cts, pts, strict=True)]
        return PackedEncryptedArray(
            self.public_key, cts, self.layout, self.length, terms=self.terms + 1
        )

    __radd__ = __add__

    def sum(self, *, rng: RandomSource | None = None) -> PackedEncryptedArray:
        """Encrypted total of all values: one ciphertext, slots folded under a mask (step 3)."""
        if self.folded:
            return self
        total_terms = self.terms * self.length
        self._check_terms(total_terms)
        pk = self.public_key
        rng = rng or default_random()
        n, n2 = pk._n, pk._nsquare
        acc = gmpy2.mpz(1)
        for c in self._cts:
            acc = acc * c % n2
        mask_bits = pk.bits - 2 - self.layout.slot_bits
        rho = gmpy2.mpz.from_bytes(rng.random_bytes((mask_bits + 7) // 8), "big")
        rho >>= 8 * ((mask_bits + 7) // 8) - mask_bits
        mask = ((gmpy2.mpz(1) << self.layout.slot_bits) - 1) * rho
        acc = acc * (1 + mask * n) % n2
        acc = pk.raw_rerandomize([acc], rng=rng, workers=1)[0]
        return PackedEncryptedArray(
            pk, [acc], self.layout, 1, terms=max(1, total_terms), folded=True
        )

    def rerandomize(self, *, rng: RandomSource | None = None) -> PackedEncryptedArray:
        """Return a copy with fresh blinding factors."""
        cts = self.public_key.raw_rerandomize(self._cts, rng=rng)
        return PackedEncryptedArray(
            self.public_key, cts, self.layout, self.length, terms=self.terms, folded=self.folded
        )

    def to_bytes(self, *, rerandomize: bool = True, rng: RandomSource | None = None) -> bytes:
        """Serialise (re-randomising first unless told not to); format ``PCPA`` version 1."""
        src = self.rerandomize(rng=rng) if rerandomize else self
        pk, lay = self.public_key, self.layout
        width = pk.ciphertext_bytes
        header = _PA_HEADER.pack(
            _PA_MAGIC, _PA_VERSION, wire.key_tag(pk), lay.exponent, lay.slot_bits,
            int(self.folded), lay.max_additions, self.terms, self.length, len(self._cts), width,
        )  # fmt: skip
        return header + wire.pack_ciphertexts(src._cts, width)

    @classmethod
    def from_bytes(cls, data: bytes, public_key: PublicKey) -> PackedEncryptedArray:
        """Parse :meth:`to_bytes` output, validating layout and every ciphertext."""
        view = memoryview(bytes(data))
        fields = wire.read_header(view, _PA_HEADER, _PA_MAGIC, _PA_VERSION, "packed array")
        _, _, tag, exponent, slot_bits, folded, max_add, terms, length, count, width = fields
        wire.check_key(tag, public_key)
        layout = SlotLayout.create(public_key.bits, slot_bits, max_add, exponent)
        cts = wire.unpack_ciphertexts(view[_PA_HEADER.size :], count, width, public_key)
        try:
            return cls(public_key, cts, layout, length, terms=terms, folded=bool(folded))
        except (ConfigurationError, EncodingOverflowError) as exc:
            raise CodecError("packed array header is inconsistent") from exc


def encrypt_packed(
    public_key: PublicKey,
    values: npt.ArrayLike,
    *,
    slot_bits: int,
    max_additions: int,
    exponent: int | None,
    rng: RandomSource | None,
    private_key: PrivateKey | None,
    workers: int | None,
) -> PackedEncryptedArray:
    """Implementation of :meth:`PublicKey.encrypt_packed`."""
    arr = encoding.as_value_array(values)
    if arr.ndim != 1:
        raise ConfigurationError("encrypt_packed takes a 1-D array")
    exp = encoding.default_exponent(arr) if exponent is None else int(exponent)
    layout = SlotLayout.create(public_key.bits, slot_bits, max_additions, exp)
    pts = layout.pack(arr, "values")
    if not pts:
        raise ConfigurationError("cannot pack an empty array")
    cts = raw_encrypt_by(public_key, private_key, pts, rng=rng, workers=workers)
    return PackedEncryptedArray(public_key, cts, layout, len(arr))


def decrypt_packed(
    private_key: PrivateKey, packed: PackedEncryptedArray, *, workers: int | None
) -> npt.NDArray[Any]:
    """Implementation of :meth:`PrivateKey.decrypt_packed`."""
    if not isinstance(packed, PackedEncryptedArray):
        raise TypeError("decrypt_packed expects a PackedEncryptedArray")
    if packed.public_key != private_key.public_key:
        raise ConfigurationError("the array was encrypted under a different public key")
    lay = packed.layout
    pts = private_key.raw_decrypt(packed._cts, workers=workers)
    if packed.folded:
        return encoding.decode([lay.unpack_total(pts[0], packed.terms)], lay.exponent, ())
    mants = lay.unpack(pts, packed.length, packed.terms)
    return encoding.decode(mants, lay.exponent, (packed.length,))
