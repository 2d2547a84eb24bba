"""Sessions use cases: the licensing aggregate wired to the clock, the timer
heap and the store (RULES §4-§6, A6, R1, R2).

Every use case applies its change in memory with no ``await`` between the
check and the change (two Entitles racing for the last tokens cannot both
win), then awaits the group commit before answering. The one exception is a
heartbeat that changes nothing but the lease, the activity and the device's
last-seen time: those objects are marked dirty and written in batches every
``heartbeat_flush`` seconds (and at shutdown), so a crash loses at most that
much heartbeat history and never a hold, charge, session or device; nor a lease
near its end (``STORED_WHEN_LEASE_ENDS_WITHIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta
from operator import attrgetter

import structlog

from server.clock import Clock, monotonic
from server.domain.changes import Changes, Deleted
from server.domain.coverage import Subscription
from server.domain.errors import InsufficientTokens, InvalidArgument, UnknownTeam, UnknownUser
from server.domain.instants import EPOCH
from server.domain.licensing import Licensing
from server.domain.liveview import MAX_FIELD
from server.domain.meta import (
    SESSIONS_FROM_KEY,
    SESSIONS_RECENT_FROM_KEY,
    MetaValue,
    OlderLoaded,
)
from server.domain.policies import TimerSink
from server.domain.products import Platform, Product
from server.domain.sessions import (
    ENDED_KEPT,
    Device,
    EndReason,
    Session,
    SessionState,
    SessionView,
)
from server.domain.timers import TimerKind
from server.engine.audit import commit_call, store_fired
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.engine.usage import UsageReport, UsageRow, open_spans, pack_usage, report_rows
from server.loops import let_go
from server.stats import Batches
from server.store.port import StoreFailed, StorePort

log = structlog.get_logger()

SESSION_TIMERS = (
    TimerKind.LEASE_END,
    TimerKind.IDLE,
    TimerKind.GRACE_END,
    TimerKind.WINDOW_END,
    TimerKind.COVERAGE_CHANGE,
)
# L3 (``Alerts.tokens_exhausted``): (team_id, user_id, product_id, now, changes).
TokensExhausted = Callable[[str, str, str, datetime, Changes], None]
_LIGHT = (Session, Device)  # what a plain heartbeat touches
# M7/H2: a heartbeat that finds its lease ending within this is stored before it is
# answered, as a change is. Batched, a crash could lose it and leave the stored lease
# to end before the product, told of a new 24 hours (signed: it runs on offline),
# heartbeats again: its session would end LEASE_EXPIRED. A product heartbeating every
# few minutes never comes near; one back from a day offline does, once.
STORED_WHEN_LEASE_ENDS_WITHIN = timedelta(hours=1)
_INSTANT = timedelta(microseconds=1)  # the store's resolution: [start, now] is [start, now + 1 µs)
_ID = attrgetter("session_id")  # ListSessions' order (ids grow with time: ``server/ids.py``)
FORGET_EVERY_SECONDS = 600.0
# Objects per commit of a heartbeat batch. Commits go one at a time, so an Idle
# or an Entitle that comes during a flush waits behind one chunk, not the whole
# batch: at 100,000 sessions and 2,000 heartbeats a second a batch of ~10,000
# rows took up to a second to write (`make bench`, Idle p99 ~1 s). A chunk of
# 1,000 took 6 ms alone and 24-130 ms on the busy server (its rows are bound
# holding the GIL the event loop wants): 250 kept that wait a quarter as long,
# for an extra transaction (~0.2 ms of fsync here) per 250 rows. 100 (stop 24,
# docs/performance-log.md): Idle's p99 28-35 ms against 31-42 ms with 250, in four
# runs each, alternating, with Heartbeats no fewer.
FLUSH_CHUNK = 100
# The last flush, at stop, comes once no call is left to wait behind it: fewer,
# larger transactions (a million dirty sessions in 1,000 of them, not 10,000).
LAST_FLUSH_CHUNK = 1_000


class DirectoryAccess:
    """The licensing aggregate's view of the directory (A1-A5)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def teams_for(self, user_id: str, product_id: str, now: datetime) -> list[str]:
        state = self.state
        return state.directory.teams_for(
            user_id, product_id, now, state.teams, state.products.keys()
        )


def _snapshot(view: SessionView) -> SessionView:
    """The answer as it stands now, apart from the live session object: while the
    call waits for its commit, other calls (a deadline fired by the clock) may change
    that object, and what they did is not stored yet, so it must not be told."""
    return view.snapshot()


