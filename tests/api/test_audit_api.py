"""RULES AD2, over the wire: the audit trail of a whole scenario.

Every AdminService call that changes state leaves exactly one event, written in
the commit of its change: who (``operator``, or an admin key's id and name;
``invitee`` for AcceptInvitation), which call, which team, what about, the
request id, and the request with every secret removed. Reads, refusals and
idempotent repeats leave none. ``ListAuditEvents`` is newest first, paged, per
team (a moved pack's event is read in both teams) or, for the operator, every
team's.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, cast

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.api.audit import AuditRecorder, request_json
from server.api.caller import THE_OPERATOR
from server.api.errors import _PREFIXES, SECRET, may_hold_secret, scrub
from server.engine.audit import AuditTrail, Draft
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.api.test_access_api import invitation_token
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import SHEET, A, Desk, at
from tests.support import ADMIN_TOKEN, ServerThread

Event = tuple[str, str, str, str]  # method, actor, team_id, target


def events(desk: Desk, team_id: str = "", page_size: int = 0) -> list[dict[str, Any]]:
    """Every event of ``team_id`` ("": all), walking the pages."""
    body: dict[str, Any] = {"team_id": team_id, "page_size": page_size}
    return desk.admin.every(A + "ListAuditEvents", body, "events")


def summary(found: list[dict[str, Any]]) -> list[Event]:
    return [(e["method"], e["actor"], e.get("team_id", ""), e.get("target", "")) for e in found]


def accept(desk: Desk, user_id: str) -> str:
    """The user's invitation token from the outbox, redeemed with no credential."""
    token = invitation_token(desk.admin, "alpha", user_id)
    desk.admin(A + "AcceptInvitation", {"invitation_token": token}, token="")
    return token


def test_ad2_a_whole_scenario_leaves_one_event_per_change(
    sheet_desk: Desk, server: ServerThread
) -> None:
    desk = sheet_desk
    o = "operator"
    sheet = [("UpsertProduct", o, "", p) for p in ("ACAD", "REVIT", "ACADEL", "VIEWER", "FREEPLUG")]
    assert summary(events(desk))[::-1] == sheet  # the desk's rate sheet, oldest last
    desk.team("alpha")
    desk.team("beta")
    buy = {"team_id": "alpha", "tokens": 100, "request_id": "po-1"}
    pack = desk.a("PurchaseTokens", buy)["token_pack"]["pack_id"]
    desk.a("PurchaseTokens", buy)  # a repeat: nothing changes, no event
    desk.a("AssignUsers", {"team_id": "alpha", "users": ["Ann <ann@example.com>"]})
    desk.a(
        "SetUserProducts",
        {"team_id": "alpha", "user_id": "ann@example.com", "product_ids": ["ACAD"]},
    )
    token = accept(desk, "ann@example.com")
    key = desk.keys["ann@example.com"] = desk.a("IssueUserKey", {"user_id": "ann@example.com"})[
        "user_key"
    ]
    session = desk.entitle("ann@example.com")["session_id"]  # LicensingService
    desk.advance(60)
    desk.a("EndSession", {"session_id": session})
    moved = desk.buy("alpha", 30)["pack_id"]
    desk.a("MoveTokenPack", {"pack_id": moved, "to_team_id": "beta"})
    made = desk.a("CreateAdminKey", {"display_name": "Alpha admin", "team_ids": ["alpha"]})
    key_id = made["key"]["admin_key_id"]
    desk.a("RevokeAdminKey", {"admin_key_id": key_id})
    # Reads leave nothing.
    for method, body in [
        ("GetServerInfo", {}),
        ("ListTeams", {}),
        ("GetTeam", {"team_id": "alpha"}),
        ("ListTokenPacks", {"team_id": "alpha"}),
        ("ListMembers", {"team_id": "alpha"}),
        ("ListSessions", {"team_id": "alpha"}),
        ("ListAuditEvents", {}),
        ("ListAdminKeys", {}),
    ]:
        desk.a(method, body)

    found = events(desk)
    assert summary(found)[::-1] == [
        *sheet,
        ("CreateTeam", o, "alpha", "alpha"),
        ("CreateTeam", o, "beta", "beta"),
        ("PurchaseTokens", o, "alpha", pack),
        ("AssignUsers", o, "alpha", "Ann <ann@example.com>"),
        ("SetUserProducts", o, "alpha", "ann@example.com"),
        ("AcceptInvitation", "invitee", "alpha", "ann@example.com"),
        ("IssueUserKey", o, "", "ann@example.com"),
        ("AdvanceClock", o, "", ""),
        ("EndSession", o, "alpha", session),
        ("PurchaseTokens", o, "alpha", moved),
        ("MoveTokenPack", o, "alpha", moved),
        ("CreateAdminKey", o, "", key_id),
        ("RevokeAdminKey", o, "", key_id),
    ]
    by_method = {e["method"]: e for e in found}  # the newest of each
    assert all(e["actor_name"] == "operator" for e in found if e["actor"] == o)
    invited = by_method["AcceptInvitation"]
    assert invited["actor_name"] == "ann@example.com"
    assert invited.get("request", {}) == {}  # the token was the whole request: removed
    text = json.dumps(found)
    assert token not in text and token[4:] not in text  # no secret anywhere in the trail
    assert key not in text and key[4:] not in text and made["admin_key"][4:] not in text
    first_buy = found[::-1][len(sheet) + 2]
    assert first_buy["request_id"] == "po-1"
    assert first_buy["request"] == {"team_id": "alpha", "tokens": "100", "request_id": "po-1"}
    assert first_buy["time"] == at()
    assert by_method["EndSession"]["time"] == at(m=1)  # after the clock moved
    assert len({e["event_id"] for e in found}) == len(found)

    # Per team: the moved pack is in both teams' trails.
    assert summary(events(desk, "beta"))[::-1] == [
        ("CreateTeam", o, "beta", "beta"),
        ("MoveTokenPack", o, "beta", moved),  # in beta's trail, beta's (AD1: no other's name)
    ]
    alpha = summary(events(desk, "alpha"))
    assert alpha[0] == ("MoveTokenPack", o, "alpha", moved)
    assert [m for m, *_ in alpha][::-1] == [
        "CreateTeam",
        "PurchaseTokens",
        "AssignUsers",
        "SetUserProducts",
        "AcceptInvitation",
        "EndSession",
        "PurchaseTokens",
        "MoveTokenPack",
    ]


