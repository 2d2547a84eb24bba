"""RULES H3: the SDK takes several servers and follows the active one.

Two fakes on one "database" (``FakeLicensing.share``) stand for the active server and
a standby; a standby answers ``UNAVAILABLE``/``NOT_LEADER`` naming the active, as the
real one does. Time comes from the ``ManualClock``: backoff never sleeps for real.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import grpc
import pytest

import client_sdk as sdk
from client_sdk import AsyncClient, Client, ManualClock, Platform, RetryPolicy, SessionOptions
from client_sdk.errors import from_status
from client_sdk.failover import Targets
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY, eventually
from tests.sdk.fakes import FakeLicensing, FakeThread, Proxy, Refusal

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
# Retries that would wait (on the manual clock, which never moves by itself): a test that
# finishes under it shows that no wait was made.
WAITING = RetryPolicy(max_attempts=4, initial_backoff=60.0, jitter=0.0, call_timeout=5.0)


@pytest.fixture
async def other(fake: FakeLicensing, clock: ManualClock) -> AsyncIterator[FakeLicensing]:
    """A second server on the same database as ``fake``."""
    servicer = await FakeLicensing(clock).share(fake).start()
    try:
        yield servicer
    finally:
        await servicer.stop()


def two_targets(
    a: FakeLicensing,
    b: FakeLicensing,
    clock: ManualClock,
    retry: RetryPolicy = QUICK_RETRY,
    *,
    pin: bool = True,
) -> AsyncClient:
    """A client of both servers; with the keys pinned (``pin``) it never asks for them."""
    return AsyncClient(
        targets=[a.target, b.target],
        user_key=FAKE_KEY,
        clock=clock,
        retry=retry,
        device_id="dev-test",
        platform=Platform.WINDOWS,
        rng=random.Random(7),
        signing_keys=a.public_keys() if pin else None,
    )


async def test_h3_follows_the_not_leader_hint_at_once(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    fake.standby = other.target  # the first target listed is a standby; the active is other
    async with two_targets(fake, other, clock, WAITING, pin=False) as client:
        session = await asyncio.wait_for(client.entitle("ACAD", "2026"), 5)
        assert client.target == other.target  # remembered: the next calls go there first
        await client.heartbeat(session.session_id)
        await client.release(session.session_id)
    # The first call (the signing keys, fetched before the first Entitle) met the standby.
    methods = ("GetSigningKeys", "Entitle", "Heartbeat", "Release")
    assert [len(fake.called(m)) for m in methods] == [1, 0, 0, 0]
    assert [len(other.called(m)) for m in methods] == [1, 1, 1, 1]
    assert clock.sleepers == 0 and session.session_id in other.sessions


async def test_h3_hint_to_an_unlisted_address_is_followed(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    fake.standby = other.target  # the active advertises an address the client was not given
    async with AsyncClient(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY) as client:
        session = await client.entitle("ACAD", "2026")
        assert client.target == other.target
        assert client.targets.addresses == (fake.target, other.target)
    assert len(other.called("Entitle")) == 1 and session.session_id in other.sessions


@pytest.mark.parametrize("how", ["stopped", "unavailable"])
async def test_h3_falls_over_to_the_next_target_on_a_lost_connection(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock, how: str
) -> None:
    if how == "stopped":
        await fake.stop()  # nothing listens there any more: the connection is refused
    else:
        fake.down = True  # UNAVAILABLE without a reason
    async with two_targets(fake, other, clock) as client:
        session = await client.entitle("ACAD", "2026")
        assert client.target == other.target
        await client.heartbeat(session.session_id)
    assert len(other.called("Entitle")) == 1 and len(other.called("Heartbeat")) == 1
    assert len(fake.called("Heartbeat")) == 0


async def test_h3_retried_entitle_reuses_its_request_id_across_servers(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    fake.refuse(UNAVAILABLE, "", method="Entitle")  # the connection is lost on the first try
    async with two_targets(fake, other, clock) as client:
        session = await client.entitle("ACAD", "2026")
    first, second = fake.called("Entitle"), other.called("Entitle")
    assert len(first) == 1 and len(second) == 1
    assert first[0].request.request_id == second[0].request.request_id
    assert first[0].request.request_id.startswith("req-")
    assert other.by_request[second[0].request.request_id] == session.session_id


async def test_h3_an_entitle_whose_answer_was_lost_is_not_made_twice(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    # The active commits the Entitle, but its answer never arrives (the server dies);
    # the retry on the server that took over names the same request_id, so it answers
    # with the session already made instead of opening a second one (RULES M11).
    proxy = await Proxy(fake.target).start()
    quick = RetryPolicy(max_attempts=3, initial_backoff=0.0, call_timeout=0.5)
    try:
        async with AsyncClient(
            targets=[proxy.target, other.target], user_key=FAKE_KEY, clock=clock, retry=quick
        ) as client:
            await client.signing_keys()  # connected through the proxy...
            proxy.blackhole()  # ...which from now on loses every answer
            session = await client.entitle("ACAD", "2026")
            assert client.target == other.target
    finally:
        await proxy.stop()
    first, second = fake.called("Entitle"), other.called("Entitle")
    assert len(first) == 1 and len(second) == 1
    assert first[0].request.request_id == second[0].request.request_id
    assert list(fake.sessions) == [session.session_id]  # one session, not two


async def test_h3_a_session_keeps_its_id_and_lease_through_a_takeover(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    other.standby = fake.target
    options = SessionOptions(heartbeat_jitter=0.0)
    async with (
        two_targets(fake, other, clock) as client,
        client.session("ACAD", "2026", options=options) as s,
    ):
        session_id, first_lease = s.session_id, s.lease
        await clock.until_sleeping()
        clock.advance(timedelta(minutes=5))
        await eventually(lambda: len(fake.called("Heartbeat")) == 1)
        await clock.until_sleeping()
        # Takeover: the active dies, the standby becomes active on the same database.
        await fake.stop()
        other.standby = None
        clock.advance(timedelta(minutes=5))
        await eventually(lambda: len(other.called("Heartbeat")) == 1)
        await clock.until_sleeping()
        assert other.called("Heartbeat")[0].request.session_id == session_id
        assert s.session_id == session_id and s.usable and s.online
        assert s.lease is not None and first_lease is not None
        assert s.lease.session_id == session_id
        assert s.lease.lease_expire_time > first_lease.lease_expire_time
        assert s.lease_expires_at == clock.now() + timedelta(hours=24)
        assert client.target == other.target
    assert other.called("Entitle") == []  # never opened again
    assert [c.request.session_id for c in other.called("Release")] == [session_id]


async def test_h3_a_session_rides_out_a_takeover_offline(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    # Mid-takeover, every server is a standby that knows no active yet: the heartbeat's
    # attempts run out on NOT_LEADER, and the session goes offline on its lease (it does
    # not end); a minute later its heartbeat reaches the new active.
    options = SessionOptions(heartbeat_jitter=0.0)
    async with (
        two_targets(fake, other, clock) as client,
        client.session("ACAD", "2026", options=options) as s,
    ):
        session_id = s.session_id
        await clock.until_sleeping()
        fake.standby = other.standby = ""
        clock.advance(timedelta(minutes=5))
        await eventually(lambda: not s.online)
        await clock.until_sleeping()
        assert isinstance(s.error, sdk.NotLeader) and s.usable and not s.ended
        attempts = len(fake.called("Heartbeat")) + len(other.called("Heartbeat"))
        assert attempts == QUICK_RETRY.max_attempts
        other.standby = None  # the takeover is done
        clock.advance(timedelta(minutes=1))  # SessionOptions.offline_retry_interval
        await eventually(lambda: s.online)
        await clock.until_sleeping()
        assert s.session_id == session_id and s.usable
        assert s.lease_expires_at == clock.now() + timedelta(hours=24)
        assert client.target == other.target


async def test_h3_gives_up_after_the_policy_attempts_naming_the_targets(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    await fake.stop()
    other.down = True
    async with two_targets(fake, other, clock) as client:
        with pytest.raises(sdk.Unavailable) as info:
            await client.heartbeat("ses_1")
    assert type(info.value) is sdk.Unavailable
    assert info.value.targets == (fake.target, other.target)
    assert f"tried {fake.target}, {other.target}" in str(info.value)
    # The stopped server refused the connection once and is not asked again by this
    # call; the one that answers (UNAVAILABLE: it is up) is asked every other time.
    assert len(other.called("Heartbeat")) == QUICK_RETRY.max_attempts - 1


async def test_h3_backoff_counts_across_targets_on_the_injected_clock(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    # Two standbys that know no active yet: the first retry goes to the other at once,
    # every later one goes back to a server already tried, and first waits.
    fake.standby = other.standby = ""
    retry = RetryPolicy(
        max_attempts=5, initial_backoff=1.0, multiplier=2.0, max_backoff=8.0, jitter=0.0
    )
    async with two_targets(fake, other, clock, retry) as client:
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        waits = []
        for _ in range(3):
            await clock.until_sleeping()
            deadline = clock.next_deadline()
            assert deadline is not None
            waits.append((deadline - clock.now()).total_seconds())
            clock.set(deadline)
        with pytest.raises(sdk.NotLeader) as info:
            await asyncio.wait_for(call, 5)
    assert waits == [1.0, 2.0, 4.0]
    assert [len(f.called("Entitle")) for f in (fake, other)] == [3, 2]  # a, b, a, b, a
    assert info.value.leader is None and info.value.targets == (fake.target, other.target)


async def test_h3_stale_hints_going_round_are_bounded(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    # Each standby names the other: the first hint is followed at once, the one back
    # waits its backoff, and the attempts run out.
    fake.standby, other.standby = other.target, fake.target
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.0, jitter=0.0)
    async with two_targets(fake, other, clock, retry) as client:
        with pytest.raises(sdk.NotLeader) as info:
            await client.entitle("ACAD", "2026")
    assert [len(f.called("Entitle")) for f in (fake, other)] == [2, 1]
    assert info.value.leader == other.target and info.value.code is UNAVAILABLE


@pytest.fixture
async def dead(clock: ManualClock) -> str:
    """The address of a server that died: nothing listens there (the connection is refused)."""
    gone = await FakeLicensing(clock).start()
    await gone.stop()
    return gone.target


# Retries at once: a test that finishes shows where the attempts went, not how long they took.
AT_ONCE = RetryPolicy(max_attempts=6, initial_backoff=0.0, jitter=0.0, call_timeout=5.0)


async def test_h3_a_stale_hint_naming_a_dead_listed_server_still_reaches_the_active(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock, dead: str
) -> None:
    # The old active died, `other` took over, the standby `fake` still names the old one.
    # Its hint is followed once; the dead server refuses, and the standby's same hint
    # is then stale for this call: the next attempt goes on round the list, to `other`
    # (it used to go back to the dead one, and bounce until the attempts ran out).
    fake.standby = dead
    async with AsyncClient(
        targets=[fake.target, other.target, dead],
        user_key=FAKE_KEY,
        clock=clock,
        retry=AT_ONCE,
        signing_keys=fake.public_keys(),
    ) as client:
        session = await client.entitle("ACAD", "2026")
        assert client.target == other.target
    assert session.session_id in other.sessions
    assert [len(f.called("Entitle")) for f in (fake, other)] == [2, 1]  # fake, dead, fake, other


async def test_h3_a_hint_to_an_address_the_client_cannot_reach_is_not_followed_again(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock, dead: str
) -> None:
    # The standby advertises an address this client cannot reach (0.0.0.0:50051, a name
    # only the servers resolve...); the active is listed by one it can.
    fake.standby = dead
    async with two_targets(fake, other, clock, AT_ONCE) as client:
        session = await client.entitle("ACAD", "2026")
        assert client.target == other.target
        assert client.targets.learned == dead  # followed once, as a hint is
    assert session.session_id in other.sessions
    assert [len(f.called("Entitle")) for f in (fake, other)] == [2, 1]  # fake, dead, fake, other


async def test_h3_a_server_that_did_not_answer_in_time_is_not_called_again_on_a_hint(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock
) -> None:
    # The active hangs (SIGSTOP) under the call: its attempt ends DEADLINE_EXCEEDED (here
    # the fake answers so, as a caller whose deadline passed sees it: no real wait). The
    # standby still names it until it takes over. Going back there would cost another
    # whole call_timeout (10 s by default: half the call's total_timeout); the call waits
    # its backoff and asks the standby again, which has taken over by then.
    fake.refuse(grpc.StatusCode.DEADLINE_EXCEEDED, "", method="Entitle")
    other.standby = fake.target
    async with two_targets(fake, other, clock, WAITING) as client:
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        await clock.until_sleeping()  # the backoff after the standby's NOT_LEADER
        assert [len(f.called("Entitle")) for f in (fake, other)] == [1, 1]
        other.standby = None  # it took over
        clock.advance(WAITING.initial_backoff)
        session = await asyncio.wait_for(call, 5)
        assert client.target == other.target
    assert session.session_id in other.sessions
    assert [len(f.called("Entitle")) for f in (fake, other)] == [1, 2]


@pytest.mark.parametrize("policy", [AT_ONCE, QUICK_RETRY], ids=["at_once", "quick"])
async def test_h3_one_unavailable_from_the_active_does_not_strand_the_call_on_the_standby(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock, policy: RetryPolicy
) -> None:
    # The active answers one call UNAVAILABLE (it is up: a connection reset, a
    # moment's trouble) and serves the next. The standby listed beside it names it:
    # the hint is followed, since the active answered; only an address that could
    # not be connected to, or did not answer in time, is not asked again on a hint.
    fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="Entitle")
    other.standby = fake.target
    async with two_targets(fake, other, clock, policy) as client:
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        while not call.done():
            clock.advance(policy.max_backoff)
            await asyncio.sleep(0.01)
        session = await call
        assert client.target == fake.target
    assert session.session_id in fake.sessions
    assert [len(f.called("Entitle")) for f in (fake, other)] == [2, 1]  # fake, other, fake


def test_h3_targets_skip_the_addresses_a_call_could_not_reach() -> None:
    a, b, c, u = (f"127.0.0.1:{port}" for port in (1, 2, 3, 9))
    targets = Targets([a, b, c])
    assert targets.move(a, leader=u) == u  # a hint is followed...
    assert targets.move(u, unreachable={u}) == a  # ...round the list when it cannot be reached
    assert targets.move(a, leader=u, unreachable={u}) == b  # ...and not again in that call
    assert targets.move(b, unreachable={u, c}) == a  # round the list, past what failed
    assert targets.move(a, leader=c, unreachable={c, u}) == b  # the next that did not fail
    assert targets.move(b, leader=c, unreachable={a, c, u}) == b  # b itself: it answers
    assert targets.move(b, unreachable={a, b, c, u}) == c  # none left: the plain next one
    # Another call moved the current target on to one this call could not reach: this
    # call does not follow it there.
    assert targets.move(a, unreachable={c}) == b


def test_h3_not_leader_is_a_typed_unavailable() -> None:
    status = Refusal(UNAVAILABLE, "NOT_LEADER", "a standby", metadata={"leader": "[::1]:7"})
    error = sdk.errors._status_from_trailers(
        grpc.aio.AioRpcError(
            UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*status.status().trailing_metadata),
        )
    )
    typed = from_status(UNAVAILABLE, "a standby", error)
    assert type(typed) is sdk.NotLeader and isinstance(typed, sdk.Unavailable)
    assert typed.leader == "[::1]:7" and typed.reason == "NOT_LEADER"
    assert from_status(UNAVAILABLE, "", None).reason == "UNAVAILABLE"
    assert sdk.NotLeader("no hint").leader is None


def test_h3_targets_move_once_for_calls_failing_together() -> None:
    targets = Targets(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    assert targets.current == "127.0.0.1:1"
    assert targets.move("127.0.0.1:1") == "127.0.0.1:2"
    assert targets.move("127.0.0.1:1") == "127.0.0.1:2"  # a second call failing there too
    assert targets.move("127.0.0.1:3") == "127.0.0.1:2"  # an old failure moves nothing
    assert targets.move("127.0.0.1:2", leader="127.0.0.1:9") == "127.0.0.1:9"
    assert targets.move("127.0.0.1:9") == "127.0.0.1:1"  # the learned one is last in the ring
    targets.move("127.0.0.1:1", leader="127.0.0.1:8")  # only the latest hint is kept
    assert targets.addresses == ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:8")
    assert Targets(["127.0.0.1:1", "127.0.0.1:1"]).addresses == ("127.0.0.1:1",)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {"user_key": FAKE_KEY}, ValueError),  # no server
        (("127.0.0.1:1", FAKE_KEY), {"targets": ["127.0.0.1:2"]}, ValueError),  # both
        ((), {"targets": [], "user_key": FAKE_KEY}, ValueError),
        ((), {"targets": "127.0.0.1:1", "user_key": FAKE_KEY}, TypeError),  # a str, not a list
    ],
)
def test_h3_client_needs_its_servers_one_way(
    args: tuple[str, ...], kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        AsyncClient(*args, **kwargs)  # type: ignore[arg-type]


# -- the synchronous client --------------------------------------------------------------


@pytest.fixture
def threads(clock: ManualClock) -> Iterator[tuple[FakeLicensing, FakeLicensing]]:
    with FakeThread(clock) as a, FakeThread(clock) as b:
        yield a, b.share(a)


def test_h3_sync_client_follows_the_active(
    threads: tuple[FakeLicensing, FakeLicensing], clock: ManualClock
) -> None:
    a, b = threads
    a.standby = b.target
    with Client(
        targets=[a.target, b.target],
        user_key=FAKE_KEY,
        clock=clock,
        retry=WAITING,
        signing_keys=a.public_keys(),
    ) as c:
        session = c.entitle("ACAD", "2026")
        assert c.target == b.target
        b.down = True  # and now the other way round: b is lost, a took over
        a.standby = None
        assert c.heartbeat(session.session_id).session_id == session.session_id
        assert c.target == a.target
    assert [len(f.called("Heartbeat")) for f in (a, b)] == [1, 1]
    assert a.called("Entitle")[0].request.request_id == b.called("Entitle")[0].request.request_id


class Jitter(random.Random):
    """An rng whose every draw is ``fraction``: 0 waits each backoff in full, near 1
    waits it less all the jitter (the soonest retries, the shortest span)."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


