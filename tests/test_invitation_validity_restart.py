"""A2 across a restart with another ``invitation_validity`` (docs/rules.md, "The
numbers": "an invitation's expiry is its sending time plus the validity in force, so
a pending one's moves with it").

A pending invitation kept the expiry stored when it was sent, and its expiry timer
was set at that: after a restart with 30 days one sent under 7 was refused
INVITATION_EXPIRED on day 8. Its expiry, and the timer that records it, now follow
the validity the server was started with."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from server.domain.terms import DEFAULT_TERMS
from tests.licensing_desk import Desk
from tests.support import ServerThread


def _send(db: Path) -> None:
    """Invite zed to team alpha at 2026-01-01 (the test clock), under the default 7 days."""
    srv = ServerThread(db).start()
    desk = Desk(srv.target)
    try:
        desk.team("alpha")
        desk.a("AssignUsers", {"team_id": "alpha", "users": ["Zed <zed@example.com>"]})
        assert _invitation(desk)["expire_time"] == "2026-01-08T00:00:00Z"
    finally:
        desk.close()
        srv.stop()


def _restarted(db: Path, days: int) -> tuple[ServerThread, Desk]:
    terms = replace(DEFAULT_TERMS, invitation_validity=timedelta(days=days))
    srv = ServerThread(db, terms=terms).start()
    return srv, Desk(srv.target)


def _invitation(desk: Desk) -> dict[str, Any]:
    members = desk.a("ListMembers", {"team_id": "alpha"}).get("members", [])
    [member] = [m for m in members if m["user_id"] == "zed@example.com"]
    invitation: dict[str, Any] = member["invitation"]
    return invitation


def _recorded_state(db: Path) -> str:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        [(state,)] = conn.execute("SELECT state FROM invitations").fetchall()
    return str(state)


def test_a2_a_restart_with_a_longer_validity_keeps_a_pending_invitation_open(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    _send(db)
    srv, desk = _restarted(db, 30)
    try:
        desk.a("AdvanceClock", {"to_time": "2026-01-09T00:00:00Z"})  # day 8 of 30
        invitation = _invitation(desk)
        assert (invitation["state"], invitation["expire_time"]) == (
            "INVITATION_STATE_PENDING",
            "2026-01-31T00:00:00Z",
        )
        token = next(
            n["invitation_token"]
            for n in desk.a("ListNotifications", {"team_id": "alpha"})["notifications"]
            if n.get("invitation_token")
        )
        desk.a("AcceptInvitation", {"invitation_token": token})
        assert _invitation(desk)["state"] == "INVITATION_STATE_ACCEPTED"
    finally:
        desk.close()
        srv.stop()


def test_a2_a_restart_with_a_shorter_validity_expires_a_pending_invitation_at_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    _send(db)
    srv, desk = _restarted(db, 3)
    try:
        desk.a("AdvanceClock", {"to_time": "2026-01-03T23:59:59Z"})
        assert _invitation(desk)["state"] == "INVITATION_STATE_PENDING"
        desk.a("AdvanceClock", {"to_time": "2026-01-04T00:00:00Z"})  # day 3 of 3
        invitation = _invitation(desk)
        assert (invitation["state"], invitation["expire_time"]) == (
            "INVITATION_STATE_EXPIRED",
            "2026-01-04T00:00:00Z",
        )
    finally:
        desk.close()
        srv.stop()
    assert _recorded_state(db) == "EXPIRED"  # the expiry timer fired at the new expiry
