"""AIP-158 over the wire: a page token goes with the query that gave it.

Same server and clock as ``test_metering_api.py`` (``tests/licensing_desk.py``):
team ``alpha`` exists with 100 tokens.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.api import paging
from tessera_api.tessera.v1.common_pb2 import Member
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


def test_aip158_a_token_cut_short_is_refused_not_read_as_an_earlier_place(desk: Desk) -> None:
    """A token missing its last characters (a link copied short) decoded to a shorter
    position, and the list went on from before where it was: page 1's members again."""
    for n in range(10):
        desk.user("alpha", f"member{n:02}")
    first = desk.a("ListMembers", {"team_id": "alpha", "page_size": 5})
    token = first["next_page_token"]
    for cut in (1, 2, 4, 8):
        said = _refused_token(
            desk, "ListMembers", {"team_id": "alpha", "page_size": 5, "page_token": token[:-cut]}
        )
        assert "not a page token this server gave out" in said
    rest = desk.a("ListMembers", {"team_id": "alpha", "page_size": 5, "page_token": token})
    assert not {m["user_id"] for m in first["members"]} & {m["user_id"] for m in rest["members"]}


def _long_products(desk: Desk, n: int) -> list[str]:
    """``n`` products whose ids are 32 characters, the longest allowed."""
    ids = [f"PRODUCT{i:025d}" for i in range(n)]
    for product_id in ids:
        product = {
            "product_id": product_id,
            "display_name": product_id,
            "daily_rate": 1,
            "kind": "PRODUCT_KIND_PRODUCT",
            "platforms": ["PLATFORM_WINDOWS"],
        }
        desk.a("UpsertProduct", {"product": product})
    return ids


def _walk(desk: Desk, method: str, body: dict[str, object], items: str) -> list[list[str]]:
    """Every page of a list at the largest page size, as the ids on each (a client with
    gRPC's default 4 MiB limit on what it receives, as grpcurl and the SDK have)."""
    pages: list[list[str]] = []
    token = ""
    while True:
        page = desk.a(method, {**body, "page_size": 1000, "page_token": token})
        pages.append([x.get("user_id") or x["event_id"] for x in page[items]])
        token = page.get("next_page_token", "")
        if not token:
            return pages


def test_aip158_a_page_at_the_largest_size_stops_short_of_a_clients_4_mib(desk: Desk) -> None:
    """1,000 members who may run each of 150 products (ids of 32 characters): a page of
    all of them was 5.6 MB, which a client refuses (RESOURCE_EXHAUSTED, received message
    larger than max); a page stops before 4 MiB and the next one goes on from there."""
    _long_products(desk, 150)
    for start in range(0, 1000, 250):
        users = [f"Member {n:04} <m{n:04}@example.com>" for n in range(start, start + 250)]
        desk.a("ImportUsers", {"team_id": "alpha", "users": users, "all_products": True})
    pages = _walk(desk, "ListMembers", {"team_id": "alpha"}, "members")
    listed = [user for page in pages for user in page]
    assert len(pages) == 2 and 500 < len(pages[0]) < 1000
    assert sorted(listed) == listed and len(set(listed)) == 1000


def test_ad2_an_audit_page_at_the_largest_size_stops_short_of_a_clients_4_mib(
    desk: Desk,
) -> None:
    """Each event keeps its request whole up to 16 KB: 300 default sets of 440 long
    product ids (15.9 KB each) made a page of 1,000 events over 4 MiB."""
    ids = _long_products(desk, 440)
    for n in range(300):
        desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ids[n % 2 :]})
    pages = _walk(desk, "ListAuditEvents", {"team_id": "alpha"}, "events")
    listed = [event for page in pages for event in page]
    assert len(pages) == 2 and 100 < len(pages[0]) < 300
    assert len(set(listed)) == len(listed) == 302  # and alpha's creation and purchase


def test_aip158_no_message_past_a_pages_cut_is_made() -> None:
    """A page's messages are made as they are measured: none past the 3 MiB cut (a
    page of 1,000 members with a catalog of 10,000 products each made all 1,000,
    1.7 s of the event loop, to send 30)."""
    made: list[int] = []

    def member(n: int) -> Member:
        made.append(n)
        return Member(user_id=f"u{n}", effective_product_ids=[f"{n:0>1000}"] * 1_100)

    items = list(range(1_000))
    answers, token = paging.fitted(items, map(member, items), "", "members", str)
    assert len(answers) == 2 and made == [0, 1, 2]  # each 1.1 MB: the third over 3 MiB
    assert paging.decode(token, "members") == "1"  # the next page goes on after the last kept


@given(
    lists=st.lists(st.sets(st.integers(0, 400)), max_size=5),
    after=st.none() | st.integers(-1, 401),
    limit=st.integers(1, 30),
    newest_first=st.booleans(),
)
def test_aip158_a_page_of_merged_lists_is_the_merge_read_from_the_pages_start(
    lists: list[set[int]], after: int | None, limit: int, newest_first: bool
) -> None:
    """``merged_page``: the page after a key of lists each in key order (a team's
    notifications of some kinds, an administrator's teams'), either way, as the
    sorted whole would give it; each list read no further than the page."""
    taken: set[int] = set()
    disjoint = [sorted(s - taken) for s in lists if not taken.update(s)]  # keys unique across

    def key(n: int) -> str:
        return f"{n:04d}"

    whole = sorted((n for s in disjoint for n in s), reverse=newest_first)
    if after is not None:
        whole = [n for n in whole if (n < after if newest_first else n > after)]
    reads: list[int] = []

    class Watched(list[int]):
        def __getitem__(self, i: object) -> Any:
            reads.append(1)
            return super().__getitem__(i)  # type: ignore[index]

    page = paging.merged_page(
        [Watched(s) for s in disjoint],
        key,
        None if after is None else key(after),
        limit,
        newest_first,
    )
    assert page == whole[:limit]
    assert len(reads) <= limit + len(disjoint) * 10  # the page, and each list's bisection
