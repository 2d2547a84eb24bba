"""Sessions that look after themselves, against the fake LicensingService and a manual clock.

Time moves only through ``clock.advance``; after each move the test waits (briefly, in
real time) for the SDK's background task to act and go back to sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

import client_sdk as sdk
from client_sdk import (
    AsyncClient,
    ChargeState,
    DeadlineExceeded,
    EndReason,
    ManualClock,
    RetryPolicy,
    SessionEnded,
    SessionOptions,
    SessionState,
)
from tessera_api.tessera.v1 import common_pb2 as c
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY, client_for, eventually
from tests.sdk.fakes import FakeLicensing, FakeTime
from tests.sdk.test_h3_failover import two_targets

MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
NO_JITTER = SessionOptions(heartbeat_jitter=0.0)


async def step(clock: ManualClock, span: timedelta, sleepers: int = 1) -> None:
    """Advance the clock and wait until the SDK's tasks are asleep again."""
    clock.advance(span)
    await clock.until_sleeping(sleepers)


async def walk(
    clock: ManualClock, span: timedelta, *, coarse: timedelta | None = None, sleepers: int = 1
) -> None:
    """Advance ``span``, letting the SDK act at each of its deadlines on the way (or, when
    ``coarse``, at steps of that size only: faster, but deadlines are met late)."""
    end = clock.now() + span
    while clock.now() < end:
        if coarse is not None:
            target = min(end, clock.now() + coarse)
        else:
            deadline = clock.next_deadline()
            target = end if deadline is None else max(clock.now(), min(end, deadline))
        await step(clock, target - clock.now(), sleepers)