def test_ad2_newest_first_and_paged_without_a_gap_or_a_repeat(desk: Desk) -> None:
    for n in range(7):
        desk.buy("alpha", n + 1)
    whole = events(desk)
    assert len(whole) == 5 + 2 + 7  # the sheet, the team and its first purchase, seven more
    times = [e["event_id"] for e in whole]
    assert times == sorted(times, reverse=True)  # ids grow with time: newest first
    first = desk.a("ListAuditEvents", {"page_size": 3})
    assert [e["event_id"] for e in first["events"]] == times[:3]
    assert first["next_page_token"]
    assert events(desk, page_size=3) == whole
    assert events(desk, page_size=1000) == whole
    last = desk.a("ListAuditEvents", {"page_size": len(whole)})
    assert last["events"] == whole and "next_page_token" not in last
    with pytest.raises(GrpcurlError) as info:
        desk.a("ListAuditEvents", {"page_token": "bm90LWEtdG9rZW4"})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in info.value.field_violations
    with pytest.raises(GrpcurlError) as info:
        desk.a("ListAuditEvents", {"team_id": "nope"})
    assert info.value.code is grpc.StatusCode.NOT_FOUND


def test_ad2_a_refused_call_leaves_no_event(desk: Desk) -> None:
    before = events(desk)
    for method, body in [
        ("PurchaseTokens", {"team_id": "alpha", "tokens": 0, "request_id": "x"}),
        ("PurchaseTokens", {"team_id": "nope", "tokens": 5, "request_id": "y"}),
        ("CreateTeam", {"team_id": "alpha"}),  # exists
        ("EndSession", {"session_id": "nope"}),
        ("AcceptInvitation", {"invitation_token": "tsi_not-a-token"}),
    ]:
        with pytest.raises(GrpcurlError):
            desk.admin(A + method, body, token="" if method == "AcceptInvitation" else None)
    with pytest.raises(GrpcurlError) as info:
        desk.admin(A + "CreateTeam", {"team_id": "gamma"}, token="wrong")
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert events(desk) == before


