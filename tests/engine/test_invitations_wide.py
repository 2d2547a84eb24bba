"""Invitations and the outbox as the data grows wide (RULES A2, A7, AD1): what a call
reads of them is its own part, not every invitation or notification the server holds.

Each test counts what a call looks at (lists that count the items read from them),
never how long it takes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.api.admin import AdminServicer
from server.api.caller import THE_OPERATOR, Caller, current_caller
from server.clock import TestClock
from server.domain import directory as directory_module
from server.domain.changes import Changes
from server.domain.directory import Notification, NotificationKind
from server.domain.products import Platform, Product
from server.domain.teams import Plan
from server.engine import Engine
from server.store.sqlite import Store
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import common_pb2
from tests.engine.counting import CountingList

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


#: The outbox's lists as ``counted`` left them, counting what is read of them.
WATCHED: list[CountingList] = []


def looked() -> int:
    """The notifications read from the outbox and its indexes since the last reset."""
    return sum(box.read for box in WATCHED)


def reset_reads() -> None:
    for box in WATCHED:
        box.read = 0


def counted(engine: Engine) -> None:
    """The outbox and its indexes as lists that count what is read of them."""
    d: Any = engine.directory
    WATCHED.clear()
    d._outbox = CountingList(d._outbox)
    WATCHED.append(d._outbox)
    for index in (d._outbox_of_team, d._outbox_of_user, d._outbox_of_kind, d._outbox_of_team_kind):
        for key, box in index.items():
            index[key] = CountingList(box)
            WATCHED.append(index[key])


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    """alpha invites 300 people, beta and gamma two each; ACAD on the rate sheet."""
    engine = Engine(TestClock(T0), await Store.open(tmp_path / "t.db"))
    await engine.start(heartbeat_flush=0)
    await engine.accounts.upsert_product(
        Product("ACAD", "AutoCAD", 5, platforms=frozenset({Platform.WINDOWS}))
    )
    for team_id in ("alpha", "beta", "gamma"):
        await engine.accounts.create_team(team_id, team_id.title(), Plan.STANDARD)
    people = [f"P {i} <p{i:03d}@x.io>" for i in range(300)]
    await engine.access.assign("alpha", people[:150], ["ACAD"], False, None, import_=False)
    await engine.access.assign("beta", people[:2], ["ACAD"], False, None, import_=False)
    await engine.access.assign("alpha", people[150:], ["ACAD"], False, None, import_=False)
    await engine.access.assign("gamma", people[-2:], ["ACAD"], False, None, import_=False)
    try:
        yield engine
    finally:
        await engine.stop()
        await engine.store.close()


async def pages(
    engine: Engine, caller: Caller, page_size: int, **query: Any
) -> tuple[list[list[str]], int]:
    """Every page of ListNotifications for ``caller`` (ids), and the most items a
    page's call read of the outbox and its indexes."""
    servicer = AdminServicer(engine)
    request = api.ListNotificationsRequest(page_size=page_size, **query)
    found: list[list[str]] = []
    most = 0
    reset = current_caller.set(caller)
    try:
        while True:
            reset_reads()
            answer = await servicer.ListNotifications(request, None)
            most = max(most, looked())
            found.append([n.notification_id for n in answer.notifications])
            if not answer.next_page_token:
                return found, most
            request.page_token = answer.next_page_token
    finally:
        current_caller.reset(reset)


def flat(found: list[list[str]]) -> list[str]:
    return [notification_id for page in found for notification_id in page]


def ids(notes: list[Notification]) -> list[str]:
    return [n.notification_id for n in notes]


async def test_a7_a_page_of_the_outbox_is_read_from_its_start_not_the_whole_outbox(
    engine: Engine,
) -> None:
    """A page of ListNotifications reads the outbox (or its team's, its user's list)
    from where the page starts, a page and one: each page copied the whole outbox,
    which grows with every invitation and resend ever sent (100,000 invitations:
    1.9 ms a page, whichever page)."""
    everything = ids(engine.access.notifications("", ""))
    alphas = ids(engine.access.notifications("alpha", ""))
    p1s = ids(engine.access.notifications("", "p001@x.io"))
    p1_in_beta = ids(engine.access.notifications("beta", "p001@x.io"))
    assert (len(everything), len(alphas), len(p1s), len(p1_in_beta)) == (304, 300, 2, 1)
    counted(engine)
    found, most = await pages(engine, THE_OPERATOR, 10)
    assert flat(found) == everything
    assert len(found) == 31
    # A page and one, and the few bisect looks at to find where it starts.
    assert most <= 11 + 2 * 9, most
    found, most = await pages(engine, THE_OPERATOR, 10, team_id="alpha")
    assert flat(found) == alphas
    assert most <= 11 + 2 * 9, most
    found, most = await pages(engine, THE_OPERATOR, 1, user_id="p001@x.io")
    assert flat(found) == p1s
    found, most = await pages(engine, THE_OPERATOR, 10, team_id="beta", user_id="p001@x.io")
    assert flat(found) == p1_in_beta
    assert most <= 4, most  # beta's two, not alpha's 300 nor the outbox


