"""RULES AD5 over the wire, through reflection as grpcurl would, on both stores:
a user, with their own key, lists the products they may run now, through which
teams, at which daily rate, and what would pay an Entitle now; each coverage
is the one Entitle then gives."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.grpcurl import GrpcurlError
from tests.licensing_desk import Desk, L, at, num


def mine(desk: Desk, user_id: str) -> dict[str, dict[str, Any]]:
    products = desk.admin(L + "ListMyProducts", {}, token=desk.keys[user_id]).get("products", [])
    return {p["product_id"]: p for p in products}


def coverages(desk: Desk, user_id: str) -> dict[str, str]:
    return {pid: p["coverage"] for pid, p in mine(desk, user_id).items()}


@pytest.fixture
def ann(desk: Desk) -> str:
    """In alpha with all products, in beta with ACAD alone."""
    desk.team("beta", 50)
    desk.user("beta", "ann", ["ACAD"])
    return desk.user("alpha", "ann")


def test_ad5_every_product_with_its_teams_rate_and_kind(desk: Desk, ann: str) -> None:
    products = mine(desk, ann)
    assert list(products) == ["ACAD", "ACADEL", "FREEPLUG", "REVIT", "VIEWER"]
    assert products["ACAD"] == {
        "product_id": "ACAD",
        "display_name": "AutoCAD",
        "kind": "PRODUCT_KIND_PRODUCT",
        "daily_rate": "10",
        "team_ids": ["alpha", "beta"],
        "coverage": "COVERAGE_TOKENS",
    }
    assert products["ACADEL"]["kind"] == "PRODUCT_KIND_PLUGIN"
    assert products["ACADEL"]["host_product_id"] == "ACAD"
    assert num(products["ACADEL"], "daily_rate") == 3
    assert products["REVIT"]["team_ids"] == ["alpha"]
    assert num(products["VIEWER"], "daily_rate") == 0


def test_ad5_each_coverage_is_what_entitle_gives(desk: Desk, ann: str) -> None:
    assert coverages(desk, ann) == {
        "ACAD": "COVERAGE_TOKENS",
        "ACADEL": "COVERAGE_TOKENS",
        "FREEPLUG": "COVERAGE_FREE",  # rate 0
        "REVIT": "COVERAGE_TOKENS",
        "VIEWER": "COVERAGE_FREE",
    }
    desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=2)})
    desk.a("StartTrial", {"user_id": ann, "product_id": "ACAD", "end_time": at(d=9)})
    desk.a(  # a subscription comes before a trial (C1, then C2)
        "GrantSubscription",
        {"user_id": ann, "product_id": "ACAD", "start_time": at(), "end_time": at(d=3)},
    )
    now = coverages(desk, ann)
    assert (now["ACAD"], now["REVIT"]) == ("COVERAGE_SUBSCRIPTION", "COVERAGE_TRIAL")
    for product_id in ("ACAD", "REVIT", "VIEWER"):
        assert desk.entitle(ann, product_id)["coverage"] == now[product_id]
    desk.to(at(h=2))  # the trial of REVIT is over: tokens pay
    assert coverages(desk, ann)["REVIT"] == "COVERAGE_TOKENS"
    desk.to(at(d=3))  # the subscription is over: the trial of ACAD is left
    assert coverages(desk, ann)["ACAD"] == "COVERAGE_TRIAL"
    desk.to(at(d=9))
    assert coverages(desk, ann)["ACAD"] == "COVERAGE_TOKENS"
    assert desk.entitle(ann, "ACAD", device_id="dev-2", takeover=True)["coverage"] == (
        "COVERAGE_TOKENS"
    )


def test_ad5_the_default_set_counts_and_guests_do_not_get_it(desk: Desk) -> None:
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["VIEWER"]})
    bob = desk.user("alpha", "bob", ["REVIT"])
    gus = desk.user("alpha", "gus", ["REVIT"], guest=True)
    assert list(mine(desk, bob)) == ["REVIT", "VIEWER"]
    assert list(mine(desk, gus)) == ["REVIT"]


def test_ad5_p4_a_plugin_is_listed_only_when_its_host_may_be_run(desk: Desk) -> None:
    """P4: a plugin session needs a live session of its host, so a user granted a
    plugin and not its host can never run it (HOST_SESSION_REQUIRED): not listed.
    The host granted in any team is enough; the plugin's teams stay its own."""
    bob = desk.user("alpha", "bob", ["ACADEL", "REVIT"])
    assert list(mine(desk, bob)) == ["REVIT"]
    with pytest.raises(GrpcurlError) as info:
        desk.entitle(bob, "ACADEL")
    assert info.value.reason == "HOST_SESSION_REQUIRED"
    desk.team("beta", 50)
    desk.user("beta", "bob", ["ACAD"])
    products = mine(desk, bob)
    assert list(products) == ["ACAD", "ACADEL", "REVIT"]
    assert (products["ACAD"]["team_ids"], products["ACADEL"]["team_ids"]) == (["beta"], ["alpha"])


def test_ad5_an_invitation_not_accepted_lets_them_run_nothing_yet(desk: Desk) -> None:
    desk.a(
        "AssignUsers",
        {"team_id": "alpha", "users": ["New Comer <new@example.com>"], "all_products": True},
    )
    desk.keys["new@example.com"] = desk.a("IssueUserKey", {"user_id": "new@example.com"})[
        "user_key"
    ]
    assert mine(desk, "new@example.com") == {}
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": "new@example.com"})
    assert mine(desk, "new@example.com") == {}


def test_ad5_needs_the_users_own_key(desk: Desk, ann: str) -> None:
    for token in ("x", "tsu_not-a-key"):
        with pytest.raises(GrpcurlError) as info:
            desk.admin(L + "ListMyProducts", {}, token=token)
        assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
