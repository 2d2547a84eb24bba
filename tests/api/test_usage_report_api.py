"""R1 over the wire: the usage report names users and products in words and
can be narrowed to one user or one product, totals following the filter.

Same server, clock and rate sheet as ``test_metering_api.py`` (see
``tests/licensing_desk.py``): team ``alpha`` has 100 tokens; ACAD ("AutoCAD")
and REVIT ("Revit") cost 10 tokens a day; the clock starts at
2026-01-01T00:00:00Z. Imported users are named from their address ("Ann").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import pytest

from server.api.admin import _usage_report_out
from server.engine.usage import UsageReport, UsageRow
from server.loops import LET_GO_AT_ONCE
from tests.licensing_desk import Desk, at, num

NF = grpc.StatusCode.NOT_FOUND
IA = grpc.StatusCode.INVALID_ARGUMENT
WHOLE = {"team_id": "alpha", "start_time": at(), "end_time": at(d=2)}


def _session(desk: Desk, user_id: str, product_id: str, start: str, end: str) -> None:
    desk.to(start)
    s = desk.entitle(user_id, product_id)
    desk.to(end)
    desk.release(user_id, s["session_id"])


def _report(desk: Desk, **narrow: str) -> tuple[list[tuple[Any, ...]], tuple[int, int, int]]:
    report = desk.a("GetUsageReport", {**WHOLE, **narrow})
    rows = [
        (
            r["date"],
            r["user_id"],
            r["user_display_name"],
            r["product_id"],
            r["product_display_name"],
            num(r, "tokens_charged"),
            num(r, "sessions"),
            num(r, "active_seconds"),
        )
        for r in report.get("rows", [])
    ]
    totals = (
        num(report, "total_tokens_charged"),
        num(report, "total_sessions"),
        num(report, "total_active_seconds"),
    )
    assert len(report["packs"]) == 1  # the packs are the team's, whatever the filter
    return rows, totals


@pytest.fixture
def two_days(desk: Desk) -> tuple[str, str]:
    """Day 1: Ann runs AutoCAD and Bob Revit, 10 minutes each (both charged at
    00:05). Day 2: Ann runs Revit 10 minutes (charged), Bob AutoCAD 3 (free)."""
    ann = desk.user("alpha", "ann")
    bob = desk.user("alpha", "bob")
    desk.to(at())
    a = desk.entitle(ann, "ACAD")
    b = desk.entitle(bob, "REVIT")
    desk.to(at(m=10))
    desk.release(ann, a["session_id"])
    desk.release(bob, b["session_id"])
    _session(desk, ann, "REVIT", at(d=1, h=1), at(d=1, h=1, m=10))
    _session(desk, bob, "ACAD", at(d=1, h=2), at(d=1, h=2, m=3))
    return ann, bob


def test_r1_rows_name_the_user_and_the_product_in_words(
    desk: Desk, two_days: tuple[str, str]
) -> None:
    ann, bob = two_days
    assert _report(desk) == (
        [
            ("2026-01-01", ann, "Ann", "ACAD", "AutoCAD", 10, 1, 600),
            ("2026-01-01", bob, "Bob", "REVIT", "Revit", 10, 1, 600),
            ("2026-01-02", ann, "Ann", "REVIT", "Revit", 10, 1, 600),
            ("2026-01-02", bob, "Bob", "ACAD", "AutoCAD", 0, 1, 180),
        ],
        (30, 4, 1980),
    )


def test_r1_narrowed_to_one_user_with_its_totals(desk: Desk, two_days: tuple[str, str]) -> None:
    ann, _ = two_days
    assert _report(desk, user_id=ann) == (
        [
            ("2026-01-01", ann, "Ann", "ACAD", "AutoCAD", 10, 1, 600),
            ("2026-01-02", ann, "Ann", "REVIT", "Revit", 10, 1, 600),
        ],
        (20, 2, 1200),
    )


def test_r1_narrowed_to_one_product_with_its_totals(desk: Desk, two_days: tuple[str, str]) -> None:
    ann, bob = two_days
    assert _report(desk, product_id="ACAD") == (
        [
            ("2026-01-01", ann, "Ann", "ACAD", "AutoCAD", 10, 1, 600),
            ("2026-01-02", bob, "Bob", "ACAD", "AutoCAD", 0, 1, 180),
        ],
        (10, 2, 780),
    )


def test_r1_narrowed_to_one_user_and_one_product(desk: Desk, two_days: tuple[str, str]) -> None:
    ann, bob = two_days
    assert _report(desk, user_id=bob, product_id="REVIT") == (
        [("2026-01-01", bob, "Bob", "REVIT", "Revit", 10, 1, 600)],
        (10, 1, 600),
    )
    assert _report(desk, user_id=ann, product_id="ACADEL") == ([], (0, 0, 0))


def test_r1_filters_must_name_a_known_user_and_product(desk: Desk) -> None:
    err = desk.refused(None, "GetUsageReport", {**WHOLE, "user_id": "nobody@x.com"}, NF)
    assert err.reason == "UNKNOWN_USER"
    err = desk.refused(None, "GetUsageReport", {**WHOLE, "product_id": "NOPE"}, NF)
    assert err.reason == "UNKNOWN_PRODUCT"
    err = desk.refused(None, "GetUsageReport", {**WHOLE, "user_id": "u" * 300}, IA)
    assert "user_id" in err.field_violations


@pytest.mark.parametrize("method", ["GetUsageReport", "ListSessions", "ListNotifications"])
def test_r1_a_user_filter_of_spaces_is_refused_not_dropped(desk: Desk, method: str) -> None:
    """A user id is read without the spaces around it (A1); spaces alone name no
    user, and dropping the filter would answer for the whole team."""
    body = {**WHOLE, "user_id": "   "} if method == "GetUsageReport" else {"user_id": "   "}
    err = desk.refused(None, method, {"team_id": "alpha", **body}, IA)
    assert err.field_violations == {"user_id": "must not be blank"}


def test_r1_ad1_a_user_of_other_teams_only_is_refused_as_one_of_no_team(
    desk: Desk, two_days: tuple[str, str]
) -> None:
    """The report is alpha's: a user who is not alpha's member and has no usage in
    it is refused in the same words whether or not they exist elsewhere, so a team
    administrator cannot learn of other teams' users through it (AD1). A former
    member's usage is still alpha's, and reported."""
    ann, _ = two_days
    desk.team("beta")
    carl = desk.user("beta", "carl")
    answers = []
    for user in (carl, "nobody@example.com"):
        err = desk.refused(None, "GetUsageReport", {**WHOLE, "user_id": user}, NF, "UNKNOWN_USER")
        answers.append(err.message.replace(user, "USER"))
    assert answers[0] == answers[1]
    assert "is not a member of team 'alpha' and has no usage in it" in answers[0]
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": ann})
    rows, totals = _report(desk, user_id=ann)
    assert totals == (20, 2, 1200) and {r[1] for r in rows} == {ann}


def test_r1_a_report_without_an_end_includes_what_happened_now(desk: Desk) -> None:
    """R1 with §7: with no ``end_time`` the report runs up to now, included. Ann's
    AutoCAD grace ends exactly at the instant AdvanceClock lands on; its capture is
    in the report, as it is in the ledger and in the pack's consumed tokens."""
    ann = desk.user("alpha", "ann")
    desk.to(at())
    desk.entitle(ann, "ACAD")
    desk.to(at(m=5))  # the grace's end: captured at the new instant
    report = desk.a("GetUsageReport", {"team_id": "alpha"})
    assert num(report, "total_tokens_charged") == 10
    assert num(report["packs"][0], "consumed_tokens") == 10
    assert [(r["date"], num(r, "tokens_charged")) for r in report["rows"]] == [("2026-01-01", 10)]


