"""Benchmark: what a working day leaves in the database and in the server's memory.

For an operator's sizing (docs/ops/README.md, "Capacity"). Starts a real server
as a child process (``python -m server``'s own ``main`` on 127.0.0.1 port 0,
``--test-clock``, a throwaway SQLite database, or PostgreSQL with
``--postgres``), and plays one working day on the test clock:

1. **The setting**: a team, a product and its plugin, ``--users`` users
   imported in bulk with a key each (``client_sdk.load.provision``, as the load
   generator provisions), then some administrators' work: ``--invites`` new
   people invited (one ``AssignUsers``: an invitation and a notification each),
   ``--assignments`` members' products set (``SetUserProducts``, one call each)
   and a tenth of the invitations sent again (``ResendInvitation``).
2. **The day**, from 08:00: every user opens the product (``Entitle``), then
   every ``--every`` minutes of the test clock (``AdvanceClock``) every session
   heartbeats with activity just now, until 12:00 (the grace ends on the way:
   each session's hold is captured); at 12:00 every session goes ``Idle`` and
   heartbeats idle through lunch, resumes at 13:00 (a heartbeat with activity
   just now) and heartbeats on until the day's ``--hours`` are over; then every
   session is released. With ``--days N`` the same day is played N times, a day
   apart, and what the days after the first added is read at the end (on
   PostgreSQL, the dead versions of rewritten rows that autovacuum has not let
   later rows reuse yet: the test clock plays a day in a minute or two, and
   autovacuum's pace is the machine's clock).
3. **Ended sessions let go**: the test clock moves past ``ENDED_KEPT`` (2 days,
   ``server/engine/sessions.py``) and the benchmark waits for the server's pass
   that forgets them (it polls ``ListSessions`` with ended sessions until it
   lists none).
4. **A restart** (SIGTERM, start again on the same database), and the forget
   pass again: a start loads the sessions ended in the 2 days before the newest
   stored end, what memory keeps (``ENDED_LOADED_US``, ``server/store/codec.py``).

At each step it reads, beside the running server, every table's rows and bytes
(SQLite: ``dbstat``, indexes counted with their table, and the files after a
passive checkpoint; PostgreSQL: ``pg_total_relation_size``) and the server's
resident memory (``VmRSS`` of the server process, the one that holds the state,
and of its front process when it has one). The morning's heartbeats are measured
on their own: the rows and bytes they added (0 rows expected: a heartbeat's
flush rewrites the session's and the device's rows, ``Sessions.flush``) and the
memory they left.

One change to the server, for time only: its forget pass runs every
``--forget-every`` seconds of the machine's clock instead of every
``FORGET_EVERY_SECONDS`` (600), so that step 3 does not wait ten minutes; the
pass is the server's own.

Prints a table per step, bytes per stored row, a projection per user and per
year, and a last line ``CAPACITY key=value ...``. Run:
``.venv/bin/python -m benchmarks.capacity`` (``--users 2000``; ``--postgres``;
``--help`` for the rest). 2,000 users take a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from benchmarks.bench import Child, new_database, status_kib, throwaway_postgres
from client_sdk._retry import RetryPolicy
from client_sdk.admin import AsyncAdminClient, pages
from client_sdk.failover import Targets
from client_sdk.load.provision import Users, provision
from tessera_api.tessera.v1 import (
    common_pb2,
    licensing_service_pb2_grpc,
)
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday, 08:00
MIB = 1024 * 1024
KIB = 1024
# The server's main with its forget pass made more frequent (module docstring).
SERVER_MAIN = (
    "import sys; import server.engine.sessions as s; "
    "s.FORGET_EVERY_SECONDS = float(sys.argv.pop(1)); "
    "from server.__main__ import main; sys.exit(main())"
)
# Tables that grow with the days (the history), against those that grow with the users.
HISTORY = ("sessions", "activity", "ledger", "audit_events", "audit_teams", "notifications")


@dataclass
class Reading:
    """One look at the database and the server's memory."""

    step: str
    rows: dict[str, int]
    bytes: dict[str, int]
    files: int  # the database's files on disk (SQLite: db + WAL; PostgreSQL: the database)
    rss: int  # the server process's VmRSS, bytes
    front_rss: int = 0
    in_memory_sessions: int = -1  # ListSessions with ended ones: what memory holds
    clock_events: int = 0  # audit events of AdvanceClock (the benchmark's own, test clock only)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@dataclass
