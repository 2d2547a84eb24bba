"""The lines an operator acts on, from a real server on each store: a refusal that
says whom it concerns (the team short of tokens, the product), and running
sessions ended because their team cannot pay (RULES M5)."""

from __future__ import annotations

from typing import Any

import grpc
from structlog.testing import capture_logs

from tests.licensing_desk import Desk, at


def _events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == event]


def test_ops_a_refused_entitles_line_names_the_team_short_of_tokens_and_the_product(
    sheet_desk: Desk,
) -> None:
    """INSUFFICIENT_TOKENS: the line says which team to buy tokens for, what it has and
    the rate of which product (its ErrorInfo's metadata, and the request's product)."""
    d = sheet_desk
    d.team("alpha", 4)
    ann = d.user("alpha", "ann")
    with capture_logs() as lines:
        d.refused(
            ann,
            "Entitle",
            {"product_id": "ACAD", "product_version": "2026", "platform": "PLATFORM_WINDOWS"}
            | {"device_id": "dev-1", "request_id": "e-1"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_TOKENS",
        )
    [line] = [x for x in _events(lines, "rpc") if x["request_id"] == "e-1"]
    assert (line["code"], line["reason"]) == ("FAILED_PRECONDITION", "INSUFFICIENT_TOKENS")
    assert (line["team_id"], line["available"], line["daily_rate"]) == ("alpha", "4", "10")
    assert line["product_id"] == "ACAD"
    assert line["user_id"] == ann and line["method"] == "Entitle"


def test_m5_sessions_ended_for_tokens_leave_one_warning_line_naming_team_user_and_product(
    sheet_desk: Desk,
) -> None:
    """alpha's 10 tokens pay ann's first day of ACAD (10 a day); at 24 h the window
    closes in use and the renewal cannot be held (M5): her session ends
    INSUFFICIENT_TOKENS, and one warning line says so, however often she calls after."""
    d = sheet_desk
    d.team("alpha", 10)
    ann = d.user("alpha", "ann")
    session_id = d.entitle(ann)["session_id"]
    with capture_logs() as lines:
        for hour in (6, 12, 18):
            d.to(at(h=hour))
            assert "end_reason" not in d.heartbeat(ann, session_id)
        d.to(at(d=1, m=1))
        assert d.heartbeat(ann, session_id)["end_reason"] == "END_REASON_INSUFFICIENT_TOKENS"
        d.to(at(d=1, h=1))
        d.heartbeat(ann, session_id)  # told again; nothing ends again
    [line] = _events(lines, "sessions_ended_for_tokens")
    assert line["log_level"] == "warning"
    assert (line["team_id"], line["user_id"], line["product_id"]) == ("alpha", ann, "ACAD")
    assert line["session_ids"] == [session_id]
