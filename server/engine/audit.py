"""The audit trail: one event in the same commit as each administrative change
(RULES AD2).

The edge (``server/api/audit.py``) hands the trail a ``Draft`` of every call
that may change state, in the call's own task, before the servicer runs
(``begin``); the draft lives in a context variable of that task. The trail is a
``Commits`` hook: on the first non-empty commit that task makes, it appends one
``AuditEvent`` to the commit's changes (the next ``seq``, a new id, the clock's
time, the hash chained to the previous event), so the store writes the event
and the change in one transaction, and a crash keeps both or neither; an event
of three teams or more also appends one ``AuditTeam`` per team past the second
(its ``more_team_ids``) to the same changes. A second
commit of the same call writes no second event; a call that commits nothing
(an idempotent repeat, a refusal) writes none.

What is only known once the use case has made its change (the pack a
purchase made, the key CreateAdminKey made, the member an invitation made
active) the trail reads from the commit's own changes (``FOUND_IN_CHANGES``):
no use case has to remember to tell it, and what the event names is what was
stored. Commits made outside a call (timers, the heartbeat flush) find no
draft and cost one context-variable read.

A task started during a call inherits a copy of the call's context, draft
included; the draft remembers the call's task, so only that task writes it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from server.clock import Clock
from server.domain.admins import AdminKey, AuditEvent, AuditTeam
from server.domain.audit import GENESIS_HASH, chained
from server.domain.changes import Changes
from server.domain.directory import Member
from server.domain.ledger import TokenPack
from server.engine.commits import Commits
from server.ids import IdFactory
from server.store.port import StorePort

# The actor of AcceptInvitation, the one change made without a credential: the
# invitee, whose user id the event's ``actor_name`` and ``target`` carry.
INVITEE = "invitee"


@dataclass(slots=True)
class Draft:
    """What the edge knows of a call that may change state."""

    method: str
    actor: str
    actor_name: str
    team_id: str
    other_team_id: str
    target: str
    request_id: str
    request: str  # JSON, every secret removed
    # The teams it touched past ``team_id`` and ``other_team_id``, sorted.
    more_team_ids: tuple[str, ...] = ()
    task: asyncio.Task[object] | None = None
    written: bool = False


Found = Callable[[Draft, Changes], None]


def _new(kind: type, id_field: str) -> Found:
    """The target is the id of the ``kind`` the call's changes hold (a new one): the
    last one, since what the deadlines a call fired on its way in changed comes
    before the call's own (``Scheduler.caught_up``: a pack a renewal drew on)."""

    def found(draft: Draft, changes: Changes) -> None:
        for item in reversed(changes.items):
            if type(item) is kind:
                draft.target = getattr(item, id_field)
                return

    return found


def _accepted(draft: Draft, changes: Changes) -> None:
    """AcceptInvitation: about the member made active, who is also the actor."""
    for item in changes.items:
        if type(item) is Member:
            draft.target = draft.actor_name = item.user_id
            draft.team_id = item.team_id
            return


# The target of the calls whose target the request does not name: found in the
# changes the call commits.
FOUND_IN_CHANGES: dict[str, Found] = {
    "PurchaseTokens": _new(TokenPack, "pack_id"),
    "CreateAdminKey": _new(AdminKey, "admin_key_id"),
    "AcceptInvitation": _accepted,
}

_draft: contextvars.ContextVar[Draft | None] = contextvars.ContextVar("audit_draft", default=None)


def abandon() -> None:
    """The call in this task was refused: what it commits now (the deadlines it
    fired on its way, ``store_fired``) is not its change, and carries no
    event of it (AD2: only a change that succeeds leaves one)."""
    _draft.set(None)


async def store_fired(commits: Commits, changes: Changes) -> None:
    """Store what the deadlines a refused call fired on its way in did
    (``Scheduler.caught_up``): a capture, a release, an expiry. The call changed
    nothing itself, so they carry no event of it (AD2), but left unstored the
    stored ledger would miss entries its hash chain and the packs' sums count on.
    With nothing fired, it still waits for what other calls are storing: a refusal
    or a read drawn from memory (RUNNING_ELSEWHERE naming a session, a hold listed)
    must not tell what a crash could undo (``Commits.commit``): ``commit_call``
    with every change the deadlines'."""
    await commit_call(commits, changes, len(changes))


async def commit_call(commits: Commits, changes: Changes, fired: int) -> None:
    """Store a call's ``changes``, the first ``fired`` of them made by the deadlines
    it fired on its way in (``Scheduler.caught_up``). A call that added nothing of
    its own changed nothing: what it stores carries no event of it (AD2)."""
    if len(changes) == fired:
        abandon()
    await commits.commit(changes)


class AuditTrail:
    def __init__(
        self,
        commits: Commits,
        store: StorePort,
        clock: Clock,
        ids: IdFactory,
        *,
        last_seq: int = 0,
        last_hash: str = "",
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._seq = last_seq
        self._hash = last_hash or GENESIS_HASH
        commits.add_hook(self._on_commit)

    @property
    def last_seq(self) -> int:
        return self._seq

    async def page(self, team_id: str, before_seq: int, limit: int) -> list[AuditEvent]:
        """Stored events of ``team_id`` ("": every team's) before ``before_seq`` (0:
        the newest), newest first (``StorePort.audit_page``)."""
        return await self._store.audit_page(team_id, before_seq, limit)

    def begin(self, draft: Draft) -> None:
        """The call in this task may change state: write ``draft`` with its change."""
        draft.task = asyncio.current_task()
        _draft.set(draft)

    def _on_commit(self, changes: Changes) -> None:
        d = _draft.get()
        if d is None:  # the hot path: a commit made outside an audited call
            return
        if d.written or d.task is not asyncio.current_task():
            return
        d.written = True
        found = FOUND_IN_CHANGES.get(d.method)
        if found is not None:
            found(d, changes)
        self._seq += 1
        event = chained(
            AuditEvent(
                self._seq,
                self._ids.new("ev"),
                self._clock.now(),
                d.actor,
                d.actor_name,
                d.method,
                d.team_id,
                d.other_team_id,
                d.target,
                d.request_id,
                d.request,
                more_team_ids=d.more_team_ids,
            ),
            self._hash,
        )
        self._hash = event.hash
        changes.upsert(event)
        for team_id in event.more_team_ids:  # in the same commit as the event
            changes.upsert(AuditTeam(team_id, event.seq))
