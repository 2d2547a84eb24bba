"""The engine: state, clock, scheduler and store wired together."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from server.clock import Clock, TestClock
from server.credentials import hash_secret
from server.domain.changes import Changes, Deleted
from server.domain.coverage import Coverages, Subscription
from server.domain.directory import Directory, Invitation, Member, Notification, User
from server.domain.errors import InvalidArgument, TestClockDisabled
from server.domain.ledger import Hold, Ledger, TokenPack
from server.domain.meta import MetaValue
from server.domain.products import Product
from server.domain.sessions import Device, Meter, Session
from server.domain.teams import Team
from server.domain.terms import DEFAULT_TERMS, Terms
from server.engine.access import Access
from server.engine.accounts import Accounts
from server.engine.scheduler import Scheduler
from server.engine.sessions import Sessions
from server.ids import IdFactory
from server.store.port import Snapshot, StorePort

TEST_CLOCK_KEY = "test_clock_now"
# The test clock stops a year short of the last instant a Timestamp carries, so that
# every instant the rules derive from it (a pack's expiry one calendar year on, a
# lease, a window, an invitation) stays representable.
LATEST_TEST_CLOCK = datetime(9998, 12, 31, tzinfo=UTC)


class Engine:
    def __init__(
        self,
        clock: Clock,
        store: StorePort,
        terms: Terms = DEFAULT_TERMS,
        *,
        max_users_per_request: int = 10_000,
        max_page_size: int = 1000,
    ) -> None:
        self.clock = clock
        self.store = store
        self.terms = terms
        self.ids = IdFactory()
        # configuration (server/config.py)
        self.max_users_per_request = max_users_per_request
        self.max_page_size = max_page_size
        self.scheduler = Scheduler(clock, self.commit)
        self._committing = 0  # commits under way (see ``settled``)
        # Sessions and meters in commits under way, by id: how many commits (see
        # ``unsettled``).
        self._unsettled: dict[int, int] = {}
        # state
        self.teams: dict[str, Team] = {}
        self.products: dict[str, Product] = {}
        self.ledger = Ledger()
        self.holds: dict[str, Hold] = {}
        self.directory = Directory(terms.invitation_validity)
        self.coverages = Coverages()
        # use cases
        self.accounts = Accounts(self)
        self.access = Access(self)
        self.sessions = Sessions(self)
        self.sessions.register_timers()

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
    ) -> Engine:
        engine = cls(
            clock,
            store,
            terms,
            max_users_per_request=max_users_per_request,
            max_page_size=max_page_size,
        )
        for team in snapshot.of(Team):
            engine.teams[team.team_id] = team
        for product in snapshot.of(Product):
            engine.products[product.product_id] = product
        engine.ledger = Ledger.restore(
            engine.teams,
            snapshot.of(TokenPack),
            next_seq=snapshot.max_ledger_seq + 1,
            last_hash=snapshot.last_ledger_hash,
        )
        for hold in snapshot.of(Hold):
            engine.holds[hold.hold_id] = hold
        engine.directory = Directory.restore(
            snapshot.of(User),
            snapshot.of(Member),
            snapshot.of(Invitation),
            snapshot.of(Notification),
            terms.invitation_validity,
        )
        engine.coverages = Coverages.restore(snapshot.of(Subscription))
        engine.sessions.restore(
            snapshot.of(Session), snapshot.of(Meter), snapshot.of(Device), snapshot.of(Hold)
        )
        engine.accounts.schedule_all()
        engine.access.schedule_all()
        engine.sessions.schedule_all()
        return engine

    def resolve_user_key(self, secret: str) -> str | None:
        """The user a key belongs to (in memory; never touches SQLite)."""
        return self.directory.user_for_key_hash(hash_secret(secret))

    def revoke_access(
        self,
        team_id: str,
        user_id: str,
        product_ids: Collection[str] | None,
        now: datetime,
        changes: Changes,
    ) -> None:
        """A6: end the user's live sessions in the team for what they lost
        (None: everything)."""
        self.sessions.lic.revoke_access(team_id, user_id, product_ids, now, changes, self.scheduler)

    def coverage_changed(self, sub: Subscription, now: datetime, changes: Changes) -> None:
        """C1/C2: a subscription or trial was granted; running sessions follow it."""
        self.sessions.lic.coverage_changed(
            sub.user_id, sub.product_id, now, changes, self.scheduler
        )

    async def commit(self, changes: Changes) -> None:
        """Store ``changes``; return once they and every change made before them are
        stored. With nothing to store, still wait for what other calls are storing:
        an answer drawn from memory (a session a pending deadline just ended or
        charged) must not promise what a crash could undo."""
        if not changes:
            await self.settled()
            return
        self._committing += 1
        unsettled = self._unsettled
        watched = [
            id(o)
            for x in changes.items
            if type(o := x.obj if type(x) is Deleted else x) is Session or type(o) is Meter
        ]
        for key in watched:
            unsettled[key] = unsettled.get(key, 0) + 1
        try:
            await self.store.commit(changes)
        finally:
            self._committing -= 1
            for key in watched:
                if (n := unsettled[key] - 1) > 0:
                    unsettled[key] = n
                else:
                    del unsettled[key]

    async def settled(self) -> None:
        """Return once every change already made in memory is stored (at once when
        no commit is under way)."""
        if self._committing:
            await self.store.barrier()

    @property
    def committing(self) -> bool:
        return self._committing > 0

    def unsettled(self, *objs: Session | Meter | None) -> bool:
        """Whether a commit under way stores one of ``objs``. A heartbeat's answer
        tells its session and meter; a deadline that just ended or charged them
        may still be on its way to disk, and the answer must not promise what a
        crash could undo, so it waits (``settled``). Commits of other
        sessions, meters and packs do not hold it up (the team's available tokens
        in the answer are a figure of the moment, not a promise)."""
        unsettled = self._unsettled
        return bool(unsettled) and any(id(o) in unsettled for o in objs if o is not None)

    def now(self) -> datetime:
        return self.clock.now()

    async def start(self, heartbeat_flush: float = 2.0) -> None:
        """Fire what fell due while the server was down, then follow the clock."""
        changes = Changes()
        self.scheduler.fire_due(self.clock.now(), changes)
        await self.commit(changes)
        self.scheduler.start()
        self.sessions.start(heartbeat_flush)

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.sessions.stop()

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
                    f"would move the clock past {LATEST_TEST_CLOCK.isoformat()}, its latest time",
                )
            to = now + timedelta(seconds=by_seconds)
        elif to < now:
            raise InvalidArgument.field(
                "to_time",
                f"is before the clock's time {now.isoformat()}: the clock never goes back",
            )
        elif to > LATEST_TEST_CLOCK:
            raise InvalidArgument.field(
                "to_time", f"is past {LATEST_TEST_CLOCK.isoformat()}, the clock's latest time"
            )
        changes = Changes()
        changes.upsert(MetaValue(TEST_CLOCK_KEY, to.isoformat()))
        return await self.scheduler.advance(to, changes)
