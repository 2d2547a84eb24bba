"""An engine restored from its store keeps what it loaded where the rules use
it, and nowhere else: a hold of a meter in grace (M2) belongs to its meter,
and is gone from memory once captured or released (M3). A meter's hold is
named after the session that caused it, and found again by its meter's key."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.clock import TestClock
from server.domain.changes import Changes, Deleted
from server.domain.coverage import SubscriptionKind
from server.domain.ledger import Cause, Hold
from server.domain.meta import (
    SESSIONS_FROM_KEY,
    SESSIONS_RECENT_FROM_KEY,
    MetaValue,
    OlderLoaded,
)
from server.domain.products import Platform, Product
from server.domain.sessions import ChargeState, Coverage, Session
from server.domain.teams import Plan
from server.domain.timers import TimerKind
from server.engine.core import Engine
from server.store.sqlite import Store
from tests.support import entitle_on_engine

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def _engine(db: Path, clock: TestClock) -> Engine:
    store = await Store.open(db)
    return Engine.restore(await store.load(), clock, store)


async def _ann_and_acad(engine: Engine) -> None:
    """Team acme with 100 tokens; ACAD at 5 a day, idle-aware; Ann assigned it."""
    await engine.start(heartbeat_flush=0)
    await engine.accounts.create_team("acme", "Acme", Plan.STANDARD)
    await engine.accounts.purchase("acme", 100, "pack-1")
    await engine.accounts.upsert_product(
        Product("ACAD", "AutoCAD", 5, idle_aware=True, platforms=frozenset({Platform.WINDOWS}))
    )
    await engine.access.assign(
        "acme", ["Ann <ann@example.com>"], ["ACAD"], False, False, import_=True
    )


async def _ann_and_revit(engine: Engine) -> None:
    """Team acme with 100 tokens; REVIT at 10 a day, not idle-aware; Ann assigned it."""
    await engine.start(heartbeat_flush=0)
    await engine.accounts.create_team("acme", "Acme", Plan.STANDARD)
    await engine.accounts.purchase("acme", 100, "pack-1")
    windows = frozenset({Platform.WINDOWS})
    await engine.accounts.upsert_product(Product("REVIT", "Revit", 10, platforms=windows))
    await engine.access.assign(
        "acme", ["Ann <ann@example.com>"], ["REVIT"], False, False, import_=True
    )


async def _entitle_ann(engine: Engine, request_id: str, product_id: str = "ACAD") -> str:
    """Ann opens ``product_id`` on device d1; the new session's id."""
    return await entitle_on_engine(engine, "ann@example.com", product_id, request_id)


async def test_m2_a_restored_hold_is_held_by_its_meter_alone(tmp_path: Path) -> None:
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    user_id = "ann@example.com"
    session_id = await _entitle_ann(engine, "r1")
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
    assert again.ledger.held("acme") == 0 and session_id
    await again.stop()
    await again.store.close()


async def test_m2_m3_a_meters_hold_is_named_after_its_session_through_a_break_and_a_restart(
    tmp_path: Path,
) -> None:
    """M2 holds at Entitle, M3 releases at a break (Idle), M2 holds again when the
    same session resumes: the second hold has the first one's name (its
    session's id) and replaces nothing but it. After a restart exactly one hold
    of 5 is held, found by its meter."""
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    ann = "ann@example.com"
    session_id = await _entitle_ann(engine, "")
    meter = engine.sessions.lic.meter("acme", ann, "ACAD")
    assert meter is not None and meter.hold is not None
    assert meter.hold.hold_id == session_id and meter.hold.hold_id is session_id
    clock.set(T0 + timedelta(minutes=1))
    await engine.sessions.idle(ann, session_id)  # M3: a break, the hold goes back
    assert meter.state is ChargeState.NONE and engine.ledger.held("acme") == 0
    clock.set(T0 + timedelta(minutes=2))
    await engine.sessions.heartbeat(ann, session_id, 0)  # M6: active again, M2: held again
    assert meter.state is ChargeState.GRACE and meter.hold is not None
    assert meter.hold.hold_id == session_id and engine.ledger.held("acme") == 5
    await engine.stop()
    await engine.store.close()

    again = await _engine(tmp_path / "t.db", clock)
    restored = again.sessions.lic.meter("acme", ann, "ACAD")
    assert restored is not None and restored.state is ChargeState.GRACE
    assert restored.grace_start == T0 + timedelta(minutes=2)
    assert restored.hold is not None and restored.hold.hold_id == session_id
    assert again.ledger.held("acme") == 5 and again.ledger.available("acme") == 95
    await again.store.close()


