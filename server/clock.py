"""The server's one clock: the only module that reads the wall clock.

``SystemClock`` follows real time. ``TestClock`` (RULES §7) starts at a given
instant and moves only when an operator advances it. Both only *tell* the
time: firing what falls due is the scheduler's job (``server/engine/scheduler.py``),
driven the same way by either clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    @property
    def is_test(self) -> bool: ...

    def now(self) -> datetime: ...


class SystemClock:
    is_test = False

    def now(self) -> datetime:
        return datetime.now(UTC)


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
