"""RULES AD2 in the store: an administrative change and its audit event are one
transaction, and ``verify`` checks the audit trail as it checks the ledger.

- A commit that fails stores neither the change nor its event, whichever of the
  two made it fail.
- ``python -m server`` killed with SIGKILL at varied moments under concurrent
  PurchaseTokens and AssignUsers, and started again each time: afterwards every
  pack has exactly one PurchaseTokens event naming it, every such event's pack
  exists, and the same holds for the members AssignUsers made; every
  acknowledged purchase is there; ``verify`` passes.
- ``verify`` finds an altered event, a deleted middle event and one slipped in
  (on both stores), and on SQLite, whose checkpoint anchors the end, deleted newest
  events and an event added by hand, also in a backup.
- An event of three teams (its more teams in ``audit_teams``) verifies, and a row
  of ``audit_teams`` deleted, altered or added by hand is found (on both stores).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from server.api.audit import AuditRecorder
from server.api.caller import THE_OPERATOR
from server.clock import TestClock
from server.domain.audit import event_digest
from server.domain.errors import DeviceInUse
from server.engine import Engine
from server.store import checkpoint
from server.store.audit import Verdict, verify
from server.store.backup import backup
from server.store.checkpoint import LedgerHead
from server.store.port import StoreFailed
from server.store.postgres import verify_postgres
from server.store.sqlite import Store
from server.tools import main as server_main
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.api.test_audit_api import three_team_host
from tests.engine.test_restore import _ann_and_acad, _entitle_ann
from tests.grpcurl import Grpcurl
from tests.licensing_desk import T0, A, Desk
from tests.pg import execute, fetch, run_sync
from tests.support import ADMIN_TOKEN, ServerProcess, running

# -- a failed commit stores neither ------------------------------------------------


async def _purchase_with_its_event(engine: Engine, request_id: str) -> None:
    """PurchaseTokens as the edge makes it: the audit draft, then the use case, in
    one task."""
    request = api.PurchaseTokensRequest(team_id="acme", tokens=5, request_id=request_id)
    AuditRecorder(engine.audit)("PurchaseTokens", request, THE_OPERATOR, ("acme",), request_id)
    await engine.accounts.purchase("acme", 5, request_id)


async def test_ad2_a_refused_call_stores_the_deadlines_it_fired_but_no_event_of_its_own(
    tmp_path: Path,
) -> None:
    """A device call first fires the deadlines already due (a busy loop may run it
    before the scheduler does) and stores them even when it is then refused: the
    draft of the refused call must not ride that commit as if it had changed
    something (AD2: only a change that succeeds leaves an event)."""
    clock = TestClock(T0)
    store = await Store.open(tmp_path / "tessera.db")
    engine = Engine(clock, store)
    try:
        await _ann_and_acad(engine)  # acme's 100 tokens, ACAD at 5 a day, Ann
        await _entitle_ann(engine, "r1")  # on d1: a hold, in grace
        clock.set(T0 + timedelta(minutes=10))  # the grace's end is due, not yet fired
        events = engine.audit.last_seq
        request = api.RemoveDeviceRequest(
            user_id="ann@example.com", product_id="ACAD", device_id="d1"
        )

        async def refused() -> None:
            AuditRecorder(engine.audit)("RemoveDevice", request, THE_OPERATOR, ("acme",), "")
            with pytest.raises(DeviceInUse):
                await engine.sessions.remove_device("ann@example.com", "ACAD", "d1", False)

        await asyncio.create_task(refused())
        assert engine.audit.last_seq == events
        assert engine.ledger.held("acme") == 0  # the capture the call fired, stored
        assert [p.consumed for p in engine.ledger.packs.values()] == [5]
    finally:
        await engine.stop()
        await store.close()
    assert verify(tmp_path / "tessera.db").ok


@pytest.mark.parametrize("broken", ["audit_events", "ledger"])
async def test_ad2_a_failed_commit_stores_neither_the_change_nor_its_event(
    tmp_path: Path, broken: str
) -> None:
    db = tmp_path / "tessera.db"
    store = await Store.open(db)
    try:
        engine = Engine(TestClock(T0), store)
        await engine.accounts.create_team("acme", "Acme", None)
        await asyncio.create_task(_purchase_with_its_event(engine, "first"))
        # Someone else takes the next row of one table: the next commit's insert there
        # fails, and with it the whole transaction.
        with sqlite3.connect(db) as conn:
            if broken == "audit_events":
                conn.execute(
                    "INSERT INTO audit_events SELECT seq + 1, event_id || 'x', time, actor, "
                    "actor_name, method, team_id, other_team_id, target, request_id, "
                    "request, hash FROM audit_events"
                )
            else:
                conn.execute(
                    "INSERT INTO ledger SELECT seq + 1, time, kind, team_id, pack_id, amount, "
                    "remaining_delta, held_delta, session_id, user_id, product_id, hash "
                    "FROM ledger"
                )
        conn.close()
        with pytest.raises(StoreFailed):
            await asyncio.create_task(_purchase_with_its_event(engine, "second"))
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        packs = conn.execute("SELECT request_id FROM packs ORDER BY request_id").fetchall()
        events = conn.execute("SELECT request_id FROM audit_events ORDER BY seq").fetchall()
    conn.close()
    assert packs == [("first",)]  # not "second"
    if broken == "ledger":
        assert events == [("first",)]  # the event of "second" is not there either
    else:  # the row put there by hand, not the event of "second"
        assert events == [("first",), ("first",)]


# -- kill -9 under concurrent administrative calls -----------------------------------

CYCLES = 4
WORKERS = 3
KILL_AFTER = (4, 13, 7, 21)  # acknowledged calls in each cycle before SIGKILL
MAX_CALLS = 400  # per worker and cycle: the loop is bounded whatever happens


class _Load:
    """Workers that alternate PurchaseTokens and AssignUsers until the server dies."""

    def __init__(self, target: str, cycle: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.cycle = cycle
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.packs: set[str] = set()
        self.users: set[str] = set()
        self.enough = threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(w,)) for w in range(WORKERS)]

    def _work(self, w: int) -> None:
        md = [("authorization", f"Bearer {ADMIN_TOKEN}")]
        for n in range(MAX_CALLS):
            name = f"c{self.cycle}w{w}n{n}"
            try:
                if n % 2:
                    request = api.PurchaseTokensRequest(team_id="acme", tokens=1, request_id=name)
                    pack = self.stub.PurchaseTokens(request, metadata=md, timeout=10)
                    with self.lock:
                        self.packs.add(pack.token_pack.pack_id)
                else:
                    users = [f"User {name} <{name}@example.com>"]
                    request = api.AssignUsersRequest(team_id="acme", users=users)
                    self.stub.AssignUsers(request, metadata=md, timeout=10)
                    with self.lock:
                        self.users.add(f"{name}@example.com")
            except grpc.RpcError:
                return  # the server is gone
            with self.lock:
                self.acknowledged += 1
                if self.acknowledged >= KILL_AFTER[self.cycle]:
                    self.enough.set()

    def close(self) -> None:
        for t in self.threads:
            t.join(30)
        self.channel.close()


def _stored(db: Path) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    with sqlite3.connect(db) as conn:
        packs = {p for (p,) in conn.execute("SELECT pack_id FROM packs")}
        members = {u for (u,) in conn.execute("SELECT user_id FROM members")}
        events = conn.execute("SELECT method, target FROM audit_events ORDER BY seq").fetchall()
    conn.close()
    return packs, members, [(m, t) for m, t in events]


@pytest.mark.timeout(240)
def test_ad2_kill_9_never_leaves_a_change_without_its_event_nor_an_event_without_its_change(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    acknowledged_packs: set[str] = set()
    acknowledged_users: set[str] = set()
    for cycle in range(CYCLES):
        srv = ServerProcess(db).start()
        try:
            if cycle == 0:
                admin = Grpcurl(srv.target, ADMIN_TOKEN)
                admin(A + "CreateTeam", {"team_id": "acme"})
                admin.close()
            load = _Load(srv.target, cycle)
            for t in load.threads:
                t.start()
            assert load.enough.wait(60), "the load did not get going"
            srv.kill()  # SIGKILL while the workers' calls are in flight
            load.close()
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.kill()
        acknowledged_packs |= load.packs
        acknowledged_users |= load.users
        assert verify(db).ok, verify(db).problems  # as the crash left it

    packs, members, events = _stored(db)
    bought = Counter(t for m, t in events if m == "PurchaseTokens")
    assert set(bought) == packs and set(bought.values()) == {1}  # each pack: one event
    assert acknowledged_packs <= packs  # nothing acknowledged was lost
    assigned = Counter(
        re.fullmatch(r"User \S+ <(\S+)>", t).group(1)  # type: ignore[union-attr]
        for m, t in events
        if m == "AssignUsers"
    )
    assert set(assigned) == members and set(assigned.values()) == {1}
    assert acknowledged_users <= members
    assert len(packs) >= sum(KILL_AFTER) // 3  # the load really ran
    # And a server starts on it again and goes on with the chain.
    with running(db) as again:
        admin = Grpcurl(again.target, ADMIN_TOKEN)
        admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 1, "request_id": "after"})
        admin.close()
    assert verify(db).ok


# -- verify finds what was done to the trail -----------------------------------------


@pytest.fixture
def trail(database: Path | str) -> Path | str:
    """A stopped server's database with six audit events, on either store."""
    return _six_events(database)


