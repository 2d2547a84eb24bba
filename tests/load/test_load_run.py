"""A short load run against a real server proves the generator works end to end.

The server runs in this process (``tests.support.ServerThread``, 127.0.0.1
port 0, test clock); the generator provisions through AdminService and drives
it from two worker processes, as ``python -m client_sdk.load`` would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client_sdk import ManualClock
from client_sdk.load import LoadConfig, run
from client_sdk.load.__main__ import main
from client_sdk.load.runner import Driver, LoadError
from tessera_api.tessera.v1.common_pb2 import SESSION_STATE_ENDED
from tests.grpcurl import Grpcurl
from tests.sdk.fakes import FakeLicensing, FakeThread
from tests.support import ADMIN_TOKEN, ServerThread

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path_factory.mktemp("load") / "t.db").start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_short_run_opens_holds_cycles_and_releases_every_session(
    server: ServerThread, tmp_path: Path
) -> None:
    users_file = tmp_path / "users.json"
    cfg = LoadConfig(
        target=server.target,
        admin_token=ADMIN_TOKEN,
        users=300,
        save_users=users_file,
        plugin_fraction=0.2,
        idle_fraction=0.05,
        workers=2,
        channels=2,
        concurrency=8,
        warmup=0.3,
        steady=1.5,
        cycle=1.0,
        count_server_sessions=True,
        max_duration=50,
    )
    r = run(cfg)

    assert r.aborted is None
    plugins = r.sessions - r.users
    assert r.users == 300 and 30 <= plugins <= 90  # ~20 % of the users run the plugin
    # Every session opened, was held through the steady state, and was released.
    assert r.live_after_ramp == r.sessions
    assert r.live_steady == r.sessions
    assert r.server_live_sessions == r.sessions
    assert r.live_at_end == 0
    assert r.ended == {}
    rows = {(x.phase, x.rpc): x for x in r.rows()}
    assert {k: v.errors for k, v in rows.items() if v.errors} == {}
    assert rows["ramp", "Entitle"].ok == r.sessions
    assert rows["steady", "Heartbeat"].ok > 100
    assert rows["steady", "Idle"].ok > 0
    assert rows["cycle", "Entitle"].ok > 0 and rows["cycle", "Release"].ok > 0
    assert rows["release", "Release"].ok == r.sessions
    for row in rows.values():
        assert 0 < row.p50_ms <= row.p95_ms <= row.p99_ms <= row.max_ms
    # A response of each kind was kept (the benchmark's echo answers with them).
    assert set(r.samples) == {"Entitle", "Heartbeat", "Idle", "Release"}
    assert json.loads(users_file.read_text())["team_id"] == r.team_id


def test_a_phase_is_metered_from_when_its_workers_begin_not_before(
    server: ServerThread,
) -> None:
    """``on_phase`` (the benchmark's meter of the cores each run keeps busy) was told a
    steady or cycle slice began when the command went out, 0.2 s before the workers
    begin together (``start_at``): the cores it printed counted those idle 0.2 s."""
    marks: dict[str, float] = {}

    def hook(driver: Driver, phase: str, when: str) -> None:
        marks[f"{phase}-{when}"] = time.monotonic()

    cfg = LoadConfig(
        target=server.target,
        admin_token=ADMIN_TOKEN,
        users=40,
        plugin_fraction=0.0,
        workers=1,
        concurrency=4,
        warmup=0.0,
        steady=0.3,
        cycle=0.3,
        release=True,
        max_duration=50,
    )
    d = Driver(cfg, on_phase=hook)
    d.open()
    try:
        d.steady(cfg.warmup, cfg.steady)
        d.cycle(cfg.cycle)
    finally:
        d.close()
    for phase in ("steady", "cycle"):
        began = d.result.phases[phase].started  # its workers' own start (no warm-up)
        assert began > 0
        assert marks[f"{phase}-start"] > began - 0.05, phase  # (a worker wakes late, not early)


def test_the_command_reuses_a_users_file_and_writes_json(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users_file = tmp_path / "users.json"
    first = run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=50,
            save_users=users_file,
            workers=1,
            warmup=0,
            steady=0.3,
        )
    )
    assert first.live_at_end == 0
    out = tmp_path / "run.json"
    code = main(
        [
            *("--target", server.target, "--users-file", str(users_file), "-n", "50"),
            *("-P", "1", "--warmup", "0", "--steady", "0.3", "--json", str(out)),
            "--no-progress",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "steady   Heartbeat" in table
    data = json.loads(out.read_text())
    assert data["users"] == 50 and data["live_at_end"] == 0
    assert {(x["phase"], x["rpc"]) for x in data["rpcs"]} >= {
        ("ramp", "Entitle"),
        ("steady", "Heartbeat"),
        ("release", "Release"),
    }
    assert all(x["errors"] == {} for x in data["rpcs"])


def test_max_calls_is_a_hard_cap_in_a_paced_ramp_too(server: ServerThread) -> None:
    """With --ramp-rate the ramp's lanes all wait for the pacer, then each sent its
    Entitle: 20 went out under a cap of 5. The cap is looked at again after the wait."""
    r = run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=20,
            plugin_fraction=0,
            workers=1,
            ramp_rate=200,
            steady=30,
            max_calls=5,
            max_duration=40,
        )
    )
    assert r.aborted == "max_calls reached"
    rows = {(x.phase, x.rpc): x for x in r.rows()}
    assert rows["ramp", "Entitle"].calls == 5
    assert rows["release", "Release"].ok == 5 and r.live_at_end == 0


def test_max_calls_is_a_hard_cap_and_what_was_opened_is_released_after_it(
    server: ServerThread,
) -> None:
    r = run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=100,
            plugin_fraction=0,
            workers=2,
            steady=30,  # would run for 30 s without the cap
            max_calls=150,
            max_duration=40,
        )
    )
    assert r.aborted == "max_calls reached"
    rows = {(x.phase, x.rpc): x for x in r.rows()}
    # 100 Entitles and 50 Heartbeats: the cap; then the releases, on a budget of their own.
    assert sum(row.calls for row in r.rows() if row.phase != "release") == 150
    assert rows["ramp", "Entitle"].ok == 100
    assert rows["release", "Release"].calls == rows["release", "Release"].ok == 100
    assert r.live_at_end == 0
    assert r.seconds < 30


def test_max_duration_is_a_hard_cap_and_what_was_opened_is_released_after_it(
    server: ServerThread,
) -> None:
    r = run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=20,
            plugin_fraction=0,
            workers=1,
            steady=60,
            max_duration=6,
        )
    )
    assert r.seconds < 15
    assert r.aborted == "max_duration reached"
    release = r.row("release", "Release")
    assert release is not None and release.ok == 20
    assert r.live_at_end == 0


def test_a_run_stopped_early_exits_3_and_says_so(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("--target", server.target, "--admin-token", ADMIN_TOKEN, "-n", "20"),
            *("--plugin-fraction", "0", "-P", "1", "--steady", "30", "--max-calls", "40"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 3, out
    assert "STOPPED EARLY: max_calls reached" in out
    assert "LEFT LIVE" not in out and "0 at the end" in out


def test_fewer_users_than_workers_start_one_worker_per_user(server: ServerThread) -> None:
    r = run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=1,
            plugin_fraction=0,
            workers=2,  # the default: one of them would have had no user
            warmup=0,
            steady=0.3,
            max_duration=30,
        )
    )
    assert r.aborted is None
    assert r.config.workers == 1
    rows = {(x.phase, x.rpc): x for x in r.rows()}
    assert {k: v.errors for k, v in rows.items() if v.errors} == {}
    assert rows["ramp", "Entitle"].ok == 1 and rows["steady", "Heartbeat"].ok > 0
    assert rows["release", "Release"].ok == 1
    assert r.live_after_ramp == 1 and r.live_at_end == 0


def _fake_users(path: Path, n: int) -> Path:
    """A users file for the fake server, which takes one key for everybody."""
    users = [[f"u{i}@example.com", "tsu_fake-key"] for i in range(n)]
    path.write_text(json.dumps({"team_id": "acme", "product_id": "ACAD", "users": users}))
    return path


def test_releases_refused_with_a_retry_info_are_sent_again(tmp_path: Path) -> None:
    with FakeThread(ManualClock()) as fake:
        for _ in range(2):  # a rate limit, twice: each Release may be tried three times
            fake.refuse(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                method="Release",
                retry_after=0.01,
            )
        r = run(
            LoadConfig(
                target=fake.target,
                users_file=_fake_users(tmp_path / "users.json", 3),
                users=3,
                workers=1,
                warmup=0,
                steady=0,
            )
        )
        releases = len(fake.called("Release"))
    row = r.row("release", "Release")
    assert row is not None
    assert (row.calls, row.ok) == (5, 3)
    assert row.errors == {"RESOURCE_EXHAUSTED/RATE_LIMITED": 2}
    assert releases == 5 and r.live_at_end == 0


def test_a_session_left_live_is_reported_and_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeThread(ManualClock()) as fake:
        # Refused without a RetryInfo: not sent again.
        fake.refuse(grpc.StatusCode.INTERNAL, "", method="Release")
        users = _fake_users(tmp_path / "users.json", 3)
        code = main(
            [
                *("--target", fake.target, "--users-file", str(users), "-n", "3", "-P", "1"),
                *("--warmup", "0", "--steady", "0", "--no-progress"),
            ]
        )
        releases = len(fake.called("Release"))
    out = capsys.readouterr().out
    assert code == 1, out
    assert releases == 3
    assert "LEFT LIVE: 1 sessions could not be released" in out


def test_h3_a_run_with_a_standby_first_follows_the_active(
    server: ServerThread, tmp_path: Path
) -> None:
    users_file = tmp_path / "users.json"
    run(
        LoadConfig(
            target=server.target,
            admin_token=ADMIN_TOKEN,
            users=40,
            save_users=users_file,
            workers=1,
            warmup=0,
            steady=0,
        )
    )
    # The first target is a standby naming the active (as a real one does): every worker
    # connects to it first, is sent on, and stays with the active.
    with FakeThread(ManualClock()) as standby:
        standby.standby = server.target
        r = run(
            LoadConfig(
                target=f"{standby.target},{server.target}",
                users_file=users_file,
                users=40,
                plugin_fraction=0,
                workers=2,
                concurrency=4,
                warmup=0,
                steady=0.3,
            )
        )
        met_standby = len(standby.calls)
    rows = {(x.phase, x.rpc): x for x in r.rows()}
    assert {k: v.errors for k, v in rows.items() if v.errors} == {}
    assert rows["ramp", "Entitle"].ok == 40 and rows["release", "Release"].ok == 40
    assert r.live_after_ramp == 40 and r.live_at_end == 0
    assert 2 <= met_standby <= 2 * 4  # the first calls of each worker, not one more
    assert r.target == f"{standby.target},{server.target}"


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited (its files closed) and waits to be reaped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("when", ["before the phase is sent", "during the phase"])
def test_a_worker_that_dies_fails_the_run_and_the_others_release_their_sessions(
    tmp_path: Path, when: str
) -> None:
    """One worker killed as the steady state begins (gone before the phase is sent to
    it, or while it runs): the other stops its phase, releases the sessions it opened,
    and the run fails naming the dead one (the command exits 1). Before, the driver
    stopped every worker at once and left all 40 sessions live."""
    srv = ServerThread(tmp_path / "t.db").start()
    killers: list[threading.Timer] = []

    def kill_one(driver: Driver, phase: str, at: str) -> None:
        if (phase, at) != ("steady", "start") or killers:
            return
        pid = driver.worker_pids[0]
        killers.append(threading.Timer(0 if when.startswith("before") else 1.0, os.kill, (pid, 9)))
        killers[0].start()
        if when.startswith("before"):
            killers[0].join()
            for _ in range(500):  # 5 s at most: its end of the pipe closes as it exits
                if _zombie(pid):
                    break
                time.sleep(0.01)

    cfg = LoadConfig(
        target=srv.target,
        admin_token=ADMIN_TOKEN,
        users=40,
        plugin_fraction=0,
        workers=2,
        warmup=0,
        steady=30,  # cut short by the loss
        max_duration=40,
    )
    try:
        with pytest.raises(LoadError, match=r"^worker 0 exited \(-9\)$"):
            run(cfg, on_phase=kill_one)
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            live = admin.every("tessera.v1.AdminService/ListSessions", {}, "sessions")
        finally:
            admin.close()
    finally:
        srv.stop()
    assert len(live) == 20  # the dead worker's half, left to the server


def test_a_run_whose_calls_came_to_max_calls_exactly_did_it_all_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 3 is "stopped early: --max-calls or --max-duration was reached before the
    phases were done"; three users' Entitles in a budget of three did every phase, and
    were reported STOPPED EARLY."""
    with FakeThread(ManualClock()) as fake:
        users = _fake_users(tmp_path / "users.json", 3)
        code = main(
            [
                *("--target", fake.target, "--users-file", str(users), "-n", "3", "-P", "1"),
                *("--plugin-fraction", "0", "--warmup", "0", "--steady", "0"),
                *("--max-calls", "3", "--no-progress"),
            ]
        )
        entitles, releases = len(fake.called("Entitle")), len(fake.called("Release"))
    out = capsys.readouterr().out
    assert (code, entitles, releases) == (0, 3, 3), out
    assert "STOPPED EARLY" not in out


def _live(fake: FakeLicensing) -> int:
    return sum(s.msg.state != SESSION_STATE_ENDED for s in fake.sessions.values())


def test_a_sigterm_to_the_whole_process_group_releases_every_session_and_exits_130(
    tmp_path: Path,
) -> None:
    """``timeout 600 python -m client_sdk.load ...``, ``kill -- -PGID`` and a CI job
    cancelled send SIGTERM to every process of the group: the workers died of it, and
    every session they held stayed live on the server (exit 1, no report)."""
    with FakeThread(ManualClock()) as fake:
        users = _fake_users(tmp_path / "users.json", 10)
        tool = subprocess.Popen(
            [
                *(sys.executable, "-m", "client_sdk.load", "--target", fake.target),
                *("--users-file", str(users), "-n", "10", "-P", "2", "--plugin-fraction", "0"),
                *("--warmup", "0", "--steady", "60", "--no-progress", "--max-duration", "90"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a group of its own, as under timeout(1)
        )
        try:
            deadline = time.monotonic() + 60
            while len(fake.called("Heartbeat")) < 20:  # the steady state is under way
                assert time.monotonic() < deadline and tool.poll() is None
                time.sleep(0.05)
            assert _live(fake) == 10
            os.killpg(tool.pid, signal.SIGTERM)
            out, err = tool.communicate(timeout=60)
        finally:
            if tool.poll() is None:
                os.killpg(tool.pid, signal.SIGKILL)
                tool.wait()
        left = _live(fake)
    assert (tool.returncode, left) == (130, 0), (err, out)
