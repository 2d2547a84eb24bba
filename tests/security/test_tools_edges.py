"""The operator tools (``python -m server verify|backup|rotate-signing-key``) at
the edges an operator meets: a database path with ``#``, ``?`` or ``%`` in it, a
row altered to hold a BLOB, a database an older release left (before the upgrade),
another application's database and an empty one (docs/security.md "What verify
guarantees" and "Backups and restores"; docs/ops/README.md "Upgrading")."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from server.store import checkpoint
from server.store.files import SIGNING_KEYS_SUFFIX, side_path
from server.store.sqlite import Store
from tests.security.test_tamper_and_backup import _cli, _history
from tests.store import test_sqlite_open
from tests.support import running

# -- a path SQLite's URIs would misread ----------------------------------------------


def _tools_read_the_database_at(tmp_path: Path, folder: str) -> None:
    """verify, backup and rotate-signing-key on ``tmp_path/folder/tessera.db``: they
    read the database the server ran on, and make no file beside ``folder`` (a
    ``file:`` URI left unquoted opens ``tmp_path/site`` for ``site#2``, creating it)."""
    db = tmp_path / folder / "tessera.db"
    db.parent.mkdir()
    with running(db) as srv:
        _history(srv)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = _cli("verify", "--db", str(db))
    assert (done.returncode, done.stderr) == (0, ""), done.stdout + done.stderr
    assert done.stdout == (
        "ok: 8 ledger entries chained, 3 packs add up; 7 audit events chained; "
        "the chain reaches its checkpoint (entry 000000000008)\n"
    )
    copy = tmp_path / folder / "copy" / "tessera.db"
    done = _cli("backup", "--db", str(db), "--to", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith(
        f"to restore, start the server with --db {copy} (keep these files together)\n"
    )
    assert _cli("verify", "--db", str(copy)).returncode == 0
    keys = side_path(db, SIGNING_KEYS_SUFFIX).read_bytes()
    done = _cli("rotate-signing-key", "--db", str(db))
    assert done.returncode == 0, done.stdout + done.stderr
    assert side_path(db, SIGNING_KEYS_SUFFIX).read_bytes() != keys  # its keys, rotated
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sec_verify_reads_a_database_whose_path_holds_a_hash_sign(tmp_path: Path) -> None:
    _tools_read_the_database_at(tmp_path, "site#2")


def test_sec_verify_reads_a_database_whose_path_holds_a_question_mark(tmp_path: Path) -> None:
    _tools_read_the_database_at(tmp_path, "what?")


def test_sec_verify_reads_a_database_whose_path_holds_a_percent_sign(tmp_path: Path) -> None:
    _tools_read_the_database_at(tmp_path, "100%25")


# -- a row holding a BLOB ------------------------------------------------------------


def _tampered(tmp_path: Path, sql: str) -> tuple[list[str], Path]:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        packs = _history(srv)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(sql)
        conn.commit()
    return packs, db


def test_sec_verify_names_a_ledger_entry_whose_team_was_made_a_blob(tmp_path: Path) -> None:
    """A field of another type than the store writes is an altered entry: a broken
    link, reported (exit 1), not a TypeError's traceback."""
    packs, db = _tampered(
        tmp_path, "UPDATE ledger SET team_id = CAST('acme' AS BLOB) WHERE seq = 2"
    )
    done = _cli("verify", "--db", str(db))
    assert (done.returncode, done.stderr) == (1, ""), done.stdout + done.stderr
    assert done.stdout == (
        f"BAD: ledger entry 000000000002 (PURCHASE of 250 on pack {packs[1]}) does not "
        "match its hash: it or an entry before it was altered\n"
    )


def test_sec_verify_names_an_audit_event_whose_actor_was_made_a_blob(tmp_path: Path) -> None:
    _, db = _tampered(
        tmp_path, "UPDATE audit_events SET actor = CAST('operator' AS BLOB) WHERE seq = 3"
    )
    done = _cli("verify", "--db", str(db))
    assert (done.returncode, done.stderr) == (1, ""), done.stdout + done.stderr
    assert done.stdout == (
        "BAD: audit event 000000000003 (PurchaseTokens by b'operator') does not match "
        "its hash: it or an event before it was altered\n"
    )


# -- a database an older release left (docs/ops/README.md "Upgrading") ---------------


def _schema_3(tmp_path: Path) -> Path:
    """A schema-3 database (before the ledger's hash chain), 6 entries and 2 packs."""
    db = tmp_path / "tessera.db"
    entries, packs = test_sqlite_open._history()
    test_sqlite_open._schema_3_database(db, *entries, *packs)
    return db


async def _start_the_store_on(db: Path) -> None:
    store = await Store.open(db)  # migrates, chains the ledger, anchors it
    await store.close()


def test_sec_backup_of_a_schema_3_database_before_the_upgrade_restores(tmp_path: Path) -> None:
    """Stop the server, back the database up, start the new release: the backup of
    the database the old release left works, with no checkpoint (its ledger has no
    chain yet), and the new release's start on the copy upgrades and chains it."""
    db = _schema_3(tmp_path)
    copy = tmp_path / "before-upgrade" / "tessera.db"
    done = _cli("backup", "--db", str(db), "--to", str(copy))
    assert (done.returncode, done.stderr) == (0, ""), done.stdout + done.stderr
    first, *rest = done.stdout.splitlines()
    assert first.startswith(f"backed up {db} (") and first.endswith(" 6 ledger entries) to:")
    assert rest == [
        f"  {copy}",
        f"to restore, start the server with --db {copy} (keep these files together)",
    ]
    assert not checkpoint.checkpoint_path(copy).exists()
    asyncio.run(_start_the_store_on(copy))  # what the new release's start does to it
    done = _cli("verify", "--db", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 6 ledger entries chained, 2 packs add up;")


def test_sec_verify_of_a_schema_3_database_says_to_start_this_release_on_it_first(
    tmp_path: Path,
) -> None:
    db = _schema_3(tmp_path)
    done = _cli("verify", "--db", str(db))
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"python -m server verify: {db} is of schema version 3, older than the ledger's "
        "hash chain, so there is no chain to verify: start this release on it once (the "
        "server upgrades it and chains its ledger), then verify\n"
    )


# -- another application's database, an empty one ------------------------------------


def _notes(tmp_path: Path) -> Path:
    db = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()
    return db


@pytest.mark.parametrize("command", ["backup", "rotate-signing-key"])
def test_sec_backup_and_rotation_on_another_applications_database_say_it_is_not_tessera(
    tmp_path: Path, command: str
) -> None:
    """Refused in verify's words, before anything is written: no copy begun, no key file."""
    db = _notes(tmp_path)
    to = ["--to", str(tmp_path / "copy" / "notes.db")] if command == "backup" else []
    done = _cli(command, "--db", str(db), *to)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == (
        f"python -m server {command}: {db} is not a Tessera database: it is another "
        "application's SQLite database (1 table of its own: 'notes'; no schema version)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


@pytest.mark.parametrize(
    "tool", [["verify"], ["backup", "--to", "COPY"], ["rotate-signing-key"]], ids=lambda t: t[0]
)
def test_sec_tools_on_an_empty_file_say_there_is_no_tessera_database(
    tmp_path: Path, tool: list[str]
) -> None:
    db = tmp_path / "tessera.db"
    db.touch()
    args = [str(tmp_path / "copy.db") if a == "COPY" else a for a in tool]
    done = _cli(args[0], "--db", str(db), *args[1:])
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == f"python -m server {tool[0]}: no Tessera database at {db} (empty)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tessera.db"]


def test_sec_backup_of_a_database_with_no_table_says_there_is_no_tessera_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE gone (x)")
        conn.execute("DROP TABLE gone")
        conn.commit()
    done = _cli("backup", "--db", str(db), "--to", str(tmp_path / "copy.db"))
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr == f"python -m server backup: no Tessera database at {db} (empty)\n"
