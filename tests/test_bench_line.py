"""``make bench``'s last line (``benchmarks.bench.bench_line``): every target of
issue 17's steady phase and cycle, read from the two runs it compares."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench import Child, Meter, bench_line
from client_sdk.load import LoadConfig, RunResult
from client_sdk.load.stats import PhaseStats


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


def test_bench_line_without_meters_says_the_cores_were_not_measured() -> None:
    run = _run([0.001] * 10, [0.002] * 10, 10)
    got = fields(bench_line(run, run))
    assert got["cores"] == "-" and got["echo_cores"] == "-"
    assert got["heartbeat_vs_echo"] == "1.00"
