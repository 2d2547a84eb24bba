"""What the engine needs from storage: one small typed interface (the port).

The engine keeps the hot state in memory and hands every durable change to a
``StorePort``; it never sees SQL, a connection or a file. Two adapters
implement it: ``server/store/sqlite.py`` (the embedded default) and
``server/store/postgres.py`` (several servers on one database, RULES H1).

The promise every adapter keeps (RULES, "nothing lost"):

- ``commit(changes)`` returns only once the changes, and every change
  committed before them, are durable; many concurrent commits may share one
  transaction (group commit), and a failed write raises ``StoreFailed`` to
  every waiter and to every later call (memory and disk may disagree: the
  server must stop serving).
- ``barrier()`` returns once every commit queued before it is durable; the
  engine calls it only through ``Commits.settled`` (``server/engine/commits.py``,
  behind ``Engine.settled``). (Heartbeat history waits in
  the engine's own batch, ``server/engine/sessions.py``, and is committed like
  any change: the port has no deferred writes.)
- ``load()`` returns everything that lives in memory, as domain objects.
- The named reads answer from what is committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from server.domain.admins import AuditEvent
from server.domain.changes import Changes
from server.domain.errors import DomainError
from server.domain.ledger import EntryKind, LedgerEntry
from server.domain.sessions import ActivitySpan, Session


class StoreFailed(RuntimeError):
    """A write failed: memory and disk may disagree, so the server must stop."""


def newer_schema(version: int, known: int) -> str | None:
    """Why a database at schema ``version`` is not for this release, which knows
    ``known`` migrations (its tables may have changed in ways this code does not
    know), or None. A server refuses to open it and ``verify`` to check it."""
    if version <= known:
        return None
    return (
        f"the database is at schema version {version}, newer than this release's "
        f"{known}: run the newer release"
    )


class ReadFailed(DomainError):
    """A read of the store failed (its connection lost, the database not answering):
    nothing was changed, so the call may be repeated as it is (``UNAVAILABLE``)."""

    reason = "UNAVAILABLE"


class NotLeader(StoreFailed):
    """A write was refused because this server is no longer the active one
    (RULES H1): another server won the election (a higher epoch) or this one's
    lease ran out. The transaction was rolled back; this server must stop
    serving as active."""


@dataclass
class Snapshot:
    """Everything loaded at start, by type, in table order."""

    objects: dict[type, list[Any]] = field(default_factory=dict)
    max_ledger_seq: int = 0
    last_ledger_hash: str = ""
    # The audit trail's head (RULES AD2): its events are not loaded, the chain goes on.
    max_audit_seq: int = 0
    last_audit_hash: str = ""

    def of(self, kind: type) -> list[Any]:
        return self.objects.get(kind, [])


@dataclass(frozen=True)
class Capture:
    """One CAPTURE ledger entry, as the usage report counts it (R1)."""

    time: datetime
    user_id: str
    product_id: str
    amount: int


@dataclass(frozen=True)
class SessionStart:
    time: datetime
    user_id: str
    product_id: str


@dataclass
class UsageFacts:
    """What the usage report (R1) reads from the stored history of one team
    over [start, end): the charges, the sessions begun, the stored spans of
    active time overlapping it, and, for each pack that moved into or out of it,
    the tokens of its moves, captures and expiries in this team's ledger (any
    time: T5 keeps what a moved pack paid for in its first team's history, and
    what it paid for in the next team in that team's)."""

    captures: list[Capture] = field(default_factory=list)
    session_starts: list[SessionStart] = field(default_factory=list)
    spans: list[ActivitySpan] = field(default_factory=list)
    # (pack_id, MOVE_IN, MOVE_OUT, CAPTURE or EXPIRY) -> tokens, summed over all
    # time, for the packs that moved into or out of the team
    moved: dict[tuple[str, EntryKind], int] = field(default_factory=dict)


class StorePort(Protocol):
    """The storage the engine uses; see the module docstring for the promise."""

    secret_key: bytes  # the server's secret (derives invitation tokens); never stored in the db

    async def load(self) -> Snapshot: ...

    async def commit(self, changes: Changes | Iterable[object]) -> None: ...

    async def barrier(self) -> None:
        """Return once everything queued before this call is committed."""
        ...

    async def close(self) -> None: ...

    # -- named reads (committed history that does not live in memory) ----------

    async def ledger_page(
        self,
        team_id: str,
        since_seq: int,
        limit: int,
        pack_id: str = "",
        *,
        newest_first: bool = False,
    ) -> list[LedgerEntry]:
        """A team's ledger entries with ``seq > since_seq``, in order, at most ``limit``;
        ``newest_first``: those with ``seq < since_seq`` (0: no bound), newest first."""
        ...

    async def ended_session(self, session_id: str) -> Session | None:
        """A stored session by id (M12 for sessions memory has let go), or None."""
        ...

    async def usage_facts(self, team_id: str, start: datetime, end: datetime) -> UsageFacts: ...

    async def captured_since(self, team_id: str, since: datetime) -> list[int]:
        """The amounts of a team's CAPTURE entries at or after ``since`` (L4)."""
        ...

    async def sessions_load_bound(self) -> str | None:
        """The id of the first stored session (by id) that a start would load now (a
        live one, or one ended in the days a start loads; no later start loads one
        below it, as ids grow), or None when none is stored."""
        ...

    async def latest_instant(self, snapshot: Snapshot) -> datetime | None:
        """The latest instant the stored data (and ``snapshot``, what ``load``
        returned) says something was done, or None (``server/store/reads.py``)."""
        ...

    async def audit_page(self, team_id: str, before_seq: int, limit: int) -> list[AuditEvent]:
        """Audit events with ``seq < before_seq`` (0: no bound) whose team or other
        team is ``team_id`` ("" : every team's), newest first, at most ``limit`` (AD2)."""
        ...
