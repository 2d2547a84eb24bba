"""``--front-process`` (``server/front.py``): gRPC's work in a second process.

Through the front a client gets what the server answers: sessions with the
server's signed leases, refusals with their code, details and ErrorInfo,
health and reflection (issue 17). The two processes start, stop and fail
together: SIGTERM stops both cleanly; a front that dies stops the server with
an error; a server that dies ends its front. (A port in use is refused in
one line before the database is touched: ``tests/test_startup.py``, H4.8b.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.request import urlopen

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from structlog.testing import capture_logs

from benchmarks.h2load_heartbeat import open_session
from client_sdk import errors as sdk_errors
from client_sdk.failover import _not_done
from client_sdk.leases import keys_from_response, verify_lease
from server import config
from server import front as front_module
from server.config import Config
from server.front import SILENT_AFTER, Back, Front
from server.ha.gate import Gate
from server.listen import SERVICE_NAMES, StartRefused
from tessera_api.tessera.v1 import common_pb2, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tests.grpcurl import Grpcurl
from tests.support import (
    ADMIN_TOKEN,
    NOT_SERVING,
    SERVING,
    T0,
    SecondsClock,
    ServerProcess,
    health,
    instant,
    until_serving,
    wait_for,
)
from tests.test_startup import given_up_at_start, spawn_server

FLAG = "--front-process"


@pytest.fixture
def front(database: Path | str) -> Iterator[ServerProcess]:
    """A server with ``--front-process``, on SQLite or PostgreSQL, serving (elected)."""
    server = ServerProcess(database, extra=[FLAG], ready=("standby", "serving")).start()
    try:
        asyncio.run(until_serving(server.target))  # health, watched through the front
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.terminate()


def front_pid(server: ServerProcess) -> int:
    """The server's one child process: its front."""
    (child,) = children(server)
    assert is_front(child)
    return int(child)


def ended(pid: int, timeout: float = 30) -> bool:
    """Whether process ``pid`` has ended, waiting up to ``timeout`` for it (a pidfd
    becomes readable when its process ends: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


async def _call(target: str, method: str, request: object, key: str) -> object:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = licensing_service_pb2_grpc.LicensingServiceStub(channel)
        answer: object = await getattr(stub, method)(
            request, metadata=(("authorization", f"Bearer {key}"),)
        )
        return answer


def when_logged(
    server: ServerProcess, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """The server's log lines that ``wanted`` picks, once there is one (its output
    is read by a thread of the test's)."""
    deadline = time.monotonic() + timeout
    while not (found := [x for x in list(server.lines) if wanted(x)]):
        assert time.monotonic() < deadline, "no such line logged"
        time.sleep(0.02)
    return found


def children(server: ServerProcess) -> list[str]:
    assert server.proc is not None
    pid = server.proc.pid
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def is_front(pid: str) -> bool:
    return b"server.front" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize(
    ("platform", "cores", "on"),
    [
        ("linux", {0}, False),
        ("linux", {0, 1}, True),
        ("linux", {3, 5, 7}, True),
        ("win32", {0, 1}, False),  # no Unix sockets for the link
    ],
)
def test_front_process_is_the_default_with_two_cores_and_unix_sockets(
    monkeypatch: pytest.MonkeyPatch, platform: str, cores: set[int], on: bool
) -> None:
    """With one core the two processes take turns and answer fewer calls than one
    (docs/performance.md); the cores counted are those this process may use."""
    monkeypatch.setattr(config.sys, "platform", platform)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: cores, raising=False)
    assert config.front_pays() is on


async def test_front_process_asked_for_without_unix_sockets_is_refused_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(front_module, "socket", types.SimpleNamespace())  # Windows' lacks it
    back = Back(cast(Gate, object()))  # refused before it hands over a call
    with pytest.raises(StartRefused) as refused:
        await back.open(Config(front_process=True))
    assert str(refused.value) == (
        "--front-process needs Unix sockets, which this platform lacks: "
        "start with --no-front-process"
    )


