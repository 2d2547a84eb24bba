"""Sessions, meters, devices and active time: the objects of RULES §5.

A ``Session`` is one running copy of a product on one device. A ``Meter`` is
the pair (team, user, product) that charges are made on (M2-M5). A ``Device``
is registered per (user, product) at its first Entitle (M8). An
``ActivitySpan`` is one period of active use, appended when it ends, for the
usage report (R1).

Memory: at a million live sessions every byte counts, so every class has
``__slots__``; strings repeated across users (team, product, version) are
interned, and per-user strings (user and device ids) are shared by reference
with the first object that holds them; a set of sessions that is almost
always of one is that one session (``Live``), a tuple while small, a dict
only when it grows. Fields marked *derived* (``metadata=DERIVED``) are
indexes that the aggregate rebuilds on restore: the store does not write them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import Enum
from operator import attrgetter
from typing import TypeAlias, TypeVar

from server.domain.changes import DERIVED
from server.domain.ledger import Hold
from server.domain.products import Platform
from server.domain.teams import Plan
from server.domain.terms import LEASE


class SessionState(Enum):
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    ENDED = "ENDED"


class EndReason(Enum):
    RELEASED = "RELEASED"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    TAKEN_OVER = "TAKEN_OVER"
    INSUFFICIENT_TOKENS = "INSUFFICIENT_TOKENS"
    NOT_ASSIGNED = "NOT_ASSIGNED"
    HOST_ENDED = "HOST_ENDED"
    ENDED_BY_ADMIN = "ENDED_BY_ADMIN"


class Coverage(Enum):
    """Who pays for a session (C1, C2, P1)."""

    TOKENS = "TOKENS"
    SUBSCRIPTION = "SUBSCRIPTION"
    TRIAL = "TRIAL"
    FREE = "FREE"


class ChargeState(Enum):
    """A meter's state: nothing held or charged, tokens held in grace, a window open."""

    NONE = "NONE"
    GRACE = "GRACE"
    CHARGED = "CHARGED"


#: How long an ended session stays in memory (M11: an Entitle repeated within it gets
#: its first answer; M12: Heartbeat, Idle and Release answer it): the engine's pass
#: lets older ones go (the store still answers for them), and a start loads those
#: that ended this long before the newest end, no more.
ENDED_KEPT = timedelta(days=2)


# A set of sessions, smallest form first: none, the one session, a tuple while
# small, a dict (insertion-ordered, O(1) removal) once it grows, so a device with
# thousands of sessions stays fast and the usual one costs no container at all.
Live: TypeAlias = "Session | tuple[Session, ...] | dict[Session, None] | None"
_SMALL = 8


def live_add(live: Live, session: Session) -> Live:
    if live is None:
        return session
    if isinstance(live, Session):
        return (live, session)
    if isinstance(live, dict):
        live[session] = None
        return live
    if len(live) < _SMALL:
        return (*live, session)
    grown = dict.fromkeys(live)
    grown[session] = None
    return grown


def live_remove(live: Live, session: Session) -> Live:
    if live is None or live is session:
        return None
    if isinstance(live, Session):
        return live
    if isinstance(live, dict):
        live.pop(session, None)
        if len(live) > _SMALL:
            return live
        rest = tuple(live)
    else:
        rest = tuple(s for s in live if s is not session)
    return rest if len(rest) > 1 else rest[0] if rest else None


def live_find(live: Live, request_id: str) -> Session | None:
    """The session of the set that the Entitle of ``request_id`` opened (M11). A
    device's set holds at most M13's 10 sessions: a scan."""
    return next((s for s in live_list(live) if s.request_id == request_id), None)


def live_list(live: Live) -> tuple[Session, ...]:
    """A snapshot of the set, safe to iterate while sessions end."""
    if live is None:
        return ()
    if isinstance(live, Session):
        return (live,)
    return tuple(live)


@dataclass(slots=True, eq=False)
class Session:
    """One running copy of a product (M1). Identity is the object (``eq=False``)."""

    session_id: str
    user_id: str
    team_id: str
    product_id: str
    product_version: str
    platform: Platform
    device_id: str
    parent_session_id: str  # the host session of a plugin; "" for a product
    request_id: str  # M11; "" when the Entitle named none
    coverage: Coverage
    plan: Plan  # the team's plan at Entitle, then at its end (A8)
    daily_rate: int  # the product's rate at Entitle
    start_time: datetime
    lease_start: datetime  # M7: the latest Entitle or Heartbeat; the lease ends LEASE later
    last_activity: datetime  # M6: latest meaningful activity reported (Entitle counts)
    state_since: datetime  # when the current state (ACTIVE, IDLE, ENDED) began
    coverage_since: datetime  # when ``coverage`` was last decided (C2 timers on restore)
    state: SessionState = SessionState.ACTIVE
    end_reason: EndReason | None = None
    # derived, not stored: the session's one outstanding deadline (IDLE while
    # active and idle-aware, else LEASE_END). Its meter, its device and a host's
    # live plugins are found through its aggregate (``SessionBook.meter_of``,
    # ``device_of``): a slot each would cost a million sessions 8 MB.
    due: datetime | None = field(default=None, repr=False, metadata=DERIVED)

    @property
    def live(self) -> bool:
        return self.state is not SessionState.ENDED

    @property
    def end_time(self) -> datetime | None:
        """When it ended (M10): the instant its ENDED state began; stored as a
        column for readers of the table, kept in memory once."""
        return self.state_since if self.state is SessionState.ENDED else None

    @property
    def lease_end(self) -> datetime:
        """M7: when the lease runs out. Derived, not kept: the start is usually
        the very instant the device's last-seen time and the activity hold, so
        a session keeps no datetime of its own for its lease."""
        return self.lease_start + LEASE

    @property
    def active(self) -> bool:
        return self.state is SessionState.ACTIVE

    def idle_instant(self, threshold: timedelta) -> datetime:
        """M6: when the session turns idle unless newer activity is reported."""
        return self.last_activity + threshold

    def copy(self) -> Session:
        """A copy of every field as it is now: one C call reads them all (0.5 us,
        where ``copy.copy`` takes 2.5 us on a slotted class; issue 17)."""
        return Session(*_session_fields(self))


