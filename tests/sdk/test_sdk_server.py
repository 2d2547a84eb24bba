"""The SDK against a real server on 127.0.0.1 port 0 with the test clock (issue 5, "Tests
that must exist"): lifecycle, automatic idle and resume, plugin binding, takeover through
the callback, a retried Entitle charged once, offline tolerance, each typed exception.

The server's clock and the SDK's move together (``World.advance``); nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

import client_sdk as sdk
from client_sdk import ChargeState, Coverage, EndReason, Platform, SessionOptions, SessionState
from tessera_api.tessera.v1 import admin_service_pb2 as a
from tessera_api.tessera.v1 import common_pb2 as c
from tests.sdk.conftest import eventually
from tests.sdk.fakes import Proxy
from tests.sdk.world import ALICE, CAROL, DAVE, NIA, Admin, World
from tests.support import ServerThread

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
NO_JITTER = SessionOptions(heartbeat_jitter=0.0)


@pytest.fixture
async def world(server: ServerThread) -> AsyncIterator[World]:
    w = World(server.target, Admin(server.target))
    await w.provision()
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def proxy(server: ServerThread) -> AsyncIterator[Proxy]:
    p = await Proxy(server.target).start()
    try:
        yield p
    finally:
        await p.stop()


def kinds(entries: list[c.LedgerEntry], session_id: str | None = None) -> list[tuple[str, int]]:
    return [
        (c.LedgerEntryKind.Name(e.kind).removeprefix("LEDGER_ENTRY_KIND_"), e.amount)
        for e in entries
        if session_id is None or e.session_id == session_id
    ]


async def test_m1_whole_session_lifecycle(world: World) -> None:
    charges: list[tuple[ChargeState, ChargeState]] = []
    ended: list[EndReason] = []
    client = world.client()
    async with client.session(
        "ACAD",
        "2026",
        options=NO_JITTER,
        on_charge_state_changed=lambda old, new, s: charges.append((old, new)),
        on_ended=lambda reason, s: ended.append(reason),
    ) as s:
        assert s.state is SessionState.ACTIVE and s.usable
        assert s.session.user_id == ALICE and s.session.team_id == "acme"
        assert s.session.device_id == "dev-1" and s.session.platform is Platform.WINDOWS
        assert s.session.coverage is Coverage.TOKENS and s.session.daily_rate == 10
        assert s.session.charge_state is ChargeState.GRACE
        assert s.session.heartbeat_interval == timedelta(minutes=5)
        assert s.session.lease_expire_time == s.session.start_time + timedelta(hours=24)
        for _ in range(4):
            await world.advance(MIN)
            s.touch()
        await world.advance(MIN)  # 5 minutes in use: the hold is captured (M3)
        assert s.session.charge_state is ChargeState.CHARGED
        assert s.session.lease_expire_time == s.session.start_time + timedelta(hours=24, minutes=5)
        assert s.session.window_end_time == s.session.start_time + timedelta(hours=24)
        await world.advance(20 * MIN)
        session_id = s.session_id
    assert s.ended and s.end_reason is EndReason.RELEASED
    assert ended == [EndReason.RELEASED]
    assert charges == [(ChargeState.GRACE, ChargeState.CHARGED)]
    assert kinds(await world.admin.ledger("acme"), session_id) == [("HOLD", 10), ("CAPTURE", 10)]
    [stored] = await world.admin.sessions(ALICE)
    assert stored.state == c.SESSION_STATE_ENDED and stored.end_reason == c.END_REASON_RELEASED


async def test_m6_sdk_goes_idle_after_threshold_and_resumes(world: World) -> None:
    # The SDK's threshold is 10 minutes here, the server's 15: the Idle is the SDK's own.
    states: list[tuple[SessionState, SessionState]] = []
    options = SessionOptions(idle_threshold=10 * MIN, heartbeat_jitter=0.0)
    client = world.client(options=options)
    async with client.session(
        "ACAD", "2026", on_state_changed=lambda o, n, s: states.append((o, n))
    ) as s:
        await world.advance(2 * MIN)
        s.touch()
        await world.advance(9 * MIN + 59 * timedelta(seconds=1))
        assert s.state is SessionState.ACTIVE  # not yet 10 minutes since the touch at 2
        await world.advance(timedelta(seconds=1))
        assert s.state is SessionState.IDLE  # the SDK's Idle: the server's would be at 17
        [stored] = await world.admin.sessions(ALICE)
        assert stored.state == c.SESSION_STATE_IDLE
        await world.advance(30 * MIN)
        assert s.state is SessionState.IDLE and s.usable
        s.touch()  # the user is back: a heartbeat goes out at once and makes it active
        await eventually(lambda: s.state is SessionState.ACTIVE)
        [stored] = await world.admin.sessions(ALICE)
        assert stored.state == c.SESSION_STATE_ACTIVE
        # Charged at 5 minutes; that window is still open, so coming back costs nothing (M4).
        assert s.session.charge_state is ChargeState.CHARGED
    assert states == [
        (SessionState.ACTIVE, SessionState.IDLE),
        (SessionState.IDLE, SessionState.ACTIVE),
        (SessionState.ACTIVE, SessionState.ENDED),
    ]


async def test_m6_sdk_heartbeat_sends_a_negative_activity_age_for_the_server_to_refuse(
    world: World,
) -> None:
    """A negative ``seconds_since_activity`` is the caller's mistake: it goes out as it is
    and comes back INVALID_ARGUMENT naming the field, as a call on the wire would. Sent
    as 0 ("just now"), it woke an idle session in grace and held the rate again."""
    client = world.client()
    s = await client.entitle("ACAD", "2026")
    await world.admin.advance_by(2 * MIN)
    assert (await client.idle(s.session_id)).state is SessionState.IDLE  # the hold released
    await world.admin.advance_by(MIN)
    with pytest.raises(sdk.InvalidArgument) as refused:
        await client.heartbeat(s.session_id, -60)
    assert list(refused.value.field_violations) == ["seconds_since_activity"]
    [stored] = await world.admin.sessions(ALICE)
    assert stored.state == c.SESSION_STATE_IDLE
    kinds = [(e.kind, e.amount) for e in await world.admin.ledger("acme")]
    assert kinds == [
        (c.LEDGER_ENTRY_KIND_PURCHASE, 100),
        (c.LEDGER_ENTRY_KIND_HOLD, 10),
        (c.LEDGER_ENTRY_KIND_HOLD_RELEASE, 10),
    ]


async def test_m6_sdk_heartbeat_sends_the_largest_activity_age_the_wire_takes(
    world: World,
) -> None:
    """int64's largest (before anything the session knows) is a figure the server takes,
    as the session's start; the SDK sent it through a float, past int64, and failed with
    protobuf's ValueError instead of calling."""
    client = world.client()
    s = await client.entitle("ACAD", "2026")
    await world.admin.advance_by(2 * MIN)
    assert (await client.heartbeat(s.session_id, 2**63 - 1)).state is SessionState.ACTIVE
    # The activity taken as the session's start (its Entitle, at 0): idle at 15 minutes,
    # not 15 after the heartbeat (as an age sent as 0 would make it).
    await world.admin.advance_by(13 * MIN)
    [stored] = await world.admin.sessions(ALICE)
    assert stored.state == c.SESSION_STATE_IDLE


