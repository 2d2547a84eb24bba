"""The election on the ``tessera_leader`` row and its fence (RULES H1, H2).

Each test gets an empty database of its own (``pg_url``). Leases run out on the
DATABASE's clock: a test that needs one to have run out moves ``lease_until``
into the past, as the database's ``now()`` passing it would; a paused server
is one whose election stops ticking.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from server.clock import monotonic
from server.ha import election as election_module
from server.ha.election import (
    APP_PREFIX,
    LEADER_DDL,
    NODE_LOCK,
    TAKE_NODE_ID,
    Election,
    NodeIdInUse,
)
from server.store.port import NotLeader, StoreFailed
from server.store.postgres import WRITER_PREFIX, application_name

Factory = Callable[..., Election]


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own (the store's, or the operator's)."""
    conn = await asyncpg.connect(pg_url)
    # The PostgreSQL migrations make it; the election's tests do not need them.
    await conn.execute(LEADER_DDL)
    await conn.execute("CREATE TABLE purchases (id INTEGER PRIMARY KEY)")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def elect(pg_url: str, db: asyncpg.Connection) -> AsyncIterator[Factory]:
    made: list[Election] = []

    def make(node_id: str, lease: float = 30.0, interval: float = 0.05, **kw: Any) -> Election:
        election = Election(
            pg_url, node_id, f"{node_id}:50051", lease=lease, interval=interval, **kw
        )
        made.append(election)
        return election

    yield make
    for election in made:
        election._stopping.set()
        await election._close()


async def expire(db: asyncpg.Connection) -> None:
    """The database's clock passes the lease (as a paused active's would)."""
    await db.execute("UPDATE tessera_leader SET lease_until = now() - interval '1 second'")


async def row(db: asyncpg.Connection) -> Any:
    return await db.fetchrow("SELECT node_id, address, epoch, lease_until FROM tessera_leader")


async def fenced_write(
    db: asyncpg.Connection, fence: Callable[[asyncpg.Connection], Awaitable[None]], n: int
) -> None:
    async with db.transaction():
        await fence(db)
        await db.execute("INSERT INTO purchases VALUES ($1)", n)


async def test_h1_two_servers_exactly_one_wins(elect: Factory, db: asyncpg.Connection) -> None:
    a, b = elect("a"), elect("b")
    await asyncio.gather(a.tick(), b.tick())
    winners = [e for e in (a, b) if e.leading]
    assert len(winners) == 1
    assert winners[0].epoch == 1
    loser = b if winners[0] is a else a
    assert loser.epoch is None
    assert loser.leader_address() == winners[0].address  # the standby knows whom to name
    got = await row(db)
    assert (got["node_id"], got["address"], got["epoch"]) == (
        winners[0].node_id,
        winners[0].address,
        1,
    )


async def test_h1_renewal_keeps_the_lease(elect: Factory, db: asyncpg.Connection) -> None:
    a, b = elect("a"), elect("b")
    await a.tick()
    before = (await row(db))["lease_until"]
    await a.tick()
    await b.tick()
    after = await row(db)
    assert after["lease_until"] > before
    assert (after["node_id"], after["epoch"]) == ("a", 1)
    assert a.leading and b.epoch is None


