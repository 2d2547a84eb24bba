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

Run: ``python -m benchmarks.echo_server --listen 127.0.0.1:0``; it prints one
JSON line ``{"event": "serving", "port": N}`` on stdout once it listens and
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

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


def method_handlers(responses: dict[str, bytes]) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    def canned(body: bytes) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return body

        # No (de)serializers: the request stays bytes and the body goes out as is.
        return grpc.unary_unary_rpc_method_handler(answer)

    return {m: canned(responses[m]) for m in METHODS}


async def serve(listen: str, responses: dict[str, bytes]) -> None:
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
    handlers = method_handlers(responses)
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo_server", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--responses", type=Path, help="JSON of hex-encoded responses per method")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default=Config.event_loop)
    a = p.parse_args(argv)
    try:
        with asyncio.Runner(loop_factory=loop_factory(a.event_loop)) as runner:
            runner.run(serve(a.listen, load_responses(a.responses)))
    except OSError as exc:
        print(f"echo_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
