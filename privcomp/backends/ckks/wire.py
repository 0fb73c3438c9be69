"""Versioned envelope around TenSEAL's serialised bytes (layer: backends; no tenseal import).

Wire format, little-endian::

    magic        4 bytes  b"PCKS"
    version      1 byte   1
    kind         1 byte   1 = context, 2 = vector
    N            4 bytes  poly_modulus_degree
    total_bits   2 bytes  total coeff_modulus bits
    scale_bits   1 byte
    flags        1 byte   bit 0 secret key, bit 1 Galois keys, bit 2 relinearisation keys
    size         4 bytes  vector: number of slots; context: 0
    release_cap  4 bytes  context: cap on released decryptions; vector: 0
    releases     4 bytes  context: released decryptions already spent; vector: 0
    key_id      16 bytes  random, public identifier of the key pair (vectors: of their context)
    n_primes     1 byte   then n_primes bytes of prime bit sizes (context only; 0 for vectors)
    length       8 bytes  length of the TenSEAL payload that follows
    payload

The header is checked before TenSEAL parses anything: a wrong magic, version, kind, truncated
input or a parameter set above the 128-bit bound is refused with a typed error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from privcomp.errors import CodecError

MAGIC = b"PCKS"
VERSION = 1
KIND_CONTEXT = 1
KIND_VECTOR = 2
FLAG_SECRET_KEY = 1
FLAG_GALOIS_KEYS = 2
FLAG_RELIN_KEYS = 4

_FIXED = struct.Struct("<4sBBIHBBIII16sB")
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Header:
    """Decoded envelope header (see the module docstring for the layout)."""

    kind: int
    poly_modulus_degree: int
    total_bits: int
    scale_bits: int
    flags: int = 0
    size: int = 0
    release_cap: int = 0
    releases: int = 0
    key_id: bytes = bytes(16)
    prime_bits: tuple[int, ...] = ()


def pack(header: Header, payload: bytes) -> bytes:
    """Return ``header`` followed by ``payload``."""
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        header.kind,
        header.poly_modulus_degree,
        header.total_bits,
        header.scale_bits,
        header.flags,
        header.size,
        header.release_cap,
        header.releases,
        header.key_id,
        len(header.prime_bits),
    )
    return fixed + bytes(header.prime_bits) + _LENGTH.pack(len(payload)) + payload


def unpack(data: bytes | bytearray | memoryview, kind: int) -> tuple[Header, bytes]:
    """Split an envelope into its header and TenSEAL payload.

    Raises
    ------
    CodecError
        Bad magic or version, wrong kind, or a length that does not match the input.
    """
    buf = bytes(data)
    if len(buf) < _FIXED.size or buf[:4] != MAGIC:
        raise CodecError("not a privcomp CKKS object (bad magic)")
    fields = _FIXED.unpack_from(buf, 0)
    version, got_kind = fields[1], fields[2]
    if version != VERSION:
        raise CodecError(f"unsupported privcomp CKKS format version {version}")
    if got_kind != kind:
        raise CodecError(f"expected a CKKS object of kind {kind}, got kind {got_kind}")
    n_primes = fields[11]
    offset = _FIXED.size + n_primes
    if len(buf) < offset + _LENGTH.size:
        raise CodecError("truncated privcomp CKKS header")
    prime_bits = tuple(buf[_FIXED.size : offset])
    (length,) = _LENGTH.unpack_from(buf, offset)
    offset += _LENGTH.size
    if len(buf) - offset != length:
        raise CodecError(f"CKKS payload is {len(buf) - offset} bytes, header says {length}")
    header = Header(
        kind=got_kind,
        poly_modulus_degree=fields[3],
        total_bits=fields[4],
        scale_bits=fields[5],
        flags=fields[6],
        size=fields[7],
        release_cap=fields[8],
        releases=fields[9],
        key_id=fields[10],
        prime_bits=prime_bits,
    )
    return header, buf[offset:]
