"""Benchmark: rows per second through ``StorePort.commit``, SQLite against PostgreSQL.

First ``IN_FLIGHT`` callers at once committing one row each (as the server's
RPCs do: group commit gathers them); then one commit after another (each waits
for its COMMIT, as a lone RPC does), with 1, 100 or 1,000 rows per commit, of two kinds: sessions (upserts, the
heartbeat flush's rows) and ledger entries (appends: PostgreSQL copies them with
COPY from ``server/store/postgres.py``'s ``COPY_FROM`` rows on). The rows are
made before the clock starts; what is timed is ``commit``: rows snapshotted,
planned, queued to the group-commit writer, written and committed.

SQLite: a throwaway file, ``synchronous=FULL`` as the server. PostgreSQL:
``--pg URL`` (a database it may fill), else one started by the dev dependency
``pgserver`` in a temporary directory (fsync on, as PostgreSQL's default).
Both share the machine's two cores with whatever else runs: note the load
average printed, and repeat a run taken while something else was busy.

Run: ``.venv/bin/python -m benchmarks.store_commit`` (``--seconds 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.domain.ledger import Cause, EntryKind, LedgerEntry
from server.domain.products import Platform
from server.domain.sessions import Coverage, Session, SessionState
from server.domain.teams import Plan
from server.store.port import StorePort
from server.store.postgres import PostgresStore
from server.store.sqlite import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = (1, 100, 1000)
IN_FLIGHT = 200  # callers committing one row each at once (group commit)


def stored_session(i: int) -> Session:
    """The ``i``-th live session the store benchmarks write (ids in ``i``'s order, one
    of 5,000 users), which ``benchmarks.start_read`` makes its own from."""
    start = T0 + timedelta(microseconds=i)
    return Session(
        f"ses_{i:012d}",
        f"user{i % 5000}@example.com",
        "acme",
        "ACAD",
        "2026",
        Platform.WINDOWS,
        f"dev-{i}",
        "",
        "",
        Coverage.TOKENS,
        Plan.STANDARD,
        10,
        start,
        start + timedelta(minutes=10),
        start,
        start,
        start,
        SessionState.ACTIVE,
        None,
        None,
    )


def _entry(seq: int) -> LedgerEntry:
    cause = Cause(f"ses_{seq}", "ann@example.com", "ACAD")
    return LedgerEntry(seq, T0, EntryKind.HOLD, "acme", "pk_1", 10, -10, 10, cause, "0" * 64)


async def _rate(store: StorePort, batches: Sequence[Sequence[object]], seconds: float) -> float:
    """Rows per second committing ``batches`` one after another for ``seconds``."""
    rows = 0
    start = time.perf_counter()
    for batch in batches:
        await store.commit(batch)
        rows += len(batch)
        if time.perf_counter() - start >= seconds:
            break
    return rows / (time.perf_counter() - start)


async def _concurrent_rate(store: StorePort, first: int, seconds: float) -> float:
    """Rows per second with ``IN_FLIGHT`` callers each committing one session at a
    time, as the server's RPCs do: group commit gathers them."""
    rows = 0
    start = time.perf_counter()
    next_id = iter(range(first, first + 10**9))

    async def caller() -> None:
        nonlocal rows
        while time.perf_counter() - start < seconds:
            await store.commit([stored_session(next(next_id))])
            rows += 1

    await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    return rows / (time.perf_counter() - start)


async def measure(store: StorePort, seconds: float) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    next_id = 1
    out["concurrent", 1] = await _concurrent_rate(store, 10**12, seconds)
    for size in SIZES:
        count = max(50, int(80_000 * seconds) // size)  # more than can be written in time
        ids = range(next_id, next_id + count * size)
        next_id += count * size
        sessions = [
            [stored_session(i) for i in ids[k : k + size]] for k in range(0, len(ids), size)
        ]
        out["sessions", size] = await _rate(store, sessions, seconds)
        entries = [[_entry(i) for i in ids[k : k + size]] for k in range(0, len(ids), size)]
        out["ledger", size] = await _rate(store, entries, seconds)
    return out


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR
        from pgserver.postgres_server import get_server
    with tempfile.TemporaryDirectory(prefix="tessera-bench-pg-") as tmp:
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def run(pg_url: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
        results = {}
        lite = await Store.open(Path(tmp) / "bench.db")
        try:
            results["sqlite"] = await measure(lite, seconds)
        finally:
            await lite.close()
        pg = await PostgresStore.open(pg_url)
        try:
            results["postgres"] = await measure(pg, seconds)
        finally:
            await pg.close()
    print(f"rows per second through commit(), one commit after another (load {os.getloadavg()})")
    print(f"{'rows/commit':>12} {'kind':>10} {'sqlite':>10} {'postgres':>10}")
    for kind, size in results["sqlite"]:
        lite_rate, pg_rate = results["sqlite"][kind, size], results["postgres"][kind, size]
        print(f"{size:>12} {kind:>10} {lite_rate:>10,.0f} {pg_rate:>10,.0f}")
    print(f"(concurrent: {IN_FLIGHT} callers committing one session each, group commit)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg", metavar="URL", help="a PostgreSQL database (default: start one)")
    p.add_argument("--seconds", type=float, default=3.0, help="per measure (default 3)")
    a = p.parse_args()
    with postgres(a.pg) as url:
        asyncio.run(run(url, a.seconds))


if __name__ == "__main__":
    main()
