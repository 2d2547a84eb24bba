"""Issue 16, point 2: the edge binds the method, the request id and the user or
admin key to the call's log context (``logs.call_context``), so a line written
deeper in the call carries them; and it counts the call in the metrics."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars
from structlog.testing import capture_logs

from server.api.interceptors import EdgeInterceptor
from server.api.limits import RateLimits
from server.clock import SystemClock
from server.domain.changes import Changes
from server.domain.errors import InvalidArgument, RunningElsewhere
from server.engine.commits import Commits
from server.logs import LineWriter, call_context, lines_per_turn, merge_call_context
from server.metrics import Metrics
from tests.support import run_python

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tsa_operator-token-for-this-test"
KEY = "tsu_ann-key-for-this-test"
SECRET_KEY = "tsk_" + "Ab3" * 14  # shaped as a user key is (server/credentials.py)
PEER = "ipv4:127.0.0.1:50412"
deep = structlog.get_logger("deep")


class Context:
    """What the edge reads of a grpc.aio ServicerContext on a call that succeeds."""

    def __init__(self, secret: str, request_id: str) -> None:
        self.metadata = (("authorization", f"Bearer {secret}"), ("x-request-id", request_id))

    def invocation_metadata(self) -> Any:
        return self.metadata

    def peer(self) -> str:
        return PEER

    async def abort(self, code: grpc.StatusCode, details: str, trailers: Any = None) -> None:
        raise grpc.aio.AbortError(code, details)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


class NoServer:
    """The metrics' source: no engine, no store (only the calls are counted)."""

    engine = store = election = None
    front_pid = 0

    def is_active(self) -> bool:
        return True


class NoAdminKeys:
    def admin_caller(self, secret: str) -> None:
        return None


async def behave(request: Any, context: Any) -> str:
    deep.info("deep_in_the_engine")  # as the engine, the store or a timer would
    return "answer"


@pytest.fixture
def edge() -> Iterator[tuple[EdgeInterceptor, Metrics]]:
    metrics = Metrics(NoServer())
    interceptor = EdgeInterceptor(
        TOKEN,
        lambda secret: "ann@example.com" if secret == KEY else None,
        lookup=cast(Any, NoAdminKeys()),
        metrics=metrics,
        user_limits=RateLimits(1, 1),
    )
    yield interceptor, metrics
    clear_contextvars()


async def call(edge: EdgeInterceptor, method: str, secret: str, request_id: str) -> Any:
    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behave)

    handler: Any = await edge.intercept_service(continuation, cast(Any, Details(method)))
    return await handler.unary_unary(object(), Context(secret, request_id))


