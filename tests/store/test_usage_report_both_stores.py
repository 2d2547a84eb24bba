"""One stored history gives one usage report (R1), on SQLite and on PostgreSQL.

Each store may read a team's spans in its own order: SQLite walks its index
(``activity_team_start``), PostgreSQL, once its table is analyzed and large,
may scan the heap (the order spans were appended in: each when it ends). The
report's active seconds are the spans' exact total, so they do not hang on it;
and the spans are read ``ORDER BY start_time, session_id`` on both stores, so
that the facts themselves are the same too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from server.api.convert import usage_row_out
from server.domain.changes import Changes
from server.domain.sessions import ActivitySpan
from server.engine.usage import UsageReport, report_rows
from server.store.port import StorePort
from server.store.postgres import PostgresStore
from server.store.sqlite import Store

T0 = datetime(2028, 3, 1, 9, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
LO, HI = T0 - timedelta(days=1), T0 + timedelta(days=1)


def span(session_id: str, start_ms: int, end_ms: int, user: str = "maya@x.test") -> ActivitySpan:
    return ActivitySpan(session_id, "acme", user, "ACAD", T0 + start_ms * MS, T0 + end_ms * MS)


# Other users' activity that day: enough rows for PostgreSQL's planner to scan the table.
OTHERS = [span(f"ses_o{i}", 1000 + i, 2000 + i, user=f"u{i % 50}@x.test") for i in range(5000)]
# Three of maya's sessions, stored latest first: 0.1 + 0.2 + 0.7 s = 1 s exactly (as
# float seconds, 0.7 + 0.2 + 0.1, SQLite's order, is 0.999..., and truncated it was
# 0 s there and 1 s on PostgreSQL).
MAYA = [span("ses_c", 2000, 2100), span("ses_b", 1000, 1200), span("ses_a", 0, 700)]


async def report_of(store: StorePort, analyze_url: str = "") -> tuple[list[object], ...]:
    """The history above stored, then read back: maya's spans as the store gave
    them, and the report's rows and total as the API says them."""
    try:
        await store.commit(Changes(list(OTHERS)))
        for s in MAYA:  # one by one, as their sessions' spans ended
            await store.commit(Changes([s]))
        if analyze_url:  # as autovacuum does on its own
            conn = await asyncpg.connect(analyze_url)
            try:
                await conn.execute("ANALYZE activity")
            finally:
                await conn.close()
        facts = await store.usage_facts("acme", LO, HI)
        report = UsageReport(report_rows(LO, HI, facts, []))
        rows = [usage_row_out(r) for r in report.rows]
        return (
            [s for s in facts.spans if s.user_id == "maya@x.test"],
            [(r.date, r.user_id, r.active_seconds) for r in rows],
            [report.total_active_seconds],
        )
    finally:
        await store.close()


async def test_r1_one_history_gives_the_same_usage_report_on_sqlite_and_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    lite = await report_of(await Store.open(tmp_path / "s.db"))
    pg = await report_of(await PostgresStore.open(pg_url), pg_url)
    assert pg == lite
    spans, rows, total = lite
    assert spans == sorted(MAYA, key=lambda s: (s.start, s.session_id))  # in one order
    assert ("2028-03-01", "maya@x.test", 1) in rows  # the exact 1 s
    # each of the 50 others: 100 spans of 1 s, 50 ms apart, so side by side (R1: the
    # user's time counts once): 5.95 s from the first's start to the last's end
    assert sorted(r for r in rows if r[1] != "maya@x.test") == sorted(
        ("2028-03-01", f"u{i}@x.test", 5) for i in range(50)
    )
    assert total == [1 + 50 * 5]
