"""grpc.health.v1 as ``server/api/health.py`` serves it: the stock answers, and Watch
streams that end (OK) when the server stops, after saying NOT_SERVING."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from server.api.health import Health

R = health_pb2.HealthCheckResponse


class FakeContext:
    """What a handler's context does for health: writes, and abort."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.wrote = asyncio.Event()

    async def write(self, message: Any) -> None:
        await asyncio.sleep(0)  # a write takes a turn of the loop, as on the wire
        self.written.append(message.status)
        self.wrote.set()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise grpc.RpcError(code)


async def _until(done: Any) -> None:
    """Turns of the loop (at most 100) until ``done()``: the watchers have run."""
    for _ in range(100):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("never")


def _request(service: str = "") -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


async def test_health_check_answers_set_statuses_and_refuses_unknown_services() -> None:
    health = Health()
    assert (await health.Check(_request(), FakeContext())).status == R.SERVING
    await health.set("tessera.v1.AdminService", R.NOT_SERVING)
    reply = await health.Check(_request("tessera.v1.AdminService"), FakeContext())
    assert reply.status == R.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        await health.Check(_request("nope"), FakeContext())
    assert info.value.args == (grpc.StatusCode.NOT_FOUND,)


async def test_health_watch_follows_changes_and_ends_at_close_after_not_serving() -> None:
    health = Health()
    context, unknown = FakeContext(), FakeContext()
    watch = asyncio.ensure_future(health.Watch(_request(), context))
    other = asyncio.ensure_future(health.Watch(_request("later"), unknown))
    await context.wrote.wait()
    await health.set("later", R.SERVING)
    await _until(lambda: unknown.written[-1:] == [R.SERVING])
    await health.set("", R.NOT_SERVING)
    await health.set("", R.SERVING)
    await health.close()  # returns once every stream has ended
    assert watch.done() and other.done()
    assert context.written[0] == R.SERVING and context.written[-1] == R.NOT_SERVING
    assert unknown.written == [R.SERVICE_UNKNOWN, R.SERVING, R.NOT_SERVING]
    await health.set("", R.SERVING)  # after a shutdown: ignored
    assert (await health.Check(_request(), FakeContext())).status == R.NOT_SERVING