def test_ad2_a_team_administrators_events_carry_its_key(desk: Desk, server: ServerThread) -> None:
    desk.team("beta")
    made = desk.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    key_id = made["key"]["admin_key_id"]
    team_admin = Grpcurl(server.target, made["admin_key"])
    try:
        body = {"team_id": "alpha", "tokens": 5, "request_id": "ta-1"}
        pack = team_admin(A + "PurchaseTokens", body)["token_pack"]["pack_id"]
        with pytest.raises(GrpcurlError) as info:  # another team's: refused, no event
            team_admin(A + "PurchaseTokens", {**body, "team_id": "beta", "request_id": "ta-2"})
        assert info.value.reason == "NOT_TEAM_ADMIN"
        mine = team_admin(A + "ListAuditEvents", {"team_id": "alpha"})["events"]
        # Not every team's trail, nor another team's.
        with pytest.raises(GrpcurlError) as info:
            team_admin(A + "ListAuditEvents", {})
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "team_id" in info.value.field_violations
        with pytest.raises(GrpcurlError) as info:
            team_admin(A + "ListAuditEvents", {"team_id": "beta"})
        assert info.value.reason == "NOT_TEAM_ADMIN"
    finally:
        team_admin.close()
    assert {e["team_id"] for e in mine} == {"alpha"}
    newest = mine[0]
    assert (newest["method"], newest["actor"], newest["actor_name"]) == (
        "PurchaseTokens",
        key_id,
        "Alpha's admin",
    )
    assert (newest["team_id"], newest["target"], newest["request_id"]) == ("alpha", pack, "ta-1")
    assert [e["method"] for e in events(desk, "beta")] == ["CreateTeam"]


def _events_seen_by(desk: Desk, server: ServerThread, team: str) -> list[dict[str, Any]]:
    """The trail of ``team`` as a key for that team alone reads it."""
    key = desk.a("CreateAdminKey", {"display_name": f"{team}'s", "team_ids": [team]})
    reader = Grpcurl(server.target, key["admin_key"])
    try:
        events: list[dict[str, Any]] = reader(A + "ListAuditEvents", {"team_id": team})["events"]
        return events
    finally:
        reader.close()


def test_ad1_ad2_an_event_read_in_another_teams_trail_names_no_team_the_key_does_not_manage(
    desk: Desk, server: ServerThread
) -> None:
    """The operator unassigns ann from alpha, which ends her ACADEL in beta (A6, P4):
    the event is in beta's trail, and its request says alpha as "(another team)" to
    beta's key. The same for a pack alpha moved to beta, read in alpha's trail. The
    operator reads every name."""
    desk.team("beta", 50)
    ann = desk.user("alpha", "ann", products=["ACAD"])
    host = desk.entitle(ann)["session_id"]
    desk.a("ImportUsers", {"team_id": "beta", "users": [ann], "product_ids": ["ACADEL"]})
    desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="beta")
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": ann})
    (event, *_) = _events_seen_by(desk, server, "beta")
    assert (event["method"], event["team_id"]) == ("UnassignUser", "beta")
    assert event["request"]["team_id"] == "(another team)"
    assert "alpha" not in json.dumps(event)

    pack = desk.buy("alpha", 10)["pack_id"]
    desk.a("MoveTokenPack", {"pack_id": pack, "to_team_id": "beta"})
    (event, *_) = _events_seen_by(desk, server, "alpha")
    assert (event["method"], event["team_id"]) == ("MoveTokenPack", "alpha")
    assert event["request"]["to_team_id"] == "(another team)"
    (event, *_) = desk.a("ListAuditEvents", {"team_id": "alpha"})["events"]
    assert event["request"]["to_team_id"] == "beta"  # the operator's read