class Day:
    heartbeats: int = 0
    morning_heartbeats: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def count(self, method: str, n: int = 1) -> None:
        self.calls[method] = self.calls.get(method, 0) + n


# -- the database --------------------------------------------------------------------


CLOCK_EVENTS_SQL = "SELECT COUNT(*) FROM audit_events WHERE method LIKE '%AdvanceClock%'"


def sqlite_reading(path: Path) -> tuple[dict[str, int], dict[str, int], int, int]:
    """Rows and bytes (pages of the table and its indexes) per table, the files'
    size after a passive checkpoint, and AdvanceClock's audit events, read on a
    connection of its own."""
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE name <> ''"))
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        sizes: dict[str, int] = dict.fromkeys(tables, 0)
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            if table in sizes:
                sizes[table] += int(size)
        rows = {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in tables}  # noqa: S608
        clock = int(conn.execute(CLOCK_EVENTS_SQL).fetchone()[0])
    finally:
        conn.close()
    files = sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )
    return rows, sizes, files, clock


async def pg_reading(url: str) -> tuple[dict[str, int], dict[str, int], int, int]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        found = await conn.fetch(
            "SELECT relname, pg_total_relation_size(relid) AS size FROM pg_stat_user_tables"
        )
        sizes = {r["relname"]: int(r["size"]) for r in found}
        rows = {t: int(await conn.fetchval(f'SELECT COUNT(*) FROM "{t}"')) for t in sizes}  # noqa: S608
        files = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        clock = int(await conn.fetchval(CLOCK_EVENTS_SQL))
    finally:
        await conn.close()
    return rows, sizes, files, clock


async def compacted(url: str) -> Reading:
    """PostgreSQL's tables after ``VACUUM FULL`` (the server stopped): the rows alone."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute("VACUUM FULL")
    finally:
        await conn.close()
    rows, sizes, files, clock = await pg_reading(url)
    return Reading("compacted (VACUUM FULL)", rows, sizes, files, 0, clock_events=clock)


# -- the server ----------------------------------------------------------------------


class Server:
    """The server under measure, started again on the same database as asked."""

    def __init__(self, a: argparse.Namespace, tmp: Path, db: str, token: str) -> None:
        self.a, self.tmp, self.db, self.token = a, tmp, db, token
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> Child:
        self.starts += 1
        args = [
            *(sys.executable, "-c", SERVER_MAIN, str(self.a.forget_every)),
            *("--listen", "127.0.0.1:0", "--db", self.db, "--admin-token", self.token),
            *("--log-format", "json", "--test-clock", T0.isoformat().replace("+00:00", "Z")),
            *("--heartbeat-flush", str(self.a.flush_every)),
        ]
        if self.db.startswith("postgresql"):
            args += ["--secrets-dir", str(self.tmp / "secrets")]
        self.child = Child(f"tessera-{self.starts}", args, self.tmp).start()
        return self.child

    def stop(self) -> None:
        if self.child is not None:
            code = self.child.stop()
            if code != 0:
                raise RuntimeError(f"the server stopped with exit code {code}")

    @property
    def target(self) -> str:
        assert self.child is not None  # noqa: S101 - started first
        return self.child.target

    async def read(self, step: str, admin: Admin | None, *, settle: bool = True) -> Reading:
        """``settle``: after the heartbeats' flush (not: at once, before the forget pass
        that a start runs a couple of ``--forget-every`` later)."""
        if settle:
            await asyncio.sleep(self.a.flush_every * 2.5)
        if self.db.startswith("postgresql"):
            rows, sizes, files, clock = await pg_reading(self.db)
        else:
            rows, sizes, files, clock = await asyncio.to_thread(sqlite_reading, Path(self.db))
        assert self.child is not None  # noqa: S101
        reading = Reading(
            step,
            rows,
            sizes,
            files,
            status_kib(self.child.pid, "VmRSS") * KIB,
            status_kib(self.child.front_pid, "VmRSS") * KIB if self.child.front_pid else 0,
            clock_events=clock,
        )
        if admin is not None:
            reading.in_memory_sessions = await admin.sessions_in_memory()
        return reading


class Admin(AsyncAdminClient):
    """The SDK's admin client with the operator's token, and what the day asks of it."""

    def __init__(self, target: str, token: str) -> None:
        # AdvanceClock fires every deadline of the hours it passes: a long call.
        super().__init__(target, token, retry=RetryPolicy(call_timeout=600.0, total_timeout=None))

    async def advance(self, by: timedelta) -> None:
        """AdvanceClock by ``by``, as an instant from the server's own now."""
        now = (await self.get_server_info()).now.ToDatetime(tzinfo=UTC)
        await self.advance_clock(to_time=now + by)

    async def sessions_in_memory(self) -> int:
        """Sessions ListSessions lists with the ended ones: those memory holds."""

        async def fetch(token: str) -> Any:
            return await self.list_sessions(include_ended=True, page_size=1000, page_token=token)

        return sum([1 async for _ in pages(fetch, lambda page: page.sessions)])


