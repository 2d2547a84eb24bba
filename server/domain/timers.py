"""One heap for every deadline (RULES §7).

Each deadline is ``(due, seq, kind, key)``: what falls due, in time order and,
at the same instant, in the order it was scheduled. Nothing is ever removed
from the middle: a handler checks, when its deadline pops, whether the thing
it was set for still stands (the session's lease still ends then, the pack is
not yet expired...) and otherwise does nothing. So scheduling is O(log n),
firing costs O(log n) per deadline that falls due, and nothing scans.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from enum import IntEnum


class TimerKind(IntEnum):
    PACK_EXPIRY = 1
    INVITATION_EXPIRY = 2
    GRACE_END = 3
    WINDOW_END = 4
    IDLE = 5
    LEASE_END = 6
    COVERAGE_CHANGE = 7


Deadline = tuple[datetime, int, TimerKind, str]


class TimerHeap:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = 0

    def schedule(self, due: datetime, kind: TimerKind, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, kind, key))

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: datetime) -> Deadline | None:
        """The earliest deadline at or before ``until``, removed; else None."""
        if self._heap and self._heap[0][0] <= until:
            return heapq.heappop(self._heap)
        return None

    def __len__(self) -> int:
        return len(self._heap)
