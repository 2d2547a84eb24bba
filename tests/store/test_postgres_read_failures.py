"""A read on PostgreSQL that the database refuses for want of a connection is the
store's ReadFailed (UNAVAILABLE at the edge: nothing changed, repeat the call), as
one whose connection is lost or cancelled is (tests/store/test_postgres.py), not
asyncpg's error escaping as INTERNAL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from server.api.errors import status_code_for
from server.store.port import ReadFailed
from server.store.postgres import PostgresStore
from tests.store.test_postgres import _cut_the_read, _sql


@contextlib.asynccontextmanager
async def a_role(pg_url: str, limit: int) -> AsyncIterator[str]:
    """A URL of a new role (not a superuser, who is let past the limits) that may
    hold ``limit`` connections at once; the database migrated by its owner."""
    await (await PostgresStore.open(pg_url)).close()
    role = f"tessera_few_{secrets.token_hex(4)}"
    await _sql(pg_url, f"CREATE ROLE {role} LOGIN PASSWORD 'app' CONNECTION LIMIT {limit}")
    try:
        # A servers' role as docs/postgres.md grants one (a store refuses to open without).
        await _sql(
            pg_url, f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        parts = urlsplit(pg_url)
        yield urlunsplit(parts._replace(netloc=f"{role}:app@{parts.netloc.rpartition('@')[2]}"))
    finally:
        await _sql(pg_url, f"DROP OWNED BY {role}")
        await _sql(pg_url, f"DROP ROLE {role}")


async def _under_way(pg_url: str) -> None:
    """Return once a reader's pg_sleep shows in pg_stat_activity (5 s at most)."""
    for _ in range(250):
        if await _sql(
            pg_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'tessera-reader:%' "
            "AND query LIKE '%pg_sleep%' AND state = 'active' AND datname = current_database()",
        ):
            return
        await asyncio.sleep(0.02)  # (polling PostgreSQL, not waiting for time to pass)
    raise AssertionError("the read never showed in pg_stat_activity")


async def test_pg_a_read_refused_for_too_many_connections_is_unavailable_not_internal(
    pg_url: str,
) -> None:
    """The role may hold two connections: the writer's and the pool's first. While a
    read holds that one, a second read needs another, which PostgreSQL refuses
    (TooManyConnectionsError, 53300): the read fails as ReadFailed, and once the
    first read is done the next one is answered."""
    async with a_role(pg_url, 2) as url:
        store = await PostgresStore.open(url)
        try:
            slow = asyncio.ensure_future(store.query("SELECT pg_sleep(30)"))
            await _under_way(pg_url)
            with pytest.raises(ReadFailed) as failed:
                await store.query("SELECT 1")
            assert failed.value.metadata == {"error": "TooManyConnectionsError"}
            assert status_code_for(failed.value) is grpc.StatusCode.UNAVAILABLE
            await _cut_the_read(pg_url, "pg_cancel_backend")
            with contextlib.suppress(ReadFailed):
                await asyncio.wait_for(slow, 10)
            assert await store.query("SELECT 1") == [(1,)]
        finally:
            await store.close()
