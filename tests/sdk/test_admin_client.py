"""The typed admin client (client_sdk.admin) against a real server, on every store: the
calls the portal makes, and refusals as the SDK's typed errors with their field violations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import AsyncAdminClient, InvalidArgument, NotFound, RetryPolicy, Unauthenticated
from tessera_api.tessera.v1 import common_pb2
from tests.licensing_desk import SHEET, Desk, at
from tests.support import ADMIN_TOKEN, ServerThread, running

ONCE = RetryPolicy(max_attempts=1, call_timeout=10.0)


@pytest.fixture
def desk(server: ServerThread) -> Iterator[Desk]:
    """The rate sheet and team ``alpha`` with 100 tokens."""
    d = Desk(server.target).sheet()
    d.team("alpha", 100)
    try:
        yield d
    finally:
        d.close()


async def test_admin_client_manages_a_team(desk: Desk, server: ServerThread) -> None:
    async with AsyncAdminClient(server.target, ADMIN_TOKEN, retry=ONCE) as admin:
        team = await admin.get_team("alpha")
        assert (team.team_id, team.available_tokens) == ("alpha", 100)
        assert [t.team_id for t in await admin.all_teams()] == ["alpha"]
        members = await admin.assign_users(
            "alpha", ["Ada Lovelace <ada@example.com>"], product_ids=["ACAD"]
        )
        assert [m.user_id for m in members] == ["ada@example.com"]
        member = await admin.set_user_products("alpha", "ada@example.com", product_ids=["REVIT"])
        assert list(member.product_ids) == ["REVIT"]
        assert (await admin.get_member("alpha", "ada@example.com")).display_name == "Ada Lovelace"
        invitation = await admin.resend_invitation("alpha", "ada@example.com")
        assert invitation.user_id == "ada@example.com"
        team = await admin.set_default_assignments("alpha", ["ACAD"])
        assert list(team.default_product_ids) == ["ACAD"]
        assert [p.tokens for p in await admin.list_token_packs("alpha")] == [100]
        assert {p.product_id for p in await admin.list_products()} >= {"ACAD", "REVIT"}
        await admin.unassign_user("alpha", "ada@example.com")
        assert [m.user_id for m in await admin.all_members("alpha")] == []


async def test_admin_client_raises_typed_errors(desk: Desk, server: ServerThread) -> None:
    async with AsyncAdminClient(server.target, ADMIN_TOKEN, retry=ONCE) as admin:
        with pytest.raises(InvalidArgument) as bad:
            await admin.assign_users("alpha", ["Ada <not an email>"], all_products=True)
        assert list(bad.value.field_violations) == ["users[0]"]
        with pytest.raises(NotFound) as missing:
            await admin.get_team("nobody")
        assert missing.value.reason == "UNKNOWN_TEAM"
    async with AsyncAdminClient(server.target, "tsa_wrong", retry=ONCE) as stranger:
        with pytest.raises(Unauthenticated):
            await stranger.get_server_info()


async def test_ad3_admin_client_lists_every_page_of_a_products_subscriptions(
    tmp_path: Path,
) -> None:
    """ListSubscriptions is paged (a product's can be tens of thousands): the admin
    client's ``list_subscriptions`` follows every page, so a caller still gets the
    whole list, by start time then id; here at a server's largest page of 2."""
    with running(tmp_path / "t.db", max_page_size=2) as server:
        desk = Desk(server.target).sheet()
        try:
            desk.team("alpha")
            ann = desk.user("alpha", "ann")
            body = {"user_id": ann, "product_id": "ACAD", "end_time": at(d=40)}
            granted = [
                desk.a("GrantSubscription", {**body, "start_time": at(d=d)})["subscription"]
                for d in (4, 0, 3, 1, 2)
            ]
        finally:
            desk.close()
        async with AsyncAdminClient(server.target, ADMIN_TOKEN, retry=ONCE) as admin:
            listed = await admin.list_subscriptions(product_id="ACAD")
    by_start = sorted(granted, key=lambda g: g["start_time"])
    assert [s.subscription_id for s in listed] == [g["subscription_id"] for g in by_start]


def test_admin_client_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="admin key"):
        AsyncAdminClient("127.0.0.1:1", "")


async def test_a1_admin_client_receives_a_bulk_answer_past_grpcs_default_4_mib(
    desk: Desk, server: ServerThread
) -> None:
    """An import of 1,000 users who may run each of 150 products (ids of 32 characters)
    is answered with every member: 5.2 MB, past the 4 MiB a gRPC client receives unless
    told otherwise. The import was applied, yet the caller saw RESOURCE_EXHAUSTED; the
    admin client receives what the server sends (up to 64 MiB)."""
    async with AsyncAdminClient(server.target, ADMIN_TOKEN, retry=ONCE) as admin:
        for n in range(150):
            product_id = f"PRODUCT{n:025d}"
            await admin.upsert_product(
                common_pb2.Product(
                    product_id=product_id,
                    display_name=product_id,
                    daily_rate=1,
                    kind=common_pb2.PRODUCT_KIND_PRODUCT,
                    platforms=[common_pb2.PLATFORM_WINDOWS],
                )
            )
        users = [f"Member {n:04} <m{n:04}@example.com>" for n in range(1000)]
        members = await admin.assign_users("alpha", users, all_products=True, import_=True)
        assert len(members) == 1000
        assert {len(m.effective_product_ids) for m in members} == {150 + len(SHEET)}
