"""The SQLite adapter writes a commit's rows many per statement (``BLOCKS``): each
row is stored exactly as committed, the last change of a row wins, and a row that
fails fails its whole transaction (RULES: an answer only once its change is
stored; a failed commit stores nothing of it)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.domain.ledger import Cause, EntryKind, LedgerEntry
from server.domain.sessions import Session, SessionState
from server.store.codec import SESSIONS
from server.store.port import StoreFailed
from server.store.sqlite import BLOCKS, Store, _write_plan
from tests.store.builders import a_session

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# More rows than the largest block, with a remainder through every smaller one.
N = BLOCKS[0] + sum(BLOCKS) + 2


def _session(i: int) -> Session:
    start = T0 + timedelta(seconds=i)
    return a_session(
        f"ses_{i}",
        start,
        device_id=f"d{i}",
        request_id=f"r{i}",
        lease_start=start + timedelta(minutes=15),
    )


def _entry(seq: int) -> LedgerEntry:
    cause = Cause(f"ses_{seq}", "ann@x.io", "ACAD")
    return LedgerEntry(seq, T0, EntryKind.HOLD, "acme", "pk_1", 10, -10, 10, cause, "0" * 64)


async def test_store_commit_of_many_rows_stores_each_as_committed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        sessions = [_session(i) for i in range(N)]
        await store.commit(sessions)
        # One commit changing every other row twice: the last change is stored.
        later = T0 + timedelta(hours=1)
        changed = [dataclasses.replace(s, lease_start=later) for s in sessions[::2]]
        again = [dataclasses.replace(s, lease_start=later + timedelta(minutes=1)) for s in changed]
        await store.commit([*changed, *again])
        snapshot = await store.load()
    finally:
        await store.close()
    rows = {s.session_id: SESSIONS.to_row(s) for s in snapshot.of(Session)}
    assert len(rows) == N
    for i, s in enumerate(sessions):
        want = again[i // 2] if i % 2 == 0 else s
        assert rows[s.session_id] == SESSIONS.to_row(want)


async def test_store_a_row_that_fails_in_a_block_stores_nothing_of_its_commit(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        await store.commit([_entry(BLOCKS[1])])  # the seq a later block will repeat
        with pytest.raises(StoreFailed):
            await store.commit([_session(0), *(_entry(seq) for seq in range(1, N))])
        # A failed write fails the store (memory may be ahead): nothing more is written.
        rows = await store.query("SELECT count(*) FROM ledger")
        sessions = await store.query("SELECT count(*) FROM sessions")
    finally:
        await store.close()
    assert rows == [(1,)]
    assert sessions == [(0,)]


async def test_store_commit_is_one_trip_to_the_connections_thread(tmp_path: Path) -> None:
    """BEGIN, the rows and COMMIT go to aiosqlite's thread together: on a busy event
    loop each trip waits for the loop's turn (issue 17). The first commit comes right
    after the store opened, whose last statement (a PRAGMA with a row) must not be
    left open on that thread: COMMIT would fail ("SQL statements in progress")."""
    store = await Store.open(tmp_path / "s.db")
    trips: list[object] = []
    db = store._db
    execute = db._execute

    async def counted(fn: object, *args: object, **kwargs: object) -> object:
        trips.append(fn)
        return await execute(fn, *args, **kwargs)

    db._execute = counted  # type: ignore[method-assign]
    try:
        await store.commit([_session(0)])
        await store.commit([_session(1), _entry(1)])
        committed = list(trips)
        count = await store.query("SELECT count(*) FROM sessions")
    finally:
        await store.close()
    assert committed == [_write_plan, _write_plan]
    assert count == [(2,)]


# -- a session's indexes are written only where their columns change (issue 17) ------


def _wal_frames(db: Path) -> int:
    """Pages written to the log since it was last emptied (its header says their size)."""
    log = db.with_name(db.name + "-wal").read_bytes()
    if not log:  # emptied by a checkpoint
        return 0
    page = int.from_bytes(log[8:12], "big")
    return (len(log) - 32) // (24 + page)


async def test_store_a_heartbeats_change_writes_no_page_of_its_sessions_indexes(
    tmp_path: Path,
) -> None:
    """A heartbeat changes a session's lease end, not its team, start or end: one
    page is written, the row's. SQLite rewrites the index entry of every column an
    upsert sets, changed or not, so setting them all wrote ``sessions_end``'s and
    ``sessions_team_start``'s pages too, three in all, in every heartbeat flush."""
    db = tmp_path / "s.db"
    store = await Store.open(db)
    try:
        session = _session(0)
        await store.commit([session])
        await store.query("PRAGMA wal_checkpoint(TRUNCATE)")
        assert _wal_frames(db) == 0
        await store.commit([dataclasses.replace(session, lease_start=T0 + timedelta(hours=1))])
        written = _wal_frames(db)
        stored = await store.query(f"{SESSIONS.select_sql} WHERE session_id = 'ses_0'")
    finally:
        await store.close()
    assert written == 1
    assert SESSIONS.from_row(stored[0]).lease_start == T0 + timedelta(hours=1)


async def test_store_stores_a_sessions_end_in_every_block_and_keeps_its_fixed_columns(
    tmp_path: Path,
) -> None:
    """Ends are stored in every block size, and only ended sessions are listed in
    the partial ``sessions_end`` index. A session's team and start (``fixed``:
    decided at Entitle) keep the values it was inserted with."""
    later = T0 + timedelta(hours=2)
    store = await Store.open(tmp_path / "s.db")
    try:
        sessions = [_session(i) for i in range(N)]
        await store.commit(sessions)
        changed = [
            dataclasses.replace(s, state=SessionState.ENDED, state_since=later, lease_start=later)
            if i % 2 == 0
            else dataclasses.replace(s, lease_start=later)
            for i, s in enumerate(sessions)
        ]
        await store.commit(changed)
        moved = dataclasses.replace(changed[1], team_id="beta", start_time=later)
        moved.last_activity = later
        await store.commit([moved])
        every = ", ".join(SESSIONS.columns)  # the computed end_time too
        rows = await store.query(f"SELECT {every} FROM sessions")  # noqa: S608
        ended = await store.query(
            "SELECT count(*) FROM sessions INDEXED BY sessions_end WHERE end_time > 0"
        )
    finally:
        await store.close()
    want = {s.session_id: SESSIONS.to_row(s) for s in changed}
    want["ses_1"] = SESSIONS.to_row(dataclasses.replace(changed[1], last_activity=later))
    assert {r[0]: tuple(r) for r in rows} == want
    assert ended == [(len(range(0, N, 2)),)]
