"""Benchmark: a million live sessions in one process (issue 4, "Measure").

The engine in process, no network: an ``Engine`` on a throwaway SQLite
database (``synchronous=FULL`` as the server, unless ``--sync`` says
otherwise) with a test clock, one team with a pack of enough tokens, one
idle-aware product at 1 token a day, and N users, each assigned the product
(users and memberships are built in the domain and written in bulk: they are
the setting, not the measure), and the server restarts with them, as one
would be when a million sessions open: loaded at start and frozen out of the
garbage collector (``Store.load``, ``server/app.py``). Then, in this order:

1. **Entitle**: one session per user, each on its own device with its own
   ``request_id`` (``--no-request-ids`` to leave it out), through
   ``engine.sessions.entitle`` (the durable path: each call answers once its
   group commit is on disk), ``--concurrency`` calls in flight so that the
   group commit gathers them. The test clock moves a microsecond before each
   call, so that, as under the real clock, no two sessions share their
   instants. **RSS per live session** is the growth of ``VmRSS`` across this
   phase divided by N (``gc.collect()`` before both readings): the session,
   its meter (in grace: with its hold), its device, its deadlines and every
   index entry. A *model* of one session's bytes (``sys.getsizeof`` of each
   object it holds alone, and its share of every index) shows where they go.
2. **Fire N grace ends**: the clock moves 5 minutes on; every meter's
   GRACE_END falls due and captures its hold (``engine.advance_clock``: fires
   in time order, each at its own instant, then one commit).
3. **Heartbeat**: every session once (``engine.sessions.heartbeat``, activity
   just now); a plain heartbeat changes memory only, so the batch of dirty
   sessions and devices is flushed and timed on its own.
4. **Restart**: the engine stops, the store closes; then ``Store.open`` +
   ``load`` + ``Engine.restore`` + ``engine.start`` + ``settle_heap``
   (what ``server/app.py`` does before it takes calls: collect, freeze, raise
   the collector's thresholds) rebuild
   the N live sessions, meters, devices and deadlines from SQLite. The model of one
   session is taken again: the steady state (window paid, no hold).
5. **Fire N idle deadlines**: the clock moves past the sessions' own
   deadlines (15 minutes without activity, M6); every session goes idle.

Prints one table. Run: ``.venv/bin/python -m benchmarks.million_sessions``
(``--sessions N``, default 1,000,000; ``--help`` for the rest). A million
takes a few minutes and about 4 GiB of memory at its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sized
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from client_sdk.load.stats import percentile
from server.app import settle_heap
from server.clock import TestClock
from server.domain.changes import Changes
from server.domain.directory import Directory, Member, MemberState, User
from server.domain.ledger import shared_parts
from server.domain.products import Platform, Product
from server.domain.sessions import ChargeState, Session, SessionState
from server.domain.teams import Plan
from server.engine.core import Engine
from server.store.port import StorePort
from server.store.postgres import PostgresStore
from server.store.sqlite import Store, loading

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
TEAM = "bench"
PRODUCT = "ACAD"
RATE = 1
KIB = 1024
MIB = 1024 * 1024
CHUNK = 20_000  # rows per bulk commit of the setting


class BenchFailed(RuntimeError):
    """The engine did not end up where the benchmark drove it."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise BenchFailed(what)


@runtime_checkable
class CountsCommits(Protocol):
    """A store that counts the transactions it committed: both of the server's
    stores do (``Store.commits``, ``PostgresStore.commits``), though the port
    (``StorePort``) does not promise it."""

    @property
    def commits(self) -> int: ...


def commits_of(store: StorePort) -> int:
    """The transactions ``store`` has committed so far."""
    if not isinstance(store, CountsCommits):
        raise BenchFailed(f"{type(store).__name__} does not count its commits")
    return store.commits