async def test_h1_a_terms_store_is_fenced_by_its_own_epoch_when_its_server_wins_again(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """A term's store outlives its term for a moment (closed in a task of its own,
    or its load still under way, while a later term begins). Fenced by the epoch its
    server holds now, the store of a's epoch 1 would pass again once a wins epoch
    3, and write memory from before b's epoch-2 writes over them."""
    a, b = elect("a"), elect("b")
    await a.tick()
    first = a.fence_for(a.epoch)
    await fenced_write(db, first, 1)
    await expire(db)
    await b.tick()  # b's epoch 2
    await a.tick()  # a notices: a standby
    await fenced_write(db, b.fence_for(b.epoch), 2)
    b._stopping.set()
    await b._close()  # b is gone ...
    await expire(db)
    await a.tick()  # ... and a wins anew
    assert a.epoch == 3
    with pytest.raises(NotLeader):
        await fenced_write(db, first, 3)
    assert a.leading  # a fence of an ended term does not step the new one down
    await fenced_write(db, a.fence_for(3), 4)
    assert [r["id"] for r in await db.fetch("SELECT id FROM purchases ORDER BY id")] == [1, 2, 4]


async def test_h2_takeover_after_the_lease_and_the_old_active_is_fenced(
    elect: Factory, db: asyncpg.Connection
) -> None:
    lost: list[str] = []
    elected: list[int] = []
    a = elect("a", on_lost=lambda: lost.append("a"))
    b = elect("b", on_elected=elected.append)
    await a.tick()
    await fenced_write(db, a.fence_for(a.epoch), 1)  # the active writes
    await b.tick()
    assert b.epoch is None  # the lease runs: no takeover

    await expire(db)  # a is paused: it renews no more
    await b.tick()
    assert b.epoch == 2 and elected == [2]
    assert a.leading  # a has not noticed yet (its own clock says its lease runs) ...
    with pytest.raises(NotLeader):  # ... but it can no longer commit
        await fenced_write(db, a.fence_for(a.epoch), 2)
    assert isinstance(NotLeader("x"), StoreFailed)
    assert lost == ["a"] and not a.leading  # the fence stepped it down at once
    await fenced_write(db, b.fence_for(b.epoch), 3)
    assert [r["id"] for r in await db.fetch("SELECT id FROM purchases ORDER BY id")] == [1, 3]

    await a.tick()  # resumed: it stays a standby and names the new active
    assert a.epoch is None and a.leader_address() == "b:50051"


async def test_h1_fence_refuses_an_expired_lease_nobody_took(
    elect: Factory, db: asyncpg.Connection
) -> None:
    a = elect("a")
    await a.tick()
    await expire(db)
    with pytest.raises(NotLeader):
        await fenced_write(db, a.fence_for(a.epoch), 1)
    assert await db.fetchval("SELECT count(*) FROM purchases") == 0


async def test_h1_a_fenced_transaction_holds_off_the_takeover(
    elect: Factory, db: asyncpg.Connection, pg_url: str
) -> None:
    """A write that passed its fence commits before any takeover: the takeover
    waits for its share lock, so nothing is committed under an old epoch once a
    new one has begun."""
    a = elect("a", lease=0.3, idle_limit=30)
    b = elect("b")
    await a.tick()
    watcher = await asyncpg.connect(pg_url)
    try:
        async with db.transaction():
            await a.fence_for(a.epoch)(db)
            while not await watcher.fetchval("SELECT lease_until < now() FROM tessera_leader"):
                await asyncio.sleep(0.05)  # the lease runs out (0.3 s, on the database's clock)
            takeover = asyncio.create_task(b.tick())
            # b is seen waiting on the row lock that the fence holds
            while not await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name LIKE 'tessera-election:%' AND wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.02)
            assert not takeover.done()
            await db.execute("INSERT INTO purchases VALUES (1)")
        await takeover
        assert b.epoch == 2
        assert await db.fetchval("SELECT count(*) FROM purchases") == 1
        with pytest.raises(NotLeader):
            await fenced_write(db, a.fence_for(a.epoch), 2)
    finally:
        await watcher.close()


