"""Signed leases (issue 6; RULES M7): Entitle and Heartbeat answers carry an
Ed25519-signed lease that a product checks offline with GetSigningKeys' keys."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from client_sdk.errors import LeaseInvalid
from client_sdk.leases import load_signing_keys, verify_lease_signature
from server.leases import key_path
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as lic_grpc
from tests.grpcurl import Grpcurl
from tests.security.test_tamper_and_backup import _cli
from tests.support import ADMIN_TOKEN, ServerThread, running

A = "tessera.v1.AdminService/"


def _provision(srv: ServerThread) -> str:
    admin = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        admin(A + "CreateTeam", {"team_id": "acme"})
        admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 100, "request_id": "p"})
        admin(
            A + "UpsertProduct",
            {
                "product": {
                    "product_id": "ACAD",
                    "daily_rate": 10,
                    "kind": "PRODUCT_KIND_PRODUCT",
                    "platforms": ["PLATFORM_WINDOWS"],
                }
            },
        )
        admin(
            A + "ImportUsers",
            {"team_id": "acme", "users": ["Ann <ann@example.com>"], "all_products": True},
        )
        key: str = admin(A + "IssueUserKey", {"user_id": "ann@example.com"})["user_key"]
    finally:
        admin.close()
    return key


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[ServerThread, lic_grpc.LicensingServiceStub, str]]:
    with running(tmp_path / "tessera.db") as srv, grpc.insecure_channel(srv.target) as channel:
        yield srv, lic_grpc.LicensingServiceStub(channel), _provision(srv)


def verify_lease(signed: pb.SignedLease, keys: dict[str, bytes]) -> pb.Lease:
    """The lease, checked as a product checks it (the SDK's check of the signature)."""
    return verify_lease_signature(signed, keys).raw


def _keys(stub: lic_grpc.LicensingServiceStub) -> dict[str, bytes]:
    reply = stub.GetSigningKeys(lic.GetSigningKeysRequest(), timeout=10)  # no credential
    return {k.key_id: k.public_key for k in reply.keys}


def _entitle(
    stub: lic_grpc.LicensingServiceStub, key: str, request_id: str = ""
) -> lic.EntitleResponse:
    reply: lic.EntitleResponse = stub.Entitle(
        lic.EntitleRequest(
            product_id="ACAD",
            product_version="2026",
            platform=pb.PLATFORM_WINDOWS,
            device_id="dev-1",
            request_id=request_id,
        ),
        metadata=[("authorization", f"Bearer {key}")],
        timeout=10,
    )
    return reply


def test_m7_entitle_lease_is_signed_and_says_what_the_session_may_do(world) -> None:  # type: ignore[no-untyped-def]
    _srv, stub, key = world
    reply = _entitle(stub, key)
    lease = verify_lease(reply.lease, _keys(stub))
    s = reply.session
    assert (lease.session_id, lease.user_id, lease.team_id, lease.product_id, lease.device_id) == (
        s.session_id,
        "ann@example.com",
        "acme",
        "ACAD",
        "dev-1",
    )
    assert lease.coverage == pb.COVERAGE_TOKENS
    # M7: the lease ends 24 h after the Entitle (test clock at 2026-01-01T00:00:00Z)
    assert lease.lease_expire_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, tzinfo=UTC)
    assert lease.lease_expire_time == s.lease_expire_time


def test_m7_heartbeat_extends_the_signed_lease(world) -> None:  # type: ignore[no-untyped-def]
    srv, stub, key = world
    session = _entitle(stub, key).session
    admin = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        admin(A + "AdvanceClock", {"by": "3600s"})
    finally:
        admin.close()
    reply = stub.Heartbeat(
        lic.HeartbeatRequest(session_id=session.session_id),
        metadata=[("authorization", f"Bearer {key}")],
        timeout=10,
    )
    lease = verify_lease(reply.lease, _keys(stub))
    assert lease.lease_expire_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, 1, tzinfo=UTC)


def test_m7_m11_an_entitles_lease_carries_its_request_id_and_a_heartbeats_none(world) -> None:  # type: ignore[no-untyped-def]
    """So a product can tell its Entitle's answer from one recorded and replayed to it:
    the id it sent is signed into the lease (a repeat, M11, is answered under the
    same id); a Heartbeat's lease names none."""
    _srv, stub, key = world
    first = _entitle(stub, key, "req-7")
    keys = _keys(stub)
    assert verify_lease(first.lease, keys).request_id == "req-7"
    again = _entitle(stub, key, "req-7")
    assert again.session.session_id == first.session.session_id
    assert verify_lease(again.lease, keys).request_id == "req-7"
    reply = stub.Heartbeat(
        lic.HeartbeatRequest(session_id=first.session.session_id),
        metadata=[("authorization", f"Bearer {key}")],
        timeout=10,
    )
    assert verify_lease(reply.lease, keys).request_id == ""


