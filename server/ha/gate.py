"""Who answers a Tessera call: the one place that knows the server's role (RULES H1).

The gRPC server is made once, before the server knows whether it will be the
active one; the servicers exist only while it is (they are built around the
engine of one term as active, ``Term``). So the AdminService and
LicensingService servicers are not mounted on gRPC: ``Gate``, the server's only
interceptor, hands each call to the current term's edge and servicers, or
answers it as a standby:

- ``GetServerInfo`` (with the admin token): the version, node id, role standby
  and the active's address;
- every other call: ``UNAVAILABLE``, reason ``NOT_LEADER``, metadata ``leader``
  (the active's advertised address, when known).

A term answers only while its lease is known to run (``Term.holds``): a server
resumed after a pause refuses the very first call, before its election has
run. A write refused by the fence (``store.port.NotLeader``) leaves as
``NOT_LEADER`` too: it was not committed, so the client may repeat it on the
active server. So does a write that failed otherwise (``StoreFailed``: the
store's connection lost...) on a server that stepped down for it: like a call
cut by a server's death, its outcome is unknown, and the client repeats it,
with the same request id, on the active server. A server alone on its database
(SQLite) has no standby to hand over to: it stops (``TesseraServer``), and
such a call leaves as ``UNAVAILABLE`` (reason ``UNAVAILABLE``), to be repeated
on it once it is back.

How calls get in (``Gate.register``). grpc.aio asks gRPC's core for the next call of
each method registered with it, one at a time, and for the next call of every
other method, one at a time among them all; calls not yet asked for wait in the
core, in arrival order. So the four calls of a session (``SESSION_CALLS``) are
registered, each with its own queue: an Idle, Entitle or Release is taken in
while Heartbeats wait, as a bare grpc.aio server with generated code takes its
methods. Nothing else is: each registered method costs every call taken in a
little more of the loop's time (grpc.aio waits on one future per method: about
7 µs a call with 4 of them, 10 with 8, 26 with 45, on this host), so health
checks, reflection, the AdminService and the two other LicensingService methods
share the one remaining queue (issue 17; ``docs/performance-log.md``, stop 21).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog

from server import __version__
from server.api import convert as cv
from server.api.admission import Closing
from server.api.errors import NotLeader, Unavailable, to_status
from server.api.interceptors import (
    ADMIN_PREFIX,
    LICENSING_PREFIX,
    Behavior,
    EdgeInterceptor,
    loggable,
    request_id_in,
)
from server.clock import monotonic
from server.credentials import bearer, same_secret
from server.domain.errors import DomainError
from server.listen import SERVICES
from server.store import port
from tessera_api.tessera.v1 import admin_service_pb2 as api

if TYPE_CHECKING:  # grpc's classes are generic only in its stubs
    from server.metrics import Metrics

    Continuation = Callable[
        [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
    ]
    Handler = grpc.RpcMethodHandler[Any, Any]
log = structlog.get_logger()
GET_SERVER_INFO = ADMIN_PREFIX + "GetServerInfo"
#: The LicensingService methods a session calls, each taken in on its own (``Gate.register``).
SESSION_CALLS = ("Entitle", "Heartbeat", "Idle", "Release")


@dataclass(frozen=True)
class NodeInfo:
    """This server among the servers of one database."""

    node_id: str
    active: bool
    leader_address: str  # '' when unknown
    starting: bool = False  # elected, and loading its state: active in a moment


def server_info(node: NodeInfo, now: datetime | None = None, test_clock: bool = False) -> Any:
    """GetServerInfo's answer (``now`` unset on a standby, which holds no clock)."""
    return api.GetServerInfoResponse(
        version=__version__,
        now=cv.ts(now) if now is not None else None,
        test_clock=test_clock,
        node_id=node.node_id,
        role=api.NODE_ROLE_ACTIVE if node.active else api.NODE_ROLE_STANDBY,
        leader_address=node.leader_address,
    )


STOPPING = (
    "the server is stopping: a write to its database failed, so this call's change is "
    "not known to be stored; repeat the call, with the same request_id, once it is back"
)


def not_leader(leader: str, starting: bool = False) -> NotLeader:
    named = {"leader": leader} if leader else {}
    if starting:  # its own address: the SDK comes back here after its backoff
        return NotLeader(
            "this server was just elected and is loading its state: repeat the call in a moment",
            **named,
        )
    where = f"; the active server is {leader}" if leader else ""
    return NotLeader(f"this server is a standby{where}", **named)


class _Collector:
    """Stands in for a gRPC server to collect a servicer's method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the registered handlers below are the same methods

    def add_registered_method_handlers(self, service: str, methods: dict[str, Handler]) -> None:
        for name, handler in methods.items():
            self.handlers[f"/{service}/{name}"] = handler


class GenericOnly:
    """A gRPC server that mounts a servicer's generic handlers only: its methods then
    share the one queue of unregistered methods (see the module docstring)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, methods: dict[str, Handler]) -> None:
        pass  # the generic handlers serve the same methods


def handlers(*servicers: tuple[Callable[[Any, Any], None], object]) -> dict[str, Handler]:
    """Each ``(add_XServicer_to_server, servicer)``'s handlers by full method name."""
    collector = _Collector()
    for add, servicer in servicers:
        add(servicer, collector)
    return collector.handlers


