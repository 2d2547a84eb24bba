"""The store: restart after SIGTERM and after kill -9, group commit, migrations
and the round trip of every durable object (issue 2, "Store")."""

from __future__ import annotations

import asyncio
import gc
import signal
import sqlite3
import stat
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from server import app
from server.clock import MAX_STAND_STILL, SystemClock
from server.config import rfc3339
from server.domain.admins import AuditEvent
from server.domain.changes import Changes
from server.domain.directory import Notification, NotificationKind
from server.domain.ledger import Cause, EntryKind, Hold, LedgerEntry, TokenPack
from server.domain.meta import MetaValue
from server.domain.products import Platform, Product, ProductKind
from server.domain.sessions import ChargeState, Device, Meter, Session, SessionState
from server.domain.teams import Plan, Team
from server.store import sqlite as sqlite_store
from server.store.audit import connect_read_only
from server.store.codec import NOT_LOADED, TABLES, Table
from server.store.port import StorePort
from server.store.schema import MIGRATIONS
from server.store.sqlite import Store
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import Desk, L
from tests.security.test_at_rest import _verify
from tests.store.builders import a_session
from tests.store.test_sqlite_write import T0 as BEGAN
from tests.store.test_sqlite_write import _session
from tests.support import ADMIN_TOKEN, ServerProcess, ServerThread, running

A = "tessera.v1.AdminService/"
T0 = "2026-01-01T00:00:00Z"


# -- helpers ------------------------------------------------------------------


def start(processes: list[ServerProcess], db: Path | str) -> ServerProcess:
    proc = ServerProcess(db).start()
    processes.append(proc)
    return proc


