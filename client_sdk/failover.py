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
- the retry policy's attempts count across targets: an attempt on a server
  this call has not tried yet goes at once, one on a server it has tried (the
  only one, or round the list again) first waits its backoff (the first wait
  ``initial_backoff``, then growing) on the client's clock. When they are spent
  the call fails with ``Unavailable`` (``NotLeader`` when a standby answered
  last), naming the targets it tried;
- a refusal that carries a ``google.rpc.RetryInfo`` (``OVERLOADED``: the server
  had too many calls under way; ``RATE_LIMITED``) means the server did nothing and
  is there: the next attempt goes to the same server after the delay it asked for
  (at least the backoff, spread up by the jitter), on the client's clock; when the
  attempts are spent the refusal itself is raised (``Overloaded``...);
- every attempt sends the same request, so an Entitle keeps its ``request_id``
  and the active that takes over recognises a repeat (RULES M11); Heartbeat,
  Idle and Release name their session, which a takeover keeps.

The move is a compare-and-set: calls that fail together on the same server move
the current target once, not once each. A hint names the active, so it always
wins over a rotation.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from client_sdk._retry import RetryPolicy
from client_sdk.clock import Clock
from client_sdk.errors import NotLeader, ServerError, TesseraError, Unavailable, from_rpc_error

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

    def after(self, address: str) -> str:
        """The target tried after ``address``: the next one, round the list."""
        ring = self.addresses
        at = ring.index(address) if address in ring else -1
        return ring[(at + 1) % len(ring)]

    def move(self, failed: str, leader: str | None = None) -> str:
        """``failed`` did not serve a call: point at ``leader`` (when hinted) or at the
        target after ``failed`` (unless another call has moved on already); returns
        where the next attempt goes."""
        if leader:
            if leader not in self.listed:
                self.learned = leader
            self.current = leader
        elif self.current == failed:
            self.current = self.after(failed)
        return self.current


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

    def stub(self, address: str) -> StubT:
        if address not in self._open:
            channel = self._connect(address)
            self._open[address] = (channel, self._stub(channel))
        return self._open[address][1]

    async def close(self) -> None:
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
        request: _Req,
        metadata: Sequence[tuple[str, str]],
    ) -> _Resp:
        """One call (``method`` picks it from a stub, e.g. ``lambda s: s.Heartbeat``) with a
        deadline per attempt, retried on transient failures, across targets."""
        policy = self.retry
        tried: list[str] = []
        attempt = waits = 0
        while True:
            address = self.targets.current
            if address not in tried:
                tried.append(address)
            try:
                call = method(self.stub(address))(
                    request, timeout=policy.call_timeout, metadata=metadata
                )
                return await call
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, await _rich_status(call))
                busy = error.retry_after is not None  # RetryInfo: not done, come back later
                if not (busy or policy.retryable(exc.code())) or attempt + 1 >= policy.max_attempts:
                    raise _naming(error, tried) from exc
            except grpc.RpcError as exc:  # not expected from grpc.aio, but never let one out
                raise from_rpc_error(exc) from exc
            except grpc.aio.UsageError as exc:  # e.g. the channel was closed under the call
                raise ServerError(f"the call could not be made: {exc}") from exc
            attempt += 1
            delay = 0.0
            if busy:  # the same server, once the delay it asked for has passed
                going = address
                delay, waits = policy.later(error.retry_after or 0.0, waits, self.rng), waits + 1
            else:
                leader = error.leader if isinstance(error, NotLeader) else None
                going = self.targets.move(address, leader)
                if going in tried:
                    delay, waits = policy.backoff(waits, self.rng), waits + 1
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
