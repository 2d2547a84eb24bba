"""RULES H2 with the front process (``server/front.py``): a front that hangs
(SIGSTOP) holds the port answering nothing. Its back hears nothing from it for
SILENT_AFTER seconds and kills it, and the server stops as for a front that
died, giving up its lead: a standby takes over within H2's 10 seconds. Before,
only the back said it was alive, and a paused front's back went on renewing its
lease: the standby never took over."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import cast

import grpc
import pytest

from server.front import ALIVE_EVERY, LATE_LOOK, SILENT_AFTER, Back, Front
from server.ha.gate import Gate
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tessera_api.tessera.v1 import licensing_service_pb2_grpc
from tests.licensing_desk import Desk
from tests.support import (
    NOT_SERVING,
    SERVING,
    SecondsClock,
    ServerProcess,
    health,
    until_serving,
    wait_for,
)
from tests.test_front_process import FLAG, ended, front_pid, when_logged

pytestmark = pytest.mark.timeout(120)


class StandInFront:
    """The front process as ``Back.look`` sees it: a pid, and a kill that is counted."""

    pid = 4242

    def __init__(self) -> None:
        self.kills = 0

    def kill(self) -> None:
        self.kills += 1


def _back(clock: SecondsClock) -> tuple[Back, StandInFront]:
    back = Back(cast(Gate, object()), now=clock)  # it runs no call here
    process = StandInFront()
    back._process = process  # type: ignore[assignment]
    return back, process


def _looks(back: Back, clock: SecondsClock, seconds: float) -> None:
    """``seconds`` of the back's looks, each on time (every ALIVE_EVERY)."""
    for _ in range(round(seconds / ALIVE_EVERY)):
        clock.t += ALIVE_EVERY
        back.look()


async def test_h2_a_front_silent_for_silent_after_seconds_is_killed_by_its_back() -> None:
    clock = SecondsClock()
    back, front = _back(clock)
    _looks(back, clock, SILENT_AFTER)  # silent SILENT_AFTER seconds: not yet past it
    assert front.kills == 0
    back._on_batch([("alive",)])  # any frame: heard
    _looks(back, clock, SILENT_AFTER)
    back._on_batch([("cancel", 7)])  # a call's frame counts too
    _looks(back, clock, SILENT_AFTER)
    assert front.kills == 0
    _looks(back, clock, ALIVE_EVERY)  # past SILENT_AFTER
    assert (front.kills, back.killed) == (1, True)
    _looks(back, clock, 3 * ALIVE_EVERY)  # once: its link closes, and the server stops
    assert front.kills == 1


async def test_h2_a_back_whose_loop_was_held_reads_its_front_before_it_judges_it() -> None:
    """A back whose loop was held (a long load at its start) may look before it has
    read what the front sent meanwhile: a late look judges nothing, the next on time
    does, after the frames waiting in the socket are read."""
    clock = SecondsClock()
    back, front = _back(clock)
    clock.t += 10 * SILENT_AFTER  # the back's loop held, the front's frames unread
    back.look()
    assert front.kills == 0
    back._on_batch([("alive",), ("alive",)])  # read at the loop's next turn
    _looks(back, clock, SILENT_AFTER)
    assert front.kills == 0
    clock.t += LATE_LOOK + 0.1  # held again; then silent on an on-time look
    back.look()
    assert front.kills == 0
    _looks(back, clock, ALIVE_EVERY)
    assert front.kills == 1


async def test_h2_a_front_tells_its_back_it_runs() -> None:
    """Both ends of the link in this process, joined by a socket pair: the front's
    ("alive",) frames reach the back, which hears from it (and kills nothing)."""
    clock = SecondsClock()
    back, process = _back(clock)
    front = Front()
    loop = asyncio.get_running_loop()
    back_end, front_end = socket.socketpair()
    await loop.create_unix_connection(lambda: back.link, sock=back_end)
    await loop.create_unix_connection(lambda: front.link, sock=front_end)
    heard = asyncio.Event()
    on_batch = back.link.on_batch
    back.link.on_batch = lambda batch: (on_batch(batch), heard.set())  # type: ignore[assignment,func-returns-value]
    saying = asyncio.ensure_future(front.say_alive())
    try:
        clock.t += SILENT_AFTER + ALIVE_EVERY
        await asyncio.wait_for(heard.wait(), 10)
        assert back.heard == clock.t
        back.look()
        assert process.kills == 0
    finally:
        saying.cancel()
        for link in (front.link, back.link):
            if link.transport is not None:
                link.transport.close()


