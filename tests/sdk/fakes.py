"""Fakes at the SDK's seams: a LicensingService that keeps sessions in memory, and a TCP
proxy that can lose a response or play dead.

``FakeLicensing`` is a real grpc.aio servicer on 127.0.0.1 port 0 that follows the
rules closely enough for the SDK (leases, idle and resume, idempotent Entitle, ended
sessions answering with their reason), tells time by the test's ``ManualClock``, records
every call with its metadata, and refuses on demand with the same rich status the real
server sends (``ErrorInfo`` in domain ``tessera``, ``BadRequest`` for bad fields).

Like the real server it signs every live session's lease with an Ed25519 key and
publishes its public keys through ``GetSigningKeys`` (no credential needed). Tests can
rotate the key, sign with a key it does not publish, sign a lease that says something
else (``edit_lease``), alter one after signing (``tamper_lease``), leave it out, or
replay an old one (``replay``; a whole Entitle answer: ``replay_entitle``); and run the
fake's clock ahead of the test's, or behind it (``skew``).

Two fakes can stand for two servers of one deployment on one database (RULES H1):
``share(other)`` gives a fake the other's sessions, request ids and keys, and
``standby`` makes it answer every call ``UNAVAILABLE``/``NOT_LEADER`` naming
the active's address, as a real standby does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from client_sdk.clock import ManualClock
from tessera_api.tessera.v1 import admin_service_pb2 as apb
from tessera_api.tessera.v1 import admin_service_pb2_grpc as apb_grpc
from tessera_api.tessera.v1 import common_pb2 as c
from tessera_api.tessera.v1 import licensing_service_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as pb_grpc

LEASE = timedelta(hours=24)
INTERVAL = timedelta(minutes=5)
IDLE_AFTER = timedelta(minutes=15)


@dataclass
class Refusal:
    code: grpc.StatusCode
    reason: str
    message: str = "refused"
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    method: str | None = None  # only this RPC (any session call when None)
    retry_after: float | None = None  # seconds, sent as a google.rpc.RetryInfo

    def status(self) -> grpc.Status:
        details = []
        if self.reason:
            info = any_pb2.Any()
            info.Pack(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain="tessera", metadata=self.metadata
                )
            )
            details.append(info)
        if self.violations:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=k, description=v)
                        for k, v in self.violations.items()
                    ]
                )
            )
            details.append(bad)
        if self.retry_after is not None:
            later = any_pb2.Any()
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(round(self.retry_after * 1e9))
            later.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            details.append(later)
        return rpc_status.to_status(
            status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        )


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]
    time: datetime
    deadline: float | None  # seconds the caller gave the call, as the server sees them


@dataclass
class FakeSession:
    msg: c.Session
    last_activity: datetime
    idle_since: datetime | None = None


class Served:
    """A fake's own gRPC server on 127.0.0.1:0 and the refusals it will make."""

    server: grpc.aio.Server | None = None
    target = ""
    refusals: deque[Refusal]
    standby: str | None = None  # a standby: NOT_LEADER naming this leader ("": none)

    async def _serve(
        self,
        add: Callable[[Any, grpc.aio.Server], None],
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.server = grpc.aio.server()
        add(self, self.server)
        if credentials is None:
            port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()
        self.target = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    def refuse(self, code: grpc.StatusCode, reason: str = "", **kw: Any) -> None:
        """The next matching call is refused like this."""
        self.refusals.append(Refusal(code, reason, **kw))

    async def _as_standby(self, context: Any) -> None:
        """A standby (``standby`` set) refuses NOT_LEADER, naming it ("": none)."""
        if self.standby is not None:
            leader = {"leader": self.standby} if self.standby else {}
            refusal = Refusal(
                grpc.StatusCode.UNAVAILABLE, "NOT_LEADER", "a standby", metadata=leader
            )
            await context.abort_with_status(refusal.status())


class FakeLicensing(Served, pb_grpc.LicensingServiceServicer):
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.idle_aware: set[str] = {"ACAD", "ARNOLD"}
        self.interval = INTERVAL
        self.sessions: dict[str, FakeSession] = {}
        self.by_request: dict[str, str] = {}
        self.calls: list[Call] = []
        self.refusals: deque[Refusal] = deque()
        self.delay = 0.0  # real seconds to wait before answering
        self.gates: dict[str, asyncio.Event] = {}  # a method waits for its gate to open
        self.lost_answers = 0  # Entitles done, then answered DEADLINE_EXCEEDED (answer lost)
        self.down = False  # answer UNAVAILABLE to everything
        self.standby: str | None = None  # a standby: NOT_LEADER naming this leader ("": none)
        self._ids = itertools.count(1)
        # -- signed leases --
        self.lease = LEASE  # how long a lease runs
        self.skew = timedelta(0)  # the fake's clock is the test's plus this
        self.private_keys: dict[str, Ed25519PrivateKey] = {}
        self.published: list[str] = []  # key ids GetSigningKeys answers with, newest first
        self.signing_key_id = self.add_key()
        self.sign_leases = True  # False: live sessions come without a lease
        self.edit_lease: Callable[[c.Lease], None] | None = None  # before signing
        self.tamper_lease: Callable[[c.SignedLease], None] | None = None  # after signing
        self.replay: c.SignedLease | None = None  # answer Heartbeats with this old lease
        self.replay_entitle: pb.EntitleResponse | None = None  # answer Entitles with this
        self.my_products: list[pb.MyProduct] = []  # what ListMyProducts answers

    async def start(self, credentials: grpc.ServerCredentials | None = None) -> FakeLicensing:
        await self._serve(pb_grpc.add_LicensingServiceServicer_to_server, credentials)
        return self

    # -- what tests do --------------------------------------------------------------------

    def share(self, other: FakeLicensing) -> FakeLicensing:
        """Hold ``other``'s sessions, request ids and keys: two servers on one database."""
        self.sessions, self.by_request, self._ids = other.sessions, other.by_request, other._ids
        self.private_keys, self.published = other.private_keys, other.published
        self.signing_key_id = other.signing_key_id
        return self

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def end(self, session_id: str, reason: int) -> None:
        """End a session as the server would (takeover, tokens, admin...)."""
        msg = self.sessions[session_id].msg
        msg.state = c.SESSION_STATE_ENDED
        msg.end_reason = reason  # type: ignore[assignment]
        msg.end_time.FromDatetime(self.now())
        for other in self.sessions.values():
            if (
                other.msg.parent_session_id == session_id
                and other.msg.state != c.SESSION_STATE_ENDED
            ):
                self.end(other.msg.session_id, c.END_REASON_HOST_ENDED)

    def set_charge(self, session_id: str, state: int) -> None:
        self.sessions[session_id].msg.charge_state = state  # type: ignore[assignment]

    def add_key(self, *, publish: bool = True, sign: bool = True) -> str:
        """A new signing key: published (newest first) and signing from now on, unless not."""
        key_id = f"k_fake{len(self.private_keys) + 1}"
        self.private_keys[key_id] = Ed25519PrivateKey.generate()
        if publish:
            self.published.insert(0, key_id)
        if sign:
            self.signing_key_id = key_id
        return key_id

    def public_keys(self, *key_ids: str) -> dict[str, bytes]:
        """``key_id -> raw public key`` for these keys (the published ones by default)."""
        return {
            k: self.private_keys[k].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            for k in key_ids or self.published
        }

    def now(self) -> datetime:
        """The fake server's clock: the test's, plus ``skew``."""
        return self.clock.now() + self.skew

    def sign(self, msg: c.Session, request_id: str = "") -> c.SignedLease | None:
        """The signed lease for a session, as the real server makes it (``server/leases.py``;
        ``request_id``: an Entitle's)."""
        if not self.sign_leases or msg.state == c.SESSION_STATE_ENDED:
            return None
        lease = c.Lease(
            session_id=msg.session_id,
            user_id=msg.user_id,
            team_id=msg.team_id,
            product_id=msg.product_id,
            device_id=msg.device_id,
            coverage=msg.coverage,
            request_id=request_id,
        )
        lease.lease_expire_time.CopyFrom(msg.lease_expire_time)
        lease.issue_time.FromDatetime(self.now())
        if self.edit_lease is not None:
            self.edit_lease(lease)
        payload = lease.SerializeToString(deterministic=True)
        signed = c.SignedLease(
            lease=payload,
            signature=self.private_keys[self.signing_key_id].sign(payload),
            key_id=self.signing_key_id,
        )
        if self.tamper_lease is not None:
            self.tamper_lease(signed)
        return signed

    # -- the service ----------------------------------------------------------------------

    async def _enter(self, method: str, request: Any, context: Any) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or ()}
        self.calls.append(
            Call(method, request, metadata, self.clock.now(), context.time_remaining())
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if method in self.gates:
            await self.gates[method].wait()
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the fake is down")
        await self._as_standby(context)
        for refusal in list(self.refusals):
            if refusal.method == method or (refusal.method is None and method != "GetSigningKeys"):
                self.refusals.remove(refusal)
                await context.abort_with_status(refusal.status())
        if method == "GetSigningKeys":
            return  # needs no credential
        if metadata.get("authorization", "") != "Bearer tsu_fake-key":
            await context.abort_with_status(
                Refusal(grpc.StatusCode.UNAUTHENTICATED, "", "unknown key").status()
            )

    async def _live(self, session_id: str, context: Any) -> FakeSession:
        found = self.sessions.get(session_id)
        if found is None:
            await context.abort_with_status(
                Refusal(grpc.StatusCode.NOT_FOUND, "UNKNOWN_SESSION", "no such session").status()
            )
            raise AssertionError("unreachable")
        return found

    def _tick(self, s: FakeSession) -> None:
        """Server-side idle: 15 minutes after the last activity it heard of."""
        now = self.now()
        if (
            s.msg.state == c.SESSION_STATE_ACTIVE
            and s.msg.product_id in self.idle_aware
            and now >= s.last_activity + IDLE_AFTER
        ):
            s.msg.state = c.SESSION_STATE_IDLE
            s.idle_since = s.last_activity + IDLE_AFTER
        if s.msg.state != c.SESSION_STATE_ENDED and now >= s.msg.lease_expire_time.ToDatetime(
            tzinfo=now.tzinfo
        ):
            self.end(s.msg.session_id, c.END_REASON_LEASE_EXPIRED)

    async def Entitle(self, request: pb.EntitleRequest, context: Any) -> pb.EntitleResponse:
        await self._enter("Entitle", request, context)
        answer = self._entitle(request)
        if self.lost_answers > 0:  # done, but the answer never reaches the caller
            self.lost_answers -= 1
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the answer was lost")
        return answer

    def _entitle(self, request: pb.EntitleRequest) -> pb.EntitleResponse:
        if self.replay_entitle is not None:  # a stand-in replays an answer it recorded
            return self.replay_entitle
        if request.request_id in self.by_request:
            msg = self.sessions[self.by_request[request.request_id]].msg
            return pb.EntitleResponse(session=msg, lease=self.sign(msg, request.request_id))
        now = self.now()
        msg = c.Session(
            session_id=f"ses_{next(self._ids)}",
            user_id="alice@example.com",
            team_id="acme",
            product_id=request.product_id,
            product_version=request.product_version,
            platform=request.platform,
            device_id=request.device_id,
            parent_session_id=request.parent_session_id,
            state=c.SESSION_STATE_ACTIVE,
            coverage=c.COVERAGE_TOKENS,
            plan=c.PLAN_STANDARD,
            daily_rate=10,
            charge_state=c.CHARGE_STATE_GRACE,
            team_available_tokens=90,
        )
        msg.start_time.FromDatetime(now)
        msg.lease_expire_time.FromDatetime(now + self.lease)
        msg.heartbeat_interval.FromTimedelta(self.interval)
        self.sessions[msg.session_id] = FakeSession(msg, now)
        self.by_request[request.request_id] = msg.session_id
        return pb.EntitleResponse(session=msg, lease=self.sign(msg, request.request_id))

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        await self._enter("Heartbeat", request, context)
        s = await self._live(request.session_id, context)
        self._tick(s)
        if s.msg.state == c.SESSION_STATE_ENDED:
            return pb.HeartbeatResponse(session=s.msg)
        now = self.now()
        activity = now - timedelta(seconds=request.seconds_since_activity)
        if s.msg.product_id in self.idle_aware and activity > s.last_activity:
            s.last_activity = activity
            if s.msg.state == c.SESSION_STATE_IDLE and s.idle_since and activity > s.idle_since:
                s.msg.state = c.SESSION_STATE_ACTIVE
                s.idle_since = None
        s.msg.lease_expire_time.FromDatetime(now + self.lease)
        s.msg.heartbeat_interval.FromTimedelta(self.interval)
        if self.replay is not None:  # someone in the middle answers with an old lease...
            answer = c.Session()
            answer.CopyFrom(s.msg)  # ...and makes the session say what it says
            answer.lease_expire_time.CopyFrom(
                c.Lease.FromString(self.replay.lease).lease_expire_time
            )
            return pb.HeartbeatResponse(session=answer, lease=self.replay)
        return pb.HeartbeatResponse(session=s.msg, lease=self.sign(s.msg))

    async def Idle(self, request: pb.IdleRequest, context: Any) -> pb.IdleResponse:
        await self._enter("Idle", request, context)
        s = await self._live(request.session_id, context)
        if s.msg.product_id not in self.idle_aware:
            await context.abort_with_status(
                Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION, "IDLE_NOT_SUPPORTED", "no idle here"
                ).status()
            )
        self._tick(s)
        if s.msg.state == c.SESSION_STATE_ACTIVE:
            s.msg.state = c.SESSION_STATE_IDLE
            s.idle_since = self.now()
        return pb.IdleResponse(session=s.msg)

    async def Release(self, request: pb.ReleaseRequest, context: Any) -> pb.ReleaseResponse:
        await self._enter("Release", request, context)
        s = await self._live(request.session_id, context)
        self._tick(s)
        if s.msg.state != c.SESSION_STATE_ENDED:
            self.end(s.msg.session_id, c.END_REASON_RELEASED)
        return pb.ReleaseResponse(session=s.msg)

    async def ListMyProducts(
        self, request: pb.ListMyProductsRequest, context: Any
    ) -> pb.ListMyProductsResponse:
        await self._enter("ListMyProducts", request, context)
        return pb.ListMyProductsResponse(products=self.my_products)

    async def GetSigningKeys(
        self, request: pb.GetSigningKeysRequest, context: Any
    ) -> pb.GetSigningKeysResponse:
        await self._enter("GetSigningKeys", request, context)
        return pb.GetSigningKeysResponse(
            keys=[
                c.SigningKey(key_id=k, public_key=raw, retired=k != self.signing_key_id)
                for k, raw in self.public_keys().items()
            ]
        )


