"""Typed errors, retries and deadlines, against the fake LicensingService.

``grpc.RpcError`` never reaches the caller: every failure is a ``TesseraError`` chosen by
the ``ErrorInfo`` reason the server sends, or by the status code when the reason is new.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import grpc
import pytest

import client_sdk as sdk
from client_sdk import AsyncClient, ManualClock, Platform, RetryPolicy
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY, client_for, eventually
from tests.sdk.fakes import FakeLicensing

FP = grpc.StatusCode.FAILED_PRECONDITION

CASES: list[tuple[grpc.StatusCode, str, dict[str, str], type[sdk.TesseraError]]] = [
    (
        FP,
        "INSUFFICIENT_TOKENS",
        {"available": "4", "daily_rate": "10", "team_id": "acme"},
        sdk.InsufficientTokens,
    ),
    (
        FP,
        "RUNNING_ELSEWHERE",
        {"device_id": "dev-other", "product_id": "ACAD"},
        sdk.RunningElsewhere,
    ),
    (FP, "DEVICE_LIMIT", {"limit": "3"}, sdk.DeviceLimit),
    (FP, "UNSUPPORTED_PLATFORM", {}, sdk.UnsupportedPlatform),
    (FP, "UNSUPPORTED_VERSION", {}, sdk.UnsupportedVersion),
    (FP, "HOST_SESSION_REQUIRED", {}, sdk.HostSessionRequired),
    (FP, "IDLE_NOT_SUPPORTED", {}, sdk.IdleNotSupported),
    (FP, "INVITATION_PENDING", {}, sdk.InvitationPending),
    (FP, "INVITATION_EXPIRED", {}, sdk.InvitationExpired),
    (grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED", {}, sdk.NotAssigned),
    (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT", {}, sdk.UnknownProduct),
    (grpc.StatusCode.NOT_FOUND, "UNKNOWN_SESSION", {}, sdk.UnknownSession),
    # Reasons this SDK has no class for land in their status code's class.
    (FP, "PACK_HAS_HOLDS", {}, sdk.FailedPrecondition),
    (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TEAM", {}, sdk.NotFound),
    (grpc.StatusCode.PERMISSION_DENIED, "", {}, sdk.PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, "", {}, sdk.Unauthenticated),
    (grpc.StatusCode.UNIMPLEMENTED, "", {}, sdk.ServerError),
    (grpc.StatusCode.INTERNAL, "INTERNAL", {}, sdk.ServerError),
    (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", {}, sdk.AlreadyExists),
    (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "SESSION_LIMIT",
        {"session_limit": "10", "product_id": "ACAD"},
        sdk.SessionLimit,
    ),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "", {}, sdk.ResourceExhausted),
]


@pytest.mark.parametrize(
    ("code", "reason", "metadata", "cls"), CASES, ids=[c[1] or c[0].name for c in CASES]
)
async def test_errors_typed_by_reason(
    client: AsyncClient,
    fake: FakeLicensing,
    code: grpc.StatusCode,
    reason: str,
    metadata: dict[str, str],
    cls: type[sdk.TesseraError],
) -> None:
    fake.refuse(code, reason, message="words for a person", metadata=metadata)
    with pytest.raises(sdk.TesseraError) as info:
        await client.entitle("ACAD", "2026")
    err = info.value
    assert type(err) is cls
    assert not isinstance(err, grpc.RpcError)
    assert err.code is code and err.message == "words for a person"
    assert err.reason == (reason or code.name)
    assert err.metadata == metadata
    assert len(fake.called("Entitle")) == 1  # refusals are not retried


async def test_errors_carry_their_figures(client: AsyncClient, fake: FakeLicensing) -> None:
    fake.refuse(
        FP,
        "INSUFFICIENT_TOKENS",
        metadata={"available": "4", "daily_rate": "10", "team_id": "acme"},
    )
    with pytest.raises(sdk.InsufficientTokens) as tokens:
        await client.entitle("ACAD", "2026")
    assert (tokens.value.available, tokens.value.daily_rate, tokens.value.team_id) == (
        4,
        10,
        "acme",
    )
    fake.refuse(FP, "RUNNING_ELSEWHERE", metadata={"device_id": "dev-other"})
    with pytest.raises(sdk.RunningElsewhere) as elsewhere:
        await client.entitle("ACAD", "2026")
    assert elsewhere.value.device_id == "dev-other"
    fake.refuse(FP, "DEVICE_LIMIT", metadata={"limit": "3"})
    with pytest.raises(sdk.DeviceLimit) as limit:
        await client.entitle("ACAD", "2026")
    assert limit.value.limit == 3
    assert isinstance(limit.value, sdk.FailedPrecondition)
    fake.refuse(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SESSION_LIMIT", metadata={"session_limit": "10"}
    )
    with pytest.raises(sdk.SessionLimit) as cap:
        await client.entitle("ACAD", "2026")
    assert cap.value.limit == 10  # RULES M13
    assert str(limit.value) == "DEVICE_LIMIT: refused"


async def test_errors_invalid_argument_names_each_field(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.refuse(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        message="product_version: must start with a year",
        violations={"product_version": "must start with a year", "device_id": "is required"},
    )
    with pytest.raises(sdk.InvalidArgument) as info:
        await client.entitle("ACAD", "latest")
    assert info.value.field_violations == {
        "product_version": "must start with a year",
        "device_id": "is required",
    }


async def test_errors_wrong_key_is_unauthenticated(fake: FakeLicensing, clock: ManualClock) -> None:
    async with AsyncClient(fake.target, "tsu_wrong", clock=clock, retry=QUICK_RETRY) as client:
        with pytest.raises(sdk.Unauthenticated):
            await client.entitle("ACAD", "2026")


async def test_errors_refused_session_raises_on_entry_and_leaves_nothing_running(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.refuse(grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED")
    with pytest.raises(sdk.NotAssigned):
        async with client.session("ACAD", "2026"):
            raise AssertionError("never entered")
    assert fake.called("Release") == [] and fake.called("Heartbeat") == []


async def test_sdk_retries_unavailable_reusing_request_id(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="Entitle")
    fake.refuse(grpc.StatusCode.DEADLINE_EXCEEDED, "", method="Entitle")
    session = await client.entitle("ACAD", "2026")
    calls = fake.called("Entitle")
    assert len(calls) == 3
    assert len({call.request.request_id for call in calls}) == 1
    assert fake.by_request[calls[0].request.request_id] == session.session_id


async def test_sdk_retries_a_server_that_cancels_as_it_stops_reusing_request_id(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    """gRPC answers CANCELLED to the calls it had received but not begun when the
    server stops (SIGTERM): for the SDK that is the server going away, not the
    product's own cancellation (that one is asyncio's CancelledError)."""
    fake.refuse(grpc.StatusCode.CANCELLED, "", method="Entitle")
    session = await client.entitle("ACAD", "2026")
    calls = fake.called("Entitle")
    assert len(calls) == 2
    assert len({call.request.request_id for call in calls}) == 1
    assert fake.by_request[calls[0].request.request_id] == session.session_id
    for _ in range(QUICK_RETRY.max_attempts):
        fake.refuse(grpc.StatusCode.CANCELLED, "", method="Heartbeat")
    with pytest.raises(sdk.Unavailable) as info:
        await client.heartbeat(session.session_id, 0)
    assert info.value.code is grpc.StatusCode.CANCELLED
    assert len(fake.called("Heartbeat")) == QUICK_RETRY.max_attempts


async def test_sdk_gives_up_with_unavailable_after_max_attempts(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.down = True
    with pytest.raises(sdk.Unavailable) as info:
        await client.heartbeat("ses_1", 0)
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(fake.called("Heartbeat")) == QUICK_RETRY.max_attempts


async def test_sdk_unreachable_server_is_unavailable(clock: ManualClock) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    async with AsyncClient("127.0.0.1:1", FAKE_KEY, clock=clock, retry=QUICK_RETRY) as client:
        with pytest.raises(sdk.Unavailable):
            await client.entitle("ACAD", "2026")


async def test_sdk_deadline_on_every_call(fake: FakeLicensing, clock: ManualClock) -> None:
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.0, call_timeout=0.25)
    async with AsyncClient(fake.target, FAKE_KEY, clock=clock, retry=retry) as client:
        session = await client.entitle("ACAD", "2026")
        await client.heartbeat(session.session_id)
        await client.idle(session.session_id)
        await client.release(session.session_id)
        # Each call carried a deadline of about 250 ms (the server's clock rounds a little).
        assert all(call.deadline is not None and call.deadline < 0.26 for call in fake.calls)
        fake.delay = 0.6
        with pytest.raises(sdk.DeadlineExceeded) as info:
            await client.heartbeat(session.session_id)
    assert isinstance(info.value, sdk.Unavailable)
    assert len(fake.called("Heartbeat")) == 1 + 2


async def test_sdk_backoff_waits_on_the_injected_clock(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    retry = RetryPolicy(
        max_attempts=4, initial_backoff=1.0, multiplier=2.0, max_backoff=8.0, jitter=0.0
    )
    async with AsyncClient(fake.target, FAKE_KEY, clock=clock, retry=retry) as client:
        for _ in range(3):
            fake.refuse(grpc.StatusCode.UNAVAILABLE, "")
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        waits = []
        for _ in range(3):
            await clock.until_sleeping()
            deadline = clock.next_deadline()
            assert deadline is not None
            waits.append((deadline - clock.now()).total_seconds())
            clock.set(deadline)
        session = await asyncio.wait_for(call, 5)
    assert waits == [1.0, 2.0, 4.0]
    assert session.session_id and len(fake.called("Entitle")) == 4


def test_sdk_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=2.0, max_backoff=3.0, jitter=0.2)
    rng = random.Random(3)
    for attempt, base in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = {policy.backoff(attempt, rng) for _ in range(50)}
        assert all(0.8 * base <= d <= base for d in delays)
        assert len(delays) > 1
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


@pytest.mark.parametrize("attempt", [1024, 10**6])
def test_sdk_backoff_stays_capped_however_long_the_outage(attempt: int) -> None:
    """With no total_timeout, only the attempts bound a call: its thousandth
    backoff is still the cap, not an overflow that kills a session's heartbeat."""
    policy = RetryPolicy(initial_backoff=0.25, multiplier=2.0, max_backoff=3.0, jitter=0.0)
    assert policy.backoff(attempt, random.Random(1)) == 3.0
    assert policy.later(0.5, attempt, random.Random(1)) == 3.0
    assert RetryPolicy(initial_backoff=0.0, jitter=0.0).backoff(attempt, random.Random(1)) == 0.0


