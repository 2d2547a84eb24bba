"""The engine: the state, then the clock, scheduler, store and use cases wired
around it.

Built as cosmicpython's ``bootstrap`` builds its handlers: the state first
(``State``: empty, or restored from what the store loaded), then each use case
with exactly what it names: the state, the store port, the scheduler, the
clock, the group commit (``Commits``), its configuration, and, for the few
calls one use case makes into another, the callable itself (``Access`` ends
sessions through ``Sessions.revoke_access``; ``Accounts`` changes guests'
defaults through ``Access.set_guest_defaults``). No use case sees the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from server.clock import Clock, TestClock
from server.credentials import hash_secret
from server.domain.admins import AdminKey
from server.domain.changes import Changes
from server.domain.directory import Invitation, Notification
from server.domain.errors import InvalidArgument, TestClockDisabled
from server.domain.instants import rfc3339
from server.domain.ledger import Hold
from server.domain.licensing import Licensing
from server.domain.meta import (
    SESSIONS_RECENT_FROM_KEY,
    MetaValue,
    OlderLoaded,
    clock_at,
    meta_value,
)
from server.domain.sessions import Device, Meter, Session
from server.domain.terms import DEFAULT_TERMS, LONGEST_SPAN, Terms
from server.engine.access import Access
from server.engine.accounts import Accounts
from server.engine.admins import AdminKeys
from server.engine.alerts import Alerts
from server.engine.audit import AuditTrail, store_fired
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.sessions import DirectoryAccess, Sessions
from server.engine.state import State
from server.ids import IdFactory
from server.store.port import Snapshot, StorePort

TEST_CLOCK_KEY = "test_clock_now"
# The test clock stops the longest span a term may have (366 days) short of the last
# day a Timestamp carries, so that every instant the rules derive from it (a pack's
# expiry one calendar year on, a lease, a window, an invitation valid for the longest
# --terms allow) stays representable: 9998-12-30.
LATEST_TEST_CLOCK = datetime(9999, 12, 31, tzinfo=UTC) - LONGEST_SPAN

SEARCH_INDEX_SLICE = 2_000  # users keyed per step of the search index's build at start


def _licensing(state: State, terms: Terms, ids: IdFactory, snapshot: Snapshot | None) -> Licensing:
    """The sessions aggregate over ``state``, with the loaded sessions if any."""
    loaded = snapshot or Snapshot()
    return Licensing.restore(
        loaded.of(Session),
        loaded.of(Meter),
        loaded.of(Device),
        loaded.of(Hold),  # each now held by its meter in grace alone
        ledger=state.ledger,
        products=state.products,
        teams=state.teams,
        terms=terms,
        access=DirectoryAccess(state),
        coverage=state.coverages,
        new_id=ids.new,
    )


# The stored objects whose ids order a list (paged by id, or kept in id order).
_ORDERED_BY_ID = (
    (Session, attrgetter("session_id")),
    (Notification, attrgetter("notification_id")),
    (AdminKey, attrgetter("admin_key_id")),
    (Invitation, attrgetter("invitation_id")),
)


def _ids_after_the_stored(ids: IdFactory, loaded: Snapshot) -> None:
    """New ids sort after every stored one, whatever this machine's clock says
    (``IdFactory.not_before``): one pass over each kind, 40 ms a million sessions."""
    for kind, id_of in _ORDERED_BY_ID:
        if found := loaded.of(kind):
            ids.not_before(max(map(id_of, found)))


class Engine:
    def __init__(
        self,
        clock: Clock,
        store: StorePort,
        terms: Terms = DEFAULT_TERMS,
        *,
        snapshot: Snapshot | None = None,
        max_users_per_request: int = 10_000,
        max_page_size: int = 1000,
    ) -> None:
        self.clock = clock
        self.store = store
        self.terms = terms
        self.max_page_size = max_page_size  # configuration (server/config.py), for paging
        self.ids = ids = IdFactory()
        if snapshot is not None:
            _ids_after_the_stored(ids, snapshot)
        self._indexing: asyncio.Task[None] | None = None  # the search index's build
        self.commits = commits = Commits(store)
        self.scheduler = scheduler = Scheduler(clock, commits.commit)
        loaded = snapshot or Snapshot()
        scheduler.clock_at = clock_at(loaded.of(MetaValue))
        # RULES AD2: one audit event in the commit of each administrative change.
        self.audit = AuditTrail(
            commits,
            store,
            clock,
            ids,
            last_seq=loaded.max_audit_seq,
            last_hash=loaded.last_audit_hash,
        )
        # state
        self.state = state = State.restore(snapshot, terms) if snapshot else State.empty(terms)
        self.teams, self.products, self.ledger = state.teams, state.products, state.ledger
        self.directory, self.coverages = state.directory, state.coverages
        # use cases
        # RULES L1-L3: team alerts (a commit hook, a timer per pack, Entitle's refusal).
        self.alerts = Alerts(state, scheduler=scheduler, commits=commits, ids=ids)
        self.sessions = Sessions(
            _licensing(state, terms, ids, snapshot),
            state,
            store=store,
            scheduler=scheduler,
            clock=clock,
            commits=commits,
            tokens_exhausted=self.alerts.tokens_exhausted,
            recent_bound=meta_value(loaded.of(MetaValue), SESSIONS_RECENT_FROM_KEY),
            older_loaded=[o.session_id for o in loaded.of(OlderLoaded)],
        )
        self.access = Access(
            state,
            scheduler=scheduler,
            clock=clock,
            commits=commits,
            ids=ids,
            secret_key=store.secret_key,
            max_users_per_request=max_users_per_request,
            revoke_access=self.sessions.revoke_access,
            coverage_changed=self.sessions.coverage_changed,
        )
        self.accounts = Accounts(
            state,
            store=store,
            scheduler=scheduler,
            clock=clock,
            commits=commits,
            ids=ids,
            set_guest_defaults=self.access.set_guest_defaults,
            product_changed=self.sessions.product_changed,
            live_count=self.sessions.live_count,
        )
        self.admins = AdminKeys(
            state,
            (snapshot or Snapshot()).of(AdminKey),
            clock=clock,
            commits=commits,
            ids=ids,
        )

    @classmethod
    def restore(
        cls,
        snapshot: Snapshot,
        clock: Clock,
        store: StorePort,
        terms: Terms = DEFAULT_TERMS,
        *,
        max_users_per_request: int = 10_000,
        max_page_size: int = 1000,
        terms_before: Terms | None = None,
    ) -> Engine:
        """The engine over what the store loaded, every deadline scheduled again.
        ``terms_before``: the terms the data was served by, when this start serves
        by others: what fell due before now under them fires as it would have
        (docs/rules.md, "The numbers": a change applies from the start that makes it)."""
        engine = cls(
            clock,
            store,
            terms,
            snapshot=snapshot,
            max_users_per_request=max_users_per_request,
            max_page_size=max_page_size,
        )
        if terms_before is not None and terms_before != terms:
            now = clock.now()
            engine.sessions.lic.terms_changed(terms_before, now)
            engine.alerts.terms_changed(terms_before, now)
        engine.accounts.schedule_all()
        engine.alerts.schedule_all()
        engine.access.schedule_all()
        engine.sessions.schedule_all()
        return engine

    def resolve_user_key(self, secret: str) -> str | None:
        """The user a key belongs to (in memory; never touches SQLite)."""
        return self.directory.user_for_key_hash(hash_secret(secret))

    async def commit(self, changes: Changes) -> None:
        """Store ``changes``; return once they and every change before them are
        stored (``Commits.commit``)."""
        await self.commits.commit(changes)

    async def settled(self) -> None:
        """Return once every change already made in memory is stored."""
        await self.commits.settled()

    async def caught_up(self) -> None:
        """Fire, and store, every deadline already due: what a read calls first, so
        that it answers what stood at the clock's time. The real clock's scheduler
        fires deadlines on time, but a loop that lags may run a read first; without
        this a pack that expired 5 s ago would still count in the balance shown
        beside a forecast that already leaves it out, and a session whose lease
        ended would still be listed as live (``Scheduler.caught_up``, which the
        calls that change state call). A standby has no engine, so only the active
        server writes here."""
        changes = Changes()
        self.scheduler.caught_up(changes)
        await store_fired(self.commits, changes)

    @property
    def committing(self) -> bool:
        return self.commits.committing

    def now(self) -> datetime:
        return self.clock.now()

    async def start(self, heartbeat_flush: float = 2.0) -> None:
        """Fire what fell due while the server was down, then follow the clock;
        key the users loaded at start for search in the background."""
        changes = Changes()
        now = self.clock.now()
        self.scheduler.fire_due(now, changes)
        self.scheduler.mark(now, changes)
        await self.commit(changes)
        self.scheduler.start()
        self.sessions.start(heartbeat_flush)
        if self._indexing is None:
            self._indexing = asyncio.create_task(self._build_search_index(), name="search-index")

    async def _build_search_index(self) -> None:
        """AD4's index of the users loaded at start, a slice at a time between
        calls (a million users: seconds of work, in steps of milliseconds)."""
        while self.directory.build_search_index(SEARCH_INDEX_SLICE):
            await asyncio.sleep(0)

    async def search_indexed(self) -> None:
        """Return once the search index of the users loaded at start is built."""
        if self._indexing is not None:
            await asyncio.shield(self._indexing)

    async def stop(self) -> None:
        if self._indexing is not None:
            self._indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexing
            self._indexing = None
        await self.scheduler.stop()
        await self.sessions.stop()
        changes = Changes()
        self.scheduler.mark(self.clock.now(), changes)  # the time it stopped at
        await self.commit(changes)

    # -- the test clock (RULES §7) ---------------------------------------------

    async def advance_clock(self, to: datetime | None, by_seconds: float | None) -> datetime:
        clock = self.clock
        if not isinstance(clock, TestClock):
            raise TestClockDisabled(
                "the server is not in test-clock mode; start it with --test-clock to advance time"
            )
        now = clock.now()
        if to is None:
            if by_seconds is None:
                raise InvalidArgument.field("by", "give either by or to_time")
            if by_seconds < 0:
                raise InvalidArgument.field("by", "must not be negative: the clock never goes back")
            if by_seconds > (LATEST_TEST_CLOCK - now).total_seconds():
                raise InvalidArgument.field(
                    "by",
                    f"would move the clock past {rfc3339(LATEST_TEST_CLOCK)}, its latest time",
                )
            to = now + timedelta(seconds=by_seconds)
        elif to < now:
            raise InvalidArgument.field(
                "to_time",
                f"is before the clock's time {rfc3339(now)}: the clock never goes back",
            )
        elif to > LATEST_TEST_CLOCK:
            raise InvalidArgument.field(
                "to_time", f"is past {rfc3339(LATEST_TEST_CLOCK)}, the clock's latest time"
            )
        changes = Changes()
        if to != now:  # AD2: a move of no time changes nothing and leaves no event
            changes.upsert(MetaValue(TEST_CLOCK_KEY, to.isoformat()))
        return await self.scheduler.advance(to, changes)