def test_ad2_the_request_id_header_wins_and_pasted_secrets_are_scrubbed(
    desk: Desk, server: ServerThread
) -> None:
    user = desk.user("alpha", "bob")
    key = desk.keys[user]
    channel = grpc.insecure_channel(server.target)
    try:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        md = [("authorization", f"Bearer {ADMIN_TOKEN}"), ("x-request-id", "hdr-7")]
        request = api.UpdateTeamSettingsRequest(team_id="alpha", display_name=f"Alpha {key}")
        stub.UpdateTeamSettings(request, metadata=md, timeout=30)
    finally:
        channel.close()
    newest = events(desk, "alpha")[0]
    assert (newest["method"], newest["request_id"]) == ("UpdateTeamSettings", "hdr-7")
    assert newest["request"]["team_id"] == "alpha"
    assert newest["request"]["display_name"].startswith("Alpha ")
    assert key[4:] not in json.dumps(newest)  # a key pasted into a name is not kept


def test_ad2_an_empty_request_id_header_leaves_the_requests_own(
    desk: Desk, server: ServerThread
) -> None:
    """A blank ``x-request-id`` names nothing: the audit event keeps the request's
    own ``request_id``, as if the header had not been sent."""
    channel = grpc.insecure_channel(server.target)
    try:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        md = [("authorization", f"Bearer {ADMIN_TOKEN}"), ("x-request-id", " ")]
        request = api.PurchaseTokensRequest(team_id="alpha", tokens=5, request_id="po-9")
        stub.PurchaseTokens(request, metadata=md, timeout=30)
    finally:
        channel.close()
    newest = events(desk, "alpha")[0]
    assert (newest["method"], newest["request_id"]) == ("PurchaseTokens", "po-9")


@pytest.mark.parametrize(
    "token", ["probe-admin-token-0123456789abcdef", 'a "quoted" token', '","', "team_id"]
)
def test_ad2_the_admin_token_never_lands_in_the_trail_whatever_its_shape(token: str) -> None:
    """--admin-token may be any text, so the scrubber, which knows the shapes of
    the server's own secrets, may not see it: pasted as an x-request-id or into a
    name, it would be kept for every administrator of the team to read. It is taken
    out of the request's strings, not its JSON text: a token that is JSON's own
    punctuation or a field's name leaves the request whole and readable."""
    drafts: list[Draft] = []

    class Trail:
        def begin(self, draft: Draft) -> None:
            drafts.append(draft)

    record = AuditRecorder(cast(AuditTrail, Trail()), token)
    request = api.UpdateTeamSettingsRequest(team_id="alpha", display_name=f"Alpha {token}")
    record("UpdateTeamSettings", request, THE_OPERATOR, ("alpha",), token)
    (draft,) = drafts
    assert token not in draft.request_id + draft.target
    assert draft.request_id == "\u2026"
    assert json.loads(draft.request) == {"team_id": "alpha", "display_name": "Alpha \u2026"}


def test_ad2_the_admin_token_straddling_where_a_long_text_is_cut_is_not_kept() -> None:
    """A request id, a target or a name is cut to about 1 KB: the admin token across
    the cut was kept all but its last characters (it was taken out after the cut)."""
    token = "correct-horse-battery-staple-admin"
    drafts: list[Draft] = []

    class Trail:
        def begin(self, draft: Draft) -> None:
            drafts.append(draft)

    users = [f"User {i:02d} <u{i:02d}@example.com>" for i in range(33)]
    used = len(", ".join(users)) + 2
    users.append(f"{'n' * (1021 - used - 30)}{token} <t@example.com>")
    # A request over 16,384 characters has each string cut to 1,024: one across it.
    long_name = "n" * 1014 + token + "n" * 16_000
    request = api.ImportUsersRequest(team_id="alpha", users=[*users, f"{long_name} <l@x.io>"])
    header = "x" * (1021 - 30) + token
    AuditRecorder(cast(AuditTrail, Trail()), token)(
        "ImportUsers", request, THE_OPERATOR, ("alpha",), header
    )
    (draft,) = drafts
    for text in (draft.request_id, draft.target, draft.request):
        assert token[:10] not in text


