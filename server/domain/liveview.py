"""The live view (R2) and the restart path of the licensing aggregate.

Queries that the API and operators need (a session and how it looks now,
live sessions, a user's devices, a meter) and ``restore`` / ``schedule_all``,
which rebuild the in-memory state and its deadlines from stored objects.
Scans are confined to operator paths (``live_sessions``, ``all_sessions``,
``forget_ended``); everything else is a dictionary read.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import Self

from server.domain.errors import InvalidArgument, UnknownSession
from server.domain.few import few
from server.domain.ledger import Hold, Ledger
from server.domain.lifecycle import SessionBook, order
from server.domain.meters import holds_by_meter
from server.domain.policies import AccessPolicy, CoveragePolicy, TimerSink
from server.domain.products import Product
from server.domain.sessions import (
    ChargeState,
    Device,
    Meter,
    Session,
    SessionState,
    SessionView,
)
from server.domain.teams import Team
from server.domain.terms import Terms

# The longest id or name a request may carry. Longer ones are refused as bad
# fields before any lookup, so that no error repeats kilobytes of input back
# (gRPC clients drop trailers over 8 KiB, turning NOT_FOUND into a failure).
MAX_FIELD = 200
# The most sessions a start loads from below its recent bound by name
# (``recent_split``, ``SESSIONS_RECENT_FROM_KEY``).
OLDER_NAMED = 10_000


class LiveView(SessionBook):
    # == queries ======================================================================

    def find_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def session(self, session_id: str) -> Session:
        if not session_id:
            raise InvalidArgument.field("session_id", "is required")
        if len(session_id) > MAX_FIELD:
            raise InvalidArgument.field(
                "session_id", f"must be at most {MAX_FIELD} characters: no session id is longer"
            )
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no session {session_id!r}", session_id=session_id)
        return session

    def sessions_of_user(self, user_id: str, product_id: str | None = None) -> list[Session]:
        """A user's live sessions (of one product, or of all), oldest first."""
        if product_id is None:  # from their devices, not by walking the catalog
            return order(self._user_live(user_id))
        return self._seat_sessions(user_id, product_id)

    def running(self, user_ids: Iterable[str]) -> list[str]:
        """Those of ``user_ids`` (in their order) with a device registered: the only
        ones who may have a live session (M8)."""
        devices = self._devices
        return [u for u in user_ids if u in devices]

    def live_sessions(self, team_id: str | None = None) -> Iterator[Session]:
        """Live sessions (of a team) in the order they opened. Scans: the admin path."""
        return (
            s
            for s in self._sessions.values()
            if s.live and (team_id is None or s.team_id == team_id)
        )

    def all_sessions(self, team_id: str | None = None) -> Iterator[Session]:
        """Every session in memory, ended ones included."""
        return (s for s in self._sessions.values() if team_id is None or s.team_id == team_id)

    def sessions_after(self, after: str | None) -> Iterator[Session]:
        """Every session in memory, ended ones included, in the order of their ids (the
        order they opened in), from the first after ``after`` (None: from the first).
        A page deep in a listing starts where it left off: it does not walk the
        sessions before it, a million at most."""
        ids, by_id = self._ids, self._sessions
        start = bisect_right(ids, after) if after is not None else 0
        return (by_id[i] for i in islice(ids, start, None))

    def first_session_id(self) -> str | None:
        """The least id of the sessions in memory (live, and ended of the last days),
        or None when there are none."""
        return self._ids[0] if self._ids else None

    def recent_split(
        self, opened_from: datetime, most: int = OLDER_NAMED
    ) -> tuple[str, list[str]] | None:
        """Where memory's sessions opened from ``opened_from`` on begin, by id, and
        those before it: the first session in memory (by id) opened at or after
        ``opened_from`` (the last one when none was), and the ids below it, at most
        ``most`` of them (past that the bound stays lower: a start reads more, and
        a commit does not name a million). None when memory holds no session.
        Walks only the ones before it: the sessions of the last days are not
        looked at."""
        ids, by_id = self._ids, self._sessions
        if not ids:
            return None
        i, last = 0, min(len(ids) - 1, most)
        while i < last and by_id[ids[i]].start_time < opened_from:
            i += 1
        return ids[i], ids[:i]

    def _index(self, session_id: str) -> None:
        """Put a new session's id in ``_ids``: at its end, as ids grow (``server/ids.py``)."""
        ids = self._ids
        if not ids or session_id > ids[-1]:
            ids.append(session_id)
        else:  # never seen (ids grow across restarts too), but kept in order all the same
            insort(ids, session_id)

    def device_teams(self, user_id: str, product_id: str, device_id: str) -> frozenset[str]:
        """The teams of the live sessions that removing this device would end (its
        sessions and their plugins, P4): what RemoveDevice touches (AD1)."""
        device = self._device(user_id, product_id, device_id)
        live = device.sessions() if device is not None else ()
        return frozenset(s.team_id for s in self._with_plugins(live))

    def access_teams(
        self, team_id: str, user_id: str, product_ids: Collection[str] | None
    ) -> frozenset[str]:
        """The teams of the live sessions that taking ``product_ids`` (None: every
        product) from the user in ``team_id`` would end (A6: their sessions there
        and, P4, those sessions' plugins): what UnassignUser, SetUserProducts and
        SetDefaultAssignments touch (AD1)."""
        doomed = self._losing(team_id, user_id, product_ids)
        return frozenset(s.team_id for s in self._with_plugins(doomed))

    def session_teams(self, session_id: str) -> frozenset[str]:
        """The teams of the live sessions that ending this one would end (it and its
        plugins, P4): what EndSession touches (AD1). None for an ended or unknown one."""
        session = self._sessions.get(session_id)
        live = (session,) if session is not None and session.live else ()
        return frozenset(s.team_id for s in self._with_plugins(live))

    def devices(self, user_id: str, product_id: str = "") -> list[Device]:
        """M8/R2: the registered devices of the product, oldest first (no product:
        every product's, by product); ``Device.running`` says whether a live session
        runs there."""
        if not product_id:
            every = few(self._devices.get(user_id))
            return sorted(every, key=lambda d: (d.product_id, d.register_time, d.device_id))
        found = self._devices_of(user_id, product_id)
        return sorted(found, key=lambda d: (d.register_time, d.device_id))

    def meter(self, team_id: str, user_id: str, product_id: str) -> Meter | None:
        return self.meters.get(team_id, user_id, product_id)

    def session_view(self, session: Session, now: datetime) -> SessionView:
        """What the API shows of a session (API.md ``Session``)."""
        meter = self.meters.get(session.team_id, session.user_id, session.product_id)
        if meter is not None and meter.state is ChargeState.NONE and session.live:
            # C3: riding on the user's meter in another team, which pays for it
            meter = self.paying_elsewhere(meter, now) or meter
        state = meter.state if meter is not None else ChargeState.NONE
        return SessionView(
            session=session,
            charge_state=state,
            grace_end_time=meter.grace_end if meter and state is ChargeState.GRACE else None,
            window_end_time=meter.window_end if meter and state is ChargeState.CHARGED else None,
            lease_expire_time=session.lease_end if session.live else None,
            heartbeat_interval=self.terms.heartbeat_interval,
            team_available_tokens=self.ledger.available(session.team_id),
            # A8: a team's token users inherit its plan, so a live session says the
            # team's plan now; an ended one, the plan it ended under (stored).
            plan=self.teams[session.team_id].plan if session.live else session.plan,
            # P1: likewise the rate: what its next hold would take (0 for a product
            # made free, as its coverage says) while live, the rate at its end after.
            daily_rate=self.products[session.product_id].daily_rate
            if session.live
            else session.daily_rate,
        )

    def forget_ended(self, ended_before: datetime) -> int:
        """Drop from memory the sessions that ended before an instant (they stay
        stored). M11/M12 answers for them must then come from the store."""
        old = [
            s
            for s in self._sessions.values()
            if s.end_time is not None and s.end_time < ended_before
        ]
        for s in old:
            del self._sessions[s.session_id]
            if s.request_id:
                self._forget_request(s)
        if old:
            self._ids = [i for i in self._ids if i in self._sessions]
        return len(old)

    # == restart ======================================================================

    @classmethod
    def restore(
        cls,
        sessions: Iterable[Session],
        meters: Iterable[Meter],
        devices: Iterable[Device],
        holds: Iterable[Hold],
        *,
        ledger: Ledger,
        products: Mapping[str, Product],
        teams: Mapping[str, Team],
        terms: Terms,
        access: AccessPolicy,
        coverage: CoveragePolicy,
        new_id: Callable[[str], str],
    ) -> Self:
        """Rebuild the state and its indexes from stored objects (sessions may
        include ended ones, for M11 and M12); then call ``schedule_all``."""
        lic = cls(
            ledger=ledger,
            products=products,
            teams=teams,
            terms=terms,
            access=access,
            coverage=coverage,
            new_id=new_id,
        )
        by_meter = holds_by_meter(holds)
        # The ids that many objects repeat (user, team, product, version) come in
        # shared already, one string each: the store made them so while it loaded
        # (``server/store/codec.py``, ``sharing``).
        for meter in meters:
            meter.active = 0
            lic.meters.add(meter, by_meter)
        for device in devices:
            device.live = None
            lic._add_device(device)
        ordered = order(sessions)
        by_id = lic._sessions
        ended = SessionState.ENDED  # (a million sessions: the state, not the property)
        for session in ordered:
            session.due = None
            by_id[session.session_id] = session
            if session.request_id and session.state is ended:
                lic._remember(session)  # a live one is found in its device's set
        lic._ids = sorted(by_id)  # in the order they opened, bar a clock stepped back
        for session in ordered:  # the order ``lic._sessions`` has them in: oldest first
            if session.state is ended:
                continue
            lic.live_counts[session.product_id, session.state] += 1
            host = (
                lic._sessions.get(session.parent_session_id) if session.parent_session_id else None
            )
            if host is not None:
                session.parent_session_id = host.session_id
            on = lic._device(session.user_id, session.product_id, session.device_id)
            if on is None:  # a live session always has its device: recreate it
                on = Device(
                    session.user_id,
                    session.product_id,
                    session.device_id,
                    session.start_time,
                    session.start_time,
                )
                lic._add_device(on)
            session.device_id = on.device_id  # share the string
            meter = lic.meters.get_or_create(session.team_id, session.user_id, session.product_id)
            lic._link(session, meter, on, host if host is not None and host.live else None)
        return lic

    def schedule_all(self, timers: TimerSink, now: datetime) -> None:
        """Re-create every outstanding deadline after a restart. Deadlines already
        past are due: the engine fires them, in time order, at their own instants.
        Coverage changes are looked for from the last instant each user's
        coverage was decided (``coverage_since``), so one that fell while the
        server was down still applies at its own instant."""
        ended, watch = SessionState.ENDED, self._watch  # (a million sessions)
        for s in self._sessions.values():
            if s.state is not ended:
                s.due = None
                watch(s, timers)
        self.meters.schedule_all(timers)
        # Only a seat with a subscription or trial has a coverage change to come:
        # walk those (few), not every live session's seat (a million).
        for user_id, product_id in self.coverage.seats():
            since = [s.coverage_since for s in self._seat_live(user_id, product_id)]
            if since:
                self._schedule_coverage(user_id, product_id, min(max(since), now), timers)
