"""Tessera's gRPC port: the server that listens on it, and binding it.

The same in both process models: the server's own port (``server/app.py``),
or the front process's with ``--front-process`` (``server/front.py``).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from server.api.admission import PENDING_CALLS
from server.clock import SystemClock
from server.config import Config, oserror_words, split_listen
from tessera_api.tessera.v1 import admin_service_pb2, licensing_service_pb2

#: Tessera's two services, as their descriptors (the front mounts each method).
SERVICES = (
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
    licensing_service_pb2.DESCRIPTOR.services_by_name["LicensingService"],
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


class StartRefused(Exception):
    """The server will not start as configured, or stops on its own (its front
    process gone, its database failing); the message says why and what to do."""


#: Calls one connection may have open at once (HTTP/2's MAX_CONCURRENT_STREAMS; gRPC
#: sets no limit): a gRPC client waits for a place past it. An answer the client does
#: not let through (its flow-control window kept shut) is held here once its handler
#: has returned, about 24 KB a call: one connection holds at most this many, where it
#: held as many as it opened (24 MB a thousand, with no credential: health checks).
#: ``make bench``'s and h2load's connections hold 16 and 64.
MAX_STREAMS = 1_000
#: gRPC's "overload protection", off. On (its default) a call counts against
#: ``MAX_STREAMS`` until gRPC has freed it, a moment after the client has its answer and
#: has sent the next call in its place: a client at the limit had calls refused
#: (REFUSED_STREAM: ``UNAVAILABLE``, "Stream removed") that the server never saw or
#: logged, 22 of 20,000 health checks at 1,000 in flight on one connection, 1,301 at
#: 2,000. Off, a call counts until its answer has gone: none refused, and a client
#: that lets no answer through still holds ``MAX_STREAMS`` calls at most (3,000 opened
#: with its window shut: 1,000 taken, 2,000 refused, both ways).
OVERLOAD_PROTECTION = 0


#: Seconds a connection's calls under way get once it is past ``--max-connection-age``: a
#: long admin call (a year's usage report) finishes within it.
CONNECTION_AGE_GRACE = 60.0


def age_grace(cfg: Config) -> float:
    """``CONNECTION_AGE_GRACE``, or the connection's age if shorter (a test's)."""
    return min(CONNECTION_AGE_GRACE, cfg.max_connection_age)


def grpc_server(cfg: Config, interceptors: Sequence[Any] = ()) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", MAX_STREAMS),
            ("grpc.http.overload_protection", OVERLOAD_PROTECTION),
            # A call whose request never comes (a stream opened and left: no credential
            # is read before the request) is held until its connection ends: these end
            # every connection in time (gRPC adds up to a tenth at random, so that its
            # clients do not all reconnect at once).
            ("grpc.max_connection_age_ms", round(cfg.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", round(age_grace(cfg) * 1000)),
            # Calls gRPC holds until the loop takes them: past these it cancels them
            # without a word (api/admission.py).
            ("grpc.server.max_pending_requests", PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        ],
    )


def _unavailable(listen: str) -> str | None:
    """Why ``listen`` cannot be bound (e.g. "address already in use"), or None.

    Asked with a plain socket before gRPC binds, so that a port in use is one
    clear line and not gRPC's error log: no address of the host binds, with
    SO_REUSEADDR as gRPC sets it."""
    try:
        host, port = split_listen(listen)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError) as exc:
        return str(exc)
    if port == 0:
        return None
    reason = "no address to bind"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                reason = oserror_words(exc)
                continue
        return None
    return reason


#: Bytes read of a TLS file at most: a PEM chain is a few kilobytes.
MAX_PEM_BYTES = 1024 * 1024


def _pem_file(flag: str, path: Path) -> bytes:
    """The bytes of ``flag``'s file, or why not, naming both (no such file, a
    directory, not readable, not a file of PEM's size)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise StartRefused(f"cannot read {flag} {path}: {oserror_words(exc)}") from exc
    if len(data) > MAX_PEM_BYTES:
        raise StartRefused(f"{flag} {path} is over {MAX_PEM_BYTES // 2**20} MiB: not a PEM file")
    return data


def _certificates(flag: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        if b"-----BEGIN CERTIFICATE-----" in data:
            raise StartRefused(f"{flag} {path}: a PEM certificate in it cannot be read") from exc
        raise StartRefused(
            f"{flag} {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from exc


def _private_key(path: Path, data: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise StartRefused(
            f"--tls-key {path} is encrypted: the server cannot ask for its passphrase; "
            "give it unencrypted, readable by its owner only"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise StartRefused(f"--tls-key {path} holds no PEM private key that can be read") from exc


def _public(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _in_its_dates(path: Path, cert: x509.Certificate) -> None:
    """Clients check the server's certificate against the real time: one outside its
    dates would fail every handshake while the server said it was serving."""
    now = SystemClock().now()  # the real time, whatever clock the data runs on
    if cert.not_valid_after_utc < now:
        raise StartRefused(
            f"--tls-cert {path} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: "
            "every client would refuse it; renew it"
        )
    if cert.not_valid_before_utc > now:
        raise StartRefused(
            f"--tls-cert {path} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC: clients would refuse it until then (or this machine's clock is behind)"
        )


def tls_credentials(cfg: Config) -> grpc.ServerCredentials | None:
    """``cfg``'s TLS files as gRPC's credentials (None: plaintext), each checked first:
    gRPC alone would log an error and fail to bind, which reads as a port not available.
    The chain's first certificate must be the key's, and the client CA file must hold
    a certificate."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    chain_pem = _pem_file("--tls-cert", cfg.tls_cert)
    key_pem = _pem_file("--tls-key", cfg.tls_key)
    client_ca = _pem_file("--tls-client-ca", cfg.tls_client_ca) if cfg.tls_client_ca else None
    chain = _certificates("--tls-cert", cfg.tls_cert, chain_pem)
    _in_its_dates(cfg.tls_cert, chain[0])
    key = _private_key(cfg.tls_key, key_pem)
    if _public(chain[0].public_key()) != _public(key.public_key()):
        raise StartRefused(
            f"--tls-key {cfg.tls_key} does not match --tls-cert {cfg.tls_cert} (the chain's "
            "first certificate is for another key)"
        )
    if cfg.tls_client_ca is not None and client_ca is not None:
        _certificates("--tls-client-ca", cfg.tls_client_ca, client_ca)
    return grpc.ssl_server_credentials(
        [(key_pem, chain_pem)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def grpc_address(listen: str) -> str:
    """``listen`` as gRPC is to bind it: no host (``:50051``) is 127.0.0.1, as
    for the probe, the banner and the advertised address."""
    if listen.rpartition(":")[0]:
        return listen
    return f"127.0.0.1:{split_listen(listen)[1]}"


def bind(server: grpc.aio.Server, cfg: Config) -> int:
    """Listen on ``cfg.listen`` (TLS if configured); the bound port. Bad TLS
    files refuse the start, saying which and why, before the port is tried."""
    credentials = tls_credentials(cfg)
    reason = _unavailable(cfg.listen)
    port = 0
    if reason is None:
        address = grpc_address(cfg.listen)
        try:
            if credentials is not None:
                port = server.add_secure_port(address, credentials)
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:  # gRPC's "Failed to bind": taken between the probe and now
            reason = "address not available"
    if port == 0:
        raise StartRefused(f"cannot listen on {cfg.listen}: {reason or 'address not available'}")
    return port
