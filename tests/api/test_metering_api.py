"""Metering over the wire: holds, grace, windows, renewal, idle (RULES M2-M6),
who pays (C1-C3), the usage report (R1) and the race for the last tokens.

Same server, clock and rate sheet as ``test_sessions_api.py`` (see
``tests/licensing_desk.py``): team ``alpha`` has 100 tokens bought at
2026-01-01T00:00:00Z (its pack expires 2027-01-01T00:00:00Z); ACAD and REVIT
cost 10 tokens a day, ACAD is idle-aware and REVIT is not. Every figure is
exact: balances from GetTeam, the ledger from ListLedgerEntries.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import SHEET, A, Desk, L, at, ended, num
from tests.support import ADMIN_TOKEN, ServerThread

FP = grpc.StatusCode.FAILED_PRECONDITION
IA = grpc.StatusCode.INVALID_ARGUMENT
NEVER = 10**9  # seconds_since_activity: nothing meaningful since long before the session


@pytest.fixture
def ann(desk: Desk) -> str:
    return desk.user("alpha", "ann")


# -- M2: payment check and hold ------------------------------------------------------


def test_m2_entitle_holds_the_daily_rate_and_the_ledger_shows_it(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    assert s["session_id"]
    assert {k: v for k, v in s.items() if k != "session_id"} == {
        "user_id": ann,
        "team_id": "alpha",
        "product_id": "ACAD",
        "product_version": "2026",
        "platform": "PLATFORM_WINDOWS",
        "device_id": "dev-1",
        "state": "SESSION_STATE_ACTIVE",
        "coverage": "COVERAGE_TOKENS",
        "plan": "PLAN_STANDARD",
        "daily_rate": "10",
        "charge_state": "CHARGE_STATE_GRACE",
        "start_time": at(),
        "grace_end_time": at(m=5),
        "lease_expire_time": at(d=1),
        "heartbeat_interval": "300s",
        "team_available_tokens": "90",
    }
    assert desk.balance("alpha") == (90, 10)
    purchase, hold = desk.ledger("alpha")
    assert purchase["kind"] == "LEDGER_ENTRY_KIND_PURCHASE"
    assert {k: v for k, v in hold.items() if k != "entry_id"} == {
        "time": at(),
        "kind": "LEDGER_ENTRY_KIND_HOLD",
        "pack_id": purchase["pack_id"],
        "amount": "10",
        "session_id": s["session_id"],
        "user_id": ann,
        "product_id": "ACAD",
        "team_id": "alpha",
        "remaining_delta": "-10",
        "held_delta": "10",
    }
    (pack,) = desk.packs("alpha")
    assert (num(pack, "remaining_tokens"), num(pack, "held_tokens")) == (90, 10)
    desk.assert_ledger_adds_up("alpha")


def test_m2_the_plan_is_the_teams(desk: Desk) -> None:
    desk.a("CreateTeam", {"team_id": "prem", "plan": "PLAN_PREMIUM"})
    desk.buy("prem", 10)
    cy = desk.user("prem", "cy")
    assert desk.entitle(cy)["plan"] == "PLAN_PREMIUM"


def test_a8_a_running_session_says_the_plan_its_team_has_now(desk: Desk) -> None:
    """A8: a team's token users inherit its plan. Cy's session, opened on Standard,
    says Premium once the team moves to it, in its heartbeats, ListSessions and its
    Release's answer; once ended it keeps saying the plan it ended under, Premium,
    whatever the team's plan later (what its entitlement said last)."""
    desk.team("std", 100)
    cy = desk.user("std", "cy")
    s = desk.entitle(cy)
    assert s["plan"] == "PLAN_STANDARD"
    desk.a("UpdateTeamSettings", {"team_id": "std", "plan": "PLAN_PREMIUM"})
    assert desk.heartbeat(cy, s["session_id"])["plan"] == "PLAN_PREMIUM"
    assert [x["plan"] for x in desk.sessions("std")] == ["PLAN_PREMIUM"]
    assert desk.entitle(cy, product_version="2025")["plan"] == "PLAN_PREMIUM"
    assert desk.release(cy, s["session_id"])["plan"] == "PLAN_PREMIUM"  # as its heartbeat
    desk.a("UpdateTeamSettings", {"team_id": "std", "plan": "PLAN_STANDARD"})
    (gone,) = [
        x for x in desk.sessions("std", include_ended=True) if x["session_id"] == s["session_id"]
    ]
    assert gone["plan"] == "PLAN_PREMIUM"  # the plan it ended under


def test_m2_holds_take_packs_in_t3_order(desk: Desk) -> None:
    # Earliest expiry first: 4 tokens from the older pack, 6 from the newer.
    desk.team("beta")
    old = desk.buy("beta", 4)["pack_id"]
    desk.to(at(h=1))
    new = desk.buy("beta", 50)["pack_id"]
    cy = desk.user("beta", "cy")
    desk.entitle(cy, "REVIT")
    holds = [(e["pack_id"], num(e, "amount")) for e in desk.ledger("beta")[2:]]
    assert holds == [(old, 4), (new, 6)]
    desk.to(at(h=1, m=5))
    by_id = {p["pack_id"]: p for p in desk.packs("beta")}
    assert by_id[old]["state"] == "PACK_STATE_DEPLETED"
    assert num(by_id[old], "consumed_tokens") == 4
    assert num(by_id[new], "consumed_tokens") == 6
    assert num(by_id[new], "remaining_tokens") == 44
    assert [e[0] for e in desk.token_moves("beta")] == ["HOLD", "HOLD", "CAPTURE", "CAPTURE"]
    desk.assert_ledger_adds_up("beta")

    # Same expiry: the smaller pack first, though bought second.
    desk.team("gamma")
    big = desk.buy("gamma", 50)["pack_id"]
    small = desk.buy("gamma", 8)["pack_id"]
    di = desk.user("gamma", "di")
    desk.entitle(di, "REVIT")
    holds = [(e["pack_id"], num(e, "amount")) for e in desk.ledger("gamma")[2:]]
    assert holds == [(small, 8), (big, 2)]


def test_m2_a_meter_in_grace_holds_nothing_more(desk: Desk, ann: str) -> None:
    desk.entitle(ann)
    desk.to(at(m=1))
    second = desk.entitle(ann, product_version="2025")
    assert second["charge_state"] == "CHARGE_STATE_GRACE"
    assert second["grace_end_time"] == at(m=5)
    assert desk.balance("alpha") == (90, 10)
    assert desk.token_moves("alpha") == [("HOLD", 10, at())]


