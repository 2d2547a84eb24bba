"""Fixtures for the SDK tests: a manual clock, the fake LicensingService, a client on it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest

from client_sdk import AsyncClient, ManualClock, Platform, RetryPolicy
from tests.sdk.fakes import FakeLicensing

FAKE_KEY = "tsu_fake-key"
# Retries without waiting (backoff 0), so tests never sleep; the backoff itself has its own test.
QUICK_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.0, call_timeout=5.0)


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait (briefly, in real time) until ``condition()`` holds: the SDK works in the background."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.002)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeLicensing]:
    servicer = await FakeLicensing(clock).start()
    try:
        yield servicer
    finally:
        await servicer.stop()


def client_for(
    fake: FakeLicensing, clock: ManualClock, retry: RetryPolicy = QUICK_RETRY, **kw: object
) -> AsyncClient:
    """A client of the fake on the test's clock (``kw``: more of AsyncClient's options)."""
    return AsyncClient(
        fake.target,
        FAKE_KEY,
        clock=clock,
        retry=retry,
        device_id="dev-test",
        platform=Platform.WINDOWS,
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(fake: FakeLicensing, clock: ManualClock) -> AsyncIterator[AsyncClient]:
    async with client_for(fake, clock) as c:
        yield c
