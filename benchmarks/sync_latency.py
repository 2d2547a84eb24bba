"""How long this disk takes to make a small write durable: the floor under any
call that answers only once stored (an Idle, a Release, an Entitle).

``python -m benchmarks.sync_latency [--rate 80] [--seconds 20] [--dir DIR]``
writes 64 bytes at a time into a file of 16 MiB written and synced once first
(so that, as in SQLite's WAL once checkpointed, a sync has only data to write),
``fdatasync``s it, ``--rate`` times a second for ``--seconds``, and prints

``SYNC n=… p50_ms=… p99_ms=… p99_9_ms=… max_ms=… over_10ms=…``

Run it on a quiet machine, then beside a load (``make bench`` in another shell,
or ``yes > /dev/null`` once per core): what the sync's tail becomes when the
cores are busy, or other writes share the disk, is what a durable call's tail
cannot be under. ``make bench ARGS='--durable-echo file-process'`` measures the
same sync inside the benchmark, in a process of its own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from client_sdk.load.stats import percentile

FILE_BYTES = 16 * 1024 * 1024
RECORD = b"x" * 64


def prewrite(fd: int) -> None:
    """Write ``FILE_BYTES`` of zeros at ``fd`` and sync them: records written over
    them later need no new blocks, so their sync has no metadata to journal (an
    append's would also journal the file's new size)."""
    os.write(fd, bytes(FILE_BYTES))
    os.fsync(fd)


def measure(directory: Path, rate: float, seconds: float) -> list[float]:
    """Each sync's seconds, sorted."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix="sync-latency-") as f:
        fd = f.fileno()
        prewrite(fd)
        took: list[float] = []
        offset = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.pwrite(fd, RECORD, offset)
            offset = (offset + len(RECORD)) % FILE_BYTES
            began = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - began)
            time.sleep(1 / rate)
    return sorted(took)


def sync_line(took: Sequence[float]) -> str:
    def ms(p: float) -> str:
        return f"{percentile(took, p) * 1000:.2f}"

    return (
        f"SYNC n={len(took)} p50_ms={ms(50)} p99_ms={ms(99)} p99_9_ms={ms(99.9)} "
        f"max_ms={ms(100)} over_10ms={sum(1 for t in took if t > 0.010)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sync_latency", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=80.0, help="syncs a second (at most)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    a = p.parse_args(argv)
    if not (0 < a.rate <= 100_000 and 0 < a.seconds <= 3600):
        p.error("--rate must be in (0, 100000] and --seconds in (0, 3600]")
    print(sync_line(measure(a.dir, a.rate, a.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
