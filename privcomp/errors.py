"""The privcomp exception hierarchy (layer: errors; imports the standard library only).

Every class also subclasses the matching builtin, so ``except ValueError`` keeps working for
callers who do not know privcomp. Messages name columns, parties, shapes and bounds — never a
value, a share or a key.
"""

from __future__ import annotations


class PrivcompError(Exception):
    """Base class of every error privcomp raises on purpose."""


class ConfigurationError(PrivcompError, ValueError):
    """A parameter, preset or configuration is invalid or insecure."""


class InsecureParameterError(ConfigurationError):
    """A parameter is below the security floor (key too short, HE modulus too large, ...)."""


class EncodingError(PrivcompError, ValueError):
    """A value cannot be encoded: NaN, infinity, wrong type."""


class EncodingOverflowError(EncodingError):
    """A value lies outside the representable range of its encoding.

    Parameters
    ----------
    message:
        Human-readable explanation naming the bound (never the offending value).
    bound:
        The largest magnitude the encoding accepts.
    column:
        Optional column or array name the value came from.
    """

    def __init__(self, message: str, *, bound: float | None = None, column: str | None = None):
        super().__init__(message)
        self.bound = bound
        self.column = column


class NotEnoughSharesError(PrivcompError, ValueError):
    """Fewer shares than the reconstruction threshold were supplied."""


class InvalidCiphertextError(PrivcompError, ValueError):
    """A ciphertext is malformed or outside the ciphertext space of its key."""


class CodecError(PrivcompError, ValueError):
    """Bytes do not decode to a valid privcomp object (bad magic, version, dtype or length)."""


class BackendUnavailableError(PrivcompError, ImportError):
    """An optional dependency (tenseal, phe) is not installed."""


class ProtocolError(PrivcompError, RuntimeError):
    """A multi-party protocol cannot continue (the job aborts)."""


class ProtocolAbort(ProtocolError):
    """A party aborted the protocol; carries the party and a reason."""

    def __init__(self, party_id: int, reason: str):
        super().__init__(f"party {party_id} aborted: {reason}")
        self.party_id = party_id
        self.reason = reason


class TransportError(PrivcompError, ConnectionError):
    """Sending to or receiving from a peer failed."""


class PeerUnreachableError(TransportError):
    """A peer cannot be reached."""


class RoundTimeoutError(TransportError, TimeoutError):
    """A message from a peer did not arrive within the round deadline."""


class TripleExhaustedError(ProtocolError):
    """A correlated-randomness source has no more material of the requested kind."""
