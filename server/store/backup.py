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

With PostgreSQL a backup is ``pg_dump`` of the database beside a copy of the
secrets directory (``backup_postgres`` below; docs/postgres.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from server.ha import secrets
from server.store import checkpoint
from server.store.audit import chained_ledger, connect_read_only
from server.store.checkpoint import LedgerHead, LedgerMismatch
from server.store.files import (
    SECRET_SUFFIXES,
    create_private,
    private_dir,
    side_path,
    write_private,
)
from server.store.postgres import secrets_base, take_parameter, without_password
from server.store.reads import LAST_AUDIT_SQL


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
    made = [d for d in (to.parent, *to.parent.parents) if not d.exists()]  # deepest first
    create_private(to, exclusive=True)  # SQLite's side files of the copy take its mode
    try:
        with (
            contextlib.closing(connect_read_only(db)) as src,
            contextlib.closing(sqlite3.connect(to)) as dst,
        ):
            # One step, in one read transaction of the WAL: a copy made in steps starts
            # over whenever the server commits between two, and under steady writes
            # never ends (a WAL reader holds up no writer, so one step costs the
            # server nothing).
            src.backup(dst, pages=-1)
            copied.pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            copied.head = _head(dst)
            chained = chained_ledger(dst)
            if anchor is not None:
                _reaches(dst, anchor, copied.head, db, chained)
        if chained:  # No server ran on the copy: it ends exactly here.
            copied.files.append(anchor_path)
            checkpoint.write(anchor_path, dataclasses.replace(copied.head, stopped=True))
        # (Else an older release's database, backed up before an upgrade, whose ledger
        # has no chain yet: the server chains and anchors it at its start on the copy.)
        for suffix in SECRET_SUFFIXES:
            source = side_path(db, suffix)
            if source.exists():
                copied.files.append(side_path(to, suffix))
                write_private(side_path(to, suffix), source.read_bytes())
    except BaseException:
        for path in copied.files:  # no half backup that could be mistaken for one
            path.unlink(missing_ok=True)
        for folder in made:  # nor the folders made for it
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return copied


def _head(conn: sqlite3.Connection) -> LedgerHead:
    """The ledger's head and the audit trail's (one checkpoint holds both); of a
    ledger without its hash chain (schema 3 and older), its last entry's seq alone."""
    if not chained_ledger(conn):
        row = conn.execute("SELECT MAX(seq) FROM ledger").fetchone()
        return LedgerHead(int(row[0] or 0), "")
    row = conn.execute(checkpoint.LAST_ENTRY_SQL).fetchone()
    head = LedgerHead(int(row[0]), str(row[1])) if row else checkpoint.EMPTY
    audit = conn.execute(LAST_AUDIT_SQL).fetchone() if _audited(conn) else None
    if audit is not None:
        head = dataclasses.replace(head, audit_seq=int(audit[0]), audit_hash=str(audit[1]))
    return head


def _audited(conn: sqlite3.Connection) -> bool:
    """Whether the database has the audit trail's table (schema 7 on)."""
    sql = "SELECT 1 FROM sqlite_master WHERE name = 'audit_events'"
    return conn.execute(sql).fetchone() is not None


def _reaches(
    conn: sqlite3.Connection, anchor: LedgerHead, head: LedgerHead, db: Path, chained: bool
) -> None:
    """Refuse a snapshot that does not reach the live checkpoint (a ledger with no
    chain reaches none: it is an older copy than the checkpoint's database)."""
    sql = "SELECT hash FROM ledger WHERE seq = ?"
    row = conn.execute(sql, (anchor.seq,)).fetchone() if chained else None
    problem = checkpoint.problem(anchor, head.seq, str(row[0]) if row else None)
    sql = "SELECT hash FROM audit_events WHERE seq = ?"
    row = conn.execute(sql, (anchor.audit_seq,)).fetchone() if _audited(conn) else None
    problem = problem or checkpoint.audit_problem(anchor, head.audit_seq, row and str(row[0]))
    if problem is not None:
        raise LedgerMismatch(
            f"not backing up {db}: {problem}; run `python -m server verify --db {db}`"
        )


# -- PostgreSQL ------------------------------------------------------------------------
#
# A backup of a PostgreSQL deployment is a new directory holding
#
# - ``tessera.dump``: ``pg_dump --format=custom`` of the database, taken in a
#   snapshot this process exports (``pg_export_snapshot``), so that the ledger head
#   it reports is exactly the dump's; the leader row's data is left out (a restored
#   database starts with no active server, and the first to start is elected);
# - the secret files, under the names a secrets directory has
#   (``tessera.admin-token``, ``tessera.signing-keys``, ``tessera.secret-key``).
#
# So the directory is itself a secrets directory: restoring is ``pg_restore`` into a
# new database and starting the server with ``--db`` that database's URL and
# ``--secrets-dir`` the directory (docs/postgres.md). The dump carries the
# database's record of its secrets directory (``server/ha/secrets.py``), so a
# ``--secrets-dir`` that is not the one it records is refused, in the snapshot the
# dump is taken in: copied, it would make a backup whose restored servers are
# refused (``secrets.compare``).

DUMP_NAME = "tessera.dump"
PG_BIN_ENV = "TESSERA_PG_BIN"  # a directory with pg_dump and pg_restore, tried first


def pg_tool(name: str, server_major: int) -> Path:
    """``pg_dump`` or ``pg_restore`` able to read a server of ``server_major``
    (its own major version is the same or newer): the first of ``$TESSERA_PG_BIN``,
    PATH, Debian's ``/usr/lib/postgresql/*/bin`` (newest first) and the one the
    ``pgserver`` package bundles (a dev dependency); else an error saying what to
    install."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]) / name)
    if found := shutil.which(name):
        candidates.append(Path(found))
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=_major_of_dir)
    candidates += reversed(debian)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / name)
    seen = []
    for tool in candidates:
        major = _tool_major(tool)
        if major is not None and major >= server_major:
            return tool
        if major is not None:
            seen.append(f"{tool} ({major})")
    raise FileNotFoundError(
        f"no {name} of PostgreSQL {server_major} or newer (found: {', '.join(seen) or 'none'}): "
        f"install that version's client tools, or set {PG_BIN_ENV} to their directory"
    )


def _major_of_dir(path: Path) -> int:
    version = path.parent.parent.name
    return int(version) if version.isdigit() else 0


def _tool_major(tool: Path) -> int | None:
    """The major version a PostgreSQL client tool reports, or None if it does not run."""
    try:
        out = subprocess.run(  # noqa: S603 (a PostgreSQL tool found above, fixed arguments)
            [str(tool), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found.group(1)) if found else None


def backup_postgres(url: str, to: Path, secrets_dir: Path) -> Copied:
    """Dump the database at ``url`` and copy the secrets of ``secrets_dir`` into the
    new directory ``to``, while the servers may be running; ``secrets_dir`` must be
    the one the database's servers use (``secrets.SecretsMismatch``)."""
    if to.exists():
        raise FileExistsError(f"{to} exists; choose a new directory")
    made = [d for d in to.parents if not d.exists()]  # deepest first
    private_dir(to)
    dump = to / DUMP_NAME
    copied = Copied(files=[dump])
    try:
        create_private(dump, exclusive=True)  # pg_dump writes into it, keeping its mode
        copied.head = asyncio.run(_dump_in_snapshot(url, dump, secrets_dir))
        source, base = secrets_base(secrets_dir), secrets_base(to)
        for suffix in SECRET_SUFFIXES:
            if side_path(source, suffix).exists():
                copied.files.append(side_path(base, suffix))
                write_private(side_path(base, suffix), side_path(source, suffix).read_bytes())
    except BaseException:
        shutil.rmtree(to, ignore_errors=True)  # no half backup that could be taken for one
        for folder in made:  # nor the folders made for it
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return copied


class PassphraseRefused(Exception):
    """The URL's ``sslpassword`` is one pg_dump cannot be given privately: its words
    are the operator's to read (not a ValueError, which ``tools.main`` reads as a URL
    that cannot be parsed)."""


#: The section of the connection service file that gives pg_dump the client key's
#: passphrase (``_passphrase_service``).
SERVICE = "tessera-backup"


@contextlib.contextmanager
def _passphrase_service(passphrase: str | None) -> Iterator[Path | None]:
    """A connection service file readable by this user only, giving libpq the URL's
    ``sslpassword`` (the client key's passphrase), removed once pg_dump is done; None
    when there is none. libpq has no environment variable for it (unlike
    ``PGPASSWORD``), and on pg_dump's command line any user could read it."""
    if passphrase is None:
        yield None
        return
    if passphrase != passphrase.strip() or "\n" in passphrase or "\r" in passphrase:
        # libpq's service file ends a value at the line, and drops its trailing spaces.
        raise PassphraseRefused(
            "the URL's sslpassword starts or ends with a space or holds a line break, "
            "which pg_dump cannot be given privately: back up with a client key whose "
            "passphrase has none"
        )
    fd, name = tempfile.mkstemp(prefix="tessera-pg-service-")  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"[{SERVICE}]\nsslpassword={passphrase}\n")
        yield path
    finally:
        path.unlink(missing_ok=True)


