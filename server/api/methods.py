"""Every AdminService method in one table: who may call it, which teams it
touches, and whether it changes state (RULES AD1, AD2).

The edge (``server/api/interceptors.py``) reads this table, and only it, to
decide whether a caller may make a call (``server/api/scopes.py``) and whether
the call leaves an audit event (``server/engine/audit.py``); servicers carry
no permission checks. ``tests/api/test_scopes_api.py`` walks every method of
the service and fails on one missing here.

Scopes:

- ``OPERATOR``: what belongs to the whole deployment (teams, the rate sheet,
  subscriptions and trials, user keys, the test clock, admin keys): a team
  administrator gets ``OPERATOR_ONLY``.
- ``ANYONE``: any admin credential (the server's info, the rate sheet read).
- ``TEAM``: every team the call names (``teams``) must be one the caller
  manages, else ``NOT_TEAM_ADMIN``; for ``any_team`` calls about a user (their
  devices), one of the user's teams is enough. Every team whose sessions the
  call would end (``touches``: a session's plugins in other teams, P4, whether
  the session is ended by EndSession or by taking its product away, A6; a device
  removal with ``end_sessions``, while without it one in use is
  ``DEVICE_IN_USE`` and ends nothing) must be the caller's.
- ``LISTING``: as ``TEAM`` when a team is named; with none named, the list
  holds only the caller's teams (the servicer passes ``Caller.team_ids`` on),
  or, for a ``team_required`` list (the audit trail), a team administrator is
  told to name one (``INVALID_ARGUMENT`` naming ``team_id``).
- ``NONE``: no credential at all (``AcceptInvitation``).

``operator_fields``: request fields that only the operator may set (a team
administrator setting one gets ``OPERATOR_ONLY``: a team's plan and its guests'
default assignments, which the guide leaves to "contact support").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


class Scope(Enum):
    OPERATOR = "operator"
    ANYONE = "anyone"
    TEAM = "team"
    LISTING = "listing"
    NONE = "none"


class Lookup(Protocol):
    """What the edge may ask the engine to find a call's teams (in memory)."""

    def pack_team(self, pack_id: str) -> str:
        """The team holding the pack; "" if there is none."""
        ...

    def session_team(self, session_id: str) -> str:
        """The team a session runs in (ended ones too); "" if unknown."""
        ...

    def user_teams(self, user_id: str) -> frozenset[str]:
        """The teams a user is a member of (invited or active)."""
        ...

    def session_teams(self, session_id: str) -> frozenset[str]:
        """The teams of the live sessions that ending this one would end (its plugins)."""
        ...

    def invitation_team(self, invitation_token: str) -> str:
        """The team of the invitation a token redeems; "" if unknown."""
        ...

    def device_teams(self, user_id: str, product_id: str, device_id: str) -> frozenset[str]:
        """The teams of the live sessions that removing the device would end."""
        ...

    def coverage_teams(self, request: Any, method: str) -> frozenset[str]:
        """The teams of the user's live sessions (and their plugins) of the product
        whose coverage GrantSubscription, StartTrial or EndSubscription changes: each
        may hold tokens, give a hold back, or end (C1, C2)."""
        ...

    def access_teams(self, request: Any, method: str) -> frozenset[str]:
        """The teams of the live sessions that UnassignUser, SetUserProducts,
        SetDefaultAssignments, a guest's AssignUsers or ImportUsers, or
        UpdateTeamSettings turning the guests' defaults off (``method``, with
        ``request``) would end (A6, P4)."""
        ...


Teams = Callable[[Any, Lookup], tuple[str, ...]]


def _field(name: str) -> Teams:
    def teams(request: Any, look: Lookup) -> tuple[str, ...]:
        return (getattr(request, name),)

    return teams


def _none(request: Any, look: Lookup) -> tuple[str, ...]:
    return ()


def _move(request: Any, look: Lookup) -> tuple[str, ...]:
    return (look.pack_team(request.pack_id), request.to_team_id)  # RULES AD1: both


def _session(request: Any, look: Lookup) -> tuple[str, ...]:
    return (look.session_team(request.session_id),)


def _session_ends(request: Any, look: Lookup) -> tuple[str, ...]:
    # Its own team first (the audit event's), then its plugins' (P4: they end with it).
    own = look.session_team(request.session_id)
    others = look.session_teams(request.session_id) - {own}
    return (own, *sorted(others)) if others else ()


def _access_ends(method: str) -> Teams:
    def teams(request: Any, look: Lookup) -> tuple[str, ...]:
        # Its own team first (the audit event's), then those of the plugins that
        # ending its sessions there would end (P4), as for EndSession.
        own = request.team_id
        others = look.access_teams(request, method) - {own}
        return (own, *sorted(others)) if others else ()

    return teams


def _coverage_changes(method: str) -> Teams:
    def teams(request: Any, look: Lookup) -> tuple[str, ...]:
        return tuple(sorted(look.coverage_teams(request, method)))

    return teams


def _user(request: Any, look: Lookup) -> tuple[str, ...]:
    return tuple(sorted(look.user_teams(request.user_id)))


def _device(request: Any, look: Lookup) -> tuple[str, ...]:
    # Without end_sessions a removal ends nothing: a device in use is DEVICE_IN_USE
    # (R2) for every caller alike, so no team's session is touched.
    if not request.end_sessions:
        return ()
    return tuple(sorted(look.device_teams(request.user_id, request.product_id, request.device_id)))


