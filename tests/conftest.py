from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.grpcurl import Grpcurl
from tests.support import ADMIN_TOKEN, ServerThread

# PostgreSQL for the tests: the fixtures `pg` (the run's server) and `pg_url` (a fresh database).
pytest_plugins = ["tests.pg"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A real server on 127.0.0.1:0, test clock at 2026-01-01T00:00:00Z."""
    srv = ServerThread(tmp_path / "tessera.db").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def admin(server: ServerThread) -> Iterator[Grpcurl]:
    """grpcurl-style client with the admin token: ``admin("tessera.v1.AdminService/X", {...})``."""
    client = Grpcurl(server.target, ADMIN_TOKEN)
    try:
        yield client
    finally:
        client.close()