def _six_events(database: Path | str) -> Path | str:
    """A stopped server's database with six audit events (the team, five purchases)."""
    with running(database) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        admin(A + "CreateTeam", {"team_id": "acme"})
        for n in range(5):
            body = {"team_id": "acme", "tokens": n + 1, "request_id": f"r{n}"}
            admin(A + "PurchaseTokens", body)
        admin.close()
    verdict = _verify(database)
    assert verdict.ok and verdict.events == 6, verdict
    assert "; 6 audit events chained;" in verdict.summary()
    return database


def _verify(database: Path | str) -> Verdict:
    if isinstance(database, Path):
        return verify(database)
    return run_sync(lambda: verify_postgres(database))


def _tamper(database: Path | str, *statements: str) -> list[str]:
    if isinstance(database, Path):
        with sqlite3.connect(database) as conn:
            for sql in statements:
                conn.execute(sql)
        conn.close()
    else:
        execute(database, *statements)
    return _verify(database).problems


def test_ad2_verify_finds_an_altered_event(trail: Path | str) -> None:
    problems = _tamper(trail, "UPDATE audit_events SET actor_name = 'someone' WHERE seq = 3")
    assert problems == [
        "audit event 000000000003 (PurchaseTokens by operator) does not match its hash: "
        "it or an event before it was altered"
    ]


