"""A call's own cost, without gRPC: what Tessera adds on the event loop's thread.

Starts a real server in this process (a throwaway SQLite database, the user rate
limit off), opens sessions through gRPC, then calls the handlers the gate hands
gRPC (gate, edge, servicer, engine, answer, lease, store) directly with a
stand-in context: the request parsed and the answer serialized as gRPC would,
``--in-flight`` at a time. ``--rpc heartbeat`` (the default) repeats one
session's Heartbeat, 64 in flight as under ``h2load_heartbeat`` (so leases are
signed in batches); ``--rpc entitle-release`` has each of ``--in-flight`` users
release its session and open a new one, as ``make bench``'s cycle phase does,
with every commit durable (the group commit shares them). The server logs as it
does by default (``--log-level info``: a line per Entitle and Release), into
``/dev/null``. It prints the event loop thread's CPU per call for each round,
then an ``INPROC`` line with the best round. The SQLite thread's work is not
counted: it is the loop's thread that limits a server here.

Under load a server's loop thread is saturated, so its calls per second follow
its CPU per call; this is the part of that CPU a change to Tessera's Python can
move (issue 17: ``docs/performance-log.md``, "Where a Heartbeat's time goes").

Run: ``.venv/bin/python -m benchmarks.in_process [--rpc entitle-release] [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.h2load_heartbeat import open_session
from client_sdk._retry import RetryPolicy
from client_sdk.failover import Targets
from client_sdk.load.provision import provision
from server import logs
from server.app import TesseraServer
from server.config import Config
from server.config import parse_args as server_args
from server.front import CallContext, run_call
from server.loops import EVENT_LOOPS, loop_factory
from tessera_api.tessera.v1 import common_pb2
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

SERVICE = "/tessera.v1.LicensingService/"


def user_context(key: str) -> CallContext:
    """A stand-in for grpc.aio's ServicerContext: a call with user ``key``'s credential."""
    return CallContext((("authorization", f"Bearer {key}"), ("user-agent", "in-process")))


Call = Callable[[str, bytes, CallContext], Awaitable[bytes]]


def caller(server: TesseraServer) -> Call:
    """A call as gRPC makes it: the gate picks the handler, which parses the
    request, answers, and has its answer serialized."""
    gate = server.gate

    async def call(method: str, body: bytes, context: CallContext) -> bytes:
        answer = await run_call(gate, SERVICE + method, body, context)
        if answer is None:
            raise LookupError(f"no method {method}")
        return answer

    return call


class Population:
    """``size`` users of one team, each with a live session, opened through the
    handlers ``in_flight`` at a time."""

    def __init__(self, call: Call, product_id: str, keys: list[str]) -> None:
        self.call = call
        self.product_id = product_id
        self.contexts = [user_context(key) for key in keys]
        self.sessions = [""] * len(keys)
        self._turns = itertools.count()

    def next_turn(self, n: int) -> list[int]:
        """The next ``n`` users, after those of the previous turn, round the population."""
        first = next(self._turns) * n
        return [(first + i) % len(self.sessions) for i in range(n)]

    @classmethod
    async def open(
        cls, server: TesseraServer, target: str, token: str, size: int, in_flight: int
    ) -> Population:
        users = await provision(Targets([target]), RetryPolicy(), token, size)
        crowd = cls(caller(server), users.product_id, [key for _, key in users.users])
        for first in range(0, size, in_flight):
            last = min(first + in_flight, size)
            await asyncio.gather(*(crowd.cycle(i) for i in range(first, last)))
        return crowd

    async def cycle(self, i: int) -> None:
        """User ``i`` releases its session (if any) and opens a new one."""
        if self.sessions[i]:
            release = lic.ReleaseRequest(session_id=self.sessions[i])
            await self.call("Release", release.SerializeToString(), self.contexts[i])
        entitle = lic.EntitleRequest(
            product_id=self.product_id,
            product_version="2026.1",
            platform=common_pb2.PLATFORM_LINUX,
            device_id=f"in-process-{i}",
            request_id=secrets.token_hex(8),
        )
        out = await self.call("Entitle", entitle.SerializeToString(), self.contexts[i])
        self.sessions[i] = lic.EntitleResponse.FromString(out).session.session_id

    async def heartbeat(self, i: int, body: bytes) -> None:
        await self.call("Heartbeat", body, self.contexts[i])


async def heartbeats(
    server: TesseraServer, target: str, token: str, in_flight: int, population: int
) -> Any:
    """Heartbeats, ``in_flight`` at a time: a step is that many calls. With no
    ``population``, all of one session's (as under ``h2load_heartbeat``); with one,
    of that many users' sessions, each in turn (as in ``make bench``'s steady phase)."""
    if population <= 0:
        key, body = await open_session(target, token)
        call, context = caller(server), user_context(key)

        async def one_session() -> int:
            await asyncio.gather(*(call("Heartbeat", body, context) for _ in range(in_flight)))
            return in_flight

        return one_session
    crowd = await Population.open(server, target, token, population, in_flight)
    bodies = [
        lic.HeartbeatRequest(session_id=s, seconds_since_activity=1).SerializeToString()
        for s in crowd.sessions
    ]

    async def step() -> int:
        turn = crowd.next_turn(in_flight)
        await asyncio.gather(*(crowd.heartbeat(i, bodies[i]) for i in turn))
        return in_flight

    return step


async def entitle_release(
    server: TesseraServer, target: str, token: str, in_flight: int, population: int
) -> Any:
    """``population`` users of one team (at least ``in_flight``), each with a
    session; a step is ``in_flight`` of them, the next ones in turn, each releasing
    its session and opening a new one (one Release and one Entitle per user), as in
    ``make bench``'s cycle phase."""
    population = max(population, in_flight)
    crowd = await Population.open(server, target, token, population, in_flight)

    async def step() -> int:
        await asyncio.gather(*(crowd.cycle(i) for i in crowd.next_turn(in_flight)))
        return 2 * in_flight

    return step