async def test_a_call_its_client_gave_up_is_logged_and_counted_cancelled_not_ok(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    """A client's deadline cancels the call's task: its line and its count said OK for
    a call never answered (a purchase never committed, found by a probe of the
    several-servers mode with PostgreSQL paused; any call goes through this edge)."""
    interceptor, metrics = edge
    started = asyncio.Event()

    async def waits(request: Any, context: Any) -> str:
        started.set()
        await asyncio.Event().wait()  # the store never answers
        return "never"

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(waits)

    method = "/tessera.v1.LicensingService/Entitle"
    handler: Any = await interceptor.intercept_service(continuation, cast(Any, Details(method)))
    with capture_logs() as lines:
        task = asyncio.ensure_future(handler.unary_unary(object(), Context(KEY, "po-9")))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [line] = [x for x in lines if x["event"] == "rpc"]
    assert (line["code"], line["request_id"]) == ("CANCELLED", "po-9")
    by_code = metrics.rpc(method).by_code
    assert by_code[grpc.StatusCode.CANCELLED].count == 1
    assert grpc.StatusCode.OK not in by_code or by_code[grpc.StatusCode.OK].count == 0


async def test_a_line_written_deeper_carries_the_method_request_id_and_user(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    interceptor, metrics = edge
    with capture_logs(processors=[merge_contextvars, merge_call_context]) as lines:
        assert await call(interceptor, "/tessera.v1.LicensingService/Heartbeat", KEY, "r-1") == (
            "answer"
        )
    [line] = [x for x in lines if x["event"] == "deep_in_the_engine"]
    assert line["method"] == "Heartbeat"
    assert line["request_id"] == "r-1"
    assert line["user_id"] == "ann@example.com"
    [answered] = [x for x in lines if x["event"] == "rpc"]
    assert answered["code"] == "OK" and "peer" not in answered  # the hot path's line
    calls = metrics.rpc("/tessera.v1.LicensingService/Heartbeat").by_code
    assert calls[grpc.StatusCode.OK].count == 1


async def test_ops_an_admin_calls_lines_carry_the_admin_who_made_it_and_no_user(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    interceptor, _ = edge
    with capture_logs(processors=[merge_contextvars, merge_call_context]) as lines:
        await call(interceptor, "/tessera.v1.AdminService/GetServerInfo", TOKEN, "r-2")
    [line] = [x for x in lines if x["event"] == "deep_in_the_engine"]
    assert (line["method"], line["request_id"], line["admin"]) == (
        "GetServerInfo",
        "r-2",
        "operator",
    )
    # Its own line names the admin alone: no user made it (it said "user_id": null).
    [own] = [x for x in lines if x["event"] == "rpc"]
    assert own["admin"] == "operator" and "user_id" not in own


async def test_the_admin_token_sent_as_request_id_is_not_bound(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    interceptor, _ = edge
    with capture_logs(processors=[merge_contextvars, merge_call_context]) as lines:
        await call(interceptor, "/tessera.v1.AdminService/GetServerInfo", TOKEN, TOKEN)
    [line] = [x for x in lines if x["event"] == "deep_in_the_engine"]
    assert TOKEN not in str(line)


async def test_rate_limited_calls_are_counted_by_credential_and_as_refusals(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    interceptor, metrics = edge  # one call a second per user key, one at once
    method = "/tessera.v1.LicensingService/Heartbeat"
    await call(interceptor, method, KEY, "r-3")
    with pytest.raises(grpc.aio.AbortError):
        await call(interceptor, method, KEY, "r-4")
    assert metrics.rate_limited == {"user": 1, "admin": 0}
    assert metrics.refusals == {"RATE_LIMITED": 1}
    by_code = metrics.rpc(method).by_code
    assert (
        by_code[grpc.StatusCode.OK].count,
        by_code[grpc.StatusCode.RESOURCE_EXHAUSTED].count,
    ) == (
        1,
        1,
    )


async def test_a_lines_own_value_wins_and_other_bound_keys_still_show(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    """The call's context fills in what a line does not say itself, beside what
    anything else bound with structlog's ``bind_contextvars``."""
    interceptor, _ = edge

    async def behave_own(request: Any, context: Any) -> str:
        bind_contextvars(phase="deep")
        deep.info("own_method", method="Mine")
        return "answer"

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behave_own)

    details = cast(Any, Details("/tessera.v1.LicensingService/Heartbeat"))
    handler: Any = await interceptor.intercept_service(continuation, details)
    with capture_logs(processors=[merge_contextvars, merge_call_context]) as lines:
        await handler.unary_unary(object(), Context(KEY, "r-5"))
    [line] = [x for x in lines if x["event"] == "own_method"]
    assert (line["method"], line["request_id"], line["user_id"], line["phase"]) == (
        "Mine",
        "r-5",
        "ann@example.com",
        "deep",
    )


async def test_a_refused_call_is_counted_and_logged_before_its_status_goes_out(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    """``abort`` sends the status before it raises: a client that scrapes the
    metrics or reads the log right after its error must find the call there."""
    interceptor, metrics = edge
    method = "/tessera.v1.LicensingService/Entitle"
    seen_at_abort: list[tuple[int, int]] = []

    class Watching(Context):
        async def abort(self, code: grpc.StatusCode, details: str, trailers: Any = None) -> None:
            counted = metrics.rpc(method).by_code.get(grpc.StatusCode.INVALID_ARGUMENT)
            logged = [x for x in lines if x["event"] == "rpc"]
            seen_at_abort.append((counted.count if counted else 0, len(logged)))
            raise grpc.aio.AbortError(code, details)

    async def refuse(request: Any, context: Any) -> str:
        raise InvalidArgument.field("product_id", "is required")

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(refuse)

    handler: Any = await interceptor.intercept_service(continuation, cast(Any, Details(method)))
    with capture_logs() as lines, pytest.raises(grpc.aio.AbortError):
        await handler.unary_unary(object(), Watching(KEY, "r-6"))
    assert seen_at_abort == [(1, 1)]


def test_ops_a_json_line_carries_its_instant_in_rfc3339_utc() -> None:
    """The JSON line's ``timestamp`` is written by orjson from a datetime (``logs.stamp_now``):
    the same RFC 3339 form in UTC, with a ``Z``, as structlog's ISO stamper wrote."""
    program = (
        "import structlog\n"
        "from server import logs\n"
        "logs.configure('json')\n"
        "structlog.get_logger().info('rpc', method='Heartbeat')\n"
    )
    before = SystemClock().now()
    done = run_python(program)
    after = SystemClock().now()
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["event"] == "rpc" and line["method"] == "Heartbeat" and line["level"] == "info"
    stamp = line["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp), stamp
    assert before <= datetime.fromisoformat(stamp) <= after


class Recording:
    """A binary file that keeps each write apart (what reached the system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


async def test_ops_the_lines_of_a_loop_turn_go_out_together_once_it_ends() -> None:
    """Issue 17: a JSON line written on the server's loop waits for the end of the
    turn it was written in, then goes out with that turn's other lines in one write;
    a line from another thread goes out at once, and every waiting line is out when
    the server's ``lines_per_turn`` ends."""
    file = Recording()
    writer = LineWriter.of(file)  # type: ignore[arg-type]
    writer.msg(b"before")  # no loop attached: at once
    assert file.writes == [b"before\n"]
    async with lines_per_turn():
        writer.msg(b"one")
        writer.info(b"two")
        assert file.writes == [b"before\n"]  # the turn goes on
        thread = threading.Thread(target=writer.msg, args=(b"elsewhere",))
        thread.start()
        thread.join()
        assert file.writes[1:] == [b"elsewhere\n"]
        await asyncio.sleep(0)  # the turn ends
        assert file.writes[2:] == [b"one\ntwo\n"]
        writer.msg(b"last")
    assert file.writes[3:] == [b"last\n"]  # written as the server ended
    writer.msg(b"after")
    assert file.writes[4:] == [b"after\n"]


async def test_a_refused_calls_line_names_its_reason_and_a_served_ones_has_none(
    edge: tuple[EdgeInterceptor, Metrics],
) -> None:
    """FAILED_PRECONDITION is RUNNING_ELSEWHERE, INSUFFICIENT_TOKENS or DEVICE_LIMIT
    (and more): a refused call's line says which (its ErrorInfo reason), so an
    incident can be read from the log; a call answered has no reason field.
    A refused call's line and an admin call's name the client's address (a key
    tried from where? a change made from where?); a session call answered, the
    hot path's line, does not (``test_a_line_written_deeper...``)."""
    interceptor, _ = edge

    async def refuses(request: Any, context: Any) -> str:
        raise RunningElsewhere("ACAD", "d-2")

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(refuses)

    method = "/tessera.v1.LicensingService/Entitle"
    handler: Any = await interceptor.intercept_service(continuation, cast(Any, Details(method)))
    with capture_logs() as lines:
        with pytest.raises(grpc.aio.AbortError):
            await handler.unary_unary(object(), Context(KEY, "e-1"))
        await call(interceptor, "/tessera.v1.AdminService/GetServerInfo", TOKEN, "r-2")
    refused, served = [x for x in lines if x["event"] == "rpc"]
    assert (refused["code"], refused["reason"]) == ("FAILED_PRECONDITION", "RUNNING_ELSEWHERE")
    assert served["code"] == "OK" and "reason" not in served
    assert refused["peer"] == served["peer"] == PEER


class HeldStore:
    """A store whose writes are queued at once and written once let go (a lock another
    process held), or fail then; a caller that stops waiting leaves its rows queued,
    as the real stores do."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()
        self.fails = False
        self.queued: list[object] = []
        self.committed: list[object] = []

    async def commit(self, changes: Changes) -> None:
        self.queued += changes.items
        await self.barrier()

    async def barrier(self) -> None:
        await self.let_go.wait()
        if self.fails:
            raise OSError("disk I/O error")
        self.committed += self.queued
        self.queued = []


@pytest.mark.parametrize("fails", [False, True], ids=["stored", "store-failed"])
async def test_ops_a_cancelled_calls_change_stored_all_the_same_says_so_with_its_request_id(
    fails: bool,
) -> None:
    """A purchase whose client gave up while its commit waited (a lock) is logged
    CANCELLED, and is still stored once the lock goes: one line, in the call's context,
    says so then; a store that fails stores nothing, and says nothing of the kind."""
    store = HeldStore()
    commits = Commits(cast(Any, store))
    with capture_logs(processors=[merge_call_context]) as lines:
        said = call_context.set((("method", "PurchaseTokens"), ("request_id", "po-late")))
        try:
            task = asyncio.ensure_future(commits.commit(Changes(["a pack"])))
        finally:
            call_context.reset(said)
        await asyncio.sleep(0)  # (a turn of the loop: the commit is queued in the store)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lines == [] and commits.committing  # still under way
        store.fails = fails
        store.let_go.set()
        await asyncio.gather(*commits._waiting)
    assert not commits.committing
    if fails:
        assert lines == [] and store.committed == []
    else:
        assert store.committed == ["a pack"]
        assert lines == [
            {
                "event": "cancelled_call_committed",
                "log_level": "info",
                "method": "PurchaseTokens",
                "request_id": "po-late",
            }
        ]


async def test_ops_a_timers_commit_cancelled_by_a_stop_is_no_cancelled_calls_line() -> None:
    """A deadline's commit (no call's: no method, no request id) whose task a stop
    cancelled is stored all the same, and says nothing of a cancelled call: the line
    that did came with neither of the fields the log's table names."""
    store = HeldStore()
    commits = Commits(cast(Any, store))
    with capture_logs(processors=[merge_call_context]) as lines:
        task = asyncio.ensure_future(commits.commit(Changes(["a grace's capture"])))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        store.let_go.set()
        await asyncio.gather(*commits._waiting)
    assert store.committed == ["a grace's capture"]
    assert lines == []


def test_ops_a_librarys_own_warning_is_a_json_line_of_the_server_not_bare_stderr() -> None:
    """uvicorn's "Invalid HTTP request received." (anyone who reaches the portal's port
    can write it), asyncio's, the SDK's inside the portal: through the standard
    library's logging, each is the server's JSON line on stdout, with its ``logger``,
    scrubbed as every line; its info lines stay out, as before."""
    program = (
        "import logging\n"
        "from server import logs\n"
        "logs.configure('json')\n"
        "logs.configure('json')  # again: still one line each\n"
        "logging.getLogger('uvicorn.error').warning('Invalid HTTP request received.')\n"
        "logging.getLogger('uvicorn.error').info('Started server process')\n"
        f"logging.getLogger('client_sdk').error('key %s refused', {SECRET_KEY!r})\n"
    )
    done = run_python(program)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(x["event"], x["level"], x["logger"]) for x in lines] == [
        ("Invalid HTTP request received.", "warning", "uvicorn.error"),
        (lines[1]["event"], "error", "client_sdk"),
    ]
    assert SECRET_KEY not in done.stdout and lines[1]["event"].startswith("key ")


def test_ops_a_librarys_own_level_is_written_at_the_standard_level_below_it() -> None:
    """A library's level of its own (35, "NOTICE"; 60) reached structlog, which knows
    the five standard ones alone: a KeyError out of the library's own log call, which
    stopped what it was doing. It is written at the standard level below it."""
    program = (
        "import logging\n"
        "from server import logs\n"
        "logs.configure('json')\n"
        "logging.addLevelName(35, 'NOTICE')\n"
        "logging.getLogger('somelib').log(35, 'a notice of its own')\n"
        "logging.getLogger('somelib').log(60, 'past critical')\n"
        'print(\'{"event": "the library went on"}\')\n'
    )
    done = run_python(program)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(x["event"], x.get("level")) for x in lines] == [
        ("a notice of its own", "warning"),
        ("past critical", "critical"),
        ("the library went on", None),
    ]
