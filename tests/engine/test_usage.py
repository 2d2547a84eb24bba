"""The usage report (R1) computed from the store's ``UsageFacts`` and memory
(``server/engine/usage.py``), without a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.domain.changes import Changes
from server.domain.ledger import EntryKind, Ledger
from server.engine.usage import build_report
from server.store.port import Capture, SessionStart, UsageFacts

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


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
    report = build_report("acme", T0, T0 + 24 * H, T0 + 5 * H, facts, [], _ledger())
    assert [
        (p.pack_id, p.team_id, p.moved_in_tokens, p.moved_out_tokens) for p in report.packs
    ] == [
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
    report = build_report("acme", T0, T0 + 48 * H, T0 + 30 * H, facts, [], _ledger())
    rows = [(r.date, r.user_id, r.product_id, r.tokens_charged, r.sessions) for r in report.rows]
    assert rows == [
        ("2026-03-01", "ann", "ACAD", 10, 2),
        ("2026-03-02", "ann", "ACAD", 10, 0),
        ("2026-03-02", "bob", "MAYA", 7, 0),
    ]
    assert (report.total_tokens_charged, report.total_sessions) == (27, 2)
