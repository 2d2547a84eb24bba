"""The admin client repeats a call only when repeating it cannot make a change twice.

Against ``FakeAdmin``: a change that carries no ``request_id`` (``CreateAdminKey``,
``AcceptInvitation``...) whose answer is lost (``DEADLINE_EXCEEDED``: the server may well
have made it) is not sent again: the caller gets ``OutcomeUnknown``. Reads, and changes
with a ``request_id`` (``PurchaseTokens``), are repeated as before (RULES H3: repeating
idempotent calls with the same ``request_id``); so is any call after a failure that says
no server did it (``NOT_LEADER``, a refusal with a ``RetryInfo``, a connection refused).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

import client_sdk as sdk
from client_sdk import AsyncAdminClient, RetryPolicy
from tests.sdk.fakes import FakeAdmin

# Retries at once (the admin client waits on the real clock); plenty of attempts.
RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.0, call_timeout=5.0)
DOWN = "127.0.0.1:1"  # nothing listens: the connection is refused, the call never sent


@pytest.fixture
async def admin_fake() -> AsyncIterator[FakeAdmin]:
    servicer = await FakeAdmin().start()
    try:
        yield servicer
    finally:
        await servicer.stop()


async def test_h3_admin_change_without_request_id_is_not_sent_again_when_its_answer_is_lost(
    admin_fake: FakeAdmin,
) -> None:
    # The server made the key, but its answer was lost: sent again, it would make a
    # second key (and the caller would hold only the second one's secret).
    admin_fake.lost_answers["CreateAdminKey"] = 1
    async with AsyncAdminClient(admin_fake.target, "operator-token", retry=RETRY) as admin:
        with pytest.raises(sdk.OutcomeUnknown) as info:
            await admin.create_admin_key("portal", ["alpha"])
    assert admin_fake.keys == ["ak_1"] and len(admin_fake.called("CreateAdminKey")) == 1
    error = info.value
    assert isinstance(error.cause, sdk.DeadlineExceeded)
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED and error.reason == "OUTCOME_UNKNOWN"
    assert not isinstance(error, sdk.Unavailable)  # "try again" is what it must not say
    assert "not sent again" in str(error)


async def test_h3_admin_accept_invitation_is_not_sent_again_so_its_user_key_is_not_lost(
    admin_fake: FakeAdmin,
) -> None:
    # Accepted twice, the second answer carries no user_key: the one-time key would be gone.
    admin_fake.lost_answers["AcceptInvitation"] = 1
    async with AsyncAdminClient(admin_fake.target, "operator-token", retry=RETRY) as admin:
        with pytest.raises(sdk.OutcomeUnknown):
            await admin.accept_invitation("tsi_invitation")
    assert len(admin_fake.called("AcceptInvitation")) == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (grpc.StatusCode.CANCELLED, "the server stopped"),
        (grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)"),  # lost mid-call
    ],
)
async def test_h3_admin_change_without_request_id_is_not_sent_again_after_any_unknown_outcome(
    admin_fake: FakeAdmin, code: grpc.StatusCode, message: str
) -> None:
    admin_fake.refuse(code, "", message=message, method="CreateAdminKey")
    async with AsyncAdminClient(admin_fake.target, "operator-token", retry=RETRY) as admin:
        with pytest.raises(sdk.OutcomeUnknown) as info:
            await admin.create_admin_key("portal", ["alpha"])
    assert info.value.code is code and isinstance(info.value.cause, sdk.Unavailable)
    assert len(admin_fake.called("CreateAdminKey")) == 1


async def test_h3_admin_purchase_with_request_id_is_sent_again_and_bought_once(
    admin_fake: FakeAdmin,
) -> None:
    admin_fake.lost_answers["PurchaseTokens"] = 2
    async with AsyncAdminClient(admin_fake.target, "operator-token", retry=RETRY) as admin:
        pack = await admin.purchase_tokens("alpha", 100, "req-buy-1")
    calls = admin_fake.called("PurchaseTokens")
    assert len(calls) == 3 and {call.request.request_id for call in calls} == {"req-buy-1"}
    assert pack.pack_id == "pk_1" and list(admin_fake.packs) == ["req-buy-1"]


async def test_h3_admin_reads_are_sent_again_when_their_answer_is_lost(
    admin_fake: FakeAdmin,
) -> None:
    admin_fake.lost_answers["GetTeam"] = 2
    async with AsyncAdminClient(admin_fake.target, "operator-token", retry=RETRY) as admin:
        assert (await admin.get_team("alpha")).team_id == "alpha"
    assert len(admin_fake.called("GetTeam")) == 3


async def test_h3_admin_change_is_sent_again_when_no_server_did_it(
    admin_fake: FakeAdmin,
) -> None:
    # A standby's NOT_LEADER (it did nothing), an OVERLOADED refusal with its RetryInfo,
    # and a connection refused (never sent) all say the change was not made: it goes on.
    standby = await FakeAdmin().start()
    try:
        standby.standby = admin_fake.target
        admin_fake.refuse(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", method="CreateAdminKey", retry_after=0
        )
        async with AsyncAdminClient(
            targets=[DOWN, standby.target], credential="operator-token", retry=RETRY
        ) as admin:
            created = await admin.create_admin_key("portal", ["alpha"])
            assert admin.targets.current == admin_fake.target
    finally:
        await standby.stop()
    assert created.key.admin_key_id == "ak_1" and admin_fake.keys == ["ak_1"]
    assert len(standby.called("CreateAdminKey")) == 1
    assert len(admin_fake.called("CreateAdminKey")) == 2  # OVERLOADED, then made


async def test_sdk_admin_credential_read_from_a_file_keeps_working(admin_fake: FakeAdmin) -> None:
    # Path("var/tessera.db.admin-token").read_text() ends with a newline: it used to reach
    # grpc and fail every call with grpc's own ExecuteBatchError (not a TesseraError).
    # Surrounding whitespace is dropped, as AsyncClient drops it from a user key.
    async with AsyncAdminClient(admin_fake.target, " operator-token\n", retry=RETRY) as admin:
        assert (await admin.get_team("alpha")).team_id == "alpha"
    assert admin_fake.called("GetTeam")[0].metadata["authorization"] == "Bearer operator-token"


@pytest.mark.parametrize(
    "credential", ["", " \n", "tsa_secret key", "tsa_secrét", "tsa_secret\x00", "tsa_secret\r\nX"]
)
def test_sdk_admin_credential_that_cannot_be_a_header_is_refused_at_construction(
    credential: str,
) -> None:
    with pytest.raises(ValueError, match="credential") as info:
        AsyncAdminClient("127.0.0.1:1", credential)
    assert "secret" not in str(info.value)  # names the credential, never shows it
    with pytest.raises(TypeError, match="credential"):
        AsyncAdminClient("127.0.0.1:1", b"tsa_secret")  # type: ignore[arg-type]
