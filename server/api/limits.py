"""Per-credential rate limits at the edge (issue 6, Limits).

Each credential (the admin token, or one user's key) has a token bucket
(aiolimiter's leaky bucket: ``burst`` calls at once, refilled at ``rate`` per
second). A call that finds its bucket empty is refused at once with
``RESOURCE_EXHAUSTED`` and a ``RetryInfo`` saying when one call's worth has
refilled; it never waits in the server. Buckets that have refilled completely
are dropped now and then, so a million users cost memory only while busy.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from server.api.errors import ResourceExhausted

SWEEP_EVERY = 10_000  # new buckets between sweeps of the full ones


class RateLimits:
    def __init__(self, rate: float, burst: int) -> None:
        """``rate`` calls per second per credential, ``burst`` at once; a rate of 0
        turns the limit off."""
        self.rate = rate
        self.burst = max(1, burst or int(rate * 2) or 1)
        self._buckets: dict[str, AsyncLimiter] = {}
        self._created = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def take(self, credential: str) -> None:
        """One call for ``credential`` (an identity, never the secret itself)."""
        bucket = self._buckets.get(credential)
        if bucket is None:
            bucket = self._new(credential)
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
        self._created += 1
        if self._created % SWEEP_EVERY == 0:
            self._buckets = {
                k: b for k, b in self._buckets.items() if not b.has_capacity(self.burst)
            }
        bucket = self._buckets[credential] = AsyncLimiter(self.burst, self.burst / self.rate)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