async def test_m3_a_restart_keeps_the_grace_end_of_each_meter_of_a_user(tmp_path: Path) -> None:
    """Ann's ACAD meter has nothing due (its session went idle in grace: the hold
    went back, M3) and her REVIT meter is in grace. A restart schedules the grace
    end of every meter of hers, not only of those before the first with nothing
    due: 5 minutes after REVIT's Entitle its hold is captured (M3)."""
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    await engine.accounts.upsert_product(
        Product("REVIT", "Revit", 7, idle_aware=True, platforms=frozenset({Platform.WINDOWS}))
    )
    await engine.access.assign("acme", ["ann@example.com"], ["REVIT"], False, False, import_=False)
    ann = "ann@example.com"
    acad = await _entitle_ann(engine, "r1")
    clock.set(T0 + timedelta(minutes=1))
    await engine.sessions.idle(ann, acad)
    await _entitle_ann(engine, "r2", "REVIT")
    await engine.stop()
    await engine.store.close()

    again = await _engine(tmp_path / "t.db", clock)
    meters = again.sessions.lic.meters
    assert [m.product_id for m in meters.of_user(ann)] == ["ACAD", "REVIT"]
    assert [(m.state, m.end) for m in meters.of_user(ann)] == [
        (ChargeState.NONE, None),
        (ChargeState.GRACE, T0 + timedelta(minutes=6)),
    ]
    await again.start(heartbeat_flush=0)
    await again.advance_clock(None, timedelta(minutes=5).total_seconds())
    revit = again.sessions.lic.meter("acme", ann, "REVIT")
    assert revit is not None and revit.state is ChargeState.CHARGED and revit.hold is None
    assert again.ledger.held("acme") == 0 and again.ledger.available("acme") == 93
    await again.stop()
    await again.store.close()


async def test_m2_m3_a_hold_released_and_taken_again_in_one_commit_is_stored_once(
    tmp_path: Path,
) -> None:
    """In one group commit the last write of a key wins: a hold deleted (M3
    release) and written again under the same name (M2) is stored; the reverse
    order leaves no row."""
    store = await Store.open(tmp_path / "t.db")
    cause = Cause("se_1", "ann@example.com", "ACAD")
    first = Hold.of("se_1", "acme", 5, (("pk_1", 5),), cause, T0)
    second = Hold.of("se_1", "acme", 5, (("pk_1", 5),), cause, T0 + timedelta(minutes=2))
    await store.commit([first])
    await store.commit(Changes([Deleted(first), second]))
    assert [(h.hold_id, h.time) for h in (await store.load()).of(Hold)] == [
        ("se_1", T0 + timedelta(minutes=2))
    ]
    await store.commit(Changes([second, Deleted(second)]))
    assert (await store.load()).of(Hold) == []
    await store.close()


