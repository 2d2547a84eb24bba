"""``--front-process``: gRPC's work in a process of its own (issue 17).

One process runs gRPC's HTTP/2 and every handler on one event loop, and that
loop is what limits a busy server (``docs/performance.md``). With
``--front-process`` the server starts a second one, **the front**
(``python -m server.front``, started and stopped by the server), which holds
the listen address (TLS included), answers health and reflection itself,
and hands every Tessera call to the server, **the back**, which runs it
through the same gate, edge, servicer and engine as a call of its own port.

The two talk over a pair of connected Unix sockets (``socket.socketpair``), the
front's end inherited by it alone: no path, nothing any other process could
connect to, and nothing left in the file system when both are killed. They talk
in batches: what one side has to send in a turn of its event loop goes as
one frame (a 4-byte length and a ``marshal``-encoded list of tuples), so a
call's hand-over costs a fraction of a call. A call goes as (id, method,
metadata, request bytes, the client's address); its answer comes back as (id, 0, "", answer
bytes) or, refused, as (id, code, details, trailing metadata): the client
sees the same status, details and ``ErrorInfo`` as from one process. A call
the client cancels (or whose deadline passes) before its answer is cancelled
in the back too (``("cancel", id)``), as gRPC cancels it in one process. The back
also tells the front its health (``("health", service, status)``), when to
take calls (``("start",)``) and when to stop (``("stop", grace)``). The front
tells the back the calls it refused itself (``("refused", [(method, reason,
n)...])``, with its next sign of life), which the back's metrics count as its
own refusals.

The front says its port (or why it could not bind) as one JSON line on a pipe
of its own. Its log lines (marked ``"process": "front"``) go to the back
(``("log", line)``), which writes them as its own: a log reader that pauses
holds the back, as it holds a server in one process, never the front, which
the back would take for hung after ``SILENT_AFTER`` and kill. (The front wrote
them to a pipe the back read only the port from: eleven minutes of shedding
filled it, and its next line stopped its loop for good.)

Each side says it is alive (``("alive",)``) every ``ALIVE_EVERY`` seconds.
A back the front has not heard from for ``SILENT_AFTER`` seconds (paused by
SIGSTOP, or its loop held) is reported ``NOT_SERVING`` by the front's health
until it is heard again, as a server in one process in that state answers no
health check at all: a load balancer takes it out either way. A front the back
has not heard from for ``SILENT_AFTER`` seconds (paused, or hung) is killed by
the back (SIGKILL), which then stops as for any front that ends (below): a hung
front holds the port answering nothing, and a back that went on renewing its
lease would keep a standby from taking over (RULES H2). Silence is judged from
the frames received, and only at a look that comes on time: a back whose own
loop was held (a long load at its start) may not have read what the front sent
meanwhile, so it looks again, a turn later, before it judges.

The front holds nothing but calls under way: every token, session and
write is the back's. So neither outlives the other: a front that ends stops
the back (an error, for a supervisor to restart both), and a back that ends
closes the socket, which ends the front. The front ignores SIGINT, SIGTERM
and SIGHUP: it stops when the back, draining, tells it to, after the calls
under way have their answers; in its last moment it refuses every call that
comes with a RetryInfo until gRPC's queue is empty, so that gRPC's stop cancels
none of them bare (``api/admission.py``, ``Closing``). A back told to stop before the front has said
its port (a signal in the server's first moment) ends the front at once: it
holds no call yet.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
import structlog
from grpc_health.v1 import health_pb2

from server import logs, loops
from server.api import reflection
from server.api.admission import Admission, Closing
from server.api.errors import NotServing, Overloaded, to_status
from server.api.health import Health
from server.clock import monotonic
from server.config import Config, parse_args
from server.ha.gate import SESSION_CALLS, Gate, GenericOnly
from server.listen import SERVICE_NAMES, SERVICES, StartRefused, bind, grpc_server

log = structlog.get_logger()

FRAME = struct.Struct(">I")
CODES = {code.value[0]: code for code in grpc.StatusCode}
UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
#: Seconds the back waits for the front to report its port, or to end once told to stop.
START_TIMEOUT = 30.0
#: Seconds between each side's "alive" frames, and between its looks at the other's.
ALIVE_EVERY = 1.0
#: Seconds of silence from the back after which the front reports it NOT_SERVING, and
#: from the front after which the back kills it.
SILENT_AFTER = 3.0
#: A look this many seconds after the last one came late: its loop was held, and what
#: the other side sent meanwhile may not be read yet (``Back.look``).
LATE_LOOK = 2 * ALIVE_EVERY
#: What a call is told while the back is silent (``Front.silent``): UNAVAILABLE, reason
#: NOT_SERVING, with a RetryInfo of ``ALIVE_EVERY`` (the back's next sign of life). The
#: call was not handed over, so the SDK sends it again then, to the same server.
SILENT = (
    f"the server has not answered its front for over {SILENT_AFTER:g} s (paused, or its "
    "loop held); nothing was done: try again in a moment, or another server"
)
#: The status code a refusal made by the front counts under, by its reason (metrics).
FRONT_REFUSALS = {
    "OVERLOADED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "NOT_SERVING": grpc.StatusCode.UNAVAILABLE,
}
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Link(asyncio.Protocol):
    """One end of the Unix socket: frames of marshalled lists of tuples, each
    side sending, once a turn of its loop, what it gathered in that turn."""

    def __init__(
        self,
        on_batch: Callable[[list[tuple[Any, ...]]], None],
        undelivered: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> None:
        """``undelivered``: given what a turn gathered once the other end is gone (the
        socket closed between the send and its turn's flush), else it is dropped."""
        self.on_batch = on_batch
        self.undelivered = undelivered
        self.transport: asyncio.WriteTransport | None = None
        # Kept: asyncio.get_running_loop() makes a getpid system call on each use
        # (Python 3.11), a place for the kernel to take the core away mid-call.
        loop = self._loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._in = bytearray()
        self._out: list[tuple[Any, ...]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
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
            # Only the other process of this server is at the other end: the socket
            # pair's other end is inherited by it alone (Back.open).
            batch = marshal.loads(bytes(buf[start + 4 : end]))  # noqa: S302
            start = end
            self.on_batch(batch)
        if start:
            del buf[:start]

    def send(self, item: tuple[Any, ...]) -> None:
        if not self._out:
            self._loop.call_soon(self.flush)
        self._out.append(item)

    def flush(self) -> None:
        if not self._out:
            return
        items, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            body = marshal.dumps(items)
            self.transport.write(FRAME.pack(len(body)) + body)
        elif self.undelivered is not None:
            self.undelivered(items)


# -- the back: the server's side ----------------------------------------------------


@dataclass
class CallDetails:
    """grpc.HandlerCallDetails: what the gate picks a handler by."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


class Refused(Exception):
    """A call refused: what ``CallContext.abort`` was given."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        super().__init__(details)
        self.code, self.details = code, details
        self.trailing = tuple((k, v) for k, v in trailing or ())


class CallContext:
    """What Tessera's handlers ask of grpc.aio's ServicerContext (the gate's,
    the edge's: the metadata, and abort with its code, details and trailers),
    for a call that comes from elsewhere than gRPC (the front; the in-process
    benchmark)."""

    __slots__ = ("_code", "_metadata", "_peer")

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], peer: str = "") -> None:
        self._metadata = metadata
        self._peer = peer
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        """The client's address as the front's gRPC saw it (``ipv4:127.0.0.1:50412``)."""
        return self._peer

    def code(self) -> grpc.StatusCode | None:
        return self._code

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing: Any = ()) -> None:
        self._code = code
        raise Refused(code, details, trailing)


