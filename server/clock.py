"""The server's one clock: the only module that reads the wall clock.

``SystemClock`` follows real time, and never goes back: when the machine's
clock is stepped back (NTP correcting it, a virtual machine resumed), the
server's time stands still until the wall clock catches up, so nothing (a
charge, a lease, a ledger entry) is dated before what was already done, and no
grace or window is measured backwards. A step forward is followed at once.
That holds across a start too: a start (or a standby's takeover) gives the
clock the latest instant the stored data says something was done
(``not_before``; ``NamedReads.latest_instant`` in ``server/store/reads.py``),
and on a machine whose clock is behind it (by at most ``MAX_STAND_STILL``:
more is an error, and the machine's clock is taken as it is) the server's time
stands there until the wall clock passes it.
``TestClock`` (RULES §7) starts at a given instant and moves only when an
operator advances it. Both only *tell* the time: firing what falls due is the
scheduler's job (``server/engine/scheduler.py``), driven the same way by
either clock.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

log = structlog.get_logger()


class Clock(Protocol):
    @property
    def is_test(self) -> bool: ...

    def now(self) -> datetime: ...


def wall_clock() -> datetime:
    """The machine's clock as it reads now, backwards steps and all: what a log
    line's stamp says (when it was written). The server's time is ``SystemClock``'s."""
    return datetime.now(UTC)


#: The most a start's clock stands still behind the stored data (``not_before``):
#: skew between machines, a clock stepped back by NTP; more is a clock to fix.
MAX_STAND_STILL = timedelta(hours=1)


class SystemClock:
    """Real time that never goes back (the module's docstring). ``wall`` is the
    machine's clock (a fake in tests); by default ``datetime.now`` bound to UTC,
    with no Python frame between it and a reading (two readings a Heartbeat)."""

    __slots__ = ("_behind", "_last", "_wall")
    is_test = False

    def __init__(self, wall: Callable[[], datetime] | None = None) -> None:
        self._wall = wall or functools.partial(datetime.now, UTC)
        self._last = datetime.min.replace(tzinfo=UTC)
        self._behind = False  # the wall clock is behind ``_last`` (logged once)

    def now(self) -> datetime:
        now = self._wall()
        if now >= self._last:
            self._last = now
            if self._behind:
                self._behind = False
            return now
        if not self._behind:
            self._behind = True
            log.warning(
                "wall_clock_stepped_back",
                seconds=round((self._last - now).total_seconds(), 6),
                note="the server's time stands still until the wall clock catches up",
            )
        return self._last

    def not_before(self, instant: datetime) -> None:
        """Never read earlier than ``instant`` from now on: at a start, the latest
        instant the stored data says something was done, so that nothing is dated
        before it (the module's docstring). A wall clock behind it is warned of
        once, here (``wall_clock_stepped_back``, as for a step while running), and
        the server's time stands at ``instant`` until the wall clock passes it.

        Only for a skew: a wall clock more than ``MAX_STAND_STILL`` behind is a
        clock to set right (or data dated by one that was wrong), not one to wait
        for (--end-test-clock of a test clock further ahead is refused): standing
        still that long, no grace, lease or pack would end. The server then runs on
        the wall clock as it finds it, with an error at each such start."""
        if instant <= self._last:
            return
        now = self._wall()
        if instant - now > MAX_STAND_STILL:
            log.error(
                "wall_clock_far_behind_stored_data",
                seconds=round((instant - now).total_seconds(), 6),
                latest_stored=instant.isoformat(),
                note=(
                    "the server runs on the machine's clock, dating what it does before "
                    "what is stored: set the machine's clock right (NTP)"
                ),
            )
            return
        self._last = instant
        if now < instant and not self._behind:
            self._behind = True
            log.warning(
                "wall_clock_stepped_back",
                seconds=round((instant - now).total_seconds(), 6),
                latest_stored=instant.isoformat(),
                note=(
                    "the machine's clock is behind the stored data: the server's time "
                    "stands at the latest stored instant until the wall clock passes it"
                ),
            )


class TestClock:
    __test__ = False  # not a pytest class
    is_test = True

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the test clock needs an aware (UTC) instant")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        if instant < self._now:
            raise ValueError("the test clock never moves backwards")
        self._now = instant


def monotonic() -> float:
    """Seconds from an arbitrary origin, for measuring durations (logs, benchmarks)."""
    return time.perf_counter()