async def test_h1_a_fenced_transaction_does_not_hold_off_its_own_renewal(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """The active's write of a day's burst of deadlines took longer than the lease;
    its fence held the row FOR SHARE, which the renewal (an UPDATE) waits for, so the
    lease ran out, the active stepped down and its write was cut: nothing stored,
    and the same again at every try. The fence's lock lets the renewal through."""
    a = elect("a", lease=30.0)
    await a.tick()
    async with db.transaction():
        await a.fence_for(a.epoch)(db)
        await asyncio.wait_for(a.tick(), timeout=10)  # its renewal, the write under way
        assert a.leading and a.epoch == 1
        await db.execute("INSERT INTO purchases VALUES (1)")
    assert await db.fetchval("SELECT count(*) FROM purchases") == 1


async def test_h1_a_fenced_transaction_may_wait_a_minute_for_its_server_s_loop(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """The database ended a fenced transaction idle for the lease (5 s): an active
    whose event loop was held that long between two statements (a burst of
    deadlines fired in one piece) had its writer cut, and stepped down. It may sit
    idle a minute; a paused server's is ended by the standby (``END_BLOCKERS``)."""
    a = elect("a", lease=5.0, interval=1.0)
    await a.tick()
    async with db.transaction():
        await a.fence_for(a.epoch)(db)
        assert await db.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"


async def test_h1_the_local_lease_lapses_without_renewal(
    elect: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server resumed after a pause refuses calls before its loop runs: its
    own deadline (counted from when it sent the renewal) has passed. The lease is
    long enough for a first round on a loaded host (0.2 s was not, now and then);
    its end comes from the module's clock, moved past it, not from a sleep."""
    a = elect("a", lease=1.0)
    await a.tick()
    assert a.leading and a.leader_address() == "a:50051"
    # A lease later (counted from before the renewal was sent), the clock running on.
    monkeypatch.setattr(election_module, "monotonic", lambda: monotonic() + 1.0)
    assert not a.leading
    assert a.leader_address() == ""  # its own row, read while it led, no longer names it


async def test_h2_a_clean_stop_hands_over_at_once(elect: Factory, db: asyncpg.Connection) -> None:
    a, b = elect("a"), elect("b")
    await a.tick()
    await a.stop()  # a 30 s lease, ended now rather than left to run out
    await b.tick()
    assert b.epoch == 2
    with pytest.raises(NotLeader):
        await fenced_write(db, a.fence_for(a.epoch), 1)


async def test_h2_run_loops_elect_and_take_over(elect: Factory, db: asyncpg.Connection) -> None:
    """The loops themselves: one wins; cancelled without resigning (a kill -9),
    the other takes over once the lease has run out and its epoch grows."""
    won: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    a = elect("a", lease=0.3, on_elected=lambda e: won.put_nowait(("a", e)))
    b = elect("b", lease=0.3, on_elected=lambda e: won.put_nowait(("b", e)))
    tasks = {"a": a.start(), "b": b.start()}
    first, epoch = await asyncio.wait_for(won.get(), 5)
    assert epoch == 1
    tasks[first].cancel()
    second, epoch = await asyncio.wait_for(won.get(), 5)
    assert (second, epoch) != (first, 1) and epoch == 2
    assert (await row(db))["node_id"] == second
    other = a if second == "a" else b
    await other.stop()
    assert (await row(db))["lease_until"] <= await db.fetchval("SELECT now()")


async def test_h2_a_paused_transaction_cannot_hold_off_the_takeover(
    elect: Factory, db: asyncpg.Connection, pg_url: str
) -> None:
    """An active paused (SIGSTOP) inside a fenced transaction would hold its
    lock for as long as it stays paused: the standby, kept waiting on it for
    ``blocker_wait`` after the lease ran out, ends that session, so the takeover
    goes through (the database's own idle limit, a minute, is for a transaction
    abandoned with no standby there)."""
    a = elect("a", lease=1.0)
    b = elect("b", lease=1.0)
    await a.tick()
    watcher = await asyncpg.connect(pg_url)
    try:
        transaction = db.transaction()
        await transaction.start()
        await a.fence_for(a.epoch)(db)  # ... and the server stops here
        while not await watcher.fetchval("SELECT lease_until < now() FROM tessera_leader"):
            await asyncio.sleep(0.05)
        await b.tick()
        assert b.epoch == 2
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await db.execute("INSERT INTO purchases VALUES (1)")  # resumed: its session is gone
        assert await watcher.fetchval("SELECT count(*) FROM purchases") == 0
    finally:
        await watcher.close()


@pytest.mark.parametrize(
    "b_settings",
    [
        {"lease": 2.0, "idle_limit": 0.3},
        # The server's own: idle_limit is the lease, as the election connection's
        # lock_timeout was. The takeover was then cancelled by that timeout just before
        # END_BLOCKERS looked for what blocked it, at every round (the blocker unfound),
        # and a lease won after such a wait had run out already.
        {"lease": 1.0},
    ],
    ids=["idle_limit under the lease", "the server's settings"],
)
async def test_h2_a_transaction_paused_inside_a_statement_cannot_hold_off_the_takeover(
    elect: Factory, db: asyncpg.Connection, pg_url: str, b_settings: dict[str, float]
) -> None:
    """The same pause, taken while the database waits for the rest of a
    statement (a COPY of the heartbeat flush, its rows not all sent): the
    session is not idle and takes no cancel, so the standby, kept waiting on
    the lock for ``idle_limit`` after the lease ran out, ends that session, and
    the takeover goes through, with a lease still running; nothing of the paused
    write is committed."""
    a = elect("a", lease=1.0)
    b = elect("b", **b_settings)
    await a.tick()
    watcher = await asyncpg.connect(pg_url)
    paused = asyncio.Event()  # the server stopped mid-statement, until it is set

    async def rows() -> AsyncIterator[tuple[int]]:
        yield (1,)
        await paused.wait()

    try:
        transaction = db.transaction()
        await transaction.start()
        await a.fence_for(a.epoch)(db)
        copy = asyncio.create_task(
            db.copy_records_to_table("purchases", records=rows(), columns=["id"])
        )
        while not await watcher.fetchval("SELECT lease_until < now() FROM tessera_leader"):
            await asyncio.sleep(0.05)
        await asyncio.wait_for(b.tick(), timeout=10)
        assert b.epoch == 2 and b.leading
        assert await watcher.fetchval("SELECT lease_until > now() FROM tessera_leader")
        paused.set()  # resumed: its session is gone (asyncpg finds its transport closed)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError, RuntimeError)):
            await asyncio.wait_for(copy, timeout=10)
        assert await watcher.fetchval("SELECT count(*) FROM purchases") == 0
    finally:
        paused.set()
        await watcher.close()


async def test_h2_a_killed_active_is_replaced_without_waiting_for_its_lease(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """Its process gone, its election session is gone: a standby takes over at
    once, not when the lease (30 s here) runs out; fencing keeps it safe."""
    a, b = elect("a"), elect("b")
    await a.tick()
    await b.tick()
    assert b.epoch is None  # a's session is there: its lease holds
    await a._close()  # kill -9: its connections close with the process
    for _ in range(100):  # the server notices the closed session within milliseconds
        await b.tick()
        if b.epoch is not None:
            break
        await asyncio.sleep(0.02)
    assert b.epoch == 2
    with pytest.raises(NotLeader):
        await fenced_write(db, a.fence_for(a.epoch), 1)


async def test_h2_a_server_whose_store_failed_resigns_at_once_and_a_standby_takes_over(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """``give_up`` (any failed write of the store, also a background one) ends the
    lease in a round run at once, not at the loop's next interval (10 s here)."""
    a, b = elect("a", interval=10.0), elect("b")
    await a.tick()
    loop = a.start()  # renews now, then would wait 10 s
    try:
        a.give_up("a write failed")
        assert a.epoch is None and not a.leading
        for _ in range(250):  # the lease ends within a round trip, well before 10 s
            if (await row(db))["lease_until"] <= await db.fetchval("SELECT now()"):
                break
            await asyncio.sleep(0.02)
        assert (await row(db))["lease_until"] <= await db.fetchval("SELECT now()")
        await b.tick()
        assert b.epoch == 2 and (await row(db))["node_id"] == "b"
    finally:
        await a.stop()
        loop.cancel()
    with pytest.raises(NotLeader):
        await fenced_write(db, a.fence_for(a.epoch), 1)


async def test_h2_a_server_whose_store_failed_lets_a_standby_come_first(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """It sits out the takeover for one lease: a standby with a working store
    wins; with none, it wins anew (a fresh store) once that lease has passed."""
    a = elect("a", lease=1.0)
    await a.tick()
    a.give_up("a write failed")
    await a.tick()  # resigns, and does not take the row back
    assert a.epoch is None and (await row(db))["epoch"] == 1
    for _ in range(100):
        await asyncio.sleep(0.02)
        await a.tick()
        if a.epoch is not None:
            break
    assert a.epoch == 2


async def test_h1_a_busy_server_loop_keeps_its_lease_when_rounds_run_on_their_own_thread(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """A call that holds the server's loop longer than the lease (a large
    ImportUsers, a reload under load) must not cost the active its place: the
    rounds run on a thread of their own (``start_thread``), which renews."""
    elected: list[int] = []
    a = elect("a", lease=0.6, interval=0.1, on_elected=elected.append)
    await a.start_thread()
    try:
        assert a.leading and a.epoch == 1
        await asyncio.sleep(0)  # on_elected arrives on this loop
        assert elected == [1]
        time.sleep(2.0)  # the stall under test: this loop does nothing for 3 leases
        assert a.leading, "the lease was renewed while the server's loop was held"
        assert a.epoch == 1
        got = await row(db)
        assert got["epoch"] == 1 and got["node_id"] == "a"
    finally:
        await a.stop()
    assert not a.leading


async def test_h1_a_second_server_with_a_node_id_in_use_is_refused(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """A node id names one server: a second one started with it is refused at
    start (``start_thread`` raises), and takes part once the first has gone."""
    a = elect("a")
    await a.tick()
    twin = elect("a")
    with pytest.raises(NodeIdInUse, match="node id 'a'"):
        await twin.start_thread()
    assert twin.epoch is None and not twin.leading
    assert (await row(db))["epoch"] == 1  # a's place is untouched
    late = elect("a")
    await late.tick()  # a round of a server already running: refused, not raised
    assert late.refused and late.epoch is None
    await a.stop()
    await late.tick()
    assert not late.refused and late.epoch == 2


async def _terminate(db: asyncpg.Connection, name: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            name,
        )
    )


async def test_h2_an_active_whose_election_session_alone_is_dropped_keeps_its_place(
    elect: Factory, db: asyncpg.Connection, pg_url: str
) -> None:
    """Its election session cut (``pg_terminate_backend``, a proxy's restart) while
    its store's writer is still connected: the server is alive, so no standby takes
    over before its lease runs out, and its next rounds reconnect and renew."""
    a, b = elect("a"), elect("b")
    await a.tick()
    writer = await asyncpg.connect(
        pg_url, server_settings={"application_name": application_name(WRITER_PREFIX, "a")}
    )
    try:
        assert await _terminate(db, "tessera-election:a") == 1
        await b.tick()
        assert b.epoch is None and b.leader_address() == "a:50051"
        await a.tick()  # its connection is found gone ...
        await a.tick()  # ... and made anew: the lease is renewed under the same epoch
        assert a.leading and a.epoch == 1
        assert (await row(db))["epoch"] == 1
    finally:
        await writer.close()
    # Both of its sessions gone (kill -9): the takeover does not wait for the lease.
    await a._close()
    await b.tick()
    assert b.epoch == 2


class _EndedWhileIdle:
    """An election connection the database ended while it was idle, before asyncpg saw
    its socket close: every use raises asyncpg's InternalClientError (met in a run of
    the test above, which it failed: the round raised, and the rounds stopped)."""

    closed = False

    def is_closed(self) -> bool:
        return self.closed

    async def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )

    fetchval = fetch = fetchrow = execute = close = _refuse

    def terminate(self) -> None:
        self.closed = True


async def test_h2_an_election_connection_in_asyncpgs_broken_state_is_made_anew(
    elect: Factory, db: asyncpg.Connection
) -> None:
    """A round that meets a connection ended while idle, in asyncpg's in-between state,
    takes the database as unreachable for that round (the lease still runs: no step
    down) and makes a new connection for the next, which renews under the same epoch."""
    a = elect("a")
    await a.tick()
    assert a._conn is not None
    await a._conn.close()  # the database ended it (its node id's lock goes with it) ...
    broken = _EndedWhileIdle()
    a._conn = broken  # type: ignore[assignment]  # ... and asyncpg has yet to see so
    await a.tick()  # the round is over, not raised out of
    assert broken.closed and a._conn is None
    assert a.leading and a.epoch == 1
    await a.tick()
    assert a.leading and a.epoch == 1 and (await row(db))["epoch"] == 1


async def test_h1_a_session_this_server_gave_up_on_does_not_keep_its_node_id(
    elect: Factory, db: asyncpg.Connection, pg_url: str
) -> None:
    """The server gave up on its election session (a renewal timed out in a network
    cut) while PostgreSQL kept it open, idle, with the node id's lock, until TCP would
    notice (two hours by default): every round was refused 'node id in use' and, if
    the cut hit every server, no server could lead. A session of its own name idle
    past ``stale_after`` is ended; a live one (a second server's) is not."""
    a = elect("a")
    a.stale_after = 0.0  # (two leases in a server: a live session is never idle so long)
    stale = await asyncpg.connect(
        pg_url, server_settings={"application_name": application_name(APP_PREFIX, "a")}
    )
    try:
        assert await stale.fetchval(TAKE_NODE_ID, NODE_LOCK, "a")  # the lock, kept idle
        await a.tick()
        assert not a.refused and a.epoch == 1
        assert stale.is_closed() or await _closed(stale)
    finally:
        stale.terminate()
    b = elect("a")  # a live second server of that id is still refused
    await b.tick()
    assert b.refused and b.epoch is None and a.epoch == 1


async def _closed(conn: asyncpg.Connection) -> bool:
    """Whether the database ended ``conn``'s session. Its backend lets the node id's lock
    go before it exits and its socket closes (later still on a loaded machine): asyncpg
    may have read the termination's message and not yet the close, and then raises
    InternalClientError (as ``_EndedWhileIdle``: the test above failed on it under load)."""
    try:
        await conn.fetchval("SELECT 1")
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
    ):
        return True
    return False


async def test_h1_a_stop_that_finds_its_node_id_taken_leaves_the_lease_to_run_out(
    elect: Factory, db: asyncpg.Connection, pg_url: str
) -> None:
    """The active's round found the database unreachable and closed its election
    session, and the node id's lock went with it; before a round could connect
    again, another session took that lock (a second server started with the same
    id). A stop then cannot resign as itself: connecting anew, it is refused the id
    (``NodeIdInUse``). It stops anyway, without raising (out of the election's
    thread, in a server), and leaves its lease to run out for a standby."""
    a = elect("a")
    await a.tick()
    assert a.epoch == 1
    await a._close()  # as a round that found the database unreachable does
    other = await asyncpg.connect(
        pg_url, server_settings={"application_name": application_name(APP_PREFIX, "a")}
    )
    try:
        # Waits until a's closed session has let the lock go.
        await other.execute("SELECT pg_advisory_lock($1, hashtext($2))", NODE_LOCK, "a", timeout=10)
        await a.stop()
        assert a.epoch is None and not a.leading
        got = await row(db)
        assert (got["node_id"], got["epoch"]) == ("a", 1)
        assert await db.fetchval("SELECT lease_until > now() FROM tessera_leader")  # not resigned
    finally:
        await other.close()


def test_h2_a_hung_actives_takeover_fits_the_10_s_with_the_servers_settings() -> None:
    """H2's bound for an active paused in the middle of a statement: its lease (5 s),
    a round (a fifth of it) and the wait on the row's lock before the sessions
    holding it are ended (``blocker_wait``). It waited a second lease (5 s more):
    10.4 s measured. Now 3 s, leaving the 10 s a round for the takeover itself."""
    lease = 5.0
    election = Election("postgresql://unused", "a", "a:50051", lease=lease, interval=lease / 5)
    assert election.blocker_wait == 3.0
    assert lease + election.interval + election.blocker_wait + election.interval == 10.0
    short = Election("postgresql://unused", "b", "b:1", lease=1.0, interval=0.5)
    assert short.blocker_wait == 0.5  # never under a round
