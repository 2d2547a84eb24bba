"""RULES AD1, over the wire: what a team administrator's key may call.

Every AdminService method, read from the service's descriptor through
reflection (as grpcurl sees it), must have a rule in ``server/api/methods.py``
and a request here. With a key that manages teams ``alpha`` and ``gamma``:

- a call about its own team is never refused for its scope;
- a team-scoped call naming ``beta`` is ``NOT_TEAM_ADMIN`` (PERMISSION_DENIED)
  with ``method`` and ``team_id`` in its ErrorInfo (and ``user_id`` for a call
  about a user's devices, where one of the user's teams is enough);
- each of the operator's methods is ``OPERATOR_ONLY`` whatever it names, and so
  is setting an operator-only field (a team's plan, its guests' defaults);
- moving a pack needs both teams; listings show only its teams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import grpc
import pytest

from server.api import paging
from server.api.methods import RULES, Scope
from tessera_api.tessera.v1 import admin_service_pb2 as admin_pb2
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import SHEET, Desk
from tests.support import ServerThread

SERVICE = "tessera.v1.AdminService"


@dataclass
class Side:
    """What a call is about: a team, one of its users, a session, a pack."""

    team: str
    user: str
    session: str
    pack: str
    to_team: str  # where MoveTokenPack sends the pack
    invited: str  # a member with a pending invitation


Body = Callable[[Side], dict[str, Any]]

# A request for every AdminService method, about the given side.
BODIES: dict[str, Body] = {
    "GetServerInfo": lambda s: {},
    "AdvanceClock": lambda s: {"by": "60s"},
    "CreateTeam": lambda s: {"team_id": f"new-{s.team}"},
    "GetTeam": lambda s: {"team_id": s.team},
    "ListTeams": lambda s: {},
    "UpdateTeamSettings": lambda s: {"team_id": s.team, "display_name": "Renamed"},
    "PurchaseTokens": lambda s: {"team_id": s.team, "tokens": 5, "request_id": str(uuid4())},
    "ListTokenPacks": lambda s: {"team_id": s.team},
    "MoveTokenPack": lambda s: {"pack_id": s.pack, "to_team_id": s.to_team},
    "ListLedgerEntries": lambda s: {"team_id": s.team},
    "UpsertProduct": lambda s: {"product": SHEET[1]},
    "ListProducts": lambda s: {},
    "AssignUsers": lambda s: {
        "team_id": s.team,
        "users": [f"Dan <dan.{s.team}@example.com>"],
        "all_products": True,
    },
    "ImportUsers": lambda s: {
        "team_id": s.team,
        "users": [f"Eve <eve.{s.team}@example.com>"],
        "all_products": True,
    },
    "UnassignUser": lambda s: {"team_id": s.team, "user_id": f"eve.{s.team}@example.com"},
    "SetUserProducts": lambda s: {"team_id": s.team, "user_id": s.user, "all_products": True},
    "GetMember": lambda s: {"team_id": s.team, "user_id": s.user},
    "ListMembers": lambda s: {"team_id": s.team},
    "SetDefaultAssignments": lambda s: {"team_id": s.team, "product_ids": ["VIEWER"]},
    "ResendInvitation": lambda s: {"team_id": s.team, "user_id": s.invited},
    "AcceptInvitation": lambda s: {"invitation_token": "tsi_not-one-this-server-gave"},
    "IssueUserKey": lambda s: {"user_id": s.user},
    "ListNotifications": lambda s: {"team_id": s.team},
    "GrantSubscription": lambda s: {"user_id": s.user, "product_id": "REVIT"},
    "StartTrial": lambda s: {"user_id": s.user, "product_id": "REVIT"},
    "ListSubscriptions": lambda s: {"user_id": s.user},
    "EndSubscription": lambda s: {"subscription_id": "sub_none"},
    "ListDevices": lambda s: {"user_id": s.user, "product_id": "ACAD"},
    "RemoveDevice": lambda s: {"user_id": s.user, "product_id": "ACAD", "device_id": "dev-9"},
    "ListSessions": lambda s: {"team_id": s.team},
    "EndSession": lambda s: {"session_id": s.session},
    "GetUsageReport": lambda s: {"team_id": s.team},
    "CreateAdminKey": lambda s: {"display_name": "Another", "team_ids": [s.team]},
    "ListAdminKeys": lambda s: {},
    "RevokeAdminKey": lambda s: {"admin_key_id": "ak_none"},
    "ListAuditEvents": lambda s: {"team_id": s.team},
    "SearchUsers": lambda s: {"team_id": s.team, "query": "a"},
}

SCOPE_REFUSALS = {"NOT_TEAM_ADMIN", "OPERATOR_ONLY"}


@dataclass
class World:
    desk: Desk
    key: str  # manages alpha and gamma
    own: Side
    other: Side

    def call(self, method: str, body: dict[str, Any], token: str | None = None) -> Any:
        return self.desk.admin(f"{SERVICE}/{method}", body, token=token or self.key)

    def refused(self, method: str, body: dict[str, Any], reason: str) -> GrpcurlError:
        with pytest.raises(GrpcurlError) as info:
            self.call(method, body)
        err = info.value
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason), (
            f"{method}: {err}"
        )
        assert err.metadata["method"] == method
        return err


def _side(desk: Desk, team: str, user: str, to_team: str) -> Side:
    desk.team(team, 100)
    user_id = desk.user(team, user)
    session = desk.entitle(user_id)["session_id"]
    invited = f"ivy.{team}@example.com"
    desk.a("AssignUsers", {"team_id": team, "users": [f"Ivy <{invited}>"], "all_products": True})
    spare = desk.buy(team, 50)["pack_id"]  # no session holds tokens of it: it may move
    return Side(team, user_id, session, spare, to_team, invited)


@pytest.fixture
def world(sheet_desk: Desk) -> Iterator[World]:
    desk = sheet_desk
    own = _side(desk, "alpha", "ann", "gamma")
    other = _side(desk, "beta", "bob", "alpha")
    desk.team("gamma")
    made = desk.a(
        "CreateAdminKey", {"display_name": "Alpha and gamma", "team_ids": ["alpha", "gamma"]}
    )
    yield World(desk, made["admin_key"], own, other)


def methods(desk: Desk) -> list[str]:
    service = desk.admin.pool.FindServiceByName(SERVICE)
    return [m.name for m in service.methods]


def test_ad1_every_admin_method_has_a_rule_and_a_request_here(sheet_desk: Desk) -> None:
    found = methods(sheet_desk)
    assert len(found) >= 37
    assert [m for m in found if m not in RULES] == []
    assert sorted(BODIES) == sorted(found)


def test_ad1_a_team_key_for_its_own_teams_is_never_refused_for_scope(world: World) -> None:
    answered = {}
    for method in methods(world.desk):
        if RULES[method].scope is Scope.OPERATOR:
            continue
        try:
            world.call(method, BODIES[method](world.own))
            answered[method] = "OK"
        except GrpcurlError as err:
            assert err.reason not in SCOPE_REFUSALS, f"{method}: {err}"
            assert err.code is not grpc.StatusCode.PERMISSION_DENIED, f"{method}: {err}"
            answered[method] = err.reason
    # The calls whose request is valid for its own team succeed outright.
    for method in (
        "GetTeam",
        "ListTeams",
        "UpdateTeamSettings",
        "PurchaseTokens",
        "MoveTokenPack",
        "ListTokenPacks",
        "ListLedgerEntries",
        "AssignUsers",
        "ImportUsers",
        "UnassignUser",
        "SetUserProducts",
        "GetMember",
        "ListMembers",
        "SetDefaultAssignments",
        "ResendInvitation",
        "ListNotifications",
        "ListDevices",
        "ListSessions",
        "EndSession",
        "GetUsageReport",
        "GetServerInfo",
        "ListProducts",
    ):
        assert answered[method] == "OK", f"{method}: {answered[method]}"
    assert answered["AcceptInvitation"] == "UNKNOWN_INVITATION"  # no credential needed at all


def beta(desk: Desk) -> list[Any]:
    """What a team administrator of alpha must not change in beta."""
    members = desk.a("ListMembers", {"team_id": "beta"})["members"]
    return [
        desk.balance("beta"),
        desk.packs("beta"),
        members,
        desk.sessions("beta"),
        desk.a("GetTeam", {"team_id": "beta"}),
    ]


def test_ad1_a_team_key_naming_another_team_is_not_team_admin(world: World) -> None:
    before = beta(world.desk)
    checked = []
    for method in methods(world.desk):
        rule = RULES[method]
        if rule.scope not in (Scope.TEAM, Scope.LISTING) or method == "ListTeams":
            continue
        err = world.refused(method, BODIES[method](world.other), "NOT_TEAM_ADMIN")
        if rule.any_team:  # about bob's devices: none of bob's teams is the key's, and
            # the refusal does not say which they are (the call named none)
            assert err.metadata["user_id"] == "bob@example.com"
            assert "team_id" not in err.metadata and "beta" not in err.message, method
        elif rule.found_by:  # a session or a pack of beta's: named, not its team
            assert rule.found_by in err.metadata, f"{method}: {err.metadata}"
            assert "team_id" not in err.metadata and "beta" not in err.message, method
        else:
            assert err.metadata["team_id"] == "beta", f"{method}: {err.metadata}"
        checked.append(method)
    assert len(checked) >= 20
    assert beta(world.desk) == before  # nothing was done in beta


def test_ad1_the_operators_methods_are_operator_only_for_a_team_key(world: World) -> None:
    operators = [m for m in methods(world.desk) if RULES[m].scope is Scope.OPERATOR]
    assert set(operators) >= {
        "AdvanceClock",
        "CreateTeam",
        "UpsertProduct",
        "IssueUserKey",
        "GrantSubscription",
        "StartTrial",
        "ListSubscriptions",
        "EndSubscription",
        "CreateAdminKey",
        "ListAdminKeys",
        "RevokeAdminKey",
    }
    for method in operators:
        for side in (world.own, world.other):
            err = world.refused(method, BODIES[method](side), "OPERATOR_ONLY")
            assert err.metadata == {"method": method}
    assert world.desk.now() == "2026-01-01T00:00:00Z"  # the clock did not move
    assert [k["display_name"] for k in world.desk.a("ListAdminKeys")["keys"]] == ["Alpha and gamma"]


@pytest.mark.parametrize(
    ("field", "value"), [("plan", "PLAN_PREMIUM"), ("guest_default_assignments", True)]
)
def test_ad1_operator_fields_are_operator_only_for_a_team_key(
    world: World, field: str, value: Any
) -> None:
    body = {"team_id": "alpha", field: value}
    err = world.refused("UpdateTeamSettings", body, "OPERATOR_ONLY")
    assert err.metadata == {"method": "UpdateTeamSettings", "field": field}
    # What the team's administrator may set still works; the operator may set both.
    team = world.call("UpdateTeamSettings", {"team_id": "alpha", "low_balance_threshold": 7})
    assert team["team"]["low_balance_threshold"] == "7"
    world.desk.a("UpdateTeamSettings", body)


def test_ad1_moving_a_pack_needs_both_teams(world: World) -> None:
    alpha_pack, beta_pack = world.own.pack, world.other.pack
    err = world.refused(
        "MoveTokenPack", {"pack_id": alpha_pack, "to_team_id": "beta"}, "NOT_TEAM_ADMIN"
    )
    assert err.metadata["team_id"] == "beta"
    err = world.refused(
        "MoveTokenPack", {"pack_id": beta_pack, "to_team_id": "alpha"}, "NOT_TEAM_ADMIN"
    )
    assert err.metadata == {"method": "MoveTokenPack", "pack_id": beta_pack}  # not its team
    assert "beta" not in err.message
    assert beta_pack in [p["pack_id"] for p in world.desk.packs("beta")]
    assert alpha_pack not in [p["pack_id"] for p in world.desk.packs("beta")]
    # A key for both teams moves it.
    both = world.desk.a("CreateAdminKey", {"display_name": "Both", "team_ids": ["alpha", "beta"]})
    moved = world.call(
        "MoveTokenPack", {"pack_id": beta_pack, "to_team_id": "alpha"}, both["admin_key"]
    )
    assert moved["token_pack"]["team_id"] == "alpha"


def test_ad1_listings_show_only_the_keys_teams(world: World) -> None:
    teams = world.call("ListTeams", {})["teams"]
    assert [t["team_id"] for t in teams] == ["alpha", "gamma"]
    assert [t["team_id"] for t in world.desk.a("ListTeams")["teams"]] == ["alpha", "beta", "gamma"]
    sessions = world.call("ListSessions", {"include_ended": True})["sessions"]
    assert [s["session_id"] for s in sessions] == [world.own.session]
    assert len(world.desk.sessions(include_ended=True)) == 2
    notes = world.call("ListNotifications", {})["notifications"]
    assert notes and {n["team_id"] for n in notes} == {"alpha"}
    assert {n["team_id"] for n in world.desk.a("ListNotifications")["notifications"]} == {
        "alpha",
        "beta",
    }
    # Paging a narrowed list: one at a time, still only its teams.
    first = world.call("ListTeams", {"page_size": 1})
    second = world.call("ListTeams", {"page_size": 1, "page_token": first["next_page_token"]})
    assert [first["teams"][0]["team_id"], second["teams"][0]["team_id"]] == ["alpha", "gamma"]
    assert "next_page_token" not in second


def test_ad1_the_audit_trail_needs_a_team_from_a_team_key(world: World) -> None:
    with pytest.raises(GrpcurlError) as info:
        world.call("ListAuditEvents", {})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert list(info.value.field_violations) == ["team_id"]
    world.refused("ListAuditEvents", {"team_id": "beta"}, "NOT_TEAM_ADMIN")


def test_ad1_a_key_for_a_users_other_team_still_sees_their_devices(world: World) -> None:
    """ListDevices is about a user: one of the user's teams is enough (any_team)."""
    world.desk.a(
        "ImportUsers", {"team_id": "gamma", "users": ["bob@example.com"], "all_products": True}
    )
    devices = world.call("ListDevices", {"user_id": "bob@example.com", "product_id": "ACAD"})
    assert [d["device_id"] for d in devices["devices"]] == ["dev-1"]
    # A user in no team at all is no team administrator's.
    world.desk.a("UnassignUser", {"team_id": "gamma", "user_id": "bob@example.com"})
    world.desk.a("UnassignUser", {"team_id": "beta", "user_id": "bob@example.com"})
    err = world.refused(
        "ListDevices", {"user_id": "bob@example.com", "product_id": "ACAD"}, "NOT_TEAM_ADMIN"
    )
    assert err.metadata["user_id"] == "bob@example.com"
    # An unknown user gets the same answer: whether a user outside the key's teams
    # exists is not the key's to learn (the operator is told UNKNOWN_USER).
    nobody = {"user_id": "nobody@example.com", "product_id": "ACAD"}
    assert world.refused("ListDevices", nobody, "NOT_TEAM_ADMIN").metadata == {
        "method": "ListDevices",
        "user_id": "nobody@example.com",
    }
    with pytest.raises(GrpcurlError) as info:
        world.desk.a("ListDevices", nobody)
    assert info.value.reason == "UNKNOWN_USER"