async def in_flight(calls: Iterable[Awaitable[None]], limit: int) -> None:
    """Await ``calls``, ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


# -- the day ---------------------------------------------------------------------------


async def admin_work(admin: Admin, users: Users, a: argparse.Namespace, day: Day) -> None:
    """Invitations, assignments and resends: what administrators do in a day."""
    run = secrets.token_hex(3)
    invited = [f"Invitee {i} <invitee-{i:05d}-{run}@example.org>" for i in range(a.invites)]
    if invited:
        members = await admin.assign_users(users.team_id, invited, product_ids=[users.product_id])
        day.count("AssignUsers")
        for member in members[: max(1, len(members) // 10)]:
            await admin.resend_invitation(users.team_id, member.user_id)
            day.count("ResendInvitation")

    async def assign(user_id: str) -> None:
        await admin.set_user_products(
            users.team_id, user_id, product_ids=[users.product_id, users.plugin_id]
        )

    some = [u for u, _ in users.users[: a.assignments]]
    await in_flight((assign(u) for u in some), 16)
    day.count("SetUserProducts", len(some))


class Player:
    """Every user's one session on one device, driven through a day."""

    def __init__(self, channel: grpc.aio.Channel, users: Users, concurrency: int) -> None:
        self.stub: Any = licensing_service_pb2_grpc.LicensingServiceStub(channel)
        self.users = users
        self.concurrency = concurrency
        self.md = [(("authorization", f"Bearer {key}"),) for _, key in users.users]
        self.sessions = [""] * len(users.users)
        self.day = 0  # the day played (its Entitles' request ids)

    async def each(self, call: Callable[[int], Awaitable[None]]) -> None:
        await in_flight((call(i) for i in range(len(self.sessions))), self.concurrency)

    async def entitle(self, i: int) -> None:
        answer = await self.stub.Entitle(
            lic.EntitleRequest(
                product_id=self.users.product_id,
                product_version="2026",
                platform=common_pb2.PLATFORM_WINDOWS,
                device_id=f"pc-{i:06d}",
                request_id=f"cap-e-{self.day}-{i}",
            ),
            metadata=self.md[i],
            timeout=60,
        )
        self.sessions[i] = answer.session.session_id

    def heartbeat(self, seconds_since_activity: int) -> Callable[[int], Awaitable[None]]:
        async def call(i: int) -> None:
            answer = await self.stub.Heartbeat(
                lic.HeartbeatRequest(
                    session_id=self.sessions[i], seconds_since_activity=seconds_since_activity
                ),
                metadata=self.md[i],
                timeout=60,
            )
            if answer.session.state == common_pb2.SESSION_STATE_ENDED:
                raise RuntimeError(f"session {self.sessions[i]} ended during the day")

        return call

    async def idle(self, i: int) -> None:
        await self.stub.Idle(
            lic.IdleRequest(session_id=self.sessions[i]), metadata=self.md[i], timeout=60
        )

    async def release(self, i: int) -> None:
        await self.stub.Release(
            lic.ReleaseRequest(session_id=self.sessions[i]), metadata=self.md[i], timeout=60
        )


