"""What an operator meets when starting the server (issue 12, points 7 and 8b):
the test clock's range checked before anything is opened, a port in use said
in one line before the database is touched, a database that keeps its clock
(test or real), and the admin token shown only when it was just made."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client_sdk.errors import TesseraError, from_rpc_error
from server.api.convert import MIN_TIME
from server.app import REAL_CLOCK_KEY, TesseraServer
from server.config import Config, parse_args, parse_instant, rfc3339
from server.engine.core import LATEST_TEST_CLOCK
from server.listen import StartRefused
from server.store.schema import MIGRATIONS
from tessera_api.tessera.v1 import licensing_service_pb2 as lic_pb2
from tessera_api.tessera.v1.licensing_service_pb2_grpc import LicensingServiceStub
from tests.grpcurl import Grpcurl
from tests.security.test_tamper_and_backup import _cli
from tests.support import (
    ADMIN_TOKEN,
    NOT_SERVING,
    REPO,
    T0,
    ServerThread,
    no_room,
    run_python,
    running,
    wait_for,
)

LATEST = rfc3339(LATEST_TEST_CLOCK)


def start_server(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m server ARGS`` for a start that is expected to end by itself
    (``preexec_fn``: run in the child before exec, a file size limit, say)."""
    return subprocess.run(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=preexec_fn,
    )


def spawn_server(*args: str) -> subprocess.Popen[str]:
    """``python -m server ARGS`` left running, logging JSON, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TESSERA_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def serving_at(proc: subprocess.Popen[str]) -> str:
    """The address of a ``spawn_server`` once its log says it is serving."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("event") == "serving":
            return f"127.0.0.1:{json.loads(line)['port']}"
    raise AssertionError("the server ended before it served")


def refused(db: Path, test_clock: str | None, listen: str = "127.0.0.1:0", **overrides: Any) -> str:
    """Start in process; the start must be refused. Its message."""
    config = Config(
        listen=listen,
        db=db,
        admin_token=ADMIN_TOKEN,
        test_clock=parse_instant(test_clock) if test_clock else None,
        log_format="json",
        **overrides,
    )

    async def attempt() -> None:
        server = TesseraServer(config)
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(StartRefused) as refusal:
        asyncio.run(attempt())
    return str(refusal.value)


def now_of(srv: ServerThread) -> str:
    client = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        info = client("tessera.v1.AdminService/GetServerInfo")
    finally:
        client.close()
    return f"{info['now']}|{info.get('test_clock', False)}"


# -- point 7: the test clock's range, as AdvanceClock's ------------------------


