"""The suite's backstop for pytest-timeout (``tests/conftest.py``): a test blocked
where SIGALRM's Python handler never runs (uvloop's C wait) must end the run with
every thread's stack, not hang it until CI's limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HUNG = """
import asyncio

from server import loops


def test_waits_for_nothing_in_uvloop():
    async def never():
        await asyncio.get_running_loop().create_future()

    with asyncio.Runner(loop_factory=loops.loop_factory("uvloop")) as runner:
        runner.run(never())


def test_never_reached():
    pass
"""


def test_a_test_hung_in_uvloops_wait_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    hung = tmp_path / "test_hung.py"
    hung.write_text(HUNG)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(ROOT),
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "1",
            "-v",
            str(hung),
        ],
        cwd=ROOT,
        env={**os.environ, "TESSERA_TIMEOUT_BACKSTOP": "1"},
        capture_output=True,
        text=True,
        timeout=120,  # a bound on the hang this test is about, not a speed target
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Timeout (0:00:02)!" in run.stderr  # faulthandler's, at timeout + backstop
    assert "test_waits_for_nothing_in_uvloop" in run.stderr  # the hung test's frame
    assert "test_never_reached" not in run.stdout