def proc_status(field_name: str) -> int:
    """A ``kB`` figure of /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * KIB
    raise KeyError(field_name)


def settled_rss() -> int:
    gc.collect()
    return proc_status("VmRSS")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def secs(seconds: float) -> str:
    return f"{seconds:,.2f} s"


def user_id(n: int) -> str:
    return f"user{n:07d}@example.com"


@dataclass
class Figures:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, target: str = "") -> None:
        self.rows.append((what, value, target))
        print(f"  {what:<48} {value:>20}  {target}", flush=True)

    def table(self) -> str:
        w0 = max(len(r[0]) for r in self.rows)
        w1 = max(len(r[1]) for r in self.rows)
        w2 = max(len("target"), *(len(r[2]) for r in self.rows))
        head = f"| {'measure':<{w0}} | {'figure':>{w1}} | {'target':<{w2}} |"
        rule = f"| {'-' * w0} | {'-' * (w1 - 1)}: | {'-' * w2} |"
        body = [f"| {a:<{w0}} | {b:>{w1}} | {c:<{w2}} |" for a, b, c in self.rows]
        return "\n".join([head, rule, *body])


# -- a model of one session's bytes ----------------------------------------------------


def _alloc(obj: object) -> int:
    """What an object really takes: pymalloc hands out multiples of 16 bytes."""
    return (sys.getsizeof(obj) + 15) // 16 * 16


def _per_entry(container: Sized) -> float:
    return sys.getsizeof(container) / max(1, len(container))


def footprint(engine: Engine, session: Session) -> dict[str, float]:
    """Bytes that one live session holds alone, by part: its objects (strings
    and instants it shares with nobody else, counted once), its deadlines in
    the heap, and its share of every index. The user's own strings belong to
    the directory and are not counted."""
    lic = engine.sessions.lic
    meter, device = lic.meter_of(session), lic.device_of(session)
    hold = meter.hold if meter is not None else None
    parts: dict[str, float] = {"Session": _alloc(session)}
    strings = [session.session_id, session.device_id, session.request_id]
    parts["its strings (session, device, request ids)"] = sum(_alloc(s) for s in strings if s)
    instants = {
        id(t): t
        for t in (
            session.start_time,
            session.lease_start,
            session.last_activity,
            session.state_since,
            session.coverage_since,
            session.due,
            session.end_time,
            *((device.register_time, device.last_seen_time) if device else ()),
            *(
                (meter.grace_start, meter.grace_end, meter.window_start, meter.window_end)
                if meter
                else ()
            ),
            *((hold.time,) if hold else ()),
        )
        if t is not None
    }
    parts[f"its instants ({len(instants)} datetimes)"] = sum(_alloc(t) for t in instants.values())
    parts["Device"] = _alloc(device) if device is not None else 0
    parts["Meter"] = _alloc(meter) if meter is not None else 0
    if hold is not None:
        # Equal parts are one tuple for all holds (``shared_parts``): not its own.
        own_parts = shared_parts(hold.parts) is not hold.parts
        # A meter's hold is named after its session: its id is that string.
        own_id = hold.hold_id is not session.session_id
        parts["Hold (grace only): hold, own id, own parts"] = (
            _alloc(hold)
            + own_id * _alloc(hold.hold_id)
            + own_parts * (_alloc(hold.parts) + sum(_alloc(p) for p in hold.parts))
        )
    heap = engine.scheduler.heap
    keys = {session.session_id, session.user_id}
    mine = sum(1 for d in heap.pending() if d[-1] in keys)
    # An entry is three pointers in a bucket's list: its share of the store's
    # lists, dict and heap of seconds, growth included.
    share = heap.container_bytes() / max(1, len(heap))
    parts[f"deadlines ({mine} entries)"] = mine * share
    indexes: list[Sized] = [lic._sessions, lic._devices, lic.meters._by_user]
    if session.request_id and not session.live:  # a live one is found through its device
        indexes.append(lic._by_request)
    parts[f"index entries ({len(indexes)} dicts)"] = sum(_per_entry(d) for d in indexes)
    return parts


def add_footprint(figures: Figures, title: str, parts: dict[str, float]) -> None:
    figures.add(title, f"{sum(parts.values()):,.0f} B")
    for name, size in parts.items():
        figures.add(f"  {name}", f"{size:,.0f} B")


# -- the phases ---------------------------------------------------------------------


async def build_setting(engine: Engine, n: int) -> list[str]:
    """The team, its tokens, the product and N assigned users; returns the user
    ids as the directory holds them (the strings the edge resolves keys to)."""
    await engine.accounts.create_team(TEAM, "Bench", Plan.STANDARD)
    await engine.accounts.purchase(TEAM, max(1, n * RATE * 2), "bench-tokens")
    await engine.accounts.upsert_product(
        Product(
            PRODUCT,
            "AutoCAD",
            RATE,
            idle_aware=True,
            platforms=frozenset({Platform.WINDOWS, Platform.MACOS, Platform.LINUX}),
        )
    )
    # Users and memberships straight into the domain (what ImportUsers leaves
    # behind), written to SQLite in chunks.
    now = engine.now()
    products = frozenset({PRODUCT})
    users: list[User] = []
    members: list[Member] = []
    for i in range(n):
        uid = user_id(i)
        users.append(User(uid, f"User {i}", uid))
        members.append(Member(TEAM, uid, MemberState.ACTIVE, False, False, products, None, now))
    engine.directory = Directory.restore(users, members, [], [], engine.terms.invitation_validity)
    for lo in range(0, n, CHUNK):
        await engine.commit(Changes([*users[lo : lo + CHUNK], *members[lo : lo + CHUNK]]))
    return [u.user_id for u in users]


async def run_pool(
    n: int, concurrency: int, call: Callable[[int], Awaitable[object]], latencies: array[float]
) -> float:
    """Run ``call(i)`` for every i < n with ``concurrency`` calls in flight, each
    call's latency into ``latencies[i]`` (an array: no object per figure, so the
    figures do not count as session memory); returns the wall time."""
    it: Iterator[int] = iter(range(n))
    clock = time.perf_counter

    async def worker() -> None:
        for i in it:
            t = clock()
            await call(i)
            latencies[i] = clock() - t

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return clock() - start


def quantile(values: array[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest rank, as the load generator's percentiles."""
    return percentile(sorted(values), q * 100)


