"""Who may make which AdminService call: the one place RULES AD1 is enforced.

The edge (``server/api/interceptors.py``) calls ``check`` for every
AdminService call once it knows the caller, with the method's rule from
``server/api/methods.py``; servicers carry no permission checks. The operator
may do everything; a team administrator's key (``Caller.team_ids``):

- ``OPERATOR`` methods and ``operator_fields`` set: ``OPERATOR_ONLY``;
- ``TEAM``: every team the call names or touches must be one of its teams, else
  ``NOT_TEAM_ADMIN`` naming the team, and every team whose sessions it would end
  (``Rule.touches``: a session's plugins, a device's sessions), naming none
  (``any_team``: one of the user's teams is enough);
- ``LISTING``: a named team must be one of its teams; with none named the
  servicer narrows the list to its teams (``team_required``: it must name one);
- a method with no rule is refused to everyone (fail closed).

A team the call names that does not exist resolves to "" (an unknown pack,
session or invitation; an empty ``team_id``): the call goes on to the use case,
which refuses it as it would the operator (``INVALID_ARGUMENT``, ``UNKNOWN_*``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from server.api.caller import Caller
from server.api.errors import PermissionDenied
from server.api.methods import Rule, Scope
from server.domain.errors import DomainError, InvalidArgument, NotTeamAdmin, OperatorOnly
from server.domain.userentries import canonical_user_id
from server.engine import Engine
from server.engine.access import entries_read


class EngineLookup:
    """``methods.Lookup`` over the engine's state, in memory."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def admin_caller(self, secret: str) -> Caller | None:
        """The holder of the live admin key ``secret`` is, or None."""
        key = self._engine.admins.resolve(secret)
        if key is None:
            return None
        return Caller(key.admin_key_id, key.display_name, key.team_ids)

    def pack_team(self, pack_id: str) -> str:
        pack = self._engine.ledger.packs.get(pack_id)
        return pack.team_id if pack is not None else ""

    def session_team(self, session_id: str) -> str:
        # A session ended so long ago that memory let it go is unknown to EndSession
        # too: "" lets the use case answer UNKNOWN_SESSION as it does the operator.
        try:
            return self._engine.sessions.lic.session(session_id).team_id
        except DomainError:
            return ""

    def user_teams(self, user_id: str) -> frozenset[str]:
        return frozenset(m.team_id for m in self._engine.directory.teams_of(user_id))

    def device_teams(self, user_id: str, product_id: str, device_id: str) -> frozenset[str]:
        return self._engine.sessions.lic.device_teams(user_id, product_id, device_id)

    def session_teams(self, session_id: str) -> frozenset[str]:
        return self._engine.sessions.lic.session_teams(session_id)

    def coverage_teams(self, request: Any, method: str) -> frozenset[str]:
        engine = self._engine
        if method == "EndSubscription":
            sub = engine.coverages.get(request.subscription_id)
            if sub is None:
                return frozenset()  # the use case answers UNKNOWN_SUBSCRIPTION
            user_id, product_id = sub.user_id, sub.product_id
        else:
            user_id, product_id = canonical_user_id(request.user_id), request.product_id
        lic = engine.sessions.lic
        return frozenset().union(
            *(lic.session_teams(s.session_id) for s in lic.sessions_of_user(user_id, product_id))
        )

    def access_teams(self, request: Any, method: str) -> frozenset[str]:
        engine = self._engine
        team = engine.teams.get(request.team_id)
        if team is None:
            return frozenset()  # the use case answers UNKNOWN_TEAM
        directory, known = engine.directory, engine.products.keys()
        # What each user would lose (None: everything, they leave the team).
        losses: Mapping[str, Collection[str] | None]
        if method == "SetDefaultAssignments":
            losses = directory.losses_if_defaults(team, request.product_ids, known)
        elif method == "UpdateTeamSettings":  # only guests lose anything, their defaults
            if not request.HasField("guest_default_assignments"):
                return frozenset()
            losses = directory.losses_if_guest_defaults(
                team, request.guest_default_assignments, known
            )
        elif method in ("AssignUsers", "ImportUsers"):  # only a guest loses anything
            if not (request.HasField("guest") and request.guest):
                return frozenset()
            # As the edge read them, on a thread (``Access.read_entries``): a call that
            # names one bad entry changes nothing, so its good ones are whom it touches.
            read = entries_read.get()
            users = [e.user_id for e in read[1][0]] if read is not None else []
            losses = directory.losses_if_made_guests(
                team, users, request.product_ids, request.all_products, known
            )
        elif method == "UnassignUser":
            losses = {canonical_user_id(request.user_id): None}
        else:  # SetUserProducts
            user_id = canonical_user_id(request.user_id)
            lost = directory.losses_if_set(
                team, user_id, request.product_ids, request.all_products, known
            )
            losses = {user_id: lost}
        lic = engine.sessions.lic
        return frozenset().union(
            *(lic.access_teams(team.team_id, u, losses[u]) for u in lic.running(losses))
        )

    def invitation_team(self, invitation_token: str) -> str:
        invitation = self._engine.directory.invitation_for_token(invitation_token)
        return invitation.team_id if invitation is not None else ""


