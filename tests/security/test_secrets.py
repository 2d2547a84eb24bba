"""Secrets (issue 6, item 8): the admin token, user keys and invitation tokens never
appear in logs or in error messages.

A whole scenario runs against a real server: a team, tokens, products, users
imported and assigned (invitations), an invitation resent, a stale and a fresh
one accepted (twice), keys issued and replaced, entitle / heartbeat / idle /
release, wrong and misplaced credentials, and rate-limit refusals. Every
secret the scenario meets, the forged ones included, is collected; then:

* in process (``ServerThread``), every event structlog emitted, captured with
  ``structlog.testing.capture_logs``;
* as a child process (``python -m server``, JSON logs), every line it wrote to
  stdout and to stderr;
* in both, every error the clients got back: status message, ErrorInfo
  metadata, BadRequest descriptions, every trailer;

must hold none of them. ``ListNotifications`` returns ``invitation_token`` in its
response body on purpose (API.md: the secret the email would carry); a response
is not a log, so response bodies are not searched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from structlog.testing import capture_logs

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tests.support import ADMIN_TOKEN, REPO, T0, ServerProcess, ServerThread

# Small per-key limits, so that the scenario also meets RESOURCE_EXHAUSTED.
USER_RATE, USER_BURST = 0.5, 12
FORGED_KEY = "tsk_forged-key-that-is-not-issued-0123456789abcdefgh"
FORGED_INVITATION = "tsi_forged-invitation-0123456789abcdefghijklmnopq"
WRONG_ADMIN = "tsa_wrong-admin-token-0123456789abcdefghijklmnopqr"


@dataclass
class Seen:
    """The secrets met and every error text the clients were given."""

    secrets: set[str] = field(default_factory=lambda: {ADMIN_TOKEN})
    errors: list[str] = field(default_factory=list)
    codes: list[grpc.StatusCode] = field(default_factory=list)

    def error(self, exc: grpc.RpcError) -> grpc.StatusCode:
        code: grpc.StatusCode = exc.code()
        self.codes.append(code)
        self.errors.append(f"{code.name}: {exc.details()}")
        trailers: Any = exc.trailing_metadata() or ()
        for key, value in trailers:
            self.errors.append(f"{key}: {value!r}")
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        if status is not None:
            self.errors.append(status.message)
            for detail in status.details:
                for kind in (
                    error_details_pb2.ErrorInfo,
                    error_details_pb2.BadRequest,
                    error_details_pb2.RetryInfo,
                ):
                    if detail.Is(kind.DESCRIPTOR):
                        msg = kind()
                        detail.Unpack(msg)
                        self.errors.append(str(msg))
        return code


class Clients:
    def __init__(self, target: str, seen: Seen) -> None:
        self.channel = grpc.insecure_channel(target)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.lic = licensing_service_pb2_grpc.LicensingServiceStub(self.channel)
        self.seen = seen

    def close(self) -> None:
        self.channel.close()

    def a(self, method: str, request: Any, token: str | None = ADMIN_TOKEN) -> Any:
        md = (("authorization", f"Bearer {token}"),) if token else ()
        return getattr(self.admin, method)(request, metadata=md, timeout=30)

    def u(self, method: str, request: Any, key: str | None) -> Any:
        md = (("authorization", f"Bearer {key}"),) if key else ()
        return getattr(self.lic, method)(request, metadata=md, timeout=30)

    def refused(self, call: Any, *args: Any, **kw: Any) -> grpc.StatusCode:
        try:
            call(*args, **kw)
        except grpc.RpcError as exc:
            return self.seen.error(exc)
        raise AssertionError(f"{args[0]} was not refused")


def scenario(target: str) -> Seen:
    """The whole life of a team, its users and their keys; returns what was seen."""
    seen = Seen()
    seen.secrets |= {FORGED_KEY, FORGED_INVITATION, WRONG_ADMIN}
    c = Clients(target, seen)
    try:
        _run(c, seen)
    finally:
        c.close()
    return seen


def _run(c: Clients, seen: Seen) -> None:
    C = grpc.StatusCode
    every = [pb.PLATFORM_WINDOWS, pb.PLATFORM_MACOS, pb.PLATFORM_LINUX]
    c.a("CreateTeam", api.CreateTeamRequest(team_id="acme", display_name="Acme"))
    c.a("PurchaseTokens", api.PurchaseTokensRequest(team_id="acme", tokens=100, request_id="p1"))
    product = pb.Product(product_id="ACAD", daily_rate=10, idle_aware=True, platforms=every)
    c.a("UpsertProduct", api.UpsertProductRequest(product=product))
    c.a(
        "ImportUsers",
        api.ImportUsersRequest(team_id="acme", users=["Ann <ann@x.io>"], all_products=True),
    )
    c.a(
        "AssignUsers",
        api.AssignUsersRequest(team_id="acme", users=["Ivy <ivy@x.io>"], all_products=True),
    )

    def invitation_tokens() -> list[str]:
        notes = c.a("ListNotifications", api.ListNotificationsRequest(user_id="ivy@x.io"))
        return [n.invitation_token for n in notes.notifications if n.invitation_token]

    first = invitation_tokens()[-1]
    c.a("ResendInvitation", api.ResendInvitationRequest(team_id="acme", user_id="ivy@x.io"))
    fresh = invitation_tokens()[-1]
    assert fresh != first
    seen.secrets |= {first, fresh}
    # An invited user can run nothing yet: Entitle needs a key, and there is none.
    assert (
        c.refused(
            c.a, "AcceptInvitation", api.AcceptInvitationRequest(invitation_token=first), None
        )
        is C.NOT_FOUND
    )
    assert (
        c.refused(
            c.a,
            "AcceptInvitation",
            api.AcceptInvitationRequest(invitation_token=FORGED_INVITATION),
            None,
        )
        is C.NOT_FOUND
    )
    accepted = c.a("AcceptInvitation", api.AcceptInvitationRequest(invitation_token=fresh), None)
    ivy = accepted.user_key
    seen.secrets.add(ivy)
    assert (
        c.refused(
            c.a, "AcceptInvitation", api.AcceptInvitationRequest(invitation_token=fresh), None
        )
        is C.ALREADY_EXISTS
    )

    old = c.a("IssueUserKey", api.IssueUserKeyRequest(user_id="ann@x.io")).user_key
    ann = c.a("IssueUserKey", api.IssueUserKeyRequest(user_id="ann@x.io")).user_key
    seen.secrets |= {old, ann}
    assert ann != old

    entitle = lic.EntitleRequest(
        product_id="ACAD", product_version="2026", platform=pb.PLATFORM_WINDOWS, device_id="d1"
    )
    s = c.u("Entitle", entitle, ann).session
    c.u("Heartbeat", lic.HeartbeatRequest(session_id=s.session_id, seconds_since_activity=3), ann)
    c.u("Idle", lic.IdleRequest(session_id=s.session_id), ann)
    c.u("Release", lic.ReleaseRequest(session_id=s.session_id), ann)
    t = c.u("Entitle", entitle, ivy).session

    # Refusals that name the caller's situation; none may name the caller's secret.
    other_device = lic.EntitleRequest(
        product_id="ACAD", product_version="2026", platform=pb.PLATFORM_WINDOWS, device_id="d2"
    )
    assert c.refused(c.u, "Entitle", other_device, ivy) is C.FAILED_PRECONDITION  # elsewhere
    assert (
        c.refused(c.u, "Release", lic.ReleaseRequest(session_id=t.session_id), ann) is C.NOT_FOUND
    )
    assert (
        c.refused(c.u, "Heartbeat", lic.HeartbeatRequest(session_id="se_nope"), ivy) is C.NOT_FOUND
    )

    # Wrong, old, forged and misplaced credentials.
    info = api.GetServerInfoRequest()
    assert (
        c.refused(c.u, "Release", lic.ReleaseRequest(session_id=s.session_id), old)
        is C.UNAUTHENTICATED
    )
    assert c.refused(c.u, "Entitle", entitle, FORGED_KEY) is C.UNAUTHENTICATED
    assert c.refused(c.u, "Entitle", entitle, ADMIN_TOKEN) is C.UNAUTHENTICATED
    assert c.refused(c.u, "Entitle", entitle, None) is C.UNAUTHENTICATED
    assert c.refused(c.a, "GetServerInfo", info, ann) is C.PERMISSION_DENIED
    assert c.refused(c.a, "GetServerInfo", info, WRONG_ADMIN) is C.UNAUTHENTICATED
    assert c.refused(c.a, "GetServerInfo", info, FORGED_INVITATION) is C.UNAUTHENTICATED
    assert c.refused(c.a, "GetServerInfo", info, None) is C.UNAUTHENTICATED
    # A secret pasted into the wrong field is a plain unknown id.
    assert c.refused(c.a, "GetMember", api.GetMemberRequest(team_id="acme", user_id=ann)) in {
        C.NOT_FOUND,
        C.INVALID_ARGUMENT,
    }

    # Rate limits: a key over its burst is refused, and told when to come back.
    heartbeat = lic.HeartbeatRequest(session_id=t.session_id)
    codes = set()
    for _ in range(USER_BURST + 5):
        try:
            c.u("Heartbeat", heartbeat, ivy)
        except grpc.RpcError as exc:
            codes.add(seen.error(exc))
    assert C.RESOURCE_EXHAUSTED in codes


def _leaks(secrets: set[str], texts: list[str]) -> list[str]:
    return [
        f"{secret[:8]}... in {text[:300]!r}"
        for text in texts
        for secret in secrets
        if secret in text
    ]


def _check(seen: Seen, logs: list[str]) -> None:
    assert len(seen.secrets) >= 8
    assert len(seen.errors) > 20
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in seen.codes
    assert not _leaks(seen.secrets, seen.errors), "secrets in error messages"
    assert logs, "no logs were captured"
    assert not _leaks(seen.secrets, logs), "secrets in the logs"


def test_no_secret_in_structlog_events_or_errors(tmp_path: Path) -> None:
    with capture_logs() as events:
        srv = ServerThread(
            tmp_path / "t.db", user_rate_limit=USER_RATE, user_burst=USER_BURST
        ).start()
        try:
            seen = scenario(srv.target)
        finally:
            srv.stop()
    rpc_lines = [e for e in events if e.get("event") == "rpc"]
    assert len(rpc_lines) > 30  # every call left a line
    _check(seen, [json.dumps(e, default=str) for e in events])


class LoggedServer(ServerProcess):
    """``python -m server`` with its stderr kept too (``ServerProcess`` drops it)."""

    stderr: list[str]

    def start(self, timeout: float = 30) -> LoggedServer:
        self.stderr = []
        args = [
            sys.executable,
            "-m",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(self.db),
            "--admin-token",
            ADMIN_TOKEN,
            "--log-format",
            "json",
            "--test-clock",
            T0,
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr
        self._errs = threading.Thread(
            target=lambda: self.stderr.extend(line.decode(errors="replace") for line in err),
            daemon=True,
        )
        self._errs.start()
        for raw in self.proc.stdout:
            line = json.loads(raw)
            self.lines.append(line)
            if line.get("event") == "serving":
                self.port = int(line["port"])
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        raise RuntimeError(f"server exited with {self.proc.wait(timeout)}: {self.stderr}")

    def _reap(self, timeout: float) -> int:
        code = super()._reap(timeout)
        self._errs.join(timeout)
        assert self.proc is not None and self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.fixture
def child(tmp_path: Path) -> Iterator[LoggedServer]:
    proc = LoggedServer(
        tmp_path / "t.db",
        extra=["--user-rate-limit", str(USER_RATE), "--user-burst", str(USER_BURST)],
    ).start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


def test_no_secret_in_a_server_process_output_or_errors(child: LoggedServer) -> None:
    seen = scenario(child.target)
    assert child.terminate() == 0
    stdout = [json.dumps(line) for line in child.lines]
    assert any('"rpc"' in line for line in stdout)
    assert any("Tessera is serving" in line for line in child.stderr)  # the banner was read
    _check(seen, stdout + child.stderr)
