"""The portal with wide data (docs/performance-log.md, stop 65): a big team, a big catalog.
Each test counts what a page reads and renders (calls made, rows, controls), never time."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import urljoin

import pytest
from starlette.testclient import TestClient

from client_sdk.admin import AsyncAdminClient
from portal import team_pages
from portal.app import create_app
from tessera_api.tessera.v1 import common_pb2
from tests.portal.conftest import World
from tests.portal.test_portal_http import sign_in
from tests.support import ADMIN_TOKEN


@pytest.fixture
def web(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.target), base_url="http://127.0.0.1") as client:
        yield client


class _Name:
    def __getattr__(self, name: str) -> str:
        return name


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The AdminService calls the portal makes, by method, from now on."""
    made: Counter[str] = Counter()
    real = AsyncAdminClient._call

    async def counted(self: AsyncAdminClient, method: Any, request: Any) -> Any:
        made[method(_Name())] += 1
        return await real(self, method, request)

    monkeypatch.setattr(AsyncAdminClient, "_call", counted)
    return made


def _import(world: World, team_id: str, lines: list[str], **body: Any) -> None:
    world.a("ImportUsers", {"team_id": team_id, "users": lines, **body})


def test_portal_invitations_read_a_bounded_number_of_member_pages(
    web: TestClient, world: World, calls: Counter[str]
) -> None:
    """A big team with few invitees: each Invitations page reads at most
    ``INVITATIONS_READS`` pages of members (a team of 50,000 with none was read whole,
    642 calls), says it looked through part of the team, and links on; the invitee past
    them is on a later page."""
    _import(world, "alpha", [f"A {n} <a{n:03}@example.com>" for n in range(600)])  # before bob
    sign_in(web)
    url, pages, seen = "/teams/alpha/invitations", 0, []
    while url:
        calls.clear()
        page = web.get(url)
        assert page.status_code == 200
        assert calls["ListMembers"] <= getattr(team_pages, "INVITATIONS_READS", 5)
        seen += re.findall(r"Resend the invitation to ([^\"]+)\"", page.text)
        pages += 1
        more = re.search(r'<a class="button" href="([^"]+)">Next page</a>', page.text)
        if pages == 1:
            assert seen == [] and more and 'id="invitations-partial"' in page.text
        url = urljoin(str(page.url), unescape(more.group(1))) if more else ""
    assert seen == ["bob@example.com"] and pages == 2


def test_portal_member_page_asks_devices_in_one_call(
    web: TestClient, world: World, calls: Counter[str]
) -> None:
    """A member's page asked ListDevices for every product on the rate sheet (10,000
    calls at a 10,000-product catalog): it asks once, naming no product, and lists the
    devices of every product, those of a product they may no longer run included."""
    _catalog(world, 20)
    sign_in(web)
    calls.clear()
    page = web.get("/teams/alpha/member", params={"user": "ada@example.com"})
    assert page.status_code == 200
    assert calls["ListDevices"] == 1
    assert re.search(r'aria-label="Remove device [^"]+ \(AutoCAD\)"', page.text)


def _catalog(world: World, count: int) -> None:
    """``count`` more products on the rate sheet (W0000, W0001, ...), 50 calls at once."""

    async def upsert() -> None:
        async with AsyncAdminClient(world.target, ADMIN_TOKEN) as admin:
            for start in range(0, count, 50):
                await asyncio.gather(
                    *(
                        admin.upsert_product(
                            common_pb2.Product(
                                product_id=f"W{n:04d}",
                                display_name=f"Wide {n}",
                                daily_rate=1,
                                platforms=[common_pb2.PLATFORM_WINDOWS],
                            )
                        )
                        for n in range(start, min(count, start + 50))
                    )
                )

    world.server.call(upsert())


def test_portal_reads_the_rate_sheet_a_thousand_products_a_call(
    web: TestClient, world: World, calls: Counter[str]
) -> None:
    """Most pages read the whole rate sheet for the products' names: a hundred products a
    call, the SDK's default, made a 10,000-product sheet 100 calls a page; the portal
    asks for a thousand (the server's most by default)."""
    _catalog(world, 250)
    sign_in(web)
    calls.clear()
    page = web.get("/teams/alpha/ledger")
    assert page.status_code == 200 and "AutoCAD" in page.text
    assert calls["ListProducts"] == 1
    calls.clear()
    sheet = web.get("/products")
    assert calls["ListProducts"] == 1 and "Wide 249" in sheet.text and "Wide 0<" in sheet.text


def test_portal_a_large_rate_sheet_is_typed_not_a_select_of_every_product(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usage's and By Product's product was a select of the whole rate sheet (10,000
    options, 450-530 kB a page at a 10,000-product catalog): past ``PRODUCT_CHOICES``
    products it is a box for the product's id, which narrows the page as the choice did."""
    monkeypatch.setattr(team_pages, "PRODUCT_CHOICES", 2, raising=False)
    sign_in(web)
    usage = web.get("/teams/alpha/usage", params={"product": "REVIT"})
    assert usage.status_code == 200
    assert '<option value="ACAD"' not in usage.text
    assert re.search(r'<input name="product" value="REVIT"', usage.text)
    by_product = web.get("/teams/alpha/products", params={"product": "REVIT"})
    assert by_product.status_code == 200 and by_product.text.count("<option") == 0
    assert re.search(r'<input id="product" name="product" value="REVIT"', by_product.text)
    assert "carl@example.com" in by_product.text  # who may run Revit, as before


def test_portal_the_overview_reads_a_teams_latest_alerts_in_one_call(
    web: TestClient, world: World, calls: Counter[str]
) -> None:
    """The overview shows the team's latest alerts: one ListNotifications of the
    alerts' kinds, newest first. It read the team's whole outbox for them, oldest
    first, every invitation included (101 calls for a team of 10,000 invitees)."""
    world.desk.team("gamma")
    gus = world.desk.user("gamma", "gus")
    world.desk.refused_entitle(
        gus, __import__("grpc").StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
    )
    invitees = [f"I {n} <i{n:03}@example.com>" for n in range(150)]  # after the alert
    world.a("AssignUsers", {"team_id": "gamma", "users": invitees, "all_products": True})
    sign_in(web)
    calls.clear()
    overview = web.get("/teams/gamma")
    assert overview.status_code == 200
    assert "Tokens ran out: gus@example.com was refused" in overview.text
    assert calls["ListNotifications"] == 1
