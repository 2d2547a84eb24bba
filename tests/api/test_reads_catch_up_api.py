"""Reads answer what stands at the clock's time, even when the scheduler lags
(RULES T4, M7, with §7's "each at its own due instant").

The real clock's scheduler fires deadlines on time, but a loop that lags may
run a read first. Here the test clock is moved with ``TestClock.set``, which
fires nothing (a late scheduler); a read must still find the pack expired and
the session ended, at their own instants, as a call that changes state does
(``tests/engine/test_caught_up.py``): the edge has every AdminService read
fire, and store, what is due before it answers (``Engine.caught_up``).

A real server on the test clock (2026-01-01T00:00:00Z), driven as grpcurl drives
it (``tests/licensing_desk.py``): team ``alpha`` has one pack of 100 tokens
bought at T0, which expires a year later.
"""

from __future__ import annotations

from datetime import datetime

from server.clock import TestClock
from tests.licensing_desk import Desk, L, at, ended, num
from tests.support import ServerThread


def late(server: ServerThread, when: str) -> None:
    """Move the server's clock to ``when`` firing nothing: a scheduler that lags."""

    async def move() -> None:
        assert server.server.engine is not None
        clock = server.server.engine.clock
        assert isinstance(clock, TestClock)
        clock.set(datetime.fromisoformat(when))

    server.call(move())


def test_t4_a_read_after_a_packs_expiry_finds_it_expired_before_the_scheduler_fires_it(
    server: ServerThread, desk: Desk
) -> None:
    """T4: at ``expire_time`` the pack's 100 unconsumed tokens leave the balance,
    with an EXPIRY entry at that instant, whichever read comes first."""
    (pack,) = desk.packs("alpha")
    assert pack["expire_time"] == "2027-01-01T00:00:00Z"
    late(server, "2027-01-01T00:00:05Z")
    assert desk.balance("alpha") == (0, 0)  # GetTeam
    (pack,) = desk.packs("alpha")  # ListTokenPacks
    assert pack["state"] == "PACK_STATE_EXPIRED"
    assert num(pack, "expired_tokens") == 100
    assert desk.moves("alpha")[-1] == ("EXPIRY", 100, "2027-01-01T00:00:00Z")
    desk.assert_ledger_adds_up("alpha")
    assert desk.now() == "2027-01-01T00:00:05Z"  # the clock was not moved back


def test_m7_a_read_after_the_lease_end_finds_the_session_expired_before_the_scheduler_fires(
    server: ServerThread, desk: Desk
) -> None:
    """M7: a session whose lease ended is no longer live at its lease's end; and,
    its window closing at that instant, it is not renewed (10 held and captured
    once, not twice)."""
    ann = desk.user("alpha", "ann")
    s = desk.entitle(ann, "REVIT")  # 10 a day, not idle-aware: lease to 24 h
    desk.to(at(h=23, m=59))
    late(server, at(d=1, s=30))
    assert desk.sessions("alpha") == []  # ListSessions
    (gone,) = desk.sessions("alpha", include_ended=True)
    assert gone["session_id"] == s["session_id"]
    ended(gone, "LEASE_EXPIRED", at(d=1))
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    assert desk.balance("alpha") == (90, 0)
    desk.assert_ledger_adds_up("alpha")


def test_c2_a_users_own_list_after_their_trial_ended_shows_tokens_paying_before_it_fires(
    server: ServerThread, desk: Desk
) -> None:
    """C2 with AD5: once a trial's end has passed, tokens pay for the product in
    ListMyProducts (a LicensingService read), as in an Entitle made then. That
    read weighs each coverage at its own instant, so it needs no deadline fired:
    this keeps it so."""
    ann = desk.user("alpha", "ann")
    desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=2)})

    def coverage() -> str:
        mine = desk.admin(L + "ListMyProducts", {}, token=desk.keys[ann])["products"]
        found: str = next(p["coverage"] for p in mine if p["product_id"] == "REVIT")
        return found

    assert coverage() == "COVERAGE_TRIAL"
    late(server, at(h=2, s=5))
    assert coverage() == "COVERAGE_TOKENS"
    assert desk.entitle(ann, "REVIT")["coverage"] == "COVERAGE_TOKENS"
