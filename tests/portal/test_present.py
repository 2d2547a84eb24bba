"""How the portal shows figures, without a server: the usage chart's series, the table,
the CSV (same figures, spreadsheet formulas defused), numbers and times."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from portal import present
from tessera_api.tessera.v1 import common_pb2


def row(day: str, user: str, product: str, tokens: int, sessions: int = 1) -> common_pb2.UsageRow:
    return common_pb2.UsageRow(
        date=day,
        user_id=user,
        product_id=product,
        tokens_charged=tokens,
        sessions=sessions,
        active_seconds=600,
        user_display_name=user.split("@")[0].title(),
        product_display_name={"ACAD": "AutoCAD", "REVIT": "Revit"}[product],
    )


ROWS = [
    row("2026-01-01", "ada@x.org", "ACAD", 10),
    row("2026-01-01", "bob@x.org", "ACAD", 10),
    row("2026-01-02", "ada@x.org", "REVIT", 10, 2),
]


def test_the_chart_stacks_each_days_tokens_by_product() -> None:
    shown = present.usage(ROWS, date(2026, 1, 1), date(2026, 1, 3))
    assert shown.labels == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [(s["label"], s["data"]) for s in shown.datasets] == [
        ("AutoCAD", [20, 0, 0]),
        ("Revit", [0, 10, 0]),
    ]
    assert [(t["user_name"], t["product_name"], t["tokens_charged"]) for t in shown.table] == [
        ("Ada", "AutoCAD", 10),
        ("Ada", "Revit", 10),
        ("Bob", "AutoCAD", 10),
    ]


def test_the_csv_has_one_line_per_row_with_the_same_figures() -> None:
    lines = list(csv.reader(io.StringIO(present.usage_csv(ROWS))))
    assert lines[0] == list(present.CSV_HEADER)
    assert [(r[0], r[1], r[3], r[5], r[6]) for r in lines[1:]] == [
        ("2026-01-01", "ada@x.org", "ACAD", "10", "1"),
        ("2026-01-01", "bob@x.org", "ACAD", "10", "1"),
        ("2026-01-02", "ada@x.org", "REVIT", "10", "2"),
    ]


def test_every_text_cell_that_a_spreadsheet_would_run_is_defused() -> None:
    evil = common_pb2.UsageRow(
        date="2026-01-01",
        user_id="=1+2@example.com",
        user_display_name="=HYPERLINK(1)",
        product_id="@SUM(A1)",
        product_display_name="+cmd",
        tokens_charged=-5,
    )
    assert list(csv.reader(io.StringIO(present.usage_csv([evil]))))[1] == [
        "2026-01-01",
        "'=1+2@example.com",
        "'=HYPERLINK(1)",
        "'@SUM(A1)",
        "'+cmd",
        "-5",  # a figure stays a number
        "0",
        "0",
    ]


def test_numbers_and_times_are_formatted() -> None:
    assert present.number(1234567) == "1,234,567"
    assert present.number(2.5) == "2.5"
    shown = str(present.when(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert 'datetime="2026-01-02T03:04:05Z"' in shown
    assert 'title="2026-01-02 03:04 UTC"' in shown
    assert str(present.when(None)) == "&mdash;"
    pack = common_pb2.TokenPack(state=common_pb2.PACK_STATE_EXPIRED)
    assert present.field_word(pack, "state") == "expired"


def test_a_typed_number_is_read_only_within_its_limits() -> None:
    assert present.whole(" 1,500 ", present.TOKENS) == 1500
    assert present.whole("1,000,000,000", present.TOKENS) == 1_000_000_000
    assert present.whole("", present.INT64, empty=0) == 0
    assert present.whole("9223372036854775807", present.INT64) == 2**63 - 1
    refused = {
        "²": present.TOKENS,  # '²'.isdigit() is True, int('²') is not a number
        "99999999999999999999999": present.TOKENS,
        "1000000001": present.TOKENS,
        "0": present.TOKENS,
        "": present.TOKENS,
        "--5": present.INT64,
        "-5": present.INT64,
        "9223372036854775808": present.INT64,
        "99999999999": present.INT32,
        "1e3": present.INT32,
        # A comma only between thousands: else a decimal mark or a slip, not a number.
        "1,5": present.TOKENS,
        "2,50": present.TOKENS,
        ",7": present.TOKENS,
        "1,,0": present.TOKENS,
        "1,000,": present.TOKENS,
        "1000,000": present.TOKENS,
        "1 500": present.TOKENS,
    }
    for text, limits in refused.items():
        with pytest.raises(ValueError) as info:
            present.whole(text, limits)
        low, high = limits
        assert str(info.value) == f"Enter a whole number from {low:,} to {high:,}.", text
    with pytest.raises(ValueError, match=r"^Enter a whole number from 1 to 1,000,000,000\.$"):
        present.whole("²", present.TOKENS)


def test_the_usage_pages_packs_leave_out_those_bought_after_the_days() -> None:
    """A pack's purchase is the one ListTokenPacks gives, else (moved to another team
    since) the earliest its expiry allows: a purchase on 29 February 2028 expires on
    28 February 2029, as one on the 28th does, so that one is kept."""

    def pack(pack_id: str, expires: datetime) -> common_pb2.PackUsage:
        found = common_pb2.PackUsage(pack_id=pack_id)
        found.expire_time.FromDatetime(expires)
        return found

    end = datetime(2028, 2, 29, tzinfo=UTC)  # the days shown end on 28 February 2028
    packs = [
        pack("held-28", datetime(2029, 2, 28, 10, tzinfo=UTC)),
        pack("held-29", datetime(2029, 2, 28, 10, tzinfo=UTC)),
        pack("gone-28-or-29", datetime(2029, 2, 28, 10, tzinfo=UTC)),
        pack("gone-march", datetime(2029, 3, 1, tzinfo=UTC)),
        pack("gone-before", datetime(2029, 2, 28, 23, 59, tzinfo=UTC)),
    ]
    bought = {
        "held-28": datetime(2028, 2, 28, 10, tzinfo=UTC),
        "held-29": datetime(2028, 2, 29, 10, tzinfo=UTC),
    }
    kept = present.packs_bought_before(packs, bought, end)
    assert [p.pack_id for p in kept] == ["held-28", "gone-28-or-29", "gone-before"]


def test_a_day_is_read_only_from_1970_to_9998() -> None:
    today = date(2026, 1, 3)
    assert present.parse_day("", today) == today
    assert present.parse_day("1970-01-01", today) == date(1970, 1, 1)
    assert present.parse_day("9998-12-31", today) == date(9998, 12, 31)
    for text in (
        "9999-12-31",
        "0001-01-01",
        "1969-12-31",
        "20260101",
        "2026-02-30",
        "\uff12\uff10\uff12\uff16-01-01",  # fullwidth digits
    ):
        with pytest.raises(ValueError) as info:
            present.parse_day(text, today)
        assert str(info.value) == (
            "enter each date as YYYY-MM-DD, from 1970-01-01 to 9998-12-31"
        ), text


def test_portal_audit_methods_are_said_in_words_with_a_readable_fallback() -> None:
    assert present.audit_action("UpdateTeamSettings") == "Changed team settings"
    assert present.audit_action("PauseTeamBilling") == "Pause team billing"  # not known yet
    assert present.audit_action("") == "Made a change"
    names = {"ACAD": "AutoCAD"}
    said = present.audit_details
    assert said("UpdateTeamSettings", {"low_balance_threshold": "0"}, names) == (
        "low-balance alert: off"
    )
    assert said(
        "UpdateTeamSettings", {"plan": "PLAN_PREMIUM", "guest_default_assignments": False}, names
    ) == ("plan: premium; guests get the default assignments: no")
    assert said("SetDefaultAssignments", {"team_id": "alpha"}, names) == "default assignments off"
    assert said(
        "AssignUsers", {"users": ["a", "b"], "all_products": True, "guest": True}, names
    ) == ("2 users; all products; as guests")
    assert said(
        "StartTrial", {"product_id": "ACAD", "end_time": "2026-02-01T00:00:00Z"}, names
    ) == ("AutoCAD; until 2026-02-01")
    assert said("PurchaseTokens", {"tokens": {"odd": 1}}, names) == ""  # another shape
    assert said("EndSession", {"session_id": "s1"}, names) == ""  # About says it


def test_portal_every_ledger_kind_has_words_and_a_meaning() -> None:
    for value in common_pb2.LedgerEntryKind.values():
        if value:
            kind, meaning = present.ledger_kind(common_pb2.LedgerEntry(kind=value))
            assert kind and meaning and "capture" not in kind and "release" not in kind


def test_l4_a_burn_under_a_tenth_of_a_token_a_day_is_not_shown_as_none() -> None:
    """A token a month burns 0.033 a day: "0.0" beside a depletion date read as none."""
    assert present.number(1 / 30) == "0.033"
    assert present.number(0.5) == "0.5"
    assert present.number(12.34) == "12.3"


def test_t6_a_ledger_kind_of_a_newer_server_is_words_not_a_failed_page() -> None:
    """``python -m portal --server`` against a newer Tessera: an entry of a kind this
    portal does not know is named by its number; the ledger page is not a 500."""
    assert present.ledger_kind(common_pb2.LedgerEntry(kind=99)) == ("kind 99", "")
    bought = common_pb2.LedgerEntry(kind=common_pb2.LEDGER_ENTRY_KIND_PURCHASE)
    assert present.ledger_kind(bought)[0] == "bought"