def test_ad2_team_settings_that_change_nothing_leave_no_event(desk: Desk) -> None:
    """AD2: a change that succeeds leaves one event; a request that changes nothing
    (nothing named, or what is already there) leaves none, as other repeats do."""
    before = len(events(desk, "alpha"))
    settings = {"team_id": "alpha", "low_balance_threshold": 500, "display_name": "Alpha Ltd"}
    desk.a("UpdateTeamSettings", settings)
    assert len(events(desk, "alpha")) == before + 1
    desk.a("UpdateTeamSettings", settings)  # the same again
    desk.a("UpdateTeamSettings", {"team_id": "alpha"})  # nothing named
    desk.a("UpdateTeamSettings", {"team_id": "alpha", "plan": "PLAN_STANDARD"})  # as it is
    assert len(events(desk, "alpha")) == before + 1
    team = desk.a("GetTeam", {"team_id": "alpha"})["team"]
    assert (team["display_name"], team["low_balance_threshold"]) == ("Alpha Ltd", "500")


def test_ad2_a_product_upserted_as_it_is_leaves_no_event(desk: Desk) -> None:
    """UpsertProduct with the product exactly as the sheet has it changes nothing:
    no event, as other repeats; a change of one field is one event."""
    before = len(events(desk))
    (acad,) = [p for p in SHEET if p["product_id"] == "ACAD"]
    desk.a("UpsertProduct", {"product": acad})
    assert len(events(desk)) == before
    desk.a("UpsertProduct", {"product": {**acad, "display_name": "AutoCAD 2"}})
    assert summary(events(desk))[0][0] == "UpsertProduct"
    assert len(events(desk)) == before + 1


def test_ad2_advancing_the_clock_by_nothing_leaves_no_event(desk: Desk) -> None:
    """AD2: AdvanceClock by 0s, or to the time it already shows, changes nothing and
    leaves no event, as other calls that change nothing; a move of a second does."""
    before = len(events(desk))
    now = desk.now()
    assert desk.a("AdvanceClock", {"by": "0s"})["now"] == now
    assert desk.a("AdvanceClock", {"to_time": now})["now"] == now
    assert len(events(desk)) == before
    desk.advance(1)
    assert summary(events(desk))[0] == ("AdvanceClock", "operator", "", "")
    assert len(events(desk)) == before + 1


def test_ad2_a_device_removed_by_a_team_administrator_is_in_its_teams_trail(
    desk: Desk, server: ServerThread
) -> None:
    """The event names the team whose session the removal ended, first: gamma's
    administrator finds it in gamma's trail, though bob's teams sort alpha first.
    bob's other teams read it too, each in its own trail."""
    desk.team("beta")
    desk.team("gamma", 100)
    for team in ("alpha", "beta", "gamma"):
        user = desk.user(team, "bob")  # a member of three teams
    session = desk.entitle(user, team_id="gamma")  # registers dev-1, paid by gamma
    assert session["team_id"] == "gamma"
    made = desk.a("CreateAdminKey", {"display_name": "Gamma's admin", "team_ids": ["gamma"]})
    team_admin = Grpcurl(server.target, made["admin_key"])
    try:
        body = {"user_id": user, "product_id": "ACAD", "device_id": "dev-1", "end_sessions": True}
        team_admin(A + "RemoveDevice", body)
        mine = team_admin(A + "ListAuditEvents", {"team_id": "gamma"})["events"]
    finally:
        team_admin.close()
    assert summary(mine)[0] == ("RemoveDevice", made["key"]["admin_key_id"], "gamma", "dev-1")
    # Its second team is the user's first other team, and the rest its more teams
    # (beta's was left out while an event named two teams at most).
    key_id = made["key"]["admin_key_id"]
    for team in ("alpha", "beta"):
        found = [e for e in summary(events(desk, team)) if e[0] == "RemoveDevice"]
        assert found == [("RemoveDevice", key_id, team, "dev-1")], team