def _check_length(name: str, value: str) -> None:
    """Refuse an over-long id before looking it up (see ``liveview.MAX_FIELD``)."""
    if len(value) > MAX_FIELD:
        raise InvalidArgument.field(name, f"must be at most {MAX_FIELD} characters")


def _say_ended_for_tokens(changes: Changes) -> None:
    """M5: one warning line for the running sessions a commit ends because their team
    cannot pay the daily rate (a renewal, a grace that ran out, a return from idle),
    by team, user and product: the user is told (END_REASON_INSUFFICIENT_TOKENS), and
    so is whoever buys the team's tokens. (An Entitle refused for tokens is its call's
    own line, and RULES L3's alert.)"""
    ended: dict[tuple[str, str, str], list[str]] = {}
    for item in changes.items:
        if type(item) is Session and item.end_reason is EndReason.INSUFFICIENT_TOKENS:
            ids = ended.setdefault((item.team_id, item.user_id, item.product_id), [])
            if item.session_id not in ids:  # (one change may hold it twice)
                ids.append(item.session_id)
    for (team_id, user_id, product_id), session_ids in ended.items():
        log.warning(
            "sessions_ended_for_tokens",
            team_id=team_id,
            user_id=user_id,
            product_id=product_id,
            session_ids=session_ids,
        )