def test_m2_insufficient_tokens_names_the_balance_and_the_rate(desk: Desk) -> None:
    desk.team("thin", 7)
    cy = desk.user("thin", "cy")
    err = desk.refused_entitle(cy, FP, "INSUFFICIENT_TOKENS")
    assert err.metadata["available"] == "7"
    assert err.metadata["daily_rate"] == "10"
    assert desk.devices(cy) == []
    assert desk.sessions("thin", include_ended=True) == []
    assert desk.token_moves("thin") == []
    assert desk.balance("thin") == (7, 0)


def test_m2_race_for_the_last_tokens_exactly_one_wins(server: ServerThread, desk: Desk) -> None:
    desk.team("last", 10)
    users = [desk.user("last", f"u{i:02d}") for i in range(16)]
    barrier = threading.Barrier(len(users))
    results: dict[str, dict[str, Any] | GrpcurlError] = {}

    def race(user_id: str, product_id: str) -> None:
        client = Grpcurl(server.target, desk.keys[user_id])
        try:
            client.services()  # reflection done before the start line
            body = {
                "product_id": product_id,
                "product_version": "2026",
                "platform": "PLATFORM_WINDOWS",
                "device_id": f"dev-{user_id}",
            }
            barrier.wait()
            try:
                results[user_id] = client(L + "Entitle", body)["session"]
            except GrpcurlError as err:
                results[user_id] = err
        finally:
            client.close()

    threads = [
        threading.Thread(target=race, args=(u, ("ACAD", "REVIT")[i % 2]))
        for i, u in enumerate(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wins = [r for r in results.values() if isinstance(r, dict)]
    losses = [r for r in results.values() if isinstance(r, GrpcurlError)]
    assert len(results) == len(users)
    assert len(wins) == 1
    assert len(losses) == len(users) - 1
    for err in losses:
        assert (err.code, err.reason) == (FP, "INSUFFICIENT_TOKENS"), err
        assert err.metadata["available"] == "0"
        assert err.metadata["daily_rate"] == "10"
    (win,) = wins
    assert desk.balance("last") == (0, 10)
    hold = desk.ledger("last")[1]
    assert (hold["kind"], num(hold, "amount"), hold["session_id"]) == (
        "LEDGER_ENTRY_KIND_HOLD",
        10,
        win["session_id"],
    )
    assert len(desk.ledger("last")) == 2
    assert [s["session_id"] for s in desk.sessions("last", include_ended=True)] == [
        win["session_id"]
    ]
    desk.to(at(m=5))
    assert desk.balance("last") == (0, 0)
    desk.assert_ledger_adds_up("last")


# -- M3: grace ----------------------------------------------------------------------------


def test_m3_release_at_4m59_is_free(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.advance(299)
    released = desk.release(ann, s["session_id"])
    ended(released, "RELEASED", at(m=4, s=59))
    assert released["charge_state"] == "CHARGE_STATE_NONE"
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("HOLD_RELEASE", 10, at(m=4, s=59))]
    assert desk.balance("alpha") == (100, 0)
    desk.to(at(h=1))
    assert desk.token_moves("alpha")[-1][0] == "HOLD_RELEASE"
    desk.assert_ledger_adds_up("alpha")


def test_m3_release_at_5m01_is_charged(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.advance(301)
    released = desk.release(ann, s["session_id"])
    ended(released, "RELEASED", at(m=5, s=1))
    assert released["charge_state"] == "CHARGE_STATE_CHARGED"
    assert released["window_end_time"] == at(d=1)
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    assert desk.balance("alpha") == (90, 0)
    (pack,) = desk.packs("alpha")
    assert num(pack, "consumed_tokens") == 10
    desk.assert_ledger_adds_up("alpha")


def test_m3_capture_comes_at_exactly_5_minutes(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=4, s=59))
    assert desk.heartbeat(ann, s["session_id"])["charge_state"] == "CHARGE_STATE_GRACE"
    desk.to(at(m=5))
    charged = desk.heartbeat(ann, s["session_id"])
    assert charged["charge_state"] == "CHARGE_STATE_CHARGED"
    assert charged["window_end_time"] == at(d=1)
    assert "grace_end_time" not in charged
    assert num(charged, "team_available_tokens") == 90


def test_m3_release_at_exactly_5_minutes_is_charged(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.advance(300)
    desk.release(ann, s["session_id"])
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m3_idle_before_5_minutes_gives_the_hold_back(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=2))
    idle = desk.idle(ann, s["session_id"])
    assert idle["state"] == "SESSION_STATE_IDLE"
    assert idle["charge_state"] == "CHARGE_STATE_NONE"
    desk.to(at(m=10))
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("HOLD_RELEASE", 10, at(m=2))]
    assert desk.balance("alpha") == (100, 0)


def test_m3_grace_needs_only_one_session_in_use(desk: Desk, ann: str) -> None:
    s1 = desk.entitle(ann)
    desk.to(at(m=1))
    s2 = desk.entitle(ann, product_version="2025")
    desk.to(at(m=2))
    desk.release(ann, s1["session_id"])  # s2 still in use: no break
    desk.to(at(m=5))
    assert desk.heartbeat(ann, s2["session_id"])["charge_state"] == "CHARGE_STATE_CHARGED"
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m3_end_of_every_session_before_5_minutes_is_free_whatever_ends_it(
    desk: Desk, ann: str
) -> None:
    a = desk.entitle(ann)
    desk.to(at(m=1))
    desk.a("EndSession", {"session_id": a["session_id"]})
    desk.to(at(m=2))
    b = desk.entitle(ann, "REVIT")
    desk.to(at(m=3))
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": ann})
    ended(desk.heartbeat(ann, b["session_id"]), "NOT_ASSIGNED", at(m=3))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=1)),
        ("HOLD", 10, at(m=2)),
        ("HOLD_RELEASE", 10, at(m=3)),
    ]
    assert desk.balance("alpha") == (100, 0)


# -- M4: the charge window -----------------------------------------------------------


def test_m4_a_window_covers_any_version_on_any_device(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=6))
    desk.release(ann, s["session_id"])
    desk.to(at(h=5))
    again = desk.entitle(ann, product_version="2024", device_id="dev-2")
    assert again["charge_state"] == "CHARGE_STATE_CHARGED"
    assert again["window_end_time"] == at(d=1)
    assert num(again, "team_available_tokens") == 90
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


# -- M5: renewal ----------------------------------------------------------------------------


