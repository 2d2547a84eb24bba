"""``make bench``'s store line (``benchmarks.bench.store_summary``): read from a
scrape, it tells the transactions that waited for the database's sync from those
that waited for the server (issue 17, docs/performance-log.md stop 20)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from benchmarks.bench import COMMIT_HISTOGRAMS, store_summary
from server.metrics import _histogram
from server.stats import Distribution


class _Commits(Collector):
    """The two histograms as the server exposes them (``server/metrics.py``)."""

    def __init__(self, transactions: list[float], syncs: list[float]) -> None:
        self.dists = {name: Distribution() for name in COMMIT_HISTOGRAMS}
        for d, seconds in zip(self.dists.values(), (transactions, syncs), strict=True):
            for s in seconds:
                d.observe(s)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for name, d in self.dists.items():
            yield _histogram(name, name, d)


def _scrape(transactions: list[float], syncs: list[float]) -> str:
    registry = CollectorRegistry()
    registry.register(_Commits(transactions, syncs))
    return generate_latest(registry).decode()


def test_bench_store_summary_counts_slow_transactions_and_slow_commits_apart() -> None:
    # Four transactions: two over 0.1 s, and of those only one whose COMMIT was.
    text = _scrape([0.02, 0.05, 0.3, 0.6], [0.001, 0.002, 0.25, 0.003])
    assert store_summary(text) == (
        "store: 4 transactions, 0.97 s in all, 0.26 s of it in COMMIT; "
        "over 0.1 s: 2 transactions, 1 COMMITs (the database's sync)"
    )


def test_bench_store_summary_says_so_when_the_scrape_has_no_commits() -> None:
    assert store_summary("# nothing here\n") == "store: no commit histograms in the scrape"
