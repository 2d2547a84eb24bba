"""Benchmark: how long a standby takes to take over (issue 13, RULES H2).

Two real server processes on one PostgreSQL database, N live sessions, calls
going on; the active is killed (kill -9) and the clock runs until the standby
answers health SERVING. Printed, not asserted: the rule's bound is 10 s.

1. **Setting** (in process, through the engine, as
   ``benchmarks/million_sessions.py`` builds it): a team, a pack, a product, N
   users and one session each (in grace), on the test clock, written to
   PostgreSQL.
2. **Servers**: ``a`` starts alone and is elected (it loads the N sessions);
   ``b`` starts as its standby. Both ``--test-clock`` (the setting's), with the
   lease ``--lease`` (the server's default, 5 s, unless told).
3. **Load**: ``--callers`` threads call GetTeam and ListTokenPacks in a loop on
   whichever server is active (a NOT_LEADER or a lost connection sends the
   caller to the other), counting what was answered.
4. **Kill -9** the active; the takeover time is from the kill to the first
   SERVING of the standby, split into the election (a killed active's election
   session closes with it: the standby takes over at its next round, every
   fifth of the lease, not when the lease runs out) and the standby's own term
   start (open, load, restore, fire what fell due: its
   ``took over`` log line), and the load's longest gap without an answer.

PostgreSQL: ``--db URL``, else ``TESSERA_TEST_PG``, else ``pgserver`` in a
temporary directory (as the tests do).

Run: ``.venv/bin/python -m benchmarks.failover --sessions 10000`` (and
``--sessions 100000``); ``--pause`` SIGSTOPs the active instead: its session
stays, so the standby waits for the lease to run out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.million_sessions import Bench, Figures, load_average, secs
from server.domain.changes import Changes
from server.domain.meta import MetaValue
from server.engine.core import TEST_CLOCK_KEY
from server.store.port import StorePort
from server.store.postgres import PostgresStore
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
TOKEN = "tsa_failover-benchmark-admin-token"  # noqa: S105 - a throwaway database's
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class PgBench(Bench):
    """The million-session setting, on PostgreSQL."""

    url: str = ""

    async def open_store(self) -> StorePort:
        return await PostgresStore.open(self.url)


async def seed(url: str, n: int) -> tuple[str, float]:
    """The setting with N live sessions; the test clock's instant it ends at."""
    bench = PgBench(n, min(n, 500), "FULL", True, Path("unused"), url=url)
    start = time.perf_counter()
    await bench.setting()
    await bench.open_sessions()
    now = bench.clock.now().isoformat()
    await bench.engine.commit(Changes([MetaValue(TEST_CLOCK_KEY, now)]))  # what the server records
    await bench._close()
    return now, time.perf_counter() - start