RPCS = {"heartbeat": heartbeats, "entitle-release": entitle_release}


async def measure(
    rpc: str, calls: int, in_flight: int, rounds: int, log_level: str, users: int = 0
) -> list[float]:
    """CPU seconds of this thread per call, for each round."""
    with tempfile.TemporaryDirectory(prefix="tessera-inproc-") as tmp:
        token = "tsa_" + secrets.token_urlsafe(24)
        cfg = server_args(
            [
                *("--listen", "127.0.0.1:0", "--db", str(Path(tmp) / "t.db")),
                *("--admin-token", token, "--user-rate-limit", "0", "--log-format", "json"),
            ]
        )
        logs.configure(cfg.log_format, log_level)
        server = TesseraServer(cfg)
        port = await server.start()
        try:
            step = await RPCS[rpc](server, f"127.0.0.1:{port}", token, in_flight, users)
            per_call = []
            for _ in range(rounds):
                began, done = time.thread_time(), 0
                while done < calls:
                    done += await step()
                per_call.append((time.thread_time() - began) / done)
            return per_call
        finally:
            await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.in_process", description=__doc__)
    p.add_argument("--rpc", choices=sorted(RPCS), default="heartbeat")
    p.add_argument("--calls", type=int, default=32_000, help="calls a round")
    p.add_argument("--in-flight", type=int, default=64, help="calls (users) awaited together")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="users with a session, each called in turn (default: one session's heartbeats; "
        "for entitle-release, --in-flight users)",
    )
    p.add_argument("--log-level", default="info", help="the server's (its lines go nowhere)")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default=Config.event_loop)
    a = p.parse_args(argv)
    if a.calls < a.in_flight or a.in_flight < 1 or a.rounds < 1:
        p.error("--calls must be at least --in-flight, and both and --rounds at least 1")
    stdout = sys.stdout
    with open(os.devnull, "w") as sink:
        sys.stdout = sink  # the server's log lines (logs.configure writes to stdout)
        try:
            with asyncio.Runner(loop_factory=loop_factory(a.event_loop)) as runner:
                per_call = runner.run(
                    measure(a.rpc, a.calls, a.in_flight, a.rounds, a.log_level, a.users)
                )
        finally:
            sys.stdout = stdout
    name = a.rpc.replace("-", "_")
    for i, seconds in enumerate(per_call, start=1):
        print(f"round {i}: {seconds * 1e6:.1f} us CPU a call (the event loop's thread)")
    print(f"INPROC {name}_cpu_us={min(per_call) * 1e6:.1f} in_flight={a.in_flight}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
