"""``benchmarks.capacity`` (docs/ops/README.md, "Capacity"): a short day on a real
server, small enough for the suite, prints its tables and its CAPACITY line; and
the day's heartbeats leave no row behind (a heartbeat's flush rewrites its
session's and device's rows, ``Sessions.flush``)."""

from __future__ import annotations

import pytest

from benchmarks import capacity


def test_bench_capacity_a_short_day_prints_its_line_and_its_heartbeats_add_no_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--users", "3", "--days", "2", "--hours", "6", "--every", "12", "--invites", "2"]
    args += ["--assignments", "1", "--flush-every", "0.1", "--forget-every", "0.2"]
    assert capacity.main(args) == 0
    out = capsys.readouterr().out
    line = out.strip().splitlines()[-1]
    assert line.startswith("CAPACITY store=SQLite users=3 ")
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    # 3 users heartbeat every 12 minutes from 08:12 to 14:00, but at 12:00 (Idle), twice
    assert fields["heartbeats"] == str(2 * 3 * (6 * 5 - 1))
    assert fields["heartbeat_rows"] == "0"
    assert fields["heartbeat_bytes"] == "0"
    assert "Rows a user's day added: sessions 1.00, activity 2.00, ledger 2.00" in out
    assert int(fields["later_day_user_b"]) > 0
    # memory held the first day's ended sessions through the second; they were let go
    # two days on, and again after the restart loaded them
    memory = next(x for x in out.splitlines() if x.startswith("in memory")).split()
    assert memory[2:11] == ["0", "0", "3", "3", "3", "6", "0", "6", "0"]


def test_bench_capacity_refuses_heartbeats_too_rare_to_keep_a_session_active() -> None:
    with pytest.raises(SystemExit):
        capacity.parse_args(["--every", "15"])
