"""RULES AD1, over the wire: team administrators' admin keys.

``CreateAdminKey`` shows the secret once and keeps only its SHA-256 (read
back from the database itself: the SQLite files, or PostgreSQL's row);
``ListAdminKeys`` pages oldest first and never shows a secret; a key works at
once for its teams, survives a restart, and ``RevokeAdminKey`` stops it at
once (its next call is UNAUTHENTICATED); revoking twice changes nothing.
Each admin key has its own rate-limit bucket, apart from the operator's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import A, Desk, L
from tests.pg import run_sync
from tests.support import ADMIN_TOKEN, running


def create_key(desk: Desk, name: str, *teams: str) -> tuple[str, dict[str, Any]]:
    made = desk.a("CreateAdminKey", {"display_name": name, "team_ids": list(teams)})
    return made["admin_key"], made["key"]


def refused(
    client: Grpcurl, method: str, body: dict[str, Any], code: grpc.StatusCode, token: str = ""
) -> GrpcurlError:
    with pytest.raises(GrpcurlError) as info:
        client(method, body, token=token or None)
    assert info.value.code is code, str(info.value)
    return info.value


def stored(database: Path | str) -> bytes:
    """Everything the database holds of admin keys, as bytes: every SQLite file
    (database, -wal, -shm), or PostgreSQL's admin_keys rows as text."""
    if isinstance(database, Path):
        return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))

    async def rows() -> bytes:
        conn = await asyncpg.connect(database, timeout=10)
        try:
            found = await conn.fetch("SELECT k::text AS row, key_hash FROM admin_keys k")
        finally:
            await conn.close()
        return b"\n".join(r["row"].encode() + b"\n" + bytes(r["key_hash"]) for r in found)

    return run_sync(rows)


def test_ad1_an_admin_key_is_shown_once_and_stored_hashed(desk: Desk, database: Path | str) -> None:
    secret, key = create_key(desk, "  Alpha's admin  ", "alpha")
    assert secret.startswith("tsa_") and len(secret) == 4 + 43  # 256 random bits
    assert key["admin_key_id"].startswith("ak_")
    assert key["display_name"] == "Alpha's admin"  # trimmed
    assert key["team_ids"] == ["alpha"]
    assert key["create_time"] == "2026-01-01T00:00:00Z"  # the test clock
    assert "revoke_time" not in key
    listed = desk.a("ListAdminKeys")
    assert listed["keys"] == [key]
    assert secret not in json.dumps(listed)  # shown once: never listed again
    assert secret[4:] not in json.dumps(listed)
    held = stored(database)
    assert secret.encode() not in held and secret[4:].encode() not in held
    assert hashlib.sha256(secret.encode()).digest() in held  # only its hash


def test_ad1_a_key_works_at_once_and_after_a_restart(database: Path | str) -> None:
    with running(database) as srv:
        desk = Desk(srv.target).sheet()
        desk.team("alpha", 100)
        secret, key = create_key(desk, "Alpha admin", "alpha")
        team = desk.admin(A + "GetTeam", {"team_id": "alpha"}, token=secret)["team"]
        assert team["team_id"] == "alpha"
        desk.close()
    with running(database) as srv:
        desk = Desk(srv.target)
        team = desk.admin(A + "GetTeam", {"team_id": "alpha"}, token=secret)["team"]
        assert team["team_id"] == "alpha"
        assert desk.a("ListAdminKeys")["keys"] == [key]
        desk.close()


def test_ad1_a_revoked_key_is_refused_at_once_and_stays_revoked(database: Path | str) -> None:
    with running(database) as srv:
        desk = Desk(srv.target)
        desk.team("alpha")
        secret, key = create_key(desk, "Alpha admin", "alpha")
        other, _ = create_key(desk, "Other admin", "alpha")
        desk.admin(A + "ListTokenPacks", {"team_id": "alpha"}, token=secret)
        desk.advance(60)
        revoked = desk.a("RevokeAdminKey", {"admin_key_id": key["admin_key_id"]})["key"]
        assert revoked == {**key, "revoke_time": "2026-01-01T00:01:00Z"}
        err = refused(
            desk.admin,
            A + "ListTokenPacks",
            {"team_id": "alpha"},
            grpc.StatusCode.UNAUTHENTICATED,
            secret,
        )
        assert secret not in str(err)
        # Revoking again returns it unchanged; the other key still works.
        desk.advance(60)
        again = desk.a("RevokeAdminKey", {"admin_key_id": key["admin_key_id"]})["key"]
        assert again == revoked
        desk.admin(A + "ListTokenPacks", {"team_id": "alpha"}, token=other)
        desk.close()
    with running(database) as srv:
        desk = Desk(srv.target)
        refused(desk.admin, A + "GetServerInfo", {}, grpc.StatusCode.UNAUTHENTICATED, secret)
        keys = desk.a("ListAdminKeys")["keys"]
        assert [k.get("revoke_time") for k in keys] == ["2026-01-01T00:01:00Z", None]
        desk.admin(A + "GetServerInfo", {}, token=other)
        desk.close()