def test_m5_renewal_at_exactly_24h_while_in_use(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=23))
    desk.heartbeat(ann, s["session_id"])  # the lease runs to 47 h
    desk.to(at(h=23, m=59, s=59))
    before = desk.heartbeat(ann, s["session_id"])
    assert before["charge_state"] == "CHARGE_STATE_CHARGED"
    assert before["window_end_time"] == at(d=1)
    assert desk.balance("alpha") == (90, 0)

    desk.to(at(d=1))
    renewed = desk.heartbeat(ann, s["session_id"])
    assert renewed["charge_state"] == "CHARGE_STATE_GRACE"
    assert renewed["grace_end_time"] == at(d=1, m=5)
    assert desk.balance("alpha") == (80, 10)

    desk.to(at(d=1, m=5))
    charged = desk.heartbeat(ann, s["session_id"])
    assert charged["window_end_time"] == at(d=2)
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1)),
        ("CAPTURE", 10, at(d=1, m=5)),
    ]
    assert desk.balance("alpha") == (80, 0)
    desk.assert_ledger_adds_up("alpha")


def test_m5_insufficient_tokens_at_renewal_ends_the_meters_sessions(desk: Desk) -> None:
    desk.team("thin", 10)
    cy = desk.user("thin", "cy")
    s1 = desk.entitle(cy, "REVIT")
    s2 = desk.entitle(cy, "REVIT", product_version="2025")
    other = desk.entitle(cy, "VIEWER")  # another meter, rate 0: untouched
    desk.to(at(h=12))
    for s in (s1, s2, other):
        desk.heartbeat(cy, s["session_id"])
    assert desk.balance("thin") == (0, 0)

    desk.to(at(d=1))
    assert [x["session_id"] for x in desk.sessions("thin")] == [other["session_id"]]
    for s in (s1, s2):
        gone = desk.heartbeat(cy, s["session_id"])
        ended(gone, "INSUFFICIENT_TOKENS", at(d=1))
    assert desk.token_moves("thin") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    err = desk.refused_entitle(cy, FP, "INSUFFICIENT_TOKENS", product_id="REVIT")
    assert (err.metadata["available"], err.metadata["daily_rate"]) == ("0", "10")


def test_m5_a_meter_not_in_use_at_window_end_costs_nothing(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)  # idle by itself from 0:15
    desk.to(at(h=6))
    assert desk.heartbeat(ann, s["session_id"], NEVER)["state"] == "SESSION_STATE_IDLE"
    desk.to(at(d=1, h=5))
    idle = desk.heartbeat(ann, s["session_id"], NEVER)
    assert (idle["state"], idle["charge_state"]) == ("SESSION_STATE_IDLE", "CHARGE_STATE_NONE")
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    assert desk.balance("alpha") == (90, 0)
    # ... until it is used again.
    back = desk.heartbeat(ann, s["session_id"], 0)
    assert back["grace_end_time"] == at(d=1, h=5, m=5)
    assert desk.balance("alpha") == (80, 10)


# -- M6: idle -------------------------------------------------------------------------------


def test_m6_idle_from_the_idle_call(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=7))
    idle = desk.idle(ann, s["session_id"])
    assert idle["state"] == "SESSION_STATE_IDLE"
    assert idle["charge_state"] == "CHARGE_STATE_CHARGED"
    assert "end_reason" not in idle
    assert desk.idle(ann, s["session_id"]) == idle  # again: harmless
    listed = desk.sessions("alpha")
    assert [(x["session_id"], x["state"]) for x in listed] == [
        (s["session_id"], "SESSION_STATE_IDLE")
    ]


def test_m6_idle_15_minutes_after_the_last_activity(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)  # Entitle counts as activity
    desk.to(at(m=10))
    assert desk.heartbeat(ann, s["session_id"], 600)["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(m=14, s=59))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(m=15))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_IDLE"
    # Activity no newer than the moment it went idle changes nothing.
    assert desk.heartbeat(ann, s["session_id"], 900)["state"] == "SESSION_STATE_IDLE"


def test_m6_reported_activity_moves_the_idle_instant(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=10))
    desk.heartbeat(ann, s["session_id"], 120)  # activity at 8 min: idle at 23 min
    desk.to(at(m=22, s=59))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(m=23))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_IDLE"
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m6_idle_in_grace_then_resume_with_a_new_grace(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=2))
    desk.idle(ann, s["session_id"])
    desk.to(at(m=10))
    resumed = desk.heartbeat(ann, s["session_id"], 5)  # activity at 9:55, after the idle
    assert resumed["state"] == "SESSION_STATE_ACTIVE"
    assert resumed["charge_state"] == "CHARGE_STATE_GRACE"
    assert resumed["grace_end_time"] == at(m=15)  # from that heartbeat
    desk.to(at(m=15))
    charged = desk.heartbeat(ann, s["session_id"])
    assert charged["window_end_time"] == at(d=1, m=10)  # from when grace began
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=2)),
        ("HOLD", 10, at(m=10)),
        ("CAPTURE", 10, at(m=15)),
    ]


def test_m6_upsert_product_without_idle_awareness_resumes_idle_sessions(
    desk: Desk, ann: str
) -> None:
    """M6 with P1 over the wire: UpsertProduct turning idle awareness off resumes
    the product's idle sessions at once with a new grace, and the ledger says so."""
    s = desk.entitle(ann)
    desk.to(at(m=2))
    desk.idle(ann, s["session_id"])
    desk.to(at(m=10))
    acad = {**SHEET[0], "idle_aware": False}
    desk.a("UpsertProduct", {"product": acad})
    (listed,) = desk.sessions("alpha")
    assert (listed["state"], listed["charge_state"]) == (
        "SESSION_STATE_ACTIVE",
        "CHARGE_STATE_GRACE",
    )
    assert listed["grace_end_time"] == at(m=15)
    desk.to(at(m=15))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=2)),
        ("HOLD", 10, at(m=10)),
        ("CAPTURE", 10, at(m=15)),
    ]


def test_m6_resume_inside_a_window_costs_nothing(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(h=1))  # idle since 15 min
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_IDLE"
    resumed = desk.heartbeat(ann, s["session_id"], 0)
    assert resumed["state"] == "SESSION_STATE_ACTIVE"
    assert resumed["charge_state"] == "CHARGE_STATE_CHARGED"
    assert resumed["window_end_time"] == at(d=1)
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m6_idle_across_the_window_end_defers_renewal(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)  # idle by itself from 0:15
    desk.to(at(h=23, m=40))
    back = desk.heartbeat(ann, s["session_id"], 0)  # active again inside the window: free
    assert (back["state"], back["charge_state"]) == ("SESSION_STATE_ACTIVE", "CHARGE_STATE_CHARGED")
    desk.to(at(h=23, m=50))
    desk.idle(ann, s["session_id"])
    desk.to(at(d=1, h=1))  # the window closed at 24 h with the meter idle: no renewal
    still = desk.heartbeat(ann, s["session_id"], 3600)  # activity at 0:00, already lapsed
    assert still["state"] == "SESSION_STATE_IDLE"
    assert still["charge_state"] == "CHARGE_STATE_NONE"
    assert desk.balance("alpha") == (90, 0)
    desk.to(at(d=1, h=2))
    resumed = desk.heartbeat(ann, s["session_id"], 0)
    assert resumed["state"] == "SESSION_STATE_ACTIVE"
    assert resumed["charge_state"] == "CHARGE_STATE_GRACE"
    assert resumed["grace_end_time"] == at(d=1, h=2, m=5)
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1, h=2)),
    ]


