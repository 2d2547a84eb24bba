"""Real servers for tests: in a thread of this process, or as a child process.

Both listen on 127.0.0.1 port 0 and use the test clock, so tests talk to a
real gRPC server over a real channel and move time without sleeping.

``db`` is a SQLite file or a PostgreSQL URL (a fresh database of the run's
PostgreSQL, ``tests/pg.py``; the ``database`` fixture gives either, see
``tests/conftest.py``). On PostgreSQL a server starts as a standby and is
elected at once (alone on its database); both wait until it answers as the
active server, and keep their secrets (signing keys, a made admin token) in a
directory of the database's own (``secrets_dir``), never in the repository.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import TesseraServer
from server.config import Config, parse_instant
from server.domain.products import Platform
from server.engine import Engine
from server.listen import SERVICE_NAMES
from server.loops import loop_factory

ADMIN_TOKEN = "tsa_test-admin-token"
BACKENDS = ["sqlite", "postgres"]  # the stores the wire tests run on (tests/conftest.py)
T0 = "2026-01-01T00:00:00Z"
REPO = Path(__file__).resolve().parent.parent
# Where the servers of a test on PostgreSQL keep their secret files: one directory per
# database (so a restart finds the same keys), removed with it (``forget_secrets``).
SECRETS = Path(tempfile.gettempdir()) / "tessera-test-secrets"
# Leader leases on PostgreSQL (seconds). A child process may be killed (-9) and started
# again on the same database: the new one is a standby until the dead one's lease runs out.
THREAD_LEASE = 60.0
PROCESS_LEASE = "2"


def secrets_dir(db: Path | str) -> Path:
    """The secrets directory of the servers on ``db``: beside a SQLite file (as
    in production), or the PostgreSQL database's own under ``SECRETS``."""
    if isinstance(db, Path):
        return db.parent
    name = db.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return SECRETS / name


def forget_secrets(db: Path | str) -> None:
    if isinstance(db, str):
        shutil.rmtree(secrets_dir(db), ignore_errors=True)


async def until_serving(target: str) -> None:
    """Return once the server at ``target`` reports SERVING for every service
    (health Watch streams each change: no polling). A server on PostgreSQL
    reports it only once elected, loaded and caught up (RULES H1)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing lacks Watch
        # The server sets "" first and the last service last: SERVING there is SERVING everywhere.
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAMES[-1])
        async for answer in stub.Watch(request):
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
    raise RuntimeError(f"{target} ended its health stream before SERVING")


class SecondsClock:
    """A monotonic clock in seconds that moves only when the test moves it
    (``clock.t += 3``): for code that takes a ``now`` callable."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(target: str) -> int:
    """``target``'s overall health, by one Check."""
    with grpc.insecure_channel(target) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing lacks Check
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status)


def wait_for(target: str, status: int, timeout: float = 10.0) -> float:
    """Seconds until ``target``'s health is ``status`` (fails past ``timeout``)."""
    start = time.monotonic()
    while True:
        try:
            if health(target) == status:
                return time.monotonic() - start
        except grpc.RpcError as exc:  # a check slower than its 2 s (a busy machine): again
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        assert time.monotonic() - start < timeout, f"{target} not {status} within {timeout} s"
        time.sleep(0.05)


STOP_JOIN = 30  # seconds a stopped server's loop thread may take to return


