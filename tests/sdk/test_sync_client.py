"""The synchronous client: the same surface, no event loop in the product.

The fake runs on its own loop in a thread; the client runs its own in another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

import client_sdk as sdk
from client_sdk import (
    Client,
    EndReason,
    ManualClock,
    Platform,
    RetryPolicy,
    SessionOptions,
    SessionState,
)
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY
from tests.sdk.fakes import FakeLicensing, FakeThread


def wait(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.002)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeLicensing]:
    with FakeThread(clock) as servicer:
        yield servicer


@pytest.fixture
def client(fake: FakeLicensing, clock: ManualClock) -> Iterator[Client]:
    with Client(
        fake.target,
        FAKE_KEY,
        clock=clock,
        retry=QUICK_RETRY,
        device_id="dev-sync",
        platform=Platform.MACOS,
    ) as c:
        yield c


def test_sync_session_lifecycle_idle_and_plugin(
    client: Client, fake: FakeLicensing, clock: ManualClock
) -> None:
    ended: list[EndReason] = []
    options = SessionOptions(idle_threshold=timedelta(minutes=10), heartbeat_jitter=0.0)
    with client.session(
        "ACAD", "2026", options=options, on_ended=lambda r, s: ended.append(r)
    ) as s:
        assert s.usable and s.state is SessionState.ACTIVE
        assert s.session.device_id == "dev-sync" and s.session.platform is Platform.MACOS
        wait(lambda: clock.sleepers == 1)
        clock.advance(timedelta(minutes=5))
        wait(lambda: len(fake.called("Heartbeat")) == 1)
        wait(lambda: clock.sleepers == 1)
        clock.advance(timedelta(minutes=5))
        wait(lambda: s.state is SessionState.IDLE)
        wait(lambda: clock.sleepers == 1)
        clock.advance(timedelta(seconds=1))
        s.touch()  # activity after the moment it went idle: a heartbeat at once resumes it
        wait(lambda: s.state is SessionState.ACTIVE)
        with s.plugin("ARNOLD") as p:
            assert p.session.parent_session_id == s.session_id
            assert p.session.device_id == "dev-sync"
        assert p.end_reason is EndReason.RELEASED and s.usable
    assert ended == [EndReason.RELEASED] and s.ended
    assert [c.request.session_id for c in fake.called("Release")] == [p.session_id, s.session_id]


def test_sync_plain_calls_and_typed_errors(client: Client, fake: FakeLicensing) -> None:
    session = client.entitle("REVIT", "2026", request_id="req-fixed")
    assert client.entitle("REVIT", "2026", request_id="req-fixed") == session
    assert client.heartbeat(session.session_id, 3).session_id == session.session_id
    with pytest.raises(sdk.IdleNotSupported):
        client.idle(session.session_id)
    assert client.release(session.session_id).end_reason is EndReason.RELEASED
    fake.refuse(
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
        metadata={"available": "2", "daily_rate": "10"},
    )
    with pytest.raises(sdk.InsufficientTokens) as info, client.session("ACAD", "2026"):
        pass
    assert (info.value.available, info.value.daily_rate) == (2, 10)


def test_sync_takeover_callback_and_wait_ended(
    client: Client, fake: FakeLicensing, clock: ManualClock
) -> None:
    with client.session("ACAD", "2026") as s:
        assert s.wait_ended(timeout=0.01) is None
        wait(lambda: clock.sleepers == 1)
        fake.end(s.session_id, 3)  # END_REASON_TAKEN_OVER
        clock.advance(timedelta(minutes=6))
        assert s.wait_ended(timeout=5) is EndReason.TAKEN_OVER
        with pytest.raises(sdk.SessionEnded) as info:
            s.ensure_usable()
        assert info.value.end_reason is EndReason.TAKEN_OVER


def test_sync_a_session_the_server_does_not_know_ends_unknown_session(
    client: Client, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The synchronous face says it as the asynchronous one does: the reason, the error.
    with client.session("ACAD", "2026") as s:
        wait(lambda: clock.sleepers == 1)
        del fake.sessions[s.session_id]  # forgotten (the server restored from a backup, say)
        clock.advance(timedelta(minutes=6))
        assert s.wait_ended(timeout=5) is EndReason.UNKNOWN_SESSION
        assert s.end_reason is EndReason.UNKNOWN_SESSION
        assert isinstance(s.error, sdk.UnknownSession)
        with pytest.raises(sdk.SessionEnded) as info:
            s.ensure_usable()
        assert info.value.end_reason is EndReason.UNKNOWN_SESSION
    assert fake.called("Release") == []


def test_sync_calling_the_client_from_a_callback_is_refused(
    client: Client, fake: FakeLicensing, clock: ManualClock
) -> None:
    errors: list[BaseException] = []

    def callback(reason: EndReason, session: sdk.Session) -> None:
        try:
            client.release(session.session_id)
        except RuntimeError as exc:
            errors.append(exc)

    with client.session("ACAD", "2026", on_ended=callback):
        pass
    wait(lambda: len(errors) == 1)


def _raised_in_a_thread(fn: Callable[[], object]) -> BaseException | None:
    """What ``fn()`` raised, called from a thread of the product's own (a GUI's worker)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    return raised[0] if raised else None