@pytest.mark.parametrize(
    "instant",
    [
        "9999-12-31T00:00:00Z",
        rfc3339(LATEST_TEST_CLOCK + timedelta(seconds=1)),
        "1969-12-31T23:59:59Z",
    ],
)
def test_issue12_h4_7_test_clock_outside_advance_clocks_range_is_a_usage_error(
    instant: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TESSERA_TEST_CLOCK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--test-clock", instant])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--test-clock: {instant!r} is outside the test clock's range" in err
    assert f"{rfc3339(MIN_TIME)} to {LATEST}" in err


def test_issue12_h4_7_test_clock_from_the_environment_is_bounded_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESSERA_TEST_CLOCK", "9999-12-31T00:00:00Z")
    with pytest.raises(SystemExit) as exit_:
        parse_args([])
    assert exit_.value.code == 2
    assert "TESSERA_TEST_CLOCK: '9999-12-31T00:00:00Z' is outside" in capsys.readouterr().err


def test_issue12_h4_7_the_range_ends_exactly_where_advance_clock_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TESSERA_TEST_CLOCK", raising=False)
    assert parse_args(["--test-clock", LATEST]).test_clock == LATEST_TEST_CLOCK
    assert parse_args(["--test-clock", rfc3339(MIN_TIME)]).test_clock == MIN_TIME


def test_issue12_h4_7_a_server_at_the_latest_instant_still_sells_tokens(tmp_path: Path) -> None:
    """The old failure: a clock in year 9999 made PurchaseTokens INTERNAL (a pack
    expires a year on). At the range's end a purchase works."""
    with running(tmp_path / "tessera.db", test_clock=LATEST) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            client("tessera.v1.AdminService/CreateTeam", {"team_id": "alpha"})
            pack = client(
                "tessera.v1.AdminService/PurchaseTokens",
                {"team_id": "alpha", "tokens": 10, "request_id": "h4-7"},
            )
        finally:
            client.close()
    assert pack["token_pack"]["expire_time"] == "9999-12-30T00:00:00Z"  # a year on


@pytest.mark.parametrize("via", ["flag", "environment"])
def test_issue12_h4_7_start_at_year_9999_exits_2_before_opening_anything(
    via: str, tmp_path: Path
) -> None:
    db = tmp_path / "new" / "tessera.db"
    if via == "flag":
        result = start_server("--db", str(db), "--test-clock", "9999-12-31T00:00:00Z")
        named = "--test-clock"
    else:
        result = start_server("--db", str(db), env={"TESSERA_TEST_CLOCK": "9999-12-31T00:00:00Z"})
        named = "TESSERA_TEST_CLOCK"
    assert result.returncode == 2
    assert f"error: {named}: '9999-12-31T00:00:00Z' is outside the test clock's range" in (
        result.stderr
    )
    assert LATEST in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.parent.exists()


# -- point 8b: a port in use, before the database is touched --------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    "flags", [("--no-front-process",), ("--front-process",)], ids=["one-process", "front"]
)
def test_issue12_h4_8b_port_in_use_is_one_line_and_the_database_is_untouched(
    busy_port: int, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """With --front-process the front binds, and says why it cannot, before the
    server opens the database."""
    db = tmp_path / "fresh" / "tessera.db"
    result = start_server(*flags, "--db", str(db), "--listen", f"127.0.0.1:{busy_port}")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tessera-server: cannot listen on 127.0.0.1:{busy_port}: address already in use"
    ]
    assert "Traceback" not in result.stdout
    assert not db.parent.exists()


def test_issue12_h4_8b_port_in_use_leaves_an_existing_database_as_it_was(
    busy_port: int, tmp_path: Path
) -> None:
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    message = refused(db, T0, listen=f"127.0.0.1:{busy_port}")
    assert message == f"cannot listen on 127.0.0.1:{busy_port}: address already in use"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_issue12_h4_8b_a_file_sqlite_cannot_open_is_refused_in_one_line_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A damaged database (or a disk too full to open one): what to do, not a traceback."""
    db = tmp_path / "tessera.db"
    db.write_bytes(b"SQLite format 3\x00" + b"a spreadsheet, not a database\n" * 200)
    before = db.read_bytes()
    result = start_server("--db", str(db), "--admin-token", ADMIN_TOKEN)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tessera-server: cannot open {db}: file is not a database (SQLite): if its disk is "
        "full or read-only, mend that and start again; if it is not a Tessera database, "
        "give --db one, or restore a backup"
    ]
    assert "Traceback" not in result.stdout
    assert db.read_bytes() == before


@pytest.mark.parametrize("mode", ["--no-front-process", "--front-process"])
def test_issue12_h4_8b_a_start_on_a_disk_with_no_room_is_refused_in_words(
    tmp_path: Path, mode: str
) -> None:
    """The first file a start writes is the lock beside the database, with a front or
    without (the front's link is a socket pair: no file). It said only errno words:
    ``[Errno 27] File too large: '...lock'``."""
    db = tmp_path / "tessera.db"
    result = start_server("--db", str(db), mode, preexec_fn=no_room)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tessera-server: cannot lock the database: its lock file {db}.lock cannot be "
        "written (file too large); if its disk is full or read-only, mend that and start again"
    ]
    assert not db.exists()


_EVERY_COMMIT_FULL = """
import sqlite3, sys
from server.store import sqlite as store
def full(conn, plan):
    raise sqlite3.OperationalError("database or disk is full")
store._write_plan = full  # opening and migrating work (statements of their own)
from server.__main__ import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("mode", ["--no-front-process", "--front-process"])
def test_issue12_h4_8b_a_start_whose_first_commit_finds_the_disk_full_is_refused_in_one_line(
    tmp_path: Path, mode: str
) -> None:
    """A start on a disk with room to open the database but not for the start's own
    commit (the clock's mark, the deadlines that fell due): the restart a supervisor
    makes after a `store_failed`. It is refused as a write that fails later is, one
    `stopped_on_error` line and `tessera-server: ...` on stderr, exit code 1, not a
    Python traceback."""
    db = tmp_path / "t.db"
    argv = ["--listen", "127.0.0.1:0", "--db", str(db), "--admin-token", ADMIN_TOKEN]
    argv += ["--log-format", "json", mode]
    result = run_python(_EVERY_COMMIT_FULL.format(argv=argv))
    events = [json.loads(x)["event"] for x in result.stdout.splitlines() if x.startswith("{")]
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tessera-server: a write to {db} failed (database or disk is full): the server "
        "stops, since what it holds in memory can no longer be stored; mend the disk (room, "
        "permissions) and start it again, and it resumes from its last commit"
    ]
    assert "store_failed" in events and events[-1] == "stopped_on_error"


