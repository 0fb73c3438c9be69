"""Versioned array codec: round-trips and refusals (nothing but plain numeric arrays decodes)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privcomp.core.codec import MAGIC, MAX_NDIM, array_from_bytes, array_to_bytes
from privcomp.errors import CodecError

ALLOWED = ["<u8", "<i8", "<f8", "u1", "?", "<i4", "<u4", "<f4"]
SHAPES = [(), (0,), (3, 0), (0, 2, 5), (1,), (7,), (3, 4), (2, 3, 4)]


@settings(max_examples=200, deadline=None)
@given(
    a=hnp.arrays(
        st.sampled_from([np.dtype(d) for d in ALLOWED]),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_roundtrip_property(a: np.ndarray) -> None:
    out = array_from_bytes(array_to_bytes(a))
    assert out.dtype == a.dtype
    assert out.shape == a.shape
    assert out.tobytes() == a.tobytes()  # bit-exact, NaN payloads and -0.0 included
    assert out.flags.writeable
    assert out.flags.c_contiguous


@pytest.mark.parametrize("dtype", ALLOWED)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_roundtrip_every_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    a = (np.arange(int(np.prod(shape)), dtype=np.int64) * 37 % 256).astype(dtype).reshape(shape)
    data = array_to_bytes(a)
    assert data[:4] == MAGIC
    assert len(data) == 6 + 8 * len(shape) + a.nbytes
    out = array_from_bytes(data)
    assert out.dtype == np.dtype(dtype)
    assert out.shape == shape
    assert out.tobytes() == a.tobytes()
    assert array_from_bytes(bytearray(data)).tobytes() == a.tobytes()
    assert array_from_bytes(memoryview(data)).tobytes() == a.tobytes()


def test_non_contiguous_and_big_endian_inputs() -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(array_from_bytes(array_to_bytes(a.T)), a.T)
    np.testing.assert_array_equal(array_from_bytes(array_to_bytes(a[:, ::2])), a[:, ::2])
    big = a.astype(">i8")
    out = array_from_bytes(array_to_bytes(big))
    assert out.dtype == np.dtype("<i8")
    np.testing.assert_array_equal(out, a)
    u = np.array([2**64 - 1, 0], dtype=np.uint64)
    assert array_from_bytes(array_to_bytes(u)).tolist() == [2**64 - 1, 0]


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return MAGIC + struct.pack("<BB", code, len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"PCA",
        b"XXXX\x01\x00" + b"\x00" * 8,
        b"PCA\x02\x01\x00" + b"\x00" * 8,  # a future format version
        _header(99, (1,)) + b"\x00" * 8,  # unknown dtype code
        _header(0, (1,)) + b"\x00" * 8,
        _header(1, (2,)) + b"\x00" * 15,  # truncated payload
        _header(1, (2,)) + b"\x00" * 17,  # trailing bytes
        _header(1, (2, 3))[:-3],  # truncated header
        MAGIC + struct.pack("<BB", 1, MAX_NDIM + 1) + b"\x00" * 8 * (MAX_NDIM + 1),
        _header(1, (2**40, 2**40)),  # claims far more than it carries
        _header(1, (0, 2**63)),  # empty, but a dimension numpy cannot represent
        _header(1, (0, 2**64 - 1)),
    ],
)
def test_refuses_malformed_bytes(data: bytes) -> None:
    with pytest.raises(CodecError):
        array_from_bytes(data)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1, "a"], dtype=object),
        np.array([{"x": 1}], dtype=object),
        np.array(["text"]),
        np.array([1.0], dtype=np.float16),
        np.array([1 + 1j]),
        np.zeros(2, dtype=[("a", "<i4")]),
        np.zeros((1,) * (MAX_NDIM + 1), dtype=np.uint8),
    ],
    ids=["object", "object-dict", "str", "float16", "complex", "structured", "too-many-dims"],
)
def test_refuses_unsupported_arrays(bad: np.ndarray) -> None:
    with pytest.raises(CodecError):
        array_to_bytes(bad)