def test_ad1_a_request_id_another_team_used_is_refused_without_naming_it(world: World) -> None:
    """Purchase request ids are one namespace (T1: a retry never buys twice), so
    alpha may meet one beta used; the refusal says so without beta's name, pack
    or amount."""
    world.desk.a("PurchaseTokens", {"team_id": "beta", "tokens": 1000, "request_id": "po-b-1"})
    with pytest.raises(GrpcurlError) as info:
        world.call("PurchaseTokens", {"team_id": "alpha", "tokens": 7, "request_id": "po-b-1"})
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    assert "beta" not in str(err) and "1000" not in str(err)
    assert "pack_id" not in err.metadata and err.metadata["request_id"] == "po-b-1"


def test_ad1_a_team_key_reads_its_invitations_without_their_tokens(world: World) -> None:
    """User keys are the operator's: a team administrator who could read an
    invitation's token could accept it and hold that user's key (replacing the
    one the user has, for every team of theirs). The outbox shows it the
    invitations, and only the operator, who sends the mail, their tokens."""
    kind = "NOTIFICATION_KIND_INVITATION"
    theirs = world.call("ListNotifications", {"team_id": "alpha"})["notifications"]
    invites = {n["notification_id"]: n for n in theirs if n["kind"] == kind}
    assert [n["user_id"] for n in invites.values()] == [world.own.invited]
    assert all("invitation_token" not in n for n in invites.values())
    operators = world.desk.a("ListNotifications", {"team_id": "alpha"})["notifications"]
    tokens = {n["notification_id"]: n.get("invitation_token") for n in operators}
    assert all(tokens[i] and tokens[i].startswith("tsi_") for i in invites)