def test_issue12_h4_8b_a_database_of_a_newer_release_is_refused_to_start_and_to_verify(
    tmp_path: Path,
) -> None:
    """A release that does not know a database's last migrations would read and write
    tables it does not know: the server refuses it in one line, as on PostgreSQL,
    and so does ``verify``, whose checks are this release's."""
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    problem = (
        f"the database is at schema version {newer}, newer than this release's "
        f"{len(MIGRATIONS)}: run the newer release"
    )
    started = start_server("--db", str(db), "--admin-token", ADMIN_TOKEN)
    assert started.returncode == 1
    assert started.stderr.splitlines() == [f"tessera-server: cannot open {db}: {problem}"]
    checked = _cli("verify", "--db", str(db))
    assert (checked.returncode, checked.stderr) == (2, f"python -m server verify: {problem}\n")


@pytest.mark.parametrize("damage", ["{not json", "[]", '[{"key_id": "k_1"}]'])
def test_m7_a_damaged_signing_keys_file_is_refused_in_one_line(tmp_path: Path, damage: str) -> None:
    """The lease-signing keys (M7) are read at every start: a file damaged by hand or by
    a disk gave a traceback; it is refused in one line saying what to do."""
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    keys = tmp_path / "tessera.db.signing-keys"
    keys.write_text(damage)
    started = start_server("--db", str(db), "--admin-token", ADMIN_TOKEN, "--test-clock", T0)
    assert started.returncode == 1
    (line,) = started.stderr.splitlines()
    assert line.startswith(f"tessera-server: {keys} ")
    assert "restore it from a backup" in line and "Traceback" not in started.stdout
    rotated = _cli("rotate-signing-key", "--db", str(db))  # the operator's tool: the same
    assert rotated.returncode == 2
    assert rotated.stderr.splitlines() == [f"python -m server rotate-signing-key: {line[16:]}"]
    assert keys.read_text() == damage  # left as it was


