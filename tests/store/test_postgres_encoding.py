"""A PostgreSQL database not encoded UTF8 is refused at open, in one line saying
what to do (docs/postgres.md), and not accepted to fail later: in a LATIN1
database the first name outside LATIN1 (山田 太郎) failed its write, and with it
the store and every later call (StoreFailed), where SQLite stores it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from server import app as app_module
from server.domain.changes import Changes
from server.domain.directory import User
from server.domain.teams import Plan, Team
from server.listen import StartRefused
from server.store.pg_schema import MIGRATIONS, SCHEMA_VERSION_TABLE
from server.store.port import StoreFailed
from server.store.postgres import PostgresStore, schema_version, verify_postgres
from server.store.sqlite import Store
from tests.pg import PgServer, run_sync
from tests.test_startup import start_server

T = datetime(2028, 1, 1, tzinfo=UTC)
YAMADA = User("yamada@x.test", "山田 太郎", "yamada@x.test")


def problem(name: str, encoding: str) -> str:
    return (
        f'the database "{name}" is encoded {encoding}, not UTF8, which names in every '
        "language need: create a database with ENCODING 'UTF8' (createdb -E UTF8 "
        "-T template0 NAME) and point --db at it (to keep this one's data: pg_dump it, "
        "then pg_restore into the new one; docs/postgres.md)"
    )


def encoded(pg: PgServer, encoding: str) -> Iterator[tuple[str, str]]:
    name = f"enc_{secrets.token_hex(6)}"

    async def create() -> None:
        conn = await asyncpg.connect(pg.admin_url)
        try:
            await conn.execute(
                f"CREATE DATABASE {name} ENCODING '{encoding}' TEMPLATE template0 "
                "LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        finally:
            await conn.close()

    run_sync(create)
    url = pg.url(name)
    try:
        yield name, url
    finally:
        pg.drop(url)


@pytest.fixture(params=["LATIN1", "SQL_ASCII"])
def other(pg: PgServer, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """A database encoded otherwise than UTF8: its name, URL and encoding."""
    for name, url in encoded(pg, request.param):
        yield name, url, request.param


@pytest.fixture
def latin1(pg: PgServer) -> Iterator[tuple[str, str]]:
    yield from encoded(pg, "LATIN1")


async def test_pg_a_database_not_encoded_utf8_is_refused_at_open_saying_what_to_do(
    other: tuple[str, str, str], tmp_path: Path
) -> None:
    name, url, encoding = other
    lite = await Store.open(tmp_path / "s.db")
    try:
        await lite.commit(Changes([YAMADA]))  # SQLite stores it
    finally:
        await lite.close()
    try:
        store = await PostgresStore.open(url)
    except StoreFailed as exc:
        assert str(exc) == problem(name, encoding)
    else:
        await store.close()
        pytest.fail(f"a database encoded {encoding} was opened")
    conn = await asyncpg.connect(url)
    try:  # refused before anything was made in it
        assert await schema_version(conn) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


async def test_pg_a_utf8_database_stores_every_name(pg_url: str) -> None:
    """What the refusal guards: on UTF8 (the tests' databases) the name is stored and
    the store goes on."""
    store = await PostgresStore.open(pg_url)
    try:
        await store.commit(Changes([YAMADA]))
        await store.commit(Changes([Team("acme", "Zoë's team", Plan.STANDARD, T)]))
        assert await store.query("SELECT display_name FROM users") == [("山田 太郎",)]
    finally:
        await store.close()


async def test_pg_a_start_on_a_database_not_encoded_utf8_is_refused_in_one_line(
    latin1: tuple[str, str], tmp_path: Path
) -> None:
    name, url = latin1
    with pytest.raises(StartRefused) as refused:
        await app_module._migrate(url, tmp_path / "secrets", "node-1")
    assert (
        str(refused.value) == f"cannot open {app_module.shown_db(url)}: {problem(name, 'LATIN1')}"
    )
    assert not (tmp_path / "secrets").exists()
    started = start_server("--db", url, "--secrets-dir", str(tmp_path / "secrets"))
    assert started.returncode == 1
    assert started.stderr.splitlines() == [f"tessera-server: {refused.value}"]


async def test_pg_verify_still_checks_a_latin1_database_so_its_data_can_be_moved(
    latin1: tuple[str, str],
) -> None:
    """A server no longer opens a LATIN1 database that an earlier release filled
    (with names LATIN1 holds): ``verify`` reads it all the same, so that its data
    can be checked before and after it is moved to a UTF8 database."""
    _, url = latin1
    conn = await asyncpg.connect(url)
    try:  # as an earlier release migrated it
        await conn.execute(SCHEMA_VERSION_TABLE)
        for number, script in enumerate(MIGRATIONS, start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
    finally:
        await conn.close()
    verdict = await verify_postgres(url)
    assert verdict.ok, verdict
