"""Crash safety (issue 6, item 5): load, kill -9 at a random moment, restart, check.

Each cycle starts ``python -m server`` on the same database (test clock), runs
load against it from several threads (user threads entitle, heartbeat, idle
and release; an operator thread buys tokens, advances the clock so that holds
are captured and windows renew, and reads the ledger), then kills the server
with SIGKILL while calls are in flight. Then:

1. ``python -m server verify --db`` on the database as the crash left it: the
   ledger's hash chain holds and every pack's entries add up (exit 0);
2. the server starts again on it, and everything it acknowledged is there:
   every purchase (pack id, team and tokens; a purchase whose answer was lost
   is sent again with its request id and must not buy twice), every session a
   client was told about (same user, team, product and device; ended ones
   with the same end; the hold behind one told it was in grace, the capture
   behind one told it was charged), every device, every ledger entry read
   before the crash, the clock no earlier than the last advance acknowledged,
   and each team's available and held tokens equal to the sums over its packs.

Heartbeats' lease extensions are written in batches (``--heartbeat-flush``) and
may be lost by a crash by design; nothing here relies on them.

    python scripts/crash_loop.py --cycles 50 [--seed N] [--dir DIR]

``tests/security/test_crash_safety.py`` runs a few cycles of the same loop in
``make test``.
"""

# S101: asserts narrow Optional types for mypy; S311: random picks load and kill moments,
# nothing secret; E402: the repository goes on sys.path before its modules are imported.
# ruff: noqa: S101, S311, E402

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc
from google.protobuf import message

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import (
    admin_service_pb2_grpc,
    licensing_service_pb2_grpc,
)
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tests.support import ADMIN_TOKEN, T0, ServerProcess

ADMIN = [("authorization", f"Bearer {ADMIN_TOKEN}")]
TEAMS = ("alpha", "beta")
DAY = timedelta(days=1)
GRACE = timedelta(minutes=5)
# Refusals the rules give under load; anything else is a problem.
EXPECTED = {
    grpc.StatusCode.FAILED_PRECONDITION,  # tokens, running elsewhere, device limit, host...
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,  # NOT_ASSIGNED
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # SESSION_LIMIT (M13): users here open many at random
}
# What a call sees when the server dies under it.
GONE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
# Also, but only once it has been killed: a connection cut mid-call ("Stream removed").
CUT = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

M = TypeVar("M", bound=message.Message)


def _time(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)


@dataclass(frozen=True)
class Told:
    """One session as a client was last told about it."""

    session: pb.Session
    via: str = ""  # the call whose answer told it

    @property
    def ended(self) -> bool:
        return self.session.state == pb.SESSION_STATE_ENDED


@dataclass
class Acknowledged:
    """Everything the server acknowledged, across all cycles."""

    packs: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # request_id -> ...
    unanswered: dict[str, tuple[str, int]] = field(default_factory=dict)  # purchases in flight
    sessions: dict[str, Told] = field(default_factory=dict)
    devices: set[tuple[str, str, str]] = field(default_factory=set)
    ledger: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # entry_id -> fields
    clock: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Summary:
    cycles: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    in_flight_at_kill: int = 0
    problems: list[str] = field(default_factory=list)
    lost: int = 0  # acknowledged things found gone or changed (each also a problem)
    # scripts/chaos.py: calls acknowledged by a new active in the load that saw the
    # takeover, and what the sessions live at a kill said at their next heartbeat.
    followed: int = 0
    continued: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def acknowledged(self) -> int:
        return sum(n for k, n in self.calls.items() if k.endswith(":OK"))

    def line(self) -> str:
        return (
            f"{self.cycles} cycles survived; {sum(self.calls.values())} calls "
            f"({self.acknowledged} acknowledged), {self.in_flight_at_kill} in flight at the "
            f"kills; {self.lost} lost; {len(self.problems)} problems; {self.seconds:.1f} s"
        )


