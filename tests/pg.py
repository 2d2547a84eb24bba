"""A real PostgreSQL for the tests, from the project itself (issue 13, point 7).

``pg`` (session-scoped) is one server for the whole run: the PyPI package
``pgserver`` starts PostgreSQL from its wheel in a temporary data directory
(stopped and removed at the end), or ``TESSERA_TEST_PG`` names an external one
(a URL whose user may create databases). ``pg_url`` gives each test a fresh,
empty database of its own (``t_<random>``), dropped after the test.

Where no server can be had the PostgreSQL tests are skipped with a one-line
reason, except under CI (``CI`` set), where they FAIL: CI must never pass by
silently not running them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
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


class PgServer:
    """One PostgreSQL server; makes and drops the tests' databases."""

    def __init__(self, admin_url: str, source: str) -> None:
        self.admin_url = admin_url  # a database to connect to for CREATE/DROP DATABASE
        self.source = source  # "pgserver" or "TESSERA_TEST_PG"

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)

    def create(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{secrets.token_hex(6)}"
        run_sync(lambda: self._admin(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        run_sync(lambda: self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(sql)
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

    server = pgserver.get_server(data, cleanup_mode="delete")
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
        yield PgServer(external, ENV)
        return
    # Not pytest's tmp_path: the data directory is handed to the `pgserver` user
    # when run as root, and its parents must be traversable by that user.
    base = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
    server = None
    try:
        try:
            server, url = _start_pgserver(base / "data")
            _check(url)
        except Exception as exc:  # whatever stops it, it is reported in one line
            first = str(exc).strip().splitlines()[:1]
            _unavailable(f"pgserver could not start one ({type(exc).__name__}: {first})")
        yield PgServer(url, "pgserver")
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
