"""The alerts' wiring (server/engine/alerts.py) on fakes: L2's warning that fell
due while the server was down fires at start at its own instant, and once; L1's
hook looks at nothing of a commit when no balance changed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any, cast

import pytest

from server.api import paging
from server.clock import TestClock
from server.domain.changes import Changes
from server.domain.directory import Notification, NotificationKind
from server.domain.ledger import Cause, TokenPack
from server.domain.products import Platform, Product
from server.domain.teams import Plan, Team
from server.domain.terms import DEFAULT_TERMS
from server.engine import Engine
from server.engine.alerts import Alerts
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory
from server.store.sqlite import Store
from tests.engine.counting import CountingList
from tests.engine.test_wiring import FakeStore
from tests.support import entitle_on_engine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WARNING = datetime(2026, 12, 2, tzinfo=UTC)  # a T0 pack's expiry, 2027-01-01, minus 30 days


def started(state: State, now: datetime) -> tuple[Alerts, Scheduler]:
    """Alerts over ``state`` as a server starting at ``now`` builds them, with what
    fell due while it was down fired (``Engine.start``)."""
    store = FakeStore()
    commits = Commits(store)
    scheduler = Scheduler(TestClock(now), commits.commit)
    alerts = Alerts(state, scheduler=scheduler, commits=commits, ids=IdFactory())
    alerts.schedule_all()
    return alerts, scheduler


def acme_with_a_pack(tokens: int) -> State:
    state = State.empty(DEFAULT_TERMS)
    state.teams["acme"] = Team("acme", "Acme", Plan.STANDARD, T0)
    state.ledger.add_team("acme")
    state.ledger.purchase("acme", tokens, "po-1", T0, lambda: "pk-1", Changes())
    return state


def expiring(state: State) -> list[Notification]:
    notes = state.directory.list_notifications("acme")
    return [n for n in notes if n.kind is NotificationKind.PACK_EXPIRING]


def test_l2_a_warning_due_while_down_fires_at_start_at_its_own_instant_once() -> None:
    state = acme_with_a_pack(40)
    _, scheduler = started(state, WARNING + timedelta(days=3))
    changes = Changes()
    scheduler.fire_due(WARNING + timedelta(days=3), changes)
    [note] = expiring(state)
    assert (note.create_time, note.pack_id, note.tokens) == (WARNING, "pk-1", 40)
    assert note in changes.items  # stored with what else fired at start

    # The next start reads it back from the notifications and schedules nothing.
    _, again = started(state, WARNING + timedelta(days=4))
    assert list(again.heap.pending()) == []


def test_l2_a_pack_with_nothing_left_is_not_scheduled() -> None:
    state = acme_with_a_pack(10)
    hold = state.ledger.hold("acme", 10, Cause(), T0, "hd-1", Changes())
    state.ledger.capture(hold, T0, Changes())
    _, scheduler = started(state, T0)
    assert list(scheduler.heap.pending()) == []


def test_l1_the_hook_looks_at_nothing_of_a_commit_when_no_balance_changed() -> None:
    state = acme_with_a_pack(10)
    alerts, _ = started(state, T0)
    state.ledger.take_balances()  # what came before
    untouchable = cast(Changes, object())  # any use of it would raise
    alerts._balances_changed(untouchable)


async def _warned_across_a_stop(db: Path, restart: bool) -> list[tuple[str, int, datetime]]:
    """Pack P (30) of team wt, Ann on ACAD (idle-aware) and Bo on REVIT, 10 a day
    each. Between 23:50 and 00:40: Ann's renewal holds P's last 10 (23:59), P's
    warning instant passes (00:00: all held, it waits), Ann goes idle and the hold
    goes back (00:02), Bo's renewal holds P's 10 again (00:30) and captures them
    (00:35). Fired stepwise on a running server, or all at a start."""
    windows = frozenset({Platform.WINDOWS})
    clock = TestClock(T0)
    store = await Store.open(db)
    e = Engine(clock, store)
    await e.start(heartbeat_flush=0)

    await e.accounts.create_team("wt", "Wt", Plan.STANDARD)
    pack = await e.accounts.purchase("wt", 30, "p-1")
    await e.accounts.upsert_product(
        Product("ACAD", "AutoCAD", 10, idle_aware=True, platforms=windows)
    )
    await e.accounts.upsert_product(Product("REVIT", "Revit", 10, platforms=windows))
    people = ["Ann <ann@x.com>", "Bo <bo@x.com>"]
    await e.access.assign("wt", people, [], True, False, import_=True)
    await e.advance_clock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC), None)
    ann = await entitle_on_engine(e, "ann@x.com", "ACAD")
    await e.advance_clock(datetime(2026, 12, 1, 0, 30, tzinfo=UTC), None)
    bo = await entitle_on_engine(e, "bo@x.com", "REVIT")
    await e.advance_clock(datetime(2026, 12, 1, 23, 47, tzinfo=UTC), None)
    await e.sessions.heartbeat("ann@x.com", ann, 0)  # idle at 2026-12-02T00:02
    await e.sessions.heartbeat("bo@x.com", bo, 0)
    await e.advance_clock(datetime(2026, 12, 1, 23, 50, tzinfo=UTC), None)
    end = datetime(2026, 12, 2, 0, 40, tzinfo=UTC)
    if restart:
        await e.stop()
        await store.close()
        store = await Store.open(db)
        e = Engine.restore(await store.load(), TestClock(end), store)
        await e.start(heartbeat_flush=0)  # fires 23:59, 00:00, 00:02, 00:30, 00:35
    else:
        await e.advance_clock(datetime(2026, 12, 2, 0, 10, tzinfo=UTC), None)
        await e.advance_clock(end, None)
    try:
        notes = e.access.notifications("wt", "")
        return [
            (n.pack_id, n.tokens, n.create_time)
            for n in notes
            if n.kind is NotificationKind.PACK_EXPIRING and n.pack_id == pack.pack_id
        ]
    finally:
        await e.stop()
        await store.close()


@pytest.mark.parametrize("restart", [False, True], ids=["running", "start"])
async def test_l2_a_start_warns_a_waiting_pack_at_the_release_as_a_running_server_does(
    tmp_path: Path, restart: bool
) -> None:
    [(_, tokens, when)] = await _warned_across_a_stop(tmp_path / "t.db", restart)
    assert (tokens, when) == (10, datetime(2026, 12, 2, 0, 2, tzinfo=UTC))


class CountingPacks(dict[str, TokenPack]):
    """The ledger's packs, counting the packs the alerts look up."""

    looked_up = 0

    def get(self, pack_id: str, default: object = None) -> Any:
        self.looked_up += 1
        return super().get(pack_id, default)


