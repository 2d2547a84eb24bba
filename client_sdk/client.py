"""``AsyncClient``: the LicensingService calls, with retries, deadlines and typed errors.

Most products only need ``client.session(...)`` (``client_sdk.session``); the
plain calls (``entitle``, ``heartbeat``, ``idle``, ``release``) are there for
those who manage sessions themselves. Either way every signed lease is verified
(``client_sdk.leases``) before a ``Session`` is handed out: a live session comes
with ``Session.lease``, or the call raises ``LeaseInvalid`` (and the SDK releases
the session it refused, so that nothing stays open or charged on its account).

``list_my_products`` tells what the user may run now, through which teams and
what would pay (RULES AD5: the guide's "View Items").

A client may be given several servers (``targets``): the active one and its
standbys. It finds the active and follows it through a takeover
(``client_sdk.failover``, RULES H3), so a session keeps its id and lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client_sdk._retry import RetryPolicy
from client_sdk.clock import Clock, DeadlinePassed, SystemClock, within
from client_sdk.device import default_device_id, default_platform
from client_sdk.errors import ClientClosed, LeaseInvalid, TesseraError, UnknownSigningKey
from client_sdk.failover import Failover, PerAttempt, Targets
from client_sdk.leases import (
    SigningKeysSource,
    match_session,
    public_keys,
    raw_public_key,
    verify_bound,
)
from client_sdk.models import Lease, MyProduct, Platform, Session
from client_sdk.session import (
    AsyncSessionHandle,
    ChargeStateCallback,
    EndedCallback,
    LeaseExpiringCallback,
    SessionOptions,
    StateCallback,
)
from client_sdk.transport import TLS, bearer_secret, open_channel
from tessera_api.tessera.v1 import common_pb2
from tessera_api.tessera.v1 import licensing_service_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from tessera_api.tessera.v1.licensing_service_pb2_grpc import LicensingServiceAsyncStub

log = logging.getLogger("client_sdk")

#: A Heartbeat's ``seconds_since_activity`` is an int64 on the wire.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A release the SDK ran for the product and could not confirm: what it leaves behind.
_UNCONFIRMED = "tessera: releasing %s not confirmed (the server holds it until its lease ends): %s"

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AsyncClient:
    """A product's connection to Tessera, for asyncio code.

    ``target`` is ``host:port``; or ``targets`` lists several servers of one deployment
    (the active and its standbys, any order), which the client follows through a takeover
    (``client_sdk.failover``). ``user_key`` is the user's key, sent on every call as
    ``authorization: Bearer <key>``. ``tls`` is ``False`` (plain), ``True`` (system roots)
    or a ``TLS`` with a root CA and, for mutual TLS, a client certificate and key.
    ``clock`` is where every wait and "how long ago" comes from (``ManualClock`` in tests).
    ``device_id`` and ``platform`` default to this machine's.

    Signed leases are verified with the server's public keys, fetched once from
    ``GetSigningKeys`` and cached (fetched again once when a lease names a key the client
    does not know: a rotation). ``signing_keys`` pins the keys instead (a mapping
    ``key_id -> public key``, or the path of a keys file; see ``client_sdk.leases``): then
    only those are trusted and the server is never asked, unless ``fetch_signing_keys``
    is ``True``.

    Use it as ``async with AsyncClient(...) as client:`` or call ``await client.close()``.
    """

    def __init__(
        self,
        target: str | None = None,
        user_key: str = "",
        *,
        targets: Sequence[str] | None = None,
        tls: TLS | bool = False,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        device_id: str | None = None,
        platform: Platform | None = None,
        session_options: SessionOptions | None = None,
        channel_options: Sequence[tuple[str, int | str]] = (),
        rng: random.Random | None = None,
        signing_keys: SigningKeysSource | None = None,
        fetch_signing_keys: bool | None = None,
    ) -> None:
        user_key = bearer_secret("user_key", user_key)
        if device_id is not None:
            _text("device_id", device_id)
        pinned = public_keys(signing_keys) if signing_keys is not None else {}
        fetch = signing_keys is None if fetch_signing_keys is None else fetch_signing_keys
        if not fetch and not pinned:
            raise ValueError("no signing keys to verify leases with: pin some, or fetch them")
        if (target is None) == (targets is None):
            raise ValueError("give the server as target, or several as targets (not both)")
        self.targets = Targets([target] if target is not None else targets or ())
        self.retry = retry or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self.device_id = device_id or default_device_id()
        self.platform = platform or default_platform()
        self.session_options = session_options or SessionOptions()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        if isinstance(tls, TLS):  # files it cannot use: a ValueError naming them, here
            tls.credentials()
        self._tls = tls
        self._channel_options = tuple(channel_options)
        self._metadata = (("authorization", f"Bearer {user_key}"),)
        self._calls: Failover[LicensingServiceAsyncStub] | None = None
        self._closed = False
        self._handles: set[AsyncSessionHandle] = set()
        #: Whether the client asks the server for its signing keys (see the class docstring).
        self.fetch_signing_keys = fetch
        self._pinned: dict[str, Ed25519PublicKey] = pinned
        self._fetched: dict[str, Ed25519PublicKey] | None = None  # None: not fetched yet
        self._keys_generation = 0  # how many fetches succeeded
        self._keys_lock: asyncio.Lock | None = None
        self._refetched_for: set[str] = set()  # unknown key ids already worth one refetch
        self._cleanups: set[asyncio.Task[None]] = set()
        #: Entries whose Entitle is under way, by it: ``close()`` releases what each opens.
        self._entering: dict[asyncio.Future[Session], AsyncSessionHandle] = {}

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
        """Release the sessions still open (plugins first), then close the channel.

        The sessions are released side by side, each (with its plugins) waiting at most
        its ``SessionOptions.release_timeout`` for the server to confirm it; one not
        confirmed by then ends ``EndReason.RELEASE_UNCONFIRMED`` (``client_sdk.session``).
        So is a session whose own Release did not complete (cancelled, interrupted): the
        client still holds it; one whose leaving is under way is waited for, not sent
        twice. A call still under way when the channel closes fails ``ClientClosed``.
        Releases the SDK runs in the background (of a session whose lease it refused, or
        that an entry cancelled or left unanswered may have opened) are waited for until
        the client's ``session_options.release_timeout`` has passed since ``close()``
        began, so that closing waits about one ``release_timeout`` in all; one still
        unconfirmed then is given up and logged, and the server holds that session until
        its lease ends (RULES M7). An entry whose Entitle is under way when ``close()``
        begins fails ``ClientClosed``, and what the server opens for it is released as
        those are: the product never got the session, so no one else would release it.
        """
        until = self.clock.now() + self.session_options.release_timeout
        entering, self._entering = self._entering, {}
        for entitling, handle in entering.items():
            self._clean_up(handle._release_opened(entitling))
        hosts = [h for h in self._handles if h.parent is None or h.parent not in self._handles]
        await asyncio.gather(*(asyncio.shield(handle._leave()) for handle in hosts))
        for handle in sorted(self._handles, key=lambda h: h.parent is None):
            await asyncio.shield(handle._leave())  # (none left, unless one started meanwhile)
        for handle in list(self._handles):  # not released (cannot be): stop looking after it
            await handle._stop_task()
            handle._detach()
        await self._wait_cleanups(until)
        self._closed = True
        calls, self._calls = self._calls, None
        if calls is not None:
            await calls.close()

    @property
    def target(self) -> str:
        """The server the next call goes to: the last one that answered."""
        return self.targets.current

    def _failover(self) -> Failover[LicensingServiceAsyncStub]:
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._calls is None:
            self._calls = Failover(
                self.targets,
                lambda address: open_channel(address, self._tls, self._channel_options),
                pb_grpc.LicensingServiceStub,
                retry=self.retry,
                clock=self.clock,
                rng=self.rng,
            )
        return self._calls

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
        leaving it releases, also on error or cancellation (an entry cancelled or left
        unanswered releases what the server may have opened, ``client_sdk.session``).
        """
        _text("product_id", product_id)
        _text("version", version)
        _text("team_id", team_id)
        if device_id is not None:
            _text("device_id", device_id)
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

    # -- signing keys ---------------------------------------------------------------------

    async def signing_keys(self, *, refresh: bool = False) -> dict[str, bytes]:
        """The public keys this client trusts to sign leases: ``key_id -> raw 32 bytes``.

        The pinned keys and, when the client fetches them, the server's (fetched on first
        need and cached; ``refresh`` fetches them again). A product may store them
        (``client_sdk.save_signing_keys``) to verify leases at a later start offline.
        """
        if self.fetch_signing_keys and (refresh or self._fetched is None):
            await self._fetch_keys(self._keys_generation)
        return {key_id: raw_public_key(key) for key_id, key in self._trusted().items()}

    def _trusted(self) -> dict[str, Ed25519PublicKey]:
        return {**(self._fetched or {}), **self._pinned}  # a pinned key wins over a fetched one

    async def _fetch_keys(self, seen_generation: int) -> None:
        """Fetch the server's keys (with the retry policy), unless another caller did since
        ``seen_generation``: concurrent sessions share one fetch."""
        if self._keys_lock is None:
            self._keys_lock = asyncio.Lock()
        async with self._keys_lock:
            if self._keys_generation != seen_generation:
                return
            response = await self._invoke(
                lambda s: s.GetSigningKeys, pb.GetSigningKeysRequest(), metadata=()
            )
            fetched: dict[str, Ed25519PublicKey] = {}
            for key in response.keys:
                try:
                    fetched[key.key_id] = Ed25519PublicKey.from_public_bytes(key.public_key)
                except ValueError:
                    log.warning("tessera: ignoring malformed signing key %r", key.key_id)
            self._fetched = fetched
            self._keys_generation += 1

    async def _ensure_keys(self) -> None:
        if self.fetch_signing_keys and self._fetched is None:
            await self._fetch_keys(self._keys_generation)

    async def _verified(
        self,
        session: Session,
        signed: common_pb2.SignedLease | None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        product_id: str | None = None,
        device_id: str | None = None,
        request_id: str | None = None,
    ) -> Session:
        """``session`` with its verified lease; raises ``LeaseInvalid`` (after releasing the
        session) when the lease is not to be trusted, or ``Unavailable`` when the keys to
        check it could not be fetched (nothing is released then: it may be a rotation).
        ``request_id``: an Entitle's, which its lease must carry (``LEASE_MISMATCH``)."""
        if session.ended:
            return session  # an ended session comes without a lease, and needs none
        try:
            if signed is None:
                raise LeaseInvalid(
                    "the server sent no signed lease with a live session", reason="LEASE_MISSING"
                )
            checked = signed
            await self._ensure_keys()
            generation = self._keys_generation

            def verify() -> Lease:
                # A fresh lease: its end is the session's business (it runs on it until
                # then, on its own clock), so only the signature and binding are checked.
                return verify_bound(
                    checked,
                    self._trusted(),
                    session_id=session_id,
                    user_id=user_id,
                    team_id=team_id,
                    product_id=product_id,
                    device_id=device_id,
                    request_id=request_id,
                )

            try:
                lease = verify()
            except UnknownSigningKey:
                if not self.fetch_signing_keys or signed.key_id in self._refetched_for:
                    raise
                log.info("tessera: lease signed by new key %r; fetching the keys", signed.key_id)
                await self._fetch_keys(generation)
                self._refetched_for.add(signed.key_id)
                lease = verify()
            match_session(lease, session)
        except LeaseInvalid as exc:
            exc.session_id = session.session_id
            log.error(
                "tessera: refusing the lease of session %s (%s); releasing it",
                session.session_id,
                exc,
            )
            self._release_refused(session.session_id)
            raise
        return replace(session, lease=lease)

    def _release_refused(self, session_id: str) -> None:
        """Release a session whose lease was refused, in the background (best effort)."""

        self._clean_up(self._release_unwatched(session_id))

    async def _release_unwatched(self, session_id: str) -> None:
        """Release a session nobody holds a handle of, logging (never raising) a release
        not confirmed: failed, or given up by ``close()``."""
        try:
            await self.release(session_id)
        except TesseraError as exc:
            log.warning(_UNCONFIRMED, session_id, exc)
        except asyncio.CancelledError:
            log.warning(_UNCONFIRMED, session_id, "the client closed first")
            raise

    def _clean_up(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a release the product did not wait for) in the background;
        ``close()`` waits for it."""
        if self._closed:  # nothing can be sent any more
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _wait_cleanups(self, until: datetime) -> None:
        """Wait for the background releases until ``until`` on the SDK's clock; cancel
        those still running then (each logs what it leaves on the server)."""
        while self._cleanups:
            pending = asyncio.gather(*list(self._cleanups), return_exceptions=True)
            try:
                await within(self.clock, until, pending)
            except DeadlinePassed:  # out of time: give up what is left (each one logs it)
                left = list(self._cleanups)
                for task in left:
                    task.cancel()
                await asyncio.gather(*left, return_exceptions=True)
                return

    # -- the calls ------------------------------------------------------------------------

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
        """Open a session (RULES M1). Retries reuse ``request_id`` (a new one when None).

        The answer's signed lease is verified: the ``Session`` carries it as ``lease``, or
        ``LeaseInvalid`` is raised (and the session released). The signing keys are fetched
        first when the client has none yet, so that no session opens that it cannot verify.
        """
        for name, value in (
            ("product_id", product_id),
            ("version", version),
            ("parent_session_id", parent_session_id),
            ("team_id", team_id),
        ):
            _text(name, value)
        if device_id is not None:
            _text("device_id", device_id)
        if request_id is not None:
            _text("request_id", request_id)
        await self._ensure_keys()
        device = device_id or self.device_id
        request = pb.EntitleRequest(
            product_id=product_id,
            product_version=version,
            platform=int(self.platform if platform is None else platform),  # type: ignore[arg-type]
            device_id=device,
            parent_session_id=parent_session_id,
            request_id=request_id or new_request_id(),
            takeover=takeover,
            team_id=team_id,
        )
        response = await self._invoke(lambda s: s.Entitle, request)
        return await self._verified(
            Session.from_proto(response.session),
            response.lease if response.HasField("lease") else None,
            product_id=product_id,
            device_id=device,
            # This Entitle's answer, not one recorded earlier and replayed (M7).
            request_id=request.request_id,
        )

    async def heartbeat(self, session_id: str, seconds_since_activity: int = 0) -> Session:
        """Extend the lease and report how long ago the user last did something (M6, M7).

        The extended lease is verified as for ``entitle``; when it names a key the client
        does not know and the keys cannot be fetched again, the call raises ``Unavailable``
        (the heartbeat itself did reach the server).
        """
        return await self._heartbeat(session_id, seconds_since_activity)

    async def _heartbeat(
        self,
        session_id: str,
        seconds_since_activity: float,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        product_id: str | None = None,
        device_id: str | None = None,
    ) -> Session:
        response = await self._invoke(
            lambda s: s.Heartbeat, self._aging(session_id, seconds_since_activity)
        )
        return await self._verified(
            Session.from_proto(response.session),
            response.lease if response.HasField("lease") else None,
            session_id=session_id,
            user_id=user_id,
            team_id=team_id,
            product_id=product_id,
            device_id=device_id,
        )

    def _aging(
        self, session_id: str, seconds_since_activity: float
    ) -> PerAttempt[pb.HeartbeatRequest]:
        """The Heartbeat's request, built for each attempt: one sent again after a wait
        (a ``RetryInfo``, a backoff) reports the activity as old as it is when it goes
        out, by the client's clock (RULES M6: else the server would take the user's last
        action for newer than it was, by the wait, and idle the session that much later).

        A negative figure, the caller's mistake, goes out as it is, for the server to
        refuse naming the field (sent as 0 it would say "just now" and wake an idle
        session); a whole number is added to in whole numbers, up to int64's largest,
        which the server takes as "before the session began"."""
        built = self.clock.now()

        def request() -> pb.HeartbeatRequest:
            if seconds_since_activity < 0:
                age = max(_INT64_MIN, math.floor(seconds_since_activity))
            else:
                waited = max(0.0, (self.clock.now() - built).total_seconds())
                if isinstance(seconds_since_activity, int):
                    age = seconds_since_activity + math.floor(waited)
                else:
                    age = math.floor(seconds_since_activity + waited)
                age = min(_INT64_MAX, age)
            return pb.HeartbeatRequest(session_id=session_id, seconds_since_activity=age)

        return PerAttempt(request)

    async def idle(self, session_id: str) -> Session:
        """Tell the server the user stopped working (M6)."""
        response = await self._invoke(lambda s: s.Idle, pb.IdleRequest(session_id=session_id))
        return Session.from_proto(response.session)

    async def release(self, session_id: str) -> Session:
        """End a session (M10); releasing twice is harmless."""
        response = await self._invoke(lambda s: s.Release, pb.ReleaseRequest(session_id=session_id))
        return Session.from_proto(response.session)

    async def list_my_products(self) -> list[MyProduct]:
        """The products this user may run now, by product id: through which teams, at which
        daily rate, and what would pay an Entitle now (RULES AD5). A read: retried freely."""
        response = await self._invoke(lambda s: s.ListMyProducts, pb.ListMyProductsRequest())
        return [MyProduct.from_proto(p) for p in response.products]

    # -- the one place a call is made -----------------------------------------------------

    async def _invoke(
        self,
        method: Callable[
            [LicensingServiceAsyncStub], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]
        ],
        request: _Req | PerAttempt[_Req],
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _Resp:
        """One call with a deadline per attempt, retried with backoff on transient failures
        and moved to the active server (``client_sdk.failover``).

        The same request object (hence the same ``request_id``) is sent every time, unless
        it is built for each attempt (``PerAttempt``), with the user's key unless
        ``metadata`` says otherwise. Every ``grpc.RpcError`` is turned into a
        ``TesseraError``.
        """
        sent = self._metadata if metadata is None else tuple(metadata)
        return await self._failover().call(method, request, sent)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def _text(name: str, value: object) -> str:
    """``value``, which must be a ``str`` (``TypeError`` naming ``name`` otherwise)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value
