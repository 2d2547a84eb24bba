"""``benchmarks.handover``: the back's CPU a call for the front's hand-over alone
(issue 17). Its figures are the host's; what is checked is that every call is
answered through a real ``Back`` and that the frames are what each mode says."""

from __future__ import annotations

import pytest

from benchmarks import handover


@pytest.mark.parametrize(("one_per_frame", "per_frame"), [(False, 8.0), (True, 1.0)])
def test_bench_handover_answers_every_call_through_the_back(
    one_per_frame: bool, per_frame: float
) -> None:
    result = handover.one(400, 8, "uvloop", one_per_frame)
    assert result["in_flight"] == 8
    assert result["calls_per_frame"] == per_frame  # lanes in step: 8 a frame, or 1
    assert result["calls_per_second"] > 0
    assert result["back_cpu_us"] > 0


def test_bench_handover_prints_a_line_per_in_flight_and_the_handover_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert handover.main(["--calls", "200", "--in-flight", "2", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:2]] == ["2", "4"]
    fields = dict(f.split("=") for f in out[-1].split()[1:])
    assert out[-1].startswith("HANDOVER ")
    assert sorted(fields) == ["back_cpu_us_at_2", "back_cpu_us_at_4"]
