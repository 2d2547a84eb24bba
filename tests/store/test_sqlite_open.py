"""What opening a SQLite database does before it serves (``Store.open``,
``server/store/sqlite.py``): an older release's database is migrated before its
ledger's head is read, and its hash chain is filled in where it had none; a
newer release's is refused with its checkpoint left as the last stop wrote it;
another application's SQLite database is refused and left as it was."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.domain.changes import Changes
from server.domain.ledger import Cause, Ledger, LedgerEntry, TokenPack
from server.store import checkpoint
from server.store.audit import verify
from server.store.checkpoint import LedgerMismatch
from server.store.codec import TABLES
from server.store.schema import MIGRATIONS
from server.store.sqlite import DatabaseUnusable, Store
from tests.support import ADMIN_TOKEN
from tests.test_startup import start_server

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _history() -> tuple[list[LedgerEntry], list[TokenPack]]:
    """A ledger as the domain makes it: two purchases, a hold over both packs
    (T3), captured: six entries, chained from the genesis hash."""
    ledger, changes = Ledger(), Changes()
    ledger.add_team("acme")
    ids = iter(["pk_1", "pk_2"])
    ledger.purchase("acme", 5, "po-1", T0, lambda: next(ids), changes)
    ledger.purchase("acme", 100, "po-2", T0 + timedelta(hours=1), lambda: next(ids), changes)
    cause = Cause("ses_1", "ann@x.io", "ACAD")
    hold = ledger.hold("acme", 8, cause, T0 + timedelta(hours=2), "h_1", changes)
    ledger.capture(hold, T0 + timedelta(hours=3), changes)
    entries = [item for item in changes.items if isinstance(item, LedgerEntry)]
    return entries, list(ledger.packs.values())


def _schema_3_database(db: Path, *objs: object) -> None:
    """A database as a release of schema 3 left it (migrations 1-3 alone: no hash
    column in the ledger, no side file), holding ``objs`` in the columns it had."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for script in MIGRATIONS[:3]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        for obj in objs:
            table = TABLES[type(obj)]
            had = [r[1] for r in conn.execute(f"PRAGMA table_info({table.name})")]
            row = dict(zip(table.columns, table.to_row(obj), strict=True))
            assert set(had) <= set(row)
            marks = ", ".join("?" * len(had))
            sql = f"INSERT INTO {table.name} ({', '.join(had)}) VALUES ({marks})"  # noqa: S608
            conn.execute(sql, [row[c] for c in had])
        conn.execute("PRAGMA user_version = 3")
    finally:
        conn.close()


async def test_store_a_schema_3_database_is_migrated_and_its_ledger_chained(
    tmp_path: Path,
) -> None:
    """Schema 3 kept no hash in the ledger: the start read the ledger's head
    (``SELECT seq, hash``) before migrating and failed on "no such column: hash".
    Now it migrates first, fills the chain in for the entries that came without
    one (the ledger's own ``entry_digest``, in seq order), and ``verify`` passes."""
    db = tmp_path / "tessera.db"
    entries, packs = _history()
    assert len(entries) == 6
    _schema_3_database(db, *entries, *packs)
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        stored = await store.query("SELECT seq, hash FROM ledger ORDER BY seq")
        snap = await store.load()
    finally:
        await store.close()
    assert stored == [(e.seq, e.hash) for e in entries]  # the chain the ledger makes
    assert (snap.max_ledger_seq, snap.last_ledger_hash) == (entries[-1].seq, entries[-1].hash)
    verdict = verify(db)
    assert verdict.problems == []
    assert (verdict.entries, verdict.packs, verdict.anchored) == (6, 2, 6)