async def test_m6_default_threshold_matches_the_server(world: World) -> None:
    client = world.client(options=NO_JITTER)
    async with client.session("ACAD", "2026") as s:
        await world.advance(12 * MIN)
        s.touch()  # between heartbeats: the SDK reports it before the server's deadline
        await world.advance(14 * MIN)
        assert s.state is SessionState.ACTIVE
        await world.advance(2 * MIN)  # 16 minutes after the touch at 12
        assert s.state is SessionState.IDLE
        [stored] = await world.admin.sessions(ALICE)
        assert stored.state == c.SESSION_STATE_IDLE


async def test_p4_plugin_bound_to_host(world: World) -> None:
    client = world.client(options=NO_JITTER)
    with pytest.raises(sdk.HostSessionRequired):
        await client.entitle("ARNOLD", "2026")
    async with client.session("ACAD", "2026") as host:
        async with host.plugin("ARNOLD") as plugin:
            assert plugin.session.parent_session_id == host.session_id
            assert plugin.session.device_id == host.session.device_id == "dev-1"
            assert plugin.session.daily_rate == 3
            await world.advance(6 * MIN)
            assert host.session.charge_state is ChargeState.CHARGED
            assert plugin.session.charge_state is ChargeState.CHARGED
        assert plugin.end_reason is EndReason.RELEASED and host.usable
        second = host.plugin("ARNOLD")
        await second.start()
        await world.advance(MIN)
    assert second.end_reason is EndReason.RELEASED and host.end_reason is EndReason.RELEASED
    stored = {s.session_id: s for s in await world.admin.sessions(ALICE)}
    assert stored[second.session_id].end_reason == c.END_REASON_RELEASED
    assert stored[second.session_id].parent_session_id == host.session_id


