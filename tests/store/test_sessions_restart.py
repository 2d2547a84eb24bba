"""Sessions across restarts of the real process (issue 4: "restart and kill -9
after an acknowledged charge"; RULES §7: the clock is stored with the data).

Each test runs ``python -m server`` as a child (``ServerProcess``), drives it
over reflection and JSON, stops it with SIGTERM or SIGKILL, starts it again on
the same database, and reads everything back. What an RPC acknowledged must
be there after kill -9: holds, charges, sessions, devices, and a ledger whose
entries add up to every pack's figures. Heartbeats are written in batches
(``--heartbeat-flush``); SIGTERM writes them out, kill -9 may lose them, so
only the SIGTERM test looks at a lease a heartbeat moved.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.licensing_desk import Desk, at, ended, num
from tests.support import ServerProcess, running

NEVER = 10**9  # seconds_since_activity: no activity since long before the session


def start(
    processes: list[ServerProcess], db: Path | str, keys: dict[str, str] | None = None, **kw: Any
) -> tuple[ServerProcess, Desk]:
    proc = ServerProcess(db, **kw).start()
    processes.append(proc)
    desk = Desk(proc.target)
    desk.keys.update(keys or {})
    return proc, desk


def everything(desk: Desk, teams: list[str], users: list[str]) -> dict[str, Any]:
    """All an operator can read back about sessions, tokens, devices and time."""
    return {
        "now": desk.now(),
        "sessions": desk.sessions(include_ended=True),
        "teams": {t: desk.a("GetTeam", {"team_id": t})["team"] for t in teams},
        "packs": {t: desk.packs(t) for t in teams},
        "ledger": {t: desk.ledger(t) for t in teams},
        "devices": {(u, p): desk.devices(u, p) for u in users for p in ("ACAD", "REVIT")},
    }


def test_restart_sigterm_keeps_sessions_meters_devices_holds_and_the_clock(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first, desk = start(processes, db)
    desk.sheet().team("alpha", 100)
    ann, bob, cy, eve = (desk.user("alpha", n) for n in ("ann", "bob", "cy", "eve"))
    bobs = desk.entitle(bob, "REVIT")
    eves = desk.entitle(eve, request_id="eve-1")
    desk.release(eve, eves["session_id"])
    desk.to(at(m=3))
    anns = desk.entitle(ann, request_id="ann-1")
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=anns["session_id"])
    cys = desk.entitle(cy, device_id="cy-laptop")
    desk.idle(cy, cys["session_id"])
    desk.to(at(m=6))
    desk.heartbeat(bob, bobs["session_id"])  # lease to 24 h 6 min, written at shutdown
    users = [ann, bob, cy, eve]
    before = everything(desk, ["alpha"], users)
    desk.close()
    assert before["teams"]["alpha"]["held_tokens"] == "13"  # ann's ACAD and ACADEL
    assert first.terminate() == 0

    second, desk = start(processes, db, dict(desk.keys))
    try:
        after = everything(desk, ["alpha"], users)
        assert after == before
        (bob_after,) = [s for s in after["sessions"] if s["user_id"] == bob]
        assert bob_after["lease_expire_time"] == at(d=1, m=6)
        assert bob_after["charge_state"] == "CHARGE_STATE_CHARGED"

        # The restored state goes on working: grace ends, M9, M11, resume, M12.
        desk.to(at(m=8))
        assert desk.heartbeat(ann, anns["session_id"])["charge_state"] == "CHARGE_STATE_CHARGED"
        assert desk.heartbeat(ann, plugin["session_id"])["window_end_time"] == at(d=1, m=3)
        err = desk.refused_entitle(
            ann, grpc.StatusCode.FAILED_PRECONDITION, "RUNNING_ELSEWHERE", device_id="dev-2"
        )
        assert err.metadata["device_id"] == "dev-1"
        assert desk.entitle(ann, request_id="ann-1")["session_id"] == anns["session_id"]
        assert desk.entitle(eve, request_id="eve-1")["session_id"] == eves["session_id"]
        resumed = desk.heartbeat(cy, cys["session_id"], 0)
        assert resumed["grace_end_time"] == at(m=13)
        ended(desk.heartbeat(eve, eves["session_id"]), "RELEASED", at())
        assert desk.token_moves("alpha") == [
            ("HOLD", 10, at()),
            ("HOLD", 10, at()),
            ("HOLD_RELEASE", 10, at()),
            ("HOLD", 10, at(m=3)),
            ("HOLD", 3, at(m=3)),
            ("HOLD", 10, at(m=3)),
            ("HOLD_RELEASE", 10, at(m=3)),
            ("CAPTURE", 10, at(m=5)),
            ("CAPTURE", 10, at(m=8)),
            ("CAPTURE", 3, at(m=8)),
            ("HOLD", 10, at(m=8)),
        ]
        assert desk.balance("alpha") == (67, 10)
        desk.assert_ledger_adds_up("alpha")
    finally:
        desk.close()
    assert second.terminate() == 0


def test_restart_kill_9_right_after_an_acknowledged_entitle_keeps_hold_session_and_device(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first, desk = start(processes, db)
    desk.sheet().team("alpha", 100)
    ann, cy = desk.user("alpha", "ann"), desk.user("alpha", "cy")
    cys = desk.entitle(cy)
    desk.idle(cy, cys["session_id"])  # acknowledged: the hold went back
    s = desk.entitle(ann, request_id="r-1")
    keys = dict(desk.keys)
    desk.close()
    first.kill()

    second, desk = start(processes, db, keys)
    try:
        assert desk.now() == at()
        assert desk.balance("alpha") == (90, 10)
        assert desk.token_moves("alpha") == [
            ("HOLD", 10, at()),
            ("HOLD_RELEASE", 10, at()),
            ("HOLD", 10, at()),
        ]
        hold = desk.ledger("alpha")[-1]
        assert (hold["session_id"], hold["user_id"], hold["product_id"]) == (
            s["session_id"],
            ann,
            "ACAD",
        )
        live = {x["session_id"]: x for x in desk.sessions("alpha")}
        assert live[s["session_id"]]["charge_state"] == "CHARGE_STATE_GRACE"
        assert live[s["session_id"]]["grace_end_time"] == at(m=5)
        assert live[s["session_id"]]["lease_expire_time"] == at(d=1)
        assert live[cys["session_id"]]["state"] == "SESSION_STATE_IDLE"
        assert [(d["device_id"], d.get("running")) for d in desk.devices(ann)] == [("dev-1", True)]
        desk.assert_ledger_adds_up("alpha")
        # M11 after the crash: the same session, nothing more held.
        assert desk.entitle(ann, request_id="r-1")["session_id"] == s["session_id"]
        desk.to(at(m=5))
        assert desk.token_moves("alpha")[-1] == ("CAPTURE", 10, at(m=5))
        assert desk.balance("alpha") == (90, 0)
        desk.assert_ledger_adds_up("alpha")
    finally:
        desk.close()
    assert second.terminate() == 0


def test_restart_kill_9_after_an_acknowledged_charge_keeps_it(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first, desk = start(processes, db)
    desk.sheet().team("alpha", 100)
    ann, bob = desk.user("alpha", "ann"), desk.user("alpha", "bob")
    s = desk.entitle(ann, "REVIT")
    b = desk.entitle(bob)
    desk.to(at(m=2))
    desk.release(bob, b["session_id"])  # free
    assert desk.advance(181) == at(m=5, s=1)  # the charge: captured at 5 min
    keys = dict(desk.keys)
    desk.close()
    first.kill()

    second, desk = start(processes, db, keys)
    try:
        assert desk.now() == at(m=5, s=1)
        assert desk.balance("alpha") == (90, 0)
        assert desk.token_moves("alpha") == [
            ("HOLD", 10, at()),
            ("HOLD", 10, at()),
            ("HOLD_RELEASE", 10, at(m=2)),
            ("CAPTURE", 10, at(m=5)),
        ]
        (pack,) = desk.packs("alpha")
        assert (num(pack, "consumed_tokens"), num(pack, "remaining_tokens")) == (10, 90)
        desk.assert_ledger_adds_up("alpha")
        (live,) = desk.sessions("alpha")
        assert live["session_id"] == s["session_id"]
        assert live["charge_state"] == "CHARGE_STATE_CHARGED"
        assert live["window_end_time"] == at(d=1)
        ended(desk.heartbeat(bob, b["session_id"]), "RELEASED", at(m=2))
        assert [d["device_id"] for d in desk.devices(ann, "REVIT")] == ["dev-1"]
        assert [d["device_id"] for d in desk.devices(bob)] == ["dev-1"]
        report = desk.a("GetUsageReport", {"team_id": "alpha"})
        assert num(report, "total_tokens_charged") == 10
        assert num(report, "total_sessions") == 2

        # The window renews at its end as if nothing had happened.
        desk.to(at(h=23))
        desk.heartbeat(ann, s["session_id"])
        desk.to(at(d=1))
        assert desk.balance("alpha") == (80, 10)
        desk.assert_ledger_adds_up("alpha")
    finally:
        desk.close()
    assert second.terminate() == 0


def test_restart_deadlines_that_fell_due_while_down_fire_at_their_own_instants(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    """The first run keeps a test clock at 2020-01-01; the second runs on the
    real clock (--end-test-clock), years later: every deadline passed while the
    server was down fires at start, in time order, each at its own instant."""
    db = database
    first, desk = start(processes, db, test_clock="2020-01-01T00:00:00Z")
    desk.sheet().team("alpha", 100)
    ann, bob, cy = (desk.user("alpha", n) for n in ("ann", "bob", "cy"))
    desk.a("StartTrial", {"user_id": cy, "product_id": "REVIT", "end_time": "2020-01-01T01:00:00Z"})
    c = desk.entitle(cy, "REVIT")  # on trial until 01:00, then tokens; lease to 2020-01-02
    a = desk.entitle(ann, "REVIT")  # grace to 00:05, lease and window to 2020-01-02
    desk.to("2020-01-01T00:02:00Z")
    b = desk.entitle(bob)  # grace to 00:07, idle at 00:17, lease to 2020-01-02T00:02
    keys = dict(desk.keys)
    desk.close()
    first.kill()

    second, desk = start(processes, db, keys, test_clock=None, extra=["--end-test-clock"])
    try:
        info = desk.a("GetServerInfo")
        assert info.get("test_clock", False) is False
        assert info["now"] > "2021-01-01T00:00:00Z"
        ended(desk.heartbeat(ann, a["session_id"]), "LEASE_EXPIRED", "2020-01-02T00:00:00Z")
        ended(desk.heartbeat(bob, b["session_id"]), "LEASE_EXPIRED", "2020-01-02T00:02:00Z")
        gone = desk.heartbeat(cy, c["session_id"])
        ended(gone, "LEASE_EXPIRED", "2020-01-02T00:00:00Z")
        assert gone["coverage"] == "COVERAGE_TOKENS"
        assert desk.token_moves("alpha") == [
            ("HOLD", 10, "2020-01-01T00:00:00Z"),
            ("HOLD", 10, "2020-01-01T00:02:00Z"),
            ("CAPTURE", 10, "2020-01-01T00:05:00Z"),
            ("CAPTURE", 10, "2020-01-01T00:07:00Z"),
            ("HOLD", 10, "2020-01-01T01:00:00Z"),  # cy's trial ended: tokens, a new grace
            ("CAPTURE", 10, "2020-01-01T01:05:00Z"),
            ("EXPIRY", 70, "2021-01-01T00:00:00Z"),
        ]
        (pack,) = desk.packs("alpha")
        assert pack["state"] == "PACK_STATE_EXPIRED"
        assert desk.balance("alpha") == (0, 0)
        desk.assert_ledger_adds_up("alpha")
        report = desk.a(
            "GetUsageReport",
            {
                "team_id": "alpha",
                "start_time": "2020-01-01T00:00:00Z",
                "end_time": "2020-01-03T00:00:00Z",
            },
        )
        rows = [
            (r["date"], r["user_id"], num(r, "tokens_charged"), num(r, "active_seconds"))
            for r in report["rows"]
        ]
        assert rows == [
            ("2020-01-01", ann, 10, 86400),
            ("2020-01-01", bob, 10, 15 * 60),
            ("2020-01-01", cy, 10, 86400),
        ]
        err = desk.refused(None, "AdvanceClock", {"by": "1s"}, grpc.StatusCode.FAILED_PRECONDITION)
        assert err.reason == "TEST_CLOCK_DISABLED"
    finally:
        desk.close()
    assert second.terminate() == 0


def test_restart_graceful_keeps_pending_idle_instants_and_trial_ends(database: Path | str) -> None:
    """In process, stopped and started again on the same database: the deadlines
    still ahead (an idle instant, a trial's end, a grace end) come at their time."""
    db = database
    with running(db) as srv:
        desk = Desk(srv.target)
        desk.sheet().team("alpha", 100)
        ann, bob = desk.user("alpha", "ann"), desk.user("alpha", "bob")
        desk.a("StartTrial", {"user_id": ann, "product_id": "REVIT", "end_time": at(h=1)})
        a = desk.entitle(ann, "REVIT")
        desk.to(at(m=3))
        b = desk.entitle(bob)  # grace to 8 min, idle at 18 min
        desk.to(at(m=4))
        desk.heartbeat(bob, b["session_id"], 0)  # activity at 4 min: idle at 19 min
        keys = dict(desk.keys)
        desk.close()
    with running(db) as srv:
        desk = Desk(srv.target)
        desk.keys.update(keys)
        try:
            assert desk.now() == at(m=4)
            desk.to(at(m=8))
            assert desk.token_moves("alpha") == [("HOLD", 10, at(m=3)), ("CAPTURE", 10, at(m=8))]
            desk.to(at(m=18, s=59))
            assert desk.heartbeat(bob, b["session_id"], NEVER)["state"] == "SESSION_STATE_ACTIVE"
            desk.to(at(m=19))
            assert desk.heartbeat(bob, b["session_id"], NEVER)["state"] == "SESSION_STATE_IDLE"
            desk.to(at(h=1, m=5))
            charged = desk.heartbeat(ann, a["session_id"])
            assert (charged["coverage"], charged["window_end_time"]) == (
                "COVERAGE_TOKENS",
                at(d=1, h=1),
            )
            assert desk.token_moves("alpha")[2:] == [
                ("HOLD", 10, at(h=1)),
                ("CAPTURE", 10, at(h=1, m=5)),
            ]
            desk.assert_ledger_adds_up("alpha")
        finally:
            desk.close()


def test_restart_kill_9_keeps_the_heartbeats_that_acknowledged_charges_depended_on(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    """Heartbeats are written in batches (here: never, before the kill), but a
    deadline that fires after one depends on it: the renewal at 24 h charges
    because the heartbeat at 23 h kept the session's lease. What AdvanceClock
    acknowledged, the heartbeat included, must survive kill -9, or the stored
    history would show a charge at 24 h 5 min for a session ended at 24 h."""
    db = database
    slow = ["--heartbeat-flush", "3600"]
    first, desk = start(processes, db, extra=slow)
    desk.sheet().team("alpha", 100)
    ann = desk.user("alpha", "ann")
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=23))
    desk.heartbeat(ann, s["session_id"])  # lease to 47 h, in memory only
    desk.to(at(d=1, h=1))  # renewed at 24 h, charged at 24 h 5 min: acknowledged
    before = desk.sessions("alpha")
    keys = dict(desk.keys)
    desk.close()
    first.kill()

    second, desk = start(processes, db, keys, extra=slow)
    try:
        assert desk.sessions("alpha") == before
        (live,) = before
        assert live["lease_expire_time"] == at(d=1, h=23)
        assert live["window_end_time"] == at(d=2)
        assert desk.token_moves("alpha") == [
            ("HOLD", 10, at()),
            ("CAPTURE", 10, at(m=5)),
            ("HOLD", 10, at(d=1)),
            ("CAPTURE", 10, at(d=1, m=5)),
        ]
    finally:
        desk.close()
    assert second.terminate() == 0


