"""An answer that waits for its commit tells the session as it was when the call
changed it (``SessionView.snapshot``; the engine's ``_snapshot``): a deadline fired
meanwhile may change the live session, and that change is not stored yet."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

from server.domain.products import Platform
from server.domain.sessions import (
    ChargeState,
    Coverage,
    EndReason,
    Session,
    SessionState,
    SessionView,
)
from server.domain.teams import Plan

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def a_view() -> SessionView:
    session = Session(
        session_id="ses_01",
        user_id="ann@example.com",
        team_id="design",
        product_id="ACAD",
        product_version="2026.1",
        platform=Platform.WINDOWS,
        device_id="dev-1",
        parent_session_id="",
        request_id="req-1",
        coverage=Coverage.TOKENS,
        plan=Plan.PREMIUM,
        daily_rate=7,
        start_time=T0,
        lease_start=T0,
        last_activity=T0 + timedelta(minutes=3),
        state_since=T0 + timedelta(minutes=1),
        coverage_since=T0 + timedelta(seconds=30),
        state=SessionState.IDLE,
        end_reason=None,
        due=T0 + timedelta(minutes=18),
    )
    return SessionView(
        session=session,
        charge_state=ChargeState.GRACE,
        grace_end_time=T0 + timedelta(minutes=5),
        window_end_time=None,
        lease_expire_time=T0 + timedelta(hours=24),
        heartbeat_interval=timedelta(minutes=5),
        team_available_tokens=93,
        plan=Plan.PREMIUM,
        daily_rate=7,
    )


def test_m10_a_snapshot_keeps_every_field_of_the_session_and_the_view() -> None:
    view = a_view()
    shot = view.snapshot()
    assert shot.session is not view.session
    for f in fields(Session):
        assert getattr(shot.session, f.name) == getattr(view.session, f.name), f.name
    for f in fields(SessionView):
        if f.name != "session":
            assert getattr(shot, f.name) == getattr(view, f.name), f.name


def test_m10_a_snapshot_does_not_follow_the_live_session_once_taken() -> None:
    view = a_view()
    shot = view.snapshot()
    live = view.session
    live.state, live.end_reason = SessionState.ENDED, EndReason.LEASE_EXPIRED
    live.state_since = T0 + timedelta(hours=24)
    live.daily_rate = 9
    assert shot.session.state is SessionState.IDLE and shot.session.end_reason is None
    assert shot.session.state_since == T0 + timedelta(minutes=1)
    assert shot.session.daily_rate == 7