async def test_p4_plugin_ends_when_host_is_ended_by_admin(world: World) -> None:
    from tessera_api.tessera.v1 import admin_service_pb2 as a

    reasons: list[EndReason] = []
    client = world.client(options=NO_JITTER)
    async with (
        client.session("ACAD", "2026") as host,
        host.plugin("ARNOLD", on_ended=lambda r, s: reasons.append(r)) as plugin,
    ):
        await world.admin("EndSession", a.EndSessionRequest(session_id=host.session_id))
        await world.advance(5 * MIN)
        # Both heartbeat at once: the plugin's may be the one that learns it first.
        await eventually(lambda: host.ended and plugin.ended)
        assert host.end_reason is EndReason.ENDED_BY_ADMIN
        assert plugin.end_reason is EndReason.HOST_ENDED
    assert reasons == [EndReason.HOST_ENDED]


async def test_m9_takeover_seen_through_callback(world: World) -> None:
    taken: asyncio.Queue[tuple[EndReason, str]] = asyncio.Queue()
    laptop = world.client(device_id="dev-laptop", options=NO_JITTER)
    desktop = world.client(device_id="dev-desktop", options=NO_JITTER)
    async with laptop.session(
        "ACAD", "2026", on_ended=lambda r, s: taken.put_nowait((r, s.session_id))
    ) as first:
        await world.advance(MIN)
        with pytest.raises(sdk.RunningElsewhere) as info:
            async with desktop.session("ACAD", "2026"):
                pass
        assert info.value.device_id == "dev-laptop"
        async with desktop.session("ACAD", "2026", takeover=True) as second:
            await world.advance(5 * MIN)  # the laptop's next heartbeat learns it
            assert await asyncio.wait_for(taken.get(), 5) == (
                EndReason.TAKEN_OVER,
                first.session_id,
            )
            assert first.ended and not first.usable and second.usable
            assert first.session.end_reason is EndReason.TAKEN_OVER
    # A takeover is no break (M9): one hold, one capture for the meter.
    assert kinds(await world.admin.ledger("acme")) == [
        ("PURCHASE", 100),
        ("HOLD", 10),
        ("CAPTURE", 10),
    ]


async def test_m11_retried_entitle_after_dropped_connection_charged_once(
    world: World, proxy: Proxy
) -> None:
    client = world.client(target=proxy.target, options=NO_JITTER)
    await client.signing_keys()  # opens the connection through the proxy
    proxy.blackhole()  # the Entitle reaches the server; its answer is lost...
    handle = client.session("ACAD", "2026")
    entitling = asyncio.ensure_future(handle.start())
    stored: list[c.Session] = []

    async def seen() -> bool:
        stored[:] = await world.admin.sessions(ALICE)
        return bool(stored)

    for _ in range(500):
        if await seen():
            break
        await asyncio.sleep(0.005)
    assert len(stored) == 1
    proxy.drop()  # ...and the connection drops: UNAVAILABLE, retried with the same request_id
    session = await asyncio.wait_for(entitling, 10)
    assert session.session_id == stored[0].session_id
    assert proxy.connections == 2
    async with handle:
        await world.advance(6 * MIN)
        assert handle.session.charge_state is ChargeState.CHARGED
    assert [s.session_id for s in await world.admin.sessions(ALICE)] == [session.session_id]
    assert kinds(await world.admin.ledger("acme")) == [
        ("PURCHASE", 100),
        ("HOLD", 10),
        ("CAPTURE", 10),
    ]
    assert (await world.admin.team("acme")).available_tokens == 90


