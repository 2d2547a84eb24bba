"""The load generator keeps to its bounds: a paced phase ends at its end, at the hard
deadline (``--max-duration``) and on an abort (an interrupt); ramp and release start
no more lanes than there are sessions; a run that made no call still gets its report.

The phases run on a loop whose clock is virtual (``VirtualLoop``): a wait moves the
clock on at once, so a phase of seconds takes milliseconds and its figures are exact.
The worker's calls are stand-ins that answer at once (no server, no connection).
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import sys
import time
import types
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk.load import LoadConfig, RunResult
from client_sdk.load import __main__ as load_main
from client_sdk.load import worker as worker_mod
from client_sdk.load.stats import PhaseStats, Recorder, render_table, summarize
from client_sdk.load.worker import SLOTS, Session, Worker, WorkerSpec

REPO = Path(__file__).resolve().parents[2]
T0 = 1000.0  # the virtual clock's start (0.0 reads as "not started" in PhaseStats)


class _Selector:
    """The real selector, polled without blocking; when nothing is ready, the
    virtual clock moves on by the time the loop would have slept."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = self._real.select(0)
        if not ready:
            if timeout is None:
                raise RuntimeError("nothing scheduled and nothing to read: it would hang")
            self._loop.now += timeout
        return ready

    def __getattr__(self, name: str) -> Any:  # register, unregister, get_map, close...
        return getattr(self._real, name)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = T0
        super().__init__(_Selector(self))  # type: ignore[arg-type]

    def time(self) -> float:
        return self.now


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualLoop]:
    """A virtual-time loop, and the worker's ``time.monotonic`` reading its clock."""
    vloop = VirtualLoop()
    monkeypatch.setattr(worker_mod, "time", types.SimpleNamespace(monotonic=vloop.time))
    try:
        yield vloop
    finally:
        vloop.close()


def _run(loop: VirtualLoop, coro: Coroutine[Any, Any, None]) -> None:
    loop.run_until_complete(asyncio.wait_for(coro, timeout=3600))  # virtual seconds


class _Conn:
    def send(self, msg: Any) -> None:
        pass


def _worker(
    hosts: int, *, concurrency: int = 32, hard_deadline: float = 1e18, live: bool = False
) -> tuple[Worker, dict[str, int]]:
    """A worker with ``hosts`` sessions whose calls answer at once (counted by RPC)."""
    cfg = LoadConfig(target="127.0.0.1:1", fake_users=True, concurrency=concurrency)
    spec = WorkerSpec(0, cfg, "t", "P", "", "tag", [], 10**9, hard_deadline)
    w = Worker(spec, _Conn(), [0] * SLOTS)  # type: ignore[arg-type]
    w.hosts = [
        Session(i, (), None, f"d{i}", 1, "P", 0, live=live)  # type: ignore[arg-type]
        for i in range(hosts)
    ]
    w.sessions = list(w.hosts)
    w.live = hosts if live else 0
    calls = {"Entitle": 0, "Heartbeat": 0, "Release": 0}

    async def entitle(s: Session, rec: Recorder) -> bool:
        calls["Entitle"] += 1
        rec.ok(0.001)
        if not s.live:
            s.live, w.live = True, w.live + 1
        return True

    async def heartbeat(s: Session, rec: Recorder) -> None:
        calls["Heartbeat"] += 1
        rec.ok(0.001)
        await asyncio.sleep(0)

    async def release(s: Session, rec: Recorder) -> None:
        calls["Release"] += 1
        rec.ok(0.001)
        if s.live:
            s.live, w.live = False, w.live - 1

    w.entitle = entitle  # type: ignore[method-assign]
    w.heartbeat = heartbeat  # type: ignore[method-assign]
    w.release = release  # type: ignore[method-assign]
    return w, calls


def _steady(
    loop: VirtualLoop, w: Worker, *, duration: float, rate: float, warmup: float = 0.0
) -> PhaseStats:
    stats = PhaseStats("steady", started=loop.time())
    _run(
        loop,
        w.phase_steady(
            stats,
            start_at=loop.time(),
            warmup=warmup,
            duration=duration,
            rate=rate,
            idle_fraction=0,
        ),
    )
    if not stats.ended:  # as Worker.main does
        stats.ended = loop.time()
    return stats


