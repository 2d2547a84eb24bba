"""The benchmarks' runs: ``make bench`` interrupted or given a ``--json`` it cannot
write, their figures' edge cases, and SIGTERM in the benchmarks that leave servers
and files behind unless they clean up.

``bench.main`` runs here on stand-ins for its servers and load generators (nothing
is started); the SIGTERM tests run each benchmark in a child process whose servers
are stand-ins (a sleeping process each) and whose measuring never ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench
from benchmarks.bench import Child, Contender, Meter, Scraper, free_port, metrics_cost
from benchmarks.h2load_heartbeat import Point, failed_calls, median
from benchmarks.million_sessions import quantile
from client_sdk.load import LoadConfig, RunResult
from client_sdk.load.stats import PhaseStats

REPO = Path(__file__).resolve().parents[1]


def _result(heartbeats: int, aborted: str | None = None) -> RunResult:
    """A run whose steady state lasted 10 s: ``heartbeats`` answered, one refused."""
    r = RunResult("127.0.0.1:1", LoadConfig(target="127.0.0.1:1"))
    steady = PhaseStats("steady", 0.0, 10.0)
    steady.rpc("Heartbeat").error("UNAVAILABLE", "down")
    for _ in range(heartbeats):
        steady.rpc("Heartbeat").ok(0.001)
    r.phases = {"steady": steady}
    r.aborted = aborted
    return r


class _Driver:
    """Stands in for a server's load generator (``runner.Driver``): no process."""

    def __init__(self, result: RunResult) -> None:
        self.result = result

    def open(self) -> None:
        return None

    def steady(self, warmup: float, duration: float, *, record: bool = True) -> PhaseStats:
        return self.result.phases["steady"]

    def cycle(self, duration: float, *, record: bool = True) -> None:
        return None

    def count(self, users: Any) -> None:
        pass

    def release(self) -> None:
        pass

    def close(self) -> RunResult:
        return self.result

    def run(self) -> RunResult:
        return self.result


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``bench.main``'s servers replaced (``started`` lists what it started); the
    metrics run's result is ``metrics`` (set by the test). SIGTERM's handler, which
    ``bench.main`` installs, is put back after."""
    seen: dict[str, Any] = {"started": [], "metrics": _result(100)}

    def contender(name: str, result: RunResult) -> Contender:
        seen["started"].append(name)
        child = Child(name, [], Path("unused"))
        return Contender(child, _Driver(result), Meter(child))  # type: ignore[arg-type]

    def start_tessera(a: Any, *args: Any, metrics_port: int = 0, **kw: Any) -> Contender:
        if not metrics_port:
            return contender("tessera", _result(100))
        c = contender("tessera-metrics", seen["metrics"])
        c.scraper = Scraper(free_port(), 60.0)  # never scrapes: nothing listens
        return c

    def start_echo(a: Any, tmp: Path, token: str, servers: Any, progress: Any, *rest: Any) -> Any:
        return contender("echo", _result(120))

    monkeypatch.setattr(bench, "start_tessera", start_tessera)
    monkeypatch.setattr(bench, "start_echo", start_echo)
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, saved)


ARGS = ["--users", "3", "--rounds", "1", "--no-progress"]


def test_bench_on_stand_ins_prints_its_bench_line(
    stand_ins: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(ARGS) == 0
    assert stand_ins["started"] == ["tessera", "echo", "tessera-metrics"]
    assert capsys.readouterr().out.splitlines()[-1].startswith("BENCH heartbeat_vs_echo=")


def test_bench_interrupted_in_its_metrics_run_exits_130_without_a_bench_line(
    stand_ins: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C in the metrics run: Driver.run ends its phase, releases, and returns.
    stand_ins["metrics"] = _result(40, aborted="interrupted")
    assert bench.main(ARGS) == 130
    out, err = capsys.readouterr()
    assert "BENCH " not in out
    assert "interrupted" in err


def test_bench_interrupted_in_the_pairs_steady_state_exits_130_without_a_traceback(
    stand_ins: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C while the pair runs: their phases run without Driver.run's handler, so
    # SIGINT reaches bench.main as KeyboardInterrupt (its finally stops the servers).
    def interrupted(self: _Driver, warmup: float, duration: float, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_Driver, "steady", interrupted)
    assert bench.main(ARGS) == 130
    out, err = capsys.readouterr()
    assert "BENCH " not in out
    assert "bench: interrupted" in err


@pytest.mark.parametrize(
    ("flag", "value"), [("--concurrency", "10001"), ("--idle-fraction", "1.5"), ("--users", "0")]
)
def test_bench_load_figures_out_of_range_are_refused_before_any_work(
    stand_ins: dict[str, Any], capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        bench.main([*ARGS, flag, value])
    assert stop.value.code == 2
    assert flag in capsys.readouterr().err
    assert stand_ins["started"] == []


def test_bench_json_that_cannot_be_written_is_refused_before_any_work(
    stand_ins: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as stop:
        bench.main([*ARGS, "--json", str(blocker / "run.json")])  # unwritable, even for root
    assert stop.value.code == 2
    assert "--json" in capsys.readouterr().err
    assert stand_ins["started"] == []


def test_bench_json_into_a_missing_folder_makes_it_and_writes_the_run(
    stand_ins: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "deeper" / "run.json"
    assert bench.main([*ARGS, "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())) >= {"tessera", "echo"}
    assert "BENCH " in capsys.readouterr().out


def test_bench_metrics_cost_without_a_steady_heartbeat_in_the_run_without_is_a_dash() -> None:
    meter = Meter(Child("x", [], Path("unused")))
    text = metrics_cost((_result(0), meter), (_result(100), meter))
    assert " metrics_cost_pct=- " in text
    assert "metrics_heartbeat_rps=10 " in text  # the metrics run's own rate
    assert " metrics_cost_pct=50.0 " in metrics_cost((_result(200), meter), (_result(100), meter))


def test_bench_h2load_median_of_an_even_number_of_rounds_is_the_lower_one() -> None:
    slow, fast, mid = Point(1000.0, 1, 100.0), Point(3000.0, 1, 50.0), Point(2000.0, 1, 70.0)
    assert median([fast, slow]) is slow
    assert median([fast, slow, mid]) is mid
    assert median([fast, mid, slow, Point(4000.0, 1, 40.0)]) is mid
    assert median([fast]) is fast


def test_bench_million_sessions_quantile_is_the_nearest_rank() -> None:
    values = array("d", [float(v) for v in range(100, 0, -1)])  # 100 .. 1, unsorted
    assert quantile(values, 0.99) == 99.0  # not 100.0, the maximum
    assert quantile(values, 0.5) == 50.0
    assert quantile(array("d", [2.0, 1.0]), 0.5) == 1.0
    assert quantile(array("d", [7.0]), 0.99) == 7.0


# -- SIGTERM ------------------------------------------------------------------------------

#: A stand-in server: a process that sleeps until it is stopped.
SLEEPER = textwrap.dedent(
    """
    import subprocess, sys
    from benchmarks.bench import Child

    STARTED = []

    class Sleeper(Child):
        def start(self, timeout=60.0):
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(600)"]
            )
            self.port = 1
            STARTED.append(self.proc.pid)
            return self
    """
)

H2LOAD = SLEEPER + textwrap.dedent(
    """
    import json, time
    from benchmarks import h2load_heartbeat as h

    async def open_session(target, token):
        return "key", b""

    async def heartbeat_answer(target, key, body):
        return b""

    def h2load(a, server, body, key):  # measures for ever
        print(json.dumps({"tmp": str(body.parent), "pids": STARTED}), flush=True)
        time.sleep(600)

    h.Child, h.open_session, h.h2load = Sleeper, open_session, h2load
    h.heartbeat_answer = heartbeat_answer
    raise SystemExit(h.main(["--seconds", "1", "--warmup", "0"]))
    """
)

#: h2load_heartbeat with stand-in servers and an h2load that says what it was given.
H2LOAD_ROUNDS = SLEEPER + textwrap.dedent(
    """
    import json
    from pathlib import Path
    from benchmarks import h2load_heartbeat as h

    async def open_session(target, token):
        return "key", b"request"

    async def heartbeat_answer(target, key, body):
        assert body == b"request"
        return b"tessera's answer, its lease and all"

    def h2load(a, server, body, key):
        if server.name == "echo":
            responses = Path(server.args[server.args.index("--responses") + 1])
            print(json.dumps({"echo_answers": json.loads(responses.read_text())}), flush=True)
        print(json.dumps({"measured": server.name}), flush=True)
        return h.Point(1000.0, 1000, 100.0)

    h.Child, h.open_session, h.h2load = Sleeper, open_session, h2load
    h.heartbeat_answer = heartbeat_answer
    raise SystemExit(h.main(["--seconds", "1", "--warmup", "0", "--rounds", "2"]))
    """
)


@pytest.mark.slow
def test_bench_h2load_echo_answers_tessera_s_own_heartbeat_and_goes_first_every_other_round() -> (
    None
):
    """The echo answered a synthetic Heartbeat without a lease, 193 bytes against
    Tessera's 399: it now answers Tessera's own answer. And it always ran after
    Tessera in a round; a host slowing through a run then favoured one side."""
    done = subprocess.run(
        [sys.executable, "-c", H2LOAD_ROUNDS], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    answers = [x["echo_answers"] for x in lines if "echo_answers" in x]
    assert answers == [{"Heartbeat": b"tessera's answer, its lease and all".hex()}] * 2
    assert [x["measured"] for x in lines if "measured" in x] == [
        "tessera",
        "echo",
        "echo",
        "tessera",
    ]


def test_bench_server_rss_counts_every_process_of_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "server RSS ... bytes per live session, everything included" read the back's
    RSS only; with the front (the default on two cores) the front's ~58 MiB were
    left out, about 600 bytes a session at 100,000."""
    rss = {101: 65_284, 202: 58_796}  # KiB: the back, the front
    monkeypatch.setattr(bench, "status_kib", lambda pid, field: rss[pid])

    class TwoProcesses(Child):
        @property
        def pids(self) -> list[int]:
            return [101, 202]

    meter = Meter(TwoProcesses("tessera", [], Path("unused")))
    meter.record("steady", "start", 0.0, 0.0, 0.0, [(0.0, 0.0)] * 2)
    meter.record("steady", "end", 1.0, 1.0, 1.0, [(1.0, 0.0)] * 2)
    assert meter.rss_kib == 65_284 + 58_796