class FakeAdmin(Served, apb_grpc.AdminServiceServicer):
    """An AdminService holding what the admin client's retry tests need: admin keys
    (``CreateAdminKey``: a new key each time), invitations (``AcceptInvitation``: the user
    key the first time only, as the real server), purchases by ``request_id``
    (``PurchaseTokens``: a repeat returns the first pack) and one team (``GetTeam``).

    ``lost_answers[method]``: that many calls of it are done, then answered
    ``DEADLINE_EXCEEDED`` (the answer lost: what a caller whose deadline passed sees);
    ``refuse`` and ``standby`` as ``FakeLicensing``'s."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.keys: list[str] = []
        self.accepted: set[str] = set()
        self.packs: dict[str, c.TokenPack] = {}
        self.lost_answers: dict[str, int] = {}
        self.refusals: deque[Refusal] = deque()
        self.standby: str | None = None

    async def start(self) -> FakeAdmin:
        await self._serve(apb_grpc.add_AdminServiceServicer_to_server)
        return self

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def _enter(self, method: str, request: Any, context: Any) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() or ()}
        when = datetime(2026, 1, 1, tzinfo=UTC)
        self.calls.append(Call(method, request, metadata, when, context.time_remaining()))
        await self._as_standby(context)
        for refusal in list(self.refusals):
            if refusal.method in (None, method):
                self.refusals.remove(refusal)
                await context.abort_with_status(refusal.status())

    async def _answer(self, method: str, answer: Any, context: Any) -> Any:
        if self.lost_answers.get(method, 0) > 0:  # done, but the answer never arrives
            self.lost_answers[method] -= 1
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return answer

    async def CreateAdminKey(
        self, request: apb.CreateAdminKeyRequest, context: Any
    ) -> apb.CreateAdminKeyResponse:
        await self._enter("CreateAdminKey", request, context)
        key_id = f"ak_{len(self.keys) + 1}"
        self.keys.append(key_id)
        answer = apb.CreateAdminKeyResponse(
            admin_key=f"tsa_secret_{key_id}",
            key=c.AdminKey(admin_key_id=key_id, display_name=request.display_name),
        )
        return await self._answer("CreateAdminKey", answer, context)

    async def AcceptInvitation(
        self, request: apb.AcceptInvitationRequest, context: Any
    ) -> apb.AcceptInvitationResponse:
        await self._enter("AcceptInvitation", request, context)
        first = request.invitation_token not in self.accepted
        self.accepted.add(request.invitation_token)
        answer = apb.AcceptInvitationResponse(
            user_id="ada@example.com", user_key="tsk_ada" if first else ""
        )
        return await self._answer("AcceptInvitation", answer, context)

    async def PurchaseTokens(
        self, request: apb.PurchaseTokensRequest, context: Any
    ) -> apb.PurchaseTokensResponse:
        await self._enter("PurchaseTokens", request, context)
        if request.request_id not in self.packs:
            self.packs[request.request_id] = c.TokenPack(
                pack_id=f"pk_{len(self.packs) + 1}", team_id=request.team_id, tokens=request.tokens
            )
        answer = apb.PurchaseTokensResponse(token_pack=self.packs[request.request_id])
        return await self._answer("PurchaseTokens", answer, context)

    async def GetTeam(self, request: apb.GetTeamRequest, context: Any) -> apb.GetTeamResponse:
        await self._enter("GetTeam", request, context)
        answer = apb.GetTeamResponse(team=c.Team(team_id=request.team_id))
        return await self._answer("GetTeam", answer, context)


@dataclass
class FakeTime:
    """The two time sources of a ``SystemClock``, moved by hand: the wall clock (seconds
    since the epoch) and the steady clock (``CLOCK_BOOTTIME`` on Linux, which goes on
    while the machine is suspended; ``time.monotonic``, which stops, elsewhere)."""

    wall: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    steady: float = 1_000.0

    def sources(self) -> dict[str, Callable[[], float]]:
        """``SystemClock``'s keyword arguments: ``SystemClock(**time.sources())``."""
        return {"wall": lambda: self.wall, "suspend_aware": lambda: self.steady}

    def run(self, seconds: float) -> None:
        """Time goes by, the machine awake."""
        self.wall += seconds
        self.steady += seconds

    def suspend(self, seconds: float, *, steady_counts: bool = True) -> None:
        """The machine sleeps: the wall clock goes on; the steady clock too, unless it is
        one that stops meanwhile (``steady_counts=False``)."""
        self.wall += seconds
        if steady_counts:
            self.steady += seconds


class Proxy:
    """A loopback TCP proxy in front of a server, to lose a response or play dead.

    - ``blackhole()``: pass requests on but swallow everything the server answers;
    - ``drop()``: close every connection now (calls in flight fail ``UNAVAILABLE``);
    - ``go_down()`` / ``go_up()``: refuse (accept and close) new connections, or not.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.swallow = False
        self.down = False
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.target = ""

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.target = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def blackhole(self) -> None:
        self.swallow = True

    def drop(self) -> None:
        self.swallow = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def go_down(self) -> None:
        self.down = True
        self.drop()

    def go_up(self) -> None:
        self.down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update({writer, up_writer})
        for task in (
            asyncio.ensure_future(self._pump(reader, up_writer, upstream=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, upstream=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not upstream and self.swallow:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
            self._writers.discard(writer)


class FakeThread:
    """The fake on its own event loop in a thread, for the synchronous client's tests."""

    def __init__(self, clock: ManualClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake = FakeLicensing(clock)

    def __enter__(self) -> FakeLicensing:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
