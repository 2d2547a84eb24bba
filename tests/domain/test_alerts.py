"""RULES L1-L3 in the pure rules (server/domain/alerts.py) and the ledger's log of
balances that L1 reads (``Ledger.take_balances``): no clock, no store."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.alerts import PACK_WARNING, TeamAlerts, warning_time
from server.domain.changes import Changes
from server.domain.directory import Notification, NotificationKind
from server.domain.ledger import Cause, Ledger, TokenPack
from server.domain.teams import Plan, Team

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


class Ids:
    """nt-001, nt-002, ..."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"nt-{self.count:03d}"


def team(threshold: int = 0) -> Team:
    return Team("acme", "Acme", Plan.STANDARD, T0, low_balance_threshold=threshold)


def pack(remaining: int = 40, *, expired: bool = False) -> TokenPack:
    expiry = datetime(2027, 3, 1, 12, tzinfo=UTC)
    return TokenPack("pk-1", "acme", 100, T0, expiry, remaining=remaining, expired=expired)


def alert(kind: NotificationKind, when: datetime, **about: Any) -> Notification:
    """The alert expected: to team acme, no email, id nt-001."""
    return replace(Notification("nt-001", "acme", "", "", kind, when), **about)


# -- L1 -------------------------------------------------------------------------------


def replay(
    t: Team, balances: list[int], start: int = 100
) -> list[tuple[bool, Notification | None]]:
    """L1 over balances one second apart from T0, each after a change from the one
    before (``start`` first): a fall when it is lower."""
    ids = Ids()
    before = [start, *balances]
    return [
        TeamAlerts.low_balance(t, b, b < before[i], T0 + i * SECOND, ids)
        for i, b in enumerate(balances)
    ]


def test_l1_one_alert_when_the_balance_falls_below_the_threshold() -> None:
    t = team(threshold=30)
    got = replay(t, [40, 30, 29, 20, 0])
    assert got[:2] == [(False, None), (False, None)]  # at the threshold is not below it
    assert got[2] == (True, alert(NotificationKind.LOW_BALANCE, T0 + 2 * SECOND, tokens=29))
    assert got[3:] == [(False, None), (False, None)]  # still below: no second alert
    assert t.low_balance_alerted


def test_l1_the_next_alert_only_after_the_balance_was_back_at_the_threshold() -> None:
    t = team(threshold=30)
    got = replay(t, [29, 28, 30, 12, 31, 29])
    assert [note.tokens if note else None for _, note in got] == [29, None, None, 12, None, 29]
    assert [changed for changed, _ in got] == [True, False, True, True, True, True]
    assert [note.create_time for _, note in got if note] == [T0, T0 + 3 * SECOND, T0 + 5 * SECOND]


def test_l1_only_a_fall_alerts_not_a_rise_that_stays_below() -> None:
    t = team(threshold=30)  # set while the balance was 0: nothing queued by that
    assert replay(t, [0], start=0) == [(False, None)]
    assert replay(t, [10, 25], start=0) == [(False, None), (False, None)]  # purchases
    assert not t.low_balance_alerted
    _, note = replay(t, [15], start=25)[0]  # a hold: the first fall tells
    assert note is not None and note.tokens == 15


def test_l1_off_by_default_and_turning_it_off_clears_the_flag() -> None:
    t = team()
    assert replay(t, [0, 5]) == [(False, None), (False, None)]
    t.low_balance_threshold = 10
    assert replay(t, [5], start=6)[0][1] is not None
    t.low_balance_threshold = 0  # off: the flag goes, so the next fall alerts again
    assert replay(t, [5], start=5) == [(True, None)]
    assert not t.low_balance_alerted
    t.low_balance_threshold = 10
    assert replay(t, [4], start=5)[0][1] is not None


def test_l1_a_threshold_of_one_alerts_when_the_last_token_goes() -> None:
    t = team(threshold=1)
    assert replay(t, [1, 0]) == [
        (False, None),  # at the threshold
        (True, alert(NotificationKind.LOW_BALANCE, T0 + SECOND, tokens=0)),
    ]


def test_l1_the_alert_is_addressed_to_the_team() -> None:
    _, note = replay(team(threshold=30), [7])[0]
    assert note is not None
    assert (note.team_id, note.user_id, note.email, note.kind) == (
        "acme",
        "",
        "",
        NotificationKind.LOW_BALANCE,
    )


