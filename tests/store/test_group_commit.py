"""The group commit (``server/store/group_commit.py``) behind both stores: a call
is answered only once its rows are committed, and a call is never left waiting
for a writer that is gone: it fails with ``StoreFailed``, and ``on_failed`` is
told (on PostgreSQL the server steps down, RULES H2, ``docs/rules.md``)."""

from __future__ import annotations

import asyncio

import pytest

from server.store.codec import SESSIONS
from server.store.group_commit import GroupCommit, Op, Write
from server.store.port import StoreFailed

# The writer below only records what it is given: any op will do.
OP_A: Op = (SESSIONS, False, ("ses_a",))
OP_B: Op = (SESSIONS, False, ("ses_b",))
OP_C: Op = (SESSIONS, False, ("ses_c",))
GUARD = 5.0  # seconds: a waiter left hanging fails the test instead of the run


def flat(plan: list[Write]) -> list[Op]:
    """A transaction's plan as the ops it writes, one per row."""
    return [(table, delete, row) for table, delete, rows in plan for row in rows]


async def test_store_group_commit_that_breaks_after_a_commit_fails_every_other_waiter() -> None:
    written: list[list[Op]] = []
    told: list[BaseException] = []
    first_written = asyncio.Event()
    go_on = asyncio.Event()

    async def write(plan: list[Write]) -> int:
        written.append(flat(plan))
        first_written.set()
        await go_on.wait()
        return len(plan)

    def after(_: int) -> None:
        raise RuntimeError("the bookkeeping after a commit broke")

    group: GroupCommit[int] = GroupCommit(write, after=after, on_failed=told.append)
    group.start()
    try:
        first = asyncio.ensure_future(group.commit([OP_A]))
        await first_written.wait()
        queued = asyncio.ensure_future(group.commit([OP_B]))  # behind the transaction
        await asyncio.sleep(0)  # queued before the transaction ends
        go_on.set()
        await asyncio.wait_for(first, GUARD)  # its rows are committed: it is answered so
        with pytest.raises(StoreFailed, match="bookkeeping after a commit broke"):
            await asyncio.wait_for(queued, GUARD)
        with pytest.raises(StoreFailed):  # and every later call, at once
            await asyncio.wait_for(group.commit([OP_C]), GUARD)
    finally:
        await group.close()
    assert written == [[OP_A]]  # nothing after the failure was written
    assert [str(e) for e in told] == ["the bookkeeping after a commit broke"]


async def test_store_group_commit_a_write_after_close_fails_instead_of_waiting_for_ever() -> None:
    """What was queued before ``close`` is written; a write after it (a term's last
    heartbeat flush once its store is closed, ``server/app.py``'s step-down) fails at
    once, where it waited for a writer that no longer runs."""
    written: list[list[Op]] = []

    async def write(plan: list[Write]) -> None:
        written.append(flat(plan))

    group: GroupCommit[None] = GroupCommit(write)
    group.start()
    queued = asyncio.ensure_future(group.commit([OP_A]))
    await asyncio.sleep(0)
    await group.close()
    await asyncio.wait_for(queued, GUARD)
    with pytest.raises(StoreFailed, match="the store is closed"):
        await asyncio.wait_for(group.commit([OP_B]), GUARD)
    with pytest.raises(StoreFailed, match="the store is closed"):
        await asyncio.wait_for(group.barrier(), GUARD)
    assert written == [[OP_A]]


async def test_store_group_commit_counts_the_rows_a_transaction_writes() -> None:
    """``tessera_store_commit_rows``: a row changed by several calls gathered in one
    transaction is written once (``plan_writes``) and counted once; it was counted
    once per call (478 counted against 440 rows written, under load)."""
    gate = asyncio.Event()
    first = (SESSIONS, False, ("ses_0",))

    async def write(plan: list[Write]) -> None:
        await gate.wait()

    group: GroupCommit[None] = GroupCommit(write)
    group.start()
    try:
        held = asyncio.ensure_future(group.commit([first]))  # the writer waits at the gate
        await asyncio.sleep(0)
        together = [group.commit([op]) for op in (OP_A, OP_A, OP_B, OP_A)]  # queued behind
        gate.set()
        await asyncio.wait_for(asyncio.gather(held, *together), GUARD)
    finally:
        await group.close()
    assert group.commits == 2
    assert group.stats.sizes.sum == 1 + 2  # ses_0; then ses_a and ses_b, once each


async def test_h3_an_abandoned_write_answers_its_caller_and_those_behind_it() -> None:
    """A write cut off under its server (paused mid-statement, then taken over) can
    wait for ever in the driver; the store's close abandons it, and its caller and
    every call queued behind it fail with StoreFailed saying why, instead of
    waiting for their deadline (the gate answers them NOT_LEADER: repeat elsewhere)."""
    entered = asyncio.Event()

    async def never(plan: list[Write]) -> int:
        entered.set()
        await asyncio.Event().wait()  # the driver waits for a connection that is gone
        return 0

    group: GroupCommit[int] = GroupCommit(never)
    group.start()
    first = asyncio.ensure_future(group.commit([OP_A]))
    await asyncio.wait_for(entered.wait(), GUARD)
    behind = asyncio.ensure_future(group.commit([OP_B]))
    await asyncio.sleep(0)
    group.abandon("the write was cut off: this server lost its place")
    for call in (first, behind):
        with pytest.raises(StoreFailed, match="cut off"):
            await asyncio.wait_for(call, GUARD)
    with pytest.raises(StoreFailed):
        await group.commit([OP_C])
    await group.close()
