"""The usage report (R1) computed from the store's ``UsageFacts`` and memory
(``server/engine/usage.py``), without a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import permutations

from server.api.convert import usage_row_out
from server.domain.changes import Changes
from server.domain.ledger import EntryKind, Ledger, PackState
from server.domain.sessions import ActivitySpan
from server.engine.usage import UsageReport, pack_usage, report_rows
from server.store.port import Capture, SessionStart, UsageFacts

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
MS = timedelta(milliseconds=1)


def _ledger() -> Ledger:
    """acme bought pk_1 and pk_2; pk_1 went to zeta and came back, pk_2 went for good."""
    ledger = Ledger()
    for team in ("acme", "zeta"):
        ledger.add_team(team)
    ids = iter(["pk_1", "pk_2"])
    ledger.purchase("acme", 30, "po-1", T0, lambda: next(ids), Changes())
    ledger.purchase("acme", 5, "po-2", T0 + H, lambda: next(ids), Changes())
    ledger.move("pk_1", "zeta", T0 + 2 * H, Changes())
    ledger.move("pk_1", "acme", T0 + 3 * H, Changes())
    ledger.move("pk_2", "zeta", T0 + 4 * H, Changes())
    return ledger


def test_r1_t5_a_pack_moved_out_and_back_is_reported_once_with_both_moves() -> None:
    facts = UsageFacts(
        moved={
            ("pk_1", EntryKind.MOVE_OUT): 30,
            ("pk_1", EntryKind.MOVE_IN): 30,
            ("pk_2", EntryKind.MOVE_OUT): 5,
        }
    )
    packs = pack_usage("acme", T0 + 5 * H, facts, _ledger())
    assert [(p.pack_id, p.team_id, p.moved_in_tokens, p.moved_out_tokens) for p in packs] == [
        ("pk_1", "acme", 30, 30),
        ("pk_2", "zeta", 0, 5),  # moved out: still in acme's history (T5)
    ]


def test_r1_rows_per_day_user_and_product_from_the_facts() -> None:
    facts = UsageFacts(
        captures=[
            Capture(T0 + H, "ann", "ACAD", 10),
            Capture(T0 + 25 * H, "ann", "ACAD", 10),
            Capture(T0 + 26 * H, "bob", "MAYA", 7),
        ],
        session_starts=[
            SessionStart(T0 + H, "ann", "ACAD"),
            SessionStart(T0 + 2 * H, "ann", "ACAD"),
        ],
    )
    report = UsageReport(report_rows(T0, T0 + 48 * H, facts, []))
    rows = [(r.date, r.user_id, r.product_id, r.tokens_charged, r.sessions) for r in report.rows]
    assert rows == [
        ("2026-03-01", "ann", "ACAD", 10, 2),
        ("2026-03-02", "ann", "ACAD", 10, 0),
        ("2026-03-02", "bob", "MAYA", 7, 0),
    ]
    assert (report.total_tokens_charged, report.total_sessions) == (27, 2)


def _span(session_id: str, start: timedelta, end: timedelta, user: str = "ann") -> ActivitySpan:
    return ActivitySpan(session_id, "acme", user, "ACAD", T0 + start, T0 + end)


def _seconds(spans: list[ActivitySpan]) -> list[tuple[str, str, int, int]]:
    """Each row's active seconds as the report and the API (``usage_row_out``) say
    them, and the report's total."""
    report = UsageReport(report_rows(T0, T0 + 48 * H, UsageFacts(spans=spans), []))
    rows = [
        (r.date, r.user_id, r.active_seconds, usage_row_out(r).active_seconds) for r in report.rows
    ]
    return [*rows, ("total", "", report.total_active_seconds, report.total_active_seconds)]


def test_r1_active_seconds_are_the_exact_sum_whatever_the_order_spans_are_read_in() -> None:
    """Three of ann's sessions active one after another for 0.7, 0.2 and 0.1 s: 1 s
    in all, in every order a store may read them in (as float seconds, 0.7 + 0.2 +
    0.1 is 0.999..., which truncated said 0 s, and 0.1 + 0.2 + 0.7 said 1 s)."""
    spans = [
        _span("ses_a", 0 * MS, 700 * MS),
        _span("ses_b", 1000 * MS, 1200 * MS),
        _span("ses_c", 2000 * MS, 2100 * MS),
    ]
    for order in permutations(spans):
        assert _seconds(list(order)) == [("2026-03-01", "ann", 1, 1), ("total", "", 1, 1)], order
    # Ten spans of a tenth of a second each: 1 s (as floats, 0.999... in any order).
    tenths = [_span(f"ses_{i}", i * 100 * MS, (i + 1) * 100 * MS) for i in range(10)]
    assert _seconds(tenths) == [("2026-03-01", "ann", 1, 1), ("total", "", 1, 1)]
    assert _seconds(tenths[::-1]) == _seconds(tenths)


