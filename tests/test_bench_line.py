"""``make bench``'s last line (``benchmarks.bench.bench_line``): every target of
issue 17's steady phase and cycle, read from the two runs it compares."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from benchmarks.bench import (
    Child,
    Contender,
    Meter,
    bench_line,
    describe_slices,
    durable_idle_line,
    explain_ratios,
    in_turn,
    slice_rps,
)
from benchmarks.echo_server import DURABLE_KINDS, DurableLog
from benchmarks.sync_latency import sync_line
from client_sdk.load import LoadConfig, RunResult
from client_sdk.load.runner import Driver
from client_sdk.load.stats import PhaseStats, summarize


def _run(heartbeats: list[float], idles: list[float], cycle_calls: int) -> RunResult:
    """A run whose steady state lasted 10 s (these latencies, in seconds) and whose
    cycle lasted 5 s (``cycle_calls`` Entitles and as many Releases)."""
    steady = PhaseStats("steady", started=0.0, ended=10.0)
    for s in heartbeats:
        steady.rpc("Heartbeat").ok(s)
    for s in idles:
        steady.rpc("Idle").ok(s)
    cycle = PhaseStats("cycle", started=10.0, ended=15.0)
    for _ in range(cycle_calls):
        cycle.rpc("Entitle").ok(0.01)
        cycle.rpc("Release").ok(0.01)
    result = RunResult(target="127.0.0.1:1", config=LoadConfig(target="127.0.0.1:1"))
    result.phases = {"steady": steady, "cycle": cycle}
    result.server_live_sessions = 20_000
    return result


def _meter(server: float, load: float) -> Meter:
    """What a run's meter measured in its steady state (a server never started)."""
    meter = Meter(Child("server", [], Path("unused")))
    meter.cores = {"steady": (server, load)}
    return meter


def _contender(name: str) -> Contender:
    """A server and its load generator, neither started."""
    child = Child(name, [], Path("unused"))
    return Contender(child, Driver(LoadConfig(target="127.0.0.1:1")), Meter(child))


def fields(line: str) -> dict[str, str]:
    head, *pairs = line.split()
    assert head == "BENCH"
    return dict(pair.split("=", 1) for pair in pairs)


def test_bench_line_reports_idle_p99_beside_heartbeat_p99_and_each_runs_cores() -> None:
    # Tessera: 4,000 Heartbeats in 10 s (400 a second), latencies 1-100 ms (p99 99 ms),
    # Idles the same. The echo: 5,000 (500 a second), Heartbeats 0.1-10 ms (p99 9.9
    # ms), Idles 0.05-5 ms (p99 4.95 ms): each field has a value of its own.
    tessera = _run([i / 1000 for i in range(1, 101)] * 40, [i / 1000 for i in range(1, 101)], 600)
    echo = _run([i / 10_000 for i in range(1, 101)] * 50, [i / 20_000 for i in range(1, 101)], 1200)
    got = fields(bench_line(tessera, echo, meters=(_meter(1.10, 0.42), _meter(0.86, 0.93))))
    assert got["heartbeat_vs_echo"] == "0.80"  # 400 / 500 a second
    assert got["entitle_release_vs_echo"] == "0.50"  # 240 / 480 calls a second
    assert got["heartbeat_p99_ms"] == "99.00" and got["echo_p99_ms"] == "9.90"
    assert got["idle_p99_ms"] == "99.00" and got["echo_idle_p99_ms"] == "4.95"
    assert got["cores"] == "1.52" and got["echo_cores"] == "1.79"
    assert got["live_sessions"] == "20000"


def test_bench_splits_each_ratio_into_cpu_a_call_and_cores_busy() -> None:
    # Tessera: 400 Heartbeats a second on 1.2 + 0.4 cores (server + load generator),
    # 240 cycle calls a second on 1.2 + 0.24; the echo: 500 on 0.9 + 0.9, 480 on
    # 0.96 + 0.96. Calls a second are cores over CPU a call, so each product is the
    # phase's ratio: 0.90 x 0.89 = 400/500, 0.67 x 0.75 = 240/480.
    tessera, echo = _run([0.01] * 4_000, [], 600), _run([0.01] * 5_000, [], 1_200)
    t_meter, e_meter = _meter(1.2, 0.4), _meter(0.9, 0.9)
    t_meter.cores["cycle"], e_meter.cores["cycle"] = (1.2, 0.24), (0.96, 0.96)
    lines = explain_ratios(tessera, echo, t_meter, e_meter).splitlines()
    assert lines[1:] == [
        "  steady: tessera 3,000 + 1,000 us, echo 1,800 + 1,800 us = 0.90; "
        "x cores 1.60/1.80 = 0.89; = 0.80",
        "  cycle: tessera 5,000 + 1,000 us, echo 2,000 + 2,000 us = 0.67; "
        "x cores 1.44/1.92 = 0.75; = 0.50",
    ]
    # A phase a meter did not measure is left out; with none, there is no line at all.
    del e_meter.cores["cycle"]
    assert len(explain_ratios(tessera, echo, t_meter, e_meter).splitlines()) == 2
    assert explain_ratios(tessera, echo, _meter(0, 0), Meter(Child("e", [], Path("u")))) == ""


