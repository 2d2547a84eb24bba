"""The port's named reads (issue 13, point 1): what the engine reads from the
stored history, asked through ``StorePort`` only, so that every adapter is held
to the same answers (the ``store`` fixture runs them on each)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.domain.admins import AuditEvent, AuditTeam
from server.domain.changes import Changes
from server.domain.ledger import Cause, EntryKind, LedgerEntry
from server.domain.meta import SESSIONS_FROM_KEY, SESSIONS_RECENT_FROM_KEY, MetaValue, OlderLoaded
from server.domain.sessions import (
    ENDED_KEPT,
    ActivitySpan,
    Session,
    SessionState,
)
from server.store import reads
from server.store.codec import SESSIONS, Row
from server.store.port import Capture, SessionStart, StorePort
from server.store.schema import BACKFILLS
from server.store.sqlite import Store
from tests.store.builders import a_session
from tests.store.sent import statements_sent

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _entry(
    seq: int,
    kind: EntryKind,
    team: str,
    pack: str,
    amount: int,
    at: datetime,
    user: str = "",
    product: str = "",
) -> LedgerEntry:
    return LedgerEntry(
        seq, at, kind, team, pack, amount, 0, 0, Cause(f"s{seq}", user, product), f"h{seq}"
    )


def _session(
    session_id: str,
    team: str,
    user: str,
    product: str,
    start: datetime,
    state: SessionState = SessionState.ACTIVE,
    end_time: datetime | None = None,
) -> Session:
    return a_session(
        session_id,
        start,
        ended=end_time,
        user_id=user,
        team_id=team,
        product_id=product,
        lease_start=start + H,
        state=state,
    )


def _stored(s: Session) -> tuple[object, ...]:
    """What the store keeps of a session (identity aside: Session compares by object)."""
    return tuple(
        getattr(s, f.name)
        for f in fields(Session)
        if f.name not in {"meter", "device", "plugins", "due"}
    )


async def _commit(store: StorePort, *objs: object) -> None:
    await store.commit(Changes(list(objs)))


async def test_port_ledger_page_is_a_teams_entries_after_a_seq_in_order(store: StorePort) -> None:
    entries = [
        _entry(1, EntryKind.PURCHASE, "acme", "pk_a", 100, T0),
        _entry(2, EntryKind.PURCHASE, "zeta", "pk_z", 50, T0),
        _entry(3, EntryKind.PURCHASE, "acme", "pk_b", 20, T0 + H),
        _entry(4, EntryKind.HOLD, "acme", "pk_a", 10, T0 + 2 * H, "ann", "ACAD"),
        _entry(5, EntryKind.CAPTURE, "acme", "pk_a", 10, T0 + 3 * H, "ann", "ACAD"),
    ]
    await _commit(store, *entries[:3])
    await _commit(store, *entries[3:])
    acme = [e for e in entries if e.team_id == "acme"]
    assert await store.ledger_page("acme", 0, 100) == acme
    assert await store.ledger_page("acme", 0, 2) == acme[:2]  # at most `limit`
    assert await store.ledger_page("acme", 3, 100) == acme[2:]  # seq > after_seq
    assert await store.ledger_page("acme", 0, 100, "pk_a") == [entries[0], entries[3], entries[4]]
    assert await store.ledger_page("acme", 1, 1, "pk_a") == [entries[3]]
    assert await store.ledger_page("zeta", 0, 100) == [entries[1]]
    assert await store.ledger_page("none", 0, 100) == []
    assert await store.ledger_page("acme", 5, 100) == []


async def test_port_ended_session_reads_a_stored_session_by_id(store: StorePort) -> None:
    ended = _session("ses_1", "acme", "ann", "ACAD", T0, SessionState.ENDED, T0 + H)
    live = _session("ses_2", "acme", "bob", "ACAD", T0 + H)
    await _commit(store, ended, live)
    found = await store.ended_session("ses_1")
    assert found is not None and _stored(found) == _stored(ended)
    assert found.state is SessionState.ENDED and found.end_time == T0 + H
    other = await store.ended_session("ses_2")  # the engine checks the state and the user
    assert other is not None and other.state is SessionState.ACTIVE and other.user_id == "bob"
    assert await store.ended_session("ses_9") is None
    assert await store.ended_session("") is None


async def test_m11_m12_a_start_loads_the_ended_sessions_memory_keeps_and_no_older_ones(
    store: StorePort,
) -> None:
    """Memory keeps an ended session for ``ENDED_KEPT`` (2 days); a start loaded those
    that ended in the 7 days before the newest end, and the engine's first pass let go
    of five days of them ten minutes later (at 100,000 sessions a day, half a million
    loaded for nothing). It loads the 2 days memory keeps, the live ones whatever their
    age, and reads the others from the store when asked (M12)."""
    newest = T0 + timedelta(days=30)
    await _commit(
        store,
        a_session("ses_1_live", T0),  # a month live: loaded
        a_session("ses_2_three_days", newest - timedelta(days=4), ended=newest - timedelta(days=3)),
        a_session("ses_3_kept", newest - timedelta(days=2), ended=newest - ENDED_KEPT),
        a_session("ses_4_one_day", newest - timedelta(days=2), ended=newest - timedelta(days=1)),
        a_session("ses_5_newest", newest - H, ended=newest),
    )
    loaded = sorted(s.session_id for s in (await store.load()).of(Session))
    assert loaded == ["ses_1_live", "ses_3_kept", "ses_4_one_day", "ses_5_newest"]
    older = await store.ended_session("ses_2_three_days")
    assert older is not None and older.end_time == newest - timedelta(days=3)


async def test_port_usage_facts_are_one_teams_history_over_the_period(store: StorePort) -> None:
    start, end = T0, T0 + timedelta(days=2)
    await _commit(
        store,
        _entry(1, EntryKind.PURCHASE, "acme", "pk_a", 100, T0 - H),
        _entry(2, EntryKind.CAPTURE, "acme", "pk_a", 10, T0 - H, "ann", "ACAD"),  # before
        _entry(3, EntryKind.CAPTURE, "acme", "pk_a", 10, T0, "ann", "ACAD"),  # at start: in
        _entry(4, EntryKind.CAPTURE, "acme", "pk_a", 7, T0 + 25 * H, "bob", "MAYA"),
        _entry(5, EntryKind.CAPTURE, "acme", "pk_a", 10, end, "ann", "ACAD"),  # at end: out
        _entry(6, EntryKind.CAPTURE, "zeta", "pk_z", 10, T0 + H, "ann", "ACAD"),  # other team
        _entry(7, EntryKind.HOLD, "acme", "pk_a", 10, T0 + H, "ann", "ACAD"),  # not a charge
        _entry(8, EntryKind.MOVE_OUT, "acme", "pk_a", 30, T0 - 3 * H),  # moves: any time
        _entry(9, EntryKind.MOVE_IN, "acme", "pk_m", 15, T0 + 5 * H),
        _entry(10, EntryKind.MOVE_IN, "acme", "pk_m", 5, end + H),
        _entry(11, EntryKind.MOVE_IN, "zeta", "pk_a", 30, T0 - 3 * H),
        _session("ses_1", "acme", "ann", "ACAD", T0 - H),  # began before
        _session("ses_2", "acme", "ann", "ACAD", T0 + H),
        _session("ses_3", "acme", "bob", "MAYA", T0 + 30 * H),
        _session("ses_4", "acme", "bob", "MAYA", end),  # began at the end: out
        _session("ses_5", "zeta", "bob", "MAYA", T0 + H),
        ActivitySpan("ses_1", "acme", "ann", "ACAD", T0 - 2 * H, T0 + H),  # overlaps start
        ActivitySpan("ses_1", "acme", "ann", "ACAD", T0 - 3 * H, T0),  # ends at start: out
        ActivitySpan("ses_3", "acme", "bob", "MAYA", T0 + 30 * H, end + H),  # overlaps end
        ActivitySpan("ses_4", "acme", "bob", "MAYA", end, end + H),  # begins at end: out
        ActivitySpan("ses_5", "zeta", "bob", "MAYA", T0 + H, T0 + 2 * H),  # other team
    )
    facts = await store.usage_facts("acme", start, end)
    assert sorted(facts.captures, key=lambda c: c.time) == [
        Capture(T0, "ann", "ACAD", 10),
        Capture(T0 + 25 * H, "bob", "MAYA", 7),
    ]
    assert sorted(facts.session_starts, key=lambda s: s.time) == [
        SessionStart(T0 + H, "ann", "ACAD"),
        SessionStart(T0 + 30 * H, "bob", "MAYA"),
    ]
    assert sorted(facts.spans, key=lambda s: s.start) == [
        ActivitySpan("ses_1", "acme", "ann", "ACAD", T0 - 2 * H, T0 + H),
        ActivitySpan("ses_3", "acme", "bob", "MAYA", T0 + 30 * H, end + H),
    ]
    # The packs moved in or out, with their moves and what acme paid from them, any
    # time; not zeta's (pk_a moved there), nor a pack that never moved (pk_z's).
    assert facts.moved == {
        ("pk_a", EntryKind.MOVE_OUT): 30,
        ("pk_a", EntryKind.CAPTURE): 37,
        ("pk_m", EntryKind.MOVE_IN): 20,
    }
    empty = await store.usage_facts("nobody", start, end)
    assert (empty.captures, empty.session_starts, empty.spans, empty.moved) == ([], [], [], {})


async def test_r1_a_periods_spans_include_those_longer_than_a_day_begun_long_before_it(
    store: StorePort,
) -> None:
    """A report's spans are read from a day before its start, and those longer than a
    day that began earlier from the index of long spans alone (``reads.SPANS_SQL``):
    each overlapping span comes once, whichever part finds it, in start order."""
    day = timedelta(days=1)
    us = timedelta(microseconds=1)
    start, end = T0 + 10 * day, T0 + 11 * day

    def span(session: str, began: datetime, ended: datetime, team: str = "acme") -> ActivitySpan:
        return ActivitySpan(session, team, "ann", "ACAD", began, ended)

    month = span("ses_month", T0 - 20 * day, end + H)  # long, began 30 days before: in
    edge = span("ses_edge", start - day, start + us)  # began exactly a day before: in
    past = span("ses_past", start - day - us, start + us)  # a day and 2 us long: in
    ends_at_start = span("ses_out", start - 5 * day, start)  # long, ends at the start: out
    after = span("ses_after", end, end + 3 * day)  # long, begins at the end: out
    other = span("ses_other", T0, end, "zeta")  # long, another team's: out
    short = span("ses_short", start + H, start + 2 * H)
    await _commit(store, month, edge, past, ends_at_start, after, other, short)
    facts = await store.usage_facts("acme", start, end)
    assert facts.spans == [month, past, edge, short]


async def test_ad2_a_teams_audit_pages_merge_its_three_ways_of_being_named(
    store: StorePort,
) -> None:
    """A team's trail, a page at a time from its newest: the events naming it as team
    (1, 4), as other team (2, 6) or among the more teams (3, 7), in seq order, each
    once, never another team's (5, 8), however the pages cut them."""

    def event(seq: int, team: str, other: str = "", *more: str) -> AuditEvent:
        return AuditEvent(
            seq, f"ev_{seq}", T0, "OPERATOR", "", "X", team, other, "", "", "{}",
            more_team_ids=more,
        )  # fmt: skip

    events = [
        event(1, "acme"),
        event(2, "beta", "acme"),
        event(3, "beta", "zeta", "acme"),
        event(4, "acme", "beta"),
        event(5, "beta"),
        event(6, "zeta", "acme"),
        event(7, "beta", "zeta", "acme", "omega"),
        event(8, "zeta", "beta", "omega"),
    ]
    await _commit(store, *events, *(AuditTeam(t, e.seq) for e in events for t in e.more_team_ids))
    pages, before = [], 0
    while page := await store.audit_page("acme", before, 2):
        pages.append([e.seq for e in page])
        before = page[-1].seq
    assert pages == [[7, 6], [4, 3], [2, 1]]
    assert [e.seq for e in await store.audit_page("acme", 7, 3)] == [6, 4, 3]
    assert [e.more_team_ids for e in await store.audit_page("acme", 8, 1)] == [("acme", "omega")]
    assert [e.seq for e in await store.audit_page("", 6, 3)] == [5, 4, 3]  # every team's