def test_ad1_a_device_removal_that_would_end_another_teams_session_is_not_team_admin(
    world: World,
) -> None:
    """One of the user's teams is enough to see or remove their device, but not to
    end a session another team runs on it: bob is imported into gamma (the key's),
    and his beta session on dev-1 stays beta's. Once it has ended, the device is
    the key's to remove."""
    desk, bob = world.desk, world.other.user
    desk.a("ImportUsers", {"team_id": "gamma", "users": [bob], "all_products": True})
    body = {"user_id": bob, "product_id": "ACAD", "device_id": "dev-1", "end_sessions": True}
    err = world.refused("RemoveDevice", body, "NOT_TEAM_ADMIN")
    assert "team_id" not in err.metadata and "beta" not in err.message
    (running,) = [s for s in desk.sessions("beta") if s["session_id"] == world.other.session]
    assert running["state"] == "SESSION_STATE_ACTIVE"
    desk.release(bob, world.other.session)
    world.call("RemoveDevice", body)
    assert world.call("ListDevices", {"user_id": bob, "product_id": "ACAD"}).get("devices") is None


def test_ad1_a_device_running_another_teams_session_is_refused_for_what_it_is(
    world: World,
) -> None:
    """bob is in beta (not the key's) and gamma (the key's), and his beta session
    runs on dev-1. Ending it is beta's: the refusal says so (the key does manage one
    of bob's teams). Without end_sessions the call would end nothing, so it is
    answered as it is for the operator and any device in use: DEVICE_IN_USE."""
    desk, bob = world.desk, world.other.user
    desk.a("ImportUsers", {"team_id": "gamma", "users": [bob], "all_products": True})
    body = {"user_id": bob, "product_id": "ACAD", "device_id": "dev-1"}
    err = world.refused("RemoveDevice", {**body, "end_sessions": True}, "NOT_TEAM_ADMIN")
    assert err.metadata["device_id"] == "dev-1" and "team_id" not in err.metadata
    assert "manages none" not in err.message
    assert "runs a session of a team this admin key does not manage" in err.message
    for token in (world.key, None):  # the key, then the operator: one answer
        with pytest.raises(GrpcurlError) as info:
            world.desk.admin(f"{SERVICE}/RemoveDevice", body, token=token)
        assert (info.value.code, info.value.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "DEVICE_IN_USE",
        )
    (running,) = [s for s in desk.sessions("beta") if s["session_id"] == world.other.session]
    assert running["state"] == "SESSION_STATE_ACTIVE"
    assert [d["device_id"] for d in desk.devices(bob)] == ["dev-1"]