@pytest.mark.parametrize("kind", ["directory", "text file", "under a text file"])
def test_issue12_h4_8b_a_db_that_is_no_database_is_refused_before_anything_is_done_to_it(
    tmp_path: Path, kind: str
) -> None:
    """A mistyped --db (a shared directory, someone's file): refused in one line
    with its mode as it was (the start tightens a database's mode to 0600, which
    would take a directory's sticky bit or make a file unreadable to others) and
    no lock, key or checkpoint file made beside it."""
    db = tmp_path / "shared"
    if kind == "directory":
        db.mkdir()
        mode, what = 0o1777, f"{db} is a directory, not a database file"
    else:
        db.write_text("root:x:0:0:root:/root:/bin/bash\n")
        mode, what = 0o644, f"{db} is not a SQLite database (it does not begin as one)"
    db.chmod(mode)
    given = db
    if kind == "under a text file":  # --db /etc/passwd/tessera.db
        given = db / "tessera.db"
        what = f"{given} cannot be a database file: {db} is a file, not a directory"
    result = start_server("--db", str(given), "--admin-token", ADMIN_TOKEN)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"tessera-server: --db {what}; it was left as it was: give --db a Tessera "
        "database, or a new file's name to make one"
    ]
    assert "Traceback" not in result.stdout
    # A log collector reading the JSON lines alone reads the same words, as an error.
    (*_, last) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (last["event"], last["level"], last["exit_code"]) == ("stopped_on_error", "error", 1)
    assert f"tessera-server: {last['error']}" == result.stderr.strip()
    assert stat.S_IMODE(db.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


# -- point 8b: a database keeps its clock ---------------------------------------


def test_issue12_h4_8b_test_clock_database_without_test_clock_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        srv.call(srv.server.engine.advance_clock(None, 3600))
    message = refused(db, None)
    assert message == (
        f"{db} is a test-clock database, its clock at 2026-01-01T01:00:00+00:00: start "
        "with --test-clock to resume it there (the flag's instant is then ignored), or with "
        "--end-test-clock to move it to the real clock for good, or use a fresh --db"
    )
    # Nothing moved: it resumes where it stood.
    with running(db, test_clock="2030-01-01T00:00:00Z") as srv:
        assert now_of(srv) == "2026-01-01T01:00:00Z|True"


def test_issue12_h4_8b_test_clock_database_refusal_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    result = start_server("--db", str(db), "--admin-token", ADMIN_TOKEN)
    assert result.returncode == 1
    assert result.stderr.startswith(f"tessera-server: {db} is a test-clock database")
    assert "Traceback" not in result.stderr + result.stdout


def test_issue12_h4_8b_real_clock_database_refuses_a_test_clock(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db, test_clock=None):
        pass
    message = refused(db, T0)
    assert message.startswith(f"{db} runs on the real clock (since ")
    assert message.endswith(
        ": a test clock would move its time; start without --test-clock, or use a fresh "
        "--db for test-clock mode"
    )


def test_issue12_h4_8b_real_clock_database_from_before_the_mark_refuses_a_test_clock(
    tmp_path: Path,
) -> None:
    """A database that holds data but no clock mark (made before the mark
    existed) ran on the real clock."""
    db = tmp_path / "tessera.db"
    with running(db, test_clock=None) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        client("tessera.v1.AdminService/CreateTeam", {"team_id": "alpha"})
        client.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("DELETE FROM meta WHERE key = ?", (REAL_CLOCK_KEY,)).rowcount == 1
    conn.close()
    assert refused(db, T0) == (
        f"{db} runs on the real clock: a test clock would move its time; start without "
        "--test-clock, or use a fresh --db for test-clock mode"
    )


def test_issue12_h4_8b_end_test_clock_moves_a_database_to_the_real_clock_for_good(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    with running(db, test_clock=None, end_test_clock=True) as srv:
        now, is_test = now_of(srv).split("|")
    assert (is_test, now > "2026-06-01") == ("False", True)
    with running(db, test_clock=None) as srv:  # a real-clock database now
        assert now_of(srv).endswith("|False")
    assert refused(db, T0).startswith(f"{db} runs on the real clock (since ")


def test_issue12_h4_8b_end_test_clock_and_test_clock_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--test-clock", T0, "--end-test-clock"])
    assert exit_.value.code == 2
    assert "--end-test-clock and --test-clock exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_issue12_a_signal_to_the_process_group_drains_and_writes_everything_out(
    tmp_path: Path, sig: int
) -> None:
    """Ctrl-C and a closed terminal signal the whole process group, the front
    included: the server drains, writes everything out and exits 0 however it is
    asked. SIGHUP used to kill both at once (129), calls and heartbeat history lost."""
    db = tmp_path / "tessera.db"
    args = ["--listen", "127.0.0.1:0", "--front-process", "--db", str(db)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", *args, "--admin-token", ADMIN_TOKEN],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TESSERA_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"event": "serving"' in line or '"event":"serving"' in line:
                break
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith("{")]
    assert events.index("draining") < events.index("stopped")


@pytest.mark.parametrize("front", ["--front-process", "--no-front-process"])
def test_shutdown_drain_delay_says_not_serving_and_still_answers_before_the_port_closes(
    tmp_path: Path, front: str
) -> None:
    """Behind a load balancer that polls health, a stop must be seen in the health
    before calls are refused: with ``--drain-delay`` the server turns NOT_SERVING on
    SIGTERM and goes on answering calls for that long, then drains and exits 0."""
    proc = spawn_server(
        *("--db", str(tmp_path / "t.db"), "--admin-token", ADMIN_TOKEN),
        *("--drain-delay", "5", front),
    )
    try:
        target = serving_at(proc)
        proc.send_signal(signal.SIGTERM)
        wait_for(target, NOT_SERVING)
        admin = Grpcurl(target, ADMIN_TOKEN)
        try:  # refused health, answered calls
            assert admin("tessera.v1.AdminService/GetServerInfo", {})["role"] == "NODE_ROLE_ACTIVE"
        finally:
            admin.close()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    events = [json.loads(line).get("event") for line in out.splitlines() if line.startswith("{")]
    assert events.index("not_serving") < events.index("stopped")


async def _calls_through_a_stop(
    target: str, proc: subprocess.Popen[str], lanes: int = 256
) -> list[TesseraError]:
    """``lanes`` calls kept in flight (GetSigningKeys, on 4 connections), SIGTERM to
    the server once they run; each lane stops at its first failure, as a client that
    honours RetryInfo waits. The failures."""
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(4)
    ]
    stubs = [LicensingServiceStub(c) for c in channels]
    failed: list[TesseraError] = []
    answered = asyncio.Event()

    async def lane(stub: LicensingServiceStub) -> None:
        for _ in range(10_000):  # bounded: the stop ends every lane in a few seconds
            try:
                await stub.GetSigningKeys(lic_pb2.GetSigningKeysRequest(), timeout=20)
            except grpc.aio.AioRpcError as exc:
                failed.append(from_rpc_error(exc))
                return
            answered.set()

    try:
        running = [asyncio.ensure_future(lane(stubs[i % 4])) for i in range(lanes)]
        await asyncio.wait_for(answered.wait(), 30)
        await asyncio.sleep(0.2)  # every lane under way
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*running), 60)
    finally:
        for channel in channels:
            await channel.close()
    return failed