async def test_c1_a_restart_does_not_replay_a_subscription_granted_after_its_period(
    tmp_path: Path,
) -> None:
    """Ann's REVIT session (10 a day, not idle-aware) from 0: charged at 5 min,
    renewed at 1 d (M5: 10 held, grace until 1 d 5 min). At 1 d 2 min the
    operator grants a subscription for 23 h to 23 h 30 min, a period already
    over: it covers nothing from the grant on (C1), so nothing changes. A restart
    then must not replay it into the past (a release dated 23 h of the hold taken
    at 1 d, a hold at 23 h 30 min): the renewal is captured at 1 d 5 min, as on
    the server that did not restart."""
    day, minute = timedelta(days=1), timedelta(minutes=1)
    clock = TestClock(T0)
    db = tmp_path / "t.db"
    engine = await _engine(db, clock)
    await _ann_and_revit(engine)
    ann = "ann@example.com"
    session_id = await _entitle_ann(engine, "", "REVIT")
    await engine.advance_clock(T0 + timedelta(hours=2), None)
    await engine.sessions.heartbeat(ann, session_id, 0)  # the lease until 1 d 2 h
    granted = T0 + day + 2 * minute
    await engine.advance_clock(granted, None)
    sub = SubscriptionKind.SUBSCRIPTION
    await engine.access.grant(ann, "REVIT", T0 + day - 60 * minute, T0 + day - 30 * minute, sub)
    await engine.stop()
    await engine.store.close()

    again = await _engine(db, clock)
    try:
        await again.start(heartbeat_flush=0)
        await again.advance_clock(T0 + day + 10 * minute, None)
        entries = await again.accounts.ledger_page("acme", 1, 100)
        session = again.sessions.lic.session(session_id)
        fired = again.scheduler.fired_by_kind[TimerKind.COVERAGE_CHANGE]
    finally:
        await again.stop()
        await again.store.close()
    assert [(e.kind.value, e.amount, e.time) for e in entries] == [
        ("HOLD", 10, T0),
        ("CAPTURE", 10, T0 + 5 * minute),
        ("HOLD", 10, T0 + day),
        ("CAPTURE", 10, T0 + day + 5 * minute),
    ]
    assert (session.live, session.coverage, fired) == (True, Coverage.TOKENS, 0)


async def test_c1_a_subscription_ending_after_a_restart_stops_covering_at_its_end(
    tmp_path: Path,
) -> None:
    """Ann runs REVIT (10 a day) under a subscription that ends at 1 h; the server
    restarts at 30 min. At 1 h her session pays by tokens (C1): 10 held then,
    captured at 1 h 5 min (M3), as on a server that did not restart."""
    minute = timedelta(minutes=1)
    clock = TestClock(T0)
    db = tmp_path / "t.db"
    engine = await _engine(db, clock)
    await _ann_and_revit(engine)
    ann = "ann@example.com"
    sub = SubscriptionKind.SUBSCRIPTION
    await engine.access.grant(ann, "REVIT", T0, T0 + 60 * minute, sub)
    session_id = await _entitle_ann(engine, "", "REVIT")
    assert engine.sessions.lic.session(session_id).coverage is Coverage.SUBSCRIPTION
    await engine.advance_clock(T0 + 30 * minute, None)
    await engine.stop()
    await engine.store.close()

    again = await _engine(db, clock)
    try:
        await again.start(heartbeat_flush=0)
        await again.advance_clock(T0 + 70 * minute, None)
        entries = await again.accounts.ledger_page("acme", 1, 100)
        session = again.sessions.lic.session(session_id)
    finally:
        await again.stop()
        await again.store.close()
    assert [(e.kind.value, e.amount, e.time) for e in entries] == [
        ("HOLD", 10, T0 + 60 * minute),
        ("CAPTURE", 10, T0 + 65 * minute),
    ]
    assert (session.live, session.coverage) == (True, Coverage.TOKENS)


async def test_m11_a_start_reads_the_sessions_from_the_kept_bound_and_loads_the_same_ones(
    tmp_path: Path,
) -> None:
    """A start loads the live sessions and those ended in the last days (M11, M12)
    from the bound the engine keeps (``keep_load_bound``): the first stored session
    a start would load, lowered by any in memory. Loaded from it, a start finds the
    same sessions as from the first ever stored; the older ones stay stored."""
    user = "ann@example.com"
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    first = await _entitle_ann(engine, "r1")
    await engine.sessions.release(user, first)
    await engine.advance_clock(None, timedelta(days=10).total_seconds())
    second = await _entitle_ann(engine, "r2")
    await engine.sessions.release(user, second)  # the last to end: loaded (M11)
    third = await _entitle_ann(engine, "r3")  # live
    # Right after a start's load memory holds what it loaded: no read needed.
    assert await engine.sessions.keep_load_bound(read=False) == first
    engine.sessions.forget_ended()  # the first, ended 10 days ago, let go
    assert await engine.sessions.keep_load_bound() == second  # stored, and first loaded
    assert await engine.sessions.keep_load_bound() is None  # the same: not stored again
    stored = {m.key: m.value for m in (await engine.store.load()).of(MetaValue)}
    assert stored[SESSIONS_FROM_KEY] == second
    await engine.stop()
    await engine.store.close()

    again = await _engine(tmp_path / "t.db", clock)
    assert sorted(s.session_id for s in again.sessions.lic.all_sessions()) == [second, third]
    old = await again.store.ended_session(first)
    assert old is not None and old.session_id == first  # stored still (M12 reads it)
    await again.store.close()


