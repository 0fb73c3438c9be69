"""Versioned, pickle-free array codec (layer: core).

Wire format, all little-endian::

    magic   4 bytes  b"PCA\\x01"   (format version 1)
    dtype   1 byte   code from _DTYPES
    ndim    1 byte
    shape   8 bytes per dimension (uint64)
    data    itemsize * prod(shape) bytes, C order

Only plain numeric dtypes are allowed; object arrays are refused, so decoding can never run code.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from privcomp.errors import CodecError

MAGIC = b"PCA\x01"
_DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<u8"),
    2: np.dtype("<i8"),
    3: np.dtype("<f8"),
    4: np.dtype("u1"),
    5: np.dtype("?"),
    6: np.dtype("<i4"),
    7: np.dtype("<u4"),
    8: np.dtype("<f4"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}
MAX_NDIM = 32


def array_to_bytes(arr: npt.ArrayLike) -> bytes:
    """Serialise a numeric array with its dtype and shape (never pickle)."""
    a = np.asarray(arr)
    le = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    code = _CODES.get(np.dtype(le))
    if code is None:
        raise CodecError(f"dtype {a.dtype} is not supported by the array codec")
    if a.ndim > MAX_NDIM:
        raise CodecError(f"arrays of more than {MAX_NDIM} dimensions are not supported")
    header = MAGIC + struct.pack("<BB", code, a.ndim) + struct.pack(f"<{a.ndim}Q", *a.shape)
    return header + np.ascontiguousarray(a, dtype=_DTYPES[code]).tobytes()


def array_from_bytes(data: bytes | bytearray | memoryview) -> npt.NDArray[np.generic]:
    """Decode bytes written by :func:`array_to_bytes`, validating every field.

    Raises
    ------
    CodecError
        On a wrong magic or version, an unknown dtype, or a length that does not match the shape.
    """
    buf = memoryview(data)
    if len(buf) < 6 or bytes(buf[:4]) != MAGIC:
        raise CodecError("not a privcomp array (bad magic or unsupported format version)")
    code, ndim = struct.unpack_from("<BB", buf, 4)
    dtype = _DTYPES.get(code)
    if dtype is None:
        raise CodecError(f"unknown dtype code {code}")
    if ndim > MAX_NDIM or len(buf) < 6 + 8 * ndim:
        raise CodecError("truncated or invalid array header")
    shape = struct.unpack_from(f"<{ndim}Q", buf, 6)
    count = 1
    for dim in shape:
        count *= dim
    offset = 6 + 8 * ndim
    if len(buf) - offset != count * dtype.itemsize:
        raise CodecError(
            f"array payload is {len(buf) - offset} bytes, shape {shape} needs "
            f"{count * dtype.itemsize}"
        )
    try:
        return np.frombuffer(buf, dtype=dtype, offset=offset).reshape(shape).copy()
    except ValueError as exc:  # an empty array whose other dimensions exceed numpy's limits
        raise CodecError(f"array shape with {ndim} dimensions is not representable") from exc