async def test_m11_a_start_loads_from_the_stored_bound_the_sessions_it_loaded_before(
    store: StorePort,
) -> None:
    """The first session a start would load is the bound the engine stores
    (``SESSIONS_FROM_KEY``); a load from it finds the same sessions (live, and ended
    within the last days before the last end: M11, M12) as one from the first ever
    stored, and the sessions below it stay stored."""
    day = timedelta(days=1)
    assert await store.sessions_load_bound() is None  # none stored
    sessions = [
        _session("ses_1", "acme", "ann", "ACAD", T0, SessionState.ENDED, T0 + H),
        _session("ses_2", "acme", "bob", "ACAD", T0 + H, SessionState.ENDED, T0 + 2 * H),
        _session("ses_3", "acme", "cat", "ACAD", T0 + 2 * H),  # live
        _session("ses_4", "acme", "ann", "ACAD", T0 + 9 * day, SessionState.ENDED, T0 + 10 * day),
        _session("ses_5", "acme", "bob", "ACAD", T0 + 10 * day),  # live
    ]
    await _commit(store, *sessions)

    async def loaded() -> list[str]:
        return sorted(s.session_id for s in (await store.load()).of(Session))

    before = await loaded()
    assert before == ["ses_3", "ses_4", "ses_5"]
    bound = await store.sessions_load_bound()
    assert bound == "ses_3"
    await _commit(store, MetaValue(SESSIONS_FROM_KEY, bound))
    assert await loaded() == before
    assert await store.sessions_load_bound() == "ses_3"
    found = await store.ended_session("ses_1")
    assert found is not None and found.session_id == "ses_1"  # stored still


