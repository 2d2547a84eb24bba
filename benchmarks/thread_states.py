"""Where a server's threads are, sampled: running or runnable, or asleep and on what.

Reads each thread's state and kernel wait channel (``/proc/PID/task/TID/stat``
and ``wchan``) many times a second, and its schedstat (seconds on a core,
seconds runnable but waiting for one) at the start and the end, then prints one
line per thread. A thread runnable in most samples with little time in
``do_epoll_wait`` is saturated even when it runs below one core: it waits for a
core, not for I/O, and a futex wait channel is a lock (the GIL among them).
docs/performance-log.md, "Stop 19: the loop's thread is not idle".

Run beside a benchmark: ``python -m benchmarks.thread_states --pid PID --seconds 10``
(``--match 'server --listen'`` finds the first process whose command line has it).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path


def find(match: str) -> int | None:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if match in command:
            return int(entry.name)
    return None


def thread_schedstat(pid: int, tid: int) -> tuple[float, float] | None:
    """Seconds a thread has run on a core, and waited runnable for one (Linux's
    schedstat); None when it is gone or the kernel keeps no such figures."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(ran) / 1e9, int(waited) / 1e9


def schedstat(pid: int) -> dict[int, tuple[float, float]]:
    """``thread_schedstat`` of each of the process's threads."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        times = thread_schedstat(pid, int(task.name))
        if times is not None:
            out[int(task.name)] = times
    return out


def sample(
    pid: int, seconds: float, rate: float
) -> tuple[collections.Counter[tuple[int, str]], int]:
    """(thread, state or wait channel) counts over ``seconds``, and the number of rounds."""
    counts: collections.Counter[tuple[int, str]] = collections.Counter()
    files: dict[int, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            files[int(task.name)] = (
                os.open(task / "stat", os.O_RDONLY),
                os.open(task / "wchan", os.O_RDONLY),
            )
        except OSError:
            continue
    rounds, end, period = 0, time.monotonic() + seconds, 1 / rate
    try:
        while time.monotonic() < end:
            began = time.monotonic()
            for tid, (stat, wchan) in files.items():
                try:
                    text = os.pread(stat, 4096, 0).decode()
                    state = text[text.rindex(")") + 2]
                    channel = "" if state == "R" else os.pread(wchan, 256, 0).decode()
                    # "S do_epoll_wait": asleep, and where; "0": no wait channel (in the kernel)
                    where = "runnable" if state == "R" else f"{state} {channel}".removesuffix(" 0")
                except OSError:
                    continue
                counts[tid, where] += 1
            rounds += 1
            time.sleep(max(0.0, period - (time.monotonic() - began)))
    finally:
        for stat, wchan in files.values():
            os.close(stat)
            os.close(wchan)
    return counts, rounds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.thread_states", description=__doc__.splitlines()[0]
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid", type=int)
    target.add_argument("--match", help="the first process whose command line contains this")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=400.0, help="samples a second")
    a = p.parse_args(argv)
    pid = a.pid if a.pid is not None else find(a.match)
    if pid is None or not Path(f"/proc/{pid}").exists():
        print("no such process", file=sys.stderr)
        return 1
    before, t0 = schedstat(pid), time.monotonic()
    counts, rounds = sample(pid, a.seconds, a.rate)
    after, wall = schedstat(pid), time.monotonic() - t0
    print(f"pid {pid}: {rounds} samples a thread over {wall:.1f} s")
    for tid in sorted(after):
        ran0, waited0 = before.get(tid, after[tid])
        ran, waited = (after[tid][0] - ran0) / wall, (after[tid][1] - waited0) / wall
        mine = {where: n for (t, where), n in counts.items() if t == tid}
        if ran < 0.005 and not mine.get("runnable"):
            continue  # idle the whole time
        shares = ", ".join(
            f"{where} {n / rounds:.0%}"
            for where, n in sorted(mine.items(), key=lambda kv: -kv[1])[:4]
        )
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        name = "main (the event loop)" if tid == pid else f"thread {tid} ({comm})"
        print(f"{name}: on a core {ran:.2f}, waiting for one {waited:.2f}; {shares}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
