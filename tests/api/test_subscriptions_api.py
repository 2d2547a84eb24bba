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


def pages(desk: Desk, page_size: int, token: str = "", **body: Any) -> list[list[str]]:
    """Every page of ListSubscriptions from ``token`` on, as the ids on each."""
    walked: list[list[str]] = []
    while True:
        page = desk.a("ListSubscriptions", {**body, "page_size": page_size, "page_token": token})
        walked.append([s["subscription_id"] for s in page.get("subscriptions", [])])
        token = page.get("next_page_token", "")
        if not token:
            return walked


def flat(walked: list[list[str]]) -> list[str]:
    """The ids of every page, in the order of the walk."""
    return [s for page in walked for s in page]


def many(desk: Desk, n: int, product_id: str = "ACAD") -> list[dict[str, Any]]:
    """``n`` subscriptions of the product, among 10 users, starts a few hours apart
    in no order and often the same (then the id orders them), granted in one
    ImportUsers and ``n`` GrantSubscription calls."""
    users = [f"User {u} <u{u}@example.com>" for u in range(10)]
    desk.a("ImportUsers", {"team_id": "alpha", "users": users, "all_products": True})
    return [
        grant(desk, f"u{i % 10}@example.com", product_id, at(h=(i * 7) % 40), at(d=30))
        for i in range(n)
    ]


def by_start(subs: list[dict[str, Any]]) -> list[str]:
    """AD3's order: start time, then id."""
    return [
        s["subscription_id"]
        for s in sorted(subs, key=lambda s: (s["start_time"], s["subscription_id"]))
    ]


def test_ad3_a_products_subscriptions_come_back_a_page_at_a_time_whole_and_in_order(
    desk: Desk,
) -> None:
    """A product's subscriptions are not bounded (50,000 made one answer of several
    MB, built at once on the loop): ListSubscriptions is paged as every List call is.
    250 at pages of 100 are 100, 100 and 50, by start time then id, none twice, none
    missing; the default page is 100."""
    granted = many(desk, 250)
    walked = pages(desk, 100, product_id="ACAD")
    assert [len(page) for page in walked] == [100, 100, 50]
    assert flat(walked) == by_start(granted)
    first = desk.a("ListSubscriptions", {"product_id": "ACAD"})
    assert len(first["subscriptions"]) == 100 and first["next_page_token"]
    # A user's, and a user's of one product, are paged the same way.
    u3 = [s for s in granted if s["user_id"] == "u3@example.com"]
    assert [len(p) for p in pages(desk, 10, user_id="u3@example.com")] == [10, 10, 5]
    assert flat(pages(desk, 10, user_id="u3@example.com")) == by_start(u3)
    assert flat(pages(desk, 7, user_id="u3@example.com", product_id="ACAD")) == by_start(u3)


def test_ad3_a_page_token_goes_with_its_user_product_and_include_ended(desk: Desk) -> None:
    """AIP-158: a token of one query sent with another user, product or
    ``include_ended`` would start that list after a place in another one; it is
    refused naming ``page_token``, and goes on with its own query (page size aside)."""
    granted = many(desk, 30)
    for h in range(3):
        grant(desk, "u1@example.com", "REVIT", at(h=h), at(d=30))
    first = desk.a("ListSubscriptions", {"product_id": "ACAD", "page_size": 10})
    token = first["next_page_token"]
    for other in (
        {"product_id": "REVIT"},
        {"product_id": "ACAD", "user_id": "u1@example.com"},
        {"user_id": "u1@example.com"},
        {"product_id": "ACAD", "include_ended": True},
    ):
        err = desk.refused(
            None,
            "ListSubscriptions",
            {**other, "page_token": token},
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert list(err.field_violations) == ["page_token"]
        assert "another query" in err.field_violations["page_token"]
    rest = pages(desk, 25, token, product_id="ACAD")
    listed = [s["subscription_id"] for s in first["subscriptions"]] + flat(rest)
    assert listed == by_start(granted)


def test_ad3_include_ended_holds_across_pages(desk: Desk, ann: str) -> None:
    """Those whose end has passed are left out of every page unless
    ``include_ended``, not only out of the first: the pages are of the live ones."""
    subs = [
        grant(desk, ann, "ACAD", at(h=h), at(h=h + 1) if h % 3 == 0 else at(d=30))
        for h in range(24)
    ]
    desk.to(at(d=2))  # every third one is over
    live = [s for s in subs if s["end_time"] == at(d=30)]
    walked = pages(desk, 5, product_id="ACAD")
    assert [len(p) for p in walked] == [5, 5, 5, 1]
    assert flat(walked) == by_start(live)
    walked = pages(desk, 5, product_id="ACAD", include_ended=True)
    assert [len(p) for p in walked] == [5, 5, 5, 5, 4]
    assert flat(walked) == by_start(subs)


def test_ad3_ending_one_between_pages_neither_skips_nor_repeats_another(
    desk: Desk, ann: str
) -> None:
    """A page starts after the last one listed (its start, then its id), and each
    list is kept in that order: ending one not yet begun moves its start to now,
    earlier in the list, yet no other is skipped or listed twice. Ahead of a walk
    still before now, the ended one is listed once, at its new place; behind a walk
    already past now, it is not met again (AIP-158 allows either for a changed item)."""
    begun = [grant(desk, ann, "ACAD", at(h=h), at(d=30)) for h in range(1, 5)]
    later = [grant(desk, ann, "ACAD", at(d=d), at(d=30)) for d in range(2, 10)]
    ids = [s["subscription_id"] for s in begun + later]
    desk.to(at(d=1))  # the first four have begun, the eight later ones not
    first = desk.a(
        "ListSubscriptions", {"product_id": "ACAD", "include_ended": True, "page_size": 4}
    )
    assert [s["subscription_id"] for s in first["subscriptions"]] == ids[:4]
    last = later[-1]["subscription_id"]
    ended = desk.a("EndSubscription", {"subscription_id": last})["subscription"]
    assert ended["start_time"] == at(d=1)  # from day 9 to now: ahead of this walk still
    desk.a("EndSubscription", {"subscription_id": ids[1]})  # begun, listed: its start stays
    rest = pages(desk, 4, first["next_page_token"], product_id="ACAD", include_ended=True)
    assert rest == [[last, *ids[4:7]], ids[7:11]]
    # A walk already past now (day 4) does not meet one that ending moves behind it.
    walk = desk.a(
        "ListSubscriptions", {"product_id": "ACAD", "include_ended": True, "page_size": 8}
    )
    assert [s["subscription_id"] for s in walk["subscriptions"]] == [*ids[:4], last, *ids[4:7]]
    desk.a("EndSubscription", {"subscription_id": ids[8]})  # day 6 → day 1
    rest = pages(desk, 8, walk["next_page_token"], product_id="ACAD", include_ended=True)
    assert rest == [[ids[7], ids[9], ids[10]]]
    # Without include_ended an ended one is simply gone from the pages to come.
    listed = flat(pages(desk, 3, product_id="ACAD"))
    assert listed == [ids[0], *ids[2:8], ids[9], ids[10]]
