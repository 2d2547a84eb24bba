"""Per-credential rate limits at the edge (issue 6, Limits).

Each credential (the admin token, or one user's key) has a token bucket
(aiolimiter's leaky bucket: ``burst`` calls at once, refilled at ``rate`` per
second). A call that finds its bucket empty is refused at once with
``RESOURCE_EXHAUSTED`` and a ``RetryInfo`` saying when one call's worth has
refilled; it never waits in the server.

A bucket that has refilled completely is worth nothing kept: it is forgotten, so
a million users cost memory only while busy. The buckets are kept least recently
used first, and each new one looks at the oldest ``FORGET_PER_NEW`` and forgets
those that are full again, stopping at the first that is not (issue 17). A sweep
of every bucket each 10,000 new ones did the same, but held the event loop for
12.5 ms each time, every 2.6 s in ``make bench``. A bucket still refilling is never
forgotten: forgetting it would give its credential a full one back.
"""

from __future__ import annotations

from collections import OrderedDict

from aiolimiter import AsyncLimiter

from server.api.errors import ResourceExhausted

#: Oldest buckets each new one looks at: more than one, so that they shrink
#: when fewer credentials are busy than before.
FORGET_PER_NEW = 2


class RateLimits:
    def __init__(self, rate: float, burst: int) -> None:
        """``rate`` calls per second per credential, ``burst`` at once; a rate of 0
        turns the limit off."""
        self.rate = rate
        self.burst = max(1, burst or int(rate * 2) or 1)
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()  # oldest use first

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def take(self, credential: str) -> None:
        """One call for ``credential`` (an identity, never the secret itself)."""
        bucket = self._buckets.get(credential)
        if bucket is None:
            bucket = self._new(credential)
        else:
            self._buckets.move_to_end(credential)
        if not bucket.has_capacity():
            raise ResourceExhausted(
                f"too many calls: at most {self.rate:g} per second with bursts of "
                f"{self.burst} per credential",
                retry_after_seconds=1.0 / self.rate,
                rate_per_second=self.rate,
                burst=self.burst,
            )
        await bucket.acquire()  # has capacity: returns at once

    def _new(self, credential: str) -> AsyncLimiter:
        buckets = self._buckets
        for _ in range(FORGET_PER_NEW):
            if not buckets:
                break
            oldest, bucket = next(iter(buckets.items()))
            if not bucket.has_capacity(self.burst):
                break  # still refilling: kept, and so are the newer ones behind it
            del buckets[oldest]
        bucket = buckets[credential] = AsyncLimiter(self.burst, self.burst / self.rate)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