def test_ad2_the_quick_secret_check_never_misses_what_scrub_finds() -> None:
    """``scrub`` searches a string only when ``may_hold_secret`` says it may hold a
    secret (scrubbing every name of a 40,000-user import cost a second, and every
    string of every log line ~1.6 us): it must never say no where the search finds one."""
    assert all("_" in prefix for prefix in _PREFIXES)  # what its first quick "no" relies on
    bare = secrets.token_urlsafe(32)
    samples = [
        f"tsk_{bare}",
        f"tsi_{bare}",
        f"tsa_{bare}",
        bare,
        f"Name <a@b.c> {bare}!",
        "tsk_12345678",
        "A" * 16 + "b" * 16,
        "Zoë O'Brien <zoe@example.com>",
        "0123456789abcdef" * 4,  # hex: no mixed case
        "a" * 31,
        "A" * 15 + "b" * 16,  # 31: too short
        "",
        "2026-12-01T20:40:00.123456Z",
    ]
    found = 0
    for text in samples:
        if SECRET.sub("\\1\u2026", text) != text:
            found += 1
            assert may_hold_secret(text), text
            assert scrub(text) != text
        else:
            assert scrub(text) == text
    assert found == 7
    assert not may_hold_secret("Zoë O'Brien <zoe@example.com>")
    assert not may_hold_secret("2026-12-01T20:40:00.123456Z")
    many = api.ImportUsersRequest(
        team_id="t", users=[f"U{i} <u{i}@x.io>" for i in range(9)] + [bare]
    )
    assert bare not in request_json(many)


# Pieces that make up secret-shaped text and text that nearly is: the prefixes,
# their near misses, runs of URL-safe base64 of both cases, and what log lines
# hold between them.
_PIECES = st.sampled_from(
    ["tsk_", "tsi_", "tsa_", "ts", "tsx_", "k_", "_", "-", "/", ".", " ", "é", "A", "b", "7"]
)
_RUNS = st.text(alphabet="ABCxyz019_-", min_size=1, max_size=40)


@given(st.lists(st.one_of(_PIECES, _RUNS), max_size=12).map("".join))
def test_ad2_the_quick_secret_check_never_misses_what_scrub_finds_in_any_text(text: str) -> None:
    """The same rule over generated text: wherever the search finds a secret,
    ``may_hold_secret`` said it may hold one."""
    if SECRET.sub("\\1\u2026", text) != text:
        assert may_hold_secret(text), text


def test_ad2_a_large_import_is_kept_short_in_the_trail(desk: Desk) -> None:
    users = [f"User {i} <user{i}@example.com>" for i in range(600)]
    desk.a("ImportUsers", {"team_id": "alpha", "users": users, "all_products": True})
    newest = events(desk, "alpha")[0]
    assert newest["method"] == "ImportUsers"
    assert newest["request"]["users"] == [*users[:100], "\u2026 and 500 more"]
    assert newest["request"]["all_products"] is True
    assert newest["target"].startswith("User 0 <user0@example.com>, User 1 <")
    assert len(newest["target"].encode()) <= 1024


# -- an event of three teams (a host whose plugins run in two other teams) -----------


def three_team_host(desk: Desk) -> tuple[str, str, str, str]:
    """ann's ACAD in alpha (on dev-1) with an ACADEL plugin paid by beta and a
    FREEPLUG plugin paid by gamma: ending the host ends sessions of three teams (P4).
    Returns ann, the host's and the plugins' session ids."""
    for team in ("alpha", "beta", "gamma"):
        desk.team(team, 100)
    ann = desk.user("alpha", "ann")
    host = desk.entitle(ann)["session_id"]
    desk.a("ImportUsers", {"team_id": "beta", "users": [ann], "product_ids": ["ACADEL"]})
    desk.a("ImportUsers", {"team_id": "gamma", "users": [ann], "product_ids": ["FREEPLUG"]})
    beta = desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="beta")["session_id"]
    gamma = desk.entitle(ann, "FREEPLUG", parent_session_id=host, team_id="gamma")["session_id"]
    return ann, host, beta, gamma


def _in_each_trail(desk: Desk, method: str, target: str, actor: str) -> None:
    """The one event of ``method`` about ``target`` is in alpha's, beta's and gamma's
    trails, once each, saying the team whose trail it is read in; once in every
    team's; and gamma's trail pages over it without a gap or a repeat."""
    for team in ("alpha", "beta", "gamma"):
        found = [e for e in summary(events(desk, team)) if e[0] == method and e[3] == target]
        assert found == [(method, actor, team, target)], team
    everyone = [e for e in summary(events(desk)) if e[0] == method and e[3] == target]
    assert everyone == [(method, actor, "alpha", target)]  # its first team
    assert events(desk, "gamma", page_size=1) == events(desk, "gamma")