def test_bench_line_without_meters_says_the_cores_were_not_measured() -> None:
    run = _run([0.001] * 10, [0.002] * 10, 10)
    got = fields(bench_line(run, run))
    assert got["cores"] == "-" and got["echo_cores"] == "-"
    assert got["heartbeat_vs_echo"] == "1.00"


def test_bench_phase_in_slices_counts_only_the_slices_seconds() -> None:
    # Two 5 s slices of a steady state, 10 s of other servers' slices between them:
    # 1,000 and 500 Heartbeats are 150 a second, not 1,500 over 20 s (75 a second).
    first = PhaseStats("steady", started=100.0, ended=105.0)
    for _ in range(1_000):
        first.rpc("Heartbeat").ok(0.01)
    second = PhaseStats("steady", started=115.0, ended=120.0)
    for _ in range(500):
        second.rpc("Heartbeat").ok(0.01)
    first.then(second)
    assert first.seconds == 10.0
    (row,) = [r for r in summarize(first) if r.rpc == "Heartbeat"]
    assert row.calls == 1_500 and row.rps == 150.0


def test_bench_meter_in_slices_takes_cores_over_the_slices_seconds() -> None:
    # Slice 1 (0-5 s): the server used 5 s of CPU (1 core), the load 2.5 s; slice 2
    # (20-25 s): 2.5 s and 2.5 s. Over the 10 s of slices: 0.75 and 0.50 of a core
    # (over the 25 s from first to last, it would read 0.30 and 0.20).
    meter = Meter(Child("server", [], Path("unused")))
    meter.record("steady", "start", 0.0, 0.0, 0.0, [(0.0, 0.0)])
    meter.record("steady", "end", 5.0, 5.0, 2.5, [(4.0, 1.0)])
    meter.record("steady", "start", 20.0, 7.0, 3.0, [(9.0, 2.0)])
    meter.record("steady", "end", 25.0, 9.5, 5.5, [(10.0, 4.0)])
    assert meter.cores["steady"] == (0.75, 0.5)
    assert meter.loop["steady"] == [(0.5, 0.3)]


def test_bench_meter_splits_each_slices_cores_between_loop_and_other_threads() -> None:
    # Two processes (the server, its front) over a 4 s slice: the server used 3.2 s
    # of CPU, 2.0 of it its loop thread; the front 2.4 s, 1.6 of it its loop thread.
    meter = Meter(Child("server", [], Path("unused")))
    meter.record("steady", "start", 10.0, 0.0, 0.0, [(1.0, 0.0), (2.0, 0.0)], [5.0, 7.0])
    meter.record("steady", "end", 14.0, 5.6, 2.0, [(3.0, 1.0), (3.6, 1.0)], [8.2, 9.4])
    ((phase, split),) = meter.slice_cores
    assert phase == "steady"
    assert [round(c, 6) for c in split] == [0.5, 0.3, 0.4, 0.2]


def test_bench_servers_take_turns_in_reversed_order_every_other_round() -> None:
    # A host that slows through the run slows every server's slices alike.
    names = ["tessera", "metrics", "echo"]
    turns = [c.child.name for c in in_turn([_contender(n) for n in names], 3)]
    assert turns == names + names[::-1] + names


def test_bench_prints_each_slices_ratio_in_the_order_run() -> None:
    tessera, echo = _contender("tessera"), _contender("echo")
    tessera.slices = [("steady", 2_000.0), ("steady", 1_800.0), ("cycle", 900.0)]
    echo.slices = [("steady", 2_500.0), ("steady", 3_000.0), ("cycle", 2_000.0)]
    assert describe_slices(tessera, echo).splitlines() == [
        "steady slices, Heartbeats a second, tessera/echo: 2,000/2,500 = 0.80, 1,800/3,000 = 0.60",
        "cycle slices, Releases+Entitles a second, tessera/echo: 900/2,000 = 0.45",
    ]


