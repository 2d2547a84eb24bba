"""M12 for sessions that memory let go of: ended sessions stay in memory for
two days (``ENDED_KEPT``); after that the store answers for them."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, running

A = "tessera.v1.AdminService/"
L = "tessera.v1.LicensingService/"


def test_m12_a_long_ended_session_is_still_answered_as_ended(database: Path | str) -> None:
    with running(database) as srv:
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "CreateTeam", {"team_id": "acme"})
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 50, "request_id": "p"})
            admin(
                A + "UpsertProduct",
                {
                    "product": {
                        "product_id": "ACAD",
                        "daily_rate": 10,
                        "platforms": ["PLATFORM_WINDOWS"],
                    }
                },
            )
            admin(
                A + "ImportUsers",
                {"team_id": "acme", "users": ["A <a@x.io>", "B <b@x.io>"], "all_products": True},
            )
            ann = admin(A + "IssueUserKey", {"user_id": "a@x.io"})["user_key"]
            bob = admin(A + "IssueUserKey", {"user_id": "b@x.io"})["user_key"]
            session = admin(
                L + "Entitle",
                {
                    "product_id": "ACAD",
                    "product_version": "2026",
                    "platform": "PLATFORM_WINDOWS",
                    "device_id": "d1",
                },
                token=ann,
            )["session"]
            admin(L + "Release", {"session_id": session["session_id"]}, token=ann)
            admin(A + "AdvanceClock", {"by": f"{3 * 86400}s"})
            assert srv.call(_forget(srv)) == 1
            for method in ("Heartbeat", "Release"):
                again = admin(L + method, {"session_id": session["session_id"]}, token=ann)
                assert again["session"]["state"] == "SESSION_STATE_ENDED"
                assert again["session"]["end_reason"] == "END_REASON_RELEASED"
                assert again["session"]["end_time"] == "2026-01-01T00:00:00Z"
            with pytest.raises(GrpcurlError) as info:  # still private to its user
                admin(L + "Heartbeat", {"session_id": session["session_id"]}, token=bob)
            assert info.value.code is grpc.StatusCode.NOT_FOUND
            # releasing the hold at 0:00 charged nothing: all 50 tokens are there
            assert admin(A + "GetTeam", {"team_id": "acme"})["team"]["available_tokens"] == "50"
        finally:
            admin.close()


async def _forget(srv) -> int:  # type: ignore[no-untyped-def]
    engine = srv.server.engine
    return int(engine.sessions.forget_ended())
