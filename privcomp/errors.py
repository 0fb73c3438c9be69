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


# --- runtime (gRPC services, jobs, policy) -------------------------------------------------------


class JobNotFoundError(PrivcompError, LookupError):
    """No job with the given identifier is visible to the caller."""


class JobStateError(PrivcompError, RuntimeError):
    """An operation is not allowed in the job's current state (e.g. result of a running job)."""


class JobFailedError(PrivcompError, RuntimeError):
    """A job ended FAILED or CANCELLED; carries the reason, failing party and phase."""

    def __init__(self, message: str, *, party: str = "", phase: str = ""):
        super().__init__(message)
        self.party = party
        self.phase = phase


class AuthenticationError(PrivcompError, PermissionError):
    """The caller's credentials (token) are missing or invalid."""


class PermissionDeniedError(PrivcompError, PermissionError):
    """The caller is authenticated but not allowed to do this."""


class ServiceUnavailableError(PrivcompError, ConnectionError):
    """A privcomp service cannot be reached (not running, wrong address or TLS refused)."""


class DeadlineExceededError(PrivcompError, TimeoutError):
    """A call or a job did not finish within its deadline."""


class PeerFailedError(TransportError):
    """A named peer failed, vanished or timed out during a protocol round."""

    def __init__(self, message: str, *, party: str):
        super().__init__(message)
        self.party = party


class MissingSecretKeyError(PrivcompError, ValueError):
    """An operation needs the secret key but the (public) context holds none."""


class DecryptionBudgetExceededError(PrivcompError, RuntimeError):
    """A key reached its cap on released decryptions; rotate the key (new context)."""


class GroupTooSmall(PrivcompError, ValueError):
    """A released figure would cover fewer than ``k`` records (disclosure control, T12).

    Parameters
    ----------
    group:
        Name of the offending group or cell (e.g. ``"sex=F"``, ``"age in [0, 20)"``).
    k:
        The minimum group size of the refusing party's policy.
    party:
        Name of the party whose policy refused, when known.
    """

    def __init__(self, group: str, k: int, party: str | None = None):
        who = f" (policy of party {party!r})" if party else ""
        super().__init__(f"group {group!r} has fewer than k={k} records{who}; release refused")
        self.group = group
        self.k = k
        self.party = party


class DifferencingRefused(GroupTooSmall):
    """A query's record set differs from an earlier one by fewer than ``k`` records (T13)."""


class PolicyViolation(PrivcompError, PermissionError):
    """A party's policy does not allow this column or operation for this requester."""


# --- Paillier engine ------------------------------------------------------------------------------


class ParallelWorkerError(PrivcompError, RuntimeError):
    """A forked worker process of a batched cryptographic operation failed or died."""


# --- private set intersection -----------------------------------------------------------------


class DuplicateKeyError(PrivcompError, ValueError):
    """A party's join keys contain duplicates, so rows cannot be aligned one-to-one.

    Parameters
    ----------
    party:
        Index of the party whose keys repeat (the message never shows a key).
    """

    def __init__(self, party: int):
        super().__init__(
            f"party {party}: the join keys contain duplicates; each key must identify one row"
        )
        self.party = party


# --- runtime hardening ----------------------------------------------------------------------------


class IdempotencyConflictError(ConfigurationError):
    """An idempotency key of a requester was reused for a different job spec."""


class ResourceLimitExceededError(PrivcompError, RuntimeError):
    """A configured resource cap (e.g. pending peer bytes of a job) would be exceeded."""