async def test_sdk_a_session_the_server_does_not_know_ends_unknown_session(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The server no longer knows the session (ended by an administrator and forgotten, or
    # the server restored from a backup): the background heartbeat meets NOT_FOUND
    # (UNKNOWN_SESSION). The product sees the session end with a reason it can act on
    # (start a new one), and the error, never an exception; nothing more is sent for it.
    ended: list[sdk.EndReason] = []
    async with client.session(
        "REVIT", "2026", platform=Platform.WINDOWS, on_ended=lambda r, s: ended.append(r)
    ) as s:
        await clock.until_sleeping()
        del fake.sessions[s.session_id]
        clock.advance(timedelta(minutes=6))
        assert await asyncio.wait_for(s.wait_ended(), 5) is sdk.EndReason.UNKNOWN_SESSION
        assert s.end_reason is sdk.EndReason.UNKNOWN_SESSION
        assert ended == [sdk.EndReason.UNKNOWN_SESSION] and not s.usable
        assert isinstance(s.error, sdk.UnknownSession)
        with pytest.raises(sdk.SessionEnded) as info:
            s.ensure_usable()
        assert info.value.end_reason is sdk.EndReason.UNKNOWN_SESSION
    assert fake.called("Release") == []


#: A call for the running session refused (code, ErrorInfo reason), as the real server
#: refuses it: the reason the session ends with, and the error kept in ``error``.
#: UNAUTHENTICATED: the user's key was issued again (or revoked); the product can act on
#: KEY_REFUSED (ask for the current key). NOT_ASSIGNED says why exactly as
#: END_REASON_NOT_ASSIGNED does (RULES A6). NOT_FOUND (UNKNOWN_SESSION): the server no
#: longer knows the session; the product can act on UNKNOWN_SESSION (start a new one).
BACKGROUND_REFUSALS = {
    "key refused": (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
        sdk.EndReason.KEY_REFUSED,
        sdk.Unauthenticated,
    ),
    "not assigned": (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_ASSIGNED",
        sdk.EndReason.NOT_ASSIGNED,
        sdk.NotAssigned,
    ),
    "unknown session": (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_SESSION",
        sdk.EndReason.UNKNOWN_SESSION,
        sdk.UnknownSession,
    ),
}


@pytest.mark.parametrize("method", ["Heartbeat", "Idle"])
@pytest.mark.parametrize("refusal", list(BACKGROUND_REFUSALS))
async def test_sdk_a_refusal_mid_session_ends_it_with_the_reason_the_refusal_gives(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock, method: str, refusal: str
) -> None:
    code, reason, end, error = BACKGROUND_REFUSALS[refusal]
    ended: list[sdk.EndReason] = []
    async with client.session("ACAD", "2026", on_ended=lambda r, s: ended.append(r)) as s:
        await clock.until_sleeping()
        fake.refuse(code, reason, method=method)
        clock.advance(timedelta(minutes=16))  # a heartbeat is due, and Idle (ACAD is idle-aware)
        assert await asyncio.wait_for(s.wait_ended(), 5) is end
        assert s.end_reason is end and ended == [end]
        assert isinstance(s.error, error) and not s.usable
        with pytest.raises(sdk.SessionEnded) as info:
            s.ensure_usable()
        assert info.value.end_reason is end
    assert fake.called("Release") == []  # ended by the server's refusal: nothing more is sent


async def test_sdk_a_host_whose_key_is_refused_ends_its_plugins_without_a_release(
    client: AsyncClient, fake: FakeLicensing, clock: ManualClock
) -> None:
    # The plugin's Release would go with the same refused key: it is ended here, unsent.
    async with client.session("ACAD", "2026") as host:
        plugin = host.plugin("ARNOLD")
        await plugin.start()
        await clock.until_sleeping()
        fake.refuse(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", method="Heartbeat")
        clock.advance(timedelta(minutes=6))  # the host's heartbeat is due first
        assert await asyncio.wait_for(host.wait_ended(), 5) is sdk.EndReason.KEY_REFUSED
        assert await asyncio.wait_for(plugin.wait_ended(), 5) is sdk.EndReason.HOST_ENDED
    assert fake.called("Release") == []


def test_errors_tree_has_one_root() -> None:
    names: list[Any] = [getattr(sdk, name) for name in sdk.__all__]
    errors = [cls for cls in names if isinstance(cls, type) and issubclass(cls, Exception)]
    assert len(errors) > 15
    assert all(issubclass(cls, sdk.TesseraError) for cls in errors)


async def test_sdk_session_start_can_be_retried_with_the_same_request_id(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    for _ in range(QUICK_RETRY.max_attempts):  # the keys arrive; every Entitle attempt fails
        fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="Entitle")
    handle = client.session("ACAD", "2026")
    with pytest.raises(sdk.Unavailable):
        await handle.start()
    assert not handle.usable
    async with handle:  # the product tries again with the same handle
        assert handle.usable
    ids = {call.request.request_id for call in fake.called("Entitle")}
    assert ids == {handle.request_id}
    assert len(fake.called("Entitle")) == QUICK_RETRY.max_attempts + 1


async def test_sdk_user_key_read_from_a_file_keeps_working(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    # open(path).read() leaves a newline: it used to reach grpc and fail every call with
    # grpc's own error (not a TesseraError); surrounding whitespace is dropped.
    async with AsyncClient(fake.target, f" {FAKE_KEY}\n", clock=clock, retry=QUICK_RETRY) as c:
        await c.entitle("ACAD", "2026")
    assert fake.called("Entitle")[0].metadata["authorization"] == f"Bearer {FAKE_KEY}"


@pytest.mark.parametrize("key", ["", " \n", "tsu_fake key", "tsu_fake-kéy", "tsu_\x00key"])
def test_sdk_user_key_that_cannot_be_a_header_is_refused_at_construction(key: str) -> None:
    with pytest.raises(ValueError, match="user_key"):
        AsyncClient("127.0.0.1:1", key)
    with pytest.raises(ValueError, match="user_key"):
        sdk.Client("127.0.0.1:1", key)


def test_sdk_client_arguments_of_the_wrong_type_are_type_errors() -> None:
    with pytest.raises(TypeError, match="user_key"):
        AsyncClient("127.0.0.1:1", 123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="device_id"):
        AsyncClient("127.0.0.1:1", FAKE_KEY, device_id=5)  # type: ignore[arg-type]


async def test_sdk_entitle_arguments_of_the_wrong_type_are_type_errors(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    async with AsyncClient(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY) as client:
        with pytest.raises(TypeError, match="product_id"):
            await client.entitle(5, "2026")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="version"):
            await client.entitle("ACAD", 2026)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="device_id"):
            await client.entitle("ACAD", "2026", device_id=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="product_id"):
            client.session(5, "2026")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="device_id"):
            client.session("ACAD", "2026", device_id=5)  # type: ignore[arg-type]
    assert fake.called("Entitle") == []


@pytest.mark.parametrize(
    "field", ["call_timeout", "initial_backoff", "max_backoff", "multiplier", "jitter"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_sdk_retry_policy_refuses_nan_and_infinite_seconds(field: str, value: float) -> None:
    # nan passed every comparison (a nan deadline, a nan backoff); inf waits forever.
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})


def test_sdk_retry_policy_refuses_values_that_are_not_numbers() -> None:
    with pytest.raises(TypeError, match="call_timeout"):
        RetryPolicy(call_timeout="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_attempts"):
        RetryPolicy(max_attempts=2.5)  # type: ignore[arg-type]


async def test_errors_closing_the_client_under_a_call_raises_client_closed_not_cancelled(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    # Another task closes the client while a call waits for the server: the caller was
    # not cancelled, so it gets a TesseraError (ClientClosed), not asyncio.CancelledError.
    await client.signing_keys()
    fake.gates["Entitle"] = asyncio.Event()
    call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
    await eventually(lambda: len(fake.called("Entitle")) == 1)
    await client.close()
    with pytest.raises(sdk.ClientClosed) as info:
        await asyncio.wait_for(call, 5)
    assert isinstance(info.value, sdk.TesseraError) and not call.cancelled()
    assert info.value.reason == "CLIENT_CLOSED"
    with pytest.raises(sdk.ClientClosed):  # and every call after it
        await client.heartbeat("ses_1")
    assert len(fake.called("Entitle")) == 1  # not sent again


async def test_errors_the_callers_own_cancellation_stays_cancelled_error(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    async with client_for(fake, clock) as client:
        await client.signing_keys()
        gate = fake.gates["Entitle"] = asyncio.Event()
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        await eventually(lambda: len(fake.called("Entitle")) == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # Cancelled while the client closes, it is still the caller's cancellation.
        call = asyncio.ensure_future(client.entitle("ACAD", "2026"))
        await eventually(lambda: len(fake.called("Entitle")) == 2)
        closing = asyncio.ensure_future(client.close())
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await closing
        gate.set()