# -- the ledger's log of balances (what L1 replays) -----------------------------------


def ledger_with(*packs: int) -> Ledger:
    ledger = Ledger()
    ledger.add_team("acme")
    ledger.add_team("beta")
    ids = iter(f"pk-{i}" for i in range(1, 100))
    for i, n in enumerate(packs):
        ledger.purchase("acme", n, f"po-{i}", T0, lambda: next(ids), Changes())
    return ledger


def test_l1_the_ledger_logs_nothing_until_asked() -> None:
    ledger = ledger_with(10)
    ledger.hold("acme", 4, Cause(), T0, "hd-1", Changes())
    assert ledger.take_balances() == {}


def test_l1_the_ledger_logs_the_balance_after_each_change_once_per_change() -> None:
    ledger = ledger_with(5, 20)
    ledger.track_balances()
    assert ledger.take_balances() == {}  # nothing changed: nothing to look at
    t1, t2, t3 = T0 + SECOND, T0 + 2 * SECOND, T0 + 3 * SECOND
    hold = ledger.hold("acme", 12, Cause(), t1, "hd-1", Changes())  # spans both packs: one entry
    ledger.capture(hold, t2, Changes())  # consumed: the available balance does not change
    ledger.purchase("acme", 3, "po-x", t3, lambda: "pk-9", Changes())
    assert ledger.take_balances() == {"acme": [(t1, 13, True), (t3, 16, False)]}
    assert ledger.take_balances() == {}  # taken: the log starts afresh


def test_l1_a_release_of_an_expired_pack_logs_its_net_balance_as_no_fall() -> None:
    ledger = ledger_with(10)
    ledger.track_balances()
    hold = ledger.hold("acme", 4, Cause(), T0, "hd-1", Changes())
    expiry = datetime(2027, 3, 1, 12, tzinfo=UTC)
    ledger.expire("pk-1", expiry, Changes())  # 6 expire; the 4 held stay held
    ledger.release(hold, expiry + SECOND, Changes())  # back, and expired at once (T4)
    assert ledger.take_balances() == {
        "acme": [(T0, 6, True), (expiry, 0, True), (expiry + SECOND, 0, False)]
    }


def test_l1_a_move_logs_both_teams() -> None:
    ledger = ledger_with(10)
    ledger.track_balances()
    ledger.move("pk-1", "beta", T0, Changes())
    assert ledger.take_balances() == {"acme": [(T0, 0, True)], "beta": [(T0, 10, False)]}


# -- L2 -------------------------------------------------------------------------------


def test_l2_the_warning_instant_is_thirty_days_before_the_expiry() -> None:
    assert PACK_WARNING.days == 30
    assert warning_time(pack()) == datetime(2027, 1, 30, 12, tzinfo=UTC)


def test_l2_one_alert_naming_the_pack_its_remaining_tokens_and_expiry() -> None:
    book, p, ids = TeamAlerts(), pack(remaining=40), Ids()
    when = warning_time(p)
    assert book.pack_expiring(p, when, ids) == alert(
        NotificationKind.PACK_EXPIRING, when, pack_id="pk-1", tokens=40, expire_time=p.expire_time
    )
    assert book.warned("pk-1")
    assert book.pack_expiring(p, when + DAY, ids) is None  # once per pack


def test_l2_a_pack_with_nothing_left_is_not_warned() -> None:
    book, ids = TeamAlerts(), Ids()
    assert book.pack_expiring(pack(remaining=0), warning_time(pack()), ids) is None
    assert book.pack_expiring(pack(expired=True), T0, ids) is None
    assert not book.warned("pk-1")


def test_l2_held_tokens_are_not_remaining_tokens() -> None:
    """As a TokenPack's remaining_tokens counts them: the held are on their way to
    a capture."""
    p = pack(remaining=90)
    p.held = 10
    note = TeamAlerts().pack_expiring(p, warning_time(p), Ids())
    assert note is not None and note.tokens == 90