def test_bench_h2load_failed_calls_count_the_calls_shed_at_admission(tmp_path: Path) -> None:
    """A call shed at admission (``OVERLOADED``) gets no ``rpc`` line, only a count in
    the ``overloaded`` line written once a second: h2load counts it a success (an
    HTTP 200), and the log is what refuses such a run."""
    log = tmp_path / "tessera.out"
    log.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"event": "rpc", "code": "OK"},
                {"event": "rpc", "code": "INVALID_ARGUMENT"},
                {"event": "overloaded", "shed": 5000},
                {"event": "overloaded", "shed": 7},
            )
        )
        + "\nnot json\n"
    )
    assert failed_calls(log) == {"INVALID_ARGUMENT": 1, "RESOURCE_EXHAUSTED": 5007}


def test_bench_h2load_failed_calls_leave_out_the_calls_cancelled_at_a_run_s_end(
    tmp_path: Path,
) -> None:
    """h2load ends each run with its streams in flight: those calls are CANCELLED by
    their client, not failed by the server, up to ``-c`` times ``-m`` a run; beyond that
    a CANCELLED is counted."""
    log = tmp_path / "tessera.out"
    lines = [{"event": "rpc", "code": "CANCELLED"}] * 70 + [{"event": "rpc", "code": "OK"}]
    log.write_text("\n".join(json.dumps(line) for line in lines))
    assert failed_calls(log, cut=64) == {"CANCELLED": 6}
    assert failed_calls(log, cut=128) == {}
    assert failed_calls(log) == {"CANCELLED": 70}


