"""Who is the active server: an election on one PostgreSQL row (RULES H1, H2).

Several servers share one database; exactly one of them writes. The row
``tessera_leader`` (id 1, made by the PostgreSQL migrations) names the active
server, its advertised address, an ``epoch`` that grows at every takeover and
``lease_until``. Every time is the DATABASE's ``now()``: the servers' clocks
never meet, so they cannot disagree.

- The active renews ``lease_until = now() + lease`` every ``interval``, only
  while the epoch is still its own.
- A standby tries every ``interval`` to take the row over: it succeeds only
  once the lease has run out, and then the epoch grows by one.
- Fencing: every write transaction of the store first runs ``fence`` (the row
  with this server's epoch and a running lease, ``FOR KEY SHARE``). A server
  that has lost its place finds no row and raises ``NotLeader``: even one that
  was paused (SIGSTOP) and has not noticed yet can no longer commit. A takeover
  first locks the row ``FOR UPDATE``, which waits for every write transaction
  that passed its fence, so nothing is committed under an epoch after the next
  one began. The renewal, an ``UPDATE`` of a column no key holds, does not wait
  for them (``FOR KEY SHARE`` lets it through; ``FOR SHARE`` did not): a write
  of a burst longer than the lease (a day of deadlines fired at once) held the
  active's own renewal until the lease ran out, and the active stepped down
  with its write cut. A server paused (SIGSTOP) inside such a transaction, idle
  or in the middle of a statement (the database waiting for the rest of a
  COPY's rows; a statement timeout cannot end that: PostgreSQL reads the client
  without taking a cancel), would hold its lock, and block every takeover, for
  as long as it stays paused: a standby kept waiting on the lock for
  ``blocker_wait`` after the lease ran out (the lease less two rounds: H2's 10 s
  are the lease, a round and this) ends the sessions that hold it
  (``END_BLOCKERS``). The fence also lets a transaction sit idle for at most
  ``idle_limit`` (a minute by default), so that an abandoned one ends with no
  standby there; not less, because the active's own event loop may be held
  that long between two statements (a burst of deadlines) and its writer must
  not be cut for it.

A server is "still there" while any of its sessions that only its death
closes is connected: its election session or its store's writer, each named
``PREFIX + node id`` (``application_name``; ``still_there``). A takeover need not
wait out the lease of a server with neither (killed: its connections closed
with it). One of them dropped alone (``pg_terminate_backend``, a proxy cut) is
not read as a death: the election's is made anew at its next round, which
renews in time; the writer's steps the server down at once (its memory may be
ahead of the database: ``PostgresStore``'s termination listener), for a
standby to take over.

A node id names one server: the election's session holds an advisory lock on
it (``NODE_LOCK``), so a second server started with the same ``--node-id``
is refused at start, and one that finds the lock taken when it reconnects
steps down and keeps trying (``NodeIdInUse``).

Locally, the active counts its lease from the moment it SENT the statement
that won or renewed it (``monotonic``, which runs on through a SIGSTOP),
so its own deadline never falls after the database's. ``leading`` is False
once that deadline has passed unrenewed: a server resumed after a pause
refuses calls at once, before its loop has even run (RULES H1: it never
answers as active again before it has won anew).

The election keeps its own connection, apart from the store's: a renewal must
not queue behind the store's writes. A server runs its rounds on a thread of
their own (``start_thread``), with their own event loop: a call that keeps the
server's loop busy longer than the lease (a large ImportUsers, a reload under
load) must not cost it its place, while a paused process (SIGSTOP) stops that
thread with the rest and is taken over as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from server.clock import monotonic
from server.store.port import NotLeader
from server.store.postgres import DATABASE_GONE, WRITER_PREFIX, application_name

log = structlog.get_logger()

LEADER_DDL = """
CREATE TABLE IF NOT EXISTS tessera_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node_id TEXT NOT NULL,
    address TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
)
"""

APP_PREFIX = "tessera-election:"


def still_there(election: str, writer: str) -> str:
    """SQL: whether the server that holds the row ``l`` still has a session that only
    its death closes (the module docstring), its election's or its store writer's,
    their prefixes the parameters ``election`` and ``writer`` (``$1``...)."""
    return f"""EXISTS (
        SELECT 1 FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.application_name IN (
            left({election} || l.node_id, 63), left({writer} || l.node_id, 63)
        )
    )"""  # noqa: S608 (parameter marks, not input)


# Takes the row when it is missing, its lease has run out, or the server that
# holds it is no longer there (killed: its connections closed with it; fencing,
# not the lease, keeps a takeover safe, so it need not wait); no row back
# otherwise. Two standbys trying at once: the second waits for the first's row
# lock, then sees the new lease and gets nothing. The lease taken counts from
# when the row is taken (clock_timestamp()), not from the statement's start
# (now()): a takeover may wait on the row's lock for idle_limit and more
# (END_BLOCKERS), and a lease counted from before that wait has run out already.
TAKE_OVER = f"""
INSERT INTO tessera_leader AS l (id, node_id, address, epoch, lease_until)
VALUES (1, $1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (id) DO UPDATE
    SET node_id = EXCLUDED.node_id, address = EXCLUDED.address,
        epoch = l.epoch + 1, lease_until = clock_timestamp() + make_interval(secs => $3)
    WHERE l.lease_until < now() OR NOT {still_there("$4", "$5")}
RETURNING epoch
"""  # noqa: S608 (no input)
# A node id's lock, held by its election session (two int4 keys: apart from the
# migrations' one-key lock). hashtext may give two ids one key: the message of
# a refusal then names the id anyway, and another id is the way out.
NODE_LOCK = 0x7E55E7A
TAKE_NODE_ID = "SELECT pg_try_advisory_lock($1, hashtext($2))"
# How often the node id's lock is tried again while an ended session exits.
ENDED_POLL = 0.02
# A session of this node's own name that has sat idle for $2 seconds: one its
# server gave up on (a renewal that timed out, a network cut) while PostgreSQL
# still holds it open, with the node id's lock, until TCP notices (two hours by
# default). A live election session runs a statement every round, so it is never
# idle that long; a second server with the same id (refused) is not ended.
END_STALE_SELF = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()
    AND state = 'idle' AND state_change < now() - make_interval(secs => $2)
"""
# The sessions that keep this standby's takeover (its election session, $1 || $2)
# waiting on the row's lock, ended, once the lease has run out: what they were
# writing was not committed (a COMMIT under way finishes first, before the lock
# is let go), and their callers repeat it on the new active, as after a kill.
# Another standby's election session, queued on the same lock, is left alone.
END_BLOCKERS = """
SELECT count(pg_terminate_backend(b.pid))
FROM pg_stat_activity a, unnest(pg_blocking_pids(a.pid)) AS blocker
JOIN pg_stat_activity b ON b.pid = blocker
WHERE a.datname = current_database() AND a.application_name = left($1 || $2, 63)
    AND b.application_name NOT LIKE $1 || '%'
    AND EXISTS (SELECT 1 FROM tessera_leader WHERE id = 1 AND lease_until < now())
"""
RENEW = """
UPDATE tessera_leader SET lease_until = now() + make_interval(secs => $2)
WHERE id = 1 AND epoch = $1
RETURNING epoch
"""
# A clean stop hands over at once: the lease ends now (the fence then refuses
# this epoch too) and a standby need not wait for it to run out.
RESIGN = "UPDATE tessera_leader SET lease_until = now() WHERE id = 1 AND epoch = $1"
CURRENT = f"""
SELECT node_id, address, epoch, lease_until > now() AND {still_there("$1", "$2")} AS live
FROM tessera_leader l
"""  # noqa: S608 (no input)
FENCE = """
SELECT set_config('idle_in_transaction_session_timeout', $2, true)
FROM tessera_leader
WHERE id = 1 AND epoch = $1 AND lease_until > now()
FOR KEY SHARE
"""
# A takeover's first statement, in its transaction: it waits for every fenced write
# under way (their FOR KEY SHARE), which TAKE_OVER's own lock (an update of no key
# column) would not.
LOCK_ROW = "SELECT 1 FROM tessera_leader WHERE id = 1 FOR UPDATE"
#: Seconds a fenced transaction may sit idle unless told otherwise (``idle_limit``).
IDLE_LIMIT = 60.0


class NodeIdInUse(Exception):
    """Another server's election session holds this server's node id (``NODE_LOCK``)."""


@dataclass(frozen=True)
class Leader:
    """The row as last read: who holds (or last held) the lease."""

    node_id: str
    address: str
    epoch: int
    live: bool  # its lease is running


async def fence(conn: asyncpg.Connection, epoch: int | None, idle_limit: float) -> None:
    """Inside a write transaction: raise ``NotLeader`` unless ``epoch`` still
    holds a running lease; otherwise keep the row share-locked until the
    transaction ends (a takeover waits for it)."""
    if epoch is None:
        raise NotLeader("this server has not been elected")
    row = await conn.fetchrow(FENCE, epoch, f"{max(1, round(idle_limit * 1000))}ms")
    if row is None:
        raise NotLeader(f"epoch {epoch} is no longer the active one: another server took over")


class Election:
    """One server's part in the election; ``run()`` until ``stop()``.

    ``on_elected(epoch)`` and ``on_lost()`` are called from the loop, plain
    functions that must not block (start a task for the slow part): the lease
    goes on being renewed while the new active loads its state.
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        address: str,
        *,
        lease: float = 5.0,
        interval: float = 1.0,
        on_elected: Callable[[int], None] = lambda epoch: None,
        on_lost: Callable[[], None] = lambda: None,
        idle_limit: float | None = None,
    ) -> None:
        if not 0 < interval < lease:
            raise ValueError(
                f"the interval ({interval} s) must be shorter than the lease ({lease} s)"
            )
        self.url = url
        self.node_id = node_id
        self.address = address
        self.lease = lease
        self.interval = interval
        self.on_elected = on_elected
        self.on_lost = on_lost
        # How long a fenced transaction may sit idle before the database ends its
        # session (and so its lock): a minute (at least the lease) unless told
        # otherwise, the module docstring says why.
        self.idle_limit = max(IDLE_LIMIT, lease) if idle_limit is None else idle_limit
        # How long a takeover, the lease run out, waits on the row's lock before it
        # ends the sessions holding it (END_BLOCKERS): a write that passed its fence
        # just before may still commit, but H2's 10 s for a hung active are the
        # lease, a round and this (3 s with the defaults), not a second lease.
        self.blocker_wait = max(interval, min(self.idle_limit, lease - 2 * interval))
        self.epoch: int | None = None  # set while this server holds the lease
        self.won = 0  # elections won: the times this server became the active (metrics)
        self.leader: Leader | None = None  # the row as last read
        self._deadline = 0.0  # monotonic() past which our lease may have ended
        self._conn: asyncpg.Connection | None = None
        self._stopping = asyncio.Event()
        self._woken = asyncio.Event()  # a round now, not at the next interval
        self._sitting_out_until = 0.0  # monotonic(): no takeover try before it (give_up)
        self._task: asyncio.Task[None] | None = None
        self._resigning: int | None = None  # an epoch given up, its lease to end
        # With start_thread: the rounds' loop and thread, and the server's loop,
        # where on_elected and on_lost are called.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._stepping = threading.Lock()  # a fence and a round may step down at once
        self.refused = ""  # why the last round could not take part (NodeIdInUse), or ''
        #: Seconds a session of this node's name must have sat idle to be taken for one
        #: this server gave up on (``END_STALE_SELF``): two leases, ten rounds.
        self.stale_after = 2 * lease

    # -- what the server asks ------------------------------------------------

    @property
    def leading(self) -> bool:
        """True while this server holds a lease it knows to be running."""
        return self.epoch is not None and monotonic() < self._deadline

    def leader_address(self) -> str:
        """The active server's advertised address as last read ('' when unknown)."""
        if self.leading:
            return self.address
        leader = self.leader
        if leader is None or not leader.live or leader.node_id == self.node_id:
            return ""  # (our own row, read while we led: stale now)
        return leader.address

    def fence_for(self, epoch: int | None) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        """The fence of the store of ``epoch``'s term (see the module docstring): its
        writes pass only while this server holds that epoch's lease. A term's
        store outlives its term for a moment (closed in a task of its own while a
        later term may begin), so it is fenced by its own epoch, never by
        whichever this server holds now: a store opened for epoch 1, its server
        elected again at epoch 3, must not write memory from before epoch 2's
        writes over them. Losing the lease here steps this server down at once
        rather than at the next renewal."""

        async def fenced(conn: asyncpg.Connection) -> None:
            if epoch is None or self.epoch != epoch:
                raise NotLeader(f"this server's term of epoch {epoch} has ended")
            try:
                await fence(conn, epoch, self.idle_limit)
            except NotLeader:
                if self.epoch == epoch:
                    self._step_down("a write was fenced")
                raise

        return fenced

    # -- the loop --------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """``run()`` as a task, which ``stop()`` then ends."""
        self._task = asyncio.create_task(self.run(), name=f"election {self.node_id}")
        return self._task

    async def start_thread(self) -> None:
        """``run()`` on a thread with its own event loop (see the module
        docstring); returns once the first round is done, so that a standby
        knows the active's address from the start. ``on_elected`` and
        ``on_lost`` are called on the caller's loop; ``stop()`` ends the thread."""
        self._home = asyncio.get_running_loop()
        first = threading.Event()

        async def rounds() -> None:
            self._loop = asyncio.get_running_loop()
            try:
                await self.tick()
            finally:
                first.set()
            if self.refused:
                await self._close()
            else:
                await self.run()

        self._thread = threading.Thread(
            target=asyncio.run, args=(rounds(),), name=f"election {self.node_id}", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(first.wait)
        if self.refused:  # a start with a node id in use: refused (once running: retried)
            await asyncio.to_thread(self._thread.join)
            raise NodeIdInUse(self.refused)

    def _call_home(self, fn: Callable[..., None], *args: object) -> None:
        """Run a callback on the server's loop (at once when rounds run there)."""
        home = self._home
        if home is None or self._thread is None or threading.current_thread() is not self._thread:
            fn(*args)
        else:
            home.call_soon_threadsafe(fn, *args)

    def _wake(self, *events: asyncio.Event) -> None:
        """Set the rounds' events, from their loop or from another thread."""
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            for event in events:
                loop.call_soon_threadsafe(event.set)
        else:
            for event in events:
                event.set()

    async def run(self) -> None:
        """Renew or try to take over every ``interval`` until ``stop()``; on
        ``stop()`` resign. Cancelled, it leaves the lease to run out."""
        try:
            while not self._stopping.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self.interval)
                self._woken.clear()
            await self._resign()
        finally:
            await self._close()

    async def tick(self) -> None:
        """One round: renew the lease we hold, or try to take it over."""
        sent = monotonic()
        try:
            conn = await self._connection()
            if self._resigning is not None:
                await conn.execute(RESIGN, self._resigning, timeout=self.lease)
                self._resigning = None
            if self.epoch is None:
                await self._read(conn)
            if self.epoch is not None:
                renewed = await conn.fetchval(RENEW, self.epoch, self.lease, timeout=self.lease)
                if renewed is None:
                    self._step_down("another server took over")
                else:
                    self._deadline = sent + self.lease
            elif (self.leader is None or not self.leader.live) and sent >= self._sitting_out_until:
                # Only then: a takeover locks the row, and so waits for the
                # active's fenced transaction of the moment.
                won = await self._take_over(conn)
                if won is not None:
                    # Our deadline counts from before the take, which may have waited
                    # on the row's lock for idle_limit and more (END_BLOCKERS): the
                    # lease would be gone at once. Renewed now, it counts from now.
                    sent = monotonic()
                    won = await conn.fetchval(RENEW, won, self.lease, timeout=self.lease)
                if won is not None:
                    self._deadline = sent + self.lease
                    self.epoch = int(won)
                    self.won += 1
                    log.info("elected", node_id=self.node_id, epoch=self.epoch)
                    self._call_home(self.on_elected, self.epoch)
            await self._read(conn)
        except NodeIdInUse as exc:
            self.refused = str(exc)
            log.error("election: node id in use", node_id=self.node_id, error=self.refused)
            self._step_down("another server took its node id")
        except DATABASE_GONE as exc:
            log.warning("election: database unreachable", error=str(exc) or type(exc).__name__)
            await self._close()
        if self.epoch is not None and not self.leading:
            self._step_down("the lease ran out before it could be renewed")

    async def _take_over(self, conn: asyncpg.Connection) -> int | None:
        """TAKE_OVER; kept waiting on the row's lock past ``blocker_wait``, it ends
        the sessions holding it (``END_BLOCKERS``: the module docstring)."""

        async def locked_take() -> int | None:
            async with conn.transaction():
                await conn.execute(LOCK_ROW, timeout=self.idle_limit + self.lease)
                won: int | None = await conn.fetchval(
                    TAKE_OVER,
                    self.node_id,
                    self.address,
                    self.lease,
                    APP_PREFIX,
                    WRITER_PREFIX,
                    timeout=self.lease,
                )
                return won

        take = asyncio.ensure_future(locked_take())
        done, _ = await asyncio.wait({take}, timeout=self.blocker_wait)
        # END_BLOCKERS finds the blockers only while the take still waits (through
        # pg_blocking_pids of its session): the election connection's lock_timeout
        # leaves it the time (_connection). Again every interval while it waits (a
        # blocker hidden behind another standby's queued takeover, gone since).
        while not done:
            await self._end_blockers()
            done, _ = await asyncio.wait({take}, timeout=self.interval)
        won = await take
        return None if won is None else int(won)

    async def _end_blockers(self) -> None:
        """END_BLOCKERS from a second connection; failing, the take waits on."""
        try:
            other = await asyncpg.connect(self.url, timeout=self.lease)
            try:
                ended = await other.fetchval(
                    END_BLOCKERS, APP_PREFIX, self.node_id, timeout=self.lease
                )
            finally:
                await other.close(timeout=self.lease)
        except DATABASE_GONE as exc:
            log.warning("election: could not end a takeover's blockers", error=str(exc))
            return
        if ended:
            log.warning("election: ended sessions holding a takeover off", sessions=ended)

    async def stop(self) -> None:
        """Leave the election; if leading, end the lease now so that a standby
        takes over at its next try (call after the store's last commit)."""
        self._wake(self._stopping, self._woken)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        elif self._task is not None:
            await self._task
        else:
            await self._resign()
            await self._close()

    def give_up(self, why: str) -> None:
        """Step down and end our lease in a round run at once (the store failed:
        a call's write, or a background one, a timer's or the heartbeat flush):
        another server takes over at its next round. This one sits out the
        takeover for one lease, so that a standby with a working store comes
        first; with none, it wins anew with a fresh store after that."""
        epoch = self.epoch
        self._step_down(why)
        if epoch is not None:
            self._resigning = epoch
            self._sitting_out_until = monotonic() + self.lease
            self._wake(self._woken)

    # -- inside ------------------------------------------------------------------

    async def _resign(self) -> None:
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        with contextlib.suppress(*DATABASE_GONE, NodeIdInUse):
            conn = await self._connection()
            await conn.execute(RESIGN, epoch, timeout=self.interval)
            log.info("resigned", node_id=self.node_id, epoch=epoch)

    def _step_down(self, why: str) -> None:
        with self._stepping:
            epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        log.warning("lost the lead", node_id=self.node_id, epoch=epoch, why=why)
        self.leader = None  # read anew at the next round
        self._call_home(self.on_lost)

    async def _read(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(CURRENT, APP_PREFIX, WRITER_PREFIX, timeout=self.lease)
        self.leader = None if row is None else Leader(**dict(row))

    async def _connection(self) -> asyncpg.Connection:
        """The election's session, holding this server's node id (``NODE_LOCK``)."""
        if self._conn is None or self._conn.is_closed():
            # A takeover waiting behind a fenced transaction gives up and tries again,
            # but only after its END_BLOCKERS (blocker_wait in) has had the time to end
            # a session paused inside a statement: END_BLOCKERS finds that session
            # through the waiting one, so a lock_timeout of idle_limit alone (when it
            # was the lease) ended every try, blocker unfound, just before it looked. The
            # client's timeouts (the lease, for a renewal) end other statements first.
            millis = str(max(1, round((self.idle_limit + self.lease) * 1000)))
            name = application_name(APP_PREFIX, self.node_id)
            probe = str(max(1, round(self.lease)))  # the database notices a dead peer
            conn = await asyncpg.connect(
                self.url,
                timeout=self.lease,
                server_settings={
                    "lock_timeout": millis,
                    "application_name": name,
                    # (TCP only; ignored on a Unix socket) a peer gone without a word is
                    # found in about three leases, and its session, with its lock, ended
                    "tcp_keepalives_idle": probe,
                    "tcp_keepalives_interval": probe,
                    "tcp_keepalives_count": "2",
                },
            )
            try:
                mine = await conn.fetchval(
                    TAKE_NODE_ID, NODE_LOCK, self.node_id, timeout=self.lease
                )
                if not mine and await conn.fetchval(
                    END_STALE_SELF, name, self.stale_after, timeout=self.lease
                ):
                    log.warning(
                        "election: ended a stale session of this node", node_id=self.node_id
                    )
                    mine = await self._take_node_id_once_ended(conn)
            except BaseException:
                conn.terminate()
                raise
            if not mine:
                conn.terminate()
                raise NodeIdInUse(
                    f"another server on this database runs with node id {self.node_id!r}: "
                    "give each server its own --node-id (the default is its advertised address)"
                )
            self._conn, self.refused = conn, ""
        return self._conn

    async def _take_node_id_once_ended(self, conn: asyncpg.Connection) -> bool:
        """The node id's lock, taken once the stale session just ended has exited.
        pg_terminate_backend returns when the signal is sent, not when the backend
        has gone with its lock, so one try straight after it could find the lock
        still held (and refuse the node id). Tried again every ``ENDED_POLL`` for at most
        a lease: a live second server's session keeps it, and that is refused."""
        give_up = monotonic() + self.lease
        while True:
            if await conn.fetchval(TAKE_NODE_ID, NODE_LOCK, self.node_id, timeout=self.lease):
                return True
            if monotonic() >= give_up:
                return False
            await asyncio.sleep(ENDED_POLL)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.interval)
            except DATABASE_GONE:
                conn.terminate()  # a connection in no state to say goodbye