@pytest.mark.parametrize("flags", [(), ("--no-front-process",)], ids=["default", "off"])
def test_front_process_python_m_server_runs_one_by_default_where_it_pays(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    server = ServerProcess(tmp_path / "t.db", extra=list(flags)).start()
    try:
        fronts = [child for child in children(server) if is_front(child)]
        assert len(fronts) == (1 if config.front_pays() and not flags else 0)
    finally:
        assert server.terminate() == 0


def test_front_process_answers_what_the_server_answers(front: ServerProcess) -> None:
    key, body = asyncio.run(open_session(front.target, ADMIN_TOKEN))
    request = lic.HeartbeatRequest.FromString(body)
    answer = asyncio.run(_call(front.target, "Heartbeat", request, key))
    keys = asyncio.run(_call(front.target, "GetSigningKeys", lic.GetSigningKeysRequest(), key))
    assert isinstance(answer, lic.HeartbeatResponse)
    assert isinstance(keys, lic.GetSigningKeysResponse)
    session = answer.session
    assert session.session_id == request.session_id
    assert session.state == common_pb2.SESSION_STATE_ACTIVE
    # The lease is the server's: genuine and bound to this session (M7's offline check).
    lease = verify_lease(
        answer.lease,
        keys_from_response(keys),
        user_id=session.user_id,
        device_id=session.device_id,
        product_id=session.product_id,
        session_id=session.session_id,
        now=instant(T0),
    )
    assert lease.session_id == session.session_id

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(_call(front.target, "Heartbeat", lic.HeartbeatRequest(session_id="nope"), key))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert "'nope'" in (refused.value.details() or "")
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason) == ("tessera", "UNKNOWN_SESSION")
    # The refusal's log line, written by the server, names the client the front saw.
    [line] = when_logged(front, lambda x: x.get("event") == "rpc" and x["code"] == "NOT_FOUND")
    assert line["method"] == "Heartbeat" and line["peer"].startswith("ipv4:127.0.0.1:")

    with pytest.raises(grpc.aio.AioRpcError) as unknown_key:
        asyncio.run(_call(front.target, "Heartbeat", lic.HeartbeatRequest(), "wrong"))
    assert unknown_key.value.code() is grpc.StatusCode.UNAUTHENTICATED

    # Reflection is the front's own; the AdminService call behind it is the server's.
    c = Grpcurl(front.target, ADMIN_TOKEN)
    try:
        assert c("tessera.v1.AdminService/GetServerInfo", {})["now"] == "2026-01-01T00:00:00Z"
    finally:
        c.close()


def test_front_process_stops_with_the_server(front: ServerProcess) -> None:
    pid = front_pid(front)
    assert front.terminate() == 0
    assert ended(pid)
    events = [line.get("event") for line in front.lines]
    assert "draining" in events and events[-1] == "stopped"


def test_front_process_that_ends_stops_the_server_with_an_error(front: ServerProcess) -> None:
    os.kill(front_pid(front), signal.SIGKILL)
    assert front._reap(30) == 1
    events = [line.get("event") for line in front.lines]
    assert "front_process_ended" in events
    assert events[-2:] == ["stopped", "stopped_on_error"]  # the store closed, then why


def test_front_process_ends_with_its_server(front: ServerProcess) -> None:
    pid = front_pid(front)
    fd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3].decode()
    # The link is the socket pair's end the front inherited: no path to connect to.
    assert os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    front.kill()
    assert ended(pid)


def test_overload_the_front_s_refusals_are_logged_and_counted_by_the_server(
    tmp_path: Path,
) -> None:
    """Calls the front sheds (OVERLOADED: a back whose loop is held, here paused)
    are told as the server's own are: an ``overloaded`` line in the server's log
    (marked ``process: front``) and ``tessera_refusals_total{reason="OVERLOADED"}``
    in its metrics. The front's lines go to the server's own stdout: they went to
    a pipe the server read only the port from, where the lines of about eleven
    minutes of shedding filled it, the front's loop stopped at its next line, and
    the server, finding its front silent, killed it and stopped."""
    server = ServerProcess(
        tmp_path / "t.db",
        extra=[FLAG, "--max-calls-in-flight", "1", "--metrics-listen", "127.0.0.1:0"],
    ).start()
    try:
        assert server.proc is not None
        back, front = server.proc.pid, front_pid(server)
        assert os.readlink(f"/proc/{front}/fd/1") == os.readlink(f"/proc/{back}/fd/1")
        (serving,) = [x for x in server.lines if x.get("event") == "serving"]
        metrics = f"http://127.0.0.1:{serving['metrics_port']}/metrics"
        info = "/tessera.v1.AdminService/GetServerInfo"
        auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        with grpc.insecure_channel(server.target) as channel:
            call = channel.unary_unary(info)
            call(b"", metadata=auth, timeout=10)  # connected
            os.kill(back, signal.SIGSTOP)  # the back takes no call: the front holds one
            try:
                calls = [call.future(b"", metadata=auth, timeout=20) for _ in range(2)]
                done = asyncio.run(_first_done(calls))
                assert done.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the other is held
            finally:
                os.kill(back, signal.SIGCONT)
            assert [c.result() for c in calls if c is not done]  # answered once the back ran
        (line,) = when_logged(server, lambda x: x.get("event") == "overloaded")
        assert (line["process"], line["shed"], line["limit"]) == ("front", 1, 1)
        # Told to the back with the front's next "alive", a second later at most.
        counted = 'tessera_refusals_total{reason="OVERLOADED"} 1.0'
        deadline = time.monotonic() + 10
        while counted not in urlopen(metrics, timeout=5).read().decode():
            assert time.monotonic() < deadline, f"no {counted} in the server's metrics"
            time.sleep(0.05)
        assert server.proc.poll() is None
    finally:
        server.kill()


