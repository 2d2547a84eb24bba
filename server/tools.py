"""Operators' offline tools: ``verify`` the ledger, ``backup`` a live database.

``python -m server verify --db PATH`` checks the ledger's hash chain, that it
reaches its checkpoint, and that the packs agree with it both ways
(``server/store/audit.py``). It exits 0 when all is well, else 1 naming the
first problem.

``python -m server backup --db PATH --to FILE`` copies the database, even while
the server runs, with its admin token, signing keys and secret key, all
owner-only (``server/store/backup.py``). Restoring is starting the server with
``--db FILE``.

With ``--db postgresql://...`` verify reads the same checks from PostgreSQL,
and backup writes ``pg_dump`` of the database and a copy of ``--secrets-dir``
into the new directory ``--to`` (docs/postgres.md: restoring). Backup and
rotate-signing-key refuse a ``--secrets-dir`` that is not the database's, as a
server's start on it is refused (``server/ha/secrets.py``). Verify, backup and
rotate-signing-key refuse another application's database and an empty one in
the same words (exit 2), before anything is written for it.

``python -m server adopt-secrets --db postgresql://... --secrets-dir DIR`` makes
DIR the database's secrets directory (``server/ha/secrets.py``), for the day the
one its servers used is lost for good.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg

from server.app import cannot_open, shown_db
from server.config import OPTIONS, help_line, parse_instant
from server.engine.core import TEST_CLOCK_KEY
from server.ha import secrets
from server.store.audit import Verdict, connect_read_only, not_tessera_here, verify
from server.store.backup import DUMP_NAME, PassphraseRefused, backup, backup_postgres
from server.store.port import StoreFailed
from server.store.postgres import (
    NOT_TESSERA,
    hidden,
    schema_version,
    secrets_base,
    verify_postgres,
)

__all__ = ["COMMANDS", "Verdict", "backup", "main", "verify"]


_OPTIONS = {o.field: o for o in OPTIONS}

# Each tool's one line of help, also listed by the server's --help (server/__main__.py).
COMMANDS = {
    "verify": "check the ledger's hash chain and every pack's sums",
    "backup": "copy a (running) server's database consistently",
    "rotate-signing-key": "add a new lease-signing key (used after the next start); old ones "
    "stay published",
    "adopt-secrets": "PostgreSQL: make --secrets-dir the database's secrets directory (only "
    "when the one its servers used is lost for good)",
}


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``timeout``, cron, a service manager) as SystemExit(143) while inside,
    so that the ``finally`` and ``except BaseException`` clean-ups run, as on Ctrl+C."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m server", description="Tessera operator tools")
    sub = p.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=text) for name, text in COMMANDS.items()}
    for name, tool in parsers.items():
        # The server's own --db (and, where secrets are read, --secrets-dir) options:
        # the same variables, defaults and help.
        for option in _OPTIONS["db"], _OPTIONS["secrets_dir"]:
            if option.field == "db" or name != "verify":
                tool.add_argument(
                    option.flag,
                    type=option.parse,
                    metavar=option.metavar,
                    default=option.parse(os.environ.get(option.env) or str(option.default)),
                    help=help_line(option),
                )
    parsers["backup"].add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="PATH",
        help="the new copy's database file; its admin token, signing keys and secret key "
        "are written beside it (required; it must not exist). With PostgreSQL: a new "
        "directory for the pg_dump and the secrets (docs/postgres.md)",
    )
    a = p.parse_args(argv)
    postgres = isinstance(a.db, str)
    try:
        # Another application's database, or an empty one, said to be so as verify
        # says it (not "no such table: ledger"), before anything is written for it.
        problem = None
        if postgres and a.command != "adopt-secrets":
            problem = asyncio.run(_not_tessera_pg(a.db))
        elif not postgres and a.command in ("backup", "rotate-signing-key"):
            problem = not_tessera_here(a.db)  # (verify asks it itself)
        if problem is not None:
            raise StoreFailed(problem)
        if a.command == "verify":
            verdict = asyncio.run(verify_postgres(a.db)) if postgres else verify(a.db)
            if verdict.ok:
                print(verdict.summary())
                return 0
            for problem in verdict.problems:
                print(f"BAD: {problem}")
            return 1
        if a.command == "rotate-signing-key":
            from server import leases
            from server.clock import SystemClock

            # The old key is retired at the database's time: a test-clock database's
            # own (its server publishes a retired key for a lease's life on that clock).
            if postgres:  # (another --secrets-dir: refused, no key where no server reads it)
                asyncio.run(_same_secrets(a.db, a.secrets_dir))
                stored = asyncio.run(_stored_clock_pg(a.db))
            else:  # (a mistyped --db: refused here, no stray key file beside nothing)
                with contextlib.closing(connect_read_only(a.db)) as conn:
                    row = conn.execute(CLOCK_SQL, (TEST_CLOCK_KEY,)).fetchone()
                stored = row[0] if row else None
            now = parse_instant(stored) if stored else SystemClock().now()
            named_after = secrets_base(a.secrets_dir) if postgres else a.db
            key = leases.rotate(leases.key_path(named_after), now)
            public = base64.b64encode(key.public_bytes).decode()
            print(f"new signing key {key.key_id}; restart the server to sign with it")
            # What a product that pins its keys (signing_keys=) adds before the restart.
            print(f"its public key, to pin: {json.dumps({key.key_id: public})}")
            return 0
        if a.command == "adopt-secrets":
            if not postgres:
                print(
                    "python -m server adopt-secrets: for a PostgreSQL --db only (a SQLite "
                    "database's secrets are the files beside it)",
                    file=sys.stderr,
                )
                return 2
            asyncio.run(_adopt_secrets(a.db, a.secrets_dir))
            print(
                f"{a.secrets_dir} is now the secrets directory of {shown_db(a.db)}: start every "
                "server of it with these files (a server with others is refused)"
            )
            return 0
        if postgres:
            return _backup_postgres(a.db, a.to, a.secrets_dir)
        with _sigterm_unwinds():  # a backup stopped by cron or systemd leaves no half copy
            copied = backup(a.db, a.to)
        print(f"backed up {a.db} ({copied.pages} pages, {copied.head.seq} ledger entries) to:")
        for path in copied.files:
            print(f"  {path}")
        print(f"to restore, start the server with --db {a.to} (keep these files together)")
        return 0
    except (
        OSError,
        sqlite3.Error,
        asyncpg.PostgresError,
        asyncpg.ClientConfigurationError,
        ValueError,  # a URL asyncpg cannot read
        StoreFailed,
        secrets.SecretsMismatch,  # PostgreSQL: a --secrets-dir not the database's
        PassphraseRefused,  # PostgreSQL: a client key's passphrase pg_dump cannot get
    ) as exc:
        # A ValueError of asyncpg's is a URL it cannot read; another (a damaged
        # signing-keys file, leases.DamagedKeys) says what it is itself.
        url_unread = postgres and type(exc) is ValueError
        said = cannot_open(a.db, exc) if url_unread else str(exc)
        if isinstance(exc, TimeoutError):  # (an OSError whose words are none)
            said = f"no answer from {shown_db(a.db) if postgres else a.db} within {PG_WAIT:g} s"
        said = said or type(exc).__name__
        print(
            f"python -m server {a.command}: {hidden(said, a.db) if postgres else said}",
            file=sys.stderr,
        )
        return 2


CLOCK_SQL = "SELECT value FROM meta WHERE key = ?"
#: Seconds a tool waits for PostgreSQL to answer its connection.
PG_WAIT = 30.0


async def _stored_clock_pg(url: str) -> str | None:
    """A test-clock database's time (None on the real clock)."""
    conn = await asyncpg.connect(url, timeout=PG_WAIT)
    try:
        value = await conn.fetchval(CLOCK_SQL.replace("?", "$1"), TEST_CLOCK_KEY)
    finally:
        await conn.close()
    return None if value is None else str(value)