async def test_m1_session_entitles_heartbeats_and_releases(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    ended: list[EndReason] = []
    async with client.session(
        "ACAD", "2026", options=NO_JITTER, on_ended=lambda r, s: ended.append(r)
    ) as s:
        assert s.session.state is SessionState.ACTIVE
        assert s.session.product_id == "ACAD"
        assert s.session.device_id == "dev-test"
        entitle = fake.called("Entitle")[0].request
        assert entitle.request_id and entitle.platform == c.PLATFORM_WINDOWS
        await clock.until_sleeping()
        await step(clock, 4 * MIN)
        assert fake.called("Heartbeat") == []
        await step(clock, MIN)  # the server's interval: 5 minutes
        beats = fake.called("Heartbeat")
        assert len(beats) == 1 and beats[0].request.seconds_since_activity == 300
        await step(clock, 2 * MIN)
        s.touch()
        await step(clock, 3 * MIN)
        assert fake.called("Heartbeat")[-1].request.seconds_since_activity == 180
        assert s.lease_expires_at == clock.now() + timedelta(hours=24)
        session_id = s.session_id
    assert s.ended and s.end_reason is EndReason.RELEASED
    assert ended == [EndReason.RELEASED]
    assert [call.request.session_id for call in fake.called("Release")] == [session_id]
    assert fake.sessions[session_id].msg.state == c.SESSION_STATE_ENDED


async def test_sdk_sends_user_key_as_bearer_metadata(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    session = await client.entitle("ACAD", "2026")
    await client.heartbeat(session.session_id, 5)
    await client.idle(session.session_id)
    await client.release(session.session_id)
    assert [call.method for call in fake.calls] == [
        "GetSigningKeys",  # once, before the first Entitle; it needs no key and gets none
        "Entitle",
        "Heartbeat",
        "Idle",
        "Release",
    ]
    assert "authorization" not in fake.calls[0].metadata
    assert {call.metadata["authorization"] for call in fake.calls[1:]} == {"Bearer tsu_fake-key"}


async def test_sdk_heartbeat_interval_follows_server_with_jitter(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    fake.interval = timedelta(minutes=2)
    async with client.session("REVIT", "2026") as s:  # jitter 10 %: every 108 to 132 s
        await clock.until_sleeping()
        await walk(clock, 30 * MIN)
        times = [s.session.start_time] + [call.time for call in fake.called("Heartbeat")]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 12
    assert all(108 <= gap <= 133 for gap in gaps), gaps
    assert len(set(gaps)) > 1  # jittered, not all the same


async def test_m6_sdk_goes_idle_after_threshold_and_resumes_on_touch(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    states: list[tuple[SessionState, SessionState]] = []
    options = SessionOptions(idle_threshold=10 * MIN, heartbeat_jitter=0.0)
    async with client.session(
        "ACAD", "2026", options=options, on_state_changed=lambda o, n, s: states.append((o, n))
    ) as s:
        await clock.until_sleeping()
        await walk(clock, 9 * MIN)
        assert s.state is SessionState.ACTIVE and fake.called("Idle") == []
        await walk(clock, MIN)
        assert len(fake.called("Idle")) == 1 and fake.called("Idle")[0].time == clock.now()
        assert s.state is SessionState.IDLE
        await walk(clock, 20 * MIN)  # heartbeats go on while idle; no second Idle
        assert len(fake.called("Idle")) == 1 and s.state is SessionState.IDLE
        beats_before = len(fake.called("Heartbeat"))
        s.touch()  # the user is back: a heartbeat goes out at once, reporting it
        await eventually(lambda: s.state is SessionState.ACTIVE)
        resume = fake.called("Heartbeat")[beats_before]
        assert resume.request.seconds_since_activity == 0 and resume.time == clock.now()
    assert states == [
        (SessionState.ACTIVE, SessionState.IDLE),
        (SessionState.IDLE, SessionState.ACTIVE),
        (SessionState.ACTIVE, SessionState.ENDED),
    ]


async def test_m6_a_refused_idle_leaves_the_next_heartbeat_where_it_was(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # Idle at 7 minutes is refused (a rate limit): the heartbeat due at 10 minutes still
    # goes at 10, not a whole interval after the Idle (17), which left 12 minutes between two;
    # and the Idle is sent again after a pause (offline_retry_interval), not never (the
    # server kept a session in use that the user had left).
    options = SessionOptions(idle_threshold=7 * MIN, heartbeat_jitter=0.0)
    async with client.session("ACAD", "2026", options=options) as s:
        await clock.until_sleeping()
        start = s.session.start_time
        assert start is not None
        fake.refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", method="Idle")
        await walk(clock, 12 * MIN)
        pause = options.offline_retry_interval
        assert [c.time - start for c in fake.called("Idle")] == [7 * MIN, 7 * MIN + pause]
        assert s.state is SessionState.IDLE
        beats = [c.time - start for c in fake.called("Heartbeat")]
        assert beats[:2] == [5 * MIN, 10 * MIN]


async def test_m6_fresh_activity_reaches_server_before_its_idle_deadline(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The server idles a session 15 minutes after the last activity it heard of; a touch
    # between heartbeats must reach it before then, even if the next heartbeat is later.
    fake.interval = timedelta(minutes=10)
    async with client.session("ACAD", "2026", options=NO_JITTER) as s:
        await clock.until_sleeping()
        await walk(clock, 12 * MIN)  # heartbeat at 10 min reports 600 s
        s.touch()  # the SDK plans a heartbeat 30 s before the server's idle deadline
        report_at = s.session.start_time + timedelta(minutes=14, seconds=30)
        await eventually(lambda: clock.next_deadline() == report_at)
        await walk(clock, 3 * MIN)
        beats = fake.called("Heartbeat")
        assert [b.request.seconds_since_activity for b in beats] == [600, 150]
        assert beats[1].time == report_at
        assert s.state is SessionState.ACTIVE
        await walk(clock, 5 * MIN)
        assert s.state is SessionState.ACTIVE and fake.called("Idle") == []


async def test_m6_a_heartbeat_sent_again_after_a_wait_reports_the_activity_age_then(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The heartbeat at 5 minutes meets an overloaded server that asks for 10 s; the SDK
    # sends it again once they have passed. The user last acted at 4 minutes: the repeat
    # must say so, 70 s ago, not 60 as when the first went out, or the server takes that
    # action for 10 s newer than it was (and idles the session that much later).
    async with client.session("ACAD", "2026", options=NO_JITTER) as s:
        await clock.until_sleeping()
        await step(clock, 4 * MIN)
        s.touch()
        fake.refuse(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", retry_after=10.0, method="Heartbeat"
        )
        clock.advance(MIN)
        await eventually(lambda: len(fake.called("Heartbeat")) == 1)
        await clock.until_sleeping()  # the client waits out the RetryInfo, on its clock
        deadline = clock.next_deadline()
        assert deadline is not None and deadline - clock.now() >= 10 * SEC
        clock.set(deadline)
        await eventually(lambda: len(fake.called("Heartbeat")) == 2)
        first, again = fake.called("Heartbeat")
        assert first.request.seconds_since_activity == 60
        age = (again.time - s.last_activity).total_seconds()
        assert again.request.seconds_since_activity == int(age) >= 70


async def test_m6_sdk_stops_calling_idle_when_product_is_not_idle_aware(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("REVIT", "2026", options=NO_JITTER) as s:
        await clock.until_sleeping()
        await walk(clock, 60 * MIN)
        assert len(fake.called("Idle")) == 1  # refused IDLE_NOT_SUPPORTED once, never again
        assert s.state is SessionState.ACTIVE and s.usable and s.error is None


async def test_sdk_charge_state_changes_reach_the_callback(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    changes: list[tuple[ChargeState, ChargeState]] = []
    async with client.session("ACAD", "2026", options=NO_JITTER) as s:

        @s.on_charge_state_changed
        def seen(old: ChargeState, new: ChargeState, session: object) -> None:
            changes.append((old, new))

        assert s.session.charge_state is ChargeState.GRACE
        await clock.until_sleeping()
        fake.set_charge(s.session_id, c.CHARGE_STATE_CHARGED)
        await walk(clock, 5 * MIN)
        assert s.session.charge_state is ChargeState.CHARGED
        await walk(clock, 5 * MIN)
    assert changes == [(ChargeState.GRACE, ChargeState.CHARGED)]


async def test_m9_takeover_seen_through_callback(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    seen: asyncio.Queue[EndReason] = asyncio.Queue()

    async def ended(reason: EndReason, session: object) -> None:  # coroutines are fine too
        await seen.put(reason)

    async with client.session("ACAD", "2026", options=NO_JITTER, on_ended=ended) as s:
        await clock.until_sleeping()
        fake.end(s.session_id, c.END_REASON_TAKEN_OVER)
        await step(clock, 5 * MIN, sleepers=0)
        assert await asyncio.wait_for(seen.get(), 5) is EndReason.TAKEN_OVER
        assert s.ended and not s.usable and s.end_reason is EndReason.TAKEN_OVER
        assert await s.wait_ended() is EndReason.TAKEN_OVER
    assert fake.called("Release") == []  # nothing to release: the server ended it
    assert seen.empty()


async def test_sdk_releases_on_error_and_on_cancellation(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with client.session("ACAD", "2026") as s1:
            raise ZeroDivisionError  # the product fails inside the block
    assert s1.end_reason is EndReason.RELEASED

    started = asyncio.Event()

    async def product() -> None:
        async with client.session("ACAD", "2026"):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(product())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: len(fake.called("Release")) == 2)
    assert all(s.msg.state == c.SESSION_STATE_ENDED for s in fake.sessions.values())


async def test_p4_plugin_bound_to_host_and_released_first(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("ACAD", "2026", options=NO_JITTER) as host:
        async with host.plugin("ARNOLD") as plugin:
            request = fake.called("Entitle")[1].request
            assert request.parent_session_id == host.session_id
            assert request.device_id == "dev-test" and request.product_version == "2026"
            assert plugin.session.parent_session_id == host.session_id
            await clock.until_sleeping(2)
            await walk(clock, 14 * MIN, sleepers=2)
            plugin.touch()  # activity in a plugin is activity in its host
            assert host.last_activity == clock.now()
        assert plugin.end_reason is EndReason.RELEASED and host.usable
        second = host.plugin("ARNOLD", "2026.1")
        await second.start()
    assert [call.request.session_id for call in fake.called("Release")] == [
        plugin.session_id,
        second.session_id,
        host.session_id,
    ]
    assert second.end_reason is EndReason.RELEASED


async def test_p4_plugin_ends_with_its_host(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    reasons: list[EndReason] = []
    async with (
        client.session("ACAD", "2026", options=NO_JITTER) as host,
        host.plugin("ARNOLD", on_ended=lambda r, s: reasons.append(r)) as plugin,
    ):
        await clock.until_sleeping(2)
        fake.end(host.session_id, c.END_REASON_ENDED_BY_ADMIN)
        await step(clock, 5 * MIN, sleepers=0)
        # Both heartbeat at once: the plugin's may be the one that learns it first.
        await eventually(lambda: host.ended and plugin.ended)
        assert host.end_reason is EndReason.ENDED_BY_ADMIN
        assert plugin.end_reason is EndReason.HOST_ENDED
    assert reasons == [EndReason.HOST_ENDED]


async def test_m7_offline_session_usable_until_lease_ends(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    warnings: list[timedelta] = []
    ended: list[EndReason] = []
    async with client.session(
        "REVIT",
        "2026",
        options=SessionOptions(heartbeat_jitter=0.0, idle_aware=False),
        on_lease_expiring=lambda s, left: warnings.append(left),
        on_ended=lambda r, s: ended.append(r),
    ) as s:
        await clock.until_sleeping()
        await walk(clock, 5 * MIN)  # one heartbeat: the lease now ends at 24 h 5 min
        lease_end = s.lease_expires_at
        fake.down = True
        await walk(clock, 22 * timedelta(hours=1), coarse=10 * MIN)
        assert s.usable and not s.online and warnings == []
        await walk(clock, lease_end - timedelta(hours=1) - clock.now())
        assert warnings == [timedelta(hours=1)] and s.usable
        await walk(clock, timedelta(minutes=59))
        assert s.usable and ended == []
        await step(clock, MIN, sleepers=0)
        await eventually(lambda: s.ended)
        assert s.end_reason is EndReason.LEASE_EXPIRED and ended == [EndReason.LEASE_EXPIRED]
        assert clock.now() == lease_end and not s.usable
        attempts = len(fake.called("Heartbeat"))
        assert attempts > 24 * 60 // 10  # kept trying while offline
        fake.down = False
    assert warnings == [timedelta(hours=1)]
    assert len(fake.called("Heartbeat")) == attempts  # no heartbeat after the end


async def test_m7_heartbeats_resume_when_server_returns(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("REVIT", "2026", options=NO_JITTER) as s:
        await clock.until_sleeping()
        fake.down = True
        await walk(clock, 3 * timedelta(hours=1), coarse=10 * MIN)
        assert not s.online and s.usable and s.state is SessionState.ACTIVE
        stale_lease = s.lease_expires_at
        fake.down = False
        await walk(clock, MIN)  # offline, the SDK tries every minute
        assert s.online and s.lease_expires_at == clock.now() + timedelta(hours=24)
        assert s.lease_expires_at > stale_lease
        count = len(fake.called("Heartbeat"))
        await walk(clock, 5 * MIN)  # back on the server's interval
        assert len(fake.called("Heartbeat")) == count + 1


async def test_sdk_session_handle_reports_state_before_start(client: AsyncClient) -> None:
    handle = client.session("ACAD", "2026")
    assert not handle.usable and handle.state is SessionState.UNSPECIFIED
    with pytest.raises(RuntimeError):
        _ = handle.session
    await handle.start()
    with pytest.raises(RuntimeError):
        await handle.start()
    await handle.release()
    assert (await handle.release()).end_reason is EndReason.RELEASED


async def test_sdk_client_close_releases_open_sessions(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    host = client.session("ACAD", "2026")
    await host.start()
    plugin = host.plugin("ARNOLD")
    await plugin.start()
    await client.close()
    assert host.end_reason is EndReason.RELEASED and plugin.end_reason is EndReason.RELEASED
    assert [call.request.session_id for call in fake.called("Release")] == [
        plugin.session_id,
        host.session_id,
    ]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"), (grpc.StatusCode.INTERNAL, "")],
)
async def test_sdk_refused_heartbeat_with_activity_due_waits_before_retrying(
    client: AsyncClient,
    fake: FakeLicensing,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    # A refused heartbeat that carried activity due at the server used to be sent again at
    # once, forever (thousands a second, a warning each). It must wait, and warn once.
    async with client.session("ACAD", "2026", options=NO_JITTER) as s:
        await clock.until_sleeping()
        await walk(clock, 12 * MIN)  # heartbeats at 5 and 10 minutes
        start = s.session.start_time
        assert start is not None
        for _ in range(50):
            fake.refuse(code, reason, method="Heartbeat")
        s.touch()  # now activity is due at the server by 14:30
        await eventually(lambda: clock.next_deadline() == start + 14 * MIN + 30 * SEC)
        with caplog.at_level(logging.WARNING, logger="client_sdk"):
            await walk(clock, 8 * MIN)  # to 20:00
        refused = [b.time - start for b in fake.called("Heartbeat")[2:]]
        # once a minute (offline_retry_interval) from 14:30, not over and over at 14:30
        assert refused == [14 * MIN + 30 * SEC + n * MIN for n in range(6)]
        warnings = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert s.usable and s.error is not None
        fake.refusals.clear()
        await walk(clock, MIN)  # the next attempt gets through and reports the activity
        assert len(fake.called("Heartbeat")) == 2 + 7
        assert fake.called("Heartbeat")[-1].request.seconds_since_activity == 8 * 60 + 30
        assert fake.sessions[s.session_id].last_activity == start + 12 * MIN
        await walk(clock, 4 * MIN)  # then back on the server's interval
        assert len(fake.called("Heartbeat")) == 2 + 7
        await walk(clock, MIN)
        assert len(fake.called("Heartbeat")) == 2 + 8


@pytest.mark.parametrize("how", ["cancelled", "client closed"])
async def test_sdk_left_during_entry_releases_the_session_the_server_opens(
    client: AsyncClient, fake: FakeLicensing, how: str
) -> None:
    # The entry is cancelled, or the product closes its client (quitting as it starts),
    # while the Entitle is on the server: the server opens the session all the same, so
    # the SDK lets the call finish and releases it (close() waits for that). A client
    # closed under an entry used to go on looking after the session of a closed client,
    # or close the channel under the Entitle: the session stayed live, in use, until its
    # lease ended.
    gate = fake.gates["Entitle"] = asyncio.Event()
    entered: list[str] = []

    async def product() -> None:
        async with client.session("ACAD", "2026") as s:
            entered.append(s.session_id)

    task = asyncio.create_task(product())
    await eventually(lambda: len(fake.called("Entitle")) == 1)
    if how == "cancelled":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fake.sessions == {} and entered == []  # the server has not answered yet
        gate.set()  # ...now it opens the session
        await client.close()
    else:
        closing = asyncio.create_task(client.close())
        await eventually(lambda: bool(client._cleanups))  # the release of what it opens
        assert not closing.done()  # it waits for the Entitle's answer
        gate.set()  # ...now the server opens the session
        await asyncio.wait_for(closing, 5)
        with pytest.raises(sdk.ClientClosed):
            await task
    (session_id,) = fake.sessions
    assert [call.request.session_id for call in fake.called("Release")] == [session_id]
    assert fake.sessions[session_id].msg.state == c.SESSION_STATE_ENDED
    assert len(fake.called("Entitle")) == 1 and entered == []


async def test_sdk_entry_without_answer_releases_what_the_server_may_have_opened(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    # The Entitle reaches the server, which opens the session, but every answer is lost:
    # entry fails DeadlineExceeded, and the session the product never got must not stay.
    fake.lost_answers = QUICK_RETRY.max_attempts
    with pytest.raises(DeadlineExceeded):
        async with client.session("ACAD", "2026"):
            pytest.fail("entered without an answer")
    await client.close()  # waits for the SDK to ask again (same request_id) and release
    (session_id,) = fake.sessions
    entitles = fake.called("Entitle")
    assert len(entitles) == QUICK_RETRY.max_attempts + 1
    assert len({e.request.request_id for e in entitles}) == 1
    assert not any(e.request.takeover for e in entitles)
    assert [call.request.session_id for call in fake.called("Release")] == [session_id]
    assert fake.sessions[session_id].msg.state == c.SESSION_STATE_ENDED


async def test_sdk_release_before_start_leaves_the_handle_usable_and_released_on_exit(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    # A cleanup path that releases before start used to mark the handle closed: the
    # session it then started was never released and its task outlived client.close().
    handle = client.session("ACAD", "2026")
    with pytest.raises(RuntimeError):
        await handle.release()
    async with handle as s:
        session_id = s.session_id
        task = s._task
        assert task is not None and not task.done()
    assert handle.end_reason is EndReason.RELEASED and task.done()
    assert [call.request.session_id for call in fake.called("Release")] == [session_id]
    assert fake.sessions[session_id].msg.state == c.SESSION_STATE_ENDED


async def test_sdk_client_close_stops_every_session_task(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    handle = client.session("ACAD", "2026")
    await handle.start()
    task = handle._task
    assert task is not None
    handle._closed = True  # a handle that cannot be released any more (the old state above)
    await client.close()
    assert task.done() and handle._task is None and client._handles == set()


@pytest.mark.parametrize("field", ["lease_warning", "activity_report_margin"])
def test_sdk_session_options_refuse_a_negative_span(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SessionOptions(**{field: -MIN})
    assert getattr(SessionOptions(**{field: timedelta(0)}), field) == timedelta(0)


def test_sdk_session_options_refuse_a_span_that_is_not_a_timedelta() -> None:
    with pytest.raises(TypeError, match="lease_warning"):
        SessionOptions(lease_warning=3600)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="heartbeat_jitter"):
        SessionOptions(heartbeat_jitter="0.1")  # type: ignore[arg-type]


async def test_m7_a_lease_not_renewed_because_heartbeats_are_refused_warns_and_ends_on_time(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    """The server answers but refuses every heartbeat (a rate limit that lasts): the lease
    is not renewed. The warning came only when offline, so it never came; and the session
    stayed usable past its lease while a heartbeat was being retried (70 minutes past,
    with a server asking for 1,000 s between tries)."""
    warnings: list[timedelta] = []
    async with client.session(
        "REVIT",
        "2026",
        options=SessionOptions(heartbeat_jitter=0.0, idle_aware=False),
        on_lease_expiring=lambda s, left: warnings.append(left),
    ) as s:
        await clock.until_sleeping()
        lease_end = s.lease_expires_at
        for _ in range(2000):
            fake.refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", method="Heartbeat")
        await walk(clock, lease_end - timedelta(hours=1) - clock.now(), coarse=10 * MIN)
        assert s.online and s.usable and warnings == [timedelta(hours=1)]
        await walk(clock, timedelta(minutes=59), coarse=10 * MIN)
        assert s.usable
        await step(clock, lease_end - clock.now(), sleepers=0)
        assert clock.now() == lease_end and not s.usable  # at once, on the SDK's clock
        with pytest.raises(SessionEnded):
            s.ensure_usable()
        assert s.end_reason is EndReason.LEASE_EXPIRED


# -- M10: leaving a session does not wait on a server that does not confirm the Release ----


@contextlib.asynccontextmanager
async def hung(fake: FakeLicensing, method: str = "Release") -> AsyncIterator[None]:
    """Inside, the fake receives ``method`` calls and answers none; on leaving it answers
    them, so that a test that fails still ends (the old SDK waited for the answer)."""
    gate = fake.gates[method] = asyncio.Event()
    try:
        yield
    finally:
        gate.set()


@pytest.mark.parametrize(
    ("options", "bound"),
    [(None, timedelta(seconds=5)), (SessionOptions(release_timeout=2 * SEC), 2 * SEC)],
)
async def test_m10_leaving_a_session_waits_at_most_release_timeout_for_a_hung_server(
    fake: FakeLicensing, clock: ManualClock, options: SessionOptions | None, bound: timedelta
) -> None:
    # The default retry policy alone would wait ~53 s (5 attempts of 10 s, and backoff);
    # leaving the block waits release_timeout (5 s by default) on the SDK's clock, then the
    # session ends RELEASE_UNCONFIRMED: the server did not say it was released.
    ended: list[EndReason] = []
    async with client_for(fake, clock, retry=RetryPolicy()) as client, hung(fake):
        handle = client.session(
            "ACAD", "2026", options=options, on_ended=lambda r, s: ended.append(r)
        )

        async def product() -> None:
            async with handle:
                pass

        leaving = asyncio.create_task(product())
        await eventually(lambda: len(fake.called("Release")) == 1)
        await clock.until_sleeping()
        assert clock.next_deadline() == clock.now() + bound
        clock.advance(bound - timedelta(microseconds=1))
        await asyncio.sleep(0.01)
        assert not leaving.done() and not handle.ended
        clock.advance(timedelta(microseconds=1))
        await asyncio.wait_for(leaving, 2)
        assert handle.end_reason is EndReason.RELEASE_UNCONFIRMED
        assert ended == [EndReason.RELEASE_UNCONFIRMED]
        assert isinstance(handle.error, DeadlineExceeded) and not handle.usable
    assert len(fake.called("Release")) == 1  # the call was cancelled, not retried


async def test_m10_a_release_that_fails_ends_the_session_release_unconfirmed_not_released(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    left = client.session("ACAD", "2026")
    async with left:
        fake.down = True  # every attempt UNAVAILABLE: the Release never reaches it
    assert left.end_reason is EndReason.RELEASE_UNCONFIRMED
    assert isinstance(left.error, sdk.Unavailable)
    # release() called by the product raises the error, and does not claim RELEASED either.
    fake.down = False
    explicit = client.session("ACAD", "2026")
    await explicit.start()
    fake.down = True
    with pytest.raises(sdk.Unavailable):
        await explicit.release()
    assert explicit.ended and explicit.end_reason is EndReason.RELEASE_UNCONFIRMED
    assert explicit.error is not None and not explicit.usable
    with pytest.raises(SessionEnded) as info:
        explicit.ensure_usable()
    assert info.value.end_reason is EndReason.RELEASE_UNCONFIRMED


async def test_m10_a_release_the_server_does_not_know_ends_unknown_session_not_unconfirmed(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    # The server forgot the session (ended by an administrator, a restore from a backup):
    # it holds nothing for it, so RELEASE_UNCONFIRMED ("the server may still hold it
    # live") would send the product looking for a session that is not there.
    handle = client.session("ACAD", "2026")
    await handle.start()
    del fake.sessions[handle.session_id]
    with pytest.raises(sdk.UnknownSession):
        await handle.release()
    assert handle.end_reason is EndReason.UNKNOWN_SESSION and not handle.usable
    assert isinstance(handle.error, sdk.UnknownSession)
    assert len(fake.called("Release")) == 1


async def test_m10_release_with_a_timeout_raises_deadline_exceeded_once_it_passes(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    handle = client.session("ACAD", "2026")
    await handle.start()
    async with hung(fake):
        releasing = asyncio.create_task(handle.release(timeout=3 * SEC))
        await eventually(lambda: len(fake.called("Release")) == 1)
        await clock.until_sleeping()
        assert clock.next_deadline() == clock.now() + 3 * SEC
        clock.advance(3 * SEC)
        with pytest.raises(DeadlineExceeded, match=handle.session_id):
            await asyncio.wait_for(releasing, 2)
        assert handle.end_reason is EndReason.RELEASE_UNCONFIRMED
    with pytest.raises(ValueError, match="timeout"):
        await client.session("ACAD", "2026").release(timeout=timedelta(0))


async def test_m10_client_close_on_a_hung_server_waits_one_release_timeout_in_all(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    # Two products, one with a plugin: the sessions are released side by side, each with
    # its plugins within one release_timeout, so closing waits 5 s, not 5 s a session.
    # A host's plugins get the first half of it: its own Release is sent all the same.
    client = client_for(fake, clock, retry=RetryPolicy())
    host = client.session("ACAD", "2026")
    await host.start()
    plugin = host.plugin("ARNOLD")
    await plugin.start()
    other = client.session("REVIT", "2026")
    await other.start()
    try:
        async with hung(fake):
            closing = asyncio.create_task(client.close())
            await eventually(lambda: len(fake.called("Release")) == 2)  # ARNOLD's, REVIT's
            await clock.until_sleeping(2)
            assert clock.next_deadline() == clock.now() + timedelta(seconds=2.5)
            clock.advance(timedelta(seconds=2.5))
            await eventually(lambda: len(fake.called("Release")) == 3)  # then ACAD's own
            await clock.until_sleeping(2)
            assert clock.next_deadline() == clock.now() + timedelta(seconds=2.5)
            clock.advance(timedelta(seconds=2.5))
            await asyncio.wait_for(closing, 2)
        for handle in (plugin, host, other):
            assert handle.end_reason is EndReason.RELEASE_UNCONFIRMED, handle.product_id
    finally:
        await client.close()


def test_m10_release_timeout_must_be_a_positive_timedelta() -> None:
    assert SessionOptions().release_timeout == timedelta(seconds=5)
    with pytest.raises(ValueError, match="release_timeout"):
        SessionOptions(release_timeout=timedelta(0))
    with pytest.raises(TypeError, match="release_timeout"):
        SessionOptions(release_timeout=5)  # type: ignore[arg-type]


def _flip_signature(signed: c.SignedLease) -> None:
    signed.signature = bytes(b ^ 1 for b in signed.signature)


@pytest.mark.parametrize("how", ["cancelled entry", "refused lease"])
async def test_m10_client_close_waits_at_most_release_timeout_for_background_releases(
    fake: FakeLicensing, clock: ManualClock, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # Releases the SDK runs in the background (what a cancelled entry opened, a session
    # whose lease it refused) were waited for with no bound: the retry policy's ~53 s each
    # on a hung server. close() waits one release_timeout in all, then logs and goes.
    client = client_for(fake, clock, retry=RetryPolicy())
    try:
        if how == "cancelled entry":
            gate = fake.gates["Entitle"] = asyncio.Event()

            async def product() -> None:
                async with client.session("ACAD", "2026"):
                    pytest.fail("entered")

            task = asyncio.create_task(product())
            await eventually(lambda: len(fake.called("Entitle")) == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()  # the server opens the session; the SDK releases it
        else:
            fake.tamper_lease = _flip_signature
            with pytest.raises(sdk.LeaseInvalid):
                await client.session("ACAD", "2026").start()
        async with hung(fake):
            await eventually(lambda: len(fake.called("Release")) == 1)
            (session_id,) = fake.sessions
            with caplog.at_level(logging.WARNING, logger="client_sdk"):
                closing = asyncio.create_task(client.close())
                await clock.until_sleeping()
                assert clock.next_deadline() == clock.now() + timedelta(seconds=5)
                clock.advance(timedelta(seconds=5) - timedelta(microseconds=1))
                await asyncio.sleep(0.01)
                assert not closing.done()
                clock.advance(timedelta(microseconds=1))
                await asyncio.wait_for(closing, 2)
            assert any(
                session_id in r.getMessage() and "not confirmed" in r.getMessage()
                for r in caplog.records
            ), [r.getMessage() for r in caplog.records]
        assert len(fake.called("Release")) == 1  # cancelled, not retried
    finally:
        await client.close()


async def test_p4_plugins_of_a_host_the_server_ended_are_released_within_release_timeout(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    # The server ended the host (and so its plugin): the SDK's Release of the plugin went
    # unbounded, so on a hung server the plugin stayed "live" for the retry policy's ~53 s.
    client = client_for(fake, clock, retry=RetryPolicy())
    try:
        host = client.session("ACAD", "2026", options=NO_JITTER)
        await host.start()
        await clock.until_sleeping()
        # The plugin starts a minute later, so that at 5 min the host's heartbeat alone is
        # due: it, not the plugin's own, finds the host ended (else the plugin would end by
        # its own heartbeat's answer, with nothing to release: a race, seen once in CI).
        clock.advance(MIN)
        plugin = host.plugin(
            "ARNOLD", options=SessionOptions(heartbeat_jitter=0.0, release_timeout=2 * SEC)
        )
        await plugin.start()
        await clock.until_sleeping(2)
        async with hung(fake):
            fake.end(host.session_id, c.END_REASON_ENDED_BY_ADMIN)
            await step(clock, 4 * MIN, sleepers=0)
            await eventually(lambda: host.ended and len(fake.called("Release")) == 1)
            assert host.end_reason is EndReason.ENDED_BY_ADMIN
            await clock.until_sleeping()
            assert clock.next_deadline() == clock.now() + 2 * SEC
            clock.advance(2 * SEC)
            await eventually(lambda: plugin.ended)
            assert plugin.end_reason is EndReason.HOST_ENDED
            assert isinstance(plugin.error, DeadlineExceeded)
        assert len(fake.called("Release")) == 1
    finally:
        await client.close()


async def test_m10_a_release_cancelled_before_the_answer_keeps_the_session_for_close(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The product bounds release() itself and gives up before the server answers: the
    # session may still be live, so the client must not forget it; close() releases it.
    handle = client.session("ACAD", "2026")
    await handle.start()
    async with hung(fake):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handle.release(), 0.05)
        assert not handle.ended and handle in client._handles
        closing = asyncio.create_task(client.close())
        await eventually(lambda: len(fake.called("Release")) == 2)  # close() sends it again
    await asyncio.wait_for(closing, 2)
    assert handle.end_reason is EndReason.RELEASED
    assert fake.sessions[handle.session_id].msg.state == c.SESSION_STATE_ENDED


async def test_m10_a_release_cancelled_then_unanswered_ends_release_unconfirmed_at_close(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    client = client_for(fake, clock, retry=RetryPolicy())
    try:
        host = client.session("ACAD", "2026")
        await host.start()
        plugin = host.plugin("ARNOLD")
        await plugin.start()
        async with hung(fake):
            releasing = asyncio.create_task(host.release())
            await eventually(lambda: len(fake.called("Release")) == 1)  # the plugin's
            releasing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await releasing
            assert not host.ended and not plugin.ended
            assert {host, plugin} <= client._handles
            closing = asyncio.create_task(client.close())
            await eventually(lambda: len(fake.called("Release")) == 2)
            await clock.until_sleeping()
            clock.advance(2.5 * SEC)  # the plugin's half of release_timeout
            await eventually(lambda: len(fake.called("Release")) == 3)
            await clock.until_sleeping()
            clock.advance(2.5 * SEC)
            await asyncio.wait_for(closing, 2)
        assert plugin.end_reason is EndReason.RELEASE_UNCONFIRMED
        assert host.end_reason is EndReason.RELEASE_UNCONFIRMED
        assert isinstance(host.error, DeadlineExceeded) and not client._handles
    finally:
        await client.close()


async def test_m10_leaving_twice_waits_for_the_release_under_way_and_sends_one(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    # A block left while its Release is on its way (its task cancelled: the leaving runs
    # on, shielded), then the client closed: close() waits for that Release, sends none.
    handle = client.session("ACAD", "2026")
    started = asyncio.Event()

    async def product() -> None:
        async with handle:
            started.set()

    gate = fake.gates["Release"] = asyncio.Event()
    task = asyncio.create_task(product())
    await started.wait()
    await eventually(lambda: len(fake.called("Release")) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, 2)
    assert handle.end_reason is EndReason.RELEASED
    assert len(fake.called("Release")) == 1


@pytest.mark.parametrize("how", ["suspend, boottime", "suspend, monotonic", "clock set back"])
async def test_m7_time_asleep_or_a_clock_set_back_gives_no_more_than_24_h_offline(
    fake: FakeLicensing, clock: ManualClock, how: str
) -> None:
    # A laptop that goes offline, then sleeps 30 h: it wakes with its lease over (RULES
    # M7), though time.monotonic, which SystemClock read, stopped while it slept. Nor does
    # a wall clock set back two days give it more time.
    t = FakeTime()
    system = sdk.SystemClock(**t.sources())
    async with (
        AsyncClient(fake.target, FAKE_KEY, clock=system, retry=QUICK_RETRY) as client,
        client.session("ACAD", "2026") as s,
    ):
        entitled = system.now()
        assert s.lease_expires_at == entitled + timedelta(hours=24)
        fake.down = True  # offline from now on
        t.run(3600)
        assert s.usable
        if how == "clock set back":
            t.wall -= 48 * 3600
            t.run(23 * 3600 - 1)
            assert s.usable
            t.run(1)
        else:
            t.suspend(30 * 3600, steady_counts=how == "suspend, boottime")
        assert system.now() >= s.lease_expires_at and not s.usable
        with pytest.raises(SessionEnded) as info:
            s.ensure_usable()
        assert info.value.end_reason is EndReason.LEASE_EXPIRED and s.ended
    assert fake.called("Release") == []  # the lease is over: nothing left to release


# -- an Idle, or a renewal, across an outage ----------------------------------------------


async def test_m6_an_idle_lost_to_an_outage_is_sent_once_the_server_is_back(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    """The Idle at 3:00 meets an outage (2:30 to 3:30). The user never comes back: the
    server must hear of it once it answers, not keep the session in use (a grace under
    way charged at 5:00, M3) until its own 15 minutes. It was never sent again."""
    options = SessionOptions(idle_threshold=3 * MIN, heartbeat_jitter=0.0)
    async with client.session("ACAD", "2026", options=options) as s:
        await clock.until_sleeping()
        await walk(clock, 2 * MIN + 30 * SEC)
        fake.down = True
        await walk(clock, MIN)  # the Idle at 3:00 fails
        lost = len(fake.called("Idle"))  # (the retry policy's attempts)
        assert lost >= 1 and not s.online
        fake.down = False
        await walk(clock, 6 * MIN)
        assert s.online and s.state is SessionState.IDLE
        assert len(fake.called("Idle")) == lost + 1  # once, after the first heartbeat back
        assert fake.sessions[s.session_id].msg.state == c.SESSION_STATE_IDLE


async def test_h3_an_idle_lost_to_a_takeover_is_sent_to_the_new_active(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    """The active dies as the Idle goes out and the standby takes over only after the
    retries gave up: the Idle follows the session to the new active."""
    other = await FakeLicensing(clock).share(fake).start()
    try:
        other.standby = ""  # a standby that knows no leader yet
        options = SessionOptions(idle_threshold=3 * MIN, heartbeat_jitter=0.0)
        async with (
            two_targets(fake, other, clock) as client,
            client.session("ACAD", "2026", options=options) as s,
        ):
            await clock.until_sleeping()
            await walk(clock, 2 * MIN)
            fake.down = True  # the active dies
            await walk(clock, MIN + 30 * SEC)  # the Idle at 3:00 fails
            assert not s.online
            other.standby = None  # the standby takes over
            await walk(clock, 5 * MIN)
            assert s.online and s.state is SessionState.IDLE
            assert other.called("Idle"), "the Idle never reached the new active"
    finally:
        await other.stop()


class _SlowHeartbeats(FakeLicensing):
    """Heartbeats done at once and answered only once ``gate`` opens (when ``slow``)."""

    slow = False
    gate: asyncio.Event

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        answer = await super().Heartbeat(request, context)
        if self.slow:
            await self.gate.wait()
        return answer


async def test_m7_a_renewal_answered_after_the_lease_ended_here_is_released_not_taken(
    clock: ManualClock,
) -> None:
    """Offline near its lease's end (10 minutes here), the SDK's retry at 9:40 reaches
    the server, which renews the lease; the answer comes after 10:00, when
    ``ensure_usable()`` has ended the session LEASE_EXPIRED. The SDK took that answer
    (its end reason became UNSPECIFIED) and, the handle ended, released nothing: the
    server held a live, renewed session nobody heartbeats (M9 refusing other devices)."""
    fake = _SlowHeartbeats(clock)
    fake.gate = asyncio.Event()
    await fake.start()
    fake.lease = 10 * MIN
    options = SessionOptions(
        heartbeat_jitter=0.0, idle_aware=False, offline_retry_interval=70 * SEC
    )
    try:
        async with client_for(fake, clock) as client:
            async with client.session("REVIT", "2026", options=options) as s:
                await clock.until_sleeping()
                fake.down = True
                await walk(clock, 9 * MIN + 30 * SEC)  # tried at 5:00 ... 8:30
                assert not s.online
                fake.down, fake.slow = False, True
                clock.advance(10 * SEC)  # 9:40: the retry goes out
                await eventually(
                    lambda: (
                        bool(fake.called("Heartbeat"))
                        and fake.called("Heartbeat")[-1].time == clock.now()
                    )
                )
                clock.advance(25 * SEC)  # 10:05: the lease is over on the SDK's clock
                with pytest.raises(SessionEnded):
                    s.ensure_usable()
                assert s.end_reason is EndReason.LEASE_EXPIRED
                fake.gate.set()  # the renewal's answer arrives
                await eventually(lambda: bool(fake.called("Release")))
            assert s.end_reason is EndReason.LEASE_EXPIRED and s.state is SessionState.ENDED
        assert fake.sessions[s.session_id].msg.state == c.SESSION_STATE_ENDED
    finally:
        await fake.stop()