def test_ad2_an_end_session_by_a_key_of_three_teams_is_in_each_teams_trail(
    sheet_desk: Desk, server: ServerThread
) -> None:
    """EndSession of a host whose plugins run in beta and gamma, by a key managing
    the three: the event is read in all three trails (it once named two teams only,
    and gamma, whose session it ended, never saw it)."""
    desk = sheet_desk
    _, host, in_beta, in_gamma = three_team_host(desk)
    made = desk.a(
        "CreateAdminKey", {"display_name": "All three", "team_ids": ["alpha", "beta", "gamma"]}
    )
    key = Grpcurl(server.target, made["admin_key"])
    try:
        key(A + "EndSession", {"session_id": host})
        seen = key(A + "ListAuditEvents", {"team_id": "gamma"})["events"]
    finally:
        key.close()
    ended = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert {ended[s]["end_reason"] for s in (in_beta, in_gamma)} == {"END_REASON_HOST_ENDED"}
    key_id = made["key"]["admin_key_id"]
    _in_each_trail(desk, "EndSession", host, key_id)
    assert summary(seen)[0] == ("EndSession", key_id, "gamma", host)  # the key's own read
    # gamma's own administrator finds it too, naming no other team.
    (event, *_) = _events_seen_by(desk, server, "gamma")
    assert (event["method"], event["team_id"], event["target"]) == ("EndSession", "gamma", host)


def test_ad2_a_device_removed_by_the_operator_ending_three_teams_sessions_is_in_each_trail(
    sheet_desk: Desk,
) -> None:
    desk = sheet_desk
    ann, _, _, in_gamma = three_team_host(desk)
    body = {"user_id": ann, "product_id": "ACAD", "device_id": "dev-1", "end_sessions": True}
    desk.a("RemoveDevice", body)
    ended = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert ended[in_gamma]["state"] == "SESSION_STATE_ENDED"
    _in_each_trail(desk, "RemoveDevice", "dev-1", "operator")


def test_ad2_guest_defaults_turned_off_ending_another_team_s_plugin_is_in_its_trail(
    sheet_desk: Desk,
) -> None:
    """Ann is a guest of alpha, whose defaults (AutoCAD) apply to guests, and runs
    AutoCAD there with an AutoCAD Electrical plugin paid by beta. Turning the
    guests' defaults off (A5) ends her AutoCAD (A6) and its plugin (P4): beta's
    trail reads the call that ended its session, as it reads SetDefaultAssignments
    or UnassignUser doing the same (it did not)."""
    desk = sheet_desk
    desk.team("alpha", 100)
    desk.team("beta", 100)
    desk.a("UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": True})
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD"]})
    ann = desk.user("alpha", "ann", products=[], guest=True)
    desk.user("beta", "ann", products=["ACADEL"])
    host = desk.entitle(ann)
    plug = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    assert (host["team_id"], plug["team_id"]) == ("alpha", "beta")
    desk.to(at(m=1))
    desk.a("UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": False})
    assert desk.heartbeat(ann, plug["session_id"])["end_reason"] == "END_REASON_HOST_ENDED"
    (event, *_) = desk.a("ListAuditEvents", {"team_id": "beta"})["events"]
    assert (event["method"], event["team_id"], event["target"]) == (
        "UpdateTeamSettings",
        "beta",
        "alpha",
    )


def _trail(desk: Desk, team_id: str) -> list[str]:
    return [e["method"] for e in desk.a("ListAuditEvents", {"team_id": team_id}).get("events", [])]


