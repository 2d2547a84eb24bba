"""Benchmark: Tessera against the fastest thing Python gRPC does here (`make bench`).

In one run, on this machine:

1. starts a fresh server (``python -m server`` on 127.0.0.1 port 0, a
   throwaway database, the real clock, JSON logs to a file) and its load
   generator (``client_sdk.load``: worker processes, connections, calls in
   flight), which provisions ``--users`` users (bulk ``ImportUsers``, one
   ``IssueUserKey`` each, many in flight) and ramps up one session per user
   (some users also run the plugin);
2. starts ``benchmarks/echo_server.py``: a bare grpc.aio server answering the
   same method paths with responses captured from Tessera (a short unmeasured
   steady state and cycle first, so of the same size), and nothing else, and
   ramps the same users' sessions on it with a generator of its own (same
   keys, same metadata, same workers, connections and concurrency);
3. measures the two in turn: ``--rounds`` slices of each one's steady state
   (Heartbeats, some Idle; each slice after ``--warmup`` seconds unmeasured,
   longer than Tessera's heartbeat flush interval, so that the flush after a
   Tessera slice falls in the echo's warm-up and each Tessera slice pays for
   as many flushes as it lasts), asks Tessera (``ListSessions``) how many
   live sessions it holds, then ``--rounds`` slices of each one's
   Release+Entitle cycle; the order is reversed every other round. On a
   virtual machine the host's speed moves by a third from one minute to the
   next: servers measured one after the other compare the host's minutes as
   much as the servers, servers measured in turn meet the same minutes. (All
   of it within the sessions' 5-minute grace, or Tessera's captures would
   fall in the echo's slices: a warning says when it did not);
4. then, on its own (unless ``--metrics off``), a second fresh Tessera with
   ``--metrics-listen``, whose ``/metrics`` is scraped every
   ``--scrape-every`` seconds as Prometheus would, through the same phases
   one after the other (issue 16: the metrics must cost under 5 % of
   heartbeat throughput; ``--metrics only`` measures this one in turn with
   the echo instead of the first); it prints from the last scrape the
   store's transactions and how many took over 0.1 s, in all and in their
   COMMIT alone (``store_summary``);
5. prints all of them side by side, each slice's ratio, and each phase's ratio
   as its two factors (``explain_ratios``: the echo's CPU a call over
   Tessera's, times Tessera's cores busy over the echo's, the load generators
   counted with their servers), so a ratio short of its target says whether
   Tessera lacked CPU a call or left cores idle; the last line reads

   ``BENCH heartbeat_vs_echo=… entitle_release_vs_echo=… heartbeat_rps=…
   echo_rps=… heartbeat_p99_ms=… echo_p99_ms=… idle_p99_ms=…
   echo_idle_p99_ms=… cores=… echo_cores=… live_sessions=…
   metrics_heartbeat_rps=… metrics_cost_pct=… metrics_cpu_cost_pct=…``

   where the ratios divide successful calls per second (steady-state
   Heartbeats; Release and Entitle calls of the cycle phase, two calls per
   cycle on both sides; each over its slices' seconds), the p99s are of
   steady-state Heartbeats and Idles at the same concurrency, ``cores`` and
   ``echo_cores`` how many of the machine's cores each steady state kept busy
   (server and load generator: a virtual machine's host may give a run less
   than its cores, and a ratio taken then says more about the host than
   about the server), ``live_sessions`` is what the server listed, and the
   last three are the steady Heartbeats per second of the server with metrics
   on and what that costs against the one without, in Heartbeats per second
   and in the server's CPU per steady call (a negative cost is noise).

Targets (issue 5): heartbeat ≥ 0.80 of echo, Entitle+Release ≥ 0.50, heartbeat
p99 ≤ 2x echo's, ≥ 100,000 live sessions. The generator and the servers share
the machine's cores: note the load average printed beside the figures, and
repeat a run taken while something else was busy.

``--durable-echo KIND`` adds a third server to the steady state's turns: an
echo whose Idle answers only once its request is stored (``echo_server.py
--durable-idle``), so that what storing an Idle the plain way costs stands
beside Tessera's Idle; a ``DURABLE_IDLE`` line before the BENCH line gives the
three Idle p99s and their ratios (docs/performance-log.md, "An echo that stores
its Idles").

``--postgres`` runs Tessera on PostgreSQL instead of SQLite: a throwaway server
from the ``pgserver`` wheel (as ``tests/pg.py`` gets its own, but with
PostgreSQL's defaults: fsync on, every commit durable) in the temporary
directory, a fresh database for each Tessera run, its URL as ``--db``. The echo
run is the same either way.

Run: ``.venv/bin/python -m benchmarks.bench`` (``--help`` for the knobs;
``--users 2000 --steady 3 --cycle 2`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.echo_server import DURABLE_KINDS
from benchmarks.thread_states import thread_schedstat
from client_sdk.load import LoadConfig, RunResult
from client_sdk.load.__main__ import report
from client_sdk.load.config import check_writable_file
from client_sdk.load.progress import Progress, make_progress
from client_sdk.load.provision import Users
from client_sdk.load.runner import Driver
from client_sdk.load.stats import PhaseStats, RpcSummary
from server.config import Config
from server.domain.terms import Terms
from server.loops import EVENT_LOOPS

REPO = Path(__file__).resolve().parent.parent
#: A session's grace (RULES M3): its hold is captured this long after its Entitle.
GRACE_SECONDS = Terms().grace.total_seconds()
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Child:
    """A server as a child process: stdout and stderr to files, the port from the
    JSON line ``{"event": "serving", "port": N}`` it prints once it listens."""

    def __init__(self, name: str, args: list[str], logdir: Path, cwd: Path = REPO) -> None:
        self.name = name
        self.args = args
        self.cwd = cwd  # the checkout it runs from (``python -m`` imports from there)
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.serving: dict[str, Any] = {}  # its "serving" line

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def front_pid(self) -> int:
        """The front process of a server run with ``--front-process``, else 0."""
        return int(self.serving.get("front_pid") or 0)

    @property
    def pids(self) -> list[int]:
        """The server's processes: its own, and its front's (``--front-process``)."""
        return [self.pid, self.front_pid] if self.front_pid else [self.pid]

    def start(self, timeout: float = 60.0) -> Child:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.args, cwd=self.cwd, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: "
                    + self.err_path.read_text(errors="replace")[-2000:]
                )
            with self.out_path.open("rb") as f:
                for raw in f:
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(line, dict) and line.get("event") == "serving":
                        self.port = int(line["port"])
                        self.serving = line
                        return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not start within {timeout:.0f} s")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@contextlib.contextmanager
def throwaway_postgres(tmp: Path) -> Iterator[str]:
    """A PostgreSQL server from the ``pgserver`` wheel, its data under ``tmp``
    (PostgreSQL's own settings: fsync on); its URL; stopped and removed after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver.postgres_server import get_server

    server = get_server(tmp / "pg", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


async def new_database(url: str, prefix: str = "bench") -> str:
    """A new empty database on ``url``'s server; its URL."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))  # host and user kept


def cpu_seconds(pid: int | str) -> float:
    """User+system CPU time of a process so far (0 when it is gone); or of one of
    its threads, given as ``"pid/task/tid"``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Meter:
    """Phase hook: CPU used by the server and by the load workers in each phase,
    the server's memory after the steady state, and optionally profiles of the
    server during one phase: py-spy's (Python frames, every thread) and perf's
    (the event loop's thread alone, native code included: the interpreter, gRPC's
    Cython, the kernel)."""

    def __init__(
        self,
        server: Child,
        py_spy: Path | None = None,
        spy_phase: str = "steady",
        perf: Path | None = None,
    ) -> None:
        self.server = server
        self.py_spy = py_spy
        self.spy_phase = spy_phase
        self.perf = perf
        self.spy: subprocess.Popen[bytes] | None = None
        self.perf_run: subprocess.Popen[bytes] | None = None
        #: phase: what the clocks read at its slice's start (``record``'s arguments)
        self.marks: dict[
            str, tuple[float, float, float, list[tuple[float, float]], list[float] | None]
        ] = {}
        #: phase: (seconds, server CPU, workers' CPU, loop threads') over all its slices
        self.spent: dict[str, tuple[float, float, float, list[tuple[float, float]]]] = {}
        self.profiled: set[str] = set()  # a phase run in slices is profiled in its first
        #: (phase, cores of: the server's loop thread, its other threads, and with a
        #: front, the front's loop thread and its other threads) of each slice.
        self.slice_cores: list[tuple[str, list[float]]] = []
        self.cores: dict[str, tuple[float, float]] = {}  # phase: (server, workers)
        #: phase: (on a core, waiting for one) of each process's loop thread, in the
        #: order of ``server.pids`` (the server's; the front's with --front-process).
        self.loop: dict[str, list[tuple[float, float]]] = {}
        self.rss_kib = 0

    def __call__(self, driver: Driver, phase: str, when: str) -> None:
        now = time.monotonic()
        per_process = [cpu_seconds(pid) for pid in self.server.pids]
        server = sum(per_process)
        workers = sum(cpu_seconds(p) for p in driver.worker_pids)
        # Each process's loop thread (its main one): below one core it is saturated all
        # the same when its time on a core and its time waiting for one add up to about
        # one. With --front-process, both: the front's runs gRPC's work, the server's
        # Tessera's.
        loop = [thread_schedstat(pid, pid) or (0.0, 0.0) for pid in self.server.pids]
        self.record(phase, when, now, server, workers, loop, per_process)

    def record(
        self,
        phase: str,
        when: str,
        now: float,
        server: float,
        workers: float,
        loop: list[tuple[float, float]],
        per_process: list[float] | None = None,
    ) -> None:
        """What the clocks read at a slice's ``when`` ("start" or "end"): a phase's
        figures are over its slices' seconds, not the time between them; each slice's
        own split of the server's cores goes to ``slice_cores`` (``per_process``: each
        server process's CPU seconds, in the order of ``loop``)."""
        if when == "start":
            self.marks[phase] = (now, server, workers, loop, per_process)
            if phase == self.spy_phase and phase not in self.profiled:
                self._start_spy()
                self._start_perf()
            return
        t0, s0, w0, l0, began = self.marks.pop(phase, (now, server, workers, loop, per_process))
        dt, ds, dw, dl = self.spent.get(phase, (0.0, 0.0, 0.0, [(0.0, 0.0)] * len(loop)))
        dt, ds, dw = dt + now - t0, ds + server - s0, dw + workers - w0
        dl = [
            (d[0] + a[0] - b[0], d[1] + a[1] - b[1]) for d, a, b in zip(dl, loop, l0, strict=False)
        ]
        self.spent[phase] = (dt, ds, dw, dl)
        if per_process is not None and began is not None and now > t0:
            # Each process: its loop thread on a core, and its other threads (the
            # back's: SQLite's writer; the front's: gRPC's own), in cores.
            split = []
            for i, (cpu, cpu0) in enumerate(zip(per_process, began, strict=False)):
                on_core = loop[i][0] - l0[i][0]
                split += [on_core / (now - t0), max(0.0, cpu - cpu0 - on_core) / (now - t0)]
            self.slice_cores.append((phase, split))
        if dt > 0:
            self.cores[phase] = (ds / dt, dw / dt)
            self.loop[phase] = [(on / dt, waiting / dt) for on, waiting in dl]
        if phase == "steady":
            # every process of the server (with the front, both): "everything included"
            self.rss_kib = sum(status_kib(pid, "VmRSS") for pid in self.server.pids)
        if phase == self.spy_phase and phase not in self.profiled:
            self.profiled.add(phase)
            self._stop_spy()

    def _start_spy(self) -> None:
        if self.py_spy is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            print("py-spy not found: no profile (pip install py-spy)", file=sys.stderr)
            return
        out = self.py_spy
        fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
        self.spy = subprocess.Popen(  # noqa: S603 - our own arguments
            [
                *(exe, "record", "--pid", str(self.server.pid), "--output", str(out)),
                *("--format", fmt, "--rate", "100", "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _start_perf(self) -> None:
        if self.perf is None:
            return
        exe = shutil.which("perf")
        if exe is None:
            print("perf not found: no profile (apt-get install linux-perf)", file=sys.stderr)
            return
        # -t: the main thread only (its id is the process's), where the loop runs.
        self.perf_run = subprocess.Popen(  # noqa: S603 - our own arguments
            [exe, "record", "-F", "999", "-g", "-t", str(self.server.pid), "-o", str(self.perf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _stop_spy(self) -> None:
        for profiler in (self.spy, self.perf_run):
            if profiler is None:
                continue
            profiler.send_signal(signal.SIGINT)  # both write their output on SIGINT
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        self.spy = self.perf_run = None


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def side_by_side(t: RunResult, e: RunResult) -> str:
    keys = [(r.phase, r.rpc) for r in t.rows()]
    keys += [(r.phase, r.rpc) for r in e.rows() if (r.phase, r.rpc) not in keys]
    head = (
        f"{'phase':<8} {'rpc':<10} | {'tessera rps':>11} {'p50 ms':>7} {'p99 ms':>8} "
        f"{'errors':>6} | {'echo rps':>9} {'p50 ms':>7} {'p99 ms':>8} | {'rps ratio':>9}"
    )
    lines = [head, "-" * len(head)]
    for phase, rpc in keys:
        a, b = t.row(phase, rpc), e.row(phase, rpc)
        ta = (
            f"{a.rps:>11,.0f} {a.p50_ms:>7.2f} {a.p99_ms:>8.2f} {a.calls - a.ok:>6,}"
            if a
            else f"{'-':>11} {'':>7} {'':>8} {'':>6}"
        )
        tb = (
            f"{b.rps:>9,.0f} {b.p50_ms:>7.2f} {b.p99_ms:>8.2f}"
            if b
            else f"{'-':>9} {'':>7} {'':>8}"
        )
        r = f"{ratio(a.rps, b.rps):>9.2f}" if a and b else f"{'-':>9}"
        lines.append(f"{phase:<8} {rpc:<10} | {ta} | {tb} | {r}")
    ct, ce = t.cycle_rps(), e.cycle_rps()
    lines.append(
        f"{'cycle':<8} {'Rel+Ent':<10} | {ct:>11,.0f} {'':>7} {'':>8} {'':>6} | "
        f"{ce:>9,.0f} {'':>7} {'':>8} | {ratio(ct, ce):>9.2f}"
    )
    return "\n".join(lines)


def heartbeat_rps(result: RunResult | None) -> float:
    row = result.row("steady", "Heartbeat") if result is not None else None
    return row.rps if row else 0.0


def cpu_a_call(result: RunResult, meter: Meter, phase: str) -> tuple[float, float] | None:
    """Microseconds of CPU a call of ``phase`` (every RPC of it): the server's, and
    its load generator's; None when the phase was not measured."""
    cores = meter.cores.get(phase)
    rps = sum(r.rps for r in result.rows() if r.phase == phase)
    if cores is None or rps <= 0:
        return None
    return 1e6 * cores[0] / rps, 1e6 * cores[1] / rps


def cpu_per_call_us(result: RunResult, meter: Meter) -> float:
    """The server's CPU microseconds per steady-state call (Heartbeats and Idles):
    what a busy machine's noise moves less than the calls per second."""
    split = cpu_a_call(result, meter, "steady")
    return split[0] if split else 0.0


def explain_ratios(t: RunResult, e: RunResult, t_meter: Meter, e_meter: Meter) -> str:
    """Each phase's ratio as its two factors. Calls a second are cores busy over
    CPU a call, so tessera/echo = (the echo's CPU a call / Tessera's) x (Tessera's
    cores busy / the echo's), each counting the server and its load generator:
    whether a ratio short of its target lacks CPU a call or cores it left idle."""
    lines = [
        "the ratios' two factors, all calls of the phase (server + its load generator): "
        "echo's CPU a call / tessera's, x tessera's cores busy / echo's"
    ]
    for phase in ("steady", "cycle"):
        ts, es = cpu_a_call(t, t_meter, phase), cpu_a_call(e, e_meter, phase)
        if ts is None or es is None:
            continue
        t_cores, e_cores = sum(t_meter.cores[phase]), sum(e_meter.cores[phase])
        cpu, cores = ratio(sum(es), sum(ts)), ratio(t_cores, e_cores)
        lines.append(
            f"  {phase}: tessera {ts[0]:,.0f} + {ts[1]:,.0f} us, echo {es[0]:,.0f} + "
            f"{es[1]:,.0f} us = {cpu:.2f}; x cores {t_cores:.2f}/{e_cores:.2f} = {cores:.2f}"
            f"; = {cpu * cores:.2f}"
        )
    return "\n".join(lines) if len(lines) > 1 else ""


def metrics_cost(off: tuple[RunResult, Meter] | None, on: tuple[RunResult, Meter] | None) -> str:
    """`` metrics_heartbeat_rps=… metrics_cost_pct=… metrics_cpu_cost_pct=…`` (empty
    without the metrics run): what serving metrics cost in heartbeats per second and
    in server CPU per call, against the run without (``-`` where that run measured
    no Heartbeat or no CPU a call)."""
    if on is None:
        return ""
    on_rps, on_cpu = heartbeat_rps(on[0]), cpu_per_call_us(*on)
    cost = cpu_cost = "-"
    if off is not None:
        off_rps = heartbeat_rps(off[0])
        cost = f"{100 * (1 - on_rps / off_rps):.1f}" if off_rps > 0 else "-"
        off_cpu = cpu_per_call_us(*off)
        cpu_cost = f"{100 * (on_cpu / off_cpu - 1):.1f}" if off_cpu > 0 else "-"
    return (
        f" metrics_heartbeat_rps={on_rps:.0f} metrics_cost_pct={cost}"
        f" metrics_cpu_cost_pct={cpu_cost}"
    )


def p99_ms(row: RpcSummary | None) -> float:
    return row.p99_ms if row else 0.0


def steady_cores(meter: Meter | None) -> str:
    """Cores the steady state kept busy, server and load generator together (``-``
    unmeasured): on a quiet host the echo's run keeps nearly both busy, and a run
    in which it kept far fewer was given less by the host than the other."""
    if meter is None or "steady" not in meter.cores:
        return "-"
    return f"{sum(meter.cores['steady']):.2f}"


def bench_line(
    t: RunResult,
    e: RunResult,
    m: tuple[RunResult, Meter] | None = None,
    off: tuple[RunResult, Meter] | None = None,
    meters: tuple[Meter, Meter] | None = None,
) -> str:
    th, eh = t.row("steady", "Heartbeat"), e.row("steady", "Heartbeat")
    ti, ei = t.row("steady", "Idle"), e.row("steady", "Idle")
    hb_rps = th.rps if th else 0.0
    echo_rps = eh.rps if eh else 0.0
    live = t.server_live_sessions if t.server_live_sessions is not None else t.live_steady
    t_meter, e_meter = meters if meters is not None else (None, None)
    return (
        f"BENCH heartbeat_vs_echo={ratio(hb_rps, echo_rps):.2f} "
        f"entitle_release_vs_echo={ratio(t.cycle_rps(), e.cycle_rps()):.2f} "
        f"heartbeat_rps={hb_rps:.0f} echo_rps={echo_rps:.0f} "
        f"heartbeat_p99_ms={p99_ms(th):.2f} echo_p99_ms={p99_ms(eh):.2f} "
        f"idle_p99_ms={p99_ms(ti):.2f} echo_idle_p99_ms={p99_ms(ei):.2f} "
        f"cores={steady_cores(t_meter)} echo_cores={steady_cores(e_meter)} "
        f"live_sessions={live}" + metrics_cost(off, m)
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Scraper:
    """Prometheus's part: GET /metrics every ``every`` seconds while the load runs."""

    def __init__(self, port: int, every: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.scrapes = 0
        self.seconds = 0.0  # spent waiting for answers
        self.bytes = 0
        self.last = b""  # the last answer (store_summary reads it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as answer:  # noqa: S310 - loopback
                    self.last = answer.read()
                    self.bytes += len(self.last)
            except OSError:
                continue
            self.scrapes += 1
            self.seconds += time.monotonic() - began

    def describe(self) -> str:
        if not self.scrapes:
            return "metrics: no scrape answered"
        return (
            f"metrics: {self.scrapes} scrapes every {self.every:g} s, "
            f"{1000 * self.seconds / self.scrapes:,.1f} ms and {self.bytes / self.scrapes:,.0f} "
            "bytes each"
        ) + (f"\n{store_summary(self.last.decode())}" if self.last else "")


SLOW_COMMIT = 0.1  # seconds: a commit an Idle waiting for it would feel (issue 17)
# The whole transaction, and its COMMIT alone (server/metrics.py).
COMMIT_HISTOGRAMS = ("tessera_store_commit_seconds", "tessera_store_commit_sync_seconds")


def store_summary(metrics_text: str) -> str:
    """The group commit's transactions from a scrape: how many, their seconds, the
    COMMITs' alone (``tessera_store_commit_sync_seconds``), and how many of each took
    over ``SLOW_COMMIT``. Slow transactions whose COMMIT was slow too waited for the
    database's sync (the disk), the others for the server (docs/performance-log.md, stop 20)."""
    found: dict[str, tuple[float, float, float]] = {}  # name: (count, sum, count <= 0.1 s)
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in COMMIT_HISTOGRAMS:
            continue
        values = {(x.name, x.labels.get("le")): x.value for x in family.samples}
        count, total = values[(family.name + "_count", None)], values[(family.name + "_sum", None)]
        found[family.name] = (count, total, values[(family.name + "_bucket", repr(SLOW_COMMIT))])
    if len(found) < len(COMMIT_HISTOGRAMS):
        return "store: no commit histograms in the scrape"
    (n, seconds, quick), (_, synced, quick_syncs) = (found[name] for name in COMMIT_HISTOGRAMS)
    return (
        f"store: {n:,.0f} transactions, {seconds:,.2f} s in all, {synced:,.2f} s of it in "
        f"COMMIT; over {SLOW_COMMIT:g} s: {n - quick:,.0f} transactions, "
        f"{n - quick_syncs:,.0f} COMMITs (the database's sync)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = LoadConfig()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--users", type=int, default=100_000, help="users = live host sessions")
    p.add_argument("--workers", type=int, default=2, help="load worker processes")
    p.add_argument("--channels", type=int, default=1, help="connections per worker")
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight per worker")
    p.add_argument(
        "--ramp-concurrency",
        type=int,
        default=32,
        help="calls in flight per worker while the sessions open and close",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds of Heartbeats before each slice of the steady state, not measured: "
        "longer than Tessera's heartbeat flush interval (2 s), so that the flush after "
        "one server's slice falls in the next one's warm-up and each Tessera slice pays "
        "for as many flushes as it lasts",
    )
    p.add_argument(
        "--durable-echo",
        choices=DURABLE_KINDS,
        help="also measure, in turn with the two others in the steady state, an echo whose "
        "Idle answers only once its request is stored by a plain durable write of "
        "this kind (echo_server.py --durable-idle): what storing an Idle the plain way "
        "costs here (the DURABLE_IDLE line)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="slices of the steady state and of the cycle: every server runs one slice "
        "a round, in turn, so that the host's speed, which moves from minute to minute "
        "on a virtual machine, moves every server's figures alike",
    )
    p.add_argument("--steady", type=float, default=15.0, help="seconds of measured heartbeats")
    p.add_argument("--cycle", type=float, default=10.0, help="seconds of Release+Entitle")
    p.add_argument("--idle-fraction", type=float, default=d.idle_fraction)
    p.add_argument("--plugin-fraction", type=float, default=d.plugin_fraction)
    p.add_argument(
        "--sync",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="the server's SQLite synchronous mode (its own default: FULL)",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="run Tessera on PostgreSQL (a throwaway pgserver, fsync on) instead of SQLite",
    )
    p.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=Config.event_loop,
        help="the loop both servers run on (--event-loop of python -m server)",
    )
    p.add_argument("--max-duration", type=float, default=1800.0, help="hard cap per run, s")
    p.add_argument("--json", type=Path, help="write both results here (checked before the run)")
    p.add_argument(
        "--py-spy",
        type=Path,
        help="profile the server in the steady state with py-spy "
        "(.svg flame graph, .json speedscope, .txt collapsed stacks)",
    )
    p.add_argument(
        "--perf",
        type=Path,
        help="record the event loop's thread of each server with perf in the --py-spy-phase "
        "(Tessera's to FILE, the echo's to FILE.echo; read with perf report --sort dso)",
    )
    p.add_argument(
        "--py-spy-phase",
        choices=["ramp", "steady", "cycle"],
        default="steady",
        help="the phase --py-spy and --perf profile (cycle: Release+Entitle)",
    )
    p.add_argument(
        "--release",
        action="store_true",
        help="release every session at the end (not compared; slow at 100,000 sessions)",
    )
    p.add_argument(
        "--metrics",
        choices=["both", "off", "only"],
        default="both",
        help="run Tessera without metrics and again with --metrics-listen (both, the "
        "default: the BENCH line then says what they cost), or only one of them",
    )
    p.add_argument(
        "--scrape-every",
        type=float,
        default=15.0,
        help="seconds between scrapes of /metrics in the metrics run (Prometheus's usual 15)",
    )
    p.add_argument(
        "--front-process",
        action=argparse.BooleanOptionalAction,
        help="run Tessera with --front-process (gRPC's work in a second process) or "
        "--no-front-process (one process); default: the server's own default, on with "
        "two cores or more",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be 1 or more")
    try:  # the load generator's own checks, before a server is started for it
        load_config(a, "127.0.0.1:1", "tsa_unchecked", None).validate()
    except ValueError as exc:
        p.error(str(exc))
    if a.json is not None:
        try:  # before any work: written at the end of a run of minutes
            check_writable_file(a.json, "--json")
        except ValueError as exc:
            p.error(str(exc))
    return a


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers


def describe_cores(meter: Meter) -> str:
    parts = [f"{phase} server {s:.2f} + load {w:.2f}" for phase, (s, w) in meter.cores.items()]
    lines = ["cores used: " + "; ".join(parts)]
    names = ["the server's event loop thread", "the front's event loop thread"]
    for i, name in enumerate(names):
        loop = [
            f"{phase} {threads[i][0]:.2f} + {threads[i][1]:.2f}"
            for phase, threads in meter.loop.items()
            if len(threads) > i
        ]
        if loop:
            lines.append(f"{name}, on a core + waiting for one: " + "; ".join(loop))
    return "\n".join(lines)


def load_config(
    a: argparse.Namespace, target: str, token: str, save_users: Path | None
) -> LoadConfig:
    return LoadConfig(
        target=target,
        admin_token=token,
        users=a.users,
        save_users=save_users,
        workers=a.workers,
        channels=a.channels,
        concurrency=a.concurrency,
        ramp_concurrency=a.ramp_concurrency,
        release=a.release,
        warmup=a.warmup,
        steady=a.steady,
        cycle=a.cycle,
        idle_fraction=a.idle_fraction,
        plugin_fraction=a.plugin_fraction,
        max_duration=a.max_duration,
        count_server_sessions=True,
    )


@dataclass
class Contender:
    """A server under the load: its process, its own load generator (a driver
    with its worker processes) and what measures it."""

    child: Child
    driver: Driver
    meter: Meter
    scraper: Scraper | None = None
    users: Users | None = None
    #: (phase, calls a second) of each slice measured: Heartbeats in the steady
    #: state, Releases and Entitles in the cycle.
    slices: list[tuple[str, float]] = field(default_factory=list)


def slice_rps(stats: PhaseStats | None) -> tuple[str, float]:
    """A slice's phase and its calls a second (``slices``)."""
    if stats is None or stats.seconds <= 0:
        return ("-", 0.0)
    names = ("Heartbeat",) if stats.phase == "steady" else ("Entitle", "Release")
    return stats.phase, sum(stats.rpc(n).ok_count for n in names) / stats.seconds


def describe_slices(t: Contender, e: Contender) -> str:
    """Each slice's rate and ratio, in the order run: how much the ratio moved
    from one slice to the next is what one run of the benchmark can tell."""
    lines = []
    for phase, what in (("steady", "Heartbeats"), ("cycle", "Releases+Entitles")):
        ts = [rps for p, rps in t.slices if p == phase]
        es = [rps for p, rps in e.slices if p == phase]
        if ts and es:
            pairs = ", ".join(
                f"{x:,.0f}/{y:,.0f} = {ratio(x, y):.2f}" for x, y in zip(ts, es, strict=False)
            )
            lines.append(f"{phase} slices, {what} a second, tessera/echo: {pairs}")
        splits = [split for p, split in t.meter.slice_cores if p == phase]
        if splits:
            parts = "; ".join(" + ".join(f"{c:.2f}" for c in split) for split in splits)
            lines.append(f"  tessera's cores in each ({CORES_SPLIT}): {parts}")
    return "\n".join(lines)


CORES_SPLIT = (
    "the server's loop thread + its other threads [+ the front's loop thread + its other threads]"
)


class Labelled:
    """One progress display for every server's load generator, each phase named
    after its server."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name = progress, name

    def phase(self, label: str, total: float | None) -> None:
        self.progress.phase(f"{self.name} {label}", total)

    def update(self, completed: float, info: str) -> None:
        self.progress.update(completed, info)

    def close(self) -> None:
        pass  # the display is closed once, by main


def start_tessera(
    a: argparse.Namespace,
    tmp: Path,
    token: str,
    servers: list[Child],
    progress: Progress,
    *,
    users_file: Path | None,
    metrics_port: int = 0,
    pg_url: str | None = None,
) -> Contender:
    """A fresh Tessera server (with --metrics-listen on ``metrics_port`` and a
    scraper when it is not 0; on a fresh database of ``pg_url``'s PostgreSQL when
    given) and its load generator; the users are saved to ``users_file`` if given."""
    name = "tessera-metrics" if metrics_port else "tessera"
    db = asyncio.run(new_database(pg_url)) if pg_url else str(tmp / f"{name}.db")
    args = [
        *(sys.executable, "-m", "server", "--listen", "127.0.0.1:0"),
        *("--db", db, "--admin-token", token, "--log-format", "json"),
        *("--event-loop", a.event_loop),
    ]
    if pg_url:
        args += ["--secrets-dir", str(tmp / f"{name}-secrets")]
    else:
        args += ["--sync", a.sync]
    if metrics_port:
        args += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    if a.front_process is not None:
        args += ["--front-process" if a.front_process else "--no-front-process"]
    tessera = Child(name, args, tmp)
    servers.append(tessera)
    tessera.start()
    store = "PostgreSQL (pgserver, fsync on)" if pg_url else f"SQLite, --sync {a.sync}"
    print(
        f"{name} on {tessera.target} (pid {tessera.pid}"
        + (f", its front {tessera.front_pid}" if tessera.front_pid else ", one process")
        + f", {store}); "
        f"load average {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    cfg = load_config(a, tessera.target, token, users_file)
    meter = Meter(
        tessera,
        a.py_spy if not metrics_port else None,
        a.py_spy_phase,
        a.perf if not metrics_port else None,
    )
    scraper = Scraper(metrics_port, a.scrape_every) if metrics_port else None
    return Contender(tessera, Driver(cfg, Labelled(progress, name), meter), meter, scraper)


def start_echo(
    a: argparse.Namespace,
    tmp: Path,
    token: str,
    servers: list[Child],
    progress: Progress,
    users_file: Path,
    name: str,
    extra: list[str],
    perf: Path | None,
) -> Contender:
    """An echo answering with Tessera's captured responses (``tmp/responses.json``),
    and its load generator on the same users, ramped up."""
    child = Child(
        name,
        [
            *(sys.executable, "-m", "benchmarks.echo_server", "--listen", "127.0.0.1:0"),
            *("--responses", str(tmp / "responses.json"), "--event-loop", a.event_loop),
            *extra,
        ],
        tmp,
    )
    servers.append(child)
    child.start()
    print(f"{name} on {child.target} (pid {child.pid})", file=sys.stderr)
    cfg = replace(
        load_config(a, child.target, token, None),
        admin_token=None,
        users_file=users_file,
        count_server_sessions=False,
    )
    meter = Meter(child, spy_phase=a.py_spy_phase, perf=perf)
    echo = Contender(child, Driver(cfg, Labelled(progress, name), meter), meter)
    echo.users = echo.driver.open()
    return echo


def durable_idle_line(kind: str, t: RunResult, e: RunResult, d: RunResult) -> str:
    """The echo that stores its Idles against the bare one: its Idle p99 over the
    bare echo's (``durable_vs_echo``: what storing an Idle the plain way adds), and
    Tessera's over each."""
    ti, ei, di = (p99_ms(r.row("steady", "Idle")) for r in (t, e, d))
    return (
        f"DURABLE_IDLE kind={kind} idle_p99_ms={ti:.2f} echo_idle_p99_ms={ei:.2f} "
        f"durable_echo_idle_p99_ms={di:.2f} durable_vs_echo={ratio(di, ei):.2f}x "
        f"tessera_vs_echo={ratio(ti, ei):.2f}x tessera_vs_durable_echo={ratio(ti, di):.2f}x"
    )


def in_turn(contenders: list[Contender], rounds: int) -> Iterator[Contender]:
    """Each contender once a round, the order reversed every other round: a host
    that speeds up or slows down through the run moves every contender alike."""
    for r in range(rounds):
        yield from (contenders if r % 2 == 0 else contenders[::-1])


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    token = "tsa_" + secrets.token_urlsafe(24)
    users_file = tmp / "users.json"
    servers: list[Child] = []
    contenders: list[Contender] = []
    progress = make_progress(not a.no_progress)
    stack = contextlib.ExitStack()
    stack.callback(progress.close)
    try:
        pg_url = stack.enter_context(throwaway_postgres(tmp)) if a.postgres else None
        metrics_port = free_port() if a.metrics != "off" else 0
        first = start_tessera(
            a,
            tmp,
            token,
            servers,
            progress,
            users_file=users_file,
            metrics_port=metrics_port if a.metrics == "only" else 0,
            pg_url=pg_url,
        )
        contenders.append(first)
        if first.scraper is not None:
            stack.enter_context(first.scraper)
        first.users = first.driver.open()
        ramp = first.driver.result.phases.get("ramp")
        ramp_began = ramp.started if ramp is not None else time.monotonic()
        # The echo answers with Tessera's own responses: a short unmeasured steady
        # state and cycle get one of each.
        first.driver.steady(0.5, 0.5, record=False)
        first.driver.cycle(0.5, record=False)
        responses = tmp / "responses.json"
        responses.write_text(json.dumps(first.driver.result.samples), encoding="utf-8")
        echo_perf = a.perf.with_name(a.perf.name + ".echo") if a.perf else None
        echo = start_echo(a, tmp, token, servers, progress, users_file, "echo", [], echo_perf)
        contenders.append(echo)
        durable = None
        if a.durable_echo:
            path = tmp / ("echo-durable.db" if a.durable_echo == "sqlite" else "echo-durable.log")
            durable_args = ["--durable-idle", a.durable_echo, "--durable-path", str(path)]
            durable = start_echo(
                a, tmp, token, servers, progress, users_file, "echo-durable", durable_args, None
            )
            contenders.append(durable)

        pair = [first, echo]
        steady_ones = [*pair, durable] if durable is not None else pair
        for c in in_turn(steady_ones, a.rounds):
            c.slices.append(slice_rps(c.driver.steady(a.warmup, a.steady / a.rounds)))
        first.driver.count(first.users)
        for c in in_turn(pair, a.rounds):
            c.slices.append(slice_rps(c.driver.cycle(a.cycle / a.rounds)))
        if time.monotonic() - ramp_began > GRACE_SECONDS:
            print(
                f"warning: the slices ended over {GRACE_SECONDS:.0f} s after Tessera's ramp "
                "began: its sessions' grace ended meanwhile, and the holds it captured "
                "then were work in others' slices as well as its own (fewer --users)",
                file=sys.stderr,
            )
        for c in steady_ones:
            c.driver.release()
            c.driver.close()
            code = c.child.stop()
            if c is first:
                print(f"{c.child.name} stopped with exit code {code}", file=sys.stderr)
        m = first if a.metrics == "only" else None
        if a.metrics == "both":
            # After the pair, on its own: its grace (5 min after its ramp) must not
            # fall in the pair's slices. Compared with the first server run the same
            # way, one after the other.
            m = start_tessera(
                a,
                tmp,
                token,
                servers,
                progress,
                metrics_port=metrics_port,
                users_file=None,
                pg_url=pg_url,
            )
            contenders.append(m)
            assert m.scraper is not None  # noqa: S101 - made with a metrics port
            with m.scraper:
                m.driver.run()
            code = m.child.stop()
            print(f"{m.child.name} stopped with exit code {code}", file=sys.stderr)
            if m.driver.result.aborted == "interrupted":
                # Its figures are of a run cut short: no BENCH line from them.
                print("bench: interrupted", file=sys.stderr)
                return 130

        m_pair = (m.driver.result, m.meter) if m is not None else None
        t_result, t_meter = first.driver.result, first.meter
        e_result, e_meter = echo.driver.result, echo.meter
        print(
            f"{first.child.name} and the echo in turn: each one's steady state and cycle "
            f"in {a.rounds} slices"
            + ("; tessera-metrics after them, on its own" if a.metrics == "both" else "")
        )
        print("== Tessera on PostgreSQL ==" if a.postgres else "== Tessera ==")
        print(report(t_result))
        print(describe_cores(t_meter))
        if t_meter.rss_kib and t_result.live_steady:
            print(
                f"server RSS after the steady state {t_meter.rss_kib / 1024:,.0f} MiB "
                f"({t_meter.rss_kib * 1024 / t_result.live_steady:,.0f} bytes per live session, "
                "everything included)"
            )
        if m_pair is not None and a.metrics == "both":
            print("\n== Tessera with --metrics-listen ==")
            print(report(m_pair[0]))
            print(describe_cores(m_pair[1]))
        if m is not None and m.scraper is not None:
            print(m.scraper.describe())
        print("\n== echo (bare grpc.aio, canned responses of the same size) ==")
        print(report(e_result))
        print(describe_cores(e_meter))
        print("\n== side by side ==")
        print(side_by_side(t_result, e_result))
        print(describe_slices(first, echo))
        if explained := explain_ratios(t_result, e_result, t_meter, e_meter):
            print(explained)
        if a.json:
            a.json.write_text(
                json.dumps(
                    {
                        "tessera": t_result.as_dict(),
                        "echo": e_result.as_dict(),
                        "tessera_cores": t_meter.cores,
                        "echo_cores": e_meter.cores,
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
        if a.py_spy:
            print(f"profile of the server in the {a.py_spy_phase} phase: {a.py_spy}")
        if a.perf:
            print(f"perf records of the {a.py_spy_phase} phase: {a.perf}, {echo_perf}")
        if durable is not None:
            print(f"\n== echo whose Idle answers once stored ({a.durable_echo}) ==")
            print(report(durable.driver.result))
            print(describe_cores(durable.meter))
            print(durable_idle_line(a.durable_echo, t_result, e_result, durable.driver.result))
        off = (t_result, t_meter) if a.metrics == "both" else None
        print(bench_line(t_result, e_result, m_pair, off, (t_meter, e_meter)))
        return 0
    except KeyboardInterrupt:
        # Ctrl-C outside a driver's own handling (the pair's phases run without it):
        # the servers are stopped below, and the run ends as the metrics run's does.
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        for c in contenders:
            c.driver.close()
        for child in servers:
            child.stop()
        stack.close()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
