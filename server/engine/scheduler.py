"""Fires deadlines in time order, driven by either clock.

The real clock: a background task sleeps until the next deadline (or until an
earlier one is scheduled), fires everything due, and commits. The test clock:
``advance`` fires everything due on the way to the new instant, each at its
own instant, and commits once (RULES §7). Both go through ``fire_due``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from server.clock import Clock, TestClock
from server.domain.changes import Changes
from server.domain.meta import CLOCK_AT_KEY, MetaValue
from server.domain.policies import TimerSink
from server.domain.timers import TimerHeap, TimerKind
from server.store.port import StoreFailed

Handler = Callable[[str, datetime, Changes], None]
Commit = Callable[[Changes], Awaitable[None]]

log = structlog.get_logger()

#: How often the real clock's loop stores the clock's time when nothing falls due.
MARK_EVERY = timedelta(minutes=1)
#: The most deadlines the real clock's loop fires in one turn of the event loop. A
#: herd due at one instant (10,000 invitations sent in one call expire together,
#: A2) held the loop, and every call on it, for 48-101 ms in one turn; they are fired
#: and committed a thousand at a time, calls running between.
FIRE_TURN = 1_000


class Scheduler:
    def __init__(self, clock: Clock, commit: Commit) -> None:
        self.clock = clock
        self.heap = TimerHeap()
        self._handlers: dict[TimerKind, Handler] = {}
        self._after_each: list[Callable[[Changes], None]] = []
        self._commit = commit
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0
        self.fired_by_kind: Counter[TimerKind] = Counter()  # for metrics (server/metrics.py)
        #: The real clock's latest stored time (``CLOCK_AT_KEY``), None before any.
        self.clock_at: datetime | None = None

    def on(self, kind: TimerKind, handler: Handler) -> None:
        self._handlers[kind] = handler

    def after_each(self, hook: Callable[[Changes], None]) -> None:
        """Run ``hook(changes)`` after each deadline fired, while the state is the
        state at its instant: one commit may fire many (an AdvanceClock, a start, a
        lagging loop's catch-up), and a rule that judges the state as it stood (L1's
        threshold, L2's waiting pack) must not see what later deadlines made of it."""
        self._after_each.append(hook)

    @property
    def sink(self) -> TimerSink:
        """Where to schedule many deadlines at once (a restart: two million): the
        heap itself until the scheduler runs, since there is nothing to wake."""
        return self.heap if self._task is None else self

    def schedule(self, due: datetime, kind: TimerKind, key: str) -> None:
        if self._task is None:  # the test clock, or not started yet: nothing to wake
            self.heap.schedule(due, kind, key)
            return
        nxt = self.heap.next_due()
        self.heap.schedule(due, kind, key)
        if nxt is None or due < nxt:
            self._wake.set()

    def fire_due(self, until: datetime, changes: Changes, most: int | None = None) -> int:
        """Fire, in time order, every deadline at or before ``until`` (the first
        ``most`` of them, when given); how many were fired."""
        n = 0
        heap = self.heap
        handlers = self._handlers
        test_clock = self.clock if isinstance(self.clock, TestClock) else None
        by_kind = self.fired_by_kind
        after_each = self._after_each
        acted = until
        while (most is None or n < most) and (deadline := heap.pop_due(until)) is not None:
            due, kind, key = deadline
            if test_clock is not None and due > test_clock.now():
                test_clock.set(due)  # each fires at its own instant
            handlers[kind](key, due, changes)
            for hook in after_each:
                hook(changes)
            by_kind[kind] += 1
            n += 1
            acted = due
        if n and test_clock is None:  # stored with what they did: never fired again
            # All fired: the clock's time; cut short, the last one's (the rest are due).
            self.mark(until if n != most else acted, changes)
        self.fired += n
        return n

    def mark(self, now: datetime, changes: Changes, every: timedelta = timedelta(0)) -> None:
        """The real clock: store ``now`` as the clock's high-water mark (``CLOCK_AT_KEY``)
        with ``changes`` when it is past the mark stored by more than ``every``; a clock
        taken behind the mark (far behind the stored data) never lowers it."""
        if isinstance(self.clock, TestClock):
            return  # the test clock's own time is stored (TEST_CLOCK_KEY)
        if self.clock_at is None or now - self.clock_at > every:
            self.clock_at = now
            changes.upsert(MetaValue(CLOCK_AT_KEY, now.isoformat()))

    def caught_up(self, changes: Changes) -> datetime:
        """The clock's time, after firing into ``changes`` every deadline already due.
        The real clock's loop fires them on time, but a loop that lags may run a call
        first; a call that acts at the clock's time (one that ends a session, charges
        or takes access away) must find what stood then: a heartbeat a second after
        its lease ended finds the session expired at the lease's end (M7), not
        revived; EndSession or a revocation (A6) after a window closed in use finds
        it renewed (M5). What was fired is stored with the call, or alone if the
        call is refused (``audit.store_fired``)."""
        now = self.clock.now()
        self.fire_due(now, changes)
        return now

    async def advance(self, to: datetime, extra: Changes | None = None) -> datetime:
        """Test clock only: move to ``to``, firing what falls due; answer once stored."""
        if not isinstance(self.clock, TestClock):
            raise TypeError("only the test clock can be advanced")
        changes = extra if extra is not None else Changes()
        self.fire_due(to, changes)
        self.clock.set(to)
        await self._commit(changes)
        return to

    # -- the real clock's loop -------------------------------------------------

    def start(self) -> None:
        if self._task is None and not isinstance(self.clock, TestClock):
            self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            changes = Changes()
            fired = 0
            try:
                fired = self.fire_due(now, changes, FIRE_TURN)
                if fired < FIRE_TURN:
                    self.mark(now, changes, MARK_EVERY)
                if changes:
                    await self._commit(changes)
            except asyncio.CancelledError:
                raise
            except StoreFailed:
                pass  # the store's line says it (store_failed), and the server stops
            except Exception:
                log.exception("timer_failed")
            if fired == FIRE_TURN:  # more are due: the next turn, once calls have run
                await asyncio.sleep(0)
                continue
            nxt = self.heap.next_due()
            self._wake.clear()
            timeout = None if nxt is None else max(0.0, (nxt - self.clock.now()).total_seconds())
            # Wake at least every minute, so a wall clock that jumps is noticed.
            timeout = 60.0 if timeout is None else min(timeout, 60.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
