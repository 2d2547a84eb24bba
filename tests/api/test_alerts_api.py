"""RULES L1-L3 over the wire, through reflection, on every store: each alert at
its exact instant on the test clock, with its figures, and once.

The clock starts at 2026-01-01T00:00:00Z (``at``); REVIT and ACAD cost 10 tokens
a day, held at Entitle and captured 5 minutes later (M2, M3). A pack bought at T0
expires at 2027-01-01T00:00:00Z and is warned of 30 days before,
2026-12-02T00:00:00Z.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import grpc

from tests.licensing_desk import Desk, at
from tests.support import ServerThread

FP = grpc.StatusCode.FAILED_PRECONDITION
WARNING = "2026-12-02T00:00:00Z"  # L2: a T0 pack's warning instant
EXPIRY = "2027-01-01T00:00:00Z"


def alerts(desk: Desk, team_id: str, kind: str) -> list[dict[str, Any]]:
    """The team's notifications of ``kind`` (without its prefix), oldest first,
    without their ids."""
    found = desk.a("ListNotifications", {"team_id": team_id}).get("notifications", [])
    out = []
    for n in found:
        if n["kind"] == f"NOTIFICATION_KIND_{kind}":
            assert n.pop("notification_id")
            out.append(n)
    return out


def low(team_id: str, tokens: int, when: str) -> dict[str, Any]:
    """A LOW_BALANCE as grpcurl prints it (0 tokens is left out)."""
    note = {"team_id": team_id, "kind": "NOTIFICATION_KIND_LOW_BALANCE", "create_time": when}
    return note | ({"tokens": str(tokens)} if tokens else {})


def threshold(desk: Desk, team_id: str, tokens: int) -> None:
    desk.a("UpdateTeamSettings", {"team_id": team_id, "low_balance_threshold": tokens})


# -- L1 -------------------------------------------------------------------------------


def test_l1_low_balance_at_the_renewal_that_crossed_it_and_once(sheet_desk: Desk) -> None:
    desk = sheet_desk
    desk.team("lo", 25)
    threshold(desk, "lo", 10)  # 25 is not below it
    ann = desk.user("lo", "ann")
    s = desk.entitle(ann, "REVIT")  # 15 left: not below 10
    desk.to(at(h=23))
    desk.heartbeat(ann, s["session_id"])
    desk.to(at(h=23, m=59, s=59))
    assert alerts(desk, "lo", "LOW_BALANCE") == []

    desk.to(at(d=1))  # the renewal holds 10: 5 left
    assert desk.balance("lo") == (5, 10)
    assert alerts(desk, "lo", "LOW_BALANCE") == [low("lo", 5, at(d=1))]

    desk.to(at(d=2, h=1))  # a day on (the session ended with its lease): still one
    desk.buy("lo", 3)  # 8: still below
    desk.buy("lo", 2)  # 10: back at the threshold, which arms the next alert
    assert desk.balance("lo")[0] == 10
    assert alerts(desk, "lo", "LOW_BALANCE") == [low("lo", 5, at(d=1))]

    desk.entitle(ann, "REVIT")  # 0 left: below again
    assert alerts(desk, "lo", "LOW_BALANCE") == [
        low("lo", 5, at(d=1)),
        low("lo", 0, at(d=2, h=1)),
    ]


def test_l1_a_threshold_set_above_the_balance_tells_at_the_next_fall(sheet_desk: Desk) -> None:
    desk = sheet_desk
    desk.team("set")
    threshold(desk, "set", 20)  # set before the first purchase: 0 is no fall
    desk.buy("set", 10)  # a purchase leaves it below: no fall either
    desk.buy("set", 15)  # 25
    threshold(desk, "set", 30)  # above the balance: nothing by itself
    assert alerts(desk, "set", "LOW_BALANCE") == []
    ann = desk.user("set", "ann")
    desk.to(at(h=1))
    desk.entitle(ann, "REVIT")  # 15: the first fall tells
    assert alerts(desk, "set", "LOW_BALANCE") == [low("set", 15, at(h=1))]
    threshold(desk, "set", 40)  # still below, already told
    threshold(desk, "set", 0)  # off: the next fall tells again
    threshold(desk, "set", 30)
    desk.to(at(d=1, h=2))
    desk.entitle(ann, "REVIT")  # a new window: 5
    assert alerts(desk, "set", "LOW_BALANCE") == [
        low("set", 15, at(h=1)),
        low("set", 5, at(d=1, h=2)),
    ]


def test_l1_a_pack_moved_out_alerts_the_team_it_left(sheet_desk: Desk) -> None:
    desk = sheet_desk
    desk.team("from", 0)
    desk.team("to", 0)
    pack = desk.buy("from", 30)
    threshold(desk, "from", 20)
    threshold(desk, "to", 20)
    desk.to(at(h=2))
    desk.a("MoveTokenPack", {"pack_id": pack["pack_id"], "to_team_id": "to"})
    assert alerts(desk, "from", "LOW_BALANCE") == [low("from", 0, at(h=2))]
    assert alerts(desk, "to", "LOW_BALANCE") == []  # moved in: a rise


def test_l1_t6_a_spent_pack_moved_out_is_no_fall_though_its_move_is_recorded(
    sheet_desk: Desk,
) -> None:
    """L1 alerts when the balance falls below the threshold; moving a pack with no
    tokens left lowers nothing, so it tells nothing. The move is still in both
    ledgers (T6: every move out and in), of 0 tokens."""
    desk = sheet_desk
    desk.team("aa")
    desk.team("bb")
    spent = desk.buy("aa", 10)  # drawn first (T3: the smallest of equal expiries)
    desk.buy("aa", 50)
    ann = desk.user("aa", "ann")
    desk.entitle(ann, "REVIT")
    desk.to(at(m=5))  # captured: the 10-token pack has nothing left
    assert desk.balance("aa") == (50, 0)
    threshold(desk, "aa", 100)  # above the balance: nothing by itself
    desk.a("MoveTokenPack", {"pack_id": spent["pack_id"], "to_team_id": "bb"})
    assert desk.balance("aa") == (50, 0)
    assert alerts(desk, "aa", "LOW_BALANCE") == []
    assert desk.moves("aa")[-1] == ("MOVE_OUT", 0, at(m=5))
    assert desk.moves("bb") == [("MOVE_IN", 0, at(m=5))]
    assert [p["pack_id"] for p in desk.packs("bb")] == [spent["pack_id"]]
    desk.assert_ledger_adds_up("aa")  # (a moved pack's entries stay in both teams')


# -- L2 -------------------------------------------------------------------------------


def expiring(team_id: str, pack: dict[str, Any], tokens: int, when: str) -> dict[str, Any]:
    """A PACK_EXPIRING as grpcurl prints it."""
    return {
        "team_id": team_id,
        "kind": "NOTIFICATION_KIND_PACK_EXPIRING",
        "create_time": when,
        "pack_id": pack["pack_id"],
        "tokens": str(tokens),
        "expire_time": pack["expire_time"],
    }


def test_l2_pack_expiring_at_its_warning_instant_once(sheet_desk: Desk) -> None:
    desk = sheet_desk
    desk.team("ex", 0)
    big = desk.buy("ex", 40)
    small = desk.buy("ex", 10)  # same expiry, smaller: consumed first (T3)
    ann = desk.user("ex", "ann")
    s = desk.entitle(ann, "REVIT")
    desk.to(at(m=6))
    desk.release(ann, s["session_id"])  # the small pack is used up: nothing to warn of
    desk.team("wrong", 0)
    desk.to(at(h=1))
    moved = desk.buy("wrong", 7)  # bought at 01:00 for the wrong team, moved before its warning
    desk.team("ex2", 0)
    desk.a("MoveTokenPack", {"pack_id": moved["pack_id"], "to_team_id": "ex2"})

    desk.to("2026-12-01T23:59:59Z")
    assert alerts(desk, "ex", "PACK_EXPIRING") == []
    desk.to(WARNING)
    assert alerts(desk, "ex", "PACK_EXPIRING") == [expiring("ex", big, 40, WARNING)]
    assert big["expire_time"] == small["expire_time"] == EXPIRY

    # One advance past the other pack's instant: it carries its own instant, not the
    # advance's end, and names the team holding it then.
    desk.to("2026-12-03T00:00:00Z")
    assert alerts(desk, "ex2", "PACK_EXPIRING") == [
        expiring("ex2", moved, 7, "2026-12-02T01:00:00Z")
    ]
    assert alerts(desk, "wrong", "PACK_EXPIRING") == []
    desk.to("2027-01-02T00:00:00Z")  # past the expiry: still one each
    assert len(alerts(desk, "ex", "PACK_EXPIRING")) == 1
    assert len(alerts(desk, "ex2", "PACK_EXPIRING")) == 1


def test_l2_the_warning_names_the_remaining_tokens_not_those_held(sheet_desk: Desk) -> None:
    """ "Its remaining tokens": as a TokenPack's remaining_tokens and the forecast's
    expiring_tokens_30d count them, neither consumed, held nor expired. The 10 held
    at the warning instant are captured minutes later; the 90 are what expires."""
    desk = sheet_desk
    desk.team("hd", 0)
    pack = desk.buy("hd", 100)
    ann = desk.user("hd", "ann")
    desk.to("2026-12-01T23:58:00Z")
    desk.entitle(ann, "REVIT")  # 10 held until 00:03 (M3)
    desk.to(WARNING)
    assert alerts(desk, "hd", "PACK_EXPIRING") == [expiring("hd", pack, 90, WARNING)]
    forecast = desk.a("GetTeam", {"team_id": "hd"})["team"]["forecast"]
    assert forecast["expiring_tokens_30d"] == "90"
    desk.to("2027-01-02T00:00:00Z")
    [gone] = desk.packs("hd")
    assert (gone["state"], gone.get("remaining_tokens")) == ("PACK_STATE_EXPIRED", None)


def test_l2_a_pack_all_held_at_its_instant_is_warned_at_the_release_in_one_long_advance(
    sheet_desk: Desk,
) -> None:
    """One AdvanceClock fires the renewal that holds the pack's last 10 (23:59), its
    warning instant (00:00: it waits), the idle that releases the hold (00:02: warned
    then, of 10) and its expiry (2027-01-01): the warning is decided at the release,
    as steps of the clock would, not on what the whole advance left (tokens expired)."""
    desk = sheet_desk
    desk.team("wt", 0)
    pack = desk.buy("wt", 20)
    ann = desk.user("wt", "ann")
    desk.to("2026-11-30T23:59:00Z")
    s = desk.entitle(ann, "ACAD")  # 10 captured at 00:04: 10 left
    desk.to("2026-12-01T23:47:00Z")
    desk.heartbeat(ann, s["session_id"], 0)  # renewal at 23:59 in use; idle at 00:02
    desk.to("2027-01-02T00:00:00Z")
    assert alerts(desk, "wt", "PACK_EXPIRING") == [expiring("wt", pack, 10, "2026-12-02T00:02:00Z")]
    kinds = [e["kind"] for e in desk.ledger("wt")]
    assert kinds.count("LEDGER_ENTRY_KIND_HOLD_RELEASE") == 1


def test_l1_l2_alerts_of_one_advance_are_listed_oldest_first(sheet_desk: Desk) -> None:
    """ListNotifications is oldest first, each at the instant its rule fired: pack A
    warned (2026-12-02), A expiring drops the balance under the threshold (LOW_BALANCE,
    2027-01-01), pack B warned (2027-01-11), all in one AdvanceClock."""
    desk = sheet_desk
    desk.team("gamma", 10)
    desk.to(at(d=40))
    desk.buy("gamma", 100)
    threshold(desk, "gamma", 105)
    desk.to(at(d=365 + 20))
    notes = desk.a("ListNotifications", {"team_id": "gamma"})["notifications"]
    assert [(n["kind"].removeprefix("NOTIFICATION_KIND_"), n["create_time"]) for n in notes] == [
        ("PACK_EXPIRING", "2026-12-02T00:00:00Z"),
        ("LOW_BALANCE", "2027-01-01T00:00:00Z"),
        ("PACK_EXPIRING", "2027-01-11T00:00:00Z"),
    ]


def test_l1_l2_a_teams_alerts_are_listed_newest_first_without_its_invitations(
    sheet_desk: Desk,
) -> None:
    """ListNotifications of some kinds only, newest first (``order_by`` "time desc"):
    the same three alerts as above, a page of two and then one, never the team's
    invitations; a page's token goes with its order and kinds, and a kind or an
    order the API does not have is refused naming its field."""
    desk = sheet_desk
    desk.team("gamma", 10)
    desk.to(at(d=40))
    desk.buy("gamma", 100)
    threshold(desk, "gamma", 105)
    invitees = [f"P{i} <p{i}@example.com>" for i in range(3)]
    desk.a("AssignUsers", {"team_id": "gamma", "users": invitees, "all_products": True})
    desk.to(at(d=365 + 20))
    body: dict[str, Any] = {
        "team_id": "gamma",
        "kinds": ["NOTIFICATION_KIND_LOW_BALANCE", "NOTIFICATION_KIND_PACK_EXPIRING"],
        "order_by": "time desc",
        "page_size": 2,
    }

    def seen(page: dict[str, Any]) -> list[tuple[str, str]]:
        notes = page.get("notifications", [])
        return [(n["kind"].removeprefix("NOTIFICATION_KIND_"), n["create_time"]) for n in notes]

    first = desk.a("ListNotifications", body)
    last = desk.a("ListNotifications", body | {"page_token": first["next_page_token"]})
    everything = desk.a("ListNotifications", {"team_id": "gamma"})

    assert seen(first) == [
        ("PACK_EXPIRING", "2027-01-11T00:00:00Z"),
        ("LOW_BALANCE", "2027-01-01T00:00:00Z"),
    ]
    assert seen(last) == [("PACK_EXPIRING", "2026-12-02T00:00:00Z")]
    assert "next_page_token" not in last
    assert [k for k, _ in seen(everything)].count("INVITATION") == 3
    assert len(seen(everything)) == 6
    IA = grpc.StatusCode.INVALID_ARGUMENT
    oldest_first = {"team_id": "gamma", "page_token": first["next_page_token"]}
    for bad, field in (
        (oldest_first, "page_token"),
        (body | {"kinds": ["NOTIFICATION_KIND_UNSPECIFIED"]}, "kinds"),
        (body | {"order_by": "kind"}, "order_by"),
    ):
        err = desk.refused(None, "ListNotifications", bad, IA)
        assert list(err.field_violations) == [field], err


def test_l2_a_pack_all_held_at_its_instant_is_warned_when_a_release_gives_them_back(
    database: Path | str,
) -> None:
    """A pack whose tokens are all held at its warning instant has none remaining
    then: it waits. A hold released (a session ended within M3's 5 minutes) gives
    them back, and it is warned at that instant, once, across a restart; a pack
    whose held tokens are captured has nothing to expire and is never warned."""
    first = ServerThread(database).start()
    try:
        with closing(Desk(first.target).sheet()) as desk:
            back = desk.buy(desk.team("bk"), 10)
            kept = desk.buy(desk.team("kp"), 10)
            ann, bo = desk.user("bk", "ann"), desk.user("kp", "bo")
            desk.to("2026-12-01T23:58:00Z")
            s = desk.entitle(ann, "REVIT")  # all 10 held
            desk.entitle(bo, "REVIT")  # all 10 held, captured at 00:03
            desk.to(WARNING)
            assert alerts(desk, "bk", "PACK_EXPIRING") == []
    finally:
        first.stop()
    second = ServerThread(database).start()  # waiting again: its instant fires at start
    try:
        with closing(Desk(second.target)) as desk:
            desk.keys[ann] = desk.a("IssueUserKey", {"user_id": ann})["user_key"]
            desk.to("2026-12-02T00:01:00Z")
            assert alerts(desk, "bk", "PACK_EXPIRING") == []
            desk.release(ann, s["session_id"])  # within M3's 5 minutes: the hold goes back
            assert alerts(desk, "bk", "PACK_EXPIRING") == [
                expiring("bk", back, 10, "2026-12-02T00:01:00Z")
            ]
            desk.to("2026-12-02T00:10:00Z")  # bo's hold captured at 00:03
            [used] = desk.packs("kp")
            assert (used["pack_id"], used["state"]) == (kept["pack_id"], "PACK_STATE_DEPLETED")
            desk.to("2027-01-02T00:00:00Z")
            assert len(alerts(desk, "bk", "PACK_EXPIRING")) == 1
            assert alerts(desk, "kp", "PACK_EXPIRING") == []
    finally:
        second.stop()


# -- L3 -------------------------------------------------------------------------------


def exhausted(team_id: str, user_id: str, product_id: str, when: str) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "user_id": user_id,
        "kind": "NOTIFICATION_KIND_TOKENS_EXHAUSTED",
        "create_time": when,
        "product_id": product_id,
    }


def test_l3_the_days_first_refusal_for_tokens_alerts_once(sheet_desk: Desk) -> None:
    desk = sheet_desk
    desk.team("dry", 10)
    ann, bo = desk.user("dry", "ann"), desk.user("dry", "bo")
    desk.entitle(ann, "REVIT")  # the last 10
    desk.to(at(h=9))
    err = desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="REVIT")
    assert (err.metadata["available"], err.metadata["daily_rate"]) == ("0", "10")
    assert alerts(desk, "dry", "TOKENS_EXHAUSTED") == [exhausted("dry", bo, "REVIT", at(h=9))]

    desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="ACAD")
    desk.to(at(h=23, m=59, s=59))
    desk.refused_entitle(ann, FP, "INSUFFICIENT_TOKENS", product_id="ACAD")
    assert len(alerts(desk, "dry", "TOKENS_EXHAUSTED")) == 1  # the same UTC day

    desk.to(at(d=1))
    desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="ACAD")
    assert alerts(desk, "dry", "TOKENS_EXHAUSTED") == [
        exhausted("dry", bo, "REVIT", at(h=9)),
        exhausted("dry", bo, "ACAD", at(d=1)),
    ]


# -- once across a restart ------------------------------------------------------------


def test_l1_l2_l3_a_restart_keeps_each_alert_once(database: Path | str) -> None:
    first = ServerThread(database).start()
    try:
        with closing(Desk(first.target).sheet()) as desk:
            a = desk.buy(desk.team("rs"), 40)  # warned at 2026-12-02
            desk.to(at(d=2))
            b = desk.buy("rs", 30)  # warned at 2026-12-04
            threshold(desk, "rs", 100)
            ann = desk.user("rs", "ann")
            s = desk.entitle(ann, "REVIT")  # 60, taken from A: L1, its flag stored
            desk.to(at(d=2, m=6))
            desk.release(ann, s["session_id"])
            desk.team("dry")
            bo = desk.user("dry", "bo")
            desk.to("2026-12-03T12:00:00Z")
            desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="REVIT")
            assert alerts(desk, "rs", "PACK_EXPIRING") == [expiring("rs", a, 30, WARNING)]
            assert alerts(desk, "rs", "LOW_BALANCE") == [low("rs", 60, at(d=2))]
            assert len(alerts(desk, "dry", "TOKENS_EXHAUSTED")) == 1
    finally:
        first.stop()
    second = ServerThread(database).start()  # the clock resumes at 2026-12-03T12:00:00Z
    try:
        with closing(Desk(second.target)) as desk:
            for user in (ann, bo):
                desk.keys[user] = desk.a("IssueUserKey", {"user_id": user})["user_key"]
            desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="ACAD")
            assert len(alerts(desk, "dry", "TOKENS_EXHAUSTED")) == 1  # the same UTC day
            desk.entitle(ann, "REVIT")  # 50: a fall, still below 100, told before the restart
            assert desk.balance("rs") == (50, 10)
            assert len(alerts(desk, "rs", "LOW_BALANCE")) == 1
            desk.to("2026-12-03T23:59:59Z")
            assert len(alerts(desk, "rs", "PACK_EXPIRING")) == 1  # A's is not told again
            desk.to("2026-12-04T00:00:00Z")
            assert alerts(desk, "rs", "PACK_EXPIRING") == [
                expiring("rs", a, 30, WARNING),
                expiring("rs", b, 30, "2026-12-04T00:00:00Z"),
            ]
            desk.refused_entitle(bo, FP, "INSUFFICIENT_TOKENS", product_id="ACAD")
            assert len(alerts(desk, "dry", "TOKENS_EXHAUSTED")) == 2  # a new UTC day
    finally:
        second.stop()
