"""``benchmarks.start_read`` (docs/performance-log.md, stop 67): small enough for the
suite on both stores; the release before's load and this release's find the same
sessions (the benchmark fails otherwise) and the line says how many."""

from __future__ import annotations

import pytest

from benchmarks import start_read


def test_bench_start_read_both_loads_find_the_live_one_and_the_recent_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert start_read.main(["--ended", "300", "--recent", "20"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # the live one, the 10 recent live and the 10 recent ended; none of the 300 older
    assert line.startswith("START_READ store=SQLite ended=300 loaded=21 ")


def test_bench_start_read_on_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert start_read.main(["--ended", "300", "--recent", "20", "--postgres", "--pg", pg_url]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("START_READ store=PostgreSQL ended=300 loaded=21 ")