@pytest.mark.parametrize("front", ["--front-process", "--no-front-process"])
def test_overload_a_stop_refuses_the_calls_in_flight_with_retry_info_never_bare_cancelled(
    tmp_path: Path, front: str
) -> None:
    """A stop (SIGTERM: a restart, an upgrade) with calls in flight: gRPC's own stop
    cancelled every call still in its queue, bare (445 of 512 came back CANCELLED,
    which a client cannot tell from its own cancellation, and the SDK took a change
    among them for one whose outcome is unknown). The server first refuses calls
    UNAVAILABLE, reason NOT_SERVING, with a RetryInfo (nothing was done), until its
    queue has emptied: not one call is CANCELLED."""
    proc = spawn_server(*("--db", str(tmp_path / "t.db"), "--admin-token", ADMIN_TOKEN, front))
    lines: list[str] = []
    try:
        target = serving_at(proc)
        # read as it is written (a line a call): a full pipe would hold the server
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        failed = asyncio.run(_calls_through_a_stop(target, proc))
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 0
    out = "".join(lines)
    codes = Counter(e.code for e in failed)
    assert codes[grpc.StatusCode.CANCELLED] == 0, codes
    refused = [e for e in failed if e.reason == "NOT_SERVING"]
    assert refused, Counter((e.code, e.reason, str(e)[:60]) for e in failed)
    assert all(e.code is grpc.StatusCode.UNAVAILABLE and e.retry_after == 1.0 for e in refused)
    # the rest came after the port closed: never sent, which a client knows
    assert all("failed to connect" in str(e) for e in failed if e.reason != "NOT_SERVING")
    closing = [json.loads(line) for line in out.splitlines() if '"closing_refused"' in line]
    assert [line["refused"] for line in closing] == [len(refused)]