async def _first_done(calls: list[Any]) -> Any:
    """The first of ``calls`` (grpc futures) to end, waited for without polling."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[Any] = loop.create_future()
    for c in calls:
        c.add_done_callback(
            lambda done: loop.call_soon_threadsafe(lambda: first.done() or first.set_result(done))
        )
    return await asyncio.wait_for(first, 10)


def test_front_process_the_link_needs_no_file_so_a_long_tmpdir_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Unix socket's path holds at most 107 bytes: a socket file in a long TMPDIR
    refused the default start where one process started. The link is a socket
    pair: nothing is made in the temporary directory, whatever its length."""
    temporary = tmp_path / ("t" * max(1, 100 - len(str(tmp_path))))
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    server = ServerProcess(tmp_path / "t.db", extra=[FLAG]).start()
    try:
        asyncio.run(until_serving(server.target))
        assert list(temporary.iterdir()) == []
    finally:
        assert server.terminate() == 0


def test_front_process_a_sigterm_in_the_first_moment_ends_the_start_at_once(
    tmp_path: Path,
) -> None:
    """docs/api.md: a signal while the server is still starting gives the start up at
    once and exits 0. One that came while the front was still starting (before it
    said its port) waited for the front's start timeout and the grace (40 s): the
    front, holding no call yet, is ended at once."""
    proc = spawn_server(
        "--db", str(tmp_path / "t.db"), "--test-clock", T0, "--admin-token", ADMIN_TOKEN, FLAG
    )

    @contextlib.contextmanager
    def front_started() -> Iterator[None]:
        deadline = time.monotonic() + 30
        task = f"/proc/{proc.pid}/task/{proc.pid}/children"
        while not any(is_front(pid) for pid in Path(task).read_text().split()):
            assert time.monotonic() < deadline, "no front started"
            time.sleep(0.002)
        yield

    given_up_at_start(proc, front_started)


class _HoldingGate:
    """The gate's one method the back uses: every call waits for ever (until
    cancelled), counted in ``entered``."""

    def __init__(self) -> None:
        self.entered = 0
        self.cancelled = asyncio.Event()

    async def intercept_service(self, continuation: object, details: object) -> object:
        return grpc.unary_unary_rpc_method_handler(self._held)

    async def _held(self, request: bytes, context: object) -> bytes:
        self.entered += 1
        try:
            await asyncio.Event().wait()  # never answered
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""