def test_ad2_c2_a_trial_ended_ending_a_teams_session_is_in_that_teams_trail(desk: Desk) -> None:
    """Cat's trial of Revit ends at the operator's word (AD3): her session goes on
    under tokens (C2), which poor (5 tokens) cannot pay, so it ends. poor's trail
    reads the call that ended it (it held only its own calls: the event named no
    team); alpha's, where Cat runs nothing, does not, nor poor's the trial's start,
    which touched no session of poor's (Cat opened hers after it)."""
    desk.team("poor", 5)
    cat = desk.user("poor", "cat")
    trial = desk.a("StartTrial", {"user_id": cat, "product_id": "REVIT", "end_time": at(d=7)})
    session = desk.entitle(cat, "REVIT")
    desk.to(at(h=3))
    desk.a("EndSubscription", {"subscription_id": trial["subscription"]["subscription_id"]})
    ended = desk.heartbeat(cat, session["session_id"])
    assert ended["end_reason"] == "END_REASON_INSUFFICIENT_TOKENS"
    assert _trail(desk, "poor") == [
        "EndSubscription",
        "ImportUsers",
        "PurchaseTokens",
        "CreateTeam",
    ]
    assert "EndSubscription" not in _trail(desk, "alpha")


def test_ad2_c1_c2_coverage_given_and_ended_is_in_the_trail_of_the_team_that_pays(
    desk: Desk,
) -> None:
    """Ann opens Revit in alpha, which holds 10 tokens for its grace. A subscription
    granted two minutes later gives the hold back (C1); ended two hours later,
    alpha holds 10 again (C2). Both calls are in alpha's trail, beside the
    holds they made and gave back."""
    ann = desk.user("alpha", "ann")
    desk.entitle(ann, "REVIT")
    desk.to(at(m=2))
    sub = desk.a(
        "GrantSubscription",
        {"user_id": ann, "product_id": "REVIT", "start_time": at(m=2), "end_time": at(d=30)},
    )
    desk.to(at(h=2))
    desk.a("EndSubscription", {"subscription_id": sub["subscription"]["subscription_id"]})
    assert desk.token_moves("alpha")[-3:] == [
        ("HOLD", 10, at()),
        ("HOLD_RELEASE", 10, at(m=2)),
        ("HOLD", 10, at(h=2)),
    ]
    assert _trail(desk, "alpha")[:2] == ["EndSubscription", "GrantSubscription"]


def test_ad1_ad2_a_move_read_in_the_new_teams_trail_names_not_the_team_it_left(
    desk: Desk, server: ServerThread
) -> None:
    """A pack bought for alpha and moved to beta naming `from_team_id` (as the
    portal always does): beta's own administrator reads the event in beta's
    trail, and must not learn alpha's name (AD1; docs/api.md: "(another team)",
    "as the audit trail does")."""
    desk.team("beta", 50)
    pack = desk.buy("alpha", 10)["pack_id"]
    desk.a("MoveTokenPack", {"pack_id": pack, "to_team_id": "beta", "from_team_id": "alpha"})
    (event, *_) = _events_seen_by(desk, server, "beta")
    assert (event["method"], event["team_id"]) == ("MoveTokenPack", "beta")
    assert event["request"]["from_team_id"] == "(another team)", event["request"]
    assert "alpha" not in json.dumps(event)


def test_ad1_ad2_an_event_about_another_teams_settings_names_it_not_by_its_target(
    sheet_desk: Desk, server: ServerThread
) -> None:
    """Ann runs AutoCAD in alpha through alpha's default set, with an AutoCAD
    Electrical plugin paid by beta. Clearing alpha's default set ends both (A6,
    P4), so the event is in beta's trail (AD2). Beta's own administrator reads it:
    the request's team_id is "(another team)", but `target` still says "alpha"."""
    desk = sheet_desk
    desk.team("alpha", 100)
    desk.team("beta", 100)
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD"]})
    ann = desk.user("alpha", "ann", products=[])
    desk.user("beta", "ann", products=["ACADEL"])
    host = desk.entitle(ann)
    plug = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    assert (host["team_id"], plug["team_id"]) == ("alpha", "beta")
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": []})
    assert desk.heartbeat(ann, plug["session_id"])["end_reason"] == "END_REASON_HOST_ENDED"
    (event, *_) = _events_seen_by(desk, server, "beta")
    assert (event["method"], event["team_id"]) == ("SetDefaultAssignments", "beta")
    assert event["request"]["team_id"] == "(another team)"
    assert "alpha" not in json.dumps(event), event
