"""Sessions that look after themselves (issue 5, Client SDK §2-§4).

``AsyncSessionHandle`` entitles on entry and, until it is left, runs one
background task that:

- heartbeats at the interval the server suggests (with jitter), reporting how
  long ago ``touch()`` was last called (RULES M6, M7);
- for idle-aware products, calls ``Idle`` once the user has been inactive for
  the idle threshold, and heartbeats at once on the next ``touch()`` so that the
  session is active again; it also makes sure the server hears of fresh activity
  before the server's own idle deadline;
- while the server is unreachable keeps the session usable, retries at least
  every ``offline_retry_interval``, warns ``lease_warning`` before the lease ends
  (so also when the server answers but refuses to renew it), and ends the session
  (``LEASE_EXPIRED``) when the lease is over, on the SDK's clock (``usable`` is
  false from then, even while a heartbeat is still being retried);
- after a call the server refused (a rate limit, a server error), waits before trying
  again: activity still to report goes out ``offline_retry_interval`` later at the
  soonest (or after the server's ``RetryInfo``, if longer), and a refusal repeated
  is logged once;
- notices when the server ended the session (taken over, insufficient tokens,
  not assigned, ended by an administrator) and tells the callbacks; a call the
  server refuses for the user's key (``UNAUTHENTICATED``: a new key was issued for
  the user, or the key was revoked) ends it ``EndReason.KEY_REFUSED``, one refused
  ``NOT_ASSIGNED`` ends it ``EndReason.NOT_ASSIGNED``, one refused ``NOT_FOUND``
  (``UNKNOWN_SESSION``: the server no longer knows the session, ended by an
  administrator and forgotten, or the server restored from a backup) ends it
  ``EndReason.UNKNOWN_SESSION`` (start a new session), and one refused otherwise for
  good ends it ``EndReason.UNSPECIFIED``, as no reason says that;
- verifies the signed lease of every Entitle and Heartbeat answer
  (``client_sdk.leases``) and keeps the last one as ``lease``.

Leaving the ``async with`` block releases the session's plugins, then the
session, also on error or cancellation, waiting at most
``SessionOptions.release_timeout`` (5 s by default, on the SDK's clock) for the
server to confirm it: a server that hangs or is away does not hold the product
for the retry policy's whole course (up to 30 s with the defaults). A release
not confirmed (out of time, or failed) ends the session
``EndReason.RELEASE_UNCONFIRMED``, never ``RELEASED``, with the error in
``error``: the server may still hold the session live until its lease ends
(RULES M7), or until a later ``AsyncClient.release(session_id)`` reaches it.
(Leaving is shielded: cancelling the block's task while it leaves does not stop the
Release.) A Release that did not complete (``release()`` cancelled before the server
answered) ends nothing: the client keeps the session, and ``AsyncClient.close()``
releases it (or ends it ``RELEASE_UNCONFIRMED``); a leaving still under way is waited
for, not sent twice.
Entering it too: a cancellation while the
Entitle is on its way lets the call finish and releases what it opened, and an
entry that fails ``Unavailable`` (``DeadlineExceeded``: the server may have opened
the session, only its answer lost) sends the Entitle once more under the same
``request_id`` and releases what it answers with; both in the background, and
``AsyncClient.close()`` waits for them (and for the Release of a session whose lease
was refused, ``client_sdk.client``) until one ``release_timeout`` has passed since it
began. One not confirmed by then is given up and logged: the server holds that
session until its lease ends. When a host ends (the server ended it, or the SDK did),
each of its plugins is released within its own ``release_timeout`` too, and ends
``EndReason.HOST_ENDED`` confirmed or not.

The signed lease is the authority for how long the product may run without the
server, tracked on the SDK's own clock so that the server's and the product's
clocks need not agree: the first lease ends its ``span`` (``lease_expire_time -
issue_time``, both signed) after the Entitle was *sent*; each later one moves
that end by as much as the server moved the signed ``lease_expire_time``, and
never past its own span after the Heartbeat was sent. So a lease replayed by
someone between the product and the server extends nothing. The clocks need not
agree at all: the signed times of a lease the server answers with are never compared
with the SDK's clock (its signature and whom it is for are checked, not its end:
``verify_lease``'s expiry check, leeway and all, is for a lease stored and read back),
so a lease whose signed end is already past on the SDK's clock (a server on a test
clock, or one whose clock is off) is taken all the same, its end on the SDK's clock
set as above. What stops an Entitle answer recorded once and replayed later is its
binding instead: each handle's Entitle goes out under a ``request_id`` of its own
(sent again only for that same Entitle: its retries, ``start()`` again, the one asked
again after a failed entry), which its lease must carry, else ``LeaseInvalid``
(``LEASE_MISMATCH``).

A lease that fails verification is refused:

- on entry (Entitle), ``start()`` / ``async with`` raises ``LeaseInvalid`` and
  the session never becomes usable;
- on a Heartbeat, the session ends at once: ``end_reason`` is
  ``EndReason.LEASE_INVALID``, ``error`` the ``LeaseInvalid``, ``on_ended``
  fires, plugins end with it. The product should stop as for any other end (save
  the user's work, say why): something between it and the real server cannot be
  trusted, and running on that answer would be running unlicensed. (When the keys
  to check a rotated key's lease cannot be fetched, that is no refusal: the
  session goes on offline, on the lease it has.)

Either way the SDK releases the refused session on the server, best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from client_sdk.clock import DeadlinePassed, within
from client_sdk.errors import (
    ClientClosed,
    DeadlineExceeded,
    IdleNotSupported,
    LeaseInvalid,
    NotAssigned,
    NotFound,
    PermissionDenied,
    SessionEnded,
    TesseraError,
    Unauthenticated,
    Unavailable,
    UnknownSession,
)
from client_sdk.models import ChargeState, EndReason, Lease, Platform, Session, SessionState

if TYPE_CHECKING:
    from client_sdk.client import AsyncClient

log = logging.getLogger("client_sdk")

EndedCallback = Callable[[EndReason, Session], Awaitable[None] | None]
LeaseExpiringCallback = Callable[[Session, timedelta], Awaitable[None] | None]
ChargeStateCallback = Callable[[ChargeState, ChargeState, Session], Awaitable[None] | None]
StateCallback = Callable[[SessionState, SessionState, Session], Awaitable[None] | None]

DEFAULT_LEASE = timedelta(hours=24)

_T = TypeVar("_T")


@dataclass(frozen=True)
class SessionOptions:
    """How a session looks after itself.

    - ``idle_threshold``: inactivity after which the SDK calls ``Idle`` (RULES M6).
    - ``idle_aware``: whether the product supports idle awareness; ``None`` finds out (an
      ``Idle`` refused with ``IDLE_NOT_SUPPORTED`` turns it off for the session).
    - ``lease_warning``: how long before a lease that was not renewed ends (offline, or
      its heartbeats refused) ``on_lease_expiring`` fires.
    - ``heartbeat_jitter``: each interval is the server's, plus or minus this fraction.
    - ``default_heartbeat_interval``: used when the server suggests none.
    - ``offline_retry_interval``: while the server is unreachable, try at least this often.
    - ``activity_report_margin``: how long before the server's idle deadline a heartbeat
      carries fresh activity that the server has not heard of yet.
    - ``release_timeout``: the longest leaving the session (its ``async with`` block, the
      sync ``with``, ``AsyncClient.close()``) waits, on the SDK's clock, for the server to
      confirm the Release of the session and its plugins, retries included; past it, or
      when the Release fails, the session ends ``EndReason.RELEASE_UNCONFIRMED``. A few
      seconds: a server that answers confirms within milliseconds, and a product closing
      must not hang on one that does not (the retry policy alone allows up to 30 s).
    """

    idle_threshold: timedelta = timedelta(minutes=15)
    idle_aware: bool | None = None
    lease_warning: timedelta = timedelta(hours=1)
    heartbeat_jitter: float = 0.1
    default_heartbeat_interval: timedelta = timedelta(minutes=5)
    offline_retry_interval: timedelta = timedelta(minutes=1)
    activity_report_margin: timedelta = timedelta(seconds=30)
    release_timeout: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        for name in (
            "idle_threshold",
            "lease_warning",
            "default_heartbeat_interval",
            "offline_retry_interval",
            "activity_report_margin",
            "release_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, timedelta):
                raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
        if self.idle_aware is not None and not isinstance(self.idle_aware, bool):
            raise TypeError("idle_aware must be True, False or None")
        if isinstance(self.heartbeat_jitter, bool) or not isinstance(
            self.heartbeat_jitter, int | float
        ):
            raise TypeError("heartbeat_jitter must be a number (a fraction)")
        if self.idle_threshold <= timedelta(0):
            raise ValueError("idle_threshold must be positive")
        if not 0.0 <= self.heartbeat_jitter < 1.0:
            raise ValueError("heartbeat_jitter is a fraction between 0 and 1")
        if self.default_heartbeat_interval <= timedelta(0):
            raise ValueError("default_heartbeat_interval must be positive")
        if self.offline_retry_interval <= timedelta(0):
            raise ValueError("offline_retry_interval must be positive")
        if self.lease_warning < timedelta(0):
            raise ValueError("lease_warning must not be negative")
        if self.activity_report_margin < timedelta(0):
            raise ValueError("activity_report_margin must not be negative")
        if self.release_timeout <= timedelta(0):
            raise ValueError("release_timeout must be positive")


# Background tasks the SDK must keep a reference to (callbacks, releases under cancellation).
_background: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class AsyncSessionHandle:
    """One session of a product or plugin, kept alive in the background.

    ``session`` is always the latest ``Session`` the server sent (or the SDK's own
    ending of it); ``usable`` says whether the product may go on running.
    """

    def __init__(
        self,
        client: AsyncClient,
        product_id: str,
        version: str,
        *,
        platform: Platform,
        device_id: str,
        takeover: bool = False,
        team_id: str = "",
        options: SessionOptions,
        parent: AsyncSessionHandle | None = None,
        on_ended: EndedCallback | None = None,
        on_lease_expiring: LeaseExpiringCallback | None = None,
        on_charge_state_changed: ChargeStateCallback | None = None,
        on_state_changed: StateCallback | None = None,
    ) -> None:
        from client_sdk.client import new_request_id

        self._client = client
        self._clock = client.clock
        self.product_id = product_id
        self.version = version
        self.platform = platform
        self.device_id = device_id
        self.takeover = takeover
        self.team_id = team_id
        self.options = options
        self.parent = parent
        self.request_id = new_request_id()
        self._ended_cbs: list[EndedCallback] = [on_ended] if on_ended else []
        self._lease_cbs: list[LeaseExpiringCallback] = (
            [on_lease_expiring] if on_lease_expiring else []
        )
        self._charge_cbs: list[ChargeStateCallback] = (
            [on_charge_state_changed] if on_charge_state_changed else []
        )
        self._state_cbs: list[StateCallback] = [on_state_changed] if on_state_changed else []

        self._session: Session | None = None
        self._started = False
        self._entitle_sent = False  # whether an Entitle went out (the server may have opened it)
        self._closed = False
        self._leaving: asyncio.Task[None] | None = None  # _leave()'s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ended_event = asyncio.Event()
        self._plugins: list[AsyncSessionHandle] = []
        self._idle_aware = options.idle_aware
        # All on the SDK's clock:
        self._last_activity: datetime = self._clock.now()
        self._reported_activity: datetime = self._last_activity
        self._idle_tried_for: datetime | None = None
        self._lease: Lease | None = None  # the last verified signed lease
        self._lease_end: datetime = self._last_activity + DEFAULT_LEASE  # set by the first lease
        self._interval = options.default_heartbeat_interval
        self._next_heartbeat: datetime = self._last_activity
        self._resume = False
        self._online = True
        self._warned = False
        # After a heartbeat that failed (refused, or no server), no heartbeat goes out early
        # (to report activity, or to come back from idle) before this: no retry storm.
        self._hold_until: datetime = self._last_activity
        self._last_warning: str | None = None  # the background failure last logged
        #: The last error the background task met (the caller never sees it raised).
        self.error: TesseraError | None = None

    # -- what the product reads -----------------------------------------------------------

    @property
    def session(self) -> Session:
        """The latest ``Session``; available once the session has started."""
        if self._session is None:
            raise RuntimeError("the session has not started; use `async with` or start()")
        return self._session

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def state(self) -> SessionState:
        return self._session.state if self._session else SessionState.UNSPECIFIED

    @property
    def ended(self) -> bool:
        return self._ended_event.is_set()

    @property
    def end_reason(self) -> EndReason | None:
        return self._session.end_reason if self.ended and self._session else None

    @property
    def usable(self) -> bool:
        """Started, not ended, and its lease not past its end on the SDK's clock: the
        product may run (offline too, until the lease ends; also while a heartbeat is
        still being retried when it ends)."""
        return self._session is not None and not self.ended and self._clock.now() < self._lease_end

    @property
    def online(self) -> bool:
        """Whether the last call to the server got through."""
        return self._online

    @property
    def lease(self) -> Lease | None:
        """The last signed lease the SDK verified (``None`` before the session starts).

        Its times are the server's; ``lease.signed`` is the lease as bytes, for a product
        that stores it to check again at its next start (``client_sdk.verify_lease``).
        """
        return self._lease

    @property
    def lease_expires_at(self) -> datetime:
        """When the verified lease ends, on the SDK's clock (the server's is
        ``lease.lease_expire_time``): the session stays usable offline until then."""
        return self._lease_end

    @property
    def last_activity(self) -> datetime:
        return self._last_activity

    @property
    def plugins(self) -> tuple[AsyncSessionHandle, ...]:
        return tuple(self._plugins)

    def ensure_usable(self) -> None:
        """Raise ``SessionEnded`` if the session is over."""
        if self._session is None:
            raise RuntimeError("the session has not started")
        if not self.ended and self._clock.now() >= self._lease_end:
            self._lease_ended()  # (the task may be retrying a heartbeat still)
        if self.ended:
            raise SessionEnded(self.end_reason or EndReason.UNSPECIFIED)

    async def wait_ended(self) -> EndReason:
        """Wait until the session ends, however it ends; returns why."""
        await self._ended_event.wait()
        return self.end_reason or EndReason.UNSPECIFIED

    # -- what the product does ------------------------------------------------------------

    def on_ended(self, callback: EndedCallback) -> EndedCallback:
        """Call ``callback(reason, session)`` once when the session ends, however it ends."""
        self._ended_cbs.append(callback)
        return callback

    def on_lease_expiring(self, callback: LeaseExpiringCallback) -> LeaseExpiringCallback:
        """Call ``callback(session, remaining)`` when the lease is about to end offline."""
        self._lease_cbs.append(callback)
        return callback

    def on_charge_state_changed(self, callback: ChargeStateCallback) -> ChargeStateCallback:
        """Call ``callback(old, new, session)`` when the charge state changes: each change
        once, in the order it happened (after the state change that caused it: idle, back,
        ended), a renewal the server made between two answers too (CHARGED -> GRACE ->
        CHARGED, when the next answer shows the next day's window)."""
        self._charge_cbs.append(callback)
        return callback

    def on_state_changed(self, callback: StateCallback) -> StateCallback:
        """Call ``callback(old, new, session)`` when the session goes active, idle or ended."""
        self._state_cbs.append(callback)
        return callback

    def touch(self) -> None:
        """Record meaningful activity now (cheap; call it as often as the user acts).

        An idle session heartbeats at once to become active again. A plugin's activity
        is its host's activity too.
        """
        self._touch_at(self._clock.now())

    def _touch_at(self, now: datetime) -> None:
        first_news = self._last_activity <= self._reported_activity
        if now > self._last_activity:
            self._last_activity = now
        if self._session is not None and not self.ended:
            if self._session.idle:
                self._resume = True
                self._wake.set()
            elif first_news and now > self._reported_activity:
                self._wake.set()  # the task must now plan to report it before the server idles
        if self.parent is not None:
            self.parent._touch_at(now)

    def plugin(
        self,
        product_id: str,
        version: str | None = None,
        *,
        options: SessionOptions | None = None,
        on_ended: EndedCallback | None = None,
        on_lease_expiring: LeaseExpiringCallback | None = None,
        on_charge_state_changed: ChargeStateCallback | None = None,
        on_state_changed: StateCallback | None = None,
    ) -> AsyncSessionHandle:
        """A plugin session bound to this one (same device; ``version`` defaults to the host's).

        Use it as ``async with s.plugin("ARNOLD") as p:``. It ends when this session ends.
        """
        return AsyncSessionHandle(
            self._client,
            product_id,
            version or self.version,
            platform=self.platform,
            device_id=self.device_id,
            team_id=self.team_id,
            options=options or self.options,
            parent=self,
            on_ended=on_ended,
            on_lease_expiring=on_lease_expiring,
            on_charge_state_changed=on_charge_state_changed,
            on_state_changed=on_state_changed,
        )

    async def __aenter__(self) -> AsyncSessionHandle:
        from client_sdk.client import new_request_id

        if not self._started:  # a handle already started with start() is simply managed
            try:
                await self.start()
            except Unavailable:
                if not self._entitle_sent:
                    raise
                # No answer in time (or the connection lost): the server may have opened
                # the session all the same. The handle is dropped now (no __aexit__ after a
                # failed entry), so ask once more under the same request_id (M11: the
                # server answers with that session) and release whatever comes back; a
                # session opened only now is released within its grace, uncharged.
                self._client._clean_up(self._release_opened(self._entitle(takeover=False)))
                self.request_id = new_request_id()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded, so that a cancellation arriving now does not leave the session open.
        await asyncio.shield(self._leave())

    async def start(self) -> Session:
        """Entitle and start looking after the session (what ``async with`` does on entry).

        When it fails (``Unavailable`` after every retry, say), ``start()`` may be called
        again on the same handle: it reuses the handle's ``request_id``. (``async with``
        does not: it releases what the server may have opened; see the module docstring.)
        When cancelled, the Entitle is let finish and what it opened released.
        """
        from client_sdk.client import new_request_id

        if self._started:
            raise RuntimeError("a session handle starts once; make a new one")
        if self.parent is not None:
            self.parent.ensure_usable()
        self._started = True
        try:
            await self._client._ensure_keys()  # (no Entitle sent yet if this fails)
        except BaseException:
            self._started = False
            raise
        self._entitle_sent = True
        sent = self._clock.now()
        # The Entitle runs on when the caller is cancelled: the server may open the
        # session whatever happens here, and what it opens must be released.
        entitling = asyncio.ensure_future(self._entitle(takeover=self.takeover))
        client = self._client
        client._entering[entitling] = self  # close() meanwhile releases what it opens
        try:
            session = await asyncio.shield(entitling)
        except asyncio.CancelledError:
            self._started = False
            if client._entering.pop(entitling, None) is not None:  # (else close()'s to do)
                client._clean_up(self._release_opened(entitling))
            self.request_id = new_request_id()  # that session is being released: not reused
            raise
        except BaseException:
            # Starting again sends the same request_id: if the server did open the session
            # (and only the answer was lost), it answers with that session, charged once.
            client._entering.pop(entitling, None)
            self._started = False
            raise
        if client._entering.pop(entitling, None) is None:  # the client is closing
            self._started = False
            self.request_id = new_request_id()  # that session is being released: not reused
            raise ClientClosed(
                "the client was closed while this session was being opened: it is released"
            )
        self._last_activity = self._reported_activity = max(self._last_activity, sent)
        self._apply(session, sent, extends_lease=True)
        if self.parent is not None:
            self.parent._plugins.append(self)
        self._client._handles.add(self)
        if not self.ended:
            self._task = asyncio.create_task(
                self._run(), name=f"tessera-session-{session.session_id}"
            )
        return session

    async def release(self, *, timeout: timedelta | None = None) -> Session:
        """Release the plugins, then the session; stop looking after it.

        ``timeout`` bounds the whole of it, plugins included, on the SDK's clock (what
        leaving the ``async with`` block does, with ``SessionOptions.release_timeout``);
        ``None``, the default, is for a caller who wants the server's answer: each Release
        waits as long as the client's retry policy lets the call go on (20 to 30 s with the
        defaults, on a server that does not answer), the plugins' side by side, then the
        session's own, which is always sent; so up to twice that in all. A product that is
        closing leaves the block or calls ``AsyncClient.close()``, both bounded. Raises the
        ``TesseraError`` the server answered with, or ``DeadlineExceeded`` when
        ``timeout`` passed first; the session is ended all the same, with
        ``EndReason.RELEASE_UNCONFIRMED`` (the server may still hold it live) and the
        error in ``error``, or ``EndReason.UNKNOWN_SESSION`` when the server answered
        that it no longer knows the session (it holds nothing for it). Releasing an
        ended session returns it unchanged. A release cancelled (or interrupted) before
        the server answered ends nothing: the session may be live, so the handle stays the
        client's (no longer heartbeated), and ``release()`` again or ``AsyncClient.close()``
        releases it.
        """
        if timeout is not None and timeout <= timedelta(0):
            raise ValueError("timeout must be positive (or None)")
        return await self._release(None if timeout is None else self._clock.now() + timeout)

    async def _release(self, until: datetime | None) -> Session:
        """``release``, done by ``until`` on the SDK's clock (``None``: no bound). The
        plugins are released side by side within the first half of what is left, so that
        plugins the server does not answer cannot leave the session's own Release no
        time: unreleased, the session stays live until its lease ends, and may be charged
        another day (RULES M5)."""
        await self._stop_task()
        plugins_until = None if until is None else until - (until - self._clock.now()) / 2
        await asyncio.gather(
            *(plugin._release(plugins_until) for plugin in list(self._plugins)),
            return_exceptions=True,  # (each plugin's end says how it went)
        )
        if self._session is None:  # nothing to release; it may still start (and be released)
            raise RuntimeError("the session never started")
        if self.ended:
            self._detach()
            return self._session
        session_id = self._session.session_id
        # Detached only once the session is over (released, or ended here): a Release
        # cancelled (or interrupted otherwise) before the answer leaves the session live as
        # far as anyone knows, so the handle stays the client's (no longer looked after),
        # and AsyncClient.close() releases it, or ends it RELEASE_UNCONFIRMED.
        try:
            session = await self._by(until, self._client.release(session_id), session_id)
        except TesseraError as exc:
            self.error = exc
            # (a server that no longer knows the session holds nothing for it)
            reason = (
                EndReason.UNKNOWN_SESSION
                if isinstance(exc, UnknownSession)
                else EndReason.RELEASE_UNCONFIRMED
            )
            self._finish(self._session.ended_locally(reason, None))
            self._detach()
            raise
        self._detach()
        if not session.ended:  # a server that does not end it on Release is wrong; end it here
            session = session.ended_locally(EndReason.RELEASED, None)
        self._finish(session)
        return session

    # -- internals ------------------------------------------------------------------------

    def _entitle(self, *, takeover: bool) -> Coroutine[Any, Any, Session]:
        """The Entitle of this handle (always under its ``request_id``)."""
        return self._client.entitle(
            self.product_id,
            self.version,
            platform=self.platform,
            device_id=self.device_id,
            parent_session_id=self._parent_id(),
            takeover=takeover,
            team_id=self.team_id,
            request_id=self.request_id,
        )

    def _parent_id(self) -> str:
        return self.parent._session.session_id if self.parent and self.parent._session else ""

    async def _release_opened(self, entitling: Awaitable[Session]) -> None:
        """Release the session an Entitle whose caller left opened, if it opened one."""
        try:
            session = await entitling
        except Exception:
            return  # refused or unanswered: nothing to release that we know of
        except asyncio.CancelledError:  # given up by AsyncClient.close()
            log.warning(
                "tessera: the client closed before an Entitle of %s answered: a session it "
                "opened is not released (the server holds it until its lease ends)",
                self.product_id,
            )
            raise
        if session.ended:
            return
        log.warning(
            "tessera: releasing session %s: its Entitle's caller left before it answered",
            session.session_id,
        )
        await self._client._release_unwatched(session.session_id)

    def _leave(self) -> asyncio.Task[None]:
        """Leaving the session (``__aexit__``, the sync ``with``, ``AsyncClient.close()``,
        each waiting for it shielded) in a task of its own, so that a cancellation of whoever
        waits does not stop it. While one is under way, leaving again waits for the same
        one: one Release, not two."""
        if self._leaving is None or self._leaving.done():
            self._leaving = _keep(asyncio.ensure_future(self._release_quietly()))
        return self._leaving

    async def _release_quietly(self) -> None:
        """Leaving the session: release it within ``release_timeout``, raising nothing."""
        if self._session is None or self._closed:
            await self._stop_task()  # whatever else, nothing runs on after this
            return
        try:
            await self.release(timeout=self.options.release_timeout)
        except TesseraError as exc:
            log.warning(
                "tessera: releasing %s not confirmed (the server may hold it until its "
                "lease ends): %s",
                self._session.session_id,
                exc,
            )

    async def _by(
        self, until: datetime | None, call: Coroutine[Any, Any, _T], session_id: str
    ) -> _T:
        """``call``'s answer, or ``DeadlineExceeded`` (the call cancelled) once the SDK's
        clock reaches ``until``."""
        if until is None:
            return await call
        try:
            return await within(self._clock, until, call)
        except DeadlinePassed:
            raise DeadlineExceeded(
                f"the server did not confirm the Release of {session_id} in time"
            ) from None

    def _detach(self) -> None:
        self._closed = True
        self._client._handles.discard(self)
        if self.parent is not None and self in self.parent._plugins:
            self.parent._plugins.remove(self)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _apply(self, session: Session, sent: datetime, *, extends_lease: bool) -> None:
        """Take a response: the new session, its lease, its interval, and the callbacks."""
        old = self._session
        self._session = session
        if extends_lease and not session.ended and session.lease is not None:
            self._lease_end = self._next_lease_end(session.lease, sent)
            self._lease = session.lease
            self._online = True
            self._warned = False
        if session.heartbeat_interval and session.heartbeat_interval > timedelta(0):
            self._interval = session.heartbeat_interval
        if old is not None and not session.ended:
            # The cause before its effect: idle (or back), then the grace given up (or begun).
            if old.state != session.state:
                for state_cb in self._state_cbs:
                    self._fire(state_cb, old.state, session.state, session)
            for before, after in _charge_changes(old, session):
                for charge_cb in self._charge_cbs:
                    self._fire(charge_cb, before, after, session)
        if session.ended:
            self._finish(session, previous=old)

    def _next_lease_end(self, lease: Lease, sent: datetime) -> datetime:
        """Where a newly verified lease puts the end, on the SDK's clock (module docstring)."""
        fresh = sent + lease.span
        held = self._lease
        if held is None:
            return fresh
        moved = lease.lease_expire_time - held.lease_expire_time
        if moved <= timedelta(0) and lease.issue_time <= held.issue_time:
            log.info(
                "tessera: session %s got a lease no newer than the one it holds (replayed?)",
                lease.session_id,
            )
        return min(fresh, self._lease_end + moved)

    def _finish(self, session: Session, previous: Session | None = None) -> None:
        """The session is over: record it, tell the callbacks once, end the plugins."""
        if self._ended_event.is_set():
            return
        before = previous or self._session or session
        old_state = before.state
        self._session = session
        self._ended_event.set()
        self._wake.set()
        if old_state is not SessionState.ENDED:
            for state_cb in self._state_cbs:
                self._fire(state_cb, old_state, SessionState.ENDED, session)
        if before.charge_state != session.charge_state:
            for charge_cb in self._charge_cbs:
                self._fire(charge_cb, before.charge_state, session.charge_state, session)
        for ended_cb in self._ended_cbs:
            self._fire(ended_cb, session.end_reason, session)
        # A key the server refused would be refused for the plugins' Release too.
        tell = session.end_reason is not EndReason.KEY_REFUSED
        for plugin in list(self._plugins):
            _keep(asyncio.ensure_future(plugin._host_ended(tell_the_server=tell)))

    async def _host_ended(self, *, tell_the_server: bool = True) -> None:
        """The host is over, so this plugin is too (the server ended it: HOST_ENDED).

        Its Release waits at most ``release_timeout``, as leaving a session does; one not
        confirmed still ends the plugin ``HOST_ENDED`` (its host is over either way; the
        server ends a host's plugins with it), the error in ``error``. Without
        ``tell_the_server`` (the host's key was refused) nothing is sent."""
        await self._stop_task()
        if self.ended or self._session is None:
            self._detach()
            return
        if not tell_the_server:
            self._detach()
            self._finish(self._session.ended_locally(EndReason.HOST_ENDED, None))
            return
        session_id = self._session.session_id
        until = self._clock.now() + self.options.release_timeout
        try:
            session = await self._by(until, self._client.release(session_id), session_id)
        except TesseraError as exc:
            self.error = exc
            log.warning("tessera: releasing plugin %s not confirmed: %s", session_id, exc)
            session = self._session.ended_locally(EndReason.HOST_ENDED, None)
        self._detach()
        if not session.ended:
            session = session.ended_locally(EndReason.HOST_ENDED, None)
        self._finish(session)

    def _fire(self, callback: Callable[..., Awaitable[None] | None], *args: object) -> None:
        result: Awaitable[None] | None = None
        with _contained():
            result = callback(*args)
        if inspect.isawaitable(result):
            _keep(asyncio.ensure_future(_guard(result)))

    def _jittered(self, span: timedelta) -> timedelta:
        j = self.options.heartbeat_jitter
        return span * (1.0 + j * (2.0 * self._client.rng.random() - 1.0))

    # -- the background task --------------------------------------------------------------

    def _idle_due_at(self) -> datetime | None:
        """When the SDK should call Idle, if it should."""
        s = self._session
        if (
            s is None
            or self._idle_aware is False
            or not self._online
            or s.state is not SessionState.ACTIVE
            or self._idle_tried_for == self._last_activity
        ):
            return None
        # An Idle refused (a rate limit, a server error) is sent again after the pause.
        return max(self._hold_until, self._last_activity + self.options.idle_threshold)

    def _report_due_at(self) -> datetime | None:
        """When fresh activity must reach the server, before its own idle deadline."""
        s = self._session
        if (
            s is None
            or self._idle_aware is False
            or not self._online
            or s.state is not SessionState.ACTIVE
            or self._last_activity <= self._reported_activity
        ):
            return None
        margin = min(self.options.activity_report_margin, self.options.idle_threshold / 10)
        return max(self._hold_until, self._reported_activity + self.options.idle_threshold - margin)

    def _next_wake(self) -> datetime:
        times = [self._next_heartbeat, self._lease_end]
        if not self._warned:  # (a lease renewed moves it out: online, it never comes)
            times.append(self._lease_end - self.options.lease_warning)
        for due in (self._idle_due_at(), self._report_due_at()):
            if due is not None:
                times.append(due)
        if self._resume:
            times.append(self._hold_until)
        return min(times)

    async def _sleep_until(self, when: datetime) -> None:
        """Sleep on the SDK clock until ``when``, or until woken (touch, release)."""
        delay = (when - self._clock.now()).total_seconds()
        if delay <= 0 or self._wake.is_set():
            await asyncio.sleep(0)  # even then, let the rest of the program run
            return
        with contextlib.suppress(DeadlinePassed):
            await within(self._clock, when, self._wake.wait())

    async def _run(self) -> None:
        try:
            self._next_heartbeat = self._clock.now() + self._jittered(self._interval)
            while not self.ended:
                await self._sleep_until(self._next_wake())
                self._wake.clear()
                if self.ended:
                    return
                await self._step(self._clock.now())
        except asyncio.CancelledError:
            raise
        except Exception:  # never into the product; but loudly, as it is an SDK bug
            log.exception("tessera: the task looking after the session failed")

    async def _step(self, now: datetime) -> None:
        s = self.session
        if now >= self._lease_end:
            self._lease_ended()
            return
        # Not renewed in time: offline, or the server refusing the heartbeats (a rate
        # limit, an error that lasts) while it answers.
        if not self._warned and now >= self._lease_end - self.options.lease_warning:
            self._warned = True
            for lease_cb in self._lease_cbs:
                self._fire(lease_cb, s, self._lease_end - now)
        idle_at = self._idle_due_at()
        if idle_at is not None and now >= idle_at:
            await self._go_idle()
        report_at = self._report_due_at()
        if (
            (self._resume and now >= self._hold_until)
            or now >= self._next_heartbeat
            or (report_at is not None and now >= report_at)
        ) and not self.ended:
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        self._resume = False
        sent = self._clock.now()
        activity = self._last_activity
        since = max(0.0, (sent - activity).total_seconds())  # (aged further by each retry)
        try:
            session = await self._client._heartbeat(
                self.session.session_id, since, **self._lease_expectations()
            )
        except Unavailable as exc:
            self._went_offline(exc, sent)
            return
        except LeaseInvalid as exc:
            self._lease_refused(exc)
            return
        except TesseraError as exc:
            self._refused(exc, sent)
            return
        if self._ended_meanwhile(session):
            return
        self._reported_activity = max(self._reported_activity, activity)
        self._next_heartbeat = sent + self._jittered(self._interval)
        self._hold_until = sent
        self._last_warning = None
        self._apply(session, sent, extends_lease=True)

    async def _go_idle(self) -> None:
        sent = self._clock.now()
        self._idle_tried_for = activity = self._last_activity
        try:
            session = await self._client.idle(self.session.session_id)
        except IdleNotSupported:
            self._idle_aware = False
            return
        except Unavailable as exc:
            # Not done: sent again once the server answers (else it keeps the session in
            # use, and a grace running is charged for a user who went idle: RULES M3, M6).
            self._idle_tried_for = None
            self._went_offline(exc, sent)
            return
        except TesseraError as exc:
            self._idle_tried_for = None  # sent again after the pause (``_idle_due_at``)
            self._refused(exc, sent, heartbeat=False)
            return
        if self._ended_meanwhile(session):
            return
        self._idle_aware = True
        self._apply(session, sent, extends_lease=False)
        if self._last_activity > activity and session.idle:
            self._resume = True  # touched while Idle was on its way: come back at once

    def _ended_meanwhile(self, session: Session) -> bool:
        """Whether the session ended on this side while ``session``, the server's answer,
        was on its way (``ensure_usable`` found the lease over): the answer is not taken,
        and a session it shows live (a heartbeat renewed its lease) is released, as
        nobody holds it any more."""
        if not self.ended:
            return False
        if not session.ended:
            self._client._release_refused(session.session_id)
        return True

    def _lease_ended(self) -> None:
        s = self.session
        log.warning("tessera: the lease of %s ended without being renewed", s.session_id)
        signed_end = self._lease.lease_expire_time if self._lease else s.lease_expire_time
        self._finish(s.ended_locally(EndReason.LEASE_EXPIRED, signed_end))

    def _went_offline(self, exc: TesseraError, sent: datetime) -> None:
        if self._online:
            log.warning("tessera: server unreachable (%s); the session runs on its lease", exc)
        self.error = exc
        self._online = False
        retry = min(self._interval, self.options.offline_retry_interval)
        self._next_heartbeat = self._hold_until = sent + self._jittered(retry)

    def _lease_expectations(self) -> dict[str, str]:
        """What every lease of this session must say: its product, device, user and team."""
        expect = {"product_id": self.product_id, "device_id": self.device_id}
        if self._lease is not None:
            expect.update(user_id=self._lease.user_id, team_id=self._lease.team_id)
        return expect

    def _lease_refused(self, exc: LeaseInvalid) -> None:
        """A heartbeat's lease failed verification: the session ends (LEASE_INVALID)."""
        self.error = exc
        log.error("tessera: session %s ends: its lease was refused: %s", self.session_id, exc)
        self._finish(self.session.ended_locally(EndReason.LEASE_INVALID, None))

    def _refused(self, exc: TesseraError, sent: datetime, *, heartbeat: bool = True) -> None:
        """A refusal in the background: the session is gone (unknown, not ours) or we go on.
        A refused Idle leaves the heartbeat already due where it was (``heartbeat``)."""
        self.error = exc
        if isinstance(exc, NotFound | Unauthenticated | PermissionDenied):
            log.warning(
                "tessera: the server no longer accepts session %s: %s", self.session_id, exc
            )
            # A refused key (issued again, revoked) is one the product can act on: ask the
            # user for the current key. NOT_ASSIGNED says what END_REASON_NOT_ASSIGNED says
            # (RULES A6). A session the server no longer knows (UNKNOWN_SESSION: ended and
            # forgotten, or the server restored from a backup) cannot be resumed: start a
            # new one. Nothing else here has an EndReason that says it: no reason.
            why = (
                EndReason.KEY_REFUSED
                if isinstance(exc, Unauthenticated)
                else EndReason.NOT_ASSIGNED
                if isinstance(exc, NotAssigned)
                else EndReason.UNKNOWN_SESSION
                if isinstance(exc, UnknownSession)
                else EndReason.UNSPECIFIED
            )
            self._finish(self.session.ended_locally(why, None))
            return
        # The same refusal again (a rate limit, a server error that lasts) is logged once.
        seen = f"{type(exc).__name__}: {exc}"
        level = logging.DEBUG if seen == self._last_warning else logging.WARNING
        self._last_warning = seen
        log.log(level, "tessera: call for session %s refused: %s", self.session_id, exc)
        # Activity still due at the server is retried sooner than the next heartbeat, but
        # not before a pause (nor before the server's RetryInfo says): never at once.
        # The pause counts from the refusal, not the call: the client's own retries of it
        # (after a RetryInfo) may have taken longer than the pause itself.
        pause = timedelta(seconds=max(0.0, exc.retry_after or 0.0))
        pause = max(pause, min(self._interval, self.options.offline_retry_interval))
        self._hold_until = self._clock.now() + self._jittered(pause)
        if heartbeat:
            self._next_heartbeat = max(self._hold_until, sent + self._jittered(self._interval))


def _charge_changes(old: Session, new: Session) -> list[tuple[ChargeState, ChargeState]]:
    """The charge state's changes from one answer to the next, each as it happened: a
    renewal made between them (a window closed in use, held and charged again, RULES
    M5: no heartbeat fell in its 5 minutes of grace, or the product was offline) shows as
    CHARGED then CHARGED with a later window, and is told as CHARGED -> GRACE -> CHARGED."""
    if old.charge_state is not new.charge_state:
        return [(old.charge_state, new.charge_state)]
    renewed = (
        new.charge_state is ChargeState.CHARGED
        and old.window_end_time is not None
        and new.window_end_time is not None
        and new.window_end_time > old.window_end_time
    )
    if renewed:
        return [(ChargeState.CHARGED, ChargeState.GRACE), (ChargeState.GRACE, ChargeState.CHARGED)]
    return []


async def _guard(awaitable: Awaitable[None]) -> None:
    with _contained():
        await awaitable


@contextlib.contextmanager
def _contained() -> Iterator[None]:
    """A session callback's failure is logged, never raised into the SDK. So is its
    ``sys.exit()`` off the main thread (``Client``'s own), where it could only end that
    thread, and with it every session's heartbeats and every call waiting there; on the
    main thread (an asyncio product's loop) it ends the program, as the product meant."""
    try:
        yield
    except Exception:
        log.exception("tessera: a session callback raised")
    except SystemExit:
        if threading.current_thread() is threading.main_thread():
            raise
        log.exception(
            "tessera: a session callback called sys.exit() on the SDK's thread, where it "
            "cannot end the program (end it from the product's own thread): the SDK goes on"
        )