def _entry_fields(e: pb.LedgerEntry) -> tuple[Any, ...]:
    return (
        e.entry_id,
        e.time.seconds,
        e.time.nanos,
        e.kind,
        e.pack_id,
        e.amount,
        e.session_id,
        e.user_id,
        e.product_id,
        e.team_id,
        e.remaining_delta,
        e.held_delta,
    )


class Server(ServerProcess):
    """``ServerProcess`` with its stderr kept in a file beside the database (a failed
    start says why) and a start that gives up after ``timeout`` even when the child
    neither serves nor exits."""

    def start(self, timeout: float = 60) -> Server:
        args = [
            sys.executable,
            "-m",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(self.db),
            "--admin-token",
            ADMIN_TOKEN,
            "--log-format",
            "json",
            "--test-clock",
            self.test_clock or T0,
            *self.extra,
        ]
        log = self.stderr_log
        with log.open("ab") as err:
            err.write(b"--- start\n")
            err.flush()
            self.proc = subprocess.Popen(  # noqa: S603
                args,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        watchdog = threading.Timer(timeout, self._give_up)
        watchdog.start()
        try:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = json.loads(raw)
                self.lines.append(line)
                if line.get("event") in self.ready:
                    self.port = int(line["port"])
                    self._drainer = threading.Thread(target=self._drain, daemon=True)
                    self._drainer.start()
                    return self
            code = self.proc.wait(10)
            self.proc.stdout.close()
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server did not start (exit {code}):\n{tail}")
        finally:
            watchdog.cancel()

    @property
    def stderr_log(self) -> Path:
        return Path(self.db).parent / "server-stderr.log"

    def _give_up(self) -> None:
        if self.port == 0 and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


class Cluster:
    """The database, the running server, and the clients' keys."""

    def __init__(self, workdir: Path, rng: random.Random, summary: Summary) -> None:
        self.db = workdir / "tessera.db"
        self.rng = rng
        self.summary = summary
        self.acked = Acknowledged()
        self.keys: dict[str, str] = {}  # user_id -> key
        self.proc: Server | None = None
        self.channel: grpc.Channel | None = None
        self.admin: admin_service_pb2_grpc.AdminServiceStub | None = None
        self.killed = threading.Event()

    # -- the process ------------------------------------------------------------------

    def start(self) -> None:
        self.proc = Server(self.db).start()
        self.killed.clear()
        self.channel = grpc.insecure_channel(self.proc.target)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = None

    def kill(self) -> None:
        assert self.proc is not None
        self.killed.set()
        self.proc.kill()

    def terminate(self) -> int:
        assert self.proc is not None
        self.close_channel()
        return self.proc.terminate()

    def verify_on_disk(self, when: str) -> None:
        out = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "server", "verify", "--db", str(self.db)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            self.problem(f"{when}: verify exited {out.returncode}: {out.stdout}{out.stderr}")

    def problem(self, text: str) -> None:
        self.summary.problems.append(f"cycle {self.summary.cycles + 1}: {text}")

    def lose(self, text: str) -> None:
        """Something acknowledged is gone or changed: a problem, counted as lost."""
        self.summary.lost += 1
        self.problem(text)

    def count(self, what: str, code: grpc.StatusCode) -> None:
        self.summary.calls[f"{what}:{code.name}"] += 1

    def a(self, method: str, request: Any) -> Any:
        """An operator's call that must succeed (setup and checks)."""
        assert self.admin is not None
        return getattr(self.admin, method)(request, metadata=ADMIN, timeout=60)

    # -- the world ------------------------------------------------------------------

    def setup(self) -> None:
        every = [pb.PLATFORM_WINDOWS, pb.PLATFORM_MACOS, pb.PLATFORM_LINUX]
        for team in TEAMS:
            self.a("CreateTeam", api.CreateTeamRequest(team_id=team))
        for product in (
            pb.Product(product_id="ACAD", daily_rate=10, idle_aware=True, platforms=every),
            pb.Product(product_id="REVIT", daily_rate=7, platforms=every),
            pb.Product(product_id="FREE", daily_rate=0, platforms=every),
            pb.Product(
                product_id="PLUG",
                daily_rate=2,
                kind=pb.PRODUCT_KIND_PLUGIN,
                host_product_id="ACAD",
                platforms=every,
            ),
        ):
            self.a("UpsertProduct", api.UpsertProductRequest(product=product))
        users = [f"u{i}@crash.test" for i in range(6)]
        self.a(
            "ImportUsers",
            api.ImportUsersRequest(
                team_id="alpha",
                users=[f"U{i} <{u}>" for i, u in enumerate(users)],
                all_products=True,
            ),
        )
        # Half of them also in beta: the server chooses the team (C3) or honours a preference.
        self.a(
            "ImportUsers",
            api.ImportUsersRequest(team_id="beta", users=users[::2], all_products=True),
        )
        for u in users:
            self.keys[u] = self.a("IssueUserKey", api.IssueUserKeyRequest(user_id=u)).user_key
        for i, team in enumerate(TEAMS):
            self.a(
                "PurchaseTokens",
                api.PurchaseTokensRequest(team_id=team, tokens=200, request_id=f"seed-{i}"),
            )

    # -- load --------------------------------------------------------------------------

    def load(self, seconds: float) -> None:
        """Run load, kill the server ``seconds`` in, and wait for the clients to notice."""
        assert self.proc is not None
        busy = [0]
        busy_lock = threading.Lock()
        stop = threading.Event()
        cycle = self.summary.cycles
        threads = [
            threading.Thread(
                target=self._guarded(self._user),
                args=(u, k, stop, busy, busy_lock, random.Random(self.rng.random())),
                daemon=True,
            )
            for u, k in sorted(self.keys.items())
        ]
        threads.append(
            threading.Thread(
                target=self._guarded(self._operator),
                args=(cycle, stop, busy, busy_lock, random.Random(self.rng.random())),
                daemon=True,
            )
        )
        for t in threads:
            t.start()
        time.sleep(seconds)
        with busy_lock:
            self.summary.in_flight_at_kill += busy[0]
        self.kill()
        stop.set()
        for t in threads:
            t.join(60)
            if t.is_alive():
                self.problem("a client thread hung after the kill")
        self.close_channel()

    def _guarded(self, body: Callable[..., None]) -> Callable[..., None]:
        """A client thread whose failure is a problem of the run, not a silent stop."""

        def run(*args: Any) -> None:
            try:
                body(*args)
            except Exception as exc:
                self.problem(f"client thread {body.__name__} failed: {exc!r}")

        return run

    def _call(
        self,
        what: str,
        fn: Callable[..., M],
        request: Any,
        metadata: list[tuple[str, str]],
        busy: list[int],
        busy_lock: threading.Lock,
    ) -> M | grpc.StatusCode:
        with busy_lock:
            busy[0] += 1
        try:
            reply = fn(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            if code in CUT and self.killed.is_set():
                code = grpc.StatusCode.UNAVAILABLE
            self.count(what, code)
            if code not in EXPECTED and code not in GONE:
                self.problem(f"{what}: {code.name} {exc.details()}")
            return code
        finally:
            with busy_lock:
                busy[0] -= 1
        self.count(what, grpc.StatusCode.OK)
        return reply

    def _told(self, session: pb.Session, via: str) -> None:
        with self.acked.lock:
            self.acked.sessions[session.session_id] = Told(session, via)
            self.acked.devices.add((session.user_id, session.product_id, session.device_id))

    def _user(
        self,
        user_id: str,
        key: str,
        stop: threading.Event,
        busy: list[int],
        busy_lock: threading.Lock,
        rng: random.Random,
    ) -> None:
        assert self.channel is not None
        stub = licensing_service_pb2_grpc.LicensingServiceStub(self.channel)
        md = [("authorization", f"Bearer {key}")]
        device, live = self.user_start(user_id, rng)
        n = 0
        while not stop.is_set():
            n += 1
            what, request, device = self.user_step(user_id, device, live, rng, n)
            reply = self._call(what, getattr(stub, what), request, md, busy, busy_lock)
            if isinstance(reply, grpc.StatusCode):
                self.user_refused(user_id, what, request, reply)
                if reply in GONE:
                    return
                continue
            live = self.user_answered(live, reply.session, what)

    # The steps of a user's and of the operator's load, shared with
    # ``scripts/chaos.py``, whose clients make the same calls through the SDK.

    def user_start(self, user_id: str, rng: random.Random) -> tuple[str, list[pb.Session]]:
        """A user's device, and the sessions they were told are live."""
        device = f"{user_id.split('@')[0]}-d{rng.randint(1, 2)}"
        with self.acked.lock:  # the other threads add to it meanwhile
            live = [
                t.session
                for t in self.acked.sessions.values()
                if t.session.user_id == user_id and not t.ended
            ]
        return device, live

    def user_step(
        self, user_id: str, device: str, live: list[pb.Session], rng: random.Random, n: int
    ) -> tuple[str, Any, str]:
        """A user's next call: the method, its request, and the device from now on."""
        roll = rng.random()
        if roll < 0.35 or not live:
            product = rng.choice(["ACAD", "ACAD", "REVIT", "FREE", "PLUG"])
            parent = ""
            if product == "PLUG":
                hosts = [s for s in live if s.product_id == "ACAD" and s.device_id == device]
                parent = rng.choice(hosts).session_id if hosts else ""
            takeover = rng.random() < 0.2
            if takeover:
                device = f"{user_id.split('@')[0]}-d{rng.randint(1, 2)}"
            request = lic.EntitleRequest(
                product_id=product,
                product_version=rng.choice(["2025", "2026", "2026.1"]),
                platform=rng.choice([pb.PLATFORM_WINDOWS, pb.PLATFORM_LINUX]),
                device_id=device,
                parent_session_id=parent,
                request_id=f"{user_id}-{time.monotonic_ns()}-{n}",
                takeover=takeover,
                team_id=rng.choice(["", "", "alpha", "beta"]),
            )
            return "Entitle", request, device
        target = rng.choice(live)
        sid = target.session_id
        if roll < 0.75:
            seconds = rng.choice([0, 5, 60, 2000])
            return (
                "Heartbeat",
                lic.HeartbeatRequest(session_id=sid, seconds_since_activity=seconds),
                device,
            )
        if roll < 0.85 and target.product_id == "ACAD":
            return "Idle", lic.IdleRequest(session_id=sid), device
        return "Release", lic.ReleaseRequest(session_id=sid), device

    def user_refused(self, user_id: str, what: str, request: Any, code: grpc.StatusCode) -> None:
        if code == grpc.StatusCode.NOT_FOUND and what != "Entitle":
            self.lose(f"{user_id}: session {request.session_id} was acknowledged but is not found")

    def user_answered(
        self, live: list[pb.Session], session: pb.Session, what: str
    ) -> list[pb.Session]:
        """Record what a user was told; the sessions they now hold live."""
        self._told(session, what)
        live = [s for s in live if s.session_id != session.session_id]
        if session.state != pb.SESSION_STATE_ENDED:
            live.append(session)
        return live

    def _operator(
        self,
        cycle: int,
        stop: threading.Event,
        busy: list[int],
        busy_lock: threading.Lock,
        rng: random.Random,
    ) -> None:
        assert self.channel is not None
        stub = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        n = 0
        while not stop.is_set():
            n += 1
            what, request = self.operator_step(cycle, n, rng)
            reply = self._call(what, getattr(stub, what), request, ADMIN, busy, busy_lock)
            if isinstance(reply, grpc.StatusCode):
                if reply in GONE:
                    return
            else:
                self.operator_answered(what, request, reply)
            time.sleep(rng.random() * 0.01)

    def operator_step(self, cycle: int, n: int, rng: random.Random) -> tuple[str, Any]:
        """The operator's next call: a purchase (unanswered until it is), a clock
        advance (captures charges, renews windows, expires leases) or a ledger read."""
        roll = rng.random()
        if roll < 0.3:
            team, tokens = rng.choice(TEAMS), rng.randint(5, 120)
            rid = f"c{cycle}-p{n}"
            with self.acked.lock:
                self.acked.unanswered[rid] = (team, tokens)
            return "PurchaseTokens", api.PurchaseTokensRequest(
                team_id=team, tokens=tokens, request_id=rid
            )
        if roll < 0.75:
            by = rng.choice([1, 30, 200, 290, 310, 900, 3600, 6 * 3600, 23 * 3600, 25 * 3600])
            request = api.AdvanceClockRequest()
            request.by.seconds = by
            return "AdvanceClock", request
        team = rng.choice(TEAMS)
        return "ListLedgerEntries", api.ListLedgerEntriesRequest(team_id=team, page_size=1000)

    def operator_answered(self, what: str, request: Any, reply: Any) -> None:
        if what == "PurchaseTokens":
            self._purchased(request.request_id, reply.token_pack)
        elif what == "AdvanceClock":
            with self.acked.lock:
                self.acked.clock = max(self.acked.clock, _time(reply.now))
        else:
            with self.acked.lock:
                for e in reply.entries:
                    self.acked.ledger[e.entry_id] = _entry_fields(e)

    def _purchased(self, rid: str, pack: pb.TokenPack) -> None:
        with self.acked.lock:
            self.acked.unanswered.pop(rid, None)
            self.acked.packs[rid] = (pack.pack_id, pack.team_id, pack.tokens)

    # -- the checks after a restart ---------------------------------------------------

    def _pages(self, method: str, request: Any, items: str) -> Iterator[Any]:
        for _ in range(100_000):
            page = self.a(method, request)
            yield from getattr(page, items)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token
        raise AssertionError(f"{method} never ends")

    def check(self) -> None:
        """Everything acknowledged so far is there (the server has just restarted)."""
        acked = self.acked
        info = self.a("GetServerInfo", api.GetServerInfoRequest())
        if _time(info.now) < acked.clock:
            self.problem(f"the clock went back from {acked.clock} to {_time(info.now)}")
        # Purchases whose answer the crash swallowed: sent again, bought at most once.
        for rid, (team, tokens) in sorted(acked.unanswered.items()):
            reply = self.a(
                "PurchaseTokens",
                api.PurchaseTokensRequest(team_id=team, tokens=tokens, request_id=rid),
            )
            self._purchased(rid, reply.token_pack)
        packs: dict[str, pb.TokenPack] = {}
        for team in TEAMS:
            # Every page: a long run buys more packs than one page holds (100 by default).
            paged = api.ListTokenPacksRequest(team_id=team, page_size=1000)
            team_packs = list(self._pages("ListTokenPacks", paged, "packs"))
            for p in team_packs:
                packs[p.pack_id] = p
            got = self.a("GetTeam", api.GetTeamRequest(team_id=team)).team
            sums = (
                sum(p.remaining_tokens for p in team_packs),
                sum(p.held_tokens for p in team_packs),
            )
            if (got.available_tokens, got.held_tokens) != sums:
                self.problem(
                    f"team {team}: available/held {(got.available_tokens, got.held_tokens)} "
                    f"but its packs add up to {sums}"
                )
        by_request = Counter(p.request_id for p in packs.values() if p.request_id)
        for rid, n in by_request.items():
            if n > 1:
                self.problem(f"purchase {rid} bought {n} packs")
        for rid, (pack_id, team, tokens) in list(acked.packs.items()):
            p = packs.get(pack_id)
            if p is None:
                self.lose(f"acknowledged purchase {rid} (pack {pack_id}) is gone")
                del acked.packs[rid]  # reported once
            elif (p.team_id, p.tokens, p.request_id) != (team, tokens, rid):
                self.lose(
                    f"pack {pack_id}: {p.team_id}/{p.tokens}/{p.request_id}, told {team}/{tokens}/{rid}"
                )
        # The ledger: every entry read before is still there, unchanged.
        ledger: dict[str, tuple[Any, ...]] = {}
        for team in TEAMS:
            request = api.ListLedgerEntriesRequest(team_id=team, page_size=1000)
            for e in self._pages("ListLedgerEntries", request, "entries"):
                ledger[e.entry_id] = _entry_fields(e)
        for entry_id, fields in acked.ledger.items():
            if ledger.get(entry_id) != fields:
                self.lose(f"ledger entry {entry_id} {fields} became {ledger.get(entry_id)}")
        acked.ledger = ledger  # what is there now (a loss is reported once)
        self._check_charges(ledger)
        self._check_sessions(ledger)
        # Devices registered by acknowledged Entitles.
        seen: dict[tuple[str, str], set[str]] = {}
        for user, product, device in sorted(acked.devices):
            if (user, product) not in seen:
                reply = self.a(
                    "ListDevices", api.ListDevicesRequest(user_id=user, product_id=product)
                )
                seen[(user, product)] = {d.device_id for d in reply.devices}
            if device not in seen[(user, product)]:
                self.lose(f"device {device} of {user} for {product} is gone")
                acked.devices.discard((user, product, device))  # reported once

    def _check_charges(self, ledger: dict[str, tuple[Any, ...]]) -> None:
        """No charge made twice: in each team's ledger order, what a meter has held in
        a pack is captured or released at most once (what it holds never goes below 0)."""
        holding = {pb.LEDGER_ENTRY_KIND_HOLD, pb.LEDGER_ENTRY_KIND_CAPTURE}
        holding.add(pb.LEDGER_ENTRY_KIND_HOLD_RELEASE)
        held: Counter[tuple[str, str, str, str]] = Counter()
        for f in ledger.values():
            if f[3] in holding:
                key = (f[9], f[7], f[8], f[4])  # team, user, product, pack
                held[key] += f[11]
                if held[key] < 0:
                    self.problem(f"entry {f[0]} captures or releases more than {key} held")
                    held[key] = 0

    def _check_sessions(self, ledger: dict[str, tuple[Any, ...]]) -> None:
        stored: dict[str, pb.Session] = {}
        request = api.ListSessionsRequest(include_ended=True, page_size=1000)
        for s in self._pages("ListSessions", request, "sessions"):
            stored[s.session_id] = s
        self._compare_sessions(stored, ledger)

    def _compare_sessions(
        self, stored: dict[str, pb.Session], ledger: dict[str, tuple[Any, ...]]
    ) -> None:
        """Every session a client was told about is stored as told, and a charge or
        grace it was told of is backed by a capture or hold in the ledger."""
        # Keyed by user and product, not team: the daily rate is paid once a day
        # whichever teams the user runs the product in (C3), so a session of one team
        # is told charged (or in grace) by what its user's meter in another team holds.
        holds: dict[tuple[str, str], list[datetime]] = {}
        captures: dict[tuple[str, str], list[datetime]] = {}
        for f in ledger.values():
            kind, user, product = f[3], f[7], f[8]
            when = datetime.fromtimestamp(f[1], UTC) + timedelta(microseconds=f[2] // 1000)
            if kind == pb.LEDGER_ENTRY_KIND_HOLD:
                holds.setdefault((user, product), []).append(when)
            elif kind == pb.LEDGER_ENTRY_KIND_CAPTURE:
                captures.setdefault((user, product), []).append(when)
        for sid, told in sorted(self.acked.sessions.items()):
            was = told.session
            now = stored.get(sid) or self._forgotten(was)
            if now is None:
                self.lose(f"session {sid} ({was.user_id} {was.product_id}) is gone")
                del self.acked.sessions[sid]  # reported once
                continue
            found = len(self.summary.problems)
            same = ("user_id", "team_id", "product_id", "device_id", "product_version", "platform")
            for name in same:
                if getattr(now, name) != getattr(was, name):
                    self.lose(
                        f"session {sid}: {name} {getattr(now, name)!r}, told {getattr(was, name)!r}"
                    )
            if was.start_time != now.start_time:
                self.lose(f"session {sid}: start_time changed")
            if told.ended and (
                now.state != pb.SESSION_STATE_ENDED
                or now.end_reason != was.end_reason
                or now.end_time != was.end_time
            ):
                self.lose(
                    f"session {sid} was told ended ({pb.EndReason.Name(was.end_reason)} at "
                    f"{_time(was.end_time)}, by {told.via}) but is "
                    f"{pb.SessionState.Name(now.state)} {pb.EndReason.Name(now.end_reason)}"
                    + (f" at {_time(now.end_time)}" if now.HasField("end_time") else "")
                )
            meter = (was.user_id, was.product_id)
            if was.charge_state == pb.CHARGE_STATE_GRACE:
                latest = _time(was.grace_end_time) - GRACE
                if not any(t <= latest for t in holds.get(meter, [])):
                    self.lose(
                        f"session {sid} was told (by {told.via}) it was in grace until "
                        f"{latest + GRACE}, but no hold is recorded; it is "
                        f"{pb.ChargeState.Name(now.charge_state)}"
                    )
            elif was.charge_state == pb.CHARGE_STATE_CHARGED:
                window_end = _time(was.window_end_time)
                if not any(window_end - DAY <= t < window_end for t in captures.get(meter, [])):
                    self.lose(
                        f"session {sid} was told (by {told.via}) it was charged until "
                        f"{window_end}, but no capture is recorded; it is "
                        f"{pb.ChargeState.Name(now.charge_state)}"
                    )
            if len(self.summary.problems) > found:  # reported once: go on from what is there
                self.acked.sessions[sid] = Told(now, "the restart")

    def _forgotten(self, was: pb.Session) -> pb.Session | None:
        """A session ended long ago leaves memory (M12); its user's Release answers from
        the store without changing anything."""
        assert self.channel is not None
        stub = licensing_service_pb2_grpc.LicensingServiceStub(self.channel)
        md = (("authorization", f"Bearer {self.keys[was.user_id]}"),)
        try:
            reply = stub.Release(
                lic.ReleaseRequest(session_id=was.session_id), metadata=md, timeout=30
            )
        except grpc.RpcError:
            return None
        if reply.session.state != pb.SESSION_STATE_ENDED:
            self.problem(f"session {was.session_id} was missing from ListSessions but live")
        return reply.session


def run(
    cycles: int,
    workdir: Path,
    seed: int | None = None,
    *,
    min_load: float = 0.05,
    max_load: float = 1.5,
    log: Callable[[str], None] = lambda line: None,
    cluster_type: Callable[[Path, random.Random, Summary], Cluster] | None = None,
) -> Summary:
    """``cycles`` kill -9 cycles on a fresh database in ``workdir`` (or on what
    ``cluster_type`` makes: ``scripts/chaos.py``'s servers on PostgreSQL)."""
    summary = Summary()
    rng = random.Random(seed)
    cluster = (cluster_type or Cluster)(workdir, rng, summary)
    started = time.monotonic()
    cluster.start()
    try:
        cluster.setup()
        for _ in range(cycles):
            cluster.load(rng.uniform(min_load, max_load))
            cluster.verify_on_disk("after kill -9")
            cluster.start()
            cluster.check()
            summary.cycles += 1
            summary.seconds = time.monotonic() - started
            log(f"cycle {summary.cycles}: {summary.line()}")
        code = cluster.terminate()
        if code != 0:
            cluster.problem(f"SIGTERM: exit {code}")
        cluster.verify_on_disk("after SIGTERM")
    finally:
        if (
            cluster.proc is not None
            and cluster.proc.proc is not None
            and cluster.proc.proc.poll() is None
        ):
            cluster.proc.kill()
        cluster.close_channel()
    summary.seconds = time.monotonic() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="keep the database here (default: a temporary directory)",
    )
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    if a.dir is not None:
        a.dir.mkdir(parents=True, exist_ok=True)
        summary = run(a.cycles, a.dir, seed, log=lambda line: print(line, flush=True))
    else:
        with tempfile.TemporaryDirectory(prefix="tessera-crash-") as tmp:
            summary = run(a.cycles, Path(tmp), seed, log=lambda line: print(line, flush=True))
    for problem in summary.problems:
        print(f"PROBLEM: {problem}")
    print(summary.line())
    for what, n in sorted(summary.calls.items()):
        print(f"  {what}: {n}")
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
