"""Versioned, pickle-free byte formats for Paillier ciphertexts (layer: backends).

Raw ciphertext list (:func:`ciphertexts_to_bytes`)::

    magic  b"PCCT"                     4 bytes
    version                            1 byte  (= 1)
    key fingerprint                    8 bytes (SHA-256 of n, truncated)
    count                              8 bytes big-endian
    width                              4 bytes big-endian (= bytes of n^2)
    ciphertexts                        count * width bytes, each big-endian

Every parsed ciphertext is validated against the key (``1 <= c < n^2`` and ``gcd(c, n) = 1``)
before it is returned, so nothing outside ``Z*_{n^2}`` ever reaches a decryption.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2

from privcomp.errors import CodecError, InvalidCiphertextError

if TYPE_CHECKING:
    from privcomp.backends.paillier.keys import PublicKey

_CT_MAGIC = b"PCCT"
_CT_VERSION = 1
_CT_HEADER = struct.Struct(">4sB8sQI")


def key_tag(public_key: PublicKey) -> bytes:
    """Return the 8-byte key fingerprint written into every serialised object."""
    return bytes.fromhex(public_key.fingerprint)


def pack_ciphertexts(cs: Sequence[int], width: int) -> bytes:
    """Concatenate ciphertexts as fixed-width big-endian integers."""
    return b"".join(gmpy2.mpz(c).to_bytes(width, "big") for c in cs)


def unpack_ciphertexts(
    body: bytes | memoryview, count: int, width: int, public_key: PublicKey
) -> list[gmpy2.mpz]:
    """Parse ``count`` fixed-width ciphertexts and validate them against ``public_key``.

    Raises
    ------
    CodecError
        On a length mismatch.
    InvalidCiphertextError
        If a ciphertext lies outside ``Z*_{n^2}``.
    """
    if width != public_key.ciphertext_bytes:
        raise InvalidCiphertextError("ciphertext width does not match the public key")
    if len(body) != count * width:
        raise CodecError("ciphertext payload has a wrong length")
    from_bytes = gmpy2.mpz.from_bytes
    view = memoryview(body)
    cs = [from_bytes(view[i * width : (i + 1) * width], "big") for i in range(count)]
    return public_key.validate_ciphertexts(cs)


def read_header(
    view: memoryview, header: struct.Struct, magic: bytes, version: int, what: str
) -> tuple[Any, ...]:
    """Unpack a format's fixed header, whose first two fields are its magic and version.

    Raises
    ------
    CodecError
        If ``view`` is shorter than the header, or on a bad magic or version (``what`` names
        the format in the message).
    """
    if len(view) < header.size:
        raise CodecError(f"truncated {what}")
    fields = header.unpack(view[: header.size])
    if fields[0] != magic:
        raise CodecError(f"not a privcomp {what} (bad magic)")
    if fields[1] != version:
        raise CodecError(f"unsupported {what} version {fields[1]}")
    return tuple(fields)


def check_key(tag: bytes, public_key: PublicKey) -> None:
    """Refuse data serialised under another key."""
    if tag != key_tag(public_key):
        raise InvalidCiphertextError("ciphertexts were produced under a different public key")


def ciphertexts_to_bytes(cs: Sequence[int], public_key: PublicKey) -> bytes:
    """Serialise raw ciphertexts (no re-randomisation: call ``raw_rerandomize`` first if needed).

    Parameters
    ----------
    cs:
        Ciphertexts under ``public_key``.
    public_key:
        Their key (its fingerprint is written into the header).

    Returns
    -------
    bytes
        The ``PCCT`` format described in the module docstring.
    """
    width = public_key.ciphertext_bytes
    header = _CT_HEADER.pack(_CT_MAGIC, _CT_VERSION, key_tag(public_key), len(cs), width)
    return header + pack_ciphertexts(cs, width)


def ciphertexts_from_bytes(data: bytes, public_key: PublicKey) -> list[gmpy2.mpz]:
    """Parse and validate :func:`ciphertexts_to_bytes` output.

    Raises
    ------
    CodecError
        On a bad magic, version or length.
    InvalidCiphertextError
        On a key mismatch or a ciphertext outside ``Z*_{n^2}``.
    """
    view = memoryview(bytes(data))
    _, _, tag, count, width = read_header(
        view, _CT_HEADER, _CT_MAGIC, _CT_VERSION, "ciphertext list"
    )
    check_key(tag, public_key)
    return unpack_ciphertexts(view[_CT_HEADER.size :], count, width, public_key)
