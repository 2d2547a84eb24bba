"""One server per database (RULES H4).

The store takes an exclusive ``flock`` on ``PATH.lock`` before it touches the
database and holds it for its life; a second server on the same file fails at
once, naming the file and the pid written in it, before opening anything else.
``PATH`` is the database's real path, symbolic links followed (as SQLite follows
them to put its ``-wal`` beside the file), so a link to the file, or to its
directory, meets the same lock. A hard link is a second name the kernel cannot
tell from the first, and each name would take a lock of its own, so a database
file with more than one name is refused once the lock is held
(``DatabaseHardLinked``, the lock let go): SQLite keeps its ``-wal`` and ``-shm``
beside the name it opens, so two servers on two names would each keep their own
log and corrupt the file. (Checked at start: a link made later is not seen.)
Nothing Tessera or SQLite does gives the database a second name: ``create_once``
links only the secret files it makes, and SQLite's side files are files of their
own. A database that does not exist yet (a first start) is not refused.
The lock is the kernel's: it goes with the process however it ends (kill -9
included), so there is never a stale lock to remove. ``flock`` belongs to the
open file description, so two stores in one process exclude each other too.
The store also takes a ``flock`` on the database file itself once the lock is
held (``hold``), so that a lock file removed by hand while its server runs (a
clean-up of ``var/``) lets no second server in: the second one takes a new
``PATH.lock`` but not the file, and is refused naming the holder's pid (read
from ``/proc/locks``). A ``flock`` and SQLite's own ``fcntl`` locks do not meet
on a local file system (SQLite's WAL needs one anyway); the descriptor stays
open until SQLite has closed the file, as closing any descriptor of a file lets
go of the process's ``fcntl`` locks on it.
Readers (``verify``, ``backup``) take no lock: SQLite's WAL lets them read a
consistent snapshot beside the writer. The file is left in place when the store
closes (removing it would race with the next server taking it).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from server.store.files import LOCK_SUFFIX, OWNER_ONLY, private_dir, side_path


class DatabaseInUse(OSError):
    """Another server holds the database."""


class DatabaseHardLinked(OSError):
    """The database file has another name (a hard link), which would take another lock."""


class DatabaseLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self._held: int | None = None  # the database file's own descriptor (``hold``)
        self.path = path

    @classmethod
    def acquire(cls, db: Path) -> DatabaseLock:
        real = Path(os.path.realpath(db))
        path = side_path(real, LOCK_SUFFIX)
        try:
            private_dir(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, OWNER_ONLY)
        except OSError as exc:  # a read-only mount, a full disk, a folder not ours
            raise _cannot_lock(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"server pid {holder}" if holder.isdigit() else "another server"
            raise DatabaseInUse(
                f"database {db} is in use by {who} (lock {path}); "
                "stop it first, or give this server another --db"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: say which file, and let the lock go
            os.close(fd)
            raise _cannot_lock(path, exc) from None
        try:
            problem = _other_names(db, real)  # under the lock: a refusal lets it go
        except BaseException:
            os.close(fd)
            raise
        if problem is not None:
            os.close(fd)
            raise DatabaseHardLinked(problem)
        return cls(fd, path)

    def hold(self, db: Path) -> None:
        """Take the database file itself too (made owner-only if there is none yet):
        a second server whose lock file was made anew is refused here. Called once
        this lock is held, before SQLite opens the file."""
        real = os.path.realpath(db)
        fd = os.open(real, os.O_RDONLY | os.O_CREAT, OWNER_ONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _flock_holder(os.fstat(fd))
            os.close(fd)
            who = f"server pid {holder}" if holder else "another server"
            raise DatabaseInUse(
                f"database {db} is in use by {who}, which holds the file itself: its lock "
                f"file {self.path} was removed or replaced while it ran; stop that server "
                "first (its next start makes the lock file again), or give this server "
                "another --db"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._held = fd

    def release(self) -> None:
        """Let go of both (after SQLite has closed the database)."""
        if self._held is not None:
            os.close(self._held)
            self._held = None
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _flock_holder(st: os.stat_result) -> str | None:
    """The pid holding a ``flock`` on the file ``st`` describes, from ``/proc/locks``
    (``1: FLOCK ADVISORY WRITE 4242 fd:01:123456 0 EOF``), or None."""
    inode = f":{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(inode):
                    major, minor = (int(part, 16) for part in fields[5].split(":")[:2])
                    if os.makedev(major, minor) == st.st_dev and fields[4].isdigit():
                        return fields[4]
    except (OSError, ValueError):
        return None
    return None


def _other_names(db: Path, real: Path) -> str | None:
    """Why the database file ``real`` (``db`` as given) is refused for having more
    than one name (hard links), in words, or None: one name, or no file yet."""
    try:
        names = os.stat(real).st_nlink
    except FileNotFoundError:  # a first start: SQLite makes the file under this name
        return None
    if names <= 1:
        return None
    file = f"{db}" if Path(os.path.abspath(db)) == real else f"{db} (file {real})"
    return (
        f"database {file} has {names} names (hard links): refusing it, as SQLite keeps "
        "its log (-wal, -shm) beside the name it opens, so two servers on two names "
        "would each keep its own and corrupt the database. Remove every name but the one "
        "its other files are named after (NAME.secret-key, NAME.ledger-head; "
        f"find / -samefile {real} lists the names), or start this server on a copy "
        "made with python -m server backup"
    )


def _cannot_lock(path: Path, exc: OSError) -> OSError:
    """The refusal of a start whose lock file cannot be made or written, in words
    (``[Errno 30] Read-only file system: '...lock'`` said neither what nor why)."""
    words = (exc.strerror or str(exc)).lower()
    return OSError(
        f"cannot lock the database: its lock file {path} cannot be written ({words}); "
        "if its disk is full or read-only, mend that and start again"
    )
