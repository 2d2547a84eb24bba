"""The usage report (R1), computed from what the store read and what memory holds.

The store answers a team's committed history over the period (``UsageFacts``:
charges, sessions begun, stored spans of active time, tokens moved); memory
adds the active time of sessions still running and the packs as they stand.
No I/O here: ``Sessions.usage_report`` settles, reads, and makes the rows with
``report_rows`` (on a thread) and the packs with ``pack_usage``.

Active time is added up exactly, as ``timedelta`` (whole microseconds, the
instants' own resolution), and made whole seconds once, at the end, for each
row: its exact total, truncated. Not as float seconds: their sum hangs on the
order the spans come in (0.7 + 0.2 + 0.1 is 0.999..., truncated 0), and one
history would give each store (each reading them in its own order) its own report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain

from server.domain.ledger import EntryKind, Ledger, PackState
from server.domain.sessions import ActivitySpan, Session, SessionState
from server.store.port import UsageFacts

SECOND = timedelta(seconds=1)


@dataclass(slots=True)
class UsageRow:
    date: str
    user_id: str
    product_id: str
    tokens_charged: int = 0
    sessions: int = 0
    #: The exact active time of the row's spans over its day (R1).
    active: timedelta = timedelta(0)
    user_display_name: str = ""
    product_display_name: str = ""

    @property
    def active_seconds(self) -> int:
        """The row's active time in whole seconds: its exact total, truncated."""
        return self.active // SECOND


@dataclass(slots=True)
class PackUsage:
    pack_id: str
    team_id: str
    purchased_tokens: int
    consumed_tokens: int
    held_tokens: int
    expired_tokens: int
    remaining_tokens: int
    expire_time: datetime
    state: PackState
    moved_in_tokens: int = 0
    moved_out_tokens: int = 0


@dataclass(slots=True)
class UsageReport:
    rows: list[UsageRow] = field(default_factory=list)
    packs: list[PackUsage] = field(default_factory=list)

    @property
    def total_tokens_charged(self) -> int:
        return sum(r.tokens_charged for r in self.rows)

    @property
    def total_sessions(self) -> int:
        return sum(r.sessions for r in self.rows)

    @property
    def total_active_seconds(self) -> int:
        """The rows' whole seconds added up: the total the rows shown add up to."""
        return sum(r.active_seconds for r in self.rows)


def _days(start: datetime, end: datetime) -> Iterator[tuple[str, timedelta]]:
    """Split [start, end) by UTC day: (YYYY-MM-DD, the time in that day, exact)."""
    t = start
    while t < end:
        midnight = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
        stop = min(midnight, end)
        yield t.date().isoformat(), stop - t
        t = stop


def open_spans(live: Iterable[Session], now: datetime) -> list[ActivitySpan]:
    """R1: the active time of the running sessions, each from when it turned active
    until ``now``."""
    return [
        ActivitySpan(s.session_id, s.team_id, s.user_id, s.product_id, s.state_since, now)
        for s in live
        if s.state is SessionState.ACTIVE and s.state_since < now
    ]


