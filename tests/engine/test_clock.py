"""The real clock (``server/clock.py``): it never goes back, so no charge,
lease or ledger entry is dated before one already made (RULES §7 says the same
of the test clock, which refuses to be moved back)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from server.clock import SystemClock, wall_clock
from server.domain.changes import Changes
from server.domain.meta import CLOCK_AT_KEY, MetaValue
from server.domain.timers import TimerKind
from server.engine.scheduler import FIRE_TURN, Scheduler

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Wall:
    """The machine's clock, set by the test."""

    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def test_s7_the_real_clock_stands_still_while_the_wall_clock_is_behind_it() -> None:
    wall = Wall()
    clock = SystemClock(wall)
    assert clock.now() == T0
    wall.at = T0 + timedelta(seconds=10)
    assert clock.now() == T0 + timedelta(seconds=10)
    with capture_logs() as lines:
        wall.at = T0 - timedelta(hours=1)  # NTP steps the machine's clock back an hour
        assert clock.now() == T0 + timedelta(seconds=10)
        wall.at = T0 + timedelta(seconds=9)
        assert clock.now() == T0 + timedelta(seconds=10)
        wall.at = T0 + timedelta(seconds=11)  # caught up: it moves again
        assert clock.now() == T0 + timedelta(seconds=11)
        wall.at = T0 + timedelta(days=2)  # a step forward is followed at once
        assert clock.now() == T0 + timedelta(days=2)
    # One warning for the step, not one for every reading while it lasted.
    assert [(line["event"], line["seconds"]) for line in lines] == [
        ("wall_clock_stepped_back", 3610.0)
    ]


def test_s7_the_real_clock_reads_the_wall_clock_by_default() -> None:
    before = wall_clock()
    now = SystemClock().now()
    assert before <= now <= wall_clock()
    assert now.tzinfo is UTC


def test_s7_a_start_behind_the_stored_data_stands_at_it_until_the_wall_clock_passes_it() -> None:
    """A start's floor (``SystemClock.not_before``): the latest instant the stored
    data says something was done, which the server's time never goes back from."""
    wall = Wall()
    clock = SystemClock(wall)
    stored = T0 + timedelta(hours=1)  # the wall clock an hour behind the last entry
    with capture_logs() as lines:
        clock.not_before(stored)
        assert clock.now() == stored
        wall.at = T0 + timedelta(minutes=59)
        assert clock.now() == stored
        wall.at = stored + timedelta(seconds=1)  # passed it: followed
        assert clock.now() == stored + timedelta(seconds=1)
    assert [(line["event"], line["seconds"]) for line in lines] == [
        ("wall_clock_stepped_back", 3600.0)
    ]


def test_s7_a_start_ahead_of_the_stored_data_follows_the_wall_clock_and_says_nothing() -> None:
    wall = Wall()
    clock = SystemClock(wall)
    with capture_logs() as lines:
        clock.not_before(T0 - timedelta(days=1))
        clock.not_before(T0)  # an equal instant is not behind
        assert clock.now() == T0
    assert lines == []


async def test_a2_a_herd_due_at_one_instant_is_fired_a_turn_at_a_time_calls_between() -> None:
    """10,000 invitations sent in one call expire at one instant (A2): the real
    clock's loop fired them all in one turn of the event loop and held every call
    for 48-101 ms. It fires ``FIRE_TURN`` a turn, each turn's changes committed, and a
    call waiting on the loop runs between turns; the clock's mark stored with each
    turn is the last deadline it fired, the clock's time once none is left."""
    wall = Wall()
    commits: list[Changes] = []

    async def commit(changes: Changes) -> None:
        commits.append(changes)

    scheduler = Scheduler(SystemClock(wall), commit)
    fired: list[str] = []
    scheduler.on(TimerKind.INVITATION_EXPIRY, lambda key, due, changes: fired.append(key))
    herd = 2 * FIRE_TURN + 500
    for n in range(herd):
        scheduler.schedule(
            T0 + timedelta(seconds=n // FIRE_TURN), TimerKind.INVITATION_EXPIRY, f"i{n:05d}"
        )
    wall.at = T0 + timedelta(minutes=1)  # every one due
    seen: list[int] = []

    async def a_call() -> None:  # what the loop runs between the scheduler's turns
        while len(fired) < herd:
            seen.append(len(fired))
            await asyncio.sleep(0)

    call = asyncio.create_task(a_call())
    scheduler.start()
    try:
        await asyncio.wait_for(call, 10)
    finally:
        await scheduler.stop()
    assert fired == [f"i{n:05d}" for n in range(herd)]  # in time order, each once
    assert {FIRE_TURN, 2 * FIRE_TURN} <= set(seen)  # the call ran between the turns
    marks = [
        [m.value for m in c.items if isinstance(m, MetaValue) and m.key == CLOCK_AT_KEY]
        for c in commits
    ]
    assert marks == [
        [(T0 + timedelta(seconds=0)).isoformat()],
        [(T0 + timedelta(seconds=1)).isoformat()],
        [wall.at.isoformat()],
    ]
