"""Encrypted arrays with one fixed exponent (layer: backends).

An :class:`EncryptedArray` is a numpy-shaped collection of Paillier ciphertexts that all share
ONE public exponent (phe's ``EncodedNumber`` encoding, base 16), so the exponent reveals nothing
about the magnitude of any value — unlike ``phe``, whose per-value exponents leak it.

Operations (all elementwise, with numpy broadcasting):

* ``a + b`` for two encrypted arrays: ``c_a * c_b mod n^2``. Different exponents are aligned to
  the lower one by multiplying the other side by ``16^d``: one modular exponentiation with a
  ``4d``-bit exponent per element (cheap for small ``d``, e.g. ~15 µs for ``d = 8`` at 2048 bits).
* ``a + x`` for plaintext ``x``: ``x`` is encoded at ``a``'s exponent (floats are rounded to that
  precision; a float added to an integer array lowers the result to the float exponent ``-8``),
  then ``c * (1 + x*n) mod n^2``.
* ``a * k`` for plaintext ``k``: ``c^k mod n^2`` (``k`` encoded at exponent 0 for ints, -8 for
  floats, so the result exponent is ``a.exponent + exponent(k)``).
* ``a.sum(axis=None)``: products of ciphertexts.

Results of operations are NOT re-randomised (that costs one blinding factor per element);
:meth:`EncryptedArray.to_bytes` re-randomises by default before anything leaves the process.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, SupportsIndex

import gmpy2
import numpy as np
import numpy.typing as npt

from privcomp.backends.paillier import encoding, wire
from privcomp.core.rng import RandomSource
from privcomp.errors import CodecError, ConfigurationError

if TYPE_CHECKING:
    from privcomp.backends.paillier.keys import PublicKey
    from privcomp.backends.paillier.private_key import PrivateKey

_EA_MAGIC = b"PCEA"
_EA_VERSION = 1
_EA_HEADER = struct.Struct(">4sBi8sB")


def _broadcast(
    shape_a: tuple[int, ...], shape_b: tuple[int, ...]
) -> tuple[tuple[int, ...], list[int], list[int]]:
    """Return the broadcast shape and flat indices into each operand."""
    try:
        shape = np.broadcast_shapes(shape_a, shape_b)
    except ValueError as exc:
        raise ConfigurationError(f"shapes {shape_a} and {shape_b} do not broadcast") from exc
    ia = np.broadcast_to(np.arange(int(np.prod(shape_a, dtype=np.int64))).reshape(shape_a), shape)
    ib = np.broadcast_to(np.arange(int(np.prod(shape_b, dtype=np.int64))).reshape(shape_b), shape)
    return tuple(shape), ia.ravel().tolist(), ib.ravel().tolist()


class EncryptedArray:
    """Paillier ciphertexts of an array, with one public exponent.

    Build with :meth:`PublicKey.encrypt`, :meth:`from_bytes` or :meth:`from_phe`; the
    constructor trusts its arguments (no validation).

    Attributes
    ----------
    public_key:
        The key the values are encrypted under.
    shape:
        Shape of the plaintext array.
    exponent:
        The base-16 exponent shared by every element.
    """

    # Keep numpy from turning ``ndarray + EncryptedArray`` into an object array of slices.
    __array_ufunc__ = None

    def __init__(
        self,
        public_key: PublicKey,
        ciphertexts: list[gmpy2.mpz],
        shape: tuple[int, ...],
        exponent: int,
    ) -> None:
        if len(ciphertexts) != int(np.prod(shape, dtype=np.int64)):
            raise ConfigurationError("number of ciphertexts does not match the shape")
        self.public_key = public_key
        self._cts = ciphertexts
        self.shape = tuple(int(s) for s in shape)
        self.exponent = int(exponent)

    # -- container protocol -----------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of encrypted values."""
        return len(self._cts)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d EncryptedArray")
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"<EncryptedArray shape={self.shape} exponent={self.exponent} key={self.public_key!r}>"
        )

    def raw_ciphertexts(self) -> list[gmpy2.mpz]:
        """Return the ciphertexts (flattened, C order) — not re-randomised."""
        return list(self._cts)

    def __getitem__(self, key: Any) -> EncryptedArray:
        index = np.arange(self.size).reshape(self.shape)[key]
        index = np.asarray(index)
        return EncryptedArray(
            self.public_key,
            [self._cts[i] for i in index.ravel().tolist()],
            index.shape,
            self.exponent,
        )

    # -- arithmetic -------------------------------------------------------------------------
    def decrease_exponent_to(self, new_exponent: int) -> EncryptedArray:
        """Return the same values at a lower exponent (``c^(16^d)``, exact; see module doc)."""
        if new_exponent > self.exponent:
            raise ConfigurationError("the exponent can only be decreased without the private key")
        if new_exponent == self.exponent:
            return self
        factor = encoding.alignment_factor(self.exponent - new_exponent, self.public_key.max_int)
        n2 = self.public_key._nsquare
        cts = [gmpy2.powmod(c, factor, n2) for c in self._cts]
        return EncryptedArray(self.public_key, cts, self.shape, new_exponent)

    def _check_same_key(self, other: EncryptedArray) -> None:
        if other.public_key != self.public_key:
            raise ConfigurationError("cannot combine arrays encrypted under different keys")

    def __add__(self, other: Any) -> EncryptedArray:
        if isinstance(other, EncryptedArray):
            self._check_same_key(other)
            exp = min(self.exponent, other.exponent)
            a, b = self.decrease_exponent_to(exp), other.decrease_exponent_to(exp)
            shape, ia, ib = _broadcast(a.shape, b.shape)
            n2 = self.public_key._nsquare
            cts = [a._cts[i] * b._cts[j] % n2 for i, j in zip(ia, ib, strict=True)]
            return EncryptedArray(self.public_key, cts, shape, exp)
        if hasattr(other, "_cts"):
            raise TypeError("cannot add a packed array to an EncryptedArray")
        arr = encoding.as_value_array(other)
        exp = self.exponent
        if arr.dtype.kind == "f" and exp > encoding.DEFAULT_FLOAT_EXPONENT:
            exp = encoding.DEFAULT_FLOAT_EXPONENT
        a = self.decrease_exponent_to(exp)
        n = self.public_key._n
        pts = encoding.encode(arr, exp, int(n), name="addend")
        shape, ia, ib = _broadcast(a.shape, arr.shape)
        n2 = self.public_key._nsquare
        cts = [a._cts[i] * (1 + pts[j] * n) % n2 for i, j in zip(ia, ib, strict=True)]
        return EncryptedArray(self.public_key, cts, shape, exp)

    __radd__ = __add__

    def __neg__(self) -> EncryptedArray:
        return self * -1

    def __sub__(self, other: Any) -> EncryptedArray:
        if isinstance(other, EncryptedArray):
            return self + (-other)
        return self + (-encoding.as_value_array(other))

    def __rsub__(self, other: Any) -> EncryptedArray:
        return (-self).__add__(other)

    def __mul__(self, other: Any) -> EncryptedArray:
        if isinstance(other, EncryptedArray):
            raise TypeError("Paillier cannot multiply two ciphertexts; multiply by plaintext")
        arr = encoding.as_value_array(other)
        exp = encoding.default_exponent(arr)
        ks = encoding.encode(arr, exp, self.public_key.n, name="factor")
        shape, ia, ib = _broadcast(self.shape, arr.shape)
        cts = self.public_key.raw_mul_many([self._cts[i] for i in ia], [ks[j] for j in ib])
        return EncryptedArray(self.public_key, cts, shape, self.exponent + exp)

    __rmul__ = __mul__

    def sum(self, axis: SupportsIndex | None = None) -> EncryptedArray:
        """Encrypted sum over all elements (``axis=None``) or along one axis."""
        n2 = self.public_key._nsquare
        if axis is None:
            groups = [list(range(self.size))]
            shape: tuple[int, ...] = ()
        else:
            ax = int(axis)
            if not -self.ndim <= ax < self.ndim:
                raise ConfigurationError(f"axis {ax} out of range for {self.ndim} dimensions")
            index = np.moveaxis(np.arange(self.size).reshape(self.shape), ax, -1)
            shape = index.shape[:-1]
            groups = index.reshape(-1, index.shape[-1]).tolist()
        out: list[gmpy2.mpz] = []
        for group in groups:
            acc = gmpy2.mpz(1)  # Enc(0; r = 1)
            for i in group:
                acc = acc * self._cts[i] % n2
            out.append(acc)
        return EncryptedArray(self.public_key, out, shape, self.exponent)

    # -- randomness, bytes, interop ---------------------------------------------------------
    def rerandomize(
        self, *, rng: RandomSource | None = None, workers: int | None = None
    ) -> EncryptedArray:
        """Return a copy whose ciphertexts are multiplied by fresh ``r^n`` (unlinkable)."""
        cts = self.public_key.raw_rerandomize(self._cts, rng=rng, workers=workers)
        return EncryptedArray(self.public_key, cts, self.shape, self.exponent)

    def to_bytes(self, *, rerandomize: bool = True, rng: RandomSource | None = None) -> bytes:
        """Serialise (re-randomising first unless ``rerandomize=False``).

        Format: ``b"PCEA"``, version (1 byte), exponent (int32), key fingerprint (8 bytes),
        ndim (1 byte), shape (ndim x uint64), count (uint64), width (uint32), then ``count``
        big-endian ciphertexts of ``width`` bytes.
        """
        src = self.rerandomize(rng=rng) if rerandomize else self
        pk = self.public_key
        width = pk.ciphertext_bytes
        header = _EA_HEADER.pack(_EA_MAGIC, _EA_VERSION, self.exponent, wire.key_tag(pk), self.ndim)
        dims = struct.pack(f">{self.ndim}Q", *self.shape)
        counts = struct.pack(">QI", self.size, width)
        return header + dims + counts + wire.pack_ciphertexts(src._cts, width)

    @classmethod
    def from_bytes(cls, data: bytes, public_key: PublicKey) -> EncryptedArray:
        """Parse :meth:`to_bytes` output; every ciphertext is validated against the key.

        Raises
        ------
        CodecError
            On a bad magic, version, shape or length.
        InvalidCiphertextError
            On a key mismatch or a ciphertext outside ``Z*_{n^2}``.
        """
        view = memoryview(bytes(data))
        _, _, exponent, tag, ndim = wire.read_header(
            view, _EA_HEADER, _EA_MAGIC, _EA_VERSION, "encrypted array"
        )
        wire.check_key(tag, public_key)
        pos = _EA_HEADER.size
        if len(view) < pos + 8 * ndim + 12:
            raise CodecError("truncated encrypted array")
        shape = struct.unpack(f">{ndim}Q", view[pos : pos + 8 * ndim])
        count, width = struct.unpack(">QI", view[pos + 8 * ndim : pos + 8 * ndim + 12])
        if count != int(np.prod(shape, dtype=np.int64)):
            raise CodecError("encrypted array count does not match its shape")
        cts = wire.unpack_ciphertexts(view[pos + 8 * ndim + 12 :], count, width, public_key)
        return cls(public_key, cts, tuple(shape), exponent)

    def to_phe(self) -> list[Any]:
        """Return a flat list of ``phe.EncryptedNumber`` (C order), same exponent each."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.encrypted_to_phe(self)

    @classmethod
    def from_phe(cls, numbers: Any, public_key: PublicKey) -> EncryptedArray:
        """Build a 1-D array from ``phe.EncryptedNumber`` objects (aligned to the lowest one)."""
        from privcomp.backends.paillier import phe_interop

        return phe_interop.encrypted_from_phe(numbers, public_key)


def encrypt_array(
    public_key: PublicKey,
    values: npt.ArrayLike,
    *,
    exponent: int | None,
    precision: float | None,
    rng: RandomSource | None,
    private_key: PrivateKey | None,
    workers: int | None,
) -> EncryptedArray:
    """Implementation of :meth:`PublicKey.encrypt`."""
    arr = encoding.as_value_array(values)
    if exponent is not None and precision is not None:
        raise ConfigurationError("give exponent or precision, not both")
    if precision is not None:
        exp = encoding.exponent_for_precision(precision)
    elif exponent is not None:
        exp = int(exponent)
    else:
        exp = encoding.default_exponent(arr)
    pts = encoding.encode(arr, exp, public_key.n)
    cts = raw_encrypt_by(public_key, private_key, pts, rng=rng, workers=workers)
    return EncryptedArray(public_key, cts, arr.shape, exp)


def raw_encrypt_by(
    public_key: PublicKey,
    private_key: PrivateKey | None,
    plaintexts: list[int],
    *,
    rng: RandomSource | None,
    workers: int | None,
) -> list[gmpy2.mpz]:
    """Encrypt raw plaintexts; with ``private_key`` use the key holder's faster CRT path."""
    if private_key is None:
        return public_key.raw_encrypt(plaintexts, rng=rng, workers=workers)
    if private_key.public_key != public_key:
        raise ConfigurationError("private_key does not match the public key")
    return private_key.raw_encrypt(plaintexts, rng=rng, workers=workers)


def decrypt_array(
    private_key: PrivateKey, encrypted: EncryptedArray, *, workers: int | None, fast: bool
) -> npt.NDArray[Any]:
    """Implementation of :meth:`PrivateKey.decrypt`."""
    if not isinstance(encrypted, EncryptedArray):
        raise TypeError("decrypt expects an EncryptedArray (use decrypt_packed for packed data)")
    pk = private_key.public_key
    if encrypted.public_key != pk:
        raise ConfigurationError("the array was encrypted under a different public key")
    pts = private_key.raw_decrypt(encrypted._cts, workers=workers, small=fast)
    mants = encoding.decode_mantissas(pts, pk.n)
    return encoding.decode(mants, encrypted.exponent, encrypted.shape)