def test_l2_a_pack_all_held_waits_and_is_warned_when_tokens_come_back() -> None:
    """A hold at the warning instant may be released a minute later, and its tokens
    then expire: the pack waits, and is warned then, naming them. (Warning at the
    instant for tokens held would name tokens that a capture takes.)"""
    book, ids = TeamAlerts(), Ids()
    p = pack(remaining=0)
    p.held = 3
    assert book.pack_expiring(p, warning_time(p), ids) is None
    assert book.waiting == {p.pack_id}
    p.held = 1  # part of it captured, part released
    p.remaining = 2
    later = warning_time(p) + timedelta(minutes=1)
    note = book.pack_expiring(p, later, ids)
    assert note is not None and (note.tokens, note.create_time) == (2, later)
    assert book.waiting == set() and book.warned(p.pack_id)


def test_l2_one_token_left_is_warned_at_once_and_one_token_held_waits() -> None:
    """The edges of "still has tokens": one remaining, others held beside it, is
    warned at the instant; none remaining and one held waits for that hold's end."""
    book, ids = TeamAlerts(), Ids()
    p = pack(remaining=1)
    p.held = 2
    note = book.pack_expiring(p, warning_time(p), ids)
    assert note is not None and note.tokens == 1
    q = TokenPack("pk-2", "acme", 100, T0, p.expire_time, remaining=0)
    q.held = 1
    assert book.pack_expiring(q, warning_time(q), ids) is None
    assert book.waiting == {"pk-2"}
    q.held, q.remaining = 0, 1  # released
    later = warning_time(q) + timedelta(minutes=1)
    note = book.pack_expiring(q, later, ids)
    assert note is not None and (note.pack_id, note.tokens, note.create_time) == ("pk-2", 1, later)


def test_l2_a_waiting_pack_whose_holds_are_captured_is_never_warned() -> None:
    book, ids = TeamAlerts(), Ids()
    p = pack(remaining=0)
    p.held = 3
    assert book.pack_expiring(p, warning_time(p), ids) is None
    p.held = 0  # captured: consumed
    assert book.pack_expiring(p, warning_time(p) + timedelta(minutes=5), ids) is None
    assert book.waiting == set() and not book.warned(p.pack_id)


def test_l2_the_team_named_is_the_one_holding_the_pack_then() -> None:
    p = pack()
    p.team_id = "beta"  # moved (T5) before its warning
    note = TeamAlerts().pack_expiring(p, warning_time(p), Ids())
    assert note is not None and note.team_id == "beta"


def test_l2_packs_already_warned_are_read_back_from_the_notifications() -> None:
    p = pack()
    stored = alert(NotificationKind.PACK_EXPIRING, warning_time(p), pack_id="pk-1", tokens=40)
    book = TeamAlerts.restore([stored])
    assert book.warned("pk-1")
    assert book.pack_expiring(p, warning_time(p), Ids()) is None


# -- L3 -------------------------------------------------------------------------------


def test_l3_the_first_refusal_of_a_utc_day_alerts_naming_user_and_product() -> None:
    book, ids = TeamAlerts(), Ids()
    first = book.tokens_exhausted("acme", "ann@x.io", "ACAD", T0, ids)
    assert first == alert(
        NotificationKind.TOKENS_EXHAUSTED, T0, user_id="ann@x.io", product_id="ACAD"
    )
    last_second = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    assert book.tokens_exhausted("acme", "bob@x.io", "REVIT", last_second, ids) is None
    other = book.tokens_exhausted("beta", "bob@x.io", "REVIT", last_second, ids)
    assert other is not None and other.team_id == "beta"  # per team
    next_day = book.tokens_exhausted("acme", "bob@x.io", "REVIT", last_second + SECOND, ids)
    assert next_day is not None
    assert (next_day.user_id, next_day.product_id) == ("bob@x.io", "REVIT")
    assert next_day.create_time == datetime(2026, 3, 2, tzinfo=UTC)


def test_l3_the_last_alerted_day_is_read_back_from_the_notifications() -> None:
    older = alert(NotificationKind.TOKENS_EXHAUSTED, T0 - DAY, user_id="a", product_id="ACAD")
    today = alert(NotificationKind.TOKENS_EXHAUSTED, T0, user_id="a", product_id="ACAD")
    book = TeamAlerts.restore([today, older])  # in any order
    assert book.tokens_exhausted("acme", "b", "ACAD", T0 + SECOND, Ids()) is None
    assert book.tokens_exhausted("acme", "b", "ACAD", T0 + DAY, Ids()) is not None
