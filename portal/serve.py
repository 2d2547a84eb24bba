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

import uvicorn
from starlette.applications import Starlette

from client_sdk.transport import TLS
from portal.app import create_app


class _Embedded(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split(listen: str) -> tuple[str, int]:
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:8080)")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


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