class GcClock:
    """Time spent in the cyclic garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0  # collections of the oldest generation
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.full += info["generation"] == 2

    def since(self, mark: tuple[float, int]) -> str:
        return f"{self.seconds - mark[0]:,.2f} s in {self.full - mark[1]} full passes"

    def mark(self) -> tuple[float, int]:
        return (self.seconds, self.full)


@dataclass
class Bench:
    n: int
    concurrency: int
    sync: str
    request_ids: bool
    db: Path | str  # a PostgreSQL URL with --postgres
    figures: Figures = field(default_factory=Figures)
    clock: TestClock = field(default_factory=lambda: TestClock(T0))
    gc: GcClock = field(default_factory=GcClock)
    user_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    _engine: Engine | None = None
    table_seconds: dict[str, float] = field(default_factory=dict)  # Store.load's, by table

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise BenchFailed("no engine")
        return self._engine

    async def fire(self, to: datetime, what: str) -> None:
        """Advance the test clock to ``to`` through the engine; time the firing
        (memory) and the commit apart."""
        engine = self.engine
        scheduler = engine.scheduler
        fire_due = scheduler.fire_due
        firing = 0.0

        def timed_fire_due(until: datetime, changes: Changes) -> int:
            nonlocal firing
            t = time.perf_counter()
            count = fire_due(until, changes)
            firing += time.perf_counter() - t
            return count

        fired = scheduler.fired
        gc_mark = self.gc.mark()
        setattr(scheduler, "fire_due", timed_fire_due)  # noqa: B010 (a method, shadowed)
        try:
            t = time.perf_counter()
            await engine.advance_clock(to, None)
            wall = time.perf_counter() - t
        finally:
            delattr(scheduler, "fire_due")
        count = scheduler.fired - fired
        check(count >= self.n, f"only {count:,} deadlines fell due")
        self.figures.add(f"fire {count:,} {what}", secs(wall))
        self.figures.add("  per deadline", us(wall / count))
        self.figures.add("  firing (memory) / commit", f"{secs(firing)} / {secs(wall - firing)}")
        self.figures.add("  of which garbage collector", self.gc.since(gc_mark))

    async def open_sessions(self) -> None:
        n, clock, figures, engine = self.n, self.clock, self.figures, self.engine
        entitle = engine.sessions.entitle
        ids = self.user_ids
        session_ids = self.session_ids = [""] * n
        with_request_ids = self.request_ids
        salt = os.urandom(4).hex()

        async def open_one(i: int) -> None:
            # Device and request ids are made here: the server makes them from
            # each request too.
            clock.set(clock.now() + TICK)
            view = await entitle(
                ids[i],
                product_id=PRODUCT,
                product_version="2026.1",
                platform=Platform.WINDOWS,
                device_id=f"{salt}-device-{i:07d}",
                parent_session_id="",
                request_id=f"{salt}-entitle-{i:07d}" if with_request_ids else "",
                takeover=False,
                team_id="",
            )
            session_ids[i] = view.session.session_id

        latencies = array("d", bytes(8 * n))
        commits = commits_of(engine.store)
        before = settled_rss()
        gc_mark = self.gc.mark()
        wall = await run_pool(n, self.concurrency, open_one, latencies)
        gc_spent = self.gc.since(gc_mark)
        after = settled_rss()
        figures.add(
            "RSS per live session (growth over Entitle / N)",
            f"{(after - before) / n:,.0f} B",
            "<= 1,024 B",
        )
        figures.add("  VmRSS before -> after", f"{before / MIB:,.0f} -> {after / MIB:,.0f} MiB")
        figures.add("Entitle, wall time / N", us(wall / n))
        figures.add(
            f"  latency p50 / p99 ({self.concurrency} in flight)",
            f"{quantile(latencies, 0.5) * 1e3:.1f} / {quantile(latencies, 0.99) * 1e3:.1f} ms",
        )
        figures.add(
            "  Entitles per second; group commits",
            f"{n / wall:,.0f}; {commits_of(engine.store) - commits:,}",
        )
        figures.add("  of which garbage collector", gc_spent)
        lic = engine.sessions.lic
        check(sum(1 for _ in lic.live_sessions()) == n, "not every session is live")
        check(all(m.state is ChargeState.GRACE for m in lic.meters), "a meter is not in grace")
        sample = lic.find_session(session_ids[n // 2])
        check(sample is not None, "the sample session is missing")
        if sample is not None:
            add_footprint(figures, "model: one session in grace", footprint(engine, sample))

    async def heartbeat_all(self) -> None:
        engine = self.engine
        clock, heartbeat = self.clock, engine.sessions.heartbeat
        gc_mark = self.gc.mark()
        t = time.perf_counter()
        for uid, sid in zip(self.user_ids, self.session_ids, strict=True):
            clock.set(clock.now() + TICK)
            await heartbeat(uid, sid, 0)
        wall = time.perf_counter() - t
        self.figures.add("Heartbeat, per call (memory only)", us(wall / self.n))
        self.figures.add("  of which garbage collector", self.gc.since(gc_mark))
        dirty = engine.sessions.dirty
        t = time.perf_counter()
        await engine.sessions.flush()
        self.figures.add(f"  flush of {dirty:,} dirty rows", secs(time.perf_counter() - t))

    async def _close(self) -> float:
        """Stop the engine and close its store; let all of it go (a new process
        would not have it): the server froze it out of the garbage collector and
        it holds cycles, so it is thawed and collected. Returns the seconds taken
        to stop and close."""
        t = time.perf_counter()
        await self.engine.stop()
        await self.engine.store.close()
        wall = time.perf_counter() - t
        self._engine = None
        gc.unfreeze()
        gc.collect()
        return wall

    async def abandon(self) -> None:
        """Stop the engine and close its store if a run cut short left them open."""
        engine, self._engine = self._engine, None
        if engine is not None:
            with suppress(Exception):
                await engine.stop()
            with suppress(Exception):
                await engine.store.close()

    async def _open(self) -> tuple[float, float, float, float, float]:
        """What ``server/app.py`` does at start: Store.open, load, Engine.restore,
        engine.start, then settle_heap before it takes calls.
        Returns the five durations."""
        t0 = time.perf_counter()
        store = await self.open_store()
        t1 = time.perf_counter()
        snapshot = await store.load()
        # SQLite's store times each table it reads (rows read and turned into
        # objects); PostgreSQL's reads them in a module function: not split.
        self.table_seconds = dict(getattr(store, "load_seconds", {}))
        t2 = time.perf_counter()
        self.clock = TestClock(self.clock.now())
        with loading():
            engine = self._engine = Engine.restore(snapshot, self.clock, store)
        t3 = time.perf_counter()
        await engine.start(heartbeat_flush=0)  # heartbeat flushes are timed by hand
        t4 = time.perf_counter()
        del snapshot
        settle_heap()
        t5 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4

    async def restart(self) -> None:
        figures = self.figures
        figures.add("stop + close the store", secs(await self._close()))
        freed = settled_rss()
        gc_mark = self.gc.mark()
        times = await self._open()
        gc_spent = self.gc.since(gc_mark)
        reloaded = settled_rss()
        figures.add(f"restart: reload {self.n:,} live sessions", secs(sum(times)), "<= 30 s")
        figures.add("  Store.open", secs(times[0]))
        figures.add("  Store.load", secs(times[1]))
        biggest = sorted(self.table_seconds.items(), key=lambda kv: -kv[1])[:5]
        for name, seconds in biggest:
            figures.add(f"    {name}", secs(seconds))
        figures.add("  Engine.restore", secs(times[2]))
        figures.add("  Engine.start (fire what fell due)", secs(times[3]))
        figures.add("  settle_heap (as server/app.py)", secs(times[4]))
        figures.add("  of which garbage collector", gc_spent)
        figures.add(
            "  VmRSS old engine freed -> reloaded",
            f"{freed / MIB:,.0f} -> {reloaded / MIB:,.0f} MiB",
        )
        engine = self.engine
        t = time.perf_counter()
        await engine.search_indexed()
        # Work the server does after it serves (between calls), not part of the reload:
        figures.add("  then, serving: users keyed for search", secs(time.perf_counter() - t))
        lic = engine.sessions.lic
        check(sum(1 for _ in lic.live_sessions()) == self.n, "not every session came back")
        check(len(engine.scheduler.heap) >= self.n, "the sessions' deadlines did not come back")
        sample = lic.find_session(self.session_ids[self.n // 2])
        if sample is not None:
            add_footprint(figures, "model: one session after reload", footprint(engine, sample))

    async def open_store(self) -> StorePort:
        if isinstance(self.db, str):
            return await PostgresStore.open(self.db)
        return await Store.open(self.db, synchronous=self.sync)

    async def run(self) -> None:
        await self.setting()
        await self.open_sessions()
        await self.fire(self.clock.now() + self.engine.terms.grace, "GRACE_END (capture)")
        meters = self.engine.sessions.lic.meters
        check(all(m.state is ChargeState.CHARGED for m in meters), "a grace was not captured")
        del meters
        await self.heartbeat_all()
        await self.restart()
        to = self.clock.now() + self.engine.terms.idle_threshold + timedelta(seconds=1)
        await self.fire(to, "IDLE (sessions go idle)")
        check(
            all(s.state is SessionState.IDLE for s in self.engine.sessions.lic.live_sessions()),
            "not every session went idle",
        )
        await self._close()

    async def setting(self) -> None:
        """The team, pack, product and N users, then a restart with them."""
        figures = self.figures
        store = await self.open_store()
        self._engine = Engine(self.clock, store)
        await self.engine.start(heartbeat_flush=0)
        t = time.perf_counter()
        self.user_ids = await build_setting(self.engine, self.n)
        # Then the server restarts with them, as it would be when a million
        # sessions open: users loaded (and frozen out of the collector) at start.
        await self._close()
        await self._open()
        # The server keys the users for search after it starts serving: done
        # before the sessions open, so that it is no session's memory.
        await self.engine.search_indexed()
        settle_heap()
        directory = self.engine.directory
        self.user_ids = [directory.user(u).user_id for u in self.user_ids]  # its strings
        figures.add(
            "setting: team, pack, product, N users; restart",
            secs(time.perf_counter() - t),
        )


async def main_async(args: argparse.Namespace) -> int:
    """``measure``, but SIGTERM ends it: the run is cancelled where it waits, its store
    closed (its connection's thread would keep the process alive) and its temporary
    folder removed on the way out; a second SIGTERM ends the process at once."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None  # noqa: S101 - run by asyncio.run
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        loop.remove_signal_handler(signal.SIGTERM)  # the default again, for a second one
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await measure(args)
    except asyncio.CancelledError:
        if not terminated:
            raise
        print("million_sessions: terminated", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM


async def measure(args: argparse.Namespace) -> int:
    print(
        f"million_sessions: N={args.sessions:,}, {args.concurrency} Entitles in flight, "
        f"synchronous={args.sync}, request ids {'on' if args.request_ids else 'off'}; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load_average()}",
        flush=True,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tessera-msess-", dir=args.tmp) as tmp:
        from benchmarks.bench import new_database, throwaway_postgres  # only for --postgres

        with throwaway_postgres(Path(tmp)) if args.postgres else nullcontext("") as pg:
            db = await new_database(pg, "msess") if pg else Path(tmp) / "bench.db"
            bench = Bench(args.sessions, args.concurrency, args.sync, args.request_ids, db)
            try:
                await bench.run()
            finally:
                await bench.abandon()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
    figures = bench.figures
    if not args.postgres:
        figures.add("database size", f"{size / MIB:,.0f} MiB")
    figures.add("peak RSS (VmHWM)", f"{proc_status('VmHWM') / MIB:,.0f} MiB")
    figures.add("total run time", secs(time.perf_counter() - start))
    print(f"\nload average at the end: {load_average()}\n")
    print(figures.table())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument(
        "--concurrency", type=int, default=1_000, help="Entitle calls in flight (default 1,000)"
    )
    parser.add_argument(
        "--sync", default="FULL", help="SQLite synchronous mode (default FULL, as the server)"
    )
    parser.add_argument(
        "--no-request-ids",
        dest="request_ids",
        action="store_false",
        help="Entitle without a request_id (by default each call has its own)",
    )
    parser.add_argument("--tmp", default=None, help="where the throwaway database goes")
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL (pgserver, fsync on)"
    )
    args = parser.parse_args()
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
