"""One worker process of a load run: its own event loop, channels and sessions.

The driver (``runner.py``) starts each worker with its share of the users and
then sends it one command per phase over a pipe; the worker answers with what
it measured. Between phases it keeps its sessions, so the Heartbeats of the
steady state go to the sessions its ramp-up opened.

The hot path is kept lean, for the generator shares the machine with the
server: requests are built once per session, the generated stubs are called
through the SDK's ``Failover`` alone (which finds the active among several
targets and, with one target, makes one attempt per call), and a latency costs
one ``array.append``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, ClassVar

import grpc

from client_sdk.clock import SystemClock
from client_sdk.errors import TesseraError
from client_sdk.failover import Failover
from client_sdk.load.config import RELEASE_ATTEMPTS, RELEASE_RETRY_WAIT, LoadConfig
from client_sdk.load.stats import PhaseStats, Recorder
from tessera_api.tessera.v1 import common_pb2, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

if TYPE_CHECKING:
    from tessera_api.tessera.v1.licensing_service_pb2_grpc import LicensingServiceAsyncStub

    Calls = Failover[LicensingServiceAsyncStub]  # a connection: a stub per target

# Slots of each worker in the shared counter array the driver reads for progress.
CALLS, ERRORS, LIVE, UNITS = range(4)
SLOTS = 4

ENDED = common_pb2.SESSION_STATE_ENDED
PLATFORMS = (common_pb2.PLATFORM_WINDOWS, common_pb2.PLATFORM_MACOS, common_pb2.PLATFORM_LINUX)

Command = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class UserSpec:
    n: int  # index of the user in the whole run
    user_id: str
    key: str
    plugin: bool  # also runs the plugin


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    config: LoadConfig
    team_id: str
    product_id: str
    plugin_id: str
    run_tag: str  # makes request ids unique per run (RULES M11 replays a repeated one)
    users: Sequence[UserSpec]
    budget: int  # LicensingService calls this worker may make
    hard_deadline: float  # time.monotonic() after which it makes none


@dataclass(slots=True, eq=False)
class Session:
    """One simulated running copy of the product (or of its plugin) on one device."""

    n: int
    md: tuple[tuple[str, str], ...]
    servers: Calls  # the connection its calls go through, to whichever server is active
    device_id: str
    platform: int
    product_id: str
    activity: int  # the seconds_since_activity this session reports
    host: Session | None = None  # set on a plugin session
    plugin: Session | None = None  # set on a host that runs the plugin
    session_id: str = ""
    live: bool = False
    idle: bool = False
    seq: int = 0
    hb: lic.HeartbeatRequest = field(default_factory=lic.HeartbeatRequest)


def error_key(exc: TesseraError) -> str:
    """``CODE`` or ``CODE/REASON`` when the status carries an ``ErrorInfo`` reason."""
    code = exc.code.name if exc.code is not None else "CLIENT"
    return code if exc.reason in ("", code) else f"{code}/{exc.reason}"


class Pacer:
    """Hands out evenly spaced start times at ``rate`` per second to any number of
    coroutines; after a stall it catches up by at most ``max_lag`` seconds."""

    def __init__(self, rate: float, max_lag: float = 0.5) -> None:
        self.interval = 1.0 / rate
        self.max_lag = max_lag
        self.next = time.monotonic()

    async def wait(self, deadline: float, abort: asyncio.Event) -> bool:
        """Wait for the caller's slot; True when it must stop instead of calling: ``abort``
        was set, or the slot lies at or past ``deadline`` (``time.monotonic()``). Never
        waits past either: many lanes take slots far ahead at a low rate."""
        now = time.monotonic()
        slot = max(self.next, now - self.max_lag)
        self.next = slot + self.interval
        until = min(slot, deadline)
        if until > now and not abort.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - now):
                    await abort.wait()
        return abort.is_set() or slot >= deadline


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection, counters: Any) -> None:
        self.spec = spec
        self.cfg = spec.config
        self.conn = conn
        self.counters = counters
        self.base = spec.index * SLOTS
        self.budget = spec.budget
        self.spent = False  # the phase under way stopped with its calls spent, work left
        self.rng = random.Random(self.cfg.seed * 1000 + spec.index)  # noqa: S311 - not a secret
        self.calls = 0
        self.errors = 0
        self.live = 0
        self.units = 0
        self.ended: dict[str, int] = {}
        self.samples: dict[str, str] = {}
        self.hosts: list[Session] = []
        self.sessions: list[Session] = []  # hosts and plugins
        self.abort = asyncio.Event()
        self.commands: asyncio.Queue[Command] = asyncio.Queue()
        self.connections: list[Calls] = []
        self.extra: list[PhaseStats] = []  # measured before the phase proper (warm-up)

    # -- plumbing ----------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                cmd: Command = self.conn.recv()
                if cmd[0] == "abort":
                    self.abort.set()
                else:
                    self.commands.put_nowait(cmd)
        except (EOFError, OSError):  # the driver is gone: stop
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.abort.set()
            self.commands.put_nowait(("exit", {}))

    def flush(self) -> None:
        c, b = self.counters, self.base
        c[b + CALLS] = self.calls
        c[b + ERRORS] = self.errors
        c[b + LIVE] = self.live
        c[b + UNITS] = self.units

    async def _flusher(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(0.1)

    def stopping(self, deadline: float) -> bool:
        """Whether the phase under way stops now: at its end (``deadline``), when the
        driver says so, or with its calls spent (``spent``: work left undone)."""
        if self.abort.is_set() or time.monotonic() >= deadline:
            return True
        if self.budget <= 0:
            self.spent = True
            return True
        return False

    def failed(self, rec: Recorder, exc: TesseraError) -> None:
        self.calls += 1
        self.errors += 1
        rec.error(error_key(exc), exc.message)

    def sample(self, rpc: str, response: Any) -> None:
        if rpc not in self.samples:
            self.samples[rpc] = response.SerializeToString().hex()

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        options = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel
        targets = cfg.new_targets()  # shared: a move to the active is made once for all
        self.connections = [
            Failover(
                targets,
                lambda address: grpc.aio.insecure_channel(address, options=options),
                licensing_service_pb2_grpc.LicensingServiceStub,
                retry=cfg.retry(),
                clock=SystemClock(),
                rng=self.rng,
            )
            for _ in range(cfg.channels)
        ]
        await self._connect()
        self._build_sessions(self.connections)
        loop.add_reader(self.conn.fileno(), self._on_readable)
        flusher = asyncio.ensure_future(self._flusher())
        self.conn.send(("ready", self.spec.index, {"sessions": len(self.sessions)}))
        try:
            while True:
                name, args = await self.commands.get()
                if name == "exit":
                    break
                self.abort.clear()
                self.units = 0
                self.spent = False
                self.extra = []
                stats = PhaseStats(name)
                stats.started = time.monotonic()
                await self.PHASES[name](self, stats, **args)
                if not stats.ended:  # a phase that closed its own window keeps it
                    stats.ended = time.monotonic()
                self.flush()
                info = {
                    "live": self.live,
                    "spent": self.spent,
                    "ended": dict(self.ended),
                    "samples": self.samples,
                    "extra": self.extra,
                }
                self.conn.send(("done", name, stats, info))
        finally:
            flusher.cancel()
            loop.remove_reader(self.conn.fileno())
            for calls in self.connections:
                await calls.close()

    async def _connect(self) -> None:
        """Wait until every connection reaches a server: each target for a call's timeout,
        all of them no later than the run's hard deadline (``ConnectionError`` then). A
        server that is down must not hold a run capped by ``--max-duration`` for
        ``--timeout`` (per connection and target) on top. At least a second, as ever: a
        worker that starts as the deadline comes still connects, so that the run ends
        stopped early (exit 3), not unable to connect."""
        cfg = self.cfg
        left = max(1.0, self.spec.hard_deadline - time.monotonic())
        try:
            async with asyncio.timeout(left):
                for calls in self.connections:
                    await calls.ready(timeout=min(max(1.0, cfg.timeout), left))
        except TimeoutError:
            raise ConnectionError(
                f"could not connect to {', '.join(cfg.targets)} "
                f"within --max-duration ({cfg.max_duration:g} s)"
            ) from None

    def _build_sessions(self, connections: list[Calls]) -> None:
        spec = self.spec
        for i, u in enumerate(spec.users):
            md = (("authorization", f"Bearer {u.key}"),)
            servers = connections[i % len(connections)]
            # One device per user, the same in every run with the same users: a user
            # may register only three (RULES M8) and run one at a time (M9).
            device = f"{spec.team_id}-dev-{u.n:06d}"
            platform = PLATFORMS[u.n % len(PLATFORMS)]
            host = Session(u.n, md, servers, device, platform, spec.product_id, activity=u.n % 60)
            self.hosts.append(host)
            self.sessions.append(host)
            if u.plugin and spec.plugin_id:
                plugin = Session(
                    u.n, md, servers, device, platform, spec.plugin_id, activity=u.n % 60, host=host
                )
                host.plugin = plugin
                self.sessions.append(plugin)

    # -- the four calls --------------------------------------------------------------

    async def entitle(self, s: Session, rec: Recorder) -> bool:
        self.budget -= 1
        s.seq += 1
        req = lic.EntitleRequest(
            product_id=s.product_id,
            product_version=self.cfg.version,
            platform=s.platform,  # type: ignore[arg-type]
            device_id=s.device_id,
            parent_session_id=s.host.session_id if s.host is not None else "",
            request_id=f"{self.spec.run_tag}-{s.n}-{'p' if s.host else 'h'}{s.seq}",
        )
        t0 = time.monotonic()
        try:
            resp = await s.servers.call(lambda stub: stub.Entitle, req, s.md)
        except TesseraError as exc:
            self.failed(rec, exc)
            return False
        rec.ok(time.monotonic() - t0)
        self.calls += 1
        session = resp.session
        s.session_id = session.session_id
        s.hb = lic.HeartbeatRequest(
            session_id=session.session_id, seconds_since_activity=s.activity
        )
        s.idle = False
        if not s.live:
            s.live = True
            self.live += 1
        self.sample("Entitle", resp)
        return True

    def _ended(self, s: Session, session: common_pb2.Session) -> None:
        if s.live:
            s.live = False
            self.live -= 1
            reason = common_pb2.EndReason.Name(session.end_reason)
            self.ended[reason] = self.ended.get(reason, 0) + 1

    async def heartbeat(self, s: Session, rec: Recorder) -> None:
        self.budget -= 1
        req = s.hb
        if s.idle:  # activity now: the session resumes (RULES M6)
            req = lic.HeartbeatRequest(session_id=s.session_id, seconds_since_activity=0)
        t0 = time.monotonic()
        try:
            resp = await s.servers.call(lambda stub: stub.Heartbeat, req, s.md)
        except TesseraError as exc:
            self.failed(rec, exc)
            return
        rec.ok(time.monotonic() - t0)
        self.calls += 1
        s.idle = False
        session = resp.session
        if session.state == ENDED:
            self._ended(s, session)
        self.sample("Heartbeat", resp)

    async def idle(self, s: Session, rec: Recorder) -> None:
        """(The caller takes the call out of the budget: it starts this as a task.)"""
        t0 = time.monotonic()
        try:
            resp = await s.servers.call(
                lambda stub: stub.Idle, lic.IdleRequest(session_id=s.session_id), s.md
            )
        except TesseraError as exc:
            self.failed(rec, exc)
            return
        rec.ok(time.monotonic() - t0)
        self.calls += 1
        s.idle = True
        if resp.session.state == ENDED:
            self._ended(s, resp.session)
        self.sample("Idle", resp)

    async def release(self, s: Session, rec: Recorder) -> TesseraError | None:
        """Release ``s``; the refusal, or None when it is released."""
        self.budget -= 1
        t0 = time.monotonic()
        try:
            resp = await s.servers.call(
                lambda stub: stub.Release, lic.ReleaseRequest(session_id=s.session_id), s.md
            )
        except TesseraError as exc:
            self.failed(rec, exc)
            return exc
        rec.ok(time.monotonic() - t0)
        self.calls += 1
        if s.live:
            s.live = False
            self.live -= 1
        if s.plugin is not None and s.plugin.live:  # ends with its host (RULES P4)
            s.plugin.live = False
            self.live -= 1
        self.sample("Release", resp)
        return None

    # -- phases --------------------------------------------------------------------

    async def _lanes(self, n: int, lane: Callable[[], Awaitable[None]]) -> None:
        await asyncio.gather(*(lane() for _ in range(max(1, n))))

    async def phase_ramp(self, stats: PhaseStats, rate: float, deadline: float) -> None:
        """Entitle every host (and right after it, its plugin)."""
        deadline = min(deadline, self.spec.hard_deadline)
        rec = stats.rpc("Entitle")
        pacer = Pacer(rate) if rate > 0 else None
        todo = iter(self.hosts)

        async def lane() -> None:
            for s in todo:
                for one in (s, s.plugin):
                    if one is None or one.live:
                        continue
                    if self.stopping(deadline):
                        return
                    if pacer is not None and (
                        await pacer.wait(deadline, self.abort)
                        or self.stopping(deadline)  # the caps again: lanes wait together
                    ):
                        return
                    ok = await self.entitle(one, rec)
                    self.units += 1
                    if not ok:
                        break  # no host session: its plugin cannot start

        # No more lanes than hosts (each lane opens a host, then its plugin).
        lanes = min(self.cfg.ramp_concurrency or self.cfg.concurrency, len(self.hosts))
        await self._lanes(lanes, lane)

    async def phase_steady(
        self,
        stats: PhaseStats,
        start_at: float,
        warmup: float,
        duration: float,
        rate: float,
        idle_fraction: float,
    ) -> None:
        """Heartbeats round the live sessions, ``concurrency`` in flight. Now and then a
        session calls Idle instead; the next Heartbeat of that session reports fresh
        activity, so it resumes (RULES M6).

        Idle calls go out beside the heartbeat lanes (at most a quarter as many in
        flight), as a product calls Idle whatever its heartbeat timer does: a slow
        Idle never holds up the heartbeats, whose concurrency stays the same for
        every target."""
        measure_from = start_at + warmup
        end = min(measure_from + duration, self.spec.hard_deadline)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        warm = PhaseStats("warmup")
        hb_warm, idle_warm = warm.rpc("Heartbeat"), warm.rpc("Idle")
        hb_rec, idle_rec = stats.rpc("Heartbeat"), stats.rpc("Idle")
        pacer = Pacer(rate) if rate > 0 else None
        sessions = self.sessions
        n = len(sessions)
        if n == 0:  # a worker with no user (the driver starts none): nothing to beat
            stats.started = stats.ended = 0.0
            return
        cursor = 0
        rnd = self.rng.random
        idle_cap = max(1, self.cfg.concurrency // 4)
        idling: set[asyncio.Task[None]] = set()

        async def lane() -> None:
            nonlocal cursor
            misses = 0
            while not self.stopping(end):
                s = sessions[cursor]
                cursor = cursor + 1 if cursor + 1 < n else 0
                if not s.live:
                    misses += 1
                    if misses > n:
                        return  # nothing left alive
                    continue
                misses = 0
                measured = time.monotonic() >= measure_from
                if (
                    s.host is None
                    and not s.idle
                    and len(idling) < idle_cap
                    and rnd() < idle_fraction
                ):
                    s.idle = True
                    self.budget -= 1
                    task = asyncio.ensure_future(self.idle(s, idle_rec if measured else idle_warm))
                    idling.add(task)
                    task.add_done_callback(idling.discard)
                    continue
                if pacer is not None:
                    if await pacer.wait(end, self.abort) or self.stopping(end):
                        return
                    measured = time.monotonic() >= measure_from  # after its slot's wait
                self.units += 1
                await self.heartbeat(s, hb_rec if measured else hb_warm)

        await self._lanes(min(self.cfg.concurrency, n), lane)
        window_end = time.monotonic()  # no Heartbeat starts after this
        if idling:
            await asyncio.gather(*idling)
        warm.started, warm.ended = start_at, min(measure_from, time.monotonic())
        self.extra.append(warm)
        stats.started, stats.ended = measure_from, window_end
        if not hb_rec.calls and not idle_rec.calls:
            stats.started = stats.ended = 0.0

    async def phase_cycle(self, stats: PhaseStats, start_at: float, duration: float) -> None:
        """Release a session and Entitle it again, over and over (hosts without a plugin)."""
        end = min(start_at + duration, self.spec.hard_deadline)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        stats.started = time.monotonic()
        entitle_rec, release_rec = stats.rpc("Entitle"), stats.rpc("Release")
        ring = deque(s for s in self.hosts if s.plugin is None)

        async def lane() -> None:
            while ring and not self.stopping(end):
                s = ring.popleft()
                try:
                    if s.live and await self.release(s, release_rec) is not None:
                        continue
                    # Finish the cycle even past the end: the session stays live.
                    if self.budget > 0 and time.monotonic() < self.spec.hard_deadline:
                        await self.entitle(s, entitle_rec)
                        self.units += 1
                finally:
                    ring.append(s)

        await self._lanes(min(self.cfg.concurrency, len(ring)), lane)

    async def phase_release(self, stats: PhaseStats, deadline: float) -> None:
        """Release every live session: plugins first, then their hosts.

        This phase has bounds of its own, given by the driver, for it comes after the
        run's (``max_calls`` spent, ``max_duration`` reached): ``deadline``, and at most
        ``RELEASE_ATTEMPTS`` calls per live session (a refusal with a RetryInfo is sent
        again after its delay; any other is not)."""
        rec = stats.rpc("Release")
        live = [s for s in self.sessions if s.live and s.host] + [s for s in self.hosts if s.live]
        todo = iter(live)
        self.budget = RELEASE_ATTEMPTS * self.live

        async def lane() -> None:
            for s in todo:
                for attempt in range(1, RELEASE_ATTEMPTS + 1):
                    if not s.live:
                        break
                    if self.stopping(deadline):
                        return
                    refused = await self.release(s, rec)
                    if refused is None or refused.retry_after is None:
                        break
                    wait = min(max(0.0, refused.retry_after), RELEASE_RETRY_WAIT)
                    if attempt == RELEASE_ATTEMPTS or time.monotonic() + wait >= deadline:
                        break
                    await asyncio.sleep(wait)
                self.units += 1

        # No more lanes than sessions to release.
        await self._lanes(min(self.cfg.ramp_concurrency or self.cfg.concurrency, len(live)), lane)

    PHASES: ClassVar[dict[str, Callable[..., Awaitable[None]]]] = {
        "ramp": phase_ramp,
        "steady": phase_steady,
        "cycle": phase_cycle,
        "release": phase_release,
    }


def worker_main(spec: WorkerSpec, conn: Connection, counters: Any) -> None:
    """Entry point of a worker process (started with the ``spawn`` method)."""
    # The driver decides what an interrupt does: Ctrl+C, and a SIGTERM sent to the whole
    # process group (``timeout``, ``kill -- -PGID``, a CI job cancelled), reach the
    # workers too; ended by them, they left every session of theirs live on the server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        asyncio.run(Worker(spec, conn, counters).main())
    except BaseException as exc:
        text = (
            str(exc)
            if isinstance(exc, ConnectionError)
            else "".join(traceback.format_exception(exc))
        )
        with contextlib.suppress(OSError):
            conn.send(("fatal", spec.index, text))
        sys.exit(1)
    finally:
        conn.close()
