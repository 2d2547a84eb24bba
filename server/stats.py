"""Plain counts that the server keeps for its metrics (issue 16).

The store's writer, the heartbeat flush and the edge count what they do in
these objects: an int or two and a bucket index, no lock and no library, on the
event loop's thread. ``server/metrics.py`` reads them when Prometheus scrapes
(on the same thread), so the hot path never pays for a metrics library.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Seconds: from half a millisecond (a commit of a few rows, a cheap call) to 10 s.
SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Objects in one heartbeat flush or rows in one commit.
SIZES = (1, 10, 100, 1_000, 10_000, 100_000)


class Distribution:
    """Observations counted into fixed buckets, with their sum (a Prometheus
    histogram's data: ``counts[i]`` holds those at most ``bounds[i]`` and above
    the bound before it; the last count, those above every bound)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = SECONDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations at most le)`` per bound, then ``+Inf``: Prometheus's buckets."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class Batches:
    """Batches written: how many, how big (objects or rows) and how long each took."""

    __slots__ = ("seconds", "sizes")

    def __init__(self) -> None:
        self.sizes = Distribution(SIZES)
        self.seconds = Distribution(SECONDS)

    def observe(self, size: int, seconds: float) -> None:
        self.sizes.observe(size)
        self.seconds.observe(seconds)