def test_ad1_revoking_an_unknown_key_is_unknown_admin_key(desk: Desk) -> None:
    err = refused(
        desk.admin, A + "RevokeAdminKey", {"admin_key_id": "ak_nope"}, grpc.StatusCode.NOT_FOUND
    )
    assert (err.reason, err.metadata) == ("UNKNOWN_ADMIN_KEY", {"admin_key_id": "ak_nope"})
    err = refused(desk.admin, A + "RevokeAdminKey", {}, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == ["admin_key_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"team_ids": ["alpha"]}, "display_name"),
        ({"display_name": "   ", "team_ids": ["alpha"]}, "display_name"),
        ({"display_name": "x" * 201, "team_ids": ["alpha"]}, "display_name"),
        ({"display_name": "Nobody's"}, "team_ids"),
        ({"display_name": "Blank", "team_ids": ["alpha", ""]}, "team_ids[1]"),
    ],
)
def test_ad1_create_admin_key_names_the_bad_field(
    desk: Desk, body: dict[str, Any], field: str
) -> None:
    err = refused(desk.admin, A + "CreateAdminKey", body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == [field]
    assert "keys" not in desk.a("ListAdminKeys")  # nothing made


def test_ad1_create_admin_key_for_an_unknown_team_is_unknown_team(desk: Desk) -> None:
    body = {"display_name": "Zeta admin", "team_ids": ["alpha", "zeta"]}
    err = refused(desk.admin, A + "CreateAdminKey", body, grpc.StatusCode.NOT_FOUND)
    assert (err.reason, err.metadata) == ("UNKNOWN_TEAM", {"team_id": "zeta"})
    assert "keys" not in desk.a("ListAdminKeys")


def test_ad1_admin_keys_page_oldest_first(desk: Desk) -> None:
    desk.team("beta")
    made = []
    for n in range(5):
        made.append(create_key(desk, f"Admin {n}", "alpha" if n % 2 else "beta")[1])
        desk.advance(1 if n == 2 else 0)
    pages, token = [], ""
    while True:
        page = desk.a("ListAdminKeys", {"page_size": 2, "page_token": token})
        pages.append([k["display_name"] for k in page["keys"]])
        token = page.get("next_page_token", "")
        if not token:
            break
    assert pages == [["Admin 0", "Admin 1"], ["Admin 2", "Admin 3"], ["Admin 4"]]
    assert desk.a("ListAdminKeys")["keys"] == made
    err = refused(
        desk.admin,
        A + "ListAdminKeys",
        {"page_token": "nonsense"},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["page_token"]


def test_ad1_credentials_an_admin_key_is_not_a_user_key_nor_the_reverse(desk: Desk) -> None:
    secret, _ = create_key(desk, "Alpha admin", "alpha")
    ann = desk.user("alpha", "ann")
    # A user key on AdminService stays PERMISSION_DENIED; a made-up one UNAUTHENTICATED.
    refused(desk.admin, A + "GetServerInfo", {}, grpc.StatusCode.PERMISSION_DENIED, desk.keys[ann])
    refused(desk.admin, A + "GetServerInfo", {}, grpc.StatusCode.UNAUTHENTICATED, "tsa_made-up")
    refused(desk.admin, A + "GetServerInfo", {}, grpc.StatusCode.UNAUTHENTICATED, " ")
    # An admin key is not a user key.
    body = {"product_id": "ACAD", "product_version": "2026", "platform": "PLATFORM_WINDOWS"}
    refused(
        desk.admin,
        L + "Entitle",
        {**body, "device_id": "d"},
        grpc.StatusCode.UNAUTHENTICATED,
        secret,
    )


def test_ad1_each_admin_key_has_its_own_rate_limit_bucket(database: Path | str) -> None:
    with running(database, admin_rate_limit=0.001, admin_burst=3) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        client(A + "CreateTeam", {"team_id": "alpha"})
        made = client(A + "CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
        secret = made["admin_key"]
        for _ in range(3):
            client(A + "GetTeam", {"team_id": "alpha"}, token=secret)
        err = refused(
            client,
            A + "GetTeam",
            {"team_id": "alpha"},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            secret,
        )
        assert err.metadata["burst"] == "3"
        # The operator spent 2 of its own 3: the key's calls took none of them.
        client(A + "GetTeam", {"team_id": "alpha"})
        client.close()
