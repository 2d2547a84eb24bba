"""Benchmark: what a start reads of the sessions behind one session live for weeks.

One session opened first and still live, ``--ended`` sessions opened and ended
after it (each a minute long, the last of them three days before the newest
end), then ``--recent`` sessions of the last days, half of them ended. The
bounds are stored as a server keeps them (``Sessions.keep_load_bound``): the
release before's at the live one (the oldest live session), this release's
recent bound at the first recent session, the live one named below it
(``sessions_older_loaded``). Each statement a start runs on the sessions is
timed both ways, three rounds:

- the load: the release before's (from its bound: every session since the live
  one opened, filtered) and this release's (from the recent bound, and the
  named ones);
- the back-fill's look for rows an older release wrote (``schema.BACKFILLS``):
  the same two ways.

Both loads must find the same sessions (the run fails otherwise). SQLite: a
throwaway file. ``--postgres``: ``--pg URL`` (a database it may fill), else one
started by the dev dependency ``pgserver`` (``benchmarks.store_commit``).

Run: ``.venv/bin/python -m benchmarks.start_read [--postgres]`` (500,000 ended
sessions: about a minute to write on SQLite, two on PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from benchmarks.store_commit import postgres, stored_session
from server.domain.changes import Changes
from server.domain.meta import SESSIONS_FROM_KEY, SESSIONS_RECENT_FROM_KEY, MetaValue, OlderLoaded
from server.domain.sessions import EndReason, Session, SessionState
from server.store.codec import SESSIONS, SESSIONS_LOADED_FROM
from server.store.postgres import PostgresStore, numbered
from server.store.schema import BACKFILLS, LEASE_US
from server.store.sqlite import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 10_000
# The release before's: every session from its bound on, filtered.
BEFORE_LOAD = f"{SESSIONS.select_sql} {SESSIONS_LOADED_FROM} {SESSIONS.order_by}"
BEFORE_LOOK = (
    "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id >= ? "  # noqa: S608
    f"AND lease_start <> lease_end - {LEASE_US})"
)


def _made(session_id: str, start: datetime, ended: datetime | None) -> Session:
    session = dataclasses.replace(
        stored_session(0),
        session_id=session_id,
        start_time=start,
        lease_start=start,
        last_activity=start,
        state_since=start,
        coverage_since=start,
    )
    if ended is not None:
        session.state, session.state_since = SessionState.ENDED, ended
        session.end_reason = EndReason.RELEASED
    return session


async def _fill(store: Store | PostgresStore, ended: int, recent: int) -> None:
    await store.commit(Changes([_made("ses_0_live", T0, None)]))
    for first in range(0, ended, CHUNK):
        batch: list[object] = []
        for n in range(first, min(ended, first + CHUNK)):
            start = T0 + n * timedelta(seconds=30)
            batch.append(_made(f"ses_1_{n:08d}", start, start + timedelta(minutes=1)))
        await store.commit(Changes(batch))
    last = T0 + ended * timedelta(seconds=30) + timedelta(days=3)
    batch = [
        _made(f"ses_2_{n:06d}", last + n * timedelta(seconds=1), last if n % 2 else None)
        for n in range(recent)
    ]
    batch += [
        MetaValue(SESSIONS_FROM_KEY, "ses_0_live"),
        MetaValue(SESSIONS_RECENT_FROM_KEY, "ses_2_000000"),
        OlderLoaded("ses_0_live"),
    ]
    await store.commit(Changes(batch))


async def _timed(
    store: Store | PostgresStore, sql: Sequence[tuple[str, tuple[object, ...]]], url: str | None
) -> tuple[float, list[tuple[object, ...]]]:
    """Milliseconds to run ``sql``, and its rows. PostgreSQL: on a connection of its
    own, as a server's open runs them, once: from its sixth run of a statement one
    connection plans ``session_id >= $1`` for any value (a third of the table,
    read whole: 40-90 ms here), which no server's start or takeover does."""
    rows: list[tuple[object, ...]] = []
    if url is None:
        start = time.perf_counter()
        for statement, marks in sql:
            rows += await store.query(statement, marks)
        return (time.perf_counter() - start) * 1000, rows
    conn = await asyncpg.connect(url)
    try:
        start = time.perf_counter()
        for statement, marks in sql:
            rows += [tuple(r) for r in await conn.fetch(numbered(statement), *marks)]
        return (time.perf_counter() - start) * 1000, rows
    finally:
        await conn.close()


async def measure(
    store: Store | PostgresStore, name: str, ended: int, recent: int, url: str | None = None
) -> None:
    await _fill(store, ended, recent)
    if isinstance(store, PostgresStore):
        await store.query("VACUUM ANALYZE sessions")
    mark = tuple((await store.query(BACKFILLS[0].mark_sql))[0])
    ways: dict[str, list[tuple[str, tuple[object, ...]]]] = {
        "load, the release before's": [(BEFORE_LOAD, ())],
        "load, this release's": [(SESSIONS.load_sql(SESSIONS.order_by), ())],
        "look, the release before's": [(BEFORE_LOOK, ("ses_0_live",))],
        "look, this release's": [(BACKFILLS[0].find_sql, mark), (BACKFILLS[1].find_sql, ())],
    }
    print(f"{name}: 1 live session, then {ended:,} ended, then {recent:,} recent (ms a read)")
    found: dict[str, list[tuple[object, ...]]] = {}
    for _ in range(3):
        line = []
        for way, sql in ways.items():
            ms, found[way] = await _timed(store, sql, url)
            line.append(f"{way} {ms:8.1f}")
        print("  " + " | ".join(line))
    before, now = found["load, the release before's"], found["load, this release's"]
    if before != now:
        raise SystemExit(f"the two loads differ: {len(before)} against {len(now)} sessions")
    print(
        f"START_READ store={name} ended={ended} loaded={len(now)} "
        f"(each load found the same {len(now):,} sessions)"
    )


async def run(args: argparse.Namespace) -> None:
    if args.postgres:
        with postgres(args.pg) as url:
            store: Store | PostgresStore = await PostgresStore.open(url)
            try:
                await measure(store, "PostgreSQL", args.ended, args.recent, url)
            finally:
                await store.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "start_read.db")
        try:
            await measure(store, "SQLite", args.ended, args.recent)
        finally:
            await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ended", type=int, default=500_000, help="sessions behind the live one")
    p.add_argument("--recent", type=int, default=2_000, help="sessions of the last days")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL, not SQLite")
    p.add_argument("--pg", default=None, help="a PostgreSQL URL it may fill (else pgserver)")
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