def test_m6_idle_at_the_window_end_is_not_renewed_until_activity(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(h=23, m=45))
    desk.heartbeat(ann, s["session_id"], 0)  # idle instant: exactly 24 h, the window end
    desk.to(at(d=1, h=2))
    idle = desk.heartbeat(ann, s["session_id"], 7200)
    assert idle["state"] == "SESSION_STATE_IDLE"
    assert idle["charge_state"] == "CHARGE_STATE_NONE"
    assert desk.balance("alpha") == (90, 0)
    desk.to(at(d=1, h=3))
    back = desk.heartbeat(ann, s["session_id"], 0)
    assert back["grace_end_time"] == at(d=1, h=3, m=5)
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1, h=3)),
    ]


def test_m6_resume_without_tokens_ends_the_session(desk: Desk) -> None:
    desk.team("thin", 10)
    cy = desk.user("thin", "cy")
    di = desk.user("thin", "di")
    s = desk.entitle(cy)
    desk.to(at(m=1))
    desk.idle(cy, s["session_id"])
    desk.entitle(di, "REVIT")  # the last tokens
    desk.to(at(m=2))
    gone = desk.heartbeat(cy, s["session_id"], 0)
    ended(gone, "INSUFFICIENT_TOKENS", at(m=2))


def test_m6_products_without_idle_awareness(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    err = desk.refused(ann, "Idle", {"session_id": s["session_id"]}, FP, "IDLE_NOT_SUPPORTED")
    assert err.metadata["product_id"] == "REVIT"
    desk.to(at(h=2))
    assert desk.heartbeat(ann, s["session_id"], 7200)["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(h=20))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_ACTIVE"
    plugin_host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=plugin_host["session_id"])
    desk.refused(ann, "Idle", {"session_id": plugin["session_id"]}, FP, "IDLE_NOT_SUPPORTED")


def test_m6_seconds_since_activity_must_not_be_negative(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    err = desk.refused(
        ann,
        "Heartbeat",
        {"session_id": s["session_id"], "seconds_since_activity": -1},
        IA,
    )
    assert set(err.field_violations) == {"seconds_since_activity"}
    huge = desk.heartbeat(ann, s["session_id"], 9223372036854775807)
    assert huge["state"] == "SESSION_STATE_ACTIVE"


# -- C1-C3: who pays ---------------------------------------------------------------------


def test_c1_a_subscription_consumes_no_tokens(desk: Desk, ann: str) -> None:
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "ACAD", "start_time": at(), "end_time": at(d=30)},
    )
    s = desk.entitle(ann)
    assert s["coverage"] == "COVERAGE_SUBSCRIPTION"
    assert s["charge_state"] == "CHARGE_STATE_NONE"
    assert "grace_end_time" not in s
    desk.to(at(h=2))
    desk.heartbeat(ann, s["session_id"], 0)
    assert desk.token_moves("alpha") == []
    assert desk.balance("alpha") == (100, 0)
    # Another product of the same user still pays.
    assert desk.entitle(ann, "REVIT")["coverage"] == "COVERAGE_TOKENS"


def test_c1_subscription_comes_before_a_trial(desk: Desk, ann: str) -> None:
    desk.a("StartTrial", {"user_id": ann, "product_id": "ACAD", "end_time": at(d=30)})
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "ACAD", "start_time": at(), "end_time": at(d=10)},
    )
    assert desk.entitle(ann)["coverage"] == "COVERAGE_SUBSCRIPTION"


def test_c2_trial_ending_mid_session_goes_on_under_tokens_with_a_new_grace(
    desk: Desk, ann: str
) -> None:
    desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=1)})
    s = desk.entitle(ann, "REVIT")
    assert s["coverage"] == "COVERAGE_TRIAL"
    assert s["charge_state"] == "CHARGE_STATE_NONE"
    desk.to(at(h=1))
    after = desk.heartbeat(ann, s["session_id"])
    assert after["coverage"] == "COVERAGE_TOKENS"
    assert after["charge_state"] == "CHARGE_STATE_GRACE"
    assert after["grace_end_time"] == at(h=1, m=5)
    desk.to(at(h=1, m=5))
    charged = desk.heartbeat(ann, s["session_id"])
    assert charged["window_end_time"] == at(d=1, h=1)
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=1)), ("CAPTURE", 10, at(h=1, m=5))]


def test_c2_release_within_5_minutes_of_the_trial_end_is_free(desk: Desk, ann: str) -> None:
    desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=1)})
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=1, m=4))
    desk.release(ann, s["session_id"])
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=1)), ("HOLD_RELEASE", 10, at(h=1, m=4))]


def test_c1_subscription_ending_mid_session_goes_on_under_tokens(desk: Desk, ann: str) -> None:
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "REVIT", "start_time": at(), "end_time": at(h=2)},
    )
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=2, m=5))
    after = desk.heartbeat(ann, s["session_id"])
    assert (after["coverage"], after["charge_state"]) == ("COVERAGE_TOKENS", "CHARGE_STATE_CHARGED")
    assert after["window_end_time"] == at(d=1, h=2)
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=2)), ("CAPTURE", 10, at(h=2, m=5))]


def test_c1_subscription_granted_in_grace_gives_the_hold_back(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(m=2))
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "REVIT", "start_time": at(), "end_time": at(d=30)},
    )
    covered = desk.heartbeat(ann, s["session_id"])
    assert covered["coverage"] == "COVERAGE_SUBSCRIPTION"
    assert covered["charge_state"] == "CHARGE_STATE_NONE"
    desk.to(at(h=1))
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("HOLD_RELEASE", 10, at(m=2))]


def test_c3_two_teams_the_soonest_expiring_tokens_pay(desk: Desk) -> None:
    desk.team("south", 100)  # bought at T0: expires first
    desk.to(at(h=1))
    desk.team("north", 100)
    dee = desk.user("north", "dee")
    desk.user("south", "dee")
    assert desk.entitle(dee)["team_id"] == "south"
    assert desk.balance("south") == (90, 10)
    assert desk.balance("north") == (100, 0)


def test_c3_ties_go_by_team_id(desk: Desk) -> None:
    desk.team("zz", 100)
    desk.team("aa", 100)
    dee = desk.user("zz", "dee")
    desk.user("aa", "dee")
    assert desk.entitle(dee)["team_id"] == "aa"


