"""RULES AD4 over the wire, through reflection as grpcurl would, on both stores:
users found by the beginning of a name or an email (case- and
accent-insensitive, paged, within the caller's teams), and members listed by
product with the assignment that lets them run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import A, Desk
from tests.support import ServerThread, running

ZOE = "zoe.obrien@example.com"
ZED = "zed@example.com"
ANN = "ann@example.com"
LONER = "loner@example.com"


def people(desk: Desk, team_id: str, *entries: str) -> None:
    desk.a("ImportUsers", {"team_id": team_id, "users": list(entries), "all_products": True})


@pytest.fixture
def town(sheet_desk: Desk) -> Desk:
    """alpha: Zoë O'Brien, Ann Lee; beta: Zed Olsen, Ann Lee; Lone Ranger in no team."""
    d = sheet_desk
    d.team("alpha")
    d.team("beta")
    people(d, "alpha", f"Zoë O'Brien <{ZOE}>", f"Ann Lee <{ANN}>")
    people(d, "beta", f"Zed Olsen <{ZED}>", ANN)
    people(d, "alpha", f"Lone Ranger <{LONER}>")
    d.a("UnassignUser", {"team_id": "alpha", "user_id": LONER})
    return d


def search(desk: Desk, query: str, **body: Any) -> list[str]:
    found = desk.admin.every(A + "SearchUsers", {"query": query, **body}, "users")
    return [u["user_id"] for u in found]


@pytest.mark.parametrize("query", ["zoe", "Zoë", "ZOË", "zoë o'b", "obr", "o'b", "O'BRIEN", "z"])
def test_ad4_search_finds_zoe_whatever_the_accents_and_case(town: Desk, query: str) -> None:
    assert ZOE in search(town, query)


def test_ad4_search_answers_user_summaries_in_user_id_order(town: Desk) -> None:
    page = town.a("SearchUsers", {"query": "z"})
    assert page["users"] == [
        {"user_id": ZED, "display_name": "Zed Olsen", "email": ZED, "team_ids": ["beta"]},
        {"user_id": ZOE, "display_name": "Zoë O'Brien", "email": ZOE, "team_ids": ["alpha"]},
    ]
    assert "next_page_token" not in page
    both = town.a("SearchUsers", {"query": "ann"})["users"]
    assert both[0]["team_ids"] == ["alpha", "beta"]


def test_ad4_search_by_email_and_by_a_later_word(town: Desk) -> None:
    assert search(town, "zed@ex") == [ZED]  # the email's beginning
    assert search(town, "ZOE.OB") == [ZOE]
    assert search(town, "olsen") == [ZED]  # a later word of the name
    assert search(town, "lee") == [ANN]
    assert search(town, "ranger") == [LONER]  # the operator sees users in no team
    assert search(town, "example") == []  # not the middle of an address
    assert search(town, "brien") == []  # nor of a word


def test_ad4_the_empty_query_lists_everyone_visible(town: Desk) -> None:
    assert search(town, "") == sorted([ANN, LONER, ZED, ZOE])
    assert search(town, "", team_id="beta") == [ANN, ZED]


