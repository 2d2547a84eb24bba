"""The engine's wiring (issue 13, point 1; STYLE "the engine is a service
locator"): each use case is built with exactly what it names, the state, the
store port, the scheduler, the clock, the group commit, its limits, and a
callable for each call into another use case, so that it runs on fakes alone,
with no Engine."""

from __future__ import annotations

import ast
import asyncio
import threading
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.clock import TestClock
from server.domain.changes import Changes
from server.domain.errors import InvalidArgument
from server.domain.ledger import LedgerEntry
from server.domain.products import Platform, Product
from server.domain.sessions import Session
from server.domain.teams import Plan
from server.domain.terms import DEFAULT_TERMS
from server.engine import access as access_module
from server.engine.access import Access
from server.engine.accounts import Accounts
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory
from server.store.port import Snapshot, UsageFacts

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


class FakeStore:
    """A ``StorePort`` in memory: what was committed, in order."""

    secret_key = b"k" * 32

    def __init__(self) -> None:
        self.committed: list[object] = []

    async def load(self) -> Snapshot:
        return Snapshot()

    async def commit(self, changes: Changes | Iterable[object]) -> None:
        self.committed.extend(changes.items if isinstance(changes, Changes) else changes)

    async def barrier(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ledger_page(
        self,
        team_id: str,
        since_seq: int,
        limit: int,
        pack_id: str = "",
        *,
        newest_first: bool = False,
    ) -> list[LedgerEntry]:
        found = [
            x
            for x in self.committed
            if isinstance(x, LedgerEntry)
            and x.team_id == team_id
            and (not pack_id or x.pack_id == pack_id)
        ]
        if newest_first:
            return [e for e in reversed(found) if not since_seq or e.seq < since_seq][:limit]
        return [e for e in found if e.seq > since_seq][:limit]

    async def ended_session(self, session_id: str) -> Session | None:
        return None

    async def usage_facts(self, team_id: str, start: datetime, end: datetime) -> UsageFacts:
        return UsageFacts()

    async def captured_since(self, team_id: str, since: datetime) -> list[int]:
        return []

    async def sessions_load_bound(self) -> str | None:
        return None


Revoked = tuple[str, str, Collection[str] | None, datetime]


class World:
    """Access and Accounts over fakes; what they asked of the sessions' side."""

    def __init__(self, max_users_per_request: int = 10_000) -> None:
        self.store = FakeStore()
        self.clock = TestClock(T0)
        self.state = State.empty(DEFAULT_TERMS)
        self.commits = Commits(self.store)
        scheduler = Scheduler(self.clock, self.commits.commit)
        self.revoked: list[Revoked] = []
        self.guest_defaults: list[tuple[str, bool]] = []
        self.product_changes: list[tuple[str, datetime]] = []
        self.access = Access(
            self.state,
            scheduler=scheduler,
            clock=self.clock,
            commits=self.commits,
            ids=IdFactory(),
            secret_key=self.store.secret_key,
            max_users_per_request=max_users_per_request,
            revoke_access=lambda team, losses, now, changes: self.revoked.extend(
                (team, user, lost, now) for user, lost in losses.items()
            ),
            coverage_changed=lambda sub, now, changes: None,
        )
        self.accounts = Accounts(
            self.state,
            store=self.store,
            scheduler=scheduler,
            clock=self.clock,
            commits=self.commits,
            ids=IdFactory(),
            set_guest_defaults=lambda team, on, now, changes: self.guest_defaults.append(
                (team, on)
            ),
            product_changed=lambda before, after, now, changes: self.product_changes.append(
                (after.product_id, now)
            ),
            live_count=lambda product_id: 0,
        )


async def test_issue13_a_use_case_runs_on_fakes_without_an_engine() -> None:
    w = World()
    team = await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    assert w.state.teams == {"acme": team}
    assert w.store.committed == [team]
    pack = await w.accounts.purchase("acme", 40, "po-1")
    assert (pack.team_id, pack.tokens) == ("acme", 40)
    entries = await w.accounts.ledger_page("acme", 0, 10)  # through the port's named read
    assert [(e.seq, e.amount) for e in entries] == [(1, 40)]


async def test_t2_the_ledger_lists_an_entry_whose_commit_is_under_way() -> None:
    """A purchase's entry is in memory (the balance counts it) while its commit is
    still being stored: a ledger page read meanwhile waits for it and lists it."""
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    stored = asyncio.Event()
    write = w.store.commit

    async def slow_commit(changes: Changes | Iterable[object]) -> None:
        await stored.wait()
        await write(changes)

    async def barrier() -> None:
        await stored.wait()

    w.store.commit = slow_commit  # type: ignore[method-assign]
    w.store.barrier = barrier  # type: ignore[method-assign]
    buying = asyncio.create_task(w.accounts.purchase("acme", 40, "po-1"))
    await asyncio.sleep(0)  # the purchase is made in memory, its commit under way
    assert w.state.ledger.available("acme") == 40
    reading = asyncio.create_task(w.accounts.ledger_page("acme", 0, 10))
    await asyncio.sleep(0)
    assert not reading.done()
    stored.set()
    await buying
    assert [(e.seq, e.amount) for e in await reading] == [(1, 40)]


async def test_a6_access_ends_sessions_through_the_callable_it_was_given() -> None:
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    await w.access.assign("acme", ["Ann <ann@x.io>"], [], True, False, import_=True)
    await w.access.unassign("acme", "ann@x.io")
    assert w.revoked == [("acme", "ann@x.io", None, T0)]


async def test_ad4_members_by_product_are_read_from_a_pages_start_and_no_further() -> None:
    """ListMembers "By Product" reads from its page's start (by user id) and stops at
    a page and one: it filtered the whole team for each page (25 ms a page of a team
    of 50,000). Members who may not run it are passed over, as invited ones are."""
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    windows = frozenset({Platform.WINDOWS})
    await w.accounts.upsert_product(Product("ACAD", "AutoCAD", 5, platforms=windows))
    await w.accounts.upsert_product(Product("REVIT", "Revit", 5, platforms=windows))
    people = [f"P{i} <p{i}@x.io>" for i in range(8)]
    await w.access.assign("acme", people, ["ACAD"], False, False, import_=True)
    await w.access.set_user_products("acme", "p2@x.io", ["REVIT"], False)
    await w.access.assign("acme", ["Ivy <ivy@x.io>"], ["ACAD"], False, False, import_=False)
    every = [m.user_id for m, _ in w.access.members_with("acme", "ACAD")]
    assert every == [f"p{i}@x.io" for i in (0, 1, 3, 4, 5, 6, 7)]  # not p2, not invited Ivy
    looked: list[str] = []
    effective = access_module.access_via
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            access_module,
            "access_via",
            lambda member, *rest: looked.append(member.user_id) or effective(member, *rest),
        )
        page = w.access.members_with("acme", "ACAD", after="p1@x.io", limit=3)
    assert [m.user_id for m, _ in page] == ["p3@x.io", "p4@x.io", "p5@x.io"]
    assert looked == ["p2@x.io", "p3@x.io", "p4@x.io", "p5@x.io"]