@dataclass
class Server:
    name: str
    url: str
    secrets: Path
    lease: float
    test_clock: str
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # first time each event was seen

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        args = [
            sys.executable,
            "-m",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            self.url,
            "--log-format",
            "json",
            "--secrets-dir",
            str(self.secrets),
            "--leader-lease",
            str(self.lease),
            "--node-id",
            self.name,
            "--admin-token",
            TOKEN,
            "--test-clock",
            self.test_clock,
        ]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("standby", 60)
        self.port = int(next(line for line in self.lines if line.get("event") == "standby")["port"])
        return self

    def _read(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(line)
            self.events.setdefault(str(line.get("event")), time.monotonic())

    def wait(self, event: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {self.name}: no {event!r} within {timeout} s")
            time.sleep(0.01)
        return self.events[event]

    def pause(self) -> None:
        """SIGSTOP (``stop`` kills it paused or not)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"server {self.name} is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)

    def stop(self) -> None:
        """kill -9"""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def health(target: str) -> int:
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            # types-grpcio-health-checking's HealthStub declares no Check (the
            # generated class makes it in __init__): typed here by hand.
            check: grpc.UnaryUnaryMultiCallable[
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
            ] = stub.Check  # type: ignore[attr-defined]
            return int(check(health_pb2.HealthCheckRequest(), timeout=1).status)
    except grpc.RpcError:
        return -1


class Load:
    """Callers on whichever server answers (see the module docstring)."""

    def __init__(self, targets: list[str], callers: int) -> None:
        self.targets = targets
        self.answered = 0
        self.refused = 0
        self.last_answer = time.monotonic()
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._caller, daemon=True) for _ in range(callers)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _caller(self) -> None:
        meta = (("authorization", f"Bearer {TOKEN}"),)
        which = 0
        while not self._stop.is_set():
            target = self.targets[which % len(self.targets)]
            with grpc.insecure_channel(target) as channel:
                stub = admin_service_pb2_grpc.AdminServiceStub(channel)
                while not self._stop.is_set():
                    try:
                        stub.GetTeam(api.GetTeamRequest(team_id="bench"), metadata=meta, timeout=2)
                        stub.ListTokenPacks(
                            api.ListTokenPacksRequest(team_id="bench"), metadata=meta, timeout=2
                        )
                    except grpc.RpcError:
                        with self._lock:
                            self.refused += 1
                        which += 1
                        time.sleep(0.02)
                        break
                    now = time.monotonic()
                    with self._lock:
                        self.answered += 1
                        self.longest_gap = max(self.longest_gap, now - self.last_answer)
                        self.last_answer = now


def takeover(
    url: str, secrets: Path, args: argparse.Namespace, clock: str, figures: Figures
) -> None:
    servers: list[Server] = []
    try:
        a = Server("a", url, secrets, args.lease, clock).start()
        servers.append(a)
        a.wait("took over", 300)
        took = next(line for line in a.lines if line.get("event") == "took over")
        figures.add("first start: a elected, loads and serves", secs(float(took["seconds"])))
        b = Server("b", url, secrets, args.lease, clock).start()
        servers.append(b)
        check_health(a.target, b.target)
        with Load([a.target, b.target], args.callers) as load:
            time.sleep(args.warmup)
            before = load.answered
            killed = time.monotonic()
            if args.pause:
                a.pause()
            else:
                a.stop()  # kill -9
            while health(b.target) != SERVING:
                if time.monotonic() - killed > 120:
                    raise TimeoutError("no takeover within 120 s")
                time.sleep(0.005)
            serving = time.monotonic()
            time.sleep(args.warmup)
            after = load.answered
        elected = b.wait("elected", 1)
        taken = next(line for line in b.lines if line.get("event") == "took over")
        how = "SIGSTOP" if args.pause else "kill -9"
        figures.add(f"takeover: {how} -> standby SERVING", secs(serving - killed), "<= 10 s")
        why = "the lease ran out" if args.pause else "its session gone, next round"
        figures.add(f"  until elected ({why})", secs(elected - killed))
        figures.add("  the new term: open, load, restore, fire", secs(float(taken["seconds"])))
        for phase in ("open", "load", "restore", "start"):
            figures.add(f"    {phase}", secs(float(taken.get(phase, 0))))
        figures.add("load: longest gap without an answer", secs(load.longest_gap))
        figures.add(
            "load: calls answered before / after / refused",
            f"{before:,} / {after - before:,} / {load.refused:,}",
        )
    finally:
        for server in servers:
            server.stop()


def check_health(active: str, standby: str) -> None:
    if health(active) != SERVING or health(standby) == SERVING:
        raise RuntimeError("expected one active and one standby")


def postgres(stack: ExitStack, tmp: Path, given: str | None) -> str:
    url = given or os.environ.get("TESSERA_TEST_PG")
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver.postgres_server import get_server

    server = get_server(tmp / "pg", cleanup_mode="delete")
    stack.callback(server.cleanup)
    return str(server.get_uri())


async def fresh_database(url: str) -> str:
    """A new database on ``url``'s server (the benchmark never reuses one)."""
    name = f"failover_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sessions", type=int, default=10_000, help="live sessions (default 10,000)"
    )
    parser.add_argument("--lease", type=float, default=5.0, help="--leader-lease (default 5 s)")
    parser.add_argument("--callers", type=int, default=4, help="load threads (default 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load around the kill")
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: pgserver)")
    parser.add_argument(
        "--pause",
        action="store_true",
        help="SIGSTOP the active instead of kill -9 (its session stays: the lease runs out)",
    )
    args = parser.parse_args()
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    print(
        f"failover: N={args.sessions:,} live sessions, "
        f"{'SIGSTOP' if args.pause else 'kill -9'}, lease {args.lease} s, "
        f"{args.callers} callers; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load {load_average()}",
        flush=True,
    )
    figures = Figures()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tessera-failover-") as tmp:
        # pgserver hands its data directory to a user of its own when run as root
        os.chmod(tmp, 0o755)  # noqa: S103 - a directory of no secrets
        server_url = postgres(stack, Path(tmp), args.db)
        url = asyncio.run(fresh_database(server_url))
        clock, seeded = asyncio.run(seed(url, args.sessions))
        figures.add(f"setting: {args.sessions:,} users with a live session each", secs(seeded))
        takeover(url, Path(tmp) / "secrets", args, clock, figures)
    print(f"\nload average at the end: {load_average()}\n")
    print(figures.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
