"""Teams: the unit that buys tokens (T1) and carries a plan (A8)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from server.domain.errors import InvalidArgument

# Matched whole (fullmatch): "$" alone would also let a final line break through.
TEAM_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")


class Plan(Enum):
    STANDARD = "STANDARD"
    PREMIUM = "PREMIUM"


@dataclass(slots=True)
class Team:
    team_id: str
    display_name: str
    plan: Plan
    create_time: datetime
    guest_default_assignments: bool = False
    # A4: the default set; empty means default assignments are off.
    default_product_ids: frozenset[str] = field(default_factory=frozenset)
    # L1: 0 means off (the default).
    low_balance_threshold: int = 0
    # L1: LOW_BALANCE was queued and the balance has not been back at or above
    # the threshold since (the next one waits for that).
    low_balance_alerted: bool = False


def team_id_problem(team_id: str) -> str | None:
    """Why ``team_id`` cannot be a team's id, in words, or None."""
    if not team_id:
        return "is required"
    if not TEAM_ID_RE.fullmatch(team_id):
        return (
            "must be 1-64 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return None


def validate_team_id(team_id: str, field_name: str = "team_id") -> None:
    problem = team_id_problem(team_id)
    if problem is not None:
        raise InvalidArgument.field(field_name, problem)
