"""The portal under uvicorn, on a socket bound at once, in the caller's event loop.

``python -m server --http-listen`` serves it in the server's own loop beside gRPC: a page is
a few AdminService calls and a template, cheap next to what the loop already does, and one
loop means one start and one drain (the portal stops before gRPC drains), with no second
grpc.aio event loop in the process. ``python -m portal`` runs the same thing on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from client_sdk.transport import TLS
from portal.app import create_app

#: Seconds a connection has to send a request's head (its line and headers), first or
#: next: one that sends nothing, or part of a head, is closed then. uvicorn's own timer
#: starts only after a first answer, so such connections were kept for good, one of the
#: server's file descriptors each (``/metrics`` closes them after 10 s too).
REQUEST_SECONDS = 10.0


class _TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, whose connections must send each request's head
    whole within ``REQUEST_SECONDS`` of their start or of the last answer: its
    keep-alive timer, which uvicorn arms only after an answer and disarms at any
    byte received, is armed from the first moment and again after a part of a head
    (to the same deadline). A whole head disarms it, as in uvicorn."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_by = self.loop.time() + REQUEST_SECONDS
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and self.timeout_keep_alive_task is None:
            self._arm()  # part of a head: the rest by the same deadline

    def on_response_complete(self) -> None:
        self._head_by = self.loop.time() + REQUEST_SECONDS
        super().on_response_complete()  # arms uvicorn's keep-alive, a shorter wait

    def _arm(self) -> None:
        if not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_at(
                self._head_by, self.timeout_keep_alive_handler
            )


class _Embedded(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split(listen: str) -> tuple[str, int]:
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    bare = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    if "[" in bare or "]" in bare or (":" in bare and bare == host):
        raise ValueError(
            f"{listen!r}: an IPv6 address goes in brackets, before its port ([::1]:8080)"
        )
    return bare or "127.0.0.1", int(port)


def bind(listen: str) -> socket.socket:
    """A listening socket on ``host:port``; ``OSError`` says why not (e.g. in use)."""
    host, port = split(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class PortalServer:
    """The portal for ``target`` on ``listen``: bound at construction (a port in use is an
    ``OSError`` then), serving after ``start()``, drained by ``stop()``."""

    def __init__(self, target: str, listen: str, *, tls: TLS | bool = False) -> None:
        self.app: Starlette = create_app(target, tls=tls)
        self.socket = bind(listen)
        self.port: int = self.socket.getsockname()[1]
        host = split(listen)[0]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
            http=_TimedH11,
        )
        self._server = _Embedded(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self.socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the portal stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._server.should_exit = True
            await task
        self.socket.close()