class ServerThread:
    """A TesseraServer running on its own event loop in a background thread."""

    def __init__(self, db: Path | str, *, test_clock: str | None = T0, **overrides: Any) -> None:
        # One process unless a test asks for the front (tests/test_front_process.py and
        # those parametrized over it): what it hands over is the same gate's call, and
        # a front per server thread is an interpreter's start each. `python -m server`
        # in the tests' subprocesses runs the default, as an operator's does.
        overrides.setdefault("front_process", False)
        if isinstance(db, str):
            overrides.setdefault("secrets_dir", secrets_dir(db))
            # Alone on its database and stopped cleanly (which resigns), it never needs a
            # short lease; a long one keeps a loop that a big call holds for seconds on a
            # loaded machine from losing its place mid-test.
            overrides.setdefault("leader_lease", THREAD_LEASE)
        self.config = Config(
            listen="127.0.0.1:0",
            db=db,
            admin_token=ADMIN_TOKEN,
            test_clock=parse_instant(test_clock) if test_clock else None,
            log_format="json",
            **overrides,
        )
        self.server = TesseraServer(self.config)
        self.loop = loop_factory(self.config.event_loop)()  # uvloop, as `python -m server`
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (to reach the engine directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        if self.config.postgres:  # a standby until its election, at once when alone
            try:
                self.call(self._elected())
            except BaseException:
                self.stop()
                raise
        return self

    async def _elected(self, timeout: float = 30) -> None:
        """Wait until the server answers as the active one; a term that could
        not begin (a refused start: the clock mode...) raises what refused it."""
        serving = asyncio.ensure_future(until_serving(self.target))
        failed = asyncio.ensure_future(self.server.failed.wait())
        done, _ = await asyncio.wait(
            (serving, failed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in (serving, failed):
            waiter.cancel()
        if self.server.failure is not None:
            raise self.server.failure
        if serving not in done:
            raise TimeoutError(f"{self.target} was not elected within {timeout} s")
        serving.result()

    def stop(self) -> None:
        try:
            self.call(self.server.stop(grace=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            # Closed only once its thread has left ``run_forever``: uvloop's close
            # while that thread was still on its way out (a loaded host, 10 s) hung
            # both threads until the run's timeout ended the worker (CI, stop 66).
            self._thread.join(STOP_JOIN)
            if self._thread.is_alive():
                raise RuntimeError(f"the server's loop did not stop within {STOP_JOIN} s")
            self.loop.close()


def _reading() -> threading.Event:
    reading = threading.Event()
    reading.set()
    return reading


@dataclass
class ServerProcess:
    """``python -m server`` as a child process, as an operator would run it."""

    db: Path | str
    test_clock: str | None = T0
    extra: list[str] = field(default_factory=list)
    #: None: no ``--admin-token``, so the server makes one and keeps it beside the database.
    admin_token: str | None = ADMIN_TOKEN
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    #: The log event that says the port is bound ("standby": a server on PostgreSQL, RULES H1).
    ready: tuple[str, ...] = ("serving",)
    #: Bytes past which no file of the server's may grow (RLIMIT_FSIZE): a disk that fills.
    file_size_limit: int | None = None
    #: Cleared, the test stops reading the server's output (a log reader that pauses).
    reading: threading.Event = field(default_factory=_reading)
    #: The reader clears ``reading`` itself once it has read a line with this event: it
    #: pauses right there, every line before read (``pause_reading_after``).
    pause_after: str | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(self.db),
            "--log-format",
            "json",
        ]
        if isinstance(self.db, str):  # `extra` may say otherwise: the last flag wins
            args += ["--secrets-dir", str(secrets_dir(self.db)), "--leader-lease", PROCESS_LEASE]
        args += self.extra
        if self.admin_token is not None:
            args += ["--admin-token", self.admin_token]
        if self.test_clock:
            args += ["--test-clock", self.test_clock]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        limit = self.file_size_limit
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=None if limit is None else functools.partial(_limit_file_size, limit),
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            raw = self.proc.stdout.readline()
            if not raw:
                raise RuntimeError(f"server exited with {self.proc.wait()}")
            line = json.loads(raw)
            self.lines.append(line)
            if line.get("event") in self.ready:
                self.port = int(line["port"])
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        raise TimeoutError("server did not start")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while self.reading.wait() and (raw := self.proc.stdout.readline()):
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"raw": raw.decode(errors="replace")}
            wanted = self.pause_after
            if wanted is not None and isinstance(line, dict) and line.get("event") == wanted:
                self.pause_after = None
                self.reading.clear()
            self.lines.append(line)

    def pause_reading_after(self, event: str) -> None:
        """Stop reading the server's output once the line with ``event`` is read (a log
        reader that pauses); ``reading.set()`` reads on. Clearing ``reading`` from the
        test instead would leave unread whatever the reader had not reached yet."""
        self.pause_after = event

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self._reap(timeout)

    def wait(self, timeout: float = 30) -> int:
        """The exit code of a server that ends by itself."""
        return self._reap(timeout)

    def kill(self) -> int:
        assert self.proc is not None
        self.proc.kill()
        return self._reap(10)

    def _reap(self, timeout: float) -> int:
        """Wait for the exit, read the output to its end, close the pipe."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            drainer.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def _limit_file_size(size: int) -> None:
    """In a child, before exec. Python ignores SIGXFSZ, so a write past the limit
    fails with EFBIG, as one on a full disk fails with ENOSPC."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def no_room() -> None:
    """``preexec_fn`` of a child on a disk with no room for one more byte."""
    _limit_file_size(0)


@contextmanager
def running(db: Path | str, **kw: Any) -> Iterator[ServerThread]:
    srv = ServerThread(db, **kw).start()
    try:
        yield srv
    finally:
        srv.stop()


def instant(text: str) -> datetime:
    return parse_instant(text)


async def entitle_on_engine(
    engine: Engine, user_id: str, product_id: str, request_id: str = "", device_id: str = "d1"
) -> str:
    """``user_id`` opens ``product_id`` (version 2026, Windows) on ``device_id``
    through the engine, no gRPC; the new session's id."""
    view = await engine.sessions.entitle(
        user_id,
        product_id=product_id,
        product_version="2026",
        platform=Platform.WINDOWS,
        device_id=device_id,
        parent_session_id="",
        request_id=request_id,
        takeover=False,
        team_id="",
    )
    return view.session.session_id


def run_python(program: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -c program`` in a fresh interpreter of the venv, from the repository,
    its output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