@pytest.mark.parametrize("front", ["--front-process", "--no-front-process"])
def test_shutdown_ends_health_watch_streams_after_saying_not_serving(
    tmp_path: Path, front: str
) -> None:
    """A monitor watching health (grpc.health.v1.Health/Watch, as gRPC's client-side
    health checking does) hears NOT_SERVING on SIGTERM, then its stream ends with OK:
    the stock servicer kept it open, so the stop waited out the whole shutdown grace
    (30 s here) and the watcher saw UNAVAILABLE."""
    proc = spawn_server(
        *("--db", str(tmp_path / "t.db"), "--admin-token", ADMIN_TOKEN),
        *("--shutdown-grace", "30", front),
    )
    heard: list[int] = []
    try:
        target = serving_at(proc)
        with grpc.insecure_channel(target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            heard.append(next(watch).status)  # SERVING: the stream is open
            proc.send_signal(signal.SIGTERM)
            heard += [reply.status for reply in watch]  # ends without an error
            assert watch.code() is grpc.StatusCode.OK
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    serving = health_pb2.HealthCheckResponse
    assert heard == [serving.SERVING, serving.NOT_SERVING]
    assert proc.returncode == 0, err


# -- point 8b: the admin token is shown once -----------------------------------


def banner(db: Path, *, terminal: bool = False) -> tuple[str, str]:
    """Start without --admin-token, read the banner (stderr: a pipe, or a terminal),
    stop: (stderr, stdout)."""
    reader, writer = pty.openpty() if terminal else os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--db", str(db)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TESSERA_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=writer,
        text=True,
    )
    os.close(writer)
    lines = []
    with open(reader, encoding="utf-8", errors="replace") as stderr:
        for line in stderr:
            lines.append(line)
            if "grpcurl" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        if not terminal:
            lines += stderr.readlines()
    assert proc.returncode == 0, "".join(lines)
    return "".join(lines), out


def test_issue12_h4_8b_admin_token_is_shown_once_to_a_terminal_and_never_to_a_log(
    tmp_path: Path,
) -> None:
    """The token a first start makes is printed once, to a terminal (the operator
    starting it by hand: README); a first start whose stderr is a pipe or a file (a
    service manager's log, journald) says where it is kept instead, as every later
    start does; the JSON log on stdout never holds it."""
    db = tmp_path / "tessera.db"
    first, first_log = banner(db, terminal=True)
    path = tmp_path / "tessera.db.admin-token"
    token = path.read_text().strip()
    assert token.startswith("tsa_")
    assert f"Admin token: {token} (new, shown only now; kept owner-only in {path})" in first
    assert token not in first_log

    second, second_log = banner(db, terminal=True)
    assert token not in second + second_log
    assert f"Admin token: kept owner-only in {path}; read it with: cat {path}" in second
    assert f'-H "authorization: Bearer $(cat {path})"' in second

    logged = tmp_path / "logged.db"
    first, first_log = banner(logged)
    token = (tmp_path / "logged.db.admin-token").read_text().strip()
    assert token not in first + first_log
    where = tmp_path / "logged.db.admin-token"
    assert f"Admin token: new, kept owner-only in {where}; read it with: cat {where}" in first


def test_sigterm_while_starting_gives_the_start_up_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM or Ctrl-C ends a start still under way at once, with 0 (docs/api.md:
    "on SIGTERM or SIGINT ... exits 0"), instead of after it: here a PostgreSQL
    that takes the connection and never answers, which would hold the start for
    its 30-second connect timeout and then fail it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(60)
        port = silent.getsockname()[1]
        db = f"postgresql://tessera@127.0.0.1:{port}/tessera"
        proc = spawn_server("--db", db, "--admin-token", ADMIN_TOKEN)
        # the start is under way once it connects: it waits for an answer
        given_up_at_start(proc, lambda: silent.accept()[0])


def given_up_at_start(
    proc: subprocess.Popen[str], under_way: Callable[[], AbstractContextManager[object]]
) -> None:
    """SIGTERM to ``proc`` inside ``under_way()`` (a moment of its start, held while it
    lasts): the start is given up at once, the server exits 0 and never served."""
    try:
        with under_way():
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)  # a bound on a hang, not a speed target
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped while starting" in out, out + err
    assert '"event": "serving"' not in out