def test_c3_a_team_that_cannot_pay_is_passed_over(desk: Desk) -> None:
    desk.team("south", 5)
    desk.to(at(h=1))
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    assert desk.entitle(dee)["team_id"] == "north"
    assert desk.balance("south") == (5, 0)


def test_c3_the_preferred_team_is_honoured_when_the_user_has_access(desk: Desk) -> None:
    desk.team("south", 100)
    desk.to(at(h=1))
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    assert desk.entitle(dee, "REVIT", team_id="north")["team_id"] == "north"
    # alpha is not one of dee's teams: the preference is ignored.
    assert desk.entitle(dee, team_id="alpha")["team_id"] == "south"


def test_c3_a_meter_in_grace_or_window_keeps_its_team(desk: Desk) -> None:
    desk.team("south", 100)
    desk.to(at(h=1))
    desk.team("north", 100)
    dee = desk.user("south", "dee")
    desk.user("north", "dee")
    first = desk.entitle(dee, team_id="north")
    second = desk.entitle(dee, product_version="2025")  # north's meter is in grace
    assert second["team_id"] == "north"
    desk.to(at(h=1, m=6))
    desk.release(dee, first["session_id"])
    desk.release(dee, second["session_id"])
    desk.to(at(h=3))
    third = desk.entitle(dee)  # north's window is open
    assert (third["team_id"], third["charge_state"]) == ("north", "CHARGE_STATE_CHARGED")
    assert desk.balance("north") == (90, 0)
    assert desk.balance("south") == (100, 0)


def test_c3_only_teams_that_grant_the_product_count(desk: Desk) -> None:
    desk.team("south", 100)
    desk.to(at(h=1))
    desk.team("north", 100)
    dee = desk.user("south", "dee", products=["REVIT"])
    desk.user("north", "dee")
    assert desk.entitle(dee)["team_id"] == "north"


# -- R1: the usage report --------------------------------------------------------------


def test_r1_usage_report_per_user_product_and_utc_day(desk: Desk) -> None:
    ann = desk.user("alpha", "ann")
    bob = desk.user("alpha", "bob")
    cy = desk.user("alpha", "cy")
    desk.to(at(h=23))
    a = desk.entitle(ann, "REVIT")
    b = desk.entitle(bob)
    desk.to(at(h=23, m=2))
    desk.idle(bob, b["session_id"])  # 120 s active, free
    desk.to(at(d=1, h=1))
    desk.release(ann, a["session_id"])  # 3600 s on each day, charged at 23:05
    desk.release(bob, b["session_id"])
    b2 = desk.entitle(bob)
    desk.to(at(d=1, h=1, m=10))
    desk.release(bob, b2["session_id"])  # 600 s, charged at 01:05
    desk.to(at(d=1, h=2))
    desk.entitle(cy)  # live, in grace
    desk.to(at(d=1, h=2, m=3))

    report = desk.a("GetUsageReport", {"team_id": "alpha", "start_time": at(), "end_time": at(d=2)})
    rows = [
        (
            r["date"],
            r["user_id"],
            r["product_id"],
            num(r, "tokens_charged"),
            num(r, "sessions"),
            num(r, "active_seconds"),
        )
        for r in report["rows"]
    ]
    assert rows == [
        ("2026-01-01", ann, "REVIT", 10, 1, 3600),
        ("2026-01-01", bob, "ACAD", 0, 1, 120),
        ("2026-01-02", ann, "REVIT", 0, 0, 3600),
        ("2026-01-02", bob, "ACAD", 10, 1, 600),
        ("2026-01-02", cy, "ACAD", 0, 1, 180),
    ]
    assert num(report, "total_tokens_charged") == 20
    assert num(report, "total_sessions") == 4
    assert num(report, "total_active_seconds") == 3600 + 120 + 3600 + 600 + 180
    (pack,) = report["packs"]
    assert {k: v for k, v in pack.items() if k != "pack_id"} == {
        "team_id": "alpha",
        "purchased_tokens": "100",
        "consumed_tokens": "20",
        "held_tokens": "10",
        "remaining_tokens": "70",
        "expire_time": "2027-01-01T00:00:00Z",
        "state": "PACK_STATE_ACTIVE",
    }

    day2 = desk.a(
        "GetUsageReport", {"team_id": "alpha", "start_time": at(d=1), "end_time": at(d=2)}
    )
    assert [(r["user_id"], num(r, "active_seconds")) for r in day2["rows"]] == [
        (ann, 3600),
        (bob, 600),
        (cy, 180),
    ]
    assert num(day2, "total_tokens_charged") == 10


def test_r1_usage_report_shows_moved_and_expired_packs(desk: Desk) -> None:
    desk.team("beta")
    moved = desk.buy("alpha", 50)["pack_id"]
    desk.a("MoveTokenPack", {"pack_id": moved, "to_team_id": "beta"})
    desk.to("2027-01-01T00:00:00Z")
    alpha = desk.a("GetUsageReport", {"team_id": "alpha"})
    beta = desk.a("GetUsageReport", {"team_id": "beta"})
    first = [p for p in alpha["packs"] if p["pack_id"] != moved]
    assert len(first) == 1
    assert first[0]["state"] == "PACK_STATE_EXPIRED"
    assert num(first[0], "expired_tokens") == 100
    assert num(first[0], "remaining_tokens") == 0
    (into,) = beta["packs"]
    assert into["pack_id"] == moved
    assert num(into, "moved_in_tokens") == 50
    assert num(into, "expired_tokens") == 50
    out = [p for p in alpha["packs"] if p["pack_id"] == moved]
    assert [(num(p, "moved_out_tokens"), p["team_id"]) for p in out] == [(50, "beta")]


def test_r1_t5_ad1_a_moved_packs_figures_in_each_teams_report_are_that_teams(
    desk: Desk, ann: str, server: ServerThread
) -> None:
    """T5: what a pack paid for stays in the first team's history. Alpha is charged
    10 from its pack, moves it to beta, and beta is charged 10 from it and holds 10
    more: alpha's report says 10 consumed, nothing held nor remaining there (not
    beta's consumption, nor its live hold, which alpha's administrator may not see,
    AD1); beta's says its own 10 consumed, its hold and what remains."""
    desk.team("beta")
    (pack,) = [p["pack_id"] for p in desk.packs("alpha")]
    s = desk.entitle(ann, "REVIT")
    desk.to(at(m=6))
    desk.release(ann, s["session_id"])
    desk.a("MoveTokenPack", {"pack_id": pack, "to_team_id": "beta"})
    bob = desk.user("beta", "bob")
    s = desk.entitle(bob, "REVIT")
    desk.to(at(m=12))
    desk.release(bob, s["session_id"])
    cy = desk.user("beta", "cy")
    desk.entitle(cy, "REVIT", device_id="cy-pc")  # 10 held in beta now
    key = desk.a("CreateAdminKey", {"display_name": "Alpha's", "team_ids": ["alpha"]})
    alphas = Grpcurl(server.target, key["admin_key"])
    try:
        alpha = alphas(A + "GetUsageReport", {"team_id": "alpha"})
    finally:
        alphas.close()
    beta = desk.a("GetUsageReport", {"team_id": "beta"})

    def figures(report: dict[str, Any]) -> tuple[int, ...]:
        (p,) = [p for p in report["packs"] if p["pack_id"] == pack]
        names = ("consumed", "held", "remaining", "moved_in", "moved_out")
        return tuple(num(p, f"{name}_tokens") for name in names)

    assert num(alpha, "total_tokens_charged") == 10
    assert figures(alpha) == (10, 0, 0, 0, 90)
    assert num(beta, "total_tokens_charged") == 10
    assert figures(beta) == (10, 10, 70, 90, 0)


