"""The PostgreSQL store's named reads on wide data: what each reads of a table is
bounded by what it answers, not by the history around it (a year of a busy
ledger, a long audit trail). Checked on PostgreSQL's own plans, run
(``EXPLAIN ANALYZE``) on the statements the store sent, with the tables
ANALYZEd as autovacuum leaves them: the rows each scan of a table read, no
timing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from server.domain.admins import AuditEvent, AuditTeam
from server.domain.changes import Changes
from server.domain.ledger import Cause, EntryKind, LedgerEntry
from server.domain.meta import SESSIONS_FROM_KEY, SESSIONS_RECENT_FROM_KEY, MetaValue, OlderLoaded
from server.domain.sessions import Session
from server.store import reads
from server.store.codec import SESSIONS, Row
from server.store.postgres import PostgresStore, numbered
from server.store.schema import BACKFILLS
from tests.store.builders import a_session
from tests.store.sent import statements_sent

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _read(url: str, asked: list[tuple[str, Row]], table: str) -> tuple[int, list[str]]:
    """The rows the statements ``asked`` read of ``table`` when run again (those the
    scans of it returned and those they filtered out), and the kinds of those scans."""
    conn = await asyncpg.connect(url)
    try:
        read, scans = 0, []
        for sql, params in asked:
            found = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {numbered(sql)}", *params)
            for node in _nodes(json.loads(found)[0]["Plan"]):
                if node.get("Relation Name") != table:
                    continue
                scans.append(node["Node Type"])
                per_loop = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
                read += per_loop * node["Actual Loops"]
        return read, scans
    finally:
        await conn.close()


def _entry(
    seq: int, kind: EntryKind, team: str, pack: str, amount: int, at: datetime
) -> LedgerEntry:
    return LedgerEntry(seq, at, kind, team, pack, amount, 0, 0, Cause(f"s{seq}", "ann", "ACAD"))


async def test_pg_a_reports_moved_packs_are_read_by_their_packs_not_the_whole_ledger(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """R1's report asks what each pack a team moved in or out (T5) came to in that
    team. PostgreSQL planned the one statement SQLite answers by ``ledger_pack``
    (``reads.MOVED_SQL``) as a scan of the whole ledger where a few big packs
    hold it (one company's server, a pack a year), for every report, a day's too:
    360-386 ms at 1.15 M entries on two packs, growing with the history. The packs
    moved are found first (``ledger_team_moves``), and only their entries are read,
    none when the team moved none."""
    entries: list[object] = []
    seq = 0
    for n in range(20_000):  # a big team's year of captures, from its big pack
        seq += 1
        entries.append(_entry(seq, EntryKind.CAPTURE, "big", "pk_big", 1, T0 + n * H // 4))
    # acme moved its pack pk_a to t9, got part of it back, then captured from it
    for kind, team, amount in (
        (EntryKind.MOVE_OUT, "acme", -40),
        (EntryKind.MOVE_IN, "t9", 40),
        (EntryKind.MOVE_OUT, "t9", -10),
        (EntryKind.MOVE_IN, "acme", 10),
        (EntryKind.CAPTURE, "acme", 3),
        (EntryKind.CAPTURE, "acme", 2),
    ):
        seq += 1
        entries.append(_entry(seq, kind, team, "pk_a", amount, T0 + 5_000 * H))
    await pgstore.commit(Changes(entries))
    await pgstore.query("ANALYZE ledger")
    asked = statements_sent(pgstore)

    facts = await pgstore.usage_facts("acme", T0 + 4_999 * H, T0 + 5_001 * H)
    lonely = await pgstore.usage_facts("big", T0, T0 + H)  # a team that moved nothing

    assert facts.moved == {
        ("pk_a", EntryKind.MOVE_OUT): -40,
        ("pk_a", EntryKind.MOVE_IN): 10,
        ("pk_a", EntryKind.CAPTURE): 5,
    }
    assert lonely.moved == {}
    moves = [(sql, params) for sql, params in asked if "MOVE_" in sql]
    read, scans = await _read(pg_url, moves, "ledger")
    assert "Seq Scan" not in scans, scans
    # pk_a's 6 entries and the moves' 4 index entries: not the ledger's 20,006
    assert read <= 20, (read, scans)


async def test_pg_a_teams_audit_page_deep_in_its_trail_reads_a_page_not_the_events_after_it(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """AD2: a team's page before an event reads the newest ``limit`` of each of
    the three ways an event names the team, then those events by their key.
    PostgreSQL joined the page's events to the trail by walking its key from the
    newest event down to the page's (a merge join): a page in the middle of a
    300,000-event trail read 159,071 events, 35 ms, growing with the events after
    the page. Asked for by an array of the page's seqs, each is found by its key."""
    events: list[object] = []
    for seq in range(1, 20_001):
        team = "acme" if seq % 10 == 0 else f"t{seq % 100}"
        other = "acme" if seq % 97 == 0 else ""
        more = ("acme",) if seq % 1000 == 995 else ()
        events.append(
            AuditEvent(
                seq,
                f"ev{seq:09d}",
                T0 + seq * H,
                "OPERATOR",
                "op",
                "AssignUsers",
                team,
                other,
                "ann",
                "",
                "{}",
                f"h{seq}",
                more,
            )
        )
        events.extend(AuditTeam(team_id, seq) for team_id in more)
    await pgstore.commit(Changes(events))
    await pgstore.query("ANALYZE audit_events")
    await pgstore.query("ANALYZE audit_teams")
    asked = statements_sent(pgstore)

    page = await pgstore.audit_page("acme", 10_000, 50)

    names = lambda s: s % 10 == 0 or s % 97 == 0 or s % 1000 == 995  # noqa: E731
    assert [e.seq for e in page] == [s for s in range(9_999, 0, -1) if names(s)][:50]
    assert [e.more_team_ids for e in page if e.seq == 9_995] == [("acme",)]
    read, scans = await _read(pg_url, asked[:1], "audit_events")
    assert "Seq Scan" not in scans, scans
    # each way's page and the page's events by their key: 600 (PostgreSQL finds
    # acme's own page, a tenth of the trail, by the key from the page's end, 500
    # events), not the 11,001 events from the trail's newest down to the page's last
    assert read <= 1_000, (read, scans)


async def test_pg_an_audit_pages_more_teams_are_read_by_seq_not_the_whole_table(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """AD2: a page's events come back with their more teams, read by the page's
    seqs (``audit_teams_seq``, migration 11): ``audit_teams``' key leads with the
    team, and each page read the whole table (500,000 rows: about 30 ms a page)."""
    rows = [AuditTeam(f"t{n}", seq) for seq in range(1, 10_001) for n in range(3)]
    await pgstore.commit(Changes(rows))
    await pgstore.query("ANALYZE audit_teams")

    read, scans = await _read(
        pg_url, [(reads.AUDIT_TEAMS_RANGE_SQL, (5_001, 5_050))], "audit_teams"
    )

    assert "Seq Scan" not in scans, scans
    assert read == 150, (read, scans)  # the 50 events' 3 teams each, not 30,000


async def test_pg_m11_a_start_reads_the_sessions_from_the_recent_bound_not_the_oldest_live_one(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """M11, M12: one session live for weeks, 5,000 ended since, and the last few
    (the recent bound's, ``SESSIONS_RECENT_FROM_KEY``). A start's load and the
    back-fill's looks (``schema.BACKFILLS``) read the live one by its name
    (``sessions_older_loaded``) and the sessions from the bound on: not the 5,000
    between them, which the release before's bound (the oldest live session) made
    every start and takeover read."""
    sessions = [a_session("se_0_pinned", T0)]
    sessions += [
        a_session(f"se_1_{n:05d}", T0 + n * H, ended=T0 + n * H + H / 2) for n in range(5_000)
    ]
    last = T0 + 5_000 * H
    sessions += [a_session(f"se_2_{n}", last + n * H) for n in range(10)]
    await pgstore.commit(
        Changes(
            [
                *sessions,
                MetaValue(SESSIONS_FROM_KEY, "se_0_pinned"),
                MetaValue(SESSIONS_RECENT_FROM_KEY, "se_2_0"),
                OlderLoaded("se_0_pinned"),
            ]
        )
    )
    await pgstore.query("ANALYZE sessions")
    await pgstore.query("ANALYZE sessions_older_loaded")
    recent = await pgstore.query(BACKFILLS[0].mark_sql)
    asked = [
        (SESSIONS.load_sql(SESSIONS.order_by), ()),
        (BACKFILLS[0].find_sql, tuple(recent[0])),
        (BACKFILLS[1].find_sql, ()),
    ]
    read, scans = await _read(pg_url, asked, "sessions")

    assert "Seq Scan" not in scans, scans
    assert read <= 40, (read, scans)  # 11 loaded (twice: the load's two parts), not 5,000
    loaded = (await pgstore.load()).of(Session)
    # The ended ones are months older than the newest end (none): none is loaded.
    assert [s.session_id for s in loaded] == ["se_0_pinned"] + [f"se_2_{n}" for n in range(10)]
