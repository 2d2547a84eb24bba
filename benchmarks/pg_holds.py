"""Benchmark: token holds and captures arbitrated in PostgreSQL, per team (issue 13, point 8).

The next step past one active (``docs/scaling.md``) shards the per-user hot
state across several actives and leaves what teams share (pack balances,
holds, charges) to PostgreSQL: each hold or capture is one transaction that
locks its team's row. This measures how many such transactions one PostgreSQL
takes, and what one team's row does to them when every call is for that team.

One transaction, as a sharded active would run it:

1. the fence: ``SELECT ... FROM tessera_shard WHERE range_id = $1 AND epoch = $2
   AND lease_until > now() FOR SHARE`` (the ``tessera_leader`` row generalised
   to one row per user range; shared locks do not conflict with each other);
2. ``SELECT ... FROM bench_team WHERE team_id = $1 FOR UPDATE`` (the team's
   balance and its ledger chain head: the per-team serialisation point);
3. a hold: ``INSERT`` the hold, ``UPDATE`` the team (remaining - a, held + a,
   seq + 1, the chain's hash) and ``INSERT`` one ledger row; a capture:
   ``DELETE`` the hold, ``UPDATE`` the team (held - a, consumed + a), ``INSERT``
   one ledger row;
4. ``COMMIT`` (``synchronous_commit`` on: the answer waits for the WAL flush,
   as Tessera's durability promise asks).

Each worker (one connection) does hold, capture, hold, capture... on teams
drawn from a seeded generator, ``--batch`` holds (then as many captures) per
transaction when a shard gathers one team's calls in one transaction. It runs
every configuration of ``--teams`` x ``--workers`` for at most ``--count``
transactions or ``--seconds`` each, and prints one line per configuration:
transactions per second, p50 and p99 latency, this process's CPU per
transaction (what an active spends on the round trip), and the load average.

PostgreSQL: ``--url`` (loopback or a unix socket only), or else a throwaway
server from the ``pgserver`` wheel (as the tests get theirs, ``tests/pg.py``),
deleted at the end. Run: ``.venv/bin/python -m benchmarks.pg_holds``
(``--teams 1 1000 --workers 1 4 16`` and so on; ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

SCHEMA = """
DROP TABLE IF EXISTS bench_ledger, bench_hold, bench_team, tessera_shard;
CREATE TABLE tessera_shard (
    range_id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE TABLE bench_team (
    team_id INTEGER PRIMARY KEY,
    remaining BIGINT NOT NULL,
    held BIGINT NOT NULL,
    consumed BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE bench_hold (
    hold_id TEXT PRIMARY KEY,
    team_id INTEGER NOT NULL,
    amount BIGINT NOT NULL
);
CREATE TABLE bench_ledger (
    team_id INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    hold_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (team_id, seq)
);
"""
FENCE = """
SELECT 1 FROM tessera_shard
WHERE range_id = $1 AND epoch = $2 AND lease_until > now()
FOR SHARE
"""
LOCK_TEAM = "SELECT seq, hash FROM bench_team WHERE team_id = $1 FOR UPDATE"
INSERT_HOLD = "INSERT INTO bench_hold (hold_id, team_id, amount) VALUES ($1, $2, $3)"
DELETE_HOLD = "DELETE FROM bench_hold WHERE hold_id = $1 RETURNING amount"
HOLD_TEAM = """
UPDATE bench_team SET remaining = remaining - $2, held = held + $2, seq = $3, hash = $4
WHERE team_id = $1
"""
CAPTURE_TEAM = """
UPDATE bench_team SET held = held - $2, consumed = consumed + $2, seq = $3, hash = $4
WHERE team_id = $1
"""
INSERT_LEDGER = """
INSERT INTO bench_ledger (team_id, seq, kind, amount, hold_id, hash)
VALUES ($1, $2, $3, $4, $5, $6)
"""
TOKENS = 10**15  # per team: never runs out during a run
RANGES = 8  # tessera_shard rows; a worker fences on its own range


@dataclass(frozen=True)
class Result:
    teams: int
    workers: int
    batch: int
    transactions: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_tx: float
    load: float

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"PGHOLDS teams={self.teams} workers={self.workers} batch={self.batch} "
            f"tx={self.transactions} tx_per_s={self.tps:.0f} "
            f"holds_per_s={self.tps * self.batch:.0f} p50_ms={self.p50_ms:.2f} "
            f"p99_ms={self.p99_ms:.2f} client_cpu_us_per_tx={self.cpu_us_per_tx:.0f} "
            f"load={self.load:.2f}"
        )


def chained(prev: str, seq: int, kind: str, amount: int) -> str:
    """The next link of a team's ledger chain (the real ledger hashes its rows
    likewise; here the cost, not the format, matters)."""
    return hashlib.sha256(f"{prev}|{seq}|{kind}|{amount}".encode()).hexdigest()


async def setup(conn: asyncpg.Connection, teams: int) -> None:
    await conn.execute(SCHEMA)
    await conn.executemany(
        "INSERT INTO tessera_shard VALUES ($1, $2, '127.0.0.1:0', 1, now() + interval '1 day')",
        [(r, f"node-{r}") for r in range(RANGES)],
    )
    await conn.executemany(
        "INSERT INTO bench_team VALUES ($1, $2, 0, 0, 0, '')",
        [(t, TOKENS) for t in range(teams)],
    )


async def step(
    conn: asyncpg.Connection, range_id: int, team: int, kind: str, holds: list[str]
) -> list[str]:
    """One fenced transaction on one team: hold ``len(holds)`` new holds, or
    capture them; the holds now open."""
    async with conn.transaction():
        if await conn.fetchval(FENCE, range_id, 1) is None:
            raise RuntimeError("fence refused: the bench's shard row has no lease")
        row = await conn.fetchrow(LOCK_TEAM, team)
        if row is None:
            raise RuntimeError(f"no team {team}")
        seq, prev = int(row["seq"]), str(row["hash"])
        for hold_id in holds:
            seq += 1
            if kind == "hold":
                await conn.execute(INSERT_HOLD, hold_id, team, 1)
                amount = 1
            else:
                amount = int(await conn.fetchval(DELETE_HOLD, hold_id))
            prev = chained(prev, seq, kind, amount)
            await conn.execute(INSERT_LEDGER, team, seq, kind, amount, hold_id, prev)
        await conn.execute(
            HOLD_TEAM if kind == "hold" else CAPTURE_TEAM, team, len(holds), seq, prev
        )
    return holds if kind == "hold" else []


async def worker(
    url: str,
    index: int,
    teams: int,
    batch: int,
    quota: list[int],
    deadline: float,
    seed: int,
    latencies: list[float],
) -> None:
    rng = random.Random(seed * 1_000 + index)  # noqa: S311 - seeded load, nothing secret
    conn = await asyncpg.connect(url, timeout=10)
    try:
        n = 0
        while quota[0] > 0 and time.monotonic() < deadline:
            quota[0] -= 2
            team = rng.randrange(teams)
            holds = [f"w{index}-{n}-{i}" for i in range(batch)]
            n += 1
            for kind in ("hold", "capture"):
                t0 = time.perf_counter()
                await step(conn, index % RANGES, team, kind, holds)
                latencies.append(time.perf_counter() - t0)
    finally:
        await conn.close()


async def measure(
    url: str, teams: int, workers: int, batch: int, count: int, seconds: float, seed: int
) -> Result:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await setup(conn, teams)
    finally:
        await conn.close()
    latencies: list[float] = []
    quota = [count]
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(worker(url, i, teams, batch, quota, deadline, seed, latencies) for i in range(workers))
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(latencies)
    cuts = statistics.quantiles(latencies, n=100) if n >= 2 else [0.0] * 99
    return Result(
        teams=teams,
        workers=workers,
        batch=batch,
        transactions=n,
        seconds=elapsed,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
        cpu_us_per_tx=cpu / n * 1e6 if n else 0.0,
        load=os.getloadavg()[0],
    )


def check_local(url: str) -> None:
    """Loopback or a unix socket only (the project's rule for everything it starts)."""
    parts = urlsplit(url)
    hosts = [parts.hostname or "", *parse_qs(parts.query).get("host", [])]
    for host in hosts:
        if host not in ("", "localhost", "127.0.0.1", "::1") and not host.startswith("/"):
            raise SystemExit(f"--url must name a loopback host or a unix socket, not {host!r}")


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL from the ``pgserver`` wheel in a temporary directory; its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver.postgres_server import get_server

    base = Path(tempfile.mkdtemp(prefix="tessera-pgholds-"))
    server = get_server(base / "data", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="a PostgreSQL URL (loopback/unix socket); default: pgserver")
    p.add_argument("--teams", type=int, nargs="+", default=[1, 1000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="holds per transaction")
    p.add_argument("--count", type=int, default=20_000, help="transactions per configuration")
    p.add_argument("--seconds", type=float, default=10.0, help="time cap per configuration")
    p.add_argument("--seed", type=int, default=13)
    a = p.parse_args(argv)
    if min(a.teams + a.workers + a.batch) < 1 or a.count < 2 or a.seconds <= 0:
        p.error("--teams, --workers, --batch must be >= 1, --count >= 2, --seconds > 0")
    return a


async def run_all(url: str, a: argparse.Namespace) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        settings = [
            f"{name}={await conn.fetchval(f'SHOW {name}')}"
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        ]
    finally:
        await conn.close()
    print("postgresql " + " ".join(settings), flush=True)
    for teams in a.teams:
        for batch in a.batch:
            for workers in a.workers:
                r = await measure(url, teams, workers, batch, a.count, a.seconds, a.seed)
                print(r.line(), flush=True)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores", flush=True)
    if a.url:
        check_local(a.url)
        asyncio.run(run_all(a.url, a))
        return 0
    with throwaway_server() as url:
        asyncio.run(run_all(url, a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
