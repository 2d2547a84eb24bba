"""PostgreSQL through asyncpg: the same port as SQLite, for several servers on one database.

``--db postgresql://user@host:port/dbname``. The rows are codec's ``Table``
specs, as in SQLite; the statements are made from the same specs (SQLite's
``?`` marks numbered ``$1``, ``$2``...; its upsert is already PostgreSQL's
``INSERT ... ON CONFLICT (key) DO UPDATE``). Instants are BIGINT microseconds,
as in SQLite, through the same codec.

- Migrations (``pg_schema.py``) run at open, numbered, recorded in
  ``schema_version``, under an advisory lock: servers starting together on a
  new database take turns. A database not encoded UTF8 is refused first, and a
  role that may not create tables is told to let the owner migrate. Then what
  an older release left out of the rows it wrote (a rolling upgrade's old
  active) is filled in, fenced, before the load (``backfill``).
- Group commit (``group_commit.py``): one writer connection and task; many
  callers share one transaction and are answered only after its COMMIT
  (``synchronous_commit`` is forced on for that connection: the answer waits
  for the commit's WAL flush even where a database defaults to off).
- Fencing (RULES H1): every write transaction first awaits ``fence(conn)``
  when one is given (``server/ha/``: the leader row's epoch, ``FOR SHARE``);
  it raises ``NotLeader`` to roll the transaction back, and every waiter of it
  and every later call gets ``NotLeader``.
- ``load()`` reads every table in one REPEATABLE READ snapshot, in key order
  (SQLite's comes in insertion order; the engine does not depend on either).
- Reads (``ledger_page`` ...) run on a small pool, beside the writer.

The secrets (admin token, signing keys, secret key) are never in the
database: they are files in a secrets directory that every server of the
deployment shares or holds a copy of (``secrets_base``). There is no ledger
checkpoint file as with SQLite: see ``docs/postgres.md`` for what verify
guarantees here.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import asyncpg
import structlog

from server.clock import monotonic
from server.credentials import SECRET_KEY_BYTES, load_or_create_secret_key
from server.domain.changes import Changes
from server.store.audit import AUDIT_SQL, AUDIT_TEAMS_SQL, LEDGER_SQL, PACKS_SQL, Audit, Verdict
from server.store.codec import NOT_LOADED, TABLES, Row, Table, sharing
from server.store.files import SECRET_KEY_SUFFIX, side_path
from server.store.group_commit import GroupCommit, Write, to_ops
from server.store.loading import loading
from server.store.pg_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION_TABLE
from server.store.port import NotLeader, ReadFailed, Snapshot, StoreFailed, newer_schema
from server.store.reads import LAST_AUDIT_SQL, NamedReads
from server.store.schema import BACKFILLS

__all__ = [
    "Fence",
    "NotLeader",
    "PostgresStore",
    "is_postgres_url",
    "secrets_base",
    "verify_postgres",
]

log = structlog.get_logger()

LOAD_CHUNK = 20_000  # rows per fetch at start
CLOSE_TIMEOUT = 10.0  # seconds close() waits for the writer, then for each connection
COPY_FROM = 10  # append-only rows from which COPY beats a batched INSERT (measured)
LAST_ENTRY_SQL = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"
# The packs a team moved in or out, then what each of their entries in that team came
# to (``reads.MOVED_SQL`` in two steps). As one statement PostgreSQL could not know
# which packs the subquery gives, so it took each for an average pack, and where a few
# big packs hold the ledger (one company's server, a pack a year) that is most of it:
# it scanned the whole ledger for every report, a day's too (360-386 ms at 1.15 M
# entries on two packs, 83 ms at 146,000 on one, growing with the history). Given the
# packs by value, it weighs each by its own statistics and reads those by
# ``ledger_pack``; a team that moved none (most) reads nothing more.
MOVED_PACKS_SQL = (
    "SELECT DISTINCT pack_id FROM ledger WHERE kind IN ('MOVE_IN', 'MOVE_OUT') AND team_id = ?"
)
MOVED_SUMS_SQL = (
    "SELECT pack_id, kind, SUM(amount) FROM ledger "
    "WHERE pack_id = ANY(?::text[]) AND team_id || '' = ? "
    "AND kind IN ('MOVE_IN', 'MOVE_OUT', 'CAPTURE', 'EXPIRY') GROUP BY pack_id, kind"
)
SECRETS_NAME = "tessera"  # secrets_dir/tessera.admin-token, .signing-keys, .secret-key
#: What verify and the operator tools say of a database with no Tessera schema in it.
NOT_TESSERA = "no Tessera database there (no schema_version table)"

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Fence = Callable[[asyncpg.Connection], Awaitable[None]]


#: A session's ``application_name`` is its part and its server's node id: the
#: election finds a server's writer by it (``server/ha/election.py``), and an
#: operator reads in ``pg_stat_activity`` whose session is whose.
#: What asyncpg raises when the database is out of reach or a connection is gone:
#: besides its own errors, ``InternalClientError`` ("cannot switch to state 12; another
#: operation (2) is in progress"), which a connection the database ended while it was
#: idle (``pg_terminate_backend``, a restart) raises at its next use until asyncpg has
#: seen its socket close: it ended an active server's election rounds for good.
DATABASE_GONE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
WRITER_PREFIX = "tessera-writer:"
READER_PREFIX = "tessera-reader:"


def application_name(prefix: str, node_id: str) -> str:
    """``prefix`` and the node id, cut to PostgreSQL's 63 bytes (as SQL's
    ``left(prefix || node_id, 63)``: node ids are ASCII)."""
    return (prefix + node_id)[:63]


# What is never shown: libpq's password, and its client key's passphrase (sslpassword).
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)([^&#]*)", re.IGNORECASE)


def _user_info_end(rest: str) -> int:
    """Where a URL's user info ends (its last ``@`` before the query, else its last
    ``@``: a password may hold a ``?`` or ``#`` that should have been encoded), or -1."""
    query = rest.find("?")
    at = rest.rfind("@", 0, query if query >= 0 else len(rest))
    return at if at >= 0 else rest.rfind("@")


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``url``'s user info (``user:password@``) is, as written:
    ``url[start:end]`` (empty for ``user:@``), or None when the user info holds none."""
    scheme, sep, rest = url.partition("://")
    if not sep or (at := _user_info_end(rest)) < 0 or (colon := rest.find(":", 0, at)) < 0:
        return None
    offset = len(scheme) + len(sep)
    return offset + colon + 1, offset + at


def url_passwords(url: str) -> list[str]:
    """The passwords a PostgreSQL URL carries, as written and percent-decoded: in its
    user info (``user:password@``) and as ``password=`` parameters; longest first."""
    found: set[str] = set()
    if span := _password_span(url):
        password = url[span[0] : span[1]]
        found |= {password, unquote(password)}
    for match in _QUERY_SECRET.finditer(url.partition("://")[2]):
        found |= {match.group(2), unquote(match.group(2))}
    return sorted(found - {""}, key=len, reverse=True)


def shown_url(url: str) -> str:
    """``url`` as it may be printed and logged: every password it carries is ``***``."""
    if "://" not in url:
        return url
    if (span := _password_span(url)) and span[0] < span[1]:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    return _QUERY_SECRET.sub(lambda m: m.group(1) + "***", url)


def hidden(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's passwords taken out,
    and the pieces of one that a character it should have encoded cut apart (a driver
    reads ``user:pw#x@`` as a host and a port ``pw``)."""
    secrets = set(url_passwords(url))
    secrets |= {piece for pw in secrets for piece in re.split(r"[#/?@:]", pw) if len(piece) > 2}
    secrets |= {repr(secret)[1:-1] for secret in secrets}  # as a message quotes it
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def without_password(url: str) -> tuple[str, str | None]:
    """``url`` with no password in it, and the password (for ``PGPASSWORD``, which a
    process listing does not show, unlike a command line's URL)."""
    password = None
    if span := _password_span(url):  # (the ':' before it goes too)
        password, url = unquote(url[span[0] : span[1]]), url[: span[0] - 1] + url[span[1] :]
    url, given = take_parameter(url, "password")
    return url, given if given is not None else password