@contextlib.asynccontextmanager
async def _front_and_back(front: Front, gate: object) -> Any:
    """``front`` behind a real grpc.aio server, linked to a back whose calls go to
    ``gate``, both in this process (joined by a socket pair); (back, a channel)."""
    loop = asyncio.get_running_loop()
    back = Back(cast(Gate, gate))
    back_end, front_end = socket.socketpair()
    await loop.create_unix_connection(lambda: back.link, sock=back_end)
    await loop.create_unix_connection(lambda: front.link, sock=front_end)
    server = grpc.aio.server()
    front.mount(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield back, channel
    finally:
        await server.stop(None)
        for link in (front.link, back.link):
            if link.transport is not None:
                link.transport.close()


async def test_front_process_holds_at_most_the_calls_in_flight_it_may_then_refuses_overloaded() -> (
    None
):
    """A back whose loop is held takes no call: its front took every call it was
    sent, without end. It holds at most ``--max-calls-in-flight`` for the back and
    refuses the next as the back would (OVERLOADED, a RetryInfo); a call that ends
    (here cancelled) gives its place back."""
    gate = _HoldingGate()
    async with _front_and_back(Front(max_calls=2), gate) as (_, channel):
        heartbeat = channel.unary_unary("/tessera.v1.LicensingService/Heartbeat")
        held = [heartbeat(b""), heartbeat(b"")]
        for _ in range(200):
            if gate.entered == 2:
                break
            await asyncio.sleep(0.01)
        assert gate.entered == 2
        refused = heartbeat(b"")
        assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, retry_after = _refusal(await rpc_status.aio.from_call(refused))
        assert (info.reason, retry_after) == ("OVERLOADED", 0.5)
        assert gate.entered == 2  # the back never saw it
        held[0].cancel()
        await asyncio.wait_for(gate.cancelled.wait(), 10)
        again = heartbeat(b"")
        for _ in range(200):
            if gate.entered == 3:
                break
            await asyncio.sleep(0.01)
        assert gate.entered == 3  # its place came back
        for call in (held[1], again):
            call.cancel()


def _refusal(status: Any) -> tuple[error_details_pb2.ErrorInfo, float]:
    """A refusal's ErrorInfo and its RetryInfo's delay in seconds."""
    assert status is not None, "a refusal with no details"
    details = {d.type_url.rsplit("/", 1)[-1]: d for d in status.details}
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    details["google.rpc.ErrorInfo"].Unpack(info)
    details["google.rpc.RetryInfo"].Unpack(retry)
    return info, retry.retry_delay.ToTimedelta().total_seconds()


async def test_front_process_a_call_while_its_server_is_silent_is_unavailable_at_once() -> None:
    """While the back is silent (its health NOT_SERVING), a call is answered
    UNAVAILABLE at once, never handed to a back that takes none. The refusal says
    so (reason NOT_SERVING, a RetryInfo of a second: the back's next sign of life),
    so the SDK knows nothing was done and sends it again, even a change without a
    request id, where a bare UNAVAILABLE would leave its outcome unknown. Once the
    back is heard again, calls go through. The silence and the calls refused in it
    are logged (``back_silent``, then ``back_heard`` with their count): nothing
    said so."""
    clock = SecondsClock()
    front, gate = Front(now=clock), _HoldingGate()
    async with _front_and_back(front, gate) as (_, channel):
        heartbeat = channel.unary_unary("/tessera.v1.LicensingService/Heartbeat")
        clock.t += SILENT_AFTER + 0.1
        with capture_logs() as silence:
            front.look()
        assert front.silent
        assert [(x["event"], x["silent_s"]) for x in silence] == [("back_silent", 3.1)]
        refused = heartbeat(b"")
        assert await refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "has not answered its front for over 3 s" in await refused.details()
        status = await rpc_status.aio.from_call(refused)
        info, retry_after = _refusal(status)
        assert (info.domain, info.reason, retry_after) == ("tessera", "NOT_SERVING", 1.0)
        assert info.metadata["silent_s"] == "3.1"
        said = await refused.details()
        error = sdk_errors.from_status(grpc.StatusCode.UNAVAILABLE, said or "", status)
        assert isinstance(error, sdk_errors.Unavailable) and error.retry_after == 1.0
        assert _not_done(error)  # the SDK's test for "nothing was done: send it again"
        assert gate.entered == 0
        clock.t += 0.9
        with capture_logs() as heard:
            front._on_batch([("alive",)])  # heard again
        assert [(x["event"], x["silent_s"], x["refused"]) for x in heard] == [
            ("back_heard", 4.0, 1)
        ]
        taken = heartbeat(b"")
        for _ in range(200):
            if gate.entered == 1:
                break
            await asyncio.sleep(0.01)
        assert gate.entered == 1
        taken.cancel()


async def test_front_process_a_call_its_client_cancels_is_cancelled_in_the_server() -> None:
    """As gRPC cancels a handler in one process when its client cancels (or its
    deadline passes), the front tells the back, which cancels the call: a client
    that gave up costs the server no more work. Both ends of the link in this
    process, joined by a socket pair; the front behind a real grpc.aio server."""
    gate = _HoldingGate()
    async with _front_and_back(Front(), gate) as (back, channel):
        call = channel.unary_unary("/tessera.v1.LicensingService/Heartbeat")(b"")
        for _ in range(1000):
            if back._calls:
                break
            await asyncio.sleep(0.01)
        (running,) = back._calls.values()  # the back runs it
        call.cancel()
        await asyncio.wait_for(gate.cancelled.wait(), 10)
        assert await call.code() == grpc.StatusCode.CANCELLED
        await asyncio.wait([running], timeout=10)
        assert running.cancelled()
        assert back._calls == {}  # let go of, as every call that ends


async def _status(front: Front, service: str = "") -> int:
    await asyncio.gather(*front._settings)  # the health settings under way
    answer = await front.health.Check(health_pb2.HealthCheckRequest(service=service), None)
    return int(answer.status)


async def test_front_process_reports_a_silent_server_not_serving_until_heard_again() -> None:
    """A server paused (SIGSTOP) or with its loop held sends nothing: after
    SILENT_AFTER seconds of that its front says NOT_SERVING, as one process in
    that state answers no health check; what the server set comes back with
    its next frame."""
    clock = SecondsClock()
    front = Front(now=clock)
    front._on_batch([("health", "", SERVING), ("health", SERVICE_NAMES[-1], SERVING)])
    assert await _status(front) == SERVING
    clock.t += SILENT_AFTER  # not yet past it
    front.look()
    assert await _status(front) == SERVING
    clock.t += 0.1
    front.look()
    assert front.silent
    assert await _status(front) == NOT_SERVING
    assert await _status(front, SERVICE_NAMES[-1]) == NOT_SERVING
    front._on_batch([("alive",)])
    assert not front.silent
    assert await _status(front) == SERVING
    assert await _status(front, SERVICE_NAMES[-1]) == SERVING
    # A server that went NOT_SERVING itself (a standby now) stays so when heard.
    front._on_batch([("health", "", NOT_SERVING)])
    clock.t += SILENT_AFTER + 1
    front.look()
    front._on_batch([("alive",)])
    assert await _status(front) == NOT_SERVING


def test_front_process_says_not_serving_while_its_server_is_paused(
    front: ServerProcess,
) -> None:
    assert front.proc is not None
    assert health(front.target) == SERVING
    os.kill(front.proc.pid, signal.SIGSTOP)
    try:
        wait_for(front.target, NOT_SERVING)  # when, the test above sets with its clock
    finally:
        os.kill(front.proc.pid, signal.SIGCONT)
    wait_for(front.target, SERVING)


def test_front_process_h1_a_draining_server_elected_stays_not_serving(pg_url: str) -> None:
    """docs/api.md: on SIGTERM the server says NOT_SERVING and goes on answering for
    --drain-delay seconds, then closes its port. A standby told to stop and elected
    during its drain (the active died meanwhile) said SERVING through its front, so
    a load balancer sent clients to a port about to close; one process stays
    NOT_SERVING (its health ignores a status set once shutting down)."""
    ready = ("standby", "serving")
    active = ServerProcess(pg_url, extra=[FLAG], ready=ready).start()
    standby = None
    try:
        asyncio.run(until_serving(active.target))
        standby = ServerProcess(pg_url, extra=[FLAG, "--drain-delay", "30"], ready=ready)
        standby.start()
        assert standby.proc is not None and health(standby.target) == NOT_SERVING
        standby.proc.send_signal(signal.SIGTERM)
        when_logged(standby, lambda line: line.get("event") == "not_serving")
        active.kill()  # its lease (2 s) runs out: the draining standby is elected
        when_logged(standby, lambda line: line.get("event") == "serving", timeout=30)
        seen = [health(standby.target) for _ in range(5)]
        assert seen == [NOT_SERVING] * 5
    finally:
        for server in (active, standby):
            if server is not None and server.proc is not None and server.proc.poll() is None:
                server.kill()


class _OpenTransport:
    """A link's transport still open (as the front's is when its loop closes at exit)."""

    def is_closing(self) -> bool:
        return False


def test_front_process_a_line_logged_once_its_loop_has_closed_is_written_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The front's lines go to the back over the link while its loop runs; once the
    loop has closed (the front ending, its link still open), a line logged on its
    thread or another is written by the front itself, never an exception into
    whoever logged (it was: "Event loop is closed")."""
    written: list[str | bytes] = []
    monkeypatch.setattr(front_module.logs, "write_line", written.append)
    loop = asyncio.new_event_loop()

    async def made() -> Front:
        return Front()

    front = loop.run_until_complete(made())
    front.link.transport = cast(asyncio.WriteTransport, _OpenTransport())
    loop.close()
    front.say_line(b'{"event": "here"}')
    elsewhere = threading.Thread(target=front.say_line, args=(b'{"event": "there"}',))
    elsewhere.start()
    elsewhere.join()
    assert written == [b'{"event": "here"}', b'{"event": "there"}']


def test_front_process_a_line_queued_as_the_back_goes_is_written_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line the front logs goes out with its turn's frame; if the back's end closes
    between the line and that frame (connection_lost), the line is written by the
    front itself, not dropped with the frame: it is often the one saying why."""
    written: list[str | bytes] = []
    monkeypatch.setattr(front_module.logs, "write_line", written.append)

    async def scenario() -> None:
        front = Front()
        front.link.transport = cast(asyncio.WriteTransport, _OpenTransport())
        front.say_line(b'{"event": "last words"}')
        front.link.send(("alive",))
        front.link.connection_lost(None)  # before the turn's flush
        await asyncio.sleep(0)  # the flush's turn

    asyncio.run(scenario())
    assert written == [b'{"event": "last words"}']