async def test_m11_a_start_loads_from_the_recent_bound_and_the_older_sessions_named(
    store: StorePort,
) -> None:
    """This release's start reads the sessions from its recent bound on
    (``SESSIONS_RECENT_FROM_KEY``) and those below it named in
    ``sessions_older_loaded``, each by the key's index: not the sessions between the
    oldest live one and the bound (a month of them, for one session live a month).
    A live session below the bound that is not named is not read: only a store
    written by hand holds one (the engine names every session in memory below it).
    The release before's bound and first loaded session are as they were."""
    day = timedelta(days=1)
    await _commit(
        store,
        _session("ses_1", "acme", "ann", "ACAD", T0),  # live a month: named
        _session("ses_2", "acme", "bob", "ACAD", T0 + H),  # live, not named: not read
        _session("ses_3", "acme", "cat", "ACAD", T0 + 2 * H, SessionState.ENDED, T0 + 3 * H),
        _session("ses_4", "acme", "bob", "ACAD", T0 + 29 * day),  # the bound
        _session("ses_5", "acme", "cat", "ACAD", T0 + 29 * day, SessionState.ENDED, T0 + 30 * day),
        MetaValue(SESSIONS_FROM_KEY, "ses_1"),
        MetaValue(SESSIONS_RECENT_FROM_KEY, "ses_4"),
        OlderLoaded("ses_1"),
    )
    loaded = [s.session_id for s in (await store.load()).of(Session)]
    assert loaded == ["ses_1", "ses_4", "ses_5"]  # in the order of their ids
    assert await store.sessions_load_bound() == "ses_1"  # the release before's


