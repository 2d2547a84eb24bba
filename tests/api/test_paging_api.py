"""AIP-158 over the wire: a page token goes with the query that gave it.

Same server and clock as ``test_metering_api.py`` (``tests/licensing_desk.py``):
team ``alpha`` exists with 100 tokens.
"""

from __future__ import annotations

import grpc
import pytest

from tests.grpcurl import GrpcurlError
from tests.licensing_desk import Desk


def _refused_token(desk: Desk, method: str, body: dict[str, object]) -> str:
    with pytest.raises(GrpcurlError) as info:
        desk.a(method, body)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(info.value.field_violations) == ["page_token"]
    return str(info.value.field_violations["page_token"])


def test_aip158_a_token_of_one_teams_members_is_refused_for_another_team(desk: Desk) -> None:
    """A token given for alpha's members, sent with beta's, used to skip every beta
    member up to alpha's last id; it is refused, naming the field, and the same
    token with the same query (another page size allowed) goes on."""
    desk.team("beta")
    for name in ("ann", "bob", "cal", "dee"):
        desk.user("alpha", name)
    desk.user("beta", "abe")
    desk.user("beta", "zed")
    first = desk.a("ListMembers", {"team_id": "alpha", "page_size": 2})
    token = first["next_page_token"]
    said = _refused_token(desk, "ListMembers", {"team_id": "beta", "page_token": token})
    assert "another query" in said
    rest = desk.a("ListMembers", {"team_id": "alpha", "page_size": 10, "page_token": token})
    assert len(first["members"]) + len(rest["members"]) == 4


def test_aip158_tokens_of_sessions_and_audit_events_keep_their_filters(desk: Desk) -> None:
    ann = desk.user("alpha", "ann")
    bob = desk.user("alpha", "bob")
    desk.entitle(ann, "ACAD")
    desk.entitle(ann, "REVIT")
    desk.entitle(bob, "ACAD")
    by_ann = desk.a("ListSessions", {"user_id": ann, "page_size": 1})
    token = by_ann["next_page_token"]
    _refused_token(desk, "ListSessions", {"user_id": bob, "page_token": token})
    _refused_token(desk, "ListSessions", {"page_token": token})
    rest = desk.a("ListSessions", {"user_id": ann, "page_size": 1, "page_token": token})
    assert [s["user_id"] for s in rest["sessions"]] == [ann]
    audit = desk.a("ListAuditEvents", {"team_id": "alpha", "page_size": 1})
    _refused_token(desk, "ListAuditEvents", {"page_token": audit["next_page_token"]})
