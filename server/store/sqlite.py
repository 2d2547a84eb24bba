"""SQLite through aiosqlite: migrations, group commit, and loading at start.

One connection, one writer task. ``commit(changes)`` turns the changes into
rows at once, queues them and waits; the writer takes everything queued so
far, writes it in one transaction, commits, and wakes every waiter. So each
RPC answers only after its change is on disk, while many RPCs share one
commit (``../shared/PERF.md``: 20-60x the rows per second of a commit each).
``defer(changes)`` queues rows that may wait for the next flush (heartbeat
history): they ride along with the next commit or the periodic flush.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from server.domain.changes import Changes, Deleted
from server.store.codec import NOT_LOADED, TABLES, Row, Table
from server.store.schema import MIGRATIONS

Op = tuple[str, Row]  # (sql, params)


class StoreFailed(RuntimeError):
    """A write failed: memory and disk may disagree, so the server must stop."""


def to_ops(changes: Iterable[object]) -> list[Op]:
    ops: list[Op] = []
    for item in changes:
        if isinstance(item, Deleted):
            table = TABLES[type(item.obj)]
            ops.append((table.delete_sql, table.key_of(table.to_row(item.obj))))
        else:
            table = TABLES[type(item)]
            ops.append((table.upsert_sql, table.to_row(item)))
    return ops


@dataclass
class Snapshot:
    """Everything loaded at start, by type, in table order."""

    objects: dict[type, list[Any]] = field(default_factory=dict)
    max_ledger_seq: int = 0
    last_ledger_hash: str = ""

    def of(self, kind: type) -> list[Any]:
        return self.objects.get(kind, [])


@dataclass
class _Batch:
    ops: list[Op]
    done: asyncio.Future[None] | None


class Store:
    def __init__(self, db: aiosqlite.Connection, *, max_batch_ops: int = 50_000) -> None:
        self._db = db
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._deferred: list[Op] = []
        self._max_batch_ops = max_batch_ops
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self.commits = 0  # transactions committed, for tests and benchmarks

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "FULL") -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(f"PRAGMA synchronous={synchronous}")
        await db.execute("PRAGMA foreign_keys=OFF")
        store = cls(db)
        await store._migrate()
        store._writer = asyncio.create_task(store._run(), name="store-writer")
        return store

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            await self._db.execute("BEGIN IMMEDIATE")
            for statement in script.split(";"):
                if statement.strip():
                    await self._db.execute(statement)
            await self._db.execute(f"PRAGMA user_version={number}")
            await self._db.execute("COMMIT")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- loading --------------------------------------------------------------

    async def load(self) -> Snapshot:
        snap = Snapshot()
        for kind, table in TABLES.items():
            if table.name in NOT_LOADED:
                continue
            sql = f"{table.select_sql} {table.load_where} {table.order_by}"
            async with self._db.execute(sql) as cur:
                rows = await cur.fetchall()
            snap.objects[kind] = [table.from_row(tuple(r)) for r in rows]
        async with self._db.execute(
            "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            snap.max_ledger_seq, snap.last_ledger_hash = int(row[0]), str(row[1])
        return snap

    async def query(self, sql: str, params: Row = ()) -> list[Row]:
        async with self._db.execute(sql, params) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def select(
        self, table: Table, where: str = "", params: Row = (), suffix: str = ""
    ) -> list[Any]:
        sql = f"{table.select_sql} {where} {suffix}"
        return [table.from_row(r) for r in await self.query(sql, params)]

    # -- writing --------------------------------------------------------------

    def _check(self) -> None:
        if self._failed is not None:
            raise StoreFailed("the store failed earlier") from self._failed

    async def commit(self, changes: Changes | Iterable[object]) -> None:
        """Write the changes durably; return once they are committed."""
        self._check()
        ops = to_ops(changes.items if isinstance(changes, Changes) else changes)
        if not ops and not self._deferred:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Batch(ops, done))
        await done

    async def barrier(self) -> None:
        """Return once everything queued before this call is committed."""
        self._check()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Batch([], done))
        await done

    def defer(self, changes: Changes | Iterable[object]) -> None:
        """Queue changes that may wait for the next commit or flush."""
        self._check()
        self._deferred.extend(to_ops(changes.items if isinstance(changes, Changes) else changes))

    async def flush(self) -> None:
        """Commit whatever was deferred."""
        await self.commit(())

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batches = [first]
            n = len(first.ops)
            stop = False
            while n < self._max_batch_ops and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batches.append(nxt)
                n += len(nxt.ops)
            ops = self._deferred
            self._deferred = []
            for b in batches:
                ops.extend(b.ops)
            try:
                await self._write(ops)
            except BaseException as exc:  # a failed write leaves memory ahead of disk
                self._failed = exc
                for b in batches:
                    if b.done is not None and not b.done.done():
                        b.done.set_exception(StoreFailed(str(exc)))
                raise
            self.commits += 1
            for b in batches:
                if b.done is not None and not b.done.done():
                    b.done.set_result(None)
            if stop:
                return

    async def _write(self, ops: list[Op]) -> None:
        if not ops:
            return
        await self._db.execute("BEGIN")
        try:
            # Runs of the same statement go in one executemany; order is kept.
            i = 0
            while i < len(ops):
                sql = ops[i][0]
                j = i
                while j < len(ops) and ops[j][0] == sql:
                    j += 1
                if j - i == 1:
                    await self._db.execute(sql, ops[i][1])
                else:
                    await self._db.executemany(sql, [p for _, p in ops[i:j]])
                i = j
            await self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Write out everything queued or deferred, then close."""
        if self._writer is not None and not self._writer.done():
            if self._deferred and self._failed is None:
                self._queue.put_nowait(_Batch([], None))
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._writer
        if self._failed is None:
            with contextlib.suppress(Exception):
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._db.close()
