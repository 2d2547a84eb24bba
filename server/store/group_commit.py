"""Group commit, for every store adapter: many waiters share one transaction.

``commit(changes)`` turns the changes into rows at once (``to_ops``: later
changes in memory cannot leak in), queues them and waits; one writer task takes
everything queued so far, hands it to the adapter's ``write`` (one transaction),
and wakes every waiter only after it returned, that is after COMMIT. So each
call answers only once its change is durable, while many calls share one
commit.

A failed write fails every waiter of that transaction and every later call
with ``StoreFailed`` (memory and the database may now disagree: the server
must stop serving); a ``StoreFailed`` the adapter raised itself (PostgreSQL's
``NotLeader``) reaches them as that same type. So does a failure after a
transaction (the writer's own bookkeeping, or ``after``): its waiters are told
their rows are committed, as they are, and everyone else fails rather than
wait for a writer that is gone.

A write the database refused only for now (``Retry``: SQLite's lock held by
another process past its busy timeout) is not a failure: the writer rolls it
back and tries the same transaction again, waiting a little longer each time
(at most ``max_delay``), for as long as it takes, logging ``store_busy`` (how
long it has waited) at most every ``log_every`` seconds and ``store_busy_ended``
once it is through. Its waiters, and the calls queued behind them, wait.

``plan_writes`` is dialect-neutral: it says which rows to delete and upsert in
which table; each adapter turns that into its own SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from server.clock import monotonic
from server.domain.changes import Changes, Deleted
from server.stats import Batches, Distribution
from server.store.codec import TABLES, Row, Table
from server.store.port import StoreFailed

Op = tuple[Table, bool, Row]  # (table, delete?, the row or, for a delete, its key)
Write = tuple[Table, bool, list[Row]]  # (table, delete?, rows or keys): one statement
R = TypeVar("R")

log = structlog.get_logger()


@dataclass(frozen=True)
class Retry:
    """Which failed writes are tried again, and how the writer waits between tries.

    ``transient(exc)``: the write failed for now only (SQLite: another process
    holds the lock, ``sqlite.is_busy``); anything else fails the store. The
    pause after a try is ``first_delay``, doubled after each, at most
    ``max_delay``; there is no limit on the tries. ``sleep`` and ``clock``
    (seconds) are asyncio's and the monotonic clock, a test's own in tests.
    ``log_fields`` go into each log line (the database)."""

    transient: Callable[[BaseException], bool]
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = monotonic
    first_delay: float = 0.05
    max_delay: float = 1.0
    log_every: float = 5.0
    log_fields: dict[str, str] = field(default_factory=dict)


def to_ops(changes: Changes | Iterable[object]) -> list[Op]:
    """Snapshot changes into rows, now (later changes in memory cannot leak in)."""
    ops: list[Op] = []
    add = ops.append
    tables = TABLES
    for item in changes.items if isinstance(changes, Changes) else changes:
        if type(item) is Deleted:
            table = tables[type(item.obj)]
            add((table, True, table.key_of(table.to_row(item.obj))))
        else:
            table = tables[type(item)]
            add((table, False, table.to_row(item)))
    return ops


def plan_writes(ops: Iterable[Op]) -> list[Write]:
    """The writes that bring the tables to the state ``ops`` leave them in, as
    few as possible: (table, delete?, rows) for one batched statement each.

    Ops are grouped by table (tables are independent: no foreign keys, no
    triggers). In a keyed table only the last op on each key matters (an upsert
    replaces the row), so a row changed by many calls gathered in one commit (a
    pack held from a thousand times, a session heartbeat twice) is written
    once: deletes first, then upserts. An append-only table keeps every row, in
    order.
    """
    keyed: dict[str, tuple[Table, dict[Row, tuple[bool, Row]]]] = {}
    appended: dict[str, tuple[Table, list[tuple[bool, Row]]]] = {}
    for table, delete, row in ops:
        if table.append_only:
            found = appended.get(table.name)
            if found is None:
                found = appended[table.name] = (table, [])
            found[1].append((delete, row))
            continue
        last = keyed.get(table.name)
        if last is None:
            last = keyed[table.name] = (table, {})
        last[1][row if delete else table.key_of(row)] = (delete, row)
    plan: list[Write] = []
    for table, final in keyed.values():
        deletes = [row for delete, row in final.values() if delete]
        upserts = [row for delete, row in final.values() if not delete]
        if deletes:
            plan.append((table, True, deletes))
        if upserts:
            plan.append((table, False, upserts))
    for table, rows in appended.values():
        # Runs of inserts (and, should one ever come, deletes) in their order.
        i = 0
        while i < len(rows):
            delete = rows[i][0]
            j = i
            while j < len(rows) and rows[j][0] == delete:
                j += 1
            plan.append((table, delete, [row for _, row in rows[i:j]]))
            i = j
    return plan


@dataclass
class _Batch:
    ops: list[Op]
    done: asyncio.Future[None] | None


def _failure(exc: BaseException) -> StoreFailed:
    """What a waiter of a failed write raises: the adapter's own StoreFailed (a
    copy per waiter), else a StoreFailed saying what went wrong."""
    if isinstance(exc, StoreFailed):
        mine = copy.copy(exc)
        mine.__cause__ = exc
        return mine
    return StoreFailed(str(exc) or type(exc).__name__)


class GroupCommit(Generic[R]):
    """The queue and its one writer task.

    ``write(plan)`` writes a non-empty plan (``plan_writes`` of the ops gathered)
    in one transaction and returns once it is committed; its result goes to
    ``after`` once the waiters are woken (SQLite moves its ledger checkpoint
    there: it may only trail the commit). ``stats`` counts the plan's rows: a row
    changed by many calls of one transaction is written, and counted, once.
    """

    def __init__(
        self,
        write: Callable[[list[Write]], Awaitable[R]],
        *,
        after: Callable[[R], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        max_batch_ops: int = 50_000,
        name: str = "store-writer",
        retry: Retry | None = None,
    ) -> None:
        self._write = write
        self._retry = retry
        self._after = after
        #: Told of a failed write, whoever's it was (a call's, a timer's, a flush's).
        self.on_failed = on_failed
        self._max_batch_ops = max_batch_ops
        self._name = name
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self._closed = False  # close() was called: nothing more is taken
        self._abandoned: StoreFailed | None = None  # why abandon() cancelled the writer
        self.commits = 0  # transactions committed, for tests and benchmarks
        #: Rows and seconds of each transaction written (server/metrics.py).
        self.stats = Batches()
        #: Seconds of each transaction's COMMIT alone, as the adapter timed it: what
        #: the database's durability costs (SQLite: the WAL's sync, and a checkpoint
        #: when one is due; PostgreSQL: the round trip, the WAL flush included).
        #: The rest of ``stats.seconds`` is writing the rows and waiting for a turn.
        self.syncs = Distribution()
        #: The transaction under way: its batches, and when it began (metrics: a
        #: commit that does not get through, another process holding the lock, is
        #: seen while it waits, not only once it is through).
        self._writing = 0
        self._writing_since: float | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name=self._name)

    def check(self) -> None:
        """Raise if an earlier write failed."""
        if self.failed is not None:
            if isinstance(self.failed, StoreFailed):
                raise _failure(self.failed)
            raise StoreFailed("the store failed earlier") from self.failed
        if self._closed:  # no writer would take it: its caller would wait for ever
            raise StoreFailed("the store is closed")

    async def commit(self, ops: list[Op]) -> None:
        """Queue ``ops`` and return once they are committed."""
        self.check()
        if not ops:
            return
        await self._enqueue(ops)

    async def barrier(self) -> None:
        """Return once everything queued before this call is committed."""
        self.check()
        await self._enqueue([])

    async def _enqueue(self, ops: list[Op]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Batch(ops, done))
        await done

    async def _run(self) -> None:
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                if await self._write_batches(first):
                    return
        except Exception as exc:
            # A failure after a transaction was committed (its waiters are told it
            # was): past this the writer is gone, so nothing queued now or later may
            # wait for it.
            if self.failed is None:
                self._fail(exc, [])
            raise

    async def _write_batches(self, first: _Batch) -> bool:
        """Write ``first`` and everything queued behind it in one transaction and
        wake their callers; True when the queue says stop. (Its own frame, so the
        rows are let go as soon as they are written.)"""
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
        ops: list[Op] = []
        for b in batches:
            ops.extend(b.ops)
        if not ops:  # barriers only: everything before them is committed
            _wake(batches, None)
            return stop
        began = self._writing_since = monotonic()
        self._writing = len(batches)
        try:
            plan = plan_writes(ops)
            result = await self._write_through(plan)
        except BaseException as exc:  # a failed write leaves memory ahead of the database
            self._fail(self._abandoned or exc, batches)
            raise
        finally:
            self._writing, self._writing_since = 0, None
        _wake(batches, None)  # committed: whatever happens next, they were
        self.commits += 1
        self.stats.observe(sum(len(rows) for _, _, rows in plan), monotonic() - began)
        if self._after is not None:
            self._after(result)
        return stop

    async def _write_through(self, plan: list[Write]) -> R:
        """``write(plan)``, tried again while it fails for now only (``Retry``)."""
        retry = self._retry
        if retry is None:
            return await self._write(plan)
        began = retry.clock()
        tries = 0
        delay = retry.first_delay
        logged: float | None = None
        while True:
            try:
                result = await self._write(plan)
            except Exception as exc:
                if not retry.transient(exc):
                    raise
                tries += 1
                now = retry.clock()
                if logged is None or now - logged >= retry.log_every:
                    logged = now
                    log.warning(
                        "store_busy",
                        **retry.log_fields,
                        waited_seconds=round(now - began, 1),
                        tries=tries,
                        queued=self.queued,
                        error=str(exc),
                        note="another process holds the database's lock: "
                        "the commit is tried again until it gets through",
                    )
                await retry.sleep(delay)
                delay = min(delay * 2, retry.max_delay)
                continue
            if tries:
                log.warning(
                    "store_busy_ended",
                    **retry.log_fields,
                    waited_seconds=round(retry.clock() - began, 1),
                    tries=tries + 1,
                )
            return result

    def _fail(self, exc: BaseException, batches: list[_Batch]) -> None:
        """The writer stops for good: ``batches``, everyone queued behind them and
        every later call fail with ``exc`` (``check``), and ``on_failed`` is told."""
        self.failed = exc
        _wake(batches, exc)
        while not self._queue.empty():
            late = self._queue.get_nowait()
            if late is not None:
                _wake([late], exc)
        if self.on_failed is not None and isinstance(exc, Exception):
            self.on_failed(exc)

    async def close(self) -> None:
        """Write out everything queued, then stop the writer; later writes fail."""
        self._closed = True
        writer = self._writer
        if writer is None:
            return
        if not writer.done():
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
        elif not writer.cancelled():
            # A writer that failed was told of (``on_failed``, its waiters): its error,
            # retrieved here, is not logged again as "never retrieved" when collected
            # (on CPython 3.11.7 that late log also made a later import fail with
            # "AST constructor recursion depth mismatch": a test file run alone).
            writer.exception()

    def abandon(self, why: str) -> None:
        """Give up the write under way, which will never end (its connection cut under
        it, and a driver that then waits for ever: asyncpg's ``executemany``): its
        callers, and everyone queued behind them, fail with StoreFailed(``why``) and
        are answered (the gate makes that NOT_LEADER: they repeat it elsewhere)."""
        if self._writer is not None and not self._writer.done():
            self._abandoned = StoreFailed(why)
            self._writer.cancel()

    @property
    def queued(self) -> int:
        """Calls waiting for their commit: those in the transaction under way and
        those queued for the next (for metrics and ``store_busy``)."""
        return self._writing + self._queue.qsize()

    @property
    def writing_seconds(self) -> float:
        """How long the transaction under way has been writing (0: none is)."""
        since = self._writing_since
        return 0.0 if since is None else monotonic() - since

    @property
    def running(self) -> bool:
        return self._writer is not None


def _wake(batches: list[_Batch], exc: BaseException | None) -> None:
    for b in batches:
        if b.done is not None and not b.done.done():
            if exc is None:
                b.done.set_result(None)
            else:
                b.done.set_exception(_failure(exc))
