"""Signed leases in the SDK (issue 6; RULES M7): every lease is verified offline with the
server's Ed25519 keys, a forged or altered one is refused, and the signed lease is what
the product runs on while the server is away.

Against the fake (tampering, unknown keys, mismatched sessions, rotation, pinned keys,
skewed clocks, replays) and against the real server (the verified lease is the server's,
and offline use lasts until it ends).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

import client_sdk as sdk
from client_sdk import (
    AsyncClient,
    Client,
    Coverage,
    EndReason,
    LeaseInvalid,
    ManualClock,
    Platform,
    SessionOptions,
    SessionState,
)
from server.domain.userentries import canonical_user_id
from tessera_api.tessera.v1 import common_pb2 as c
from tessera_api.tessera.v1 import licensing_service_pb2 as pb
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY, client_for, eventually
from tests.sdk.fakes import FakeLicensing, FakeThread, Proxy
from tests.sdk.test_session_fake import step, walk
from tests.sdk.world import ALICE, Admin, World
from tests.support import ServerThread

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
NO_JITTER = SessionOptions(heartbeat_jitter=0.0)
NOT_IDLE = SessionOptions(heartbeat_jitter=0.0, idle_aware=False)
ALICE_REVIT = {"user_id": "alice@example.com", "device_id": "dev-test", "product_id": "REVIT"}


def released(fake: FakeLicensing, session_id: str) -> bool:
    return [call.request.session_id for call in fake.called("Release")] == [session_id]


# -- every lease is verified ------------------------------------------------------------


async def test_m7_sdk_verifies_every_lease_and_exposes_the_last(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("ACAD", "2026", options=NO_JITTER) as s:
        lease = s.lease
        assert lease is not None and s.session.lease == lease
        assert (lease.session_id, lease.user_id, lease.team_id) == (
            s.session_id,
            "alice@example.com",
            "acme",
        )
        assert (lease.product_id, lease.device_id, lease.coverage) == (
            "ACAD",
            "dev-test",
            Coverage.TOKENS,
        )
        assert lease.key_id == fake.signing_key_id
        assert lease.issue_time == clock.now() and lease.lease_expire_time == clock.now() + DAY
        assert lease.span == DAY and s.lease_expires_at == clock.now() + DAY
        # The stored bytes verify again, with no server, to the same lease.
        mine = {"user_id": "alice@example.com", "device_id": "dev-test", "product_id": "ACAD"}
        assert sdk.verify_lease(lease.signed, fake.public_keys(), **mine, clock=clock) == lease
        assert sdk.verify_lease_signature(lease.signed_lease(), fake.public_keys()) == lease
        await clock.until_sleeping()
        await walk(clock, 5 * MIN)  # a heartbeat: a new lease, verified
        assert s.lease is not lease and s.lease.issue_time == clock.now()
        assert s.lease.lease_expire_time == clock.now() + DAY == s.lease_expires_at
        async with client.session("REVIT", "2026") as other:
            assert other.lease is not None and other.lease.product_id == "REVIT"
    assert len(fake.called("GetSigningKeys")) == 1  # fetched once, then cached


async def test_m7_sdk_fetches_the_keys_once_with_its_retry_policy(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="GetSigningKeys")
    fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="GetSigningKeys")
    async with client_for(fake, clock) as client:
        handles = [client.session(p, "2026") for p in ("ACAD", "REVIT", "ACAD")]
        await asyncio.gather(*(h.start() for h in handles))  # concurrent: one fetch
        assert all(h.usable and h.lease is not None for h in handles)
        assert len(fake.called("GetSigningKeys")) == 3  # two refused, retried, one answer
        assert await client.signing_keys() == fake.public_keys()
        assert len(fake.called("GetSigningKeys")) == 3
        assert await client.signing_keys(refresh=True) == fake.public_keys()
        assert len(fake.called("GetSigningKeys")) == 4


async def test_m7_sdk_opens_no_session_it_cannot_verify(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    for _ in range(QUICK_RETRY.max_attempts):
        fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="GetSigningKeys")
    async with client_for(fake, clock) as client:
        with pytest.raises(sdk.Unavailable):
            async with client.session("ACAD", "2026"):
                raise AssertionError("never entered")
    assert fake.called("Entitle") == []  # the keys come first: nothing opened, nothing held


# -- forged, altered, misdirected -------------------------------------------------------


def _alter_payload(signed: c.SignedLease) -> None:
    lease = c.Lease.FromString(signed.lease)
    lease.lease_expire_time.seconds += 365 * 86400  # a year of free use
    signed.lease = lease.SerializeToString()


def _alter_signature(signed: c.SignedLease) -> None:
    signed.signature = bytes(b ^ 1 for b in signed.signature)


def _other_published_key(fake: FakeLicensing) -> Callable[[c.SignedLease], None]:
    other = fake.add_key(sign=False)  # published, but it did not make the signature

    def claim(signed: c.SignedLease) -> None:
        signed.key_id = other

    return claim


@pytest.mark.parametrize("how", ["payload", "signature", "key_id"])
async def test_m7_sdk_refuses_a_tampered_lease(
    client: AsyncClient, fake: FakeLicensing, how: str
) -> None:
    if how == "payload":
        fake.tamper_lease = _alter_payload
    elif how == "signature":
        fake.tamper_lease = _alter_signature
    else:
        fake.tamper_lease = _other_published_key(fake)
    handle = client.session("ACAD", "2026")
    with pytest.raises(LeaseInvalid) as info:
        async with handle:
            raise AssertionError("never entered")
    assert info.value.reason == "LEASE_BAD_SIGNATURE"
    assert isinstance(info.value, sdk.TesseraError) and info.value.code is None
    [session_id] = fake.sessions
    assert info.value.session_id == session_id
    assert not handle.usable and handle.lease is None
    with pytest.raises(RuntimeError):
        handle.ensure_usable()
    # The refused session is released on the server: nothing stays open or charged.
    await eventually(lambda: released(fake, session_id))
    assert fake.sessions[session_id].msg.end_reason == c.END_REASON_RELEASED


async def test_m7_sdk_refuses_a_lease_signed_by_an_unknown_key(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    rogue = fake.add_key(publish=False)  # signs, but the server does not vouch for it
    with pytest.raises(sdk.UnknownSigningKey) as info:
        await client.entitle("ACAD", "2026")
    assert info.value.key_id == rogue and info.value.reason == "LEASE_UNKNOWN_KEY"
    assert isinstance(info.value, LeaseInvalid)
    # Fetched once at first, once more for the new key id (a rotation?), and no more.
    assert len(fake.called("GetSigningKeys")) == 2
    with pytest.raises(sdk.UnknownSigningKey):
        await client.entitle("ACAD", "2026")
    assert len(fake.called("GetSigningKeys")) == 2
    await eventually(lambda: len(fake.called("Release")) == 2)


def _set(name: str, value: object) -> Callable[[c.Lease], None]:
    def edit(lease: c.Lease) -> None:
        if name == "lease_expire_time":
            lease.lease_expire_time.seconds += 365 * 86400
        else:
            setattr(lease, name, value)

    return edit


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("session_id", "ses_someone_elses"),
        ("user_id", "mallory@example.com"),
        ("team_id", "other-team"),
        ("product_id", "REVIT"),
        ("device_id", "dev-other"),
        ("coverage", c.COVERAGE_SUBSCRIPTION),
        ("lease_expire_time", None),
    ],
)
async def test_m7_sdk_refuses_a_genuine_lease_for_another_session(
    client: AsyncClient, fake: FakeLicensing, name: str, value: object
) -> None:
    # Correctly signed, but it is not this session's lease (or not what its answer says).
    fake.edit_lease = _set(name, value)
    with pytest.raises(LeaseInvalid) as info:
        async with client.session("ACAD", "2026"):
            raise AssertionError("never entered")
    assert info.value.reason == "LEASE_MISMATCH"
    assert name in str(info.value)


async def test_m7_sdk_refuses_a_live_session_without_a_lease(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.sign_leases = False
    with pytest.raises(LeaseInvalid) as info:
        await client.entitle("ACAD", "2026")
    assert info.value.reason == "LEASE_MISSING"


async def test_m7_forged_lease_on_a_heartbeat_ends_the_session(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    ended: list[tuple[str, EndReason]] = []
    states: list[tuple[SessionState, SessionState]] = []
    async with client.session(
        "ACAD",
        "2026",
        options=NO_JITTER,
        on_ended=lambda r, s: ended.append(("host", r)),
        on_state_changed=lambda o, n, s: states.append((o, n)),
    ) as host:
        plugin = host.plugin("ARNOLD", on_ended=lambda r, s: ended.append(("plugin", r)))
        await plugin.start()
        good = host.lease
        await clock.until_sleeping(2)

        def tamper_hosts(signed: c.SignedLease) -> None:  # the plugin's leases stay good
            if c.Lease.FromString(signed.lease).session_id == host.session_id:
                _alter_payload(signed)

        fake.tamper_lease = tamper_hosts
        await step(clock, 5 * MIN, sleepers=0)
        await host.wait_ended()
        await eventually(lambda: plugin.ended)
        assert host.end_reason is EndReason.LEASE_INVALID and not host.usable
        assert isinstance(host.error, LeaseInvalid)
        assert host.error.reason == "LEASE_BAD_SIGNATURE"
        assert host.lease == good  # the last lease that verified
        with pytest.raises(sdk.SessionEnded) as info:
            host.ensure_usable()
        assert info.value.end_reason is EndReason.LEASE_INVALID
        assert plugin.end_reason is EndReason.HOST_ENDED
        await eventually(lambda: len(fake.called("Release")) == 2)
    assert sorted(ended) == [("host", EndReason.LEASE_INVALID), ("plugin", EndReason.HOST_ENDED)]
    assert states == [(SessionState.ACTIVE, SessionState.ENDED)]
    assert {call.request.session_id for call in fake.called("Release")} == {
        host.session_id,
        plugin.session_id,
    }
    assert len(fake.called("Release")) == 2  # leaving the block released nothing twice


# -- rotation and pinned keys -----------------------------------------------------------


async def test_m7_sdk_refetches_the_keys_once_on_rotation(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("REVIT", "2026", options=NOT_IDLE) as s:
        assert s.lease is not None
        old = s.lease
        await clock.until_sleeping()
        new_key = fake.add_key()  # the server rotates: new leases, new key
        await walk(clock, 5 * MIN)
        assert s.usable and s.online and s.lease.key_id == new_key != old.key_id
        assert len(fake.called("GetSigningKeys")) == 2
        await walk(clock, 10 * MIN)
        assert len(fake.called("GetSigningKeys")) == 2 and len(fake.called("Heartbeat")) == 3
        # The old key is still published: a lease it signed verifies until it ends.
        keys = await client.signing_keys()
        assert set(keys) == {old.key_id, new_key}
        assert sdk.verify_lease(old.signed, keys, **ALICE_REVIT, clock=clock) == old


async def test_m7_keys_out_of_reach_after_rotation_is_offline_not_forgery(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client.session("REVIT", "2026", options=NOT_IDLE) as s:
        assert s.lease is not None
        old = s.lease
        await clock.until_sleeping()
        fake.add_key()
        for _ in range(QUICK_RETRY.max_attempts):
            fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="GetSigningKeys")
        await walk(clock, 5 * MIN)
        assert s.usable and not s.online and s.lease == old  # runs on the lease it has
        assert s.lease_expires_at == old.lease_expire_time
        await walk(clock, MIN)  # offline, it tries again a minute later: the keys arrive
        assert s.usable and s.online and s.lease.key_id == fake.signing_key_id
        assert s.lease_expires_at == clock.now() + DAY


async def test_m7_pinned_keys_verify_with_no_get_signing_keys(
    fake: FakeLicensing, clock: ManualClock, tmp_path: Path
) -> None:
    sdk.save_signing_keys(tmp_path / "keys.json", fake.public_keys())
    # grpcurl's JSON of a GetSigningKeys answer is a keys file too.
    answer = pb.GetSigningKeysResponse(
        keys=[c.SigningKey(key_id=k, public_key=v) for k, v in fake.public_keys().items()]
    )
    (tmp_path / "grpcurl.json").write_text(json_format.MessageToJson(answer))
    for pinned in (fake.public_keys(), tmp_path / "keys.json", str(tmp_path / "grpcurl.json")):
        async with client_for(fake, clock, signing_keys=pinned) as client:
            assert await client.signing_keys() == fake.public_keys()
            async with client.session("REVIT", "2026", options=NOT_IDLE) as s:
                assert s.usable and s.lease is not None
                await clock.until_sleeping()
                await walk(clock, 5 * MIN)
                assert s.lease.issue_time == clock.now()
    assert fake.called("GetSigningKeys") == []


async def test_m7_pinned_keys_are_the_only_ones_trusted(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client_for(fake, clock, signing_keys=fake.public_keys()) as client:
        async with client.session("REVIT", "2026", options=NOT_IDLE) as s:
            await clock.until_sleeping()
            fake.add_key()  # a key the product was not given: a server that is not the real
            await step(clock, 5 * MIN, sleepers=0)  # one could sign with one of its own
            await s.wait_ended()
            assert s.end_reason is EndReason.LEASE_INVALID
            assert isinstance(s.error, sdk.UnknownSigningKey)
        await eventually(lambda: len(fake.called("Release")) == 1)
    assert fake.called("GetSigningKeys") == []
    # Pinned keys and the server's together, when the product asks for both.
    async with client_for(
        fake, clock, signing_keys=fake.public_keys("k_fake1"), fetch_signing_keys=True
    ) as client:
        assert (await client.entitle("REVIT", "2026")).lease is not None
    assert len(fake.called("GetSigningKeys")) == 1


async def test_sdk_signing_keys_arguments_are_checked(fake: FakeLicensing) -> None:
    with pytest.raises(ValueError, match="no signing keys"):
        AsyncClient(fake.target, FAKE_KEY, signing_keys={})
    with pytest.raises(ValueError, match="32-byte"):
        AsyncClient(fake.target, FAKE_KEY, signing_keys={"k": b"short"})
    with pytest.raises(ValueError, match="base64"):
        AsyncClient(fake.target, FAKE_KEY, signing_keys={"k": "not base64!"})


# -- how long the product may run offline -----------------------------------------------


async def test_m7_offline_lease_is_the_signed_span_on_the_sdks_own_clock(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The server's clock is 3 hours ahead and its leases last 2 hours: the product runs
    # 2 hours on its own clock, whatever the server's clock says.
    fake.skew = 3 * HOUR
    fake.lease = 2 * HOUR
    warned: list[timedelta] = []
    async with client.session(
        "REVIT", "2026", options=NOT_IDLE, on_lease_expiring=lambda s, left: warned.append(left)
    ) as s:
        assert s.lease is not None and s.lease.span == 2 * HOUR
        assert s.lease.lease_expire_time == clock.now() + 5 * HOUR  # the server's time
        assert s.lease_expires_at == clock.now() + 2 * HOUR  # the SDK's
        fake.down = True
        await clock.until_sleeping()
        await walk(clock, 2 * HOUR - MIN, coarse=10 * MIN)
        assert s.usable and not s.online and warned == [HOUR]
        await step(clock, MIN, sleepers=0)
        await eventually(lambda: s.ended)
        assert s.end_reason is EndReason.LEASE_EXPIRED
        assert s.session.end_time == s.lease.lease_expire_time  # the signed end
        fake.down = False


async def test_m7_a_replayed_lease_extends_nothing(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    ended: list[EndReason] = []
    async with client.session(
        "REVIT", "2026", options=NOT_IDLE, on_ended=lambda r, s: ended.append(r)
    ) as s:
        assert s.lease is not None
        first = s.lease
        await clock.until_sleeping()
        await walk(clock, 5 * MIN)
        assert s.lease_expires_at == clock.now() + DAY
        # From now on someone answers every heartbeat with that first, genuine lease.
        fake.replay = first.signed_lease()
        await walk(clock, 5 * MIN)
        assert s.usable and s.online and s.lease == first
        assert s.lease_expires_at == first.lease_expire_time  # back to its end, not 24 h on
        await walk(clock, first.lease_expire_time - clock.now() - MIN, coarse=HOUR)
        assert s.usable and s.lease_expires_at == first.lease_expire_time
        await step(clock, MIN, sleepers=0)
        await eventually(lambda: s.ended)
        assert ended == [EndReason.LEASE_EXPIRED]
        fake.replay = None


async def test_m7_an_entitle_answer_recorded_and_replayed_opens_no_session(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # Monday the product runs once, online, and someone records the server's answer.
    # Thursday a stand-in for the server replays it: genuine, signed, for this user,
    # device and product, its span a whole day, but the answer to another Entitle:
    # its lease names that Entitle's request id, not the one sent now.
    first = await client.entitle("ACAD", "2026")
    assert first.lease is not None and first.lease.request_id
    await client.release(first.session_id)
    clock.advance(timedelta(days=3))
    fake.replay_entitle = pb.EntitleResponse(session=first.raw, lease=first.lease.signed_lease())
    handle = client.session("ACAD", "2026")
    with pytest.raises(sdk.LeaseInvalid) as info:
        await handle.start()
    assert info.value.reason == "LEASE_MISMATCH" and "request_id" in str(info.value)
    assert not handle.usable and handle.lease is None
    fake.replay_entitle = None
    again = await client.entitle("ACAD", "2026", request_id="po-9")  # the server's own answer
    assert again.lease is not None and again.lease.request_id == "po-9"


# -- a stored lease, checked at the next start ------------------------------------------


async def test_m7_stored_lease_verifies_again_offline_until_it_ends(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock, tmp_path: Path
) -> None:
    async with client.session("ACAD", "2026") as s:
        assert s.lease is not None
        (tmp_path / "lease.bin").write_bytes(s.lease.signed)
        sdk.save_signing_keys(tmp_path / "keys.json", await client.signing_keys())
        lease = s.lease
    # The next start, offline: only the two files.
    stored = (tmp_path / "lease.bin").read_bytes()
    keys = tmp_path / "keys.json"
    assert json.loads(keys.read_text()).keys() == {fake.signing_key_id}
    again = sdk.verify_lease(
        stored,
        keys,
        session_id=lease.session_id,
        user_id="alice@example.com",
        team_id="acme",
        product_id="ACAD",
        device_id="dev-test",
        now=clock.now() + DAY - MIN,
    )
    assert again == lease
    mine = {"user_id": "alice@example.com", "device_id": "dev-test", "product_id": "ACAD"}
    with pytest.raises(sdk.LeaseExpired) as ended:
        sdk.verify_lease(stored, keys, **mine, now=lease.lease_expire_time, leeway=0)
    assert isinstance(ended.value, LeaseInvalid) and ended.value.reason == "LEASE_EXPIRED"
    with pytest.raises(LeaseInvalid, match="product_id") as other:
        sdk.verify_lease(stored, keys, **(mine | {"product_id": "REVIT"}), clock=clock)
    assert other.value.reason == "LEASE_MISMATCH"
    signed = c.SignedLease.FromString(stored)
    _alter_payload(signed)
    with pytest.raises(LeaseInvalid) as altered:
        sdk.verify_lease(signed.SerializeToString(), keys, **mine, clock=clock)
    assert altered.value.reason == "LEASE_BAD_SIGNATURE"
    with pytest.raises(LeaseInvalid) as garbage:
        sdk.verify_lease_signature(b"\xff\xff not a lease", keys)
    assert garbage.value.reason == "LEASE_MALFORMED"
    with pytest.raises(sdk.UnknownSigningKey):
        sdk.verify_lease(stored, fake.public_keys(fake.add_key()), **mine, clock=clock)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError):
        sdk.verify_lease_signature(stored, tmp_path / "bad.json")


# -- issue 12 point 4: the safe check is the default one ---------------------------------


def _stored_lease(
    clock: ManualClock, *, user_id: str = "alice@example.com", device_id: str = "dev-test"
) -> tuple[bytes, dict[str, bytes]]:
    """A lease signed now on ``clock``, ending a day later, and the keys that verify it."""
    fake = FakeLicensing(clock)
    session = c.Session(
        session_id="s_1", user_id=user_id, team_id="acme", product_id="ACAD", device_id=device_id
    )
    session.lease_expire_time.FromDatetime(clock.now() + DAY)
    signed = fake.sign(session)
    assert signed is not None
    return signed.SerializeToString(), fake.public_keys()


MINE = {"user_id": "alice@example.com", "device_id": "dev-test", "product_id": "ACAD"}


def test_review_p4_verify_lease_refuses_an_expired_lease_on_the_wall_clock() -> None:
    # Signed two days ago (on the wall clock), over one day ago: the default call, no now=.
    stale, keys = _stored_lease(ManualClock(sdk.SystemClock().now() - 2 * DAY))
    with pytest.raises(sdk.LeaseExpired) as ended:
        sdk.verify_lease(stale, keys, **MINE)
    assert ended.value.reason == "LEASE_EXPIRED" and ended.value.session_id == "s_1"
    # The raw check says only that it is genuine...
    raw = sdk.verify_lease_signature(stale, keys)
    assert raw.lease_expire_time < sdk.SystemClock().now() - DAY + MIN
    # ...and the default call takes a lease still running on the wall clock.
    fresh, keys = _stored_lease(ManualClock(sdk.SystemClock().now() - HOUR))
    assert sdk.verify_lease(fresh, keys, **MINE).session_id == "s_1"


def test_review_p4_verify_lease_clock_is_injectable() -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    assert sdk.verify_lease(stored, keys, **MINE, clock=clock).lease_expire_time == (
        clock.now() + DAY
    )
    clock.advance(DAY - timedelta(seconds=1))
    assert sdk.verify_lease(stored, keys, **MINE, clock=clock).session_id == "s_1"
    clock.advance(timedelta(seconds=1))  # its end is not included (with no leeway)
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(stored, keys, **MINE, clock=clock, leeway=0)
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(stored, keys, **MINE, now=clock.now(), leeway=0)
    with pytest.raises(ValueError, match="not both"):
        sdk.verify_lease(stored, keys, **MINE, now=clock.now(), clock=clock)
    with pytest.raises(ValueError, match="timezone"):
        sdk.verify_lease(stored, keys, **MINE, now=clock.now().replace(tzinfo=None))


SECOND = timedelta(seconds=1)
MICRO = timedelta(microseconds=1)


def test_m7_verify_lease_tolerates_60_seconds_of_clock_skew_by_default() -> None:
    # A product whose clock runs up to a minute ahead of the server's still starts on a
    # lease that, by the server's clock, has not ended yet.
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    end = clock.now() + DAY
    assert sdk.verify_lease(stored, keys, **MINE, now=end).session_id == "s_1"
    assert sdk.verify_lease(stored, keys, **MINE, now=end + 59 * SECOND).session_id == "s_1"
    assert sdk.verify_lease(stored, keys, **MINE, now=end + 60 * SECOND - MICRO).session_id
    with pytest.raises(sdk.LeaseExpired, match="allowing 60 s") as late:
        sdk.verify_lease(stored, keys, **MINE, now=end + 60 * SECOND)
    assert late.value.reason == "LEASE_EXPIRED" and late.value.session_id == "s_1"
    assert sdk.leases.DEFAULT_LEEWAY == 60 * SECOND


@pytest.mark.parametrize("leeway", [5, 5.0, timedelta(seconds=5)])
def test_m7_verify_lease_leeway_is_seconds_or_a_timedelta(leeway: float | timedelta) -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    end = clock.now() + DAY
    ok = sdk.verify_lease(stored, keys, **MINE, now=end + 5 * SECOND - MICRO, leeway=leeway)
    assert ok.lease_expire_time == end  # the leeway accepts the lease, never changes it
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(stored, keys, **MINE, now=end + 5 * SECOND, leeway=leeway)


def test_m7_verify_lease_with_no_leeway_ends_at_the_signed_end() -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    end = clock.now() + DAY
    assert sdk.verify_lease(stored, keys, **MINE, now=end - MICRO, leeway=0).session_id
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(stored, keys, **MINE, now=end, leeway=0)
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(stored, keys, **MINE, now=end, leeway=timedelta(0))


def test_m7_verify_lease_leeway_on_the_wall_clock() -> None:
    # Ended 30 s ago on the wall clock: within the default leeway. Ended 2 minutes ago: not.
    wall = sdk.SystemClock().now()
    recent, keys = _stored_lease(ManualClock(wall - DAY - 30 * SECOND))
    assert sdk.verify_lease(recent, keys, **MINE).session_id == "s_1"
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(recent, keys, **MINE, leeway=0)
    older, keys = _stored_lease(ManualClock(wall - DAY - 2 * MIN))
    with pytest.raises(sdk.LeaseExpired):
        sdk.verify_lease(older, keys, **MINE)


@pytest.mark.parametrize(
    ("leeway", "error"),
    [
        (-1, ValueError),
        (-SECOND, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (86_401, ValueError),  # over a lease's own length
        (1e20, ValueError),  # (once an OverflowError)
        (timedelta.max, ValueError),
        ("60", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_m7_verify_lease_refuses_a_leeway_that_is_negative_or_not_seconds(
    leeway: object, error: type[Exception]
) -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    with pytest.raises(error, match="leeway"):
        sdk.verify_lease(stored, keys, **MINE, clock=clock, leeway=leeway)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "other"),
    [("user_id", "bob@example.com"), ("device_id", "dev-bob"), ("product_id", "REVIT")],
)
def test_review_p4_verify_lease_refuses_another_users_device_or_product(
    field: str, other: str
) -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    with pytest.raises(LeaseInvalid, match=field) as info:
        sdk.verify_lease(stored, keys, **(MINE | {field: other}), clock=clock)
    assert info.value.reason == "LEASE_MISMATCH" and not isinstance(info.value, sdk.LeaseExpired)
    # Bob's own lease, checked by Alice's product on her device, is refused the same way.
    bobs, keys = _stored_lease(clock, user_id="bob@example.com", device_id="dev-bob")
    with pytest.raises(LeaseInvalid, match="user_id") as theirs:
        sdk.verify_lease(bobs, keys, **MINE, clock=clock)
    assert theirs.value.reason == "LEASE_MISMATCH"


@pytest.mark.parametrize("missing", ["user_id", "device_id", "product_id"])
def test_review_p4_verify_lease_without_the_binding_is_a_type_error(missing: str) -> None:
    clock = ManualClock()
    stored, keys = _stored_lease(clock)
    given = {k: v for k, v in MINE.items() if k != missing}
    with pytest.raises(TypeError, match=missing):
        sdk.verify_lease(stored, keys, **given, clock=clock)
    with pytest.raises(TypeError):
        sdk.verify_lease(stored, keys)  # type: ignore[call-arg]


@pytest.mark.parametrize("field", ["user_id", "device_id", "product_id"])
def test_review_p4_verify_lease_with_a_none_or_empty_binding_is_refused(field: str) -> None:
    # None used to skip the check silently: a lease of any user passed.
    clock = ManualClock()
    bobs, keys = _stored_lease(clock, user_id="bob@example.com", device_id="dev-bob")
    with pytest.raises(TypeError, match=field):
        sdk.verify_lease(bobs, keys, **(MINE | {field: None}), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=field):
        sdk.verify_lease(bobs, keys, **(MINE | {field: ""}), clock=clock)
    with pytest.raises(TypeError, match="session_id"):
        sdk.verify_lease(bobs, keys, **MINE, session_id=1, clock=clock)  # type: ignore[arg-type]


def test_review_p4_missing_keys_file_is_a_value_error(tmp_path: Path) -> None:
    clock = ManualClock()
    stored, _ = _stored_lease(clock)
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="cannot read") as info:
        sdk.verify_lease(stored, missing, **MINE, clock=clock)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(ValueError, match="cannot read"):
        sdk.load_signing_keys(missing)
    with pytest.raises(ValueError, match="cannot read"):
        AsyncClient("127.0.0.1:1", FAKE_KEY, signing_keys=str(missing))


def test_sync_client_verifies_leases_with_pinned_keys() -> None:
    clock = ManualClock()
    with (
        FakeThread(clock) as fake,
        Client(
            fake.target,
            FAKE_KEY,
            clock=clock,
            retry=QUICK_RETRY,
            device_id="dev-sync",
            platform=Platform.MACOS,
            signing_keys=fake.public_keys(),
        ) as client,
    ):
        assert client.signing_keys() == fake.public_keys()
        with client.session("ACAD", "2026") as s:
            assert s.lease is not None and s.lease.device_id == "dev-sync"
            assert s.lease_expires_at == clock.now() + DAY
        fake.tamper_lease = _alter_signature
        with pytest.raises(LeaseInvalid), client.session("ACAD", "2026"):
            raise AssertionError("never entered")
        assert fake.called("GetSigningKeys") == []


# -- against the real server ------------------------------------------------------------


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


async def test_m7_sdk_verified_lease_end_is_the_servers_lease_expire_time(world: World) -> None:
    client = world.client(options=NO_JITTER)
    async with client.session("ACAD", "2026") as s:
        for _ in range(2):  # the Entitle's lease, then a heartbeat's
            assert s.lease is not None
            [stored] = await world.admin.sessions(ALICE)
            assert s.lease.lease_expire_time == stored.lease_expire_time.ToDatetime(
                tzinfo=s.lease.lease_expire_time.tzinfo
            )
            assert s.lease.lease_expire_time == world.clock.now() + DAY == s.lease_expires_at
            assert s.lease.issue_time == world.clock.now()
            assert (s.lease.session_id, s.lease.user_id, s.lease.team_id) == (
                stored.session_id,
                ALICE,
                "acme",
            )
            assert (s.lease.product_id, s.lease.device_id, s.lease.coverage) == (
                "ACAD",
                "dev-1",
                Coverage.TOKENS,
            )
            await world.advance(5 * MIN)
        keys = await client.signing_keys()
        assert s.lease.key_id in keys
        mine = {"user_id": ALICE, "device_id": "dev-1", "product_id": "ACAD"}
        assert sdk.verify_lease(s.lease.signed, keys, **mine, clock=world.clock) == s.lease
    # Another product, given the keys beforehand, never needs to ask for them.
    pinned = AsyncClient(
        world.target,
        world.keys[ALICE],
        clock=world.clock,
        retry=QUICK_RETRY,
        device_id="dev-2",
        platform=Platform.WINDOWS,
        signing_keys=keys,
    )
    world.clients.append(pinned)
    assert not pinned.fetch_signing_keys
    session = await pinned.entitle("REVIT", "2026")
    assert session.lease is not None and session.lease.device_id == "dev-2"
    await pinned.release(session.session_id)


async def test_m7_sdk_offline_use_continues_until_the_signed_lease_ends(
    world: World, proxy: Proxy, tmp_path: Path
) -> None:
    ended: list[EndReason] = []
    client = world.client(target=proxy.target, options=NO_JITTER)
    async with client.session("REVIT", "2026", on_ended=lambda r, s: ended.append(r)) as s:
        await world.advance(5 * MIN)  # a heartbeat: a new signed lease
        assert s.lease is not None
        signed_end = s.lease.lease_expire_time
        assert s.lease_expires_at == signed_end == world.clock.now() + DAY
        stored, keys = s.lease.signed, await client.signing_keys()
        proxy.go_down()
        await world.advance(signed_end - world.clock.now() - MIN, coarse=30 * MIN)
        assert s.usable and not s.online and ended == []
        # A product restarted now, still offline, can check the lease it stored.
        mine = {"user_id": ALICE, "device_id": "dev-1", "product_id": "REVIT"}
        assert sdk.verify_lease(stored, keys, **mine, now=world.clock.now()).lease_expire_time == (
            signed_end
        )
        await world.advance(MIN)
        await eventually(lambda: s.ended)
        assert ended == [EndReason.LEASE_EXPIRED] and world.clock.now() == signed_end
        assert s.session.end_time == signed_end
        with pytest.raises(sdk.LeaseExpired):
            sdk.verify_lease(stored, keys, **mine, now=world.clock.now(), leeway=0)
        proxy.go_up()
    [stored_session] = await world.admin.sessions(ALICE)
    assert stored_session.end_reason == c.END_REASON_LEASE_EXPIRED


@pytest.mark.parametrize(
    "spelt",
    [
        "Zo\u00cb@Example.COM",
        "zoe\u0308@example.com",  # ë typed as e and a combining diaeresis
        "  zo\u00eb@example.com\n",
        "zo\u00eb@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # a full-width domain
        "zo\u00eb@xn--exmple-cua.com",  # exämple.com in Punycode
    ],
)
def test_a1_verify_lease_takes_its_user_in_any_spelling_the_server_takes(spelt: str) -> None:
    """RULES A1: a user is found by any spelling of their address, so a product may keep
    it as typed; its stored lease, made for the id as the server keeps it, is theirs."""
    domain = "ex\u00e4mple.com" if "xn--" in spelt else "example.com"
    kept = f"zo\u00eb@{domain}"
    assert canonical_user_id(spelt) == kept  # the server's own reading of the spelling
    clock = ManualClock()
    stored, keys = _stored_lease(clock, user_id=kept)
    mine = MINE | {"user_id": spelt}
    assert sdk.verify_lease(stored, keys, **mine, clock=clock).user_id == kept
    for someone_else in ("zoe@example.com", f"zo\u00eb@{domain}.org", "zo\u00eb"):
        with pytest.raises(LeaseInvalid, match="user_id") as info:
            sdk.verify_lease(stored, keys, **(MINE | {"user_id": someone_else}), clock=clock)
        assert info.value.reason == "LEASE_MISMATCH"
