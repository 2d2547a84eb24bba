"""A plain heartbeat is written in a batch later, but its answer tells the
session's state and its meter's charge (issue 4: "every hold, capture, release,
session start and end is committed ... before the RPC answers"). When a deadline
that ended or charged them is still on its way to disk, the answer waits for it;
a commit of other sessions does not hold it up (at 100,000 sessions, waiting for
every commit under way left the server idle a sixth of the time).

The store's writer is held at a gate, on the server's own loop, so that a
commit stays "under way" for as long as the test wants, with no sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from server.domain.changes import Changes
from server.domain.products import Platform
from server.engine import Engine
from server.engine import sessions as sessions_module
from tests.licensing_desk import Desk
from tests.store.held import held_writer
from tests.support import ServerThread


@pytest.fixture
def desk(server: ServerThread) -> Iterator[Desk]:
    d = Desk(server.target).sheet()
    d.team("alpha", 100)
    try:
        yield d
    finally:
        d.close()


def test_durability_heartbeat_waits_for_the_commit_of_its_own_session_only(
    server: ServerThread, desk: Desk
) -> None:
    ann, bob = desk.user("alpha", "ann"), desk.user("alpha", "bob")
    anns = desk.entitle(ann, "REVIT")["session_id"]
    bobs = desk.entitle(bob, "REVIT")["session_id"]

    async def scenario() -> dict[str, Any]:
        engine = server.server.engine
        assert engine is not None
        async with held_writer(engine.store) as (gate, holding, _):
            ann_session = engine.sessions.lic.find_session(anns)
            commit = asyncio.create_task(engine.commit(Changes([ann_session])))
            await asyncio.wait_for(holding.wait(), 10)  # the commit is taken and held
            assert engine.committing
            bob_view = await asyncio.wait_for(engine.sessions.heartbeat(bob, bobs, 0), 10)
            ann_beat = asyncio.create_task(engine.sessions.heartbeat(ann, anns, 0))
            for _ in range(50):  # give it every chance to answer early
                await asyncio.sleep(0)
            ann_waited = not ann_beat.done()
            gate.set()
            await commit
            ann_view = await asyncio.wait_for(ann_beat, 10)
        return {"bob": bob_view, "ann": ann_view, "ann_waited": ann_waited}

    out = server.call(scenario())
    assert out["bob"].session.session_id == bobs  # answered while ann's commit was held
    assert out["ann_waited"] is True
    assert out["ann"].session.session_id == anns


def test_m8_a_removed_device_stays_removed_when_the_heartbeat_batch_is_written(
    server: ServerThread, desk: Desk
) -> None:
    """RemoveDevice (R2) after a heartbeat whose device is still waiting in the
    batch: the batch written later must not store the device again (after a
    restart it would hold one of the user's three places, M8)."""
    ann = desk.user("alpha", "ann")
    sid = desk.entitle(ann, "REVIT")["session_id"]
    desk.advance(60)
    desk.heartbeat(ann, sid)  # the device's last-seen time waits in the batch
    desk.a(
        "RemoveDevice",
        {"user_id": ann, "product_id": "REVIT", "device_id": "dev-1", "end_sessions": True},
    )

    async def stored() -> list[Any]:
        engine = server.server.engine
        assert engine is not None
        await engine.sessions.flush()
        return await engine.store.query("SELECT device_id FROM devices WHERE user_id = ?", (ann,))

    assert server.call(stored()) == []
    assert desk.devices(ann, "REVIT") == []


async def flush_with_a_call_behind_its_first_chunk(
    engine: Engine, call: Coroutine[Any, Any, Any]
) -> list[list[Any]]:
    """Flush the heartbeat batch with ``call`` made while its first chunk is
    held at the writer; the ops of each transaction, in order."""
    async with held_writer(engine.store) as (gate, holding, writes):
        flush = asyncio.create_task(engine.sessions.flush())
        await asyncio.wait_for(holding.wait(), 10)  # the first chunk is taken and held
        other = asyncio.create_task(call)
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(other, 10)
        await asyncio.wait_for(flush, 10)
    return writes


def test_durability_an_idle_during_a_heartbeat_flush_waits_behind_one_chunk_only(
    server: ServerThread, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is written FLUSH_CHUNK objects per commit, so a call that
    commits during a flush (here an Idle, M6) is written after one chunk, not
    after the whole batch."""
    monkeypatch.setattr(sessions_module, "FLUSH_CHUNK", 2)
    users = [desk.user("alpha", name) for name in ("ann", "bob", "cy", "dee")]
    sids = [desk.entitle(u)["session_id"] for u in users]  # ACAD: idle-aware
    desk.advance(60)
    for u, sid in zip(users[:3], sids[:3], strict=True):
        desk.heartbeat(u, sid)  # 3 sessions + 3 devices wait in the batch

    async def scenario() -> list[list[Any]]:
        engine = server.server.engine
        assert engine is not None
        assert engine.sessions.dirty == 6
        return await flush_with_a_call_behind_its_first_chunk(
            engine, engine.sessions.idle(users[3], sids[3])
        )

    writes = server.call(scenario())
    idle_write = next(
        i for i, ops in enumerate(writes) if any(row[0] == sids[3] for _, _, row in ops)
    )
    assert idle_write == 1  # right after the first chunk
    assert [len(ops) for ops in writes[:1]] == [2]
    assert sum(len(ops) for i, ops in enumerate(writes) if i != idle_write) == 6
    states = {s["session_id"]: s["state"] for s in desk.sessions("alpha")}
    assert states[sids[3]] == "SESSION_STATE_IDLE"


def test_durability_the_last_flush_at_stop_writes_the_batch_in_larger_chunks(
    server: ServerThread, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At stop no call is left to wait behind the flush: it writes
    LAST_FLUSH_CHUNK objects per commit, not FLUSH_CHUNK, and writes them all."""
    monkeypatch.setattr(sessions_module, "FLUSH_CHUNK", 1)
    monkeypatch.setattr(sessions_module, "LAST_FLUSH_CHUNK", 4)
    users = [desk.user("alpha", name) for name in ("ann", "bob", "cy")]
    sids = [desk.entitle(u, "REVIT")["session_id"] for u in users]
    desk.advance(60)
    for u, sid in zip(users, sids, strict=True):
        desk.heartbeat(u, sid)  # 3 sessions + 3 devices wait in the batch

    async def scenario() -> tuple[list[list[Any]], int]:
        engine = server.server.engine
        assert engine is not None
        assert engine.sessions.dirty == 6
        async with held_writer(engine.store) as (gate, _, writes):
            gate.set()
            await asyncio.wait_for(engine.sessions.stop(), 10)
        return writes, engine.sessions.dirty

    writes, left = server.call(scenario())
    assert [len(ops) for ops in writes] == [4, 2]
    assert left == 0


def test_m8_a_device_removed_while_its_batch_is_being_written_stays_removed(
    server: ServerThread, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions_module, "FLUSH_CHUNK", 1)
    ann, bob = desk.user("alpha", "ann"), desk.user("alpha", "bob")
    anns = desk.entitle(ann, "REVIT")["session_id"]
    bobs = desk.entitle(bob, "REVIT")["session_id"]
    desk.advance(60)
    desk.heartbeat(ann, anns)
    desk.heartbeat(bob, bobs)

    async def scenario() -> tuple[list[Any], float]:
        engine = server.server.engine
        assert engine is not None
        flushed = engine.sessions.flushes.sizes.sum
        # One object of four is queued; three wait.
        await flush_with_a_call_behind_its_first_chunk(
            engine, engine.sessions.remove_device(ann, "REVIT", "dev-1", end_sessions=True)
        )
        rows = await engine.store.query("SELECT user_id FROM devices ORDER BY user_id")
        return rows, engine.sessions.flushes.sizes.sum - flushed

    devices, flushed = server.call(scenario())
    assert devices == [(bob,)]
    # tessera_heartbeat_flush_objects counts what the flush wrote: its first chunk, held
    # (one of ann's objects), and bob's two; not ann's other, which the removal took
    # out of its batch (it counted the 4 it began with).
    assert flushed == 3


def test_m11_a_repeat_of_an_entitle_whose_caller_gave_up_waits_for_its_commit(
    server: ServerThread, desk: Desk
) -> None:
    """An Entitle's caller cancelled while its commit waits (a deadline, a client gone):
    its rows stay queued and are written. A repeat of its request_id (M11, nothing
    new to store) answers only once they are stored: answered at once from memory,
    it promised a session that a crash before the commit would undo."""
    ann = desk.user("alpha", "ann")
    args: dict[str, Any] = {
        "product_id": "REVIT",
        "product_version": "2026",
        "platform": Platform.WINDOWS,
        "device_id": "d1",
        "parent_session_id": "",
        "request_id": "req-gave-up",
        "takeover": False,
        "team_id": "",
    }

    async def scenario() -> tuple[bool, str, str]:
        engine = server.server.engine
        assert engine is not None
        async with held_writer(engine.store) as (gate, holding, _):
            first = asyncio.create_task(engine.sessions.entitle(ann, **args))
            await asyncio.wait_for(holding.wait(), 10)  # its commit is taken and held
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            repeat = asyncio.create_task(engine.sessions.entitle(ann, **args))
            for _ in range(50):  # give it every chance to answer early
                await asyncio.sleep(0)
            waited = not repeat.done()
            gate.set()
            view = await asyncio.wait_for(repeat, 10)
        stored = await engine.store.query(
            "SELECT session_id FROM sessions WHERE request_id = ?", ("req-gave-up",)
        )
        return waited, view.session.session_id, str(stored[0][0])

    waited, answered, stored = server.call(scenario())
    assert waited is True
    assert answered == stored


def test_m7_a_heartbeat_near_its_lease_end_is_stored_before_its_answer(
    server: ServerThread, desk: Desk
) -> None:
    """A heartbeat is batched (a crash may lose the last seconds of them) unless its
    session's lease ends within STORED_WHEN_LEASE_ENDS_WITHIN: a product back after
    23 h 50 min offline is told of 24 new hours (its signed lease runs on offline),
    and were that heartbeat lost with the batch, the stored lease would end 10
    minutes later and a takeover or restart would end the session LEASE_EXPIRED.
    It is stored before the answer; one a minute later is batched again."""
    ann = desk.user("alpha", "ann")
    sid = desk.entitle(ann, "REVIT")["session_id"]
    now = datetime.fromisoformat(desk.advance(23 * 3600 + 50 * 60).replace("Z", "+00:00"))
    desk.heartbeat(ann, sid)

    async def stored() -> tuple[int, Any]:
        engine = server.server.engine
        assert engine is not None
        rows = await engine.store.query(
            "SELECT lease_start FROM sessions WHERE session_id = ?", (sid,)
        )
        return engine.sessions.dirty, rows[0][0]

    left, lease_start = server.call(stored())
    assert left == 0  # nothing of it waits in the batch
    assert lease_start == int(now.timestamp() * 1_000_000)  # the heartbeat's instant
    desk.advance(60)
    desk.heartbeat(ann, sid)
    assert server.call(stored())[0] == 2  # the session and its device, batched
    assert timedelta(hours=1) == sessions_module.STORED_WHEN_LEASE_ENDS_WITHIN