def test_r1_t5_ad1_a_moved_out_packs_state_in_the_first_teams_report_is_that_teams(
    desk: Desk, server: ServerThread
) -> None:
    """Gamma moves its pack of 10 to beta, which spends all of it: gamma's report of
    the pack does not change (DEPLETED for gamma from the move on: nothing left
    there), and it says EXPIRED once the pack's expiry instant has passed, whatever
    beta did with it."""
    desk.team("gamma")
    pack = desk.buy("gamma", 10)["pack_id"]
    desk.team("beta")
    desk.a("MoveTokenPack", {"pack_id": pack, "to_team_id": "beta"})
    key = desk.a("CreateAdminKey", {"display_name": "Gamma's", "team_ids": ["gamma"]})
    gammas = Grpcurl(server.target, key["admin_key"])

    def gamma_view() -> tuple[Any, ...]:
        (p,) = gammas(A + "GetUsageReport", {"team_id": "gamma"})["packs"]
        names = ("consumed", "held", "remaining", "moved_out")
        return (*(num(p, f"{n}_tokens") for n in names), p["state"])

    try:
        before = gamma_view()
        bob = desk.user("beta", "bob")
        s = desk.entitle(bob, "REVIT")  # beta spends the moved pack's 10 tokens
        desk.to(at(m=6))
        desk.release(bob, s["session_id"])
        assert desk.packs("beta")[0]["state"] == "PACK_STATE_DEPLETED"
        after = gamma_view()
        desk.to(at(d=366))
        expired = gamma_view()
    finally:
        gammas.close()
    assert before == after == (0, 0, 0, 10, "PACK_STATE_DEPLETED")
    assert expired == (0, 0, 0, 10, "PACK_STATE_EXPIRED")


def test_r1_bad_report_requests(desk: Desk) -> None:
    desk.refused(
        None, "GetUsageReport", {"team_id": "nope"}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_TEAM"
    )
    err = desk.refused(None, "GetUsageReport", {}, IA)
    assert set(err.field_violations) == {"team_id"}
    err = desk.refused(
        None,
        "GetUsageReport",
        {"team_id": "alpha", "start_time": at(d=1), "end_time": at()},
        IA,
    )
    assert set(err.field_violations) == {"end_time"}
    # A start in the future and no end (which is then now): the start is what is wrong.
    err = desk.refused(None, "GetUsageReport", {"team_id": "alpha", "start_time": at(d=1)}, IA)
    assert set(err.field_violations) == {"start_time"}
    assert "after now" in err.field_violations["start_time"]


def test_admin_token_is_not_a_user_key(server: ServerThread, desk: Desk) -> None:
    client = Grpcurl(server.target, ADMIN_TOKEN)
    try:
        with pytest.raises(GrpcurlError) as info:
            client(L + "Entitle", {"product_id": "ACAD", "platform": 1, "device_id": "d"})
        assert info.value.code in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
    finally:
        client.close()


# -- instants that coincide ----------------------------------------------------------------


def test_m3_idle_exactly_at_grace_end_is_charged(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=1))
    desk.idle(ann, s["session_id"])  # grace broken at 1 min: free
    desk.to(at(m=20))
    back = desk.heartbeat(ann, s["session_id"], 600)  # activity at 10 min: idle at 25 min
    assert back["grace_end_time"] == at(m=25)
    desk.to(at(m=30))
    assert desk.sessions("alpha")[0]["state"] == "SESSION_STATE_IDLE"
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=1)),
        ("HOLD", 10, at(m=20)),
        ("CAPTURE", 10, at(m=25)),  # in use up to exactly grace end: 5 minutes
    ]


def test_m6_resume_on_older_activity_goes_idle_again_within_grace_for_free(
    desk: Desk, ann: str
) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=1))
    desk.idle(ann, s["session_id"])
    desk.to(at(m=20))
    back = desk.heartbeat(ann, s["session_id"], 840)  # activity at 6 min: idle at 21 min
    assert back["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(m=30))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=1)),
        ("HOLD", 10, at(m=20)),
        ("HOLD_RELEASE", 10, at(m=21)),
    ]
    assert desk.balance("alpha") == (100, 0)


def test_m6_activity_already_lapsed_does_not_resume(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=1))
    desk.idle(ann, s["session_id"])
    desk.to(at(m=30))
    still = desk.heartbeat(ann, s["session_id"], 1200)  # 10 min: newer, but 20 min ago
    assert still["state"] == "SESSION_STATE_IDLE"
    assert desk.balance("alpha") == (100, 0)


def test_m3_lease_ending_exactly_at_grace_end_is_charged(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(m=5))
    desk.heartbeat(ann, s["session_id"])  # lease to 24 h 5 min = the renewal's grace end
    desk.to(at(d=1, m=10))
    ended(desk.heartbeat(ann, s["session_id"]), "LEASE_EXPIRED", at(d=1, m=5))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1)),
        ("CAPTURE", 10, at(d=1, m=5)),
    ]


# -- coverage changes on running sessions ------------------------------------------------


def test_c2_trial_ending_while_idle_holds_nothing_until_activity(desk: Desk, ann: str) -> None:
    desk.a("StartTrial", {"user_id": ann, "product_id": "ACAD", "end_time": at(h=1)})
    s = desk.entitle(ann)
    desk.to(at(m=30))  # idle since 15 min
    desk.to(at(h=2))
    idle = desk.heartbeat(ann, s["session_id"], NEVER)
    assert (idle["state"], idle["coverage"]) == ("SESSION_STATE_IDLE", "COVERAGE_TOKENS")
    assert idle["charge_state"] == "CHARGE_STATE_NONE"
    assert desk.token_moves("alpha") == []
    back = desk.heartbeat(ann, s["session_id"], 0)
    assert back["grace_end_time"] == at(h=2, m=5)
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=2))]