@dataclass
class Term:
    """One term as the active server: its edge, its servicers' handlers, and
    whether its lease still runs."""

    edge: EdgeInterceptor
    handlers: dict[str, Handler]
    holds: Callable[[], bool] = lambda: True
    leader: Callable[[], str] = lambda: ""
    #: Told when a write fails for another reason than the fence (the store is lost).
    on_store_failed: Callable[[], None] = lambda: None
    #: Set once its store has failed, on a server alone on its database (which then
    #: stops): every call is refused ``STOPPING`` from then on, so that none is answered
    #: from memory the database no longer follows (M11: the repeat of a call whose
    #: commit failed would find its change in memory, and no commit under way to wait
    #: for).
    stopping: bool = False
    _fenced: dict[str, Handler] = field(default_factory=dict)

    async def lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = details.method
        done = self._fenced.get(method)
        if done is None:
            handler = self.handlers.get(method)
            if handler is None or handler.unary_unary is None:
                return handler
            done = self._fenced[method] = grpc.unary_unary_rpc_method_handler(
                self._fence(cast(Behavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return done

    def _fence(self, behavior: Behavior) -> Behavior:
        async def fenced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self.stopping:
                raise Unavailable(STOPPING)
            try:
                return await behavior(request, context)
            except port.NotLeader:
                raise not_leader(self.leader()) from None
            except port.StoreFailed:
                # Its write was not committed, or (a connection lost at COMMIT) not
                # known to be, as when a server dies under a call: the client repeats
                # it, with the same request id, on the active server...
                self.on_store_failed()
                if not self.holds():
                    raise not_leader(self.leader()) from None
                # ... or, a server alone on its database (it stops: TesseraServer), on
                # this one once it is back.
                raise Unavailable(STOPPING) from None

        return fenced


#: Every method of Tessera's services: a standby answers these, and only these (any
#: other is UNIMPLEMENTED, as on the active), so the series of its calls stay few.
METHODS = frozenset(f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods)


class Gate(grpc.aio.ServerInterceptor):
    """The server's one interceptor (see the module docstring). The calls it answers
    itself (a standby's) are counted and logged as the edge counts and logs a term's
    (``metrics``: the server's, when it serves them)."""

    def __init__(self, node: Callable[[], NodeInfo], admin_token: Callable[[], str]) -> None:
        self.term: Term | None = None
        self.metrics: Metrics | None = None
        self._node = node
        self._admin_token = admin_token
        self._standby: dict[str, Handler] = {}
        #: The server's stop, in one process (the front's own otherwise): every Tessera
        #: call refused with a RetryInfo until gRPC's queue has emptied (``admission``).
        self.closing = Closing()
        self._closing: Handler = grpc.unary_unary_rpc_method_handler(self._refuse_closing)

    def register(self, server: grpc.aio.Server) -> None:
        """``SESSION_CALLS`` registered with ``server``, each its own queue (see the
        module docstring). The handler gRPC holds for them is never used: this
        interceptor answers every Tessera call."""
        service = LICENSING_PREFIX.strip("/")
        unused: Handler = grpc.unary_unary_rpc_method_handler(self._unused)
        server.add_registered_method_handlers(service, dict.fromkeys(SESSION_CALLS, unused))

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method: str = details.method
        if not method.startswith((ADMIN_PREFIX, LICENSING_PREFIX)):
            return await continuation(details)  # health, reflection
        if self.closing.on:
            return self._closing
        term = self.term
        if term is not None and term.holds():
            return await term.edge.intercept_service(term.lookup, details)
        if method not in METHODS:
            return await continuation(details)  # UNIMPLEMENTED, as on the active
        handler = self._standby.get(method)
        if handler is None:
            handler = self._standby[method] = self._as_standby(method)
        return handler

    def _as_standby(self, method: str) -> Handler:
        """How a standby answers ``method`` (GetServerInfo, else NOT_LEADER), counted
        by method and code, and logged, as a term's calls are: a refusal's line names
        the request id (its header: the body is not read) and the client's address,
        since the calls a standby refuses come from clients pointed at it."""
        short = method.rsplit("/", 1)[-1]
        kind = "admin" if method.startswith(ADMIN_PREFIX) else "user"
        calls = self.metrics.rpc(method) if self.metrics is not None else None
        info = method == GET_SERVER_INFO

        async def answer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = monotonic()
            refusal: DomainError | None
            metadata = context.invocation_metadata()
            secret = bearer(metadata) if info else None
            if secret is not None and same_secret(secret, self._admin_token()):
                refusal = None  # the operator's: this server's own info
            else:
                # Any other credential (a team administrator's key, a user's, none) is
                # the active's to judge, as every other call's: follow it there (H3).
                node = self._node()
                refusal = not_leader(node.leader_address, node.starting)
            status = None if refusal is None else to_status(refusal)
            code = grpc.StatusCode.OK if status is None else status.code
            if refusal is not None and self.metrics is not None:
                self.metrics.refused(refusal.reason, kind)
            if calls is not None:
                calls.observe(code, monotonic() - start)
            log.info(
                "rpc",
                method=short,
                code=code.name,
                duration_ms=round((monotonic() - start) * 1000, 3),
                **(
                    {}
                    if refusal is None
                    else {
                        "reason": refusal.reason,
                        "request_id": loggable(request_id_in(metadata, None), self._admin_token()),
                        "peer": context.peer(),
                    }
                ),
            )
            if status is not None:
                await context.abort(status.code, status.details, status.trailing_metadata)
            return server_info(self._node())

        return grpc.unary_unary_rpc_method_handler(
            answer,
            response_serializer=api.GetServerInfoResponse.SerializeToString if info else None,
        )

    async def _refuse_closing(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        refusal = self.closing.refusal()
        if self.metrics is not None:
            self.metrics.refused(refusal.reason, "none")
        status = to_status(refusal)
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _unused(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise AssertionError("the gate answers every Tessera call")  # pragma: no cover
