"""A real PostgreSQL for the tests, from the project itself (issue 13, point 7).

``pg`` (session-scoped) is one server for the whole run: the PyPI package
``pgserver`` starts PostgreSQL from its wheel in a temporary data directory
(stopped and removed at the end), or ``TESSERA_TEST_PG`` names an external one
(a URL whose user may create databases). ``pg_url`` gives each test a fresh,
empty database of its own (``t_<random>``), dropped after the test.

``pg_migrated_url`` (the ``database`` fixture's, so every wire test's) gives one
with every table and no row, as a server's first start leaves it: migrated by
the server's own ``migrate``, or one an earlier test of this process used and
that was emptied after it. Making a database is most of what PostgreSQL does
for a short test (~0.1-0.3 s of its CPU, growing as the run drops databases,
against ~0.02 s to empty one), and the suite is CPU-bound on 2 cores. A database
is emptied for the next test only when nothing but its rows changed: its other
sessions ended, it is renamed (a process the test left behind cannot find it
again), its shape (tables, columns, indexes, constraints, grants, settings) is
compared with a fresh migration's, and every table is truncated; anything else,
or any failure, and it is dropped.

A database is made with ``STRATEGY FILE_COPY`` (a fifth of the default's time
for a small template), and the server ``pgserver`` starts for the run does not
fsync (``fsync``, ``full_page_writes`` and ``synchronous_commit`` off: ~75 ms a
database instead of ~450 ms, and so for every commit). That loses nothing a
test can see: no test crashes the machine, and killing a server process (or
PostgreSQL's) leaves every committed change in the operating system's cache.
An external ``TESSERA_TEST_PG`` server is used as it is configured.

Where no server can be had the PostgreSQL tests are skipped with a one-line
reason, except under CI (``CI`` set), where they FAIL: CI must never pass by
silently not running them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ENV = "TESSERA_TEST_PG"
_T = TypeVar("_T")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (host, user, query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def run_sync(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running loop
    (on a thread of its own, with a loop of its own)."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append((True, asyncio.run(_wrap(make))))
        except BaseException as exc:
            out.append((False, exc))

    thread = threading.Thread(target=target, name="pg-admin")
    thread.start()
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


async def _wrap(make: Callable[[], Awaitable[_T]]) -> _T:
    return await make()


def database_name(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return urlsplit(url).path.lstrip("/")


def execute(url: str, *statements: str) -> None:
    """Run ``statements`` on ``url``'s database, in order, from sync code."""

    async def go() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    run_sync(go)


def fetch(url: str, sql: str) -> list[Any]:
    """The rows of ``sql`` on ``url``'s database, from sync code."""

    async def go() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return run_sync(go)


