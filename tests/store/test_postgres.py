"""The PostgreSQL store (issue 13, point 2): every durable object round trips and
loads as on SQLite, group commit, fencing, migrations, and the promise that an
answer comes only after COMMIT. Each test has a fresh database (``pg_url``,
``tests/pg.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from server.api.errors import status_code_for
from server.domain.admins import AdminKey, AuditEvent
from server.domain.changes import Changes, Deleted
from server.domain.coverage import Subscription, SubscriptionKind
from server.domain.directory import (
    Invitation,
    InvitationState,
    Member,
    MemberState,
    Notification,
    NotificationKind,
    User,
)
from server.domain.ledger import Cause, EntryKind, Hold, LedgerEntry, TokenPack
from server.domain.meta import MetaValue
from server.domain.products import Platform, Product, ProductKind
from server.domain.sessions import (
    ActivitySpan,
    ChargeState,
    Coverage,
    Device,
    EndReason,
    Meter,
    Session,
    SessionState,
)
from server.domain.teams import Plan, Team
from server.store.codec import NOT_LOADED, TABLES, Row
from server.store.pg_schema import MIGRATIONS
from server.store.port import NotLeader, ReadFailed, Snapshot, StoreFailed, StorePort
from server.store.postgres import PostgresStore, migrate, schema_version
from server.store.sqlite import Store
from tests.pg import PgServer
from tests.store.builders import a_session

T = datetime(2028, 2, 29, 12, 34, 56, 789012, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(days=1)
LEADER_FENCE = (
    "SELECT 1 FROM tessera_leader WHERE id = 1 AND epoch = $1 AND lease_until > now() FOR SHARE"
)


async def _sql(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run SQL on a connection of its own (another client of the database)."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _session(sid: str, start: datetime, ended: datetime | None = None, **kw: Any) -> Session:
    return a_session(
        sid,
        start,
        ended=ended,
        user_id=kw.get("user", "zoë@example.com"),
        team_id=kw.get("team", "acme"),
        product_id=kw.get("product", "ACAD"),
        product_version="2026.1",
        platform=Platform.LINUX,
        device_id="dev-1",
        parent_session_id=kw.get("parent", ""),
        request_id=kw.get("request_id", ""),
        coverage=Coverage.SUBSCRIPTION,
        plan=Plan.PREMIUM,
        lease_start=start + H,
        last_activity=start + timedelta(microseconds=1),
        coverage_since=start + timedelta(seconds=3),
        state=SessionState.IDLE if ended is None else SessionState.ENDED,
        end_reason=None if ended is None else EndReason.LEASE_EXPIRED,
    )


def every_object() -> list[object]:
    """At least one object of every durable type, with the awkward values: None,
    bytes, empty and many-element sets, non-ASCII text, large numbers, microseconds."""
    cause = Cause("ses_1", "zoë@example.com", "ACAD")
    return [
        Team("acme", "Acme Ünited", Plan.PREMIUM, T, True, frozenset({"ACAD", "REVIT"})),
        Team("beta", "Beta", Plan.STANDARD, T + DAY),
        Product("ACAD", "AutoCAD", 10, ProductKind.PRODUCT, "", True, frozenset(Platform), 2022),
        Product("ACADEL", "Electrical", 0, ProductKind.PLUGIN, "ACAD", False, frozenset()),
        TokenPack("pk_1", "acme", 2**40, T, T + 365 * DAY, "po-1", 2**40 - 16, 10, 5, 1, False),
        TokenPack("pk_2", "beta", 7, T, T, "", 0, 0, 0, 7, True),
        Hold.of("h1", "acme", 10, (("pk_1", 6), ("pk_3", 4)), cause, T),
        Hold.of("h2", "acme", 1, (("pk_1", 1),), Cause(), T),
        LedgerEntry(1, T, EntryKind.PURCHASE, "acme", "pk_1", 2**40, 2**40, 0, Cause(), "a" * 64),
        LedgerEntry(2, T + H, EntryKind.HOLD, "acme", "pk_1", 10, -10, 10, cause, "b" * 64),
        LedgerEntry(3, T + 2 * H, EntryKind.CAPTURE, "acme", "pk_1", 6, 0, -6, cause, "c" * 64),
        User("zoë@example.com", "Zoë", "zoë@example.com", b"\x00\xffkey-hash"),
        User("bob@example.com", "Bob", "bob@example.com", None),
        Member("acme", "zoë@example.com", MemberState.ACTIVE, False, True, frozenset(), None, T),
        Member(
            "acme",
            "bob@example.com",
            MemberState.INVITED,
            True,
            False,
            frozenset({"ACAD", "ACADEL"}),
            "inv_1",
            T + H,
        ),
        Invitation(
            "inv_1",
            "acme",
            "bob@example.com",
            b"\x01" * 32,
            T,
            T + 7 * DAY,
            InvitationState.PENDING,
        ),
        Notification(
            "n_2", "acme", "bob@example.com", "bob@example.com", NotificationKind.INVITATION, T
        ),
        Notification(
            "n_1", "acme", "zoë@example.com", "zoë@example.com", NotificationKind.ACCESS_CHANGED, T
        ),
        Subscription("sub_1", "zoë@example.com", "ACAD", SubscriptionKind.TRIAL, T, T + 30 * DAY),
        _session("ses_1", T),
        _session("ses_0", T - H, T + H, parent="ses_x", request_id="req-1"),
        Meter("acme", "zoë@example.com", "ACAD"),
        Meter("acme", "bob@example.com", "ACAD", ChargeState.GRACE, T, T + 5 * H),
        Meter("beta", "bob@example.com", "ACAD", ChargeState.CHARGED, T, T + DAY),
        Device("zoë@example.com", "ACAD", "dev-1", T, T),
        Device("zoë@example.com", "ACAD", "dev-2", T, T + H),
        ActivitySpan("ses_0", "acme", "zoë@example.com", "ACAD", T - H, T),
        ActivitySpan("ses_0", "acme", "zoë@example.com", "ACAD", T + H / 2, T + H),
        MetaValue("test_clock", "2028-02-29T12:34:56.789012Z"),
        Notification(
            "n_3", "acme", "", "", NotificationKind.PACK_EXPIRING, T, "", "pk_1", 2**40 - 16, T
        ),
        Notification(
            "n_4",
            "acme",
            "zoë@example.com",
            "",
            NotificationKind.TOKENS_EXHAUSTED,
            T,
            "",
            "",
            0,
            None,
            "ACAD",
        ),
        AdminKey("ak_1", "Zoë's key", frozenset({"acme", "beta"}), b"\x00\xffhash", T),
        AdminKey("ak_2", "old", frozenset({"beta"}), b"\x02hash", T, T + H),
        AuditEvent(
            1,
            "ev_1",
            T,
            "operator",
            "operator",
            "PurchaseTokens",
            "acme",
            "",
            "pk_1",
            "po-1",
            '{"team_id": "acme", "tokens": 10}',
            "d" * 64,
        ),
    ]


def later_changes() -> list[object]:
    """A second commit: deletes, and rows changed in place."""
    return [
        Deleted(Hold.of("h2", "acme", 1, (("pk_1", 1),), Cause(), T)),
        Deleted(Device("zoë@example.com", "ACAD", "dev-2", T, T + H)),
        Deleted(MetaValue("test_clock", "")),
        TokenPack("pk_1", "acme", 2**40, T, T + 365 * DAY, "po-1", 2**40 - 20, 14, 5, 1, False),
        _session("ses_1", T, T + 3 * H),
        MetaValue("clock_mode", "real"),
    ]


def rows(snapshot: Snapshot) -> dict[str, list[Row]]:
    """A snapshot as the rows of each table, sorted (SQLite loads in insertion
    order, PostgreSQL in key order: the engine depends on neither)."""
    out = {}
    for kind, objs in snapshot.objects.items():
        assert all(type(o) is kind for o in objs)
        out[TABLES[kind].name] = sorted(TABLES[kind].to_row(o) for o in objs)
    return out


def expected_rows(*commits: list[object]) -> dict[str, list[Row]]:
    """What the loaded tables must hold after ``commits``, from the codec alone."""
    tables: dict[str, dict[Row, Row]] = {
        t.name: {} for t in TABLES.values() if t.name not in NOT_LOADED
    }
    for commit in commits:
        for item in commit:
            obj = item.obj if isinstance(item, Deleted) else item
            table = TABLES[type(obj)]
            if table.name not in tables:
                continue
            row = table.to_row(obj)
            if isinstance(item, Deleted):
                tables[table.name].pop(table.key_of(row), None)
            else:
                tables[table.name][table.key_of(row)] = row
    return {name: sorted(found.values()) for name, found in tables.items()}


async def _both(
    pg_url: str, tmp_path: Path, use: Callable[[StorePort], Awaitable[Any]]
) -> tuple[Any, Any]:
    """``use`` on a SQLite store and on a PostgreSQL one, each opened afresh."""
    out = []
    for store in (await Store.open(tmp_path / "s.db"), await PostgresStore.open(pg_url)):
        try:
            out.append(await use(store))
        finally:
            await store.close()
    return out[0], out[1]


# -- every durable object ---------------------------------------------------------


async def test_pg_every_durable_object_round_trips_and_loads_as_on_sqlite(
    pg_url: str, tmp_path: Path
) -> None:
    first, second = every_object(), later_changes()

    async def write(store: StorePort) -> None:
        await store.commit(Changes(list(first)))
        await store.commit(Changes(list(second)))

    async def load(store: StorePort) -> Snapshot:
        return await store.load()

    await _both(pg_url, tmp_path, write)
    lite, pg = await _both(pg_url, tmp_path, load)  # reopened: what is durable
    assert (
        set(pg.objects)
        == set(lite.objects)
        == {k for k, t in TABLES.items() if t.name not in NOT_LOADED}
    )
    assert rows(pg) == rows(lite) == expected_rows(first, second)
    assert rows(pg)["teams"][0] == TABLES[Team].to_row(first[0])  # not merely all empty
    assert (pg.max_ledger_seq, pg.last_ledger_hash) == (3, "c" * 64)
    assert (lite.max_ledger_seq, lite.last_ledger_hash) == (3, "c" * 64)
    # The outbox comes back in the order it was written, on both.
    assert [n.notification_id for n in pg.of(Notification)] == ["n_2", "n_1", "n_3", "n_4"]
    assert [n.notification_id for n in lite.of(Notification)] == ["n_2", "n_1", "n_3", "n_4"]
    # Values come back with their types: aware instants, bytes, frozensets, enums.
    user = next(u for u in pg.of(User) if u.key_hash is not None)
    assert user.key_hash == b"\x00\xffkey-hash" and type(user.key_hash) is bytes
    session = next(s for s in pg.of(Session) if s.session_id == "ses_1")
    assert session.end_time == T + 3 * H and session.end_time.tzinfo is not None
    assert session.end_reason is EndReason.LEASE_EXPIRED


async def test_pg_named_reads_equal_sqlites_on_the_same_data(pg_url: str, tmp_path: Path) -> None:
    first = every_object()

    async def reads(store: StorePort) -> list[Any]:
        await store.commit(Changes(list(first)))
        ended = await store.ended_session("ses_0")
        facts = await store.usage_facts("acme", T - DAY, T + DAY)
        return [
            await store.ledger_page("acme", 0, 100),
            await store.ledger_page("acme", 1, 1, "pk_1"),
            None if ended is None else TABLES[Session].to_row(ended),
            await store.ended_session("nope"),
            sorted(facts.captures, key=repr),
            sorted(facts.session_starts, key=repr),
            sorted(facts.spans, key=repr),
            facts.moved,
        ]

    lite, pg = await _both(pg_url, tmp_path, reads)
    assert pg == lite
    assert len(pg[0]) == 3 and pg[1] == [pg[0][1]]  # the data is there to compare
    assert pg[2] is not None and pg[3] is None and len(pg[4]) == 1


async def test_pg_load_keeps_live_and_last_days_ended_sessions_only(
    pgstore: PostgresStore,
) -> None:
    """codec's load filter (ended more than ``ENDED_KEPT`` before the newest end: left
    on disk) runs on PostgreSQL too: its days in microseconds overflow a 32-bit
    integer, which PostgreSQL refused."""
    await pgstore.commit(
        [
            _session("ses_live", T - 30 * DAY),
            _session("ses_recent", T - 2 * DAY, T),
            _session("ses_old", T - 20 * DAY, T - 8 * DAY),
        ]
    )
    loaded = await pgstore.load()
    assert sorted(s.session_id for s in loaded.of(Session)) == ["ses_live", "ses_recent"]
    assert await pgstore.ended_session("ses_old") is not None  # still stored, read on demand


# -- group commit and durability ----------------------------------------------------


def _pack(i: int) -> TokenPack:
    return TokenPack(f"pk_{i:04d}", "acme", i, T, T + 365 * DAY, f"po-{i}", i)


async def test_pg_group_commit_many_concurrent_commits_share_few_transactions(
    pgstore: PostgresStore, pg_url: str
) -> None:
    n = 300
    before = pgstore.commits
    await asyncio.gather(*(pgstore.commit([_pack(i)]) for i in range(n)))
    commits = pgstore.commits - before
    assert 1 <= commits <= n // 10, f"{n} concurrent commits took {commits} transactions"
    stored = await _sql(pg_url, "SELECT count(*), sum(tokens) FROM packs")
    assert (stored[0][0], stored[0][1]) == (n, n * (n - 1) // 2)


async def _writer_waits_on_a_lock(url: str) -> None:
    """Poll PostgreSQL (5 s at most) until the store's writer waits on a lock."""
    for _ in range(250):
        waiting = await _sql(
            url,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'tessera-writer:%' AND wait_event_type = 'Lock'",
        )
        if waiting[0][0]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the writer never waited on the lock")