async def _drive(
    clock: ManualClock, call: asyncio.Future[object], standby: FakeLicensing, serves_after: float
) -> float:
    """Move the clock from one backoff to the next until ``call`` is done; ``standby``
    serves (it took over) from ``serves_after`` seconds on. Returns the seconds gone by."""
    start = clock.now()
    while not call.done():
        sleeping = asyncio.ensure_future(clock.until_sleeping())
        await asyncio.wait({call, sleeping}, return_when=asyncio.FIRST_COMPLETED)
        if call.done():
            sleeping.cancel()
            await asyncio.gather(sleeping, return_exceptions=True)
            break
        await sleeping
        deadline = clock.next_deadline()
        assert deadline is not None
        clock.set(deadline)
        if (clock.now() - start).total_seconds() >= serves_after:
            standby.standby = None  # elected: it serves from now on
    return (clock.now() - start).total_seconds()


@pytest.mark.parametrize("jitter", [0.0, 0.999999], ids=["full backoff", "most jitter"])
async def test_h2_h3_default_retry_rides_out_a_takeover_of_up_to_10_s(
    fake: FakeLicensing, clock: ManualClock, jitter: float
) -> None:
    # The active was killed (its address refuses connections); the standby answers
    # NOT_LEADER, still naming the dead active, for 9 s, then serves (RULES H2: within
    # 10 s). An Entitle with the default retry policy must still get through: the old
    # default (0.25 + 0.5 + 1 s of backoff) gave up after ~1.5 s.
    dead = "127.0.0.1:1"
    fake.standby = dead
    async with AsyncClient(
        targets=[dead, fake.target],
        user_key=FAKE_KEY,
        clock=clock,
        rng=Jitter(jitter),
        signing_keys=fake.public_keys(),
    ) as client:
        assert client.retry == RetryPolicy()  # the defaults
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        took = await _drive(clock, call, fake, serves_after=9.0)
        session = call.result()
        assert session.session_id in fake.sessions and client.target == fake.target
    assert 9.0 <= took <= 14.0
    # The dead one is tried once: the call then knows the standby's hint naming it is
    # stale, and every later attempt goes to the standby, within the policy's attempts.
    assert 1 + len(fake.called("Entitle")) <= RetryPolicy().max_attempts


