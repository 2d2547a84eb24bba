"""Scraping a test server's ``/metrics`` as Prometheus would (issue 16)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerThread

# (sample name, its labels as a sorted tuple of pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(srv: ServerThread, path: str = "/metrics") -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the server's metrics port."""
    url = f"http://127.0.0.1:{srv.server.metrics_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(srv: ServerThread) -> Samples:
    status, _, text = fetch(srv)
    assert status == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus treats a missing series in a sum)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}
