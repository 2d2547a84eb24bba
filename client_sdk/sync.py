"""``Client``: the same surface as ``AsyncClient`` for products without an event loop.

One daemon thread runs an asyncio loop with an ``AsyncClient`` on it; every
method hands its work to that loop and waits for the answer. Sessions look
after themselves on that thread, so callbacks run there too: keep them short,
and do not call back into the client from a callback (the SDK refuses that
rather than deadlock).

    with Client("127.0.0.1:50051", user_key) as client:
        with client.session("ACAD", "2026") as s:
            ...
            s.touch()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import random
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from client_sdk._retry import RetryPolicy
from client_sdk.client import AsyncClient
from client_sdk.clock import Clock
from client_sdk.errors import ClientClosed, TesseraError
from client_sdk.failover import Targets
from client_sdk.models import EndReason, Lease, Platform, Session, SessionState
from client_sdk.session import (
    AsyncSessionHandle,
    ChargeStateCallback,
    EndedCallback,
    LeaseExpiringCallback,
    SessionOptions,
    StateCallback,
)

_T = TypeVar("_T")
_P = ParamSpec("_P")
log = logging.getLogger("client_sdk")


def _same_arguments(
    _: Callable[_P, object],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Any, _P], None]]:
    """Give the decorated ``__init__`` the arguments of ``_``: written once, there (for
    type checkers through the annotation, for ``help()`` through ``__signature__``)."""

    def apply(init: Callable[..., None]) -> Callable[Concatenate[Any, _P], None]:
        theirs = inspect.signature(_)
        self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        init.__signature__ = theirs.replace(  # type: ignore[attr-defined]
            parameters=[self, *theirs.parameters.values()], return_annotation=None
        )
        return init

    return apply


def _blocking(
    method: Callable[Concatenate[AsyncClient, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[Client, _P], _T]:
    """``AsyncClient``'s ``method``, waited for on the client's loop (same arguments)."""

    def call(self: Client, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return self._run(method(self.aio, *args, **kwargs))

    functools.update_wrapper(call, method)  # its name, documentation and signature
    return call


def _handing_out(
    method: Callable[Concatenate[AsyncClient, _P], AsyncSessionHandle],
) -> Callable[Concatenate[Client, _P], SessionHandle]:
    """``AsyncClient``'s ``method``, its handle given a synchronous face (same arguments)."""

    def call(self: Client, /, *args: _P.args, **kwargs: _P.kwargs) -> SessionHandle:
        return SessionHandle(self, method(self.aio, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


class Client:
    """A product's connection to Tessera, for code without an event loop.

    Takes the same arguments as ``AsyncClient`` (``targets`` too: several servers, the
    active followed through a takeover); use it as ``with Client(...) as client:`` or
    call ``client.close()``. Its calls are ``AsyncClient``'s, waited for: their
    arguments and documentation are written once, there. So are its attributes
    (``targets``, ``retry``, ``clock``, ``platform``...): ``AsyncClient``'s, read
    through; ``aio`` is that ``AsyncClient``.
    """

    @_same_arguments(AsyncClient)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.aio = AsyncClient(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="tessera-sdk", daemon=True)
        self._closed = False
        # Held while a call is handed to the loop and while the client becomes closed, so
        # that no call reaches a loop that has stopped; ``_waiting``: the calls handed over
        # and not yet answered, failed ``ClientClosed`` if the loop stops under them.
        self._handing = threading.Lock()
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        # One close() at a time, the others waiting for it; re-entrant: a signal handler
        # calling close() on the thread already in it (SIGTERM while it releases).
        self._closing = threading.RLock()
        self._thread.start()

    @property
    def targets(self) -> Targets:
        """The servers the client may call, and ``targets.current``, the one its calls go to."""
        return self.aio.targets

    @property
    def retry(self) -> RetryPolicy:
        return self.aio.retry

    @property
    def clock(self) -> Clock:
        return self.aio.clock

    @property
    def device_id(self) -> str:
        return self.aio.device_id

    @property
    def platform(self) -> Platform:
        return self.aio.platform

    @property
    def session_options(self) -> SessionOptions:
        return self.aio.session_options

    @property
    def rng(self) -> random.Random:
        return self.aio.rng

    @property
    def fetch_signing_keys(self) -> bool:
        """Whether the client asks the server for its signing keys (``AsyncClient``)."""
        return self.aio.fetch_signing_keys

    @property
    def target(self) -> str:
        """The server the next call goes to: the last one that answered."""
        return self.aio.target

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            if self._closed:  # (after close() gave up waiting for a callback holding it)
                self._fail_waiting("the client is closed")
        except BaseException:  # never the product's doing (a callback's is logged): an SDK bug
            log.exception("tessera: the SDK's thread stopped")
            with self._handing:
                self._closed = True
            self._fail_waiting("the SDK's thread stopped")
            raise

    def _refuse_own_thread(self) -> None:
        """A call from the client's own loop (a callback) would wait for that loop: never."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("do not call the Tessera client from its own callbacks")

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        try:
            self._refuse_own_thread()
        except RuntimeError:
            coro.close()
            raise
        with self._handing:
            if self._closed:
                coro.close()
                raise ClientClosed("the client is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._waiting.add(future)
        try:
            return future.result(timeout)
        except concurrent.futures.CancelledError:
            if self._closed:  # cancelled by close() (``_cancel_the_rest``)
                raise ClientClosed("the client is closed") from None
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._waiting.discard(future)

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` run on the client's loop, where the sessions' asyncio work belongs
        (their events, callbacks and tasks), and waited for; at once when called there
        already (from a callback), or once the loop has stopped (``close()``: nothing
        runs on it any more)."""
        if self._closed or threading.current_thread() is self._thread:
            return fn()
        return self._run(_at_once(fn))

    def _soon(self, fn: Any, *args: object) -> None:
        with self._handing:
            if not self._closed:
                self._loop.call_soon_threadsafe(fn, *args)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the sessions still open, close the channel, stop the thread.

        Refused (``RuntimeError``) from a callback, before anything changes: the client
        stays open, and its sessions are released as they are left. Interrupted (Ctrl+C
        while it waits for the server), it leaves the client open and the Releases going
        on: ``close()`` again waits for them. From several threads at once, one closes
        and the others wait for it; a call from another thread meanwhile answers or
        fails ``ClientClosed``."""
        if self._closed:
            return
        self._refuse_own_thread()
        with self._closing:
            if self._closed:
                return
            try:
                self._run(self.aio.close())
            except ClientClosed:
                if not self._closed:
                    raise
            if self._closed:  # a close() nested in this one (a signal handler) did it all
                return
            with self._handing:
                self._closed = True
            # A call handed over as this close() went on is cancelled on the loop (its
            # caller hears ClientClosed), not left a task pending when the loop stops.
            rest = asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, TimeoutError):
                rest.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if self._thread.is_alive():
                return  # a callback holds the thread: its loop is closed with the process
            self._loop.close()  # (what was still waiting was failed as it stopped: ``_serve``)

    def _fail_waiting(self, why: str) -> None:
        """The calls handed to the loop that it will never answer now fail ``ClientClosed``."""
        for future in list(self._waiting):
            if not future.done() and future.set_running_or_notify_cancel():
                future.set_exception(ClientClosed(why))

    # -- the calls and sessions: AsyncClient's ----------------------------------------------

    entitle = _blocking(AsyncClient.entitle)
    heartbeat = _blocking(AsyncClient.heartbeat)
    idle = _blocking(AsyncClient.idle)
    release = _blocking(AsyncClient.release)
    signing_keys = _blocking(AsyncClient.signing_keys)
    list_my_products = _blocking(AsyncClient.list_my_products)
    session = _handing_out(AsyncClient.session)


class SessionHandle:
    """The synchronous face of an ``AsyncSessionHandle`` (same names, no ``await``);
    ``aio`` is that handle, and ``parent`` and ``plugins`` are synchronous faces too."""

    def __init__(
        self, client: Client, handle: AsyncSessionHandle, parent: SessionHandle | None = None
    ) -> None:
        self._client = client
        self.aio = handle
        self._parent = parent
        self._faces: dict[AsyncSessionHandle, SessionHandle] = {}  # of its plugins

    # -- what the product reads -----------------------------------------------------------

    @property
    def product_id(self) -> str:
        return self.aio.product_id

    @property
    def version(self) -> str:
        return self.aio.version

    @property
    def platform(self) -> Platform:
        return self.aio.platform

    @property
    def device_id(self) -> str:
        return self.aio.device_id

    @property
    def takeover(self) -> bool:
        return self.aio.takeover

    @property
    def team_id(self) -> str:
        return self.aio.team_id

    @property
    def options(self) -> SessionOptions:
        return self.aio.options

    @property
    def request_id(self) -> str:
        """The ``request_id`` of this handle's Entitle (``AsyncSessionHandle``)."""
        return self.aio.request_id

    @property
    def parent(self) -> SessionHandle | None:
        """The host's handle, for a plugin (``None`` for a product)."""
        host = self.aio.parent
        if host is None:
            return None
        if self._parent is None or self._parent.aio is not host:
            self._parent = SessionHandle(self._client, host)
        return self._parent

    @property
    def plugins(self) -> tuple[SessionHandle, ...]:
        """The plugin sessions running on this one (each the handle ``plugin()`` gave)."""
        running = self.aio.plugins
        faces = {aio: face for aio, face in self._faces.items() if not aio.ended}
        for aio in running:
            faces.setdefault(aio, SessionHandle(self._client, aio, self))
        self._faces = faces
        return tuple(faces[aio] for aio in running)

    @property
    def session(self) -> Session:
        return self.aio.session

    @property
    def session_id(self) -> str:
        return self.aio.session_id

    @property
    def state(self) -> SessionState:
        return self.aio.state

    @property
    def ended(self) -> bool:
        return self.aio.ended

    @property
    def end_reason(self) -> EndReason | None:
        return self.aio.end_reason

    @property
    def usable(self) -> bool:
        return self.aio.usable

    @property
    def online(self) -> bool:
        return self.aio.online

    @property
    def lease(self) -> Lease | None:
        return self.aio.lease

    @property
    def lease_expires_at(self) -> datetime:
        return self.aio.lease_expires_at

    @property
    def last_activity(self) -> datetime:
        return self.aio.last_activity

    @property
    def error(self) -> TesseraError | None:
        return self.aio.error

    def ensure_usable(self) -> None:
        """``AsyncSessionHandle.ensure_usable``, run on the client's loop: a lease found
        over ends the session there (its callbacks, its plugins' Release), not on the
        caller's thread, which has no event loop."""
        self._client._on_loop(self.aio.ensure_usable)

    def wait_ended(self, timeout: float | None = None) -> EndReason | None:
        """Block until the session ends (``None`` if ``timeout`` seconds pass first)."""
        if self.aio.ended:  # at once, even with no time to wait, or the client closed
            return self.aio.end_reason or EndReason.UNSPECIFIED
        try:
            return self._client._run(self.aio.wait_ended(), timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            return None

    # -- what the product does ------------------------------------------------------------

    def on_ended(self, callback: EndedCallback) -> EndedCallback:
        return self.aio.on_ended(callback)

    def on_lease_expiring(self, callback: LeaseExpiringCallback) -> LeaseExpiringCallback:
        return self.aio.on_lease_expiring(callback)

    def on_charge_state_changed(self, callback: ChargeStateCallback) -> ChargeStateCallback:
        return self.aio.on_charge_state_changed(callback)

    def on_state_changed(self, callback: StateCallback) -> StateCallback:
        return self.aio.on_state_changed(callback)

    def touch(self) -> None:
        """Record activity now; thread-safe and cheap (it does not wait for the SDK thread)."""
        self._client._soon(self.aio._touch_at, self.aio._clock.now())

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
    ) -> SessionHandle:
        aio = self.aio.plugin(
            product_id,
            version,
            options=options,
            on_ended=on_ended,
            on_lease_expiring=on_lease_expiring,
            on_charge_state_changed=on_charge_state_changed,
            on_state_changed=on_state_changed,
        )
        face = self._faces[aio] = SessionHandle(self._client, aio, self)
        return face

    def start(self) -> Session:
        return self._client._run(self.aio.start())

    def release(self, *, timeout: timedelta | None = None) -> Session:
        """``AsyncSessionHandle.release``: ``timeout`` bounds it on the SDK's clock."""
        if self.aio.ended and (timeout is None or timeout > timedelta(0)):
            return self.aio.session  # unchanged, as releasing an ended session answers
        return self._client._run(self.aio.release(timeout=timeout))

    def __enter__(self) -> SessionHandle:
        self._client._run(self.aio.__aenter__())  # as ``async with`` enters (and fails)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client._closed:
            return  # close() released the session already (or gave it up, and logged it)
        # As ``async with`` leaves: the Release runs on in its own task on the client's
        # loop, so that an interruption now (Ctrl+C while it waits for the server) does
        # not cancel it; ``close()`` waits for it rather than sending another.
        self._client._run(self.aio.__aexit__(exc_type, exc, tb))


async def _cancel_the_rest() -> None:
    """Cancel the loop's other tasks and wait for them to end."""
    me = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not me]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


async def _at_once(fn: Callable[[], _T]) -> _T:
    """``fn()``, as a coroutine for the client's loop."""
    return fn()