async def _not_tessera_pg(url: str) -> str | None:
    """Why the PostgreSQL database at ``url`` is no Tessera database, or None: no
    table at all (empty), or tables but no ``schema_version`` (another application's)."""
    conn = await asyncpg.connect(url, timeout=PG_WAIT)
    try:
        if await schema_version(conn) != 0:
            return None
        tables = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema'))"
        )
    finally:
        await conn.close()
    if not tables:
        return f"no Tessera database at {shown_db(url)} (empty)"
    return NOT_TESSERA


async def _same_secrets(url: str, secrets_dir: Path) -> None:
    """Refuse a ``secrets_dir`` that is not the one the database's servers use, in
    the words their start is refused in (``secrets.compare``): a key rotated into
    another directory is one no server signs with, and that file, copied to the
    servers as docs/postgres.md says, would take their current key away."""
    conn = await asyncpg.connect(url, timeout=PG_WAIT)
    try:
        await secrets.compare(conn, secrets_dir)
    finally:
        await conn.close()


async def _adopt_secrets(url: str, secrets_dir: Path) -> None:
    conn = await asyncpg.connect(url, timeout=PG_WAIT)
    try:
        if await schema_version(conn) == 0:
            raise StoreFailed(NOT_TESSERA)
        await secrets.adopt(conn, secrets_dir)
    finally:
        await conn.close()


def _backup_postgres(url: str, to: Path, secrets_dir: Path) -> int:
    with _sigterm_unwinds():  # as SQLite's: no half backup, no pg_dump left writing
        copied = backup_postgres(url, to, secrets_dir)
    print(f"backed up {shown_db(url)} ({copied.head.seq} ledger entries) to:")
    for path in copied.files:
        print(f"  {path}")
    print(
        f"to restore: pg_restore --no-owner --dbname NEW_DATABASE_URL {to / DUMP_NAME}, then "
        f"start the server with --db NEW_DATABASE_URL --secrets-dir {to} (docs/postgres.md)"
    )
    return 0
