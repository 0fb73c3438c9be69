"""Encrypted CKKS vectors (layer: backends).

A :class:`CKKSVector` wraps one ``tenseal.CKKSVector`` and the :class:`CKKSContext` it belongs
to. Operations follow numpy: ``+``, ``-``, ``*`` with another encrypted vector, a scalar or a
plain array of the same length; ``dot``; ``sum``; ``@``/``matmul_plain`` with a plain matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from privcomp.backends.ckks import wire
from privcomp.errors import (
    CodecError,
    ConfigurationError,
    EncodingError,
    InvalidCiphertextError,
)
from privcomp.types import ArrayLike, FloatArray

if TYPE_CHECKING:
    from privcomp.backends.ckks.context import CKKSContext

MatmulMethod = Literal["auto", "diagonal", "dots", "tenseal"]


def plain_array(values: ArrayLike, what: str) -> FloatArray:
    """Return ``values`` as a finite float64 array or raise :class:`EncodingError`."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EncodingError(f"{what} must be numeric") from exc
    if not np.isfinite(arr).all():
        raise EncodingError(f"{what} contains NaN or infinity")
    return arr


def tenseal_call(fn: Callable[[], Any], what: str) -> Any:
    """Run a TenSEAL operation, turning its bare ``ValueError``/``RuntimeError`` into ours."""
    try:
        return fn()
    except (ValueError, RuntimeError) as exc:
        raise ConfigurationError(
            f"CKKS {what} failed (multiplicative depth of the preset exhausted, Galois keys "
            "missing, or operands with different sizes/levels)"
        ) from exc


