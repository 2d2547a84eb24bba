"""An engine restored from its store keeps what it loaded where the rules use
it, and nowhere else: a hold of a meter in grace (M2) belongs to its meter,
and is gone from memory once captured or released (M3)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

from server.clock import TestClock
from server.domain.products import Platform, Product
from server.domain.sessions import ChargeState
from server.domain.teams import Plan
from server.engine.core import Engine
from server.store.sqlite import Store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def _engine(db: Path, clock: TestClock) -> Engine:
    store = await Store.open(db)
    return Engine.restore(await store.load(), clock, store)


async def test_m2_a_restored_hold_is_held_by_its_meter_alone(tmp_path: Path) -> None:
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await engine.start(heartbeat_flush=0)
    await engine.accounts.create_team("acme", "Acme", Plan.STANDARD)
    await engine.accounts.purchase("acme", 100, "pack-1")
    await engine.accounts.upsert_product(
        Product("ACAD", "AutoCAD", 5, platforms=frozenset({Platform.WINDOWS}))
    )
    await engine.access.assign(
        "acme", ["Ann <ann@example.com>"], ["ACAD"], False, False, import_=True
    )
    user_id = "ann@example.com"
    view = await engine.sessions.entitle(
        user_id,
        product_id="ACAD",
        product_version="2026",
        platform=Platform.WINDOWS,
        device_id="d1",
        parent_session_id="",
        request_id="r1",
        takeover=False,
        team_id="",
    )
    await engine.stop()
    await engine.store.close()

    again = await _engine(tmp_path / "t.db", clock)
    meter = again.sessions.lic.meter("acme", user_id, "ACAD")
    assert meter is not None and meter.state is ChargeState.GRACE and meter.hold is not None
    assert meter.hold.amount == 5 and again.ledger.held("acme") == 5
    # The loaded hold is its meter's alone: nothing else keeps it past its capture.
    assert [r for r in gc.get_referrers(meter.hold) if r is not meter] == []
    await again.start(heartbeat_flush=0)
    await again.advance_clock(None, again.terms.grace.total_seconds())
    assert meter.state is ChargeState.CHARGED and meter.hold is None
    assert again.ledger.held("acme") == 0 and view.session.session_id
    await again.stop()
    await again.store.close()
