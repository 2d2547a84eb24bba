"""Tessera behind a front process: what a second process gives a Heartbeat (issue 17).

The question this answers with a figure: would the throughput targets be had
if gRPC's work (HTTP/2, the call's dispatch) ran in one process and Tessera's
(the edge, the engine, the answer, the lease) in another? ``docs/scaling.md``
names this as what would get them; this measures it before anything is built.

``python -m benchmarks.split_server [python -m server flags...]`` runs:

- **the back**: a real Tessera (``TesseraServer``, the flags as given) that
  also listens on a Unix socket for calls handed over by the front, and runs
  each through the same handler gRPC would (the gate, the edge, the servicer,
  the engine; the request parsed and the answer serialized in this process)
  with a stand-in context, as ``benchmarks.in_process`` does;
- **the front**: a child process (``--front SOCKET``), a grpc.aio server
  mounted as the echo mounts its service (``benchmarks/echo_server.py``), whose
  handlers take each call's bytes and metadata, hand them to the back, and
  answer what comes back (its bytes, or its status).

Between the two, calls and answers travel in batches: everything one side
has to send in a turn of its event loop goes in one ``marshal``-encoded frame,
so a hand-over costs a fraction of a call.

It prints ``{"event": "serving", "port": FRONT, "direct_port": BACK,
"front_pid": PID}`` once both listen (``benchmarks.bench.Child`` reads the
first field): h2load calls the front; setting up (a user, a session) goes to
the back's own gRPC port. Tessera's log goes to ``DB.log``.

For measuring only: the front passes unary calls alone (no streams, no
deadlines, no cancellation) and health is the back's own. An answer comes back
as its bytes; a refusal as its code, details and trailing metadata.
``python -m benchmarks.h2load_heartbeat --split`` runs it beside the usual
two; ``python -m benchmarks.bench --split`` puts it under ``make bench``'s load
(``docs/performance.md``, "A second process").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import marshal
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from benchmarks.in_process import Details
from server import logs
from server.app import TesseraServer
from server.config import parse_args as server_args
from server.loops import loop_factory
from tessera_api.tessera.v1 import licensing_service_pb2

FRAME = struct.Struct(">I")
LICENSING = licensing_service_pb2.DESCRIPTOR.services_by_name["LicensingService"]
CODES = {code.value[0]: code for code in grpc.StatusCode}
UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]


class Link(asyncio.Protocol):
    """One end of the Unix socket: frames of marshalled lists of tuples, each
    side sending once a turn of its loop whatever it gathered in that turn."""

    def __init__(self, on_batch: Callable[[list[tuple[Any, ...]]], None]) -> None:
        self.on_batch = on_batch
        self.transport: asyncio.WriteTransport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._in = bytearray()
        self._out: list[tuple[Any, ...]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._in
        buf += data
        start = 0
        while len(buf) - start >= 4:
            (size,) = FRAME.unpack_from(buf, start)
            end = start + 4 + size
            if len(buf) < end:
                break
            # From our own other process alone: the socket is in a directory only
            # this user may enter (``back``). The view is let go before ``del``.
            with memoryview(buf) as view:
                batch = marshal.loads(view[start + 4 : end])  # noqa: S302
            self.on_batch(batch)
            start = end
        if start:
            del buf[:start]

    def send(self, item: tuple[Any, ...]) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(item)

    def _flush(self) -> None:
        body = marshal.dumps(self._out)
        self._out = []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(FRAME.pack(len(body)) + body)


# -- the back ------------------------------------------------------------------------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        super().__init__(details)
        self.code, self.details = code, details
        self.trailing = tuple((k, v) for k, v in trailing or ())


class Context:
    """What Tessera's handlers ask of grpc.aio's ServicerContext."""

    __slots__ = ("_code", "_metadata")

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing: Any = ()) -> None:
        self._code = code
        raise Aborted(code, details, trailing)


class Back:
    """Runs the calls the front hands over through the handlers gRPC would run."""

    def __init__(self, server: TesseraServer) -> None:
        self.gate = server.gate
        self.handlers: dict[str, Any] = {}
        self.link = Link(self.on_batch)
        self.running: set[asyncio.Task[None]] = set()

    def on_batch(self, batch: list[tuple[Any, ...]]) -> None:
        loop, running = asyncio.get_running_loop(), self.running
        for call_id, method, metadata, body in batch:
            task = loop.create_task(self.run(call_id, method, metadata, body))
            running.add(task)
            task.add_done_callback(running.discard)

    async def run(self, call_id: int, method: str, metadata: Any, body: bytes) -> None:
        handler: Any = self.handlers.get(method)
        if handler is None:
            handler = self.handlers[method] = await self.gate.intercept_service(
                _no_handler, Details(method)
            )
        if handler is None or handler.unary_unary is None:
            self.link.send((call_id, grpc.StatusCode.UNIMPLEMENTED.value[0], method, ()))
            return
        try:
            request = handler.request_deserializer(body)
            answer = await handler.unary_unary(request, Context(metadata))
            self.link.send((call_id, 0, "", handler.response_serializer(answer)))
        except Aborted as refused:
            self.link.send((call_id, refused.code.value[0], refused.details, refused.trailing))
        except Exception as exc:  # the front answers UNKNOWN, with what it was
            self.link.send((call_id, UNKNOWN, repr(exc), ()))


async def _no_handler(details: Any) -> None:
    return None


async def back(argv: list[str]) -> int:
    cfg = server_args(argv)
    private = Path(tempfile.mkdtemp(prefix="tessera-split-"))  # this user's alone (0700)
    socket_path = private / "back.sock"
    stdout = os.dup(1)
    log = open(str(cfg.db) + ".log", "wb")  # noqa: SIM115 - open for the run
    os.dup2(log.fileno(), 1)  # Tessera's log lines (logs.configure: stdout)
    logs.configure(cfg.log_format, cfg.log_level)
    server = TesseraServer(cfg)
    direct = await server.start()
    handover = Back(server)
    loop = asyncio.get_running_loop()
    listening = await loop.create_unix_server(lambda: handover.link, str(socket_path))
    front = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            *(sys.executable, "-m", "benchmarks.split_server", "--front", str(socket_path)),
            *("--event-loop", cfg.event_loop),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        first = json.loads(await loop.run_in_executor(None, _first_line, front))
        line = {
            "event": "serving",
            "port": first["port"],
            "direct_port": direct,
            "front_pid": front.pid,
        }
        os.write(stdout, (json.dumps(line) + "\n").encode())
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        front.terminate()
        front.wait(10)
        listening.close()
        await server.stop()
        shutil.rmtree(private, ignore_errors=True)


def _first_line(process: subprocess.Popen[bytes]) -> bytes:
    return process.stdout.readline() if process.stdout is not None else b"{}"


# -- the front -----------------------------------------------------------------------


class Front(grpc.GenericRpcHandler):
    """Hands every call to the back and answers what comes back."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[tuple[int, str, Any]]] = {}
        self.ids = itertools.count()
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.link = Link(self.on_batch)

    def on_batch(self, batch: list[tuple[Any, ...]]) -> None:
        waiting = self.waiting
        for call_id, code, details, body in batch:
            future = waiting.pop(call_id, None)
            if future is not None and not future.done():
                future.set_result((code, details, body))

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        return self.handler(details.method)

    def handler(self, method: str) -> grpc.RpcMethodHandler[Any, Any]:
        made = self.handlers.get(method)
        if made is None:
            made = self.handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._forwarder(method)
            )
        return made

    def _forwarder(self, method: str) -> Callable[..., Any]:
        loop = asyncio.get_running_loop()
        waiting, ids, link = self.waiting, self.ids, self.link

        async def forward(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            call_id = next(ids)
            future: asyncio.Future[tuple[int, str, Any]] = loop.create_future()
            waiting[call_id] = future
            metadata = tuple((k, v) for k, v in context.invocation_metadata() or ())
            link.send((call_id, method, metadata, body))
            code, details, answer = await future  # an error: its trailing metadata
            if code:
                await context.abort(CODES.get(code, grpc.StatusCode.UNKNOWN), details, answer)
            return bytes(answer)

        return forward


async def front(socket_path: str) -> int:
    loop = asyncio.get_running_loop()
    handover = Front()
    await loop.create_unix_connection(lambda: handover.link, socket_path)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    # The licensing service mounted as the echo mounts it (generic and registered);
    # every other method through the catch-all.
    service = LICENSING.full_name
    handlers = {m.name: handover.handler(f"/{service}/{m.name}") for m in LICENSING.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
    server.add_generic_rpc_handlers((handover,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"event": "serving", "port": port}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait(
        [asyncio.ensure_future(stop.wait()), handover.link.closed],
        return_when=asyncio.FIRST_COMPLETED,
    )
    await server.stop(grace=1.0)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--front"]:
        loop_name = argv[3] if argv[2:3] == ["--event-loop"] else "asyncio"
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
            return runner.run(front(argv[1]))
    cfg = server_args(argv)
    with asyncio.Runner(loop_factory=loop_factory(cfg.event_loop)) as runner:
        return runner.run(back(argv))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