async def test_store_a_schema_3_database_without_a_ledger_opens_too(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    _schema_3_database(db)
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()
    assert verify(db).problems == []


async def test_store_a_start_refused_for_a_newer_schema_leaves_the_checkpoint_stopped(
    tmp_path: Path,
) -> None:
    """The ledger's head was anchored "running" (stopped: false) before the schema
    was checked, so a start refused for a newer release's database cleared the
    mark a clean stop left, and entries added while no server ran were no longer
    refused at the next start (``checkpoint.py``)."""
    db = tmp_path / "tessera.db"
    entries, packs = _history()
    store = await Store.open(db)
    try:
        await store.commit([*entries, *packs])
    finally:
        await store.close()
    stopped = checkpoint.read(checkpoint.checkpoint_path(db))
    assert stopped == checkpoint.LedgerHead(6, entries[-1].hash, stopped=True)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")  # a newer release's
    conn.close()
    with pytest.raises(DatabaseUnusable, match="newer than this release"):
        await Store.open(db)
    assert checkpoint.read(checkpoint.checkpoint_path(db)) == stopped
    # So an entry appended while no server ran is still refused at the next start.
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute(
            "INSERT INTO ledger SELECT seq + 1, time, kind, team_id, pack_id, amount, "
            "remaining_delta, held_delta, session_id, user_id, product_id, hash "
            "FROM ledger WHERE seq = 6"
        )
    conn.close()
    with pytest.raises(LedgerMismatch, match="added while no server ran"):
        await Store.open(db)


def _another_applications_database(db: Path, user_version: int) -> bytes:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, title TEXT)")
    conn.execute("INSERT INTO dashboard (title) VALUES ('prod')")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    os.chmod(db, 0o644)
    return db.read_bytes()


@pytest.mark.parametrize(
    ("user_version", "why"),
    [(0, "no schema version"), (7, "schema version 7, not Tessera's tables")],
)
async def test_store_another_applications_sqlite_database_is_refused_and_left_as_it_was(
    tmp_path: Path, user_version: int, why: str
) -> None:
    """docs/security.md: a file of something else is refused in one line and left
    as it was. Another application's SQLite database was taken over: switched to
    WAL, tightened to 0600, given Tessera's tables and side files."""
    db = tmp_path / "grafana.db"
    before = _another_applications_database(db, user_version)
    with pytest.raises(DatabaseUnusable) as refused:
        await Store.open(db)
    assert str(refused.value) == (
        f"--db {db} is not a Tessera database: it is another application's SQLite "
        f"database (1 table of its own: 'dashboard'; {why}); it was left as it was: "
        "give --db a Tessera database, or a new file's name to make one"
    )
    assert db.read_bytes() == before
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grafana.db"]


def test_store_another_applications_database_is_refused_in_one_line_at_start(
    tmp_path: Path,
) -> None:
    db = tmp_path / "grafana.db"
    before = _another_applications_database(db, 0)
    started = start_server("--db", str(db), "--admin-token", ADMIN_TOKEN)
    assert started.returncode == 1
    (line,) = started.stderr.splitlines()
    assert line.startswith(f"tessera-server: --db {db} is not a Tessera database: ")
    assert "Traceback" not in started.stdout
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grafana.db"]


async def test_store_a_sqlite_file_with_no_tables_is_still_made_a_tessera_database(
    tmp_path: Path,
) -> None:
    """Only a database with tables of its own is another application's: an empty
    SQLite file (made by ``sqlite3 FILE`` and a command that wrote nothing, or a
    table made and dropped) is a new database, as a missing file is."""
    db = tmp_path / "tessera.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE scratch (x)")
    conn.execute("DROP TABLE scratch")
    conn.commit()
    conn.close()
    assert db.stat().st_size > 0
    store = await Store.open(db)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()
    store = await Store.open(db)  # and, once made, it is Tessera's
    await store.close()


async def test_store_another_applications_database_still_in_its_log_is_refused_too(
    tmp_path: Path,
) -> None:
    """A young WAL database of an application that is running: its tables are in
    its log (``-wal``) alone, not yet in the file."""
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    try:
        app.execute("PRAGMA journal_mode=WAL")
        app.execute("PRAGMA wal_autocheckpoint=0")
        app.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
        assert (tmp_path / "app.db-wal").stat().st_size > 0
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "app.db-shm"}
        with pytest.raises(DatabaseUnusable, match=r"not a Tessera database.*'jobs'"):
            await Store.open(db)
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "app.db-shm"}
        assert after == before
    finally:
        app.close()
