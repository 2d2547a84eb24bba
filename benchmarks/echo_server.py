"""The ceiling ``make bench`` compares Tessera against: a bare grpc.aio server.

It answers the four ``tessera.v1.LicensingService`` method paths with a canned
response of the same size as Tessera's, and does nothing else: no
deserialization (requests arrive as bytes), no credential check, no logging,
no state. Whatever Tessera spends per call beyond this shows up as a lower
ratio in ``benchmarks/bench.py``.

The canned responses are either read from ``--responses FILE`` (JSON
``{"Heartbeat": "<hex of a serialized HeartbeatResponse>", ...}``, which the
benchmark captures from the Tessera run) or synthesized: a ``Session`` with
every field set the way Tessera sets it.

It runs on the loop Tessera runs on, uvloop (``server/loops.py``), unless
``--event-loop asyncio`` says otherwise: the ceiling is the fastest thing grpc.aio
does here, so a loop that speeds Tessera up must speed the echo up too.

``--durable-idle KIND --durable-path PATH`` makes a second ceiling, for Idle
alone: the echo answers the rest at once, and an Idle only once its request is
on disk, by a plain durable write of the KIND chosen, as many Idles a sync as
came while the last one ran:

- ``sqlite``: inserted, on a thread of its own (as aiosqlite does), into a
  table of a WAL database at PATH with ``synchronous=FULL`` (Tessera's
  default);
- ``file``: written into PATH on the loop (over blocks written once at the
  start), then ``fdatasync`` on a thread;
- ``file-process``: the same, with the ``fdatasync`` in a process of its own
  that the loop asks and hears back from through pipes.

Nothing else: no state, no other row. What it takes over the bare echo's
Idle p99 is what storing an Idle the plain way costs here (not a floor:
docs/performance-log.md, "An echo that stores its Idles").

Run: ``python -m benchmarks.echo_server --listen 127.0.0.1:0``; it prints one
JSON line ``{"event": "serving", "port": N}`` on stdout once it listens and
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from benchmarks.sync_latency import FILE_BYTES, prewrite
from client_sdk.load.stats import percentile
from server.config import Config
from server.loops import EVENT_LOOPS, loop_factory
from tessera_api.tessera.v1 import common_pb2
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

SERVICE = "tessera.v1.LicensingService"
METHODS = ("Entitle", "Heartbeat", "Idle", "Release")


def synthetic_session(
    state: common_pb2.SessionState = common_pb2.SESSION_STATE_ACTIVE,
) -> common_pb2.Session:
    """A session shaped like Tessera's (ids, an e-mail user id, every time set)."""
    now = 1_800_000_000

    def ts(s: int) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp(seconds=s, nanos=123_456_000)

    return common_pb2.Session(
        session_id="ses_01jq8x3k2m0000a1b2c3d4e5f",
        user_id="load-user-000042@example.com",
        team_id="load-0123456789",
        product_id="LOAD0123456789",
        product_version="2026.1",
        platform=common_pb2.PLATFORM_WINDOWS,
        device_id="load-0123456789-000042",
        state=state,
        coverage=common_pb2.COVERAGE_TOKENS,
        plan=common_pb2.PLAN_STANDARD,
        daily_rate=1,
        charge_state=common_pb2.CHARGE_STATE_GRACE,
        start_time=ts(now),
        grace_end_time=ts(now + 300),
        lease_expire_time=ts(now + 86_400),
        heartbeat_interval=duration_pb2.Duration(seconds=300),
        team_available_tokens=399_999,
    )


def synthetic_responses() -> dict[str, bytes]:
    live = synthetic_session()
    idle = synthetic_session(common_pb2.SESSION_STATE_IDLE)
    ended = synthetic_session(common_pb2.SESSION_STATE_ENDED)
    ended.end_reason = common_pb2.END_REASON_RELEASED
    ended.charge_state = common_pb2.CHARGE_STATE_NONE
    ended.end_time.CopyFrom(ended.start_time)
    return {
        "Entitle": lic.EntitleResponse(session=live).SerializeToString(),
        "Heartbeat": lic.HeartbeatResponse(session=live).SerializeToString(),
        "Idle": lic.IdleResponse(session=idle).SerializeToString(),
        "Release": lic.ReleaseResponse(session=ended).SerializeToString(),
    }


def load_responses(path: Path | None) -> dict[str, bytes]:
    """Synthesized responses, overridden by those captured in ``path``."""
    responses = synthetic_responses()
    if path is not None:
        captured: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        for method, hexed in captured.items():
            if method in responses and hexed:
                responses[method] = bytes.fromhex(hexed)
    return responses


DURABLE_KINDS = ("sqlite", "file", "file-process")