def test_ad1_an_unknown_session_or_pack_is_unknown_to_a_team_key_too(world: World) -> None:
    with pytest.raises(GrpcurlError) as info:
        world.call("EndSession", {"session_id": "se_none"})
    assert info.value.reason == "UNKNOWN_SESSION"
    with pytest.raises(GrpcurlError) as info:
        world.call("MoveTokenPack", {"pack_id": "pk_none", "to_team_id": "alpha"})
    assert info.value.reason == "UNKNOWN_PACK"
    world.refused("MoveTokenPack", {"pack_id": "pk_none", "to_team_id": "beta"}, "NOT_TEAM_ADMIN")
    with pytest.raises(GrpcurlError) as info:
        world.call("GetTeam", {})
    assert list(info.value.field_violations) == ["team_id"]


def test_ad1_a_method_without_a_rule_is_refused_to_everyone(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: the edge reads the table at each call, so a method missing
    from it (here GetTeam, taken out) is refused, the operator included."""
    monkeypatch.delitem(RULES, "GetTeam")
    for token in (world.key, None):
        with pytest.raises(GrpcurlError) as info:
            world.desk.admin(f"{SERVICE}/GetTeam", {"team_id": "alpha"}, token=token)
        assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "no access rule" in info.value.message
    monkeypatch.undo()
    assert world.call("GetTeam", {"team_id": "alpha"})["team"]["team_id"] == "alpha"


def test_ad1_ending_a_session_whose_plugin_runs_in_another_team_is_not_team_admin(
    world: World,
) -> None:
    """P4: a host's end ends its plugins. ann's ACAD runs in alpha (the key's) and her
    ACADEL plugin on it in beta: ending the host would end beta's session, so the key
    is refused as a device removal would be (the refusal names no team) and nothing
    ends. The operator may: the event is in both teams' trails, each its own team's."""
    desk, ann, host = world.desk, world.own.user, world.own.session
    desk.a("ImportUsers", {"team_id": "beta", "users": [ann], "product_ids": ["ACADEL"]})
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="beta")["session_id"]
    err = world.refused("EndSession", {"session_id": host}, "NOT_TEAM_ADMIN")
    assert err.metadata["session_id"] == host
    assert "team_id" not in err.metadata and "beta" not in err.message
    states = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert states[host]["state"] == states[plugin]["state"] == "SESSION_STATE_ACTIVE"
    assert states[plugin]["team_id"] == "beta"

    desk.a("EndSession", {"session_id": host})  # the operator's
    states = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert states[plugin]["end_reason"] == "END_REASON_HOST_ENDED"
    for team in ("alpha", "beta"):
        (event, *_) = desk.a("ListAuditEvents", {"team_id": team})["events"]
        assert (event["method"], event["target"], event["team_id"]) == ("EndSession", host, team)


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("UnassignUser", {}),
        ("SetUserProducts", {"product_ids": ["REVIT"]}),
        ("SetDefaultAssignments", {"product_ids": []}),
        ("AssignUsers", {"guest": True}),
        ("ImportUsers", {"guest": True}),
    ],
)
def test_ad1_a6_taking_away_a_host_whose_plugin_runs_in_another_team_is_not_team_admin(
    world: World, method: str, body: dict[str, Any]
) -> None:
    """A6 ends the sessions of what a member loses, and P4 their plugins: ann's ACAD
    in alpha (the key's) carries her ACADEL in beta, so unassigning her, taking ACAD
    from her, or from alpha's defaults she has it through, or making her a guest (to
    whom the defaults do not apply, A5), would end beta's session: refused as
    EndSession is, naming no team, and nothing changes. The operator may: the event is
    in beta's trail too."""
    desk, ann, host = world.desk, world.own.user, world.own.session
    if method not in ("UnassignUser", "SetUserProducts"):  # ACAD hers by the defaults
        desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD"]})
        desk.a("SetUserProducts", {"team_id": "alpha", "user_id": ann, "product_ids": ["REVIT"]})
    desk.a("ImportUsers", {"team_id": "beta", "users": [ann], "product_ids": ["ACADEL"]})
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="beta")["session_id"]
    who = {
        "SetDefaultAssignments": {},
        "AssignUsers": {"users": [ann]},
        "ImportUsers": {"users": [ann]},
    }.get(method, {"user_id": ann})
    request = {"team_id": "alpha", **who, **body}
    err = world.refused(method, request, "NOT_TEAM_ADMIN")
    assert "team_id" not in err.metadata and "beta" not in err.message
    assert "runs a plugin of a team this admin key does not manage" in err.message
    states = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert states[host]["state"] == states[plugin]["state"] == "SESSION_STATE_ACTIVE"

    desk.a(method, request)  # the operator's
    states = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert states[host]["end_reason"] == "END_REASON_NOT_ASSIGNED"
    assert states[plugin]["end_reason"] == "END_REASON_HOST_ENDED"
    (event, *_) = desk.a("ListAuditEvents", {"team_id": "beta"})["events"]
    assert event["method"] == method


def test_ad1_a6_a_team_key_takes_away_a_host_with_no_plugin_elsewhere(world: World) -> None:
    """Without a plugin in another team, the same calls are the key's to make."""
    desk, ann, host = world.desk, world.own.user, world.own.session
    world.call("SetUserProducts", {"team_id": "alpha", "user_id": ann, "product_ids": ["REVIT"]})
    (ended,) = [s for s in desk.sessions(include_ended=True) if s["session_id"] == host]
    assert ended["end_reason"] == "END_REASON_NOT_ASSIGNED"
    world.call("UnassignUser", {"team_id": "alpha", "user_id": ann})


def test_ad1_p4_a_plugins_host_in_a_team_the_key_does_not_manage_is_not_named(
    world: World,
) -> None:
    """Beta's key sees ann's plugin in its ListSessions, and its host's id (in alpha):
    EndSession on that host is refused naming the session, not alpha (a key learns
    nothing of the teams it does not manage; its user's other teams included)."""
    desk, ann, host = world.desk, world.own.user, world.own.session
    desk.a("ImportUsers", {"team_id": "beta", "users": [ann], "product_ids": ["ACADEL"]})
    desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="beta")
    key = desk.a("CreateAdminKey", {"display_name": "Beta's", "team_ids": ["beta"]})
    listed = desk.admin(f"{SERVICE}/ListSessions", {}, token=key["admin_key"])["sessions"]
    assert host in [s.get("parent_session_id") for s in listed]
    with pytest.raises(GrpcurlError) as info:
        desk.admin(f"{SERVICE}/EndSession", {"session_id": host}, token=key["admin_key"])
    assert info.value.reason == "NOT_TEAM_ADMIN"
    assert info.value.metadata == {"method": "EndSession", "session_id": host}
    assert "alpha" not in info.value.message