async def play_day(
    admin: Admin,
    player: Player,
    a: argparse.Namespace,
    day: Day,
    read: Callable[[str], Any] | None,
    start: datetime = T0,
) -> dict[str, Reading]:
    """08:00 Entitle; heartbeats every ``a.every`` minutes; Idle 12:00-13:00; Release.
    ``read``: the readings of the first day (None on the days after it)."""
    n = len(player.sessions)
    every = timedelta(minutes=a.every)
    readings: dict[str, Reading] = {}
    await player.each(player.entitle)
    day.count("Entitle", n)
    now = start
    lunch, back, end = (start + timedelta(hours=h) for h in (4, 5, a.hours))
    morning_started = False
    while now + every <= end:
        await admin.advance(every)
        now += every
        day.count("AdvanceClock")
        if now == lunch:
            if read is not None:
                readings["morning"] = await read("morning heartbeats done")
            await player.each(player.idle)
            day.count("Idle", n)
            continue
        idle_for = int((now - lunch).total_seconds()) + 60 if lunch < now < back else 0
        await player.each(player.heartbeat(idle_for))
        day.count("Heartbeat", n)
        day.heartbeats += n
        if now < lunch and read is not None:
            if not morning_started and now >= start + timedelta(minutes=10):
                # The grace ends are behind (captured at 08:05): from here to 12:00 only
                # heartbeats change anything.
                readings["entitled"] = await read("entitled, graces captured")
                morning_started = True
            elif morning_started:
                day.morning_heartbeats += n
    await player.each(player.release)
    day.count("Release", n)
    return readings


# -- the report ------------------------------------------------------------------------


def per_row(r: Reading, tables: Iterable[str]) -> tuple[int, int]:
    rows = sum(r.rows.get(t, 0) for t in tables)
    size = sum(r.bytes.get(t, 0) for t in tables)
    return rows, size


def bytes_per_row(r: Reading, *tables: str) -> float:
    rows, size = per_row(r, tables)
    return size / rows if rows else 0.0


def table_of(readings: list[Reading]) -> str:
    tables = sorted({t for r in readings for t in r.rows}, key=lambda t: -readings[-1].bytes[t])
    head = f"{'table':<16}" + "".join(f"{r.step[:22]:>24}" for r in readings)
    lines = [head, f"{'':<16}" + "".join(f"{'rows':>10} {'KiB':>13}" for _ in readings)]
    for t in tables:
        lines.append(
            f"{t:<16}"
            + "".join(
                f"{r.rows.get(t, 0):>10,} {r.bytes.get(t, 0) / KIB:>13,.1f}" for r in readings
            )
        )
    lines.append(
        f"{'(tables)':<16}" + "".join(f"{'':>10} {r.total / KIB:>13,.1f}" for r in readings)
    )
    lines.append(
        f"{'(files)':<16}" + "".join(f"{'':>10} {r.files / KIB:>13,.1f}" for r in readings)
    )
    lines.append(
        f"{'RSS MiB':<16}"
        + "".join(f"{'':>10} {r.rss / MIB:>13,.1f}" for r in readings)
        + "   (the server process; its front: "
        + ", ".join(f"{r.front_rss / MIB:.1f}" for r in readings)
        + ")"
    )
    lines.append(
        f"{'in memory':<16}"
        + "".join(f"{'':>10} {r.in_memory_sessions:>13,}" for r in readings)
        + "   (sessions ListSessions lists, ended ones included)"
    )
    return "\n".join(lines)


