"""Issue 17: a refusal with a ``google.rpc.RetryInfo`` (an overloaded server, a rate
limit) means the call was not done; the SDK sends the same request to the same server
again after the delay asked for, on its own clock, and raises the refusal only when its
attempts are spent. Time comes from the ``ManualClock``: nothing sleeps for real."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import status_pb2

import client_sdk as sdk
from client_sdk import AsyncClient, ManualClock, RetryPolicy
from client_sdk.errors import from_status
from tests.sdk.conftest import client_for
from tests.sdk.fakes import FakeLicensing, Refusal

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
# No jitter, so that the waits are exact; a backoff below the server's delay.
POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.1, multiplier=2.0, jitter=0.0)


@pytest.fixture
async def patient(fake: FakeLicensing, clock: ManualClock) -> AsyncIterator[AsyncClient]:
    async with client_for(fake, clock, retry=POLICY) as c:
        yield c


async def waits_then(clock: ManualClock, call: asyncio.Future[object], n: int) -> list[float]:
    """Let ``n`` waits of the SDK pass on the clock; each wait's length, in seconds."""
    waits = []
    for _ in range(n):
        await clock.until_sleeping()
        deadline = clock.next_deadline()
        assert deadline is not None
        waits.append((deadline - clock.now()).total_seconds())
        clock.set(deadline)
    return waits


@pytest.mark.parametrize("reason", ["OVERLOADED", "RATE_LIMITED"])
async def test_overload_entitle_is_repeated_after_the_delay_with_its_request_id(
    patient: AsyncClient, fake: FakeLicensing, clock: ManualClock, reason: str
) -> None:
    fake.refuse(EXHAUSTED, reason, retry_after=2.0, method="Entitle")
    call = asyncio.ensure_future(patient.entitle("ACAD", "2026"))
    assert await waits_then(clock, call, 1) == [2.0]  # the server's delay, not the backoff
    session = await asyncio.wait_for(call, 5)
    first, second = fake.called("Entitle")
    assert first.request.request_id == second.request.request_id
    assert fake.by_request[first.request.request_id] == session.session_id
    assert len(fake.sessions) == 1


async def test_overload_heartbeat_gives_up_after_the_policy_attempts(
    patient: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    session = await patient.entitle("ACAD", "2026")
    for _ in range(POLICY.max_attempts):
        fake.refuse(EXHAUSTED, "OVERLOADED", retry_after=0.15, method="Heartbeat")
    call = asyncio.ensure_future(patient.heartbeat(session.session_id))
    # At least the server's delay, and at least the backoff as it grows (0.1, 0.2).
    assert await waits_then(clock, call, 2) == [0.15, 0.2]
    with pytest.raises(sdk.Overloaded) as info:
        await asyncio.wait_for(call, 5)
    assert info.value.retry_after == pytest.approx(0.15)
    assert isinstance(info.value, sdk.ResourceExhausted)
    assert len(fake.called("Heartbeat")) == POLICY.max_attempts


async def test_overload_jitter_spreads_the_wait_up_never_below_the_delay() -> None:
    policy = RetryPolicy(jitter=0.2, initial_backoff=0.1)
    rng = random.Random(3)
    waits = [policy.later(1.0, 0, rng) for _ in range(200)]
    assert min(waits) >= 1.0
    assert max(waits) <= 1.2
    assert max(waits) - min(waits) > 0.1  # spread, so clients shed together part


def test_overload_retry_info_is_read_into_the_error() -> None:
    status = Refusal(EXHAUSTED, "OVERLOADED", retry_after=0.25).status()
    trailers = dict(status.trailing_metadata)
    error = from_status(
        EXHAUSTED, "busy", status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    )
    assert type(error) is sdk.Overloaded
    assert error.retry_after == pytest.approx(0.25)
    no_delay = from_status(EXHAUSTED, "cap", status_pb2.Status())
    assert no_delay.retry_after is None  # a cap, not a delay: not retried