def test_r1_sessions_side_by_side_count_the_user_s_time_once() -> None:
    """ann runs three sessions of one product at once (two versions side by side
    on a device, M9; up to ten, M13): 0-10 h, 2-4 h and 9-12 h. Her active time is
    the 12 h she had it running, not the 15 h the sessions add up to (a day of such
    work said more hours than the day has). Another user's time, and gaps between
    her sessions, stay apart: bob's 1-2 h, and ann's 20-21 h, count on their own."""
    spans = [
        _span("ses_1", 0 * H, 10 * H),
        _span("ses_2", 2 * H, 4 * H),
        _span("ses_3", 9 * H, 12 * H),
        _span("ses_4", 20 * H, 21 * H),
        _span("ses_5", 1 * H, 2 * H, user="bob"),
    ]
    for order in (spans, spans[::-1]):
        assert _seconds(list(order)) == [
            ("2026-03-01", "ann", 13 * 3600, 13 * 3600),
            ("2026-03-01", "bob", 3600, 3600),
            ("total", "", 14 * 3600, 14 * 3600),
        ]


def test_r1_a_rows_active_seconds_are_its_exact_total_truncated_and_the_total_their_sum() -> None:
    """The rule for whole seconds: each row (day, user, product) adds up its time
    exactly, to the microsecond, and says it truncated; the total adds up the rows
    as shown. A span over midnight is split there exactly."""
    us = timedelta(microseconds=1)
    spans = [
        _span("ses_1", 0 * MS, 1999 * MS),  # ann, 1.999 s
        _span("ses_2", 5 * H, 5 * H + 999_999 * us),  # ann, 0.999999 s: 2.998999 s in all
        _span("ses_3", 0 * MS, 600 * MS, user="bob"),  # bob, 0.6 s
        _span("ses_4", H, H + 600 * MS, user="bob"),  # bob, 0.6 s: 1.2 s
        # cal, from 1.5 s before midnight to 2.5 s after: 1.5 s on the 1st, 2.5 s on the 2nd
        _span("ses_5", 24 * H - 1500 * MS, 24 * H + 2500 * MS, user="cal"),
    ]
    assert _seconds(spans) == [
        ("2026-03-01", "ann", 2, 2),
        ("2026-03-01", "bob", 1, 1),
        ("2026-03-01", "cal", 1, 1),
        ("2026-03-02", "cal", 2, 2),
        ("total", "", 6, 6),
    ]
    report = UsageReport(report_rows(T0, T0 + 48 * H, UsageFacts(spans=spans), []))
    assert [r.active for r in report.rows] == [
        timedelta(microseconds=2_998_999),
        timedelta(milliseconds=1200),
        timedelta(milliseconds=1500),
        timedelta(milliseconds=2500),
    ]


def test_r1_a_span_both_stored_and_open_counts_once_and_one_in_neither_is_not_lost() -> None:
    """The open spans are taken before the store is read: a release meanwhile stores
    the span (then in both: counted once), or stores it after the read (then only
    open: counted, to the report's now)."""
    zero = timedelta(0)
    open_then = [_span("ses_a", zero, H), _span("ses_b", zero, H, user="bob")]
    stored = [_span("ses_a", zero, H + 10 * MS)]  # ann's, released during the read
    report = UsageReport(report_rows(T0, T0 + 48 * H, UsageFacts(spans=stored), open_then))
    assert [(r.user_id, r.active) for r in report.rows] == [
        ("ann", H + 10 * MS),
        ("bob", H),  # released after the read: in neither the reads nor memory now
    ]


_MOVED_OUT_AND_IN = {
    ("pk_1", EntryKind.MOVE_OUT): 30,
    ("pk_1", EntryKind.MOVE_IN): 30,
    ("pk_2", EntryKind.MOVE_OUT): 5,
}


def test_r1_t4_a_pack_moved_out_is_expired_in_the_old_team_from_its_expiry_instant() -> None:
    """R1 with T4: "at its expiry a pack's unused tokens are lost" (T4's instant is
    the expiry itself): acme's report at pk_2's expire_time shows it EXPIRED."""
    ledger = _ledger()
    expiry = ledger.packs["pk_2"].expire_time
    usage = pack_usage("acme", expiry, UsageFacts(moved=_MOVED_OUT_AND_IN), ledger)
    (pk_2,) = [p for p in usage if p.pack_id == "pk_2"]
    assert pk_2.state is PackState.EXPIRED
