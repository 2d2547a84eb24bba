"""The one builder of a stored ``Session`` for the store's tests: every field
set, so that a test names only what it is about (a field the session gains is
added here once, not in every test file)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from server.domain.products import Platform
from server.domain.sessions import Coverage, EndReason, Session, SessionState
from server.domain.teams import Plan


def a_session(
    session_id: str, start: datetime, *, ended: datetime | None = None, **fields: Any
) -> Session:
    """Ann's ACAD session of team acme, opened at ``start`` (every instant of a
    live one is ``start``), ACTIVE; or, with ``ended``, RELEASED then (its state
    began, so its ``end_time`` is, at ``ended``). ``fields`` override any field."""
    session = Session(
        session_id=session_id,
        user_id="ann@x.io",
        team_id="acme",
        product_id="ACAD",
        product_version="2026",
        platform=Platform.WINDOWS,
        device_id="d1",
        parent_session_id="",
        request_id="",
        coverage=Coverage.TOKENS,
        plan=Plan.STANDARD,
        daily_rate=10,
        start_time=start,
        lease_start=start,
        last_activity=start,
        state_since=start if ended is None else ended,
        coverage_since=start,
        state=SessionState.ACTIVE if ended is None else SessionState.ENDED,
        end_reason=None if ended is None else EndReason.RELEASED,
    )
    return dataclasses.replace(session, **fields) if fields else session