def ledger(client: Grpcurl, team_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = ""
    for _ in range(1000):
        page = client(
            A + "ListLedgerEntries", {"team_id": team_id, "page_size": 3, "page_token": token}
        )
        out.extend(page.get("entries", []))
        token = page.get("next_page_token", "")
        if not token:
            return out
    raise AssertionError("the ledger's pages never end")


def state(client: Grpcurl) -> dict[str, Any]:
    """Everything an operator can read back: teams, packs, ledger, products, clock."""
    teams = client(A + "ListTeams", {}).get("teams", [])
    ids = [t["team_id"] for t in teams]
    return {
        "teams": teams,
        "packs": {t: client(A + "ListTokenPacks", {"team_id": t}).get("packs", []) for t in ids},
        "ledger": {t: ledger(client, t) for t in ids},
        "products": client(A + "ListProducts", {}).get("products", []),
        "now": client(A + "GetServerInfo", {})["now"],
    }


# -- restart of the real process ---------------------------------------------------


def test_store_sigterm_then_restart_shows_the_same_state(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first = start(processes, db)
    client = Grpcurl(first.target, ADMIN_TOKEN)
    try:
        client(
            A + "CreateTeam", {"team_id": "acme", "display_name": "Acme", "plan": "PLAN_PREMIUM"}
        )
        client(A + "CreateTeam", {"teamId": "beta"})
        client(A + "UpdateTeamSettings", {"team_id": "beta", "guestDefaultAssignments": True})
        client(
            A + "UpsertProduct",
            {
                "product": {
                    "product_id": "ACAD",
                    "display_name": "AutoCAD",
                    "daily_rate": 10,
                    "idle_aware": True,
                    "platforms": ["PLATFORM_WINDOWS", "PLATFORM_LINUX"],
                    "min_linux_version": 2022,
                }
            },
        )
        client(
            A + "UpsertProduct",
            {
                "product": {
                    "productId": "ACADEL",
                    "dailyRate": "3",
                    "kind": "PRODUCT_KIND_PLUGIN",
                    "hostProductId": "ACAD",
                    "platforms": ["PLATFORM_WINDOWS"],
                }
            },
        )
        a1 = client(A + "PurchaseTokens", {"team_id": "acme", "tokens": 100, "request_id": "po-1"})[
            "token_pack"
        ]
        client(A + "AdvanceClock", {"by": "3600s"})
        a2 = client(A + "PurchaseTokens", {"teamId": "acme", "tokens": "250", "requestId": "po-2"})[
            "token_pack"
        ]
        client(A + "PurchaseTokens", {"team_id": "beta", "tokens": 30, "request_id": "po-3"})
        client(A + "MoveTokenPack", {"pack_id": a2["pack_id"], "to_team_id": "beta"})
        client(A + "AdvanceClock", {"to_time": "2026-03-15T12:00:00Z"})
        before = state(client)
    finally:
        client.close()
    assert before["now"] == "2026-03-15T12:00:00Z"
    assert len(before["ledger"]["acme"]) == 3  # purchase, purchase, move out
    assert len(before["ledger"]["beta"]) == 2  # purchase, move in

    assert first.terminate() == 0
    assert any(line.get("event") == "stopped" for line in first.lines)

    # Restarted with the same --test-clock flag: the stored time wins (RULES §7).
    second = start(processes, db)
    client = Grpcurl(second.target, ADMIN_TOKEN)
    try:
        after = state(client)
        assert after == before
        assert after["now"] == "2026-03-15T12:00:00Z"
        # The idempotency key survives the restart (T1).
        again = client(
            A + "PurchaseTokens", {"team_id": "acme", "tokens": 100, "request_id": "po-1"}
        )["token_pack"]
        assert again == a1
        # New entries continue the sequence: nothing is overwritten (T6).
        client(A + "PurchaseTokens", {"team_id": "acme", "tokens": 5, "request_id": "po-4"})
        entries = ledger(client, "acme")
        assert entries[:3] == before["ledger"]["acme"]
        assert len(entries) == 4
        old_ids = {e["entry_id"] for t in before["ledger"].values() for e in t}
        assert entries[3]["entry_id"] not in old_ids
        assert entries[3]["entry_id"] > max(old_ids)
        # Expiry deadlines were rebuilt from the stored packs (T4).
        client(A + "AdvanceClock", {"to_time": "2027-01-01T00:00:00Z"})
        expired = {
            p["pack_id"]: p for p in client(A + "ListTokenPacks", {"team_id": "acme"})["packs"]
        }
        assert expired[a1["pack_id"]]["state"] == "PACK_STATE_EXPIRED"
        assert expired[a1["pack_id"]]["expired_tokens"] == "100"
    finally:
        client.close()
    assert second.terminate() == 0


def test_store_kill_9_after_acknowledged_purchase_keeps_it(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first = start(processes, db)
    client = Grpcurl(first.target, ADMIN_TOKEN)
    try:
        client(A + "CreateTeam", {"team_id": "acme"})
        client(A + "AdvanceClock", {"by": "7200s"})
        pack = client(
            A + "PurchaseTokens", {"team_id": "acme", "tokens": 100, "request_id": "po-kill"}
        )["token_pack"]
    finally:
        client.close()
    assert first.kill() == -signal.SIGKILL  # right after the RPC returned

    second = start(processes, db)
    client = Grpcurl(second.target, ADMIN_TOKEN)
    try:
        assert client(A + "GetServerInfo", {})["now"] == "2026-01-01T02:00:00Z"
        assert client(A + "ListTokenPacks", {"team_id": "acme"})["packs"] == [pack]
        assert pack["purchase_time"] == "2026-01-01T02:00:00Z"
        assert pack["expire_time"] == "2027-01-01T02:00:00Z"
        (entry,) = ledger(client, "acme")
        assert (entry["kind"], entry["pack_id"], entry["amount"], entry["time"]) == (
            "LEDGER_ENTRY_KIND_PURCHASE",
            pack["pack_id"],
            "100",
            "2026-01-01T02:00:00Z",
        )
        team = client(A + "GetTeam", {"team_id": "acme"})["team"]
        assert team["available_tokens"] == "100"
    finally:
        client.close()
    assert second.terminate() == 0


# A write past this fails, as on a full disk: each Entitle adds about 40 KiB to the
# write-ahead log, which starts empty, so two or three Entitles fit.
FULL_DISK = 128 * 1024


def _desk_on_a_disk_that_fills(
    processes: list[ServerProcess], db: Path
) -> tuple[ServerProcess, Desk, list[str]]:
    """A team with 1,000 tokens and 20 users, made on a roomy disk; then the
    server again, where no file may grow past ``FULL_DISK``."""
    first = start(processes, db)
    desk = Desk(first.target).sheet()
    desk.team("alpha", 1000)
    users = [desk.user("alpha", f"u{i}") for i in range(20)]
    desk.close()
    assert first.terminate() == 0
    full = ServerProcess(db, file_size_limit=FULL_DISK).start()
    processes.append(full)
    again = Desk(full.target)
    again.keys = desk.keys
    return full, again, users


@pytest.mark.sqlite_only("a file that cannot grow; on PostgreSQL a failed write steps down (H2)")
def test_store_a_lone_server_whose_write_fails_answers_unavailable_and_stops(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """A server alone on its database whose write fails (a full disk) answers
    that call UNAVAILABLE, to be repeated, and stops with exit code 1: from then
    on its memory is ahead of the database. Started again on a mended disk, it
    holds every Entitle it answered and nothing of the cut one, which its request
    id then makes once; the ledger adds up."""
    db = tmp_path / "t.db"
    full, desk, users = _desk_on_a_disk_that_fills(processes, db)
    answered: list[dict[str, Any]] = []
    cut: GrpcurlError | None = None
    for i, user in enumerate(users):
        try:
            answered.append(desk.entitle(user, request_id=f"sign-in-{i}"))
        except GrpcurlError as refused:
            cut = refused
            break
    keys = desk.keys
    desk.close()
    assert cut is not None, "every Entitle fitted: FULL_DISK is too large"
    assert answered, "no Entitle fitted: FULL_DISK is too small"
    assert (cut.code, cut.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    assert "same request_id" in cut.message
    assert full.wait() == 1  # on its own: nobody sent a signal
    assert [line["event"] for line in full.lines if line.get("level") == "error"] == [
        "store_failed",
        "stopped_on_error",
    ]

    mended = start(processes, db)
    desk = Desk(mended.target)
    desk.keys = keys
    try:
        live = {s["session_id"]: s for s in desk.sessions("alpha")}
        assert sorted(live) == sorted(s["session_id"] for s in answered)
        n = len(answered)
        repeated = desk.entitle(users[n], request_id=f"sign-in-{n}")
        again = desk.entitle(users[n], request_id=f"sign-in-{n}")
        assert again["session_id"] == repeated["session_id"]  # made once (M11)
        team = desk.a("GetTeam", {"team_id": "alpha"})["team"]
        assert int(team["available_tokens"]) == 1000 - 10 * (n + 1)  # one hold each (M2)
    finally:
        desk.close()
    assert mended.terminate() == 0
    assert _verify(db).startswith("ok:")


@pytest.mark.sqlite_only("SQLite's own write fails; on PostgreSQL a failed write steps down (H2)")
def test_store_a_lone_server_whose_heartbeat_flush_fails_stops_and_closes_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write no call waits for fails too (the heartbeat flush's): the server
    does not answer on from memory, it stops; and its stop, whose last flush
    fails again, still closes the store, whose thread would otherwise keep the
    process alive after SIGTERM."""
    srv = ServerThread(tmp_path / "t.db", heartbeat_flush=0.05).start()
    try:
        desk = Desk(srv.target).sheet()
        desk.team("alpha", 100)
        users = [desk.user("alpha", name) for name in ("ann", "bob")]
        sids = [desk.entitle(u)["session_id"] for u in users]
        desk.advance(60)

        def full(conn: sqlite3.Connection, plan: list[Any]) -> float:
            raise sqlite3.OperationalError("database or disk is full")

        # What is dirty now written first: a flush of it after the patch failed the
        # store before the heartbeat below came, which was then refused (a CI run).
        srv.call(srv.server.engine.sessions.flush())
        monkeypatch.setattr(sqlite_store, "_write_plan", full)
        # One call, in memory, for the next flush to write: a second could come after
        # that flush failed, and be refused as the server stops (a slow host did).
        desk.heartbeat(users[0], sids[0])
        desk.close()
        srv.call(asyncio.wait_for(srv.server.failed.wait(), 30))
        assert "database or disk is full" in str(srv.server.failure)
        store = srv.server.store
        assert isinstance(store, sqlite_store.Store)
        # aiosqlite's, not a daemon (before 0.22 the connection is that thread itself)
        worker = getattr(store._db, "_thread", store._db)
    finally:
        srv.stop()  # raises if the store's failure escapes the stop
    assert not worker.is_alive()


def _full(conn: sqlite3.Connection, plan: list[Any]) -> float:
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.sqlite_only("SQLite's own write fails; on PostgreSQL a failed write steps down (H2)")
def test_m11_a_repeat_of_an_entitle_whose_commit_failed_is_refused_not_answered_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M11: a repeat answers only once the first one's change is stored. An Entitle
    whose commit failed (a full disk) is refused UNAVAILABLE, "repeat it with the same
    request_id"; a repeat made at once, before the server has stopped, finds the
    session in memory and no commit under way: it must be refused too, never answered
    with a session id and a signed lease the database does not hold."""
    srv = ServerThread(tmp_path / "t.db").start()
    try:
        desk = Desk(srv.target).sheet()
        desk.team("alpha", 100)
        ann = desk.user("alpha", "ann")
        monkeypatch.setattr(sqlite_store, "_write_plan", _full)
        body = {"product_id": "ACAD", "product_version": "2026", "platform": "PLATFORM_WINDOWS"}
        body |= {"device_id": "dev-1", "request_id": "sign-in"}
        first = desk.refused(ann, "Entitle", body, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
        again = desk.refused(ann, "Entitle", body, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
        assert "same request_id" in first.message and again.message == first.message
        # Every other call too: memory is ahead of the database from now on.
        desk.refused(None, "GetTeam", {"team_id": "alpha"}, grpc.StatusCode.UNAVAILABLE)
        desk.close()
    finally:
        srv.stop()


@pytest.mark.sqlite_only("SQLite's own write fails; on PostgreSQL a failed write steps down (H2)")
def test_ops_a_full_disk_under_the_heartbeat_flush_is_store_failed_not_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/ops: `heartbeat_flush_failed` and `timer_failed` mean "a bug, report it";
    a full disk is `store_failed` ("mend the disk and start it") and nothing else: an
    operator is not sent to file a bug for a full disk."""
    srv = ServerThread(tmp_path / "t.db", heartbeat_flush=0.05).start()
    try:
        desk = Desk(srv.target).sheet()
        desk.team("alpha", 100)
        ann = desk.user("alpha", "ann")
        sid = desk.entitle(ann)["session_id"]
        desk.advance(600)  # a deadline falls due too (the lease's renewal window)
        with capture_logs() as lines:
            monkeypatch.setattr(sqlite_store, "_write_plan", _full)
            desk.heartbeat(ann, sid)  # in memory, for the next flush
            srv.call(asyncio.wait_for(srv.server.failed.wait(), 30))
        desk.close()
    finally:
        srv.stop()
    errors = [x["event"] for x in lines if x.get("log_level") == "error"]
    assert errors == ["store_failed"]


#: The purchase made after a file was removed or replaced: refused, then repeated.
AFTER = {"team_id": "alpha", "tokens": 50, "request_id": "po-after"}


def _team_on(processes: list[ServerProcess], db: Path) -> tuple[ServerProcess, Desk]:
    """A server on ``db`` with team alpha and its first pack (100 tokens)."""
    first = start(processes, db)
    desk = Desk(first.target).sheet()
    desk.team("alpha", 100)
    return first, desk


def _refused_and_stopped(first: ServerProcess, desk: Desk) -> str:
    """AFTER is refused UNAVAILABLE, to be repeated; the server stops on its own with
    exit code 1 and one store_failed line, whose words this returns."""
    cut = desk.refused(None, "PurchaseTokens", AFTER, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    assert "same request_id" in cut.message
    desk.close()
    assert first.wait(60) == 1
    (failed,) = [x["error"] for x in first.lines if x.get("event") == "store_failed"]
    return str(failed)


def _every_pack_after_a_restart(
    processes: list[ServerProcess], db: Path, bought: list[str]
) -> None:
    """Started again on ``db``: every pack answered is there, AFTER's repeat (same
    request id) is stored once, the balance adds up and verify is ok."""
    again = start(processes, db)
    desk = Desk(again.target)
    try:
        after = desk.a("PurchaseTokens", AFTER)["token_pack"]
        packs = {p["pack_id"]: int(p["tokens"]) for p in desk.packs("alpha")}
        assert {*bought, after["pack_id"]} <= set(packs)
        assert sorted(packs.values()) == [10, 11, 12, 50, 100]  # the team's first pack: 100
        assert desk.balance("alpha") == (183, 0)
    finally:
        desk.close()
    assert again.terminate() == 0
    assert _verify(db).startswith("ok:")


@pytest.mark.sqlite_only("SQLite's own files")
@pytest.mark.parametrize("removed", ["-wal", "the database", "every file", "a linked one's -wal"])
def test_store_a_file_removed_under_the_server_loses_no_acknowledged_token(
    tmp_path: Path, processes: list[ServerProcess], removed: str
) -> None:
    """No token is ever lost, across crashes and restarts. Someone removes the
    database's -wal while the server runs (a clean-up of "temporary" files), or the
    database itself: SQLite writes on into the files it holds open, so every commit
    would be answered as stored while nothing at the database's name holds it, and a
    kill -9 would lose them all (the -wal: the start refused, the ledger short of its
    checkpoint; the database: a new, empty one). The next commit sees it: what the
    open files hold is written back (the -wal into the database; the database where it
    was), that call is refused UNAVAILABLE, and the server stops with store_failed.
    After a restart every pack is there, the refused one included (its repeat, with
    the same request id, answers it), and verify is ok. A database given as a symbolic
    link has its -wal beside the link's target."""
    db = tmp_path / "t.db"
    if removed == "a linked one's -wal":
        (tmp_path / "data").mkdir()
        db.symlink_to(tmp_path / "data" / "t.db")
    first, desk = _team_on(processes, db)
    bought = [desk.buy("alpha", 10 + i)["pack_id"] for i in range(3)]
    files = {
        "-wal": [Path(f"{db}-wal")],
        "the database": [db],
        "a linked one's -wal": [tmp_path / "data" / "t.db-wal"],
    }.get(removed)
    for f in files or [f for f in tmp_path.iterdir() if f.name.startswith("t.db")]:
        f.unlink()
    assert "was removed while the server ran" in _refused_and_stopped(first, desk)
    _every_pack_after_a_restart(processes, db, bought)


@pytest.mark.sqlite_only("SQLite's own files")
def test_store_a_wal_removed_while_a_backup_reads_is_saved_to_a_copy_named_in_the_error(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """The -wal is removed while a reader holds an older snapshot (`backup`'s
    read-only connection): the checkpoint that would save its commits cannot pass that
    snapshot (SQLite says so in a row, not an error), so they are not in the database.
    The server says so and writes a complete copy beside it, named in `store_failed`;
    put in place as the words say, it holds every pack answered."""
    db = tmp_path / "t.db"
    first, desk = _team_on(processes, db)
    reader = connect_read_only(db)  # what `backup` holds for its one-step copy
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM ledger").fetchone()  # its snapshot
    bought = [desk.buy("alpha", 10 + i)["pack_id"] for i in range(3)]
    Path(f"{db}-wal").unlink()
    failed = _refused_and_stopped(first, desk)
    copy = Path(f"{db}.rescued")
    assert f"a complete copy is at {copy}" in failed and "held an older snapshot" in failed
    reader.close()  # the backup ends; the operator does as told
    for side in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        side.unlink(missing_ok=True)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    copy.replace(db)
    _every_pack_after_a_restart(processes, db, bought)


@pytest.mark.sqlite_only("SQLite's own files")
@pytest.mark.parametrize("name", ["the database", "its -wal"])
def test_store_a_file_put_in_place_of_the_servers_is_left_as_it_is(
    tmp_path: Path, processes: list[ServerProcess], name: str
) -> None:
    """A file put at the database's name or its -wal's while the server runs (a
    restore done the wrong way round): the server's next commit is refused UNAVAILABLE
    and the server stops (store_failed), never answering as stored what no file at
    that name holds; the file put there is as it was afterwards, though SQLite's last
    connection removes whatever is at the -wal's name as it closes."""
    db = tmp_path / "t.db"
    first, desk = _team_on(processes, db)
    at = db if name == "the database" else Path(f"{db}-wal")
    put = tmp_path / "restored"
    put.write_bytes(b"restored")  # any file: the server must not touch it
    put.replace(at)
    assert f"{at} is no longer the file the server opened" in _refused_and_stopped(first, desk)
    assert at.read_bytes() == b"restored"


def test_store_kill_9_after_advance_clock_keeps_the_time_and_expiry(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first = start(processes, db)
    client = Grpcurl(first.target, ADMIN_TOKEN)
    try:
        client(A + "CreateTeam", {"team_id": "acme"})
        pack = client(
            A + "PurchaseTokens", {"team_id": "acme", "tokens": 40, "request_id": "po-1"}
        )["token_pack"]
        client(A + "AdvanceClock", {"toTime": "2027-01-01T00:00:00Z"})  # answered once stored
    finally:
        client.close()
    first.kill()

    second = start(processes, db)
    client = Grpcurl(second.target, ADMIN_TOKEN)
    try:
        assert client(A + "GetServerInfo", {})["now"] == "2027-01-01T00:00:00Z"
        (after,) = client(A + "ListTokenPacks", {"team_id": "acme"})["packs"]
        assert after["pack_id"] == pack["pack_id"]
        assert after["state"] == "PACK_STATE_EXPIRED"
        assert after["expired_tokens"] == "40"
        assert [e["kind"] for e in ledger(client, "acme")] == [
            "LEDGER_ENTRY_KIND_PURCHASE",
            "LEDGER_ENTRY_KIND_EXPIRY",
        ]
    finally:
        client.close()
    second.kill()


# -- the real clock across a restart (RULES §7) -----------------------------------------

WALL_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Wall:
    """The machine's clock of the servers a test starts in this process, set by the test."""

    def __init__(self) -> None:
        self.at = WALL_AT

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    """Every real-clock server the test starts in process reads this wall clock."""
    wall = Wall()

    class OnTheWall(SystemClock):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__(wall)

    monkeypatch.setattr(app, "SystemClock", OnTheWall)
    return wall


def _purchase_on_the_real_clock(
    database: Path | str, request_id: str
) -> tuple[str, list[dict[str, Any]]]:
    """Start on the real clock, buy 10 tokens for acme (made on the first start):
    the server's time then, and acme's ledger."""
    with running(database, test_clock=None) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            if not client(A + "ListTeams", {}).get("teams"):
                client(A + "CreateTeam", {"team_id": "acme"})
            client(
                A + "PurchaseTokens", {"team_id": "acme", "tokens": 10, "request_id": request_id}
            )
            return client(A + "GetServerInfo", {})["now"], ledger(client, "acme")
        finally:
            client.close()


def _stepped_back(lines: Iterable[Mapping[str, Any]]) -> list[float]:
    return [line["seconds"] for line in lines if line["event"] == "wall_clock_stepped_back"]


def test_s7_a_restart_on_a_wall_clock_behind_the_stored_data_dates_nothing_before_it(
    database: Path | str, wall: Wall
) -> None:
    """The machine's clock an hour behind the last ledger entry at a start (a
    restart after NTP stepped it back, or a standby whose clock is behind the old
    active's taking over): the server's time stands at that entry's, with one
    warning, until the wall clock passes it."""
    _, before = _purchase_on_the_real_clock(database, "po-1")
    assert [e["time"] for e in before] == ["2026-03-02T09:00:00Z"]
    wall.at = WALL_AT - timedelta(hours=1)
    with capture_logs() as lines:
        now, after = _purchase_on_the_real_clock(database, "po-2")
    assert now == "2026-03-02T09:00:00Z"
    assert [e["time"] for e in after] == ["2026-03-02T09:00:00Z"] * 2
    assert _stepped_back(lines) == [3600.0]  # once, not once a reading
    # Past it, the server's time follows the wall clock again.
    wall.at = WALL_AT + timedelta(minutes=1)
    with capture_logs() as lines:
        now, after = _purchase_on_the_real_clock(database, "po-3")
    assert (now, after[-1]["time"]) == ("2026-03-02T09:01:00Z",) * 2
    assert _stepped_back(lines) == []


def test_s7_a_restart_on_a_wall_clock_ahead_of_the_stored_data_follows_it(
    database: Path | str, wall: Wall
) -> None:
    _purchase_on_the_real_clock(database, "po-1")
    wall.at = WALL_AT + timedelta(hours=1)
    with capture_logs() as lines:
        now, after = _purchase_on_the_real_clock(database, "po-2")
    assert now == "2026-03-02T10:00:00Z"
    assert [e["time"] for e in after] == ["2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"]
    assert _stepped_back(lines) == []


async def test_s7_the_latest_stored_instant_is_the_newest_of_entries_events_and_sessions(
    store: StorePort,
) -> None:
    """What a start's clock may not go back from (``NamedReads.latest_instant``):
    the newest ledger entry's time, the newest audit event's, and the latest
    instant a loaded session was entitled, heartbeat, changed state or coverage."""
    assert await store.latest_instant(await store.load()) is None  # an empty store
    t = WALL_AT
    entry = LedgerEntry(1, t, EntryKind.PURCHASE, "acme", "pk_1", 10, 10, 0)
    event = AuditEvent(1, "ev_1", t + timedelta(seconds=1), "OPERATOR", "", "X", "", "", "", "", "")
    await store.commit([entry])
    assert await store.latest_instant(await store.load()) == t
    await store.commit([event])
    assert await store.latest_instant(await store.load()) == t + timedelta(seconds=1)
    for n, field in enumerate(("lease_start", "state_since", "coverage_since"), start=2):
        later = t + timedelta(seconds=n)
        await store.commit([a_session(f"s{n}", t, **{field: later})])
        assert await store.latest_instant(await store.load()) == later
    # An older session says nothing newer.
    await store.commit([a_session("s9", t - timedelta(days=1))])
    assert await store.latest_instant(await store.load()) == t + timedelta(seconds=4)
    warned = t + timedelta(seconds=5)  # L1's warning, fired by a deadline
    await store.commit([Notification("n1", "acme", "", "", NotificationKind.LOW_BALANCE, warned)])
    assert await store.latest_instant(await store.load()) == warned


def test_s7_ending_a_test_clock_ahead_of_the_machines_is_refused(
    database: Path | str, wall: Wall
) -> None:
    """--end-test-clock of a test clock advanced past the machine's (July, the machine
    says March): on the real clock its windows, graces and packs would fall due
    months ahead (a user charged again only then), and every later start would find
    the stored data far ahead. Refused, saying when it can be ended; up to an hour
    ahead (a skew, as ``not_before`` takes it) it moves, and the stored data's
    latest instant (the purchase) is the floor of that start: nothing is dated
    before the test clock's last entries."""
    with running(database) as srv:  # the test clock, at 2026-01-01
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            client(A + "AdvanceClock", {"toTime": "2026-07-01T00:00:00Z"})  # past the wall
            client(A + "CreateTeam", {"team_id": "acme"})
            client(A + "PurchaseTokens", {"team_id": "acme", "tokens": 10, "request_id": "po-1"})
        finally:
            client.close()
    with (
        pytest.raises(app.StartRefused) as info,
        running(database, test_clock=None, end_test_clock=True),
    ):
        pass
    assert "test clock is at 2026-07-01T00:00:00+00:00, ahead of this machine's clock" in str(
        info.value
    )
    wall.at = datetime(2026, 7, 1, tzinfo=UTC) - MAX_STAND_STILL
    with capture_logs() as lines, running(database, test_clock=None, end_test_clock=True) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            assert client(A + "GetServerInfo", {})["now"] == "2026-07-01T00:00:00Z"
        finally:
            client.close()
    assert _stepped_back(lines) == [3600.0]


FAR_BEHIND = "wall_clock_far_behind_stored_data"


def test_s7_a_restart_on_a_wall_clock_far_behind_the_stored_data_runs_on_it_and_says_so(
    database: Path | str, wall: Wall
) -> None:
    """More than MAX_STAND_STILL (an hour) behind is a clock to set right, not a
    skew: standing still until it caught up, no grace, lease or pack would end."""
    _purchase_on_the_real_clock(database, "po-1")
    wall.at = WALL_AT - MAX_STAND_STILL - timedelta(seconds=1)
    with capture_logs() as lines:
        now, _ = _purchase_on_the_real_clock(database, "po-2")
    assert now == "2026-03-02T07:59:59Z"
    assert _stepped_back(lines) == []
    assert [line["seconds"] for line in lines if line["event"] == FAR_BEHIND] == [3601.0]
    # (Up to it, exactly an hour behind, it stands still: the test before.)


def _my_coverage(desk: Desk, user: str, product: str) -> str:
    mine = desk.admin(L + "ListMyProducts", {}, token=desk.keys[user])["products"]
    return str(next(p["coverage"] for p in mine if p["product_id"] == product))


def test_s7_c2_a_restart_on_a_clock_stepped_back_does_not_revive_an_ended_trial(
    tmp_path: Path, wall: Wall
) -> None:
    """A trial's end writes no dated row when no session runs under it: the clock's
    high-water mark is stored with the deadlines it fires, so a restart after NTP
    stepped the clock back (within the hour a start stands still for) stands at the
    time the trial was seen ended, and does not cover the user's Entitle again."""
    db, end = tmp_path / "t.db", WALL_AT + timedelta(minutes=30)
    with running(db, test_clock=None) as srv:  # 09:00: a trial until 09:30
        desk = Desk(srv.target)
        try:
            desk.sheet().team("alpha", 100)
            ann = desk.user("alpha", "ann")
            desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": rfc3339(end)})
            keys = dict(desk.keys)
        finally:
            desk.close()
    for at in (40, 20):  # 09:40: the trial is over; then the clock is stepped back
        wall.at = WALL_AT + timedelta(minutes=at)
        with capture_logs() as lines, running(db, test_clock=None) as srv:
            desk = Desk(srv.target)
            desk.keys = dict(keys)
            try:
                assert desk.now() == "2026-03-02T09:40:00Z"
                assert _my_coverage(desk, ann, "REVIT") == "COVERAGE_TOKENS"
            finally:
                desk.close()
        assert _stepped_back(lines) == ([] if at == 40 else [1200.0])
    with running(db, test_clock=None) as srv:
        desk = Desk(srv.target)
        desk.keys = dict(keys)
        try:
            assert desk.entitle(ann, "REVIT")["coverage"] == "COVERAGE_TOKENS"
        finally:
            desk.close()


def test_s7_a_clock_far_behind_is_said_at_each_start_and_never_lowers_the_stored_time(
    database: Path | str, wall: Wall
) -> None:
    """docs/rules.md §7: a clock more than an hour behind the stored data is taken as
    it is, with an error at each such start. The entries such a start dates earlier
    (a purchase at 07:00) do not lower the time later starts stand at: the second
    far-behind start says so again, and a start half an hour behind 09:00 stands at
    09:00, with its warning, rather than dating more before it."""
    _purchase_on_the_real_clock(database, "po-1")  # 09:00
    for minutes, request_id in ((0, "po-2"), (1, "po-3")):
        wall.at = WALL_AT - timedelta(hours=2, minutes=-minutes)
        with capture_logs() as lines:
            _purchase_on_the_real_clock(database, request_id)
        assert [line["event"] for line in lines if line["event"] == FAR_BEHIND] == [FAR_BEHIND]
    wall.at = WALL_AT - timedelta(minutes=30)
    with capture_logs() as lines:
        now, entries = _purchase_on_the_real_clock(database, "po-4")
    assert (now, entries[-1]["time"]) == ("2026-03-02T09:00:00Z",) * 2
    assert _stepped_back(lines) == [1800.0]


# -- group commit ---------------------------------------------------------------------


async def _purchase_many(target: str, n: int) -> list[api.PurchaseTokensResponse]:
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        return await asyncio.gather(
            *(
                stub.PurchaseTokens(
                    api.PurchaseTokensRequest(
                        team_id="acme", tokens=i + 1, request_id=f"burst-{i}"
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                for i in range(n)
            )
        )


def test_store_group_commit_shares_commits_and_keeps_every_purchase(database: Path | str) -> None:
    db = database
    n = 200
    with running(db) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            client(A + "CreateTeam", {"team_id": "acme"})
        finally:
            client.close()
        store = srv.server.store
        assert store is not None
        commits_before = store.commits
        replies = asyncio.run(_purchase_many(srv.target, n))
        commits = store.commits - commits_before
        pack_ids = {r.token_pack.pack_id for r in replies}
    assert len(pack_ids) == n
    print(f"group commit: {n} concurrent purchases in {commits} commits")
    assert 1 <= commits < n, f"{n} purchases took {commits} commits"

    with running(db) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            stored = client(A + "ListTokenPacks", {"team_id": "acme", "page_size": 1000})["packs"]
            team = client(A + "GetTeam", {"team_id": "acme"})["team"]
            entries = client(A + "ListLedgerEntries", {"team_id": "acme", "page_size": 1000})[
                "entries"
            ]
        finally:
            client.close()
    assert {p["pack_id"] for p in stored} == pack_ids
    assert int(team["available_tokens"]) == n * (n + 1) // 2
    assert len(entries) == n
    assert len({e["entry_id"] for e in entries}) == n


# -- the store on its own (aiosqlite on tmp_path) --------------------------------------


async def test_store_open_applies_every_migration_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        tables = {
            r[0] for r in await store.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert {"meta", "teams", "packs", "ledger", "holds", "products"} <= tables
        journal = await store.query("PRAGMA journal_mode")
        assert journal[0][0] == "wal"
        await store.commit([MetaValue("marker", "kept")])
    finally:
        await store.close()

    # Reopening applies nothing again (CREATE TABLE would fail) and keeps the data.
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        snapshot = await store.load()
        assert snapshot.of(MetaValue) == [MetaValue("marker", "kept")]
    finally:
        await store.close()


async def _store_live_and_ended(
    db: Path, live_lease_start: datetime | None = None
) -> tuple[Session, Session]:
    """Sessions ses_0 (live; its lease begun at ``live_lease_start`` if given) and
    ses_1 (ended when its lease ran out), stored in ``db``: what a migration test
    turns back into an older release's database."""
    live, ended = _session(0), _session(1)
    if live_lease_start is not None:
        live.lease_start = live_lease_start
    ended.state, ended.state_since = SessionState.ENDED, ended.lease_end
    store = await Store.open(db)
    try:
        await store.commit([live, ended])
    finally:
        await store.close()
    return live, ended


async def test_store_migration_8_keeps_live_sessions_out_of_sessions_end(tmp_path: Path) -> None:
    """A database of release 7 (``sessions_end`` over every session, the live ones'
    NULLs included) gets the partial index; the start's load still finds the
    latest end through it, and the sessions are all still there."""
    db = tmp_path / "s.db"
    await _store_live_and_ended(db)
    with sqlite3.connect(db) as conn:  # back to what release 7 left
        conn.execute("DROP INDEX sessions_end")
        conn.execute("CREATE INDEX sessions_end ON sessions (end_time)")
        conn.execute("ALTER TABLE sessions DROP COLUMN lease_start")  # migration 9's
        conn.execute("ALTER TABLE packs DROP COLUMN bought_by")  # migration 11's
        conn.execute("DROP TABLE audit_teams")  # migration 12's
        conn.execute("DROP INDEX ledger_team_captures")  # migration 13's
        conn.execute("DROP INDEX ledger_team_moves")
        conn.execute("DROP INDEX activity_team_long")  # migration 14's
        conn.execute("DROP TABLE sessions_older_loaded")  # migration 16's
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 16
        index = await store.query("SELECT sql FROM sqlite_master WHERE name = 'sessions_end'")
        plan = await store.query(
            "EXPLAIN QUERY PLAN SELECT MAX(end_time) FROM sessions WHERE end_time IS NOT NULL"
        )
        kept = await store.query("SELECT session_id FROM sessions ORDER BY session_id")
    finally:
        await store.close()
    assert index[0][0].endswith("WHERE end_time IS NOT NULL")
    assert any("sessions_end" in str(row[-1]) for row in plan)
    assert kept == [("ses_0",), ("ses_1",)]


async def test_m7_store_migration_9_derives_each_lease_start_from_the_stored_lease_end(
    tmp_path: Path,
) -> None:
    """A database of release 8 stored each session's lease end alone; migration 9
    adds when the lease began, 24 hours before it, so every loaded session's lease
    ends when it did (M7), live or ended."""
    db = tmp_path / "s.db"
    _, ended = await _store_live_and_ended(db, BEGAN + timedelta(hours=3, microseconds=7))
    with sqlite3.connect(db) as conn:  # back to what release 8 left
        conn.execute("ALTER TABLE sessions DROP COLUMN lease_start")
        conn.execute("ALTER TABLE packs DROP COLUMN bought_by")  # migration 11's
        conn.execute("DROP TABLE audit_teams")  # migration 12's
        conn.execute("DROP INDEX ledger_team_captures")  # migration 13's
        conn.execute("DROP INDEX ledger_team_moves")
        conn.execute("DROP INDEX activity_team_long")  # migration 14's
        conn.execute("DROP TABLE sessions_older_loaded")  # migration 16's
        conn.execute("PRAGMA user_version = 8")
    conn.close()
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 16
        loaded = {s.session_id: s for s in (await store.load()).of(Session)}
    finally:
        await store.close()
    assert loaded["ses_0"].lease_start == BEGAN + timedelta(hours=3, microseconds=7)
    assert loaded["ses_0"].lease_end == BEGAN + timedelta(hours=27, microseconds=7)
    assert loaded["ses_1"].lease_end == ended.lease_end
    assert loaded["ses_1"].end_time == ended.lease_end


async def test_store_migration_10_keeps_holds_meters_and_devices_in_their_key_btree(
    tmp_path: Path,
) -> None:
    """A database of release 9 kept holds, meters and devices as rowid tables, each
    with its primary key in an index beside it; migration 10 makes them WITHOUT
    ROWID tables (one B-tree a row: a hold or meter taken or let go writes one page,
    not two) and every row comes through, loaded as it was."""
    db = tmp_path / "s.db"
    hold = Hold.of("h1", "acme", 10, (("pk_1", 6), ("pk_3", 4)), Cause("s1", "ann", "ACAD"), BEGAN)
    meter = Meter("acme", "ann", "ACAD", ChargeState.GRACE, BEGAN, BEGAN + timedelta(minutes=5))
    charged = Meter("acme", "bob", "ACAD", ChargeState.CHARGED, BEGAN, BEGAN + timedelta(days=1))
    devices = [
        Device("ann", "ACAD", "d1", BEGAN, BEGAN + timedelta(hours=1)),
        Device("ann", "ACAD", "d2", BEGAN, BEGAN),
    ]
    store = await Store.open(db)
    try:
        await store.commit([hold, meter, charged, *devices])
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:  # back to what release 9 left: rowid tables
        for name in ("holds", "meters", "devices"):
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            conn.execute(f"ALTER TABLE {name} RENAME TO old_{name}")
            conn.execute(sql[0].replace(") WITHOUT ROWID", ")"))
            conn.execute(f"INSERT INTO {name} SELECT * FROM old_{name}")  # noqa: S608 - our names
            conn.execute(f"DROP TABLE old_{name}")
        conn.execute("ALTER TABLE packs DROP COLUMN bought_by")  # migration 11's
        conn.execute("DROP TABLE audit_teams")  # migration 12's
        conn.execute("DROP INDEX ledger_team_captures")  # migration 13's
        conn.execute("DROP INDEX ledger_team_moves")
        conn.execute("DROP INDEX activity_team_long")  # migration 14's
        conn.execute("DROP TABLE sessions_older_loaded")  # migration 16's
        conn.execute("PRAGMA user_version = 9")
        autoindexes = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_%'"
            " AND tbl_name IN ('holds', 'meters', 'devices')"
        ).fetchone()[0]
    conn.close()
    assert autoindexes == 3  # the release-9 shape: a key index beside each table
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 16
        shapes = await store.query(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name IN ('holds', 'meters', 'devices')"
        )
        snapshot = await store.load()
    finally:
        await store.close()
    assert sorted(name for name, _ in shapes) == ["devices", "holds", "meters"]  # no index left
    assert all(sql.endswith("WITHOUT ROWID") for _, sql in shapes)
    assert snapshot.of(Hold) == [hold]

    def rows(objs: list[Any]) -> list[tuple[object, ...]]:  # meters and devices: eq=False
        return sorted(TABLES[type(o)].to_row(o) for o in objs)

    assert rows(snapshot.of(Meter)) == rows([meter, charged])
    assert rows(snapshot.of(Device)) == rows(devices)


async def test_t1_store_migration_11_names_each_packs_buyer_from_its_purchase(
    tmp_path: Path,
) -> None:
    """A database of release 10 kept no buyer: migration 11 takes it from the pack's
    PURCHASE entry (pk_1, bought by acme, moved to beta since, T5), else the team
    holding it (pk_2, whose entries a test left out)."""
    db = tmp_path / "s.db"
    moved = TokenPack("pk_1", "beta", 10, BEGAN, BEGAN + timedelta(days=365), "po-1", 10)
    kept = TokenPack("pk_2", "beta", 5, BEGAN, BEGAN + timedelta(days=365), "po-2", 5)
    bought = LedgerEntry(1, BEGAN, EntryKind.PURCHASE, "acme", "pk_1", 10, 10, 0, Cause())
    moved_out = LedgerEntry(2, BEGAN, EntryKind.MOVE_OUT, "acme", "pk_1", 10, -10, 0, Cause())
    store = await Store.open(db)
    try:
        await store.commit([moved, kept, bought, moved_out])
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:  # back to what release 10 left
        conn.execute("ALTER TABLE packs DROP COLUMN bought_by")
        conn.execute("DROP TABLE audit_teams")  # migration 12's
        conn.execute("DROP INDEX ledger_team_captures")  # migration 13's
        conn.execute("DROP INDEX ledger_team_moves")
        conn.execute("DROP INDEX activity_team_long")  # migration 14's
        conn.execute("DROP TABLE sessions_older_loaded")  # migration 16's
        conn.execute("PRAGMA user_version = 10")
    conn.close()
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 16
        loaded = {p.pack_id: p.bought_by for p in (await store.load()).of(TokenPack)}
    finally:
        await store.close()
    assert loaded == {"pk_1": "acme", "pk_2": "beta"}


async def test_store_commit_then_load_round_trips_every_object(tmp_path: Path) -> None:
    t = datetime(2028, 2, 29, 12, 34, 56, 789012, tzinfo=UTC)
    team = Team(
        "acme",
        "Acme Corp",
        Plan.PREMIUM,
        create_time=t,
        guest_default_assignments=True,
        default_product_ids=frozenset({"ACAD", "REVIT"}),
    )
    other = Team("beta", "Beta", Plan.STANDARD, create_time=datetime(2026, 1, 1, tzinfo=UTC))
    pack = TokenPack(
        "pk_1",
        "acme",
        100,
        purchase_time=t,
        expire_time=datetime(2029, 2, 28, 12, 34, 56, 789012, tzinfo=UTC),
        request_id="po-1",
        remaining=60,
        held=10,
        consumed=25,
        expired_tokens=5,
        expired=False,
        bought_by="beta",
    )
    expired = TokenPack(
        "pk_2",
        "beta",
        7,
        purchase_time=t,
        expire_time=t,
        remaining=0,
        expired_tokens=7,
        expired=True,
    )
    hold = Hold.of(
        "h1", "acme", 10, (("pk_1", 6), ("pk_3", 4)), Cause("s1", "ann@example.com", "ACAD"), t
    )
    gone = Hold.of("h2", "acme", 1, (("pk_1", 1),), Cause(), t)
    product = Product(
        "ACAD",
        "AutoCAD",
        10,
        ProductKind.PRODUCT,
        "",
        True,
        frozenset({Platform.WINDOWS, Platform.LINUX}),
        2022,
    )
    plugin = Product(
        "ACADEL", "Electrical", 0, ProductKind.PLUGIN, "ACAD", False, frozenset({Platform.MACOS})
    )
    entry = LedgerEntry(
        7, t, EntryKind.HOLD, "acme", "pk_1", 6, -6, 6, Cause("s1", "ann@example.com", "ACAD")
    )

    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        changes = Changes()
        for obj in (team, other, pack, expired, hold, gone, product, plugin, entry):
            changes.upsert(obj)
        await store.commit(changes)
        removal = Changes()
        removal.delete(gone)
        await store.commit(removal)
    finally:
        await store.close()

    store = await Store.open(db)
    try:
        snapshot = await store.load()
        assert sorted(snapshot.of(Team), key=lambda x: x.team_id) == [team, other]
        assert sorted(snapshot.of(TokenPack), key=lambda x: x.pack_id) == [pack, expired]
        assert snapshot.of(Hold) == [hold]
        assert sorted(snapshot.of(Product), key=lambda x: x.product_id) == [product, plugin]
        assert snapshot.max_ledger_seq == 7
        assert await store.ledger_page(entry.team_id, 0, 10) == [entry]
        loaded = snapshot.of(Team)[0]
        assert loaded.create_time.tzinfo is not None
    finally:
        await store.close()


async def test_store_load_times_each_table_it_loads_and_no_other(tmp_path: Path) -> None:
    """``load_seconds`` names every table that lives in memory (the million-session
    benchmark prints them) and none that stays on disk (ledger, activity, audit)."""
    store = await Store.open(tmp_path / "s.db")
    try:
        changes = Changes()
        changes.upsert(Team("acme", "Acme", Plan.STANDARD, datetime(2026, 1, 1, tzinfo=UTC)))
        await store.commit(changes)
        snapshot = await store.load()
        loaded = {t.name for t in TABLES.values() if t.name not in NOT_LOADED}
        assert set(store.load_seconds) == loaded
        assert "ledger" not in store.load_seconds and "sessions" in store.load_seconds
        assert all(seconds >= 0 for seconds in store.load_seconds.values())
        assert [t.team_id for t in snapshot.of(Team)] == ["acme"]
    finally:
        await store.close()


def test_store_load_given_up_reads_no_further_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load whose caller was cancelled (a stop while the server starts) ends at
    the next chunk instead of reading the rest of a million rows for nobody."""
    monkeypatch.setattr(sqlite_store, "LOAD_CHUNK", 2)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(10)])
    stop = threading.Event()
    decoded: list[int] = []

    def from_row(row: tuple[int]) -> int:
        decoded.append(row[0])
        stop.set()  # the caller is cancelled while the first chunk is decoded
        return row[0]

    table = Table("t", ("n",), ("n",), lambda n: (n,), from_row, order_by="ORDER BY n")
    seconds: dict[str, float] = {}
    with pytest.raises(sqlite_store.LoadStopped):
        sqlite_store._load_tables(conn, [(int, table), (str, table)], seconds, stop)
    assert decoded == [0, 1]  # one chunk of the ten rows, and no second table
    assert seconds == {}  # no table counted as loaded


async def test_store_load_cancelled_leaves_the_store_usable(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        changes = Changes()
        changes.upsert(Team("acme", "Acme", Plan.STANDARD, datetime(2026, 1, 1, tzinfo=UTC)))
        await store.commit(changes)
        loading = asyncio.ensure_future(store.load())
        await asyncio.sleep(0)  # on its way to the connection's thread
        loading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loading
        snapshot = await store.load()  # the connection is free again, nothing half-read
        assert [t.team_id for t in snapshot.of(Team)] == ["acme"]
        assert gc.isenabled()  # loading() ended with the cancelled load
    finally:
        await store.close()
