"""Tamper-evident ledger and online backups (issue 6: verify, backup).

The ledger's hash chain and the packs' sums are checked by
``python -m server verify``; an edit made by hand with sqlite3 is found and
named. ``python -m server backup`` copies a database while the server runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server import tools
from server.store import audit as audit_mod
from server.store import backup as backup_mod
from tests.grpcurl import Grpcurl
from tests.support import ADMIN_TOKEN, REPO, ServerThread, no_room, running

A = "tessera.v1.AdminService/"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _history(srv: ServerThread) -> list[str]:
    """Purchases, a move and an expiry: every kind of entry but holds."""
    admin = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        admin(A + "CreateTeam", {"team_id": "acme"})
        admin(A + "CreateTeam", {"team_id": "beta"})
        packs = [
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": n, "request_id": f"r{n}"})[
                "token_pack"
            ]["pack_id"]
            for n in (100, 250, 40)
        ]
        admin(A + "MoveTokenPack", {"pack_id": packs[1], "to_team_id": "beta"})
        admin(A + "AdvanceClock", {"by": f"{367 * 86400}s"})  # T4: every pack expires
    finally:
        admin.close()
    return packs


def test_t6_verify_accepts_an_untouched_ledger(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 0, result.stdout + result.stderr
    # 3 purchases + MOVE_OUT + MOVE_IN + 3 expiries
    assert "ok: 8 ledger entries chained, 3 packs add up" in result.stdout


def test_t6_verify_names_the_first_entry_edited_by_hand(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger SET amount = 1000 WHERE seq = 2")
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert "ledger entry 000000000002" in result.stdout
    assert "does not match its hash" in result.stdout


def test_t6_verify_finds_a_deleted_entry(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 4")
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert "ledger entry 000000000004 is missing" in result.stdout


def test_t6_verify_finds_a_pack_whose_state_disagrees_with_its_entries(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        packs = _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE packs SET consumed = consumed + 5 WHERE pack_id = ?", (packs[0],))
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert f"pack {packs[0]}" in result.stdout


def test_backup_while_running_is_consistent_and_restores(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    copy = tmp_path / "backup" / "copy.db"
    with running(db) as srv:
        _history(srv)
        result = _cli("backup", "--db", str(db), "--to", str(copy))  # server still running
        assert result.returncode == 0, result.stderr
    assert _cli("verify", "--db", str(copy)).returncode == 0
    with running(copy) as srv:  # restoring is starting the server on the copy
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            packs = admin(A + "ListTokenPacks", {"team_id": "acme"})["packs"]
        finally:
            admin.close()
    assert sorted(int(p["tokens"]) for p in packs) == [40, 100]
    assert {p["state"] for p in packs} == {"PACK_STATE_EXPIRED"}


def test_backup_refuses_to_overwrite(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    target = tmp_path / "exists.db"
    target.write_bytes(b"keep me")
    result = _cli("backup", "--db", str(db), "--to", str(target))
    assert result.returncode == 2
    assert target.read_bytes() == b"keep me"


def test_t6_the_chain_continues_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with running(db) as srv:  # the next entry chains to the last stored one
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 5, "request_id": "after"})
        finally:
            admin.close()
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 0, result.stdout
    assert "ok: 9 ledger entries chained, 4 packs add up" in result.stdout


def test_backup_under_steady_writes_is_one_snapshot_that_ends(tmp_path: Path) -> None:
    """A copy made in steps started over at each commit between two steps, and under a
    steady trickle of writes never ended. Beside a writer that commits until the
    backup is done (at most 200,000 times), a database of some 6,000 pages (more than
    one old step of 4,096) is copied while the writer is still writing, and the copy
    is the database as of one instant: its rows are a prefix of the writer's."""
    db = tmp_path / "tessera.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE ledger (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL)")
        conn.execute("CREATE TABLE filler (blob BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 4000,)] * 6000)
    conn.close()
    done = threading.Event()
    written = [0]

    def write() -> None:
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as w:
            w.execute("PRAGMA synchronous=OFF")
            for seq in range(1, 200_001):
                if done.is_set():
                    return
                w.execute("INSERT INTO ledger VALUES (?, ?)", (seq, f"h{seq}"))
                written[0] = seq

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while written[0] < 10:  # the writer is under way
            threading.Event().wait(0.001)
        copied = backup_mod.backup(db, tmp_path / "copy.db")
        finished_at = written[0]
    finally:
        done.set()
        writer.join()
    assert finished_at < 200_000  # ended while the writer wrote on
    with contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as c:
        seqs = [r[0] for r in c.execute("SELECT seq FROM ledger ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 10
    assert copied.pages > 4096


def test_backup_stopped_midway_leaves_no_half_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (cron's timeout, systemd) becomes SystemExit inside the backup command,
    and a backup ended so removes what it had written (the copy, and the folders it
    made), as it does on any other failure."""
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    target = tmp_path / "new" / "deeper" / "copy.db"

    def stopped(conn: sqlite3.Connection) -> object:
        with tools._sigterm_unwinds():
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
            raise AssertionError("SIGTERM did not unwind")
        raise AssertionError("unreachable")

    monkeypatch.setattr(backup_mod, "_head", stopped)
    with pytest.raises(SystemExit) as info:
        backup_mod.backup(db, target)
    assert info.value.code == 128 + signal.SIGTERM
    assert not (tmp_path / "new").exists()


def test_t6_a_backup_in_a_folder_it_cannot_write_to_is_verified_without_writing_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups kept on read-only media: read-only SQLite would still make the WAL's
    index (``-shm``) beside the file and fail there. A backup has no log to read, and
    no server can be writing where nothing may be written, so it is read as the
    immutable file it is. (Root may write anywhere: the folder's answer is faked.)"""
    db = tmp_path / "tessera.db"
    copy = tmp_path / "backup" / "copy.db"
    with running(db) as srv:
        _history(srv)
        assert _cli("backup", "--db", str(db), "--to", str(copy)).returncode == 0
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if Path(path) == copy.parent else real_access(path, mode),
    )
    before = sorted(p.name for p in copy.parent.iterdir())
    verdict = audit_mod.verify(copy)
    assert verdict.ok, verdict
    assert sorted(p.name for p in copy.parent.iterdir()) == before  # no -shm, no -wal


def test_t6_verify_on_a_full_disk_says_what_failed(tmp_path: Path) -> None:
    """Reading makes the WAL's index beside the file; when that fails SQLite ends the
    snapshot's transaction, and the COMMIT after it hid the I/O error behind 'cannot
    commit - no transaction is active'."""
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    assert not db.with_name("tessera.db-shm").exists()
    done = subprocess.run(
        [sys.executable, "-m", "server", "verify", "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=no_room,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no transaction is active" not in done.stderr, done.stderr
    assert "disk I/O error" in done.stderr, done.stderr


def test_t6_verify_of_another_applications_database_says_what_it_is(tmp_path: Path) -> None:
    """A SQLite file of another application's, given by mistake: verify says it is
    not Tessera's (as a start does), not "no such table: ledger", and changes nothing."""
    db = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (x)")
        conn.execute("INSERT INTO notes VALUES ('hi')")
        conn.commit()
    before = db.read_bytes()
    done = _cli("verify", "--db", str(db))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not a Tessera database" in done.stderr and "'notes'" in done.stderr
    assert "no such table" not in done.stderr
    assert db.read_bytes() == before
