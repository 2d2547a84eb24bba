"""The real clock (``server/clock.py``): it never goes back, so no charge,
lease or ledger entry is dated before one already made (RULES §7 says the same
of the test clock, which refuses to be moved back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from server.clock import SystemClock, wall_clock

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
