"""One store of every deadline (RULES §7).

Each deadline is ``(due, kind, key)``: what falls due, in time order and, at
the same instant, by kind (the order of ``TimerKind``) then key. That order
depends on nothing but the deadlines themselves, so a server that restarts
and schedules them again fires them in the same order. Nothing is ever
removed from the middle: a handler checks, when its deadline pops, whether
the thing it was set for still stands (the session's lease still ends then,
the pack is not yet expired...) and otherwise does nothing. So scheduling is
O(1), firing O(log n) per deadline that falls due, and nothing scans.

Memory: at a million live sessions there are two million deadlines or more
(each session's idle or lease end, each meter's grace or window end). A heap
of ``(due, kind, key)`` tuples costs 72 bytes an entry (the tuple and its slot
in the list). So deadlines wait in *buckets*, one per ``SPAN`` (16) seconds of due
instants, as flat lists ``[earliest, due, kind, key, due, kind, key, ...]``:
three pointers an entry, about 27 bytes with the list's growth, to objects the
caller already holds (the session's ``due``, its id; ``kind`` is a plain int).
A small heap orders the buckets. When deadlines of a bucket fall due, the
bucket is *opened*: its entries become tuples in a heap of their own (at most
one bucket's worth at a time), which gives the exact order above within it; a
deadline scheduled into the open bucket's span, or earlier, joins that heap.
The span trades the buckets' own cost (about 140 bytes each: a list, a dict
entry, an int) against the tuples of an opened bucket: 16 seconds keeps a day
of sparse deadlines near 3 pointers each, and an opened bucket of a million
sessions' idle deadlines (spread over 15 minutes) near 18,000 tuples.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import IntEnum

from server.domain.instants import EPOCH


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
# A bucket: [earliest due, due, kind, key, due, kind, key, ...]
_Bucket = list[datetime | int | str]
SPAN = 16  # seconds of due instants per bucket
_SPAN = timedelta(seconds=SPAN)


class TimerHeap:
    """Deadlines in buckets of ``SPAN`` seconds (see the module's docstring). Entries
    hold a datetime, a plain int and a string: nothing the garbage collector
    follows, where a ``TimerKind`` member (an object it tracks) would make
    every full pass walk them all."""

    __slots__ = ("_buckets", "_count", "_open", "_open_span", "_spans")

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._spans: list[int] = []  # a heap of the buckets' numbers
        self._open: list[tuple[datetime, int, str]] = []  # the opened bucket, a heap
        self._open_span: int | None = None  # its number, while it holds anything
        self._count = 0

    def schedule(self, due: datetime, kind: TimerKind, key: str) -> None:
        self._count += 1
        span = (due - EPOCH) // _SPAN  # the bucket's number
        opened = self._open_span
        if opened is not None and span <= opened:
            heapq.heappush(self._open, (due, kind._value_, key))
            return
        bucket = self._buckets.get(span)
        if bucket is None:
            self._buckets[span] = [due, due, kind._value_, key]
            heapq.heappush(self._spans, span)
            return
        if due < bucket[0]:  # type: ignore[operator]
            bucket[0] = due
        bucket += (due, kind._value_, key)

    def next_due(self) -> datetime | None:
        if self._open:
            return self._open[0][0]
        if self._spans:
            return self._buckets[self._spans[0]][0]  # type: ignore[return-value]
        return None

    def pop_due(self, until: datetime) -> Deadline | None:
        """The earliest deadline at or before ``until``, removed; else None."""
        heap = self._open
        if not heap:
            spans = self._spans
            if not spans or self._buckets[spans[0]][0] > until:  # type: ignore[operator]
                return None
            self._open_bucket(heapq.heappop(spans))
        if heap[0][0] > until:
            return None
        due, kind, key = heapq.heappop(heap)
        self._count -= 1
        if not heap:
            self._open_span = None
        return due, _KINDS[kind], key

    def _open_bucket(self, span: int) -> None:
        flat = self._buckets.pop(span)
        it = iter(flat)
        next(it)  # the earliest due
        self._open[:] = zip(it, it, it, strict=True)  # type: ignore[arg-type]
        heapq.heapify(self._open)
        self._open_span = span

    def pending(self) -> Iterator[Deadline]:
        """Every outstanding deadline, in no particular order (for checks and tests)."""
        for due, kind, key in self._open:
            yield due, _KINDS[kind], key
        for flat in self._buckets.values():
            for i in range(1, len(flat), 3):
                yield flat[i], _KINDS[flat[i + 1]], flat[i + 2]  # type: ignore[misc, index]

    def container_bytes(self) -> int:
        """What the store itself takes beyond the objects entries point to:
        its lists, dict and heap of bucket numbers (for the memory benchmark)."""
        return (
            sys.getsizeof(self._buckets)
            + sys.getsizeof(self._spans)
            + sys.getsizeof(self._open)
            + sum(sys.getsizeof(b) for b in self._buckets.values())
            + sum(sys.getsizeof(t) for t in self._open)
            + 32 * len(self._spans)  # the buckets' numbers, ints past the small-int cache
        )

    def __len__(self) -> int:
        return self._count