async def _no_handler(details: Any) -> None:
    return None  # health and reflection are the front's


async def run_call(gate: Gate, method: str, body: bytes, context: CallContext) -> bytes | None:
    """``method``'s answer to the request ``body``, run as gRPC runs a call on the
    server's own port: the gate picks the handler, which parses the request,
    answers, and has its answer serialized. None when the gate has no such
    method; a refusal raises ``Refused`` (``CallContext.abort``)."""
    handler: Any = await gate.intercept_service(_no_handler, CallDetails(method))
    if handler is None or handler.unary_unary is None:
        return None
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    request = deserialize(body) if deserialize is not None else body
    answer = await handler.unary_unary(request, context)
    out: bytes = serialize(answer) if serialize is not None else answer
    return out


class Back:
    """The front process as the server sees it: started, handed calls, stopped.
    ``start()`` and ``stop(grace)`` as a grpc.aio server's, so the server holds
    either."""

    def __init__(self, gate: Gate, now: Callable[[], float] = monotonic) -> None:
        self.gate = gate
        self.link = Link(self._on_batch)
        self._loop = asyncio.get_running_loop()  # kept (see Link)
        self._now = now
        self.heard = now()  # when the front last sent anything
        self._looked = self.heard  # when this process last looked at that (look)
        self.killed = False  # silent for SILENT_AFTER: killed
        self.ended = self._loop.create_future()  # the front ended unasked
        self._process: subprocess.Popen[bytes] | None = None
        self._said: Any = None  # the pipe the front says its port on (open)
        self._calls: dict[int, asyncio.Task[None]] = {}  # under way, by call id
        self._stopping = False
        self._watch: asyncio.Future[None] | None = None
        self._alive: asyncio.Task[None] | None = None

    async def open(self, cfg: Config) -> int:
        """Start the front on ``cfg``'s listen address; its bound port. A front that
        cannot listen refuses the start with its reason; a start given up (a signal
        in the server's first moment) ends the front at once."""
        if not hasattr(socket, "AF_UNIX"):
            raise StartRefused(
                "--front-process needs Unix sockets, which this platform lacks: "
                "start with --no-front-process"
            )
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The front says its port (or why it has none) on a pipe of its own; its log
        # lines come over the link (``Front.say_line``), its stdout and stderr are ours.
        said_r, said_w = os.pipe()
        try:
            await loop.create_unix_connection(lambda: self.link, sock=ours)
            self._process = subprocess.Popen(  # noqa: S603 - this interpreter, our module
                [
                    sys.executable,
                    "-m",
                    "server.front",
                    str(theirs.fileno()),
                    str(said_w),
                    *front_flags(cfg),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), said_w),
            )
        except BaseException:
            ours.close()
            os.close(said_r)
            raise
        finally:
            theirs.close()  # the front's now: the link ends when the front does
            os.close(said_w)
        self._said = os.fdopen(said_r, "rb")
        try:
            first = await asyncio.wait_for(
                loop.run_in_executor(None, self._first_line), START_TIMEOUT
            )
            said = json.loads(first or b'{"error": "the front process ended at its start"}')
        except (TimeoutError, ValueError):
            said = {"error": f"the front process did not start within {START_TIMEOUT:g} s"}
        except BaseException:  # given up: the front holds no call yet
            await asyncio.shield(self._end_at_start())
            raise
        if "port" not in said:
            await self._end_at_start()  # ended already, or hung
            raise StartRefused(str(said.get("error")))
        self.link.closed.add_done_callback(self._closed)
        self.heard = self._looked = self._now()
        self._alive = loop.create_task(self._say_alive(), name="front-alive")
        return int(said["port"])

    async def _end_at_start(self) -> None:
        if self._process is not None:
            self._process.kill()
            await self._reap()
        if self.link.transport is not None:
            self.link.transport.close()

    async def _say_alive(self) -> None:
        """Tell the front this process still runs its loop, and see that the front
        still runs its own (``SILENT_AFTER``)."""
        while True:
            self.link.send(("alive",))
            await asyncio.sleep(ALIVE_EVERY)
            self.look()

    def look(self) -> None:
        """Kill the front once it has sent nothing for ``SILENT_AFTER`` seconds: the
        link then closes, and the server stops (``ended``). A look that comes late
        (``LATE_LOOK``: this loop was held) judges nothing: what the front sent
        meanwhile may wait unread in the socket, and is read before the next."""
        now = self._now()
        late = now - self._looked > LATE_LOOK
        self._looked = now
        if late or self.killed or self._stopping or now - self.heard <= SILENT_AFTER:
            return
        process = self._process
        if process is None:
            return
        self.killed = True
        log.error("front_process_silent", seconds=round(now - self.heard, 1), pid=process.pid)
        process.kill()

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    def _first_line(self) -> bytes:
        return self._said.readline() if self._said is not None else b""

    def _closed(self, _: object) -> None:
        if self._alive is not None:
            self._alive.cancel()
        if not self._stopping:
            self._watch = asyncio.ensure_future(self._end())

    async def _end(self) -> None:
        """The front's exit code, once it has one (killed if it hangs on)."""
        code = await self._reap()
        if not self.ended.done():
            self.ended.set_result(code)

    async def start(self) -> None:
        """The front takes calls from now on."""
        self.link.send(("start",))

    def health(self, status: int) -> None:
        """The front's health, for the server and each of its services."""
        for service in ("", *SERVICE_NAMES):
            self.link.send(("health", service, status))

    async def stop(self, grace: float) -> None:
        """The front stops taking calls, gives those under way ``grace`` seconds to
        be answered, and ends."""
        self._stopping = True
        if self._alive is not None:
            self._alive.cancel()
        self.link.send(("stop", grace))
        self.link.flush()
        await self._reap(grace + START_TIMEOUT)
        if self._calls:  # answered, or not, the front is gone: let them end
            await asyncio.wait(list(self._calls.values()), timeout=grace)
        if self.link.transport is not None:
            self.link.transport.close()

    async def _reap(self, timeout: float = START_TIMEOUT) -> int | None:
        """Wait for the front to end (killed past ``timeout``); its exit code."""
        process = self._process
        if process is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            code = await loop.run_in_executor(None, process.wait, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = await loop.run_in_executor(None, process.wait)
        if self._said is not None:
            self._said.close()
        return code

    def _on_batch(self, batch: list[tuple[Any, ...]]) -> None:
        self.heard = self._now()  # any frame says the front runs
        loop, calls = self._loop, self._calls
        for item in batch:
            if type(item[0]) is int:
                call_id, method, metadata, body, peer = item
                calls[call_id] = loop.create_task(self._run(call_id, method, metadata, body, peer))
            elif item[0] == "cancel":  # its client gave up: as gRPC would, cancel it
                cancelled = calls.pop(item[1], None)  # one not yet begun never ends itself
                if cancelled is not None:
                    cancelled.cancel()
            elif item[0] == "refused":
                self._count_refused(item[1])
            elif item[0] == "log":  # one of the front's log lines
                logs.write_line(item[1])
            # ("alive",): heard, as every frame

    def _count_refused(self, refused: Iterable[tuple[str, str, int]]) -> None:
        """Count the calls the front refused itself, by method and reason, as the edge
        counts its own refusals (they never reached it)."""
        metrics = self.gate.metrics
        if metrics is None:
            return
        for method, reason, n in refused:
            code = FRONT_REFUSALS.get(reason, grpc.StatusCode.UNAVAILABLE)
            calls = metrics.rpc(method)
            for _ in range(n):
                metrics.refused(reason, "none")
                calls.observe(code, 0.0)

    async def _run(self, call_id: int, method: str, metadata: Any, body: bytes, peer: str) -> None:
        """One call, as gRPC would run it on the server's own port."""
        send = self.link.send
        try:
            answer = await run_call(self.gate, method, body, CallContext(metadata, peer))
            if answer is None:
                send((call_id, UNIMPLEMENTED, f"no method {method}", ()))
            else:
                send((call_id, 0, "", answer))
        except Refused as refused:
            send((call_id, refused.code.value[0], refused.details, refused.trailing))
        except Exception:  # the edge answers every failure itself: this is a bug
            log.exception("front_call_failed", method=method)
            send((call_id, UNKNOWN, "the call failed in the server", ()))
        finally:  # here, not in a done callback: one loop callback fewer a call
            self._calls.pop(call_id, None)


def front_flags(cfg: Config) -> list[str]:
    """The settings the front needs, as the server's own flags."""
    flags = ["--listen", cfg.listen, "--max-message-bytes", str(cfg.max_message_bytes)]
    flags += ["--event-loop", cfg.event_loop]
    flags += ["--max-calls-in-flight", str(cfg.max_calls_in_flight)]
    flags += ["--max-connection-age", repr(cfg.max_connection_age)]
    flags += ["--log-format", cfg.log_format, "--log-level", cfg.log_level]
    for flag, path in (
        ("--tls-cert", cfg.tls_cert),
        ("--tls-key", cfg.tls_key),
        ("--tls-client-ca", cfg.tls_client_ca),
    ):
        if path is not None:
            flags += [flag, str(path)]
    return flags


# -- the front: python -m server.front FD [server flags] ------------------------------


class Front(grpc.GenericRpcHandler):
    """Hands every Tessera call to the back and answers what comes back."""

    def __init__(self, now: Callable[[], float] = monotonic, max_calls: int = 0) -> None:
        """``max_calls``: the calls it holds for the back at once (``--max-calls-in-flight``;
        0: no limit)."""
        self.link = Link(self._on_batch, undelivered=_write_lines)
        self.health = Health()
        # Calls waiting for the back: at most the server's own limit, so that a back
        # whose loop is held (or paused) does not leave the front taking calls without
        # end; the next is refused as the back refuses one (OVERLOADED, RetryInfo).
        self.admission = Admission(max_calls)
        # Its stop: calls refused with a RetryInfo until gRPC's queue has emptied, so
        # that gRPC's own stop cancels none of them bare (``api/admission.py``).
        self.closing = Closing()
        #: Calls refused here, by method and reason, not yet told to the back (whose
        #: metrics count them: ``Back._count_refused``); sent with the next "alive".
        self.refused: Counter[tuple[str, str]] = Counter()
        self._now = now
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()  # the loop's
        self.heard = now()  # when the back last sent anything
        self.statuses: dict[str, int] = {}  # each service's health, as the back set it
        self.silent = False  # the back unheard for SILENT_AFTER: reported NOT_SERVING
        self.silent_refused = 0  # calls refused NOT_SERVING while silent (logged after)
        self.started = asyncio.Event()
        self.stopping: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting: dict[int, asyncio.Future[tuple[int, str, Any]]] = {}
        self._ids = itertools.count()
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._settings: set[asyncio.Task[None]] = set()

    def _on_batch(self, batch: list[tuple[Any, ...]]) -> None:
        now = self._now()
        if self.silent:
            self.silent = False
            log.warning(
                "back_heard",
                silent_s=round(now - self.heard, 1),
                refused=self.silent_refused,
                note="the server answers its front again: its health is back",
            )
            for service, status in self.statuses.items():
                self._set_health(service, status)
        self.heard = now
        waiting = self._waiting
        for item in batch:
            if type(item[0]) is int:
                future = waiting.pop(item[0], None)
                if future is not None and not future.done():
                    future.set_result(item[1:])
            elif item[0] == "health":
                self.statuses[item[1]] = item[2]
                self._set_health(item[1], item[2])
            elif item[0] == "start":
                self.started.set()
            elif item[0] == "stop" and not self.stopping.done():
                self.stopping.set_result(float(item[1]))

    def say_line(self, line: str | bytes) -> None:
        """One of this process's log lines (``logs.configure``'s sink), handed to the
        back, which writes it as its own (``logs.write_line``). A stdout whose reader
        pauses then holds the back, as it holds a server in one process, and never
        this loop: the back would take a front held that long for hung and kill it
        (``Back.look``), stopping the server. Written here once the back is gone."""
        transport = self.link.transport
        if transport is None or transport.is_closing() or self._loop.is_closed():
            logs.write_line(line)
        elif threading.get_ident() == self._thread:
            self.link.send(("log", line))
        else:
            try:
                self._loop.call_soon_threadsafe(self.link.send, ("log", line))
            except RuntimeError:  # the loop closed meanwhile
                logs.write_line(line)

    def _set_health(self, service: str, status: int) -> None:
        setting = asyncio.get_running_loop().create_task(self.health.set(service, status))
        self._settings.add(setting)
        setting.add_done_callback(self._settings.discard)

    def look(self) -> None:
        """Report every service NOT_SERVING once the back has been silent for
        ``SILENT_AFTER`` seconds; its next frame puts back what it had set."""
        if not self.silent and self._now() - self.heard > SILENT_AFTER:
            self.silent, self.silent_refused = True, 0
            log.warning(
                "back_silent",
                silent_s=round(self._now() - self.heard, 1),
                note="the server has not answered its front (paused, or its loop held): "
                "health NOT_SERVING, calls refused NOT_SERVING until it is heard",
            )
            for service in self.statuses:
                self._set_health(service, NOT_SERVING)

    async def say_alive(self) -> None:
        """Tell the back this process still runs its loop (a front silent for
        ``SILENT_AFTER`` seconds is killed by it: ``Back.look``), and, once it
        serves, see that the back still runs its own (``look``), as the back does."""
        while True:
            self.link.send(("alive",))
            if self.refused:
                self.link.send(("refused", [(*k, n) for k, n in self.refused.items()]))
                self.refused.clear()
            await asyncio.sleep(ALIVE_EVERY)
            if self.started.is_set():
                self.look()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(details.method)

    def mount(self, server: grpc.aio.Server) -> None:
        """Tessera's services as the server mounts them: every method generic, the
        session calls also registered, each with its own queue (``ha/gate.py``)."""
        for service in SERVICES:
            for method in service.methods:
                name = f"/{service.full_name}/{method.name}"
                self._handlers[name] = grpc.unary_unary_rpc_method_handler(self._forward(name))
        server.add_generic_rpc_handlers((self,))
        licensing = SERVICES[1].full_name
        registered = {m: self._handlers[f"/{licensing}/{m}"] for m in SESSION_CALLS}
        server.add_registered_method_handlers(licensing, registered)

    def _forward(self, method: str) -> Callable[..., Any]:
        loop = asyncio.get_running_loop()
        waiting, ids, link = self._waiting, self._ids, self.link

        admission = self.admission if self.admission.enabled else None
        refused_here = self.refused

        async def forward(body: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            refusal: NotServing | Overloaded | None = None
            if self.closing.on:  # the server stops: nothing is handed over any more
                refusal = self.closing.refusal()
            elif self.silent:  # its health says NOT_SERVING: a client waits, or goes elsewhere
                self.silent_refused += 1
                silent_for = round(self._now() - self.heard, 1)
                refusal = NotServing(SILENT, retry_after_seconds=ALIVE_EVERY, silent_s=silent_for)
            elif admission is not None:
                try:
                    admission.enter()
                except Overloaded as overloaded:
                    refusal = overloaded
            if refusal is not None:
                refused_here[(method, refusal.reason)] += 1
                status = to_status(refusal)
                await context.abort(status.code, status.details, status.trailing_metadata)
            call_id = next(ids)
            future: asyncio.Future[tuple[int, str, Any]] = loop.create_future()
            waiting[call_id] = future
            metadata = tuple((k, v) for k, v in context.invocation_metadata() or ())
            link.send((call_id, method, metadata, body, context.peer()))
            try:
                code, details, answer = await future  # refused: its trailing metadata
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed
                link.send(("cancel", call_id))  # one already answered is ignored
                raise
            finally:
                waiting.pop(call_id, None)
                if admission is not None:
                    admission.leave()
            if code:
                await context.abort(CODES.get(code, grpc.StatusCode.UNKNOWN), details, answer)
            return bytes(answer)

        return forward

    def fail_waiting(self) -> None:
        """The back is gone: what waits for it is answered UNAVAILABLE."""
        for future in self._waiting.values():
            if not future.done():
                future.set_result((grpc.StatusCode.UNAVAILABLE.value[0], "the server stopped", ()))


def _write_lines(items: list[tuple[Any, ...]]) -> None:
    """The front's log lines of a turn whose flush found the back gone: written here,
    as a line logged after that is (``Front.say_line``); the rest is for the back alone."""
    for item in items:
        if item[0] == "log":
            logs.write_line(item[1])


async def serve(fd: int, said: int, cfg: Config) -> int:
    """The front: ``fd``, its end of the link; ``said``, the pipe it says its port on."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the back decides when it stops
        loop.add_signal_handler(sig, lambda: None)
    front = Front(max_calls=cfg.max_calls_in_flight)
    # Its lines go to the back, which writes them as its own, marked as the front's.
    logs.configure(cfg.log_format, cfg.log_level, process="front", sink=front.say_line)
    # The socket pair's end the back left open for this process alone (Back.open).
    await loop.create_unix_connection(lambda: front.link, sock=socket.socket(fileno=fd))
    alive = asyncio.ensure_future(front.say_alive())
    server = grpc_server(cfg)
    # Mounted as server/app.py mounts it: generic, sharing the one queue (ha/gate.py).
    only_generic = cast(grpc.aio.Server, GenericOnly(server))  # a stand-in, by design
    reflection.add_health(front.health, only_generic)  # its requests parsed strictly
    reflection.enable(server, SERVICE_NAMES)
    front.mount(server)
    try:
        port = bind(server, cfg)
    except StartRefused as refused:
        alive.cancel()
        _say(said, {"error": str(refused)})
        return 1
    _say(said, {"port": port})
    started: asyncio.Future[Any] = asyncio.ensure_future(front.started.wait())
    ends: list[asyncio.Future[Any]] = [front.stopping, front.link.closed]
    await asyncio.wait([started, *ends], return_when=asyncio.FIRST_COMPLETED)
    if front.started.is_set():
        await server.start()
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    grace = front.stopping.result() if front.stopping.done() else 0.0
    if front.link.closed.done():
        front.fail_waiting()
    await front.closing.close()  # gRPC's queue emptied first: its stop would cancel those bare
    await front.health.close()  # its Watch streams end: the stop waits for none
    await server.stop(grace)
    alive.cancel()
    return 0 if front.stopping.done() else 1  # else the back is gone


def _say(fd: int, what: dict[str, Any]) -> None:
    """One JSON line on the pipe the back reads the front's start from, then closed."""
    with os.fdopen(fd, "wb") as said:
        said.write(json.dumps(what).encode() + b"\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m server.front LINK_FD SAID_FD [server flags]", file=sys.stderr)
        return 2
    cfg = parse_args(args[2:])
    with asyncio.Runner(loop_factory=loops.loop_factory(cfg.event_loop)) as runner:
        return runner.run(serve(int(args[0]), int(args[1]), cfg))


if __name__ == "__main__":
    sys.exit(main())
