"""The driver of a load run: users, worker processes, phases, results.

Phases, in order: provision (or read users), ramp (Entitle every host session
and the plugin sessions), steady (Heartbeats, some Idle; a warm-up first, not
measured), cycle (Release+Entitle, optional), release. Every phase is bounded
by the run's hard caps: ``max_duration`` seconds from the start of the run and
``max_calls`` LicensingService calls, shared out among the workers.

The final releases come after those caps, with bounds of their own: at most
``RELEASE_ATTEMPTS`` calls per live session (a Release refused with a RetryInfo
is sent again after its delay), none begun later than ``RELEASE_GRACE_SECONDS``
past ``max_duration`` (one under way then waits at most its ``timeout``). So a run
stopped early by a cap still releases what it opened; what it could not release is
reported (``live_at_end``).

A first SIGINT or SIGTERM ends the phase under way and goes on to the
releases (for at most 30 s); a second one stops the workers at once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from client_sdk.errors import TesseraError
from client_sdk.load.config import RELEASE_GRACE_SECONDS, LoadConfig
from client_sdk.load.progress import NoProgress, Progress
from client_sdk.load.provision import Users, count_live_sessions, fake_users, provision
from client_sdk.load.stats import PhaseStats, RpcSummary, merge_phases, summarize
from client_sdk.load.worker import (
    CALLS,
    ERRORS,
    LIVE,
    SLOTS,
    UNITS,
    UserSpec,
    WorkerSpec,
    worker_main,
)

ABORT_RELEASE_SECONDS = 30.0  # for the releases after an interrupt
STOP_GRACE_SECONDS = 15.0  # past a phase's deadline (and a call's timeout), workers must answer


class LoadError(RuntimeError):
    """A worker failed, or the run could not start."""


@dataclass
class RunResult:
    target: str
    config: LoadConfig
    users: int = 0
    sessions: int = 0  # host and plugin sessions the ramp-up opens
    #: Calls in flight per worker in the steady state: ``concurrency``, but no more than
    #: the worker's sessions (the largest worker's; 0: no worker started).
    in_flight: int = 0
    team_id: str = ""
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    live_after_ramp: int = 0
    live_steady: int = 0  # at the end of the steady state, as the responses said
    server_live_sessions: int | None = None  # as ListSessions said then
    live_at_end: int = 0
    ended: dict[str, int] = field(default_factory=dict)  # sessions the server ended, by reason
    samples: dict[str, str] = field(default_factory=dict)  # a response per RPC, hex
    provision_seconds: float = 0.0
    seconds: float = 0.0
    load_average: tuple[float, ...] = (0.0, 0.0, 0.0)  # at the start (none on Windows)
    aborted: str | None = None

    def rows(self) -> list[RpcSummary]:
        return [row for p in self.phases.values() for row in summarize(p)]

    def row(self, phase: str, rpc: str) -> RpcSummary | None:
        p = self.phases.get(phase)
        if p is None:
            return None
        return next((r for r in summarize(p) if r.rpc == rpc), None)

    def cycle_rps(self) -> float:
        """Successful Release and Entitle calls per second of the cycle phase."""
        p = self.phases.get("cycle")
        if p is None or p.seconds <= 0:
            return 0.0
        return sum(p.rpc(r).ok_count for r in ("Entitle", "Release")) / p.seconds

    def as_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "target": self.target,
            "users": self.users,
            "sessions": self.sessions,
            "team_id": self.team_id,
            "workers": cfg.workers,
            "channels_per_worker": cfg.channels,
            "concurrency_per_worker": cfg.concurrency,
            "live_after_ramp": self.live_after_ramp,
            "live_steady": self.live_steady,
            "server_live_sessions": self.server_live_sessions,
            "live_at_end": self.live_at_end,
            "ended_by_server": self.ended,
            "cycle_rps": round(self.cycle_rps(), 1),
            "provision_seconds": round(self.provision_seconds, 3),
            "seconds": round(self.seconds, 3),
            "load_average": self.load_average,
            "aborted": self.aborted,
            "response_bytes": {k: len(v) // 2 for k, v in self.samples.items()},
            "rpcs": [r.as_dict() for r in self.rows()],
        }


def _split(total: int, parts: int) -> list[int]:
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


class _Signals:
    """Counts SIGINT/SIGTERM while installed (main thread only)."""

    def __init__(self) -> None:
        self.count = 0
        self.raise_now = False  # while nothing needs releasing: stop at once
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.raise_now:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._saved.items():
                signal.signal(signum, handler)


PhaseHook = Callable[["Driver", str, str], None]  # driver, phase, "start" or "end"


class Driver:
    def __init__(
        self, cfg: LoadConfig, progress: Progress | None = None, on_phase: PhaseHook | None = None
    ) -> None:
        self.cfg = cfg
        self.progress = progress or NoProgress()
        self.on_phase = on_phase
        self.started = time.monotonic()
        self.hard_deadline = self.started + cfg.max_duration
        self.signals = _Signals()
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.counters: Any = None
        self.result = RunResult(cfg.target, cfg)
        self.aborting = False
        #: Workers that died or failed (by index): the others go on to release theirs.
        self.lost: dict[int, str] = {}
        self.releasing = False  # the release phase has begun

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    # -- users -------------------------------------------------------------------

    def users(self) -> Users:
        cfg = self.cfg
        if cfg.users_file is not None:
            return Users.load(cfg.users_file).first(cfg.users)
        if cfg.fake_users:
            return fake_users(cfg.users, secrets.token_hex(5))
        if cfg.admin_token is None:
            raise ValueError("no admin token to provision users with")
        self.progress.phase("provision", cfg.users)

        def report(label: str, done: int, total: int) -> None:
            self.progress.update(done, f"{label}: {done:,}/{total:,}")

        t0 = time.monotonic()
        try:
            users = self._provision(report)
        except TimeoutError:
            raise LoadError("max_duration reached while provisioning") from None
        except TesseraError as exc:
            raise LoadError(f"provisioning failed: {exc}") from None
        self.result.provision_seconds = time.monotonic() - t0
        if cfg.save_users is not None:
            try:
                users.save(cfg.save_users)
            except OSError as exc:  # checked before provisioning, but a disk can fill up
                raise LoadError(f"--save-users {cfg.save_users}: {exc}") from None
        return users

    def _provision(self, report: Callable[[str, int, int], None]) -> Users:
        cfg = self.cfg
        assert cfg.admin_token is not None  # noqa: S101 - checked by the caller
        return asyncio.run(
            asyncio.wait_for(
                provision(
                    cfg.new_targets(),
                    cfg.retry(call_timeout=120.0),
                    cfg.admin_token,
                    cfg.users,
                    daily_rate=cfg.daily_rate,
                    plugin_rate=cfg.plugin_rate,
                    progress=report,
                ),
                timeout=max(1.0, self.hard_deadline - time.monotonic()),
            )
        )

    # -- workers ------------------------------------------------------------------

    def start_workers(self, users: Users) -> None:
        cfg = self.cfg
        if len(users.users) < cfg.workers:
            # A worker with no user would have nothing to do, and would take its share of
            # the rates and of max_calls with it: start one per user.
            cfg = self.cfg = self.result.config = replace(cfg, workers=len(users.users))
        ctx = multiprocessing.get_context("spawn")  # no fork: gRPC does not survive it
        self.counters = ctx.RawArray("q", cfg.workers * SLOTS)
        rng = random.Random(cfg.seed)  # noqa: S311 - which users run the plugin, not a secret
        specs = [
            UserSpec(n, user_id, key, rng.random() < cfg.plugin_fraction)
            for n, (user_id, key) in enumerate(users.users)
        ]
        self.result.users = len(specs)
        self.result.sessions = len(specs) + (sum(u.plugin for u in specs) if users.plugin_id else 0)
        self.result.team_id = users.team_id
        run_tag = secrets.token_hex(4)
        budgets = _split(cfg.max_calls, cfg.workers)
        shares = [specs[i :: cfg.workers] for i in range(cfg.workers)]
        # A worker runs no more lanes than it has sessions (hosts, and plugins if any).
        most = max(
            (len(s) + (sum(u.plugin for u in s) if users.plugin_id else 0) for s in shares),
            default=0,
        )
        self.result.in_flight = min(cfg.concurrency, most)
        for i in range(cfg.workers):
            spec = WorkerSpec(
                index=i,
                config=cfg,
                team_id=users.team_id or "load",
                product_id=users.product_id,
                plugin_id=users.plugin_id,
                run_tag=run_tag,
                users=shares[i],
                budget=budgets[i],
                hard_deadline=self.hard_deadline,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(spec, child, self.counters),
                name=f"load-worker-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        self.progress.phase("connect", cfg.workers)
        self._collect("ready", total=None)

    def stop_workers(self) -> None:
        for conn in self.conns:
            with suppress(OSError):
                conn.send(("exit", {}))
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()  # (a worker ignores SIGTERM: the driver handles it)
                proc.join(5)
        for conn in self.conns:
            conn.close()

    def _sum(self, slot: int) -> int:
        c = self.counters
        return sum(c[i * SLOTS + slot] for i in range(self.cfg.workers))

    def _send_all(self, cmd: tuple[str, dict[str, Any]]) -> None:
        for index, conn in enumerate(self.conns):
            if index in self.lost:
                continue
            try:
                conn.send(cmd)
            except OSError:  # its end is closed: the worker is gone
                self.procs[index].join(1)
                self._lose(index, f"worker {index} exited ({self.procs[index].exitcode})")

    def _lose(self, index: int, why: str) -> None:
        """Worker ``index`` is gone: the others stop the phase under way (an abort), so
        that the run can release their sessions and then fail (``run``)."""
        self.lost[index] = why
        self.aborting = True
        self.result.aborted = self.result.aborted or "a worker failed"
        if self.releasing:  # the others go on releasing theirs, within its own bound
            return
        for other, conn in enumerate(self.conns):
            if other not in self.lost:
                with suppress(OSError):
                    conn.send(("abort", {}))

    def _collect(
        self,
        kind: str,
        total: float | None,
        clock_from: float | None = None,
        deadline: float | None = None,
    ) -> list[tuple[Any, ...]]:
        """Wait for one ``kind`` message from every worker, showing progress meanwhile
        (until ``deadline``, the run's hard deadline by default, and some grace)."""
        limit = (self.hard_deadline if deadline is None else deadline) + STOP_GRACE_SECONDS
        if kind != "ready":  # a call under way at the deadline has its timeout to end;
            limit += self.cfg.timeout  # connecting ends at the deadline (``Worker._connect``)
        pending = {i: c for i, c in enumerate(self.conns) if i not in self.lost}
        got: list[tuple[Any, ...]] = []
        window: deque[tuple[float, int]] = deque()
        while pending:
            ready = wait(list(pending.values()), timeout=0.2)
            for index, conn in list(pending.items()):
                if conn not in ready:
                    continue
                try:
                    msg = conn.recv()
                except (EOFError, OSError):  # killed: its end closed, or reset
                    self.procs[index].join(1)
                    self._lose(index, f"worker {index} exited ({self.procs[index].exitcode})")
                    pending.pop(index, None)
                    continue
                if msg[0] == "fatal":  # a traceback, or one line ("could not connect ...")
                    text = msg[2].rstrip("\n")
                    sep = "\n" if "\n" in text else " "
                    self._lose(index, f"worker {msg[1]} failed:{sep}{text}")
                    pending.pop(index, None)
                    continue
                if msg[0] == kind:
                    got.append(msg)
                    pending.pop(index, None)
            now = time.monotonic()
            self._on_signals()
            if now > limit:
                raise LoadError("workers did not stop at the hard deadline")
            if self.counters is None or kind == "ready":
                continue
            calls = self._sum(CALLS)
            window.append((now, calls))
            while len(window) > 2 and now - window[0][0] > 1.0:
                window.popleft()
            t0, c0 = window[0]
            rps = (calls - c0) / (now - t0) if now > t0 else 0.0
            done: float = (now - clock_from) if clock_from is not None else self._sum(UNITS)
            self.progress.update(
                max(0.0, done),
                f"{rps:7,.0f} calls/s  live {self._sum(LIVE):,}  errors {self._sum(ERRORS):,}",
            )
        if self.lost:  # the others are done (aborted): the phase fails with the loss
            raise LoadError("; ".join(self.lost[i] for i in sorted(self.lost)))
        return got

    def _on_signals(self) -> None:
        if self.signals.count >= 2:
            raise KeyboardInterrupt
        if self.signals.count == 1 and not self.aborting:
            self.aborting = True
            self.result.aborted = "interrupted"
            for conn in self.conns:
                with suppress(OSError):
                    conn.send(("abort", {}))

    # -- phases --------------------------------------------------------------------

    def phase(
        self,
        name: str,
        total: float | None,
        clock_from: float | None = None,
        *,
        record: bool = True,
        **args: Any,
    ) -> PhaseStats:
        """Run phase ``name`` in every worker. A phase run again (in slices, others'
        between them) adds to what its earlier slices measured (``PhaseStats.then``);
        one run with ``record=False`` is measured by nobody (a priming run)."""
        self.progress.phase(name, total)
        self._send_all((name, args))
        if "start_at" in args:  # the workers begin together then, not at once
            time.sleep(max(0.0, args["start_at"] - time.monotonic()))
        if record and self.on_phase is not None:  # (bench's meter: CPU from here)
            self.on_phase(self, name, "start")
        msgs = self._collect(
            "done", total, clock_from, args.get("deadline") if name == "release" else None
        )
        if record and self.on_phase is not None:
            self.on_phase(self, name, "end")
        merged = merge_phases(m[2] for m in msgs) or PhaseStats(name)
        r = self.result
        if record:
            extra: dict[str, list[PhaseStats]] = {}
            for m in msgs:
                for part in m[3]["extra"]:
                    extra.setdefault(part.phase, []).append(part)
            for parts in extra.values():  # the warm-up comes before the steady state
                before = merge_phases(parts)
                if before is not None and any(rec.calls for rec in before.rpcs.values()):
                    self._add(before)
            self._add(merged)
        r.live_at_end = sum(m[3]["live"] for m in msgs)
        r.ended = {}
        for m in msgs:
            for reason, n in m[3]["ended"].items():
                r.ended[reason] = r.ended.get(reason, 0) + n
            for rpc, hexed in m[3]["samples"].items():
                r.samples.setdefault(rpc, hexed)
        if name != "release":  # which has bounds of its own, past the run's
            # Stopped by it with work left: calls that came to it exactly did it all.
            if any(m[3]["spent"] for m in msgs) and r.aborted is None:
                r.aborted = "max_calls reached"
            if time.monotonic() >= self.hard_deadline and r.aborted is None:
                r.aborted = "max_duration reached"
        return merged

    def _add(self, stats: PhaseStats) -> None:
        earlier = self.result.phases.get(stats.phase)
        if earlier is None:
            self.result.phases[stats.phase] = stats
        else:
            earlier.then(stats)

    # -- the run, step by step (``run`` takes them in order; a benchmark may
    # interleave the steps of several drivers, one target at a time) ---------------

    def open(self) -> Users:
        """Users (provisioned, or read), the worker processes, and the ramp-up."""
        cfg = self.cfg
        cfg.validate()
        r = self.result
        r.load_average = os.getloadavg() if hasattr(os, "getloadavg") else ()  # not on Windows
        self.signals.raise_now = True
        users = self.users()
        self.signals.raise_now = False
        self.start_workers(users)
        if not self.aborting:
            rate = cfg.ramp_rate / self.cfg.workers  # (as many as there are users at most)
            self.phase("ramp", r.sessions, rate=rate, deadline=1e18)
        r.live_after_ramp = r.live_at_end
        return users

    def steady(self, warmup: float, duration: float, *, record: bool = True) -> PhaseStats | None:
        """Heartbeats (some Idle): ``warmup`` seconds, then ``duration`` measured;
        what this slice measured (None: not run)."""
        cfg = self.cfg
        stats = None
        if not self.aborting and warmup + duration > 0:
            start_at = time.monotonic() + 0.2
            stats = self.phase(
                "steady",
                warmup + duration,
                clock_from=start_at,
                record=record,
                start_at=start_at,
                warmup=warmup,
                duration=duration,
                rate=cfg.heartbeat_rate / cfg.workers,
                idle_fraction=cfg.idle_fraction,
            )
        if record:
            self.result.live_steady = self.result.live_at_end
        return stats

    def count(self, users: Users) -> None:
        """How many live sessions the server lists (``count_server_sessions``)."""
        cfg, r = self.cfg, self.result
        if not (cfg.count_server_sessions and cfg.admin_token and users.team_id):
            return
        self.progress.phase("count", None)
        try:
            r.server_live_sessions = asyncio.run(
                count_live_sessions(
                    cfg.new_targets(),
                    cfg.retry(call_timeout=60.0),
                    cfg.admin_token,
                    users.team_id,
                )
            )
        except Exception as exc:  # a count that fails leaves the figure out
            self.progress.update(0, f"ListSessions failed: {exc}")

    def cycle(self, duration: float, *, record: bool = True) -> PhaseStats | None:
        """Release+Entitle for ``duration`` seconds; what this slice measured."""
        if self.aborting or duration <= 0:
            return None
        start_at = time.monotonic() + 0.2
        return self.phase(
            "cycle",
            duration,
            clock_from=start_at,
            record=record,
            start_at=start_at,
            duration=duration,
        )

    def release(self) -> None:
        """Release every live session (``release``), even after a cap stopped the run:
        until ``RELEASE_GRACE_SECONDS`` past ``max_duration`` (after an interrupt, for at
        most ``ABORT_RELEASE_SECONDS``), with at most ``RELEASE_ATTEMPTS`` calls each."""
        if self.cfg.release and self.procs:
            self.releasing = True
            deadline = self.hard_deadline + RELEASE_GRACE_SECONDS
            if self.aborting:
                deadline = min(deadline, time.monotonic() + ABORT_RELEASE_SECONDS)
            self.phase("release", self.result.live_at_end, deadline=deadline)

    def close(self) -> RunResult:
        """Stop the workers; the result, with the run's seconds."""
        self.progress.close()
        if self.procs:
            self.stop_workers()
            self.procs = []
            self.conns = []
        self.result.seconds = time.monotonic() - self.started
        return self.result

    def run(self) -> RunResult:
        """Every step in turn. A worker that dies or fails stops the others (its
        phase then raises ``LoadError``), which still release their sessions (the
        dead worker's are left to the server) before the run fails."""
        cfg = self.cfg
        with self.signals.installed():
            try:
                users = self.open()
                self.steady(cfg.warmup, cfg.steady)
                self.count(users)
                self.cycle(cfg.cycle)
                self.release()
            except LoadError:
                if self.lost and not self.releasing:
                    with suppress(LoadError):  # the same loss, said once
                        self.release()
                raise
            finally:
                self.close()
        return self.result


def run(
    cfg: LoadConfig, progress: Progress | None = None, on_phase: PhaseHook | None = None
) -> RunResult:
    """Run the whole load test described by ``cfg``; blocks until it is over.

    ``on_phase`` is called in this process as each phase starts and ends (a
    benchmark reads the server's CPU time there, or starts a profiler)."""
    return Driver(cfg, progress, on_phase).run()
