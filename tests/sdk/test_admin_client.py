"""The typed admin client (client_sdk.admin) against a real server, on every store: the
calls the portal makes, and refusals as the SDK's typed errors with their field violations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client_sdk import AsyncAdminClient, InvalidArgument, NotFound, RetryPolicy, Unauthenticated
from tests.licensing_desk import Desk
from tests.support import ADMIN_TOKEN, ServerThread

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


def test_admin_client_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="admin key"):
        AsyncAdminClient("127.0.0.1:1", "")