_session_fields = attrgetter(*(f.name for f in fields(Session)))


@dataclass(slots=True, eq=False)
class Meter:
    """Charges per (team, user, product), never per session (M2-M5).

    ``state`` is NONE, GRACE (``hold`` taken at ``grace_start``, captured at
    ``grace_end`` if use goes on unbroken) or CHARGED (a window
    [``window_start``, ``window_end``) is paid for). GRACE implies ``active``
    > 0: a break releases the hold at once.

    A meter is in grace or charged, never both, so one pair of instants
    (``start``, ``end``) is the grace or the window its state says: two slots
    fewer a meter than four instants of which two are always None. Capture
    keeps ``start`` (the window opens when grace began) and moves ``end``.
    """

    team_id: str
    user_id: str
    product_id: str
    state: ChargeState = ChargeState.NONE
    start: datetime | None = None  # the grace's or the window's, as ``state`` says
    end: datetime | None = None
    # derived, not stored (the store finds a meter's hold by the meter's key):
    hold: Hold | None = field(default=None, repr=False, metadata=DERIVED)
    # ACTIVE sessions: "in use" when > 0 (whether any is live at all is asked of
    # the user's devices when it matters: ``SessionBook._meter_live``)
    active: int = field(default=0, repr=False, metadata=DERIVED)

    @property
    def key(self) -> str:
        return meter_key(self.team_id, self.user_id, self.product_id)

    @property
    def in_use(self) -> bool:
        return self.active > 0

    @property
    def grace_start(self) -> datetime | None:
        return self.start if self.state is ChargeState.GRACE else None

    @property
    def grace_end(self) -> datetime | None:
        return self.end if self.state is ChargeState.GRACE else None

    @property
    def window_start(self) -> datetime | None:
        return self.start if self.state is ChargeState.CHARGED else None

    @property
    def window_end(self) -> datetime | None:
        return self.end if self.state is ChargeState.CHARGED else None

    @property
    def hold_id(self) -> str:
        return self.hold.hold_id if self.hold is not None else ""

    def window_covers(self, now: datetime) -> bool:
        return (
            self.state is ChargeState.CHARGED
            and self.start is not None
            and self.end is not None
            and self.start <= now < self.end
        )


def meter_key(team_id: str, user_id: str, product_id: str) -> str:
    return f"{team_id}|{user_id}|{product_id}"


def seat_key(user_id: str, product_id: str) -> str:
    """(user, product): the key of COVERAGE_CHANGE timers."""
    return f"{user_id}|{product_id}"


@dataclass(slots=True, eq=False)
class Device:
    """A device registered for a user and product at its first Entitle (M8)."""

    user_id: str
    product_id: str
    device_id: str
    register_time: datetime
    last_seen_time: datetime  # the latest Entitle or Heartbeat from it
    # derived, not stored: the live sessions of this user and product on it
    live: Live = field(default=None, repr=False, metadata=DERIVED)

    @property
    def running(self) -> bool:
        return self.live is not None

    def sessions(self) -> tuple[Session, ...]:
        return live_list(self.live)


@dataclass(slots=True, frozen=True)
class ActivitySpan:
    """One period of active use of a session (M6), appended when it ends (R1)."""

    session_id: str
    team_id: str
    user_id: str
    product_id: str
    start: datetime
    end: datetime


@dataclass(slots=True, frozen=True)
class SessionView:
    """What the API shows of a session at ``now`` (API.md ``Session``)."""

    session: Session
    charge_state: ChargeState
    grace_end_time: datetime | None
    window_end_time: datetime | None
    lease_expire_time: datetime | None
    heartbeat_interval: timedelta
    team_available_tokens: int
    plan: Plan
    daily_rate: int  # P1: a live session's product's rate now; an ended one's at its end

    def snapshot(self) -> SessionView:
        """This view with a copy of its session (``Session.copy``): what the answer
        says stays as it is now, whatever later changes the live session."""
        return SessionView(self.session.copy(), *_view_fields(self))


_view_fields = attrgetter(*(f.name for f in fields(SessionView) if f.name != "session"))


E = TypeVar("E", SessionState, ChargeState)


def count_move(
    counts: Counter[tuple[str, E]], product_id: str, was: E, now: E, uncounted: E
) -> None:
    """One of ``product_id``'s counts moved from state ``was`` to ``now`` (the metrics'
    gauges, kept as states change: ``SessionBook.live_counts``, ``Meters.counts``);
    the ``uncounted`` state (an ended session, a meter with nothing on it) is in none."""
    if was is not uncounted:
        counts[product_id, was] -= 1
    if now is not uncounted:
        counts[product_id, now] += 1