async def test_m7_offline_tolerance_until_the_lease_ends(world: World, proxy: Proxy) -> None:
    warned: list[timedelta] = []
    ended: list[EndReason] = []
    client = world.client(target=proxy.target, options=NO_JITTER)
    async with client.session(
        "REVIT",
        "2026",
        on_lease_expiring=lambda s, left: warned.append(left),
        on_ended=lambda r, s: ended.append(r),
    ) as s:
        await world.advance(5 * MIN)  # a heartbeat: the lease ends 24 h after it
        lease_end = s.lease_expires_at
        assert s.session.lease_expire_time == lease_end  # both clocks agree in this test
        proxy.go_down()
        await world.advance(22 * HOUR, coarse=30 * MIN)
        assert s.usable and not s.online and s.state is SessionState.ACTIVE
        assert warned == []
        await world.advance(lease_end - HOUR - world.clock.now())
        assert warned == [HOUR] and s.usable
        await world.advance(HOUR - MIN)
        assert s.usable and ended == []
        await world.advance(MIN)
        await eventually(lambda: s.ended)
        assert s.end_reason is EndReason.LEASE_EXPIRED and not s.usable
        assert ended == [EndReason.LEASE_EXPIRED]
        proxy.go_up()
    [stored] = await world.admin.sessions(ALICE)
    assert stored.state == c.SESSION_STATE_ENDED
    assert stored.end_reason == c.END_REASON_LEASE_EXPIRED
    assert stored.end_time.ToDatetime() == lease_end.replace(tzinfo=None)


async def test_m7_heartbeats_resume_when_the_server_returns(world: World, proxy: Proxy) -> None:
    client = world.client(target=proxy.target, options=NO_JITTER)
    async with client.session("REVIT", "2026") as s:
        await world.advance(10 * MIN)
        proxy.go_down()
        await world.advance(3 * HOUR, coarse=10 * MIN)
        assert not s.online and s.usable
        proxy.go_up()
        # Offline, the SDK tries every minute; gRPC's own reconnect backoff is real
        # time (at most 50 ms in these tests, longer on a busy machine), and a try
        # before the channel has reconnected fails as the ones while down did.
        for _ in range(20):
            await asyncio.sleep(0.05)
            await world.advance(MIN)
            if s.online:
                break
        assert s.online and s.state is SessionState.ACTIVE
        assert s.lease_expires_at == world.clock.now() + timedelta(hours=24)
        assert s.session.lease_expire_time == world.clock.now() + timedelta(hours=24)
    [stored] = await world.admin.sessions(ALICE)
    assert stored.end_reason == c.END_REASON_RELEASED


# -- each typed exception, from the real server ----------------------------------------


async def test_errors_insufficient_tokens_carries_balance_and_rate(world: World) -> None:
    client = world.client(DAVE)
    with pytest.raises(sdk.InsufficientTokens) as info:
        async with client.session("ACAD", "2026"):
            pass
    assert (info.value.available, info.value.daily_rate) == (5, 10)
    assert info.value.team_id == "poor"


async def test_errors_device_limit(world: World) -> None:
    for n in (1, 2, 3):
        async with world.client(device_id=f"dev-{n}").session("ACAD", "2026"):
            pass
    with pytest.raises(sdk.DeviceLimit) as info:
        await world.client(device_id="dev-4").entitle("ACAD", "2026")
    assert info.value.limit == 3


async def test_errors_refusals_by_reason(world: World) -> None:
    alice = world.client()
    with pytest.raises(sdk.UnsupportedPlatform):
        await alice.entitle("REVIT", "2026", platform=Platform.MACOS)
    with pytest.raises(sdk.UnsupportedVersion):
        await alice.entitle("ACAD", "2021", platform=Platform.LINUX)
    with pytest.raises(sdk.UnknownProduct):
        await alice.entitle("NOPE", "2026")
    with pytest.raises(sdk.UnknownSession):
        await alice.heartbeat("ses_unknown", 0)
    with pytest.raises(sdk.NotAssigned):
        await world.client(CAROL).entitle("ACAD", "2026")
    with pytest.raises(sdk.InvitationPending):
        await world.client(NIA).entitle("ACAD", "2026")
    with pytest.raises(sdk.Unauthenticated):
        await world.client(key="tsu_not-a-key").entitle("ACAD", "2026")
    with pytest.raises(sdk.InvalidArgument) as bad:
        await alice.entitle("ACAD", "")
    assert "product_version" in bad.value.field_violations
    with pytest.raises(sdk.InvalidArgument) as bad:
        await alice.entitle("ACAD", "2026", platform=Platform.UNSPECIFIED)
    assert "platform" in bad.value.field_violations
    revit = await alice.entitle("REVIT", "2026")
    with pytest.raises(sdk.IdleNotSupported):
        await alice.idle(revit.session_id)
    await alice.release(revit.session_id)
    await world.advance(timedelta(days=7))
    with pytest.raises(sdk.InvitationExpired):
        await world.client(NIA).entitle("ACAD", "2026")


