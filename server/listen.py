"""Tessera's gRPC port: the server that listens on it, and binding it.

The same in both process models: the server's own port (``server/app.py``),
or the front process's with ``--front-process`` (``server/front.py``).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import grpc

from server.api.admission import PENDING_CALLS
from server.config import Config, split_listen
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


def grpc_server(cfg: Config, interceptors: Sequence[Any] = ()) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=list(interceptors) or None,
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
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
                reason = (exc.strerror or str(exc)).lower()
                continue
        return None
    return reason


def bind(server: grpc.aio.Server, cfg: Config) -> int:
    """Listen on ``cfg.listen`` (TLS if configured); the bound port."""
    reason = _unavailable(cfg.listen)
    port = 0
    if reason is None:
        try:
            if cfg.tls_cert is not None and cfg.tls_key is not None:
                client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                    root_certificates=client_ca,
                    require_client_auth=client_ca is not None,
                )
                port = server.add_secure_port(cfg.listen, credentials)
            else:
                port = server.add_insecure_port(cfg.listen)
        except RuntimeError:  # gRPC's "Failed to bind": taken between the probe and now
            reason = "address not available"
    if port == 0:
        raise StartRefused(f"cannot listen on {cfg.listen}: {reason or 'address not available'}")
    return port
