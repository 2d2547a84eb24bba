"""Issue 12, point 5: every list that grows without bound is paged (AIP-158).

ListMembers, ListNotifications, ListTeams, ListTokenPacks and ListProducts
page as ListSessions and ListLedgerEntries do: ``page_size`` (100 when 0, at
most the configured ``max_page_size``), an opaque ``page_token``, and
``next_page_token`` empty on the last page. A page starts after the key of the
last item of the page before, so a walk never skips or repeats an item that was
there all along, whatever is added meanwhile. ListDevices is not paged: at most
three devices (M8).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, ServerThread

A = "tessera.v1.AdminService/"
GRPCURL_LIMIT = 4 * 1024 * 1024  # grpcurl's default largest message
AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

PRODUCT = {"daily_rate": 1, "kind": "PRODUCT_KIND_PRODUCT", "platforms": ["PLATFORM_WINDOWS"]}


def ids(items: list[dict[str, Any]], key: str) -> list[str]:
    return [item[key] for item in items]


def walk(
    admin: Grpcurl, method: str, body: dict[str, Any], field: str, page_size: int
) -> list[list[dict[str, Any]]]:
    """Every page of a list, as a list of pages."""
    pages: list[list[dict[str, Any]]] = []
    token = ""
    while True:
        page = admin(A + method, {**body, "page_size": page_size, "page_token": token})
        pages.append(page.get(field, []))
        token = page.get("next_page_token", "")
        if not token:
            return pages


@pytest.mark.slow
def test_h2_5_forty_thousand_members_page_under_grpcurls_limit(server: ServerThread) -> None:
    """A team of 40,000 members was one 4.6 MB answer, over grpcurl's 4 MiB."""
    started = time.monotonic()
    admin = Grpcurl(server.target, ADMIN_TOKEN)
    channel = grpc.insecure_channel(server.target)
    try:
        admin(A + "UpsertProduct", {"product": {**PRODUCT, "product_id": "ACAD"}})
        admin(A + "CreateTeam", {"team_id": "big"})
        everyone = [
            f"Member Number {n:05d} With A Rather Long Name <member.{n:05d}@a-long-domain.example.com>"
            for n in range(40_000)
        ]
        for start in range(0, len(everyone), 10_000):  # the most one request may name
            admin(
                A + "ImportUsers",
                {"team_id": "big", "users": everyone[start : start + 10_000], "all_products": True},
            )
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        for size in (0, 1000, 5000):  # the default, the maximum, more than the maximum
            page = stub.ListMembers(
                api.ListMembersRequest(team_id="big", page_size=size), metadata=AUTH
            )
            assert len(page.members) == min(size or 100, 1000)
            assert page.ByteSize() < GRPCURL_LIMIT
            assert page.next_page_token
        pages = walk(admin, "ListMembers", {"team_id": "big"}, "members", 1000)
        assert [len(p) for p in pages] == [1000] * 40
        listed = [m["user_id"] for p in pages for m in p]
        assert listed == sorted(f"member.{n:05d}@a-long-domain.example.com" for n in range(40_000))
    finally:
        channel.close()
        admin.close()
    assert time.monotonic() - started < 30


@pytest.fixture
def sheet(admin: Grpcurl) -> Grpcurl:
    admin(A + "UpsertProduct", {"product": {**PRODUCT, "product_id": "ACAD"}})
    admin(A + "CreateTeam", {"team_id": "alpha"})
    return admin


def test_h2_5_members_page_by_user_id_and_inserts_never_skip_or_repeat(sheet: Grpcurl) -> None:
    def add(*names: str) -> None:
        users = [f"{n.title()} <{n}@example.com>" for n in names]
        sheet(A + "ImportUsers", {"team_id": "alpha", "users": users, "all_products": True})

    add("bob", "dan", "fay", "hal", "kim")
    first = sheet(A + "ListMembers", {"team_id": "alpha", "page_size": 2})
    assert ids(first["members"], "user_id") == ["bob@example.com", "dan@example.com"]
    add("ann", "eve", "zed")  # one before the page walked, one inside the rest, one after
    second = sheet(
        A + "ListMembers",
        {"team_id": "alpha", "page_size": 2, "page_token": first["next_page_token"]},
    )
    assert ids(second["members"], "user_id") == ["eve@example.com", "fay@example.com"]
    rest = walk(sheet, "ListMembers", {"team_id": "alpha"}, "members", 0)
    assert len(rest) == 1 and len(rest[0]) == 8  # default page: all 8, no next page
    sheet(A + "UnassignUser", {"team_id": "alpha", "user_id": "hal@example.com"})
    third = sheet(
        A + "ListMembers",
        {"team_id": "alpha", "page_size": 2, "page_token": second["next_page_token"]},
    )
    assert ids(third["members"], "user_id") == ["kim@example.com", "zed@example.com"]
    assert "next_page_token" not in third