async def _dump_in_snapshot(url: str, dump: Path, secrets_dir: Path) -> LedgerHead:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            # The record the dump holds is the one compared with.
            await secrets.compare(conn, secrets_dir)
            server_major = conn.get_server_version().major
            row = await conn.fetchrow(checkpoint.LAST_ENTRY_SQL)
            head = LedgerHead(int(row[0]), str(row[1])) if row else checkpoint.EMPTY
            # The secrets go by the environment and a private file: a command line is
            # for anyone to read (``ps``).
            target, password = without_password(url)
            target, passphrase = take_parameter(target, "sslpassword")
            env = {**os.environ, **({"PGPASSWORD": password} if password is not None else {})}
            with _passphrase_service(passphrase) as service:
                if service is not None:
                    env["PGSERVICEFILE"] = str(service)
                    target += ("&" if "?" in target else "?") + f"service={SERVICE}"
                command = [
                    str(pg_tool("pg_dump", server_major)),
                    "--format=custom",
                    f"--snapshot={snapshot}",
                    "--exclude-table-data=tessera_leader",
                    f"--file={dump}",
                    f"--dbname={target}",
                ]
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                )
                try:
                    _, err = await proc.communicate()
                except BaseException:
                    # Stopped (SIGTERM, Ctrl+C): pg_dump would go on writing into the
                    # directory being removed, and outlive this process.
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                    raise
            if proc.returncode:
                raise OSError(f"pg_dump failed: {err.decode(errors='replace').strip()}")
    finally:
        await conn.close()
    return head
