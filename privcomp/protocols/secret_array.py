"""``SecretArray``: one party's handle on a secret-shared array (layer: protocols).

Operators are provided only where no communication happens (``+``, ``-``, unary ``-``, ``*`` by a
public integer, or a public real when the array holds integers). Everything that talks to the
other parties is an explicit ``await`` — ``await x.mul(y)``, ``await x.lt(y)``,
``await x.reveal()`` — so the round cost stays visible in the code.

A ``SecretArray`` never turns into a plain array by accident: numpy ufuncs and ``np.asarray``
refuse it (``TypeError: call .reveal()``), and its ``repr`` shows the shape and the party only.
Comparison operators (``<``, ``==``, ``!=``, ...) raise ``TypeError`` pointing to the awaited
method (``await x.lt(y)``, ``await x.eq(y)``) instead of answering by identity; it is unhashable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from privcomp.core.ring import as_ring, ring_sum
from privcomp.errors import ConfigurationError, EncodingError, EncodingOverflowError
from privcomp.protocols import arithmetic as ar
from privcomp.protocols import comparison as cmp
from privcomp.protocols.context import PartyContext
from privcomp.protocols.primitives import input_arrays, reveal, reveal_to
from privcomp.types import RingArray, Shape

_KIND_INT, _KIND_FIXED = 0, 1
_INT_LIMIT = 1 << 62
_REFUSE = "SecretArray holds a secret share; call `await x.reveal()` to get its value"


class SecretArray:
    """A party's share of a secret array, fixed-point (real) or ring-integer.

    Parameters
    ----------
    ctx:
        The party's context.
    share:
        This party's additive share (``uint64``).
    fixed:
        True if the secret is a fixed-point real with ``ctx.fixed.frac_bits`` fractional bits,
        False if it is a signed integer.
    """

    __slots__ = ("_ctx", "_fixed", "_share")
    __array_ufunc__ = None  # numpy defers to our operators (or refuses) instead of coercing

    def __init__(self, ctx: PartyContext, share: RingArray, *, fixed: bool) -> None:
        self._ctx = ctx
        self._share = np.asarray(share, dtype=np.uint64)
        self._fixed = fixed

    # -- introspection (no values) ---------------------------------------------------------
    def __repr__(self) -> str:
        kind = f"fixed_point(frac_bits={self.frac_bits})" if self._fixed else "integer"
        return f"SecretArray(shape={self.shape}, party={self.party_id}, {kind})"

    @property
    def ctx(self) -> PartyContext:
        """The owning party's context."""
        return self._ctx

    @property
    def share(self) -> RingArray:
        """This party's own additive share (uniformly random on its own)."""
        return self._share

    @property
    def fixed(self) -> bool:
        """True for fixed-point reals, False for ring integers."""
        return self._fixed

    @property
    def frac_bits(self) -> int:
        """Fractional bits of the fixed-point encoding."""
        return self._ctx.fixed.frac_bits

    @property
    def shape(self) -> Shape:
        """Shape of the secret array (public)."""
        return tuple(self._share.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._share.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(self._share.size)

    @property
    def party_id(self) -> int:
        """Index of the party holding this share."""
        return self._ctx.party_id

    # -- refusal of silent coercion --------------------------------------------------------
    def __array__(self, dtype: object = None, copy: object = None) -> npt.NDArray[Any]:
        raise TypeError(_REFUSE)

    def __bool__(self) -> bool:
        raise TypeError(_REFUSE)

    def __float__(self) -> float:
        raise TypeError(_REFUSE)

    def __int__(self) -> int:
        raise TypeError(_REFUSE)

    def __lt__(self, other: object) -> bool:
        raise TypeError("comparisons communicate: use `await x.lt(y)`")

    __le__ = __gt__ = __ge__ = __lt__

    def __eq__(self, other: object) -> bool:
        # Python identity (the default) would silently answer a different question.
        raise TypeError("equality tests communicate: use `await x.eq(y)`")

    def __ne__(self, other: object) -> bool:
        raise TypeError("equality tests communicate: use `await x.eq(y)` (and `1 - result`)")

    # Mutable share, value semantics refused: not hashable (no set/dict keys by identity).
    __hash__ = None  # type: ignore[assignment]

    # -- shape ops (local) -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._share)

    def __getitem__(self, key: Any) -> SecretArray:
        return SecretArray(self._ctx, np.asarray(self._share[key]), fixed=self._fixed)

    def __iter__(self) -> Iterator[SecretArray]:
        for i in range(len(self)):
            yield self[i]

    def reshape(self, *shape: Any) -> SecretArray:
        """Reshape (local)."""
        return SecretArray(self._ctx, self._share.reshape(*shape), fixed=self._fixed)

    @property
    def T(self) -> SecretArray:
        """Transpose (local)."""
        return SecretArray(self._ctx, np.ascontiguousarray(self._share.T), fixed=self._fixed)

    def sum(self, axis: int | None = None) -> SecretArray:
        """Sum of elements along ``axis`` (local)."""
        return SecretArray(self._ctx, ring_sum(self._share, axis=axis), fixed=self._fixed)

    # -- encoding helpers ------------------------------------------------------------------
    def _new(self, share: RingArray, fixed: bool) -> SecretArray:
        return SecretArray(self._ctx, share, fixed=fixed)

    def _as_fixed(self) -> RingArray:
        """Share of the same value in fixed point (integers are scaled up; local)."""
        if self._fixed:
            return self._share
        return self._share << np.uint64(self.frac_bits)

    def _public(self, v: npt.ArrayLike) -> tuple[RingArray, bool]:
        """Encode a public value: ring integer if it is integral, fixed point otherwise."""
        arr = np.asarray(v)
        if isinstance(v, SecretArray) or arr.dtype == object:
            raise TypeError(f"cannot combine a SecretArray with {type(v).__name__}")
        if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
            return _checked_int_ring(arr), False
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.array_equal(arr, np.rint(arr))
            and np.all(np.abs(arr) < _INT_LIMIT)
        ):
            return arr.astype(np.int64).view(np.uint64), False
        return self._ctx.fixed.encode(arr), True

    def _align(self, other: SecretArray | npt.ArrayLike) -> tuple[RingArray, RingArray, bool]:
        """Both operands as shares in the same encoding (public values shared by party 0)."""
        if isinstance(other, SecretArray):
            o_share, o_fixed = other._share, other._fixed
        else:
            enc, o_fixed = self._public(other)
            if self._fixed and not o_fixed:
                # A public integer meeting a fixed-point secret is scaled by 2^f: encode it as
                # fixed point so |v| >= 2^(62-f) raises instead of wrapping silently.
                enc, o_fixed = self._ctx.fixed.encode(np.asarray(other)), True
            o_share = enc if self.party_id == 0 else np.zeros(enc.shape, dtype=np.uint64)
        if self._fixed == o_fixed:
            return self._share, o_share, self._fixed
        f = np.uint64(self.frac_bits)
        if self._fixed:
            return self._share, o_share << f, True
        return self._share << f, o_share, True

    def _broadcast(self, a: RingArray, b: RingArray) -> tuple[RingArray, RingArray]:
        shape = np.broadcast_shapes(a.shape, b.shape)
        if a.shape == shape and b.shape == shape:
            return a, b
        return np.array(np.broadcast_to(a, shape)), np.array(np.broadcast_to(b, shape))

    # -- local arithmetic ------------------------------------------------------------------
    def __add__(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        a, b, fixed = self._align(other)
        return self._new(a + b, fixed)

    __radd__ = __add__

    def __sub__(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        a, b, fixed = self._align(other)
        return self._new(a - b, fixed)

    def __rsub__(self, other: npt.ArrayLike) -> SecretArray:
        a, b, fixed = self._align(other)
        return self._new(b - a, fixed)

    def __neg__(self) -> SecretArray:
        return self._new(np.negative(self._share), self._fixed)

    def __mul__(self, other: npt.ArrayLike) -> SecretArray:
        if isinstance(other, SecretArray):
            raise TypeError("secret * secret communicates: use `await x.mul(y)`")
        enc, p_fixed = self._public(other)
        if p_fixed and self._fixed:
            raise TypeError(
                "fixed-point * non-integer public value needs a truncation round: "
                "use `await x.mul(value)`"
            )
        return self._new(self._share * enc, self._fixed or p_fixed)

    __rmul__ = __mul__

    def __matmul__(self, other: object) -> SecretArray:
        raise TypeError("matrix products communicate: use `await x.matmul(y)`")

    __rmatmul__ = __matmul__

    # -- protocols (awaited) ---------------------------------------------------------------
    async def mul(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """Elementwise product (1 round; 2 if both operands are fixed point)."""
        ctx = self._ctx
        if not isinstance(other, SecretArray):
            enc, p_fixed = self._public(other)
            prod = self._share * enc
            if p_fixed and self._fixed:
                return self._new(await ar.truncate(ctx, prod, self.frac_bits), True)
            return self._new(prod, self._fixed or p_fixed)
        x, y = self._broadcast(self._share, other._share)
        if self._fixed and other._fixed:
            return self._new(await ar.mul_fixed(ctx, x, y, self.frac_bits), True)
        return self._new(await ar.mul(ctx, x, y), self._fixed or other._fixed)

    async def matmul(self, other: SecretArray) -> SecretArray:
        """Matrix product with another SecretArray (1 round; 2 if both are fixed point)."""
        if not isinstance(other, SecretArray):
            raise TypeError("matmul needs a SecretArray operand")
        x, y = self._share, other._share
        if x.ndim not in (1, 2) or y.ndim not in (1, 2):
            raise ConfigurationError(
                f"matmul supports 1-D and 2-D arrays, got {x.shape}, {y.shape}"
            )
        shape = _matmul_shape(x.shape, y.shape)
        bits = self.frac_bits if self._fixed and other._fixed else 0
        x2, y2 = x.reshape(_as_2d(x, left=True)), y.reshape(_as_2d(y, left=False))
        z = await ar.matmul(self._ctx, x2, y2, frac_bits=bits)
        return self._new(z.reshape(shape), self._fixed or other._fixed)

    async def dot(self, other: SecretArray) -> SecretArray:
        """Inner product of two 1-D SecretArrays (1 round; 2 if both are fixed point)."""
        if not isinstance(other, SecretArray):
            raise TypeError("dot needs a SecretArray operand")
        bits = self.frac_bits if self._fixed and other._fixed else 0
        z = await ar.dot(self._ctx, self._share, other._share, frac_bits=bits)
        return self._new(z, self._fixed or other._fixed)

    async def lt(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """``[self < other]`` as an integer 0/1 SecretArray (7 rounds)."""
        a, b, _ = self._align(other)
        a, b = self._broadcast(a, b)
        return self._new(await cmp.lt(self._ctx, a, b), False)

    async def gt(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """``[self > other]`` (7 rounds)."""
        a, b, _ = self._align(other)
        a, b = self._broadcast(a, b)
        return self._new(await cmp.lt(self._ctx, b, a), False)

    async def eq(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """``[self == other]`` as an integer 0/1 SecretArray (7 rounds)."""
        a, b, _ = self._align(other)
        a, b = self._broadcast(a, b)
        return self._new(await cmp.eq(self._ctx, a, b), False)

    async def maximum(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """Elementwise maximum (8 rounds)."""
        a, b, fixed = self._align(other)
        a, b = self._broadcast(a, b)
        return self._new(await cmp.maximum(self._ctx, a, b), fixed)

    async def minimum(self, other: SecretArray | npt.ArrayLike) -> SecretArray:
        """Elementwise minimum (8 rounds)."""
        a, b, fixed = self._align(other)
        a, b = self._broadcast(a, b)
        return self._new(await cmp.minimum(self._ctx, a, b), fixed)

    async def relu(self) -> SecretArray:
        """Elementwise ``max(x, 0)`` (8 rounds)."""
        return self._new(await cmp.relu(self._ctx, self._share), self._fixed)

    async def sign(self) -> SecretArray:
        """Elementwise sign in {-1, 0, 1} as integers (7 rounds)."""
        return self._new(await cmp.sign(self._ctx, self._share), False)

    async def reveal(self) -> npt.NDArray[Any]:
        """Open the value to every party: float64 if fixed point, int64 otherwise (1 round)."""
        return self._decode(await reveal(self._ctx, self._share))

    async def reveal_to(self, party: int) -> npt.NDArray[Any] | None:
        """Open the value to ``party`` only; the others get ``None`` (1 round)."""
        value = await reveal_to(self._ctx, self._share, party)
        return None if value is None else self._decode(value)

    def _decode(self, value: RingArray) -> npt.NDArray[Any]:
        if self._fixed:
            return self._ctx.fixed.decode(value)
        return value.view(np.int64).copy()


def _as_2d(a: RingArray, left: bool) -> tuple[int, int]:
    if a.ndim == 2:
        return (a.shape[0], a.shape[1])
    return (1, a.shape[0]) if left else (a.shape[0], 1)


def _matmul_shape(xs: Shape, ys: Shape) -> Shape:
    out: list[int] = []
    if len(xs) == 2:
        out.append(xs[0])
    if len(ys) == 2:
        out.append(ys[1])
    return tuple(out)


def _checked_int_ring(arr: npt.NDArray[Any]) -> RingArray:
    if (
        arr.size
        and arr.dtype != np.bool_
        and (int(arr.max()) >= _INT_LIMIT or int(arr.min()) <= -_INT_LIMIT)
    ):
        raise EncodingOverflowError(
            "integer value outside the supported range |x| < 2^62", bound=float(_INT_LIMIT)
        )
    return as_ring(arr)


async def input_secret(ctx: PartyContext, x: npt.ArrayLike) -> list[SecretArray]:
    """Share this party's ``x``; return one :class:`SecretArray` per party (1 round).

    Floats are fixed-point encoded (``EncodingError`` on NaN/inf, ``EncodingOverflowError``
    out of range); integers and booleans are ring integers with |x| < 2^62.
    """
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        ring, kind = _checked_int_ring(arr), _KIND_INT
    elif np.issubdtype(arr.dtype, np.floating):
        ring, kind = ctx.fixed.encode(arr), _KIND_FIXED
    else:
        raise EncodingError(f"party {ctx.party_id}: cannot input dtype {arr.dtype}")
    shares = await input_arrays(ctx, ring, kind)
    return [SecretArray(ctx, s, fixed=k == _KIND_FIXED) for s, k in shares]
