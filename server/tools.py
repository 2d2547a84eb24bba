"""Operators' offline tools: ``verify`` the ledger, ``backup`` a live database.

``python -m server verify --db PATH`` checks the ledger's hash chain, that it
reaches its checkpoint, and that the packs agree with it both ways
(``server/store/audit.py``). It exits 0 when all is well, else 1 naming the
first problem.

``python -m server backup --db PATH --to FILE`` copies the database, even while
the server runs, with its admin token, signing keys and secret key, all
owner-only (``server/store/backup.py``). Restoring is starting the server with
``--db FILE``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from server.config import OPTIONS, help_line
from server.store.audit import Verdict, verify
from server.store.backup import backup

__all__ = ["COMMANDS", "Verdict", "backup", "main", "verify"]


# Each tool's one line of help, also listed by the server's --help (server/__main__.py).
COMMANDS = {
    "verify": "check the ledger's hash chain and every pack's sums",
    "backup": "copy a (running) server's database consistently",
    "rotate-signing-key": "add a new lease-signing key (used after the next start); old ones "
    "stay published",
}


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m server", description="Tessera operator tools")
    sub = p.add_subparsers(dest="command", required=True)
    db = next(o for o in OPTIONS if o.field == "db")
    parsers = {name: sub.add_parser(name, help=text) for name, text in COMMANDS.items()}
    for tool in parsers.values():
        # The server's own --db option: the same variable, default and help.
        tool.add_argument(
            db.flag,
            type=Path,
            metavar=db.metavar,
            default=Path(os.environ.get(db.env) or db.default),
            help=help_line(db),
        )
    parsers["backup"].add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="PATH",
        help="the new copy's database file; its admin token, signing keys and secret key "
        "are written beside it (required; it must not exist)",
    )
    a = p.parse_args(argv)
    try:
        if a.command == "verify":
            verdict = verify(a.db)
            if verdict.ok:
                print(verdict.summary())
                return 0
            for problem in verdict.problems:
                print(f"BAD: {problem}")
            return 1
        if a.command == "rotate-signing-key":
            from server import leases
            from server.clock import SystemClock

            key = leases.rotate(leases.key_path(a.db), SystemClock().now())
            print(f"new signing key {key.key_id}; restart the server to sign with it")
            return 0
        copied = backup(a.db, a.to)
        print(f"backed up {a.db} ({copied.pages} pages, {copied.head.seq} ledger entries) to:")
        for path in copied.files:
            print(f"  {path}")
        print(f"to restore, start the server with --db {a.to} (keep these files together)")
        return 0
    except (OSError, sqlite3.Error) as exc:
        print(f"python -m server {a.command}: {exc}", file=sys.stderr)
        return 2