class PgServer:
    """One PostgreSQL server; makes and drops the tests' databases.

    The next test's database is made while this one runs (one spare, on a
    thread of its own): its ~0.1 s is then off the tests' path."""

    def __init__(self, admin_url: str, source: str) -> None:
        self.admin_url = admin_url  # a database to connect to for CREATE/DROP DATABASE
        self.source = source  # "pgserver" or "TESSERA_TEST_PG"
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-spare")
        self._spare: Future[str] | None = None
        self._emptied: list[str] = []  # migrated databases emptied after their test
        self._shape: str | None = None  # a freshly migrated database's (``SHAPE_SQL``)
        version = fetch(admin_url, "SHOW server_version_num")[0][0]
        self._copy = " STRATEGY FILE_COPY" if int(version) >= 150000 else ""  # new in 15

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)

    def create(self) -> str:
        """A new empty database; its URL."""
        spare, self._spare = self._spare, self._maker.submit(self._make)
        return spare.result() if spare is not None else self._make()

    def _make(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        execute(self.admin_url, f'CREATE DATABASE "{name}"{self._copy}')
        return self.url(name)

    @property
    def reusable(self) -> int:
        """How many emptied databases wait for a test."""
        return len(self._emptied)

    def migrated(self) -> str:
        """A database with every table and no row (see the module docstring); its URL."""
        if self._emptied:
            return self.url(self._emptied.pop())
        url = self.create()
        shape = run_sync(lambda: _migrate(url))
        if self._shape is None:
            self._shape = shape
        return url

    def give_back(self, url: str) -> None:
        """After its test: emptied for the next one if only its rows changed, else dropped."""
        name = f"t_{secrets.token_hex(6)}"
        try:
            run_sync(lambda: _rename(self.admin_url, url, name))
        except Exception:  # whatever it was, the database is not reused
            self.drop(url)
            return
        try:
            emptied = run_sync(lambda: _truncated(self.url(name), self._shape))
        except Exception:  # the same
            emptied = False
        if emptied:
            self._emptied.append(name)
        else:
            self.drop(self.url(name))

    def close(self) -> None:
        """Drop the spare database and the emptied ones."""
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                self.drop(spare.result())
        self._maker.shutdown()
        for name in self._emptied:
            with contextlib.suppress(Exception):
                self.drop(self.url(name))

    def drop(self, url: str) -> None:
        execute(self.admin_url, f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')

    def without_fsync(self) -> None:
        """A throwaway server's settings for speed (see the module docstring)."""
        off = ("fsync", "full_page_writes", "synchronous_commit")
        sets = [f"ALTER SYSTEM SET {name} = off" for name in off]
        execute(self.admin_url, *sets, "SELECT pg_reload_conf()")


#: What a test may change in its database besides rows, as one digest: tables, columns,
#: indexes, constraints, grants, functions, triggers, extensions, the migrations applied,
#: and the database's own settings.
SHAPE_SQL = """
SELECT md5(string_agg(x, E'\\n' ORDER BY x)) FROM (
  SELECT format('col %s.%s.%s %s %s %s', table_schema, table_name, column_name, data_type,
                is_nullable, column_default) AS x
    FROM information_schema.columns
   WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT 'idx ' || indexdef FROM pg_indexes
   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT format('con %s %s', conrelid::regclass, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL SELECT format('rel %s %s %s', oid::regclass, relkind, relacl)
    FROM pg_class WHERE relnamespace = 'public'::regnamespace
  UNION ALL SELECT format('ns %s %s', nspname, nspacl) FROM pg_namespace
   WHERE nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
  UNION ALL SELECT format('proc %s', oid::regprocedure) FROM pg_proc
   WHERE pronamespace = 'public'::regnamespace
  UNION ALL SELECT format('trg %s', tgname) FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT format('ext %s', extname) FROM pg_extension
  UNION ALL SELECT format('ver %s', version) FROM schema_version
  UNION ALL SELECT format('db %s %s %s', datacl, datallowconn, datconnlimit)
    FROM pg_database WHERE datname = current_database()
  UNION ALL SELECT format('set %s %s', setrole, setconfig) FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS shape
"""
TABLES_SQL = (
    "SELECT format('%I', tablename) FROM pg_tables "
    "WHERE schemaname = 'public' AND tablename <> 'schema_version'"
)


async def _migrate(url: str) -> str:
    """Migrate the new database ``url`` as a server's first start does; its shape."""
    from server.store.postgres import migrate  # the server's own migrations

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await migrate(conn)
        return str(await conn.fetchval(SHAPE_SQL))
    finally:
        await conn.close()


async def _rename(admin_url: str, url: str, name: str) -> None:
    """End every session on ``url``'s database, then rename it ``name``: a server the test
    left running (a child process, a stopped one) cannot reach it again."""
    old = database_name(url)
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        for _ in range(100):  # the sessions ended leave within milliseconds
            others = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                old,
            )
            if not others:
                break
            await asyncio.sleep(0.02)
        await conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{name}"')
    finally:
        await conn.close()


async def _truncated(url: str, shape: str | None) -> bool:
    """Truncate every table of ``url``'s database if its shape is a fresh migration's;
    whether it was."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("SET lock_timeout = '5s'")
        if shape is None or await conn.fetchval(SHAPE_SQL) != shape:
            return False
        tables = [row[0] for row in await conn.fetch(TABLES_SQL)]
        await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        return True
    finally:
        await conn.close()


def _unavailable(reason: str) -> None:
    line = f"no PostgreSQL for the tests: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{line} (CI must run the PostgreSQL tests, not skip them)", pytrace=False)
    pytest.skip(line)


def _start_pgserver(data: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells) and uses
        # /tmp/runtime-<uid> for pgserver's lock file instead: fine for tests.
        warnings.simplefilter("ignore")
        import pgserver

    try:
        server = pgserver.get_server(data, cleanup_mode="delete")
    except subprocess.CalledProcessError as exc:
        if exc.returncode >= 0:
            raise
        # Killed by a signal: initdb died with SIGSEGV once in a CI run (one worker's
        # 129 PostgreSQL tests failed, the others' passed). Once more, afresh.
        server = pgserver.get_server(data.with_name(data.name + "-again"), cleanup_mode="delete")
    return server, server.get_uri()


def _check(url: str) -> None:
    async def ping() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        await conn.close()

    run_sync(ping)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """The run's PostgreSQL server (see the module docstring)."""
    external = os.environ.get(ENV)
    if external:
        try:
            _check(external)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _unavailable(f"{ENV}={external} does not answer ({exc})")
        used = PgServer(external, ENV)
        try:
            yield used
        finally:
            used.close()
        return
    # Not pytest's tmp_path: the data directory is handed to the `pgserver` user
    # when run as root, and its parents must be traversable by that user.
    base = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
    server = None
    try:
        try:
            server, url = _start_pgserver(base / "data")
            started = PgServer(url, "pgserver")
            started.without_fsync()
        except Exception as exc:  # whatever stops it, it is reported in one line
            first = str(exc).strip().splitlines()[:1]
            _unavailable(f"pgserver could not start one ({type(exc).__name__}: {first})")
        try:
            yield started
        finally:
            started.close()
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg: PgServer) -> Iterator[str]:
    """A fresh, empty database on the run's PostgreSQL, for this test alone; its URL."""
    url = pg.create()
    try:
        yield url
    finally:
        pg.drop(url)


@pytest.fixture
def pg_migrated_url(pg: PgServer) -> Iterator[str]:
    """A database with every table and no row, for this test alone (see the module
    docstring); its URL. Given back after the test: emptied for another, or dropped."""
    url = pg.migrated()
    try:
        yield url
    finally:
        pg.give_back(url)
