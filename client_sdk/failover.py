"""Several servers, one active: where a call goes, and where it goes next (RULES H3).

A deployment may run one active server and standbys beside it. A standby serves
no call: it answers ``UNAVAILABLE`` with the reason ``NOT_LEADER`` and, when it
knows it, the active's address in the metadata ``leader``. The SDK is given the
addresses of them all (``targets``) and finds the active itself:

- every call goes to the current target: at first the first one listed, then
  the last one that answered (``Targets.current``);
- ``NOT_LEADER`` with a ``leader``: the next attempt goes there, also when that
  address is not among the targets (it is the one the active advertises; the
  SDK keeps one such learned address beside the listed ones);
- ``NOT_LEADER`` without one, a lost or refused connection (``UNAVAILABLE``
  without reason) or no answer in time (``DEADLINE_EXCEEDED``, e.g. a paused
  server): the next attempt goes to the next target, round the list;
- a call remembers the addresses it could not reach (no connection could be made,
  no answer in time; not one that answered ``UNAVAILABLE`` or lost a connection
  under a call: it is up, and the next attempt there may well be served, and
  if it is down after all its next refusal is remembered): a standby's hint may be stale (it still names the active that died or
  hangs, or advertises an address this client cannot reach), so a ``leader``
  naming one of them is not followed, and going round the list skips them: the
  next attempt goes to the next address this call has not failed to reach (the
  standby itself, when it is the only one left: it serves once it takes over),
  and round the plain list only when none is left. Without that, a call would
  bounce between the standby and the address it names until its attempts ran
  out, and never try the active it was given (or, after a paused server, spend
  a whole ``call_timeout`` on it again);
- the retry policy's attempts count across targets: an attempt on a server
  this call has not tried yet goes at once, one on a server it has tried (the
  only one, or round the list again) first waits its backoff (the first wait
  ``initial_backoff``, then growing) on the client's clock. When they are spent,
  or the policy's ``total_timeout`` has passed, the call fails with
  ``Unavailable`` (``NotLeader`` when a standby answered last), naming the
  targets it tried (the default policy spans a takeover: ``RetryPolicy``);
- a refusal that carries a ``google.rpc.RetryInfo`` (``OVERLOADED``: the server
  had too many calls under way; ``RATE_LIMITED``) means the server did nothing and
  is there: the next attempt goes to the same server after the delay it asked for
  (at least the backoff, spread up by the jitter), on the client's clock; when the
  attempts are spent the refusal itself is raised (``Overloaded``...);
- every attempt sends the same request, so an Entitle keeps its ``request_id``
  and the active that takes over recognises a repeat (RULES M11); Heartbeat,
  Idle and Release name their session, which a takeover keeps. A request that
  says how long ago something happened is built again for each attempt
  (``PerAttempt``): a Heartbeat sent after a wait reports the user's activity as
  old as it is then (RULES M6), not as it was when the first attempt went out;
- a call that is not ``idempotent`` (a change without a ``request_id``: the
  admin client's ``CreateAdminKey``, ``AcceptInvitation``...) is sent again
  only after a failure that says no server did it: ``NOT_LEADER``, a
  ``RetryInfo`` refusal, a connection that was never made. After any other
  (no answer in time, a connection lost under the call, ``CANCELLED``) the
  server may have made the change, and the call fails with ``OutcomeUnknown``;
- closing (``close()``) under a call makes it fail with ``ClientClosed`` (or
  ``OutcomeUnknown``, for a change that is not idempotent), never with
  ``asyncio.CancelledError``, which stays the caller's own cancellation.

The move is a compare-and-set: calls that fail together on the same server move
the current target once, not once each. A hint names the active, so it wins over
a rotation, unless it names an address the call could not reach.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from client_sdk._retry import RetryPolicy
from client_sdk.clock import Clock
from client_sdk.errors import (
    ClientClosed,
    NotLeader,
    OutcomeUnknown,
    ServerError,
    TesseraError,
    Unavailable,
    from_rpc_error,
)

log = logging.getLogger("client_sdk")

StubT = TypeVar("StubT")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class Targets:
    """The servers a client may call, and the one its calls go to now."""

    def __init__(self, addresses: Sequence[str]) -> None:
        if isinstance(addresses, str):
            raise TypeError("targets is a list of addresses, not one string")
        listed = tuple(dict.fromkeys(addresses))  # in order, each once
        if not listed or not all(isinstance(a, str) and a for a in listed):
            raise ValueError("at least one server address (host:port) is required")
        self.listed = listed
        self.learned: str | None = None  # the last leader hint not among the listed
        self.current = listed[0]

    @property
    def addresses(self) -> tuple[str, ...]:
        """The listed addresses, then the learned one if any."""
        return self.listed + ((self.learned,) if self.learned else ())

    def after(self, address: str, unreachable: Collection[str] = ()) -> str:
        """The target tried after ``address``: the next one round the list that is not
        ``unreachable`` (``address`` itself last), or the plain next one when all are."""
        ring = self.addresses
        at = ring.index(address) if address in ring else -1
        order = [ring[(at + 1 + step) % len(ring)] for step in range(len(ring))]
        return next((a for a in order if a not in unreachable), order[0])

    def move(
        self, failed: str, leader: str | None = None, unreachable: Collection[str] = ()
    ) -> str:
        """``failed`` did not serve a call: point at ``leader`` (when hinted) or at the
        target after ``failed`` (unless another call has moved on already); returns
        where the next attempt goes. ``unreachable`` are the addresses the call could
        not reach: a hint naming one of them is stale, and going round skips them."""
        if leader and leader not in unreachable:
            if leader not in self.listed:
                self.learned = leader
            self.current = leader
        elif self.current == failed or self.current in unreachable:
            self.current = self.after(failed, unreachable)
        return self.current


class PerAttempt(Generic[_Req]):
    """A request built anew for each attempt of a call (``Failover.call``), for one that
    says how long ago something happened: waiting between attempts ages it."""

    def __init__(self, build: Callable[[], _Req]) -> None:
        self.build = build


class Failover(Generic[StubT]):
    """Calls through one stub per target, moving between targets as the module says.

    ``connect`` opens a channel to an address (lazily, once; call inside the event loop
    that will use it) and ``stub`` wraps it. Every failure leaves as a ``TesseraError``.
    """

    def __init__(
        self,
        targets: Targets,
        connect: Callable[[str], grpc.aio.Channel],
        stub: Callable[[grpc.aio.Channel], StubT],
        *,
        retry: RetryPolicy,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.targets = targets
        self.retry = retry
        self.clock = clock
        self.rng = rng
        self._connect = connect
        self._stub = stub
        self._open: dict[str, tuple[grpc.aio.Channel, StubT]] = {}
        self._closed = False

    def stub(self, address: str) -> StubT:
        if self._closed:
            raise ClientClosed("the client is closed")
        if address not in self._open:
            channel = self._connect(address)
            self._open[address] = (channel, self._stub(channel))
        return self._open[address][1]

    async def close(self) -> None:
        """Close the channels; a call under way fails ``ClientClosed``, later ones too."""
        self._closed = True
        opened, self._open = self._open, {}
        for channel, _ in opened.values():
            await channel.close()

    async def ready(self, timeout: float) -> str:
        """Wait until a target accepts a connection (trying each for ``timeout`` seconds,
        from the current one); it becomes the current target. ``ConnectionError`` if none."""
        for _ in self.targets.addresses:
            address = self.targets.current
            self.stub(address)
            try:
                await _channel_ready(self._open[address][0], timeout)
                return address
            except TimeoutError:
                self.targets.move(address)
        raise ConnectionError(f"could not connect to {', '.join(self.targets.addresses)}")

    async def call(
        self,
        method: Callable[[StubT], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req | PerAttempt[_Req],
        metadata: Sequence[tuple[str, str]],
        *,
        idempotent: bool = True,
    ) -> _Resp:
        """One call (``method`` picks it from a stub, e.g. ``lambda s: s.Heartbeat``) with a
        deadline per attempt, retried on transient failures, across targets.

        ``request`` is sent as it is on every attempt, or (``PerAttempt``) built for each.
        ``idempotent`` says whether sending the request twice does no more than once (a
        read, a call with a ``request_id``, a Release...): when false, it is sent again
        only after a failure that says it was not done, else ``OutcomeUnknown``."""
        policy = self.retry
        tried: list[str] = []
        unreachable: set[str] = set()  # no connection, or no answer in time: this call's
        attempt = waits = 0
        began = self.clock.now()
        while True:
            address = self.targets.current
            if address not in tried:
                tried.append(address)
            call: grpc.aio.UnaryUnaryCall[_Req, _Resp] | None = None
            try:
                call = method(self.stub(address))(
                    _built(request), timeout=policy.call_timeout, metadata=metadata
                )
                return await call
            except asyncio.CancelledError:
                if not self._closed or _cancelling():
                    raise  # the caller's own cancellation
                closed = ClientClosed(f"the client was closed under the call to {address}")
                raise (closed if idempotent else _unknown(closed, address)) from None
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, await _rich_status(call))
                failure: Exception = exc
                busy = error.retry_after is not None  # RetryInfo: not done, come back later
                if not (busy or policy.retryable(exc.code())):
                    raise _naming(error, tried) from exc
                if not idempotent and not _not_done(error):
                    raise _unknown(error, address) from exc
                if attempt + 1 >= policy.max_attempts:
                    raise _naming(error, tried) from exc
            except grpc.RpcError as exc:  # not expected from grpc.aio, but never let one out
                raise from_rpc_error(exc) from exc
            except grpc.aio.UsageError as exc:  # e.g. the channel was closed under the call
                if self._closed:
                    closed = ClientClosed(f"the client was closed under the call to {address}")
                    raise (closed if idempotent else _unknown(closed, address)) from exc
                raise ServerError(f"the call could not be made: {exc}") from exc
            attempt += 1
            delay = 0.0
            if busy:  # the same server, once the delay it asked for has passed
                going = address
                delay, waits = policy.later(error.retry_after or 0.0, waits, self.rng), waits + 1
            else:
                leader = error.leader if isinstance(error, NotLeader) else None
                if _unreachable(error):  # never connected, or silent
                    unreachable.add(address)
                going = self.targets.move(address, leader, unreachable)
                if going in tried:
                    delay, waits = policy.backoff(waits, self.rng), waits + 1
            if policy.out_of_time((self.clock.now() - began).total_seconds(), delay):
                raise _naming(error, tried) from failure
            log.debug(
                "tessera call to %s failed with %s; retry %d goes to %s in %.2fs",
                address,
                error.reason,
                attempt,
                going,
                delay,
            )
            if delay:
                await self.clock.sleep(delay)
            if self._closed:
                raise ClientClosed("the client was closed before the call was sent again")


def _built(request: _Req | PerAttempt[_Req]) -> _Req:
    """The request an attempt sends."""
    return request.build() if isinstance(request, PerAttempt) else request


def _cancelling() -> bool:
    """Whether the running task is being cancelled (its caller's cancellation, not
    grpc's of a call whose channel was closed)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


#: How gRPC says a call failed before it was sent: no connection could be made to any
#: address (refused, reset while connecting), or the name did not resolve.
_NEVER_SENT = ("failed to connect to all addresses", "errors resolving")


def _not_done(error: TesseraError) -> bool:
    """Whether ``error`` says that no server did the call, so that sending it again cannot
    make a change twice: a standby's ``NOT_LEADER`` (RULES H1: it did nothing), a refusal
    with a ``RetryInfo`` (``OVERLOADED``, ``RATE_LIMITED``: refused before doing anything),
    or a connection that was never made. No answer in time, a connection lost under the
    call or ``CANCELLED`` say nothing of what the server did."""
    if isinstance(error, NotLeader) or error.retry_after is not None:
        return True
    return _never_sent(error)


def _never_sent(error: TesseraError) -> bool:
    """Whether gRPC says no connection could be made (``_NEVER_SENT``)."""
    return (
        error.code is grpc.StatusCode.UNAVAILABLE
        and error.reason == "UNAVAILABLE"
        and not error.metadata
        and error.message.startswith(_NEVER_SENT)
    )


def _unreachable(error: TesseraError) -> bool:
    """Whether the address a call failed on could not be reached: no connection could
    be made (a server that is down), or no answer came in time (a paused one). A
    server that answered ``UNAVAILABLE`` or ``CANCELLED``, or whose connection was lost
    under the call, is there or was a moment ago: a hint naming it is followed."""
    return error.code is grpc.StatusCode.DEADLINE_EXCEEDED or _never_sent(error)


def _unknown(error: TesseraError, address: str) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{address} did not say whether it made the change ({error}); it may have, and the "
        "request has no request_id to repeat it safely, so it was not sent again: check "
        "before making it again",
        cause=error,
    )


def _naming(error: TesseraError, tried: list[str]) -> TesseraError:
    """``error``, naming the targets tried when no server could serve the call."""
    if isinstance(error, Unavailable):
        error.targets = tuple(tried)
        error.message = f"{error.message} (tried {', '.join(tried)})".lstrip()
    return error


async def _channel_ready(channel: grpc.aio.Channel, timeout: float) -> None:
    await asyncio.wait_for(channel.channel_ready(), timeout)


async def _rich_status(call: Any) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in the call's trailers, if the server sent one."""
    try:
        status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    except (ValueError, grpc.RpcError, AttributeError):
        return None
    return status