async def test_port_named_reads_answer_what_a_commit_just_stored(store: StorePort) -> None:
    """The reads see every commit that returned (the engine reads right after its
    own ``settled``)."""
    session = _session("ses_1", "acme", "ann", "ACAD", T0)
    await _commit(store, session)
    ended = _session("ses_1", "acme", "ann", "ACAD", T0, SessionState.ENDED, T0 + H)
    await _commit(store, ended, _entry(1, EntryKind.CAPTURE, "acme", "pk_a", 10, T0, "ann", "ACAD"))
    found = await store.ended_session("ses_1")
    assert found is not None and found.state is SessionState.ENDED
    facts = await store.usage_facts("acme", T0, T0 + H)
    assert facts.captures == [Capture(T0, "ann", "ACAD", 10)]


async def test_r1_a_reports_captures_and_moves_are_read_by_index_not_the_whole_ledger(
    tmp_path: Path,
) -> None:
    """R1's captures of the days asked for, the forecast's captures since a day (L2)
    and the packs a team moved (T5) are each found by an index of just those entries:
    by ``ledger_team`` alone, each read every entry the team ever had (a year of a
    team of a thousand users: 0.1-0.3 s a read, whatever the days)."""
    store = await Store.open(tmp_path / "plan.db")
    try:
        plans = {
            name: " ".join(r[3] for r in await store.query(f"EXPLAIN QUERY PLAN {sql}", params))
            for name, sql, params in [
                ("captures", reads.CAPTURES_SQL, ("acme", 0, 1)),
                ("since", reads.CAPTURED_SINCE_SQL, ("acme", 0)),
                ("moved", reads.MOVED_SQL, ("acme", "acme")),
            ]
        }
    finally:
        await store.close()
    assert "ledger_team_captures (team_id=? AND time>? AND time<?)" in plans["captures"]
    assert "ledger_team_captures (team_id=? AND time>?)" in plans["since"]
    assert "ledger_team_moves (kind=? AND team_id=?)" in plans["moved"]
    assert "ledger_pack (pack_id=?)" in plans["moved"]
    assert not any("ledger_team " in plan or "SCAN" in plan for plan in plans.values()), plans