@contextlib.asynccontextmanager
async def _commit_behind_a_row_lock(
    pgstore: PostgresStore, pg_url: str
) -> AsyncIterator[tuple[Any, asyncio.Task[None]]]:
    """Pack 1 stored, then another client locks its row (FOR UPDATE, in the yielded
    open transaction) and the store commits pack 1 changed and pack 2: the commit is
    yielded waiting on that lock, not done."""
    await pgstore.commit([_pack(1)])
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT * FROM packs WHERE pack_id = 'pk_0001' FOR UPDATE")
        changed = TokenPack("pk_0001", "acme", 1, T, T + 365 * DAY, "po-1", 0, 1)
        pending = asyncio.create_task(pgstore.commit([changed, _pack(2)]))
        await _writer_waits_on_a_lock(pg_url)
        assert not pending.done()
        yield tx, pending
    finally:
        await blocker.close()


async def test_pg_commit_answers_only_after_the_transaction_committed(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """A commit whose row is locked by another client waits for it; until it
    returns, no other client can see its change."""
    async with _commit_behind_a_row_lock(pgstore, pg_url) as (tx, pending):
        seen = await _sql(pg_url, "SELECT count(*) FROM packs WHERE pack_id = 'pk_0002'")
        assert seen[0][0] == 0  # written in the open transaction, not visible yet
        await tx.rollback()
        await asyncio.wait_for(pending, 10)
    seen = await _sql(pg_url, "SELECT held FROM packs ORDER BY pack_id")
    assert [r[0] for r in seen] == [1, 0]


async def test_pg_lost_connection_fails_the_store_for_every_later_call(
    pgstore: PostgresStore, pg_url: str
) -> None:
    await pgstore.commit([_pack(1)])
    await _sql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name LIKE 'tessera-writer:%' AND datname = current_database()",
    )
    with pytest.raises(StoreFailed):
        await pgstore.commit([_pack(2)])
    with pytest.raises(StoreFailed):
        await pgstore.commit([_pack(3)])
    with pytest.raises(StoreFailed):
        await pgstore.barrier()
    assert [r[0] for r in await _sql(pg_url, "SELECT pack_id FROM packs")] == ["pk_0001"]


