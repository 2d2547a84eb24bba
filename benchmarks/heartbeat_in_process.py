"""A Heartbeat's own cost, without gRPC: what Tessera adds on the event loop's thread.

Starts a real server in this process (a throwaway SQLite database, the user rate
limit off), opens one session through gRPC, then calls the Heartbeat handler the
gate hands gRPC (gate, edge, servicer, engine, answer, lease) directly with a
stand-in context: the request parsed and the answer serialized as gRPC would,
``--in-flight`` calls at a time (64, as under ``h2load_heartbeat``, so leases are
signed in batches). It prints the event loop thread's CPU per call for each
round, then an ``INPROC`` line with the best round.

Under h2load a server's loop thread is saturated, so its calls per second follow
its CPU per call; this is the part of that CPU a change to Tessera's Python can
move (issue 17: ``docs/performance.md``, "Where a Heartbeat's time goes").

Run: ``.venv/bin/python -m benchmarks.heartbeat_in_process [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.h2load_heartbeat import open_session
from server import logs
from server.app import TesseraServer
from server.config import parse_args as server_args

HEARTBEAT = "/tessera.v1.LicensingService/Heartbeat"


class Context:
    """What the handlers ask of grpc.aio's ServicerContext on a call that succeeds."""

    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"), ("user-agent", "in-process"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: Any, details: str = "", *rest: Any) -> None:
        raise RuntimeError(f"the Heartbeat failed: {code} {details}")

    def code(self) -> None:
        return None


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def measure(calls: int, in_flight: int, rounds: int) -> list[float]:
    """CPU seconds of this thread per Heartbeat, for each round."""
    with tempfile.TemporaryDirectory(prefix="tessera-inproc-") as tmp:
        token = "tsa_" + secrets.token_urlsafe(24)
        cfg = server_args(
            [
                *("--listen", "127.0.0.1:0", "--db", str(Path(tmp) / "t.db")),
                *("--admin-token", token, "--user-rate-limit", "0", "--log-format", "json"),
            ]
        )
        logs.configure(cfg.log_format, "warning")
        server = TesseraServer(cfg)
        port = await server.start()
        try:
            key, body = await open_session(f"127.0.0.1:{port}", token)
            gate, context, details = server.gate, Context(key), Details(HEARTBEAT)

            async def nothing(_: Any) -> None:
                return None

            async def one() -> bytes:
                handler: Any = await gate.intercept_service(nothing, details)
                answer = await handler.unary_unary(handler.request_deserializer(body), context)
                out: bytes = handler.response_serializer(answer)
                return out

            per_call = []
            for _ in range(rounds):
                began = time.thread_time()
                for _ in range(calls // in_flight):
                    await asyncio.gather(*(one() for _ in range(in_flight)))
                per_call.append((time.thread_time() - began) / (calls // in_flight * in_flight))
            return per_call
        finally:
            await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.heartbeat_in_process", description=__doc__
    )
    p.add_argument("--calls", type=int, default=32_000, help="Heartbeats a round")
    p.add_argument("--in-flight", type=int, default=64, help="calls awaited together")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    if a.calls < a.in_flight or a.in_flight < 1 or a.rounds < 1:
        p.error("--calls must be at least --in-flight, and both and --rounds at least 1")
    per_call = asyncio.run(measure(a.calls, a.in_flight, a.rounds))
    for i, seconds in enumerate(per_call, start=1):
        print(f"round {i}: {seconds * 1e6:.1f} us CPU a Heartbeat (the event loop's thread)")
    print(f"INPROC heartbeat_cpu_us={min(per_call) * 1e6:.1f} in_flight={a.in_flight}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
