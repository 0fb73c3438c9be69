"""Development PKI: a CA and certificates for the coordinator, each party and each analyst.

Identity = certificate common name (CN). Parties use their party name; analysts use
``analyst:<name>``; the coordinator uses ``coordinator``. Every leaf certificate carries the
SANs ``localhost`` and ``127.0.0.1`` so loopback deployments verify the server name.
Tokens for the coordinator's token layer are random 256-bit strings; the coordinator keeps only
their SHA-256 hashes (``tokens.json``).

This is a *development* CA (EC P-256, 1-year validity); production deployments bring their own.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from privcomp.errors import ConfigurationError

COORDINATOR_IDENTITY = "coordinator"
ANALYST_PREFIX = "analyst:"
TOKENS_FILE = "tokens.json"
#: Party names usable as a DNS SAN: a worker verifies that the server it sends shares to holds
#: the certificate of the party it means (see :func:`privcomp.rpc.channel.peer_options`).
PARTY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True, slots=True)
class Identity:
    """PEM material of one identity.

    Parameters
    ----------
    name:
        Certificate common name.
    key_pem, cert_pem, ca_pem:
        Private key, certificate and CA certificate (PEM bytes).
    token:
        Bearer token bound to this identity (empty if none was issued).
    """

    name: str
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes
    token: str = ""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _file_stem(identity: str) -> str:
    return identity.replace(":", "_")


def create_ca(common_name: str = "privcomp-dev-ca") -> tuple[bytes, bytes]:
    """Create a self-signed CA; returns ``(key_pem, cert_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    identity: str,
    *,
    days: int = 365,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> tuple[bytes, bytes]:
    """Issue a leaf certificate (client and server usage) for ``identity``.

    Returns
    -------
    tuple of bytes
        ``(key_pem, cert_pem)``.
    """
    if not identity or len(identity) > 64:
        raise ConfigurationError("identity must be 1 to 64 characters")
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("the CA key must be an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    # The identity itself is a SAN, so a peer can require it as the TLS target name (a server
    # at the right address with another identity's certificate is then refused).
    names = (*hosts, identity) if PARTY_NAME.fullmatch(identity) else hosts
    for h in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def token_hash(token: str) -> str:
    """SHA-256 hex digest of a token (what the coordinator stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def cert_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 fingerprint (hex) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def create_pki(directory: Path, parties: list[str], analysts: list[str]) -> dict[str, Identity]:
    """Create a CA and certificates + tokens for the coordinator, parties and analysts.

    Files written to ``directory``: ``ca.pem``, ``ca.key``, ``<identity>.pem``/``.key``/``.token``
    for every identity (``:`` replaced by ``_`` in file names) and ``tokens.json`` (identity →
    SHA-256 of its token) for the coordinator.

    Returns
    -------
    dict
        Identity name → :class:`Identity`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = create_ca()
    (directory / "ca.pem").write_bytes(ca_cert)
    _write_private(directory / "ca.key", ca_key)
    names = [COORDINATOR_IDENTITY, *parties, *(ANALYST_PREFIX + a for a in analysts)]
    if len(set(names)) != len(names):
        raise ConfigurationError("party and analyst names must be unique")
    # TLS name matching ignores case, and every certificate also names localhost.
    bad = [p for p in parties if not PARTY_NAME.fullmatch(p) or p.lower() == "localhost"]
    if bad:
        raise ConfigurationError(
            f"party names must match {PARTY_NAME.pattern} and not be 'localhost': {bad}"
        )
    if len({n.lower() for n in names}) != len(names):
        raise ConfigurationError("party names must be unique ignoring case")
    out: dict[str, Identity] = {}
    hashes_by_identity: dict[str, str] = {}
    for name in names:
        key, cert = issue(ca_key, ca_cert, name)
        token = secrets.token_urlsafe(32)
        stem = _file_stem(name)
        (directory / f"{stem}.pem").write_bytes(cert)
        _write_private(directory / f"{stem}.key", key)
        _write_private(directory / f"{stem}.token", token.encode())
        hashes_by_identity[name] = token_hash(token)
        out[name] = Identity(name=name, key_pem=key, cert_pem=cert, ca_pem=ca_cert, token=token)
    (directory / TOKENS_FILE).write_text(json.dumps(hashes_by_identity, indent=1, sort_keys=True))
    return out


def load_identity(directory: Path, identity: str) -> Identity:
    """Load one identity's PEM files and token written by :func:`create_pki`."""
    stem = _file_stem(identity)
    try:
        token_path = directory / f"{stem}.token"
        return Identity(
            name=identity,
            key_pem=(directory / f"{stem}.key").read_bytes(),
            cert_pem=(directory / f"{stem}.pem").read_bytes(),
            ca_pem=(directory / "ca.pem").read_bytes(),
            token=token_path.read_text().strip() if token_path.exists() else "",
        )
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"certificate files for {identity!r} not found in {directory} "
            "(create them with `privcomp certs`)"
        ) from exc


def load_token_hashes(directory: Path) -> dict[str, str]:
    """Load ``tokens.json`` (identity → token SHA-256)."""
    path = directory / TOKENS_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path} (create it with `privcomp certs`)") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigurationError(f"{path} must map identities to token hashes")
    return dict(data)
