"""The files kept beside a database, all owner-only (issue 12, point 1).

A deployment is the database ``PATH`` and files named after it: SQLite's
``PATH-wal``, ``PATH-shm`` and ``PATH-journal``, and Tessera's ``PATH.admin-token``,
``PATH.signing-keys``, ``PATH.secret-key``, ``PATH.ledger-head`` and ``PATH.lock``.
Every one holds a secret or something a secret can be read from, so each is
created 0600 (directories the server creates, 0700), and a file an older
release left wider is tightened at start. SQLite creates its side files with
the mode of the database file, so the database is created 0600 before SQLite
opens it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import stat
import time
from pathlib import Path

import structlog

log = structlog.get_logger()

OWNER_ONLY = stat.S_IRUSR | stat.S_IWUSR  # 0600
PRIVATE_DIR = stat.S_IRWXU  # 0700
SQLITE_SUFFIXES = ("-wal", "-shm", "-journal")
ADMIN_TOKEN_SUFFIX = ".admin-token"  # noqa: S105 (a file name, not a secret)
SIGNING_KEYS_SUFFIX = ".signing-keys"
SECRET_KEY_SUFFIX = ".secret-key"  # noqa: S105 (a file name, not a secret)
LEDGER_HEAD_SUFFIX = ".ledger-head"
LOCK_SUFFIX = ".lock"
#: A complete copy the server writes when its files were removed under it (sqlite.py).
RESCUED_SUFFIX = ".rescued"
#: Side files a backup carries along (the checkpoint is recomputed from the copy).
SECRET_SUFFIXES = (ADMIN_TOKEN_SUFFIX, SIGNING_KEYS_SUFFIX, SECRET_KEY_SUFFIX)
SIDE_SUFFIXES = (*SQLITE_SUFFIXES, *SECRET_SUFFIXES, LEDGER_HEAD_SUFFIX, LOCK_SUFFIX)


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database


def not_a_database(db: Path) -> str | None:
    """Why ``db`` (which may be missing: a new database) cannot be a SQLite
    database file, in words, or None. Asked before anything is done to it, so a
    mistyped ``--db`` (a directory, ``/etc/passwd``) is neither chmodded nor
    given side files."""
    try:
        st = db.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # /etc/passwd/tessera.db
        file = next(p for p in db.parents if p.exists() and not p.is_dir())
        return f"{db} cannot be a database file: {file} is a file, not a directory"
    if stat.S_ISDIR(st.st_mode):
        return f"{db} is a directory, not a database file"
    if not stat.S_ISREG(st.st_mode):
        return f"{db} is not a regular file, so not a database file"
    if st.st_size:
        with open(db, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return f"{db} is not a SQLite database (it does not begin as one)"
    return None


#: Tables every Tessera database has had since its first migration (``schema.py``).
TESSERA_TABLES = frozenset({"meta", "teams", "packs", "ledger"})


def not_tessera(db: Path) -> str | None:
    """Why ``db``, a SQLite database (``not_a_database`` passed it), is another
    application's, in words, or None: it has tables of its own, and either no
    schema version (``PRAGMA user_version`` 0: Tessera's first migration sets 1
    with its tables) or not Tessera's tables. Asked, like ``not_a_database``,
    before anything is done to the file, and read so as to change nothing, not
    even the index of a log (``-shm``) a running server shares: the file alone,
    without a lock (``immutable``). (A Tessera database always has its tables
    there: its first start writes its log into the file once migrated.) Only a
    file with no table whose log (``-wal``) holds commits is read through its
    log, a young database of another application's perhaps. A file that cannot
    be read here is not judged (None): the open that follows says what is wrong."""
    try:
        if not db.stat().st_size:
            return None
        wal = side_path(db, "-wal")
        logged = wal.exists() and wal.stat().st_size > 0
    except OSError:
        return None
    found = _schema(db, "ro&immutable=1")
    if found is not None and not found[1] and logged:
        found = _schema(db, "ro")
    if found is None:
        return None
    version, names = found
    if not names or (version and TESSERA_TABLES.issubset(names)):
        return None
    shown = ", ".join(repr(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
    tables = "1 table" if len(names) == 1 else f"{len(names)} tables"
    what = "no schema version" if not version else f"schema version {version}, not Tessera's tables"
    return (
        f"{db} is not a Tessera database: it is another application's SQLite database "
        f"({tables} of its own: {shown}; {what})"
    )


def _schema(db: Path, mode: str) -> tuple[int, list[str]] | None:
    """``db``'s ``user_version`` and the names of its tables and views, opened in
    ``mode``; None if SQLite cannot read them."""
    uri = f"{db.absolute().as_uri()}?mode={mode}"  # (a name with "?" or "#" quoted)
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            names = [
                str(row[0])
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                )
            ]
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return version, names


def side_path(db: Path, suffix: str) -> Path:
    """``PATH`` + suffix: a side file is named after its database."""
    return db.parent / (db.name + suffix)


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents 0700 (existing ones are left as they are)."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=PRIVATE_DIR)


def create_private(path: Path, *, exclusive: bool = False) -> None:
    """Make an empty owner-only file at ``path`` unless one exists (``exclusive``:
    refuse an existing one)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    os.close(os.open(path, flags, OWNER_ONLY))