def test_ad1_a_team_key_ends_a_session_with_its_plugins_in_teams_it_manages(
    world: World,
) -> None:
    """The same host and plugin with the plugin in gamma, the key's other team: the
    key ends both, and the event is in gamma's trail too."""
    desk, ann, host = world.desk, world.own.user, world.own.session
    desk.buy("gamma", 50)
    desk.a("ImportUsers", {"team_id": "gamma", "users": [ann], "product_ids": ["ACADEL"]})
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host, team_id="gamma")["session_id"]
    world.call("EndSession", {"session_id": host})
    states = {s["session_id"]: s for s in desk.sessions(include_ended=True)}
    assert states[plugin]["end_reason"] == "END_REASON_HOST_ENDED"
    (event, *_) = world.call("ListAuditEvents", {"team_id": "gamma"})["events"]
    assert (event["method"], event["target"]) == ("EndSession", host)


def test_ad1_another_teams_pack_as_a_ledger_filter_is_no_pack_of_this_team(world: World) -> None:
    """Filtering alpha's ledger by beta's pack answered an empty page, and an unknown
    pack UNKNOWN_PACK: the difference told a key which packs exist elsewhere. Both
    are UNKNOWN_PACK in the same words; a pack that moved out of alpha still has its
    entries there."""
    answers = []
    for pack in (world.other.pack, "pk_none"):
        for page in ("", _forged_ledger_token(pack)):  # a page token anyone can make
            with pytest.raises(GrpcurlError) as info:
                world.call(
                    "ListLedgerEntries", {"team_id": "alpha", "pack_id": pack, "page_token": page}
                )
            assert info.value.reason == "UNKNOWN_PACK"
            answers.append(info.value.message.replace(pack, "PACK"))
    assert len(set(answers)) == 1
    # Of the team, not of the server: beta's pack exists ("no token pack" said it did not).
    assert answers[0] == "team 'alpha' has no token pack 'PACK', and never had"
    world.call("MoveTokenPack", {"pack_id": world.own.pack, "to_team_id": "gamma"})
    moved = world.call("ListLedgerEntries", {"team_id": "alpha", "pack_id": world.own.pack})
    assert [e["kind"] for e in moved["entries"]] == [
        "LEDGER_ENTRY_KIND_PURCHASE",
        "LEDGER_ENTRY_KIND_MOVE_OUT",
    ]
    past = {"team_id": "alpha", "pack_id": world.own.pack}
    past["page_token"] = _forged_ledger_token(world.own.pack, after=10**9)
    assert world.call("ListLedgerEntries", past).get("entries", []) == []


