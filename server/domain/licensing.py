"""The licensing aggregate: sessions, devices and meters (RULES §4, §5, A6, R2).

``Licensing`` applies Entitle, Heartbeat, Idle and Release, the operators'
EndSession and RemoveDevice, access revocations and coverage grants to the
in-memory state, and records every durable object it creates or changes in
``changes`` (``Session``, ``Meter``, ``Device``, append-only
``ActivitySpan``; the ledger records its own entries and holds). It never
reads a clock: every method takes ``now``; a deadline's handler takes its
``due`` (``on_timer``, see ``lifecycle``). A refused call changes nothing.

    SessionBook (lifecycle.py)   state, indexes, transitions, deadlines
      └── LiveView (liveview.py) queries, session views, restore, schedule_all
            └── Licensing        the use cases below

Decisions where the rules are silent (more in ``lifecycle`` and
``policies.choose_team``):

- Instants are half-open: a window [start, start + 24 h) no longer covers its
  end. Use up to exactly grace end counts as 5 minutes: an idle, release or
  lease end at that instant is charged. A meter that stops at exactly window
  end is not renewed.
- A heartbeat resumes an idle session only if the activity it reports is
  newer than the moment the session went idle *and* less than the idle
  threshold ago: activity that has lapsed again changes nothing.
- Heartbeat, Idle and Release answer an ended session as it is (M12), Idle
  too on a product without idle awareness: telling the product that its
  session has ended (and why) matters more than that the call was needless.
  Idle on a live session of such a product is refused (IDLE_NOT_SUPPORTED).
- A repeated ``request_id`` naming another product, device, platform or
  version is ``AlreadyExists``, not an answer about something else (a macOS
  caller must not be handed a Windows session): as idempotency keys go (AIP-155),
  a key reused with other parameters is refused. ``takeover`` and the preferred
  team are how to decide, not what is asked for, and may differ (the SDK's retry
  after an unanswered Entitle sends ``takeover`` off). Idempotency holds for
  the sessions in memory (see ``forget_ended``).
- ``parent_session_id`` on a product that is not a plugin is refused
  (``InvalidArgument`` naming it), not ignored: only a plugin's session has a
  host (P4), and a session that says it runs in a host it will never end with
  is a caller's mistake to tell, not to drop. The SDK sends one for plugins only.
- Plugin sessions register their device (the host's) without a device limit
  and never count as running elsewhere: the host governs both.
- M13 counts the user's live sessions of the product on every device, in
  every team, after M8 and M9 and before payment; sessions that a takeover
  is about to end (M9) do not count. Plugins are products: a plugin has its
  own cap.
- Removing a device with live sessions is refused (DEVICE_IN_USE) unless the
  operator asks to end them: they then end with ENDED_BY_ADMIN.
- Holds are for the product's rate at the moment of the hold (a rate changed
  on the rate sheet applies from the next hold); a live session's
  ``daily_rate`` is its product's rate now (what its next hold takes; 0 for a
  product made free, as its coverage says), an ended one's the rate at its end
  (``SessionView``, as its plan, A8).
- An ended session's view shows its meter's state now (a window it paid for
  stays visible) and no lease.
- ``revoke_access`` returns every session it ended, plugins included.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from datetime import datetime, timedelta

from server.domain.changes import Changes
from server.domain.errors import (
    AlreadyExists,
    DeviceInUse,
    DeviceLimit,
    HostSessionRequired,
    IdleNotSupported,
    InsufficientTokens,
    InvalidArgument,
    RunningElsewhere,
    SessionLimit,
    UnknownProduct,
    UnknownSession,
)
from server.domain.instants import SECOND
from server.domain.lifecycle import order
from server.domain.liveview import MAX_FIELD, LiveView
from server.domain.meters import Meters
from server.domain.policies import (
    TimerSink,
    choose_team,
    coverage_of,
)
from server.domain.products import Platform, Product, ProductKind, check_runs_on, version_year
from server.domain.sessions import (
    Coverage,
    Device,
    EndReason,
    Session,
    SessionState,
    live_list,
)
from server.domain.teams import team_id_problem
from server.domain.text import request_id_problem, unprintable

_COVERED = (Coverage.SUBSCRIPTION, Coverage.TRIAL)


def _check_text(problems: dict[str, str], name: str, value: str, required: bool) -> None:
    """An id a product sends (a device's, a version, a session's): what the text
    rule refuses in a request id (``domain/text.py``: no control, format or
    separator character, so no id hides or reorders what an operator reads
    beside it), nor spaces around it, which would make ``dev-1 `` a second
    device beside ``dev-1``."""
    if not value:
        if required:
            problems[name] = "is required"
    elif len(value) > MAX_FIELD:
        problems[name] = f"must be at most {MAX_FIELD} characters"
    elif (bad := unprintable(value)) is not None:
        problems[name] = f"must not contain a control or format character (found {bad})"
    elif (trimmed := value.strip()) != value:
        problems[name] = "must not begin or end with a space" if trimmed else "must not be blank"


class Licensing(LiveView):
    # == the four RPCs ========================================================

    def entitle(
        self,
        user_id: str,
        product_id: str,
        product_version: str,
        platform: Platform | None,
        device_id: str,
        parent_session_id: str,
        request_id: str,
        takeover: bool,
        preferred_team: str,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
    ) -> Session:
        """M1: open a session, or refuse and change nothing."""
        problems: dict[str, str] = {}
        _check_text(problems, "product_id", product_id, required=True)
        _check_text(problems, "device_id", device_id, required=True)
        _check_text(problems, "product_version", product_version, required=True)
        year = 0  # P2: the version's year, read once (P3 compares it below)
        if "product_version" not in problems:
            try:
                year = version_year(product_version)
            except InvalidArgument as exc:
                problems.update(exc.violations)
        if (problem := request_id_problem(request_id, required=False)) is not None:
            problems["request_id"] = problem  # the rule PurchaseTokens follows too
        _check_text(problems, "parent_session_id", parent_session_id, required=False)
        if preferred_team and (problem := team_id_problem(preferred_team)) is not None:
            problems["team_id"] = problem  # C3: the preferred team, named by its id
        if problems or platform is None:
            if platform is None:
                problems["platform"] = "is required: WINDOWS, MACOS or LINUX"
            raise InvalidArgument(problems)
        if request_id:  # M11
            earlier = self._earlier(user_id, request_id)
            if earlier is not None:
                if (
                    earlier.product_id != product_id
                    or earlier.device_id != device_id
                    or earlier.platform is not platform
                    or earlier.product_version != product_version
                    or earlier.parent_session_id != parent_session_id  # P4: its host
                ):
                    first_host = earlier.parent_session_id
                    raise AlreadyExists(
                        f"request_id {request_id!r} was already used to entitle "
                        f"{earlier.product_id} {earlier.product_version} on "
                        f"{earlier.platform.value}, device {earlier.device_id!r}"
                        + (f", on host session {first_host!r}" if first_host else ""),
                        request_id=request_id,
                        session_id=earlier.session_id,
                    )
                return earlier
        product = self.products.get(product_id)
        if product is None:
            raise UnknownProduct(f"{product_id!r} is not on the rate sheet", product_id=product_id)
        if parent_session_id and product.kind is not ProductKind.PLUGIN:  # P4
            raise InvalidArgument.field(
                "parent_session_id",
                f"must be empty: {product.product_id} is a product, not a plugin, and only "
                "a plugin's session has a host",
            )
        check_runs_on(product, platform, product_version, year)  # P3
        teams = self.access.teams_for(user_id, product_id, now)  # A1-A5
        devices = self._devices_of(user_id, product_id)
        device = next((d for d in devices if d.device_id == device_id), None)
        host: Session | None = None
        taken: list[Session] = []
        if product.kind is ProductKind.PLUGIN:  # P4: the host governs devices
            host = self._host_session(user_id, product, device_id, platform, parent_session_id)
        else:
            limit = self.terms.devices_per_product
            if device is None and len(devices) >= limit:  # M8
                raise DeviceLimit(product_id, limit)
            running = [d for d in devices if d.running and d.device_id != device_id]
            if running and len(running) >= self.terms.running_devices_per_product:  # M9
                if not takeover:
                    raise RunningElsewhere(product_id, running[0].device_id)
                # Room for this one: the least recently seen of the others stop (with
                # one running at a time, the default, every other device).
                excess = len(running) - self.terms.running_devices_per_product + 1
                ousted = sorted(running, key=lambda d: (d.last_seen_time, d.device_id))[:excess]
                taken = order(s for d in ousted for s in d.sessions())
        live = sum(len(live_list(d.live)) for d in devices) - len(taken)  # those M9 ends
        if live >= self.terms.sessions_per_product:  # M13
            raise SessionLimit(product_id, self.terms.sessions_per_product)
        rate = product.daily_rate
        cov = coverage_of(self.coverage.covering(user_id, product_id, now), rate)
        team_id = choose_team(  # C3
            teams,
            preferred=preferred_team,
            host_team=host.team_id if host is not None else "",
            covered=cov in _COVERED,
            meters=[self.meters.get(t, user_id, product_id) for t in teams],
            ledger=self.ledger,
            daily_rate=rate,
            now=now,
        )
        meter = self.meters.get(team_id, user_id, product_id)
        if (
            cov is Coverage.TOKENS
            and rate > 0
            and Meters.needs_hold(meter, now)  # M2
            and self.paying_for(user_id, product_id, now, besides=team_id) is None  # C3
        ):
            available = self.ledger.available(team_id)
            if available < rate:
                raise InsufficientTokens(team_id, available, rate)

        # -- accepted: nothing below refuses --------------------------------------------
        if any(s.coverage is not cov for s in self._seat_sessions(user_id, product_id)):
            self._apply_coverage(user_id, product_id, now, changes, timers)  # a grant we missed
        team_id = sys.intern(team_id)
        product_id = product.product_id
        if device is None:
            device = Device(user_id, product_id, device_id, now, now)
            self._add_device(device)
        device.last_seen_time = now
        changes.upsert(device)
        session = Session(
            session_id=self._new_id("se"),
            user_id=user_id,
            team_id=team_id,
            product_id=product_id,
            product_version=sys.intern(product_version),
            platform=platform,
            device_id=device.device_id,
            parent_session_id=host.session_id if host is not None else "",
            request_id=request_id,
            coverage=cov,
            plan=self.teams[team_id].plan,
            daily_rate=rate,
            start_time=now,
            lease_start=now,
            last_activity=now,
            state_since=now,
            coverage_since=now,
        )
        self._sessions[session.session_id] = session
        self._index(session.session_id)
        self.live_counts[session.product_id, session.state] += 1
        meter = self.meters.get_or_create(team_id, user_id, product_id)
        self._link(session, meter, device, host)
        changes.upsert(session)
        self._ensure_paid(session, now, changes, timers)  # cannot fail: checked above
        self._watch(session, timers)
        self._schedule_coverage(user_id, product_id, now, timers)
        # M9: after the new session opened, so the meter stays in use; together, so
        # that one old host's plugin never pays for another's as both end (P4, C3).
        self._end_together(taken, EndReason.TAKEN_OVER, now, changes, timers)
        return session

    def heartbeat(
        self,
        user_id: str,
        session_id: str,
        seconds_since_activity: int,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
    ) -> Session:
        """M7: extend the lease; M6: take the activity report; M12 on ended sessions."""
        if seconds_since_activity < 0:
            raise InvalidArgument.field(
                "seconds_since_activity",
                "must be 0 or more: how many seconds ago the user last did something",
            )
        session = self._own(user_id, session_id)
        if not session.live:
            return session
        session.lease_start = now  # M7: the lease now ends LEASE later
        if (device := self.device_of(session)) is not None:
            device.last_seen_time = now
            changes.upsert(device)
        changes.upsert(session)
        if self._product(session).idle_aware:
            # Activity before the session began says nothing (and an int64 would overflow).
            # Activity just now (the usual report) is ``now`` itself, the instant the
            # device's last_seen_time holds: no second datetime per session.
            if seconds_since_activity == 0:
                activity = now
            else:
                age = (now - session.start_time) // SECOND + 1
                activity = now - timedelta(seconds=min(seconds_since_activity, age))
            session.last_activity = max(session.last_activity, activity)
            if (
                session.state is SessionState.IDLE
                and activity > session.state_since
                and activity + self.terms.idle_threshold > now
            ):
                self._resume(session, now, changes, timers)
        return session

    def idle(
        self, user_id: str, session_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> Session:
        """M6: the product says its user went idle."""
        session = self._own(user_id, session_id)
        if not session.live:
            return session  # M12, whatever the product
        if not self._product(session).idle_aware:
            raise IdleNotSupported(
                f"{session.product_id} does not support idle awareness",
                product_id=session.product_id,
            )
        if session.active:
            self._go_idle(session, now, changes, timers)
        return session

    def release(
        self, user_id: str, session_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> Session:
        """M10: end the session; a second release answers the ended session."""
        session = self._own(user_id, session_id)
        if session.live:
            self._end(session, EndReason.RELEASED, now, changes, timers)
        return session

    # == operators, access and coverage changes ===================================

    def end_session(
        self, session_id: str, reason: EndReason, now: datetime, changes: Changes, timers: TimerSink
    ) -> Session:
        """R2 EndSession (ENDED_BY_ADMIN), or any other reason the engine needs."""
        session = self.session(session_id)
        if session.live:
            self._end(session, reason, now, changes, timers)
        return session

    def revoke_access(
        self,
        team_id: str,
        user_id: str,
        product_ids: Collection[str] | None,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
    ) -> list[Session]:
        """A6: end the user's live sessions in the team of what they lost (None:
        everything) with NOT_ASSIGNED; paid windows stay paid. Plugins of a
        revoked host that the user keeps end as HOST_ENDED. Returns every
        session ended."""
        doomed = self._losing(team_id, user_id, product_ids)
        # A plugin the user lost too ends for that (NOT_ASSIGNED) before its host,
        # whose end would otherwise end it as HOST_ENDED. Stable: oldest first.
        doomed.sort(key=lambda s: not s.parent_session_id)
        return self._end_together(doomed, EndReason.NOT_ASSIGNED, now, changes, timers)

    def remove_device(
        self,
        user_id: str,
        product_id: str,
        device_id: str,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
        *,
        end_sessions: bool = False,
    ) -> list[Session]:
        """R2/M8: forget a device. One with live sessions is refused
        (``DeviceInUse``) unless ``end_sessions``: they then end with
        ENDED_BY_ADMIN (plugins on it with their host) and are returned."""
        problems: dict[str, str] = {}
        _check_text(problems, "user_id", user_id, required=True)
        _check_text(problems, "product_id", product_id, required=True)
        _check_text(problems, "device_id", device_id, required=True)
        if problems:
            raise InvalidArgument(problems)
        devices = self._devices_of(user_id, product_id)
        device = next((d for d in devices if d.device_id == device_id), None)
        if device is None:
            raise InvalidArgument.field(
                "device_id", f"{device_id!r} is not registered for {user_id} and {product_id}"
            )
        live = order(device.sessions())
        if live and not end_sessions:
            raise DeviceInUse(device_id, len(live))
        ended = self._end_together(live, EndReason.ENDED_BY_ADMIN, now, changes, timers)
        self._drop_device(device)
        changes.delete(device)
        return ended

    def coverage_changed(
        self, user_id: str, product_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """C1/C2: a subscription or trial was granted (or changed) at ``now``: apply
        it to the user's running sessions and watch for its next start or end.

        A restart looks for coverage changes from each session's
        ``coverage_since`` (``LiveView.schedule_all``): a period granted after it
        began (one already over covers nothing, C1) must not be replayed into the
        past there. Every change before ``now`` has been applied (the deadlines
        due fired first, ``Scheduler.caught_up``), so a session that would find
        one is marked decided at ``now``."""
        self._apply_coverage(user_id, product_id, now, changes, timers)
        sessions = self._seat_sessions(user_id, product_id)
        for session in sessions:
            nxt = self.coverage.next_change(user_id, product_id, session.coverage_since)
            if nxt is not None and nxt < now:
                session.coverage_since = now
                changes.upsert(session)
        if sessions:
            self._schedule_coverage(user_id, product_id, now, timers)

    def idle_awareness_changed(
        self, product_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """M6 across a change of the rate sheet at ``now``. A product that no longer
        supports idle awareness has no idle sessions: each resumes now (a new
        grace unless a window covers now, M2; ended if that hold cannot be made),
        as none could otherwise leave IDLE. One that now supports it counts its
        running sessions' activity from now (reports were ignored until then, M6)
        and watches for their idle instants. Scans every session: the admin path."""
        aware = self.products[product_id].idle_aware
        for session in order(s for s in self.live_sessions() if s.product_id == product_id):
            if not aware and session.state is SessionState.IDLE:
                self._resume(session, now, changes, timers)
            elif aware and session.active:
                session.last_activity = max(session.last_activity, now)
                changes.upsert(session)
                self._watch(session, timers)

    def rate_changed(
        self, product_id: str, now: datetime, changes: Changes, timers: TimerSink
    ) -> None:
        """P1 across a change of the rate sheet at ``now`` that made a product free
        (rate 0) or no longer free. Rate 0 is a coverage (``coverage_of``: after a
        subscription and a trial), so running sessions follow it as they follow a
        subscription granted or ended (``_apply_coverage``): ones no longer free pay
        from now (a new grace unless a window covers now, M2; ended
        ``INSUFFICIENT_TOKENS`` if that hold cannot be made, M5); ones now free give
        a hold in grace back, and a paid window stays paid. A change between two
        rates above 0 needs nothing here: each hold takes the rate of its instant.
        Scans every session: the admin path."""
        seats = {
            (s.user_id, s.product_id) for s in self.live_sessions() if s.product_id == product_id
        }
        for user_id, _ in sorted(seats):
            self._apply_coverage(user_id, product_id, now, changes, timers)

    # == helpers ======================================================================

    def _own(self, user_id: str, session_id: str) -> Session:
        """M12: a session belongs to its user; anyone else is told it does not exist."""
        session = self.session(session_id)
        if session.user_id != user_id:
            raise UnknownSession(f"no session {session_id!r}", session_id=session_id)
        return session

    def _host_session(
        self,
        user_id: str,
        plugin: Product,
        device_id: str,
        platform: Platform,
        parent_session_id: str,
    ) -> Session:
        """P4: a live session of the plugin's host, same user, same device (so the
        same platform: a plugin claiming another would run where P3 refuses it)."""
        host = self._sessions.get(parent_session_id) if parent_session_id else None
        if (
            host is None
            or not host.live
            or host.user_id != user_id
            or host.device_id != device_id
            or host.platform != platform
            or host.product_id != plugin.host_product_id
        ):
            raise HostSessionRequired(
                f"{plugin.product_id} is a plugin of {plugin.host_product_id}: parent_session_id "
                f"must name a live {plugin.host_product_id} session of yours on this device "
                "and platform",
                product_id=plugin.product_id,
                host_product_id=plugin.host_product_id,
                parent_session_id=parent_session_id,
            )
        return host
