"""Chaos (issue 13, point 6): the active killed or paused under load loses nothing.

A few cycles of ``scripts/chaos.py`` on two server processes sharing one
PostgreSQL database, the load from the SDK (RULES H3): one
``client_sdk.AsyncClient(targets=[both servers])`` per user (entitle,
heartbeat, idle, release), and the operator's purchases, clock advances and
ledger reads through ``client_sdk.failover.Failover``; then kill -9 and SIGSTOP
of the active in turn, the load going on through the takeover. After each, a
standby serves within 10 s, the clients follow it (calls acknowledged by the
new active), every session live at the break heartbeats there with its id (or
ended with a reason), the paused one comes back as a standby, ``verify``
passes, and every acknowledged purchase (bought once), session (with its hold
or charge), device and ledger entry is on the new active, each team's balance
the sums over its packs. The long run is ``python scripts/chaos.py --cycles 30``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tessera_api.tessera.v1 import common_pb2 as pb
from tests.support import REPO

CYCLES = int(os.environ.get("TESSERA_CHAOS_CYCLES", "0") or 0) or 4
SEED = int(os.environ.get("TESSERA_CHAOS_SEED", "0") or 0) or 13


def _chaos() -> ModuleType:
    path = REPO / "scripts" / "chaos.py"
    spec = importlib.util.spec_from_file_location("chaos", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chaos", module)
    spec.loader.exec_module(module)
    return module


chaos = _chaos()


@pytest.mark.slow
@pytest.mark.timeout(max(90, CYCLES * 25))
def test_h2_chaos_kill_and_pause_the_active_under_load_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    summary, cluster = chaos.run(CYCLES, tmp_path, pg_url, SEED, max_load=1.0)
    print(f"seed {SEED}: {summary.line()}; takeovers {cluster.takeovers}", file=sys.stderr)
    assert not summary.problems, "\n".join(summary.problems[:20])
    assert summary.lost == 0
    assert summary.cycles == CYCLES
    assert cluster.breaks["kill -9"] >= 1 and cluster.breaks["SIGSTOP"] >= 1
    assert len(cluster.takeovers) == CYCLES
    assert max(cluster.takeovers) < chaos.TAKEOVER_BOUND
    # The breaks really landed mid-load, and much was acknowledged.
    assert summary.in_flight_at_kill > 0
    acknowledged = {k: n for k, n in summary.calls.items() if k.endswith(":OK")}
    for what in ("Entitle", "Heartbeat", "PurchaseTokens", "AdvanceClock"):
        assert acknowledged.get(f"{what}:OK", 0) > 0, f"no {what} was acknowledged"
    # The SDK's clients followed each new active, and the sessions live at a break
    # kept their ids there: some live on (the others ended with a reason).
    assert summary.followed > 0
    assert summary.continued["live"] > 0


def test_h2_chaos_check_finds_a_charge_made_twice(tmp_path: Path) -> None:
    """The check itself: a hold captured twice in a pack is reported; captured once
    (or released) it is not."""
    loop = chaos.crash_loop
    summary = loop.Summary()
    cluster = loop.Cluster(tmp_path, loop.random.Random(1), summary)
    kinds = {"hold": (2, 10), "capture": (3, -10), "release": (4, -10)}

    def ledger(*steps: str) -> dict[str, tuple[object, ...]]:
        entries = {}
        for i, step in enumerate(steps):
            kind, held = kinds[step]
            entry_id = f"e{i}"
            entries[entry_id] = (entry_id, i, 0, kind, "p1", 10, "s1", "u", "ACAD", "t", 0, held)
        return entries

    cluster._check_charges(ledger("hold", "capture", "hold", "release"))
    assert summary.problems == []
    cluster._check_charges(ledger("hold", "capture", "capture"))
    assert len(summary.problems) == 1 and "e2 captures or releases more" in summary.problems[0]


def test_c3_chaos_check_takes_a_charge_paid_in_the_users_other_team(tmp_path: Path) -> None:
    """The check itself: a session of beta told charged until a window's end is backed
    by a capture of its user's for the product in alpha within that window (C3: paid
    once a day whichever teams); without any capture in the window it is reported."""
    loop = chaos.crash_loop
    summary = loop.Summary()
    cluster = loop.Cluster(tmp_path, loop.random.Random(1), summary)
    window_end = datetime(2026, 1, 18, 16, 50, 7, tzinfo=UTC)
    told = pb.Session(
        session_id="se1",
        user_id="u",
        team_id="beta",
        product_id="ACAD",
        state=pb.SESSION_STATE_ACTIVE,
        charge_state=pb.CHARGE_STATE_CHARGED,
    )
    told.start_time.FromDatetime(window_end - timedelta(hours=3))
    told.window_end_time.FromDatetime(window_end)
    cluster.acked.sessions["se1"] = loop.Told(told, "Heartbeat")

    def capture(at: datetime) -> dict[str, tuple[object, ...]]:
        ts = Timestamp()
        ts.FromDatetime(at)
        kind = pb.LEDGER_ENTRY_KIND_CAPTURE
        return {
            "e1": ("e1", ts.seconds, ts.nanos, kind, "p1", 10, "s0", "u", "ACAD", "alpha", -10, -10)
        }

    cluster._compare_sessions({"se1": told}, capture(window_end - timedelta(hours=5)))
    assert summary.problems == []
    cluster._compare_sessions({"se1": told}, capture(window_end - timedelta(days=1, hours=1)))
    assert len(summary.problems) == 1 and "no capture is recorded" in summary.problems[0]