async def test_r1_a_reports_spans_are_read_from_a_day_before_it_not_the_teams_first(
    tmp_path: Path,
) -> None:
    """R1's spans of a period are found from a day before its start by
    ``activity_team_start``, and the longer ones that began earlier by
    ``activity_team_long``, which holds only those: from the team's first span, a
    day of a year's history read every span of the year (0.13 s of SQL where
    commits wait, on the review's database)."""
    store = await Store.open(tmp_path / "plan.db")
    try:
        sql = f"EXPLAIN QUERY PLAN {reads.SPANS_SQL}"
        plan = " ".join(r[3] for r in await store.query(sql, ("acme", 0, 1, 0, "acme", 0, 0)))
    finally:
        await store.close()
    assert "activity_team_start (team_id=? AND start_time>? AND start_time<?)" in plan
    assert "activity_team_long (team_id=? AND end_time>?)" in plan
    assert "SCAN" not in plan, plan


async def test_ad2_a_teams_audit_page_reads_a_pages_worth_of_each_index_not_its_history(
    tmp_path: Path,
) -> None:
    """A team's trail (AD2) is the events naming it as team, as other team or among
    their more teams: a page takes the newest ``limit`` before its end from each of
    the three indexes, not (an OR of the three) every event the team ever had,
    sorted, for every page."""
    store = await Store.open(tmp_path / "plan.db")
    asked = statements_sent(store)
    try:
        await store.audit_page("acme", 500, 10)
        sql, params = asked[0]
        plan = " ".join(r[3] for r in await store.query(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        await store.close()
    assert "INDEX audit_team (team_id=? AND seq<?)" in plan
    assert "INDEX audit_other_team (other_team_id=? AND seq<?)" in plan
    assert "audit_teams USING PRIMARY KEY (team_id=? AND seq<?)" in plan
    assert "MULTI-INDEX OR" not in plan and "SCAN audit_events" not in plan, plan
    assert params.count(10) == 4  # each part's page, and the page's


async def test_ad2_an_audit_pages_more_teams_are_read_by_their_seqs(tmp_path: Path) -> None:
    """A page's events come back with their more teams, read by the page's seqs
    (``audit_teams_seq``, migration 15): ``audit_teams``' key leads with the team,
    and each page read the whole table (500,000 rows: about 30 ms a page)."""
    store = await Store.open(tmp_path / "plan.db")
    try:
        sql = f"EXPLAIN QUERY PLAN {reads.AUDIT_TEAMS_RANGE_SQL}"
        plan = " ".join(r[3] for r in await store.query(sql, (5_001, 5_050)))
    finally:
        await store.close()
    assert "INDEX audit_teams_seq (seq>? AND seq<?)" in plan, plan


async def test_m11_a_start_reads_the_sessions_from_the_bound_by_the_keys_index(
    tmp_path: Path,
) -> None:
    """A start's load of the sessions, the back-fill's look for sessions an older
    release wrote (``schema.BACKFILLS``) and the engine's read of the bound each
    seek the stored bound in the key's index and read on from it: not every
    session ever stored (a year of a busy server's: 0.9 s and 0.26 s of a start on
    the review's database, growing with the history)."""
    store = await Store.open(tmp_path / "plan.db")
    try:
        load, recent, named, bound = [
            " ".join(r[3] for r in await store.query(f"EXPLAIN QUERY PLAN {sql}", marks))
            for sql, marks in (
                (SESSIONS.load_sql(SESSIONS.order_by), ()),
                (BACKFILLS[0].find_sql, ("se_",)),
                (BACKFILLS[1].find_sql, ()),
                (reads.LOAD_BOUND_SQL, ()),
            )
        ]
    finally:
        await store.close()
    assert BACKFILLS[0].table == BACKFILLS[1].table == "sessions"
    from_bound = "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (session_id>?)"
    by_name = "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (session_id=?)"
    # This release's load: from its recent bound, and the older ones named, merged.
    assert "MERGE (UNION ALL)" in load and from_bound in load and by_name in load
    assert "SEARCH sessions_older_loaded USING PRIMARY KEY (session_id<?)" in load
    assert from_bound in recent and by_name in named
    assert from_bound in bound  # the release before's bound
    for plan in (load, recent, named, bound):
        assert "SCAN sessions" not in plan, plan


async def test_r1_a_commit_does_not_wait_for_a_long_named_read(tmp_path: Path) -> None:
    """The named reads (a report's facts: a year's are seconds of SQL) run on a
    connection of their own: a commit made while one runs is stored and answered
    without waiting for it (on the writer's connection, every Entitle, Idle and
    Release waited behind a year's report: 0.32 s on the review's database), and
    the read connection refuses to write."""
    store = await Store.open(tmp_path / "r.db")
    reader = store._reader
    assert reader is not None
    held = threading.Event()
    await reader.create_function("held", 0, lambda: held.wait(60))
    try:
        reading = asyncio.create_task(store._rows("SELECT held()"))
        await asyncio.sleep(0)
        await asyncio.wait_for(store.commit([MetaValue("k", "v")]), 30)
        assert not reading.done()  # the read is still held, the commit is stored
        stored = await store.query("SELECT value FROM meta WHERE key = 'k'")
        assert stored == [("v",)]
        held.set()
        assert await reading == [(1,)]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store._rows("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    finally:
        held.set()
        await store.close()


async def test_r1_a_reports_many_rows_are_made_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A report's facts of many rows (a year of a team: 300,000 and more) are made into
    objects on a thread of their own, not on the event loop every call waits for (it
    held them for seconds), and their rows freed there; a few are made in place."""
    made_on: list[int] = []

    class Seen(Capture):
        def __init__(self, *args: object) -> None:
            made_on.append(threading.get_ident())
            super().__init__(*args)  # type: ignore[arg-type]

    freed_on: list[int] = []

    class Freed(tuple[Any, ...]):
        def __del__(self) -> None:
            freed_on.append(threading.get_ident())

    class Rows(reads.NamedReads):
        def __init__(self, n: int) -> None:
            self.n = n

        async def _rows(self, sql: str, params: Row = ()) -> list[Any]:
            if sql is reads.CAPTURES_SQL:
                return [Freed((0, "ann", "ACAD", 10)) for _ in range(self.n)]
            return []

    monkeypatch.setattr(reads, "Capture", Seen)
    loop_thread = threading.get_ident()
    many = await Rows(reads.MADE_ON_THE_LOOP + 1).usage_facts("acme", T0, T0 + H)
    assert len(many.captures) == reads.MADE_ON_THE_LOOP + 1
    assert loop_thread not in made_on
    # ... and the rows they were made from freed there too, not on the loop.
    assert len(freed_on) == reads.MADE_ON_THE_LOOP + 1 and loop_thread not in freed_on
    made_on.clear()
    few = await Rows(3).usage_facts("acme", T0, T0 + H)
    assert len(few.captures) == 3 and set(made_on) == {loop_thread}