async def test_m11_a_session_live_for_weeks_is_loaded_from_below_the_recent_bound(
    tmp_path: Path,
) -> None:
    """Ann's session, live for three weeks (a Heartbeat a day renews its lease, M7),
    held the load bound where it opened: every start read every session stored
    since (a month of a busy server's, to load a few days of them). The engine
    keeps a recent bound too, the first session in memory opened in the days
    memory keeps ended ones (``ENDED_KEPT``), and names the sessions in memory
    below it (``OlderLoaded``); a start loads those and the ones from the bound on,
    the same sessions as before. The release before's bound stays where it was."""
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    await engine.accounts.purchase("acme", 1000, "pack-2")
    bob = "bob@example.com"
    await engine.access.assign("acme", [f"Bob <{bob}>"], ["ACAD"], False, False, import_=True)
    day = timedelta(days=1)
    long = await _entitle_ann(engine, "long")
    bobs = []
    for n in range(1, 22):
        for hours in (12, 1):  # two Heartbeats a day: the lease never runs out
            await engine.advance_clock(T0 + n * day - timedelta(hours=hours), None)
            await engine.sessions.heartbeat("ann@example.com", long, 0)
        bobs.append(await entitle_on_engine(engine, bob, "ACAD", f"b{n}"))
        await engine.sessions.release(bob, bobs[-1])
    assert engine.sessions.lic.session(long).live
    engine.sessions.forget_ended()
    kept = [s.session_id for s in engine.sessions.lic.all_sessions() if s.session_id != long]
    assert kept == bobs[-3:]  # ended within the 2 days (the one 2 days ago, at the edge)
    assert await engine.sessions.keep_load_bound() == long  # the release before's: unmoved
    loaded = await engine.store.load()
    stored = {m.key: m.value for m in loaded.of(MetaValue)}
    assert (stored[SESSIONS_FROM_KEY], stored[SESSIONS_RECENT_FROM_KEY]) == (long, bobs[-3])
    assert loaded.of(OlderLoaded) == [OlderLoaded(long)]
    assert sorted(s.session_id for s in loaded.of(Session)) == [long, *bobs[-3:]]

    await engine.stop()
    await engine.store.close()
    again = await _engine(tmp_path / "t.db", clock)
    assert sorted(s.session_id for s in again.sessions.lic.all_sessions()) == [long, *bobs[-3:]]
    assert again.sessions.lic.session(long).live

    # Ann's session ends, the server goes quiet: once memory lets every session go,
    # no session is named and the bound is the release before's (a start loads what
    # it loads: the last to end, and those ended in the days before).
    await again.start(heartbeat_flush=0)
    await again.sessions.release("ann@example.com", long)
    await again.advance_clock(T0 + 24 * day, None)
    again.sessions.forget_ended()
    await again.sessions.keep_load_bound()
    loaded = await again.store.load()
    assert SESSIONS_RECENT_FROM_KEY not in {m.key for m in loaded.of(MetaValue)}
    assert loaded.of(OlderLoaded) == []
    assert sorted(s.session_id for s in loaded.of(Session)) == [long, *bobs[-3:]]
    await again.stop()
    await again.store.close()


async def test_m11_the_load_bound_counts_a_session_in_memory_whose_commit_is_under_way(
    tmp_path: Path,
) -> None:
    """A session opened here whose commit has not reached the store when the bound
    is read is in memory by then: the bound kept is never above it, or a start
    after it was stored would not load it."""
    clock = TestClock(T0)
    engine = await _engine(tmp_path / "t.db", clock)
    await _ann_and_acad(engine)
    earlier = await _entitle_ann(engine, "r1")
    later = earlier[:-1] + chr(ord(earlier[-1]) + 1)  # a session stored after it

    async def first_stored() -> str | None:
        return later  # as if ``earlier`` were not stored yet

    engine.store.sessions_load_bound = first_stored  # type: ignore[method-assign]
    assert await engine.sessions.keep_load_bound() == earlier
    await engine.stop()
    await engine.store.close()