def test_sync_ensure_usable_from_a_product_thread_ends_a_lapsed_lease_on_the_sdk_thread(
    clock: ManualClock,
) -> None:
    # The server is away: its heartbeats (and releases) hang unanswered, so the session's
    # task cannot end the session itself when the lease runs out. ensure_usable(), called
    # from one of the product's threads, finds the lease over. The end (asyncio's events,
    # the callbacks, the plugins' Release) belongs on the SDK's loop: run on the caller's
    # thread, it failed with "no current event loop" and left a coroutine never awaited.
    server = FakeThread(clock)
    ended_on: list[str] = []
    with server as fake:
        away = asyncio.Event()
        fake.gates["Heartbeat"] = fake.gates["Release"] = away
        with (
            Client(
                fake.target,
                FAKE_KEY,
                clock=clock,
                retry=RetryPolicy(max_attempts=1, call_timeout=30.0),
                session_options=SessionOptions(heartbeat_jitter=0.0),
            ) as client,
            client.session(
                "ACAD", "2026", on_ended=lambda *_: ended_on.append(threading.current_thread().name)
            ) as s,
            s.plugin("ARNOLD") as p,
        ):
            try:
                wait(lambda: clock.sleepers == 2)
                clock.advance(timedelta(minutes=5))  # both heartbeat; neither is answered
                wait(lambda: len(fake.called("Heartbeat")) == 2)
                clock.advance(timedelta(hours=24))  # the lease is over
                raised = _raised_in_a_thread(s.ensure_usable)
                assert isinstance(raised, sdk.SessionEnded), raised
                assert raised.end_reason is EndReason.LEASE_EXPIRED
                assert ended_on == [client._thread.name]
                # The plugin ends with its host: its Release, unanswered, is given up
                # after its release_timeout, on the SDK's clock.
                wait(lambda: clock.sleepers == 1 and len(fake.called("Release")) == 1)
                clock.advance(p.options.release_timeout)
                wait(lambda: p.ended)
                assert p.end_reason is EndReason.HOST_ENDED
            finally:
                server.loop.call_soon_threadsafe(away.set)  # the server is back
            # The host's heartbeat still on its way is answered now: the end stands.
            wait(lambda: s.aio._task is None or s.aio._task.done())
            assert s.end_reason is EndReason.LEASE_EXPIRED and not s.usable