def test_ad4_search_narrowed_to_a_team(town: Desk) -> None:
    assert search(town, "z", team_id="alpha") == [ZOE]
    assert search(town, "a", team_id="beta") == [ANN]
    town.refused(
        None,
        "SearchUsers",
        {"query": "z", "team_id": "nope"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_TEAM",
    )


def test_ad4_search_finds_the_users_loaded_at_a_restart(database: Path | str) -> None:
    with running(database) as srv:
        d = Desk(srv.target).sheet()
        d.team("alpha")
        people(d, "alpha", f"Zoë O'Brien <{ZOE}>")
        assert search(d, "obr") == [ZOE]  # before the restart: a new user in the index
        d.close()
    with running(database) as srv:
        d = Desk(srv.target)
        people(d, "alpha", f"Zed Olsen <{ZED}>")
        assert search(d, "o") == [ZED, ZOE]  # one loaded, one added since
        assert search(d, "zoë") == [ZOE]
        d.close()


def test_ad4_search_is_paged_by_user_id(sheet_desk: Desk) -> None:
    sheet_desk.team("alpha")
    names = [f"Pat Number{i} <pat{i}@example.com>" for i in range(5)]
    people(sheet_desk, "alpha", *names)
    first = sheet_desk.a("SearchUsers", {"query": "pat", "page_size": 2})
    assert [u["user_id"] for u in first["users"]] == ["pat0@example.com", "pat1@example.com"]
    second = sheet_desk.a(
        "SearchUsers", {"query": "pat", "page_size": 2, "page_token": first["next_page_token"]}
    )
    assert [u["user_id"] for u in second["users"]] == ["pat2@example.com", "pat3@example.com"]
    third = sheet_desk.a(
        "SearchUsers", {"query": "pat", "page_size": 2, "page_token": second["next_page_token"]}
    )
    assert [u["user_id"] for u in third["users"]] == ["pat4@example.com"]
    assert "next_page_token" not in third
    # The empty query pages the same way.
    empty = sheet_desk.a("SearchUsers", {"page_size": 4})
    assert len(empty["users"]) == 4 and empty["next_page_token"]
    err = sheet_desk.refused(
        None,
        "SearchUsers",
        {"query": "pat", "page_token": "garbage"},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(err.field_violations) == {"page_token"}
    err = sheet_desk.refused(
        None, "SearchUsers", {"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(err.field_violations) == {"page_size"}


def test_ad4_a_query_in_devanagari_finds_names_beginning_with_it_vowel_signs_and_all(
    sheet_desk: Desk,
) -> None:
    """ "कि" (ki) begins Kishore's name, not Kamal's (क alone), and "शोर" is the middle of
    Kishore's first name, which begins no word of it."""
    d = sheet_desk
    d.team("alpha")
    people(d, "alpha", "किशोर कुमार <kishore@example.com>", "कमल शर्मा <kamal@example.com>")
    assert search(d, "कि") == ["kishore@example.com"]
    assert search(d, "कु") == ["kishore@example.com"]
    assert search(d, "क") == ["kamal@example.com", "kishore@example.com"]
    assert search(d, "शर्") == ["kamal@example.com"]
    assert search(d, "शोर") == []


def test_ad4_a_query_longer_than_any_name_or_address_is_refused_naming_it(town: Desk) -> None:
    """A name has at most 256 characters and an address 254: a longer query can begin
    neither, and is refused before it is folded (3 MB of compatibility characters, each
    18 once decomposed, held the server's loop for 12 s)."""
    err = town.refused(
        None, "SearchUsers", {"query": "\ufdfa" * 257}, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(err.field_violations) == ["query"]
    assert "257 characters long" in err.field_violations["query"]
    assert search(town, "zoë o'brien".ljust(256, "x")) == []  # the longest: searched
    assert search(town, "Zoë O'Brien") == [ZOE]


# -- members by product (the guide's "By Product" view) ----------------------------------


def by_product(desk: Desk, team_id: str, product_id: str, **body: Any) -> dict[str, str]:
    members = desk.admin.every(
        A + "ListMembers", {"team_id": team_id, "product_id": product_id, **body}, "members"
    )
    return {m["user_id"]: m.get("access_via", "") for m in members}


@pytest.fixture
def shop(sheet_desk: Desk) -> Desk:
    d = sheet_desk
    d.team("alpha", 100)
    d.a(
        "ImportUsers",
        {"team_id": "alpha", "users": ["Ida <ida@example.com>"], "product_ids": ["ACAD"]},
    )
    d.a("ImportUsers", {"team_id": "alpha", "users": ["Al <al@example.com>"], "all_products": True})
    d.a("ImportUsers", {"team_id": "alpha", "users": ["Dee <dee@example.com>"]})
    d.a(
        "ImportUsers",
        {"team_id": "alpha", "users": ["Rev <rev@example.com>"], "product_ids": ["REVIT"]},
    )
    d.a("ImportUsers", {"team_id": "alpha", "users": ["Gus <gus@example.com>"], "guest": True})
    d.a(
        "ImportUsers",
        {"team_id": "alpha", "users": ["Bo <bo@example.com>"], "product_ids": ["ACAD", "VIEWER"]},
    )
    d.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD", "VIEWER"]})
    # A new user is invited (AssignUsers): assigned ACAD, not yet able to run it.
    d.a(
        "AssignUsers",
        {"team_id": "alpha", "users": ["New Comer <new@example.com>"], "product_ids": ["ACAD"]},
    )
    return d


def test_ad4_members_by_product_with_access_via(shop: Desk) -> None:
    assert by_product(shop, "alpha", "ACAD") == {
        "al@example.com": "ACCESS_VIA_ALL_PRODUCTS",
        "bo@example.com": "ACCESS_VIA_INDIVIDUAL",  # named, and in the default set: named wins
        "dee@example.com": "ACCESS_VIA_DEFAULT_SET",
        "ida@example.com": "ACCESS_VIA_INDIVIDUAL",
        # not new@: invited, so they may run nothing until they accept (A1)
        "rev@example.com": "ACCESS_VIA_DEFAULT_SET",
        # not gus: a guest, and the default set is not for guests (A5)
    }
    assert by_product(shop, "alpha", "REVIT") == {
        "al@example.com": "ACCESS_VIA_ALL_PRODUCTS",
        "rev@example.com": "ACCESS_VIA_INDIVIDUAL",
    }
    # Once they accept, they may run it, through their individual assignment.
    token = next(
        n["invitation_token"]
        for n in shop.a("ListNotifications", {"team_id": "alpha"})["notifications"]
        if n["user_id"] == "new@example.com" and n.get("invitation_token")
    )
    shop.a("AcceptInvitation", {"invitation_token": token})
    assert by_product(shop, "alpha", "ACAD")["new@example.com"] == "ACCESS_VIA_INDIVIDUAL"


def test_ad4_guests_get_the_default_set_only_when_the_team_says_so(shop: Desk) -> None:
    assert "gus@example.com" not in by_product(shop, "alpha", "VIEWER")
    shop.a("UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": True})
    assert by_product(shop, "alpha", "VIEWER")["gus@example.com"] == "ACCESS_VIA_DEFAULT_SET"


def test_ad4_members_by_product_are_paged(shop: Desk) -> None:
    first = shop.a("ListMembers", {"team_id": "alpha", "product_id": "ACAD", "page_size": 4})
    assert [m["user_id"] for m in first["members"]] == [
        "al@example.com",
        "bo@example.com",
        "dee@example.com",
        "ida@example.com",
    ]
    rest = shop.a(
        "ListMembers",
        {
            "team_id": "alpha",
            "product_id": "ACAD",
            "page_size": 4,
            "page_token": first["next_page_token"],
        },
    )
    assert [m["user_id"] for m in rest["members"]] == ["rev@example.com"]
    assert "next_page_token" not in rest


def test_ad4_members_by_an_unknown_product(shop: Desk) -> None:
    shop.refused(
        None,
        "ListMembers",
        {"team_id": "alpha", "product_id": "NOPE"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PRODUCT",
    )
    plain = shop.a("ListMembers", {"team_id": "alpha"})["members"]
    assert len(plain) == 7 and all("access_via" not in m for m in plain)


# -- a team administrator (AD1) sees only its teams' users ---------------------------------


def test_ad4_a_team_administrator_finds_only_its_teams_users(
    town: Desk, server: ServerThread
) -> None:
    made = town.a("CreateAdminKey", {"display_name": "Beta admin", "team_ids": ["beta"]})
    beta = Grpcurl(server.target, made["admin_key"])
    try:
        users = beta(A + "SearchUsers", {"query": ""})["users"]
        assert [u["user_id"] for u in users] == [ANN, ZED]
        assert users[0]["team_ids"] == ["beta"]  # Ann is in alpha too: not beta's to see
        assert beta(A + "SearchUsers", {"query": "zoe"}).get("users", []) == []
        assert beta(A + "SearchUsers", {"query": "ranger"}).get("users", []) == []
        with pytest.raises(GrpcurlError) as info:
            beta(A + "SearchUsers", {"query": "z", "team_id": "alpha"})
        assert (info.value.code, info.value.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "NOT_TEAM_ADMIN",
        )
    finally:
        beta.close()