def test_l2_a_balance_change_looks_at_the_waiting_packs_of_its_own_team_only() -> None:
    """100 teams' packs wait, all their tokens held at their warning instant. A
    purchase in one team looks at that team's waiting pack, not at all 100 (every
    Entitle's hold, every release and every deadline fired that changed a balance
    walked them all: 2 ms a commit at 10,000 waiting packs, and a herd of 4,000
    expiries with 4,000 packs waiting 1.03 s); a release in another team gives its
    pack tokens back and warns it then, and the others wait on."""
    state = State.empty(DEFAULT_TERMS)
    holds = {}
    for i in range(100):
        team_id = f"t{i:03d}"
        state.teams[team_id] = Team(team_id, team_id, Plan.STANDARD, T0)
        state.ledger.add_team(team_id)
        state.ledger.purchase(team_id, 10, f"po-{i}", T0, lambda i=i: f"pk-{i:03d}", Changes())
        holds[team_id] = state.ledger.hold(team_id, 10, Cause(), T0, f"hd-{i}", Changes())
    alerts, scheduler = started(state, T0)
    state.ledger.take_balances()  # what came before
    scheduler.fire_due(WARNING, Changes())
    assert expiring_of(state) == []  # all 100 wait

    packs = CountingPacks(state.ledger.packs)
    state.ledger.packs = packs
    later = WARNING + timedelta(hours=1)
    state.ledger.purchase("t007", 5, "po-more", later, lambda: "pk-more", Changes())
    alerts._balances_changed(Changes())
    assert packs.looked_up == 1  # t007's pack (still all held: it waits on); was 100

    packs.looked_up = 0
    state.ledger.release(holds["t042"], later, Changes())
    alerts._balances_changed(Changes())
    assert packs.looked_up == 1
    [note] = expiring_of(state)
    assert (note.team_id, note.pack_id, note.tokens, note.create_time) == (
        "t042",
        "pk-042",
        10,
        later,
    )