def test_ad2_verify_finds_a_deleted_middle_event(trail: Path | str) -> None:
    problems = _tamper(trail, "DELETE FROM audit_events WHERE seq = 4")
    assert problems == ["audit event 000000000004 is missing (next stored is 000000000005)"]


def test_ad2_verify_finds_an_event_slipped_in_between_two_others(trail: Path | str) -> None:
    problems = _tamper(
        trail,
        "UPDATE audit_events SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE audit_events SET seq = seq - 99 WHERE seq >= 103",
        "INSERT INTO audit_events SELECT 3, 'ev_forged', time, actor, actor_name, method, "
        "team_id, other_team_id, target, request_id, request, hash FROM audit_events "
        "WHERE seq = 2",
    )
    assert problems == [
        "audit event 000000000003 (PurchaseTokens by operator) does not match its hash: "
        "it or an event before it was altered"
    ]


def test_ad2_verify_checks_the_more_teams_of_an_event_of_three_teams(
    database: Path | str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator ends a host whose plugins run in beta and gamma: its event keeps
    gamma in ``audit_teams``, which its hash covers. ``python -m server verify``
    passes; gamma's row deleted, altered, or one added (to that event or to none)
    is each found, and the database verifies again once it is put back."""
    with running(database) as srv:
        desk = Desk(srv.target).sheet()
        try:
            _, host, _, _ = three_team_host(desk)
            desk.a("EndSession", {"session_id": host})
            desk.a("PurchaseTokens", {"team_id": "gamma", "tokens": 1, "request_id": "later"})
        finally:
            desk.close()
    rows = _select(database, "SELECT seq, team_id FROM audit_teams")
    assert len(rows) == 1 and rows[0][1] == "gamma", rows
    seq = int(str(rows[0][0]))
    assert server_main(["verify", "--db", str(database)]) == 0
    assert "audit events chained" in capsys.readouterr().out
    broken = [
        f"audit event {seq:012d} (EndSession by operator) does not match its hash: "
        "it or an event before it was altered"
    ]
    gamma = _more_team("gamma", seq)
    assert _tamper(database, "DELETE FROM audit_teams") == broken
    assert server_main(["verify", "--db", str(database)]) == 1
    assert _tamper(database, gamma) == []
    assert _tamper(database, "UPDATE audit_teams SET team_id = 'delta'") == broken
    assert _tamper(database, "UPDATE audit_teams SET team_id = 'gamma'") == []
    added = _more_team("delta", seq)
    assert _tamper(database, added) == broken
    assert _tamper(database, "DELETE FROM audit_teams WHERE team_id = 'delta'") == []
    added = _more_team("delta", seq + 1)
    problem = _tamper(database, added)
    assert problem == [
        f"audit event {seq + 1:012d} (PurchaseTokens by operator) does not match its hash: "
        "it or an event before it was altered"
    ]
    assert _tamper(database, "UPDATE audit_teams SET seq = 999 WHERE team_id = 'delta'") == [
        "audit_teams names audit event 000000000999, which is not stored (teams delta): "
        "it was added by hand, or its event removed"
    ]
    assert server_main(["verify", "--db", str(database)]) == 1


def _more_team(team_id: str, seq: int) -> str:
    """A row of ``audit_teams`` added by hand (the test's own values)."""
    return f"INSERT INTO audit_teams (team_id, seq) VALUES ('{team_id}', {seq})"  # noqa: S608


def _select(database: Path | str, sql: str) -> list[tuple[object, ...]]:
    if isinstance(database, Path):
        with sqlite3.connect(database) as conn:
            found = conn.execute(sql).fetchall()
        conn.close()
        return found
    return [tuple(r) for r in fetch(database, sql)]


# The end of the trail is anchored by SQLite's checkpoint; PostgreSQL keeps none
# (docs/postgres.md), so these two are SQLite's.


def test_ad2_verify_finds_the_newest_events_deleted(tmp_path: Path) -> None:
    db = _six_events(tmp_path / "tessera.db")
    problems = _tamper(db, "DELETE FROM audit_events WHERE seq >= 5")
    assert problems == [
        "the audit trail ends at event 000000000004 but its checkpoint says 000000000006: "
        "the newest events were deleted, or the database was replaced by an older copy"
    ]


def test_ad2_verify_finds_an_event_appended_by_hand(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    _six_events(db)
    # A seventh event whose hash follows the chain, appended while no server ran.
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT * FROM audit_events WHERE seq = 6").fetchone()
        fields = (7, "ev_forged", *row[2:5], "RevokeAdminKey", *row[6:11])
        forged = (*fields, event_digest(row[11], *fields))
        conn.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", forged)
    conn.close()
    assert verify(db).problems == [
        "the audit trail goes on to event 000000000007 but its server stopped at "
        "000000000006: events were added while no server ran"
    ]


def test_ad2_a_backup_anchors_its_audit_trail_too(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    _six_events(db)
    copy = tmp_path / "copy.db"
    backup(db, copy)
    head = checkpoint.read(checkpoint.checkpoint_path(copy))
    assert head is not None and (head.audit_seq, head.stopped) == (6, True)
    assert verify(copy).ok
    assert _tamper(copy, "DELETE FROM audit_events WHERE seq = 6") == [
        "the audit trail ends at event 000000000005 but its checkpoint says 000000000006: "
        "the newest events were deleted, or the database was replaced by an older copy"
    ]


def test_ad2_the_checkpoint_line_holds_both_heads_in_its_slot(tmp_path: Path) -> None:
    path = tmp_path / "x.ledger-head"
    big = 10**13  # 14 digits: the generation and both chains, far past any real count
    heads = [
        LedgerHead(big, "f" * 64, False, big, "e" * 64),
        LedgerHead(big + 1, "d" * 64, True, big + 1, "c" * 64),
        LedgerHead(3, "b" * 64),  # no audit event: the line as before the audit trail
    ]
    anchor = checkpoint.Anchor(path)
    try:
        for head in heads:
            for _ in range(2):  # both slots, written in turn
                anchor.write(head, sync=False)
            assert checkpoint.read(path) == head
    finally:
        anchor.close()


def test_ad2_a_checkpoint_written_before_its_keys_were_renamed_is_read(tmp_path: Path) -> None:
    """Releases from bbfb08e to fc69ae6~1 wrote the audit head as ``audit_seq`` and
    ``audit_hash`` (with spaces); fc69ae6 renamed them ``aseq``/``ahash`` and read only
    those: the sum no longer matched and every database such a release had run was
    refused ("checkpoint ... is unreadable"), its backups too. The old line is read."""
    db = _six_events(tmp_path / "tessera.db")
    path = checkpoint.checkpoint_path(db)
    head = checkpoint.read(path)
    assert head is not None and head.audit_seq == 6
    gen = 34
    old = {"gen": gen, "seq": head.seq, "hash": head.hash, "stopped": True}
    old |= {"audit_seq": head.audit_seq, "audit_hash": head.audit_hash}
    old["sum"] = checkpoint._sum(gen, dataclasses.replace(head, stopped=True))
    path.write_bytes(json.dumps(old).encode().ljust(checkpoint.SLOT - 1) + b"\n")
    assert checkpoint.read(path) == dataclasses.replace(head, stopped=True)
    assert verify(db).ok
