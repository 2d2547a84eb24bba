"""benchmarks/thread_states.py: where a process's threads are, sampled (docs/performance-log.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from tests.support import REPO


def test_thread_states_sees_a_busy_thread_runnable_and_an_idle_one_asleep() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    def sleep() -> None:
        stop.wait(30)

    busy, idle = threading.Thread(target=spin), threading.Thread(target=sleep)
    busy.start()
    idle.start()
    try:
        time.sleep(0.05)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.thread_states", "--pid", str(os.getpid())),
                *("--seconds", "1", "--rate", "200"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        stop.set()
        busy.join()
        idle.join()
    assert result.stdout.startswith(f"pid {os.getpid()}: ")
    busy_line = next(
        line for line in result.stdout.splitlines() if f"thread {busy.native_id} " in line
    )
    on_core = float(re.search(r"on a core ([\d.]+)", busy_line).group(1))  # type: ignore[union-attr]
    waited = float(re.search(r"waiting for one ([\d.]+)", busy_line).group(1))  # type: ignore[union-attr]
    # It spun for the whole second (the main thread waits for the tool, without the GIL):
    # on a core or waiting for one nearly all of it, however busy the machine (on a
    # core shared with five busy loops it was on it 0.16 of the time).
    assert on_core > 0 and on_core + waited > 0.7, busy_line
    assert "runnable" in busy_line
    # The sleeping thread used no CPU, so it is left out of the listing.
    assert f"thread {idle.native_id} " not in result.stdout


def test_thread_states_says_so_when_no_process_matches() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.thread_states", "--match", "no-such-process-xyz-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no such process" in result.stderr
