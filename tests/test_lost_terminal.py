"""README: "Stop it with Ctrl-C, SIGTERM or SIGHUP: it finishes the calls under way,
writes everything out, and exits 0." Also when what it writes to is gone: a terminal
that closed (an ssh session dropped: SIGHUP, then every write fails with EIO) or a
pipe nobody reads any more (a log shipper that died: EPIPE). A log line or the banner
failing to be written left ``run`` before the server stopped; the store's thread, no
daemon, then kept the process, and its database's lock, forever."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO

PY = sys.executable
MODES = pytest.mark.parametrize("mode", ["--no-front-process", "--front-process"])


def _reaped(pid: int, seconds: float) -> int | None:
    """The exit code of child ``pid`` once it has ended, or None after ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    return None


@MODES
@pytest.mark.parametrize("log_format", ["auto", "json"])
def test_sighup_a_server_whose_terminal_closed_stops_and_exits_0(
    tmp_path: Path, log_format: str, mode: str
) -> None:
    db = tmp_path / "t.db"
    pid, fd = pty.fork()
    if pid == 0:  # the server, on the pty as its controlling terminal
        os.chdir(REPO)
        argv = ["--listen", "127.0.0.1:0", "--db", str(db), "--log-format", log_format, mode]
        os.execv(PY, [PY, "-m", "server", *argv])  # noqa: S606 (this interpreter, our module)
    seen = b""
    end = time.monotonic() + 30
    while b"Tessera is serving" not in seen and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 65536)
    assert b"Tessera is serving" in seen, seen
    os.close(fd)  # the terminal closes: SIGHUP, and EIO on every write from now on
    code = _reaped(pid, 40)
    if code is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"still running 40 s after its terminal closed, holding {db}.lock")
    assert code == 0


@MODES
def test_sighup_a_server_whose_log_pipe_has_no_reader_stops_on_sigterm_and_exits_0(
    tmp_path: Path, mode: str
) -> None:
    db = tmp_path / "t.db"
    read, write = os.pipe()
    os.close(read)  # nobody will read what it writes there: EPIPE
    log = tmp_path / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PY,
                "-m",
                "server",
                "--listen",
                "127.0.0.1:0",
                "--db",
                str(db),
                "--log-format",
                "json",
                mode,
            ],
            cwd=REPO,
            stdout=out,
            stderr=write,
        )
    os.close(write)
    try:
        end = time.monotonic() + 30
        while b'"event":"serving"' not in log.read_bytes():
            assert time.monotonic() < end and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
