"""``benchmarks/split_server.py``: its figures are worth something only if the
front answers what Tessera answers (issue 17). Through the front, a Heartbeat
gets the session and the signed lease the back made, and a refusal keeps its
code, its details and the trailing metadata that carry the error's reason."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from benchmarks.bench import Child
from benchmarks.h2load_heartbeat import open_session, tessera_child
from client_sdk.leases import keys_from_response, verify_lease
from tessera_api.tessera.v1 import common_pb2, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

TOKEN = "tsa_" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    child = tessera_child("split", tmp_path_factory.mktemp("split"), TOKEN, "asyncio", "split")
    child.start()
    try:
        yield child
    finally:
        child.stop()


async def _call(target: str, method: str, request: object, key: str) -> object:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = licensing_service_pb2_grpc.LicensingServiceStub(channel)
        answer: object = await getattr(stub, method)(
            request, metadata=(("authorization", f"Bearer {key}"),)
        )
        return answer


def test_split_server_front_answers_the_heartbeat_the_back_made(split: Child) -> None:
    assert split.front_pid and split.setup_target != split.target  # two processes, two ports
    key, body = asyncio.run(open_session(split.setup_target, TOKEN))
    request = lic.HeartbeatRequest.FromString(body)
    answer = asyncio.run(_call(split.target, "Heartbeat", request, key))
    keys = asyncio.run(_call(split.target, "GetSigningKeys", lic.GetSigningKeysRequest(), key))
    assert isinstance(answer, lic.HeartbeatResponse)
    assert isinstance(keys, lic.GetSigningKeysResponse)
    session = answer.session
    assert session.session_id == request.session_id
    assert session.state == common_pb2.SESSION_STATE_ACTIVE
    # The lease is the back's, genuine and bound to this session (M7's offline check).
    lease = verify_lease(
        answer.lease,
        keys_from_response(keys),
        user_id=session.user_id,
        device_id=session.device_id,
        product_id=session.product_id,
        session_id=session.session_id,
    )
    assert lease.session_id == session.session_id


def test_split_server_front_keeps_a_refusals_code_details_and_reason(split: Child) -> None:
    key, _ = asyncio.run(open_session(split.setup_target, TOKEN))
    for target in (split.target, split.setup_target):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(_call(target, "Heartbeat", lic.HeartbeatRequest(session_id="nope"), key))
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        assert "nope" in (refused.value.details() or "")
        status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.domain == "tessera" and info.reason

    with pytest.raises(grpc.aio.AioRpcError) as unknown_key:
        asyncio.run(_call(split.target, "Heartbeat", lic.HeartbeatRequest(), "wrong"))
    assert unknown_key.value.code() is grpc.StatusCode.UNAUTHENTICATED
