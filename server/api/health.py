"""grpc.health.v1, with Watch streams that end when the server stops.

grpcio-health-checking's asyncio servicer keeps every Watch stream open until
the server is stopped, and a stop waits out its grace period for calls under
way: one monitor watching (or a client with gRPC's own health checking) held
every SIGTERM for the whole ``--shutdown-grace``, then saw UNAVAILABLE. That
servicer has no way to end them, so this one is its equal with that added
(the same answers: NOT_FOUND from Check for an unknown service,
SERVICE_UNKNOWN on a Watch of one, every status change sent, a graceful
shutdown that makes everything NOT_SERVING for good): ``close``, once a
stopping server has said NOT_SERVING, ends each stream with OK after it has
sent that, and the stop then waits only for the calls that are Tessera's.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, TypeAlias, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status: TypeAlias = int  # a HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
CLOSE_TIMEOUT = 2.0  # seconds the streams have to say NOT_SERVING and end


class Health(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False
        self._closed = False
        self._watches: set[asyncio.Task[Any]] = set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        me = cast(asyncio.Task[Any], asyncio.current_task())  # a handler runs in a task
        self._watches.add(me)
        try:
            await self._watch(request, context)
        finally:
            self._watches.discard(me)

    async def _watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        sent: Status | None = None
        while True:
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != sent:  # only the latest of several changes: the peer wants that
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
                continue  # it may have changed (or closed) while that was written
            if self._closed:
                return  # OK: the server stops, and this stream has said so
            async with self._changed:
                await self._changed.wait_for(partial(self._moved, request.service, sent))

    def _moved(self, service: str, sent: Status) -> bool:
        return self._closed or self._status.get(service, SERVICE_UNKNOWN) != sent

    async def set(self, service: str, status: Status) -> None:
        """The status of ``service`` ("" for the whole server); ignored once shutting down."""
        if not self._shutting_down:
            await self._change(lambda: self._status.__setitem__(service, status))

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good."""
        self._shutting_down = True
        await self._change(lambda: self._status.update(dict.fromkeys(self._status, NOT_SERVING)))

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """NOT_SERVING for good, and every Watch stream ends once it has sent that: this
        returns when they have (a peer that reads nothing may hold one up to
        ``timeout`` seconds), before the server stops taking calls."""
        await self.enter_graceful_shutdown()
        await self._change(lambda: setattr(self, "_closed", True))
        if self._watches:
            await asyncio.wait(set(self._watches), timeout=timeout)

    async def _change(self, change: Any) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()