async def test_sdk_user_key_issued_again_ends_the_session_key_refused(world: World) -> None:
    # IssueUserKey replaces Alice's key while her session runs: the next heartbeat, sent
    # with the old key, is refused, and the session ends KEY_REFUSED. A client on the
    # new key can still release it (a session belongs to its user, not to one key).
    client = world.client()
    async with client.session("REVIT", "2026", options=NO_JITTER) as s:
        issued = await world.admin("IssueUserKey", a.IssueUserKeyRequest(user_id=ALICE))
        await world.advance(5 * MIN)  # the heartbeat
        await eventually(lambda: s.ended)
        assert s.end_reason is EndReason.KEY_REFUSED
        assert isinstance(s.error, sdk.Unauthenticated)
        assert s.error.reason == "UNAUTHENTICATED"
        session_id = s.session_id
    [live] = await world.admin.sessions(ALICE, include_ended=False)
    assert live.session_id == session_id
    released = await world.client(key=issued.user_key).release(session_id)
    assert released.end_reason is EndReason.RELEASED


async def test_errors_unavailable_when_the_server_is_away(world: World, proxy: Proxy) -> None:
    proxy.go_down()
    with pytest.raises(sdk.Unavailable):
        await world.client(target=proxy.target).entitle("ACAD", "2026")
    assert await world.admin.sessions(ALICE) == []


async def test_a6_unassigned_user_sees_the_session_end_not_assigned(world: World) -> None:
    # What the real server does when a user loses access (RULES A6): it ends the session
    # and answers the next Heartbeat with it, END_REASON_NOT_ASSIGNED (no refusal); the
    # session then ends NOT_ASSIGNED in the SDK, with no error.
    client = world.client(options=NO_JITTER)
    async with client.session("REVIT", "2026") as s:
        await world.admin("UnassignUser", a.UnassignUserRequest(team_id="acme", user_id=ALICE))
        await world.advance(5 * MIN)
        await eventually(lambda: s.ended)
        assert s.end_reason is EndReason.NOT_ASSIGNED and s.error is None


async def test_m3_m6_an_idle_lost_to_an_outage_reaches_the_server_and_nothing_is_charged(
    world: World, proxy: Proxy
) -> None:
    """The user signs in and does nothing; the SDK's Idle at 3:00 meets a network outage
    (2:30 to about 4:00). It was never sent again: the server kept the session in use
    and charged its grace at 5:00 (M3: a meter idle before its 5 minutes costs nothing)."""
    options = SessionOptions(idle_threshold=3 * MIN, heartbeat_jitter=0.0)
    client = world.client(target=proxy.target, options=options)
    async with client.session("ACAD", "2026") as s:
        await world.advance(2 * MIN + 30 * timedelta(seconds=1))
        proxy.go_down()
        await world.advance(MIN)  # 3:30: the Idle at 3:00 failed
        assert not s.online
        proxy.go_up()
        # (gRPC's reconnect backoff is real time: as in the test above.)
        for _ in range(40):
            await asyncio.sleep(0.05)
            await world.advance(10 * timedelta(seconds=1))
            if s.online:
                break
        await eventually(lambda: s.state is SessionState.IDLE)
        await world.advance(2 * MIN)  # past 5:00
        [stored] = await world.admin.sessions(ALICE)
        assert stored.state == c.SESSION_STATE_IDLE
        assert kinds(await world.admin.ledger("acme"), s.session_id) == [
            ("HOLD", 10),
            ("HOLD_RELEASE", 10),
        ]


# -- what the callbacks tell the product, against what the server holds --------------------


