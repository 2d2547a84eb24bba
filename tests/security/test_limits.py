"""Limits (issue 6): per-credential rate limits with RetryInfo, entries per
AssignUsers/ImportUsers, page size, message size; all configurable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.api.errors import ResourceExhausted
from server.api.limits import FORGET_PER_NEW, RateLimits
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, running

A = "tessera.v1.AdminService/"
AUTH = [("authorization", f"Bearer {ADMIN_TOKEN}")]


def test_rate_limit_refuses_with_resource_exhausted_and_retry_info(tmp_path: Path) -> None:
    with (
        running(tmp_path / "t.db", admin_rate_limit=5.0, admin_burst=3) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        for _ in range(3):  # the burst
            stub.ListTeams(api.ListTeamsRequest(), metadata=AUTH, timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListTeams(api.ListTeamsRequest(), metadata=AUTH, timeout=5)
        err = info.value
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        assert status is not None
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(retry) == 1
        info_msg = error_details_pb2.RetryInfo()
        retry[0].Unpack(info_msg)
        assert info_msg.retry_delay.ToNanoseconds() == 200_000_000  # 1 / 5 per second
        # Health and reflection carry no credential and are never limited.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for _ in range(10):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_rate_limit_is_per_credential(tmp_path: Path) -> None:
    with running(tmp_path / "t.db", user_rate_limit=1.0, user_burst=2) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "CreateTeam", {"team_id": "acme"})
            admin(A + "ImportUsers", {"team_id": "acme", "users": ["A <a@x.io>", "B <b@x.io>"]})
            keys = [
                admin(A + "IssueUserKey", {"user_id": u})["user_key"] for u in ("a@x.io", "b@x.io")
            ]
            body = {"session_id": "se_nope"}
            for key in keys:  # each key has its own bucket of 2
                for _ in range(2):
                    with pytest.raises(GrpcurlError) as info:
                        admin("tessera.v1.LicensingService/Release", body, token=key)
                    assert info.value.code is grpc.StatusCode.NOT_FOUND
            with pytest.raises(GrpcurlError) as info:
                admin("tessera.v1.LicensingService/Release", body, token=keys[0])
            assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.reason == "RATE_LIMITED"
        finally:
            admin.close()


def test_a1_entries_per_request_are_capped(tmp_path: Path) -> None:
    with running(tmp_path / "t.db", max_users_per_request=3) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "CreateTeam", {"team_id": "acme"})
            users = [f"U{i} <u{i}@x.io>" for i in range(4)]
            with pytest.raises(GrpcurlError) as info:
                admin(A + "ImportUsers", {"team_id": "acme", "users": users})
            assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert "at most 3 users" in info.value.field_violations["users"]
            assert (
                len(admin(A + "ImportUsers", {"team_id": "acme", "users": users[:3]})["members"])
                == 3
            )
        finally:
            admin.close()


def test_page_size_is_capped_at_the_configured_maximum(tmp_path: Path) -> None:
    with running(tmp_path / "t.db", max_page_size=2) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "CreateTeam", {"team_id": "acme"})
            for i in range(5):
                admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 1, "request_id": f"r{i}"})
            page = admin(A + "ListLedgerEntries", {"team_id": "acme", "page_size": 1000})
            assert len(page["entries"]) == 2
            assert page["next_page_token"]
        finally:
            admin.close()


def test_message_size_is_capped(tmp_path: Path) -> None:
    with (
        running(tmp_path / "t.db", max_message_bytes=10_000) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        big = api.ImportUsersRequest(
            team_id="acme", users=[f"u{i}@example.com" for i in range(2000)]
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.ImportUsers(big, metadata=AUTH, timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


class _ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves (aiolimiter reads ``loop.time()``)."""

    now = 1000.0

    def time(self) -> float:
        return self.now


def _on_a_test_clock(test: Callable[[_ClockLoop], Awaitable[None]]) -> None:
    loop = _ClockLoop()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        runner.run(test(loop))


def test_rate_limit_a_bucket_full_again_is_forgotten_by_the_next_new_ones() -> None:
    limits = RateLimits(rate=1.0, burst=2)  # a bucket refills in 2 s

    async def run(loop: _ClockLoop) -> None:
        for i in range(10):
            await limits.take(f"old-{i}")
        assert len(limits) == 10
        loop.now += 2.0  # every old bucket is full again
        for i in range(5):  # each new one forgets the FORGET_PER_NEW oldest
            await limits.take(f"new-{i}")
            assert len(limits) == 10 - FORGET_PER_NEW * (i + 1) + (i + 1)
        assert len(limits) == 5

    _on_a_test_clock(run)


def test_rate_limit_a_bucket_still_refilling_is_kept_and_still_limits() -> None:
    limits = RateLimits(rate=1.0, burst=2)

    async def run(loop: _ClockLoop) -> None:
        await limits.take("busy")
        await limits.take("busy")  # its burst: empty now
        loop.now += 1.0  # one call's worth back, not full
        for i in range(50):
            await limits.take(f"other-{i}")
        assert len(limits) == 51  # "busy" is the oldest and not full: nothing forgotten
        await limits.take("busy")  # the one call's worth
        with pytest.raises(ResourceExhausted):
            await limits.take("busy")

    _on_a_test_clock(run)


def test_rate_limit_a_bucket_in_use_is_not_the_oldest() -> None:
    limits = RateLimits(rate=1.0, burst=2)

    async def run(loop: _ClockLoop) -> None:
        await limits.take("first")
        await limits.take("second")
        loop.now += 1.0  # both full again
        await limits.take("first")  # used again, twice: now the newest, and empty
        await limits.take("first")
        loop.now += 1.5  # "second" full, "first" half a call from it
        await limits.take("third")  # looks at "second" (forgotten), then "first" (kept)
        assert len(limits) == 2
        await limits.take("first")  # the 1.5 calls' worth refilled
        with pytest.raises(ResourceExhausted):
            await limits.take("first")  # its bucket was kept: not a fresh burst of 2

    _on_a_test_clock(run)
