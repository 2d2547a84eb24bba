"""Where the SDK gets its time: one injectable clock.

Every wait and every "how long ago" in the SDK (heartbeat intervals, the idle
threshold, the offline lease, retry backoff) goes through a ``Clock``, so that
a product's tests can drive time instead of sleeping:

- ``SystemClock`` follows real time, counting the time the machine spent
  suspended (a laptop asleep offline for 30 h finds its 24 h lease over when it
  wakes, RULES M7), and never going back: a wall clock set back lengthens no
  lease;
- ``ManualClock`` stands still until ``advance()`` moves it; sleepers whose
  deadline is reached wake up in deadline order. It is safe to advance from
  another thread than the one the sleepers run on (the sync client's loop).

Only gRPC's own per-call deadlines are real seconds: they bound a network call,
not the product's time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar, runtime_checkable

_T = TypeVar("_T")


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (return at once when not positive)."""
        ...


def wall_seconds() -> float:
    """The wall clock: seconds since the epoch (it may be set back or forward)."""
    return time.time()  # noqa: TID251 - the SDK's one read of the wall clock


def suspend_aware_seconds() -> float:
    """Seconds of a clock that never goes back and, where the system has one, goes on
    while the machine is suspended: ``CLOCK_BOOTTIME`` on Linux, ``CLOCK_MONOTONIC`` on
    macOS (there it counts sleep, unlike ``time.monotonic``); elsewhere
    ``time.monotonic`` (then the wall clock makes up for a suspend: ``SystemClock``)."""
    if sys.platform == "linux":
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    if sys.platform == "darwin":
        return time.clock_gettime(time.CLOCK_MONOTONIC)
    return time.monotonic()


class SystemClock:
    """Real time: a wall-clock instant read once, then the time elapsed since.

    The elapsed time must count a suspend (the offline lease, RULES M7: a machine asleep
    for 30 h is 30 h further on, though ``time.monotonic`` stopped meanwhile) and must
    never let the wall clock lengthen anything (a clock set back a day would give a lease
    a day more). So between two readings it moves by the larger of what a suspend-aware
    clock (``suspend_aware_seconds``) and the wall clock moved, and never backwards: a
    suspend counts whichever of the two saw it, a wall clock set back counts nothing (the
    other clock goes on), one set forward counts as time gone by (a lease ends sooner,
    never later). ``wall`` and ``suspend_aware`` are those sources (seconds, as
    ``time.time`` and ``suspend_aware_seconds``), injectable for tests. ``sleep`` is
    ``asyncio``'s: a wait at least that long (longer across a suspend).
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = wall_seconds,
        suspend_aware: Callable[[], float] = suspend_aware_seconds,
    ) -> None:
        self._wall = wall
        self._suspend_aware = suspend_aware
        self._lock = threading.Lock()  # (read from the product's threads and the SDK's)
        self._last_wall = wall()
        self._last_steady = suspend_aware()
        self._elapsed = 0.0
        self._anchor = datetime.fromtimestamp(self._last_wall, UTC)

    def elapsed(self) -> float:
        """Seconds since the clock was made, as ``now()`` counts them."""
        with self._lock:
            steady, wall = self._suspend_aware(), self._wall()
            self._elapsed += max(0.0, steady - self._last_steady, wall - self._last_wall)
            self._last_steady, self._last_wall = steady, wall
            return self._elapsed

    def now(self) -> datetime:
        return self._anchor + timedelta(seconds=self.elapsed())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware (UTC) instant")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._sleepers: list[
            tuple[datetime, int, asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = []

    def now(self) -> datetime:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for the clock to move."""
        with self._lock:
            return sum(1 for *_, fut in self._sleepers if not fut.done())

    def next_deadline(self) -> datetime | None:
        """The earliest instant a sleeper waits for, if any."""
        with self._lock:
            live = [d for d, _, _, fut in self._sleepers if not fut.done()]
        return min(live) if live else None

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (self._now + timedelta(seconds=seconds), next(self._seq), loop, fut)
        with self._lock:
            heapq.heappush(self._sleepers, entry)
        try:
            await fut
        finally:
            if not fut.done() or fut.cancelled():
                with self._lock:
                    if entry in self._sleepers:
                        self._sleepers.remove(entry)
                        heapq.heapify(self._sleepers)

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock forward and wake every sleeper now due; returns the new time."""
        span = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if span < timedelta(0):
            raise ValueError("the clock never moves backwards")
        return self.set(self._now + span)

    def set(self, instant: datetime) -> datetime:
        """Move the clock to ``instant`` (not before now) and wake the sleepers due."""
        with self._lock:
            if instant < self._now:
                raise ValueError("the clock never moves backwards")
            self._now = instant
            due = []
            while self._sleepers and self._sleepers[0][0] <= instant:
                due.append(heapq.heappop(self._sleepers))
        for _, _, loop, fut in due:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)
        return instant

    async def until_sleeping(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait (real time, briefly) until at least ``count`` sleeps are pending."""
        deadline = time.monotonic() + timeout
        while self.sleepers < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} sleepers, have {self.sleepers}")
            await asyncio.sleep(0.001)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class DeadlinePassed(TimeoutError):
    """``within``'s deadline came first: its work was cancelled."""


async def within(clock: Clock, deadline: datetime, work: Awaitable[_T]) -> _T:
    """``work``'s result, or ``DeadlinePassed`` (``work`` cancelled, and waited for) once
    ``clock`` reaches ``deadline``: ``asyncio.wait_for`` on the SDK's clock, so that a
    test's ``ManualClock`` decides when it is too late."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep((deadline - clock.now()).total_seconds()))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
        late = not task.done()
    finally:
        for pending in (timer, task):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(timer, task, return_exceptions=True)
    if late:  # (a gather cancelled ends with a CancelledError, not cancelled(): ask first)
        raise DeadlinePassed(f"not done by {deadline.isoformat()}")
    return task.result()