class DurableLog:
    """Group commit at its leanest: ``write(record)`` returns once ``record`` is on
    disk, and every record that came while one sync ran shares the next one."""

    def __init__(self, kind: str, path: Path) -> None:
        self._kind = kind
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="durable-idle")
        self._helper: subprocess.Popen[bytes] | None = None
        self._answer: asyncio.Future[None] | None = None
        self.syncs = 0
        self.seconds: list[float] = []  # each sync's, from the loop's side
        if kind == "sqlite":
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS idle (request BLOB NOT NULL)")
            return
        # The records go round a file written once first, as SQLite's WAL is
        # written over once checkpointed.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        prewrite(self._fd)
        self._offset = 0
        if kind == "file-process":
            # The sync in a process of its own: neither this process's GIL nor a
            # thread's return to Python on the way (the loop reads its answer).
            self._helper = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "benchmarks.echo_server", "--sync-helper", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    def _sqlite_commit(self, records: list[bytes]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO idle (request) VALUES (?)", [(r,) for r in records])
        self._db.execute("COMMIT")

    def write(self, record: bytes) -> Awaitable[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._kind != "sqlite":  # on the loop; the sync makes it durable
            if self._offset + len(record) > FILE_BYTES:
                self._offset = 0
            os.pwrite(self._fd, record, self._offset)
            self._offset += len(record)
        self._pending.append((record, done))
        if self._writer is None:
            self._writer = loop.create_task(self._run())
        return done

    async def _sync(self, records: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._kind == "sqlite":
            await loop.run_in_executor(self._thread, self._sqlite_commit, records)
        elif self._helper is None:
            await loop.run_in_executor(self._thread, os.fdatasync, self._fd)
        else:
            assert self._helper.stdin is not None and self._helper.stdout is not None  # noqa: S101
            out = self._helper.stdout.fileno()
            self._answer = loop.create_future()
            loop.add_reader(out, self._answered, out)
            os.write(self._helper.stdin.fileno(), b"s")
            await self._answer

    def _answered(self, out: int) -> None:
        asyncio.get_running_loop().remove_reader(out)
        os.read(out, 1)
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                began = time.perf_counter()
                try:
                    await self._sync([r for r, _ in batch])
                except Exception as exc:  # the Idles fail (UNKNOWN), none is answered OK
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                self.seconds.append(time.perf_counter() - began)
                self.syncs += 1
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writer = None

    def close(self) -> None:
        """Let go of the file or database, the thread and the helper (which stops
        once its pipe closes)."""
        self._thread.shutdown()
        if self._kind == "sqlite":
            self._db.close()
            return
        os.close(self._fd)
        if self._helper is not None:
            with self._helper:  # closes its pipes, then waits for it
                pass


def sync_helper(path: str) -> int:
    """``--sync-helper PATH``: for each byte read, ``fdatasync`` PATH, then answer one."""
    fd = os.open(path, os.O_WRONLY)
    seconds = []
    while os.read(0, 1):
        began = time.perf_counter()
        os.fdatasync(fd)
        seconds.append(time.perf_counter() - began)
        os.write(1, b"k")
    print(json.dumps({"event": "helper stopped", "fdatasync_ms": spread(seconds)}), file=sys.stderr)
    return 0


def spread(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and the longest of ``seconds``, in ms."""
    ordered = sorted(seconds)
    return {
        f"p{p}" if p < 100 else "max": round(percentile(ordered, p) * 1000, 2)
        for p in (50, 99, 100)
    }


def method_handlers(
    responses: dict[str, bytes], durable: DurableLog | None = None
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    def canned(body: bytes) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return body

        # No (de)serializers: the request stays bytes and the body goes out as is.
        return grpc.unary_unary_rpc_method_handler(answer)

    def stored(body: bytes, log: DurableLog) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            await log.write(request)
            return body

        return grpc.unary_unary_rpc_method_handler(answer)

    handlers = {m: canned(responses[m]) for m in METHODS}
    if durable is not None:
        handlers["Idle"] = stored(responses["Idle"], durable)
    return handlers


async def serve(listen: str, responses: dict[str, bytes], durable: DurableLog | None) -> None:
    # The same channel options as Tessera's server (server/app.py), nothing more.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    # Mounted as generated code mounts a service, generic and registered: each method then
    # has its own queue of calls waiting to be taken in, as Tessera's session calls do
    # (server/ha/gate.py, Gate.register).
    handlers = method_handlers(responses, durable)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"could not listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sizes = {m: len(b) for m, b in responses.items()}
    print(json.dumps({"event": "serving", "port": port, "response_bytes": sizes}), flush=True)
    await stop.wait()
    await server.stop(grace=1.0)
    if durable is not None:
        durable.close()
        done = {"event": "stopped", "idle_syncs": durable.syncs, "sync_ms": spread(durable.seconds)}
        print(json.dumps(done), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo_server", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--responses", type=Path, help="JSON of hex-encoded responses per method")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default=Config.event_loop)
    p.add_argument(
        "--durable-idle", choices=DURABLE_KINDS, help="answer an Idle once stored (see above)"
    )
    p.add_argument("--durable-path", type=Path, help="the file or database --durable-idle writes")
    p.add_argument("--sync-helper", help=argparse.SUPPRESS)  # file-process's helper
    a = p.parse_args(argv)
    if a.sync_helper:
        return sync_helper(a.sync_helper)
    if a.durable_idle and a.durable_path is None:
        p.error("--durable-idle needs --durable-path")
    try:
        durable = DurableLog(a.durable_idle, a.durable_path) if a.durable_idle else None
        with asyncio.Runner(loop_factory=loop_factory(a.event_loop)) as runner:
            runner.run(serve(a.listen, load_responses(a.responses), durable))
    except OSError as exc:
        print(f"echo_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