def _forged_ledger_token(pack_id: str, after: int = 1) -> str:
    """A ListLedgerEntries page token of alpha's ledger filtered by ``pack_id``, made
    the way the server makes one (it is not signed)."""
    request = admin_pb2.ListLedgerEntriesRequest(team_id="alpha", pack_id=pack_id)
    return paging.encode(paging.of_query("ledger", request), str(after))


def test_ad1_t1_a_purchase_retried_after_its_pack_moved_away_names_no_other_team(
    world: World,
) -> None:
    """A key's own purchase, moved by the operator to a team the key does not manage
    (T5), then retried with its request id (T1: it buys nothing): the answer is the
    pack as bought, its team "(another team)", none of that team's figures."""
    body = {"team_id": "alpha", "tokens": 40, "request_id": "po-77"}
    bought = world.call("PurchaseTokens", body)["token_pack"]
    world.desk.a("MoveTokenPack", {"pack_id": bought["pack_id"], "to_team_id": "beta"})
    available = world.call("GetTeam", {"team_id": "alpha"})["team"]["available_tokens"]
    again = world.call("PurchaseTokens", body)["token_pack"]
    assert again == {
        "pack_id": bought["pack_id"],
        "team_id": "(another team)",
        "tokens": "40",
        "purchase_time": bought["purchase_time"],
        "expire_time": bought["expire_time"],
        "request_id": "po-77",
    }
    assert world.desk.a("PurchaseTokens", body)["token_pack"]["team_id"] == "beta"  # operator
    assert world.call("GetTeam", {"team_id": "alpha"})["team"]["available_tokens"] == available


