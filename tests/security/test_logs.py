"""Secrets in logs (issue 12, point 6): what a caller chooses and the server logs (the
``x-request-id`` header, a request's ``request_id``, the user id) goes through the same
scrubber as error messages (``server/api/errors.scrub``), so a user key, an invitation
token or the admin token pasted there never reaches a log line, while a plain request id
still does. And every line the configured logger writes, a traceback included, is
scrubbed the same way (``server/logs.py``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tests.support import ADMIN_TOKEN, REPO, ServerProcess, ServerThread

PLAIN = "req-plain-42"
# A key's random part alone (as ``secrets.token_urlsafe(32)`` makes it): secret-shaped too.
BARE = "Zq3vT0bX9yLmN4pR7sK2wE5hJ8gF1dC6aU0iO3lV_-Q"


class Calls:
    """Admin and licensing stubs that send an ``x-request-id`` when told to."""

    def __init__(self, target: str, admin_token: str = ADMIN_TOKEN) -> None:
        self.channel = grpc.insecure_channel(target)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.lic = licensing_service_pb2_grpc.LicensingServiceStub(self.channel)
        self.token = admin_token

    def a(self, method: str, request: Any, request_id: str | None = None) -> Any:
        return self._call(self.admin, method, request, self.token, request_id)

    def u(self, method: str, request: Any, key: str, request_id: str | None = None) -> Any:
        return self._call(self.lic, method, request, key, request_id)

    @staticmethod
    def _call(stub: Any, method: str, request: Any, secret: str, rid: str | None) -> Any:
        md = [("authorization", f"Bearer {secret}")]
        if rid is not None:
            md.append(("x-request-id", rid))
        try:
            return getattr(stub, method)(request, metadata=md, timeout=30)
        except grpc.RpcError as exc:  # refused or not, the call is logged
            return exc


@pytest.fixture
def calls(server: ServerThread) -> Iterator[Calls]:
    c = Calls(server.target)
    try:
        yield c
    finally:
        c.channel.close()


def _user_key(c: Calls) -> str:
    c.a("CreateTeam", api.CreateTeamRequest(team_id="acme", display_name="Acme"))
    every = [pb.PLATFORM_WINDOWS, pb.PLATFORM_MACOS, pb.PLATFORM_LINUX]
    product = pb.Product(product_id="ACAD", daily_rate=10, idle_aware=True, platforms=every)
    c.a("UpsertProduct", api.UpsertProductRequest(product=product))
    c.a(
        "ImportUsers",
        api.ImportUsersRequest(team_id="acme", users=["Ann <ann@x.io>"], all_products=True),
    )
    key: str = c.a("IssueUserKey", api.IssueUserKeyRequest(user_id="ann@x.io")).user_key
    assert key.startswith("tsk_") and len(key) == 47
    return key


def _entitle(request_id: str = "") -> lic.EntitleRequest:
    return lic.EntitleRequest(
        product_id="ACAD",
        product_version="2026",
        platform=pb.PLATFORM_WINDOWS,
        device_id="d1",
        request_id=request_id,
    )


def test_review_p6_request_ids_carrying_secrets_are_scrubbed_from_the_log(calls: Calls) -> None:
    key = _user_key(calls)
    info = api.GetServerInfoRequest()
    with capture_logs() as events:
        calls.a("GetServerInfo", info, request_id=key)
        calls.a("GetServerInfo", info, request_id=ADMIN_TOKEN)
        calls.a("GetServerInfo", info, request_id=f"retry of {key} at noon")
        calls.a("GetServerInfo", info, request_id=BARE)
        calls.a("GetServerInfo", info, request_id=PLAIN)
        calls.a(
            "PurchaseTokens",
            api.PurchaseTokensRequest(team_id="acme", tokens=100, request_id=key),
        )
        calls.u("Entitle", _entitle(request_id=ADMIN_TOKEN), key)
        calls.u("Entitle", _entitle(request_id="order-7"), key)
    rpcs = [e for e in events if e["event"] == "rpc"]
    assert [(e["method"], e["request_id"]) for e in rpcs] == [
        ("GetServerInfo", "tsk_\u2026"),
        ("GetServerInfo", "\u2026"),  # the admin token, taken out whole
        ("GetServerInfo", "retry of tsk_\u2026 at noon"),
        ("GetServerInfo", "\u2026"),
        ("GetServerInfo", PLAIN),
        ("PurchaseTokens", "tsk_\u2026"),
        ("Entitle", "\u2026"),
        ("Entitle", "order-7"),
    ]
    assert [e["user_id"] for e in rpcs[-2:]] == ["ann@x.io", "ann@x.io"]
    logged = repr(events)
    for secret in (key, key[4:], ADMIN_TOKEN, ADMIN_TOKEN[4:], BARE):
        assert secret not in logged


def test_review_p6_uuid_and_hex_request_ids_stay_readable(calls: Calls) -> None:
    plain = [
        "req-0f8fad5bd9cb469fa16570867728950e",  # the SDK's new_request_id()
        "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "PurchaseTokens acme 2026-12-01 #3",
    ]
    with capture_logs() as events:
        for rid in plain:
            calls.a("GetServerInfo", api.GetServerInfoRequest(), request_id=rid)
    assert [e["request_id"] for e in events if e["event"] == "rpc"] == plain


def test_review_p6_the_json_log_of_a_real_server_holds_no_secret_request_id(
    tmp_path: Path,
) -> None:
    # An operator's own admin token need not look like a secret: it is scrubbed all the same.
    own = "operator-chose-this-token"
    srv = ServerProcess(tmp_path / "tessera.db", admin_token=own).start()
    c = Calls(srv.target, admin_token=own)
    try:
        info = api.GetServerInfoRequest()
        assert not isinstance(c.a("GetServerInfo", info), grpc.RpcError)
        for rid in (own, ADMIN_TOKEN, BARE, f"{PLAIN}:{own}", PLAIN):
            c.a("GetServerInfo", info, request_id=rid)
    finally:
        c.channel.close()
        assert srv.terminate() == 0
    rpcs = [line for line in srv.lines if line.get("event") == "rpc"]
    assert [line.get("request_id") for line in rpcs] == [
        None,
        "\u2026",
        "tsa_\u2026",  # secret-shaped, though not this server's token
        "\u2026",
        f"{PLAIN}:\u2026",
        PLAIN,
    ]
    logged = repr(srv.lines)
    for secret in (own, ADMIN_TOKEN[4:], BARE):
        assert secret not in logged


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_review_p6_a_traceback_that_names_a_secret_is_scrubbed(fmt: str) -> None:
    key = "tsk_" + BARE
    program = (
        "import structlog\n"
        "from server import logs\n"
        f"logs.configure({fmt!r})\n"
        "try:\n"
        f"    raise KeyError({key!r})\n"
        "except KeyError:\n"
        f"    structlog.get_logger().exception('rpc_failed', request_id={BARE!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "rpc_failed" in out and "KeyError: 'tsk_\u2026'" in out
    assert BARE not in out