def test_m7_a_tampered_or_forged_lease_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    _srv, stub, key = world
    signed = _entitle(stub, key).lease
    keys = _keys(stub)
    lease = pb.Lease()
    lease.ParseFromString(signed.lease)
    lease.lease_expire_time.seconds += 365 * 86400  # a year of free use
    altered = pb.SignedLease(
        lease=lease.SerializeToString(), signature=signed.signature, key_id=signed.key_id
    )
    with pytest.raises(LeaseInvalid, match="does not match"):
        verify_lease(altered, keys)
    with pytest.raises(LeaseInvalid, match="does not trust"):
        verify_lease(
            pb.SignedLease(lease=signed.lease, signature=signed.signature, key_id="k_forged"), keys
        )


def test_signing_key_is_owner_only_and_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:
        first = _keys(lic_grpc.LicensingServiceStub(channel))
    assert stat.S_IMODE(key_path(db).stat().st_mode) == 0o600
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:
        assert _keys(lic_grpc.LicensingServiceStub(channel)) == first


def test_rotation_signs_with_the_new_key_and_old_leases_still_verify(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = lic_grpc.LicensingServiceStub(channel)
        key = _provision(srv)
        old_lease = _entitle(stub, key).lease
    done = _cli("rotate-signing-key", "--db", str(db))
    assert done.returncode == 0, done.stderr
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = lic_grpc.LicensingServiceStub(channel)
        reply = stub.GetSigningKeys(lic.GetSigningKeysRequest(), timeout=10)
        keys = {k.key_id: k.public_key for k in reply.keys}
        assert len(keys) == 2
        # The tool printed the new key in the pinned-keys file's form, before any restart.
        new_id = reply.keys[0].key_id
        pinned = tmp_path / "pinned.json"
        pinned.write_text(done.stdout.splitlines()[-1].split(": ", 1)[1])
        assert load_signing_keys(pinned) == {new_id: keys[new_id]}
        assert [k.retired for k in reply.keys] == [False, True]
        verify_lease(old_lease, keys)  # signed before the rotation: still good
        new_lease = stub.Heartbeat(
            lic.HeartbeatRequest(session_id=pb.Lease.FromString(old_lease.lease).session_id),
            metadata=[("authorization", f"Bearer {key}")],
            timeout=10,
        ).lease
        assert new_lease.key_id == reply.keys[0].key_id != old_lease.key_id
        verify_lease(new_lease, keys)


def test_rotation_on_a_path_with_no_database_is_refused_and_makes_no_key(tmp_path: Path) -> None:
    """A mistyped --db: the rotation said it had worked, made a stray key file
    beside nothing, and left the real database's keys as they were."""
    db = tmp_path / "nope.db"
    done = _cli("rotate-signing-key", "--db", str(db))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"python -m server rotate-signing-key: no database at {db}"]
    assert list(tmp_path.iterdir()) == []


def test_rotation_retires_the_old_key_at_the_databases_time_not_the_machines(
    tmp_path: Path,
) -> None:
    """The tool stamped the old key's retirement with the machine's clock. On a database
    whose test clock is ahead of it the old key was then unpublished at once, and leases
    it signed, still valid for a day, no longer verified with the keys fetched (behind
    it, the old key stayed published for months). It is the database's time now."""
    db = tmp_path / "tessera.db"
    ahead = "2027-06-01T00:00:00Z"
    with running(db, test_clock=ahead) as srv, grpc.insecure_channel(srv.target) as channel:
        key = _provision(srv)
        old_lease = _entitle(lic_grpc.LicensingServiceStub(channel), key).lease
    done = _cli("rotate-signing-key", "--db", str(db))
    assert done.returncode == 0, done.stderr
    (retired,) = [
        k
        for k in json.loads((tmp_path / "tessera.db.signing-keys").read_text())
        if k["retired_time"]
    ]
    assert retired["retired_time"].startswith("2027-06-01T00:00")
    with running(db, test_clock=ahead) as srv, grpc.insecure_channel(srv.target) as channel:
        reply = lic_grpc.LicensingServiceStub(channel).GetSigningKeys(
            lic.GetSigningKeysRequest(), timeout=10
        )
    keys = {k.key_id: k.public_key for k in reply.keys}
    assert [k.retired for k in reply.keys] == [False, True]
    verify_lease(old_lease, keys)  # signed before the rotation, a day to run: still good