def test_r1_three_versions_side_by_side_report_the_user_s_hours_once(desk: Desk) -> None:
    """Ann runs Revit 2024, 2025 and 2026 side by side on one device for 10 hours
    (M9: allowed, one charge). Her row says 10 hours of active time, not the 30
    the three sessions add up to, and three sessions, 10 tokens."""
    ann = desk.user("alpha", "ann")
    sessions = [desk.entitle(ann, "REVIT", product_version=v) for v in ("2024", "2025", "2026")]
    desk.to(at(h=10))
    for s in sessions:
        desk.release(ann, s["session_id"])
    rows, totals = _report(desk)
    assert rows == [("2026-01-01", ann, "Ann", "REVIT", "Revit", 10, 3, 10 * 3600)]
    assert totals == (10, 3, 10 * 3600)


def test_r1_a_long_reports_answer_has_every_row_in_order_and_frees_it_as_made() -> None:
    """A report of many rows (a year of a team: 286,842) is made into its answer a
    slice at a time on a thread, every row in order, the totals of them all; the
    report's rows are let go there, not on the event loop."""
    n = 2 * LET_GO_AT_ONCE + 3
    rows = [
        UsageRow(f"2026-01-{1 + i % 28:02d}", f"u{i}", "ACAD", i % 7, 1, timedelta(seconds=i))
        for i in range(n)
    ]
    report = UsageReport(list(rows))
    out = _usage_report_out(report, None)
    assert [(r.user_id, r.date, r.tokens_charged, r.active_seconds) for r in out.rows] == [
        (r.user_id, r.date, r.tokens_charged, r.active_seconds) for r in rows
    ]
    assert out.total_tokens_charged == sum(i % 7 for i in range(n))
    assert out.total_sessions == n and out.total_active_seconds == sum(range(n))
    assert report.rows == []  # let go on the thread that made the answer