def test_ad1_r1_a_usage_report_names_no_team_a_pack_moved_to(world: World) -> None:
    """Alpha's report lists its packs as they stand now; one the operator moved to
    beta (T5) is said there as in alpha's audit trail: "(another team)". The operator
    reading the same report sees beta."""
    world.desk.a("MoveTokenPack", {"pack_id": world.own.pack, "to_team_id": "beta"})
    window = {"start_time": "2020-01-01T00:00:00Z", "end_time": "2100-01-01T00:00:00Z"}
    body = {"team_id": "alpha", **window}
    (moved,) = [
        p for p in world.call("GetUsageReport", body)["packs"] if p["pack_id"] == world.own.pack
    ]
    assert (moved["team_id"], moved["moved_out_tokens"]) == ("(another team)", "50")
    (seen,) = [
        p for p in world.desk.a("GetUsageReport", body)["packs"] if p["pack_id"] == world.own.pack
    ]
    assert seen["team_id"] == "beta"
    (event, *_) = world.call("ListAuditEvents", {"team_id": "alpha"})["events"]
    assert event["request"]["to_team_id"] == moved["team_id"]


def test_ad1_ad2_a_plugin_opened_while_a_guest_assignment_reads_its_entries_is_checked(
    server: ServerThread, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alpha's default set gives ann ACAD, and beta gives her its plugin ACADEL. A key
    of alpha makes her a guest there (her ACAD ends, and a plugin on it, beta's, with
    it). The call's entries are read on a thread; a plugin opened meanwhile was ended
    unchecked (a key of alpha ending beta's session, AD1) and unaudited in beta's trail
    (AD2), because the check of whom the call touches came before that read. It now
    comes after: the plugin is seen, and the call is NOT_TEAM_ADMIN."""
    from server.engine import access as access_module

    desk.team("beta", 100)
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD"]})
    ann = desk.user("alpha", "ann", products=[])
    desk.user("beta", "ann", products=["ACADEL"])
    host = desk.entitle(ann)  # ACAD in alpha, through the default set
    key = desk.a("CreateAdminKey", {"display_name": "a", "team_ids": ["alpha"]})["admin_key"]
    reading, read_on = threading.Event(), threading.Event()
    check = access_module.check_user_entries

    def held(entries: Any) -> Any:  # the guest assignment's read, held until told
        if "Hold <hold@example.com>" in entries:
            reading.set()
            read_on.wait(60)
        return check(entries)

    monkeypatch.setattr(access_module, "check_user_entries", held)
    answer: dict[str, Any] = {}

    def make_her_a_guest() -> None:
        client = Grpcurl(server.target, key)
        try:
            body = {"team_id": "alpha", "users": [ann, "Hold <hold@example.com>"], "guest": True}
            answer["ok"] = client(f"{SERVICE}/AssignUsers", body)
        except GrpcurlError as err:
            answer["refused"] = err
        finally:
            client.close()

    call = threading.Thread(target=make_her_a_guest)
    call.start()
    try:
        assert reading.wait(60)
        plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
        assert plugin["team_id"] == "beta"
    finally:
        read_on.set()
        call.join(60)
    assert answer["refused"].reason == "NOT_TEAM_ADMIN", answer
    running = desk.heartbeat(ann, plugin["session_id"])
    assert running["state"] == "SESSION_STATE_ACTIVE"
    assert desk.heartbeat(ann, host["session_id"])["state"] == "SESSION_STATE_ACTIVE"


@pytest.mark.parametrize("guest", [True, False])
def test_ad1_a_key_of_another_team_is_refused_before_its_entries_are_read(
    server: ServerThread, desk: Desk, monkeypatch: pytest.MonkeyPatch, guest: bool
) -> None:
    """Reading 10,000 entries holds the server for most of a second (the addresses'
    checks hold the GIL on their thread): a key that may not touch the team is refused
    without them, and a call that may reads them once."""
    from server.engine import access as access_module

    desk.team("beta")
    key = desk.a("CreateAdminKey", {"display_name": "b", "team_ids": ["beta"]})["admin_key"]
    read: list[int] = []
    check = access_module.check_user_entries

    def counted(entries: Any) -> Any:
        read.append(len(entries))
        return check(entries)

    monkeypatch.setattr(access_module, "check_user_entries", counted)
    users = [f"User Number {i} <user{i}@example.com>" for i in range(2_000)]
    body = {"team_id": "alpha", "users": users, "all_products": True, "guest": guest}
    client = Grpcurl(server.target, key)
    try:
        with pytest.raises(GrpcurlError) as refused:
            client(f"{SERVICE}/AssignUsers", body)
        assert refused.value.reason == "NOT_TEAM_ADMIN"
        assert read == []
        answer = client(f"{SERVICE}/AssignUsers", {**body, "team_id": "beta"})
        assert len(answer["members"]) == 2_000 and read == [2_000]
    finally:
        client.close()
