"""Every server of one database holds the same secrets (RULES H1, H3; docs/postgres.md).

The admin token, the lease-signing keys and the secret key are files in each
server's ``--secrets-dir``, never in the database. A server started on another
directory than the others (a typo, a copy forgotten) would take part in the
election as if nothing were wrong, and once active it would refuse the
operators' token, sign leases with keys the products have never seen, and
show invitation tokens nobody sent.

So the database records which secrets directory its servers use: a digest of
its secret key, made once and never rotated (``tessera_secrets``, one row, made
by the first server to start). A server whose key differs, or that has none
while the database has a record, is refused at start, before it makes any
file, and again when it is elected, before it serves; so is an operator's
``backup`` or ``rotate-signing-key`` given another directory (``compare``: a
backup without the database's secrets, a new key where no server reads it).
The admin token and the signing keys are not compared: operators replace those
on purpose, one server after the other (docs/postgres.md), while a secret key
never changes in a directory that is the database's.

The digest cannot give the key back: it is SHA-256 of the key's 32 random bytes.

``python -m server adopt-secrets --db URL --secrets-dir DIR`` records DIR's key
instead, for the day the database's key is lost for good (``adopt``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

from server.credentials import load_or_create_secret_key, read_secret_key
from server.store.files import SECRET_KEY_SUFFIX, side_path
from server.store.postgres import secrets_base

#: What the digest is of, before the key's bytes (a digest of nothing else).
CONTEXT = b"tessera.v1 secret key\x00"
RECORDED = "SELECT digest, node_id, recorded_at FROM tessera_secrets WHERE id = 1"
RECORD = """
INSERT INTO tessera_secrets (id, digest, node_id) VALUES (1, $1, $2)
ON CONFLICT (id) DO NOTHING
"""
ADOPT = """
INSERT INTO tessera_secrets (id, digest, node_id) VALUES (1, $1, $2)
ON CONFLICT (id) DO UPDATE SET digest = EXCLUDED.digest, node_id = EXCLUDED.node_id,
    recorded_at = now()
"""


class SecretsMismatch(Exception):
    """This server's secrets directory is not the one its database's servers use, or
    its key file cannot be read."""


def key_path(secrets_dir: Path) -> Path:
    return side_path(secrets_base(secrets_dir), SECRET_KEY_SUFFIX)


def digest(key: bytes) -> bytes:
    return hashlib.sha256(CONTEXT + key).digest()


async def check(conn: asyncpg.Connection, secrets_dir: Path, node_id: str) -> None:
    """Raise ``SecretsMismatch`` unless ``secrets_dir`` holds the key the database
    records; with no record yet, make the key if missing and record it (the
    first server to start; two at once: the first to record wins, and the other
    is compared with it)."""
    path = key_path(secrets_dir)
    if await conn.fetchrow(RECORDED) is None:
        await conn.execute(RECORD, digest(_key(path)), node_id)
    row = await conn.fetchrow(RECORDED)
    assert row is not None  # noqa: S101 (just recorded, and never deleted)
    _same(row, secrets_dir, make=True)


async def compare(conn: asyncpg.Connection, secrets_dir: Path) -> None:
    """``check`` for the operators' tools that read or add to a secrets directory
    (``backup``, ``rotate-signing-key``): raise ``SecretsMismatch``, in the words a
    server's start is refused in, unless ``secrets_dir`` holds the key the database
    records; it makes no file and records nothing, and reads in the caller's
    transaction (a backup's snapshot).

    With no record (no server of this release has started on the database yet, or
    its schema predates the table) there is nothing to compare with, and the
    directory is accepted: no directory is the database's yet (the first server to
    start records the one it is given, a restored backup's server the backup's), and
    refusing would leave such a database with no backup at all."""
    if await conn.fetchval("SELECT to_regclass('tessera_secrets')") is None:
        return
    row = await conn.fetchrow(RECORDED)
    if row is not None:
        _same(row, secrets_dir, make=False)


def _same(row: asyncpg.Record, secrets_dir: Path, *, make: bool) -> None:
    """Raise ``SecretsMismatch`` unless the key in ``secrets_dir`` is the one of the
    database's record ``row`` (``make``: ``check``'s reading, which also tightens
    the file's mode; else ``compare``'s, which changes nothing)."""
    path = key_path(secrets_dir)
    recorded = (
        f"the one node {row['node_id']!r} recorded at {row['recorded_at']:%Y-%m-%d %H:%M} UTC"
    )
    if not path.exists():
        problem = (
            f"{secrets_dir} holds no secret key ({path.name}), "
            f"while this database's servers use {recorded}"
        )
    elif digest(_key(path, make=make)) != bytes(row["digest"]):
        problem = f"the secret key in {path} is not this database's: its servers use {recorded}"
    else:
        return
    raise SecretsMismatch(
        f"{problem}. Every server of one database uses the same secrets directory "
        "(shared, or a copy: its admin token, signing keys and secret key); copy it from "
        "one of them and start again. Only if that key is lost for good: python -m server "
        "adopt-secrets --db URL --secrets-dir DIR"
    )


def _key(path: Path, *, make: bool = True) -> bytes:
    """The directory's key (made if missing, if ``make``); a file that is no key is
    refused, as a server on it would be (not read as the database failing)."""
    try:
        return load_or_create_secret_key(path) if make else read_secret_key(path)
    except OSError as exc:
        raise SecretsMismatch(str(exc)) from None


async def adopt(conn: asyncpg.Connection, secrets_dir: Path) -> None:
    """Record ``secrets_dir``'s key (made if missing) as the database's."""
    key = load_or_create_secret_key(key_path(secrets_dir))
    await conn.execute(ADOPT, digest(key), "adopt-secrets")