def test_h2_5_notifications_page_oldest_first(sheet: Grpcurl) -> None:
    for n in range(5):
        sheet(A + "AssignUsers", {"team_id": "alpha", "users": [f"U{n} <u{n}@example.com>"]})
    pages = walk(sheet, "ListNotifications", {"team_id": "alpha"}, "notifications", 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [n["user_id"] for p in pages for n in p]
    assert flat == [f"u{n}@example.com" for n in range(5)]
    one = walk(sheet, "ListNotifications", {"user_id": "u3@example.com"}, "notifications", 1)
    assert [[n["user_id"] for n in p] for p in one] == [["u3@example.com"]]
    everything = walk(sheet, "ListNotifications", {}, "notifications", 0)
    assert len(everything) == 1 and len(everything[0]) == 5


def test_h2_5_teams_products_and_packs_page_too(sheet: Grpcurl) -> None:
    for team in ("delta", "beta", "gamma"):
        sheet(A + "CreateTeam", {"team_id": team})
    pages = walk(sheet, "ListTeams", {}, "teams", 3)
    assert [ids(p, "team_id") for p in pages] == [["alpha", "beta", "delta"], ["gamma"]]

    for product in ("MAYA", "REVIT"):
        sheet(A + "UpsertProduct", {"product": {**PRODUCT, "product_id": product}})
    pages = walk(sheet, "ListProducts", {}, "products", 2)
    assert [ids(p, "product_id") for p in pages] == [["ACAD", "MAYA"], ["REVIT"]]

    bought = []
    for n in range(1, 6):
        sheet(A + "AdvanceClock", {"by": "60s"})
        body = {"team_id": "alpha", "tokens": n, "request_id": f"po-{n}"}
        bought.append(sheet(A + "PurchaseTokens", body)["token_pack"]["pack_id"])
    pages = walk(sheet, "ListTokenPacks", {"team_id": "alpha"}, "packs", 2)
    assert [ids(p, "pack_id") for p in pages] == [bought[:2], bought[2:4], bought[4:]]
    assert sheet(A + "ListTokenPacks", {"team_id": "alpha"})["packs"] == [
        pack for page in pages for pack in page
    ]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("ListMembers", {"team_id": "alpha"}),
        ("ListNotifications", {}),
        ("ListTeams", {}),
        ("ListProducts", {}),
        ("ListTokenPacks", {"team_id": "alpha"}),
    ],
)
def test_h2_5_bad_page_token_or_size_names_the_field(
    sheet: Grpcurl, method: str, body: dict[str, Any]
) -> None:
    sessions_token = "c2Vzc2lvbnM6c2VfMQ"  # a ListSessions token ("sessions:se_1")
    for bad in ("not a token!", "bm9wZQ", sessions_token):
        with pytest.raises(GrpcurlError) as info:
            sheet(A + method, {**body, "page_token": bad})
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert list(info.value.field_violations) == ["page_token"]
    with pytest.raises(GrpcurlError) as info:
        sheet(A + method, {**body, "page_size": -1})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(info.value.field_violations) == ["page_size"]


def test_h2_5_list_rpcs_document_their_paging(sheet: Grpcurl) -> None:
    for name in ("ListMembers", "ListNotifications", "ListTeams", "ListProducts", "ListTokenPacks"):
        method = sheet.describe(f"tessera.v1.AdminService.{name}")
        assert {"page_size", "page_token"} <= set(method.input_type.fields_by_name), name
        assert "next_page_token" in method.output_type.fields_by_name, name