def _let_go_of_ended(srv: Any) -> int:
    """What the server's flush loop does every ``FORGET_EVERY`` seconds."""

    async def go() -> int:
        assert srv.server.engine is not None
        return int(srv.server.engine.sessions.forget_ended())

    return int(srv.call(go()))


def test_m11_a_reused_request_id_finds_the_latest_session_after_a_restart(
    tmp_path: Path,
) -> None:
    """ann's Entitle reuses "e-1" three days after its first session ended (let go
    of, so it opens a second: M11). After a restart, repeating it answers the second
    session, before and after the first is let go of again, and holds nothing."""
    db = tmp_path / "t.db"
    with running(db) as srv:
        d = Desk(srv.target).sheet()
        d.team("alpha", 100)
        ann = d.user("alpha", "ann")
        s1 = d.entitle(ann, request_id="e-1")["session_id"]
        d.to(at(m=1))
        d.release(ann, s1)
        d.to(at(d=3))
        assert _let_go_of_ended(srv) == 1
        s2 = d.entitle(ann, request_id="e-1")["session_id"]
        assert s2 != s1
        d.to(at(d=3, m=1))
        d.release(ann, s2)
        keys = dict(d.keys)
        d.close()
    with running(db) as srv:
        d = Desk(srv.target)
        d.keys.update(keys)
        d.to(at(d=3, m=2))
        assert d.entitle(ann, request_id="e-1")["session_id"] == s2
        _let_go_of_ended(srv)  # s1 ended three days ago; s2 two minutes ago
        assert d.entitle(ann, request_id="e-1")["session_id"] == s2
        assert d.balance("alpha") == (100, 0)
        d.close()