def _written_aside(path: Path, data: bytes, sync: bool) -> Path:
    """``data`` in a new owner-only file beside ``path``, named for this writer alone
    (two processes writing one name at once must not share a temporary file)."""
    private_dir(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # no secret left behind in a stray file
        raise
    os.close(fd)
    return tmp


def write_private(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data``, owner-only and atomically: a crash leaves the
    old file or the new one (``sync``: the new one's bytes are on disk before it
    takes the name, so a power loss cannot leave an empty file under it)."""
    tmp = _written_aside(path, data, sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_once(path: Path, data: bytes) -> bytes:
    """Make ``path`` owner-only with ``data`` unless it exists, atomically and once:
    of several processes making it at the same moment (servers sharing a secrets
    directory, started together) the first wins, and every one gets the bytes that
    are in the file."""
    tmp = _written_aside(path, data, sync=True)
    try:
        os.link(tmp, path)  # fails if the name is taken: never replaces a file
    except FileExistsError:
        return path.read_bytes()
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        return _create_once_without_links(path, tmp, data)  # (SMB, some FUSE mounts)
    finally:
        tmp.unlink(missing_ok=True)
    return data


NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def _create_once_without_links(path: Path, tmp: Path, data: bytes) -> bytes:
    """``create_once`` where a file system has no hard links: the first to take
    ``PATH.making`` (O_EXCL) renames its file (written aside: ``tmp``) to the name,
    whole; the others wait for that name (2 s at most: a maker that died is then
    replaced) and read it."""
    making = path.with_name(path.name + ".making")
    try:
        os.close(os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY))
    except FileExistsError:
        for _ in range(200):
            if path.exists():
                return path.read_bytes()
            time.sleep(0.01)
    try:
        if path.exists():
            return path.read_bytes()
        os.replace(tmp, path)
        return data
    finally:
        making.unlink(missing_ok=True)


def tighten_file(path: Path) -> bool:
    """Take group and other bits off ``path`` if it has any (logged); False when
    there was nothing to do or no file."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not mode & 0o077:
        return False
    os.chmod(path, mode & 0o700)
    log.warning("file_mode_tightened", file=str(path), was=oct(mode), now=oct(mode & 0o700))
    return True


def tighten(db: Path) -> list[Path]:
    """Tighten the database and its side files (made wider by an older release or
    by hand); returns the files tightened."""
    paths = (db, *(side_path(db, s) for s in SIDE_SUFFIXES))
    return [p for p in paths if tighten_file(p)]


def _identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode), or None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FilesWatch:
    """Whether the database and its ``-wal`` are still, at their names, the files
    SQLite opened. Removed or replaced under a running server (a clean-up of
    "temporary" ``-wal`` files, a restore done while it runs), SQLite writes on into
    the files it holds open and no write fails: every commit would be answered as
    stored while nothing at the database's name holds it. The writer asks after
    each commit (``moved``, two ``stat`` calls), before anyone is told it is stored."""

    def __init__(self, db: Path) -> None:
        # SQLite keeps its side files beside the database's real path (a symbolic link
        # followed); the database is looked at by its name, links followed too.
        real = Path(os.path.realpath(db))
        self.db, self.wal, self.shm = db, side_path(real, "-wal"), side_path(real, "-shm")
        self._paths = str(db), str(self.wal)  # (a str is stat'ed without a conversion)
        self._db_id = _identity(self._paths[0])
        self._wal_id = _identity(self._paths[1])  # None until SQLite made it

    def moved(self) -> str | None:
        """None while both are the files opened; else which is not, and how:
        ``"db removed"``, ``"db replaced"``, ``"wal removed"``, ``"wal replaced"``."""
        now = _identity(self._paths[0])
        if now != self._db_id:
            return "db removed" if now is None else "db replaced"
        wal = _identity(self._paths[1])
        if self._wal_id is None:
            self._wal_id = wal
        elif wal != self._wal_id:
            return "wal removed" if wal is None else "wal replaced"
        return None

    def foreign_wal(self) -> bool:
        """Whether a file other than the ``-wal`` SQLite opened is at its name."""
        now = _identity(self._paths[1])
        return now is not None and self._wal_id is not None and now != self._wal_id

    def wal_aside(self) -> Path | None:
        """A foreign ``-wal`` (``foreign_wal``) moved out of the way of SQLite's close,
        which removes the file at that name: where it went, to be put back; else None."""
        if not self.foreign_wal():
            return None
        aside = self.wal.with_name(self.wal.name + ".kept")  # beside it (a link's target)
        os.replace(self.wal, aside)
        return aside
