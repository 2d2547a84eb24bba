"""Limits (issue 6): per-credential rate limits with RetryInfo, entries per
AssignUsers/ImportUsers, page size, message size; all configurable."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from server.api.errors import ResourceExhausted
from server.api.limits import FORGET_PER_NEW, RateLimits
from server.engine import access as access_module
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, SecondsClock, running

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


def test_a1_every_list_of_an_admin_request_is_capped_before_an_entry_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guest's AssignUsers parsed every address at the edge (whose sessions may it
    end?) before the use case counted them: 100,000 of them held the event loop
    7-14 s, every other call waiting. Every list of an AdminService request is
    counted first, nested ones too, and refused naming it."""
    parsed: list[str] = []
    check = access_module.check_user_entries
    monkeypatch.setattr(
        access_module, "check_user_entries", lambda raws: parsed.extend(raws) or check(raws)
    )
    with running(tmp_path / "t.db", max_users_per_request=3) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "CreateTeam", {"team_id": "acme"})
            refused = {
                "users": (
                    "AssignUsers",
                    {"team_id": "acme", "users": [f"u{i}@x.io" for i in range(4)], "guest": True},
                ),
                "product_ids": (
                    "SetDefaultAssignments",
                    {"team_id": "acme", "product_ids": ["A", "B", "C", "D"]},
                ),
                "team_ids": ("CreateAdminKey", {"display_name": "K", "team_ids": ["acme"] * 4}),
                "product.platforms": (
                    "UpsertProduct",
                    {
                        "product": {
                            "product_id": "ACAD",
                            "display_name": "AutoCAD",
                            "daily_rate": 10,
                            "platforms": ["PLATFORM_WINDOWS"] * 4,
                        }
                    },
                ),
            }
            for field, (method, body) in refused.items():
                with pytest.raises(GrpcurlError) as info:
                    admin(A + method, body)
                assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
                noun = field.rsplit(".", 1)[-1].replace("_", " ")
                assert info.value.field_violations == {
                    field: f"must name at most 3 {noun} per request"
                }, method
            assert parsed == []
            three = [f"U{i} <u{i}@x.io>" for i in range(3)]
            done = admin(A + "AssignUsers", {"team_id": "acme", "users": three, "guest": True})
            assert len(done["members"]) == 3 and len(parsed) == 3  # read once
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


def test_rate_limit_a_bucket_full_again_is_forgotten_by_the_next_new_ones() -> None:
    clock = SecondsClock()
    limits = RateLimits(rate=1.0, burst=2, clock=clock)  # a bucket refills in 2 s
    for i in range(10):
        limits.take(f"old-{i}")
    assert len(limits) == 10
    clock.t += 1.0  # each old bucket spent one call of two: full again now
    for i in range(5):  # each new one forgets the FORGET_PER_NEW oldest
        limits.take(f"new-{i}")
        assert len(limits) == 10 - FORGET_PER_NEW * (i + 1) + (i + 1)
    assert len(limits) == 5


def test_rate_limit_buckets_of_a_crowd_gone_are_forgotten_while_a_few_known_ones_call() -> None:
    """5,000 users call once, then only 3 of them go on calling for an hour: the
    crowd's buckets, full again, are forgotten by the known ones' calls too, not
    kept for good because no new credential comes to forget them."""
    clock = SecondsClock()
    limits = RateLimits(rate=200.0, burst=1000, clock=clock)
    for i in range(5000):
        limits.take(f"user{i}@example.com")
    clock.t += 3600.0  # every bucket long full again
    for _ in range(3600):
        for u in range(3):
            limits.take(f"user{u}@example.com")
        clock.t += 1.0
    assert len(limits) == 3


def test_rate_limit_a_bucket_still_refilling_is_kept_and_still_limits() -> None:
    clock = SecondsClock()
    limits = RateLimits(rate=1.0, burst=2, clock=clock)
    limits.take("busy")
    limits.take("busy")  # its burst: empty now
    clock.t += 1.0  # one call's worth back, not full
    for i in range(50):
        limits.take(f"other-{i}")
    assert len(limits) == 51  # "busy" is the oldest and not full: nothing forgotten
    limits.take("busy")  # the one call's worth
    with pytest.raises(ResourceExhausted):
        limits.take("busy")


def test_rate_limit_a_bucket_in_use_is_not_the_oldest() -> None:
    clock = SecondsClock()
    limits = RateLimits(rate=1.0, burst=2, clock=clock)
    limits.take("first")
    limits.take("second")
    clock.t += 1.0  # both full again
    limits.take("first")  # used again, twice: now the newest, and empty
    limits.take("first")
    clock.t += 1.5  # "second" full, "first" half a call from it
    limits.take("third")  # looks at "second" (forgotten), then "first" (kept)
    assert len(limits) == 2
    limits.take("first")  # the 1.5 calls' worth refilled
    with pytest.raises(ResourceExhausted):
        limits.take("first")  # its bucket was kept: not a fresh burst of 2


@pytest.mark.parametrize(("rate", "burst"), [(5.0, 3), (200.0, 400), (0.5, 1), (3.0, 7)])
def test_rate_limit_allows_exactly_the_burst_at_once_then_the_rate(rate: float, burst: int) -> None:
    """The bucket's arithmetic, at awkward rates (sums of 1/rate rounded in floating
    point): ``burst`` calls at one instant, the next refused; then one call each
    1/rate seconds, and none sooner; over 10 s of calls as fast as allowed,
    ``burst + 10 * rate`` in all."""
    clock = SecondsClock()
    clock.t = 1_000_000.123  # far from 0: the rounding of a real monotonic clock
    limits = RateLimits(rate=rate, burst=burst, clock=clock)
    for _ in range(burst):
        limits.take("k")
    with pytest.raises(ResourceExhausted) as refused:
        limits.take("k")
    assert refused.value.retry_after == pytest.approx(1.0 / rate)
    clock.t += 0.9 / rate  # not yet a whole call's worth
    with pytest.raises(ResourceExhausted):
        limits.take("k")
    clock.t += 0.1 / rate
    limits.take("k")
    # As fast as allowed, in steps of a tenth of an interval, for 10 s from the start.
    clock.t = 1_000_000.123
    limits = RateLimits(rate=rate, burst=burst, clock=clock)
    taken, step = 0, 0.1 / rate
    for n in range(round(10.0 / step) + 1):
        clock.t = 1_000_000.123 + n * step
        while True:
            try:
                limits.take("k")
            except ResourceExhausted:
                break
            taken += 1
    assert taken == burst + round(10 * rate)


def test_rate_limit_a_refused_call_takes_nothing() -> None:
    clock = SecondsClock()
    limits = RateLimits(rate=1.0, burst=1, clock=clock)
    limits.take("k")
    for _ in range(100):  # hammering an empty bucket does not push its refill back
        with pytest.raises(ResourceExhausted):
            limits.take("k")
    clock.t += 1.0
    limits.take("k")
