"""Authentication and authorisation interceptor for grpc.aio servers (layer: rpc).

Two layers (security.md §4.1-4.2, rule R3):

1. **TLS**: the server requires a client certificate from the federation CA; a missing or foreign
   certificate fails the handshake (the client sees UNAVAILABLE) before any Python code runs.
2. **Interceptor** (this module): the caller's identity is its certificate common name. When a
   token table is configured, the ``authorization: Bearer <token>`` header must hold a known
   token (else UNAUTHENTICATED) whose identity equals the certificate identity (else
   PERMISSION_DENIED). Then a per-method rule decides whether that identity may call the method
   (else PERMISSION_DENIED).

The check runs *inside* the wrapped handler but *before* the business handler, so no business
code runs for a refused call. Only ``/grpc.health.v1.Health/`` is exempt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import grpc.aio

from privcomp.rpc.channel import peer_identity

logger = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
#: method → predicate on the caller identity.
MethodRule = Callable[[str], bool]


def is_analyst(identity: str) -> bool:
    """Analyst identities are ``analyst:<name>``."""
    return identity.startswith("analyst:")


def is_coordinator(identity: str) -> bool:
    """The coordinator's identity."""
    return identity == "coordinator"


def is_party(identity: str) -> bool:
    """Any identity that is neither an analyst nor the coordinator."""
    return not is_analyst(identity) and not is_coordinator(identity)


@dataclass(slots=True)
class AuthStats:
    """Counters of refused calls (by status code name)."""

    refused: dict[str, int] = field(default_factory=dict)

    def count(self, code: grpc.StatusCode) -> None:
        """Count one refusal."""
        self.refused[code.name] = self.refused.get(code.name, 0) + 1


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Token + certificate identity + per-method rule check for every non-health RPC.

    Parameters
    ----------
    rules:
        Full method name (``/pkg.Service/Method``) → predicate on the caller identity. A method
        without a rule is refused (default deny).
    token_hashes:
        Identity → SHA-256 hex of its token. ``None`` disables the token layer (worker servers,
        whose callers are authenticated by certificate alone).
    insecure_dev:
        Plaintext development mode: the identity then comes from the token alone.
    """

    def __init__(
        self,
        rules: Mapping[str, MethodRule],
        token_hashes: Mapping[str, str] | None = None,
        *,
        insecure_dev: bool = False,
    ) -> None:
        self._rules = dict(rules)
        self._by_hash = {h: ident for ident, h in (token_hashes or {}).items()}
        self._tokens = token_hashes is not None
        self._insecure_dev = insecure_dev
        self.stats = AuthStats()

    def _token_identity(self, metadata: Mapping[str, str]) -> str | None:
        header = metadata.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        digest = hashlib.sha256(header[7:].encode()).hexdigest()
        for h, ident in self._by_hash.items():
            if hmac.compare_digest(h, digest):
                return ident
        return None

    def check(
        self, method: str, auth_context: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> tuple[grpc.StatusCode, str] | str:
        """Return the caller identity, or ``(code, details)`` when the call must be refused."""
        cert_identity = peer_identity(auth_context)
        token_identity = self._token_identity(metadata) if self._tokens else None
        if self._tokens and token_identity is None:
            return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token"
        if cert_identity is None:
            if not (self._insecure_dev and token_identity):
                return grpc.StatusCode.UNAUTHENTICATED, "no client certificate identity"
            cert_identity = token_identity
        if token_identity is not None and token_identity != cert_identity:
            return grpc.StatusCode.PERMISSION_DENIED, "token does not belong to this certificate"
        rule = self._rules.get(method)
        if rule is None or not rule(cert_identity):
            return grpc.StatusCode.PERMISSION_DENIED, f"identity may not call {method}"
        return cert_identity

    def identity_of(self, context: Any) -> str:
        """The caller identity of a call that passed :meth:`check` (certificate CN, or the
        token's identity in plaintext dev mode)."""
        ident = peer_identity(context.auth_context())
        if ident is None:
            md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            ident = self._token_identity(md)
        return ident or ""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Wrap the method handler so the check runs before the business handler."""
        handler = await continuation(handler_call_details)
        details: Any = handler_call_details
        method: str = details.method
        if handler is None:
            return None
        if method.startswith(HEALTH_PREFIX):
            return _wrap(handler, _no_guard)
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        return _wrap(handler, lambda ctx: self._guard(method, ctx, metadata))

    async def _guard(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], metadata: Mapping[str, str]
    ) -> None:
        verdict = self.check(method, context.auth_context(), metadata)
        if isinstance(verdict, tuple):
            self.stats.count(verdict[0])
            logger.info("refused %s: %s", method, verdict[0].name)
            await context.abort(verdict[0], verdict[1])


Guard = Callable[[Any], Awaitable[None]]


class _Malformed:
    """Stand-in for a request that failed to parse (turned into INVALID_ARGUMENT)."""


_MALFORMED = _Malformed()


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # grpc.aio reports an exception in a deserializer as UNKNOWN; a malformed request is the
    # caller's fault and must come back as INVALID_ARGUMENT (T17).
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _MALFORMED

    return parse


async def _check_request(request: Any, context: Any) -> None:
    if request is _MALFORMED:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request message")


async def _checked(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
    async for item in request_iterator:
        await _check_request(item, context)
        yield item


def _wrap(handler: Handler, guard: Guard) -> Handler:
    h: Any = handler
    deser = _safe(h.request_deserializer)
    if h.unary_unary is not None:
        inner_uu = h.unary_unary

        async def uu(request: Any, context: Any) -> Any:
            await guard(context)
            await _check_request(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(uu, deser, h.response_serializer)
    if h.unary_stream is not None:
        inner_us = h.unary_stream

        async def us(request: Any, context: Any) -> AsyncIterator[Any]:
            await guard(context)
            await _check_request(request, context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(us, deser, h.response_serializer)
    if h.stream_unary is not None:
        inner_su = h.stream_unary

        async def su(request_iterator: Any, context: Any) -> Any:
            await guard(context)
            return await inner_su(_checked(request_iterator, context), context)

        return grpc.stream_unary_rpc_method_handler(su, deser, h.response_serializer)
    inner_ss = h.stream_stream

    async def ss(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        await guard(context)
        async for item in inner_ss(_checked(request_iterator, context), context):
            yield item

    return grpc.stream_stream_rpc_method_handler(ss, deser, h.response_serializer)


async def _no_guard(context: Any) -> None:
    return None


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Per-call metadata carrying the token (the client attaches it to every call)."""
    return (("authorization", f"Bearer {token}"),)
