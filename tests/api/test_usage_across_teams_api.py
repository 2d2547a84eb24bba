"""C3 over the wire: a named user pays a product's rate once per 24 hours
whichever teams they belong to, even when an Entitle names another team.

Same server, clock and rate sheet as ``test_metering_api.py`` (see
``tests/licensing_desk.py``): ACAD costs 10 tokens a day; the clock starts at
2026-01-01T00:00:00Z.
"""

from __future__ import annotations

import pytest

from tests.licensing_desk import Desk, at


@pytest.fixture
def desk(sheet_desk: Desk) -> Desk:
    """No team: each test makes its own (tests/api/conftest.py)."""
    return sheet_desk


def test_c3_a_preferred_team_does_not_charge_again_within_another_teams_window(
    desk: Desk,
) -> None:
    desk.team("south", 100)
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    first = desk.entitle(dee, team_id="south")
    desk.to(at(m=5))  # grace over: south is charged, its window open until 24:00
    desk.release(dee, first["session_id"])
    assert desk.balance("south") == (90, 0)
    assert desk.token_moves("south") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]

    desk.to(at(h=12))
    second = desk.entitle(dee, team_id="north")
    assert (second["team_id"], second["charge_state"]) == ("south", "CHARGE_STATE_CHARGED")
    assert desk.balance("north") == (100, 0)
    assert desk.token_moves("north") == []
    desk.release(dee, second["session_id"])
    assert desk.balance("south") == (90, 0)

    desk.to(at(d=1))  # south's window has closed: naming north charges north
    third = desk.entitle(dee, team_id="north")
    assert (third["team_id"], third["charge_state"]) == ("north", "CHARGE_STATE_GRACE")
    assert desk.balance("north") == (90, 10)
    assert desk.token_moves("north") == [("HOLD", 10, at(d=1))]
    assert desk.balance("south") == (90, 0)


def test_c3_a_preferred_team_joins_another_teams_grace(desk: Desk) -> None:
    desk.team("south", 100)
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    desk.entitle(dee, team_id="south")
    desk.to(at(m=1))
    second = desk.entitle(dee, team_id="north", product_version="2025")
    assert (second["team_id"], second["charge_state"]) == ("south", "CHARGE_STATE_GRACE")
    assert desk.balance("south") == (90, 10)
    assert desk.balance("north") == (100, 0)
    desk.to(at(m=5))
    assert desk.balance("south") == (90, 0)
    assert desk.token_moves("north") == []


def test_c3_sessions_opened_in_two_teams_under_a_trial_pay_once_when_it_ends(
    desk: Desk,
) -> None:
    """Under a trial nothing binds Dee to one team, so an Entitle naming north runs
    there beside her south session (REVIT: not idle-aware, so both stay in use).
    When the trial ends tokens pay, once: north's meter (the first team by id)
    holds and captures; the south session rides on it and says so (charged, north's
    window), and south is charged nothing, then or at the renewal a day later."""
    desk.team("south", 100)
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    desk.a("StartTrial", {"user_id": dee, "product_id": "REVIT", "end_time": at(h=2)})
    s = desk.entitle(dee, "REVIT", team_id="south", product_version="2026")
    n = desk.entitle(dee, "REVIT", team_id="north", product_version="2025")
    assert (s["team_id"], n["team_id"]) == ("south", "north")
    assert s["coverage"] == n["coverage"] == "COVERAGE_TRIAL"
    desk.to(at(h=2, m=10))
    riding = desk.heartbeat(dee, s["session_id"])
    assert (riding["coverage"], riding["charge_state"]) == (
        "COVERAGE_TOKENS",
        "CHARGE_STATE_CHARGED",
    )
    assert riding["window_end_time"] == at(d=1, h=2)
    desk.heartbeat(dee, n["session_id"])
    desk.to(at(d=1, h=2, m=10))
    assert desk.token_moves("north") == [
        ("HOLD", 10, at(h=2)),
        ("CAPTURE", 10, at(h=2, m=5)),
        ("HOLD", 10, at(d=1, h=2)),
        ("CAPTURE", 10, at(d=1, h=2, m=5)),
    ]
    assert desk.token_moves("south") == []
    assert desk.balance("south") == (100, 0)