def test_c2_trial_ending_inside_a_paid_window_costs_nothing_more(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=1))  # charged at 5 min, window to 24 h
    desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=2)})
    assert desk.heartbeat(ann, s["session_id"])["coverage"] == "COVERAGE_TRIAL"
    desk.to(at(h=3))
    after = desk.heartbeat(ann, s["session_id"])
    assert (after["coverage"], after["charge_state"]) == ("COVERAGE_TOKENS", "CHARGE_STATE_CHARGED")
    assert after["window_end_time"] == at(d=1)
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    desk.to(at(d=1))  # renewal as usual
    assert desk.token_moves("alpha")[-1] == ("HOLD", 10, at(d=1))


def _subscribed_as_the_window_closes(
    desk: Desk, ann: str, start: str, end: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ann's REVIT, charged at 5 min (its window to 1 d), and a subscription from
    ``start`` to ``end`` granted at 1 h: her heartbeats at 12 h and at 1 d 1 min."""
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=1))
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "REVIT", "start_time": start, "end_time": end},
    )
    desk.to(at(h=12))
    midday = desk.heartbeat(ann, s["session_id"])
    desk.to(at(d=1, m=1))
    return midday, desk.heartbeat(ann, s["session_id"])


def test_c1_m5_a_subscription_starting_as_the_window_closes_renews_for_nothing(
    sheet_desk: Desk,
) -> None:
    """The window closes in use at 1 d, the instant a subscription starts: covered
    from its start_time (included), the session runs on under it and nothing is
    held, even by a team that could not pay a second day (15 tokens)."""
    desk = sheet_desk
    desk.team("alpha", 15)
    ann = desk.user("alpha", "ann")
    _, beat = _subscribed_as_the_window_closes(desk, ann, at(d=1), at(d=30))
    assert (beat["state"], beat["coverage"]) == ("SESSION_STATE_ACTIVE", "COVERAGE_SUBSCRIPTION")
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    assert desk.balance("alpha") == (5, 0)


def test_c1_m5_a_subscription_ending_as_the_window_closes_renews_once(desk: Desk, ann: str) -> None:
    """A subscription ends at 1 d, the instant the session's paid window closes in
    use: from then tokens pay, one hold (M5), not one for the window and one for the
    coverage's end."""
    midday, beat = _subscribed_as_the_window_closes(desk, ann, at(h=1), at(d=1))
    assert midday["coverage"] == "COVERAGE_SUBSCRIPTION"
    assert (beat["coverage"], beat["charge_state"]) == ("COVERAGE_TOKENS", "CHARGE_STATE_GRACE")
    assert beat["grace_end_time"] == at(d=1, m=5)
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1)),
    ]


def test_c1_subscription_starting_later_gives_the_hold_back_at_its_start(
    desk: Desk, ann: str
) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "REVIT", "start_time": at(m=2), "end_time": at(d=30)},
    )
    assert desk.heartbeat(ann, s["session_id"])["coverage"] == "COVERAGE_TOKENS"
    desk.to(at(m=10))
    covered = desk.heartbeat(ann, s["session_id"])
    assert covered["coverage"] == "COVERAGE_SUBSCRIPTION"
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("HOLD_RELEASE", 10, at(m=2))]


# -- tokens meet time ------------------------------------------------------------------------


def test_m3_a_hold_given_back_after_its_pack_expired_expires_at_once(desk: Desk, ann: str) -> None:
    desk.to("2026-12-31T23:58:00Z")
    s = desk.entitle(ann, "REVIT")
    desk.to("2027-01-01T00:01:00Z")  # the pack expired at 00:00 with 10 tokens held
    assert desk.balance("alpha") == (0, 10)
    desk.release(ann, s["session_id"])
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, "2026-12-31T23:58:00Z"),
        ("EXPIRY", 90, "2027-01-01T00:00:00Z"),
        ("HOLD_RELEASE", 10, "2027-01-01T00:01:00Z"),
        ("EXPIRY", 10, "2027-01-01T00:01:00Z"),
    ]
    assert desk.balance("alpha") == (0, 0)
    desk.assert_ledger_adds_up("alpha")


def test_m5_renewal_after_the_pack_expired_is_insufficient_tokens(desk: Desk, ann: str) -> None:
    desk.to("2026-12-31T12:00:00Z")
    s = desk.entitle(ann, "REVIT")
    desk.to("2027-01-01T06:00:00Z")
    desk.heartbeat(ann, s["session_id"])
    desk.to("2027-01-01T12:00:00Z")
    gone = desk.heartbeat(ann, s["session_id"])
    ended(gone, "INSUFFICIENT_TOKENS", "2027-01-01T12:00:00Z")
    assert num(gone, "team_available_tokens") == 0
    desk.assert_ledger_adds_up("alpha")


# -- more races ------------------------------------------------------------------------------


