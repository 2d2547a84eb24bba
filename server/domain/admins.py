"""Team administrators' keys and the audit trail (RULES AD1, AD2).

An ``AdminKey`` names the teams it manages; its secret is shown once and only
its hash is kept (as users' keys, ``server/credentials.py``). An
``AuditEvent`` records one administrative change; events are appended, never
changed, and chained by hash like the ledger (``server/domain/ledger.py``) so
that ``verify`` finds one altered, removed or added by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from server.domain.changes import DERIVED

OPERATOR = "operator"  # the actor of a change made with the deployment's admin token


@dataclass(slots=True)
class AdminKey:
    admin_key_id: str
    display_name: str
    team_ids: frozenset[str]
    key_hash: bytes
    create_time: datetime
    revoke_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int  # its place in the chain: 1, 2, 3...
    event_id: str
    time: datetime
    actor: str  # OPERATOR, or the admin key's id
    actor_name: str
    method: str  # the AdminService method, e.g. "PurchaseTokens"
    team_id: str
    # A change about two teams (MoveTokenPack's destination) is read in both.
    other_team_id: str
    target: str  # the user, pack, product, session... it was about
    request_id: str
    request: str  # the request as JSON, every secret removed
    hash: str = field(default="")
    # Every other team the call touched, past the first two, sorted (a host's
    # plugins in two other teams, ended with it): read in each of their trails too.
    # Not a column of ``audit_events``: one ``AuditTeam`` row each, in the same commit.
    more_team_ids: tuple[str, ...] = field(default=(), metadata=DERIVED)


@dataclass(frozen=True, slots=True)
class AuditTeam:
    """One of an event's ``more_team_ids``: the event numbered ``seq`` is in the
    trail of ``team_id`` too (the table ``audit_teams``, appended to with the event)."""

    team_id: str
    seq: int
