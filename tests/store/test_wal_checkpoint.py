"""The WAL is copied into the database file beside the writer, not inside its
commits (server/store/wal.py; docs/performance.md, "Idle's p99 tail")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.store.sqlite import Store
from server.store.wal import WRITER_PAGES, WalCheckpointer
from tests.store.test_sqlite_write import _session


def _rows_in_file_alone(path: Path) -> int:
    """The table's rows as the database file holds them, the log ignored (immutable=1)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def test_a_checkpointer_pass_copies_every_committed_frame_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer copies
    writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    checkpointer = WalCheckpointer(path, "FULL", every=3600)  # passes only when asked
    try:
        checkpointer.checkpoint()
        writer.executemany("INSERT INTO t VALUES (?, ?)", ((i, "x" * 100) for i in range(500)))
        assert _rows_in_file_alone(path) == 0  # committed, but still only in the log
        frames, copied = checkpointer.checkpoint()
        assert frames > 0 and copied == frames
        assert _rows_in_file_alone(path) == 500
        # The writer is never blocked by it: it goes on writing, and the next pass copies that.
        writer.execute("INSERT INTO t VALUES (500, 'y')")
        frames, copied = checkpointer.checkpoint()
        assert copied == frames
        assert _rows_in_file_alone(path) == 501
    finally:
        checkpointer.stop()
        writer.close()


async def test_the_store_checkpoints_beside_its_writer_and_stops_at_close(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    try:
        rows = await store.query("PRAGMA wal_autocheckpoint")
        assert int(rows[0][0]) == WRITER_PAGES  # the writer's own, now only a bound
        wal = store._wal
        assert wal is not None and wal._thread.is_alive()
        await store.commit([_session(i) for i in range(300)])
        frames, copied = wal.checkpoint()
        assert frames > 0 and copied == frames
    finally:
        await store.close()
    assert not wal._thread.is_alive()
    assert not path.with_name("s.db-wal").exists() or path.with_name("s.db-wal").stat().st_size == 0
    reopened = await Store.open(path)
    try:
        assert len((await reopened.load()).of(type(_session(0)))) == 300
    finally:
        await reopened.close()


async def test_a_memory_store_has_no_checkpointer() -> None:
    store = await Store.open(":memory:")
    try:
        assert store._wal is None
    finally:
        await store.close()