def take_parameter(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without its query parameter ``name``, and the parameter's value
    (percent-decoded; the last one's if given more than once, as libpq reads it)."""
    pattern = re.compile(rf"([?&]{re.escape(name)}=)([^&#]*)", re.IGNORECASE)
    value = None
    for match in pattern.finditer(url):
        value = unquote(match.group(2))
    url = pattern.sub(lambda m: "?" if m.group(1).startswith("?") else "", url)
    return url.replace("?&", "?").rstrip("?"), value


def is_postgres_url(db: str | Path) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def secrets_base(secrets_dir: Path) -> Path:
    """The name the secret files are made from with PostgreSQL: ``side_path(base,
    suffix)`` is ``secrets_dir/tessera.admin-token`` and so on (``files.py``)."""
    return secrets_dir / SECRETS_NAME


@lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """SQLite's ``?`` marks as PostgreSQL's ``$1``, ``$2``... (no statement made
    from the Table specs has a ``?`` anywhere else)."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def _load_sql(table: Table) -> str:
    return table.load_sql(table.order_by or f"ORDER BY {', '.join(table.key)}")


class PostgresStore(NamedReads):
    """``StorePort`` on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        writer: asyncpg.Connection,
        pool: asyncpg.Pool,
        *,
        fence: Fence | None = None,
        secret_key: bytes = b"",
        max_batch_ops: int = 50_000,
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._conn = writer
        self._pool = pool
        self._fence = fence
        #: Derives invitation tokens (``server/credentials.py``); never stored in the database.
        self.secret_key = secret_key or secrets.token_bytes(SECRET_KEY_BYTES)
        self._group = GroupCommit(self._write, on_failed=on_failed, max_batch_ops=max_batch_ops)
        self._lost: Callable[[object], None] | None = None  # the writer's termination listener

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        fence: Fence | None = None,
        secrets_dir: Path | None = None,
        max_batch_ops: int = 50_000,
        readers: int = 4,
        on_failed: Callable[[BaseException], None] | None = None,
        node_id: str = "",
    ) -> PostgresStore:
        """Connect, migrate, start the writer. ``secrets_dir``: where the secret key
        is kept (made at the first start); None: a random one (tests). ``on_failed``
        is told of any failed write, also one no call waits for (a timer's).
        ``node_id`` names the sessions (``application_name``)."""
        key = b""
        if secrets_dir is not None:
            key = load_or_create_secret_key(side_path(secrets_base(secrets_dir), SECRET_KEY_SUFFIX))
        writer = await asyncpg.connect(
            url,
            server_settings={
                "synchronous_commit": "on",
                "application_name": application_name(WRITER_PREFIX, node_id),
            },
        )
        try:
            await migrate(writer)
            await _granted(writer)
            await backfill(writer, fence)
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=readers,
                server_settings={"application_name": application_name(READER_PREFIX, node_id)},
            )
        except BaseException:
            await writer.close()
            raise
        store = cls(
            writer,
            pool,
            fence=fence,
            secret_key=key,
            max_batch_ops=max_batch_ops,
            on_failed=on_failed,
        )
        if on_failed is not None:
            # The writer's connection lost (a proxy cut, pg_terminate_backend): told at
            # once, not at the next write, as a failed write would tell it (server/app.py
            # steps the active down).
            def lost(_: object) -> None:
                on_failed(StoreFailed("the store's connection to the database was lost"))

            store._lost = lost
            writer.add_termination_listener(lost)
        store._group.start()
        return store

    @property
    def commits(self) -> int:
        """Transactions committed, for tests and benchmarks."""
        return self._group.commits

    async def schema_version(self) -> int:
        return await schema_version(self._conn)

    # -- loading --------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Every table that lives in memory, as objects, from one consistent
        snapshot; equal instants and ids shared (``codec.sharing``), the objects
        frozen out of the garbage collector (``loading``)."""
        snap = Snapshot()
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            with sharing(), loading():
                for kind, table in TABLES.items():
                    if table.name not in NOT_LOADED:
                        snap.objects[kind] = await _load_table(conn, table)
            # The chain continues from the last stored entry (server/domain/ledger.py).
            row = await conn.fetchrow(LAST_ENTRY_SQL)
            audit = await conn.fetchrow(LAST_AUDIT_SQL)  # ... as does the audit trail's
        if row is not None:
            snap.max_ledger_seq, snap.last_ledger_hash = int(row[0]), str(row[1])
        if audit is not None:
            snap.max_audit_seq, snap.last_audit_hash = int(audit[0]), str(audit[1])
        return snap

    async def _rows(self, sql: str, params: Row = ()) -> list[Any]:
        """Rows of any SQL with ``?`` marks, read on the pool (named reads, tests)."""
        if any(isinstance(p, str) and "\x00" in p for p in params):
            # PostgreSQL text cannot hold NUL, so no stored key equals such a text (the
            # named reads match text by `=`); asked anyway, it refuses the encoding, and
            # an unknown session id from a caller became INTERNAL where SQLite finds nothing.
            return []
        try:
            async with self._pool.acquire() as conn:
                return list(await conn.fetch(numbered(sql), *params))
        except (
            OSError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a pooled connection the database ended (above)
            asyncpg.PostgresConnectionError,
            asyncpg.OperatorInterventionError,  # a restart, an administrator's shutdown
            # the pool's new connection refused: the database's (or the role's) are all taken
            asyncpg.TooManyConnectionsError,
        ) as exc:
            # (the pool makes a new connection for the next read)
            raise ReadFailed(
                "the database did not answer this read (its connection was lost, or it had "
                "none to spare): repeat the call",
                error=type(exc).__name__,
            ) from None

    def _among(self, column: str, subquery: str) -> str:
        """As an array of the subquery's values, each found by ``column``'s index:
        ``IN (subquery)`` let PostgreSQL join them to the table by walking its key
        from the end (a team's audit page in the middle of a trail of 300,000 events
        read the 159,071 events after it, 35 ms, growing with the events after it)."""
        return f"{column} = ANY(ARRAY({subquery}))"

    async def _moved(self, team_id: str) -> list[Any]:
        packs = [str(pack_id) for (pack_id,) in await self._rows(MOVED_PACKS_SQL, (team_id,))]
        if not packs:
            return []
        return await self._rows(MOVED_SUMS_SQL, (packs, team_id))

    async def query(self, sql: str, params: Row = ()) -> list[Row]:
        """Rows of any SQL with ``?`` marks, as tuples (this adapter's tools, tests)."""
        return [tuple(r) for r in await self._rows(sql, params)]

    # -- writing --------------------------------------------------------------

    async def commit(self, changes: Changes | Iterable[object]) -> None:
        """Write the changes durably; return once they are committed."""
        self._group.check()
        await self._group.commit(to_ops(changes))

    async def barrier(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._group.barrier()

    async def _write(self, plan: list[Write]) -> None:
        """Write ``plan`` in one transaction, fenced first; return once committed."""
        conn = self._conn
        async with conn.transaction():
            if self._fence is not None:
                await self._fence(conn)
            for table, delete, rows in plan:
                if delete:
                    await conn.executemany(numbered(table.delete_sql), rows)
                elif table.append_only and len(rows) >= COPY_FROM:
                    await conn.copy_records_to_table(
                        table.name, records=rows, columns=list(table.columns)
                    )
                elif len(rows) == 1:
                    await conn.execute(numbered(table.upsert_sql), *rows[0])
                else:
                    await conn.executemany(numbered(table.upsert_sql), rows)
            began = monotonic()  # the COMMIT, timed alone: its round trip and WAL flush
        self._group.syncs.observe(monotonic() - began)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Write out everything queued, then close the connections. Bounded: a
        database that does not answer (a partition, a lock held elsewhere) does not
        keep a server that lost its place from going back to standby. Past
        ``timeout`` the writer's connection is cut, so that what it was writing
        never commits and fails its callers with StoreFailed."""
        if self._lost is not None:  # closed on purpose from here: no loss to tell
            self._conn.remove_termination_listener(self._lost)
        writer = asyncio.ensure_future(self._group.close())
        if not await _within(writer, timeout):
            self._conn.terminate()
            if not await _within(writer, timeout):
                # A write cut mid-statement (its server paused, then taken over) can
                # wait for ever in asyncpg: its callers are answered all the same.
                self._group.abandon("the write was cut off: this server lost its place")
                await _within(writer, timeout)
        if not await _within(asyncio.ensure_future(self._pool.close()), timeout):
            self._pool.terminate()
        if not self._conn.is_closed():
            closing = asyncio.ensure_future(self._conn.close())
            if not await _within(closing, timeout):
                self._conn.terminate()


async def _within(task: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``task`` ended within ``timeout`` (its error logged, not raised);
    unlike ``wait_for``, a task still running is left to finish, not awaited."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, not logged
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("store_close", error=str(task.exception()) or type(task.exception()).__name__)
    return True


async def _load_table(conn: Connection, table: Table) -> list[Any]:
    """Read in chunks (a server-side cursor), so that the rows of a whole table
    are never all in memory at once."""
    from_row = cast(Callable[[Any], Any], table.from_row)  # a Record reads like a row
    out: list[Any] = []
    cursor = await conn.cursor(_load_sql(table))
    while rows := await cursor.fetch(LOAD_CHUNK):
        out.extend([from_row(r) for r in rows])
    return out


# -- migrations ------------------------------------------------------------------


async def schema_version(conn: asyncpg.Connection) -> int:
    found = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not found:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the migrations this database lacks, in one transaction under an
    advisory lock (a second server starting at the same moment waits, then finds
    them applied); returns how many were applied. A database migrated by a newer
    release is refused: this one would not know its tables; and, before anything
    is made in it, one not encoded UTF8 (``_utf8``). An up-to-date database is
    only read, so a role without the right to create tables can serve one its
    owner migrated (docs/postgres.md); on one that needs migrating, such a role
    is refused in words that say so (``_cannot_migrate``), nothing applied."""
    await _utf8(conn)
    version = _checked(await schema_version(conn))
    if version == len(MIGRATIONS):
        return 0
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(SCHEMA_VERSION_TABLE)
            version = _checked(await schema_version(conn))
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > version:
                    await conn.execute(script)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
                    log.info("schema_migrated", store="postgresql", version=number)
    except asyncpg.InsufficientPrivilegeError as exc:  # rolled back: nothing was applied
        raise StoreFailed(await _cannot_migrate(conn, version, exc)) from None
    return len(MIGRATIONS) - version


async def _granted(conn: asyncpg.Connection) -> None:
    """Refuse the start, in one line, when this role lacks a grant of
    docs/postgres.md on a table it uses (read and add rows to each; change and
    remove rows too, but of the history it only appends to): a table a migration
    added and the servers' role was not granted (docs/postgres.md, "the grant again
    once its owner has migrated") would otherwise fail a call that reads it, or a
    commit that writes it, much later (the sessions' load bound, ten minutes on)."""
    tables = sorted((t.name, not t.append_only) for t in TABLES.values())
    rows = await conn.fetch(
        "SELECT name FROM unnest($1::text[], $2::bool[]) AS t(name, changed) WHERE NOT ("
        "has_table_privilege(name, 'SELECT') AND has_table_privilege(name, 'INSERT') AND "
        "(NOT changed OR (has_table_privilege(name, 'UPDATE') AND "
        "has_table_privilege(name, 'DELETE'))))",
        [name for name, _ in tables],
        [changed for _, changed in tables],
    )
    if rows:
        role = str(await conn.fetchval("SELECT current_user"))
        missing = ", ".join(str(row[0]) for row in rows)
        raise StoreFailed(
            f"the role {role!r} lacks the grants of docs/postgres.md on {missing}: a table a "
            "migration of this release added needs the grant again once its owner has "
            'migrated (docs/postgres.md, "What is in the database, and what is not"); '
            "nothing was changed"
        )


async def _cannot_migrate(conn: asyncpg.Connection, version: int, exc: Exception) -> str:
    """Why this role cannot migrate, and what to do: the least-privilege role of
    docs/postgres.md may read and write the tables, not create or alter them."""
    role = str(await conn.fetchval("SELECT current_user"))
    where = (
        f"the database is at schema version {version}"
        if version
        else "the database has no Tessera tables yet (schema version 0)"
    )
    return (
        f"{where}, this release needs {len(MIGRATIONS)}: its migrations need a role that may "
        f"create and alter the tables, and {role!r} may not (PostgreSQL: {exc}). Start one "
        "server of this release once as the tables' owner, which migrates the database, then "
        'this one (docs/postgres.md, "Upgrading"); nothing was changed'
    )


async def backfill(conn: asyncpg.Connection, fence: Fence | None = None) -> dict[str, int]:
    """``schema.BACKFILLS``: the columns an older release leaves at their defaults in
    the rows it writes on this schema (a rolling upgrade's old active serves on while
    a standby of this release migrates), filled in before the load. Run by ``open``,
    so by a server just elected: the old active's writes are over by then (their
    fence fails once the epoch has moved). Looked for first, and a database of this
    release's rows alone is only read; what is found is written in one transaction,
    fenced first as every write. Returns the rows filled in, by table."""
    due = []
    for b in BACKFILLS:
        mark = (await conn.fetchval(b.mark_sql),) if b.mark_sql else ()
        if await conn.fetchval(numbered(b.find_sql), *mark):
            due.append((b, mark))
    if not due:
        return {}
    filled: dict[str, int] = {}
    async with conn.transaction():
        if fence is not None:
            await fence(conn)
        for b, mark in due:
            status = await conn.execute(numbered(b.sql), *mark)  # "UPDATE n"
            filled[b.table] = filled.get(b.table, 0) + int(status.rsplit(" ", 1)[-1])
    log.warning("older_release_rows_filled", store="postgresql", **filled)
    return filled


async def _utf8(conn: asyncpg.Connection) -> None:
    """Refuse a database whose encoding is not UTF8. Names come in every script
    (Zoë, 山田 太郎): in a LATIN1 database, say, the first one outside LATIN1 fails its
    write, and with it the store (memory ahead of the database), where SQLite stores
    it; so it is refused at open, in one line saying what to do."""
    encoding = str(await conn.fetchval("SHOW server_encoding"))  # the database's own
    if encoding != "UTF8":
        name = str(await conn.fetchval("SELECT current_database()"))
        raise StoreFailed(
            f'the database "{name}" is encoded {encoding}, not UTF8, which names in every '
            "language need: create a database with ENCODING 'UTF8' (createdb -E UTF8 "
            "-T template0 NAME) and point --db at it (to keep this one's data: pg_dump it, "
            "then pg_restore into the new one; docs/postgres.md)"
        )


def _checked(version: int) -> int:
    if (problem := newer_schema(version, len(MIGRATIONS))) is not None:
        raise StoreFailed(problem)
    return version


# -- verify ----------------------------------------------------------------------


async def verify_postgres(url: str) -> Verdict:
    """``python -m server verify --db postgresql://...``: the same checks as on SQLite
    (``audit.Audit``), fed from one REPEATABLE READ snapshot, in chunks. There is
    no checkpoint file: the end of the chain rests on the database's durability."""
    audit = Audit(None)
    audit.verdict.postgres = True
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if _checked(await schema_version(conn)) == 0:
                raise StoreFailed(NOT_TESSERA)
            ledger = await conn.cursor(LEDGER_SQL)
            whole = True
            while whole and (rows := await ledger.fetch(LOAD_CHUNK)):
                whole = all(audit.entry(tuple(row)) for row in rows)
            if whole:
                audit.chain_end()
            if audit.verdict.ok:
                packs = await conn.cursor(PACKS_SQL)
                while rows := await packs.fetch(LOAD_CHUNK):
                    for row in rows:
                        audit.pack(tuple(row))
                audit.packs_end()
            if audit.verdict.ok:  # the audit trail's chain (RULES AD2)
                if await conn.fetchval("SELECT to_regclass('audit_teams') IS NOT NULL"):
                    audit.more_teams(
                        map(tuple, await conn.fetch(AUDIT_TEAMS_SQL))
                    )  # migration 8 on
                events = await conn.cursor(AUDIT_SQL)
                whole = True
                while whole and (rows := await events.fetch(LOAD_CHUNK)):
                    whole = all(audit.event(tuple(row)) for row in rows)
                if whole:
                    audit.events_end()
    finally:
        await conn.close()
    return audit.verdict