def _ramp(loop: VirtualLoop, w: Worker, *, rate: float) -> PhaseStats:
    stats = PhaseStats("ramp", started=loop.time())
    _run(loop, w.phase_ramp(stats, rate=rate, deadline=1e18))  # the driver's deadline
    stats.ended = max(stats.ended, loop.time())
    return stats


# -- a paced phase keeps to its end, the hard deadline and an abort ----------------------


def test_load_paced_steady_state_lasts_its_seconds_and_its_rps_is_over_them(
    loop: VirtualLoop,
) -> None:
    # --heartbeat-rate 4 --steady 2, 32 lanes: 8 Heartbeats in 2 s, 4 a second. (The
    # lanes used to sleep through the end to their slots, 8 s ahead: 1 a second.)
    w, calls = _worker(50, live=True)
    stats = _steady(loop, w, duration=2.0, rate=4.0)
    (row,) = summarize(stats)
    assert calls["Heartbeat"] == row.ok == 8
    assert stats.seconds == pytest.approx(2.0)
    assert row.rps == pytest.approx(4.0)


def test_load_steady_state_seconds_end_with_its_heartbeats_not_with_a_slow_idle(
    loop: VirtualLoop,
) -> None:
    """Heartbeats start within the steady seconds only; the phase then waits for the
    Idles still in flight, and their wait was counted in its seconds: an Idle that
    waits 0.8 s for its commit (Tessera's, not the echo's) took a fifth or more off
    the Heartbeat rate that the BENCH line compares."""
    w, calls = _worker(50, live=True, concurrency=8)
    idles = 0

    async def heartbeat(s: Session, rec: Any) -> None:
        calls["Heartbeat"] += 1
        await asyncio.sleep(0.001)
        rec.ok(0.001)

    async def idle(s: Session, rec: Any) -> None:
        nonlocal idles
        idles += 1
        await asyncio.sleep(0.8)
        rec.ok(0.8)

    w.heartbeat = heartbeat  # type: ignore[method-assign]
    w.idle = idle  # type: ignore[method-assign]
    stats = PhaseStats("steady", started=loop.time())
    begun = loop.time()
    _run(
        loop,
        w.phase_steady(
            stats, start_at=begun, warmup=0.0, duration=1.0, rate=0.0, idle_fraction=0.2
        ),
    )
    waited = loop.time() - begun  # the last Idle answered
    if not stats.ended:
        stats.ended = loop.time()
    (hb,) = (row for row in summarize(stats) if row.rpc == "Heartbeat")
    assert idles > 0 and waited > 1.5
    assert stats.seconds == pytest.approx(1.0, abs=0.002)
    assert hb.rps == pytest.approx(calls["Heartbeat"] / stats.seconds)


def test_load_paced_steady_state_counts_a_call_measured_by_when_its_slot_came(
    loop: VirtualLoop,
) -> None:
    # 1 s of warm-up, then 2 s measured, 4 a second: 4 warm-up calls, 8 measured
    # (not the 32 whose slots were handed out in the warm-up's first instant).
    w, _ = _worker(50, live=True)
    stats = _steady(loop, w, warmup=1.0, duration=2.0, rate=4.0)
    (warm,) = w.extra
    assert warm.rpc("Heartbeat").ok_count == 4
    assert stats.rpc("Heartbeat").ok_count == 8
    assert stats.seconds == pytest.approx(2.0)


def test_load_paced_steady_state_stops_at_once_on_an_abort(loop: VirtualLoop) -> None:
    # An interrupt (the driver's "abort") 1.5 s into a 60 s steady state at 1 a second.
    w, calls = _worker(50, live=True)
    loop.call_at(T0 + 1.5, w.abort.set)
    stats = _steady(loop, w, duration=60.0, rate=1.0)
    assert calls["Heartbeat"] == 2
    assert stats.ended - T0 == pytest.approx(1.5)


