"""Benchmark: SearchUsers' index against a scan (RULES AD4).

Builds the in-memory user index (``server/domain/search.py``) over 100,000 users
with accented names, then times a two-letter query (about 10,000 matches) through
the index and through a scan of every user with the same matcher, and prints both
with their ratio and the index's build time. In memory only; no server.

Run: ``.venv/bin/python -m benchmarks.search_users`` (``--users N`` to change the count).
"""

from __future__ import annotations

import argparse
import time

from server.domain.search import UserIndex, matches, parse
from tests.domain.test_search import hundred_thousand_people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--query", default="zo")
    args = parser.parse_args()
    people = hundred_thousand_people(args.users)
    start = time.perf_counter()
    index = UserIndex(people)
    built = time.perf_counter() - start
    query = parse(args.query)
    start = time.perf_counter()
    found = index.find(query)
    indexed = time.perf_counter() - start
    start = time.perf_counter()
    scanned = {uid for uid, name, email in people if matches(query, name, email)}
    scan = time.perf_counter() - start
    if scanned != found:
        raise SystemExit("the index and the scan disagree")
    print(f"users={args.users} query={args.query!r} matches={len(found)}")
    print(f"index build {built * 1000:.0f} ms")
    print(
        f"find: index {indexed * 1000:.2f} ms, scan {scan * 1000:.1f} ms, ratio {scan / indexed:.0f}x"
    )


if __name__ == "__main__":
    main()
