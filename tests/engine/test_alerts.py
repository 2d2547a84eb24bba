"""The alerts' wiring (server/engine/alerts.py) on fakes: L2's warning that fell
due while the server was down fires at start at its own instant, and once; L1's
hook looks at nothing of a commit when no balance changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from server.clock import TestClock
from server.domain.changes import Changes
from server.domain.directory import Notification, NotificationKind
from server.domain.ledger import Cause
from server.domain.teams import Plan, Team
from server.domain.terms import DEFAULT_TERMS
from server.engine.alerts import Alerts
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory
from tests.engine.test_wiring import FakeStore

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
