"""Fixtures for the store tests.

``store`` is an open, empty store behind the port (``server/store/port.py``),
one per adapter in ``STORES``: a test written against it runs on every
adapter: SQLite in a temporary file, PostgreSQL in a fresh database of the
run's server (``tests/pg.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.store.port import StorePort
from server.store.postgres import PostgresStore
from server.store.sqlite import Store

# Every adapter the port-level store tests run on.
STORES = ["sqlite", "postgres"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorePort]:
    """An open, migrated, empty store; closed after the test."""
    opened: StorePort
    if request.param == "sqlite":
        opened = await Store.open(tmp_path / "store.db")
    elif request.param == "postgres":  # a fresh database (tests/pg.py)
        opened = await PostgresStore.open(request.getfixturevalue("pg_url"))
    else:
        raise ValueError(f"no store {request.param!r}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pgstore(pg_url: str) -> AsyncIterator[PostgresStore]:
    """An open, migrated, empty PostgreSQL store (tests/pg.py); closed after the test."""
    store = await PostgresStore.open(pg_url)
    try:
        yield store
    finally:
        await store.close()
