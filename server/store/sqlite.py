"""SQLite through aiosqlite: migrations, group commit, and loading at start.

One writing connection, one writer task (``group_commit.py``, shared with the
PostgreSQL adapter): ``commit(changes)`` turns the changes into rows at once,
queues them and waits; the writer takes everything queued so far, writes it in
one transaction, commits, and wakes every waiter. So each RPC answers only
after its change is on disk, while many RPCs share one commit (20-60x the rows
per second of a commit each). The engine sees this store only through
``server/store/port.py``'s ``StorePort``; the SQL of its named reads (a ledger
page, an ended session, the usage report's facts) is ``reads.py``'s, run on a
second connection that only reads (a database file's; in memory, the one), so
that a long one (a year's report) never holds up the commits.

Opening a database file first makes sure it is a Tessera database or none yet
(``files.py``: another application's SQLite database is refused, untouched),
takes its lock (``lock.py``: one server per database), makes it and its side
files owner-only (``files.py``) and loads the server's secret key, before
SQLite opens it; then refuses a newer release's schema, migrates an older one,
checks that the ledger reaches its checkpoint (``checkpoint.py``), and fills in
what an older release left out of the rows it wrote (``schema.BACKFILLS``).
After each commit that wrote ledger entries the checkpoint moves to the new head.

Another process holding the write lock (an operator's ``sqlite3`` shell in a
transaction) past the busy timeout does not fail the store: the writer tries
the same transaction again until it gets through (``is_busy``, ``GroupCommit``),
and the calls waiting on it wait (their deadlines apply).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import aiosqlite
import structlog

from server.credentials import SECRET_KEY_BYTES, load_or_create_secret_key
from server.domain.changes import Changes
from server.domain.ledger import GENESIS_HASH, entry_digest
from server.store import checkpoint
from server.store.checkpoint import LedgerHead, LedgerMismatch
from server.store.codec import AUDIT_EVENTS, LEDGER, NOT_LOADED, TABLES, Row, Table, sharing
from server.store.files import (
    RESCUED_SUFFIX,
    SECRET_KEY_SUFFIX,
    FilesWatch,
    create_private,
    not_a_database,
    not_tessera,
    side_path,
    tighten,
)
from server.store.group_commit import GroupCommit, Retry, Write, to_ops
from server.store.loading import loading
from server.store.lock import DatabaseLock
from server.store.port import Snapshot, StoreFailed, newer_schema
from server.store.reads import LAST_AUDIT_SQL, NamedReads
from server.store.schema import BACKFILLS, MIGRATIONS

# Snapshot, StoreFailed and loading lived here before the port: still importable
# from here.
__all__ = ["Snapshot", "Store", "StoreFailed", "loading"]

log = structlog.get_logger()

LOAD_CHUNK = 4096  # rows per fetch at start
#: Seconds SQLite waits for another process's lock before a statement gives up
#: ("database is locked"); the writer then tries the transaction again (``is_busy``).
BUSY_TIMEOUT = 5.0
_SEQ, _HASH = LEDGER.columns.index("seq"), LEDGER.columns.index("hash")
_AUDIT_SEQ, _AUDIT_HASH = (AUDIT_EVENTS.columns.index(c) for c in ("seq", "hash"))
# What a commit moved: the last (seq, hash) of the ledger and of the audit trail.
Heads = tuple[tuple[int, str] | None, tuple[int, str] | None]


class DatabaseUnusable(OSError):
    """SQLite cannot open or write the file at start: the server does not start."""


class Store(NamedReads):
    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        max_batch_ops: int = 50_000,
        secret_key: bytes = b"",
        anchor: checkpoint.Anchor | None = None,
        lock: DatabaseLock | None = None,
        path: Path | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        retry: Retry | None = None,
    ) -> None:
        self._db = db
        #: Derives invitation tokens (``server/credentials.py``); random for ``:memory:``.
        self.secret_key = secret_key or secrets.token_bytes(SECRET_KEY_BYTES)
        self._anchor = anchor  # the ledger checkpoint's file (None: none kept)
        self._head = checkpoint.EMPTY  # the last ledger entry committed
        self.path = path
        self._lock = lock
        # The database's files, looked at after each commit (``_write``): None in memory.
        self._files = FilesWatch(path) if path is not None else None
        retry = retry or Retry(is_busy)
        where = {"db": str(path or ":memory:"), **retry.log_fields}
        self._group = GroupCommit(
            self._write,
            after=self._move_anchor,
            on_failed=on_failed,
            max_batch_ops=max_batch_ops,
            # Another process's lock (an operator's sqlite3 shell) is waited out.
            retry=dataclasses.replace(retry, log_fields=where),
        )
        #: Seconds each table took in the last ``load`` (rows read and decoded), by name.
        self.load_seconds: dict[str, float] = {}
        #: The named reads' own connection (``_open_reader``; None in memory, or until
        #: the store is ready): a long one (a year's report) no longer holds up the
        #: commits, which wait behind whatever runs on the writer's connection.
        self._reader: aiosqlite.Connection | None = None

    @property
    def commits(self) -> int:
        """Transactions committed, for tests and benchmarks."""
        return self._group.commits

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        on_failed: Callable[[BaseException], None] | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        retry: Retry | None = None,
    ) -> Store:
        """The database at ``path``, open and migrated; ``on_failed`` is told of
        any write that fails, also one no call waits for (a timer's, the heartbeat
        flush's): from then on every write fails (``GroupCommit``). A write that
        another process's lock kept out for ``busy_timeout`` seconds is not a
        failure: the writer tries it again (``retry``; by default ``is_busy``'s
        errors, waited out for as long as they last)."""
        opts: dict[str, Any] = {
            "on_failed": on_failed,
            "busy_timeout": busy_timeout,
            "retry": retry,
        }
        if str(path) == ":memory:":
            return await cls._connect(":memory:", synchronous, **opts)
        file = Path(path)
        # Before anything is touched: not a SQLite file, or another application's.
        if (problem := not_a_database(file) or not_tessera(file)) is not None:
            raise DatabaseUnusable(
                f"--db {problem}; it was left as it was: give --db a Tessera database, "
                "or a new file's name to make one"
            )
        lock = DatabaseLock.acquire(file)  # before anything is written
        anchor = None
        try:
            # The file itself too (a lock file removed by hand lets none in), made owner-only
            # if new: SQLite gives -wal and -shm the database's mode.
            lock.hold(file)
            tighten(file)
            key = load_or_create_secret_key(side_path(file, SECRET_KEY_SUFFIX))
            expected = checkpoint.read(checkpoint.checkpoint_path(file))
            anchor = checkpoint.Anchor(checkpoint.checkpoint_path(file))
            return await cls._connect(
                file,
                synchronous,
                secret_key=key,
                anchor=anchor,
                lock=lock,
                path=file,
                expected=expected,
                **opts,
            )
        except BaseException as exc:
            if anchor is not None:
                anchor.close()
            lock.release()
            if isinstance(exc, sqlite3.DatabaseError):  # a full disk, a file of something else
                raise DatabaseUnusable(
                    f"cannot open {file}: {exc} (SQLite): if its disk is full or read-only, "
                    "mend that and start again; if it is not a Tessera database, give --db "
                    "one, or restore a backup"
                ) from exc
            raise

    @classmethod
    async def _connect(
        cls,
        target: str | Path,
        synchronous: str,
        *,
        expected: LedgerHead | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        **kw: Any,
    ) -> Store:
        db = await aiosqlite.connect(str(target), isolation_level=None, timeout=busy_timeout)
        try:
            # A newer release's database is refused before anything is written to
            # it: neither its mode of journal nor its checkpoint (still "stopped").
            version = await _user_version(db)
            if (problem := newer_schema(version, len(MIGRATIONS))) is not None:
                raise DatabaseUnusable(f"cannot open {kw.get('path') or target}: {problem}")
            await _run(db, "PRAGMA journal_mode=WAL")
            await _run(db, f"PRAGMA synchronous={synchronous}")
            await _run(db, "PRAGMA foreign_keys=OFF")
            store = cls(db, **kw)
            # Migrated first: the head is read as this release keeps it (an older
            # release's ledger may have no hash yet, migration 4).
            await store._migrate(version)
            await store._check_ledger_head(expected)
            await store._backfill()  # a database refused above is left as it was
            if kw.get("path") is not None:
                store._reader = await _open_reader(target, busy_timeout)
        except BaseException:
            await db.close()
            raise
        store._group.start()
        return store

    async def _check_ledger_head(self, expected: LedgerHead | None) -> None:
        """Refuse a ledger that stops short of its checkpoint or differs at it;
        anchor one that has none yet (a database from before checkpoints) or that
        goes past it (a crash between a commit and its checkpoint)."""
        if self._anchor is None:
            return
        tables = await self.query("SELECT 1 FROM sqlite_master WHERE name = 'ledger'")
        rows = await self.query(checkpoint.LAST_ENTRY_SQL) if tables else []
        head = LedgerHead(int(rows[0][0]), str(rows[0][1])) if rows else checkpoint.EMPTY
        # The audit trail's head, kept in the same checkpoint (checkpoint.py).
        audited = await self.query("SELECT 1 FROM sqlite_master WHERE name = 'audit_events'")
        rows = await self.query(LAST_AUDIT_SQL) if audited else []
        if rows:
            head = dataclasses.replace(head, audit_seq=int(rows[0][0]), audit_hash=str(rows[0][1]))
        if expected is not None:
            sql = "SELECT hash FROM ledger WHERE seq = ?"
            at = await self.query(sql, (expected.seq,)) if tables else []
            problem = checkpoint.problem(expected, head.seq, str(at[0][0]) if at else None)
            sql = "SELECT hash FROM audit_events WHERE seq = ?"
            at = await self.query(sql, (expected.audit_seq,)) if audited else []
            problem = problem or checkpoint.audit_problem(
                expected, head.audit_seq, str(at[0][0]) if at else None
            )
            if problem is not None:
                raise LedgerMismatch(
                    f"refusing to start on {self.path}: {problem}. Run `python -m server "
                    f"verify --db {self.path}` to see what is wrong; only if you restored "
                    f"this database on purpose, remove {self._anchor.path} and start again"
                )
            if head.seq > expected.seq or head.audit_seq > expected.audit_seq:
                log.warning(
                    "ledger_past_checkpoint",
                    checkpoint_seq=expected.seq,
                    last_seq=head.seq,
                    note="entries committed after the last checkpoint (a crash between the two)",
                )
        elif head.seq:
            log.warning("ledger_checkpoint_created", last_seq=head.seq, file=str(self._anchor.path))
        self._head = head
        self._anchor.write(head)  # running: no longer "stopped"

    async def _migrate(self, version: int) -> None:
        """The migrations past ``version`` (the database's, read before), each in a
        transaction of its own with the step after it (``AFTER_MIGRATION``)."""
        if version == len(MIGRATIONS):
            return
        # A migration that blanks a secret (5) leaves no copy of it in free space.
        await _run(self._db, "PRAGMA secure_delete=ON")
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            await _run(self._db, "BEGIN IMMEDIATE")
            for statement in script.split(";"):
                if statement.strip():
                    await _run(self._db, statement)
            if (step := AFTER_MIGRATION.get(number)) is not None:
                db = self._db
                # (aiosqlite has no public way to run a function on its thread: ``_execute``.)
                await db._execute(step, db._conn)  # type: ignore[no-untyped-call]
            await _run(self._db, f"PRAGMA user_version={number}")
            await _run(self._db, "COMMIT")
        await _run(self._db, "PRAGMA secure_delete=OFF")
        # ... nor in the log: the old pages are overwritten and the log emptied.
        await _run(self._db, "PRAGMA wal_checkpoint(TRUNCATE)")

    async def _backfill(self) -> None:
        """``schema.BACKFILLS``: the columns an older release left at their defaults
        in the rows it wrote on this schema (it was run again after an upgrade, and
        this one again after it), filled in before the load, in one transaction.
        Looked for first: a database of this release's rows alone is only read."""
        due = []
        for backfill in BACKFILLS:
            mark = (await self.query(backfill.mark_sql))[0] if backfill.mark_sql else ()
            if (await self.query(backfill.find_sql, mark))[0][0]:
                due.append((backfill, mark))
        if not due:
            return
        await _run(self._db, "BEGIN IMMEDIATE")
        try:
            filled: dict[str, int] = {}
            for backfill, mark in due:
                async with self._db.execute(backfill.sql, mark) as cur:
                    filled[backfill.table] = filled.get(backfill.table, 0) + cur.rowcount
            await _run(self._db, "COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await _run(self._db, "ROLLBACK")
            raise
        log.warning("older_release_rows_filled", store="sqlite", **filled)

    async def schema_version(self) -> int:
        return await _user_version(self._db)

    # -- loading --------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Every table that lives in memory, as objects, in table order. Equal
        instants and ids come back as one object each (``codec.sharing``), and
        the objects are frozen out of the garbage collector (``loading``).
        ``load_seconds`` says afterwards how long each table took."""
        snap = Snapshot()
        tables = [(k, t) for k, t in TABLES.items() if t.name not in NOT_LOADED]
        self.load_seconds = {}
        db = self._db
        stop = threading.Event()  # a load cancelled (a stop while starting) ends within a chunk
        with sharing(), loading():
            try:
                # (aiosqlite has no public way to run a function on its thread: ``_execute``.)
                snap.objects = await db._execute(  # type: ignore[no-untyped-call]
                    _load_tables, db._conn, tables, self.load_seconds, stop
                )
            except asyncio.CancelledError:
                stop.set()
                raise
        # The chain continues from the last stored entry (server/domain/ledger.py).
        async with self._db.execute(checkpoint.LAST_ENTRY_SQL) as cur:
            row = await cur.fetchone()
        if row is not None:
            snap.max_ledger_seq, snap.last_ledger_hash = int(row[0]), str(row[1])
        async with self._db.execute(LAST_AUDIT_SQL) as cur:  # ... as does the audit trail's
            row = await cur.fetchone()
        if row is not None:
            snap.max_audit_seq, snap.last_audit_hash = int(row[0]), str(row[1])
        return snap

    async def query(self, sql: str, params: Row = ()) -> list[Row]:
        """Rows of any SQL (this adapter's own reads, and tests); not in the port."""
        async with self._db.execute(sql, params) as cur:
            # tuples (no row factory), made on the connection's thread
            return cast(list[Row], list(await cur.fetchall()))

    async def _rows(self, sql: str, params: Row = ()) -> list[Row]:
        """The named reads' (``reads.py``), on their own connection: each sees every
        commit that returned before it began (WAL), and no commit waits for it."""
        if self._reader is None:
            return await self.query(sql, params)
        async with self._reader.execute(sql, params) as cur:
            return cast(list[Row], list(await cur.fetchall()))

    # -- writing --------------------------------------------------------------

    async def commit(self, changes: Changes | Iterable[object]) -> None:
        """Write the changes durably; return once they are committed."""
        await self._group.commit(to_ops(changes))

    async def barrier(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._group.barrier()

    def _move_anchor(self, heads: Heads) -> None:
        """After a commit's waiters are woken: the checkpoint only trails the commit."""
        ledger, audit = heads
        if ledger is None and audit is None:
            return
        head = self._head
        if ledger is not None:
            head = dataclasses.replace(head, seq=ledger[0], hash=ledger[1])
        if audit is not None:
            head = dataclasses.replace(head, audit_seq=audit[0], audit_hash=audit[1])
        self._head = head
        if self._anchor is None:
            return
        try:
            self._anchor.write(head, sync=False)  # may trail: see checkpoint.py
        except OSError as exc:  # the checkpoint stays behind: verify still holds up to it
            log.error("ledger_checkpoint_failed", file=str(self._anchor.path), error=str(exc))

    async def _write(self, plan: list[Write]) -> Heads:
        """Write ``plan`` in one transaction; returns the last ledger entry and the
        last audit event written (seq, hash), each None if there is none."""
        head: Heads = (None, None)
        for table, delete, rows in plan:
            # Both tables are append-only: their rows come in order.
            if table is LEDGER and not delete:
                head = ((int(rows[-1][_SEQ]), str(rows[-1][_HASH])), head[1])
            elif table is AUDIT_EVENTS and not delete:
                head = (head[0], (int(rows[-1][_AUDIT_SEQ]), str(rows[-1][_AUDIT_HASH])))
        # One trip to the connection's thread where there were one for BEGIN, one per
        # statement and one for COMMIT: on a busy event loop each trip waits for the
        # loop's turn (and for the GIL), longer than the work it carries.
        db = self._db
        # (aiosqlite has no public way to run a function on its thread: ``_execute``.)
        synced = await db._execute(_write_plan, db._conn, plan)  # type: ignore[no-untyped-call]
        self._group.syncs.observe(synced)
        if self._files is not None and (moved := self._files.moved()) is not None:
            # Committed into files no longer at the database's name: not stored, as far
            # as a restart can tell. Its waiters are told so (repeat it, same request id)
            # and the store fails (the server stops), what can be saved saved first.
            raise StoreFailed(await self._rescue(moved))
        return head

    async def _rescue(self, moved: str) -> str:
        """What is done when ``FilesWatch.moved`` says ``moved``, in words for the
        failure. A file put in the place of the database or its ``-wal`` (a restore
        while the server runs) is left as it is (``close`` keeps SQLite from removing
        a ``-wal`` not its own). A removed ``-wal``: its commits are written into the
        database (a checkpoint reads the open, removed file). A removed database: a
        copy of it, from the open files, is put where it was (VACUUM INTO a side file,
        then renamed into place). Where neither can be done (a reader, a backup, holds
        an older snapshot, which a checkpoint cannot pass), a complete copy is written
        beside the database, and the words say how to put it in place."""
        files = self._files
        assert files is not None  # noqa: S101 (only asked with a file)
        db, wal = files.db, files.wal
        if moved.endswith("replaced"):
            which = db if moved == "db replaced" else wal
            return (
                f"{which} is no longer the file the server opened (moved, or another put in "
                "its place while the server ran): the server stops and leaves it as it is; "
                "the commits since went into the file it opened"
            )
        gone = db if moved == "db removed" else wal
        try:
            saved = await self._checkpoint()
            if saved and moved == "wal removed":
                return (
                    f"{wal} was removed while the server ran; every commit it held was "
                    f"written into {db} before the server stopped: start it again"
                )
            if saved and not files.foreign_wal():
                # Its -wal, emptied, and -shm go with the file they served: left at their
                # names they could be taken for the copy's.
                copy = await self._copy()
                for side in (wal, files.shm):
                    side.unlink(missing_ok=True)
                os.replace(copy, db)
                return (
                    f"{db} was removed while the server ran; a copy of everything it held, "
                    "the last commit included, was put back in its place before the server "
                    "stopped: start it again (files removed beside it, such as its keys, "
                    "are not restored: restore those from a backup)"
                )
            copy = await self._copy()
        except (sqlite3.Error, OSError) as exc:
            return (
                f"{gone} was removed while the server ran (or its directory moved), and its "
                f"last commits could not be saved ({exc}): if its directory was moved or "
                "renamed, the database is whole there; look for it before restoring a backup"
            )
        return (
            f"{gone} was removed while the server ran, and its last commits could not be "
            f"written into {db} (a reader, such as a backup, held an older snapshot): a "
            f"complete copy is at {copy}; stop what reads {db}, remove {wal} and "
            f"{files.shm}, put the copy in its place (mv {copy} {db}) and start again"
        )

    async def _checkpoint(self) -> bool:
        """The whole log written into the database and emptied (TRUNCATE): False when
        a reader's older snapshot kept part of it out (SQLite says so in a row, not an
        error, once its busy timeout has passed)."""
        async with self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            row = await cur.fetchone()
        return row is not None and int(row[0]) == 0

    async def _copy(self) -> Path:
        """A complete copy of the database as this connection sees it (every commit),
        owner-only, in a new file beside it: ``PATH.rescued`` (or ``PATH.rescued-N``)."""
        files = self._files
        assert files is not None  # noqa: S101 (only asked with a file)
        copy = side_path(files.db, RESCUED_SUFFIX)
        n = 1
        while copy.exists():
            n += 1
            copy = side_path(files.db, f"{RESCUED_SUFFIX}-{n}")
        create_private(copy)  # owner-only, and empty: VACUUM INTO writes into it
        async with self._db.execute("VACUUM INTO ?", (str(copy),)):
            pass
        return copy

    async def close(self) -> None:
        """Write out everything queued, then close."""
        await self._group.close()
        if self._group.failed is None:
            with contextlib.suppress(Exception):
                await self._checkpoint()
            if self._anchor is not None and self._group.running:
                # Everything is written: the database ends exactly here.
                stopped = dataclasses.replace(self._head, stopped=True)
                with contextlib.suppress(OSError):
                    self._anchor.write(stopped)
        if self._reader is not None:  # first: the writer's is the last connection
            with contextlib.suppress(Exception):
                await self._reader.close()
        # SQLite's last connection removes the file at the -wal's name as it closes:
        # one put there while the server ran (a restore) is kept out of its way.
        aside = self._files.wal_aside() if self._files is not None else None
        try:
            await self._db.close()
        finally:
            if aside is not None:
                os.replace(aside, self._files.wal)  # type: ignore[union-attr]
        if self._anchor is not None:
            self._anchor.close()
        if self._lock is not None:
            self._lock.release()


async def _open_reader(target: str | Path, busy_timeout: float) -> aiosqlite.Connection:
    """A second connection to the database, for the named reads alone (it refuses
    to write: ``query_only``)."""
    reader = await aiosqlite.connect(str(target), isolation_level=None, timeout=busy_timeout)
    try:
        await _run(reader, "PRAGMA query_only=ON")
    except BaseException:
        await reader.close()
        raise
    return reader


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the database's write lock past the busy timeout
    (SQLITE_BUSY: "database is locked"), an operator's ``sqlite3`` shell in a
    transaction, a script: it will let go, so the write is tried again
    (``GroupCommit``'s ``retry``). Any other error (a full disk, an I/O error)
    fails the store."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)


def _fill_ledger_chain(conn: sqlite3.Connection) -> int:
    """On the connection's thread, in migration 4's transaction: the hash chain
    (``server.domain.ledger.entry_digest``, as the ledger and ``verify`` compute
    it) for every entry stored before it, in order of ``seq`` (the column came
    with ``hash = ''``), so that a database from before the chain is whole and
    later entries continue it. Returns the entries filled in."""
    prev, after, filled = GENESIS_HASH, 0, 0
    while rows := conn.execute(_CHAIN_SQL, (after, LOAD_CHUNK)).fetchall():
        hashes = []
        for *fields, stored in rows:
            if stored == "":
                stored = entry_digest(prev, *fields)
                hashes.append((stored, fields[0]))
            prev = stored
        conn.executemany("UPDATE ledger SET hash = ? WHERE seq = ?", hashes)
        filled += len(hashes)
        after = rows[-1][0]
    if filled:
        log.info("ledger_chain_filled", entries=filled, note="entries stored before migration 4")
    return filled


_CHAIN_SQL = (
    "SELECT seq, time, kind, team_id, pack_id, amount, remaining_delta, held_delta, "
    "session_id, user_id, product_id, hash FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?"
)
#: A step in Python run after a migration's SQL, in its transaction, by number.
AFTER_MIGRATION: dict[int, Callable[[sqlite3.Connection], object]] = {4: _fill_ledger_chain}


async def _run(db: aiosqlite.Connection, sql: str) -> None:
    """``sql``, its cursor closed at once. aiosqlite's thread holds on to a call's
    result until its next call returns, and a statement left open there (a
    PRAGMA's row) would make the COMMIT of a write begun in that next call fail
    ("SQL statements in progress"): every statement whose rows are not read goes
    through here."""
    async with db.execute(sql):
        pass


class LoadStopped(Exception):
    """A load given up because its caller was cancelled (``Store.load``)."""


def _load_tables(
    conn: sqlite3.Connection,
    tables: list[tuple[type, Table]],
    seconds: dict[str, float],
    stop: threading.Event,
) -> dict[type, list[Any]]:
    """On the connection's thread: every table's rows, read and turned into
    objects there, in chunks (a whole table's rows are never all in memory at
    once: a million sessions' rows are twice the size of their objects).

    Reading on one thread and decoding on the event loop's (as every other read
    does) made the two take turns at the GIL once per row: the sqlite3 module
    lets go of it around each step and must take it back after, behind a loop
    busy decoding. One thread doing both, the loop idle meanwhile, loaded a
    million sessions 2-5 s sooner (24.2-25.7 s, then 17.0-22.5 s: this host
    moves a run by a fifth). The calls queued behind this one wait, as they
    would for a long transaction: nothing writes while the state loads."""
    out: dict[type, list[Any]] = {}
    for kind, table in tables:
        # A cancelled caller (``stop``) ends the load before the next table or
        # chunk: nobody waits for the rest.
        if stop.is_set():
            raise LoadStopped("the load was cancelled")
        start = time.perf_counter()
        from_row = table.from_row
        objects: list[Any] = []
        cur = conn.execute(table.load_sql(table.order_by))
        try:
            while rows := cur.fetchmany(LOAD_CHUNK):
                objects.extend([from_row(r) for r in rows])
                if stop.is_set():
                    raise LoadStopped("the load was cancelled")
        finally:
            cur.close()
        out[kind] = objects
        seconds[table.name] = time.perf_counter() - start
    return out


# Rows per multi-row INSERT: blocks of these sizes, largest first (a 100-row
# chunk of the heartbeat flush is 64 + 2 x 16 + 4: 4 statements).
BLOCKS = (64, 16, 4, 1)
_block_sql: dict[tuple[str, int], str] = {}


def _upsert_sql(table: Table, k: int) -> str:
    """``table``'s upsert for ``k`` rows in one statement (cached: few distinct texts)."""
    sql = _block_sql.get((table.name, k))
    if sql is None:
        one = "(" + ", ".join("?" * len(table.columns)) + ")"
        sql = _block_sql[table.name, k] = table.upsert_sql.replace(one, ", ".join([one] * k), 1)
    return sql


def _write_plan(conn: sqlite3.Connection, plan: list[Write]) -> float:
    """On the connection's thread, in one trip there: BEGIN, ``plan``, COMMIT
    (ROLLBACK if a statement fails); returns the seconds COMMIT took.

    Upserts go many rows per statement (``BLOCKS``), not one ``executemany`` step
    per row: the sqlite3 module lets go of the GIL around each step and must take
    it back after, and while the event loop is busy that wait (up to the switch
    interval, 5 ms) came once per row: a 1,000-row flush chunk took 6 ms alone but
    24-130 ms beside a busy loop, and every call's commit queued behind it. A
    plan's rows never repeat a key (``plan_writes``), so one statement stores
    what the rows would one by one."""
    conn.execute("BEGIN")
    try:
        for table, delete, rows in plan:
            if delete:
                conn.executemany(table.delete_sql, rows)
                continue
            i, n = 0, len(rows)
            for k in BLOCKS:
                while n - i >= k:
                    if k == 1:
                        conn.execute(table.upsert_sql, rows[i])
                    else:
                        conn.execute(_upsert_sql(table, k), [v for r in rows[i : i + k] for v in r])
                    i += k
        began = time.perf_counter()
        conn.execute("COMMIT")
        return time.perf_counter() - began
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
