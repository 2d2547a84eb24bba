"""``python -m server backup``: a copy that restores into a working deployment.

The database is copied with SQLite's online backup API: a consistent snapshot
even while the server writes (WAL readers do not block the writer). Beside the
copy go, under the copy's own name, the files without which it would be a
different deployment (issue 12, point 9): the admin token, the lease-signing
keys (outstanding leases still verify offline) and the secret key (pending
invitation tokens still work). Its ledger checkpoint is computed from the copy
itself, not copied: the live one may already be past the snapshot. Every file
is created owner-only. Restoring is starting the server with ``--db COPY``.

A snapshot that does not reach the live checkpoint is refused: a backup must
not turn a tampered ledger into a clean-looking one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from server.store import checkpoint
from server.store.audit import connect_read_only
from server.store.checkpoint import LedgerHead, LedgerMismatch
from server.store.files import SECRET_SUFFIXES, create_private, side_path, write_private


@dataclass
class Copied:
    pages: int = 0
    head: LedgerHead = checkpoint.EMPTY
    files: list[Path] = field(default_factory=list)  # every file written, the copy first


def backup(db: Path, to: Path) -> Copied:
    """Copy ``db`` and its secrets to ``to`` (a new file) while the server may be running."""
    anchor_path = checkpoint.checkpoint_path(to)
    for target in (to, anchor_path, *(side_path(to, s) for s in SECRET_SUFFIXES)):
        if target.exists():
            raise FileExistsError(f"{target} exists; choose a new file")
    anchor = checkpoint.read(checkpoint.checkpoint_path(db))  # before the snapshot
    copied = Copied(files=[to])
    create_private(to, exclusive=True)  # SQLite's side files of the copy take its mode
    try:
        with (
            contextlib.closing(connect_read_only(db)) as src,
            contextlib.closing(sqlite3.connect(to)) as dst,
        ):
            src.backup(dst, pages=4096)
            copied.pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            copied.head = _head(dst)
            if anchor is not None:
                _reaches(dst, anchor, copied.head, db)
        # No server ran on the copy: it ends exactly here.
        copied.files.append(anchor_path)
        checkpoint.write(anchor_path, dataclasses.replace(copied.head, stopped=True))
        for suffix in SECRET_SUFFIXES:
            source = side_path(db, suffix)
            if source.exists():
                copied.files.append(side_path(to, suffix))
                write_private(side_path(to, suffix), source.read_bytes())
    except BaseException:
        for path in copied.files:  # no half backup that could be mistaken for one
            path.unlink(missing_ok=True)
        raise
    return copied


def _head(conn: sqlite3.Connection) -> LedgerHead:
    row = conn.execute(checkpoint.LAST_ENTRY_SQL).fetchone()
    return LedgerHead(int(row[0]), str(row[1])) if row else checkpoint.EMPTY


def _reaches(conn: sqlite3.Connection, anchor: LedgerHead, head: LedgerHead, db: Path) -> None:
    row = conn.execute("SELECT hash FROM ledger WHERE seq = ?", (anchor.seq,)).fetchone()
    problem = checkpoint.problem(anchor, head.seq, str(row[0]) if row else None)
    if problem is not None:
        raise LedgerMismatch(
            f"not backing up {db}: {problem}; run `python -m server verify --db {db}`"
        )