def _race(server: ServerThread, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Send every body as an Entitle at once, each from its own channel and thread."""
    barrier = threading.Barrier(len(bodies))
    results: list[Any] = [None] * len(bodies)

    def one(i: int) -> None:
        client = Grpcurl(server.target, key)
        try:
            client.services()
            barrier.wait()
            try:
                results[i] = client(L + "Entitle", bodies[i])["session"]
            except GrpcurlError as err:
                results[i] = err
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_m9_one_user_racing_from_many_devices_runs_on_exactly_one(
    server: ServerThread, desk: Desk, ann: str
) -> None:
    bodies = [
        {"product_id": "ACAD", "product_version": "2026", "platform": 1, "device_id": f"d{i}"}
        for i in range(8)
    ]
    results = _race(server, desk.keys[ann], bodies)
    wins = [r for r in results if isinstance(r, dict)]
    assert len(wins) == 1
    for r in results:
        if isinstance(r, GrpcurlError):
            assert r.reason == "RUNNING_ELSEWHERE", r
            assert r.metadata["device_id"] == wins[0]["device_id"]
    assert [d["device_id"] for d in desk.devices(ann)] == [wins[0]["device_id"]]
    assert desk.balance("alpha") == (90, 10)


def test_m11_concurrent_repeats_of_one_request_id_hold_once(
    server: ServerThread, desk: Desk, ann: str
) -> None:
    body = {
        "product_id": "ACAD",
        "product_version": "2026",
        "platform": 1,
        "device_id": "dev-1",
        "request_id": "same",
    }
    results = _race(server, desk.keys[ann], [body] * 8)
    assert all(isinstance(r, dict) for r in results), results
    assert len({r["session_id"] for r in results}) == 1
    assert desk.balance("alpha") == (90, 10)
    assert len(desk.sessions("alpha", include_ended=True)) == 1


def test_t5_a_pack_holding_a_sessions_tokens_cannot_move(desk: Desk, ann: str) -> None:
    desk.team("beta")
    (pack,) = desk.packs("alpha")
    desk.entitle(ann)
    err = desk.refused(
        None,
        "MoveTokenPack",
        {"pack_id": pack["pack_id"], "to_team_id": "beta"},
        FP,
        "PACK_HAS_HOLDS",
    )
    assert err.metadata["held_tokens"] == "10"
    desk.to(at(m=5))  # captured: nothing held
    moved = desk.a("MoveTokenPack", {"pack_id": pack["pack_id"], "to_team_id": "beta"})
    assert num(moved["token_pack"], "remaining_tokens") == 90
    assert num(moved["token_pack"], "consumed_tokens") == 10
    assert desk.balance("alpha") == (0, 0)
    assert desk.balance("beta") == (90, 0)


# -- deadlines a refused call fired on its way in --------------------------------------


def _clock_to(server: ServerThread, when: datetime) -> None:
    """Move the test clock without firing anything, as a busy server's loop lags
    behind its deadlines: the next call fires what fell due (``Scheduler.caught_up``)."""

    async def move() -> None:
        assert server.server.engine is not None
        server.server.engine.clock.set(when)  # type: ignore[attr-defined]

    server.call(move())


def test_h2_refused_calls_store_the_deadlines_they_fired(
    server: ServerThread, desk: Desk, ann: str
) -> None:
    """A call fires the deadlines already due before it acts; when it was then
    refused, what they did (a grace captured) stayed in memory only: the stored
    ledger missed a CAPTURE that the hash chain and the pack's sums count on."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    desk.entitle(ann)  # ACAD: 10 held, grace until 00:05
    _clock_to(server, t0 + timedelta(minutes=10))
    desk.refused_entitle(ann, IA, "INVALID_ARGUMENT", request_id="bad\x00")
    assert desk.token_moves("alpha")[-1] == ("CAPTURE", 10, at(m=5))

    desk.entitle(ann, product_id="REVIT")  # 10 held, grace until 00:15
    _clock_to(server, t0 + timedelta(minutes=20))
    desk.refused(ann, "Heartbeat", {"session_id": "se-nope"}, grpc.StatusCode.NOT_FOUND)
    assert desk.token_moves("alpha")[-1] == ("CAPTURE", 10, at(m=15))

    bob = desk.user("alpha", "bob")
    desk.entitle(bob, device_id="bob-1")  # 10 held, grace until 00:25
    _clock_to(server, t0 + timedelta(minutes=30))
    body = {"user_id": bob, "product_id": "ACAD", "device_id": "bob-1"}
    desk.refused(None, "RemoveDevice", body, FP, "DEVICE_IN_USE")
    assert desk.token_moves("alpha")[-1] == ("CAPTURE", 10, at(m=25))
    desk.assert_ledger_adds_up("alpha")


def test_r1_a_usage_report_is_built_and_made_off_the_event_loop(
    server: ServerThread, desk: Desk, ann: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A year of a large team (160,000 rows, a 10 MB answer) held the event loop for
    3.5 s, every Heartbeat waiting, and a front reporting its server silent: the rows
    are built, and the answer's messages made and serialized, on threads of their own."""
    from server.api import admin as admin_module
    from server.engine import sessions as sessions_module

    threads: dict[str, int] = {}

    def recorded(name: str, work: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            threads[name] = threading.get_ident()
            return work(*args, **kwargs)

        return run

    monkeypatch.setattr(
        sessions_module, "report_rows", recorded("rows", sessions_module.report_rows)
    )
    made = recorded("answer", admin_module._usage_report_out)

    class Serialized:  # where the answer's bytes are made: on that thread too
        def __init__(self, answer: Any) -> None:
            self.answer = answer

        def SerializeToString(self) -> bytes:
            threads["bytes"] = threading.get_ident()
            return bytes(self.answer.SerializeToString())

    monkeypatch.setattr(admin_module, "_usage_report_out", lambda *a: Serialized(made(*a)))
    desk.entitle(ann)
    desk.to(at(h=1))
    report = desk.a("GetUsageReport", {"team_id": "alpha"})
    assert [num(r, "tokens_charged") for r in report["rows"]] == [10]

    async def loop_thread() -> int:
        return threading.get_ident()

    loop = server.call(loop_thread())
    assert set(threads) == {"rows", "answer", "bytes"}
    assert loop not in threads.values()


@pytest.mark.parametrize("beta_tokens", [0, 50])
def test_p4_c3_a_takeover_ends_two_hosts_plugins_together_and_neither_pays_for_the_other(
    sheet_desk: Desk, beta_tokens: int
) -> None:
    """Ann runs two AutoCAD hosts (2025, 2026) on dev-1, an AutoCAD Electrical plugin
    on each: p1 in alpha, p2 in beta. Once her trial of the plugin is over (00:10),
    alpha holds its 3 tokens and p2 rides on that hold (C3). A takeover from dev-2
    (M9) ends both hosts, and both plugins with them (P4: HOST_ENDED), as one
    change: p2 was asked to pay when p1 ended with the first host, so it ended
    INSUFFICIENT_TOKENS (beta without tokens), or beta held 3 and gave them back in
    the same instant (beta with 50)."""
    desk = sheet_desk
    desk.team("alpha", 100)
    desk.team("beta", beta_tokens)
    ann = desk.user("alpha", "ann", products=["ACAD", "ACADEL"])
    desk.user("beta", "ann", products=["ACADEL"])
    desk.a("StartTrial", {"user_id": ann, "product_id": "ACADEL", "end_time": at(m=10)})
    h1 = desk.entitle(ann, product_version="2025")
    h2 = desk.entitle(ann, product_version="2026")
    p1 = desk.entitle(ann, "ACADEL", parent_session_id=h1["session_id"], team_id="alpha")
    p2 = desk.entitle(
        ann, "ACADEL", parent_session_id=h2["session_id"], team_id="beta", product_version="2025"
    )
    assert (p1["team_id"], p2["team_id"]) == ("alpha", "beta")
    desk.to(at(m=12))
    assert desk.balance("alpha") == (100 - 10 - 3, 3)  # ACAD charged, ACADEL held
    desk.entitle(ann, device_id="dev-2", takeover=True)
    reasons = [desk.heartbeat(ann, s["session_id"]).get("end_reason") for s in (h1, h2, p1, p2)]
    assert reasons == ["END_REASON_TAKEN_OVER"] * 2 + ["END_REASON_HOST_ENDED"] * 2
    assert desk.token_moves("beta") == []  # beta neither held nor gave back
    assert desk.balance("beta") == (beta_tokens, 0)
    desk.assert_ledger_adds_up("alpha")
