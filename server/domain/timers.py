"""One heap for every deadline (RULES §7).

Each deadline is ``(due, kind, key)``: what falls due, in time order and, at
the same instant, by kind (the order of ``TimerKind``) then key. That order
depends on nothing but the deadlines themselves, so a server that restarts
and schedules them again fires them in the same order. Nothing is ever
removed from the middle: a handler checks, when its deadline pops, whether
the thing it was set for still stands (the session's lease still ends then,
the pack is not yet expired...) and otherwise does nothing. So scheduling is
O(log n), firing costs O(log n) per deadline that falls due, and nothing
scans.

Memory: at a million live sessions the heap holds a million entries or more.
An entry is one 3-tuple (64 bytes) and its slot in the list; ``due`` and
``key`` are the objects the caller already holds (the session's ``due``, its
id), so they cost nothing more, and ``kind`` is stored as a plain int (see
``TimerHeap``). A sequence number to keep scheduling order at
equal instants would cost an int (32 bytes) and a wider tuple (80) per entry.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
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
    PACK_WARNING = 8  # L2: last at its instant, after the changes due then


Deadline = tuple[datetime, TimerKind, str]
_KINDS: dict[int, TimerKind] = {int(kind): kind for kind in TimerKind}


class TimerHeap:
    """The heap holds ``(due, int(kind), key)``: a tuple of a datetime, a plain
    int and a string refers to nothing the garbage collector follows, so the
    collector stops tracking it after its first pass; with the ``TimerKind``
    member (an object the collector tracks) in it, every full pass would walk
    every entry again, a million or more."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []

    def schedule(self, due: datetime, kind: TimerKind, key: str) -> None:
        heapq.heappush(self._heap, (due, kind._value_, key))

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: datetime) -> Deadline | None:
        """The earliest deadline at or before ``until``, removed; else None."""
        heap = self._heap
        if heap and heap[0][0] <= until:
            due, kind, key = heapq.heappop(heap)
            return due, _KINDS[kind], key
        return None

    def pending(self) -> Iterator[Deadline]:
        """Every outstanding deadline, in no particular order (for checks and tests)."""
        return ((due, _KINDS[kind], key) for due, kind, key in self._heap)

    def __len__(self) -> int:
        return len(self._heap)