def _invitation(request: Any, look: Lookup) -> tuple[str, ...]:
    return (look.invitation_team(request.invitation_token),)


@dataclass(frozen=True)
class Rule:
    scope: Scope
    # The teams the call names or touches, in order (the first is the audit
    # event's team, the second its ``other_team_id``).
    teams: Teams = _none
    changes: bool = False  # a successful call leaves one audit event (AD2)
    target: str = ""  # the request field naming what it is about (AD2)
    any_team: bool = False  # TEAM: one of ``teams`` is enough (a user's devices)
    # TEAM: teams the call changes besides those it names (the sessions a device
    # removal ends, a session's plugins): each must be the caller's, any_team or not.
    touches: Teams = _none
    # LISTING: a team administrator must name a team (the operator may name none).
    team_required: bool = False
    # The request field naming what the first of ``teams`` was looked up from (a
    # session, a pack): refused, the call is told that, not the team (AD1).
    found_by: str = ""
    operator_fields: tuple[str, ...] = ()


_TEAM = _field("team_id")

RULES: dict[str, Rule] = {
    # the server and its clock
    "GetServerInfo": Rule(Scope.ANYONE),
    "AdvanceClock": Rule(Scope.OPERATOR, changes=True),
    # teams and tokens (RULES T1-T6, A8, L1)
    "CreateTeam": Rule(Scope.OPERATOR, _TEAM, changes=True, target="team_id"),
    "GetTeam": Rule(Scope.TEAM, _TEAM),
    "ListTeams": Rule(Scope.LISTING),
    "UpdateTeamSettings": Rule(
        Scope.TEAM,
        _TEAM,
        changes=True,
        target="team_id",
        operator_fields=("plan", "guest_default_assignments"),
        touches=_access_ends("UpdateTeamSettings"),
    ),
    "PurchaseTokens": Rule(Scope.TEAM, _TEAM, changes=True),
    "ListTokenPacks": Rule(Scope.TEAM, _TEAM),
    "MoveTokenPack": Rule(Scope.TEAM, _move, changes=True, target="pack_id", found_by="pack_id"),
    "ListLedgerEntries": Rule(Scope.TEAM, _TEAM),
    # the rate sheet (RULES P1)
    "UpsertProduct": Rule(Scope.OPERATOR, changes=True, target="product.product_id"),
    "ListProducts": Rule(Scope.ANYONE),
    # users and access (RULES A1-A7)
    "AssignUsers": Rule(
        Scope.TEAM, _TEAM, changes=True, target="users", touches=_access_ends("AssignUsers")
    ),
    "ImportUsers": Rule(
        Scope.TEAM, _TEAM, changes=True, target="users", touches=_access_ends("ImportUsers")
    ),
    "UnassignUser": Rule(
        Scope.TEAM, _TEAM, changes=True, target="user_id", touches=_access_ends("UnassignUser")
    ),
    "SetUserProducts": Rule(
        Scope.TEAM, _TEAM, changes=True, target="user_id", touches=_access_ends("SetUserProducts")
    ),
    "GetMember": Rule(Scope.TEAM, _TEAM),
    "ListMembers": Rule(Scope.TEAM, _TEAM),
    "SetDefaultAssignments": Rule(
        Scope.TEAM,
        _TEAM,
        changes=True,
        target="team_id",
        touches=_access_ends("SetDefaultAssignments"),
    ),
    "ResendInvitation": Rule(Scope.TEAM, _TEAM, changes=True, target="user_id"),
    "AcceptInvitation": Rule(Scope.NONE, _invitation, changes=True),
    "IssueUserKey": Rule(Scope.OPERATOR, changes=True, target="user_id"),
    "ListNotifications": Rule(Scope.LISTING, _TEAM),
    # subscriptions and trials (RULES C1, C2, AD3)
    # The operator's alone, read in the trail of each team whose sessions they touch.
    "GrantSubscription": Rule(
        Scope.OPERATOR,
        changes=True,
        target="user_id",
        touches=_coverage_changes("GrantSubscription"),
    ),
    "StartTrial": Rule(
        Scope.OPERATOR, changes=True, target="user_id", touches=_coverage_changes("StartTrial")
    ),
    "ListSubscriptions": Rule(Scope.OPERATOR),
    "EndSubscription": Rule(
        Scope.OPERATOR,
        changes=True,
        target="subscription_id",
        touches=_coverage_changes("EndSubscription"),
    ),
    # devices and sessions (RULES M8, R2)
    "ListDevices": Rule(Scope.TEAM, _user, any_team=True),
    "RemoveDevice": Rule(
        Scope.TEAM, _user, changes=True, target="device_id", any_team=True, touches=_device
    ),
    "ListSessions": Rule(Scope.LISTING, _TEAM),
    "EndSession": Rule(
        Scope.TEAM,
        _session,
        changes=True,
        target="session_id",
        touches=_session_ends,
        found_by="session_id",
    ),
    # reports (RULES R1)
    "GetUsageReport": Rule(Scope.TEAM, _TEAM),
    # administration (RULES AD1-AD4)
    "CreateAdminKey": Rule(Scope.OPERATOR, changes=True, target="display_name"),
    "ListAdminKeys": Rule(Scope.OPERATOR),
    "RevokeAdminKey": Rule(Scope.OPERATOR, changes=True, target="admin_key_id"),
    "ListAuditEvents": Rule(Scope.LISTING, _TEAM, team_required=True),
    "SearchUsers": Rule(Scope.LISTING, _TEAM),
}