def test_load_paced_steady_state_stops_at_the_hard_deadline(loop: VirtualLoop) -> None:
    w, calls = _worker(50, live=True, hard_deadline=T0 + 3.0)  # --max-duration
    stats = _steady(loop, w, duration=60.0, rate=1.0)
    assert calls["Heartbeat"] == 3
    assert stats.ended - T0 == pytest.approx(3.0)


def test_load_paced_ramp_stops_at_the_hard_deadline_and_releases_what_it_opened(
    loop: VirtualLoop,
) -> None:
    # --ramp-rate 1, 32 lanes, --max-duration 3: 3 Entitles, the ramp over at 3 s (not
    # at 31, the last lane's slot), then the releases of the 3.
    w, calls = _worker(32, hard_deadline=T0 + 3.0)
    stats = _ramp(loop, w, rate=1.0)
    assert calls["Entitle"] == 3 and w.units == 3
    assert stats.ended - T0 == pytest.approx(3.0)
    _run(loop, w.phase_release(PhaseStats("release"), deadline=loop.time() + 30))
    assert calls["Release"] == 3
    assert not any(s.live for s in w.hosts)


def test_load_paced_ramp_stops_at_once_on_an_abort(loop: VirtualLoop) -> None:
    w, calls = _worker(32)
    loop.call_at(T0 + 2.5, w.abort.set)
    stats = _ramp(loop, w, rate=1.0)
    assert calls["Entitle"] == 3
    assert stats.ended - T0 == pytest.approx(2.5)


def test_load_pacer_waits_for_its_slot_but_never_past_the_deadline_or_an_abort(
    loop: VirtualLoop,
) -> None:
    async def go() -> list[tuple[bool, float]]:
        abort = asyncio.Event()
        pacer = worker_mod.Pacer(rate=0.1)  # slots 10 s apart
        seen: list[tuple[bool, float]] = []
        for deadline in (T0 + 100, T0 + 100, T0 + 15, T0 + 100):
            if len(seen) == 3:
                loop.call_at(loop.time() + 1, abort.set)
            stop = await pacer.wait(deadline, abort)
            seen.append((stop, loop.time() - T0))
        return seen

    seen = loop.run_until_complete(go())
    # The first slot at once, the second 10 s on; the third (20 s) lies past its
    # deadline (15 s): stop there; the fourth (30 s): an abort 1 s later, stop then.
    assert seen == [(False, 0.0), (False, 10.0), (True, 15.0), (True, 16.0)]


# -- lanes: no more than sessions ---------------------------------------------------------