async def test_a5_making_a_member_a_guest_weighs_what_that_member_loses_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AssignUsers with guest set ends what a member loses (A5, A6): it worked out
    what every member of the team could run first, a second a call on a team of
    50,000. Only the members it names are weighed."""
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    people = [f"P{i} <p{i}@x.io>" for i in range(300)]
    await w.access.assign("acme", people, [], True, False, import_=True)
    weighed: list[str] = []
    effective = w.access.effective
    monkeypatch.setattr(
        w.access, "effective", lambda member: weighed.append(member.user_id) or effective(member)
    )
    (member,) = await w.access.assign("acme", ["p7@x.io"], [], True, True, import_=False)
    assert member.guest
    assert set(weighed) == {"p7@x.io"}


async def test_a1_assign_reads_its_entries_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each address's check costs about 90 µs: 10,000 entries (the most a request
    may name) held the event loop, and every Heartbeat, for a second. They are read
    on a thread, before the use case touches the state."""
    from server.engine import access as access_module

    read_on: list[int] = []
    check = access_module.check_user_entries

    def recorded(entries: Any) -> Any:
        read_on.append(threading.get_ident())
        return check(entries)

    monkeypatch.setattr(access_module, "check_user_entries", recorded)
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    members = await w.access.assign("acme", ["Ann <ann@x.io>"], [], True, False, import_=True)
    assert [m.user_id for m in members] == ["ann@x.io"]
    assert len(read_on) == 1 and read_on[0] != threading.get_ident()


async def test_a5_team_settings_change_guest_defaults_through_the_callable() -> None:
    w = World()
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    team = await w.accounts.update_team_settings("acme", Plan.PREMIUM, True, None)
    assert team.plan is Plan.PREMIUM
    assert w.guest_defaults == [("acme", True)]


async def test_issue13_limits_are_given_at_construction() -> None:
    w = World(max_users_per_request=2)
    await w.accounts.create_team("acme", "Acme", Plan.STANDARD)
    users = ["A <a@x.io>", "B <b@x.io>", "C <c@x.io>"]
    with pytest.raises(InvalidArgument) as info:
        await w.access.assign("acme", users, [], True, False, import_=True)
    assert list(info.value.violations) == ["users"]
    assert len(await w.access.assign("acme", users[:2], [], True, False, import_=True)) == 2


@pytest.mark.parametrize("module", ["accounts", "access", "sessions", "usage", "commits", "state"])
def test_issue13_no_use_case_reaches_the_engine(module: str) -> None:
    """The use cases call each other only through what they were given: none
    imports the engine or keeps it (``self.e``)."""
    source = (ROOT / "server" / "engine" / f"{module}.py").read_text()
    tree = ast.parse(source)
    imported = {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is not None
    }
    assert "server.engine.core" not in imported and "server.engine" not in imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "Engine" not in names
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "e" not in attrs
