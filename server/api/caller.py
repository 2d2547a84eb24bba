"""Who is calling AdminService, as the edge found out (RULES AD1).

``current_caller`` is set by the edge (``server/api/interceptors.py``) in the
call's own task before the servicer runs; servicers read it only to narrow a
list to the caller's teams (``visible``), never to decide permissions (the
edge did that, from ``server/api/methods.py``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.domain.admins import OPERATOR


@dataclass(frozen=True)
class Caller:
    actor: str  # OPERATOR, an admin key's id, or "" (no credential)
    actor_name: str
    team_ids: frozenset[str] | None  # the teams it manages; None: every team (the operator)

    @property
    def is_operator(self) -> bool:
        return self.team_ids is None

    def may_see(self, team_id: str) -> bool:
        return self.team_ids is None or team_id in self.team_ids


THE_OPERATOR = Caller(OPERATOR, OPERATOR, None)
NOBODY = Caller("", "", frozenset())

current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "current_caller", default=NOBODY
)

# What the edge calls, after it has let a call through and before the servicer
# runs, for a method whose rule says it changes state (RULES AD2): the method's
# short name, the request, the caller, the teams the call touches (in the
# rule's order), and the call's request id as sent (the ``x-request-id`` header,
# else the request's ``request_id``).
AuditHook = Callable[[str, Any, Caller, tuple[str, ...], str], None]
