"""The first start of a release as docs/postgres.md's least-privilege role
(rev5-upgrade, point 2): the tables are owned by another role, which migrates;
the servers' role may read and write them, not create or alter them. Started on
a database that still needs this release's migrations, it says so and what to do,
instead of PostgreSQL's bare "permission denied for schema public", and changes
nothing; once the owner has started once, the same role serves."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from server.store.pg_schema import MIGRATIONS
from server.store.port import StoreFailed
from server.store.postgres import PostgresStore, schema_version, shown_url
from tests.support import REPO


async def _sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _version(url: str) -> tuple[int, bool]:
    """The schema version, and whether ``audit_teams`` (migration 8) is there."""
    conn = await asyncpg.connect(url)
    try:
        table = await conn.fetchval("SELECT to_regclass('audit_teams') IS NOT NULL")
        return await schema_version(conn), bool(table)
    finally:
        await conn.close()


def _told(role: str, version: int) -> list[str]:
    """What a refused role is told: where the database stands, what this release
    needs, who may migrate it and what to do (the refusal's words, in order)."""
    where = f"schema version {version}" if version else "no Tessera tables yet (schema version 0)"
    return [
        where,
        f"this release needs {len(MIGRATIONS)}",
        f"'{role}' may not (PostgreSQL: permission denied for schema public)",
        "Start one server of this release once as the tables' owner",
        "nothing was changed",
    ]


def _in_order(text: str, parts: list[str]) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
    return True


async def test_pg_a_role_that_cannot_migrate_is_told_to_start_the_tables_owner_once(
    pg_url: str, tmp_path: Path
) -> None:
    role, password = f"tessera_app_{secrets.token_hex(4)}", secrets.token_hex(8)
    parts = urlsplit(pg_url)
    host = parts.netloc.rpartition("@")[2]
    app_url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
    await _sql(
        pg_url,
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    )
    try:
        # A new database: the tables' owner has not started yet.
        with pytest.raises(StoreFailed) as refused:
            await PostgresStore.open(app_url)
        assert _in_order(str(refused.value), _told(role, 0))
        assert await _version(pg_url) == (0, False)

        # An earlier release's database (schema 7, before audit_teams), its
        # tables the owner's, the servers' role granted as docs/postgres.md says.
        await (await PostgresStore.open(pg_url)).close()
        await _sql(
            pg_url,
            "DROP TABLE audit_teams, sessions_older_loaded",
            "DROP INDEX ledger_team_captures, ledger_team_moves, activity_team_long",
            "DELETE FROM schema_version WHERE version >= 8",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            f"REVOKE UPDATE, DELETE ON ledger, activity, audit_events, notifications FROM {role}",
        )
        run = subprocess.run(
            [sys.executable, "-m", "server", "--listen", "127.0.0.1:0", "--db", app_url,
             "--secrets-dir", str(tmp_path), "--admin-token", "tsa_x", "--log-format", "json"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1
        (line,) = run.stderr.splitlines()[-1:]
        assert line.startswith(f"tessera-server: cannot open {shown_url(app_url)}: the database")
        assert _in_order(line, _told(role, 7))
        assert await _version(pg_url) == (7, False)  # nothing applied

        # The owner's start migrates; until the grant is given again for the table it
        # made, the servers' role is refused at its start, naming that table, rather
        # than at a team's audit trail later.
        await (await PostgresStore.open(pg_url)).close()
        with pytest.raises(StoreFailed) as ungranted:
            await PostgresStore.open(app_url)
        grants = "the grants of docs/postgres.md on audit_teams, sessions_older_loaded:"
        assert f"the role '{role}' lacks {grants}" in str(ungranted.value)
        # The grant given again (docs/postgres.md): the servers' role serves.
        await _sql(
            pg_url,
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            f"REVOKE UPDATE, DELETE ON ledger, activity, audit_events, audit_teams, "
            f"notifications FROM {role}",
        )
        store = await PostgresStore.open(app_url)
        try:
            assert await store.schema_version() == len(MIGRATIONS) == 12
            assert await store.audit_page("acme", 0, 10) == []
        finally:
            await store.close()
    finally:
        await _sql(pg_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}")
