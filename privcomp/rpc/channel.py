"""Channel and server factories: mTLS, keepalive, ping timeout, message limits (layer: rpc).

Every privcomp channel and server is built here, so the security-relevant options live in one
place (security.md §4):

* mutual TLS always; an insecure port only on loopback with an explicit development flag (R2);
* keepalive plus ``grpc.http2.ping_timeout_ms`` so a hung (SIGSTOPped) peer is detected in
  ``keepalive_time + ping_timeout`` instead of ~60 s (R4, measured in ``hang_probe.py``);
* explicit message limits: peer data travels in chunks of at most :data:`CHUNK_SIZE`, so a
  4 MiB receive cap is never reached by a legitimate message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from privcomp.errors import ConfigurationError
from privcomp.rpc.pki import Identity

CHUNK_SIZE = 1 << 20
MAX_MESSAGE_BYTES = 4 * (1 << 20)
#: Serialized chunk overhead is far below this; the receive cap leaves room for it.
Option = tuple[str, int | str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Keepalive:
    """Keepalive settings (milliseconds).

    The defaults detect a hung peer within ``time_ms + ping_timeout_ms`` = 15 s (T21 needs
    ≤ 20 s). Tests use smaller values.
    """

    time_ms: int = 10_000
    timeout_ms: int = 5_000
    ping_timeout_ms: int = 5_000


def client_options(keepalive: Keepalive | None = None) -> list[Option]:
    """Channel options: keepalive with ping timeout, message caps, no proxy."""
    ka = keepalive or Keepalive()
    return [
        ("grpc.keepalive_time_ms", ka.time_ms),
        ("grpc.keepalive_timeout_ms", ka.timeout_ms),
        ("grpc.http2.ping_timeout_ms", ka.ping_timeout_ms),  # internal arg; grpcio pinned
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_http_proxy", 0),
    ]


def server_options(keepalive: Keepalive | None = None) -> list[Option]:
    """Server options matching :func:`client_options` (clients may ping as often as we do)."""
    ka = keepalive or Keepalive()
    return [
        ("grpc.keepalive_time_ms", ka.time_ms),
        ("grpc.keepalive_timeout_ms", ka.timeout_ms),
        ("grpc.http2.ping_timeout_ms", ka.ping_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min(ka.time_ms, 1000)),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


def peer_options(party: str) -> list[Option]:
    """Options of a channel to ``party``'s worker: its certificate must name ``party``.

    Hostname verification would accept *any* federation certificate valid for the address
    (every development certificate names 127.0.0.1), e.g. the coordinator's at an address it
    advertised for a party; requiring the party name as the TLS target name refuses that
    server at the handshake, so shares only ever reach the intended party.
    """
    return [("grpc.ssl_target_name_override", party)]


def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """mTLS server credentials: our certificate, client certificates required from our CA."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=identity.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    """mTLS channel credentials presenting ``identity``'s certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 in brackets allowed)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"address {address!r} must be host:port")
    return host, int(port)


def add_port(
    server: grpc.aio.Server, address: str, identity: Identity | None, *, insecure_dev: bool = False
) -> int:
    """Bind ``address`` with mTLS (or, only on loopback with ``insecure_dev``, in plaintext).

    Returns
    -------
    int
        The bound port (useful with port 0).
    """
    host, _ = split_host(address)
    if identity is None:
        if not (insecure_dev and is_loopback(host)):
            raise ConfigurationError(
                "an insecure port needs a loopback address and the explicit development flag; "
                "pass certificates for anything else"
            )
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(identity))
    if port == 0:
        raise ConfigurationError(f"cannot bind {address} (port in use?)")
    return port


def aio_channel(
    address: str,
    identity: Identity | None,
    *,
    keepalive: Keepalive | None = None,
    insecure_dev: bool = False,
    extra_options: Sequence[Option] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``address`` with mTLS (plaintext only for loopback dev mode)."""
    opts = [*client_options(keepalive), *extra_options]
    icpt = list(interceptors) or None
    if identity is None:
        host, _ = split_host(address)
        if not (insecure_dev and is_loopback(host)):
            raise ConfigurationError("plaintext channels are only allowed to loopback in dev mode")
        return grpc.aio.insecure_channel(address, options=opts, interceptors=icpt)
    return grpc.aio.secure_channel(
        address, channel_credentials(identity), options=opts, interceptors=icpt
    )


def sync_channel(
    address: str,
    identity: Identity | None,
    *,
    keepalive: Keepalive | None = None,
    insecure_dev: bool = False,
) -> grpc.Channel:
    """A blocking channel (for the client façade and CLI) with the same options."""
    opts = client_options(keepalive)
    if identity is None:
        host, _ = split_host(address)
        if not (insecure_dev and is_loopback(host)):
            raise ConfigurationError("plaintext channels are only allowed to loopback in dev mode")
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, channel_credentials(identity), options=opts)


def peer_identity(auth_context: Mapping[str, Any]) -> str | None:
    """The certificate common name of the TLS peer, or None (plaintext / no certificate)."""
    names = list(auth_context.get("x509_common_name") or [])
    if len(names) != 1 or not isinstance(names[0], bytes):
        return None
    try:
        return names[0].decode()
    except UnicodeDecodeError:
        return None
