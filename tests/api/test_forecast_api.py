"""RULES L4 (forecast) and the L1 threshold setting over the wire, on the test clock.

The server's clock starts at 2026-01-01T00:00:00Z (``tests/licensing_desk.py``'s
``at``); REVIT costs 10 tokens a day and is charged 5 minutes after Entitle (M3).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpcurl import GrpcurlError
from tests.licensing_desk import Desk, at, num
from tests.support import ServerThread


@pytest.fixture
def desk(sheet_desk: Desk) -> Desk:
    """No team: each test makes its own (tests/api/conftest.py)."""
    return sheet_desk


def team(desk: Desk, team_id: str) -> dict[str, Any]:
    found: dict[str, Any] = desk.a("GetTeam", {"team_id": team_id})["team"]
    return found


def charge_a_day(desk: Desk, user_id: str, day: int) -> None:
    """One REVIT day: Entitle at the day's start, released once charged (10 tokens)."""
    desk.to(at(d=day))
    s = desk.entitle(user_id, "REVIT")
    desk.to(at(d=day, m=6))
    desk.release(user_id, s["session_id"])


def test_l4_forecast_on_a_worked_example(desk: Desk) -> None:
    desk.team("fc", 100)  # pack A: 100 tokens, expires 2027-01-01 (day 365)
    ann = desk.user("fc", "ann")
    assert team(desk, "fc")["forecast"] == {}  # no charges: rate 0, no depletion time

    charge_a_day(desk, ann, 0)  # 10 at day 0: older than 30 days by day 341
    desk.to(at(d=340))
    desk.buy("fc", 25)  # pack B: 25 tokens, expires day 705
    charge_a_day(desk, ann, 340)  # taken from A (T3: it expires first)
    charge_a_day(desk, ann, 341)
    desk.to(at(d=341, h=1))
    got = team(desk, "fc")
    assert num(got, "available_tokens") == 95  # A 70, B 25
    # Rate: 20 tokens in the last 30 days / 30 = 2/3 a day.
    # A's 70 would last 105 days but A expires at day 365 (2027-01-01): the rest is lost.
    # B's 25 are used from then on: 25 / (2/3) = 37.5 days -> 2027-02-07T12:00:00Z.
    assert got["forecast"] == {
        "daily_burn_tokens": pytest.approx(20 / 30),
        "depletion_time": "2027-02-07T12:00:00Z",
        "expiring_tokens_30d": "70",  # A expires within 30 days; B does not
    }
    listed = desk.a("ListTeams")["teams"]
    assert [t["forecast"] for t in listed if t["team_id"] == "fc"] == [got["forecast"]]


def test_l4_depletion_pro_rata_to_the_second(desk: Desk) -> None:
    desk.team("fs", 17)
    bo = desk.user("fs", "bo")
    charge_a_day(desk, bo, 0)
    desk.to(at(d=0, h=1))
    # 10 tokens in 30 days: 1/3 a day; 7 left last 21 days from now.
    assert team(desk, "fs")["forecast"]["depletion_time"] == at(d=21, h=1)
    desk.to(at(d=0, h=1, s=7))
    assert team(desk, "fs")["forecast"]["depletion_time"] == at(d=21, h=1, s=7)


def test_l1_low_balance_threshold_is_set_shown_and_turned_off(desk: Desk) -> None:
    desk.team("th", 50)
    assert "low_balance_threshold" not in team(desk, "th")  # off by default
    body = {"team_id": "th", "low_balance_threshold": 30}
    updated = desk.a("UpdateTeamSettings", body)["team"]
    assert updated["low_balance_threshold"] == "30"
    assert num(team(desk, "th"), "low_balance_threshold") == 30
    listed = desk.a("ListTeams")["teams"]
    assert [num(t, "low_balance_threshold") for t in listed if t["team_id"] == "th"] == [30]
    # Unchanged when absent.
    desk.a("UpdateTeamSettings", {"team_id": "th", "display_name": "Thirty"})
    assert num(team(desk, "th"), "low_balance_threshold") == 30
    desk.a("UpdateTeamSettings", {"team_id": "th", "low_balance_threshold": 0})
    assert "low_balance_threshold" not in team(desk, "th")


def test_l1_low_balance_threshold_survives_a_restart(database: Path | str) -> None:
    first = ServerThread(database).start()
    try:
        with closing(Desk(first.target)) as desk:
            desk.team("kept", 5)
            desk.a("UpdateTeamSettings", {"team_id": "kept", "low_balance_threshold": 12})
    finally:
        first.stop()
    second = ServerThread(database).start()
    try:
        with closing(Desk(second.target)) as desk:
            assert num(team(desk, "kept"), "low_balance_threshold") == 12
    finally:
        second.stop()


def test_l1_negative_low_balance_threshold_is_refused_naming_the_field(desk: Desk) -> None:
    desk.team("neg", 5)
    desk.a("UpdateTeamSettings", {"team_id": "neg", "low_balance_threshold": 4})
    with pytest.raises(GrpcurlError) as info:
        desk.a("UpdateTeamSettings", {"team_id": "neg", "low_balance_threshold": -1})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(info.value.field_violations) == ["low_balance_threshold"]
    assert num(team(desk, "neg"), "low_balance_threshold") == 4  # nothing changed


def test_l4_a_charge_older_than_the_burn_window_is_not_in_the_rate(sheet_desk: Desk) -> None:
    """L4: "burn rate over the last 30 days". Ann's one REVIT day was charged on day
    0 (10 tokens at 00:05); on day 31 that charge is older than 30 days, so the team
    has no burn rate and no depletion time (as with no charges at all)."""
    desk = sheet_desk
    desk.team("fo", 100)
    ann = desk.user("fo", "ann")
    charge_a_day(desk, ann, 0)
    desk.to(at(d=30))
    assert team(desk, "fo")["forecast"]["daily_burn_tokens"] > 0  # still within 30 days
    desk.to(at(d=31))
    assert team(desk, "fo")["forecast"] == {}
