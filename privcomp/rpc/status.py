"""PrivcompError ⇄ grpc.StatusCode, both directions, in ONE table (layer: rpc).

Servers turn a raised :class:`~privcomp.errors.PrivcompError` into a status with
:func:`code_for`; clients turn an :class:`grpc.RpcError` back into the matching error with
:func:`error_from_rpc`. Status details carry the error message, which never contains a value.
"""

from __future__ import annotations

import grpc

from privcomp.errors import (
    AuthenticationError,
    CodecError,
    ConfigurationError,
    DeadlineExceededError,
    EncodingError,
    InvalidCiphertextError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    PermissionDeniedError,
    PolicyViolation,
    PrivcompError,
    ProtocolError,
    ResourceLimitExceededError,
    ServiceUnavailableError,
    TransportError,
)

#: The single mapping table, most specific classes first. The first entry whose class matches
#: (isinstance) decides the server-side code; the first entry with a given code decides the
#: client-side class.
STATUS_TABLE: tuple[tuple[type[PrivcompError], grpc.StatusCode], ...] = (
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (PolicyViolation, grpc.StatusCode.PERMISSION_DENIED),
    (JobNotFoundError, grpc.StatusCode.NOT_FOUND),
    (JobStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (JobFailedError, grpc.StatusCode.ABORTED),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ServiceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ResourceLimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ConfigurationError, grpc.StatusCode.INVALID_ARGUMENT),
    (EncodingError, grpc.StatusCode.INVALID_ARGUMENT),
    (CodecError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidCiphertextError, grpc.StatusCode.INVALID_ARGUMENT),
    (TransportError, grpc.StatusCode.UNAVAILABLE),
    (ProtocolError, grpc.StatusCode.ABORTED),
    (PrivcompError, grpc.StatusCode.INTERNAL),
)

_HINTS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "is the server running at that address, and do the CA and "
    "certificates match?",
    grpc.StatusCode.UNAUTHENTICATED: "check the token file of your identity",
    grpc.StatusCode.PERMISSION_DENIED: "the token must belong to the certificate's identity",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the server did not answer in time",
}


def code_for(exc: BaseException) -> grpc.StatusCode:
    """Return the status code for a server-side exception (INTERNAL for unknown ones)."""
    for cls, code in STATUS_TABLE:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_class_for(code: grpc.StatusCode) -> type[PrivcompError]:
    """Return the privcomp error class a client raises for ``code``."""
    for cls, c in STATUS_TABLE:
        if c == code:
            return cls
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ConfigurationError
    return PrivcompError


def error_from_rpc(err: grpc.RpcError, what: str = "call") -> PrivcompError:
    """Translate a gRPC error into the matching :class:`PrivcompError` with a helpful message."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else ""
    cls = error_class_for(code)
    hint = _HINTS.get(code)
    msg = f"{what} failed: {code.name}: {details or 'no details'}"
    if hint:
        msg += f" ({hint})"
    if cls is JobFailedError:
        return JobFailedError(msg)
    return cls(msg)