def report_rows(
    start: datetime,
    end: datetime,
    facts: UsageFacts,
    live: Iterable[ActivitySpan],
    *,
    user_id: str = "",
    product_id: str = "",
    user_name: Callable[[str], str] = str,
    product_name: Callable[[str], str] = str,
) -> list[UsageRow]:
    """A report's rows over [start, end), from ``facts`` (the store's) and ``live``
    (``open_spans``, taken before the store was read: a span a release closed
    meanwhile is in ``facts`` or here, never in neither; in both, it counts once),
    narrowed to ``user_id`` and ``product_id`` when given, each named in words
    through ``user_name`` and ``product_name``. A year of a large team is a hundred
    thousand rows and more, built on a thread of its own (``Sessions.usage_report``)
    while the event loop serves the calls."""
    # By day, then by (user, product): the rows are put in order a day at a time. One
    # sort of a year's 286,842 keys is one call in C that holds the interpreter, and
    # so the event loop, for its whole 0.26 s; a day's few thousand, a millisecond.
    days: defaultdict[str, dict[tuple[str, str], UsageRow]] = defaultdict(dict)
    spare = UsageRow("", "", "")  # what a row filtered out adds to: never reported

    def row(day: str, user: str, product: str) -> UsageRow:
        if user_id not in ("", user) or product_id not in ("", product):
            return spare
        rows, key = days[day], (user, product)
        found = rows.get(key)
        if found is None:
            found = rows[key] = UsageRow(
                day,
                user,
                product,
                user_display_name=user_name(user),
                product_display_name=product_name(product),
            )
        return found

    for c in facts.captures:
        row(c.time.date().isoformat(), c.user_id, c.product_id).tokens_charged += c.amount
    for s in facts.session_starts:
        row(s.time.date().isoformat(), s.user_id, s.product_id).sessions += 1
    # The running sessions' spans a release stored meanwhile are among the facts: a
    # few live ones looked up as the stored are walked, not a set of every stored
    # one (a year's 474,480, freed in one call that held the loop).
    unstored = {(span.session_id, span.start): span for span in live}
    if unstored:
        for span in facts.spans:
            unstored.pop((span.session_id, span.start), None)
    # A user's time with a product counts once, however many of its sessions ran
    # side by side (two versions on one device, M9; up to ten sessions, M13).
    seats: defaultdict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for span in chain(facts.spans, unstored.values()):
        a, b = max(span.start, start), min(span.end, end)
        if a < b:
            seats[(span.user_id, span.product_id)].append((a, b))
    for (user, product), pieces in seats.items():
        for a, b in _union(pieces):
            for day, time in _days(a, b):
                row(day, user, product).active += time
        pieces.clear()  # freed a seat at a time, here: not all at once as ``seats`` goes
    return [rows[k] for _, rows in sorted(days.items()) for k in sorted(rows)]


def _union(pieces: list[tuple[datetime, datetime]]) -> Iterator[tuple[datetime, datetime]]:
    """The intervals ``pieces`` cover, each [start, end), as disjoint intervals in order."""
    pieces.sort()
    a, b = pieces[0]
    for c, d in pieces[1:]:
        if c > b:
            yield a, b
            a, b = c, d
        elif d > b:
            b = d
    yield a, b


def pack_usage(team_id: str, now: datetime, facts: UsageFacts, ledger: Ledger) -> list[PackUsage]:
    """A report's packs: read from the ledger as it stands (on the event loop)."""
    out: list[PackUsage] = []
    moved: defaultdict[tuple[str, EntryKind], int] = defaultdict(int, facts.moved)
    # Every pack the team holds, and those it moved out: what they paid for
    # stays in this team's history (T5), and ``team_id`` names the holder now.
    packs = list(ledger.team_packs(team_id))
    here = {p.pack_id for p in packs}
    packs += [
        ledger.packs[pack_id]
        for pack_id, kind in moved
        if kind is EntryKind.MOVE_OUT and pack_id not in here
    ]
    packs.sort(key=lambda p: (p.purchase_time, p.pack_id))
    for p in packs:
        # A pack that moved in or out of the team: its figures in this team's own
        # ledger (what it paid for here; held and remaining only while here), not
        # another team's consumption or live holds (T5, AD1). Else, the pack's own.
        if (p.pack_id, EntryKind.MOVE_IN) in moved or (p.pack_id, EntryKind.MOVE_OUT) in moved:
            here_now = p.team_id == team_id
            consumed, expired = (
                moved[(p.pack_id, EntryKind.CAPTURE)],
                moved[(p.pack_id, EntryKind.EXPIRY)],
            )
            held, remaining = (p.held, p.remaining) if here_now else (0, 0)
            # Gone from here: over for this team (nothing left here), by the clock
            # alone; its state where it is now would tell what that team did with it.
            state = (
                p.state
                if here_now
                else (PackState.EXPIRED if p.expire_time <= now else PackState.DEPLETED)
            )
        else:
            consumed, expired, held, remaining = p.consumed, p.expired_tokens, p.held, p.remaining
            state = p.state
        out.append(
            PackUsage(
                pack_id=p.pack_id,
                team_id=p.team_id,
                purchased_tokens=p.tokens,
                consumed_tokens=consumed,
                held_tokens=held,
                expired_tokens=expired,
                remaining_tokens=remaining,
                expire_time=p.expire_time,
                state=state,
                moved_in_tokens=moved[(p.pack_id, EntryKind.MOVE_IN)],
                moved_out_tokens=moved[(p.pack_id, EntryKind.MOVE_OUT)],
            )
        )
    return out
