"""The port's named reads, once for every adapter.

What the engine reads from committed history that does not live in memory: a
team's ledger page, an ended session, the usage report's facts. The SQL is
written once here, with SQLite's ``?`` marks; an adapter gives the mixin
``_rows`` (any SQL, its rows) and turns the marks into its own (PostgreSQL:
``$1``, ``$2``...).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

from server.domain.admins import AuditEvent
from server.domain.directory import Notification
from server.domain.ledger import EntryKind, LedgerEntry
from server.domain.meta import MetaValue, clock_at
from server.domain.sessions import Session
from server.loops import let_go
from server.store.codec import (
    ACTIVITY,
    AUDIT_EVENTS,
    LEDGER,
    SESSIONS,
    SESSIONS_LOADED_FROM,
    Row,
    Table,
    i2t,
    t2i,
)
from server.store.port import Capture, SessionStart, Snapshot, UsageFacts
from server.store.schema import LONG_SPAN_US

# The kinds are written out, not bound: a partial index is used only by a query whose
# WHERE says what the index's does (schema.py, migration 13).
CAPTURES_SQL = (
    "SELECT time, user_id, product_id, amount FROM ledger "
    "WHERE team_id = ? AND kind = 'CAPTURE' AND time >= ? AND time < ?"
)
CAPTURED_SINCE_SQL = (
    "SELECT amount FROM ledger WHERE team_id = ? AND kind = 'CAPTURE' AND time >= ?"
)
SESSION_STARTS_SQL = (
    "SELECT start_time, user_id, product_id FROM sessions "
    "WHERE team_id = ? AND start_time >= ? AND start_time < ?"
)
# A team's spans that overlap a period, in two parts. Those that began at most
# ``LONG_SPAN_US`` before it, found by ``activity_team_start`` from that instant on
# (not from the team's first span: a day of a year's history read every span of the
# year before it, 0.1-0.16 s of SQL where commits wait); and the longer ones that
# began earlier, found by ``activity_team_long`` (SQLite migration 14, PostgreSQL
# 10), which holds only spans longer than that: one that began before the period's
# start less ``LONG_SPAN_US`` and ends after its start is longer, so the two parts
# are every overlapping span, once. The unary ``+`` keeps SQLite, which has no
# statistics, from reading the second part's by ``activity_team_start`` instead.
# In one order on every store, so that both give the same facts (the report's sum
# is exact in any order, R1): by start, then session (the spans' key is the session
# and the start, so no two rows tie on both).
SPANS_SQL = (
    f"{ACTIVITY.select_sql} WHERE team_id = ? AND start_time >= ? AND start_time < ? "
    "AND end_time > ? "
    f"UNION ALL {ACTIVITY.select_sql} WHERE team_id = ? AND end_time - start_time > "
    f"{LONG_SPAN_US} AND end_time > ? AND +start_time < ? "
    "ORDER BY start_time, session_id"
)
# The first session a start of the release before would load (from its stored bound
# on), by the key's index (``Sessions.keep_load_bound``). There is one whenever any
# session is stored: the last to end is loaded, if none is live.
LOAD_BOUND_SQL = (
    f"SELECT session_id FROM sessions {SESSIONS_LOADED_FROM} "  # noqa: S608 - our own SQL
    "ORDER BY session_id LIMIT 1"
)
# The audit trail's head, which the engine's chain goes on from (AD2).
LAST_AUDIT_SQL = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
# Where a team's audit events name it: as the team, the other team, or among the
# more teams (table, column).
AUDIT_TEAM_PARTS = (
    ("audit_events", "team_id"),
    ("audit_events", "other_team_id"),
    ("audit_teams", "team_id"),
)
# The more teams (``AuditEvent.more_team_ids``) of the events in a range of seqs.
AUDIT_TEAMS_RANGE_SQL = "SELECT seq, team_id FROM audit_teams WHERE seq >= ? AND seq <= ?"
# The times of the two chains' heads, each found by its primary key (``latest_instant``).
LAST_TIMES_SQL = (
    "SELECT (SELECT time FROM ledger ORDER BY seq DESC LIMIT 1), "
    "(SELECT time FROM audit_events ORDER BY seq DESC LIMIT 1)"
)
# SUM of a BIGINT is a NUMERIC in PostgreSQL: read back with int().
# The packs a team moved in or out (``ledger_team_moves``), and what each of its
# moves, captures and expiries came to in that team, each pack's entries found by
# ``ledger_pack`` (``team_id || ''`` keeps SQLite, which has no statistics, from
# reading every entry of the team by ``ledger_team`` instead).
MOVED_SQL = (
    "SELECT pack_id, kind, SUM(amount) FROM ledger "
    "WHERE team_id || '' = ? AND kind IN ('MOVE_IN', 'MOVE_OUT', 'CAPTURE', 'EXPIRY') "
    "AND pack_id IN ("
    "SELECT pack_id FROM ledger WHERE kind IN ('MOVE_IN', 'MOVE_OUT') AND team_id = ?) "
    "GROUP BY pack_id, kind"
)


#: Rows a named read turns into objects on the event loop at most (``_made``).
MADE_ON_THE_LOOP = 2_000

T = TypeVar("T")


class NamedReads:
    """``StorePort``'s named reads over an adapter's ``_rows``."""

    @abstractmethod
    async def _rows(self, sql: str, params: Row = ()) -> list[Any]:
        """The rows of ``sql`` (with ``?`` marks), each indexable by position."""

    def _among(self, column: str, subquery: str) -> str:
        """SQL: ``column`` is one of the values ``subquery`` gives."""
        return f"{column} IN ({subquery})"

    async def _moved(self, team_id: str) -> list[Any]:
        """(pack id, kind, sum) of the entries in ``team_id`` of each pack it moved
        in or out (``MOVED_SQL``)."""
        return await self._rows(MOVED_SQL, (team_id, team_id))

    async def _select(self, table: Table, rest: str, params: Row) -> list[Any]:
        return await self._made(f"{table.select_sql} {rest}", params, table.from_row)

    async def _made(self, sql: str, params: Row, make: Callable[[Any], T]) -> list[T]:
        """``make`` of each row of ``sql``: on the event loop for a page's worth, on a
        thread of its own for more (a year of a team's usage is 300,000 rows and more,
        seconds of Python that held every call: the loop then has the interpreter
        every few milliseconds meanwhile)."""
        rows = await self._rows(sql, params)
        if len(rows) <= MADE_ON_THE_LOOP:
            return [make(r) for r in rows]
        return await asyncio.to_thread(_make_each, make, rows)

    async def ledger_page(
        self,
        team_id: str,
        since_seq: int,
        limit: int,
        pack_id: str = "",
        *,
        newest_first: bool = False,
    ) -> list[LedgerEntry]:
        where, order = "WHERE team_id = ?", "seq"
        params: Row = (team_id,)
        if newest_first:
            order = "seq DESC"
            if since_seq:
                where, params = f"{where} AND seq < ?", (*params, since_seq)
        else:
            where, params = f"{where} AND seq > ?", (*params, since_seq)
        if pack_id:
            where += " AND pack_id = ?"
            params += (pack_id,)
        return await self._select(LEDGER, f"{where} ORDER BY {order} LIMIT ?", (*params, limit))

    async def ended_session(self, session_id: str) -> Session | None:
        found = await self._select(SESSIONS, "WHERE session_id = ?", (session_id,))
        return found[0] if found else None

    async def captured_since(self, team_id: str, since: datetime) -> list[int]:
        rows = await self._rows(CAPTURED_SINCE_SQL, (team_id, t2i(since)))
        return [int(n) for (n,) in rows]

    async def sessions_load_bound(self) -> str | None:
        rows = await self._rows(LOAD_BOUND_SQL)
        return str(rows[0][0]) if rows else None

    async def latest_instant(self, snapshot: Snapshot) -> datetime | None:
        """The latest instant the stored data says something was done, or None
        when it holds nothing dated: a start's clock never goes back from it
        (``SystemClock.not_before``, ``server/app.py``). It covers

        - the newest ledger entry's time (every purchase, hold, charge, release,
          expiry and move of tokens makes one) and the newest audit event's (every
          administrator's change makes one): each chain's head, read by its
          primary key, since each chain is dated in order by a clock that never
          goes back;
        - of what ``snapshot`` (this store's ``load``) holds: each loaded session's
          latest Entitle or stored Heartbeat (``lease_start``), change of state
          (``state_since``: idle, resumed, ended) and decision of coverage
          (``coverage_since``); the sessions loaded are the live ones and those
          ended in the last days; the newest notification (L1-L3's warnings);
          and the real clock's high-water mark (``CLOCK_AT_KEY``: the time it
          last fired deadlines, started or stopped at, or its minute's mark),
          which covers what is done without a dated row (a trial's end, a window
          closed unused: fired again, or a coverage revived, were the clock to
          go back past it), and is never lowered by a start on a clock taken
          far behind it.

        What else the server dates is done at the instant of one of these (a pack
        bought, a hold, a device seen, a meter's grace or window begun). Heartbeats
        not yet flushed when the last server stopped were never stored, so are not
        covered. Two reads by key and three passes over the loaded sessions in C
        (a million sessions: about 0.1 s, next to the restore's seconds)."""
        rows = await self._rows(LAST_TIMES_SQL)
        found = [i2t(us) for us in rows[0] if us is not None] if rows else []
        sessions: list[Session] = snapshot.of(Session)
        if sessions:
            for name in ("lease_start", "state_since", "coverage_since"):
                found.append(max(map(attrgetter(name), sessions)))
        notifications: list[Notification] = snapshot.of(Notification)
        if notifications:
            found.append(max(map(attrgetter("create_time"), notifications)))
        if (mark := clock_at(snapshot.of(MetaValue))) is not None:
            found.append(mark)
        return max(found, default=None)

    async def audit_page(self, team_id: str, before_seq: int, limit: int) -> list[AuditEvent]:
        """A team's events are those naming it as team, as other team, or among their
        more teams (``audit_teams``); each read back with its more teams."""
        before = " AND seq < ?" if before_seq else ""
        bound: Row = (before_seq,) if before_seq else ()
        if team_id:
            # The page's newest of each of the three, each by its index from the
            # page's end (``audit_team``, ``audit_other_team``, ``audit_teams``' key):
            # their newest ``limit`` are the page's. (An OR of the three read every
            # event of the team for each page, and sorted them.)
            parts = " UNION ".join(
                f"SELECT seq FROM (SELECT seq FROM {table} WHERE {column} = ?{before} "  # noqa: S608
                f"ORDER BY seq DESC LIMIT ?) AS part{n}"
                for n, (table, column) in enumerate(AUDIT_TEAM_PARTS)
            )
            where = f"WHERE {self._among('seq', parts)} "
            params: Row = (team_id, *bound, limit) * len(AUDIT_TEAM_PARTS)
        else:
            where = "WHERE seq < ? " if before_seq else ""
            params = bound
        sql = f"{where}ORDER BY seq DESC LIMIT ?"
        events: list[AuditEvent] = await self._select(AUDIT_EVENTS, sql, (*params, limit))
        if not events:
            return events
        more: dict[int, list[str]] = {}
        for seq, team in await self._rows(AUDIT_TEAMS_RANGE_SQL, (events[-1].seq, events[0].seq)):
            more.setdefault(int(seq), []).append(str(team))
        if not more:
            return events
        return [
            replace(e, more_team_ids=tuple(sorted(more[e.seq]))) if e.seq in more else e
            for e in events
        ]

    async def usage_facts(self, team_id: str, start: datetime, end: datetime) -> UsageFacts:
        lo, hi = t2i(start), t2i(end)
        captures = await self._made(CAPTURES_SQL, (team_id, lo, hi), _capture)
        starts = await self._made(SESSION_STARTS_SQL, (team_id, lo, hi), _session_start)
        since = lo - LONG_SPAN_US
        spans = await self._made(
            SPANS_SQL, (team_id, since, hi, lo, team_id, lo, since), ACTIVITY.from_row
        )
        moved = await self._moved(team_id)
        return UsageFacts(
            captures=captures,
            session_starts=starts,
            spans=spans,
            moved={(pack_id, EntryKind(kind)): int(n) for pack_id, kind, n in moved},
        )


def _make_each(make: Callable[[Any], T], rows: list[Any]) -> list[T]:
    made = [make(r) for r in rows]
    let_go(rows)  # here, not on the loop
    return made


def _capture(row: Row) -> Capture:
    time, user_id, product_id, amount = row
    return Capture(i2t(time), user_id, product_id, amount)


def _session_start(row: Row) -> SessionStart:
    time, user_id, product_id = row
    return SessionStart(i2t(time), user_id, product_id)