async def test_ad1_a_team_administrators_outbox_page_reads_its_own_teams_lists(
    engine: Engine,
) -> None:
    """A team administrator who names no team is shown its teams' notifications: each
    page is read from those teams' own lists, merged by id, not by filtering the
    whole outbox for every page (3.9 ms a page at 100,000 invitations in other
    teams)."""
    everything = engine.access.notifications("", "")
    theirs = [n.notification_id for n in everything if n.team_id in {"beta", "gamma"}]
    assert len(theirs) == 4
    counted(engine)
    admin = Caller("ak_1", "Beta and Gamma", frozenset({"beta", "gamma"}))
    found, most = await pages(engine, admin, 3)
    assert flat(found) == theirs
    assert most <= 8, most  # their four and bisect's looks, not the outbox's 304
    found, most = await pages(engine, Caller("ak_2", "Beta", frozenset({"beta"})), 100)
    assert found == [[n for n in theirs if n in ids(engine.access.notifications("beta", ""))]]
    assert most <= 3, most
    # A team it does not manage, named: nothing of it (the edge refuses it first).
    found, most = await pages(engine, admin, 100, team_id="alpha")
    assert (found, most) == ([[]], 0)


async def test_l1_l3_a_page_of_a_teams_alerts_reads_its_alerts_not_its_invitations(
    engine: Engine,
) -> None:
    """The portal's overview shows a team's latest alerts: ListNotifications of those
    kinds, newest first, reads the team's lists of those kinds from the page's start,
    not its outbox (alpha's 300 invitations; a team of 10,000 was 101 calls of 100
    for the overview, reading every invitation)."""
    for _ in range(3):  # three days' first refusals for tokens (L3)
        engine.alerts.tokens_exhausted("alpha", "p001@x.io", "ACAD", engine.now(), Changes())
        engine.clock.set(engine.now() + timedelta(days=1))
    exhausted = [
        n.notification_id
        for n in engine.access.notifications("alpha", "")
        if n.kind is NotificationKind.TOKENS_EXHAUSTED
    ]
    assert len(exhausted) == 3
    counted(engine)
    kinds = [
        common_pb2.NOTIFICATION_KIND_LOW_BALANCE,
        common_pb2.NOTIFICATION_KIND_TOKENS_EXHAUSTED,
    ]
    found, most = await pages(
        engine, THE_OPERATOR, 2, team_id="alpha", kinds=kinds, order_by="time desc"
    )
    assert found == [exhausted[:0:-1], exhausted[:1]]
    assert most <= 3, most  # a page and one of the alerts, not 300 invitations
    found, most = await pages(engine, THE_OPERATOR, 50, kinds=kinds)  # every team's
    assert (flat(found), most) == (exhausted, 3)


class CountingFew(tuple[Any, ...]):
    """A user's memberships as ``few`` gives them, counting the ones looked at."""

    looked = 0

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            CountingFew.looked += 1
            yield item


async def test_a1_a2_a_membership_is_found_by_its_team_not_among_the_users_every_team(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call naming a user in a team (GetMember, a resend, an assignment) and each
    INVITATION notification of an outbox page (whose token is remade only while it is
    its invitation's current one, A2) finds the membership by the team's index: it
    was looked for among the user's memberships, a walk of 500 for a user invited to
    500 teams (13 µs each; a page of their 100 notifications, 1.46 ms)."""
    teams = [f"t{i:02d}" for i in range(40)]
    for team_id in teams:
        await engine.accounts.create_team(team_id, team_id, Plan.STANDARD)
        await engine.access.assign(
            team_id, ["Wide <wide@x.io>"], ["ACAD"], False, None, import_=False
        )
    few = directory_module.few
    monkeypatch.setattr(directory_module, "few", lambda found: CountingFew(few(found)))
    CountingFew.looked = 0
    member = engine.access.member("t39", "wide@x.io")
    assert (member.team_id, CountingFew.looked) == ("t39", 0)
    assert engine.directory.is_member("t39", "wide@x.io")
    assert not engine.directory.is_member("alpha", "wide@x.io")
    assert CountingFew.looked == 0
    notes = engine.access.notifications("", "wide@x.io")
    tokens = engine.access.with_tokens(notes)
    assert len(tokens) == 40 and all(n.invitation_token for n in tokens)
    assert CountingFew.looked == 0
    _, token = await engine.access.resend_invitation("t39", "wide@x.io")
    assert CountingFew.looked == 0
    # The resend made t39's first token worthless; the others still stand.
    again = engine.access.with_tokens(engine.access.notifications("", "wide@x.io"))
    assert [n.invitation_token for n in again][-1] == token
    assert again[39].invitation_token == ""
    assert [n.invitation_token for n in again[:39]] == [n.invitation_token for n in tokens[:39]]
