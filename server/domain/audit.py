"""The audit trail's hash chain (RULES AD2).

Every ``AuditEvent`` (``server/domain/admins.py``) carries
``hash = sha256(previous hash, its own fields)``, as the ledger's entries do
(``server/domain/ledger.py``): an event altered, removed or inserted in the
middle breaks every hash after it, and ``python -m server verify`` finds it
(``server/store/audit.py``). The fields are hashed as one JSON array, not
joined with a separator: an event's request, names and targets are free text
that may hold any separator.

An event's ``more_team_ids`` (the teams of a call that touched three or more)
are hashed only when there are some, appended to the array, sorted: every event
without them keeps the hash it always had, so an older database still verifies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace

from server.domain.admins import AuditEvent
from server.domain.instants import micros

GENESIS_HASH = "0" * 64  # the "previous hash" of the first event


def event_digest(
    prev_hash: str,
    seq: int,
    event_id: str,
    time_us: int,
    actor: str,
    actor_name: str,
    method: str,
    team_id: str,
    other_team_id: str,
    target: str,
    request_id: str,
    request: str,
    *,
    more_team_ids: Iterable[str] = (),
) -> str:
    """The chain hash of one event: its predecessor's hash and every stored field
    (the time in microseconds since the epoch, as the store keeps it), then its
    more teams (sorted) if it has any."""
    fields: list[object] = [
        prev_hash,
        seq,
        event_id,
        time_us,
        actor,
        actor_name,
        method,
        team_id,
        other_team_id,
        target,
        request_id,
        request,
    ]
    more = sorted(more_team_ids)
    if more:
        fields.append(more)
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def chained(event: AuditEvent, prev_hash: str) -> AuditEvent:
    """``event`` with its hash, following an event whose hash is ``prev_hash``."""
    e = event
    digest = event_digest(
        prev_hash,
        e.seq,
        e.event_id,
        micros(e.time),
        e.actor,
        e.actor_name,
        e.method,
        e.team_id,
        e.other_team_id,
        e.target,
        e.request_id,
        e.request,
        more_team_ids=e.more_team_ids,
    )
    return replace(e, hash=digest)