def _recorder(log: list[tuple[object, ...]], tag: str) -> dict[str, Any]:
    """Callbacks that add what they are told to ``log``, in the order they are told."""
    return {
        "on_charge_state_changed": lambda o, n, s: log.append((tag, "charge", o.name, n.name)),
        "on_state_changed": lambda o, n, s: log.append((tag, "state", o.name, n.name)),
        "on_ended": lambda r, s: log.append((tag, "ended", r.name)),
    }


async def _charge_state(world: World, session_id: str) -> str:
    [found] = [s for s in await world.admin.sessions(ALICE) if s.session_id == session_id]
    return c.ChargeState.Name(found.charge_state).removeprefix("CHARGE_STATE_")


async def test_m3_a_release_in_grace_tells_the_product_its_charge_state_went(
    world: World,
) -> None:
    """Released within the grace, the hold is given back (charge state NONE, as the
    server and the handle both say); ``on_charge_state_changed`` said nothing of it,
    though it did for the same end learnt from a heartbeat. A plugin's too."""
    log: list[tuple[object, ...]] = []
    client = world.client(options=NO_JITTER)
    async with client.session("ACAD", "2026", **_recorder(log, "host")) as host:
        async with host.plugin("ARNOLD", **_recorder(log, "plugin")) as plugin:
            await world.advance(2 * MIN)
        assert await _charge_state(world, plugin.session_id) == "NONE"
    assert await _charge_state(world, host.session_id) == "NONE"
    assert host.session.charge_state is ChargeState.NONE
    assert log == [
        ("plugin", "state", "ACTIVE", "ENDED"),
        ("plugin", "charge", "GRACE", "NONE"),
        ("plugin", "ended", "RELEASED"),
        ("host", "state", "ACTIVE", "ENDED"),
        ("host", "charge", "GRACE", "NONE"),
        ("host", "ended", "RELEASED"),
    ]


async def test_m3_m6_idle_and_back_are_told_cause_first(world: World) -> None:
    """Going idle gives up the grace, coming back begins another: the callbacks said
    each effect before its cause (GRACE -> NONE before ACTIVE -> IDLE)."""
    log: list[tuple[object, ...]] = []
    options = SessionOptions(idle_threshold=3 * MIN, heartbeat_jitter=0.0)
    client = world.client(options=options)
    async with client.session("ACAD", "2026", **_recorder(log, "acad")) as s:
        await world.advance(3 * MIN)  # the SDK's Idle at 3:00, in grace
        assert s.state is SessionState.IDLE
        await world.advance(MIN)
        s.touch()
        await eventually(lambda: s.state is SessionState.ACTIVE)
        await world.settle()
    assert log[:4] == [
        ("acad", "state", "ACTIVE", "IDLE"),
        ("acad", "charge", "GRACE", "NONE"),
        ("acad", "state", "IDLE", "ACTIVE"),
        ("acad", "charge", "NONE", "GRACE"),
    ]


async def test_m5_a_renewal_made_between_two_heartbeats_is_told(world: World, proxy: Proxy) -> None:
    """Charged at 0:05, the window to 24:00; the product offline from 23:58 to 24:07:
    the server renewed at 24:00 and charged again at 24:05. Both answers said CHARGED
    (the second with the next day's window), and the product was told nothing."""
    log: list[tuple[object, ...]] = []
    client = world.client(target=proxy.target, options=NO_JITTER)
    async with client.session("REVIT", "2026", **_recorder(log, "revit")) as s:
        start = world.clock.now()
        await world.advance(6 * MIN)
        assert s.session.charge_state is ChargeState.CHARGED
        await world.advance(24 * HOUR - 8 * MIN, coarse=HOUR)
        proxy.go_down()
        await world.advance(8 * MIN, coarse=MIN)
        proxy.go_up()
        for _ in range(40):  # (gRPC's reconnect backoff is real time)
            await asyncio.sleep(0.05)
            await world.advance(10 * timedelta(seconds=1))
            if s.online:
                break
        assert s.online and s.session.charge_state is ChargeState.CHARGED
        assert s.session.window_end_time == start + 48 * HOUR
    charges = [entry[2:] for entry in log if entry[1] == "charge"]
    assert charges == [
        ("GRACE", "CHARGED"),
        ("CHARGED", "GRACE"),
        ("GRACE", "CHARGED"),
    ]
