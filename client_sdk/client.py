"""``AsyncClient``: the four LicensingService calls, with retries, deadlines and typed errors.

Most products only need ``client.session(...)`` (``client_sdk.session``); the
plain calls (``entitle``, ``heartbeat``, ``idle``, ``release``) are there for
those who manage sessions themselves.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from client_sdk._retry import RetryPolicy
from client_sdk.clock import Clock, SystemClock
from client_sdk.device import default_device_id, default_platform
from client_sdk.errors import ServerError, TesseraError, from_rpc_error
from client_sdk.models import Platform, Session
from client_sdk.proto.tessera.v1 import licensing_service_pb2 as pb
from client_sdk.proto.tessera.v1 import licensing_service_pb2_grpc as pb_grpc
from client_sdk.session import (
    AsyncSessionHandle,
    ChargeStateCallback,
    EndedCallback,
    LeaseExpiringCallback,
    SessionOptions,
    StateCallback,
)
from client_sdk.transport import TLS, open_channel

log = logging.getLogger("client_sdk")

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AsyncClient:
    """A product's connection to Tessera, for asyncio code.

    ``target`` is ``host:port``; ``user_key`` the user's key, sent on every call as
    ``authorization: Bearer <key>``. ``tls`` is ``False`` (plain), ``True`` (system roots)
    or a ``TLS`` with a root CA and, for mutual TLS, a client certificate and key.
    ``clock`` is where every wait and "how long ago" comes from (``ManualClock`` in tests).
    ``device_id`` and ``platform`` default to this machine's.

    Use it as ``async with AsyncClient(...) as client:`` or call ``await client.close()``.
    """

    def __init__(
        self,
        target: str,
        user_key: str,
        *,
        tls: TLS | bool = False,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        device_id: str | None = None,
        platform: Platform | None = None,
        session_options: SessionOptions | None = None,
        channel_options: Sequence[tuple[str, int | str]] = (),
        rng: random.Random | None = None,
    ) -> None:
        if not user_key:
            raise ValueError("a user key is required")
        self.target = target
        self.retry = retry or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.device_id = device_id or default_device_id()
        self.platform = platform or default_platform()
        self.session_options = session_options or SessionOptions()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._tls = tls
        self._channel_options = tuple(channel_options)
        self._metadata = (("authorization", f"Bearer {user_key}"),)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False
        self._handles: set[AsyncSessionHandle] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the sessions still open (plugins first), then close the channel."""
        for handle in sorted(self._handles, key=lambda h: h.parent is None):
            await handle._release_quietly()
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _ensure_stub(self) -> Any:
        if self._closed:
            raise TesseraError("the client is closed")
        if self._stub is None:
            self._channel = open_channel(self.target, self._tls, self._channel_options)
            self._stub = pb_grpc.LicensingServiceStub(self._channel)
        return self._stub

    # -- sessions -------------------------------------------------------------------------

    def session(
        self,
        product_id: str,
        version: str,
        *,
        platform: Platform | None = None,
        device_id: str | None = None,
        takeover: bool = False,
        team_id: str = "",
        options: SessionOptions | None = None,
        on_ended: EndedCallback | None = None,
        on_lease_expiring: LeaseExpiringCallback | None = None,
        on_charge_state_changed: ChargeStateCallback | None = None,
        on_state_changed: StateCallback | None = None,
    ) -> AsyncSessionHandle:
        """A session that looks after itself: ``async with client.session("ACAD", "2026") as s:``.

        Entering it entitles (raising a ``TesseraError`` subclass when refused); inside,
        it heartbeats, goes idle and comes back, and warns before an offline lease ends;
        leaving it releases, also on error or cancellation.
        """
        return AsyncSessionHandle(
            self,
            product_id,
            version,
            platform=self.platform if platform is None else platform,
            device_id=device_id or self.device_id,
            takeover=takeover,
            team_id=team_id,
            options=options or self.session_options,
            on_ended=on_ended,
            on_lease_expiring=on_lease_expiring,
            on_charge_state_changed=on_charge_state_changed,
            on_state_changed=on_state_changed,
        )

    # -- the four calls -------------------------------------------------------------------

    async def entitle(
        self,
        product_id: str,
        version: str,
        *,
        platform: Platform | None = None,
        device_id: str | None = None,
        parent_session_id: str = "",
        takeover: bool = False,
        team_id: str = "",
        request_id: str | None = None,
    ) -> Session:
        """Open a session (RULES M1). Retries reuse ``request_id`` (a new one when None)."""
        request = pb.EntitleRequest(
            product_id=product_id,
            product_version=version,
            platform=int(self.platform if platform is None else platform),  # type: ignore[arg-type]
            device_id=device_id or self.device_id,
            parent_session_id=parent_session_id,
            request_id=request_id or new_request_id(),
            takeover=takeover,
            team_id=team_id,
        )
        response = await self._invoke(self._ensure_stub().Entitle, request)
        return Session.from_proto(response.session)

    async def heartbeat(self, session_id: str, seconds_since_activity: int = 0) -> Session:
        """Extend the lease and report how long ago the user last did something (M6, M7)."""
        request = pb.HeartbeatRequest(
            session_id=session_id, seconds_since_activity=max(0, int(seconds_since_activity))
        )
        response = await self._invoke(self._ensure_stub().Heartbeat, request)
        return Session.from_proto(response.session)

    async def idle(self, session_id: str) -> Session:
        """Tell the server the user stopped working (M6)."""
        response = await self._invoke(
            self._ensure_stub().Idle, pb.IdleRequest(session_id=session_id)
        )
        return Session.from_proto(response.session)

    async def release(self, session_id: str) -> Session:
        """End a session (M10); releasing twice is harmless."""
        response = await self._invoke(
            self._ensure_stub().Release, pb.ReleaseRequest(session_id=session_id)
        )
        return Session.from_proto(response.session)

    # -- the one place a call is made -----------------------------------------------------

    async def _invoke(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req
    ) -> _Resp:
        """One call with a deadline per attempt, retried with backoff on transient failures.

        The same request object (hence the same ``request_id``) is sent every time.
        Every ``grpc.RpcError`` is turned into a ``TesseraError`` here.
        """
        policy = self.retry
        attempt = 0
        while True:
            call = method(request, timeout=policy.call_timeout, metadata=self._metadata)
            try:
                return await call
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if policy.retryable(code) and attempt + 1 < policy.max_attempts:
                    delay = policy.backoff(attempt, self.rng)
                    attempt += 1
                    log.debug(
                        "tessera call failed with %s; retry %d in %.2fs", code.name, attempt, delay
                    )
                    await self.clock.sleep(delay)
                    continue
                raise from_rpc_error(exc, await _rich_status(call)) from exc
            except grpc.RpcError as exc:  # not expected from grpc.aio, but never let one out
                raise from_rpc_error(exc) from exc
            except grpc.aio.UsageError as exc:  # e.g. the channel was closed under the call
                raise ServerError(f"the call could not be made: {exc}") from exc


async def _rich_status(call: Any) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in the call's trailers, if the server sent one."""
    try:
        status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    except (ValueError, grpc.RpcError, AttributeError):
        return None
    return status


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"