class Sessions:
    def __init__(
        self,
        lic: Licensing,
        state: State,
        *,
        store: StorePort,
        scheduler: Scheduler,
        clock: Clock,
        commits: Commits,
        tokens_exhausted: TokensExhausted,
        recent_bound: str | None = None,
        older_loaded: Collection[str] = (),
    ) -> None:
        self.lic = lic
        self.state = state
        self._store = store
        self._scheduler = scheduler
        self._clock = clock
        self._commits = commits
        self._tokens_exhausted = tokens_exhausted
        self._dirty: dict[int, Session | Device] = {}
        self._flushing: dict[int, Session | Device] = {}  # the batch being written
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = Batches()  # each flush's objects and seconds (server/metrics.py)
        self._load_bound: str | None = None  # the last stored (``keep_load_bound``)
        # As stored (at start: as loaded): ``SESSIONS_RECENT_FROM_KEY``, ``OlderLoaded``.
        self._recent_bound, self._older_loaded = recent_bound, set(older_loaded)
        for kind in SESSION_TIMERS:
            scheduler.on(kind, self._timer_handler(kind))
        commits.add_hook(_say_ended_for_tokens)

    def schedule_all(self) -> None:
        self.lic.schedule_all(self._scheduler.sink, self._clock.now())

    # -- what access and coverage changes do to running sessions ------------------

    def revoke_access(
        self,
        team_id: str,
        losses: Mapping[str, Collection[str] | None],
        now: datetime,
        changes: Changes,
    ) -> None:
        """A6: end each user's live sessions in the team for what they lost (None:
        everything). Those who never ran anything are passed over at once: a default
        set cleared names every member of the team, 300,000 of them at most."""
        lic, timers = self.lic, self._scheduler
        for user_id in lic.running(losses):
            lost = losses[user_id]
            if lost is None or lost:
                lic.revoke_access(team_id, user_id, lost, now, changes, timers)

    def coverage_changed(self, sub: Subscription, now: datetime, changes: Changes) -> None:
        """C1/C2: a subscription or trial was granted; running sessions follow it."""
        self.lic.coverage_changed(sub.user_id, sub.product_id, now, changes, self._scheduler)

    def live_count(self, product_id: str) -> int:
        """How many sessions of the product are live (a scan: the admin path)."""
        return sum(1 for s in self.lic.live_sessions() if s.product_id == product_id)

    def product_changed(
        self, before: Product, after: Product, now: datetime, changes: Changes
    ) -> None:
        """P1: the rate sheet changed a product at ``now``; its running sessions
        follow a change of idle awareness (M6) or a rate that became or stopped
        being 0 (free: a coverage)."""
        if before.idle_aware != after.idle_aware:
            self.lic.idle_awareness_changed(after.product_id, now, changes, self._scheduler)
        if (before.daily_rate == 0) != (after.daily_rate == 0):
            self.lic.rate_changed(after.product_id, now, changes, self._scheduler)

    def _timer_handler(self, kind: TimerKind) -> Callable[[str, datetime, Changes], None]:
        def handler(key: str, due: datetime, changes: Changes) -> None:
            if self._dirty or self._flushing:
                self._settle(kind, key, changes)
            self.lic.on_timer(kind, key, due, changes, self._scheduler)

        return handler

    def _settle(self, kind: TimerKind, key: str, changes: Changes) -> None:
        """A deadline fires on the leases and activity that heartbeats reported,
        some of them not yet written (they go in batches). Write those of the
        sessions it concerns with its outcome, so that a crash cannot leave a
        stored charge (or a session left alive) that the stored sessions
        contradict: the session that a renewal charged for "expired" before it."""
        if kind is TimerKind.LEASE_END or kind is TimerKind.IDLE:
            found = self.lic.find_session(key)
            sessions = [found] if found is not None else []
        elif kind is TimerKind.COVERAGE_CHANGE:
            user_id, product_id = key.rsplit("|", 1)
            sessions = self.lic.sessions_of_user(user_id, product_id)
        else:  # GRACE_END and WINDOW_END are keyed by user
            sessions = self.lic.sessions_of_user(key)
        for session in sessions:
            for obj in (session, self.lic.device_of(session)):
                if obj is not None and self._undirty(obj):
                    changes.upsert(obj)

    def _undirty(self, obj: object) -> bool:
        """Take ``obj`` out of the heartbeat batch (waiting or being written):
        whether it was there."""
        key = id(obj)
        return self._dirty.pop(key, None) is not None or self._flushing.pop(key, None) is not None

    # -- the four RPCs (M1-M12) -----------------------------------------------

    async def entitle(
        self,
        user_id: str,
        *,
        product_id: str,
        product_version: str,
        platform: Platform | None,
        device_id: str,
        parent_session_id: str,
        request_id: str,
        takeover: bool,
        team_id: str,
    ) -> SessionView:
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        try:
            session = self.lic.entitle(
                user_id,
                product_id,
                product_version,
                platform,
                device_id,
                parent_session_id,
                request_id,
                takeover,
                team_id,
                now,
                changes,
                self._scheduler,
            )
        except InsufficientTokens as refused:  # L3: the alert is stored, then the refusal
            self._tokens_exhausted(refused.team_id, user_id, product_id, now, changes)
            await store_fired(self._commits, changes)
            raise
        except Exception:
            await store_fired(self._commits, changes)
            raise
        view = _snapshot(self.lic.session_view(session, now))
        await self._commits.commit(
            changes
        )  # M11: a repeat (nothing changed) once the first is stored
        return view

    async def heartbeat(
        self, user_id: str, session_id: str, seconds_since_activity: int
    ) -> SessionView:
        """M6, M7, M12. A plain heartbeat answers at once with a view of the live
        session (read it before the next ``await``); one that waits answers with
        a snapshot."""
        before = self.lic.find_session(session_id)
        if before is None and (old := await self._forgotten(user_id, session_id)) is not None:
            return await self._as_stored(old)
        # No await between firing what is due and storing it (``_as_stored``).
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        state = before.state if before is not None else None
        lease_end = before.lease_end if before is not None else now
        try:
            session = self.lic.heartbeat(
                user_id, session_id, seconds_since_activity, now, changes, self._scheduler
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        view = self.lic.session_view(session, now)
        if (
            session.state is state
            and all(type(x) in _LIGHT for x in changes.items)
            and lease_end - now > STORED_WHEN_LEASE_ENDS_WITHIN
        ):
            dirty = self._dirty
            for obj in changes.items:
                dirty[id(obj)] = obj  # type: ignore[assignment]
            # Written in a batch later; but what the answer says (a charge, an end)
            # may come from a deadline whose commit is still under way. Only then
            # does the call wait, and only then may other calls change the live
            # session before it answers.
            if self._commits.committing and self._commits.unsettled(
                session,
                self.lic.meters.get(session.team_id, session.user_id, session.product_id),
            ):
                view = _snapshot(view)
                await self._commits.settled()
        else:  # it resumed, took a hold, ended, or its lease was near its end: durable now
            view = _snapshot(view)
            await self._commits.commit(changes)
        return view

    async def idle(self, user_id: str, session_id: str) -> SessionView:
        return await self._change(self.lic.idle, user_id, session_id)

    async def release(self, user_id: str, session_id: str) -> SessionView:
        return await self._change(self.lic.release, user_id, session_id)

    async def _change(
        self,
        change: Callable[[str, str, datetime, Changes, TimerSink], Session],
        user_id: str,
        session_id: str,
    ) -> SessionView:
        """Idle or Release (``change``: the domain's): a session memory let go of
        answers from the store as it ended (M12); otherwise the change, stored
        before the answer. Deadlines that fell due first are stored either way."""
        if self.lic.find_session(session_id) is None and (
            old := await self._forgotten(user_id, session_id)
        ):
            return await self._as_stored(old)
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        try:
            session = change(user_id, session_id, now, changes, self._scheduler)
        except Exception:
            await store_fired(self._commits, changes)
            raise
        view = _snapshot(self.lic.session_view(session, now))
        await self._commits.commit(changes)
        return view

    async def _as_stored(self, old: Session) -> SessionView:
        """M12's answer for a session memory let go of, read from the store, once
        the deadlines already due are fired and stored. They are fired after the
        read, not before it: ledger entries fired and then held over an ``await``
        would reach the store after entries made meanwhile by calls already
        answered, and a crash between the two would leave the ledger a gap."""
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        await store_fired(self._commits, changes)
        return self.lic.session_view(old, now)

    async def _forgotten(self, user_id: str, session_id: str) -> Session | None:
        """M12 for a session ended so long ago that memory let it go: the stored
        one, if it is this user's (anyone else is told it does not exist)."""
        if not session_id or len(session_id) > 200:
            return None
        found = await self._store.ended_session(session_id)
        if found is not None and found.user_id == user_id and found.state is SessionState.ENDED:
            return found
        return None

    def forget_ended(self) -> int:
        """Let go of sessions ended more than ``ENDED_KEPT`` ago (they stay stored)."""
        return self.lic.forget_ended(self._clock.now() - ENDED_KEPT)

    async def keep_load_bound(self, *, read: bool = True) -> str | None:
        """Store where a start reads the sessions from, in one commit:

        - ``SESSIONS_FROM_KEY``, the release before's bound, which a start reads
          from when there is no recent bound (below): the least of
          the first stored session a start would load and every session in memory.
          Memory's count too: a session opened (or ended) here whose commit is still
          under way is not stored yet, and is in memory by the time the read
          returns. Not ``read``: memory alone, right after the start's load, before
          any session was let go (memory then holds what a start loads; a start
          that loaded none found none stored);
        - ``SESSIONS_RECENT_FROM_KEY``, where a start reads from: the first session
          in memory opened in the days memory keeps ended ones, and the sessions in
          memory below it (``OlderLoaded``: live for days, or ended lately after a
          long run), so that one session live for a month does not make every start
          read a month of sessions. A start loads what memory held then, and every
          session opened since (ids grow, ``server/ids.py``).

        ``SESSIONS_FROM_KEY``'s bound, or None when it is the one this server stored
        last (or there is none)."""
        found = [self.lic.first_session_id()]
        if read:
            found = [await self._store.sessions_load_bound(), self.lic.first_session_id()]
        bound = min((b for b in found if b is not None), default=None)
        changes = Changes()
        new_bound = bound if bound != self._load_bound else None
        if new_bound is not None:
            changes.upsert(MetaValue(SESSIONS_FROM_KEY, new_bound))
        # Memory empty (nothing live, nothing ended lately): no bound of its own, and a
        # start reads from ``SESSIONS_FROM_KEY`` as the release before did (the last
        # ended, and those ended in the days before).
        split = self.lic.recent_split(self._clock.now() - ENDED_KEPT)
        recent, older = (split[0], set(split[1])) if split else (None, set())
        if recent != self._recent_bound:
            key = SESSIONS_RECENT_FROM_KEY
            if recent is None:
                changes.delete(MetaValue(key, ""))
            else:
                changes.upsert(MetaValue(key, recent))
        for session_id in sorted(older - self._older_loaded):
            changes.upsert(OlderLoaded(session_id))
        for session_id in sorted(self._older_loaded - older):
            changes.delete(OlderLoaded(session_id))
        if not changes:
            return None
        await self._commits.commit(changes)
        self._recent_bound, self._older_loaded = recent, older
        if new_bound is not None:
            self._load_bound = new_bound
        return new_bound

    # -- operators (R2) ------------------------------------------------------------

    async def end_session(self, session_id: str) -> SessionView:
        """R2: end a session now, once the deadlines already due have fired: one whose
        lease lapsed is answered as it ended then (LEASE_EXPIRED), and a grace or a
        window that ended before now has been charged or renewed."""
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            session = self.lic.end_session(
                session_id, EndReason.ENDED_BY_ADMIN, now, changes, self._scheduler
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        view = _snapshot(self.lic.session_view(session, now))
        await commit_call(self._commits, changes, fired)  # ended already: no event (AD2)
        return view

    def _check_user_product(
        self,
        user_id: str,
        product_id: str,
        device_id: str | None = None,
        *,
        any_product: bool = False,
    ) -> None:
        """``device_id``: also required (a call about one device); ``any_product``:
        the product may be left out (every product's)."""
        problems: dict[str, str] = {}
        if device_id == "":
            problems["device_id"] = "is required"
        if not user_id:
            problems["user_id"] = "is required"
        if not product_id and not any_product:
            problems["product_id"] = "is required"
        for name, value in (("user_id", user_id), ("product_id", product_id)):
            if len(value) > MAX_FIELD:
                problems[name] = f"must be at most {MAX_FIELD} characters"
        if problems:
            raise InvalidArgument(problems)
        self.state.directory.user(user_id)  # UNKNOWN_USER
        if product_id:
            self.state.product(product_id)  # UNKNOWN_PRODUCT

    def devices(self, user_id: str, product_id: str) -> list[Device]:
        """M8/R2: the user's devices of the product, or (none named) of every product."""
        self._check_user_product(user_id, product_id, any_product=True)
        return self.lic.devices(user_id, product_id)

    async def remove_device(
        self, user_id: str, product_id: str, device_id: str, end_sessions: bool
    ) -> list[SessionView]:
        """R2: forget a device; with ``end_sessions``, end its live sessions
        first (else a device in use is refused). Returns the sessions ended."""
        self._check_user_product(user_id, product_id, device_id)
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        try:
            ended = self.lic.remove_device(
                user_id,
                product_id,
                device_id,
                now,
                changes,
                self._scheduler,
                end_sessions=end_sessions,
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        views = [_snapshot(self.lic.session_view(s, now)) for s in ended]
        # A heartbeat may have left the device in the batch: written after the
        # delete, it would store the device again.
        for item in changes.items:
            if type(item) is Deleted:
                self._undirty(item.obj)
        await self._commits.commit(changes)
        return views

    def list_sessions(
        self,
        team_id: str,
        user_id: str,
        include_ended: bool,
        after: str | None,
        limit: int,
        visible: frozenset[str] | None = None,
    ) -> tuple[list[SessionView], str | None]:
        """A page of sessions in the order of their ids (the order they opened in), the
        page after ``after`` found without walking those before it, one user's live
        sessions without walking anyone else's; only ``visible`` teams' for a team
        administrator who names none (RULES AD1)."""
        _check_length("team_id", team_id)
        _check_length("user_id", user_id)
        if team_id:
            self.state.team(team_id)
        now = self._clock.now()
        page: list[SessionView] = []
        last: str | None = None
        found: Iterable[Session]
        if user_id and not include_ended:  # the user's few, from their devices (a portal's
            # member page): not a walk of every session after ``after``
            mine = self.lic.sessions_of_user(user_id)
            found = sorted((s for s in mine if after is None or s.session_id > after), key=_ID)
        else:
            found = self.lic.sessions_after(after)
        for s in found:
            if not (include_ended or s.live):
                continue
            if team_id and s.team_id != team_id:
                continue
            if user_id and s.user_id != user_id:
                continue
            if visible is not None and s.team_id not in visible:
                continue
            if len(page) == limit:
                return page, last
            page.append(self.lic.session_view(s, now))
            last = s.session_id
        return page, None

    def view(self, session: Session) -> SessionView:
        return self.lic.session_view(session, self._clock.now())

    # -- the usage report (R1) -----------------------------------------------------

    async def usage_report(
        self,
        team_id: str,
        start: datetime | None,
        end: datetime | None,
        user_id: str = "",
        product_id: str = "",
    ) -> UsageReport:
        if not team_id:
            raise InvalidArgument.field("team_id", "is required")
        _check_length("team_id", team_id)
        _check_length("user_id", user_id)
        _check_length("product_id", product_id)
        if team_id not in self.state.teams:
            raise UnknownTeam(f"no team {team_id!r}", team_id=team_id)
        if product_id:
            self.state.product(product_id)  # UNKNOWN_PRODUCT
        now = self._clock.now()
        # No end: up to now, included (what happened at this instant, the capture of
        # a grace that ended at an AdvanceClock's new instant, say, is reported).
        given_end, end = end, end or now + _INSTANT
        start = start or EPOCH
        if end <= start:
            if given_end is None:  # the caller sent a start in the future, no end
                raise InvalidArgument.field(
                    "start_time", "must not be after now (the report's end when end_time is absent)"
                )
            raise InvalidArgument.field("end_time", "must be after start_time")
        # The running sessions' spans before the reads: a release while they run
        # stores a span the reads may miss (``report_rows`` counts it once).
        live = open_spans(self.lic.live_sessions(team_id), now)
        await self._commits.settled()  # everything answered so far is in the history read
        await self.flush()
        facts = await self._store.usage_facts(team_id, start, end)
        packs = pack_usage(team_id, now, facts, self.state.ledger)  # as they stand now

        def rows_of_facts() -> list[UsageRow]:
            try:
                return report_rows(
                    start,
                    end,
                    facts,
                    live,
                    user_id=user_id,
                    product_id=product_id,
                    user_name=self._user_name,
                    product_name=self._product_name,
                )
            finally:  # the facts freed here too, not on the loop
                let_go(facts.captures, facts.session_starts, facts.spans)

        # The rows on a thread of their own: a year of a large team (160,000 rows)
        # held the event loop, and every call, for seconds (the names are read
        # from the directory there, one dictionary lookup each).
        rows = await asyncio.to_thread(rows_of_facts)
        report = UsageReport(rows, packs)
        if user_id and not report.rows and not self.state.directory.is_member(team_id, user_id):
            # The same answer for a user of no team and one of other teams only: the
            # report is this team's, and a team administrator may not learn of others'
            # users through it (AD1). A former member's usage is still reported.
            raise UnknownUser(
                f"{user_id!r} is not a member of team {team_id!r} and has no usage in it "
                "in these days",
                team_id=team_id,
                user_id=user_id,
            )
        return report

    def _user_name(self, user_id: str) -> str:
        user = self.state.directory.find_user(user_id)
        return user.display_name if user is not None else ""

    def _product_name(self, product_id: str) -> str:
        product = self.state.products.get(product_id)
        return product.display_name if product is not None else ""

    # -- heartbeat batches ----------------------------------------------------------

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    async def flush(self, chunk: int = 0) -> None:
        """Write the heartbeats' changes gathered so far, ``chunk`` objects per
        commit (0: ``FLUSH_CHUNK``). Each chunk is turned into rows as it is handed
        to the store, from memory as it is then (never older than a commit queued
        before it); what a deadline or a RemoveDevice takes out of the batch
        meanwhile (``_undirty``) is theirs to write, or not to."""
        chunk = chunk or FLUSH_CHUNK
        async with self._flush_lock:  # a second flush writes what came after the first
            if not self._dirty:
                return
            batch = self._flushing = self._dirty
            self._dirty = {}
            written, began = 0, monotonic()
            try:
                while batch:
                    n = min(chunk, len(batch))
                    written += n  # (what _undirty took out meanwhile is not counted)
                    await self._commits.commit(Changes([batch.popitem()[1] for _ in range(n)]))
            finally:
                self._flushing = {}
                for key, obj in batch.items():  # not written (cancelled): back in the batch
                    self._dirty.setdefault(key, obj)
            self.flushes.observe(written, monotonic() - began)

    def start(self, every: float) -> None:
        if self._flusher is None and every > 0:
            self._flusher = asyncio.create_task(self._flush_loop(every), name="heartbeat-flush")

    async def stop(self) -> None:
        """Stop the periodic flush, then write what is left. A flush that failed
        ended the flusher, logged (``heartbeat_flush_failed``); the store then
        fails every write, so the last flush raises that failure instead."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher
        await self.flush(LAST_FLUSH_CHUNK)

    async def _flush_loop(self, every: float) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(every)
            rounds += 1
            try:
                await self.flush()
                if rounds == 1:  # memory holds what the start loaded: nothing let go yet
                    await self.keep_load_bound(read=False)
                if rounds % max(1, int(FORGET_EVERY_SECONDS / every)) == 0:
                    self.forget_ended()
                    await self.keep_load_bound()
            except (asyncio.CancelledError, StoreFailed):
                raise  # a failed store is the store's line (store_failed), not a bug's
            except Exception:
                log.exception("heartbeat_flush_failed")
                raise