def check(
    method: str, rule: Rule | None, request: Any, caller: Caller, look: EngineLookup
) -> tuple[str, ...]:
    """Refuse the call if ``caller`` may not make it; else the teams it touches
    in the rule's order (what its audit event names; () for a call that
    changes nothing)."""
    if rule is None:
        raise PermissionDenied(f"{method} has no access rule: refused to everyone")
    managed = caller.team_ids
    if managed is None or rule.scope is Scope.NONE:  # the operator; AcceptInvitation
        # The teams whose sessions it ends come first: the audit event names those.
        return (
            _unique(*rule.touches(request, look), *rule.teams(request, look))
            if rule.changes
            else ()
        )
    if rule.scope is Scope.OPERATOR:
        raise OperatorOnly(method)
    if rule.scope is Scope.ANYONE:
        return ()
    if rule.operator_fields:
        given = {f.name for f, _ in request.ListFields()}
        for name in rule.operator_fields:
            if name in given:
                raise OperatorOnly(method, name)
    teams = rule.teams(request, look)
    if rule.scope is Scope.LISTING and rule.team_required and not any(teams):
        raise InvalidArgument.field(
            "team_id", "is required with a team administrator's key: name one of its teams"
        )
    if rule.any_team:
        user_id = str(request.user_id)
        # A user in none of the key's teams, known or not, is none of its business
        # (whether they exist, and where, is told to the operator only); a call that
        # names no user is answered as it is for the operator (INVALID_ARGUMENT).
        if user_id and managed.isdisjoint(teams):
            raise NotTeamAdmin(method, "", user_id)
        touched = rule.touches(request, look)
        for team_id in touched:  # a session of another team it would end
            if team_id not in managed:
                raise NotTeamAdmin(
                    method, team_id, user_id, device_id=str(getattr(request, "device_id", ""))
                )
        # The audit event names the first two: those it changed, else the caller's.
        return _unique(*touched, *(t for t in teams if t in managed), *teams)
    for i, team_id in enumerate(teams):
        if team_id and team_id not in managed:
            if i == 0 and rule.found_by:  # looked up: the key learns no team's name
                raise NotTeamAdmin(
                    method, "", found=(rule.found_by, str(getattr(request, rule.found_by)))
                )
            raise NotTeamAdmin(method, team_id)
    touched = rule.touches(request, look)
    for team_id in touched:  # a plugin of another team that ending a session would end
        if team_id not in managed:
            raise NotTeamAdmin(
                method,
                "",
                str(getattr(request, "user_id", "")),
                session_id=str(getattr(request, "session_id", "")),
                plugin=True,
            )
    return _unique(*teams, *touched)


def _unique(*teams: str) -> tuple[str, ...]:
    """``teams`` in their order, each once."""
    return tuple(dict.fromkeys(teams))
