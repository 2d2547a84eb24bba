"""RULES AD3 over the wire, through reflection as grpcurl would, on both stores:
subscriptions and trials listed by user, by product or both, and ended early,
a session running under one going on under tokens from that instant (C2)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.licensing_desk import Desk, at, ended


@pytest.fixture
def ann(desk: Desk) -> str:
    return desk.user("alpha", "ann")


def grant(desk: Desk, user_id: str, product_id: str, start: str, end: str) -> dict[str, Any]:
    body = {"user_id": user_id, "product_id": product_id, "start_time": start, "end_time": end}
    sub: dict[str, Any] = desk.a("GrantSubscription", body)["subscription"]
    return sub


def trial(desk: Desk, user_id: str, product_id: str, end: str) -> dict[str, Any]:
    body = {"user_id": user_id, "product_id": product_id, "end_time": end}
    sub: dict[str, Any] = desk.a("StartTrial", body)["subscription"]
    return sub


def listed(desk: Desk, **body: Any) -> list[str]:
    subs = desk.a("ListSubscriptions", body).get("subscriptions", [])
    return [s["subscription_id"] for s in subs]


def test_ad3_list_by_user_by_product_and_both_in_start_order(desk: Desk, ann: str) -> None:
    bob = desk.user("alpha", "bob")
    later = grant(desk, ann, "ACAD", at(d=5), at(d=30))
    desk.to(at(h=1))
    revit = trial(desk, ann, "REVIT", at(d=7))  # starts now: 01:00
    bobs = grant(desk, bob, "ACAD", at(), at(d=10))  # starts at 00:00, granted last
    assert listed(desk, user_id=ann) == [revit["subscription_id"], later["subscription_id"]]
    assert listed(desk, product_id="ACAD") == [bobs["subscription_id"], later["subscription_id"]]
    assert listed(desk, user_id=ann, product_id="ACAD") == [later["subscription_id"]]
    assert listed(desk, user_id=bob, product_id="REVIT") == []
    whole = desk.a("ListSubscriptions", {"user_id": ann, "product_id": "REVIT"})["subscriptions"]
    assert whole == [
        {
            "subscription_id": revit["subscription_id"],
            "user_id": ann,
            "product_id": "REVIT",
            "kind": "SUBSCRIPTION_KIND_TRIAL",
            "start_time": at(h=1),
            "end_time": at(d=7),
        }
    ]


def test_ad3_ended_ones_only_with_include_ended(desk: Desk, ann: str) -> None:
    short = trial(desk, ann, "REVIT", at(h=2))
    long = grant(desk, ann, "ACAD", at(), at(d=30))
    ids = [short["subscription_id"], long["subscription_id"]]
    assert sorted(listed(desk, user_id=ann)) == sorted(ids)
    desk.to(at(h=2))  # the trial's end: from this instant it is over
    assert listed(desk, user_id=ann) == [long["subscription_id"]]
    assert sorted(listed(desk, user_id=ann, include_ended=True)) == sorted(ids)


def test_ad3_list_needs_a_user_or_a_product_that_exists(desk: Desk, ann: str) -> None:
    err = desk.refused(None, "ListSubscriptions", {}, grpc.StatusCode.INVALID_ARGUMENT)
    assert set(err.field_violations) == {"user_id"}
    desk.refused(
        None,
        "ListSubscriptions",
        {"user_id": "nobody@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )
    desk.refused(
        None,
        "ListSubscriptions",
        {"product_id": "NOPE"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PRODUCT",
    )


def test_ad3_ending_a_subscription_moves_the_running_session_to_tokens_at_that_instant(
    desk: Desk, ann: str
) -> None:
    sub = grant(desk, ann, "REVIT", at(), at(d=30))
    s = desk.entitle(ann, "REVIT")
    assert (s["coverage"], s["charge_state"]) == ("COVERAGE_SUBSCRIPTION", "CHARGE_STATE_NONE")
    desk.to(at(h=2))
    out = desk.a("EndSubscription", {"subscription_id": sub["subscription_id"]})["subscription"]
    assert (out["start_time"], out["end_time"]) == (at(), at(h=2))
    # C2: from this instant the session pays: a hold of the daily rate and a new grace.
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=2))]
    assert desk.balance("alpha") == (90, 10)
    now = desk.heartbeat(ann, s["session_id"])
    assert (now["coverage"], now["charge_state"]) == ("COVERAGE_TOKENS", "CHARGE_STATE_GRACE")
    assert now["grace_end_time"] == at(h=2, m=5)
    desk.to(at(h=2, m=5))
    charged = desk.heartbeat(ann, s["session_id"])
    assert charged["charge_state"] == "CHARGE_STATE_CHARGED"
    assert charged["window_end_time"] == at(d=1, h=2)
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=2)), ("CAPTURE", 10, at(h=2, m=5))]
    # A new Entitle is paid by tokens too; the old end (day 30) changes nothing when it comes.
    desk.to(at(d=30, h=1))
    assert desk.entitle(ann, "REVIT", device_id="dev-1")["coverage"] == "COVERAGE_TOKENS"
    desk.assert_ledger_adds_up("alpha")
    assert listed(desk, user_id=ann) == []
    assert listed(desk, user_id=ann, include_ended=True) == [sub["subscription_id"]]


def test_ad3_ending_a_trial_with_too_few_tokens_ends_the_session(desk: Desk) -> None:
    desk.team("poor", 5)
    cat = desk.user("poor", "cat")
    t = trial(desk, cat, "REVIT", at(d=7))
    s = desk.entitle(cat, "REVIT")
    assert s["coverage"] == "COVERAGE_TRIAL"
    desk.to(at(h=3))
    desk.a("EndSubscription", {"subscription_id": t["subscription_id"]})
    ended(desk.heartbeat(cat, s["session_id"]), "INSUFFICIENT_TOKENS", at(h=3))
    assert desk.token_moves("poor") == []


def test_ad3_ending_an_ended_one_returns_it_unchanged(desk: Desk, ann: str) -> None:
    t = trial(desk, ann, "ACAD", at(h=1))
    desk.to(at(h=3))
    again = desk.a("EndSubscription", {"subscription_id": t["subscription_id"]})["subscription"]
    assert again == t
    sub = grant(desk, ann, "REVIT", at(h=3), at(d=3))
    desk.to(at(h=4))
    first = desk.a("EndSubscription", {"subscription_id": sub["subscription_id"]})
    desk.to(at(h=5))
    second = desk.a("EndSubscription", {"subscription_id": sub["subscription_id"]})
    assert first == second
    assert second["subscription"]["end_time"] == at(h=4)


def test_ad3_ending_one_not_yet_begun_leaves_it_empty(desk: Desk, ann: str) -> None:
    sub = grant(desk, ann, "ACAD", at(d=2), at(d=9))
    desk.to(at(h=6))
    out = desk.a("EndSubscription", {"subscription_id": sub["subscription_id"]})["subscription"]
    assert (out["start_time"], out["end_time"]) == (at(h=6), at(h=6))
    desk.to(at(d=3))
    assert desk.entitle(ann)["coverage"] == "COVERAGE_TOKENS"


def test_ad3_end_an_unknown_subscription(desk: Desk) -> None:
    err = desk.refused(
        None,
        "EndSubscription",
        {"subscription_id": "sub_nope"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_SUBSCRIPTION",
    )
    assert err.metadata["subscription_id"] == "sub_nope"
    err = desk.refused(None, "EndSubscription", {}, grpc.StatusCode.INVALID_ARGUMENT)
    assert set(err.field_violations) == {"subscription_id"}