ZED = {
    "product_id": "ZED",
    "display_name": "Zed",
    "daily_rate": 10,
    "kind": "PRODUCT_KIND_PRODUCT",
    "platforms": ["PLATFORM_WINDOWS"],
}


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_m5_renewals_due_at_one_instant_are_paid_by_team_then_product_restart_or_not(
    database: Path | str, restart: bool
) -> None:
    """ann opens ZED, then REVIT (10 tokens a day each, neither idle-aware) at T0:
    alpha's 30 tokens pay both days and leave 10, one renewal. Both windows close
    in use at 24 h (M5). The one renewed is REVIT's, by team then product, whether
    the server ran through or restarted at 12 h: it was the meter made first
    (ZED's) while it ran, and the stored order's first (REVIT's) after a restart,
    so which product a user kept depended on a restart (RULES §7)."""
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(running(database))
        d = Desk(srv.target).sheet()
        d.a("UpsertProduct", {"product": ZED})
        d.team("alpha", 30)
        ann = d.user("alpha", "ann")
        zed = d.entitle(ann, "ZED")["session_id"]
        revit = d.entitle(ann, "REVIT")["session_id"]
        d.to(at(h=12))
        d.heartbeat(ann, zed)
        d.heartbeat(ann, revit)
        keys = dict(d.keys)
        d.close()
        if restart:
            stack.close()  # stopped, then started again on the same database
            srv = stack.enter_context(running(database))
        d = Desk(srv.target)
        d.keys.update(keys)
        d.to(at(d=1, m=1))
        assert d.heartbeat(ann, zed).get("end_reason") == "END_REASON_INSUFFICIENT_TOKENS"
        assert "end_reason" not in d.heartbeat(ann, revit)
        assert d.balance("alpha") == (0, 10)  # REVIT's renewal, held for its grace (M3)
        d.close()
