"""Answers given while another call's commit is under way (issue 4: "every hold,
capture, release, session start and end is committed ... before the RPC answers").

The engine changes memory and queues its commit with no ``await`` between, so the
store writes in the calls' order; what these guard is the answer around it. A read
or a refusal drawn from memory must not tell what a crash could undo (a session, a
hold not stored yet), and an answer must show what its own call did, not what a
call made while it was being stored did (one serial order). The store's writer is
held at a gate on the server's own loop (``tests/store/held.py``), with no
sleeping: "not answered" is checked after the loop has had every chance to run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.domain.errors import RunningElsewhere
from server.domain.products import Platform
from server.engine import Engine
from tests.licensing_desk import Desk
from tests.store.held import held_writer
from tests.support import ServerThread


def _entitle(user_id: str, device_id: str, request_id: str) -> dict[str, Any]:
    return {
        "product_id": "REVIT",
        "product_version": "2026",
        "platform": Platform.WINDOWS,
        "device_id": device_id,
        "parent_session_id": "",
        "request_id": request_id,
        "takeover": False,
        "team_id": "",
    }


async def _given_every_chance(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` answered once the loop ran everything else it could."""
    for _ in range(50):
        await asyncio.sleep(0)
    return task.done()


def _engine(server: ServerThread) -> Engine:
    engine = server.server.engine
    assert engine is not None
    return engine


def test_durability_a_read_waits_for_the_commit_of_a_session_it_would_list(
    server: ServerThread,
) -> None:
    """ListSessions, ListTokenPacks and every other read first catch up
    (``Engine.caught_up``). With nothing due, they answered at once from memory,
    listing a session and its 10 tokens held whose Entitle was not stored yet: a
    crash then, and the operator had been shown what never was."""
    desk = Desk(server.target).sheet()
    desk.team("alpha", 100)
    ann = desk.user("alpha", "ann")
    desk.close()

    async def scenario() -> tuple[bool, bool, int]:
        engine = _engine(server)
        async with held_writer(engine.store) as (gate, holding, _):
            entitling = asyncio.create_task(
                engine.sessions.entitle(ann, **_entitle(ann, "d1", "r-1"))
            )
            await asyncio.wait_for(holding.wait(), 10)  # taken and held: nothing stored
            read = asyncio.create_task(engine.caught_up())
            answered_early = await _given_every_chance(read)
            gate.set()
            await asyncio.wait_for(read, 10)
            stored_first = entitling.done()
            await entitling
        return answered_early, stored_first, engine.ledger.held("alpha")

    answered_early, stored_first, held = server.call(scenario())
    assert answered_early is False
    assert stored_first is True  # the read answered once the Entitle was stored
    assert held == 10


def test_m9_running_elsewhere_waits_for_the_session_it_names_to_be_stored(
    server: ServerThread,
) -> None:
    """M9: an Entitle from a second device while one runs is refused
    RUNNING_ELSEWHERE, naming the other device. Refused while the first device's
    session was still on its way to disk, it named a session a crash could undo."""
    desk = Desk(server.target).sheet()
    desk.team("alpha", 100)
    ann = desk.user("alpha", "ann")
    desk.close()

    async def scenario() -> tuple[bool, str]:
        engine = _engine(server)
        async with held_writer(engine.store) as (gate, holding, _):
            first = asyncio.create_task(engine.sessions.entitle(ann, **_entitle(ann, "d1", "r-1")))
            await asyncio.wait_for(holding.wait(), 10)
            second = asyncio.create_task(engine.sessions.entitle(ann, **_entitle(ann, "d2", "r-2")))
            refused_early = await _given_every_chance(second)
            gate.set()
            await first
            with pytest.raises(RunningElsewhere) as refused:
                await asyncio.wait_for(second, 10)
        return refused_early, refused.value.metadata["device_id"]

    refused_early, named = server.call(scenario())
    assert refused_early is False
    assert named == "d1"


def test_t1_a_purchase_answers_its_pack_as_bought_not_with_a_later_hold(
    server: ServerThread,
) -> None:
    """T1: the pack bought joins the balance at once, and PurchaseTokens answers it.
    An Entitle that could only come after it (the team had no tokens) held 10 from
    it while the purchase was stored; the purchase's answer showed 90 remaining and
    10 held, which no serial order gives (and that hold was not stored yet)."""
    desk = Desk(server.target).sheet()
    desk.team("alpha")  # no tokens: the Entitle can only come after the purchase
    ann = desk.user("alpha", "ann")
    desk.close()

    async def scenario() -> tuple[int, int, int]:
        engine = _engine(server)
        async with held_writer(engine.store) as (gate, holding, _):
            buying = asyncio.create_task(engine.accounts.purchase("alpha", 100, "po-1"))
            await asyncio.wait_for(holding.wait(), 10)
            entitling = asyncio.create_task(
                engine.sessions.entitle(ann, **_entitle(ann, "d1", "r-1"))
            )
            await _given_every_chance(entitling)
            gate.set()
            pack = await asyncio.wait_for(buying, 10)
            await asyncio.wait_for(entitling, 10)
        return pack.remaining, pack.held, engine.ledger.held("alpha")

    assert server.call(scenario()) == (100, 0, 10)


def test_a3_set_user_products_answers_the_member_as_it_set_them(server: ServerThread) -> None:
    """A3: SetUserProducts answers the member with the products it set. A second
    one made while the first was stored showed in the first's answer."""
    desk = Desk(server.target).sheet()
    desk.team("alpha", 100)
    ann = desk.user("alpha", "ann", products=["VIEWER"])
    desk.close()

    async def scenario() -> tuple[frozenset[str], frozenset[str]]:
        engine = _engine(server)
        access = engine.access
        async with held_writer(engine.store) as (gate, holding, _):
            first = asyncio.create_task(access.set_user_products("alpha", ann, ["ACAD"], False))
            await asyncio.wait_for(holding.wait(), 10)
            second = asyncio.create_task(access.set_user_products("alpha", ann, ["REVIT"], False))
            await _given_every_chance(second)
            gate.set()
            a, b = await asyncio.wait_for(asyncio.gather(first, second), 10)
        return a.product_ids, b.product_ids

    assert server.call(scenario()) == ({"ACAD"}, {"REVIT"})