def _resume(pid: int) -> None:
    """A front this test paused goes on (and ends with its server), if it still runs."""
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_h2_a_paused_front_is_killed_by_its_back_and_the_server_stops(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "t.db", extra=[FLAG]).start()
    pid = 0
    try:
        asyncio.run(until_serving(server.target))
        pid = front_pid(server)
        os.kill(pid, signal.SIGSTOP)
        assert server.wait(30) == 1  # stopped, with an error, for a supervisor to restart
        assert ended(pid)
        events = [line.get("event") for line in server.lines]
        assert events.index("front_process_silent") < events.index("front_process_ended")
        (silent,) = [line for line in server.lines if line.get("event") == "front_process_silent"]
        assert silent["pid"] == pid and silent["seconds"] >= SILENT_AFTER
        assert events[-2:] == ["stopped", "stopped_on_error"]  # the store closed, then why
        # Said as it was: the server killed it, no stranger's signal.
        assert "(killed by the server: it answered nothing for 3 s)" in server.lines[-1]["error"]
    finally:
        _resume(pid)
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


def test_h2_a_standby_takes_over_within_10_s_from_an_active_whose_front_is_paused(
    pg_url: str, tmp_path: Path
) -> None:
    """RULES H2 with the default lease (5 s): the active's front paused, its back
    kills it and gives the lead up; the standby is SERVING within 10 seconds."""
    extra = [FLAG, "--leader-lease", "5"]
    ready = ("standby", "serving")
    active = ServerProcess(pg_url, extra=[*extra, "--node-id", "a"], ready=ready).start()
    standby = None
    pid = 0
    try:
        asyncio.run(until_serving(active.target))
        standby = ServerProcess(pg_url, extra=[*extra, "--node-id", "b"], ready=ready).start()
        assert health(standby.target) == NOT_SERVING
        pid = front_pid(active)
        os.kill(pid, signal.SIGSTOP)
        paused = time.monotonic()
        wait_for(standby.target, SERVING, timeout=10)
        took = time.monotonic() - paused
        assert took <= 10
        assert active.wait(30) == 1
        assert ended(pid)
        assert "front_process_silent" in [line.get("event") for line in active.lines]
    finally:
        _resume(pid)
        for server in (active, standby):
            if server is not None and server.proc is not None and server.proc.poll() is None:
                server.kill()


def _fill(path: str) -> None:
    """Fill the pipe at ``path`` (one end of it, opened anew so that not blocking is
    this test's alone) with log-shaped lines until it takes no more."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b'{"event": "filler"}\n')
    finally:
        os.close(fd)


def test_front_process_a_log_reader_that_pauses_holds_the_server_and_never_ends_it(
    tmp_path: Path,
) -> None:
    """The server's output is a pipe whose reader (journald, a container's log
    driver, `| tee`) pauses while its front sheds calls. The front wrote its
    `overloaded` line itself, blocked on the full pipe, and its back, serving
    Heartbeats (which log nothing), took it for hung after SILENT_AFTER, killed it
    and stopped the server. The front's lines now go through its back, so it is
    the back that waits for the reader, as a server in one process does, and
    the two go on together once the reader reads again."""
    server = ServerProcess(
        tmp_path / "t.db", extra=[FLAG, "--max-calls-in-flight", "1", "--user-rate-limit", "0"]
    ).start()
    try:
        assert server.proc is not None
        desk = Desk(server.target).sheet()
        desk.team("alpha", 100)
        ann = desk.user("alpha", "ann")
        session = lic.HeartbeatRequest(session_id=desk.entitle(ann)["session_id"])
        auth = (("authorization", f"Bearer {desk.keys[ann]}"),)
        desk.close()
        out = f"/proc/{server.proc.pid}/fd/1"
        server.pause_reading_after("paused")  # the reader pauses at the line written here
        with open(out, "wb") as pipe:
            pipe.write(b'{"event": "paused"}\n')
        when_logged(server, lambda x: x.get("event") == "paused")
        _fill(out)  # ... with its pipe full
        codes: set[str] = set()
        with grpc.insecure_channel(server.target) as channel:
            heartbeat = licensing_service_pb2_grpc.LicensingServiceStub(channel).Heartbeat
            until = time.monotonic() + SILENT_AFTER + 1.5
            while time.monotonic() < until:  # 20 at once, one place: the front sheds
                calls = [heartbeat.future(session, metadata=auth, timeout=2) for _ in range(20)]
                for call in calls:
                    codes.add(call.code().name)
    finally:
        server.reading.set()  # ... and reads again
    try:
        assert server.proc.poll() is None, "the server stopped"
        asyncio.run(until_serving(server.target))  # health answers again
        assert not [x for x in server.lines if str(x.get("event")).startswith("front_process_")]
        assert "RESOURCE_EXHAUSTED" in codes  # the front shed calls meanwhile
        (line, *_) = when_logged(server, lambda x: x.get("event") == "overloaded")
        assert line["process"] == "front"
    finally:
        server.terminate()