@pytest.mark.parametrize("jitter", [0.0, 0.999999], ids=["full backoff", "most jitter"])
async def test_h2_h3_default_retry_spans_at_least_12_s_and_is_bounded(
    fake: FakeLicensing, other: FakeLicensing, clock: ManualClock, jitter: float
) -> None:
    # No server takes over: the call tries for at least 12 s (longer than a takeover may
    # take), with backoffs of at most 3 s, and then gives up: within max_attempts and
    # total_timeout.
    dead = "127.0.0.1:1"
    fake.standby = other.standby = ""
    policy = RetryPolicy()
    assert policy.max_backoff <= 3.0 and policy.total_timeout is not None
    async with AsyncClient(
        targets=[dead, fake.target, other.target],
        user_key=FAKE_KEY,
        clock=clock,
        rng=Jitter(jitter),
        signing_keys=fake.public_keys(),
    ) as client:
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        took = await _drive(clock, call, fake, serves_after=float("inf"))
        with pytest.raises(sdk.NotLeader) as info:
            call.result()
    assert 12.0 <= took <= policy.total_timeout
    attempts = 1 + len(fake.called("Entitle")) + len(other.called("Entitle"))  # + the dead's
    assert attempts <= policy.max_attempts
    assert info.value.targets == (dead, fake.target, other.target)


def test_h3_retry_policy_total_timeout_is_positive_seconds_or_none() -> None:
    assert RetryPolicy(total_timeout=None).out_of_time(1e9, 0) is False
    assert RetryPolicy(total_timeout=5).out_of_time(4.0, 1.5)
    assert not RetryPolicy(total_timeout=5).out_of_time(4.0, 1.0)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="total_timeout"):
            RetryPolicy(total_timeout=bad)
    with pytest.raises(TypeError, match="total_timeout"):
        RetryPolicy(total_timeout="20")  # type: ignore[arg-type]