def summary(
    a: argparse.Namespace, day: Day, r: dict[str, Reading], store: str, users: int
) -> tuple[list[str], str]:
    """The figures as lines, and the CAPACITY line."""
    setting, entitled, morning, ended = r["setting"], r["entitled"], r["morning"], r["day"]
    # The morning's AdvanceClock calls are audited (AD2): the benchmark's test clock,
    # no heartbeat's. Every other row, and the bytes of every other table, counts.
    clock_rows = morning.clock_events - entitled.clock_events
    hb_rows = sum(morning.rows.values()) - sum(entitled.rows.values()) - clock_rows
    hb_bytes = (morning.total - morning.bytes.get("audit_events", 0)) - (
        entitled.total - entitled.bytes.get("audit_events", 0)
    )
    hb_rss = morning.rss - entitled.rss
    grown = {t: ended.bytes.get(t, 0) - setting.bytes.get(t, 0) for t in HISTORY}
    # Bytes a row: PostgreSQL's as the rows stand compacted (VACUUM FULL, once the
    # server stopped: the day's dead versions of rewritten rows are autovacuum's to
    # reuse, not a year's growth); SQLite's as they stand (it rewrites in place).
    sized = r.get("compacted", ended)
    per_day = {
        t: (ended.rows.get(t, 0) - setting.rows.get(t, 0)) / users
        for t in ("sessions", "activity", "ledger")
    }
    # A user's day: their session, its spans and ledger entries (the admin work of
    # the day, audit and notifications, is the administrators', not per user).
    user_day = sum(n * bytes_per_row(sized, t) for t, n in per_day.items())
    # What a user keeps whatever the days: their user, membership and device rows
    # (the invitees' too: a few more users than --users).
    kept_per_user = sum(sized.bytes.get(t, 0) for t in ("users", "members", "devices")) / users
    year = user_day * a.days_a_year
    audit_rows = sized.rows.get("audit_events", 0)
    figures = {
        "session_b": bytes_per_row(sized, "sessions"),
        "activity_b": bytes_per_row(sized, "activity"),
        "ledger_entry_b": bytes_per_row(sized, "ledger"),
        "audit_event_b": (sized.bytes.get("audit_events", 0) + sized.bytes.get("audit_teams", 0))
        / max(1, audit_rows),
        "notification_b": bytes_per_row(sized, "notifications"),
        "invitation_b": bytes_per_row(sized, "invitations"),
        "user_b": kept_per_user,
    }
    lines = [
        f"Store: {store}; {users:,} users, {day.heartbeats:,} heartbeats "
        f"({day.morning_heartbeats:,} in the morning's measure), calls {day.calls}",
        "Bytes per stored row (its table's pages and its indexes', over its rows, "
        + ("compacted):" if "compacted" in r else "after the day):"),
        *(f"  {k:<28} {v:>10,.0f}" for k, v in figures.items()),
        f"The morning's {day.morning_heartbeats:,} heartbeats: {hb_rows:+,} rows "
        f"(and {clock_rows} audit events of the test clock's AdvanceClock), "
        f"{hb_bytes:+,} bytes of the other tables, {hb_rss / MIB:+.1f} MiB of RSS "
        f"({hb_bytes / max(1, day.morning_heartbeats):+.2f} B and "
        f"{hb_rss / max(1, day.morning_heartbeats):+.1f} B of RSS a heartbeat)",
        "The day's growth by table (bytes): " + ", ".join(f"{t} {grown[t]:+,}" for t in HISTORY),
        "Rows a user's day added: " + ", ".join(f"{t} {n:.2f}" for t, n in per_day.items()),
        f"A user's day (sessions, activity, ledger): {user_day:,.0f} B; a year of "
        f"{a.days_a_year} such days: {year / MIB:,.2f} MiB a user "
        f"({year * 1000 / MIB / 1024:,.2f} GiB for 1,000 users)",
    ]
    later = ""
    if "last" in r:  # what each day after the first added, as stored (dead versions too)
        days = a.days - 1
        later_b = (r["last"].total - ended.total) / days / users
        later_rows = (sum(r["last"].rows.values()) - sum(ended.rows.values())) / days / users
        lines.append(
            f"Each of the {days} days after the first: {later_b:,.0f} B of tables and "
            f"{later_rows:.2f} rows a user (the first: {user_day:,.0f} B in its rows; "
            "the test clock's AdvanceClock audit events included)"
        )
        later = f" later_day_user_b={later_b:.0f}"
    rss = {
        k: r[k].rss / MIB
        for k in ("empty", "setting", "day", "forgotten", "restarted", "reforgotten")
    }
    empty = r["empty"].rss
    lines.append(
        "RSS (MiB): "
        + ", ".join(f"{k} {v:,.1f}" for k, v in rss.items())
        + f"; over the empty server, a user: {(r['day'].rss - empty) / users:,.0f} B after "
        f"the day (its live or ended session in memory), "
        f"{(r['reforgotten'].rss - empty) / users:,.0f} B restarted with none "
        "(RSS does not fall when the forget pass frees objects: the allocator keeps its pages)"
    )
    line = (
        f"CAPACITY store={store.split()[0]} users={users} heartbeats={day.heartbeats} "
        f"heartbeat_rows={hb_rows} heartbeat_bytes={hb_bytes} "
        + " ".join(f"{k}={v:.0f}" for k, v in figures.items())
        + f" user_day_b={user_day:.0f} user_year_mib={year / MIB:.2f} "
        f"db_day_mib={ended.files / MIB:.2f}{later} "
        + " ".join(f"rss_{k}_mib={v:.1f}" for k, v in rss.items())
    )
    return lines, line


