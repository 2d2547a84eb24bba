"""The channel: plain or TLS, with reconnect settings fit for a product."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from client_sdk.clock import SystemClock

#: PEM as bytes, or the path of a PEM file (``str`` or ``Path``).
PemSource = bytes | str | PathLike[str]

#: gRPC reconnects with backoff when the server is away; these bound that backoff so that a
#: product notices within seconds that the server is back (its heartbeats resume then).
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 10_000),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


def bearer_secret(name: str, value: object) -> str:
    """A key or token as sent in ``authorization: Bearer <secret>``: surrounding whitespace
    (a newline read from a file) is dropped; anything else that is not printable ASCII
    could not go in that header (gRPC would fail every call with an error of its own), so
    it is refused here, a ``ValueError`` naming ``name`` and the character, never the
    secret."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    secret = value.strip()
    if not secret:
        raise ValueError(f"{name} is required")
    bad = next((ch for ch in secret if not "!" <= ch <= "~"), None)
    if bad is not None:
        raise ValueError(
            f"{name} holds {bad!r}, which cannot be sent in a header: a key is printable "
            "ASCII without spaces (was something else pasted with it?)"
        )
    return secret


def read_pem(source: PemSource | None) -> bytes | None:
    """PEM bytes as given, or read from a path; a ``str`` starting ``-----BEGIN`` is PEM."""
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    return Path(source).read_bytes()


@dataclass(frozen=True)
class TLS:
    """TLS to the server: its root CA (the system roots when None), and a client certificate
    and key for mutual TLS. Each is PEM bytes or a path. ``server_name`` overrides the name
    checked in the server's certificate (e.g. when dialling an IP address)."""

    root_ca: PemSource | None = None
    client_cert: PemSource | None = None
    client_key: PemSource | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC's credentials of these files, each checked first (a ``ValueError`` naming
        it): gRPC would take them, and every connection would then fail its handshake
        as a server that is down does ("Socket closed"), retried until the call's time
        is spent. So a root CA must hold a certificate, and a client certificate be
        valid now (the server checks it against the real time) and be its key's."""
        root = read_pem(self.root_ca)
        cert, key = read_pem(self.client_cert), read_pem(self.client_key)
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if root is not None:
            _certificates("root_ca", root)
        if cert is not None and key is not None:
            _a_valid_pair(cert, key)
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=cert
        )


#: The schemes of gRPC's own whose address is still ``host:port`` (``dns:///h:p``).
HOST_PORT_SCHEMES = ("dns:///", "dns:", "ipv4:", "ipv6:")
#: gRPC's resolvers whose targets are not ``host:port`` (a service's name, a vsock's CID).
_OTHER_RESOLVERS = ("xds:", "vsock:", "google-c2p:")


def target_problem(target: str) -> str | None:
    """What is wrong with ``target`` as ``host:port`` (None: nothing); gRPC itself takes
    a port past 65535 modulo 65536, and a missing or empty one as 443. One of gRPC's
    schemes may lead it (``dns:///``; ``ipv4:`` and ``ipv6:`` with a list of addresses,
    each checked); a Unix socket (``unix:PATH``) has no port, and the targets of gRPC's
    other resolvers (``xds:``, ``vsock:``) are theirs to read. The demo and
    ``python -m client_sdk.load`` check their targets with it."""
    if target.startswith(("unix:", "unix-abstract:")):
        return None if target.partition(":")[2] else "names no socket"
    if target.startswith(_OTHER_RESOLVERS):
        return None
    addresses = [target]
    for scheme in HOST_PORT_SCHEMES:
        if target.startswith(scheme):
            rest = target[len(scheme) :]
            addresses = rest.split(",") if scheme in ("ipv4:", "ipv6:") else [rest]
            break
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host.strip("[]"):
            return "must be host:port, such as 127.0.0.1:50051"
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            return "an IPv6 address goes in brackets, such as [::1]:50051"
        if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            return "its port must be a number from 1 to 65535"
    return None


def tls_problem(tls: TLS, names: Mapping[str, str]) -> str | None:
    """What keeps ``tls`` from being used (None: nothing), in the words of the tool that
    took its files: ``names`` maps ``root_ca``, ``client_cert`` and ``client_key`` to its
    flags (``{"root_ca": "--tls-ca"}``), so that a file it cannot read or use (one that
    holds no certificate, an expired one, a key that is not its certificate's) is named
    as its user gave it, once, at the tool's start, not a traceback when the channel is
    made: ``--tls-ca ca.pem holds no PEM certificate``."""
    given = {field: getattr(tls, field) for field in names}
    files = {
        field: str(source)
        for field, source in given.items()
        if isinstance(source, str | PathLike) and not str(source).lstrip().startswith("-----")
    }
    for field, path in files.items():
        try:
            read_pem(path)
        except OSError as exc:
            return f"{names[field]} {path}: {(exc.strerror or str(exc)).lower()}"
    try:
        tls.credentials()
    except ValueError as exc:
        text = str(exc)
        for field, flag in names.items():
            if text.startswith(field):  # "root_ca holds no ...": "--root-ca FILE holds no ..."
                shown = f" {files[field]}" if field in files else ""
                text = f"{flag}{shown}{text[len(field) :]}"
            text = re.sub(rf"\b{field}\b", flag, text)
        return text
    return None


def _certificates(name: str, pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ValueError(f"{name} holds no PEM certificate") from None


def _a_valid_pair(cert_pem: bytes, key_pem: bytes) -> None:
    cert = _certificates("client_cert", cert_pem)[0]
    now = SystemClock().now()  # what the server checks it against: the real time
    if cert.not_valid_after_utc < now:
        raise ValueError(
            f"client_cert expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: the server "
            "would refuse every connection; renew it"
        )
    if cert.not_valid_before_utc > now:
        raise ValueError(
            f"client_cert is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(or this machine's clock is behind)"
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):  # not a key, or one with a passphrase
        raise ValueError("client_key holds no unencrypted PEM private key") from None
    if _public(key.public_key()) != _public(cert.public_key()):
        raise ValueError("client_key is not the key of client_cert")


def _public(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def open_channel(
    target: str,
    tls: TLS | bool,
    options: Sequence[tuple[str, int | str]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel (call inside the event loop that will use it)."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(dict(options))
    if tls is False:
        return grpc.aio.insecure_channel(target, options=list(merged.items()))
    config = TLS() if tls is True else tls
    if config.server_name:
        merged["grpc.ssl_target_name_override"] = config.server_name
    return grpc.aio.secure_channel(target, config.credentials(), options=list(merged.items()))
