"""A tiny pure driver for the licensing domain: fakes at the seams, a timer
heap fired in time order, and every change collected for inspection."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.changes import Changes, Deleted
from server.domain.errors import InvitationPending, NotAssigned
from server.domain.ledger import EntryKind, Ledger, LedgerEntry
from server.domain.licensing import Licensing
from server.domain.products import Platform, Product, ProductKind
from server.domain.sessions import ActivitySpan, Session
from server.domain.teams import Plan, Team
from server.domain.terms import DEFAULT_TERMS
from server.domain.timers import TimerHeap

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ALL = frozenset(Platform)


def products() -> dict[str, Product]:
    return {
        "ACAD": Product("ACAD", "AutoCAD", 10, platforms=ALL - {Platform.LINUX}),
        "MAYA": Product("MAYA", "Maya", 8, idle_aware=True, platforms=ALL),
        "PLUG": Product(
            "PLUG", "A plugin", 3, kind=ProductKind.PLUGIN, host_product_id="ACAD", platforms=ALL
        ),
        "FREE": Product("FREE", "Viewer", 0, platforms=ALL),
        "FPLUG": Product(
            "FPLUG",
            "Free plugin",
            0,
            kind=ProductKind.PLUGIN,
            host_product_id="MAYA",
            platforms=ALL,
        ),
    }


class FakeAccess:
    """teams_for from a table; users listed in ``pending`` have an invitation only."""

    def __init__(self) -> None:
        self.grants: dict[tuple[str, str], set[str]] = {}
        self.pending: set[str] = set()

    def grant(self, user: str, team: str, *products: str) -> None:
        for p in products:
            self.grants.setdefault((user, p), set()).add(team)

    def revoke(self, user: str, team: str, product: str) -> None:
        self.grants.get((user, product), set()).discard(team)

    def teams_for(self, user_id: str, product_id: str, now: datetime) -> list[str]:
        teams = sorted(self.grants.get((user_id, product_id), ()))
        if teams:
            return teams
        if user_id in self.pending:
            raise InvitationPending(f"{user_id} has not accepted the invitation")
        raise NotAssigned(f"{user_id} is not assigned {product_id}")


@dataclass
class FakeSub:
    user_id: str
    product_id: str
    kind: str
    start_time: datetime
    end_time: datetime


@dataclass
class FakeCoverage:
    subs: list[FakeSub] = field(default_factory=list)

    def covering(self, user_id: str, product_id: str, now: datetime) -> FakeSub | None:
        active = [
            s
            for s in self.subs
            if s.user_id == user_id
            and s.product_id == product_id
            and s.start_time <= now < s.end_time
        ]
        active.sort(key=lambda s: (s.kind != "SUBSCRIPTION", -s.end_time.timestamp()))
        return active[0] if active else None

    def next_change(self, user_id: str, product_id: str, now: datetime) -> datetime | None:
        later = [
            t
            for s in self.subs
            if s.user_id == user_id and s.product_id == product_id
            for t in (s.start_time, s.end_time)
            if t > now
        ]
        return min(later) if later else None

    def seats(self) -> set[tuple[str, str]]:
        return {(s.user_id, s.product_id) for s in self.subs}


class CountedSessions(dict[str, Session]):
    """The sessions in memory (``SessionBook._sessions``), counting those read by id,
    and refusing a walk of them all: what a read that should find its few reads."""

    reads = 0

    def __getitem__(self, session_id: str) -> Session:
        self.reads += 1
        return super().__getitem__(session_id)

    def values(self) -> Any:
        raise AssertionError("walked every session in memory")


class World:
    def __init__(self, teams: dict[str, Plan] | None = None, ledger: Ledger | None = None) -> None:
        self.now = T0
        self.ledger = ledger if ledger is not None else Ledger()
        self.teams = {
            t: Team(t, t, plan, T0) for t, plan in (teams or {"alpha": Plan.STANDARD}).items()
        }
        for t in self.teams:
            self.ledger.add_team(t)
        self.products = products()
        self.access = FakeAccess()
        self.coverage = FakeCoverage()
        self.heap = TimerHeap()
        self.items: list[object] = []  # every change, in order, as it is made
        self.last_changes: list[object] = []
        self._ids = itertools.count(1)
        self.lic = Licensing(
            ledger=self.ledger,
            products=self.products,
            teams=self.teams,
            terms=DEFAULT_TERMS,
            access=self.access,
            coverage=self.coverage,
            new_id=self.new_id,
        )

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    # -- acting ---------------------------------------------------------------

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = len(self.items)
        try:
            return fn(*args, now=self.now, changes=self.changes(), timers=self.heap, **kwargs)
        finally:
            self.last_changes = self.items[start:]

    def changes(self) -> Changes:
        """A Changes that records straight into ``items``."""
        return Changes(self.items)

    def buy(self, team: str, tokens: int) -> None:
        request_id = f"buy-{len(self.ledger.packs) + 1}"
        self.ledger.purchase(
            team, tokens, request_id, self.now, lambda: self.new_id("pk"), self.changes()
        )

    def entitle(
        self,
        user: str = "ann",
        product: str = "ACAD",
        device: str = "d1",
        *,
        version: str = "2025",
        platform: Platform = Platform.WINDOWS,
        parent: str = "",
        request_id: str = "",
        takeover: bool = False,
        team: str = "",
    ) -> Session:
        result: Session = self._run(
            self.lic.entitle,
            user,
            product,
            version,
            platform,
            device,
            parent,
            request_id,
            takeover,
            team,
        )
        return result

    def heartbeat(self, s: Session, seconds: int = 0, user: str | None = None) -> Session:
        result: Session = self._run(self.lic.heartbeat, user or s.user_id, s.session_id, seconds)
        return result

    def idle(self, s: Session) -> Session:
        result: Session = self._run(self.lic.idle, s.user_id, s.session_id)
        return result

    def release(self, s: Session, user: str | None = None) -> Session:
        result: Session = self._run(self.lic.release, user or s.user_id, s.session_id)
        return result

    def advance(self, by: timedelta | None = None, *, to: datetime | None = None) -> None:
        """Fire, in time order, every deadline up to the new instant, each at its own."""
        target = to if to is not None else self.now + (by or timedelta())
        assert target >= self.now
        while (deadline := self.heap.pop_due(target)) is not None:
            due, kind, key = deadline
            self.now = max(self.now, due)
            self.lic.on_timer(kind, key, due, self.changes(), self.heap)
        self.now = target

    def at(self, **kw: float) -> datetime:
        return T0 + timedelta(**kw)

    # -- looking ----------------------------------------------------------------

    def entries(self, kind: EntryKind | None = None) -> list[LedgerEntry]:
        return [
            i for i in self.items if isinstance(i, LedgerEntry) and (kind is None or i.kind is kind)
        ]

    def charged(self, team: str | None = None) -> int:
        return sum(e.amount for e in self.entries(EntryKind.CAPTURE) if team in (None, e.team_id))

    def held(self, team: str = "alpha") -> int:
        return self.ledger.held(team)

    def available(self, team: str = "alpha") -> int:
        return self.ledger.available(team)

    def spans(self) -> list[ActivitySpan]:
        return [i for i in self.items if isinstance(i, ActivitySpan)]

    def deleted(self) -> list[object]:
        return [i.obj for i in self.items if isinstance(i, Deleted)]
