"""SQLite's WAL copied into the database file beside the writer, not inside its commits.

SQLite copies the write-ahead log into the database file inside the commit
that takes the log past ``wal_autocheckpoint`` pages (1,000 by default): that
commit writes the pages and syncs the file while every call of its group
waits. At 100,000 users most heartbeat flushes cross the line, and such
commits took 0.1 to 1 s (docs/performance.md, "Idle's p99 tail").

So a connection of its own, on a thread of its own, checkpoints every
``every`` seconds, PASSIVE: it copies what the writer has committed without
waiting for it, and the writer never waits for it. The writer's own automatic
checkpoint stays, at ``WRITER_PAGES``. A checkpoint beside a busy writer rarely
ends exactly at the log's last frame, and SQLite restarts the log only then,
so without it the log could grow without a bound. The writer's checkpoint at
that bound finds nearly every page already copied and synced, so it is short.

Nothing about durability changes: a committed frame in the log is as durable
as a page in the file (the log is synced at each commit, ``synchronous=FULL``),
and the copy is SQLite's own checkpoint with the writer's synchronous mode.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

log = structlog.get_logger()

#: The writer's own automatic checkpoint, in pages of the log (SQLite's default: 1,000).
WRITER_PAGES = 10_000
#: Seconds between the checkpointer's passes.
EVERY = 0.5


class WalCheckpointer:
    """Checkpoints ``path``'s log every ``every`` seconds on its own connection."""

    def __init__(self, path: Path, synchronous: str, every: float = EVERY) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous={synchronous}").close()
        self._every = every
        self._lock = threading.Lock()  # one pass at a time: the thread's or a test's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        #: Passes made, and (log frames, frames copied) as the last one left them.
        self.passes = 0
        self.last: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._thread.start()

    def checkpoint(self) -> tuple[int, int]:
        """One PASSIVE pass: (frames in the log, frames copied into the file)."""
        with self._lock:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.passes += 1
            self.last = (int(row[1]), int(row[2]))
            return self.last

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.checkpoint()
            except sqlite3.Error:
                # The writer's own checkpoint (WRITER_PAGES) still bounds the log.
                log.warning("wal_checkpoint_failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._conn.close()