class CKKSVector:
    """A vector of real numbers encrypted with CKKS.

    Create with :meth:`CKKSContext.encrypt` or :meth:`from_bytes`; never directly.
    """

    __slots__ = ("_ctx", "_ts")
    __array_ufunc__ = None  # make ``ndarray * vec`` call our __rmul__, not broadcast

    def __init__(self, context: CKKSContext, ts_vector: Any) -> None:
        self._ctx = context
        self._ts = ts_vector

    @property
    def context(self) -> CKKSContext:
        """The context (keys and parameters) the vector is encrypted under."""
        return self._ctx

    @property
    def ts_vector(self) -> Any:
        """The wrapped ``tenseal.CKKSVector`` (for interop and benchmarks)."""
        return self._ts

    @property
    def size(self) -> int:
        """Number of encrypted values."""
        return int(self._ts.size())

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"CKKSVector(size={self.size}, preset={self._ctx.params.name!r})"

    def _wrap(self, ts_vector: Any) -> CKKSVector:
        return CKKSVector(self._ctx, ts_vector)

    def _operand(self, other: object) -> Any:
        if isinstance(other, CKKSVector):
            if other._ctx.key_id != self._ctx.key_id:
                raise ConfigurationError("encrypted operands belong to different keys")
            if other.size != self.size:
                raise ConfigurationError(f"size mismatch: {self.size} vs {other.size}")
            return other._ts
        if isinstance(other, int | float | np.integer | np.floating):
            return float(plain_array(other, "scalar operand"))
        arr = plain_array(other, "plain operand")  # type: ignore[arg-type]
        if arr.shape != (self.size,):
            raise ConfigurationError(f"plain operand shape {arr.shape} != ({self.size},)")
        return arr.tolist()

    def __add__(self, other: object) -> CKKSVector:
        op = self._operand(other)
        return self._wrap(tenseal_call(lambda: self._ts + op, "addition"))

    __radd__ = __add__

    def __sub__(self, other: object) -> CKKSVector:
        op = self._operand(other)
        return self._wrap(tenseal_call(lambda: self._ts - op, "subtraction"))

    def __rsub__(self, other: object) -> CKKSVector:
        return (-self) + other

    def __mul__(self, other: object) -> CKKSVector:
        op = self._operand(other)
        return self._wrap(tenseal_call(lambda: self._ts * op, "multiplication"))

    __rmul__ = __mul__

    def __neg__(self) -> CKKSVector:
        return self._wrap(tenseal_call(lambda: -self._ts, "negation"))

    def dot(self, other: CKKSVector | ArrayLike) -> CKKSVector:
        """Inner product with an encrypted or plain vector; a vector of size 1.

        Cost: one product and log2(size) rotations (TenSEAL's rotate-and-sum).
        """
        op = self._operand(other)
        return self._wrap(tenseal_call(lambda: self._ts.dot(op), "dot product"))

    def sum(self) -> CKKSVector:
        """Sum of all slots; a vector of size 1."""
        return self._wrap(tenseal_call(lambda: self._ts.sum(), "sum"))

    def matmul_plain(self, matrix: ArrayLike, method: MatmulMethod = "auto") -> CKKSVector:
        """Return ``self @ matrix`` for a plain ``(size, m)`` matrix; a vector of size ``m``.

        Parameters
        ----------
        matrix:
            Plain float matrix with ``size`` rows.
        method:
            ``"diagonal"`` (default via ``"auto"``): hybrid diagonal method, about
            ``m + log2(slots/m)`` rotations (see :mod:`privcomp.backends.ckks.linalg`);
            ``"dots"``: one TenSEAL dot product per column (12 rotations each at N=8192),
            then masking and packing (one more level than the other methods);
            ``"tenseal"``: TenSEAL's own ``mm`` (one rotation per row; slow, for comparison).
        """
        mat = plain_array(matrix, "matrix")
        if mat.ndim != 2 or mat.shape[0] != self.size or mat.shape[1] < 1:
            raise ConfigurationError(
                f"matrix shape {mat.shape} does not fit a vector of {self.size}"
            )
        if method in ("auto", "diagonal"):
            bridge = self._ctx.rotation_bridge()
            out = tenseal_call(lambda: bridge.matmul_plain(self._ts, mat), "vector x matrix")
        elif method == "dots":
            out = tenseal_call(lambda: self._matmul_dots(mat), "vector x matrix")
        elif method == "tenseal":
            out = tenseal_call(lambda: self._ts.mm(mat.tolist()), "vector x matrix")
        else:
            raise ConfigurationError(f"unknown matmul method {method!r}")
        return self._wrap(out)

    def _matmul_dots(self, mat: FloatArray) -> Any:
        cols = [self._ts.dot(mat[:, j].tolist()) for j in range(mat.shape[1])]
        if len(cols) == 1:
            return cols[0]
        return self._ctx.rotation_bridge().pack_first_slots(cols)

    def __matmul__(self, matrix: ArrayLike) -> CKKSVector:
        return self.matmul_plain(matrix)

    def to_bytes(self) -> bytes:
        """Serialise with privcomp's versioned header around TenSEAL's bytes."""
        p = self._ctx.params
        header = wire.Header(
            kind=wire.KIND_VECTOR,
            poly_modulus_degree=p.poly_modulus_degree,
            total_bits=p.total_bits,
            scale_bits=p.scale_bits,
            size=self.size,
            key_id=self._ctx.key_id,
        )
        return wire.pack(header, self._ts.serialize())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, context: CKKSContext) -> CKKSVector:
        """Load a vector written by :meth:`to_bytes` under ``context``.

        Raises
        ------
        CodecError
            Bad envelope.
        InvalidCiphertextError
            The vector belongs to other parameters or keys, or TenSEAL cannot parse it.
        """
        header, payload = wire.unpack(data, wire.KIND_VECTOR)
        p = context.params
        if (header.poly_modulus_degree, header.total_bits) != (
            p.poly_modulus_degree,
            p.total_bits,
        ):
            raise InvalidCiphertextError("vector parameters do not match the context")
        if header.key_id != context.key_id:
            raise InvalidCiphertextError("vector was encrypted under a different key")
        ts = context.tenseal_module
        try:
            vec = ts.ckks_vector_from(context.ts_context, payload)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise InvalidCiphertextError("TenSEAL could not parse the CKKS vector") from exc
        if vec.size() != header.size:
            raise CodecError("vector size does not match its header")
        return cls(context, vec)
