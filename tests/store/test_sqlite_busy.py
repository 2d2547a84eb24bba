"""Another process holding SQLite's write lock (an operator's ``sqlite3`` shell in
``BEGIN IMMEDIATE``, a script) past the busy timeout made the commit fail with
"database is locked": the store was declared failed and the server exited 1.
It is waited out now: the writer tries the same transaction again
(``group_commit.Retry``, ``sqlite.is_busy``) until it gets through, logging how
long it has waited; any other error still fails the store."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from server.domain.ledger import EntryKind, LedgerEntry, TokenPack
from server.store.codec import SESSIONS
from server.store.group_commit import GroupCommit, Op, Retry, Write
from server.store.port import StoreFailed
from server.store.sqlite import Store, is_busy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OP: Op = (SESSIONS, False, ("ses_a",))


class FakeTime:
    """A clock that moves only when the writer sleeps (or a test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.on_sleep: Any = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()
        await asyncio.sleep(0)


def _lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == event]


async def test_store_a_write_lock_held_by_another_connection_is_waited_out(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    told: list[BaseException] = []
    time = FakeTime()
    retry = Retry(is_busy, sleep=time.sleep, clock=time.clock)
    store = await Store.open(db, on_failed=told.append, busy_timeout=0.05, retry=retry)
    holder = sqlite3.connect(db, isolation_level=None)  # e.g. `sqlite3 tessera.db`
    try:
        holder.execute("BEGIN IMMEDIATE")

        def let_go() -> None:
            if len(time.slept) == 3:
                holder.execute("ROLLBACK")

        time.on_sleep = let_go
        pack = TokenPack("pk_1", "acme", 5, T0, T0 + timedelta(days=365), "po-1", 5)
        entry = LedgerEntry(1, T0, EntryKind.PURCHASE, "acme", "pk_1", 5, 5, 0, hash="h1")
        with capture_logs() as logs:
            await store.commit([pack, entry])  # returns once written: after the lock
        stored = await store.query("SELECT seq, hash FROM ledger")
        await store.commit([pack])  # and the store goes on writing
    finally:
        holder.close()
        await store.close()
    assert told == []
    assert stored == [(1, "h1")]
    assert time.slept == [0.05, 0.1, 0.2]  # each pause twice the last
    (busy,) = _lines(logs, "store_busy")  # (not every few seconds yet: one line)
    assert (busy["log_level"], busy["db"], busy["tries"]) == ("warning", str(db), 1)
    assert busy["error"] == "database is locked"
    (ended,) = _lines(logs, "store_busy_ended")
    assert (ended["tries"], ended["waited_seconds"]) == (4, round(sum(time.slept), 1))


async def test_store_busy_is_logged_at_most_every_few_seconds_until_the_commit_is_through() -> None:
    """Each try that meets the lock waits the busy timeout (here one second of the
    test's clock), then the pause (one second): a line every five seconds at most,
    saying how long the commit has waited, and one when it is through."""
    time = FakeTime()
    refusals = 10

    async def write(plan: list[Write]) -> int:
        nonlocal refusals
        time.now += 1.0  # SQLite's busy timeout
        if refusals:
            refusals -= 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise error
        return len(plan)

    retry = Retry(is_busy, sleep=time.sleep, clock=time.clock, first_delay=1.0, max_delay=1.0)
    told: list[BaseException] = []
    group: GroupCommit[int] = GroupCommit(write, retry=retry, on_failed=told.append)
    group.start()
    try:
        with capture_logs() as logs:
            await group.commit([OP])
    finally:
        await group.close()
    assert told == [] and group.commits == 1
    assert [line["waited_seconds"] for line in _lines(logs, "store_busy")] == [1, 7, 13, 19]
    (ended,) = _lines(logs, "store_busy_ended")
    assert (ended["waited_seconds"], ended["tries"]) == (21, 11)


async def test_store_an_io_error_still_fails_the_store_at_once() -> None:
    """Only the lock is waited out: a disk that fails (or anything else) fails the
    store as before, its waiter and every later call with StoreFailed."""
    time = FakeTime()

    async def write(plan: list[Write]) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    told: list[BaseException] = []
    retry = Retry(is_busy, sleep=time.sleep, clock=time.clock)
    group: GroupCommit[int] = GroupCommit(write, retry=retry, on_failed=told.append)
    group.start()
    try:
        with pytest.raises(StoreFailed, match="disk I/O error"):
            await group.commit([OP])
        with pytest.raises(StoreFailed):
            await group.commit([OP])
    finally:
        await group.close()
    assert time.slept == []
    assert [str(e) for e in told] == ["disk I/O error"]


def test_store_is_busy_is_sqlite_busy_alone() -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert is_busy(locked)
    locked.sqlite_errorcode = 261  # type: ignore[attr-defined]  # SQLITE_BUSY_RECOVERY
    assert is_busy(locked)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert not is_busy(full)
    assert not is_busy(sqlite3.OperationalError("disk I/O error"))
    assert not is_busy(OSError("database is locked"))