MILLION = textwrap.dedent(
    """
    import asyncio, json, sys
    from benchmarks import million_sessions as m

    async def run(self):  # its store open (its connection's thread), then for ever
        await self.setting()
        print(json.dumps({"tmp": str(self.db.parent)}), flush=True)
        await asyncio.sleep(600)

    m.Bench.run = run
    sys.argv = ["million_sessions", "--sessions", "1", "--tmp", sys.argv[1]]
    raise SystemExit(m.main())
    """
)


def _terminated(script: str, *args: str) -> tuple[dict[str, Any], int]:
    """Run ``script`` until it prints its JSON line, SIGTERM it; (the line, its exit)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        text = proc.stdout.readline()
        while text and not text.startswith("{"):  # a header first
            text = proc.stdout.readline()
        line = json.loads(text)
        assert Path(line["tmp"]).is_dir()
        proc.send_signal(signal.SIGTERM)
        return line, proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_bench_h2load_heartbeat_stops_its_servers_and_removes_its_files_on_sigterm() -> None:
    line, code = _terminated(H2LOAD)
    try:
        assert len(line["pids"]) == 2  # Tessera and the echo
        assert not [p for p in line["pids"] if _running(p)], "its servers were left running"
        assert not Path(line["tmp"]).exists(), "its temporary folder was left behind"
        assert code == 128 + signal.SIGTERM
    finally:
        for pid in line["pids"]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(line["tmp"], ignore_errors=True)


@pytest.mark.slow
def test_bench_million_sessions_removes_its_database_on_sigterm(tmp_path: Path) -> None:
    line, code = _terminated(MILLION, str(tmp_path))
    assert Path(line["tmp"]).parent == tmp_path
    assert list(tmp_path.iterdir()) == [], "its database was left behind"
    assert code == 128 + signal.SIGTERM


def test_bench_h2load_against_runs_the_other_checkout_s_server(tmp_path: Path) -> None:
    """``--against DIR``: a server started from ``DIR`` (``python -m server`` imports
    that checkout's code), with the same flags as this checkout's."""
    from benchmarks.bench import REPO
    from benchmarks.h2load_heartbeat import parse_args, tessera_child

    other = tmp_path / "old"
    assert parse_args(["--against", str(other)]).against == other
    ours = tessera_child("tessera", tmp_path, "t", "asyncio")
    theirs = tessera_child("against", tmp_path, "t", "asyncio", cwd=other)
    assert (ours.cwd, theirs.cwd) == (REPO, other)
    assert theirs.args[1:3] == ["-m", "server"]
    assert theirs.args[3:] == [a.replace("tessera.db", "against.db") for a in ours.args[3:]]