def test_load_ramp_and_release_start_no_more_lanes_than_sessions(
    loop: VirtualLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    lanes: list[int] = []
    original = Worker._lanes

    async def counting(self: Worker, n: int, lane: Any) -> None:
        lanes.append(n)
        await original(self, n, lane)

    monkeypatch.setattr(Worker, "_lanes", counting)
    w, calls = _worker(3, concurrency=1000)
    _ramp(loop, w, rate=0.0)
    _run(loop, w.phase_release(PhaseStats("release"), deadline=loop.time() + 30))
    assert calls == {"Entitle": 3, "Heartbeat": 0, "Release": 3}
    assert lanes == [3, 3], f"coroutines started for 3 sessions: {lanes}"


def test_load_concurrency_has_an_upper_bound(capsys: pytest.CaptureFixture[str]) -> None:
    # -n 50 -c 1000000 took a gigabyte: a coroutine a lane.
    for flag in ("--concurrency", "--ramp-concurrency"):
        with pytest.raises(SystemExit) as stop:
            load_main.main(["--target", "127.0.0.1:1", "--fake-users", flag, "1000000"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "must be within" in err, err
    with pytest.raises(ValueError, match="--concurrency must be within"):
        LoadConfig(fake_users=True, concurrency=1_000_000).validate()


def test_load_header_says_the_calls_in_flight_a_worker_has() -> None:
    r = RunResult("127.0.0.1:1", LoadConfig(target="127.0.0.1:1", workers=1, concurrency=1000))
    r.users = r.sessions = 3
    r.in_flight = 3
    assert "1 workers x 1 connections x 3 in flight" in load_main.report(r)


@pytest.mark.slow
def test_load_a_run_of_three_sessions_says_three_in_flight(tmp_path: Path) -> None:
    # The whole command against the bare echo: -c 1000 for 3 sessions runs 3 lanes.
    from benchmarks.bench import Child

    echo = Child(
        "echo",
        [sys.executable, "-m", "benchmarks.echo_server", "--listen", "127.0.0.1:0"],
        tmp_path,
    ).start()
    try:
        out = subprocess.run(
            [
                *(sys.executable, "-m", "client_sdk.load", "--target", echo.target),
                *("--fake-users", "-n", "3", "-P", "1", "-c", "1000", "--plugin-fraction", "0"),
                *("--warmup", "0", "--steady", "0.2", "--no-progress", "--max-duration", "60"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        echo.stop()
    assert out.returncode == 0, out.stderr
    assert "3 sessions, 1 workers x 1 connections x 3 in flight" in out.stdout, out.stdout


@pytest.mark.slow
def test_load_max_duration_bounds_the_wait_for_a_server_that_is_down() -> None:
    # README: "--max-duration cap[s] the run" (the releases 30 s past it at most). The
    # workers waited --timeout for a connection whatever the deadline: 46 s for this 2 s
    # run. The bound asserted is generous (a spawned worker takes a second to start).
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.monotonic()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "client_sdk.load", "--target", f"127.0.0.1:{port}"),
            *("--fake-users", "-n", "1", "-P", "1", "--warmup", "0", "--steady", "0"),
            *("--no-progress", "--max-duration", "2", "--timeout", "45"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - began
    assert took < 20, f"a 2 s run took {took:.1f} s"
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines() == [
        f"client_sdk.load: worker 0 failed: could not connect to 127.0.0.1:{port} "
        "within --max-duration (2 s)"
    ], out.stderr


# -- a run that made no call -------------------------------------------------------------


def test_load_table_of_a_run_with_no_call_renders() -> None:
    text = render_table([])
    assert text.splitlines()[0].split() == [
        *("phase", "rpc", "calls", "errors", "rps", "p50", "ms", "p95", "ms", "p99", "ms"),
        *("max", "ms"),
    ]


def test_load_run_stopped_before_any_call_prints_its_report_and_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_call(cfg: LoadConfig, progress: Any = None) -> RunResult:
        r = RunResult(cfg.target, cfg)
        r.aborted = "max_duration reached"
        r.phases = {"ramp": PhaseStats("ramp")}  # no call in it: no line
        return r

    monkeypatch.setattr(load_main, "run", no_call)
    code = load_main.main(["--target", "127.0.0.1:1", "--fake-users", "--no-progress"])
    assert code == 3
    assert "STOPPED EARLY: max_duration reached" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "value"), [("--workers", "100000"), ("--channels", "100000"), ("--users", "1e9")]
)
def test_load_workers_channels_and_users_have_an_upper_bound(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-P 100000`` started a Python process a user (a thousand of them on two cores);
    ``--fake-users -n 100000000`` made its keys for 11 s and died of a MemoryError,
    before ``--max-duration`` applies."""
    with pytest.raises(SystemExit) as stop:
        load_main.main(["--target", "127.0.0.1:1", "--fake-users", flag, str(int(float(value)))])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "must be within" in err, err


def test_h3_load_follows_a_standbys_hint_only_to_a_loopback_address() -> None:
    """The README: the tool "refuses non-loopback targets unless --allow-remote"; a
    standby's NOT_LEADER naming the active's advertised name (``tessera-a.internal``)
    took the load there all the same. Unfollowed, the calls go round the listed ones."""
    listed = "127.0.0.1:7001,127.0.0.1:7002"
    targets = LoadConfig(target=listed, fake_users=True).new_targets()
    assert targets.move("127.0.0.1:7001", leader="tessera-a.internal:50051") == "127.0.0.1:7002"
    assert targets.move("127.0.0.1:7002", leader="[::1]:7003") == "[::1]:7003"
    remote = LoadConfig(target=listed, fake_users=True, allow_remote=True).new_targets()
    assert remote.move("127.0.0.1:7001", leader="tessera-a.internal:50051") == (
        "tessera-a.internal:50051"
    )
