"""Per-credential rate limits at the edge (issue 6, Limits).

Each credential (the admin token, or one user's key) has a token bucket:
``burst`` calls at once, refilled at ``rate`` per second. A call that finds its
bucket empty is refused at once with ``RESOURCE_EXHAUSTED`` and a ``RetryInfo``
saying when one call's worth has refilled; it never waits in the server.

The bucket is kept as one number, the generic cell rate algorithm's
*theoretical arrival time*: when the bucket will be full again. Each call moves
it on by ``1 / rate``; a call that would move it more than ``burst / rate``
past now finds the bucket empty. This is the same bucket, counted the other
way: no timer, no lock, no object per credential. A library was used here
before (aiolimiter's leaky bucket, made for callers that *wait* for capacity:
a loop-bound object per credential, a waiter heap, an ``async acquire``); this
server only refuses, and at 100,000 users, where almost every Heartbeat's
credential has no bucket yet, it cost 4.6-5.9 µs a call on a quiet host against
0.7-1.2 µs for this (``docs/performance-log.md``, stop 33).

A bucket that has refilled completely is worth nothing kept: it is forgotten, so
a million users cost memory only while busy. The buckets are kept least recently
used first, and each call looks at the oldest ``FORGET_PER_NEW`` and forgets
those that are full again, stopping at the first that is not (issue 17). A sweep
of every bucket each 10,000 new ones did the same, but held the event loop for
12.5 ms each time, every 2.6 s in ``make bench``. A bucket still refilling is never
forgotten: forgetting it would give its credential a full one back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from server.api.errors import ResourceExhausted
from server.clock import monotonic

#: Oldest buckets each call looks at: more than one, so that they shrink
#: when fewer credentials are busy than before.
FORGET_PER_NEW = 2


class RateLimits:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = monotonic) -> None:
        """``rate`` calls per second per credential, ``burst`` at once; a rate of 0
        turns the limit off. ``clock``: seconds, never going back."""
        self.rate = rate
        self.burst = max(1, burst or int(rate * 2) or 1)
        self._clock = clock
        self._interval = 1.0 / rate if rate > 0 else 0.0  # one call's worth
        # How far past now a bucket may be full again and still hold one call (and
        # a microsecond, so that sums of intervals rounded in floating point never
        # refuse the last call of a burst).
        self._slack = (self.burst - 1) * self._interval + 1e-6
        # When each bucket is full again, oldest use first (an OrderedDict: a plain
        # dict emptied from its front scans the holes its deletions leave).
        self._full_at: OrderedDict[str, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, credential: str) -> None:
        """One call for ``credential`` (an identity, never the secret itself), or
        ``ResourceExhausted`` when its bucket is empty."""
        now = self._clock()
        buckets = self._full_at
        full_at = buckets.get(credential)
        if full_at is None:
            self._forget_full(now)
            full_at = now
        else:
            buckets.move_to_end(credential)  # the newest use, last
            # Known credentials forget too: after a crowd has gone, the few still
            # calling would otherwise keep every bucket of it for good.
            self._forget_full(now)
            if full_at < now:
                full_at = now
        if full_at - now > self._slack:  # a refusal takes nothing
            raise ResourceExhausted(
                f"too many calls: at most {self.rate:g} per second with bursts of "
                f"{self.burst} per credential",
                retry_after_seconds=self._interval,
                rate_per_second=self.rate,
                burst=self.burst,
            )
        buckets[credential] = full_at + self._interval

    def _forget_full(self, now: float) -> None:
        buckets = self._full_at
        for _ in range(FORGET_PER_NEW):
            oldest = next(iter(buckets), None)
            if oldest is None or buckets[oldest] > now:
                break  # still refilling: kept, and so are the newer ones behind it
            del buckets[oldest]

    def __len__(self) -> int:
        return len(self._full_at)