# -- fencing (RULES H1) ----------------------------------------------------------------


def leader_fence(epoch: int, calls: list[int]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The fence of the shared design (COMMON): this server's epoch must still
    hold the leader row, its lease unexpired."""

    async def fence(conn: asyncpg.Connection) -> None:
        calls.append(epoch)
        if await conn.fetchval(LEADER_FENCE, epoch) is None:
            raise NotLeader(f"epoch {epoch} no longer leads")

    return fence


async def _lead(url: str, epoch: int) -> None:
    await _sql(
        url,
        "INSERT INTO tessera_leader VALUES (1, 'n1', '127.0.0.1:1', $1, now() + interval '1 hour') "
        "ON CONFLICT (id) DO UPDATE SET epoch = $1, lease_until = now() + interval '1 hour'",
        epoch,
    )


async def test_pg_failed_fence_aborts_the_transaction_and_fails_every_waiter(
    pg_url: str,
) -> None:
    calls: list[int] = []
    first = await PostgresStore.open(pg_url, fence=leader_fence(1, calls))
    try:
        await _lead(pg_url, 1)
        await first.commit([_pack(0)])  # leading: written
        assert calls == [1]
        await _lead(pg_url, 2)  # another server took over
        results = await asyncio.gather(
            *(first.commit([_pack(i)]) for i in range(1, 51)), return_exceptions=True
        )
        assert all(isinstance(r, NotLeader) for r in results), results
        assert len(calls) < 50  # they shared transactions: fenced once each
        with pytest.raises(NotLeader):  # and every later call
            await first.commit([_pack(99)])
        with pytest.raises(NotLeader):
            await first.barrier()
    finally:
        await first.close()
    assert [r[0] for r in await _sql(pg_url, "SELECT pack_id FROM packs")] == ["pk_0000"]


async def test_pg_fence_holds_the_leader_row_until_the_write_commits(pg_url: str) -> None:
    """The fence runs in the write's own transaction and locks the leader row
    FOR SHARE: a takeover waits until that transaction ends, so a paused active
    can never commit after a takeover."""
    await (await PostgresStore.open(pg_url)).close()  # migrated
    await _lead(pg_url, 1)
    entered, resume = asyncio.Event(), asyncio.Event()
    calls: list[int] = []
    fenced = leader_fence(1, calls)

    async def paused_fence(conn: asyncpg.Connection) -> None:
        await fenced(conn)
        entered.set()
        await resume.wait()  # the active pauses after its fence, before its writes

    store = await PostgresStore.open(pg_url, fence=paused_fence)
    try:
        write = asyncio.create_task(store.commit([_pack(1)]))
        await asyncio.wait_for(entered.wait(), 10)
        taker = await asyncpg.connect(pg_url, server_settings={"lock_timeout": "200ms"})
        try:
            with pytest.raises(asyncpg.LockNotAvailableError):
                await taker.execute("UPDATE tessera_leader SET epoch = epoch + 1")
        finally:
            await taker.close()
            resume.set()
        await asyncio.wait_for(write, 10)  # still the leader when it committed
    finally:
        resume.set()
        await store.close()
    await _sql(pg_url, "UPDATE tessera_leader SET epoch = epoch + 1")  # now it goes through
    assert [r[0] for r in await _sql(pg_url, "SELECT epoch FROM tessera_leader")] == [2]


async def test_pg_an_error_in_the_fence_fails_waiters_with_store_failed(pg_url: str) -> None:
    async def broken(conn: asyncpg.Connection) -> None:
        raise RuntimeError("election table unreadable")

    store = await PostgresStore.open(pg_url, fence=broken)
    try:
        with pytest.raises(StoreFailed, match="election table unreadable"):
            await store.commit([_pack(1)])
    finally:
        await store.close()
    assert await _sql(pg_url, "SELECT pack_id FROM packs") == []


# -- migrations -----------------------------------------------------------------------


async def test_pg_migrations_apply_once_and_are_recorded(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 12
        await store.commit([MetaValue("marker", "kept")])
    finally:
        await store.close()
    store = await PostgresStore.open(pg_url)  # reopened: nothing applied again
    try:
        assert (await store.load()).of(MetaValue) == [MetaValue("marker", "kept")]
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await migrate(conn) == 0
        versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await conn.close()


async def test_m7_pg_migration_5_derives_each_lease_start_from_the_stored_lease_end(
    pg_url: str,
) -> None:
    """As SQLite's migration 9: a database that stored each session's lease end
    alone gets when the lease began, 24 hours before, and every lease ends when it
    did (M7)."""
    start = datetime(2026, 3, 1, 8, 0, 0, 5, tzinfo=UTC)
    store = await PostgresStore.open(pg_url)
    try:
        await store.commit([_session("ses_live", start), _session("ses_ended", start, start + H)])
    finally:
        await store.close()
    # Back to a database at migration 4, as a release before 5 left it.
    await _sql(pg_url, "ALTER TABLE sessions DROP COLUMN lease_start")
    await _sql(pg_url, "DROP TABLE tessera_secrets")
    await _sql(pg_url, "ALTER TABLE packs DROP COLUMN bought_by")
    await _sql(pg_url, "DROP TABLE audit_teams, sessions_older_loaded")
    await _sql(pg_url, "DROP INDEX ledger_team_captures, ledger_team_moves, activity_team_long")
    await _sql(pg_url, "DELETE FROM schema_version WHERE version >= 5")
    store = await PostgresStore.open(pg_url)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 12
        loaded = {s.session_id: s for s in (await store.load()).of(Session)}
    finally:
        await store.close()
    # ``_session`` begins the lease an hour after the start
    assert loaded["ses_live"].lease_start == start + H
    assert loaded["ses_live"].lease_end == start + H + timedelta(hours=24)
    assert loaded["ses_ended"].lease_end == start + H + timedelta(hours=24)


async def test_pg_servers_starting_together_migrate_once(pg: PgServer) -> None:
    url = pg.create()
    try:
        stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(5)))
        try:
            versions = await _sql(url, "SELECT version FROM schema_version ORDER BY version")
            assert [r[0] for r in versions] == list(range(1, len(MIGRATIONS) + 1))
            await asyncio.gather(*(s.commit([_pack(i)]) for i, s in enumerate(stores)))
            assert len(await _sql(url, "SELECT pack_id FROM packs")) == 5
        finally:
            for s in stores:
                await s.close()
    finally:
        pg.drop(url)


async def test_pg_refuses_a_database_of_a_newer_release(pg_url: str) -> None:
    await (await PostgresStore.open(pg_url)).close()
    await _sql(pg_url, "INSERT INTO schema_version (version) VALUES ($1)", len(MIGRATIONS) + 1)
    with pytest.raises(StoreFailed, match="newer than this release"):
        await PostgresStore.open(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        assert await schema_version(conn) == len(MIGRATIONS) + 1
    finally:
        await conn.close()


async def test_pg_schema_has_sqlites_tables_and_columns(pg_url: str, tmp_path: Path) -> None:
    """pg_schema.py and schema.py describe the same tables (plus the leader row)."""
    lite = await Store.open(tmp_path / "s.db")
    try:
        names = [
            r[0] for r in await lite.query("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        sqlite_columns = {
            n: {r[1] for r in await lite.query(f"PRAGMA table_info({n})")}
            for n in names
            if not n.startswith("sqlite_")
        }
    finally:
        await lite.close()
    await (await PostgresStore.open(pg_url)).close()
    found = await _sql(
        pg_url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public'",
    )
    pg_columns: dict[str, set[str]] = {}
    for table, column in found:
        pg_columns.setdefault(table, set()).add(column)
    assert pg_columns.pop("schema_version") == {"version", "applied_at"}
    assert pg_columns.pop("tessera_leader") == {"id", "node_id", "address", "epoch", "lease_until"}
    assert pg_columns.pop("tessera_secrets") == {"id", "digest", "node_id", "recorded_at"}
    assert pg_columns == sqlite_columns
    for table in TABLES.values():  # every column the codec writes exists
        assert set(table.columns) <= pg_columns[table.name]


async def test_pg_a_role_that_cannot_alter_the_ledger_serves_a_migrated_database(
    pg_url: str,
) -> None:
    """docs/postgres.md's least privilege: the owner migrates; the servers run as
    a role that may create no table and may only append to the ledger, the
    activity, the audit trail and the notifications (the audit trail was left
    out: its newest events could be deleted and verify still passed)."""
    await (await PostgresStore.open(pg_url)).close()  # migrated by the owner
    role = f"tessera_app_{secrets.token_hex(4)}"
    await _sql(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD 'app'")
    try:
        for grant in (
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            f"REVOKE UPDATE, DELETE ON ledger, activity, audit_events, audit_teams, "
            f"notifications FROM {role}",
        ):
            await _sql(pg_url, grant)
        parts = urlsplit(pg_url)
        app_url = urlunsplit(parts._replace(netloc=f"{role}:app@{parts.netloc.rpartition('@')[2]}"))
        store = await PostgresStore.open(app_url)
        try:
            await store.commit(Changes(every_object()))
            await store.commit(Changes(later_changes()))
            assert rows(await store.load()) == expected_rows(every_object(), later_changes())
        finally:
            await store.close()
        for table in ("ledger", "activity", "audit_events", "audit_teams", "notifications"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _sql(app_url, f"DELETE FROM {table}")  # noqa: S608 (the test's own names)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _sql(app_url, "CREATE TABLE t (x INTEGER)")
    finally:
        await _sql(pg_url, f"DROP OWNED BY {role}")
        await _sql(pg_url, f"DROP ROLE {role}")


async def test_pg_close_is_bounded_when_the_database_does_not_answer(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """A server that lost its place must get back to standby even if its write
    hangs (here: on a lock another client holds; in life, a partition): close cuts
    the writer's connection after its timeout, and that write never commits."""
    async with _commit_behind_a_row_lock(pgstore, pg_url) as (tx, pending):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await pgstore.close(timeout=0.3)
        assert loop.time() - start < 3
        with pytest.raises(StoreFailed):
            await pending
        await tx.rollback()
    rows_now = await _sql(pg_url, "SELECT pack_id, held FROM packs")
    assert [tuple(r) for r in rows_now] == [("pk_0001", 0)]


async def test_pg_a_read_whose_connection_is_lost_is_unavailable_not_internal(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """A read on the pool whose connection is cut (a pooler restart, a terminated
    backend) raised asyncpg's error: INTERNAL, a traceback in the log, for a call
    that changed nothing. It is ReadFailed (UNAVAILABLE: repeat the call), and the
    next read gets a new connection."""
    reading = asyncio.ensure_future(pgstore.query("SELECT pg_sleep(30)"))
    await _cut_the_read(pg_url, "pg_terminate_backend")
    with pytest.raises(ReadFailed) as failed:
        await asyncio.wait_for(reading, 10)
    assert failed.value.reason == "UNAVAILABLE"
    assert status_code_for(failed.value) is grpc.StatusCode.UNAVAILABLE
    assert await pgstore.query("SELECT 1") == [(1,)]


async def _cut_the_read(pg_url: str, function: str) -> None:
    """Call ``function`` (pg_terminate_backend, pg_cancel_backend) on the reader's
    backend running pg_sleep, once the read is under way (5 s at most): sleeping, not
    only named in pg_stat_activity, which it is from its Parse on, and PostgreSQL
    drops a cancel that finds the backend waiting for the client's Execute."""
    for _ in range(250):
        cut = await _sql(
            pg_url,
            f"SELECT {function}(pid) FROM pg_stat_activity "  # noqa: S608 (the test's own names)
            "WHERE application_name LIKE 'tessera-reader:%' AND query LIKE '%pg_sleep%' "
            "AND wait_event = 'PgSleep' AND datname = current_database()",
        )
        if cut:
            return
        await asyncio.sleep(0.02)  # (polling PostgreSQL, not waiting for time to pass)
    raise AssertionError("the read never showed in pg_stat_activity")


async def test_pg_a_read_cancelled_by_an_administrator_is_read_failed_unavailable(
    pgstore: PostgresStore, pg_url: str
) -> None:
    """An administrator cancels the read's statement (pg_cancel_backend; a
    statement_timeout does the same): asyncpg raises QueryCanceledError, an
    OperatorInterventionError, neither a lost connection nor an interface error.
    It leaves the store as ReadFailed (UNAVAILABLE at the edge: repeat the call)
    naming the error, not INTERNAL; and the next read is answered. (A backend
    terminated mid-read, by pg_terminate_backend or a shutdown, reaches asyncpg as
    a closed connection, ConnectionDoesNotExistError: the test above.)"""
    reading = asyncio.ensure_future(pgstore.query("SELECT pg_sleep(30)"))
    await _cut_the_read(pg_url, "pg_cancel_backend")
    with pytest.raises(ReadFailed) as failed:
        await asyncio.wait_for(reading, 10)
    assert issubclass(asyncpg.QueryCanceledError, asyncpg.OperatorInterventionError)
    assert failed.value.metadata == {"error": "QueryCanceledError"}
    assert failed.value.reason == "UNAVAILABLE"
    assert status_code_for(failed.value) is grpc.StatusCode.UNAVAILABLE
    assert await pgstore.query("SELECT 1") == [(1,)]