# -- main -----------------------------------------------------------------------------


@contextlib.contextmanager
def database(a: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str]]:
    """The database's --db and the store's name."""
    if not a.postgres:
        yield str(tmp / "capacity.db"), "SQLite (synchronous=FULL)"
        return
    with throwaway_postgres(tmp) as url:
        yield asyncio.run(new_database(url, "capacity")), "PostgreSQL (pgserver)"


async def measure(a: argparse.Namespace, server: Server, store: str) -> int:
    token = server.token
    server.start()
    day = Day()
    readings: dict[str, Reading] = {}
    t0 = time.monotonic()
    try:
        async with Admin(server.target, token) as admin:
            readings["empty"] = await server.read("empty", admin)
        users = await provision(
            Targets([server.target]), RetryPolicy(call_timeout=120.0), token, a.users
        )
        async with (
            grpc.aio.insecure_channel(server.target) as channel,
            Admin(server.target, token) as admin,
        ):
            await admin_work(admin, users, a, day)
            readings["setting"] = await server.read("setting", admin)
            player = Player(channel, users, a.concurrency)
            readings |= await play_day(admin, player, a, day, lambda step: server.read(step, admin))
            readings["day"] = await server.read("the day, released", admin)
            for k in range(1, a.days):  # the same day again, from 08:00 the day after
                await admin.advance(timedelta(hours=24 - a.hours))
                player.day = k
                await play_day(admin, player, a, day, None, T0 + timedelta(days=k))
            if a.days > 1:
                readings["last"] = await server.read(f"day {a.days}, released", admin)
            await admin.advance(timedelta(days=2, hours=1))
            readings["forgotten"] = await forgotten(server, admin, "ENDED_KEPT past")
        server.stop()
        server.start()
        async with Admin(server.target, token) as admin:
            readings["restarted"] = await server.read("restarted", admin, settle=False)
            readings["reforgotten"] = await forgotten(server, admin, "restarted, let go")
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    if a.postgres:
        readings["compacted"] = await compacted(server.db)
    order = [
        "empty",
        "setting",
        "entitled",
        "morning",
        "day",
        *(["last"] if a.days > 1 else []),
        "forgotten",
        "restarted",
        "reforgotten",
        *(["compacted"] if a.postgres else []),
    ]
    print(table_of([readings[k] for k in order]))
    lines, line = summary(a, day, readings, store, a.users)
    print("\n".join(lines))
    print(f"({time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})")
    print(line)
    return 0


async def forgotten(server: Server, admin: Admin, step: str, timeout: float = 120.0) -> Reading:
    """A reading once memory holds no ended session (the server's forget pass ran)."""
    deadline = time.monotonic() + timeout
    while True:
        reading = await server.read(step, admin)
        if reading.in_memory_sessions == 0 or time.monotonic() > deadline:
            return reading
        await asyncio.sleep(server.a.forget_every)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--users", type=int, default=2000, help="users, one session a day each")
    p.add_argument("--days", type=int, default=1, help="working days played, one after another")
    p.add_argument("--hours", type=int, default=9, help="the working day's hours from 08:00")
    p.add_argument("--every", type=int, default=5, help="minutes of test clock between heartbeats")
    p.add_argument("--invites", type=int, default=200, help="new people invited")
    p.add_argument("--assignments", type=int, default=100, help="SetUserProducts calls")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    p.add_argument("--days-a-year", type=int, default=260, help="working days, for the projection")
    p.add_argument(
        "--flush-every", type=float, default=1.0, help="the server's --heartbeat-flush (seconds)"
    )
    p.add_argument(
        "--forget-every", type=float, default=2.0, help="seconds between the forget passes"
    )
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL (pgserver)")
    a = p.parse_args(argv)
    if a.hours < 6 or 60 % a.every or a.every >= 15 or a.users < 1 or a.days < 1:
        p.error(
            "--hours at least 6 (lunch is 12:00-13:00), --every a divisor of 60 under 15 "
            "(a session heartbeating less often goes idle, RULES M6), --users and --days at least 1"
        )
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tessera-capacity-") as tmp_name:
        tmp = Path(tmp_name)
        with database(a, tmp) as (db, store):
            server = Server(a, tmp, db, "tsa_" + secrets.token_urlsafe(24))
            return asyncio.run(measure(a, server, store))


if __name__ == "__main__":
    raise SystemExit(main())
