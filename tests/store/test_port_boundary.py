"""Nothing above the store reaches past the port (issue 13, point 1): the
engine, the servicers and the domain import no store adapter, no codec and
no database driver, hold no SQL, and wait for queued commits only through
``Engine.settled``. Only the wiring (``server/app.py``) picks an adapter."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_STORE = ("server/engine", "server/api", "server/domain")
# What a module above the store may import from server.store.
ALLOWED_STORE_MODULES = {"server.store.port"}
DRIVERS = {"aiosqlite", "sqlite3", "asyncpg", "psycopg", "psycopg2"}
SQL = re.compile(r"\b(SELECT\s|INSERT\s+INTO\b|DELETE\s+FROM\b|UPDATE\s+\w+\s+SET\b|PRAGMA\s)")
# ``store.barrier()`` belongs to ``Commits.settled`` (``Engine.settled``) alone.
BARRIER_ALLOWED = {"server/engine/commits.py"}


def violations(source: str, name: str) -> list[str]:
    """What in ``source`` (the module at ``name``) reaches past the port."""
    found: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for module in modules:
            top = module.split(".")[0]
            if top in DRIVERS:
                found.append(f"{name}:{node.lineno} imports {module}")
            elif module.startswith("server.store") and module != "server.store":
                store_module = ".".join(module.split(".")[:3])
                if store_module not in ALLOWED_STORE_MODULES:
                    found.append(f"{name}:{node.lineno} imports {module}")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL.search(node.value)
        ):
            found.append(f"{name}:{node.lineno} holds SQL: {node.value[:60]!r}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"query", "select", "execute"}
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "store"
        ):
            found.append(f"{name}:{node.lineno} calls store.{node.attr}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "barrier"
            and name not in BARRIER_ALLOWED
        ):
            found.append(f"{name}:{node.lineno} calls barrier() outside Engine.settled")
    return found


def _sources() -> list[Path]:
    files = [p for d in ABOVE_THE_STORE for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20  # the walk found the packages
    return files


def test_issue13_nothing_above_the_store_reaches_past_the_port() -> None:
    found = [
        v
        for path in _sources()
        for v in violations(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import aiosqlite",
        "from server.store.sqlite import Store",
        "from server.store import sqlite",
        "from server.store.codec import SESSIONS",
        "import server.store.codec",
        "import asyncpg",
        "Q = 'SELECT pack_id FROM ledger'",
        "def f(e):\n    return e.store.query('x')",
        "async def f(e):\n    await e.store.barrier()",
    ],
)
def test_issue13_the_boundary_check_catches_each_way_past_the_port(source: str) -> None:
    assert violations(source, "server/engine/x.py") != []


def test_issue13_the_boundary_check_lets_the_port_through() -> None:
    ok = "from server.store.port import StorePort, Snapshot\nfrom server.store import port\n"
    assert violations(ok, "server/engine/x.py") == []
