"""How sessions move, and what each move does to their meter (M3-M7, C2, P4).

    ACTIVE ──Idle, or 15 min without activity (M6)──▶ IDLE
      ▲                                                │
      └──── a heartbeat reporting newer activity ──────┘
    ACTIVE/IDLE ──release, lease end, takeover, revocation, tokens, host end──▶ ENDED

A meter is *in use* while one of its sessions is ACTIVE. An active period
that ends (idle or end) is recorded as an ``ActivitySpan``, and when it was
the meter's last one, a grace under way is broken and its hold goes back
(M3). A period that starts (Entitle, resume) is paid for (M2): nothing if the
session is covered or free, or the meter is in grace or a window covers now;
else a hold and a new grace.

Deadlines are lazy, so a heartbeat pushes nothing onto the heap:

- each live session has one outstanding deadline, ``Session.due``: IDLE while
  it is active on an idle-aware product (its idle instant always comes before
  its lease end), else LEASE_END. When it fires early, because heartbeats
  moved the lease or the activity on, it is pushed again at the new instant;
  an older entry for the session (``due`` differs) is ignored;
- GRACE_END and WINDOW_END are keyed by user id; they act on the user's
  meters that still have a grace or window ending at that instant;
- COVERAGE_CHANGE is keyed by ``user|product``, at most one outstanding.

Ties at one instant are settled the same way whatever order the heap pops
them in: a grace whose end has come is captured before anything else happens
at that instant (use up to exactly grace end is 5 minutes of use), and a
window end first applies the idle instants and lease ends that fall at that
instant, a plugin's host's too (a meter that stops at exactly window end is
not renewed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime
from operator import attrgetter

from server.domain.changes import Changes
from server.domain.errors import InsufficientTokens
from server.domain.few import add_few, drop_few, few
from server.domain.ledger import Cause, Ledger
from server.domain.meters import Meters
from server.domain.policies import (
    AccessPolicy,
    CoveragePolicy,
    TimerSink,
    coverage_of,
    paying_team,
)
from server.domain.products import Product
from server.domain.sessions import (
    ActivitySpan,
    ChargeState,
    Coverage,
    Device,
    EndReason,
    Live,
    Meter,
    Session,
    SessionState,
    count_move,
    live_add,
    live_find,
    live_list,
    live_remove,
    seat_key,
)
from server.domain.teams import Team
from server.domain.terms import SpanChange, Terms, instant_across_a_change
from server.domain.timers import TimerKind

_Requests = Session | dict[str, Session]  # by user, once users share the id


# The sort key a lambda would make, made in C: a restart sorts a million sessions.
_AGE = attrgetter("start_time", "session_id")


def order(sessions: Iterable[Session]) -> list[Session]:
    """Oldest first: the order in which several sessions are ended or listed."""
    return sorted(sessions, key=_AGE)


class SessionBook:
    """The state: sessions by id, devices by (user, product), meters by key,
    with the transitions and deadline handlers that keep them consistent."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        products: Mapping[str, Product],
        teams: Mapping[str, Team],
        terms: Terms,
        access: AccessPolicy,
        coverage: CoveragePolicy,
        new_id: Callable[[str], str],
    ) -> None:
        self.ledger = ledger
        self.products = products
        self.teams = teams
        self.terms = terms
        # The idle threshold a start replaced, and when (``terms_changed``).
        self._idle_before: SpanChange | None = None
        self.access = access
        self.coverage = coverage
        self._new_id = new_id
        self.meters = Meters(ledger, terms)
        self._sessions: dict[str, Session] = {}
        # Their ids, sorted: ListSessions seeks its page here (``LiveView.sessions_after``)
        # instead of walking every session before it (a million, deep in a listing).
        self._ids: list[str] = []
        #: Live sessions by (product, state): the metrics' gauge, kept as states change
        #: (``_set_state``), so a scrape walks none of a million sessions.
        self.live_counts: Counter[tuple[str, SessionState]] = Counter()
        # M11: ended sessions in memory by request_id (users may collide); a live
        # session is found in its device's set (``live_find``), at no index entry
        self._by_request: dict[str, _Requests] = {}
        # by user id (a string the directory already holds): a user has a few devices
        self._devices: dict[str, Device | tuple[Device, ...]] = {}
        self._coverage_due: dict[str, datetime] = {}  # outstanding COVERAGE_CHANGE by seat
        # P4: the live plugins of each host that has any (a session is hashed by identity)
        self._plugins: dict[Session, Live] = {}
        # C3: the sessions one call is ending together (``_end_together``): none of
        # them is asked to pay when another of them stops paying
        self._ending: set[Session] = set()

    # == indexes ===================================================================

    def _product(self, session: Session) -> Product:
        return self.products[session.product_id]

    def _devices_of(self, user_id: str, product_id: str) -> tuple[Device, ...]:
        return tuple(d for d in few(self._devices.get(user_id)) if d.product_id == product_id)

    def _device(self, user_id: str, product_id: str, device_id: str) -> Device | None:
        """The user's device of that id registered for the product, if any."""
        found = self._devices.get(user_id)
        if type(found) is Device:  # the usual one device: no tuple to build
            return (
                found if found.product_id == product_id and found.device_id == device_id else None
            )
        return next(
            (d for d in self._devices_of(user_id, product_id) if d.device_id == device_id), None
        )

    def _add_device(self, device: Device) -> None:
        add_few(self._devices, device.user_id, device)

    def _drop_device(self, device: Device) -> None:
        drop_few(self._devices, device.user_id, device)

    def _seat_live(self, user_id: str, product_id: str) -> Iterator[Session]:
        """The user's live sessions of a product, on every device (3 at most, M8)
        and in every team, in no particular order."""
        return (s for d in self._devices_of(user_id, product_id) for s in live_list(d.live))

    def _losing(
        self, team_id: str, user_id: str, product_ids: Collection[str] | None
    ) -> list[Session]:
        """The user's live sessions in ``team_id`` of ``product_ids`` (None: of every
        product), oldest first: what taking those products from them there ends (A6).
        Found from their devices (a few: M8), never by walking the products: taking
        a whole catalog from each of a team's members walked every product of each
        (a default set cleared for 300,000 members: 4.4 s on the event loop)."""
        lost = None if product_ids is None else frozenset(product_ids)
        return order(
            s
            for s in self._user_live(user_id)
            if s.team_id == team_id and (lost is None or s.product_id in lost)
        )

    def _user_live(self, user_id: str) -> Iterator[Session]:
        """The user's live sessions of every product, on every device, in no
        particular order."""
        return (s for d in few(self._devices.get(user_id)) for s in live_list(d.live))

    def _set_state(self, session: Session, state: SessionState) -> None:
        """``session.state = state``, kept in ``live_counts``."""
        count_move(self.live_counts, session.product_id, session.state, state, SessionState.ENDED)
        session.state = state

    def _seat_sessions(self, user_id: str, product_id: str) -> list[Session]:
        """The user's live sessions of a product, oldest first."""
        return order(self._seat_live(user_id, product_id))

    def _meter_sessions(self, meter: Meter) -> list[Session]:
        return [
            s
            for s in self._seat_sessions(meter.user_id, meter.product_id)
            if s.team_id == meter.team_id
        ]

    def meter_of(self, session: Session) -> Meter | None:
        """A live session's meter: its (team, user, product)'s, which exists while
        the session lives (``Meters.drop_if_unused``); None once it ended."""
        if not session.live:
            return None
        return self.meters.get(session.team_id, session.user_id, session.product_id)

    def device_of(self, session: Session) -> Device | None:
        """A live session's device, registered while it runs (a device is
        deregistered only once its sessions ended); None once it ended."""
        if not session.live:
            return None
        return self._device(session.user_id, session.product_id, session.device_id)

    def _meter_live(self, meter: Meter) -> bool:
        """Whether a session of the meter is live (active or idle). A scan of the
        seat's sessions, not a count on every meter (a million meters: 16 bytes each)."""
        return any(
            s.team_id == meter.team_id for s in self._seat_live(meter.user_id, meter.product_id)
        )

    def _earlier(self, user_id: str, request_id: str) -> Session | None:
        """The user's session opened by the Entitle of ``request_id`` (M11): a live
        one is in its device's set, an ended one still in memory in ``_by_request``."""
        for device in few(self._devices.get(user_id)):
            live = live_find(device.live, request_id)
            if live is not None:
                return live
        found = self._by_request.get(request_id)
        if found is None:
            return None
        if isinstance(found, Session):
            return found if found.user_id == user_id else None
        return found.get(user_id)

    def _remember(self, session: Session) -> None:
        """Index an ended ``session`` by its request id: the latest of a user's kept,
        the one a repeat is the repeat of (M11). A second of theirs is opened only
        once the first is let go of, but both may be stored and restored, in any
        order. Users whose ids collide share a dict by user, so that a thousand of
        them (every client copying one example's ``"e-1"``) cost each one a dict
        entry, not a copy of everyone's."""
        rid, user_id = session.request_id, session.user_id
        by_request = self._by_request
        found = by_request.get(rid)
        if found is None:
            by_request[rid] = session
        elif isinstance(found, Session):
            if found.user_id != user_id:
                by_request[rid] = {found.user_id: found, user_id: session}
            elif session.start_time > found.start_time:
                by_request[rid] = session
        else:
            kept = found.get(user_id)
            if kept is None or session.start_time > kept.start_time:
                found[user_id] = session

    def _forget_request(self, session: Session) -> None:
        rid, by_request = session.request_id, self._by_request
        found = by_request.get(rid)
        if found is None:
            return
        if isinstance(found, Session):
            if found is session:
                del by_request[rid]
            return
        if found.get(session.user_id) is session:
            del found[session.user_id]
            if len(found) == 1:
                (by_request[rid],) = found.values()

    def _link(self, session: Session, meter: Meter, device: Device, host: Session | None) -> None:
        if session.active:
            meter.active += 1
        device.live = live_add(device.live, session)
        if host is not None:
            self._plugins[host] = live_add(self._plugins.get(host), session)

    # == deadlines ===================================================================

    def on_timer(
        self, kind: TimerKind, key: str, due: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """A deadline of this aggregate fell due; ``due`` is the handler's now."""
        if kind is TimerKind.LEASE_END or kind is TimerKind.IDLE:
            self._on_session_due(key, due, changes, timers)
        elif kind is TimerKind.GRACE_END:
            self._on_grace_end(key, due, changes, timers)
        elif kind is TimerKind.WINDOW_END:
            self._on_window_end(key, due, changes, timers)
        elif kind is TimerKind.COVERAGE_CHANGE:
            self._on_coverage_change(key, due, changes, timers)

    def terms_changed(self, before: Terms, at: datetime) -> None:
        """A start at ``at`` serves by ``self.terms`` where the data was served by
        ``before``: an idle instant that fell before ``at`` under the threshold then
        stays where it fell; a later one follows the new threshold, from ``at`` on
        (``instant_across_a_change``)."""
        if before.idle_threshold != self.terms.idle_threshold:
            self._idle_before = (before.idle_threshold, at)

    def _idle_instant(self, session: Session) -> datetime:
        """M6: when the session turns idle unless newer activity is reported."""
        return instant_across_a_change(
            session.last_activity, self.terms.idle_threshold, self._idle_before
        )

    def _watch(self, session: Session, timers: TimerSink) -> None:
        """Make sure the session's deadline comes no later than it must: its idle
        instant while active and idle-aware, else its lease end."""
        due, kind = session.lease_end, TimerKind.LEASE_END
        if session.active and self._product(session).idle_aware:
            idle_at = self._idle_instant(session)
            if idle_at < due:
                due, kind = idle_at, TimerKind.IDLE
        if session.due is None or due < session.due:
            session.due = due
            timers.schedule(due, kind, session.session_id)

    def _on_session_due(self, key: str, due: datetime, changes: Changes, timers: TimerSink) -> None:
        session = self._sessions.get(key)
        if session is None or not session.live:
            return
        if session.due is not None and session.due != due:
            return  # an older entry: the session's deadline is elsewhere
        session.due = None
        if session.lease_end <= due:
            self._end(session, EndReason.LEASE_EXPIRED, due, changes, timers)  # M7
            return
        if (
            session.active
            and self._product(session).idle_aware
            and self._idle_instant(session) <= due
        ):
            self._go_idle(session, due, changes, timers)  # M6
        self._watch(session, timers)

    def _meters_in_order(self, user_id: str) -> list[Meter]:
        """A user's meters by team, then product: the order a deadline keyed by the
        user (a grace's or window's end) settles those due at its instant, which
        decides which renewal a team that can pay one of two pays (M5). Not the
        order the meters were made in, which a restart does not keep (``timers``:
        the order of what falls due depends on nothing but the deadlines)."""
        return sorted(self.meters.of_user(user_id), key=attrgetter("team_id", "product_id"))

    def _on_grace_end(
        self, user_id: str, due: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        for meter in self._meters_in_order(user_id):
            if meter.state is not ChargeState.GRACE or meter.grace_end != due:
                continue  # not this meter, or that grace was broken
            if meter.in_use:
                self.meters.capture(meter, changes, timers)  # M3
            else:  # cannot happen (a break releases at once); never charge an unused meter
                self.meters.release(meter, due, changes)
                self.meters.drop_if_unused(meter, self._meter_live(meter), changes)

    def _on_window_end(
        self, user_id: str, due: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        for meter in self._meters_in_order(user_id):
            if meter.state is not ChargeState.CHARGED or meter.window_end != due:
                continue
            sessions = self._meter_sessions(meter)
            self._catch_up(sessions, due, changes, timers)
            self.meters.close_window(meter, changes)
            if not any(self._paying(s) for s in sessions):
                self.meters.drop_if_unused(meter, self._meter_live(meter), changes)
            # A subscription or trial that starts (or ends) at this very instant covers
            # (or stops covering) the renewal: its deadline may be later in the same
            # instant's order (C1, C2; from start_time included).
            self._apply_coverage(meter.user_id, meter.product_id, due, changes, timers)
            self._settle_seat(meter.user_id, meter.product_id, due, changes, timers)  # M5, C3

    def _on_coverage_change(
        self, key: str, due: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        if self._coverage_due.get(key) != due:
            return
        del self._coverage_due[key]
        user_id, product_id = key.rsplit("|", 1)  # product ids never hold "|"
        self._apply_coverage(user_id, product_id, due, changes, timers)
        if self._seat_sessions(user_id, product_id):  # else the next Entitle looks again
            self._schedule_coverage(user_id, product_id, due, timers)

    def _catch_up(
        self, sessions: Iterable[Session], due: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """Apply the lease ends and idle instants that fall at ``due`` before
        deciding at ``due`` whether a meter is in use: a plugin's own, and its host's
        lease end, which ends it (P4)."""
        for s in sessions:
            if not s.live:
                continue
            host = self._sessions.get(s.parent_session_id) if s.parent_session_id else None
            if host is not None and host.live and host.lease_end <= due:
                self._end(host, EndReason.LEASE_EXPIRED, due, changes, timers)  # and s
            elif s.lease_end <= due:
                self._end(s, EndReason.LEASE_EXPIRED, due, changes, timers)
            elif s.active and self._product(s).idle_aware and self._idle_instant(s) <= due:
                self._go_idle(s, due, changes, timers)

    # == paying ========================================================================

    def _ensure_paid(
        self,
        session: Session,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
        since: datetime | None = None,
    ) -> None:
        """M2 for an active session: nothing if covered or free, or if its meter is
        in grace or a window covers now; else hold and begin grace (raises
        InsufficientTokens, having changed nothing)."""
        meter = self.meter_of(session)
        if meter is None or session.coverage is not Coverage.TOKENS:
            return
        if not Meters.needs_hold(meter, now):
            return
        rate = self._product(session).daily_rate
        if rate > 0:
            if self.paying_elsewhere(meter, now) is not None:
                return  # C3: paid once, in another of the user's teams
            cause = Cause(session.session_id, session.user_id, session.product_id)
            self.meters.start_grace(meter, rate, cause, now, changes, timers, since)
        elif meter.state is ChargeState.CHARGED:  # a window already over, nothing to pay
            self.meters.close_window(meter, changes)

    def paying_elsewhere(self, meter: Meter, now: datetime) -> Meter | None:
        """C3: "a named user pays a product's rate once per 24 hours whichever teams
        they belong to". Another team's meter of this user and product that is in
        grace or whose window covers now (the first such, by team), which then pays
        for this one's sessions too: they ride on it, and this meter holds only once
        it stops (``_settle_seat``)."""
        return self.paying_for(meter.user_id, meter.product_id, now, besides=meter.team_id)

    def paying_for(
        self, user_id: str, product_id: str, now: datetime, besides: str
    ) -> Meter | None:
        """The user's meter for the product, in a team other than ``besides``, that is in
        grace or whose window covers now (the first such, by team), or None."""
        for other in sorted(self.meters.of_user(user_id), key=lambda m: m.team_id):
            if (
                other.team_id != besides
                and other.product_id == product_id
                and not Meters.needs_hold(other, now)
            ):
                return other
        return None

    def _settle_seat(
        self,
        user_id: str,
        product_id: str,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
        since: datetime | None = None,
    ) -> None:
        """M5 and C3 once a meter of the user's for the product stopped paying (its
        window closed, its grace broken, its sessions ended for tokens, a
        subscription or trial over): unless another still pays, the sessions in use
        under tokens, in any of the user's teams, are paid for from now by one hold
        (M2), in the team C3 chooses among those in use that can pay; the others
        ride on it. When none can pay, every such session ends INSUFFICIENT_TOKENS.
        ``since``: the broken grace's start, which the new one goes on from (the
        user was in use throughout: M3's 5 minutes are the user's, not a team's)."""
        meters = sorted(
            (m for m in self.meters.of_user(user_id) if m.product_id == product_id),
            key=lambda m: m.team_id,
        )
        if not all(Meters.needs_hold(m, now) for m in meters):
            return  # one pays: the others ride on it
        using: dict[str, Meter] = {}
        for meter in meters:
            # (``meter.active`` counts the sessions still active: one stopping now, its
            # state not yet changed, is no longer counted, and is never caught up again)
            if not meter.in_use:
                continue
            # A rider's own idle instant or lease end at this same instant comes first
            # (deadlines of one instant fire in kind order): it is not in use then.
            self._catch_up(self._meter_sessions(meter), now, changes, timers)
            if any(self._paying(s) for s in self._meter_sessions(meter)):
                using[meter.team_id] = meter
        if not using:
            return
        payer = paying_team(using, self.ledger, self.products[product_id].daily_rate)
        if payer is not None:  # its team can pay: the hold is made there (M2), the rest ride
            session = next(s for s in self._meter_sessions(using[payer]) if self._paying(s))
            self._ensure_paid(session, now, changes, timers, since)
            return
        # None can pay now (as the balances stand before any of these ends, which
        # could give back a hold of another product): all of them end, together.
        doomed = order(s for m in using.values() for s in self._meter_sessions(m))
        self._end_together(doomed, EndReason.INSUFFICIENT_TOKENS, now, changes, timers)

    def _paying(self, session: Session) -> bool:
        """In use under tokens, and not being ended with others (``_end_together``)."""
        return (
            session.active and session.coverage is Coverage.TOKENS and session not in self._ending
        )

    # == moving ==========================================================================

    def _stop_active(
        self, session: Session, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """An active period ends (idle or end): record it; a meter no longer in
        use breaks its grace and the hold goes back (M3)."""
        if now > session.state_since:
            changes.upsert(
                ActivitySpan(
                    session.session_id,
                    session.team_id,
                    session.user_id,
                    session.product_id,
                    session.state_since,
                    now,
                )
            )
        meter = self.meter_of(session)
        if meter is None:
            return
        if self.meters.grace_due(meter, now) and meter.in_use:
            self.meters.capture(meter, changes, timers)  # its 5 minutes were up: charged
        meter.active -= 1
        if meter.active == 0 and meter.state is ChargeState.GRACE:
            since = meter.start
            self.meters.release(meter, now, changes)
            self._settle_seat(meter.user_id, meter.product_id, now, changes, timers, since)

    def _go_idle(
        self, session: Session, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        self._stop_active(session, now, changes, timers)
        self._set_state(session, SessionState.IDLE)
        session.state_since = now
        changes.upsert(session)

    def _resume(self, session: Session, now: datetime, changes: Changes, timers: TimerSink) -> None:
        """M6: active again from ``now``; a new grace unless a window covers now,
        and the session ends if that hold cannot be made."""
        self._set_state(session, SessionState.ACTIVE)
        session.state_since = now
        if (meter := self.meter_of(session)) is not None:
            meter.active += 1
        changes.upsert(session)
        try:
            self._ensure_paid(session, now, changes, timers)
        except InsufficientTokens:
            self._end(session, EndReason.INSUFFICIENT_TOKENS, now, changes, timers)
            return
        self._watch(session, timers)

    def _with_plugins(self, sessions: Iterable[Session]) -> set[Session]:
        """The sessions and, through every level, their live plugins (P4)."""
        found: set[Session] = set()
        todo = list(sessions)
        while todo:
            session = todo.pop()
            if session not in found:
                found.add(session)
                todo += live_list(self._plugins.get(session))
        return found

    def _end_together(
        self,
        sessions: Iterable[Session],
        reason: EndReason,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
    ) -> list[Session]:
        """End the live sessions, in order, and their plugins (HOST_ENDED) as one
        change: one of them that stops paying hands the daily rate on (C3,
        ``_settle_seat``) only to sessions that go on, never to one ending with it,
        which would hold and give back at one instant, or end for its team's tokens
        instead of ``reason``. Returns every session ended."""
        sessions = [s for s in sessions if s.live]
        outer = not self._ending
        self._ending |= self._with_plugins(sessions)
        try:
            ended: list[Session] = []
            for session in sessions:
                ended += self._end(session, reason, now, changes, timers)
            return ended
        finally:
            if outer:
                self._ending.clear()

    def _end(
        self,
        session: Session,
        reason: EndReason,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
    ) -> list[Session]:
        """End a live session and then its plugins (HOST_ENDED, P4). Returns
        every session ended."""
        if not session.live:
            return []
        if session not in self._ending and session in self._plugins:  # a host: P4 with C3
            return self._end_together([session], reason, now, changes, timers)
        if session.active:
            self._stop_active(session, now, changes, timers)
        meter, device = self.meter_of(session), self.device_of(session)
        self._set_state(session, SessionState.ENDED)
        session.end_reason = reason
        team, product = self.teams.get(session.team_id), self.products.get(session.product_id)
        if team is not None:  # A8: the plan it ran under last, as its last answer said
            session.plan = team.plan
        if product is not None:  # P1: and the rate
            session.daily_rate = product.daily_rate
        session.state_since = now  # and so its end_time
        if device is not None:
            device.live = live_remove(device.live, session)
        if session.parent_session_id:
            host = self._sessions.get(session.parent_session_id)
            if host is not None:
                rest = live_remove(self._plugins.get(host), session)
                if rest is None:
                    self._plugins.pop(host, None)
                else:
                    self._plugins[host] = rest
        session.due = None
        if session.request_id:
            self._remember(session)  # no longer in its device's set (M11)
        changes.upsert(session)
        ended = [session]
        plugins = order(live_list(self._plugins.pop(session, None)))
        for plugin in plugins:
            ended += self._end(plugin, EndReason.HOST_ENDED, now, changes, timers)
        if meter is not None:
            self.meters.drop_if_unused(meter, self._meter_live(meter), changes)
        return ended

    # == who pays (C1, C2) ======================================================================

    def _apply_coverage(
        self, user_id: str, product_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """C1/C2 at ``now`` for the user's running sessions of a product. Losing
        coverage: tokens from now (a new grace if in use, unless a window covers
        now). Gaining it: a hold in grace goes back; a paid window stays paid."""
        sessions = self._seat_sessions(user_id, product_id)
        if not sessions:
            return
        product = self.products[product_id]
        cov = coverage_of(self.coverage.covering(user_id, product_id, now), product.daily_rate)
        if all(s.coverage is cov for s in sessions):
            return
        self._catch_up(sessions, now, changes, timers)
        meters: dict[str, Meter] = {}
        for s in sessions:
            if s.live and s.coverage is not cov:
                s.coverage = cov
                s.coverage_since = now
                changes.upsert(s)
                if (meter := self.meter_of(s)) is not None:
                    meters.setdefault(meter.team_id, meter)
        if cov is Coverage.TOKENS:
            self._settle_seat(user_id, product_id, now, changes, timers)  # one pays (C3)
            return
        for _, meter in sorted(meters.items()):
            if meter.state is ChargeState.GRACE:
                self.meters.release(meter, now, changes)

    def _schedule_coverage(
        self, user_id: str, product_id: str, now: datetime, timers: TimerSink
    ) -> None:
        """Watch for the next start or end of a subscription or trial (C2)."""
        nxt = self.coverage.next_change(user_id, product_id, now)
        if nxt is None:
            return
        seat = seat_key(user_id, product_id)
        pending = self._coverage_due.get(seat)
        if pending is None or nxt < pending:
            self._coverage_due[seat] = nxt
            timers.schedule(nxt, TimerKind.COVERAGE_CHANGE, seat)
