"""The wire tests' PostgreSQL databases are reused (``tests/pg.py``): a test must find
its database as a server's first start leaves it, whatever the test before did in it."""

from __future__ import annotations

import signal
import subprocess
import sys
import types
from pathlib import Path

import asyncpg
import pytest

from tests import pg as pg_harness
from tests.pg import TABLES_SQL, PgServer, database_name, execute, fetch, run_sync


def _rows(url: str) -> dict[str, int]:
    tables = [row[0] for row in fetch(url, TABLES_SQL)]
    return {t: int(fetch(url, f"SELECT count(*) FROM {t}")[0][0]) for t in tables}  # noqa: S608


def test_pg_a_database_given_back_comes_to_the_next_test_empty_under_anotherdatabase_name(
    pg: PgServer,
) -> None:
    first = pg.migrated()
    fresh = _rows(first)
    assert len(fresh) >= 20 and set(fresh.values()) == {0}  # every table, no row
    execute(first, "INSERT INTO teams VALUES ('alpha', 'Alpha', 'flex', 0, '', 0)")
    assert _rows(first)["teams"] == 1
    kept = pg.reusable
    pg.give_back(first)
    assert pg.reusable == kept + 1
    second = pg.migrated()  # the one just given back (the last kept is the first given)
    assert database_name(second) != database_name(
        first
    )  # renamed: what reached the first cannot reach it
    assert _rows(second) == fresh
    assert [tuple(r) for r in fetch(second, "SELECT count(*) FROM schema_version")] != [(0,)]
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        fetch(first, "SELECT 1")
    pg.give_back(second)


def test_pg_a_session_the_test_left_open_is_ended_before_the_database_is_reused(
    pg: PgServer,
) -> None:
    url = pg.migrated()
    kept = pg.reusable

    async def left_open() -> bool:
        conn = await asyncpg.connect(url, timeout=10)
        await conn.execute("BEGIN; LOCK TABLE teams IN ACCESS EXCLUSIVE MODE")
        pg.give_back(url)  # ends it (the lock with it) rather than waiting on it
        try:
            await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
            return True
        finally:
            await conn.close(timeout=1)
        return False

    assert run_sync(left_open)
    assert pg.reusable == kept + 1  # emptied for the next test, not dropped
    again = pg.migrated()
    assert set(_rows(again).values()) == {0}
    pg.give_back(again)


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE teams ADD COLUMN extra INTEGER",
        "CREATE INDEX teams_extra ON teams (display_name)",
        "REVOKE INSERT ON teams FROM PUBLIC; REVOKE INSERT ON teams FROM CURRENT_USER",
        "DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)",
        "CREATE TABLE extra (x INTEGER)",
    ],
    ids=["a column", "an index", "a grant", "a migration", "a table"],
)
def test_pg_a_database_changed_beyond_its_rows_is_dropped_not_reused(
    pg: PgServer, change: str
) -> None:
    url = pg.migrated()
    execute(url, change)
    kept = pg.reusable
    pg.give_back(url)
    assert pg.reusable == kept  # not kept for another test


def _fake_pgserver(monkeypatch: pytest.MonkeyPatch, first: int) -> list[Path]:
    """A stand-in ``pgserver`` whose first start fails with ``first`` as the return
    code (negative: killed by that signal), the next ones start."""
    started: list[Path] = []

    class Started:
        def get_uri(self) -> str:
            return "postgresql://postgres@127.0.0.1:5432/postgres"

    def get_server(data: Path, cleanup_mode: str) -> Started:
        started.append(data)
        if len(started) == 1:
            raise subprocess.CalledProcessError(first, ["initdb", "-D", str(data)])
        return Started()

    monkeypatch.setitem(sys.modules, "pgserver", types.SimpleNamespace(get_server=get_server))
    return started


def test_pg_an_initdb_killed_by_a_signal_is_started_once_more_in_a_fresh_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """initdb died with SIGSEGV in one CI run, and one worker's 129 PostgreSQL tests
    failed while the others' passed: a start killed by a signal is made once more."""
    started = _fake_pgserver(monkeypatch, -signal.SIGSEGV)
    _, url = pg_harness._start_pgserver(tmp_path / "data")
    assert url.startswith("postgresql://")
    assert [p.name for p in started] == ["data", "data-again"]


def test_pg_an_initdb_that_fails_on_its_own_is_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _fake_pgserver(monkeypatch, 1)
    with pytest.raises(subprocess.CalledProcessError):
        pg_harness._start_pgserver(tmp_path / "data")
    assert len(started) == 1