def test_sync_close_from_a_callback_is_refused_and_changes_nothing(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    # close() in a callback would wait for the loop the callback runs on: it is refused.
    # It used to mark the client closed and stop its loop all the same, so that leaving
    # the other session's block afterwards released nothing.
    client = Client(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY, device_id="dev-sync")
    refused: list[BaseException] = []

    def on_ended(reason: EndReason, session: sdk.Session) -> None:
        try:
            client.close()
        except RuntimeError as exc:
            refused.append(exc)

    with (
        client.session("ACAD", "2026", on_ended=on_ended) as taken,
        client.session("REVIT", "2026") as other,
    ):
        wait(lambda: clock.sleepers == 2)
        fake.end(taken.session_id, 3)  # END_REASON_TAKEN_OVER: another device took it
        clock.advance(timedelta(minutes=6))  # the next heartbeat says so
        wait(lambda: bool(refused))
        assert client._thread.is_alive() and other.usable
    assert [c.request.session_id for c in fake.called("Release")] == [other.session_id]
    assert other.end_reason is EndReason.RELEASED
    client.close()
    assert not client._thread.is_alive()


def test_sync_client_close_releases_and_stops_thread(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    client = Client(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY)
    s = client.session("ACAD", "2026")
    s.start()
    client.close()
    assert s.end_reason is EndReason.RELEASED
    assert not client._thread.is_alive()
    with pytest.raises(sdk.TesseraError):
        client.entitle("ACAD", "2026")
    client.close()  # twice is harmless


def test_m10_sync_leaving_interrupted_while_releasing_still_releases(
    client: Client, fake: FakeLicensing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl+C while the block waits for the server to confirm the Release: as with
    # `async with`, the Release goes on (shielded) on the client's thread, the client keeps
    # the session until it is confirmed, and close() waits for it rather than forget it.
    s = client.session("ACAD", "2026")
    s.start()
    fake.delay = 0.5  # the server takes a moment to answer

    def interrupted(self: concurrent.futures.Future[object], timeout: float | None = None) -> None:
        wait(lambda: len(fake.called("Release")) == 1)  # the Release is on its way...
        raise KeyboardInterrupt  # ...when the user presses Ctrl+C

    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.__exit__(None, None, None)
    monkeypatch.undo()
    assert not s.ended and s.aio in client.aio._handles
    client.close()
    assert s.end_reason is EndReason.RELEASED
    assert len(fake.called("Release")) == 1


def _public(obj: object) -> dict[str, bool]:
    """``obj``'s public names, each with whether it is something to call."""
    return {name: callable(getattr(obj, name)) for name in dir(obj) if not name.startswith("_")}


def test_sdk_sync_client_and_session_have_every_public_name_of_the_async_ones(
    client: Client, fake: FakeLicensing
) -> None:
    # "Client is the same without an event loop" (README): every attribute, property and
    # method of AsyncClient and AsyncSessionHandle is there too (its value read through),
    # plus ``aio``, the asynchronous object itself. New ones must be added to both.
    assert _public(client) == {**_public(client.aio), "aio": False}
    assert client.targets is client.aio.targets and client.targets.current == fake.target
    assert (client.retry, client.platform, client.session_options, client.rng) == (
        client.aio.retry,
        client.aio.platform,
        client.aio.session_options,
        client.aio.rng,
    )
    assert client.fetch_signing_keys is True
    with client.session("ACAD", "2026", team_id="acme") as s:
        assert _public(s) == {**_public(s.aio), "aio": False}
        assert (s.product_id, s.version, s.team_id, s.takeover) == ("ACAD", "2026", "acme", False)
        assert s.request_id == fake.called("Entitle")[0].request.request_id
        assert s.options is client.session_options and s.parent is None
        with s.plugin("ARNOLD") as p:
            assert _public(p) == {**_public(p.aio), "aio": False}
            assert s.plugins == (p,) and p.parent is s
            assert p.product_id == "ARNOLD" and p.device_id == s.device_id == "dev-sync"
        assert s.plugins == ()


def test_m10_sync_leaving_a_block_after_close_raises_nothing(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    # As `async with`: close() released the session; leaving its block after that is quiet.
    client = Client(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY)
    with client.session("ACAD", "2026") as s:
        client.close()
    assert s.end_reason is EndReason.RELEASED and len(fake.called("Release")) == 1


def _in_thread(fn: Callable[[], object], timeout: float = 15.0) -> list[object]:
    """``fn()`` on a thread of its own, waited for ``timeout`` real seconds: what it
    returned or raised, or nothing if it is still waiting (a hang)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return out


def test_sync_a_callback_calling_sys_exit_is_logged_and_the_sdk_goes_on(
    client: Client, fake: FakeLicensing, clock: ManualClock
) -> None:
    """``sys.exit()`` in ``on_ended`` ("your licence is gone: quit") runs on the SDK's
    thread, where it cannot end the program; it ended that thread instead, and every
    later call, ``close()`` too, waited for it forever."""
    other = client.session("REVIT", "2026")
    other.start()
    taken = client.session("ACAD", "2026", on_ended=lambda r, s: sys.exit(0))
    taken.start()
    wait(lambda: clock.sleepers == 2)
    fake.end(taken.session_id, 3)  # END_REASON_TAKEN_OVER
    clock.advance(timedelta(minutes=6))  # both heartbeat: one learns it is over
    wait(lambda: taken.ended)
    wait(lambda: clock.sleepers == 1)
    assert client._thread.is_alive()
    assert _in_thread(lambda: client.heartbeat(other.session_id).state) == [SessionState.ACTIVE]
    assert _in_thread(client.close) == [None]
    assert other.end_reason is EndReason.RELEASED


def test_sync_calls_racing_close_from_other_threads_end_in_client_closed(
    client: Client, fake: FakeLicensing
) -> None:
    """Eight threads calling while another closes the client: each call answers or
    fails ``ClientClosed``; one handed to the loop as it stopped waited forever."""
    s = client.session("ACAD", "2026")
    s.start()
    outcomes: list[str] = []
    started = threading.Barrier(9)

    def calls() -> None:
        started.wait()
        for _ in range(200):
            try:
                client.heartbeat(s.session_id)
            except sdk.ClientClosed:
                outcomes.append("ClientClosed")
                return
            except sdk.TesseraError as exc:  # the session released by close(), say
                outcomes.append(type(exc).__name__)
                return
        outcomes.append("done")

    workers = [threading.Thread(target=calls, daemon=True) for _ in range(8)]
    for worker in workers:
        worker.start()
    started.wait()
    assert _in_thread(client.close) == [None]
    for worker in workers:
        worker.join(15)
    assert not [w for w in workers if w.is_alive()], f"callers hung: {outcomes}"
    assert len(outcomes) == 8 and "ClientClosed" in outcomes


def test_sync_close_from_three_threads_at_once_closes_once(
    client: Client, fake: FakeLicensing
) -> None:
    client.session("ACAD", "2026").start()
    together = threading.Barrier(3)
    results: list[object] = []

    def close() -> None:
        together.wait()
        results.extend(_in_thread(client.close))

    closers = [threading.Thread(target=close) for _ in range(3)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(20)
    assert results == [None, None, None]
    assert len(fake.called("Release")) == 1 and not client._thread.is_alive()


def test_m10_sync_close_interrupted_then_closed_again_releases_the_sessions(
    client: Client, fake: FakeLicensing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl+C while ``close()`` waits for the Releases: the client stays open, the
    Releases go on, and ``close()`` again waits for them. It stopped the loop under
    them, and the sessions stayed live on the server for a day (RULES M7)."""
    s = client.session("ACAD", "2026")
    s.start()
    fake.delay = 0.5

    def interrupted(self: concurrent.futures.Future[object], timeout: float | None = None) -> None:
        wait(lambda: len(fake.called("Release")) == 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures.Future, "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.close()
    monkeypatch.undo()
    assert _in_thread(client.close) == [None]
    assert s.end_reason is EndReason.RELEASED
    assert len(fake.called("Release")) == 1


def test_sync_wait_ended_and_release_of_an_ended_session_answer_at_once(
    client: Client, fake: FakeLicensing
) -> None:
    """As ``AsyncSessionHandle``'s: ``wait_ended`` of a session over is why it ended,
    even with no time to wait, and after ``close()``; releasing it again returns it."""
    with client.session("ACAD", "2026") as s:
        pass
    assert [s.wait_ended(timeout=0) for _ in range(5)] == [EndReason.RELEASED] * 5
    client.close()
    assert s.wait_ended(timeout=1) is EndReason.RELEASED
    assert s.release().end_reason is EndReason.RELEASED
    assert len(fake.called("Release")) == 1


_CLOSED_FROM_A_SIGNAL_HANDLER = """
import os, signal, threading
from client_sdk import Client, ManualClock, Platform
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY
from tests.sdk.fakes import FakeThread

clock = ManualClock()
with FakeThread(clock) as fake:
    client = Client(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY,
                    device_id="dev-sig", platform=Platform.LINUX)
    signal.signal(signal.SIGTERM, lambda *a: client.close())  # the product's own hook
    s = client.session("ACAD", "2026")
    s.start()
    fake.delay = 1.0  # the Release takes a second to answer
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    client.close()  # the product leaves; SIGTERM arrives meanwhile
    print("closed", s.end_reason.name, len(fake.called("Release")), flush=True)
"""


def test_m10_sync_close_called_again_by_a_signal_handler_during_close_returns() -> None:
    """A SIGTERM handler calling ``close()`` while the product's own ``close()`` waits
    for the Release runs on the same thread: it waited for the first one's lock forever
    (before that lock, the first one then failed: the loop closed under it)."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSED_FROM_A_SIGNAL_HANDLER],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "closed RELEASED 1"), done.stderr