def test_bench_slice_rate_counts_heartbeats_or_releases_and_entitles() -> None:
    steady = PhaseStats("steady", started=0.0, ended=4.0)
    for _ in range(800):
        steady.rpc("Heartbeat").ok(0.01)
    for _ in range(40):
        steady.rpc("Idle").ok(0.01)
    cycle = PhaseStats("cycle", started=0.0, ended=2.0)
    for _ in range(300):
        cycle.rpc("Entitle").ok(0.01)
        cycle.rpc("Release").ok(0.01)
    assert slice_rps(steady) == ("steady", 200.0)
    assert slice_rps(cycle) == ("cycle", 300.0)
    assert slice_rps(None) == ("-", 0.0)


def test_bench_durable_idle_line_puts_each_idle_p99_over_the_bare_echos() -> None:
    # Idle p99s: Tessera 99 ms, the bare echo 4.95 ms, the echo storing its Idles
    # 49.5 ms (latencies 0.5-50 ms).
    tessera = _run([0.01], [i / 1000 for i in range(1, 101)], 1)
    echo = _run([0.01], [i / 20_000 for i in range(1, 101)], 1)
    durable = _run([0.01], [i / 2000 for i in range(1, 101)], 1)
    head, *pairs = durable_idle_line("sqlite", tessera, echo, durable).split()
    got = dict(pair.split("=", 1) for pair in pairs)
    assert head == "DURABLE_IDLE" and got["kind"] == "sqlite"
    assert got["idle_p99_ms"] == "99.00" and got["echo_idle_p99_ms"] == "4.95"
    assert got["durable_echo_idle_p99_ms"] == "49.50"
    assert got["durable_vs_echo"] == "10.00x"  # 49.5 / 4.95
    assert got["tessera_vs_echo"] == "20.00x" and got["tessera_vs_durable_echo"] == "2.00x"


def _stored(kind: str, path: Path) -> bytes:
    """What another reader finds at ``path``: the rows' bytes, or the file's first."""
    if kind == "sqlite":
        with sqlite3.connect(path) as db:
            return b"".join(r for (r,) in db.execute("SELECT request FROM idle ORDER BY rowid"))
    return path.read_bytes()[:12]


@pytest.mark.parametrize("kind", DURABLE_KINDS)
async def test_bench_durable_echo_answers_an_idle_once_stored_many_a_sync(
    kind: str, tmp_path: Path
) -> None:
    log = DurableLog(kind, tmp_path / "idle")
    try:
        await log.write(b"first-")
        assert _stored(kind, tmp_path / "idle").startswith(b"first-")
        assert log.syncs == 1
        # Twelve Idles queued before the writer runs share one sync.
        await asyncio.gather(*[log.write(b"x") for _ in range(12)])
        assert log.syncs == 2
        assert _stored(kind, tmp_path / "idle").startswith(b"first-xxxxxx")
    finally:
        log.close()


def test_bench_sync_line_gives_the_syncs_spread_and_how_many_took_over_10_ms() -> None:
    took = sorted([0.0002] * 989 + [0.004] * 9 + [0.012, 0.150])  # 1,000 syncs
    got = dict(pair.split("=", 1) for pair in sync_line(took).split()[1:])
    assert got == {
        "n": "1000",
        "p50_ms": "0.20",
        "p99_ms": "4.00",  # the 990th
        "p99_9_ms": "12.00",  # the 999th
        "max_ms": "150.00",
        "over_10ms": "2",
    }


async def test_bench_durable_echo_fails_an_idle_whose_sync_failed_and_keeps_serving(
    tmp_path: Path,
) -> None:
    log = DurableLog("sqlite", tmp_path / "idle")
    log._db.close()  # every COMMIT now fails
    try:
        with pytest.raises(sqlite3.ProgrammingError):
            await log.write(b"lost")
        assert log.syncs == 0
        # The writer is gone with its batch, not stuck: the next Idle starts another.
        with pytest.raises(sqlite3.ProgrammingError):
            await asyncio.wait_for(log.write(b"next"), timeout=5)
    finally:
        log._thread.shutdown()
