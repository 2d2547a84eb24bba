"""Percentiles, merging and the table of a load run (``client_sdk/load/stats.py``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from client_sdk.load.provision import Users, fake_users
from client_sdk.load.stats import (
    PhaseStats,
    Recorder,
    merge_phases,
    percentile,
    render_table,
    summarize,
)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0
    # Ten values: p99 is the largest, p50 the fifth.
    ten = [float(v) for v in range(10)]
    assert percentile(ten, 99) == 9.0
    assert percentile(ten, 50) == 4.0
    # 99.9 % of 1,000 is the 999th, though 99.9 / 100 * 1000 is 999.0000000000001.
    thousand = [float(v) for v in range(1, 1001)]
    assert percentile(thousand, 99.9) == 999.0
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_recorder_counts_errors_by_code_and_keeps_one_message() -> None:
    rec = Recorder()
    rec.ok(0.001)
    rec.error("UNAVAILABLE", "connection refused")
    rec.error("UNAVAILABLE", "again")
    rec.error("FAILED_PRECONDITION/RUNNING_ELSEWHERE", "runs on dev-2")
    assert rec.calls == 4
    assert rec.ok_count == 1
    assert rec.errors == {"UNAVAILABLE": 2, "FAILED_PRECONDITION/RUNNING_ELSEWHERE": 1}
    assert rec.error_samples["UNAVAILABLE"] == "connection refused"


def phase_of(name: str, started: float, ended: float, ms: list[float]) -> PhaseStats:
    p = PhaseStats(name, started, ended)
    for v in ms:
        p.rpc("Heartbeat").ok(v / 1000)
    return p


def test_merging_workers_spans_their_time_and_pools_latencies() -> None:
    a = phase_of("steady", 10.0, 20.0, [1.0, 2.0, 3.0])
    a.rpc("Heartbeat").error("DEADLINE_EXCEEDED", "slow")
    b = phase_of("steady", 11.0, 21.0, [4.0, 5.0])
    # What a worker sends travels by pickle: the merge must work on copies.
    merged = merge_phases(pickle.loads(pickle.dumps(p)) for p in (a, b))  # noqa: S301 - our own bytes
    assert merged is not None
    assert (merged.started, merged.ended, merged.seconds) == (10.0, 21.0, 11.0)
    [row] = summarize(merged)
    assert row.rpc == "Heartbeat"
    assert (row.calls, row.ok) == (6, 5)
    assert row.errors == {"DEADLINE_EXCEEDED": 1}
    assert row.rps == pytest.approx(5 / 11)
    assert row.p50_ms == pytest.approx(3.0)
    assert row.p99_ms == pytest.approx(5.0)
    assert row.max_ms == pytest.approx(5.0)
    assert row.mean_ms == pytest.approx(3.0)


def test_summary_rows_follow_the_lifecycle_order() -> None:
    p = PhaseStats("cycle", 0.0, 1.0)
    for name in ("Release", "Idle", "Entitle", "Heartbeat"):
        p.rpc(name).ok(0.001)
    assert [r.rpc for r in summarize(p)] == ["Entitle", "Heartbeat", "Idle", "Release"]


def test_table_has_a_line_per_rpc_with_errors_and_percentiles() -> None:
    p = phase_of("steady", 0.0, 2.0, [float(v) for v in range(1, 101)])
    p.rpc("Heartbeat").error("UNAVAILABLE", "x")
    p.rpc("Idle").ok(0.0025)
    text = render_table(summarize(p))
    lines = text.splitlines()
    assert lines[0].split() == [
        "phase",
        "rpc",
        "calls",
        "errors",
        "rps",
        "p50",
        "ms",
        "p95",
        "ms",
        "p99",
        "ms",
        "max",
        "ms",
    ]
    hb = lines[2].split()
    assert hb[:6] == ["steady", "Heartbeat", "101", "UNAVAILABLE", "1", "50"]
    assert hb[6:] == ["50.00", "95.00", "99.00", "100.00"]
    idle = lines[3].split()
    assert idle[:4] == ["steady", "Idle", "1", "-"]
    assert idle[5:] == ["2.50", "2.50", "2.50", "2.50"]
    as_json = summarize(p)[0].as_dict()
    assert as_json["errors"] == {"UNAVAILABLE": 1}
    assert as_json["p99_ms"] == 99.0


def test_rpcs_without_calls_have_no_line_and_errors_only_have_zero_rates() -> None:
    p = PhaseStats("ramp", 0.0, 1.0)
    p.rpc("Entitle")
    assert summarize(p) == []
    p.rpc("Entitle").error("UNIMPLEMENTED", "not yet")
    [row] = summarize(p)
    assert (row.calls, row.ok, row.rps, row.p99_ms, row.max_ms) == (1, 0, 0.0, 0.0, 0.0)


def test_users_file_round_trip(tmp_path: Path) -> None:
    users = fake_users(3, "abc")
    path = tmp_path / "users.json"
    users.save(path)
    back = Users.load(path)
    assert back == Users(users.team_id, users.product_id, users.plugin_id, list(users.users))
    assert back.first(2).users == list(users.users)[:2]
    with pytest.raises(ValueError, match="only 3"):
        back.first(4)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