def expiring_of(state: State) -> list[Notification]:
    notes = state.directory.list_notifications()
    return [n for n in notes if n.kind is NotificationKind.PACK_EXPIRING]


def _outbox_of_three_teams(per_team: int) -> tuple[Engine, dict[str, CountingList]]:
    """Teams a, b and c with ``per_team`` LOW_BALANCE alerts each, interleaved; the
    outbox's indexes counting what is read from them."""
    e = Engine(TestClock(T0), FakeStore())
    directory = e.state.directory
    for team_id in "abc":
        e.state.teams[team_id] = Team(team_id, team_id, Plan.STANDARD, T0)
    for i in range(3 * per_team):
        team_id = "abc"[i % 3]
        when = T0 + timedelta(seconds=i)
        note = Notification(f"ntf-{i:06d}", team_id, "", "", NotificationKind.LOW_BALANCE, when)
        directory.queue(note, Changes())
    boxes = {t: CountingList(directory._outbox_of_team[t]) for t in "abc"}
    boxes[""] = CountingList(directory._outbox)
    directory._outbox_of_team.update((t, boxes[t]) for t in "abc")
    directory._outbox = boxes[""]
    return e, boxes


def _page(notes: Sequence[Notification], after: str) -> list[str]:
    token = paging.encode("notifications", after)
    page, _ = paging.paginate(notes, attrgetter("notification_id"), "notifications", 10, token)
    return [n.notification_id for n in page]


def test_l1_a_page_of_a_teams_alerts_reads_the_page_not_the_teams_outbox() -> None:
    """ListNotifications of a team, a page in the middle of its 1,000 alerts: the
    page is found in the team's own index by bisection (about 10 reads) and read (a
    page and one), not copied whole first (1,000 reads a page, whatever its size:
    0.5 ms a page at 1,000 alerts, 6 ms at 400,000; a team administrator's 26 ms,
    who had them filtered again by team)."""
    e, boxes = _outbox_of_three_teams(1000)
    for visible in (None, frozenset({"b"})):
        boxes["b"].read = 0
        page = _page(e.access.notifications("b", "", visible), "ntf-001498")
        assert page == [f"ntf-{i:06d}" for i in range(1501, 1531, 3)]
        assert boxes["b"].read <= 25  # was 1,000 (the operator) and 2,000 (an administrator)
        assert boxes[""].read == 0


def test_l1_a_team_administrators_page_of_alerts_reads_its_teams_not_every_team() -> None:
    """A team administrator who names no team: the notifications of its own teams,
    not the whole outbox filtered (3,000 reads a page here, every team's; 41 ms a
    page with 800,000 notifications in the outbox, whoever's they were)."""
    e, boxes = _outbox_of_three_teams(1000)
    page = _page(e.access.notifications("", "", frozenset({"c"})), "ntf-001499")
    assert page == [f"ntf-{i:06d}" for i in range(1502, 1532, 3)]
    assert (boxes[""].read, boxes["a"].read, boxes["b"].read) == (0, 0, 0)
    assert boxes["c"].read <= 25  # was 3,000: every team's, in the whole outbox

    page = _page(e.access.notifications("", "", frozenset({"a", "c"})), "ntf-001499")
    assert page == [f"ntf-{i:06d}" for i in range(1500, 1515) if i % 3 != 1]
    assert boxes[""].read == 0 and boxes["b"].read == 0  # its two teams' only


def test_l1_a_team_alert_naming_no_user_is_kept_in_no_users_index() -> None:
    """LOW_BALANCE and PACK_EXPIRING name no user: they were also kept, every one
    for ever, in a list of user "" that nothing reads (ListNotifications asks a
    user's index only for a user named)."""
    e, _ = _outbox_of_three_teams(100)
    assert sum(map(len, e.state.directory._outbox_of_user.values())) == 0  # was 300
    assert len(e.access.notifications("a", "")) == 100
